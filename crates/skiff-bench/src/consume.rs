//! `consume`: reads messages already in the topic (written by `produce`, or by `--prefill`) from
//! the beginning of every partition with assign-only consumers (no consumer group), timed from the
//! assignment until the last wanted message arrived.

use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::bindings as rdsys;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::RDKafkaErrorCode;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::common::{mb, thousands, Api, BenchContext, Common, Limit, ADMIN_TIMEOUT};
use crate::produce::{run_produce, ProduceOpts};

#[derive(Debug, Args)]
pub struct ConsumeArgs {
    #[command(flatten)]
    pub common: Common,
    /// First produce `--messages` messages (with the `produce` settings) into the topic.
    #[arg(long, requires = "messages")]
    pub prefill: bool,
    #[command(flatten)]
    pub produce: ProduceOpts,
    /// Consumer instances, each on its own thread, splitting the partitions between them.
    #[arg(long, default_value_t = 1)]
    pub consumers: usize,
}

/// What one partition contributes: read offsets `start..end`.
#[derive(Debug, Clone, Copy)]
struct PartitionPlan {
    partition: i32,
    start: i64,
    end: i64,
}

pub fn consumer_config(common: &Common) -> rdkafka::ClientConfig {
    let mut config = common.client_config();
    // librdkafka refuses assign() without a group id; no group is joined (assign-only, nothing
    // committed), so the broker needs no group support.
    config
        .set("group.id", "skiff-bench-assign-only")
        .set("enable.partition.eof", "false")
        .set("enable.auto.commit", "false")
        .set("enable.auto.offset.store", "false")
        .set("auto.offset.reset", "earliest");
    config
}

fn create_consumer(common: &Common, throughput: bool) -> Result<BaseConsumer<BenchContext>> {
    let mut config = consumer_config(common);
    if throughput {
        config
            .set("fetch.max.bytes", "67108864")
            .set("max.partition.fetch.bytes", "4194304")
            .set("queued.min.messages", "1000000")
            .set("queued.max.messages.kbytes", "1048576");
    }
    common.apply_extras(&mut config);
    config
        .create_with_context(BenchContext::new(common)?)
        .context("creating the consumer")
}

#[derive(Debug, Default, Clone, Copy)]
struct ThreadResult {
    messages: u64,
    bytes: u64,
    first_message: Option<Instant>,
    last_message: Option<Instant>,
}

/// Counts the wanted messages of one consumer thread and decides when it is done.
struct Tracker {
    /// Per partition index: one past the last offset wanted (`i64::MIN` if not assigned here).
    end: Vec<i64>,
    open: usize,
    deadline: Option<Instant>,
    last_progress: Instant,
    result: ThreadResult,
}

impl Tracker {
    fn new(plans: &[PartitionPlan], deadline: Option<Instant>) -> Self {
        let max_partition = plans.iter().map(|p| p.partition).max().unwrap_or(0) as usize;
        let mut end = vec![i64::MIN; max_partition + 1];
        for plan in plans {
            end[plan.partition as usize] = plan.end;
        }
        Self {
            end,
            open: plans.len(),
            deadline,
            last_progress: Instant::now(),
            result: ThreadResult::default(),
        }
    }

    /// Counts one message; false once every partition is read to its end (or at the deadline).
    /// The clock is read every 4096 messages only: once per message would show in the profile.
    fn message(&mut self, partition: i32, offset: i64, len: usize) -> bool {
        let Some(&partition_end) = self.end.get(partition as usize) else {
            return true;
        };
        if offset >= partition_end {
            return true;
        }
        let r = &mut self.result;
        if r.messages == 0 {
            r.first_message = Some(Instant::now());
        }
        r.messages += 1;
        r.bytes += len as u64;
        if offset + 1 >= partition_end {
            self.open -= 1;
            if self.open == 0 {
                r.last_message = Some(Instant::now());
                return false;
            }
        }
        if r.messages & 4095 == 0 {
            let now = Instant::now();
            self.last_progress = now;
            r.last_message = Some(now);
            if self.deadline.is_some_and(|d| now >= d) {
                return false;
            }
        }
        true
    }

    /// Nothing arrived within a poll: false at the deadline, an error after 30 s without progress.
    fn idle(&mut self) -> Result<bool> {
        let now = Instant::now();
        if self.deadline.is_some_and(|d| now >= d) {
            return Ok(false);
        }
        if let Some(last) = self.result.last_message {
            self.last_progress = self.last_progress.max(last);
        }
        if now.duration_since(self.last_progress) > Duration::from_secs(30) {
            bail!(
                "no progress for 30 s after {} messages ({} partitions unfinished)",
                self.result.messages,
                self.open
            );
        }
        Ok(true)
    }

    fn finish(mut self) -> ThreadResult {
        if self.open > 0 && self.result.messages > 0 {
            // Stopped by the deadline.
            self.result.last_message = Some(Instant::now());
        }
        self.result
    }
}

/// Per-message `BaseConsumer::poll`.
fn poll_loop(consumer: &BaseConsumer<BenchContext>, tracker: &mut Tracker) -> Result<()> {
    loop {
        match consumer.poll(Duration::from_millis(100)) {
            Some(Ok(m)) => {
                if !tracker.message(m.partition(), m.offset(), m.payload_len()) {
                    return Ok(());
                }
            }
            Some(Err(e)) => bail!("consumer error: {e}"),
            None => {
                if !tracker.idle()? {
                    return Ok(());
                }
            }
        }
    }
}

/// A librdkafka queue reference, released on drop.
struct QueueHandle(*mut rdsys::rd_kafka_queue_t);

impl Drop for QueueHandle {
    fn drop(&mut self) {
        // SAFETY: the reference came from rd_kafka_queue_get_consumer and is released once.
        unsafe { rdsys::rd_kafka_queue_destroy(self.0) }
    }
}

const BATCH_CONSUME_MESSAGES: usize = 10_000;

/// `rd_kafka_consume_batch_queue` on the consumer queue: up to 10000 messages per call.
fn batch_loop(consumer: &BaseConsumer<BenchContext>, tracker: &mut Tracker) -> Result<()> {
    // SAFETY: the client pointer is valid while `consumer` lives, which outlives the handle.
    let queue = unsafe { rdsys::rd_kafka_queue_get_consumer(consumer.client().native_ptr()) };
    if queue.is_null() {
        bail!("the consumer has no consumer queue");
    }
    let queue = QueueHandle(queue);
    let mut batch: Vec<*mut rdsys::rd_kafka_message_t> =
        vec![std::ptr::null_mut(); BATCH_CONSUME_MESSAGES];
    loop {
        // SAFETY: `batch` has room for the `batch.len()` message pointers librdkafka may write.
        let n = unsafe {
            rdsys::rd_kafka_consume_batch_queue(queue.0, 100, batch.as_mut_ptr(), batch.len())
        };
        if n < 0 {
            bail!("rd_kafka_consume_batch_queue failed");
        }
        if n == 0 {
            if !tracker.idle()? {
                return Ok(());
            }
            continue;
        }
        let mut go_on = true;
        let mut error = None;
        for &m in &batch[..n as usize] {
            // SAFETY: librdkafka returned `n` valid messages; each is read, then destroyed once.
            unsafe {
                let message = &*m;
                if message.err != RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR {
                    error.get_or_insert(RDKafkaErrorCode::from(message.err));
                } else if go_on {
                    go_on = tracker.message(message.partition, message.offset, message.len);
                }
                rdsys::rd_kafka_message_destroy(m);
            }
        }
        if let Some(e) = error {
            bail!("consumer error: {e}");
        }
        if !go_on {
            return Ok(());
        }
    }
}

fn consume_thread(
    common: &Common,
    api: Api,
    plans: &[PartitionPlan],
    duration: Option<Duration>,
    start: &Barrier,
) -> Result<ThreadResult> {
    let consumer = create_consumer(common, true);
    let consumer = consumer.and_then(|c| {
        c.fetch_metadata(Some(&common.topic), ADMIN_TIMEOUT)
            .context("Metadata")?;
        Ok(c)
    });
    start.wait();
    let deadline = duration.map(|d| Instant::now() + d);
    let consumer = consumer?;
    if plans.is_empty() {
        return Ok(ThreadResult::default());
    }
    let mut tpl = TopicPartitionList::new();
    for plan in plans {
        tpl.add_partition_offset(&common.topic, plan.partition, Offset::Offset(plan.start))?;
    }
    consumer.assign(&tpl)?;
    let mut tracker = Tracker::new(plans, deadline);
    match api {
        Api::Message => poll_loop(&consumer, &mut tracker)?,
        Api::Batch => batch_loop(&consumer, &mut tracker)?,
    }
    Ok(tracker.finish())
}

/// Reads the topic's current log start and end offsets, and picks up to `wanted` messages,
/// partition by partition.
fn plan_partitions(
    common: &Common,
    partitions: i32,
    wanted: Option<u64>,
) -> Result<Vec<PartitionPlan>> {
    let consumer = create_consumer(common, false)?;
    let mut left = wanted.unwrap_or(u64::MAX);
    let mut plans = Vec::new();
    let mut available = 0u64;
    for partition in 0..partitions {
        let (low, high) = consumer
            .fetch_watermarks(&common.topic, partition, ADMIN_TIMEOUT)
            .with_context(|| format!("ListOffsets for partition {partition}"))?;
        let have = (high - low).max(0) as u64;
        available += have;
        let take = have.min(left);
        left -= take;
        plans.push(PartitionPlan {
            partition,
            start: low,
            end: low + take as i64,
        });
    }
    if let Some(n) = wanted {
        if n > available {
            bail!(
                "topic '{}' holds {available} messages, fewer than --messages {n}; produce first or use --prefill",
                common.topic
            );
        }
    }
    if available == 0 {
        bail!(
            "topic '{}' is empty; produce first or use --prefill",
            common.topic
        );
    }
    Ok(plans)
}

pub fn run(args: ConsumeArgs) -> Result<()> {
    let common = &args.common;
    let partitions = common.ensure_topic()?;
    if args.prefill {
        let n = common
            .messages
            .expect("clap requires --messages with --prefill");
        let prefill = run_produce(common, &args.produce, partitions, Limit::Messages(n))?;
        prefill.print("prefill");
        if prefill.errors > 0 {
            bail!("prefill had {} delivery errors", prefill.errors);
        }
    }
    let mut plans = plan_partitions(common, partitions, common.messages)?;
    plans.retain(|p| p.end > p.start);
    let wanted: u64 = plans.iter().map(|p| (p.end - p.start) as u64).sum();
    let threads = args.consumers.clamp(1, plans.len());
    println!(
        "consume: topic {} ({partitions} partitions), reading {wanted} messages with {threads} consumer(s), api={}",
        common.topic,
        args.produce.api.as_str()
    );
    let barrier = Barrier::new(threads + 1);
    let deadline_after = common.duration_secs.map(Duration::from_secs_f64);
    let (outcomes, started) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let mine: Vec<PartitionPlan> =
                    plans.iter().copied().skip(t).step_by(threads).collect();
                let barrier = &barrier;
                scope.spawn(move || {
                    consume_thread(common, args.produce.api, &mine, deadline_after, barrier)
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("consumer thread panicked"))
            .collect();
        (outcomes, started)
    });
    let mut total = ThreadResult::default();
    for outcome in outcomes {
        let r = outcome?;
        total.messages += r.messages;
        total.bytes += r.bytes;
        total.first_message = match (total.first_message, r.first_message) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        total.last_message = total.last_message.max(r.last_message);
    }
    let Some(last) = total.last_message else {
        bail!("no message was consumed");
    };
    let elapsed = last.duration_since(started).as_secs_f64();
    let first = total.first_message.unwrap_or(started);
    let steady = last.duration_since(first).as_secs_f64();
    let rate = total.messages as f64 / elapsed;
    let mb_rate = mb(total.bytes) / elapsed;
    println!(
        "consume: {} messages, {:.1} MB in {elapsed:.3} s: {} msg/s, {mb_rate:.1} MB/s (first message after {:.1} ms; {} msg/s from first to last)",
        total.messages,
        mb(total.bytes),
        thousands(rate),
        first.duration_since(started).as_secs_f64() * 1e3,
        thousands(total.messages as f64 / steady.max(1e-9)),
    );
    println!(
        "{}",
        json!({
            "bench": "consume",
            "topic": common.topic,
            "partitions": partitions,
            "consumers": threads,
            "api": args.produce.api.as_str(),
            "messages": total.messages,
            "payload_bytes": total.bytes,
            "elapsed_secs": elapsed,
            "msgs_per_sec": rate.round(),
            "mb_per_sec": (mb_rate * 10.0).round() / 10.0,
            "first_message_ms": first.duration_since(started).as_secs_f64() * 1e3,
            "msgs_per_sec_first_to_last": (total.messages as f64 / steady.max(1e-9)).round(),
        })
    );
    Ok(())
}
