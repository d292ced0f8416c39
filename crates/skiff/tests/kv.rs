//! The replicated key-value store over HTTP, on real `skiff serve` processes: the classic Raft KV
//! walkthrough (set here, read there; delete; a node leaves and comes back; a follower is
//! killed; a fourth node joins), compare-and-set, limits, and figures.

mod common;

use std::time::{Duration, Instant};

use common::{http_exchange, percentile, wait_until, Broker};
use serde_json::Value;

fn call(broker: &Broker, method: &str, path: &str, body: Option<&str>) -> (u16, Value) {
    let (status, body) = http_exchange(
        ("127.0.0.1", broker.http_port),
        method,
        path,
        body,
        Duration::from_secs(30),
    )
    .unwrap_or_else(|| panic!("{method} {path}: no answer\n{}", broker.log()));
    (status, serde_json::from_str(&body).unwrap_or(Value::Null))
}

fn put(broker: &Broker, key: &str, value: &str) -> u64 {
    let (status, body) = call(broker, "PUT", &format!("/store/{key}"), Some(value));
    assert_eq!(status, 200, "{body}");
    body["version"].as_u64().unwrap()
}

fn get(broker: &Broker, key: &str) -> Option<String> {
    match call(broker, "GET", &format!("/store/{key}"), None) {
        (200, body) => Some(body["value"].as_str().unwrap().to_owned()),
        (404, _) => None,
        (status, body) => panic!("GET {key}: {status} {body}"),
    }
}

/// The broker's own copy, without asking the leader.
fn get_stale(broker: &Broker, key: &str) -> Option<String> {
    match call(
        broker,
        "GET",
        &format!("/store/{key}?consistency=stale"),
        None,
    ) {
        (200, body) => Some(body["value"].as_str().unwrap().to_owned()),
        _ => None,
    }
}

fn member_count(broker: &Broker) -> usize {
    let (_, stats) = call(broker, "GET", "/raft/stats", None);
    stats["voters"].as_array().map_or(0, Vec::len)
        + stats["observers"].as_array().map_or(0, Vec::len)
}

/// Snapshots every 20 entries, so the log is purged and late nodes catch up from a snapshot.
const SNAPSHOT_EVERY: &str = "20";

fn joiner(seed: &Broker, id: &str) -> Broker {
    let join = format!("127.0.0.1:{}", seed.gossip_port);
    let name = format!("kv{id}");
    Broker::start_with(&[
        "--node-id",
        id,
        "--node-name",
        &name,
        "--join",
        &join,
        "--raft-snapshot-entries",
        SNAPSHOT_EVERY,
    ])
}

#[test]
fn the_raft_kv_walkthrough_on_three_then_four_nodes() {
    let mut seed = Broker::start_with(&[
        "--node-id",
        "1",
        "--node-name",
        "kv1",
        "--raft-snapshot-entries",
        SNAPSHOT_EVERY,
    ]);
    let mut b2 = joiner(&seed, "2");
    let mut b3 = joiner(&seed, "3");
    wait_until("three members", Duration::from_secs(30), || {
        member_count(&seed) == 3
    });

    // Set on one node, read from the two others (linearizable reads, then their own copies).
    put(&seed, "greeting", "hello");
    for node in [&b2, &b3] {
        assert_eq!(get(node, "greeting").as_deref(), Some("hello"));
        wait_until("the local copy", Duration::from_secs(10), || {
            get_stale(node, "greeting").as_deref() == Some("hello")
        });
    }

    // Delete and see it gone everywhere.
    let (status, body) = call(&b3, "DELETE", "/store/greeting", None);
    assert_eq!((status, body["deleted"].as_bool()), (200, Some(true)));
    for node in [&seed, &b2, &b3] {
        assert_eq!(get(node, "greeting"), None);
    }

    // A node leaves (SIGTERM: gossip leave, removed from the quorum); writes go on; it comes
    // back on its data dir and serves the writes it missed from its own copy.
    b3.terminate();
    wait_until("node 3 removed", Duration::from_secs(30), || {
        member_count(&seed) == 2
    });
    for i in 0..20 {
        put(&b2, &format!("missed/{i}"), &format!("value-{i}"));
    }
    b3.restart();
    wait_until("node 3 caught up", Duration::from_secs(30), || {
        get_stale(&b3, "missed/19").as_deref() == Some("value-19")
    });
    let (_, listed) = call(&b3, "GET", "/store?prefix=missed/&consistency=stale", None);
    assert_eq!(listed["items"].as_array().unwrap().len(), 20);

    // SIGKILL a follower, write, restart it, read the new value from it.
    b2.kill9();
    put(&seed, "after-kill", "new");
    b2.restart();
    wait_until("node 2 has the new value", Duration::from_secs(30), || {
        get_stale(&b2, "after-kill").as_deref() == Some("new")
    });

    // A fourth node joins and serves the old data, installed from a snapshot: the log it
    // would need has been purged.
    let (_, stats) = call(&seed, "GET", "/raft/stats", None);
    assert!(stats["snapshot_index"].as_u64().is_some(), "{stats}");
    let mut b4 = joiner(&seed, "4");
    wait_until("node 4 has the old data", Duration::from_secs(30), || {
        get_stale(&b4, "missed/0").as_deref() == Some("value-0")
    });
    assert_eq!(get(&b4, "after-kill").as_deref(), Some("new"));

    // The whole cluster is killed at once and restarted: every acknowledged write is there.
    for node in [&mut seed, &mut b2, &mut b3, &mut b4] {
        node.kill9();
    }
    for node in [&mut seed, &mut b2, &mut b3, &mut b4] {
        node.restart();
    }
    for node in [&seed, &b2, &b3, &b4] {
        assert_eq!(get(node, "after-kill").as_deref(), Some("new"));
        assert_eq!(get(node, "missed/7").as_deref(), Some("value-7"));
    }
}

/// Runs `skiff kv <args>` against `broker`; its output, or the test fails.
fn cli(broker: &Broker, args: &[&str]) -> String {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"))
        .arg("kv")
        .args(args)
        .env("SKIFF_HTTP_ADDR", format!("127.0.0.1:{}", broker.http_port))
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "skiff kv {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap()
}

#[test]
fn the_cli_carries_keys_and_prefixes_with_url_characters() {
    let broker = Broker::start_with(&[]);
    let key = "odd/key with ?#&%= chars";
    cli(&broker, &["put", key, "v1"]);
    assert_eq!(cli(&broker, &["get", key]), "v1\n");
    cli(&broker, &["put", key, "v2", "--cas", "1"]);
    assert_eq!(cli(&broker, &["get", key, "--stale"]), "v2\n");
    cli(&broker, &["put", "odd/other", "x"]);
    let listed = cli(&broker, &["list", "odd/key with ?#&"]);
    assert_eq!(listed.lines().count(), 1, "{listed}");
    assert!(listed.starts_with(&format!("{key}\t2\tv2")), "{listed}");
    cli(&broker, &["delete", key, "--cas", "2"]);
    assert_eq!(cli(&broker, &["list", "odd/"]).lines().count(), 1);
}

#[test]
fn compare_and_set_limits_and_bad_requests() {
    let broker = Broker::start();
    let (status, body) = call(&broker, "PUT", "/store/cfg?cas=0", Some("v1"));
    assert_eq!((status, body["created"].as_bool()), (200, Some(true)));
    let version = body["version"].as_u64().unwrap();
    // 0 means "only if absent": it exists now.
    let (status, body) = call(&broker, "PUT", "/store/cfg?cas=0", Some("v2"));
    assert_eq!(
        (status, body["current_version"].as_u64()),
        (409, Some(version))
    );
    let (status, _) = call(
        &broker,
        "PUT",
        &format!("/store/cfg?cas={version}"),
        Some("v2"),
    );
    assert_eq!(status, 200);
    let (status, body) = call(
        &broker,
        "DELETE",
        &format!("/store/cfg?cas={version}"),
        None,
    );
    assert_eq!(status, 409, "{body}");
    let (_, current) = call(&broker, "GET", "/store/cfg", None);
    assert_eq!(current["value"], "v2");
    let (status, _) = call(
        &broker,
        "POST",
        "/store",
        Some(r#"{"key": "json", "value": "posted"}"#),
    );
    assert_eq!(status, 200);
    assert_eq!(get(&broker, "json").as_deref(), Some("posted"));

    let big = "x".repeat(1024 * 1024 + 1);
    assert_eq!(call(&broker, "PUT", "/store/big", Some(&big)).0, 413);
    let long_key = format!("/store/{}", "k".repeat(1025));
    assert_eq!(call(&broker, "PUT", &long_key, Some("v")).0, 413);
    assert_eq!(
        call(&broker, "POST", "/store", Some(r#"{"key": ""}"#)).0,
        422
    );
    assert_eq!(call(&broker, "POST", "/store", Some("not json")).0, 400);
    assert_eq!(
        call(&broker, "GET", "/store/cfg?consistency=sometimes", None).0,
        400
    );
    assert_eq!(call(&broker, "PUT", "/store/cfg?cas=abc", Some("v")).0, 400);
    assert_eq!(get(&broker, "big"), None);
    // Still serving.
    assert_eq!(get(&broker, "cfg").as_deref(), Some("v2"));
}

/// Figures for docs/benchmarks.md, not a correctness check: run in release with
/// `cargo test --release -p skiff --test kv -- --ignored --nocapture kv_figures`.
#[test]
#[ignore]
fn kv_figures() {
    let seed = Broker::start_with(&["--node-id", "1", "--node-name", "kv1"]);
    let _b2 = joiner(&seed, "2");
    let _b3 = joiner(&seed, "3");
    wait_until("three voters", Duration::from_secs(30), || {
        member_count(&seed) == 3
    });
    let run = Duration::from_secs(5);
    for clients in [1usize, 16, 64] {
        for reads in [false, true] {
            let port = seed.http_port;
            let threads: Vec<_> = (0..clients)
                .map(|c| {
                    std::thread::spawn(move || {
                        let agent: ureq::Agent = ureq::Agent::config_builder()
                            .http_status_as_error(false)
                            .build()
                            .into();
                        let mut latencies = Vec::new();
                        let started = Instant::now();
                        let mut i = 0u64;
                        while started.elapsed() < run {
                            let url = format!("http://127.0.0.1:{port}/store/bench/{c}/{}", i % 16);
                            let at = Instant::now();
                            let response = if reads {
                                agent.get(&url).call()
                            } else {
                                agent.put(&url).send("value")
                            };
                            let mut response = response.unwrap();
                            let status = response.status().as_u16();
                            // Reading the body to its end puts the connection back in the pool.
                            response.body_mut().read_to_string().unwrap();
                            assert!(status == 200 || status == 404, "{status}");
                            latencies.push(at.elapsed());
                            i += 1;
                        }
                        latencies
                    })
                })
                .collect();
            let mut latencies: Vec<Duration> = threads
                .into_iter()
                .flat_map(|t| t.join().unwrap())
                .collect();
            latencies.sort();
            eprintln!(
                "{} clients, {}: {:.0}/s, p50 {:?}, p99 {:?}",
                clients,
                if reads {
                    "linearizable reads"
                } else {
                    "writes"
                },
                latencies.len() as f64 / run.as_secs_f64(),
                percentile(&latencies, 0.5),
                percentile(&latencies, 0.99)
            );
        }
    }
}

#[test]
fn without_a_quorum_writes_and_reads_answer_503_with_retry_after() {
    use std::io::{Read, Write};

    let seed = Broker::start_with(&["--node-id", "1", "--node-name", "kv1"]);
    let mut b2 = joiner(&seed, "2");
    let mut b3 = joiner(&seed, "3");
    wait_until("three voters", Duration::from_secs(30), || {
        let (_, stats) = call(&seed, "GET", "/raft/stats", None);
        stats["voters"].as_array().map_or(0, Vec::len) == 3
    });
    put(&seed, "before", "quorum");
    b2.kill9();
    b3.kill9();
    for (method, body) in [("PUT", "lost"), ("GET", "")] {
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", seed.http_port)).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        write!(
            stream,
            "{method} /store/before HTTP/1.1\r\nHost: x\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
            body.len()
        )
        .unwrap();
        let mut response = String::new();
        stream.read_to_string(&mut response).unwrap();
        let lower = response.to_ascii_lowercase();
        assert!(lower.starts_with("http/1.1 503"), "{method}: {response}");
        assert!(lower.contains("retry-after: 1"), "{method}: {response}");
    }
    // The local copy still answers stale reads.
    assert_eq!(get_stale(&seed, "before").as_deref(), Some("quorum"));
}

/// One admin request with an optional bearer token; its status and body.
fn with_token(
    addr: &str,
    method: &str,
    path: &str,
    token: Option<&str>,
    body: Option<&str>,
) -> (u16, String) {
    let header = token.map(|t| format!("Bearer {t}"));
    let headers: Vec<(&str, &str)> = header
        .iter()
        .map(|h| ("Authorization", h.as_str()))
        .collect();
    common::http_exchange_with(addr, method, path, &headers, body, Duration::from_secs(30))
        .expect("an answer")
}

/// `--http-auth-token`: requests that change something need the bearer token (401 without,
/// 403 with a wrong one, JSON errors); reads stay open unless `--http-auth-reads`; `/health`
/// always answers; `skiff kv --token` carries it.
#[test]
fn the_http_token_guards_writes_and_optionally_reads() {
    let token = "s3cret-token";
    let broker = Broker::start_with(&["--http-auth-token", token]);
    let addr = format!("127.0.0.1:{}", broker.http_port);
    let send = |method: &str, path: &str, auth: Option<&str>, body: Option<&str>| {
        with_token(&addr, method, path, auth, body)
    };
    let (status, body) = send("PUT", "/store/k", None, Some("v"));
    assert_eq!(status, 401, "{body}");
    assert!(
        body.contains("\"error\"") && body.contains("Bearer"),
        "{body}"
    );
    assert_eq!(send("PUT", "/store/k", Some("wrong"), Some("v")).0, 403);
    assert_eq!(send("PUT", "/store/k", Some(token), Some("v")).0, 200);
    for (method, path, body) in [
        ("DELETE", "/store/k", None),
        ("POST", "/store", Some(r#"{"key":"k","value":"v"}"#)),
        (
            "POST",
            "/raft/join",
            Some(r#"{"node_id":9,"raft_address":"127.0.0.1:1"}"#),
        ),
        ("POST", "/raft/remove", Some(r#"{"node_id":9}"#)),
        ("POST", "/v1/event", Some(r#"{"name":"e","payload":""}"#)),
        ("POST", "/v1/query", Some(r#"{"name":"q","payload":""}"#)),
        ("PUT", "/v1/tags", Some(r#"{"rack":"r1"}"#)),
    ] {
        assert_eq!(send(method, path, None, body).0, 401, "{method} {path}");
    }
    assert_eq!(send("GET", "/store/k", None, None).0, 200);
    assert_eq!(send("GET", "/metrics", None, None).0, 200);

    // The CLI sends the token it is given, and says why without it.
    let kv = |args: &[&str], token: Option<&str>| {
        let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_skiff"));
        command
            .arg("kv")
            .args(args)
            .env("SKIFF_HTTP_ADDR", &addr)
            .env_remove("SKIFF_HTTP_AUTH_TOKEN");
        if let Some(token) = token {
            command.args(["--token", token]);
        }
        command.output().unwrap()
    };
    let refused = kv(&["put", "cli", "x"], None);
    assert!(!refused.status.success());
    assert!(String::from_utf8_lossy(&refused.stderr).contains("Authorization"));
    assert!(kv(&["put", "cli", "x"], Some(token)).status.success());

    // With --http-auth-reads, every endpoint but /health needs it.
    let guarded = Broker::start_with(&["--http-auth-token", token, "--http-auth-reads"]);
    let guarded_addr = format!("127.0.0.1:{}", guarded.http_port);
    let read =
        |path: &str, auth: Option<&str>| with_token(&guarded_addr, "GET", path, auth, None).0;
    assert_eq!(read("/health", None), 200);
    for path in ["/metrics", "/raft/stats", "/v1/members", "/store?prefix="] {
        assert_eq!(read(path, None), 401, "{path}");
        assert_eq!(read(path, Some(token)), 200, "{path}");
    }
}
