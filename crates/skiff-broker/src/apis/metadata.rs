//! Metadata and DescribeCluster: this broker is every partition's leader and the controller.

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
use uuid::Uuid;

use super::{code, KafkaApis, LEADER_EPOCH};
use crate::group::storage::OFFSETS_TOPIC;
use crate::topics::TopicMeta;

/// Kafka's "authorized operations not requested" marker.
const OPERATIONS_NOT_REQUESTED: i32 = i32::MIN;

impl KafkaApis {
    fn node_id(&self) -> BrokerId {
        BrokerId(self.config.node_id)
    }

    fn topic_metadata(&self, topic: &TopicMeta) -> MetadataResponseTopic {
        let me = vec![self.node_id()];
        MetadataResponseTopic::default()
            .with_name(Some(TopicName(StrBytes::from_string(topic.name.clone()))))
            .with_topic_id(topic.id)
            .with_is_internal(topic.name == OFFSETS_TOPIC)
            .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
            .with_partitions(
                (0..topic.partitions)
                    .map(|index| {
                        MetadataResponsePartition::default()
                            .with_partition_index(index)
                            .with_leader_id(self.node_id())
                            .with_leader_epoch(LEADER_EPOCH)
                            .with_replica_nodes(me.clone())
                            .with_isr_nodes(me.clone())
                    })
                    .collect(),
            )
    }

    pub(super) fn metadata(&self, request: MetadataRequest, version: i16) -> MetadataResponse {
        // v0: an empty list means all topics; v1+: null means all, empty means none.
        let requested = match request.topics {
            Some(topics) if !(version == 0 && topics.is_empty()) => Some(topics),
            Some(_) | None => None,
        };
        let allow_auto_create =
            self.config.auto_create_topics && (version < 4 || request.allow_auto_topic_creation);
        let topics = match requested {
            None => self
                .topics()
                .all()
                .map(|t| self.topic_metadata(t))
                .collect(),
            Some(requested) => requested
                .into_iter()
                .map(|wanted| self.metadata_for(wanted.name, wanted.topic_id, allow_auto_create))
                .collect(),
        };
        let (host, port) = &self.config.advertised_kafka_addr;
        MetadataResponse::default()
            .with_brokers(vec![MetadataResponseBroker::default()
                .with_node_id(self.node_id())
                .with_host(StrBytes::from_string(host.clone()))
                .with_port(i32::from(*port))
                .with_rack(self.config.rack.clone().map(StrBytes::from_string))])
            .with_cluster_id(Some(StrBytes::from_string(
                self.topics().cluster_id().to_string(),
            )))
            .with_controller_id(self.node_id())
            .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED)
            .with_topics(topics)
    }

    fn metadata_for(
        &self,
        name: Option<TopicName>,
        topic_id: Uuid,
        allow_auto_create: bool,
    ) -> MetadataResponseTopic {
        let Some(name) = name else {
            return match self.topics().by_id(topic_id) {
                Some(topic) => self.topic_metadata(topic),
                None => MetadataResponseTopic::default()
                    .with_topic_id(topic_id)
                    .with_error_code(code(ResponseError::UnknownTopicId)),
            };
        };
        if let Some(topic) = self.topics().get(name.as_str()) {
            return self.topic_metadata(topic);
        }
        let unknown = |error: ResponseError| {
            MetadataResponseTopic::default()
                .with_name(Some(name.clone()))
                .with_error_code(code(error))
                .with_topic_authorized_operations(OPERATIONS_NOT_REQUESTED)
        };
        if !allow_auto_create {
            return unknown(ResponseError::UnknownTopicOrPartition);
        }
        match self.create_topic(name.as_str(), -1, -1, Default::default(), false) {
            Ok(topic) => self.topic_metadata(&topic),
            Err(failure) if failure.error_code == code(ResponseError::TopicAlreadyExists) => {
                match self.topics().get(name.as_str()) {
                    Some(topic) => self.topic_metadata(topic),
                    None => unknown(ResponseError::UnknownTopicOrPartition),
                }
            }
            Err(failure) if failure.error_code == code(ResponseError::InvalidTopicException) => {
                unknown(ResponseError::InvalidTopicException)
            }
            Err(_) => unknown(ResponseError::LeaderNotAvailable),
        }
    }

    pub(super) fn describe_cluster(
        &self,
        _request: DescribeClusterRequest,
    ) -> DescribeClusterResponse {
        let (host, port) = &self.config.advertised_kafka_addr;
        DescribeClusterResponse::default()
            .with_cluster_id(StrBytes::from_string(
                self.topics().cluster_id().to_string(),
            ))
            .with_controller_id(self.node_id())
            .with_cluster_authorized_operations(OPERATIONS_NOT_REQUESTED)
            .with_brokers(vec![DescribeClusterBroker::default()
                .with_broker_id(self.node_id())
                .with_host(StrBytes::from_string(host.clone()))
                .with_port(i32::from(*port))
                .with_rack(self.config.rack.clone().map(StrBytes::from_string))])
    }
}
