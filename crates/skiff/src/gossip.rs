//! Runs the broker's gossip membership (`skiff-gossip`): announces this broker's addresses as
//! tags, joins the seeds given with `--join` and the peers of its snapshot (retrying until one
//! answers), keeps that snapshot of live peers in the data directory, logs membership
//! changes, runs the `--event-handler` script per event (Serf's environment variables, the
//! payload on stdin, a query's answer on stdout) and leaves gracefully on shutdown.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use skiff_gossip::{
    tag, AgentConfig, GossipAgent, GossipHandle, Keyring, MemberEvent, MemberInfo, MemberStatus,
    Tags,
};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::{mpsc, Notify, Semaphore};
use tracing::{info, warn};

/// Handler scripts running at once; further events wait for a slot (the agent's event channel
/// is bounded and counts what it drops).
const MAX_RUNNING_HANDLERS: usize = 16;
/// Longest a handler may run for a membership or user event.
const HANDLER_TIMEOUT: Duration = Duration::from_secs(30);
/// Most bytes of a handler's stdout sent back as a query response (the gossip limit).
const MAX_QUERY_RESPONSE: usize = 1024;

/// Most peer addresses kept in the snapshot; rejoining needs one of them to answer.
const MAX_SNAPSHOT_PEERS: usize = 64;
/// Shortest time between two snapshot writes.
const SNAPSHOT_INTERVAL: Duration = Duration::from_secs(1);

/// Serf's snapshot: the addresses of the members last seen alive, kept in the data directory,
/// so a restarted broker rejoins them at once. Without it a broker started without `--join`
/// (the cluster's first broker) is found again only when another member's reconnect attempt
/// reaches it, which takes up to the reconnect interval (30 s). Members that failed or left are
/// dropped from it, as Serf does; unlike Serf's default, a broker that left rejoins too, since a
/// broker restarted on its data dir is meant to serve again.
pub struct PeerSnapshot {
    path: PathBuf,
}

impl PeerSnapshot {
    pub fn new(path: PathBuf) -> Self {
        Self { path }
    }

    /// The saved addresses; a missing file is an empty snapshot, and lines that are not
    /// socket addresses (a damaged file) are skipped, since the snapshot is only a hint.
    async fn load(&self) -> Vec<String> {
        let text = match tokio::fs::read_to_string(&self.path).await {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Vec::new(),
            Err(e) => {
                warn!(path = %self.path.display(), error = %e, "cannot read the gossip peer snapshot");
                return Vec::new();
            }
        };
        text.lines()
            .filter(|line| line.parse::<SocketAddr>().is_ok())
            .take(MAX_SNAPSHOT_PEERS)
            .map(str::to_owned)
            .collect()
    }

    /// Replaces the file through a rename, so a crash leaves the old snapshot or the new one.
    async fn save(&self, peers: &[String]) -> std::io::Result<()> {
        let mut text = peers.join("\n");
        text.push('\n');
        let temporary = self.path.with_extension("tmp");
        tokio::fs::write(&temporary, text).await?;
        tokio::fs::rename(&temporary, &self.path).await
    }
}

/// What other members learn about this broker.
pub struct Identity {
    pub name: String,
    /// How long failed and left members are remembered (None: the crate's defaults).
    pub reconnect_timeout: Option<Duration>,
    pub tombstone_timeout: Option<Duration>,
    pub gossip_addr: SocketAddr,
    pub node_id: i32,
    pub kafka_addr: String,
    pub raft_addr: String,
    pub cluster_id: Option<String>,
    pub http_addr: SocketAddr,
    pub rack: Option<String>,
    /// This run of the process (`tag::RUN`).
    pub run: u64,
}

pub async fn start(
    identity: Identity,
    mut seeds: Vec<String>,
    snapshot: PeerSnapshot,
    rejoin_saved_peers: bool,
    event_handler: Option<PathBuf>,
    key: Option<[u8; 32]>,
) -> anyhow::Result<GossipHandle> {
    let mut config = AgentConfig::new(identity.name.clone(), identity.gossip_addr);
    config.membership.keyring = key.map(|k| Keyring::new(k, &[])).transpose()?;
    if let Some(timeout) = identity.reconnect_timeout {
        config.membership.reconnect_timeout = timeout;
    }
    if let Some(timeout) = identity.tombstone_timeout {
        config.membership.tombstone_timeout = timeout;
    }
    let mut tags = Tags::new();
    tags.insert(tag::NODE_ID.into(), identity.node_id.to_string());
    tags.insert(tag::KAFKA_ADDR.into(), identity.kafka_addr);
    tags.insert(tag::HTTP_ADDR.into(), identity.http_addr.to_string());
    tags.insert(tag::RAFT_ADDR.into(), identity.raft_addr);
    if let Some(cluster_id) = identity.cluster_id {
        tags.insert(tag::CLUSTER_ID.into(), cluster_id);
    }
    tags.insert(tag::ROLE.into(), "broker".into());
    tags.insert(tag::VERSION.into(), env!("CARGO_PKG_VERSION").into());
    tags.insert(tag::RUN.into(), identity.run.to_string());
    if let Some(rack) = identity.rack {
        tags.insert(tag::RACK.into(), rack);
    }
    config.membership.tags = tags;
    let (handle, events) = GossipAgent::start(config).await?;
    info!(name = %identity.name, gossip = %handle.local().addr, "gossip started");
    // A broker without metadata state starts a new cluster or joins through --join; peers a
    // copied or wiped data dir remembers belong to a cluster it is not a member of.
    let saved = if rejoin_saved_peers {
        snapshot.load().await
    } else {
        Vec::new()
    };
    if !saved.is_empty() {
        info!(
            peers = saved.len(),
            "rejoining the members alive when this broker stopped"
        );
    }
    for peer in saved {
        if !seeds.contains(&peer) {
            seeds.push(peer);
        }
    }
    let membership_changed = Arc::new(Notify::new());
    tokio::spawn(save_alive_peers(
        handle.clone(),
        snapshot,
        membership_changed.clone(),
    ));
    tokio::spawn(handle_events(
        events,
        handle.clone(),
        membership_changed,
        event_handler,
    ));
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

async fn handle_events(
    mut events: mpsc::Receiver<MemberEvent>,
    gossip: GossipHandle,
    membership_changed: Arc<Notify>,
    event_handler: Option<PathBuf>,
) {
    let slots = Arc::new(Semaphore::new(MAX_RUNNING_HANDLERS));
    while let Some(event) = events.recv().await {
        log_event(&event);
        if matches!(
            event,
            MemberEvent::Join(_)
                | MemberEvent::Update(_)
                | MemberEvent::Failed(_)
                | MemberEvent::Leave(_)
                | MemberEvent::Reap(_)
        ) {
            membership_changed.notify_one();
        }
        let Some(script) = &event_handler else {
            continue;
        };
        let Ok(slot) = slots.clone().acquire_owned().await else {
            return;
        };
        let (script, gossip) = (script.clone(), gossip.clone());
        tokio::spawn(async move {
            run_handler(&script, &gossip, event).await;
            drop(slot);
        });
    }
}

/// Keeps the snapshot current: after a membership change (at most once per
/// `SNAPSHOT_INTERVAL`, so churn costs few writes and never delays events), writes the addresses
/// of the members not failed or gone when they differ from the last write. A suspect member is
/// kept, as Serf does: a suspicion often passes.
async fn save_alive_peers(gossip: GossipHandle, snapshot: PeerSnapshot, changed: Arc<Notify>) {
    let mut saved: Option<Vec<String>> = None;
    loop {
        changed.notified().await;
        let Ok(members) = gossip.members().await else {
            return;
        };
        let local = &gossip.local().name;
        let mut peers: Vec<String> = members
            .iter()
            .filter(|m| {
                &m.name != local && matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect)
            })
            .map(|m| m.addr.to_string())
            .collect();
        peers.sort();
        peers.truncate(MAX_SNAPSHOT_PEERS);
        if saved.as_ref() != Some(&peers) {
            match snapshot.save(&peers).await {
                Ok(()) => saved = Some(peers),
                Err(e) => {
                    warn!(path = %snapshot.path.display(), error = %e, "cannot write the gossip peer snapshot")
                }
            }
        }
        tokio::time::sleep(SNAPSHOT_INTERVAL).await;
    }
}

fn log_event(event: &MemberEvent) {
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

/// One stdin line per member, as Serf writes it: name, address, role, tags.
fn member_line(m: &MemberInfo) -> Vec<u8> {
    let tags: Vec<String> = m.tags.iter().map(|(k, v)| format!("{k}={v}")).collect();
    let role = m.tags.get(tag::ROLE).map(String::as_str).unwrap_or("");
    format!(
        "{}\t{}\t{}\t{}\n",
        m.name,
        m.addr.ip(),
        role,
        tags.join(",")
    )
    .into_bytes()
}

/// Runs the handler for one event with Serf's environment variables; a query's answer is the
/// script's stdout.
async fn run_handler(script: &PathBuf, gossip: &GossipHandle, event: MemberEvent) {
    let local = gossip.local();
    let mut command = tokio::process::Command::new(script);
    // A handler's output can reach any /v1/query caller: it does not get the broker's secrets.
    for secret in [
        "SKIFF_CLUSTER_SECRET",
        "SKIFF_GOSSIP_KEY",
        "SKIFF_HTTP_AUTH_TOKEN",
    ] {
        command.env_remove(secret);
    }
    command
        .env("SERF_SELF_NAME", &local.name)
        .env(
            "SERF_SELF_ROLE",
            local.tags.get(tag::ROLE).map(String::as_str).unwrap_or(""),
        )
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .kill_on_drop(true);
    for (k, v) in &local.tags {
        command.env(format!("SERF_TAG_{}", k.to_uppercase()), v);
    }
    let (kind, stdin, query, timeout) = match &event {
        MemberEvent::Join(m) => ("member-join", member_line(m), None, HANDLER_TIMEOUT),
        MemberEvent::Update(m) => ("member-update", member_line(m), None, HANDLER_TIMEOUT),
        MemberEvent::Failed(m) => ("member-failed", member_line(m), None, HANDLER_TIMEOUT),
        MemberEvent::Leave(m) => ("member-leave", member_line(m), None, HANDLER_TIMEOUT),
        MemberEvent::Reap(m) => ("member-reap", member_line(m), None, HANDLER_TIMEOUT),
        MemberEvent::User(e) => {
            command
                .env("SERF_USER_EVENT", &e.name)
                .env("SERF_USER_LTIME", e.ltime.to_string());
            ("user", e.payload.clone(), None, HANDLER_TIMEOUT)
        }
        MemberEvent::Query(q) => {
            command
                .env("SERF_QUERY_NAME", &q.name)
                .env("SERF_QUERY_LTIME", q.id.ltime.to_string());
            let left = q
                .deadline
                .saturating_duration_since(std::time::Instant::now());
            ("query", q.payload.clone(), Some(q.id), left)
        }
    };
    command.env("SERF_EVENT", kind);
    let outcome = tokio::time::timeout(timeout, async {
        let mut child = command.spawn()?;
        if let Some(mut input) = child.stdin.take() {
            // A script that does not read its stdin is fine.
            let _ = input.write_all(&stdin).await;
        }
        let mut output = Vec::new();
        if let Some(out) = child.stdout.take() {
            out.take(MAX_QUERY_RESPONSE as u64)
                .read_to_end(&mut output)
                .await?;
        }
        let status = child.wait().await?;
        Ok::<_, std::io::Error>((status, output))
    })
    .await;
    match outcome {
        Ok(Ok((status, output))) => {
            if !status.success() {
                warn!(script = %script.display(), event = kind, %status, "event handler failed");
            }
            if let Some(id) = query {
                if let Err(e) = gossip.respond(id, &output).await {
                    warn!(error = %e, "could not answer the query");
                }
            }
        }
        Ok(Err(e)) => warn!(script = %script.display(), error = %e, "cannot run the event handler"),
        Err(_) => {
            warn!(script = %script.display(), event = kind, "event handler timed out and was killed")
        }
    }
}
