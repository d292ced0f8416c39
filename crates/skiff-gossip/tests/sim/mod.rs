//! A deterministic simulation of many `Membership` cores: one seeded RNG, a virtual clock
//! and a simulated network with per-link loss, delay and partitions. No sockets, no real
//! time: a run is a pure function of its seed.

#![allow(dead_code)] // each test binary uses a different subset

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::net::{Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use skiff_gossip::{
    MemberEvent, MemberInfo, MemberStatus, Membership, MembershipConfig, QueryUpdate,
};

pub struct SimNode {
    pub membership: Membership,
    pub addr: SocketAddr,
    /// False once killed: no timers run and nothing is delivered to it.
    pub up: bool,
}

#[derive(Debug, Clone)]
pub struct Logged {
    pub at: Duration,
    pub node: usize,
    pub event: MemberEvent,
}

#[derive(Debug, Clone)]
pub struct LoggedQuery {
    pub at: Duration,
    pub node: usize,
    pub update: QueryUpdate,
}

struct InFlight {
    from: SocketAddr,
    to: usize,
    bytes: Vec<u8>,
}

pub struct Network {
    /// Probability that any datagram is lost.
    pub loss: f64,
    pub min_delay: Duration,
    pub max_delay: Duration,
    /// Extra one-way delay for every datagram to or from a node (a slow member).
    pub slow: HashMap<usize, Duration>,
    /// Node -> group; datagrams between different groups are lost.
    pub partition: Option<Vec<u32>>,
}

impl Default for Network {
    fn default() -> Self {
        Self {
            loss: 0.0,
            min_delay: Duration::from_millis(1),
            max_delay: Duration::from_millis(5),
            slow: HashMap::new(),
            partition: None,
        }
    }
}

pub struct Sim {
    pub nodes: Vec<SimNode>,
    pub net: Network,
    pub log: Vec<Logged>,
    pub queries: Vec<LoggedQuery>,
    pub start: Instant,
    now: Instant,
    rng: StdRng,
    in_flight: BTreeMap<(Instant, u64), InFlight>,
    seq: u64,
    deadlines: BTreeSet<(Instant, usize)>,
    deadline_of: Vec<Option<Instant>>,
    by_addr: HashMap<SocketAddr, usize>,
    pub delivered: u64,
    pub lost: u64,
    /// When set, every member answers every query it receives with its own name.
    pub auto_respond: bool,
    /// When set, every datagram sent (sender, receiver, bytes) is recorded here.
    pub capture: Option<Vec<(usize, usize, Vec<u8>)>>,
}

pub fn addr_of(index: usize) -> SocketAddr {
    // Loopback addresses used as labels only: nothing is ever sent on a real network.
    SocketAddr::from((
        Ipv4Addr::new(127, 1, (index / 250) as u8, (index % 250) as u8 + 1),
        7946,
    ))
}

pub fn name_of(index: usize) -> String {
    format!("n{index}")
}

impl Sim {
    pub fn new(seed: u64) -> Self {
        let start = Instant::now();
        Self {
            nodes: Vec::new(),
            net: Network::default(),
            log: Vec::new(),
            queries: Vec::new(),
            start,
            now: start,
            rng: StdRng::seed_from_u64(seed),
            in_flight: BTreeMap::new(),
            seq: 0,
            deadlines: BTreeSet::new(),
            deadline_of: Vec::new(),
            by_addr: HashMap::new(),
            delivered: 0,
            lost: 0,
            auto_respond: false,
            capture: None,
        }
    }

    pub fn now(&self) -> Instant {
        self.now
    }

    pub fn elapsed(&self) -> Duration {
        self.now - self.start
    }

    /// A config for node `index` with LAN defaults; `tune` adjusts it.
    pub fn config(index: usize) -> MembershipConfig {
        let mut config = MembershipConfig::new(name_of(index), addr_of(index));
        config.generation = 1;
        config.tags.insert("id".to_string(), index.to_string());
        config
    }

    pub fn add_node(&mut self, config: MembershipConfig) -> usize {
        let index = self.nodes.len();
        let mut seed = [0u8; 32];
        self.rng.fill(&mut seed);
        let addr = config.gossip_addr;
        let membership = Membership::new(config, seed, self.now).expect("valid config");
        self.nodes.push(SimNode {
            membership,
            addr,
            up: true,
        });
        self.deadline_of.push(None);
        self.by_addr.insert(addr, index);
        self.after(index);
        index
    }

    pub fn add_nodes(&mut self, count: usize, tune: impl Fn(&mut MembershipConfig)) -> Vec<usize> {
        (0..count)
            .map(|_| {
                let mut config = Self::config(self.nodes.len());
                tune(&mut config);
                self.add_node(config)
            })
            .collect()
    }

    pub fn join(&mut self, node: usize, seeds: &[usize]) {
        let addrs: Vec<SocketAddr> = seeds.iter().map(|seed| self.nodes[*seed].addr).collect();
        let now = self.now;
        self.nodes[node]
            .membership
            .join(&addrs, now)
            .expect("join accepted");
        self.after(node);
    }

    /// Applies `action` to a node's core at the current time and collects its outputs.
    pub fn with<R>(
        &mut self,
        node: usize,
        action: impl FnOnce(&mut Membership, Instant) -> R,
    ) -> R {
        let now = self.now;
        let result = action(&mut self.nodes[node].membership, now);
        self.after(node);
        result
    }

    /// The process dies: no leave, no more timers, nothing delivered.
    pub fn kill(&mut self, node: usize) {
        self.nodes[node].up = false;
        if let Some(at) = self.deadline_of[node].take() {
            self.deadlines.remove(&(at, node));
        }
    }

    pub fn partition(&mut self, groups: Vec<u32>) {
        self.net.partition = Some(groups);
    }

    pub fn heal(&mut self) {
        self.net.partition = None;
    }

    /// Injects a raw datagram as if `from` had sent it to `node`.
    pub fn inject(&mut self, node: usize, from: SocketAddr, bytes: &[u8]) {
        let now = self.now;
        self.nodes[node].membership.handle_packet(from, bytes, now);
        self.after(node);
    }

    fn after(&mut self, node: usize) {
        let offset = self.now - self.start;
        let mut to_answer = Vec::new();
        self.collect(node, offset, &mut to_answer);
        for id in to_answer {
            let now = self.now;
            let answer = name_of(node).into_bytes();
            self.nodes[node]
                .membership
                .respond(id, &answer, now)
                .expect("answering an open query");
            self.collect(node, offset, &mut Vec::new());
        }
        if let Some(at) = self.deadline_of[node].take() {
            self.deadlines.remove(&(at, node));
        }
        if self.nodes[node].up {
            if let Some(at) = self.nodes[node].membership.poll_timeout() {
                self.deadlines.insert((at, node));
                self.deadline_of[node] = Some(at);
            }
        }
    }

    fn collect(
        &mut self,
        node: usize,
        offset: Duration,
        to_answer: &mut Vec<skiff_gossip::QueryId>,
    ) {
        while let Some(transmit) = self.nodes[node].membership.poll_transmit() {
            let from = self.nodes[node].addr;
            let Some(&to) = self.by_addr.get(&transmit.dst) else {
                self.lost += 1;
                continue;
            };
            if let Some(captured) = &mut self.capture {
                captured.push((node, to, transmit.bytes.clone()));
            }
            if self.dropped(node, to) {
                self.lost += 1;
                continue;
            }
            let mut delay = self.net.min_delay;
            let spread = self.net.max_delay.saturating_sub(self.net.min_delay);
            if !spread.is_zero() {
                delay += spread.mul_f64(self.rng.random::<f64>());
            }
            delay += self.net.slow.get(&node).copied().unwrap_or_default();
            delay += self.net.slow.get(&to).copied().unwrap_or_default();
            self.seq += 1;
            self.in_flight.insert(
                (self.now + delay, self.seq),
                InFlight {
                    from,
                    to,
                    bytes: transmit.bytes,
                },
            );
        }
        while let Some(event) = self.nodes[node].membership.poll_event() {
            if let (true, MemberEvent::Query(query)) = (self.auto_respond, &event) {
                to_answer.push(query.id);
            }
            self.log.push(Logged {
                at: offset,
                node,
                event,
            });
        }
        while let Some(update) = self.nodes[node].membership.poll_query_update() {
            self.queries.push(LoggedQuery {
                at: offset,
                node,
                update,
            });
        }
    }

    fn dropped(&mut self, from: usize, to: usize) -> bool {
        if let Some(groups) = &self.net.partition {
            if groups[from] != groups[to] {
                return true;
            }
        }
        self.net.loss > 0.0 && self.rng.random::<f64>() < self.net.loss
    }

    /// Runs every delivery and timer up to `self.now + duration`.
    pub fn run_for(&mut self, duration: Duration) {
        let until = self.now + duration;
        loop {
            let next_packet = self.in_flight.keys().next().map(|(at, _)| *at);
            let next_timer = self.deadlines.iter().next().map(|(at, _)| *at);
            let next = match (next_packet, next_timer) {
                (Some(p), Some(t)) => p.min(t),
                (Some(p), None) => p,
                (None, Some(t)) => t,
                (None, None) => break,
            };
            if next > until {
                break;
            }
            self.now = next;
            if next_packet == Some(next) {
                let (_, packet) = self.in_flight.pop_first().expect("peeked");
                if self.nodes[packet.to].up {
                    self.delivered += 1;
                    let now = self.now;
                    self.nodes[packet.to]
                        .membership
                        .handle_packet(packet.from, &packet.bytes, now);
                    self.after(packet.to);
                }
            } else {
                let (_, node) = self.deadlines.pop_first().expect("peeked");
                self.deadline_of[node] = None;
                let now = self.now;
                self.nodes[node].membership.handle_timeout(now);
                self.after(node);
            }
        }
        self.now = until;
    }

    /// Runs in `step`s until `done` holds (returns the elapsed time) or `limit` passes.
    pub fn run_until(
        &mut self,
        limit: Duration,
        step: Duration,
        mut done: impl FnMut(&Sim) -> bool,
    ) -> Option<Duration> {
        let began = self.now;
        while self.now - began < limit {
            self.run_for(step);
            if done(self) {
                return Some(self.now - began);
            }
        }
        None
    }

    pub fn live(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].up)
            .collect()
    }

    pub fn members_of(&self, node: usize) -> Vec<MemberInfo> {
        self.nodes[node].membership.members()
    }

    /// Whether every node in `observers` lists exactly `expected` as alive (or suspect).
    pub fn all_see_alive(&self, observers: &[usize], expected: &[usize]) -> bool {
        let want: BTreeSet<String> = expected.iter().map(|i| name_of(*i)).collect();
        observers.iter().all(|observer| {
            let seen: BTreeSet<String> = self
                .members_of(*observer)
                .into_iter()
                .filter(|m| matches!(m.status, MemberStatus::Alive | MemberStatus::Suspect))
                .map(|m| m.name)
                .collect();
            seen == want
        })
    }

    /// For each observer, the first logged time (at or after `since`) of an event matching
    /// `matches`; `None` for observers that never saw one.
    pub fn first_seen(
        &self,
        observers: &[usize],
        since: Duration,
        matches: impl Fn(&MemberEvent) -> bool,
    ) -> Vec<Option<Duration>> {
        let mut first: HashMap<usize, Duration> = HashMap::new();
        for entry in self
            .log
            .iter()
            .filter(|e| e.at >= since && matches(&e.event))
        {
            first.entry(entry.node).or_insert(entry.at);
        }
        observers
            .iter()
            .map(|o| first.get(o).map(|at| *at - since))
            .collect()
    }

    /// Number of events matching `matches` logged by each observer since `since`.
    pub fn count_seen(
        &self,
        observers: &[usize],
        since: Duration,
        matches: impl Fn(&MemberEvent) -> bool,
    ) -> Vec<usize> {
        observers
            .iter()
            .map(|o| {
                self.log
                    .iter()
                    .filter(|e| e.node == *o && e.at >= since && matches(&e.event))
                    .count()
            })
            .collect()
    }

    /// Builds a cluster of `count` nodes: node 0 first, then each joins a random earlier
    /// node, 20 ms apart. Returns the time until every node lists every other as alive.
    pub fn form_cluster(
        &mut self,
        count: usize,
        tune: impl Fn(&mut MembershipConfig),
        limit: Duration,
    ) -> Option<Duration> {
        let first = self.nodes.len();
        let nodes = self.add_nodes(count, tune);
        for (n, node) in nodes.iter().enumerate().skip(1) {
            let seed = first + self.rng.random_range(0..n);
            self.join(*node, &[seed]);
            self.run_for(Duration::from_millis(20));
        }
        let everyone = nodes.clone();
        self.run_until(limit, Duration::from_millis(500), |sim| {
            sim.all_see_alive(&everyone, &everyone)
        })
    }
}

pub fn is_join_of(name: &str) -> impl Fn(&MemberEvent) -> bool + '_ {
    move |event| matches!(event, MemberEvent::Join(info) if info.name == name)
}

pub fn is_failed_of(name: &str) -> impl Fn(&MemberEvent) -> bool + '_ {
    move |event| matches!(event, MemberEvent::Failed(info) if info.name == name)
}

pub fn is_leave_of(name: &str) -> impl Fn(&MemberEvent) -> bool + '_ {
    move |event| matches!(event, MemberEvent::Leave(info) if info.name == name)
}

pub fn is_any_failed(event: &MemberEvent) -> bool {
    matches!(event, MemberEvent::Failed(_))
}

/// The largest of `times`, or `None` if any observer never saw the event.
pub fn all_within(times: &[Option<Duration>]) -> Option<Duration> {
    times
        .iter()
        .try_fold(Duration::ZERO, |max, t| t.map(|t| max.max(t)))
}

pub fn percentile(samples: &mut [Duration], p: f64) -> Duration {
    assert!(!samples.is_empty());
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1]
}
