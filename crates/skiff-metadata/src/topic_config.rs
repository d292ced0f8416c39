//! Topic configs as the metadata log holds them: the names Kafka users know, their defaults and
//! the rule each value must follow. The controller checks them before it decides, and the image
//! refuses a record that breaks them, identically on every node, so a committed config is always
//! one a broker can apply.

use std::collections::BTreeMap;

/// How a config value is typed, as reported by DescribeConfigs v3+ (`config_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigType {
    Boolean = 1,
    String = 2,
    Int = 3,
    Long = 5,
    Double = 6,
    List = 7,
}

/// One topic config Skiff knows and enforces.
#[derive(Debug)]
pub struct ConfigDef {
    pub name: &'static str,
    /// The broker-wide config this topic config falls back to, as DescribeConfigs synonyms name
    /// it; empty when Kafka has none.
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
fn int_at_least(min: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| {
        long_at_least(min)(v)?;
        match v.trim().parse::<i64>() {
            Ok(n) if n > i64::from(i32::MAX) => {
                Err(format!("{n} is above the maximum {}", i32::MAX))
            }
            _ => Ok(()),
        }
    }
}
fn validate_int_non_negative(v: &str) -> Result<(), String> {
    int_at_least(0)(v)
}
fn validate_segment_index_bytes(v: &str) -> Result<(), String> {
    int_at_least(4)(v)
}
fn validate_boolean(v: &str) -> Result<(), String> {
    match v.trim().to_ascii_lowercase().as_str() {
        "true" | "false" => Ok(()),
        _ => Err(format!("'{v}' is not true or false")),
    }
}
fn validate_ratio(v: &str) -> Result<(), String> {
    match v.trim().parse::<f64>() {
        Ok(r) if (0.0..=1.0).contains(&r) => Ok(()),
        Ok(r) => Err(format!("{r} is not between 0 and 1")),
        Err(_) => Err(format!("'{v}' is not a number")),
    }
}
/// The codecs a topic may require; `producer` keeps what each producer chose.
pub const COMPRESSION_TYPES: &[&str] =
    &["producer", "uncompressed", "gzip", "snappy", "lz4", "zstd"];
fn validate_compression_type(v: &str) -> Result<(), String> {
    if COMPRESSION_TYPES.contains(&v.trim()) {
        Ok(())
    } else {
        Err(format!(
            "'{v}' is not one of {}",
            COMPRESSION_TYPES.join(", ")
        ))
    }
}
/// Kafka's throttled-replica lists: empty, `*`, or `partition:broker` pairs.
fn validate_throttled_replicas(v: &str) -> Result<(), String> {
    let v = v.trim();
    if v.is_empty() || v == "*" {
        return Ok(());
    }
    for pair in v.split(',') {
        let valid = pair.trim().split_once(':').is_some_and(|(p, b)| {
            p.trim().parse::<u32>().is_ok() && b.trim().parse::<u32>().is_ok()
        });
        if !valid {
            return Err(format!("'{pair}' is not partition:broker"));
        }
    }
    Ok(())
}
fn validate_remote_storage(v: &str) -> Result<(), String> {
    validate_boolean(v)?;
    if v.trim().eq_ignore_ascii_case("true") {
        return Err("tiered storage is not supported by Skiff".into());
    }
    Ok(())
}
fn int_between(min: i64, max: i64) -> impl Fn(&str) -> Result<(), String> {
    move |v| match v.trim().parse::<i64>() {
        Ok(n) if (min..=max).contains(&n) => Ok(()),
        Ok(n) => Err(format!("{n} is not between {min} and {max}")),
        Err(_) => Err(format!("'{v}' is not a number")),
    }
}
fn validate_gzip_level(v: &str) -> Result<(), String> {
    if v.trim() == "-1" {
        return Ok(());
    }
    int_between(1, 9)(v)
}
fn validate_lz4_level(v: &str) -> Result<(), String> {
    int_between(1, 17)(v)
}
fn validate_zstd_level(v: &str) -> Result<(), String> {
    int_between(-131072, 22)(v)
}
fn validate_local_retention(v: &str) -> Result<(), String> {
    long_at_least(-2)(v)
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
        doc: "In-sync replicas a write needs for acks=all to succeed (NOT_ENOUGH_REPLICAS below it)",
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
    ConfigDef {
        name: "compression.type",
        broker_synonym: "compression.type",
        default: "producer",
        config_type: ConfigType::String,
        doc: "The codec batches are stored with: producer keeps each producer's choice; uncompressed, gzip, snappy, lz4 or zstd recompresses batches that differ",
        validate: validate_compression_type,
    },
    ConfigDef {
        name: "compression.gzip.level",
        broker_synonym: "compression.gzip.level",
        default: "-1",
        config_type: ConfigType::Int,
        doc: "Accepted for compatibility: the broker recompresses gzip at Kafka's default level (6)",
        validate: validate_gzip_level,
    },
    ConfigDef {
        name: "compression.lz4.level",
        broker_synonym: "compression.lz4.level",
        default: "9",
        config_type: ConfigType::Int,
        doc: "Accepted for compatibility: the broker's lz4 encoder has one level",
        validate: validate_lz4_level,
    },
    ConfigDef {
        name: "compression.zstd.level",
        broker_synonym: "compression.zstd.level",
        default: "3",
        config_type: ConfigType::Int,
        doc: "Accepted for compatibility: the broker's zstd encoder uses its fastest level",
        validate: validate_zstd_level,
    },
    ConfigDef {
        name: "min.compaction.lag.ms",
        broker_synonym: "log.cleaner.min.compaction.lag.ms",
        default: "0",
        config_type: ConfigType::Long,
        doc: "A segment holding a record younger than this is not compacted",
        validate: validate_non_negative,
    },
    ConfigDef {
        name: "max.compaction.lag.ms",
        broker_synonym: "log.cleaner.max.compaction.lag.ms",
        default: "9223372036854775807",
        config_type: ConfigType::Long,
        doc: "Compact, whatever the dirty ratio, once a record has waited this long",
        validate: validate_positive,
    },
    ConfigDef {
        name: "min.cleanable.dirty.ratio",
        broker_synonym: "log.cleaner.min.cleanable.ratio",
        default: "0.5",
        config_type: ConfigType::Double,
        doc: "Compact when at least this share of the compactable bytes came after the last compaction",
        validate: validate_ratio,
    },
    ConfigDef {
        name: "message.timestamp.before.max.ms",
        broker_synonym: "log.message.timestamp.before.max.ms",
        default: "9223372036854775807",
        config_type: ConfigType::Long,
        doc: "With CreateTime, refuse batches whose timestamp is further than this in the past",
        validate: validate_non_negative,
    },
    ConfigDef {
        name: "message.timestamp.after.max.ms",
        broker_synonym: "log.message.timestamp.after.max.ms",
        default: "3600000",
        config_type: ConfigType::Long,
        doc: "With CreateTime, refuse batches whose timestamp is further than this in the future",
        validate: validate_non_negative,
    },
    ConfigDef {
        name: "segment.index.bytes",
        broker_synonym: "log.index.size.max.bytes",
        default: "10485760",
        config_type: ConfigType::Int,
        doc: "Roll to a new segment when either index of the active one would outgrow this",
        validate: validate_segment_index_bytes,
    },
    ConfigDef {
        name: "segment.jitter.ms",
        broker_synonym: "log.roll.jitter.ms",
        default: "0",
        config_type: ConfigType::Long,
        doc: "Each segment rolls up to this much before segment.ms, so partitions do not all roll at once",
        validate: validate_non_negative,
    },
    ConfigDef {
        name: "index.interval.bytes",
        broker_synonym: "log.index.interval.bytes",
        default: "4096",
        config_type: ConfigType::Int,
        doc: "Log bytes between two offset index entries",
        validate: validate_int_non_negative,
    },
    ConfigDef {
        name: "file.delete.delay.ms",
        broker_synonym: "log.segment.delete.delay.ms",
        default: "60000",
        config_type: ConfigType::Long,
        doc: "Accepted for compatibility: Skiff deletes segment files at once, and reads in flight keep them open",
        validate: validate_non_negative,
    },
    ConfigDef {
        name: "preallocate",
        broker_synonym: "log.preallocate",
        default: "false",
        config_type: ConfigType::Boolean,
        doc: "Accepted for compatibility: segment files grow as they are written",
        validate: validate_boolean,
    },
    ConfigDef {
        name: "unclean.leader.election.enable",
        broker_synonym: "unclean.leader.election.enable",
        default: "false",
        config_type: ConfigType::Boolean,
        doc: "Allow a replica outside the ISR to lead when no in-sync one is alive, at the cost of losing the records it lacks; the controller elects it when the last in-sync leader is fenced or when it returns to an offline partition",
        validate: validate_boolean,
    },
    ConfigDef {
        name: "leader.replication.throttled.replicas",
        broker_synonym: "",
        default: "",
        config_type: ConfigType::List,
        doc: "Replicas whose leader-side replication is throttled: partition:broker pairs or * (stored; replication is not throttled yet)",
        validate: validate_throttled_replicas,
    },
    ConfigDef {
        name: "follower.replication.throttled.replicas",
        broker_synonym: "",
        default: "",
        config_type: ConfigType::List,
        doc: "Replicas whose follower-side replication is throttled: partition:broker pairs or * (stored; replication is not throttled yet)",
        validate: validate_throttled_replicas,
    },
    ConfigDef {
        name: "message.downconversion.enable",
        broker_synonym: "log.message.downconversion.enable",
        default: "true",
        config_type: ConfigType::Boolean,
        doc: "Accepted for compatibility: Skiff serves only record batch format v2, which every supported client reads",
        validate: validate_boolean,
    },
    ConfigDef {
        name: "local.retention.ms",
        broker_synonym: "log.local.retention.ms",
        default: "-2",
        config_type: ConfigType::Long,
        doc: "Tiered storage's local retention; accepted, without effect: Skiff keeps every segment locally (-2: as retention.ms)",
        validate: validate_local_retention,
    },
    ConfigDef {
        name: "local.retention.bytes",
        broker_synonym: "log.local.retention.bytes",
        default: "-2",
        config_type: ConfigType::Long,
        doc: "Tiered storage's local retention; accepted, without effect: Skiff keeps every segment locally (-2: as retention.bytes)",
        validate: validate_local_retention,
    },
    ConfigDef {
        name: "remote.log.copy.disable",
        broker_synonym: "",
        default: "false",
        config_type: ConfigType::Boolean,
        doc: "Tiered storage; accepted, without effect",
        validate: validate_boolean,
    },
    ConfigDef {
        name: "remote.log.delete.on.disable",
        broker_synonym: "",
        default: "false",
        config_type: ConfigType::Boolean,
        doc: "Tiered storage; accepted, without effect",
        validate: validate_boolean,
    },
    ConfigDef {
        name: "remote.storage.enable",
        broker_synonym: "",
        default: "false",
        config_type: ConfigType::Boolean,
        doc: "Tiered storage; Skiff does not support it, so only false is accepted",
        validate: validate_remote_storage,
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

    #[test]
    fn every_standard_config_is_known_with_a_valid_default() {
        for def in TOPIC_CONFIGS {
            assert_eq!((def.validate)(def.default), Ok(()), "{}", def.name);
        }
        let good = [
            ("compression.type", "zstd"),
            ("min.cleanable.dirty.ratio", "0.25"),
            ("preallocate", "TRUE"),
            ("leader.replication.throttled.replicas", "0:1,1:2"),
            ("follower.replication.throttled.replicas", "*"),
            ("remote.storage.enable", "false"),
            ("segment.index.bytes", "4"),
            ("compression.gzip.level", "9"),
            ("compression.zstd.level", "-5"),
            ("local.retention.ms", "-2"),
        ];
        for (name, value) in good {
            assert_eq!(validate_topic_config(name, value), Ok(()), "{name}={value}");
        }
        let bad = [
            ("compression.type", "brotli"),
            ("min.cleanable.dirty.ratio", "1.5"),
            ("preallocate", "yes"),
            ("leader.replication.throttled.replicas", "0-1"),
            ("remote.storage.enable", "true"),
            ("segment.index.bytes", "3"),
            ("index.interval.bytes", "4294967296"),
            ("compression.gzip.level", "0"),
            ("compression.lz4.level", "18"),
            ("local.retention.bytes", "-3"),
        ];
        for (name, value) in bad {
            assert!(
                matches!(
                    validate_topic_config(name, value),
                    Err(ConfigError::Invalid { .. })
                ),
                "{name}={value}"
            );
        }
    }
}
