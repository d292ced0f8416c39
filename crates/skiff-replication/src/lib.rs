//! Replication of one partition as plain state machines, Kafka's model (followers fetch from
//! the leader): no I/O, no clock of its own, so tests drive every interleaving.
//!
//! - `LeaderEpochs` (kept by each `skiff_log::Log`): which leader epoch wrote which offsets,
//!   used to find where a follower's log diverges from the leader's.
//! - `LeaderState`: what the leader knows of its followers; it answers their fetches, moves the
//!   high watermark, proposes ISR changes to the controller and says when an acks=all produce
//!   is done.
//! - `follower`: what a follower does with the leader's answers (truncate, then append).

pub mod follower;
pub mod leader;

pub use follower::Truncation;
pub use leader::{
    Assignment, Changes, FetchAnswer, FetchError, FollowerFetch, IsrProposal, LeaderState,
    ProduceError, Progress, ReplicationConfig,
};
pub use skiff_log::epochs::{EpochEnd, LeaderEpochs};

/// A broker id, as in the metadata image.
pub type BrokerId = i32;
