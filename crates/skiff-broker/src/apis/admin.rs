//! CreateTopics, DeleteTopics and CreatePartitions, and the per-partition controller requests
//! reassignments and elections share.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use futures_util::stream::{self, StreamExt};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::create_partitions_response::CreatePartitionsTopicResult;
use kafka_protocol::messages::create_topics_request::CreatableTopic;
use kafka_protocol::messages::create_topics_response::{
    CreatableTopicConfigs, CreatableTopicResult,
};
use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{
    CreatePartitionsRequest, CreatePartitionsResponse, CreateTopicsRequest, CreateTopicsResponse,
    DeleteTopicsRequest, DeleteTopicsResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use skiff_metadata::ControllerRequest;
use skiff_raft::{ForwardRequest, SubmitError};
use tokio::time::Instant;
use tracing::{debug, info};
use uuid::Uuid;

use super::{code, message, KafkaApis};
use crate::group::storage::OFFSETS_TOPIC;
use crate::topic_config::{TopicConfigs, TOPIC_CONFIGS};
use crate::topics::{validate_topic_name, TopicMeta};

/// Most partitions one topic may have; bounds the files and memory one request can claim.
use skiff_metadata::topic_rules::MAX_PARTITIONS_PER_TOPIC;

/// What one CreateTopics, DeleteTopics or CreatePartitions request may still do. Topics past
/// the topic limit, or that would take the request past its partition limit, are refused: with
/// THROTTLING_QUOTA_EXCEEDED where the request's version knows it (Kafka's controller mutation
/// quota, KIP-599; the Java admin client sends those topics again by itself), else with
/// INVALID_REQUEST or INVALID_PARTITIONS.
struct Budget {
    max_topics: usize,
    max_partitions: i64,
    topics_left: usize,
    partitions_left: i64,
    throttling: bool,
}

impl Budget {
    fn refuse(&self, otherwise: ResponseError, text: String) -> Failure {
        match self.throttling {
            true => fail(ResponseError::ThrottlingQuotaExceeded, text),
            false => fail(otherwise, text),
        }
    }

    /// Admits one more topic adding `partitions`.
    fn admit(&mut self, partitions: i64) -> Result<(), Failure> {
        if self.topics_left == 0 {
            let max = self.max_topics;
            return Err(self.refuse(
                ResponseError::InvalidRequest,
                format!(
                    "one request handles at most {max} topics; send this one in a further request"
                ),
            ));
        }
        if partitions > self.partitions_left {
            let max = self.max_partitions;
            return Err(self.refuse(
                ResponseError::InvalidPartitions,
                format!("one request adds at most {max} partitions in all; send this topic in a further request"),
            ));
        }
        self.topics_left -= 1;
        Ok(())
    }

    /// An admitted topic's partitions were added.
    fn spend(&mut self, partitions: i64) {
        self.partitions_left -= partitions.max(0);
    }
}

/// Why an admin operation on one topic or partition was refused.
#[derive(Debug)]
pub(super) struct Failure {
    pub error_code: i16,
    pub message: String,
}

pub(super) fn fail(error: ResponseError, text: impl Into<String>) -> Failure {
    Failure {
        error_code: code(error),
        message: text.into(),
    }
}

/// The Kafka error for a cluster write the controller did not make.
pub(super) fn submit_failure(error: SubmitError) -> Failure {
    match error {
        SubmitError::Controller(e) => Failure {
            error_code: e.kafka_error_code(),
            message: e.to_string(),
        },
        SubmitError::Invalid(m) => fail(ResponseError::InvalidRequest, m),
        SubmitError::Unavailable(m) => fail(ResponseError::RequestTimedOut, m),
        SubmitError::NotLeader { .. } => fail(
            ResponseError::NotController,
            "the controller moved while the request was forwarded",
        ),
        SubmitError::Rejected(m) => fail(ResponseError::UnknownServerError, m),
    }
}

/// Most partitions one request may name for per-partition controller decisions (reassignments,
/// elections); a larger one is refused as a whole, so one request cannot queue unbounded work
/// at the controller.
pub(super) const MAX_PARTITIONS_PER_REQUEST: usize = 10_000;

/// The pause before a per-partition decision is sent again after the controller moved.
const NOT_CONTROLLER_BACKOFF: Duration = Duration::from_millis(100);

/// Per-partition decisions of one request sent to the controller at once.
const CONCURRENT_DECISIONS: usize = 16;

/// One partition of a request, and what to ask the controller for it (or why nothing can be).
pub(super) type PartitionRequest = ((TopicName, i32), Result<ControllerRequest, Failure>);

/// Each partition's outcome, grouped by topic in request order.
pub(super) type PartitionOutcomes = Vec<(TopicName, Vec<(i32, Result<(), Failure>)>)>;

impl KafkaApis {
    /// Sends one controller request per partition, a few at a time, and waits for them all,
    /// up to the request's `timeout_ms` (at most the broker's request timeout). Partitions not
    /// decided by then, or left once the controller could not be reached, are answered
    /// REQUEST_TIMED_OUT without being sent.
    pub(super) async fn submit_per_partition(
        &self,
        requests: Vec<PartitionRequest>,
        timeout_ms: i32,
    ) -> PartitionOutcomes {
        let wait = Duration::from_millis(timeout_ms.max(0) as u64).min(self.config.request_timeout);
        let deadline = Instant::now() + wait;
        let unreachable = AtomicBool::new(false);
        let outcomes: Vec<((TopicName, i32), Result<(), Failure>)> = stream::iter(requests)
            .map(|(key, request)| self.submit_partition(key, request, deadline, &unreachable))
            .buffered(CONCURRENT_DECISIONS)
            .collect()
            .await;
        let decided = outcomes.iter().filter(|(_, o)| o.is_ok()).count();
        if decided > 0 {
            info!(
                decided,
                refused = outcomes.len() - decided,
                "per-partition controller decisions made"
            );
        }
        let mut grouped: PartitionOutcomes = Vec::new();
        for ((topic, partition), outcome) in outcomes {
            match grouped.last_mut() {
                Some((name, partitions)) if *name == topic => partitions.push((partition, outcome)),
                _ => grouped.push((topic, vec![(partition, outcome)])),
            }
        }
        grouped
    }

    async fn submit_partition(
        &self,
        (topic, partition): (TopicName, i32),
        request: Result<ControllerRequest, Failure>,
        deadline: Instant,
        unreachable: &AtomicBool,
    ) -> ((TopicName, i32), Result<(), Failure>) {
        let request = match request {
            Ok(request) => request,
            Err(failure) => return ((topic, partition), Err(failure)),
        };
        if unreachable.load(Ordering::Relaxed) || Instant::now() >= deadline {
            return (
                (topic, partition),
                Err(fail(
                    ResponseError::RequestTimedOut,
                    "not sent: the request timed out or the controller could not be reached",
                )),
            );
        }
        // A controller that moved is found again by the next submit, as Kafka's forwarding
        // retries NOT_CONTROLLER until the request's deadline.
        let submitted = async {
            loop {
                match self.submit(request.clone(), false).await {
                    Err(f) if f.error_code == code(ResponseError::NotController) => {
                        tokio::time::sleep(NOT_CONTROLLER_BACKOFF).await
                    }
                    outcome => break outcome,
                }
            }
        };
        let outcome = match tokio::time::timeout_at(deadline, submitted).await {
            Ok(outcome) => outcome,
            Err(_) => Err(fail(
                ResponseError::RequestTimedOut,
                "the request timed out before this partition was decided",
            )),
        };
        match &outcome {
            Ok(()) => debug!(topic = topic.as_str(), partition, ?request, "decided"),
            Err(f) if f.error_code == code(ResponseError::RequestTimedOut) => {
                unreachable.store(true, Ordering::Relaxed)
            }
            Err(_) => {}
        }
        ((topic, partition), outcome)
    }

    /// Sends a cluster write to the controller and waits until this broker's image has it.
    pub(super) async fn submit(
        &self,
        request: ControllerRequest,
        validate_only: bool,
    ) -> Result<(), Failure> {
        self.cluster
            .submit(ForwardRequest::Controller {
                request,
                validate_only,
            })
            .await
            .map(|_| ())
            .map_err(submit_failure)
    }

    /// The replication factor a topic gets: -1 takes the broker's default; it must fit the
    /// live brokers (the controller checks again, against its own image).
    fn replication_factor(&self, replication_factor: i16) -> Result<i16, Failure> {
        let live = self
            .topics()
            .image()
            .brokers()
            .filter(|b| !b.fenced)
            .count();
        let wanted = match replication_factor {
            -1 => self.config.default_replication_factor,
            n => n,
        };
        if wanted < 1 || wanted as usize > live {
            return Err(fail(
                ResponseError::InvalidReplicationFactor,
                format!(
                    "replication factor {wanted} must be between 1 and the {live} live brokers"
                ),
            ));
        }
        Ok(wanted)
    }

    fn budget(&self, throttling: bool) -> Budget {
        Budget {
            max_topics: self.config.max_topics_per_request,
            max_partitions: self.config.max_partitions_per_request,
            topics_left: self.config.max_topics_per_request,
            partitions_left: self.config.max_partitions_per_request,
            throttling,
        }
    }

    /// Creates a topic (or only checks that it could be created). `num_partitions` and
    /// `replication_factor` of -1 take the broker defaults.
    pub(super) async fn create_topic(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
        assignments: Option<Vec<Vec<i32>>>,
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
            assignments,
            validate_only,
        )
        .await
    }

    /// `create_topic` without the guard on internal topic names.
    pub(super) async fn create_topic_unchecked(
        &self,
        name: &str,
        num_partitions: i32,
        replication_factor: i16,
        configs: TopicConfigs,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<TopicMeta, Failure> {
        validate_topic_name(name).map_err(|m| fail(ResponseError::InvalidTopicException, m))?;
        let partitions = match (num_partitions, &assignments) {
            (_, Some(assigned)) => assigned.len() as i32,
            (-1, None) => self.config.default_partitions,
            (n, None) if (1..=MAX_PARTITIONS_PER_TOPIC).contains(&n) => n,
            (n, None) => {
                return Err(fail(
                    ResponseError::InvalidPartitions,
                    format!("partition count {n} is not between 1 and {MAX_PARTITIONS_PER_TOPIC}"),
                ))
            }
        };
        let replication_factor = match &assignments {
            Some(assigned) => assigned.first().map_or(0, |list| list.len() as i16),
            None => self.replication_factor(replication_factor)?,
        };
        if self.topics().get(name).is_some() {
            return Err(fail(
                ResponseError::TopicAlreadyExists,
                format!("topic '{name}' already exists"),
            ));
        }
        let topic_id = Uuid::new_v4();
        self.submit(
            ControllerRequest::CreateTopic {
                name: name.to_owned(),
                topic_id,
                partitions: if assignments.is_some() {
                    -1
                } else {
                    partitions
                },
                replication_factor: if assignments.is_some() {
                    -1
                } else {
                    replication_factor
                },
                configs: configs.to_map(),
                assignments,
            },
            validate_only,
        )
        .await?;
        if !validate_only {
            info!(
                topic = name,
                partitions, replication_factor, "created topic"
            );
        }
        Ok(TopicMeta {
            name: name.to_owned(),
            id: topic_id,
            partitions,
            replication_factor,
            configs,
        })
    }

    /// One topic of a CreateTopics request.
    async fn create_wanted_topic(
        &self,
        wanted: &CreatableTopic,
        validate_only: bool,
    ) -> Result<TopicMeta, Failure> {
        let configs = TopicConfigs::from_pairs(
            wanted
                .configs
                .iter()
                .map(|c| (c.name.as_str(), c.value.as_ref().map(|v| v.as_str()))),
        )
        .map_err(|e| fail(ResponseError::InvalidConfig, e.to_string()))?;
        let assignments = if wanted.assignments.is_empty() {
            None
        } else {
            Some(check_manual_assignment(
                wanted.assignments.iter().map(|a| {
                    (
                        a.partition_index,
                        a.broker_ids.iter().map(|b| b.0).collect(),
                    )
                }),
                wanted.num_partitions,
                wanted.replication_factor,
            )?)
        };
        self.create_topic(
            wanted.name.as_str(),
            wanted.num_partitions,
            wanted.replication_factor,
            configs,
            assignments,
            validate_only,
        )
        .await
    }

    pub(super) async fn create_topics(
        &self,
        request: CreateTopicsRequest,
        version: i16,
    ) -> CreateTopicsResponse {
        let mut budget = self.budget(version >= 6);
        let mut results = Vec::with_capacity(request.topics.len());
        for wanted in request.topics {
            let name = wanted.name.clone();
            let result = CreatableTopicResult::default().with_name(name.clone());
            let adds = if wanted.assignments.is_empty() {
                match wanted.num_partitions {
                    -1 => self.config.default_partitions,
                    n => n,
                }
            } else {
                wanted.assignments.len() as i32
            };
            let created = match budget.admit(i64::from(adds)) {
                Err(refused) => Err(refused),
                Ok(()) => {
                    self.create_wanted_topic(&wanted, request.validate_only)
                        .await
                }
            };
            results.push(match created {
                Ok(topic) => {
                    budget.spend(i64::from(topic.partitions));
                    result
                        .with_topic_id(topic.id)
                        .with_num_partitions(topic.partitions)
                        .with_replication_factor(topic.replication_factor)
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
                        }))
                }
                Err(failure) => result
                    .with_error_code(failure.error_code)
                    .with_error_message(message(failure.message))
                    .with_num_partitions(-1)
                    .with_replication_factor(-1),
            });
        }
        CreateTopicsResponse::default().with_topics(results)
    }

    pub(super) async fn delete_topics(
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
        let mut budget = self.budget(version >= 5);
        let mut responses = Vec::with_capacity(wanted.len());
        for (name, id) in wanted {
            let result = DeletableTopicResult::default()
                .with_name(name.clone())
                .with_topic_id(id);
            let deleted = match budget.admit(0) {
                Err(refused) => Err(refused),
                Ok(()) => {
                    self.delete_topic(name.as_ref().map(|n| n.as_str()), id)
                        .await
                }
            };
            responses.push(match deleted {
                Ok(topic) => result
                    .with_name(Some(TopicName(StrBytes::from_string(topic.name))))
                    .with_topic_id(topic.id),
                Err(failure) => result
                    .with_error_code(failure.error_code)
                    .with_error_message(message(failure.message)),
            });
        }
        DeleteTopicsResponse::default().with_responses(responses)
    }

    async fn delete_topic(&self, name: Option<&str>, id: Uuid) -> Result<TopicMeta, Failure> {
        let topic = match name {
            Some(name) => self.topics().get(name).ok_or_else(|| {
                fail(
                    ResponseError::UnknownTopicOrPartition,
                    format!("topic '{name}' does not exist"),
                )
            })?,
            None => self.topics().by_id(id).ok_or_else(|| {
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
        self.submit(ControllerRequest::DeleteTopic { topic_id: topic.id }, false)
            .await?;
        Ok(topic)
    }

    pub(super) async fn create_partitions(
        &self,
        request: CreatePartitionsRequest,
        version: i16,
    ) -> CreatePartitionsResponse {
        let mut budget = self.budget(version >= 3);
        let mut results = Vec::with_capacity(request.topics.len());
        for wanted in request.topics {
            let result = CreatePartitionsTopicResult::default().with_name(wanted.name.clone());
            let adds = self
                .topics()
                .get(wanted.name.as_str())
                .map_or(0, |t| i64::from(wanted.count) - i64::from(t.partitions));
            let outcome = if let Err(refused) = budget.admit(adds) {
                Err(refused)
            } else {
                self.add_partitions(
                    wanted.name.as_str(),
                    wanted.count,
                    wanted.assignments.as_ref().map(|assignments| {
                        assignments
                            .iter()
                            .map(|a| a.broker_ids.iter().map(|b| b.0).collect())
                            .collect()
                    }),
                    request.validate_only,
                )
                .await
            };
            results.push(match outcome {
                Ok(()) => {
                    budget.spend(adds);
                    result
                }
                Err(failure) => result
                    .with_error_code(failure.error_code)
                    .with_error_message(message(failure.message)),
            });
        }
        CreatePartitionsResponse::default().with_results(results)
    }

    async fn add_partitions(
        &self,
        name: &str,
        count: i32,
        assignments: Option<Vec<Vec<i32>>>,
        validate_only: bool,
    ) -> Result<(), Failure> {
        let topic = self.topics().get(name).ok_or_else(|| {
            fail(
                ResponseError::UnknownTopicOrPartition,
                format!("topic '{name}' does not exist"),
            )
        })?;
        if count > MAX_PARTITIONS_PER_TOPIC {
            return Err(fail(
                ResponseError::InvalidPartitions,
                format!("a topic has at most {MAX_PARTITIONS_PER_TOPIC} partitions, not {count}"),
            ));
        }
        self.submit(
            ControllerRequest::CreatePartitions {
                topic_id: topic.id,
                total: count,
                assignments,
            },
            validate_only,
        )
        .await?;
        if !validate_only {
            info!(
                topic = name,
                from = topic.partitions,
                to = count,
                "added partitions"
            );
        }
        Ok(())
    }
}

/// Explicit replica assignments: one list per partition, for partitions 0..n in order, and no
/// partition count or replication factor beside them. Which brokers they name is the
/// controller's to check.
fn check_manual_assignment(
    assignments: impl Iterator<Item = (i32, Vec<i32>)>,
    num_partitions: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, Failure> {
    if num_partitions != -1 || replication_factor != -1 {
        return Err(fail(
            ResponseError::InvalidRequest,
            "give either replica assignments or a partition count and replication factor",
        ));
    }
    let mut lists = Vec::new();
    for (expected, (index, brokers)) in assignments.enumerate() {
        if index != expected as i32 {
            return Err(fail(
                ResponseError::InvalidReplicaAssignment,
                format!("assignments must cover partitions 0..n in order, found {index}"),
            ));
        }
        lists.push(brokers);
    }
    Ok(lists)
}
