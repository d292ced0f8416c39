//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455). The controller decides
//! each partition's move (`skiff_metadata`'s reassignment module); a request is answered once
//! every move has started, not when it completes, as in Kafka.

use futures_util::stream::{self, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse, BrokerId,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use skiff_metadata::{ControllerRequest, PartitionRegistration};
use tracing::info;

use super::admin::Failure;
use super::{code, message, KafkaApis};

/// Most partitions one AlterPartitionReassignments request may move; a larger one is refused
/// as a whole, so one request cannot queue unbounded work at the controller.
const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;

/// Moves of one request sent to the controller at once.
const CONCURRENT_MOVES: usize = 16;

/// One partition's move, as asked for: to `target`, or cancelled when `None`.
struct Move {
    name: TopicName,
    /// `None` when the topic does not exist.
    topic_id: Option<uuid::Uuid>,
    partition: i32,
    target: Option<Vec<i32>>,
}

fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

impl KafkaApis {
    pub(super) async fn alter_partition_reassignments(
        &self,
        request: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let response = AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(request.allow_replication_factor_change);
        let count: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
        if count > MAX_PARTITIONS_PER_REQUEST {
            return response
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(message(format!(
                    "one request moves at most {MAX_PARTITIONS_PER_REQUEST} partitions, not {count}"
                )));
        }
        let topics = self.topics();
        let moves: Vec<Move> = request
            .topics
            .into_iter()
            .flat_map(|topic| {
                let topic_id = topics.get(topic.name.as_str()).map(|t| t.id);
                let name = topic.name;
                topic.partitions.into_iter().map(move |p| Move {
                    name: name.clone(),
                    topic_id,
                    partition: p.partition_index,
                    target: p
                        .replicas
                        .map(|replicas| replicas.iter().map(|b| b.0).collect()),
                })
            })
            .collect();
        let allow = request.allow_replication_factor_change;
        let outcomes: Vec<(Move, Result<(), Failure>)> = stream::iter(moves)
            .map(|m| self.start_move(m, allow))
            .buffered(CONCURRENT_MOVES)
            .collect()
            .await;
        let mut responses: Vec<ReassignableTopicResponse> = Vec::new();
        for (
            Move {
                name, partition, ..
            },
            outcome,
        ) in outcomes
        {
            let result = ReassignablePartitionResponse::default().with_partition_index(partition);
            let result = match outcome {
                Ok(()) => result,
                Err(failure) => result
                    .with_error_code(failure.error_code)
                    .with_error_message(message(failure.message)),
            };
            match responses.last_mut() {
                Some(topic) if topic.name == name => topic.partitions.push(result),
                _ => responses.push(
                    ReassignableTopicResponse::default()
                        .with_name(name)
                        .with_partitions(vec![result]),
                ),
            }
        }
        response.with_responses(responses)
    }

    async fn start_move(
        &self,
        m: Move,
        allow_replication_factor_change: bool,
    ) -> (Move, Result<(), Failure>) {
        let Some(topic_id) = m.topic_id else {
            let failure = Failure {
                error_code: code(ResponseError::UnknownTopicOrPartition),
                message: format!("topic '{}' does not exist", m.name.as_str()),
            };
            return (m, Err(failure));
        };
        let outcome = self
            .submit(
                ControllerRequest::ReassignPartition {
                    topic_id,
                    partition: m.partition,
                    replicas: m.target.clone(),
                    allow_replication_factor_change,
                },
                false,
            )
            .await;
        if outcome.is_ok() {
            info!(topic = m.name.as_str(), partition = m.partition, target = ?m.target, "reassignment started or cancelled");
        }
        (m, outcome)
    }

    /// From this broker's image: the reassignments in progress, of every partition or of those
    /// asked for. Partitions and topics that do not exist or are not moving are left out, as
    /// Kafka does.
    pub(super) fn list_partition_reassignments(
        &self,
        request: ListPartitionReassignmentsRequest,
    ) -> ListPartitionReassignmentsResponse {
        let topics = self.topics();
        let image = topics.image();
        let ongoing = |index: i32, reg: &PartitionRegistration| {
            reg.is_reassigning().then(|| {
                OngoingPartitionReassignment::default()
                    .with_partition_index(index)
                    .with_replicas(broker_ids(&reg.replicas))
                    .with_adding_replicas(broker_ids(&reg.adding_replicas))
                    .with_removing_replicas(broker_ids(&reg.removing_replicas))
            })
        };
        let mut result = Vec::new();
        match request.topics {
            None => {
                for topic in image.topics() {
                    let partitions: Vec<_> = image
                        .partitions_of(topic.topic_id)
                        .filter_map(|(index, reg)| ongoing(index, reg))
                        .collect();
                    if !partitions.is_empty() {
                        result.push((topic.name.clone(), partitions));
                    }
                }
            }
            Some(wanted) => {
                for topic in wanted {
                    let Some(meta) = image.topic_by_name(topic.name.as_str()) else {
                        continue;
                    };
                    let partitions: Vec<_> = topic
                        .partition_indexes
                        .iter()
                        .filter_map(|&index| ongoing(index, image.partition(meta.topic_id, index)?))
                        .collect();
                    if !partitions.is_empty() {
                        result.push((meta.name.clone(), partitions));
                    }
                }
            }
        }
        ListPartitionReassignmentsResponse::default().with_topics(
            result
                .into_iter()
                .map(|(name, partitions)| {
                    OngoingTopicReassignment::default()
                        .with_name(TopicName(kafka_protocol::protocol::StrBytes::from_string(
                            name,
                        )))
                        .with_partitions(partitions)
                })
                .collect(),
        )
    }
}
