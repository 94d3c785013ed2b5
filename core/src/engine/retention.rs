//! Retention (SPEC 8) and the removal of expired dedup ids from the store.
//!
//! One engine-wide timer (`Timer::Cleanup`) runs every `cleanup_interval` while persistent
//! streams exist, only inside `cleanup_window` when one is set (UTC; a window whose start is
//! after its end wraps past midnight): a run outside it waits for the window to open.
//!
//! Each run, per persistent stream: dedup ids that expired are removed from the store
//! (`ExpireDedup`); then, per partition, the cut (the first offset kept) is the largest of
//! the limits of its policy (`max_events` from the head; `max_age` by `FindOffset` on the
//! event timestamps; `max_bytes` by `RetentionCut`), never past the head, and with
//! `keep_unconsumed` never past the lowest ack floor of the stream's subscriptions. A cut above
//! the partition's first offset is carried out by `Truncate`, which removes that prefix: the
//! first offset only moves up, so retention never makes a hole.

use super::{Engine, Op, PendingOp, Timer};
use crate::api::Notice;
use crate::names::StreamName;
use crate::storage::{StorageReply, StorageRequest, StorageResult};
use crate::stream_config::RetentionPolicy;
use crate::time::UnixMillis;

/// A cut being worked out for one partition.
#[derive(Debug)]
pub(crate) struct Cut {
    stream: StreamName,
    partition: u32,
    /// The first offset to keep, as far as known.
    keep_from: u64,
    /// Store answers still awaited.
    waiting: u32,
}

impl Engine {
    /// The retention policy that applies to a stream.
    pub(crate) fn retention_of(&self, name: &StreamName) -> Option<RetentionPolicy> {
        let s = self.streams.get(name)?;
        if s.config.is_ephemeral() {
            return None;
        }
        Some(s.config.retention.unwrap_or(if name.is_dlq() {
            self.cfg.dead_letter_retention
        } else {
            self.cfg.default_retention
        }))
    }

    /// Sets the cleanup timer if persistent streams exist and it is not set.
    pub(crate) fn arm_cleanup(&mut self) {
        if self.cleanup_due.is_some() || !self.streams.values().any(|s| !s.config.is_ephemeral()) {
            return;
        }
        let due = self.now.mono.saturating_add(self.cfg.cleanup_interval);
        self.cleanup_due = Some(due);
        self.timers.insert((due, Timer::Cleanup));
    }

    /// The cleanup timer fired: run now if inside the window, else wait for it to open.
    pub(crate) fn cleanup_due_now(&mut self) {
        self.cleanup_due = None;
        if let Some(w) = self.cfg.cleanup_window {
            let wait = w.wait_from(self.now.wall.0);
            if !wait.is_zero() {
                let due = self.now.mono.saturating_add(wait);
                self.cleanup_due = Some(due);
                self.timers.insert((due, Timer::Cleanup));
                return;
            }
        }
        let names: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, s)| {
                !s.config.is_ephemeral() && s.status == super::streams::StreamStatus::Ready
            })
            .map(|(n, _)| n.clone())
            .collect();
        for name in names {
            self.run_retention(&name);
        }
        self.arm_cleanup();
    }

    /// One retention run of one stream.
    pub(crate) fn run_retention(&mut self, name: &StreamName) {
        let Some(policy) = self.retention_of(name) else {
            return;
        };
        let now = self.now.wall;
        let Some(s) = self.streams.get(name) else {
            return;
        };
        let dedup = !s.config.dedup_window.is_zero();
        let heads: Vec<(u64, u64)> = s.parts.iter().map(|p| (p.first, p.next)).collect();
        if dedup {
            self.storage(
                Op::ExpireDedup {
                    stream: name.clone(),
                },
                StorageRequest::ExpireDedup {
                    stream: name.clone(),
                    at: now,
                },
            );
        }
        if policy.is_unlimited() {
            return;
        }
        for (p, (first, next)) in heads.into_iter().enumerate() {
            if first >= next {
                continue;
            }
            let id = self.next_cut;
            self.next_cut += 1;
            let mut cut = Cut {
                stream: name.clone(),
                partition: p as u32,
                keep_from: policy.max_events.map_or(0, |m| next.saturating_sub(m)),
                waiting: 0,
            };
            let mut asks = Vec::new();
            if let Some(age) = policy.max_age {
                asks.push(StorageRequest::FindOffset {
                    stream: name.clone(),
                    partition: p as u32,
                    at: UnixMillis(now.0.saturating_sub(age.as_millis() as u64)),
                });
            }
            if let Some(max_bytes) = policy.max_bytes {
                asks.push(StorageRequest::RetentionCut {
                    stream: name.clone(),
                    partition: p as u32,
                    max_bytes,
                });
            }
            cut.waiting = asks.len() as u32;
            self.cuts.insert(id, cut);
            if asks.is_empty() {
                self.apply_cut(id);
            }
            for req in asks {
                self.storage(Op::RetentionFind { cut: id }, req);
            }
        }
    }

    pub(crate) fn retention_op_done(&mut self, mut p: PendingOp, result: StorageResult) {
        match (&p.op, result) {
            (Op::RetentionFind { cut }, StorageResult::Ok(StorageReply::Offset(o))) => {
                let id = *cut;
                let Some(c) = self.cuts.get_mut(&id) else {
                    return;
                };
                c.keep_from = c.keep_from.max(o);
                c.waiting = c.waiting.saturating_sub(1);
                if c.waiting == 0 {
                    self.apply_cut(id);
                }
            }
            (
                Op::Truncate {
                    stream,
                    partition,
                    before,
                },
                StorageResult::Ok(_),
            ) => {
                let (stream, partition, before) = (stream.clone(), *partition, *before);
                self.truncated(&stream, partition, before);
            }
            (Op::ExpireDedup { .. }, StorageResult::Ok(_)) => {}
            // The stream is gone: nothing left to do.
            (
                Op::RetentionFind { cut },
                StorageResult::Err(crate::storage::StorageError::NotFound(_)),
            ) => {
                self.cuts.remove(cut);
            }
            (_, StorageResult::Err(crate::storage::StorageError::NotFound(_))) => {}
            (Op::RetentionFind { cut }, StorageResult::Ok(_)) => {
                self.cuts.remove(cut);
            }
            (_, StorageResult::Ok(_)) => {}
            (_, StorageResult::Err(e)) => self.retry_later(p, "retention", e.to_string()),
            (_, StorageResult::Unknown) => {
                p.uncertain = true;
                self.retry_later(p, "retention", "outcome unknown".into());
            }
        }
    }

    /// Every limit of a partition is known: remove the prefix below the cut, if any.
    fn apply_cut(&mut self, id: u64) {
        let Some(c) = self.cuts.remove(&id) else {
            return;
        };
        let Some(policy) = self.retention_of(&c.stream) else {
            return;
        };
        let Some(s) = self.streams.get(&c.stream) else {
            return;
        };
        if s.status != super::streams::StreamStatus::Ready {
            return;
        }
        let Some(part) = s.parts.get(c.partition as usize) else {
            return;
        };
        let keep_from = c.keep_from;
        // PLANTED BUG retention-off-by-one (test-only): one event more than a limit allows.
        #[cfg(feature = "planted-bugs")]
        let keep_from = if self.planted == Some(crate::PlantedBug::RetentionOffByOne) {
            keep_from + 1
        } else {
            keep_from
        };
        let mut cut = keep_from.min(part.next);
        // PLANTED BUG retention-past-head (test-only): a cut of everything goes one past the
        // head, opening a hole before the next event.
        #[cfg(feature = "planted-bugs")]
        if self.planted == Some(crate::PlantedBug::RetentionPastHead) && cut == part.next {
            cut += 1;
        }
        // PLANTED BUG retention-ignores-unconsumed (test-only): `keep_unconsumed` is ignored.
        #[cfg(feature = "planted-bugs")]
        let keep_unconsumed = policy.keep_unconsumed
            && self.planted != Some(crate::PlantedBug::RetentionIgnoresUnconsumed);
        #[cfg(not(feature = "planted-bugs"))]
        let keep_unconsumed = policy.keep_unconsumed;
        if keep_unconsumed {
            cut = cut.min(self.unconsumed_floor(&c.stream, c.partition as usize));
        }
        // What is not relayed to the broker yet is never removed.
        if let Some(relayed) = self.relay_floor(&c.stream, c.partition as usize) {
            cut = cut.min(relayed);
        }
        if cut <= part.first {
            return;
        }
        self.storage(
            Op::Truncate {
                stream: c.stream.clone(),
                partition: c.partition,
                before: cut,
            },
            StorageRequest::Truncate {
                stream: c.stream,
                partition: c.partition,
                before: cut,
            },
        );
    }

    /// The lowest offset of a partition that a subscription of the stream has not
    /// acknowledged: the lowest ack floor of its cursors (a subscription without cursors yet:
    /// its start offset).
    pub(crate) fn unconsumed_floor(&self, stream: &StreamName, partition: usize) -> u64 {
        let Some(s) = self.streams.get(stream) else {
            return 0;
        };
        s.subs
            .iter()
            .filter_map(|id| self.subs.get(id))
            .map(|sub| {
                let floors = sub
                    .live_cursors()
                    .filter_map(|(_, c)| c.parts.get(partition));
                floors
                    .map(super::cursor::PartCursor::floor)
                    .min()
                    .unwrap_or_else(|| sub.start_offsets.get(partition).copied().unwrap_or(0))
            })
            .min()
            .unwrap_or(u64::MAX)
    }

    /// A prefix was removed: the partition's first offset moves up.
    fn truncated(&mut self, stream: &StreamName, partition: u32, before: u64) {
        let Some(part) = self
            .streams
            .get_mut(stream)
            .and_then(|s| s.parts.get_mut(partition as usize))
        else {
            return;
        };
        if before <= part.first {
            return;
        }
        let removed = before.min(part.next) - part.first;
        part.first = before.min(part.next);
        while !part.cache.is_empty() && part.cache_start() < part.first {
            part.cache.pop_front();
        }
        let first = part.first;
        self.notice(Notice::Truncated {
            stream: stream.clone(),
            partition,
            first,
            removed,
        });
    }
}
