//! `produce`: as many messages as librdkafka can push, timed from the first send until every
//! message is acknowledged (the final flush is inside the measurement).

use std::ffi::{c_int, c_void, CString};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use rdkafka::bindings as rdsys;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::types::RDKafkaRespErr;
use serde_json::json;

use crate::common::{mb, thousands, Api, BenchContext, Common, Limit, Payloads, ADMIN_TIMEOUT};

#[derive(Debug, Clone, Args)]
pub struct ProduceOpts {
    /// librdkafka linger.ms: how long a batch may wait to fill.
    #[arg(long, default_value_t = 5)]
    pub linger_ms: u64,
    /// Producer instances, each on its own thread with its own connection.
    #[arg(long, default_value_t = 1)]
    pub producers: usize,
    /// librdkafka interface. `message`: one call per message, as applications do
    /// (`rd_kafka_producev` with the default partitioner; the consumer's per-message poll).
    /// `batch`: `rd_kafka_produce_batch` with 1000 messages per call to one partition, partitions
    /// taken in turn; `rd_kafka_consume_batch_queue` with up to 10000 messages per call.
    #[arg(long, value_enum, default_value_t = Api::Message)]
    pub api: Api,
}

#[derive(Debug, Args)]
pub struct ProduceArgs {
    #[command(flatten)]
    pub common: Common,
    #[command(flatten)]
    pub opts: ProduceOpts,
}

#[derive(Debug, Clone)]
pub struct ProduceResult {
    pub messages: u64,
    pub bytes: u64,
    pub errors: u64,
    pub first_error: Option<String>,
    pub elapsed: Duration,
}

impl ProduceResult {
    pub fn msgs_per_sec(&self) -> f64 {
        self.messages as f64 / self.elapsed.as_secs_f64()
    }

    pub fn mb_per_sec(&self) -> f64 {
        mb(self.bytes) / self.elapsed.as_secs_f64()
    }

    pub fn print(&self, label: &str) {
        println!(
            "{label}: {} messages, {:.1} MB in {:.3} s: {} msg/s, {:.1} MB/s, {} delivery errors",
            self.messages,
            mb(self.bytes),
            self.elapsed.as_secs_f64(),
            thousands(self.msgs_per_sec()),
            self.mb_per_sec(),
            self.errors
        );
        if let Some(e) = &self.first_error {
            println!("{label}: first delivery error: {e}");
        }
    }
}

/// Producer configuration for maximum throughput: large batches and queues, delivery reports
/// only for failures (success is implied by a completed flush).
pub fn producer_config(common: &Common, linger_ms: u64) -> rdkafka::ClientConfig {
    let mut config = common.client_config();
    config
        .set("linger.ms", linger_ms.to_string())
        .set("batch.size", "1000000")
        .set("batch.num.messages", "1000000")
        .set("queue.buffering.max.messages", "2000000")
        .set("queue.buffering.max.kbytes", "2097151")
        .set("compression.type", common.compression.as_str())
        .set("acks", &common.acks)
        .set("enable.idempotence", "false")
        .set("delivery.report.only.error", "true")
        .set("message.timeout.ms", "120000");
    config
}

/// One producer thread's work.
struct ThreadPlan<'a> {
    common: &'a Common,
    opts: &'a ProduceOpts,
    partitions: i32,
    thread: usize,
    limit: Limit,
    payloads: &'a Payloads,
    start: &'a Barrier,
}

fn produce_thread(plan: ThreadPlan<'_>) -> Result<(u64, u64, Option<String>)> {
    let ThreadPlan {
        common,
        opts,
        partitions,
        thread,
        limit,
        payloads,
        start,
    } = plan;
    let (linger_ms, api) = (opts.linger_ms, opts.api);
    let setup = || -> Result<BaseProducer<BenchContext>> {
        let mut config = producer_config(common, linger_ms);
        common.apply_extras(&mut config);
        let producer: BaseProducer<BenchContext> = config
            .create_with_context(BenchContext::new(common)?)
            .context("creating the producer")?;
        // Connect and learn the partitions before the clock starts.
        producer
            .client()
            .fetch_metadata(Some(&common.topic), ADMIN_TIMEOUT)
            .context("Metadata")?;
        Ok(producer)
    };
    let producer = setup();
    // Every thread reaches the barrier, even one whose set-up failed.
    start.wait();
    let producer = producer?;
    let sent = match api {
        Api::Message => send_loop(&producer, &common.topic, limit, payloads)?,
        Api::Batch => batch_loop(
            &producer,
            &common.topic,
            partitions,
            limit,
            payloads,
            thread,
        )?,
    };
    producer
        .flush(Duration::from_secs(180))
        .context("flush did not complete")?;
    producer.poll(Duration::ZERO);
    let context = producer.context();
    Ok((sent, context.delivery_errors(), context.first_error()))
}

/// `BaseProducer::send` (rd_kafka_producev) per message; the default partitioner spreads
/// keyless messages (sticky partitioning).
fn send_loop(
    producer: &BaseProducer<BenchContext>,
    topic: &str,
    limit: Limit,
    payloads: &Payloads,
) -> Result<u64> {
    let mut sent = 0u64;
    loop {
        let more = match limit {
            Limit::Messages(n) => sent < n,
            Limit::Until(deadline) => sent & 1023 != 0 || Instant::now() < deadline,
        };
        if !more {
            return Ok(sent);
        }
        let record: BaseRecord<'_, (), [u8]> = BaseRecord::to(topic).payload(payloads.get(sent));
        match producer.send(record) {
            Ok(()) => {
                sent += 1;
                if sent & 1023 == 0 {
                    producer.poll(Duration::ZERO);
                }
            }
            Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                producer.poll(Duration::from_millis(1));
            }
            Err((e, _)) => bail!("send failed: {e}"),
        }
    }
}

/// A librdkafka topic handle, released on drop.
struct TopicHandle(*mut rdsys::rd_kafka_topic_t);

impl Drop for TopicHandle {
    fn drop(&mut self) {
        // SAFETY: the handle came from rd_kafka_topic_new and is destroyed once.
        unsafe { rdsys::rd_kafka_topic_destroy(self.0) }
    }
}

const BATCH_CALL_MESSAGES: usize = 1000;

/// rd_kafka_produce_batch: one call enqueues up to 1000 messages (copied) for one partition,
/// which skips the per-message topic lookup and partitioner of rd_kafka_producev.
fn batch_loop(
    producer: &BaseProducer<BenchContext>,
    topic: &str,
    partitions: i32,
    limit: Limit,
    payloads: &Payloads,
    thread: usize,
) -> Result<u64> {
    let name = CString::new(topic)?;
    // SAFETY: the client pointer is valid while `producer` lives (it outlives the handle, which
    // is dropped at the end of this function); a null config means the defaults.
    let rkt = unsafe {
        rdsys::rd_kafka_topic_new(
            producer.client().native_ptr(),
            name.as_ptr(),
            std::ptr::null_mut(),
        )
    };
    if rkt.is_null() {
        bail!("rd_kafka_topic_new failed for '{topic}'");
    }
    let handle = TopicHandle(rkt);
    let mut messages: Vec<rdsys::rd_kafka_message_t> = Vec::with_capacity(BATCH_CALL_MESSAGES);
    let mut sent = 0u64;
    let mut call = thread;
    loop {
        let want = match limit {
            Limit::Messages(n) => (n - sent).min(BATCH_CALL_MESSAGES as u64) as usize,
            Limit::Until(deadline) if Instant::now() < deadline => BATCH_CALL_MESSAGES,
            Limit::Until(_) => 0,
        };
        if want == 0 {
            return Ok(sent);
        }
        messages.clear();
        messages.extend((0..want as u64).map(|i| {
            let value = payloads.get(sent + i);
            rdsys::rd_kafka_message_t {
                err: RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR,
                rkt: std::ptr::null_mut(),
                partition: 0,
                payload: value.as_ptr() as *mut c_void,
                len: value.len(),
                key: std::ptr::null_mut(),
                key_len: 0,
                offset: 0,
                _private: std::ptr::null_mut(),
            }
        }));
        let partition = (call % partitions.max(1) as usize) as i32;
        call += 1;
        let mut pending = &mut messages[..];
        loop {
            // SAFETY: `pending` points at initialised messages whose payloads (borrowed from
            // `payloads`) are copied by librdkafka (F_COPY) before the call returns.
            let enqueued = unsafe {
                rdsys::rd_kafka_produce_batch(
                    handle.0,
                    partition,
                    rdsys::RD_KAFKA_MSG_F_COPY,
                    pending.as_mut_ptr(),
                    pending.len() as c_int,
                )
            };
            if enqueued as usize == pending.len() {
                break;
            }
            // Keep the refused messages (queue full) and retry them once deliveries freed room.
            let mut kept = 0;
            for i in 0..pending.len() {
                match pending[i].err {
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR => {}
                    RDKafkaRespErr::RD_KAFKA_RESP_ERR__QUEUE_FULL => {
                        pending.swap(kept, i);
                        kept += 1;
                    }
                    other => bail!("produce_batch failed: {}", RDKafkaErrorCode::from(other)),
                }
            }
            pending = &mut pending[..kept];
            producer.poll(Duration::from_millis(1));
        }
        sent += want as u64;
        producer.poll(Duration::ZERO);
    }
}

/// Produces with `opts.producers` threads; `limit` is split evenly between them.
pub fn run_produce(
    common: &Common,
    opts: &ProduceOpts,
    partitions: i32,
    limit: Limit,
) -> Result<ProduceResult> {
    let threads = opts.producers.max(1);
    let payloads = Payloads::new(common.message_bytes);
    let barrier = Barrier::new(threads + 1);
    let (outcomes, elapsed) = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|t| {
                let share = match limit {
                    Limit::Messages(n) => Limit::Messages(
                        n / threads as u64 + u64::from((t as u64) < n % threads as u64),
                    ),
                    until => until,
                };
                let (payloads, barrier) = (&payloads, &barrier);
                scope.spawn(move || {
                    produce_thread(ThreadPlan {
                        common,
                        opts,
                        partitions,
                        thread: t,
                        limit: share,
                        payloads,
                        start: barrier,
                    })
                })
            })
            .collect();
        barrier.wait();
        let started = Instant::now();
        let outcomes: Vec<_> = handles
            .into_iter()
            .map(|h| h.join().expect("producer thread panicked"))
            .collect();
        (outcomes, started.elapsed())
    });
    let mut result = ProduceResult {
        messages: 0,
        bytes: 0,
        errors: 0,
        first_error: None,
        elapsed,
    };
    for outcome in outcomes {
        let (sent, errors, first_error) = outcome?;
        result.messages += sent - errors;
        result.errors += errors;
        result.first_error = result.first_error.or(first_error);
    }
    result.bytes = result.messages * common.message_bytes as u64;
    Ok(result)
}

pub fn run(args: ProduceArgs) -> Result<()> {
    let common = &args.common;
    let partitions = common.ensure_topic()?;
    let limit = match (common.messages, common.duration_secs) {
        (Some(n), _) => Limit::Messages(n),
        (None, Some(s)) => Limit::Until(Instant::now() + Duration::from_secs_f64(s)),
        (None, None) => Limit::Messages(5_000_000),
    };
    println!(
        "produce: topic {} ({partitions} partitions), {} B messages, acks={}, compression={}, linger.ms={}, producers={}, api={}",
        common.topic,
        common.message_bytes,
        common.acks,
        common.compression.as_str(),
        args.opts.linger_ms,
        args.opts.producers,
        args.opts.api.as_str()
    );
    let result = run_produce(common, &args.opts, partitions, limit)?;
    result.print("produce");
    let valid = result.errors == 0;
    if !valid {
        println!("produce: INVALID RUN: {} delivery errors", result.errors);
    }
    println!(
        "{}",
        json!({
            "bench": "produce",
            "topic": common.topic,
            "partitions": partitions,
            "message_bytes": common.message_bytes,
            "acks": common.acks,
            "compression": common.compression.as_str(),
            "linger_ms": args.opts.linger_ms,
            "producers": args.opts.producers,
            "api": args.opts.api.as_str(),
            "messages": result.messages,
            "delivery_errors": result.errors,
            "elapsed_secs": result.elapsed.as_secs_f64(),
            "msgs_per_sec": result.msgs_per_sec().round(),
            "mb_per_sec": (result.mb_per_sec() * 10.0).round() / 10.0,
            "valid": valid,
        })
    );
    if !valid {
        std::process::exit(2);
    }
    Ok(())
}
