//! Requests any node may send to the controller (the Raft leader), and their answers.

use openraft::error::{ChangeMembershipError, ClientWriteError, RaftError};
use serde::{Deserialize, Serialize};
use skiff_metadata::{ControllerError, ControllerRequest};
use thiserror::Error;

use crate::kv::{KvEntry, KvOp, KvWriteResult};
use crate::types::TypeConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardRequest {
    /// A cluster write from a Kafka client; the controller decides the records from its image.
    Controller {
        request: ControllerRequest,
        validate_only: bool,
    },
    /// An operator adds a node by hand (`POST /raft/join`).
    Join {
        node_id: u64,
        raft_addr: String,
    },
    /// An operator removes a node by hand (`POST /raft/remove`).
    Remove {
        node_id: u64,
    },
    KvWrite(KvOp),
    /// A linearizable read of one key.
    KvGet {
        key: String,
    },
    /// A linearizable read of keys by prefix.
    KvList {
        prefix: String,
        limit: usize,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum ForwardReply {
    /// Committed and applied on the controller at this log index.
    Done {
        log_index: u64,
    },
    Failed(SubmitError),
    KvWritten {
        log_index: u64,
        result: KvWriteResult,
    },
    KvValue(Option<KvEntry>),
    KvItems {
        items: Vec<(String, KvEntry)>,
        more: bool,
    },
}

/// Why a cluster write did not happen.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Error)]
pub enum SubmitError {
    /// The controller refused the request; maps onto a Kafka error code.
    #[error(transparent)]
    Controller(#[from] ControllerError),
    /// The records did not apply to the image (a concurrent change won).
    #[error("the metadata change was rejected: {0}")]
    Rejected(String),
    /// The request is wrong whatever the cluster state (unknown node, last voter...).
    #[error("{0}")]
    Invalid(String),
    /// No controller could be reached in time: no quorum, or an election is running.
    #[error("no controller is available: {0}")]
    Unavailable(String),
    /// Internal: this node is not the leader; the sender retries at `leader`.
    #[error("not the controller")]
    NotLeader { leader: Option<u64> },
}

impl SubmitError {
    /// A failed Raft write. Only a write refused before its entry was appended may be sent
    /// again; an entry discarded on a leader change may still commit through the new leader,
    /// so its outcome is unknown and a retry could apply it twice.
    pub(crate) fn from_write(e: WriteError, leader: Option<u64>) -> Self {
        match e {
            RaftError::APIError(ClientWriteError::ForwardToLeader(_)) => {
                SubmitError::NotLeader { leader }
            }
            RaftError::APIError(ClientWriteError::LogEntryDiscarded(_)) => {
                SubmitError::Unavailable(
                    "the leader changed before the write committed; it may still take effect"
                        .into(),
                )
            }
            RaftError::APIError(ClientWriteError::ChangeMembershipError(
                ChangeMembershipError::InProgress(busy),
            )) => SubmitError::Unavailable(busy.to_string()),
            RaftError::APIError(other) => SubmitError::Invalid(other.to_string()),
            RaftError::Fatal(fatal) => SubmitError::Unavailable(fatal.to_string()),
        }
    }
}

pub(crate) type WriteError = RaftError<TypeConfig, ClientWriteError<TypeConfig>>;
