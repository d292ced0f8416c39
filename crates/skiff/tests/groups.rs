//! Consumer groups with librdkafka: sharing partitions across rebalances without losing or
//! re-reading records, resuming from committed offsets (also after kill -9), incremental
//! cooperative rebalancing and static membership.

mod common;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use common::Broker;
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, Rebalance};
use rdkafka::message::Message;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientContext, Offset};

const TIMEOUT: Duration = Duration::from_secs(60);
const BROKER_FLAGS: &[&str] = &["--group-initial-rebalance-delay-ms", "200"];

async fn create_topic(broker: &Broker, name: &str, partitions: i32) {
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let results = admin
        .create_topics(
            &[NewTopic::new(name, partitions, TopicReplication::Fixed(1))],
            &AdminOptions::new(),
        )
        .await
        .unwrap();
    assert_eq!(results, vec![Ok(name.to_string())]);
}

fn produce(broker: &Broker, topic: &str, from: usize, to: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    for i in from..to {
        let payload = format!("record-{i}");
        let key = format!("k{i}");
        producer
            .send(BaseRecord::to(topic).key(&key).payload(&payload))
            .map_err(|(e, _)| e)
            .unwrap();
        producer.poll(Duration::ZERO);
    }
    producer.flush(TIMEOUT).unwrap();
}

/// Counts rebalance callbacks, to tell whether a member was disturbed.
#[derive(Default, Clone)]
struct Rebalances(Arc<AtomicUsize>);

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn pre_rebalance(&self, _: &BaseConsumer<Self>, rebalance: &Rebalance<'_>) {
        if !matches!(rebalance, Rebalance::Error(_)) {
            self.0.fetch_add(1, Ordering::SeqCst);
        }
    }
}

fn group_consumer(
    broker: &Broker,
    group: &str,
    extra: &[(&str, &str)],
    context: Rebalances,
) -> BaseConsumer<Rebalances> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", broker.bootstrap())
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500");
    for (k, v) in extra {
        config.set(*k, *v);
    }
    config.create_with_context(context).unwrap()
}

/// A consumer thread that counts a record only once its offset commit succeeded, so a record
/// counted twice means the group handed it out again after a successful commit.
struct Member {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<()>,
}

type Counted = Arc<Mutex<HashMap<String, usize>>>;

fn start_member(
    broker: &Broker,
    group: &str,
    topic: &str,
    extra: &[(&str, &str)],
    counted: Counted,
) -> Member {
    let consumer = group_consumer(broker, group, extra, Rebalances::default());
    consumer.subscribe(&[topic]).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let handle = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) else {
                    continue;
                };
                let payload = String::from_utf8(m.payload().unwrap().to_vec()).unwrap();
                if consumer.commit_message(&m, CommitMode::Sync).is_ok() {
                    *counted.lock().unwrap().entry(payload).or_default() += 1;
                } else {
                    // Not committed: read it again (here, or by the partition's next owner).
                    let _ = consumer.seek(
                        m.topic(),
                        m.partition(),
                        Offset::Offset(m.offset()),
                        Duration::from_secs(5),
                    );
                }
            }
            consumer.unsubscribe();
        })
    };
    Member { stop, handle }
}

impl Member {
    fn stop(self) {
        self.stop.store(true, Ordering::SeqCst);
        self.handle.join().unwrap();
    }
}

fn wait_for(counted: &Counted, n: usize, broker: &Broker) {
    let deadline = Instant::now() + TIMEOUT;
    while counted.lock().unwrap().len() < n {
        assert!(
            Instant::now() < deadline,
            "only {} of {n} records consumed:\n{}",
            counted.lock().unwrap().len(),
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

async fn share_across_rebalance(strategy: &str) {
    let broker = Broker::start_with(BROKER_FLAGS);
    let topic = format!("shared-{strategy}");
    let group = format!("sharers-{strategy}");
    create_topic(&broker, &topic, 6).await;
    let counted: Counted = Arc::default();
    let extra = [("partition.assignment.strategy", strategy)];
    let members: Vec<Member> = (0..3)
        .map(|_| start_member(&broker, &group, &topic, &extra, counted.clone()))
        .collect();
    produce(&broker, &topic, 0, 600);
    wait_for(&counted, 600, &broker);

    // One member leaves, a new one joins, and more records arrive during the rebalance.
    let mut members = members;
    members.pop().unwrap().stop();
    members.push(start_member(
        &broker,
        &group,
        &topic,
        &extra,
        counted.clone(),
    ));
    produce(&broker, &topic, 600, 1200);
    wait_for(&counted, 1200, &broker);
    for m in members {
        m.stop();
    }
    let counted = counted.lock().unwrap();
    let twice: Vec<_> = counted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(
        twice.is_empty(),
        "records consumed and committed twice: {twice:?}"
    );
    assert_eq!(counted.len(), 1200);
}

#[tokio::test(flavor = "multi_thread")]
async fn three_members_share_partitions_across_a_rebalance() {
    share_across_rebalance("range").await;
}

#[tokio::test(flavor = "multi_thread")]
async fn cooperative_sticky_rebalances_incrementally() {
    share_across_rebalance("cooperative-sticky").await;
}

/// Reads `n` records with a fresh member of `group`, commits them, and returns the offsets.
fn consume_and_commit(broker: &Broker, group: &str, topic: &str, n: usize) -> Vec<i64> {
    let consumer = group_consumer(broker, group, &[], Rebalances::default());
    consumer.subscribe(&[topic]).unwrap();
    let mut offsets = Vec::new();
    let deadline = Instant::now() + TIMEOUT;
    while offsets.len() < n {
        assert!(Instant::now() < deadline, "read {} of {n}", offsets.len());
        if let Some(Ok(m)) = consumer.poll(Duration::from_millis(100)) {
            consumer.commit_message(&m, CommitMode::Sync).unwrap();
            offsets.push(m.offset());
        }
    }
    consumer.unsubscribe();
    offsets
}

#[tokio::test(flavor = "multi_thread")]
async fn committed_offsets_survive_consumer_and_broker_restarts() {
    let mut broker = Broker::start_with(&[
        "--group-initial-rebalance-delay-ms",
        "200",
        "--log-check-interval-ms",
        "100",
    ]);
    create_topic(&broker, "resume", 1).await;
    produce(&broker, "resume", 0, 100);
    assert_eq!(
        consume_and_commit(&broker, "resumers", "resume", 30),
        (0..30).collect::<Vec<_>>()
    );
    // A new consumer in the group starts where the last one committed.
    assert_eq!(
        consume_and_commit(&broker, "resumers", "resume", 20),
        (30..50).collect::<Vec<_>>()
    );
    broker.kill9();
    broker.restart();
    assert_eq!(
        consume_and_commit(&broker, "resumers", "resume", 10),
        (50..60).collect::<Vec<_>>()
    );
    // Lag = log end - committed offset, exported per group and partition.
    let lag = r#"skiff_consumer_group_lag{group="resumers",topic="resume",partition="0"} 40"#;
    let deadline = Instant::now() + TIMEOUT;
    while !broker
        .http_get("/metrics")
        .unwrap_or_default()
        .contains(lag)
    {
        assert!(
            Instant::now() < deadline,
            "{}",
            broker.http_get("/metrics").unwrap_or_default()
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // A deleted group's lag is no longer exported: the group is empty once its member left
    // (or its session ran out), then it can be deleted.
    let admin: AdminClient<DefaultClientContext> = ClientConfig::new()
        .set("bootstrap.servers", broker.bootstrap())
        .create()
        .unwrap();
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let deleted = admin
            .delete_groups(&["resumers"], &AdminOptions::new())
            .await
            .unwrap();
        if deleted == [Ok("resumers".to_string())] {
            break;
        }
        assert!(Instant::now() < deadline, "{deleted:?}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let metrics = broker.http_get("/metrics").unwrap();
    assert!(metrics.contains("skiff_log_end_offset"), "{metrics}");
    assert!(!metrics.contains("skiff_consumer_group_lag"), "{metrics}");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_static_member_restarting_within_its_session_does_not_rebalance_the_group() {
    let broker = Broker::start_with(BROKER_FLAGS);
    create_topic(&broker, "static", 4).await;
    produce(&broker, "static", 0, 40);
    let steady_events = Rebalances::default();
    let steady = group_consumer(
        &broker,
        "statics",
        &[
            ("group.instance.id", "steady"),
            ("session.timeout.ms", "10000"),
        ],
        steady_events.clone(),
    );
    steady.subscribe(&["static"]).unwrap();
    let start_bouncer = || {
        let bouncer = group_consumer(
            &broker,
            "statics",
            &[
                ("group.instance.id", "bouncer"),
                ("session.timeout.ms", "10000"),
            ],
            Rebalances::default(),
        );
        bouncer.subscribe(&["static"]).unwrap();
        bouncer
    };
    let bouncer = start_bouncer();
    // Both members own partitions once the first generation is formed.
    let deadline = Instant::now() + TIMEOUT;
    while steady.assignment().unwrap().count() == 0
        || bouncer.assignment().unwrap().count() == 0
        || steady.assignment().unwrap().count() == 4
    {
        assert!(
            Instant::now() < deadline,
            "group never settled:\n{}",
            broker.log()
        );
        steady.poll(Duration::from_millis(50));
        bouncer.poll(Duration::from_millis(50));
    }
    let settled = steady_events.0.load(Ordering::SeqCst);
    let owned = steady.assignment().unwrap().count();

    // The bouncer's process restarts: a static member does not leave the group on close.
    drop(bouncer);
    let bouncer = start_bouncer();
    let until = Instant::now() + Duration::from_secs(5);
    while Instant::now() < until {
        steady.poll(Duration::from_millis(50));
        bouncer.poll(Duration::from_millis(50));
    }
    assert!(
        bouncer.assignment().unwrap().count() > 0,
        "the restarted member got its partitions back"
    );
    assert_eq!(
        steady_events.0.load(Ordering::SeqCst),
        settled,
        "the other member saw a rebalance"
    );
    assert_eq!(steady.assignment().unwrap().count(), owned);
}
