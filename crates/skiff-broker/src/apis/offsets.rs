//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords; their log reads and writes run on the
//! blocking pool.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_request::DeleteRecordsPartition;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_request::ListOffsetsPartition;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_for_leader_epoch_request::OffsetForLeaderPartition;
use kafka_protocol::messages::offset_for_leader_epoch_response::{
    EpochEndOffset, OffsetForLeaderTopicResult,
};
use kafka_protocol::messages::{
    DeleteRecordsRequest, DeleteRecordsResponse, ListOffsetsRequest, ListOffsetsResponse,
    OffsetForLeaderEpochRequest, OffsetForLeaderEpochResponse,
};

use super::fetch::{leader_epoch_error, leading_epoch};
use super::{code, log_error_code, KafkaApis};

const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;
const EARLIEST_LOCAL: i64 = -4;

impl KafkaApis {
    pub(super) async fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let opening = Self::opening_deadline();
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in topic.partitions {
                partitions.push(
                    self.list_partition_offset(topic.name.as_str(), p, version, opening)
                        .await,
                );
            }
            topics.push(
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        ListOffsetsResponse::default().with_topics(topics)
    }

    async fn list_partition_offset(
        &self,
        topic: &str,
        p: ListOffsetsPartition,
        version: i16,
        opening: tokio::time::Instant,
    ) -> ListOffsetsPartitionResponse {
        let response = ListOffsetsPartitionResponse::default()
            .with_partition_index(p.partition_index)
            .with_timestamp(-1)
            .with_offset(-1);
        let Some(partition) = self
            .hosted_partition(topic, p.partition_index, opening)
            .await
        else {
            return response.with_error_code(self.not_hosted_error(topic, p.partition_index));
        };
        let epoch = match leading_epoch(&partition) {
            Ok(epoch) => epoch,
            Err(error) => return response.with_error_code(error),
        };
        if let Some(error) = leader_epoch_error(p.current_leader_epoch, epoch) {
            return response.with_error_code(error);
        }
        let timestamp = p.timestamp;
        let known = match timestamp {
            LATEST | EARLIEST | EARLIEST_LOCAL => true,
            MAX_TIMESTAMP => version >= 7,
            ts => ts >= 0,
        };
        if !known {
            return response.with_error_code(code(ResponseError::InvalidRequest));
        }
        // Timestamp lookups read record batches from the segment files.
        let held = partition.clone();
        let found = self
            .replicas
            .log_io(&partition, move |log| {
                let found = match timestamp {
                    LATEST => Ok(Some((held.high_watermark(), -1))),
                    EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                    MAX_TIMESTAMP => log.max_timestamp_offset(),
                    ts => log.offset_for_timestamp(ts),
                };
                // The epoch that wrote the offset found (v0-v3 responses have no field).
                found.map(|found| {
                    found.map(|(offset, timestamp)| {
                        let leader_epoch = if version >= 4 {
                            log.epoch_of(offset, epoch)
                        } else {
                            -1
                        };
                        (offset, timestamp, leader_epoch)
                    })
                })
            })
            .await;
        match found {
            Ok(Ok(Some((offset, timestamp, leader_epoch)))) => response
                .with_offset(offset)
                .with_timestamp(timestamp)
                .with_leader_epoch(leader_epoch),
            Ok(Ok(None)) => response,
            Ok(Err(e)) => response.with_error_code(log_error_code(&e)),
            Err(_) => response.with_error_code(code(ResponseError::KafkaStorageError)),
        }
    }

    /// Where the requested epoch ended, from the log's leader epochs (Kafka's `endOffsetFor`):
    /// consumers check their position with it after a leader change (KIP-320).
    pub(super) async fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let opening = Self::opening_deadline();
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in topic.partitions {
                partitions.push(
                    self.epoch_end_offset(topic.topic.as_str(), p, opening)
                        .await,
                );
            }
            topics.push(
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic)
                    .with_partitions(partitions),
            );
        }
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }

    async fn epoch_end_offset(
        &self,
        topic: &str,
        p: OffsetForLeaderPartition,
        opening: tokio::time::Instant,
    ) -> EpochEndOffset {
        let response = EpochEndOffset::default()
            .with_partition(p.partition)
            .with_leader_epoch(-1)
            .with_end_offset(-1);
        let Some(partition) = self.hosted_partition(topic, p.partition, opening).await else {
            return response.with_error_code(self.not_hosted_error(topic, p.partition));
        };
        let epoch = match leading_epoch(&partition) {
            Ok(epoch) => epoch,
            Err(error) => return response.with_error_code(error),
        };
        if let Some(error) = leader_epoch_error(p.current_leader_epoch, epoch) {
            return response.with_error_code(error);
        }
        let requested = p.leader_epoch;
        match self
            .replicas
            .log_io(&partition, move |log| {
                log.end_offset_for_epoch(requested, epoch)
            })
            .await
        {
            Ok(end) => response
                .with_leader_epoch(end.epoch)
                .with_end_offset(end.end_offset),
            Err(_) => response.with_error_code(code(ResponseError::KafkaStorageError)),
        }
    }

    pub(super) async fn delete_records(
        &self,
        request: DeleteRecordsRequest,
    ) -> DeleteRecordsResponse {
        let opening = Self::opening_deadline();
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in topic.partitions {
                partitions.push(
                    self.delete_partition_records(topic.name.as_str(), p, opening)
                        .await,
                );
            }
            topics.push(
                DeleteRecordsTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions),
            );
        }
        DeleteRecordsResponse::default().with_topics(topics)
    }

    async fn delete_partition_records(
        &self,
        topic: &str,
        p: DeleteRecordsPartition,
        opening: tokio::time::Instant,
    ) -> DeleteRecordsPartitionResult {
        let response = DeleteRecordsPartitionResult::default()
            .with_partition_index(p.partition_index)
            .with_low_watermark(-1);
        let Some(partition) = self
            .hosted_partition(topic, p.partition_index, opening)
            .await
        else {
            return response.with_error_code(self.not_hosted_error(topic, p.partition_index));
        };
        if let Err(error) = leading_epoch(&partition) {
            return response.with_error_code(error);
        }
        let requested = p.offset;
        let held = partition.clone();
        let deleted = self
            .replicas
            .log_io(&partition, move |mut log| {
                // -1 means "up to the high watermark"; uncommitted records are not deleted.
                let high_watermark = held.high_watermark();
                let offset = if requested == -1 {
                    high_watermark
                } else {
                    requested
                };
                if offset < 0 || offset > high_watermark {
                    return Err(code(ResponseError::OffsetOutOfRange));
                }
                log.delete_records_before(offset)
                    .map_err(|e| log_error_code(&e))
            })
            .await;
        match deleted {
            Ok(Ok(low_watermark)) => response.with_low_watermark(low_watermark),
            Ok(Err(error)) => response.with_error_code(error),
            Err(_) => response.with_error_code(code(ResponseError::KafkaStorageError)),
        }
    }
}
