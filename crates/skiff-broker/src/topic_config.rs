//! Topic configurations: the names Kafka users know, their defaults, validation, and the mapping
//! onto the partition log's settings. A topic stores only its overrides; every other value is the
//! default.

use std::collections::BTreeMap;

use skiff_log::{CleanupPolicy, LogConfig};

pub use skiff_metadata::topic_config::{
    config_def, ConfigDef, ConfigError, ConfigType, TOPIC_CONFIGS,
};
use skiff_metadata::topic_config::{parse_cleanup_policy, validate_topic_config};

/// A topic's config overrides, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfigs(BTreeMap<String, String>);

impl TopicConfigs {
    /// Overrides from the metadata image, which refuses any that break their rules.
    pub fn from_validated(overrides: BTreeMap<String, String>) -> Self {
        Self(overrides)
    }

    pub fn to_map(&self) -> BTreeMap<String, String> {
        self.0.clone()
    }

    /// Validates and builds overrides from (name, value) pairs; a `None` value means the default.
    pub fn from_pairs<'a>(
        pairs: impl IntoIterator<Item = (&'a str, Option<&'a str>)>,
    ) -> Result<Self, ConfigError> {
        let mut configs = Self::default();
        for (name, value) in pairs {
            match value {
                Some(value) => configs.set(name, value)?,
                None => configs.delete(name)?,
            }
        }
        Ok(configs)
    }

    pub fn set(&mut self, name: &str, value: &str) -> Result<(), ConfigError> {
        validate_topic_config(name, value)?;
        self.0.insert(name.to_string(), value.to_string());
        Ok(())
    }

    pub fn delete(&mut self, name: &str) -> Result<(), ConfigError> {
        config_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        self.0.remove(name);
        Ok(())
    }

    pub fn get_override(&self, name: &str) -> Option<&str> {
        self.0.get(name).map(String::as_str)
    }

    /// The effective value: the override or the default.
    pub fn value(&self, def: &ConfigDef) -> String {
        self.get_override(def.name)
            .unwrap_or(def.default)
            .to_string()
    }

    /// A numeric config's value. The image admits only valid overrides, and every default
    /// parses; should either ever fail, the value is 0 rather than a panic in the metadata apply.
    fn long(&self, name: &str) -> i64 {
        self.parsed(name).unwrap_or(0)
    }

    /// `min.cleanable.dirty.ratio`, the one fractional config.
    fn ratio(&self, name: &str) -> f64 {
        self.parsed(name).unwrap_or(0.5)
    }

    /// The override or the default, parsed.
    fn parsed<T: std::str::FromStr>(&self, name: &str) -> Option<T> {
        let parse = |v: &str| v.trim().parse::<T>().ok();
        self.get_override(name)
            .and_then(parse)
            .or_else(|| config_def(name).and_then(|d| parse(d.default)))
    }

    pub fn uses_log_append_time(&self) -> bool {
        self.get_override("message.timestamp.type") == Some("LogAppendTime")
    }

    /// The codec `compression.type` requires batches to be stored with; None for `producer`.
    pub fn required_codec(&self) -> Option<u8> {
        use skiff_log::batch::codec;
        match self.get_override("compression.type")?.trim() {
            "uncompressed" => Some(codec::NONE),
            "gzip" => Some(codec::GZIP),
            "snappy" => Some(codec::SNAPPY),
            "lz4" => Some(codec::LZ4),
            "zstd" => Some(codec::ZSTD),
            _ => None,
        }
    }

    /// `message.timestamp.before.max.ms` and `message.timestamp.after.max.ms`.
    pub fn timestamp_bounds(&self) -> (i64, i64) {
        (
            self.long("message.timestamp.before.max.ms"),
            self.long("message.timestamp.after.max.ms"),
        )
    }

    pub fn max_message_bytes(&self) -> usize {
        self.long("max.message.bytes") as usize
    }

    /// Fewest in-sync replicas an acks=all produce is accepted with.
    pub fn min_insync_replicas(&self) -> usize {
        usize::try_from(self.long("min.insync.replicas")).map_or(1, |n| n.max(1))
    }

    /// The partition log settings these configs ask for.
    pub fn log_config(&self) -> LogConfig {
        let optional = |name: &str| {
            let n = self.long(name);
            (n >= 0).then_some(n)
        };
        let unless_max = |name: &str| {
            let n = self.long(name);
            (n != i64::MAX).then_some(n as u64)
        };
        LogConfig {
            segment_bytes: self.long("segment.bytes") as u64,
            segment_ms: Some(self.long("segment.ms") as u64),
            segment_jitter_ms: self.long("segment.jitter.ms") as u64,
            max_index_bytes: self.long("segment.index.bytes") as u64,
            index_interval_bytes: self
                .long("index.interval.bytes")
                .clamp(0, i64::from(u32::MAX)) as u32,
            retention_ms: optional("retention.ms"),
            retention_bytes: optional("retention.bytes"),
            flush_messages: unless_max("flush.messages"),
            flush_ms: unless_max("flush.ms"),
            cleanup_policy: match self
                .get_override("cleanup.policy")
                .map(parse_cleanup_policy)
            {
                Some(Ok((false, true))) => CleanupPolicy::Compact,
                Some(Ok((true, true))) => CleanupPolicy::CompactDelete,
                _ => CleanupPolicy::Delete,
            },
            max_batch_bytes: self.max_message_bytes(),
            delete_retention_ms: self.long("delete.retention.ms"),
            min_compaction_lag_ms: self.long("min.compaction.lag.ms"),
            max_compaction_lag_ms: self.long("max.compaction.lag.ms"),
            min_cleanable_dirty_ratio: self.ratio("min.cleanable.dirty.ratio"),
            ..LogConfig::default()
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.0.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn validates_names_and_values() {
        assert_eq!(
            TopicConfigs::from_pairs([("no.such", Some("1"))]),
            Err(ConfigError::Unknown("no.such".into()))
        );
        assert!(TopicConfigs::from_pairs([("retention.ms", Some("abc"))]).is_err());
        assert!(TopicConfigs::from_pairs([("segment.bytes", Some("10"))]).is_err());
        assert!(TopicConfigs::from_pairs([("cleanup.policy", Some("compact,delete"))]).is_ok());
        assert!(TopicConfigs::from_pairs([("cleanup.policy", Some("shred"))]).is_err());
        assert!(TopicConfigs::from_pairs([("message.timestamp.type", Some("Now"))]).is_err());
    }

    #[test]
    fn maps_onto_log_config() {
        let configs = TopicConfigs::from_pairs([
            ("retention.ms", Some("-1")),
            ("retention.bytes", Some("1000")),
            ("segment.bytes", Some("4096")),
            ("cleanup.policy", Some("compact")),
            ("flush.messages", Some("1")),
            ("min.cleanable.dirty.ratio", Some("0.1")),
            ("segment.index.bytes", Some("4096")),
            ("index.interval.bytes", Some("100")),
            ("min.compaction.lag.ms", Some("5")),
            ("segment.jitter.ms", Some("7")),
        ])
        .unwrap();
        let log = configs.log_config();
        assert_eq!(log.min_cleanable_dirty_ratio, 0.1);
        assert_eq!(log.max_index_bytes, 4096);
        assert_eq!(log.index_interval_bytes, 100);
        assert_eq!(log.min_compaction_lag_ms, 5);
        assert_eq!(log.segment_jitter_ms, 7);
        assert_eq!(log.max_compaction_lag_ms, i64::MAX);
        assert_eq!(log.retention_ms, None);
        assert_eq!(log.retention_bytes, Some(1000));
        assert_eq!(log.segment_bytes, 4096);
        assert_eq!(log.cleanup_policy, CleanupPolicy::Compact);
        assert_eq!(log.flush_messages, Some(1));
        assert_eq!(log.flush_ms, None);
        assert_eq!(
            TopicConfigs::default().log_config().retention_ms,
            Some(604800000)
        );
    }
}
