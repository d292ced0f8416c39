//! Membership behaviour of 100+ members in the deterministic simulation (`sim`): joins,
//! failures, loss, slow members, partitions, leaves, reaping, tags, user events, queries.

mod sim;

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use sim::*;
use skiff_gossip::{MemberEvent, MemberStatus, QueryFilter, QueryOptions, QueryUpdate, Tags};

const SECOND: Duration = Duration::from_secs(1);

fn formed(seed: u64, count: usize) -> Sim {
    let mut sim = Sim::new(seed);
    let took = sim.form_cluster(count, |_| {}, Duration::from_secs(60));
    assert!(
        took.is_some(),
        "{count} members did not converge within 60 s"
    );
    sim
}

fn failed_events(sim: &Sim, since: Duration) -> Vec<(usize, String)> {
    sim.log
        .iter()
        .filter(|entry| entry.at >= since)
        .filter_map(|entry| match &entry.event {
            MemberEvent::Failed(info) => Some((entry.node, info.name.clone())),
            _ => None,
        })
        .collect()
}

#[test]
fn a_join_is_known_to_all_100_members_within_two_seconds() {
    let mut sim = formed(11, 100);
    let mut worst = Duration::ZERO;
    for _ in 0..10 {
        let observers = sim.live();
        let since = sim.elapsed();
        let mut config = Sim::config(sim.nodes.len());
        config.generation = 1;
        let joiner = sim.add_node(config);
        sim.join(joiner, &[observers[joiner % observers.len()]]);
        sim.run_for(3 * SECOND);
        let name = name_of(joiner);
        let times = sim.first_seen(&observers, since, is_join_of(&name));
        let took = all_within(&times).expect("every member saw the join");
        worst = worst.max(took);
        let everyone = sim.live();
        assert!(
            sim.all_see_alive(&[joiner], &everyone),
            "the joiner learned the whole membership"
        );
    }
    println!("slowest of 10 joins known to all: {worst:?}");
    assert!(worst <= 2 * SECOND, "slowest join took {worst:?}");
    assert!(failed_events(&sim, Duration::ZERO).is_empty());
}

#[test]
fn a_failure_is_known_to_all_and_nobody_else_is_declared_failed() {
    let mut sim = formed(12, 100);
    let since = sim.elapsed();
    let victims = [17, 42, 88];
    for victim in victims {
        sim.kill(victim);
        sim.run_for(5 * SECOND);
    }
    sim.run_for(40 * SECOND);
    let observers = sim.live();
    for victim in victims {
        let times = sim.first_seen(&observers, since, is_failed_of(&name_of(victim)));
        let took = all_within(&times).expect("every live member saw the failure");
        println!("failure of n{victim} known to all after {took:?} (from the first kill)");
        assert!(took <= 40 * SECOND);
    }
    let wrong: Vec<_> = failed_events(&sim, since)
        .into_iter()
        .filter(|(_, name)| !victims.iter().any(|v| name_of(*v) == *name))
        .collect();
    assert!(wrong.is_empty(), "false failures: {wrong:?}");
    for observer in &observers {
        let failed: BTreeSet<String> = sim
            .members_of(*observer)
            .into_iter()
            .filter(|m| m.status == MemberStatus::Failed)
            .map(|m| m.name)
            .collect();
        let expected: BTreeSet<String> = victims.iter().map(|v| name_of(*v)).collect();
        assert_eq!(failed, expected);
    }
}

#[test]
fn ten_percent_packet_loss_gives_no_false_failures() {
    let mut sim = formed(13, 100);
    let since = sim.elapsed();
    sim.net.loss = 0.10;
    sim.run_for(Duration::from_secs(300));
    let suspicions: u64 = sim
        .nodes
        .iter()
        .map(|node| node.membership.stats().suspicions)
        .sum();
    let refutations: u64 = sim
        .nodes
        .iter()
        .map(|node| node.membership.stats().refutations)
        .sum();
    println!(
        "5 min at 10% loss: {suspicions} suspicions, {refutations} refutations, {} lost datagrams",
        sim.lost
    );
    assert!(suspicions > 0, "loss this high must cause failed probes");
    assert!(refutations > 0, "suspected members must have refuted");
    assert_eq!(failed_events(&sim, since), Vec::new());
    let everyone = sim.live();
    assert!(sim.all_see_alive(&everyone, &everyone));
}

#[test]
fn a_slow_member_refutes_suspicion_instead_of_being_declared_failed() {
    let mut sim = formed(14, 50);
    let since = sim.elapsed();
    // 600 ms each way: a round trip longer than the 1 s probe period.
    let slow = 7;
    sim.net.slow.insert(slow, Duration::from_millis(600));
    sim.run_for(Duration::from_secs(180));
    let slow_stats = sim.nodes[slow].membership.stats().clone();
    println!(
        "slow member: {} refutations, {} suspicions raised, local health now {}",
        slow_stats.refutations,
        slow_stats.suspicions,
        sim.nodes[slow].membership.local_health()
    );
    assert!(
        slow_stats.refutations > 0,
        "the slow member was suspected and refuted"
    );
    assert_eq!(failed_events(&sim, since), Vec::new());
}

#[test]
fn both_halves_of_a_partition_reconverge_after_healing() {
    let mut sim = formed(15, 100);
    let everyone = sim.live();
    let groups: Vec<u32> = (0..100).map(|i| u32::from(i >= 50)).collect();
    sim.partition(groups);
    let split_at = sim.elapsed();
    sim.run_for(Duration::from_secs(60));
    for observer in [3usize, 77] {
        let failed = sim
            .members_of(observer)
            .into_iter()
            .filter(|m| m.status == MemberStatus::Failed)
            .count();
        assert_eq!(failed, 50, "n{observer} sees the other half as failed");
    }
    let detected = sim.first_seen(&everyone, split_at, is_any_failed);
    println!(
        "partition detected everywhere after {:?}",
        all_within(&detected)
    );
    sim.heal();
    let took = sim.run_until(Duration::from_secs(180), SECOND, |sim| {
        sim.all_see_alive(&everyone, &everyone)
    });
    println!("healed partition reconverged in {took:?}");
    assert!(took.is_some(), "no reconvergence within 3 min of healing");
    for observer in &everyone {
        assert!(sim
            .members_of(*observer)
            .iter()
            .all(|m| m.status == MemberStatus::Alive || m.status == MemberStatus::Suspect));
    }
}

#[test]
fn a_graceful_leave_is_reported_as_left_and_a_crash_as_failed() {
    let mut sim = formed(16, 100);
    let since = sim.elapsed();
    let (leaver, crashed) = (21, 63);
    sim.with(leaver, |m, now| m.leave(now));
    sim.kill(crashed);
    sim.run_for(2 * SECOND);
    assert!(sim.nodes[leaver].membership.has_left());
    sim.kill(leaver);
    sim.run_for(Duration::from_secs(40));
    let observers = sim.live();
    let left = name_of(leaver);
    let dead = name_of(crashed);
    assert_eq!(
        sim.count_seen(&observers, since, is_leave_of(&left)),
        vec![1; 98]
    );
    assert_eq!(
        sim.count_seen(&observers, since, is_failed_of(&left)),
        vec![0; 98]
    );
    assert_eq!(
        sim.count_seen(&observers, since, is_failed_of(&dead)),
        vec![1; 98]
    );
    assert_eq!(
        sim.count_seen(&observers, since, is_leave_of(&dead)),
        vec![0; 98]
    );
    let leave_times = sim.first_seen(&observers, since, is_leave_of(&left));
    println!("leave known to all after {:?}", all_within(&leave_times));
    for observer in observers {
        let states: BTreeMap<String, MemberStatus> = sim
            .members_of(observer)
            .into_iter()
            .map(|m| (m.name, m.status))
            .collect();
        assert_eq!(states[&left], MemberStatus::Left);
        assert_eq!(states[&dead], MemberStatus::Failed);
    }
}

#[test]
fn failed_and_left_members_are_reaped_after_their_timeouts() {
    let mut sim = Sim::new(17);
    let took = sim.form_cluster(
        20,
        |config| {
            config.reconnect_timeout = Duration::from_secs(90);
            config.tombstone_timeout = Duration::from_secs(30);
        },
        Duration::from_secs(60),
    );
    assert!(took.is_some());
    let since = sim.elapsed();
    sim.with(3, |m, now| m.leave(now));
    sim.kill(5);
    sim.run_for(2 * SECOND);
    sim.kill(3);
    sim.run_for(Duration::from_secs(150));
    let observers = sim.live();
    let is_reap_of = |name: String| move |event: &MemberEvent| matches!(event, MemberEvent::Reap(info) if info.name == name);
    let left_at = sim.first_seen(&observers, since, is_leave_of("n3"));
    let left_reaped = sim.first_seen(&observers, since, is_reap_of("n3".into()));
    let failed_at = sim.first_seen(&observers, since, is_failed_of("n5"));
    let failed_reaped = sim.first_seen(&observers, since, is_reap_of("n5".into()));
    for i in 0..observers.len() {
        let kept_left = left_reaped[i].unwrap() - left_at[i].unwrap();
        let kept_failed = failed_reaped[i].unwrap() - failed_at[i].unwrap();
        assert!(
            (30 * SECOND..32 * SECOND).contains(&kept_left),
            "left member kept {kept_left:?}"
        );
        assert!(
            (90 * SECOND..92 * SECOND).contains(&kept_failed),
            "failed member kept {kept_failed:?}"
        );
        let names: Vec<String> = sim
            .members_of(observers[i])
            .into_iter()
            .map(|m| m.name)
            .collect();
        assert!(!names.contains(&"n3".to_string()) && !names.contains(&"n5".to_string()));
    }
}

#[test]
fn a_tag_update_reaches_every_member_exactly_once() {
    let mut sim = formed(18, 100);
    let since = sim.elapsed();
    let mut tags = Tags::new();
    tags.insert("id".into(), "9".into());
    tags.insert("kafka".into(), "127.0.0.1:9092".into());
    tags.insert("role".into(), "voter".into());
    let wanted = tags.clone();
    sim.with(9, |m, now| m.update_tags(tags, now)).unwrap();
    sim.run_for(10 * SECOND);
    let others: Vec<usize> = sim.live().into_iter().filter(|n| *n != 9).collect();
    let is_update = |event: &MemberEvent| matches!(event, MemberEvent::Update(info) if info.name == "n9" && info.tags == wanted);
    assert_eq!(sim.count_seen(&others, since, is_update), vec![1; 99]);
    let any_update_of_n9 =
        |event: &MemberEvent| matches!(event, MemberEvent::Update(info) if info.name == "n9");
    assert_eq!(
        sim.count_seen(&others, since, any_update_of_n9),
        vec![1; 99]
    );
    let took = all_within(&sim.first_seen(&others, since, is_update)).unwrap();
    println!("tag update known to all after {took:?}");
    assert!(took <= 2 * SECOND);
    for observer in others {
        let seen = sim
            .members_of(observer)
            .into_iter()
            .find(|m| m.name == "n9")
            .unwrap();
        assert_eq!(seen.tags, wanted);
    }
}

#[test]
fn user_events_are_delivered_exactly_once_to_every_member_despite_loss() {
    let mut sim = formed(19, 100);
    let since = sim.elapsed();
    sim.net.loss = 0.05;
    let mut sent = BTreeSet::new();
    for i in 0..20usize {
        let origin = (i * 7) % 100;
        let payload = format!("payload-{i}").into_bytes();
        sim.with(origin, |m, now| {
            m.user_event("deploy", &payload, false, now)
        })
        .unwrap();
        sent.insert(payload);
        sim.run_for(Duration::from_millis(300));
    }
    // Long enough for push-pull exchanges to repair what loss kept from spreading.
    sim.run_for(Duration::from_secs(120));
    for node in sim.live() {
        let delivered: Vec<Vec<u8>> = sim
            .log
            .iter()
            .filter(|e| e.node == node && e.at >= since)
            .filter_map(|e| match &e.event {
                MemberEvent::User(event) => Some(event.payload.clone()),
                _ => None,
            })
            .collect();
        let unique: BTreeSet<Vec<u8>> = delivered.iter().cloned().collect();
        assert_eq!(
            delivered.len(),
            unique.len(),
            "n{node} delivered a duplicate"
        );
        assert_eq!(unique, sent, "n{node} missed events");
    }
}

#[test]
fn coalesced_events_deliver_only_the_newest_once() {
    let mut sim = formed(20, 30);
    let since = sim.elapsed();
    for version in 1..=5u8 {
        sim.with(4, |m, now| m.user_event("config", &[version], true, now))
            .unwrap();
        sim.run_for(Duration::from_millis(1));
    }
    sim.run_for(10 * SECOND);
    for node in sim.live() {
        let delivered: Vec<u8> = sim
            .log
            .iter()
            .filter(|e| e.node == node && e.at >= since)
            .filter_map(|e| match &e.event {
                MemberEvent::User(event) => Some(event.payload[0]),
                _ => None,
            })
            .collect();
        assert_eq!(
            delivered.iter().filter(|v| **v == 5).count(),
            1,
            "n{node}: {delivered:?}"
        );
        assert!(
            delivered.windows(2).all(|pair| pair[0] < pair[1]),
            "n{node} delivered an older coalesced event after a newer one: {delivered:?}"
        );
        if node != 4 {
            assert!(
                delivered.len() < 5,
                "n{node} got every version: {delivered:?}"
            );
        }
    }
}

fn responders(sim: &Sim, asker: usize) -> (BTreeSet<String>, BTreeSet<String>, bool) {
    let mut acks = BTreeSet::new();
    let mut responses = BTreeSet::new();
    let mut done = false;
    for logged in sim.queries.iter().filter(|q| q.node == asker) {
        match &logged.update {
            QueryUpdate::Ack { from, .. } => {
                acks.insert(from.clone());
            }
            QueryUpdate::Response { from, payload, .. } => {
                assert_eq!(from.as_bytes(), payload.as_slice());
                assert!(
                    responses.insert(from.clone()),
                    "duplicate response from {from}"
                );
            }
            QueryUpdate::Done { .. } => done = true,
        }
    }
    (acks, responses, done)
}

#[test]
fn a_query_collects_acks_and_responses_from_every_live_member() {
    let mut sim = formed(21, 100);
    sim.auto_respond = true;
    sim.kill(30);
    sim.kill(31);
    sim.run_for(Duration::from_secs(30));
    let options = QueryOptions {
        request_ack: true,
        timeout: Some(5 * SECOND),
        ..QueryOptions::default()
    };
    sim.with(0, |m, now| m.query("who", b"?", options, now))
        .unwrap();
    sim.run_for(6 * SECOND);
    let (acks, responses, done) = responders(&sim, 0);
    let live: BTreeSet<String> = sim.live().into_iter().map(name_of).collect();
    assert_eq!(live.len(), 98);
    assert_eq!(acks, live);
    assert_eq!(responses, live);
    assert!(done, "the asker is told when the query times out");
}

#[test]
fn query_filters_select_members_by_name_and_tag() {
    let mut sim = formed(22, 100);
    sim.auto_respond = true;
    let by_tag = QueryOptions {
        filter: QueryFilter::default().tag_matches("id", r"^1\d$"),
        timeout: Some(3 * SECOND),
        request_ack: false,
    };
    sim.with(50, |m, now| m.query("by-tag", b"", by_tag, now))
        .unwrap();
    sim.run_for(4 * SECOND);
    let (_, responses, _) = responders(&sim, 50);
    let expected: BTreeSet<String> = (10..20).map(name_of).collect();
    assert_eq!(responses, expected);

    sim.queries.clear();
    let by_name = QueryOptions {
        filter: QueryFilter::default()
            .node("n3")
            .node("n97")
            .tag_equals("id", "97"),
        timeout: Some(3 * SECOND),
        request_ack: false,
    };
    sim.with(50, |m, now| m.query("by-name", b"", by_name, now))
        .unwrap();
    sim.run_for(4 * SECOND);
    let (_, responses, _) = responders(&sim, 50);
    assert_eq!(responses, BTreeSet::from(["n97".to_string()]));
}

#[test]
fn a_run_is_a_pure_function_of_its_seed() {
    let run = |seed: u64| {
        let mut sim = Sim::new(seed);
        sim.form_cluster(20, |_| {}, Duration::from_secs(30));
        sim.net.loss = 0.1;
        sim.kill(4);
        sim.run_for(Duration::from_secs(30));
        sim.log
            .iter()
            .map(|e| format!("{:?} {} {:?}", e.at, e.node, e.event))
            .collect::<Vec<_>>()
    };
    let first = run(5);
    assert!(!first.is_empty());
    assert_eq!(first, run(5));
    assert_ne!(first, run(6));
}

#[test]
fn a_new_member_gets_events_sent_after_it_joined_but_not_older_ones() {
    let mut sim = formed(23, 10);
    for i in 0..3u8 {
        sim.with(usize::from(i), |m, now| {
            m.user_event("old", &[i], false, now)
        })
        .unwrap();
    }
    sim.run_for(5 * SECOND);
    let since = sim.elapsed();
    let newcomer = sim.add_node(Sim::config(10));
    sim.join(newcomer, &[2]);
    // Past a push-pull exchange, which carries the recent events too.
    sim.run_for(40 * SECOND);
    sim.with(5, |m, now| m.user_event("new", b"x", false, now))
        .unwrap();
    sim.run_for(5 * SECOND);
    let delivered: Vec<String> = sim
        .log
        .iter()
        .filter(|e| e.node == newcomer && e.at >= since)
        .filter_map(|e| match &e.event {
            MemberEvent::User(event) => Some(event.name.clone()),
            _ => None,
        })
        .collect();
    assert_eq!(delivered, vec!["new".to_string()]);
}
