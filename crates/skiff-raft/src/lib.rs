//! Skiff's metadata quorum: openraft (pinned, wrapped here and nowhere else) with a redb log
//! store, a small TCP transport, and a state machine that applies `skiff-metadata` records.
//! The Raft leader is the cluster's controller. The transport's port also carries the brokers'
//! binary peer RPC (`PeerService`, `PeerCaller`), authenticated as Raft is.

mod forward;
pub mod kv;
mod kv_batcher;
mod network;
mod node;
mod peer;
mod state_machine;
mod store;
mod types;

pub use forward::{ForwardReply, ForwardRequest, SubmitError};
#[cfg(feature = "fuzzing")]
pub use network::fuzzing;
pub use network::ClusterSecret;
pub use node::{
    BootstrapError, FollowerStats, Membership, MetadataRaft, RaftPeer, RaftSettings, RaftStats,
    Staleness, StartError,
};
pub use peer::{PeerCaller, PeerService};
pub use state_machine::MetadataListener;
