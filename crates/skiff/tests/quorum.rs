//! The metadata quorum across real network separation: brokers in their own network namespaces
//! (see `common/netns.rs`, needs root), cut apart with iptables and killed with SIGKILL.

mod common;

use std::collections::BTreeSet;
use std::time::{Duration, Instant};

use common::netns::Cluster;
use common::wait_until;
use common::wire::Client;
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

/// The node index of the current leader as node `i` sees it (node ids are index + 1).
fn leader_seen_by(cluster: &Cluster, i: usize) -> Option<usize> {
    let leader = stats(cluster, i)?["leader"].as_u64()?;
    Some(leader as usize - 1)
}

fn create_topic(cluster: &Cluster, via: usize, name: &str, partitions: i32) -> i16 {
    common::wire::create_topic(&cluster.nodes[via].kafka_addr(), name, partitions)
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

mod history {
    use super::*;
    use common::http_exchange;
    use common::linearizability::{is_linearizable, Event, Op, Outcome};
    use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    const KEYS: usize = 3;
    /// Events recorded per key: the checker's search stays small.
    const EVENTS_PER_KEY: usize = 110;

    struct Lcg(u64);

    impl Lcg {
        fn next(&mut self, below: u64) -> u64 {
            self.0 = self
                .0
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            (self.0 >> 33) % below
        }
    }

    fn request(addr: &str, method: &str, path: &str, body: Option<&str>) -> Option<(u16, Value)> {
        let (status, body) = http_exchange(addr, method, path, body, Duration::from_millis(2500))?;
        Some((status, serde_json::from_str(&body).unwrap_or(Value::Null)))
    }

    fn run_client(
        client: usize,
        addrs: Vec<String>,
        start: Instant,
        stop: Arc<AtomicBool>,
        counts: Arc<Vec<AtomicUsize>>,
        history: Arc<Mutex<Vec<Vec<Event>>>>,
    ) {
        let mut rng = Lcg(client as u64 * 7919 + 17);
        let mut last_version = [0u64; KEYS];
        let mut written = 0;
        while !stop.load(Ordering::Relaxed) {
            // Paced so the operations span the whole nemesis schedule.
            std::thread::sleep(Duration::from_millis(100 + rng.next(100)));
            let key = rng.next(KEYS as u64) as usize;
            if counts[key].fetch_add(1, Ordering::Relaxed) >= EVENTS_PER_KEY {
                if counts
                    .iter()
                    .all(|c| c.load(Ordering::Relaxed) >= EVENTS_PER_KEY)
                {
                    return;
                }
                continue;
            }
            let addr = &addrs[rng.next(addrs.len() as u64) as usize];
            let path = format!("/store/lin-{key}");
            let call = start.elapsed().as_micros() as u64;
            let (op, outcome) = match rng.next(10) {
                0..=3 => {
                    written += 1;
                    let value = format!("c{client}-{written}");
                    let outcome = match request(addr, "PUT", &path, Some(&value)) {
                        Some((200, body)) => Outcome::Written {
                            version: body["version"].as_u64().unwrap(),
                        },
                        _ => Outcome::Unknown,
                    };
                    (Op::Put { value }, outcome)
                }
                4..=7 => {
                    let outcome = match request(addr, "GET", &path, None) {
                        Some((200, body)) => Outcome::Read(Some((
                            body["value"].as_str().unwrap().to_owned(),
                            body["version"].as_u64().unwrap(),
                        ))),
                        Some((404, _)) => Outcome::Read(None),
                        _ => Outcome::Unknown,
                    };
                    (Op::Get, outcome)
                }
                _ => {
                    written += 1;
                    let value = format!("c{client}-{written}");
                    let expected = last_version[key];
                    let cas_path = format!("{path}?cas={expected}");
                    let outcome = match request(addr, "PUT", &cas_path, Some(&value)) {
                        Some((200, body)) => Outcome::Written {
                            version: body["version"].as_u64().unwrap(),
                        },
                        Some((409, body)) => Outcome::Conflict {
                            current: body["current_version"].as_u64().unwrap(),
                        },
                        _ => Outcome::Unknown,
                    };
                    (Op::Cas { expected, value }, outcome)
                }
            };
            match &outcome {
                Outcome::Written { version } | Outcome::Conflict { current: version } => {
                    last_version[key] = *version
                }
                Outcome::Read(Some((_, version))) => last_version[key] = *version,
                _ => {}
            }
            let answer = start.elapsed().as_micros() as u64;
            history.lock().unwrap()[key].push(Event {
                client,
                call,
                answer,
                op,
                outcome,
            });
        }
    }

    fn leader(cluster: &Cluster) -> usize {
        for _ in 0..200 {
            for i in 0..cluster.nodes.len() {
                if let Some(l) = leader_seen_by(cluster, i) {
                    if stats(cluster, l).is_some_and(|s| s["role"] == "leader") {
                        return l;
                    }
                }
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        panic!("no leader");
    }

    #[test]
    fn kv_histories_stay_linearizable_while_the_leader_is_paused_cut_off_and_killed() {
        let mut cluster = Cluster::start_joined(3, &[]);
        wait_until("3 voters", Duration::from_secs(60), || {
            stats(&cluster, 0).is_some_and(|s| ids(&s, "voters").len() == 3)
        });
        let addrs: Vec<String> = cluster.nodes.iter().map(|n| n.http_addr()).collect();
        let start = Instant::now();
        let stop = Arc::new(AtomicBool::new(false));
        let counts = Arc::new((0..KEYS).map(|_| AtomicUsize::new(0)).collect::<Vec<_>>());
        let history = Arc::new(Mutex::new(vec![Vec::new(); KEYS]));
        let clients: Vec<_> = (0..5)
            .map(|client| {
                let (addrs, stop, counts, history) =
                    (addrs.clone(), stop.clone(), counts.clone(), history.clone());
                std::thread::spawn(move || run_client(client, addrs, start, stop, counts, history))
            })
            .collect();

        // The nemesis: pause the leader, cut it off, kill it; healing in between.
        std::thread::sleep(Duration::from_secs(1));
        let paused = leader(&cluster);
        cluster.pause(paused);
        std::thread::sleep(Duration::from_secs(2));
        cluster.resume(paused);
        std::thread::sleep(Duration::from_secs(2));
        let isolated = leader(&cluster);
        cluster.isolate(isolated);
        std::thread::sleep(Duration::from_secs(3));
        cluster.heal();
        std::thread::sleep(Duration::from_secs(2));
        let killed = leader(&cluster);
        cluster.kill9(killed);
        std::thread::sleep(Duration::from_secs(2));
        cluster.restart(killed);
        std::thread::sleep(Duration::from_secs(2));
        stop.store(true, Ordering::Relaxed);
        for client in clients {
            client.join().unwrap();
        }

        let history = history.lock().unwrap().clone();
        for (key, events) in history.iter().enumerate() {
            let answered = events
                .iter()
                .filter(|e| e.outcome != Outcome::Unknown)
                .count();
            eprintln!(
                "key {key}: {} operations, {answered} answered",
                events.len()
            );
            assert!(answered > 10, "too few answered operations on key {key}");
            if !is_linearizable(events) {
                for e in events {
                    eprintln!(
                        "client {} {}..{} us {:?} -> {:?}",
                        e.client, e.call, e.answer, e.op, e.outcome
                    );
                }
                panic!("key {key}: the history above is not linearizable");
            }
        }

        // The checker is not blind: a read that returns an overwritten value fails it.
        let events = &history[0];
        let writes: Vec<&Event> = events
            .iter()
            .filter(|e| matches!(e.outcome, Outcome::Written { .. }))
            .collect();
        let (first, later) = (writes[0], writes.last().unwrap());
        assert!(first.answer < later.call, "need two successive writes");
        let (Op::Put { value } | Op::Cas { value, .. }) = &first.op else {
            unreachable!("writes are puts or compare-and-sets")
        };
        let Outcome::Written { version } = first.outcome else {
            unreachable!()
        };
        let mut with_stale_read: Vec<Event> = events
            .iter()
            .filter(|e| e.outcome != Outcome::Unknown)
            .cloned()
            .collect();
        let end = with_stale_read.iter().map(|e| e.answer).max().unwrap() + 1;
        with_stale_read.push(Event {
            client: 99,
            call: end,
            answer: end + 1,
            op: Op::Get,
            outcome: Outcome::Read(Some((value.clone(), version))),
        });
        assert!(!is_linearizable(&with_stale_read));
    }
}
