//! ElectLeaders (KIP-183 preferred, KIP-460 unclean): the controller decides each partition's
//! election (`skiff_metadata`'s election module); the answer comes once the new leaders are in
//! this broker's image.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::elect_leaders_response::{PartitionResult, ReplicaElectionResult};
use kafka_protocol::messages::{ElectLeadersRequest, ElectLeadersResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use skiff_metadata::{ControllerRequest, ElectionType};

use super::admin::{fail, PartitionRequest, MAX_PARTITIONS_PER_REQUEST};
use super::{code, message, KafkaApis};

impl KafkaApis {
    pub(super) async fn elect_leaders(
        &self,
        request: ElectLeadersRequest,
        version: i16,
    ) -> ElectLeadersResponse {
        let election = match request.election_type {
            0 => ElectionType::Preferred,
            1 => ElectionType::Unclean,
            // Only v1+ carries the type, and it has the top-level error code.
            _ => {
                return ElectLeadersResponse::default()
                    .with_error_code(code(ResponseError::InvalidRequest))
            }
        };
        let topics = self.topics();
        let image = topics.image();
        // Every partition when none are named; those whose election is not needed are then
        // left out of the answer, as Kafka does.
        let all = request.topic_partitions.is_none();
        let requests: Vec<PartitionRequest> = match request.topic_partitions {
            None => image
                .partitions()
                .filter(|(_, _, reg)| match election {
                    ElectionType::Preferred => reg.leader != reg.replicas.first().copied(),
                    ElectionType::Unclean => reg.leader.is_none(),
                })
                .filter_map(|(topic_id, partition, _)| {
                    let name = image.topic(topic_id)?.name.clone();
                    let key = (TopicName(StrBytes::from_string(name)), partition);
                    Some((
                        key,
                        Ok(ControllerRequest::ElectLeader {
                            topic_id,
                            partition,
                            election,
                        }),
                    ))
                })
                .collect(),
            Some(wanted) => {
                let count: usize = wanted.iter().map(|t| t.partitions.len()).sum();
                if count > MAX_PARTITIONS_PER_REQUEST {
                    // Past the limit; the top-level code is v1+, so v0 gets it per partition.
                    let refused = wanted
                        .into_iter()
                        .map(|topic| {
                            ReplicaElectionResult::default()
                                .with_partition_result(
                                    topic
                                        .partitions
                                        .iter()
                                        .map(|&partition| {
                                            PartitionResult::default()
                                                .with_partition_id(partition)
                                                .with_error_code(code(ResponseError::InvalidRequest))
                                                .with_error_message(message(format!(
                                                    "one request elects leaders of at most {MAX_PARTITIONS_PER_REQUEST} partitions, not {count}"
                                                )))
                                        })
                                        .collect(),
                                )
                                .with_topic(topic.topic)
                        })
                        .collect();
                    let response =
                        ElectLeadersResponse::default().with_replica_election_results(refused);
                    return if version >= 1 {
                        response.with_error_code(code(ResponseError::InvalidRequest))
                    } else {
                        response
                    };
                }
                wanted
                    .into_iter()
                    .flat_map(|topic| {
                        let topic_id = image
                            .topic_by_name(topic.topic.as_str())
                            .map(|t| t.topic_id);
                        let name = topic.topic;
                        topic.partitions.into_iter().map(move |partition| {
                            let request = match topic_id {
                                Some(topic_id) => Ok(ControllerRequest::ElectLeader {
                                    topic_id,
                                    partition,
                                    election,
                                }),
                                None => Err(fail(
                                    ResponseError::UnknownTopicOrPartition,
                                    format!("topic '{}' does not exist", name.as_str()),
                                )),
                            };
                            ((name.clone(), partition), request)
                        })
                    })
                    .collect()
            }
        };
        let not_needed = code(ResponseError::ElectionNotNeeded);
        let results = self
            .submit_per_partition(requests, request.timeout_ms)
            .await
            .into_iter()
            .filter_map(|(topic, partitions)| {
                let partition_result: Vec<PartitionResult> = partitions
                    .into_iter()
                    .filter(|(_, outcome)| {
                        !all || !matches!(outcome, Err(f) if f.error_code == not_needed)
                    })
                    .map(|(partition, outcome)| {
                        let result = PartitionResult::default().with_partition_id(partition);
                        match outcome {
                            Ok(()) => result,
                            Err(failure) => result
                                .with_error_code(failure.error_code)
                                .with_error_message(message(failure.message)),
                        }
                    })
                    .collect();
                (!partition_result.is_empty()).then(|| {
                    ReplicaElectionResult::default()
                        .with_topic(topic)
                        .with_partition_result(partition_result)
                })
            })
            .collect();
        ElectLeadersResponse::default().with_replica_election_results(results)
    }
}
