//! `skiff`: the command-line entry point.

mod client;
mod dev;
mod gossip;
mod http;
mod quorum;
mod settings;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{bail, Context};
use clap::{Parser, Subcommand};
use skiff_broker::group::GroupService;
use skiff_broker::metadata_publisher::MetadataPublisher;
use skiff_broker::replica_fetch::{self, LeaderService};
use skiff_broker::replica_manager::ReplicaManager;
use skiff_broker::replication::ReplicationContext;
use skiff_broker::{serve, KafkaApis, Listener};
use skiff_metadata::{incarnation_of, MetadataImage, QuorumSettings};
use skiff_raft::{MetadataRaft, RaftSettings};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::settings::ServeArgs;

#[derive(Parser)]
#[command(
    name = "skiff",
    version,
    about = "A Kafka-compatible event-streaming broker in one binary"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run a broker. With no flags: Kafka on 127.0.0.1:9092, HTTP admin on 127.0.0.1:9644,
    /// data in ./skiff-data.
    Serve(Box<ServeArgs>),
    /// List the gossip members a broker knows: name, address, state, tags.
    Members(client::AdminTarget),
    /// Broadcast a user event to every member (runs their --event-handler).
    Event {
        #[command(flatten)]
        target: client::AdminTarget,
        name: String,
        #[arg(default_value = "")]
        payload: String,
        /// Let a newer event of the same name replace this one if it has not spread yet.
        #[arg(long)]
        coalesce: bool,
    },
    /// The metadata quorum: stats, and membership changes by hand.
    #[command(subcommand)]
    Raft(RaftCommand),
    /// The replicated key-value store: get, put, delete, list (through any broker).
    #[command(subcommand)]
    Kv(KvCommand),
    /// Start a local cluster of N brokers on loopback ports, bootstrapped and joined, and print
    /// its bootstrap servers. Ctrl-C stops them all.
    Dev {
        /// Brokers to start.
        #[arg(long, default_value_t = 3)]
        nodes: u16,
        /// Parent of the brokers' data dirs (node-1, node-2, ...).
        #[arg(long, default_value = "skiff-dev")]
        data_dir: std::path::PathBuf,
    },
    /// Query every member and print acknowledgements and responses (from --event-handler).
    Query {
        #[command(flatten)]
        target: client::AdminTarget,
        name: String,
        #[arg(default_value = "")]
        payload: String,
        /// How long to collect answers, in ms.
        #[arg(long)]
        timeout_ms: Option<u64>,
    },
}

#[derive(Subcommand)]
enum RaftCommand {
    /// Role, term, leader, commit and applied index, voters, observers, follower progress.
    Stats(client::AdminTarget),
    /// Add a node to the quorum as an observer (the controller promotes voters as needed).
    Join {
        #[command(flatten)]
        target: client::AdminTarget,
        #[arg(long)]
        node_id: u64,
        #[arg(long)]
        raft_address: String,
    },
    /// Remove a node from the quorum; the last voter cannot be removed.
    Remove {
        #[command(flatten)]
        target: client::AdminTarget,
        #[arg(long)]
        node_id: u64,
    },
}

#[derive(Subcommand)]
enum KvCommand {
    /// Print a key's value (linearizable unless --stale).
    Get {
        #[command(flatten)]
        target: client::AdminTarget,
        key: String,
        /// Read the broker's own copy, which may lag the cluster.
        #[arg(long)]
        stale: bool,
    },
    /// Set a key.
    Put {
        #[command(flatten)]
        target: client::AdminTarget,
        key: String,
        value: String,
        /// Only if the key is at this version (0: only if it does not exist).
        #[arg(long)]
        cas: Option<u64>,
    },
    /// Delete a key.
    Delete {
        #[command(flatten)]
        target: client::AdminTarget,
        key: String,
        /// Only if the key is at this version.
        #[arg(long)]
        cas: Option<u64>,
    },
    /// List keys under a prefix.
    List {
        #[command(flatten)]
        target: client::AdminTarget,
        #[arg(default_value = "")]
        prefix: String,
        #[arg(long)]
        limit: Option<usize>,
    },
}

fn main() -> anyhow::Result<()> {
    let started = Instant::now();
    match Cli::parse().command {
        Command::Serve(args) => {
            let settings = args.resolve()?;
            init_logging(&settings.log_level, settings.log_format_json)?;
            tokio::runtime::Builder::new_multi_thread()
                .enable_all()
                .build()?
                .block_on(run(settings, started))
        }
        Command::Members(target) => client::members(&target),
        Command::Raft(RaftCommand::Stats(target)) => client::raft_stats(&target),
        Command::Raft(RaftCommand::Join {
            target,
            node_id,
            raft_address,
        }) => client::raft_join(&target, node_id, &raft_address),
        Command::Raft(RaftCommand::Remove { target, node_id }) => {
            client::raft_remove(&target, node_id)
        }
        Command::Kv(KvCommand::Get { target, key, stale }) => client::kv_get(&target, &key, stale),
        Command::Kv(KvCommand::Put {
            target,
            key,
            value,
            cas,
        }) => client::kv_put(&target, &key, &value, cas),
        Command::Kv(KvCommand::Delete { target, key, cas }) => {
            client::kv_delete(&target, &key, cas)
        }
        Command::Kv(KvCommand::List {
            target,
            prefix,
            limit,
        }) => client::kv_list(&target, &prefix, limit),
        Command::Dev { nodes, data_dir } => {
            init_logging("info", false)?;
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?
                .block_on(dev::run(nodes, &data_dir))
        }
        Command::Event {
            target,
            name,
            payload,
            coalesce,
        } => client::event(&target, &name, &payload, coalesce),
        Command::Query {
            target,
            name,
            payload,
            timeout_ms,
        } => client::query(&target, &name, &payload, timeout_ms),
    }
}

fn init_logging(level: &str, json: bool) -> anyhow::Result<()> {
    let filter = match std::env::var("RUST_LOG") {
        Ok(from_env) if !from_env.is_empty() => tracing_subscriber::EnvFilter::new(from_env),
        _ => tracing_subscriber::EnvFilter::try_new(level)
            .with_context(|| format!("invalid log level '{level}'"))?,
    };
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(std::io::stderr);
    if json {
        builder.json().init();
    } else {
        builder.init();
    }
    Ok(())
}

async fn run(settings: settings::Settings, started: Instant) -> anyhow::Result<()> {
    let metrics = http::install_metrics()?;
    let broker = settings.broker;
    let kafka_addr = broker.kafka_addr;
    let data_dir = broker.data_dir.clone();
    let listener = Listener::bind(kafka_addr)
        .await
        .with_context(|| format!("cannot listen for Kafka clients on {kafka_addr}"))?;
    let http_listener = tokio::net::TcpListener::bind(settings.http_addr)
        .await
        .with_context(|| format!("cannot listen for HTTP on {}", settings.http_addr))?;
    std::fs::create_dir_all(&data_dir)
        .with_context(|| format!("cannot create the data directory {}", data_dir.display()))?;
    let broker_id = broker.node_id;
    let (replication, isr_proposals) =
        ReplicationContext::new(broker.node_id, broker.replica_lag_time_max_ms);
    let replicas = Arc::new(ReplicaManager::new(&data_dir, replication));
    let groups = Arc::new(GroupService::new(broker.group_config()));
    let mut raft_settings = RaftSettings::new(
        broker.node_id as u64,
        settings.raft_addr,
        data_dir.join("metadata"),
    );
    raft_settings.advertised_addr = settings.advertised_raft_addr.clone();
    raft_settings.snapshot_entries = settings.raft_snapshot_entries;
    raft_settings.cluster_secret = settings.cluster_secret.clone();
    // Told to the controller through gossip; registered as this broker's incarnation.
    let run = quorum::now_ms();
    let publisher = Arc::new(
        MetadataPublisher::new(
            broker.node_id,
            incarnation_of(run),
            replicas.clone(),
            groups.clone(),
        )
        .context("cannot start the metadata publisher")?,
    );
    let raft = MetadataRaft::start(raft_settings, publisher.clone())
        .await
        .context("cannot start the metadata quorum")?;
    // Followers fetch from leaders over the cluster's authenticated peer connections.
    raft.set_peer_service(Arc::new(LeaderService::new(
        replicas.clone(),
        broker.max_fetch_bytes,
    )));
    let replication_tasks = [
        tokio::spawn(replica_fetch::run_fetchers(
            replicas.clone(),
            Arc::downgrade(&raft),
        )),
        tokio::spawn(replica_fetch::run_proposals(
            replicas.clone(),
            Arc::downgrade(&raft),
            isr_proposals,
        )),
        tokio::spawn(replica_fetch::run_ticks(
            replicas.clone(),
            Arc::downgrade(&raft),
        )),
    ];
    let has_state = raft.has_state()?;
    if settings.bootstrap && has_state {
        bail!(skiff_raft::BootstrapError::AlreadyInitialized(
            raft.cluster_id()
        ));
    }
    if !settings.join.is_empty() && !has_state && !settings.node_id_given {
        bail!("a broker that joins a cluster needs its own --node-id, unique in the cluster");
    }
    if !has_state && settings.join.is_empty() {
        raft.bootstrap().await?;
    }
    let gossip = gossip::start(
        gossip::Identity {
            name: settings.node_name.clone().unwrap_or_else(|| {
                format!("skiff-{}-{}", broker.node_id, settings.gossip_addr.port())
            }),
            gossip_addr: settings.gossip_addr,
            node_id: broker.node_id,
            run,
            kafka_addr: format!(
                "{}:{}",
                broker.advertised_kafka_addr.0, broker.advertised_kafka_addr.1
            ),
            raft_addr: settings.advertised_raft_addr.clone(),
            cluster_id: raft.cluster_id(),
            http_addr: settings.http_addr,
            rack: broker.rack.clone(),
            reconnect_timeout: settings.reconnect_timeout,
            tombstone_timeout: settings.tombstone_timeout,
        },
        settings.join.clone(),
        gossip::PeerSnapshot::new(data_dir.join("gossip-peers")),
        has_state,
        settings.event_handler.clone(),
        settings.gossip_key,
    )
    .await
    .context("cannot start gossip")?;
    let (stop, shutdown) = watch::channel(false);
    let driver = tokio::spawn(quorum::drive(
        raft.clone(),
        gossip.clone(),
        QuorumSettings {
            target_voters: settings.controller_voters,
            replace_failed_voter_after_ms: settings.replace_failed_voter_after.as_millis() as u64,
        },
        settings.broker_session_timeout,
        settings.leader_balance,
        shutdown.clone(),
    ));
    // The admin API answers while a joining broker waits, so operators can watch it join.
    let http = tokio::spawn(http::serve(
        http_listener,
        metrics.clone(),
        gossip.clone(),
        raft.clone(),
        (groups.clone(), replicas.clone()),
        settings.http_auth.clone(),
        shutdown.clone(),
    ));
    wait_until_registered(&raft, broker.node_id).await;
    // A broker that joined fresh learns its cluster id from the log; tell gossip, so that
    // controllers of other clusters sharing the gossip pool leave it alone.
    if let Some(cluster_id) = raft.cluster_id() {
        let mut tags = gossip.local().tags.clone();
        if tags.get(skiff_gossip::tag::CLUSTER_ID) != Some(&cluster_id) {
            tags.insert(skiff_gossip::tag::CLUSTER_ID.into(), cluster_id);
            if let Err(e) = gossip.update_tags(tags).await {
                warn!(error = %e, "could not announce the cluster id in gossip");
            }
        }
    }
    let apis = {
        let (raft, replicas) = (raft.clone(), replicas.clone());
        Arc::new(
            tokio::task::spawn_blocking(move || KafkaApis::open(broker, raft, replicas, groups))
                .await?
                .with_context(|| {
                    format!("cannot open the data directory {}", data_dir.display())
                })?,
        )
    };
    // Retention, segment rolling by age, timed flushes, consumer lag and histogram upkeep.
    let maintenance = tokio::spawn(every(
        apis.config().log_check_interval,
        "log maintenance",
        shutdown.clone(),
        {
            let (apis, metrics) = (apis.clone(), metrics.clone());
            move || {
                apis.run_log_maintenance();
                metrics.run_upkeep();
            }
        },
    ));
    let group_timers = tokio::spawn(every(
        GROUP_TIMER_INTERVAL,
        "group timers",
        shutdown.clone(),
        {
            let apis = apis.clone();
            move || apis.run_group_timers()
        },
    ));
    // Logs open on the publisher's thread, off the Raft apply; clients find them open, as they
    // did when the apply opened them, unless a disk takes unusually long.
    let opened = tokio::task::spawn_blocking({
        let publisher = publisher.clone();
        move || publisher.wait_idle()
    });
    if tokio::time::timeout(LOGS_OPEN_WAIT, opened).await.is_err() {
        warn!(
            waited_secs = LOGS_OPEN_WAIT.as_secs(),
            "serving before every partition log is open; those still opening answer NOT_LEADER_OR_FOLLOWER"
        );
    }
    let kafka = tokio::spawn(serve(apis.clone(), listener, shutdown));
    info!(
        kafka = %kafka_addr,
        http = %settings.http_addr,
        data_dir = %apis.config().data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "skiff is serving"
    );
    wait_for_signal().await?;
    // The controller cannot fence itself once its gossip agent has left: another takes over
    // first.
    raft.hand_over_leadership().await;
    let leaderships = movable_leaderships(&raft.image(), broker_id);
    info!(leaderships, "shutting down: leaving the cluster, then waiting for the controller to move these leaderships");
    if let Err(e) = gossip.leave().await {
        warn!(error = %e, "gossip leave did not complete");
    }
    // Controlled shutdown: the controller fences a broker that left, which moves each of its
    // leaderships to an in-sync replica; clients follow them before this broker stops.
    if wait_until_fenced(&raft, broker_id).await {
        info!("shutting down: no leadership left that another replica could take");
    } else {
        warn!(
            waited_secs = CONTROLLED_SHUTDOWN_WAIT.as_secs(),
            "shutting down without the controller having moved this broker's leaderships"
        );
    }
    info!("shutting down: finishing in-flight requests");
    stop.send_replace(true);
    // A coordinator's lock can be held by an append waiting for its disk.
    tokio::task::spawn_blocking({
        let apis = apis.clone();
        move || apis.release_group_waiters()
    })
    .await?;
    kafka.await?;
    // Nothing fetches, appends or proposes once the logs close.
    for task in replication_tasks {
        task.abort();
    }
    http.await??;
    maintenance.await?;
    group_timers.await?;
    driver.await?;
    raft.shutdown().await;
    // The publisher's last log opens finish before the logs are closed.
    tokio::task::spawn_blocking(move || {
        publisher.stop();
        apis.shutdown()
    })
    .await?;
    info!("logs flushed and closed; bye");
    Ok(())
}

/// Longest a stopping broker waits for the controller to move its leaderships away.
const CONTROLLED_SHUTDOWN_WAIT: std::time::Duration = std::time::Duration::from_secs(15);

/// The partitions `node_id` leads that another live in-sync replica could take over.
fn movable_leaderships(image: &MetadataImage, node_id: i32) -> usize {
    let live = |id: &i32| *id != node_id && image.broker(*id).is_some_and(|b| !b.fenced);
    image
        .partitions()
        .filter(|(_, _, reg)| reg.leader == Some(node_id) && reg.isr.iter().any(live))
        .count()
}

/// Waits until the image shows this broker fenced (it left gossip), or it neither leads a
/// partition another live in-sync replica could take over nor sits in the ISR of a partition
/// led elsewhere (whose acks=all writes would wait for it), or gives up; false if it gave up.
async fn wait_until_fenced(raft: &MetadataRaft, node_id: i32) -> bool {
    let deadline = Instant::now() + CONTROLLED_SHUTDOWN_WAIT;
    loop {
        let image = raft.image();
        let in_sync_elsewhere = image.partitions().any(|(_, _, reg)| {
            reg.leader.is_some_and(|leader| leader != node_id) && reg.isr.contains(&node_id)
        });
        let needed = movable_leaderships(&image, node_id) > 0 || in_sync_elsewhere;
        if !needed || image.broker(node_id).is_none_or(|broker| broker.fenced) {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Waits until the controller has registered this broker and unfenced it, so the first clients
/// find it in Metadata. A broker that joins waits for gossip and the controller; after a minute
/// it serves anyway, and says so.
async fn wait_until_registered(raft: &MetadataRaft, node_id: i32) {
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        if raft
            .image()
            .broker(node_id)
            .is_some_and(|broker| !broker.fenced)
        {
            return;
        }
        if Instant::now() > deadline {
            warn!(
                node_id,
                "the controller has not registered this broker yet; serving anyway"
            );
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

async fn wait_for_signal() -> anyhow::Result<()> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate())?;
    let mut interrupt = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => info!("SIGTERM received"),
        _ = interrupt.recv() => info!("SIGINT received"),
    }
    Ok(())
}

/// Longest start-up waits for the partition logs assigned here to be opened before serving.
const LOGS_OPEN_WAIT: std::time::Duration = std::time::Duration::from_secs(120);

/// Group session expiry and rebalance deadlines are checked this often.
const GROUP_TIMER_INTERVAL: std::time::Duration = std::time::Duration::from_millis(100);

/// Runs `work` on a blocking thread every `period` until shutdown, off the request path.
async fn every(
    period: std::time::Duration,
    what: &'static str,
    mut shutdown: watch::Receiver<bool>,
    work: impl Fn() + Clone + Send + 'static,
) {
    let mut ticker = tokio::time::interval(period);
    loop {
        tokio::select! {
            _ = shutdown.wait_for(|stop| *stop) => return,
            _ = ticker.tick() => {}
        }
        if let Err(e) = tokio::task::spawn_blocking(work.clone()).await {
            warn!(error = %e, what, "periodic work failed");
        }
    }
}
