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
use std::sync::Arc;
use std::time::Duration;

use tracing::debug;

use super::{code, log_error_code, message, KafkaApis};
use crate::group::storage::OFFSETS_TOPIC;
use crate::replica_manager::{now_ms, Partition};
use crate::replication::LEADERSHIP_RECHECK;

fn batch_error_code(error: &BatchError) -> i16 {
    match error {
        BatchError::TooLarge { .. } => code(ResponseError::MessageTooLarge),
        BatchError::UnsupportedMagic(_) => code(ResponseError::UnsupportedForMessageFormat),
        _ => code(ResponseError::CorruptMessage),
    }
}

/// A produce request whose records are appended (or refused) on every partition: what is left
/// is waiting for the in-sync replicas (acks=all) and answering. The connection appends one
/// request after another, in order, but lets the waits of several overlap.
pub(crate) struct ProduceAppended {
    acks: i16,
    deadline: tokio::time::Instant,
    topics: Vec<(
        kafka_protocol::messages::TopicName,
        Vec<PartitionProduceResponse>,
    )>,
    /// acks=all: (topic, partition) positions in `topics`, and what each waits for.
    waits: Vec<(usize, usize, Committing)>,
}

impl ProduceAppended {
    /// Whether the answer waits for the in-sync replicas.
    pub(crate) fn replicating(&self) -> bool {
        !self.waits.is_empty()
    }

    /// The answer; `None` for acks=0: Kafka sends no response at all then.
    pub(crate) async fn answer(self) -> Option<ProduceResponse> {
        let ProduceAppended {
            acks,
            deadline,
            mut topics,
            waits,
        } = self;
        // acks=all: every partition appended first, then they are waited for together.
        let done = futures_util::future::join_all(
            waits
                .iter()
                .map(|(_, _, wait)| wait_committed(wait, deadline)),
        )
        .await;
        for ((t, p, _), outcome) in waits.iter().zip(done) {
            if let Err((error_code, text)) = outcome {
                let response = &mut topics[*t].1[*p];
                debug!(partition = response.index, error_code, %text, "acks=all produce failed");
                response.error_code = error_code;
                response.error_message = message(text);
            }
        }
        let responses = topics
            .into_iter()
            .map(|(name, partitions)| {
                TopicProduceResponse::default()
                    .with_name(name)
                    .with_partition_responses(partitions)
            })
            .collect();
        (acks != 0).then(|| ProduceResponse::default().with_responses(responses))
    }
}

impl KafkaApis {
    /// Returns `None` for acks=0: Kafka sends no response at all then.
    pub(super) async fn produce(
        &self,
        request: ProduceRequest,
        _version: i16,
    ) -> Option<ProduceResponse> {
        self.append_produce(request).await.answer().await
    }

    /// Appends a produce request's records to each partition, in request order.
    pub(crate) async fn append_produce(&self, request: ProduceRequest) -> ProduceAppended {
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
        let acks = request.acks;
        let deadline = tokio::time::Instant::now()
            + Duration::from_millis(request.timeout_ms.max(0) as u64)
                .min(self.config.request_timeout);
        let mut topics = Vec::with_capacity(request.topic_data.len());
        let mut waits = Vec::new();
        for topic in request.topic_data {
            let mut partitions = Vec::with_capacity(topic.partition_data.len());
            for data in topic.partition_data {
                partitions.push(match refusal {
                    Some((error_code, text)) => PartitionProduceResponse::default()
                        .with_index(data.index)
                        .with_error_code(error_code)
                        .with_error_message(message(text)),
                    None => {
                        let (response, wait) = self
                            .append_to_partition(
                                topic.name.as_str(),
                                data.index,
                                data.records,
                                acks,
                                opening,
                            )
                            .await;
                        if let Some(wait) = wait {
                            waits.push((topics.len(), partitions.len(), wait));
                        }
                        response
                    }
                });
            }
            topics.push((topic.name, partitions));
        }
        ProduceAppended {
            acks,
            deadline,
            topics,
            waits,
        }
    }

    async fn append_to_partition(
        &self,
        topic: &str,
        index: i32,
        records: Option<bytes::Bytes>,
        acks: i16,
        opening: tokio::time::Instant,
    ) -> (PartitionProduceResponse, Option<Committing>) {
        let response = PartitionProduceResponse::default().with_index(index);
        let failed = |error_code: i16, text: String| {
            debug!(topic, partition = index, error_code, %text, "produce refused");
            let refused = response
                .clone()
                .with_error_code(error_code)
                .with_error_message(message(text))
                .with_base_offset(-1);
            (refused, None)
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
        let held = partition.clone();
        let appended = self
            .replicas
            .log_io(&partition, move |mut log| {
                // Leadership as settled with the log held: the image may have moved on.
                match held.check_produce() {
                    None => return Err(Refused::NotLeader),
                    Some(Err(_)) if acks == -1 => return Err(Refused::NotEnoughReplicas),
                    Some(_) if held.leading_epoch() != Some(epoch) => {
                        return Err(Refused::NotLeader)
                    }
                    Some(_) => {}
                }
                let outcome = log.append(&mut batches, epoch, now);
                // A single replica's high watermark moves with its log end.
                held.settle(&mut log);
                Ok((outcome, batches.len()))
            })
            .await;
        let (outcome, appended_bytes) = match appended {
            Ok(Ok(appended)) => appended,
            Ok(Err(Refused::NotLeader)) => {
                return failed(
                    code(ResponseError::NotLeaderOrFollower),
                    format!("this broker no longer leads partition {index} of topic '{topic}'"),
                )
            }
            Ok(Err(Refused::NotEnoughReplicas)) => {
                return failed(
                    code(ResponseError::NotEnoughReplicas),
                    format!("partition {index} of topic '{topic}' has fewer in-sync replicas than min.insync.replicas"),
                )
            }
            Err(e) => return failed(code(ResponseError::KafkaStorageError), e.to_string()),
        };
        let (response, end) = match outcome {
            Ok(AppendOutcome::Appended {
                base_offset,
                last_offset,
                log_start_offset,
                ..
            }) => {
                metrics::counter!("skiff_bytes_in_total", "topic" => topic.to_string())
                    .increment(appended_bytes as u64);
                partition.notify_changed();
                let response = response
                    .with_base_offset(base_offset)
                    .with_log_append_time_ms(if log_append_time { now } else { -1 })
                    .with_log_start_offset(log_start_offset);
                (response, last_offset + 1)
            }
            Ok(AppendOutcome::Duplicate {
                base_offset,
                last_offset,
                log_start_offset,
            }) => {
                let response = response
                    .with_base_offset(base_offset)
                    .with_log_append_time_ms(-1)
                    .with_log_start_offset(log_start_offset);
                (response, last_offset + 1)
            }
            Err(e) => return failed(log_error_code(&e), e.to_string()),
        };
        // A retried duplicate is acknowledged like the original: once it is committed.
        let wait = (acks == -1).then(|| Committing {
            partition,
            epoch,
            end,
        });
        (response, wait)
    }
}

/// Why a produce was refused with the log held.
enum Refused {
    NotLeader,
    NotEnoughReplicas,
}

/// An acks=all append waiting for the in-sync replicas: its records end before `end`.
struct Committing {
    partition: Arc<Partition>,
    epoch: i32,
    end: i64,
}

/// Waits until the high watermark passes the append (Kafka's delayed produce), or the request
/// times out, or this broker stops leading at the epoch it appended in.
async fn wait_committed(
    committing: &Committing,
    deadline: tokio::time::Instant,
) -> Result<(), (i16, String)> {
    let partition = &committing.partition;
    let mut high_watermark = partition.watch_high_watermark();
    loop {
        match partition.produce_done(committing.epoch, committing.end) {
            Some(Ok(())) => return Ok(()),
            Some(Err(_)) => {
                return Err((
                    code(ResponseError::NotEnoughReplicasAfterAppend),
                    "written, but the in-sync replicas fell below min.insync.replicas".into(),
                ))
            }
            None => {}
        }
        if partition.leading_epoch() != Some(committing.epoch) {
            return Err((
                code(ResponseError::NotLeaderOrFollower),
                "leadership moved before the records were replicated".into(),
            ));
        }
        // Leadership moves without a new high watermark: looked at again now and then.
        let recheck = (tokio::time::Instant::now() + LEADERSHIP_RECHECK).min(deadline);
        match tokio::time::timeout_at(recheck, high_watermark.changed()).await {
            Ok(Ok(())) => {}
            Ok(Err(_)) => {
                return Err((
                    code(ResponseError::NotLeaderOrFollower),
                    "the partition is no longer served here".into(),
                ))
            }
            Err(_) if recheck >= deadline => {
                return Err((
                    code(ResponseError::RequestTimedOut),
                    "the in-sync replicas did not confirm the records within the request timeout"
                        .into(),
                ))
            }
            Err(_) => {}
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
