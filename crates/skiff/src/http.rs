//! The HTTP admin listener: `/health`, Prometheus `/metrics`, the gossip operations
//! `GET /v1/members`, `POST /v1/event`, `POST /v1/query`, `PUT /v1/tags` (JSON, as Serf's
//! agent offers them), and the metadata quorum's `GET /raft/stats`, `POST /raft/join` and
//! `POST /raft/remove` for operators who manage membership by hand, the replicated
//! key-value store under `/store`, and `GET /v1/partitions[?topic=NAME]`: every partition's
//! leader, ISR and epochs, and for those this broker hosts its high watermark and log ends
//! (the leader's answer has its followers'). With `--http-auth-token`, requests that change
//! something (and with `--http-auth-reads` all but `/health`) need the token as a bearer token.

use std::sync::Arc;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use axum::{Json, Router};
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use serde_json::{json, Value};
use skiff::http_api::{merge_tags, EventRequest, QueryRequest, RaftNodeRequest, TagChanges};
use skiff_broker::group::GroupService;
use skiff_broker::replica_manager::ReplicaManager;
use skiff_gossip::{GossipHandle, MemberStatus, QueryUpdate};
use skiff_raft::{ForwardRequest, MetadataRaft, SubmitError};
use tokio::net::TcpListener;
use tokio::sync::watch;

pub type Metrics = PrometheusHandle;

/// Latency buckets (seconds) for request durations: 50 µs to 10 s.
const LATENCY_BUCKETS: &[f64] = &[
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
    2.5, 5.0, 10.0,
];

pub fn install_metrics() -> anyhow::Result<Metrics> {
    Ok(PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), LATENCY_BUCKETS)?
        .install_recorder()?)
}

#[derive(Clone)]
struct AppState {
    metrics: Metrics,
    gossip: GossipHandle,
    raft: Arc<MetadataRaft>,
    groups: Arc<GroupService>,
    replicas: Arc<ReplicaManager>,
}

/// Who may use the admin API: with a token, every request that changes something (and, with
/// `reads`, every request but `/health`) must carry `Authorization: Bearer <token>`.
#[derive(Clone, Default)]
pub struct HttpAuth {
    pub token: Option<String>,
    pub reads: bool,
}

/// Refuses a request without the token where one is needed: 401 without credentials, 403 with
/// the wrong ones, each with a JSON error.
async fn authorize(
    State(auth): State<Arc<HttpAuth>>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::http::{header, Method};
    use axum::response::IntoResponse;
    let Some(token) = &auth.token else {
        return next.run(request).await;
    };
    let reading = matches!(*request.method(), Method::GET | Method::HEAD);
    if request.uri().path() == "/health" || (reading && !auth.reads) {
        return next.run(request).await;
    }
    let presented = request
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match presented {
        None => (
            [(header::WWW_AUTHENTICATE, "Bearer")],
            error(
                StatusCode::UNAUTHORIZED,
                "this endpoint needs Authorization: Bearer <token> (--http-auth-token)",
            ),
        )
            .into_response(),
        Some(given)
            if bool::from(subtle::ConstantTimeEq::ct_eq(
                given.as_bytes(),
                token.as_bytes(),
            )) =>
        {
            next.run(request).await
        }
        Some(_) => error(StatusCode::FORBIDDEN, "the bearer token is not valid").into_response(),
    }
}

pub async fn serve(
    listener: TcpListener,
    metrics: Metrics,
    gossip: GossipHandle,
    raft: Arc<MetadataRaft>,
    (groups, replicas): (Arc<GroupService>, Arc<ReplicaManager>),
    auth: HttpAuth,
    mut shutdown: watch::Receiver<bool>,
) -> std::io::Result<()> {
    let app = Router::new()
        .route("/health", get(|| async { "ok\n" }))
        .route(
            "/metrics",
            get(|State(s): State<AppState>| async move {
                let mut text = s.metrics.render();
                if !text.is_empty() && !text.ends_with('\n') {
                    text.push('\n');
                }
                // Lag reads every coordinator's offsets and log ends: blocking work.
                let lag = tokio::task::spawn_blocking(move || s.groups.lag_metrics(&s.replicas))
                    .await
                    .unwrap_or_default();
                text + &lag
            }),
        )
        .route("/v1/members", get(members))
        .route("/v1/partitions", get(partitions))
        .route("/v1/event", post(user_event))
        .route("/v1/query", post(query))
        .route("/v1/tags", axum::routing::put(update_tags))
        .route(
            "/raft/stats",
            get(|State(s): State<AppState>| async move { Json(s.raft.stats()) }),
        )
        .route("/raft/join", post(raft_join))
        .route("/store", get(store::list).post(store::post))
        .route(
            "/store/{*key}",
            get(store::get).put(store::put).delete(store::delete),
        )
        .route("/raft/remove", post(raft_remove))
        .layer(axum::middleware::from_fn_with_state(
            Arc::new(auth),
            authorize,
        ))
        .with_state(AppState {
            metrics,
            gossip,
            raft,
            groups,
            replicas,
        });
    axum::serve(listener, app)
        .with_graceful_shutdown(async move {
            let _ = shutdown.wait_for(|stop| *stop).await;
        })
        .await
}

type Reply = (StatusCode, Json<Value>);

fn error(status: StatusCode, message: impl ToString) -> Reply {
    (status, Json(json!({ "error": message.to_string() })))
}

fn status_name(status: MemberStatus) -> &'static str {
    match status {
        MemberStatus::Alive => "alive",
        MemberStatus::Suspect => "suspect",
        MemberStatus::Leaving => "leaving",
        MemberStatus::Left => "left",
        MemberStatus::Failed => "failed",
    }
}

async fn members(State(state): State<AppState>) -> Reply {
    match state.gossip.members().await {
        Ok(members) => (
            StatusCode::OK,
            Json(Value::Array(
                members
                    .into_iter()
                    .map(|m| {
                        json!({
                            "name": m.name,
                            "addr": m.addr.to_string(),
                            "generation": m.generation,
                            "status": status_name(m.status),
                            "tags": m.tags,
                        })
                    })
                    .collect(),
            )),
        ),
        Err(e) => error(StatusCode::SERVICE_UNAVAILABLE, e),
    }
}

/// `?topic=NAME`: only that topic's partitions.
#[derive(serde::Deserialize)]
struct PartitionsQuery {
    topic: Option<String>,
}

/// How long one hosted partition's log end is waited for while its log is busy: a log held by
/// a stuck disk operation shows `null` rather than holding up the whole answer (as
/// DescribeLogDirs does).
const LOG_END_WAIT: Duration = Duration::from_secs(1);

/// How many hosted partitions' log ends are read at once.
const LOG_END_READS: usize = 8;

/// `GET /v1/partitions[?topic=NAME]`: every partition of the cluster, sorted by topic then
/// index, as the metadata image has it (`topic`, `partition`, `topic_id`, `leader` (null when
/// offline), `leader_epoch`, `partition_epoch`, `replicas`, `isr`, and the `adding_replicas` and
/// `removing_replicas` of a reassignment in progress, empty otherwise); 404 for an unknown topic.
///
/// A partition this broker hosts also has `local`: this broker's `role` ("leader", "follower"
/// or "none" while not settled or offline), `high_watermark` and `log_end_offset` (null when
/// its log stayed busy for a second), and on the leader `followers`, each `broker` with the
/// `log_end_offset` its last fetch showed (null before one). These replica details come from
/// the broker asked, and only the leader knows its followers' progress: ask the leader.
async fn partitions(State(state): State<AppState>, Query(query): Query<PartitionsQuery>) -> Reply {
    use futures_util::StreamExt;

    let image = state.raft.image();
    let wanted = match &query.topic {
        None => None,
        Some(name) => match image.topic_by_name(name) {
            Some(topic) => Some(topic.topic_id),
            None => return error(StatusCode::NOT_FOUND, format!("unknown topic {name:?}")),
        },
    };
    let mut entries: Vec<_> = image
        .partitions()
        .filter(|(topic_id, _, _)| wanted.is_none_or(|wanted| wanted == *topic_id))
        .filter_map(|(topic_id, index, registration)| {
            let topic = image.topic(topic_id)?;
            let entry = json!({
                "topic": topic.name,
                "partition": index,
                "topic_id": topic_id.to_string(),
                "leader": registration.leader,
                "leader_epoch": registration.leader_epoch,
                "partition_epoch": registration.partition_epoch,
                "replicas": registration.replicas,
                "isr": registration.isr,
                "adding_replicas": registration.adding_replicas,
                "removing_replicas": registration.removing_replicas,
            });
            Some((topic.name.as_str(), index, topic_id, entry))
        })
        .collect();
    entries.sort_by_key(|&(topic, index, _, _)| (topic, index));

    // This broker's view of the ones it hosts (of this very topic, not a deleted namesake).
    let hosted: Vec<_> = entries
        .iter()
        .enumerate()
        .filter_map(|(at, &(topic, index, topic_id, _))| {
            let partition = state.replicas.get(topic, index)?;
            (partition.topic_id() == topic_id).then_some((at, partition))
        })
        .collect();
    let replicas = &state.replicas;
    let details: Vec<(usize, Value)> = futures_util::stream::iter(hosted)
        .map(|(at, partition)| async move {
            let log_end = tokio::time::timeout(
                LOG_END_WAIT,
                replicas.log_io(&partition, |log| log.log_end_offset()),
            )
            .await
            .ok()
            .and_then(Result::ok);
            (at, local_details(replicas.broker_id(), &partition, log_end))
        })
        .buffer_unordered(LOG_END_READS)
        .collect()
        .await;
    for (at, details) in details {
        entries[at].3["local"] = details;
    }
    (
        StatusCode::OK,
        Json(Value::Array(
            entries.into_iter().map(|(_, _, _, entry)| entry).collect(),
        )),
    )
}

/// The `local` object of a hosted partition.
fn local_details(
    broker_id: i32,
    partition: &skiff_broker::replica_manager::Partition,
    log_end_offset: Option<i64>,
) -> Value {
    let role = if partition.leading_epoch().is_some() {
        "leader"
    } else if partition.following().is_some() && partition.state().replicas.contains(&broker_id) {
        "follower"
    } else {
        "none"
    };
    let mut details = json!({
        "role": role,
        "high_watermark": partition.high_watermark(),
        "log_end_offset": log_end_offset,
    });
    if role == "leader" {
        details["followers"] = partition
            .follower_log_ends()
            .into_iter()
            .map(|(broker, log_end_offset)| {
                json!({ "broker": broker, "log_end_offset": log_end_offset })
            })
            .collect();
    }
    details
}

async fn user_event(State(state): State<AppState>, Json(event): Json<EventRequest>) -> Reply {
    match state
        .gossip
        .user_event(&event.name, event.payload.as_bytes(), event.coalesce)
        .await
    {
        Ok(()) => (StatusCode::OK, Json(json!({ "sent": true }))),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Sets tags of this broker (merged over its current ones; an empty value removes one); the
/// update spreads to every member.
async fn update_tags(State(state): State<AppState>, Json(changes): Json<TagChanges>) -> Reply {
    let mut tags = state.gossip.local().tags.clone();
    if let Ok(members) = state.gossip.members().await {
        if let Some(me) = members
            .into_iter()
            .find(|m| m.name == state.gossip.local().name)
        {
            tags = me.tags;
        }
    }
    let tags = match merge_tags(tags, changes) {
        Ok(tags) => tags,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    match state.gossip.update_tags(tags.clone()).await {
        Ok(()) => (StatusCode::OK, Json(json!({ "tags": tags }))),
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

/// Broadcasts a query and collects acknowledgements and responses until its timeout.
async fn query(State(state): State<AppState>, Json(request): Json<QueryRequest>) -> Reply {
    let options = match request.options() {
        Ok(options) => options,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut answers = match state
        .gossip
        .query(&request.name, request.payload.as_bytes(), options)
        .await
    {
        Ok(answers) => answers,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    let mut acks = Vec::new();
    let mut responses = serde_json::Map::new();
    while let Some(update) = answers.updates.recv().await {
        match update {
            QueryUpdate::Ack { from, .. } => acks.push(from),
            QueryUpdate::Response { from, payload, .. } => {
                responses.insert(
                    from,
                    Value::String(String::from_utf8_lossy(&payload).into()),
                );
            }
            QueryUpdate::Done { .. } => break,
        }
    }
    (
        StatusCode::OK,
        Json(json!({ "acks": acks, "responses": responses })),
    )
}

fn submit_reply(result: Result<u64, SubmitError>) -> Reply {
    match result {
        Ok(log_index) => (StatusCode::OK, Json(json!({ "log_index": log_index }))),
        Err(e @ (SubmitError::Unavailable(_) | SubmitError::NotLeader { .. })) => {
            error(StatusCode::SERVICE_UNAVAILABLE, e)
        }
        Err(e) => error(StatusCode::BAD_REQUEST, e),
    }
}

async fn raft_join(State(state): State<AppState>, Json(request): Json<RaftNodeRequest>) -> Reply {
    let node_id = request.node_id;
    let raft_addr = match request.join_address() {
        Ok(raft_addr) => raft_addr,
        Err(e) => return error(StatusCode::BAD_REQUEST, e),
    };
    submit_reply(
        state
            .raft
            .submit(ForwardRequest::Join { node_id, raft_addr })
            .await,
    )
}

async fn raft_remove(State(state): State<AppState>, Json(request): Json<RaftNodeRequest>) -> Reply {
    submit_reply(
        state
            .raft
            .submit(ForwardRequest::Remove {
                node_id: request.node_id,
            })
            .await,
    )
}

/// The key-value store: `/store/{key}` and `/store?prefix=P&limit=N`.
mod store {
    use axum::body::Bytes;
    use axum::extract::{Path, Query, State};
    use axum::http::{HeaderValue, StatusCode};
    use axum::response::{IntoResponse, Response};
    use axum::Json;
    use serde_json::{json, Value};
    use skiff::http_api::{
        check_key, PutBody, Refusal, StoreOptions as Options, DEFAULT_LIST_LIMIT,
    };
    use skiff_raft::kv::{KvEntry, KvOp, KvStore, KvWriteResult, MAX_VALUE_BYTES};
    use skiff_raft::SubmitError;

    use super::AppState;

    fn reply(status: StatusCode, body: Value) -> Response {
        (status, Json(body)).into_response()
    }

    fn error(status: StatusCode, message: impl ToString) -> Response {
        reply(status, json!({ "error": message.to_string() }))
    }

    fn failure(e: SubmitError) -> Response {
        match e {
            SubmitError::Invalid(m) if m.contains("exceeds") => {
                error(StatusCode::PAYLOAD_TOO_LARGE, m)
            }
            SubmitError::Invalid(m) => error(StatusCode::BAD_REQUEST, m),
            e @ (SubmitError::Unavailable(_) | SubmitError::NotLeader { .. }) => {
                let mut response = error(StatusCode::SERVICE_UNAVAILABLE, e);
                response
                    .headers_mut()
                    .insert("retry-after", HeaderValue::from_static("1"));
                response
            }
            e => error(StatusCode::INTERNAL_SERVER_ERROR, e),
        }
    }

    fn refused((status, message): Refusal) -> Response {
        error(status, message)
    }

    fn entry_json(key: &str, entry: &KvEntry) -> Value {
        json!({
            "key": key,
            "value": entry.value,
            "version": entry.version,
            "create_revision": entry.create_revision,
        })
    }

    async fn write(state: &AppState, op: KvOp) -> Response {
        let key = op.key().to_owned();
        match state.raft.kv_write(op).await {
            Ok((_, KvWriteResult::Put { version, created })) => reply(
                StatusCode::OK,
                json!({ "key": key, "version": version, "created": created }),
            ),
            Ok((_, KvWriteResult::Deleted { existed })) => {
                reply(StatusCode::OK, json!({ "key": key, "deleted": existed }))
            }
            Ok((_, KvWriteResult::CasFailed { current })) => reply(
                StatusCode::CONFLICT,
                json!({
                    "error": match current {
                        Some(version) => format!("compare-and-set failed: {key} is at version {version}"),
                        None => format!("compare-and-set failed: {key} does not exist"),
                    },
                    "key": key,
                    "current_version": current.unwrap_or(0),
                }),
            ),
            Err(e) => failure(e),
        }
    }

    pub async fn put(
        State(state): State<AppState>,
        Path(key): Path<String>,
        Query(options): Query<Options>,
        body: Bytes,
    ) -> Response {
        if let Err(refusal) = check_key(&key) {
            return refused(refusal);
        }
        if body.len() > MAX_VALUE_BYTES {
            return error(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("value of {} bytes exceeds {MAX_VALUE_BYTES}", body.len()),
            );
        }
        let Ok(value) = String::from_utf8(body.to_vec()) else {
            return error(StatusCode::BAD_REQUEST, "values must be UTF-8 text");
        };
        write(
            &state,
            KvOp::Put {
                key,
                value,
                cas: options.cas,
            },
        )
        .await
    }

    pub async fn post(State(state): State<AppState>, Json(body): Json<PutBody>) -> Response {
        if let Err(refusal) = check_key(&body.key) {
            return refused(refusal);
        }
        write(
            &state,
            KvOp::Put {
                key: body.key,
                value: body.value,
                cas: body.cas,
            },
        )
        .await
    }

    pub async fn delete(
        State(state): State<AppState>,
        Path(key): Path<String>,
        Query(options): Query<Options>,
    ) -> Response {
        if let Err(refusal) = check_key(&key) {
            return refused(refusal);
        }
        write(
            &state,
            KvOp::Delete {
                key,
                cas: options.cas,
            },
        )
        .await
    }

    /// Answers a read at the requested consistency: from the leader (the default) or from this
    /// broker's own copy, whose answer then says how far behind it may be.
    async fn read<T>(
        state: &AppState,
        options: &Options,
        local: impl FnOnce(&KvStore) -> T,
        linearizable: impl std::future::Future<Output = Result<T, SubmitError>>,
        render: impl FnOnce(T) -> (StatusCode, Value),
    ) -> Response {
        let (found, staleness) = match options.consistency.as_deref() {
            None | Some("linearizable") => match linearizable.await {
                Ok(found) => (found, None),
                Err(e) => return failure(e),
            },
            Some("stale") => {
                let (found, staleness) = state.raft.kv_stale(local);
                (found, Some(staleness))
            }
            Some(other) => {
                return error(
                    StatusCode::BAD_REQUEST,
                    format!("consistency must be linearizable or stale, not {other:?}"),
                )
            }
        };
        let (status, mut body) = render(found);
        if let Some(staleness) = staleness {
            body["staleness"] = json!(staleness);
        }
        reply(status, body)
    }

    pub async fn get(
        State(state): State<AppState>,
        Path(key): Path<String>,
        Query(options): Query<Options>,
    ) -> Response {
        if let Err(refusal) = check_key(&key) {
            return refused(refusal);
        }
        read(
            &state,
            &options,
            |store| store.get(&key).cloned(),
            state.raft.kv_get(&key),
            |entry| match entry {
                Some(entry) => (StatusCode::OK, entry_json(&key, &entry)),
                None => (
                    StatusCode::NOT_FOUND,
                    json!({ "error": "no such key", "key": key }),
                ),
            },
        )
        .await
    }

    pub async fn list(State(state): State<AppState>, Query(options): Query<Options>) -> Response {
        let prefix = options.prefix.clone().unwrap_or_default();
        let limit = options.limit.unwrap_or(DEFAULT_LIST_LIMIT);
        read(
            &state,
            &options,
            |store| store.list(&prefix, limit),
            state.raft.kv_list(&prefix, limit),
            |(items, more)| {
                let items: Vec<Value> = items.iter().map(|(k, e)| entry_json(k, e)).collect();
                (StatusCode::OK, json!({ "items": items, "more": more }))
            },
        )
        .await
    }
}
