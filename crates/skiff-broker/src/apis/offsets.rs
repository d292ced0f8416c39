//! ListOffsets, OffsetForLeaderEpoch and DeleteRecords.

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_records_response::{
    DeleteRecordsPartitionResult, DeleteRecordsTopicResult,
};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
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
    pub(super) fn list_offsets(
        &self,
        request: ListOffsetsRequest,
        version: i16,
    ) -> ListOffsetsResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let response = ListOffsetsPartitionResponse::default()
                            .with_partition_index(p.partition_index)
                            .with_timestamp(-1)
                            .with_offset(-1);
                        let Some(partition) =
                            self.replicas.get(topic.name.as_str(), p.partition_index)
                        else {
                            return response.with_error_code(
                                self.not_hosted_error(topic.name.as_str(), p.partition_index),
                            );
                        };
                        let epoch = match leading_epoch(&partition) {
                            Ok(epoch) => epoch,
                            Err(error) => return response.with_error_code(error),
                        };
                        if let Some(error) = leader_epoch_error(p.current_leader_epoch, epoch) {
                            return response.with_error_code(error);
                        }
                        let log = partition.log();
                        let found = match p.timestamp {
                            LATEST => Ok(Some((log.log_end_offset(), -1))),
                            EARLIEST | EARLIEST_LOCAL => Ok(Some((log.log_start_offset(), -1))),
                            MAX_TIMESTAMP if version >= 7 => log.max_timestamp_offset(),
                            ts if ts >= 0 => log.offset_for_timestamp(ts),
                            _ => {
                                return response
                                    .with_error_code(code(ResponseError::InvalidRequest))
                            }
                        };
                        match found {
                            // The epoch that wrote the offset (v0-v3 responses have no field).
                            Ok(Some((offset, timestamp))) => response
                                .with_offset(offset)
                                .with_timestamp(timestamp)
                                .with_leader_epoch(if version >= 4 {
                                    log.epoch_of(offset, epoch)
                                } else {
                                    -1
                                }),
                            Ok(None) => response,
                            Err(e) => response.with_error_code(log_error_code(&e)),
                        }
                    })
                    .collect();
                ListOffsetsTopicResponse::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        ListOffsetsResponse::default().with_topics(topics)
    }

    /// Where the requested epoch ended, from the log's leader epochs (Kafka's `endOffsetFor`):
    /// consumers check their position with it after a leader change (KIP-320).
    pub(super) fn offset_for_leader_epoch(
        &self,
        request: OffsetForLeaderEpochRequest,
    ) -> OffsetForLeaderEpochResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let response = EpochEndOffset::default()
                            .with_partition(p.partition)
                            .with_leader_epoch(-1)
                            .with_end_offset(-1);
                        let Some(partition) = self.replicas.get(topic.topic.as_str(), p.partition)
                        else {
                            return response.with_error_code(
                                self.not_hosted_error(topic.topic.as_str(), p.partition),
                            );
                        };
                        let epoch = match leading_epoch(&partition) {
                            Ok(epoch) => epoch,
                            Err(error) => return response.with_error_code(error),
                        };
                        if let Some(error) = leader_epoch_error(p.current_leader_epoch, epoch) {
                            return response.with_error_code(error);
                        }
                        let end = partition.log().end_offset_for_epoch(p.leader_epoch, epoch);
                        response
                            .with_leader_epoch(end.epoch)
                            .with_end_offset(end.end_offset)
                    })
                    .collect();
                OffsetForLeaderTopicResult::default()
                    .with_topic(topic.topic)
                    .with_partitions(partitions)
            })
            .collect();
        OffsetForLeaderEpochResponse::default().with_topics(topics)
    }

    pub(super) fn delete_records(&self, request: DeleteRecordsRequest) -> DeleteRecordsResponse {
        let topics = request
            .topics
            .into_iter()
            .map(|topic| {
                let partitions = topic
                    .partitions
                    .into_iter()
                    .map(|p| {
                        let response = DeleteRecordsPartitionResult::default()
                            .with_partition_index(p.partition_index)
                            .with_low_watermark(-1);
                        let Some(partition) =
                            self.replicas.get(topic.name.as_str(), p.partition_index)
                        else {
                            return response.with_error_code(
                                self.not_hosted_error(topic.name.as_str(), p.partition_index),
                            );
                        };
                        if let Err(error) = leading_epoch(&partition) {
                            return response.with_error_code(error);
                        }
                        let mut log = partition.log();
                        // -1 means "up to the high watermark".
                        let offset = if p.offset == -1 {
                            log.log_end_offset()
                        } else {
                            p.offset
                        };
                        if offset < 0 {
                            return response.with_error_code(code(ResponseError::OffsetOutOfRange));
                        }
                        match log.delete_records_before(offset) {
                            Ok(low_watermark) => response.with_low_watermark(low_watermark),
                            Err(e) => response.with_error_code(log_error_code(&e)),
                        }
                    })
                    .collect();
                DeleteRecordsTopicResult::default()
                    .with_name(topic.name)
                    .with_partitions(partitions)
            })
            .collect();
        DeleteRecordsResponse::default().with_topics(topics)
    }
}
