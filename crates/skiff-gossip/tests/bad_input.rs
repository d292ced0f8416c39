//! Hostile and broken input: garbage, truncated and oversized datagrams, wrong keys,
//! unencrypted peers, requests from strangers. Each is a counted drop, never a crash.

mod sim;

use std::net::SocketAddr;
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use sim::*;
use skiff_gossip::{DropReason, Keyring, KEY_LEN};

const SECOND: Duration = Duration::from_secs(1);
const STRANGER: &str = "127.9.9.9:4000";

fn drops(sim: &Sim, node: usize, reason: DropReason) -> u64 {
    sim.nodes[node].membership.stats().dropped(reason)
}

#[test]
fn garbage_truncated_and_oversized_datagrams_are_counted_and_harmless() {
    let mut sim = Sim::new(31);
    sim.capture = Some(Vec::new());
    assert!(sim.form_cluster(5, |_| {}, 30 * SECOND).is_some());
    let captured = sim.capture.take().unwrap();
    let stranger: SocketAddr = STRANGER.parse().unwrap();
    let before = sim.nodes[0].membership.stats().clone();

    let mut rng = StdRng::seed_from_u64(7);
    let mut injected = 0u64;
    for _ in 0..2000 {
        let len = rng.random_range(0..1600usize);
        let mut bytes = vec![0u8; len];
        rng.fill(&mut bytes[..]);
        // Half of them look like ours up to the version byte, to reach the decoders.
        if rng.random::<bool>() && len >= 2 {
            bytes[0] = 0xA7;
            bytes[1] = 1;
        }
        sim.inject(0, stranger, &bytes);
        injected += 1;
    }
    // Every real datagram the cluster exchanged, cut short at every length.
    let mut cuts = 0u64;
    for (_, _, datagram) in captured.iter().take(40) {
        for cut in 0..datagram.len() {
            sim.inject(0, stranger, &datagram[..cut]);
            cuts += 1;
        }
    }
    let after = sim.nodes[0].membership.stats().clone();
    assert_eq!(
        after.packets_received - before.packets_received,
        injected + cuts
    );
    let dropped = after.total_dropped() - before.total_dropped();
    println!(
        "dropped {dropped} of {} injected: too_large {}, bad_magic {}, malformed {}, version {}, swim {}",
        injected + cuts,
        after.dropped(DropReason::TooLarge),
        after.dropped(DropReason::BadMagic),
        after.dropped(DropReason::Malformed),
        after.dropped(DropReason::UnsupportedVersion),
        after.dropped(DropReason::SwimRejected),
    );
    assert!(after.dropped(DropReason::TooLarge) > 0);
    assert!(after.dropped(DropReason::BadMagic) > 0);
    assert!(after.dropped(DropReason::Malformed) > 0);
    // A cut at an item boundary is a shorter valid datagram; everything else is dropped.
    assert!(
        dropped >= injected + cuts * 9 / 10,
        "only {dropped} dropped"
    );

    sim.run_for(10 * SECOND);
    let everyone = sim.live();
    assert!(
        sim.all_see_alive(&everyone, &everyone),
        "the cluster is unharmed"
    );
    assert!(sim.log.iter().all(|e| !is_any_failed(&e.event)));

    // Datagrams with one byte flipped are forgeries rather than garbage (without encryption
    // nothing authenticates them); they must still never crash a member.
    let mut flipped = 0;
    for (_, _, datagram) in &captured {
        for at in (0..datagram.len()).step_by(3) {
            let mut corrupt = datagram.clone();
            corrupt[at] ^= 0xff;
            sim.inject(0, stranger, &corrupt);
            flipped += 1;
        }
    }
    sim.run_for(10 * SECOND);
    let received = sim.nodes[0].membership.stats().packets_received - after.packets_received;
    assert!(received >= flipped);
}

fn key(byte: u8) -> [u8; KEY_LEN] {
    [byte; KEY_LEN]
}

#[test]
fn wrong_key_and_unencrypted_peers_are_refused_and_counted() {
    let mut sim = Sim::new(32);
    let formed = sim.form_cluster(
        5,
        |config| config.keyring = Some(Keyring::new(key(1), &[]).unwrap()),
        30 * SECOND,
    );
    assert!(formed.is_some(), "an encrypted cluster forms");

    let mut wrong = Sim::config(5);
    wrong.keyring = Some(Keyring::new(key(2), &[]).unwrap());
    let intruder = sim.add_node(wrong);
    let plain = sim.add_node(Sim::config(6));
    sim.join(intruder, &[0]);
    sim.join(plain, &[1]);
    sim.run_for(20 * SECOND);
    assert!(!sim.nodes[intruder].membership.is_connected());
    assert!(!sim.nodes[plain].membership.is_connected());
    assert!(
        sim.nodes[intruder].membership.join_attempts().unwrap() >= 3,
        "it keeps retrying"
    );
    assert!(drops(&sim, 0, DropReason::DecryptFailed) >= 3);
    assert!(drops(&sim, 1, DropReason::EncryptionMismatch) >= 3);
    let members: Vec<usize> = (0..5).collect();
    assert!(
        sim.all_see_alive(&members, &members),
        "outsiders never became members"
    );
}

#[test]
fn keys_rotate_without_disturbing_the_cluster() {
    let mut sim = Sim::new(33);
    let formed = sim.form_cluster(
        10,
        |config| config.keyring = Some(Keyring::new(key(1), &[]).unwrap()),
        30 * SECOND,
    );
    assert!(formed.is_some());
    let everyone = sim.live();
    for node in &everyone {
        sim.with(*node, |m, _| {
            m.keyring_mut().unwrap().install(key(2)).unwrap()
        });
    }
    sim.run_for(3 * SECOND);
    for node in &everyone {
        sim.with(*node, |m, _| {
            m.keyring_mut().unwrap().use_key(&key(2)).unwrap()
        });
    }
    sim.run_for(3 * SECOND);
    for node in &everyone {
        sim.with(*node, |m, _| {
            m.keyring_mut().unwrap().remove(&key(1)).unwrap()
        });
    }
    sim.run_for(30 * SECOND);
    assert!(sim.all_see_alive(&everyone, &everyone));
    assert!(sim.log.iter().all(|e| !is_any_failed(&e.event)));
    for node in &everyone {
        assert_eq!(drops(&sim, *node, DropReason::DecryptFailed), 0);
    }
}

#[test]
fn strangers_cannot_pull_state_or_raise_suspicion() {
    let mut sim = Sim::new(34);
    sim.capture = Some(Vec::new());
    assert!(sim.form_cluster(5, |_| {}, 30 * SECOND).is_some());
    // A real state-pull request (the one each join sends: kind 3, reply flag set), and a
    // hand-made suspicion notice (kind 7, incarnation 0), both from a stranger.
    let captured = sim.capture.take().unwrap();
    let sync_request = captured
        .iter()
        .find(|(_, _, bytes)| bytes.len() > 3 && bytes[2] == 3 && bytes[3] == 1)
        .map(|(_, _, bytes)| bytes.clone())
        .expect("joins send a state pull");
    let stranger: SocketAddr = STRANGER.parse().unwrap();
    sim.capture = Some(Vec::new());
    sim.inject(2, stranger, &sync_request);
    let suspected = [0xA7, 1, 7, 0, 0];
    sim.inject(2, stranger, &suspected);
    let sent = sim.capture.take().unwrap();
    assert!(sent.is_empty(), "nothing is sent in answer to a stranger");
    assert_eq!(drops(&sim, 2, DropReason::UnknownSender), 2);
}
