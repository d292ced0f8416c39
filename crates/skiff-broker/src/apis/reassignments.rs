//! AlterPartitionReassignments and ListPartitionReassignments (KIP-455). The controller decides
//! each partition's move (`skiff_metadata`'s reassignment module); a request is answered once
//! every move has started, not when it completes, as in Kafka.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::alter_partition_reassignments_response::{
    ReassignablePartitionResponse, ReassignableTopicResponse,
};
use kafka_protocol::messages::list_partition_reassignments_response::{
    OngoingPartitionReassignment, OngoingTopicReassignment,
};
use kafka_protocol::messages::{
    AlterPartitionReassignmentsRequest, AlterPartitionReassignmentsResponse,
    ListPartitionReassignmentsRequest, ListPartitionReassignmentsResponse, TopicName,
};
use skiff_metadata::{ControllerRequest, PartitionRegistration};

use super::admin::{fail, PartitionRequest, MAX_PARTITIONS_PER_REQUEST};
use super::metadata::broker_ids;
use super::{code, message, KafkaApis};

impl KafkaApis {
    pub(super) async fn alter_partition_reassignments(
        &self,
        request: AlterPartitionReassignmentsRequest,
    ) -> AlterPartitionReassignmentsResponse {
        let allow_replication_factor_change = request.allow_replication_factor_change;
        let request_timeout_ms = request.timeout_ms;
        let response = AlterPartitionReassignmentsResponse::default()
            .with_allow_replication_factor_change(allow_replication_factor_change);
        let count: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
        if count > MAX_PARTITIONS_PER_REQUEST {
            // Every partition is answered too: the Java admin client fails a partition it
            // asked for and finds no result for with an unrelated error.
            let refused = format!(
                "one request moves at most {MAX_PARTITIONS_PER_REQUEST} partitions, not {count}"
            );
            let responses = request
                .topics
                .into_iter()
                .map(|topic| {
                    ReassignableTopicResponse::default()
                        .with_partitions(
                            topic
                                .partitions
                                .iter()
                                .map(|p| {
                                    ReassignablePartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(code(ResponseError::InvalidRequest))
                                        .with_error_message(message(refused.clone()))
                                })
                                .collect(),
                        )
                        .with_name(topic.name)
                })
                .collect();
            return response
                .with_error_code(code(ResponseError::InvalidRequest))
                .with_error_message(message(refused))
                .with_responses(responses);
        }
        let topics = self.topics();
        let requests: Vec<PartitionRequest> = request
            .topics
            .into_iter()
            .flat_map(|topic| {
                let topic_id = topics.get(topic.name.as_str()).map(|t| t.id);
                let name = topic.name;
                topic.partitions.into_iter().map(move |p| {
                    let request = match topic_id {
                        Some(topic_id) => Ok(ControllerRequest::ReassignPartition {
                            topic_id,
                            partition: p.partition_index,
                            replicas: p
                                .replicas
                                .map(|replicas| replicas.iter().map(|b| b.0).collect()),
                            allow_replication_factor_change,
                        }),
                        None => Err(fail(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic '{}' does not exist", name.as_str()),
                        )),
                    };
                    ((name.clone(), p.partition_index), request)
                })
            })
            .collect();
        let responses = self
            .submit_per_partition(requests, request_timeout_ms)
            .await
            .into_iter()
            .map(|(name, partitions)| {
                ReassignableTopicResponse::default()
                    .with_name(name)
                    .with_partitions(
                        partitions
                            .into_iter()
                            .map(|(partition, outcome)| {
                                let result = ReassignablePartitionResponse::default()
                                    .with_partition_index(partition);
                                match outcome {
                                    Ok(()) => result,
                                    Err(failure) => result
                                        .with_error_code(failure.error_code)
                                        .with_error_message(message(failure.message)),
                                }
                            })
                            .collect(),
                    )
            })
            .collect();
        response.with_responses(responses)
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
