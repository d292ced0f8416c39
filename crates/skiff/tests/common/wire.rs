//! A raw Kafka client for tests that must pick the exact request, version and broker.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, StrBytes};

pub struct Client {
    stream: TcpStream,
    correlation: i32,
}

impl Client {
    pub fn connect(addr: &str) -> Self {
        let stream = TcpStream::connect(addr).unwrap();
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .unwrap();
        Self {
            stream,
            correlation: 0,
        }
    }

    pub fn send_raw(&mut self, frame: &[u8]) {
        self.stream.write_all(frame).unwrap();
    }

    pub fn send<R: Encodable + HeaderVersion>(&mut self, api: ApiKey, version: i16, body: &R) {
        self.correlation += 1;
        let mut buf = BytesMut::new();
        RequestHeader::default()
            .with_request_api_key(api as i16)
            .with_request_api_version(version)
            .with_correlation_id(self.correlation)
            .with_client_id(Some(StrBytes::from_static_str("bad-input-test")))
            .encode(&mut buf, R::header_version(version))
            .unwrap();
        body.encode(&mut buf, version).unwrap();
        let mut frame = (buf.len() as i32).to_be_bytes().to_vec();
        frame.extend_from_slice(&buf);
        self.send_raw(&frame);
    }

    /// The next response frame without its size, or None if the broker closed the connection.
    pub fn receive(&mut self) -> Option<Bytes> {
        let mut size = [0u8; 4];
        self.stream.read_exact(&mut size).ok()?;
        let mut frame = vec![0u8; i32::from_be_bytes(size) as usize];
        self.stream.read_exact(&mut frame).ok()?;
        Some(Bytes::from(frame))
    }

    pub fn call<Req: Encodable + HeaderVersion, Resp: Decodable + HeaderVersion>(
        &mut self,
        api: ApiKey,
        version: i16,
        body: &Req,
    ) -> Resp {
        self.send(api, version, body);
        let mut frame = self.receive().expect("a response");
        let header = ResponseHeader::decode(&mut frame, Resp::header_version(version)).unwrap();
        assert_eq!(header.correlation_id, self.correlation);
        Resp::decode(&mut frame, version).unwrap()
    }

    pub fn is_closed(&mut self) -> bool {
        self.receive().is_none()
    }
}

/// Creates a topic with replication factor 1 through the broker at `addr`; its error code.
pub fn create_topic(addr: &str, name: &str, partitions: i32) -> i16 {
    create_replicated_topic(addr, name, partitions, 1, &[])
}

/// Creates a topic with `replication_factor` replicas per partition and config overrides;
/// the error code.
pub fn create_replicated_topic(
    addr: &str,
    name: &str,
    partitions: i32,
    replication_factor: i16,
    configs: &[(&str, &str)],
) -> i16 {
    let configs = configs
        .iter()
        .map(|(name, value)| {
            create_topics_request::CreatableTopicConfig::default()
                .with_name(StrBytes::from_string((*name).to_owned()))
                .with_value(Some(StrBytes::from_string((*value).to_owned())))
        })
        .collect();
    let request = CreateTopicsRequest::default()
        .with_timeout_ms(15_000)
        .with_topics(vec![create_topics_request::CreatableTopic::default()
            .with_name(TopicName(StrBytes::from_string(name.to_owned())))
            .with_num_partitions(partitions)
            .with_replication_factor(replication_factor)
            .with_configs(configs)]);
    let response: CreateTopicsResponse =
        Client::connect(addr).call(ApiKey::CreateTopics, 5, &request);
    response.topics[0].error_code
}
