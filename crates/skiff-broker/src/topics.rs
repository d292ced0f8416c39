//! Topics as this broker sees them: a view of the metadata image (the Raft log is the source of
//! truth) with each topic's config overrides parsed, plus Kafka's topic-name rule.

use std::sync::Arc;

use skiff_metadata::{MetadataImage, TopicImage};
use uuid::Uuid;

use crate::topic_config::TopicConfigs;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    /// Replicas of its first partition once any reassignment of it completes (Kafka reports one
    /// factor per topic).
    pub replication_factor: i16,
    pub configs: TopicConfigs,
}

impl TopicMeta {
    fn from_image(image: &MetadataImage, topic: &TopicImage) -> Self {
        Self {
            name: topic.name.clone(),
            id: topic.topic_id,
            partitions: image.partition_count(topic.topic_id),
            replication_factor: image
                .partition(topic.topic_id, 0)
                .map_or(0, |p| p.target_replicas().len() as i16),
            configs: TopicConfigs::from_validated(topic.configs.clone()),
        }
    }
}

/// The topics of one metadata image.
pub struct Topics {
    image: Arc<MetadataImage>,
}

impl Topics {
    pub fn new(image: Arc<MetadataImage>) -> Self {
        Self { image }
    }

    pub fn image(&self) -> &Arc<MetadataImage> {
        &self.image
    }

    pub fn get(&self, name: &str) -> Option<TopicMeta> {
        let topic = self.image.topic_by_name(name)?;
        Some(TopicMeta::from_image(&self.image, topic))
    }

    pub fn by_id(&self, id: Uuid) -> Option<TopicMeta> {
        let topic = self.image.topic(id)?;
        Some(TopicMeta::from_image(&self.image, topic))
    }

    pub fn all(&self) -> impl Iterator<Item = TopicMeta> + '_ {
        self.image
            .topics()
            .map(|topic| TopicMeta::from_image(&self.image, topic))
    }
}

pub use skiff_metadata::topic_rules::validate_topic_name;
