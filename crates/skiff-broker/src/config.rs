//! Broker settings. Every limit the broker enforces lives here, with its default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct BrokerConfig {
    pub node_id: i32,
    pub data_dir: PathBuf,
    pub kafka_addr: SocketAddr,
    /// Host and port given to clients in Metadata; defaults to `kafka_addr`.
    pub advertised_kafka_addr: (String, u16),
    pub rack: Option<String>,
    pub auto_create_topics: bool,
    /// Partitions of a topic created without a partition count (auto-create, `-1`).
    pub default_partitions: i32,
    /// Replicas of each partition of a topic created without a replication factor (Kafka's
    /// `default.replication.factor`).
    pub default_replication_factor: i16,
    /// A follower that has not caught up with its leader for this long leaves the ISR (Kafka's
    /// `replica.lag.time.max.ms`).
    pub replica_lag_time_max_ms: i64,
    /// Largest request frame accepted; a larger one closes the connection before any allocation.
    pub max_frame_bytes: usize,
    pub max_connections: usize,
    /// Requests read from one connection ahead of the one being handled, and, as many again,
    /// handled requests whose answers wait (acks=all produces waiting for the replicas).
    pub max_in_flight_per_connection: usize,
    /// Most record bytes one Fetch response carries, whatever the client asks (Kafka's
    /// `fetch.max.bytes`); the first batch is still sent whole if it is larger (KIP-74).
    pub max_fetch_bytes: usize,
    /// Longest a request may take, including a long-poll Fetch's wait.
    pub request_timeout: Duration,
    /// How often retention, segment age and `flush.ms` are checked.
    pub log_check_interval: Duration,
    /// Partitions of `__consumer_offsets` (fixed once the topic exists).
    pub offsets_topic_partitions: i32,
    /// How long a new group waits for more members before its first generation.
    pub group_initial_rebalance_delay_ms: i64,
    pub group_min_session_timeout_ms: i32,
    pub group_max_session_timeout_ms: i32,
    pub group_max_size: usize,
    pub offsets_retention_ms: i64,
    /// Topics one CreateTopics, DeleteTopics or CreatePartitions request may handle, and
    /// resources one AlterConfigs or IncrementalAlterConfigs may alter: each is a metadata-log
    /// write the request waits for in turn.
    pub max_topics_per_request: usize,
    /// Topics one Metadata request may auto-create, one metadata-log write after another: few
    /// enough to finish well within the request timeout; the client's retry creates the rest.
    pub max_topics_auto_created_per_request: usize,
    /// Partitions one CreateTopics or CreatePartitions request may add in all: each is a log
    /// (files, memory) on some broker.
    pub max_partitions_per_request: i64,
    /// Groups all coordinators of this broker hold together.
    pub max_groups: usize,
    /// Offsets one OffsetCommit may carry.
    pub max_offsets_per_commit: usize,
}

impl BrokerConfig {
    /// The settings of this broker's consumer-group coordinators.
    pub fn group_config(&self) -> crate::group::coordinator::GroupConfig {
        crate::group::coordinator::GroupConfig {
            min_session_timeout_ms: self.group_min_session_timeout_ms,
            max_session_timeout_ms: self.group_max_session_timeout_ms,
            initial_rebalance_delay_ms: self.group_initial_rebalance_delay_ms,
            max_group_size: self.group_max_size,
            offsets_retention_ms: self.offsets_retention_ms,
            max_groups: self.max_groups,
            max_offsets_per_commit: self.max_offsets_per_commit,
            ..Default::default()
        }
    }

    pub const DEFAULT_KAFKA_ADDR: &'static str = "127.0.0.1:9092";

    pub fn new(data_dir: PathBuf, kafka_addr: SocketAddr) -> Self {
        Self {
            node_id: 1,
            data_dir,
            kafka_addr,
            advertised_kafka_addr: (kafka_addr.ip().to_string(), kafka_addr.port()),
            rack: None,
            auto_create_topics: true,
            default_partitions: 1,
            default_replication_factor: 1,
            replica_lag_time_max_ms: 30_000,
            max_frame_bytes: 100 * 1024 * 1024,
            max_connections: 10_000,
            max_in_flight_per_connection: 64,
            max_fetch_bytes: 55 * 1024 * 1024,
            request_timeout: Duration::from_secs(30),
            log_check_interval: Duration::from_secs(5),
            offsets_topic_partitions: 50,
            group_initial_rebalance_delay_ms: 3_000,
            group_min_session_timeout_ms: 6_000,
            group_max_session_timeout_ms: 1_800_000,
            group_max_size: 1_000,
            offsets_retention_ms: 7 * 24 * 3600 * 1000,
            max_topics_per_request: 1_000,
            max_topics_auto_created_per_request: 100,
            max_partitions_per_request: 10_000,
            max_groups: 100_000,
            max_offsets_per_commit: 10_000,
        }
    }
}
