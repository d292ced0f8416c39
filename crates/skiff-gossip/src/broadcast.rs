//! The dissemination queue for our gossip items (tags, leave intents, user events, queries),
//! like memberlist's `TransmitLimitedQueue`: each item is sent a limited number of times,
//! least-sent first, and a newer item about the same thing replaces the queued one.

use std::sync::Arc;

/// What an item is about; a queued item with an equal key is superseded by a newer one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum BroadcastKey {
    Tags(Arc<str>),
    Leave(Arc<str>),
    /// Coalescing events share a key (their name), so a newer one replaces an older one.
    CoalescedEvent(String),
    /// Other events: Lamport time, name and a hash of the payload.
    Event(u64, String, u64),
    Query(u64, u32),
}

#[derive(Debug)]
struct Queued {
    key: BroadcastKey,
    bytes: Vec<u8>,
    transmits: u32,
    /// Insertion order, to break ties in favour of the older item.
    seq: u64,
}

#[derive(Debug)]
pub(crate) struct BroadcastQueue {
    items: Vec<Queued>,
    capacity: usize,
    next_seq: u64,
}

impl BroadcastQueue {
    pub(crate) fn new(capacity: usize) -> Self {
        Self {
            items: Vec::new(),
            capacity,
            next_seq: 0,
        }
    }

    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.items.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    pub(crate) fn queued_bytes(&self) -> usize {
        self.items.iter().map(|item| item.bytes.len()).sum()
    }

    /// Queues `bytes` (an encoded item); returns whether an older item had to be dropped
    /// because the queue was full (the most-transmitted one goes first, as memberlist does).
    pub(crate) fn push(&mut self, key: BroadcastKey, bytes: Vec<u8>) -> bool {
        self.items.retain(|item| item.key != key);
        let mut evicted = false;
        if self.items.len() >= self.capacity {
            let victim = self
                .items
                .iter()
                .enumerate()
                .max_by_key(|(_, item)| (item.transmits, std::cmp::Reverse(item.seq)))
                .map(|(at, _)| at)
                .expect("capacity is at least one");
            self.items.swap_remove(victim);
            evicted = true;
        }
        self.items.push(Queued {
            key,
            bytes,
            transmits: 0,
            seq: self.next_seq,
        });
        self.next_seq += 1;
        evicted
    }

    /// Appends as many items as fit in `budget` bytes to `out`, least-sent first, and
    /// retires those sent `limit` times. Returns the number of items written.
    pub(crate) fn fill(&mut self, out: &mut Vec<u8>, budget: usize, limit: u32) -> usize {
        if self.items.is_empty() {
            return 0;
        }
        self.items
            .sort_unstable_by_key(|item| (item.transmits, item.seq));
        let mut room = budget;
        let mut written = 0;
        for item in &mut self.items {
            if item.bytes.len() <= room {
                out.extend_from_slice(&item.bytes);
                room -= item.bytes.len();
                item.transmits += 1;
                written += 1;
            }
        }
        self.items.retain(|item| item.transmits < limit);
        written
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(name: &str) -> BroadcastKey {
        BroadcastKey::Tags(Arc::from(name))
    }

    #[test]
    fn items_are_sent_limit_times_then_retired() {
        let mut queue = BroadcastQueue::new(8);
        queue.push(key("a"), vec![1, 2]);
        for _ in 0..3 {
            let mut out = Vec::new();
            assert_eq!(queue.fill(&mut out, 100, 3), 1);
            assert_eq!(out, vec![1, 2]);
        }
        assert!(queue.is_empty());
    }

    #[test]
    fn newer_item_replaces_queued_one_with_same_key() {
        let mut queue = BroadcastQueue::new(8);
        queue.push(key("a"), vec![1]);
        queue.push(key("b"), vec![2]);
        queue.push(key("a"), vec![3]);
        assert_eq!(queue.len(), 2);
        let mut out = Vec::new();
        queue.fill(&mut out, 100, 5);
        assert_eq!(out, vec![2, 3]);
    }

    #[test]
    fn least_sent_items_go_first_and_oversized_ones_wait() {
        let mut queue = BroadcastQueue::new(8);
        queue.push(key("old"), vec![1; 4]);
        let mut out = Vec::new();
        queue.fill(&mut out, 100, 5);
        queue.push(key("new"), vec![2; 4]);
        queue.push(key("big"), vec![3; 50]);
        let mut out = Vec::new();
        assert_eq!(queue.fill(&mut out, 9, 5), 2);
        assert_eq!(out, [vec![2; 4], vec![1; 4]].concat());
        let mut out = Vec::new();
        assert_eq!(
            queue.fill(&mut out, 60, 5),
            3,
            "the big item is sent when room allows"
        );
        assert_eq!(out, [vec![3; 50], vec![2; 4], vec![1; 4]].concat());
    }

    #[test]
    fn full_queue_evicts_the_most_sent_item() {
        let mut queue = BroadcastQueue::new(2);
        queue.push(key("a"), vec![1]);
        let mut out = Vec::new();
        queue.fill(&mut out, 100, 10);
        queue.push(key("b"), vec![2]);
        assert!(queue.push(key("c"), vec![3]));
        assert_eq!(queue.len(), 2);
        let mut out = Vec::new();
        queue.fill(&mut out, 100, 10);
        assert_eq!(out, vec![2, 3]);
        assert_eq!(queue.queued_bytes(), 2);
    }
}
