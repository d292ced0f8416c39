//! Several hosts on one machine: each broker runs in a network namespace of its own, on a veth
//! pair attached to a bridge that this harness creates, with an address 10.99.<cluster>.<node>.
//! Links can be cut with iptables (inside the namespaces, so rules vanish with them), bandwidth
//! limited with tc tbf, processes killed, paused and restarted. Everything is removed on drop,
//! also when a test panics. Needs root, iproute2, iptables and tc.

use std::net::{SocketAddr, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

static CLUSTERS: AtomicU32 = AtomicU32::new(0);

fn run(args: &[&str]) -> Result<(), String> {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .map_err(|e| format!("{}: {e}", args.join(" ")))?;
    if output.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    run(args).unwrap_or_else(|e| panic!("{e}"));
}

pub struct Node {
    pub namespace: String,
    pub ip: String,
    data_dir: PathBuf,
    log_path: PathBuf,
    child: Option<Child>,
    extra_args: Vec<String>,
}

impl Node {
    pub fn kafka_addr(&self) -> String {
        format!("{}:9092", self.ip)
    }

    pub fn http_addr(&self) -> String {
        format!("{}:9644", self.ip)
    }

    pub fn gossip_addr(&self) -> String {
        format!("{}:7946", self.ip)
    }

    pub fn raft_addr(&self) -> String {
        format!("{}:9093", self.ip)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log_path).unwrap_or_default()
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn signal(&self, signal: i32) {
        if let Some(pid) = self.pid() {
            unsafe { libc::kill(pid as i32, signal) };
        }
    }

    /// Runs a command inside this node's namespace.
    pub fn exec(&self, args: &[&str]) -> Result<(), String> {
        let mut full = vec!["ip", "netns", "exec", &self.namespace];
        full.extend_from_slice(args);
        run(&full)
    }
}

/// Veth host-side and namespace names must fit IFNAMSIZ (15 characters).
pub struct Cluster {
    id: u32,
    bridge: String,
    pub nodes: Vec<Node>,
    work_dir: tempfile::TempDir,
}

impl Cluster {
    /// Creates `n` namespaces on a fresh bridge and starts `skiff serve` in each, with
    /// `extra_args` (`{ip}`, `{node}` and `{cluster}` replaced by the node's address, its index
    /// and the cluster's subnet number, so `10.99.{cluster}.1` is the first node). Every node
    /// gets the same `--cluster-secret`, which brokers beyond loopback need.
    pub fn start(n: usize, extra_args: &[&str]) -> Self {
        Self::start_each(n, |_| extra_args.iter().map(|a| a.to_string()).collect())
    }

    /// One cluster: node 0 (broker id 1) bootstraps it, the others (ids 2..) join through node
    /// 0's gossip address; every node also gets `extra_args`.
    pub fn start_joined(n: usize, extra_args: &[&str]) -> Self {
        Self::start_each(n, |i| {
            let mut args = vec!["--node-id".to_string(), (i + 1).to_string()];
            if i > 0 {
                args.extend(["--join".to_string(), "10.99.{cluster}.1:7946".to_string()]);
            }
            args.extend(extra_args.iter().map(|a| a.to_string()));
            args
        })
    }

    /// Like `start`, with each node's flags from `args_of(index)`.
    pub fn start_each(n: usize, args_of: impl Fn(usize) -> Vec<String>) -> Self {
        assert!(
            unsafe { libc::geteuid() } == 0,
            "the multi-host harness creates network namespaces and needs root"
        );
        // Unique per test process and per cluster, so tests can run in parallel.
        let id = (std::process::id() * 7 + CLUSTERS.fetch_add(1, Ordering::SeqCst)) % 200 + 20;
        let mut cluster = Self {
            id,
            bridge: format!("skbr{id}"),
            nodes: Vec::new(),
            work_dir: tempfile::tempdir().unwrap(),
        };
        cluster.remove_leftovers(n);
        must(&["ip", "link", "add", &cluster.bridge, "type", "bridge"]);
        must(&[
            "ip",
            "addr",
            "add",
            &format!("10.99.{id}.254/24"),
            "dev",
            &cluster.bridge,
        ]);
        must(&["ip", "link", "set", &cluster.bridge, "up"]);
        for i in 0..n {
            let namespace = format!("skns{id}n{i}");
            let host_side = format!("skv{id}h{i}");
            let ip = format!("10.99.{id}.{}", i + 1);
            must(&["ip", "netns", "add", &namespace]);
            must(&[
                "ip", "link", "add", &host_side, "type", "veth", "peer", "name", "eth0", "netns",
                &namespace,
            ]);
            must(&["ip", "link", "set", &host_side, "master", &cluster.bridge]);
            must(&["ip", "link", "set", &host_side, "up"]);
            let node = Node {
                namespace,
                ip: ip.clone(),
                data_dir: cluster.work_dir.path().join(format!("node{i}")),
                log_path: cluster.work_dir.path().join(format!("node{i}.log")),
                child: None,
                // Brokers on addresses beyond loopback need a cluster secret; one per cluster.
                extra_args: [
                    "--cluster-secret".to_string(),
                    format!("{id:02x}").repeat(32),
                ]
                .iter()
                .chain(&args_of(i))
                .map(|a| {
                    a.replace("{ip}", &ip)
                        .replace("{node}", &i.to_string())
                        .replace("{cluster}", &id.to_string())
                })
                .collect(),
            };
            node.exec(&["ip", "link", "set", "lo", "up"]).unwrap();
            node.exec(&["ip", "addr", "add", &format!("{ip}/24"), "dev", "eth0"])
                .unwrap();
            node.exec(&["ip", "link", "set", "eth0", "up"]).unwrap();
            cluster.nodes.push(node);
        }
        for i in 0..n {
            cluster.spawn(i);
        }
        for i in 0..n {
            cluster.wait_serving(i);
        }
        cluster
    }

    /// Removes what an earlier, killed run with the same id may have left.
    fn remove_leftovers(&self, n: usize) {
        for i in 0..n.max(8) {
            let _ = run(&["ip", "netns", "del", &format!("skns{}n{i}", self.id)]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }

    fn spawn(&mut self, i: usize) {
        let node = &mut self.nodes[i];
        let child = super::spawn_serve(
            &["ip", "netns", "exec", &node.namespace],
            &node.data_dir,
            [
                node.kafka_addr(),
                node.http_addr(),
                node.gossip_addr(),
                node.raft_addr(),
            ],
            &node.extra_args,
            &node.log_path,
        );
        node.child = Some(child);
    }

    /// Waits until node `i` accepts Kafka connections (from the host, across the bridge).
    pub fn wait_serving(&mut self, i: usize) {
        let addr: SocketAddr = self.nodes[i].kafka_addr().parse().unwrap();
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(status) = self.nodes[i].child.as_mut().unwrap().try_wait().unwrap() {
                panic!("node {i} exited with {status}:\n{}", self.nodes[i].log());
            }
            if TcpStream::connect_timeout(&addr, Duration::from_millis(200)).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "node {i} is not serving:\n{}",
                self.nodes[i].log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn kill9(&mut self, i: usize) {
        self.nodes[i].signal(libc::SIGKILL);
        if let Some(mut child) = self.nodes[i].child.take() {
            let _ = child.wait();
        }
    }

    /// SIGTERM and wait for the exit: a graceful stop (the broker leaves the cluster). The exit
    /// status, None if the node was not running.
    pub fn terminate(&mut self, i: usize) -> Option<std::process::ExitStatus> {
        self.nodes[i].signal(libc::SIGTERM);
        let mut child = self.nodes[i].child.take()?;
        child.wait().ok()
    }

    /// The body of an HTTP request to node `i`'s admin port, if it answered 200.
    pub fn http(&self, i: usize, method: &str, path: &str, json: Option<&str>) -> Option<String> {
        super::http_request(self.nodes[i].http_addr(), method, path, json)
    }

    pub fn pause(&self, i: usize) {
        self.nodes[i].signal(libc::SIGSTOP);
    }

    pub fn resume(&self, i: usize) {
        self.nodes[i].signal(libc::SIGCONT);
    }

    /// Starts node `i` again with the same data directory and address.
    pub fn restart(&mut self, i: usize) {
        assert!(self.nodes[i].child.is_none(), "node {i} is still running");
        self.spawn(i);
        self.wait_serving(i);
    }

    fn drop_rule(&self, at: usize, chain: &str, peer: &str) -> Result<(), String> {
        let flag = if chain == "INPUT" { "-s" } else { "-d" };
        self.nodes[at].exec(&["iptables", "-A", chain, flag, peer, "-j", "DROP"])
    }

    /// Drops everything from `from` to `to` (a one-way cut: `to` can still reach `from`).
    pub fn cut_one_way(&self, from: usize, to: usize) {
        let to_ip = self.nodes[to].ip.clone();
        let from_ip = self.nodes[from].ip.clone();
        self.drop_rule(from, "OUTPUT", &to_ip).unwrap();
        self.drop_rule(to, "INPUT", &from_ip).unwrap();
    }

    /// Splits the nodes into `side` and the rest, both ways.
    pub fn partition(&self, side: &[usize]) {
        for &a in side {
            for b in (0..self.nodes.len()).filter(|b| !side.contains(b)) {
                self.cut_one_way(a, b);
                self.cut_one_way(b, a);
            }
        }
    }

    /// Cuts node `i` off from every other node and from the host.
    pub fn isolate(&self, i: usize) {
        self.partition(&[i]);
        let host = format!("10.99.{}.254", self.id);
        self.drop_rule(i, "INPUT", &host).unwrap();
        self.drop_rule(i, "OUTPUT", &host).unwrap();
    }

    /// Drops each packet arriving at any node from the network (other nodes and the host) with
    /// probability `percent`/100 (iptables' statistic match; netem is not available here), so
    /// every link loses about that share in each direction.
    pub fn lose(&self, percent: u32) {
        let probability = format!("{:.2}", f64::from(percent) / 100.0);
        for node in &self.nodes {
            node.exec(&[
                "iptables",
                "-A",
                "INPUT",
                "-i",
                "eth0",
                "-m",
                "statistic",
                "--mode",
                "random",
                "--probability",
                &probability,
                "-j",
                "DROP",
            ])
            .unwrap();
        }
    }

    /// Removes every cut and every loss.
    pub fn heal(&self) {
        for node in &self.nodes {
            node.exec(&["iptables", "-F", "INPUT"]).unwrap();
            node.exec(&["iptables", "-F", "OUTPUT"]).unwrap();
        }
    }

    /// Limits node `i`'s outgoing bandwidth (tc tbf; netem is not available here).
    pub fn limit_bandwidth(&self, i: usize, rate: &str) {
        self.nodes[i]
            .exec(&[
                "tc", "qdisc", "replace", "dev", "eth0", "root", "tbf", "rate", rate, "burst",
                "32kbit", "latency", "400ms",
            ])
            .unwrap();
    }

    /// Whether a UDP datagram (what gossip uses) from node `from` reaches node `to`; unlike a
    /// TCP connection, this sees a one-way cut as one-way.
    pub fn udp_reaches(&self, from: usize, to: usize) -> bool {
        let listener_code = format!(
            "import socket,sys; s=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); \
             s.bind(('{}',9999)); s.settimeout(3); s.recvfrom(16)",
            self.nodes[to].ip
        );
        let mut listener = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.nodes[to].namespace,
                "python3",
                "-c",
                &listener_code,
            ])
            .stderr(Stdio::null())
            .spawn()
            .expect("python3 for the UDP probe");
        std::thread::sleep(Duration::from_millis(300));
        let send = format!(
            "for i in 1 2 3 4 5; do echo x > /dev/udp/{}/9999; sleep 0.1; done",
            self.nodes[to].ip
        );
        let _ = self.nodes[from].exec(&["bash", "-c", &send]);
        listener.wait().map(|s| s.success()).unwrap_or(false)
    }

    /// Whether node `from` can open a TCP connection to node `to`'s Kafka port.
    pub fn can_connect(&self, from: usize, to: usize) -> bool {
        let target = format!("/dev/tcp/{}/9092", self.nodes[to].ip);
        self.nodes[from]
            .exec(&["timeout", "2", "bash", "-c", &format!("exec 3<>{target}")])
            .is_ok()
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            node.signal(libc::SIGCONT);
            if let Some(mut child) = node.child.take() {
                let _ = child.kill();
                let _ = child.wait();
            }
            if std::thread::panicking() {
                eprintln!(
                    "--- {} ({}) log ---\n{}",
                    node.namespace,
                    node.ip,
                    node.log()
                );
            }
            let _ = run(&["ip", "netns", "del", &node.namespace]);
        }
        let _ = run(&["ip", "link", "del", &self.bridge]);
    }
}
