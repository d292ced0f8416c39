//! One segment of a partition log: `<base>.log` with its `.index` and `.timeindex`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::batch::{check_integrity, BatchHeader, BATCH_HEADER_LEN, MAGIC_V2, MIN_BATCH_LENGTH};
use crate::index::{IndexFile, OffsetEntry, TimeEntry};

pub(crate) const LOG_SUFFIX: &str = "log";
pub(crate) const INDEX_SUFFIX: &str = "index";
pub(crate) const TIME_INDEX_SUFFIX: &str = "timeindex";
/// Suffix of files the cleaner writes before swapping them in.
pub(crate) const CLEANED_SUFFIX: &str = ".cleaned";

pub(crate) fn segment_path(dir: &Path, base_offset: i64, suffix: &str) -> PathBuf {
    dir.join(format!("{base_offset:020}.{suffix}"))
}

/// Largest relative offset a segment holds; beyond it the log rolls (indexes store u32, and Kafka
/// keeps relative offsets within an i32).
pub(crate) const MAX_REL_OFFSET: i64 = i32::MAX as i64;
/// Largest segment file: index positions are u32.
pub(crate) const MAX_SEGMENT_FILE: u64 = u32::MAX as u64;

/// What a scan of a segment found.
#[derive(Debug, Default)]
pub(crate) struct ScanOutcome {
    pub batches: u64,
    /// Position of the first batch that failed the checks, if any.
    pub bad_at: Option<u64>,
}

pub(crate) struct LogSegment {
    pub base_offset: i64,
    log: Arc<File>,
    dir: PathBuf,
    /// Bytes of valid batches; the file is never longer once the segment is open.
    size: u64,
    offset_index: IndexFile<OffsetEntry>,
    time_index: IndexFile<TimeEntry>,
    /// One past the last offset stored (the base offset when empty).
    next_offset: i64,
    /// Largest batch `maxTimestamp` in the segment, -1 when empty.
    max_timestamp: i64,
    bytes_since_index: u64,
    index_interval: u64,
    /// Wall-clock time of the first append (or, for a segment loaded from disk, its first batch's
    /// timestamp, like Kafka's rolling timestamp); drives `segment.ms`.
    rolling_ms: Option<i64>,
    unflushed: bool,
}

impl LogSegment {
    /// Creates an empty segment, replacing any leftover files of the same base offset.
    pub fn create(dir: &Path, base_offset: i64, index_interval: u32) -> io::Result<LogSegment> {
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(segment_path(dir, base_offset, LOG_SUFFIX))?;
        let (mut seg, _) = LogSegment::with_file(dir, base_offset, log, index_interval)?;
        seg.offset_index.reset()?;
        seg.time_index.reset()?;
        seg.unflushed = true;
        Ok(seg)
    }

    /// The segment over `log` with its index files loaded, and whether both are well-formed.
    fn with_file(
        dir: &Path,
        base_offset: i64,
        log: File,
        index_interval: u32,
    ) -> io::Result<(LogSegment, bool)> {
        let (offset_index, offsets_ok) =
            IndexFile::open(&segment_path(dir, base_offset, INDEX_SUFFIX))?;
        let (time_index, times_ok) =
            IndexFile::open(&segment_path(dir, base_offset, TIME_INDEX_SUFFIX))?;
        let seg = LogSegment {
            base_offset,
            log: Arc::new(log),
            dir: dir.to_path_buf(),
            size: 0,
            offset_index,
            time_index,
            next_offset: base_offset,
            max_timestamp: -1,
            bytes_since_index: 0,
            index_interval: u64::from(index_interval),
            rolling_ms: None,
            unflushed: false,
        };
        Ok((seg, offsets_ok && times_ok))
    }

    /// Opens an existing segment. With `trusted` (the segment was flushed before the recovery point)
    /// only batch headers past the last index entry are read; otherwise every batch is validated
    /// (length, magic, offsets, CRC), the first bad one and everything after it is cut off, and
    /// the indexes are rebuilt. `limit` is the next segment's base offset: batches reaching it are
    /// bad. Returns the segment, what the scan found and how many bytes were cut off.
    pub fn open(
        dir: &Path,
        base_offset: i64,
        index_interval: u32,
        trusted: bool,
        limit: Option<i64>,
        now_ms: i64,
    ) -> io::Result<(LogSegment, ScanOutcome, u64)> {
        let log = OpenOptions::new()
            .read(true)
            .write(true)
            .open(segment_path(dir, base_offset, LOG_SUFFIX))?;
        let file_len = log.metadata()?.len();
        let (mut seg, indexes_ok) = LogSegment::with_file(dir, base_offset, log, index_interval)?;
        seg.size = file_len;
        let mut outcome = None;
        if trusted && indexes_ok {
            if let Some(start) = seg.trusted_start(limit)? {
                let scan = seg.scan(start, false, limit)?;
                if scan.bad_at.is_none() {
                    outcome = Some(scan);
                }
            }
        }
        let outcome = match outcome {
            Some(o) => o,
            None => {
                seg.reset_state()?;
                // Validated data may still be only in the page cache of a crashed process.
                seg.unflushed = true;
                seg.scan(0, true, limit)?
            }
        };
        let mut truncated = 0;
        if let Some(bad) = outcome.bad_at {
            truncated = file_len - bad;
            seg.log.set_len(bad)?;
            seg.size = bad;
            seg.unflushed = true;
        }
        seg.rolling_ms = seg.first_batch_timestamp()?.map(|ts| ts.min(now_ms));
        Ok((seg, outcome, truncated))
    }

    /// Checks the loaded indexes against the log and primes the in-memory state from their last
    /// entries. Returns where the header scan must start, or `None` if the indexes must be rebuilt.
    fn trusted_start(&mut self, limit: Option<i64>) -> io::Result<Option<u64>> {
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.bytes_since_index = 0;
        let Some(last) = self.offset_index.last().copied() else {
            if !self.time_index.entries().is_empty() {
                return Ok(None);
            }
            return Ok(Some(0));
        };
        if u64::from(last.position) + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let header = self.header_at(u64::from(last.position))?;
        if header.base_offset != self.base_offset + i64::from(last.rel_offset) {
            return Ok(None);
        }
        if let Some(t) = self.time_index.last() {
            if i64::from(t.rel_offset) > header.last_offset() - self.base_offset {
                return Ok(None);
            }
            self.max_timestamp = t.timestamp;
        }
        if limit.is_some_and(|l| header.last_offset() >= l) {
            return Ok(None);
        }
        self.next_offset = header.base_offset;
        // The batch at the entry is scanned again; it is already indexed, so count from zero.
        self.bytes_since_index = 0;
        Ok(Some(u64::from(last.position)))
    }

    fn reset_state(&mut self) -> io::Result<()> {
        self.offset_index.reset()?;
        self.time_index.reset()?;
        self.next_offset = self.base_offset;
        self.max_timestamp = -1;
        self.bytes_since_index = 0;
        Ok(())
    }

    /// Walks batches from `start` to the end of the file, adding index entries as an append would.
    /// Stops at the first batch that is torn, has an impossible length or offset, wrong magic, or
    /// (with `validate`) a bad CRC.
    fn scan(&mut self, start: u64, validate: bool, limit: Option<i64>) -> io::Result<ScanOutcome> {
        let mut outcome = ScanOutcome::default();
        let mut pos = start;
        let mut buf = Vec::new();
        while pos < self.size {
            let header = match self.checked_header(pos, limit)? {
                Some(h) => h,
                None => {
                    outcome.bad_at = Some(pos);
                    break;
                }
            };
            if validate {
                buf.resize(header.total_len(), 0);
                self.log.read_exact_at(&mut buf, pos)?;
                if check_integrity(&header, &buf).is_err() {
                    outcome.bad_at = Some(pos);
                    break;
                }
            }
            self.index_batch(&header, pos)?;
            pos += header.total_len() as u64;
            outcome.batches += 1;
        }
        Ok(outcome)
    }

    /// The header at `pos` if it is structurally sound where it sits.
    fn checked_header(&self, pos: u64, limit: Option<i64>) -> io::Result<Option<BatchHeader>> {
        if pos + BATCH_HEADER_LEN as u64 > self.size {
            return Ok(None);
        }
        let h = self.header_at(pos)?;
        let sound = h.batch_length >= MIN_BATCH_LENGTH
            && pos + h.total_len() as u64 <= self.size
            && h.magic == MAGIC_V2
            && h.last_offset_delta >= 0
            && h.records_count >= 0
            && h.base_offset >= self.next_offset
            && h.last_offset() - self.base_offset <= MAX_REL_OFFSET
            && limit.is_none_or(|l| h.last_offset() < l);
        Ok(sound.then_some(h))
    }

    pub fn header_at(&self, pos: u64) -> io::Result<BatchHeader> {
        let mut buf = [0u8; BATCH_HEADER_LEN];
        self.log.read_exact_at(&mut buf, pos)?;
        BatchHeader::parse(&buf).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }

    /// Updates offsets, timestamps and indexes for a batch now stored at `pos`.
    fn index_batch(&mut self, header: &BatchHeader, pos: u64) -> io::Result<()> {
        self.max_timestamp = self.max_timestamp.max(header.max_timestamp);
        let already_indexed = self
            .offset_index
            .last()
            .is_some_and(|e| u64::from(e.position) >= pos);
        if self.bytes_since_index >= self.index_interval && !already_indexed && pos > 0 {
            self.offset_index.append(OffsetEntry {
                rel_offset: (header.base_offset - self.base_offset) as u32,
                position: pos as u32,
            })?;
            if self
                .time_index
                .last()
                .is_none_or(|t| self.max_timestamp > t.timestamp)
            {
                self.time_index.append(TimeEntry {
                    timestamp: self.max_timestamp,
                    rel_offset: (header.last_offset() - self.base_offset) as u32,
                })?;
            }
            self.bytes_since_index = 0;
        }
        self.bytes_since_index += header.total_len() as u64;
        self.next_offset = header.last_offset() + 1;
        Ok(())
    }

    pub(crate) fn first_batch_timestamp(&self) -> io::Result<Option<i64>> {
        if self.size == 0 {
            return Ok(None);
        }
        Ok(Some(self.header_at(0)?.max_timestamp))
    }

    pub fn size(&self) -> u64 {
        self.size
    }

    pub fn next_offset(&self) -> i64 {
        self.next_offset
    }

    pub fn max_timestamp(&self) -> i64 {
        self.max_timestamp
    }

    pub fn file(&self) -> &Arc<File> {
        &self.log
    }

    pub fn is_empty(&self) -> bool {
        self.size == 0
    }

    pub fn rolling_ms(&self) -> Option<i64> {
        self.rolling_ms
    }

    /// Whether a batch of `len` bytes ending at `last_offset` must go to a new segment, once
    /// `pending` more bytes have been written to this one. An empty segment takes any batch.
    pub fn is_full(
        &self,
        pending: u64,
        len: u64,
        last_offset: i64,
        segment_bytes: u64,
        max_index_bytes: u64,
    ) -> bool {
        let size = self.size + pending;
        // One more entry in each index must fit (8-byte offset and 12-byte time entries).
        let offset_index = (self.offset_index.entries().len() as u64 + 1) * 8;
        let time_index = (self.time_index.entries().len() as u64 + 1) * 12;
        size > 0
            && (size + len > segment_bytes
                || size + len > MAX_SEGMENT_FILE
                || offset_index > max_index_bytes
                || time_index > max_index_bytes
                || last_offset - self.base_offset > MAX_REL_OFFSET)
    }

    /// Writes already offset-assigned batches (`headers` with their positions relative to `data`)
    /// at the end of the segment. On a write error the segment is cut back to its previous size.
    pub fn append(
        &mut self,
        data: &[u8],
        headers: &[(BatchHeader, usize)],
        now_ms: i64,
    ) -> io::Result<()> {
        let start = self.size;
        if let Err(e) = self.log.write_all_at(data, start) {
            // Best effort: leave no partial batch behind. Recovery would cut it off anyway.
            let _ = self.log.set_len(start);
            return Err(e);
        }
        self.size += data.len() as u64;
        self.unflushed = true;
        if self.rolling_ms.is_none() {
            self.rolling_ms = Some(now_ms);
        }
        for (header, rel_pos) in headers {
            self.index_batch(header, start + *rel_pos as u64)?;
        }
        Ok(())
    }

    /// Position and header of the first batch whose last offset is >= `offset`, if any.
    pub fn find_batch(&self, offset: i64) -> io::Result<Option<(u64, BatchHeader)>> {
        if offset >= self.next_offset {
            return Ok(None);
        }
        let rel = (offset - self.base_offset).clamp(0, MAX_REL_OFFSET) as u32;
        let mut pos = self
            .offset_index
            .lookup(rel)
            .map_or(0, |e| u64::from(e.position));
        while pos < self.size {
            let h = self.header_at(pos)?;
            if h.last_offset() >= offset {
                return Ok(Some((pos, h)));
            }
            pos += h.total_len() as u64;
        }
        Ok(None)
    }

    /// Where a search for records with timestamp >= `timestamp` can start: a batch position such
    /// that every earlier batch only holds older records.
    pub fn timestamp_search_start(&self, timestamp: i64) -> io::Result<u64> {
        match self.time_index.lookup_before(timestamp) {
            None => Ok(0),
            Some(t) => {
                let offset = self.base_offset + i64::from(t.rel_offset);
                Ok(self.find_batch(offset)?.map_or(self.size, |(pos, _)| pos))
            }
        }
    }

    /// Cuts the segment so that it ends before the batch holding `offset`. Returns bytes removed.
    pub fn truncate_to(&mut self, offset: i64) -> io::Result<u64> {
        let Some((pos, _)) = self.find_batch(offset)? else {
            return Ok(0);
        };
        let removed = self.size - pos;
        self.log.set_len(pos)?;
        self.size = pos;
        self.unflushed = true;
        let keep_offsets = self
            .offset_index
            .entries()
            .partition_point(|e| u64::from(e.position) < pos);
        self.offset_index.truncate(keep_offsets)?;
        let end_rel = offset - self.base_offset;
        let keep_times = self
            .time_index
            .entries()
            .partition_point(|t| i64::from(t.rel_offset) < end_rel);
        self.time_index.truncate(keep_times)?;
        // Recompute the tail state from the surviving index entries as on a trusted open.
        let start = self.trusted_start(None)?;
        match start {
            Some(start) => {
                self.scan(start, false, None)?;
            }
            None => {
                self.reset_state()?;
                self.scan(0, false, None)?;
            }
        }
        if self.size == 0 {
            self.rolling_ms = None;
        }
        Ok(removed)
    }

    pub fn flush(&mut self) -> io::Result<()> {
        if self.unflushed {
            self.log.sync_data()?;
            self.offset_index.sync()?;
            self.time_index.sync()?;
            self.unflushed = false;
        }
        Ok(())
    }

    /// Replaces the segment's data with the cleaner's output at `cleaned` (fsynced by the caller)
    /// and reopens it. The index files go first: a crash at any point leaves either the old or
    /// the new `.log`, with missing indexes that the next open rebuilds, never a stale index. On
    /// error `self` still serves the old data (through its open file if it was already replaced).
    pub fn swap_in(&mut self, cleaned: &Path, limit: Option<i64>, now_ms: i64) -> io::Result<()> {
        let base = self.base_offset;
        for suffix in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            match fs::remove_file(segment_path(&self.dir, base, suffix)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        File::open(&self.dir)?.sync_all()?;
        fs::rename(cleaned, segment_path(&self.dir, base, LOG_SUFFIX))?;
        File::open(&self.dir)?.sync_all()?;
        let interval = u32::try_from(self.index_interval).unwrap_or(u32::MAX);
        let (seg, _, _) = LogSegment::open(&self.dir, base, interval, true, limit, now_ms)?;
        *self = seg;
        Ok(())
    }

    /// Unlinks the segment's files. Readers holding the `Arc<File>` keep reading the data.
    pub fn delete(self) -> io::Result<()> {
        for suffix in [LOG_SUFFIX, INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            match fs::remove_file(segment_path(&self.dir, self.base_offset, suffix)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        Ok(())
    }
}
