//! Consumer-group figures: how long N members take to form a stable group, how long the group
//! takes to rebalance after one member leaves, and how many synchronous offset commits per second
//! one client gets.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use clap::Args;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer};
use rdkafka::{Offset, TopicPartitionList};

use crate::common::Common;

#[derive(Debug, Args)]
pub struct GroupArgs {
    #[command(flatten)]
    pub common: Common,
    /// Group members started at once.
    #[arg(long, default_value_t = 10)]
    pub members: usize,
    /// Consumer group id (a fresh one per run is best: `--group bench-$RANDOM`).
    #[arg(long, default_value = "skiff-bench-group")]
    pub group: String,
    /// How long to run synchronous offset commits for.
    #[arg(long, default_value_t = 5.0)]
    pub commit_secs: f64,
    /// Partitions in each synchronous commit (0 to N-1): on a cluster, a commit of every
    /// partition covers partitions led by every broker, as a real consumer's does.
    #[arg(long, default_value_t = 1)]
    pub commit_partitions: i32,
}

/// One member thread: polls (which drives the group protocol) and publishes how many partitions
/// it owns.
struct Member {
    owned: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
    thread: std::thread::JoinHandle<()>,
}

fn start_member(args: &GroupArgs) -> Result<Member> {
    let mut config = args.common.client_config();
    config
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("session.timeout.ms", "10000")
        .set("heartbeat.interval.ms", "500");
    args.common.apply_extras(&mut config);
    let consumer: BaseConsumer = config.create()?;
    consumer.subscribe(&[args.common.topic.as_str()])?;
    let owned = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let thread = {
        let (owned, stop) = (owned.clone(), stop.clone());
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let _ = consumer.poll(Duration::from_millis(20));
                let count = consumer.assignment().map(|a| a.count()).unwrap_or(0);
                owned.store(count, Ordering::Relaxed);
            }
            consumer.unsubscribe();
        })
    };
    Ok(Member {
        owned,
        stop,
        thread,
    })
}

impl Member {
    fn leave(self) {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
    }
}

/// Waits until the members together own every partition, each owning at least one.
fn wait_stable(members: &[Member], partitions: usize, limit: Duration) -> Result<Duration> {
    let started = Instant::now();
    loop {
        let owned: Vec<usize> = members
            .iter()
            .map(|m| m.owned.load(Ordering::Relaxed))
            .collect();
        if owned.iter().sum::<usize>() == partitions && owned.iter().all(|&n| n > 0) {
            return Ok(started.elapsed());
        }
        if started.elapsed() > limit {
            bail!("group not stable after {limit:?}: partitions owned per member {owned:?}");
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

fn commit_throughput(args: &GroupArgs) -> Result<(u64, Duration)> {
    let mut config = args.common.client_config();
    config
        .set("group.id", format!("{}-commits", args.group))
        .set("enable.auto.commit", "false");
    args.common.apply_extras(&mut config);
    let consumer: BaseConsumer = config.create()?;
    let started = Instant::now();
    let mut commits = 0u64;
    while started.elapsed().as_secs_f64() < args.commit_secs {
        let mut offsets = TopicPartitionList::new();
        for partition in 0..args.commit_partitions.max(1) {
            offsets.add_partition_offset(
                &args.common.topic,
                partition,
                Offset::Offset(commits as i64),
            )?;
        }
        consumer.commit(&offsets, CommitMode::Sync)?;
        commits += 1;
    }
    Ok((commits, started.elapsed()))
}

pub fn run(args: GroupArgs) -> Result<()> {
    let partitions = args.common.ensure_topic()? as usize;
    if args.commit_partitions as usize > partitions {
        bail!("--commit-partitions is more than the topic's {partitions} partitions");
    }
    if partitions < args.members {
        bail!(
            "the topic has {partitions} partitions: at least --members ({}) are needed",
            args.members
        );
    }
    let limit = Duration::from_secs(120);

    let mut members = Vec::new();
    let started = Instant::now();
    for _ in 0..args.members {
        members.push(start_member(&args)?);
    }
    wait_stable(&members, partitions, limit)?;
    let stabilise = started.elapsed();
    println!(
        "{} members stable (every partition owned) {:.0} ms after they subscribed",
        args.members,
        stabilise.as_secs_f64() * 1e3
    );

    let leaving = members.pop().expect("at least one member");
    let left_at = Instant::now();
    leaving.leave();
    wait_stable(&members, partitions, limit)?;
    let rebalance = left_at.elapsed();
    println!(
        "rebalance after a member left: {:.0} ms until the {} others own every partition",
        rebalance.as_secs_f64() * 1e3,
        members.len()
    );
    for member in members {
        member.leave();
    }

    let (commits, elapsed) = commit_throughput(&args)?;
    let per_second = commits as f64 / elapsed.as_secs_f64();
    println!(
        "synchronous offset commits of {} partitions: {commits} in {:.1} s = {per_second:.0}/s",
        args.commit_partitions.max(1),
        elapsed.as_secs_f64()
    );
    println!(
        "{}",
        serde_json::json!({
            "bench": "group",
            "members": args.members,
            "partitions": partitions,
            "stabilise_ms": stabilise.as_secs_f64() * 1e3,
            "rebalance_after_leave_ms": rebalance.as_secs_f64() * 1e3,
            "commit_partitions": args.commit_partitions.max(1),
            "sync_commits_per_sec": per_second,
        })
    );
    Ok(())
}
