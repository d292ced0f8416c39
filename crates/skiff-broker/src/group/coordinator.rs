//! The classic consumer-group coordinator as a state machine: requests and clock ticks in,
//! answers, deferred answers (`Completion`) and `__consumer_offsets` entries out. No I/O and no
//! clock of its own, so tests drive it with any timeline.
//!
//! States follow Apache Kafka's `GroupMetadata`: Empty -> PreparingRebalance (members (re)join)
//! -> CompletingRebalance (waiting for the leader's SyncGroup) -> Stable, and back to
//! PreparingRebalance when a member joins, leaves, changes its subscription or misses its
//! session timeout.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;

use super::storage::{CommittedOffset, Entry, StoredGroup, StoredMember};

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// Longest group id, instance id and protocol name accepted: they are stored in
/// `__consumer_offsets` as i16-length strings, and no client needs more.
pub const MAX_NAME_BYTES: usize = 1024;

#[derive(Debug, Clone)]
pub struct GroupConfig {
    pub min_session_timeout_ms: i32,
    pub max_session_timeout_ms: i32,
    /// Wait this long after the first member joins an empty group for others (Kafka's
    /// `group.initial.rebalance.delay.ms`), so a starting fleet forms one generation.
    pub initial_rebalance_delay_ms: i64,
    pub max_group_size: usize,
    /// Largest committed-offset metadata string (Kafka's `offset.metadata.max.bytes`).
    pub max_metadata_bytes: usize,
    /// Largest protocol metadata (subscription) one member may send with JoinGroup.
    pub max_member_metadata_bytes: usize,
    /// Offsets of an empty group are forgotten this long after its last commit.
    pub offsets_retention_ms: i64,
    /// Most groups all coordinators of a broker hold together (see `GroupCount`); a request
    /// that would create one more gets POLICY_VIOLATION. Groups loaded from the log are never
    /// refused.
    pub max_groups: usize,
    /// Most offsets one OffsetCommit may carry: they are appended as one batch.
    pub max_offsets_per_commit: usize,
}

impl Default for GroupConfig {
    fn default() -> Self {
        Self {
            min_session_timeout_ms: 6_000,
            max_session_timeout_ms: 1_800_000,
            initial_rebalance_delay_ms: 3_000,
            max_group_size: 1_000,
            max_metadata_bytes: 4096,
            max_member_metadata_bytes: 1024 * 1024,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            max_groups: 100_000,
            max_offsets_per_commit: 10_000,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GroupState {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl GroupState {
    pub fn name(self) -> &'static str {
        match self {
            GroupState::Empty => "Empty",
            GroupState::PreparingRebalance => "PreparingRebalance",
            GroupState::CompletingRebalance => "CompletingRebalance",
            GroupState::Stable => "Stable",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Member {
    pub id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocols: Vec<(String, Bytes)>,
    pub assignment: Bytes,
    last_heartbeat_ms: i64,
    awaiting_join: bool,
    awaiting_sync: bool,
}

impl Member {
    fn metadata_for(&self, protocol: &str) -> Bytes {
        self.protocols
            .iter()
            .find(|(name, _)| name == protocol)
            .map(|(_, m)| m.clone())
            .unwrap_or_default()
    }
}

#[derive(Debug, Clone)]
pub struct Group {
    pub id: String,
    pub state: GroupState,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: Option<String>,
    /// Keyed by member id, in join order of their ids.
    pub members: BTreeMap<String, Member>,
    /// Members told MEMBER_ID_REQUIRED (KIP-394) that have not joined with the id yet.
    pending_members: HashMap<String, i64>,
    pub offsets: HashMap<(String, i32), CommittedOffset>,
    rebalance_deadline_ms: i64,
    join_not_before_ms: i64,
    sync_deadline_ms: i64,
    state_timestamp_ms: i64,
}

impl Group {
    fn new(id: &str, now: i64) -> Self {
        Self {
            id: id.to_string(),
            state: GroupState::Empty,
            generation: 0,
            protocol_type: None,
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            pending_members: HashMap::new(),
            offsets: HashMap::new(),
            rebalance_deadline_ms: 0,
            join_not_before_ms: 0,
            sync_deadline_ms: 0,
            state_timestamp_ms: now,
        }
    }

    fn member_by_instance(&self, instance_id: &str) -> Option<&Member> {
        self.members
            .values()
            .find(|m| m.instance_id.as_deref() == Some(instance_id))
    }

    /// Whether every member supports one of `protocols`, so a new member with them fits.
    fn supports(&self, protocol_type: &str, protocols: &[(String, Bytes)]) -> bool {
        if self.members.is_empty() {
            return true;
        }
        if self.protocol_type.as_deref() != Some(protocol_type) {
            return false;
        }
        protocols.iter().any(|(name, _)| {
            self.members
                .values()
                .all(|m| m.protocols.iter().any(|(n, _)| n == name))
        })
    }

    /// The protocol every member supports that most members prefer (Kafka's vote).
    fn select_protocol(&self) -> Option<String> {
        let candidates: Vec<&String> = self
            .members
            .values()
            .next()?
            .protocols
            .iter()
            .map(|(n, _)| n)
            .filter(|name| {
                self.members
                    .values()
                    .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
            })
            .collect();
        let mut votes: Vec<(usize, &String)> = candidates.iter().map(|c| (0, *c)).collect();
        for member in self.members.values() {
            if let Some(choice) = member
                .protocols
                .iter()
                .find(|(n, _)| candidates.contains(&n))
            {
                if let Some(v) = votes.iter_mut().find(|(_, c)| **c == choice.0) {
                    v.0 += 1;
                }
            }
        }
        votes
            .into_iter()
            .max_by(|a, b| a.0.cmp(&b.0).then_with(|| b.1.cmp(a.1)))
            .map(|(_, c)| c.clone())
    }

    fn stored(&self) -> StoredGroup {
        StoredGroup {
            protocol_type: self.protocol_type.clone().unwrap_or_default(),
            generation: self.generation,
            protocol: self.protocol.clone(),
            leader: self.leader.clone(),
            state_timestamp_ms: self.state_timestamp_ms,
            members: self
                .members
                .values()
                .map(|m| StoredMember {
                    member_id: m.id.clone(),
                    instance_id: m.instance_id.clone(),
                    client_id: m.client_id.clone(),
                    client_host: m.client_host.clone(),
                    rebalance_timeout_ms: m.rebalance_timeout_ms,
                    session_timeout_ms: m.session_timeout_ms,
                    subscription: self
                        .protocol
                        .as_deref()
                        .map(|p| m.metadata_for(p))
                        .unwrap_or_default(),
                    assignment: m.assignment.clone(),
                })
                .collect(),
        }
    }

    fn is_subscribed_to(&self, topic: &str) -> bool {
        self.protocol_type.as_deref() == Some("consumer")
            && self.protocol.as_deref().is_some_and(|p| {
                self.members.values().any(|m| {
                    subscription_topics(&m.metadata_for(p))
                        .iter()
                        .any(|t| t == topic)
                })
            })
    }
}

/// Topics of a consumer-protocol subscription (version i16, then an array of strings; the same
/// in every version).
fn subscription_topics(metadata: &[u8]) -> Vec<String> {
    let mut topics = Vec::new();
    let mut buf = metadata;
    let read_i16 = |b: &mut &[u8]| -> Option<i16> {
        let (head, rest) = b.split_first_chunk::<2>()?;
        *b = rest;
        Some(i16::from_be_bytes(*head))
    };
    let Some(_version) = read_i16(&mut buf) else {
        return topics;
    };
    let Some((count, rest)) = buf.split_first_chunk::<4>() else {
        return topics;
    };
    buf = rest;
    for _ in 0..i32::from_be_bytes(*count).max(0) {
        let Some(len) = read_i16(&mut buf) else { break };
        let Some((name, rest)) = buf.split_at_checked(len.max(0) as usize) else {
            break;
        };
        buf = rest;
        topics.push(String::from_utf8_lossy(name).into_owned());
    }
    topics
}

#[derive(Debug, Clone)]
pub struct JoinRequest {
    pub group_id: String,
    pub member_id: String,
    pub instance_id: Option<String>,
    pub client_id: String,
    pub client_host: String,
    pub session_timeout_ms: i32,
    pub rebalance_timeout_ms: i32,
    pub protocol_type: String,
    pub protocols: Vec<(String, Bytes)>,
    /// JoinGroup v4+: a new member first gets MEMBER_ID_REQUIRED with its id (KIP-394).
    pub require_known_member_id: bool,
    /// JoinGroup v9+: a static leader rejoining a stable group gets the member list with
    /// "skip assignment"; older clients get no member list, so they keep the current assignment
    /// without computing one (as Kafka does; no rebalance either way).
    pub supports_skip_assignment: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct JoinResult {
    pub error: i16,
    pub generation: i32,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub leader: String,
    pub member_id: String,
    /// Filled for the leader only: (member id, instance id, metadata).
    pub members: Vec<(String, Option<String>, Bytes)>,
    /// A static leader rejoining a stable group keeps the current assignment (JoinGroup v9).
    pub skip_assignment: bool,
}

impl JoinResult {
    pub fn error(error: ResponseError, member_id: &str) -> Self {
        Self {
            error: code(error),
            generation: -1,
            protocol_type: None,
            protocol: None,
            leader: String::new(),
            member_id: member_id.to_string(),
            members: Vec::new(),
            skip_assignment: false,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct SyncResult {
    pub error: i16,
    pub protocol_type: Option<String>,
    pub protocol: Option<String>,
    pub assignment: Bytes,
}

impl SyncResult {
    pub fn error(error: ResponseError) -> Self {
        Self {
            error: code(error),
            protocol_type: None,
            protocol: None,
            assignment: Bytes::new(),
        }
    }
}

/// An answer now, or later through a `Completion` for (group, `member_id`).
#[derive(Debug, PartialEq)]
pub enum Reply<T> {
    Now(T),
    Later { member_id: String },
}

/// A deferred JoinGroup or SyncGroup answer for one member.
#[derive(Debug, Clone, PartialEq)]
pub enum Completion {
    Join {
        group: String,
        member_id: String,
        result: JoinResult,
    },
    Sync {
        group: String,
        member_id: String,
        result: SyncResult,
    },
}

/// What a call produced besides its direct answer.
#[derive(Debug, Default)]
pub struct Effects {
    pub completions: Vec<Completion>,
    /// Entries to append to `__consumer_offsets`, in order.
    pub writes: Vec<Entry>,
}

/// Enough of a group's state to put it back after a change that could not be persisted.
#[derive(Debug)]
pub enum Undo {
    Group {
        id: String,
        before: Option<Box<Group>>,
    },
    Offsets {
        id: String,
        existed: bool,
        before: Vec<((String, i32), Option<CommittedOffset>)>,
    },
}

/// Gives each new member a unique id: `<client id>-<counter>-<random>`.
pub trait MemberIds {
    fn new_member_id(&mut self, client_id: &str) -> String;
}

/// The number of groups held by the coordinators that share it (every coordinator of a
/// broker), so `GroupConfig::max_groups` bounds the broker, not each coordinator.
#[derive(Debug, Clone, Default)]
pub struct GroupCount(Arc<AtomicUsize>);

impl GroupCount {
    pub fn get(&self) -> usize {
        self.0.load(Ordering::Relaxed)
    }
}

/// A coordinator's groups. Every insertion and removal goes through here to keep the shared
/// `GroupCount` exact; a dropped (unloaded) coordinator's groups leave the count.
#[derive(Debug, Default)]
struct GroupMap {
    groups: HashMap<String, Group>,
    count: GroupCount,
}

impl GroupMap {
    fn get(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    fn get_mut(&mut self, id: &str) -> Option<&mut Group> {
        self.groups.get_mut(id)
    }

    fn values(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    fn values_mut(&mut self) -> impl Iterator<Item = &mut Group> {
        self.groups.values_mut()
    }

    /// Whether `id` is new and the broker holds `max` groups already.
    fn refuses(&self, id: &str, max: usize) -> bool {
        !self.groups.contains_key(id) && self.count.get() >= max
    }

    fn get_or_create(&mut self, id: &str, now: i64) -> &mut Group {
        let count = &self.count;
        self.groups.entry(id.to_string()).or_insert_with(|| {
            count.0.fetch_add(1, Ordering::Relaxed);
            Group::new(id, now)
        })
    }

    fn insert(&mut self, group: Group) {
        if self.groups.insert(group.id.clone(), group).is_none() {
            self.count.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    fn remove(&mut self, id: &str) -> Option<Group> {
        let removed = self.groups.remove(id);
        if removed.is_some() {
            self.count.0.fetch_sub(1, Ordering::Relaxed);
        }
        removed
    }
}

impl Drop for GroupMap {
    fn drop(&mut self) {
        self.count.0.fetch_sub(self.groups.len(), Ordering::Relaxed);
    }
}

#[derive(Debug, Default)]
pub struct GroupCoordinator {
    config: GroupConfig,
    groups: GroupMap,
}

pub struct OffsetCommit {
    pub group_id: String,
    pub generation: i32,
    pub member_id: String,
    pub instance_id: Option<String>,
    /// (topic, partition, offset, leader epoch, metadata)
    pub offsets: Vec<(String, i32, i64, i32, Option<String>)>,
}

impl GroupCoordinator {
    pub fn new(config: GroupConfig) -> Self {
        Self::counted_in(config, GroupCount::default())
    }

    /// A coordinator whose groups count in `count`, shared with the broker's other
    /// coordinators.
    pub fn counted_in(config: GroupConfig, count: GroupCount) -> Self {
        Self {
            config,
            groups: GroupMap {
                groups: HashMap::new(),
                count,
            },
        }
    }

    pub fn groups(&self) -> impl Iterator<Item = &Group> {
        self.groups.values()
    }

    pub fn group(&self, id: &str) -> Option<&Group> {
        self.groups.get(id)
    }

    /// Rebuilds state from one `__consumer_offsets` entry, in log order. Members of a loaded
    /// group get a full session timeout from `now` to come back.
    pub fn load(&mut self, entry: Entry, now: i64) {
        match entry {
            Entry::Offset {
                group,
                topic,
                partition,
                value,
            } => {
                match value {
                    Some(v) => {
                        let g = self.groups.get_or_create(&group, now);
                        g.offsets.insert((topic, partition), v);
                    }
                    // A tombstone of a group already gone creates nothing.
                    None => {
                        if let Some(g) = self.groups.get_mut(&group) {
                            g.offsets.remove(&(topic, partition));
                        }
                    }
                }
            }
            Entry::Group { group, value: None } => {
                self.groups.remove(&group);
            }
            Entry::Group {
                group,
                value: Some(stored),
            } => {
                let g = self.groups.get_or_create(&group, now);
                g.generation = stored.generation;
                g.protocol_type = Some(stored.protocol_type).filter(|t| !t.is_empty());
                g.protocol = stored.protocol.clone();
                g.leader = stored.leader;
                g.state_timestamp_ms = stored.state_timestamp_ms;
                g.members = stored
                    .members
                    .into_iter()
                    .map(|m| {
                        let member = Member {
                            id: m.member_id.clone(),
                            instance_id: m.instance_id,
                            client_id: m.client_id,
                            client_host: m.client_host,
                            session_timeout_ms: m.session_timeout_ms,
                            rebalance_timeout_ms: m.rebalance_timeout_ms,
                            protocols: stored
                                .protocol
                                .iter()
                                .map(|p| (p.clone(), m.subscription.clone()))
                                .collect(),
                            assignment: m.assignment,
                            last_heartbeat_ms: now,
                            awaiting_join: false,
                            awaiting_sync: false,
                        };
                        (m.member_id, member)
                    })
                    .collect();
                g.state = if g.members.is_empty() {
                    GroupState::Empty
                } else {
                    GroupState::Stable
                };
            }
        }
    }

    pub fn join_group(
        &mut self,
        request: JoinRequest,
        ids: &mut dyn MemberIds,
        now: i64,
    ) -> (Reply<JoinResult>, Effects) {
        let mut effects = Effects::default();
        let fail = |e| {
            (
                Reply::Now(JoinResult::error(e, &request.member_id)),
                Effects::default(),
            )
        };
        if request.group_id.is_empty() || request.group_id.len() > MAX_NAME_BYTES {
            return fail(ResponseError::InvalidGroupId);
        }
        let too_long = |s: &str| s.len() > MAX_NAME_BYTES;
        if too_long(&request.protocol_type)
            || request.instance_id.as_deref().is_some_and(too_long)
            || request.protocols.iter().any(|(name, _)| too_long(name))
        {
            return fail(ResponseError::InvalidRequest);
        }
        if request.session_timeout_ms < self.config.min_session_timeout_ms
            || request.session_timeout_ms > self.config.max_session_timeout_ms
        {
            return fail(ResponseError::InvalidSessionTimeout);
        }
        if request.protocol_type.is_empty() || request.protocols.is_empty() {
            return fail(ResponseError::InconsistentGroupProtocol);
        }
        if request
            .protocols
            .iter()
            .any(|(_, m)| m.len() > self.config.max_member_metadata_bytes)
        {
            return fail(ResponseError::InvalidRequest);
        }
        // As in Kafka, a member id names a member of an existing group: nothing is created.
        if !request.member_id.is_empty() && self.groups.get(&request.group_id).is_none() {
            return fail(ResponseError::UnknownMemberId);
        }
        if self
            .groups
            .refuses(&request.group_id, self.config.max_groups)
        {
            return fail(ResponseError::PolicyViolation);
        }
        let config = self.config.clone();
        let group = self.groups.get_or_create(&request.group_id, now);
        if !group.supports(&request.protocol_type, &request.protocols) {
            return fail(ResponseError::InconsistentGroupProtocol);
        }

        if request.member_id.is_empty() {
            if let Some(instance_id) = &request.instance_id {
                if let Some(old) = group.member_by_instance(instance_id).cloned() {
                    return Self::rejoin_static(group, old, request, ids, now, &config);
                }
            }
            // Members told to come back with their id count toward the group's size, so a
            // client repeating JoinGroup without one cannot grow the pending list without end.
            if group.members.len() + group.pending_members.len() >= config.max_group_size {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            let member_id = ids.new_member_id(&request.client_id);
            if request.require_known_member_id && request.instance_id.is_none() {
                group.pending_members.insert(
                    member_id.clone(),
                    now + i64::from(request.session_timeout_ms),
                );
                return (
                    Reply::Now(JoinResult::error(
                        ResponseError::MemberIdRequired,
                        &member_id,
                    )),
                    effects,
                );
            }
            Self::add_member(
                group,
                member_id.clone(),
                request,
                now,
                &config,
                &mut effects,
            );
            return (Reply::Later { member_id }, effects);
        }

        if group.pending_members.remove(&request.member_id).is_some() {
            if group.members.len() >= config.max_group_size {
                return fail(ResponseError::GroupMaxSizeReached);
            }
            let member_id = request.member_id.clone();
            Self::add_member(
                group,
                member_id.clone(),
                request,
                now,
                &config,
                &mut effects,
            );
            return (Reply::Later { member_id }, effects);
        }
        let Some(member) = group.members.get(&request.member_id) else {
            // An old process of a static member that has since rejoined under a new id must be
            // fenced, not told to rejoin, or it would fence the live one in turn.
            let fenced = request
                .instance_id
                .as_deref()
                .is_some_and(|i| group.member_by_instance(i).is_some());
            return fail(if fenced {
                ResponseError::FencedInstanceId
            } else {
                ResponseError::UnknownMemberId
            });
        };
        if let Some(instance_id) = &request.instance_id {
            if member.instance_id.as_deref() != Some(instance_id) {
                return fail(ResponseError::FencedInstanceId);
            }
        }
        let same_metadata = member.protocols == request.protocols;
        let is_leader = group.leader.as_deref() == Some(request.member_id.as_str());
        match group.state {
            GroupState::CompletingRebalance | GroupState::Stable
                if same_metadata && !(group.state == GroupState::Stable && is_leader) =>
            {
                // A retry, or a follower rejoining unchanged: the current generation stands.
                if let Some(member) = group.members.get_mut(&request.member_id) {
                    member.last_heartbeat_ms = now;
                }
                let result = Self::join_result(group, &request.member_id, false);
                (Reply::Now(result), effects)
            }
            _ => {
                let member_id = request.member_id.clone();
                let Some(member) = group.members.get_mut(&member_id) else {
                    return fail(ResponseError::UnknownMemberId);
                };
                member.protocols = request.protocols;
                member.session_timeout_ms = request.session_timeout_ms;
                member.rebalance_timeout_ms = request.rebalance_timeout_ms;
                member.awaiting_join = true;
                member.last_heartbeat_ms = now;
                if group.state != GroupState::PreparingRebalance {
                    Self::prepare_rebalance(group, now, &config, &mut effects);
                }
                Self::maybe_complete_join(group, now, &mut effects);
                (Reply::Later { member_id }, effects)
            }
        }
    }

    /// A static member rejoining with a new member id (KIP-345): the old id is fenced; a stable
    /// group keeps its generation and assignment.
    fn rejoin_static(
        group: &mut Group,
        old: Member,
        request: JoinRequest,
        ids: &mut dyn MemberIds,
        now: i64,
        config: &GroupConfig,
    ) -> (Reply<JoinResult>, Effects) {
        let mut effects = Effects::default();
        let new_id = ids.new_member_id(&request.client_id);
        if old.awaiting_join {
            effects.completions.push(Completion::Join {
                group: group.id.clone(),
                member_id: old.id.clone(),
                result: JoinResult::error(ResponseError::FencedInstanceId, &old.id),
            });
        }
        if old.awaiting_sync {
            effects.completions.push(Completion::Sync {
                group: group.id.clone(),
                member_id: old.id.clone(),
                result: SyncResult::error(ResponseError::FencedInstanceId),
            });
        }
        group.members.remove(&old.id);
        let was_leader = group.leader.as_deref() == Some(old.id.as_str());
        let unchanged = old.protocols == request.protocols;
        let member = Member {
            id: new_id.clone(),
            instance_id: request.instance_id.clone(),
            client_id: request.client_id,
            client_host: request.client_host,
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms: request.rebalance_timeout_ms,
            protocols: request.protocols,
            assignment: old.assignment,
            last_heartbeat_ms: now,
            awaiting_join: false,
            awaiting_sync: false,
        };
        group.members.insert(new_id.clone(), member);
        if was_leader {
            group.leader = Some(new_id.clone());
        }
        let supports_skip_assignment = request.supports_skip_assignment;
        if group.state == GroupState::Stable && unchanged {
            effects.writes.push(Entry::Group {
                group: group.id.clone(),
                value: Some(group.stored()),
            });
            let mut result = Self::join_result(group, &new_id, was_leader);
            if !supports_skip_assignment {
                result.members.clear();
                result.skip_assignment = false;
            }
            return (Reply::Now(result), effects);
        }
        if let Some(member) = group.members.get_mut(&new_id) {
            member.awaiting_join = true;
        }
        if group.state != GroupState::PreparingRebalance {
            Self::prepare_rebalance(group, now, config, &mut effects);
        }
        Self::maybe_complete_join(group, now, &mut effects);
        (Reply::Later { member_id: new_id }, effects)
    }

    fn add_member(
        group: &mut Group,
        member_id: String,
        request: JoinRequest,
        now: i64,
        config: &GroupConfig,
        effects: &mut Effects,
    ) {
        if group.members.is_empty() {
            group.protocol_type = Some(request.protocol_type.clone());
        }
        group.members.insert(
            member_id.clone(),
            Member {
                id: member_id,
                instance_id: request.instance_id,
                client_id: request.client_id,
                client_host: request.client_host,
                session_timeout_ms: request.session_timeout_ms,
                rebalance_timeout_ms: request.rebalance_timeout_ms,
                protocols: request.protocols,
                assignment: Bytes::new(),
                last_heartbeat_ms: now,
                awaiting_join: true,
                awaiting_sync: false,
            },
        );
        if group.state == GroupState::PreparingRebalance {
            if group.join_not_before_ms > now {
                // A fleet is still arriving: give it another delay, within the rebalance deadline.
                group.join_not_before_ms =
                    (now + config.initial_rebalance_delay_ms).min(group.rebalance_deadline_ms);
            }
        } else {
            Self::prepare_rebalance(group, now, config, effects);
        }
        Self::maybe_complete_join(group, now, effects);
    }

    fn prepare_rebalance(group: &mut Group, now: i64, config: &GroupConfig, effects: &mut Effects) {
        if group.state == GroupState::CompletingRebalance {
            for member in group.members.values_mut().filter(|m| m.awaiting_sync) {
                member.awaiting_sync = false;
                effects.completions.push(Completion::Sync {
                    group: group.id.clone(),
                    member_id: member.id.clone(),
                    result: SyncResult::error(ResponseError::RebalanceInProgress),
                });
            }
        }
        let was_empty = group.state == GroupState::Empty;
        group.state = GroupState::PreparingRebalance;
        group.state_timestamp_ms = now;
        let rebalance_timeout = group
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        group.rebalance_deadline_ms = now + rebalance_timeout;
        group.join_not_before_ms = if was_empty {
            (now + config.initial_rebalance_delay_ms).min(group.rebalance_deadline_ms)
        } else {
            now
        };
    }

    fn maybe_complete_join(group: &mut Group, now: i64, effects: &mut Effects) {
        if group.state != GroupState::PreparingRebalance {
            return;
        }
        let all_joined =
            group.members.values().all(|m| m.awaiting_join) && group.pending_members.is_empty();
        if (all_joined && now >= group.join_not_before_ms) || now >= group.rebalance_deadline_ms {
            Self::complete_join(group, now, effects);
        }
    }

    /// Ends the join phase: members that did not rejoin are dropped, a new generation starts and
    /// every waiting member gets its JoinGroup answer.
    fn complete_join(group: &mut Group, now: i64, effects: &mut Effects) {
        group.members.retain(|_, m| m.awaiting_join);
        group.pending_members.clear();
        group.generation = group.generation.wrapping_add(1).max(1);
        group.state_timestamp_ms = now;
        if group.members.is_empty() {
            group.state = GroupState::Empty;
            group.protocol = None;
            group.leader = None;
            group.protocol_type = None;
            effects.writes.push(Entry::Group {
                group: group.id.clone(),
                value: Some(group.stored()),
            });
            return;
        }
        group.protocol = group.select_protocol();
        if !group
            .leader
            .as_ref()
            .is_some_and(|l| group.members.contains_key(l))
        {
            group.leader = group.members.keys().next().cloned();
        }
        group.state = GroupState::CompletingRebalance;
        let rebalance_timeout = group
            .members
            .values()
            .map(|m| i64::from(m.rebalance_timeout_ms))
            .max()
            .unwrap_or(0);
        group.sync_deadline_ms = now + rebalance_timeout;
        let results: Vec<(String, JoinResult)> = group
            .members
            .keys()
            .map(|id| (id.clone(), Self::join_result(group, id, false)))
            .collect();
        for member in group.members.values_mut() {
            member.awaiting_join = false;
            member.last_heartbeat_ms = now;
        }
        for (id, result) in results {
            effects.completions.push(Completion::Join {
                group: group.id.clone(),
                member_id: id,
                result,
            });
        }
    }

    fn join_result(group: &Group, member_id: &str, skip_assignment: bool) -> JoinResult {
        let is_leader = group.leader.as_deref() == Some(member_id);
        let protocol = group.protocol.clone().unwrap_or_default();
        JoinResult {
            error: 0,
            generation: group.generation,
            protocol_type: group.protocol_type.clone(),
            protocol: group.protocol.clone(),
            leader: group.leader.clone().unwrap_or_default(),
            member_id: member_id.to_string(),
            members: if is_leader {
                group
                    .members
                    .values()
                    .map(|m| {
                        (
                            m.id.clone(),
                            m.instance_id.clone(),
                            m.metadata_for(&protocol),
                        )
                    })
                    .collect()
            } else {
                Vec::new()
            },
            skip_assignment,
        }
    }

    /// Finds a member for SyncGroup, Heartbeat and OffsetCommit, checking static fencing and
    /// the generation.
    fn check_member(
        &self,
        group_id: &str,
        member_id: &str,
        instance_id: Option<&str>,
        generation: i32,
    ) -> Result<(), ResponseError> {
        let group = self
            .groups
            .get(group_id)
            .ok_or(ResponseError::UnknownMemberId)?;
        if let Some(instance_id) = instance_id {
            if let Some(m) = group.member_by_instance(instance_id) {
                if m.id != member_id {
                    return Err(ResponseError::FencedInstanceId);
                }
            }
        }
        if !group.members.contains_key(member_id) {
            return Err(ResponseError::UnknownMemberId);
        }
        if generation != group.generation {
            return Err(ResponseError::IllegalGeneration);
        }
        Ok(())
    }

    #[allow(clippy::too_many_arguments)]
    pub fn sync_group(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        protocol_type: Option<&str>,
        protocol: Option<&str>,
        assignments: Vec<(String, Bytes)>,
        now: i64,
    ) -> (Reply<SyncResult>, Effects) {
        let mut effects = Effects::default();
        if let Err(e) = self.check_member(group_id, member_id, instance_id, generation) {
            return (Reply::Now(SyncResult::error(e)), effects);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return (
                Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
                effects,
            );
        };
        if protocol_type.is_some_and(|t| Some(t) != group.protocol_type.as_deref())
            || protocol.is_some_and(|p| Some(p) != group.protocol.as_deref())
        {
            return (
                Reply::Now(SyncResult::error(ResponseError::InconsistentGroupProtocol)),
                effects,
            );
        }
        let result_for = |group: &Group, member_id: &str| SyncResult {
            error: 0,
            protocol_type: group.protocol_type.clone(),
            protocol: group.protocol.clone(),
            assignment: group
                .members
                .get(member_id)
                .map(|m| m.assignment.clone())
                .unwrap_or_default(),
        };
        match group.state {
            GroupState::Empty => (
                Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
                effects,
            ),
            GroupState::PreparingRebalance => (
                Reply::Now(SyncResult::error(ResponseError::RebalanceInProgress)),
                effects,
            ),
            GroupState::Stable => (Reply::Now(result_for(group, member_id)), effects),
            GroupState::CompletingRebalance => {
                let Some(member) = group.members.get_mut(member_id) else {
                    return (
                        Reply::Now(SyncResult::error(ResponseError::UnknownMemberId)),
                        effects,
                    );
                };
                member.awaiting_sync = true;
                member.last_heartbeat_ms = now;
                if group.leader.as_deref() == Some(member_id) {
                    let mut assigned: HashMap<String, Bytes> = assignments.into_iter().collect();
                    for member in group.members.values_mut() {
                        member.assignment = assigned.remove(&member.id).unwrap_or_default();
                    }
                    group.state = GroupState::Stable;
                    group.state_timestamp_ms = now;
                    effects.writes.push(Entry::Group {
                        group: group.id.clone(),
                        value: Some(group.stored()),
                    });
                    let waiting: Vec<String> = group
                        .members
                        .values()
                        .filter(|m| m.awaiting_sync)
                        .map(|m| m.id.clone())
                        .collect();
                    for id in waiting {
                        let result = result_for(group, &id);
                        if let Some(member) = group.members.get_mut(&id) {
                            member.awaiting_sync = false;
                        }
                        effects.completions.push(Completion::Sync {
                            group: group.id.clone(),
                            member_id: id,
                            result,
                        });
                    }
                }
                (
                    Reply::Later {
                        member_id: member_id.to_string(),
                    },
                    effects,
                )
            }
        }
    }

    pub fn heartbeat(
        &mut self,
        group_id: &str,
        generation: i32,
        member_id: &str,
        instance_id: Option<&str>,
        now: i64,
    ) -> i16 {
        if let Err(e) = self.check_member(group_id, member_id, instance_id, generation) {
            return code(e);
        }
        let Some(group) = self.groups.get_mut(group_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        let Some(member) = group.members.get_mut(member_id) else {
            return code(ResponseError::UnknownMemberId);
        };
        member.last_heartbeat_ms = now;
        match group.state {
            GroupState::PreparingRebalance => code(ResponseError::RebalanceInProgress),
            GroupState::Empty => code(ResponseError::UnknownMemberId),
            GroupState::CompletingRebalance | GroupState::Stable => 0,
        }
    }

    /// Removes members (member id and/or instance id); one error code per member.
    pub fn leave_group(
        &mut self,
        group_id: &str,
        leaving: &[(String, Option<String>)],
        now: i64,
    ) -> (Result<Vec<i16>, i16>, Effects) {
        let mut effects = Effects::default();
        let config = self.config.clone();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (Err(code(ResponseError::UnknownMemberId)), effects);
        };
        let mut codes = Vec::new();
        let mut removed_any = false;
        for (member_id, instance_id) in leaving {
            let target = match instance_id {
                Some(instance) => match group.member_by_instance(instance) {
                    Some(m) if member_id.is_empty() || *member_id == m.id => Ok(m.id.clone()),
                    Some(_) => Err(ResponseError::FencedInstanceId),
                    None => Err(ResponseError::UnknownMemberId),
                },
                None if group.members.contains_key(member_id) => Ok(member_id.clone()),
                None => Err(ResponseError::UnknownMemberId),
            };
            match target {
                Ok(id) => {
                    Self::remove_member(group, &id, ResponseError::UnknownMemberId, &mut effects);
                    removed_any = true;
                    codes.push(0);
                }
                Err(e) => codes.push(code(e)),
            }
        }
        if removed_any {
            Self::after_member_removed(group, now, &config, &mut effects);
        }
        (Ok(codes), effects)
    }

    fn remove_member(
        group: &mut Group,
        member_id: &str,
        error: ResponseError,
        effects: &mut Effects,
    ) {
        let Some(member) = group.members.remove(member_id) else {
            return;
        };
        if member.awaiting_join {
            effects.completions.push(Completion::Join {
                group: group.id.clone(),
                member_id: member.id.clone(),
                result: JoinResult::error(error, &member.id),
            });
        }
        if member.awaiting_sync {
            effects.completions.push(Completion::Sync {
                group: group.id.clone(),
                member_id: member.id,
                result: SyncResult::error(error),
            });
        }
    }

    fn after_member_removed(
        group: &mut Group,
        now: i64,
        config: &GroupConfig,
        effects: &mut Effects,
    ) {
        match group.state {
            GroupState::Stable | GroupState::CompletingRebalance => {
                Self::prepare_rebalance(group, now, config, effects);
                Self::maybe_complete_join(group, now, effects);
            }
            GroupState::PreparingRebalance => Self::maybe_complete_join(group, now, effects),
            GroupState::Empty => {}
        }
    }

    /// Expires sessions, pending member ids and rebalance deadlines; forgets offsets of empty
    /// groups past retention.
    pub fn tick(&mut self, now: i64) -> Effects {
        let mut effects = Effects::default();
        let config = self.config.clone();
        for group in self.groups.values_mut() {
            group.pending_members.retain(|_, deadline| *deadline > now);
            let expired: Vec<String> = group
                .members
                .values()
                .filter(|m| {
                    // A member waiting for its JoinGroup or SyncGroup answer cannot heartbeat
                    // on that connection; the rebalance and sync deadlines bound it instead.
                    !m.awaiting_join
                        && !m.awaiting_sync
                        && now - m.last_heartbeat_ms > i64::from(m.session_timeout_ms)
                })
                .map(|m| m.id.clone())
                .collect();
            for id in &expired {
                Self::remove_member(group, id, ResponseError::UnknownMemberId, &mut effects);
            }
            if !expired.is_empty() {
                Self::after_member_removed(group, now, &config, &mut effects);
            }
            match group.state {
                GroupState::PreparingRebalance => {
                    Self::maybe_complete_join(group, now, &mut effects)
                }
                GroupState::CompletingRebalance if now >= group.sync_deadline_ms => {
                    // The leader never sent the assignment: start over without the members
                    // that did not sync.
                    let silent: Vec<String> = group
                        .members
                        .values()
                        .filter(|m| !m.awaiting_sync)
                        .map(|m| m.id.clone())
                        .collect();
                    for id in &silent {
                        Self::remove_member(
                            group,
                            id,
                            ResponseError::UnknownMemberId,
                            &mut effects,
                        );
                    }
                    Self::prepare_rebalance(group, now, &config, &mut effects);
                    Self::maybe_complete_join(group, now, &mut effects);
                }
                _ => {}
            }
            if group.state == GroupState::Empty {
                let stale: Vec<(String, i32)> = group
                    .offsets
                    .iter()
                    .filter(|(_, o)| {
                        // KIP-211: retention counts from the later of the commit and the
                        // moment the group became empty, so idle consumers keep their offsets.
                        now - o.commit_timestamp_ms.max(group.state_timestamp_ms)
                            > config.offsets_retention_ms
                    })
                    .map(|(k, _)| k.clone())
                    .collect();
                for (topic, partition) in stale {
                    group.offsets.remove(&(topic.clone(), partition));
                    effects.writes.push(Entry::Offset {
                        group: group.id.clone(),
                        topic,
                        partition,
                        value: None,
                    });
                }
            }
        }
        let forgotten: Vec<String> = self
            .groups
            .values()
            .filter(|g| {
                g.state == GroupState::Empty && g.offsets.is_empty() && g.pending_members.is_empty()
            })
            .map(|g| g.id.clone())
            .collect();
        for id in forgotten {
            self.groups.remove(&id);
            effects.writes.push(Entry::Group {
                group: id,
                value: None,
            });
        }
        effects
    }

    /// Validates a commit and returns one error code per offset plus the entries to persist.
    /// The caller checks topics exist; a commit with generation -1 and no member is a
    /// "simple" commit, allowed only while the group has no members.
    pub fn commit_offsets(&mut self, commit: OffsetCommit, now: i64) -> (Vec<i16>, Effects) {
        let mut effects = Effects::default();
        let n = commit.offsets.len();
        let check = match self.groups.get(&commit.group_id) {
            _ if commit.group_id.is_empty() || commit.group_id.len() > MAX_NAME_BYTES => {
                Err(ResponseError::InvalidGroupId)
            }
            Some(g) if commit.generation < 0 && commit.member_id.is_empty() => {
                if g.members.is_empty() {
                    Ok(())
                } else {
                    Err(ResponseError::IllegalGeneration)
                }
            }
            None if commit.generation < 0 => Ok(()),
            None => Err(ResponseError::IllegalGeneration),
            Some(g) => self
                .check_member(
                    &commit.group_id,
                    &commit.member_id,
                    commit.instance_id.as_deref(),
                    commit.generation,
                )
                .and(match g.state {
                    // As in Kafka: a member that has its JoinGroup answer but not yet its
                    // assignment must not commit; during PreparingRebalance members keep
                    // committing for the partitions they still own (cooperative rebalancing).
                    GroupState::CompletingRebalance => Err(ResponseError::RebalanceInProgress),
                    _ => Ok(()),
                }),
        };
        let check = check.and_then(|()| {
            if n > self.config.max_offsets_per_commit {
                Err(ResponseError::InvalidCommitOffsetSize)
            } else if self
                .groups
                .refuses(&commit.group_id, self.config.max_groups)
            {
                Err(ResponseError::PolicyViolation)
            } else {
                Ok(())
            }
        });
        if let Err(e) = check {
            return (vec![code(e); n], effects);
        }
        if n == 0 {
            return (Vec::new(), effects);
        }
        let group = self.groups.get_or_create(&commit.group_id, now);
        if let Some(m) = group.members.get_mut(&commit.member_id) {
            m.last_heartbeat_ms = now;
        }
        let codes = commit
            .offsets
            .into_iter()
            .map(|(topic, partition, offset, leader_epoch, metadata)| {
                let metadata = metadata.unwrap_or_default();
                if metadata.len() > self.config.max_metadata_bytes {
                    return code(ResponseError::OffsetMetadataTooLarge);
                }
                let value = CommittedOffset {
                    offset,
                    leader_epoch,
                    metadata,
                    commit_timestamp_ms: now,
                };
                group
                    .offsets
                    .insert((topic.clone(), partition), value.clone());
                effects.writes.push(Entry::Offset {
                    group: group.id.clone(),
                    topic,
                    partition,
                    value: Some(value),
                });
                0
            })
            .collect();
        (codes, effects)
    }

    /// What putting `group_id` back takes, should the change about to be made not be
    /// persisted: a copy of the whole group.
    pub fn undo_group(&self, group_id: &str) -> Undo {
        Undo::Group {
            id: group_id.to_string(),
            before: self.groups.get(group_id).cloned().map(Box::new),
        }
    }

    /// Like `undo_group` for a change of committed offsets only: a copy of those offsets, so an
    /// offset commit does not copy every offset of its group.
    pub fn undo_offsets(
        &self,
        group_id: &str,
        keys: impl IntoIterator<Item = (String, i32)>,
    ) -> Undo {
        let group = self.groups.get(group_id);
        Undo::Offsets {
            id: group_id.to_string(),
            existed: group.is_some(),
            before: keys
                .into_iter()
                .map(|key| {
                    let committed = group.and_then(|g| g.offsets.get(&key)).cloned();
                    (key, committed)
                })
                .collect(),
        }
    }

    /// Puts a group back as it was before a change whose records could not be persisted, so
    /// nothing answers from state the log does not hold.
    pub fn undo(&mut self, undo: Undo) {
        match undo {
            Undo::Group {
                before: Some(group),
                ..
            } => {
                self.groups.insert(*group);
            }
            Undo::Group { id, before: None }
            | Undo::Offsets {
                id, existed: false, ..
            } => {
                self.groups.remove(&id);
            }
            Undo::Offsets { id, before, .. } => {
                let Some(group) = self.groups.get_mut(&id) else {
                    return;
                };
                for (key, committed) in before {
                    match committed {
                        Some(c) => group.offsets.insert(key, c),
                        None => group.offsets.remove(&key),
                    };
                }
            }
        }
    }

    /// A member's parked JoinGroup or SyncGroup was answered with an error instead of by the
    /// coordinator: it is no longer waiting, so its session counts again and a rebalance does not
    /// wait for it until it joins again.
    pub fn stop_waiting(&mut self, group_id: &str, member_id: &str) {
        if let Some(member) = self
            .groups
            .get_mut(group_id)
            .and_then(|g| g.members.get_mut(member_id))
        {
            member.awaiting_join = false;
            member.awaiting_sync = false;
        }
    }

    pub fn committed(
        &self,
        group_id: &str,
        topic: &str,
        partition: i32,
    ) -> Option<&CommittedOffset> {
        self.groups
            .get(group_id)?
            .offsets
            .get(&(topic.to_string(), partition))
    }

    /// Topics some group has committed offsets for.
    pub fn topics_with_offsets(&self) -> BTreeSet<String> {
        self.groups
            .values()
            .flat_map(|g| g.offsets.keys().map(|(t, _)| t.clone()))
            .collect()
    }

    /// Groups with committed offsets of `topic`.
    pub fn groups_with_offsets_of(&self, topic: &str) -> Vec<String> {
        self.groups
            .values()
            .filter(|g| g.offsets.keys().any(|(t, _)| t == topic))
            .map(|g| g.id.clone())
            .collect()
    }

    /// Forgets one group's committed offsets of a deleted topic, so a topic created again under
    /// the same name starts without them.
    pub fn remove_topic_offsets(&mut self, group_id: &str, topic: &str) -> Effects {
        let mut effects = Effects::default();
        let Some(group) = self.groups.get_mut(group_id) else {
            return effects;
        };
        let gone: Vec<i32> = group
            .offsets
            .keys()
            .filter(|(t, _)| t == topic)
            .map(|(_, p)| *p)
            .collect();
        for partition in gone {
            group.offsets.remove(&(topic.to_string(), partition));
            effects.writes.push(Entry::Offset {
                group: group.id.clone(),
                topic: topic.to_string(),
                partition,
                value: None,
            });
        }
        effects
    }

    /// Deletes empty groups with their offsets.
    pub fn delete_group(&mut self, group_id: &str) -> (i16, Effects) {
        let mut effects = Effects::default();
        if self
            .groups
            .get(group_id)
            .is_some_and(|g| g.state != GroupState::Empty)
        {
            return (code(ResponseError::NonEmptyGroup), effects);
        }
        match self.groups.remove(group_id) {
            None => (code(ResponseError::GroupIdNotFound), effects),
            Some(group) => {
                for (topic, partition) in group.offsets.into_keys() {
                    effects.writes.push(Entry::Offset {
                        group: group_id.to_string(),
                        topic,
                        partition,
                        value: None,
                    });
                }
                effects.writes.push(Entry::Group {
                    group: group_id.to_string(),
                    value: None,
                });
                (0, effects)
            }
        }
    }

    /// OffsetDelete: group-level error, or per-partition codes.
    pub fn delete_offsets(
        &mut self,
        group_id: &str,
        partitions: &[(String, i32)],
    ) -> (Result<Vec<i16>, i16>, Effects) {
        let mut effects = Effects::default();
        let Some(group) = self.groups.get_mut(group_id) else {
            return (Err(code(ResponseError::GroupIdNotFound)), effects);
        };
        let codes = partitions
            .iter()
            .map(|(topic, partition)| {
                if group.state != GroupState::Empty && group.is_subscribed_to(topic) {
                    return code(ResponseError::GroupSubscribedToTopic);
                }
                if group.offsets.remove(&(topic.clone(), *partition)).is_some() {
                    effects.writes.push(Entry::Offset {
                        group: group.id.clone(),
                        topic: topic.clone(),
                        partition: *partition,
                        value: None,
                    });
                }
                0
            })
            .collect();
        (Ok(codes), effects)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Counter(u32);

    impl MemberIds for Counter {
        fn new_member_id(&mut self, client_id: &str) -> String {
            self.0 += 1;
            format!("{client_id}-{}", self.0)
        }
    }

    /// A commit outside any generation (standalone consumers, admin tools).
    fn simple_commit(group: &str, offsets: &[(&str, i32, i64)]) -> OffsetCommit {
        OffsetCommit {
            group_id: group.into(),
            generation: -1,
            member_id: String::new(),
            instance_id: None,
            offsets: offsets
                .iter()
                .map(|&(t, p, o)| (t.to_string(), p, o, -1, None))
                .collect(),
        }
    }

    fn config() -> GroupConfig {
        GroupConfig {
            initial_rebalance_delay_ms: 100,
            ..GroupConfig::default()
        }
    }

    fn join(member_id: &str, instance: Option<&str>, protocols: &[&str]) -> JoinRequest {
        JoinRequest {
            group_id: "g".into(),
            member_id: member_id.into(),
            instance_id: instance.map(String::from),
            client_id: "c".into(),
            client_host: "/127.0.0.1".into(),
            session_timeout_ms: 10_000,
            rebalance_timeout_ms: 30_000,
            protocol_type: "consumer".into(),
            protocols: protocols
                .iter()
                .map(|p| (p.to_string(), Bytes::from(format!("meta-{p}"))))
                .collect(),
            require_known_member_id: true,
            supports_skip_assignment: true,
        }
    }

    /// Joins a new member through the KIP-394 handshake; returns its id.
    fn join_new(c: &mut GroupCoordinator, ids: &mut Counter, now: i64) -> (String, Effects) {
        let (reply, _) = c.join_group(join("", None, &["range"]), ids, now);
        let Reply::Now(required) = reply else {
            panic!("expected MEMBER_ID_REQUIRED")
        };
        assert_eq!(required.error, code(ResponseError::MemberIdRequired));
        let (reply, effects) = c.join_group(join(&required.member_id, None, &["range"]), ids, now);
        assert_eq!(
            reply,
            Reply::Later {
                member_id: required.member_id.clone()
            }
        );
        (required.member_id, effects)
    }

    fn joins(effects: &Effects) -> Vec<&JoinResult> {
        effects
            .completions
            .iter()
            .filter_map(|c| match c {
                Completion::Join { result, .. } => Some(result),
                _ => None,
            })
            .collect()
    }

    /// Two members form generation 1 and reach Stable; returns (leader, follower).
    fn stable_pair(c: &mut GroupCoordinator, ids: &mut Counter) -> (String, String) {
        let (a, effects) = join_new(c, ids, 0);
        assert!(
            effects.completions.is_empty(),
            "initial delay holds the first join"
        );
        let (b, _) = join_new(c, ids, 10);
        let effects = c.tick(200);
        let results = joins(&effects);
        assert_eq!(results.len(), 2);
        assert!(results.iter().all(|r| r.generation == 1 && r.error == 0));
        let leader = results[0].leader.clone();
        let follower = if leader == a { b.clone() } else { a.clone() };
        let leader_result = results.iter().find(|r| r.member_id == leader).unwrap();
        assert_eq!(leader_result.members.len(), 2);
        assert!(results
            .iter()
            .find(|r| r.member_id == follower)
            .unwrap()
            .members
            .is_empty());

        let (reply, _) = c.sync_group("g", 1, &follower, None, None, None, vec![], 210);
        assert!(matches!(reply, Reply::Later { .. }));
        let assignments = vec![
            (leader.clone(), Bytes::from_static(b"L")),
            (follower.clone(), Bytes::from_static(b"F")),
        ];
        let (_, effects) = c.sync_group(
            "g",
            1,
            &leader,
            None,
            Some("consumer"),
            Some("range"),
            assignments,
            220,
        );
        let syncs: Vec<_> = effects
            .completions
            .iter()
            .filter_map(|c| match c {
                Completion::Sync {
                    member_id, result, ..
                } => Some((member_id.clone(), result.assignment.clone())),
                _ => None,
            })
            .collect();
        assert_eq!(syncs.len(), 2);
        assert!(syncs.contains(&(follower.clone(), Bytes::from_static(b"F"))));
        assert!(effects
            .writes
            .iter()
            .any(|e| matches!(e, Entry::Group { value: Some(_), .. })));
        assert_eq!(c.group("g").unwrap().state, GroupState::Stable);
        (leader, follower)
    }

    #[test]
    fn requests_that_change_nothing_create_no_group() {
        let mut c = GroupCoordinator::new(config());
        let (reply, effects) = c.join_group(join("c-9", None, &["range"]), &mut Counter(0), 0);
        assert!(matches!(reply, Reply::Now(r) if r.error == code(ResponseError::UnknownMemberId)));
        assert!(effects.writes.is_empty());
        let (codes, effects) = c.commit_offsets(simple_commit("g", &[]), 0);
        assert!(codes.is_empty() && effects.writes.is_empty());
        c.load(
            Entry::Offset {
                group: "gone".into(),
                topic: "t".into(),
                partition: 0,
                value: None,
            },
            0,
        );
        assert_eq!(c.groups().count(), 0);
        assert_eq!(c.groups.count.get(), 0);
    }

    #[test]
    fn a_commit_of_more_offsets_than_the_limit_is_refused_whole() {
        const INVALID_COMMIT_OFFSET_SIZE: i16 = 28;
        let mut c = GroupCoordinator::new(GroupConfig {
            max_offsets_per_commit: 2,
            ..config()
        });
        let (codes, effects) = c.commit_offsets(
            simple_commit("g", &[("t", 0, 1), ("t", 1, 1), ("t", 2, 1)]),
            0,
        );
        assert_eq!(codes, [INVALID_COMMIT_OFFSET_SIZE; 3]);
        assert!(effects.writes.is_empty());
        assert!(c.group("g").is_none());
        let (codes, _) = c.commit_offsets(simple_commit("g", &[("t", 0, 1), ("t", 1, 1)]), 0);
        assert_eq!(codes, [0, 0]);
    }

    #[test]
    fn members_form_a_generation_and_get_assignments() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (leader, follower) = stable_pair(&mut c, &mut ids);
        assert_eq!(c.heartbeat("g", 1, &leader, None, 300), 0);
        assert_eq!(c.heartbeat("g", 1, &follower, None, 300), 0);
        let (reply, _) = c.sync_group("g", 1, &follower, None, None, None, vec![], 300);
        assert_eq!(
            reply,
            Reply::Now(SyncResult {
                error: 0,
                protocol_type: Some("consumer".into()),
                protocol: Some("range".into()),
                assignment: Bytes::from_static(b"F"),
            })
        );
    }

    #[test]
    fn wrong_members_and_generations_get_precise_errors() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (leader, _) = stable_pair(&mut c, &mut ids);
        assert_eq!(
            c.heartbeat("g", 1, "nobody", None, 300),
            code(ResponseError::UnknownMemberId)
        );
        assert_eq!(
            c.heartbeat("g", 0, &leader, None, 300),
            code(ResponseError::IllegalGeneration)
        );
        assert_eq!(
            c.heartbeat("other", 1, &leader, None, 300),
            code(ResponseError::UnknownMemberId)
        );
        let stale = OffsetCommit {
            group_id: "g".into(),
            generation: 0,
            member_id: leader.clone(),
            instance_id: None,
            offsets: vec![("t".into(), 0, 5, -1, None)],
        };
        assert_eq!(
            c.commit_offsets(stale, 300).0,
            vec![code(ResponseError::IllegalGeneration)]
        );
        let too_much_metadata = OffsetCommit {
            group_id: "g".into(),
            generation: 1,
            member_id: leader.clone(),
            instance_id: None,
            offsets: vec![("t".into(), 0, 5, -1, Some("x".repeat(5000)))],
        };
        assert_eq!(
            c.commit_offsets(too_much_metadata, 300).0,
            vec![code(ResponseError::OffsetMetadataTooLarge)]
        );
        let (result, _) = c.join_group(join("not-a-member", None, &["range"]), &mut ids, 300);
        assert!(matches!(result, Reply::Now(r) if r.error == code(ResponseError::UnknownMemberId)));
        let (result, _) = c.join_group(join("", None, &["roundrobin"]), &mut ids, 300);
        assert!(
            matches!(result, Reply::Now(r) if r.error == code(ResponseError::InconsistentGroupProtocol))
        );
        let mut short = join("", None, &["range"]);
        short.session_timeout_ms = 10;
        let (result, _) = c.join_group(short, &mut ids, 300);
        assert!(
            matches!(result, Reply::Now(r) if r.error == code(ResponseError::InvalidSessionTimeout))
        );
        let mut huge = join("", None, &["range"]);
        huge.protocols[0].1 = Bytes::from(vec![0u8; 2 * 1024 * 1024]);
        let (result, _) = c.join_group(huge, &mut ids, 300);
        assert!(matches!(result, Reply::Now(r) if r.error == code(ResponseError::InvalidRequest)));
    }

    #[test]
    fn commits_are_kept_and_checked_against_the_generation() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (leader, _) = stable_pair(&mut c, &mut ids);
        let commit = OffsetCommit {
            group_id: "g".into(),
            generation: 1,
            member_id: leader,
            instance_id: None,
            offsets: vec![("t".into(), 0, 42, 0, Some("m".into()))],
        };
        let (codes, effects) = c.commit_offsets(commit, 300);
        assert_eq!(codes, vec![0]);
        assert_eq!(effects.writes.len(), 1);
        let committed = c.committed("g", "t", 0).unwrap();
        assert_eq!((committed.offset, committed.metadata.as_str()), (42, "m"));
        // A group with members refuses "simple" commits.
        let simple = simple_commit("g", &[("t", 0, 1)]);
        assert_eq!(
            c.commit_offsets(simple, 300).0,
            vec![code(ResponseError::IllegalGeneration)]
        );
    }

    #[test]
    fn a_leaving_member_triggers_a_rebalance_without_it() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (leader, follower) = stable_pair(&mut c, &mut ids);
        let (codes, _) = c.leave_group("g", &[(follower.clone(), None)], 400);
        assert_eq!(codes, Ok(vec![0]));
        assert_eq!(c.group("g").unwrap().state, GroupState::PreparingRebalance);
        assert_eq!(
            c.heartbeat("g", 1, &leader, None, 410),
            code(ResponseError::RebalanceInProgress)
        );
        let (reply, effects) = c.join_group(join(&leader, None, &["range"]), &mut ids, 420);
        assert_eq!(
            reply,
            Reply::Later {
                member_id: leader.clone()
            }
        );
        let results = joins(&effects);
        assert_eq!(results.len(), 1);
        assert_eq!(
            (results[0].generation, results[0].leader.as_str()),
            (2, leader.as_str())
        );
    }

    #[test]
    fn an_expired_session_removes_the_member() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (leader, follower) = stable_pair(&mut c, &mut ids);
        // Only the leader keeps heartbeating.
        for t in (1_000..12_000).step_by(1_000) {
            c.heartbeat("g", 1, &leader, None, t);
            c.tick(t);
        }
        let g = c.group("g").unwrap();
        assert!(!g.members.contains_key(&follower));
        assert_eq!(g.state, GroupState::PreparingRebalance);
        let (_, effects) = c.join_group(join(&leader, None, &["range"]), &mut ids, 12_000);
        assert_eq!(joins(&effects)[0].generation, 2);
    }

    #[test]
    fn a_static_member_rejoining_keeps_the_generation_and_fences_its_old_id() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (r, _) = c.join_group(join("", Some("i1"), &["range"]), &mut ids, 0);
        let Reply::Later { member_id: old } = r else {
            panic!()
        };
        let effects = c.tick(200);
        assert_eq!(joins(&effects)[0].generation, 1);
        c.sync_group(
            "g",
            1,
            &old,
            Some("i1"),
            None,
            None,
            vec![(old.clone(), Bytes::from_static(b"A"))],
            210,
        );
        assert_eq!(c.group("g").unwrap().state, GroupState::Stable);

        // The process restarts: same instance id, no member id.
        let (reply, _) = c.join_group(join("", Some("i1"), &["range"]), &mut ids, 5_000);
        let Reply::Now(result) = reply else {
            panic!("a stable group answers at once")
        };
        assert_eq!((result.error, result.generation), (0, 1));
        assert_ne!(result.member_id, old);
        assert_eq!(c.group("g").unwrap().state, GroupState::Stable);
        let (reply, _) = c.sync_group(
            "g",
            1,
            &result.member_id,
            Some("i1"),
            None,
            None,
            vec![],
            5_010,
        );
        assert!(
            matches!(reply, Reply::Now(SyncResult { error: 0, ref assignment, .. }) if assignment == &Bytes::from_static(b"A"))
        );
        assert_eq!(
            c.heartbeat("g", 1, &old, Some("i1"), 5_020),
            code(ResponseError::FencedInstanceId)
        );
    }

    #[test]
    fn an_old_process_of_a_static_member_is_fenced_not_readmitted() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (r, _) = c.join_group(join("", Some("i1"), &["range"]), &mut ids, 0);
        let Reply::Later { member_id: old } = r else {
            panic!()
        };
        c.tick(200);
        c.sync_group("g", 1, &old, Some("i1"), None, None, vec![], 210);
        let (r, _) = c.join_group(join("", Some("i1"), &["range"]), &mut ids, 300);
        assert!(matches!(r, Reply::Now(JoinResult { error: 0, .. })));
        let (r, _) = c.join_group(join(&old, Some("i1"), &["range"]), &mut ids, 400);
        assert!(
            matches!(r, Reply::Now(JoinResult { error, .. }) if error == code(ResponseError::FencedInstanceId))
        );
    }

    #[test]
    fn a_static_leader_without_skip_assignment_keeps_the_assignment_without_a_rebalance() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (r, _) = c.join_group(join("", Some("i1"), &["range"]), &mut ids, 0);
        let Reply::Later { member_id: old } = r else {
            panic!()
        };
        c.tick(200);
        c.sync_group("g", 1, &old, Some("i1"), None, None, vec![], 210);
        let mut rejoin = join("", Some("i1"), &["range"]);
        rejoin.supports_skip_assignment = false;
        let (r, _) = c.join_group(rejoin, &mut ids, 300);
        let Reply::Now(result) = r else {
            panic!("no rebalance")
        };
        assert_eq!((result.error, result.generation), (0, 1));
        assert!(result.members.is_empty() && !result.skip_assignment);
        assert_eq!(c.group("g").unwrap().state, GroupState::Stable);
    }

    #[test]
    fn members_waiting_for_their_assignment_do_not_expire() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let (a, _) = join_new(&mut c, &mut ids, 0);
        let (b, _) = join_new(&mut c, &mut ids, 0);
        c.tick(200);
        let leader = c.group("g").unwrap().leader.clone().unwrap();
        let follower = if leader == a { b } else { a };
        let (r, _) = c.sync_group("g", 1, &follower, None, None, None, vec![], 210);
        assert!(matches!(r, Reply::Later { .. }));
        // The leader is slow to assign; the follower cannot heartbeat while parked in SyncGroup.
        c.heartbeat("g", 1, &leader, None, 15_000);
        c.tick(15_000);
        assert!(c.group("g").unwrap().members.contains_key(&follower));
    }

    #[test]
    fn offsets_retention_counts_from_when_the_group_became_empty() {
        let mut c = GroupCoordinator::new(GroupConfig {
            offsets_retention_ms: 10_000,
            ..config()
        });
        let mut ids = Counter(0);
        let (leader, follower) = stable_pair(&mut c, &mut ids);
        let commit = OffsetCommit {
            group_id: "g".into(),
            generation: 1,
            member_id: leader.clone(),
            instance_id: None,
            offsets: vec![("t".into(), 0, 9, -1, None)],
        };
        c.commit_offsets(commit, 300);
        // Long after the commit, the group empties: the offset stays for a full retention.
        let (left, _) = c.leave_group("g", &[(leader, None), (follower, None)], 50_000);
        assert_eq!(left, Ok(vec![0, 0]));
        c.tick(55_000);
        assert_eq!(c.committed("g", "t", 0).map(|o| o.offset), Some(9));
        c.tick(61_000);
        assert!(c.committed("g", "t", 0).is_none());
    }

    #[test]
    fn deleting_a_topic_forgets_its_committed_offsets() {
        let mut c = GroupCoordinator::new(config());
        let commit = simple_commit("solo", &[("gone", 0, 5), ("kept", 0, 6)]);
        c.commit_offsets(commit, 0);
        c.commit_offsets(simple_commit("other", &[("kept", 1, 7)]), 0);
        assert_eq!(c.groups_with_offsets_of("gone"), ["solo"]);
        assert_eq!(
            c.topics_with_offsets(),
            ["gone", "kept"].map(String::from).into()
        );
        let effects = c.remove_topic_offsets("solo", "gone");
        assert_eq!(effects.writes.len(), 1);
        assert!(c.committed("solo", "gone", 0).is_none());
        assert_eq!(c.committed("solo", "kept", 0).map(|o| o.offset), Some(6));
        assert!(c.groups_with_offsets_of("gone").is_empty());
    }

    #[test]
    fn a_group_is_put_back_as_it_was() {
        let mut c = GroupCoordinator::new(config());
        let commit = |offset| simple_commit("solo", &[("t", 0, offset), ("t", 1, offset)]);
        c.commit_offsets(commit(5), 0);
        let undo = c.undo_group("solo");
        c.commit_offsets(commit(9), 10);
        c.undo(undo);
        assert_eq!(c.committed("solo", "t", 0).map(|o| o.offset), Some(5));

        // Only the offsets a commit touches are copied, and put back.
        let undo = c.undo_offsets("solo", [("t".to_string(), 1), ("t".to_string(), 2)]);
        c.commit_offsets(simple_commit("solo", &[("t", 1, 7), ("t", 2, 7)]), 20);
        c.undo(undo);
        assert_eq!(c.committed("solo", "t", 1).map(|o| o.offset), Some(5));
        assert!(c.committed("solo", "t", 2).is_none());

        // A group the change created is removed again.
        let undo = c.undo_offsets("new", [("t".to_string(), 0)]);
        c.commit_offsets(simple_commit("new", &[("t", 0, 1)]), 30);
        c.undo(undo);
        assert!(c.group("new").is_none());
    }

    #[test]
    fn names_too_long_to_store_are_refused() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let mut long_group = join("", None, &["range"]);
        long_group.group_id = "g".repeat(MAX_NAME_BYTES + 1);
        let (r, _) = c.join_group(long_group, &mut ids, 0);
        assert!(
            matches!(r, Reply::Now(JoinResult { error, .. }) if error == code(ResponseError::InvalidGroupId))
        );
        let (r, _) = c.join_group(
            join("", None, &[&"p".repeat(MAX_NAME_BYTES + 1)]),
            &mut ids,
            0,
        );
        assert!(
            matches!(r, Reply::Now(JoinResult { error, .. }) if error == code(ResponseError::InvalidRequest))
        );
        let commit = simple_commit(&"g".repeat(MAX_NAME_BYTES + 1), &[("t", 0, 1)]);
        assert_eq!(
            c.commit_offsets(commit, 0).0,
            vec![code(ResponseError::InvalidGroupId)]
        );
    }

    #[test]
    fn joins_without_a_member_id_cannot_grow_the_group_past_its_limit() {
        let mut c = GroupCoordinator::new(GroupConfig {
            max_group_size: 2,
            ..config()
        });
        let mut ids = Counter(0);
        let errors: Vec<i16> = (0..4)
            .map(
                |_| match c.join_group(join("", None, &["range"]), &mut ids, 0).0 {
                    Reply::Now(result) => result.error,
                    Reply::Later { .. } => 0,
                },
            )
            .collect();
        let required = code(ResponseError::MemberIdRequired);
        let full = code(ResponseError::GroupMaxSizeReached);
        assert_eq!(errors, [required, required, full, full]);
    }

    #[test]
    fn a_join_storm_forms_one_generation() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        let mut members = Vec::new();
        for i in 0..200 {
            let (id, effects) = join_new(&mut c, &mut ids, i);
            assert!(effects.completions.is_empty());
            members.push(id);
        }
        let effects = c.tick(1_000);
        let results = joins(&effects);
        assert_eq!(results.len(), 200);
        assert!(results.iter().all(|r| r.generation == 1 && r.error == 0));
        let leaders: Vec<_> = results.iter().filter(|r| !r.members.is_empty()).collect();
        assert_eq!(leaders.len(), 1);
        assert_eq!(leaders[0].members.len(), 200);
    }

    #[test]
    fn load_replays_offsets_and_membership() {
        let mut c = GroupCoordinator::new(config());
        let mut ids = Counter(0);
        stable_pair(&mut c, &mut ids);
        let stored = c.group("g").unwrap().stored();
        let mut restarted = GroupCoordinator::new(config());
        restarted.load(
            Entry::Group {
                group: "g".into(),
                value: Some(stored),
            },
            1_000,
        );
        restarted.load(
            Entry::Offset {
                group: "g".into(),
                topic: "t".into(),
                partition: 1,
                value: Some(CommittedOffset {
                    offset: 7,
                    leader_epoch: 0,
                    metadata: String::new(),
                    commit_timestamp_ms: 900,
                }),
            },
            1_000,
        );
        let g = restarted.group("g").unwrap();
        assert_eq!(
            (g.state, g.generation, g.members.len()),
            (GroupState::Stable, 1, 2)
        );
        assert_eq!(restarted.committed("g", "t", 1).unwrap().offset, 7);
        restarted.load(
            Entry::Group {
                group: "g".into(),
                value: None,
            },
            1_000,
        );
        assert!(restarted.group("g").is_none());
    }

    #[test]
    fn empty_groups_can_be_deleted_and_lose_offsets_after_retention() {
        let mut c = GroupCoordinator::new(GroupConfig {
            offsets_retention_ms: 1_000,
            ..config()
        });
        let simple = simple_commit("solo", &[("t", 0, 3)]);
        assert_eq!(c.commit_offsets(simple, 0).0, vec![0]);
        let effects = c.tick(5_000);
        assert!(c.group("solo").is_none());
        assert!(effects
            .writes
            .iter()
            .any(|e| matches!(e, Entry::Offset { value: None, .. })));
        assert_eq!(
            c.delete_group("solo").0,
            code(ResponseError::GroupIdNotFound)
        );
        let mut ids = Counter(0);
        stable_pair(&mut c, &mut ids);
        assert_eq!(c.delete_group("g").0, code(ResponseError::NonEmptyGroup));
    }
}
