//! Metadata and DescribeCluster, answered from this broker's metadata image.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::metadata_response::{
    MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{
    BrokerId, DescribeClusterRequest, DescribeClusterResponse, MetadataRequest, MetadataResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;
use skiff_metadata::MetadataImage;
use uuid::Uuid;

use super::{code, KafkaApis};
use crate::group::storage::OFFSETS_TOPIC;
use crate::topics::TopicMeta;

/// Kafka's "authorized operations not requested" marker.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

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

fn topic_metadata(image: &MetadataImage, topic: &TopicMeta) -> MetadataResponseTopic {
    let fenced = |id: &i32| image.broker(*id).is_none_or(|b| b.fenced);
    MetadataResponseTopic::default()
        .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
        .with_topic_id(topic.id)
        .with_is_internal(topic.name == OFFSETS_TOPIC)
        .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
        .with_partitions(
            image
                .partitions_of(topic.id)
                .map(|(index, reg)| {
                    let ids = |list: &[i32]| list.iter().copied().map(BrokerId).collect();
                    MetadataResponsePartition::default()
                        .with_error_code(match reg.leader {
                            Some(_) => 0,
                            None => code(ResponseError::LeaderNotAvailable),
                        })
                        .with_partition_index(index)
                        .with_leader_id(BrokerId(reg.leader.unwrap_or(-1)))
                        .with_leader_epoch(reg.leader_epoch)
                        .with_replica_nodes(ids(&reg.replicas))
                        .with_isr_nodes(ids(&reg.isr))
                        .with_offline_replicas(
                            reg.replicas
                                .iter()
                                .filter(|id| fenced(id))
                                .copied()
                                .map(BrokerId)
                                .collect(),
                        )
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
