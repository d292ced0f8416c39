//! Cluster metadata for Skiff, Kafka's KRaft model without I/O: the records the controller appends
//! to the metadata log, the image every broker builds by applying them, and the controller's
//! decisions (placement, leader elections on fencing) as pure functions of that image.

mod controller;
mod image;
mod record;

pub use controller::{
    create_topic_records, fence_broker_records, place_replicas, unfence_broker_records,
    CreateTopicError, PlacementError,
};
pub use image::{BrokerRegistration, ImageError, MetadataImage, PartitionRegistration, TopicImage};
pub use record::{LeaderChange, MetadataRecord};
