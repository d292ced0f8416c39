//! Turns gossip membership into Raft membership changes and broker records. Gossip (as in Serf)
//! learns quickly and cheaply who is alive, but it is only eventually consistent and can be
//! wrong for a while; Raft membership changes are slow, must happen one at a time, and a wrong
//! one can cost the quorum. So the planners here are pure and cautious: they look at the gossip
//! view and the committed state, propose the single most important next step, and are simply
//! called again once that step has committed.

use std::collections::{BTreeMap, BTreeSet};

use uuid::Uuid;

use crate::controller::{fence_broker_records, unfence_broker_records};
use crate::image::MetadataImage;
use crate::reassignment::grow_offsets_topic_records;
use crate::record::MetadataRecord;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct QuorumSettings {
    /// 1, 3 or 5. An even value is treated as the odd number below it (an even voter count
    /// tolerates no more failures than one voter fewer) and 0 as 1.
    pub target_voters: usize,
    /// How long a voter must stay failed before it is replaced. Gossip declares nodes failed
    /// within seconds, while a restart or a short partition heals by itself, so replacing at once
    /// would churn the voter set.
    pub replace_failed_voter_after_ms: u64,
}

/// A member's state as gossip sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MemberHealth {
    Alive,
    /// Missed probes but not yet declared failed; gossip often takes this back, so nothing acts
    /// on it.
    Suspect,
    Failed {
        since_ms: u64,
    },
    /// Left gracefully: it is not coming back under this identity.
    Left,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GossipMember {
    pub node_id: u64,
    /// The gossip name, unique per node.
    pub name: String,
    /// Empty for members that take no part in Raft (tools, clients); the planners ignore them.
    pub raft_addr: String,
    /// Kafka listener, `host:port`; empty for a member that serves no Kafka clients.
    pub kafka_addr: String,
    pub rack: Option<String>,
    pub health: MemberHealth,
    /// The member's process run (its `run` tag: the start time): new when the process
    /// restarts, unchanged when gossip declared it failed and it rejoined (which renews only
    /// its gossip identity).
    pub run: u64,
}

/// The committed Raft configuration: node ids and their Raft addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RaftMembership {
    pub voters: BTreeMap<u64, String>,
    /// Non-voting members that replicate the log. An id listed in both maps counts as a voter.
    pub learners: BTreeMap<u64, String>,
}

/// One Raft membership change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QuorumAction {
    AddLearner {
        node_id: u64,
        raft_addr: String,
    },
    /// Makes exactly these nodes the voters, in one joint-consensus change. Every id is already a
    /// voter or learner; voters left out stay on as learners.
    SetVoters(BTreeSet<u64>),
    /// Takes a learner out of the cluster; never names a voter.
    RemoveNode(u64),
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct QuorumPlan {
    pub action: Option<QuorumAction>,
    /// One message per node id that different nodes claim, for the operator: such ids are left
    /// alone, in Raft and in the broker records, until one of the claimants goes away.
    pub conflicts: Vec<String>,
}

/// The next Raft membership change, at most one, because Raft changes membership one step at a
/// time; the caller commits it and plans again. In priority order:
///
/// 1. Nodes that left: a left voter is first taken out of the voters, then removed as a learner.
///    Where its going would leave an even count, the lowest-id alive learner takes its seat, or
///    failing that one more voter steps down.
/// 2. A voter failed for at least `replace_failed_voter_after_ms` steps down and stays on as a
///    learner, in case it comes back; the lowest-id alive learner takes its seat (without one
///    nothing changes, unless the count was even and dropping it makes it odd).
/// 3. Alive members outside the membership join as learners, lowest id first.
/// 4. The voter count moves to the largest odd number within `target_voters` and the voters
///    plus alive learners: an odd count, because an even one tolerates no more failures than
///    one voter fewer while needing a larger majority. Alive learners are promoted lowest id
///    first; voters step down left first, then failed, unknown to gossip, suspect and alive,
///    highest id first.
///
/// Safety rules: the leader stays a voter (a leader that is not a voter is stepping down, and
/// its successor plans), so the voter set is never empty; suspect members and node ids claimed
/// by conflicting members are never acted on. The one even count this planner produces is when
/// a left voter must go, no learner can take its seat, and every other voter is the leader or
/// conflicted: that is no worse than keeping the departed voter, whose vote never comes. An even
/// count that only acting on conflicted voters could fix is left as it is.
/// Voters gossip does not know at all are not removed: a leader that has just started may not
/// have heard of everyone yet.
pub fn plan_quorum(
    now_ms: u64,
    leader_id: u64,
    members: &[GossipMember],
    membership: &RaftMembership,
    settings: &QuorumSettings,
) -> QuorumPlan {
    let claims = Claims::resolve(members);
    let action = if membership.voters.contains_key(&leader_id) {
        let planner = QuorumPlanner {
            now_ms,
            leader_id,
            claims: &claims,
            membership,
            target_voters: largest_odd_at_most(settings.target_voters).max(1),
            replace_failed_voter_after_ms: settings.replace_failed_voter_after_ms,
        };
        planner.next_action()
    } else {
        None
    };
    QuorumPlan {
        action,
        conflicts: claims.conflicts.into_values().collect(),
    }
}

/// The broker records gossip calls for, so that alive members serve as unfenced brokers and
/// failed or departed ones are fenced; they apply to `image` as one batch. Each broker moves
/// one step per call (register, then unfence; or fence, then register again with its new
/// address), and the caller plans again after the records commit.
///
/// Broker ids are the node ids that fit an `i32`. A broker is registered with its process
/// run as its incarnation; a broker seen with another run restarted, so it is fenced, which takes it out of every ISR, and
/// registered again, as Kafka does with a new broker epoch (KIP-903): it returns to an ISR only
/// after catching up in its new run, since a fast restart may have lost what its old run had
/// (a replaced disk, an OS crash). A member without a Kafka address is treated like a departed
/// one: placing replicas on a broker clients cannot reach would make its partitions unusable.
///
/// `expired_sessions` are the brokers whose session with the controller expired (no Raft
/// heartbeat answered for the session timeout, Kafka's broker.session.timeout.ms): fenced
/// whatever gossip says, and unfenced only once gossip and the session both see them alive.
/// This is the fast failure signal; gossip's verdict takes several seconds longer.
///
/// The same batch starts the reassignments that raise `__consumer_offsets` to its replication
/// factor when the brokers it lacked are there.
pub fn plan_brokers(
    image: &MetadataImage,
    members: &[GossipMember],
    expired_sessions: &BTreeSet<i32>,
) -> Vec<MetadataRecord> {
    let claims = Claims::resolve(members);
    // A broker gossip has not heard of (a restarted controller's gossip may not know everyone
    // yet) is still fenced when its session expires: the session alone is Kafka's signal.
    let mut broker_ids: BTreeSet<i32> = claims
        .members
        .keys()
        .filter_map(|&node_id| i32::try_from(node_id).ok())
        .collect();
    broker_ids.extend(expired_sessions);
    let mut planned = image.clone();
    let mut records = Vec::new();
    for broker_id in broker_ids {
        let step = if expired_sessions.contains(&broker_id) {
            fence_broker_records(&planned, broker_id)
        } else {
            match u64::try_from(broker_id)
                .ok()
                .and_then(|id| claims.members.get(&id))
            {
                Some(member) => broker_step(&planned, broker_id, member),
                None => continue,
            }
        };
        if step.is_empty() {
            continue;
        }
        // Fencing one broker changes the ISRs the next one's records are computed from, so
        // every step is planned on the image as the earlier steps leave it.
        let mut next = planned.clone();
        if next.apply_unversioned(&step).is_ok() {
            planned = next;
            records.extend(step);
        }
    }
    records.extend(grow_offsets_topic_records(&planned));
    records
}

fn broker_step(
    image: &MetadataImage,
    broker_id: i32,
    member: &GossipMember,
) -> Vec<MetadataRecord> {
    match member.health {
        MemberHealth::Suspect => return Vec::new(),
        MemberHealth::Alive if !member.kafka_addr.is_empty() => {}
        MemberHealth::Alive | MemberHealth::Failed { .. } | MemberHealth::Left => {
            return fence_broker_records(image, broker_id);
        }
    }
    let endpoints = vec![member.kafka_addr.clone()];
    let incarnation = incarnation_of(member.run);
    let register = || {
        vec![MetadataRecord::RegisterBroker {
            id: broker_id,
            endpoints: endpoints.clone(),
            rack: member.rack.clone(),
            incarnation,
        }]
    };
    match image.broker(broker_id) {
        None => register(),
        Some(broker)
            if broker.endpoints != endpoints
                || broker.rack != member.rack
                || broker.incarnation != incarnation =>
        {
            if broker.fenced {
                register()
            } else {
                fence_broker_records(image, broker_id)
            }
        }
        Some(_) => unfence_broker_records(image, broker_id),
    }
}

/// A broker's incarnation as registered: its process run.
pub fn incarnation_of(run: u64) -> Uuid {
    Uuid::from_u128(u128::from(run))
}

/// The gossip members that take part in Raft, one per node id.
struct Claims<'a> {
    members: BTreeMap<u64, &'a GossipMember>,
    /// Node ids claimed by members with different names and different Raft addresses, with the
    /// message for the operator. The same node under a new name or a new address is not a
    /// conflict: that is a restart.
    conflicts: BTreeMap<u64, String>,
}

impl<'a> Claims<'a> {
    fn resolve(members: &'a [GossipMember]) -> Self {
        let mut claims_by_id: BTreeMap<u64, Vec<&GossipMember>> = BTreeMap::new();
        for member in members.iter().filter(|m| !m.raft_addr.is_empty()) {
            claims_by_id.entry(member.node_id).or_default().push(member);
        }
        let mut resolved = Claims {
            members: BTreeMap::new(),
            conflicts: BTreeMap::new(),
        };
        for (node_id, mut claims) in claims_by_id {
            claims.sort_by(|a, b| (&a.name, &a.raft_addr).cmp(&(&b.name, &b.raft_addr)));
            let clash = claims.iter().enumerate().find_map(|(i, first)| {
                claims
                    .iter()
                    .skip(i + 1)
                    .find(|other| other.name != first.name && other.raft_addr != first.raft_addr)
                    .map(|other| (*first, *other))
            });
            match clash {
                Some((first, other)) => {
                    resolved.conflicts.insert(
                        node_id,
                        format!(
                            "node id {node_id} is claimed by member {:?} (raft {}) and member {:?} (raft {}); both are ignored until one of them leaves",
                            first.name, first.raft_addr, other.name, other.raft_addr
                        ),
                    );
                }
                None => {
                    // The same node seen under several names or addresses: its healthiest
                    // sighting is the current one.
                    if let Some(best) = claims.into_iter().min_by_key(|m| health_rank(m.health)) {
                        resolved.members.insert(node_id, best);
                    }
                }
            }
        }
        resolved
    }
}

fn health_rank(health: MemberHealth) -> u8 {
    match health {
        MemberHealth::Alive => 0,
        MemberHealth::Suspect => 1,
        MemberHealth::Failed { .. } => 2,
        MemberHealth::Left => 3,
    }
}

fn largest_odd_at_most(n: usize) -> usize {
    if n.is_multiple_of(2) {
        n.saturating_sub(1)
    } else {
        n
    }
}

struct QuorumPlanner<'a> {
    now_ms: u64,
    leader_id: u64,
    claims: &'a Claims<'a>,
    membership: &'a RaftMembership,
    target_voters: usize,
    replace_failed_voter_after_ms: u64,
}

impl QuorumPlanner<'_> {
    fn next_action(&self) -> Option<QuorumAction> {
        self.remove_departed()
            .or_else(|| self.replace_failed_voter())
            .or_else(|| self.add_joined())
            .or_else(|| self.resize_voters())
    }

    /// `None` when gossip has no usable word on the node: unknown, or its id is contested.
    fn health(&self, node_id: u64) -> Option<MemberHealth> {
        self.claims.members.get(&node_id).map(|m| m.health)
    }

    fn is_alive(&self, node_id: u64) -> bool {
        self.health(node_id) == Some(MemberHealth::Alive)
    }

    fn voters(&self) -> BTreeSet<u64> {
        self.membership.voters.keys().copied().collect()
    }

    fn learners(&self) -> impl Iterator<Item = u64> + '_ {
        self.membership
            .learners
            .keys()
            .copied()
            .filter(|id| !self.membership.voters.contains_key(id))
    }

    fn alive_learners(&self) -> Vec<u64> {
        self.learners().filter(|&id| self.is_alive(id)).collect()
    }

    /// Voters that may lose their seat, the ones whose vote is least likely to come first: never
    /// the leader, never a contested id.
    fn demotion_order(&self, voters: &BTreeSet<u64>) -> Vec<u64> {
        let mut candidates: Vec<u64> = voters
            .iter()
            .copied()
            .filter(|&id| id != self.leader_id && !self.claims.conflicts.contains_key(&id))
            .collect();
        let claim_to_seat = |id: u64| match self.health(id) {
            Some(MemberHealth::Left) => 0,
            Some(MemberHealth::Failed { .. }) => 1,
            None => 2,
            Some(MemberHealth::Suspect) => 3,
            Some(MemberHealth::Alive) => 4,
        };
        candidates.sort_by_key(|&id| (claim_to_seat(id), std::cmp::Reverse(id)));
        candidates
    }

    fn remove_departed(&self) -> Option<QuorumAction> {
        let has_left = |id: u64| self.health(id) == Some(MemberHealth::Left);
        let voters = self.voters();
        if let Some(&departed) = voters
            .iter()
            .find(|&&id| id != self.leader_id && has_left(id))
        {
            let mut next = voters.clone();
            next.remove(&departed);
            if next.len().is_multiple_of(2) {
                if let Some(&successor) = self.alive_learners().first() {
                    next.insert(successor);
                } else if let Some(&extra) = self.demotion_order(&next).first() {
                    next.remove(&extra);
                }
            }
            return Some(QuorumAction::SetVoters(next));
        }
        self.learners()
            .find(|&id| has_left(id))
            .map(QuorumAction::RemoveNode)
    }

    /// A voter count that is even (while a contested id blocked fixing it) just drops the failed
    /// voter; an odd one needs a successor.
    fn replace_failed_voter(&self) -> Option<QuorumAction> {
        let failed_long_enough = |id: u64| {
            matches!(self.health(id), Some(MemberHealth::Failed { since_ms })
                if self.now_ms.saturating_sub(since_ms) >= self.replace_failed_voter_after_ms)
        };
        let voters = self.voters();
        let &failed = voters
            .iter()
            .find(|&&id| id != self.leader_id && failed_long_enough(id))?;
        let mut next = voters.clone();
        next.remove(&failed);
        if next.len().is_multiple_of(2) {
            next.insert(*self.alive_learners().first()?);
        }
        Some(QuorumAction::SetVoters(next))
    }

    fn add_joined(&self) -> Option<QuorumAction> {
        self.claims
            .members
            .iter()
            .find(|(id, member)| {
                member.health == MemberHealth::Alive
                    && !self.membership.voters.contains_key(id)
                    && !self.membership.learners.contains_key(id)
            })
            .map(|(&node_id, member)| QuorumAction::AddLearner {
                node_id,
                raft_addr: member.raft_addr.clone(),
            })
    }

    fn resize_voters(&self) -> Option<QuorumAction> {
        let mut voters = self.voters();
        let promotable = self.alive_learners();
        let desired = largest_odd_at_most(self.target_voters.min(voters.len() + promotable.len()));
        if desired > voters.len() {
            let missing = desired - voters.len();
            voters.extend(promotable.into_iter().take(missing));
            return Some(QuorumAction::SetVoters(voters));
        }
        let demotable = self.demotion_order(&voters);
        let mut demotions = (voters.len() - desired).min(demotable.len());
        // Demoting fewer than asked must still leave an odd count.
        if (voters.len() - demotions).is_multiple_of(2) {
            demotions = demotions.saturating_sub(1);
        }
        if demotions == 0 {
            return None;
        }
        for id in demotable.into_iter().take(demotions) {
            voters.remove(&id);
        }
        Some(QuorumAction::SetVoters(voters))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::LeaderChange;

    const LEADER: u64 = 1;
    const NOW: u64 = 10_000;

    fn member(id: u64, health: MemberHealth) -> GossipMember {
        GossipMember {
            node_id: id,
            name: format!("node-{id}"),
            raft_addr: format!("10.0.0.{id}:7000"),
            kafka_addr: format!("10.0.0.{id}:9092"),
            rack: None,
            health,
            // The nil incarnation the `register` records below carry.
            run: 0,
        }
    }

    fn alive(ids: &[u64]) -> Vec<GossipMember> {
        ids.iter()
            .map(|&id| member(id, MemberHealth::Alive))
            .collect()
    }

    fn with(mut members: Vec<GossipMember>, id: u64, health: MemberHealth) -> Vec<GossipMember> {
        members.retain(|m| m.node_id != id);
        members.push(member(id, health));
        members
    }

    fn raft(voters: &[u64], learners: &[u64]) -> RaftMembership {
        let addrs = |ids: &[u64]| {
            ids.iter()
                .map(|&id| (id, format!("10.0.0.{id}:7000")))
                .collect()
        };
        RaftMembership {
            voters: addrs(voters),
            learners: addrs(learners),
        }
    }

    fn settings(target_voters: usize) -> QuorumSettings {
        QuorumSettings {
            target_voters,
            replace_failed_voter_after_ms: 5_000,
        }
    }

    fn plan(members: &[GossipMember], membership: &RaftMembership) -> Option<QuorumAction> {
        plan_quorum(NOW, LEADER, members, membership, &settings(3)).action
    }

    fn voters(ids: &[u64]) -> Option<QuorumAction> {
        Some(QuorumAction::SetVoters(ids.iter().copied().collect()))
    }

    fn failed_since(since_ms: u64) -> MemberHealth {
        MemberHealth::Failed { since_ms }
    }

    #[test]
    fn left_voter_gives_its_seat_to_an_alive_learner_then_is_removed() {
        let members = with(alive(&[1, 2, 3, 4]), 3, MemberHealth::Left);
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[4])), voters(&[1, 2, 4]));
        assert_eq!(
            plan(&members, &raft(&[1, 2, 4], &[3])),
            Some(QuorumAction::RemoveNode(3))
        );
    }

    #[test]
    fn left_voter_without_a_successor_takes_another_voter_along_to_stay_odd() {
        let members = with(alive(&[1, 2, 3]), 3, MemberHealth::Left);
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[])), voters(&[1]));
        let members = with(
            with(alive(&[1, 2, 3, 4, 5]), 5, MemberHealth::Left),
            2,
            failed_since(NOW),
        );
        assert_eq!(
            plan(&members, &raft(&[1, 2, 3, 4, 5], &[])),
            voters(&[1, 3, 4])
        );
    }

    #[test]
    fn left_voter_of_an_even_set_needs_no_successor() {
        let members = with(alive(&[1, 2, 3, 4, 5]), 4, MemberHealth::Left);
        assert_eq!(
            plan(&members, &raft(&[1, 2, 3, 4], &[5])),
            voters(&[1, 2, 3])
        );
    }

    #[test]
    fn left_voter_leaves_an_even_count_only_when_no_other_voter_may_go() {
        let mut members = with(alive(&[1, 2, 3]), 3, MemberHealth::Left);
        members.push(GossipMember {
            name: "impostor".into(),
            raft_addr: "10.9.9.9:7000".into(),
            ..member(2, MemberHealth::Alive)
        });
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[])), voters(&[1, 2]));
    }

    #[test]
    fn left_learner_is_removed() {
        let members = with(alive(&[1, 2]), 2, MemberHealth::Left);
        assert_eq!(
            plan(&members, &raft(&[1], &[2])),
            Some(QuorumAction::RemoveNode(2))
        );
    }

    #[test]
    fn the_leader_is_never_removed() {
        let members = with(alive(&[1, 2, 3]), LEADER, MemberHealth::Left);
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[])), None);
        let members = with(alive(&[1, 2, 3, 4]), LEADER, failed_since(0));
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[4])), None);
        assert_eq!(plan(&alive(&[1, 2, 3]), &raft(&[2, 3, 4], &[1])), None);
    }

    #[test]
    fn failed_voter_is_replaced_only_after_the_delay_and_only_by_an_alive_learner() {
        let members = with(alive(&[1, 2, 3, 4]), 3, failed_since(NOW - 4_999));
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[4])), None);
        let members = with(alive(&[1, 2, 3, 4]), 3, failed_since(NOW - 5_000));
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[4])), voters(&[1, 2, 4]));
        let members = with(members, 4, MemberHealth::Suspect);
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[4])), None);
        let members = with(alive(&[1, 2, 3]), 3, failed_since(NOW + 1));
        assert_eq!(plan(&members, &raft(&[1, 2, 3], &[])), None);
        let members = with(alive(&[1, 2, 3, 4]), 4, failed_since(0));
        assert_eq!(
            plan(&members, &raft(&[1, 2, 3, 4], &[])),
            voters(&[1, 2, 3])
        );
    }

    #[test]
    fn alive_members_join_as_learners_lowest_id_first() {
        let members = with(alive(&[1, 5, 3]), 2, MemberHealth::Suspect);
        assert_eq!(
            plan(&members, &raft(&[1], &[])),
            Some(QuorumAction::AddLearner {
                node_id: 3,
                raft_addr: "10.0.0.3:7000".into()
            })
        );
        let mut members = alive(&[1]);
        members.push(GossipMember {
            raft_addr: String::new(),
            ..member(2, MemberHealth::Alive)
        });
        assert_eq!(plan(&members, &raft(&[1], &[])), None);
    }

    #[test]
    fn voters_grow_to_odd_counts_within_the_target() {
        assert_eq!(plan(&alive(&[1, 2]), &raft(&[1], &[2])), None);
        assert_eq!(
            plan(&alive(&[1, 2, 3]), &raft(&[1], &[3, 2])),
            voters(&[1, 2, 3])
        );
        assert_eq!(
            plan(&alive(&[1, 2, 3, 4, 5]), &raft(&[1], &[2, 3, 4, 5])),
            voters(&[1, 2, 3])
        );
        let five = plan_quorum(
            NOW,
            LEADER,
            &alive(&[1, 2, 3, 4, 5, 6]),
            &raft(&[1, 5, 6], &[2, 3, 4]),
            &settings(5),
        );
        assert_eq!(five.action, voters(&[1, 2, 3, 5, 6]));
        let members = with(alive(&[1, 2, 3]), 3, MemberHealth::Suspect);
        assert_eq!(plan(&members, &raft(&[1], &[2, 3])), None);
    }

    #[test]
    fn voters_shrink_to_a_lowered_target_keeping_the_leader() {
        let members = alive(&[1, 2, 3, 4, 5]);
        let shrink = |members: &[GossipMember]| {
            plan_quorum(NOW, 5, members, &raft(&[1, 2, 3, 4, 5], &[]), &settings(3)).action
        };
        assert_eq!(shrink(&members), voters(&[1, 2, 5]));
        let members = with(members, 2, failed_since(NOW));
        assert_eq!(shrink(&members), voters(&[1, 3, 5]));
        let to_one = plan_quorum(NOW, 5, &alive(&[1, 5]), &raft(&[1, 5], &[]), &settings(1));
        assert_eq!(to_one.action, voters(&[5]));
    }

    #[test]
    fn an_even_voter_count_is_made_odd() {
        assert_eq!(plan(&alive(&[1, 2]), &raft(&[1, 2], &[])), voters(&[1]));
        assert_eq!(
            plan(&alive(&[1, 2, 3]), &raft(&[1, 2], &[3])),
            voters(&[1, 2, 3])
        );
    }

    #[test]
    fn targets_are_rounded_down_to_an_odd_count_of_at_least_one() {
        let members = alive(&[1, 2, 3, 4, 5]);
        let membership = raft(&[1], &[2, 3, 4, 5]);
        let plan_with = |target| plan_quorum(NOW, LEADER, &members, &membership, &settings(target));
        assert_eq!(plan_with(4).action, voters(&[1, 2, 3]));
        assert_eq!(plan_with(0).action, None);
        assert_eq!(plan_with(2).action, None);
    }

    #[test]
    fn contested_node_ids_are_reported_and_left_alone() {
        let mut members = with(alive(&[1, 2]), 3, MemberHealth::Left);
        members.push(GossipMember {
            name: "stranger".into(),
            raft_addr: "10.9.9.9:7000".into(),
            ..member(2, MemberHealth::Alive)
        });
        members.push(GossipMember {
            name: "other".into(),
            raft_addr: "10.9.9.8:7000".into(),
            ..member(3, MemberHealth::Alive)
        });
        let plan = plan_quorum(NOW, LEADER, &members, &raft(&[1, 3], &[]), &settings(3));
        assert_eq!(plan.action, None);
        assert_eq!(
            plan.conflicts,
            vec![
                "node id 2 is claimed by member \"node-2\" (raft 10.0.0.2:7000) and member \"stranger\" (raft 10.9.9.9:7000); both are ignored until one of them leaves",
                "node id 3 is claimed by member \"node-3\" (raft 10.0.0.3:7000) and member \"other\" (raft 10.9.9.8:7000); both are ignored until one of them leaves",
            ]
        );
    }

    #[test]
    fn a_node_seen_under_a_new_name_or_address_is_not_a_conflict() {
        let renamed = GossipMember {
            name: "node-2-renamed".into(),
            ..member(2, MemberHealth::Alive)
        };
        let moved = GossipMember {
            raft_addr: "10.0.1.2:7000".into(),
            ..member(2, MemberHealth::Alive)
        };
        for (new_sighting, raft_addr) in [(renamed, "10.0.0.2:7000"), (moved, "10.0.1.2:7000")] {
            let mut members = with(alive(&[1]), 2, MemberHealth::Left);
            members.push(new_sighting);
            let plan = plan_quorum(NOW, LEADER, &members, &raft(&[1], &[]), &settings(3));
            assert!(plan.conflicts.is_empty());
            assert_eq!(
                plan.action,
                Some(QuorumAction::AddLearner {
                    node_id: 2,
                    raft_addr: raft_addr.into()
                })
            );
        }
    }

    /// Applies actions the way Raft would until the planner has nothing left to do.
    fn settle(members: &[GossipMember], mut membership: RaftMembership) -> RaftMembership {
        for _ in 0..20 {
            let Some(action) = plan(members, &membership) else {
                return membership;
            };
            match action {
                QuorumAction::AddLearner { node_id, raft_addr } => {
                    membership.learners.insert(node_id, raft_addr);
                }
                QuorumAction::SetVoters(next) => {
                    let mut all = std::mem::take(&mut membership.voters);
                    all.append(&mut membership.learners);
                    for (id, addr) in all {
                        if next.contains(&id) {
                            membership.voters.insert(id, addr);
                        } else {
                            membership.learners.insert(id, addr);
                        }
                    }
                }
                QuorumAction::RemoveNode(id) => {
                    membership.learners.remove(&id);
                }
            }
        }
        panic!("the planner did not settle: {membership:?}");
    }

    #[test]
    fn seven_alive_members_settle_at_three_voters_and_four_learners() {
        let settled = settle(&alive(&[1, 2, 3, 4, 5, 6, 7]), raft(&[1], &[]));
        assert_eq!(settled, raft(&[1, 2, 3], &[4, 5, 6, 7]));
    }

    fn register(id: i32, kafka_addr: &str) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            endpoints: vec![kafka_addr.into()],
            rack: None,
            incarnation: Uuid::nil(),
        }
    }

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        let next = image.offset().map_or(0, |o| o + 1);
        image.apply_batch(next, records).unwrap();
    }

    /// Brokers 1 and 2 registered from gossip and unfenced, with a partition on both led by 1.
    fn brokers() -> MetadataImage {
        let mut image = MetadataImage::new();
        let members = alive(&[1, 2]);
        for _ in 0..2 {
            let records = plan_brokers(&image, &members, &BTreeSet::new());
            apply(&mut image, &records);
        }
        apply(
            &mut image,
            &[
                MetadataRecord::CreateTopic {
                    name: "t".into(),
                    topic_id: Uuid::from_u128(7),
                    configs: BTreeMap::new(),
                },
                MetadataRecord::CreatePartition {
                    topic_id: Uuid::from_u128(7),
                    partition: 0,
                    replicas: vec![1, 2],
                    isr: vec![1, 2],
                    leader: Some(1),
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                },
            ],
        );
        assert!(plan_brokers(&image, &members, &BTreeSet::new()).is_empty());
        image
    }

    #[test]
    fn alive_members_register_then_unfence() {
        let mut image = MetadataImage::new();
        let members = alive(&[1]);
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, vec![register(1, "10.0.0.1:9092")]);
        apply(&mut image, &records);
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, vec![MetadataRecord::UnfenceBroker { id: 1 }]);
        apply(&mut image, &records);
        assert!(plan_brokers(&image, &members, &BTreeSet::new()).is_empty());
        assert!(!image.broker(1).unwrap().fenced);
    }

    #[test]
    fn failed_and_left_brokers_are_fenced_and_suspect_ones_left_alone() {
        let image = brokers();
        let suspect = with(alive(&[1, 2]), 1, MemberHealth::Suspect);
        assert!(plan_brokers(&image, &suspect, &BTreeSet::new()).is_empty());
        for health in [failed_since(0), MemberHealth::Left] {
            let members = with(alive(&[1, 2]), 1, health);
            assert_eq!(
                plan_brokers(&image, &members, &BTreeSet::new()),
                fence_broker_records(&image, 1)
            );
        }
    }

    #[test]
    fn brokers_failing_together_are_fenced_in_one_batch_that_applies() {
        let mut image = brokers();
        let members = vec![member(1, failed_since(0)), member(2, MemberHealth::Left)];
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        apply(&mut image, &records);
        let p = image.partition(Uuid::from_u128(7), 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (None, vec![2]));
        assert!(image.brokers().all(|b| b.fenced));

        let records = plan_brokers(&image, &alive(&[1, 2]), &BTreeSet::new());
        assert!(records.contains(&MetadataRecord::ChangePartition {
            topic_id: Uuid::from_u128(7),
            partition: 0,
            leader: LeaderChange::Elect(2),
            isr: None,
        }));
        apply(&mut image, &records);
        assert!(image.brokers().all(|b| !b.fenced));
    }

    #[test]
    fn a_broker_whose_session_expired_is_fenced_until_it_answers_again() {
        let mut image = brokers();
        let members = alive(&[1, 2]);
        let expired = BTreeSet::from([1]);
        let records = plan_brokers(&image, &members, &expired);
        assert_eq!(records, fence_broker_records(&image, 1));
        apply(&mut image, &records);
        let p = image.partition(Uuid::from_u128(7), 0).unwrap();
        assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2]));
        // Gossip still sees it alive: it stays fenced while its session is expired.
        assert!(plan_brokers(&image, &members, &expired).is_empty());
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, vec![MetadataRecord::UnfenceBroker { id: 1 }]);
    }

    #[test]
    fn a_broker_gossip_never_heard_of_is_fenced_when_its_session_expires() {
        let image = brokers();
        // A restarted controller whose gossip knows only broker 2 when broker 1 dies.
        let records = plan_brokers(&image, &alive(&[2]), &BTreeSet::from([1]));
        assert_eq!(records, fence_broker_records(&image, 1));
        assert!(!records.is_empty());
        // Without an expired session, a broker gossip does not know is left alone.
        assert!(plan_brokers(&image, &alive(&[2]), &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_moved_broker_is_fenced_then_registered_again() {
        let mut image = brokers();
        let mut members = alive(&[1, 2]);
        members[0].kafka_addr = "10.1.0.1:9092".into();
        members[0].rack = Some("r1".into());
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, fence_broker_records(&image, 1));
        apply(&mut image, &records);
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(
            records,
            vec![MetadataRecord::RegisterBroker {
                id: 1,
                endpoints: vec!["10.1.0.1:9092".into()],
                rack: Some("r1".into()),
                incarnation: Uuid::nil(),
            }]
        );
        apply(&mut image, &records);
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, vec![MetadataRecord::UnfenceBroker { id: 1 }]);
    }

    #[test]
    fn a_restarted_broker_leaves_every_isr_and_is_registered_with_its_new_run() {
        // Topic "t": one partition on brokers 1 and 2, both in sync.
        let mut image = brokers();
        let topic = Uuid::from_u128(7);
        // Broker 2 restarted faster than any failure detection: only its run tells.
        let mut members = alive(&[1, 2]);
        members[1].run = 1_700_000_000_000;
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, fence_broker_records(&image, 2));
        apply(&mut image, &records);
        assert_eq!(image.partition(topic, 0).unwrap().isr, vec![1]);
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(
            records,
            vec![MetadataRecord::RegisterBroker {
                id: 2,
                endpoints: vec!["10.0.0.2:9092".into()],
                rack: None,
                incarnation: Uuid::from_u128(1_700_000_000_000),
            }]
        );
        apply(&mut image, &records);
        let records = plan_brokers(&image, &members, &BTreeSet::new());
        assert_eq!(records, vec![MetadataRecord::UnfenceBroker { id: 2 }]);
        apply(&mut image, &records);
        // Back, but not in sync until its leader says it caught up.
        assert!(plan_brokers(&image, &members, &BTreeSet::new()).is_empty());
        assert_eq!(image.partition(topic, 0).unwrap().isr, vec![1]);
    }

    #[test]
    fn members_that_cannot_be_brokers_are_not_registered() {
        let image = MetadataImage::new();
        let mut members = vec![member(u64::from(u32::MAX), MemberHealth::Alive)];
        members.push(GossipMember {
            raft_addr: String::new(),
            ..member(3, MemberHealth::Alive)
        });
        members.push(GossipMember {
            kafka_addr: String::new(),
            ..member(4, MemberHealth::Alive)
        });
        members.push(member(5, MemberHealth::Alive));
        members.push(GossipMember {
            name: "stranger".into(),
            raft_addr: "10.9.9.9:7000".into(),
            ..member(5, MemberHealth::Alive)
        });
        assert!(plan_brokers(&image, &members, &BTreeSet::new()).is_empty());
    }

    #[test]
    fn a_broker_that_stops_serving_kafka_is_fenced() {
        let image = brokers();
        let mut members = alive(&[1, 2]);
        members[1].kafka_addr.clear();
        assert_eq!(
            plan_brokers(&image, &members, &BTreeSet::new()),
            fence_broker_records(&image, 2)
        );
    }
}
