//! DescribeProducers (KIP-664): the idempotent producers a partition's leader keeps state for,
//! what `kafka-transactions describe-producers` shows.

use kafka_protocol::messages::describe_producers_response::{
    PartitionResponse, ProducerState, TopicResponse,
};
use kafka_protocol::messages::{DescribeProducersRequest, DescribeProducersResponse, ProducerId};

use super::fetch::leading_epoch;
use super::{code, KafkaApis, OPENING_WAIT};

impl KafkaApis {
    pub(super) async fn describe_producers(
        &self,
        request: DescribeProducersRequest,
    ) -> DescribeProducersResponse {
        let opening = tokio::time::Instant::now() + OPENING_WAIT;
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partition_indexes.len());
            for index in topic.partition_indexes {
                partitions.push(
                    self.partition_producers(topic.name.as_str(), index, opening)
                        .await,
                );
            }
            topics.push(
                TopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        DescribeProducersResponse::default().with_topics(topics)
    }

    /// One partition's producers, from its leader only (NOT_LEADER_OR_FOLLOWER elsewhere, as
    /// Kafka, so tools find the leader).
    async fn partition_producers(
        &self,
        topic: &str,
        index: i32,
        opening: tokio::time::Instant,
    ) -> PartitionResponse {
        let response = PartitionResponse::default().with_partition_index(index);
        let Some(partition) = self.hosted_partition(topic, index, opening).await else {
            return response.with_error_code(self.not_hosted_error(topic, index));
        };
        if let Err(error) = leading_epoch(&partition) {
            return response.with_error_code(error);
        }
        let producers = match self
            .replicas
            .log_io(&partition, |log| log.active_producers())
            .await
        {
            Ok(producers) => producers,
            Err(e) => {
                return response
                    .with_error_code(code(
                        kafka_protocol::error::ResponseError::KafkaStorageError,
                    ))
                    .with_error_message(super::message(e.to_string()))
            }
        };
        response.with_active_producers(
            producers
                .into_iter()
                .map(|p| {
                    ProducerState::default()
                        .with_producer_id(ProducerId(p.producer_id))
                        .with_producer_epoch(i32::from(p.epoch))
                        .with_last_sequence(p.last_sequence)
                        .with_last_timestamp(p.last_timestamp)
                        // No transactions: no coordinator epoch, no open transaction.
                        .with_coordinator_epoch(-1)
                        .with_current_txn_start_offset(-1)
                })
                .collect(),
        )
    }
}
