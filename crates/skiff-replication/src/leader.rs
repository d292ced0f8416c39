//! The leader's side of one partition, as Kafka's `Partition` and `Replica`: it answers follower
//! fetches, tracks each follower's log end, moves the high watermark, proposes ISR changes to
//! the controller (AlterPartition, based on the partition epoch it knows, so a stale leader's
//! change is refused) and says when an acks=all produce is done.
//!
//! Safety rules, each one Kafka's:
//! - The high watermark only rises, and only to an offset every member of the *maximal* ISR (the
//!   committed ISR plus a replica being added) has, so a record under it survives the election
//!   of any in-sync replica.
//! - A follower whose log end is unknown (every follower, right after this broker became leader)
//!   holds the high watermark where it is until it fetches.
//! - One ISR change is in flight at a time; a follower is added only once it has everything up
//!   to the high watermark and something of the current leader epoch, and removed only after it
//!   was behind for longer than `replica_lag_time_max_ms`.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;

use crate::BrokerId;
use skiff_log::epochs::{EpochEnd, LeaderEpochs};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicationConfig {
    /// A follower that has not caught up for this long leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: i64,
    /// Fewest in-sync replicas an acks=all produce is accepted with (`min.insync.replicas`).
    pub min_insync_replicas: usize,
}

impl Default for ReplicationConfig {
    fn default() -> Self {
        Self {
            replica_lag_time_max_ms: 30_000,
            min_insync_replicas: 1,
        }
    }
}

/// The partition as the metadata image has it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Assignment {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub replicas: Vec<BrokerId>,
    pub isr: Vec<BrokerId>,
}

/// An AlterPartition request: the ISR the leader wants, and the leader and partition epochs it
/// is based on. The controller refuses it if either moved on.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IsrProposal {
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    pub isr: Vec<BrokerId>,
}

/// A fetch from a follower, as the Fetch request carries it (`-1` fields as None).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FollowerFetch {
    pub replica: BrokerId,
    pub fetch_offset: i64,
    pub last_fetched_epoch: Option<i32>,
    pub current_leader_epoch: Option<i32>,
}

/// How the leader answers a follower's fetch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FetchAnswer {
    /// Send records from the fetch offset, with this high watermark.
    Read { high_watermark: i64 },
    /// The follower's log diverges from the leader's: no records; it truncates (KIP-320).
    Diverging {
        diverging: EpochEnd,
        high_watermark: i64,
    },
}

/// Each variant is one Kafka error code.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum FetchError {
    #[error("the fetching broker is not a replica of the partition")]
    NotLeaderOrFollower,
    #[error("the fetch names an older leader epoch")]
    FencedLeaderEpoch,
    #[error("the fetch names a leader epoch this leader does not know yet")]
    UnknownLeaderEpoch,
    #[error("the fetch offset is outside the leader's log")]
    OffsetOutOfRange,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ProduceError {
    #[error("fewer in-sync replicas than min.insync.replicas")]
    NotEnoughReplicas,
    #[error("written, but the in-sync replicas fell below min.insync.replicas")]
    NotEnoughReplicasAfterAppend,
}

/// What the leader knows of one follower (Kafka's `ReplicaState`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    /// None until the follower fetched from this leadership.
    pub log_end: Option<i64>,
    /// Last time the follower had everything the leader had at its previous fetch.
    pub last_caught_up_ms: i64,
    pub last_fetch_ms: i64,
    /// The leader's log end at the follower's previous fetch.
    last_fetch_leader_log_end: i64,
}

impl Progress {
    fn new(in_sync: bool, now: i64) -> Self {
        Self {
            log_end: None,
            // An in-sync follower gets a full lag period to fetch from the new leader.
            last_caught_up_ms: if in_sync { now } else { 0 },
            last_fetch_ms: 0,
            last_fetch_leader_log_end: -1,
        }
    }

    fn caught_up(&self, leader_log_end: i64, now: i64, max_lag_ms: i64) -> bool {
        self.log_end == Some(leader_log_end)
            || now.saturating_sub(self.last_caught_up_ms) <= max_lag_ms
    }
}

/// What a leader input changed, for the shell to act on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Changes {
    /// The high watermark rose to this offset: complete waiting acks=all produces and fetches.
    pub high_watermark: Option<i64>,
    /// Send this AlterPartition to the controller.
    pub proposal: Option<IsrProposal>,
}

#[derive(Debug, Clone)]
pub struct LeaderState {
    local: BrokerId,
    config: ReplicationConfig,
    leader_epoch: i32,
    partition_epoch: i32,
    replicas: Vec<BrokerId>,
    isr: Vec<BrokerId>,
    /// The AlterPartition in flight, until the metadata shows its outcome.
    proposal: Option<IsrProposal>,
    followers: BTreeMap<BrokerId, Progress>,
    log_start: i64,
    log_end: i64,
    high_watermark: i64,
    /// Where this leader epoch's records start: the log end when leadership began.
    epoch_start_offset: i64,
    /// Followers whose brokers are fenced or gone from the cluster (Kafka's ISR eligibility):
    /// the high watermark does not wait for them to join the ISR, nor are they proposed in.
    ineligible: BTreeSet<BrokerId>,
}

impl LeaderState {
    /// Leadership at `assignment.leader_epoch` begins on a log spanning `log_start..log_end`,
    /// with the high watermark last checkpointed (clamped into the log). The caller records the
    /// epoch's start (`log_end`) in the log's `LeaderEpochs`.
    pub fn new(
        local: BrokerId,
        assignment: &Assignment,
        config: ReplicationConfig,
        log_start: i64,
        log_end: i64,
        high_watermark: i64,
        now: i64,
    ) -> Self {
        let mut state = Self {
            local,
            config,
            leader_epoch: assignment.leader_epoch,
            partition_epoch: assignment.partition_epoch,
            replicas: Vec::new(),
            isr: Vec::new(),
            proposal: None,
            followers: BTreeMap::new(),
            log_start,
            log_end,
            high_watermark: high_watermark.clamp(log_start, log_end),
            epoch_start_offset: log_end,
            ineligible: BTreeSet::new(),
        };
        state.apply_assignment(assignment, now);
        state.advance_high_watermark(now);
        state
    }

    /// The topic's `min.insync.replicas` changed.
    pub fn set_min_insync_replicas(&mut self, min_insync_replicas: usize) {
        self.config.min_insync_replicas = min_insync_replicas;
    }

    pub fn leader_epoch(&self) -> i32 {
        self.leader_epoch
    }

    pub fn partition_epoch(&self) -> i32 {
        self.partition_epoch
    }

    pub fn high_watermark(&self) -> i64 {
        self.high_watermark
    }

    pub fn isr(&self) -> &[BrokerId] {
        &self.isr
    }

    pub fn proposal(&self) -> Option<&IsrProposal> {
        self.proposal.as_ref()
    }

    pub fn progress(&self, follower: BrokerId) -> Option<&Progress> {
        self.followers.get(&follower)
    }

    /// The committed ISR plus a replica being added: what the high watermark waits for.
    fn maximal_isr(&self) -> impl Iterator<Item = BrokerId> + '_ {
        let adding = self
            .proposal
            .iter()
            .flat_map(|p| p.isr.iter().copied())
            .filter(|id| !self.isr.contains(id));
        self.isr.iter().copied().chain(adding)
    }

    fn apply_assignment(&mut self, assignment: &Assignment, now: i64) {
        self.partition_epoch = assignment.partition_epoch;
        self.replicas = assignment.replicas.clone();
        self.isr = assignment.isr.clone();
        let followers: Vec<BrokerId> = self
            .replicas
            .iter()
            .copied()
            .filter(|&id| id != self.local)
            .collect();
        self.followers.retain(|id, _| followers.contains(id));
        for id in followers {
            let in_sync = self.isr.contains(&id);
            self.followers
                .entry(id)
                .or_insert_with(|| Progress::new(in_sync, now));
        }
    }

    /// A newer state of the partition, at the same leader epoch, from the metadata image (an
    /// ISR change committed, replicas reassigned). The proposal in flight is settled by it: the
    /// controller either applied it or something else won.
    pub fn update(&mut self, assignment: &Assignment, now: i64) -> Changes {
        if assignment.partition_epoch <= self.partition_epoch {
            return Changes::default();
        }
        self.apply_assignment(assignment, now);
        self.proposal = None;
        Changes {
            high_watermark: self.advance_high_watermark(now),
            proposal: self.propose_shrink(now),
        }
    }

    /// The controller refused `proposal` (e.g. its partition epoch was stale): it is proposed
    /// again, from the state the next metadata update brings, when still needed. A refusal of
    /// an older proposal than the one in flight changes nothing: the one in flight may still be
    /// accepted, so the high watermark keeps waiting for the replica it adds.
    pub fn proposal_refused(&mut self, proposal: &IsrProposal) {
        if self.proposal.as_ref() == Some(proposal) {
            self.proposal = None;
        }
    }

    /// The local log now spans `log_start..log_end`: appends moved its end, DeleteRecords or
    /// retention its start. The high watermark rises with what the ISR has, and is never below
    /// the log start.
    pub fn log_moved(&mut self, log_start: i64, log_end: i64, now: i64) -> Changes {
        self.log_end = self.log_end.max(log_end);
        self.log_start = log_start.min(self.log_end);
        let raised = (self.log_start > self.high_watermark).then(|| {
            self.high_watermark = self.log_start;
            self.log_start
        });
        Changes {
            high_watermark: self.advance_high_watermark(now).or(raised),
            proposal: None,
        }
    }

    /// Checked before an acks=all append (Kafka checks the committed ISR).
    pub fn check_produce(&self) -> Result<(), ProduceError> {
        if self.isr.len() < self.config.min_insync_replicas {
            Err(ProduceError::NotEnoughReplicas)
        } else {
            Ok(())
        }
    }

    /// Whether an acks=all produce whose records end before `required_offset` is done: None
    /// while the high watermark is below it.
    pub fn produce_done(&self, required_offset: i64) -> Option<Result<(), ProduceError>> {
        if self.high_watermark < required_offset {
            return None;
        }
        Some(
            if self.maximal_isr().count() < self.config.min_insync_replicas {
                Err(ProduceError::NotEnoughReplicasAfterAppend)
            } else {
                Ok(())
            },
        )
    }

    /// A follower's fetch. `epochs` is the leader's log's epoch cache, for divergence.
    pub fn fetch(
        &mut self,
        fetch: FollowerFetch,
        epochs: &LeaderEpochs,
        now: i64,
    ) -> (Result<FetchAnswer, FetchError>, Changes) {
        let changes = Changes::default();
        if !self.followers.contains_key(&fetch.replica) {
            return (Err(FetchError::NotLeaderOrFollower), changes);
        }
        match fetch.current_leader_epoch {
            Some(epoch) if epoch < self.leader_epoch => {
                return (Err(FetchError::FencedLeaderEpoch), changes)
            }
            Some(epoch) if epoch > self.leader_epoch => {
                return (Err(FetchError::UnknownLeaderEpoch), changes)
            }
            _ => {}
        }
        if let Some(last_epoch) = fetch.last_fetched_epoch {
            let end = epochs.end_offset_for(last_epoch, self.log_end);
            if end.epoch < last_epoch || end.end_offset < fetch.fetch_offset {
                let answer = FetchAnswer::Diverging {
                    diverging: end,
                    high_watermark: self.high_watermark,
                };
                return (Ok(answer), changes);
            }
        }
        if fetch.fetch_offset < self.log_start || fetch.fetch_offset > self.log_end {
            return (Err(FetchError::OffsetOutOfRange), changes);
        }
        let log_end = self.log_end;
        if let Some(progress) = self.followers.get_mut(&fetch.replica) {
            if fetch.fetch_offset >= log_end {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(now);
            } else if fetch.fetch_offset >= progress.last_fetch_leader_log_end {
                progress.last_caught_up_ms = progress.last_caught_up_ms.max(progress.last_fetch_ms);
            }
            progress.log_end = Some(fetch.fetch_offset);
            progress.last_fetch_leader_log_end = log_end;
            progress.last_fetch_ms = now;
        }
        let changes = Changes {
            proposal: self.propose_expand(fetch.replica),
            high_watermark: self.advance_high_watermark(now),
        };
        let answer = FetchAnswer::Read {
            high_watermark: self.high_watermark,
        };
        (Ok(answer), changes)
    }

    /// Which followers' brokers are fenced or gone, as the metadata image says now.
    pub fn set_ineligible(&mut self, ineligible: BTreeSet<BrokerId>) {
        self.ineligible = ineligible;
    }

    /// The clock: followers behind for too long are proposed out of the ISR.
    pub fn tick(&mut self, now: i64) -> Changes {
        Changes {
            proposal: self.propose_shrink(now),
            high_watermark: self.advance_high_watermark(now),
        }
    }

    fn propose_expand(&mut self, follower: BrokerId) -> Option<IsrProposal> {
        if self.proposal.is_some()
            || self.ineligible.contains(&follower)
            || self.maximal_isr().any(|id| id == follower)
        {
            return None;
        }
        let log_end = self.followers.get(&follower)?.log_end?;
        if log_end < self.high_watermark || log_end < self.epoch_start_offset {
            return None;
        }
        let mut isr = self.isr.clone();
        isr.push(follower);
        self.propose(isr)
    }

    fn propose_shrink(&mut self, now: i64) -> Option<IsrProposal> {
        if self.proposal.is_some() {
            return None;
        }
        let max_lag = self.config.replica_lag_time_max_ms;
        let lagging: Vec<BrokerId> = self
            .isr
            .iter()
            .copied()
            .filter(|&id| {
                self.followers
                    .get(&id)
                    .is_some_and(|p| !p.caught_up(self.log_end, now, max_lag))
            })
            .collect();
        if lagging.is_empty() {
            return None;
        }
        let isr = self
            .isr
            .iter()
            .copied()
            .filter(|id| !lagging.contains(id))
            .collect();
        self.propose(isr)
    }

    fn propose(&mut self, isr: Vec<BrokerId>) -> Option<IsrProposal> {
        let proposal = IsrProposal {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            isr,
        };
        self.proposal = Some(proposal.clone());
        Some(proposal)
    }

    /// Raises the high watermark to the lowest log end among the maximal ISR and the eligible
    /// followers caught up within the lag limit; returns it when it rose.
    fn advance_high_watermark(&mut self, now: i64) -> Option<i64> {
        let max_lag = self.config.replica_lag_time_max_ms;
        let maximal: Vec<BrokerId> = self.maximal_isr().collect();
        let mut candidate = self.log_end;
        for (id, progress) in &self.followers {
            // A caught-up follower about to join the ISR is waited for, as Kafka does, unless
            // its broker is fenced: a dead broker would hold the high watermark for the whole
            // lag period.
            let joining =
                !self.ineligible.contains(id) && progress.caught_up(self.log_end, now, max_lag);
            let counted = maximal.contains(id) || joining;
            if counted {
                candidate = candidate.min(progress.log_end.unwrap_or(-1));
            }
        }
        (candidate > self.high_watermark).then(|| {
            self.high_watermark = candidate;
            candidate
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const LAG: i64 = 30_000;

    fn config(min_isr: usize) -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: LAG,
            min_insync_replicas: min_isr,
        }
    }

    fn assignment(partition_epoch: i32, isr: &[BrokerId]) -> Assignment {
        Assignment {
            leader_epoch: 3,
            partition_epoch,
            replicas: vec![1, 2, 3],
            isr: isr.to_vec(),
        }
    }

    fn epochs() -> LeaderEpochs {
        let mut e = LeaderEpochs::default();
        e.assign(1, 0);
        e.assign(3, 10);
        e
    }

    fn fetch(replica: BrokerId, offset: i64) -> FollowerFetch {
        FollowerFetch {
            replica,
            fetch_offset: offset,
            last_fetched_epoch: Some(3),
            current_leader_epoch: Some(3),
        }
    }

    /// Leader 1 of replicas 1, 2, 3, all in sync, on a log 0..10 with the high watermark at 8.
    fn leader(min_isr: usize) -> LeaderState {
        LeaderState::new(1, &assignment(5, &[1, 2, 3]), config(min_isr), 0, 10, 8, 0)
    }

    fn read(state: &mut LeaderState, f: FollowerFetch, now: i64) -> (i64, Changes) {
        match state.fetch(f, &epochs(), now) {
            (Ok(FetchAnswer::Read { high_watermark }), changes) => (high_watermark, changes),
            other => panic!("expected records, got {other:?}"),
        }
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower() {
        let mut l = leader(2);
        assert_eq!(l.high_watermark(), 8);
        l.log_moved(0, 12, 1);
        assert_eq!(l.produce_done(12), None);
        // Follower 2 has everything; follower 3 has not fetched from this leader yet.
        let (hw, changes) = read(&mut l, fetch(2, 12), 2);
        assert_eq!((hw, changes.high_watermark), (8, None));
        let (hw, changes) = read(&mut l, fetch(3, 11), 3);
        assert_eq!((hw, changes.high_watermark), (11, Some(11)));
        assert_eq!(l.produce_done(12), None);
        let (hw, _) = read(&mut l, fetch(3, 12), 4);
        assert_eq!(hw, 12);
        assert_eq!(l.produce_done(12), Some(Ok(())));
        // Never backwards, even when a follower reports less.
        let (hw, _) = read(&mut l, fetch(3, 12), 5);
        assert_eq!(hw, 12);
    }

    #[test]
    fn a_lagging_follower_is_proposed_out_and_the_high_watermark_moves_on() {
        let mut l = leader(2);
        read(&mut l, fetch(2, 10), 1);
        read(&mut l, fetch(3, 10), 1);
        l.log_moved(0, 20, 2);
        read(&mut l, fetch(2, 20), 3);
        // Follower 3 stops fetching: nothing before the lag limit.
        assert_eq!(l.tick(LAG).proposal, None);
        assert_eq!(l.high_watermark(), 10);
        let shrink = l.tick(LAG + 3).proposal.expect("follower 3 is out of sync");
        assert_eq!(
            shrink,
            IsrProposal {
                leader_epoch: 3,
                partition_epoch: 5,
                isr: vec![1, 2]
            }
        );
        assert_eq!(l.tick(LAG + 4).proposal, None, "one proposal at a time");
        // The high watermark still waits for follower 3 until the change is committed.
        assert_eq!(l.high_watermark(), 10);
        let changes = l.update(&assignment(6, &[1, 2]), LAG + 5);
        assert_eq!(changes.high_watermark, Some(20));
        assert_eq!(l.produce_done(20), Some(Ok(())));
        assert_eq!(l.check_produce(), Ok(()));
    }

    #[test]
    fn a_fenced_follower_removed_from_the_isr_holds_nothing_up() {
        let mut l = leader(1);
        read(&mut l, fetch(2, 10), 1);
        read(&mut l, fetch(3, 10), 1);
        // Broker 3 dies; the controller fences it and takes it out of the ISR at once.
        l.update(&assignment(6, &[1, 2]), 2);
        l.log_moved(0, 20, 3);
        read(&mut l, fetch(2, 20), 4);
        // Still caught up within the lag period, so it would be waited for as a joining
        // replica, were its broker not fenced.
        assert_eq!(l.high_watermark(), 10);
        l.set_ineligible([3].into());
        assert_eq!(l.tick(5).high_watermark, Some(20));
        assert_eq!(l.produce_done(20), Some(Ok(())));
        // Nor is it proposed back while fenced, however caught up.
        let (_, changes) = read(&mut l, fetch(3, 20), 6);
        assert_eq!(changes.proposal, None);
        l.set_ineligible(BTreeSet::new());
        let (_, changes) = read(&mut l, fetch(3, 20), 7);
        assert_eq!(changes.proposal.map(|p| p.isr), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_rejoins_the_isr_only_with_everything_up_to_the_high_watermark() {
        let mut l = LeaderState::new(1, &assignment(5, &[1, 2]), config(2), 0, 10, 10, 0);
        // Follower 3 behind the high watermark: fetching, not in sync.
        let (_, changes) = read(&mut l, fetch(3, 7), 1);
        assert_eq!(changes.proposal, None);
        let (_, changes) = read(&mut l, fetch(3, 10), 2);
        let expand = changes.proposal.expect("caught up");
        assert_eq!(expand.isr, vec![1, 2, 3]);
        // While the expansion is in flight, the high watermark already waits for it.
        l.log_moved(0, 15, 3);
        read(&mut l, fetch(2, 15), 4);
        assert_eq!(l.high_watermark(), 10);
        read(&mut l, fetch(3, 15), 5);
        assert_eq!(l.high_watermark(), 15);
        // A refusal of an older proposal leaves this one in flight.
        let older = IsrProposal {
            partition_epoch: 4,
            ..expand.clone()
        };
        l.proposal_refused(&older);
        assert_eq!(l.proposal(), Some(&expand));
        // The controller refused it (stale epoch): proposed again on the next fetch.
        l.proposal_refused(&expand);
        let (_, changes) = read(&mut l, fetch(3, 15), 6);
        assert_eq!(changes.proposal.map(|p| p.isr), Some(vec![1, 2, 3]));
    }

    #[test]
    fn a_follower_needs_a_record_of_the_current_epoch_to_rejoin() {
        // Leadership begins at log end 10, above the checkpointed high watermark 8.
        let mut l = LeaderState::new(1, &assignment(5, &[1]), config(1), 0, 10, 8, 0);
        let (_, changes) = read(&mut l, fetch(2, 9), 1);
        assert_eq!(
            changes.proposal, None,
            "9 >= high watermark 8 but < epoch start 10"
        );
        let (_, changes) = read(&mut l, fetch(2, 10), 2);
        assert!(changes.proposal.is_some());
    }

    #[test]
    fn min_insync_replicas_is_checked_before_and_after_the_append() {
        let l = LeaderState::new(1, &assignment(5, &[1]), config(2), 0, 10, 10, 0);
        assert_eq!(l.check_produce(), Err(ProduceError::NotEnoughReplicas));
        let mut l = leader(2);
        read(&mut l, fetch(2, 10), 1);
        read(&mut l, fetch(3, 10), 1);
        l.log_moved(0, 11, 2);
        assert_eq!(l.check_produce(), Ok(()));
        // Both followers drop out before the record reaches them.
        l.tick(2 * LAG);
        l.update(&assignment(6, &[1]), 2 * LAG);
        assert_eq!(
            l.produce_done(11),
            Some(Err(ProduceError::NotEnoughReplicasAfterAppend))
        );
    }

    #[test]
    fn bad_fetches_get_precise_errors() {
        let mut l = leader(1);
        let stale = FollowerFetch {
            current_leader_epoch: Some(2),
            ..fetch(2, 10)
        };
        let future = FollowerFetch {
            current_leader_epoch: Some(4),
            ..fetch(2, 10)
        };
        let cases = [
            (fetch(9, 10), FetchError::NotLeaderOrFollower),
            (fetch(1, 10), FetchError::NotLeaderOrFollower),
            (stale, FetchError::FencedLeaderEpoch),
            (future, FetchError::UnknownLeaderEpoch),
            (
                FollowerFetch {
                    last_fetched_epoch: None,
                    ..fetch(2, 11)
                },
                FetchError::OffsetOutOfRange,
            ),
        ];
        for (f, error) in cases {
            assert_eq!(l.fetch(f, &epochs(), 1).0, Err(error), "{f:?}");
        }
        // None of them counted as progress.
        assert_eq!(l.progress(2).and_then(|p| p.log_end), None);
    }

    #[test]
    fn a_follower_with_a_divergent_tail_is_told_where_to_truncate() {
        let mut l = leader(1);
        // The follower wrote offsets 10.. at epoch 2, which this leader's log never had.
        let divergent = FollowerFetch {
            last_fetched_epoch: Some(2),
            ..fetch(2, 13)
        };
        let (answer, _) = l.fetch(divergent, &epochs(), 1);
        assert_eq!(
            answer,
            Ok(FetchAnswer::Diverging {
                diverging: EpochEnd {
                    epoch: 1,
                    end_offset: 10
                },
                high_watermark: 8
            })
        );
        assert_eq!(l.progress(2).and_then(|p| p.log_end), None);
    }
}
