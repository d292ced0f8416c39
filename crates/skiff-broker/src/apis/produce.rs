//! Produce: validate each record batch's header and CRC and its timestamps against the topic's
//! bounds, stamp LogAppendTime where the topic asks for it, and append the bytes verbatim, unless
//! the topic's `compression.type` asks for another codec (then the records are recompressed).
//! Header checks run on the async worker (no I/O); reading records and recompressing, only when
//! a topic's configs ask for them, run on the blocking pool, as does each partition's append
//! (and its fsync under `flush.messages`).

use bytes::BytesMut;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ProduceRequest, ProduceResponse};
use skiff_log::batch::{set_log_append_time, validate_batch, BatchError, BatchIter};
use skiff_log::records::{recompress, timestamp_out_of_bounds};
use skiff_log::AppendOutcome;
use tracing::debug;

use super::{code, log_error_code, message, KafkaApis};
use crate::group::storage::OFFSETS_TOPIC;
use crate::replica_manager::now_ms;

fn batch_error_code(error: &BatchError) -> i16 {
    match error {
        BatchError::TooLarge { .. } => code(ResponseError::MessageTooLarge),
        BatchError::UnsupportedMagic(_) => code(ResponseError::UnsupportedForMessageFormat),
        _ => code(ResponseError::CorruptMessage),
    }
}

impl KafkaApis {
    /// Returns `None` for acks=0: Kafka sends no response at all then.
    pub(super) async fn produce(
        &self,
        request: ProduceRequest,
        _version: i16,
    ) -> Option<ProduceResponse> {
        let refusal = if request.transactional_id.is_some() {
            Some((
                code(ResponseError::UnsupportedVersion),
                "transactions are not supported yet",
            ))
        } else if !matches!(request.acks, -1..=1) {
            Some((
                code(ResponseError::InvalidRequiredAcks),
                "acks must be -1, 0 or 1",
            ))
        } else {
            None
        };
        let opening = Self::opening_deadline();
        let mut responses = Vec::with_capacity(request.topic_data.len());
        for topic in request.topic_data {
            let mut partitions = Vec::with_capacity(topic.partition_data.len());
            for data in topic.partition_data {
                partitions.push(match refusal {
                    Some((error_code, text)) => PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(error_code)
                        .with_error_message(message(text)),
                    None => {
                        self.append_to_partition(
                            topic.name.as_str(),
                            data.index,
                            data.records,
                            opening,
                        )
                        .await
                    }
                });
            }
            responses.push(
                TopicProduceResponse::default()
                    .with_name(topic.name)
                    .with_partition_responses(partitions),
            );
        }
        (request.acks != 0).then(|| ProduceResponse::default().with_responses(responses))
    }

    async fn append_to_partition(
        &self,
        topic: &str,
        index: i32,
        records: Option<bytes::Bytes>,
        opening: tokio::time::Instant,
    ) -> PartitionProduceResponse {
        let response = PartitionProduceResponse::default().with_index(index);
        let failed = |error_code: i16, text: String| {
            debug!(topic, partition = index, error_code, %text, "produce refused");
            response
                .clone()
                .with_error_code(error_code)
                .with_error_message(message(text))
                .with_base_offset(-1)
        };
        if topic == OFFSETS_TOPIC {
            return failed(
                code(ResponseError::InvalidTopicException),
                format!("{OFFSETS_TOPIC} is written by the group coordinator only"),
            );
        }
        let Some(partition) = self.hosted_partition(topic, index, opening).await else {
            return failed(
                self.not_hosted_error(topic, index),
                format!("this broker does not lead partition {index} of topic '{topic}'"),
            );
        };
        let state = partition.state();
        if !state.leading {
            return failed(
                code(ResponseError::NotLeaderOrFollower),
                format!("this broker does not lead partition {index} of topic '{topic}'"),
            );
        }
        let (max_message_bytes, log_append_time) = (
            state.configs.max_message_bytes(),
            state.configs.uses_log_append_time(),
        );
        let required_codec = state.configs.required_codec();
        let (before_max_ms, after_max_ms) = state.configs.timestamp_bounds();
        let Some(records) = records.filter(|r| !r.is_empty()) else {
            return failed(
                code(ResponseError::CorruptMessage),
                "no record batch in the request".into(),
            );
        };
        // Patching offsets and timestamps needs the batch bytes writable: one copy out of the
        // request frame, which other decoded fields still share.
        let mut batches = BytesMut::from(&records[..]);
        let now = now_ms();
        let mut ranges = Vec::new();
        for item in BatchIter::new(&batches) {
            let (_, range) = match item {
                Ok(item) => item,
                Err(e) => return failed(batch_error_code(&e), e.to_string()),
            };
            if let Err(e) = validate_batch(&batches[range.clone()], max_message_bytes) {
                return failed(batch_error_code(&e), e.to_string());
            }
            ranges.push(range);
        }
        let epoch = state.leader_epoch;
        // Reading records (a past timestamp bound) and recompressing are CPU work on the
        // request's bytes: done on the blocking pool before the partition's log is taken, so
        // its other appends and fetches do not wait for it. With the defaults neither happens.
        let reads_records = !log_append_time && before_max_ms != i64::MAX;
        // A LogAppendTime topic stamps its own timestamps: no bounds to check.
        let bounds = if log_append_time {
            (i64::MAX, i64::MAX)
        } else {
            (before_max_ms, after_max_ms)
        };
        if reads_records || required_codec.is_some() {
            let prepared = tokio::task::spawn_blocking(move || {
                prepare(
                    batches,
                    ranges,
                    now,
                    bounds,
                    required_codec,
                    max_message_bytes,
                )
            })
            .await;
            match prepared {
                Ok(Ok(prepared)) => (batches, ranges) = prepared,
                Ok(Err((error_code, text))) => return failed(error_code, text),
                Err(e) => return failed(code(ResponseError::UnknownServerError), e.to_string()),
            }
        } else if !log_append_time {
            // Only batch headers: the future bound.
            for range in &ranges {
                if let Err(refused) =
                    check_timestamps(&batches[range.clone()], now, i64::MAX, after_max_ms)
                {
                    return failed(refused.0, refused.1);
                }
            }
        }
        if log_append_time {
            for range in &ranges {
                set_log_append_time(&mut batches[range.clone()], now);
            }
        }
        let appended = self
            .replicas
            .log_io(&partition, move |mut log| {
                let outcome = log.append(&mut batches, epoch, now);
                (outcome, batches.len())
            })
            .await;
        let (outcome, appended_bytes) = match appended {
            Ok(appended) => appended,
            Err(e) => return failed(code(ResponseError::KafkaStorageError), e.to_string()),
        };
        match outcome {
            Ok(AppendOutcome::Appended {
                base_offset,
                log_start_offset,
                ..
            }) => {
                metrics::counter!("skiff_bytes_in_total", "topic" => topic.to_string())
                    .increment(appended_bytes as u64);
                self.replicas.notify_appended();
                response
                    .with_base_offset(base_offset)
                    .with_log_append_time_ms(if log_append_time { now } else { -1 })
                    .with_log_start_offset(log_start_offset)
            }
            Ok(AppendOutcome::Duplicate {
                base_offset,
                log_start_offset,
                ..
            }) => response
                .with_base_offset(base_offset)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(log_start_offset),
            Err(e) => failed(log_error_code(&e), e.to_string()),
        }
    }
}

/// A refusal: the Kafka error code and its message.
type Refusal = (i16, String);

/// INVALID_TIMESTAMP for a CreateTime batch beyond the topic's timestamp bounds.
fn check_timestamps(
    batch: &[u8],
    now: i64,
    before_max_ms: i64,
    after_max_ms: i64,
) -> Result<(), Refusal> {
    match timestamp_out_of_bounds(batch, now, before_max_ms, after_max_ms) {
        Ok(None) => Ok(()),
        Ok(Some(timestamp)) => Err((
            code(ResponseError::InvalidTimestamp),
            format!("record timestamp {timestamp} is further from the broker's clock ({now}) than the topic's message.timestamp.before.max.ms / after.max.ms allow"),
        )),
        Err(e) => Err((code(ResponseError::CorruptMessage), e.to_string())),
    }
}

/// The record-reading checks and the recompression a topic's configs ask for, on the
/// blocking pool: the batches (recompressed if `codec` is set) and their ranges.
fn prepare(
    batches: BytesMut,
    ranges: Vec<std::ops::Range<usize>>,
    now: i64,
    (before_max_ms, after_max_ms): (i64, i64),
    codec: Option<u8>,
    max_message_bytes: usize,
) -> Result<(BytesMut, Vec<std::ops::Range<usize>>), Refusal> {
    for range in &ranges {
        check_timestamps(&batches[range.clone()], now, before_max_ms, after_max_ms)?;
    }
    let Some(codec) = codec else {
        return Ok((batches, ranges));
    };
    let batches = recompressed(&batches, &ranges, codec, max_message_bytes)?;
    let ranges = BatchIter::new(&batches)
        .filter_map(|item| item.ok().map(|(_, range)| range))
        .collect();
    Ok((batches, ranges))
}

/// The batches with their records compressed with `codec` where they differ (a topic's
/// `compression.type`), each still within `max_message_bytes`; the refusal otherwise.
fn recompressed(
    batches: &[u8],
    ranges: &[std::ops::Range<usize>],
    codec: u8,
    max_message_bytes: usize,
) -> Result<BytesMut, Refusal> {
    let mut out = BytesMut::with_capacity(batches.len());
    for range in ranges {
        let batch = &batches[range.clone()];
        match recompress(batch, codec) {
            Ok(None) => out.extend_from_slice(batch),
            Ok(Some(converted)) if converted.len() > max_message_bytes => {
                return Err((
                    code(ResponseError::MessageTooLarge),
                    format!(
                        "the batch is {} bytes once compressed as the topic's compression.type requires, above max.message.bytes {max_message_bytes}",
                        converted.len()
                    ),
                ))
            }
            Ok(Some(converted)) => out.extend_from_slice(&converted),
            Err(e) => return Err((code(ResponseError::CorruptMessage), e.to_string())),
        }
    }
    Ok(out)
}
