//! A slow disk on one partition stalls only that partition. One broker in-process, with its
//! metadata quorum and a second Raft node following it, on a runtime of two async workers: a
//! plain thread holds the log of partition `slow-0` as an append stuck in its fsync would, and
//! more produces than there are workers wait for it. Meanwhile produce and fetch on another
//! partition, metadata writes through Raft (including a config change of the blocked topic,
//! which its log has to take), their replication to the other node and the opening of a new
//! topic's log must all complete; the blocked produces complete once the disk is back. The same
//! with the disk of `__consumer_offsets-0` blocked under several offset commits, whose
//! coordinator holds its lock while it appends.
//! The test thread itself is no async worker: it only waits on channels, so a runtime whose
//! workers are all blocked shows up as a timeout here, not as a hang.

// `KafkaApis::handle` is one deep future; checking it is `Send` for `spawn` goes past 128.
#![recursion_limit = "256"]

use std::collections::BTreeMap;
use std::net::{SocketAddr, TcpListener};
use std::sync::mpsc;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{
    ApiKey, FetchRequest, GroupId, OffsetCommitRequest, ProduceRequest, RequestHeader, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use skiff_broker::apis::ClientInfo;
use skiff_broker::config::BrokerConfig;
use skiff_broker::group::GroupService;
use skiff_broker::metadata_publisher::MetadataPublisher;
use skiff_broker::replica_manager::ReplicaManager;
use skiff_broker::KafkaApis;
use skiff_log::records::RecordBatchBuilder;
use skiff_metadata::{MetadataImage, MetadataRecord};
use skiff_protocol::{Request, RequestBody, ResponseBody};
use skiff_raft::{MetadataListener, MetadataRaft, RaftSettings};
use uuid::Uuid;

/// Long enough for anything that is not stuck, on a loaded machine.
const PATIENCE: Duration = Duration::from_secs(60);

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

fn topic_records(name: &str, configs: &[(&str, &str)]) -> Vec<MetadataRecord> {
    let topic_id = Uuid::new_v4();
    vec![
        MetadataRecord::CreateTopic {
            name: name.into(),
            topic_id,
            configs: configs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect::<BTreeMap<_, _>>(),
        },
        MetadataRecord::CreatePartition {
            topic_id,
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: Some(1),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        },
    ]
}

fn request(api_key: ApiKey, version: i16, body: RequestBody) -> Request {
    Request {
        api_key,
        header: RequestHeader::default()
            .with_request_api_key(api_key as i16)
            .with_request_api_version(version),
        body,
    }
}

fn produce(topic: &str, value: &str) -> Request {
    let mut batch = RecordBatchBuilder::new(0);
    batch
        .push(0, 1_700_000_000_000, None, Some(value.as_bytes()), &[])
        .unwrap();
    let body = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_string(topic.into())))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch.build())))])]);
    request(ApiKey::Produce, 9, RequestBody::Produce(body))
}

fn fetch(topic: &str) -> Request {
    let body = FetchRequest::default()
        .with_max_wait_ms(0)
        .with_min_bytes(1)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_string(topic.into())))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    request(ApiKey::Fetch, 12, RequestBody::Fetch(body))
}

/// A standalone commit (no generation, no member) of offset `offset` of partition fast-0.
fn offset_commit(group: &str, offset: i64) -> Request {
    let body = OffsetCommitRequest::default()
        .with_group_id(GroupId(StrBytes::from_string(group.into())))
        .with_generation_id_or_member_epoch(-1)
        .with_topics(vec![OffsetCommitRequestTopic::default()
            .with_name(TopicName(StrBytes::from_static_str("fast")))
            .with_partitions(vec![OffsetCommitRequestPartition::default()
                .with_partition_index(0)
                .with_committed_offset(offset)])]);
    request(ApiKey::OffsetCommit, 8, RequestBody::OffsetCommit(body))
}

fn committed(response: ResponseBody) -> i16 {
    let ResponseBody::OffsetCommit(response) = response else {
        panic!("not an offset commit response: {response:?}")
    };
    response.topics[0].partitions[0].error_code
}

async fn handle(apis: &Arc<KafkaApis>, request: Request) -> ResponseBody {
    let client = ClientInfo {
        client_id: "slow-disk-test",
        client_host: "/127.0.0.1",
    };
    apis.handle(request, &client)
        .await
        .expect("produce with acks=-1 and fetch are answered")
}

/// The base offset a one-partition produce got, or its error code.
fn produced(response: ResponseBody) -> Result<i64, i16> {
    let ResponseBody::Produce(response) = response else {
        panic!("not a produce response: {response:?}")
    };
    let partition = &response.responses[0].partition_responses[0];
    match partition.error_code {
        0 => Ok(partition.base_offset),
        error => Err(error),
    }
}

/// Produces until the partition's log is open here (NOT_LEADER_OR_FOLLOWER until then).
async fn produce_when_open(apis: &Arc<KafkaApis>, topic: &str) -> i64 {
    const NOT_LEADER_OR_FOLLOWER: i16 = 6;
    loop {
        match produced(handle(apis, produce(topic, "v")).await) {
            Ok(offset) => return offset,
            Err(NOT_LEADER_OR_FOLLOWER) => tokio::time::sleep(Duration::from_millis(10)).await,
            Err(error) => panic!("producing to {topic} failed with {error}"),
        }
    }
}

/// The second Raft node hosts no partitions.
struct NoPartitions;

impl MetadataListener for NoPartitions {
    fn image_changed(&self, _: &Arc<MetadataImage>) {}
}

struct Broker {
    apis: Arc<KafkaApis>,
    raft: Arc<MetadataRaft>,
    follower: Arc<MetadataRaft>,
    replicas: Arc<ReplicaManager>,
    publisher: Arc<MetadataPublisher>,
}

async fn start(dir: &std::path::Path) -> Broker {
    let replicas = Arc::new(ReplicaManager::new(
        dir,
        skiff_broker::replication::standalone(1),
    ));
    let mut config = BrokerConfig::new(dir.to_path_buf(), free_addr());
    config.node_id = 1;
    config.offsets_topic_partitions = 1;
    let groups = Arc::new(GroupService::new(config.group_config()));
    let incarnation = Uuid::new_v4();
    let publisher =
        Arc::new(MetadataPublisher::new(1, incarnation, replicas.clone(), groups.clone()).unwrap());
    let settings = RaftSettings::new(1, free_addr(), dir.join("metadata"));
    let raft = MetadataRaft::start(settings, publisher.clone())
        .await
        .unwrap();
    raft.bootstrap().await.unwrap();
    while !raft.is_leader() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut records = vec![
        MetadataRecord::RegisterBroker {
            id: 1,
            endpoints: vec![config.kafka_addr.to_string()],
            rack: None,
            incarnation,
        },
        MetadataRecord::UnfenceBroker { id: 1 },
    ];
    // Every append to `slow` is fsynced before it is answered.
    records.extend(topic_records("slow", &[("flush.messages", "1")]));
    records.extend(topic_records("fast", &[]));
    records.extend(topic_records(
        "__consumer_offsets",
        &[("cleanup.policy", "compact")],
    ));
    raft.propose(records).await.unwrap();
    let follower_settings = RaftSettings::new(2, free_addr(), dir.join("follower"));
    let follower_addr = follower_settings.advertised_addr.clone();
    let follower = MetadataRaft::start(follower_settings, Arc::new(NoPartitions))
        .await
        .unwrap();
    // An observer: it is sent every entry and heartbeat, and never stands for election.
    let index = raft.add_observer(2, follower_addr).await.unwrap();
    assert!(follower.wait_applied(index, PATIENCE).await);
    let apis = Arc::new(KafkaApis::open(config, raft.clone(), replicas.clone(), groups).unwrap());
    Broker {
        apis,
        raft,
        follower,
        replicas,
        publisher,
    }
}

#[test]
fn a_blocked_partition_does_not_stall_other_partitions_or_the_metadata_quorum() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = runtime.block_on(start(dir.path()));
    broker.publisher.wait_idle();
    let slow = broker.replicas.get("slow", 0).expect("slow-0 is open");

    // The disk of slow-0 stops answering: its log stays locked, as by an append whose fsync
    // does not return.
    let (held_tx, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let blocker = std::thread::spawn(move || {
        let _log = slow.log_blocking();
        held_tx.send(()).unwrap();
        let _ = released.recv();
    });
    held.recv().unwrap();
    let blocked: Vec<_> = (0..4)
        .map(|i| {
            let apis = broker.apis.clone();
            runtime.spawn(
                async move { produced(handle(&apis, produce("slow", &i.to_string())).await) },
            )
        })
        .collect();
    // Give the blocked produces time to reach the log before the rest starts; what is checked
    // below does not depend on this wait.
    std::thread::sleep(Duration::from_millis(300));

    let (done_tx, done) = mpsc::channel();
    let (apis, raft, follower) = (
        broker.apis.clone(),
        broker.raft.clone(),
        broker.follower.clone(),
    );
    let slow_topic_id = raft.image().topic_by_name("slow").unwrap().topic_id;
    runtime.spawn(async move {
        let fast_offset = produced(handle(&apis, produce("fast", "a")).await);
        let ResponseBody::Fetch(fetched) = handle(&apis, fetch("fast")).await else {
            panic!("not a fetch response")
        };
        let fetched = fetched.responses[0].partitions[0]
            .records
            .as_ref()
            .map_or(0, Bytes::len);
        // Through the metadata quorum: a config change of the blocked topic, then a new topic
        // whose log is opened and served.
        raft.propose(vec![MetadataRecord::SetTopicConfig {
            topic_id: slow_topic_id,
            name: "retention.ms".into(),
            value: Some("3600000".into()),
        }])
        .await
        .unwrap();
        let index = raft.propose(topic_records("later", &[])).await.unwrap();
        let replicated = follower.wait_applied(index, PATIENCE).await;
        let later_offset = produce_when_open(&apis, "later").await;
        let _ = done_tx.send((fast_offset, fetched, replicated, later_offset));
    });
    let (fast_offset, fetched, replicated, later_offset) = done
        .recv_timeout(PATIENCE)
        .expect("produce, fetch and metadata writes stalled behind one partition's blocked disk");
    assert_eq!(fast_offset, Ok(0));
    assert!(fetched > 0, "the fetch returned the batch just produced");
    assert!(replicated, "the other Raft node applied the new topic");
    assert_eq!(later_offset, 0);
    assert!(
        blocked.iter().all(|task| !task.is_finished()),
        "the produces to the blocked partition still wait for it"
    );

    // The disk comes back: every waiting produce is appended, each at its own offset.
    release.send(()).unwrap();
    blocker.join().unwrap();
    let mut offsets: Vec<i64> = runtime.block_on(async {
        let mut offsets = Vec::new();
        for task in blocked {
            let offset = tokio::time::timeout(PATIENCE, task)
                .await
                .expect("a produce to the released partition completes")
                .unwrap()
                .expect("the produce succeeds");
            offsets.push(offset);
        }
        offsets
    });
    offsets.sort();
    assert_eq!(offsets, [0, 1, 2, 3]);
    assert_eq!(
        broker
            .replicas
            .get("slow", 0)
            .unwrap()
            .log_blocking()
            .config()
            .retention_ms,
        Some(3_600_000),
        "the config change reached the log once it was free"
    );
    broker.publisher.stop();
}

#[test]
fn group_appends_waiting_for_a_blocked_disk_hold_no_async_worker() {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let broker = runtime.block_on(start(dir.path()));
    broker.publisher.wait_idle();
    // Loads the coordinator of __consumer_offsets-0, as the group timers do.
    broker.apis.run_group_timers();
    let offsets = broker
        .replicas
        .get("__consumer_offsets", 0)
        .expect("__consumer_offsets-0 is open");

    let (held_tx, held) = mpsc::channel();
    let (release, released) = mpsc::channel::<()>();
    let blocker = std::thread::spawn(move || {
        let _log = offsets.log_blocking();
        held_tx.send(()).unwrap();
        let _ = released.recv();
    });
    held.recv().unwrap();
    // Commits of several groups: each holds its coordinator's lock, or waits for it, while an
    // append waits for the disk.
    let blocked: Vec<_> = (0..4)
        .map(|i| {
            let apis = broker.apis.clone();
            runtime.spawn(async move {
                committed(handle(&apis, offset_commit(&format!("group-{i}"), i)).await)
            })
        })
        .collect();
    // As above, only gives the commits time to reach the coordinator.
    std::thread::sleep(Duration::from_millis(300));

    let (done_tx, done) = mpsc::channel();
    let apis = broker.apis.clone();
    runtime.spawn(async move {
        let _ = done_tx.send(produced(handle(&apis, produce("fast", "a")).await));
    });
    let fast_offset = done
        .recv_timeout(PATIENCE)
        .expect("a produce stalled behind group appends waiting for a blocked disk");
    assert_eq!(fast_offset, Ok(0));
    assert!(
        blocked.iter().all(|task| !task.is_finished()),
        "the commits still wait for the blocked partition"
    );

    release.send(()).unwrap();
    blocker.join().unwrap();
    let codes: Vec<i16> = runtime.block_on(async {
        let mut codes = Vec::new();
        for task in blocked {
            codes.push(
                tokio::time::timeout(PATIENCE, task)
                    .await
                    .expect("a commit completes once the disk is back")
                    .unwrap(),
            );
        }
        codes
    });
    assert_eq!(codes, [0, 0, 0, 0]);
    broker.publisher.stop();
}
