//! What the HTTP admin API accepts: the JSON bodies of `/v1/event`, `/v1/query`, `/v1/tags`,
//! `/raft/join`, `/raft/remove` and `POST /store`, the query string of `/store`, and the checks
//! each gets before it reaches gossip, Raft or the key-value store. The handlers in `http.rs` use
//! these; they are parsed as axum does (`serde_json` for bodies, `serde_urlencoded` for queries).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use skiff_gossip::{QueryFilter, QueryOptions, Tags};
use skiff_raft::kv::MAX_KEY_BYTES;

/// Longest a `/v1/query` may collect answers.
pub const MAX_QUERY_TIMEOUT: Duration = Duration::from_secs(300);

/// Items a `/store` list returns when no limit is given.
pub const DEFAULT_LIST_LIMIT: usize = 1000;

/// `POST /v1/event`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventRequest {
    pub name: String,
    #[serde(default)]
    pub payload: String,
    #[serde(default)]
    pub coalesce: bool,
}

/// `POST /v1/query`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueryRequest {
    pub name: String,
    #[serde(default)]
    pub payload: String,
    pub timeout_ms: Option<u64>,
    /// Only these members answer.
    #[serde(default)]
    pub nodes: Vec<String>,
    /// Only members whose tags match these regular expressions answer.
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
}

impl QueryRequest {
    /// The gossip query's options, or why the request is refused; gossip checks the rest
    /// (sizes, filter counts, patterns).
    pub fn options(&self) -> Result<QueryOptions, String> {
        let timeout = self.timeout_ms.map(Duration::from_millis);
        if timeout.is_some_and(|t| t > MAX_QUERY_TIMEOUT) {
            return Err(format!(
                "timeout_ms may be at most {}",
                MAX_QUERY_TIMEOUT.as_millis()
            ));
        }
        let mut filter = QueryFilter::default();
        for node in &self.nodes {
            filter = filter.node(node);
        }
        for (key, pattern) in &self.tags {
            filter = filter.tag_matches(key, pattern);
        }
        Ok(QueryOptions {
            filter,
            timeout,
            request_ack: true,
        })
    }
}

/// `PUT /v1/tags`: tags to set over the current ones; an empty value removes a tag.
pub type TagChanges = BTreeMap<String, String>;

/// `current` with `changes` applied.
pub fn merge_tags(mut current: Tags, changes: TagChanges) -> Tags {
    for (key, value) in changes {
        if value.is_empty() {
            current.remove(&key);
        } else {
            current.insert(key, value);
        }
    }
    current
}

/// `POST /raft/join` and `POST /raft/remove`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RaftNodeRequest {
    pub node_id: u64,
    #[serde(default)]
    pub raft_address: Option<String>,
}

impl RaftNodeRequest {
    /// The Raft address a join needs, or why it is refused.
    pub fn join_address(self) -> Result<String, String> {
        let Some(raft_addr) = self.raft_address.filter(|a| !a.trim().is_empty()) else {
            return Err("raft_address is required".into());
        };
        if raft_addr.parse::<std::net::SocketAddr>().is_err() && !raft_addr.contains(':') {
            return Err(format!("raft_address {raft_addr:?} is not HOST:PORT"));
        }
        Ok(raft_addr)
    }
}

/// The query string of `/store` and `/store/{key}`.
#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoreOptions {
    pub cas: Option<u64>,
    pub consistency: Option<String>,
    pub prefix: Option<String>,
    pub limit: Option<usize>,
}

/// `POST /store`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PutBody {
    pub key: String,
    pub value: String,
    pub cas: Option<u64>,
}

/// Why a request is refused before it reaches the store.
pub type Refusal = (StatusCode, String);

pub fn check_key(key: &str) -> Result<(), Refusal> {
    if key.is_empty() {
        return Err((StatusCode::BAD_REQUEST, "the key is empty".into()));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err((
            StatusCode::PAYLOAD_TOO_LARGE,
            format!("key of {} bytes exceeds {MAX_KEY_BYTES}", key.len()),
        ));
    }
    Ok(())
}
