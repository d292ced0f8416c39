//! The Kafka-facing half of a Skiff broker: request handlers (`KafkaApis`), the partitions this
//! broker hosts (`ReplicaManager`) kept in step with the metadata image (`MetadataPublisher`),
//! and the TCP server that frames requests and bounds what each connection may hold.

pub mod apis;
pub mod config;
pub mod group;
pub mod metadata_publisher;
pub mod producer_ids;
pub mod replica_fetch;
pub mod replica_manager;
pub mod replication;
pub mod server;
pub mod topic_config;
pub mod topics;

pub use apis::KafkaApis;
pub use config::BrokerConfig;
pub use server::{serve, Listener};
