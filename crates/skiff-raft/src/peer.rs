//! The brokers' binary peer RPC: a request of raw bytes from one cluster member to another and
//! its answer, on the Raft port's authenticated connections (the framing is in `network`).
//! Partition replication uses it to fetch record bytes from the leader.

use std::future::Future;
use std::io;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

use crate::network::{LocalIdentity, PeerStream, MAX_PEER_REQUEST_BYTES};

/// What a node answers to binary peer requests; set with `MetadataRaft::set_peer_service`.
pub trait PeerService: Send + Sync + 'static {
    /// One binary request from authenticated cluster member `from`; the answer's bytes.
    fn call(&self, from: u64, request: Bytes) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>>;
}

/// Where the target is now, by the current membership; `None` when it is not a member.
pub(crate) type AddressOf = Box<dyn Fn() -> Option<String> + Send + Sync>;

/// Binary requests to one node over one connection, opened on first use and again after any
/// failure or once the membership gives the node another address.
pub struct PeerCaller {
    identity: LocalIdentity,
    target: u64,
    address: AddressOf,
    stream: Option<PeerStream>,
}

impl std::fmt::Debug for PeerCaller {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PeerCaller")
            .field("target", &self.target)
            .field("addr", &self.stream.as_ref().map(|s| &s.addr))
            .finish()
    }
}

impl PeerCaller {
    pub(crate) fn new(identity: LocalIdentity, target: u64, address: AddressOf) -> Self {
        Self {
            identity,
            target,
            address,
            stream: None,
        }
    }

    /// Sends `request`, returns the answer; one request in flight per caller. Reconnects after
    /// any failure (and after the target's address changed in the membership).
    pub async fn call(&mut self, request: &[u8], timeout: Duration) -> io::Result<Bytes> {
        if request.len() > MAX_PEER_REQUEST_BYTES {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!(
                    "a peer request of {} bytes exceeds {MAX_PEER_REQUEST_BYTES}",
                    request.len()
                ),
            ));
        }
        tokio::time::timeout(timeout, self.exchange(request))
            .await
            .unwrap_or_else(|_| {
                Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("node {} did not answer in {timeout:?}", self.target),
                ))
            })
    }

    /// The stream is taken out for the exchange and put back only once the answer is read: if
    /// the caller gives up halfway (an error, a timeout, a dropped future), the stream closes
    /// with it, so a late answer can never be taken for the answer to the next request.
    async fn exchange(&mut self, request: &[u8]) -> io::Result<Bytes> {
        let Some(addr) = (self.address)() else {
            self.stream = None;
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                format!("node {} is not a member of the cluster", self.target),
            ));
        };
        let reusable = self
            .stream
            .take()
            .filter(|stream| stream.addr == addr && stream.still_open());
        let mut stream = match reusable {
            Some(stream) => stream,
            None => PeerStream::open(&self.identity, self.target, addr).await?,
        };
        let answer = stream.exchange(request).await?;
        self.stream = Some(stream);
        Ok(Bytes::from(answer))
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::net::SocketAddr;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::{Arc, Mutex};

    use skiff_metadata::MetadataImage;
    use tokio::io::AsyncReadExt;
    use tokio::net::{TcpListener, TcpStream};

    use super::*;
    use crate::network::{
        connect, read_message, serve, write_frame, write_message, ClusterSecret, Envelope, Reply,
        Rpc, RpcHandler,
    };
    use crate::state_machine::{MetadataListener, SharedState};

    const TIMEOUT: Duration = Duration::from_secs(10);

    struct Quiet;

    impl MetadataListener for Quiet {
        fn image_changed(&self, _: &Arc<MetadataImage>) {}
    }

    /// A node whose members and service the test sets, admitting peer streams as the node does.
    #[derive(Default)]
    struct Node {
        members: Mutex<BTreeSet<u64>>,
        service: Mutex<Option<Arc<dyn PeerService>>>,
    }

    impl RpcHandler for Node {
        async fn handle(&self, envelope: Envelope) -> Reply {
            match envelope.rpc {
                Rpc::OpenPeerStream => match self.peer_service(envelope.from) {
                    Ok(_) => Reply::PeerStreamOpen,
                    Err(reason) => Reply::Refused(reason),
                },
                _ => Reply::Refused("only peer streams here".into()),
            }
        }

        fn peer_service(&self, from: u64) -> Result<Arc<dyn PeerService>, String> {
            if !self.members.lock().unwrap().contains(&from) {
                return Err(format!("node {from} is not a member"));
            }
            self.service
                .lock()
                .unwrap()
                .clone()
                .ok_or_else(|| "no peer service".into())
        }
    }

    /// Answers a request reversed, with the sender's id; `slow` late; `big:N` with N bytes.
    #[derive(Default)]
    struct Reverse {
        calls: AtomicUsize,
    }

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    impl PeerService for Reverse {
        fn call(&self, from: u64, request: Bytes) -> Pin<Box<dyn Future<Output = Vec<u8>> + Send>> {
            self.calls.fetch_add(1, Ordering::SeqCst);
            Box::pin(async move {
                if &request[..] == b"slow" {
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
                if let Some(len) = request.strip_prefix(b"big:") {
                    let len = std::str::from_utf8(len).unwrap().parse().unwrap();
                    return pattern(len);
                }
                let mut answer: Vec<u8> = request.iter().rev().copied().collect();
                answer.extend_from_slice(format!("/{from}").as_bytes());
                answer
            })
        }
    }

    /// Node 2, serving `service` to node 1.
    async fn node(
        secret: Option<ClusterSecret>,
        service: Option<Arc<Reverse>>,
    ) -> (SocketAddr, Arc<Node>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let node = Arc::new(Node::default());
        node.members.lock().unwrap().insert(1);
        *node.service.lock().unwrap() = service.map(|s| s as Arc<dyn PeerService>);
        tokio::spawn(serve(listener, node.clone(), secret, 2));
        (addr, node)
    }

    fn identity(secret: Option<ClusterSecret>) -> LocalIdentity {
        LocalIdentity {
            node_id: 1,
            shared: Arc::new(SharedState::new(None, Arc::new(Quiet))),
            secret,
        }
    }

    fn caller(addr: SocketAddr, secret: Option<ClusterSecret>) -> PeerCaller {
        PeerCaller::new(
            identity(secret),
            2,
            Box::new(move || Some(addr.to_string())),
        )
    }

    fn secret() -> ClusterSecret {
        ClusterSecret::new([7; 32])
    }

    #[tokio::test]
    async fn answers_come_back_in_order_with_and_without_a_secret() {
        for secret in [None, Some(secret())] {
            let service = Arc::new(Reverse::default());
            let (addr, _) = node(secret.clone(), Some(service.clone())).await;
            let mut caller = caller(addr, secret);
            for request in ["abc", "", "hello"] {
                let answer = caller.call(request.as_bytes(), TIMEOUT).await.unwrap();
                let expected: String = request.chars().rev().collect::<String>() + "/1";
                assert_eq!(&answer[..], expected.as_bytes());
            }
            assert_eq!(service.calls.load(Ordering::SeqCst), 3);
        }
    }

    #[tokio::test]
    async fn a_caller_without_the_secret_is_never_served() {
        let service = Arc::new(Reverse::default());
        let (addr, _) = node(Some(secret()), Some(service.clone())).await;
        for wrong in [Some(ClusterSecret::new([8; 32])), None] {
            let refused = caller(addr, wrong).call(b"abc", TIMEOUT).await;
            assert!(refused.is_err());
        }
        // Nor is a node without the secret called by a caller that has it: it cannot prove it.
        let (open, _) = node(None, Some(service.clone())).await;
        assert!(caller(open, Some(secret()))
            .call(b"abc", Duration::from_millis(500))
            .await
            .is_err());
        assert_eq!(service.calls.load(Ordering::SeqCst), 0);
    }

    #[tokio::test]
    async fn requests_are_refused_until_a_service_is_set_and_only_from_members() {
        let (addr, node) = node(Some(secret()), None).await;
        let mut caller = caller(addr, Some(secret()));
        let refused = caller.call(b"abc", TIMEOUT).await.unwrap_err();
        assert_eq!(refused.kind(), io::ErrorKind::PermissionDenied);
        assert!(refused.to_string().contains("no peer service"), "{refused}");

        let service = Arc::new(Reverse::default());
        *node.service.lock().unwrap() = Some(service.clone());
        assert_eq!(&caller.call(b"abc", TIMEOUT).await.unwrap()[..], b"cba/1");

        // Removed from the membership: the open stream serves no further request.
        node.members.lock().unwrap().clear();
        assert!(caller.call(b"abc", TIMEOUT).await.is_err());
        let refused = caller.call(b"abc", TIMEOUT).await.unwrap_err();
        assert!(refused.to_string().contains("not a member"), "{refused}");
        assert_eq!(service.calls.load(Ordering::SeqCst), 1);
    }

    /// Opens a peer stream by hand, so a frame the caller would not send can be sent.
    async fn open_by_hand(
        addr: SocketAddr,
        secret: Option<ClusterSecret>,
    ) -> (TcpStream, Option<crate::network::Session>) {
        let (mut stream, mut session) = connect(&identity(secret), 2, &addr.to_string())
            .await
            .unwrap();
        let envelope = Envelope {
            cluster_id: None,
            from: 1,
            rpc: Rpc::OpenPeerStream,
        };
        write_message(&mut stream, session.as_mut(), &envelope)
            .await
            .unwrap();
        let reply: Reply = read_message(&mut stream, session.as_mut()).await.unwrap();
        assert!(matches!(reply, Reply::PeerStreamOpen));
        (stream, session)
    }

    #[tokio::test]
    async fn a_request_over_the_limit_is_refused_before_the_service_sees_it() {
        for secret in [None, Some(secret())] {
            let service = Arc::new(Reverse::default());
            let (addr, _) = node(secret.clone(), Some(service.clone())).await;
            let mut caller = caller(addr, secret.clone());
            let too_large = vec![b'x'; MAX_PEER_REQUEST_BYTES + 1];
            let refused = caller.call(&too_large, TIMEOUT).await.unwrap_err();
            assert_eq!(refused.kind(), io::ErrorKind::InvalidInput);
            let largest = vec![b'x'; MAX_PEER_REQUEST_BYTES];
            let answer = caller.call(&largest, TIMEOUT).await.unwrap();
            assert_eq!(answer.len(), MAX_PEER_REQUEST_BYTES + 2);

            // A peer that sends one anyway, correctly sealed: the stream closes unanswered.
            let (mut stream, mut session) = open_by_hand(addr, secret.clone()).await;
            let _ = write_frame(&mut stream, session.as_mut(), &too_large, usize::MAX).await;
            let mut byte = [0u8; 1];
            assert!(matches!(stream.read(&mut byte).await, Ok(0) | Err(_)));
            // A length far above the limit alone closes it too, with nothing reserved for it.
            let (mut stream, _) = open_by_hand(addr, secret).await;
            let _ = tokio::io::AsyncWriteExt::write_all(&mut stream, &u32::MAX.to_be_bytes()).await;
            assert!(matches!(stream.read(&mut byte).await, Ok(0) | Err(_)));
            assert_eq!(service.calls.load(Ordering::SeqCst), 1, "only the largest");
        }
    }

    #[tokio::test]
    async fn a_large_answer_arrives_intact() {
        let (addr, _) = node(Some(secret()), Some(Arc::default())).await;
        let mut caller = caller(addr, Some(secret()));
        let len = 8 * 1024 * 1024;
        let answer = caller
            .call(format!("big:{len}").as_bytes(), TIMEOUT)
            .await
            .unwrap();
        assert!(answer[..] == pattern(len)[..], "the 8 MiB answer differs");
        assert_eq!(
            &caller.call(b"after", TIMEOUT).await.unwrap()[..],
            b"retfa/1"
        );
    }

    #[tokio::test]
    async fn an_answer_that_comes_after_its_caller_gave_up_is_never_taken_for_the_next_one() {
        let (addr, _) = node(Some(secret()), Some(Arc::default())).await;
        let mut caller = caller(addr, Some(secret()));
        let gave_up = caller.call(b"slow", Duration::from_millis(50)).await;
        assert_eq!(
            gave_up.err().map(|e| e.kind()),
            Some(io::ErrorKind::TimedOut)
        );
        // Give up on another one by dropping the call instead of through its timeout.
        let dropped =
            tokio::time::timeout(Duration::from_millis(50), caller.call(b"slow", TIMEOUT)).await;
        assert!(dropped.is_err());
        // The late answers have arrived by now, on streams that are gone.
        tokio::time::sleep(Duration::from_millis(500)).await;
        for (request, answer) in [("first", "tsrif/1"), ("second", "dnoces/1")] {
            let got = caller.call(request.as_bytes(), TIMEOUT).await.unwrap();
            assert_eq!(&got[..], answer.as_bytes());
        }
    }

    #[tokio::test]
    async fn a_caller_follows_its_target_to_a_new_address_and_stops_when_it_leaves() {
        let (first, second) = (Arc::new(Reverse::default()), Arc::new(Reverse::default()));
        let (first_addr, _) = node(Some(secret()), Some(first.clone())).await;
        let (second_addr, _) = node(Some(secret()), Some(second.clone())).await;
        let address = Arc::new(Mutex::new(Some(first_addr.to_string())));
        let mut caller = PeerCaller::new(identity(Some(secret())), 2, {
            let address = address.clone();
            Box::new(move || address.lock().unwrap().clone())
        });
        caller.call(b"a", TIMEOUT).await.unwrap();
        *address.lock().unwrap() = Some(second_addr.to_string());
        caller.call(b"b", TIMEOUT).await.unwrap();
        assert_eq!(first.calls.load(Ordering::SeqCst), 1);
        assert_eq!(second.calls.load(Ordering::SeqCst), 1);
        *address.lock().unwrap() = None;
        let gone = caller.call(b"c", TIMEOUT).await.unwrap_err();
        assert_eq!(gone.kind(), io::ErrorKind::NotConnected);
        assert_eq!(second.calls.load(Ordering::SeqCst), 1);
    }
}
