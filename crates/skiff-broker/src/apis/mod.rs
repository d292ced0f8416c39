//! `KafkaApis`: one handler per Kafka API, each turning a decoded request into a response body.
//! Handlers never panic on client input; every refusal is a Kafka error code in the response.

mod admin;
mod configs;
mod fetch;
mod groups;
mod metadata;
mod offsets;
mod produce;

use std::sync::{Mutex, RwLock, RwLockReadGuard, RwLockWriteGuard};

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use kafka_protocol::protocol::StrBytes;
use skiff_log::LogError;
use skiff_protocol::{api_versions_response, Request, RequestBody, ResponseBody};
use tracing::warn;

pub use groups::ClientInfo;

use crate::config::BrokerConfig;
use crate::group::coordinator::{GroupConfig, GroupCoordinator};
use crate::group::storage::OFFSETS_TOPIC;
use crate::group::GroupService;
use crate::producer_ids::ProducerIdAllocator;
use crate::replica_manager::ReplicaManager;
use crate::topic_config::TopicConfigs;
use crate::topics::TopicStore;

/// The leader epoch of every partition of a single broker: leadership never moves.
pub const LEADER_EPOCH: i32 = 0;

pub struct KafkaApis {
    config: BrokerConfig,
    topics: RwLock<TopicStore>,
    replicas: ReplicaManager,
    producer_ids: Mutex<ProducerIdAllocator>,
    groups: GroupService,
}

fn code(error: ResponseError) -> i16 {
    error.code()
}

/// Longest error message sent: messages quote client-supplied names, and a non-flexible
/// response cannot carry a string over i16::MAX bytes.
const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

fn message(text: impl Into<String>) -> Option<StrBytes> {
    let mut text = text.into();
    if text.len() > MAX_ERROR_MESSAGE_BYTES {
        let mut end = MAX_ERROR_MESSAGE_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        text.truncate(end);
    }
    Some(StrBytes::from_string(text))
}

/// The Kafka error a log failure is reported as.
fn log_error_code(error: &LogError) -> i16 {
    use skiff_log::batch::BatchError;
    match error {
        LogError::OffsetOutOfRange { .. } => code(ResponseError::OffsetOutOfRange),
        LogError::OutOfOrderSequence { .. } => code(ResponseError::OutOfOrderSequenceNumber),
        LogError::InvalidProducerEpoch { .. } => code(ResponseError::InvalidProducerEpoch),
        LogError::Corrupt(BatchError::TooLarge { .. }) => code(ResponseError::MessageTooLarge),
        LogError::Corrupt(_) => code(ResponseError::CorruptMessage),
        _ => code(ResponseError::KafkaStorageError),
    }
}

impl KafkaApis {
    /// Opens the broker's state in `config.data_dir`, recovering every partition log.
    pub fn open(config: BrokerConfig) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        let topics = TopicStore::open(&config.data_dir)?;
        let replicas = ReplicaManager::open(&config.data_dir, topics.all())?;
        let producer_ids = ProducerIdAllocator::open(&config.data_dir)?;
        let offsets_partitions = topics
            .get(OFFSETS_TOPIC)
            .map_or(config.offsets_topic_partitions, |t| t.partitions);
        let groups = GroupService::new(
            GroupCoordinator::new(GroupConfig {
                min_session_timeout_ms: config.group_min_session_timeout_ms,
                max_session_timeout_ms: config.group_max_session_timeout_ms,
                initial_rebalance_delay_ms: config.group_initial_rebalance_delay_ms,
                max_group_size: config.group_max_size,
                offsets_retention_ms: config.offsets_retention_ms,
                ..GroupConfig::default()
            }),
            offsets_partitions,
        );
        let apis = Self {
            config,
            topics: RwLock::new(topics),
            replicas,
            producer_ids: Mutex::new(producer_ids),
            groups,
        };
        apis.open_offsets_topic()?;
        Ok(apis)
    }

    /// Loads every group from `__consumer_offsets`, if it exists yet.
    fn open_offsets_topic(&self) -> anyhow::Result<()> {
        if self.topics().get(OFFSETS_TOPIC).is_some() {
            let loaded = self.groups.load(&self.replicas)?;
            tracing::info!(records = loaded, "loaded consumer groups");
        }
        Ok(())
    }

    /// Creates `__consumer_offsets` when the first client looks for a group coordinator, as
    /// Kafka does, so a broker that never sees groups neither pays for nor shows the topic.
    fn ensure_offsets_topic(&self) -> Result<(), admin::Failure> {
        if self.topics().get(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let configs = TopicConfigs::from_pairs([
            ("cleanup.policy", Some("compact")),
            ("segment.bytes", Some("104857600")),
        ])
        .expect("valid internal topic configs");
        match self.create_topic_unchecked(
            OFFSETS_TOPIC,
            self.groups.offsets_partitions(),
            -1,
            configs,
            false,
        ) {
            Ok(_) => Ok(()),
            Err(f) if f.error_code == code(ResponseError::TopicAlreadyExists) => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Drops every group's committed offsets of a deleted topic.
    fn forget_committed_offsets(&self, topic: &str) {
        let mut state = self.groups.lock();
        let effects = state.coordinator.remove_topic_offsets(topic);
        if let Err(e) = self.groups.apply(&mut state, &self.replicas, effects) {
            warn!(topic, error = %e, "persisting the removal of committed offsets failed");
        }
    }

    /// Answers every parked JoinGroup and SyncGroup so shutdown does not wait for rebalance
    /// timeouts; the members find the coordinator again after the restart.
    pub fn release_group_waiters(&self) {
        self.groups.release_waiters();
    }

    /// Group session expiry and rebalance deadlines; call every ~100 ms.
    pub fn run_group_timers(&self) {
        self.groups.tick(&self.replicas);
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn replicas(&self) -> &ReplicaManager {
        &self.replicas
    }

    fn topics(&self) -> RwLockReadGuard<'_, TopicStore> {
        self.topics.read().unwrap_or_else(|p| p.into_inner())
    }

    fn topics_mut(&self) -> RwLockWriteGuard<'_, TopicStore> {
        self.topics.write().unwrap_or_else(|p| p.into_inner())
    }

    /// Answers one request; `None` means no response is sent (Produce with acks=0).
    pub async fn handle(&self, request: Request, client: &ClientInfo<'_>) -> Option<ResponseBody> {
        let version = request.version();
        Some(match request.body {
            RequestBody::ApiVersions(_) => ResponseBody::ApiVersions(api_versions_response(0)),
            RequestBody::Metadata(r) => ResponseBody::Metadata(self.metadata(r, version)),
            RequestBody::Produce(r) => return self.produce(r, version).map(ResponseBody::Produce),
            RequestBody::Fetch(r) => ResponseBody::Fetch(self.fetch(r, version).await),
            RequestBody::ListOffsets(r) => ResponseBody::ListOffsets(self.list_offsets(r, version)),
            RequestBody::OffsetForLeaderEpoch(r) => {
                ResponseBody::OffsetForLeaderEpoch(self.offset_for_leader_epoch(r))
            }
            RequestBody::DeleteRecords(r) => ResponseBody::DeleteRecords(self.delete_records(r)),
            RequestBody::CreateTopics(r) => {
                ResponseBody::CreateTopics(self.create_topics(r, version))
            }
            RequestBody::DeleteTopics(r) => {
                ResponseBody::DeleteTopics(self.delete_topics(r, version))
            }
            RequestBody::CreatePartitions(r) => {
                ResponseBody::CreatePartitions(self.create_partitions(r))
            }
            RequestBody::DescribeConfigs(r) => {
                ResponseBody::DescribeConfigs(self.describe_configs(r, version))
            }
            RequestBody::AlterConfigs(r) => ResponseBody::AlterConfigs(self.alter_configs(r)),
            RequestBody::IncrementalAlterConfigs(r) => {
                ResponseBody::IncrementalAlterConfigs(self.incremental_alter_configs(r))
            }
            RequestBody::DescribeCluster(r) => {
                ResponseBody::DescribeCluster(self.describe_cluster(r))
            }
            RequestBody::InitProducerId(r) => {
                ResponseBody::InitProducerId(self.init_producer_id(r))
            }
            RequestBody::FindCoordinator(r) => {
                ResponseBody::FindCoordinator(self.find_coordinator(r, version))
            }
            RequestBody::JoinGroup(r) => {
                ResponseBody::JoinGroup(self.join_group(r, version, client).await)
            }
            RequestBody::SyncGroup(r) => ResponseBody::SyncGroup(self.sync_group(r, version).await),
            RequestBody::Heartbeat(r) => ResponseBody::Heartbeat(self.heartbeat(r)),
            RequestBody::LeaveGroup(r) => ResponseBody::LeaveGroup(self.leave_group(r, version)),
            RequestBody::OffsetCommit(r) => ResponseBody::OffsetCommit(self.offset_commit(r)),
            RequestBody::OffsetFetch(r) => ResponseBody::OffsetFetch(self.offset_fetch(r, version)),
            RequestBody::ListGroups(r) => ResponseBody::ListGroups(self.list_groups(r)),
            RequestBody::DescribeGroups(r) => ResponseBody::DescribeGroups(self.describe_groups(r)),
            RequestBody::DeleteGroups(r) => ResponseBody::DeleteGroups(self.delete_groups(r)),
            RequestBody::OffsetDelete(r) => ResponseBody::OffsetDelete(self.offset_delete(r)),
        })
    }

    /// Idempotent producers only: transactions need a transaction coordinator Skiff does not
    /// have yet, so a transactional id is refused as an unsupported feature. A producer that
    /// already has an id (KIP-360 epoch bump) keeps it with the next epoch.
    fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let response = InitProducerIdResponse::default();
        if request.transactional_id.is_some() {
            return response
                .with_error_code(code(ResponseError::UnsupportedVersion))
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
        }
        if request.producer_id.0 >= 0
            && request.producer_epoch >= 0
            && request.producer_epoch < i16::MAX - 1
        {
            return response
                .with_producer_id(request.producer_id)
                .with_producer_epoch(request.producer_epoch + 1);
        }
        let allocated = self
            .producer_ids
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .next_id();
        match allocated {
            Ok(id) => response.with_producer_id(id.into()).with_producer_epoch(0),
            Err(e) => {
                warn!(error = %e, "could not persist the producer id block");
                response
                    .with_error_code(code(ResponseError::CoordinatorNotAvailable))
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1)
            }
        }
    }

    /// Runs retention, segment rolling by age and timed flushes.
    pub fn run_log_maintenance(&self) {
        self.replicas.run_log_maintenance();
        self.groups.export_lag(&self.replicas);
    }

    /// Flushes and closes every partition log.
    pub fn shutdown(&self) {
        self.replicas.close_all();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_messages_are_cut_to_a_sendable_length() {
        let long = format!("topic '{}' does not exist", "é".repeat(40_000));
        let sent = message(long).unwrap();
        assert!(sent.len() <= MAX_ERROR_MESSAGE_BYTES);
        assert!(sent.starts_with("topic '"));
    }
}
