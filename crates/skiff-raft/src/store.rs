//! The Raft log, vote and committed index in one redb file, `raft.redb` in the data dir. Raft's
//! safety rests on a node never forgetting a vote or an entry it acknowledged, so votes,
//! truncations, appended entries and the committed index are durable (fsynced) before they
//! count; the committed index so that a restarted node rebuilds at least the state it served
//! before, without waiting for the leader. One writer thread
//! commits them in order, grouping whatever queued up during the previous commit into one
//! transaction: one fsync for many appends. Appended entries are readable from memory until
//! their group is on disk.

use std::collections::BTreeMap;
use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{mpsc, Arc, Mutex, MutexGuard};

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition, WriteTransaction};
use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::sync::oneshot;

use crate::types::{Entry, LogId, TypeConfig, Vote};

const LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("log");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");

const VOTE_KEY: &str = "vote";
const COMMITTED_KEY: &str = "committed";
const PURGED_KEY: &str = "last_purged";
pub(crate) const CLUSTER_ID_KEY: &str = "cluster_id";
pub(crate) const NODE_ID_KEY: &str = "node_id";
pub(crate) const SNAPSHOT_KEY: &str = "snapshot";

fn io_err(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

fn decode<T: DeserializeOwned>(bytes: &[u8]) -> io::Result<T> {
    serde_json::from_slice(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
}

fn encode<T: Serialize>(value: &T) -> io::Result<Vec<u8>> {
    serde_json::to_vec(value).map_err(io_err)
}

/// The shared redb database; the log store and the state machine each hold a handle.
#[derive(Clone)]
pub struct RaftDb {
    db: Arc<Database>,
}

impl RaftDb {
    pub fn open(data_dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let path = data_dir.join("raft.redb");
        let db = Database::create(&path)
            .map_err(|e| io::Error::other(format!("cannot open {}: {e}", path.display())))?;
        let txn = db.begin_write().map_err(io_err)?;
        txn.open_table(LOG).map_err(io_err)?;
        txn.open_table(META).map_err(io_err)?;
        txn.commit().map_err(io_err)?;
        Ok(Self { db: Arc::new(db) })
    }

    pub(crate) fn get_meta<T: DeserializeOwned>(&self, key: &str) -> io::Result<Option<T>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(META).map_err(io_err)?;
        match table.get(key).map_err(io_err)? {
            Some(value) => decode(value.value()).map(Some),
            None => Ok(None),
        }
    }

    pub(crate) fn put_meta<T: Serialize>(&self, key: &str, value: &T) -> io::Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(META).map_err(io_err)?;
            table.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    /// Writes `value` under `key` unless `keep` says the value stored there must stay; read and
    /// write are one transaction.
    pub(crate) fn replace_meta<T: Serialize + DeserializeOwned>(
        &self,
        key: &str,
        value: &T,
        keep: impl FnOnce(&T) -> bool,
    ) -> io::Result<()> {
        let bytes = encode(value)?;
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(META).map_err(io_err)?;
            let stored = match table.get(key).map_err(io_err)? {
                Some(stored) => Some(decode::<T>(stored.value())?),
                None => None,
            };
            if stored.as_ref().is_some_and(keep) {
                return Ok(());
            }
            table.insert(key, bytes.as_slice()).map_err(io_err)?;
        }
        txn.commit().map_err(io_err)
    }

    pub(crate) fn committed(&self) -> io::Result<Option<LogId>> {
        Ok(self.get_meta::<Option<LogId>>(COMMITTED_KEY)?.flatten())
    }

    /// True when this data dir has ever taken part in a cluster: a vote, a log entry or a
    /// snapshot. Such a node must never bootstrap again.
    pub fn has_state(&self) -> io::Result<bool> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let meta = txn.open_table(META).map_err(io_err)?;
        let log = txn.open_table(LOG).map_err(io_err)?;
        Ok(meta.get(VOTE_KEY).map_err(io_err)?.is_some()
            || meta.get(SNAPSHOT_KEY).map_err(io_err)?.is_some()
            || log.first().map_err(io_err)?.is_some())
    }

    fn entries(&self, range: (Bound<u64>, Bound<u64>)) -> io::Result<Vec<Entry>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let mut entries = Vec::new();
        for item in table.range::<u64>(range).map_err(io_err)? {
            let (_, value) = item.map_err(io_err)?;
            entries.push(decode(value.value())?);
        }
        Ok(entries)
    }

    fn last_entry(&self) -> io::Result<Option<Entry>> {
        let txn = self.db.begin_read().map_err(io_err)?;
        let table = txn.open_table(LOG).map_err(io_err)?;
        let last = table.last().map_err(io_err)?;
        match last {
            Some((_, value)) => decode(value.value()).map(Some),
            None => Ok(None),
        }
    }
}

/// Runs a redb call on the blocking pool: Kafka requests share the runtime threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}

/// Most queued writes one transaction takes.
const MAX_GROUP: usize = 1024;

type Done = oneshot::Sender<Result<(), String>>;

/// A write waiting for the log writer, in the order Raft issued it.
enum LogWrite {
    /// Entries and the append that queued them (see `Unflushed`); `flushed` tells Raft they
    /// are on disk.
    Append {
        append: u64,
        entries: Vec<(u64, Vec<u8>)>,
        flushed: IOFlushed<TypeConfig>,
    },
    /// The committed index is durable before Raft applies up to it, so a restarted node
    /// rebuilds at least the image it served before (see `MetadataRaft::start`).
    Committed(Vec<u8>, Done),
    Vote(Vec<u8>, Done),
    /// Removes the entries in `range`, and records the purge marker when given.
    Remove {
        range: (Bound<u64>, Bound<u64>),
        purged: Option<Vec<u8>>,
        done: Done,
    },
}

impl LogWrite {
    fn apply(&self, txn: &WriteTransaction) -> Result<(), redb::Error> {
        match self {
            LogWrite::Append { entries, .. } => {
                let mut table = txn.open_table(LOG)?;
                for (index, bytes) in entries {
                    table.insert(*index, bytes.as_slice())?;
                }
            }
            LogWrite::Committed(bytes, _) => {
                txn.open_table(META)?
                    .insert(COMMITTED_KEY, bytes.as_slice())?;
            }
            LogWrite::Vote(bytes, _) => {
                txn.open_table(META)?.insert(VOTE_KEY, bytes.as_slice())?;
            }
            LogWrite::Remove { range, purged, .. } => {
                txn.open_table(LOG)?
                    .retain_in::<u64, _>(*range, |_, _| false)?;
                if let Some(marker) = purged {
                    txn.open_table(META)?
                        .insert(PURGED_KEY, marker.as_slice())?;
                }
            }
        }
        Ok(())
    }

    fn complete(self, result: &Result<(), String>, unflushed: &Unflushed) {
        match self {
            LogWrite::Append {
                append,
                entries,
                flushed,
            } => {
                if result.is_ok() {
                    unflushed.forget(append, entries.iter().map(|(index, _)| *index));
                }
                flushed.io_completed(result.clone().map_err(io::Error::other));
            }
            LogWrite::Committed(_, done)
            | LogWrite::Vote(_, done)
            | LogWrite::Remove { done, .. } => {
                let _ = done.send(result.clone());
            }
        }
    }
}

/// Appended entries not yet on disk, by index, with the append that wrote them: a group that
/// commits forgets only its own entries, never a later append's at the same index.
#[derive(Clone, Default)]
struct Unflushed(Arc<Mutex<BTreeMap<u64, (u64, Entry)>>>);

impl Unflushed {
    fn lock(&self) -> MutexGuard<'_, BTreeMap<u64, (u64, Entry)>> {
        self.0
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn forget(&self, append: u64, indexes: impl Iterator<Item = u64>) {
        let mut entries = self.lock();
        for index in indexes {
            if entries.get(&index).is_some_and(|(by, _)| *by == append) {
                entries.remove(&index);
            }
        }
    }

    fn range(&self, range: (Bound<u64>, Bound<u64>)) -> Vec<Entry> {
        self.lock()
            .range(range)
            .map(|(_, (_, entry))| entry.clone())
            .collect()
    }
}

/// The writer thread: takes the first queued write and all that queued behind it, commits
/// them in one transaction, then answers each. Ends when every `LogStore` is gone.
fn run_writer(db: Arc<Database>, queue: mpsc::Receiver<LogWrite>, unflushed: Unflushed) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(next) => group.push(next),
                Err(_) => break,
            }
        }
        let result = commit_group(&db, &group).map_err(|e| e.to_string());
        for write in group {
            write.complete(&result, &unflushed);
        }
    }
}

fn commit_group(db: &Database, group: &[LogWrite]) -> Result<(), redb::Error> {
    let txn = db.begin_write()?;
    for write in group {
        write.apply(&txn)?;
    }
    txn.commit()?;
    Ok(())
}

#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
    unflushed: Unflushed,
    queue: mpsc::Sender<LogWrite>,
    appends: Arc<AtomicU64>,
}

impl LogStore {
    pub fn new(db: RaftDb) -> io::Result<Self> {
        let (queue, queued) = mpsc::channel();
        let unflushed = Unflushed::default();
        let (writer_db, writer_unflushed) = (db.db.clone(), unflushed.clone());
        std::thread::Builder::new()
            .name("raft-log-writer".into())
            .spawn(move || run_writer(writer_db, queued, writer_unflushed))?;
        Ok(Self {
            db,
            unflushed,
            queue,
            appends: Arc::default(),
        })
    }

    fn enqueue(&self, write: LogWrite) -> io::Result<()> {
        self.queue
            .send(write)
            .map_err(|_| io::Error::other("the Raft log writer stopped"))
    }

    /// Queues a durable write and waits until it is on disk.
    async fn write_durably(&self, write: impl FnOnce(Done) -> LogWrite) -> io::Result<()> {
        let (done, written) = oneshot::channel();
        self.enqueue(write(done))?;
        written
            .await
            .map_err(|_| io::Error::other("the Raft log writer stopped"))?
            .map_err(io::Error::other)
    }
}

fn owned_range(range: impl RangeBounds<u64>) -> (Bound<u64>, Bound<u64>) {
    (range.start_bound().cloned(), range.end_bound().cloned())
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + Send>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry>, io::Error> {
        let range = owned_range(range);
        // Memory first: an entry the writer commits meanwhile is then found on disk.
        let unflushed = self.unflushed.range(range);
        let db = self.db.clone();
        let on_disk = blocking(move || db.entries(range)).await?;
        if unflushed.is_empty() {
            return Ok(on_disk);
        }
        let mut merged: BTreeMap<u64, Entry> =
            on_disk.into_iter().map(|e| (e.log_id.index, e)).collect();
        merged.extend(unflushed.into_iter().map(|e| (e.log_id.index, e)));
        Ok(merged.into_values().collect())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.db.get_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.db.get_meta(PURGED_KEY)?;
        let unflushed_last = self
            .unflushed
            .lock()
            .values()
            .next_back()
            .map(|(_, e)| e.log_id);
        let last = unflushed_last.or(self.db.last_entry()?.map(|e| e.log_id));
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let bytes = encode(vote)?;
        self.write_durably(|done| LogWrite::Vote(bytes, done)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let bytes = encode(&committed)?;
        self.write_durably(|done| LogWrite::Committed(bytes, done))
            .await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.db.committed()
    }

    /// Returns once the entries are readable; `callback` hears when they are on disk.
    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let append = self.appends.fetch_add(1, Ordering::Relaxed) + 1;
        let entries: Vec<Entry> = entries.into_iter().collect();
        let encoded = entries
            .iter()
            .map(|e| Ok((e.log_id.index, encode(e)?)))
            .collect::<io::Result<Vec<_>>>()?;
        self.unflushed
            .lock()
            .extend(entries.into_iter().map(|e| (e.log_id.index, (append, e))));
        self.enqueue(LogWrite::Append {
            append,
            entries: encoded,
            flushed: callback,
        })
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = match last_log_id {
            Some(id) => Bound::Excluded(id.index),
            None => Bound::Unbounded,
        };
        let range = (start, Bound::Unbounded);
        // Readers must not find the truncated entries once this returns, in memory or on disk.
        self.unflushed
            .lock()
            .retain(|index, _| !range.contains(index));
        self.write_durably(|done| LogWrite::Remove {
            range,
            purged: None,
            done,
        })
        .await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let range = (Bound::Unbounded, Bound::Included(log_id.index));
        self.unflushed
            .lock()
            .retain(|index, _| !range.contains(index));
        let marker = encode(&log_id)?;
        self.write_durably(|done| LogWrite::Remove {
            range,
            purged: Some(marker),
            done,
        })
        .await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use openraft::testing::log::{StoreBuilder, Suite};
    use openraft::testing::{blank_ent, membership_ent};
    use openraft::type_config::alias::OneshotReceiverOf;
    use openraft::type_config::TypeConfigExt;
    use openraft::StorageError;
    use skiff_metadata::MetadataImage;
    use tempfile::TempDir;

    use super::*;
    use crate::state_machine::{MetadataListener, SharedState, StateMachine};

    struct Quiet;

    impl MetadataListener for Quiet {
        fn image_changed(&self, _: &Arc<MetadataImage>) {}
    }

    struct Builder;

    impl StoreBuilder<TypeConfig, LogStore, StateMachine, TempDir> for Builder {
        async fn build(
            &self,
        ) -> Result<(TempDir, LogStore, StateMachine), StorageError<TypeConfig>> {
            let dir = TempDir::new().unwrap();
            let db = RaftDb::open(dir.path()).unwrap();
            let shared = Arc::new(SharedState::new(None, Arc::new(Quiet)));
            let machine = StateMachine::open(db.clone(), shared).unwrap();
            Ok((dir, LogStore::new(db).unwrap(), machine))
        }
    }

    /// openraft's own conformance suite for log stores and state machines.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn passes_the_openraft_storage_suite() {
        Suite::test_all(Builder).await.unwrap();
    }

    async fn append(
        store: &mut LogStore,
        entries: Vec<Entry>,
    ) -> OneshotReceiverOf<TypeConfig, io::Result<()>> {
        let (tx, rx) = TypeConfig::oneshot();
        store.append(entries, IOFlushed::signal(tx)).await.unwrap();
        rx
    }

    fn indexes(entries: &[Entry]) -> Vec<(u64, u64)> {
        entries
            .iter()
            .map(|e| (e.log_id.leader_id.term, e.log_id.index))
            .collect()
    }

    #[test]
    fn a_kept_value_is_not_replaced() {
        let dir = TempDir::new().unwrap();
        let db = RaftDb::open(dir.path()).unwrap();
        let keep_newest = |value: u64| db.replace_meta("n", &value, |stored: &u64| *stored > value);
        keep_newest(9).unwrap();
        keep_newest(5).unwrap();
        assert_eq!(db.get_meta::<u64>("n").unwrap(), Some(9));
        keep_newest(12).unwrap();
        assert_eq!(db.get_meta::<u64>("n").unwrap(), Some(12));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn entries_are_readable_at_once_and_durable_once_flushed() {
        let dir = TempDir::new().unwrap();
        let mut store = LogStore::new(RaftDb::open(dir.path()).unwrap()).unwrap();
        let mut flushes = Vec::new();
        for index in 1..=50 {
            flushes.push(append(&mut store, vec![blank_ent::<TypeConfig>(1, 1, index)]).await);
            let read = store.try_get_log_entries(1..=index).await.unwrap();
            assert_eq!(
                read.len() as u64,
                index,
                "entry {index} is readable at once"
            );
        }
        store
            .save_committed(Some(blank_ent::<TypeConfig>(1, 1, 40).log_id))
            .await
            .unwrap();
        for flushed in flushes {
            flushed.await.unwrap().unwrap();
        }
        // A conflicting leader replaces the tail: readers never see the old entries again.
        store
            .truncate_after(Some(blank_ent::<TypeConfig>(1, 1, 45).log_id))
            .await
            .unwrap();
        assert_eq!(store.try_get_log_entries(40..).await.unwrap().len(), 6);
        let replaced = append(
            &mut store,
            vec![membership_ent::<TypeConfig>(2, 2, 46, vec![[1].into()])],
        )
        .await;
        assert_eq!(
            indexes(&store.try_get_log_entries(45..).await.unwrap()),
            vec![(1, 45), (2, 46)]
        );
        replaced.await.unwrap().unwrap();
        // The last write before a crash: nothing comes after it to carry it to disk.
        store
            .save_committed(Some(
                membership_ent::<TypeConfig>(2, 2, 46, vec![[1].into()]).log_id,
            ))
            .await
            .unwrap();
        drop(store);

        let mut reopened = loop {
            match RaftDb::open(dir.path()) {
                Ok(db) => break LogStore::new(db).unwrap(),
                Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
            }
        };
        let state = reopened.get_log_state().await.unwrap();
        assert_eq!(state.last_log_id.map(|l| l.index), Some(46));
        assert_eq!(reopened.try_get_log_entries(..).await.unwrap().len(), 46);
        assert_eq!(
            reopened.read_committed().await.unwrap().map(|l| l.index),
            Some(46)
        );
    }
}
