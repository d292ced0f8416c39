//! What a follower does with its leader's fetch answers (Kafka's fetcher thread, without the
//! thread): truncate a divergent tail, then append the leader's batches as they are and follow
//! its high watermark.

use skiff_log::epochs::{EpochEnd, LeaderEpochs};

/// Where a follower truncates its log after the leader answered with a diverging epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Truncation {
    pub offset: i64,
    /// False when the follower does not know the leader's epoch: it truncates to the end of its
    /// own epoch below it and asks again (the next fetch names its new last epoch).
    pub complete: bool,
}

/// Kafka's `getOffsetTruncationState`. `own` and `own_log_end` are the follower's log;
/// `own_high_watermark` is the fallback when the leader knows no epoch at or below the one the
/// follower named (everything below a high watermark is on every in-sync replica).
pub fn truncation(
    own: &LeaderEpochs,
    own_log_end: i64,
    own_high_watermark: i64,
    leader: EpochEnd,
) -> Truncation {
    if leader.end_offset < 0 {
        return Truncation {
            offset: own_high_watermark.min(own_log_end),
            complete: true,
        };
    }
    let mine = own.end_offset_for(leader.epoch, own_log_end);
    if mine == EpochEnd::UNDEFINED {
        return Truncation {
            offset: leader.end_offset.min(own_log_end),
            complete: true,
        };
    }
    if mine.epoch != leader.epoch {
        return Truncation {
            offset: mine.end_offset.min(own_log_end),
            complete: false,
        };
    }
    Truncation {
        offset: leader.end_offset.min(mine.end_offset).min(own_log_end),
        complete: true,
    }
}

/// A follower's high watermark: the leader's, as far as its own log reaches.
pub fn high_watermark(leader_high_watermark: i64, own_log_end: i64) -> i64 {
    leader_high_watermark.min(own_log_end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn epochs(entries: &[(i32, i64)]) -> LeaderEpochs {
        let mut e = LeaderEpochs::default();
        for &(epoch, start) in entries {
            e.assign(epoch, start);
        }
        e
    }

    #[test]
    fn kip_101_a_follower_drops_what_a_failed_leader_wrote_alone() {
        // Old leader A wrote 0..10 at epoch 1 and 10..12 at epoch 2 (never replicated); B
        // became leader at epoch 3 from log end 10 and wrote 10..15.
        let a = epochs(&[(1, 0), (2, 10)]);
        let b = epochs(&[(1, 0), (3, 10)]);
        let leader_answer = b.end_offset_for(2, 15);
        assert_eq!(
            leader_answer,
            EpochEnd {
                epoch: 1,
                end_offset: 10
            }
        );
        assert_eq!(
            truncation(&a, 12, 8, leader_answer),
            Truncation {
                offset: 10,
                complete: true
            }
        );
    }

    #[test]
    fn an_epoch_the_follower_never_saw_takes_another_round() {
        // The leader answers epoch 2, which the follower (epochs 1 and 4) never had.
        let follower = epochs(&[(1, 0), (4, 20)]);
        let t = truncation(
            &follower,
            30,
            5,
            EpochEnd {
                epoch: 2,
                end_offset: 25,
            },
        );
        assert_eq!(
            t,
            Truncation {
                offset: 20,
                complete: false
            }
        );
    }

    #[test]
    fn without_a_common_epoch_the_high_watermark_is_kept() {
        let follower = epochs(&[(4, 20)]);
        assert_eq!(
            truncation(&follower, 30, 22, EpochEnd::UNDEFINED).offset,
            22
        );
        assert_eq!(
            truncation(
                &LeaderEpochs::default(),
                30,
                22,
                EpochEnd {
                    epoch: 1,
                    end_offset: 12
                }
            ),
            Truncation {
                offset: 12,
                complete: true
            }
        );
        assert_eq!(high_watermark(40, 30), 30);
    }
}
