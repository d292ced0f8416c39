//! Metadata, DescribeTopicPartitions and DescribeCluster, answered from this broker's metadata
//! image.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::describe_topic_partitions_response::{
    self, DescribeTopicPartitionsResponsePartition, DescribeTopicPartitionsResponseTopic,
};
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, DescribeTopicPartitionsRequest,
    DescribeTopicPartitionsResponse, MetadataRequest, MetadataResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use skiff_metadata::{MetadataImage, PartitionRegistration};
use uuid::Uuid;

use super::{code, KafkaApis};
use crate::group::storage::OFFSETS_TOPIC;
use crate::topics::TopicMeta;

/// Kafka's "authorized operations not requested" marker.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

/// Without an authorizer every topic operation is allowed, which Kafka reports as the bits of
/// READ (3), WRITE (4), CREATE (5), DELETE (6), ALTER (7), DESCRIBE (8), DESCRIBE_CONFIGS (10)
/// and ALTER_CONFIGS (11).
const ALL_TOPIC_OPERATIONS: i32 =
    1 << 3 | 1 << 4 | 1 << 5 | 1 << 6 | 1 << 7 | 1 << 8 | 1 << 10 | 1 << 11;

/// Kafka's `max.request.partition.size.limit`: most partitions one DescribeTopicPartitions
/// response describes.
const MAX_DESCRIBED_PARTITIONS: i32 = 2000;

/// Splits a registered `host:port` endpoint; IPv6 hosts keep their brackets off.
fn split_endpoint(endpoint: &str) -> Option<(String, i32)> {
    let (host, port) = endpoint.rsplit_once(':')?;
    let host = host.trim_start_matches('[').trim_end_matches(']');
    Some((host.to_owned(), port.parse().ok()?))
}

/// The brokers clients may talk to: registered and not fenced.
fn live_brokers(image: &MetadataImage) -> Vec<(i32, String, i32, Option<String>)> {
    image
        .brokers()
        .filter(|b| !b.fenced)
        .filter_map(|b| {
            let (host, port) = split_endpoint(b.endpoints.first()?)?;
            Some((b.id, host, port, b.rack.clone()))
        })
        .collect()
}

pub(super) fn broker_ids(ids: &[i32]) -> Vec<BrokerId> {
    ids.iter().copied().map(BrokerId).collect()
}

/// Replicas on brokers that are fenced or gone, which Kafka reports as offline.
fn offline_replicas(image: &MetadataImage, reg: &PartitionRegistration) -> Vec<BrokerId> {
    reg.replicas
        .iter()
        .filter(|id| image.broker(**id).is_none_or(|b| b.fenced))
        .copied()
        .map(BrokerId)
        .collect()
}

/// A partition's error in topic descriptions: LEADER_NOT_AVAILABLE while it is offline.
fn leader_error(reg: &PartitionRegistration) -> i16 {
    match reg.leader {
        Some(_) => 0,
        None => code(ResponseError::LeaderNotAvailable),
    }
}

fn topic_metadata(image: &MetadataImage, topic: &TopicMeta) -> MetadataResponseTopic {
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
        .with_partitions(
            image
                .partitions_of(topic.id)
                .map(|(index, reg)| {
                    MetadataResponsePartition::default()
                        .with_error_code(leader_error(reg))
                        .with_partition_index(index)
                        .with_leader_id(BrokerId(reg.leader.unwrap_or(-1)))
                        .with_leader_epoch(reg.leader_epoch)
                        .with_replica_nodes(broker_ids(&reg.replicas))
                        .with_isr_nodes(broker_ids(&reg.isr))
                        .with_offline_replicas(offline_replicas(image, reg))
                })
                .collect(),
        )
}

impl KafkaApis {
    /// The current controller as a broker id, -1 while none is known.
    fn controller_id(&self) -> BrokerId {
        BrokerId(
            self.cluster
                .leader()
                .and_then(|id| i32::try_from(id).ok())
                .unwrap_or(-1),
        )
    }

    fn cluster_id(&self) -> String {
        self.cluster.cluster_id().unwrap_or_default()
    }

    pub(super) async fn metadata(
        &self,
        request: MetadataRequest,
        version: i16,
    ) -> MetadataResponse {
        // v0: an empty list means all topics; v1+: null means all, empty means none.
        let requested = match request.topics {
            Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
            Some(_) | None => None,
        };
        let allow_auto_create =
            self.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
        let topics = match requested {
            None => {
                let topics = self.topics();
                topics
                    .all()
                    .map(|t| topic_metadata(topics.image(), &t))
                    .collect()
            }
            Some(requested) => {
                let mut answers = Vec::with_capacity(requested.len());
                let mut creations_left = self.config.max_topics_auto_created_per_request;
                for wanted in requested {
                    answers.push(
                        self.metadata_for(
                            wanted.name,
                            wanted.topic_id,
                            allow_auto_create.then_some(&mut creations_left),
                        )
                        .await,
                    );
                }
                answers
            }
        };
        let image = self.cluster.image();
        MetadataResponse::default()
            .with_brokers(
                live_brokers(&image)
                    .into_iter()
                    .map(|(id, host, port, rack)| {
                        MetadataResponseBroker::default()
                            .with_node_id(BrokerId(id))
                            .with_host(StrBytes::from_string(host))
                            .with_port(port)
                            .with_rack(rack.map(StrBytes::from_string))
                    })
                    .collect(),
            )
            .with_cluster_id(Some(StrBytes::from_string(self.cluster_id())))
            .with_controller_id(self.controller_id())
            .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED)
            .with_topics(topics)
    }

    /// One topic's answer. `creations_left` is None when the request may not auto-create
    /// topics, else how many more it may create.
    async fn metadata_for(
        &self,
        name: Option<TopicName>,
        topic_id: Uuid,
        creations_left: Option<&mut usize>,
    ) -> MetadataResponseTopic {
        let Some(name) = name else {
            let topics = self.topics();
            return match topics.by_id(topic_id) {
                Some(topic) => topic_metadata(topics.image(), &topic),
                None => MetadataResponseTopic::default()
                    .with_topic_id(topic_id)
                    .with_error_code(code(ResponseError::UnknownTopicId)),
            };
        };
        {
            let topics = self.topics();
            if let Some(topic) = topics.get(name.as_str()) {
                return topic_metadata(topics.image(), &topic);
            }
        }
        let unknown = |error: ResponseError| {
            MetadataResponseTopic::default()
                .with_name(Some(name.clone()))
                .with_error_code(code(error))
                .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
        };
        let Some(creations_left) = creations_left else {
            return unknown(ResponseError::UnknownTopicOrPartition);
        };
        // Past the request's budget the topic is created by the client's next Metadata
        // request, which it sends on LEADER_NOT_AVAILABLE as after any auto-creation.
        if *creations_left == 0 {
            return unknown(ResponseError::LeaderNotAvailable);
        }
        *creations_left -= 1;
        let created = self
            .create_topic(name.as_str(), -1, -1, Default::default(), None, false)
            .await;
        match created {
            Err(failure) if failure.error_code == code(ResponseError::InvalidTopicException) => {
                unknown(ResponseError::InvalidTopicException)
            }
            Ok(_) | Err(_) => {
                let topics = self.topics();
                match topics.get(name.as_str()) {
                    Some(topic) => topic_metadata(topics.image(), &topic),
                    None => unknown(ResponseError::LeaderNotAvailable),
                }
            }
        }
    }

    /// KIP-966's paginated topic description (the Java admin's describeTopics from 3.8): the
    /// named topics, or every topic when none are named, in name order from the cursor, at most
    /// `response_partition_limit` partitions (and Kafka's 2000) per response, with the cursor
    /// to continue from when more remain. A named topic that does not exist gets
    /// UNKNOWN_TOPIC_OR_PARTITION.
    pub(super) fn describe_topic_partitions(
        &self,
        request: DescribeTopicPartitionsRequest,
    ) -> DescribeTopicPartitionsResponse {
        let image = self.cluster.image();
        let all = request.topics.is_empty();
        let (cursor_topic, cursor_partition) = match &request.cursor {
            Some(cursor) => (
                cursor.topic_name.as_str().to_owned(),
                cursor.partition_index,
            ),
            None => (String::new(), 0),
        };
        let mut names: Vec<String> = if all {
            image.topics().map(|t| t.name.clone()).collect()
        } else {
            request.topics.iter().map(|t| t.name.to_string()).collect()
        };
        names.retain(|name| *name >= cursor_topic);
        names.sort();
        names.dedup();
        // As Kafka: a cursor with a negative partition, or one not naming a requested topic,
        // answers every requested topic INVALID_REQUEST.
        if cursor_partition < 0
            || (!all && request.cursor.is_some() && names.first() != Some(&cursor_topic))
        {
            return DescribeTopicPartitionsResponse::default().with_topics(
                request
                    .topics
                    .into_iter()
                    .map(|t| {
                        DescribeTopicPartitionsResponseTopic::default()
                            .with_error_code(code(ResponseError::InvalidRequest))
                            .with_name(Some(t.name))
                            .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
                    })
                    .collect(),
            );
        }
        let mut budget = request
            .response_partition_limit
            .clamp(1, MAX_DESCRIBED_PARTITIONS) as usize;
        let mut topics = Vec::new();
        let mut next_cursor = None;
        for name in names {
            let Some(topic) = image.topic_by_name(&name) else {
                if !all {
                    topics.push(
                        DescribeTopicPartitionsResponseTopic::default()
                            .with_error_code(code(ResponseError::UnknownTopicOrPartition))
                            .with_name(Some(TopicName(StrBytes::from_string(name))))
                            .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED),
                    );
                }
                continue;
            };
            // The cursor's partition applies to its own topic only, which may be gone.
            let first_partition = if name == cursor_topic {
                cursor_partition
            } else {
                0
            };
            if budget == 0 {
                next_cursor = Some(
                    describe_topic_partitions_response::Cursor::default()
                        .with_topic_name(TopicName(StrBytes::from_string(name)))
                        .with_partition_index(0),
                );
                break;
            }
            let mut partitions = Vec::new();
            for (index, reg) in image.partitions_of(topic.topic_id) {
                if index < first_partition {
                    continue;
                }
                if budget == 0 {
                    next_cursor = Some(
                        describe_topic_partitions_response::Cursor::default()
                            .with_topic_name(TopicName(StrBytes::from_string(name.clone())))
                            .with_partition_index(index),
                    );
                    break;
                }
                budget -= 1;
                partitions.push(
                    DescribeTopicPartitionsResponsePartition::default()
                        .with_error_code(leader_error(reg))
                        .with_partition_index(index)
                        .with_leader_id(BrokerId(reg.leader.unwrap_or(-1)))
                        .with_leader_epoch(reg.leader_epoch)
                        .with_replica_nodes(broker_ids(&reg.replicas))
                        .with_isr_nodes(broker_ids(&reg.isr))
                        // No eligible leader replicas (KIP-966's ELR) are kept: empty lists,
                        // not null, which the Java admin client reads without a check.
                        .with_eligible_leader_replicas(Some(Vec::new()))
                        .with_last_known_elr(Some(Vec::new()))
                        .with_offline_replicas(offline_replicas(&image, reg)),
                );
            }
            topics.push(
                DescribeTopicPartitionsResponseTopic::default()
                    .with_name(Some(TopicName(StrBytes::from_string(name.clone()))))
                    .with_topic_id(topic.topic_id)
                    .with_is_internal(name == OFFSETS_TOPIC)
                    .with_partitions(partitions)
                    .with_topic_authorized_operations(ALL_TOPIC_OPERATIONS),
            );
            if next_cursor.is_some() {
                break;
            }
        }
        DescribeTopicPartitionsResponse::default()
            .with_topics(topics)
            .with_next_cursor(next_cursor)
    }

    pub(super) fn describe_cluster(
        &self,
        _request: DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        let image = self.cluster.image();
        DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(self.cluster_id()))
            .with_controller_id(self.controller_id())
            .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED)
            .with_brokers(
                live_brokers(&image)
                    .into_iter()
                    .map(|(id, host, port, rack)| {
                        DescribeClusterBroker::default()
                            .with_broker_id(BrokerId(id))
                            .with_host(StrBytes::from_string(host))
                            .with_port(port)
                            .with_rack(rack.map(StrBytes::from_string))
                    })
                    .collect(),
            )
    }
}
