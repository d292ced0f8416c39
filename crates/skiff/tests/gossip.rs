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

/// An event handler that records every event in `<dir>/<member>.events` and answers queries
/// with `pong-<member>`.
fn write_handler(dir: &std::path::Path) -> String {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join("handler.sh");
    let script = format!(
        "#!/bin/sh\npayload=$(cat)\n\
         echo \"$SERF_EVENT $SERF_USER_EVENT$SERF_QUERY_NAME $payload\" >> {}/$SERF_SELF_NAME.events\n\
         if [ \"$SERF_EVENT\" = query ]; then printf 'pong-%s' \"$SERF_SELF_NAME\"; fi\n",
        dir.display()
    );
    std::fs::write(&path, script).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path.display().to_string()
}

#[test]
fn brokers_join_through_a_seed_and_tell_leave_from_failure() {
    let dir = tempfile::tempdir().unwrap();
    let handler = write_handler(dir.path());
    let seed = Broker::start_with(&["--node-name", "seed", "--event-handler", &handler]);
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let member = |name: &'static str, id: &'static str| {
        Broker::start_with(&[
            "--node-name",
            name,
            "--join",
            &join,
            "--node-id",
            id,
            "--event-handler",
            &handler,
        ])
    };
    let mut left = member("leaver", "2");
    let mut crashed = member("crasher", "3");
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

    // A query is acknowledged by every live member.
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
    // Every member's handler answered the query.
    for name in ["seed", "leaver", "crasher"] {
        assert_eq!(
            answer["responses"][name],
            format!("pong-{name}"),
            "{answer}"
        );
    }
    // A user event runs every member's handler once, with its payload on stdin.
    assert!(seed
        .http_post("/v1/event", r#"{"name":"deploy","payload":"v2"}"#)
        .is_some());
    let deadline = Instant::now() + TIMEOUT;
    for name in ["seed", "leaver", "crasher"] {
        let path = dir.path().join(format!("{name}.events"));
        loop {
            let events = std::fs::read_to_string(&path).unwrap_or_default();
            if events.contains("user deploy v2") {
                assert_eq!(events.matches("user deploy").count(), 1, "{events}");
                assert!(events.contains("member-join"), "{events}");
                break;
            }
            assert!(
                Instant::now() < deadline,
                "{name} never ran the user event: {events}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    // The same through the CLI.
    let cli = |args: &[&str]| {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
            .args(args)
            .args(["--http-addr", &format!("127.0.0.1:{}", seed.http_port)])
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        (output.status.success(), text)
    };
    let (ok, listed) = cli(&["members"]);
    assert!(ok, "{listed}");
    for name in ["seed", "leaver", "crasher"] {
        assert!(
            listed
                .lines()
                .any(|l| l.starts_with(name) && l.contains("alive")),
            "{listed}"
        );
    }
    let (ok, queried) = cli(&["query", "ping", "--timeout-ms", "2000"]);
    assert!(
        ok && queried.starts_with("3 acknowledgements, 3 responses"),
        "{queried}"
    );
    assert!(queried.contains("crasher: pong-crasher"), "{queried}");
    let (ok, refused) = cli(&["event", "x", &"y".repeat(4096)]);
    assert!(!ok, "{refused}");

    // Malformed requests are refused.
    assert!(seed.http_post("/v1/event", "{not json").is_none());
    assert!(seed
        .http_post("/v1/query", r#"{"name":"q","timeout_ms":99999999}"#)
        .is_none());

    // An event over the payload limit is refused.
    let oversized = format!(r#"{{"name":"x","payload":"{}"}}"#, "y".repeat(4096));
    assert!(seed.http_post("/v1/event", &oversized).is_none());

    // A tag update at runtime spreads to the others.
    common::http_request(
        ("127.0.0.1", left.http_port),
        "PUT",
        "/v1/tags",
        Some(r#"{"rack":"r9"}"#),
    )
    .expect("tags updated");
    // Tags the broker derives its identity from are refused.
    assert!(common::http_request(
        ("127.0.0.1", left.http_port),
        "PUT",
        "/v1/tags",
        Some(r#"{"run":""}"#),
    )
    .is_none());
    let deadline = Instant::now() + TIMEOUT;
    while !members(&seed)
        .iter()
        .any(|m| m["name"] == "leaver" && m["tags"]["rack"] == "r9")
    {
        assert!(Instant::now() < deadline, "tag update never arrived");
        std::thread::sleep(Duration::from_millis(100));
    }
    // A query filtered by tag reaches only the matching member.
    let filtered = seed
        .http_post(
            "/v1/query",
            r#"{"name":"ping","timeout_ms":2000,"tags":{"id":"^3$"}}"#,
        )
        .unwrap();
    let filtered: Value = serde_json::from_str(&filtered).unwrap();
    let responders: Vec<&String> = filtered["responses"].as_object().unwrap().keys().collect();
    assert_eq!(responders, ["crasher"], "{filtered}");

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

#[test]
fn encrypted_gossip_admits_only_members_with_the_key() {
    let key = "5a".repeat(32);
    let seed = Broker::start_with(&["--node-name", "keyed-seed", "--gossip-key", &key]);
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let _member = Broker::start_with(&[
        "--node-name",
        "keyed-member",
        "--node-id",
        "2",
        "--join",
        &join,
        "--gossip-key",
        &key,
    ]);
    let _stranger = Broker::start_with(&[
        "--node-name",
        "stranger",
        "--node-id",
        "3",
        "--join",
        &join,
        "--gossip-key",
        &"a5".repeat(32),
    ]);
    let _plain = Broker::start_with(&["--node-name", "plain", "--node-id", "4", "--join", &join]);
    wait_status(&seed, "keyed-member", "alive");
    std::thread::sleep(Duration::from_secs(3));
    let names: Vec<String> = members(&seed)
        .iter()
        .map(|m| m["name"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");
    assert!(!names.contains(&"stranger".to_string()) && !names.contains(&"plain".to_string()));
}
