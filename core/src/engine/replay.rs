//! Replays: a finite read of a stream from an offset, a time or a time range, partition by
//! partition, rate-limited by a token bucket on the core's clock, with progress reports.
//! A replay ends at the heads the stream had when it started. With a `window`, at most that
//! many batches are out (sent and not yet reported taken by `Command::ReplayCredit`): at the
//! window the replay pauses, with at most one read batch buffered, until the reader takes some.

use super::{Engine, EventRef, Op, Origin, PendingOp, Timer};
use crate::api::{Output, ReplayFrom, ReplayItem, ReplayOptions, Reply};
use crate::error::{Error, InvalidInput};
use crate::ids::{ConnId, ReplayId};
use crate::names::StreamName;
use crate::storage::{StorageReply, StorageRequest, StorageResult};
use crate::subscription_config::StartPosition;
use crate::time::{MonoNanos, UnixMillis};
use std::collections::{BTreeSet, VecDeque};
use std::time::Duration;

/// Token units per event: tokens are counted in billionths of an event, so a rate in events
/// per second refills `rate` units per nanosecond.
const UNIT: u64 = 1_000_000_000;
/// Most event types in a replay filter.
const MAX_EVENT_TYPES: usize = 64;

#[derive(Debug)]
pub(crate) struct Replay {
    conn: ConnId,
    stream: StreamName,
    batch: u32,
    rate: Option<u64>,
    tokens: u64,
    refilled: MonoNanos,
    max_events: Option<u64>,
    types: BTreeSet<String>,
    /// Schema versions asked for, per event type, and whether newer ones are left out.
    versions: std::collections::BTreeMap<String, u32>,
    strict: bool,
    end_time: Option<UnixMillis>,
    progress_every: Duration,
    next_progress: MonoNanos,
    started: MonoNanos,
    /// Current partition, next offset per partition, end offset per partition.
    partition: usize,
    positions: Vec<u64>,
    ends: Vec<u64>,
    buffer: VecDeque<EventRef>,
    reading: bool,
    sent: u64,
    wake: Option<MonoNanos>,
    resolving: bool,
    /// Flow control: the most batches out at once (`None`: no window).
    window: Option<u32>,
    /// Batches sent and not yet reported taken.
    outstanding: u32,
}

impl Replay {
    /// At its window: nothing more goes out until batches are taken.
    fn paused(&self) -> bool {
        self.window.is_some_and(|w| self.outstanding >= w)
    }
}

impl Engine {
    pub(crate) fn start_replay(
        &mut self,
        origin: Origin,
        stream: StreamName,
        from: ReplayFrom,
        o: ReplayOptions,
    ) {
        let r = self.check_replay(&stream, &from, &o);
        let (batch, rate) = match r {
            Ok(x) => x,
            Err(e) => return self.reply_to(origin, Err(e)),
        };
        let Some(s) = self.streams.get(&stream) else {
            return;
        };
        let mut positions = Vec::with_capacity(s.parts.len());
        // From offsets: known now (a partition not named from its first offset).
        let named = match &from {
            ReplayFrom::Offset(n) => Some(vec![Some(*n); s.parts.len()]),
            ReplayFrom::Offsets(given) => {
                match super::resolve::partition_offsets(s.parts.len(), given) {
                    Ok(v) => Some(v),
                    Err(e) => return self.reply_to(origin, Err(e)),
                }
            }
            ReplayFrom::Time(_) | ReplayFrom::TimeRange(..) => None,
        };
        for (part, n) in s.parts.iter().zip(named.into_iter().flatten()) {
            let n = n.unwrap_or(part.first);
            if n < part.first && !o.from_first_available {
                return self.reply_to(
                    origin,
                    Err(Error::Truncated {
                        first_available: part.first,
                    }),
                );
            }
            positions.push(n.clamp(part.first, part.next));
        }
        let id = ReplayId(self.next_replay);
        self.next_replay += 1;
        let now = self.now.mono;
        let progress_every = o
            .progress_interval
            .unwrap_or(self.cfg.default_progress_interval);
        let resolving = positions.is_empty();
        let replay = Replay {
            conn: origin.0,
            stream: stream.clone(),
            batch,
            rate,
            tokens: rate.map_or(0, |r| r * UNIT),
            refilled: now,
            max_events: o.max_events,
            types: o.event_types.into_iter().collect(),
            versions: o.schema_versions,
            strict: o.strict_versions,
            end_time: match from {
                ReplayFrom::TimeRange(_, end) => Some(end),
                _ => None,
            },
            progress_every,
            next_progress: now.saturating_add(progress_every),
            started: now,
            partition: 0,
            ends: s.parts.iter().map(|p| p.next).collect(),
            positions,
            buffer: VecDeque::new(),
            reading: false,
            sent: 0,
            wake: None,
            resolving,
            window: o.window,
            outstanding: 0,
        };
        self.replays.insert(id, replay);
        self.conn(origin.0).replays.insert(id);
        self.reply_to(origin, Ok(Reply::ReplayStarted(id)));
        match from {
            ReplayFrom::Offset(_) | ReplayFrom::Offsets(_) => {
                self.replay_resolved(id, Ok(Vec::new()))
            }
            ReplayFrom::Time(t) | ReplayFrom::TimeRange(t, _) => self.resolve_start(
                &stream,
                StartPosition::Time(t),
                super::resolve::Purpose::Replay { replay: id },
            ),
        }
    }

    fn check_replay(
        &self,
        stream: &StreamName,
        from: &ReplayFrom,
        o: &ReplayOptions,
    ) -> Result<(u32, Option<u64>), Error> {
        if !self
            .streams
            .get(stream)
            .is_some_and(|s| s.status == super::streams::StreamStatus::Ready)
        {
            return Err(Error::StreamNotFound(stream.clone()));
        }
        if self.replays.len() >= self.cfg.max_replays {
            return Err(Error::Busy {
                what: "replays",
                limit: self.cfg.max_replays as u64,
            });
        }
        let batch = o.batch_size.unwrap_or(self.cfg.default_replay_batch);
        let max = self.cfg.max_read_events;
        if batch == 0 || batch > max {
            return Err(InvalidInput::Range {
                field: "batch_size",
                value: batch.into(),
                min: 1,
                max: max.into(),
            }
            .into());
        }
        if o.max_events_per_second == Some(0) {
            let e = InvalidInput::Range {
                field: "max_events_per_second",
                value: 0,
                min: 1,
                max: u32::MAX.into(),
            };
            return Err(e.into());
        }
        if o.event_types.len() > MAX_EVENT_TYPES {
            let e = InvalidInput::Length {
                field: "event_types",
                len: o.event_types.len(),
                min: 0,
                max: MAX_EVENT_TYPES,
            };
            return Err(e.into());
        }
        if o.window == Some(0) {
            return Err(InvalidInput::Range {
                field: "window",
                value: 0,
                min: 1,
                max: u32::MAX.into(),
            }
            .into());
        }
        if o.progress_interval.is_some_and(|d| d.is_zero()) {
            return Err(InvalidInput::Range {
                field: "progress_interval (ms)",
                value: 0,
                min: 1,
                max: u64::MAX,
            }
            .into());
        }
        if let ReplayFrom::TimeRange(start, end) = from
            && start >= end
        {
            return Err(InvalidInput::Conflict {
                field: "time range",
                reason: "start must be before end",
            }
            .into());
        }
        Ok((batch, o.max_events_per_second.map(u64::from)))
    }

    pub(crate) fn replay_resolved(&mut self, id: ReplayId, offsets: Result<Vec<u64>, Error>) {
        let Some(r) = self.replays.get_mut(&id) else {
            return;
        };
        match offsets {
            Err(e) => return self.finish_replay(id, ReplayItem::Failed(e)),
            Ok(o) if r.resolving => r.positions = o,
            Ok(_) => {}
        }
        r.resolving = false;
        self.replay_pump(id);
    }

    pub(crate) fn cancel_replay(&mut self, origin: Origin, id: ReplayId) {
        if self.replays.get(&id).is_some_and(|r| r.conn == origin.0) {
            self.replays.remove(&id);
            self.conn(origin.0).replays.remove(&id);
            self.reply_to(origin, Ok(Reply::Done));
        } else {
            self.reply_to(origin, Err(Error::ReplayNotFound(id)));
        }
    }

    /// The reader of replay `id` took `batches` of its batches: that many more may go out.
    pub(crate) fn replay_credit(&mut self, origin: Origin, id: ReplayId, batches: u32) {
        let Some(r) = self.replays.get_mut(&id).filter(|r| r.conn == origin.0) else {
            return self.reply_to(origin, Err(Error::ReplayNotFound(id)));
        };
        let paused = r.paused();
        r.outstanding = r.outstanding.saturating_sub(batches);
        self.reply_to(origin, Ok(Reply::Done));
        if paused && !self.replays.get(&id).is_some_and(Replay::paused) {
            self.replay_pump(id);
        }
    }

    fn finish_replay(&mut self, id: ReplayId, item: ReplayItem) {
        if let Some(r) = self.replays.remove(&id) {
            if let Some(c) = self.conns.get_mut(&r.conn) {
                c.replays.remove(&id);
            }
            self.out.push_back(Output::Replay {
                conn: r.conn,
                replay: id,
                item,
            });
        }
    }

    pub(crate) fn replay_wake(&mut self, id: ReplayId) {
        if let Some(r) = self.replays.get_mut(&id) {
            r.wake = None;
        }
        self.replay_pump(id);
    }

    /// Sends what the rate allows, reads more when the buffer is empty, reports progress.
    fn replay_pump(&mut self, id: ReplayId) {
        let now = self.now.mono;
        loop {
            let Some(r) = self.replays.get_mut(&id) else {
                return;
            };
            if r.resolving {
                return;
            }
            if let Some(rate) = r.rate {
                let elapsed = now.since(r.refilled);
                r.tokens = r
                    .tokens
                    .saturating_add(elapsed.saturating_mul(rate))
                    .min(rate * UNIT);
                r.refilled = now;
            }
            if now >= r.next_progress {
                let elapsed = now.since(r.started).max(1);
                let rate = u64::try_from(u128::from(r.sent) * 1_000_000_000 / u128::from(elapsed))
                    .unwrap_or(u64::MAX);
                // Not yet read, plus read and not yet sent.
                let unread: u64 = r
                    .ends
                    .iter()
                    .zip(&r.positions)
                    .map(|(e, p)| e.saturating_sub(*p))
                    .sum();
                let remaining = unread + r.buffer.len() as u64;
                let eta = if rate == 0 {
                    Duration::ZERO
                } else {
                    Duration::from_secs_f64(remaining as f64 / rate as f64)
                };
                r.next_progress = now.saturating_add(r.progress_every);
                let item = ReplayItem::Progress {
                    done: r.sent,
                    rate,
                    remaining,
                    eta,
                };
                self.out.push_back(Output::Replay {
                    conn: r.conn,
                    replay: id,
                    item,
                });
                continue;
            }
            if r.max_events.is_some_and(|m| r.sent >= m) {
                let total = r.sent;
                return self.finish_replay(id, ReplayItem::Done { total });
            }
            if r.buffer.is_empty() {
                if r.reading {
                    return;
                }
                while r.partition < r.positions.len()
                    && r.positions[r.partition] >= r.ends[r.partition]
                {
                    r.partition += 1;
                }
                if r.partition >= r.positions.len() {
                    let total = r.sent;
                    return self.finish_replay(id, ReplayItem::Done { total });
                }
                let (p, from, end) = (r.partition, r.positions[r.partition], r.ends[r.partition]);
                let Some(s) = self.streams.get(&r.stream) else {
                    let e = Error::StreamNotFound(r.stream.clone());
                    return self.finish_replay(id, ReplayItem::Failed(e));
                };
                let part = &s.parts[p];
                if from < part.first {
                    // Removed while the replay ran: skip to what is left.
                    r.positions[p] = part.first;
                    continue;
                }
                if s.config.is_ephemeral() || from >= part.cache_start() {
                    let upto = end.min(from + u64::from(r.batch));
                    let events: Vec<EventRef> = (from..upto)
                        .filter_map(|o| part.cached(o).cloned())
                        .collect();
                    self.replay_take(id, events, upto);
                    continue;
                }
                r.reading = true;
                let req = StorageRequest::Read {
                    stream: r.stream.clone(),
                    partition: p as u32,
                    from,
                    max: r.batch,
                };
                self.storage(Op::ReplayRead { replay: id }, req);
                return;
            }
            if r.paused() {
                // Resumed by `replay_credit` (no timer: a stalled reader costs nothing).
                return;
            }
            let mut n = r.buffer.len().min(r.batch as usize);
            if let Some(m) = r.max_events {
                n = n.min((m - r.sent) as usize);
            }
            // PLANTED BUG ignore-replay-rate (test-only): the bucket never runs dry.
            #[cfg(feature = "planted-bugs")]
            if self.planted == Some(crate::PlantedBug::IgnoreReplayRate) {
                r.tokens = r.tokens.max(u64::from(r.batch) * UNIT);
            }
            if r.rate.is_some() {
                n = n.min((r.tokens / UNIT) as usize);
            }
            if n == 0 {
                let rate = r.rate.unwrap_or(1).max(1);
                let wait = (UNIT - r.tokens % UNIT).div_ceil(rate);
                let at = now
                    .saturating_add(Duration::from_nanos(wait))
                    .min(r.next_progress);
                return self.replay_sleep(id, at);
            }
            let events: Vec<EventRef> = r.buffer.drain(..n).collect();
            r.sent += n as u64;
            if r.window.is_some() {
                r.outstanding += 1;
            }
            if r.rate.is_some() {
                r.tokens -= n as u64 * UNIT;
            }
            let conn = r.conn;
            let (asked, strict) = (r.versions.clone(), r.strict);
            let events = self.shape_replay(events, &asked, strict);
            self.out.push_back(Output::Replay {
                conn,
                replay: id,
                item: ReplayItem::Events(events),
            });
        }
    }

    fn replay_sleep(&mut self, id: ReplayId, at: MonoNanos) {
        let Some(r) = self.replays.get_mut(&id) else {
            return;
        };
        if let Some(old) = r.wake.replace(at) {
            self.timers.remove(&(old, Timer::Replay(id)));
        }
        self.timers.insert((at, Timer::Replay(id)));
    }

    /// Takes read events into the buffer, applying the type filter and the time range end.
    fn replay_take(&mut self, id: ReplayId, events: Vec<EventRef>, read_upto: u64) {
        let Some(r) = self.replays.get_mut(&id) else {
            return;
        };
        let p = r.partition;
        let end = r.ends[p];
        let mut next = read_upto
            .max(events.last().map_or(0, |e| e.offset + 1))
            .min(end);
        for e in events {
            // Past the heads the replay started with, or past the end of its time range.
            if e.offset >= end || r.end_time.is_some_and(|t| e.timestamp >= t) {
                next = end;
                break;
            }
            if r.types.is_empty() || r.types.contains(&e.event_type) {
                r.buffer.push_back(e);
            }
        }
        r.positions[p] = next.max(r.positions[p]);
    }

    pub(crate) fn replay_read_done(&mut self, p: PendingOp, result: StorageResult) {
        let Op::ReplayRead { replay: id } = p.op else {
            return;
        };
        let Some(r) = self.replays.get_mut(&id) else {
            return;
        };
        r.reading = false;
        match result {
            StorageResult::Ok(StorageReply::Events(events)) => {
                let from = r.positions[r.partition];
                // An empty read below the end means the events are gone: the partition is done.
                let upto = if events.is_empty() {
                    r.ends[r.partition]
                } else {
                    from
                };
                self.replay_take(id, events, upto);
                self.replay_pump(id);
            }
            StorageResult::Ok(other) => {
                let e = Error::Unavailable(format!("store answered a read with {other:?}"));
                self.finish_replay(id, ReplayItem::Failed(e));
            }
            StorageResult::Err(e) => {
                self.finish_replay(id, ReplayItem::Failed(super::unavailable(&e)))
            }
            StorageResult::Unknown => self.finish_replay(
                id,
                ReplayItem::Failed(Error::Unavailable("read outcome unknown".into())),
            ),
        }
    }
}
