use std::fs::OpenOptions;

use proptest::prelude::*;

use super::*;
use crate::batch::{codec, validate_batch};
use crate::segment::{INDEX_SUFFIX, LOG_SUFFIX, TIME_INDEX_SUFFIX};
use crate::testing::{simple_batch, BatchBuilder};

fn config() -> LogConfig {
    LogConfig {
        segment_ms: None,
        retention_ms: None,
        ..LogConfig::default()
    }
}

fn open(dir: &Path, config: LogConfig) -> (Log, RecoveryReport) {
    Log::open(dir, config, 0).unwrap()
}

fn append(log: &mut Log, batch: &[u8], now_ms: i64) -> AppendOutcome {
    log.append(&mut batch.to_vec(), 3, now_ms).unwrap()
}

fn appended_range(outcome: AppendOutcome) -> (i64, i64) {
    match outcome {
        AppendOutcome::Appended {
            base_offset,
            last_offset,
            ..
        } => (base_offset, last_offset),
        other => panic!("expected an append, got {other:?}"),
    }
}

/// Reads everything from `offset` and returns the batch headers found.
fn read_headers(log: &Log, offset: i64) -> Vec<BatchHeader> {
    let info = log.read(offset, usize::MAX, i64::MAX, true).unwrap();
    let bytes = info.read_all().unwrap();
    assert_eq!(bytes.len(), info.total_len);
    BatchIter::new(&bytes)
        .map(|item| {
            let (_, range) = item.unwrap();
            validate_batch(&bytes[range], usize::MAX).unwrap()
        })
        .collect()
}

#[test]
fn append_assigns_offsets_and_patches_headers() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open(dir.path(), config());
    assert_eq!(report.recovered_batches, 0);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (0, 0));
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(3, 10, 100), 0)),
        (0, 2)
    );
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(1, 10, 100), 0)),
        (3, 3)
    );
    // Two batches in one append.
    let mut two = simple_batch(2, 10, 100);
    two.extend(simple_batch(4, 10, 100));
    assert_eq!(appended_range(append(&mut log, &two, 0)), (4, 9));
    assert_eq!(log.log_end_offset(), 10);
    let headers = read_headers(&log, 0);
    let ranges: Vec<_> = headers
        .iter()
        .map(|h| (h.base_offset, h.last_offset()))
        .collect();
    assert_eq!(ranges, vec![(0, 2), (3, 3), (4, 5), (6, 9)]);
    assert!(headers.iter().all(|h| h.partition_leader_epoch == 3));
    assert_eq!(
        log.size_bytes() as usize,
        headers.iter().map(BatchHeader::total_len).sum()
    );
}

#[test]
fn append_rejects_torn_input_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    let mut input = simple_batch(2, 10, 0);
    input.extend_from_slice(&simple_batch(2, 10, 0)[..30]);
    assert!(matches!(
        log.append(&mut input, 0, 0),
        Err(LogError::Corrupt(BatchError::Truncated { .. }))
    ));
    assert!(matches!(
        log.append(&mut [], 0, 0),
        Err(LogError::Corrupt(_))
    ));
    assert_eq!(log.log_end_offset(), 0);
    assert_eq!(log.size_bytes(), 0);
}

#[test]
fn read_inside_a_batch_returns_the_whole_batch() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    append(&mut log, &simple_batch(5, 10, 0), 0);
    append(&mut log, &simple_batch(5, 10, 0), 0);
    let info = log.read(7, usize::MAX, i64::MAX, false).unwrap();
    assert_eq!(info.first_offset, Some(5));
    assert_eq!(info.next_offset, 10);
    let headers = read_headers(&log, 3);
    assert_eq!(headers[0].base_offset, 0);
    assert_eq!(headers.len(), 2);
}

#[test]
fn read_respects_limits() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    let batch = simple_batch(2, 100, 0);
    let len = batch.len();
    for _ in 0..4 {
        append(&mut log, &batch, 0);
    }
    // max_bytes below one batch: nothing, unless the first batch is forced (KIP-74).
    let info = log.read(0, len - 1, i64::MAX, false).unwrap();
    assert_eq!(
        (info.total_len, info.slices.len(), info.next_offset),
        (0, 0, 0)
    );
    let info = log.read(0, 10, i64::MAX, true).unwrap();
    assert_eq!((info.total_len, info.next_offset), (len, 2));
    // Only whole batches.
    let info = log.read(0, 2 * len + len / 2, i64::MAX, false).unwrap();
    assert_eq!((info.total_len, info.next_offset), (2 * len, 4));
    assert_eq!(info.slices.len(), 1, "contiguous batches form one slice");
    // max_offset (high watermark) stops before a batch starting at or after it.
    let info = log.read(0, usize::MAX, 4, true).unwrap();
    assert_eq!((info.total_len, info.next_offset), (2 * len, 4));
    let info = log.read(4, usize::MAX, 4, true).unwrap();
    assert_eq!(info.total_len, 0);
    // At the log end: empty; past it or below the start: out of range.
    let info = log.read(8, usize::MAX, i64::MAX, true).unwrap();
    assert_eq!(
        (info.total_len, info.first_offset, info.next_offset),
        (0, None, 8)
    );
    assert!(matches!(
        log.read(9, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange {
            offset: 9,
            log_start_offset: 0,
            log_end_offset: 8
        })
    ));
    assert!(matches!(
        log.read(-1, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
}

#[test]
fn rolls_by_size_and_reads_across_segments() {
    let dir = tempfile::tempdir().unwrap();
    let batch = simple_batch(1, 200, 0);
    let cfg = LogConfig {
        segment_bytes: 2 * batch.len() as u64,
        index_interval_bytes: 1,
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg);
    for _ in 0..5 {
        append(&mut log, &batch, 0);
    }
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4]);
    // One append of three batches spanning a roll.
    let mut three = batch.clone();
    three.extend(&batch);
    three.extend(&batch);
    assert_eq!(appended_range(append(&mut log, &three, 0)), (5, 7));
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    let headers = read_headers(&log, 0);
    let bases: Vec<_> = headers.iter().map(|h| h.base_offset).collect();
    assert_eq!(bases, (0..8).collect::<Vec<_>>());
    assert!(dir.path().join("00000000000000000004.log").exists());
    // A batch larger than a segment still goes in (alone).
    let big = simple_batch(1, 1000, 0);
    append(&mut log, &big, 0);
    append(&mut log, &batch, 0);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6, 8, 9]);
    for offset in 0..10 {
        assert_eq!(read_headers(&log, offset)[0].base_offset, offset);
    }
}

#[test]
fn rolls_by_age() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: Some(100),
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg);
    append(&mut log, &simple_batch(1, 10, 0), 1_000);
    append(&mut log, &simple_batch(1, 10, 0), 1_099);
    assert_eq!(log.segment_count(), 1);
    append(&mut log, &simple_batch(1, 10, 0), 1_100);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    // The periodic task rolls an idle segment too.
    assert_eq!(log.enforce_retention(1_150, i64::MAX).unwrap(), 0);
    assert_eq!(log.segment_count(), 2);
    log.enforce_retention(1_200, i64::MAX).unwrap();
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 3]);
    // An empty active segment never rolls.
    log.enforce_retention(9_999, i64::MAX).unwrap();
    assert_eq!(log.segment_count(), 3);
}

fn segmented_log(dir: &Path, cfg: LogConfig, timestamps: &[i64]) -> Log {
    let (mut log, _) = open(
        dir,
        LogConfig {
            segment_bytes: 1,
            ..cfg
        },
    );
    for ts in timestamps {
        append(&mut log, &simple_batch(2, 50, *ts), 0);
    }
    log
}

#[test]
fn retention_by_time_keeps_the_active_segment() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(1_000),
        ..config()
    };
    let mut log = segmented_log(dir.path(), cfg, &[1_000, 2_000, 3_000, 4_000]);
    assert_eq!(log.segment_count(), 4);
    assert_eq!(log.enforce_retention(3_000, i64::MAX).unwrap(), 1);
    assert_eq!(log.segment_base_offsets(), vec![2, 4, 6]);
    assert_eq!(log.log_start_offset(), 2);
    assert!(!dir.path().join("00000000000000000000.log").exists());
    assert!(matches!(
        log.read(0, 100, i64::MAX, true),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    // Everything expired: all but the active segment go.
    assert_eq!(log.enforce_retention(100_000, i64::MAX).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![6]);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 8));
    // Negative retention keeps everything; compact-only ignores retention.ms.
    let dir2 = tempfile::tempdir().unwrap();
    let mut forever = segmented_log(
        dir2.path(),
        LogConfig {
            retention_ms: Some(-1),
            ..config()
        },
        &[1, 2, 3],
    );
    assert_eq!(forever.enforce_retention(i64::MAX, i64::MAX).unwrap(), 0);
    let dir3 = tempfile::tempdir().unwrap();
    let mut compacted = segmented_log(
        dir3.path(),
        LogConfig {
            retention_ms: Some(0),
            cleanup_policy: CleanupPolicy::Compact,
            ..config()
        },
        &[1, 2, 3],
    );
    assert_eq!(compacted.enforce_retention(i64::MAX, i64::MAX).unwrap(), 0);
}

#[test]
fn retention_by_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let seg_size = simple_batch(2, 50, 0).len() as i64;
    let cfg = LogConfig {
        retention_bytes: Some(2 * seg_size + 1),
        ..config()
    };
    let mut log = segmented_log(dir.path(), cfg, &[0, 0, 0, 0, 0]);
    assert_eq!(log.enforce_retention(0, i64::MAX).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![4, 6, 8]);
    assert_eq!(log.log_start_offset(), 4);
    log.set_config(LogConfig {
        retention_bytes: Some(0),
        ..log.config().clone()
    });
    assert_eq!(log.enforce_retention(0, i64::MAX).unwrap(), 2);
    assert_eq!(log.segment_base_offsets(), vec![8]);
}

#[test]
fn slices_outlive_deleted_segments() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(0),
        ..config()
    };
    let mut log = segmented_log(dir.path(), cfg, &[1, 2]);
    let info = log.read(0, usize::MAX, i64::MAX, true).unwrap();
    assert_eq!(log.enforce_retention(1_000, i64::MAX).unwrap(), 1);
    let bytes = info.read_all().unwrap();
    assert_eq!(bytes.len(), info.total_len);
    assert_eq!(BatchIter::new(&bytes).count(), 2);
}

#[test]
fn idempotent_producer_checks() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    let b0 = BatchBuilder::new(0)
        .producer(42, 1, 0)
        .record(None, Some(b"a"))
        .record(None, Some(b"b"))
        .build();
    let b1 = BatchBuilder::new(0)
        .producer(42, 1, 2)
        .record(None, Some(b"c"))
        .build();
    assert_eq!(appended_range(append(&mut log, &b0, 0)), (0, 1));
    assert_eq!(appended_range(append(&mut log, &b1, 0)), (2, 2));
    // Retry of both: original offsets, nothing written.
    let size = log.size_bytes();
    assert_eq!(
        append(&mut log, &b0, 0),
        AppendOutcome::Duplicate {
            base_offset: 0,
            last_offset: 1,
            log_start_offset: 0
        }
    );
    assert!(matches!(
        append(&mut log, &b1, 0),
        AppendOutcome::Duplicate { base_offset: 2, .. }
    ));
    assert_eq!((log.size_bytes(), log.log_end_offset()), (size, 3));
    // Gap in sequence.
    let gap = BatchBuilder::new(0)
        .producer(42, 1, 5)
        .record(None, Some(b"x"))
        .build();
    assert!(matches!(
        log.append(&mut gap.clone(), 0, 0),
        Err(LogError::OutOfOrderSequence {
            producer_id: 42,
            expected: 3,
            received: 5
        })
    ));
    // Fenced epoch.
    let stale = BatchBuilder::new(0)
        .producer(42, 0, 3)
        .record(None, Some(b"x"))
        .build();
    assert!(matches!(
        log.append(&mut stale.clone(), 0, 0),
        Err(LogError::InvalidProducerEpoch {
            current: 1,
            received: 0,
            ..
        })
    ));
    // A new epoch starts at sequence 0.
    let bumped_bad = BatchBuilder::new(0)
        .producer(42, 2, 3)
        .record(None, Some(b"x"))
        .build();
    assert!(matches!(
        log.append(&mut bumped_bad.clone(), 0, 0),
        Err(LogError::OutOfOrderSequence { expected: 0, .. })
    ));
    let bumped = BatchBuilder::new(0)
        .producer(42, 2, 0)
        .record(None, Some(b"x"))
        .build();
    assert_eq!(appended_range(append(&mut log, &bumped, 0)), (3, 3));
    // A refused batch in a multi-batch append refuses all of it.
    let ok_next = BatchBuilder::new(0)
        .producer(42, 2, 1)
        .record(None, Some(b"y"))
        .build();
    let mut mixed = ok_next.clone();
    mixed.extend(&gap);
    assert!(log.append(&mut mixed, 0, 0).is_err());
    assert_eq!(log.log_end_offset(), 4);
    // Batches without a producer id are never checked.
    append(&mut log, &simple_batch(1, 1, 0), 0);
    append(&mut log, &simple_batch(1, 1, 0), 0);
    assert_eq!(log.log_end_offset(), 6);
    assert_eq!(appended_range(append(&mut log, &ok_next, 0)), (6, 6));
}

fn producer_state_after_reopen(clean: bool) {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 200,
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    let batch = |seq| {
        BatchBuilder::new(0)
            .producer(7, 0, seq)
            .record(None, Some(&[0u8; 100]))
            .build()
    };
    for seq in 0..6 {
        append(&mut log, &batch(seq), 0);
    }
    assert!(log.segment_count() > 1);
    if clean {
        log.close().unwrap();
    } else {
        drop(log);
    }
    let (mut log, report) = open(dir.path(), cfg);
    assert_eq!(report.clean_shutdown, clean);
    assert!(
        report.producer_snapshot_used,
        "close or roll left a snapshot"
    );
    assert_eq!(log.producer_count(), 1);
    assert!(matches!(
        append(&mut log, &batch(5), 0),
        AppendOutcome::Duplicate { base_offset: 5, .. }
    ));
    assert!(matches!(
        log.append(&mut batch(7), 0, 0),
        Err(LogError::OutOfOrderSequence { expected: 6, .. })
    ));
    assert_eq!(appended_range(append(&mut log, &batch(6), 0)), (6, 6));
}

#[test]
fn producer_state_survives_clean_reopen() {
    producer_state_after_reopen(true);
}

#[test]
fn producer_state_survives_crash() {
    producer_state_after_reopen(false);
}

#[test]
fn producer_state_rebuilt_without_snapshot() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    let b = BatchBuilder::new(0)
        .producer(9, 4, 0)
        .record(None, Some(b"v"))
        .build();
    append(&mut log, &b, 0);
    log.close().unwrap();
    fs::remove_file(dir.path().join(PRODUCER_SNAPSHOT_FILE)).unwrap();
    let (mut log, report) = open(dir.path(), config());
    assert!(!report.producer_snapshot_used);
    assert!(matches!(
        append(&mut log, &b, 0),
        AppendOutcome::Duplicate { .. }
    ));
}

#[test]
fn producers_are_evicted_with_their_data() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(
        dir.path(),
        LogConfig {
            segment_bytes: 1,
            ..config()
        },
    );
    let b = |seq| {
        BatchBuilder::new(0)
            .producer(1, 0, seq)
            .record(None, Some(b"v"))
            .build()
    };
    append(&mut log, &b(0), 0);
    append(&mut log, &simple_batch(1, 1, 0), 0);
    assert_eq!(log.producer_count(), 1);
    log.delete_records_before(1).unwrap();
    assert_eq!(log.producer_count(), 0);
    // Unknown again: any sequence is accepted (KIP-360).
    assert_eq!(appended_range(append(&mut log, &b(17), 0)), (2, 2));
    // Expiration by idle time (batch timestamps are 0 here).
    log.enforce_retention(log.config().producer_id_expiration_ms, i64::MAX)
        .unwrap();
    assert_eq!(log.producer_count(), 0);
}

#[test]
fn delete_records_before_persists() {
    let dir = tempfile::tempdir().unwrap();
    let mut log = segmented_log(dir.path(), config(), &[0, 0, 0]);
    assert!(matches!(
        log.delete_records_before(7),
        Err(LogError::OffsetOutOfRange { .. })
    ));
    assert_eq!(log.delete_records_before(3).unwrap(), 3);
    assert_eq!(log.segment_base_offsets(), vec![2, 4]);
    assert_eq!(log.delete_records_before(1).unwrap(), 3);
    assert_eq!(read_headers(&log, 3)[0].base_offset, 2);
    assert!(log.read(2, 100, i64::MAX, true).is_err());
    drop(log);
    let (log, _) = open(dir.path(), config());
    assert_eq!(log.log_start_offset(), 3);
    log.close().unwrap();
    let (mut log, _) = open(dir.path(), config());
    assert_eq!(log.log_start_offset(), 3);
    assert_eq!(log.delete_records_before(6).unwrap(), 6);
    assert_eq!(log.segment_base_offsets(), vec![4]);
    assert_eq!(log.read(6, 100, i64::MAX, true).unwrap().total_len, 0);
}

#[test]
fn offset_for_timestamp_uncompressed_and_compressed() {
    for c in [
        codec::NONE,
        codec::GZIP,
        codec::SNAPPY,
        codec::LZ4,
        codec::ZSTD,
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (mut log, _) = open(
            dir.path(),
            LogConfig {
                segment_bytes: 300,
                index_interval_bytes: 1,
                ..config()
            },
        );
        // Ten batches of three records, timestamps 100*i + {0, 50, 20} (not monotonic inside).
        for i in 0..10i64 {
            let b = BatchBuilder::new(0)
                .compression(c)
                .record_at(100 * i, Some(b"k"), Some(&[1u8; 40]))
                .record_at(100 * i + 50, None, Some(b"v"))
                .record_at(100 * i + 20, None, Some(b"w"))
                .build();
            append(&mut log, &b, 0);
        }
        assert!(log.segment_count() > 2, "codec {c}");
        assert_eq!(log.offset_for_timestamp(-5).unwrap(), Some((0, 0)));
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((0, 0)));
        assert_eq!(
            log.offset_for_timestamp(1).unwrap(),
            Some((1, 50)),
            "codec {c}"
        );
        assert_eq!(log.offset_for_timestamp(51).unwrap(), Some((3, 100)));
        assert_eq!(log.offset_for_timestamp(420).unwrap(), Some((13, 450)));
        assert_eq!(log.offset_for_timestamp(950).unwrap(), Some((28, 950)));
        assert_eq!(log.offset_for_timestamp(951).unwrap(), None);
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((28, 950)));
        log.delete_records_before(29).unwrap();
        assert_eq!(log.offset_for_timestamp(0).unwrap(), Some((29, 920)));
        assert_eq!(log.max_timestamp_offset().unwrap(), Some((29, 920)));
    }
}

#[test]
fn log_append_time_batches_use_max_timestamp() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    let mut b = BatchBuilder::new(5)
        .record(None, Some(b"a"))
        .record(None, Some(b"b"))
        .build();
    crate::batch::set_log_append_time(&mut b, 777);
    append(&mut log, &b, 0);
    assert_eq!(log.offset_for_timestamp(700).unwrap(), Some((0, 777)));
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((0, 777)));
    assert_eq!(log.offset_for_timestamp(778).unwrap(), None);
}

#[test]
fn empty_log_answers() {
    let dir = tempfile::tempdir().unwrap();
    let (log, _) = open(dir.path(), config());
    assert_eq!(log.offset_for_timestamp(0).unwrap(), None);
    assert_eq!(log.max_timestamp_offset().unwrap(), None);
    assert_eq!(log.read(0, 100, i64::MAX, true).unwrap().total_len, 0);
}

#[test]
fn clean_close_needs_no_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let log = segmented_log(dir.path(), config(), &[0, 0, 0]);
    log.close().unwrap();
    let (log, report) = open(dir.path(), config());
    assert!(report.clean_shutdown);
    assert_eq!(report.recovered_segments, 0);
    assert_eq!(log.log_end_offset(), 6);
    drop(log);
    // Crashed after that open: the recovery point spares the flushed segments.
    let (log, report) = open(dir.path(), config());
    assert!(!report.clean_shutdown);
    assert_eq!(report.recovered_segments, 1);
    assert_eq!(log.log_end_offset(), 6);
    drop(log);
    fs::remove_file(dir.path().join(RECOVERY_POINT_FILE)).unwrap();
    let (_, report) = open(dir.path(), config());
    assert_eq!(
        (report.recovered_segments, report.recovered_batches),
        (3, 3)
    );
}

#[test]
fn corruption_in_an_earlier_segment_drops_what_follows() {
    let dir = tempfile::tempdir().unwrap();
    let log = segmented_log(dir.path(), config(), &[0, 0, 0, 0]);
    drop(log);
    let path = segment_path(dir.path(), 2, LOG_SUFFIX);
    let f = OpenOptions::new().write(true).open(&path).unwrap();
    f.write_all_at(&[0xff], 70).unwrap();
    let (mut log, report) = open(dir.path(), config());
    assert_eq!(report.deleted_segments, 2);
    assert!(report.truncated_bytes > 0);
    assert_eq!(log.log_end_offset(), 2);
    assert_eq!(log.segment_base_offsets(), vec![0, 2]);
    assert!(!segment_path(dir.path(), 4, INDEX_SUFFIX).exists());
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(1, 1, 0), 0)),
        (2, 2)
    );
}

#[test]
fn missing_or_damaged_indexes_are_rebuilt() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        index_interval_bytes: 1,
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    for ts in 0..20 {
        append(&mut log, &simple_batch(2, 30, ts), 0);
    }
    log.close().unwrap();
    fs::remove_file(segment_path(dir.path(), 0, INDEX_SUFFIX)).unwrap();
    fs::write(segment_path(dir.path(), 0, TIME_INDEX_SUFFIX), b"garbage").unwrap();
    let (log, report) = open(dir.path(), cfg.clone());
    assert!(report.clean_shutdown);
    for offset in [0, 1, 17, 39] {
        assert_eq!(
            read_headers(&log, offset)[0].base_offset,
            offset - offset % 2
        );
    }
    assert_eq!(log.offset_for_timestamp(7).unwrap(), Some((14, 7)));
    assert_eq!(
        fs::metadata(segment_path(dir.path(), 0, INDEX_SUFFIX))
            .unwrap()
            .len(),
        19 * 8,
        "one entry per batch after the first"
    );
    log.close().unwrap();
    // An index entry pointing past the data is caught too.
    fs::write(
        segment_path(dir.path(), 0, INDEX_SUFFIX),
        [0, 0, 0, 1, 0, 1, 0, 0],
    )
    .unwrap();
    let (log, _) = open(dir.path(), cfg);
    assert_eq!(read_headers(&log, 38)[0].base_offset, 38);
}

#[test]
fn truncate_to_removes_suffix() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 250,
        index_interval_bytes: 1,
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    for ts in 0..10 {
        append(&mut log, &simple_batch(2, 50, ts), 0);
    }
    let segments_before = log.segment_count();
    assert!(segments_before > 2);
    // Inside a batch: the batch goes entirely.
    log.truncate_to(9).unwrap();
    assert_eq!(log.log_end_offset(), 8);
    assert!(log.segment_count() < segments_before);
    assert_eq!(log.max_timestamp_offset().unwrap(), Some((6, 3)));
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(1, 1, 0), 0)),
        (8, 8)
    );
    log.truncate_to(100).unwrap();
    assert_eq!(log.log_end_offset(), 9);
    drop(log);
    let (mut log, _) = open(dir.path(), cfg.clone());
    assert_eq!(log.log_end_offset(), 9);
    // Below the first segment: empty log restarting there.
    log.truncate_to(0).unwrap();
    assert_eq!(
        (
            log.log_start_offset(),
            log.log_end_offset(),
            log.segment_count()
        ),
        (0, 0, 1)
    );
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(1, 1, 0), 0)),
        (0, 0)
    );
}

#[test]
fn truncating_below_the_log_start_restarts_the_log_in_a_new_segment() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    for ts in 0..5 {
        append(&mut log, &simple_batch(2, 10, ts), 0);
    }
    log.delete_records_before(6).unwrap();
    // Below the log start but above the first segment's base: a segment is created at 4.
    log.truncate_to(4).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 4));
    assert_eq!(log.segment_base_offsets(), [4]);
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(1, 1, 0), 0)),
        (4, 4)
    );
    drop(log);
    let (log, _) = open(dir.path(), config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (4, 5));
}

#[test]
fn a_log_restarts_beyond_its_end() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    for ts in 0..5 {
        append(&mut log, &simple_batch(2, 10, ts), 0);
    }
    log.begin_leader_epoch(3).unwrap();
    log.truncate_fully_and_start_at(20).unwrap();
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
    assert_eq!(log.segment_base_offsets(), [20]);
    assert_eq!(log.leader_epochs().latest_epoch(), None);
    assert!(log.truncate_fully_and_start_at(-1).is_err());
    drop(log);
    let (mut log, _) = open(dir.path(), config());
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (20, 20));
    assert_eq!(
        log.segment_base_offsets(),
        [20],
        "no old segment left behind"
    );
    assert_eq!(
        appended_range(append(&mut log, &simple_batch(1, 1, 0), 0)),
        (20, 20)
    );
}

#[test]
fn retention_keeps_what_is_not_below_the_high_watermark() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_ms: Some(0),
        ..config()
    };
    let mut log = segmented_log(dir.path(), cfg, &[1, 2, 3, 4]);
    assert_eq!(log.segment_base_offsets(), vec![0, 2, 4, 6]);
    // Only the first segment ends at or below the high watermark.
    assert_eq!(log.enforce_retention(1_000, 3).unwrap(), 1);
    assert_eq!(log.segment_base_offsets(), vec![2, 4, 6]);
    assert_eq!(log.enforce_retention(1_000, 4).unwrap(), 1);
    assert_eq!(log.enforce_retention(1_000, 0).unwrap(), 0);
    assert_eq!(log.log_start_offset(), 4);

    // retention.bytes is bounded by the high watermark too.
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        retention_bytes: Some(0),
        ..config()
    };
    let mut log = segmented_log(dir.path(), cfg, &[1, 2, 3, 4]);
    assert_eq!(log.enforce_retention(1_000, 3).unwrap(), 1);
    assert_eq!(log.segment_base_offsets(), vec![2, 4, 6]);
}

#[test]
fn flush_policies_write_recovery_point() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1,
        flush_messages: Some(2),
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg);
    let rp = || fs::read_to_string(dir.path().join(RECOVERY_POINT_FILE)).unwrap();
    assert_eq!(rp(), "0\n");
    append(&mut log, &simple_batch(1, 1, 0), 0);
    append(&mut log, &simple_batch(1, 1, 0), 0);
    assert_eq!(rp(), "2\n");
    append(&mut log, &simple_batch(1, 1, 0), 0);
    assert_eq!(rp(), "2\n");
    log.set_config(LogConfig {
        flush_ms: Some(100),
        flush_messages: None,
        ..log.config().clone()
    });
    log.flush_if_due(50).unwrap();
    assert_eq!(rp(), "2\n");
    // Flushed, but the active segment is recovered whole anyway: no need to rewrite.
    log.flush_if_due(100).unwrap();
    assert_eq!(rp(), "2\n");
    append(&mut log, &simple_batch(1, 1, 0), 100);
    log.flush_if_due(150).unwrap();
    assert_eq!(rp(), "2\n");
    log.flush_if_due(200).unwrap();
    assert_eq!(rp(), "4\n");
}

#[test]
fn delete_removes_directory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("topic-0");
    let (mut log, _) = open(&path, config());
    append(&mut log, &simple_batch(1, 1, 0), 0);
    let info = log.read(0, 100, i64::MAX, true).unwrap();
    log.delete().unwrap();
    assert!(!path.exists());
    assert_eq!(info.read_all().unwrap().len(), info.total_len);
}

#[derive(Debug, Clone)]
enum Damage {
    Truncate,
    Flip(u8),
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    /// Random batches, then damage to the last segment: a cut at any byte, or a flipped byte in
    /// the part of a batch that length, magic and CRC protect. Exactly the batches before the
    /// damage survive, and appends continue after them.
    #[test]
    fn recovery_keeps_exactly_the_intact_prefix(
        batches in prop::collection::vec((1usize..6, 0usize..120), 1..25),
        damage_at in 0.0f64..1.0,
        damage in prop_oneof![Just(Damage::Truncate), any::<u8>().prop_filter("changes", |b| *b != 0).prop_map(Damage::Flip)],
        segment_bytes in 200u64..2_000,
    ) {
        let dir = tempfile::tempdir().unwrap();
        let cfg = LogConfig { segment_bytes, index_interval_bytes: 64, ..config() };
        let (mut log, _) = open(dir.path(), cfg.clone());
        let mut written = Vec::new();
        for (i, (records, value_len)) in batches.iter().enumerate() {
            let b = BatchBuilder::new(i as i64);
            let b = (0..*records).fold(b, |b, r| b.record(None, Some(&vec![r as u8; *value_len])));
            let mut bytes = b.build();
            log.append(&mut bytes, 1, 0).unwrap();
            written.push(bytes);
        }
        let last_base = *log.segment_base_offsets().last().unwrap();
        drop(log);
        // Batches of the last segment with their positions in its file.
        let mut in_last = Vec::new();
        let mut pos = 0usize;
        for bytes in &written {
            let h = BatchHeader::parse(bytes).unwrap();
            if h.base_offset >= last_base {
                in_last.push((pos, h));
                pos += bytes.len();
            }
        }
        let file_len = pos;
        let path = segment_path(dir.path(), last_base, LOG_SUFFIX);
        let expected_end = match damage {
            Damage::Truncate => {
                let cut = (damage_at * file_len as f64) as usize;
                OpenOptions::new().write(true).open(&path).unwrap().set_len(cut as u64).unwrap();
                in_last.iter().find(|(p, h)| p + h.total_len() > cut).map_or(
                    in_last.last().map_or(last_base, |(_, h)| h.last_offset() + 1),
                    |(_, h)| h.base_offset,
                )
            }
            Damage::Flip(x) => {
                let k = ((damage_at * in_last.len() as f64) as usize).min(in_last.len() - 1);
                let (p, h) = in_last[k];
                let within = 16 + (damage_at * 1e6) as usize % (h.total_len() - 16);
                let f = OpenOptions::new().read(true).write(true).open(&path).unwrap();
                let mut byte = [0u8];
                f.read_exact_at(&mut byte, (p + within) as u64).unwrap();
                f.write_all_at(&[byte[0] ^ x], (p + within) as u64).unwrap();
                h.base_offset
            }
        };
        let (mut log, report) = open(dir.path(), cfg);
        prop_assert!(!report.clean_shutdown);
        prop_assert_eq!(log.log_end_offset(), expected_end);
        let got = log.read(0, usize::MAX, i64::MAX, true).unwrap().read_all().unwrap();
        let expected: Vec<u8> = written
            .iter()
            .filter(|b| BatchHeader::parse(b).unwrap().base_offset < expected_end)
            .flatten()
            .copied()
            .collect();
        prop_assert_eq!(got, expected);
        let next = log.append(&mut simple_batch(1, 5, 0), 1, 0).unwrap();
        prop_assert_eq!(appended_range(next).0, expected_end);
    }
}

fn append_at_epoch(log: &mut Log, records: usize, epoch: i32) {
    log.append(&mut simple_batch(records, 10, 0), epoch, 0)
        .unwrap();
}

#[test]
fn leader_epochs_follow_appends_truncation_and_the_log_start() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, report) = open(dir.path(), config());
    assert!(
        !report.leader_epochs_rebuilt,
        "a new log has nothing to rebuild from"
    );
    append_at_epoch(&mut log, 2, 0);
    append_at_epoch(&mut log, 3, 2);
    append_at_epoch(&mut log, 1, 2);
    // A stale leader's older epoch is never recorded over a newer one.
    append_at_epoch(&mut log, 1, 1);
    append_at_epoch(&mut log, 2, 5);
    assert_eq!(log.leader_epochs().entries(), [(0, 0), (2, 2), (5, 7)]);
    assert_eq!(
        log.end_offset_for_epoch(1, 5),
        EpochEnd {
            epoch: 0,
            end_offset: 2
        }
    );
    assert_eq!(
        log.end_offset_for_epoch(5, 5),
        EpochEnd {
            epoch: 5,
            end_offset: 9
        }
    );
    // The current leader at epoch 7 has not appended yet: epoch 5 ends at the log end.
    assert_eq!(
        log.end_offset_for_epoch(5, 7),
        EpochEnd {
            epoch: 5,
            end_offset: 9
        }
    );
    assert_eq!(log.end_offset_for_epoch(8, 7), EpochEnd::UNDEFINED);
    assert_eq!(
        [0, 1, 2, 6, 8, 9].map(|offset| log.epoch_of(offset, 7)),
        [0, 0, 2, 2, 5, 7]
    );

    log.truncate_to(7).unwrap();
    assert_eq!(log.leader_epochs().entries(), [(0, 0), (2, 2)]);
    log.delete_records_before(3).unwrap();
    assert_eq!(log.leader_epochs().entries(), [(2, 3)]);
    drop(log);
    let (log, report) = open(dir.path(), config());
    assert!(!report.leader_epochs_rebuilt);
    assert_eq!(log.leader_epochs().entries(), [(2, 3)]);
}

#[test]
fn a_missing_or_damaged_leader_epoch_checkpoint_is_rebuilt_from_the_batches() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    append_at_epoch(&mut log, 2, 1);
    append_at_epoch(&mut log, 2, 4);
    drop(log);
    let path = dir.path().join(LEADER_EPOCH_FILE);
    for damage in [None, Some("0\n3\n1 0\n"), Some("garbage")] {
        match damage {
            None => fs::remove_file(&path).unwrap(),
            Some(text) => fs::write(&path, text).unwrap(),
        }
        let (log, report) = open(dir.path(), config());
        assert!(report.leader_epochs_rebuilt, "{damage:?}");
        assert_eq!(log.leader_epochs().entries(), [(1, 0), (4, 2)]);
    }
    // A checkpoint ahead of the log (the epoch was recorded, its batch never written) is trimmed.
    fs::write(&path, "0\n3\n1 0\n4 2\n6 4\n").unwrap();
    let (log, report) = open(dir.path(), config());
    assert!(!report.leader_epochs_rebuilt);
    assert_eq!(log.leader_epochs().entries(), [(1, 0), (4, 2)]);
    assert_eq!(
        fs::read_to_string(&path).unwrap(),
        "0\n2\n1 0\n4 2\n",
        "written back trimmed"
    );
}

#[test]
fn a_segment_rolls_when_its_index_would_outgrow_segment_index_bytes() {
    let dir = tempfile::tempdir().unwrap();
    let indexed = LogConfig {
        index_interval_bytes: 1,
        ..config()
    };
    let (mut log, _) = open(dir.path(), indexed.clone());
    for ts in 0..10 {
        append(&mut log, &simple_batch(1, 10, ts), 0);
    }
    assert_eq!(log.segment_count(), 1);
    drop(log);
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(
        dir.path(),
        LogConfig {
            max_index_bytes: 24,
            ..indexed
        },
    );
    for ts in 0..10 {
        append(&mut log, &simple_batch(1, 10, ts), 0);
    }
    // At most two 12-byte time entries per segment: a roll every few batches.
    assert!(log.segment_count() >= 3, "{} segments", log.segment_count());
}

#[test]
fn an_epoch_whose_checkpoint_write_failed_is_recorded_by_the_retry() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    append_at_epoch(&mut log, 2, 1);
    // A directory in the checkpoint's place makes its atomic replacement fail.
    let path = dir.path().join(LEADER_EPOCH_FILE);
    fs::remove_file(&path).unwrap();
    fs::create_dir(&path).unwrap();
    fs::write(path.join("blocker"), b"x").unwrap();
    assert!(log.append(&mut simple_batch(1, 10, 0), 3, 0).is_err());
    assert_eq!(log.log_end_offset(), 2, "nothing appended");
    assert_eq!(log.leader_epochs().entries(), [(1, 0)]);
    fs::remove_dir_all(&path).unwrap();
    append_at_epoch(&mut log, 1, 3);
    assert_eq!(log.leader_epochs().entries(), [(1, 0), (3, 2)]);
    drop(log);
    let (log, report) = open(dir.path(), config());
    assert!(!report.leader_epochs_rebuilt);
    assert_eq!(log.leader_epochs().entries(), [(1, 0), (3, 2)]);
}

#[test]
fn rebuilt_leader_epochs_follow_the_append_rule() {
    let dir = tempfile::tempdir().unwrap();
    let (mut log, _) = open(dir.path(), config());
    append_at_epoch(&mut log, 2, 0);
    append_at_epoch(&mut log, 3, 2);
    // A batch stamped with an older epoch (a stale leader's) changes nothing, live or rebuilt.
    append_at_epoch(&mut log, 1, 1);
    append_at_epoch(&mut log, 2, 5);
    let live = log.leader_epochs().clone();
    assert_eq!(live.entries(), [(0, 0), (2, 2), (5, 6)]);
    drop(log);
    fs::remove_file(dir.path().join(LEADER_EPOCH_FILE)).unwrap();
    let (log, report) = open(dir.path(), config());
    assert!(report.leader_epochs_rebuilt);
    assert_eq!(log.leader_epochs(), &live);
}

#[test]
fn truncating_below_the_start_onto_a_later_segment_keeps_that_segment_file() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_bytes: 1,
        ..config()
    };
    let (mut log, _) = open(dir.path(), cfg.clone());
    for _ in 0..5 {
        append_at_epoch(&mut log, 2, 0);
    }
    assert_eq!(log.segment_base_offsets(), [0, 2, 4, 6, 8]);
    drop(log);
    // A crash after the log start checkpoint was written, before segments below it were deleted.
    fs::write(dir.path().join(LOG_START_FILE), "7\n").unwrap();
    let (mut log, _) = open(dir.path(), cfg.clone());
    assert_eq!(log.log_start_offset(), 7);
    log.truncate_to(6).unwrap();
    assert_eq!(log.segment_base_offsets(), [6]);
    append_at_epoch(&mut log, 1, 1);
    drop(log);
    let (log, _) = open(dir.path(), cfg);
    assert_eq!((log.log_start_offset(), log.log_end_offset()), (6, 7));
    assert_eq!(log.leader_epochs().entries(), [(1, 6)]);
}

/// Every byte of `log` from its start, as a follower would fetch it.
fn fetch_all(log: &Log) -> Vec<u8> {
    log.read(log.log_start_offset(), usize::MAX, i64::MAX, true)
        .unwrap()
        .read_all()
        .unwrap()
}

#[test]
fn a_log_restarted_inside_a_batch_takes_that_batch_and_keeps_its_start() {
    let leader_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(leader_dir.path(), config());
    append_at_epoch(&mut leader, 10, 1);
    append_at_epoch(&mut leader, 2, 1);
    leader.delete_records_before(8).unwrap();
    let bytes = fetch_all(&leader);

    let dir = tempfile::tempdir().unwrap();
    let (mut follower, _) = open(dir.path(), config());
    follower.truncate_fully_and_start_at(8).unwrap();
    assert_eq!(follower.append_replicated(&bytes, 0).unwrap(), 12);
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (8, 12)
    );
    assert_eq!(fetch_all(&follower), bytes, "byte for byte");
    assert_eq!(follower.leader_epochs().entries(), [(1, 8)]);
    // Only an empty log does this: a batch from below the end of a log with records is refused.
    assert!(matches!(
        follower.append_replicated(&bytes, 0),
        Err(LogError::NonContiguousOffsets {
            after: 11,
            found: 0
        })
    ));
    drop(follower);
    let (follower, _) = open(dir.path(), config());
    assert_eq!(
        (follower.log_start_offset(), follower.log_end_offset()),
        (8, 12)
    );
    assert_eq!(follower.segment_base_offsets(), [0]);

    // A batch "holding" the start of a fresh log from a negative base offset is no batch a
    // leader can have: refused.
    let mut negative = simple_batch(10, 10, 0);
    negative[..8].copy_from_slice(&(-3i64).to_be_bytes());
    let dir = tempfile::tempdir().unwrap();
    let (mut fresh, _) = open(dir.path(), config());
    assert!(matches!(
        fresh.append_replicated(&negative, 0),
        Err(LogError::NonContiguousOffsets { .. })
    ));
    assert_eq!(fresh.log_end_offset(), 0);
}

#[test]
fn a_follower_appends_the_leaders_batches_as_they_are() {
    let leader_dir = tempfile::tempdir().unwrap();
    let follower_dir = tempfile::tempdir().unwrap();
    let (mut leader, _) = open(leader_dir.path(), config());
    let (mut follower, _) = open(follower_dir.path(), config());
    append_at_epoch(&mut leader, 2, 1);
    let mut idempotent = BatchBuilder::new(0)
        .producer(7, 0, 0)
        .record(Some(b"k"), Some(b"v"))
        .build();
    leader.append(&mut idempotent.clone(), 3, 0).unwrap();
    append_at_epoch(&mut leader, 3, 4);

    let bytes = fetch_all(&leader);
    assert_eq!(follower.append_replicated(&bytes, 0).unwrap(), 6);
    assert_eq!(fetch_all(&follower), bytes, "byte for byte");
    assert_eq!(follower.leader_epochs(), leader.leader_epochs());
    // The follower, made leader, knows the producer's last batch: a retry is a duplicate.
    assert!(matches!(
        follower.append(&mut idempotent, 5, 0).unwrap(),
        AppendOutcome::Duplicate { base_offset: 2, .. }
    ));

    // The same batches again, or from before the log end: refused, nothing written.
    assert!(matches!(
        follower.append_replicated(&bytes, 0),
        Err(LogError::NonContiguousOffsets { after: 5, found: 0 })
    ));
    let mut corrupt = fetch_all(&leader);
    let last = corrupt.len() - 1;
    corrupt[last] ^= 1;
    let (mut fresh, _) = open(tempfile::tempdir().unwrap().path(), config());
    assert!(matches!(
        fresh.append_replicated(&corrupt, 0),
        Err(LogError::Corrupt(_))
    ));
    assert_eq!(fresh.log_end_offset(), 0);
    drop(follower);
    let (follower, _) = open(follower_dir.path(), config());
    assert_eq!(fetch_all(&follower), bytes);
    assert_eq!(follower.leader_epochs().entries(), [(1, 0), (3, 2), (4, 3)]);
}

#[test]
fn segment_jitter_spreads_the_rolls_of_partitions_created_together() {
    let parent = tempfile::tempdir().unwrap();
    let cfg = LogConfig {
        segment_ms: Some(1_000),
        segment_jitter_ms: 1_000,
        ..config()
    };
    // Twenty new partitions, one record each at 0: when does each roll on its own clock?
    let rolls: std::collections::BTreeSet<i64> = (0..20)
        .map(|p| {
            let (mut log, _) = open(&parent.path().join(format!("t-{p}")), cfg.clone());
            append(&mut log, &simple_batch(1, 10, 0), 0);
            (1..=1_000)
                .find(|&now| {
                    log.enforce_retention(now, i64::MAX).unwrap();
                    log.segment_count() > 1
                })
                .expect("rolls by segment.ms")
        })
        .collect();
    assert!(rolls.len() > 10, "roll times {rolls:?}");
}
