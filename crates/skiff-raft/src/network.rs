//! Raft's transport: one TCP connection per peer client, each message a 4-byte big-endian length
//! and a JSON body, one request in flight per connection. Every request names the sender and the
//! cluster it belongs to, so a node of another cluster, or a node this one does not know, is
//! refused before its message reaches Raft.

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

/// Accepts peer connections until the listener fails; each connection is served in order.
pub(crate) async fn serve<H: RpcHandler>(listener: TcpListener, handler: Arc<H>) {
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
        tokio::spawn(async move {
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
        let stream = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(addr))
            .await
            .map_err(|_| not_connected(format!("connecting to {addr} timed out")))?
            .map_err(|e| not_connected(format!("cannot connect to {addr}: {e}")))?;
        stream.set_nodelay(true)?;
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
