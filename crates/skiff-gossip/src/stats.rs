//! Counters kept by the core; the driver exports them through the `metrics` facade.

/// Why a datagram, item or output was dropped. Each has its own counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DropReason {
    /// Larger than `max_packet_size`.
    TooLarge,
    /// Does not start with Skiff's magic byte: not a Skiff gossip datagram.
    BadMagic,
    UnsupportedVersion,
    /// Plain datagram while encryption is on, or encrypted while it is off.
    EncryptionMismatch,
    /// No key of the keyring authenticates it (wrong key or tampering).
    DecryptFailed,
    /// Truncated or otherwise undecodable.
    Malformed,
    /// foca refused its SWIM part (stale, from ourselves, wrong recipient).
    SwimRejected,
    /// A message that only members may send came from an address that is not one.
    UnknownSender,
    /// A state-sync request arrived sooner than `push_pull_interval / 10` after the last one
    /// from the same address.
    SyncRateLimited,
    /// The member table is full (`limits.max_members`).
    TooManyMembers,
    /// The dissemination queue was full; its most-sent item was dropped.
    BroadcastQueueFull,
    /// A user event or query older than the dedupe window.
    TooOld,
    /// Too many distinct user events or queries with one Lamport time.
    RecentSlotFull,
    /// A received query whose tag filter is not a valid (or small enough) regex.
    BadQueryFilter,
    /// More received queries open than `limits.max_open_incoming_queries`.
    TooManyOpenQueries,
    /// A query response or ack for a query we no longer wait for.
    LateQueryAnswer,
    /// The driver did not take outputs fast enough.
    TransmitQueueFull,
    EventQueueFull,
}

impl DropReason {
    pub const ALL: [DropReason; 18] = [
        DropReason::TooLarge,
        DropReason::BadMagic,
        DropReason::UnsupportedVersion,
        DropReason::EncryptionMismatch,
        DropReason::DecryptFailed,
        DropReason::Malformed,
        DropReason::SwimRejected,
        DropReason::UnknownSender,
        DropReason::SyncRateLimited,
        DropReason::TooManyMembers,
        DropReason::BroadcastQueueFull,
        DropReason::TooOld,
        DropReason::RecentSlotFull,
        DropReason::BadQueryFilter,
        DropReason::TooManyOpenQueries,
        DropReason::LateQueryAnswer,
        DropReason::TransmitQueueFull,
        DropReason::EventQueueFull,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            DropReason::TooLarge => "too_large",
            DropReason::BadMagic => "bad_magic",
            DropReason::UnsupportedVersion => "unsupported_version",
            DropReason::EncryptionMismatch => "encryption_mismatch",
            DropReason::DecryptFailed => "decrypt_failed",
            DropReason::Malformed => "malformed",
            DropReason::SwimRejected => "swim_rejected",
            DropReason::UnknownSender => "unknown_sender",
            DropReason::SyncRateLimited => "sync_rate_limited",
            DropReason::TooManyMembers => "too_many_members",
            DropReason::BroadcastQueueFull => "broadcast_queue_full",
            DropReason::TooOld => "too_old",
            DropReason::RecentSlotFull => "recent_slot_full",
            DropReason::BadQueryFilter => "bad_query_filter",
            DropReason::TooManyOpenQueries => "too_many_open_queries",
            DropReason::LateQueryAnswer => "late_query_answer",
            DropReason::TransmitQueueFull => "transmit_queue_full",
            DropReason::EventQueueFull => "event_queue_full",
        }
    }

    fn index(self) -> usize {
        Self::ALL
            .iter()
            .position(|reason| *reason == self)
            .expect("ALL lists every reason")
    }
}

/// Monotonic counters since the core started.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Stats {
    pub packets_sent: u64,
    pub bytes_sent: u64,
    pub packets_received: u64,
    pub bytes_received: u64,
    /// Direct probes (SWIM pings) sent.
    pub probes: u64,
    /// Indirect probe requests sent after a direct probe went unanswered.
    pub indirect_probes: u64,
    /// Members this node started suspecting (a probe failed).
    pub suspicions: u64,
    /// Times this node refuted a suspicion about itself.
    pub refutations: u64,
    drops: [u64; DropReason::ALL.len()],
}

impl Stats {
    pub fn dropped(&self, reason: DropReason) -> u64 {
        self.drops[reason.index()]
    }

    pub fn total_dropped(&self) -> u64 {
        self.drops.iter().sum()
    }

    pub(crate) fn drop(&mut self, reason: DropReason) {
        self.drops[reason.index()] += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_reason_has_its_own_counter_and_name() {
        let mut stats = Stats::default();
        for (n, reason) in DropReason::ALL.iter().enumerate() {
            for _ in 0..=n {
                stats.drop(*reason);
            }
        }
        for (n, reason) in DropReason::ALL.iter().enumerate() {
            assert_eq!(stats.dropped(*reason), n as u64 + 1);
        }
        let mut names: Vec<_> = DropReason::ALL.iter().map(|r| r.as_str()).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), DropReason::ALL.len());
    }
}
