//! Property tests: no byte sequence makes request decoding panic or allocate without bound, and
//! every valid request of every advertised version decodes to what was encoded.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::{Encodable, HeaderVersion, StrBytes};
use proptest::prelude::*;
use skiff_protocol::{decode_request, RequestBody, SUPPORTED_APIS};

fn frame<R: Encodable + HeaderVersion>(api: ApiKey, version: i16, body: &R) -> Vec<u8> {
    let mut buf = BytesMut::new();
    RequestHeader::default()
        .with_request_api_key(api as i16)
        .with_request_api_version(version)
        .with_correlation_id(7)
        .with_client_id(Some(StrBytes::from_static_str("fuzz")))
        .encode(&mut buf, R::header_version(version))
        .unwrap();
    body.encode(&mut buf, version).unwrap();
    buf.to_vec()
}

/// One valid request per advertised version of a few APIs with nested arrays.
fn valid_frames() -> Vec<Vec<u8>> {
    let mut frames = Vec::new();
    for &(api, min, max) in SUPPORTED_APIS {
        for version in min..=max {
            match api {
                ApiKey::Metadata => frames.push(frame(
                    api,
                    version,
                    &MetadataRequest::default()
                        .with_topics(Some(vec![metadata_request::MetadataRequestTopic::default(
                        )
                        .with_name(Some(TopicName(StrBytes::from_static_str("t"))))])),
                )),
                ApiKey::Fetch => frames.push(frame(
                    api,
                    version,
                    &FetchRequest::default()
                        .with_topics(vec![fetch_request::FetchTopic::default()
                            .with_topic(TopicName(StrBytes::from_static_str("t")))
                            .with_partitions(vec![fetch_request::FetchPartition::default()])]),
                )),
                ApiKey::Produce if version >= 3 => frames.push(frame(
                    api,
                    version,
                    &ProduceRequest::default().with_topic_data(vec![
                        produce_request::TopicProduceData::default()
                            .with_name(TopicName(StrBytes::from_static_str("t")))
                            .with_partition_data(vec![
                                produce_request::PartitionProduceData::default()
                                    .with_records(Some(Bytes::from_static(b"0123456789"))),
                            ]),
                    ]),
                )),
                ApiKey::ApiVersions => {
                    frames.push(frame(api, version, &ApiVersionsRequest::default()))
                }
                _ => {}
            }
        }
    }
    frames
}

#[test]
fn every_valid_frame_decodes() {
    for f in valid_frames() {
        let request = decode_request(Bytes::from(f)).unwrap();
        assert_eq!(request.correlation_id(), 7);
        if let RequestBody::Metadata(m) = request.body {
            assert_eq!(m.topics.unwrap()[0].name.as_ref().unwrap().as_str(), "t");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = decode_request(Bytes::from(bytes));
    }

    #[test]
    fn random_body_after_a_valid_header_never_panics(
        api in proptest::sample::select(SUPPORTED_APIS.to_vec()),
        version_offset in 0i16..20,
        body in proptest::collection::vec(any::<u8>(), 0..512),
    ) {
        let (key, min, max) = api;
        let version = min + version_offset % (max - min + 1);
        let mut f = Vec::new();
        f.extend_from_slice(&(key as i16).to_be_bytes());
        f.extend_from_slice(&version.to_be_bytes());
        f.extend_from_slice(&1i32.to_be_bytes());
        f.extend_from_slice(&body);
        let _ = decode_request(Bytes::from(f));
    }

    #[test]
    fn mutated_valid_frames_never_panic(
        index in any::<proptest::sample::Index>(),
        flips in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8),
        cut in any::<proptest::sample::Index>(),
    ) {
        let frames = valid_frames();
        let mut f = frames[index.index(frames.len())].clone();
        for (at, value) in flips {
            let i = at.index(f.len());
            f[i] = value;
        }
        let keep = cut.index(f.len() + 1);
        f.truncate(keep);
        let _ = decode_request(Bytes::from(f));
    }
}
