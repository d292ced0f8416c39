//! Gossip datagrams from anyone on the network, into the membership core through the function the
//! UDP driver calls (`Membership::handle_packet`): the envelope, decryption, the packet decoder,
//! foca's SWIM messages and everything the decoded items change. Two members receive: one in
//! plain text and one with a keyring, which also gets datagrams sealed under its key so the
//! decoder behind decryption is reached.
//!
//! The input is a sequence of `[op][len u16][bytes]`; `op` picks the receiver, the form and the
//! sender, and between datagrams the clock moves on so timers fire.
#![no_main]

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use libfuzzer_sys::fuzz_target;
use skiff_gossip::{fuzzing::sealed_datagram, Keyring, Membership, MembershipConfig};

/// The envelope of a plain datagram: magic and version.
const PLAIN_HEADER: [u8; 2] = [0xA7, 1];
const KEY: [u8; 32] = [42; 32];

fn member(keyring: Option<Keyring>, now: Instant) -> Membership {
    let mut config = MembershipConfig::new("fuzzed", "127.0.0.1:7946".parse().unwrap());
    config.keyring = keyring;
    Membership::new(config, [1; 32], now).expect("a valid configuration")
}

fn drain(member: &mut Membership, max_packet_size: usize) {
    while let Some(transmit) = member.poll_transmit() {
        assert!(
            transmit.bytes.len() <= max_packet_size,
            "sent a datagram of {} bytes",
            transmit.bytes.len()
        );
    }
    while member.poll_event().is_some() {}
    while member.poll_query_update().is_some() {}
}

fuzz_target!(|data: &[u8]| {
    let start = Instant::now();
    let keyring = Keyring::new(KEY, &[]).expect("one key");
    let mut plain = member(None, start);
    let mut encrypted = member(Some(keyring.clone()), start);
    let max_packet_size =
        MembershipConfig::new("x", "127.0.0.1:1".parse().unwrap()).max_packet_size;
    let mut now = start;
    let mut rest = data;
    while rest.len() >= 3 {
        let op = rest[0];
        let len = usize::from(u16::from_be_bytes([rest[1], rest[2]])).min(rest.len() - 3);
        let bytes = &rest[3..3 + len];
        rest = &rest[3 + len..];
        let from = SocketAddr::from(([127, 0, 0, 1], 8000 + u16::from(op >> 4)));
        match op & 3 {
            0 => {
                let mut datagram = PLAIN_HEADER.to_vec();
                datagram.extend_from_slice(bytes);
                plain.handle_packet(from, &datagram, now);
            }
            1 => plain.handle_packet(from, bytes, now),
            2 => encrypted.handle_packet(from, &sealed_datagram(&keyring, bytes), now),
            _ => encrypted.handle_packet(from, bytes, now),
        }
        if op & 4 != 0 {
            now += Duration::from_millis(u64::from(op >> 3) * 250);
            plain.handle_timeout(now);
            encrypted.handle_timeout(now);
        }
        drain(&mut plain, max_packet_size);
        drain(&mut encrypted, max_packet_size);
    }
    for member in [&plain, &encrypted] {
        let _ = member.members();
        let _ = member.memory_estimate();
    }
});
