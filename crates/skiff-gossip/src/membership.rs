//! `Membership`: the sans-I/O Serf layer over foca.
//!
//! Inputs are received datagrams, timer expiries and application requests, each with the
//! current `Instant`; outputs are datagrams to send ([`Membership::poll_transmit`]), the next
//! deadline ([`Membership::poll_timeout`]), member events ([`Membership::poll_event`]) and
//! answers to our queries ([`Membership::poll_query_update`]). Nothing here reads a clock,
//! touches a socket or draws entropy: tests drive it with a simulated network and time.
//!
//! foca runs SWIM (probes, suspicion, refutation, the membership updates it piggybacks).
//! This layer adds what Serf adds to memberlist: tags, graceful leave, reaping, user events,
//! queries, push-pull state exchange, plus Lifeguard's local health multiplier and its
//! "buddy" suspicion notice on top of foca's fixed suspicion timer.

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::{DefaultHasher, Hash, Hasher};
use std::net::SocketAddr;
use std::num::{NonZeroU8, NonZeroUsize};
use std::sync::Arc;
use std::time::{Duration, Instant};

use foca::{
    AccumulatingRuntime, Foca, Member, Message, NoCustomBroadcast, OwnedNotification,
    PeriodicParams, State, Timer,
};
use rand::rngs::{SmallRng, StdRng};
use rand::seq::IndexedRandom;
use rand::{RngExt, SeedableRng};

use crate::broadcast::{BroadcastKey, BroadcastQueue};
use crate::config::{validate_tags, ConfigError, MembershipConfig, TagsError};
use crate::identity::{NodeId, SwimCodec, MAX_NODE_NAME_BYTES};
use crate::keyring::{Keyring, ENCRYPTION_OVERHEAD, NONCE_LEN};
use crate::message::{
    self, decode_packet, Direct, EventMessage, GossipItem, LeaveIntent, Packet, QueryFilter,
    QueryMessage, SyncChunk, SyncMember, Tags, TagsUpdate, TagsVersion, HEADER_LEN, KIND_ENCRYPTED,
    KIND_GOSSIP, MAGIC, VERSION,
};
use crate::recent::{Admission, LamportClock, RecentBuffer};
use crate::stats::{DropReason, Stats};

type Swim = Foca<NodeId, SwimCodec, SmallRng, NoCustomBroadcast>;

/// Reaping, retuning and tag pulls run this often.
const MAINTENANCE_INTERVAL: Duration = Duration::from_millis(500);
/// A member seen alive without tags is asked for them directly after this long (its tag
/// broadcast usually arrives first).
const TAG_PULL_DELAY: Duration = Duration::from_secs(1);
const TAG_PULL_RETRY: Duration = Duration::from_secs(2);
const MAX_TAG_PULLS_PER_ROUND: usize = 16;
/// Tags learned for a name that never shows up as a live member are forgotten after this.
const ORPHAN_TIMEOUT: Duration = Duration::from_secs(60);
/// Serf's query timeout: `gossip_interval * 16 * ceil(log10(n + 1))`.
const QUERY_TIMEOUT_MULT: u32 = 16;
/// Failed members announced to per reconnect round while we have no live member at all.
const ISOLATED_RECONNECT_FANOUT: usize = 3;

/// One datagram to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Transmit {
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
}

/// A member's state as this node sees it (Serf's states plus SWIM's suspect).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum MemberStatus {
    Alive,
    /// Alive, but a probe failed and it has not refuted yet.
    Suspect,
    /// Announced its departure; still reachable until it is gone.
    Leaving,
    Left,
    Failed,
}

impl MemberStatus {
    pub const ALL: [MemberStatus; 5] = [
        MemberStatus::Alive,
        MemberStatus::Suspect,
        MemberStatus::Leaving,
        MemberStatus::Left,
        MemberStatus::Failed,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            MemberStatus::Alive => "alive",
            MemberStatus::Suspect => "suspect",
            MemberStatus::Leaving => "leaving",
            MemberStatus::Left => "left",
            MemberStatus::Failed => "failed",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MemberInfo {
    pub name: String,
    pub addr: SocketAddr,
    /// Bumped by every restart and by every rejoin after a false "failed" verdict.
    pub generation: u64,
    pub status: MemberStatus,
    pub tags: Tags,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserEvent {
    pub ltime: u64,
    pub name: String,
    pub payload: Vec<u8>,
    pub coalesce: bool,
}

/// Identifies a query cluster-wide: its Lamport time and a random id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct QueryId {
    pub ltime: u64,
    pub id: u32,
}

/// A query this member should answer with [`Membership::respond`] before `deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncomingQuery {
    pub id: QueryId,
    pub name: String,
    pub payload: Vec<u8>,
    pub origin: String,
    pub deadline: Instant,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberEvent {
    Join(MemberInfo),
    Update(MemberInfo),
    Failed(MemberInfo),
    Leave(MemberInfo),
    Reap(MemberInfo),
    User(UserEvent),
    Query(IncomingQuery),
}

/// Progress of a query this member sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum QueryUpdate {
    Ack {
        id: QueryId,
        from: String,
    },
    Response {
        id: QueryId,
        from: String,
        payload: Vec<u8>,
    },
    /// The timeout passed; nothing more is collected.
    Done {
        id: QueryId,
    },
}

#[derive(Debug, Clone, Default)]
pub struct QueryOptions {
    pub filter: QueryFilter,
    /// Defaults to Serf's `gossip_interval * 16 * ceil(log10(n + 1))`.
    pub timeout: Option<Duration>,
    pub request_ack: bool,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RequestError {
    #[error(transparent)]
    Tags(#[from] TagsError),
    #[error("name must be 1 to {limit} bytes, got {len}")]
    BadName { len: usize, limit: usize },
    #[error("payload of {len} bytes exceeds the limit of {limit}")]
    PayloadTooLarge { len: usize, limit: usize },
    #[error("query takes {size} bytes encoded, a datagram holds {budget}")]
    QueryTooLarge { size: usize, budget: usize },
    #[error("at most {limit} query filters")]
    TooManyFilters { limit: usize },
    #[error("invalid tag filter {pattern:?}: {reason}")]
    BadFilter { pattern: String, reason: String },
    #[error("query timeout {requested:?} exceeds the limit of {limit:?}")]
    TimeoutTooLong {
        requested: Duration,
        limit: Duration,
    },
    #[error("{limit} queries are already waiting for answers")]
    TooManyPendingQueries { limit: usize },
    #[error("no open query {0:?} (never received, already answered or expired)")]
    UnknownQuery(QueryId),
    #[error("the query's deadline has passed")]
    QueryExpired,
    #[error("no seed address to join (our own address does not count)")]
    NoSeeds,
    #[error("this member has left the cluster")]
    Left,
}

#[derive(Debug, Clone)]
enum TimerKind {
    Swim(Timer<NodeId>),
    Gossip,
    Maintenance,
    PushPull,
    JoinRetry,
    FinishLeave,
    QueryDeadline(QueryId),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum EntryStatus {
    /// Known only from tags; foca has not reported it alive yet.
    Pending,
    Alive,
    Leaving,
    Failed,
    Left,
}

#[derive(Debug)]
struct Entry {
    id: Option<NodeId>,
    status: EntryStatus,
    since: Instant,
    tags: Option<Tags>,
    tags_version: TagsVersion,
    left_generation: Option<u64>,
    /// A Join was emitted (and no rejoin is pending): Failed, Leave and Reap are reported
    /// only for members the application was told about.
    announced: bool,
    tags_pulled_at: Option<Instant>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum LeaveState {
    Member,
    Leaving,
    Left,
}

#[derive(Debug)]
struct JoinState {
    seeds: Vec<SocketAddr>,
    backoff: Duration,
    attempts: u32,
}

#[derive(Debug)]
struct PendingQuery {
    acks: BTreeSet<String>,
    responses: BTreeSet<String>,
}

#[derive(Debug)]
struct OpenQuery {
    origin_addr: SocketAddr,
    local: bool,
    deadline: Instant,
}

/// Approximate heap and inline bytes held per structure, for sizing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MemoryEstimate {
    pub member_table: usize,
    pub swim_members: usize,
    pub buffers: usize,
    pub members: usize,
}

impl MemoryEstimate {
    pub fn total(&self) -> usize {
        self.member_table + self.swim_members + self.buffers
    }
}

pub struct Membership {
    config: MembershipConfig,
    swim: Swim,
    runtime: AccumulatingRuntime<NodeId>,
    rng: StdRng,
    now: Instant,
    timers: BTreeMap<(Instant, u64), TimerKind>,
    timer_seq: u64,

    local: NodeId,
    tags: Tags,
    tags_version: TagsVersion,
    incarnation: u16,
    local_health: u32,
    probe_failed: bool,
    connected: bool,
    ever_connected: bool,
    leave: LeaveState,
    join: Option<JoinState>,
    seeds: Vec<SocketAddr>,
    next_isolated_reconnect: Instant,
    cluster_size: usize,
    retransmit_limit: u32,

    members: BTreeMap<Arc<str>, Entry>,
    queue: BroadcastQueue,
    event_clock: LamportClock,
    query_clock: LamportClock,
    recent_events: RecentBuffer<EventMessage>,
    recent_queries: RecentBuffer<u32>,
    /// Events older than this are remembered but not delivered: set from the state of the
    /// member we joined through, so a new member is not flooded with old events (Serf).
    event_min_ltime: u64,
    /// The member our post-join state pull went to; its answer sets `event_min_ltime`.
    awaiting_first_sync: Option<SocketAddr>,
    /// Set when a join succeeds; the state pull is sent once the datagram that completed
    /// the join is fully processed, when the seed is certainly known as alive.
    initial_sync_due: bool,
    pending_queries: BTreeMap<QueryId, PendingQuery>,
    open_queries: BTreeMap<QueryId, OpenQuery>,
    sync_replied: BTreeMap<SocketAddr, Instant>,

    transmits: VecDeque<Transmit>,
    events: VecDeque<MemberEvent>,
    query_updates: VecDeque<QueryUpdate>,
    stats: Stats,
}

/// memberlist's node scale, `ceil(log10(n + 1))`: the number of decimal digits of `n`.
fn node_scale(n: usize) -> u32 {
    n.max(1).ilog10() + 1
}

fn event_key(event: &EventMessage) -> BroadcastKey {
    if event.coalesce {
        BroadcastKey::CoalescedEvent(event.name.clone())
    } else {
        let mut hasher = DefaultHasher::new();
        event.payload.hash(&mut hasher);
        BroadcastKey::Event(event.ltime, event.name.clone(), hasher.finish())
    }
}

fn compile_filter(pattern: &str, size_limit: usize) -> Result<regex::Regex, regex::Error> {
    regex::RegexBuilder::new(pattern)
        .size_limit(size_limit)
        .build()
}

impl Membership {
    /// A member that knows nobody yet; call [`Membership::join`] to contact seeds, or wait
    /// to be contacted. `seed` drives every random choice, which makes simulations
    /// reproducible; outside tests it must be fresh OS entropy for every instance, because
    /// encryption nonces come from it too (the driver does this).
    pub fn new(
        config: MembershipConfig,
        seed: [u8; 32],
        now: Instant,
    ) -> Result<Self, ConfigError> {
        config.validate()?;
        let local = config.node_id()?;
        let mut rng = StdRng::from_seed(seed);
        let swim_rng = SmallRng::seed_from_u64(rng.random());
        let swim_config = Self::swim_config(&config, 1);
        let swim = Foca::new(local.clone(), swim_config, swim_rng, SwimCodec::default());
        let limits = &config.limits;
        let mut membership = Self {
            swim,
            runtime: AccumulatingRuntime::new(),
            rng,
            now,
            timers: BTreeMap::new(),
            timer_seq: 0,
            tags: config.tags.clone(),
            tags_version: TagsVersion {
                generation: config.generation,
                counter: 1,
            },
            local,
            incarnation: 0,
            local_health: 0,
            probe_failed: false,
            connected: false,
            ever_connected: false,
            leave: LeaveState::Member,
            join: None,
            seeds: Vec::new(),
            next_isolated_reconnect: now,
            cluster_size: 1,
            retransmit_limit: config.retransmit_mult * node_scale(1),
            members: BTreeMap::new(),
            queue: BroadcastQueue::new(limits.max_broadcast_queue),
            event_clock: LamportClock::default(),
            query_clock: LamportClock::default(),
            recent_events: RecentBuffer::new(limits.recent_buffer_slots, limits.recent_per_slot),
            recent_queries: RecentBuffer::new(limits.recent_buffer_slots, limits.recent_per_slot),
            event_min_ltime: 0,
            awaiting_first_sync: None,
            initial_sync_due: false,
            pending_queries: BTreeMap::new(),
            open_queries: BTreeMap::new(),
            sync_replied: BTreeMap::new(),
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            query_updates: VecDeque::new(),
            stats: Stats::default(),
            config,
        };
        membership.queue_own_tags();
        membership.schedule(now + membership.config.gossip_interval, TimerKind::Gossip);
        membership.schedule(now + MAINTENANCE_INTERVAL, TimerKind::Maintenance);
        let first_sync = membership.jittered(membership.config.push_pull_interval);
        membership.schedule(now + first_sync, TimerKind::PushPull);
        Ok(membership)
    }

    /// foca's settings for a cluster of `n` members (see the crate docs for the reasoning).
    fn swim_config(config: &MembershipConfig, n: usize) -> foca::Config {
        let scale = f64::max(1.0, (n as f64).log10());
        let suspicion = config
            .probe_period
            .mul_f64(f64::from(config.suspicion_mult) * scale);
        let transmissions = (config.retransmit_mult * node_scale(n)).clamp(1, 255);
        foca::Config {
            probe_period: config.probe_period,
            probe_rtt: config.probe_rtt,
            num_indirect_probes: NonZeroUsize::new(config.indirect_probes)
                .expect("validated non-zero"),
            max_transmissions: NonZeroU8::new(transmissions as u8).expect("clamped to 1..=255"),
            suspect_to_down_after: suspicion,
            // foca keeps a down member (and keeps trying to reconnect to it) until we reap it.
            remove_down_after: Some(config.reconnect_timeout.max(config.tombstone_timeout)),
            max_packet_size: NonZeroUsize::new(config.swim_budget()).expect("validated size"),
            notify_down_members: true,
            periodic_announce: Some(PeriodicParams {
                frequency: config.announce_interval,
                num_members: NonZeroUsize::MIN,
            }),
            periodic_announce_to_down_members: Some(PeriodicParams {
                frequency: config.reconnect_interval,
                num_members: NonZeroUsize::MIN,
            }),
            periodic_gossip: Some(PeriodicParams {
                frequency: config.gossip_interval,
                num_members: NonZeroUsize::new(config.gossip_fanout).expect("validated non-zero"),
            }),
        }
    }

    // ----- inputs -----

    /// A datagram received from `from`.
    pub fn handle_packet(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        self.advance(now);
        self.stats.packets_received += 1;
        self.stats.bytes_received += datagram.len() as u64;
        if self.leave == LeaveState::Left {
            return;
        }
        match self.open(datagram) {
            Ok(plain) => self.dispatch(from, &plain),
            Err(reason) => self.stats.drop(reason),
        }
        self.initial_sync();
    }

    /// The earliest deadline to call [`Membership::handle_timeout`] at.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.timers.keys().next().map(|(at, _)| *at)
    }

    /// Runs every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        self.advance(now);
        while let Some(entry) = self.timers.first_entry() {
            if entry.key().0 > self.now {
                break;
            }
            let kind = entry.remove();
            self.on_timer(kind);
        }
        self.initial_sync();
    }

    /// Contacts `seeds` (announce), retrying with exponential back-off until one answers
    /// or [`Membership::cancel_join`].
    pub fn join(&mut self, seeds: &[SocketAddr], now: Instant) -> Result<(), RequestError> {
        self.advance(now);
        if self.leave != LeaveState::Member {
            return Err(RequestError::Left);
        }
        let mut targets: Vec<SocketAddr> = seeds
            .iter()
            .copied()
            .filter(|addr| *addr != self.local.addr())
            .collect();
        targets.sort_unstable();
        targets.dedup();
        if targets.is_empty() {
            return Err(RequestError::NoSeeds);
        }
        self.seeds.clone_from(&targets);
        self.announce_to(&targets);
        self.join = Some(JoinState {
            seeds: targets,
            backoff: self.config.join_backoff_initial,
            attempts: 1,
        });
        self.schedule(
            self.now + self.config.join_backoff_initial,
            TimerKind::JoinRetry,
        );
        Ok(())
    }

    pub fn cancel_join(&mut self) {
        self.join = None;
    }

    /// Announce attempts so far while a join is in progress.
    pub fn join_attempts(&self) -> Option<u32> {
        self.join.as_ref().map(|join| join.attempts)
    }

    /// Replaces our tags and spreads them to every member.
    pub fn update_tags(&mut self, tags: Tags, now: Instant) -> Result<(), RequestError> {
        self.advance(now);
        if self.leave == LeaveState::Left {
            return Err(RequestError::Left);
        }
        validate_tags(&tags, &self.config.limits)?;
        self.tags = tags;
        self.tags_version.counter += 1;
        self.queue_own_tags();
        Ok(())
    }

    /// Broadcasts a user event; every member (this one included) delivers it once.
    /// With `coalesce`, a newer event of the same name supersedes older undelivered ones.
    pub fn user_event(
        &mut self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
        now: Instant,
    ) -> Result<(), RequestError> {
        self.advance(now);
        if self.leave == LeaveState::Left {
            return Err(RequestError::Left);
        }
        let limits = &self.config.limits;
        check_name(name, limits.max_event_name_bytes)?;
        check_payload(payload, limits.max_event_payload_bytes)?;
        let event = EventMessage {
            ltime: self.event_clock.tick(),
            name: name.to_string(),
            payload: payload.to_vec(),
            coalesce,
        };
        if self.apply_event(&event) {
            self.queue_item(event_key(&event), &GossipItem::Event(event));
        }
        Ok(())
    }

    /// Broadcasts a query; acks and responses arrive as [`QueryUpdate`]s until the timeout.
    pub fn query(
        &mut self,
        name: &str,
        payload: &[u8],
        options: QueryOptions,
        now: Instant,
    ) -> Result<QueryId, RequestError> {
        self.advance(now);
        if self.leave == LeaveState::Left {
            return Err(RequestError::Left);
        }
        let limits = &self.config.limits;
        check_name(name, limits.max_event_name_bytes)?;
        check_payload(payload, limits.max_query_payload_bytes)?;
        let filter = &options.filter;
        if filter.nodes.len() + filter.tags.len() > limits.max_query_filters {
            return Err(RequestError::TooManyFilters {
                limit: limits.max_query_filters,
            });
        }
        for node in &filter.nodes {
            check_name(node, MAX_NODE_NAME_BYTES)?;
        }
        for (key, pattern) in &filter.tags {
            check_name(key, u8::MAX as usize)?;
            check_name(pattern, limits.max_filter_pattern_bytes)?;
            compile_filter(pattern, limits.max_filter_regex_bytes).map_err(|error| {
                RequestError::BadFilter {
                    pattern: pattern.clone(),
                    reason: error.to_string(),
                }
            })?;
        }
        let timeout = options
            .timeout
            .unwrap_or_else(|| self.default_query_timeout());
        if timeout > limits.max_query_timeout {
            return Err(RequestError::TimeoutTooLong {
                requested: timeout,
                limit: limits.max_query_timeout,
            });
        }
        if self.pending_queries.len() >= limits.max_pending_queries {
            return Err(RequestError::TooManyPendingQueries {
                limit: limits.max_pending_queries,
            });
        }
        let message = QueryMessage {
            ltime: self.query_clock.time(),
            id: self.rng.random(),
            origin: self.local.name().to_string(),
            origin_addr: self.local.addr(),
            timeout_ms: u32::try_from(timeout.as_millis()).unwrap_or(u32::MAX),
            want_ack: options.request_ack,
            filter: options.filter,
            name: name.to_string(),
            payload: payload.to_vec(),
        };
        let item = GossipItem::Query(message);
        let encoded = item.encode();
        if encoded.len() > self.config.item_budget() {
            return Err(RequestError::QueryTooLarge {
                size: encoded.len(),
                budget: self.config.item_budget(),
            });
        }
        let GossipItem::Query(message) = item else {
            unreachable!("built as a query above")
        };
        self.query_clock.tick();
        let id = QueryId {
            ltime: message.ltime,
            id: message.id,
        };
        self.pending_queries.insert(
            id,
            PendingQuery {
                acks: BTreeSet::new(),
                responses: BTreeSet::new(),
            },
        );
        self.schedule(self.now + timeout, TimerKind::QueryDeadline(id));
        if self.apply_query(&message) {
            self.queue
                .push(BroadcastKey::Query(id.ltime, id.id), encoded);
        }
        Ok(id)
    }

    /// Answers a query received as [`MemberEvent::Query`]; once per query.
    pub fn respond(
        &mut self,
        id: QueryId,
        payload: &[u8],
        now: Instant,
    ) -> Result<(), RequestError> {
        self.advance(now);
        if self.leave == LeaveState::Left {
            return Err(RequestError::Left);
        }
        check_payload(payload, self.config.limits.max_response_payload_bytes)?;
        let open = self
            .open_queries
            .remove(&id)
            .ok_or(RequestError::UnknownQuery(id))?;
        if self.now > open.deadline {
            return Err(RequestError::QueryExpired);
        }
        let from = self.local.name().to_string();
        if open.local {
            self.on_query_response(id, from, payload.to_vec());
        } else {
            let mut plain = Vec::new();
            Direct::QueryResponse {
                ltime: id.ltime,
                id: id.id,
                from,
                payload: payload.to_vec(),
            }
            .encode(&mut plain);
            self.send_plain(open.origin_addr, &plain);
        }
        Ok(())
    }

    /// Graceful leave: broadcasts the leave intent, then after `leave_propagation` declares
    /// this member gone. [`Membership::has_left`] turns true at the end.
    pub fn leave(&mut self, now: Instant) {
        self.advance(now);
        if self.leave != LeaveState::Member {
            return;
        }
        self.leave = LeaveState::Leaving;
        self.join = None;
        let intent = LeaveIntent {
            name: self.local.shared_name().clone(),
            generation: self.local.generation(),
        };
        self.queue_item(
            BroadcastKey::Leave(intent.name.clone()),
            &GossipItem::Leave(intent),
        );
        if self.connected {
            self.gossip_round();
            self.schedule(
                self.now + self.config.leave_propagation,
                TimerKind::FinishLeave,
            );
        } else {
            self.finish_leave();
        }
    }

    /// Installs, selects or removes keys when encryption is on.
    pub fn keyring_mut(&mut self) -> Option<&mut Keyring> {
        self.config.keyring.as_mut()
    }

    // ----- outputs and state -----

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<MemberEvent> {
        self.events.pop_front()
    }

    pub fn poll_query_update(&mut self) -> Option<QueryUpdate> {
        self.query_updates.pop_front()
    }

    pub fn local_member(&self) -> MemberInfo {
        MemberInfo {
            name: self.local.name().to_string(),
            addr: self.local.addr(),
            generation: self.local.generation(),
            status: match self.leave {
                LeaveState::Member => MemberStatus::Alive,
                LeaveState::Leaving => MemberStatus::Leaving,
                LeaveState::Left => MemberStatus::Left,
            },
            tags: self.tags.clone(),
        }
    }

    /// This member and every member the application was told about (Join emitted), with
    /// suspect members marked as such.
    pub fn members(&self) -> Vec<MemberInfo> {
        let suspects: BTreeSet<&NodeId> = self
            .swim
            .iter_membership_state()
            .filter(|member| member.state() == State::Suspect)
            .map(|member| member.id())
            .collect();
        let mut out = vec![self.local_member()];
        for entry in self.members.values().filter(|entry| entry.announced) {
            let Some(mut info) = entry_info(entry) else {
                continue;
            };
            if info.status == MemberStatus::Alive
                && entry.id.as_ref().is_some_and(|id| suspects.contains(id))
            {
                info.status = MemberStatus::Suspect;
            }
            out.push(info);
        }
        out
    }

    /// Whether at least one other member is alive in foca's view.
    pub fn is_connected(&self) -> bool {
        self.connected
    }

    pub fn has_left(&self) -> bool {
        self.leave == LeaveState::Left
    }

    pub fn stats(&self) -> &Stats {
        &self.stats
    }

    /// Lifeguard's local health score: 0 when healthy, up to `max_local_health`.
    pub fn local_health(&self) -> u32 {
        self.local_health
    }

    /// Approximate memory held, to size deployments (the bench divides it per member).
    pub fn memory_estimate(&self) -> MemoryEstimate {
        const ARC_HEADER: usize = 2 * std::mem::size_of::<usize>();
        const BTREE_SLOT_OVERHEAD: usize = 16;
        let member_table = self
            .members
            .iter()
            .map(|(name, entry)| {
                let tags: usize = entry
                    .tags
                    .iter()
                    .flatten()
                    .map(|(k, v)| {
                        k.len() + v.len() + 2 * std::mem::size_of::<String>() + BTREE_SLOT_OVERHEAD
                    })
                    .sum();
                std::mem::size_of::<Arc<str>>()
                    + std::mem::size_of::<Entry>()
                    + BTREE_SLOT_OVERHEAD
                    + ARC_HEADER
                    + name.len()
                    + tags
            })
            .sum();
        let swim_members = self
            .swim
            .iter_membership_state()
            .map(|member| {
                std::mem::size_of::<Member<NodeId>>() + ARC_HEADER + member.id().name().len()
            })
            .sum();
        let recent_events: usize = self
            .recent_events
            .iter()
            .map(|(_, event)| {
                std::mem::size_of::<EventMessage>() + event.name.len() + event.payload.len()
            })
            .sum();
        let buffers = self.queue.queued_bytes()
            + recent_events
            + self.recent_queries.len() * std::mem::size_of::<u32>()
            + self.timers.len() * (std::mem::size_of::<TimerKind>() + 16 + BTREE_SLOT_OVERHEAD);
        MemoryEstimate {
            member_table,
            swim_members,
            buffers,
            members: self.members.len(),
        }
    }

    // ----- internals: time and timers -----

    fn advance(&mut self, now: Instant) {
        if now > self.now {
            self.now = now;
        }
    }

    fn schedule(&mut self, at: Instant, kind: TimerKind) {
        self.timer_seq += 1;
        self.timers.insert((at, self.timer_seq), kind);
    }

    /// `base` plus or minus up to a tenth, so periodic work of many members does not align.
    fn jittered(&mut self, base: Duration) -> Duration {
        let tenth = base / 10;
        let offset = tenth.mul_f64(self.rng.random::<f64>() * 2.0);
        base - tenth + offset
    }

    fn on_timer(&mut self, kind: TimerKind) {
        if self.leave == LeaveState::Left {
            return;
        }
        match kind {
            TimerKind::Swim(timer) => {
                let is_probe = matches!(timer, Timer::ProbeRandomMember(_));
                self.probe_failed = false;
                let result = self.with_swim(|swim, runtime| swim.handle_timer(timer, runtime));
                if let Err(error) = result {
                    tracing::debug!(%error, "foca timer");
                }
                // Lifeguard: a probe that went unanswered makes us doubt our own health
                // (slow scheduling, loaded network); a successful one restores it.
                if is_probe && self.connected {
                    self.local_health = if self.probe_failed {
                        (self.local_health + 1).min(self.config.max_local_health)
                    } else {
                        self.local_health.saturating_sub(1)
                    };
                }
            }
            TimerKind::Gossip => {
                self.schedule(self.now + self.config.gossip_interval, TimerKind::Gossip);
                self.gossip_round();
            }
            TimerKind::Maintenance => {
                self.schedule(self.now + MAINTENANCE_INTERVAL, TimerKind::Maintenance);
                self.maintenance();
            }
            TimerKind::PushPull => {
                let next = self.jittered(self.config.push_pull_interval);
                self.schedule(self.now + next, TimerKind::PushPull);
                if self.connected && self.leave == LeaveState::Member {
                    if let Some(addr) = self.random_live_members(1).first().copied() {
                        self.send_sync(addr, true);
                    }
                }
            }
            TimerKind::JoinRetry => self.retry_join(),
            TimerKind::FinishLeave => self.finish_leave(),
            TimerKind::QueryDeadline(id) => {
                if self.pending_queries.remove(&id).is_some() {
                    self.push_query_update(QueryUpdate::Done { id });
                }
            }
        }
    }

    fn retry_join(&mut self) {
        let Some(join) = self.join.as_mut() else {
            return;
        };
        if self.connected {
            self.join = None;
            return;
        }
        join.attempts += 1;
        join.backoff = (join.backoff * 2).min(self.config.join_backoff_max);
        let backoff = join.backoff;
        let seeds = join.seeds.clone();
        tracing::warn!(
            attempt = join.attempts,
            ?seeds,
            next_in = ?backoff,
            "no gossip seed answered yet (down, unreachable, not Skiff, or another key?); \
             announcing again"
        );
        self.announce_to(&seeds);
        self.schedule(self.now + backoff, TimerKind::JoinRetry);
    }

    fn announce_to(&mut self, addrs: &[SocketAddr]) {
        for addr in addrs {
            let target = NodeId::placeholder(*addr);
            if let Err(error) = self.with_swim(|swim, runtime| swim.announce(target, runtime)) {
                tracing::debug!(%error, %addr, "announce");
            }
        }
    }

    fn finish_leave(&mut self) {
        if self.leave == LeaveState::Left {
            return;
        }
        if let Err(error) = self.with_swim(|swim, runtime| swim.leave_cluster(runtime)) {
            tracing::debug!(%error, "leave_cluster");
        }
        self.leave = LeaveState::Left;
        self.timers.clear();
    }

    fn maintenance(&mut self) {
        self.retune();
        self.reap();
        self.pull_missing_tags();
        let now = self.now;
        self.open_queries.retain(|_, open| open.deadline >= now);
        let window = self.config.push_pull_interval / 10;
        self.sync_replied
            .retain(|_, at| now.saturating_duration_since(*at) < window);
        self.reconnect_if_isolated();
    }

    /// Scales retransmissions and the suspicion timeout with the cluster size.
    fn retune(&mut self) {
        let n = self.swim.num_members() + 1;
        if n == self.cluster_size {
            return;
        }
        self.cluster_size = n;
        self.retransmit_limit = self.config.retransmit_mult * node_scale(n);
        let config = Self::swim_config(&self.config, n);
        if let Err(error) = self.swim.set_config(config) {
            tracing::warn!(%error, "foca refused a retuned config");
        }
    }

    fn reap(&mut self) {
        let now = self.now;
        let mut reaped = Vec::new();
        for (name, entry) in &self.members {
            let timeout = match entry.status {
                EntryStatus::Failed => self.config.reconnect_timeout,
                EntryStatus::Left => self.config.tombstone_timeout,
                EntryStatus::Pending => ORPHAN_TIMEOUT,
                EntryStatus::Alive | EntryStatus::Leaving => continue,
            };
            if now.saturating_duration_since(entry.since) >= timeout {
                reaped.push(name.clone());
            }
        }
        for name in reaped {
            let Some(entry) = self.members.remove(&name) else {
                continue;
            };
            if let Some(info) = entry_info(&entry).filter(|_| entry.announced) {
                self.emit(MemberEvent::Reap(info));
            }
        }
    }

    fn pull_missing_tags(&mut self) {
        let now = self.now;
        let mut targets = Vec::new();
        for entry in self.members.values_mut() {
            if targets.len() == MAX_TAG_PULLS_PER_ROUND {
                break;
            }
            let live = matches!(entry.status, EntryStatus::Alive | EntryStatus::Leaving);
            let due = entry
                .tags_pulled_at
                .is_none_or(|at| now.saturating_duration_since(at) >= TAG_PULL_RETRY);
            if live
                && entry.tags.is_none()
                && due
                && now.saturating_duration_since(entry.since) >= TAG_PULL_DELAY
            {
                entry.tags_pulled_at = Some(now);
                targets.extend(entry.id.as_ref().map(NodeId::addr));
            }
        }
        let mut plain = Vec::new();
        Direct::TagsRequest.encode(&mut plain);
        for addr in targets {
            self.send_plain(addr, &plain);
        }
    }

    /// foca stops all periodic work once no member is alive in its view (say, a single
    /// member cut off by a partition); then we keep knocking on failed members' and seeds'
    /// doors ourselves, so the member is not stranded after the partition heals.
    fn reconnect_if_isolated(&mut self) {
        if self.connected
            || !self.ever_connected
            || self.leave != LeaveState::Member
            || self.now < self.next_isolated_reconnect
        {
            return;
        }
        self.next_isolated_reconnect = self.now + self.config.reconnect_interval;
        let failed: Vec<SocketAddr> = self
            .members
            .values()
            .filter(|entry| entry.status == EntryStatus::Failed)
            .filter_map(|entry| entry.id.as_ref().map(NodeId::addr))
            .collect();
        let mut targets: Vec<SocketAddr> = failed
            .sample(&mut self.rng, ISOLATED_RECONNECT_FANOUT)
            .copied()
            .collect();
        targets.extend(self.seeds.iter().copied());
        targets.sort_unstable();
        targets.dedup();
        self.announce_to(&targets);
    }

    fn default_query_timeout(&self) -> Duration {
        self.config.gossip_interval * QUERY_TIMEOUT_MULT * node_scale(self.cluster_size)
    }

    // ----- internals: foca -----

    fn with_swim<R>(
        &mut self,
        call: impl FnOnce(&mut Swim, &mut AccumulatingRuntime<NodeId>) -> Result<R, foca::Error>,
    ) -> Result<R, foca::Error> {
        let result = call(&mut self.swim, &mut self.runtime);
        self.drain_runtime();
        result
    }

    fn drain_runtime(&mut self) {
        while let Some(notification) = self.runtime.to_notify() {
            self.on_notification(notification);
        }
        while let Some((after, timer)) = self.runtime.to_schedule() {
            // Lifeguard's local health multiplier stretches our probing and our suspicion
            // timeouts while we are the slow one, so we do not accuse healthy members.
            let stretch = match timer {
                Timer::ProbeRandomMember(_)
                | Timer::SendIndirectProbe { .. }
                | Timer::ChangeSuspectToDown { .. } => 1 + self.local_health,
                _ => 1,
            };
            self.schedule(self.now + after * stretch, TimerKind::Swim(timer));
        }
        while let Some((dst, data)) = self.runtime.to_send() {
            self.send_swim(dst.addr(), &data);
        }
    }

    fn on_notification(&mut self, notification: OwnedNotification<NodeId>) {
        match notification {
            OwnedNotification::MemberUp(id) => self.on_member_up(id),
            OwnedNotification::MemberDown(id) => self.on_member_down(&id),
            OwnedNotification::Rename(old, new) => self.on_rename(&old, new),
            OwnedNotification::Active => self.on_active(),
            OwnedNotification::Idle => self.connected = false,
            OwnedNotification::Defunct => {
                self.connected = false;
                if self.leave == LeaveState::Member {
                    tracing::error!(
                        id = ?self.local,
                        "declared down and unable to renew identity (generation exhausted)"
                    );
                }
            }
            OwnedNotification::Rejoin(id) => {
                tracing::info!(
                    ?id,
                    "declared down by the cluster; rejoined with a renewed identity"
                );
                self.local = id;
                self.incarnation = 0;
            }
            OwnedNotification::DataSent(header) => {
                match header.message {
                    Message::Ping(_) => self.stats.probes += 1,
                    Message::PingReq { .. } => self.stats.indirect_probes += 1,
                    _ => {}
                }
                if header.src == self.local && header.src_incarnation > self.incarnation {
                    // foca bumps its incarnation only to refute a suspicion about us.
                    self.incarnation = header.src_incarnation;
                    self.stats.refutations += 1;
                    self.local_health = (self.local_health + 1).min(self.config.max_local_health);
                }
            }
            OwnedNotification::DataReceived(_) => {}
            OwnedNotification::ProbeFailed(_, id) => {
                self.stats.suspicions += 1;
                self.probe_failed = true;
                self.notify_suspect(&id);
            }
        }
    }

    /// Lifeguard's "buddy system": tell a member we now suspect it, directly, so it can refute
    /// before the suspicion timeout instead of waiting to hear of it through gossip.
    fn notify_suspect(&mut self, id: &NodeId) {
        let incarnation = self
            .swim
            .iter_membership_state()
            .find(|member| member.id() == id)
            .map(Member::incarnation);
        if let Some(incarnation) = incarnation {
            let mut plain = Vec::new();
            Direct::Suspected { incarnation }.encode(&mut plain);
            self.send_plain(id.addr(), &plain);
        }
    }

    fn on_active(&mut self) {
        self.connected = true;
        self.ever_connected = true;
        if self.join.take().is_some() {
            self.initial_sync_due = true;
        }
    }

    /// Pulls the full state (members, tags, recent events) from a seed right after joining,
    /// as Serf's join does, instead of waiting for gossip or the periodic exchange.
    fn initial_sync(&mut self) {
        if !std::mem::take(&mut self.initial_sync_due) || !self.connected {
            return;
        }
        let seeds = self.seeds.clone();
        let live_seed = self
            .swim
            .iter_members()
            .map(|member| member.id().addr())
            .find(|addr| seeds.contains(addr));
        let target = live_seed.or_else(|| self.random_live_members(1).first().copied());
        if let Some(addr) = target {
            self.awaiting_first_sync = Some(addr);
            self.send_sync(addr, true);
        }
    }

    fn entry_or_insert(&mut self, name: &Arc<str>) -> Option<&mut Entry> {
        if !self.members.contains_key(name) {
            if self.members.len() >= self.config.limits.max_members {
                self.stats.drop(DropReason::TooManyMembers);
                return None;
            }
            self.members.insert(
                name.clone(),
                Entry {
                    id: None,
                    status: EntryStatus::Pending,
                    since: self.now,
                    tags: None,
                    tags_version: TagsVersion::default(),
                    left_generation: None,
                    announced: false,
                    tags_pulled_at: None,
                },
            );
        }
        self.members.get_mut(name)
    }

    fn on_member_up(&mut self, id: NodeId) {
        if id.name() == self.local.name() {
            tracing::warn!(?id, "another member uses our node name");
            return;
        }
        let now = self.now;
        let Some(entry) = self.entry_or_insert(id.shared_name()) else {
            return;
        };
        let live = matches!(entry.status, EntryStatus::Alive | EntryStatus::Leaving);
        let same = entry.id.as_ref() == Some(&id);
        if live && same {
            return;
        }
        // Two live identities with one name (a restart on a new address while the old one
        // lingers, or a misconfigured duplicate): the newer generation is the member; an
        // older or equal one is ignored, and taken over if the current one goes down.
        if live
            && entry
                .id
                .as_ref()
                .is_some_and(|current| current.generation() >= id.generation())
        {
            tracing::warn!(?id, current = ?entry.id, "two live members share a node name");
            return;
        }
        let was_down = matches!(entry.status, EntryStatus::Failed | EntryStatus::Left);
        entry.status = if entry.left_generation == Some(id.generation()) {
            EntryStatus::Leaving
        } else {
            EntryStatus::Alive
        };
        entry.id = Some(id.clone());
        entry.since = now;
        if was_down {
            // Back after a failure (healed partition, restart): reported as a new Join.
            entry.announced = false;
        }
        let moved = live && entry.announced;
        let name = id.shared_name().clone();
        if moved {
            if let Some(info) = entry_info(entry) {
                self.emit(MemberEvent::Update(info));
            }
        } else {
            self.announce_if_ready(&name);
        }
    }

    fn on_member_down(&mut self, id: &NodeId) {
        let Some(entry) = self.members.get(id.name()) else {
            return;
        };
        let live = matches!(entry.status, EntryStatus::Alive | EntryStatus::Leaving);
        if entry.id.as_ref() != Some(id) || !live {
            return;
        }
        let namesake = self
            .swim
            .iter_members()
            .map(Member::id)
            .filter(|other| other.name() == id.name() && *other != id)
            .max_by_key(|other| other.generation())
            .cloned();
        if let Some(other) = namesake {
            // Another live identity carries this name: the member moved, it did not fail.
            let Some(entry) = self.members.get_mut(id.name()) else {
                return;
            };
            entry.id = Some(other);
            entry.since = self.now;
            if let Some(info) = entry_info(entry).filter(|_| entry.announced) {
                self.emit(MemberEvent::Update(info));
            }
            return;
        }
        let Some(entry) = self.members.get_mut(id.name()) else {
            return;
        };
        let left = entry.left_generation == Some(id.generation());
        entry.status = if left {
            EntryStatus::Left
        } else {
            EntryStatus::Failed
        };
        entry.since = self.now;
        if entry.announced {
            if let Some(info) = entry_info(entry) {
                self.emit(if left {
                    MemberEvent::Leave(info)
                } else {
                    MemberEvent::Failed(info)
                });
            }
        } else {
            self.members.remove(id.name());
        }
    }

    fn on_rename(&mut self, old: &NodeId, new: NodeId) {
        if old.name() == new.name() {
            if let Some(entry) = self.members.get_mut(old.name()) {
                if entry.id.as_ref() == Some(old) {
                    if entry.status == EntryStatus::Alive
                        && entry.left_generation == Some(new.generation())
                    {
                        entry.status = EntryStatus::Leaving;
                    }
                    entry.id = Some(new);
                }
            }
            return;
        }
        // Another node took over this address: the old one is gone.
        self.on_member_down(old);
        if self.swim.iter_members().any(|member| member.id() == &new) {
            self.on_member_up(new);
        }
    }

    fn announce_if_ready(&mut self, name: &Arc<str>) {
        let Some(entry) = self.members.get_mut(name) else {
            return;
        };
        let live = matches!(entry.status, EntryStatus::Alive | EntryStatus::Leaving);
        if !entry.announced && live && entry.tags.is_some() && entry.id.is_some() {
            entry.announced = true;
            if let Some(info) = entry_info(entry) {
                self.emit(MemberEvent::Join(info));
            }
        }
    }

    fn random_live_members(&mut self, count: usize) -> Vec<SocketAddr> {
        let live: Vec<SocketAddr> = self
            .swim
            .iter_members()
            .map(|member| member.id().addr())
            .collect();
        live.sample(&mut self.rng, count).copied().collect()
    }

    fn is_live_member_addr(&self, addr: SocketAddr) -> bool {
        self.swim
            .iter_members()
            .any(|member| member.id().addr() == addr)
    }

    // ----- internals: sending -----

    fn send_plain(&mut self, dst: SocketAddr, plain: &[u8]) {
        if self.transmits.len() >= self.config.limits.max_pending_transmits {
            self.stats.drop(DropReason::TransmitQueueFull);
            return;
        }
        let mut datagram = Vec::with_capacity(HEADER_LEN + ENCRYPTION_OVERHEAD + plain.len());
        match &self.config.keyring {
            Some(keyring) => {
                let header = [MAGIC, VERSION, KIND_ENCRYPTED];
                datagram.extend_from_slice(&header);
                let mut nonce = [0u8; NONCE_LEN];
                self.rng.fill(&mut nonce);
                keyring.seal(&header, nonce, plain, &mut datagram);
            }
            None => {
                datagram.extend_from_slice(&[MAGIC, VERSION]);
                datagram.extend_from_slice(plain);
            }
        }
        self.stats.packets_sent += 1;
        self.stats.bytes_sent += datagram.len() as u64;
        self.transmits.push_back(Transmit {
            dst,
            bytes: datagram,
        });
    }

    /// A foca packet with as many of our queued items as fit after it.
    fn send_swim(&mut self, dst: SocketAddr, foca: &[u8]) {
        let mut plain = Vec::with_capacity(self.config.plain_budget());
        message::put_swim(&mut plain, foca);
        let room = self.config.plain_budget().saturating_sub(plain.len());
        self.queue.fill(&mut plain, room, self.retransmit_limit);
        self.send_plain(dst, &plain);
    }

    /// Sends queued items to `gossip_fanout` random live members.
    fn gossip_round(&mut self) {
        if !self.connected || self.queue.is_empty() {
            return;
        }
        let targets = self.random_live_members(self.config.gossip_fanout);
        for addr in targets {
            let mut plain = vec![KIND_GOSSIP];
            let written =
                self.queue
                    .fill(&mut plain, self.config.item_budget(), self.retransmit_limit);
            if written == 0 {
                break;
            }
            self.send_plain(addr, &plain);
        }
    }

    fn queue_item(&mut self, key: BroadcastKey, item: &GossipItem) {
        if self.queue.push(key, item.encode()) {
            self.stats.drop(DropReason::BroadcastQueueFull);
        }
    }

    fn queue_own_tags(&mut self) {
        let update = TagsUpdate {
            id: self.local.clone(),
            version: self.tags_version,
            tags: self.tags.clone(),
        };
        self.queue_item(
            BroadcastKey::Tags(update.id.shared_name().clone()),
            &GossipItem::Tags(update),
        );
    }

    fn own_sync_record(&self) -> SyncMember {
        SyncMember {
            id: self.local.clone(),
            incarnation: self.incarnation,
            left_generation: (self.leave != LeaveState::Member).then(|| self.local.generation()),
            tags: Some((self.tags_version, self.tags.clone())),
        }
    }

    /// Our whole state (live members with tags and leave intents, recent user events) in as
    /// many datagrams as it takes.
    fn send_sync(&mut self, to: SocketAddr, reply_wanted: bool) {
        let mut records = vec![self.own_sync_record()];
        for member in self.swim.iter_membership_state() {
            if member.state() == State::Down {
                continue;
            }
            let entry = self.members.get(member.id().name());
            records.push(SyncMember {
                id: member.id().clone(),
                incarnation: member.incarnation(),
                left_generation: entry.and_then(|entry| entry.left_generation),
                tags: entry.and_then(|entry| {
                    entry
                        .tags
                        .as_ref()
                        .map(|tags| (entry.tags_version, tags.clone()))
                }),
            });
        }
        let events: Vec<EventMessage> = self
            .recent_events
            .iter()
            .map(|(_, event)| event.clone())
            .collect();
        let budget = self.config.item_budget() - message::SYNC_CHUNK_FIXED_LEN;
        let fresh = || SyncChunk {
            reply_wanted,
            event_clock: self.event_clock.time(),
            query_clock: self.query_clock.time(),
            ..SyncChunk::default()
        };
        let mut chunks = vec![fresh()];
        let mut used = 0;
        for record in records {
            let len = message::sync_member_len(&record);
            if used + len > budget {
                chunks.push(fresh());
                used = 0;
            }
            used += len;
            if let Some(chunk) = chunks.last_mut() {
                chunk.members.push(record);
            }
        }
        for event in events {
            let len = message::sync_event_len(&event);
            if used + len > budget {
                chunks.push(fresh());
                used = 0;
            }
            used += len;
            if let Some(chunk) = chunks.last_mut() {
                chunk.events.push(event);
            }
        }
        for chunk in chunks {
            let mut plain = Vec::new();
            Direct::Sync(chunk).encode(&mut plain);
            self.send_plain(to, &plain);
        }
    }

    fn emit(&mut self, event: MemberEvent) {
        if self.events.len() >= self.config.limits.max_pending_events {
            self.stats.drop(DropReason::EventQueueFull);
        } else {
            self.events.push_back(event);
        }
    }

    fn push_query_update(&mut self, update: QueryUpdate) {
        if self.query_updates.len() >= self.config.limits.max_pending_events {
            self.stats.drop(DropReason::EventQueueFull);
        } else {
            self.query_updates.push_back(update);
        }
    }

    // ----- internals: receiving -----

    /// Checks the envelope and decrypts; returns `[kind][body]`.
    fn open(&self, datagram: &[u8]) -> Result<Vec<u8>, DropReason> {
        if datagram.len() > self.config.max_packet_size {
            return Err(DropReason::TooLarge);
        }
        if datagram.first() != Some(&MAGIC) {
            return Err(DropReason::BadMagic);
        }
        if datagram.len() < HEADER_LEN {
            return Err(DropReason::Malformed);
        }
        if datagram[1] != VERSION {
            return Err(DropReason::UnsupportedVersion);
        }
        let encrypted = datagram[2] == KIND_ENCRYPTED;
        match (&self.config.keyring, encrypted) {
            (Some(keyring), true) => keyring
                .open(&datagram[..HEADER_LEN], &datagram[HEADER_LEN..])
                .map_err(|_| DropReason::DecryptFailed),
            (None, false) => Ok(datagram[2..].to_vec()),
            _ => Err(DropReason::EncryptionMismatch),
        }
    }

    fn dispatch(&mut self, from: SocketAddr, plain: &[u8]) {
        let packet = match decode_packet(plain) {
            Ok(packet) => packet,
            Err(error) => {
                tracing::trace!(%from, %error, "undecodable gossip datagram");
                self.stats.drop(DropReason::Malformed);
                return;
            }
        };
        match packet {
            Packet::Swim { foca, items } => {
                // Our items first: a leave intent travelling with the departure itself is
                // then known when foca reports the member down.
                self.apply_items(items);
                if let Err(error) = self.with_swim(|swim, runtime| swim.handle_data(foca, runtime))
                {
                    tracing::trace!(%from, %error, "foca refused a datagram");
                    self.stats.drop(DropReason::SwimRejected);
                }
            }
            Packet::Gossip { items } => self.apply_items(items),
            Packet::Direct(direct) => self.on_direct(from, direct),
        }
    }

    fn apply_items(&mut self, items: Vec<GossipItem>) {
        for item in items {
            match &item {
                GossipItem::Tags(update) => {
                    if self.apply_tags(update) {
                        self.queue_item(BroadcastKey::Tags(update.id.shared_name().clone()), &item);
                    }
                }
                GossipItem::Leave(intent) => {
                    if self.apply_leave(intent) {
                        self.queue_item(BroadcastKey::Leave(intent.name.clone()), &item);
                    }
                }
                GossipItem::Event(event) => {
                    if self.apply_event(event) {
                        self.queue_item(event_key(event), &item);
                    }
                }
                GossipItem::Query(query) => {
                    if self.apply_query(query) {
                        self.queue_item(BroadcastKey::Query(query.ltime, query.id), &item);
                    }
                }
            }
        }
    }

    /// Stores tags newer than what we hold; returns whether they were new. A member foca
    /// does not know yet is handed to foca as alive.
    fn apply_tags(&mut self, update: &TagsUpdate) -> bool {
        let name = update.id.shared_name();
        if **name == *self.local.name() {
            return false;
        }
        let Some(entry) = self.entry_or_insert(name) else {
            return false;
        };
        let unknown_to_swim = entry.id.is_none();
        if entry.tags.is_some() && entry.tags_version >= update.version {
            return false;
        }
        let changed = entry.tags.as_ref() != Some(&update.tags);
        entry.tags = Some(update.tags.clone());
        entry.tags_version = update.version;
        let live = matches!(entry.status, EntryStatus::Alive | EntryStatus::Leaving);
        if entry.announced && live {
            if let Some(info) = entry_info(entry).filter(|_| changed) {
                self.emit(MemberEvent::Update(info));
            }
        } else {
            self.announce_if_ready(name);
        }
        if unknown_to_swim {
            let alive = Member::new(update.id.clone(), 0, State::Alive);
            if let Err(error) = self
                .with_swim(|swim, runtime| swim.apply_many(std::iter::once(alive), true, runtime))
            {
                tracing::debug!(%error, "adding a member learned from its tags");
            }
        }
        true
    }

    /// Records a leave intent for the member's current generation; returns whether new.
    fn apply_leave(&mut self, intent: &LeaveIntent) -> bool {
        if *intent.name == *self.local.name() {
            return false;
        }
        let now = self.now;
        let Some(entry) = self.members.get_mut(&intent.name) else {
            return false;
        };
        let Some(generation) = entry.id.as_ref().map(NodeId::generation) else {
            return false;
        };
        if generation > intent.generation
            || entry
                .left_generation
                .is_some_and(|left| left >= intent.generation)
        {
            return false;
        }
        entry.left_generation = Some(intent.generation);
        if generation == intent.generation {
            match entry.status {
                EntryStatus::Alive => entry.status = EntryStatus::Leaving,
                EntryStatus::Failed => {
                    // The departure was seen before the intent: correct "failed" to "left".
                    entry.status = EntryStatus::Left;
                    entry.since = now;
                    if let Some(info) = entry_info(entry).filter(|_| entry.announced) {
                        self.emit(MemberEvent::Leave(info));
                    }
                }
                EntryStatus::Pending | EntryStatus::Leaving | EntryStatus::Left => {}
            }
        }
        true
    }

    /// Delivers a user event unless seen; returns whether it was new (to be passed on).
    fn apply_event(&mut self, event: &EventMessage) -> bool {
        self.event_clock.witness(event.ltime);
        if event.coalesce
            && self.recent_events.iter().any(|(ltime, seen)| {
                seen.coalesce && seen.name == event.name && ltime > event.ltime
            })
        {
            return false;
        }
        match self
            .recent_events
            .admit(event.ltime, event.clone(), self.event_clock.time())
        {
            Admission::New => {
                if event.ltime >= self.event_min_ltime {
                    self.emit(MemberEvent::User(UserEvent {
                        ltime: event.ltime,
                        name: event.name.clone(),
                        payload: event.payload.clone(),
                        coalesce: event.coalesce,
                    }));
                }
                true
            }
            Admission::Duplicate => false,
            Admission::TooOld => {
                self.stats.drop(DropReason::TooOld);
                false
            }
            Admission::SlotFull => {
                self.stats.drop(DropReason::RecentSlotFull);
                false
            }
        }
    }

    /// Handles a query unless seen; returns whether it was new (to be passed on).
    fn apply_query(&mut self, query: &QueryMessage) -> bool {
        self.query_clock.witness(query.ltime);
        match self
            .recent_queries
            .admit(query.ltime, query.id, self.query_clock.time())
        {
            Admission::New => {}
            Admission::Duplicate => return false,
            Admission::TooOld => {
                self.stats.drop(DropReason::TooOld);
                return false;
            }
            Admission::SlotFull => {
                self.stats.drop(DropReason::RecentSlotFull);
                return false;
            }
        }
        match self.query_matches(&query.filter) {
            Ok(true) => self.accept_query(query),
            Ok(false) => {}
            Err(()) => self.stats.drop(DropReason::BadQueryFilter),
        }
        true
    }

    fn query_matches(&self, filter: &QueryFilter) -> Result<bool, ()> {
        if !filter.nodes.is_empty() && !filter.nodes.iter().any(|node| node == self.local.name()) {
            return Ok(false);
        }
        let limits = &self.config.limits;
        for (key, pattern) in &filter.tags {
            if pattern.len() > limits.max_filter_pattern_bytes {
                return Err(());
            }
            let regex = compile_filter(pattern, limits.max_filter_regex_bytes).map_err(|_| ())?;
            match self.tags.get(key) {
                Some(value) if regex.is_match(value) => {}
                _ => return Ok(false),
            }
        }
        Ok(true)
    }

    fn accept_query(&mut self, query: &QueryMessage) {
        let id = QueryId {
            ltime: query.ltime,
            id: query.id,
        };
        let local = query.origin == self.local.name() && query.origin_addr == self.local.addr();
        let from = self.local.name().to_string();
        if query.want_ack {
            if local {
                self.on_query_ack(id, from);
            } else {
                let mut plain = Vec::new();
                Direct::QueryAck {
                    ltime: id.ltime,
                    id: id.id,
                    from,
                }
                .encode(&mut plain);
                self.send_plain(query.origin_addr, &plain);
            }
        }
        if self.open_queries.len() >= self.config.limits.max_open_incoming_queries {
            self.stats.drop(DropReason::TooManyOpenQueries);
            return;
        }
        let timeout = Duration::from_millis(u64::from(query.timeout_ms))
            .min(self.config.limits.max_query_timeout);
        let deadline = self.now + timeout;
        self.open_queries.insert(
            id,
            OpenQuery {
                origin_addr: query.origin_addr,
                local,
                deadline,
            },
        );
        self.emit(MemberEvent::Query(IncomingQuery {
            id,
            name: query.name.clone(),
            payload: query.payload.clone(),
            origin: query.origin.clone(),
            deadline,
        }));
    }

    fn on_query_ack(&mut self, id: QueryId, from: String) {
        let limit = self.config.limits.max_members + 1;
        match self.pending_queries.get_mut(&id) {
            Some(pending) if pending.acks.len() < limit => {
                if pending.acks.insert(from.clone()) {
                    self.push_query_update(QueryUpdate::Ack { id, from });
                }
            }
            _ => self.stats.drop(DropReason::LateQueryAnswer),
        }
    }

    fn on_query_response(&mut self, id: QueryId, from: String, payload: Vec<u8>) {
        let limit = self.config.limits.max_members + 1;
        match self.pending_queries.get_mut(&id) {
            Some(pending) if pending.responses.len() < limit => {
                if pending.responses.insert(from.clone()) {
                    self.push_query_update(QueryUpdate::Response { id, from, payload });
                }
            }
            _ => self.stats.drop(DropReason::LateQueryAnswer),
        }
    }

    fn on_direct(&mut self, from: SocketAddr, direct: Direct) {
        match direct {
            Direct::Sync(chunk) => self.on_sync(from, chunk),
            Direct::TagsRequest => {
                if self.leave == LeaveState::Member {
                    let chunk = SyncChunk {
                        reply_wanted: false,
                        event_clock: self.event_clock.time(),
                        query_clock: self.query_clock.time(),
                        members: vec![self.own_sync_record()],
                        events: Vec::new(),
                    };
                    let mut plain = Vec::new();
                    Direct::Sync(chunk).encode(&mut plain);
                    self.send_plain(from, &plain);
                }
            }
            Direct::QueryAck { ltime, id, from } => self.on_query_ack(QueryId { ltime, id }, from),
            Direct::QueryResponse {
                ltime,
                id,
                from,
                payload,
            } => self.on_query_response(QueryId { ltime, id }, from, payload),
            Direct::Suspected { incarnation } => {
                if !self.is_live_member_addr(from) {
                    self.stats.drop(DropReason::UnknownSender);
                    return;
                }
                let me = Member::new(self.local.clone(), incarnation, State::Suspect);
                if let Err(error) = self
                    .with_swim(|swim, runtime| swim.apply_many(std::iter::once(me), true, runtime))
                {
                    tracing::debug!(%error, "refuting suspicion");
                }
            }
        }
    }

    fn on_sync(&mut self, from: SocketAddr, chunk: SyncChunk) {
        if chunk.reply_wanted {
            if !self.is_live_member_addr(from) {
                self.stats.drop(DropReason::UnknownSender);
                return;
            }
            if self.sync_replied.contains_key(&from) {
                self.stats.drop(DropReason::SyncRateLimited);
            } else if self.leave == LeaveState::Member {
                self.sync_replied.insert(from, self.now);
                self.send_sync(from, false);
            }
        }
        if self.awaiting_first_sync == Some(from) && !chunk.reply_wanted {
            self.awaiting_first_sync = None;
            self.event_min_ltime = self.event_min_ltime.max(chunk.event_clock);
        }
        self.event_clock
            .witness(chunk.event_clock.saturating_sub(1));
        self.query_clock
            .witness(chunk.query_clock.saturating_sub(1));
        let mut alive = Vec::with_capacity(chunk.members.len());
        for member in chunk.members {
            if member.id.name() == self.local.name() {
                continue;
            }
            let name = member.id.shared_name().clone();
            if let Some((version, tags)) = member.tags {
                self.apply_tags(&TagsUpdate {
                    id: member.id.clone(),
                    version,
                    tags,
                });
            }
            if let Some(generation) = member.left_generation {
                self.apply_leave(&LeaveIntent { name, generation });
            }
            alive.push(Member::new(member.id, member.incarnation, State::Alive));
        }
        if !alive.is_empty() {
            if let Err(error) =
                self.with_swim(|swim, runtime| swim.apply_many(alive.into_iter(), true, runtime))
            {
                tracing::debug!(%error, "applying synced members");
            }
        }
        for event in &chunk.events {
            self.apply_event(event);
        }
    }
}

/// What is reported of an entry; None for one not reportable yet (no identity, or pending),
/// which an announced entry never is.
fn entry_info(entry: &Entry) -> Option<MemberInfo> {
    let id = entry.id.as_ref()?;
    let status = match entry.status {
        EntryStatus::Alive => MemberStatus::Alive,
        EntryStatus::Pending => return None,
        EntryStatus::Leaving => MemberStatus::Leaving,
        EntryStatus::Failed => MemberStatus::Failed,
        EntryStatus::Left => MemberStatus::Left,
    };
    Some(MemberInfo {
        name: id.name().to_string(),
        addr: id.addr(),
        generation: id.generation(),
        status,
        tags: entry.tags.clone().unwrap_or_default(),
    })
}

fn check_name(name: &str, limit: usize) -> Result<(), RequestError> {
    if name.is_empty() || name.len() > limit {
        return Err(RequestError::BadName {
            len: name.len(),
            limit,
        });
    }
    Ok(())
}

fn check_payload(payload: &[u8], limit: usize) -> Result<(), RequestError> {
    if payload.len() > limit {
        return Err(RequestError::PayloadTooLarge {
            len: payload.len(),
            limit,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn node_scale_is_ceil_log10_of_n_plus_one() {
        for n in [1usize, 9, 10, 99, 100, 500, 999, 1000] {
            let exact = ((n + 1) as f64).log10().ceil() as u32;
            assert_eq!(node_scale(n), exact, "n = {n}");
        }
    }
}
