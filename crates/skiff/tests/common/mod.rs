//! Starts real `skiff serve` processes for end-to-end tests and cleans them up, even when a test
//! fails: the child is killed and its data directory removed on drop.

#![allow(dead_code)] // each test file uses a different part of the harness

pub mod linearizability;
pub mod netns;
pub mod wire;

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct Broker {
    child: Option<Child>,
    data_dir: tempfile::TempDir,
    pub kafka_port: u16,
    pub http_port: u16,
    pub gossip_port: u16,
    pub raft_port: u16,
    extra_args: Vec<String>,
    log_path: PathBuf,
}

/// Ports for the brokers' listeners come from below Linux's ephemeral range (32768-60999): a
/// port the OS hands out as the source of an outgoing connection (Raft, Kafka and HTTP clients
/// make many) could otherwise be taken between choosing it and the broker binding it.
const PORT_RANGE: std::ops::Range<u32> = 20_000..32_000;

static NEXT_PORT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);

/// A port free for both TCP and UDP on 127.0.0.1. Test binaries run one at a time; the process
/// id spreads consecutive runs over the range.
fn free_port() -> u16 {
    let span = PORT_RANGE.end - PORT_RANGE.start;
    let offset = std::process::id().wrapping_mul(389) % span;
    loop {
        let next = NEXT_PORT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let port = (PORT_RANGE.start + (offset + next) % span) as u16;
        let free = TcpListener::bind(("127.0.0.1", port)).is_ok()
            && std::net::UdpSocket::bind(("127.0.0.1", port)).is_ok();
        if free {
            return port;
        }
    }
}

impl Broker {
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Starts a broker with extra `skiff serve` flags, on free loopback ports.
    pub fn start_with(extra_args: &[&str]) -> Self {
        let data_dir = tempfile::tempdir().unwrap();
        let log_path = data_dir.path().with_extension("log");
        let mut broker = Self {
            child: None,
            data_dir,
            kafka_port: free_port(),
            http_port: free_port(),
            gossip_port: free_port(),
            raft_port: free_port(),
            extra_args: extra_args.iter().map(|s| s.to_string()).collect(),
            log_path,
        };
        broker.spawn();
        broker
    }

    pub fn data_dir(&self) -> &Path {
        self.data_dir.path()
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.kafka_port)
    }

    fn spawn(&mut self) {
        let child = spawn_serve(
            &[],
            &self.data_dir.path().join("data"),
            [
                self.bootstrap(),
                format!("127.0.0.1:{}", self.http_port),
                format!("127.0.0.1:{}", self.gossip_port),
                format!("127.0.0.1:{}", self.raft_port),
            ],
            &self.extra_args,
            &self.log_path,
        );
        self.child = Some(child);
        self.wait_healthy();
    }

    fn wait_healthy(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            if let Some(status) = self.child.as_mut().unwrap().try_wait().unwrap() {
                panic!(
                    "skiff exited with {status} during start-up:\n{}",
                    self.log()
                );
            }
            if self.http_get("/health").is_some_and(|b| b.contains("ok"))
                && TcpStream::connect(self.bootstrap()).is_ok()
            {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("skiff did not become healthy:\n{}", self.log());
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    /// The body of an HTTP GET on the admin port, or None if it did not answer 200.
    pub fn http_get(&self, path: &str) -> Option<String> {
        http_request(("127.0.0.1", self.http_port), "GET", path, None)
    }

    /// `GET /raft/stats`, parsed; None if the broker did not answer.
    pub fn raft_stats(&self) -> Option<serde_json::Value> {
        serde_json::from_str(&self.http_get("/raft/stats")?).ok()
    }

    /// The body of an HTTP POST of JSON on the admin port, or None if it did not answer 200.
    pub fn http_post(&self, path: &str, json: &str) -> Option<String> {
        http_request(("127.0.0.1", self.http_port), "POST", path, Some(json))
    }

    fn signal(&self, signal: i32) {
        if let Some(child) = &self.child {
            unsafe { libc::kill(child.id() as i32, signal) };
        }
    }

    /// SIGKILL, no chance to flush or close anything.
    pub fn kill9(&mut self) {
        self.signal(libc::SIGKILL);
        if let Some(mut child) = self.child.take() {
            child.wait().unwrap();
        }
    }

    /// SIGTERM and wait for a clean exit; returns the exit status.
    pub fn terminate(&mut self) -> std::process::ExitStatus {
        self.signal(libc::SIGTERM);
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = child.try_wait().unwrap() {
                return status;
            }
            assert!(
                Instant::now() < deadline,
                "skiff ignored SIGTERM:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Replaces the extra `skiff serve` flags used by the next `restart`.
    pub fn set_extra_args(&mut self, extra_args: &[&str]) {
        self.extra_args = extra_args.iter().map(|s| s.to_string()).collect();
    }

    /// Starts again on the same data directory and ports.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "stop the broker first");
        self.spawn();
    }
}

/// Polls `done` until it holds; fails the test naming `what` after `timeout`.
pub fn wait_until(what: &str, timeout: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !done() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The `p` quantile (0 < p <= 1) of ascending `sorted` durations.
pub fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1]
}

/// Starts `skiff serve` (behind `prefix`, e.g. `ip netns exec NS`) on the Kafka, HTTP, gossip
/// and Raft addresses, with the tests' log level (`SKIFF_TEST_LOG`) and stderr appended to `log_path`.
pub fn spawn_serve(
    prefix: &[&str],
    data_dir: &Path,
    [kafka, http, gossip, raft]: [String; 4],
    extra_args: &[String],
    log_path: &Path,
) -> Child {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log_path)
        .unwrap();
    let mut command = match prefix.split_first() {
        Some((program, args)) => {
            let mut command = Command::new(program);
            command.args(args).arg(env!("CARGO_BIN_EXE_skiff"));
            command
        }
        None => Command::new(env!("CARGO_BIN_EXE_skiff")),
    };
    command
        .arg("serve")
        .arg("--data-dir")
        .arg(data_dir)
        .args([
            "--kafka-addr",
            &kafka,
            "--http-addr",
            &http,
            "--gossip-addr",
            &gossip,
            "--raft-addr",
            &raft,
        ])
        .args(extra_args)
        .env(
            "RUST_LOG",
            std::env::var("SKIFF_TEST_LOG").unwrap_or_else(|_| "info".into()),
        )
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .expect("skiff binary runs")
}

/// A minimal HTTP/1.1 exchange for the tests' own use; the body if the answer was 200.
pub fn http_request(
    addr: impl std::net::ToSocketAddrs,
    method: &str,
    path: &str,
    json: Option<&str>,
) -> Option<String> {
    match http_exchange(addr, method, path, json, Duration::from_secs(30))? {
        (200, body) => Some(body),
        _ => None,
    }
}

/// One HTTP/1.1 request with any body; the status and body, or None if there was no answer
/// within `timeout`.
pub fn http_exchange(
    addr: impl std::net::ToSocketAddrs,
    method: &str,
    path: &str,
    body: Option<&str>,
    timeout: Duration,
) -> Option<(u16, String)> {
    http_exchange_with(addr, method, path, &[], body, timeout)
}

/// Like `http_exchange`, with extra request headers.
pub fn http_exchange_with(
    addr: impl std::net::ToSocketAddrs,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&str>,
    timeout: Duration,
) -> Option<(u16, String)> {
    let addr = addr.to_socket_addrs().ok()?.next()?;
    let mut stream = TcpStream::connect_timeout(&addr, timeout).ok()?;
    stream.set_read_timeout(Some(timeout)).ok()?;
    let body = body.unwrap_or("");
    let headers: String = headers
        .iter()
        .map(|(name, value)| format!("{name}: {value}\r\n"))
        .collect();
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\nContent-Type: application/json\r\n{headers}Content-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    let status = head.split_whitespace().nth(1)?.parse().ok()?;
    Some((status, body.to_string()))
}

impl Drop for Broker {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        if std::thread::panicking() {
            eprintln!("--- skiff log ---\n{}", self.log());
        }
        let _ = std::fs::remove_file(&self.log_path);
    }
}
