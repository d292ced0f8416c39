//! Topics as this broker sees them: a view of the metadata image (the Raft log is the source of
//! truth) with each topic's config overrides parsed, plus Kafka's topic-name rule.

use std::sync::Arc;

use skiff_metadata::{MetadataImage, TopicImage};
use uuid::Uuid;

use crate::topic_config::TopicConfigs;

pub const MAX_TOPIC_NAME_LEN: usize = 249;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicMeta {
    pub name: String,
    pub id: Uuid,
    pub partitions: i32,
    pub configs: TopicConfigs,
}

impl TopicMeta {
    fn from_image(image: &MetadataImage, topic: &TopicImage) -> Self {
        Self {
            name: topic.name.clone(),
            id: topic.topic_id,
            partitions: image.partition_count(topic.topic_id),
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

/// Kafka's rule: 1-249 characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("topic name is empty".into());
    }
    if name == "." || name == ".." {
        return Err(format!("topic name '{name}' is not allowed"));
    }
    if name.len() > MAX_TOPIC_NAME_LEN {
        return Err(format!(
            "topic name is {} characters long, the limit is {MAX_TOPIC_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-')))
    {
        return Err(format!(
            "topic name '{name}' has the character {c:?}; only ASCII letters, digits, '.', '_' and '-' are allowed"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("orders.v1_A-b").is_ok());
        for bad in ["", ".", "..", "a b", "ü", &"x".repeat(250)] {
            assert!(validate_topic_name(bad).is_err(), "{bad:?}");
        }
    }
}
