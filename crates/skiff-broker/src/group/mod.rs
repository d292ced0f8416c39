//! Consumer groups: the sans-I/O `GroupCoordinator`, the records it keeps in
//! `__consumer_offsets`, and `GroupService`, which feeds it requests and clock ticks, parks
//! JoinGroup/SyncGroup requests until their answer is ready, and appends its records to the log
//! before any answer that depends on them goes out.

pub mod coordinator;
pub mod storage;

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard};

use skiff_log::records::{BatchRecords, RecordBatchBuilder};
use skiff_log::LogError;
use tokio::sync::oneshot;
use tracing::warn;

use crate::replica_manager::{now_ms, ReplicaManager};
use coordinator::{Completion, Effects, GroupCoordinator, JoinResult, MemberIds, SyncResult};
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

pub struct Coordination {
    pub coordinator: GroupCoordinator,
    join_waiters: Waiters<JoinResult>,
    sync_waiters: Waiters<SyncResult>,
}

pub struct GroupService {
    state: Mutex<Coordination>,
    offsets_partitions: i32,
}

impl GroupService {
    pub fn new(coordinator: GroupCoordinator, offsets_partitions: i32) -> Self {
        Self {
            state: Mutex::new(Coordination {
                coordinator,
                join_waiters: HashMap::new(),
                sync_waiters: HashMap::new(),
            }),
            offsets_partitions,
        }
    }

    pub fn offsets_partitions(&self) -> i32 {
        self.offsets_partitions
    }

    pub fn lock(&self) -> MutexGuard<'_, Coordination> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Replays every `__consumer_offsets` partition into the coordinator.
    pub fn load(&self, replicas: &ReplicaManager) -> Result<usize, LogError> {
        let now = now_ms();
        let mut state = self.lock();
        let mut loaded = 0;
        for index in 0..self.offsets_partitions {
            let Some(partition) = replicas.get(OFFSETS_TOPIC, index) else {
                continue;
            };
            let (mut offset, end) = {
                let log = partition.log();
                (log.log_start_offset(), log.log_end_offset())
            };
            while offset < end {
                let read = partition.log().read(offset, 1 << 20, end, true)?;
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
                                state.coordinator.load(entry, now);
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
        Ok(loaded)
    }

    /// Appends the coordinator's records, then hands out the deferred answers. Runs under the
    /// state lock, so records reach the log in the order the coordinator decided.
    pub fn apply(
        &self,
        state: &mut Coordination,
        replicas: &ReplicaManager,
        effects: Effects,
    ) -> Result<(), LogError> {
        let written = self.persist(replicas, effects.writes);
        for completion in effects.completions {
            match completion {
                Completion::Join {
                    group,
                    member_id,
                    result,
                } => {
                    if let Some(waiter) = state.join_waiters.remove(&(group, member_id)) {
                        let _ = waiter.send(result);
                    }
                }
                Completion::Sync {
                    group,
                    member_id,
                    result,
                } => {
                    if let Some(waiter) = state.sync_waiters.remove(&(group, member_id)) {
                        let _ = waiter.send(result);
                    }
                }
            }
        }
        written
    }

    fn persist(
        &self,
        replicas: &ReplicaManager,
        writes: Vec<(String, Entry)>,
    ) -> Result<(), LogError> {
        if writes.is_empty() {
            return Ok(());
        }
        let now = now_ms();
        let mut by_partition: HashMap<i32, RecordBatchBuilder> = HashMap::new();
        let mut next_offset: HashMap<i32, i64> = HashMap::new();
        for (group, entry) in writes {
            let index = partition_for(&group, self.offsets_partitions);
            let (key, value) = entry.encode();
            let offset = next_offset.entry(index).or_insert(0);
            by_partition
                .entry(index)
                .or_insert_with(|| RecordBatchBuilder::new(0))
                .push(*offset, now, Some(&key), value.as_deref(), &[]);
            *offset += 1;
        }
        for (index, builder) in by_partition {
            let not_here = || {
                LogError::Io(std::io::Error::other(format!(
                    "this broker does not lead {OFFSETS_TOPIC} partition {index}"
                )))
            };
            let partition = replicas.get(OFFSETS_TOPIC, index).ok_or_else(not_here)?;
            let epoch = partition.leader_epoch_if_leading().ok_or_else(not_here)?;
            let mut batch = builder.build();
            partition.log().append(&mut batch, epoch, now)?;
        }
        replicas.notify_appended();
        Ok(())
    }

    pub fn wait_for_join(
        state: &mut Coordination,
        group: &str,
        member_id: &str,
    ) -> oneshot::Receiver<JoinResult> {
        let (tx, rx) = oneshot::channel();
        state
            .join_waiters
            .insert((group.to_string(), member_id.to_string()), tx);
        rx
    }

    pub fn wait_for_sync(
        state: &mut Coordination,
        group: &str,
        member_id: &str,
    ) -> oneshot::Receiver<SyncResult> {
        let (tx, rx) = oneshot::channel();
        state
            .sync_waiters
            .insert((group.to_string(), member_id.to_string()), tx);
        rx
    }

    /// Completes every parked request with COORDINATOR_NOT_AVAILABLE (shutdown).
    pub fn release_waiters(&self) {
        use kafka_protocol::error::ResponseError::CoordinatorNotAvailable;
        let mut state = self.lock();
        for ((_, member_id), waiter) in state.join_waiters.drain() {
            let _ = waiter.send(JoinResult::error(CoordinatorNotAvailable, &member_id));
        }
        for (_, waiter) in state.sync_waiters.drain() {
            let _ = waiter.send(SyncResult::error(CoordinatorNotAvailable));
        }
    }

    pub fn member_ids() -> impl MemberIds {
        RandomMemberIds
    }

    /// Session expiry, rebalance deadlines and offsets retention.
    pub fn tick(&self, replicas: &ReplicaManager) {
        let mut state = self.lock();
        let effects = state.coordinator.tick(now_ms());
        if let Err(e) = self.apply(&mut state, replicas, effects) {
            warn!(error = %e, "persisting group changes failed");
        }
    }

    /// Consumer lag per group and partition, for `/metrics`.
    pub fn export_lag(&self, replicas: &ReplicaManager) {
        let state = self.lock();
        for group in state.coordinator.groups() {
            for ((topic, partition), committed) in &group.offsets {
                if let Some(p) = replicas.get(topic, *partition) {
                    let end = p.log().log_end_offset();
                    metrics::gauge!(
                        "skiff_consumer_group_lag",
                        "group" => group.id.clone(),
                        "topic" => topic.clone(),
                        "partition" => partition.to_string()
                    )
                    .set((end - committed.offset).max(0) as f64);
                }
            }
        }
    }
}
