//! One subscription position in one partition.
//!
//! `window` holds, in ascending offset order, every event delivered and not yet
//! acknowledged (or waiting for redelivery), plus acknowledged ones that sit above an
//! unacknowledged one. Acknowledged slots leave from the front, so the ack floor (the
//! committed position) is the window's first offset, or `next` when it is empty: it only
//! moves forward, except by a reset. The span `next - floor` is bounded by `max_ack_pending`.

use super::EventRef;
use crate::ids::SubId;
use crate::names::ConsumerId;
use crate::storage::CursorRecord;
use crate::time::MonoNanos;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// Names one cursor partition: subscription, cursor index (broadcast: per consumer), partition.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct CursorKey {
    pub(crate) sub: SubId,
    pub(crate) cursor: u32,
    pub(crate) partition: u32,
}

/// Names one pending event of a cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct SlotKey {
    pub(crate) key: CursorKey,
    pub(crate) offset: u64,
}

/// Where a pending event is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum SlotState {
    /// Sent to a consumer; redelivered at `deadline` unless acknowledged.
    InFlight {
        consumer: ConsumerId,
        deadline: MonoNanos,
    },
    /// Nacked; becomes ready at `due`.
    Waiting { due: MonoNanos },
    /// To be sent to the next consumer with room.
    Ready,
    /// Ordered by key: an earlier event of the same key is pending.
    Blocked,
    /// Being appended to the dead letter stream.
    DeadLettering,
}

/// An event that is not acknowledged yet.
#[derive(Debug, Clone)]
pub(crate) struct Pending {
    pub(crate) event: EventRef,
    pub(crate) deliveries: u32,
    pub(crate) state: SlotState,
    pub(crate) last_error: Option<String>,
    /// Ordered by key: the hash of its key, if it has one.
    pub(crate) key_hash: Option<u64>,
}

/// An offset in the window: `None` once acknowledged.
#[derive(Debug, Clone)]
pub(crate) struct Slot {
    pub(crate) offset: u64,
    pub(crate) pending: Option<Pending>,
}

/// A cursor's durable-position bookkeeping: one save in flight at a time.
#[derive(Debug, Default)]
pub(crate) struct SaveState {
    pub(crate) in_flight: bool,
    pub(crate) dirty: bool,
    /// Ack replies waiting for the next save.
    pub(crate) waiting: Vec<u64>,
    /// Ack replies waiting for the save in flight.
    pub(crate) flying: Vec<u64>,
}

/// A position in one partition.
#[derive(Debug, Default)]
pub(crate) struct PartCursor {
    /// The next offset to deliver for the first time.
    pub(crate) next: u64,
    pub(crate) window: VecDeque<Slot>,
    /// Offsets at or above `next` already acknowledged (from a recovered cursor record).
    pub(crate) skip: BTreeSet<u64>,
    /// Offsets ready to be sent again.
    pub(crate) ready: BTreeSet<u64>,
    /// Events read from the store, starting at `next`.
    pub(crate) fetched: VecDeque<EventRef>,
    pub(crate) fetching: bool,
    /// Bumped by a reset, so that a read in flight for the old position is ignored.
    pub(crate) generation: u64,
    /// Ordered by key: pending offsets per key hash, ascending.
    pub(crate) keys: BTreeMap<u64, VecDeque<u64>>,
    pub(crate) save: SaveState,
    /// When an event was last settled here (lag figures).
    pub(crate) last_progress: Option<crate::time::UnixMillis>,
}

impl PartCursor {
    /// A cursor at `floor`, with `acked` offsets above it already acknowledged.
    pub(crate) fn at(floor: u64, acked: &[u64]) -> Self {
        let mut c = PartCursor {
            next: floor,
            skip: acked.iter().copied().filter(|&o| o >= floor).collect(),
            ..Default::default()
        };
        c.pass_acknowledged();
        c
    }

    /// With nothing pending, moves `next` past offsets already acknowledged (recovered
    /// `skip` entries), so the floor is the lowest offset not acknowledged.
    fn pass_acknowledged(&mut self) {
        while self.window.is_empty() && self.skip.remove(&self.next) {
            self.next += 1;
        }
    }

    /// The ack floor: the lowest offset not acknowledged.
    pub(crate) fn floor(&self) -> u64 {
        self.window.front().map_or(self.next, |s| s.offset)
    }

    /// Events pending (delivered and unacknowledged, or waiting).
    pub(crate) fn pending_count(&self) -> u64 {
        self.window.iter().filter(|s| s.pending.is_some()).count() as u64
    }

    pub(crate) fn slot_mut(&mut self, offset: u64) -> Option<&mut Slot> {
        let i = self
            .window
            .binary_search_by_key(&offset, |s| s.offset)
            .ok()?;
        self.window.get_mut(i)
    }

    /// Marks an offset acknowledged and drops acknowledged slots from the front.
    /// Returns what was pending there.
    pub(crate) fn settle(&mut self, offset: u64) -> Option<Pending> {
        let taken = self.slot_mut(offset)?.pending.take();
        self.ready.remove(&offset);
        while self.window.front().is_some_and(|s| s.pending.is_none()) {
            self.window.pop_front();
        }
        self.pass_acknowledged();
        taken
    }

    /// The durable form of this position.
    pub(crate) fn record(
        &self,
        sub: SubId,
        consumer: Option<ConsumerId>,
        partition: u32,
    ) -> CursorRecord {
        let floor = self.floor();
        let mut acked = Vec::new();
        let mut w = self.window.iter().peekable();
        for o in floor..self.next {
            match w.peek() {
                Some(s) if s.offset == o => {
                    if s.pending.is_none() {
                        acked.push(o);
                    }
                    w.next();
                }
                _ => acked.push(o),
            }
        }
        acked.extend(self.skip.iter().copied());
        CursorRecord {
            sub,
            consumer,
            partition,
            floor,
            acked,
        }
    }

    /// Moves to `offset`, forgetting everything pending. Returns the pending slots dropped.
    pub(crate) fn reset(&mut self, offset: u64) -> Vec<Slot> {
        let dropped = self.window.drain(..).collect();
        self.next = offset;
        self.skip.clear();
        self.ready.clear();
        self.fetched.clear();
        self.keys.clear();
        self.generation += 1;
        self.fetching = false;
        dropped
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::{Event, NewEvent};
    use crate::ids::EventId;
    use crate::names::StreamName;
    use crate::time::UnixMillis;
    use std::sync::Arc;

    fn slot(offset: u64) -> Slot {
        let e = Event::from_new(
            NewEvent::new("t", vec![]),
            EventId::from_bytes([0; 16]),
            StreamName::new("s").unwrap(),
            0,
            offset,
            UnixMillis(0),
        );
        Slot {
            offset,
            pending: Some(Pending {
                event: Arc::new(e),
                deliveries: 1,
                state: SlotState::Ready,
                last_error: None,
                key_hash: None,
            }),
        }
    }

    #[test]
    fn floor_moves_only_over_acknowledged_prefixes() {
        let mut c = PartCursor::at(10, &[]);
        for o in 10..15 {
            c.window.push_back(slot(o));
        }
        c.next = 15;
        assert_eq!(c.floor(), 10);
        assert!(c.settle(12).is_some());
        assert_eq!(c.floor(), 10);
        assert!(
            c.settle(12).is_none(),
            "a second ack of the same offset takes nothing"
        );
        c.settle(10);
        assert_eq!(c.floor(), 11);
        c.settle(11);
        assert_eq!(c.floor(), 13);
        let r = c.record(SubId(1), None, 0);
        assert_eq!((r.floor, r.acked), (13, vec![]));
        c.settle(14);
        let r = c.record(SubId(1), None, 0);
        assert_eq!((r.floor, r.acked), (13, vec![14]));
        c.settle(13);
        assert_eq!(c.floor(), 15);
    }

    #[test]
    fn recovered_acks_are_skipped_and_recorded() {
        let c = PartCursor::at(5, &[3, 5, 6, 9]);
        assert_eq!(
            c.floor(),
            7,
            "5 and 6 are acknowledged: the floor is past them"
        );
        let r = c.record(SubId(2), None, 1);
        assert_eq!((r.floor, r.acked), (7, vec![9]));
        let c = PartCursor::at(5, &[3, 7, 9]);
        assert_eq!(c.floor(), 5);
        assert_eq!(c.skip.iter().copied().collect::<Vec<_>>(), vec![7, 9]);
        let r = c.record(SubId(2), None, 1);
        assert_eq!((r.floor, r.acked), (5, vec![7, 9]));
    }
}
