//! Idempotent-producer state of one partition, mirroring Kafka's `ProducerStateManager`.
//!
//! Per producer id: its current epoch and the metadata of its last 5 appended batches, enough to
//! answer a retried batch with its original offsets and to reject gaps in sequence numbers.

use std::collections::{HashMap, VecDeque};
use std::fs;
use std::io;
use std::path::Path;

use crate::batch::{increment_sequence, BatchHeader};
use crate::LogError;

/// Kafka's producers keep at most 5 requests in flight per partition, so a retry can only
/// concern one of the last 5 batches.
pub(crate) const BATCHES_PER_PRODUCER: usize = 5;

const SNAPSHOT_MAGIC: &[u8; 4] = b"SKPS";
const SNAPSHOT_VERSION: u32 = 1;
const NO_EPOCH: i16 = -1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BatchMeta {
    pub first_seq: i32,
    pub last_seq: i32,
    pub base_offset: i64,
    pub last_offset: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct ProducerEntry {
    pub epoch: i16,
    pub batches: VecDeque<BatchMeta>,
    /// Largest batch `maxTimestamp` seen from this producer; drives expiration like Kafka's
    /// `producer.id.expiration.ms`.
    pub last_timestamp: i64,
}

impl ProducerEntry {
    fn new() -> ProducerEntry {
        ProducerEntry {
            epoch: NO_EPOCH,
            batches: VecDeque::new(),
            last_timestamp: -1,
        }
    }

    fn last_seq(&self) -> i32 {
        self.batches.back().map_or(-1, |b| b.last_seq)
    }

    fn last_offset(&self) -> i64 {
        self.batches.back().map_or(-1, |b| b.last_offset)
    }
}

/// One idempotent producer's state in a partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ActiveProducer {
    pub producer_id: i64,
    pub epoch: i16,
    /// The sequence number of its last batch's last record; -1 before any.
    pub last_sequence: i32,
    /// The largest batch timestamp seen from it; -1 before any.
    pub last_timestamp: i64,
}

/// Outcome of checking one batch against the producer state.
pub(crate) enum Check {
    Append,
    Duplicate(BatchMeta),
}

#[derive(Debug, Default)]
pub(crate) struct ProducerStates {
    producers: HashMap<i64, ProducerEntry>,
}

/// Changes to producer entries for one append, applied only when the whole append succeeds.
#[derive(Default)]
pub(crate) struct Staged {
    entries: HashMap<i64, ProducerEntry>,
}

impl ProducerStates {
    pub fn len(&self) -> usize {
        self.producers.len()
    }

    /// Kafka's `ProducerAppendInfo.checkProducerEpoch` + `checkSequence`, and the duplicate lookup
    /// of `ProducerStateEntry.findDuplicateBatch`, against the state as staged so far.
    pub fn check(&self, staged: &Staged, h: &BatchHeader) -> Result<Check, LogError> {
        let entry = staged
            .entries
            .get(&h.producer_id)
            .or_else(|| self.producers.get(&h.producer_id));
        let Some(entry) = entry else {
            // Unknown producer (new, or its batches were removed by retention or DeleteRecords):
            // Kafka accepts any sequence since KIP-360.
            return Ok(Check::Append);
        };
        if h.producer_epoch < entry.epoch {
            return Err(LogError::InvalidProducerEpoch {
                producer_id: h.producer_id,
                current: entry.epoch,
                received: h.producer_epoch,
            });
        }
        if h.is_control() {
            return Ok(Check::Append);
        }
        if h.producer_epoch == entry.epoch {
            let last_seq = h.last_sequence();
            if let Some(dup) = entry
                .batches
                .iter()
                .find(|b| b.first_seq == h.base_sequence && b.last_seq == last_seq)
            {
                return Ok(Check::Duplicate(*dup));
            }
            let current = entry.last_seq();
            if !in_sequence(current, h.base_sequence) {
                return Err(LogError::OutOfOrderSequence {
                    producer_id: h.producer_id,
                    expected: increment_sequence(current, 1).max(0),
                    received: h.base_sequence,
                });
            }
        } else if h.base_sequence != 0 && entry.epoch != NO_EPOCH {
            return Err(LogError::OutOfOrderSequence {
                producer_id: h.producer_id,
                expected: 0,
                received: h.base_sequence,
            });
        }
        Ok(Check::Append)
    }

    /// Records a batch (with its final offsets) in `staged`.
    pub fn stage(&self, staged: &mut Staged, h: &BatchHeader) {
        let entry = staged.entries.entry(h.producer_id).or_insert_with(|| {
            self.producers
                .get(&h.producer_id)
                .cloned()
                .unwrap_or_else(ProducerEntry::new)
        });
        apply(entry, h);
    }

    pub fn commit(&mut self, staged: Staged) {
        self.producers.extend(staged.entries);
    }

    /// Applies a batch read back from the log (rebuilding state on open).
    pub fn replay(&mut self, h: &BatchHeader) {
        if h.has_producer_id() {
            apply(
                self.producers
                    .entry(h.producer_id)
                    .or_insert_with(ProducerEntry::new),
                h,
            );
        }
    }

    /// Whether the batch ending at `last_offset` is the latest batch of `producer_id`; the
    /// cleaner keeps such a batch (emptied if need be) so the producer's sequence survives a
    /// rebuild of the state from the log.
    pub fn is_last_batch(&self, producer_id: i64, last_offset: i64) -> bool {
        self.producers
            .get(&producer_id)
            .is_some_and(|e| e.last_offset() == last_offset)
    }

    /// Every producer with retained state, by id, as Kafka's DescribeProducers reports them.
    pub fn active(&self) -> Vec<ActiveProducer> {
        let mut active: Vec<ActiveProducer> = self
            .producers
            .iter()
            .map(|(&producer_id, e)| ActiveProducer {
                producer_id,
                epoch: e.epoch,
                last_sequence: e.last_seq(),
                last_timestamp: e.last_timestamp,
            })
            .collect();
        active.sort_by_key(|p| p.producer_id);
        active
    }

    /// Forgets producers whose last batch is below the log start offset, as Kafka does when
    /// retention or DeleteRecords removes their data.
    pub fn evict_below(&mut self, log_start_offset: i64) {
        self.producers
            .retain(|_, e| e.last_offset() >= log_start_offset);
    }

    /// Forgets producers idle (by batch timestamp) for at least `expiration_ms`.
    pub fn expire(&mut self, now_ms: i64, expiration_ms: i64) {
        self.producers
            .retain(|_, e| now_ms.saturating_sub(e.last_timestamp) < expiration_ms);
    }

    /// Snapshot file: magic "SKPS", u32 version, i64 offset (the state covers the log below it),
    /// u32 producer count, then per producer i64 id, i16 epoch, i64 last timestamp, u8 batch count
    /// and per batch i32 first seq, i32 last seq, i64 base offset, i64 last offset; finally a
    /// CRC-32C of everything before it. All big-endian.
    pub fn write_snapshot(&self, path: &Path, offset: i64, sync: bool) -> io::Result<()> {
        let mut out = Vec::new();
        out.extend_from_slice(SNAPSHOT_MAGIC);
        out.extend_from_slice(&SNAPSHOT_VERSION.to_be_bytes());
        out.extend_from_slice(&offset.to_be_bytes());
        out.extend_from_slice(&(self.producers.len() as u32).to_be_bytes());
        let mut ids: Vec<_> = self.producers.keys().copied().collect();
        ids.sort_unstable();
        for id in ids {
            let e = &self.producers[&id];
            out.extend_from_slice(&id.to_be_bytes());
            out.extend_from_slice(&e.epoch.to_be_bytes());
            out.extend_from_slice(&e.last_timestamp.to_be_bytes());
            out.push(e.batches.len() as u8);
            for b in &e.batches {
                out.extend_from_slice(&b.first_seq.to_be_bytes());
                out.extend_from_slice(&b.last_seq.to_be_bytes());
                out.extend_from_slice(&b.base_offset.to_be_bytes());
                out.extend_from_slice(&b.last_offset.to_be_bytes());
            }
        }
        let crc = crc32c::crc32c(&out);
        out.extend_from_slice(&crc.to_be_bytes());
        crate::log::write_atomically(path, &out, sync)
    }

    /// Loads a snapshot; `None` if it is missing or fails its checks (the caller then rebuilds the
    /// state from the log).
    pub fn read_snapshot(path: &Path) -> io::Result<Option<(ProducerStates, i64)>> {
        let raw = match fs::read(path) {
            Ok(raw) => raw,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        Ok(parse_snapshot(&raw))
    }
}

fn parse_snapshot(raw: &[u8]) -> Option<(ProducerStates, i64)> {
    let (body, crc) = raw.split_at_checked(raw.len().checked_sub(4)?)?;
    if crc32c::crc32c(body).to_be_bytes() != crc {
        return None;
    }
    let mut r = Reader { buf: body };
    if r.take(4)? != SNAPSHOT_MAGIC || r.u32()? != SNAPSHOT_VERSION {
        return None;
    }
    let offset = r.i64()?;
    let count = r.u32()?;
    let mut producers = HashMap::new();
    for _ in 0..count {
        let id = r.i64()?;
        let epoch = i16::from_be_bytes(r.take(2)?.try_into().ok()?);
        let last_timestamp = r.i64()?;
        let n = r.take(1)?[0];
        let mut batches = VecDeque::with_capacity(usize::from(n));
        for _ in 0..n {
            batches.push_back(BatchMeta {
                first_seq: r.u32()? as i32,
                last_seq: r.u32()? as i32,
                base_offset: r.i64()?,
                last_offset: r.i64()?,
            });
        }
        producers.insert(
            id,
            ProducerEntry {
                epoch,
                batches,
                last_timestamp,
            },
        );
    }
    r.buf
        .is_empty()
        .then_some((ProducerStates { producers }, offset))
}

struct Reader<'a> {
    buf: &'a [u8],
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let (head, tail) = self.buf.split_at_checked(n)?;
        self.buf = tail;
        Some(head)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_be_bytes(self.take(4)?.try_into().ok()?))
    }

    fn i64(&mut self) -> Option<i64> {
        Some(i64::from_be_bytes(self.take(8)?.try_into().ok()?))
    }
}

fn in_sequence(last_seq: i32, next_seq: i32) -> bool {
    i64::from(next_seq) == i64::from(last_seq) + 1 || (next_seq == 0 && last_seq == i32::MAX)
}

fn apply(entry: &mut ProducerEntry, h: &BatchHeader) {
    if h.producer_epoch != entry.epoch {
        entry.epoch = h.producer_epoch;
        entry.batches.clear();
    }
    entry.last_timestamp = entry.last_timestamp.max(h.max_timestamp);
    if h.is_control() || h.base_sequence < 0 {
        return;
    }
    if entry.batches.len() == BATCHES_PER_PRODUCER {
        entry.batches.pop_front();
    }
    entry.batches.push_back(BatchMeta {
        first_seq: h.base_sequence,
        last_seq: h.last_sequence(),
        base_offset: h.base_offset,
        last_offset: h.last_offset(),
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header(pid: i64, epoch: i16, seq: i32, count: i32, base_offset: i64) -> BatchHeader {
        BatchHeader {
            base_offset,
            batch_length: 49,
            partition_leader_epoch: 0,
            magic: 2,
            crc: 0,
            attributes: 0,
            last_offset_delta: count - 1,
            base_timestamp: 0,
            max_timestamp: 0,
            producer_id: pid,
            producer_epoch: epoch,
            base_sequence: seq,
            records_count: count,
        }
    }

    fn append(s: &mut ProducerStates, h: &BatchHeader) -> Result<Check, LogError> {
        let mut staged = Staged::default();
        let c = s.check(&staged, h)?;
        if let Check::Append = c {
            s.stage(&mut staged, h);
            s.commit(staged);
        }
        Ok(c)
    }

    #[test]
    fn sequence_rules() {
        let mut s = ProducerStates::default();
        // Unknown producer: any sequence is accepted.
        assert!(matches!(
            append(&mut s, &header(1, 0, 7, 3, 0)),
            Ok(Check::Append)
        ));
        assert!(matches!(
            append(&mut s, &header(1, 0, 10, 2, 3)),
            Ok(Check::Append)
        ));
        // Retry of an earlier batch.
        match append(&mut s, &header(1, 0, 7, 3, 99)) {
            Ok(Check::Duplicate(m)) => assert_eq!((m.base_offset, m.last_offset), (0, 2)),
            _ => panic!("expected duplicate"),
        }
        // Gap.
        assert!(matches!(
            append(&mut s, &header(1, 0, 13, 1, 5)),
            Err(LogError::OutOfOrderSequence {
                expected: 12,
                received: 13,
                ..
            })
        ));
        // Stale epoch.
        assert!(matches!(
            append(&mut s, &header(1, -1, 12, 1, 5)),
            Err(LogError::InvalidProducerEpoch {
                current: 0,
                received: -1,
                ..
            })
        ));
        // New epoch must start at 0.
        assert!(matches!(
            append(&mut s, &header(1, 1, 12, 1, 5)),
            Err(LogError::OutOfOrderSequence { expected: 0, .. })
        ));
        assert!(matches!(
            append(&mut s, &header(1, 1, 0, 1, 5)),
            Ok(Check::Append)
        ));
    }

    #[test]
    fn sequence_wraps_and_only_five_are_remembered() {
        let mut s = ProducerStates::default();
        append(&mut s, &header(2, 0, i32::MAX - 1, 2, 0))
            .ok()
            .unwrap();
        assert!(matches!(
            append(&mut s, &header(2, 0, 0, 1, 2)),
            Ok(Check::Append)
        ));
        for i in 1..=5 {
            append(&mut s, &header(2, 0, i, 1, 2 + i64::from(i)))
                .ok()
                .unwrap();
        }
        // The first two batches fell out of the window: no longer duplicates, now out of order.
        assert!(append(&mut s, &header(2, 0, 0, 1, 100)).is_err());
        assert!(matches!(
            append(&mut s, &header(2, 0, 1, 1, 100)),
            Ok(Check::Duplicate(_))
        ));
    }

    #[test]
    fn snapshot_round_trip_and_corruption() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.snapshot");
        let mut s = ProducerStates::default();
        append(&mut s, &header(1, 3, 0, 2, 0)).ok().unwrap();
        append(&mut s, &header(9, 0, 5, 1, 2)).ok().unwrap();
        s.write_snapshot(&path, 3, true).unwrap();
        let (loaded, offset) = ProducerStates::read_snapshot(&path).unwrap().unwrap();
        assert_eq!(offset, 3);
        assert_eq!(loaded.producers, s.producers);
        let mut raw = fs::read(&path).unwrap();
        raw[10] ^= 1;
        fs::write(&path, raw).unwrap();
        assert!(ProducerStates::read_snapshot(&path).unwrap().is_none());
        fs::remove_file(&path).unwrap();
        assert!(ProducerStates::read_snapshot(&path).unwrap().is_none());
    }

    #[test]
    fn eviction() {
        let mut s = ProducerStates::default();
        append(&mut s, &header(1, 0, 0, 2, 0)).ok().unwrap();
        append(&mut s, &header(2, 0, 0, 2, 2)).ok().unwrap();
        s.evict_below(2);
        assert_eq!(s.len(), 1);
        s.expire(10, 5);
        assert_eq!(s.len(), 0);
    }
}
