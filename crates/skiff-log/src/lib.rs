//! Skiff's partition log: a segmented, append-only store of Kafka record batches (magic v2),
//! kept byte-for-byte as producers sent them (only `baseOffset` and `partitionLeaderEpoch`, which
//! the CRC does not cover, are patched). Plain `std::fs`, no async, no network.
//!
//! # Modules
//! - [`batch`]: the 61-byte batch header view, validation (length, magic, CRC-32C, size),
//!   splitting concatenated batches, in-place patching.
//! - [`records`]: decoding the records inside a batch (gzip, snappy incl. xerial framing, lz4
//!   frame, zstd), used only by timestamp lookups and the cleaner; an uncompressed batch encoder.
//! - [`epochs`]: which leader epoch wrote which offsets, for OffsetForLeaderEpoch and, with
//!   replication, follower truncation.
//! - [`Log`]: segments, indexes, recovery, reads as file slices, idempotent-producer state,
//!   retention, flushing, compaction ([`Log::clean`]).
//! - `testing` (feature `test-util`): a batch builder for tests, with every codec.
//!
//! # On-disk layout of one partition directory (`<topic>-<partition>/`)
//! | file | content |
//! |---|---|
//! | `<base:020>.log` | batches exactly as appended; `base` is the first offset the segment may hold |
//! | `<base:020>.index` | sparse offset index: 8-byte entries (u32 BE offset of a batch's first record relative to `base`, u32 BE byte position of the batch), one per `index.interval.bytes` of log data |
//! | `<base:020>.timeindex` | 12-byte entries (i64 BE largest timestamp so far in the segment, u32 BE relative last offset of the batch where it was recorded), appended at the same cadence when the timestamp grew |
//! | `recovery-point-offset-checkpoint` | decimal offset: segments ending at or below it were fsynced and are not validated on open |
//! | `log-start-offset-checkpoint` | decimal log start offset set by DeleteRecords (retention needs none: it deletes whole segments, so the first segment's base is the start) |
//! | `producer-state.snapshot` | idempotent-producer state as of an offset, with CRC-32C (format in `producer.rs`); written at close and at each segment roll, removed once loaded |
//! | `leader-epoch-checkpoint` | Kafka's format: `0`, the entry count, then one `epoch startOffset` line per leader epoch that appended (see [`epochs`]); synced before an epoch's first batch |
//! | `clean-shutdown` | present only between `close` and the next `open` |
//! | `*.tmp`, `*.log.cleaned` | in-flight atomic writes and cleaner output; removed on open |
//!
//! Index files are derived data: they are read into memory when a segment opens, checked
//! (well-formed, ordered, last entry pointing at a batch with the right offset) and rebuilt
//! from the `.log` when missing or inconsistent.
//!
//! # Recovery
//! After a clean `close`, `open` trusts everything and reads only the batch headers after each
//! segment's last index entry. Otherwise every segment past the recovery point is validated batch
//! by batch (length, magic, offsets increasing and within the segment, CRC-32C); the first bad
//! batch and everything after it is cut off and later segments are deleted. Producer state is
//! loaded from the snapshot (if it is not ahead of the recovered log end) and completed by
//! replaying the batch headers after it; without a usable snapshot all retained headers are
//! replayed.
//!
//! # Durability
//! Appends go to the page cache. `flush.messages` / `flush.ms` force `fsync` of the segment,
//! its indexes and the directory; data acknowledged before an fsync survives a process crash
//! (page cache) but not a power loss, exactly as in Kafka with default settings, where
//! replication is what protects against machine loss.

pub mod batch;
pub mod epochs;
mod index;
mod log;
mod producer;
pub mod records;
mod segment;
#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use crate::log::{
    AppendOutcome, CleanerStats, CleanupPolicy, FileSlice, Log, LogConfig, LogError, LogReadInfo,
    RecoveryReport, CLEAN_SHUTDOWN_FILE, LEADER_EPOCH_FILE, LOG_START_FILE, PRODUCER_SNAPSHOT_FILE,
    RECOVERY_POINT_FILE,
};
pub use crate::producer::ActiveProducer;
