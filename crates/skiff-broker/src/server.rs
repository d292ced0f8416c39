//! The Kafka TCP listener. Each connection has a reader that frames and decodes requests into a
//! bounded queue (the in-flight limit) and a loop that handles them one after another and
//! answers them strictly in order, as Kafka clients require; only the waits of acks=all
//! produces for the in-sync replicas overlap. Bad input closes only its own connection.

use std::collections::HashMap;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use futures_util::stream::{FuturesOrdered, StreamExt};
use futures_util::FutureExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::ApiKey;
use metrics::{Counter, Histogram};
use skiff_protocol::{
    api_versions_response, decode_request, encode_response, FrameDecoder, Request, RequestBody,
    RequestError, ResponseBody, SUPPORTED_APIS,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt, BufWriter};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::task::JoinSet;
use tracing::{debug, info, warn};

use crate::apis::ClientInfo;
use crate::KafkaApis;

/// A bound Kafka listener, so the caller knows the address before serving starts.
pub struct Listener(pub TcpListener);

impl Listener {
    pub async fn bind(addr: std::net::SocketAddr) -> std::io::Result<Self> {
        TcpListener::bind(addr).await.map(Self)
    }
}

/// Serves Kafka clients until `shutdown` turns true, then stops accepting, lets every
/// connection answer the requests it already read, and returns.
pub async fn serve(apis: Arc<KafkaApis>, listener: Listener, mut shutdown: watch::Receiver<bool>) {
    let slots = Arc::new(Semaphore::new(apis.config().max_connections));
    let mut connections = JoinSet::new();
    let connection_shutdown = shutdown.clone();
    let request_metrics = Arc::new(RequestMetrics::new());
    let mut paused = false;
    loop {
        // Out of file descriptors (EMFILE), every accept fails until some close: pause instead
        // of spinning on the error and filling the log.
        if std::mem::take(&mut paused) {
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => break,
            accepted = listener.0.accept() => {
                let (stream, peer) = match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        warn!(error = %e, "accept failed; pausing accepts for 100 ms");
                        paused = true;
                        continue;
                    }
                };
                let Ok(slot) = slots.clone().try_acquire_owned() else {
                    warn!(%peer, limit = apis.config().max_connections, "connection refused: too many connections");
                    metrics::counter!("skiff_connections_refused_total").increment(1);
                    continue;
                };
                let apis = apis.clone();
                let shutdown = connection_shutdown.clone();
                let request_metrics = request_metrics.clone();
                connections.spawn(async move {
                    metrics::gauge!("skiff_connections").increment(1.0);
                    debug!(%peer, "connection opened");
                    if let Err(reason) = connection(apis, stream, peer, shutdown, request_metrics).await {
                        debug!(%peer, %reason, "connection closed");
                    }
                    metrics::gauge!("skiff_connections").decrement(1.0);
                    drop(slot);
                });
            }
            Some(_) = connections.join_next(), if !connections.is_empty() => {}
        }
    }
    info!(
        open = connections.len(),
        "listener closed; finishing in-flight requests"
    );
    while connections.join_next().await.is_some() {}
}

async fn connection(
    apis: Arc<KafkaApis>,
    stream: TcpStream,
    peer: SocketAddr,
    shutdown: watch::Receiver<bool>,
    request_metrics: Arc<RequestMetrics>,
) -> Result<(), String> {
    stream.set_nodelay(true).map_err(|e| e.to_string())?;
    let (reader, writer) = stream.into_split();
    let (queue, mut requests) = mpsc::channel(apis.config().max_in_flight_per_connection);
    let framing = FrameDecoder::new(apis.config().max_frame_bytes);
    let read_task = tokio::spawn(read_requests(reader, framing, queue, shutdown));
    let result = answer_requests(&apis, &mut requests, writer, peer, &request_metrics).await;
    read_task.abort();
    result
}

/// Request counters per API and version and latency histograms per API, registered once so
/// that answering a request allocates nothing for metrics.
struct RequestMetrics {
    requests: HashMap<(i16, i16), Counter>,
    latency: HashMap<i16, Histogram>,
}

impl RequestMetrics {
    fn new() -> Self {
        let mut requests = HashMap::new();
        let mut latency = HashMap::new();
        for &(key, min, max) in SUPPORTED_APIS {
            let api = format!("{key:?}");
            latency.insert(
                key as i16,
                metrics::histogram!("skiff_request_duration_seconds", "api" => api.clone()),
            );
            for version in min..=max {
                requests.insert(
                    (key as i16, version),
                    metrics::counter!("skiff_requests_total", "api" => api.clone(), "version" => version.to_string()),
                );
            }
        }
        Self { requests, latency }
    }

    fn record(&self, api: ApiKey, version: i16, elapsed: Duration) {
        if let Some(counter) = self.requests.get(&(api as i16, version)) {
            counter.increment(1);
        }
        if let Some(histogram) = self.latency.get(&(api as i16)) {
            histogram.record(elapsed.as_secs_f64());
        }
    }
}

/// What the reader hands to the answering loop.
type Incoming = Result<Request, RequestError>;

async fn read_requests(
    mut reader: OwnedReadHalf,
    framing: FrameDecoder,
    queue: mpsc::Sender<Incoming>,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), String> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        while let Some(frame) = framing.decode(&mut buf).map_err(|e| {
            metrics::counter!("skiff_request_errors_total", "reason" => "frame").increment(1);
            warn!(error = %e, "closing connection");
            e.to_string()
        })? {
            let decoded = decode_request(frame);
            // An ApiVersions request at a version this broker does not know is answered (KIP-511)
            // and the client retries lower on the same connection; any other bad request ends it.
            let fatal = matches!(
                &decoded,
                Err(e) if !matches!(
                    e,
                    RequestError::UnsupportedVersion { api_key: ApiKey::ApiVersions, .. }
                        | RequestError::Refused { .. }
                )
            );
            queue
                .send(decoded)
                .await
                .map_err(|_| "connection closed".to_string())?;
            if fatal {
                return Ok(());
            }
        }
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return Ok(()),
            read = reader.read_buf(&mut buf) => match read {
                Ok(0) => return Ok(()),
                Ok(_) => {}
                Err(e) => return Err(e.to_string()),
            },
        }
    }
}

/// An answer, or one still waiting for the in-sync replicas, in the connection's queue.
type Answer = Pin<Box<dyn Future<Output = Result<Bytes, String>> + Send>>;

async fn answer_requests(
    apis: &Arc<KafkaApis>,
    requests: &mut mpsc::Receiver<Incoming>,
    writer: OwnedWriteHalf,
    peer: SocketAddr,
    request_metrics: &Arc<RequestMetrics>,
) -> Result<(), String> {
    // Kafka reports a member's host as "/<ip>".
    let client_host = format!("/{}", peer.ip());
    let mut writer = BufWriter::with_capacity(64 * 1024, writer);
    // Requests are handled one after another, in order; only an acks=all produce's wait for
    // the in-sync replicas overlaps with the requests after it (its records are appended
    // before the next request is handled), so a client's pipelined produces cost one
    // replication round trip, not one each. Answers leave in request order.
    let mut answers: FuturesOrdered<Answer> = FuturesOrdered::new();
    let max_waiting = apis.config().max_in_flight_per_connection.max(1);
    let mut reading = true;
    while reading || !answers.is_empty() {
        let blocked = requests.is_empty() || answers.len() >= max_waiting;
        if blocked && !writer.buffer().is_empty() {
            writer.flush().await.map_err(|e| e.to_string())?;
        }
        tokio::select! {
            biased;
            Some(answer) = answers.next(), if !answers.is_empty() => {
                writer.write_all(&answer?).await.map_err(|e| e.to_string())?;
                // Whatever else is ready goes out in the same flush.
                while let Some(Some(answer)) = answers.next().now_or_never() {
                    writer.write_all(&answer?).await.map_err(|e| e.to_string())?;
                }
                // Answers stuck behind a wait must not sit in the buffer meanwhile.
                if !answers.is_empty() {
                    writer.flush().await.map_err(|e| e.to_string())?;
                }
            }
            incoming = requests.recv(), if reading && answers.len() < max_waiting => {
                let Some(incoming) = incoming else {
                    reading = false;
                    continue;
                };
                // A request that may wait long (a fetch's long poll, a rebalance) goes after
                // the answers before it are out, as if handled strictly in turn.
                let waits_long = matches!(
                    &incoming,
                    Ok(r) if matches!(r.api_key, ApiKey::Fetch | ApiKey::JoinGroup | ApiKey::SyncGroup)
                );
                if waits_long {
                    write_answers(&mut answers, &mut writer).await?;
                }
                match answer(apis, incoming, &client_host, request_metrics).await {
                    Ok(answer) => answers.push_back(answer),
                    Err(e) => {
                        // The answers before the one that ends the connection still go out:
                        // their records are appended, and a client that never hears of them
                        // would send them again.
                        write_answers(&mut answers, &mut writer).await?;
                        return Err(e);
                    }
                }
            }
        }
    }
    writer.flush().await.map_err(|e| e.to_string())
}

/// Waits for every queued answer and writes them, in order, then flushes.
async fn write_answers(
    answers: &mut FuturesOrdered<Answer>,
    writer: &mut BufWriter<OwnedWriteHalf>,
) -> Result<(), String> {
    while let Some(answer) = answers.next().await {
        writer
            .write_all(&answer?)
            .await
            .map_err(|e| e.to_string())?;
    }
    writer.flush().await.map_err(|e| e.to_string())
}

/// Handles one request; its answer is ready, or (acks=all produce) waits for the replicas.
async fn answer(
    apis: &Arc<KafkaApis>,
    incoming: Incoming,
    client_host: &str,
    request_metrics: &Arc<RequestMetrics>,
) -> Result<Answer, String> {
    let frame = match incoming {
        Ok(request) => {
            let (api_key, version, correlation_id) =
                (request.api_key, request.version(), request.correlation_id());
            let started = Instant::now();
            let client_id = request.header.client_id.clone();
            let client = ClientInfo {
                client_id: client_id.as_ref().map_or("", |c| c.as_str()),
                client_host,
            };
            // JoinGroup and SyncGroup wait for the rest of the group, bounded by the
            // rebalance timeout the client chose; everything else by the request timeout.
            let waits_for_group = matches!(api_key, ApiKey::JoinGroup | ApiKey::SyncGroup);
            let timeout = apis.config().request_timeout;
            let timed_out = || format!("{api_key:?} request took longer than the request timeout");
            let body = match request.body {
                RequestBody::Produce(produce) => {
                    let appended = tokio::time::timeout(timeout, apis.append_produce(produce))
                        .await
                        .map_err(|_| timed_out())?;
                    if appended.replicating() {
                        let request_metrics = request_metrics.clone();
                        return Ok(Box::pin(async move {
                            let body = appended.answer().await;
                            request_metrics.record(api_key, version, started.elapsed());
                            encode_answer(
                                correlation_id,
                                api_key,
                                version,
                                body.map(ResponseBody::Produce),
                            )
                        }));
                    }
                    appended.answer().await.map(ResponseBody::Produce)
                }
                body => {
                    let request = Request {
                        api_key,
                        header: request.header,
                        body,
                    };
                    let handled = apis.handle(request, &client);
                    if waits_for_group {
                        handled.await
                    } else {
                        tokio::time::timeout(timeout, handled)
                            .await
                            .map_err(|_| timed_out())?
                    }
                }
            };
            request_metrics.record(api_key, version, started.elapsed());
            encode_answer(correlation_id, api_key, version, body)?
        }
        Err(RequestError::UnsupportedVersion {
            api_key: ApiKey::ApiVersions,
            version,
            correlation_id,
        }) => {
            // KIP-511: answer in v0 with the supported range so the client retries lower.
            debug!(version, "ApiVersions version not supported; answering v0");
            let body = api_versions_response(ResponseError::UnsupportedVersion.code());
            encode_response(
                correlation_id,
                ApiKey::ApiVersions,
                0,
                &ResponseBody::ApiVersions(body),
            )
            .map_err(|e| e.to_string())?
        }
        Err(RequestError::Refused {
            api_key,
            version,
            response,
        }) => {
            debug!(?api_key, version, "refused with an error response");
            response
        }
        Err(e) => {
            metrics::counter!("skiff_request_errors_total", "reason" => "decode").increment(1);
            warn!(error = %e, "closing connection after a request that cannot be answered");
            return Err(e.to_string());
        }
    };
    Ok(Box::pin(std::future::ready(Ok(frame))))
}

/// The framed response; nothing for an acks=0 produce.
fn encode_answer(
    correlation_id: i32,
    api_key: ApiKey,
    version: i16,
    body: Option<ResponseBody>,
) -> Result<Bytes, String> {
    match body {
        Some(body) => encode_response(correlation_id, api_key, version, &body)
            .map_err(|e| format!("encoding {api_key:?} v{version} response: {e}")),
        None => Ok(Bytes::new()),
    }
}
