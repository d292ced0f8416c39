//! Fetch: whole batches from the log, long-polling until `min_bytes` are there or `max_wait_ms`
//! passes, woken by appends, high watermark rises and leadership changes of the requested
//! partitions. Reading runs on the blocking pool.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::{FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use tokio::time::Instant;

use super::{code, log_error_code, KafkaApis};
use crate::replica_manager::{LongPollWait, Partition};

/// The error for a request naming leader epoch `requested` of a partition at epoch `current`
/// (-1 means the client does not know the epoch).
pub(super) fn leader_epoch_error(requested: i32, current: i32) -> Option<i16> {
    match requested {
        e if e < 0 || e == current => None,
        e if e > current => Some(code(ResponseError::UnknownLeaderEpoch)),
        _ => Some(code(ResponseError::FencedLeaderEpoch)),
    }
}

/// The current leader epoch of a partition this broker leads, or the error for one it does not.
pub(super) fn leading_epoch(partition: &Partition) -> Result<i32, i16> {
    partition
        .leader_epoch_if_leading()
        .ok_or_else(|| code(ResponseError::NotLeaderOrFollower))
}

impl KafkaApis {
    pub(super) async fn fetch(&self, request: FetchRequest, version: i16) -> FetchResponse {
        let max_wait = Duration::from_millis(request.max_wait_ms.max(0) as u64)
            .min(self.config.request_timeout / 2);
        let deadline = Instant::now() + max_wait;
        let min_bytes = request.min_bytes.max(0) as usize;
        let requested: usize = request.topics.iter().map(|t| t.partitions.len()).sum();
        loop {
            let watched = self.requested_partitions(&request, version);
            let changes = LongPollWait::of(&watched);
            let (response, bytes, has_error) =
                self.read_for_fetch(&request, version, deadline).await;
            if bytes >= min_bytes || has_error || Instant::now() >= deadline {
                return response;
            }
            // A partition whose log opened during the read is not watched yet: watch it too.
            if watched.len() < requested
                && self.requested_partitions(&request, version).len() != watched.len()
            {
                continue;
            }
            if tokio::time::timeout_at(deadline, changes.wait())
                .await
                .is_err()
            {
                return self.read_for_fetch(&request, version, deadline).await.0;
            }
        }
    }

    /// The requested partitions served here, whose changes end the long poll.
    fn requested_partitions(&self, request: &FetchRequest, version: i16) -> Vec<Arc<Partition>> {
        request
            .topics
            .iter()
            .flat_map(|topic| {
                topic.partitions.iter().filter_map(move |p| {
                    if version >= 13 {
                        self.replicas.get_by_id(topic.topic_id, p.partition)
                    } else {
                        self.replicas.get(topic.topic.as_str(), p.partition)
                    }
                })
            })
            .collect()
    }

    /// One pass over the requested partitions: the response, its record bytes and whether any
    /// partition failed (which ends a long poll at once, as Kafka does). Each partition's index
    /// lookup and file reads run on the blocking pool, the bytes read after its log is released.
    /// A partition whose log is still being opened is waited for until the long poll's
    /// `deadline`.
    async fn read_for_fetch(
        &self,
        request: &FetchRequest,
        version: i16,
        deadline: Instant,
    ) -> (FetchResponse, usize, bool) {
        let mut remaining = (request.max_bytes.max(0) as usize).min(self.config.max_fetch_bytes);
        let mut total = 0usize;
        let mut has_error = false;
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in &request.topics {
            // v13+ names topics by id only.
            let name = if version >= 13 {
                self.topics().by_id(topic.topic_id).map(|t| t.name.clone())
            } else {
                Some(topic.topic.as_str().to_string())
            };
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let data = PartitionData::default().with_partition_index(p.partition);
                let Some(name) = &name else {
                    has_error = true;
                    partitions.push(data.with_error_code(code(if version >= 13 {
                        ResponseError::UnknownTopicId
                    } else {
                        ResponseError::UnknownTopicOrPartition
                    })));
                    continue;
                };
                let Some(partition) = self.hosted_partition(name, p.partition, deadline).await
                else {
                    has_error = true;
                    partitions.push(data.with_error_code(self.not_hosted_error(name, p.partition)));
                    continue;
                };
                let epoch = match leading_epoch(&partition) {
                    Ok(epoch) => epoch,
                    Err(error) => {
                        has_error = true;
                        partitions.push(data.with_error_code(error));
                        continue;
                    }
                };
                if let Some(error) = leader_epoch_error(p.current_leader_epoch, epoch) {
                    has_error = true;
                    partitions.push(data.with_error_code(error));
                    continue;
                }
                // As Kafka: a topic whose batches the broker stores as zstd is not served to a
                // fetch older than v10, which predates zstd (KIP-110).
                if version < 10
                    && partition.state().configs.required_codec()
                        == Some(skiff_log::batch::codec::ZSTD)
                {
                    has_error = true;
                    partitions.push(
                        data.with_error_code(code(ResponseError::UnsupportedCompressionType)),
                    );
                    continue;
                }
                let limit = (p.partition_max_bytes.max(0) as usize).min(remaining);
                let (fetch_offset, first) = (p.fetch_offset, total == 0);
                let held = partition.clone();
                let read = self
                    .replicas
                    .log_io(&partition, move |log| {
                        let high_watermark = held.high_watermark();
                        let log_start_offset = log.log_start_offset();
                        // Consumers read committed records only: below the high watermark.
                        let read = if held.leading_epoch() == Some(epoch) {
                            log.read(fetch_offset, limit, high_watermark, first)
                                .map_err(|e| log_error_code(&e))
                        } else {
                            Err(code(ResponseError::NotLeaderOrFollower))
                        };
                        drop(log);
                        let records = read.and_then(|info| {
                            let mut buf = Vec::with_capacity(info.total_len);
                            for slice in &info.slices {
                                slice
                                    .read_into(&mut buf)
                                    .map_err(|_| code(ResponseError::KafkaStorageError))?;
                            }
                            Ok(Bytes::from(buf))
                        });
                        (records, high_watermark, log_start_offset)
                    })
                    .await;
                let Ok((records, high_watermark, log_start_offset)) = read else {
                    has_error = true;
                    partitions.push(data.with_error_code(code(ResponseError::KafkaStorageError)));
                    continue;
                };
                let data = data
                    .with_high_watermark(high_watermark)
                    .with_last_stable_offset(high_watermark)
                    .with_log_start_offset(log_start_offset)
                    .with_aborted_transactions(Some(Vec::new()));
                partitions.push(match records {
                    Ok(records) => {
                        total += records.len();
                        remaining = remaining.saturating_sub(records.len());
                        metrics::counter!("skiff_bytes_out_total", "topic" => name.clone())
                            .increment(records.len() as u64);
                        data.with_records(Some(records))
                    }
                    Err(error) => {
                        has_error = true;
                        data.with_error_code(error).with_records(Some(Bytes::new()))
                    }
                });
            }
            topics.push(
                FetchableTopicResponse::default()
                    .with_topic(TopicName(StrBytes::from_string(
                        name.unwrap_or_else(|| topic.topic.as_str().to_string()),
                    )))
                    .with_topic_id(topic.topic_id)
                    .with_partitions(partitions),
            );
        }
        (
            FetchResponse::default().with_responses(topics),
            total,
            has_error,
        )
    }
}
