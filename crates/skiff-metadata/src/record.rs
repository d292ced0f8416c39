use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

/// How a `ChangePartition` record affects the leader. Kafka encodes this in one i32 (-1 no
/// leader, -2 no change); an enum keeps "offline" and "unchanged" from being confused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum LeaderChange {
    Unchanged,
    Elect(i32),
    /// No in-sync replica is alive; the partition is offline until one comes back.
    Offline,
}

/// One entry of the metadata log. Applying them in order to an empty `MetadataImage` rebuilds the
/// cluster state on every broker.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataRecord {
    /// A broker announces itself. It starts fenced, as in KRaft, until the controller unfences it.
    RegisterBroker {
        id: i32,
        /// Kafka listener addresses, `host:port`.
        endpoints: Vec<String>,
        rack: Option<String>,
        /// Identifies one run of the broker process, so a restart is told apart from a duplicate.
        incarnation: Uuid,
    },
    FenceBroker {
        id: i32,
    },
    UnfenceBroker {
        id: i32,
    },
    UnregisterBroker {
        id: i32,
    },
    CreateTopic {
        name: String,
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    CreatePartition {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: Option<i32>,
        leader_epoch: i32,
        partition_epoch: i32,
        /// Replicas a reassignment in progress adds (Kafka's addingReplicas); empty otherwise.
        /// Absent from records written before reassignments existed.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        adding_replicas: Vec<i32>,
        /// Replicas a reassignment in progress removes once the added ones are in sync.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        removing_replicas: Vec<i32>,
    },
    /// Bumps the leader epoch when the leader changes and the partition epoch on every change.
    ChangePartition {
        topic_id: Uuid,
        partition: i32,
        leader: LeaderChange,
        /// `None` keeps the current ISR.
        isr: Option<Vec<i32>>,
    },
    /// A partition reassignment starts, completes or is cancelled: the replicas change (during
    /// a reassignment they are the target replicas followed by those it removes), with the ISR
    /// and leader that fit them. Bumps the partition epoch, and the leader epoch when the
    /// leader changes.
    ChangePartitionReplicas {
        topic_id: Uuid,
        partition: i32,
        replicas: Vec<i32>,
        adding_replicas: Vec<i32>,
        removing_replicas: Vec<i32>,
        isr: Vec<i32>,
        leader: LeaderChange,
    },
    DeleteTopic {
        topic_id: Uuid,
    },
    /// `value: None` removes the override.
    SetTopicConfig {
        topic_id: Uuid,
        name: String,
        value: Option<String>,
    },
    /// Hands `broker` the producer ids `block_start..block_start + block_len` for idempotent
    /// producers. Blocks never overlap, so an id is never given to two producers in the cluster.
    AllocateProducerIds {
        broker: i32,
        block_start: i64,
        block_len: i64,
    },
}
