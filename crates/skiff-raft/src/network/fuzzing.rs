//! The transport's decoders driven from bytes in memory, for the fuzz targets in `fuzz/` (feature
//! `fuzzing`, never enabled by the broker): the functions a connection runs, over a byte slice
//! instead of a socket.

use std::io;
use std::sync::OnceLock;

use tokio::runtime::Runtime;

use super::{
    prove_as_client, prove_as_server, read_frame, read_message, write_frame, write_message,
    ClusterSecret, Envelope, Reply, Session, CLIENT_FRAMES, MAX_PEER_REQUEST_BYTES, SERVER_FRAMES,
};
use crate::forward::ForwardRequest;

/// The secret of the handshake targets; any fixed value serves.
const SECRET: [u8; 32] = [7; 32];
const NODE: u64 = 1;

fn block_on<F: std::future::Future>(future: F) -> F::Output {
    static RUNTIME: OnceLock<Runtime> = OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_current_thread()
                .build()
                .expect("a current-thread runtime without I/O or timers")
        })
        .block_on(future)
}

/// Both ends of an authenticated connection under one key: (client, server).
fn session_pair() -> (Session, Session) {
    let end = |send_label, receive_label| Session {
        key: [9; 32],
        send_label,
        receive_label,
        sent: 0,
        received: 0,
    };
    (
        end(CLIENT_FRAMES, SERVER_FRAMES),
        end(SERVER_FRAMES, CLIENT_FRAMES),
    )
}

/// A message a server accepted, as JSON, and again after a trip through `write_message` and
/// `read_message` over an authenticated connection: the two must be equal.
pub struct Decoded {
    pub json: Vec<u8>,
    pub round_trip: Vec<u8>,
    /// The request, when the message forwards one to the controller.
    pub forward: Option<ForwardRequest>,
}

async fn round_trip(envelope: Envelope) -> io::Result<Decoded> {
    let json = serde_json::to_vec(&envelope).map_err(io::Error::other)?;
    let (mut client, mut server) = session_pair();
    let mut wire = Vec::new();
    write_message(&mut wire, Some(&mut client), &envelope).await?;
    let again: Envelope = read_message(&mut wire.as_slice(), Some(&mut server)).await?;
    Ok(Decoded {
        json,
        round_trip: serde_json::to_vec(&again).map_err(io::Error::other)?,
        forward: match envelope.rpc {
            super::Rpc::Forward(request) => Some(request),
            _ => None,
        },
    })
}

/// What a server reads from `input` on a connection: frames are decoded until one fails (the
/// connection would close there). `authenticated` reads them as a connection after the
/// handshake does, each frame ending in its tag.
pub fn server_reads(input: &[u8], authenticated: bool) -> Vec<io::Result<Decoded>> {
    block_on(async {
        let mut reader = input;
        let mut session = authenticated.then(|| session_pair().1);
        let mut decoded = Vec::new();
        while let Ok(envelope) = read_message::<Envelope, _>(&mut reader, session.as_mut()).await {
            decoded.push(round_trip(envelope).await);
        }
        decoded
    })
}

/// What a server makes of `body` sent by a peer that holds the session key: the body is sealed
/// and framed as `write_message` does, then read, so the decoder behind the tag check is
/// reached. `None` when the server refuses it.
pub fn server_reads_sealed(body: &[u8]) -> Option<io::Result<Decoded>> {
    block_on(async {
        let (mut client, mut server) = session_pair();
        let len = u32::try_from(body.len() + super::TAG_LEN).ok()?;
        let mut frame = len.to_be_bytes().to_vec();
        frame.extend_from_slice(body);
        frame.extend_from_slice(&client.seal(body));
        let envelope: Envelope = read_message(&mut frame.as_slice(), Some(&mut server))
            .await
            .ok()?;
        Some(round_trip(envelope).await)
    })
}

/// What a client reads from `input` as replies: the number of replies decoded before a frame
/// failed.
pub fn client_reads(input: &[u8]) -> usize {
    block_on(async {
        let mut reader = input;
        let mut count = 0;
        while read_message::<Reply, _>(&mut reader, None).await.is_ok() {
            count += 1;
        }
        count
    })
}

/// A binary request a server read on a peer stream, and the same request after a trip through
/// `write_frame` and `read_frame` over an authenticated connection: the two must be equal.
pub struct PeerRequest {
    pub body: Vec<u8>,
    pub round_trip: io::Result<Vec<u8>>,
}

/// What a server reads from `input` on a binary peer stream: requests are read until a frame
/// fails (the stream would close there). `authenticated` reads them as a stream after the
/// handshake does, each frame ending in its tag.
pub fn server_reads_peer_requests(input: &[u8], authenticated: bool) -> Vec<PeerRequest> {
    block_on(async {
        let mut reader = input;
        let mut session = authenticated.then(|| session_pair().1);
        let mut requests = Vec::new();
        while let Ok(body) = read_frame(&mut reader, session.as_mut(), MAX_PEER_REQUEST_BYTES).await
        {
            let (mut client, mut server) = session_pair();
            let mut wire = Vec::new();
            let round_trip = match write_frame(
                &mut wire,
                Some(&mut client),
                &body,
                MAX_PEER_REQUEST_BYTES,
            )
            .await
            {
                Ok(()) => {
                    read_frame(
                        &mut wire.as_slice(),
                        Some(&mut server),
                        MAX_PEER_REQUEST_BYTES,
                    )
                    .await
                }
                Err(e) => Err(e),
            };
            requests.push(PeerRequest { body, round_trip });
        }
        requests
    })
}

/// The accepting side of the handshake, reading the peer's proof from `input`.
pub fn handshake_as_server(input: &[u8]) -> io::Result<()> {
    block_on(async {
        let mut stream = tokio::io::join(input, tokio::io::sink());
        prove_as_server(&mut stream, &ClusterSecret::new(SECRET), NODE)
            .await
            .map(drop)
    })
}

/// The connecting side of the handshake, reading the server's challenge and proof from `input`.
pub fn handshake_as_client(input: &[u8]) -> io::Result<()> {
    block_on(async {
        let mut stream = tokio::io::join(input, tokio::io::sink());
        prove_as_client(&mut stream, &ClusterSecret::new(SECRET), NODE)
            .await
            .map(drop)
    })
}
