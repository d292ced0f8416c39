//! Log compaction for `cleanup.policy=compact`: keeps the latest record of every key.
//!
//! One pass over the cleanable segments (every segment but the active one, up to a caller-given
//! bound such as the high watermark) builds a map key -> latest offset; a second pass rewrites
//! each segment that loses records into `<base>.log.cleaned`, which then atomically replaces the
//! segment's `.log` (see `LogSegment::swap_in`). Offsets, timestamps, headers (duplicate keys
//! included), producer fields and leader epochs of kept records are preserved; a batch that keeps
//! all its records is copied verbatim (still compressed), a batch that loses some is re-encoded
//! uncompressed. Control batches and records without a key are always kept. Tombstones (null
//! value) are kept until their segment's newest timestamp is `delete.retention.ms` old, so
//! consumers that read a key earlier still see its deletion.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::{modified_ms, Log, LogError};
use crate::batch::BatchHeader;
use crate::records::{BatchRecords, Record, RecordBatchBuilder, RecordsError};
use crate::segment::{segment_path, LogSegment, CLEANED_SUFFIX, LOG_SUFFIX};

/// Keys held in memory while cleaning; past it, only the segments mapped so far are cleaned this
/// round (like Kafka's bounded dedupe buffer), and the rest on a later call.
const MAX_MAP_BYTES: usize = 64 << 20;
/// Rough per-key overhead of the map besides the key bytes.
const MAP_ENTRY_OVERHEAD: usize = 48;

/// What one `Log::clean` call did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CleanerStats {
    pub segments_scanned: usize,
    pub segments_rewritten: usize,
    pub records_removed: u64,
    pub bytes_before: u64,
    pub bytes_after: u64,
}

/// Remembered between calls so an idle log is not re-read: cleaning again changes nothing until
/// a segment is rolled past `end` or a kept tombstone expires at `tombstone_expiry_ms`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CleanerCheckpoint {
    end: i64,
    tombstone_expiry_ms: i64,
}

fn cleaned_path(dir: &Path, base: i64) -> PathBuf {
    let mut name = segment_path(dir, base, LOG_SUFFIX).into_os_string();
    name.push(CLEANED_SUFFIX);
    PathBuf::from(name)
}

impl Log {
    /// Compacts the log if its cleanup policy includes `compact`. Only segments that are not
    /// active and lie entirely below `max_offset` (the high watermark, so records that a leader
    /// change may still truncate never hide older ones) are cleaned.
    pub fn clean(&mut self, now_ms: i64, max_offset: i64) -> Result<CleanerStats, LogError> {
        let mut stats = CleanerStats::default();
        if !self.config.cleanup_policy.compacts() {
            return Ok(stats);
        }
        let cleaned_end = self.cleaner_checkpoint.map_or(i64::MIN, |c| c.end);
        // Only segments written since the last pass wait for min.compaction.lag.ms, and only
        // when it is set: a record timestamped in the future must not hold compaction back.
        let min_lag = self.config.min_compaction_lag_ms;
        let min_lag_start = now_ms.saturating_sub(min_lag);
        let cleanable = self.segments[..self.segments.len() - 1]
            .iter()
            .take_while(|s| {
                s.next_offset() <= max_offset
                    && (min_lag <= 0
                        || s.next_offset() <= cleaned_end
                        || s.max_timestamp() <= min_lag_start)
            })
            .count();
        let end = match cleanable {
            0 => return Ok(stats),
            n => self.segments[n - 1].next_offset(),
        };
        if let Some(ckpt) = self.cleaner_checkpoint {
            if end <= ckpt.end && now_ms < ckpt.tombstone_expiry_ms {
                return Ok(stats);
            }
        }
        if !self.compaction_due(cleanable, cleaned_end, now_ms)? {
            return Ok(stats);
        }

        let (latest, mapped) = self.build_offset_map(cleanable)?;
        let cleaned_end = self.segments[mapped - 1].next_offset();
        let mut tombstone_expiry_ms = i64::MAX;
        // Newest first, so that removing an emptied segment does not shift those still to do.
        for i in (0..mapped).rev() {
            stats.segments_scanned += 1;
            let seg = &self.segments[i];
            let seg_ts = match seg.max_timestamp() {
                ts if ts >= 0 => ts,
                _ => modified_ms(seg.file())?,
            };
            let expiry = seg_ts.saturating_add(self.config.delete_retention_ms);
            let drop_tombstones = now_ms >= expiry;
            let path = cleaned_path(&self.dir, seg.base_offset);
            let outcome = self.rewrite_segment(seg, &path, &latest, drop_tombstones)?;
            stats.bytes_before += seg.size();
            stats.records_removed += outcome.removed;
            if outcome.kept_tombstones {
                tombstone_expiry_ms = tombstone_expiry_ms.min(expiry);
            }
            if outcome.removed == 0 && !outcome.dropped_batches {
                fs::remove_file(&path)?;
                stats.bytes_after += seg.size();
                continue;
            }
            let limit = self.segments.get(i + 1).map(|s| s.base_offset);
            self.segments[i].swap_in(&path, limit, now_ms)?;
            stats.segments_rewritten += 1;
            stats.bytes_after += self.segments[i].size();
            // An emptied segment is dropped, except the first: its base offset is the log start
            // offset, which compaction must not move.
            if i > 0 && self.segments[i].is_empty() {
                self.segments.remove(i).delete()?;
                self.dir_dirty = true;
            }
        }
        self.cleaner_checkpoint = Some(CleanerCheckpoint {
            end: cleaned_end,
            tombstone_expiry_ms: if mapped < cleanable {
                // Segments were left unmapped: there is more to do right away.
                now_ms
            } else {
                tombstone_expiry_ms
            },
        });
        Ok(stats)
    }

    /// Whether the first `cleanable` segments are worth compacting now: enough of their bytes
    /// came after `cleaned_end` (`min.cleanable.dirty.ratio`), or the oldest record after it has
    /// waited `max.compaction.lag.ms`. An expired tombstone also makes a pass due.
    fn compaction_due(
        &self,
        cleanable: usize,
        cleaned_end: i64,
        now_ms: i64,
    ) -> Result<bool, LogError> {
        if self
            .cleaner_checkpoint
            .is_some_and(|c| now_ms >= c.tombstone_expiry_ms)
        {
            return Ok(true);
        }
        let segments = &self.segments[..cleanable];
        let total: u64 = segments.iter().map(|s| s.size()).sum();
        let dirty: Vec<&LogSegment> = segments
            .iter()
            .filter(|s| s.next_offset() > cleaned_end)
            .collect();
        let dirty_bytes: u64 = dirty.iter().map(|s| s.size()).sum();
        if total > 0 && dirty_bytes as f64 / total as f64 >= self.config.min_cleanable_dirty_ratio {
            return Ok(true);
        }
        let Some(first_dirty) = dirty.first() else {
            return Ok(false);
        };
        if self.config.max_compaction_lag_ms == i64::MAX {
            return Ok(false);
        }
        let oldest = match first_dirty.first_batch_timestamp()? {
            Some(ts) if ts >= 0 => ts,
            _ => modified_ms(first_dirty.file())?,
        };
        Ok(now_ms.saturating_sub(oldest) >= self.config.max_compaction_lag_ms)
    }

    /// Key -> latest offset over the first `cleanable` segments, stopping after the segment that
    /// fills the map. Returns the map and how many segments it covers.
    fn build_offset_map(
        &self,
        cleanable: usize,
    ) -> Result<(HashMap<Vec<u8>, i64>, usize), LogError> {
        let mut latest: HashMap<Vec<u8>, i64> = HashMap::new();
        let mut map_bytes = 0;
        let mut mapped = 0;
        for seg in &self.segments[..cleanable] {
            for_each_batch(seg, |header, bytes| {
                if header.is_control() {
                    return Ok(());
                }
                let batch = BatchRecords::new(bytes);
                let Some(records) = decoded(header, &batch) else {
                    return Ok(());
                };
                for record in records {
                    if let Some(key) = record.key {
                        match latest.get_mut(key) {
                            Some(offset) => *offset = record.offset,
                            None => {
                                map_bytes += key.len() + MAP_ENTRY_OVERHEAD;
                                latest.insert(key.to_vec(), record.offset);
                            }
                        }
                    }
                }
                Ok(())
            })?;
            mapped += 1;
            if map_bytes >= MAX_MAP_BYTES {
                break;
            }
        }
        Ok((latest, mapped))
    }

    fn rewrite_segment(
        &self,
        seg: &LogSegment,
        path: &Path,
        latest: &HashMap<Vec<u8>, i64>,
        drop_tombstones: bool,
    ) -> Result<RewriteOutcome, LogError> {
        let mut out = io::BufWriter::new(
            OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(path)?,
        );
        let mut outcome = RewriteOutcome::default();
        let keep = |r: &Record<'_>| match r.key {
            None => true,
            Some(key) => {
                latest.get(key).is_none_or(|&l| l <= r.offset)
                    && !(drop_tombstones && r.value.is_none())
            }
        };
        for_each_batch(seg, |header, bytes| {
            if header.is_control() {
                out.write_all(bytes)?;
                return Ok(());
            }
            let batch = BatchRecords::new(bytes);
            let Some(records) = decoded(header, &batch) else {
                out.write_all(bytes)?;
                return Ok(());
            };
            let mut kept = Vec::new();
            let mut total = 0u64;
            for record in records {
                total += 1;
                if keep(&record) {
                    if record.key.is_some() && record.value.is_none() {
                        outcome.kept_tombstones = true;
                    }
                    kept.push(record);
                }
            }
            outcome.removed += total - kept.len() as u64;
            if kept.len() as u64 == total {
                out.write_all(bytes)?;
                return Ok(());
            }
            let keep_empty = header.has_producer_id()
                && self
                    .producers
                    .is_last_batch(header.producer_id, header.last_offset());
            if kept.is_empty() && !keep_empty {
                outcome.dropped_batches = true;
                return Ok(());
            }
            let mut builder = RecordBatchBuilder::like(header, header.base_offset)
                .base_timestamp(header.base_timestamp);
            for r in &kept {
                builder.push(r.offset, r.timestamp, r.key, r.value, &r.headers)?;
            }
            builder.set_last_offset(header.last_offset())?;
            out.write_all(&builder.build())?;
            Ok(())
        })?;
        let file: File = out.into_inner().map_err(io::IntoInnerError::into_error)?;
        file.sync_all()?;
        Ok(outcome)
    }
}

/// The records of a batch, or `None` when they cannot be decoded (a producer's batch is checked
/// only for its length, magic and CRC on the way in): such a batch is kept as it is and its keys
/// shadow nothing, rather than stopping compaction of the whole partition for good.
fn decoded<'a>(
    header: &BatchHeader,
    batch: &'a Result<BatchRecords<'_>, RecordsError>,
) -> Option<Vec<Record<'a>>> {
    let error = match batch {
        Ok(batch) => match batch.iter().collect::<Result<Vec<_>, _>>() {
            Ok(records) => return Some(records),
            Err(error) => error.to_string(),
        },
        Err(error) => error.to_string(),
    };
    tracing::warn!(
        base_offset = header.base_offset,
        %error,
        "compaction keeps a batch whose records cannot be decoded as it is"
    );
    None
}

#[derive(Debug, Default)]
struct RewriteOutcome {
    removed: u64,
    dropped_batches: bool,
    kept_tombstones: bool,
}

/// Calls `f` with every batch of the segment, read whole.
fn for_each_batch(
    seg: &LogSegment,
    mut f: impl FnMut(&BatchHeader, &[u8]) -> Result<(), LogError>,
) -> Result<(), LogError> {
    use std::os::unix::fs::FileExt;
    let mut pos = 0;
    let mut buf = Vec::new();
    while pos < seg.size() {
        let header = seg.header_at(pos)?;
        buf.resize(header.total_len(), 0);
        seg.file().read_exact_at(&mut buf, pos)?;
        f(&header, &buf)?;
        pos += header.total_len() as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::{codec, BatchIter};
    use crate::log::{AppendOutcome, CleanupPolicy, LogConfig, PRODUCER_SNAPSHOT_FILE};
    use crate::records::RecordHeader;
    use crate::testing::BatchBuilder;

    type Owned = (
        i64,
        i64,
        Option<Vec<u8>>,
        Option<Vec<u8>>,
        Vec<(Vec<u8>, Option<Vec<u8>>)>,
    );

    fn config() -> LogConfig {
        LogConfig {
            segment_bytes: 1,
            segment_ms: None,
            retention_ms: Some(0),
            cleanup_policy: CleanupPolicy::Compact,
            delete_retention_ms: 1_000,
            ..LogConfig::default()
        }
    }

    fn records(log: &Log) -> Vec<Owned> {
        let info = log
            .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
            .unwrap();
        let bytes = info.read_all().unwrap();
        let mut out = Vec::new();
        for item in BatchIter::new(&bytes) {
            let (_, range) = item.unwrap();
            crate::batch::validate_batch(&bytes[range.clone()], usize::MAX).unwrap();
            for r in BatchRecords::new(&bytes[range]).unwrap().iter() {
                let r = r.unwrap();
                out.push((
                    r.offset,
                    r.timestamp,
                    r.key.map(<[u8]>::to_vec),
                    r.value.map(<[u8]>::to_vec),
                    r.headers
                        .iter()
                        .map(|h| (h.key.to_vec(), h.value.map(<[u8]>::to_vec)))
                        .collect(),
                ));
            }
        }
        out
    }

    fn append(log: &mut Log, b: BatchBuilder) {
        log.append(&mut b.build(), 0, 0).unwrap();
    }

    /// Offsets 0..=8 over six segments; the last one is active.
    fn sample_log(dir: &Path) -> Log {
        let (mut log, _) = Log::open(dir, config(), 0).unwrap();
        let dup_headers = [
            RecordHeader {
                key: b"h",
                value: Some(b"1"),
            },
            RecordHeader {
                key: b"h",
                value: None,
            },
            RecordHeader {
                key: b"h",
                value: Some(b"2"),
            },
        ];
        append(
            &mut log,
            BatchBuilder::new(10)
                .record(Some(b"a"), Some(b"a0"))
                .record_at(11, Some(b"b"), Some(b"b0")),
        );
        append(
            &mut log,
            BatchBuilder::new(20)
                .compression(codec::GZIP)
                .record(Some(b"a"), Some(b"a1"))
                .record_with(21, None, Some(b"no key"), &dup_headers)
                .record_at(25, Some(b"c"), Some(b"c0")),
        );
        append(&mut log, BatchBuilder::new(30).record(Some(b"b"), None));
        append(
            &mut log,
            BatchBuilder::new(40).record(Some(b"c"), Some(b"c1")),
        );
        append(
            &mut log,
            BatchBuilder::new(50).record(Some(b"d"), Some(b"d0")),
        );
        append(
            &mut log,
            BatchBuilder::new(60).record(Some(b"a"), Some(b"a2")),
        );
        log
    }

    fn first_offset(log: &Log, offset: i64) -> Option<i64> {
        log.read(offset, usize::MAX, i64::MAX, true)
            .unwrap()
            .first_offset
    }

    fn offsets(log: &Log) -> Vec<i64> {
        records(log).iter().map(|r| r.0).collect()
    }

    /// A producer's batch with a valid CRC whose records do not decode: it claims two records
    /// and holds one (key "k", value "p"). It used to stop compaction of its partition for good.
    const UNDECODABLE_BATCH: [u8; 71] = [
        0, 0, 0, 0, 0, 0, 0, 0, // base offset
        0, 0, 0, 59, // batch length
        0, 0, 0, 0, // partition leader epoch
        2, // magic
        0x04, 0x8e, 0x44, 0x15, // CRC-32C
        0, 0, // attributes
        0, 0, 0, 0, // last offset delta
        0, 0, 0, 0, 0, 0, 0, 0, // base timestamp
        0, 0, 0, 0, 0, 0, 0, 0, // max timestamp
        0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, // producer id
        0xff, 0xff, // producer epoch
        0xff, 0xff, 0xff, 0xff, // base sequence
        0, 0, 0, 2, // records count: two
        16, 0, 0, 0, 2, b'k', 2, b'p', 0, // the one record
        0, // and nothing after it
    ];

    #[test]
    fn a_batch_whose_records_do_not_decode_is_kept_and_compaction_goes_on() {
        assert!(crate::batch::validate_batch(&UNDECODABLE_BATCH, usize::MAX).is_ok());
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config(), 0).unwrap();
        append(
            &mut log,
            BatchBuilder::new(0).record(Some(b"k"), Some(b"v0")),
        );
        log.append(&mut UNDECODABLE_BATCH.clone(), 0, 0).unwrap();
        append(
            &mut log,
            BatchBuilder::new(0).record(Some(b"k"), Some(b"v1")),
        );
        append(
            &mut log,
            BatchBuilder::new(0).record(Some(b"x"), Some(b"x")),
        );
        let stats = log.clean(10, i64::MAX).unwrap();
        assert_eq!(stats.records_removed, 1, "k=v0 is superseded by k=v1");
        let info = log.read(0, usize::MAX, i64::MAX, true).unwrap();
        let bytes = info.read_all().unwrap();
        let batches: Vec<_> = BatchIter::new(&bytes).map(Result::unwrap).collect();
        let bases: Vec<_> = batches.iter().map(|(h, _)| h.base_offset).collect();
        assert_eq!(bases, vec![1, 2, 3]);
        let mut kept = UNDECODABLE_BATCH;
        kept[7] = 1;
        assert_eq!(
            &bytes[batches[0].1.clone()],
            kept,
            "kept byte for byte at its offset"
        );
    }

    #[test]
    fn a_record_from_the_future_does_not_hold_compaction_back() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config(), 0).unwrap();
        let far = 10_000_000_000_000;
        append(
            &mut log,
            BatchBuilder::new(far).record(Some(b"a"), Some(b"a0")),
        );
        append(
            &mut log,
            BatchBuilder::new(20).record(Some(b"a"), Some(b"a1")),
        );
        append(
            &mut log,
            BatchBuilder::new(30).record(Some(b"b"), Some(b"b0")),
        );
        let stats = log.clean(100, i64::MAX).unwrap();
        assert_eq!(
            stats.records_removed, 1,
            "a0 superseded, despite its timestamp"
        );
    }

    #[test]
    fn compaction_waits_for_the_lag_and_the_dirty_ratio() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = sample_log(dir.path());
        // Segments hold timestamps 10..=60: with a 25 ms minimum lag at 50, only the first two
        // (newest record 25) may be compacted, so b0 (superseded in the third) stays.
        log.set_config(LogConfig {
            min_compaction_lag_ms: 25,
            ..config()
        });
        let stats = log.clean(50, i64::MAX).unwrap();
        assert_eq!(stats.segments_scanned, 2);
        assert_eq!(stats.records_removed, 1, "only a0, superseded by a1");
        assert!(
            offsets(&log).contains(&1),
            "b0 stays: its tombstone is too recent"
        );

        // Nothing new: 0% dirty is below any ratio, and no record waited past the max lag.
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.9,
            ..config()
        });
        append(
            &mut log,
            BatchBuilder::new(70).record(Some(b"d"), Some(b"d1")),
        );
        // The segments after the last pass are 4 of 6 compactable ones, but less than 90 % of
        // their bytes.
        assert_eq!(log.clean(80, i64::MAX).unwrap().segments_scanned, 0);
        log.set_config(LogConfig {
            min_cleanable_dirty_ratio: 0.9,
            max_compaction_lag_ms: 40,
            ..config()
        });
        // The oldest uncompacted record (timestamp 30) has waited 40 ms at 70: due now.
        let stats = log.clean(70, i64::MAX).unwrap();
        assert!(stats.segments_scanned > 0);
        assert!(
            !offsets(&log).contains(&1),
            "b0 superseded by the tombstone"
        );
    }

    #[test]
    fn keeps_latest_per_key_and_preserves_everything_else() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = sample_log(dir.path());
        let before = records(&log);
        assert_eq!(log.segment_count(), 6);
        let stats = log.clean(500, i64::MAX).unwrap();
        assert_eq!(stats.segments_scanned, 5);
        // a0 superseded by a1 (a2 is in the active segment, so it does not count yet), b0 by
        // the b tombstone (younger than delete.retention.ms, so it stays), c0 by c1.
        assert_eq!(stats.records_removed, 3);
        assert_eq!(stats.segments_rewritten, 2);
        let after = records(&log);
        assert_eq!(offsets(&log), vec![2, 3, 5, 6, 7, 8]);
        for r in &after {
            assert!(before.contains(r), "record {r:?} changed");
        }
        assert_eq!(
            after[1].4.len(),
            3,
            "duplicate header keys survive re-encoding"
        );
        assert_eq!(log.log_end_offset(), 9);
        // The emptied first segment stays so that the log start offset does not move.
        assert_eq!(log.segment_count(), 6);
        assert_eq!(log.log_start_offset(), 0);
        // Reads in a removed range land on the next batch.
        assert_eq!(first_offset(&log, 0), Some(2));
        assert_eq!(first_offset(&log, 4), Some(2));
        // Idle: nothing to do.
        assert_eq!(log.clean(600, i64::MAX).unwrap().segments_scanned, 0);
        // Tombstone expiry (segment timestamp 30 + 1000); its emptied segment goes.
        let stats = log.clean(1_030, i64::MAX).unwrap();
        assert_eq!(stats.records_removed, 1);
        assert_eq!(log.segment_count(), 5);
        assert_eq!(offsets(&log), vec![2, 3, 6, 7, 8]);
        assert_eq!(first_offset(&log, 5), Some(6));
        // Survives reopen (crash, so every segment is validated again).
        drop(log);
        let (mut log, report) = Log::open(dir.path(), config(), 0).unwrap();
        assert_eq!(report.truncated_bytes, 0);
        assert_eq!(offsets(&log), vec![2, 3, 6, 7, 8]);
        let mut next = BatchBuilder::new(0).record(Some(b"z"), None).build();
        assert!(matches!(
            log.append(&mut next, 0, 0),
            Ok(AppendOutcome::Appended { base_offset: 9, .. })
        ));
    }

    #[test]
    fn bounded_by_max_offset_and_policy() {
        let dir = tempfile::tempdir().unwrap();
        let mut log = sample_log(dir.path());
        // Only the first two segments end at or below offset 5.
        let stats = log.clean(500, 5).unwrap();
        assert_eq!(stats.segments_scanned, 2);
        assert_eq!(stats.records_removed, 1, "a0 superseded by a1 within range");
        let mut deleting = log;
        deleting.set_config(LogConfig {
            cleanup_policy: CleanupPolicy::Delete,
            ..config()
        });
        assert_eq!(
            deleting.clean(500, i64::MAX).unwrap(),
            CleanerStats::default()
        );
    }

    #[test]
    fn leftovers_of_an_interrupted_clean_are_harmless() {
        let dir = tempfile::tempdir().unwrap();
        let log = sample_log(dir.path());
        let before = records(&log);
        log.close().unwrap();
        fs::write(cleaned_path(dir.path(), 0), b"partial").unwrap();
        // Crash between removing indexes and renaming.
        fs::remove_file(segment_path(dir.path(), 2, crate::segment::INDEX_SUFFIX)).unwrap();
        let (log, _) = Log::open(dir.path(), config(), 0).unwrap();
        assert!(!cleaned_path(dir.path(), 0).exists());
        assert_eq!(records(&log), before);
    }

    #[test]
    fn producer_last_batch_is_kept_empty() {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = Log::open(dir.path(), config(), 0).unwrap();
        let b = BatchBuilder::new(0)
            .producer(5, 0, 0)
            .record(Some(b"k"), Some(b"v0"))
            .build();
        log.append(&mut b.clone(), 0, 0).unwrap();
        append(
            &mut log,
            BatchBuilder::new(0).record(Some(b"k"), Some(b"v1")),
        );
        append(
            &mut log,
            BatchBuilder::new(0).record(Some(b"x"), Some(b"x")),
        );
        let stats = log.clean(10, i64::MAX).unwrap();
        assert_eq!(stats.records_removed, 1);
        assert_eq!(log.segment_base_offsets()[0], 0);
        let info = log.read(0, usize::MAX, i64::MAX, true).unwrap();
        let bytes = info.read_all().unwrap();
        let first = BatchHeader::parse(&bytes).unwrap();
        assert_eq!(
            (first.base_offset, first.records_count, first.producer_id),
            (0, 0, 5)
        );
        log.close().unwrap();
        fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT_FILE)).unwrap();
        let (mut log, _) = Log::open(dir.path(), config(), 0).unwrap();
        assert!(matches!(
            log.append(&mut b.clone(), 0, 0),
            Ok(AppendOutcome::Duplicate { base_offset: 0, .. })
        ));
    }
}
