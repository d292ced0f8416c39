//! `latency`: produce at a fixed rate while an assign-only consumer in the same process reads;
//! each message value starts with its send time (nanoseconds on the process's monotonic clock), so
//! the consumer measures produce-to-consume latency into an HDR histogram.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Barrier;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Args;
use hdrhistogram::Histogram;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{Offset, TopicPartitionList};
use serde_json::json;

use crate::common::{thousands, BenchContext, Common, Limit, Payloads, ADMIN_TIMEOUT};
use crate::consume::consumer_config;
use crate::produce::producer_config;

#[derive(Debug, Args)]
pub struct LatencyArgs {
    #[command(flatten)]
    pub common: Common,
    /// Messages per second to produce.
    #[arg(long, default_value_t = 10_000)]
    pub rate: u64,
    /// Messages sent during this first part of the run are not measured.
    #[arg(long, default_value_t = 2.0)]
    pub warmup_secs: f64,
    /// Producer linger.ms (0: a batch goes out as soon as the connection is free).
    #[arg(long, default_value_t = 0)]
    pub linger_ms: u64,
    /// Consumer fetch.wait.max.ms (librdkafka's default, 500, when not given).
    #[arg(long)]
    pub fetch_wait_max_ms: Option<u64>,
}

/// Nanoseconds since `base`, the value written at the front of every message.
fn stamp(base: Instant) -> u64 {
    base.elapsed().as_nanos() as u64
}

struct Shared {
    base: Instant,
    /// Messages sent before this stamp are warm-up.
    measure_from_ns: AtomicU64,
    sent: AtomicU64,
    producer_done: AtomicBool,
}

struct ConsumerOutcome {
    histogram: Histogram<u64>,
    received: u64,
}

fn consume_latencies(
    consumer: &BaseConsumer<BenchContext>,
    shared: &Shared,
) -> Result<ConsumerOutcome> {
    let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000_000, 3)?;
    let mut received = 0u64;
    let mut done_since: Option<Instant> = None;
    loop {
        if shared.producer_done.load(Ordering::Acquire) {
            if received >= shared.sent.load(Ordering::Acquire) {
                break;
            }
            let since = *done_since.get_or_insert_with(Instant::now);
            if since.elapsed() > Duration::from_secs(15) {
                bail!(
                    "only {received} of {} messages arrived within 15 s after the last send",
                    shared.sent.load(Ordering::Acquire)
                );
            }
        }
        match consumer.poll(Duration::from_millis(50)) {
            Some(Ok(m)) => {
                let now = stamp(shared.base);
                let Some(sent_ns) = m
                    .payload()
                    .and_then(|p| p.get(..8))
                    .map(|b| u64::from_le_bytes(b.try_into().expect("8 bytes")))
                else {
                    bail!("message at offset {} has no timestamp", m.offset());
                };
                received += 1;
                if sent_ns >= shared.measure_from_ns.load(Ordering::Relaxed) {
                    histogram.saturating_record(now.saturating_sub(sent_ns).max(1));
                }
            }
            Some(Err(e)) => bail!("consumer error: {e}"),
            None => {}
        }
    }
    Ok(ConsumerOutcome {
        histogram,
        received,
    })
}

/// Lets `thread::sleep` wake within microseconds instead of the default 50 µs timer slack, so the
/// send schedule stays even.
fn tighten_timer_slack() {
    // SAFETY: PR_SET_TIMERSLACK takes a plain integer and affects only the calling thread.
    unsafe {
        libc::prctl(libc::PR_SET_TIMERSLACK, 1_000 as libc::c_ulong);
    }
}

pub fn run(args: LatencyArgs) -> Result<()> {
    let common = &args.common;
    if common.message_bytes < 8 {
        bail!("--message-bytes must be at least 8 (the send timestamp)");
    }
    if args.rate == 0 {
        bail!("--rate must be positive");
    }
    let partitions = common.ensure_topic()?;

    let mut config = consumer_config(common);
    config
        .set("fetch.min.bytes", "1")
        .set("socket.nagle.disable", "true");
    if let Some(ms) = args.fetch_wait_max_ms {
        config.set("fetch.wait.max.ms", ms.to_string());
    }
    common.apply_extras(&mut config);
    let consumer: BaseConsumer<BenchContext> = config
        .create_with_context(BenchContext::new(common)?)
        .context("creating the consumer")?;
    // Start at the current end of every partition: only this run's messages are read.
    let mut tpl = TopicPartitionList::new();
    for partition in 0..partitions {
        let (_, high) = consumer
            .fetch_watermarks(&common.topic, partition, ADMIN_TIMEOUT)
            .with_context(|| format!("ListOffsets for partition {partition}"))?;
        tpl.add_partition_offset(&common.topic, partition, Offset::Offset(high))?;
    }
    consumer.assign(&tpl)?;

    let mut config = producer_config(common, args.linger_ms);
    config.set("socket.nagle.disable", "true");
    common.apply_extras(&mut config);
    let producer: BaseProducer<BenchContext> = config
        .create_with_context(BenchContext::new(common)?)
        .context("creating the producer")?;
    producer
        .client()
        .fetch_metadata(Some(&common.topic), ADMIN_TIMEOUT)
        .context("Metadata")?;

    let warmup = Duration::from_secs_f64(args.warmup_secs.max(0.0));
    let measured = common.duration_secs.unwrap_or(20.0);
    println!(
        "latency: topic {} ({partitions} partitions), {} B messages at {} msg/s, acks={}, compression={}, linger.ms={}, fetch.wait.max.ms={}, warm-up {:.1} s, {}",
        common.topic,
        common.message_bytes,
        args.rate,
        common.acks,
        common.compression.as_str(),
        args.linger_ms,
        args.fetch_wait_max_ms.map_or("default".to_string(), |v| v.to_string()),
        warmup.as_secs_f64(),
        match common.messages {
            Some(n) => format!("{n} messages"),
            None => format!("{measured:.0} s measured"),
        }
    );

    let shared = Shared {
        base: Instant::now(),
        measure_from_ns: AtomicU64::new(u64::MAX),
        sent: AtomicU64::new(0),
        producer_done: AtomicBool::new(false),
    };
    let ready = Barrier::new(2);
    let payloads = Payloads::new(common.message_bytes);
    let interval_ns = 1e9 / args.rate as f64;

    let (outcome, send_result) = std::thread::scope(|scope| {
        let consumer_thread = scope.spawn(|| {
            ready.wait();
            consume_latencies(&consumer, &shared)
        });
        ready.wait();
        let send_result = (|| -> Result<(u64, Duration, Duration)> {
            tighten_timer_slack();
            let start = Instant::now();
            shared.measure_from_ns.store(
                stamp(shared.base) + warmup.as_nanos() as u64,
                Ordering::Relaxed,
            );
            let limit = match common.messages {
                Some(n) => Limit::Messages(n),
                None => Limit::Until(start + warmup + Duration::from_secs_f64(measured)),
            };
            let mut value = payloads.get(0).to_vec();
            let mut sent = 0u64;
            let mut measured_start: Option<(Instant, u64)> = None;
            loop {
                let due = start + Duration::from_nanos((sent as f64 * interval_ns) as u64);
                let more = match limit {
                    Limit::Messages(n) => sent < n,
                    Limit::Until(end) => due < end,
                };
                if !more {
                    break;
                }
                let now = Instant::now();
                if due > now {
                    std::thread::sleep(due - now);
                }
                if measured_start.is_none() && due >= start + warmup {
                    measured_start = Some((Instant::now(), sent));
                }
                value.copy_from_slice(payloads.get(sent));
                value[..8].copy_from_slice(&stamp(shared.base).to_le_bytes());
                loop {
                    let record: BaseRecord<'_, (), [u8]> =
                        BaseRecord::to(&common.topic).payload(&value);
                    match producer.send(record) {
                        Ok(()) => break,
                        Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), _)) => {
                            producer.poll(Duration::from_millis(1));
                        }
                        Err((e, _)) => bail!("send failed: {e}"),
                    }
                }
                sent += 1;
                shared.sent.store(sent, Ordering::Release);
                producer.poll(Duration::ZERO);
            }
            let end = Instant::now();
            let (from, sent_before) = measured_start.unwrap_or((start, 0));
            let result = producer.flush(Duration::from_secs(60));
            shared.producer_done.store(true, Ordering::Release);
            result.context("flush did not complete")?;
            Ok((
                sent - sent_before,
                end.duration_since(from),
                end.duration_since(start),
            ))
        })();
        if send_result.is_err() {
            shared.producer_done.store(true, Ordering::Release);
        }
        let outcome = consumer_thread.join().expect("consumer thread panicked");
        (outcome, send_result)
    });
    let (measured_sent, measured_window, total_window) = send_result?;
    let outcome = outcome?;
    let errors = producer.context().delivery_errors();
    let h = &outcome.histogram;
    if h.is_empty() {
        bail!("no message was measured (is the run longer than the warm-up?)");
    }
    let ms = |ns: u64| ns as f64 / 1e6;
    let achieved = measured_sent as f64 / measured_window.as_secs_f64().max(1e-9);
    println!(
        "latency: sent {} messages in {:.1} s ({} measured at {} msg/s), received {}, {errors} delivery errors",
        shared.sent.load(Ordering::Relaxed),
        total_window.as_secs_f64(),
        h.len(),
        thousands(achieved),
        outcome.received,
    );
    println!(
        "latency: end-to-end ms: p50 {:.3}  p90 {:.3}  p99 {:.3}  p99.9 {:.3}  max {:.3}  mean {:.3}",
        ms(h.value_at_quantile(0.5)),
        ms(h.value_at_quantile(0.9)),
        ms(h.value_at_quantile(0.99)),
        ms(h.value_at_quantile(0.999)),
        ms(h.max()),
        h.mean() / 1e6,
    );
    let round3 = |v: f64| (v * 1000.0).round() / 1000.0;
    println!(
        "{}",
        json!({
            "bench": "latency",
            "topic": common.topic,
            "partitions": partitions,
            "message_bytes": common.message_bytes,
            "acks": common.acks,
            "compression": common.compression.as_str(),
            "linger_ms": args.linger_ms,
            "fetch_wait_max_ms": args.fetch_wait_max_ms,
            "rate_target": args.rate,
            "rate_achieved": achieved.round(),
            "warmup_secs": warmup.as_secs_f64(),
            "measured": h.len(),
            "received": outcome.received,
            "delivery_errors": errors,
            "p50_ms": round3(ms(h.value_at_quantile(0.5))),
            "p90_ms": round3(ms(h.value_at_quantile(0.9))),
            "p99_ms": round3(ms(h.value_at_quantile(0.99))),
            "p999_ms": round3(ms(h.value_at_quantile(0.999))),
            "max_ms": round3(ms(h.max())),
            "mean_ms": round3(h.mean() / 1e6),
            "valid": errors == 0,
        })
    );
    if errors > 0 {
        std::process::exit(2);
    }
    Ok(())
}
