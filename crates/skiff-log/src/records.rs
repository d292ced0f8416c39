//! Decoding (and, for the cleaner, encoding) of the records inside a v2 record batch, and the
//! recompression a topic's `compression.type` asks for.
//!
//! Only offset-for-timestamp lookups, compaction and recompression look inside batches; produce
//! and fetch otherwise never do.
//! Record layout (Kafka `DefaultRecord`): length varint, attributes i8, timestampDelta varlong,
//! offsetDelta varint, key (varint length, -1 = null), value (same), header count varint, then per
//! header a key (varint length + bytes) and a value (varint length, -1 = null). Varints are zigzag.

use std::borrow::Cow;
use std::io::{Read, Write};

use crate::batch::{
    codec, compute_crc, BatchError, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD, MAGIC_V2,
};

/// Upper bound on a decompressed batch body, so a tiny compressed batch cannot make us allocate
/// without limit.
pub const MAX_DECOMPRESSED_BYTES: usize = 256 << 20;

/// xerial snappy-java framing, which Kafka's Java client writes: magic, version, compatible version,
/// then blocks of (i32 length, raw snappy block).
const XERIAL_MAGIC: &[u8; 8] = b"\x82SNAPPY\0";
const XERIAL_HEADER_LEN: usize = 16;

#[derive(Debug, thiserror::Error)]
pub enum RecordsError {
    #[error(transparent)]
    Batch(#[from] BatchError),
    #[error("unsupported compression codec {0}")]
    UnsupportedCompression(u8),
    #[error("cannot decompress batch: {0}")]
    Decompress(String),
    #[error("cannot compress batch: {0}")]
    Compress(String),
    #[error("decompressed batch exceeds {MAX_DECOMPRESSED_BYTES} bytes")]
    DecompressedTooLarge,
    #[error("malformed record: {0}")]
    Malformed(&'static str),
}

/// One header of a record. Kafka allows duplicate keys; they are kept in order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RecordHeader<'a> {
    pub key: &'a [u8],
    pub value: Option<&'a [u8]>,
}

/// One decoded record with absolute offset and timestamp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record<'a> {
    pub offset: i64,
    pub timestamp: i64,
    pub attributes: i8,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub headers: Vec<RecordHeader<'a>>,
}

/// The records of one batch, decompressed if needed.
pub struct BatchRecords<'a> {
    header: BatchHeader,
    body: Cow<'a, [u8]>,
}

impl<'a> BatchRecords<'a> {
    /// `batch` is one complete batch (as stored in a segment); its CRC is not re-checked.
    pub fn new(batch: &'a [u8]) -> Result<BatchRecords<'a>, RecordsError> {
        let header = BatchHeader::parse(batch)?;
        if header.magic != MAGIC_V2 {
            return Err(BatchError::UnsupportedMagic(header.magic).into());
        }
        let end = header.total_len();
        if batch.len() < end {
            return Err(BatchError::Truncated {
                needed: end,
                available: batch.len(),
            }
            .into());
        }
        let body = decompress(header.compression(), &batch[BATCH_HEADER_LEN..end])?;
        Ok(BatchRecords { header, body })
    }

    pub fn header(&self) -> &BatchHeader {
        &self.header
    }

    pub fn iter(&self) -> RecordIter<'_> {
        RecordIter {
            header: self.header,
            buf: &self.body,
            remaining: self.header.records_count.max(0),
        }
    }
}

/// Decompresses a batch body (the bytes after the 61-byte header) for the given codec.
pub fn decompress(compression: u8, body: &[u8]) -> Result<Cow<'_, [u8]>, RecordsError> {
    match compression {
        codec::NONE => Ok(Cow::Borrowed(body)),
        codec::GZIP => read_bounded(flate2::read::MultiGzDecoder::new(body)).map(Cow::Owned),
        codec::SNAPPY => decompress_snappy(body).map(Cow::Owned),
        codec::LZ4 => read_bounded(lz4_flex::frame::FrameDecoder::new(body)).map(Cow::Owned),
        codec::ZSTD => decompress_zstd(body).map(Cow::Owned),
        other => Err(RecordsError::UnsupportedCompression(other)),
    }
}

/// Compresses a batch body (its records, uncompressed) with `compression`, framed as Kafka's
/// clients do: xerial framing for snappy, the LZ4 frame format for lz4.
pub fn compress(compression: u8, body: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let failed = |e: std::io::Error| RecordsError::Compress(e.to_string());
    Ok(match compression {
        codec::NONE => body.to_vec(),
        codec::GZIP => {
            // Kafka's default gzip level.
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::new(6));
            enc.write_all(body).map_err(failed)?;
            enc.finish().map_err(failed)?
        }
        codec::SNAPPY => {
            let mut out = XERIAL_MAGIC.to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            let mut encoder = snap::raw::Encoder::new();
            for chunk in body.chunks(32 * 1024) {
                let block = encoder
                    .compress_vec(chunk)
                    .map_err(|e| RecordsError::Compress(e.to_string()))?;
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        codec::LZ4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(body).map_err(failed)?;
            enc.finish()
                .map_err(|e| RecordsError::Compress(e.to_string()))?
        }
        codec::ZSTD => {
            ruzstd::encoding::compress_to_vec(body, ruzstd::encoding::CompressionLevel::Fastest)
        }
        other => return Err(RecordsError::UnsupportedCompression(other)),
    })
}

/// The batch with its records compressed with `compression` instead (Kafka's broker-side
/// recompression for a topic whose `compression.type` is not `producer`); every other header
/// field is kept, length, attributes and CRC are fixed. None when it already uses that codec,
/// or is a control batch (never compressed).
pub fn recompress(batch: &[u8], compression: u8) -> Result<Option<Vec<u8>>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.compression() == compression || header.is_control() {
        return Ok(None);
    }
    let end = header.total_len().min(batch.len());
    let records = decompress(header.compression(), &batch[BATCH_HEADER_LEN..end])?;
    let body = compress(compression, &records)?;
    let mut out = Vec::with_capacity(BATCH_HEADER_LEN + body.len());
    out.extend_from_slice(&batch[..BATCH_HEADER_LEN]);
    out.extend_from_slice(&body);
    let batch_length =
        i32::try_from(out.len() - LOG_OVERHEAD).map_err(|_| RecordsError::DecompressedTooLarge)?;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !0x07) | i16::from(compression);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    Ok(Some(out))
}

/// A CreateTime batch holding a record timestamped further than `before_max_ms` before or
/// `after_max_ms` after `now_ms` (Kafka's `message.timestamp.before.max.ms` and
/// `.after.max.ms`, INVALID_TIMESTAMP): the record timestamp refused. The header's max timestamp
/// decides the future bound; the past bound, when set (below `i64::MAX`), reads every record.
pub fn timestamp_out_of_bounds(
    batch: &[u8],
    now_ms: i64,
    before_max_ms: i64,
    after_max_ms: i64,
) -> Result<Option<i64>, RecordsError> {
    let header = BatchHeader::parse(batch)?;
    if header.max_timestamp.saturating_sub(now_ms) > after_max_ms {
        return Ok(Some(header.max_timestamp));
    }
    if before_max_ms == i64::MAX {
        return Ok(None);
    }
    // A batch claiming LogAppendTime on a CreateTime topic is judged by its header's timestamp,
    // as Kafka does, so the flag is no way around the bounds.
    if header.is_log_append_time() {
        let past = now_ms.saturating_sub(header.max_timestamp) > before_max_ms;
        return Ok(past.then_some(header.max_timestamp));
    }
    for record in BatchRecords::new(batch)?.iter() {
        let timestamp = record?.timestamp;
        // NO_TIMESTAMP (-1): the record has none to check.
        if timestamp >= 0 && now_ms.saturating_sub(timestamp) > before_max_ms {
            return Ok(Some(timestamp));
        }
    }
    Ok(None)
}

fn read_bounded<R: Read>(reader: R) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    reader
        .take(MAX_DECOMPRESSED_BYTES as u64 + 1)
        .read_to_end(&mut out)
        .map_err(|e| RecordsError::Decompress(e.to_string()))?;
    if out.len() > MAX_DECOMPRESSED_BYTES {
        return Err(RecordsError::DecompressedTooLarge);
    }
    Ok(out)
}

fn snappy_block(block: &[u8], out: &mut Vec<u8>) -> Result<(), RecordsError> {
    let len =
        snap::raw::decompress_len(block).map_err(|e| RecordsError::Decompress(e.to_string()))?;
    if out.len() + len > MAX_DECOMPRESSED_BYTES {
        return Err(RecordsError::DecompressedTooLarge);
    }
    let start = out.len();
    out.resize(start + len, 0);
    snap::raw::Decoder::new()
        .decompress(block, &mut out[start..])
        .map_err(|e| RecordsError::Decompress(e.to_string()))?;
    Ok(())
}

fn decompress_snappy(body: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    if body.len() < XERIAL_HEADER_LEN || &body[..8] != XERIAL_MAGIC {
        snappy_block(body, &mut out)?;
        return Ok(out);
    }
    let mut rest = &body[XERIAL_HEADER_LEN..];
    while !rest.is_empty() {
        if rest.len() < 4 {
            return Err(RecordsError::Decompress(
                "truncated xerial block length".into(),
            ));
        }
        let len = u32::from_be_bytes(rest[..4].try_into().expect("4 bytes")) as usize;
        rest = &rest[4..];
        if rest.len() < len {
            return Err(RecordsError::Decompress("truncated xerial block".into()));
        }
        snappy_block(&rest[..len], &mut out)?;
        rest = &rest[len..];
    }
    Ok(out)
}

fn decompress_zstd(body: &[u8]) -> Result<Vec<u8>, RecordsError> {
    let mut out = Vec::new();
    let mut rest = body;
    // A zstd stream may hold several concatenated frames; decode them all.
    while !rest.is_empty() {
        let mut decoder = ruzstd::decoding::StreamingDecoder::new(&mut rest)
            .map_err(|e| RecordsError::Decompress(e.to_string()))?;
        let limit = (MAX_DECOMPRESSED_BYTES + 1 - out.len()) as u64;
        (&mut decoder)
            .take(limit)
            .read_to_end(&mut out)
            .map_err(|e| RecordsError::Decompress(e.to_string()))?;
        if out.len() > MAX_DECOMPRESSED_BYTES {
            return Err(RecordsError::DecompressedTooLarge);
        }
    }
    Ok(out)
}

/// Iterates the records of a batch body. Stops after `recordsCount` records; a body that ends
/// early yields an error and then nothing.
pub struct RecordIter<'a> {
    header: BatchHeader,
    buf: &'a [u8],
    remaining: i32,
}

impl<'a> Iterator for RecordIter<'a> {
    type Item = Result<Record<'a>, RecordsError>;

    fn next(&mut self) -> Option<Self::Item> {
        if self.remaining <= 0 {
            return None;
        }
        self.remaining -= 1;
        let item = self.decode_one();
        if item.is_err() {
            self.remaining = 0;
        }
        Some(item)
    }
}

impl<'a> RecordIter<'a> {
    fn decode_one(&mut self) -> Result<Record<'a>, RecordsError> {
        let mut cur = Cursor { buf: self.buf };
        let len = cur.varint()?;
        let len = usize::try_from(len).map_err(|_| RecordsError::Malformed("negative length"))?;
        let body = cur.take(len)?;
        self.buf = cur.buf;

        let mut rec = Cursor { buf: body };
        let attributes = rec.take(1)?[0] as i8;
        let timestamp_delta = rec.varlong()?;
        let offset_delta = rec.varint()?;
        let key = rec.nullable_bytes()?;
        let value = rec.nullable_bytes()?;
        let header_count = rec.varint()?;
        let header_count = usize::try_from(header_count)
            .map_err(|_| RecordsError::Malformed("negative header count"))?;
        // Each header needs at least two bytes, which bounds the allocation by the record size.
        if header_count > rec.buf.len() / 2 {
            return Err(RecordsError::Malformed("header count exceeds record size"));
        }
        let mut headers = Vec::with_capacity(header_count);
        for _ in 0..header_count {
            let key = rec
                .nullable_bytes()?
                .ok_or(RecordsError::Malformed("null header key"))?;
            let value = rec.nullable_bytes()?;
            headers.push(RecordHeader { key, value });
        }
        let timestamp = if self.header.is_log_append_time() {
            self.header.max_timestamp
        } else {
            self.header.base_timestamp.wrapping_add(timestamp_delta)
        };
        Ok(Record {
            offset: self
                .header
                .base_offset
                .saturating_add(i64::from(offset_delta)),
            timestamp,
            attributes,
            key,
            value,
            headers,
        })
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordsError> {
        if self.buf.len() < n {
            return Err(RecordsError::Malformed("record extends past the batch"));
        }
        let (head, tail) = self.buf.split_at(n);
        self.buf = tail;
        Ok(head)
    }

    fn varlong(&mut self) -> Result<i64, RecordsError> {
        let mut raw: u64 = 0;
        for i in 0..10 {
            let b = self.take(1)?[0];
            raw |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(((raw >> 1) as i64) ^ -((raw & 1) as i64));
            }
        }
        Err(RecordsError::Malformed("varint too long"))
    }

    fn varint(&mut self) -> Result<i32, RecordsError> {
        i32::try_from(self.varlong()?).map_err(|_| RecordsError::Malformed("varint out of range"))
    }

    fn nullable_bytes(&mut self) -> Result<Option<&'a [u8]>, RecordsError> {
        let len = self.varint()?;
        if len < 0 {
            return Ok(None);
        }
        self.take(len as usize).map(Some)
    }
}

pub fn write_varlong(out: &mut Vec<u8>, value: i64) {
    let mut v = ((value << 1) ^ (value >> 63)) as u64;
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

pub fn write_varint(out: &mut Vec<u8>, value: i32) {
    write_varlong(out, i64::from(value));
}

fn write_nullable(out: &mut Vec<u8>, bytes: Option<&[u8]>) {
    match bytes {
        Some(b) => {
            write_varint(out, b.len() as i32);
            out.extend_from_slice(b);
        }
        None => write_varint(out, -1),
    }
}

/// Builds an uncompressed v2 batch from records with explicit offsets and timestamps, keeping
/// every field the caller gives verbatim (the cleaner uses it to rewrite batches without changing
/// offsets, timestamps or headers).
#[derive(Debug, Clone)]
pub struct RecordBatchBuilder {
    base_offset: i64,
    base_timestamp: Option<i64>,
    /// Attributes other than the compression codec.
    attributes: i16,
    partition_leader_epoch: i32,
    producer_id: i64,
    producer_epoch: i16,
    base_sequence: i32,
    records: Vec<u8>,
    scratch: Vec<u8>,
    count: i32,
    last_offset_delta: i32,
    max_timestamp: i64,
    /// The append time of a LogAppendTime batch this one rewrites: every record's timestamp, so
    /// it is kept whatever the records and the base timestamp say.
    log_append_time: Option<i64>,
}

impl RecordBatchBuilder {
    /// A builder for a batch whose first offset is `base_offset`, with no producer id.
    pub fn new(base_offset: i64) -> RecordBatchBuilder {
        RecordBatchBuilder {
            base_offset,
            base_timestamp: None,
            attributes: 0,
            partition_leader_epoch: -1,
            producer_id: -1,
            producer_epoch: -1,
            base_sequence: -1,
            records: Vec::new(),
            scratch: Vec::new(),
            count: 0,
            last_offset_delta: 0,
            max_timestamp: -1,
            log_append_time: None,
        }
    }

    /// Copies the producer fields, leader epoch and the non-compression attributes of `header`.
    pub fn like(header: &BatchHeader, base_offset: i64) -> RecordBatchBuilder {
        let mut b = RecordBatchBuilder::new(base_offset);
        b.attributes = header.attributes & !0x07;
        b.partition_leader_epoch = header.partition_leader_epoch;
        b.producer_id = header.producer_id;
        b.producer_epoch = header.producer_epoch;
        b.base_sequence = header.base_sequence;
        b.log_append_time = header.is_log_append_time().then_some(header.max_timestamp);
        b
    }

    pub fn producer(mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.producer_id = producer_id;
        self.producer_epoch = epoch;
        self.base_sequence = base_sequence;
        self
    }

    /// Sets the attribute bits (compression bits are ignored: the builder writes uncompressed).
    pub fn attributes(mut self, attributes: i16) -> Self {
        self.attributes = attributes & !0x07;
        self
    }

    /// Forces `baseTimestamp`; by default it is the first record's timestamp.
    pub fn base_timestamp(mut self, ts: i64) -> Self {
        self.base_timestamp = Some(ts);
        self
    }

    /// A batch holds offsets up to `i32::MAX` past its base offset.
    fn delta(&self, offset: i64) -> Result<i32, RecordsError> {
        offset
            .checked_sub(self.base_offset)
            .and_then(|delta| i32::try_from(delta).ok())
            .ok_or(RecordsError::Malformed(
                "offset too far from the batch's base offset",
            ))
    }

    /// Appends a record; offsets must increase and be >= the base offset.
    pub fn push(
        &mut self,
        offset: i64,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader<'_>],
    ) -> Result<(), RecordsError> {
        let offset_delta = self.delta(offset)?;
        let base_ts = *self.base_timestamp.get_or_insert(timestamp);
        let s = &mut self.scratch;
        s.clear();
        s.push(0);
        write_varlong(s, timestamp.wrapping_sub(base_ts));
        write_varint(s, offset_delta);
        write_nullable(s, key);
        write_nullable(s, value);
        write_varint(s, headers.len() as i32);
        for h in headers {
            write_nullable(s, Some(h.key));
            write_nullable(s, h.value);
        }
        write_varint(&mut self.records, s.len() as i32);
        self.records.extend_from_slice(s);
        self.count += 1;
        self.last_offset_delta = offset_delta;
        self.max_timestamp = self.max_timestamp.max(timestamp);
        Ok(())
    }

    /// Keeps `lastOffsetDelta` covering `last_offset` even if the records there were removed, so
    /// the batch still accounts for its whole offset range (as Kafka's cleaner does).
    pub fn set_last_offset(&mut self, last_offset: i64) -> Result<(), RecordsError> {
        self.last_offset_delta = self.delta(last_offset)?;
        Ok(())
    }

    /// Encodes the batch with a valid CRC.
    pub fn build(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(BATCH_HEADER_LEN + self.records.len());
        let batch_length =
            (BATCH_HEADER_LEN - crate::batch::LOG_OVERHEAD + self.records.len()) as i32;
        out.extend_from_slice(&self.base_offset.to_be_bytes());
        out.extend_from_slice(&batch_length.to_be_bytes());
        out.extend_from_slice(&self.partition_leader_epoch.to_be_bytes());
        out.push(MAGIC_V2 as u8);
        out.extend_from_slice(&[0; 4]);
        out.extend_from_slice(&self.attributes.to_be_bytes());
        out.extend_from_slice(&self.last_offset_delta.to_be_bytes());
        let base_ts = self.base_timestamp.unwrap_or(-1);
        out.extend_from_slice(&base_ts.to_be_bytes());
        let max_timestamp = self
            .log_append_time
            .unwrap_or(self.max_timestamp.max(base_ts));
        out.extend_from_slice(&max_timestamp.to_be_bytes());
        out.extend_from_slice(&self.producer_id.to_be_bytes());
        out.extend_from_slice(&self.producer_epoch.to_be_bytes());
        out.extend_from_slice(&self.base_sequence.to_be_bytes());
        out.extend_from_slice(&self.count.to_be_bytes());
        out.extend_from_slice(&self.records);
        let crc = compute_crc(&out);
        out[17..21].copy_from_slice(&crc.to_be_bytes());
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::validate_batch;
    use crate::testing::{compress_batch, BatchBuilder};

    #[test]
    fn varint_round_trip() {
        for v in [
            0i64,
            1,
            -1,
            63,
            -64,
            64,
            300,
            -300,
            i64::MAX,
            i64::MIN,
            1 << 40,
        ] {
            let mut out = Vec::new();
            write_varlong(&mut out, v);
            let mut c = Cursor { buf: &out };
            assert_eq!(c.varlong().unwrap(), v);
            assert!(c.buf.is_empty());
        }
        let mut out = Vec::new();
        write_varint(&mut out, -1);
        assert_eq!(out, vec![1]);
    }

    fn rich_batch() -> Vec<u8> {
        let mut b = RecordBatchBuilder::new(100).producer(5, 1, 0);
        b.push(100, 1_000, Some(b"a"), Some(b"1"), &[]).unwrap();
        b.push(
            101,
            990,
            None,
            None,
            &[
                RecordHeader {
                    key: b"h",
                    value: Some(b"x"),
                },
                RecordHeader {
                    key: b"h",
                    value: None,
                },
                RecordHeader {
                    key: b"h",
                    value: Some(b"y"),
                },
            ],
        )
        .unwrap();
        b.push(105, 2_000, Some(b""), Some(b"big"), &[]).unwrap();
        b.build()
    }

    #[test]
    fn a_record_beyond_an_i32_delta_of_the_base_offset_is_an_error() {
        let mut b = RecordBatchBuilder::new(i64::MAX - 1);
        assert!(b.push(i64::MIN, 0, None, None, &[]).is_err());
        let mut b = RecordBatchBuilder::new(0);
        assert!(b.push(1 << 31, 0, None, None, &[]).is_err());
        assert!(b.set_last_offset(1 << 31).is_err());
        b.push((1 << 31) - 1, 0, None, None, &[]).unwrap();
        assert!(validate_batch(&b.build(), 1 << 20).is_ok());
    }

    #[test]
    fn timestamps_beyond_the_topic_bounds_are_found() {
        // rich_batch: records at 1000, 990 and 2000.
        let batch = rich_batch();
        let check =
            |now, before, after| timestamp_out_of_bounds(&batch, now, before, after).unwrap();
        assert_eq!(check(1_500, i64::MAX, 500), None);
        assert_eq!(check(1_500, i64::MAX, 499), Some(2_000));
        assert_eq!(check(1_500, 510, 3_600_000), None);
        assert_eq!(check(1_500, 509, 3_600_000), Some(990));
        let compressed = crate::testing::compress_batch(&batch, codec::ZSTD);
        assert_eq!(
            timestamp_out_of_bounds(&compressed, 1_500, 509, 3_600_000).unwrap(),
            Some(990)
        );
        // The LogAppendTime flag set by the client does not skip the check.
        let mut flagged = batch.clone();
        crate::batch::set_log_append_time(&mut flagged, 100_000);
        assert_eq!(
            timestamp_out_of_bounds(&flagged, 1_500, i64::MAX, 500).unwrap(),
            Some(100_000)
        );
        assert_eq!(
            timestamp_out_of_bounds(&flagged, 200_000, 1_000, i64::MAX).unwrap(),
            Some(100_000)
        );
    }

    #[test]
    fn recompression_keeps_every_record_and_header_field() {
        let plain = rich_batch();
        let records = |batch: &[u8]| {
            validate_batch(batch, 1 << 20).unwrap();
            BatchRecords::new(batch)
                .unwrap()
                .iter()
                .map(|r| {
                    let r = r.unwrap();
                    (
                        r.offset,
                        r.timestamp,
                        r.key.map(<[u8]>::to_vec),
                        r.value.map(<[u8]>::to_vec),
                    )
                })
                .collect::<Vec<_>>()
        };
        let expected = records(&plain);
        let header = BatchHeader::parse(&plain).unwrap();
        for target in [codec::GZIP, codec::SNAPPY, codec::LZ4, codec::ZSTD] {
            let compressed = recompress(&plain, target).unwrap().unwrap();
            let h = BatchHeader::parse(&compressed).unwrap();
            assert_eq!(h.compression(), target);
            assert_eq!(
                (
                    h.producer_id,
                    h.base_sequence,
                    h.last_offset_delta,
                    h.max_timestamp
                ),
                (
                    header.producer_id,
                    header.base_sequence,
                    header.last_offset_delta,
                    header.max_timestamp
                )
            );
            assert_eq!(records(&compressed), expected, "codec {target}");
            // And between two codecs, and back to none.
            let other = recompress(&compressed, codec::GZIP)
                .unwrap()
                .unwrap_or(compressed.clone());
            assert_eq!(records(&other), expected);
            let back = recompress(&other, codec::NONE).unwrap().unwrap();
            assert_eq!(back, plain, "byte for byte");
        }
        assert_eq!(recompress(&plain, codec::NONE).unwrap(), None);
        assert!(matches!(
            recompress(&plain, 7),
            Err(RecordsError::UnsupportedCompression(7))
        ));
    }

    #[test]
    fn decodes_records_exactly() {
        let buf = rich_batch();
        let h = validate_batch(&buf, 1 << 20).unwrap();
        assert_eq!(h.base_offset, 100);
        assert_eq!(h.last_offset(), 105);
        assert_eq!(h.records_count, 3);
        assert_eq!(h.max_timestamp, 2_000);
        assert_eq!(h.base_timestamp, 1_000);
        let recs = BatchRecords::new(&buf).unwrap();
        let all: Vec<_> = recs.iter().collect::<Result<_, _>>().unwrap();
        assert_eq!(all.len(), 3);
        assert_eq!(all[0].offset, 100);
        assert_eq!(all[0].key, Some(&b"a"[..]));
        assert_eq!(all[1].offset, 101);
        assert_eq!(all[1].timestamp, 990);
        assert_eq!(all[1].key, None);
        assert_eq!(all[1].value, None);
        assert_eq!(all[1].headers.len(), 3);
        assert_eq!(
            all[1].headers[1],
            RecordHeader {
                key: b"h",
                value: None
            }
        );
        assert_eq!(all[1].headers[2].value, Some(&b"y"[..]));
        assert_eq!(all[2].offset, 105);
        assert_eq!(all[2].key, Some(&b""[..]));
        assert_eq!(all[2].timestamp, 2_000);
    }

    #[test]
    fn every_codec_round_trips() {
        let plain = BatchBuilder::new(5_000)
            .record(Some(b"k"), Some(b"hello hello hello hello"))
            .record(None, Some(b"world"))
            .build();
        let expected: Vec<(i64, i64, Option<Vec<u8>>)> = BatchRecords::new(&plain)
            .unwrap()
            .iter()
            .map(|r| {
                let r = r.unwrap();
                (r.offset, r.timestamp, r.value.map(<[u8]>::to_vec))
            })
            .collect();
        for c in [codec::GZIP, codec::SNAPPY, codec::LZ4, codec::ZSTD] {
            let compressed = compress_batch(&plain, c);
            let h = validate_batch(&compressed, 1 << 20).unwrap();
            assert_eq!(h.compression(), c);
            let got: Vec<_> = BatchRecords::new(&compressed)
                .unwrap()
                .iter()
                .map(|r| {
                    let r = r.unwrap();
                    (r.offset, r.timestamp, r.value.map(<[u8]>::to_vec))
                })
                .collect();
            assert_eq!(got, expected, "codec {c}");
        }
    }

    #[test]
    fn raw_snappy_block_is_accepted() {
        let data = b"raw snappy block without xerial framing".repeat(3);
        let block = snap::raw::Encoder::new().compress_vec(&data).unwrap();
        assert_eq!(
            decompress(codec::SNAPPY, &block).unwrap().as_ref(),
            &data[..]
        );
    }

    #[test]
    fn log_append_time_overrides_record_timestamps() {
        let mut buf = rich_batch();
        crate::batch::set_log_append_time(&mut buf, 9_999);
        let recs = BatchRecords::new(&buf).unwrap();
        assert!(recs.iter().all(|r| r.unwrap().timestamp == 9_999));
    }

    /// Found by the `record_batch` fuzz target: a producer's LZ4 batch whose base timestamp is
    /// later than the time the broker stamped on it as its LogAppendTime. Rewritten as the
    /// cleaner rewrites batches, its records took the base timestamp instead of the append time.
    #[test]
    fn a_rewritten_log_append_time_batch_keeps_its_append_time() {
        const BATCH: [u8; 134] = [
            0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x7a, 0xff, 0xff,
            0xff, 0xff, 0x02, 0x91, 0xbc, 0x59, 0xc3, 0x00, 0x03, 0x00, 0x00, 0x00, 0x03, 0x00,
            0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68, 0x30, 0x00, 0x00, 0x01, 0x8b, 0xcf, 0xe5, 0x68,
            0x05, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
            0xff, 0x00, 0x00, 0x00, 0x04, 0x04, 0x22, 0x4d, 0x18, 0x60, 0x40, 0x82, 0x3a, 0x00,
            0x00, 0x80, 0x22, 0x00, 0x00, 0x00, 0x04, 0x6b, 0x31, 0x12, 0x76, 0x61, 0x6c, 0x75,
            0x65, 0x20, 0x6f, 0x6e, 0x65, 0x00, 0x10, 0x00, 0x00, 0x02, 0x04, 0x6b, 0x32, 0x01,
            0x00, 0x22, 0x00, 0x0a, 0x04, 0x04, 0x6b, 0x31, 0x04, 0x76, 0x32, 0x04, 0x02, 0x68,
            0x02, 0x76, 0x02, 0x6e, 0x01, 0x18, 0x00, 0x00, 0x06, 0x01, 0x0c, 0x6e, 0x6f, 0x20,
            0x6b, 0x65, 0x79, 0x00, 0x00, 0x00, 0x00, 0x00,
        ];
        let mut buf = BATCH.to_vec();
        crate::batch::set_log_append_time(&mut buf, 1_700_000_000_000);
        let records = BatchRecords::new(&buf).unwrap();
        let header = *records.header();
        assert!(header.base_timestamp > header.max_timestamp);
        let mut builder = RecordBatchBuilder::like(&header, header.base_offset)
            .base_timestamp(header.base_timestamp);
        for r in records.iter() {
            let r = r.unwrap();
            builder
                .push(r.offset, r.timestamp, r.key, r.value, &r.headers)
                .expect("a decoded record lies within an i32 of its batch's base offset");
        }
        builder
            .set_last_offset(header.last_offset())
            .expect("a batch's last offset lies within an i32 of its base offset");
        let rebuilt = builder.build();
        let timestamps: Vec<_> = BatchRecords::new(&rebuilt)
            .unwrap()
            .iter()
            .map(|r| r.unwrap().timestamp)
            .collect();
        assert_eq!(timestamps, vec![1_700_000_000_000; 4]);
    }

    #[test]
    fn truncated_body_is_an_error() {
        let buf = rich_batch();
        let mut cut = buf[..buf.len() - 2].to_vec();
        let len = (cut.len() - 12) as i32;
        cut[8..12].copy_from_slice(&len.to_be_bytes());
        let recs = BatchRecords::new(&cut).unwrap();
        let items: Vec<_> = recs.iter().collect();
        assert_eq!(items.len(), 3);
        assert!(items[2].is_err());
        assert!(matches!(
            decompress(7, b"x"),
            Err(RecordsError::UnsupportedCompression(7))
        ));
        assert!(decompress(codec::GZIP, b"not gzip").is_err());
    }
}
