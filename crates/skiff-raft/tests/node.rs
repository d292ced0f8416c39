//! One metadata node in-process: bootstrap, restart from its store, refusals, and what its Raft
//! port does with messages from strangers and with garbage.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use skiff_metadata::{MetadataImage, MetadataRecord};
use skiff_raft::{
    BootstrapError, ClusterSecret, MetadataListener, MetadataRaft, PeerService, RaftSettings,
    StartError,
};

#[derive(Default)]
struct Recorder {
    offsets: Mutex<Vec<Option<u64>>>,
}

impl MetadataListener for Recorder {
    fn image_changed(&self, image: &Arc<MetadataImage>) {
        self.offsets.lock().unwrap().push(image.offset());
    }
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn settings(node_id: u64, dir: &std::path::Path) -> RaftSettings {
    RaftSettings::new(node_id, free_addr(), dir.to_path_buf())
}

fn register(id: i32) -> MetadataRecord {
    MetadataRecord::RegisterBroker {
        id,
        endpoints: vec![format!("127.0.0.1:{}", 9000 + id)],
        rack: None,
        incarnation: uuid::Uuid::nil(),
    }
}

/// Starts a node on a data dir another node in this process used: openraft's storage tasks
/// release the redb file shortly after `shutdown` returns, so "already open" is retried.
async fn restart(
    node_id: u64,
    dir: &std::path::Path,
    listener: Arc<Recorder>,
) -> Result<Arc<MetadataRaft>, StartError> {
    for _ in 0..100 {
        match MetadataRaft::start(settings(node_id, dir), listener.clone()).await {
            Err(StartError::Storage(e)) if e.to_string().contains("already open") => {
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            other => return other,
        }
    }
    panic!("the data dir stayed locked");
}

async fn wait_leader(node: &MetadataRaft) {
    for _ in 0..200 {
        if node.is_leader() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!("no leader: {:?}", node.stats());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bootstrapped_node_restarts_with_its_image_and_refuses_to_bootstrap_again() {
    let dir = tempfile::tempdir().unwrap();
    let recorder = Arc::new(Recorder::default());
    let node = MetadataRaft::start(settings(1, dir.path()), recorder.clone())
        .await
        .unwrap();
    assert!(!node.has_state().unwrap());
    let cluster_id = node.bootstrap().await.unwrap();
    wait_leader(&node).await;
    let index = node.propose(vec![register(1)]).await.unwrap();
    assert!(node.image().broker(1).is_some());
    assert!(recorder.offsets.lock().unwrap().contains(&Some(index)));
    node.shutdown().await;
    drop(node);

    let again = Arc::new(Recorder::default());
    let node = restart(1, dir.path(), again.clone()).await.unwrap();
    assert_eq!(node.cluster_id().as_deref(), Some(cluster_id.as_str()));
    assert!(
        node.image().broker(1).is_some(),
        "the committed log is replayed before start returns"
    );
    assert!(matches!(
        node.bootstrap().await,
        Err(BootstrapError::AlreadyInitialized(Some(id))) if id == cluster_id
    ));
    wait_leader(&node).await;
    let before = node.image();
    let refused = node
        .propose(vec![register(2), MetadataRecord::UnfenceBroker { id: 42 }])
        .await;
    assert!(
        refused.is_err(),
        "a batch with an invalid record is refused"
    );
    assert_eq!(node.image(), before, "and none of it is applied");
    node.shutdown().await;
    drop(node);

    let renamed = restart(2, dir.path(), Arc::new(Recorder::default())).await;
    assert!(matches!(
        renamed,
        Err(StartError::NodeIdChanged {
            stored: 1,
            given: 2
        })
    ));
}

fn exchange(addr: SocketAddr, body: &[u8]) -> Option<String> {
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(5)))
        .unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body);
    stream.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    let mut reply = vec![0u8; u32::from_be_bytes(len) as usize];
    stream.read_exact(&mut reply).ok()?;
    Some(String::from_utf8(reply).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn strangers_and_garbage_are_refused_on_the_raft_port() {
    let dir = tempfile::tempdir().unwrap();
    let settings = settings(1, dir.path());
    let addr = settings.listen_addr;
    let node = MetadataRaft::start(settings, Arc::new(Recorder::default()))
        .await
        .unwrap();
    node.bootstrap().await.unwrap();
    wait_leader(&node).await;
    let cluster_id = node.cluster_id().unwrap();
    let replies = tokio::task::spawn_blocking(move || {
        let foreign = br#"{"cluster_id":"another","from":9,"rpc":{"Forward":{"Remove":{"node_id":1}}}}"#;
        let transfer = |cluster: &str| {
            format!(
                r#"{{"cluster_id":{cluster},"from":9,"rpc":{{"TransferLeader":{{"from_leader":{{"leader_id":{{"term":1,"node_id":9}},"committed":true}},"to_node_id":1,"last_log_id":null}}}}}}"#
            )
        };
        let anonymous = transfer("null");
        let not_a_member = transfer(&format!("{cluster_id:?}"));
        let peer_stream = format!(r#"{{"cluster_id":{cluster_id:?},"from":9,"rpc":"OpenPeerStream"}}"#);
        let garbage = b"{not json";
        (
            exchange(addr, foreign),
            exchange(addr, anonymous.as_bytes()),
            exchange(addr, garbage),
            {
                // A length far above the limit closes the connection before any allocation.
                let mut stream = TcpStream::connect(addr).unwrap();
                stream.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
                stream.write_all(&u32::MAX.to_be_bytes()).unwrap();
                let mut byte = [0u8; 1];
                matches!(stream.read(&mut byte), Ok(0) | Err(_))
            },
            exchange(addr, not_a_member.as_bytes()),
            exchange(addr, peer_stream.as_bytes()),
        )
    })
    .await
    .unwrap();
    let foreign = replies.0.expect("a reply to a foreign cluster");
    assert!(
        foreign.contains("Refused") && foreign.contains("another"),
        "{foreign}"
    );
    let anonymous = replies.1.expect("a reply to a node without a cluster id");
    assert!(
        anonymous.contains("Refused") && anonymous.contains("no cluster id"),
        "{anonymous}"
    );
    let stranger = replies.4.expect("a reply to a node outside the membership");
    assert!(
        stranger.contains("Refused") && stranger.contains("not a member"),
        "{stranger}"
    );
    let peer_stream = replies
        .5
        .expect("a reply to a peer stream from outside the membership");
    assert!(
        peer_stream.contains("Refused") && peer_stream.contains("not a member"),
        "{peer_stream}"
    );
    assert_eq!(replies.2, None, "garbage closes the connection");
    assert!(replies.3);
    // The node is unharmed and still the only voter.
    node.propose(vec![register(1)]).await.unwrap();
    assert_eq!(node.membership().voters.len(), 1);
    node.shutdown().await;
}

/// Answers a request in capitals, with its sender.
struct Shout;

impl PeerService for Shout {
    fn call(
        &self,
        from: u64,
        request: bytes::Bytes,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = Vec<u8>> + Send>> {
        Box::pin(async move {
            let mut answer = request.to_ascii_uppercase();
            answer.extend_from_slice(format!(" from {from}").as_bytes());
            answer
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_call_each_other_on_the_raft_port_once_a_peer_service_is_set() {
    let secret = ClusterSecret::new([3; 32]);
    let (dir1, dir2) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let timeout = Duration::from_secs(10);
    let mut first = settings(1, dir1.path());
    first.cluster_secret = Some(secret.clone());
    let leader = MetadataRaft::start(first, Arc::new(Recorder::default()))
        .await
        .unwrap();
    leader.bootstrap().await.unwrap();
    wait_leader(&leader).await;
    let mut second = settings(2, dir2.path());
    second.cluster_secret = Some(secret);
    let second_addr = second.advertised_addr.clone();
    let follower = MetadataRaft::start(second, Arc::new(Recorder::default()))
        .await
        .unwrap();
    leader.add_observer(2, second_addr).await.unwrap();
    for _ in 0..250 {
        if follower.cluster_id().is_some() && follower.membership().voters.contains_key(&1) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(follower.cluster_id(), leader.cluster_id());

    let mut caller = follower.peer_caller(1);
    let refused = caller.call(b"fetch", timeout).await.unwrap_err();
    assert!(
        refused.to_string().contains("serves no peer requests"),
        "{refused}"
    );
    leader.set_peer_service(Arc::new(Shout));
    for _ in 0..2 {
        let answer = caller.call(b"fetch", timeout).await.unwrap();
        assert_eq!(&answer[..], b"FETCH from 2");
    }
    let stranger = follower
        .peer_caller(9)
        .call(b"fetch", timeout)
        .await
        .unwrap_err();
    assert!(stranger.to_string().contains("not a member"), "{stranger}");
    follower.shutdown().await;
    leader.shutdown().await;
}
