//! A deterministic simulation of one partition replicated on three brokers, driven only through
//! the public state machines: a model controller (elections from the ISR only, AlterPartition
//! checked against the leader and partition epochs, the last replica standing kept in the ISR),
//! brokers that learn metadata late, lost fetches, ISR proposals delivered late, crashes,
//! restarts and false suspicions (a live leader fenced: a zombie). Every seed is one schedule.
//!
//! Checked after every step: every acknowledged (acks=all) record is in the log of every replica
//! the controller has in the ISR, at the offset it was acknowledged at. Checked after healing:
//! the replicas' logs are identical and hold every acknowledged record.

use std::collections::{BTreeMap, BTreeSet, VecDeque};

use skiff_replication::follower::{high_watermark, truncation};
use skiff_replication::{
    Assignment, Changes, FetchAnswer, FollowerFetch, IsrProposal, LeaderEpochs, LeaderState,
    ReplicationConfig,
};

const BROKERS: [i32; 3] = [1, 2, 3];
const LAG_MS: i64 = 1_000;

/// A record: the epoch it was written in and a unique id.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Rec {
    epoch: i32,
    id: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct Meta {
    version: u64,
    leader: Option<i32>,
    leader_epoch: i32,
    partition_epoch: i32,
    isr: Vec<i32>,
}

impl Meta {
    fn assignment(&self) -> Assignment {
        Assignment {
            leader_epoch: self.leader_epoch,
            partition_epoch: self.partition_epoch,
            replicas: BROKERS.to_vec(),
            isr: self.isr.clone(),
        }
    }
}

struct Broker {
    id: i32,
    running: bool,
    log: Vec<Rec>,
    epochs: LeaderEpochs,
    high_watermark: i64,
    known: Meta,
    leading: Option<LeaderState>,
}

impl Broker {
    fn log_end(&self) -> i64 {
        self.log.len() as i64
    }

    fn truncate(&mut self, offset: i64) {
        self.log.truncate(offset.max(0) as usize);
        self.epochs.truncate_from_end(offset);
        self.high_watermark = self.high_watermark.min(self.log_end());
    }
}

struct Controller {
    meta: Meta,
    fenced: BTreeSet<i32>,
    /// A planted bug for the checker to find: elect any unfenced replica, in sync or not.
    unclean: bool,
}

impl Controller {
    fn change(&mut self, leader: Option<i32>, isr: Vec<i32>) {
        if leader != self.meta.leader {
            self.meta.leader_epoch += 1;
        }
        self.meta.leader = leader;
        self.meta.isr = isr;
        self.meta.partition_epoch += 1;
        self.meta.version += 1;
    }

    /// As the image's fencing: out of the ISR unless it is the last member (then the
    /// partition is offline until it returns); a new leader only from the ISR.
    fn fence(&mut self, broker: i32) {
        if !self.fenced.insert(broker) {
            return;
        }
        let mut isr = self.meta.isr.clone();
        if isr.len() > 1 {
            isr.retain(|&b| b != broker);
        }
        let candidates = if self.unclean {
            BROKERS.to_vec()
        } else {
            isr.clone()
        };
        let leader = match self.meta.leader {
            Some(l) if l != broker => Some(l),
            _ => candidates.into_iter().find(|b| !self.fenced.contains(b)),
        };
        if let Some(l) = leader.filter(|l| !isr.contains(l)) {
            isr = vec![l];
        }
        if leader != self.meta.leader || isr != self.meta.isr {
            self.change(leader, isr);
        }
    }

    fn unfence(&mut self, broker: i32) {
        if !self.fenced.remove(&broker) {
            return;
        }
        if self.meta.leader.is_none() && self.meta.isr.contains(&broker) {
            let isr = self.meta.isr.clone();
            self.change(Some(broker), isr);
        }
    }

    /// AlterPartition: only from the current leader at the current epochs, to an ISR that keeps
    /// the leader and adds only unfenced replicas.
    fn alter_partition(&mut self, from: i32, proposal: &IsrProposal) -> bool {
        let m = &self.meta;
        let valid = m.leader == Some(from)
            && proposal.leader_epoch == m.leader_epoch
            && proposal.partition_epoch == m.partition_epoch
            && proposal.isr.contains(&from)
            && proposal
                .isr
                .iter()
                .all(|b| m.isr.contains(b) || !self.fenced.contains(b));
        if valid {
            let leader = m.leader;
            self.change(leader, proposal.isr.clone());
        }
        valid
    }
}

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }

    fn broker(&mut self) -> usize {
        self.below(BROKERS.len() as u64) as usize
    }
}

struct Sim {
    rng: Rng,
    now: i64,
    controller: Controller,
    brokers: Vec<Broker>,
    /// AlterPartition requests on their way to the controller: (from, proposal).
    inbox: VecDeque<(i32, IsrProposal)>,
    /// acks=all produces waiting: (broker, leader epoch, offset after the record, record).
    waiting: Vec<(i32, i32, i64, Rec, i64)>,
    /// Acknowledged records by offset.
    acked: BTreeMap<i64, Rec>,
    next_id: u64,
    min_isr: usize,
}

impl Sim {
    fn new(seed: u64, min_isr: usize) -> Self {
        let meta = Meta {
            version: 1,
            leader: Some(1),
            leader_epoch: 0,
            partition_epoch: 0,
            isr: BROKERS.to_vec(),
        };
        let brokers = BROKERS
            .iter()
            .map(|&id| Broker {
                id,
                running: true,
                log: Vec::new(),
                epochs: LeaderEpochs::default(),
                high_watermark: 0,
                known: Meta {
                    version: 0,
                    ..meta.clone()
                },
                leading: None,
            })
            .collect();
        let mut sim = Sim {
            rng: Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1),
            now: 0,
            controller: Controller {
                meta,
                fenced: BTreeSet::new(),
                unclean: false,
            },
            brokers,
            inbox: VecDeque::new(),
            waiting: Vec::new(),
            acked: BTreeMap::new(),
            next_id: 0,
            min_isr,
        };
        for i in 0..BROKERS.len() {
            sim.learn_metadata(i);
        }
        sim
    }

    fn config(&self) -> ReplicationConfig {
        ReplicationConfig {
            replica_lag_time_max_ms: LAG_MS,
            min_insync_replicas: self.min_isr,
        }
    }

    fn index(id: i32) -> usize {
        BROKERS.iter().position(|&b| b == id).unwrap()
    }

    fn handle(&mut self, from: i32, changes: Changes) {
        if let Some(p) = changes.proposal {
            self.inbox.push_back((from, p));
        }
    }

    /// The broker applies the controller's current metadata (become leader or follower).
    fn learn_metadata(&mut self, i: usize) {
        let meta = self.controller.meta.clone();
        let config = self.config();
        let now = self.now;
        let b = &mut self.brokers[i];
        if !b.running || meta.version <= b.known.version {
            return;
        }
        b.known = meta.clone();
        if meta.leader != Some(b.id) {
            b.leading = None;
            return;
        }
        let changes = match &mut b.leading {
            Some(state) if state.leader_epoch() == meta.leader_epoch => {
                state.update(&meta.assignment(), now)
            }
            _ => {
                b.epochs.assign(meta.leader_epoch, b.log_end());
                let state = LeaderState::new(
                    b.id,
                    &meta.assignment(),
                    config,
                    0,
                    b.log_end(),
                    b.high_watermark,
                    now,
                );
                b.high_watermark = state.high_watermark();
                b.leading = Some(state);
                Changes::default()
            }
        };
        let id = b.id;
        self.after_leader_change(i, id, changes);
    }

    fn after_leader_change(&mut self, i: usize, id: i32, changes: Changes) {
        if let Some(state) = &self.brokers[i].leading {
            self.brokers[i].high_watermark = state.high_watermark();
        }
        self.handle(id, changes);
    }

    fn produce(&mut self, i: usize) {
        let now = self.now;
        let b = &mut self.brokers[i];
        let Some(state) = b.leading.as_mut().filter(|_| b.running) else {
            return;
        };
        if state.check_produce().is_err() {
            return;
        }
        self.next_id += 1;
        let rec = Rec {
            epoch: state.leader_epoch(),
            id: self.next_id,
        };
        b.log.push(rec);
        let end = b.log.len() as i64;
        let epoch = state.leader_epoch();
        let changes = state.log_moved(0, end, now);
        self.waiting.push((b.id, epoch, end, rec, now));
        let id = b.id;
        self.after_leader_change(i, id, changes);
    }

    fn fetch(&mut self, i: usize) {
        let now = self.now;
        let follower = &self.brokers[i];
        let Some(leader_id) = follower.known.leader else {
            return;
        };
        if !follower.running || follower.leading.is_some() || leader_id == follower.id {
            return;
        }
        let request = FollowerFetch {
            replica: follower.id,
            fetch_offset: follower.log_end(),
            last_fetched_epoch: follower.epochs.latest_epoch(),
            current_leader_epoch: Some(follower.known.leader_epoch),
        };
        let l = Self::index(leader_id);
        let leader = &mut self.brokers[l];
        let Some(state) = leader.leading.as_mut().filter(|_| leader.running) else {
            return;
        };
        let (answer, changes) = state.fetch(request, &leader.epochs, now);
        let records: Vec<Rec> = leader
            .log
            .iter()
            .skip(request.fetch_offset.max(0) as usize)
            .take(3)
            .copied()
            .collect();
        self.after_leader_change(l, leader_id, changes);
        // A lost response: the leader counted the fetch, the follower never hears of it.
        if self.rng.chance(10) {
            return;
        }
        let follower = &mut self.brokers[i];
        match answer {
            Ok(FetchAnswer::Read {
                high_watermark: leader_hw,
            }) => {
                for rec in records {
                    let offset = follower.log_end();
                    follower.epochs.assign(rec.epoch, offset);
                    follower.log.push(rec);
                }
                follower.high_watermark = follower
                    .high_watermark
                    .max(high_watermark(leader_hw, follower.log_end()));
            }
            Ok(FetchAnswer::Diverging { diverging, .. }) => {
                let t = truncation(
                    &follower.epochs,
                    follower.log_end(),
                    follower.high_watermark,
                    diverging,
                );
                follower.truncate(t.offset);
            }
            Err(_) => {}
        }
    }

    fn tick(&mut self, i: usize) {
        let now = self.now;
        let b = &mut self.brokers[i];
        let Some(state) = b.leading.as_mut().filter(|_| b.running) else {
            return;
        };
        let changes = state.tick(now);
        let id = b.id;
        self.after_leader_change(i, id, changes);
    }

    fn deliver_proposal(&mut self) {
        let Some((from, proposal)) = self.inbox.pop_front() else {
            return;
        };
        if !self.controller.alter_partition(from, &proposal) {
            let b = &mut self.brokers[Self::index(from)];
            if let Some(state) = b.leading.as_mut() {
                if state.leader_epoch() == proposal.leader_epoch {
                    state.proposal_refused(&proposal);
                }
            }
        }
    }

    fn settle_produces(&mut self) {
        let mut still = Vec::new();
        for (broker, epoch, end, rec, _) in std::mem::take(&mut self.waiting) {
            let b = &self.brokers[Self::index(broker)];
            let state = b
                .leading
                .as_ref()
                .filter(|s| b.running && s.leader_epoch() == epoch);
            match state.map(|s| s.produce_done(end)) {
                // Leadership lost: NOT_LEADER_OR_FOLLOWER, never acknowledged.
                None => {}
                Some(None) => still.push((broker, epoch, end, rec, 0)),
                Some(Some(Ok(()))) => {
                    let previous = self.acked.insert(end - 1, rec);
                    assert!(
                        previous.is_none() || previous == Some(rec),
                        "offset {} acknowledged for two records: {previous:?} and {rec:?}",
                        end - 1
                    );
                }
                Some(Some(Err(_))) => {}
            }
        }
        self.waiting = still;
    }

    fn check_acknowledged_on_isr(&self, step: usize) {
        for &member in &self.controller.meta.isr {
            let log = &self.brokers[Self::index(member)].log;
            for (&offset, rec) in &self.acked {
                assert_eq!(
                    log.get(offset as usize),
                    Some(rec),
                    "step {step}: acknowledged record at {offset} missing from in-sync replica {member}\n{}",
                    self.describe()
                );
            }
        }
    }

    fn describe(&self) -> String {
        let mut out = format!(
            "controller: {:?} fenced {:?}\n",
            self.controller.meta, self.controller.fenced
        );
        for b in &self.brokers {
            out += &format!(
                "broker {} running {} hw {} known {:?} leading {:?}\n  log {:?}\n  epochs {:?}\n",
                b.id,
                b.running,
                b.high_watermark,
                b.known,
                b.leading.as_ref().map(|s| (
                    s.leader_epoch(),
                    s.isr().to_vec(),
                    s.high_watermark()
                )),
                b.log.iter().map(|r| (r.epoch, r.id)).collect::<Vec<_>>(),
                b.epochs.entries()
            );
        }
        out
    }

    fn step(&mut self, step: usize) {
        self.now += self.rng.below(200) as i64;
        let b = self.rng.broker();
        match self.rng.below(100) {
            0..=29 => self.produce(b),
            30..=64 => self.fetch(b),
            65..=72 => self.tick(b),
            73..=81 => self.deliver_proposal(),
            82..=93 => self.learn_metadata(b),
            94..=95 => {
                // Crash: the process and its unanswered produces are gone, the log stays.
                let broker = &mut self.brokers[b];
                broker.running = false;
                broker.leading = None;
                // A restarted process reads the metadata afresh.
                broker.known.version = 0;
            }
            96 => {
                // The controller fences a broker it thinks failed, alive or not (a zombie).
                let id = self.brokers[b].id;
                self.controller.fence(id);
            }
            97..=98 => {
                let broker = &mut self.brokers[b];
                if !broker.running {
                    broker.running = true;
                }
                let id = broker.id;
                if self.controller.fenced.contains(&id) && self.brokers[b].running {
                    self.controller.unfence(id);
                }
            }
            _ => {
                let id = self.brokers[b].id;
                if !self.brokers[b].running {
                    self.controller.fence(id);
                }
            }
        }
        self.settle_produces();
        self.check_acknowledged_on_isr(step);
    }

    /// Everything restarts and is unfenced, metadata and proposals flow, followers catch up.
    fn heal(&mut self) {
        for i in 0..BROKERS.len() {
            self.brokers[i].running = true;
            let id = self.brokers[i].id;
            self.controller.unfence(id);
        }
        for _ in 0..400 {
            self.now += 50;
            for i in 0..BROKERS.len() {
                self.learn_metadata(i);
                self.fetch(i);
                self.tick(i);
            }
            while !self.inbox.is_empty() {
                self.deliver_proposal();
            }
            self.settle_produces();
        }
    }
}

fn run(seed: u64, min_isr: usize, steps: usize) -> Sim {
    run_with(seed, min_isr, steps, false)
}

fn run_with(seed: u64, min_isr: usize, steps: usize, unclean: bool) -> Sim {
    let mut sim = Sim::new(seed, min_isr);
    sim.controller.unclean = unclean;
    for step in 0..steps {
        sim.step(step);
    }
    sim.heal();
    let leader = sim.controller.meta.leader.expect("a leader after healing");
    let reference = &sim.brokers[Sim::index(leader)].log;
    for (&offset, rec) in &sim.acked {
        assert_eq!(
            reference.get(offset as usize),
            Some(rec),
            "seed {seed}: lost"
        );
    }
    for b in &sim.brokers {
        assert_eq!(&b.log, reference, "seed {seed}: replica {} diverges", b.id);
    }
    sim
}

#[test]
fn no_acknowledged_record_is_lost_and_replicas_converge() {
    let mut acked = 0;
    let mut elections = 0;
    for seed in 0..300 {
        let sim = run(seed, 2, 600);
        acked += sim.acked.len();
        elections += sim.controller.meta.leader_epoch;
    }
    // The schedules exercise what they claim to: many acknowledgements and leader changes.
    assert!(acked > 1_500, "only {acked} records acknowledged");
    assert!(elections > 500, "only {elections} elections");
}

#[test]
fn with_min_insync_one_a_sole_leader_still_loses_nothing_acknowledged() {
    for seed in 0..300 {
        run(seed, 1, 600);
    }
}

#[test]
fn the_checker_catches_the_loss_an_unclean_election_causes() {
    let caught =
        (0..300).find(|&seed| std::panic::catch_unwind(|| run_with(seed, 2, 600, true)).is_err());
    assert!(
        caught.is_some(),
        "no schedule lost a record to an unclean election"
    );
}
