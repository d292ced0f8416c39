//! Raft's transport: one TCP connection per peer client, each message a 4-byte big-endian length
//! and a JSON body, one request in flight per connection. Every request names the sender and the
//! cluster it belongs to, so a node of another cluster, or a node this one does not know, is
//! refused before its message reaches Raft.
//!
//! With a cluster secret, both ends of every connection prove they know it before anything else
//! is read (`ClusterSecret`): an HMAC-SHA256 challenge-response over a nonce from each side, so
//! a peer without the secret never gets a message decoded.

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
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tracing::{debug, warn};

use crate::forward::{ForwardReply, ForwardRequest};
use crate::types::{Snapshot, SnapshotMeta, TypeConfig, Vote};

/// Largest message accepted: a snapshot of a large cluster fits, a garbage length does not.
pub const MAX_MESSAGE_BYTES: usize = 256 * 1024 * 1024;
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);
/// Longest the mutual proof of the cluster secret may take on a new connection.
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

    fn hmac(&self, label: &[u8]) -> HmacSha256 {
        use hmac::Mac;
        let mut mac = HmacSha256::new_from_slice(&self.0).expect("HMAC takes a key of any length");
        mac.update(label);
        mac
    }

    fn tag(&self, label: &[u8], first: &[u8], second: &[u8]) -> [u8; TAG_LEN] {
        use hmac::Mac;
        let mut mac = self.hmac(label);
        mac.update(first);
        mac.update(second);
        mac.finalize().into_bytes().into()
    }

    /// Checks a tag in constant time.
    fn verify(&self, label: &[u8], first: &[u8], second: &[u8], tag: &[u8]) -> bool {
        use hmac::Mac;
        let mut mac = self.hmac(label);
        mac.update(first);
        mac.update(second);
        mac.verify_slice(tag).is_ok()
    }

    /// A key for another use, derived from the secret, so one secret configures a cluster.
    pub fn derive(&self, purpose: &str) -> [u8; 32] {
        self.tag(b"skiff derived key", purpose.as_bytes(), &[])
    }
}

fn nonce() -> io::Result<[u8; NONCE_LEN]> {
    let mut nonce = [0u8; NONCE_LEN];
    getrandom::fill(&mut nonce).map_err(|e| io::Error::other(e.to_string()))?;
    Ok(nonce)
}

const CLIENT_PROOF: &[u8] = b"skiff raft client proof";
const SERVER_PROOF: &[u8] = b"skiff raft server proof";

/// The accepting side: a challenge, the client's proof over both nonces, then ours. Fixed-size
/// reads only: nothing the peer sends is decoded before it has proved itself.
async fn prove_as_server(stream: &mut TcpStream, secret: &ClusterSecret) -> io::Result<()> {
    let server_nonce = nonce()?;
    stream.write_all(&server_nonce).await?;
    let mut client_nonce = [0u8; NONCE_LEN];
    let mut client_tag = [0u8; TAG_LEN];
    stream.read_exact(&mut client_nonce).await?;
    stream.read_exact(&mut client_tag).await?;
    if !secret.verify(CLIENT_PROOF, &server_nonce, &client_nonce, &client_tag) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer does not know the cluster secret",
        ));
    }
    stream
        .write_all(&secret.tag(SERVER_PROOF, &client_nonce, &server_nonce))
        .await
}

/// The connecting side: answers the challenge, then checks the server's proof.
async fn prove_as_client(stream: &mut TcpStream, secret: &ClusterSecret) -> io::Result<()> {
    let mut server_nonce = [0u8; NONCE_LEN];
    stream.read_exact(&mut server_nonce).await?;
    let client_nonce = nonce()?;
    let mut proof = client_nonce.to_vec();
    proof.extend_from_slice(&secret.tag(CLIENT_PROOF, &server_nonce, &client_nonce));
    stream.write_all(&proof).await?;
    let mut server_tag = [0u8; TAG_LEN];
    stream.read_exact(&mut server_tag).await?;
    if !secret.verify(SERVER_PROOF, &client_nonce, &server_nonce, &server_tag) {
        return Err(io::Error::new(
            io::ErrorKind::PermissionDenied,
            "the peer does not know the cluster secret",
        ));
    }
    Ok(())
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
}

#[derive(Serialize, Deserialize)]
pub(crate) enum Reply {
    Append(AppendEntriesResponse<TypeConfig>),
    Vote(VoteResponse<TypeConfig>),
    Snapshot(SnapshotResponse<TypeConfig>),
    TransferLeader(TransferLeaderResponse<TypeConfig>),
    Forward(ForwardReply),
    /// The receiver will not take this message from this sender; the text says why.
    Refused(String),
}

pub(crate) async fn write_message<T: Serialize>(
    stream: &mut TcpStream,
    message: &T,
) -> io::Result<()> {
    let body = serde_json::to_vec(message).map_err(io::Error::other)?;
    if body.len() > MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "message of {} bytes exceeds {MAX_MESSAGE_BYTES}",
                body.len()
            ),
        ));
    }
    let mut framed = Vec::with_capacity(4 + body.len());
    framed.extend_from_slice(&(body.len() as u32).to_be_bytes());
    framed.extend_from_slice(&body);
    stream.write_all(&framed).await
}

pub(crate) async fn read_message<T: DeserializeOwned>(stream: &mut TcpStream) -> io::Result<T> {
    let len = stream.read_u32().await? as usize;
    if len > MAX_MESSAGE_BYTES {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("message length {len} exceeds {MAX_MESSAGE_BYTES}"),
        ));
    }
    let mut body = vec![0; len];
    stream.read_exact(&mut body).await?;
    serde_json::from_slice(&body).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

/// Decides whether a message may reach Raft, and hands it over. Implemented by the node.
pub(crate) trait RpcHandler: Send + Sync + 'static {
    fn handle(&self, envelope: Envelope) -> impl Future<Output = Reply> + Send;
}

/// Accepts peer connections until the listener fails; each connection is served in order, once
/// the peer proved it knows `secret` (when there is one).
pub(crate) async fn serve<H: RpcHandler>(
    listener: TcpListener,
    handler: Arc<H>,
    secret: Option<ClusterSecret>,
) {
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
        tokio::spawn(async move {
            if let Some(secret) = &secret {
                let proved =
                    tokio::time::timeout(HANDSHAKE_TIMEOUT, prove_as_server(&mut stream, secret))
                        .await;
                if !matches!(proved, Ok(Ok(()))) {
                    warn!(%peer, "refused a Raft connection: no proof of the cluster secret");
                    return;
                }
            }
            loop {
                let envelope: Envelope = match read_message(&mut stream).await {
                    Ok(envelope) => envelope,
                    Err(e) => {
                        if e.kind() != io::ErrorKind::UnexpectedEof {
                            debug!(%peer, error = %e, "dropping Raft connection");
                        }
                        return;
                    }
                };
                let reply = handler.handle(envelope).await;
                if write_message(&mut stream, &reply).await.is_err() {
                    return;
                }
            }
        });
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
    stream: Option<TcpStream>,
}

impl PeerClient {
    pub(crate) fn new(identity: LocalIdentity, target: u64, addr: String) -> Self {
        Self {
            identity,
            target,
            addr,
            stream: None,
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
        let mut stream = match self.stream.take().filter(still_open) {
            Some(stream) => stream,
            None => self.connect().await?,
        };
        write_message(&mut stream, envelope).await?;
        let reply = read_message(&mut stream).await?;
        self.stream = Some(stream);
        Ok(reply)
    }

    /// Nothing is sent before the connection stands: callers may retry these failures safely.
    async fn connect(&self) -> io::Result<TcpStream> {
        let addr: SocketAddr = tokio::net::lookup_host(&self.addr)
            .await?
            .next()
            .ok_or_else(|| io::Error::other(format!("{} does not resolve", self.addr)))?;
        let not_connected = |what: String| io::Error::new(io::ErrorKind::NotConnected, what);
        let mut stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| not_connected(format!("connecting to {addr} timed out")))?
            .map_err(|e| not_connected(format!("cannot connect to {addr}: {e}")))?;
        stream.set_nodelay(true)?;
        if let Some(secret) = &self.identity.secret {
            tokio::time::timeout(HANDSHAKE_TIMEOUT, prove_as_client(&mut stream, secret))
                .await
                .map_err(|_| {
                    not_connected(format!(
                        "{addr} did not prove the cluster secret in time (is --cluster-secret the same on every broker?)"
                    ))
                })?
                .map_err(|e| not_connected(format!("{addr}: {e}")))?;
        }
        Ok(stream)
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
    }

    fn client(addr: SocketAddr, secret: Option<ClusterSecret>) -> PeerClient {
        let identity = LocalIdentity {
            node_id: 1,
            shared: Arc::new(SharedState::new(None, Arc::new(Quiet))),
            secret,
        };
        PeerClient::new(identity, 2, addr.to_string())
    }

    #[tokio::test]
    async fn only_peers_that_prove_the_cluster_secret_are_heard() {
        let secret = ClusterSecret::new([7; 32]);
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(Echo), Some(secret.clone())));
        let timeout = Duration::from_secs(10);

        let heard = client(addr, Some(secret.clone()))
            .call(get("k"), timeout)
            .await;
        assert!(matches!(heard, Ok(Reply::Refused(text)) if text == "heard 1"));
        for stranger in [Some(ClusterSecret::new([8; 32])), None] {
            let refused = client(addr, stranger).call(get("k"), timeout).await;
            assert!(refused.is_err(), "a peer without the secret is not heard");
        }

        // A server that cannot prove the secret back is not talked to either.
        let impostor = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let impostor_addr = impostor.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut stream, _) = impostor.accept().await.unwrap();
            stream.write_all(&[1; NONCE_LEN]).await.unwrap();
            let mut proof = [0; NONCE_LEN + TAG_LEN];
            stream.read_exact(&mut proof).await.unwrap();
            stream.write_all(&[0; TAG_LEN]).await.unwrap();
            let mut rest = Vec::new();
            let _ = stream.read_to_end(&mut rest).await;
            assert!(
                rest.is_empty(),
                "nothing is sent to a server that failed its proof"
            );
        });
        let fooled = client(impostor_addr, Some(secret.clone()))
            .call(get("k"), timeout)
            .await;
        assert!(
            matches!(&fooled, Err(e) if e.kind() == io::ErrorKind::NotConnected),
            "{:?}",
            fooled.err()
        );

        // Derived keys differ by purpose and from the secret.
        assert_ne!(secret.derive("gossip"), secret.derive("other"));
        assert_ne!(secret.derive("gossip"), [7; 32]);
    }

    /// A peer that answers every request with its key, late for the key "slow".
    async fn echo_peer() -> SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut stream, _)) = listener.accept().await {
                tokio::spawn(async move {
                    while let Ok(envelope) = read_message::<Envelope>(&mut stream).await {
                        let Rpc::Forward(ForwardRequest::KvGet { key }) = envelope.rpc else {
                            return;
                        };
                        if key == "slow" {
                            tokio::time::sleep(Duration::from_millis(300)).await;
                        }
                        if write_message(&mut stream, &Reply::Refused(key))
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
                if let Ok(envelope) = read_message::<Envelope>(&mut stream).await {
                    if let Rpc::Forward(ForwardRequest::KvGet { key }) = envelope.rpc {
                        let _ = write_message(&mut stream, &Reply::Refused(key)).await;
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
