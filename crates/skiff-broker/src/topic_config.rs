//! Topic configurations: the names Kafka users know, their defaults, validation, and the mapping
//! onto the partition log's settings. A topic stores only its overrides; every other value is the
//! default.

use std::collections::BTreeMap;

use skiff_log::{CleanupPolicy, LogConfig};

/// How a config value is typed, as reported by DescribeConfigs v3+ (`config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    String = 2,
    Int = 3,
    Long = 5,
    List = 7,
}

/// One topic config Skiff knows and enforces.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    /// The broker-wide config this topic config falls back to, as DescribeConfigs synonyms name it.
    pub broker_synonym: &'static str,
    pub default: &'static str,
    pub config_type: ConfigType,
    pub doc: &'static str,
    validate: fn(&str) -> Result<(), String>,
}

fn long_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.trim().parse::<i64>() {
        Ok(n) if n >= min => Ok(()),
        Ok(n) => Err(format!("{n} is below the minimum {min}")),
        Err(_) => Err(format!("'{v}' is not a number")),
    }
}

fn validate_retention(v: &str) -> Result<(), String> {
    long_at_least(-1)(v)
}
fn validate_non_negative(v: &str) -> Result<(), String> {
    long_at_least(0)(v)
}
fn validate_positive(v: &str) -> Result<(), String> {
    long_at_least(1)(v)
}
fn validate_segment_bytes(v: &str) -> Result<(), String> {
    long_at_least(14)(v)?;
    if v.trim().parse::<i64>().unwrap_or(0) > i32::MAX as i64 {
        return Err(format!("{v} is above the maximum {}", i32::MAX));
    }
    Ok(())
}
fn validate_max_message_bytes(v: &str) -> Result<(), String> {
    long_at_least(0)(v)?;
    if v.trim().parse::<i64>().unwrap_or(0) > i32::MAX as i64 {
        return Err(format!("{v} is above the maximum {}", i32::MAX));
    }
    Ok(())
}
fn validate_cleanup_policy(v: &str) -> Result<(), String> {
    parse_cleanup_policy(v).map(|_| ())
}
fn validate_timestamp_type(v: &str) -> Result<(), String> {
    match v {
        "CreateTime" | "LogAppendTime" => Ok(()),
        _ => Err(format!("'{v}' is not one of CreateTime, LogAppendTime")),
    }
}

pub const TOPIC_CONFIGS: &[ConfigDef] = &[
    ConfigDef {
        name: "cleanup.policy",
        broker_synonym: "log.cleanup.policy",
        default: "delete",
        config_type: ConfigType::List,
        doc: "delete: remove old segments by retention; compact: keep the latest record per key; both: compact,delete",
        validate: validate_cleanup_policy,
    },
    ConfigDef {
        name: "retention.ms",
        broker_synonym: "log.retention.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Delete segments whose newest record is older than this; -1 keeps them forever",
        validate: validate_retention,
    },
    ConfigDef {
        name: "retention.bytes",
        broker_synonym: "log.retention.bytes",
        default: "-1",
        config_type: ConfigType::Long,
        doc: "Delete the oldest segments while a partition is larger than this; -1 means no limit",
        validate: validate_retention,
    },
    ConfigDef {
        name: "segment.bytes",
        broker_synonym: "log.segment.bytes",
        default: "1073741824",
        config_type: ConfigType::Int,
        doc: "Roll to a new segment file when the active one reaches this size",
        validate: validate_segment_bytes,
    },
    ConfigDef {
        name: "segment.ms",
        broker_synonym: "log.roll.ms",
        default: "604800000",
        config_type: ConfigType::Long,
        doc: "Roll to a new segment file when the active one is older than this",
        validate: validate_positive,
    },
    ConfigDef {
        name: "max.message.bytes",
        broker_synonym: "message.max.bytes",
        default: "1048588",
        config_type: ConfigType::Int,
        doc: "Largest record batch accepted, after compression; larger ones get MESSAGE_TOO_LARGE",
        validate: validate_max_message_bytes,
    },
    ConfigDef {
        name: "message.timestamp.type",
        broker_synonym: "log.message.timestamp.type",
        default: "CreateTime",
        config_type: ConfigType::String,
        doc: "CreateTime keeps the producer's timestamps; LogAppendTime stamps batches with the broker's clock",
        validate: validate_timestamp_type,
    },
    ConfigDef {
        name: "min.insync.replicas",
        broker_synonym: "min.insync.replicas",
        default: "1",
        config_type: ConfigType::Int,
        doc: "Replicas that must have a write for acks=all to succeed (stored; enforced once replication exists)",
        validate: validate_positive,
    },
    ConfigDef {
        name: "flush.messages",
        broker_synonym: "log.flush.interval.messages",
        default: "9223372036854775807",
        config_type: ConfigType::Long,
        doc: "fsync the log after this many records; the default leaves durability to the page cache",
        validate: validate_positive,
    },
    ConfigDef {
        name: "flush.ms",
        broker_synonym: "log.flush.interval.ms",
        default: "9223372036854775807",
        config_type: ConfigType::Long,
        doc: "fsync the log when the last fsync is older than this",
        validate: validate_non_negative,
    },
    ConfigDef {
        name: "delete.retention.ms",
        broker_synonym: "log.cleaner.delete.retention.ms",
        default: "86400000",
        config_type: ConfigType::Long,
        doc: "How long tombstones are kept in a compacted topic",
        validate: validate_non_negative,
    },
];

pub fn config_def(name: &str) -> Option<&'static ConfigDef> {
    TOPIC_CONFIGS.iter().find(|d| d.name == name)
}

fn parse_cleanup_policy(v: &str) -> Result<CleanupPolicy, String> {
    let mut delete = false;
    let mut compact = false;
    for part in v.split(',').map(str::trim) {
        match part {
            "delete" => delete = true,
            "compact" => compact = true,
            other => {
                return Err(format!(
                    "'{other}' is not a cleanup policy (delete, compact)"
                ))
            }
        }
    }
    Ok(match (delete, compact) {
        (_, false) => CleanupPolicy::Delete,
        (false, true) => CleanupPolicy::Compact,
        (true, true) => CleanupPolicy::CompactDelete,
    })
}

/// A topic's config overrides, validated.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct TopicConfigs(BTreeMap<String, String>);

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    Unknown(String),
    #[error("invalid value for {name}: {reason}")]
    Invalid { name: String, reason: String },
}

impl TopicConfigs {
    /// Overrides that were validated before they entered the metadata log.
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
        let def = config_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
        (def.validate)(value).map_err(|reason| ConfigError::Invalid {
            name: name.to_string(),
            reason,
        })?;
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

    fn long(&self, name: &str) -> i64 {
        let def = config_def(name).expect("known config");
        self.get_override(name)
            .unwrap_or(def.default)
            .trim()
            .parse()
            .expect("validated on set")
    }

    pub fn uses_log_append_time(&self) -> bool {
        self.get_override("message.timestamp.type") == Some("LogAppendTime")
    }

    pub fn max_message_bytes(&self) -> usize {
        self.long("max.message.bytes") as usize
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
            retention_ms: optional("retention.ms"),
            retention_bytes: optional("retention.bytes"),
            flush_messages: unless_max("flush.messages"),
            flush_ms: unless_max("flush.ms"),
            cleanup_policy: parse_cleanup_policy(
                self.get_override("cleanup.policy").unwrap_or("delete"),
            )
            .expect("validated on set"),
            max_batch_bytes: self.max_message_bytes(),
            delete_retention_ms: self.long("delete.retention.ms"),
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
        ])
        .unwrap();
        let log = configs.log_config();
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
