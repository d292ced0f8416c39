//! The state machine: applies committed commands to the metadata image and publishes each new
//! image to the broker. It lives in memory and is rebuilt on start from the last snapshot plus
//! the committed log after it.

use std::io;
use std::sync::{Arc, RwLock};

use futures_util::StreamExt;
use openraft::storage::{EntryResponder, RaftStateMachine};
use openraft::{EntryPayload, RaftSnapshotBuilder};
use serde::{Deserialize, Serialize};
use skiff_metadata::{MetadataImage, MetadataRecord};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::kv::KvStore;
use crate::store::{RaftDb, CLUSTER_ID_KEY, SNAPSHOT_KEY};
use crate::types::{
    Command, CommandOutcome, LogId, Snapshot, SnapshotMeta, StoredMembership, TypeConfig,
};

/// Receives every new metadata image, in log order, once it is applied.
pub trait MetadataListener: Send + Sync + 'static {
    fn image_changed(&self, image: &Arc<MetadataImage>);
}

/// What the rest of the node reads: the latest image, the cluster id, the applied index.
pub struct SharedState {
    image: RwLock<Arc<MetadataImage>>,
    kv: RwLock<KvStore>,
    cluster_id: RwLock<Option<String>>,
    applied_index: watch::Sender<u64>,
    listener: Arc<dyn MetadataListener>,
}

impl SharedState {
    pub(crate) fn new(cluster_id: Option<String>, listener: Arc<dyn MetadataListener>) -> Self {
        Self {
            image: RwLock::new(Arc::new(MetadataImage::new())),
            kv: RwLock::new(KvStore::default()),
            cluster_id: RwLock::new(cluster_id),
            applied_index: watch::Sender::new(0),
            listener,
        }
    }

    pub fn image(&self) -> Arc<MetadataImage> {
        self.image.read().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Reads the key-value store as this node has applied it.
    pub fn kv<T>(&self, read: impl FnOnce(&KvStore) -> T) -> T {
        read(&self.kv.read().unwrap_or_else(|p| p.into_inner()))
    }

    fn kv_mut(&self) -> std::sync::RwLockWriteGuard<'_, KvStore> {
        self.kv.write().unwrap_or_else(|p| p.into_inner())
    }

    pub fn cluster_id(&self) -> Option<String> {
        self.cluster_id
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    pub(crate) fn set_cluster_id(&self, id: &str) {
        *self.cluster_id.write().unwrap_or_else(|p| p.into_inner()) = Some(id.to_owned());
    }

    pub fn applied_index(&self) -> watch::Receiver<u64> {
        self.applied_index.subscribe()
    }

    fn publish(&self, image: Arc<MetadataImage>) {
        *self.image.write().unwrap_or_else(|p| p.into_inner()) = image.clone();
        self.listener.image_changed(&image);
    }
}

/// The serialized state machine: the image as the records that rebuild it, as KRaft snapshots do.
#[derive(Serialize, Deserialize)]
struct SnapshotData {
    cluster_id: Option<String>,
    metadata_offset: Option<u64>,
    records: Vec<MetadataRecord>,
    #[serde(default)]
    kv: KvStore,
}

#[derive(Serialize, Deserialize)]
struct StoredSnapshot {
    meta: SnapshotMeta,
    data: String,
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

fn rebuild(data: &SnapshotData) -> io::Result<MetadataImage> {
    let mut image = MetadataImage::new();
    if let Some(offset) = data.metadata_offset {
        image
            .apply_batch(offset, &data.records)
            .map_err(|e| invalid(format!("snapshot does not rebuild an image: {e}")))?;
    }
    Ok(image)
}

pub struct StateMachine {
    shared: Arc<SharedState>,
    db: RaftDb,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl StateMachine {
    /// Loads the last snapshot, if any; openraft then re-applies the committed log after it.
    pub(crate) fn open(db: RaftDb, shared: Arc<SharedState>) -> io::Result<Self> {
        let mut machine = Self {
            shared,
            db,
            image: Arc::new(MetadataImage::new()),
            last_applied: None,
            membership: StoredMembership::default(),
        };
        if let Some(stored) = machine.db.get_meta::<StoredSnapshot>(SNAPSHOT_KEY)? {
            let data: SnapshotData = serde_json::from_str(&stored.data).map_err(invalid)?;
            machine.load(&stored.meta, &data)?;
        }
        Ok(machine)
    }

    fn load(&mut self, meta: &SnapshotMeta, data: &SnapshotData) -> io::Result<()> {
        if let Some(id) = &data.cluster_id {
            self.adopt_cluster_id(id)?;
        }
        self.image = Arc::new(rebuild(data)?);
        *self.shared.kv_mut() = data.kv.clone();
        self.last_applied = meta.last_log_id;
        self.membership = meta.last_membership.clone();
        self.shared.publish(self.image.clone());
        self.shared
            .applied_index
            .send_replace(self.last_applied.map_or(0, |id| id.index));
        Ok(())
    }

    /// Records the cluster id the log carries; a node of another cluster refuses it.
    fn adopt_cluster_id(&self, id: &str) -> io::Result<()> {
        match self.shared.cluster_id() {
            Some(known) if known == id => Ok(()),
            Some(known) => Err(invalid(format!(
                "this data dir belongs to cluster {known}, but the log is of cluster {id}"
            ))),
            None => {
                self.db.put_meta(CLUSTER_ID_KEY, &id)?;
                self.shared.set_cluster_id(id);
                info!(cluster_id = id, "joined cluster");
                Ok(())
            }
        }
    }

    fn apply_command(&mut self, index: u64, command: &Command) -> io::Result<CommandOutcome> {
        Ok(match command {
            Command::Bootstrap { cluster_id } => {
                self.adopt_cluster_id(cluster_id)?;
                CommandOutcome::Applied
            }
            Command::Kv(ops) => {
                let mut kv = self.shared.kv_mut();
                CommandOutcome::Kv(ops.iter().map(|op| kv.apply(op)).collect())
            }
            Command::Metadata(records) => match self.image.with_batch(index, records) {
                Ok(image) => {
                    self.image = Arc::new(image);
                    CommandOutcome::Applied
                }
                Err(e) => {
                    warn!(index, error = %e, "metadata batch rejected");
                    CommandOutcome::Rejected {
                        reason: e.to_string(),
                    }
                }
            },
        })
    }
}

impl RaftStateMachine<TypeConfig> for StateMachine {
    type SnapshotData = Vec<u8>;
    type SnapshotBuilder = SnapshotBuilder;

    async fn applied_state(&mut self) -> Result<(Option<LogId>, StoredMembership), io::Error> {
        Ok((self.last_applied, self.membership.clone()))
    }

    async fn apply<Strm>(&mut self, mut entries: Strm) -> Result<(), io::Error>
    where
        Strm: futures_util::Stream<Item = Result<EntryResponder<TypeConfig>, io::Error>>
            + Unpin
            + Send,
    {
        let before = self.image.clone();
        while let Some(item) = entries.next().await {
            let (entry, responder) = item?;
            let outcome = match &entry.payload {
                EntryPayload::Blank => CommandOutcome::Applied,
                EntryPayload::Normal(command) => self.apply_command(entry.log_id.index, command)?,
                EntryPayload::Membership(membership) => {
                    self.membership = StoredMembership::new(Some(entry.log_id), membership.clone());
                    CommandOutcome::Applied
                }
            };
            self.last_applied = Some(entry.log_id);
            if let Some(responder) = responder {
                responder.send(outcome);
            }
        }
        if !Arc::ptr_eq(&before, &self.image) {
            self.shared.publish(self.image.clone());
        }
        self.shared
            .applied_index
            .send_replace(self.last_applied.map_or(0, |id| id.index));
        Ok(())
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        SnapshotBuilder {
            db: self.db.clone(),
            cluster_id: self.shared.cluster_id(),
            kv: self.shared.kv(Clone::clone),
            image: self.image.clone(),
            last_applied: self.last_applied,
            membership: self.membership.clone(),
        }
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta,
        snapshot: Self::SnapshotData,
    ) -> Result<(), io::Error> {
        let text = String::from_utf8(snapshot).map_err(invalid)?;
        let data: SnapshotData = serde_json::from_str(&text).map_err(invalid)?;
        self.load(meta, &data)?;
        store_snapshot(
            &self.db,
            &StoredSnapshot {
                meta: meta.clone(),
                data: text,
            },
        )?;
        info!(last_log_id = ?meta.last_log_id, "installed metadata snapshot");
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot>, io::Error> {
        Ok(self
            .db
            .get_meta::<StoredSnapshot>(SNAPSHOT_KEY)?
            .map(|stored| Snapshot {
                meta: stored.meta,
                snapshot: stored.data.into_bytes(),
            }))
    }
}

/// A consistent copy of the state machine taken when openraft asks for a snapshot.
pub struct SnapshotBuilder {
    db: RaftDb,
    cluster_id: Option<String>,
    kv: KvStore,
    image: Arc<MetadataImage>,
    last_applied: Option<LogId>,
    membership: StoredMembership,
}

impl RaftSnapshotBuilder<TypeConfig> for SnapshotBuilder {
    type SnapshotData = Vec<u8>;

    async fn build_snapshot(&mut self) -> Result<Snapshot, io::Error> {
        let data = SnapshotData {
            cluster_id: self.cluster_id.clone(),
            metadata_offset: self.image.offset(),
            records: self.image.to_records(),
            kv: std::mem::take(&mut self.kv),
        };
        let text = serde_json::to_string(&data).map_err(invalid)?;
        let meta = SnapshotMeta {
            last_log_id: self.last_applied,
            last_membership: self.membership.clone(),
        };
        store_snapshot(
            &self.db,
            &StoredSnapshot {
                meta: meta.clone(),
                data: text.clone(),
            },
        )?;
        Ok(Snapshot {
            meta,
            snapshot: text.into_bytes(),
        })
    }
}

/// Keeps the newest snapshot: a build that ran while a newer one was installed from the leader
/// must not replace it, because the log below the installed one is already purged.
fn store_snapshot(db: &RaftDb, snapshot: &StoredSnapshot) -> io::Result<()> {
    db.replace_meta(SNAPSHOT_KEY, snapshot, |stored: &StoredSnapshot| {
        stored.meta.last_log_id > snapshot.meta.last_log_id
    })
}
