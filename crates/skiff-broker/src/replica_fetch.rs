//! Moving records between brokers, Kafka's way: followers fetch from leaders. A follower sends
//! the leader Kafka Fetch requests (version `FETCH_VERSION`, its broker id as replica id) over
//! the cluster's authenticated peer connections (`skiff_raft::PeerCaller`, on the Raft port,
//! where only brokers that prove the cluster secret are heard), so no Kafka client can pose
//! as a replica and move a high watermark or an ISR.
//!
//! - `LeaderService` answers follower fetches: the partition's `LeaderState` records the
//!   follower's progress (which moves the high watermark and may propose an ISR change) and
//!   says whether to send records or where the follower's log diverges (KIP-320).
//! - `run_fetchers` keeps one fetcher per leader this broker follows partitions from; each
//!   truncates a divergent tail, appends the leader's batches as they are
//!   (`Log::append_replicated`) and follows the leader's high watermark and log start.
//! - `run_proposals` sends the leaders' ISR changes to the controller (AlterPartition), and
//!   `run_ticks` settles roles the image changed and shrinks the ISR of lagging followers.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Weak};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::fetch_response::{
    EpochEndOffset, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse};
use kafka_protocol::protocol::{Decodable, Encodable};
use skiff_metadata::{ControllerError, ControllerRequest, MetadataImage};
use skiff_raft::{ForwardRequest, SubmitError};
use skiff_raft::{MetadataRaft, PeerCaller, PeerService};
use skiff_replication::{EpochEnd, FetchAnswer, FetchError, FollowerFetch};
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, info, warn};

use crate::replica_manager::{now_ms, LogGuard, LongPollWait, Partition, ReplicaManager};
use crate::replication::Proposal;

/// The Fetch version brokers speak to each other: topic ids, diverging epochs (KIP-320).
const FETCH_VERSION: i16 = 13;
/// How long a leader holds a follower's fetch when it has nothing new (Kafka's
/// `replica.fetch.wait.max.ms`).
const FOLLOWER_MAX_WAIT: Duration = Duration::from_millis(500);
/// Record bytes a follower asks for per partition and per fetch (Kafka's
/// `replica.fetch.max.bytes`, `replica.fetch.response.max.bytes`).
const PARTITION_MAX_BYTES: i32 = 1024 * 1024;
const RESPONSE_MAX_BYTES: i32 = 10 * 1024 * 1024;
/// A follower waits this long after a failed fetch before the next one.
const FETCH_BACKOFF: Duration = Duration::from_millis(500);

fn code(error: ResponseError) -> i16 {
    error.code()
}

fn fetch_error_code(error: FetchError) -> i16 {
    code(match error {
        FetchError::NotLeaderOrFollower => ResponseError::NotLeaderOrFollower,
        FetchError::FencedLeaderEpoch => ResponseError::FencedLeaderEpoch,
        FetchError::UnknownLeaderEpoch => ResponseError::UnknownLeaderEpoch,
        FetchError::OffsetOutOfRange => ResponseError::OffsetOutOfRange,
    })
}

/// A Fetch request or response as sent between brokers: its version, then its body.
fn encode<T: Encodable>(message: &T) -> Vec<u8> {
    let mut buf = BytesMut::new();
    buf.put_i16(FETCH_VERSION);
    match message.encode(&mut buf, FETCH_VERSION) {
        Ok(()) => buf.to_vec(),
        Err(e) => {
            warn!(error = %e, "cannot encode a replica fetch message");
            Vec::new()
        }
    }
}

fn decode<T: Decodable>(mut bytes: Bytes) -> Result<T, String> {
    if bytes.remaining() < 2 {
        return Err("a replica fetch message without its version".into());
    }
    let version = bytes.get_i16();
    if version != FETCH_VERSION {
        return Err(format!(
            "replica fetch version {version}, this broker speaks {FETCH_VERSION}"
        ));
    }
    T::decode(&mut bytes, version).map_err(|e| e.to_string())
}

/// The leader's side: answers follower fetches.
#[derive(Clone)]
pub struct LeaderService {
    replicas: Arc<ReplicaManager>,
    max_fetch_bytes: usize,
}

impl LeaderService {
    pub fn new(replicas: Arc<ReplicaManager>, max_fetch_bytes: usize) -> Self {
        Self {
            replicas,
            max_fetch_bytes,
        }
    }

    async fn answer(&self, from: u64, request: Bytes) -> FetchResponse {
        let request: FetchRequest = match decode(request) {
            Ok(request) => request,
            Err(reason) => {
                warn!(from, %reason, "refused a replica fetch");
                return FetchResponse::default()
                    .with_error_code(code(ResponseError::InvalidRequest));
            }
        };
        // The connection proved who sent it; a request naming another replica is forged.
        if i64::from(request.replica_id.0) != from as i64 {
            warn!(
                from,
                replica_id = request.replica_id.0,
                "refused a replica fetch naming another broker"
            );
            return FetchResponse::default().with_error_code(code(ResponseError::InvalidRequest));
        }
        let wait = Duration::from_millis(request.max_wait_ms.max(0) as u64).min(FOLLOWER_MAX_WAIT);
        let deadline = Instant::now() + wait;
        loop {
            let watched: Vec<_> = request
                .topics
                .iter()
                .flat_map(|topic| {
                    topic
                        .partitions
                        .iter()
                        .filter_map(|p| self.replicas.get_by_id(topic.topic_id, p.partition))
                })
                .collect();
            let changes = LongPollWait::of(&watched);
            let (response, bytes, has_error) = self.read(from as i32, &request).await;
            if bytes > 0 || has_error || Instant::now() >= deadline {
                return response;
            }
            if tokio::time::timeout_at(deadline, changes.wait())
                .await
                .is_err()
            {
                return self.read(from as i32, &request).await.0;
            }
        }
    }

    /// One pass over the requested partitions, as a consumer fetch does, but up to the log end.
    async fn read(&self, from: i32, request: &FetchRequest) -> (FetchResponse, usize, bool) {
        let budget = (request.max_bytes.max(0) as usize).min(self.max_fetch_bytes);
        // Every partition hosted here is read in one task on the blocking pool; the others are
        // answered NOT_LEADER_OR_FOLLOWER without touching a log.
        let mut hosted = Vec::new();
        let mut is_hosted = Vec::new();
        for topic in &request.topics {
            for p in &topic.partitions {
                let partition = self.replicas.get_by_id(topic.topic_id, p.partition);
                is_hosted.push(partition.is_some());
                if let Some(partition) = partition {
                    let fetch = FollowerFetch {
                        replica: from,
                        fetch_offset: p.fetch_offset,
                        last_fetched_epoch: (p.last_fetched_epoch >= 0)
                            .then_some(p.last_fetched_epoch),
                        current_leader_epoch: (p.current_leader_epoch >= 0)
                            .then_some(p.current_leader_epoch),
                    };
                    hosted.push((partition, (fetch, p.partition_max_bytes.max(0) as usize)));
                }
            }
        }
        let mut total = 0usize;
        let read = self
            .replicas
            .logs_io(hosted, move |partition, (fetch, partition_max), log| {
                let decided = partition.follower_fetch(&log, fetch);
                let outcome = match decided.answer {
                    Ok(FetchAnswer::Read { high_watermark }) => {
                        let limit = partition_max.min(budget.saturating_sub(total));
                        let read = log.read(fetch.fetch_offset, limit, i64::MAX, total == 0);
                        drop(log);
                        read.map_err(|_| code(ResponseError::KafkaStorageError))
                            .and_then(|info| {
                                let mut buf = Vec::with_capacity(info.total_len);
                                for slice in &info.slices {
                                    slice
                                        .read_into(&mut buf)
                                        .map_err(|_| code(ResponseError::KafkaStorageError))?;
                                }
                                total += buf.len();
                                Ok((Bytes::from(buf), high_watermark, None))
                            })
                    }
                    Ok(FetchAnswer::Diverging {
                        diverging,
                        high_watermark,
                    }) => Ok((Bytes::new(), high_watermark, Some(diverging))),
                    Err(e) => Err(fetch_error_code(e)),
                };
                (outcome, decided.log_start)
            })
            .await;
        // In request order; none when the runtime shuts down.
        let mut read = read.ok().map(Vec::into_iter);
        let mut is_hosted = is_hosted.into_iter();
        let (mut total, mut has_error) = (0usize, false);
        let mut topics = Vec::with_capacity(request.topics.len());
        for topic in &request.topics {
            let mut partitions = Vec::with_capacity(topic.partitions.len());
            for p in &topic.partitions {
                let data = PartitionData::default()
                    .with_partition_index(p.partition)
                    .with_records(Some(Bytes::new()));
                if is_hosted.next() != Some(true) {
                    has_error = true;
                    partitions.push(data.with_error_code(code(ResponseError::NotLeaderOrFollower)));
                    continue;
                }
                let data = match read.as_mut().and_then(Iterator::next) {
                    Some((Ok((records, high_watermark, diverging)), log_start)) => {
                        total += records.len();
                        let data = data
                            .with_high_watermark(high_watermark)
                            .with_last_stable_offset(high_watermark)
                            .with_log_start_offset(log_start)
                            .with_records(Some(records));
                        match diverging {
                            Some(end) => {
                                has_error = true;
                                data.with_diverging_epoch(
                                    EpochEndOffset::default()
                                        .with_epoch(end.epoch)
                                        .with_end_offset(end.end_offset),
                                )
                            }
                            None => data,
                        }
                    }
                    Some((Err(error), log_start)) => {
                        has_error = true;
                        // A follower below the log start restarts its log there.
                        data.with_error_code(error).with_log_start_offset(log_start)
                    }
                    None => {
                        has_error = true;
                        data.with_error_code(code(ResponseError::KafkaStorageError))
                    }
                };
                partitions.push(data);
            }
            topics.push(
                FetchableTopicResponse::default()
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

impl PeerService for LeaderService {
    fn call(
        &self,
        from: u64,
        request: Bytes,
    ) -> Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>> {
        let service = self.clone();
        Box::pin(async move { encode(&service.answer(from, request).await) })
    }
}

/// Keeps one fetcher per leader this broker follows partitions from, until `cluster` is gone.
pub async fn run_fetchers(replicas: Arc<ReplicaManager>, cluster: Weak<MetadataRaft>) {
    let mut fetchers = Fetchers::default();
    let fetchers = &mut fetchers.0;
    let mut interval = tokio::time::interval(Duration::from_millis(100));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some(raft) = cluster.upgrade() else {
            return;
        };
        fetchers.retain(|_, task| !task.is_finished());
        for partition in replicas.all() {
            let Some((leader, _)) = partition.following() else {
                continue;
            };
            fetchers.entry(leader).or_insert_with(|| {
                info!(leader, "fetching from a leader");
                tokio::spawn(fetch_from(
                    leader,
                    replicas.clone(),
                    raft.peer_caller(leader as u64),
                ))
            });
        }
    }
}

/// The fetcher of each leader, stopped with the task that keeps them.
#[derive(Default)]
struct Fetchers(HashMap<i32, tokio::task::JoinHandle<()>>);

impl Drop for Fetchers {
    fn drop(&mut self) {
        for task in self.0.values() {
            task.abort();
        }
    }
}

/// Where a follower's log stands, sent with its fetch.
#[derive(Debug, Clone, Copy)]
struct Position {
    leader_epoch: i32,
    fetch_offset: i64,
    last_fetched_epoch: i32,
    log_start: i64,
    high_watermark: i64,
}

/// One fetcher: fetches every partition this broker follows from `leader`, until there is
/// none left. A partition whose answer could not be applied waits `FETCH_BACKOFF` while the
/// others go on.
async fn fetch_from(leader: i32, replicas: Arc<ReplicaManager>, mut caller: PeerCaller) {
    let me = replicas.broker_id();
    let mut backoff: HashMap<(uuid::Uuid, i32), Instant> = HashMap::new();
    loop {
        let followed: Vec<Arc<Partition>> = replicas
            .all()
            .into_iter()
            .filter(|p| p.following().is_some_and(|(l, _)| l == leader))
            .collect();
        if followed.is_empty() {
            info!(leader, "no partition left to fetch from this leader");
            return;
        }
        let now = Instant::now();
        backoff.retain(|_, until| *until > now);
        let ready: Vec<Arc<Partition>> = followed
            .into_iter()
            .filter(|p| !backoff.contains_key(&(p.topic_id(), p.index)))
            .collect();
        if ready.is_empty() {
            tokio::time::sleep(FETCH_BACKOFF).await;
            continue;
        }
        let Some(positions) = positions(&replicas, &ready).await else {
            return;
        };
        let request = encode(&fetch_request(me, &positions));
        let answer = caller
            .call(&request, FOLLOWER_MAX_WAIT + Duration::from_secs(10))
            .await;
        let response = match answer
            .map_err(|e| e.to_string())
            .and_then(decode::<FetchResponse>)
        {
            Ok(response) if response.error_code == 0 => response,
            Ok(response) => {
                let code = response.error_code;
                debug!(leader, code, "the leader refused the fetch");
                tokio::time::sleep(FETCH_BACKOFF).await;
                continue;
            }
            Err(reason) => {
                debug!(leader, %reason, "fetch from the leader failed");
                tokio::time::sleep(FETCH_BACKOFF).await;
                continue;
            }
        };
        for (partition, reason) in apply_response(&replicas, &positions, response).await {
            debug!(leader, topic = %partition.topic, partition = partition.index, %reason, "replicating the partition failed, backing off");
            backoff.insert(
                (partition.topic_id(), partition.index),
                Instant::now() + FETCH_BACKOFF,
            );
        }
    }
}

/// Where each followed partition's log stands; None when the runtime shuts down.
async fn positions(
    replicas: &ReplicaManager,
    followed: &[Arc<Partition>],
) -> Option<Vec<(Arc<Partition>, Position)>> {
    let followed = followed.iter().map(|p| (p.clone(), ())).collect();
    let positions = replicas
        .logs_io(followed, |partition, (), log| {
            let (_, leader_epoch) = partition.following()?;
            Some((
                partition.clone(),
                Position {
                    leader_epoch,
                    fetch_offset: log.log_end_offset(),
                    last_fetched_epoch: log.leader_epochs().latest_epoch().unwrap_or(-1),
                    log_start: log.log_start_offset(),
                    high_watermark: partition.high_watermark(),
                },
            ))
        })
        .await
        .ok()?;
    Some(positions.into_iter().flatten().collect())
}

/// Applies the leader's answer to each partition; returns those that failed, and why.
async fn apply_response(
    replicas: &ReplicaManager,
    positions: &[(Arc<Partition>, Position)],
    response: FetchResponse,
) -> Vec<(Arc<Partition>, String)> {
    let mut failed = Vec::new();
    let mut answered = Vec::new();
    let answers = response
        .responses
        .into_iter()
        .flat_map(|t| t.partitions.into_iter().map(move |p| (t.topic_id, p)));
    for (topic_id, data) in answers {
        let Some((partition, position)) = positions
            .iter()
            .find(|(p, _)| p.index == data.partition_index && p.topic_id() == topic_id)
        else {
            continue;
        };
        let below_log_start = data.error_code == code(ResponseError::OffsetOutOfRange)
            && data.log_start_offset > position.fetch_offset;
        if data.error_code != 0 && !below_log_start {
            failed.push((partition.clone(), format!("error code {}", data.error_code)));
            continue;
        }
        answered.push((partition.clone(), (*position, data, below_log_start)));
    }
    // Only when the runtime shuts down is nothing applied; the fetcher then stops anyway.
    if let Ok(applied) = replicas
        .logs_io(
            answered,
            |partition, (position, data, below_log_start), log| {
                apply(partition, log, position, data, below_log_start)
                    .err()
                    .map(|reason| (partition.clone(), reason))
            },
        )
        .await
    {
        failed.extend(applied.into_iter().flatten());
    }
    failed
}

fn fetch_request(me: i32, positions: &[(Arc<Partition>, Position)]) -> FetchRequest {
    let mut topics: Vec<FetchTopic> = Vec::new();
    for (partition, position) in positions {
        let topic_id = partition.state().topic_id;
        let fetch = FetchPartition::default()
            .with_partition(partition.index)
            .with_current_leader_epoch(position.leader_epoch)
            .with_fetch_offset(position.fetch_offset)
            .with_last_fetched_epoch(position.last_fetched_epoch)
            .with_log_start_offset(position.log_start)
            .with_partition_max_bytes(PARTITION_MAX_BYTES);
        match topics.iter_mut().find(|t| t.topic_id == topic_id) {
            Some(topic) => topic.partitions.push(fetch),
            None => topics.push(
                FetchTopic::default()
                    .with_topic_id(topic_id)
                    .with_partitions(vec![fetch]),
            ),
        }
    }
    FetchRequest::default()
        .with_replica_id(BrokerId(me))
        .with_max_wait_ms(FOLLOWER_MAX_WAIT.as_millis() as i32)
        .with_min_bytes(1)
        .with_max_bytes(RESPONSE_MAX_BYTES)
        .with_session_id(0)
        .with_session_epoch(-1)
        .with_topics(topics)
}

/// Applies the leader's answer for one partition, as Kafka's fetcher does: truncate where the
/// logs diverge, or append the batches verbatim; then follow the leader's high watermark and
/// log start (`below_log_start`: the leader's log starts past this log's end, which restarts
/// there).
fn apply(
    held: &Arc<Partition>,
    mut log: LogGuard,
    position: Position,
    data: PartitionData,
    below_log_start: bool,
) -> Result<(), String> {
    // The role or the log may have changed since the fetch was sent.
    if held.following().map(|(_, epoch)| epoch) != Some(position.leader_epoch)
        || log.log_end_offset() != position.fetch_offset
    {
        return Ok(());
    }
    if below_log_start {
        // The leader deleted what this log lacks (retention, DeleteRecords): there is
        // nothing to catch up on below its log start, so this log restarts there.
        info!(topic = %held.topic, partition = held.index, from = log.log_end_offset(), to = data.log_start_offset, "restarting the log at the leader's log start");
        log.truncate_fully_and_start_at(data.log_start_offset)
            .map_err(|e| format!("restarting the log failed: {e}"))?;
        // An error answer carries no high watermark; the leader's is at least its start.
        held.follow_high_watermark(data.log_start_offset, log.log_end_offset());
        return Ok(());
    }
    let diverging = data.diverging_epoch;
    if diverging.epoch >= 0 || diverging.end_offset >= 0 {
        let truncation = skiff_replication::follower::truncation(
            log.leader_epochs(),
            log.log_end_offset(),
            position.high_watermark,
            EpochEnd {
                epoch: diverging.epoch,
                end_offset: diverging.end_offset,
            },
        );
        let before = (log.log_end_offset(), log.leader_epochs().latest_epoch());
        if truncation.offset < before.0 {
            info!(topic = %held.topic, partition = held.index, from = before.0, to = truncation.offset, "truncating a divergent log tail");
        }
        log.truncate_to(truncation.offset)
            .map_err(|e| format!("truncation failed: {e}"))?;
        if (log.log_end_offset(), log.leader_epochs().latest_epoch()) == before {
            // Nothing changed, so the next fetch would get the same answer: it waits.
            return Err(format!(
                "the leader reports a divergence at epoch {} offset {} that truncates nothing",
                diverging.epoch, diverging.end_offset
            ));
        }
    } else if let Some(records) = data.records.filter(|r| !r.is_empty()) {
        log.append_replicated(&records, now_ms())
            .map_err(|e| format!("appending the leader's batches failed: {e}"))?;
    }
    let log_end = log.log_end_offset();
    if data.log_start_offset > log.log_start_offset() && data.log_start_offset <= log_end {
        log.delete_records_before(data.log_start_offset)
            .map_err(|e| format!("following the leader's log start failed: {e}"))?;
    }
    held.follow_high_watermark(data.high_watermark, log_end);
    Ok(())
}

/// Sends the leaders' ISR changes to the controller; a refused one is proposed again by its
/// leader when still needed.
pub async fn run_proposals(
    replicas: Arc<ReplicaManager>,
    cluster: Weak<MetadataRaft>,
    mut proposals: mpsc::UnboundedReceiver<Proposal>,
) {
    let me = replicas.broker_id();
    while let Some(proposal) = proposals.recv().await {
        let Some(partition) = replicas.get_by_id(proposal.topic_id, proposal.partition) else {
            continue;
        };
        // A write whose outcome is unknown is sent again, for as long as it is the leader's
        // proposal: forgetting it could let the high watermark stop waiting for a replica the
        // controller did add. Only a refusal that proves the change was not applied clears
        // it (Kafka's INELIGIBLE_REPLICA and invalid requests); a stale epoch may well mean
        // the first send applied, so the proposal stays until the image settles it.
        let shrinks = proposal.proposal.isr.len() < partition.state().isr.len();
        while partition.proposal_pending(&proposal.proposal) {
            let Some(raft) = cluster.upgrade() else {
                return;
            };
            let request = ControllerRequest::AlterPartition {
                topic_id: proposal.topic_id,
                partition: proposal.partition,
                broker: me,
                leader_epoch: proposal.proposal.leader_epoch,
                partition_epoch: proposal.proposal.partition_epoch,
                isr: proposal.proposal.isr.clone(),
            };
            let outcome = raft
                .submit(ForwardRequest::Controller {
                    request,
                    validate_only: false,
                })
                .await;
            drop(raft);
            match outcome {
                Ok(_) => {
                    info!(topic = %proposal.topic, partition = proposal.partition, isr = ?proposal.proposal.isr, "ISR changed");
                    let counter = if shrinks {
                        "skiff_isr_shrinks_total"
                    } else {
                        "skiff_isr_expands_total"
                    };
                    metrics::counter!(counter).increment(1);
                    break;
                }
                Err(e @ (SubmitError::Unavailable(_) | SubmitError::NotLeader { .. })) => {
                    debug!(topic = %proposal.topic, partition = proposal.partition, error = %e, "ISR change not confirmed, sending it again");
                    tokio::time::sleep(PROPOSAL_RETRY_BACKOFF).await;
                }
                Err(
                    e @ SubmitError::Controller(
                        ControllerError::IneligibleReplica(_) | ControllerError::InvalidRequest(_),
                    ),
                ) => {
                    debug!(topic = %proposal.topic, partition = proposal.partition, error = %e, "ISR change refused");
                    partition.proposal_refused(&proposal.proposal);
                    break;
                }
                Err(e) => {
                    debug!(topic = %proposal.topic, partition = proposal.partition, error = %e, "ISR change not applied; waiting for the metadata that settles it");
                    break;
                }
            }
        }
    }
}

/// Wait before an ISR change whose outcome is unknown is sent again.
const PROPOSAL_RETRY_BACKOFF: Duration = Duration::from_millis(500);

/// Settles the roles the image changed and lets leaders drop lagging followers from the ISR.
pub async fn run_ticks(replicas: Arc<ReplicaManager>, cluster: Weak<MetadataRaft>) {
    let mut interval = tokio::time::interval(Duration::from_millis(250));
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        interval.tick().await;
        let Some((image, controller)) = cluster
            .upgrade()
            .map(|raft| (raft.image(), raft.is_leader()))
        else {
            return;
        };
        let eligible = |id: i32| image.broker(id).is_some_and(|b| !b.fenced);
        let hosted = replicas.all();
        for partition in &hosted {
            if partition.needs_settling() {
                if replicas.log_io(partition, |_| ()).await.is_err() {
                    return;
                }
            } else {
                partition.tick(eligible);
            }
        }
        export_metrics(&hosted, &image, controller);
    }
}

/// Kafka's replication health gauges: for the partitions this broker leads, how many lack a
/// replica in their ISR (UnderReplicatedPartitions) or have fewer in-sync replicas than
/// `min.insync.replicas` (UnderMinIsrPartitions); on the controller only, so that a sum over
/// brokers counts each once, the partitions without a leader (OfflinePartitionsCount).
fn export_metrics(hosted: &[Arc<Partition>], image: &MetadataImage, controller: bool) {
    let (mut led, mut under_replicated, mut under_min_isr) = (0, 0, 0);
    for partition in hosted {
        let state = partition.state();
        if !state.leading {
            continue;
        }
        led += 1;
        if state.isr.len() < state.replicas.len() {
            under_replicated += 1;
        }
        if state.isr.len() < state.configs.min_insync_replicas() {
            under_min_isr += 1;
        }
    }
    let offline = if controller {
        image
            .partitions()
            .filter(|(_, _, registration)| registration.leader.is_none())
            .count()
    } else {
        0
    };
    metrics::gauge!("skiff_leader_partitions").set(led as f64);
    metrics::gauge!("skiff_under_replicated_partitions").set(under_replicated as f64);
    metrics::gauge!("skiff_under_min_isr_partitions").set(under_min_isr as f64);
    metrics::gauge!("skiff_offline_partitions").set(offline as f64);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::replica_manager::PartitionState;
    use crate::replication::ReplicationContext;
    use crate::topic_config::TopicConfigs;

    const TOPIC: uuid::Uuid = uuid::Uuid::from_u128(42);

    fn state(me: i32, leader: i32, leader_epoch: i32) -> PartitionState {
        PartitionState {
            topic_id: TOPIC,
            leading: leader == me,
            leader: Some(leader),
            leader_epoch,
            partition_epoch: 0,
            replicas: vec![1, 2],
            isr: vec![1, 2],
            configs: Arc::new(TopicConfigs::default()),
        }
    }

    /// Broker `me` hosting partition 0 of topic `t`, led by `leader`.
    fn broker(
        dir: &std::path::Path,
        me: i32,
        leader: i32,
        leader_epoch: i32,
    ) -> (Arc<ReplicaManager>, Arc<Partition>) {
        let (context, _) = ReplicationContext::new(me, 30_000);
        let replicas = Arc::new(ReplicaManager::new(dir, context));
        replicas
            .host_partition("t", 0, state(me, leader, leader_epoch))
            .unwrap();
        let partition = replicas.get("t", 0).unwrap();
        (replicas, partition)
    }

    /// Appends `n` records as the leader at `epoch`.
    async fn append(replicas: &ReplicaManager, partition: &Arc<Partition>, n: usize, epoch: i32) {
        let mut batch = skiff_log::testing::simple_batch(n, 10, now_ms());
        let held = partition.clone();
        replicas
            .log_io(partition, move |mut log| {
                log.append(&mut batch, epoch, now_ms()).unwrap();
                held.settle(&mut log);
            })
            .await
            .unwrap();
    }

    /// One follower fetch, encoded and decoded as between brokers, and applied.
    async fn round(leader: &LeaderService, follower: &ReplicaManager) -> Result<(), String> {
        let positions = positions(follower, &follower.all()).await.unwrap();
        let request = encode(&fetch_request(follower.broker_id(), &positions));
        let answer = leader
            .call(follower.broker_id() as u64, Bytes::from(request))
            .await;
        let response: FetchResponse = decode(Bytes::from(answer))?;
        if response.error_code != 0 {
            return Err(format!("refused: {}", response.error_code));
        }
        let failed = apply_response(follower, &positions, response).await;
        match failed.into_iter().next() {
            Some((_, reason)) => Err(reason),
            None => Ok(()),
        }
    }

    async fn log_end(replicas: &ReplicaManager, partition: &Arc<Partition>) -> i64 {
        replicas
            .log_io(partition, |log| log.log_end_offset())
            .await
            .unwrap()
    }

    async fn bytes(replicas: &ReplicaManager, partition: &Arc<Partition>) -> Vec<u8> {
        replicas
            .log_io(partition, |log| {
                log.read(0, usize::MAX, i64::MAX, true)
                    .unwrap()
                    .read_all()
                    .unwrap()
            })
            .await
            .unwrap()
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_follower_copies_the_leaders_batches_and_the_high_watermark_follows() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader_replicas, leader_partition) = broker(a.path(), 1, 1, 1);
        let (follower_replicas, follower_partition) = broker(b.path(), 2, 1, 1);
        let leader = LeaderService::new(leader_replicas.clone(), 1 << 20);

        append(&leader_replicas, &leader_partition, 10, 1).await;
        // Nothing is committed before the follower has it.
        assert_eq!(leader_partition.high_watermark(), 0);
        round(&leader, &follower_replicas).await.unwrap();
        assert_eq!(log_end(&follower_replicas, &follower_partition).await, 10);
        assert_eq!(leader_partition.high_watermark(), 0);
        // The next fetch says the follower has offset 10: committed, and the follower learns it.
        round(&leader, &follower_replicas).await.unwrap();
        assert_eq!(leader_partition.high_watermark(), 10);
        assert_eq!(follower_partition.high_watermark(), 10);
        assert_eq!(
            bytes(&follower_replicas, &follower_partition).await,
            bytes(&leader_replicas, &leader_partition).await,
            "batches copied byte for byte, offsets and epochs included"
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_divergent_tail_is_truncated_before_the_leaders_records_are_copied() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        // Both have offsets 0..10 of epoch 1, written by broker 2, then its leader.
        let (follower_replicas, follower_partition) = broker(b.path(), 2, 2, 1);
        append(&follower_replicas, &follower_partition, 10, 1).await;
        let (leader_replicas, leader_partition) = broker(a.path(), 1, 2, 1);
        let leader_log = follower_replicas
            .log_io(&follower_partition, |log| {
                log.read(0, usize::MAX, i64::MAX, true)
                    .unwrap()
                    .read_all()
                    .unwrap()
            })
            .await
            .unwrap();
        leader_replicas
            .log_io(&leader_partition, move |mut log| {
                log.append_replicated(&leader_log, now_ms()).unwrap();
            })
            .await
            .unwrap();
        // Broker 2 wrote 5 more alone at epoch 1 and was cut off; broker 1 became leader at
        // epoch 2 and wrote 2.
        append(&follower_replicas, &follower_partition, 5, 1).await;
        leader_partition.set_state(state(1, 1, 2));
        follower_partition.set_state(state(2, 1, 2));
        append(&leader_replicas, &leader_partition, 2, 2).await;
        let leader = LeaderService::new(leader_replicas.clone(), 1 << 20);

        // The first fetch finds the divergence and truncates to where epoch 1 ended on the leader.
        round(&leader, &follower_replicas).await.unwrap();
        assert_eq!(log_end(&follower_replicas, &follower_partition).await, 10);
        round(&leader, &follower_replicas).await.unwrap();
        round(&leader, &follower_replicas).await.unwrap();
        assert_eq!(log_end(&follower_replicas, &follower_partition).await, 12);
        assert_eq!(
            bytes(&follower_replicas, &follower_partition).await,
            bytes(&leader_replicas, &leader_partition).await
        );
        assert_eq!(leader_partition.high_watermark(), 12);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_follower_below_the_leaders_log_start_restarts_its_log_there() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (leader_replicas, leader_partition) = broker(a.path(), 1, 1, 1);
        let (follower_replicas, follower_partition) = broker(b.path(), 2, 1, 1);
        let leader = LeaderService::new(leader_replicas.clone(), 1 << 20);
        append(&leader_replicas, &leader_partition, 10, 1).await;
        // The records below 8 are gone before the follower ever fetched them.
        let held = leader_partition.clone();
        leader_replicas
            .log_io(&leader_partition, move |mut log| {
                log.delete_records_before(8).unwrap();
                held.settle(&mut log);
            })
            .await
            .unwrap();
        assert_eq!(leader_partition.high_watermark(), 8);

        round(&leader, &follower_replicas).await.unwrap();
        let range = |replicas: Arc<ReplicaManager>, partition: Arc<Partition>| async move {
            replicas
                .log_io(&partition, |log| {
                    (log.log_start_offset(), log.log_end_offset())
                })
                .await
                .unwrap()
        };
        assert_eq!(
            range(follower_replicas.clone(), follower_partition.clone()).await,
            (8, 8)
        );
        assert_eq!(follower_partition.high_watermark(), 8);
        round(&leader, &follower_replicas).await.unwrap();
        round(&leader, &follower_replicas).await.unwrap();
        assert_eq!(
            range(follower_replicas.clone(), follower_partition.clone()).await,
            (8, 10)
        );
        assert_eq!(leader_partition.high_watermark(), 10);
        assert_eq!(follower_partition.high_watermark(), 10);
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn a_fetch_naming_another_replica_or_a_bad_version_is_refused() {
        let a = tempfile::tempdir().unwrap();
        let (leader_replicas, _) = broker(a.path(), 1, 1, 1);
        let leader = LeaderService::new(leader_replicas, 1 << 20);
        // Broker 3 is not a replica; broker 2's connection naming broker 3 is forged.
        let request = encode(&fetch_request(3, &[]));
        let answer: FetchResponse =
            decode(Bytes::from(leader.call(2, Bytes::from(request)).await)).unwrap();
        assert_eq!(answer.error_code, code(ResponseError::InvalidRequest));
        let answer: FetchResponse = decode(Bytes::from(
            leader.call(2, Bytes::from_static(&[0, 7, 1, 2])).await,
        ))
        .unwrap();
        assert_eq!(answer.error_code, code(ResponseError::InvalidRequest));
    }
}
