//! Application requests on one core: limits are enforced with precise errors, and the
//! local side of events, queries, tags and leave behaves as documented.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use skiff_gossip::{
    DropReason, MemberEvent, MemberStatus, Membership, MembershipConfig, QueryFilter, QueryOptions,
    QueryUpdate, RequestError, Tags, TagsError,
};

fn core(name: &str, port: u16) -> (Membership, Instant) {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let now = Instant::now();
    (
        Membership::new(MembershipConfig::new(name, addr), [7; 32], now).unwrap(),
        now,
    )
}

#[test]
fn oversized_or_empty_requests_are_refused_with_the_limit() {
    let (mut m, now) = core("a", 1);
    assert_eq!(
        m.user_event("e", &[0; 513], false, now),
        Err(RequestError::PayloadTooLarge {
            len: 513,
            limit: 512
        })
    );
    assert_eq!(
        m.user_event("", b"", false, now),
        Err(RequestError::BadName { len: 0, limit: 128 })
    );
    let mut tags = Tags::new();
    tags.insert("k".into(), "v".repeat(600));
    assert!(matches!(
        m.update_tags(tags, now),
        Err(RequestError::Tags(TagsError::TooLarge { .. }))
    ));
    assert_eq!(
        m.query("q", &[0; 600], QueryOptions::default(), now),
        Err(RequestError::PayloadTooLarge {
            len: 600,
            limit: 512
        })
    );
    let many = (0..9).fold(QueryFilter::default(), |f, i| f.node(&format!("n{i}")));
    let options = QueryOptions {
        filter: many,
        ..QueryOptions::default()
    };
    assert_eq!(
        m.query("q", b"", options, now),
        Err(RequestError::TooManyFilters { limit: 8 })
    );
    let options = QueryOptions {
        filter: QueryFilter::default().tag_matches("role", "(unclosed"),
        ..QueryOptions::default()
    };
    assert!(matches!(
        m.query("q", b"", options, now),
        Err(RequestError::BadFilter { .. })
    ));
    let options = QueryOptions {
        timeout: Some(Duration::from_secs(3600)),
        ..QueryOptions::default()
    };
    assert!(matches!(
        m.query("q", b"", options, now),
        Err(RequestError::TimeoutTooLong { .. })
    ));
    assert_eq!(
        m.join(&[SocketAddr::from(([127, 0, 0, 1], 1))], now),
        Err(RequestError::NoSeeds)
    );
}

#[test]
fn a_lone_member_delivers_its_own_event_and_answers_its_own_query() {
    let (mut m, now) = core("solo", 2);
    m.user_event("hello", b"world", false, now).unwrap();
    let options = QueryOptions {
        request_ack: true,
        timeout: Some(Duration::from_secs(2)),
        ..QueryOptions::default()
    };
    let id = m.query("ping", b"?", options, now).unwrap();
    let mut incoming = None;
    let mut events = Vec::new();
    while let Some(event) = m.poll_event() {
        if let MemberEvent::Query(query) = &event {
            incoming = Some(query.clone());
        }
        events.push(event);
    }
    assert!(
        matches!(&events[0], MemberEvent::User(e) if e.name == "hello" && e.payload == b"world")
    );
    let query = incoming.expect("the asker matches its own query");
    assert_eq!((query.id, query.origin.as_str()), (id, "solo"));
    assert_eq!(
        m.poll_query_update(),
        Some(QueryUpdate::Ack {
            id,
            from: "solo".into()
        })
    );
    m.respond(id, b"pong", now).unwrap();
    assert_eq!(
        m.respond(id, b"again", now),
        Err(RequestError::UnknownQuery(id)),
        "one answer per query"
    );
    assert_eq!(
        m.poll_query_update(),
        Some(QueryUpdate::Response {
            id,
            from: "solo".into(),
            payload: b"pong".to_vec()
        })
    );
    m.handle_timeout(now + Duration::from_secs(3));
    assert_eq!(m.poll_query_update(), Some(QueryUpdate::Done { id }));
}

#[test]
fn answers_after_the_deadline_are_refused() {
    let (mut m, now) = core("late", 3);
    let options = QueryOptions {
        timeout: Some(Duration::from_secs(1)),
        ..QueryOptions::default()
    };
    let id = m.query("slow", b"", options, now).unwrap();
    assert_eq!(
        m.respond(id, b"", now + Duration::from_millis(1500)),
        Err(RequestError::QueryExpired)
    );
}

#[test]
fn pending_queries_are_bounded() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 4));
    let mut config = MembershipConfig::new("busy", addr);
    config.limits.max_pending_queries = 2;
    let now = Instant::now();
    let mut m = Membership::new(config, [1; 32], now).unwrap();
    m.query("a", b"", QueryOptions::default(), now).unwrap();
    m.query("b", b"", QueryOptions::default(), now).unwrap();
    assert_eq!(
        m.query("c", b"", QueryOptions::default(), now),
        Err(RequestError::TooManyPendingQueries { limit: 2 })
    );
}

#[test]
fn leaving_alone_completes_at_once_and_refuses_further_requests() {
    let (mut m, now) = core("gone", 5);
    m.leave(now);
    assert!(m.has_left());
    assert_eq!(m.local_member().status, MemberStatus::Left);
    assert_eq!(
        m.poll_timeout(),
        None,
        "a member that left has nothing left to do"
    );
    assert_eq!(m.user_event("e", b"", false, now), Err(RequestError::Left));
    assert_eq!(m.update_tags(Tags::new(), now), Err(RequestError::Left));
    assert_eq!(
        m.join(&[SocketAddr::from(([127, 0, 0, 1], 9))], now),
        Err(RequestError::Left)
    );
}

#[test]
fn join_announces_to_each_seed_and_backs_off() {
    let (mut m, now) = core("joiner", 6);
    let seeds = [
        SocketAddr::from(([127, 0, 0, 1], 10)),
        SocketAddr::from(([127, 0, 0, 1], 11)),
    ];
    m.join(&seeds, now).unwrap();
    let first: Vec<SocketAddr> = std::iter::from_fn(|| m.poll_transmit())
        .map(|t| t.dst)
        .collect();
    assert_eq!(first, seeds);
    // Retries at 1 s, then 2 s later, then 4 s later (doubling up to 30 s).
    let mut announces_at = Vec::new();
    for ms in (0..=8000).step_by(100) {
        m.handle_timeout(now + Duration::from_millis(ms));
        let sent = std::iter::from_fn(|| m.poll_transmit())
            .filter(|t| seeds.contains(&t.dst))
            .count();
        if sent > 0 {
            announces_at.push(ms);
        }
    }
    assert_eq!(announces_at, vec![1000, 3000, 7000]);
    assert_eq!(m.join_attempts(), Some(4));
    m.cancel_join();
    assert_eq!(m.join_attempts(), None);
}

#[test]
fn output_and_dissemination_queues_are_bounded_and_count_what_they_drop() {
    let addr = SocketAddr::from(([127, 0, 0, 1], 7));
    let mut config = MembershipConfig::new("bounded", addr);
    config.limits.max_pending_events = 2;
    config.limits.max_broadcast_queue = 2;
    let now = Instant::now();
    let mut m = Membership::new(config, [3; 32], now).unwrap();
    // The queue already holds our tags; each event is queued for dissemination as well.
    for i in 0..3u8 {
        m.user_event("e", &[i], false, now).unwrap();
    }
    let delivered = std::iter::from_fn(|| m.poll_event()).count();
    assert_eq!(delivered, 2);
    assert_eq!(m.stats().dropped(DropReason::EventQueueFull), 1);
    assert_eq!(m.stats().dropped(DropReason::BroadcastQueueFull), 2);
}
