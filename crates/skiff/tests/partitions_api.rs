//! `GET /v1/partitions` on the HTTP admin: every partition's leader, ISR and epochs from the
//! metadata image, and the high watermark and log ends of the replicas the broker asked hosts,
//! with the leader's view of its followers.

mod common;

use std::time::Duration;

use common::wire::create_replicated_topic;
use common::{wait_until, Broker};
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;

fn voters(broker: &Broker) -> Vec<u64> {
    broker
        .raft_stats()
        .map(|s| {
            s["voters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v["node_id"].as_u64().unwrap())
                .collect()
        })
        .unwrap_or_default()
}

/// Brokers 1, 2 and 3, joined through broker 1, once all three vote.
fn start_three() -> [Broker; 3] {
    let seed = Broker::start_with(&["--node-id", "1", "--node-name", "n1"]);
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let joiner = |id: &str| {
        let name = format!("n{id}");
        Broker::start_with(&["--node-id", id, "--node-name", &name, "--join", &join])
    };
    let (b2, b3) = (joiner("2"), joiner("3"));
    wait_until("three voters", Duration::from_secs(30), || {
        voters(&seed) == [1, 2, 3]
    });
    [seed, b2, b3]
}

/// `GET /v1/partitions[?topic=...]` on `broker`, parsed; None unless it answered 200.
fn partitions(broker: &Broker, topic: Option<&str>) -> Option<Vec<Value>> {
    let path = match topic {
        Some(topic) => format!("/v1/partitions?topic={topic}"),
        None => "/v1/partitions".to_owned(),
    };
    let body = broker.http_get(&path)?;
    serde_json::from_str::<Value>(&body)
        .ok()?
        .as_array()
        .cloned()
}

fn ids(value: &Value) -> Vec<i64> {
    let mut ids: Vec<i64> = value
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_i64().unwrap())
        .collect();
    ids.sort();
    ids
}

/// Produces `count` records to each of `(partition, count)` with acks=all; every one must be
/// acknowledged.
fn produce(bootstrap: &str, topic: &str, counts: &[(i32, usize)]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        .create()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        for &(partition, count) in counts {
            for i in 0..count {
                let value = format!("p{partition}-{i}");
                producer
                    .send(
                        FutureRecord::<(), _>::to(topic)
                            .payload(&value)
                            .partition(partition),
                        Duration::from_secs(30),
                    )
                    .await
                    .expect("acknowledged");
            }
        }
    });
}

#[test]
fn partitions_show_leaders_isrs_high_watermarks_and_follower_log_ends() {
    let brokers = start_three();
    let broker = |id: i64| &brokers[(id - 1) as usize];
    assert_eq!(
        create_replicated_topic(&brokers[1].bootstrap(), "watched", 2, 3, &[]),
        0
    );

    // Every broker's image has both partitions, led, with all three replicas in sync, and
    // every broker hosts (and so shows its own view of) both.
    for b in &brokers {
        wait_until("both partitions hosted", Duration::from_secs(20), || {
            partitions(b, Some("watched")).is_some_and(|list| {
                list.len() == 2
                    && list.iter().all(|p| {
                        p["leader"].is_i64()
                            && ids(&p["isr"]) == [1, 2, 3]
                            && p["local"]["role"].is_string()
                    })
            })
        });
    }
    let listed = partitions(&brokers[0], Some("watched")).unwrap();
    assert_eq!(
        listed
            .iter()
            .map(|p| (
                p["topic"].as_str().unwrap(),
                p["partition"].as_i64().unwrap()
            ))
            .collect::<Vec<_>>(),
        [("watched", 0), ("watched", 1)],
        "sorted by topic then partition"
    );
    for p in &listed {
        assert_eq!(ids(&p["replicas"]), [1, 2, 3]);
        assert!(p["topic_id"].is_string() && p["leader_epoch"].is_i64());
        assert!(p["partition_epoch"].is_i64());
    }

    let produced = [(0, 7), (1, 3)];
    produce(&brokers[2].bootstrap(), "watched", &produced);

    // On the leader of partition 0: it leads, its high watermark and log end are what was
    // produced, and both followers have fetched up to it.
    let leader = listed[0]["leader"].as_i64().unwrap();
    let on_leader =
        |partition: usize| partitions(broker(leader), Some("watched")).unwrap()[partition].clone();
    wait_until(
        "followers caught up on partition 0",
        Duration::from_secs(20),
        || {
            let local = &on_leader(0)["local"];
            local["high_watermark"] == 7
                && local["followers"]
                    .as_array()
                    .is_some_and(|f| f.len() == 2 && f.iter().all(|f| f["log_end_offset"] == 7))
        },
    );
    let p0 = on_leader(0);
    assert_eq!(p0["leader"], leader);
    assert_eq!(ids(&p0["isr"]), [1, 2, 3]);
    assert_eq!(p0["local"]["role"], "leader", "{p0}");
    assert_eq!(p0["local"]["high_watermark"], 7);
    assert_eq!(p0["local"]["log_end_offset"], 7);
    let mut followers: Vec<i64> = p0["local"]["followers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["broker"].as_i64().unwrap())
        .collect();
    followers.sort();
    let expected: Vec<i64> = (1..=3).filter(|&b| b != leader).collect();
    assert_eq!(followers, expected);

    // A follower shows its own copy, without follower progress.
    let follower = broker(expected[0]);
    wait_until(
        "a follower's copy of partition 0",
        Duration::from_secs(20),
        || {
            let local = &partitions(follower, Some("watched")).unwrap()[0]["local"];
            local["role"] == "follower"
                && local["log_end_offset"] == 7
                && local["high_watermark"] == 7
        },
    );
    let local = &partitions(follower, Some("watched")).unwrap()[0]["local"];
    assert!(local.get("followers").is_none(), "{local}");

    // Without a filter every topic is listed (the internal ones too); an unknown topic is a 404.
    let all = partitions(&brokers[0], None).unwrap();
    assert!(
        all.iter().filter(|p| p["topic"] == "watched").count() == 2,
        "{all:?}"
    );
    let keys: Vec<(String, i64)> = all
        .iter()
        .map(|p| {
            (
                p["topic"].as_str().unwrap().to_owned(),
                p["partition"].as_i64().unwrap(),
            )
        })
        .collect();
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);
    assert!(partitions(&brokers[0], Some("missing")).is_none());
}
