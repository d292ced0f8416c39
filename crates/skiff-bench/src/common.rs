//! What every subcommand shares: the common flags, the librdkafka client context (error counting),
//! topic set-up through the admin API, payload generation and number formatting.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Args, ValueEnum};
use rdkafka::admin::{AdminClient, AdminOptions, NewTopic, TopicReplication};
use rdkafka::client::DefaultClientContext;
use rdkafka::config::{ClientConfig, RDKafkaLogLevel};
use rdkafka::consumer::{BaseConsumer, Consumer, ConsumerContext};
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{DeliveryResult, ProducerContext};
use rdkafka::ClientContext;

/// How long admin and metadata calls may take.
pub const ADMIN_TIMEOUT: Duration = Duration::from_secs(15);

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Compression {
    None,
    Gzip,
    Snappy,
    Lz4,
    Zstd,
}

impl Compression {
    pub fn as_str(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Snappy => "snappy",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }
}

/// Which librdkafka interface moves the messages (see `--api`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum Api {
    Message,
    Batch,
}

impl Api {
    pub fn as_str(self) -> &'static str {
        match self {
            Api::Message => "message",
            Api::Batch => "batch",
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct Common {
    /// Kafka bootstrap address (host:port).
    #[arg(long, default_value = "127.0.0.1:9092")]
    pub bootstrap: String,
    /// Topic to use; created with `--partitions` partitions if missing.
    #[arg(long, default_value = "skiff-bench")]
    pub topic: String,
    /// Partition count of the topic when this tool creates it.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Replication factor of the topic when this tool creates it (-1: the broker's
    /// `--default-replication-factor`).
    #[arg(long, default_value_t = 1, allow_hyphen_values = true)]
    pub replication_factor: i32,
    /// Delete the topic first (if it exists) and create it anew.
    #[arg(long)]
    pub fresh: bool,
    /// Size of each message value in bytes (no key).
    #[arg(long, default_value_t = 100)]
    pub message_bytes: usize,
    /// Number of messages (produce, consume) to send or read.
    #[arg(long, conflicts_with = "duration_secs")]
    pub messages: Option<u64>,
    /// Run for this long instead of a message count.
    #[arg(long)]
    pub duration_secs: Option<f64>,
    /// Producer compression codec.
    #[arg(long, value_enum, default_value_t = Compression::None)]
    pub compression: Compression,
    /// Producer acks: 0, 1 or -1 (all).
    #[arg(long, default_value = "1", allow_hyphen_values = true,
          value_parser = ["0", "1", "-1", "all"])]
    pub acks: String,
    /// Append librdkafka's statistics JSON (every second, one object a line) of every benchmark
    /// client to this file.
    #[arg(long)]
    pub stats_file: Option<std::path::PathBuf>,
    /// Extra librdkafka property for every client, `key=value` (repeatable).
    #[arg(short = 'X', long = "client-config", value_parser = parse_key_value)]
    pub client_config: Vec<(String, String)>,
}

fn parse_key_value(s: &str) -> Result<(String, String), String> {
    s.split_once('=')
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .ok_or_else(|| format!("expected key=value, got '{s}'"))
}

impl Common {
    /// The base client configuration: bootstrap address plus the `-X` extras.
    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.bootstrap)
            .set_log_level(RDKafkaLogLevel::Warning);
        config
    }

    /// Applies `--stats-file` and then the `-X` extras, so they win over the tool's defaults.
    pub fn apply_extras(&self, config: &mut ClientConfig) {
        if self.stats_file.is_some() {
            config.set("statistics.interval.ms", "1000");
        }
        for (k, v) in &self.client_config {
            config.set(k, v);
        }
    }

    /// Creates the topic (deleting it first with `--fresh`) and returns its partition count.
    pub fn ensure_topic(&self) -> Result<i32> {
        let admin: AdminClient<DefaultClientContext> = self
            .client_config()
            .create()
            .context("creating the admin client")?;
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let options = AdminOptions::new().operation_timeout(Some(ADMIN_TIMEOUT));
        if self.fresh {
            let deleted = runtime
                .block_on(admin.delete_topics(&[self.topic.as_str()], &options))
                .context("DeleteTopics")?;
            for result in deleted {
                match result {
                    Ok(_) | Err((_, RDKafkaErrorCode::UnknownTopicOrPartition)) => {}
                    Err((topic, code)) => bail!("deleting topic '{topic}': {code}"),
                }
            }
        }
        let new_topic = NewTopic::new(
            &self.topic,
            self.partitions,
            TopicReplication::Fixed(self.replication_factor),
        );
        // A topic just deleted may take a moment to go; retry "already exists" after --fresh.
        let deadline = Instant::now() + ADMIN_TIMEOUT;
        loop {
            let created = runtime
                .block_on(admin.create_topics([&new_topic], &options))
                .context("CreateTopics")?;
            match created.into_iter().next() {
                Some(Ok(_)) => break,
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists)))
                    if self.fresh && Instant::now() < deadline =>
                {
                    std::thread::sleep(Duration::from_millis(100));
                }
                Some(Err((_, RDKafkaErrorCode::TopicAlreadyExists))) => break,
                Some(Err((topic, code))) => bail!("creating topic '{topic}': {code}"),
                None => bail!("CreateTopics returned no result"),
            }
        }
        drop(admin);
        let consumer: BaseConsumer = self.client_config().create()?;
        let metadata = consumer
            .fetch_metadata(Some(&self.topic), ADMIN_TIMEOUT)
            .context("Metadata")?;
        let partitions = metadata
            .topics()
            .iter()
            .find(|t| t.name() == self.topic)
            .map(|t| t.partitions().len() as i32)
            .unwrap_or(0);
        if partitions == 0 {
            bail!("topic '{}' has no partitions", self.topic);
        }
        if partitions != self.partitions {
            eprintln!(
                "note: topic '{}' already existed with {partitions} partitions (asked {}); use --fresh to recreate",
                self.topic, self.partitions
            );
        }
        Ok(partitions)
    }
}

/// Client context of every producer and consumer: counts failed deliveries, reports librdkafka's
/// global errors on stderr and writes its statistics to `--stats-file`.
#[derive(Default)]
pub struct BenchContext {
    pub delivery_errors: AtomicU64,
    pub first_error: Mutex<Option<String>>,
    stats: Option<Mutex<File>>,
}

impl BenchContext {
    pub fn new(common: &Common) -> Result<Self> {
        let stats = match &common.stats_file {
            Some(path) => Some(Mutex::new(
                OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .with_context(|| format!("opening {}", path.display()))?,
            )),
            None => None,
        };
        Ok(Self {
            stats,
            ..Self::default()
        })
    }

    pub fn delivery_errors(&self) -> u64 {
        self.delivery_errors.load(Ordering::Relaxed)
    }

    pub fn first_error(&self) -> Option<String> {
        self.first_error.lock().unwrap().clone()
    }

    fn record_error(&self, text: String) {
        self.first_error.lock().unwrap().get_or_insert(text);
    }
}

impl ClientContext for BenchContext {
    fn log(&self, level: RDKafkaLogLevel, fac: &str, log_message: &str) {
        if (level as i32) <= RDKafkaLogLevel::Warning as i32 {
            eprintln!("librdkafka {level:?} {fac}: {log_message}");
        }
    }

    fn error(&self, error: KafkaError, reason: &str) {
        eprintln!("librdkafka error: {error}: {reason}");
    }

    fn stats_raw(&self, statistics: &[u8]) {
        if let Some(file) = &self.stats {
            let mut line = statistics.to_vec();
            line.push(b'\n');
            if let Err(e) = file.lock().unwrap().write_all(&line) {
                eprintln!("writing statistics: {e}");
            }
        }
    }
}

impl ProducerContext for BenchContext {
    type DeliveryOpaque = ();

    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        if let Err((error, _)) = result {
            self.delivery_errors.fetch_add(1, Ordering::Relaxed);
            self.record_error(error.to_string());
        }
    }
}

impl ConsumerContext for BenchContext {}

/// A fixed pool of message values: random upper-case letters (like Kafka's
/// `kafka-producer-perf-test`), so compression has realistic rather than trivial input.
pub struct Payloads {
    data: Vec<u8>,
    size: usize,
    count: usize,
}

impl Payloads {
    pub fn new(size: usize) -> Self {
        let count = 1024;
        let mut state = 0x9E37_79B9_7F4A_7C15u64;
        let data = (0..size * count)
            .map(|_| {
                // xorshift64*: cheap and deterministic.
                state ^= state >> 12;
                state ^= state << 25;
                state ^= state >> 27;
                b'A' + (state.wrapping_mul(0x2545_F491_4F6C_DD1D) >> 32) as u8 % 26
            })
            .collect();
        Self { data, size, count }
    }

    pub fn get(&self, i: u64) -> &[u8] {
        let start = (i as usize % self.count) * self.size;
        &self.data[start..start + self.size]
    }
}

/// How long a count-or-duration run goes on.
#[derive(Debug, Clone, Copy)]
pub enum Limit {
    Messages(u64),
    Until(Instant),
}

pub fn mb(bytes: u64) -> f64 {
    bytes as f64 / 1e6
}

/// `1234567.8` as `1,234,568`.
pub fn thousands(v: f64) -> String {
    let digits = format!("{:.0}", v.max(0.0));
    let mut out = String::new();
    for (i, c) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn payloads_are_letters_of_the_asked_size() {
        let p = Payloads::new(100);
        for i in [0, 1, 1023, 1024, 5000] {
            let v = p.get(i);
            assert_eq!(v.len(), 100);
            assert!(v.iter().all(u8::is_ascii_uppercase));
        }
        assert_ne!(p.get(0), p.get(1));
    }

    #[test]
    fn formats_thousands() {
        assert_eq!(thousands(0.0), "0");
        assert_eq!(thousands(999.4), "999");
        assert_eq!(thousands(1000.0), "1,000");
        assert_eq!(thousands(3_512_345.6), "3,512,346");
    }

    #[test]
    fn parses_key_values() {
        assert_eq!(
            parse_key_value("linger.ms=0").unwrap(),
            ("linger.ms".to_string(), "0".to_string())
        );
        assert!(parse_key_value("nonsense").is_err());
    }
}
