//! A deterministic simulation of a cluster run by the gossip planners: random joins (several at
//! once too), departures, failures, recoveries, flapping members, impostors claiming a node id,
//! leader changes, target changes and topic creations. Every planned Raft change is applied the
//! way Raft would apply it and every broker batch is appended to the metadata image; safety is
//! checked after every planning round and convergence whenever the cluster is left to settle.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use proptest::test_runner::RngSeed;
use skiff_metadata::{
    decide, plan_brokers, plan_quorum, ControllerRequest, GossipMember, MemberHealth,
    MetadataImage, QuorumAction, QuorumSettings, RaftMembership,
};
use uuid::Uuid;

const REPLACE_FAILED_VOTER_AFTER_MS: u64 = 5_000;
const ROUND_MS: u64 = 100;
/// Planning rounds a settle may take before the planners count as oscillating.
const MAX_SETTLE_ROUNDS: usize = 100;

#[derive(Debug, Clone)]
enum Event {
    /// That many new members join in the same round.
    Join(usize),
    /// A member whose node id is too large to be a broker id.
    JoinWithHugeId,
    Leave(usize),
    Fail(usize),
    Recover(usize),
    Suspect(usize),
    /// Fails and recovers faster than the planner replaces voters.
    Flap(usize),
    /// A different node claims the id of an existing member.
    Impostor(usize),
    /// Gossip forgets the oldest impostor.
    ImpostorGone,
    /// A member that left comes back under the same name.
    Rejoin(usize),
    MoveLeader(usize),
    Retarget(usize),
    CreateTopic {
        partitions: i32,
        replication: i16,
    },
    Wait(u64),
    Settle,
}

fn event() -> impl Strategy<Value = Event> {
    prop_oneof![
        4 => (1..=3usize).prop_map(Event::Join),
        1 => Just(Event::JoinWithHugeId),
        2 => any::<usize>().prop_map(Event::Leave),
        3 => any::<usize>().prop_map(Event::Fail),
        3 => any::<usize>().prop_map(Event::Recover),
        1 => any::<usize>().prop_map(Event::Suspect),
        2 => any::<usize>().prop_map(Event::Flap),
        1 => any::<usize>().prop_map(Event::Impostor),
        1 => Just(Event::ImpostorGone),
        1 => any::<usize>().prop_map(Event::Rejoin),
        1 => any::<usize>().prop_map(Event::MoveLeader),
        1 => (0..3usize).prop_map(Event::Retarget),
        1 => (1..4i32, 1..3i16)
            .prop_map(|(partitions, replication)| Event::CreateTopic { partitions, replication }),
        2 => (0..10_000u64).prop_map(Event::Wait),
        2 => Just(Event::Settle),
    ]
}

fn genuine(id: u64, health: MemberHealth) -> GossipMember {
    GossipMember {
        node_id: id,
        name: format!("node-{id}"),
        raft_addr: format!("node-{id}:7000"),
        kafka_addr: format!("node-{id}:9092"),
        rack: Some(format!("rack-{}", id % 3)),
        health,
        run: 0,
    }
}

fn largest_odd_at_most(n: usize) -> usize {
    if n.is_multiple_of(2) {
        n.saturating_sub(1)
    } else {
        n
    }
}

struct Sim {
    now_ms: u64,
    leader: u64,
    next_id: u64,
    impostors_created: u64,
    topics_created: u128,
    members: Vec<GossipMember>,
    membership: RaftMembership,
    image: MetadataImage,
    settings: QuorumSettings,
}

impl Sim {
    /// Node 0 bootstrapped the cluster as its only voter and leads it.
    fn new(target_voters: usize) -> Self {
        Sim {
            now_ms: 0,
            leader: 0,
            next_id: 1,
            impostors_created: 0,
            topics_created: 0,
            members: vec![genuine(0, MemberHealth::Alive)],
            membership: RaftMembership {
                voters: BTreeMap::from([(0, "node-0:7000".to_string())]),
                learners: BTreeMap::new(),
            },
            image: MetadataImage::new(),
            settings: QuorumSettings {
                target_voters,
                replace_failed_voter_after_ms: REPLACE_FAILED_VOTER_AFTER_MS,
            },
        }
    }

    fn join(&mut self, count: usize) {
        for _ in 0..count {
            self.members
                .push(genuine(self.next_id, MemberHealth::Alive));
            self.next_id += 1;
        }
    }

    /// Index in `members` of the `pick`-th genuine member, other than the leader, that `eligible`
    /// accepts. The leader runs the planner, so gossip never sees it fail or leave.
    fn pick(&self, pick: usize, eligible: impl Fn(MemberHealth) -> bool) -> Option<usize> {
        let candidates: Vec<usize> = (0..self.members.len())
            .filter(|&i| {
                let m = &self.members[i];
                m.name.starts_with("node-") && m.node_id != self.leader && eligible(m.health)
            })
            .collect();
        (!candidates.is_empty()).then(|| candidates[pick % candidates.len()])
    }

    fn set_health(
        &mut self,
        pick: usize,
        eligible: impl Fn(MemberHealth) -> bool,
        health: MemberHealth,
    ) -> Option<usize> {
        let index = self.pick(pick, eligible)?;
        self.members[index].health = health;
        Some(index)
    }

    fn run(&mut self, event: &Event, rounds: usize) -> Result<(), TestCaseError> {
        let now = self.now_ms;
        match *event {
            Event::Join(count) => self.join(count),
            Event::JoinWithHugeId => {
                self.members
                    .push(genuine(u64::MAX - self.next_id, MemberHealth::Alive));
                self.next_id += 1;
            }
            Event::Leave(pick) => {
                self.set_health(pick, |h| h != MemberHealth::Left, MemberHealth::Left);
            }
            Event::Fail(pick) => {
                self.set_health(
                    pick,
                    |h| matches!(h, MemberHealth::Alive | MemberHealth::Suspect),
                    MemberHealth::Failed { since_ms: now },
                );
            }
            Event::Recover(pick) => {
                self.set_health(
                    pick,
                    |h| matches!(h, MemberHealth::Failed { .. } | MemberHealth::Suspect),
                    MemberHealth::Alive,
                );
            }
            Event::Suspect(pick) => {
                self.set_health(pick, |h| h == MemberHealth::Alive, MemberHealth::Suspect);
            }
            Event::Rejoin(pick) => {
                self.set_health(pick, |h| h == MemberHealth::Left, MemberHealth::Alive);
            }
            Event::Flap(pick) => {
                if let Some(index) = self.pick(pick, |h| h == MemberHealth::Alive) {
                    for _ in 0..3 {
                        self.members[index].health = MemberHealth::Failed {
                            since_ms: self.now_ms,
                        };
                        self.round()?;
                        self.members[index].health = MemberHealth::Alive;
                        self.round()?;
                    }
                }
            }
            Event::Impostor(pick) => {
                let ids: Vec<u64> = self.members.iter().map(|m| m.node_id).collect();
                let node_id = ids[pick % ids.len()];
                self.impostors_created += 1;
                let name = format!("impostor-{}", self.impostors_created);
                self.members.push(GossipMember {
                    node_id,
                    raft_addr: format!("{name}:7000"),
                    kafka_addr: format!("{name}:9092"),
                    name,
                    rack: None,
                    health: MemberHealth::Alive,
                    run: 0,
                });
            }
            Event::ImpostorGone => {
                if let Some(index) = self
                    .members
                    .iter()
                    .position(|m| m.name.starts_with("impostor-"))
                {
                    self.members.remove(index);
                }
            }
            Event::MoveLeader(pick) => {
                let electable: Vec<u64> = self
                    .membership
                    .voters
                    .keys()
                    .copied()
                    .filter(|&id| {
                        self.members.iter().any(|m| {
                            m.node_id == id
                                && m.name.starts_with("node-")
                                && m.health == MemberHealth::Alive
                        })
                    })
                    .collect();
                if !electable.is_empty() {
                    self.leader = electable[pick % electable.len()];
                }
            }
            Event::Retarget(choice) => self.settings.target_voters = [1, 3, 5][choice],
            Event::CreateTopic {
                partitions,
                replication,
            } => {
                self.topics_created += 1;
                let request = ControllerRequest::CreateTopic {
                    name: format!("topic-{}", self.topics_created),
                    topic_id: Uuid::from_u128(self.topics_created),
                    partitions,
                    replication_factor: replication,
                    configs: BTreeMap::new(),
                    assignments: None,
                };
                if let Ok(records) = decide(&self.image, &request) {
                    self.append(&records)?;
                }
            }
            Event::Wait(ms) => self.now_ms += ms,
            Event::Settle => return self.settle(),
        }
        for _ in 0..rounds {
            self.round()?;
        }
        Ok(())
    }

    fn append(&mut self, records: &[skiff_metadata::MetadataRecord]) -> Result<(), TestCaseError> {
        let next = self.image.offset().map_or(0, |o| o + 1);
        self.image
            .apply_batch(next, records)
            .map_err(|e| TestCaseError::fail(format!("batch {records:?} refused: {e}")))
    }

    /// Node ids claimed by gossip members with different names and different Raft addresses.
    fn contested(&self) -> BTreeSet<u64> {
        let raft_members: Vec<&GossipMember> = self
            .members
            .iter()
            .filter(|m| !m.raft_addr.is_empty())
            .collect();
        raft_members
            .iter()
            .flat_map(|a| raft_members.iter().map(move |b| (*a, *b)))
            .filter(|(a, b)| {
                a.node_id == b.node_id && a.name != b.name && a.raft_addr != b.raft_addr
            })
            .map(|(a, _)| a.node_id)
            .collect()
    }

    /// The health of an uncontested node id.
    fn health(&self, id: u64) -> Option<MemberHealth> {
        if self.contested().contains(&id) {
            return None;
        }
        self.members
            .iter()
            .find(|m| m.node_id == id)
            .map(|m| m.health)
    }

    /// One planning round: the planned Raft change and broker records, applied. Returns whether
    /// anything was planned.
    fn round(&mut self) -> Result<bool, TestCaseError> {
        self.now_ms += ROUND_MS;
        let plan = plan_quorum(
            self.now_ms,
            self.leader,
            &self.members,
            &self.membership,
            &self.settings,
        );
        prop_assert_eq!(plan.conflicts.len(), self.contested().len());
        let mut acted = false;
        if let Some(action) = plan.action {
            self.change_membership(action)?;
            acted = true;
        }
        let records = plan_brokers(&self.image, &self.members, &BTreeSet::new());
        if !records.is_empty() {
            self.append(&records)?;
            acted = true;
        }
        self.check_safety()?;
        Ok(acted)
    }

    /// Applies a change as Raft does, after checking it is one the planner may make.
    fn change_membership(&mut self, action: QuorumAction) -> Result<(), TestCaseError> {
        let contested = self.contested();
        let voters = &mut self.membership.voters;
        let learners = &mut self.membership.learners;
        match action {
            QuorumAction::AddLearner { node_id, raft_addr } => {
                prop_assert!(!voters.contains_key(&node_id) && !learners.contains_key(&node_id));
                prop_assert!(!contested.contains(&node_id));
                prop_assert!(self.members.iter().any(|m| m.node_id == node_id
                    && m.raft_addr == raft_addr
                    && m.health == MemberHealth::Alive));
                learners.insert(node_id, raft_addr);
            }
            QuorumAction::SetVoters(next) => {
                prop_assert!(
                    next.contains(&self.leader),
                    "leader {} dropped: {:?}",
                    self.leader,
                    next
                );
                prop_assert!(next
                    .iter()
                    .all(|id| voters.contains_key(id) || learners.contains_key(id)));
                for id in &contested {
                    prop_assert_eq!(
                        voters.contains_key(id),
                        next.contains(id),
                        "contested {} moved",
                        id
                    );
                }
                prop_assert!(
                    !next.len().is_multiple_of(2)
                        || next
                            .iter()
                            .all(|id| *id == self.leader || contested.contains(id)),
                    "even voter set {:?}",
                    next
                );
                let mut all = std::mem::take(voters);
                all.append(learners);
                for (id, addr) in all {
                    if next.contains(&id) {
                        voters.insert(id, addr);
                    } else {
                        learners.insert(id, addr);
                    }
                }
            }
            QuorumAction::RemoveNode(id) => {
                prop_assert!(learners.contains_key(&id) && !voters.contains_key(&id));
                prop_assert!(!contested.contains(&id));
                learners.remove(&id);
                prop_assert_eq!(self.health(id), Some(MemberHealth::Left));
            }
        }
        Ok(())
    }

    /// What must hold after every round, settled or not.
    fn check_safety(&self) -> Result<(), TestCaseError> {
        prop_assert!(!self.membership.voters.is_empty());
        prop_assert!(self.membership.voters.contains_key(&self.leader));
        for (_, _, p) in self.image.partitions() {
            if let Some(leader) = p.leader {
                prop_assert!(
                    !self.image.broker(leader).unwrap().fenced,
                    "fenced leader {}",
                    leader
                );
            }
        }
        Ok(())
    }

    fn settle(&mut self) -> Result<(), TestCaseError> {
        for _ in 0..MAX_SETTLE_ROUNDS {
            if !self.round()? {
                return self.check_settled();
            }
        }
        Err(TestCaseError::fail(format!(
            "no quiescence after {MAX_SETTLE_ROUNDS} rounds: {:?}",
            self.membership
        )))
    }

    /// What must hold once the planners have nothing left to do.
    fn check_settled(&self) -> Result<(), TestCaseError> {
        let contested = self.contested();
        let target = self.settings.target_voters;
        let voters = &self.membership.voters;
        let learners: Vec<u64> = self.membership.learners.keys().copied().collect();
        let alive_learners = learners
            .iter()
            .filter(|&&id| self.health(id) == Some(MemberHealth::Alive))
            .count();
        if !voters.keys().any(|id| contested.contains(id)) {
            prop_assert!(!voters.len().is_multiple_of(2), "even voters {:?}", voters);
            prop_assert!(
                voters.len() <= target,
                "{} voters over target {}",
                voters.len(),
                target
            );
            prop_assert!(
                !(voters.len() + 2 <= target && alive_learners >= 2),
                "voters {:?} could grow from learners {:?}",
                voters,
                learners
            );
        }
        let all_nodes: Vec<u64> = voters
            .keys()
            .copied()
            .chain(learners.iter().copied())
            .collect();
        if all_nodes
            .iter()
            .all(|&id| self.health(id) == Some(MemberHealth::Alive))
        {
            prop_assert_eq!(
                voters.len(),
                largest_odd_at_most(target.min(all_nodes.len()))
            );
        }
        for &id in &all_nodes {
            prop_assert!(
                id == self.leader || self.health(id) != Some(MemberHealth::Left),
                "departed node {} still in {:?}",
                id,
                self.membership
            );
        }
        if alive_learners > 0 {
            for &id in voters.keys().filter(|&&id| id != self.leader) {
                if let Some(MemberHealth::Failed { since_ms }) = self.health(id) {
                    prop_assert!(
                        self.now_ms - since_ms < REPLACE_FAILED_VOTER_AFTER_MS,
                        "voter {} failed too long",
                        id
                    );
                }
            }
        }
        for member in self
            .members
            .iter()
            .filter(|m| !contested.contains(&m.node_id))
        {
            if member.health == MemberHealth::Alive {
                prop_assert!(
                    all_nodes.contains(&member.node_id),
                    "{} not in Raft",
                    member.name
                );
            }
            let Ok(broker_id) = i32::try_from(member.node_id) else {
                continue;
            };
            let broker = self.image.broker(broker_id);
            match member.health {
                MemberHealth::Alive => {
                    let broker = broker.ok_or_else(|| {
                        TestCaseError::fail(format!("{} unregistered", member.name))
                    })?;
                    prop_assert!(!broker.fenced, "{} fenced", member.name);
                    prop_assert_eq!(&broker.endpoints, &vec![member.kafka_addr.clone()]);
                    prop_assert_eq!(&broker.rack, &member.rack);
                }
                MemberHealth::Failed { .. } | MemberHealth::Left => {
                    prop_assert!(broker.is_none_or(|b| b.fenced), "{} unfenced", member.name);
                }
                MemberHealth::Suspect => {}
            }
        }
        Ok(())
    }
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 512,
        rng_seed: RngSeed::Fixed(0x5eed_5c1f),
        ..ProptestConfig::default()
    })]

    #[test]
    fn gossip_planners_keep_the_quorum_safe_and_converge(
        target in prop_oneof![Just(1usize), Just(3), Just(5)],
        events in prop::collection::vec((event(), 0..4usize), 1..60),
    ) {
        let mut sim = Sim::new(target);
        for (event, rounds) in &events {
            sim.run(event, *rounds)?;
        }
        sim.settle()?;
    }
}

#[test]
fn seven_members_joining_at_once_settle_at_three_voters_and_four_learners() {
    let mut sim = Sim::new(3);
    sim.join(6);
    sim.settle().unwrap();
    assert_eq!(sim.membership.voters.len(), 3);
    assert_eq!(sim.membership.learners.len(), 4);
    assert!(sim.image.brokers().all(|b| !b.fenced));
    assert_eq!(sim.image.brokers().count(), 7);
}

#[test]
fn a_flapping_voter_keeps_its_seat() {
    let mut sim = Sim::new(3);
    sim.join(3);
    sim.settle().unwrap();
    let voters_before = sim.membership.voters.clone();
    let flapper = *voters_before.keys().find(|&&id| id != sim.leader).unwrap();
    for _ in 0..20 {
        let since_ms = sim.now_ms;
        sim.members[flapper as usize].health = MemberHealth::Failed { since_ms };
        for _ in 0..10 {
            sim.round().unwrap();
        }
        sim.members[flapper as usize].health = MemberHealth::Alive;
        sim.round().unwrap();
    }
    sim.settle().unwrap();
    assert_eq!(sim.membership.voters, voters_before);
}

#[test]
fn a_voter_failed_for_good_is_replaced_and_a_departed_one_removed() {
    let mut sim = Sim::new(3);
    sim.join(3);
    sim.settle().unwrap();
    let learner = *sim.membership.learners.keys().next().unwrap();
    let failed = *sim
        .membership
        .voters
        .keys()
        .find(|&&id| id != sim.leader)
        .unwrap();
    sim.members[failed as usize].health = MemberHealth::Failed {
        since_ms: sim.now_ms,
    };
    sim.now_ms += REPLACE_FAILED_VOTER_AFTER_MS;
    sim.settle().unwrap();
    assert!(sim.membership.voters.contains_key(&learner));
    assert!(sim.membership.learners.contains_key(&failed));
    assert!(sim.image.broker(failed as i32).unwrap().fenced);

    sim.members[failed as usize].health = MemberHealth::Left;
    sim.settle().unwrap();
    assert!(!sim.membership.learners.contains_key(&failed));
    assert_eq!(sim.membership.voters.len(), 3);
}
