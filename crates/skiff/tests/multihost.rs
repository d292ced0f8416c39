//! The multi-host harness itself: brokers in their own network namespaces are reachable across
//! the bridge, and cuts, pauses, kills and restarts do what the cluster tests rely on.

mod common;

use std::time::Duration;

use common::netns::Cluster;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};

const TIMEOUT: Duration = Duration::from_secs(20);

fn end_offset(bootstrap: &str, topic: &str) -> Result<i64, String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "unused")
        .create()
        .map_err(|e| e.to_string())?;
    consumer
        .fetch_watermarks(topic, 0, Duration::from_secs(3))
        .map(|(_, high)| high)
        .map_err(|e| e.to_string())
}

#[test]
fn namespaced_brokers_can_be_cut_paused_killed_and_restarted() {
    let mut cluster = Cluster::start(3, &[]);

    // Every node reaches every other one, and the host reaches all of them.
    for a in 0..3 {
        for b in (0..3).filter(|&b| b != a) {
            assert!(cluster.can_connect(a, b), "{a} -> {b}");
        }
    }
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", cluster.nodes[2].kafka_addr())
        .create()
        .unwrap();
    for i in 0..10 {
        producer
            .send(BaseRecord::<(), str>::to("harness").payload(&format!("r{i}")))
            .map_err(|(e, _)| e)
            .unwrap();
    }
    producer.flush(TIMEOUT).unwrap();
    drop(producer);

    // A two-way partition: {0} | {1, 2}.
    cluster.partition(&[0]);
    assert!(!cluster.can_connect(0, 1) && !cluster.can_connect(1, 0));
    assert!(cluster.can_connect(1, 2));
    cluster.heal();
    assert!(cluster.can_connect(0, 1) && cluster.can_connect(1, 0));

    // One way: 1 cannot reach 2, 2 can still reach 1 (TCP needs both ways, so UDP shows it).
    assert!(cluster.udp_reaches(1, 2) && cluster.udp_reaches(2, 1));
    cluster.cut_one_way(1, 2);
    assert!(!cluster.udp_reaches(1, 2));
    assert!(cluster.udp_reaches(2, 1));
    assert!(!cluster.can_connect(1, 2) && !cluster.can_connect(2, 1));
    cluster.heal();

    // Isolation cuts the host off too.
    cluster.isolate(2);
    assert!(end_offset(&cluster.nodes[2].kafka_addr(), "harness").is_err());
    cluster.heal();
    assert_eq!(
        end_offset(&cluster.nodes[2].kafka_addr(), "harness"),
        Ok(10)
    );

    // A paused broker accepts connections (the kernel does) but answers nothing until resumed.
    cluster.pause(2);
    assert!(end_offset(&cluster.nodes[2].kafka_addr(), "harness").is_err());
    cluster.resume(2);
    assert_eq!(
        end_offset(&cluster.nodes[2].kafka_addr(), "harness"),
        Ok(10)
    );

    // kill -9 and a restart on the same data directory and address.
    cluster.kill9(2);
    assert!(!cluster.can_connect(0, 2));
    cluster.restart(2);
    assert_eq!(
        end_offset(&cluster.nodes[2].kafka_addr(), "harness"),
        Ok(10)
    );

    // A bandwidth limit is accepted by the kernel (tbf).
    cluster.limit_bandwidth(1, "1mbit");
}

/// The status node `observer` reports for node `subject` ("alive", "failed", "left", ...).
fn status_seen(cluster: &Cluster, observer: usize, subject: usize) -> Option<String> {
    let body = cluster.http(observer, "GET", "/v1/members", None)?;
    let members: serde_json::Value = serde_json::from_str(&body).ok()?;
    let name = format!("node{subject}");
    members
        .as_array()?
        .iter()
        .find(|m| m["name"] == name.as_str())
        .map(|m| m["status"].as_str().unwrap_or_default().to_string())
}

fn wait_seen(cluster: &Cluster, observers: &[usize], subject: usize, status: &str) {
    let deadline = std::time::Instant::now() + Duration::from_secs(90);
    for &observer in observers {
        while status_seen(cluster, observer, subject).as_deref() != Some(status) {
            assert!(
                std::time::Instant::now() < deadline,
                "node{observer} sees node{subject} as {:?}, not {status}",
                status_seen(cluster, observer, subject)
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

#[test]
fn five_namespaced_brokers_gossip_through_one_seed() {
    let mut cluster = Cluster::start_joined(5, &["--node-name", "node{node}"]);
    let all: Vec<usize> = (0..5).collect();
    for subject in 0..5 {
        wait_seen(&cluster, &all, subject, "alive");
    }
    // A query reaches every live member.
    let answer = cluster
        .http(
            0,
            "POST",
            "/v1/query",
            Some(r#"{"name":"ping","timeout_ms":3000}"#),
        )
        .unwrap();
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["acks"].as_array().unwrap().len(), 5, "{answer}");

    // A partitioned member is failed for the others, and alive again after healing.
    cluster.partition(&[4]);
    wait_seen(&cluster, &[0, 1, 2, 3], 4, "failed");
    cluster.heal();
    wait_seen(&cluster, &[0, 1, 2, 3], 4, "alive");

    // A killed member is failed, a stopped one left.
    cluster.kill9(3);
    wait_seen(&cluster, &[0, 1, 2, 4], 3, "failed");
    cluster.terminate(2);
    wait_seen(&cluster, &[0, 1, 4], 2, "left");
}
