//! Which leader epoch wrote which offsets of a log: Kafka's leader-epoch cache, one
//! `(epoch, start offset)` entry per leadership that appended something, kept with the log as a
//! `leader-epoch-checkpoint` file. A follower's last fetched epoch is looked up here to find
//! where its log stops agreeing with the leader's (KIP-101, KIP-279, KIP-320).

use thiserror::Error;

/// The end of an epoch as a leader answers OffsetForLeaderEpoch, or a fetch's diverging epoch:
/// the largest epoch at or below the requested one, and the offset after its last record.
/// `(-1, -1)` (`EpochEnd::UNDEFINED`) when the requested epoch is above every epoch known.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EpochEnd {
    pub epoch: i32,
    pub end_offset: i64,
}

impl EpochEnd {
    pub const UNDEFINED: EpochEnd = EpochEnd {
        epoch: -1,
        end_offset: -1,
    };
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CheckpointError {
    #[error("leader-epoch checkpoint line {line}: {reason}")]
    Malformed { line: usize, reason: &'static str },
}

/// Entries have strictly increasing epochs and strictly increasing start offsets.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LeaderEpochs {
    entries: Vec<(i32, i64)>,
}

/// Version line of Kafka's checkpoint file format.
const CHECKPOINT_VERSION: &str = "0";

/// More entries than any real log has: a file claiming more is corrupt.
const MAX_ENTRIES: usize = 1 << 20;

impl LeaderEpochs {
    pub fn entries(&self) -> &[(i32, i64)] {
        &self.entries
    }

    pub fn latest(&self) -> Option<(i32, i64)> {
        self.entries.last().copied()
    }

    pub fn latest_epoch(&self) -> Option<i32> {
        self.latest().map(|(epoch, _)| epoch)
    }

    /// Records that `epoch` starts writing at `start_offset`. Entries it contradicts (an epoch at
    /// or above it, or starting at or after it) are removed first, as a new leader's log is the
    /// truth from its start offset on. Assigning the latest epoch again is a no-op.
    pub fn assign(&mut self, epoch: i32, start_offset: i64) {
        if epoch < 0 || start_offset < 0 {
            return;
        }
        if let Some((latest, start)) = self.latest() {
            if latest == epoch && start <= start_offset {
                return;
            }
        }
        self.entries.retain(|&(e, s)| e < epoch && s < start_offset);
        self.entries.push((epoch, start_offset));
    }

    /// The end of `requested` in a log ending at `log_end`, as Kafka's `endOffsetFor`.
    pub fn end_offset_for(&self, requested: i32, log_end: i64) -> EpochEnd {
        if requested < 0 {
            return EpochEnd::UNDEFINED;
        }
        if self.latest_epoch() == Some(requested) {
            return EpochEnd {
                epoch: requested,
                end_offset: log_end,
            };
        }
        let Some(&(_, higher_start)) = self.entries.iter().find(|&&(e, _)| e > requested) else {
            return EpochEnd::UNDEFINED;
        };
        match self.entries.iter().rev().find(|&&(e, _)| e <= requested) {
            // Below every epoch known: the log holds nothing of it, so it ends where the first
            // known epoch starts.
            None => EpochEnd {
                epoch: requested,
                end_offset: higher_start,
            },
            Some(&(floor, _)) => EpochEnd {
                epoch: floor,
                end_offset: higher_start,
            },
        }
    }

    /// Forgets epochs starting at or after `end_offset`, after the log was truncated there.
    pub fn truncate_from_end(&mut self, end_offset: i64) {
        self.entries.retain(|&(_, start)| start < end_offset);
    }

    /// Forgets what lies below `start_offset`, after the log start moved there: the epoch that
    /// covers it now starts there.
    pub fn truncate_from_start(&mut self, start_offset: i64) {
        let Some(floor) = self
            .entries
            .iter()
            .rposition(|&(_, start)| start <= start_offset)
        else {
            return;
        };
        self.entries.drain(..floor);
        if let Some(first) = self.entries.first_mut() {
            first.1 = start_offset;
        }
    }

    /// Kafka's checkpoint text: a version line, a count line, then `epoch offset` lines.
    pub fn to_checkpoint(&self) -> String {
        let mut out = format!("{CHECKPOINT_VERSION}\n{}\n", self.entries.len());
        for (epoch, start) in &self.entries {
            out.push_str(&format!("{epoch} {start}\n"));
        }
        out
    }

    /// Parses `to_checkpoint`'s text, refusing anything else whole: a truncated or edited file
    /// must not be half-believed.
    pub fn from_checkpoint(text: &str) -> Result<Self, CheckpointError> {
        let malformed = |line, reason| CheckpointError::Malformed { line, reason };
        let mut lines = text.lines();
        if lines.next() != Some(CHECKPOINT_VERSION) {
            return Err(malformed(1, "unknown version"));
        }
        let count: usize = lines
            .next()
            .and_then(|l| l.parse().ok())
            .ok_or(malformed(2, "no entry count"))?;
        if count > MAX_ENTRIES {
            return Err(malformed(2, "too many entries"));
        }
        let mut epochs = LeaderEpochs::default();
        for i in 0..count {
            let line = i + 3;
            let entry = lines.next().ok_or(malformed(line, "missing entry"))?;
            let mut fields = entry.split(' ');
            let (Some(epoch), Some(start), None) = (fields.next(), fields.next(), fields.next())
            else {
                return Err(malformed(line, "not two fields"));
            };
            let epoch: i32 = epoch.parse().map_err(|_| malformed(line, "bad epoch"))?;
            let start: i64 = start.parse().map_err(|_| malformed(line, "bad offset"))?;
            if epoch < 0 || start < 0 {
                return Err(malformed(line, "negative epoch or offset"));
            }
            if let Some((last_epoch, last_start)) = epochs.latest() {
                if epoch <= last_epoch || start <= last_start {
                    return Err(malformed(line, "entries out of order"));
                }
            }
            epochs.entries.push((epoch, start));
        }
        if lines.any(|l| !l.is_empty()) {
            return Err(malformed(count + 3, "more entries than counted"));
        }
        Ok(epochs)
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;

    fn epochs(entries: &[(i32, i64)]) -> LeaderEpochs {
        let mut e = LeaderEpochs::default();
        for &(epoch, start) in entries {
            e.assign(epoch, start);
        }
        e
    }

    #[test]
    fn end_offsets_follow_kafka() {
        let e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        let end = |epoch| e.end_offset_for(epoch, 40);
        // The latest epoch ends at the log end.
        assert_eq!(
            end(4),
            EpochEnd {
                epoch: 4,
                end_offset: 40
            }
        );
        // An epoch between two known ones ends where the next starts, named by the floor.
        assert_eq!(
            end(2),
            EpochEnd {
                epoch: 1,
                end_offset: 10
            }
        );
        assert_eq!(
            end(3),
            EpochEnd {
                epoch: 3,
                end_offset: 25
            }
        );
        // Below every epoch: ends where the first starts. Above every epoch: undefined.
        assert_eq!(
            end(0),
            EpochEnd {
                epoch: 0,
                end_offset: 0
            }
        );
        assert_eq!(end(5), EpochEnd::UNDEFINED);
        assert_eq!(end(-1), EpochEnd::UNDEFINED);
        assert_eq!(
            LeaderEpochs::default().end_offset_for(0, 7),
            EpochEnd::UNDEFINED
        );
    }

    #[test]
    fn assigning_an_epoch_removes_what_it_contradicts() {
        let mut e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        e.assign(4, 30);
        assert_eq!(
            e.entries(),
            [(1, 0), (3, 10), (4, 25)],
            "latest again: no-op"
        );
        // A new leader at epoch 5 whose log ends at 20 (it never had epoch 4's records).
        e.assign(5, 20);
        assert_eq!(e.entries(), [(1, 0), (3, 10), (5, 20)]);
        e.assign(2, 5);
        assert_eq!(e.entries(), [(1, 0), (2, 5)]);
        e.assign(-1, 7);
        assert_eq!(e.entries(), [(1, 0), (2, 5)]);
    }

    #[test]
    fn truncation_from_either_end() {
        let mut e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        e.truncate_from_end(25);
        assert_eq!(e.entries(), [(1, 0), (3, 10)]);
        e.truncate_from_start(12);
        assert_eq!(e.entries(), [(3, 12)]);
        e.truncate_from_start(5);
        assert_eq!(e.entries(), [(3, 12)], "below every entry: unchanged");
        e.truncate_from_end(0);
        assert!(e.entries().is_empty());
    }

    #[test]
    fn checkpoints_round_trip_and_refuse_damage() {
        let e = epochs(&[(1, 0), (3, 10), (4, 25)]);
        let text = e.to_checkpoint();
        assert_eq!(text, "0\n3\n1 0\n3 10\n4 25\n");
        assert_eq!(LeaderEpochs::from_checkpoint(&text), Ok(e));
        for damaged in [
            "",
            "1\n0\n",
            "0\n2\n1 0\n",
            "0\n1\n1 0\n3 10\n",
            "0\n2\n3 10\n1 0\n",
            "0\n1\n1 x\n",
            "0\n1\n-1 0\n",
            "0\n99999999999\n",
            "0\n1\n1 0 7\n",
        ] {
            assert!(
                LeaderEpochs::from_checkpoint(damaged).is_err(),
                "{damaged:?}"
            );
        }
    }

    proptest! {
        #[test]
        fn entries_stay_strictly_increasing(ops in proptest::collection::vec((0u8..3, 0i32..20, 0i64..100), 0..50)) {
            let mut e = LeaderEpochs::default();
            for (op, epoch, offset) in ops {
                match op {
                    0 => e.assign(epoch, offset),
                    1 => e.truncate_from_end(offset),
                    _ => e.truncate_from_start(offset),
                }
                for pair in e.entries().windows(2) {
                    prop_assert!(pair[0].0 < pair[1].0 && pair[0].1 < pair[1].1);
                }
                prop_assert_eq!(LeaderEpochs::from_checkpoint(&e.to_checkpoint()), Ok(e.clone()));
            }
        }
    }
}
