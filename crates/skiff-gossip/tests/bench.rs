//! Figures for docs/benchmarks.md from the deterministic simulation: how long until a join
//! and a failure are known to every member, false "failed" verdicts under 10 % loss, and
//! memory per member, for 10, 100 and 500 members with the default (LAN) configuration.
//!
//! Slow in debug builds (the 500-member run takes minutes), so it is ignored by default:
//! `cargo test -p skiff-gossip --test bench -- --ignored --nocapture`.

mod sim;

use std::time::Duration;

use sim::*;
use skiff_gossip::MemberEvent;

struct Figures {
    join_per_member: Vec<Duration>,
    join_all: Vec<Duration>,
    detect_per_member: Vec<Duration>,
    detect_all: Vec<Duration>,
    false_failures: usize,
    suspicions: u64,
    loss_minutes: u64,
    bytes_per_member: usize,
    formed_in: Duration,
}

fn measure(size: usize, joins: usize, kills: usize, loss_minutes: u64) -> Figures {
    let mut sim = Sim::new(size as u64);
    let formed_in = sim
        .form_cluster(size, |_| {}, Duration::from_secs(120))
        .expect("cluster converges");
    let mut figures = Figures {
        join_per_member: Vec::new(),
        join_all: Vec::new(),
        detect_per_member: Vec::new(),
        detect_all: Vec::new(),
        false_failures: 0,
        suspicions: 0,
        loss_minutes,
        bytes_per_member: 0,
        formed_in,
    };
    for j in 0..joins {
        let observers = sim.live();
        let since = sim.elapsed();
        let joiner = sim.add_node(Sim::config(sim.nodes.len()));
        sim.join(joiner, &[observers[(j * 37) % observers.len()]]);
        sim.run_for(Duration::from_secs(5));
        let times = sim.first_seen(&observers, since, is_join_of(&name_of(joiner)));
        figures
            .join_all
            .push(all_within(&times).expect("join known to all"));
        figures.join_per_member.extend(times.into_iter().flatten());
    }
    for k in 0..kills {
        let victim = (k * 53 + 1) % sim.nodes.len();
        sim.kill(victim);
        let since = sim.elapsed();
        sim.run_for(Duration::from_secs(40));
        let times = sim.first_seen(&sim.live(), since, is_failed_of(&name_of(victim)));
        figures
            .detect_all
            .push(all_within(&times).expect("failure known to all"));
        figures
            .detect_per_member
            .extend(times.into_iter().flatten());
    }
    let since = sim.elapsed();
    let before: u64 = sim
        .nodes
        .iter()
        .map(|n| n.membership.stats().suspicions)
        .sum();
    sim.net.loss = 0.10;
    sim.run_for(Duration::from_secs(60 * loss_minutes));
    figures.false_failures = sim
        .log
        .iter()
        .filter(|e| e.at >= since && matches!(e.event, MemberEvent::Failed(_)))
        .count();
    let after: u64 = sim
        .nodes
        .iter()
        .map(|n| n.membership.stats().suspicions)
        .sum();
    figures.suspicions = after - before;
    let estimate = sim.nodes[0].membership.memory_estimate();
    figures.bytes_per_member = estimate.total() / estimate.members.max(1);
    figures
}

fn ms(d: Duration) -> String {
    format!("{:.0} ms", d.as_secs_f64() * 1000.0)
}

#[test]
#[ignore = "minutes in a debug build; run with --ignored --nocapture for the figures"]
fn membership_figures_for_10_100_and_500_members() {
    println!("| members | join: per member p50 / p99 | join known to all p50 / max | failure: per member p50 / p99 | failure known to all p50 / max | false failures at 10% loss | suspicions | memory per member |");
    println!("|---|---|---|---|---|---|---|---|");
    for (size, joins, kills, loss_minutes) in [(10, 20, 5, 5), (100, 20, 5, 5), (500, 10, 3, 2)] {
        let started = std::time::Instant::now();
        let mut f = measure(size, joins, kills, loss_minutes);
        println!(
            "| {size} | {} / {} | {} / {} | {} / {} | {} / {} | {} in {} min | {} | ~{} B |",
            ms(percentile(&mut f.join_per_member, 50.0)),
            ms(percentile(&mut f.join_per_member, 99.0)),
            ms(percentile(&mut f.join_all, 50.0)),
            ms(percentile(&mut f.join_all, 100.0)),
            ms(percentile(&mut f.detect_per_member, 50.0)),
            ms(percentile(&mut f.detect_per_member, 99.0)),
            ms(percentile(&mut f.detect_all, 50.0)),
            ms(percentile(&mut f.detect_all, 100.0)),
            f.false_failures,
            f.loss_minutes,
            f.suspicions,
            f.bytes_per_member,
        );
        eprintln!(
            "({size} members formed in {:?}; measured in {:?} wall)",
            f.formed_in,
            started.elapsed()
        );
        assert_eq!(
            f.false_failures, 0,
            "{size} members: false failures under loss"
        );
        if size <= 100 {
            assert!(percentile(&mut f.join_all, 100.0) <= Duration::from_secs(2));
        }
    }
}
