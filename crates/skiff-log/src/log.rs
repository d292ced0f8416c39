//! `Log`: the segments of one partition, with recovery, reads, producer state and retention.

use std::fs::{self, File};
use std::io::{self, Write};
use std::ops::Range;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::UNIX_EPOCH;

use crate::batch::{
    set_base_offset, set_partition_leader_epoch, BatchError, BatchHeader, BatchIter, MAGIC_V2,
};
use crate::epochs::{EpochEnd, LeaderEpochs};
use crate::producer::{ActiveProducer, Check, ProducerStates, Staged};
use crate::records::{BatchRecords, RecordsError};
use crate::segment::{self, segment_path, LogSegment};

/// Last offset such that every segment ending at or below it was fsynced; segments past it are
/// validated on open. Decimal text.
pub const RECOVERY_POINT_FILE: &str = "recovery-point-offset-checkpoint";
/// Log start offset set by DeleteRecords (or a full truncation). Decimal text.
pub const LOG_START_FILE: &str = "log-start-offset-checkpoint";
/// Present only between a clean `close` and the next `open`.
pub const CLEAN_SHUTDOWN_FILE: &str = "clean-shutdown";
/// Producer state as of an offset, written at close and when a segment rolls.
pub const PRODUCER_SNAPSHOT_FILE: &str = "producer-state.snapshot";
/// Which leader epoch wrote which offsets (`LeaderEpochs`), Kafka's format. Written, and
/// synced, before the first batch of a new epoch is appended, so it never lacks an epoch the
/// log holds; on open it is trimmed to the log, and rebuilt from the batch headers when missing
/// or unreadable.
pub const LEADER_EPOCH_FILE: &str = "leader-epoch-checkpoint";
const TMP_SUFFIX: &str = ".tmp";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CleanupPolicy {
    Delete,
    Compact,
    CompactDelete,
}

impl CleanupPolicy {
    pub fn deletes(self) -> bool {
        matches!(self, CleanupPolicy::Delete | CleanupPolicy::CompactDelete)
    }

    pub fn compacts(self) -> bool {
        matches!(self, CleanupPolicy::Compact | CleanupPolicy::CompactDelete)
    }
}

/// Per-log settings, named after Kafka's topic configs.
#[derive(Debug, Clone, PartialEq)]
pub struct LogConfig {
    /// `segment.bytes`: roll when the active segment would exceed it.
    pub segment_bytes: u64,
    /// `segment.ms`: roll when the active segment's first append is older than this.
    pub segment_ms: Option<u64>,
    /// `segment.jitter.ms`: each segment rolls up to this much before `segment.ms` (an amount
    /// fixed per segment), so partitions created together do not all roll at once.
    pub segment_jitter_ms: u64,
    /// `segment.index.bytes`: roll when either index of the active segment would outgrow this.
    pub max_index_bytes: u64,
    /// `retention.ms`: None or negative keeps data forever.
    pub retention_ms: Option<i64>,
    /// `retention.bytes`: None or negative is unlimited.
    pub retention_bytes: Option<i64>,
    /// `index.interval.bytes`: log bytes between two index entries.
    pub index_interval_bytes: u32,
    /// `flush.messages`: fsync after this many records since the last flush.
    pub flush_messages: Option<u64>,
    /// `flush.ms`: fsync when the last flush is older than this (checked by `flush_if_due`).
    pub flush_ms: Option<u64>,
    /// `cleanup.policy`.
    pub cleanup_policy: CleanupPolicy,
    /// `max.message.bytes`: the largest batch accepted.
    pub max_batch_bytes: usize,
    /// `delete.retention.ms`: how long the cleaner keeps tombstones.
    pub delete_retention_ms: i64,
    /// `min.compaction.lag.ms`: a segment holding a record younger than this is not compacted.
    pub min_compaction_lag_ms: i64,
    /// `max.compaction.lag.ms`: compact, whatever the dirty ratio, once the oldest uncompacted
    /// record is this old.
    pub max_compaction_lag_ms: i64,
    /// `min.cleanable.dirty.ratio`: compact when at least this share of the compactable bytes
    /// was written since the last compaction.
    pub min_cleanable_dirty_ratio: f64,
    /// `producer.id.expiration.ms`: idle producers (by batch timestamp) are forgotten after this.
    pub producer_id_expiration_ms: i64,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            segment_bytes: 1 << 30,
            segment_ms: Some(7 * 24 * 3600 * 1000),
            segment_jitter_ms: 0,
            max_index_bytes: 10 * 1024 * 1024,
            retention_ms: Some(7 * 24 * 3600 * 1000),
            retention_bytes: None,
            index_interval_bytes: 4096,
            flush_messages: None,
            flush_ms: None,
            cleanup_policy: CleanupPolicy::Delete,
            max_batch_bytes: 1_048_588,
            delete_retention_ms: 24 * 3600 * 1000,
            min_compaction_lag_ms: 0,
            max_compaction_lag_ms: i64::MAX,
            min_cleanable_dirty_ratio: 0.5,
            producer_id_expiration_ms: 24 * 3600 * 1000,
        }
    }
}

/// Errors of log operations, precise enough to pick the Kafka error code.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// KAFKA_STORAGE_ERROR.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),
    /// Replicated batches that do not continue the log: a follower fetched from the wrong
    /// offset, or the leader sent something other than its log.
    #[error("replicated batch at offset {found} does not follow offset {after}")]
    NonContiguousOffsets { after: i64, found: i64 },
    /// OFFSET_OUT_OF_RANGE.
    #[error("offset {offset} is outside the log [{log_start_offset}, {log_end_offset}]")]
    OffsetOutOfRange {
        offset: i64,
        log_start_offset: i64,
        log_end_offset: i64,
    },
    /// CORRUPT_MESSAGE (or MESSAGE_TOO_LARGE / UNSUPPORTED_FOR_MESSAGE_FORMAT, see `BatchError`).
    #[error("invalid record batch: {0}")]
    Corrupt(#[from] BatchError),
    /// Stored records that cannot be decoded (CORRUPT_MESSAGE / UNKNOWN_SERVER_ERROR).
    #[error("cannot decode stored records: {0}")]
    Records(#[from] RecordsError),
    /// OUT_OF_ORDER_SEQUENCE_NUMBER.
    #[error("producer {producer_id}: expected sequence {expected}, got {received}")]
    OutOfOrderSequence {
        producer_id: i64,
        expected: i32,
        received: i32,
    },
    /// INVALID_PRODUCER_EPOCH.
    #[error("producer {producer_id}: epoch {received} is older than current epoch {current}")]
    InvalidProducerEpoch {
        producer_id: i64,
        current: i16,
        received: i16,
    },
    /// A checkpoint file that cannot be parsed: refusing to guess which records were deleted.
    #[error("corrupt checkpoint file {path}: {reason}")]
    CorruptCheckpoint { path: PathBuf, reason: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AppendOutcome {
    Appended {
        base_offset: i64,
        last_offset: i64,
        /// Largest `maxTimestamp` of the appended batches.
        max_timestamp: i64,
        log_start_offset: i64,
    },
    /// An idempotent retry of one of the last 5 batches of this producer: not written again.
    Duplicate {
        base_offset: i64,
        last_offset: i64,
        log_start_offset: i64,
    },
}

/// A byte range of a segment file. Holding it keeps the file readable even after retention
/// deletes the segment.
#[derive(Debug, Clone)]
pub struct FileSlice {
    pub file: Arc<File>,
    pub position: u64,
    pub len: usize,
}

impl FileSlice {
    /// Appends the slice's bytes to `out` (pread, no seek, so slices can be read concurrently).
    /// The bytes go straight into `out`'s spare capacity: zero-filling it first cost about a
    /// fifth of a fetch's CPU.
    pub fn read_into(&self, out: &mut Vec<u8>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        out.reserve(self.len);
        let start = out.len();
        let mut done = 0;
        while done < self.len {
            let offset = libc::off_t::try_from(self.position + done as u64)
                .map_err(|_| io::Error::other("file position beyond off_t"))?;
            // SAFETY: the destination is `self.len - done` bytes of spare capacity reserved
            // above; pread writes at most that many and `set_len` below only covers bytes
            // it reported as written.
            let n = unsafe {
                libc::pread(
                    self.file.as_raw_fd(),
                    out.as_mut_ptr().add(start + done).cast(),
                    self.len - done,
                    offset,
                )
            };
            match n {
                n if n > 0 => done += n as usize,
                0 => return Err(io::Error::from(io::ErrorKind::UnexpectedEof)),
                _ => {
                    let error = io::Error::last_os_error();
                    if error.kind() != io::ErrorKind::Interrupted {
                        return Err(error);
                    }
                }
            }
        }
        // SAFETY: bytes start..start + self.len were all written by pread above.
        unsafe { out.set_len(start + self.len) };
        Ok(())
    }
}

/// Whole batches located by `Log::read`, to be read by the caller outside any lock.
#[derive(Debug, Clone, Default)]
pub struct LogReadInfo {
    pub slices: Vec<FileSlice>,
    pub total_len: usize,
    /// Base offset of the first batch returned.
    pub first_offset: Option<i64>,
    /// One past the last offset returned (the requested offset when nothing is returned).
    pub next_offset: i64,
}

impl LogReadInfo {
    pub fn read_all(&self) -> io::Result<Vec<u8>> {
        let mut out = Vec::with_capacity(self.total_len);
        for s in &self.slices {
            s.read_into(&mut out)?;
        }
        Ok(out)
    }
}

/// What `Log::open` found and repaired.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RecoveryReport {
    /// The log was closed cleanly: nothing was validated.
    pub clean_shutdown: bool,
    /// Segments whose batches were all validated (those past the recovery point).
    pub recovered_segments: usize,
    pub recovered_batches: u64,
    /// Bytes cut off at the first torn or corrupt batch.
    pub truncated_bytes: u64,
    /// Whole segments deleted because they followed a corrupt one.
    pub deleted_segments: usize,
    /// Producer state came from a snapshot rather than from scanning every batch header.
    pub producer_snapshot_used: bool,
    /// The leader-epoch checkpoint was missing or unreadable and was rebuilt from the log.
    pub leader_epochs_rebuilt: bool,
}

pub struct Log {
    dir: PathBuf,
    config: LogConfig,
    /// Sorted by base offset; the last one is the active segment. Never empty.
    segments: Vec<LogSegment>,
    log_start_offset: i64,
    recovery_point: i64,
    checkpointed_recovery_point: i64,
    producers: ProducerStates,
    unflushed_records: u64,
    last_flush_ms: i64,
    dir_dirty: bool,
    cleaner_checkpoint: Option<cleaner::CleanerCheckpoint>,
    epochs: LeaderEpochs,
}

/// Writes `data` to `path` through a temporary file and a rename, so readers see the old or the
/// new content, never a mix. With `sync` the result is durable.
pub(crate) fn write_atomically(path: &Path, data: &[u8], sync: bool) -> io::Result<()> {
    let mut tmp_name = path.file_name().unwrap_or_default().to_os_string();
    tmp_name.push(TMP_SUFFIX);
    let tmp = path.with_file_name(tmp_name);
    let mut f = File::create(&tmp)?;
    f.write_all(data)?;
    if sync {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if sync {
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

fn read_offset_file(path: &Path) -> Result<Option<i64>, LogError> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e.into()),
    };
    text.trim()
        .parse()
        .map(Some)
        .map_err(|e: std::num::ParseIntError| LogError::CorruptCheckpoint {
            path: path.to_path_buf(),
            reason: e.to_string(),
        })
}

fn write_offset_file(path: &Path, offset: i64) -> io::Result<()> {
    write_atomically(path, format!("{offset}\n").as_bytes(), true)
}

fn remove_if_exists(path: &Path) -> io::Result<()> {
    match fs::remove_file(path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

/// Base offset of a `<20 digits>.<suffix>` file name.
fn parse_base(name: &str, suffix: &str) -> Option<i64> {
    let stem = name.strip_suffix(suffix)?.strip_suffix('.')?;
    (stem.len() == 20 && stem.bytes().all(|b| b.is_ascii_digit()))
        .then(|| stem.parse().ok())
        .flatten()
}

impl Log {
    /// Opens or creates the log in `dir`, recovering after an unclean shutdown: every segment past
    /// the recovery point (all of them if there is none) is validated batch by batch (length,
    /// magic, offsets, CRC); the first torn or corrupt batch and everything after it is cut off,
    /// later segments are deleted and indexes rebuilt.
    pub fn open(
        dir: &Path,
        config: LogConfig,
        now_ms: i64,
    ) -> Result<(Log, RecoveryReport), LogError> {
        fs::create_dir_all(dir)?;
        let mut bases = Vec::new();
        let mut index_files = Vec::new();
        for entry in fs::read_dir(dir)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(name) = name.to_str() else { continue };
            if name.ends_with(TMP_SUFFIX) || name.ends_with(segment::CLEANED_SUFFIX) {
                // Leftover of an interrupted atomic write or clean: the original is intact.
                fs::remove_file(entry.path())?;
            } else if let Some(base) = parse_base(name, segment::LOG_SUFFIX) {
                bases.push(base);
            } else if let Some(base) = parse_base(name, segment::INDEX_SUFFIX)
                .or_else(|| parse_base(name, segment::TIME_INDEX_SUFFIX))
            {
                index_files.push((base, entry.path()));
            }
        }
        bases.sort_unstable();
        for (base, path) in index_files {
            if bases.binary_search(&base).is_err() {
                fs::remove_file(path)?;
            }
        }

        let clean = dir.join(CLEAN_SHUTDOWN_FILE).exists();
        let recovery_point = if clean {
            i64::MAX
        } else {
            read_offset_file(&dir.join(RECOVERY_POINT_FILE))?.unwrap_or(i64::MIN)
        };
        let start_checkpoint = read_offset_file(&dir.join(LOG_START_FILE))?;
        let mut report = RecoveryReport {
            clean_shutdown: clean,
            ..RecoveryReport::default()
        };
        let interval = config.index_interval_bytes;
        let mut segments: Vec<LogSegment> = Vec::with_capacity(bases.len().max(1));
        let mut cut = false;
        for (i, &base) in bases.iter().enumerate() {
            if cut {
                for suffix in [
                    segment::LOG_SUFFIX,
                    segment::INDEX_SUFFIX,
                    segment::TIME_INDEX_SUFFIX,
                ] {
                    remove_if_exists(&segment_path(dir, base, suffix))?;
                }
                report.deleted_segments += 1;
                continue;
            }
            let next_base = bases.get(i + 1).copied();
            let trusted = match next_base {
                Some(next) => next <= recovery_point,
                None => clean,
            };
            let (seg, outcome, truncated) =
                LogSegment::open(dir, base, interval, trusted, next_base, now_ms)?;
            if !trusted {
                report.recovered_segments += 1;
                report.recovered_batches += outcome.batches;
            }
            if outcome.bad_at.is_some() {
                report.truncated_bytes += truncated;
                cut = true;
                tracing::warn!(dir = %dir.display(), base, truncated, "truncated corrupt log tail");
            }
            segments.push(seg);
        }
        if segments.is_empty() {
            let base = start_checkpoint.unwrap_or(0).max(0);
            segments.push(LogSegment::create(dir, base, interval)?);
        }

        let log_end = segments.last().expect("one segment").next_offset();
        let log_start_offset = start_checkpoint
            .unwrap_or(i64::MIN)
            .max(segments[0].base_offset)
            .min(log_end);
        if start_checkpoint.is_some_and(|c| c > log_start_offset) {
            // Recovery lost data up to the checkpointed start: record the start actually used, or
            // the old value would resurface on a later open once the log grows past it.
            write_offset_file(&dir.join(LOG_START_FILE), log_start_offset)?;
        }
        if clean {
            // Removed durably (the flush below syncs the directory) before any append, so a crash
            // later can never be mistaken for a clean shutdown.
            fs::remove_file(dir.join(CLEAN_SHUTDOWN_FILE))?;
        }
        let mut log = Log {
            dir: dir.to_path_buf(),
            config,
            segments,
            log_start_offset,
            recovery_point: recovery_point.min(log_end),
            checkpointed_recovery_point: recovery_point.min(log_end),
            producers: ProducerStates::default(),
            unflushed_records: 0,
            last_flush_ms: now_ms,
            dir_dirty: true,
            cleaner_checkpoint: None,
            epochs: LeaderEpochs::default(),
        };
        report.producer_snapshot_used = log.load_producer_state()?;
        report.leader_epochs_rebuilt = log.load_leader_epochs()?;
        // Recovered data may exist only in the page cache of the crashed process: make it durable
        // before recording that it needs no recovery.
        log.flush()?;
        if !clean {
            log.write_recovery_point()?;
        }
        Ok((log, report))
    }

    /// Rebuilds producer state from the snapshot (if it matches the log) plus the batch headers
    /// after it. The snapshot is removed once read: a later truncation could make it stale.
    fn load_producer_state(&mut self) -> Result<bool, LogError> {
        let path = self.dir.join(PRODUCER_SNAPSHOT_FILE);
        let snapshot = ProducerStates::read_snapshot(&path)?;
        remove_if_exists(&path)?;
        let first_base = self.segments[0].base_offset;
        let (states, from, used) = match snapshot {
            Some((states, offset)) if offset >= first_base && offset <= self.log_end_offset() => {
                (states, offset, true)
            }
            _ => (ProducerStates::default(), first_base, false),
        };
        self.producers = states;
        self.replay_producers_from(from)?;
        self.producers.evict_below(self.log_start_offset);
        Ok(used)
    }

    /// Reads the leader-epoch checkpoint, trimmed to the log; rebuilt from every batch header
    /// when it is missing (a log written before epochs were kept) or unreadable. Returns whether
    /// it was rebuilt.
    fn load_leader_epochs(&mut self) -> Result<bool, LogError> {
        let path = self.dir.join(LEADER_EPOCH_FILE);
        let (loaded, damaged) = match fs::read_to_string(&path) {
            Ok(text) => match LeaderEpochs::from_checkpoint(&text) {
                Ok(epochs) => (Some(epochs), false),
                Err(e) => {
                    tracing::warn!(dir = %self.dir.display(), error = %e, "rebuilding the leader-epoch checkpoint from the log");
                    (None, true)
                }
            },
            Err(e) if e.kind() == io::ErrorKind::NotFound => (None, false),
            Err(e) => return Err(e.into()),
        };
        let scanned = loaded.is_none();
        let mut epochs = match loaded {
            Some(epochs) => epochs,
            None => {
                let mut epochs = LeaderEpochs::default();
                for seg in &self.segments {
                    let mut pos = 0;
                    while pos < seg.size() {
                        let header = seg.header_at(pos)?;
                        // As on append: an epoch below the latest is never recorded over it.
                        let epoch = header.partition_leader_epoch;
                        if epochs.latest_epoch().is_none_or(|e| epoch > e) {
                            epochs.assign(epoch, header.base_offset);
                        }
                        pos += header.total_len() as u64;
                    }
                }
                epochs
            }
        };
        let read = epochs.clone();
        epochs.truncate_from_end(self.log_end_offset());
        epochs.truncate_from_start(self.log_start_offset);
        self.epochs = epochs;
        // A new, empty log writes no file until its first epoch.
        let rebuilt = damaged || (scanned && !self.epochs.entries().is_empty());
        if rebuilt || (!scanned && self.epochs != read) {
            self.write_leader_epochs()?;
        }
        Ok(rebuilt)
    }

    fn write_leader_epochs(&self) -> io::Result<()> {
        write_atomically(
            &self.dir.join(LEADER_EPOCH_FILE),
            self.epochs.to_checkpoint().as_bytes(),
            true,
        )
    }

    /// Applies `change` to the leader epochs, persisting them first if it changed anything: a
    /// failed write leaves them as they were, so a retried append records its epoch again.
    fn change_leader_epochs(&mut self, change: impl FnOnce(&mut LeaderEpochs)) -> io::Result<()> {
        let mut changed = self.epochs.clone();
        change(&mut changed);
        if changed != self.epochs {
            write_atomically(
                &self.dir.join(LEADER_EPOCH_FILE),
                changed.to_checkpoint().as_bytes(),
                true,
            )?;
            self.epochs = changed;
        }
        Ok(())
    }

    /// Records `epoch` as starting at the log end, as a leader does when its leadership begins
    /// (Kafka does then), so a follower's divergence is found against it before the epoch's
    /// first batch. An epoch not newer than the latest is not recorded.
    pub fn begin_leader_epoch(&mut self, epoch: i32) -> Result<(), LogError> {
        let log_end = self.log_end_offset();
        if self.epochs.latest_epoch().is_none_or(|e| epoch > e) {
            self.change_leader_epochs(|epochs| epochs.assign(epoch, log_end))?;
        }
        Ok(())
    }

    /// Which leader epoch wrote which offsets.
    pub fn leader_epochs(&self) -> &LeaderEpochs {
        &self.epochs
    }

    /// Where `requested` ends in this log (OffsetForLeaderEpoch), for a leader at
    /// `current_epoch`: an epoch that has not appended yet still starts at the log end, as if
    /// recorded when leadership began (Kafka records it then).
    pub fn end_offset_for_epoch(&self, requested: i32, current_epoch: i32) -> EpochEnd {
        self.epochs_as_of(current_epoch)
            .end_offset_for(requested, self.log_end_offset())
    }

    /// The epoch that wrote `offset` (ListOffsets), or -1; the log end belongs to
    /// `current_epoch`, as in `end_offset_for_epoch`.
    pub fn epoch_of(&self, offset: i64, current_epoch: i32) -> i32 {
        self.epochs_as_of(current_epoch)
            .epoch_of(offset)
            .unwrap_or(-1)
    }

    /// The leader epochs with `current_epoch` recorded at the log end if it has not appended yet.
    fn epochs_as_of(&self, current_epoch: i32) -> std::borrow::Cow<'_, LeaderEpochs> {
        if self
            .epochs
            .latest_epoch()
            .is_some_and(|e| e >= current_epoch)
        {
            return std::borrow::Cow::Borrowed(&self.epochs);
        }
        let mut epochs = self.epochs.clone();
        epochs.assign(current_epoch, self.log_end_offset());
        std::borrow::Cow::Owned(epochs)
    }

    fn replay_producers_from(&mut self, from: i64) -> Result<(), LogError> {
        let start = self.segment_index(from);
        for seg in &self.segments[start..] {
            let Some((mut pos, mut header)) = seg.find_batch(from)? else {
                continue;
            };
            loop {
                if header.base_offset >= from {
                    self.producers.replay(&header);
                }
                pos += header.total_len() as u64;
                if pos >= seg.size() {
                    break;
                }
                header = seg.header_at(pos)?;
            }
        }
        Ok(())
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn config(&self) -> &LogConfig {
        &self.config
    }

    /// Takes effect for later appends, rolls and retention runs; existing index entries keep the
    /// cadence they were written with.
    pub fn set_config(&mut self, config: LogConfig) {
        self.config = config;
    }

    pub fn log_start_offset(&self) -> i64 {
        self.log_start_offset
    }

    pub fn log_end_offset(&self) -> i64 {
        self.active().next_offset()
    }

    pub fn size_bytes(&self) -> u64 {
        self.segments.iter().map(LogSegment::size).sum()
    }

    pub fn segment_count(&self) -> usize {
        self.segments.len()
    }

    /// Base offsets of the segments, oldest first.
    pub fn segment_base_offsets(&self) -> Vec<i64> {
        self.segments.iter().map(|s| s.base_offset).collect()
    }

    /// Number of producer ids with retained state.
    pub fn producer_count(&self) -> usize {
        self.producers.len()
    }

    /// The producers with retained state, by id.
    pub fn active_producers(&self) -> Vec<ActiveProducer> {
        self.producers.active()
    }

    fn active(&self) -> &LogSegment {
        self.segments.last().expect("a log always has a segment")
    }

    fn active_mut(&mut self) -> &mut LogSegment {
        self.segments
            .last_mut()
            .expect("a log always has a segment")
    }

    /// Index of the segment that holds `offset` (the first one for offsets below it).
    fn segment_index(&self, offset: i64) -> usize {
        self.segments
            .partition_point(|s| s.base_offset <= offset)
            .saturating_sub(1)
    }

    /// Appends already validated batches (concatenated, as received from a producer), assigning
    /// offsets by patching `baseOffset` and `partitionLeaderEpoch` in place. The producer checks
    /// run over all batches before anything is written, so a refused append writes nothing; if
    /// any batch is a retry of an already appended one, nothing is written and its original
    /// offsets are returned.
    pub fn append(
        &mut self,
        batches: &mut [u8],
        leader_epoch: i32,
        now_ms: i64,
    ) -> Result<AppendOutcome, LogError> {
        let mut plan: Vec<(BatchHeader, Range<usize>)> = Vec::new();
        let mut staged = Staged::default();
        let mut next = self.log_end_offset();
        for item in BatchIter::new(batches) {
            let (mut header, range) = item?;
            if header.magic != MAGIC_V2 {
                return Err(BatchError::UnsupportedMagic(header.magic).into());
            }
            if header.has_producer_id() {
                if let Check::Duplicate(meta) = self.producers.check(&staged, &header)? {
                    return Ok(AppendOutcome::Duplicate {
                        base_offset: meta.base_offset,
                        last_offset: meta.last_offset,
                        log_start_offset: self.log_start_offset,
                    });
                }
            }
            header.base_offset = next;
            header.partition_leader_epoch = leader_epoch;
            next = header.last_offset() + 1;
            if header.has_producer_id() {
                self.producers.stage(&mut staged, &header);
            }
            plan.push((header, range));
        }
        let (Some(first), Some(last)) = (plan.first(), plan.last()) else {
            return Err(BatchError::Truncated {
                needed: crate::batch::BATCH_HEADER_LEN,
                available: 0,
            }
            .into());
        };
        let outcome = AppendOutcome::Appended {
            base_offset: first.0.base_offset,
            last_offset: last.0.last_offset(),
            max_timestamp: plan
                .iter()
                .map(|(h, _)| h.max_timestamp)
                .max()
                .unwrap_or(-1),
            log_start_offset: self.log_start_offset,
        };
        for (header, range) in &plan {
            let buf = &mut batches[range.clone()];
            set_base_offset(buf, header.base_offset);
            set_partition_leader_epoch(buf, leader_epoch);
        }
        let log_end = self.log_end_offset();
        // An epoch is recorded before its first batch is written, so the checkpoint never lacks
        // one the log holds; an older epoch than the latest is never recorded over it.
        if self.epochs.latest_epoch().is_none_or(|e| leader_epoch > e) {
            self.change_leader_epochs(|epochs| epochs.assign(leader_epoch, log_end))?;
        }
        if let Err(e) = self.write_planned(batches, &plan, now_ms) {
            // Undo a partly written append (possibly across a roll) so offsets stay dense.
            if let Err(undo) = self.truncate_to(log_end) {
                tracing::error!(dir = %self.dir.display(), %undo, "cannot undo failed append");
            }
            return Err(e);
        }
        self.producers.commit(staged);
        let records: u64 = plan
            .iter()
            .map(|(h, _)| h.records_count.max(0) as u64)
            .sum();
        self.unflushed_records += records;
        if self
            .config
            .flush_messages
            .is_some_and(|n| self.unflushed_records >= n)
        {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(outcome)
    }

    /// Appends batches copied from the leader's log, as they are: their offsets and leader epochs
    /// are kept (nothing is patched), each batch is validated (length, magic, CRC) and must start
    /// after the previous one, the first one at or after this log's end (a compacted leader log
    /// has gaps). Producer state follows the batches without being checked: the leader checked
    /// them. Nothing is written unless every batch is valid. Returns the new log end.
    ///
    /// An empty log also takes a first batch that holds its start offset: a log restarted at its
    /// leader's log start, which DeleteRecords may have put inside a batch, is served that whole
    /// batch. The log then restarts at the batch and keeps its log start, as Kafka's follower does.
    pub fn append_replicated(&mut self, batches: &[u8], now_ms: i64) -> Result<i64, LogError> {
        let mut plan: Vec<(BatchHeader, Range<usize>)> = Vec::new();
        let log_start = self.log_start_offset;
        let mut after = self.log_end_offset() - 1;
        let mut straddles = false;
        for item in BatchIter::new(batches) {
            let (_, range) = item?;
            let header = crate::batch::validate_batch(&batches[range.clone()], usize::MAX)?;
            let holds_the_start = plan.is_empty()
                && log_start == self.log_end_offset()
                && header.base_offset >= 0
                && header.base_offset < log_start
                && header.last_offset() >= log_start;
            if (header.base_offset <= after && !holds_the_start)
                || header.last_offset() < header.base_offset
            {
                return Err(LogError::NonContiguousOffsets {
                    after,
                    found: header.base_offset,
                });
            }
            straddles |= holds_the_start;
            after = header.last_offset();
            plan.push((header, range));
        }
        if plan.is_empty() {
            return Ok(self.log_end_offset());
        }
        if straddles {
            self.remove_from(plan[0].0.base_offset, true)?;
        }
        let log_end = self.log_end_offset();
        let written = plan
            .iter()
            .try_for_each(|(header, _)| {
                let epoch = header.partition_leader_epoch;
                if self.epochs.latest_epoch().is_none_or(|e| epoch > e) {
                    let start = header.base_offset;
                    self.change_leader_epochs(|epochs| epochs.assign(epoch, start))?;
                }
                Ok(())
            })
            .and_then(|()| self.write_planned(batches, &plan, now_ms));
        if let Err(e) = written {
            let undone = if straddles {
                self.truncate_fully_and_start_at(log_start)
            } else {
                self.truncate_to(log_end)
            };
            if let Err(undo) = undone {
                tracing::error!(dir = %self.dir.display(), %undo, "cannot undo failed append");
            }
            return Err(e);
        }
        let mut records = 0u64;
        for (header, _) in &plan {
            self.producers.replay(header);
            records += header.records_count.max(0) as u64;
        }
        self.unflushed_records += records;
        if straddles {
            self.delete_records_before(log_start)?;
        }
        if self
            .config
            .flush_messages
            .is_some_and(|n| self.unflushed_records >= n)
        {
            self.flush()?;
            self.last_flush_ms = now_ms;
        }
        Ok(self.log_end_offset())
    }

    /// Writes the batches of `plan`, rolling before any batch that does not fit the active
    /// segment; consecutive batches for one segment go out in one write.
    fn write_planned(
        &mut self,
        data: &[u8],
        plan: &[(BatchHeader, Range<usize>)],
        now_ms: i64,
    ) -> Result<(), LogError> {
        let mut run_start = 0;
        let mut run: Vec<(BatchHeader, usize)> = Vec::new();
        for (i, (header, range)) in plan.iter().enumerate() {
            let run_bytes = (range.start - plan[run_start].1.start) as u64;
            let len = range.len() as u64;
            let full = self.active().is_full(
                run_bytes,
                len,
                header.last_offset(),
                self.config.segment_bytes,
                self.config.max_index_bytes,
            ) || (run.is_empty() && self.roll_due_by_age(now_ms));
            if full {
                if !run.is_empty() {
                    let bytes = &data[plan[run_start].1.start..range.start];
                    self.active_mut().append(bytes, &run, now_ms)?;
                    run.clear();
                }
                // A snapshot is exact only at an append boundary: state for this append is staged.
                self.roll(i == 0)?;
                run_start = i;
            }
            run.push((*header, range.start - plan[run_start].1.start));
        }
        let bytes = &data[plan[run_start].1.start..plan.last().expect("non-empty plan").1.end];
        self.active_mut().append(bytes, &run, now_ms)?;
        Ok(())
    }

    fn roll_due_by_age(&self, now_ms: i64) -> bool {
        let active = self.active();
        match (self.config.segment_ms, active.rolling_ms()) {
            (Some(max_age), Some(since)) => {
                let jitter = match self.config.segment_jitter_ms.min(max_age) {
                    0 => 0,
                    // A fixed amount per segment, spread over partitions whose segments start
                    // at the same offset: the partition's directory and the base offset, hashed.
                    j => {
                        use std::hash::{Hash, Hasher};
                        let mut hasher = std::collections::hash_map::DefaultHasher::new();
                        self.dir.hash(&mut hasher);
                        active.base_offset.hash(&mut hasher);
                        hasher.finish() % j
                    }
                };
                !active.is_empty()
                    && now_ms.saturating_sub(since) >= max_age.saturating_sub(jitter) as i64
            }
            _ => false,
        }
    }

    /// Starts a new active segment at the log end offset.
    fn roll(&mut self, snapshot: bool) -> Result<(), LogError> {
        let base = self.log_end_offset();
        if snapshot {
            // Lets recovery after a crash rebuild producer state from here instead of from the
            // first segment; not synced because a torn snapshot is detected and ignored.
            self.producers
                .write_snapshot(&self.dir.join(PRODUCER_SNAPSHOT_FILE), base, false)?;
        }
        let seg = LogSegment::create(&self.dir, base, self.config.index_interval_bytes)?;
        self.segments.push(seg);
        self.dir_dirty = true;
        Ok(())
    }

    /// Locates whole batches starting at the one containing `offset`, stopping before a batch at
    /// or past `max_offset` and before `max_bytes` would be exceeded, except that with
    /// `min_one_batch` the first batch is returned whatever its size (KIP-74). Reads only batch
    /// headers; the caller reads the returned slices.
    pub fn read(
        &self,
        offset: i64,
        max_bytes: usize,
        max_offset: i64,
        min_one_batch: bool,
    ) -> Result<LogReadInfo, LogError> {
        let log_end = self.log_end_offset();
        if offset < self.log_start_offset || offset > log_end {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: log_end,
            });
        }
        let mut info = LogReadInfo {
            next_offset: offset,
            ..LogReadInfo::default()
        };
        let mut target = offset;
        'segments: for seg in &self.segments[self.segment_index(offset)..] {
            let Some((mut pos, mut header)) = seg.find_batch(target)? else {
                continue;
            };
            loop {
                let len = header.total_len();
                let fits =
                    info.total_len + len <= max_bytes || (info.slices.is_empty() && min_one_batch);
                if header.base_offset >= max_offset || !fits {
                    break 'segments;
                }
                match info.slices.last_mut() {
                    Some(s)
                        if Arc::ptr_eq(&s.file, seg.file()) && s.position + s.len as u64 == pos =>
                    {
                        s.len += len;
                    }
                    _ => info.slices.push(FileSlice {
                        file: Arc::clone(seg.file()),
                        position: pos,
                        len,
                    }),
                }
                info.total_len += len;
                info.first_offset.get_or_insert(header.base_offset);
                info.next_offset = header.last_offset() + 1;
                pos += len as u64;
                if pos >= seg.size() {
                    break;
                }
                header = seg.header_at(pos)?;
            }
            target = seg.next_offset();
        }
        Ok(info)
    }

    fn read_batch(seg: &LogSegment, pos: u64, header: &BatchHeader) -> io::Result<Vec<u8>> {
        let mut buf = vec![0; header.total_len()];
        seg.file().read_exact_at(&mut buf, pos)?;
        Ok(buf)
    }

    /// First offset (at or after the log start) whose record timestamp is >= `timestamp`, with
    /// that record's timestamp; looks inside batches (decompressing them) like Kafka.
    pub fn offset_for_timestamp(&self, timestamp: i64) -> Result<Option<(i64, i64)>, LogError> {
        let start = self.segment_index(self.log_start_offset);
        for seg in &self.segments[start..] {
            if seg.max_timestamp() < timestamp {
                continue;
            }
            let mut pos = seg.timestamp_search_start(timestamp)?;
            while pos < seg.size() {
                let header = seg.header_at(pos)?;
                if header.last_offset() >= self.log_start_offset
                    && header.max_timestamp >= timestamp
                {
                    let bytes = Self::read_batch(seg, pos, &header)?;
                    for record in BatchRecords::new(&bytes)?.iter() {
                        let record = record?;
                        if record.timestamp >= timestamp && record.offset >= self.log_start_offset {
                            return Ok(Some((record.offset, record.timestamp)));
                        }
                    }
                }
                pos += header.total_len() as u64;
            }
        }
        Ok(None)
    }

    /// Offset and timestamp of the first record with the largest timestamp (ListOffsets
    /// MAX_TIMESTAMP). A batch whose header claims a larger `maxTimestamp` than any of its records
    /// answers with its last offset, as Kafka did before it looked inside batches.
    pub fn max_timestamp_offset(&self) -> Result<Option<(i64, i64)>, LogError> {
        let from = self.log_start_offset;
        let mut best: Option<(i64, usize)> = None;
        for (i, seg) in self.segments.iter().enumerate() {
            if seg.next_offset() <= from || seg.is_empty() {
                continue;
            }
            let seg_max = if seg.base_offset < from {
                let mut max = -1;
                let mut pos = seg.find_batch(from)?.map_or(seg.size(), |(p, _)| p);
                while pos < seg.size() {
                    let header = seg.header_at(pos)?;
                    max = max.max(self.batch_max_timestamp(seg, pos, &header)?);
                    pos += header.total_len() as u64;
                }
                max
            } else {
                seg.max_timestamp()
            };
            if best.is_none_or(|(ts, _)| seg_max > ts) {
                best = Some((seg_max, i));
            }
        }
        let Some((max_ts, i)) = best else {
            return Ok(None);
        };
        let seg = &self.segments[i];
        let mut pos = seg.timestamp_search_start(max_ts)?;
        while pos < seg.size() {
            let header = seg.header_at(pos)?;
            if header.last_offset() >= from
                && self.batch_max_timestamp(seg, pos, &header)? == max_ts
            {
                let bytes = Self::read_batch(seg, pos, &header)?;
                for record in BatchRecords::new(&bytes)?.iter() {
                    let record = record?;
                    if record.timestamp == max_ts && record.offset >= from {
                        return Ok(Some((record.offset, max_ts)));
                    }
                }
                return Ok(Some((header.last_offset(), max_ts)));
            }
            pos += header.total_len() as u64;
        }
        Ok(None)
    }

    /// Largest timestamp of the batch's records at or after the log start offset: the header's
    /// `maxTimestamp` unless the batch straddles the log start, when its records are decoded.
    fn batch_max_timestamp(
        &self,
        seg: &LogSegment,
        pos: u64,
        header: &BatchHeader,
    ) -> Result<i64, LogError> {
        let from = self.log_start_offset;
        if header.base_offset >= from {
            return Ok(header.max_timestamp);
        }
        if header.last_offset() < from {
            return Ok(-1);
        }
        let bytes = Self::read_batch(seg, pos, header)?;
        let mut max = -1;
        for record in BatchRecords::new(&bytes)?.iter() {
            let record = record?;
            if record.offset >= from {
                max = max.max(record.timestamp);
            }
        }
        Ok(max)
    }

    /// DeleteRecords: raises the log start offset to `offset` (persisted), deleting segments that
    /// lie entirely below it. Returns the new log start offset.
    pub fn delete_records_before(&mut self, offset: i64) -> Result<i64, LogError> {
        let log_end = self.log_end_offset();
        if offset > log_end || offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: log_end,
            });
        }
        if offset > self.log_start_offset {
            self.log_start_offset = offset;
            write_offset_file(&self.dir.join(LOG_START_FILE), offset)?;
            self.delete_segments_below_start()?;
            self.producers.evict_below(self.log_start_offset);
            self.change_leader_epochs(|epochs| epochs.truncate_from_start(offset))?;
        }
        Ok(self.log_start_offset)
    }

    fn delete_segments_below_start(&mut self) -> Result<usize, LogError> {
        let mut deleted = 0;
        while self.segments.len() > 1 && self.segments[1].base_offset <= self.log_start_offset {
            self.delete_oldest_segment()?;
            deleted += 1;
        }
        Ok(deleted)
    }

    fn delete_oldest_segment(&mut self) -> Result<(), LogError> {
        let seg = self.segments.remove(0);
        seg.delete()?;
        self.log_start_offset = self.log_start_offset.max(self.segments[0].base_offset);
        self.dir_dirty = true;
        Ok(())
    }

    /// Rolls the active segment if `segment.ms` has passed, then deletes the oldest segments
    /// (never the active one) that are wholly below the log start offset or, with a delete
    /// cleanup policy, older than `retention.ms` (by their largest record timestamp, or file
    /// modification time when they carry none) or beyond `retention.bytes`. Retention deletes
    /// only segments wholly below `high_watermark`, as Kafka: records not yet on every in-sync
    /// replica stay. Returns how many segments were deleted.
    pub fn enforce_retention(
        &mut self,
        now_ms: i64,
        high_watermark: i64,
    ) -> Result<usize, LogError> {
        if self.roll_due_by_age(now_ms) {
            self.roll(true)?;
        }
        let mut deleted = self.delete_segments_below_start()?;
        let committed = |segments: &[LogSegment]| {
            segments.len() > 1 && segments[1].base_offset <= high_watermark
        };
        if self.config.cleanup_policy.deletes() {
            if let Some(retention_ms) = self.config.retention_ms.filter(|r| *r >= 0) {
                while committed(&self.segments) {
                    let seg = &self.segments[0];
                    let largest = if seg.max_timestamp() >= 0 {
                        seg.max_timestamp()
                    } else {
                        modified_ms(seg.file())?
                    };
                    if now_ms.saturating_sub(largest) <= retention_ms {
                        break;
                    }
                    self.delete_oldest_segment()?;
                    deleted += 1;
                }
            }
            if let Some(retention_bytes) = self.config.retention_bytes.filter(|r| *r >= 0) {
                let mut excess = self.size_bytes() as i64 - retention_bytes;
                while committed(&self.segments) && excess >= self.segments[0].size() as i64 {
                    excess -= self.segments[0].size() as i64;
                    self.delete_oldest_segment()?;
                    deleted += 1;
                }
            }
        }
        if deleted > 0 {
            self.producers.evict_below(self.log_start_offset);
            let start = self.log_start_offset;
            self.change_leader_epochs(|epochs| epochs.truncate_from_start(start))?;
        }
        self.producers
            .expire(now_ms, self.config.producer_id_expiration_ms);
        Ok(deleted)
    }

    /// Flushes if `flush.ms` has passed since the last flush.
    pub fn flush_if_due(&mut self, now_ms: i64) -> Result<(), LogError> {
        if let Some(flush_ms) = self.config.flush_ms {
            if now_ms.saturating_sub(self.last_flush_ms) >= flush_ms as i64 {
                self.flush()?;
                self.last_flush_ms = now_ms;
            }
        }
        Ok(())
    }

    /// fsyncs every segment with unflushed data (log and index files) and the directory, then
    /// moves the recovery point to the log end offset.
    pub fn flush(&mut self) -> Result<(), LogError> {
        for seg in &mut self.segments {
            seg.flush()?;
        }
        if self.dir_dirty {
            sync_dir(&self.dir)?;
            self.dir_dirty = false;
        }
        self.unflushed_records = 0;
        self.recovery_point = self.log_end_offset();
        // Recovery works on whole segments, so the checkpoint only needs rewriting once a segment
        // boundary has been passed.
        let ckpt = self.checkpointed_recovery_point;
        let rp = self.recovery_point;
        if self
            .segments
            .iter()
            .skip(1)
            .any(|s| s.base_offset > ckpt && s.base_offset <= rp)
        {
            self.write_recovery_point()?;
        }
        Ok(())
    }

    fn write_recovery_point(&mut self) -> Result<(), LogError> {
        write_offset_file(&self.dir.join(RECOVERY_POINT_FILE), self.recovery_point)?;
        self.checkpointed_recovery_point = self.recovery_point;
        Ok(())
    }

    /// Flushes, writes the recovery point, a producer state snapshot and the clean-shutdown
    /// marker, so the next open validates nothing and scans no batch headers.
    pub fn close(mut self) -> Result<(), LogError> {
        self.flush()?;
        self.write_recovery_point()?;
        self.producers.write_snapshot(
            &self.dir.join(PRODUCER_SNAPSHOT_FILE),
            self.log_end_offset(),
            true,
        )?;
        write_atomically(&self.dir.join(CLEAN_SHUTDOWN_FILE), b"", true)?;
        Ok(())
    }

    /// Removes every batch at or after `offset`; a batch straddling it is removed whole, as in
    /// Kafka, so the log end offset may end up below `offset`. Below the log start offset the log
    /// is emptied and restarts at `offset`.
    pub fn truncate_to(&mut self, offset: i64) -> Result<(), LogError> {
        if offset >= self.log_end_offset() {
            // No batch to remove, but an epoch recorded at the log end that never wrote goes:
            // a follower must not keep naming an epoch its leader's log does not have.
            self.change_leader_epochs(|epochs| epochs.truncate_from_end(offset))?;
            return Ok(());
        }
        let emptied = offset < self.log_start_offset || offset <= self.segments[0].base_offset;
        self.remove_from(offset, emptied)
    }

    /// Empties the log and restarts it at `offset`, which may lie beyond the log end (Kafka's
    /// truncateFullyAndStartAt): a follower whose log ends below its leader's log start can
    /// only continue from there.
    pub fn truncate_fully_and_start_at(&mut self, offset: i64) -> Result<(), LogError> {
        if offset < 0 {
            return Err(LogError::OffsetOutOfRange {
                offset,
                log_start_offset: self.log_start_offset,
                log_end_offset: self.log_end_offset(),
            });
        }
        self.remove_from(offset, true)
    }

    /// Removes the batches at or after `offset`; `emptied`: all of them, the log restarting at
    /// `offset`.
    fn remove_from(&mut self, offset: i64, emptied: bool) -> Result<(), LogError> {
        remove_if_exists(&self.dir.join(PRODUCER_SNAPSHOT_FILE))?;
        if emptied {
            let new_start = offset.max(0);
            // The log keeps a segment whatever fails: one that starts where the log restarts is
            // emptied and kept (creating another there would overwrite its file), else the new
            // one exists before any old one is deleted.
            let old = match self
                .segments
                .iter()
                .position(|seg| seg.base_offset == new_start)
            {
                Some(i) => {
                    self.segments[i].truncate_to(new_start)?;
                    let kept = self.segments.remove(i);
                    std::mem::replace(&mut self.segments, vec![kept])
                }
                None => {
                    let fresh =
                        LogSegment::create(&self.dir, new_start, self.config.index_interval_bytes)?;
                    std::mem::replace(&mut self.segments, vec![fresh])
                }
            };
            // The new start is on disk before any old segment goes: should a deletion fail,
            // or the process die, a reopened log still starts here and never serves the old
            // records again; retention deletes what is left of them.
            if new_start != self.log_start_offset {
                write_offset_file(&self.dir.join(LOG_START_FILE), new_start)?;
                self.log_start_offset = new_start;
            }
            let mut deleted = Ok(());
            for seg in old {
                if let Err(e) = seg.delete() {
                    deleted = deleted.and(Err(e));
                }
            }
            deleted?;
        } else {
            // Stops at the first segment: `offset` is above its base here.
            while self.segments.len() > 1 && self.active().base_offset >= offset {
                if let Some(seg) = self.segments.pop() {
                    seg.delete()?;
                }
            }
            self.active_mut().truncate_to(offset)?;
        }
        self.dir_dirty = true;
        self.cleaner_checkpoint = None;
        let (log_start, log_end) = (self.log_start_offset, self.log_end_offset());
        self.change_leader_epochs(|epochs| {
            if emptied {
                // Nothing of any epoch is left; the next append records its own.
                *epochs = LeaderEpochs::default();
            } else {
                epochs.truncate_from_end(log_end);
                epochs.truncate_from_start(log_start);
            }
        })?;
        self.producers = ProducerStates::default();
        let first = self.segments[0].base_offset;
        self.replay_producers_from(first)?;
        self.producers.evict_below(self.log_start_offset);
        self.recovery_point = self.recovery_point.min(self.log_end_offset());
        if self.checkpointed_recovery_point > self.recovery_point {
            self.write_recovery_point()?;
        }
        Ok(())
    }

    /// Deletes the log's files and directory (DeleteTopics). Open `FileSlice`s stay readable.
    pub fn delete(self) -> Result<(), LogError> {
        let dir = self.dir.clone();
        drop(self);
        fs::remove_dir_all(dir)?;
        Ok(())
    }
}

fn modified_ms(file: &File) -> io::Result<i64> {
    let modified = file.metadata()?.modified()?;
    Ok(modified
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64))
}

mod cleaner;
#[cfg(test)]
mod tests;

pub use cleaner::CleanerStats;
