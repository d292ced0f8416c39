//! Several `skiff serve` processes on loopback forming one cluster: one metadata image seen
//! alike by every broker, partitions led by different brokers, writes forwarded to the
//! controller from anywhere, controller failover, restarts, snapshots, and the refusals that
//! keep a cluster from splitting.

mod common;

use std::time::{Duration, Instant};

use common::wire::{create_replicated_topic, create_topic, Client};
use common::{percentile, wait_until, Broker};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::{ClientConfig, Message, TopicPartitionList};

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

fn start_seed(extra: &[&str]) -> Broker {
    let mut args = vec!["--node-id", "1", "--node-name", "n1"];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

fn start_joiner(seed: &Broker, id: &str, extra: &[&str]) -> Broker {
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let name = format!("n{id}");
    let mut args = vec!["--node-id", id, "--node-name", &name, "--join", &join];
    args.extend_from_slice(extra);
    Broker::start_with(&args)
}

/// Brokers 1, 2 and 3, joined through broker 1, once all three vote.
fn start_three() -> [Broker; 3] {
    start_three_with(&[])
}

/// `start_three`, each broker with the `extra` flags.
fn start_three_with(extra: &[&str]) -> [Broker; 3] {
    let seed = start_seed(extra);
    let b2 = start_joiner(&seed, "2", extra);
    let b3 = start_joiner(&seed, "3", extra);
    wait_until("three voters", Duration::from_secs(30), || {
        voters(&seed) == [1, 2, 3]
    });
    [seed, b2, b3]
}

/// The broker's answer to Metadata for `topic`: controller id, live broker ids and the
/// (partition, leader) pairs.
fn metadata(addr: &str, topic: &str) -> (i32, Vec<i32>, Vec<(i32, i32)>) {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let response: MetadataResponse = Client::connect(addr).call(ApiKey::Metadata, 12, &request);
    let mut brokers: Vec<i32> = response.brokers.iter().map(|b| b.node_id.0).collect();
    brokers.sort();
    let mut leaders: Vec<(i32, i32)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| (p.partition_index, p.leader_id.0))
        .collect();
    leaders.sort();
    (response.controller_id.0, brokers, leaders)
}

fn produce(bootstrap: &str, topic: &str, partitions: i32, count: usize) {
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        // Retries across a leader change must not duplicate: tests compare exact contents.
        .set("enable.idempotence", "true")
        .create()
        .unwrap();
    for i in 0..count {
        let value = format!("record-{i}");
        let key = i.to_string();
        producer
            .send(
                BaseRecord::to(topic)
                    .key(&key)
                    .payload(&value)
                    .partition(i as i32 % partitions),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
}

fn consume_all(bootstrap: &str, topic: &str, partitions: i32, expected: usize) -> Vec<String> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", "cluster-test")
        .set("enable.auto.commit", "false")
        .create()
        .unwrap();
    let mut assignment = TopicPartitionList::new();
    for p in 0..partitions {
        assignment
            .add_partition_offset(topic, p, rdkafka::Offset::Beginning)
            .unwrap();
    }
    consumer.assign(&assignment).unwrap();
    let mut values = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while values.len() < expected && Instant::now() < deadline {
        if let Some(Ok(message)) = consumer.poll(Duration::from_millis(200)) {
            values.push(String::from_utf8(message.payload().unwrap().to_vec()).unwrap());
        }
    }
    values.sort();
    values
}

fn expected_values(count: usize) -> Vec<String> {
    let mut values: Vec<String> = (0..count).map(|i| format!("record-{i}")).collect();
    values.sort();
    values
}

#[test]
fn three_brokers_share_one_image_and_survive_losing_the_controller() {
    let [mut seed, b2, b3] = start_three();

    // A topic created through one broker is placed on all three, and every broker answers
    // Metadata with the same assignment and controller.
    assert_eq!(create_topic(&b2.bootstrap(), "spread", 6), 0);
    let seen = metadata(&seed.bootstrap(), "spread");
    assert_eq!(seen.0, 1, "the bootstrapping broker is the controller");
    assert_eq!(seen.1, [1, 2, 3]);
    for leader in [1, 2, 3] {
        let led = seen.2.iter().filter(|(_, l)| *l == leader).count();
        assert_eq!(led, 2, "leaders are spread evenly: {:?}", seen.2);
    }
    // Each broker applies the topic's entry on its own time.
    for broker in [&b2, &b3] {
        wait_until(
            "the same image on every broker",
            Duration::from_secs(10),
            || metadata(&broker.bootstrap(), "spread") == seen,
        );
    }

    // librdkafka produces to and consumes from partitions led by different brokers.
    produce(&b3.bootstrap(), "spread", 6, 60);
    assert_eq!(
        consume_all(&seed.bootstrap(), "spread", 6, 60),
        expected_values(60)
    );

    // Killing the controller elects another; admin calls through any broker keep working.
    seed.kill9();
    wait_until("a new controller", Duration::from_secs(20), || {
        b2.raft_stats()
            .is_some_and(|s| matches!(s["leader"].as_u64(), Some(2) | Some(3)))
    });
    assert_eq!(create_topic(&b3.bootstrap(), "after-failover", 2), 0);
    // b3 answered once its own image had the topic; b2 applies the same entry on its own time.
    wait_until("b2 sees the new topic", Duration::from_secs(10), || {
        metadata(&b2.bootstrap(), "after-failover").2.len() == 2
    });

    // Gossip declares the killed broker failed and the controller fences it: its partitions
    // go offline (their only replica is gone) instead of pointing clients at a dead broker.
    wait_until("broker 1 fenced", Duration::from_secs(40), || {
        let (_, brokers, leaders) = metadata(&b2.bootstrap(), "spread");
        brokers == [2, 3] && leaders.iter().filter(|(_, l)| *l == -1).count() == 2
    });
    assert_eq!(create_topic(&b2.bootstrap(), "placed-on-live", 4), 0);
    let placed = metadata(&b3.bootstrap(), "placed-on-live");
    assert!(
        placed.2.iter().all(|(_, l)| *l == 2 || *l == 3),
        "{placed:?}"
    );

    // The killed broker restarts on the same data dir, rejoins without new flags, catches up
    // and serves its partitions again, with every record intact.
    seed.restart();
    wait_until("broker 1 back", Duration::from_secs(40), || {
        let (_, brokers, leaders) = metadata(&b2.bootstrap(), "spread");
        brokers == [1, 2, 3] && leaders.iter().all(|(_, l)| *l > 0)
    });
    wait_until(
        "broker 1 sees the topic made while it was down",
        Duration::from_secs(20),
        || metadata(&seed.bootstrap(), "after-failover").2.len() == 2,
    );
    assert_eq!(
        consume_all(&b2.bootstrap(), "spread", 6, 60),
        expected_values(60)
    );

    // The leader epochs of its partitions moved on (offline, then led again). OffsetForLeaderEpoch
    // answers where each epoch that wrote ended, as consumers check their position (KIP-320).
    let p = seen.2.iter().find(|(_, l)| *l == 1).unwrap().0;
    let epoch = leader_epoch(&seed.bootstrap(), "spread", p);
    assert!(epoch >= 2, "offline and elected again: epoch {epoch}");
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", seed.bootstrap())
        .create()
        .unwrap();
    for i in 0..5 {
        let value = format!("later-{i}");
        producer
            .send(
                BaseRecord::<(), _>::to("spread")
                    .payload(&value)
                    .partition(p),
            )
            .unwrap();
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let end = |epoch| epoch_end(&seed.bootstrap(), "spread", p, epoch);
    assert_eq!(end(0), (0, 10));
    assert_eq!(end(1), (0, 10), "the offline epoch wrote nothing");
    assert_eq!(end(epoch), (epoch, 15));
    assert_eq!(end(epoch + 1), (-1, -1));
    // ListOffsets names the epoch that wrote the offset it finds.
    let earliest = list_offset(&seed.bootstrap(), "spread", p, -2);
    let latest = list_offset(&seed.bootstrap(), "spread", p, -1);
    assert_eq!((earliest, latest), ((0, 0), (15, epoch)));
}

/// The leader's ListOffsets answer for one partition: (offset, leader epoch).
fn list_offset(addr: &str, topic: &str, partition: i32, timestamp: i64) -> (i64, i32) {
    use list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
    let request = ListOffsetsRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_topics(vec![ListOffsetsTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![ListOffsetsPartition::default()
                .with_partition_index(partition)
                .with_timestamp(timestamp)])]);
    let response: ListOffsetsResponse =
        Client::connect(addr).call(ApiKey::ListOffsets, 7, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    (answer.offset, answer.leader_epoch)
}

/// The leader epoch of one partition, from Metadata.
fn leader_epoch(addr: &str, topic: &str, partition: i32) -> i32 {
    let request = MetadataRequest::default()
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let response: MetadataResponse = Client::connect(addr).call(ApiKey::Metadata, 12, &request);
    response.topics[0]
        .partitions
        .iter()
        .find(|p| p.partition_index == partition)
        .unwrap()
        .leader_epoch
}

/// The leader's OffsetForLeaderEpoch answer: (epoch, end offset).
fn epoch_end(addr: &str, topic: &str, partition: i32, epoch: i32) -> (i32, i64) {
    use offset_for_leader_epoch_request::{OffsetForLeaderPartition, OffsetForLeaderTopic};
    let request =
        OffsetForLeaderEpochRequest::default().with_topics(vec![OffsetForLeaderTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![OffsetForLeaderPartition::default()
                .with_partition(partition)
                .with_current_leader_epoch(-1)
                .with_leader_epoch(epoch)])]);
    let response: OffsetForLeaderEpochResponse =
        Client::connect(addr).call(ApiKey::OffsetForLeaderEpoch, 4, &request);
    let answer = &response.topics[0].partitions[0];
    assert_eq!(answer.error_code, 0);
    (answer.leader_epoch, answer.end_offset)
}

#[test]
fn a_new_broker_catches_up_from_a_snapshot() {
    let seed = start_seed(&["--raft-snapshot-entries", "10"]);
    for i in 0..25 {
        assert_eq!(create_topic(&seed.bootstrap(), &format!("t{i}"), 1), 0);
    }
    wait_until("a snapshot", Duration::from_secs(20), || {
        seed.raft_stats()
            .is_some_and(|s| s["snapshot_index"].as_u64().is_some())
    });
    let late = start_joiner(&seed, "2", &[]);
    wait_until(
        "the late broker to catch up",
        Duration::from_secs(30),
        || {
            let (Some(leader), Some(follower)) = (seed.raft_stats(), late.raft_stats()) else {
                return false;
            };
            follower["applied_index"] == leader["commit_index"]
                && follower["snapshot_index"].as_u64().is_some()
        },
    );
    for i in 0..25 {
        let (_, _, leaders) = metadata(&late.bootstrap(), &format!("t{i}"));
        assert_eq!(leaders, [(0, 1)], "topic t{i} on the late broker");
    }
}

#[test]
fn membership_changes_by_hand_and_refusals() {
    let mut seed = start_seed(&[]);
    let b2 = start_joiner(&seed, "2", &[]);
    wait_until("two members", Duration::from_secs(30), || {
        seed.raft_stats().is_some_and(|s| {
            s["voters"].as_array().unwrap().len() + s["observers"].as_array().unwrap().len() == 2
        })
    });

    // Remove a node and join it again by hand. The driver may still be committing node 2's
    // arrival, and a change while another is in progress is refused as unavailable (503): the
    // operator tries again.
    wait_until("node 2 removed", Duration::from_secs(20), || {
        seed.http_post("/raft/remove", r#"{"node_id": 2}"#)
            .is_some()
    });
    let join = format!(
        r#"{{"node_id": 2, "raft_address": "127.0.0.1:{}"}}"#,
        b2.raft_port
    );
    assert!(b2.http_post("/raft/join", &join).is_some(), "{}", b2.log());
    wait_until("node 2 back", Duration::from_secs(20), || {
        seed.raft_stats().is_some_and(|s| {
            s.to_string()
                .contains(&format!("127.0.0.1:{}", b2.raft_port))
        })
    });

    // Clear refusals: the last voter, a malformed request, an address already in use.
    assert!(seed
        .http_post("/raft/remove", r#"{"node_id": 1}"#)
        .is_none());
    assert!(seed
        .http_post("/raft/join", r#"{"node_id": "x"}"#)
        .is_none());
    assert!(seed.http_post("/raft/join", "not json").is_none());
    let taken = format!(
        r#"{{"node_id": 7, "raft_address": "127.0.0.1:{}"}}"#,
        seed.raft_port
    );
    assert!(seed.http_post("/raft/join", &taken).is_none());
    assert_eq!(voters(&seed)[0], 1, "the cluster still has its controller");

    // A second broker claiming id 1 is ignored, not registered, and the controller keeps going.
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let _impostor =
        Broker::start_with(&["--node-id", "1", "--node-name", "impostor", "--join", &join]);
    wait_until(
        "the conflict to be reported",
        Duration::from_secs(20),
        || seed.log().contains("ignoring conflicting members"),
    );
    let (controller, brokers, _) = metadata(&seed.bootstrap(), "__none__");
    assert_eq!((controller, brokers), (1, vec![1, 2]));

    // A data dir that already belongs to a cluster cannot bootstrap another one, and a broker
    // joining a cluster must bring its own id.
    seed.terminate();
    let refused = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["serve", "--bootstrap", "--gossip-addr", "127.0.0.1:0"])
        .args(["--kafka-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--raft-addr", "127.0.0.1:0", "--data-dir"])
        .arg(seed.data_dir().join("data"))
        .output()
        .unwrap();
    assert!(!refused.status.success());
    assert!(
        String::from_utf8_lossy(&refused.stderr).contains("already belongs to a cluster"),
        "{}",
        String::from_utf8_lossy(&refused.stderr)
    );
    let anonymous = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args([
            "serve",
            "--join",
            "127.0.0.1:1",
            "--gossip-addr",
            "127.0.0.1:0",
        ])
        .args(["--kafka-addr", "127.0.0.1:0", "--http-addr", "127.0.0.1:0"])
        .args(["--raft-addr", "127.0.0.1:0", "--data-dir"])
        .arg(seed.data_dir().join("fresh"))
        .output()
        .unwrap();
    assert!(!anonymous.status.success());
    assert!(String::from_utf8_lossy(&anonymous.stderr).contains("--node-id"));
}

/// Figures for docs/benchmarks.md, not a correctness check: run in release with
/// `cargo test --release -p skiff --test cluster -- --ignored --nocapture cluster_figures`.
#[test]
#[ignore]
fn cluster_figures() {
    let [mut seed, b2, b3] = start_three();
    for (via, label) in [
        (&seed, "on the controller"),
        (&b3, "forwarded by a follower"),
    ] {
        let mut create = Vec::new();
        let mut propagation = Vec::new();
        for i in 0..200 {
            let name = format!("figure-{}-{i}", via.raft_port);
            let started = Instant::now();
            assert_eq!(create_topic(&via.bootstrap(), &name, 1), 0);
            create.push(started.elapsed());
            for other in [&seed, &b2, &b3] {
                while metadata(&other.bootstrap(), &name).2.is_empty() {}
            }
            propagation.push(started.elapsed());
        }
        create.sort();
        propagation.sort();
        eprintln!(
            "topic create {label}: p50 {:?} p99 {:?}; visible on all 3 brokers: p50 {:?} p99 {:?}",
            percentile(&create, 0.5),
            percentile(&create, 0.99),
            percentile(&propagation, 0.5),
            percentile(&propagation, 0.99)
        );
    }
    let killed = Instant::now();
    seed.kill9();
    while !b2
        .raft_stats()
        .is_some_and(|s| matches!(s["leader"].as_u64(), Some(2) | Some(3)))
    {
        std::thread::sleep(Duration::from_millis(5));
    }
    let elected = killed.elapsed();
    while create_topic(&b3.bootstrap(), "after-kill", 1) != 0 {}
    eprintln!(
        "controller SIGKILLed: new controller after {elected:?}, first topic created after {:?}",
        killed.elapsed()
    );
}

#[test]
fn a_broker_of_another_cluster_is_not_taken_in() {
    let mut stranger = Broker::start_with(&["--node-id", "5", "--node-name", "stranger"]);
    stranger.terminate();
    let seed = start_seed(&[]);
    // The stranger restarts on its data dir, which belongs to its own cluster, and gossips
    // with this one.
    let join = format!("--join=127.0.0.1:{}", seed.gossip_port);
    stranger.set_extra_args(&["--node-id", "5", "--node-name", "stranger", &join]);
    stranger.restart();
    wait_until(
        "the stranger to be noticed",
        Duration::from_secs(20),
        || seed.log().contains("belongs to another cluster"),
    );
    std::thread::sleep(Duration::from_secs(1));
    let (_, brokers, _) = metadata(&seed.bootstrap(), "__none__");
    assert_eq!(brokers, [1]);
    assert_eq!(voters(&seed), [1]);
    let theirs = stranger.raft_stats().unwrap();
    assert_ne!(
        theirs["cluster_id"],
        seed.raft_stats().unwrap()["cluster_id"]
    );
    assert_eq!(theirs["voters"].as_array().unwrap().len(), 1);
}

/// Whose `__consumer_offsets` partition holds `group`: its coordinator's node id, asked of the
/// broker at `addr`.
fn coordinator_of(addr: &str, group: &str) -> i32 {
    let found = find_coordinator(addr, group);
    found.unwrap_or_else(|code| panic!("FindCoordinator failed with error {code}"))
}

/// The coordinator's node id, or FindCoordinator's error code (a failover can leave the group's
/// partition without a leader for a moment).
fn find_coordinator(addr: &str, group: &str) -> Result<i32, i16> {
    let request = FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
    let response: FindCoordinatorResponse =
        Client::connect(addr).call(ApiKey::FindCoordinator, 2, &request);
    match response.error_code {
        0 => Ok(response.node_id.0),
        code => Err(code),
    }
}

/// A standalone (simple) commit of `offset` for every partition, sent to the broker at `addr`;
/// the error code of each partition.
fn commit_everywhere(
    addr: &str,
    group: &str,
    topic: &str,
    partitions: i32,
    offset: i64,
) -> Vec<i16> {
    use offset_commit_request::{OffsetCommitRequestPartition, OffsetCommitRequestTopic};
    let request = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(
                (0..partitions)
                    .map(|p| {
                        OffsetCommitRequestPartition::default()
                            .with_partition_index(p)
                            .with_committed_offset(offset)
                    })
                    .collect(),
            )]);
    let response: OffsetCommitResponse =
        Client::connect(addr).call(ApiKey::OffsetCommit, 8, &request);
    response.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect()
}

fn group_member(bootstrap: &str, group: &str, topic: &str) -> BaseConsumer {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", "6000")
        .set("heartbeat.interval.ms", "500")
        .create()
        .unwrap();
    consumer.subscribe(&[topic]).unwrap();
    consumer
}

/// The committed offset of every partition of `topic` in `group`, as librdkafka reads it
/// (OffsetFetch from the coordinator); -1 where nothing is committed.
fn committed(bootstrap: &str, group: &str, topic: &str, partitions: i32) -> Vec<i64> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("group.id", group)
        .create()
        .unwrap();
    let mut wanted = TopicPartitionList::new();
    for p in 0..partitions {
        wanted.add_partition(topic, p);
    }
    // librdkafka hands NOT_COORDINATOR to the application when the coordinator moved between
    // its FindCoordinator and its OffsetFetch (a leadership change); applications ask again.
    let deadline = Instant::now() + Duration::from_secs(30);
    let found = loop {
        match consumer.committed_offsets(wanted.clone(), Duration::from_secs(30)) {
            Err(rdkafka::error::KafkaError::MetadataFetch(
                rdkafka::types::RDKafkaErrorCode::NotCoordinator
                | rdkafka::types::RDKafkaErrorCode::CoordinatorLoadInProgress,
            )) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(100)),
            found => break found.unwrap(),
        }
    };
    (0..partitions)
        .map(|p| match found.find_partition(topic, p).unwrap().offset() {
            rdkafka::Offset::Offset(o) => o,
            _ => -1,
        })
        .collect()
}

/// The bug users met first: a group coordinator refused commits for partitions led by other
/// brokers. Two members bootstrapped through different brokers share a topic whose leaders are
/// spread over all three and commit every partition; the coordinator's broker is killed (-9)
/// and restarted, and a new member resumes exactly at the commits. A broker that does not
/// coordinate the group says so, and deleting the topic forgets its offsets on whichever broker
/// coordinates the group.
#[test]
fn consumer_groups_commit_offsets_for_partitions_led_by_any_broker() {
    let mut brokers = start_three();
    let all = brokers
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    let (topic, group, partitions) = ("shared", "spread-group", 6);
    assert_eq!(create_topic(&brokers[1].bootstrap(), topic, partitions), 0);
    let leaders: std::collections::BTreeSet<i32> = metadata(&brokers[0].bootstrap(), topic)
        .2
        .iter()
        .map(|(_, l)| *l)
        .collect();
    assert_eq!(
        leaders,
        [1, 2, 3].into(),
        "leaders are spread over the brokers"
    );
    produce(&all, topic, partitions, 600);

    // Both members poll until together they are at the end of every partition.
    let members = [
        group_member(&brokers[0].bootstrap(), group, topic),
        group_member(&brokers[2].bootstrap(), group, topic),
    ];
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        for member in &members {
            if let Some(Err(e)) = member.poll(Duration::from_millis(100)) {
                eprintln!("member error: {e}");
            }
        }
        let mut at_end = std::collections::BTreeSet::new();
        for member in &members {
            for element in member.position().unwrap().elements() {
                if element.offset() == rdkafka::Offset::Offset(100) {
                    at_end.insert(element.partition());
                }
            }
        }
        let assigned: usize = members
            .iter()
            .map(|m| m.assignment().unwrap().count())
            .sum();
        if at_end.len() == partitions as usize && assigned == partitions as usize {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "members reached the end of {at_end:?}"
        );
    }
    for member in &members {
        assert!(
            !member.assignment().unwrap().elements().is_empty(),
            "both members own partitions"
        );
        member
            .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
            .unwrap();
    }
    for broker in &brokers {
        assert_eq!(
            committed(&broker.bootstrap(), group, topic, partitions),
            [100; 6],
            "committed offsets read through broker at {}",
            broker.bootstrap()
        );
    }
    drop(members);

    // The fault: the coordinator's broker is killed and restarts at once on its data dir. Its
    // new run is fenced first (KIP-903), so the group moves to its partition's new leader,
    // which has every committed offset.
    let coordinator = coordinator_of(&brokers[0].bootstrap(), group);
    let killed = &mut brokers[coordinator as usize - 1];
    killed.kill9();
    killed.restart();
    wait_until("every partition led again", Duration::from_secs(40), || {
        metadata(&brokers[0].bootstrap(), topic)
            .2
            .iter()
            .all(|(_, leader)| *leader > 0)
    });
    assert_eq!(committed(&all, group, topic, partitions), [100; 6]);
    // Back in sync and preferred leader again, the restarted broker replays its
    // __consumer_offsets partition and answers every committed offset too.
    wait_until(
        "the restarted broker in sync",
        Duration::from_secs(60),
        || {
            placement(&brokers[0].bootstrap(), "__consumer_offsets")
                .iter()
                .all(|(_, _, isr)| isr.contains(&coordinator))
        },
    );
    elect_preferred(&brokers[0].bootstrap(), "__consumer_offsets", None);
    assert_eq!(coordinator_of(&brokers[1].bootstrap(), group), coordinator);
    assert_eq!(committed(&all, group, topic, partitions), [100; 6]);

    // A new member of the group resumes at the committed offsets: only new records come.
    produce(&all, topic, partitions, 60);
    let resumed = group_member(&brokers[1].bootstrap(), group, topic);
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    while seen.len() < 60 && Instant::now() < deadline {
        if let Some(Ok(message)) = resumed.poll(Duration::from_millis(200)) {
            seen.push((message.partition(), message.offset()));
        }
    }
    assert_eq!(seen.len(), 60, "{seen:?}");
    assert!(seen.iter().all(|(_, offset)| *offset >= 100), "{seen:?}");
    drop(resumed);

    // Group requests reach only the coordinator; the others send the client to look again.
    let coordinator = coordinator_of(&brokers[0].bootstrap(), "standalone");
    for broker in &brokers {
        assert_eq!(
            coordinator_of(&broker.bootstrap(), "standalone"),
            coordinator
        );
    }
    let other = brokers
        .iter()
        .zip(1..)
        .find(|(_, id)| *id != coordinator)
        .map(|(b, _)| b.bootstrap())
        .unwrap();
    let not_coordinator = 16;
    assert_eq!(
        commit_everywhere(&other, "standalone", topic, partitions, 5),
        [not_coordinator; 6]
    );
    let on_coordinator = brokers[coordinator as usize - 1].bootstrap();
    assert_eq!(
        commit_everywhere(&on_coordinator, "standalone", topic, partitions, 5),
        [0; 6]
    );
    assert_eq!(
        commit_everywhere(&on_coordinator, "standalone", "no-such-topic", 1, 5),
        [3],
        "UNKNOWN_TOPIC_OR_PARTITION for a partition the cluster does not have"
    );

    // OffsetDelete, also only on the coordinator, and only for partitions the cluster has.
    let delete_offsets = |addr: &str, partitions: &[i32]| -> OffsetDeleteResponse {
        use offset_delete_request::{OffsetDeleteRequestPartition, OffsetDeleteRequestTopic};
        let request = OffsetDeleteRequest::default()
            .with_group_id(GroupId(StrBytes::from_string("standalone".into())))
            .with_topics(vec![OffsetDeleteRequestTopic::default()
                .with_name(TopicName(StrBytes::from_string(topic.into())))
                .with_partitions(
                    partitions
                        .iter()
                        .map(|&p| OffsetDeleteRequestPartition::default().with_partition_index(p))
                        .collect(),
                )]);
        Client::connect(addr).call(ApiKey::OffsetDelete, 0, &request)
    };
    assert_eq!(delete_offsets(&other, &[0]).error_code, not_coordinator);
    let deleted = delete_offsets(&on_coordinator, &[0, 99, 1]);
    assert_eq!(deleted.error_code, 0);
    let codes: Vec<i16> = deleted.topics[0]
        .partitions
        .iter()
        .map(|p| p.error_code)
        .collect();
    assert_eq!(codes, [0, 3, 0]);
    assert_eq!(
        committed(&all, "standalone", topic, partitions),
        [-1, -1, 5, 5, 5, 5]
    );

    // Deleted through a broker that does not coordinate "standalone", then created again:
    // every group starts from nothing.
    let request = DeleteTopicsRequest::default()
        .with_timeout_ms(15_000)
        .with_topic_names(vec![TopicName(StrBytes::from_string(topic.into()))]);
    let deleted: DeleteTopicsResponse =
        Client::connect(&other).call(ApiKey::DeleteTopics, 4, &request);
    assert_eq!(deleted.responses[0].error_code, 0);
    assert_eq!(create_topic(&other, topic, partitions), 0);
    wait_until(
        "every broker sees the new topic",
        Duration::from_secs(20),
        || {
            brokers
                .iter()
                .all(|b| metadata(&b.bootstrap(), topic).2.len() == partitions as usize)
        },
    );
    assert_eq!(committed(&all, group, topic, partitions), [-1; 6]);
    assert_eq!(committed(&all, "standalone", topic, partitions), [-1; 6]);
}

/// The value of an unlabelled metric on `broker`'s `/metrics`; 0 when absent.
fn metric(broker: &Broker, name: &str) -> f64 {
    let text = broker.http_get("/metrics").unwrap_or_default();
    text.lines()
        .find_map(|line| line.strip_prefix(name)?.strip_prefix(' ')?.parse().ok())
        .unwrap_or(0.0)
}

/// Each partition's (leader, ISR) from the broker at `addr`.
fn leaders_and_isrs(addr: &str, topic: &str) -> Vec<(i32, Vec<i32>)> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let response: MetadataResponse = Client::connect(addr).call(ApiKey::Metadata, 12, &request);
    let mut partitions: Vec<_> = response.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            isr.sort();
            (p.partition_index, p.leader_id.0, isr)
        })
        .collect();
    partitions.sort();
    partitions
        .into_iter()
        .map(|(_, leader, isr)| (leader, isr))
        .collect()
}

/// Produces `values` with acks=all through `bootstrap`; the values the brokers acknowledged.
fn produce_acknowledged(bootstrap: &str, topic: &str, values: Vec<String>) -> Vec<String> {
    produce_acknowledged_within(bootstrap, topic, values, "60000")
}

fn produce_acknowledged_within(
    bootstrap: &str,
    topic: &str,
    values: Vec<String>,
    message_timeout_ms: &str,
) -> Vec<String> {
    use rdkafka::producer::{FutureProducer, FutureRecord};
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", bootstrap)
        .set("acks", "all")
        // Retries after a leader change must not duplicate: the tests compare exact sets.
        .set("enable.idempotence", "true")
        .set("message.timeout.ms", message_timeout_ms)
        .create()
        .unwrap();
    let runtime = tokio::runtime::Runtime::new().unwrap();
    runtime.block_on(async {
        let sends = values.iter().map(|value| {
            let producer = &producer;
            async move {
                producer
                    .send(
                        FutureRecord::<(), _>::to(topic).payload(value),
                        Duration::from_secs(60),
                    )
                    .await
                    .ok()
                    .map(|_| value.clone())
            }
        });
        futures_util::future::join_all(sends)
            .await
            .into_iter()
            .flatten()
            .collect()
    })
}

#[test]
fn replicated_partitions_keep_every_acknowledged_record_through_leader_kills() {
    let [b1, b2, b3] = start_three();
    let mut brokers = [b1, b2, b3];
    assert_eq!(
        create_replicated_topic(&brokers[1].bootstrap(), "replicated", 3, 3, &[]),
        0
    );
    // A factor above the live brokers is refused, as Kafka does.
    assert_eq!(
        create_replicated_topic(&brokers[1].bootstrap(), "too-many", 1, 4, &[]),
        38,
        "INVALID_REPLICATION_FACTOR"
    );
    // A topic that wants every replica in sync for acks=all.
    assert_eq!(
        create_replicated_topic(
            &brokers[1].bootstrap(),
            "strict",
            1,
            3,
            &[("min.insync.replicas", "3")]
        ),
        0
    );
    let placed = leaders_and_isrs(&brokers[0].bootstrap(), "replicated");
    assert!(
        placed.iter().all(|(_, isr)| isr == &[1, 2, 3]),
        "every replica starts in sync: {placed:?}"
    );

    let first: Vec<String> = (0..300).map(|i| format!("first-{i}")).collect();
    let acknowledged = produce_acknowledged(&brokers[2].bootstrap(), "replicated", first);
    assert_eq!(acknowledged.len(), 300, "every record acknowledged");

    // SIGKILL the leader of partition 0: gossip finds it failed, the controller fences it and
    // elects an in-sync follower, which has every acknowledged record.
    let victim = placed[0].0;
    brokers[(victim - 1) as usize].kill9();
    // Broker n is brokers[n - 1]: the next one lives.
    let survivor = brokers[(victim % 3) as usize].bootstrap();
    wait_until(
        "a new leader for partition 0",
        Duration::from_secs(60),
        || {
            leaders_and_isrs(&survivor, "replicated")
                .iter()
                .all(|(leader, isr)| *leader > 0 && *leader != victim && !isr.contains(&victim))
        },
    );
    let mut expected = acknowledged.clone();
    expected.sort();
    assert_eq!(consume_all(&survivor, "replicated", 3, 300), expected);
    // The survivors report the partitions they lead without a full ISR.
    let live: Vec<&Broker> = brokers
        .iter()
        .filter(|b| b.http_get("/health").is_some())
        .collect();
    wait_until(
        "under-replicated partitions reported",
        Duration::from_secs(10),
        || {
            live.iter()
                .map(|b| metric(b, "skiff_under_replicated_partitions"))
                .sum::<f64>()
                >= 3.0
        },
    );

    // The strict topic lost a replica from its ISR: acks=all is refused
    // (NOT_ENOUGH_REPLICAS), nothing is acknowledged.
    wait_until(
        "the strict topic's ISR shrank",
        Duration::from_secs(30),
        || leaders_and_isrs(&survivor, "strict")[0].1.len() == 2,
    );
    let refused =
        produce_acknowledged_within(&survivor, "strict", vec!["refused".to_string()], "3000");
    assert!(refused.is_empty(), "acknowledged with too few replicas");

    // Writes go on with two replicas in sync.
    let second: Vec<String> = (0..100).map(|i| format!("second-{i}")).collect();
    let acknowledged = produce_acknowledged(&survivor, "replicated", second);
    assert_eq!(acknowledged.len(), 100);
    expected.extend(acknowledged);
    expected.sort();

    // The killed broker restarts, catches up from the leaders and rejoins every ISR.
    brokers[(victim - 1) as usize].restart();
    wait_until(
        "the restarted broker back in sync",
        Duration::from_secs(60),
        || {
            leaders_and_isrs(&survivor, "replicated")
                .iter()
                .all(|(_, isr)| isr == &[1, 2, 3])
        },
    );

    wait_until(
        "no under-replicated partition left",
        Duration::from_secs(10),
        || {
            brokers
                .iter()
                .all(|b| metric(b, "skiff_under_replicated_partitions") == 0.0)
        },
    );
    assert!(
        brokers
            .iter()
            .map(|b| metric(b, "skiff_isr_expands_total"))
            .sum::<f64>()
            >= 1.0,
        "the leaders took the returning replica back through AlterPartition"
    );
    assert!(brokers
        .iter()
        .all(|b| metric(b, "skiff_offline_partitions") == 0.0));

    // The metadata quorum must survive the next kill too: all three vote again.
    wait_until("three voters again", Duration::from_secs(60), || {
        voters(&brokers[(victim % 3) as usize]) == [1, 2, 3]
    });

    // Now kill another leader: the returned broker, once in sync, may be elected and must
    // hold everything.
    let now_placed = leaders_and_isrs(&survivor, "replicated");
    let second_victim = now_placed[1].0;
    brokers[(second_victim - 1) as usize].kill9();
    let survivor = brokers[(second_victim % 3) as usize].bootstrap();
    wait_until(
        "new leaders after the second kill",
        Duration::from_secs(60),
        || {
            leaders_and_isrs(&survivor, "replicated")
                .iter()
                .all(|(leader, _)| *leader > 0 && *leader != second_victim)
        },
    );
    assert_eq!(consume_all(&survivor, "replicated", 3, 400), expected);
}

/// SIGTERMs broker `id` while a producer writes with acks=all, and checks the controlled
/// shutdown: the broker exits only once the controller moved its leaderships, survivors lead
/// every partition without it, and nothing acknowledged is lost. Returns what was acknowledged.
fn stop_a_leader_under_load(brokers: &mut [Broker; 3], id: i32, topic: &str) -> Vec<String> {
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    /// Ends the writer however the stop goes, so a failing test fails instead of hanging.
    struct SetOnDrop<'a>(&'a AtomicBool);
    impl Drop for SetOnDrop<'_> {
        fn drop(&mut self) {
            self.0.store(true, Ordering::Relaxed);
        }
    }
    let survivor = brokers[(id % 3) as usize].bootstrap();
    let stopping = AtomicBool::new(false);
    let rounds_acknowledged = AtomicUsize::new(0);
    let (acknowledged, sent) = std::thread::scope(|scope| {
        let writer = scope.spawn(|| {
            let (mut acknowledged, mut sent) = (Vec::new(), 0);
            for round in 0.. {
                let done = stopping.load(Ordering::Relaxed);
                let values: Vec<String> = (0..20).map(|i| format!("{id}-{round}-{i}")).collect();
                sent += values.len();
                acknowledged.extend(produce_acknowledged(&survivor, topic, values));
                rounds_acknowledged.fetch_add(1, Ordering::Relaxed);
                if done {
                    break;
                }
            }
            (acknowledged, sent)
        });
        let stop_writer = SetOnDrop(&stopping);
        wait_until("writes under way", Duration::from_secs(30), || {
            rounds_acknowledged.load(Ordering::Relaxed) > 0
        });
        let status = brokers[(id - 1) as usize].terminate();
        assert!(status.success(), "broker {id} exited with {status}");
        drop(stop_writer);
        writer.join().unwrap()
    });
    // The broker says how many leaderships it waited for, and that they moved before it went.
    let log = brokers[(id - 1) as usize].log();
    let waited_for = log
        .lines()
        .filter(|line| line.contains("waiting for the controller to move these leaderships"))
        .find_map(|line| {
            line.split("leaderships=")
                .nth(1)?
                .split_whitespace()
                .next()?
                .parse::<usize>()
                .ok()
        });
    assert!(
        waited_for.is_some_and(|n| n >= 1),
        "broker {id} led a partition with a full ISR, so it had leaderships to hand over:\n{log}"
    );
    assert!(
        log.contains("no leadership left that another replica could take"),
        "broker {id} stopped before its leaderships moved:\n{log}"
    );
    assert_eq!(acknowledged.len(), sent, "every write acknowledged");
    wait_until(
        "survivors lead every partition",
        Duration::from_secs(30),
        || {
            leaders_and_isrs(&survivor, topic)
                .iter()
                .all(|(leader, isr)| *leader > 0 && *leader != id && !isr.contains(&id))
        },
    );
    acknowledged
}

#[test]
fn a_rolling_restart_moves_leaderships_before_each_broker_stops() {
    let mut brokers = start_three();
    assert_eq!(
        create_replicated_topic(&brokers[0].bootstrap(), "rolling", 3, 3, &[]),
        0
    );
    let mut expected = Vec::new();
    for round in 0..2 {
        wait_until("every replica in sync", Duration::from_secs(60), || {
            leaders_and_isrs(&brokers[0].bootstrap(), "rolling")
                .iter()
                .all(|(leader, isr)| *leader > 0 && isr == &[1, 2, 3])
        });
        let placed = leaders_and_isrs(&brokers[0].bootstrap(), "rolling");
        // The seed first: it has no --join to come back through.
        let leader = if round == 0 { 1 } else { placed[0].0 };
        assert!(
            placed.iter().any(|(l, _)| *l == leader),
            "broker {leader} leads a partition: {placed:?}"
        );
        expected.extend(stop_a_leader_under_load(&mut brokers, leader, "rolling"));
        let survivor = brokers[(leader % 3) as usize].bootstrap();
        expected.sort();
        assert_eq!(
            consume_all(&survivor, "rolling", 3, expected.len()),
            expected
        );
        // A broker that left was removed from the quorum. Restarted with its own command line
        // (the seed's has no --join), it rejoins the members its gossip snapshot saw alive,
        // instead of waiting for their next reconnect attempt; the next round's wait for a
        // full ISR needs it back.
        let restarted = &mut brokers[(leader - 1) as usize];
        restarted.restart();
        assert!(
            restarted
                .log()
                .contains("rejoining the members alive when this broker stopped peers=2"),
            "broker {leader} did not rejoin from its snapshot:\n{}",
            restarted.log()
        );
    }
}

/// Polls `member` until it has seen `count` records; their (partition, offset) pairs.
fn poll_records(member: &BaseConsumer, count: usize, timeout: Duration) -> Vec<(i32, i64)> {
    let mut seen = Vec::new();
    let deadline = Instant::now() + timeout;
    while seen.len() < count && Instant::now() < deadline {
        if let Some(Ok(message)) = member.poll(Duration::from_millis(100)) {
            seen.push((message.partition(), message.offset()));
        }
    }
    seen
}

/// Coordinator failover: with `__consumer_offsets` replicated, killing the coordinator's broker
/// (not restarted) moves the group to the partition's new leader, which has every commit the
/// client was told succeeded; a live member rides through it and commits on the new
/// coordinator, and a new member resumes exactly there.
#[test]
fn a_group_moves_to_a_new_coordinator_with_its_commits_when_the_old_one_is_killed() {
    let mut brokers = start_three();
    let (topic, group, partitions) = ("moving", "moving-group", 3);
    assert_eq!(
        create_replicated_topic(&brokers[0].bootstrap(), topic, partitions, 3, &[]),
        0
    );
    let all = brokers
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    produce(&all, topic, partitions, 300);
    let member = group_member(&all, group, topic);
    assert_eq!(
        poll_records(&member, 300, Duration::from_secs(60)).len(),
        300
    );
    member
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();

    let coordinator = coordinator_of(&brokers[0].bootstrap(), group);
    brokers[coordinator as usize - 1].kill9();
    let killed_at = Instant::now();
    let survivors = all_but(&brokers, coordinator);
    let first_survivor = survivors.split(',').next().unwrap().to_string();
    wait_until("a new coordinator", Duration::from_secs(60), || {
        find_coordinator(&first_survivor, group).is_ok_and(|now| now > 0 && now != coordinator)
    });
    assert_eq!(committed(&survivors, group, topic, partitions), [100; 3]);

    // The live member goes on with the new records and commits them on the new coordinator.
    produce(&survivors, topic, partitions, 30);
    let seen = poll_records(&member, 30, Duration::from_secs(60));
    eprintln!(
        "coordinator {coordinator} killed: new records consumed after {:?}",
        killed_at.elapsed()
    );
    assert_eq!(sorted(seen), positions(partitions, 100..110));
    member
        .commit_consumer_state(rdkafka::consumer::CommitMode::Sync)
        .unwrap();
    drop(member);
    assert_eq!(committed(&survivors, group, topic, partitions), [110; 3]);

    // A new member resumes at those commits: only what came after.
    produce(&survivors, topic, partitions, 30);
    let resumed = group_member(&survivors, group, topic);
    let seen = poll_records(&resumed, 30, Duration::from_secs(60));
    assert_eq!(sorted(seen), positions(partitions, 110..120));
}

fn sorted(mut seen: Vec<(i32, i64)>) -> Vec<(i32, i64)> {
    seen.sort();
    seen
}

/// Every (partition, offset) of `offsets` in each of `partitions`, in order: what a consumer
/// reads when nothing is lost, duplicated or read again.
fn positions(partitions: i32, offsets: std::ops::Range<i64>) -> Vec<(i32, i64)> {
    (0..partitions)
        .flat_map(|p| offsets.clone().map(move |o| (p, o)))
        .collect()
}

/// The bootstrap list of every broker but broker `id`.
fn all_but(brokers: &[Broker; 3], id: i32) -> String {
    brokers
        .iter()
        .enumerate()
        .filter(|(i, _)| *i as i32 + 1 != id)
        .map(|(_, b)| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",")
}

/// `skiff dev --nodes 3` on its default ports: one broker killed leaves the other two serving
/// the cluster (a user watching a failover), and SIGTERM (Ctrl-C) stops them all.
#[test]
fn a_dev_cluster_keeps_serving_when_one_of_its_brokers_is_killed() {
    use std::io::BufRead;

    /// Kills `skiff dev` and its brokers should the test fail half-way.
    struct Dev {
        process: std::process::Child,
        brokers: Vec<i32>,
    }
    impl Drop for Dev {
        fn drop(&mut self) {
            for &pid in &self.brokers {
                // SAFETY: kill(2) with a pid and a signal number has no memory effects.
                unsafe { libc::kill(pid, libc::SIGKILL) };
            }
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }

    // A broker left on a default port (another Skiff, an aborted run) would be talked to
    // instead of this cluster's.
    for port in [9092, 9192, 9292, 9093, 9193, 9293, 9644, 9744, 9844] {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
            "port {port} is taken: skiff dev needs the default ports"
        );
    }
    for port in [7946, 8046, 8146] {
        assert!(
            std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok(),
            "UDP port {port} is taken: skiff dev needs the default ports"
        );
    }
    let dir = tempfile::tempdir().unwrap();
    let logs = std::fs::File::create(dir.path().join("dev.log")).unwrap();
    let mut process = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .args(["dev", "--nodes", "3", "--data-dir"])
        .arg(dir.path().join("data"))
        .stdout(std::process::Stdio::piped())
        .stderr(logs)
        .spawn()
        .unwrap();
    // Read to the end by a thread: whatever is printed later must not fill the pipe.
    let stdout = std::io::BufReader::new(process.stdout.take().unwrap());
    let (lines, printed) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            let _ = lines.send(line);
        }
    });
    let mut dev = Dev {
        process,
        brokers: Vec::new(),
    };
    while dev.brokers.len() < 3 {
        let line = printed
            .recv_timeout(Duration::from_secs(30))
            .expect("skiff dev prints each broker's pid");
        if let Some(pid) = line
            .strip_prefix(&format!("broker {}: pid ", dev.brokers.len() + 1))
            .and_then(|pid| pid.parse().ok())
        {
            dev.brokers.push(pid);
        }
    }

    let all = "127.0.0.1:9092,127.0.0.1:9192,127.0.0.1:9292";
    let client: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", all)
        .create()
        .unwrap();
    wait_until("three brokers serving", Duration::from_secs(60), || {
        client
            .fetch_metadata(None, Duration::from_secs(5))
            .is_ok_and(|m| m.brokers().len() == 3)
    });
    assert_eq!(
        create_replicated_topic("127.0.0.1:9092", "dev-topic", 3, 3, &[]),
        0
    );
    produce(all, "dev-topic", 3, 30);
    // SAFETY: as above.
    unsafe { libc::kill(dev.brokers[1], libc::SIGKILL) };
    wait_until("broker 2 fenced", Duration::from_secs(60), || {
        leaders_and_isrs("127.0.0.1:9092", "dev-topic")
            .iter()
            .all(|(leader, isr)| *leader != 2 && !isr.contains(&2))
    });
    let survivors = "127.0.0.1:9092,127.0.0.1:9292";
    produce(survivors, "dev-topic", 3, 30);
    let mut expected = expected_values(30);
    expected.extend(expected_values(30));
    expected.sort();
    assert_eq!(consume_all(survivors, "dev-topic", 3, 60), expected);
    assert!(
        dev.process.try_wait().unwrap().is_none(),
        "skiff dev stopped with one broker killed:\n{}",
        std::fs::read_to_string(dir.path().join("dev.log")).unwrap_or_default()
    );

    // SAFETY: as above.
    unsafe { libc::kill(dev.process.id() as i32, libc::SIGTERM) };
    let mut status = None;
    wait_until("skiff dev to stop", Duration::from_secs(60), || {
        status = dev.process.try_wait().unwrap();
        status.is_some()
    });
    assert!(status.unwrap().success());
    for pid in [dev.brokers[0], dev.brokers[2]] {
        // SAFETY: signal 0 only checks that the process exists.
        assert_eq!(
            unsafe { libc::kill(pid, 0) },
            -1,
            "broker pid {pid} still runs"
        );
    }
    // All gone: their pids may be reused, and must not be signalled on drop.
    dev.brokers.clear();
}

/// Each partition's (leader, replicas, ISR) from the broker at `addr`; replicas in preference
/// order, ISR sorted.
fn placement(addr: &str, topic: &str) -> Vec<(i32, Vec<i32>, Vec<i32>)> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let response: MetadataResponse = Client::connect(addr).call(ApiKey::Metadata, 12, &request);
    let mut partitions: Vec<_> = response.topics[0]
        .partitions
        .iter()
        .map(|p| {
            let mut isr: Vec<i32> = p.isr_nodes.iter().map(|b| b.0).collect();
            isr.sort();
            let replicas = p.replica_nodes.iter().map(|b| b.0).collect();
            (p.partition_index, (p.leader_id.0, replicas, isr))
        })
        .collect();
    partitions.sort();
    partitions.into_iter().map(|(_, p)| p).collect()
}

/// AlterPartitionReassignments for partition 0 of `topic`: to `target`, or cancelled when
/// `None`; the top-level and the partition's error codes.
fn reassign(addr: &str, topic: &str, target: Option<&[i32]>) -> (i16, i16) {
    use alter_partition_reassignments_request::{ReassignablePartition, ReassignableTopic};
    let request = AlterPartitionReassignmentsRequest::default().with_topics(vec![
        ReassignableTopic::default()
            .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
            .with_partitions(vec![ReassignablePartition::default()
                .with_partition_index(0)
                .with_replicas(
                    target.map(|t| t.iter().copied().map(BrokerId).collect()),
                )]),
    ]);
    let response: AlterPartitionReassignmentsResponse =
        Client::connect(addr).call(ApiKey::AlterPartitionReassignments, 0, &request);
    (
        response.error_code,
        response.responses[0].partitions[0].error_code,
    )
}

/// A reassignment in progress: topic, partition, replicas, adding, removing.
type Reassignment = (String, i32, Vec<i32>, Vec<i32>, Vec<i32>);

/// The reassignments in progress as ListPartitionReassignments reports them.
fn reassignments(addr: &str) -> Vec<Reassignment> {
    let response: ListPartitionReassignmentsResponse = Client::connect(addr).call(
        ApiKey::ListPartitionReassignments,
        0,
        &ListPartitionReassignmentsRequest::default(),
    );
    let ids = |ids: &[BrokerId]| ids.iter().map(|b| b.0).collect::<Vec<_>>();
    response
        .topics
        .iter()
        .flat_map(|t| {
            t.partitions.iter().map(|p| {
                (
                    t.name.to_string(),
                    p.partition_index,
                    ids(&p.replicas),
                    ids(&p.adding_replicas),
                    ids(&p.removing_replicas),
                )
            })
        })
        .collect()
}

/// kafka-reassign-partitions' path: a partition with one replica moves to the two other
/// brokers while it has records; the new replicas catch up, the old one is removed and its
/// files deleted, and every record is still there. A move to a broker that is down stays in
/// progress, is listed, and can be cancelled.
#[test]
fn a_reassigned_partition_moves_to_new_brokers_with_all_its_records() {
    let mut brokers = start_three();
    let addr = brokers[0].bootstrap();
    let topic = "moved";
    assert_eq!(create_replicated_topic(&addr, topic, 1, 1, &[]), 0);
    let (_, original, _) = placement(&addr, topic)[0].clone();
    let old = original[0];
    let target: Vec<i32> = (1..=3).filter(|&b| b != old).collect();
    let all = brokers
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    produce(&all, topic, 1, 500);

    assert_eq!(reassign(&addr, topic, Some(&target)), (0, 0));
    wait_until("the move to complete", Duration::from_secs(60), || {
        let (leader, replicas, isr) = placement(&addr, topic)[0].clone();
        replicas == target && isr == target && target.contains(&leader)
    });
    assert!(reassignments(&addr).is_empty());
    let old_dir = brokers[old as usize - 1]
        .data_dir()
        .join(format!("{topic}-0"));
    wait_until(
        "the old replica's files to go",
        Duration::from_secs(30),
        || !old_dir.exists(),
    );
    produce(&all, topic, 1, 100);
    let mut expected = expected_values(500);
    expected.extend(expected_values(100));
    expected.sort();
    assert_eq!(consume_all(&all, topic, 1, 600), expected);

    // Broker `old` is down: a move back to it waits, listed, until cancelled.
    brokers[old as usize - 1].kill9();
    let survivor = brokers[target[0] as usize - 1].bootstrap();
    let back = [target[0], old];
    assert_eq!(reassign(&survivor, topic, Some(&back)), (0, 0));
    wait_until("the move to be listed", Duration::from_secs(30), || {
        reassignments(&survivor)
            == [(
                topic.to_string(),
                0,
                vec![target[0], old, target[1]],
                vec![old],
                vec![target[1]],
            )]
    });
    assert_eq!(reassign(&survivor, topic, None), (0, 0));
    assert!(reassignments(&survivor).is_empty());
    assert_eq!(placement(&survivor, topic)[0].1, target);
    // Nothing to cancel now: Kafka's NO_REASSIGNMENT_IN_PROGRESS.
    assert_eq!(reassign(&survivor, topic, None), (0, 85));
}

/// `__consumer_offsets` created on a one-broker cluster has one replica; when two brokers join,
/// the controller raises it to three, so the commits survive the first broker's death.
#[test]
fn the_offsets_topic_grows_with_the_cluster_and_keeps_commits_when_its_first_broker_dies() {
    let mut seed = start_seed(&["--offsets-topic-partitions", "4"]);
    let (topic, group) = ("grown", "grown-group");
    assert_eq!(create_topic(&seed.bootstrap(), topic, 2), 0);
    wait_until("the coordinator", Duration::from_secs(30), || {
        find_coordinator(&seed.bootstrap(), group).is_ok()
    });
    wait_until("commits on one broker", Duration::from_secs(30), || {
        commit_everywhere(&seed.bootstrap(), group, topic, 2, 7) == [0, 0]
    });
    assert!(placement(&seed.bootstrap(), "__consumer_offsets")
        .iter()
        .all(|(_, replicas, _)| replicas.len() == 1));

    let b2 = start_joiner(&seed, "2", &["--offsets-topic-partitions", "4"]);
    let b3 = start_joiner(&seed, "3", &["--offsets-topic-partitions", "4"]);
    wait_until(
        "three in-sync replicas of every offsets partition",
        Duration::from_secs(60),
        || {
            placement(&seed.bootstrap(), "__consumer_offsets")
                .iter()
                .all(|(_, replicas, isr)| replicas.len() == 3 && isr == &[1, 2, 3])
        },
    );
    assert!(reassignments(&seed.bootstrap()).is_empty());

    seed.kill9();
    let survivors = format!("{},{}", b2.bootstrap(), b3.bootstrap());
    wait_until("a new coordinator", Duration::from_secs(60), || {
        find_coordinator(&b2.bootstrap(), group).is_ok_and(|id| id == 2 || id == 3)
    });
    assert_eq!(committed(&survivors, group, topic, 2), [7, 7]);
}

/// ElectLeaders for `partitions` of `topic` (every partition of the cluster when `None`);
/// each (topic, partition, error code) of the answer.
fn elect_preferred(addr: &str, topic: &str, partitions: Option<&[i32]>) -> Vec<(String, i32, i16)> {
    let request = ElectLeadersRequest::default()
        .with_election_type(0)
        .with_topic_partitions(partitions.map(|partitions| {
            vec![elect_leaders_request::TopicPartitions::default()
                .with_topic(TopicName(StrBytes::from_string(topic.to_owned())))
                .with_partitions(partitions.to_vec())]
        }));
    let response: ElectLeadersResponse =
        Client::connect(addr).call(ApiKey::ElectLeaders, 2, &request);
    assert_eq!(response.error_code, 0);
    let mut results: Vec<(String, i32, i16)> = response
        .replica_election_results
        .iter()
        .flat_map(|t| {
            t.partition_result
                .iter()
                .map(|p| (t.topic.to_string(), p.partition_id, p.error_code))
        })
        .collect();
    results.sort();
    results
}

/// Partitions of `topic` whose leader is not their preferred (first) replica.
fn not_led_by_preferred(addr: &str, topic: &str) -> Vec<i32> {
    placement(addr, topic)
        .iter()
        .enumerate()
        .filter(|(_, (leader, replicas, _))| replicas.first() != Some(leader))
        .map(|(p, _)| p as i32)
        .collect()
}

/// Kills broker `id` (1-based), waits until it leads nothing, restarts it, and waits until it is
/// back in every ISR of `topic`.
fn restart_and_catch_up(brokers: &mut [Broker; 3], id: i32, topic: &str) {
    let other = brokers[(id as usize) % 3].bootstrap();
    brokers[id as usize - 1].kill9();
    wait_until("its leaderships to move", Duration::from_secs(30), || {
        placement(&other, topic)
            .iter()
            .all(|(leader, _, isr)| *leader != id && !isr.contains(&id))
    });
    brokers[id as usize - 1].restart();
    wait_until("it to rejoin every ISR", Duration::from_secs(60), || {
        placement(&other, topic)
            .iter()
            .all(|(_, _, isr)| isr.contains(&id))
    });
}

/// kafka-leader-election's path: after a restart, broker 2 leads none of the partitions it
/// prefers; a preferred election over all partitions hands exactly those back, and a second
/// one is not needed.
#[test]
fn a_preferred_election_gives_a_restarted_broker_its_leaderships_back() {
    let mut brokers = start_three_with(&["--auto-leader-rebalance-enable", "false"]);
    let addr = brokers[0].bootstrap();
    let topic = "elected";
    assert_eq!(create_replicated_topic(&addr, topic, 6, 3, &[]), 0);
    assert!(not_led_by_preferred(&addr, topic).is_empty());
    restart_and_catch_up(&mut brokers, 2, topic);
    let moved = not_led_by_preferred(&addr, topic);
    assert_eq!(moved.len(), 2, "{:?}", placement(&addr, topic));

    let elected = elect_preferred(&addr, topic, None);
    let expected: Vec<(String, i32, i16)> =
        moved.iter().map(|&p| (topic.to_string(), p, 0)).collect();
    assert_eq!(elected, expected);
    assert!(not_led_by_preferred(&addr, topic).is_empty());
    // Already led by its preferred replica: Kafka's ELECTION_NOT_NEEDED.
    assert_eq!(
        elect_preferred(&addr, topic, Some(&[moved[0]])),
        [(topic.to_string(), moved[0], 84)]
    );
    assert_eq!(
        elect_preferred(&addr, "no-such-topic", Some(&[0])),
        [("no-such-topic".to_string(), 0, 3)]
    );
}

/// Kafka's auto.leader.rebalance.enable: a restarted broker gets its preferred leaderships back
/// by itself once it is in sync.
#[test]
fn the_controller_moves_leaderships_back_to_preferred_replicas_by_itself() {
    let mut brokers = start_three_with(&["--leader-imbalance-check-interval-seconds", "1"]);
    let addr = brokers[0].bootstrap();
    let topic = "rebalanced";
    assert_eq!(create_replicated_topic(&addr, topic, 6, 3, &[]), 0);
    restart_and_catch_up(&mut brokers, 3, topic);
    wait_until(
        "every preferred replica to lead",
        Duration::from_secs(30),
        || not_led_by_preferred(&addr, topic).is_empty(),
    );
}

/// `unclean.leader.election.enable`: with its only in-sync replica dead, a partition comes back
/// on the out-of-sync one, losing what only the dead one had; when that one returns it drops
/// its divergent records and follows, so both replicas end up holding the same records.
#[test]
fn an_unclean_election_keeps_the_partition_available_and_the_replicas_consistent() {
    let mut brokers = start_three();
    let addr = brokers[0].bootstrap();
    let topic = "unclean";
    assert_eq!(
        create_replicated_topic(
            &addr,
            topic,
            1,
            2,
            &[("unclean.leader.election.enable", "true")]
        ),
        0
    );
    let (leader, replicas, _) = placement(&addr, topic)[0].clone();
    let follower = *replicas.iter().find(|&&r| r != leader).unwrap();
    let third = (1..=3).find(|b| !replicas.contains(b)).unwrap();
    let third_addr = brokers[third as usize - 1].bootstrap();
    let all = brokers
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    produce(&all, topic, 1, 100);

    // The follower dies; the leader goes on alone and takes 50 records only it will have.
    brokers[follower as usize - 1].kill9();
    wait_until(
        "the follower out of the ISR",
        Duration::from_secs(30),
        || placement(&third_addr, topic)[0].2 == [leader],
    );
    let only_on_leader: Vec<String> = (0..50).map(|i| format!("lost-{i}")).collect();
    assert_eq!(
        produce_acknowledged(&all, topic, only_on_leader.clone()).len(),
        50
    );
    brokers[leader as usize - 1].kill9();
    brokers[follower as usize - 1].restart();
    wait_until(
        "the out-of-sync replica to lead",
        Duration::from_secs(30),
        || placement(&third_addr, topic)[0].0 == follower,
    );
    let after: Vec<String> = (0..30).map(|i| format!("after-{i}")).collect();
    assert_eq!(produce_acknowledged(&all, topic, after.clone()).len(), 30);
    let mut expected = expected_values(100);
    expected.extend(after);
    expected.sort();
    assert_eq!(consume_all(&all, topic, 1, 130), expected);

    // The old leader returns, truncates what only it had, catches up and leads again.
    brokers[leader as usize - 1].restart();
    wait_until("both replicas in sync", Duration::from_secs(60), || {
        let mut isr = placement(&third_addr, topic)[0].2.clone();
        isr.sort();
        let mut both = replicas.clone();
        both.sort();
        isr == both
    });
    brokers[follower as usize - 1].kill9();
    wait_until("the old leader to lead", Duration::from_secs(30), || {
        placement(&third_addr, topic)[0].0 == leader
    });
    assert_eq!(consume_all(&all, topic, 1, 130), expected);
}

/// The partition epoch of partition 0 of `topic`, as the broker's HTTP admin shows it.
fn partition_epoch(broker: &Broker, topic: &str) -> Option<i64> {
    let body = broker.http_get(&format!("/v1/partitions?topic={topic}"))?;
    let list: serde_json::Value = serde_json::from_str(&body).ok()?;
    list[0]["partition_epoch"].as_i64()
}

/// KIP-903's case: a follower killed and restarted faster than its session expires may have
/// lost what its old run had (an OS crash, a replaced disk), so it must not stay in the ISR on
/// the strength of its old run's fetches. The controller sees the new run (its gossip
/// generation), takes it out of the ISR and registers it again; it returns to the ISR after
/// catching up. Each of those two ISR changes bumps the partition epoch.
#[test]
fn a_fast_restarted_follower_rejoins_the_isr_only_from_its_new_run() {
    let mut brokers = start_three();
    let addr = brokers[0].bootstrap();
    let topic = "restarted";
    assert_eq!(create_replicated_topic(&addr, topic, 1, 3, &[]), 0);
    let (leader, _, _) = placement(&addr, topic)[0].clone();
    let follower = (1..=3).find(|&b| b != leader).unwrap();
    let observer = (1..=3).find(|&b| b != follower).unwrap() as usize - 1;
    let all = brokers
        .iter()
        .map(|b| b.bootstrap())
        .collect::<Vec<_>>()
        .join(",");
    produce(&all, topic, 1, 100);
    let before = partition_epoch(&brokers[observer], topic).unwrap();

    brokers[follower as usize - 1].kill9();
    brokers[follower as usize - 1].restart();
    wait_until(
        "the restarted follower out of the ISR and back",
        Duration::from_secs(60),
        || {
            partition_epoch(&brokers[observer], topic).is_some_and(|now| now >= before + 2)
                && placement(&addr, topic)[0].2.len() == 3
        },
    );
    produce(&all, topic, 1, 100);
    assert_eq!(consume_all(&all, topic, 1, 200).len(), 200);
}
