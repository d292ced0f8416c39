//! The partitions this broker hosts: one `Log` per partition, opened and closed as the metadata
//! image assigns them (see `metadata_publisher`), plus the wake-up that long-polling fetches
//! wait on.
//!
//! No blocking file I/O runs on an async worker: a request handler waits for a partition's log
//! lock asynchronously (`log_io`), then does its file work on the blocking pool, so a partition
//! whose disk is stuck holds one blocking thread, and requests for other partitions, Raft and
//! every connection keep going. A replica fetch, which touches many partitions, takes the logs
//! no one holds in one blocking task and waits for the others as `log_io` does (`logs_io`). Code already off the workers (the metadata publisher's thread,
//! log maintenance, group timers) takes the lock with `log_blocking`, which refuses to run on an
//! async worker.
//!
//! Lock order: the metadata publisher's pending work, then `partitions`, then a partition's
//! state, then its log, then its pending config. A log's lock is held for one append or one
//! index lookup, never while record bytes are read for a fetch; no std lock is held across an
//! await.

use std::collections::HashMap;
use std::fs;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, Mutex, RwLock};
use std::time::{SystemTime, UNIX_EPOCH};

use skiff_log::{Log, LogConfig, LogError};
use tokio::sync::futures::Notified;
use tokio::sync::{watch, Notify, OwnedMutexGuard, Semaphore};
use tracing::{info, warn};

use crate::replication::{Context, Replica};
use crate::topic_config::TopicConfigs;

/// Milliseconds since the Unix epoch, the clock Kafka timestamps use.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// Most blocking log operations of requests running at once. A partition runs at most one
/// under its lock; the rest are fetches reading bytes after releasing it. A request that gives
/// up while waiting frees its place, so a stuck disk cannot pile up threads without bound.
const MAX_BLOCKING_LOG_IO: usize = 64;

/// What the metadata image says about a hosted partition.
#[derive(Debug, Clone, PartialEq)]
pub struct PartitionState {
    /// The topic's id: a directory left by a deleted topic of the same name is not reused.
    pub topic_id: uuid::Uuid,
    /// This broker is the partition's leader and serves produce and fetch for it.
    pub leading: bool,
    /// None when the partition is offline.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    pub configs: Arc<TopicConfigs>,
}

/// A partition's log, locked by its owner; the pending config is applied first.
pub type LogGuard = OwnedMutexGuard<Log>;

pub struct Partition {
    pub topic: String,
    pub index: i32,
    state: RwLock<PartitionState>,
    /// An async lock: a handler waiting for a log held by a slow disk operation yields its
    /// worker instead of blocking it.
    log: Arc<tokio::sync::Mutex<Log>>,
    /// A config change the metadata publisher saw, for whoever next holds the log: the
    /// publisher never waits for a log lock.
    pending_config: Mutex<Option<LogConfig>>,
    /// The replication role as last settled (`replication`); changed with the log held.
    pub(crate) replica: Mutex<Replica>,
    pub(crate) high_watermark: watch::Sender<i64>,
    /// Woken by every append to this log and every rise of its high watermark: long-polling
    /// fetches of this partition wait on it, so an append wakes only the fetches it concerns.
    changed: Notify,
    pub(crate) context: Context,
}

impl Partition {
    fn new(topic: &str, index: i32, state: PartitionState, log: Log, context: Context) -> Self {
        // Until settled, what this log holds up to its start is all that is known committed.
        let (high_watermark, _) = watch::channel(log.log_start_offset());
        Self {
            topic: topic.to_owned(),
            index,
            state: RwLock::new(state),
            log: Arc::new(tokio::sync::Mutex::new(log)),
            pending_config: Mutex::new(None),
            replica: Mutex::new(Replica::new()),
            high_watermark,
            changed: Notify::new(),
            context,
        }
    }

    /// Wakes the long-polling fetches of this partition so they read again.
    pub fn notify_changed(&self) {
        self.changed.notify_waiters();
    }

    pub fn topic_id(&self) -> uuid::Uuid {
        self.state
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .topic_id
    }

    pub fn state(&self) -> PartitionState {
        self.state.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// The leader epoch when the image says this broker leads the partition.
    pub fn leader_epoch_if_leading(&self) -> Option<i32> {
        let state = self.state.read().unwrap_or_else(|p| p.into_inner());
        state.leading.then_some(state.leader_epoch)
    }

    /// The log, for code running off the async workers (it panics on one, where waiting for a
    /// slow disk would stall every task of that worker).
    pub fn log_blocking(&self) -> LogGuard {
        let log = self.log.clone().blocking_lock_owned();
        let mut log = self.with_pending_config(log);
        self.settle(&mut log);
        log
    }

    /// The log when no one holds it, for code running off the async workers.
    fn try_log_blocking(&self) -> Option<LogGuard> {
        let log = self.log.clone().try_lock_owned().ok()?;
        let mut log = self.with_pending_config(log);
        self.settle(&mut log);
        Some(log)
    }

    /// The log's size, kept in memory: no file is read.
    pub async fn size_bytes(&self) -> u64 {
        self.log.lock().await.size_bytes()
    }

    async fn lock_log(&self) -> LogGuard {
        let log = self.log.clone().lock_owned().await;
        self.with_pending_config(log)
    }

    fn with_pending_config(&self, mut log: LogGuard) -> LogGuard {
        let pending = self
            .pending_config
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(config) = pending {
            log.set_config(config);
        }
        log
    }

    /// Updates what the image says about this partition, in memory only. A change of
    /// leadership wakes the long polls, which then answer NOT_LEADER_OR_FOLLOWER or
    /// FENCED_LEADER_EPOCH at once instead of at their deadline.
    pub fn set_state(&self, state: PartitionState) {
        let mut current = self.state.write().unwrap_or_else(|p| p.into_inner());
        if current.configs != state.configs {
            *self
                .pending_config
                .lock()
                .unwrap_or_else(|p| p.into_inner()) = Some(state.configs.log_config());
        }
        let leadership_changed =
            current.leading != state.leading || current.leader_epoch != state.leader_epoch;
        *current = state;
        drop(current);
        if leadership_changed {
            self.notify_changed();
        }
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

/// The slot of partition `index`: the image admits no other index, and a slot per index is
/// allocated.
fn slot_of(index: i32) -> Result<usize, LogError> {
    usize::try_from(index)
        .ok()
        .filter(|_| index < skiff_metadata::topic_rules::MAX_PARTITIONS_PER_TOPIC)
        .ok_or_else(|| {
            LogError::Io(std::io::Error::other(format!(
                "partition index {index} is out of range"
            )))
        })
}

pub struct ReplicaManager {
    data_dir: PathBuf,
    context: Context,
    /// Topic name -> partitions by index; looked up by `&str` on every request, without
    /// allocating.
    partitions: RwLock<HashMap<String, Vec<Option<Arc<Partition>>>>>,
    /// Topic id -> name of the topics hosted here, for fetches between brokers (by id).
    names: RwLock<HashMap<uuid::Uuid, String>>,
    /// Woken whenever a partition starts being served.
    opened: Notify,
    blocking_io: Arc<Semaphore>,
}

/// Why a log operation of a request did not run.
#[derive(Debug, thiserror::Error)]
#[error("the broker is shutting down")]
pub struct ShuttingDown;

impl ReplicaManager {
    /// Starts with no partitions: the metadata publisher opens the logs the image assigns here.
    pub fn new(data_dir: &Path, context: Context) -> Self {
        Self {
            data_dir: data_dir.to_path_buf(),
            context,
            partitions: RwLock::new(HashMap::new()),
            names: RwLock::new(HashMap::new()),
            opened: Notify::new(),
            blocking_io: Arc::new(Semaphore::new(MAX_BLOCKING_LOG_IO)),
        }
    }

    /// Runs `io` on the blocking pool with the partition's log, waited for without holding a
    /// worker; `io` may release the log before its last file reads. The error only when the
    /// runtime shuts down before it ran.
    pub async fn log_io<T: Send + 'static>(
        &self,
        partition: &Arc<Partition>,
        io: impl FnOnce(LogGuard) -> T + Send + 'static,
    ) -> Result<T, ShuttingDown> {
        let mut log = partition.lock_log().await;
        let partition = partition.clone();
        self.on_blocking_pool(move || {
            partition.settle(&mut log);
            io(log)
        })
        .await
    }

    /// Runs `work` on the blocking pool under one of the `MAX_BLOCKING_LOG_IO` permits; a panic
    /// in it is resumed here.
    async fn on_blocking_pool<T: Send + 'static>(
        &self,
        work: impl FnOnce() -> T + Send + 'static,
    ) -> Result<T, ShuttingDown> {
        let permit = self
            .blocking_io
            .clone()
            .acquire_owned()
            .await
            .map_err(|_| ShuttingDown)?;
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work()
        })
        .await;
        match done {
            Ok(value) => Ok(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(ShuttingDown),
        }
    }

    /// Runs `io` with the log of each partition of `partitions` (and its argument) in turn, one
    /// held at a time, in one task on the blocking pool: a replica fetch touches every partition
    /// a follower shares with its leader, and one hop to the pool per partition made each round
    /// trip grow with their count (2.6 ms with 54 partitions, over a second with 204). A log
    /// someone else holds (a slow append, a stuck disk) is not waited for there, holding a
    /// thread and a permit, but afterwards, as `log_io` waits. Results are in `partitions`'
    /// order. The error only when the runtime shuts down.
    pub async fn logs_io<A: Send + 'static, T: Send + 'static>(
        &self,
        partitions: Vec<(Arc<Partition>, A)>,
        io: impl FnMut(&Arc<Partition>, A, LogGuard) -> T + Send + 'static,
    ) -> Result<Vec<T>, ShuttingDown> {
        if partitions.is_empty() {
            return Ok(Vec::new());
        }
        let (mut done, mut io, busy) = self
            .on_blocking_pool(move || {
                let mut io = io;
                let mut busy = Vec::new();
                let done: Vec<Option<T>> = partitions
                    .into_iter()
                    .enumerate()
                    .map(
                        |(index, (partition, argument))| match partition.try_log_blocking() {
                            Some(log) => Some(io(&partition, argument, log)),
                            None => {
                                busy.push((index, partition, argument));
                                None
                            }
                        },
                    )
                    .collect();
                (done, io, busy)
            })
            .await?;
        for (index, partition, argument) in busy {
            let held = partition.clone();
            let (value, returned) = self
                .log_io(&partition, move |log| (io(&held, argument, log), io))
                .await?;
            io = returned;
            done[index] = Some(value);
        }
        Ok(done.into_iter().flatten().collect())
    }

    /// Opens (recovering if needed) or creates the log of one partition, or updates the state
    /// of one already open, as the metadata publisher does in two steps.
    #[cfg(test)]
    pub fn host_partition(
        &self,
        topic: &str,
        index: i32,
        state: PartitionState,
    ) -> Result<(), LogError> {
        if self.update_hosted(topic, index, &state) {
            return Ok(());
        }
        let partition = self.open_log(topic, index, state)?;
        self.insert(partition)
    }

    /// Updates the state of a partition already open here, in memory; false when it is not
    /// open.
    pub fn update_hosted(&self, topic: &str, index: i32, state: &PartitionState) -> bool {
        let Some(existing) = self.get(topic, index) else {
            return false;
        };
        // Every image change reaches every hosted partition; only real changes take the lock
        // that produce and fetch also take.
        if existing.state() != *state {
            existing.set_state(state.clone());
        }
        true
    }

    /// Opens (recovering if needed) or creates the log of one partition without serving it
    /// yet (`insert` does). Blocking file I/O.
    pub fn open_log(
        &self,
        topic: &str,
        index: i32,
        state: PartitionState,
    ) -> Result<Partition, LogError> {
        slot_of(index)?;
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
        Ok(Partition::new(
            topic,
            index,
            state,
            log,
            self.context.clone(),
        ))
    }

    /// Serves an opened partition from now on.
    pub fn insert(&self, partition: Partition) -> Result<(), LogError> {
        let slot = slot_of(partition.index)?;
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .insert(partition.topic_id(), partition.topic.clone());
        let mut partitions = self.write_partitions();
        let logs = partitions.entry(partition.topic.clone()).or_default();
        if logs.len() <= slot {
            logs.resize(slot + 1, None);
        }
        logs[slot] = Some(Arc::new(partition));
        drop(partitions);
        self.opened.notify_waiters();
        Ok(())
    }

    /// Stops serving every partition of `topic`, in memory; `delete_logs` removes their files.
    /// Long polls waiting on them wake and find them gone.
    pub fn take_topic(&self, topic: &str) -> Vec<Arc<Partition>> {
        self.names
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|_, name| name != topic);
        let taken: Vec<Arc<Partition>> = self
            .write_partitions()
            .remove(topic)
            .unwrap_or_default()
            .into_iter()
            .flatten()
            .collect();
        taken.iter().for_each(|p| p.notify_changed());
        taken
    }

    /// Stops serving one partition, in memory; `delete_logs` removes its files. Long polls
    /// waiting on it wake and find it gone.
    pub fn take_partition(&self, topic: &str, index: i32) -> Option<Arc<Partition>> {
        let slot = usize::try_from(index).ok()?;
        let taken = self
            .write_partitions()
            .get_mut(topic)
            .and_then(|logs| logs.get_mut(slot).and_then(Option::take));
        if let Some(p) = &taken {
            p.notify_changed();
        }
        taken
    }

    /// Deletes the files of partitions no longer served. Blocking file I/O.
    pub fn delete_logs(&self, removed: Vec<Arc<Partition>>) {
        for partition in removed {
            let (topic, index) = (partition.topic.clone(), partition.index);
            match self.delete_log(partition) {
                Ok(()) => info!(topic, partition = index, "deleted partition log"),
                Err(e) => {
                    warn!(topic, partition = index, error = %e, "deleting a partition log failed")
                }
            }
        }
    }

    /// Deletes the files of a partition opened but never served.
    pub fn discard(&self, partition: Partition) {
        self.delete_logs(vec![Arc::new(partition)]);
    }

    fn delete_log(&self, partition: Arc<Partition>) -> Result<(), LogError> {
        let (topic, index) = (partition.topic.clone(), partition.index);
        let log = Arc::try_unwrap(partition)
            .ok()
            .and_then(|partition| Arc::try_unwrap(partition.log).ok());
        match log {
            Some(log) => log.into_inner().delete()?,
            // A request still holds the partition; remove the files under it, the open
            // handles stay valid until it finishes.
            None => fs::remove_dir_all(partition_dir(&self.data_dir, &topic, index))?,
        }
        Ok(())
    }

    /// The directory holding every partition's log (Kafka's one `log.dirs` entry).
    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// Every hosted partition.
    pub fn all(&self) -> Vec<Arc<Partition>> {
        self.read_partitions()
            .values()
            .flatten()
            .flatten()
            .cloned()
            .collect()
    }

    /// This broker's id.
    pub fn broker_id(&self) -> i32 {
        self.context.broker_id
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

    /// Partition `partition` of the topic with id `topic_id`, when hosted here.
    pub fn get_by_id(&self, topic_id: uuid::Uuid, partition: i32) -> Option<Arc<Partition>> {
        let name = self
            .names
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&topic_id)
            .cloned()?;
        self.get(&name, partition)
            .filter(|p| p.topic_id() == topic_id)
    }

    pub fn get(&self, topic: &str, partition: i32) -> Option<Arc<Partition>> {
        let index = usize::try_from(partition).ok()?;
        self.read_partitions().get(topic)?.get(index)?.clone()
    }

    /// Partition `index` of `topic` once it is served here, waiting until `deadline` for its log
    /// to be opened.
    pub async fn get_when_open(
        &self,
        topic: &str,
        index: i32,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<Partition>> {
        loop {
            // Registered before looking, so an insert in between still wakes us.
            let mut opened = std::pin::pin!(self.opened.notified());
            opened.as_mut().enable();
            if let Some(partition) = self.get(topic, index) {
                return Some(partition);
            }
            tokio::time::timeout_at(deadline, opened).await.ok()?;
        }
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
            let mut log = partition.log_blocking();
            match log.enforce_retention(now, partition.high_watermark()) {
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
            // Only committed records are compacted: a follower may not have the rest yet.
            match log.clean(now, partition.high_watermark()) {
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
                Ok(partition) => match Arc::try_unwrap(partition.log) {
                    Ok(log) => log.into_inner().close(),
                    Err(log) => log.blocking_lock().flush(),
                },
                Err(partition) => partition.log_blocking().flush(),
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

/// A long poll's wait for any of its partitions to change (`Partition::notify_changed`).
/// Made before the read it follows, so a change between the read and the wait still wakes it.
pub struct LongPollWait<'a> {
    waits: Vec<Pin<Box<Notified<'a>>>>,
}

impl<'a> LongPollWait<'a> {
    pub fn of(partitions: impl IntoIterator<Item = &'a Arc<Partition>>) -> Self {
        let waits = partitions
            .into_iter()
            .map(|partition| {
                let mut wait = Box::pin(partition.changed.notified());
                wait.as_mut().enable();
                wait
            })
            .collect();
        Self { waits }
    }

    /// Until one of the partitions changes; forever when there are none (the caller bounds
    /// the wait).
    pub async fn wait(self) {
        if self.waits.is_empty() {
            std::future::pending::<()>().await;
        }
        futures_util::future::select_all(self.waits).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn state(topic_id: uuid::Uuid) -> PartitionState {
        PartitionState {
            topic_id,
            leading: true,
            leader: Some(1),
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1],
            isr: vec![1],
            configs: Arc::new(TopicConfigs::default()),
        }
    }

    #[test]
    fn a_deleted_topics_directory_is_not_reused_by_a_new_topic_of_the_same_name() {
        let dir = tempfile::tempdir().unwrap();
        let (old, new) = (uuid::Uuid::new_v4(), uuid::Uuid::new_v4());
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        replicas.host_partition("t", 0, state(old)).unwrap();
        std::fs::write(replicas.dir_of("t", 0).join("leftover"), b"x").unwrap();
        replicas.close_all();

        // The same id keeps the directory; another id of the same name starts empty.
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        replicas.host_partition("t", 0, state(old)).unwrap();
        assert!(replicas.dir_of("t", 0).join("leftover").exists());
        replicas.close_all();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        replicas.host_partition("t", 0, state(new)).unwrap();
        assert!(!replicas.dir_of("t", 0).join("leftover").exists());
    }

    #[test]
    fn a_long_poll_wakes_for_its_own_partitions_only() {
        use futures_util::FutureExt;

        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let id = uuid::Uuid::new_v4();
        for index in 0..3 {
            replicas.host_partition("t", index, state(id)).unwrap();
        }
        let [p0, p1, p2] = [0, 1, 2].map(|index| replicas.get("t", index).unwrap());
        let watched = [p0.clone(), p1.clone()];

        let wait = LongPollWait::of(&watched);
        p2.notify_changed();
        let mut wait = Box::pin(wait.wait());
        assert!(
            (&mut wait).now_or_never().is_none(),
            "woken by a partition it does not poll"
        );
        p1.notify_changed();
        assert!(
            wait.now_or_never().is_some(),
            "not woken by its own partition"
        );

        // A change between the wait's creation and its first poll is not missed.
        let wait = LongPollWait::of(&watched);
        p0.notify_changed();
        assert!(wait.wait().now_or_never().is_some());
    }

    #[test]
    fn a_long_poll_wakes_when_its_partition_changes_leader_or_goes() {
        use futures_util::FutureExt;

        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let id = uuid::Uuid::new_v4();
        replicas.host_partition("t", 0, state(id)).unwrap();
        let p0 = replicas.get("t", 0).unwrap();
        let watched = [p0.clone()];

        // Same leadership (a config or ISR change): no wake-up.
        let wait = LongPollWait::of(&watched);
        p0.set_state(PartitionState {
            isr: vec![],
            ..state(id)
        });
        assert!(wait.wait().now_or_never().is_none());

        let wait = LongPollWait::of(&watched);
        p0.set_state(PartitionState {
            leading: false,
            leader_epoch: 1,
            ..state(id)
        });
        assert!(wait.wait().now_or_never().is_some(), "leadership moved");

        let wait = LongPollWait::of(&watched);
        assert!(replicas.take_partition("t", 0).is_some());
        assert!(wait.wait().now_or_never().is_some(), "partition removed");
    }
}
