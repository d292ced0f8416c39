//! The metadata quorum across real network separation: brokers in their own network namespaces
//! (see `common/netns.rs`, needs root), cut apart with iptables and killed with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::netns::Cluster;
use common::wire::Client;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use serde_json::Value;

fn stats(cluster: &Cluster, i: usize) -> Option<Value> {
    serde_json::from_str(&cluster.http(i, "GET", "/raft/stats", None)?).ok()
}

fn ids(stats: &Value, field: &str) -> BTreeSet<u64> {
    stats[field]
        .as_array()
        .map(|list| list.iter().filter_map(|v| v["node_id"].as_u64()).collect())
        .unwrap_or_default()
}

fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// The node index of the current leader as node `i` sees it (node ids are index + 1).
fn leader_seen_by(cluster: &Cluster, i: usize) -> Option<usize> {
    let leader = stats(cluster, i)?["leader"].as_u64()?;
    Some(leader as usize - 1)
}

fn create_topic(cluster: &Cluster, via: usize, name: &str, partitions: i32) -> i16 {
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(15_000)
        .with_topics(vec![CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_owned())))
            .with_num_partitions(partitions)
            .with_replication_factor(1)]);
    let response: CreateTopicsResponse =
        Client::connect(&cluster.nodes[via].kafka_addr()).call(ApiKey::CreateTopics, 5, &request);
    response.topics[0].error_code
}

/// (partition, leader, replicas) of `topic` as node `i` answers Metadata.
fn assignment(cluster: &Cluster, i: usize, topic: &str) -> Vec<(i32, i32, Vec<i32>)> {
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(false)
        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
        )
        .with_name(Some(TopicName(StrBytes::from_string(topic.to_owned()))))]));
    let response: MetadataResponse =
        Client::connect(&cluster.nodes[i].kafka_addr()).call(ApiKey::Metadata, 12, &request);
    let mut partitions: Vec<(i32, i32, Vec<i32>)> = response.topics[0]
        .partitions
        .iter()
        .map(|p| {
            (
                p.partition_index,
                p.leader_id.0,
                p.replica_nodes.iter().map(|b| b.0).collect(),
            )
        })
        .collect();
    partitions.sort();
    partitions
}

#[test]
fn seven_brokers_elect_three_voters_and_agree_on_every_topic() {
    let cluster = Cluster::start_joined(7, &[]);
    wait_until("3 voters and 4 observers", Duration::from_secs(60), || {
        stats(&cluster, 0)
            .is_some_and(|s| ids(&s, "voters").len() == 3 && ids(&s, "observers").len() == 4)
    });
    assert_eq!(create_topic(&cluster, 6, "everywhere", 14), 0);
    let expected = assignment(&cluster, 0, "everywhere");
    assert_eq!(expected.len(), 14);
    let leaders: BTreeSet<i32> = expected.iter().map(|(_, l, _)| *l).collect();
    assert_eq!(
        leaders.len(),
        7,
        "every broker leads some partition: {expected:?}"
    );
    for i in 1..7 {
        wait_until(
            "the same assignment on every broker",
            Duration::from_secs(10),
            || assignment(&cluster, i, "everywhere") == expected,
        );
    }
}

#[test]
fn a_partitioned_voter_cannot_disrupt_the_term_when_it_returns() {
    let cluster = Cluster::start_joined(3, &["--controller-replace-failed-voter-secs", "600"]);
    wait_until("3 voters", Duration::from_secs(60), || {
        stats(&cluster, 0).is_some_and(|s| ids(&s, "voters").len() == 3)
    });
    let leader = leader_seen_by(&cluster, 0).expect("a leader");
    let term = stats(&cluster, leader).unwrap()["term"].as_u64().unwrap();
    let cut = (0..3).find(|&i| i != leader).unwrap();
    cluster.isolate(cut);
    // Many election timeouts pass while it is cut off.
    std::thread::sleep(Duration::from_secs(6));
    cluster.heal();
    std::thread::sleep(Duration::from_secs(4));
    let after = stats(&cluster, leader).unwrap();
    assert_eq!(
        after["term"].as_u64(),
        Some(term),
        "the term moved: {after}"
    );
    assert_eq!(leader_seen_by(&cluster, leader), Some(leader));
    wait_until(
        "the returned voter to follow",
        Duration::from_secs(10),
        || leader_seen_by(&cluster, cut) == Some(leader),
    );
    assert_eq!(create_topic(&cluster, cut, "after-the-cut", 3), 0);
}

#[test]
fn a_voter_failed_for_longer_than_the_setting_is_replaced() {
    let mut cluster = Cluster::start_joined(4, &["--controller-replace-failed-voter-secs", "2"]);
    wait_until("3 voters and an observer", Duration::from_secs(60), || {
        stats(&cluster, 0)
            .is_some_and(|s| ids(&s, "voters").len() == 3 && ids(&s, "observers").len() == 1)
    });
    let leader = leader_seen_by(&cluster, 0).expect("a leader");
    let voters = ids(&stats(&cluster, leader).unwrap(), "voters");
    let victim = voters
        .iter()
        .map(|&id| id as usize - 1)
        .find(|&i| i != leader)
        .unwrap();
    cluster.kill9(victim);
    wait_until("the dead voter replaced", Duration::from_secs(60), || {
        stats(&cluster, leader).is_some_and(|s| {
            let voters = ids(&s, "voters");
            voters.len() == 3 && !voters.contains(&(victim as u64 + 1))
        })
    });
    assert_eq!(create_topic(&cluster, leader, "after-replacement", 2), 0);
}
