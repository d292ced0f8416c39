//! Zero-copy view of a Kafka record batch (magic v2) header, validation and in-place patching.
//!
//! Only the 61-byte header is ever parsed on the produce and fetch paths; the records stay bytes.

use std::ops::Range;

/// Length of the record batch header (magic v2), up to and including `recordsCount`.
pub const BATCH_HEADER_LEN: usize = 61;
/// `baseOffset` (8) + `batchLength` (4): the bytes before the part counted by `batchLength`.
pub const LOG_OVERHEAD: usize = 12;
/// Smallest valid `batchLength`: the header after `LOG_OVERHEAD`, with no records.
pub const MIN_BATCH_LENGTH: i32 = (BATCH_HEADER_LEN - LOG_OVERHEAD) as i32;
/// The only record format Skiff stores.
pub const MAGIC_V2: i8 = 2;

const PARTITION_LEADER_EPOCH_OFFSET: usize = 12;
const MAGIC_OFFSET: usize = 16;
const CRC_OFFSET: usize = 17;
/// The CRC covers everything from `attributes` on, which is why offset and epoch can be patched freely.
const CRC_START: usize = 21;
const ATTRIBUTES_OFFSET: usize = 21;
const MAX_TIMESTAMP_OFFSET: usize = 35;

const COMPRESSION_MASK: i16 = 0x07;
const TIMESTAMP_TYPE_BIT: i16 = 0x08;
const TRANSACTIONAL_BIT: i16 = 0x10;
const CONTROL_BIT: i16 = 0x20;

/// Compression codec ids as stored in the low three attribute bits.
pub mod codec {
    pub const NONE: u8 = 0;
    pub const GZIP: u8 = 1;
    pub const SNAPPY: u8 = 2;
    pub const LZ4: u8 = 3;
    pub const ZSTD: u8 = 4;
}

/// Why a batch (or a run of batches) was refused. Each variant maps to one Kafka error:
/// `TooLarge` -> MESSAGE_TOO_LARGE, `UnsupportedMagic` -> UNSUPPORTED_FOR_MESSAGE_FORMAT (or
/// CORRUPT_MESSAGE for clients that predate it), everything else -> CORRUPT_MESSAGE.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BatchError {
    #[error("record batch truncated: need {needed} bytes, have {available}")]
    Truncated { needed: usize, available: usize },
    #[error("record batch length field {batch_length} is invalid")]
    InvalidLength { batch_length: i32 },
    #[error("buffer holds {buffer_len} bytes but the batch is {batch_len} bytes")]
    LengthMismatch { batch_len: usize, buffer_len: usize },
    #[error("unsupported record batch magic {0}")]
    UnsupportedMagic(i8),
    #[error("record batch CRC mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch { stored: u32, computed: u32 },
    #[error("record batch has invalid records count {0}")]
    InvalidRecordsCount(i32),
    #[error("record batch has invalid last offset delta {0}")]
    InvalidLastOffsetDelta(i32),
    #[error("record batch of {size} bytes exceeds the limit of {max} bytes")]
    TooLarge { size: usize, max: usize },
}

/// The parsed fixed header of a v2 record batch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHeader {
    pub base_offset: i64,
    pub batch_length: i32,
    pub partition_leader_epoch: i32,
    pub magic: i8,
    pub crc: u32,
    pub attributes: i16,
    pub last_offset_delta: i32,
    pub base_timestamp: i64,
    pub max_timestamp: i64,
    pub producer_id: i64,
    pub producer_epoch: i16,
    pub base_sequence: i32,
    pub records_count: i32,
}

fn i64_at(buf: &[u8], at: usize) -> i64 {
    i64::from_be_bytes(buf[at..at + 8].try_into().expect("8-byte slice"))
}

fn i32_at(buf: &[u8], at: usize) -> i32 {
    i32::from_be_bytes(buf[at..at + 4].try_into().expect("4-byte slice"))
}

fn i16_at(buf: &[u8], at: usize) -> i16 {
    i16::from_be_bytes(buf[at..at + 2].try_into().expect("2-byte slice"))
}

impl BatchHeader {
    /// Parses the header fields; checks only that 61 bytes are present.
    pub fn parse(buf: &[u8]) -> Result<BatchHeader, BatchError> {
        if buf.len() < BATCH_HEADER_LEN {
            return Err(BatchError::Truncated {
                needed: BATCH_HEADER_LEN,
                available: buf.len(),
            });
        }
        Ok(BatchHeader {
            base_offset: i64_at(buf, 0),
            batch_length: i32_at(buf, 8),
            partition_leader_epoch: i32_at(buf, PARTITION_LEADER_EPOCH_OFFSET),
            magic: buf[MAGIC_OFFSET] as i8,
            crc: i32_at(buf, CRC_OFFSET) as u32,
            attributes: i16_at(buf, ATTRIBUTES_OFFSET),
            last_offset_delta: i32_at(buf, 23),
            base_timestamp: i64_at(buf, 27),
            max_timestamp: i64_at(buf, MAX_TIMESTAMP_OFFSET),
            producer_id: i64_at(buf, 43),
            producer_epoch: i16_at(buf, 51),
            base_sequence: i32_at(buf, 53),
            records_count: i32_at(buf, 57),
        })
    }

    /// Size of the whole batch on the wire and on disk.
    pub fn total_len(&self) -> usize {
        LOG_OVERHEAD + self.batch_length.max(0) as usize
    }

    /// Saturates rather than overflowing on a corrupt `baseOffset` (it is outside the CRC).
    pub fn last_offset(&self) -> i64 {
        self.base_offset
            .saturating_add(i64::from(self.last_offset_delta))
    }

    pub fn compression(&self) -> u8 {
        (self.attributes & COMPRESSION_MASK) as u8
    }

    pub fn is_log_append_time(&self) -> bool {
        self.attributes & TIMESTAMP_TYPE_BIT != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & TRANSACTIONAL_BIT != 0
    }

    pub fn is_control(&self) -> bool {
        self.attributes & CONTROL_BIT != 0
    }

    pub fn has_producer_id(&self) -> bool {
        self.producer_id >= 0
    }

    /// Sequence number of the last record; sequences wrap from `i32::MAX` to 0 (Kafka's
    /// `DefaultRecordBatch.incrementSequence`).
    pub fn last_sequence(&self) -> i32 {
        increment_sequence(self.base_sequence, self.last_offset_delta)
    }
}

/// `sequence + increment`, wrapping past `i32::MAX` to 0 as Kafka does; -1 (no sequence) stays -1.
pub fn increment_sequence(sequence: i32, increment: i32) -> i32 {
    if sequence < 0 {
        return sequence;
    }
    let next = i64::from(sequence) + i64::from(increment);
    if next > i64::from(i32::MAX) {
        (next - i64::from(i32::MAX) - 1) as i32
    } else {
        next as i32
    }
}

/// CRC-32C of the batch bytes the CRC field covers.
pub fn compute_crc(batch: &[u8]) -> u32 {
    crc32c::crc32c(&batch[CRC_START..])
}

/// Validates that `buf` is exactly one complete, intact v2 batch of at most `max_batch_bytes` bytes.
pub fn validate_batch(buf: &[u8], max_batch_bytes: usize) -> Result<BatchHeader, BatchError> {
    let header = BatchHeader::parse(buf)?;
    check_length(&header)?;
    let batch_len = header.total_len();
    if batch_len != buf.len() {
        return Err(BatchError::LengthMismatch {
            batch_len,
            buffer_len: buf.len(),
        });
    }
    if header.magic != MAGIC_V2 {
        return Err(BatchError::UnsupportedMagic(header.magic));
    }
    if batch_len > max_batch_bytes {
        return Err(BatchError::TooLarge {
            size: batch_len,
            max: max_batch_bytes,
        });
    }
    check_integrity(&header, buf)?;
    Ok(header)
}

fn check_length(header: &BatchHeader) -> Result<(), BatchError> {
    if header.batch_length < MIN_BATCH_LENGTH {
        return Err(BatchError::InvalidLength {
            batch_length: header.batch_length,
        });
    }
    Ok(())
}

/// CRC and count checks for a batch whose length and magic are already known to be right.
pub(crate) fn check_integrity(header: &BatchHeader, buf: &[u8]) -> Result<(), BatchError> {
    let computed = compute_crc(buf);
    if computed != header.crc {
        return Err(BatchError::CrcMismatch {
            stored: header.crc,
            computed,
        });
    }
    if header.records_count < 0 {
        return Err(BatchError::InvalidRecordsCount(header.records_count));
    }
    if header.last_offset_delta < 0 {
        return Err(BatchError::InvalidLastOffsetDelta(header.last_offset_delta));
    }
    Ok(())
}

/// Splits concatenated batches (a Produce request's `records`, or a log segment) into batches
/// without validating their CRC. Yields each header with its byte range; a trailing partial batch
/// or an impossible length is an error, after which iteration stops.
pub struct BatchIter<'a> {
    buf: &'a [u8],
    pos: usize,
    failed: bool,
}

impl<'a> BatchIter<'a> {
    pub fn new(buf: &'a [u8]) -> BatchIter<'a> {
        BatchIter {
            buf,
            pos: 0,
            failed: false,
        }
    }

    fn next_batch(&mut self) -> Result<(BatchHeader, Range<usize>), BatchError> {
        let rest = &self.buf[self.pos..];
        let header = BatchHeader::parse(rest)?;
        check_length(&header)?;
        let len = header.total_len();
        if len > rest.len() {
            return Err(BatchError::Truncated {
                needed: len,
                available: rest.len(),
            });
        }
        let range = self.pos..self.pos + len;
        self.pos += len;
        Ok((header, range))
    }
}

impl Iterator for BatchIter<'_> {
    type Item = Result<(BatchHeader, Range<usize>), BatchError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.failed || self.pos >= self.buf.len() {
            return None;
        }
        let item = self.next_batch();
        self.failed = item.is_err();
        Some(item)
    }
}

/// Sets `baseOffset`; the CRC does not cover it.
pub fn set_base_offset(buf: &mut [u8], offset: i64) {
    buf[0..8].copy_from_slice(&offset.to_be_bytes());
}

/// Sets `partitionLeaderEpoch`; the CRC does not cover it.
pub fn set_partition_leader_epoch(buf: &mut [u8], epoch: i32) {
    buf[PARTITION_LEADER_EPOCH_OFFSET..PARTITION_LEADER_EPOCH_OFFSET + 4]
        .copy_from_slice(&epoch.to_be_bytes());
}

/// Stamps the batch with LogAppendTime like Kafka's `DefaultRecordBatch.setMaxTimestamp`: sets the
/// timestamp-type bit and `maxTimestamp`, leaves `baseTimestamp` and the records alone (readers take
/// every record's timestamp from `maxTimestamp` for such batches), then recomputes the CRC.
pub fn set_log_append_time(buf: &mut [u8], timestamp: i64) {
    let attributes = i16_at(buf, ATTRIBUTES_OFFSET) | TIMESTAMP_TYPE_BIT;
    buf[ATTRIBUTES_OFFSET..ATTRIBUTES_OFFSET + 2].copy_from_slice(&attributes.to_be_bytes());
    buf[MAX_TIMESTAMP_OFFSET..MAX_TIMESTAMP_OFFSET + 8].copy_from_slice(&timestamp.to_be_bytes());
    let crc = compute_crc(buf);
    buf[CRC_OFFSET..CRC_OFFSET + 4].copy_from_slice(&crc.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::BatchBuilder;

    fn sample() -> Vec<u8> {
        BatchBuilder::new(1_000)
            .producer(7, 3, 10)
            .record(Some(b"k1"), Some(b"v1"))
            .record(None, Some(b"v2"))
            .record(Some(b"k3"), None)
            .build()
    }

    #[test]
    fn parses_built_batch() {
        let buf = sample();
        let h = validate_batch(&buf, 1 << 20).unwrap();
        assert_eq!(h.base_offset, 0);
        assert_eq!(h.total_len(), buf.len());
        assert_eq!(h.magic, 2);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.last_offset_delta, 2);
        assert_eq!(h.last_offset(), 2);
        assert_eq!(h.producer_id, 7);
        assert_eq!(h.producer_epoch, 3);
        assert_eq!(h.base_sequence, 10);
        assert_eq!(h.last_sequence(), 12);
        assert!(h.has_producer_id());
        assert!(!h.is_log_append_time());
        assert!(!h.is_transactional());
        assert!(!h.is_control());
        assert_eq!(h.compression(), codec::NONE);
        assert_eq!(h.base_timestamp, 1_000);
    }

    #[test]
    fn parse_needs_full_header() {
        let buf = sample();
        assert!(matches!(
            BatchHeader::parse(&buf[..60]),
            Err(BatchError::Truncated { needed: 61, .. })
        ));
    }

    #[test]
    fn sequence_wraps() {
        assert_eq!(increment_sequence(i32::MAX, 1), 0);
        assert_eq!(increment_sequence(i32::MAX - 1, 3), 1);
        assert_eq!(increment_sequence(5, 0), 5);
        assert_eq!(increment_sequence(-1, 4), -1);
    }

    #[test]
    fn validate_rejects_bad_batches() {
        let good = sample();
        let mut bad_crc = good.clone();
        *bad_crc.last_mut().unwrap() ^= 0xff;
        assert!(matches!(
            validate_batch(&bad_crc, 1 << 20),
            Err(BatchError::CrcMismatch { .. })
        ));

        assert!(matches!(
            validate_batch(&good[..good.len() - 1], 1 << 20),
            Err(BatchError::LengthMismatch { .. })
        ));
        let mut longer = good.clone();
        longer.push(0);
        assert!(matches!(
            validate_batch(&longer, 1 << 20),
            Err(BatchError::LengthMismatch { .. })
        ));

        let mut magic1 = good.clone();
        magic1[16] = 1;
        assert_eq!(
            validate_batch(&magic1, 1 << 20),
            Err(BatchError::UnsupportedMagic(1))
        );

        assert!(matches!(
            validate_batch(&good, good.len() - 1),
            Err(BatchError::TooLarge { .. })
        ));
        assert!(validate_batch(&good, good.len()).is_ok());

        let mut short_len = good.clone();
        short_len[8..12].copy_from_slice(&48i32.to_be_bytes());
        assert!(matches!(
            validate_batch(&short_len, 1 << 20),
            Err(BatchError::InvalidLength { batch_length: 48 })
        ));

        let mut neg_count = good.clone();
        neg_count[57..61].copy_from_slice(&(-1i32).to_be_bytes());
        let crc = compute_crc(&neg_count);
        neg_count[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_batch(&neg_count, 1 << 20),
            Err(BatchError::InvalidRecordsCount(-1))
        );

        let mut neg_delta = good;
        neg_delta[23..27].copy_from_slice(&(-2i32).to_be_bytes());
        let crc = compute_crc(&neg_delta);
        neg_delta[17..21].copy_from_slice(&crc.to_be_bytes());
        assert_eq!(
            validate_batch(&neg_delta, 1 << 20),
            Err(BatchError::InvalidLastOffsetDelta(-2))
        );
    }

    #[test]
    fn iter_splits_and_reports_torn_tail() {
        let a = sample();
        let b = BatchBuilder::new(5).record(None, Some(b"x")).build();
        let mut all = a.clone();
        all.extend_from_slice(&b);
        let items: Vec<_> = BatchIter::new(&all).collect::<Result<_, _>>().unwrap();
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].1, 0..a.len());
        assert_eq!(items[1].1, a.len()..all.len());
        assert_eq!(items[1].0.records_count, 1);

        assert_eq!(BatchIter::new(&[]).count(), 0);

        let torn = &all[..all.len() - 3];
        let items: Vec<_> = BatchIter::new(torn).collect();
        assert_eq!(items.len(), 2);
        assert!(items[0].is_ok());
        assert!(matches!(items[1], Err(BatchError::Truncated { .. })));

        let tiny = &all[..a.len() + 10];
        let items: Vec<_> = BatchIter::new(tiny).collect();
        assert!(matches!(items[1], Err(BatchError::Truncated { .. })));
    }

    #[test]
    fn patchers_keep_crc_valid() {
        let mut buf = sample();
        set_base_offset(&mut buf, 42);
        set_partition_leader_epoch(&mut buf, 9);
        let h = validate_batch(&buf, 1 << 20).unwrap();
        assert_eq!(h.base_offset, 42);
        assert_eq!(h.last_offset(), 44);
        assert_eq!(h.partition_leader_epoch, 9);

        set_log_append_time(&mut buf, 77_777);
        let h = validate_batch(&buf, 1 << 20).unwrap();
        assert!(h.is_log_append_time());
        assert_eq!(h.max_timestamp, 77_777);
        assert_eq!(h.base_timestamp, 1_000);
        assert_eq!(h.producer_id, 7);
    }
}
