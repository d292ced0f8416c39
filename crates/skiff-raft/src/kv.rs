//! The replicated key-value store: its own key space in the state machine, versioned like etcd
//! (every applied write takes the next store revision; a key carries the revisions that created
//! and last modified it), with compare-and-set.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 1024;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024 * 1024;
/// Most items one list returns.
pub const MAX_LIST_LIMIT: usize = 10_000;

/// One write. `cas`: `Some(0)` only if the key is absent, `Some(v)` only if its version is `v`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvOp {
    Put {
        key: String,
        value: String,
        cas: Option<u64>,
    },
    Delete {
        key: String,
        cas: Option<u64>,
    },
}

impl KvOp {
    pub fn key(&self) -> &str {
        match self {
            KvOp::Put { key, .. } | KvOp::Delete { key, .. } => key,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvEntry {
    pub value: String,
    /// Store revision of the write that created the key.
    pub create_revision: u64,
    /// Store revision of the last write: the key's version.
    pub version: u64,
}

/// What one write did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum KvWriteResult {
    Put {
        version: u64,
        created: bool,
    },
    Deleted {
        existed: bool,
    },
    /// The compare-and-set did not match; `current` is the key's version (None: absent).
    CasFailed {
        current: Option<u64>,
    },
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct KvStore {
    entries: BTreeMap<String, KvEntry>,
    /// Revision of the last applied write. Each write of a batch gets its own, so no two writes
    /// share a version and a compare-and-set never mistakes another write for its own.
    revision: u64,
}

impl KvStore {
    pub fn get(&self, key: &str) -> Option<&KvEntry> {
        self.entries.get(key)
    }

    /// Up to `limit` (at most `MAX_LIST_LIMIT`) entries whose key starts with `prefix`, in key
    /// order, and whether more exist.
    pub fn list(&self, prefix: &str, limit: usize) -> (Vec<(String, KvEntry)>, bool) {
        let limit = limit.min(MAX_LIST_LIMIT);
        let mut matching = self
            .entries
            .range(prefix.to_owned()..)
            .take_while(|(k, _)| k.starts_with(prefix));
        let items: Vec<(String, KvEntry)> = matching
            .by_ref()
            .take(limit)
            .map(|(k, e)| (k.clone(), e.clone()))
            .collect();
        (items, matching.next().is_some())
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Applies one write. Deterministic: every node applies the same writes in log order and
    /// gets the same results and revisions.
    pub fn apply(&mut self, op: &KvOp) -> KvWriteResult {
        let current = self.entries.get(op.key()).map(|e| e.version);
        let cas = match op {
            KvOp::Put { cas, .. } | KvOp::Delete { cas, .. } => *cas,
        };
        if let Some(expected) = cas {
            if current.unwrap_or(0) != expected {
                return KvWriteResult::CasFailed { current };
            }
        }
        match op {
            KvOp::Put { key, value, .. } => {
                self.revision += 1;
                let revision = self.revision;
                let create_revision = self
                    .entries
                    .get(key)
                    .map_or(revision, |e| e.create_revision);
                self.entries.insert(
                    key.clone(),
                    KvEntry {
                        value: value.clone(),
                        create_revision,
                        version: revision,
                    },
                );
                KvWriteResult::Put {
                    version: revision,
                    created: current.is_none(),
                }
            }
            KvOp::Delete { key, .. } => {
                let existed = self.entries.remove(key).is_some();
                if existed {
                    self.revision += 1;
                }
                KvWriteResult::Deleted { existed }
            }
        }
    }
}

/// Checks a write before it is proposed: sizes and an empty key.
pub fn validate(op: &KvOp) -> Result<(), KvInvalid> {
    let key = op.key();
    if key.is_empty() {
        return Err(KvInvalid::EmptyKey);
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(KvInvalid::TooLarge(format!(
            "key of {} bytes exceeds {MAX_KEY_BYTES}",
            key.len()
        )));
    }
    if let KvOp::Put { value, .. } = op {
        if value.len() > MAX_VALUE_BYTES {
            return Err(KvInvalid::TooLarge(format!(
                "value of {} bytes exceeds {MAX_VALUE_BYTES}",
                value.len()
            )));
        }
    }
    Ok(())
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KvInvalid {
    #[error("the key is empty")]
    EmptyKey,
    #[error("{0}")]
    TooLarge(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    fn put(key: &str, value: &str, cas: Option<u64>) -> KvOp {
        KvOp::Put {
            key: key.into(),
            value: value.into(),
            cas,
        }
    }

    #[test]
    fn every_write_takes_the_next_revision_and_cas_compares_versions() {
        let mut store = KvStore::default();
        assert_eq!(
            store.apply(&put("a", "1", Some(0))),
            KvWriteResult::Put {
                version: 1,
                created: true
            }
        );
        assert_eq!(
            store.apply(&put("a", "2", Some(0))),
            KvWriteResult::CasFailed { current: Some(1) }
        );
        assert_eq!(
            store.apply(&put("b", "1", None)),
            KvWriteResult::Put {
                version: 2,
                created: true
            }
        );
        assert_eq!(
            store.apply(&put("a", "2", Some(1))),
            KvWriteResult::Put {
                version: 3,
                created: false
            }
        );
        assert_eq!(store.get("a").unwrap().create_revision, 1);
        let delete = |cas| KvOp::Delete {
            key: "a".into(),
            cas,
        };
        assert_eq!(
            store.apply(&delete(Some(1))),
            KvWriteResult::CasFailed { current: Some(3) }
        );
        assert_eq!(
            store.apply(&delete(Some(3))),
            KvWriteResult::Deleted { existed: true }
        );
        assert_eq!(
            store.apply(&delete(None)),
            KvWriteResult::Deleted { existed: false }
        );
        assert_eq!(
            store.apply(&put("a", "x", Some(3))),
            KvWriteResult::CasFailed { current: None }
        );
        // A key deleted and written again never gets back a version it had.
        assert_eq!(
            store.apply(&put("a", "y", Some(0))),
            KvWriteResult::Put {
                version: 5,
                created: true
            }
        );
    }

    #[test]
    fn two_writes_of_one_key_in_a_batch_get_different_versions() {
        let mut store = KvStore::default();
        let first = store.apply(&put("a", "mine", None));
        store.apply(&put("a", "theirs", None));
        let KvWriteResult::Put { version: mine, .. } = first else {
            unreachable!()
        };
        assert_eq!(
            store.apply(&put("a", "overwrite", Some(mine))),
            KvWriteResult::CasFailed { current: Some(2) }
        );
    }

    #[test]
    fn list_is_by_prefix_in_key_order_with_a_limit() {
        let mut store = KvStore::default();
        for key in ["b/2", "a/1", "b/1", "b/3", "c"] {
            store.apply(&put(key, "v", None));
        }
        let (items, more) = store.list("b/", 2);
        let keys: Vec<&str> = items.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!((keys, more), (vec!["b/1", "b/2"], true));
        assert!(!store.list("b/", 3).1);
        assert_eq!(store.list("", 10).0.len(), 5);
    }

    #[test]
    fn a_list_never_returns_more_than_the_cap() {
        let mut store = KvStore::default();
        for i in 0..=MAX_LIST_LIMIT {
            store.apply(&put(&format!("k{i}"), "v", None));
        }
        let (items, more) = store.list("", usize::MAX);
        assert_eq!((items.len(), more), (MAX_LIST_LIMIT, true));
    }

    #[test]
    fn oversized_and_empty_keys_are_invalid() {
        assert_eq!(validate(&put("", "v", None)), Err(KvInvalid::EmptyKey));
        assert!(validate(&put(&"k".repeat(MAX_KEY_BYTES + 1), "v", None)).is_err());
        assert!(validate(&put("k", &"v".repeat(MAX_VALUE_BYTES + 1), None)).is_err());
        assert!(validate(&put("k", "v", None)).is_ok());
    }
}
