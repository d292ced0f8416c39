//! Runs the broker's gossip membership (`skiff-gossip`): announces this broker's addresses as
//! tags, joins the seeds given with `--join` (retrying until one answers), logs membership
//! changes and leaves gracefully on shutdown.

use std::net::SocketAddr;
use std::time::Duration;

use skiff_gossip::{tag, AgentConfig, GossipAgent, GossipHandle, MemberEvent, Tags};
use tokio::sync::mpsc;
use tracing::{info, warn};

/// What other members learn about this broker.
pub struct Identity {
    pub name: String,
    pub gossip_addr: SocketAddr,
    pub node_id: i32,
    pub kafka_addr: String,
    pub http_addr: SocketAddr,
    pub rack: Option<String>,
}

pub async fn start(identity: Identity, seeds: Vec<String>) -> anyhow::Result<GossipHandle> {
    let mut config = AgentConfig::new(identity.name.clone(), identity.gossip_addr);
    let mut tags = Tags::new();
    tags.insert(tag::NODE_ID.into(), identity.node_id.to_string());
    tags.insert(tag::KAFKA_ADDR.into(), identity.kafka_addr);
    tags.insert(tag::HTTP_ADDR.into(), identity.http_addr.to_string());
    tags.insert(tag::ROLE.into(), "broker".into());
    tags.insert(tag::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    if let Some(rack) = identity.rack {
        tags.insert(tag::RACK.into(), rack);
    }
    config.membership.tags = tags;
    let (handle, events) = GossipAgent::start(config).await?;
    info!(name = %identity.name, gossip = %handle.local().addr, "gossip started");
    tokio::spawn(log_events(events));
    if !seeds.is_empty() {
        let joining = handle.clone();
        tokio::spawn(async move { join_until_answered(joining, seeds).await });
    }
    Ok(handle)
}

/// Retries the join with back-off until a seed answers: a seed that is not up yet (a cluster
/// starting all at once) is the normal case, not an error.
async fn join_until_answered(handle: GossipHandle, seeds: Vec<String>) {
    let mut pause = Duration::from_secs(1);
    loop {
        match handle.join(&seeds).await {
            Ok(()) => {
                info!(?seeds, "joined the cluster");
                return;
            }
            Err(e) => {
                warn!(?seeds, error = %e, retry_in = ?pause, "join failed");
                tokio::time::sleep(pause).await;
                pause = (pause * 2).min(Duration::from_secs(30));
            }
        }
    }
}

async fn log_events(mut events: mpsc::Receiver<MemberEvent>) {
    while let Some(event) = events.recv().await {
        match event {
            MemberEvent::Join(m) => info!(member = %m.name, addr = %m.addr, "member joined"),
            MemberEvent::Update(m) => info!(member = %m.name, "member updated its tags"),
            MemberEvent::Failed(m) => warn!(member = %m.name, addr = %m.addr, "member failed"),
            MemberEvent::Leave(m) => info!(member = %m.name, "member left"),
            MemberEvent::Reap(m) => info!(member = %m.name, "member reaped"),
            MemberEvent::User(e) => info!(event = %e.name, bytes = e.payload.len(), "user event"),
            MemberEvent::Query(q) => info!(query = %q.name, from = %q.origin, "query"),
        }
    }
}
