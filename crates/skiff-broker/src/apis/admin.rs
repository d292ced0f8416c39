//! CreateTopics, DeleteTopics and CreatePartitions.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tracing::{info, warn};
use uuid::Uuid;

use super::{code, message, KafkaApis};
use crate::group::storage::OFFSETS_TOPIC;
use crate::topic_config::{TopicConfigs, TOPIC_CONFIGS};
use crate::topics::{validate_topic_name, TopicMeta};

/// Most partitions one topic may have; bounds the files and memory one request can claim.
const MAX_PARTITIONS_PER_TOPIC: i32 = 10_000;

/// Why an admin operation on one topic was refused.
#[derive(Debug)]
pub(super) struct Failure {
    pub error_code: i16,
    pub message: String,
}

fn fail(error: ResponseError, text: impl Into<String>) -> Failure {
    Failure {
        error_code: code(error),
        message: text.into(),
    }
}

impl KafkaApis {
    fn check_replication(&self, replication_factor: i16) -> Result<(), Failure> {
        match replication_factor {
            -1 | 1 => Ok(()),
            n => Err(fail(
                ResponseError::InvalidReplicationFactor,
                format!("replication factor {n} is larger than the 1 available broker"),
            )),
        }
    }

    /// Creates a topic (or only checks that it could be created). `num_partitions` and
    /// `replication_factor` of -1 take the broker defaults.
    pub(super) fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<TopicMeta, Failure> {
        if name == OFFSETS_TOPIC {
            return Err(fail(
                ResponseError::InvalidTopicException,
                format!("{OFFSETS_TOPIC} is internal: the group coordinator creates it"),
            ));
        }
        self.create_topic_unchecked(
            name,
            num_partitions,
            replication_factor,
            configs,
            validate_only,
        )
    }

    /// `create_topic` without the guard on internal topic names.
    pub(super) fn create_topic_unchecked(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
        validate_only: bool,
    ) -> Result<TopicMeta, Failure> {
        validate_topic_name(name).map_err(|m| fail(ResponseError::InvalidTopicException, m))?;
        let partitions = match num_partitions {
            -1 => self.config.default_partitions,
            n if (1..=MAX_PARTITIONS_PER_TOPIC).contains(&n) => n,
            n => {
                return Err(fail(
                    ResponseError::InvalidPartitions,
                    format!("partition count {n} is not between 1 and {MAX_PARTITIONS_PER_TOPIC}"),
                ))
            }
        };
        self.check_replication(replication_factor)?;
        let mut topics = self.topics_mut();
        if topics.get(name).is_some() {
            return Err(fail(
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        let topic = TopicMeta {
            name: name.to_string(),
            id: Uuid::new_v4(),
            partitions,
            configs,
        };
        if validate_only {
            return Ok(topic);
        }
        topics
            .put(topic.clone())
            .map_err(|e| fail(ResponseError::KafkaStorageError, e.to_string()))?;
        if let Err(e) = self.replicas.add_partitions(&topic, 0) {
            warn!(topic = name, error = %e, "creating partition logs failed");
            let _ = self.replicas.delete_topic(name);
            let _ = topics.remove(name);
            return Err(fail(ResponseError::KafkaStorageError, e.to_string()));
        }
        info!(topic = name, partitions, "created topic");
        Ok(topic)
    }

    pub(super) fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let results = request
            .topics
            .into_iter()
            .map(|wanted| {
                let name = wanted.name.clone();
                let result = CreatableTopicResult::default().with_name(name.clone());
                let configs = TopicConfigs::from_pairs(
                    wanted
                        .configs
                        .iter()
                        .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
                )
                .map_err(|e| fail(ResponseError::InvalidConfig, e.to_string()));
                let manual_assignment = !wanted.assignments.is_empty();
                let created = configs.and_then(|configs| {
                    if manual_assignment {
                        self.check_manual_assignment(
                            wanted.assignments.iter().map(|a| {
                                (
                                    a.partition_index,
                                    a.broker_ids.iter().map(|b| b.0).collect(),
                                )
                            }),
                            wanted.num_partitions,
                            wanted.replication_factor,
                        )?;
                    }
                    let partitions = if manual_assignment {
                        wanted.assignments.len() as i32
                    } else {
                        wanted.num_partitions
                    };
                    self.create_topic(
                        name.as_str(),
                        partitions,
                        if manual_assignment {
                            -1
                        } else {
                            wanted.replication_factor
                        },
                        configs,
                        request.validate_only,
                    )
                });
                match created {
                    Ok(topic) => result
                        .with_topic_id(topic.id)
                        .with_num_partitions(topic.partitions)
                        .with_replication_factor(1)
                        .with_configs((version >= 5).then(|| {
                            TOPIC_CONFIGS
                                .iter()
                                .map(|def| {
                                    CreatableTopicConfigs::default()
                                        .with_name(StrBytes::from_static_str(def.name))
                                        .with_value(Some(StrBytes::from_string(
                                            topic.configs.value(def),
                                        )))
                                        .with_config_source(super::configs::source_of(
                                            &topic.configs,
                                            def,
                                        ))
                                })
                                .collect()
                        })),
                    Err(failure) => result
                        .with_error_code(failure.error_code)
                        .with_error_message(message(failure.message))
                        .with_num_partitions(-1)
                        .with_replication_factor(-1),
                }
            })
            .collect();
        CreateTopicsResponse::default().with_topics(results)
    }

    /// Explicit replica assignments must name only this broker, once per partition, for
    /// partitions 0..n.
    fn check_manual_assignment(
        &self,
        assignments: impl Iterator<Item = (i32, Vec<i32>)>,
        num_partitions: i32,
        replication_factor: i16,
    ) -> Result<(), Failure> {
        if num_partitions != -1 || replication_factor != -1 {
            return Err(fail(
                ResponseError::InvalidRequest,
                "give either replica assignments or a partition count and replication factor",
            ));
        }
        for (expected, (index, brokers)) in assignments.enumerate() {
            if index != expected as i32 {
                return Err(fail(
                    ResponseError::InvalidReplicaAssignment,
                    format!("assignments must cover partitions 0..n in order, found {index}"),
                ));
            }
            if brokers != [self.config.node_id] {
                return Err(fail(
                    ResponseError::InvalidReplicaAssignment,
                    format!(
                        "partition {index} is assigned to brokers {brokers:?}; the only broker is {}",
                        self.config.node_id
                    ),
                ));
            }
        }
        Ok(())
    }

    pub(super) fn delete_topics(
        &self,
        request: DeleteTopicsRequest,
        version: i16,
    ) -> DeleteTopicsResponse {
        // v6 names topics by name or id; earlier versions by name only.
        let wanted: Vec<(Option<TopicName>, Uuid)> = if version >= 6 {
            request
                .topics
                .into_iter()
                .map(|t| (t.name, t.topic_id))
                .collect()
        } else {
            request
                .topic_names
                .into_iter()
                .map(|n| (Some(n), Uuid::nil()))
                .collect()
        };
        let responses = wanted
            .into_iter()
            .map(|(name, id)| {
                let result = DeletableTopicResult::default()
                    .with_name(name.clone())
                    .with_topic_id(id);
                match self.delete_topic(name.as_ref().map(|n| n.as_str()), id) {
                    Ok(topic) => result
                        .with_name(Some(TopicName(StrBytes::from_string(topic.name))))
                        .with_topic_id(topic.id),
                    Err(failure) => result
                        .with_error_code(failure.error_code)
                        .with_error_message(message(failure.message)),
                }
            })
            .collect();
        DeleteTopicsResponse::default().with_responses(responses)
    }

    fn delete_topic(&self, name: Option<&str>, id: Uuid) -> Result<TopicMeta, Failure> {
        let mut topics = self.topics_mut();
        let topic = match name {
            Some(name) => topics.get(name).cloned().ok_or_else(|| {
                fail(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                )
            })?,
            None => topics.by_id(id).cloned().ok_or_else(|| {
                fail(
                    ResponseError::UnknownTopicId,
                    format!("no topic has id {id}"),
                )
            })?,
        };
        if topic.name == OFFSETS_TOPIC {
            return Err(fail(
                ResponseError::InvalidTopicException,
                format!("{OFFSETS_TOPIC} is internal and cannot be deleted"),
            ));
        }
        topics
            .remove(&topic.name)
            .map_err(|e| fail(ResponseError::KafkaStorageError, e.to_string()))?;
        // The registry no longer names the topic; leftover files after a failure here are
        // removed at the next start.
        if let Err(e) = self.replicas.delete_topic(&topic.name) {
            warn!(topic = %topic.name, error = %e, "removing partition logs failed");
        }
        drop(topics);
        self.forget_committed_offsets(&topic.name);
        Ok(topic)
    }

    pub(super) fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
    ) -> CreatePartitionsResponse {
        let results = request
            .topics
            .into_iter()
            .map(|wanted| {
                let result = CreatePartitionsTopicResult::default().with_name(wanted.name.clone());
                let outcome = (|| {
                    let mut topics = self.topics_mut();
                    let mut topic = topics.get(wanted.name.as_str()).cloned().ok_or_else(|| {
                        fail(
                            ResponseError::UnknownTopicOrPartition,
                            format!("topic '{}' does not exist", wanted.name.as_str()),
                        )
                    })?;
                    let current = topic.partitions;
                    if wanted.count <= current || wanted.count > MAX_PARTITIONS_PER_TOPIC {
                        return Err(fail(
                            ResponseError::InvalidPartitions,
                            format!(
                                "topic has {current} partitions; the new count must be above it and at most {MAX_PARTITIONS_PER_TOPIC}, not {}",
                                wanted.count
                            ),
                        ));
                    }
                    if let Some(assignments) = &wanted.assignments {
                        let expected = (wanted.count - current) as usize;
                        let valid = assignments.len() == expected
                            && assignments
                                .iter()
                                .all(|a| a.broker_ids.iter().map(|b| b.0).eq([self.config.node_id]));
                        if !valid {
                            return Err(fail(
                                ResponseError::InvalidReplicaAssignment,
                                format!(
                                    "expected {expected} assignments naming only broker {}",
                                    self.config.node_id
                                ),
                            ));
                        }
                    }
                    if request.validate_only {
                        return Ok(());
                    }
                    topic.partitions = wanted.count;
                    topics
                        .put(topic.clone())
                        .map_err(|e| fail(ResponseError::KafkaStorageError, e.to_string()))?;
                    if let Err(e) = self.replicas.add_partitions(&topic, current) {
                        // Undo the half-done change, so the registry and the logs agree.
                        let _ = self.replicas.remove_partitions_from(&topic.name, current);
                        topic.partitions = current;
                        let _ = topics.put(topic);
                        return Err(fail(ResponseError::KafkaStorageError, e.to_string()));
                    }
                    info!(topic = %topic.name, from = current, to = wanted.count, "added partitions");
                    Ok(())
                })();
                match outcome {
                    Ok(()) => result,
                    Err(failure) => result
                        .with_error_code(failure.error_code)
                        .with_error_message(message(failure.message)),
                }
            })
            .collect();
        CreatePartitionsResponse::default().with_results(results)
    }
}
