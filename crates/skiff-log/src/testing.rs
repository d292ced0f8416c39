//! Test helpers for building valid record batches, with any compression codec. Enabled for this
//! crate's tests and, through the `test-util` feature, for other crates' tests.

use crate::batch::codec;
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
    crate::records::recompress(batch, codec)
        .expect("a valid test batch")
        .unwrap_or_else(|| batch.to_vec())
}
