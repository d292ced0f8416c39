//! Real agents on 127.0.0.1 (ephemeral UDP ports): joining through one seed, a killed
//! member seen as failed, a leaving one as left, queries, events, and joins that cannot
//! succeed.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_gossip::{
    AgentConfig, DropReason, GossipAgent, GossipError, GossipHandle, MemberEvent, MemberStatus,
    QueryOptions, QueryUpdate,
};
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// Fast timers so the test takes seconds: probe every 200 ms, suspicion under a second.
fn fast_config(name: &str) -> AgentConfig {
    let mut config = AgentConfig::new(name, SocketAddr::from(([127, 0, 0, 1], 0)));
    let m = &mut config.membership;
    m.probe_period = Duration::from_millis(200);
    m.probe_rtt = Duration::from_millis(100);
    m.gossip_interval = Duration::from_millis(50);
    m.push_pull_interval = Duration::from_secs(5);
    m.reconnect_interval = Duration::from_secs(2);
    m.leave_propagation = Duration::from_millis(300);
    m.join_backoff_initial = Duration::from_millis(200);
    m.join_backoff_max = Duration::from_millis(800);
    m.tags
        .insert("id".into(), name.trim_start_matches('n').into());
    config.join_timeout = Duration::from_secs(5);
    config
}

struct Running {
    handle: GossipHandle,
    events: Arc<Mutex<Vec<MemberEvent>>>,
    listener: JoinHandle<()>,
}

async fn start(name: &str) -> Running {
    start_with(fast_config(name)).await
}

async fn start_with(config: AgentConfig) -> Running {
    let (handle, mut receiver) = GossipAgent::start(config).await.unwrap();
    let events = Arc::new(Mutex::new(Vec::new()));
    let record = events.clone();
    let responder = handle.clone();
    let listener = tokio::spawn(async move {
        while let Some(event) = receiver.recv().await {
            if let MemberEvent::Query(query) = &event {
                let answer = format!("{} says hi", responder.local().name);
                responder
                    .respond(query.id, answer.as_bytes())
                    .await
                    .unwrap();
            }
            record.lock().unwrap().push(event);
        }
    });
    Running {
        handle,
        events,
        listener,
    }
}

async fn eventually(what: &str, mut check: impl AsyncFnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
    while tokio::time::Instant::now() < deadline {
        if check().await {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("timed out waiting for: {what}");
}

async fn statuses(handle: &GossipHandle) -> Vec<(String, MemberStatus)> {
    let mut out: Vec<_> = handle
        .members()
        .await
        .unwrap()
        .into_iter()
        .map(|m| (m.name, m.status))
        .collect();
    out.sort();
    out
}

fn saw(events: &Arc<Mutex<Vec<MemberEvent>>>, matches: impl Fn(&MemberEvent) -> bool) -> usize {
    events.lock().unwrap().iter().filter(|e| matches(e)).count()
}

#[tokio::test]
async fn five_agents_join_detect_a_crash_and_a_leave() {
    let mut agents = Vec::new();
    for i in 0..5 {
        agents.push(start(&format!("n{i}")).await);
    }
    let seed = agents[0].handle.local().addr.to_string();
    for agent in &agents[1..] {
        agent
            .handle
            .join(std::slice::from_ref(&seed))
            .await
            .unwrap();
    }
    for agent in &agents {
        eventually("every agent lists five alive members", async || {
            let members = statuses(&agent.handle).await;
            members.len() == 5 && members.iter().all(|(_, s)| *s == MemberStatus::Alive)
        })
        .await;
    }
    let tags_of_n2 = agents[0]
        .handle
        .members()
        .await
        .unwrap()
        .into_iter()
        .find(|m| m.name == "n2")
        .unwrap()
        .tags;
    assert_eq!(tags_of_n2.get("id").map(String::as_str), Some("2"));

    // A query reaches every member, and each answer comes straight back.
    let options = QueryOptions {
        request_ack: true,
        timeout: Some(Duration::from_secs(2)),
        ..QueryOptions::default()
    };
    let mut answers = agents[0].handle.query("hello", b"", options).await.unwrap();
    let mut responders = Vec::new();
    let mut acks = 0;
    while let Some(update) = answers.updates.recv().await {
        match update {
            QueryUpdate::Ack { .. } => acks += 1,
            QueryUpdate::Response { from, payload, .. } => {
                assert_eq!(payload, format!("{from} says hi").into_bytes());
                responders.push(from);
            }
            QueryUpdate::Done { .. } => unreachable!("the channel closes instead"),
        }
    }
    responders.sort();
    assert_eq!(responders, ["n0", "n1", "n2", "n3", "n4"]);
    assert_eq!(acks, 5);

    // A user event reaches everyone once.
    agents[1]
        .handle
        .user_event("deploy", b"v2", false)
        .await
        .unwrap();
    for agent in &agents {
        eventually("the user event arrives", async || {
            saw(
                &agent.events,
                |e| matches!(e, MemberEvent::User(u) if u.payload == b"v2"),
            ) == 1
        })
        .await;
    }

    // n4 crashes: its task stops without a word (all handles dropped).
    let crashed = agents.pop().unwrap();
    crashed.listener.abort();
    drop(crashed.handle);
    // n3 leaves gracefully.
    let leaver = agents.pop().unwrap();
    leaver.handle.leave().await.unwrap();
    assert!(matches!(
        leaver.handle.members().await,
        Err(GossipError::Stopped)
    ));

    for agent in &agents {
        eventually("n4 failed and n3 left", async || {
            let members = statuses(&agent.handle).await;
            members.contains(&("n4".into(), MemberStatus::Failed))
                && members.contains(&("n3".into(), MemberStatus::Left))
        })
        .await;
        assert_eq!(
            saw(
                &agent.events,
                |e| matches!(e, MemberEvent::Failed(m) if m.name == "n4")
            ),
            1
        );
        assert_eq!(
            saw(
                &agent.events,
                |e| matches!(e, MemberEvent::Leave(m) if m.name == "n3")
            ),
            1
        );
        assert_eq!(
            saw(
                &agent.events,
                |e| matches!(e, MemberEvent::Failed(m) if m.name == "n3")
            ),
            0
        );
    }
}

#[tokio::test]
async fn joining_a_silent_or_foreign_address_fails_with_a_clear_error() {
    let mut config = fast_config("lonely");
    config.join_timeout = Duration::from_secs(2);
    let agent = start_with(config).await;
    // Nothing listens here.
    let silent = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent_addr = silent.local_addr().unwrap();
    drop(silent);
    let error = agent
        .handle
        .join(&[silent_addr.to_string()])
        .await
        .unwrap_err();
    assert!(
        matches!(&error, GossipError::JoinTimeout { attempts, .. } if *attempts >= 3),
        "{error}"
    );
    assert!(error.to_string().contains("no seed"), "{error}");

    // Something that is not Skiff answers every datagram with junk.
    let foreign = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let foreign_addr = foreign.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 2048];
        while let Ok((_, from)) = foreign.recv_from(&mut buf).await {
            let _ = foreign
                .send_to(b"HTTP/1.1 400 Bad Request\r\n\r\n", from)
                .await;
        }
    });
    let error = agent
        .handle
        .join(&[foreign_addr.to_string()])
        .await
        .unwrap_err();
    assert!(matches!(error, GossipError::JoinTimeout { .. }), "{error}");
    let stats = agent.handle.stats().await.unwrap();
    assert!(
        stats.dropped(DropReason::BadMagic) >= 3,
        "junk replies are counted"
    );

    let error = agent
        .handle
        .join(&["no-such-host.invalid:7946".to_string()])
        .await
        .unwrap_err();
    assert!(matches!(error, GossipError::Resolve { .. }), "{error}");

    // The agent is still healthy and alone.
    assert_eq!(
        statuses(&agent.handle).await,
        vec![("lonely".into(), MemberStatus::Alive)]
    );
}
