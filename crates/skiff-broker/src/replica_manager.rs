//! The partitions this broker hosts: one `Log` per partition, opened from the topic registry,
//! plus the wake-up that long-polling fetches wait on.
//!
//! Lock order: the topic registry's lock (in `KafkaApis`) before `partitions`, `partitions`
//! before a partition's log. A log's lock is held for one append or one index lookup, never
//! across an await or while record bytes are read.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_log::{Log, LogConfig, LogError};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::topics::TopicMeta;

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    log: Mutex<Log>,
}

impl Partition {
    pub fn log(&self) -> MutexGuard<'_, Log> {
        // A panic while holding the lock cannot leave the log half-written in a way a reader
        // could see: appends write the file before updating offsets. Keep serving.
        self.log
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

fn partition_dir(data_dir: &Path, topic: &str, partition: i32) -> PathBuf {
    data_dir.join(format!("{topic}-{partition}"))
}

pub struct ReplicaManager {
    data_dir: PathBuf,
    /// Topic name -> partitions by index; looked up by `&str` on every request, without
    /// allocating.
    partitions: RwLock<HashMap<String, Vec<Arc<Partition>>>>,
    appended: Notify,
}

impl ReplicaManager {
    /// Opens (recovering if needed) the log of every partition of `topics`, and removes partition
    /// directories of topics that were deleted but whose files outlived a crash.
    pub fn open<'a>(
        data_dir: &Path,
        topics: impl IntoIterator<Item = &'a TopicMeta>,
    ) -> Result<Self, LogError> {
        let manager = Self {
            data_dir: data_dir.to_path_buf(),
            partitions: RwLock::new(HashMap::new()),
            appended: Notify::new(),
        };
        let mut expected = HashSet::new();
        for topic in topics {
            for index in 0..topic.partitions {
                expected.insert(format!("{}-{index}", topic.name));
            }
            manager.add_partitions(topic, 0)?;
        }
        manager.remove_orphans(&expected)?;
        Ok(manager)
    }

    fn remove_orphans(&self, expected: &HashSet<String>) -> io::Result<()> {
        for entry in fs::read_dir(&self.data_dir)? {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let looks_like_partition = name
                .rsplit_once('-')
                .is_some_and(|(_, n)| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
            if entry.file_type()?.is_dir() && looks_like_partition && !expected.contains(&name) {
                warn!(dir = %name, "removing the log of a deleted topic");
                fs::remove_dir_all(entry.path())?;
            }
        }
        Ok(())
    }

    /// Opens or creates the logs of partitions `from..topic.partitions`.
    pub fn add_partitions(&self, topic: &TopicMeta, from: i32) -> Result<(), LogError> {
        let config = topic.configs.log_config();
        let now = now_ms();
        for index in from..topic.partitions {
            let dir = partition_dir(&self.data_dir, &topic.name, index);
            let (log, report) = Log::open(&dir, config.clone(), now)?;
            if report.truncated_bytes > 0 {
                warn!(topic = %topic.name, partition = index, ?report, "recovered a torn log tail");
            }
            let mut partitions = self.write_partitions();
            let logs = partitions.entry(topic.name.clone()).or_default();
            if logs.len() != index as usize {
                return Err(LogError::Io(io::Error::other(format!(
                    "topic '{}' has {} partition logs, cannot add partition {index}",
                    topic.name,
                    logs.len()
                ))));
            }
            logs.push(Arc::new(Partition {
                topic: topic.name.clone(),
                index,
                log: Mutex::new(log),
            }));
        }
        Ok(())
    }

    pub fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        self.remove_partitions_from(topic, 0)?;
        self.write_partitions().remove(topic);
        info!(topic, "deleted topic logs");
        Ok(())
    }

    /// Deletes the logs of partitions `from..` of `topic`.
    pub fn remove_partitions_from(&self, topic: &str, from: i32) -> Result<(), LogError> {
        let removed = self
            .write_partitions()
            .get_mut(topic)
            .map(|logs| logs.split_off((from.max(0) as usize).min(logs.len())))
            .unwrap_or_default();
        for partition in removed {
            let index = partition.index;
            match Arc::try_unwrap(partition) {
                Ok(partition) => partition
                    .log
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .delete()?,
                // A request still holds the partition; remove the files under it, the open
                // handles stay valid until it finishes.
                Err(_) => fs::remove_dir_all(partition_dir(&self.data_dir, topic, index))?,
            }
        }
        Ok(())
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(partition).ok()?;
        self.read_partitions().get(topic)?.get(index).cloned()
    }

    pub fn set_log_config(&self, topic: &str, partitions: i32, config: &LogConfig) {
        for index in 0..partitions {
            if let Some(partition) = self.get(topic, index) {
                partition.log().set_config(config.clone());
            }
        }
    }

    /// Wakes every long-polling fetch so it re-reads.
    pub fn notify_appended(&self) {
        self.appended.notify_waiters();
    }

    pub fn appended(&self) -> &Notify {
        &self.appended
    }

    /// Retention, compaction, segment age and `flush.ms` for every partition; gauges for
    /// `/metrics`. Compaction holds the partition's lock while it rewrites a segment.
    pub fn run_log_maintenance(&self) {
        let now = now_ms();
        let partitions: Vec<Arc<Partition>> =
            self.read_partitions().values().flatten().cloned().collect();
        for partition in partitions {
            let mut log = partition.log();
            match log.enforce_retention(now) {
                Ok(0) => {}
                Ok(deleted) => info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    deleted,
                    "retention deleted segments"
                ),
                Err(e) => {
                    warn!(topic = %partition.topic, partition = partition.index, error = %e, "retention failed")
                }
            }
            // A single broker's high watermark is its log end: every record is committed.
            match log.clean(now, i64::MAX) {
                Ok(stats) if stats.records_removed > 0 => info!(
                    topic = %partition.topic,
                    partition = partition.index,
                    removed = stats.records_removed,
                    bytes_before = stats.bytes_before,
                    bytes_after = stats.bytes_after,
                    "compacted"
                ),
                Ok(_) => {}
                Err(e) => {
                    warn!(topic = %partition.topic, partition = partition.index, error = %e, "compaction failed")
                }
            }
            if let Err(e) = log.flush_if_due(now) {
                warn!(topic = %partition.topic, partition = partition.index, error = %e, "flush failed");
            }
            let labels = [
                ("topic", partition.topic.clone()),
                ("partition", partition.index.to_string()),
            ];
            metrics::gauge!("skiff_log_end_offset", &labels).set(log.log_end_offset() as f64);
            metrics::gauge!("skiff_log_start_offset", &labels).set(log.log_start_offset() as f64);
            metrics::gauge!("skiff_log_size_bytes", &labels).set(log.size_bytes() as f64);
        }
    }

    /// Flushes and closes every log so the next start needs no recovery.
    pub fn close_all(&self) {
        let partitions: Vec<_> = self
            .write_partitions()
            .drain()
            .flat_map(|(_, partitions)| partitions)
            .collect();
        for partition in partitions {
            let (topic, index) = (partition.topic.clone(), partition.index);
            let result = match Arc::try_unwrap(partition) {
                Ok(partition) => partition
                    .log
                    .into_inner()
                    .unwrap_or_else(|p| p.into_inner())
                    .close(),
                Err(partition) => partition.log().flush(),
            };
            if let Err(e) = result {
                warn!(topic, partition = index, error = %e, "closing log failed");
            }
        }
    }

    fn read_partitions(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Arc<Partition>>>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_partitions(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Arc<Partition>>>> {
        self.partitions.write().unwrap_or_else(|p| p.into_inner())
    }
}
