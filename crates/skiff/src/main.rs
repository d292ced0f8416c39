//! `skiff`: the command-line entry point.

mod client;
mod gossip;
mod http;
mod settings;

use std::io::IsTerminal;
use std::sync::Arc;
use std::time::Instant;

use anyhow::Context;
use clap::{Parser, Subcommand};
use skiff_broker::{serve, KafkaApis, Listener};
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
    let gossip = gossip::start(
        gossip::Identity {
            name: settings.node_name.clone().unwrap_or_else(|| {
                format!("skiff-{}-{}", broker.node_id, settings.gossip_addr.port())
            }),
            gossip_addr: settings.gossip_addr,
            node_id: broker.node_id,
            kafka_addr: format!(
                "{}:{}",
                broker.advertised_kafka_addr.0, broker.advertised_kafka_addr.1
            ),
            http_addr: settings.http_addr,
            rack: broker.rack.clone(),
            reconnect_timeout: settings.reconnect_timeout,
            tombstone_timeout: settings.tombstone_timeout,
        },
        settings.join.clone(),
        settings.event_handler.clone(),
        settings.gossip_key,
    )
    .await
    .context("cannot start gossip")?;
    let apis = Arc::new(
        tokio::task::spawn_blocking(move || KafkaApis::open(broker))
            .await?
            .with_context(|| format!("cannot open the data directory {}", data_dir.display()))?,
    );
    let (stop, shutdown) = watch::channel(false);
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
    let http = tokio::spawn(http::serve(
        http_listener,
        metrics,
        gossip.clone(),
        shutdown.clone(),
    ));
    let kafka = tokio::spawn(serve(apis.clone(), listener, shutdown));
    info!(
        kafka = %kafka_addr,
        http = %settings.http_addr,
        data_dir = %apis.config().data_dir.display(),
        startup_ms = started.elapsed().as_millis() as u64,
        "skiff is serving"
    );
    wait_for_signal().await?;
    info!("shutting down: leaving the cluster");
    if let Err(e) = gossip.leave().await {
        warn!(error = %e, "gossip leave did not complete");
    }
    info!("shutting down: finishing in-flight requests");
    stop.send_replace(true);
    apis.release_group_waiters();
    kafka.await?;
    http.await??;
    maintenance.await?;
    group_timers.await?;
    tokio::task::spawn_blocking(move || apis.shutdown()).await?;
    info!("logs flushed and closed; bye");
    Ok(())
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
