//! Configuration of the membership core, its limits and their validation.

use std::net::SocketAddr;
use std::time::Duration;

use crate::identity::{NodeId, NodeIdError, MAX_NODE_NAME_BYTES};
use crate::keyring::{Keyring, ENCRYPTION_OVERHEAD};
use crate::message::{self, Tags, HEADER_LEN, ITEM_OVERHEAD};

/// Well-known tag keys a Skiff broker publishes.
pub mod tag {
    pub const NODE_ID: &str = "id";
    pub const KAFKA_ADDR: &str = "kafka";
    pub const RAFT_ADDR: &str = "raft";
    /// The metadata cluster a member belongs to, once it knows; members of other clusters
    /// sharing the gossip pool are ignored by the controller.
    pub const CLUSTER_ID: &str = "cluster";
    pub const HTTP_ADDR: &str = "http";
    pub const RACK: &str = "rack";
    pub const ROLE: &str = "role";
    pub const VERSION: &str = "version";
    /// This run of the member's process (its start time in ms). Unlike the gossip identity's
    /// generation, which a member renews when it rejoins after being declared failed, it
    /// changes only when the process restarts.
    pub const RUN: &str = "run";
}

/// Sizes and counts that bound what the core accepts and keeps.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Encoded size of one member's tags (Serf's node metadata limit is 512 bytes too).
    pub max_tags_bytes: usize,
    pub max_event_name_bytes: usize,
    pub max_event_payload_bytes: usize,
    pub max_query_payload_bytes: usize,
    pub max_response_payload_bytes: usize,
    pub max_query_filters: usize,
    pub max_filter_pattern_bytes: usize,
    /// Compiled size limit of one tag-filter regex (patterns come from the network).
    pub max_filter_regex_bytes: usize,
    pub max_query_timeout: Duration,
    /// Members (besides ourselves) kept in the table; more are refused and counted.
    pub max_members: usize,
    /// Lamport-time window of remembered user events and queries (Serf's event buffer).
    pub recent_buffer_slots: usize,
    /// Distinct user events or queries remembered per Lamport time.
    pub recent_per_slot: usize,
    pub max_broadcast_queue: usize,
    /// Our own queries waiting for answers.
    pub max_pending_queries: usize,
    /// Received queries that the application may still answer.
    pub max_open_incoming_queries: usize,
    /// Outputs not yet taken by the driver; beyond this they are dropped and counted.
    pub max_pending_transmits: usize,
    pub max_pending_events: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_tags_bytes: 512,
            max_event_name_bytes: 128,
            max_event_payload_bytes: 512,
            max_query_payload_bytes: 512,
            max_response_payload_bytes: 1024,
            max_query_filters: 8,
            max_filter_pattern_bytes: 128,
            max_filter_regex_bytes: 256 * 1024,
            max_query_timeout: Duration::from_secs(300),
            max_members: 4096,
            recent_buffer_slots: 256,
            recent_per_slot: 8,
            max_broadcast_queue: 1024,
            max_pending_queries: 64,
            max_open_incoming_queries: 256,
            max_pending_transmits: 8192,
            max_pending_events: 8192,
        }
    }
}

/// Everything the core needs to run one member.
#[derive(Debug, Clone)]
pub struct MembershipConfig {
    pub name: String,
    /// The address other members send gossip to (must be routable, not 0.0.0.0).
    pub gossip_addr: SocketAddr,
    /// Orders this process's identity against earlier runs with the same address; the
    /// driver uses the start time in milliseconds, so a restart always wins.
    pub generation: u64,
    pub tags: Tags,
    /// How often a random member is probed (SWIM protocol period).
    pub probe_period: Duration,
    /// How long to wait for a direct ack before asking others to probe indirectly.
    pub probe_rtt: Duration,
    pub indirect_probes: usize,
    /// How often queued updates and items are pushed to `gossip_fanout` random members.
    pub gossip_interval: Duration,
    pub gossip_fanout: usize,
    /// Each update is sent `retransmit_mult * ceil(log10(n + 1))` times (memberlist).
    pub retransmit_mult: u32,
    /// Suspicion lasts `suspicion_mult * max(1, log10(n)) * probe_period` (memberlist),
    /// stretched by the local health multiplier.
    pub suspicion_mult: u32,
    /// Highest local health multiplier (Lifeguard): probe timing and suspicion timeouts are
    /// scaled by `1 + score` while this member itself seems slow.
    pub max_local_health: u32,
    /// Ask a random member for more members this often (foca's periodic announce).
    pub announce_interval: Duration,
    /// Try to reach failed members this often, so a healed partition merges back.
    pub reconnect_interval: Duration,
    /// Full state exchange with a random member this often (Serf's push-pull).
    pub push_pull_interval: Duration,
    /// A failed member is forgotten (reaped) after this long.
    pub reconnect_timeout: Duration,
    /// A member that left is forgotten after this long.
    pub tombstone_timeout: Duration,
    /// Between broadcasting the leave intent and declaring ourselves gone, so the intent
    /// reaches members before the departure does (then they report "left", not "failed").
    pub leave_propagation: Duration,
    pub join_backoff_initial: Duration,
    pub join_backoff_max: Duration,
    /// Largest datagram sent or accepted.
    pub max_packet_size: usize,
    /// Encrypt all gossip when set; then unencrypted datagrams are refused.
    pub keyring: Option<Keyring>,
    pub limits: Limits,
}

impl MembershipConfig {
    /// LAN defaults (memberlist's and Serf's numbers) for a member called `name` at `gossip_addr`.
    pub fn new(name: impl Into<String>, gossip_addr: SocketAddr) -> Self {
        Self {
            name: name.into(),
            gossip_addr,
            generation: 0,
            tags: Tags::new(),
            probe_period: Duration::from_secs(1),
            probe_rtt: Duration::from_millis(500),
            indirect_probes: 3,
            gossip_interval: Duration::from_millis(200),
            gossip_fanout: 3,
            retransmit_mult: 4,
            suspicion_mult: 4,
            max_local_health: 8,
            announce_interval: Duration::from_secs(30),
            reconnect_interval: Duration::from_secs(30),
            push_pull_interval: Duration::from_secs(30),
            reconnect_timeout: Duration::from_secs(24 * 3600),
            tombstone_timeout: Duration::from_secs(3600),
            leave_propagation: Duration::from_secs(1),
            join_backoff_initial: Duration::from_secs(1),
            join_backoff_max: Duration::from_secs(30),
            max_packet_size: 1400,
            keyring: None,
            limits: Limits::default(),
        }
    }

    pub(crate) fn node_id(&self) -> Result<NodeId, ConfigError> {
        Ok(NodeId::new(&self.name, self.gossip_addr, self.generation)?)
    }

    /// Bytes available for `[kind][body]` in one datagram. Encryption overhead is always
    /// reserved, so the limits below do not depend on whether a keyring is set.
    pub(crate) fn plain_budget(&self) -> usize {
        self.max_packet_size
            .saturating_sub(HEADER_LEN + ENCRYPTION_OVERHEAD)
    }

    /// Largest foca packet: two thirds of a datagram, leaving the rest for our items.
    pub(crate) fn swim_budget(&self) -> usize {
        self.plain_budget() * 2 / 3
    }

    /// Largest encoded gossip item (it must fit in a GOSSIP datagram by itself).
    pub(crate) fn item_budget(&self) -> usize {
        self.plain_budget().saturating_sub(1)
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        self.node_id()?;
        let limits = &self.limits;
        if !(576..=65_000).contains(&self.max_packet_size) {
            return Err(ConfigError::Invalid(
                "max_packet_size must be between 576 and 65000 bytes",
            ));
        }
        let positive = [
            (self.probe_period, "probe_period"),
            (self.probe_rtt, "probe_rtt"),
            (self.gossip_interval, "gossip_interval"),
            (self.announce_interval, "announce_interval"),
            (self.reconnect_interval, "reconnect_interval"),
            (self.push_pull_interval, "push_pull_interval"),
            (self.join_backoff_initial, "join_backoff_initial"),
        ];
        if let Some((_, name)) = positive.iter().find(|(value, _)| value.is_zero()) {
            return Err(ConfigError::Zero(name));
        }
        if self.probe_rtt >= self.probe_period {
            return Err(ConfigError::Invalid(
                "probe_rtt must be shorter than probe_period",
            ));
        }
        if self.indirect_probes == 0 || self.gossip_fanout == 0 || self.retransmit_mult == 0 {
            return Err(ConfigError::Invalid(
                "indirect_probes, gossip_fanout and retransmit_mult must be at least 1",
            ));
        }
        if self.suspicion_mult == 0 {
            return Err(ConfigError::Zero("suspicion_mult"));
        }
        if self.join_backoff_max < self.join_backoff_initial {
            return Err(ConfigError::Invalid(
                "join_backoff_max must not be below join_backoff_initial",
            ));
        }
        if limits.max_event_name_bytes > u8::MAX as usize
            || limits.max_filter_pattern_bytes > u8::MAX as usize
        {
            return Err(ConfigError::Invalid(
                "event/query names and filter patterns are limited to 255 bytes",
            ));
        }
        let counts = [
            (limits.max_members, "limits.max_members"),
            (limits.recent_buffer_slots, "limits.recent_buffer_slots"),
            (limits.recent_per_slot, "limits.recent_per_slot"),
            (limits.max_broadcast_queue, "limits.max_broadcast_queue"),
            (limits.max_pending_queries, "limits.max_pending_queries"),
            (
                limits.max_open_incoming_queries,
                "limits.max_open_incoming_queries",
            ),
            (limits.max_pending_transmits, "limits.max_pending_transmits"),
            (limits.max_pending_events, "limits.max_pending_events"),
        ];
        if let Some((_, name)) = counts.iter().find(|(value, _)| *value == 0) {
            return Err(ConfigError::Zero(name));
        }
        // The largest item of each kind must fit in one datagram.
        let item_budget = self.item_budget();
        let tags_item =
            ITEM_OVERHEAD + 1 + MAX_NODE_NAME_BYTES + 19 + 8 + 16 + limits.max_tags_bytes;
        let event_item = ITEM_OVERHEAD
            + 8
            + 1
            + 1
            + limits.max_event_name_bytes
            + 2
            + limits.max_event_payload_bytes;
        // A query's variable parts (filters) are checked when it is sent; here the fixed
        // parts with an empty filter.
        let query_item = ITEM_OVERHEAD
            + 8
            + 4
            + 1
            + MAX_NODE_NAME_BYTES
            + 19
            + 4
            + 1
            + 2
            + 1
            + limits.max_event_name_bytes
            + 2
            + limits.max_query_payload_bytes;
        let response = 1 + 8 + 4 + 1 + MAX_NODE_NAME_BYTES + 2 + limits.max_response_payload_bytes;
        let sync_member = 1
            + message::SYNC_CHUNK_FIXED_LEN
            + 1
            + MAX_NODE_NAME_BYTES
            + 19
            + 8
            + 2
            + 9
            + 17
            + limits.max_tags_bytes;
        for (needed, what) in [
            (tags_item, "limits.max_tags_bytes"),
            (
                event_item,
                "limits.max_event_payload_bytes + max_event_name_bytes",
            ),
            (query_item, "limits.max_query_payload_bytes"),
            (response + 1, "limits.max_response_payload_bytes"),
            (sync_member + 1, "limits.max_tags_bytes"),
        ] {
            if needed > item_budget {
                return Err(ConfigError::DoesNotFit {
                    what,
                    needed,
                    budget: item_budget,
                });
            }
        }
        validate_tags(&self.tags, limits)?;
        Ok(())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    NodeId(#[from] NodeIdError),
    #[error("{0} must not be zero")]
    Zero(&'static str),
    #[error("{0}")]
    Invalid(&'static str),
    #[error("{what} too large: needs {needed} bytes of a {budget}-byte datagram budget")]
    DoesNotFit {
        what: &'static str,
        needed: usize,
        budget: usize,
    },
    #[error(transparent)]
    Tags(#[from] TagsError),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TagsError {
    #[error("tags take {size} bytes encoded, the limit is {limit}")]
    TooLarge { size: usize, limit: usize },
    #[error("at most 255 tags")]
    TooMany,
    #[error("tag keys must be 1 to 255 bytes")]
    BadKey,
}

pub(crate) fn validate_tags(tags: &Tags, limits: &Limits) -> Result<(), TagsError> {
    if tags.len() > u8::MAX as usize {
        return Err(TagsError::TooMany);
    }
    if tags
        .keys()
        .any(|key| key.is_empty() || key.len() > u8::MAX as usize)
    {
        return Err(TagsError::BadKey);
    }
    let size = message::tags_encoded_len(tags);
    if size > limits.max_tags_bytes {
        return Err(TagsError::TooLarge {
            size,
            limit: limits.max_tags_bytes,
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> MembershipConfig {
        MembershipConfig::new("b1", "127.0.0.1:7946".parse().unwrap())
    }

    #[test]
    fn defaults_are_valid() {
        config().validate().unwrap();
    }

    #[test]
    fn oversized_limits_are_refused_with_the_reason() {
        let mut c = config();
        c.limits.max_event_payload_bytes = 2000;
        assert!(matches!(
            c.validate(),
            Err(ConfigError::DoesNotFit { what, .. }) if what.contains("event")
        ));
        let mut c = config();
        c.probe_rtt = c.probe_period;
        assert!(c.validate().is_err());
        let mut c = config();
        c.limits.max_members = 0;
        assert_eq!(c.validate(), Err(ConfigError::Zero("limits.max_members")));
        let mut c = config();
        c.name.clear();
        assert!(matches!(c.validate(), Err(ConfigError::NodeId(_))));
    }

    #[test]
    fn tags_are_limited_by_encoded_size() {
        let limits = Limits::default();
        let mut tags = Tags::new();
        tags.insert("k".into(), "v".repeat(500));
        validate_tags(&tags, &limits).unwrap();
        tags.insert("k2".into(), "v".repeat(10));
        assert!(matches!(
            validate_tags(&tags, &limits),
            Err(TagsError::TooLarge { .. })
        ));
        let mut empty_key = Tags::new();
        empty_key.insert(String::new(), "v".into());
        assert_eq!(validate_tags(&empty_key, &limits), Err(TagsError::BadKey));
    }
}
