//! Durability: every acknowledged record survives kill -9 with the same offset and content, and a
//! torn tail written by a crash is cut off on restart.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{wait_until, Broker};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientContext, Offset, TopicPartitionList};

const TIMEOUT: Duration = Duration::from_secs(20);

/// (partition, offset) -> payload of every acknowledged record.
type Acked = Arc<Mutex<HashMap<(i32, i64), Vec<u8>>>>;

struct Recorder(Acked);

impl ClientContext for Recorder {}

impl ProducerContext for Recorder {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Ok(message) = result {
            self.0.lock().unwrap().insert(
                (message.partition(), message.offset()),
                message.payload().unwrap().to_vec(),
            );
        }
    }
}

fn read_everything(broker: &Broker, topic: &str, partitions: i32) -> HashMap<(i32, i64), Vec<u8>> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", "unused-assign-only")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut ends = HashMap::new();
    let mut tpl = TopicPartitionList::new();
    for p in 0..partitions {
        // A restarted broker is fenced and registered again with its new run before it leads
        // its partitions (KIP-903); until then they have no leader, which clients retry.
        let mut end = None;
        wait_until("the partition has a leader", TIMEOUT, || {
            end = consumer
                .fetch_watermarks(topic, p, TIMEOUT)
                .ok()
                .map(|w| w.1);
            end.is_some()
        });
        ends.insert(p, end.unwrap());
        tpl.add_partition_offset(topic, p, Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&tpl).unwrap();
    let total: i64 = ends.values().sum();
    let mut seen = HashMap::new();
    let deadline = Instant::now() + TIMEOUT;
    while (seen.len() as i64) < total {
        assert!(Instant::now() < deadline, "read {} of {total}", seen.len());
        if let Some(m) = consumer.poll(Duration::from_millis(100)) {
            let m = m.unwrap();
            seen.insert(
                (m.partition(), m.offset()),
                m.payload().unwrap_or_default().to_vec(),
            );
        }
    }
    seen
}

fn active_segment(broker: &Broker, topic: &str, partition: i32) -> std::path::PathBuf {
    let dir = broker.data_dir().join(format!("data/{topic}-{partition}"));
    let mut logs: Vec<_> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    logs.pop().unwrap()
}

#[test]
fn acknowledged_records_survive_kill_9_during_produce() {
    let mut broker = Broker::start_with(&["--default-partitions", "2"]);
    let acked: Acked = Arc::default();
    let stop = Arc::new(AtomicBool::new(false));
    let producing = {
        let (acked, stop, bootstrap) = (acked.clone(), stop.clone(), broker.bootstrap());
        std::thread::spawn(move || {
            let producer: BaseProducer<Recorder> = ClientConfig::new()
                .set("bootstrap.servers", &bootstrap)
                .set("acks", "all")
                .set("linger.ms", "1")
                .set("message.timeout.ms", "3000")
                .create_with_context(Recorder(acked))
                .unwrap();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let payload = format!("record-{i}");
                let record: BaseRecord<'_, (), str> = BaseRecord::to("durable").payload(&payload);
                if producer.send(record).is_ok() {
                    i += 1;
                }
                producer.poll(Duration::ZERO);
                if i.is_multiple_of(64) {
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            let _ = producer.flush(Duration::from_secs(5));
        })
    };
    let deadline = Instant::now() + TIMEOUT;
    while acked.lock().unwrap().len() < 5000 {
        assert!(
            Instant::now() < deadline,
            "producer made no progress:\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    broker.kill9();
    std::thread::sleep(Duration::from_millis(200));
    stop.store(true, Ordering::Relaxed);
    producing.join().unwrap();
    let acked = acked.lock().unwrap().clone();

    broker.restart();
    let stored = read_everything(&broker, "durable", 2);
    for (key, payload) in &acked {
        assert_eq!(
            stored.get(key),
            Some(payload),
            "acknowledged record at {key:?} lost or changed"
        );
    }

    // A torn write at the tail (a crash in the middle of an append) is cut off on restart, and
    // appends continue right after the last whole batch.
    broker.kill9();
    let segment = active_segment(&broker, "durable", 0);
    let mut file = std::fs::OpenOptions::new()
        .append(true)
        .open(&segment)
        .unwrap();
    file.write_all(&[0, 0, 0, 0, 0, 0, 0, 9, 0, 0, 1, 0, 0xde, 0xad])
        .unwrap();
    drop(file);
    broker.restart();
    let after = read_everything(&broker, "durable", 2);
    assert_eq!(after, stored);
    assert!(
        broker.log().contains("recovered a torn log tail"),
        "{}",
        broker.log()
    );
    let end_before = after.keys().filter(|(p, _)| *p == 0).count() as i64;
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    producer
        .send(
            BaseRecord::<(), str>::to("durable")
                .partition(0)
                .payload("after-crash"),
        )
        .map_err(|(e, _)| e)
        .unwrap();
    producer.flush(TIMEOUT).unwrap();
    let last = read_everything(&broker, "durable", 2);
    assert_eq!(
        last.get(&(0, end_before)).map(Vec::as_slice),
        Some(&b"after-crash"[..])
    );
}

#[test]
fn sigterm_shuts_down_cleanly_and_keeps_everything() {
    let mut broker = Broker::start_with(&["--default-partitions", "1"]);
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for i in 0..100 {
        producer
            .send(BaseRecord::<(), str>::to("graceful").payload(&format!("r{i}")))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    drop(producer);
    let status = broker.terminate();
    assert!(status.success(), "exit status {status}:\n{}", broker.log());
    assert!(broker.log().contains("logs flushed and closed"));
    broker.restart();
    assert!(!broker.log().contains("recovered a torn log tail"));
    let stored = read_everything(&broker, "graceful", 1);
    assert_eq!(stored.len(), 100);
    assert_eq!(stored[&(0, 99)], b"r99");
}
