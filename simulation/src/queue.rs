//! The event queue: events ordered by (virtual time, sequence number). Two events at the same
//! time come out in the order they were pushed, so nothing depends on hash order or threads.

use std::collections::BTreeMap;

/// Virtual nanoseconds since the start of a run.
pub type VTime = u64;

/// A queue of timed events.
#[derive(Debug)]
pub struct EventQueue<E> {
    events: BTreeMap<(VTime, u64), E>,
    seq: u64,
}

impl<E> Default for EventQueue<E> {
    fn default() -> Self {
        EventQueue {
            events: BTreeMap::new(),
            seq: 0,
        }
    }
}

impl<E> EventQueue<E> {
    /// Schedules `event` at `at`.
    pub fn push(&mut self, at: VTime, event: E) {
        self.seq += 1;
        self.events.insert((at, self.seq), event);
    }

    /// Takes the earliest event.
    pub fn pop(&mut self) -> Option<(VTime, E)> {
        self.events.pop_first().map(|((t, _), e)| (t, e))
    }

    /// When the earliest event is due.
    pub fn peek_time(&self) -> Option<VTime> {
        self.events.first_key_value().map(|((t, _), _)| *t)
    }

    /// Events waiting.
    pub fn len(&self) -> usize {
        self.events.len()
    }

    /// Whether no event waits.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty()
    }

    /// Drops every event `keep` refuses.
    pub fn retain(&mut self, mut keep: impl FnMut(&E) -> bool) {
        self.events.retain(|_, e| keep(e));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn time_then_insertion_order() {
        let mut q = EventQueue::default();
        q.push(5, "b");
        q.push(1, "a");
        q.push(5, "c");
        assert_eq!(q.pop(), Some((1, "a")));
        assert_eq!(q.pop(), Some((5, "b")));
        assert_eq!(q.pop(), Some((5, "c")));
        assert_eq!(q.pop(), None);
    }
}
