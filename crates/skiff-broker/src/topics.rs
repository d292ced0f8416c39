//! The topic registry of a single broker: names, ids, partition counts and config overrides,
//! persisted as one JSON file written atomically. It is the source of truth for which partition
//! logs exist; the Raft metadata image takes this role once the cluster exists.

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::producer_ids::write_atomically;
use crate::topic_config::TopicConfigs;

pub const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: TopicConfigs,
}

#[derive(Debug, Serialize, Deserialize)]
struct StoreFile {
    cluster_id: String,
    topics: Vec<TopicMeta>,
}

#[derive(Debug)]
pub struct TopicStore {
    path: PathBuf,
    cluster_id: String,
    topics: BTreeMap<String, TopicMeta>,
}

/// Kafka's rule: 1-249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name is {} characters long, the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' has the character {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

impl TopicStore {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        let path = data_dir.join("topics.json");
        match fs::read(&path) {
            Ok(bytes) => {
                let file: StoreFile = serde_json::from_slice(&bytes).map_err(|e| {
                    io::Error::new(
                        io::ErrorKind::InvalidData,
                        format!("{} is not a valid topic registry: {e}", path.display()),
                    )
                })?;
                Ok(Self {
                    path,
                    cluster_id: file.cluster_id,
                    topics: file
                        .topics
                        .into_iter()
                        .map(|t| (t.name.clone(), t))
                        .collect(),
                })
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                let store = Self {
                    path,
                    cluster_id: Uuid::new_v4().simple().to_string(),
                    topics: BTreeMap::new(),
                };
                store.save()?;
                Ok(store)
            }
            Err(e) => Err(e),
        }
    }

    fn save(&self) -> io::Result<()> {
        let file = StoreFile {
            cluster_id: self.cluster_id.clone(),
            topics: self.topics.values().cloned().collect(),
        };
        let json = serde_json::to_vec_pretty(&file).map_err(io::Error::other)?;
        write_atomically(&self.path, &json)
    }

    pub fn cluster_id(&self) -> &str {
        &self.cluster_id
    }

    pub fn get(&self, name: &str) -> Option<&TopicMeta> {
        self.topics.get(name)
    }

    pub fn by_id(&self, id: Uuid) -> Option<&TopicMeta> {
        self.topics.values().find(|t| t.id == id)
    }

    pub fn all(&self) -> impl Iterator<Item = &TopicMeta> {
        self.topics.values()
    }

    pub fn remove(&mut self, name: &str) -> io::Result<Option<TopicMeta>> {
        let Some(removed) = self.topics.remove(name) else {
            return Ok(None);
        };
        if let Err(e) = self.save() {
            self.topics.insert(removed.name.clone(), removed);
            return Err(e);
        }
        Ok(Some(removed))
    }

    /// Records a new topic or replaces one's partition count or configs; the caller has
    /// validated it. The change is undone in memory if it cannot be persisted.
    pub fn put(&mut self, topic: TopicMeta) -> io::Result<()> {
        let name = topic.name.clone();
        let previous = self.topics.insert(name.clone(), topic);
        if let Err(e) = self.save() {
            match previous {
                Some(previous) => self.topics.insert(name, previous),
                None => self.topics.remove(&name),
            };
            return Err(e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_A-b").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn registry_survives_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let mut store = TopicStore::open(dir.path()).unwrap();
        let cluster_id = store.cluster_id().to_string();
        let topic = TopicMeta {
            name: "t".into(),
            id: Uuid::new_v4(),
            partitions: 3,
            configs: TopicConfigs::default(),
        };
        store.put(topic.clone()).unwrap();
        let store = TopicStore::open(dir.path()).unwrap();
        assert_eq!(store.cluster_id(), cluster_id);
        assert_eq!(store.get("t"), Some(&topic));
        assert_eq!(store.by_id(topic.id), Some(&topic));
    }
}
