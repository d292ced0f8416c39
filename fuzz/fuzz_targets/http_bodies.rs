//! The HTTP admin API's request bodies and query strings, parsed as axum parses them and checked
//! as the handlers check them, then handed to what the handlers hand them to: gossip events,
//! queries (with their tag patterns) and tags to a membership core, key-value writes to the
//! store's validation and a store, joins to the forwarded request. Every parser sees every input.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use skiff::http_api::{
    check_key, merge_tags, EventRequest, PutBody, QueryRequest, RaftNodeRequest, StoreOptions,
    TagChanges, DEFAULT_LIST_LIMIT,
};
use skiff_gossip::{Membership, MembershipConfig, Tags};
use skiff_raft::kv::{self, KvOp, KvStore};
use skiff_raft::ForwardRequest;

fn member(now: Instant) -> Membership {
    let mut config = MembershipConfig::new("fuzzed", "127.0.0.1:7946".parse().unwrap());
    config.tags = Tags::from([("role".to_string(), "broker".to_string())]);
    Membership::new(config, [1; 32], now).expect("a valid configuration")
}

fuzz_target!(|data: &[u8]| {
    let now = Instant::now();
    if let Ok(event) = serde_json::from_slice::<EventRequest>(data) {
        let _ = member(now).user_event(&event.name, event.payload.as_bytes(), event.coalesce, now);
    }
    if let Ok(query) = serde_json::from_slice::<QueryRequest>(data) {
        if let Ok(options) = query.options() {
            let _ = member(now).query(&query.name, query.payload.as_bytes(), options, now);
        }
    }
    if let Ok(changes) = serde_json::from_slice::<TagChanges>(data) {
        let mut member = member(now);
        if let Ok(tags) = merge_tags(member.local_member().tags, changes) {
            let _ = member.update_tags(tags, now);
        }
    }
    if let Ok(request) = serde_json::from_slice::<RaftNodeRequest>(data) {
        let node_id = request.node_id;
        if let Ok(raft_addr) = request.join_address() {
            let forward = ForwardRequest::Join { node_id, raft_addr };
            serde_json::to_vec(&forward).expect("a join request serializes");
        }
    }
    let mut store = KvStore::default();
    if let Ok(body) = serde_json::from_slice::<PutBody>(data) {
        if check_key(&body.key).is_ok() {
            let op = KvOp::Put {
                key: body.key,
                value: body.value,
                cas: body.cas,
            };
            if kv::validate(&op).is_ok() {
                store.apply(&op);
            }
        }
    }
    if let Ok(options) = serde_urlencoded::from_bytes::<StoreOptions>(data) {
        let prefix = options.prefix.unwrap_or_default();
        store.list(&prefix, options.limit.unwrap_or(DEFAULT_LIST_LIMIT));
    }
});
