//! Lamport clocks and the bounded buffers that make user events and queries exactly-once,
//! as in Serf: a message is remembered in the slot `ltime % slots`; anything older than the
//! window is refused as too old instead of being remembered forever.

#[derive(Debug, Default, Clone, Copy)]
pub(crate) struct LamportClock(u64);

impl LamportClock {
    pub(crate) fn time(self) -> u64 {
        self.0
    }

    /// The time to stamp a new message with; the clock moves past it.
    pub(crate) fn tick(&mut self) -> u64 {
        let stamp = self.0;
        self.0 += 1;
        stamp
    }

    /// Moves the clock past a time seen in a received message.
    pub(crate) fn witness(&mut self, seen: u64) {
        if seen >= self.0 {
            self.0 = seen.saturating_add(1);
        }
    }
}

#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Admission {
    New,
    Duplicate,
    /// Older than the buffer's window: it may or may not have been seen, so it is refused.
    TooOld,
    /// Too many distinct messages share one Lamport time; refused rather than remembered.
    SlotFull,
}

#[derive(Debug)]
struct Slot<T> {
    ltime: u64,
    entries: Vec<T>,
}

#[derive(Debug)]
pub(crate) struct RecentBuffer<T> {
    slots: Vec<Option<Slot<T>>>,
    per_slot: usize,
}

impl<T: PartialEq> RecentBuffer<T> {
    pub(crate) fn new(slots: usize, per_slot: usize) -> Self {
        Self {
            slots: (0..slots).map(|_| None).collect(),
            per_slot,
        }
    }

    /// Remembers `entry` stamped `ltime` unless it was seen, is too old for the window that
    /// ends at `clock`, or its slot is full.
    pub(crate) fn admit(&mut self, ltime: u64, entry: T, clock: u64) -> Admission {
        let window = self.slots.len() as u64;
        if clock > window && ltime < clock - window {
            return Admission::TooOld;
        }
        let index = (ltime % window) as usize;
        match &mut self.slots[index] {
            Some(slot) if slot.ltime == ltime => {
                if slot.entries.contains(&entry) {
                    Admission::Duplicate
                } else if slot.entries.len() >= self.per_slot {
                    Admission::SlotFull
                } else {
                    slot.entries.push(entry);
                    Admission::New
                }
            }
            Some(slot) if slot.ltime > ltime => Admission::TooOld,
            other => {
                *other = Some(Slot {
                    ltime,
                    entries: vec![entry],
                });
                Admission::New
            }
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, &T)> {
        self.slots
            .iter()
            .flatten()
            .flat_map(|slot| slot.entries.iter().map(move |entry| (slot.ltime, entry)))
    }

    pub(crate) fn len(&self) -> usize {
        self.slots
            .iter()
            .flatten()
            .map(|slot| slot.entries.len())
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clock_ticks_and_witnesses() {
        let mut clock = LamportClock::default();
        assert_eq!(clock.tick(), 0);
        assert_eq!(clock.time(), 1);
        clock.witness(10);
        assert_eq!(clock.time(), 11);
        clock.witness(3);
        assert_eq!(clock.time(), 11);
        clock.witness(u64::MAX);
        assert_eq!(clock.time(), u64::MAX);
    }

    #[test]
    fn duplicates_are_recognised_within_the_window() {
        let mut buffer = RecentBuffer::new(4, 2);
        assert_eq!(buffer.admit(5, "a", 6), Admission::New);
        assert_eq!(buffer.admit(5, "a", 6), Admission::Duplicate);
        assert_eq!(buffer.admit(5, "b", 6), Admission::New);
        assert_eq!(buffer.admit(5, "c", 6), Admission::SlotFull);
        assert_eq!(buffer.len(), 2);
    }

    #[test]
    fn old_messages_are_refused_and_slots_are_reused() {
        let mut buffer = RecentBuffer::new(4, 2);
        assert_eq!(buffer.admit(1, "a", 2), Admission::New);
        // ltime 5 shares slot 1 and replaces the older entry.
        assert_eq!(buffer.admit(5, "b", 6), Admission::New);
        assert_eq!(
            buffer.admit(1, "a", 6),
            Admission::TooOld,
            "outside the window"
        );
        assert_eq!(
            buffer.admit(1, "a", 4),
            Admission::TooOld,
            "slot holds newer ltime"
        );
        let seen: Vec<_> = buffer.iter().collect();
        assert_eq!(seen, vec![(5, &"b")]);
    }
}
