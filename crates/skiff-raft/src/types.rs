//! The openraft type configuration and the payload of Skiff's metadata log.

use std::fmt;

use serde::{Deserialize, Serialize};
use skiff_metadata::MetadataRecord;

use crate::kv::{KvOp, KvWriteResult};

/// One entry of the metadata log.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Command {
    /// The first entry of a new cluster: its identity, checked on every join and restart.
    Bootstrap { cluster_id: String },
    /// Controller records, applied to the image atomically as one metadata offset.
    Metadata(Vec<MetadataRecord>),
    /// Key-value writes from many clients, batched into one entry; each succeeds or fails alone.
    Kv(Vec<KvOp>),
}

impl fmt::Display for Command {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Command::Bootstrap { cluster_id } => write!(f, "Bootstrap({cluster_id})"),
            Command::Metadata(records) => write!(f, "Metadata({} records)", records.len()),
            Command::Kv(ops) => write!(f, "Kv({} writes)", ops.len()),
        }
    }
}

/// What applying a command did. A rejected batch changed nothing, on every node alike.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum CommandOutcome {
    Applied,
    Rejected { reason: String },
    Kv(Vec<KvWriteResult>),
}

openraft::declare_raft_types!(
    pub TypeConfig:
        D = Command,
        R = CommandOutcome,
        NodeId = u64,
        Node = openraft::BasicNode,
);

pub type Raft = openraft::Raft<TypeConfig, crate::state_machine::StateMachine>;
pub type Entry = openraft::alias::EntryOf<TypeConfig>;
pub type LogId = openraft::alias::LogIdOf<TypeConfig>;
pub type Vote = openraft::alias::VoteOf<TypeConfig>;
pub type SnapshotMeta = openraft::alias::SnapshotMetaOf<TypeConfig>;
pub type Snapshot = openraft::alias::SnapshotOf<TypeConfig, Vec<u8>>;
pub type StoredMembership = openraft::alias::StoredMembershipOf<TypeConfig>;
