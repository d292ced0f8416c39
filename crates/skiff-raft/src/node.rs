//! `MetadataRaft`: one node of the metadata quorum. It owns the openraft instance, its store and
//! its transport, and offers the rest of Skiff three things: the applied image, cluster writes
//! that reach the controller from any node, and membership changes.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::async_runtime::WatchReceiver;
use openraft::error::{ClientWriteError, ForwardToLeader, RaftError};
use openraft::Instant as _;
use openraft::{
    BasicNode, ChangeMembers, Config, ReadPolicy, ServerState, SnapshotPolicy, TryAsRef,
};
use serde::Serialize;
use skiff_metadata::{decide, MetadataImage, MetadataRecord};
use thiserror::Error;
use tokio::net::TcpListener;
use tracing::{info, warn};
use uuid::Uuid;

use crate::forward::{ForwardReply, ForwardRequest, SubmitError, WriteError};
use crate::kv::{self, KvEntry, KvOp, KvStore, KvWriteResult};
use crate::kv_batcher::KvBatcher;
use crate::network::{
    self, ClusterSecret, Envelope, LocalIdentity, NetworkFactory, PeerClient, Reply, Rpc,
};
use crate::peer::{PeerCaller, PeerService};
use crate::state_machine::{MetadataListener, SharedState, StateMachine};
use crate::store::{LogStore, RaftDb, CLUSTER_ID_KEY, NODE_ID_KEY};
use crate::types::{Command, CommandOutcome, Raft, Snapshot, TypeConfig};

#[derive(Debug, Clone)]
pub struct RaftSettings {
    pub node_id: u64,
    /// Where the transport listens.
    pub listen_addr: SocketAddr,
    /// Where peers reach this node; the listen address unless it is unspecified (0.0.0.0).
    pub advertised_addr: String,
    pub data_dir: PathBuf,
    pub heartbeat_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries; older entries are then purged.
    pub snapshot_entries: u64,
    /// How long a cluster write waits for a controller before it fails.
    pub write_timeout: Duration,
    /// Peers must prove they know it, and this node proves it to them; none: open to anyone.
    pub cluster_secret: Option<ClusterSecret>,
}

impl RaftSettings {
    pub fn new(node_id: u64, listen_addr: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            node_id,
            listen_addr,
            advertised_addr: listen_addr.to_string(),
            data_dir,
            heartbeat_ms: 80,
            election_timeout_min_ms: 350,
            election_timeout_max_ms: 600,
            snapshot_entries: 1000,
            write_timeout: Duration::from_secs(10),
            cluster_secret: None,
        }
    }
}

#[derive(Debug, Error)]
pub enum StartError {
    #[error("metadata storage: {0}")]
    Storage(#[from] io::Error),
    #[error("invalid Raft settings: {0}")]
    Config(String),
    #[error("cannot listen for Raft on {addr}: {source}")]
    Bind { addr: SocketAddr, source: io::Error },
    #[error("Raft failed to start: {0}")]
    Raft(String),
    #[error("this data dir belongs to node {stored}, not {given}: a node's id is fixed with its data dir")]
    NodeIdChanged { stored: u64, given: u64 },
}

#[derive(Debug, Error)]
pub enum BootstrapError {
    #[error("this data dir already belongs to a cluster{}; it restarts without --bootstrap", .0.as_deref().map(|id| format!(" ({id})")).unwrap_or_default())]
    AlreadyInitialized(Option<String>),
    #[error("bootstrap failed: {0}")]
    Raft(String),
}

/// `GET /raft/stats`.
#[derive(Debug, Clone, Serialize)]
pub struct RaftStats {
    pub node_id: u64,
    pub cluster_id: Option<String>,
    pub role: String,
    pub term: u64,
    pub leader: Option<u64>,
    pub commit_index: Option<u64>,
    pub applied_index: Option<u64>,
    pub last_log_index: Option<u64>,
    pub snapshot_index: Option<u64>,
    pub metadata_offset: Option<u64>,
    pub voters: Vec<RaftPeer>,
    pub observers: Vec<RaftPeer>,
    /// Leader only: per follower, the last replicated index and ms since the last heartbeat ack.
    pub followers: Vec<FollowerStats>,
}

#[derive(Debug, Clone, Serialize)]
pub struct RaftPeer {
    pub node_id: u64,
    pub raft_address: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct FollowerStats {
    pub node_id: u64,
    pub matched_index: Option<u64>,
    pub last_contact_ms: Option<u64>,
}

/// The voters and observers (learners) of the current membership, with their addresses.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Membership {
    pub voters: BTreeMap<u64, String>,
    pub learners: BTreeMap<u64, String>,
}

pub struct MetadataRaft {
    raft: Raft,
    shared: Arc<SharedState>,
    db: RaftDb,
    settings: RaftSettings,
    /// Serializes controller decisions, so each is made on the image its predecessor produced.
    controller: tokio::sync::Mutex<()>,
    identity: LocalIdentity,
    /// Connections that forward requests to the leader, several so concurrent requests from
    /// one node do not queue behind each other.
    forward_pool: Vec<tokio::sync::Mutex<Option<(u64, PeerClient)>>>,
    forward_next: std::sync::atomic::AtomicUsize,
    kv_batcher: KvBatcher,
    /// Answers binary peer requests once the broker sets it; until then they are refused.
    peer_service: std::sync::RwLock<Option<Arc<dyn PeerService>>>,
    /// The leader this node last accepted an append (or heartbeat) from, and when.
    leader_contact: std::sync::Mutex<Option<(u64, std::time::Instant)>>,
}

/// How far a stale read may be behind.
#[derive(Debug, Clone, Serialize)]
pub struct Staleness {
    pub applied_index: u64,
    /// The highest commit index this node has heard of; the cluster's may be higher.
    pub known_commit_index: u64,
    pub leader: Option<u64>,
}

const FORWARD_CONNECTIONS: usize = 8;

struct Handler {
    node: std::sync::Weak<MetadataRaft>,
}

impl MetadataRaft {
    /// Opens the node's store, starts its transport and Raft. A node with state rejoins its
    /// cluster on its own; a fresh one waits to be bootstrapped or added by a leader.
    pub async fn start(
        settings: RaftSettings,
        listener: Arc<dyn MetadataListener>,
    ) -> Result<Arc<Self>, StartError> {
        let db = RaftDb::open(&settings.data_dir)?;
        match db.get_meta::<u64>(NODE_ID_KEY)? {
            Some(stored) if stored != settings.node_id => {
                return Err(StartError::NodeIdChanged {
                    stored,
                    given: settings.node_id,
                })
            }
            Some(_) => {}
            None => db.put_meta(NODE_ID_KEY, &settings.node_id)?,
        }
        let cluster_id: Option<String> = db.get_meta(CLUSTER_ID_KEY)?;
        let committed = db.committed()?;
        let shared = Arc::new(SharedState::new(cluster_id, listener));
        let state_machine = StateMachine::open(db.clone(), shared.clone())?;
        let config = Config {
            cluster_name: "skiff".into(),
            heartbeat_interval: settings.heartbeat_ms,
            election_timeout_min: settings.election_timeout_min_ms,
            election_timeout_max: settings.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(settings.snapshot_entries),
            max_in_snapshot_log_to_keep: settings.snapshot_entries / 10,
            enable_pre_vote: Some(true),
            ..Default::default()
        }
        .validate()
        .map_err(|e| StartError::Config(e.to_string()))?;
        let secret = settings.cluster_secret.clone();
        let node_id = settings.node_id;
        let identity = LocalIdentity {
            node_id: settings.node_id,
            shared: shared.clone(),
            secret: secret.clone(),
        };
        let tcp = TcpListener::bind(settings.listen_addr)
            .await
            .map_err(|source| StartError::Bind {
                addr: settings.listen_addr,
                source,
            })?;
        let raft = Raft::new(
            settings.node_id,
            Arc::new(config),
            NetworkFactory {
                identity: identity.clone(),
            },
            LogStore::new(db.clone())?,
            state_machine,
        )
        .await
        .map_err(|e| StartError::Raft(e.to_string()))?;
        // The committed log after the last snapshot is re-applied before anything reads the image.
        if let Some(committed) = committed {
            let mut applied = shared.applied_index();
            tokio::time::timeout(
                Duration::from_secs(60),
                applied.wait_for(|&a| a >= committed.index),
            )
            .await
            .map_err(|_| {
                StartError::Raft(format!(
                    "replaying the metadata log up to index {} took over a minute",
                    committed.index
                ))
            })?
            .map_err(|e| StartError::Raft(e.to_string()))?;
        }
        let kv_batcher = KvBatcher::start(raft.clone(), settings.write_timeout);
        let node = Arc::new(Self {
            raft,
            shared,
            db,
            settings,
            controller: tokio::sync::Mutex::new(()),
            identity,
            forward_pool: (0..FORWARD_CONNECTIONS)
                .map(|_| tokio::sync::Mutex::new(None))
                .collect(),
            forward_next: std::sync::atomic::AtomicUsize::new(0),
            kv_batcher,
            peer_service: std::sync::RwLock::new(None),
            leader_contact: std::sync::Mutex::new(None),
        });
        tokio::spawn(network::serve(
            tcp,
            Arc::new(Handler {
                node: Arc::downgrade(&node),
            }),
            secret,
            node_id,
        ));
        Ok(node)
    }

    pub fn node_id(&self) -> u64 {
        self.settings.node_id
    }

    pub fn advertised_addr(&self) -> &str {
        &self.settings.advertised_addr
    }

    /// True when this data dir has taken part in a cluster before.
    pub fn has_state(&self) -> io::Result<bool> {
        self.db.has_state()
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.shared.cluster_id()
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.shared.image()
    }

    /// Starts a new cluster with this node as its only voter and a fresh cluster id.
    pub async fn bootstrap(&self) -> Result<String, BootstrapError> {
        if self
            .has_state()
            .map_err(|e| BootstrapError::Raft(e.to_string()))?
        {
            return Err(BootstrapError::AlreadyInitialized(self.cluster_id()));
        }
        let mut members = BTreeMap::new();
        members.insert(
            self.settings.node_id,
            BasicNode {
                addr: self.settings.advertised_addr.clone(),
            },
        );
        self.raft
            .initialize(members)
            .await
            .map_err(|e| BootstrapError::Raft(e.to_string()))?;
        let cluster_id = Uuid::new_v4().simple().to_string();
        let deadline = Instant::now() + self.settings.write_timeout;
        loop {
            match self
                .bounded(self.raft.client_write(Command::Bootstrap {
                    cluster_id: cluster_id.clone(),
                }))
                .await
                .map_err(|e| BootstrapError::Raft(e.to_string()))?
            {
                Ok(_) => break,
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(_)))
                    if Instant::now() < deadline =>
                {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(BootstrapError::Raft(e.to_string())),
            }
        }
        info!(
            cluster_id,
            node_id = self.settings.node_id,
            "bootstrapped a new cluster"
        );
        Ok(cluster_id)
    }

    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow_watched().current_leader == Some(self.settings.node_id)
    }

    /// The Raft term this node is in: a leadership is identified by it.
    pub fn current_term(&self) -> u64 {
        self.raft.metrics().borrow_watched().current_term
    }

    pub fn leader(&self) -> Option<u64> {
        self.raft.metrics().borrow_watched().current_leader
    }

    /// The leader this node last accepted an append or heartbeat from, and when. On a new
    /// leader this tells how long its predecessor has been silent: the new controller can
    /// count that broker's session from its last heartbeat rather than from the election.
    pub fn last_leader_contact(&self) -> Option<(u64, std::time::Instant)> {
        *self
            .leader_contact
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until the local state machine has applied `index`, up to `timeout`.
    pub async fn wait_applied(&self, index: u64, timeout: Duration) -> bool {
        let mut applied = self.shared.applied_index();
        tokio::time::timeout(timeout, applied.wait_for(|&a| a >= index))
            .await
            .is_ok_and(|r| r.is_ok())
    }

    /// Serves binary peer requests from now on; before this is called they are refused.
    pub fn set_peer_service(&self, service: Arc<dyn PeerService>) {
        *self.peer_service.write().unwrap_or_else(|p| p.into_inner()) = Some(service);
    }

    /// A caller to node `target`, connecting on first use to the address the current Raft
    /// membership gives for it (error if the target is not a member).
    pub fn peer_caller(&self, target: u64) -> PeerCaller {
        // The metrics, not the Raft handle: a caller kept by the broker must not keep Raft alive.
        let metrics = self.raft.metrics();
        let address = move || {
            metrics
                .borrow_watched()
                .membership_config
                .membership()
                .get_node(&target)
                .map(|node| node.addr.clone())
        };
        PeerCaller::new(self.identity.clone(), target, Box::new(address))
    }

    /// The service for a binary request from `from`, which must be a member: unlike Raft
    /// messages, not even a node without a membership yet lets a stranger in.
    fn peer_service(&self, from: u64) -> Result<Arc<dyn PeerService>, String> {
        let member = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .membership()
            .get_node(&from)
            .is_some();
        if !member || from == self.settings.node_id {
            return Err(format!("node {from} is not a member of this cluster"));
        }
        self.peer_service
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
            .ok_or_else(|| "this node serves no peer requests yet".to_owned())
    }

    pub fn membership(&self) -> Membership {
        // Only the membership is copied: this runs for every incoming Raft message.
        let stored = self
            .raft
            .metrics()
            .borrow_watched()
            .membership_config
            .clone();
        let config = stored.membership();
        let voters: BTreeSet<u64> = config.voter_ids().collect();
        let mut membership = Membership::default();
        for (id, node) in config.nodes() {
            let entry = (*id, node.addr.clone());
            if voters.contains(id) {
                membership.voters.insert(entry.0, entry.1);
            } else {
                membership.learners.insert(entry.0, entry.1);
            }
        }
        membership
    }

    pub fn stats(&self) -> RaftStats {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let membership = self.membership();
        let peers = |m: &BTreeMap<u64, String>| {
            m.iter()
                .map(|(id, addr)| RaftPeer {
                    node_id: *id,
                    raft_address: addr.clone(),
                })
                .collect()
        };
        let followers = match &metrics.replication {
            Some(replication) => replication
                .iter()
                .filter(|(id, _)| **id != self.settings.node_id)
                .map(|(id, matched)| FollowerStats {
                    node_id: *id,
                    matched_index: matched.map(|l| l.index),
                    last_contact_ms: metrics
                        .heartbeat
                        .as_ref()
                        .and_then(|h| h.get(id).cloned().flatten())
                        .map(|at| at.elapsed().as_millis() as u64),
                })
                .collect(),
            None => Vec::new(),
        };
        RaftStats {
            node_id: self.settings.node_id,
            cluster_id: self.cluster_id(),
            role: match metrics.state {
                ServerState::Leader => "leader",
                ServerState::Follower => "follower",
                ServerState::Candidate => "candidate",
                ServerState::Learner => "observer",
                ServerState::Shutdown => "shutdown",
            }
            .to_owned(),
            term: metrics.current_term,
            leader: metrics.current_leader,
            commit_index: metrics.cluster_committed.map(|l| l.index),
            applied_index: metrics.last_applied.map(|l| l.index),
            last_log_index: metrics.last_log_index,
            snapshot_index: metrics.snapshot.map(|l| l.index),
            metadata_offset: self.image().offset(),
            voters: peers(&membership.voters),
            observers: peers(&membership.learners),
            followers,
        }
    }

    /// Sends a request to the leader, wherever it is: runs it here when this node leads,
    /// forwards it otherwise. Retries while no leader is known or the leader cannot be
    /// reached, until `write_timeout`; a request that may have reached the leader is not
    /// retried, so a write is never applied twice.
    async fn call_leader(&self, request: ForwardRequest) -> Result<ForwardReply, SubmitError> {
        let deadline = Instant::now() + self.settings.write_timeout;
        loop {
            let attempt = match self.leader() {
                Some(id) if id == self.settings.node_id => self.execute(request.clone()).await,
                Some(id) => self.forward(id, &request, deadline).await,
                None => Err(self.not_leader()),
            };
            match attempt {
                Err(SubmitError::NotLeader { .. }) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(SubmitError::NotLeader { .. }) => {
                    return Err(SubmitError::Unavailable(format!(
                        "no leader was elected within {:?}",
                        self.settings.write_timeout
                    )))
                }
                other => return other,
            }
        }
    }

    /// One forwarding attempt. Failing to connect counts as "not leader" (nothing was sent);
    /// a failure after sending is "unavailable" (the outcome is unknown).
    async fn forward(
        &self,
        leader: u64,
        request: &ForwardRequest,
        deadline: Instant,
    ) -> Result<ForwardReply, SubmitError> {
        let Some(addr) = self.membership_addr(leader) else {
            return Err(SubmitError::NotLeader { leader: None });
        };
        let mut slot = self.forward_slot().await;
        let client = match &mut *slot {
            Some((target, client)) if *target == leader => client,
            empty => {
                &mut empty
                    .insert((leader, PeerClient::new(self.identity.clone(), leader, addr)))
                    .1
            }
        };
        let remaining = deadline.saturating_duration_since(Instant::now());
        match client.call(Rpc::Forward(request.clone()), remaining).await {
            Ok(Reply::Forward(ForwardReply::Failed(e))) => Err(e),
            Ok(Reply::Forward(reply)) => Ok(reply),
            Ok(Reply::Refused(reason)) => Err(SubmitError::Invalid(reason)),
            Ok(_) => Err(SubmitError::Unavailable(
                "the leader answered with the wrong message".into(),
            )),
            Err(e) if e.kind() == io::ErrorKind::NotConnected => {
                Err(SubmitError::NotLeader { leader: None })
            }
            Err(e) => Err(SubmitError::Unavailable(format!(
                "the outcome is unknown: {e}"
            ))),
        }
    }

    /// A free connection of the forwarding pool, or the first one to become free.
    async fn forward_slot(&self) -> tokio::sync::MutexGuard<'_, Option<(u64, PeerClient)>> {
        for slot in &self.forward_pool {
            if let Ok(guard) = slot.try_lock() {
                return guard;
            }
        }
        let index = self
            .forward_next
            .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            % self.forward_pool.len();
        self.forward_pool[index].lock().await
    }

    /// Sends a cluster write to the controller, wherever it is, and waits until this node has
    /// applied its result.
    pub async fn submit(&self, request: ForwardRequest) -> Result<u64, SubmitError> {
        let log_index = match self.call_leader(request).await? {
            ForwardReply::Done { log_index } | ForwardReply::KvWritten { log_index, .. } => {
                log_index
            }
            _ => {
                return Err(SubmitError::Unavailable(
                    "the leader answered with the wrong message".into(),
                ))
            }
        };
        if !self
            .wait_applied(log_index, self.settings.write_timeout)
            .await
        {
            return Err(SubmitError::Unavailable(format!(
                "the change committed at index {log_index} but this node did not apply it in time"
            )));
        }
        Ok(log_index)
    }

    /// A key-value write, batched with others on the leader; the result and its log index.
    pub async fn kv_write(&self, op: KvOp) -> Result<(u64, KvWriteResult), SubmitError> {
        kv::validate(&op).map_err(|e| SubmitError::Invalid(e.to_string()))?;
        match self.call_leader(ForwardRequest::KvWrite(op)).await? {
            ForwardReply::KvWritten { log_index, result } => Ok((log_index, result)),
            _ => Err(SubmitError::Unavailable(
                "the leader answered with the wrong message".into(),
            )),
        }
    }

    /// A linearizable read of one key, served by the leader after it confirmed its leadership
    /// with a quorum (ReadIndex), without writing to the log.
    pub async fn kv_get(&self, key: &str) -> Result<Option<KvEntry>, SubmitError> {
        match self
            .call_leader(ForwardRequest::KvGet {
                key: key.to_owned(),
            })
            .await?
        {
            ForwardReply::KvValue(entry) => Ok(entry),
            _ => Err(SubmitError::Unavailable(
                "the leader answered with the wrong message".into(),
            )),
        }
    }

    /// A linearizable read of up to `limit` keys starting with `prefix`, and whether more exist.
    pub async fn kv_list(
        &self,
        prefix: &str,
        limit: usize,
    ) -> Result<(Vec<(String, KvEntry)>, bool), SubmitError> {
        let request = ForwardRequest::KvList {
            prefix: prefix.to_owned(),
            limit,
        };
        match self.call_leader(request).await? {
            ForwardReply::KvItems { items, more } => Ok((items, more)),
            _ => Err(SubmitError::Unavailable(
                "the leader answered with the wrong message".into(),
            )),
        }
    }

    /// Reads this node's own copy of the store (`consistency=stale`), with how far behind the
    /// cluster it may be.
    pub fn kv_stale<T>(&self, read: impl FnOnce(&KvStore) -> T) -> (T, Staleness) {
        let metrics = self.raft.metrics().borrow_watched().clone();
        let staleness = Staleness {
            applied_index: metrics.last_applied.map_or(0, |l| l.index),
            known_commit_index: metrics.local_committed.map_or(0, |l| l.index),
            leader: metrics.current_leader,
        };
        (self.shared.kv(read), staleness)
    }

    /// Bounds a call into Raft: a leader cut off from its quorum would otherwise wait for
    /// commits that never come. The write may still commit later; its outcome is unknown.
    async fn bounded<T>(
        &self,
        call: impl std::future::Future<Output = T>,
    ) -> Result<T, SubmitError> {
        tokio::time::timeout(self.settings.write_timeout, call)
            .await
            .map_err(|_| {
                SubmitError::Unavailable(format!(
                    "no quorum answered within {:?}",
                    self.settings.write_timeout
                ))
            })
    }

    fn membership_addr(&self, id: u64) -> Option<String> {
        let m = self.membership();
        m.voters.get(&id).or_else(|| m.learners.get(&id)).cloned()
    }

    /// The leader to retry at: another node, if one is known.
    fn other_leader(&self) -> Option<u64> {
        self.leader().filter(|&l| l != self.settings.node_id)
    }

    fn not_leader(&self) -> SubmitError {
        SubmitError::NotLeader {
            leader: self.other_leader(),
        }
    }

    /// A linearizable read fails only for want of leadership or of a quorum: both pass.
    fn read_error<E>(&self, e: openraft::error::RaftError<TypeConfig, E>) -> SubmitError
    where
        E: std::fmt::Display + std::fmt::Debug + TryAsRef<ForwardToLeader<TypeConfig>>,
    {
        if e.forward_to_leader().is_some() {
            return self.not_leader();
        }
        SubmitError::Unavailable(e.to_string())
    }

    fn write_error(&self, e: WriteError) -> SubmitError {
        SubmitError::from_write(e, self.other_leader())
    }

    /// Runs a forwarded request on this node, which must be the leader.
    async fn execute(&self, request: ForwardRequest) -> Result<ForwardReply, SubmitError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let done = |log_index| ForwardReply::Done { log_index };
        match request {
            ForwardRequest::Controller {
                request,
                validate_only,
            } => {
                let _decisions = self.controller.lock().await;
                let read = self
                    .bounded(self.raft.ensure_linearizable(ReadPolicy::ReadIndex))
                    .await?
                    .map_err(|e| self.read_error(e))?;
                let image = self.shared.image();
                let records = decide(&image, &request)?;
                if validate_only {
                    return Ok(done(read.log_id().index));
                }
                self.write(Command::Metadata(records)).await.map(done)
            }
            ForwardRequest::Join { node_id, raft_addr } => {
                self.join(node_id, raft_addr).await.map(done)
            }
            ForwardRequest::Remove { node_id } => self.remove(node_id).await.map(done),
            ForwardRequest::KvWrite(op) => {
                kv::validate(&op).map_err(|e| SubmitError::Invalid(e.to_string()))?;
                let (log_index, result) = self.kv_batcher.write(op).await?;
                Ok(ForwardReply::KvWritten { log_index, result })
            }
            ForwardRequest::KvGet { key } => {
                self.read_barrier().await?;
                Ok(ForwardReply::KvValue(
                    self.shared.kv(|store| store.get(&key).cloned()),
                ))
            }
            ForwardRequest::KvList { prefix, limit } => {
                self.read_barrier().await?;
                let (items, more) = self.shared.kv(|store| store.list(&prefix, limit));
                Ok(ForwardReply::KvItems { items, more })
            }
        }
    }

    /// ReadIndex: confirms leadership with a quorum and waits until everything committed
    /// before the read is applied here.
    async fn read_barrier(&self) -> Result<(), SubmitError> {
        let read = self
            .bounded(self.raft.ensure_linearizable(ReadPolicy::ReadIndex))
            .await?
            .map_err(|e| self.read_error(e))?;
        let index = read.log_id().index;
        if self.wait_applied(index, self.settings.write_timeout).await {
            Ok(())
        } else {
            Err(SubmitError::Unavailable(format!(
                "index {index} was not applied in time"
            )))
        }
    }

    async fn write(&self, command: Command) -> Result<u64, SubmitError> {
        let response = self
            .bounded(self.raft.client_write(command))
            .await?
            .map_err(|e| self.write_error(e))?;
        match response.data {
            CommandOutcome::Applied => Ok(response.log_id.index),
            CommandOutcome::Rejected { reason } => Err(SubmitError::Rejected(reason)),
            CommandOutcome::Kv(_) => Err(SubmitError::Rejected(
                "a metadata write was answered as a key-value write".into(),
            )),
        }
    }

    async fn change(
        &self,
        change: ChangeMembers<u64, BasicNode>,
        retain: bool,
    ) -> Result<u64, SubmitError> {
        let response = self
            .bounded(self.raft.change_membership(change, retain))
            .await?
            .map_err(|e| self.write_error(e))?;
        Ok(response.log_id.index)
    }

    /// Adds a node as an observer, waits for it to catch up, then makes it a voter if that
    /// brings the voter count to the next odd number within `max_voters`.
    async fn join(&self, node_id: u64, raft_addr: String) -> Result<u64, SubmitError> {
        let membership = self.membership();
        if let Some(existing) = membership
            .voters
            .get(&node_id)
            .or_else(|| membership.learners.get(&node_id))
        {
            if *existing != raft_addr {
                return Err(SubmitError::Invalid(format!(
                    "node id {node_id} is already a member at {existing}; node ids are unique, and a new disk needs a new id"
                )));
            }
        }
        if let Some((other, _)) = membership
            .voters
            .iter()
            .chain(membership.learners.iter())
            .find(|(id, addr)| **id != node_id && **addr == raft_addr)
        {
            return Err(SubmitError::Invalid(format!(
                "{raft_addr} is already the address of node {other}"
            )));
        }
        self.add_learner(node_id, raft_addr, true).await
    }

    /// Adds a Raft learner (an observer); `caught_up`: wait until it has the log.
    async fn add_learner(
        &self,
        node_id: u64,
        raft_addr: String,
        caught_up: bool,
    ) -> Result<u64, SubmitError> {
        let response = self
            .bounded(
                self.raft
                    .add_learner(node_id, BasicNode { addr: raft_addr }, caught_up),
            )
            .await?
            .map_err(|e| self.write_error(e))?;
        Ok(response.log_id.index)
    }

    /// Takes a node out of the membership. The last voter cannot be removed: the cluster
    /// would have no quorum left to ever change again.
    async fn remove(&self, node_id: u64) -> Result<u64, SubmitError> {
        let membership = self.membership();
        if membership.voters.contains_key(&node_id) {
            if membership.voters.len() == 1 {
                return Err(SubmitError::Invalid(format!(
                    "node {node_id} is the last voter; removing it would leave no quorum"
                )));
            }
            return self
                .change(
                    ChangeMembers::RemoveVoters(BTreeSet::from([node_id])),
                    false,
                )
                .await;
        }
        if membership.learners.contains_key(&node_id) {
            return self
                .change(ChangeMembers::RemoveNodes(BTreeSet::from([node_id])), false)
                .await;
        }
        Err(SubmitError::Invalid(format!(
            "node {node_id} is not a member"
        )))
    }

    /// Replaces the voter set; nodes that stop voting stay as observers. Leader only.
    pub async fn set_voters(&self, voters: BTreeSet<u64>) -> Result<u64, SubmitError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.change(ChangeMembers::ReplaceAllVoters(voters), true)
            .await
    }

    /// Adds an observer without waiting for it to catch up. Leader only.
    pub async fn add_observer(&self, node_id: u64, raft_addr: String) -> Result<u64, SubmitError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.add_learner(node_id, raft_addr, false).await
    }

    /// Removes a node entirely. Leader only.
    pub async fn remove_node(&self, node_id: u64) -> Result<u64, SubmitError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        self.remove(node_id).await
    }

    /// Hands leadership to the most up-to-date other voter, if any, then stops Raft. Followers
    /// then elect without waiting out an election timeout.
    pub async fn shutdown(&self) {
        self.hand_over_leadership().await;
        if let Err(e) = self.raft.shutdown().await {
            warn!(error = %e, "Raft did not shut down cleanly");
        }
    }

    /// On the leader: makes the most caught-up other voter leader and waits (two election
    /// timeouts at most) until it is. A stopping broker calls it first, so that a controller
    /// that goes on running fences it and moves its partition leaderships.
    pub async fn hand_over_leadership(&self) {
        if self.is_leader() {
            let metrics = self.raft.metrics().borrow_watched().clone();
            let best = metrics.replication.as_ref().and_then(|replication| {
                let voters: BTreeSet<u64> =
                    metrics.membership_config.membership().voter_ids().collect();
                replication
                    .iter()
                    .filter(|(id, _)| **id != self.settings.node_id && voters.contains(id))
                    .max_by_key(|(_, matched)| matched.map(|l| l.index))
                    .map(|(id, _)| *id)
            });
            if let Some(to) = best {
                if self.raft.trigger().transfer_leader(to).await.is_ok() {
                    let mut metrics = self.raft.metrics();
                    let me = Some(self.settings.node_id);
                    let moved = tokio::time::timeout(
                        Duration::from_millis(2 * self.settings.election_timeout_max_ms),
                        async {
                            while metrics.borrow_watched().current_leader == me {
                                if metrics.changed().await.is_err() {
                                    break;
                                }
                            }
                        },
                    )
                    .await;
                    info!(
                        to,
                        moved = moved.is_ok(),
                        "transferred controller leadership"
                    );
                }
            }
        }
    }

    /// The checks every message passes before it reaches Raft.
    fn admit(&self, envelope: &Envelope) -> Result<(), String> {
        let mine = self.cluster_id();
        match (&mine, &envelope.cluster_id) {
            (Some(mine), Some(theirs)) if mine != theirs => {
                return Err(format!(
                    "node {} belongs to cluster {theirs}, this node to cluster {mine}",
                    envelope.from
                ))
            }
            (Some(mine), None) if !matches!(envelope.rpc, Rpc::Forward(_)) => {
                return Err(format!(
                    "node {} has no cluster id; this node belongs to cluster {mine}",
                    envelope.from
                ))
            }
            _ => {}
        }
        if envelope.from == self.settings.node_id {
            return Err(format!(
                "node id {} is this node's own id: two nodes share one id",
                envelope.from
            ));
        }
        if !matches!(envelope.rpc, Rpc::Forward(_)) {
            let membership = self.membership();
            let known = membership.voters.contains_key(&envelope.from)
                || membership.learners.contains_key(&envelope.from);
            if !(membership.voters.is_empty() || known) {
                return Err(format!(
                    "node {} is not a member of this cluster",
                    envelope.from
                ));
            }
        }
        Ok(())
    }

    async fn handle(&self, envelope: Envelope) -> Reply {
        if let Err(reason) = self.admit(&envelope) {
            warn!(from = envelope.from, %reason, "refused a Raft message");
            return Reply::Refused(reason);
        }
        let refused = |e: &dyn std::fmt::Display| Reply::Refused(e.to_string());
        match envelope.rpc {
            Rpc::Append(rpc) => match self.raft.append_entries(rpc).await {
                Ok(r) => {
                    if !matches!(r, openraft::raft::AppendEntriesResponse::HigherVote(_)) {
                        *self
                            .leader_contact
                            .lock()
                            .unwrap_or_else(|p| p.into_inner()) =
                            Some((envelope.from, std::time::Instant::now()));
                    }
                    Reply::Append(r)
                }
                Err(e) => refused(&e),
            },
            Rpc::Vote(rpc) => match self.raft.vote(rpc).await {
                Ok(r) => Reply::Vote(r),
                Err(e) => refused(&e),
            },
            Rpc::PreVote(rpc) => match self.raft.pre_vote(rpc).await {
                Ok(r) => Reply::Vote(r),
                Err(e) => refused(&e),
            },
            Rpc::Snapshot { vote, meta, data } => {
                let snapshot = Snapshot {
                    meta,
                    snapshot: data.into_bytes(),
                };
                match self.raft.install_full_snapshot(vote, snapshot).await {
                    Ok(r) => Reply::Snapshot(r),
                    Err(e) => refused(&e),
                }
            }
            Rpc::TransferLeader(rpc) => match self.raft.handle_transfer_leader(rpc).await {
                Ok(r) => Reply::TransferLeader(r),
                Err(e) => refused(&e),
            },
            Rpc::Forward(request) => Reply::Forward(match self.execute(request).await {
                Ok(reply) => reply,
                Err(e) => ForwardReply::Failed(e),
            }),
            Rpc::OpenPeerStream => match self.peer_service(envelope.from) {
                Ok(_) => Reply::PeerStreamOpen,
                Err(reason) => {
                    metrics::counter!("skiff_raft_peer_requests_refused_total", "reason" => "not admitted")
                        .increment(1);
                    warn!(from = envelope.from, %reason, "refused a peer stream");
                    Reply::Refused(reason)
                }
            },
        }
    }

    /// Proposes records decided by this node's own driver, and waits until they are applied
    /// here, so the driver's next plan sees them.
    pub async fn propose(&self, records: Vec<MetadataRecord>) -> Result<u64, SubmitError> {
        if !self.is_leader() {
            return Err(self.not_leader());
        }
        let index = {
            let _decisions = self.controller.lock().await;
            self.write(Command::Metadata(records)).await?
        };
        if !self.wait_applied(index, self.settings.write_timeout).await {
            return Err(SubmitError::Unavailable(format!(
                "index {index} committed but was not applied in time"
            )));
        }
        Ok(index)
    }
}

impl network::RpcHandler for Handler {
    async fn handle(&self, envelope: Envelope) -> Reply {
        match self.node.upgrade() {
            Some(node) => node.handle(envelope).await,
            None => Reply::Refused("this node is shutting down".into()),
        }
    }

    fn peer_service(&self, from: u64) -> Result<Arc<dyn PeerService>, String> {
        match self.node.upgrade() {
            Some(node) => node.peer_service(from),
            None => Err("this node is shutting down".into()),
        }
    }
}
