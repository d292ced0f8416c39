//! Brokers find each other by gossip: join through a seed, see tags, tell a graceful leave from
//! a crash, and answer user events and queries, all through the HTTP admin API.

mod common;

use std::time::{Duration, Instant};

use common::Broker;
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(60);

fn members(broker: &Broker) -> Vec<Value> {
    let body = broker.http_get("/v1/members").expect("/v1/members answers");
    serde_json::from_str::<Value>(&body)
        .unwrap()
        .as_array()
        .unwrap()
        .clone()
}

/// Waits until `broker` reports member `name` with `status`.
fn wait_status(broker: &Broker, name: &str, status: &str) {
    let deadline = Instant::now() + TIMEOUT;
    loop {
        let found = members(broker);
        if found
            .iter()
            .any(|m| m["name"] == name && m["status"] == status)
        {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{name} never {status}: {found:?}\n{}",
            broker.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn brokers_join_through_a_seed_and_tell_leave_from_failure() {
    let seed = Broker::start_with(&["--node-name", "seed"]);
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let mut left =
        Broker::start_with(&["--node-name", "leaver", "--join", &join, "--node-id", "2"]);
    let mut crashed =
        Broker::start_with(&["--node-name", "crasher", "--join", &join, "--node-id", "3"]);
    for name in ["seed", "leaver", "crasher"] {
        for broker in [&seed, &left, &crashed] {
            wait_status(broker, name, "alive");
        }
    }
    // Tags carry the addresses clients and brokers need.
    let crasher = members(&seed)
        .into_iter()
        .find(|m| m["name"] == "crasher")
        .unwrap();
    assert_eq!(crasher["tags"]["id"], "3");
    assert_eq!(crasher["tags"]["kafka"], crashed.bootstrap().as_str());

    // A query is acknowledged by every live member; a user event is accepted.
    let answer = seed
        .http_post(
            "/v1/query",
            r#"{"name":"ping","payload":"hi","timeout_ms":3000}"#,
        )
        .expect("query answered");
    let answer: Value = serde_json::from_str(&answer).unwrap();
    let mut acks: Vec<&str> = answer["acks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_str().unwrap())
        .collect();
    acks.sort();
    assert_eq!(acks, ["crasher", "leaver", "seed"]);
    assert!(seed
        .http_post("/v1/event", r#"{"name":"deploy","payload":"v2"}"#)
        .is_some());
    assert!(seed.http_post("/v1/event", r#"{"name":"x","payload":"oversized"}"#.replace("oversized", &"y".repeat(4096)).as_str()).is_none());

    // SIGTERM leaves gracefully; SIGKILL is a failure.
    assert!(left.terminate().success());
    wait_status(&seed, "leaver", "left");
    crashed.kill9();
    wait_status(&seed, "crasher", "failed");
    // The leaver was never reported failed.
    assert!(
        !seed.log().contains("member failed member=leaver"),
        "{}",
        seed.log()
    );
}
