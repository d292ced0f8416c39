//! The replication state of each hosted partition, kept beside its log: whether this broker
//! leads or follows it and at which leader epoch, the leader's view of its followers
//! (`skiff_replication::LeaderState`), and the high watermark that consumers read up to.
//!
//! The metadata image says what the role should be (`PartitionState`, set in the Raft apply
//! without touching a file); whoever next holds the partition's log brings the role in line
//! ("settles" it), off the async workers, because becoming leader first writes the new leader
//! epoch to the log's checkpoint. The leader state is changed only with the log held, and it is
//! told the log's end and start first, so its view of the log is the log's, whichever path
//! appended (produce, the group coordinator, retention).

use std::sync::{Arc, MutexGuard};

use skiff_log::Log;
use skiff_replication::{
    Assignment, Changes, FetchAnswer, FetchError, FollowerFetch, IsrProposal, LeaderState,
    ProduceError, ReplicationConfig,
};
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use crate::replica_manager::{now_ms, Partition, PartitionState};

/// An ISR change a leader asks the controller for.
#[derive(Debug, Clone)]
pub struct Proposal {
    pub topic: String,
    pub partition: i32,
    pub topic_id: uuid::Uuid,
    pub proposal: IsrProposal,
}

/// What every partition of this broker shares: who we are, the lag limit, and where ISR
/// proposals go (the replication service sends them to the controller).
pub struct ReplicationContext {
    pub broker_id: i32,
    pub replica_lag_time_max_ms: i64,
    proposals: mpsc::UnboundedSender<Proposal>,
}

impl ReplicationContext {
    pub fn new(
        broker_id: i32,
        replica_lag_time_max_ms: i64,
    ) -> (Arc<Self>, mpsc::UnboundedReceiver<Proposal>) {
        // Unbounded, yet bounded by the partitions: a leader has one proposal in flight.
        let (proposals, receiver) = mpsc::unbounded_channel();
        (
            Arc::new(Self {
                broker_id,
                replica_lag_time_max_ms,
                proposals,
            }),
            receiver,
        )
    }
}

pub(crate) enum Role {
    /// Not settled yet, or offline: serves neither clients nor followers.
    None,
    Leader(Box<LeaderState>),
    Follower,
}

/// What the role was last settled from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Settled {
    leader: Option<i32>,
    leader_epoch: i32,
    partition_epoch: i32,
    min_insync_replicas: usize,
}

/// Leadership moves without a new high watermark: a wait for the in-sync replicas (acks=all,
/// group writes) looks at the leadership again this often.
pub const LEADERSHIP_RECHECK: std::time::Duration = std::time::Duration::from_millis(200);

/// A partition's replication role. Lock order: the partition's log, then its image state
/// (read and released at once), then this; never the log while holding this, and nothing slow
/// (disk, waits) while holding this: follower fetches and produce completions take it.
pub(crate) struct Replica {
    role: Role,
    settled: Option<Settled>,
}

impl Replica {
    pub(crate) fn new() -> Self {
        Self {
            role: Role::None,
            settled: None,
        }
    }
}

fn settled_from(state: &PartitionState) -> Settled {
    Settled {
        leader: state.leader,
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        min_insync_replicas: state.configs.min_insync_replicas(),
    }
}

fn assignment(state: &PartitionState) -> Assignment {
    Assignment {
        leader_epoch: state.leader_epoch,
        partition_epoch: state.partition_epoch,
        replicas: state.replicas.clone(),
        isr: state.isr.clone(),
    }
}

/// How a follower's fetch is answered: the leader's decision and the log range to read.
pub struct FollowerRead {
    pub answer: Result<FetchAnswer, FetchError>,
    pub log_start: i64,
    pub log_end: i64,
}

impl Partition {
    fn replica(&self) -> MutexGuard<'_, Replica> {
        self.replica.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The high watermark: consumers see records below it only.
    pub fn high_watermark(&self) -> i64 {
        *self.high_watermark.borrow()
    }

    pub fn watch_high_watermark(&self) -> watch::Receiver<i64> {
        self.high_watermark.subscribe()
    }

    /// The leader epoch when this broker leads the partition and has settled as its leader.
    pub fn leading_epoch(&self) -> Option<i32> {
        match &self.replica().role {
            Role::Leader(leader) => Some(leader.leader_epoch()),
            _ => None,
        }
    }

    /// The leader this broker follows the partition from, with its epoch, as the image says.
    pub fn following(&self) -> Option<(i32, i32)> {
        let state = self.state();
        match state.leader {
            Some(leader) if leader != self.context.broker_id => Some((leader, state.leader_epoch)),
            _ => None,
        }
    }

    fn publish(&self, changes: Changes, topic_id: uuid::Uuid) {
        if let Some(high_watermark) = changes.high_watermark {
            let rose = self.high_watermark.send_if_modified(|hw| {
                let rose = high_watermark > *hw;
                *hw = (*hw).max(high_watermark);
                rose
            });
            if rose {
                self.notify_changed();
            }
        }
        if let Some(proposal) = changes.proposal {
            let _ = self.context.proposals.send(Proposal {
                topic: self.topic.clone(),
                partition: self.index,
                topic_id,
                proposal,
            });
        }
    }

    /// Brings the role in line with the image and the leader's view in line with the log.
    /// With the log held, off the async workers.
    pub(crate) fn settle(&self, log: &mut Log) {
        let state = self.state();
        let now = now_ms();
        let target = settled_from(&state);
        let mut replica = self.replica();
        if replica.settled == Some(target) {
            if let Role::Leader(leader) = &mut replica.role {
                let changes = leader.log_moved(log.log_start_offset(), log.log_end_offset(), now);
                drop(replica);
                self.publish(changes, state.topic_id);
            }
            return;
        }
        let local = self.context.broker_id;
        let same_leadership =
            matches!(&replica.role, Role::Leader(l) if l.leader_epoch() == state.leader_epoch);
        if state.leader == Some(local) && same_leadership {
            let Role::Leader(leader) = &mut replica.role else {
                return;
            };
            leader.set_min_insync_replicas(target.min_insync_replicas);
            let mut changes = leader.log_moved(log.log_start_offset(), log.log_end_offset(), now);
            let update = leader.update(&assignment(&state), now);
            changes.high_watermark = update.high_watermark.or(changes.high_watermark);
            changes.proposal = update.proposal;
            replica.settled = Some(target);
            drop(replica);
            self.publish(changes, state.topic_id);
        } else if state.leader == Some(local) {
            // Roles change only here, with the log held, so the role cannot change while the
            // replica lock is released for the epoch's fsync (fetches and ticks wait on it).
            drop(replica);
            let begun = log.begin_leader_epoch(state.leader_epoch);
            let mut replica = self.replica();
            if let Err(e) = begun {
                warn!(topic = %self.topic, partition = self.index, error = %e, "cannot record the new leader epoch; not leading yet");
                replica.role = Role::None;
                return;
            }
            let config = ReplicationConfig {
                replica_lag_time_max_ms: self.context.replica_lag_time_max_ms,
                min_insync_replicas: target.min_insync_replicas,
            };
            let leader = LeaderState::new(
                local,
                &assignment(&state),
                config,
                log.log_start_offset(),
                log.log_end_offset(),
                self.high_watermark(),
                now,
            );
            let high_watermark = leader.high_watermark();
            info!(topic = %self.topic, partition = self.index, leader_epoch = state.leader_epoch, high_watermark, log_end = log.log_end_offset(), "leading");
            replica.role = Role::Leader(Box::new(leader));
            replica.settled = Some(target);
            drop(replica);
            // The high watermark this broker knew as a follower, raised as the followers
            // fetch; it may be below what the previous leader showed until they do.
            self.high_watermark.send_if_modified(|hw| {
                let changed = high_watermark != *hw;
                *hw = high_watermark;
                changed
            });
        } else {
            replica.role = match state.leader {
                Some(_) if state.replicas.contains(&local) => Role::Follower,
                _ => Role::None,
            };
            replica.settled = Some(target);
            drop(replica);
            let log_end = log.log_end_offset();
            self.high_watermark
                .send_if_modified(|hw| std::mem::replace(hw, (*hw).min(log_end)) != *hw);
        }
    }

    /// Before an acks=all append: NOT_ENOUGH_REPLICAS when the ISR is below
    /// `min.insync.replicas`. None when this broker does not lead.
    pub fn check_produce(&self) -> Option<Result<(), ProduceError>> {
        match &self.replica().role {
            Role::Leader(leader) => Some(leader.check_produce()),
            _ => None,
        }
    }

    /// Whether an acks=all produce appended at `leader_epoch`, ending before `required_offset`,
    /// is done (None while the high watermark is below it or this broker no longer leads at
    /// that epoch: a later leadership's high watermark says nothing of records a leader in
    /// between may have truncated).
    pub fn produce_done(
        &self,
        leader_epoch: i32,
        required_offset: i64,
    ) -> Option<Result<(), ProduceError>> {
        match &self.replica().role {
            Role::Leader(leader) if leader.leader_epoch() == leader_epoch => {
                leader.produce_done(required_offset)
            }
            _ => None,
        }
    }

    /// A follower's fetch, with the log held: the leader's answer and its log range.
    pub fn follower_fetch(&self, log: &Log, fetch: FollowerFetch) -> FollowerRead {
        let now = now_ms();
        let topic_id = self.state().topic_id;
        let mut replica = self.replica();
        let Role::Leader(leader) = &mut replica.role else {
            return FollowerRead {
                answer: Err(FetchError::NotLeaderOrFollower),
                log_start: log.log_start_offset(),
                log_end: log.log_end_offset(),
            };
        };
        let mut changes = leader.log_moved(log.log_start_offset(), log.log_end_offset(), now);
        let (answer, fetched) = leader.fetch(fetch, log.leader_epochs(), now);
        changes.high_watermark = fetched.high_watermark.or(changes.high_watermark);
        changes.proposal = fetched.proposal;
        drop(replica);
        self.publish(changes, topic_id);
        FollowerRead {
            answer,
            log_start: log.log_start_offset(),
            log_end: log.log_end_offset(),
        }
    }

    /// A follower learned the leader's high watermark; its own is that, as far as its log goes.
    pub fn follow_high_watermark(&self, leader_high_watermark: i64, log_end: i64) {
        let high_watermark =
            skiff_replication::follower::high_watermark(leader_high_watermark, log_end);
        self.high_watermark.send_if_modified(|hw| {
            let changed = *hw != high_watermark;
            *hw = high_watermark;
            changed
        });
    }

    /// The clock: lagging followers are proposed out of the ISR, and the high watermark stops
    /// waiting for followers whose broker is not `eligible` (fenced or gone). Needs no log.
    pub fn tick(&self, eligible: impl Fn(i32) -> bool) {
        let state = self.state();
        let topic_id = state.topic_id;
        let ineligible = state
            .replicas
            .iter()
            .copied()
            .filter(|&id| id != self.context.broker_id && !eligible(id))
            .collect();
        let mut replica = self.replica();
        if let Role::Leader(leader) = &mut replica.role {
            leader.set_ineligible(ineligible);
            let changes = leader.tick(now_ms());
            drop(replica);
            self.publish(changes, topic_id);
        }
    }

    /// Whether the image asks for another role than the one settled.
    pub fn needs_settling(&self) -> bool {
        let target = settled_from(&self.state());
        self.replica().settled != Some(target)
    }

    /// Whether `proposal` is still this leader's ISR change in flight (neither settled by the
    /// image nor superseded by a leadership change).
    pub fn proposal_pending(&self, proposal: &IsrProposal) -> bool {
        match &self.replica().role {
            Role::Leader(leader) => leader.proposal() == Some(proposal),
            _ => false,
        }
    }

    /// The controller refused `proposal`: it is proposed again when still needed.
    pub fn proposal_refused(&self, proposal: &IsrProposal) {
        if let Role::Leader(leader) = &mut self.replica().role {
            leader.proposal_refused(proposal);
        }
    }

    /// What the leader knows of each follower: (broker, log end) for `/v1/partitions`.
    pub fn follower_log_ends(&self) -> Vec<(i32, Option<i64>)> {
        let replicas = self.state().replicas;
        match &self.replica().role {
            Role::Leader(leader) => replicas
                .iter()
                .filter(|&&r| r != self.context.broker_id)
                .map(|&r| (r, leader.progress(r).and_then(|p| p.log_end)))
                .collect(),
            _ => Vec::new(),
        }
    }
}

/// A shared handle for tests and the services: the context of a partition.
pub type Context = Arc<ReplicationContext>;

/// A context for a broker that replicates nothing (tests, tools): broker `broker_id`, Kafka's
/// default lag limit, proposals dropped.
pub fn standalone(broker_id: i32) -> Context {
    ReplicationContext::new(broker_id, 30_000).0
}
