//! Bytes on a Raft transport connection, through the functions a connection runs: the
//! handshake's fixed-size proofs on both sides, frames read by a server without and with a
//! session (tag checked before the body is decoded), sealed frames whose tag is right so the JSON
//! decoder behind it is reached, frames read by a client as replies, and binary peer request
//! frames read by a server without and with a session. A message that decodes, and a peer
//! request's body, must survive being written and read again unchanged; a forwarded controller
//! request is decided from a small image, and the records the controller decides must apply to it.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_metadata::{decide, ControllerRequest, MetadataImage, MetadataRecord};
use skiff_raft::fuzzing::{
    client_reads, handshake_as_client, handshake_as_server, server_reads,
    server_reads_peer_requests, server_reads_sealed, Decoded, PeerRequest,
};
use skiff_raft::ForwardRequest;
use uuid::Uuid;

fuzz_target!(|data: &[u8]| {
    let Some((&op, input)) = data.split_first() else {
        return;
    };
    match op % 7 {
        0 => assert!(handshake_as_server(input).is_err()),
        1 => assert!(handshake_as_client(input).is_err()),
        2 => server_reads(input, false).into_iter().for_each(check),
        3 => server_reads(input, true).into_iter().for_each(check),
        4 => server_reads_sealed(input).into_iter().for_each(check),
        6 => {
            for authenticated in [false, true] {
                server_reads_peer_requests(input, authenticated)
                    .into_iter()
                    .for_each(check_peer_request);
            }
        }
        _ => {
            client_reads(input);
        }
    }
});

static IMAGE: OnceLock<MetadataImage> = OnceLock::new();

fn check(decoded: std::io::Result<Decoded>) {
    let decoded = decoded.expect("an accepted message can be written and read again");
    assert_eq!(
        String::from_utf8_lossy(&decoded.json),
        String::from_utf8_lossy(&decoded.round_trip)
    );
    match decoded.forward {
        Some(ForwardRequest::Controller { request, .. }) => {
            let image = IMAGE.get_or_init(image);
            if let Ok(records) = decide(&image, &request) {
                if let Err(e) = image.with_batch(image.offset().map_or(1, |o| o + 1), &records) {
                    panic!("the controller decided records its image refuses: {e:?}");
                }
            }
        }
        Some(ForwardRequest::KvWrite(op)) => {
            if skiff_raft::kv::validate(&op).is_ok() {
                skiff_raft::kv::KvStore::default().apply(&op);
            }
        }
        _ => {}
    }
}

fn check_peer_request(request: PeerRequest) {
    let again = request
        .round_trip
        .expect("an accepted peer request can be written and read again");
    assert_eq!(request.body, again);
}

/// Three unfenced brokers in two racks and one topic, with the id seeds use, of two partitions.
fn image() -> MetadataImage {
    let mut image = MetadataImage::new();
    let brokers: Vec<_> = (1..=3)
        .flat_map(|id| {
            [
                MetadataRecord::RegisterBroker {
                    id,
                    endpoints: vec![format!("127.0.0.{id}:9092")],
                    rack: Some(format!("r{}", id % 2)),
                    incarnation: Uuid::from_u128(id as u128),
                },
                MetadataRecord::UnfenceBroker { id },
            ]
        })
        .collect();
    image.apply_batch(1, &brokers).expect("valid brokers");
    let topic = decide(
        &image,
        &ControllerRequest::CreateTopic {
            name: "events".into(),
            topic_id: Uuid::from_u128(1),
            partitions: 2,
            replication_factor: 1,
            configs: Default::default(),
            assignments: None,
        },
    )
    .expect("a valid topic");
    image
        .apply_batch(2, &topic)
        .expect("a decided topic applies");
    image
}
