//! `failover`: a steady workload through a broker's SIGKILL. A producer sends at a fixed rate
//! (with `--acks`) while a group member with the client's default settings consumes the topic and
//! commits its position every 100 ms. After `--kill-after-secs` the tool SIGKILLs the broker
//! that coordinates the group or leads partition 0 (its pid from `--broker-pid`), and reports
//! how long after the kill the producer's acknowledgements, the member's consumption and its
//! commits (read back with OffsetFetch, as any client reads them) were flowing again on every
//! partition.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::json;

use crate::common::{Common, Payloads, ADMIN_TIMEOUT};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Victim {
    /// The broker coordinating `--group`.
    Coordinator,
    /// The broker leading partition 0 of the topic.
    Leader,
}

#[derive(Debug, Args)]
pub struct FailoverArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second to produce.
    #[arg(long, default_value_t = 1000)]
    pub rate: u64,
    /// Consumer group of the member.
    #[arg(long, default_value = "skiff-bench-failover")]
    pub group: String,
    /// Which broker to kill.
    #[arg(long, value_enum)]
    pub kill: Victim,
    /// When to kill it, counted from the moment the member first consumed.
    #[arg(long, default_value_t = 10.0)]
    pub kill_after_secs: f64,
    /// A broker's process, `ID=PID` (repeatable; `pgrep -f -- --node-id=ID` finds it).
    #[arg(long = "broker-pid", value_parser = parse_broker_pid, required = true)]
    pub broker_pids: Vec<(i32, i32)>,
}

fn parse_broker_pid(s: &str) -> Result<(i32, i32), String> {
    let (id, pid) = s
        .split_once('=')
        .ok_or_else(|| format!("expected ID=PID, got '{s}'"))?;
    let parse = |v: &str| v.parse::<i32>().map_err(|e| format!("'{v}' in '{s}': {e}"));
    Ok((parse(id)?, parse(pid)?))
}

/// The first progress of each partition after the kill.
#[derive(Default)]
struct Progress {
    /// The kill, on the monotonic clock and in milliseconds since the epoch (as message
    /// timestamps).
    kill: Option<(Instant, i64)>,
    /// Per partition: the first event after the kill.
    resumed: BTreeMap<i32, Instant>,
    /// Commits only: per partition, the position consumed when the broker was killed; a commit
    /// up to it may have been answered before the kill.
    positions_at_kill: BTreeMap<i32, i64>,
    events: u64,
    errors: u64,
    first_error: Option<String>,
}

impl Progress {
    /// An event of `partition` about a message created at `created_ms` (its timestamp): an
    /// acknowledgement or a consumed message counts as progress only for a message created after
    /// the kill, since the answer may have left the killed broker before it died.
    fn record(&mut self, partition: i32, created_ms: i64) {
        self.events += 1;
        if let Some((kill, kill_ms)) = self.kill {
            if created_ms >= kill_ms {
                self.resumed
                    .entry(partition)
                    .or_insert_with(|| Instant::now().max(kill));
            }
        }
    }

    /// `offset` read as committed for `partition`: progress only past the position consumed
    /// at the kill.
    fn record_commit(&mut self, partition: i32, offset: i64) {
        self.events += 1;
        if let Some((kill, _)) = self.kill {
            if self
                .positions_at_kill
                .get(&partition)
                .is_none_or(|&at| offset > at)
            {
                self.resumed
                    .entry(partition)
                    .or_insert_with(|| Instant::now().max(kill));
            }
        }
    }

    fn error(&mut self, error: String) {
        self.errors += 1;
        self.first_error.get_or_insert(error);
    }

    /// The longest time from the kill to the first event of a partition, and which one; None
    /// if a partition has had no event since the kill.
    fn slowest(&self, partitions: i32) -> Option<(i32, Duration)> {
        let (kill, _) = self.kill?;
        (0..partitions)
            .map(|p| Some((p, self.resumed.get(&p)?.duration_since(kill))))
            .collect::<Option<Vec<_>>>()?
            .into_iter()
            .max_by_key(|(_, took)| *took)
    }
}

#[derive(Default)]
struct Observer {
    acks: Mutex<Progress>,
    consumed: Mutex<Progress>,
    commits: Mutex<Progress>,
    /// Per partition, the offset after the last message consumed.
    positions: Mutex<BTreeMap<i32, i64>>,
    rebalances: AtomicU64,
}

impl Observer {
    fn kill_now(&self) {
        let now = Instant::now();
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as i64);
        self.commits.lock().unwrap().positions_at_kill = self.positions.lock().unwrap().clone();
        for progress in [&self.acks, &self.consumed, &self.commits] {
            progress.lock().unwrap().kill = Some((now, now_ms));
        }
    }
}

struct ProducerObserver<'a>(&'a Observer);

impl ClientContext for ProducerObserver<'_> {}

impl ProducerContext for ProducerObserver<'_> {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let mut acks = self.0.acks.lock().unwrap();
        match result {
            Ok(message) => acks.record(
                message.partition(),
                message.timestamp().to_millis().unwrap_or(i64::MIN),
            ),
            Err((error, _)) => acks.error(error.to_string()),
        }
    }
}

struct ConsumerObserver<'a>(&'a Observer);

impl ClientContext for ConsumerObserver<'_> {}

impl ConsumerContext for ConsumerObserver<'_> {
    fn post_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if matches!(rebalance, Rebalance::Assign(_)) {
            self.0.rebalances.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// The broker that answers ListGroups for `group`: its coordinator.
fn coordinator<C: ClientContext>(client: &rdkafka::client::Client<C>, group: &str) -> Result<i32> {
    let name = CString::new(group)?;
    let mut list: *const rdsys::rd_kafka_group_list = std::ptr::null();
    // SAFETY: the client pointer is live for the call; the list is read, then destroyed once.
    unsafe {
        let error = rdsys::rd_kafka_list_groups(
            client.native_ptr(),
            name.as_ptr(),
            &mut list,
            ADMIN_TIMEOUT.as_millis() as i32,
        );
        if error != rdsys::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR {
            bail!("ListGroups: {}", RDKafkaErrorCode::from(error));
        }
        let broker = if (*list).group_cnt > 0 {
            let groups = std::slice::from_raw_parts((*list).groups, (*list).group_cnt as usize);
            groups.first().map(|g| g.broker.id)
        } else {
            None
        };
        rdsys::rd_kafka_group_list_destroy(list);
        broker.with_context(|| format!("no broker lists group '{group}'"))
    }
}

fn leader_of_first_partition<C: ClientContext>(
    client: &rdkafka::client::Client<C>,
    topic: &str,
) -> Result<i32> {
    let metadata = client.fetch_metadata(Some(topic), ADMIN_TIMEOUT)?;
    metadata
        .topics()
        .first()
        .and_then(|t| t.partitions().iter().find(|p| p.id() == 0))
        .map(|p| p.leader())
        .filter(|&leader| leader >= 0)
        .context("partition 0 has no leader")
}

pub fn run(args: FailoverArgs) -> Result<()> {
    let common = &args.common;
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let partitions = common.ensure_topic()?;
    let observer = Observer::default();
    let mut config = common.client_config();
    config
        .set("acks", &common.acks)
        .set("compression.type", common.compression.as_str())
        .set("linger.ms", "1");
    common.apply_extras(&mut config);
    let producer: BaseProducer<ProducerObserver> = config
        .create_with_context(ProducerObserver(&observer))
        .context("creating the producer")?;
    let mut config = common.client_config();
    config
        .set("group.id", &args.group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "latest");
    common.apply_extras(&mut config);
    let member: BaseConsumer<ConsumerObserver> = config
        .create_with_context(ConsumerObserver(&observer))
        .context("creating the group member")?;
    member.subscribe(&[common.topic.as_str()])?;
    // Their own connections: the lookups must not queue behind the producer's requests, and
    // the group's commits are read as any client reads them, with OffsetFetch.
    let lookup: BaseConsumer = common
        .client_config()
        .create()
        .context("creating the lookup client")?;
    let committer: BaseConsumer = common
        .client_config()
        .set("group.id", &args.group)
        .create()
        .context("creating the commit reader")?;

    let measured = Duration::from_secs_f64(common.duration_secs.unwrap_or(30.0));
    let kill_after = Duration::from_secs_f64(args.kill_after_secs);
    if kill_after >= measured {
        bail!("--kill-after-secs must be below --duration-secs: nothing would be measured");
    }
    println!(
        "failover: topic {} ({partitions} partitions), {} B messages at {} msg/s, acks={}, group {}, kill the {:?} {:.1} s after the first message consumed, {:.1} s in all",
        common.topic,
        common.message_bytes,
        args.rate,
        common.acks,
        args.group,
        args.kill,
        kill_after.as_secs_f64(),
        measured.as_secs_f64(),
    );
    let stop = AtomicBool::new(false);
    let consuming_since: Mutex<Option<Instant>> = Mutex::new(None);
    let payloads = Payloads::new(common.message_bytes);
    let interval = Duration::from_secs_f64(1.0 / args.rate as f64);

    let killed = std::thread::scope(|scope| -> Result<i32> {
        let consumer_thread = scope.spawn(|| {
            let mut last_commit = Instant::now();
            while !stop.load(Ordering::Relaxed) {
                match member.poll(Duration::from_millis(20)) {
                    Some(Ok(message)) => {
                        consuming_since
                            .lock()
                            .unwrap()
                            .get_or_insert_with(Instant::now);
                        observer
                            .positions
                            .lock()
                            .unwrap()
                            .insert(message.partition(), message.offset() + 1);
                        observer.consumed.lock().unwrap().record(
                            message.partition(),
                            message.timestamp().to_millis().unwrap_or(i64::MIN),
                        );
                    }
                    Some(Err(e)) => observer.consumed.lock().unwrap().error(e.to_string()),
                    None => {}
                }
                if last_commit.elapsed() >= Duration::from_millis(100) {
                    last_commit = Instant::now();
                    let _ = member.commit_consumer_state(CommitMode::Async);
                }
            }
        });
        let producer_thread = scope.spawn(|| {
            let start = Instant::now();
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let due = start + interval.mul_f64(sent as f64);
                let now = Instant::now();
                if due > now {
                    producer.poll(due - now);
                    continue;
                }
                let record = BaseRecord::<(), [u8]>::to(&common.topic)
                    .partition((sent % partitions as u64) as i32)
                    .payload(payloads.get(sent));
                match producer.send(record) {
                    Ok(()) => sent += 1,
                    Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                        producer.poll(Duration::from_millis(1));
                    }
                    Err((e, _)) => observer.acks.lock().unwrap().error(e.to_string()),
                }
            }
            let _ = producer.flush(Duration::from_secs(60));
        });
        let result = (|| {
            let began = Instant::now();
            let consuming = loop {
                if let Some(since) = *consuming_since.lock().unwrap() {
                    break since;
                }
                if began.elapsed() > Duration::from_secs(60) {
                    bail!("the group member consumed nothing within 60 s");
                }
                std::thread::sleep(Duration::from_millis(10));
            };
            std::thread::sleep((consuming + kill_after).saturating_duration_since(Instant::now()));
            let victim = match args.kill {
                Victim::Coordinator => coordinator(lookup.client(), &args.group)?,
                Victim::Leader => leader_of_first_partition(lookup.client(), &common.topic)?,
            };
            let Some(&(_, pid)) = args.broker_pids.iter().find(|(id, _)| *id == victim) else {
                bail!("no --broker-pid for broker {victim}");
            };
            // SAFETY: kill(2) with a pid and a signal number has no memory effects.
            if unsafe { libc::kill(pid, libc::SIGKILL) } != 0 {
                bail!(
                    "kill -9 {pid} (broker {victim}): {}",
                    std::io::Error::last_os_error()
                );
            }
            observer.kill_now();
            // Commits, as the group's coordinator answers OffsetFetch, until the end.
            let mut all = TopicPartitionList::new();
            for partition in 0..partitions {
                all.add_partition(&common.topic, partition);
            }
            while Instant::now() < consuming + measured {
                let committed = committer.committed_offsets(all.clone(), Duration::from_secs(2));
                let mut commits = observer.commits.lock().unwrap();
                match committed {
                    Ok(committed) => {
                        for element in committed.elements() {
                            if let Offset::Offset(offset) = element.offset() {
                                commits.record_commit(element.partition(), offset);
                            }
                        }
                    }
                    Err(e) => commits.error(e.to_string()),
                }
                drop(commits);
                std::thread::sleep(Duration::from_millis(50));
            }
            Ok(victim)
        })();
        stop.store(true, Ordering::Relaxed);
        let _ = consumer_thread.join();
        let _ = producer_thread.join();
        result
    });
    let victim = killed?;

    let ms =
        |d: Option<(i32, Duration)>| d.map(|(_, took)| (took.as_secs_f64() * 1e4).round() / 10.0);
    let describe = |what: &str, progress: &Mutex<Progress>| {
        let progress = progress.lock().unwrap();
        let slowest = progress.slowest(partitions);
        match slowest {
            Some((partition, took)) => println!(
                "failover: {what} on every partition {:.0} ms after the kill (last: partition {partition}); {} in all, {} errors{}",
                took.as_secs_f64() * 1e3,
                progress.events,
                progress.errors,
                progress.first_error.as_ref().map_or(String::new(), |e| format!(", the first: {e}")),
            ),
            None => println!(
                "failover: {what} did not resume on every partition after the kill ({} resumed); {} in all, {} errors{}",
                progress.resumed.len(),
                progress.events,
                progress.errors,
                progress.first_error.as_ref().map_or(String::new(), |e| format!(", the first: {e}")),
            ),
        }
        slowest
    };
    println!("failover: killed broker {victim} ({:?})", args.kill);
    let acks = describe("acknowledgements", &observer.acks);
    let consumed = describe("consumption", &observer.consumed);
    let commits = describe("commits", &observer.commits);
    let rebalances = observer.rebalances.load(Ordering::Relaxed);
    println!("failover: the member was assigned partitions {rebalances} times");
    println!(
        "{}",
        json!({
            "bench": "failover",
            "killed": format!("{:?}", args.kill).to_lowercase(),
            "broker": victim,
            "rate": args.rate,
            "acks": common.acks,
            "acks_resumed_ms": ms(acks),
            "consumption_resumed_ms": ms(consumed),
            "commits_resumed_ms": ms(commits),
            "assignments": rebalances,
        })
    );
    if acks.is_none() || consumed.is_none() || commits.is_none() {
        std::process::exit(2);
    }
    Ok(())
}
