//! A Jepsen-style test of partition replication: idempotent acks=all producers write unique
//! values to a replicated topic while a nemesis kills, cuts off and pauses partition leaders,
//! kills the controller, kills two of three brokers at once, when nothing may be
//! acknowledged, drops 10 % of all packets, when no broker may be declared failed, and restarts
//! every broker in turn with SIGTERM, each stop a controlled shutdown (brokers in network
//! namespaces, `common/netns.rs`, needs root). After healing, every
//! partition is read in full and a checker compares the read with what the brokers
//! acknowledged: no acknowledged write lost or moved, nothing duplicated, no offset skipped or
//! out of order. A second run does a shorter nemesis on five brokers, where each partition and
//! the metadata quorum live on a subset and two replicas down starve only some partitions.
//!
//! The checker is a set of plain functions over the recorded history (`checker`), with unit
//! tests on synthetic histories showing that it catches each anomaly, and one live run that
//! plants a loss (DeleteRecords) and a duplicate (a plain producer writing an acknowledged
//! value again) and requires the checker to report exactly those.
//!
//! A soak, not part of the normal suite, runs random faults from the nemesis above for as long
//! as asked, then the checker:
//!
//! ```text
//! SKIFF_SOAK_SECS=600 cargo test -p skiff --test replication_faults soak -- --ignored --nocapture
//! ```
//!
//! It prints its seed first; `SKIFF_SOAK_SEED=<seed>` repeats that sequence of faults, and
//! `SKIFF_SOAK_BROKERS=5` runs it on five brokers. `REPLICATION_FAULTS_LOG_DIR=<dir>` keeps the
//! brokers' logs of any of these runs.

mod common;

/// The history of a run and the checks on it, without any I/O.
mod checker {
    use std::collections::{BTreeMap, HashSet};

    /// A write the broker acknowledged: `value`, the `seq`-th value its `writer` sent, is at
    /// `offset` of `partition`. A negative offset is unknown: librdkafka acknowledges a
    /// possibly persisted batch it did not resend without one, once the broker accepted the
    /// batch after it in sequence.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct Ack {
        pub value: String,
        pub writer: usize,
        pub seq: u64,
        pub partition: i32,
        pub offset: i64,
        /// Milliseconds since the run began, for the report only.
        pub at_ms: u64,
    }

    /// The final read of one partition: every record from `start` up to (excluding) `end`.
    #[derive(Debug, Clone, PartialEq, Eq)]
    pub struct PartitionRead {
        pub partition: i32,
        pub start: i64,
        pub end: i64,
        /// (offset, value), in the order the consumer returned them.
        pub records: Vec<(i64, String)>,
    }

    #[derive(Debug, Clone, Default)]
    pub struct History {
        /// Every value handed to a producer (acknowledged, failed or never answered).
        pub sent: Vec<String>,
        pub acks: Vec<Ack>,
        pub reads: Vec<PartitionRead>,
    }

    #[derive(Debug, Clone, PartialEq, Eq)]
    pub enum Anomaly {
        /// An acknowledged value the final read does not hold at all.
        Lost {
            value: String,
            partition: i32,
            offset: i64,
        },
        /// An acknowledged value the final read holds, but not where it was acknowledged.
        Misplaced {
            value: String,
            acknowledged: (i32, i64),
            found: Vec<(i32, i64)>,
        },
        /// A value the final read holds more than once.
        Duplicated {
            value: String,
            found: Vec<(i32, i64)>,
        },
        /// An offset not above the one read before it.
        NotIncreasing {
            partition: i32,
            previous: i64,
            offset: i64,
        },
        /// Offset `expected` missing: the next one read is `found` (None: the read ended).
        Gap {
            partition: i32,
            expected: i64,
            found: Option<i64>,
        },
        /// A value read that no producer sent.
        Phantom {
            value: String,
            partition: i32,
            offset: i64,
        },
        /// Two acknowledged values of one writer in one partition, the later sent one at the
        /// lower offset (an idempotent producer keeps its order).
        WriterOrder {
            writer: usize,
            partition: i32,
            earlier: (u64, i64),
            later: (u64, i64),
        },
    }

    impl Anomaly {
        /// "lost", "duplicated", "order" or "phantom": the kinds of the report.
        pub fn kind(&self) -> &'static str {
            match self {
                Anomaly::Lost { .. } | Anomaly::Misplaced { .. } => "lost",
                Anomaly::Duplicated { .. } => "duplicated",
                Anomaly::Phantom { .. } => "phantom",
                Anomaly::NotIncreasing { .. }
                | Anomaly::Gap { .. }
                | Anomaly::WriterOrder { .. } => "order",
            }
        }
    }

    /// Offsets within each read: strictly increasing, from `start` to `end - 1` without a gap
    /// (no compaction and no transactions: every offset holds a record).
    fn check_offsets(read: &PartitionRead, anomalies: &mut Vec<Anomaly>) {
        let mut expected = read.start;
        let mut previous: Option<i64> = None;
        for &(offset, _) in &read.records {
            if let Some(previous) = previous.filter(|&previous| offset <= previous) {
                anomalies.push(Anomaly::NotIncreasing {
                    partition: read.partition,
                    previous,
                    offset,
                });
                continue;
            }
            if offset != expected {
                anomalies.push(Anomaly::Gap {
                    partition: read.partition,
                    expected,
                    found: Some(offset),
                });
            }
            expected = offset + 1;
            previous = Some(offset);
        }
        if expected < read.end {
            anomalies.push(Anomaly::Gap {
                partition: read.partition,
                expected,
                found: None,
            });
        }
    }

    /// Every anomaly of the history; empty when it is clean.
    pub fn check(history: &History) -> Vec<Anomaly> {
        let mut anomalies = Vec::new();
        let mut reads: Vec<&PartitionRead> = history.reads.iter().collect();
        reads.sort_by_key(|read| read.partition);

        // Where each value was read, in read order.
        let mut found: BTreeMap<&str, Vec<(i32, i64)>> = BTreeMap::new();
        let mut first_seen: Vec<&str> = Vec::new();
        let sent: HashSet<&str> = history.sent.iter().map(String::as_str).collect();
        for read in &reads {
            check_offsets(read, &mut anomalies);
            for (offset, value) in &read.records {
                let places = found.entry(value.as_str()).or_default();
                if places.is_empty() {
                    first_seen.push(value);
                }
                places.push((read.partition, *offset));
                if !sent.contains(value.as_str()) {
                    anomalies.push(Anomaly::Phantom {
                        value: value.clone(),
                        partition: read.partition,
                        offset: *offset,
                    });
                }
            }
        }
        for value in first_seen {
            let places = &found[value];
            if places.len() > 1 {
                anomalies.push(Anomaly::Duplicated {
                    value: value.to_owned(),
                    found: places.clone(),
                });
            }
        }

        // Each acknowledged value exactly where it was acknowledged (in its partition when
        // the acknowledgement had no offset).
        let read_at = |ack: &Ack| {
            found.get(ack.value.as_str()).and_then(|places| {
                places
                    .iter()
                    .find(|&&(partition, offset)| {
                        partition == ack.partition && (ack.offset < 0 || offset == ack.offset)
                    })
                    .copied()
            })
        };
        for ack in &history.acks {
            let at = (ack.partition, ack.offset);
            match found.get(ack.value.as_str()) {
                None => anomalies.push(Anomaly::Lost {
                    value: ack.value.clone(),
                    partition: ack.partition,
                    offset: ack.offset,
                }),
                Some(places) if read_at(ack).is_none() => anomalies.push(Anomaly::Misplaced {
                    value: ack.value.clone(),
                    acknowledged: at,
                    found: places.clone(),
                }),
                // Also read elsewhere: reported as duplicated above.
                Some(_) => {}
            }
        }

        // Each writer's acknowledged values of a partition in the order it sent them (at the
        // offset read for an acknowledgement without one).
        let mut by_writer: BTreeMap<(usize, i32), Vec<(u64, i64)>> = BTreeMap::new();
        for ack in &history.acks {
            if let Some((_, offset)) = read_at(ack) {
                by_writer
                    .entry((ack.writer, ack.partition))
                    .or_default()
                    .push((ack.seq, offset));
            }
        }
        for ((writer, partition), mut acks) in by_writer {
            acks.sort();
            for pair in acks.windows(2) {
                if pair[1].1 <= pair[0].1 {
                    anomalies.push(Anomaly::WriterOrder {
                        writer,
                        partition,
                        earlier: pair[0],
                        later: pair[1],
                    });
                }
            }
        }
        anomalies
    }

    /// How many anomalies of each kind: (lost, duplicated, order, phantom).
    pub fn counts(anomalies: &[Anomaly]) -> (usize, usize, usize, usize) {
        let count = |kind| anomalies.iter().filter(|a| a.kind() == kind).count();
        (
            count("lost"),
            count("duplicated"),
            count("order"),
            count("phantom"),
        )
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        fn value(writer: usize, seq: u64) -> String {
            format!("w{writer}-{seq}")
        }

        fn ack(writer: usize, seq: u64, partition: i32, offset: i64) -> Ack {
            Ack {
                value: value(writer, seq),
                writer,
                seq,
                partition,
                offset,
                at_ms: 0,
            }
        }

        fn read(partition: i32, end: i64, records: &[(i64, String)]) -> PartitionRead {
            PartitionRead {
                partition,
                start: 0,
                end,
                records: records.to_vec(),
            }
        }

        /// Two writers, two partitions; w1-2 failed (unknown outcome) but was written, w1-3
        /// failed and was not; everything acknowledged is where it was acknowledged.
        fn clean() -> History {
            let sent = (0..4)
                .flat_map(|seq| [value(0, seq), value(1, seq)])
                .collect();
            History {
                sent,
                acks: vec![
                    ack(0, 0, 0, 0),
                    ack(1, 0, 0, 1),
                    ack(0, 1, 1, 0),
                    ack(1, 1, 1, 1),
                    ack(0, 2, 0, 2),
                    ack(0, 3, 1, 3),
                ],
                reads: vec![
                    read(
                        0,
                        3,
                        &[(0, value(0, 0)), (1, value(1, 0)), (2, value(0, 2))],
                    ),
                    read(
                        1,
                        4,
                        &[
                            (0, value(0, 1)),
                            (1, value(1, 1)),
                            (2, value(1, 2)),
                            (3, value(0, 3)),
                        ],
                    ),
                ],
            }
        }

        #[test]
        fn a_clean_history_passes() {
            assert_eq!(check(&clean()), []);
            let empty = History::default();
            assert_eq!(check(&empty), []);
        }

        #[test]
        fn a_lost_write_is_caught() {
            // Partition 0 lost its last record: the read ends before it.
            let mut history = clean();
            history.reads[0].records.pop();
            history.reads[0].end = 2;
            assert_eq!(
                check(&history),
                [Anomaly::Lost {
                    value: value(0, 2),
                    partition: 0,
                    offset: 2
                }]
            );
            // Or another value took its place (an unacknowledged one, written after a
            // truncation).
            let mut history = clean();
            history.reads[0].records[2].1 = value(1, 3);
            let anomalies = check(&history);
            assert_eq!(
                anomalies,
                [Anomaly::Lost {
                    value: value(0, 2),
                    partition: 0,
                    offset: 2
                }]
            );
            assert_eq!(counts(&anomalies), (1, 0, 0, 0));
        }

        #[test]
        fn a_duplicate_is_caught() {
            let mut history = clean();
            history.reads[0].records.push((3, value(1, 0)));
            history.reads[0].end = 4;
            let anomalies = check(&history);
            assert_eq!(
                anomalies,
                [Anomaly::Duplicated {
                    value: value(1, 0),
                    found: vec![(0, 1), (0, 3)]
                }]
            );
            assert_eq!(counts(&anomalies), (0, 1, 0, 0));
            // Also across partitions, and for a value whose outcome was unknown.
            let mut history = clean();
            history.reads[0].records.push((3, value(1, 2)));
            history.reads[0].end = 4;
            assert_eq!(
                check(&history),
                [Anomaly::Duplicated {
                    value: value(1, 2),
                    found: vec![(0, 3), (1, 2)]
                }]
            );
        }

        #[test]
        fn a_value_at_another_offset_than_acknowledged_is_caught() {
            // Two records of partition 1 swapped places.
            let mut history = clean();
            history.reads[1].records.swap(0, 1);
            history.reads[1].records[0].0 = 0;
            history.reads[1].records[1].0 = 1;
            let anomalies = check(&history);
            assert!(anomalies.contains(&Anomaly::Misplaced {
                value: value(0, 1),
                acknowledged: (1, 0),
                found: vec![(1, 1)]
            }));
            assert!(anomalies.contains(&Anomaly::Misplaced {
                value: value(1, 1),
                acknowledged: (1, 1),
                found: vec![(1, 0)]
            }));
            assert_eq!(anomalies.len(), 2, "{anomalies:?}");
            // In another partition.
            let mut history = clean();
            let moved = history.reads[0].records.pop().unwrap();
            history.reads[0].end = 2;
            history.reads[1].records.push((4, moved.1));
            history.reads[1].end = 5;
            assert_eq!(
                check(&history),
                [Anomaly::Misplaced {
                    value: value(0, 2),
                    acknowledged: (0, 2),
                    found: vec![(1, 4)]
                }]
            );
        }

        #[test]
        fn an_acknowledgement_without_an_offset_is_checked_in_its_partition() {
            // librdkafka's -1001: w0-2 acknowledged, offset unknown; it is in partition 0.
            let mut history = clean();
            history.acks[4].offset = -1001;
            assert_eq!(check(&history), []);
            // Not read at all: lost.
            history.reads[0].records.pop();
            history.reads[0].end = 2;
            assert_eq!(
                check(&history),
                [Anomaly::Lost {
                    value: value(0, 2),
                    partition: 0,
                    offset: -1001
                }]
            );
            // Read in the other partition only: misplaced.
            history.reads[1].records.push((4, value(0, 2)));
            history.reads[1].end = 5;
            assert_eq!(
                check(&history),
                [Anomaly::Misplaced {
                    value: value(0, 2),
                    acknowledged: (0, -1001),
                    found: vec![(1, 4)]
                }]
            );
            // Its writer's order is checked at the offset read: w0-0 after it.
            let mut history = clean();
            history.acks[4].offset = -1001;
            history.reads[0].records.swap(0, 2);
            history.reads[0].records[0].0 = 0;
            history.reads[0].records[2].0 = 2;
            history.acks[0].offset = 2;
            assert_eq!(
                check(&history),
                [Anomaly::WriterOrder {
                    writer: 0,
                    partition: 0,
                    earlier: (0, 2),
                    later: (2, 0)
                }]
            );
        }

        #[test]
        fn gaps_and_reordered_offsets_are_caught() {
            // Offset 2 of partition 1 (an unacknowledged value) missing.
            let mut history = clean();
            history.reads[1].records.remove(2);
            assert_eq!(
                check(&history),
                [Anomaly::Gap {
                    partition: 1,
                    expected: 2,
                    found: Some(3)
                }]
            );
            // A read that stops short of the high watermark.
            let mut history = clean();
            history.reads[1].end = 6;
            assert_eq!(
                check(&history),
                [Anomaly::Gap {
                    partition: 1,
                    expected: 4,
                    found: None
                }]
            );
            // Offsets going backwards.
            let mut history = clean();
            history.reads[0].records.swap(1, 2);
            let anomalies = check(&history);
            assert!(anomalies.contains(&Anomaly::NotIncreasing {
                partition: 0,
                previous: 2,
                offset: 1
            }));
            assert_eq!(counts(&anomalies).2, 2, "{anomalies:?}");
        }

        #[test]
        fn a_phantom_value_and_a_reordered_writer_are_caught() {
            let mut history = clean();
            history.reads[0].records.push((3, "never-sent".to_owned()));
            history.reads[0].end = 4;
            assert_eq!(
                check(&history),
                [Anomaly::Phantom {
                    value: "never-sent".to_owned(),
                    partition: 0,
                    offset: 3
                }]
            );
            // Writer 0's values 0 and 2 in partition 0, acknowledged (and read) the other way
            // round.
            let mut history = clean();
            history.acks[0].offset = 2;
            history.acks[4].offset = 0;
            history.reads[0].records[0].1 = value(0, 2);
            history.reads[0].records[2].1 = value(0, 0);
            assert_eq!(
                check(&history),
                [Anomaly::WriterOrder {
                    writer: 0,
                    partition: 0,
                    earlier: (0, 2),
                    later: (2, 0)
                }]
            );
        }
    }
}

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use checker::{Ack, Anomaly, History, PartitionRead};
use common::http_exchange;
use common::netns::Cluster;
use common::wire::create_replicated_topic;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use serde_json::Value;

const TOPIC: &str = "faults";
const PARTITIONS: i32 = 3;
const WRITERS: usize = 3;
/// Each writer sends at most one value per this interval (and waits while this many are
/// outstanding): a steady load a loaded 2-core machine keeps up with.
const SEND_INTERVAL: Duration = Duration::from_millis(25);
const MAX_OUTSTANDING: i32 = 2000;
/// The topic's replication factor and `min.insync.replicas`.
const REPLICATION_FACTOR: i16 = 3;
const MIN_INSYNC_REPLICAS: usize = 2;
/// No single wait may take longer, and the whole run must end within `HARD_LIMIT`: a
/// backstop against a hang, far above a run's usual 150-250 s. A healed broker can take a
/// while to be seen alive by every gossip member again (up to a push-pull round).
const WAIT_LIMIT: Duration = Duration::from_secs(180);
const HARD_LIMIT: Duration = Duration::from_secs(900);

/// A write that got an error: its outcome is unknown (it may or may not be in the log).
#[derive(Debug, Clone)]
struct Failed {
    value: String,
    error: String,
    at_ms: u64,
}

#[derive(Default)]
struct Recorded {
    sent: Vec<String>,
    acks: Vec<Ack>,
    failed: Vec<Failed>,
    fatal: Vec<String>,
}

/// Delivery reports of one writer, into the shared record.
struct Recorder {
    writer: usize,
    start: Instant,
    record: Arc<Mutex<Recorded>>,
}

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        let at_ms = self.start.elapsed().as_millis() as u64;
        let payload = |message: &rdkafka::message::BorrowedMessage<'_>| {
            String::from_utf8_lossy(message.payload().unwrap_or_default()).into_owned()
        };
        let mut record = self.record.lock().unwrap();
        match result {
            Ok(message) => {
                let value = payload(message);
                let seq = value
                    .rsplit_once('-')
                    .and_then(|(_, seq)| seq.parse().ok())
                    .unwrap_or(u64::MAX);
                record.acks.push(Ack {
                    value,
                    writer: self.writer,
                    seq,
                    partition: message.partition(),
                    offset: message.offset(),
                    at_ms,
                });
            }
            Err((error, message)) => record.failed.push(Failed {
                value: payload(message),
                error: error.to_string(),
                at_ms,
            }),
        }
    }
}

/// One writer: an idempotent acks=all producer sending `w<writer>-<seq>` round-robin over the
/// partitions until `stop`, then flushing. A producer that hits a fatal error is replaced.
fn run_writer(
    writer: usize,
    bootstrap: String,
    start: Instant,
    stop: Arc<AtomicBool>,
    record: Arc<Mutex<Recorded>>,
) {
    let mut seq = 0u64;
    loop {
        let producer: BaseProducer<Recorder> = ClientConfig::new()
            .set("bootstrap.servers", &bootstrap)
            .set("acks", "all")
            .set("enable.idempotence", "true")
            // Longer than any fault lasts: librdkafka fails a message that times out, closes
            // the connection it was in flight on, and bumps its epoch before it resends what
            // that connection still carried, so a batch the broker had appended goes out again
            // as a new one, which no broker can tell from new data (seen: 800 duplicates when
            // the 30 s pause ended at the message timeout).
            .set("message.timeout.ms", "120000")
            .set("request.timeout.ms", "10000")
            .create_with_context(Recorder {
                writer,
                start,
                record: record.clone(),
            })
            .expect("a producer");
        loop {
            if stop.load(Ordering::Relaxed) {
                let _ = producer.flush(Duration::from_secs(45));
                return;
            }
            if let Some((code, reason)) = producer.client().fatal_error() {
                record.lock().unwrap().fatal.push(format!(
                    "writer {writer} at {:.1}s: {code:?}: {reason}",
                    start.elapsed().as_secs_f64()
                ));
                // Fails what is outstanding; a new producer (a new producer id) goes on.
                let _ = producer.flush(Duration::from_secs(5));
                break;
            }
            if producer.in_flight_count() < MAX_OUTSTANDING {
                let value = format!("w{writer}-{seq}");
                let partition = ((seq + writer as u64) % PARTITIONS as u64) as i32;
                seq += 1;
                let sent = producer.send(
                    BaseRecord::<(), str>::to(TOPIC)
                        .partition(partition)
                        .payload(&value),
                );
                if sent.is_ok() {
                    record.lock().unwrap().sent.push(value);
                }
            }
            producer.poll(SEND_INTERVAL);
        }
    }
}

/// Sets the flag when dropped, so the writers end also when the test fails.
struct StopOnDrop(Arc<AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// One partition as a broker's `/v1/partitions` shows it.
#[derive(Debug, Clone, PartialEq)]
struct Seen {
    leader: Option<i32>,
    leader_epoch: Option<i64>,
    replicas: Vec<i32>,
    isr: Vec<i32>,
    role: Option<String>,
    high_watermark: Option<i64>,
    log_end: Option<i64>,
}

/// A JSON GET on node `i`'s admin port, with a short timeout (nodes may be paused or cut off).
fn get_json(cluster: &Cluster, i: usize, path: &str) -> Option<Value> {
    let (status, body) = http_exchange(
        cluster.nodes[i].http_addr(),
        "GET",
        path,
        None,
        Duration::from_secs(5),
    )?;
    (status == 200)
        .then(|| serde_json::from_str(&body).ok())
        .flatten()
}

/// The topic's partitions as node `i` sees them, in partition order.
fn seen(cluster: &Cluster, i: usize) -> Option<Vec<Seen>> {
    let list = get_json(cluster, i, &format!("/v1/partitions?topic={TOPIC}"))?;
    let list = list.as_array()?;
    if list.len() != PARTITIONS as usize {
        return None;
    }
    let seen = list
        .iter()
        .map(|p| {
            let ids = |field: &str| -> Vec<i32> {
                let mut ids: Vec<i32> = p[field]
                    .as_array()
                    .map(|ids| {
                        ids.iter()
                            .filter_map(Value::as_i64)
                            .map(|id| id as i32)
                            .collect()
                    })
                    .unwrap_or_default();
                ids.sort();
                ids
            };
            Seen {
                leader: p["leader"].as_i64().map(|id| id as i32),
                leader_epoch: p["leader_epoch"].as_i64(),
                replicas: ids("replicas"),
                isr: ids("isr"),
                role: p["local"]["role"].as_str().map(str::to_owned),
                high_watermark: p["local"]["high_watermark"].as_i64(),
                log_end: p["local"]["log_end_offset"].as_i64(),
            }
        })
        .collect();
    Some(seen)
}

/// The metadata quorum's leader as node `i` sees it (a broker id).
fn controller(cluster: &Cluster, i: usize) -> Option<u64> {
    get_json(cluster, i, "/raft/stats")?["leader"].as_u64()
}

/// The metadata quorum's voters as node `i` sees them (broker ids).
fn voter_ids(cluster: &Cluster, i: usize) -> Vec<u64> {
    get_json(cluster, i, "/raft/stats")
        .and_then(|stats| {
            stats["voters"]
                .as_array()
                .map(|peers| peers.iter().filter_map(|p| p["node_id"].as_u64()).collect())
        })
        .unwrap_or_default()
}

fn voters(cluster: &Cluster, i: usize) -> usize {
    voter_ids(cluster, i).len()
}

/// How many voters a healthy cluster of `nodes` has: the brokers' default
/// `--controller-voters` is 3, the rest follow as observers.
fn expected_voters(nodes: usize) -> usize {
    nodes.min(3)
}

/// Broker id of node index `i`.
fn id(i: usize) -> i32 {
    i as i32 + 1
}

/// Node index of broker id `id`.
fn index(id: i32) -> usize {
    (id - 1) as usize
}

/// Every partition has a leader other than `excluded`, as each of `via` sees it, and they
/// agree on it.
fn led_without(cluster: &Cluster, via: &[usize], excluded: i32) -> bool {
    let mut leaders = None;
    for &i in via {
        let Some(seen) = seen(cluster, i) else {
            return false;
        };
        let these: Vec<Option<i32>> = seen.iter().map(|p| p.leader).collect();
        if these.iter().any(|l| l.is_none() || *l == Some(excluded)) {
            return false;
        }
        if leaders.get_or_insert_with(|| these.clone()) != &these {
            return false;
        }
    }
    true
}

/// Every node's gossip knows every other node in the generation that node has now, alive or
/// suspect: a suspicion that outlives a healed cut is a gossip matter (seen: a member still
/// suspect 180 s after healing), and replication does not act on it.
///
/// Waited for between faults: the controller fences only brokers its own gossip agent has
/// announced, so a controller that restarted (the seed has no `--join`) and has not heard of
/// a broker yet would never fence it if that broker failed next, and a restarted broker's old
/// generation, still probed by the others, is declared failed (and the live broker fenced)
/// a while after the restart.
fn gossip_converged(cluster: &Cluster) -> bool {
    let nodes = cluster.nodes.len();
    let views: Option<Vec<Vec<Value>>> = (0..nodes)
        .map(|i| get_json(cluster, i, "/v1/members")?.as_array().cloned())
        .collect();
    let Some(views) = views else {
        return false;
    };
    let entry = |i: usize, of: usize| {
        let addr = cluster.nodes[of].gossip_addr();
        views[i]
            .iter()
            .find(|m| m["addr"].as_str() == Some(addr.as_str()))
            .cloned()
    };
    (0..nodes).all(|j| {
        let Some(generation) = entry(j, j).and_then(|own| own["generation"].as_u64()) else {
            return false;
        };
        (0..nodes).filter(|&i| i != j).all(|i| {
            entry(i, j).is_some_and(|m| {
                (m["status"] == "alive" || m["status"] == "suspect")
                    && m["generation"].as_u64() == Some(generation)
            })
        })
    })
}

/// Node `of`'s own gossip generation, as it reports it.
fn generation(cluster: &Cluster, of: usize) -> Option<u64> {
    let addr = cluster.nodes[of].gossip_addr();
    get_json(cluster, of, "/v1/members")?
        .as_array()?
        .iter()
        .find(|m| m["addr"].as_str() == Some(addr.as_str()))?["generation"]
        .as_u64()
}

/// Whether every node but `gone` sees `gone`'s `generation` as no longer live (left or
/// failed, or forgotten).
fn seen_gone(cluster: &Cluster, gone: usize, generation: u64) -> bool {
    let addr = cluster.nodes[gone].gossip_addr();
    (0..cluster.nodes.len()).filter(|&i| i != gone).all(|i| {
        get_json(cluster, i, "/v1/members")
            .and_then(|members| members.as_array().cloned())
            .is_some_and(|members| {
                !members.iter().any(|m| {
                    m["addr"].as_str() == Some(addr.as_str())
                        && m["generation"].as_u64() == Some(generation)
                        && ["alive", "suspect", "leaving"]
                            .contains(&m["status"].as_str().unwrap_or(""))
                })
            })
    })
}

/// Every node agrees on a leader for every partition, every ISR holds all the partition's
/// replicas, every replica has settled its role, the metadata quorum has its full count of
/// voters, and the nodes know each other's current generation.
/// None when that holds; else what does not, for the report.
fn out_of_sync(cluster: &Cluster) -> Option<String> {
    let nodes = cluster.nodes.len();
    let mut leaders = None;
    for i in 0..nodes {
        let Some(seen) = seen(cluster, i) else {
            return Some(format!("broker {} does not answer /v1/partitions", id(i)));
        };
        for (index, p) in seen.iter().enumerate() {
            let Some(leader) = p.leader else {
                return Some(format!(
                    "broker {} sees partition {index} without a leader",
                    id(i)
                ));
            };
            // A broker that holds no replica of the partition has no local role at all.
            let role = if leader == id(i) {
                Some("leader")
            } else if p.replicas.contains(&id(i)) {
                Some("follower")
            } else {
                None
            };
            if p.replicas.is_empty() || p.isr != p.replicas || p.role.as_deref() != role {
                return Some(format!("broker {} sees partition {index} as {p:?}", id(i)));
            }
        }
        let these: Vec<Option<i32>> = seen.iter().map(|p| p.leader).collect();
        if leaders.get_or_insert_with(|| these.clone()) != &these {
            return Some(format!("broker {} sees other leaders: {these:?}", id(i)));
        }
        let voting = voters(cluster, i);
        if voting != expected_voters(nodes) {
            return Some(format!("broker {} counts {voting} voters", id(i)));
        }
    }
    (!gossip_converged(cluster)).then(|| {
        let views: Vec<String> = (0..nodes)
            .map(|i| {
                let members = get_json(cluster, i, "/v1/members").unwrap_or_default();
                let members = members.as_array().cloned().unwrap_or_default();
                let summary: Vec<String> = members
                    .iter()
                    .map(|m| format!("{}:{}:{}", m["addr"], m["status"], m["generation"]))
                    .collect();
                format!("broker {} sees {}", id(i), summary.join(" "))
            })
            .collect();
        format!("gossip has not converged: {}", views.join("; "))
    })
}

/// Once every replica of every partition has the same log end and the leaders' high
/// watermarks reached it: those ends.
fn converged(cluster: &Cluster) -> Option<Vec<i64>> {
    let views: Vec<Vec<Seen>> = (0..cluster.nodes.len())
        .map(|i| seen(cluster, i))
        .collect::<Option<_>>()?;
    (0..PARTITIONS as usize)
        .map(|p| {
            let leader = views[0][p].leader?;
            let end = views[index(leader)][p].high_watermark?;
            views[0][p]
                .replicas
                .iter()
                .all(|&replica| views[index(replica)][p].log_end == Some(end))
                .then_some(end)
        })
        .collect()
}

/// The leader of `partition` as node `via` sees it, as a node index.
fn leader_of(cluster: &Cluster, via: usize, partition: usize) -> usize {
    let leader = seen(cluster, via).expect("partitions")[partition]
        .leader
        .expect("a leader");
    (leader - 1) as usize
}

/// The run's clock: waits bounded per wait and by the hard limit, notes with timestamps.
struct Run {
    start: Instant,
    /// The whole run must end within this.
    hard_limit: Duration,
    notes: Vec<String>,
}

impl Run {
    fn at(&self) -> f64 {
        self.start.elapsed().as_secs_f64()
    }

    fn note(&mut self, note: String) {
        self.notes.push(format!("[{:6.1}s] {note}", self.at()));
    }

    /// Polls `done` until it holds; how long that took. Fails the test at the limits.
    fn wait(&self, what: &str, mut done: impl FnMut() -> bool) -> Duration {
        self.wait_for(what, || if done() { None } else { Some(String::new()) })
    }

    /// Polls `blocker` until nothing blocks; how long that took. Fails the test at the limits,
    /// saying what blocked last.
    fn wait_for(&self, what: &str, mut blocker: impl FnMut() -> Option<String>) -> Duration {
        let began = Instant::now();
        let deadline = (began + WAIT_LIMIT).min(self.start + self.hard_limit);
        // Said each time what blocks changes in kind (numbers aside), so slow phases explain
        // themselves.
        let kind = |blocked: &str| blocked.replace(|c: char| c.is_ascii_digit(), "");
        let mut last = String::new();
        while let Some(blocked) = blocker() {
            if !blocked.is_empty() && kind(&blocked) != last {
                eprintln!("[{:6.1}s] waiting for {what}: {blocked}", self.at());
                last = kind(&blocked);
            }
            assert!(
                Instant::now() < deadline,
                "timed out after {:.1}s waiting for {what} (run at {:.1}s): {blocked}\nnotes:\n{}",
                began.elapsed().as_secs_f64(),
                self.at(),
                self.notes.join("\n")
            );
            std::thread::sleep(Duration::from_millis(250));
        }
        began.elapsed()
    }
}

/// Reads every partition from `starts[p]` to `ends[p]` (its high watermark).
fn read_all(bootstrap: &str, starts: &[i64], ends: &[i64]) -> Vec<PartitionRead> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "replication-faults-reader")
        .set("enable.auto.commit", "false")
        // Never skip ahead: an out-of-range read is an error, not a silent jump.
        .set("auto.offset.reset", "error")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..PARTITIONS {
        assignment
            .add_partition_offset(TOPIC, p, Offset::Offset(starts[p as usize]))
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut reads: Vec<PartitionRead> = (0..PARTITIONS)
        .map(|p| PartitionRead {
            partition: p,
            start: starts[p as usize],
            end: ends[p as usize],
            records: Vec::new(),
        })
        .collect();
    let next = |reads: &[PartitionRead], p: usize| {
        reads[p]
            .records
            .last()
            .map_or(reads[p].start, |(offset, _)| offset + 1)
    };
    let mut errors = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    while (0..PARTITIONS as usize).any(|p| next(&reads, p) < ends[p]) && Instant::now() < deadline {
        match consumer.poll(Duration::from_millis(500)) {
            Some(Ok(message)) => {
                let value = String::from_utf8_lossy(message.payload().unwrap_or_default());
                reads[message.partition() as usize]
                    .records
                    .push((message.offset(), value.into_owned()));
            }
            Some(Err(e)) => errors.push(e.to_string()),
            None => {}
        }
    }
    let short: Vec<(i32, i64, i64)> = (0..PARTITIONS as usize)
        .filter(|&p| next(&reads, p) < ends[p])
        .map(|p| (p as i32, next(&reads, p), ends[p]))
        .collect();
    assert!(
        short.is_empty(),
        "the read stopped short (partition, at, end): {short:?}; consumer errors: {errors:?}"
    );
    reads
}

/// What an anomaly looks like in the history: the acknowledgement, the failures of the same
/// value, the records read around it.
fn excerpt(anomaly: &Anomaly, history: &History, failed: &[Failed]) -> String {
    let mut lines = vec![format!("{anomaly:?}")];
    let (value, partition, offset) = match anomaly {
        Anomaly::Lost {
            value,
            partition,
            offset,
        } => (Some(value), *partition, *offset),
        Anomaly::Misplaced {
            value,
            acknowledged,
            ..
        } => (Some(value), acknowledged.0, acknowledged.1),
        Anomaly::Duplicated { value, found } => (Some(value), found[0].0, found[0].1),
        Anomaly::Phantom {
            value,
            partition,
            offset,
        } => (Some(value), *partition, *offset),
        Anomaly::NotIncreasing {
            partition, offset, ..
        } => (None, *partition, *offset),
        Anomaly::Gap {
            partition,
            expected,
            ..
        } => (None, *partition, *expected),
        Anomaly::WriterOrder {
            partition, later, ..
        } => (None, *partition, later.1),
    };
    if let Some(value) = value {
        for ack in history.acks.iter().filter(|a| &a.value == value) {
            lines.push(format!("  acknowledged: {ack:?}"));
        }
        for f in failed.iter().filter(|f| &f.value == value) {
            lines.push(format!("  failed at {} ms: {}", f.at_ms, f.error));
        }
    }
    if let Some(read) = history.reads.iter().find(|r| r.partition == partition) {
        for (o, v) in read
            .records
            .iter()
            .filter(|(o, _)| (offset - 3..=offset + 3).contains(o))
        {
            let acked = history
                .acks
                .iter()
                .find(|a| &a.value == v)
                .map(|a| {
                    format!(
                        "acknowledged at {}:{} ({} ms)",
                        a.partition, a.offset, a.at_ms
                    )
                })
                .unwrap_or_else(|| "not acknowledged".to_owned());
            lines.push(format!("  read {partition}:{o} = {v} ({acked})"));
        }
    }
    lines.join("\n")
}

/// Every partition's leader and ISR, and the asking broker's high watermark and log end.
fn show(seen: Option<Vec<Seen>>) -> String {
    let Some(seen) = seen else {
        return "no answer".to_owned();
    };
    seen.iter()
        .enumerate()
        .map(|(p, s)| {
            let leader = s.leader.map_or("none".to_owned(), |l| l.to_string());
            let hw = s.high_watermark.map_or("?".to_owned(), |o| o.to_string());
            let leo = s.log_end.map_or("?".to_owned(), |o| o.to_string());
            format!("p{p} leader {leader} isr {:?} hw {hw} leo {leo}", s.isr)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

fn acknowledged(record: &Mutex<Recorded>) -> usize {
    record.lock().unwrap().acks.len()
}

/// SIGKILL the leader of `partition`; restart it after the others elected new leaders
/// (`failover`) or at once (it may come back before or after its session expires), then
/// wait until every ISR is full again.
fn kill_and_restart(
    cluster: &mut Cluster,
    run: &mut Run,
    record: &Mutex<Recorded>,
    partition: usize,
    failover: bool,
) {
    let victim = leader_of(cluster, 0, partition);
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != victim).collect();
    run.note(format!(
        "kill -9 broker {} (leads partition {partition}), {} acknowledged so far, controller {:?}",
        id(victim),
        acknowledged(record),
        controller(cluster, 0)
    ));
    cluster.kill9(victim);
    if failover {
        let took = run.wait("new leaders without the killed broker", || {
            led_without(cluster, &others, id(victim))
        });
        run.note(format!(
            "new leaders after {:.1}s: {}",
            took.as_secs_f64(),
            show(seen(cluster, others[0]))
        ));
        std::thread::sleep(Duration::from_secs(3));
    }
    cluster.restart(victim);
    run.note(format!(
        "broker {} restarted: {}",
        id(victim),
        show(seen(cluster, others[0]))
    ));
    let took = run.wait_for("the restarted broker back in every ISR", || {
        out_of_sync(cluster)
    });
    run.note(format!(
        "every ISR full after {:.1}s, {} acknowledged so far",
        took.as_secs_f64(),
        acknowledged(record)
    ));
}

/// Cuts the leader of `partition` off from everyone (the clients too), heals three seconds
/// after the majority elected new leaders, waits until every ISR is full again.
fn isolate_and_heal(cluster: &Cluster, run: &mut Run, record: &Mutex<Recorded>, partition: usize) {
    let cut = leader_of(cluster, 0, partition);
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != cut).collect();
    run.note(format!(
        "isolate broker {} (leads partition {partition}), controller {:?}",
        id(cut),
        controller(cluster, 0)
    ));
    cluster.isolate(cut);
    let took = run.wait("new leaders without the isolated broker", || {
        led_without(cluster, &others, id(cut))
    });
    run.note(format!(
        "new leaders after {:.1}s: {}",
        took.as_secs_f64(),
        show(seen(cluster, others[0]))
    ));
    std::thread::sleep(Duration::from_secs(3));
    cluster.heal();
    run.note("healed".to_owned());
    let took = run.wait_for("the isolated broker back in every ISR", || {
        out_of_sync(cluster)
    });
    run.note(format!(
        "every ISR full after {:.1}s, {} acknowledged so far",
        took.as_secs_f64(),
        acknowledged(record)
    ));
}

/// SIGSTOP the leader of `partition` for `pause`, then wait until every ISR is full again.
fn pause_and_resume(
    cluster: &Cluster,
    run: &mut Run,
    record: &Mutex<Recorded>,
    partition: usize,
    pause: Duration,
) {
    let paused = leader_of(cluster, 0, partition);
    let other = (paused + 1) % cluster.nodes.len();
    run.note(format!(
        "pause broker {} (leads partition {partition}) for {}s, controller {:?}",
        id(paused),
        pause.as_secs(),
        controller(cluster, 0)
    ));
    cluster.pause(paused);
    std::thread::sleep(pause);
    run.note(format!(
        "resume broker {}; before: {}",
        id(paused),
        show(seen(cluster, other))
    ));
    cluster.resume(paused);
    let took = run.wait_for("every ISR full after the pause", || out_of_sync(cluster));
    run.note(format!(
        "every ISR full after {:.1}s, {} acknowledged so far: {}",
        took.as_secs_f64(),
        acknowledged(record),
        show(seen(cluster, 0))
    ));
}

/// SIGKILL the metadata quorum's leader (the controller) while producing: the others elect a
/// new one, which fences the killed broker and moves its leaderships; writes are acknowledged
/// again before it returns. Restarted, it catches up and every ISR is full again.
fn kill_controller(cluster: &mut Cluster, run: &mut Run, record: &Mutex<Recorded>) {
    let victim = controller(cluster, 0).expect("a controller") as usize - 1;
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != victim).collect();
    run.note(format!(
        "kill -9 broker {} (the controller), {} acknowledged so far",
        id(victim),
        acknowledged(record)
    ));
    cluster.kill9(victim);
    let took = run.wait(
        "a new controller and leaders without the killed one",
        || {
            others
                .iter()
                .all(|&i| controller(cluster, i).is_some_and(|c| c != id(victim) as u64))
                && led_without(cluster, &others, id(victim))
        },
    );
    let before = acknowledged(record);
    run.wait("writes acknowledged without the old controller", || {
        acknowledged(record) >= before + 50
    });
    run.note(format!(
        "controller {:?} and new leaders after {:.1}s, writes acknowledged again: {}",
        controller(cluster, others[0]),
        took.as_secs_f64(),
        show(seen(cluster, others[0]))
    ));
    cluster.restart(victim);
    let took = run.wait_for("the old controller back in every ISR", || {
        out_of_sync(cluster)
    });
    run.note(format!(
        "every ISR full after {:.1}s, {} acknowledged so far",
        took.as_secs_f64(),
        acknowledged(record)
    ));
}

/// SIGKILL the two replicas of `partition` that do not lead it, at once, and keep them down
/// for `down`: with min.insync.replicas=2 no acks=all write may be acknowledged, until they
/// return, for any partition left with fewer than two live replicas (on three brokers, every
/// partition, and no metadata quorum either), although its leader may still append. Other
/// partitions (on more brokers) may go on acknowledging, so the check is per partition. Then
/// both restart and every ISR is full again. Acknowledgements in flight when the brokers died
/// may still arrive for a moment, hence `GRACE`; the survivor's high watermarks, where it
/// leads a starved partition, are the check that does not depend on the writers' timing.
fn two_down_and_back(
    cluster: &mut Cluster,
    run: &mut Run,
    record: &Mutex<Recorded>,
    partition: usize,
    down: Duration,
) -> Option<String> {
    const GRACE: Duration = Duration::from_secs(2);
    let before_kill = seen(cluster, 0).expect("partitions");
    let survivor = index(before_kill[partition].leader.expect("a leader"));
    let victims: Vec<usize> = before_kill[partition]
        .replicas
        .iter()
        .map(|&replica| index(replica))
        .filter(|&i| i != survivor)
        .collect();
    assert_eq!(victims.len(), 2, "partition {partition}: {before_kill:?}");
    let starved: Vec<usize> = before_kill
        .iter()
        .enumerate()
        .filter(|(_, p)| {
            let live = p.replicas.iter().filter(|&&r| !victims.contains(&index(r)));
            live.count() < MIN_INSYNC_REPLICAS
        })
        .map(|(p, _)| p)
        .collect();
    let voters = voter_ids(cluster, survivor);
    let quorum_survives = voters
        .iter()
        .filter(|&&v| !victims.contains(&index(v as i32)))
        .count()
        * 2
        > voters.len();
    run.note(format!(
        "kill -9 brokers {} and {}, broker {} (leads partition {partition}) survives, \
         partitions {starved:?} starved, controller {:?}, voters {voters:?}, {} acknowledged so far",
        id(victims[0]),
        id(victims[1]),
        id(survivor),
        controller(cluster, 0),
        acknowledged(record)
    ));
    let killed = Instant::now();
    for &victim in &victims {
        cluster.kill9(victim);
    }
    let from_ms = (run.start.elapsed() + GRACE).as_millis() as u64;
    std::thread::sleep(GRACE);
    // The survivor's high watermarks where it leads a starved partition may not move either.
    let led_by_survivor: Vec<usize> = starved
        .iter()
        .copied()
        .filter(|&p| before_kill[p].leader == Some(id(survivor)))
        .collect();
    if quorum_survives {
        // The controller fences the victims and shrinks those ISRs to the survivor alone, which
        // may raise its high watermark once to its log end (what was appended but not
        // acknowledged, as Kafka does); only from then on may it not move.
        run.wait("the survivor alone in the ISRs of what it leads", || {
            seen(cluster, survivor).is_some_and(|seen| {
                led_by_survivor.iter().all(|&p| {
                    seen[p].isr == [id(survivor)]
                        && seen[p].high_watermark.is_some()
                        && seen[p].high_watermark == seen[p].log_end
                })
            })
        });
    }
    let led_watermarks = |seen: Option<Vec<Seen>>| -> Vec<Option<i64>> {
        let seen = seen.unwrap_or_default();
        led_by_survivor
            .iter()
            .map(|&p| {
                seen.get(p)
                    .filter(|s| s.role.as_deref() == Some("leader"))
                    .and_then(|s| s.high_watermark)
            })
            .collect()
    };
    let watermarks_before = led_watermarks(seen(cluster, survivor));
    // Down for `down` in all, and watched for a while however long the fencing took.
    std::thread::sleep(down.saturating_sub(killed.elapsed()).max(GRACE));
    let watermarks_after = led_watermarks(seen(cluster, survivor));
    let until_ms = run.start.elapsed().as_millis() as u64;
    let (acknowledged_while_down, elsewhere): (Vec<Ack>, Vec<Ack>) = record
        .lock()
        .unwrap()
        .acks
        .iter()
        .filter(|a| (from_ms..until_ms).contains(&a.at_ms))
        .cloned()
        .partition(|a| starved.contains(&(a.partition as usize)));
    run.note(format!(
        "{} writes acknowledged in starved partitions ({} in others) while two brokers were \
         down; survivor sees: {}",
        acknowledged_while_down.len(),
        elsewhere.len(),
        show(seen(cluster, survivor))
    ));
    for &victim in &victims {
        cluster.restart(victim);
    }
    let took = run.wait_for("both brokers back in every ISR", || out_of_sync(cluster));
    run.note(format!(
        "every ISR full after {:.1}s, {} acknowledged so far",
        took.as_secs_f64(),
        acknowledged(record)
    ));
    if watermarks_before.is_empty()
        || watermarks_before.iter().any(Option::is_none)
        || watermarks_before != watermarks_after
    {
        return Some(format!(
            "the survivor's high watermarks where it leads partitions {led_by_survivor:?} moved \
             (or it did not lead them) with two of three replicas down: {watermarks_before:?} \
             then {watermarks_after:?}"
        ));
    }
    (!acknowledged_while_down.is_empty()).then(|| {
        format!(
            "{} acks=all writes acknowledged in partitions {starved:?} with two of three \
             replicas down, the first: {:?}",
            acknowledged_while_down.len(),
            &acknowledged_while_down[..acknowledged_while_down.len().min(5)]
        )
    })
}

/// 10 % of the packets on every link lost for `lossy` while writing: no broker may be declared
/// failed (a leader epoch that moves is a false failover) and writes keep being acknowledged.
/// Then, with the loss still on, the leader of partition 0 is killed: new leaders and
/// acknowledgements must follow as without loss. Healed, the killed broker returns.
fn lossy_network(
    cluster: &mut Cluster,
    run: &mut Run,
    record: &Mutex<Recorded>,
    lossy: Duration,
) -> Option<String> {
    let epochs = |cluster: &Cluster| -> Option<Vec<Option<i64>>> {
        Some(seen(cluster, 0)?.iter().map(|p| p.leader_epoch).collect())
    };
    let before = epochs(cluster);
    let acknowledged_before = acknowledged(record);
    run.note(format!(
        "10% loss on every link for {}s, {acknowledged_before} acknowledged so far: {}",
        lossy.as_secs(),
        show(seen(cluster, 0))
    ));
    cluster.lose(10);
    std::thread::sleep(lossy);
    let mut after = None;
    // The admin port is lossy too: a read may need a few tries.
    run.wait("the leader epochs under loss", || {
        after = epochs(cluster);
        after.is_some()
    });
    let acknowledged_lossy = acknowledged(record) - acknowledged_before;
    run.note(format!(
        "after {}s of loss: {acknowledged_lossy} acknowledged meanwhile: {}",
        lossy.as_secs(),
        show(seen(cluster, 0))
    ));
    let false_failover = (before.is_none() || before != after).then(|| {
        format!("leader epochs moved under 10% loss without a fault: {before:?} then {after:?}")
    });

    let victim = leader_of(cluster, 0, 0);
    let others: Vec<usize> = (0..cluster.nodes.len()).filter(|&i| i != victim).collect();
    run.note(format!(
        "kill -9 broker {} (leads partition 0) under 10% loss",
        id(victim)
    ));
    cluster.kill9(victim);
    let took = run.wait("new leaders under loss", || {
        led_without(cluster, &others, id(victim))
    });
    let at = acknowledged(record);
    let resumed = run.wait("writes acknowledged under loss", || {
        acknowledged(record) >= at + 50
    });
    run.note(format!(
        "new leaders after {:.1}s, 50 more acknowledged {:.1}s later: {}",
        took.as_secs_f64(),
        resumed.as_secs_f64(),
        show(seen(cluster, others[0]))
    ));
    cluster.heal();
    cluster.restart(victim);
    let took = run.wait_for("the killed broker back in every ISR", || {
        out_of_sync(cluster)
    });
    run.note(format!(
        "healed; every ISR full after {:.1}s, {} acknowledged so far",
        took.as_secs_f64(),
        acknowledged(record)
    ));
    false_failover.or_else(|| {
        (acknowledged_lossy == 0).then(|| "nothing was acknowledged during the loss".to_string())
    })
}

/// A rolling restart under load: every broker in turn gets SIGTERM, is restarted, and the next
/// goes only once every ISR is full again. SIGTERM is a controlled shutdown (the broker leaves
/// gossip and stops only once the controller has moved its leaderships), so each stop should
/// cost the writers a leader change, not a timeout: a broker that exits with an error, or whose
/// log says it stopped while still holding leaderships another replica could take, is reported.
fn rolling_restart(
    cluster: &mut Cluster,
    run: &mut Run,
    record: &Mutex<Recorded>,
) -> Option<String> {
    let mut problems = Vec::new();
    for victim in 0..cluster.nodes.len() {
        let via = (victim + 1) % cluster.nodes.len();
        let led: Vec<usize> = seen(cluster, via)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .filter(|(_, p)| p.leader == Some(id(victim)))
            .map(|(partition, _)| partition)
            .collect();
        run.note(format!(
            "SIGTERM broker {} (leads partitions {led:?}), controller {:?}, {} acknowledged so far",
            id(victim),
            controller(cluster, via),
            acknowledged(record)
        ));
        let stopped_generation = generation(cluster, victim).expect("its gossip generation");
        // The log is appended to across restarts: only this stop's lines count.
        let logged_before = cluster.nodes[victim].log().len();
        let stopping = Instant::now();
        let status = cluster.terminate(victim);
        let stopped_in = stopping.elapsed();
        let log = cluster.nodes[victim].log();
        let this_stop = log.get(logged_before..).unwrap_or_default();
        if !status.is_some_and(|s| s.success()) {
            problems.push(format!(
                "broker {} exited with {status:?} on SIGTERM",
                id(victim)
            ));
        }
        if !this_stop.contains("no leadership left that another replica could take") {
            let gave_up = this_stop
                .lines()
                .filter(|line| line.contains("shutting down"))
                .collect::<Vec<_>>()
                .join("\n");
            problems.push(format!(
                "broker {} stopped without a controlled shutdown completing:\n{gave_up}",
                id(victim)
            ));
        }
        run.note(format!(
            "broker {} stopped after {:.1}s: {}",
            id(victim),
            stopped_in.as_secs_f64(),
            show(seen(cluster, via))
        ));
        // Restarted only once every other broker has seen it go: a broker that had seen it
        // leaving, but not gone, when its next generation arrived showed that new generation
        // as "leaving" for good (a gossip bug, seen on five brokers, still so after 180 s),
        // and the cluster never converged again.
        run.wait("every broker seeing the stopped one gone", || {
            seen_gone(cluster, victim, stopped_generation)
        });
        cluster.restart(victim);
        let took = run.wait_for("the restarted broker back in every ISR", || {
            out_of_sync(cluster)
        });
        run.note(format!(
            "every ISR full after {:.1}s, {} acknowledged so far",
            took.as_secs_f64(),
            acknowledged(record)
        ));
    }
    (!problems.is_empty()).then(|| format!("rolling restart: {}", problems.join("; ")))
}

/// A cluster under the writers' load, and what they recorded.
struct Workload {
    /// First, so that the writers stop also when a test fails.
    _stopper: StopOnDrop,
    cluster: Cluster,
    run: Run,
    bootstrap: String,
    record: Arc<Mutex<Recorded>>,
    stop: Arc<AtomicBool>,
    writers: Vec<std::thread::JoinHandle<()>>,
}

impl Workload {
    /// `brokers` brokers in one cluster, the topic (three replicas, min.insync.replicas=2)
    /// in sync, and the writers going for a few seconds.
    fn start(brokers: usize, hard_limit: Duration) -> Self {
        let cluster = Cluster::start_joined(
            brokers,
            &[
                "--default-replication-factor",
                "3",
                "--replica-lag-time-max-ms",
                "5000",
            ],
        );
        let mut run = Run {
            start: Instant::now(),
            hard_limit,
            notes: Vec::new(),
        };
        run.wait("every voter", || {
            voters(&cluster, 0) == expected_voters(brokers)
        });
        assert_eq!(
            create_replicated_topic(
                &cluster.nodes[0].kafka_addr(),
                TOPIC,
                PARTITIONS,
                REPLICATION_FACTOR,
                &[("min.insync.replicas", &MIN_INSYNC_REPLICAS.to_string())]
            ),
            0
        );
        run.wait_for("every replica in sync", || out_of_sync(&cluster));
        run.note(format!(
            "{brokers} brokers, topic ready: {}",
            show(seen(&cluster, 0))
        ));

        let bootstrap = cluster
            .nodes
            .iter()
            .map(|n| n.kafka_addr())
            .collect::<Vec<_>>()
            .join(",");
        let record = Arc::new(Mutex::new(Recorded::default()));
        let stop = Arc::new(AtomicBool::new(false));
        let writers = (0..WRITERS)
            .map(|writer| {
                let (bootstrap, start, stop, record) =
                    (bootstrap.clone(), run.start, stop.clone(), record.clone());
                std::thread::spawn(move || run_writer(writer, bootstrap, start, stop, record))
            })
            .collect();
        run.wait("the first acknowledgements", || acknowledged(&record) > 0);
        std::thread::sleep(Duration::from_secs(5));
        Self {
            _stopper: StopOnDrop(stop.clone()),
            cluster,
            run,
            bootstrap,
            record,
            stop,
            writers,
        }
    }

    /// Everything healed and running, and writes acknowledged again.
    fn calm(&mut self) {
        self.cluster.heal();
        let cluster = &self.cluster;
        self.run
            .wait_for("every ISR full before the end", || out_of_sync(cluster));
        let healed = acknowledged(&self.record);
        self.run
            .wait("writes acknowledged after the last fault", || {
                acknowledged(&self.record) >= healed + 100
            });
    }

    /// Stops the writers once they have flushed; what they recorded.
    fn stop_writers(&mut self) -> Recorded {
        self.stop.store(true, Ordering::Relaxed);
        for writer in self.writers.drain(..) {
            writer.join().unwrap();
        }
        self.run.note(format!(
            "writers stopped, {} acknowledged",
            acknowledged(&self.record)
        ));
        std::mem::take(&mut *self.record.lock().unwrap())
    }

    /// Once every replica has the same log end and the leaders' high watermarks reached it,
    /// every partition read from `starts` to that end: the ends and the reads.
    fn read_back(&self, starts: &[i64]) -> (Vec<i64>, Vec<PartitionRead>) {
        let mut ends = Vec::new();
        self.run.wait(
            "every replica at the same log end and high watermark",
            || converged(&self.cluster).map(|e| ends = e).is_some(),
        );
        let reads = read_all(&self.bootstrap, starts, &ends);
        (ends, reads)
    }

    /// Calm, stop, read everything back and check it; fails the test on any anomaly, any of
    /// the nemesis' `problems`, or a fatal producer error.
    fn finish(mut self, name: &str, problems: Vec<String>) {
        self.calm();
        let recorded = self.stop_writers();
        let (ends, reads) = self.read_back(&[0; PARTITIONS as usize]);
        let history = History {
            sent: recorded.sent.clone(),
            acks: recorded.acks.clone(),
            reads,
        };
        let anomalies = self.report(name, &history, &recorded, &ends);
        if !anomalies.is_empty() {
            let (lost, duplicated, order, phantom) = checker::counts(&anomalies);
            panic!(
                "{} anomalies ({lost} lost, {duplicated} duplicated, {order} order, {phantom} \
                 phantom), the first of each kind are above",
                anomalies.len()
            );
        }
        assert!(problems.is_empty(), "{}", problems.join("\n"));
        assert!(
            recorded.fatal.is_empty(),
            "idempotent producers failed fatally: {:?}",
            recorded.fatal
        );
    }

    /// The checker's anomalies, with the brokers' logs saved where asked and the run's
    /// summary (its notes, counts, and the first anomalies of each kind) printed.
    fn report(
        &self,
        name: &str,
        history: &History,
        recorded: &Recorded,
        ends: &[i64],
    ) -> Vec<Anomaly> {
        let anomalies = checker::check(history);
        // The brokers' logs, kept where asked (the harness removes them with the cluster).
        if let Some(dir) = std::env::var_os("REPLICATION_FAULTS_LOG_DIR") {
            let dir = std::path::PathBuf::from(dir).join(name.replace(' ', "-"));
            std::fs::create_dir_all(&dir).unwrap();
            for (i, node) in self.cluster.nodes.iter().enumerate() {
                std::fs::write(dir.join(format!("broker{}.log", id(i))), node.log()).unwrap();
            }
            eprintln!("broker logs in {}", dir.display());
        }

        let read: usize = history.reads.iter().map(|r| r.records.len()).sum();
        let read_values: std::collections::HashSet<&str> = history
            .reads
            .iter()
            .flat_map(|r| r.records.iter().map(|(_, v)| v.as_str()))
            .collect();
        let unknown_written = recorded
            .failed
            .iter()
            .filter(|f| read_values.contains(f.value.as_str()))
            .count();
        let mut errors: BTreeMap<&str, usize> = BTreeMap::new();
        for f in &recorded.failed {
            *errors.entry(f.error.as_str()).or_default() += 1;
        }
        let (lost, duplicated, order, phantom) = checker::counts(&anomalies);
        eprintln!("--- {name}: summary ---");
        for note in &self.run.notes {
            eprintln!("{note}");
        }
        eprintln!(
            "sent {}, acknowledged {}, unknown outcome {} ({unknown_written} of them in the \
             log), never answered {}",
            history.sent.len(),
            history.acks.len(),
            recorded.failed.len(),
            history
                .sent
                .len()
                .saturating_sub(history.acks.len() + recorded.failed.len())
        );
        let mut times: Vec<u64> = history.acks.iter().map(|a| a.at_ms).collect();
        times.sort_unstable();
        if let Some((from, to)) = times
            .windows(2)
            .map(|pair| (pair[0], pair[1]))
            .max_by_key(|(from, to)| to - from)
        {
            eprintln!(
                "longest stretch without an acknowledgement: {:.1}s, from {:.1}s",
                (to - from) as f64 / 1000.0,
                from as f64 / 1000.0
            );
        }
        eprintln!("errors: {errors:?}");
        eprintln!("fatal producer errors: {:?}", recorded.fatal);
        eprintln!("partition ends {ends:?}, read {read} records");
        eprintln!(
            "anomalies: {lost} lost, {duplicated} duplicated, {order} order, {phantom} phantom; \
             run took {:.1}s",
            self.run.at()
        );
        // The first few of each kind: one kind must not hide another.
        let mut shown: BTreeMap<&str, usize> = BTreeMap::new();
        for anomaly in &anomalies {
            let count = shown.entry(anomaly.kind()).or_default();
            *count += 1;
            if *count <= 8 {
                eprintln!("{}", excerpt(anomaly, history, &recorded.failed));
            }
        }
        anomalies
    }
}

#[test]
fn acknowledged_writes_survive_kills_cuts_and_pauses() {
    let mut workload = Workload::start(3, HARD_LIMIT);
    let Workload {
        cluster,
        run,
        record,
        ..
    } = &mut workload;
    let mut problems = Vec::new();

    // The nemesis, two rounds over different partitions: a leader killed and restarted (once
    // after the failover, once at once), a leader cut off from
    // everyone and healed, a leader paused (once briefly, once long enough to be declared
    // failed while stopped).
    kill_and_restart(cluster, run, record, 0, true);
    isolate_and_heal(cluster, run, record, 1);
    pause_and_resume(cluster, run, record, 2, Duration::from_secs(6));
    kill_and_restart(cluster, run, record, 1, false);
    isolate_and_heal(cluster, run, record, 2);
    pause_and_resume(cluster, run, record, 0, Duration::from_secs(30));
    // Then the metadata quorum: its leader killed under load, and two brokers of three down
    // at once (no quorum, no ISR to acknowledge with).
    kill_controller(cluster, run, record);
    problems.extend(two_down_and_back(
        cluster,
        run,
        record,
        0,
        Duration::from_secs(10),
    ));
    // And a lossy network: no false failover, and a real one still works.
    problems.extend(lossy_network(cluster, run, record, Duration::from_secs(30)));
    // And the way operators upgrade: every broker stopped gracefully and restarted in turn.
    problems.extend(rolling_restart(cluster, run, record));

    workload.finish("replication faults", problems);
}

/// The same writers and checker on five brokers (three replicas per partition, so a partition
/// and the metadata quorum each live on a subset), with a shorter nemesis. Two of a
/// partition's replicas down starves that partition while others may go on.
#[test]
fn acknowledged_writes_survive_faults_on_five_brokers() {
    let mut workload = Workload::start(5, HARD_LIMIT);
    let Workload {
        cluster,
        run,
        record,
        ..
    } = &mut workload;
    let mut problems = Vec::new();

    kill_and_restart(cluster, run, record, 0, true);
    isolate_and_heal(cluster, run, record, 1);
    kill_controller(cluster, run, record);
    problems.extend(two_down_and_back(
        cluster,
        run,
        record,
        2,
        Duration::from_secs(10),
    ));
    problems.extend(rolling_restart(cluster, run, record));

    workload.finish("replication faults on five brokers", problems);
}

/// Removes the records of `partition` below `offset` through the Kafka API (DeleteRecords, on
/// the broker at `addr`, its leader): the error code and the new low watermark.
fn delete_records(addr: &str, partition: i32, offset: i64) -> (i16, i64) {
    use kafka_protocol::messages::delete_records_request::{
        DeleteRecordsPartition, DeleteRecordsTopic,
    };
    use kafka_protocol::messages::{
        ApiKey, DeleteRecordsRequest, DeleteRecordsResponse, TopicName,
    };
    use kafka_protocol::protocol::StrBytes;
    let request = DeleteRecordsRequest::default()
        .with_timeout_ms(15_000)
        .with_topics(vec![DeleteRecordsTopic::default()
            .with_name(TopicName(StrBytes::from_static_str(TOPIC)))
            .with_partitions(vec![DeleteRecordsPartition::default()
                .with_partition_index(partition)
                .with_offset(offset)])]);
    let response: DeleteRecordsResponse =
        common::wire::Client::connect(addr).call(ApiKey::DeleteRecords, 1, &request);
    let result = &response.topics[0].partitions[0];
    (result.error_code, result.low_watermark)
}

/// The checker trusted on a live cluster: a short clean run, then a loss and a duplicate
/// planted through the Kafka API (as a broker bug or a non-idempotent retry would leave them),
/// and the checker must report exactly those, with nothing missed and nothing else.
#[test]
fn the_checker_reports_a_loss_and_a_duplicate_planted_on_a_live_cluster() {
    const LOSSY: usize = 1;
    const DUPLICATED: usize = 0;
    let mut workload = Workload::start(3, HARD_LIMIT);
    let enough = |record: &Mutex<Recorded>| {
        let record = record.lock().unwrap();
        (0..PARTITIONS).all(|p| record.acks.iter().filter(|a| a.partition == p).count() >= 100)
    };
    workload
        .run
        .wait("100 acknowledged in every partition", || {
            enough(&workload.record)
        });
    let mut recorded = workload.stop_writers();
    let (ends, before) = workload.read_back(&[0; PARTITIONS as usize]);
    // Clean before anything is planted, so all the checker finds below is planted.
    let clean = History {
        sent: recorded.sent.clone(),
        acks: recorded.acks.clone(),
        reads: before.clone(),
    };
    assert_eq!(checker::check(&clean), [], "the run before planting");

    // The loss: the first half of one partition deleted. Every acknowledged value there is
    // lost (the read starts at the new log start, so this is no gap).
    let cut = ends[LOSSY] / 2;
    let acknowledged: std::collections::HashSet<&str> =
        recorded.acks.iter().map(|a| a.value.as_str()).collect();
    let lost: Vec<Anomaly> = recorded
        .acks
        .iter()
        .filter(|a| {
            before[LOSSY]
                .records
                .iter()
                .any(|(offset, value)| *offset < cut && value == &a.value)
        })
        .map(|a| Anomaly::Lost {
            value: a.value.clone(),
            partition: a.partition,
            offset: a.offset,
        })
        .collect();
    assert!(!lost.is_empty(), "nothing acknowledged below {cut}");
    let leader = leader_of(&workload.cluster, 0, LOSSY);
    let (error, low_watermark) = delete_records(
        &workload.cluster.nodes[leader].kafka_addr(),
        LOSSY as i32,
        cut,
    );
    assert_eq!(
        (error, low_watermark),
        (0, cut),
        "DeleteRecords up to {cut}"
    );
    workload.run.note(format!(
        "deleted partition {LOSSY} below {cut}: {} acknowledged values",
        lost.len()
    ));

    // The duplicate: an acknowledged value written again by a plain producer, as a retry
    // without idempotence would.
    let (first_at, value) = before[DUPLICATED]
        .records
        .iter()
        .find(|(_, value)| acknowledged.contains(value.as_str()))
        .cloned()
        .expect("an acknowledged value");
    let again = Arc::new(Mutex::new(Recorded::default()));
    let producer: BaseProducer<Recorder> = ClientConfig::new()
        .set("bootstrap.servers", &workload.bootstrap)
        .set("acks", "all")
        .set("enable.idempotence", "false")
        .create_with_context(Recorder {
            writer: WRITERS,
            start: workload.run.start,
            record: again.clone(),
        })
        .expect("a producer");
    producer
        .send(
            BaseRecord::<(), str>::to(TOPIC)
                .partition(DUPLICATED as i32)
                .payload(&value),
        )
        .expect("queued");
    producer.flush(Duration::from_secs(30)).expect("flushed");
    let again = std::mem::take(&mut *again.lock().unwrap());
    assert_eq!(again.acks.len(), 1, "the duplicate: {:?}", again.failed);
    let written_again = (again.acks[0].partition, again.acks[0].offset);
    workload
        .run
        .note(format!("wrote {value} again, at {written_again:?}"));
    let duplicated = Anomaly::Duplicated {
        value: value.clone(),
        found: vec![(DUPLICATED as i32, first_at), written_again],
    };

    // The same final read, from each partition's log start now.
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", &workload.bootstrap)
        .create()
        .unwrap();
    let starts: Vec<i64> = (0..PARTITIONS)
        .map(|p| {
            consumer
                .fetch_watermarks(TOPIC, p, Duration::from_secs(10))
                .expect("watermarks")
                .0
        })
        .collect();
    let (ends, reads) = workload.read_back(&starts);
    let history = History {
        sent: std::mem::take(&mut recorded.sent),
        acks: std::mem::take(&mut recorded.acks),
        reads,
    };
    let anomalies = workload.report("planted anomalies", &history, &recorded, &ends);
    let mut expected = lost;
    expected.push(duplicated);
    let missed: Vec<&Anomaly> = expected.iter().filter(|a| !anomalies.contains(a)).collect();
    let unexpected: Vec<&Anomaly> = anomalies.iter().filter(|a| !expected.contains(a)).collect();
    assert!(
        missed.is_empty() && unexpected.is_empty() && anomalies.len() == expected.len(),
        "the checker missed {} planted anomalies: {missed:?}\nand reported {} others: \
         {unexpected:?}",
        missed.len(),
        unexpected.len()
    );
    assert!(recorded.fatal.is_empty(), "{:?}", recorded.fatal);
}

/// SplitMix64: the soak's fault choices, repeatable from the printed seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `0..n`, closely enough for choosing faults.
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

/// A number from the environment variable `name`, or `default` when it is not set.
fn env_number(name: &str, default: u64) -> u64 {
    std::env::var(name).map_or(default, |value| {
        value
            .parse()
            .unwrap_or_else(|_| panic!("{name}={value:?} is not a number"))
    })
}

/// A soak: random nemesis steps from the faults above for `SKIFF_SOAK_SECS` (default 600) on
/// `SKIFF_SOAK_BROKERS` brokers (default 3), then the checker. The seed is printed first;
/// `SKIFF_SOAK_SEED` repeats a run's sequence of faults (the victims follow the cluster's
/// leaders then, which may differ). Run on demand, see the file's top comment.
#[test]
#[ignore = "a soak of many minutes: SKIFF_SOAK_SECS=600 cargo test -p skiff --test replication_faults soak -- --ignored --nocapture"]
fn soak() {
    let secs = env_number("SKIFF_SOAK_SECS", 600);
    let brokers = env_number("SKIFF_SOAK_BROKERS", 3) as usize;
    assert!(brokers >= 3, "three replicas need three brokers");
    let seed = env_number(
        "SKIFF_SOAK_SEED",
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos() as u64,
    );
    eprintln!(
        "soak: seed {seed} (SKIFF_SOAK_SEED={seed} repeats it), {secs}s on {brokers} brokers"
    );
    let mut rng = Rng(seed);
    // Past the last fault's start, a step and the end of the run need their own time.
    let mut workload = Workload::start(brokers, Duration::from_secs(secs) + HARD_LIMIT);
    let Workload {
        cluster,
        run,
        record,
        ..
    } = &mut workload;
    let mut problems = Vec::new();
    let mut steps = 0;
    while run.at() < secs as f64 {
        steps += 1;
        let partition = rng.below(PARTITIONS as u64) as usize;
        match rng.below(7) {
            0 => kill_and_restart(cluster, run, record, partition, rng.below(2) == 0),
            1 => isolate_and_heal(cluster, run, record, partition),
            2 => {
                let pause = Duration::from_secs(1 + rng.below(30));
                pause_and_resume(cluster, run, record, partition, pause);
            }
            3 => kill_controller(cluster, run, record),
            4 => {
                let down = Duration::from_secs(5 + rng.below(11));
                problems.extend(two_down_and_back(cluster, run, record, partition, down));
            }
            5 => {
                let lossy = Duration::from_secs(10 + rng.below(21));
                problems.extend(lossy_network(cluster, run, record, lossy));
            }
            _ => problems.extend(rolling_restart(cluster, run, record)),
        }
    }
    run.note(format!("{steps} nemesis steps, seed {seed}"));
    workload.finish(&format!("soak, seed {seed}"), problems);
}
