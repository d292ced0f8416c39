//! A Wing-Gong linearizability checker (with memoization, as in porcupine) for histories of one
//! versioned register: the key-value store's key, whose version is the store revision of its last
//! write. Each key is checked on its own (linearizability is compositional).
//!
//! Operations whose outcome the client does not know (a timeout, a 503 after sending) may take
//! effect at any point after they were called, or never; the search may linearize or drop them.

use std::collections::HashSet;

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Op {
    /// Unconditional write of a unique value.
    Put {
        value: String,
    },
    Get,
    /// Write only if the key is at `expected` (0: absent).
    Cas {
        expected: u64,
        value: String,
    },
}

#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// A write took effect at this version.
    Written { version: u64 },
    /// A read saw this value and version, or nothing.
    Read(Option<(String, u64)>),
    /// A compare-and-set did not match; the key was at this version (0: absent).
    Conflict { current: u64 },
    /// The client does not know what happened.
    Unknown,
}

#[derive(Debug, Clone)]
pub struct Event {
    pub client: usize,
    /// Monotonic times, in any unit, of the call and of the answer.
    pub call: u64,
    pub answer: u64,
    pub op: Op,
    pub outcome: Outcome,
}

/// The register: value and version; a version unknown to the model (written by an operation
/// whose answer was lost) is `None` until a read or a conflict reveals it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum State {
    Absent,
    Present { value: String, version: Option<u64> },
}

fn version_matches(known: Option<u64>, seen: u64) -> bool {
    known.is_none_or(|v| v == seen)
}

/// Revisions only grow: a write's version is above the version it replaces, where known.
fn newer(state: &State, written: u64) -> bool {
    match state {
        State::Present {
            version: Some(known),
            ..
        } => written > *known,
        _ => true,
    }
}

/// The state after `event`, or None if the event cannot happen in `state`.
fn step(state: &State, event: &Event) -> Option<State> {
    match (&event.op, &event.outcome) {
        (Op::Put { value } | Op::Cas { value, .. }, Outcome::Unknown) => {
            if let Op::Cas { expected, .. } = &event.op {
                let matches = match state {
                    State::Absent => *expected == 0,
                    State::Present { version, .. } => version_matches(*version, *expected),
                };
                if !matches {
                    return None;
                }
            }
            Some(State::Present {
                value: value.clone(),
                version: None,
            })
        }
        (Op::Put { value }, Outcome::Written { version }) => {
            newer(state, *version).then(|| State::Present {
                value: value.clone(),
                version: Some(*version),
            })
        }
        (Op::Cas { expected, value }, Outcome::Written { version }) => {
            let matches = match state {
                State::Absent => *expected == 0,
                State::Present { version: known, .. } => {
                    *expected != 0 && version_matches(*known, *expected)
                }
            };
            (matches && newer(state, *version)).then(|| State::Present {
                value: value.clone(),
                version: Some(*version),
            })
        }
        (Op::Cas { expected, .. }, Outcome::Conflict { current }) => match state {
            State::Absent => (*current == 0 && *expected != 0).then(|| state.clone()),
            State::Present { value, version } => {
                if *current == 0 || *current == *expected || !version_matches(*version, *current) {
                    return None;
                }
                Some(State::Present {
                    value: value.clone(),
                    version: Some(*current),
                })
            }
        },
        (Op::Get, Outcome::Read(None)) => (*state == State::Absent).then(|| state.clone()),
        (Op::Get, Outcome::Read(Some((seen, seen_version)))) => match state {
            State::Present { value, version }
                if value == seen && version_matches(*version, *seen_version) =>
            {
                Some(State::Present {
                    value: value.clone(),
                    version: Some(*seen_version),
                })
            }
            _ => None,
        },
        _ => None,
    }
}

/// True if some order of the events, consistent with real time (an event answered before
/// another was called comes first), explains every answer.
pub fn is_linearizable(history: &[Event]) -> bool {
    // A read with an unknown outcome tells nothing.
    let events: Vec<&Event> = history
        .iter()
        .filter(|e| !(e.op == Op::Get && e.outcome == Outcome::Unknown))
        .collect();
    assert!(
        events.len() <= 128,
        "the checker handles up to 128 events per key"
    );
    let answer = |e: &Event| {
        if e.outcome == Outcome::Unknown {
            u64::MAX
        } else {
            e.answer
        }
    };
    let known: u128 = events
        .iter()
        .enumerate()
        .filter(|(_, e)| e.outcome != Outcome::Unknown)
        .fold(0, |mask, (i, _)| mask | 1 << i);
    let mut seen: HashSet<(u128, State)> = HashSet::new();
    let mut stack: Vec<(u128, State)> = vec![(0, State::Absent)];
    while let Some((done, state)) = stack.pop() {
        if done & known == known {
            return true;
        }
        if !seen.insert((done, state.clone())) {
            continue;
        }
        // Events that may come next: not done, and called before every other pending event
        // was answered.
        let earliest_answer = (0..events.len())
            .filter(|i| done & 1 << i == 0)
            .map(|i| answer(events[i]))
            .min()
            .unwrap_or(u64::MAX);
        for (i, event) in events.iter().enumerate() {
            if done & 1 << i != 0 || event.call > earliest_answer {
                continue;
            }
            if let Some(next) = step(&state, event) {
                stack.push((done | 1 << i, next));
            }
            if event.outcome == Outcome::Unknown {
                // An unknown write may never have happened.
                stack.push((done | 1 << i, state.clone()));
            }
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(call: u64, answer: u64, op: Op, outcome: Outcome) -> Event {
        Event {
            client: 0,
            call,
            answer,
            op,
            outcome,
        }
    }

    fn put(value: &str) -> Op {
        Op::Put {
            value: value.into(),
        }
    }

    fn read(value: &str, version: u64) -> Outcome {
        Outcome::Read(Some((value.into(), version)))
    }

    #[test]
    fn sequential_and_overlapping_histories_pass() {
        let history = [
            event(0, 1, put("a"), Outcome::Written { version: 5 }),
            event(2, 6, put("b"), Outcome::Written { version: 7 }),
            // Overlaps the write of b: may see either.
            event(3, 4, Op::Get, read("a", 5)),
            event(8, 9, Op::Get, read("b", 7)),
            event(
                10,
                11,
                Op::Cas {
                    expected: 5,
                    value: "c".into(),
                },
                Outcome::Conflict { current: 7 },
            ),
        ];
        assert!(is_linearizable(&history));
    }

    #[test]
    fn a_stale_read_fails() {
        let history = [
            event(0, 1, put("a"), Outcome::Written { version: 5 }),
            event(2, 3, put("b"), Outcome::Written { version: 7 }),
            event(4, 5, Op::Get, read("a", 5)),
        ];
        assert!(!is_linearizable(&history));
    }

    #[test]
    fn unknown_writes_may_or_may_not_happen() {
        let happened = [
            event(0, 1, put("a"), Outcome::Unknown),
            event(5, 6, Op::Get, read("a", 9)),
        ];
        assert!(is_linearizable(&happened));
        let vanished = [
            event(0, 1, put("a"), Outcome::Unknown),
            event(5, 6, Op::Get, Outcome::Read(None)),
        ];
        assert!(is_linearizable(&vanished));
        let read_before_call = [
            event(0, 1, Op::Get, read("a", 9)),
            event(5, 6, put("a"), Outcome::Unknown),
        ];
        assert!(!is_linearizable(&read_before_call));
    }

    #[test]
    fn a_write_below_the_version_it_replaced_fails() {
        let history = [
            event(0, 1, put("a"), Outcome::Written { version: 7 }),
            event(2, 3, put("b"), Outcome::Written { version: 5 }),
        ];
        assert!(!is_linearizable(&history));
        let overlapping = [
            event(0, 3, put("a"), Outcome::Written { version: 7 }),
            event(1, 2, put("b"), Outcome::Written { version: 5 }),
        ];
        assert!(is_linearizable(&overlapping));
    }

    #[test]
    fn a_lost_update_fails() {
        // Two compare-and-sets from the same version cannot both succeed.
        let cas = |value: &str| Op::Cas {
            expected: 5,
            value: value.into(),
        };
        let history = [
            event(0, 1, put("a"), Outcome::Written { version: 5 }),
            event(2, 4, cas("b"), Outcome::Written { version: 7 }),
            event(2, 4, cas("c"), Outcome::Written { version: 8 }),
        ];
        assert!(!is_linearizable(&history));
    }
}
