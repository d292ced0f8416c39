//! What the HTTP admin API accepts: the JSON bodies of `/v1/event`, `/v1/query`, `/v1/tags`,
//! `/raft/join`, `/raft/remove` and `POST /store`, the query string of `/store`, and the checks
//! each gets before it reaches gossip, Raft or the key-value store. The handlers in `http.rs` use
//! these; they are parsed as axum does (`serde_json` for bodies, `serde_urlencoded` for queries).

use std::collections::BTreeMap;
use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;
use skiff_gossip::{tag, QueryFilter, QueryOptions, Tags};
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

/// Tags the broker sets itself, from which the cluster knows who it is: changing them at
/// runtime would make the controller take it for another broker or a restarted one.
const RESERVED_TAGS: [&str; 8] = [
    tag::NODE_ID,
    tag::KAFKA_ADDR,
    tag::RAFT_ADDR,
    tag::CLUSTER_ID,
    tag::HTTP_ADDR,
    tag::ROLE,
    tag::VERSION,
    tag::RUN,
];

/// `current` with `changes` applied, or why they are refused.
pub fn merge_tags(mut current: Tags, changes: TagChanges) -> Result<Tags, String> {
    if let Some(key) = changes.keys().find(|k| RESERVED_TAGS.contains(&k.as_str())) {
        return Err(format!(
            "tag '{key}' is set by the broker itself; reserved: {}",
            RESERVED_TAGS.join(", ")
        ));
    }
    for (key, value) in changes {
        if value.is_empty() {
            current.remove(&key);
        } else {
            current.insert(key, value);
        }
    }
    Ok(current)
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_the_broker_sets_cannot_be_changed_at_runtime() {
        let current: Tags = [("run".to_string(), "1".to_string())].into();
        let merged = merge_tags(current.clone(), [("rack".into(), "r2".into())].into()).unwrap();
        assert_eq!(merged.get("rack").map(String::as_str), Some("r2"));
        for key in ["run", "id", "kafka"] {
            assert!(merge_tags(current.clone(), [(key.into(), String::new())].into()).is_err());
        }
    }
}
