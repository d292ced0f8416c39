//! Topic configs as the metadata log holds them: the names Kafka users know, their defaults and
//! the rule each value must follow. The controller checks them before it decides, and the image
//! refuses a record that breaks them, identically on every node, so a committed config is always
//! one a broker can apply.

use std::collections::BTreeMap;

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

/// Parses `cleanup.policy` (`delete`, `compact` or both, comma-separated) into whether old
/// segments are deleted and whether the log is compacted; a value naming neither deletes.
pub fn parse_cleanup_policy(v: &str) -> Result<(bool, bool), String> {
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
    Ok((delete || !compact, compact))
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("unknown topic config '{0}'")]
    Unknown(String),
    #[error("invalid value for {name}: {reason}")]
    Invalid { name: String, reason: String },
}

/// Checks one override: a known name and a value its rule accepts.
pub fn validate_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    let def = config_def(name).ok_or_else(|| ConfigError::Unknown(name.to_string()))?;
    (def.validate)(value).map_err(|reason| ConfigError::Invalid {
        name: name.to_string(),
        reason,
    })
}

/// Checks every override of a topic.
pub fn validate_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    configs
        .iter()
        .try_for_each(|(name, value)| validate_topic_config(name, value))
}

/// The image's check, which must hold for every version that replays the log: a value of a
/// config this version knows must follow its rule; a name it does not know (a newer version's
/// config) is kept and ignored, so versions never disagree about which records apply.
pub fn validate_known_topic_config(name: &str, value: &str) -> Result<(), ConfigError> {
    match validate_topic_config(name, value) {
        Err(ConfigError::Unknown(_)) => Ok(()),
        other => other,
    }
}

/// `validate_known_topic_config` for every override of a topic.
pub fn validate_known_topic_configs(configs: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    configs
        .iter()
        .try_for_each(|(name, value)| validate_known_topic_config(name, value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_values_are_checked() {
        assert_eq!(validate_topic_config("retention.ms", "-1"), Ok(()));
        assert_eq!(
            validate_topic_config("cleanup.policy", "compact, delete"),
            Ok(())
        );
        assert!(matches!(
            validate_topic_config("retention.ms", "not-a-number"),
            Err(ConfigError::Invalid { .. })
        ));
        assert!(matches!(
            validate_topic_config("segment.bytes", "4294967296"),
            Err(ConfigError::Invalid { .. })
        ));
        assert_eq!(
            validate_topic_config("no.such.config", "1"),
            Err(ConfigError::Unknown("no.such.config".into()))
        );
        let configs = BTreeMap::from([("cleanup.policy".to_string(), "shred".to_string())]);
        assert!(validate_topic_configs(&configs).is_err());
    }
}
