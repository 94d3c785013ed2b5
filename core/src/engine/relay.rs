//! The relay of cross-service streams (SPEC 9, the transactional-outbox half): the core hands
//! each event of a `CrossService` stream to the broker publisher (`Output::Publish`), per
//! partition in offset order, with at most `relay_window` publishes of the stream waiting for
//! a confirm. The relay position of a partition (every offset below it confirmed) advances only
//! on `Input::PublishDone { Confirmed }` and is saved (`SaveRelay`); after a restart everything
//! from it is sent again. A failed publish sends that event and every later one of its
//! partition again, after a back-off (go-back-N), so the broker sees each partition in order,
//! at least once.

use super::{Engine, EventRef, Op, PendingOp, Timer};
use crate::api::{Notice, Output, Position, PublishResult};
use crate::config::Config;
use crate::ids::OpId;
use crate::names::StreamName;
use crate::storage::{RelayRecord, StorageReply, StorageRequest, StorageResult};
use crate::time::MonoNanos;
use std::collections::{BTreeMap, BTreeSet, VecDeque};

/// The relay of one partition.
#[derive(Debug, Default)]
pub(crate) struct RelayPart {
    /// Every offset below is confirmed.
    pub(crate) confirmed: u64,
    /// The next offset to send.
    pub(crate) next: u64,
    /// Offsets confirmed above `confirmed`.
    done: BTreeSet<u64>,
    /// Offsets sent and not answered, with their publish.
    flying: BTreeMap<u64, OpId>,
    /// Sending waits until then after a failure.
    paused_until: Option<MonoNanos>,
    /// Failures in a row (back-off).
    failures: u32,
    fetched: VecDeque<EventRef>,
    fetching: bool,
    saving: bool,
    dirty: bool,
}

/// The relay of one stream.
#[derive(Debug, Default)]
pub(crate) struct Relay {
    pub(crate) parts: Vec<RelayPart>,
    /// Publishes a go-back voided that the broker has not answered yet: they still count
    /// against the window.
    voided: usize,
}

impl Relay {
    pub(crate) fn new(partitions: usize) -> Relay {
        Relay {
            parts: (0..partitions).map(|_| RelayPart::default()).collect(),
            voided: 0,
        }
    }

    /// Starts every partition at its recovered position.
    pub(crate) fn recover(&mut self, partition: u32, next: u64) {
        if let Some(p) = self.parts.get_mut(partition as usize) {
            p.confirmed = next;
            p.next = next;
        }
    }

    fn in_flight(&self) -> usize {
        self.parts.iter().map(|p| p.flying.len()).sum::<usize>() + self.voided
    }
}

impl Engine {
    /// Sends what the window allows, per partition in offset order.
    pub(crate) fn relay_pump(&mut self, name: &StreamName) {
        let now = self.now.mono;
        let window = self.cfg.relay_window;
        let read_max = self.cfg.read_batch_events as u32;
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        let durable = !s.config.is_ephemeral();
        let Some(relay) = s.relay.as_mut() else {
            return;
        };
        let mut total = relay.in_flight();
        let mut sends = Vec::new();
        let mut fetches = Vec::new();
        for (p, rp) in relay.parts.iter_mut().enumerate() {
            let part = &s.parts[p];
            if rp.paused_until.is_some_and(|t| t > now) {
                continue;
            }
            rp.paused_until = None;
            // Events an ephemeral stream dropped before they were relayed are gone.
            if rp.next < part.first {
                rp.next = part.first;
                rp.confirmed = rp.confirmed.max(part.first);
                rp.fetched.clear();
            }
            while total < window && rp.next < part.next {
                let ev = if rp.fetched.front().is_some_and(|e| e.offset == rp.next) {
                    rp.fetched.pop_front()
                } else {
                    rp.fetched.clear();
                    part.cached(rp.next).cloned()
                };
                let Some(ev) = ev else {
                    if durable && !rp.fetching {
                        rp.fetching = true;
                        fetches.push((p as u32, rp.next));
                    }
                    break;
                };
                let op = OpId(self.next_op);
                self.next_op += 1;
                rp.flying.insert(rp.next, op);
                rp.next += 1;
                // PLANTED BUG relay-skips-event (test-only): every seventh offset is skipped.
                #[cfg(feature = "planted-bugs")]
                if self.planted == Some(crate::PlantedBug::RelaySkipsEvent)
                    && rp.next % 7 == 3
                    && rp.next < part.next
                {
                    rp.next += 1;
                }
                total += 1;
                sends.push((op, p as u32, ev));
            }
        }
        for (op, p, event) in sends {
            self.publishes.insert(op, (name.clone(), p, event.offset));
            self.out.push_back(Output::Publish {
                op,
                stream: name.clone(),
                event,
            });
        }
        for (partition, from) in fetches {
            self.storage(
                Op::RelayFetch {
                    stream: name.clone(),
                    partition,
                },
                StorageRequest::Read {
                    stream: name.clone(),
                    partition,
                    from,
                    max: read_max,
                },
            );
        }
    }

    /// The broker answered a publish.
    pub(crate) fn publish_done(&mut self, op: OpId, result: PublishResult) {
        let Some((name, p, offset)) = self.publishes.remove(&op) else {
            return;
        };
        let now = self.now.mono;
        let (base, max) = (self.cfg.relay_retry_base, self.cfg.relay_retry_max);
        let Some(relay) = self.streams.get_mut(&name).and_then(|s| s.relay.as_mut()) else {
            return;
        };
        let Some(rp) = relay.parts.get_mut(p as usize) else {
            return;
        };
        // An answer to a publish that a go-back voided: it frees its room in the window.
        if rp.flying.get(&offset) != Some(&op) {
            relay.voided = relay.voided.saturating_sub(1);
            return self.relay_pump(&name);
        }
        rp.flying.remove(&offset);
        match result {
            PublishResult::Confirmed => {
                rp.failures = 0;
                let before = rp.confirmed;
                if offset >= rp.confirmed {
                    rp.done.insert(offset);
                }
                while rp.done.remove(&rp.confirmed) {
                    rp.confirmed += 1;
                }
                if rp.confirmed > before {
                    self.save_relay(&name, p);
                }
                self.relay_pump(&name);
            }
            PublishResult::Failed(error) => {
                // PLANTED BUG relay-advances-before-confirm (test-only): a failed publish
                // moves the position as a confirm would.
                #[cfg(feature = "planted-bugs")]
                let advanced = self.planted == Some(crate::PlantedBug::RelayAdvancesBeforeConfirm)
                    && offset == rp.confirmed;
                #[cfg(feature = "planted-bugs")]
                if advanced {
                    rp.confirmed += 1;
                }
                // Go back: this event and every later one of the partition are sent again; the
                // later publishes still out are voided (their answers only free room).
                let before = rp.flying.len();
                rp.flying.retain(|&o, _| o < offset);
                let voided = before - rp.flying.len();
                // Later events the broker confirmed are sent again too, so that the broker
                // gets the partition in order after the re-sent one.
                rp.done.retain(|&o| o < offset);
                rp.next = rp.next.min(offset);
                rp.fetched.clear();
                rp.failures += 1;
                let delay = Config::backoff(base, max, rp.failures - 1);
                let until = now.saturating_add(delay);
                rp.paused_until = Some(until);
                relay.voided += voided;
                #[cfg(feature = "planted-bugs")]
                if advanced {
                    self.save_relay(&name, p);
                }
                self.timers.insert((until, Timer::Relay(name.clone())));
                let position = Position {
                    partition: p,
                    offset,
                };
                let event = self.cached_ids(&name, position);
                self.notice(Notice::PublishFailed {
                    stream: name,
                    position,
                    error,
                    delay,
                    event,
                });
            }
        }
    }

    /// Saves a partition's relay position (one save in flight; a newer one follows).
    fn save_relay(&mut self, name: &StreamName, p: u32) {
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        if s.config.is_ephemeral() {
            return;
        }
        let Some(rp) = s.relay.as_mut().and_then(|r| r.parts.get_mut(p as usize)) else {
            return;
        };
        if rp.saving {
            rp.dirty = true;
            return;
        }
        rp.saving = true;
        rp.dirty = false;
        let rec = RelayRecord {
            stream: name.clone(),
            partition: p,
            next: rp.confirmed,
        };
        self.storage(
            Op::SaveRelay {
                stream: name.clone(),
                partition: p,
            },
            StorageRequest::SaveRelay(rec),
        );
    }

    pub(crate) fn relay_op_done(&mut self, mut p: PendingOp, result: StorageResult) {
        match (&p.op, result) {
            (Op::SaveRelay { stream, partition }, StorageResult::Ok(_)) => {
                let (stream, partition) = (stream.clone(), *partition);
                let again = self
                    .streams
                    .get_mut(&stream)
                    .and_then(|s| s.relay.as_mut())
                    .and_then(|r| r.parts.get_mut(partition as usize))
                    .map(|rp| {
                        rp.saving = false;
                        rp.dirty
                    });
                if again == Some(true) {
                    self.save_relay(&stream, partition);
                }
            }
            (
                Op::RelayFetch { stream, partition },
                StorageResult::Ok(StorageReply::Events(events)),
            ) => {
                let (stream, partition) = (stream.clone(), *partition);
                let Some(rp) = self
                    .streams
                    .get_mut(&stream)
                    .and_then(|s| s.relay.as_mut())
                    .and_then(|r| r.parts.get_mut(partition as usize))
                else {
                    return;
                };
                rp.fetching = false;
                if events.first().is_some_and(|e| e.offset == rp.next) {
                    rp.fetched = events.into();
                }
                self.relay_pump(&stream);
            }
            (_, StorageResult::Err(crate::storage::StorageError::NotFound(_))) => {}
            (_, StorageResult::Ok(_)) => {}
            (_, StorageResult::Err(e)) => self.retry_later(p, "relay", e.to_string()),
            (_, StorageResult::Unknown) => {
                p.uncertain = true;
                self.retry_later(p, "relay", "outcome unknown".into());
            }
        }
    }

    /// A paused partition may send again.
    pub(crate) fn relay_wake(&mut self, name: &StreamName) {
        self.relay_pump(name);
    }

    /// The relay position of a partition (retention never removes what is not relayed).
    pub(crate) fn relay_floor(&self, name: &StreamName, partition: usize) -> Option<u64> {
        self.streams
            .get(name)?
            .relay
            .as_ref()?
            .parts
            .get(partition)
            .map(|rp| rp.confirmed)
    }

    /// Forgets the publishes of a stream that is gone.
    pub(crate) fn forget_publishes(&mut self, name: &StreamName) {
        self.publishes.retain(|_, (n, _, _)| n != name);
    }
}
