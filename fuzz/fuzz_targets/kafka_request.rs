//! Every byte a Kafka client sends: framing as the server does it, then header and body decoding
//! for every API key and version. A request that decodes must encode again at its version and
//! decode to the same request; the record batches of a Produce request go through the checks
//! the produce path makes.
#![no_main]

use bytes::{Bytes, BytesMut};
use kafka_protocol::protocol::Encodable;
use libfuzzer_sys::fuzz_target;
use skiff_log::batch::{validate_batch, BatchIter};
use skiff_protocol::{decode_request, FrameDecoder, RequestBody};

/// The broker's default `max-frame-bytes`.
const MAX_FRAME_BYTES: usize = 100 << 20;

fuzz_target!(|data: &[u8]| {
    // The input as one request frame, which is what most of the decoder sees.
    check(Bytes::copy_from_slice(data));
    // The input as a byte stream, cut into frames by their size prefixes.
    let framing = FrameDecoder::new(MAX_FRAME_BYTES);
    let mut stream = BytesMut::from(data);
    while let Ok(Some(frame)) = framing.decode(&mut stream) {
        check(frame);
    }
});

fn check(frame: Bytes) {
    let Ok(request) = decode_request(frame) else {
        return;
    };
    let version = request.version();
    let header_version = request.api_key.request_header_version(version);
    let mut encoded = BytesMut::new();
    request
        .header
        .encode(&mut encoded, header_version)
        .expect("a decoded header encodes at its version");
    request
        .body
        .encode(&mut encoded, version)
        .expect("a decoded body encodes at its version");
    let size = request.header.compute_size(header_version).expect("sized")
        + request.body.compute_size(version).expect("sized");
    if encoded.len() != size {
        // kafka-protocol decodes a tagged field numbered 2^31 or above as a negative tag, counts
        // it when encoding but does not write it. The broker never encodes a request, so only
        // the round trip of such a request is lost.
        return;
    }
    let again = decode_request(encoded.freeze()).expect("a re-encoded request decodes");
    assert_eq!(again.header, request.header);
    assert_eq!(again.body, request.body);

    if let RequestBody::Produce(produce) = &request.body {
        for topic in &produce.topic_data {
            for partition in &topic.partition_data {
                let Some(records) = &partition.records else {
                    continue;
                };
                for item in BatchIter::new(records) {
                    let Ok((_, range)) = item else { break };
                    if validate_batch(&records[range], MAX_FRAME_BYTES).is_err() {
                        break;
                    }
                }
            }
        }
    }
}
