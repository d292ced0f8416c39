//! Record batches as a producer sends them, through what the broker does with them: the produce
//! path's split and validation (length, magic, CRC, counts), LogAppendTime stamping, the append
//! to a partition log (producer-state checks, offset assignment, segment rolls), reading back,
//! record decoding (every codec), a topic's timestamp bounds and recompression to every codec,
//! and the compaction cleaner, then recovery on reopening.
//!
//! The first input byte picks options: bit 0 makes the harness fix each batch's CRC, so the
//! fuzzer gets past the checksum into everything behind it; bit 1 stamps LogAppendTime; bit 3
//! takes the batches through a log on disk (slower, so not every input does), bit 2 with small
//! segments.
#![no_main]

use std::path::PathBuf;
use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use skiff_log::batch::{
    codec, compute_crc, set_log_append_time, validate_batch, BatchHeader, BatchIter,
};
use skiff_log::records::{
    recompress, timestamp_out_of_bounds, BatchRecords, Record, RecordBatchBuilder,
};
use skiff_log::{CleanupPolicy, Log, LogConfig};

const MAX_BATCH_BYTES: usize = 1 << 20;
const NOW_MS: i64 = 1_700_000_000_000;

fuzz_target!(|data: &[u8]| {
    let Some((&options, data)) = data.split_first() else {
        return;
    };
    let mut batches = data.to_vec();
    if options & 1 != 0 {
        fix_crcs(&mut batches);
    }

    // What the produce path does: the first refused batch refuses the request.
    let mut ranges = Vec::new();
    for item in BatchIter::new(&batches) {
        let Ok((header, range)) = item else { return };
        match validate_batch(&batches[range.clone()], MAX_BATCH_BYTES) {
            Ok(validated) => assert_eq!(validated, header),
            Err(_) => return,
        }
        ranges.push(range);
    }
    if ranges.is_empty() {
        return;
    }
    if options & 2 != 0 {
        for range in &ranges {
            set_log_append_time(&mut batches[range.clone()], NOW_MS);
            validate_batch(&batches[range.clone()], MAX_BATCH_BYTES)
                .expect("stamping LogAppendTime keeps a batch valid");
        }
    }
    for range in &ranges {
        let batch = &batches[range.clone()];
        rebuild_round_trip(batch);
        let _ = timestamp_out_of_bounds(batch, NOW_MS, 60_000, 3_600_000);
        recompress_round_trip(batch);
    }
    if options & 8 != 0 {
        append_clean_reopen(&mut batches, options);
    }
});

/// Rewrites the CRC of every batch the iterator finds, as a well-behaved producer would have.
fn fix_crcs(batches: &mut [u8]) {
    let ranges: Vec<_> = BatchIter::new(batches)
        .map_while(Result::ok)
        .map(|(_, range)| range)
        .collect();
    for range in ranges {
        let batch = &mut batches[range];
        let crc = compute_crc(batch);
        batch[17..21].copy_from_slice(&crc.to_be_bytes());
    }
}

/// A batch recompressed as a topic's `compression.type` asks must be valid, keep its header's
/// other fields and hold the same records.
fn recompress_round_trip(batch: &[u8]) {
    let Ok(records) = BatchRecords::new(batch) else {
        return;
    };
    let Ok(decoded) = records.iter().collect::<Result<Vec<_>, _>>() else {
        return;
    };
    for target in [
        codec::NONE,
        codec::GZIP,
        codec::SNAPPY,
        codec::LZ4,
        codec::ZSTD,
    ] {
        let Ok(Some(converted)) = recompress(batch, target) else {
            continue;
        };
        let header = validate_batch(&converted, usize::MAX).expect("a recompressed batch is valid");
        assert_eq!(header.compression(), target);
        let again = BatchRecords::new(&converted).expect("its records decode");
        let again: Vec<_> = again
            .iter()
            .collect::<Result<_, _>>()
            .expect("its records decode");
        assert_eq!(again.len(), decoded.len());
        for (a, b) in again.iter().zip(&decoded) {
            assert_eq!(
                (a.offset, a.timestamp, a.key, a.value),
                (b.offset, b.timestamp, b.key, b.value)
            );
        }
    }
}

/// A batch whose records all decode is rebuilt as the cleaner rebuilds one; the result must be
/// valid and hold the same records.
fn rebuild_round_trip(batch: &[u8]) {
    let Ok(records) = BatchRecords::new(batch) else {
        return;
    };
    let Ok(decoded) = records.iter().collect::<Result<Vec<_>, _>>() else {
        return;
    };
    let header = records.header();
    let rebuilt = rebuild(header, &decoded);
    let rebuilt_header =
        validate_batch(&rebuilt, usize::MAX).expect("a rebuilt batch is a valid batch");
    let again = BatchRecords::new(&rebuilt).expect("a rebuilt batch decodes");
    let again: Vec<_> = again
        .iter()
        .collect::<Result<_, _>>()
        .expect("the records of a rebuilt batch decode");
    assert_eq!(rebuilt_header.records_count as usize, decoded.len());
    assert_eq!(again.len(), decoded.len());
    for (a, b) in again.iter().zip(&decoded) {
        assert_eq!(
            (a.offset, a.timestamp, a.key, a.value, &a.headers),
            (b.offset, b.timestamp, b.key, b.value, &b.headers)
        );
    }
}

fn rebuild(header: &BatchHeader, records: &[Record<'_>]) -> Vec<u8> {
    let mut builder =
        RecordBatchBuilder::like(header, header.base_offset).base_timestamp(header.base_timestamp);
    for r in records {
        builder
            .push(r.offset, r.timestamp, r.key, r.value, &r.headers)
            .expect("a decoded record lies within an i32 of its batch's base offset");
    }
    builder
        .set_last_offset(header.last_offset())
        .expect("a batch's last offset lies within an i32 of its base offset");
    builder.build()
}

/// A scratch directory for this process, emptied for every input.
fn scratch_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let base = ["/dev/shm", "/tmp"]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_dir())
            .unwrap_or_else(std::env::temp_dir);
        base.join(format!("skiff-fuzz-record-batch-{}", std::process::id()))
    })
    .clone()
}

fn append_clean_reopen(batches: &mut [u8], options: u8) {
    let dir = scratch_dir();
    let _ = std::fs::remove_dir_all(&dir);
    let config = LogConfig {
        // Small segments from some inputs, so appends roll and the cleaner sees several.
        segment_bytes: if options & 4 != 0 { 128 } else { 1 << 20 },
        segment_ms: None,
        cleanup_policy: CleanupPolicy::Compact,
        max_batch_bytes: MAX_BATCH_BYTES,
        ..LogConfig::default()
    };
    let (mut log, _) = Log::open(&dir, config.clone(), NOW_MS).expect("an empty log opens");
    if log.append(batches, 0, NOW_MS).is_err() {
        return;
    }
    // The same batches again: a retry of an idempotent producer or a second run of offsets.
    let _ = log.append(batches, 0, NOW_MS);
    let end = log.log_end_offset();
    check_stored(&log);
    log.clean(NOW_MS, end)
        .expect("compaction copes with every batch the log accepted");
    check_stored(&log);
    drop(log);
    let (reopened, _) = Log::open(&dir, config, NOW_MS).expect("a log written here reopens");
    assert_eq!(reopened.log_end_offset(), end);
    check_stored(&reopened);
}

/// Whatever the log serves is whole, valid batches.
fn check_stored(log: &Log) {
    let info = log
        .read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .expect("the whole log reads");
    let bytes = info.read_all().expect("read slices are readable");
    for item in BatchIter::new(&bytes) {
        let (_, range) = item.expect("the log serves whole batches");
        validate_batch(&bytes[range], usize::MAX).expect("the log serves valid batches");
    }
}
