//! Test helpers for building valid record batches, with any compression codec. Enabled for this
//! crate's tests and, through the `test-util` feature, for other crates' tests.

use std::io::Write;

use crate::batch::{codec, compute_crc, BatchHeader, BATCH_HEADER_LEN, LOG_OVERHEAD};
use crate::records::{RecordBatchBuilder, RecordHeader};

/// Builds one v2 batch at base offset 0 (the log assigns real offsets on append).
pub struct BatchBuilder {
    inner: RecordBatchBuilder,
    timestamp: i64,
    next_offset: i64,
    compression: u8,
}

impl BatchBuilder {
    /// Records added with [`BatchBuilder::record`] get `timestamp`.
    pub fn new(timestamp: i64) -> BatchBuilder {
        BatchBuilder {
            inner: RecordBatchBuilder::new(0),
            timestamp,
            next_offset: 0,
            compression: codec::NONE,
        }
    }

    pub fn producer(mut self, producer_id: i64, epoch: i16, base_sequence: i32) -> Self {
        self.inner = self.inner.producer(producer_id, epoch, base_sequence);
        self
    }

    /// Attribute bits other than compression (transactional 0x10, control 0x20, ...).
    pub fn attributes(mut self, attributes: i16) -> Self {
        self.inner = self.inner.attributes(attributes);
        self
    }

    pub fn compression(mut self, codec: u8) -> Self {
        self.compression = codec;
        self
    }

    pub fn record(self, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        let ts = self.timestamp;
        self.record_with(ts, key, value, &[])
    }

    pub fn record_at(self, timestamp: i64, key: Option<&[u8]>, value: Option<&[u8]>) -> Self {
        self.record_with(timestamp, key, value, &[])
    }

    pub fn record_with(
        mut self,
        timestamp: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[RecordHeader<'_>],
    ) -> Self {
        self.inner
            .push(self.next_offset, timestamp, key, value, headers)
            .expect("test batches hold fewer than 2^31 records");
        self.next_offset += 1;
        self
    }

    pub fn build(self) -> Vec<u8> {
        let plain = self.inner.build();
        if self.compression == codec::NONE {
            plain
        } else {
            compress_batch(&plain, self.compression)
        }
    }
}

/// `n` records of `value_len` bytes each at `timestamp`, no producer id.
pub fn simple_batch(n: usize, value_len: usize, timestamp: i64) -> Vec<u8> {
    let value = vec![b'v'; value_len];
    (0..n)
        .fold(BatchBuilder::new(timestamp), |b, _| {
            b.record(None, Some(&value))
        })
        .build()
}

/// Re-encodes the records of an uncompressed batch with `codec`, the way Kafka clients frame
/// them (xerial framing for snappy, the LZ4 frame format for lz4), fixing length and CRC.
pub fn compress_batch(batch: &[u8], codec: u8) -> Vec<u8> {
    let header = BatchHeader::parse(batch).expect("valid batch");
    let body = &batch[BATCH_HEADER_LEN..header.total_len()];
    let compressed = match codec {
        codec::NONE => body.to_vec(),
        codec::GZIP => {
            let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
            enc.write_all(body).expect("in-memory write");
            enc.finish().expect("in-memory write")
        }
        codec::SNAPPY => {
            let mut out = b"\x82SNAPPY\0".to_vec();
            out.extend_from_slice(&1i32.to_be_bytes());
            out.extend_from_slice(&1i32.to_be_bytes());
            for chunk in body.chunks(32 * 1024) {
                let block = snap::raw::Encoder::new()
                    .compress_vec(chunk)
                    .expect("snappy compress");
                out.extend_from_slice(&(block.len() as i32).to_be_bytes());
                out.extend_from_slice(&block);
            }
            out
        }
        codec::LZ4 => {
            let mut enc = lz4_flex::frame::FrameEncoder::new(Vec::new());
            enc.write_all(body).expect("in-memory write");
            enc.finish().expect("in-memory write")
        }
        codec::ZSTD => {
            ruzstd::encoding::compress_to_vec(body, ruzstd::encoding::CompressionLevel::Fastest)
        }
        other => panic!("unknown codec {other}"),
    };
    let mut out = batch[..BATCH_HEADER_LEN].to_vec();
    out.extend_from_slice(&compressed);
    let batch_length = (out.len() - LOG_OVERHEAD) as i32;
    out[8..12].copy_from_slice(&batch_length.to_be_bytes());
    let attributes = (header.attributes & !0x07) | i16::from(codec);
    out[21..23].copy_from_slice(&attributes.to_be_bytes());
    let crc = compute_crc(&out);
    out[17..21].copy_from_slice(&crc.to_be_bytes());
    out
}
