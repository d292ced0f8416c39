//! `skiff serve` settings: flags, then `SKIFF_*` environment variables, then an optional TOML
//! file, then defaults — the first that sets a value wins.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{bail, Context};
use clap::Args;
use serde::Deserialize;
use skiff_broker::BrokerConfig;
use skiff_metadata::LEADER_IMBALANCE_PER_BROKER_PERCENTAGE;
use skiff_raft::ClusterSecret;

use crate::http::HttpAuth;

/// Every setting of `skiff serve`. In the TOML file the keys are the flag names
/// (e.g. `data-dir = "/var/lib/skiff"`).
#[derive(Args, Deserialize, Default, Debug)]
#[serde(rename_all = "kebab-case", deny_unknown_fields)]
pub struct ServeArgs {
    /// TOML file with any of these settings (keys are the flag names).
    #[arg(long, env = "SKIFF_CONFIG")]
    #[serde(skip)]
    config: Option<PathBuf>,
    /// Where partition logs and broker state live [default: ./skiff-data]
    #[arg(long, env = "SKIFF_DATA_DIR")]
    data_dir: Option<PathBuf>,
    /// Address the Kafka listener binds [default: 127.0.0.1:9092]
    #[arg(long, env = "SKIFF_KAFKA_ADDR")]
    kafka_addr: Option<SocketAddr>,
    /// HOST:PORT given to clients in Metadata responses [default: the Kafka address]
    #[arg(long, env = "SKIFF_ADVERTISED_KAFKA_ADDR")]
    advertised_kafka_addr: Option<String>,
    /// Address of the HTTP admin listener (/metrics, /health) [default: 127.0.0.1:9644]
    #[arg(long, env = "SKIFF_HTTP_ADDR")]
    http_addr: Option<SocketAddr>,
    /// UDP address of gossip membership; port 0 picks a free one [default: 127.0.0.1:7946]
    #[arg(long, env = "SKIFF_GOSSIP_ADDR")]
    gossip_addr: Option<SocketAddr>,
    /// Gossip address of a member to join through (repeatable, or comma-separated); retried
    /// with back-off until one answers
    #[arg(long = "join", env = "SKIFF_JOIN", value_delimiter = ',')]
    #[serde(default)]
    join: Vec<String>,
    /// Encrypt gossip with AES-256-GCM under this key (64 hex digits); every member needs it
    /// [default: derived from --cluster-secret when that is given]
    #[arg(long, env = "SKIFF_GOSSIP_KEY", hide_env_values = true)]
    gossip_key: Option<String>,
    /// Secret shared by every broker of the cluster (64 hex digits): Raft connections, forwarded
    /// writes and key-value forwarding are accepted only from peers that prove they know it
    #[arg(long, env = "SKIFF_CLUSTER_SECRET", hide_env_values = true)]
    cluster_secret: Option<String>,
    /// Bearer token every HTTP admin request that changes something must carry
    /// (`Authorization: Bearer <token>`): /raft/join, /raft/remove, /store writes, /v1/event,
    /// /v1/query, /v1/tags
    #[arg(long, env = "SKIFF_HTTP_AUTH_TOKEN", hide_env_values = true)]
    http_auth_token: Option<String>,
    /// Require the HTTP token for reads too (every endpoint but /health)
    #[arg(long, env = "SKIFF_HTTP_AUTH_READS")]
    #[serde(default)]
    http_auth_reads: bool,
    /// Allow Raft or gossip on a non-loopback address without --cluster-secret: anyone who
    /// reaches those ports can then change the cluster
    #[arg(long, env = "SKIFF_INSECURE_CLUSTER")]
    #[serde(default)]
    insecure_cluster: bool,
    /// Forget a failed member this long after it failed, in seconds [default: 86400]
    #[arg(long, env = "SKIFF_RECONNECT_TIMEOUT_SECS")]
    reconnect_timeout_secs: Option<u64>,
    /// Forget a member that left gracefully this long after it left, in seconds [default: 3600]
    #[arg(long, env = "SKIFF_TOMBSTONE_TIMEOUT_SECS")]
    tombstone_timeout_secs: Option<u64>,
    /// Script run for every gossip event, with Serf's SERF_* environment variables and the
    /// payload (or member lines) on stdin; for a query, its stdout is the response
    #[arg(long, env = "SKIFF_EVENT_HANDLER")]
    event_handler: Option<PathBuf>,
    /// This broker's name among gossip members, unique in the cluster
    /// [default: skiff-<node id>-<gossip port>]
    #[arg(long, env = "SKIFF_NODE_NAME")]
    node_name: Option<String>,
    /// This broker's id, unique in the cluster; also its Raft node id. Required with --join on
    /// a new data dir [default: 1]
    #[arg(long, env = "SKIFF_NODE_ID")]
    node_id: Option<i32>,
    /// TCP address of the Raft metadata quorum [default: 127.0.0.1:9093]
    #[arg(long, env = "SKIFF_RAFT_ADDR")]
    raft_addr: Option<SocketAddr>,
    /// HOST:PORT other brokers use to reach this one's Raft address [default: the Raft address]
    #[arg(long, env = "SKIFF_ADVERTISED_RAFT_ADDR")]
    advertised_raft_addr: Option<String>,
    /// Start a new cluster with this broker as its first controller. Without --join this is
    /// what an empty data dir does anyway; refused when the data dir already has a cluster
    #[arg(long, env = "SKIFF_BOOTSTRAP")]
    #[serde(default)]
    bootstrap: bool,
    /// How many brokers vote in the metadata quorum (1, 3 or 5); the rest follow it as
    /// observers [default: 3]
    #[arg(long, env = "SKIFF_CONTROLLER_VOTERS")]
    controller_voters: Option<usize>,
    /// A voter failed for this long is replaced by a healthy observer, in seconds [default: 30]
    #[arg(long, env = "SKIFF_CONTROLLER_REPLACE_FAILED_VOTER_SECS")]
    controller_replace_failed_voter_secs: Option<u64>,
    /// A broker that answers none of the controller's Raft heartbeats for this long is fenced
    /// and its leaderships move (Kafka's broker.session.timeout.ms), in milliseconds
    /// [default: 2000]
    #[arg(long, env = "SKIFF_BROKER_SESSION_TIMEOUT_MS")]
    broker_session_timeout_ms: Option<u64>,
    /// Move leaderships back to each partition's preferred replica (its first) when a broker
    /// leads too few of the partitions it prefers (Kafka's auto.leader.rebalance.enable)
    /// [default: true]
    #[arg(long, env = "SKIFF_AUTO_LEADER_REBALANCE_ENABLE")]
    auto_leader_rebalance_enable: Option<bool>,
    /// How often the controller checks the leader balance, in seconds (Kafka's
    /// leader.imbalance.check.interval.seconds) [default: 300]
    #[arg(long, env = "SKIFF_LEADER_IMBALANCE_CHECK_INTERVAL_SECONDS")]
    leader_imbalance_check_interval_seconds: Option<u64>,
    /// The share of a broker's preferred partitions led elsewhere, in percent, above which
    /// they move back (Kafka's leader.imbalance.per.broker.percentage) [default: 10]
    #[arg(long, env = "SKIFF_LEADER_IMBALANCE_PER_BROKER_PERCENTAGE")]
    leader_imbalance_per_broker_percentage: Option<u32>,
    /// Metadata log entries between snapshots [default: 1000]
    #[arg(long, env = "SKIFF_RAFT_SNAPSHOT_ENTRIES")]
    raft_snapshot_entries: Option<u64>,
    /// Rack reported to clients
    #[arg(long, env = "SKIFF_RACK")]
    rack: Option<String>,
    /// Create unknown topics named in Metadata requests [default: true]
    #[arg(long, env = "SKIFF_AUTO_CREATE_TOPICS")]
    auto_create_topics: Option<bool>,
    /// Partitions of topics created without a count [default: 1]
    #[arg(long, env = "SKIFF_DEFAULT_PARTITIONS")]
    default_partitions: Option<i32>,
    /// Replicas of each partition of topics created without a replication factor [default: 1]
    #[arg(long, env = "SKIFF_DEFAULT_REPLICATION_FACTOR")]
    default_replication_factor: Option<i16>,
    /// A follower behind its leader for this long leaves the ISR, in milliseconds [default: 30000]
    #[arg(long, env = "SKIFF_REPLICA_LAG_TIME_MAX_MS")]
    replica_lag_time_max_ms: Option<i64>,
    /// Largest request accepted, in bytes [default: 104857600]
    #[arg(long, env = "SKIFF_MAX_FRAME_BYTES")]
    max_frame_bytes: Option<usize>,
    /// Most client connections at once [default: 10000]
    #[arg(long, env = "SKIFF_MAX_CONNECTIONS")]
    max_connections: Option<usize>,
    /// Requests read ahead per connection [default: 64]
    #[arg(long, env = "SKIFF_MAX_IN_FLIGHT_PER_CONNECTION")]
    max_in_flight_per_connection: Option<usize>,
    /// Most record bytes in one Fetch response, whatever the client asks [default: 57671680]
    #[arg(long, env = "SKIFF_MAX_FETCH_BYTES")]
    max_fetch_bytes: Option<usize>,
    /// Longest a request may take, long-poll fetches included, in ms [default: 30000]
    #[arg(long, env = "SKIFF_REQUEST_TIMEOUT_MS")]
    request_timeout_ms: Option<u64>,
    /// How often retention, segment age and flush.ms are checked, in ms [default: 5000]
    #[arg(long, env = "SKIFF_LOG_CHECK_INTERVAL_MS")]
    log_check_interval_ms: Option<u64>,
    /// Partitions of the internal __consumer_offsets topic, fixed at its creation [default: 50]
    #[arg(long, env = "SKIFF_OFFSETS_TOPIC_PARTITIONS")]
    offsets_topic_partitions: Option<i32>,
    /// How long a new consumer group waits for more members before its first generation, in ms
    /// [default: 3000]
    #[arg(long, env = "SKIFF_GROUP_INITIAL_REBALANCE_DELAY_MS")]
    group_initial_rebalance_delay_ms: Option<i64>,
    /// Shortest session timeout a group member may ask for, in ms [default: 6000]
    #[arg(long, env = "SKIFF_GROUP_MIN_SESSION_TIMEOUT_MS")]
    group_min_session_timeout_ms: Option<i32>,
    /// Longest session timeout a group member may ask for, in ms [default: 1800000]
    #[arg(long, env = "SKIFF_GROUP_MAX_SESSION_TIMEOUT_MS")]
    group_max_session_timeout_ms: Option<i32>,
    /// Offsets of an empty group are dropped this long after their last commit, in minutes
    /// [default: 10080]
    #[arg(long, env = "SKIFF_OFFSETS_RETENTION_MINUTES")]
    offsets_retention_minutes: Option<i64>,
    /// Log filter, e.g. info or skiff_broker=debug (RUST_LOG wins when set)
    /// [default: info,openraft=warn]
    #[arg(long, env = "SKIFF_LOG_LEVEL")]
    log_level: Option<String>,
    /// Log as JSON lines instead of text
    #[arg(long, env = "SKIFF_LOG_JSON")]
    log_json: Option<bool>,
}

pub struct Settings {
    pub broker: BrokerConfig,
    pub raft_addr: SocketAddr,
    pub advertised_raft_addr: String,
    pub node_id_given: bool,
    pub bootstrap: bool,
    pub controller_voters: usize,
    pub replace_failed_voter_after: Duration,
    pub broker_session_timeout: Duration,
    /// `None` when automatic leader rebalancing is off.
    pub leader_balance: Option<LeaderBalance>,
    pub raft_snapshot_entries: u64,
    pub http_addr: SocketAddr,
    pub gossip_addr: SocketAddr,
    pub join: Vec<String>,
    pub node_name: Option<String>,
    pub event_handler: Option<PathBuf>,
    pub gossip_key: Option<[u8; 32]>,
    pub cluster_secret: Option<ClusterSecret>,
    pub http_auth: HttpAuth,
    pub reconnect_timeout: Option<Duration>,
    pub tombstone_timeout: Option<Duration>,
    pub log_level: String,
    pub log_format_json: bool,
}

/// The controller's automatic return of leaderships to preferred replicas.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaderBalance {
    pub check_interval: Duration,
    pub imbalance_percentage: u32,
}

fn read_file(path: &Path) -> anyhow::Result<ServeArgs> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read config file {}", path.display()))?;
    toml::from_str(&text).with_context(|| format!("invalid config file {}", path.display()))
}

fn parse_host_port(value: &str) -> anyhow::Result<(String, u16)> {
    let (host, port) = value
        .rsplit_once(':')
        .with_context(|| format!("advertised address '{value}' is not HOST:PORT"))?;
    let port = port
        .parse()
        .with_context(|| format!("advertised address '{value}' has an invalid port"))?;
    if host.is_empty() {
        bail!("advertised address '{value}' has no host");
    }
    Ok((host.trim_matches(['[', ']']).to_string(), port))
}

/// A 256-bit key (`what` names it in errors) written as 64 hexadecimal digits.
fn parse_key(what: &str, text: &str) -> anyhow::Result<[u8; 32]> {
    let text = text.trim();
    if text.len() != 64 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        bail!("the {what} must be 64 hexadecimal digits (32 bytes)");
    }
    let mut key = [0u8; 32];
    for (i, byte) in key.iter_mut().enumerate() {
        *byte = u8::from_str_radix(&text[2 * i..2 * i + 2], 16)?;
    }
    Ok(key)
}

impl ServeArgs {
    pub fn resolve(self) -> anyhow::Result<Settings> {
        let file = match &self.config {
            Some(path) => read_file(path)?,
            None => ServeArgs::default(),
        };
        macro_rules! pick {
            ($field:ident) => {
                self.$field.or(file.$field)
            };
        }
        let kafka_addr = pick!(kafka_addr).unwrap_or_else(|| {
            BrokerConfig::DEFAULT_KAFKA_ADDR
                .to_socket_addrs()
                .expect("valid default")
                .next()
                .expect("one address")
        });
        let mut broker = BrokerConfig::new(
            pick!(data_dir).unwrap_or_else(|| PathBuf::from("skiff-data")),
            kafka_addr,
        );
        if let Some(advertised) = pick!(advertised_kafka_addr) {
            broker.advertised_kafka_addr = parse_host_port(&advertised)?;
        }
        if let Some(node_id) = pick!(node_id) {
            if node_id < 0 {
                bail!("node id must be 0 or more, not {node_id}");
            }
            broker.node_id = node_id;
        }
        broker.rack = pick!(rack);
        if let Some(v) = pick!(auto_create_topics) {
            broker.auto_create_topics = v;
        }
        if let Some(v) = pick!(default_partitions) {
            if v < 1 {
                bail!("default partitions must be at least 1, not {v}");
            }
            broker.default_partitions = v;
        }
        if let Some(v) = pick!(default_replication_factor) {
            if v < 1 {
                bail!("default replication factor must be at least 1, not {v}");
            }
            broker.default_replication_factor = v;
        }
        if let Some(v) = pick!(replica_lag_time_max_ms) {
            if v < 100 {
                bail!("replica lag time max must be at least 100 ms, not {v}");
            }
            broker.replica_lag_time_max_ms = v;
        }
        if let Some(v) = pick!(max_frame_bytes) {
            if v < 1024 {
                bail!("max frame bytes must be at least 1024, not {v}");
            }
            broker.max_frame_bytes = v;
        }
        if let Some(v) = pick!(max_connections) {
            broker.max_connections = v.max(1);
        }
        if let Some(v) = pick!(max_in_flight_per_connection) {
            broker.max_in_flight_per_connection = v.max(1);
        }
        if let Some(v) = pick!(max_fetch_bytes) {
            if v < 1024 {
                bail!("max fetch bytes must be at least 1024, not {v}");
            }
            broker.max_fetch_bytes = v;
        }
        if let Some(v) = pick!(request_timeout_ms) {
            if v < 1000 {
                bail!("request timeout must be at least 1000 ms, not {v}");
            }
            broker.request_timeout = Duration::from_millis(v);
        }
        if let Some(v) = pick!(log_check_interval_ms) {
            broker.log_check_interval = Duration::from_millis(v.max(10));
        }
        if let Some(v) = pick!(offsets_topic_partitions) {
            if !(1..=1000).contains(&v) {
                bail!("offsets topic partitions must be between 1 and 1000, not {v}");
            }
            broker.offsets_topic_partitions = v;
        }
        if let Some(v) = pick!(group_initial_rebalance_delay_ms) {
            if v < 0 {
                bail!("group initial rebalance delay must be 0 or more, not {v}");
            }
            broker.group_initial_rebalance_delay_ms = v;
        }
        if let Some(v) = pick!(group_min_session_timeout_ms) {
            broker.group_min_session_timeout_ms = v;
        }
        if let Some(v) = pick!(group_max_session_timeout_ms) {
            broker.group_max_session_timeout_ms = v;
        }
        if broker.group_min_session_timeout_ms < 1
            || broker.group_min_session_timeout_ms > broker.group_max_session_timeout_ms
        {
            bail!(
                "group session timeouts must satisfy 1 <= min ({}) <= max ({})",
                broker.group_min_session_timeout_ms,
                broker.group_max_session_timeout_ms
            );
        }
        if let Some(v) = pick!(offsets_retention_minutes) {
            if v < 1 {
                bail!("offsets retention must be at least 1 minute, not {v}");
            }
            broker.offsets_retention_ms = v.saturating_mul(60_000);
        }
        let raft_addr =
            pick!(raft_addr).unwrap_or_else(|| "127.0.0.1:9093".parse().expect("valid"));
        let advertised_raft_addr = match pick!(advertised_raft_addr) {
            Some(addr) => {
                let (host, port) = parse_host_port(&addr)?;
                format!("{host}:{port}")
            }
            None if raft_addr.ip().is_unspecified() => bail!(
                "the Raft address {raft_addr} is unspecified; give --advertised-raft-addr so other brokers can reach it"
            ),
            None => raft_addr.to_string(),
        };
        let controller_voters = pick!(controller_voters).unwrap_or(3);
        if ![1, 3, 5].contains(&controller_voters) {
            bail!("controller voters must be 1, 3 or 5, not {controller_voters}");
        }
        let raft_snapshot_entries = pick!(raft_snapshot_entries).unwrap_or(1000);
        if raft_snapshot_entries < 10 {
            bail!("raft snapshot entries must be at least 10, not {raft_snapshot_entries}");
        }
        let node_id_given = self.node_id.is_some() || file.node_id.is_some();
        let join = if self.join.is_empty() {
            file.join
        } else {
            self.join
        };
        let cluster_secret = pick!(cluster_secret)
            .map(|k| parse_key("cluster secret", &k).map(ClusterSecret::new))
            .transpose()?;
        let gossip_addr =
            pick!(gossip_addr).unwrap_or_else(|| "127.0.0.1:7946".parse().expect("valid"));
        let insecure_cluster = self.insecure_cluster || file.insecure_cluster;
        if cluster_secret.is_none() && !insecure_cluster {
            for (what, addr) in [("Raft", raft_addr), ("gossip", gossip_addr)] {
                if !addr.ip().is_loopback() {
                    bail!(
                        "the {what} address {addr} is reachable beyond this machine: give every broker the same --cluster-secret (64 hex digits, e.g. from `openssl rand -hex 32`), or --insecure-cluster to run without one on purpose"
                    );
                }
            }
            // Advertised elsewhere (through a proxy or tunnel), it is reachable from there too.
            let (host, _) = parse_host_port(&advertised_raft_addr)?;
            let loopback = host == "localhost"
                || host
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback());
            if !loopback {
                bail!(
                    "the advertised Raft address {advertised_raft_addr} is reachable beyond this machine: give every broker the same --cluster-secret, or --insecure-cluster to run without one on purpose"
                );
            }
        }
        let gossip_key = match pick!(gossip_key) {
            Some(key) => Some(parse_key("gossip key", &key)?),
            None => cluster_secret.as_ref().map(|s| s.derive("gossip")),
        };
        let http_auth = HttpAuth {
            token: pick!(http_auth_token),
            reads: self.http_auth_reads || file.http_auth_reads,
        };
        if http_auth
            .token
            .as_deref()
            .is_some_and(|t| t.trim().is_empty())
        {
            bail!("the HTTP auth token is empty");
        }
        if http_auth.reads && http_auth.token.is_none() {
            bail!("--http-auth-reads needs --http-auth-token");
        }
        let bootstrap = self.bootstrap || file.bootstrap;
        if bootstrap && !join.is_empty() {
            bail!("--bootstrap starts a new cluster and --join joins one: give one of them");
        }
        let broker_session_timeout =
            Duration::from_millis(pick!(broker_session_timeout_ms).unwrap_or(2000));
        if broker_session_timeout < Duration::from_millis(500) {
            bail!(
                "--broker-session-timeout-ms must be at least 500: the controller heartbeats every 80 ms, and a shorter session fences brokers that are merely slow"
            );
        }
        let leader_balance = if pick!(auto_leader_rebalance_enable).unwrap_or(true) {
            let interval = pick!(leader_imbalance_check_interval_seconds).unwrap_or(300);
            let percentage = pick!(leader_imbalance_per_broker_percentage)
                .unwrap_or(LEADER_IMBALANCE_PER_BROKER_PERCENTAGE);
            if interval == 0 {
                bail!("--leader-imbalance-check-interval-seconds must be at least 1");
            }
            if percentage > 100 {
                bail!("--leader-imbalance-per-broker-percentage must be between 0 and 100");
            }
            Some(LeaderBalance {
                check_interval: Duration::from_secs(interval),
                imbalance_percentage: percentage,
            })
        } else {
            None
        };
        Ok(Settings {
            broker,
            raft_addr,
            advertised_raft_addr,
            node_id_given,
            bootstrap,
            controller_voters,
            replace_failed_voter_after: Duration::from_secs(
                pick!(controller_replace_failed_voter_secs).unwrap_or(30),
            ),
            broker_session_timeout,
            leader_balance,
            raft_snapshot_entries,
            http_addr: pick!(http_addr).unwrap_or_else(|| "127.0.0.1:9644".parse().expect("valid")),
            gossip_addr,
            join,
            node_name: pick!(node_name),
            event_handler: pick!(event_handler),
            gossip_key,
            cluster_secret,
            http_auth,
            reconnect_timeout: pick!(reconnect_timeout_secs).map(Duration::from_secs),
            tombstone_timeout: pick!(tombstone_timeout_secs).map(Duration::from_secs),
            log_level: pick!(log_level).unwrap_or_else(|| "info,openraft=warn".into()),
            log_format_json: pick!(log_json).unwrap_or(false),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: ServeArgs,
    }

    /// `skiff serve <args>` resolved.
    fn resolve(args: &[&str]) -> anyhow::Result<Settings> {
        let mut argv = vec!["skiff"];
        argv.extend_from_slice(args);
        Wrapper::parse_from(argv).args.resolve()
    }

    #[test]
    fn defaults_need_no_config() {
        let settings = Wrapper::parse_from(["skiff"]).args.resolve().unwrap();
        assert_eq!(settings.broker.kafka_addr.to_string(), "127.0.0.1:9092");
        assert_eq!(settings.http_addr.to_string(), "127.0.0.1:9644");
        assert_eq!(settings.broker.data_dir, PathBuf::from("skiff-data"));
        assert_eq!(
            settings.broker.advertised_kafka_addr,
            ("127.0.0.1".into(), 9092)
        );
        assert_eq!(settings.gossip_addr.to_string(), "127.0.0.1:7946");
        assert!(settings.join.is_empty());
    }

    #[test]
    fn flags_win_over_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("skiff.toml");
        std::fs::write(
            &file,
            "data-dir = \"/from/file\"\nnode-id = 7\nkafka-addr = \"127.0.0.1:9999\"\n",
        )
        .unwrap();
        let settings = Wrapper::parse_from([
            "skiff",
            "--config",
            file.to_str().unwrap(),
            "--data-dir",
            "/from/flag",
        ])
        .args
        .resolve()
        .unwrap();
        assert_eq!(settings.broker.data_dir, PathBuf::from("/from/flag"));
        assert_eq!(settings.broker.node_id, 7);
        assert_eq!(settings.broker.kafka_addr.to_string(), "127.0.0.1:9999");
    }

    #[test]
    fn a_broker_session_is_two_seconds_and_no_shorter_than_half_a_second() {
        assert_eq!(
            resolve(&[]).unwrap().broker_session_timeout,
            Duration::from_secs(2)
        );
        let err = resolve(&["--broker-session-timeout-ms", "100"])
            .err()
            .unwrap();
        assert!(err.to_string().contains("at least 500"), "{err}");
    }

    #[test]
    fn gossip_keys_are_64_hex_digits() {
        assert_eq!(parse_key("key", &"ab".repeat(32)).unwrap(), [0xab; 32]);
        assert!(parse_key("key", "abc").is_err());
        assert!(parse_key("key", &"zz".repeat(32)).is_err());
    }

    #[test]
    fn cluster_ports_beyond_loopback_need_a_secret() {
        let open = [
            "--raft-addr",
            "0.0.0.0:9093",
            "--advertised-raft-addr",
            "10.0.0.1:9093",
        ];
        let err = resolve(&open).err().unwrap();
        assert!(err.to_string().contains("--cluster-secret"), "{err}");
        let err = resolve(&["--gossip-addr", "10.0.0.1:7946"]).err().unwrap();
        assert!(err.to_string().contains("gossip"), "{err}");

        let secret = "cd".repeat(32);
        let settings = resolve(&[&open[..], &["--cluster-secret", &secret]].concat()).unwrap();
        assert!(settings.cluster_secret.is_some());
        let derived = settings
            .gossip_key
            .expect("gossip is encrypted with a derived key");
        assert_ne!(
            derived, [0xcd; 32],
            "the gossip key is not the secret itself"
        );
        let given = resolve(&[
            "--cluster-secret",
            &secret,
            "--gossip-key",
            &"ab".repeat(32),
        ]);
        assert_eq!(given.unwrap().gossip_key, Some([0xab; 32]));
        assert!(resolve(&[&open[..], &["--insecure-cluster"]].concat()).is_ok());
        let tunnelled = resolve(&["--advertised-raft-addr", "10.0.0.1:9093"])
            .err()
            .unwrap();
        assert!(tunnelled.to_string().contains("advertised"), "{tunnelled}");
        assert!(resolve(&["--advertised-raft-addr", "localhost:9093"]).is_ok());
        assert!(resolve(&["--cluster-secret", "short"]).is_err());
        let defaults = resolve(&[]).unwrap();
        assert!(defaults.cluster_secret.is_none() && defaults.gossip_key.is_none());
    }

    #[test]
    fn the_http_token_is_checked() {
        let auth = resolve(&["--http-auth-token", "t", "--http-auth-reads"])
            .unwrap()
            .http_auth;
        assert_eq!((auth.token.as_deref(), auth.reads), (Some("t"), true));
        assert!(resolve(&["--http-auth-reads"]).is_err());
        assert!(resolve(&["--http-auth-token", " "]).is_err());
    }

    #[test]
    fn bad_file_and_values_are_clear_errors() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("skiff.toml");
        std::fs::write(&file, "no-such-key = 1\n").unwrap();
        let err = Wrapper::parse_from(["skiff", "--config", file.to_str().unwrap()])
            .args
            .resolve()
            .err()
            .unwrap();
        assert!(format!("{err:#}").contains("no-such-key"), "{err:#}");
        let err = Wrapper::parse_from(["skiff", "--advertised-kafka-addr", "nohost"])
            .args
            .resolve()
            .err()
            .unwrap();
        assert!(err.to_string().contains("HOST:PORT"));
    }
}
