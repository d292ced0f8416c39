//! The Raft log, vote and committed index in one redb file, `raft.redb` in the data dir. Every
//! write is a durable redb transaction (fsync before it returns), because Raft's safety rests on
//! a node never forgetting a vote or an acknowledged entry.

use std::fmt::Debug;
use std::io;
use std::ops::{Bound, RangeBounds};
use std::path::Path;
use std::sync::Arc;

use openraft::storage::{IOFlushed, RaftLogStorage};
use openraft::{LogState, RaftLogReader};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use serde::de::DeserializeOwned;
use serde::Serialize;

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

    fn append_entries(&self, entries: Vec<(u64, Vec<u8>)>) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            for (index, bytes) in &entries {
                table.insert(*index, bytes.as_slice()).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }

    /// Removes log entries in `range` and records `meta` in the same transaction.
    fn remove_entries(
        &self,
        range: (Bound<u64>, Bound<u64>),
        meta: Option<(&str, Vec<u8>)>,
    ) -> io::Result<()> {
        let txn = self.db.begin_write().map_err(io_err)?;
        {
            let mut table = txn.open_table(LOG).map_err(io_err)?;
            table
                .retain_in::<u64, _>(range, |_, _| false)
                .map_err(io_err)?;
            if let Some((key, value)) = meta {
                let mut meta_table = txn.open_table(META).map_err(io_err)?;
                meta_table.insert(key, value.as_slice()).map_err(io_err)?;
            }
        }
        txn.commit().map_err(io_err)
    }
}

/// Runs a redb call on the blocking pool: its commits fsync, and Kafka requests share these
/// runtime threads.
async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| io::Error::other(format!("storage task failed: {e}")))?
}

#[derive(Clone)]
pub struct LogStore {
    db: RaftDb,
}

impl LogStore {
    pub fn new(db: RaftDb) -> Self {
        Self { db }
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
        let db = self.db.clone();
        let range = owned_range(range);
        blocking(move || db.entries(range)).await
    }

    async fn read_vote(&mut self) -> Result<Option<Vote>, io::Error> {
        self.db.get_meta(VOTE_KEY)
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, io::Error> {
        let last_purged: Option<LogId> = self.db.get_meta(PURGED_KEY)?;
        let last = self.db.last_entry()?.map(|e| e.log_id);
        Ok(LogState {
            last_log_id: last.or(last_purged),
            last_purged_log_id: last_purged,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote) -> Result<(), io::Error> {
        let db = self.db.clone();
        let vote = *vote;
        blocking(move || db.put_meta(VOTE_KEY, &vote)).await
    }

    async fn save_committed(&mut self, committed: Option<LogId>) -> Result<(), io::Error> {
        let db = self.db.clone();
        blocking(move || db.put_meta(COMMITTED_KEY, &committed)).await
    }

    async fn read_committed(&mut self) -> Result<Option<LogId>, io::Error> {
        self.db.committed()
    }

    async fn append<I>(
        &mut self,
        entries: I,
        callback: IOFlushed<TypeConfig>,
    ) -> Result<(), io::Error>
    where
        I: IntoIterator<Item = Entry> + Send,
        I::IntoIter: Send,
    {
        let encoded = entries
            .into_iter()
            .map(|e| Ok((e.log_id.index, encode(&e)?)))
            .collect::<io::Result<Vec<_>>>()?;
        let db = self.db.clone();
        let result = blocking(move || db.append_entries(encoded)).await;
        let reported = result.as_ref().map(|_| ()).map_err(io_err);
        callback.io_completed(reported);
        result
    }

    async fn truncate_after(&mut self, last_log_id: Option<LogId>) -> Result<(), io::Error> {
        let start = match last_log_id {
            Some(id) => Bound::Excluded(id.index),
            None => Bound::Unbounded,
        };
        let db = self.db.clone();
        blocking(move || db.remove_entries((start, Bound::Unbounded), None)).await
    }

    async fn purge(&mut self, log_id: LogId) -> Result<(), io::Error> {
        let db = self.db.clone();
        let marker = encode(&log_id)?;
        blocking(move || {
            db.remove_entries(
                (Bound::Unbounded, Bound::Included(log_id.index)),
                Some((PURGED_KEY, marker)),
            )
        })
        .await
    }
}
