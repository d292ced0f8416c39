//! Gossip membership for Skiff: who is in the cluster, what they publish, and who failed.
//!
//! A Serf-like layer over [foca](https://docs.rs/foca) (SWIM with suspicion), in two parts:
//! - [`Membership`], a sans-I/O state machine: datagrams, timer expiries and requests in;
//!   datagrams, deadlines and [`MemberEvent`]s out. Tests drive it in a deterministic
//!   simulation (`tests/sim`).
//! - [`GossipAgent`], the tokio driver: one UDP socket, one task, a command channel.
//!
//! # What each member knows
//! Every member has a name, a gossip address and a generation (its start time; bumped when
//! it rejoins after a false "failed" verdict), plus **tags** (node id, Kafka/Raft/HTTP
//! addresses, rack, role, version; at most `limits.max_tags_bytes` encoded) that any member
//! can read and its owner can change at runtime. Members move through alive, suspect,
//! leaving, left, failed, and are reaped `reconnect_timeout` after failing (default 24 h) or
//! `tombstone_timeout` after leaving (default 1 h).
//!
//! # Protocol choices
//! - foca config (scaled with the cluster size `n`, like memberlist's LAN profile): probe
//!   every 1 s, 500 ms for a direct ack, 3 indirect probes; suspicion lasts
//!   `4 * max(1, log10 n)` probe periods; updates are retransmitted
//!   `4 * ceil(log10(n + 1))` times; periodic gossip every 200 ms to 3 members (Serf's
//!   numbers, and foca's own advice in its issue #15 against false downs from slow
//!   dissemination); periodic announce every 30 s; announce to one down member every 30 s
//!   and `notify_down_members`, so partitions heal by themselves.
//! - Lifeguard: foca's suspicion is a single fixed timer started by the member whose probe
//!   failed, so we add (1) a local health multiplier (a failed probe or a refutation raises
//!   it, a good probe lowers it) that stretches our probe timing and suspicion timeouts
//!   while we are the slow one, and (2) a direct "you are suspected" notice to the suspect
//!   so it refutes at once. Independent-confirmation dogpiling needs the accuser's identity
//!   in the suspicion message, which foca's wire format does not carry.
//! - Graceful leave broadcasts a leave intent first and declares the member down
//!   `leave_propagation` (1 s) later, because foca's down notification does not tell a
//!   leave from a failure. A failed member whose leave intent arrives late becomes "left".
//! - Tags, leave intents, user events and queries are our own gossip items: piggybacked on
//!   every SWIM datagram when room allows and pushed to 3 random members every 200 ms,
//!   each sent `4 * ceil(log10(n + 1))` times. Tags are ordered by (generation, counter);
//!   user events and queries by Lamport clocks with a bounded dedupe window, as in Serf.
//!   A tag item carries the member's identity, so it also tells foca about a member it
//!   missed (a second path for join news). A member is reported (Join) once it is alive
//!   and its tags are known; tags missing a second after it appeared are pulled from it.
//! - One member per name: if two live identities share a name, the newer generation is
//!   the member and the other is ignored (taken over if the current one goes down).
//! - A push-pull state exchange (members, tags, leave intents, recent events) with one
//!   random member every 30 s and right after joining, so a new member learns everything
//!   at once and missed broadcasts are repaired.
//! - Optional AES-256-GCM encryption with a keyring ([`Keyring`]).
//!
//! # Bounds
//! Datagrams are at most `max_packet_size` (1400) bytes, in and out; every decoder reads
//! fixed-width lengths against the bytes present. The member table
//! (`limits.max_members`), the dissemination queue, the user-event and query dedupe
//! windows, open and pending queries, and the output queues all have limits; what does not
//! fit is dropped and counted per [`DropReason`], never buffered without bound.
//!
//! Datagram formats are documented in `message.rs`.

mod agent;
mod broadcast;
mod config;
mod identity;
mod keyring;
mod membership;
mod message;
mod recent;
mod stats;
mod wire;

pub use agent::{AgentConfig, GossipAgent, GossipError, GossipHandle, QueryResponses};
pub use config::{tag, ConfigError, Limits, MembershipConfig, TagsError};
pub use identity::{NodeIdError, MAX_NODE_NAME_BYTES};
pub use keyring::{Keyring, KeyringError, ENCRYPTION_OVERHEAD, KEY_LEN};
pub use membership::{
    IncomingQuery, MemberEvent, MemberInfo, MemberStatus, Membership, MemoryEstimate, QueryId,
    QueryOptions, QueryUpdate, RequestError, Transmit, UserEvent,
};
pub use message::{QueryFilter, Tags};
pub use stats::{DropReason, Stats};

/// For the fuzz targets in `fuzz/` (feature `fuzzing`, never enabled by the broker).
#[cfg(feature = "fuzzing")]
pub mod fuzzing {
    use crate::keyring::{Keyring, NONCE_LEN};
    use crate::message::{KIND_ENCRYPTED, MAGIC, VERSION};

    /// The encrypted datagram a member with `keyring` sends for `plain` (`[kind][body]`). A
    /// fixed nonce: these datagrams only ever reach a fuzzed member.
    pub fn sealed_datagram(keyring: &Keyring, plain: &[u8]) -> Vec<u8> {
        let header = [MAGIC, VERSION, KIND_ENCRYPTED];
        let mut datagram = header.to_vec();
        keyring.seal(&header, [0; NONCE_LEN], plain, &mut datagram);
        datagram
    }
}
