//! Consumer groups: the sans-I/O `GroupCoordinator`, the records it keeps in
//! `__consumer_offsets`, and `GroupService`, which runs one coordinator per `__consumer_offsets`
//! partition this broker leads (Kafka's model), feeds it requests and clock ticks, parks
//! JoinGroup/SyncGroup requests until their answer is ready, and appends its records to the log
//! before anything that depends on them is answered or visible.
//!
//! A coordinator (`Shard`) is loaded by replaying its partition when this broker becomes the
//! partition's leader and unloaded when it stops leading it; until it is loaded, requests for its
//! groups get COORDINATOR_LOAD_IN_PROGRESS, and once unloaded NOT_COORDINATOR, so clients look
//! for the coordinator again. Loading and unloading follow the hosted partitions' leadership,
//! checked on every group timer tick (`reconcile`), never inside the Raft apply.

pub mod coordinator;
pub mod storage;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::error::ResponseError;
use skiff_log::records::{BatchRecords, RecordBatchBuilder};
use skiff_log::{AppendOutcome, LogError};
use skiff_metadata::MetadataImage;
use tokio::sync::oneshot;
use tracing::{info, warn};

use crate::replica_manager::{now_ms, Partition, ReplicaManager};
use crate::replication::LEADERSHIP_RECHECK;
use coordinator::{
    Completion, Effects, GroupConfig, GroupCoordinator, GroupCount, JoinResult, MemberIds,
    SyncResult, Undo,
};
use storage::{partition_for, Entry, OFFSETS_TOPIC};

/// Member ids as Kafka makes them: `<client id>-<uuid>`.
struct RandomMemberIds;

impl MemberIds for RandomMemberIds {
    fn new_member_id(&mut self, client_id: &str) -> String {
        // Member ids travel in i16-length strings; a client id is not bounded by the protocol.
        let prefix: String = client_id.chars().take(128).collect();
        format!("{prefix}-{}", uuid::Uuid::new_v4())
    }
}

type Waiters<T> = HashMap<(String, String), oneshot::Sender<T>>;

/// One coordinator's state and the requests parked on it.
pub struct Coordination {
    pub coordinator: GroupCoordinator,
    join_waiters: Waiters<JoinResult>,
    sync_waiters: Waiters<SyncResult>,
    /// False once the coordinator was unloaded: a request that found it before gets
    /// NOT_COORDINATOR.
    loaded: bool,
}

impl Coordination {
    /// Hands out deferred JoinGroup and SyncGroup answers to the requests parked for them.
    pub fn deliver(&mut self, completions: Vec<Completion>) {
        for completion in completions {
            match completion {
                Completion::Join {
                    group,
                    member_id,
                    result,
                } => {
                    if let Some(waiter) = self.join_waiters.remove(&(group, member_id)) {
                        let _ = waiter.send(result);
                    }
                }
                Completion::Sync {
                    group,
                    member_id,
                    result,
                } => {
                    if let Some(waiter) = self.sync_waiters.remove(&(group, member_id)) {
                        let _ = waiter.send(result);
                    }
                }
            }
        }
    }

    pub fn wait_for_join(&mut self, group: &str, member_id: &str) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        self.join_waiters
            .insert((group.to_string(), member_id.to_string()), tx);
        rx
    }

    pub fn wait_for_sync(&mut self, group: &str, member_id: &str) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        self.sync_waiters
            .insert((group.to_string(), member_id.to_string()), tx);
        rx
    }

    /// Answers every parked request with `error`.
    fn release_waiters(&mut self, error: ResponseError) {
        for ((_, member_id), waiter) in self.join_waiters.drain() {
            let _ = waiter.send(JoinResult::error(error, &member_id));
        }
        for (_, waiter) in self.sync_waiters.drain() {
            let _ = waiter.send(SyncResult::error(error));
        }
    }
}

/// The coordinator of the groups of one `__consumer_offsets` partition, loaded at the leader
/// epoch this broker leads it with.
pub struct Shard {
    pub partition: i32,
    pub leader_epoch: i32,
    state: Mutex<Coordination>,
}

impl Shard {
    /// The coordinator's state, or NOT_COORDINATOR once it was unloaded.
    pub fn lock(&self) -> Result<MutexGuard<'_, Coordination>, ResponseError> {
        match self.state.lock() {
            Ok(state) if state.loaded => Ok(state),
            Ok(_) => Err(ResponseError::NotCoordinator),
            // A panic in the middle of a change may have left its groups half-changed: nothing
            // is served from them until `reconcile` has replayed the partition again.
            Err(_) => Err(ResponseError::CoordinatorLoadInProgress),
        }
    }
}

/// The partition count of `__consumer_offsets` in `image`, 0 before it exists. The image is the
/// only source: the setting only sizes the topic when it is created.
pub fn offsets_partitions(image: &MetadataImage) -> i32 {
    image
        .topic_by_name(OFFSETS_TOPIC)
        .map_or(0, |t| image.partition_count(t.topic_id))
}

fn leading_epoch(replicas: &ReplicaManager, index: i32) -> Option<i32> {
    replicas
        .get(OFFSETS_TOPIC, index)?
        .leader_epoch_if_leading()
}

/// How long a partition whose load failed waits before it is tried again.
const LOAD_RETRY: Duration = Duration::from_secs(5);

pub struct GroupService {
    config: GroupConfig,
    /// Groups held by all coordinators loaded here.
    groups: GroupCount,
    shards: RwLock<BTreeMap<i32, Arc<Shard>>>,
    /// Partitions whose load failed, with the epoch tried and when to try again; their groups
    /// get COORDINATOR_NOT_AVAILABLE meanwhile.
    failed_loads: Mutex<HashMap<i32, (i32, Instant)>>,
}

impl GroupService {
    pub fn new(config: GroupConfig) -> Self {
        Self {
            config,
            groups: GroupCount::default(),
            shards: RwLock::new(BTreeMap::new()),
            failed_loads: Mutex::new(HashMap::new()),
        }
    }

    pub fn member_ids() -> impl MemberIds {
        RandomMemberIds
    }

    fn shard(&self, index: i32) -> Option<Arc<Shard>> {
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .get(&index)
            .cloned()
    }

    /// Every loaded coordinator.
    pub fn shards(&self) -> Vec<Arc<Shard>> {
        self.shards
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .values()
            .cloned()
            .collect()
    }

    /// The coordinator of `group` on this broker: NOT_COORDINATOR when another broker leads the
    /// group's `__consumer_offsets` partition (or it does not exist yet),
    /// COORDINATOR_LOAD_IN_PROGRESS while this broker loads it (or is about to reload it at a
    /// new leader epoch), COORDINATOR_NOT_AVAILABLE while a failed load waits to be retried. A
    /// coordinator loaded at an epoch this broker no longer leads with serves nothing, reads
    /// included.
    pub fn coordinator_of(
        &self,
        image: &MetadataImage,
        replicas: &ReplicaManager,
        group: &str,
    ) -> Result<Arc<Shard>, ResponseError> {
        let partitions = offsets_partitions(image);
        if partitions <= 0 {
            return Err(ResponseError::NotCoordinator);
        }
        let index = partition_for(group, partitions);
        let leading = leading_epoch(replicas, index);
        match (self.shard(index), leading) {
            (_, None) => Err(ResponseError::NotCoordinator),
            (Some(shard), Some(epoch)) if shard.leader_epoch == epoch => Ok(shard),
            _ if self.load_failed(index, leading) => Err(ResponseError::CoordinatorNotAvailable),
            _ => Err(ResponseError::CoordinatorLoadInProgress),
        }
    }

    fn load_failed(&self, index: i32, epoch: Option<i32>) -> bool {
        let failed = self.failed_loads.lock().unwrap_or_else(|p| p.into_inner());
        failed
            .get(&index)
            .is_some_and(|(tried, _)| Some(*tried) == epoch)
    }

    /// Whether this broker leads a `__consumer_offsets` partition it has not loaded at the
    /// epoch it leads it with.
    pub fn is_loading(&self, image: &MetadataImage, replicas: &ReplicaManager) -> bool {
        let loaded = self.shards.read().unwrap_or_else(|p| p.into_inner());
        (0..offsets_partitions(image)).any(|index| {
            leading_epoch(replicas, index)
                .is_some_and(|epoch| loaded.get(&index).map(|s| s.leader_epoch) != Some(epoch))
        })
    }

    /// Runs `op`, a change of the one group `undo` was taken for (before the change, with
    /// `GroupCoordinator::undo_group` or `undo_offsets`), and persists its records before
    /// anything it changed can be seen. When the append fails, the group is put back with
    /// `undo`, every deferred answer `op` produced becomes the error (and those members stop
    /// waiting), and the error is returned. On success the deferred answers come back for the
    /// caller to deliver once it has parked its own request.
    pub fn write<R>(
        &self,
        shard: &Shard,
        state: &mut Coordination,
        replicas: &ReplicaManager,
        undo: Undo,
        op: impl FnOnce(&mut GroupCoordinator) -> (R, Effects),
    ) -> Result<(R, Vec<Completion>), ResponseError> {
        let (result, effects) = op(&mut state.coordinator);
        let Err(error) = persist(shard, replicas, effects.writes, Confirm::Replicated) else {
            return Ok((result, effects.completions));
        };
        state.coordinator.undo(undo);
        let failed: Vec<Completion> = effects
            .completions
            .into_iter()
            .map(|c| match c {
                Completion::Join {
                    group, member_id, ..
                } => {
                    state.coordinator.stop_waiting(&group, &member_id);
                    Completion::Join {
                        result: JoinResult::error(error, &member_id),
                        group,
                        member_id,
                    }
                }
                Completion::Sync {
                    group, member_id, ..
                } => {
                    state.coordinator.stop_waiting(&group, &member_id);
                    Completion::Sync {
                        group,
                        member_id,
                        result: SyncResult::error(error),
                    }
                }
            })
            .collect();
        state.deliver(failed);
        Err(error)
    }

    /// Loads the coordinators of the `__consumer_offsets` partitions this broker now leads and
    /// unloads those it no longer leads at the epoch they were loaded with; `image` gives the
    /// current metadata image each time it is called. Clock ticks run between loads, so a long
    /// load does not hold up the sessions and rebalances of loaded coordinators. Blocking file
    /// I/O: call it off the async workers.
    pub fn reconcile(&self, image: &dyn Fn() -> Arc<MetadataImage>, replicas: &ReplicaManager) {
        let partitions = offsets_partitions(&image());
        let stale: Vec<Arc<Shard>> = self
            .shards()
            .into_iter()
            .filter(|s| {
                s.partition >= partitions
                    || leading_epoch(replicas, s.partition) != Some(s.leader_epoch)
                    || s.state.is_poisoned()
            })
            .collect();
        for shard in stale {
            self.unload(&shard);
        }
        for index in 0..partitions {
            if self.shard(index).is_some() {
                continue;
            }
            let Some(epoch) = leading_epoch(replicas, index) else {
                continue;
            };
            {
                let mut failed = self.failed_loads.lock().unwrap_or_else(|p| p.into_inner());
                match failed.get(&index) {
                    Some((tried, retry_at)) if *tried == epoch && Instant::now() < *retry_at => {
                        continue
                    }
                    _ => failed.remove(&index),
                };
            }
            match self.load(replicas, index, epoch) {
                Ok(shard) => self.activate(shard, image, replicas),
                Err(e) => {
                    warn!(partition = index, leader_epoch = epoch, error = %e, retry_secs = LOAD_RETRY.as_secs(), "loading consumer groups failed");
                    self.failed_loads
                        .lock()
                        .unwrap_or_else(|p| p.into_inner())
                        .insert(index, (epoch, Instant::now() + LOAD_RETRY));
                }
            }
            self.tick(replicas);
        }
    }

    /// Starts serving a loaded coordinator, unless leadership moved while it was replayed. Its
    /// offsets of topics that the current image lacks (deleted while no coordinator here had
    /// them) are forgotten before any request sees them: the image is read after the shard is
    /// in the map, so a topic deleted later is forgotten by `forget_topics`.
    fn activate(
        &self,
        shard: Arc<Shard>,
        image: &dyn Fn() -> Arc<MetadataImage>,
        replicas: &ReplicaManager,
    ) {
        let mut state = shard.state.lock().unwrap_or_else(|p| p.into_inner());
        {
            let mut shards = self.shards.write().unwrap_or_else(|p| p.into_inner());
            if leading_epoch(replicas, shard.partition) != Some(shard.leader_epoch) {
                return;
            }
            shards.insert(shard.partition, shard.clone());
        }
        let image = image();
        let gone: Vec<String> = state
            .coordinator
            .topics_with_offsets()
            .into_iter()
            .filter(|topic| image.topic_by_name(topic).is_none())
            .collect();
        forget_topics_in(&shard, &mut state, replicas, &gone);
    }

    /// Replays one `__consumer_offsets` partition into a new coordinator.
    fn load(
        &self,
        replicas: &ReplicaManager,
        index: i32,
        epoch: i32,
    ) -> Result<Arc<Shard>, LogError> {
        let started = Instant::now();
        let now = now_ms();
        let mut coordinator =
            GroupCoordinator::counted_in(self.config.clone(), self.groups.clone());
        let mut loaded = 0;
        if let Some(partition) = replicas.get(OFFSETS_TOPIC, index) {
            let (mut offset, end) = {
                let log = partition.log_blocking();
                (log.log_start_offset(), log.log_end_offset())
            };
            while offset < end {
                let read = partition.log_blocking().read(offset, 1 << 20, end, true)?;
                let Some(next) = (read.total_len > 0).then_some(read.next_offset) else {
                    break;
                };
                let bytes = read.read_all()?;
                for item in skiff_log::batch::BatchIter::new(&bytes) {
                    let (_, range) = item?;
                    let records = BatchRecords::new(&bytes[range])?;
                    for record in records.iter() {
                        let record = record?;
                        let Some(key) = record.key else { continue };
                        match Entry::decode(key, record.value) {
                            Ok(Some(entry)) => {
                                coordinator.load(entry, now);
                                loaded += 1;
                            }
                            Ok(None) => {}
                            Err(e) => {
                                warn!(partition = index, offset = record.offset, error = %e, "skipping unreadable group record")
                            }
                        }
                    }
                }
                offset = next;
            }
        }
        info!(
            partition = index,
            leader_epoch = epoch,
            records = loaded,
            groups = coordinator.groups().count(),
            elapsed_ms = started.elapsed().as_millis() as u64,
            "loaded consumer group coordinator"
        );
        Ok(Arc::new(Shard {
            partition: index,
            leader_epoch: epoch,
            state: Mutex::new(Coordination {
                coordinator,
                join_waiters: HashMap::new(),
                sync_waiters: HashMap::new(),
                loaded: true,
            }),
        }))
    }

    /// Stops coordinating the groups of `shard`: parked and later requests get NOT_COORDINATOR.
    fn unload(&self, shard: &Arc<Shard>) {
        self.shards
            .write()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&shard.partition);
        let mut state = shard.state.lock().unwrap_or_else(|p| p.into_inner());
        state.loaded = false;
        state.release_waiters(ResponseError::NotCoordinator);
        let groups = state.coordinator.groups().count();
        state.coordinator = GroupCoordinator::new(self.config.clone());
        info!(
            partition = shard.partition,
            leader_epoch = shard.leader_epoch,
            groups,
            "unloaded consumer group coordinator"
        );
    }

    /// Forgets the committed offsets of deleted topics in every coordinator loaded here, so a
    /// topic created again under the same name never resumes them. The metadata publisher of
    /// every broker calls it, so whichever broker coordinates a group forgets them.
    pub fn forget_topics(&self, topics: &[String], replicas: &ReplicaManager) {
        for shard in self.shards() {
            let Ok(mut state) = shard.lock() else {
                continue;
            };
            forget_topics_in(&shard, &mut state, replicas, topics);
        }
    }

    /// Session expiry, rebalance deadlines and offsets retention, for every loaded coordinator.
    /// As in Kafka, what a tick removes is removed from memory even when its tombstones cannot
    /// be appended; it then comes back, and expires again, when the partition is loaded again.
    pub fn tick(&self, replicas: &ReplicaManager) {
        for shard in self.shards() {
            let Ok(mut state) = shard.lock() else {
                continue;
            };
            let effects = state.coordinator.tick(now_ms());
            if let Err(error) = persist(&shard, replicas, effects.writes, Confirm::Appended) {
                warn!(
                    partition = shard.partition,
                    ?error,
                    "persisting group expirations failed"
                );
            }
            state.deliver(effects.completions);
        }
    }

    /// Completes every parked request with COORDINATOR_NOT_AVAILABLE (shutdown).
    pub fn release_waiters(&self) {
        for shard in self.shards() {
            if let Ok(mut state) = shard.lock() {
                state.release_waiters(ResponseError::CoordinatorNotAvailable);
            }
        }
    }

    /// Consumer lag (log end minus committed offset) of the groups coordinated here, for the
    /// partitions hosted here, in Prometheus' text format. Computed when scraped, so the lag of
    /// a group that was deleted or is no longer coordinated here disappears with it.
    pub fn lag_metrics(&self, replicas: &ReplicaManager) -> String {
        use std::fmt::Write;
        let escape = |value: &str| {
            value
                .replace('\\', "\\\\")
                .replace('"', "\\\"")
                .replace('\n', "\\n")
        };
        let mut out = String::new();
        for shard in self.shards() {
            // Copied out, so no log lock is taken while the coordinator is locked.
            let committed: Vec<(String, String, i32, i64)> = match shard.lock() {
                Ok(state) => state
                    .coordinator
                    .groups()
                    .flat_map(|g| {
                        g.offsets
                            .iter()
                            .map(|((t, p), c)| (g.id.clone(), t.clone(), *p, c.offset))
                    })
                    .collect(),
                Err(_) => continue,
            };
            for (group, topic, partition, offset) in committed {
                if let Some(p) = replicas.get(&topic, partition) {
                    let lag = (p.log_blocking().log_end_offset() - offset).max(0);
                    let _ = writeln!(
                        out,
                        "skiff_consumer_group_lag{{group=\"{}\",topic=\"{}\",partition=\"{partition}\"}} {lag}",
                        escape(&group),
                        escape(&topic),
                    );
                }
            }
        }
        if out.is_empty() {
            return out;
        }
        format!("# TYPE skiff_consumer_group_lag gauge\n{out}")
    }
}

/// Drops every group's committed offsets of `topics` in one coordinator, in one append.
fn forget_topics_in(
    shard: &Shard,
    state: &mut Coordination,
    replicas: &ReplicaManager,
    topics: &[String],
) {
    let mut writes = Vec::new();
    for topic in topics {
        for group in state.coordinator.groups_with_offsets_of(topic) {
            writes.extend(state.coordinator.remove_topic_offsets(&group, topic).writes);
        }
    }
    if let Err(error) = persist(shard, replicas, writes, Confirm::Appended) {
        // Memory keeps nothing of the topics either way; the coordinator that next loads the
        // partition forgets them again.
        warn!(
            partition = shard.partition,
            ?topics,
            ?error,
            "persisting the removal of deleted topics' offsets failed"
        );
    }
}

/// How far a group write goes before `persist` returns.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Confirm {
    /// A client's change: checked against `min.insync.replicas` first, answered once the
    /// in-sync replicas have it.
    Replicated,
    /// Expirations and forgotten topics, which memory drops whatever the outcome: appended.
    Appended,
}

/// Appends a coordinator's records to its `__consumer_offsets` partition, as long as this
/// broker still leads it at the epoch the coordinator was loaded with.
fn persist(
    shard: &Shard,
    replicas: &ReplicaManager,
    writes: Vec<Entry>,
    confirm: Confirm,
) -> Result<(), ResponseError> {
    if writes.is_empty() {
        return Ok(());
    }
    let partition = replicas
        .get(OFFSETS_TOPIC, shard.partition)
        .filter(|p| p.leader_epoch_if_leading() == Some(shard.leader_epoch))
        .ok_or(ResponseError::NotCoordinator)?;
    let now = now_ms();
    let mut builder = RecordBatchBuilder::new(0);
    for (offset, entry) in writes.into_iter().enumerate() {
        let (key, value) = entry.encode();
        // Only a change of more than 2^31 entries could fail, and requests are far smaller.
        builder
            .push(offset as i64, now, Some(&key), value.as_deref(), &[])
            .map_err(|_| ResponseError::UnknownServerError)?;
    }
    let mut batch = builder.build();
    let appended = {
        let mut log = partition.log_blocking();
        // Kafka refuses a group write the in-sync replicas are too few for before appending
        // it (NOT_ENOUGH_REPLICAS, answered as COORDINATOR_NOT_AVAILABLE).
        if confirm == Confirm::Replicated {
            match partition.check_produce() {
                None => return Err(ResponseError::NotCoordinator),
                Some(Err(_)) => return Err(ResponseError::CoordinatorNotAvailable),
                Some(Ok(())) => {}
            }
        }
        let appended = log.append(&mut batch, shard.leader_epoch, now);
        // A single in-sync replica's high watermark moves with its log end.
        partition.settle(&mut log);
        appended
    };
    match appended {
        Ok(
            AppendOutcome::Appended { last_offset, .. }
            | AppendOutcome::Duplicate { last_offset, .. },
        ) => {
            partition.notify_changed();
            match confirm {
                Confirm::Replicated => {
                    wait_replicated(&partition, shard.leader_epoch, last_offset + 1)
                }
                Confirm::Appended => Ok(()),
            }
        }
        Err(e) => {
            warn!(partition = shard.partition, error = %e, "appending to {OFFSETS_TOPIC} failed");
            Err(match e {
                LogError::Corrupt(skiff_log::batch::BatchError::TooLarge { .. }) => {
                    ResponseError::InvalidCommitOffsetSize
                }
                _ => ResponseError::CoordinatorNotAvailable,
            })
        }
    }
}

/// How long a group write waits for the in-sync replicas (Kafka's `offsets.commit.timeout.ms`).
const REPLICATION_WAIT: Duration = Duration::from_secs(5);

/// Waits, blocking, until the in-sync replicas have a group write ending before `end` (the high
/// watermark passed it), as Kafka answers a group write only once it is committed: a failover
/// then never loses a commit or a rebalance the client was told succeeded. The errors are
/// Kafka's for a failed offsets append: NOT_COORDINATOR once leadership moved,
/// COORDINATOR_NOT_AVAILABLE on a timeout or too few in-sync replicas (the record may still
/// commit later, as in Kafka: its outcome is unknown to the client).
fn wait_replicated(
    partition: &Partition,
    leader_epoch: i32,
    end: i64,
) -> Result<(), ResponseError> {
    let deadline = Instant::now() + REPLICATION_WAIT;
    let mut high_watermark = partition.watch_high_watermark();
    loop {
        match partition.produce_done(leader_epoch, end) {
            Some(Ok(())) => return Ok(()),
            Some(Err(_)) => return Err(ResponseError::CoordinatorNotAvailable),
            None if partition.leading_epoch() != Some(leader_epoch) => {
                return Err(ResponseError::NotCoordinator)
            }
            None => {}
        }
        let now = Instant::now();
        if now >= deadline {
            warn!(
                topic = OFFSETS_TOPIC,
                partition = partition.index,
                end,
                "the in-sync replicas did not confirm a group write in time"
            );
            return Err(ResponseError::CoordinatorNotAvailable);
        }
        if !block_until_changed(
            &mut high_watermark,
            (deadline - now).min(LEADERSHIP_RECHECK),
        ) {
            return Err(ResponseError::NotCoordinator);
        }
    }
}

/// Blocks the calling thread until `watched` changes or `timeout` passes; false when the sender
/// is gone. Group writes run on blocking threads, some outside the runtime (the metadata
/// publisher's), so the watch's future is polled here, parking the thread in between.
fn block_until_changed<T>(
    watched: &mut tokio::sync::watch::Receiver<T>,
    timeout: Duration,
) -> bool {
    struct Unpark(std::thread::Thread);
    impl std::task::Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = std::task::Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut context = std::task::Context::from_waker(&waker);
    let deadline = Instant::now() + timeout;
    let mut changed = std::pin::pin!(watched.changed());
    loop {
        if let std::task::Poll::Ready(result) =
            std::future::Future::poll(changed.as_mut(), &mut context)
        {
            return result.is_ok();
        }
        let now = Instant::now();
        if now >= deadline {
            return true;
        }
        std::thread::park_timeout(deadline - now);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use bytes::Bytes;
    use skiff_metadata::MetadataRecord;
    use uuid::Uuid;

    use super::coordinator::{JoinRequest, OffsetCommit, Reply};
    use super::*;
    use crate::replica_manager::PartitionState;
    use crate::topic_config::TopicConfigs;

    const NOT_COORDINATOR: i16 = 16;

    /// Broker 1 leading every partition of `__consumer_offsets` (`partitions`) and of `topics`.
    fn image(partitions: i32, topics: &[&str]) -> MetadataImage {
        let mut records = vec![
            MetadataRecord::RegisterBroker {
                id: 1,
                endpoints: vec!["127.0.0.1:9092".into()],
                rack: None,
                incarnation: Uuid::new_v4(),
            },
            MetadataRecord::UnfenceBroker { id: 1 },
        ];
        let topics =
            std::iter::once((OFFSETS_TOPIC, partitions)).chain(topics.iter().map(|t| (*t, 1)));
        for (name, count) in topics {
            let topic_id = Uuid::new_v4();
            records.push(MetadataRecord::CreateTopic {
                name: name.into(),
                topic_id,
                configs: BTreeMap::new(),
            });
            records.extend((0..count).map(|partition| MetadataRecord::CreatePartition {
                topic_id,
                partition,
                replicas: vec![1],
                isr: vec![1],
                leader: Some(1),
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            }));
        }
        let mut image = MetadataImage::new();
        image.apply_batch(1, &records).unwrap();
        image
    }

    /// Hosts `__consumer_offsets` partition `index`, led here at `epoch` (alone in the ISR, so
    /// its writes commit at once) or followed.
    fn host(replicas: &ReplicaManager, index: i32, epoch: i32, leading: bool) {
        host_with_isr(
            replicas,
            index,
            epoch,
            leading,
            if leading { &[1] } else { &[1, 2] },
        );
    }

    fn host_with_isr(
        replicas: &ReplicaManager,
        index: i32,
        epoch: i32,
        leading: bool,
        isr: &[i32],
    ) {
        let state = PartitionState {
            topic_id: Uuid::nil(),
            leading,
            leader: Some(if leading { 1 } else { 2 }),
            leader_epoch: epoch,
            partition_epoch: 0,
            replicas: vec![1, 2],
            isr: isr.to_vec(),
            configs: Arc::new(TopicConfigs::default()),
        };
        replicas
            .host_partition(OFFSETS_TOPIC, index, state)
            .unwrap();
    }

    fn service() -> GroupService {
        GroupService::new(GroupConfig {
            initial_rebalance_delay_ms: 0,
            ..GroupConfig::default()
        })
    }

    fn commit(group: &str, topic: &str, offset: i64) -> OffsetCommit {
        OffsetCommit {
            group_id: group.into(),
            generation: -1,
            member_id: String::new(),
            instance_id: None,
            offsets: vec![(topic.into(), 0, offset, -1, None)],
        }
    }

    fn join(member_id: &str) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: None,
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: vec![("range".into(), Bytes::from_static(b"m"))],
            require_known_member_id: false,
            supports_skip_assignment: true,
        }
    }

    fn reconcile(groups: &GroupService, image: &MetadataImage, replicas: &ReplicaManager) {
        let image = Arc::new(image.clone());
        groups.reconcile(&|| image.clone(), replicas);
    }

    /// Sends a JoinGroup as the handler does: parks it when the answer comes later.
    fn send_join(
        groups: &GroupService,
        shard: &Shard,
        replicas: &ReplicaManager,
        member_id: &str,
    ) -> Result<oneshot::Receiver<JoinResult>, ResponseError> {
        let mut state = shard.lock()?;
        let undo = state.coordinator.undo_group("g");
        let (reply, completions) = groups.write(shard, &mut state, replicas, undo, |c| {
            c.join_group(join(member_id), &mut GroupService::member_ids(), now_ms())
        })?;
        let Reply::Later { member_id } = reply else {
            panic!("a join to an empty or rebalancing group is answered later")
        };
        let rx = state.wait_for_join("g", &member_id);
        state.deliver(completions);
        Ok(rx)
    }

    /// Sends a SyncGroup as the handler does; the answer now, or the parked request.
    fn send_sync(
        groups: &GroupService,
        shard: &Shard,
        replicas: &ReplicaManager,
        joined: &JoinResult,
        assignment: &[&str],
    ) -> Result<oneshot::Receiver<SyncResult>, ResponseError> {
        let mut state = shard.lock()?;
        let undo = state.coordinator.undo_group("g");
        let (reply, completions) = groups.write(shard, &mut state, replicas, undo, |c| {
            c.sync_group(
                "g",
                joined.generation,
                &joined.member_id,
                None,
                None,
                None,
                assignment
                    .iter()
                    .map(|m| (m.to_string(), Bytes::from_static(b"a")))
                    .collect(),
                now_ms(),
            )
        })?;
        let Reply::Later { member_id } = reply else {
            panic!("a sync during CompletingRebalance is answered later")
        };
        let rx = state.wait_for_sync("g", &member_id);
        state.deliver(completions);
        Ok(rx)
    }

    /// Commits offset `offset` of t-0 for group g as the OffsetCommit handler does.
    fn commit_as_handler(
        groups: &GroupService,
        shard: &Shard,
        replicas: &ReplicaManager,
        offset: i64,
    ) -> Result<Vec<i16>, ResponseError> {
        let mut state = shard.lock()?;
        let undo = state.coordinator.undo_offsets("g", [("t".to_string(), 0)]);
        let (codes, _) = groups.write(shard, &mut state, replicas, undo, |c| {
            c.commit_offsets(commit("g", "t", offset), now_ms())
        })?;
        Ok(codes)
    }

    #[test]
    fn a_group_write_is_answered_once_the_in_sync_replicas_have_it() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let image = image(1, &["t"]);
        let groups = service();
        host_with_isr(&replicas, 0, 0, true, &[1, 2]);
        reconcile(&groups, &image, &replicas);
        let shard = groups.coordinator_of(&image, &replicas, "g").unwrap();
        let partition = replicas.get(OFFSETS_TOPIC, 0).unwrap();
        let follower_fetches = |partition: &Partition| {
            let log = partition.log_blocking();
            partition.follower_fetch(
                &log,
                skiff_replication::FollowerFetch {
                    replica: 2,
                    fetch_offset: log.log_end_offset(),
                    last_fetched_epoch: log.leader_epochs().latest_epoch(),
                    current_leader_epoch: Some(0),
                },
            );
        };
        follower_fetches(&partition);

        // The follower does not fetch: the commit is appended but never committed, so the
        // client gets COORDINATOR_NOT_AVAILABLE and the coordinator does not show it.
        assert!(matches!(
            commit_as_handler(&groups, &shard, &replicas, 42),
            Err(ResponseError::CoordinatorNotAvailable)
        ));
        let committed = |shard: &Shard| {
            let state = shard.lock().unwrap();
            state.coordinator.committed("g", "t", 0).map(|c| c.offset)
        };
        assert_eq!(committed(&shard), None);

        // The follower fetches while the commit waits: it is answered once the follower has it.
        std::thread::scope(|scope| {
            let waiting = scope.spawn(|| commit_as_handler(&groups, &shard, &replicas, 43));
            while !waiting.is_finished() {
                follower_fetches(&partition);
                std::thread::sleep(Duration::from_millis(20));
            }
            assert_eq!(waiting.join().unwrap().unwrap(), [0]);
        });
        assert_eq!(committed(&shard), Some(43));
        assert!(partition.high_watermark() >= 2);

        // Leadership moved: NOT_COORDINATOR, and nothing is appended.
        host_with_isr(&replicas, 0, 1, false, &[1, 2]);
        assert!(matches!(
            commit_as_handler(&groups, &shard, &replicas, 44),
            Err(ResponseError::NotCoordinator)
        ));
        assert_eq!(committed(&shard), Some(43));
    }

    #[test]
    fn a_group_write_with_too_few_in_sync_replicas_is_refused_before_it_is_appended() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let image = image(1, &["t"]);
        let groups = service();
        let state = PartitionState {
            topic_id: Uuid::nil(),
            leading: true,
            leader: Some(1),
            leader_epoch: 0,
            partition_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1],
            configs: Arc::new(
                TopicConfigs::from_pairs([("min.insync.replicas", Some("2"))]).unwrap(),
            ),
        };
        replicas.host_partition(OFFSETS_TOPIC, 0, state).unwrap();
        reconcile(&groups, &image, &replicas);
        let shard = groups.coordinator_of(&image, &replicas, "g").unwrap();
        assert!(matches!(
            commit_as_handler(&groups, &shard, &replicas, 42),
            Err(ResponseError::CoordinatorNotAvailable)
        ));
        let partition = replicas.get(OFFSETS_TOPIC, 0).unwrap();
        assert_eq!(
            partition.log_blocking().log_end_offset(),
            0,
            "nothing appended"
        );
    }

    #[test]
    fn a_coordinator_is_loaded_and_unloaded_with_the_leadership_of_its_partition() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let image = image(1, &["t"]);
        let groups = service();
        let find = |groups: &GroupService| groups.coordinator_of(&image, &replicas, "g");

        // Not led here: another broker coordinates. Led but not replayed yet: loading.
        assert!(matches!(find(&groups), Err(ResponseError::NotCoordinator)));
        host(&replicas, 0, 0, true);
        assert!(matches!(
            find(&groups),
            Err(ResponseError::CoordinatorLoadInProgress)
        ));
        assert!(groups.is_loading(&image, &replicas));
        reconcile(&groups, &image, &replicas);
        assert!(!groups.is_loading(&image, &replicas));
        let shard = find(&groups).unwrap();
        {
            let mut state = shard.lock().unwrap();
            let undo = state.coordinator.undo_offsets("g", [("t".to_string(), 0)]);
            let (codes, _) = groups
                .write(&shard, &mut state, &replicas, undo, |c| {
                    c.commit_offsets(commit("g", "t", 42), now_ms())
                })
                .unwrap();
            assert_eq!(codes, [0]);
        }

        // A member's JoinGroup is parked (first one answered, second one waits for the first
        // member to rejoin) when leadership moves away.
        let first = send_join(&groups, &shard, &replicas, "")
            .unwrap()
            .try_recv()
            .unwrap();
        assert_eq!(first.error, 0);
        let mut parked = send_join(&groups, &shard, &replicas, "").unwrap();
        assert!(parked.try_recv().is_err(), "the second join waits");
        host(&replicas, 0, 0, false);
        assert!(
            matches!(find(&groups), Err(ResponseError::NotCoordinator)),
            "not served even before the coordinator is unloaded"
        );
        reconcile(&groups, &image, &replicas);
        assert_eq!(parked.try_recv().unwrap().error, NOT_COORDINATOR);
        // A request that found the coordinator before it was unloaded, and any after.
        assert!(matches!(shard.lock(), Err(ResponseError::NotCoordinator)));
        assert!(matches!(find(&groups), Err(ResponseError::NotCoordinator)));

        // Leading again at a later epoch: the new coordinator replays the committed offset.
        host(&replicas, 0, 1, true);
        reconcile(&groups, &image, &replicas);
        let shard = find(&groups).unwrap();
        assert_eq!(shard.leader_epoch, 1);
        assert_eq!(
            shard
                .lock()
                .unwrap()
                .coordinator
                .committed("g", "t", 0)
                .map(|c| c.offset),
            Some(42)
        );

        // A new epoch while still leading: nothing is served from the old coordinator until
        // the partition is replayed again.
        host(&replicas, 0, 2, true);
        assert!(matches!(
            find(&groups),
            Err(ResponseError::CoordinatorLoadInProgress)
        ));
        assert!(groups.is_loading(&image, &replicas));
        reconcile(&groups, &image, &replicas);
        assert_eq!(find(&groups).unwrap().leader_epoch, 2);
    }

    /// Commits `offset` for `group` through the coordinator of `shard`, as OffsetCommit does.
    fn commit_through(
        groups: &GroupService,
        shard: &Shard,
        replicas: &ReplicaManager,
        group: &str,
        offset: i64,
    ) -> Vec<i16> {
        let mut state = shard.lock().unwrap();
        let undo = state
            .coordinator
            .undo_offsets(group, [("t".to_string(), 0)]);
        groups
            .write(shard, &mut state, replicas, undo, |c| {
                c.commit_offsets(commit(group, "t", offset), now_ms())
            })
            .unwrap()
            .0
    }

    #[test]
    fn a_coordinator_poisoned_by_a_panic_serves_nothing_until_its_partition_is_replayed() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let image = image(1, &["t"]);
        let groups = service();
        host(&replicas, 0, 0, true);
        reconcile(&groups, &image, &replicas);
        let shard = groups.coordinator_of(&image, &replicas, "g").unwrap();
        assert_eq!(commit_through(&groups, &shard, &replicas, "g", 42), [0]);

        // A panic between a change in memory and its append leaves state the log lacks.
        let poisoner = shard.clone();
        std::thread::spawn(move || {
            let mut state = poisoner.lock().unwrap();
            let _unpersisted = state.coordinator.commit_offsets(commit("g", "t", 43), 0);
            panic!("simulated bug in the middle of a change");
        })
        .join()
        .unwrap_err();

        assert!(matches!(
            shard.lock(),
            Err(ResponseError::CoordinatorLoadInProgress)
        ));
        reconcile(&groups, &image, &replicas);
        let reloaded = groups.coordinator_of(&image, &replicas, "g").unwrap();
        assert!(
            !Arc::ptr_eq(&reloaded, &shard),
            "replayed into a new coordinator"
        );
        let committed = reloaded
            .lock()
            .unwrap()
            .coordinator
            .committed("g", "t", 0)
            .map(|c| c.offset);
        assert_eq!(
            committed,
            Some(42),
            "the log's state, not the half-changed one"
        );
    }

    #[test]
    fn the_group_limit_counts_the_groups_of_every_coordinator_of_the_broker() {
        const POLICY_VIOLATION: i16 = 44;
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let image = image(2, &["t"]);
        let groups = GroupService::new(GroupConfig {
            max_groups: 2,
            ..GroupConfig::default()
        });
        host(&replicas, 0, 0, true);
        host(&replicas, 1, 0, true);
        reconcile(&groups, &image, &replicas);
        let named = |partition: i32| {
            (0..)
                .map(|i| format!("g{i}"))
                .filter(move |g| partition_for(g, 2) == partition)
        };
        let (a, b) = {
            let mut on_0 = named(0);
            (on_0.next().unwrap(), on_0.next().unwrap())
        };
        let c = named(1).next().unwrap();
        let shard_of = |g: &str| groups.coordinator_of(&image, &replicas, g).unwrap();

        assert_eq!(
            commit_through(&groups, &shard_of(&a), &replicas, &a, 1),
            [0]
        );
        assert_eq!(
            commit_through(&groups, &shard_of(&c), &replicas, &c, 1),
            [0]
        );
        // Full, although each coordinator holds only one group.
        assert_eq!(
            commit_through(&groups, &shard_of(&b), &replicas, &b, 1),
            [POLICY_VIOLATION]
        );
        let shard_b = shard_of(&b);
        let mut state = shard_b.lock().unwrap();
        let (refused, _) = state.coordinator.join_group(
            JoinRequest {
                group_id: b.clone(),
                ..join("")
            },
            &mut GroupService::member_ids(),
            now_ms(),
        );
        assert!(matches!(refused, Reply::Now(r) if r.error == POLICY_VIOLATION));
        drop(state);
        // Existing groups go on committing.
        assert_eq!(
            commit_through(&groups, &shard_of(&a), &replicas, &a, 2),
            [0]
        );

        // Partition 1 moves away: its group no longer counts here.
        host(&replicas, 1, 0, false);
        reconcile(&groups, &image, &replicas);
        assert_eq!(
            commit_through(&groups, &shard_of(&b), &replicas, &b, 1),
            [0]
        );
    }

    #[test]
    fn a_change_that_cannot_be_persisted_is_undone_and_answered_with_the_error() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let image = image(1, &["t"]);
        let groups = service();
        host(&replicas, 0, 0, true);
        reconcile(&groups, &image, &replicas);
        let shard = groups.coordinator_of(&image, &replicas, "g").unwrap();

        // Two members form a generation; the follower's SyncGroup waits for the leader's.
        let a = send_join(&groups, &shard, &replicas, "")
            .unwrap()
            .try_recv()
            .unwrap();
        let mut b = send_join(&groups, &shard, &replicas, "").unwrap();
        let mut a_again = send_join(&groups, &shard, &replicas, &a.member_id).unwrap();
        let (a, b) = (a_again.try_recv().unwrap(), b.try_recv().unwrap());
        assert_eq!((a.error, b.error, a.generation), (0, 0, b.generation));
        let (leader, follower) = if a.leader == a.member_id {
            (a, b)
        } else {
            (b, a)
        };
        let mut follower_sync = send_sync(&groups, &shard, &replicas, &follower, &[]).unwrap();
        assert!(follower_sync.try_recv().is_err(), "the follower waits");

        // The partition's leader epoch moves on before this coordinator is reloaded: its
        // appends are refused, so the leader's assignment must not take effect, and the
        // follower waiting for it gets the error too.
        host(&replicas, 0, 1, true);
        let members = [leader.member_id.as_str(), follower.member_id.as_str()];
        assert!(matches!(
            send_sync(&groups, &shard, &replicas, &leader, &members),
            Err(ResponseError::NotCoordinator)
        ));
        assert_eq!(follower_sync.try_recv().unwrap().error, NOT_COORDINATOR);
        let mut state = shard.lock().unwrap();
        let group = state.coordinator.group("g").unwrap();
        assert_eq!(group.state.name(), "CompletingRebalance");
        assert!(group.members.values().all(|m| m.assignment.is_empty()));
        let undo = state
            .coordinator
            .undo_offsets("solo", [("t".to_string(), 0)]);
        let committed = groups.write(&shard, &mut state, &replicas, undo, |c| {
            c.commit_offsets(commit("solo", "t", 7), now_ms())
        });
        assert!(matches!(committed, Err(ResponseError::NotCoordinator)));
        assert!(state.coordinator.group("solo").is_none());
        drop(state);

        // Reloaded at the new epoch: the log has neither the assignment nor the commit.
        reconcile(&groups, &image, &replicas);
        let shard = groups.coordinator_of(&image, &replicas, "g").unwrap();
        assert_eq!(shard.leader_epoch, 1);
        let state = shard.lock().unwrap();
        assert!(state.coordinator.group("solo").is_none());
        assert!(state
            .coordinator
            .group("g")
            .is_none_or(|g| g.state.name() != "Stable"));
    }

    #[test]
    fn deleted_topics_lose_their_offsets_in_loaded_and_later_loaded_coordinators() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = ReplicaManager::new(dir.path(), crate::replication::standalone(1));
        let groups = service();
        let before = image(1, &["kept", "gone", "gone2"]);
        host(&replicas, 0, 0, true);
        reconcile(&groups, &before, &replicas);
        let shard = groups.coordinator_of(&before, &replicas, "g").unwrap();
        {
            let mut state = shard.lock().unwrap();
            for (group, topic) in [("g", "kept"), ("g", "gone"), ("h", "gone"), ("h", "gone2")] {
                let undo = state
                    .coordinator
                    .undo_offsets(group, [(topic.to_string(), 0)]);
                groups
                    .write(&shard, &mut state, &replicas, undo, |c| {
                        c.commit_offsets(commit(group, topic, 5), now_ms())
                    })
                    .unwrap();
            }
        }
        groups.forget_topics(&["gone".to_string()], &replicas);
        {
            let state = shard.lock().unwrap();
            assert!(state.coordinator.committed("g", "gone", 0).is_none());
            assert!(state.coordinator.committed("h", "gone", 0).is_none());
            assert!(state.coordinator.committed("g", "kept", 0).is_some());
        }

        // Reloaded with an image that still has every topic: the removals were persisted.
        host(&replicas, 0, 1, true);
        reconcile(&groups, &before, &replicas);
        let shard = groups.coordinator_of(&before, &replicas, "g").unwrap();
        assert_eq!(shard.leader_epoch, 1);
        assert_eq!(
            shard.lock().unwrap().coordinator.topics_with_offsets(),
            ["gone2", "kept"].map(String::from).into()
        );

        // "gone2" disappears while no coordinator here has the partition: the next one to load
        // it forgets its offsets.
        host(&replicas, 0, 1, false);
        reconcile(&groups, &before, &replicas);
        host(&replicas, 0, 2, true);
        let after = image(1, &["kept"]);
        reconcile(&groups, &after, &replicas);
        let shard = groups.coordinator_of(&after, &replicas, "g").unwrap();
        let state = shard.lock().unwrap();
        assert_eq!(
            state.coordinator.topics_with_offsets(),
            ["kept".to_string()].into()
        );
    }
}
