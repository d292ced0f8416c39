//! The partitions this broker hosts: one `Log` per partition, opened and closed as the metadata
//! image assigns them (see `metadata_publisher`), plus the wake-up that long-polling fetches
//! wait on.
//!
//! Lock order: `partitions` before a partition's state, then its log. A log's lock is held for one append or one index lookup, never
//! across an await or while record bytes are read.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_log::{Log, LogError};
use tokio::sync::Notify;
use tracing::{info, warn};

use crate::topic_config::TopicConfigs;

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// What the metadata image says about a hosted partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    /// The topic's id: a directory left by a deleted topic of the same name is not reused.
    pub topic_id: uuid::Uuid,
    /// This broker is the partition's leader and serves produce and fetch for it.
    pub leading: bool,
    pub leader_epoch: i32,
    pub configs: Arc<TopicConfigs>,
}

pub struct Partition {
    pub topic: String,
    pub index: i32,
    state: RwLock<PartitionState>,
    log: Mutex<Log>,
}

impl Partition {
    pub fn state(&self) -> PartitionState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The leader epoch when this broker leads the partition.
    pub fn leader_epoch_if_leading(&self) -> Option<i32> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.leading.then_some(state.leader_epoch)
    }

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

/// The file naming the topic id a partition directory belongs to, as Kafka's
/// `partition.metadata`.
const TOPIC_ID_FILE: &str = "topic-id";

/// Makes `dir` the directory of a partition of topic `topic_id`. A directory left by a deleted
/// topic of the same name (deleted while this broker was down, past a metadata snapshot) is
/// removed first, so its records never appear in the new topic.
fn claim_for_topic(dir: &Path, topic_id: uuid::Uuid) -> Result<(), LogError> {
    let marker = dir.join(TOPIC_ID_FILE);
    match fs::read_to_string(&marker) {
        Ok(found) if found.trim() == topic_id.to_string() => return Ok(()),
        Ok(found) => {
            warn!(dir = %dir.display(), old = found.trim(), new = %topic_id, "removing the log of a deleted topic with the same name");
            fs::remove_dir_all(dir)?;
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(LogError::Io(e)),
    }
    fs::create_dir_all(dir)?;
    let staged = dir.join(format!("{TOPIC_ID_FILE}.tmp"));
    fs::write(&staged, topic_id.to_string())?;
    fs::File::open(&staged)?.sync_all()?;
    fs::rename(&staged, &marker)?;
    fs::File::open(dir)?.sync_all()?;
    Ok(())
}

pub struct ReplicaManager {
    data_dir: PathBuf,
    /// Topic name -> partitions by index; looked up by `&str` on every request, without
    /// allocating.
    partitions: RwLock<HashMap<String, Vec<Option<Arc<Partition>>>>>,
    appended: Notify,
}

impl ReplicaManager {
    /// Starts with no partitions: the metadata publisher opens the logs the image assigns here.
    pub fn new(data_dir: &Path) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            partitions: RwLock::new(HashMap::new()),
            appended: Notify::new(),
        }
    }

    /// Opens (recovering if needed) or creates the log of one partition, or updates the state
    /// of one already open.
    pub fn host_partition(
        &self,
        topic: &str,
        index: i32,
        state: PartitionState,
    ) -> Result<(), LogError> {
        // The image admits no other index; a slot per index is allocated below.
        let slot = usize::try_from(index)
            .ok()
            .filter(|_| index < skiff_metadata::topic_rules::MAX_PARTITIONS_PER_TOPIC)
            .ok_or_else(|| {
                LogError::Io(std::io::Error::other(format!(
                    "partition index {index} is out of range"
                )))
            })?;
        if let Some(existing) = self.get(topic, index) {
            // Every image change reaches every hosted partition; only real changes take the
            // locks that produce and fetch also take.
            let current = existing.state();
            if current == state {
                return Ok(());
            }
            if current.configs != state.configs {
                existing.log().set_config(state.configs.log_config());
            }
            *existing.state.write().unwrap_or_else(|p| p.into_inner()) = state;
            return Ok(());
        }
        let dir = partition_dir(&self.data_dir, topic, index);
        claim_for_topic(&dir, state.topic_id)?;
        let (log, report) = Log::open(&dir, state.configs.log_config(), now_ms())?;
        if report.truncated_bytes > 0 {
            warn!(
                topic,
                partition = index,
                ?report,
                "recovered a torn log tail"
            );
        }
        let mut partitions = self.write_partitions();
        let logs = partitions.entry(topic.to_owned()).or_default();
        if logs.len() <= slot {
            logs.resize(slot + 1, None);
        }
        logs[slot] = Some(Arc::new(Partition {
            topic: topic.to_owned(),
            index,
            state: RwLock::new(state),
            log: Mutex::new(log),
        }));
        Ok(())
    }

    pub fn delete_topic(&self, topic: &str) -> Result<(), LogError> {
        let removed = self.write_partitions().remove(topic).unwrap_or_default();
        for partition in removed.into_iter().flatten() {
            self.delete_log(partition)?;
        }
        info!(topic, "deleted topic logs");
        Ok(())
    }

    /// Deletes the log of one partition that is no longer assigned here.
    pub fn remove_partition(&self, topic: &str, index: i32) -> Result<(), LogError> {
        let removed = usize::try_from(index).ok().and_then(|slot| {
            self.write_partitions()
                .get_mut(topic)
                .and_then(|logs| logs.get_mut(slot).and_then(Option::take))
        });
        match removed {
            Some(partition) => self.delete_log(partition),
            None => Ok(()),
        }
    }

    fn delete_log(&self, partition: Arc<Partition>) -> Result<(), LogError> {
        let (topic, index) = (partition.topic.clone(), partition.index);
        match Arc::try_unwrap(partition) {
            Ok(partition) => partition
                .log
                .into_inner()
                .unwrap_or_else(|p| p.into_inner())
                .delete()?,
            // A request still holds the partition; remove the files under it, the open
            // handles stay valid until it finishes.
            Err(_) => fs::remove_dir_all(partition_dir(&self.data_dir, &topic, index))?,
        }
        Ok(())
    }

    /// Every hosted partition as (topic, index).
    pub fn hosted(&self) -> Vec<(String, i32)> {
        self.read_partitions()
            .values()
            .flatten()
            .flatten()
            .map(|p| (p.topic.clone(), p.index))
            .collect()
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(partition).ok()?;
        self.read_partitions().get(topic)?.get(index)?.clone()
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
        let partitions: Vec<Arc<Partition>> = self
            .read_partitions()
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect();
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
            .flatten()
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

    #[cfg(test)]
    fn dir_of(&self, topic: &str, index: i32) -> PathBuf {
        partition_dir(&self.data_dir, topic, index)
    }

    fn read_partitions(
        &self,
    ) -> std::sync::RwLockReadGuard<'_, HashMap<String, Vec<Option<Arc<Partition>>>>> {
        self.partitions.read().unwrap_or_else(|p| p.into_inner())
    }

    fn write_partitions(
        &self,
    ) -> std::sync::RwLockWriteGuard<'_, HashMap<String, Vec<Option<Arc<Partition>>>>> {
        self.partitions.write().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(topic_id: uuid::Uuid) -> PartitionState {
        PartitionState {
            topic_id,
            leading: true,
            leader_epoch: 0,
            configs: Arc::new(TopicConfigs::default()),
        }
    }

    #[test]
    fn a_deleted_topics_directory_is_not_reused_by_a_new_topic_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let replicas = ReplicaManager::new(dir.path());
        replicas.host_partition("t", 0, state(old)).unwrap();
        std::fs::write(replicas.dir_of("t", 0).join("leftover"), b"x").unwrap();
        replicas.close_all();

        // The same id keeps the directory; another id of the same name starts empty.
        let replicas = ReplicaManager::new(dir.path());
        replicas.host_partition("t", 0, state(old)).unwrap();
        assert!(replicas.dir_of("t", 0).join("leftover").exists());
        replicas.close_all();
        let replicas = ReplicaManager::new(dir.path());
        replicas.host_partition("t", 0, state(new)).unwrap();
        assert!(!replicas.dir_of("t", 0).join("leftover").exists());
    }
}
