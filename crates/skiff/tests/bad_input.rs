//! Bad input over a raw socket: each gets the precise Kafka error or a closed connection, and the
//! broker keeps serving everyone else without losing data.

mod common;

use bytes::{Buf, Bytes};
use common::wire::Client;
use common::Broker;
use kafka_protocol::messages::create_topics_request::{CreatableTopic, CreatableTopicConfig};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, StrBytes};
use skiff_log::testing::BatchBuilder;

fn create_topic(
    client: &mut Client,
    name: &'static str,
    configs: &[(&'static str, &'static str)],
) -> i16 {
    let request = CreateTopicsRequest::default().with_topics(vec![CreatableTopic::default()
        .with_name(TopicName(StrBytes::from_static_str(name)))
        .with_num_partitions(1)
        .with_replication_factor(1)
        .with_configs(
            configs
                .iter()
                .map(|(k, v)| {
                    CreatableTopicConfig::default()
                        .with_name(StrBytes::from_static_str(k))
                        .with_value(Some(StrBytes::from_static_str(v)))
                })
                .collect(),
        )]);
    let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, 5, &request);
    response.topics[0].error_code
}

fn produce(client: &mut Client, topic: &'static str, acks: i16, batch: Vec<u8>) -> (i16, i64) {
    let request = ProduceRequest::default()
        .with_acks(acks)
        .with_timeout_ms(5000)
        .with_topic_data(vec![TopicProduceData::default()
            .with_name(TopicName(StrBytes::from_static_str(topic)))
            .with_partition_data(vec![PartitionProduceData::default()
                .with_index(0)
                .with_records(Some(Bytes::from(batch)))])]);
    let response: ProduceResponse = client.call(ApiKey::Produce, 8, &request);
    let p = &response.responses[0].partition_responses[0];
    (p.error_code, p.base_offset)
}

fn still_serves(broker: &Broker) {
    let mut client = Client::connect(&broker.bootstrap());
    let response: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(response.error_code, 0);
}

#[test]
fn oversized_frame_closes_only_that_connection() {
    let broker = Broker::start_with(&["--max-frame-bytes", "65536"]);
    let mut client = Client::connect(&broker.bootstrap());
    // Claims 1 GiB and sends nothing more: the broker must refuse from the size alone.
    client.send_raw(&(1i32 << 30).to_be_bytes());
    assert!(client.is_closed());
    let mut negative = Client::connect(&broker.bootstrap());
    negative.send_raw(&(-5i32).to_be_bytes());
    assert!(negative.is_closed());
    still_serves(&broker);
}

#[test]
fn unknown_api_key_and_garbage_close_the_connection() {
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    client.send_raw(&[0, 0, 0, 8, 0x03, 0xe7, 0, 0, 0, 0, 0, 1]);
    assert!(client.is_closed());

    // A Metadata v1 header followed by a topics array that claims far more than the frame holds.
    let mut client = Client::connect(&broker.bootstrap());
    let mut frame = vec![0, 0, 0, 0, 0, 3, 0, 1, 0, 0, 0, 9, 0xff, 0xff];
    frame.extend_from_slice(&i32::MAX.to_be_bytes());
    let len = (frame.len() - 4) as i32;
    frame[..4].copy_from_slice(&len.to_be_bytes());
    client.send_raw(&frame);
    assert!(client.is_closed());

    // Fetch at a version never advertised.
    let mut client = Client::connect(&broker.bootstrap());
    client.send_raw(&[0, 0, 0, 10, 0, 1, 0, 99, 0, 0, 0, 2, 0xff, 0xff]);
    assert!(client.is_closed());
    still_serves(&broker);
}

#[test]
fn api_versions_too_new_gets_a_v0_error_with_the_supported_range() {
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    client.send_raw(&[0, 0, 0, 10, 0, 18, 0, 99, 0, 0, 0, 5, 0xff, 0xff]);
    let mut frame = client.receive().unwrap();
    assert_eq!(frame.get_i32(), 5);
    let body = ApiVersionsResponse::decode(&mut frame, 0).unwrap();
    assert_eq!(body.error_code, 35);
    let api_versions = body.api_keys.iter().find(|k| k.api_key == 18).unwrap();
    assert_eq!((api_versions.min_version, api_versions.max_version), (0, 4));
    let produce = body.api_keys.iter().find(|k| k.api_key == 0).unwrap();
    assert_eq!(
        produce.min_version, 0,
        "librdkafka < 2.10 needs Produce from v0"
    );
    // The client retries lower on the same connection, as kafka-python does.
    let retried: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(retried.error_code, 0);
}

#[test]
fn corrupt_oversized_and_invalid_produce_requests_get_precise_errors() {
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    assert_eq!(
        create_topic(&mut client, "strict", &[("max.message.bytes", "1000")]),
        0
    );

    let good = BatchBuilder::new(1).record(Some(b"k"), Some(b"v")).build();
    assert_eq!(produce(&mut client, "strict", -1, good.clone()), (0, 0));

    let mut bad_crc = good.clone();
    let last = bad_crc.len() - 1;
    bad_crc[last] ^= 0xff;
    assert_eq!(
        produce(&mut client, "strict", -1, bad_crc).0,
        2,
        "CORRUPT_MESSAGE"
    );

    let mut torn = good.clone();
    torn.truncate(torn.len() - 3);
    assert_eq!(
        produce(&mut client, "strict", -1, torn).0,
        2,
        "CORRUPT_MESSAGE"
    );

    let big = BatchBuilder::new(1)
        .record(None, Some(&[7u8; 2000]))
        .build();
    assert_eq!(
        produce(&mut client, "strict", -1, big).0,
        10,
        "MESSAGE_TOO_LARGE"
    );

    assert_eq!(
        produce(&mut client, "strict", 5, good.clone()).0,
        21,
        "INVALID_REQUIRED_ACKS"
    );
    assert_eq!(
        produce(&mut client, "no-such-topic", 1, good.clone()).0,
        3,
        "UNKNOWN_TOPIC_OR_PARTITION"
    );

    assert_eq!(
        create_topic(&mut client, "bad/name", &[]),
        17,
        "INVALID_TOPIC_EXCEPTION"
    );
    assert_eq!(
        create_topic(&mut client, "cfg", &[("retention.ms", "x")]),
        40,
        "INVALID_CONFIG"
    );
    assert_eq!(
        create_topic(&mut client, "strict", &[]),
        36,
        "TOPIC_ALREADY_EXISTS"
    );

    // Nothing refused was written: the next record lands at offset 1.
    assert_eq!(produce(&mut client, "strict", -1, good), (0, 1));
}

#[test]
fn idempotent_sequences_are_checked_like_kafka() {
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    assert_eq!(create_topic(&mut client, "seq", &[]), 0);
    let init: InitProducerIdResponse = client.call(
        ApiKey::InitProducerId,
        4,
        &InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60000)
            .with_producer_id((-1).into())
            .with_producer_epoch(-1),
    );
    assert_eq!(init.error_code, 0);
    let (pid, epoch) = (init.producer_id.0, init.producer_epoch);
    // Producer state expires by batch timestamp (as in Kafka), so these carry the real time.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as i64;
    let batch = |seq: i32, epoch: i16| {
        BatchBuilder::new(now)
            .producer(pid, epoch, seq)
            .record(None, Some(b"a"))
            .record(None, Some(b"b"))
            .build()
    };
    assert_eq!(produce(&mut client, "seq", -1, batch(0, epoch)), (0, 0));
    assert_eq!(produce(&mut client, "seq", -1, batch(2, epoch)), (0, 2));
    // A retry of an acknowledged batch is acknowledged again, not written again.
    assert_eq!(produce(&mut client, "seq", -1, batch(0, epoch)), (0, 0));
    // A gap is refused.
    assert_eq!(
        produce(&mut client, "seq", -1, batch(9, epoch)).0,
        45,
        "OUT_OF_ORDER_SEQUENCE_NUMBER"
    );
    // A newer epoch starts over at 0; then the old epoch is fenced.
    assert_eq!(produce(&mut client, "seq", -1, batch(0, epoch + 1)), (0, 4));
    assert_eq!(
        produce(&mut client, "seq", -1, batch(4, epoch)).0,
        47,
        "INVALID_PRODUCER_EPOCH"
    );
    // The state survives a restart.
    drop(client);
    let mut broker = broker;
    broker.kill9();
    broker.restart();
    let mut client = Client::connect(&broker.bootstrap());
    assert_eq!(produce(&mut client, "seq", -1, batch(0, epoch + 1)), (0, 4));
    assert_eq!(produce(&mut client, "seq", -1, batch(2, epoch + 1)), (0, 6));
}

#[test]
fn produce_v0_to_v2_is_refused_per_partition_and_the_connection_stays() {
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    // Produce v2: header (client id "c"), acks 1, timeout, one topic with one partition.
    let mut frame = vec![0, 0, 0, 2, 0, 0, 0, 42, 0, 1, b'c', 0, 1, 0, 0, 3, 232];
    frame.extend_from_slice(&[0, 0, 0, 1, 0, 1, b't', 0, 0, 0, 1, 0, 0, 0, 4]);
    frame.extend_from_slice(&[0, 0, 0, 2, 0xab, 0xcd]);
    let mut sized = (frame.len() as i32).to_be_bytes().to_vec();
    sized.extend_from_slice(&frame);
    client.send_raw(&sized);
    let mut response = client
        .receive()
        .expect("an answer, not a closed connection");
    assert_eq!(response.get_i32(), 42);
    assert_eq!(response.get_i32(), 1); // topics
    assert_eq!(response.get_i16(), 1);
    assert_eq!(response.get_u8(), b't');
    assert_eq!(response.get_i32(), 1); // partitions
    assert_eq!(response.get_i32(), 4);
    assert_eq!(response.get_i16(), 35, "UNSUPPORTED_VERSION");
    let versions: ApiVersionsResponse =
        client.call(ApiKey::ApiVersions, 3, &ApiVersionsRequest::default());
    assert_eq!(versions.error_code, 0);
}

/// The names of every topic, from Metadata.
fn topic_names(client: &mut Client) -> Vec<String> {
    let metadata: MetadataResponse = client.call(
        ApiKey::Metadata,
        12,
        &MetadataRequest::default()
            .with_topics(None)
            .with_allow_auto_topic_creation(false),
    );
    metadata
        .topics
        .iter()
        .filter_map(|t| t.name.as_ref().map(|n| n.to_string()))
        .collect()
}

/// One framed JSON message to the Raft port (4-byte length, then the body); the reply, or None
/// when the connection is closed without one.
fn raft_exchange(port: u16, body: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream
        .set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut frame = (body.len() as u32).to_be_bytes().to_vec();
    frame.extend_from_slice(body.as_bytes());
    stream.write_all(&frame).ok()?;
    let mut len = [0u8; 4];
    stream.read_exact(&mut len).ok()?;
    // A broker with a cluster secret sends a nonce first: its bytes are no reply length.
    let len = u32::from_be_bytes(len) as usize;
    if len > 1 << 20 {
        return None;
    }
    let mut reply = vec![0u8; len];
    stream.read_exact(&mut reply).ok()?;
    Some(String::from_utf8_lossy(&reply).into_owned())
}

/// The poison-record attack: one message to the Raft port, from a node that is not a member,
/// carrying records with a topic config no broker can apply. Raw records are not a wire
/// message at all, and a forwarded CreateTopic with such a config is refused by the controller
/// (and would be by every image), so the broker keeps serving, and serves after a restart.
#[test]
fn a_forged_topic_config_on_the_raft_port_is_refused_and_the_broker_keeps_serving() {
    let mut broker = Broker::start();
    // Once a topic can be created, the broker is registered and unfenced: the forged partition's
    // leader is valid, so only its config is wrong.
    let mut client = Client::connect(&broker.bootstrap());
    assert_eq!(create_topic(&mut client, "healthy", &[]), 0);
    let stats: serde_json::Value =
        serde_json::from_str(&broker.http_get("/raft/stats").unwrap()).unwrap();
    let cluster_id = stats["cluster_id"].as_str().unwrap().to_owned();
    let topic_id = "0a6f2b64-9d3e-4f55-9a57-1c2d3e4f5a6b";
    let records = format!(
        r#"{{"cluster_id":null,"from":9,"rpc":{{"Forward":{{"Records":[{{"CreateTopic":{{"name":"poison","topic_id":"{topic_id}","configs":{{"retention.ms":"not-a-number"}}}}}},{{"CreatePartition":{{"topic_id":"{topic_id}","partition":0,"replicas":[1],"isr":[1],"leader":1,"leader_epoch":0,"partition_epoch":0}}}}]}}}}}}"#
    );
    assert_eq!(
        raft_exchange(broker.raft_port, &records),
        None,
        "raw records are not a message: the connection is closed"
    );
    let forwarded = format!(
        r#"{{"cluster_id":"{cluster_id}","from":9,"rpc":{{"Forward":{{"Controller":{{"request":{{"CreateTopic":{{"name":"poison","topic_id":"{topic_id}","partitions":1,"replication_factor":1,"configs":{{"retention.ms":"not-a-number"}},"assignments":null}}}},"validate_only":false}}}}}}}}"#
    );
    let reply = raft_exchange(broker.raft_port, &forwarded).expect("a reply");
    assert!(
        reply.contains("Failed") && reply.contains("retention.ms"),
        "{reply}"
    );

    assert_eq!(create_topic(&mut client, "after", &[]), 0);
    broker.kill9();
    broker.restart();
    let names = topic_names(&mut Client::connect(&broker.bootstrap()));
    assert!(
        names.contains(&"healthy".to_string()) && names.contains(&"after".to_string()),
        "{names:?}"
    );
    assert!(!names.contains(&"poison".to_string()), "{names:?}");
}

/// With `--cluster-secret`, the same forwarded request, now with a valid config and the right
/// cluster id, is not heard from a peer that cannot prove the secret: the connection closes
/// without a reply, and nothing is created.
#[test]
fn with_a_cluster_secret_the_raft_port_hears_no_one_without_it() {
    let secret = "5e".repeat(32);
    let broker = Broker::start_with(&["--cluster-secret", &secret]);
    let mut client = Client::connect(&broker.bootstrap());
    assert_eq!(create_topic(&mut client, "guarded", &[]), 0);
    let stats: serde_json::Value =
        serde_json::from_str(&broker.http_get("/raft/stats").unwrap()).unwrap();
    let cluster_id = stats["cluster_id"].as_str().unwrap().to_owned();
    let forwarded = format!(
        r#"{{"cluster_id":"{cluster_id}","from":9,"rpc":{{"Forward":{{"Controller":{{"request":{{"CreateTopic":{{"name":"sneaked","topic_id":"0a6f2b64-9d3e-4f55-9a57-1c2d3e4f5a6c","partitions":1,"replication_factor":1,"configs":{{}},"assignments":null}}}},"validate_only":false}}}}}}}}"#
    );
    assert_eq!(raft_exchange(broker.raft_port, &forwarded), None);
    assert_eq!(create_topic(&mut client, "still-serving", &[]), 0);
    assert!(!topic_names(&mut client).contains(&"sneaked".to_string()));
    common::wait_until(
        "the refused connection counted",
        std::time::Duration::from_secs(10),
        || {
            broker.http_get("/metrics").is_some_and(|m| {
                m.contains(r#"skiff_raft_unproved_connections_total{reason="wrong proof"} 1"#)
            })
        },
    );
}

/// InitProducerId naming a producer id (as KIP-360 clients do after some errors) gets a new id
/// at epoch 0, as Kafka answers: naming another producer's id must not bump its epoch, which
/// would fence that producer.
#[test]
fn init_producer_id_never_hands_out_a_named_id_again() {
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    let init = |client: &mut Client, id: i64, epoch: i16| -> InitProducerIdResponse {
        let request = InitProducerIdRequest::default()
            .with_transactional_id(None)
            .with_transaction_timeout_ms(60_000)
            .with_producer_id(id.into())
            .with_producer_epoch(epoch);
        client.call(ApiKey::InitProducerId, 4, &request)
    };
    let first = init(&mut client, -1, -1);
    assert_eq!((first.error_code, first.producer_epoch), (0, 0));
    let claimed = init(&mut client, first.producer_id.0, 0);
    assert_eq!(claimed.error_code, 0);
    assert_ne!(claimed.producer_id, first.producer_id);
    assert_eq!(claimed.producer_epoch, 0);
}

#[test]
fn one_metadata_request_auto_creates_a_bounded_number_of_topics() {
    const PER_REQUEST: usize = 100;
    const LEADER_NOT_AVAILABLE: i16 = 5;
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    let request = MetadataRequest::default()
        .with_allow_auto_topic_creation(true)
        .with_topics(Some(
            (0..=PER_REQUEST)
                .map(|i| {
                    metadata_request::MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(format!("auto-{i}")))))
                })
                .collect(),
        ));
    let response: MetadataResponse = client.call(ApiKey::Metadata, 9, &request);
    let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
    assert_eq!(codes[..PER_REQUEST], [0; PER_REQUEST]);
    assert_eq!(codes[PER_REQUEST], LEADER_NOT_AVAILABLE);
    let last = format!("auto-{PER_REQUEST}");
    assert!(!topic_names(&mut client).contains(&last));

    // The client's retry, as on any LEADER_NOT_AVAILABLE, creates the rest.
    let response: MetadataResponse = client.call(ApiKey::Metadata, 9, &request);
    assert!(response.topics.iter().all(|t| t.error_code == 0));
    assert!(topic_names(&mut client).contains(&last));
}

#[test]
fn topics_past_a_requests_budget_get_the_throttling_error_where_the_version_has_it() {
    const THROTTLING_QUOTA_EXCEEDED: i16 = 89;
    const INVALID_REQUEST: i16 = 42;
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    let request = CreateTopicsRequest::default()
        .with_validate_only(true)
        .with_topics(
            (0..1001)
                .map(|i| {
                    CreatableTopic::default()
                        .with_name(TopicName(StrBytes::from_string(format!("budget-{i}"))))
                        .with_num_partitions(1)
                        .with_replication_factor(1)
                })
                .collect(),
        );
    for (version, expected) in [(7, THROTTLING_QUOTA_EXCEEDED), (5, INVALID_REQUEST)] {
        let response: CreateTopicsResponse = client.call(ApiKey::CreateTopics, version, &request);
        let codes: Vec<i16> = response.topics.iter().map(|t| t.error_code).collect();
        assert_eq!(codes[..1000], [0; 1000], "v{version}");
        assert_eq!(codes[1000], expected, "v{version}");
    }

    // Config changes are one metadata write per resource too.
    use incremental_alter_configs_request::AlterConfigsResource;
    let alter = IncrementalAlterConfigsRequest::default().with_resources(
        (0..1001)
            .map(|i| {
                AlterConfigsResource::default()
                    .with_resource_type(2)
                    .with_resource_name(StrBytes::from_string(format!("absent-{i}")))
            })
            .collect(),
    );
    let response: IncrementalAlterConfigsResponse =
        client.call(ApiKey::IncrementalAlterConfigs, 1, &alter);
    let codes: Vec<i16> = response.responses.iter().map(|r| r.error_code).collect();
    assert!(codes[..1000].iter().all(|&c| c != INVALID_REQUEST));
    assert_eq!(codes[1000], INVALID_REQUEST);
}

#[test]
fn a_zstd_topic_is_not_served_to_fetches_older_than_zstd() {
    const UNSUPPORTED_COMPRESSION_TYPE: i16 = 76;
    let broker = Broker::start();
    let mut client = Client::connect(&broker.bootstrap());
    assert_eq!(
        create_topic(&mut client, "zstd", &[("compression.type", "zstd")]),
        0
    );
    use fetch_request::{FetchPartition, FetchTopic};
    let request = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(0)
        .with_max_bytes(1 << 20)
        .with_topics(vec![FetchTopic::default()
            .with_topic(TopicName(StrBytes::from_static_str("zstd")))
            .with_partitions(vec![FetchPartition::default()
                .with_partition(0)
                .with_fetch_offset(0)
                .with_partition_max_bytes(1 << 20)])]);
    // The new partition's log opens in the background; NOT_LEADER_OR_FOLLOWER until it has.
    common::wait_until(
        "the partition served",
        std::time::Duration::from_secs(20),
        || {
            let response: FetchResponse = client.call(ApiKey::Fetch, 12, &request);
            response.responses[0].partitions[0].error_code == 0
        },
    );
    for (version, expected) in [(9, UNSUPPORTED_COMPRESSION_TYPE), (10, 0), (12, 0)] {
        let response: FetchResponse = client.call(ApiKey::Fetch, version, &request);
        assert_eq!(
            response.responses[0].partitions[0].error_code, expected,
            "Fetch v{version}"
        );
    }
}
