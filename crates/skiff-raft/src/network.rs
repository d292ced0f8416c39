//! Raft's transport: one TCP connection per peer client, each message a 4-byte big-endian length
//! and a JSON body, one request in flight per connection. Every request names the sender and the
//! cluster it belongs to, so a node of another cluster, or a node this one does not know, is
//! refused before its message reaches Raft.
//!
//! With a cluster secret, both ends of every connection prove they know it before anything else
//! is read (`ClusterSecret`): an HMAC-SHA256 challenge-response over a nonce from each side, so
//! a peer without the secret never gets a message decoded.
//!
//! The same port carries the brokers' binary peer RPC (partition replication fetches record
//! bytes, which JSON would bloat and slow down). A connection becomes a binary peer stream when
//! its first message is `Rpc::OpenPeerStream` and the node admits it as it admits any message,
//! and only once a `PeerService` is set. From the `Reply::PeerStreamOpen` on, the connection
//! carries binary frames only, each a request answered by one frame in order: the same 4-byte
//! length and, with a secret, the same session tag with the numbering continued, so the
//! handshake and the tags protect the record bytes as they protect Raft. A request is at most
//! `MAX_PEER_REQUEST_BYTES` (a fetch request, never data), an answer at most
//! `MAX_MESSAGE_BYTES`. The sender is checked again on every request, so a node removed from
//! the membership loses its open streams at its next request.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{RPCError, ReplicationClosed, StreamingError, Unreachable};
use openraft::network::{RPCOption, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, SnapshotResponse, TransferLeaderRequest,
    TransferLeaderResponse, VoteRequest, VoteResponse,
};
use openraft::{BasicNode, RaftNetworkV2};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::forward::{ForwardReply, ForwardRequest};
use crate::peer::PeerService;
use crate::types::{Snapshot, SnapshotMeta, TypeConfig, Vote};

#[cfg(feature = "fuzzing")]
pub mod fuzzing;

/// Largest message accepted: a snapshot of a large cluster fits, a garbage length does not.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
/// Largest binary peer request: requests ask for data and are small, so a peer cannot make a
/// node buffer much before its service sees the request.
pub const MAX_PEER_REQUEST_BYTES: usize = 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest a client waits for the mutual proof of the cluster secret on a new connection.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
const NONCE_LEN: usize = 32;
const TAG_LEN: usize = 32;

/// The secret every broker of a cluster is given (`--cluster-secret`). Cluster-internal
/// connections are accepted only from peers that prove they know it, and prove it back.
#[derive(Clone)]
pub struct ClusterSecret([u8; 32]);

impl std::fmt::Debug for ClusterSecret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ClusterSecret(..)")
    }
}

type HmacSha256 = hmac::Hmac<sha2::Sha256>;

impl ClusterSecret {
    pub fn new(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    fn tag(&self, label: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
        tag(&self.0, label, parts)
    }

    fn verify(&self, label: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
        verify(&self.0, label, parts, expected)
    }

    /// A key for another use, derived from the secret, so one secret configures a cluster.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        self.tag(b"skiff derived key", &[purpose.as_bytes()])
    }
}

fn keyed(key: &[u8], label: &[u8], parts: &[&[u8]]) -> HmacSha256 {
    use hmac::Mac;
    let mut mac = HmacSha256::new_from_slice(key).expect("HMAC takes a key of any length");
    mac.update(label);
    for part in parts {
        mac.update(part);
    }
    mac
}

fn tag(key: &[u8], label: &[u8], parts: &[&[u8]]) -> [u8; TAG_LEN] {
    use hmac::Mac;
    keyed(key, label, parts).finalize().into_bytes().into()
}

/// Checks a tag in constant time.
fn verify(key: &[u8], label: &[u8], parts: &[&[u8]], expected: &[u8]) -> bool {
    use hmac::Mac;
    keyed(key, label, parts).verify_slice(expected).is_ok()
}

/// The frames of one authenticated connection: each carries an HMAC, under a key only the two
/// ends that proved the secret to each other can derive, over its direction, its number and its
/// body, so a frame cannot be forged, replayed, reordered or sent back the other way, and a
/// connection taken over after the handshake is useless.
pub(crate) struct Session {
    key: [u8; 32],
    send_label: &'static [u8],
    receive_label: &'static [u8],
    sent: u64,
    received: u64,
}

impl Session {
    fn seal(&mut self, body: &[u8]) -> [u8; TAG_LEN] {
        let tag = tag(
            &self.key,
            self.send_label,
            &[&self.sent.to_be_bytes(), body],
        );
        self.sent += 1;
        tag
    }

    fn open(&mut self, body: &[u8], expected: &[u8]) -> io::Result<()> {
        let number = self.received.to_be_bytes();
        if !verify(&self.key, self.receive_label, &[&number, body], expected) {
            return Err(io::Error::new(
                io::ErrorKind::PermissionDenied,
                "a frame failed its authentication",
            ));
        }
        self.received += 1;
        Ok(())
    }
}

fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(nonce)
}

const CLIENT_PROOF: &[u8] = b"skiff raft client proof";
const SERVER_PROOF: &[u8] = b"skiff raft server proof";
const SESSION_KEY: &[u8] = b"skiff raft session key";
const CLIENT_FRAMES: &[u8] = b"skiff raft client frame";
const SERVER_FRAMES: &[u8] = b"skiff raft server frame";

fn permission_denied(what: String) -> io::Error {
    io::Error::new(io::ErrorKind::PermissionDenied, what)
}

/// The accepting side (node `me`): a challenge, then the client's proof over both nonces and
/// the node it meant to reach (so a proof relayed from a connection meant for another node is
/// refused), then ours. Fixed-size reads only: nothing the peer sends is decoded before it has
/// proved itself.
async fn prove_as_server<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    me: u64,
) -> io::Result<Session> {
    let server_nonce = nonce()?;
    stream.write_all(&server_nonce).await?;
    let mut client_nonce = [0u8; NONCE_LEN];
    let mut client_tag = [0u8; TAG_LEN];
    stream.read_exact(&mut client_nonce).await?;
    stream.read_exact(&mut client_tag).await?;
    let me = me.to_be_bytes();
    if !secret.verify(
        CLIENT_PROOF,
        &[&server_nonce, &client_nonce, &me],
        &client_tag,
    ) {
        return Err(permission_denied(
            "the peer did not prove the cluster secret for this node".into(),
        ));
    }
    stream
        .write_all(&secret.tag(SERVER_PROOF, &[&client_nonce, &server_nonce, &me]))
        .await?;
    Ok(Session {
        key: secret.tag(SESSION_KEY, &[&server_nonce, &client_nonce, &me]),
        send_label: SERVER_FRAMES,
        receive_label: CLIENT_FRAMES,
        sent: 0,
        received: 0,
    })
}

/// The connecting side, reaching node `target`: answers the challenge, then checks that the
/// server proves the secret as that node.
async fn prove_as_client<S: AsyncRead + AsyncWrite + Unpin>(
    stream: &mut S,
    secret: &ClusterSecret,
    target: u64,
) -> io::Result<Session> {
    let mut server_nonce = [0u8; NONCE_LEN];
    stream.read_exact(&mut server_nonce).await?;
    let client_nonce = nonce()?;
    let target = target.to_be_bytes();
    let mut proof = client_nonce.to_vec();
    proof.extend_from_slice(&secret.tag(CLIENT_PROOF, &[&server_nonce, &client_nonce, &target]));
    stream.write_all(&proof).await?;
    let mut server_tag = [0u8; TAG_LEN];
    stream.read_exact(&mut server_tag).await?;
    if !secret.verify(
        SERVER_PROOF,
        &[&client_nonce, &server_nonce, &target],
        &server_tag,
    ) {
        return Err(permission_denied(
            "the peer did not prove the cluster secret (is --cluster-secret the same on every broker?)".into(),
        ));
    }
    Ok(Session {
        key: secret.tag(SESSION_KEY, &[&server_nonce, &client_nonce, &target]),
        send_label: CLIENT_FRAMES,
        receive_label: SERVER_FRAMES,
        sent: 0,
        received: 0,
    })
}

#[derive(Serialize, Deserialize)]
pub(crate) struct Envelope {
    pub cluster_id: Option<String>,
    pub from: u64,
    pub rpc: Rpc,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Rpc {
    Append(AppendEntriesRequest<TypeConfig>),
    Vote(VoteRequest<TypeConfig>),
    PreVote(VoteRequest<TypeConfig>),
    Snapshot {
        vote: Vote,
        meta: SnapshotMeta,
        data: String,
    },
    TransferLeader(TransferLeaderRequest<TypeConfig>),
    Forward(ForwardRequest),
    /// Turns this connection into a binary peer stream, if the node accepts.
    OpenPeerStream,
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Forward(ForwardReply),
    /// The connection carries binary peer frames from now on.
    PeerStreamOpen,
    /// The receiver will not take this message from this sender; the text says why.
    Refused(String),
}

/// Sends one frame: length, JSON body, and with a session the body's tag.
pub(crate) async fn write_message<T: Serialize, W: AsyncWrite + Unpin>(
    stream: &mut W,
    session: Option<&mut Session>,
    message: &T,
) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    write_frame(stream, session, &body, MAX_MESSAGE_BYTES).await
}

/// Reads one frame; with a session, its tag is checked before the body is decoded.
pub(crate) async fn read_message<T: DeserializeOwned, R: AsyncRead + Unpin>(
    stream: &mut R,
    session: Option<&mut Session>,
) -> io::Result<T> {
    let body = read_frame(stream, session, MAX_MESSAGE_BYTES).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Sends one frame of at most `limit` bytes: length, body, and with a session the body's tag.
pub(crate) async fn write_frame<W: AsyncWrite + Unpin>(
    stream: &mut W,
    session: Option<&mut Session>,
    body: &[u8],
    limit: usize,
) -> io::Result<()> {
    if body.len() > limit {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("message of {} bytes exceeds {limit}", body.len()),
        ));
    }
    let tag = session.map(|session| session.seal(body));
    let len = body.len() + tag.map_or(0, |tag| tag.len());
    let mut framed = Vec::with_capacity(4 + len);
    framed.extend_from_slice(&(len as u32).to_be_bytes());
    framed.extend_from_slice(body);
    if let Some(tag) = tag {
        framed.extend_from_slice(&tag);
    }
    stream.write_all(&framed).await
}

/// Reads one frame of at most `limit` bytes, its tag checked with a session. A length over the
/// limit is `InvalidData`, before any of the body is read.
pub(crate) async fn read_frame<R: AsyncRead + Unpin>(
    stream: &mut R,
    session: Option<&mut Session>,
    limit: usize,
) -> io::Result<Vec<u8>> {
    let len = stream.read_u32().await? as usize;
    let tag_len = if session.is_some() { TAG_LEN } else { 0 };
    if len > limit + tag_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message length {len} exceeds {limit}"),
        ));
    }
    // Grown as bytes arrive, so a length prefix alone reserves nothing.
    let mut body = Vec::new();
    (&mut *stream)
        .take(len as u64)
        .read_to_end(&mut body)
        .await?;
    if body.len() < len {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    if let Some(session) = session {
        let Some(split) = body.len().checked_sub(TAG_LEN) else {
            return Err(permission_denied("a frame without its tag".into()));
        };
        let tag = body.split_off(split);
        session.open(&body, &tag)?;
    }
    Ok(body)
}

/// Decides whether a message may reach Raft, and hands it over. Implemented by the node.
pub(crate) trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, envelope: Envelope) -> impl Future<Output = Reply> + Send;

    /// The service for a binary request from `from`, on a peer stream it opened earlier, or
    /// why `from` may no longer send one.
    fn peer_service(&self, from: u64) -> Result<Arc<dyn PeerService>, String>;
}

/// Connections that have not yet proved the cluster secret, at once, in all and from one address:
/// more are closed at once, so strangers can neither hold the process's sockets with handshakes
/// they never finish nor, from one address, crowd out the brokers.
const MAX_UNPROVED_CONNECTIONS: usize = 256;
const MAX_UNPROVED_PER_ADDRESS: usize = 8;
/// Whether a wrong proof was already logged at warn: later ones are counted, not logged.
static WRONG_PROOF_WARNED: std::sync::atomic::AtomicBool =
    std::sync::atomic::AtomicBool::new(false);

/// A peer answers the challenge within one round trip; a server waits no longer than this.
const SERVER_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(2);

/// Connections still proving themselves, by peer address.
#[derive(Default)]
struct Unproved {
    by_address: std::sync::Mutex<std::collections::HashMap<std::net::IpAddr, usize>>,
}

/// A place among the unproved connections, given back on drop.
struct Proving<'a> {
    unproved: &'a Unproved,
    address: std::net::IpAddr,
}

impl Unproved {
    fn enter(&self, address: std::net::IpAddr) -> Option<Proving<'_>> {
        let mut by_address = self.by_address.lock().unwrap_or_else(|p| p.into_inner());
        let total: usize = by_address.values().sum();
        let here = by_address.entry(address).or_insert(0);
        if total >= MAX_UNPROVED_CONNECTIONS || *here >= MAX_UNPROVED_PER_ADDRESS {
            return None;
        }
        *here += 1;
        Some(Proving {
            unproved: self,
            address,
        })
    }
}

impl Drop for Proving<'_> {
    fn drop(&mut self) {
        let mut by_address = self
            .unproved
            .by_address
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        if let Some(count) = by_address.get_mut(&self.address) {
            *count -= 1;
            if *count == 0 {
                by_address.remove(&self.address);
            }
        }
    }
}

/// Accepts peer connections until the listener fails; each connection is served in order, once
/// the peer proved it knows `secret` (when there is one) and that it means to reach node `me`.
pub(crate) async fn serve<H: RpcHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    secret: Option<ClusterSecret>,
    me: u64,
) {
    let unproved = Arc::new(Unproved::default());
    loop {
        let (mut stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                warn!(error = %e, "accepting a Raft connection failed");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let handler = handler.clone();
        let secret = secret.clone();
        let unproved = unproved.clone();
        tokio::spawn(async move {
            let mut session = None;
            if let Some(secret) = &secret {
                let Some(_proving) = unproved.enter(peer.ip()) else {
                    metrics::counter!("skiff_raft_unproved_connections_total", "reason" => "too many")
                        .increment(1);
                    debug!(%peer, "too many Raft connections proving the cluster secret; closed");
                    return;
                };
                let proved = tokio::time::timeout(
                    SERVER_HANDSHAKE_TIMEOUT,
                    prove_as_server(&mut stream, secret, me),
                )
                .await;
                match proved {
                    Ok(Ok(proved)) => session = Some(proved),
                    Ok(Err(e)) if e.kind() == io::ErrorKind::PermissionDenied => {
                        metrics::counter!("skiff_raft_unproved_connections_total", "reason" => "wrong proof")
                            .increment(1);
                        // A misconfigured broker retries every heartbeat: say it now and then.
                        if WRONG_PROOF_WARNED.swap(true, std::sync::atomic::Ordering::Relaxed) {
                            debug!(%peer, "refused a Raft connection: wrong proof of the cluster secret");
                        } else {
                            warn!(%peer, "refused a Raft connection: its proof of the cluster secret is wrong (is --cluster-secret the same on every broker?); further refusals are counted in skiff_raft_unproved_connections_total");
                        }
                        return;
                    }
                    _ => {
                        metrics::counter!("skiff_raft_unproved_connections_total", "reason" => "no proof")
                            .increment(1);
                        debug!(%peer, "refused a Raft connection: no proof of the cluster secret");
                        return;
                    }
                }
            }
            loop {
                let envelope: Envelope = match read_message(&mut stream, session.as_mut()).await {
                    Ok(envelope) => envelope,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::UnexpectedEof {
                            debug!(%peer, error = %e, "dropping Raft connection");
                        }
                        return;
                    }
                };
                let opens = matches!(envelope.rpc, Rpc::OpenPeerStream).then_some(envelope.from);
                let reply = handler.handle(envelope).await;
                if write_message(&mut stream, session.as_mut(), &reply)
                    .await
                    .is_err()
                {
                    return;
                }
                if let (Some(from), Reply::PeerStreamOpen) = (opens, &reply) {
                    serve_peer_stream(&mut stream, session, &*handler, from, peer).await;
                    return;
                }
            }
        });
    }
}

fn refuse_peer_request(reason: &'static str) {
    metrics::counter!("skiff_raft_peer_requests_refused_total", "reason" => reason).increment(1);
}

/// Answers the binary requests of an admitted peer stream until it fails or closes. Anything
/// refused closes the stream: binary frames have no room for a refusal, and the peer learns
/// why when it opens the next one.
async fn serve_peer_stream<H: RpcHandler>(
    stream: &mut TcpStream,
    mut session: Option<Session>,
    handler: &H,
    from: u64,
    peer: SocketAddr,
) {
    loop {
        let request = match read_frame(stream, session.as_mut(), MAX_PEER_REQUEST_BYTES).await {
            Ok(request) => request,
            Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                refuse_peer_request("too large");
                warn!(%peer, from, error = %e, "refused a peer request; closing its stream");
                return;
            }
            Err(e) => {
                if e.kind() != io::ErrorKind::UnexpectedEof {
                    debug!(%peer, from, error = %e, "dropping peer stream");
                }
                return;
            }
        };
        let service = match handler.peer_service(from) {
            Ok(service) => service,
            Err(reason) => {
                refuse_peer_request("not admitted");
                warn!(%peer, from, %reason, "refused a peer request; closing its stream");
                return;
            }
        };
        let answer = service.call(from, bytes::Bytes::from(request)).await;
        if let Err(e) = write_frame(stream, session.as_mut(), &answer, MAX_MESSAGE_BYTES).await {
            if e.kind() == io::ErrorKind::InvalidInput {
                warn!(%peer, from, error = %e, "a peer answer is too large; closing its stream");
            }
            return;
        }
    }
}

/// Who this node is when it talks to peers.
#[derive(Clone)]
pub(crate) struct LocalIdentity {
    pub node_id: u64,
    pub shared: Arc<crate::state_machine::SharedState>,
    pub secret: Option<ClusterSecret>,
}

/// A connection to one peer, opened on first use and again after any failure.
pub(crate) struct PeerClient {
    identity: LocalIdentity,
    target: u64,
    addr: String,
    connection: Option<(TcpStream, Option<Session>)>,
}

impl PeerClient {
    pub(crate) fn new(identity: LocalIdentity, target: u64, addr: String) -> Self {
        Self {
            identity,
            target,
            addr,
            connection: None,
        }
    }

    pub(crate) async fn call(&mut self, rpc: Rpc, timeout: Duration) -> io::Result<Reply> {
        let envelope = Envelope {
            cluster_id: self.identity.shared.cluster_id(),
            from: self.identity.node_id,
            rpc,
        };
        tokio::time::timeout(timeout, self.exchange(&envelope))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!(
                        "node {} at {} did not answer in {timeout:?}",
                        self.target, self.addr
                    ),
                ))
            })
    }

    /// One request and its reply. The connection is taken out for the exchange and put back
    /// only once the reply is read: if the caller gives up halfway (an error, a timeout, a
    /// dropped future), the connection closes with it, so a late reply can never be taken for
    /// the answer to the next request.
    async fn exchange(&mut self, envelope: &Envelope) -> io::Result<Reply> {
        let (mut stream, mut session) = match self.connection.take().filter(|(s, _)| still_open(s))
        {
            Some(connection) => connection,
            None => self.connect().await?,
        };
        write_message(&mut stream, session.as_mut(), envelope).await?;
        let reply = read_message(&mut stream, session.as_mut()).await?;
        self.connection = Some((stream, session));
        Ok(reply)
    }

    async fn connect(&self) -> io::Result<(TcpStream, Option<Session>)> {
        connect(&self.identity, self.target, &self.addr).await
    }
}

/// Connects to node `target` at `addr` and, with a secret, proves it both ways. Nothing is sent
/// before the connection stands: callers may retry these failures safely.
pub(crate) async fn connect(
    identity: &LocalIdentity,
    target: u64,
    addr: &str,
) -> io::Result<(TcpStream, Option<Session>)> {
    let addr: SocketAddr = tokio::net::lookup_host(addr)
        .await?
        .next()
        .ok_or_else(|| io::Error::other(format!("{addr} does not resolve")))?;
    let not_connected = |what: String| io::Error::new(io::ErrorKind::NotConnected, what);
    let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
        .await
        .map_err(|_| not_connected(format!("connecting to {addr} timed out")))?
        .map_err(|e| not_connected(format!("cannot connect to {addr}: {e}")))?;
    stream.set_nodelay(true)?;
    let Some(secret) = &identity.secret else {
        return Ok((stream, None));
    };
    let session = tokio::time::timeout(
        HANDSHAKE_TIMEOUT,
        prove_as_client(&mut stream, secret, target),
    )
    .await
    .map_err(|_| {
        not_connected(format!(
            "node {target} at {addr} did not prove the cluster secret in time (is --cluster-secret the same on every broker?)"
        ))
    })?
    .map_err(|e| {
        not_connected(if e.kind() == io::ErrorKind::UnexpectedEof {
            format!(
                "node {target} at {addr} closed the connection during the cluster-secret handshake: it has another --cluster-secret, or none"
            )
        } else {
            format!("node {target} at {addr}: {e}")
        })
    })?;
    Ok((stream, Some(session)))
}

/// The client end of a binary peer stream to one node.
pub(crate) struct PeerStream {
    /// Where it was opened, so a caller notices when the membership moves the node.
    pub addr: String,
    stream: TcpStream,
    session: Option<Session>,
}

impl PeerStream {
    /// Connects and asks for a peer stream. Nothing binary is sent before the node accepted.
    pub(crate) async fn open(
        identity: &LocalIdentity,
        target: u64,
        addr: String,
    ) -> io::Result<Self> {
        let (mut stream, mut session) = connect(identity, target, &addr).await?;
        let envelope = Envelope {
            cluster_id: identity.shared.cluster_id(),
            from: identity.node_id,
            rpc: Rpc::OpenPeerStream,
        };
        write_message(&mut stream, session.as_mut(), &envelope).await?;
        match read_message(&mut stream, session.as_mut()).await? {
            Reply::PeerStreamOpen => Ok(Self {
                addr,
                stream,
                session,
            }),
            Reply::Refused(reason) => Err(permission_denied(format!(
                "node {target} at {addr} refused a peer stream: {reason}"
            ))),
            other => Err(wrong_reply(other)),
        }
    }

    /// Whether the node has neither closed the stream nor sent anything unasked.
    pub(crate) fn still_open(&self) -> bool {
        still_open(&self.stream)
    }

    /// One request and its answer. A caller that gives up halfway must drop the stream.
    pub(crate) async fn exchange(&mut self, request: &[u8]) -> io::Result<Vec<u8>> {
        write_frame(
            &mut self.stream,
            self.session.as_mut(),
            request,
            MAX_PEER_REQUEST_BYTES,
        )
        .await?;
        read_frame(&mut self.stream, self.session.as_mut(), MAX_MESSAGE_BYTES).await
    }
}

fn unreachable(e: impl std::fmt::Display) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&io::Error::other(e.to_string())))
}

/// An idle connection is still usable if the peer has neither closed it (it restarted, say)
/// nor sent anything unasked. Checked before reuse, because a request sent on a connection the
/// peer already closed has an unknown outcome and is not retried.
fn still_open(stream: &TcpStream) -> bool {
    let mut probe = [0u8; 1];
    matches!(stream.try_read(&mut probe), Err(e) if e.kind() == io::ErrorKind::WouldBlock)
}

/// Why a reply of the wrong kind came back.
fn wrong_reply(reply: Reply) -> io::Error {
    io::Error::other(match reply {
        Reply::Refused(reason) => format!("refused: {reason}"),
        _ => "the peer answered with the wrong message type".to_owned(),
    })
}

fn unexpected(reply: Reply) -> RPCError<TypeConfig> {
    RPCError::Unreachable(Unreachable::new(&wrong_reply(reply)))
}

pub(crate) struct NetworkFactory {
    pub identity: LocalIdentity,
}

impl RaftNetworkFactory<TypeConfig> for NetworkFactory {
    type Network = PeerClient;

    async fn new_client(&mut self, target: u64, node: &BasicNode) -> Self::Network {
        PeerClient::new(self.identity.clone(), target, node.addr.clone())
    }
}

impl RaftNetworkV2<TypeConfig> for PeerClient {
    type SnapshotData = Vec<u8>;

    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<AppendEntriesResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Rpc::Append(rpc), option.soft_ttl()).await {
            Ok(Reply::Append(response)) => Ok(response),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Rpc::Vote(rpc), option.soft_ttl()).await {
            Ok(Reply::Vote(response)) => Ok(response),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn pre_vote(
        &mut self,
        rpc: VoteRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<VoteResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Rpc::PreVote(rpc), option.soft_ttl()).await {
            Ok(Reply::Vote(response)) => Ok(response),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(unreachable(e)),
        }
    }

    async fn full_snapshot(
        &mut self,
        vote: Vote,
        snapshot: Snapshot,
        cancel: impl Future<Output = ReplicationClosed> + Send + 'static,
        option: RPCOption,
    ) -> Result<SnapshotResponse<TypeConfig>, StreamingError<TypeConfig>> {
        let data = String::from_utf8(snapshot.snapshot)
            .map_err(|e| StreamingError::Unreachable(Unreachable::new(&e)))?;
        let rpc = Rpc::Snapshot {
            vote,
            meta: snapshot.meta,
            data,
        };
        let timeout = option.hard_ttl();
        tokio::select! {
            closed = cancel => Err(StreamingError::Closed(closed)),
            result = self.call(rpc, timeout) => match result {
                Ok(Reply::Snapshot(response)) => Ok(response),
                Ok(other) => Err(StreamingError::Unreachable(Unreachable::new(&wrong_reply(other)))),
                Err(e) => Err(StreamingError::Unreachable(Unreachable::new(&e))),
            },
        }
    }

    async fn transfer_leader(
        &mut self,
        req: TransferLeaderRequest<TypeConfig>,
        option: RPCOption,
    ) -> Result<TransferLeaderResponse<TypeConfig>, RPCError<TypeConfig>> {
        match self.call(Rpc::TransferLeader(req), option.soft_ttl()).await {
            Ok(Reply::TransferLeader(response)) => Ok(response),
            Ok(other) => Err(unexpected(other)),
            Err(e) => Err(unreachable(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state_machine::{MetadataListener, SharedState};
    use skiff_metadata::MetadataImage;

    struct Quiet;

    impl MetadataListener for Quiet {
        fn image_changed(&self, _: &Arc<MetadataImage>) {}
    }

    fn get(key: &str) -> Rpc {
        Rpc::Forward(ForwardRequest::KvGet { key: key.into() })
    }

    /// Hears everything it is sent: answers with the sender's id.
    struct Echo;

    impl RpcHandler for Echo {
        async fn handle(&self, envelope: Envelope) -> Reply {
            Reply::Refused(format!("heard {}", envelope.from))
        }

        fn peer_service(&self, _: u64) -> Result<Arc<dyn PeerService>, String> {
            Err("no peer service".into())
        }
    }

    fn client(addr: SocketAddr, secret: Option<ClusterSecret>) -> PeerClient {
        let identity = LocalIdentity {
            node_id: 1,
            shared: Arc::new(SharedState::new(None, Arc::new(Quiet))),
            secret,
        };
        PeerClient::new(identity, 2, addr.to_string())
    }

    fn client_for(addr: SocketAddr, target: u64, secret: Option<ClusterSecret>) -> PeerClient {
        let mut client = client(addr, secret);
        client.target = target;
        client
    }

    /// Sends one frame on `stream` as a stranger would (after whatever handshake it made) and
    /// says whether anything came back.
    async fn heard(stream: &mut TcpStream, session: Option<&mut Session>) -> bool {
        let envelope = Envelope {
            cluster_id: None,
            from: 1,
            rpc: get("k"),
        };
        if write_message(stream, session, &envelope).await.is_err() {
            return false;
        }
        let mut byte = [0u8; 1];
        matches!(stream.read(&mut byte).await, Ok(n) if n > 0)
    }

    #[tokio::test]
    async fn only_peers_that_prove_the_cluster_secret_are_heard() {
        let secret = ClusterSecret::new([7; 32]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        // The server is node 2.
        tokio::spawn(serve(listener, Arc::new(Echo), Some(secret.clone()), 2));
        let timeout = Duration::from_secs(10);

        // Several requests on one authenticated connection keep both ends' frame numbers in step.
        let mut peer = client_for(addr, 2, Some(secret.clone()));
        for _ in 0..3 {
            let answer = peer.call(get("k"), timeout).await;
            assert!(matches!(answer, Ok(Reply::Refused(text)) if text == "heard 1"));
        }
        for stranger in [Some(ClusterSecret::new([8; 32])), None] {
            let refused = client_for(addr, 2, stranger).call(get("k"), timeout).await;
            assert!(refused.is_err(), "a peer without the secret is not heard");
        }
        // A proof made for another node (as a relay would pass on) is refused.
        let relayed = client_for(addr, 3, Some(secret.clone()))
            .call(get("k"), timeout)
            .await;
        assert!(relayed.is_err(), "a proof for node 3 does not open node 2");

        // A stranger that goes through the motions with a wrong tag, then sends a frame.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut server_nonce = [0u8; NONCE_LEN];
        stream.read_exact(&mut server_nonce).await.unwrap();
        stream.write_all(&[9; NONCE_LEN + TAG_LEN]).await.unwrap();
        assert!(
            !heard(&mut stream, None).await,
            "a wrong proof is never heard"
        );

        // A peer that proved the secret, but whose frames are not tagged with the session key
        // (a connection taken over after the handshake), is not heard either.
        let mut stream = TcpStream::connect(addr).await.unwrap();
        prove_as_client(&mut stream, &secret, 2).await.unwrap();
        let mut forged = Session {
            key: [0; 32],
            send_label: CLIENT_FRAMES,
            receive_label: SERVER_FRAMES,
            sent: 0,
            received: 0,
        };
        assert!(!heard(&mut stream, Some(&mut forged)).await);
        let mut stream = TcpStream::connect(addr).await.unwrap();
        let mut session = prove_as_client(&mut stream, &secret, 2).await.unwrap();
        assert!(
            heard(&mut stream, Some(&mut session)).await,
            "the real session is heard"
        );

        // A frame sealed for one connection is not heard on another: each session has its key.
        let mut other = TcpStream::connect(addr).await.unwrap();
        prove_as_client(&mut other, &secret, 2).await.unwrap();
        let mut first = TcpStream::connect(addr).await.unwrap();
        let mut replayed = prove_as_client(&mut first, &secret, 2).await.unwrap();
        assert!(
            !heard(&mut other, Some(&mut replayed)).await,
            "another connection's frame is refused"
        );

        // A server that cannot prove the secret back is not talked to either.
        let impostor = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let impostor_addr = impostor.local_addr().unwrap();
        let (sent_tx, sent_rx) = tokio::sync::oneshot::channel();
        tokio::spawn(async move {
            let (mut stream, _) = impostor.accept().await.unwrap();
            stream.write_all(&[1; NONCE_LEN]).await.unwrap();
            let mut proof = [0; NONCE_LEN + TAG_LEN];
            stream.read_exact(&mut proof).await.unwrap();
            stream.write_all(&[0; TAG_LEN]).await.unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            let _ = sent_tx.send(rest.len());
        });
        let fooled = client_for(impostor_addr, 2, Some(secret.clone()))
            .call(get("k"), timeout)
            .await;
        assert!(
            matches!(&fooled, Err(e) if e.kind() == io::ErrorKind::NotConnected),
            "{:?}",
            fooled.err()
        );
        assert_eq!(
            sent_rx.await.unwrap(),
            0,
            "nothing is sent to a server that failed its proof"
        );

        // Derived keys differ by purpose and from the secret.
        assert_ne!(secret.derive("gossip"), secret.derive("other"));
        assert_ne!(secret.derive("gossip"), [7; 32]);
    }

    /// The server's check of the client's proof on its own (the frame tags would also keep a
    /// stranger out): a wrong tag, or a right one made for another node, is refused.
    #[tokio::test]
    async fn the_server_refuses_a_wrong_or_misdirected_proof() {
        let secret = ClusterSecret::new([7; 32]);
        for target in [None, Some(3u64), Some(2)] {
            let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
            let addr = listener.local_addr().unwrap();
            let server = {
                let secret = secret.clone();
                tokio::spawn(async move {
                    let (mut stream, _) = listener.accept().await.unwrap();
                    prove_as_server(&mut stream, &secret, 2).await.map(|_| ())
                })
            };
            let mut stream = TcpStream::connect(addr).await.unwrap();
            let mut server_nonce = [0u8; NONCE_LEN];
            stream.read_exact(&mut server_nonce).await.unwrap();
            let client_nonce = [5u8; NONCE_LEN];
            let tag = match target {
                None => [9; TAG_LEN],
                Some(node) => secret.tag(
                    CLIENT_PROOF,
                    &[&server_nonce, &client_nonce, &node.to_be_bytes()],
                ),
            };
            stream.write_all(&client_nonce).await.unwrap();
            stream.write_all(&tag).await.unwrap();
            let outcome = server.await.unwrap();
            match target {
                Some(2) => assert!(outcome.is_ok()),
                _ => assert!(
                    matches!(&outcome, Err(e) if e.kind() == io::ErrorKind::PermissionDenied),
                    "{target:?}: {outcome:?}"
                ),
            }
        }
    }

    /// Connections that never finish the handshake: at most a few per address wait at once; the
    /// next is closed before it gets a challenge, and a place frees when one gives up.
    #[tokio::test]
    async fn idle_handshakes_from_one_address_are_bounded() {
        let secret = ClusterSecret::new([7; 32]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(Echo), Some(secret.clone()), 2));
        let challenged = |mut stream: TcpStream| async move {
            let mut nonce = [0u8; NONCE_LEN];
            stream
                .read_exact(&mut nonce)
                .await
                .is_ok()
                .then_some(stream)
        };
        let mut idle = Vec::new();
        for _ in 0..MAX_UNPROVED_PER_ADDRESS {
            let stream = TcpStream::connect(addr).await.unwrap();
            idle.push(challenged(stream).await.expect("a challenge"));
        }
        let crowded = TcpStream::connect(addr).await.unwrap();
        assert!(
            challenged(crowded).await.is_none(),
            "closed without a challenge"
        );
        drop(idle.pop());
        let mut fits = None;
        for _ in 0..100 {
            if let Some(stream) = challenged(TcpStream::connect(addr).await.unwrap()).await {
                fits = Some(stream);
                break;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        assert!(fits.is_some(), "a freed place is taken again");
    }

    /// Frame tags: a frame is accepted once, in order, in its own direction, under its key.
    #[test]
    fn frames_cannot_be_forged_replayed_reordered_or_reflected() {
        let session = |key: [u8; 32], client: bool| Session {
            key,
            send_label: if client { CLIENT_FRAMES } else { SERVER_FRAMES },
            receive_label: if client { SERVER_FRAMES } else { CLIENT_FRAMES },
            sent: 0,
            received: 0,
        };
        let (mut client, mut server) = (session([1; 32], true), session([1; 32], false));
        let first = client.seal(b"one");
        let second = client.seal(b"two");
        assert!(server.open(b"two", &second).is_err(), "out of order");
        assert!(server.open(b"one", &first).is_ok());
        assert!(server.open(b"one", &first).is_err(), "replayed");
        assert!(server.open(b"TWO", &second).is_err(), "altered");
        assert!(server.open(b"two", &second).is_ok());
        let reply = server.seal(b"reply");
        assert!(
            session([1; 32], false).open(b"reply", &reply).is_err(),
            "reflected"
        );
        assert!(
            session([2; 32], true).open(b"reply", &reply).is_err(),
            "another key"
        );
        assert!(client.open(b"reply", &reply).is_ok());
    }

    /// A peer that answers every request with its key, late for the key "slow".
    async fn echo_peer() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    while let Ok(envelope) = read_message::<Envelope, _>(&mut stream, None).await {
                        let Rpc::Forward(ForwardRequest::KvGet { key }) = envelope.rpc else {
                            return;
                        };
                        if key == "slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        if write_message(&mut stream, None, &Reply::Refused(key))
                            .await
                            .is_err()
                        {
                            return;
                        }
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn a_connection_the_peer_closed_is_not_reused() {
        // A peer that answers one request per connection, then closes it (as a restart would).
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                if let Ok(envelope) = read_message::<Envelope, _>(&mut stream, None).await {
                    if let Rpc::Forward(ForwardRequest::KvGet { key }) = envelope.rpc {
                        let _ = write_message(&mut stream, None, &Reply::Refused(key)).await;
                    }
                }
            }
        });
        let identity = LocalIdentity {
            node_id: 1,
            shared: Arc::new(SharedState::new(None, Arc::new(Quiet))),
            secret: None,
        };
        let mut client = PeerClient::new(identity, 2, addr.to_string());
        for key in ["first", "second"] {
            match client.call(get(key), Duration::from_secs(5)).await.unwrap() {
                Reply::Refused(answered) => assert_eq!(answered, key),
                _ => panic!("unexpected reply"),
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    #[tokio::test]
    async fn a_reply_that_comes_after_its_caller_gave_up_is_never_taken_for_the_next_one() {
        let addr = echo_peer().await;
        let identity = LocalIdentity {
            node_id: 1,
            shared: Arc::new(SharedState::new(None, Arc::new(Quiet))),
            secret: None,
        };
        let mut client = PeerClient::new(identity, 2, addr.to_string());
        let gave_up = client.call(get("slow"), Duration::from_millis(50)).await;
        assert_eq!(
            gave_up.err().map(|e| e.kind()),
            Some(io::ErrorKind::TimedOut)
        );
        // Give up on another one by dropping the call instead of through its timeout.
        let dropped = tokio::time::timeout(
            Duration::from_millis(50),
            client.call(get("slow"), Duration::from_secs(5)),
        )
        .await;
        assert!(dropped.is_err());
        // The late replies have arrived by now, on connections that are gone.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for key in ["first", "second"] {
            match client.call(get(key), Duration::from_secs(5)).await.unwrap() {
                Reply::Refused(answered) => assert_eq!(answered, key),
                _ => panic!("unexpected reply"),
            }
        }
    }
}
