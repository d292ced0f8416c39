//! Producer ids for idempotent producers. The controller hands each broker blocks of ids through
//! the metadata log (`AllocateProducerIds`), so no two brokers ever give out the same id and a
//! restarted broker never reuses one: it asks for a fresh block instead of resuming its last.

/// The unused rest of this broker's current block.
#[derive(Debug, Default)]
pub struct ProducerIdBlock {
    next: i64,
    end: i64,
}

impl ProducerIdBlock {
    /// The next id, or `None` when the block is used up and a new one is needed.
    pub fn take(&mut self) -> Option<i64> {
        (self.next < self.end).then(|| {
            self.next += 1;
            self.next - 1
        })
    }

    /// Starts handing out ids from `start..start + len`.
    pub fn refill(&mut self, start: i64, len: i64) {
        self.next = start;
        self.end = start.saturating_add(len);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_block_is_used_up_then_refilled() {
        let mut block = ProducerIdBlock::default();
        assert_eq!(block.take(), None);
        block.refill(1000, 2);
        assert_eq!(block.take(), Some(1000));
        assert_eq!(block.take(), Some(1001));
        assert_eq!(block.take(), None);
    }
}
