//! `GossipAgent`: the tokio shell around [`Membership`]. One task owns the core and a UDP
//! socket; it moves datagrams, ticks the clock, forwards events and answers commands from
//! [`GossipHandle`]s. Every protocol decision is the core's.

use std::collections::BTreeMap;
use std::io;
use std::net::SocketAddr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use rand::rngs::SysRng;
use rand::TryRng;
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, oneshot};
use tokio::time::Instant;

use crate::config::{ConfigError, MembershipConfig};
use crate::membership::{
    MemberEvent, MemberInfo, MemberStatus, Membership, QueryId, QueryOptions, QueryUpdate,
    RequestError,
};
use crate::message::Tags;
use crate::stats::{DropReason, Stats};

/// How often counters and gauges are pushed to the `metrics` recorder.
const METRICS_INTERVAL: Duration = Duration::from_secs(1);

#[derive(Debug, Clone)]
pub struct AgentConfig {
    pub membership: MembershipConfig,
    /// The socket address to bind; `membership.gossip_addr` is what others are told. A zero
    /// port in `gossip_addr` means "the port actually bound".
    pub bind_addr: SocketAddr,
    /// How long [`GossipHandle::join`] keeps retrying before giving up.
    pub join_timeout: Duration,
    /// Upper bound of [`GossipHandle::leave`]: leave intent propagation plus flushing.
    pub leave_timeout: Duration,
    /// Member events waiting for the application; beyond this they are dropped and counted
    /// (blocking instead would stall failure detection).
    pub event_channel_capacity: usize,
    pub query_channel_capacity: usize,
}

impl AgentConfig {
    /// Binds and advertises `addr` (port 0 picks a free port).
    pub fn new(name: impl Into<String>, addr: SocketAddr) -> Self {
        Self {
            membership: MembershipConfig::new(name, addr),
            bind_addr: addr,
            join_timeout: Duration::from_secs(60),
            leave_timeout: Duration::from_secs(5),
            event_channel_capacity: 4096,
            query_channel_capacity: 1024,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum GossipError {
    #[error("invalid gossip configuration: {0}")]
    Config(#[from] ConfigError),
    #[error("cannot bind gossip socket {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("cannot seed the random generator from the OS: {0}")]
    Entropy(String),
    #[error("cannot resolve seed {seed:?}: {reason}")]
    Resolve { seed: String, reason: String },
    #[error("no seed of {seeds:?} answered within {waited:?} ({attempts} announce rounds); are they Skiff gossip addresses, reachable, with the same encryption key?")]
    JoinTimeout {
        seeds: Vec<SocketAddr>,
        attempts: u32,
        waited: Duration,
    },
    #[error("leave did not complete within {0:?}")]
    LeaveTimeout(Duration),
    #[error(transparent)]
    Request(#[from] RequestError),
    #[error("the gossip agent has stopped")]
    Stopped,
}

/// Answers to one query, until its timeout (then the channel closes).
#[derive(Debug)]
pub struct QueryResponses {
    pub id: QueryId,
    pub updates: mpsc::Receiver<QueryUpdate>,
}

type Reply<T> = oneshot::Sender<Result<T, GossipError>>;

enum Command {
    Join(Vec<SocketAddr>, Reply<()>),
    Members(oneshot::Sender<Vec<MemberInfo>>),
    Stats(oneshot::Sender<Stats>),
    UpdateTags(Tags, Reply<()>),
    UserEvent {
        name: String,
        payload: Vec<u8>,
        coalesce: bool,
        reply: Reply<()>,
    },
    Query {
        name: String,
        payload: Vec<u8>,
        options: QueryOptions,
        reply: Reply<QueryResponses>,
    },
    Respond(QueryId, Vec<u8>, Reply<()>),
    Leave(Reply<()>),
}

/// Cheap to clone; the agent stops (without a leave) when the last handle is dropped.
#[derive(Clone)]
pub struct GossipHandle {
    commands: mpsc::Sender<Command>,
    local: MemberInfo,
}

pub struct GossipAgent;

impl GossipAgent {
    /// Binds the socket and starts the agent task on the current tokio runtime.
    pub async fn start(
        config: AgentConfig,
    ) -> Result<(GossipHandle, mpsc::Receiver<MemberEvent>), GossipError> {
        let socket =
            UdpSocket::bind(config.bind_addr)
                .await
                .map_err(|source| GossipError::Bind {
                    addr: config.bind_addr,
                    source,
                })?;
        let bound = socket.local_addr().map_err(|source| GossipError::Bind {
            addr: config.bind_addr,
            source,
        })?;
        let mut membership_config = config.membership.clone();
        if membership_config.gossip_addr.port() == 0 {
            membership_config.gossip_addr.set_port(bound.port());
        }
        if membership_config.generation == 0 {
            // Later runs of a node must win over identities the cluster remembers from
            // earlier ones, so the generation is the start time.
            membership_config.generation = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .map_or(1, |since| since.as_millis() as u64);
        }
        let mut seed = [0u8; 32];
        SysRng
            .try_fill_bytes(&mut seed)
            .map_err(|error| GossipError::Entropy(error.to_string()))?;
        let membership = Membership::new(membership_config, seed, Instant::now().into_std())?;
        let local = membership.local_member();
        let (commands_tx, commands_rx) = mpsc::channel(256);
        let (events_tx, events_rx) = mpsc::channel(config.event_channel_capacity.max(1));
        tracing::info!(name = %local.name, addr = %local.addr, bound = %bound, "gossip agent started");
        let task = AgentTask {
            membership,
            socket,
            commands: commands_rx,
            events: events_tx,
            query_channels: BTreeMap::new(),
            join_waiters: Vec::new(),
            leave_waiter: None,
            last_stats: Stats::default(),
            next_metrics: Instant::now(),
            config,
        };
        tokio::spawn(task.run());
        Ok((
            GossipHandle {
                commands: commands_tx,
                local,
            },
            events_rx,
        ))
    }
}

impl GossipHandle {
    /// This member as it started (name, advertised address, generation, initial tags).
    pub fn local(&self) -> &MemberInfo {
        &self.local
    }

    async fn call<T>(&self, build: impl FnOnce(Reply<T>) -> Command) -> Result<T, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(build(tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)?
    }

    /// Joins the cluster through any of `seeds` (`host:port`), retrying with back-off until
    /// one answers or `join_timeout` passes.
    pub async fn join(&self, seeds: &[String]) -> Result<(), GossipError> {
        let mut addrs = Vec::new();
        let mut last_error = None;
        for seed in seeds {
            match tokio::net::lookup_host(seed.as_str()).await {
                Ok(found) => addrs.extend(found),
                Err(error) => {
                    tracing::warn!(%seed, %error, "cannot resolve gossip seed");
                    last_error = Some(GossipError::Resolve {
                        seed: seed.clone(),
                        reason: error.to_string(),
                    });
                }
            }
        }
        if addrs.is_empty() {
            return Err(last_error.unwrap_or(GossipError::Request(RequestError::NoSeeds)));
        }
        self.call(|reply| Command::Join(addrs, reply)).await
    }

    pub async fn members(&self) -> Result<Vec<MemberInfo>, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Members(tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    pub async fn stats(&self) -> Result<Stats, GossipError> {
        let (tx, rx) = oneshot::channel();
        self.commands
            .send(Command::Stats(tx))
            .await
            .map_err(|_| GossipError::Stopped)?;
        rx.await.map_err(|_| GossipError::Stopped)
    }

    pub async fn update_tags(&self, tags: Tags) -> Result<(), GossipError> {
        self.call(|reply| Command::UpdateTags(tags, reply)).await
    }

    pub async fn user_event(
        &self,
        name: &str,
        payload: &[u8],
        coalesce: bool,
    ) -> Result<(), GossipError> {
        self.call(|reply| Command::UserEvent {
            name: name.to_string(),
            payload: payload.to_vec(),
            coalesce,
            reply,
        })
        .await
    }

    pub async fn query(
        &self,
        name: &str,
        payload: &[u8],
        options: QueryOptions,
    ) -> Result<QueryResponses, GossipError> {
        self.call(|reply| Command::Query {
            name: name.to_string(),
            payload: payload.to_vec(),
            options,
            reply,
        })
        .await
    }

    /// Answers a query received as [`MemberEvent::Query`].
    pub async fn respond(&self, id: QueryId, payload: &[u8]) -> Result<(), GossipError> {
        self.call(|reply| Command::Respond(id, payload.to_vec(), reply))
            .await
    }

    /// Leaves gracefully: broadcasts the intent, waits `leave_propagation`, declares this
    /// member gone and stops the agent. Bounded by `leave_timeout`.
    pub async fn leave(&self) -> Result<(), GossipError> {
        self.call(Command::Leave).await
    }
}

struct JoinWaiter {
    seeds: Vec<SocketAddr>,
    started: Instant,
    reply: Reply<()>,
}

struct AgentTask {
    membership: Membership,
    socket: UdpSocket,
    commands: mpsc::Receiver<Command>,
    events: mpsc::Sender<MemberEvent>,
    query_channels: BTreeMap<QueryId, mpsc::Sender<QueryUpdate>>,
    join_waiters: Vec<JoinWaiter>,
    leave_waiter: Option<(Instant, Reply<()>)>,
    last_stats: Stats,
    next_metrics: Instant,
    config: AgentConfig,
}

impl AgentTask {
    async fn run(mut self) {
        // One byte more than the largest datagram, so an oversized one is seen as such
        // (recv truncates) and counted instead of being parsed short.
        let mut buf = vec![0u8; self.config.membership.max_packet_size + 1];
        loop {
            self.flush().await;
            self.settle_waiters();
            if self.membership.has_left() && self.leave_waiter.is_none() {
                tracing::info!("left the gossip cluster");
                break;
            }
            let wake = self.next_wake();
            tokio::select! {
                received = self.socket.recv_from(&mut buf) => match received {
                    Ok((len, from)) => {
                        self.membership.handle_packet(from, &buf[..len], Instant::now().into_std());
                    }
                    // ICMP errors surface here on some platforms; the peer's failure
                    // detector handles unreachable members, so only note it.
                    Err(error) => tracing::debug!(%error, "gossip socket receive error"),
                },
                command = self.commands.recv() => match command {
                    Some(command) => self.on_command(command),
                    None => {
                        tracing::info!("all gossip handles dropped; stopping without leave");
                        break;
                    }
                },
                () = tokio::time::sleep_until(wake) => {
                    self.membership.handle_timeout(Instant::now().into_std());
                }
            }
            if Instant::now() >= self.next_metrics {
                self.next_metrics = Instant::now() + METRICS_INTERVAL;
                self.export_metrics();
            }
        }
        self.export_metrics();
    }

    fn next_wake(&self) -> Instant {
        let mut wake = self.next_metrics;
        if let Some(at) = self.membership.poll_timeout() {
            wake = wake.min(Instant::from_std(at));
        }
        for waiter in &self.join_waiters {
            wake = wake.min(waiter.started + self.config.join_timeout);
        }
        if let Some((started, _)) = &self.leave_waiter {
            wake = wake.min(*started + self.config.leave_timeout);
        }
        wake
    }

    async fn flush(&mut self) {
        while let Some(transmit) = self.membership.poll_transmit() {
            if let Err(error) = self.socket.send_to(&transmit.bytes, transmit.dst).await {
                metrics::counter!("skiff_gossip_send_errors_total").increment(1);
                tracing::debug!(dst = %transmit.dst, %error, "gossip send failed");
            }
        }
        while let Some(event) = self.membership.poll_event() {
            if let Err(mpsc::error::TrySendError::Full(event)) = self.events.try_send(event) {
                metrics::counter!("skiff_gossip_events_dropped_total").increment(1);
                tracing::warn!(
                    ?event,
                    "member event dropped: the event receiver is not keeping up"
                );
            }
        }
        while let Some(update) = self.membership.poll_query_update() {
            let id = match &update {
                QueryUpdate::Ack { id, .. }
                | QueryUpdate::Response { id, .. }
                | QueryUpdate::Done { id } => *id,
            };
            if matches!(update, QueryUpdate::Done { .. }) {
                self.query_channels.remove(&id);
            } else if let Some(channel) = self.query_channels.get(&id) {
                if channel.try_send(update).is_err() {
                    metrics::counter!("skiff_gossip_query_answers_dropped_total").increment(1);
                }
            }
        }
    }

    fn settle_waiters(&mut self) {
        let now = Instant::now();
        let connected = self.membership.is_connected();
        let timeout = self.config.join_timeout;
        let mut waiting = Vec::new();
        for waiter in self.join_waiters.drain(..) {
            if connected {
                let _ = waiter.reply.send(Ok(()));
            } else if now >= waiter.started + timeout {
                let attempts = self.membership.join_attempts().unwrap_or(0);
                let _ = waiter.reply.send(Err(GossipError::JoinTimeout {
                    seeds: waiter.seeds,
                    attempts,
                    waited: timeout,
                }));
            } else {
                waiting.push(waiter);
            }
        }
        if waiting.is_empty() && !connected {
            self.membership.cancel_join();
        }
        self.join_waiters = waiting;

        if let Some((started, _)) = &self.leave_waiter {
            let left = self.membership.has_left();
            let expired = now >= *started + self.config.leave_timeout;
            if left || expired {
                let (_, reply) = self.leave_waiter.take().expect("checked above");
                let _ = reply.send(if left {
                    Ok(())
                } else {
                    Err(GossipError::LeaveTimeout(self.config.leave_timeout))
                });
            }
        }
    }

    fn on_command(&mut self, command: Command) {
        let now = Instant::now().into_std();
        let membership = &mut self.membership;
        match command {
            Command::Join(seeds, reply) => match membership.join(&seeds, now) {
                Ok(()) => self.join_waiters.push(JoinWaiter {
                    seeds,
                    started: Instant::now(),
                    reply,
                }),
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Command::Members(reply) => {
                let _ = reply.send(membership.members());
            }
            Command::Stats(reply) => {
                let _ = reply.send(membership.stats().clone());
            }
            Command::UpdateTags(tags, reply) => {
                let _ = reply.send(membership.update_tags(tags, now).map_err(Into::into));
            }
            Command::UserEvent {
                name,
                payload,
                coalesce,
                reply,
            } => {
                let result = membership.user_event(&name, &payload, coalesce, now);
                let _ = reply.send(result.map_err(Into::into));
            }
            Command::Query {
                name,
                payload,
                options,
                reply,
            } => match membership.query(&name, &payload, options, now) {
                Ok(id) => {
                    let (tx, rx) = mpsc::channel(self.config.query_channel_capacity.max(1));
                    self.query_channels.insert(id, tx);
                    let _ = reply.send(Ok(QueryResponses { id, updates: rx }));
                }
                Err(error) => {
                    let _ = reply.send(Err(error.into()));
                }
            },
            Command::Respond(id, payload, reply) => {
                let _ = reply.send(membership.respond(id, &payload, now).map_err(Into::into));
            }
            Command::Leave(reply) => {
                membership.leave(now);
                self.leave_waiter = Some((Instant::now(), reply));
            }
        }
    }

    fn export_metrics(&mut self) {
        let stats = self.membership.stats().clone();
        let last = &self.last_stats;
        let counters = [
            (
                "skiff_gossip_messages_sent_total",
                stats.packets_sent,
                last.packets_sent,
            ),
            (
                "skiff_gossip_bytes_sent_total",
                stats.bytes_sent,
                last.bytes_sent,
            ),
            (
                "skiff_gossip_messages_received_total",
                stats.packets_received,
                last.packets_received,
            ),
            (
                "skiff_gossip_bytes_received_total",
                stats.bytes_received,
                last.bytes_received,
            ),
            ("skiff_gossip_probes_total", stats.probes, last.probes),
            (
                "skiff_gossip_indirect_probes_total",
                stats.indirect_probes,
                last.indirect_probes,
            ),
            (
                "skiff_gossip_suspicions_total",
                stats.suspicions,
                last.suspicions,
            ),
            (
                "skiff_gossip_refutations_total",
                stats.refutations,
                last.refutations,
            ),
        ];
        for (name, now, before) in counters {
            if now > before {
                metrics::counter!(name).increment(now - before);
            }
        }
        for reason in DropReason::ALL {
            let delta = stats.dropped(reason) - last.dropped(reason);
            if delta > 0 {
                metrics::counter!("skiff_gossip_dropped_total", "reason" => reason.as_str())
                    .increment(delta);
            }
        }
        let members = self.membership.members();
        for status in MemberStatus::ALL {
            let count = members
                .iter()
                .filter(|member| member.status == status)
                .count();
            metrics::gauge!("skiff_gossip_members", "state" => status.as_str()).set(count as f64);
        }
        metrics::gauge!("skiff_gossip_local_health").set(f64::from(self.membership.local_health()));
        self.last_stats = stats;
    }
}
