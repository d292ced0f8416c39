//! `KafkaApis`: one handler per Kafka API, each turning a decoded request into a response body.
//! Handlers never panic on client input; every refusal is a Kafka error code in the response.

mod admin;
mod configs;
mod elections;
mod fetch;
mod groups;
mod log_dirs;
mod metadata;
mod offsets;
mod produce;
mod producers;
mod reassignments;

use std::sync::Arc;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse};
use kafka_protocol::protocol::StrBytes;
use skiff_log::LogError;
use skiff_protocol::{api_versions_response, Request, RequestBody, ResponseBody};
use skiff_raft::MetadataRaft;
use tokio::sync::Semaphore;
use tracing::warn;

pub use groups::ClientInfo;

use crate::config::BrokerConfig;
use crate::group::storage::OFFSETS_TOPIC;
use crate::group::GroupService;
use crate::producer_ids::ProducerIdBlock;
use crate::replica_manager::{Partition, ReplicaManager};
use crate::topic_config::TopicConfigs;
use crate::topics::Topics;

pub struct KafkaApis {
    config: BrokerConfig,
    cluster: Arc<MetadataRaft>,
    replicas: Arc<ReplicaManager>,
    producer_ids: tokio::sync::Mutex<ProducerIdBlock>,
    groups: Arc<GroupService>,
    group_io: Arc<Semaphore>,
}

/// Longest a request waits for the log of a partition assigned here to be opened before it is
/// answered NOT_LEADER_OR_FOLLOWER, which clients retry.
const OPENING_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Most group requests running on the blocking pool at once; more wait for a place without
/// holding a worker, and give up with their request.
const MAX_BLOCKING_GROUP_REQUESTS: usize = 32;

/// Whether the cluster has partition `index` of `topic`, wherever it is hosted.
fn partition_exists(image: &skiff_metadata::MetadataImage, topic: &str, index: i32) -> bool {
    image
        .topic_by_name(topic)
        .and_then(|t| image.partition(t.topic_id, index))
        .is_some()
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
    /// The broker's handlers over `replicas`, which the metadata publisher keeps in step with
    /// `cluster`'s image, and `groups`, whose coordinators `run_group_timers` loads.
    pub fn open(
        config: BrokerConfig,
        cluster: Arc<MetadataRaft>,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupService>,
    ) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&config.data_dir)?;
        Ok(Self {
            config,
            cluster,
            replicas,
            producer_ids: tokio::sync::Mutex::new(ProducerIdBlock::default()),
            groups,
            group_io: Arc::new(Semaphore::new(MAX_BLOCKING_GROUP_REQUESTS)),
        })
    }

    /// Creates `__consumer_offsets` when the first client looks for a group coordinator, as
    /// Kafka does, so a cluster that never sees groups neither pays for nor shows the topic.
    async fn ensure_offsets_topic(&self) -> Result<(), admin::Failure> {
        if self.topics().get(OFFSETS_TOPIC).is_some() {
            return Ok(());
        }
        let configs = TopicConfigs::from_pairs([
            ("cleanup.policy", Some("compact")),
            ("segment.bytes", Some("104857600")),
        ])
        .expect("valid internal topic configs");
        // Kafka's offsets.topic.replication.factor is 3; a smaller cluster gets what it has.
        let live = self
            .topics()
            .image()
            .brokers()
            .filter(|b| !b.fenced)
            .count();
        let replication_factor = live.clamp(1, 3) as i16;
        match self
            .create_topic_unchecked(
                OFFSETS_TOPIC,
                self.config.offsets_topic_partitions,
                replication_factor,
                configs,
                None,
                false,
            )
            .await
        {
            Ok(_) => Ok(()),
            Err(_) if self.topics().get(OFFSETS_TOPIC).is_some() => Ok(()),
            Err(f) => Err(f),
        }
    }

    /// Answers every parked JoinGroup and SyncGroup so shutdown does not wait for rebalance
    /// timeouts; the members find the coordinator again after the restart.
    pub fn release_group_waiters(&self) {
        self.groups.release_waiters();
    }

    /// Loads and unloads group coordinators as `__consumer_offsets` leadership moves, then
    /// runs session expiry and rebalance deadlines; call every ~100 ms, off the async workers.
    pub fn run_group_timers(&self) {
        self.groups
            .reconcile(&|| self.cluster.image(), &self.replicas);
        self.groups.tick(&self.replicas);
    }

    pub fn config(&self) -> &BrokerConfig {
        &self.config
    }

    pub fn replicas(&self) -> &ReplicaManager {
        &self.replicas
    }

    /// Partition `index` of `topic` if it is served here. One the image assigns here whose log
    /// the metadata publisher is still opening (just created, or after a restart) is waited for
    /// until `deadline` (see `opening_deadline`), so a client that just created a topic needs no
    /// retry.
    async fn hosted_partition(
        &self,
        topic: &str,
        index: i32,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<Partition>> {
        if let Some(partition) = self.replicas.get(topic, index) {
            return Some(partition);
        }
        let image = self.cluster.image();
        let assigned_here = image
            .topic_by_name(topic)
            .and_then(|t| image.partition(t.topic_id, index))
            .is_some_and(|p| p.replicas.contains(&self.config.node_id));
        if !assigned_here {
            return None;
        }
        self.replicas.get_when_open(topic, index, deadline).await
    }

    /// How long the partitions of a request that starts now may wait for their logs to open.
    fn opening_deadline() -> tokio::time::Instant {
        tokio::time::Instant::now() + OPENING_WAIT
    }

    /// The error for a partition this broker does not host: NOT_LEADER_OR_FOLLOWER when it
    /// exists elsewhere, so clients refresh their metadata, UNKNOWN_TOPIC_OR_PARTITION when it
    /// does not exist at all.
    fn not_hosted_error(&self, topic: &str, index: i32) -> i16 {
        if partition_exists(&self.cluster.image(), topic, index) {
            code(ResponseError::NotLeaderOrFollower)
        } else {
            code(ResponseError::UnknownTopicOrPartition)
        }
    }

    /// The topics of the current metadata image.
    fn topics(&self) -> Topics {
        Topics::new(self.cluster.image())
    }

    /// Runs the part of a group request that takes a coordinator's lock on the blocking pool:
    /// that lock is held while the coordinator's records are appended, so waiting for it can
    /// mean waiting for a disk. `None` only when the runtime shuts down first.
    async fn group_io<T: Send + 'static>(
        self: &Arc<Self>,
        work: impl FnOnce(&KafkaApis) -> T + Send + 'static,
    ) -> Option<T> {
        let permit = self.group_io.clone().acquire_owned().await.ok()?;
        let apis = self.clone();
        let done = tokio::task::spawn_blocking(move || {
            let _permit = permit;
            work(&apis)
        })
        .await;
        match done {
            Ok(value) => Some(value),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => None,
        }
    }

    /// Answers one request; `None` means no response is sent (Produce with acks=0, or a group
    /// request cut short by shutdown).
    pub async fn handle(
        self: &Arc<Self>,
        request: Request,
        client: &ClientInfo<'_>,
    ) -> Option<ResponseBody> {
        let version = request.version();
        Some(match request.body {
            RequestBody::ApiVersions(_) => ResponseBody::ApiVersions(api_versions_response(0)),
            RequestBody::Metadata(r) => ResponseBody::Metadata(self.metadata(r, version).await),
            RequestBody::Produce(r) => {
                return self.produce(r, version).await.map(ResponseBody::Produce)
            }
            RequestBody::Fetch(r) => ResponseBody::Fetch(self.fetch(r, version).await),
            RequestBody::ListOffsets(r) => {
                ResponseBody::ListOffsets(self.list_offsets(r, version).await)
            }
            RequestBody::OffsetForLeaderEpoch(r) => {
                ResponseBody::OffsetForLeaderEpoch(self.offset_for_leader_epoch(r).await)
            }
            RequestBody::DeleteRecords(r) => {
                ResponseBody::DeleteRecords(self.delete_records(r).await)
            }
            RequestBody::CreateTopics(r) => {
                ResponseBody::CreateTopics(self.create_topics(r, version).await)
            }
            RequestBody::DeleteTopics(r) => {
                ResponseBody::DeleteTopics(self.delete_topics(r, version).await)
            }
            RequestBody::CreatePartitions(r) => {
                ResponseBody::CreatePartitions(self.create_partitions(r, version).await)
            }
            RequestBody::DescribeConfigs(r) => {
                ResponseBody::DescribeConfigs(self.describe_configs(r, version))
            }
            RequestBody::AlterConfigs(r) => ResponseBody::AlterConfigs(self.alter_configs(r).await),
            RequestBody::IncrementalAlterConfigs(r) => {
                ResponseBody::IncrementalAlterConfigs(self.incremental_alter_configs(r).await)
            }
            RequestBody::ElectLeaders(r) => {
                ResponseBody::ElectLeaders(self.elect_leaders(r, version).await)
            }
            RequestBody::AlterPartitionReassignments(r) => {
                ResponseBody::AlterPartitionReassignments(
                    self.alter_partition_reassignments(r).await,
                )
            }
            RequestBody::ListPartitionReassignments(r) => {
                ResponseBody::ListPartitionReassignments(self.list_partition_reassignments(r))
            }
            RequestBody::DescribeProducers(r) => {
                ResponseBody::DescribeProducers(self.describe_producers(r).await)
            }
            RequestBody::DescribeTopicPartitions(r) => {
                ResponseBody::DescribeTopicPartitions(self.describe_topic_partitions(r))
            }
            RequestBody::DescribeCluster(r) => {
                ResponseBody::DescribeCluster(self.describe_cluster(r))
            }
            RequestBody::DescribeLogDirs(r) => {
                ResponseBody::DescribeLogDirs(self.describe_log_dirs(r).await)
            }
            RequestBody::InitProducerId(r) => {
                ResponseBody::InitProducerId(self.init_producer_id(r).await)
            }
            RequestBody::FindCoordinator(r) => {
                ResponseBody::FindCoordinator(self.find_coordinator(r, version).await)
            }
            RequestBody::JoinGroup(r) => {
                ResponseBody::JoinGroup(self.join_group(r, version, client).await)
            }
            RequestBody::SyncGroup(r) => ResponseBody::SyncGroup(self.sync_group(r, version).await),
            RequestBody::Heartbeat(r) => {
                ResponseBody::Heartbeat(self.group_io(|apis| apis.heartbeat(r)).await?)
            }
            RequestBody::LeaveGroup(r) => ResponseBody::LeaveGroup(
                self.group_io(move |apis| apis.leave_group(r, version))
                    .await?,
            ),
            RequestBody::OffsetCommit(r) => {
                ResponseBody::OffsetCommit(self.group_io(|apis| apis.offset_commit(r)).await?)
            }
            RequestBody::OffsetFetch(r) => ResponseBody::OffsetFetch(
                self.group_io(move |apis| apis.offset_fetch(r, version))
                    .await?,
            ),
            RequestBody::ListGroups(r) => {
                ResponseBody::ListGroups(self.group_io(|apis| apis.list_groups(r)).await?)
            }
            RequestBody::DescribeGroups(r) => {
                ResponseBody::DescribeGroups(self.group_io(|apis| apis.describe_groups(r)).await?)
            }
            RequestBody::DeleteGroups(r) => {
                ResponseBody::DeleteGroups(self.group_io(|apis| apis.delete_groups(r)).await?)
            }
            RequestBody::OffsetDelete(r) => {
                ResponseBody::OffsetDelete(self.group_io(|apis| apis.offset_delete(r)).await?)
            }
        })
    }

    /// Idempotent producers only: transactions need a transaction coordinator Skiff does not
    /// have yet, so a transactional id is refused as an unsupported feature. Every idempotent
    /// producer gets a new id at epoch 0, as Kafka answers, also one that names an id it had
    /// (KIP-360): bumping the epoch of any id a client names would let it fence another
    /// producer.
    async fn init_producer_id(&self, request: InitProducerIdRequest) -> InitProducerIdResponse {
        let response = InitProducerIdResponse::default();
        if request.transactional_id.is_some() {
            return response
                .with_error_code(code(ResponseError::UnsupportedVersion))
                .with_producer_id((-1).into())
                .with_producer_epoch(-1);
        }
        match self.next_producer_id().await {
            Ok(id) => response.with_producer_id(id.into()).with_producer_epoch(0),
            Err(e) => {
                warn!(error = %e, "could not get a producer id block from the controller");
                response
                    .with_error_code(code(ResponseError::CoordinatorNotAvailable))
                    .with_producer_id((-1).into())
                    .with_producer_epoch(-1)
            }
        }
    }

    /// The next id of this broker's block, asking the controller for a new block when it is
    /// used up.
    async fn next_producer_id(&self) -> Result<i64, skiff_raft::SubmitError> {
        let mut block = self.producer_ids.lock().await;
        if let Some(id) = block.take() {
            return Ok(id);
        }
        let broker = self.config.node_id;
        self.cluster
            .submit(skiff_raft::ForwardRequest::Controller {
                request: skiff_metadata::ControllerRequest::AllocateProducerIds { broker },
                validate_only: false,
            })
            .await?;
        let (start, len) = self
            .cluster
            .image()
            .producer_id_block(broker)
            .ok_or_else(|| {
                skiff_raft::SubmitError::Rejected(
                    "the new producer id block is not in the image".into(),
                )
            })?;
        block.refill(start, len);
        block.take().ok_or_else(|| {
            skiff_raft::SubmitError::Rejected("the new producer id block is empty".into())
        })
    }

    /// Runs retention, segment rolling by age and timed flushes.
    pub fn run_log_maintenance(&self) {
        self.replicas.run_log_maintenance();
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
