//! `skiff dev --nodes N`: a local cluster for trying Skiff out. Each broker gets the default
//! ports shifted by 100 per broker (Kafka 9092, 9192, ...; HTTP 9644, 9744, ...; Raft 9093,
//! 9193, ...; gossip 7946, 8046, ...). Broker 1 bootstraps; the others join it through gossip.
//! The brokers share a cluster secret made for the run (in their environment, not their
//! command line, where any local user could read it).

use std::path::Path;

use anyhow::{bail, Context};
use tokio::process::{Child, Command};
use tokio::signal::unix::{signal, SignalKind};

const PORT_STEP: u16 = 100;

struct Ports {
    kafka: u16,
    http: u16,
    raft: u16,
    gossip: u16,
}

fn ports(index: u16) -> Ports {
    let shift = PORT_STEP * index;
    Ports {
        kafka: 9092 + shift,
        http: 9644 + shift,
        raft: 9093 + shift,
        gossip: 7946 + shift,
    }
}

pub async fn run(nodes: u16, data_dir: &Path) -> anyhow::Result<()> {
    if !(1..=9).contains(&nodes) {
        bail!("skiff dev runs 1 to 9 brokers, not {nodes}");
    }
    let exe = std::env::current_exe().context("cannot find the skiff executable")?;
    // A fresh cluster secret, so even a local cluster's Raft port takes no unauthenticated peer.
    let mut secret = [0u8; 32];
    getrandom::fill(&mut secret)
        .map_err(|e| anyhow::anyhow!("no randomness for the cluster secret: {e}"))?;
    let secret: String = secret.iter().map(|b| format!("{b:02x}")).collect();
    let seed = ports(0);
    let mut children: Vec<Child> = Vec::new();
    for index in 0..nodes {
        let p = ports(index);
        let node_id = index + 1;
        let dir = data_dir.join(format!("node-{node_id}"));
        let mut command = Command::new(&exe);
        command
            .arg("serve")
            .arg(format!("--node-id={node_id}"))
            .arg(format!("--data-dir={}", dir.display()))
            .arg(format!("--kafka-addr=127.0.0.1:{}", p.kafka))
            .arg(format!("--http-addr=127.0.0.1:{}", p.http))
            .arg(format!("--raft-addr=127.0.0.1:{}", p.raft))
            .arg(format!("--gossip-addr=127.0.0.1:{}", p.gossip))
            .arg(format!("--node-name=skiff-dev-{node_id}"))
            .arg(format!("--default-replication-factor={}", nodes.min(3)))
            .env("SKIFF_CLUSTER_SECRET", &secret);
        if index > 0 {
            command.arg(format!("--join=127.0.0.1:{}", seed.gossip));
        }
        match command.spawn() {
            Ok(child) => children.push(child),
            Err(e) => {
                stop(&mut children).await;
                return Err(e).with_context(|| format!("cannot start broker {node_id}"));
            }
        }
    }
    let servers: Vec<String> = (0..nodes)
        .map(|i| format!("127.0.0.1:{}", ports(i).kafka))
        .collect();
    println!("bootstrap servers: {}", servers.join(","));
    println!(
        "raft stats: skiff raft stats --http-addr 127.0.0.1:{}",
        seed.http
    );
    println!("data in {}; Ctrl-C stops every broker", data_dir.display());
    for (index, child) in children.iter().enumerate() {
        if let Some(pid) = child.id() {
            println!("broker {}: pid {pid}", index + 1);
        }
    }
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    // A broker that dies (killed to watch a failover, say) leaves the others running, as
    // separate machines would.
    let mut running: Vec<usize> = (0..children.len()).collect();
    let result = loop {
        let next_exit = futures_util::future::select_all(
            children
                .iter_mut()
                .enumerate()
                .filter(|(index, _)| running.contains(index))
                .map(|(index, child)| Box::pin(async move { (index, child.wait().await) })),
        );
        tokio::select! {
            _ = interrupt.recv() => break Ok(()),
            _ = terminate.recv() => break Ok(()),
            ((index, status), _, _) = next_exit => {
                running.retain(|&i| i != index);
                let status = status.map_or_else(|e| e.to_string(), |s| s.to_string());
                if running.is_empty() {
                    break Err(anyhow::anyhow!("every broker exited, the last (broker {}) with {status}", index + 1));
                }
                eprintln!("broker {} exited ({status}); the others keep running, Ctrl-C stops them", index + 1);
            }
        }
    };
    stop(&mut children).await;
    result
}

/// Asks every broker to shut down gracefully (SIGTERM) and waits for it.
async fn stop(children: &mut [Child]) {
    for child in children.iter() {
        if let Some(pid) = child.id() {
            // SAFETY: kill(2) with a pid we spawned and still own.
            unsafe {
                libc::kill(pid as libc::pid_t, libc::SIGTERM);
            }
        }
    }
    for child in children.iter_mut() {
        let _ = child.wait().await;
    }
}
