//! Cluster metadata for Skiff, Kafka's KRaft model without I/O: the records the controller appends
//! to the metadata log, the image every broker builds by applying them, the controller's
//! decisions (placement, leader elections on fencing, client requests) as pure functions of that
//! image, and the planner that turns gossip membership into Raft membership and broker records.

mod controller;
mod election;
mod image;
mod quorum;
mod reassignment;
mod record;
mod request;
pub mod topic_config;
pub mod topic_rules;

pub use controller::{
    create_topic_records, fence_broker_records, place_replicas, unfence_broker_records,
    CreateTopicError, PlacementError,
};
pub use election::{
    preferred_leader_records, ElectionType, LEADER_IMBALANCE_PER_BROKER_PERCENTAGE,
};
pub use image::{
    BatchError, BrokerRegistration, ImageError, MetadataImage, PartitionRegistration, TopicImage,
};
pub use quorum::{
    incarnation_of, plan_brokers, plan_quorum, GossipMember, MemberHealth, QuorumAction,
    QuorumPlan, QuorumSettings, RaftMembership,
};
pub use reassignment::OFFSETS_TOPIC_REPLICATION_FACTOR;
pub use record::{LeaderChange, MetadataRecord};
pub use request::{decide, ControllerError, ControllerRequest, OFFSETS_TOPIC};
