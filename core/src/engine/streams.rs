//! Streams: create, delete, describe; the append pipeline; reading pages.
//!
//! Persistent appends go through a per-stream queue with at most one write in flight (group
//! commit): offsets are assigned when a write is built, from the committed heads, so a failed
//! write never leaves a hole, and every request queued while a write is in flight shares the
//! next one. A write whose outcome is `Unknown` is repeated, identical, until the store gives
//! a definite answer; stores accept an identical repeat, so it never makes a second copy.

use super::dedup::DedupWindow;
use super::{Engine, EventRef, Op, Origin, PendingOp, SlotKey, Timer, unavailable};
use crate::api::{
    AppendOutcome, AppendRequest, Notice, PartitionInfo, Position, Reply, StreamInfo,
};
use crate::error::{Error, InvalidInput};
use crate::event::{Event, NewEvent, validate_batch};
use crate::ids::{EventId, SubId};
use crate::names::StreamName;
use crate::storage::{AppendWrite, DedupRecord, StorageReply, StorageRequest, StorageResult};
use crate::stream_config::{DeliverySemantics, Overflow, Scope, StreamConfig, StreamKind};
use crate::time::{MonoNanos, UnixMillis};
use rand_core::RngCore;
use std::collections::{BTreeSet, VecDeque};
use std::sync::Arc;

/// Where a stream is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum StreamStatus {
    /// Its creation is being written; appends wait in its queue.
    Creating,
    /// Serving.
    Ready,
    /// Its deletion waits for the write in flight, or is being written.
    Deleting,
}

/// One partition's head, and the events of it held in memory (ephemeral: all of them;
/// persistent: a tail cache).
#[derive(Debug, Default)]
pub(crate) struct Partition {
    pub(crate) first: u64,
    pub(crate) next: u64,
    pub(crate) last_ts: UnixMillis,
    pub(crate) cache: VecDeque<EventRef>,
    /// Bytes of the cached events (ephemeral limits).
    pub(crate) bytes: u64,
}

impl Partition {
    pub(crate) fn cache_start(&self) -> u64 {
        self.next - self.cache.len() as u64
    }
    pub(crate) fn cached(&self, offset: u64) -> Option<&EventRef> {
        let start = self.cache_start();
        if offset < start {
            return None;
        }
        self.cache.get((offset - start) as usize)
    }
}

/// Where a stream's group commit is in its wait for more requests.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Linger {
    /// Not waiting.
    Off,
    /// Waiting until this deadline.
    Waiting(MonoNanos),
    /// The deadline passed: write what is queued.
    Expired,
}

/// Who asked for an append.
#[derive(Debug, Clone)]
pub(crate) enum AppendOrigin {
    Client(Origin),
    /// The engine, moving a subscription's event to the dead letter stream.
    DeadLetter(SlotKey),
}

#[derive(Debug)]
pub(crate) struct QueuedAppend {
    origin: AppendOrigin,
    events: Vec<NewEvent>,
    expected_offset: Option<u64>,
}

/// A write in the pipeline: the heads after it (the next write is planned from them) and,
/// once the store answered, its outcome (applied in order, from the front).
#[derive(Debug)]
struct WriteSlot {
    seq: u64,
    nexts: Vec<u64>,
    last_ts: Vec<UnixMillis>,
    clock: UnixMillis,
    done: Option<WriteDone>,
}

#[derive(Debug)]
enum WriteDone {
    Committed(Box<AppendFlight>),
    Failed(Box<AppendFlight>, Error),
    /// Refused while it was behind another write: sent again once it is first, if everything
    /// before it committed; failed otherwise.
    Parked(Box<PendingOp>, Error),
}

/// A write in flight and the requests it answers.
#[derive(Debug)]
pub(crate) struct AppendFlight {
    requests: Vec<(AppendOrigin, Vec<AppendOutcome>)>,
    write: Arc<AppendWrite>,
    nexts: Vec<u64>,
    last_ts: Vec<UnixMillis>,
    clock: UnixMillis,
    /// Ids this write added to the back of the dedup window (popped if it fails).
    tentative: usize,
}

/// A stream in the engine.
#[derive(Debug)]
pub(crate) struct Stream {
    pub(crate) config: StreamConfig,
    pub(crate) status: StreamStatus,
    pub(crate) parts: Vec<Partition>,
    pub(crate) dedup: DedupWindow,
    pub(crate) subs: BTreeSet<SubId>,
    rr: u32,
    queue: VecDeque<QueuedAppend>,
    queued_events: usize,
    /// Append writes in flight, oldest first (at most `max_append_writes_in_flight`).
    pipeline: VecDeque<WriteSlot>,
    /// A write failed: no new write until the pipeline is empty (the writes sent after it
    /// fail too, by the store contract).
    failing: bool,
    /// Ids the failed writes added to the back of the dedup window: popped once the pipeline
    /// is empty.
    failed_ids: usize,
    /// The number of the next write (see `AppendWrite::seq`).
    next_seq: u64,
    /// Requests in the last write (the group commit waits for as many, within the linger).
    last_write_requests: usize,
    linger: Linger,
    /// Monotonic wall clock of the stream: dedup expiries never go back.
    pub(crate) clock: UnixMillis,
    /// Cross-service streams: the relay to the broker.
    pub(crate) relay: Option<super::relay::Relay>,
    delete_waiting: Option<Origin>,
}

impl Stream {
    pub(crate) fn new(
        config: StreamConfig,
        status: StreamStatus,
        seed: u64,
        first_seq: u64,
    ) -> Stream {
        let parts = (0..config.partitions)
            .map(|_| Partition::default())
            .collect();
        let relay = (config.scope == crate::stream_config::Scope::CrossService)
            .then(|| super::relay::Relay::new(config.partitions as usize));
        Stream {
            config,
            status,
            parts,
            dedup: DedupWindow::new(seed),
            subs: BTreeSet::new(),
            rr: 0,
            queue: VecDeque::new(),
            queued_events: 0,
            pipeline: VecDeque::new(),
            failing: false,
            failed_ids: 0,
            next_seq: first_seq,
            clock: UnixMillis(0),
            relay,
            delete_waiting: None,
            last_write_requests: 0,
            linger: Linger::Off,
        }
    }

    fn dedup_on(&self) -> bool {
        !self.config.dedup_window.is_zero()
    }

    pub(crate) fn info(&self) -> StreamInfo {
        StreamInfo {
            config: self.config.clone(),
            partitions: self
                .parts
                .iter()
                .map(|p| PartitionInfo {
                    first: p.first,
                    next: p.next,
                })
                .collect(),
            subscriptions: self.subs.len(),
            relay: self
                .relay
                .as_ref()
                .map(|r| r.parts.iter().map(|p| p.confirmed).collect()),
        }
    }
}

/// The partition of a key: xxh3-64 (seed 0) of the key bytes, modulo the partition count.
/// Stable across versions and platforms; a stream's partition count never changes.
pub fn partition_of_key(key: &[u8], partitions: u32) -> u32 {
    (xxhash_rust::xxh3::xxh3_64(key) % u64::from(partitions)) as u32
}

/// The events of one request after dedup: what to write, and each event's outcome so far.
enum Planned {
    /// Built in its `Arc` at once: it is stored and shared from there, never copied.
    Write(Arc<Event>, Option<DedupRecord>),
    Duplicate(Position),
}

impl Engine {
    pub(crate) fn create_stream(&mut self, origin: Origin, config: StreamConfig) {
        if let Err(e) = config.validate(&self.cfg) {
            return self.reply_to(origin, Err(e.into()));
        }
        // A fact of this server, not of the request: the same request succeeds on a server
        // with a broker.
        if config.scope == Scope::CrossService && !self.cfg.relay_enabled {
            return self.reply_to(
                origin,
                Err(Error::FailedPrecondition {
                    stream: config.name,
                    reason: "scope cross-service needs a broker, and none is configured (AMQP url)",
                }),
            );
        }
        if self.streams.contains_key(&config.name) {
            return self.reply_to(origin, Err(Error::StreamExists(config.name)));
        }
        if self.streams.len() >= self.cfg.max_streams {
            let limit = self.cfg.max_streams as u64;
            return self.reply_to(
                origin,
                Err(Error::Busy {
                    what: "streams",
                    limit,
                }),
            );
        }
        self.create_stream_inner(Some(origin), config);
    }

    /// Creates a stream; `origin` is `None` for streams the engine creates itself (dead letters).
    fn create_stream_inner(&mut self, origin: Option<Origin>, config: StreamConfig) {
        let name = config.name.clone();
        let first_seq = self.first_write_seq();
        if config.is_ephemeral() {
            let seed = self.seed ^ self.streams.len() as u64;
            self.streams.insert(
                name,
                Stream::new(config, StreamStatus::Ready, seed, first_seq),
            );
            if let Some(o) = origin {
                self.reply_to(o, Ok(Reply::Done));
            }
            return;
        }
        let seed = self.seed ^ xxhash_rust::xxh3::xxh3_64(name.as_str().as_bytes());
        self.streams.insert(
            name.clone(),
            Stream::new(config.clone(), StreamStatus::Creating, seed, first_seq),
        );
        self.storage(
            Op::CreateStream { name, origin },
            StorageRequest::CreateStream(config),
        );
    }

    pub(crate) fn delete_stream(&mut self, origin: Origin, name: StreamName) {
        let Some(s) = self.streams.get_mut(&name) else {
            return self.reply_to(origin, Err(Error::StreamNotFound(name)));
        };
        if s.status != StreamStatus::Ready {
            return self.reply_to(
                origin,
                Err(Error::FailedPrecondition {
                    stream: name,
                    reason: "is being created or deleted",
                }),
            );
        }
        if s.config.is_ephemeral() {
            self.remove_stream(&name);
            return self.reply_to(origin, Ok(Reply::Done));
        }
        s.status = StreamStatus::Deleting;
        let queued: Vec<QueuedAppend> = s.queue.drain(..).collect();
        s.queued_events = 0;
        let writing = !s.pipeline.is_empty();
        if writing {
            s.delete_waiting = Some(origin);
        }
        for q in queued {
            self.append_failed(q.origin, Error::StreamNotFound(name.clone()));
        }
        if !writing {
            self.storage(
                Op::DeleteStream {
                    name: name.clone(),
                    origin,
                },
                StorageRequest::DeleteStream(name),
            );
        }
    }

    /// Drops a stream and its subscriptions from memory.
    fn remove_stream(&mut self, name: &StreamName) {
        let Some(s) = self.streams.remove(name) else {
            return;
        };
        self.forget_publishes(name);
        for sub in s.subs {
            self.remove_subscription(sub);
        }
    }

    pub(crate) fn stream_op_done(&mut self, mut p: PendingOp, result: StorageResult) {
        match (&p.op, result) {
            (Op::CreateStream { name, origin }, StorageResult::Ok(_)) => {
                let (name, origin) = (name.clone(), *origin);
                if let Some(s) = self.streams.get_mut(&name) {
                    s.status = StreamStatus::Ready;
                }
                self.arm_cleanup();
                if let Some(o) = origin {
                    self.reply_to(o, Ok(Reply::Done));
                }
                self.flush(&name);
            }
            (Op::DeleteStream { name, origin }, StorageResult::Ok(_)) => {
                let (name, origin) = (name.clone(), *origin);
                self.remove_stream(&name);
                self.reply_to(origin, Ok(Reply::Done));
            }
            (
                Op::CreateStream {
                    name,
                    origin: Some(o),
                },
                StorageResult::Err(e),
            ) if !p.uncertain => {
                let (name, o) = (name.clone(), *o);
                if let Some(s) = self.streams.remove(&name) {
                    for q in s.queue {
                        self.append_failed(q.origin, unavailable(&e));
                    }
                }
                self.reply_to(o, Err(unavailable(&e)));
            }
            (Op::DeleteStream { name, origin }, StorageResult::Err(e)) if !p.uncertain => {
                let (name, origin) = (name.clone(), *origin);
                if let Some(s) = self.streams.get_mut(&name) {
                    s.status = StreamStatus::Ready;
                }
                self.reply_to(origin, Err(unavailable(&e)));
            }
            (_, StorageResult::Ok(_)) => {}
            (_, StorageResult::Err(e)) => self.retry_later(p, "stream", e.to_string()),
            (_, StorageResult::Unknown) => {
                p.uncertain = true;
                self.retry_later(p, "stream", "outcome unknown".into())
            }
        }
    }

    pub(crate) fn describe_stream(
        &self,
        name: &StreamName,
    ) -> Result<crate::api::StreamInfo, Error> {
        match self.streams.get(name) {
            Some(s) if s.status != StreamStatus::Creating => Ok(s.info()),
            _ => Err(Error::StreamNotFound(name.clone())),
        }
    }

    // ---- append ----------------------------------------------------------------------------

    pub(crate) fn append(&mut self, origin: Origin, a: AppendRequest) {
        if let Err(e) = validate_batch(&a.events, &self.cfg) {
            return self.reply_to(origin, Err(e.into()));
        }
        let Some(s) = self.streams.get(&a.stream) else {
            return self.reply_to(origin, Err(Error::StreamNotFound(a.stream)));
        };
        if s.status == StreamStatus::Deleting {
            return self.reply_to(origin, Err(Error::StreamNotFound(a.stream)));
        }
        if s.config.delivery == DeliverySemantics::ExactlyOnce
            && a.events.iter().any(|e| e.event_id.is_none())
        {
            return self.reply_to(
                origin,
                Err(InvalidInput::Conflict {
                    field: "event_id",
                    reason: "required on an exactly-once stream: the producer's id is what deduplicates its retries",
                }
                .into()),
            );
        }
        if a.expected_offset.is_some() && s.config.partitions > 1 {
            let p = a.events[0]
                .key
                .as_ref()
                .map(|k| partition_of_key(k, s.config.partitions));
            let one = p.is_some()
                && a.events.iter().all(|e| {
                    e.key
                        .as_ref()
                        .map(|k| partition_of_key(k, s.config.partitions))
                        == p
                });
            if !one {
                return self.reply_to(
                    origin,
                    Err(InvalidInput::Conflict {
                        field: "expected_offset",
                        reason: "on a stream with several partitions every event needs a key of one partition",
                    }
                    .into()),
                );
            }
        }
        let q = QueuedAppend {
            origin: AppendOrigin::Client(origin),
            events: a.events,
            expected_offset: a.expected_offset,
        };
        self.enqueue_append(&a.stream, q);
    }

    /// Queues an append (persistent) or applies it at once (ephemeral).
    pub(crate) fn enqueue_append(&mut self, name: &StreamName, q: QueuedAppend) {
        let Some(s) = self.streams.get_mut(name) else {
            return self.append_failed(q.origin, Error::StreamNotFound(name.clone()));
        };
        if s.config.is_ephemeral() {
            return self.append_ephemeral(name, q);
        }
        if s.queued_events + q.events.len() > self.cfg.max_pending_append_events {
            let limit = self.cfg.max_pending_append_events as u64;
            return self.append_failed(
                q.origin,
                Error::Busy {
                    what: "appends waiting for the store",
                    limit,
                },
            );
        }
        s.queued_events += q.events.len();
        s.queue.push_back(q);
        // The write is built when the driver next polls: appends handled together share it.
        self.unflushed.insert(name.clone());
    }

    pub(crate) fn queue_dead_letter(&mut self, dlq: &StreamName, key: SlotKey, event: NewEvent) {
        let q = QueuedAppend {
            origin: AppendOrigin::DeadLetter(key),
            events: vec![event],
            expected_offset: None,
        };
        if !self.streams.contains_key(dlq) {
            let mut config = StreamConfig::persistent(dlq.clone());
            config.dedup_window = self.cfg.default_dedup_window;
            self.create_stream_inner(None, config);
        }
        self.enqueue_append(dlq, q);
    }

    fn append_failed(&mut self, origin: AppendOrigin, e: Error) {
        match origin {
            AppendOrigin::Client(o) => self.reply_to(o, Err(e)),
            AppendOrigin::DeadLetter(key) => self.dead_letter_failed(key, e),
        }
    }

    fn append_succeeded(&mut self, origin: AppendOrigin, outcomes: Vec<AppendOutcome>) {
        match origin {
            AppendOrigin::Client(o) => self.reply_to(o, Ok(Reply::Appended(outcomes))),
            AppendOrigin::DeadLetter(key) => self.dead_letter_done(key),
        }
    }

    /// Checks one request against the dedup window, its expected offset and the window's
    /// capacity, then assigns partitions, offsets and timestamps. The ids it appends go into the
    /// window at once, as tentative entries at its back (they are the newest): the ids of the
    /// write being built are found like committed ones, and a write that definitely fails pops
    /// them again. Returns the plan and the number of ids added. `Err` refuses the whole request
    /// and changes nothing.
    fn plan(
        &mut self,
        name: &StreamName,
        q: &mut QueuedAppend,
        nexts: &mut [u64],
        last_ts: &mut [UnixMillis],
        clock: UnixMillis,
    ) -> Result<(Vec<Planned>, usize), Error> {
        let wall = self.now.wall;
        let max_ids = self.cfg.max_dedup_ids_per_stream;
        #[cfg(feature = "planted-bugs")]
        let bug = self.planted;
        let Some(s) = self.streams.get_mut(name) else {
            return Err(Error::StreamNotFound(name.clone()));
        };
        let dedup_on = s.dedup_on();
        let window = s.config.dedup_window;
        let with_ids = if dedup_on {
            q.events.iter().filter(|e| e.event_id.is_some()).count()
        } else {
            0
        };
        // Room is counted for every id, duplicate or not (a conservative bound).
        let over_capacity = with_ids > 0 && s.dedup.len() + with_ids > max_ids;
        if over_capacity || q.expected_offset.is_some() {
            // An append that only repeats earlier events answers as they did.
            let all_dup = with_ids == q.events.len()
                && q.events
                    .iter()
                    .all(|e| e.event_id.is_some_and(|id| s.dedup.get(&id).is_some()));
            if !all_dup && over_capacity {
                return Err(Error::Busy {
                    what: "dedup window",
                    limit: max_ids as u64,
                });
            }
            if let (false, Some(expected)) = (all_dup, q.expected_offset) {
                let p = q.events[0]
                    .key
                    .as_ref()
                    .map_or(0, |k| partition_of_key(k, s.config.partitions));
                let actual = nexts[p as usize];
                // PLANTED BUG ignore-expected-offset (test-only).
                #[cfg(feature = "planted-bugs")]
                let actual = if bug == Some(crate::PlantedBug::IgnoreExpectedOffset) {
                    expected
                } else {
                    actual
                };
                if actual != expected {
                    return Err(Error::WrongExpectedOffset {
                        partition: p,
                        expected,
                        actual,
                    });
                }
            }
        }
        let partitions = s.config.partitions;
        let mut out = Vec::with_capacity(q.events.len());
        let mut added = 0;
        for e in std::mem::take(&mut q.events) {
            let p = match &e.key {
                Some(k) => partition_of_key(k, partitions),
                None => s.rr % partitions,
            };
            let offset = nexts[p as usize];
            let (id, rec) = match e.event_id {
                Some(id) if dedup_on => {
                    let rec = DedupRecord {
                        event_id: id,
                        partition: p,
                        offset,
                        expires_at: clock.saturating_add(window),
                    };
                    let found = s.dedup.insert_if_absent(&rec);
                    // PLANTED BUG skip-dedup (test-only): the duplicate is written again.
                    #[cfg(feature = "planted-bugs")]
                    let found = match found {
                        Some(_) if bug == Some(crate::PlantedBug::SkipDedup) => {
                            s.dedup.insert(&rec);
                            None
                        }
                        f => f,
                    };
                    if let Some((partition, offset)) = found {
                        out.push(Planned::Duplicate(Position { partition, offset }));
                        continue;
                    }
                    added += 1;
                    (id, Some(rec))
                }
                Some(id) => (id, None),
                None => {
                    let mut b = [0u8; 16];
                    self.rng.fill_bytes(&mut b);
                    (EventId::from_random(b), None)
                }
            };
            if e.key.is_none() {
                s.rr = s.rr.wrapping_add(1);
            }
            nexts[p as usize] += 1;
            let ts = wall.max(last_ts[p as usize]);
            last_ts[p as usize] = ts;
            out.push(Planned::Write(
                Arc::new(Event::from_new(e, id, name.clone(), p, offset, ts)),
                rec,
            ));
        }
        Ok((out, added))
    }

    /// Builds the next write of a persistent stream from its queue, if none is in flight.
    pub(crate) fn flush(&mut self, name: &StreamName) {
        loop {
            let Some(s) = self.streams.get_mut(name) else {
                return;
            };
            let depth = self.cfg.max_append_writes_in_flight;
            if s.status != StreamStatus::Ready
                || s.queue.is_empty()
                || s.failing
                || s.pipeline.len() >= depth
            {
                return;
            }
            // Group commit: after a write of N requests, wait (at most `append_linger`) until N
            // are queued again, so that many producers keep sharing writes instead of
            // alternating a write of one with a write of the others. With room for more than
            // one write and none in flight, N is shared by the writes the pipeline holds: the
            // producers split into `depth` groups whose writes overlap, instead of all waiting
            // for one write at a time (a state the pipeline would otherwise never leave).
            {
                let target = if s.pipeline.is_empty() {
                    s.last_write_requests.div_ceil(depth)
                } else {
                    s.last_write_requests
                };
                let full = s.queue.len() >= target || s.queued_events >= self.cfg.max_write_events;
                match s.linger {
                    Linger::Expired => {}
                    _ if full || self.cfg.append_linger.is_zero() => {}
                    Linger::Waiting(_) => return,
                    Linger::Off => {
                        let at = self.now.mono.saturating_add(self.cfg.append_linger);
                        s.linger = Linger::Waiting(at);
                        self.timers.insert((at, Timer::Linger(name.clone())));
                        return;
                    }
                }
            }
            if let Linger::Waiting(at) = std::mem::replace(&mut s.linger, Linger::Off) {
                self.timers.remove(&(at, Timer::Linger(name.clone())));
            }
            s.dedup.expire(self.now.wall);
            // Planned on top of the writes in flight.
            let (mut nexts, mut last_ts, base_clock) = match s.pipeline.back() {
                Some(w) => (w.nexts.clone(), w.last_ts.clone(), w.clock),
                None => (
                    s.parts.iter().map(|p| p.next).collect(),
                    s.parts.iter().map(|p| p.last_ts).collect(),
                    s.clock,
                ),
            };
            let clock = base_clock.max(self.now.wall);
            // Offsets from `committed` up to `planned_from` belong to writes still in flight.
            let committed: Vec<u64> = s.parts.iter().map(|p| p.next).collect();
            let planned_from = nexts.clone();
            let mut tentative = 0;
            let mut requests = Vec::new();
            let mut events: Vec<Arc<Event>> = Vec::new();
            let mut dedup = Vec::new();
            let max = self.cfg.max_write_events;
            let mut deferred = false;
            loop {
                let Some(s) = self.streams.get_mut(name) else {
                    return;
                };
                let Some(front) = s.queue.front() else { break };
                if !events.is_empty() && events.len() + front.events.len() > max {
                    break;
                }
                // A duplicate of an event of another write in flight is answered only once that
                // write committed: the request waits (with everything behind it).
                let in_flight_dup = !s.pipeline.is_empty()
                    && front.events.iter().filter_map(|e| e.event_id).any(|id| {
                        s.dedup.get(&id).is_some_and(|(p, o)| {
                            let p = p as usize;
                            o >= committed[p] && o < planned_from[p]
                        })
                    });
                if in_flight_dup {
                    deferred = true;
                    break;
                }
                let Some(mut q) = s.queue.pop_front() else {
                    break;
                };
                s.queued_events -= q.events.len();
                match self.plan(name, &mut q, &mut nexts, &mut last_ts, clock) {
                    Err(e) => self.append_failed(q.origin, e),
                    Ok((planned, added)) => {
                        tentative += added;
                        let mut outcomes = Vec::with_capacity(planned.len());
                        for p in planned {
                            match p {
                                Planned::Duplicate(original) => {
                                    outcomes.push(AppendOutcome::Duplicate { original })
                                }
                                Planned::Write(ev, rec) => {
                                    outcomes.push(AppendOutcome::Appended(Position {
                                        partition: ev.partition,
                                        offset: ev.offset,
                                    }));
                                    events.push(ev);
                                    dedup.extend(rec);
                                }
                            }
                        }
                        requests.push((q.origin, outcomes));
                    }
                }
            }
            if events.is_empty() {
                for (origin, outcomes) in requests {
                    self.append_succeeded(origin, outcomes);
                }
                if deferred {
                    return;
                }
                continue;
            }
            let Some(s) = self.streams.get_mut(name) else {
                return;
            };
            let (seq, after) = (s.next_seq, s.pipeline.back().map(|w| w.seq));
            s.next_seq = s.next_seq.wrapping_add(1);
            s.pipeline.push_back(WriteSlot {
                seq,
                nexts: nexts.clone(),
                last_ts: last_ts.clone(),
                clock,
                done: None,
            });
            let write = Arc::new(AppendWrite {
                stream: name.clone(),
                seq,
                after,
                events,
                dedup,
            });
            let flight = AppendFlight {
                requests,
                write: write.clone(),
                nexts,
                last_ts,
                clock,
                tentative,
            };
            if let Some(s) = self.streams.get_mut(name) {
                s.last_write_requests = flight.requests.len();
            }
            self.storage(
                Op::Append {
                    stream: name.clone(),
                    flight: Box::new(flight),
                },
                StorageRequest::Append(write),
            );
        }
    }

    pub(crate) fn append_done(&mut self, mut p: PendingOp, result: StorageResult) {
        // Behind a write that definitely failed, nothing can have committed (a store commits a
        // write only after the one it names): whatever else it answers, it failed.
        if !matches!(result, StorageResult::Ok(_))
            && let Op::Append { stream, .. } = &p.op
            && self.streams.get(stream).is_some_and(|s| s.failing)
        {
            let stream = stream.clone();
            return self.fail_behind_failure(&stream, p);
        }
        match result {
            StorageResult::Ok(_) => {
                let Op::Append { stream, flight } = p.op else {
                    return;
                };
                self.write_resolved(&stream, WriteDone::Committed(flight));
            }
            StorageResult::Err(e) if !p.uncertain => {
                let behind =
                    matches!(&p.retry, Some(StorageRequest::Append(w)) if w.after.is_some());
                if behind {
                    let Op::Append { stream, .. } = &p.op else {
                        return;
                    };
                    let stream = stream.clone();
                    return self
                        .write_resolved(&stream, WriteDone::Parked(Box::new(p), unavailable(&e)));
                }
                let Op::Append { stream, flight } = p.op else {
                    return;
                };
                // PLANTED BUG hole-after-failed-write (test-only): the heads move anyway.
                #[cfg(feature = "planted-bugs")]
                if self.planted == Some(crate::PlantedBug::HoleAfterFailedWrite)
                    && let Some(s) = self.streams.get_mut(&stream)
                {
                    for (part, next) in s.parts.iter_mut().zip(&flight.nexts) {
                        part.next = *next;
                    }
                }
                self.write_resolved(&stream, WriteDone::Failed(flight, unavailable(&e)));
            }
            StorageResult::Err(e) => {
                self.retry_later(p, "append (outcome unknown before)", e.to_string())
            }
            StorageResult::Unknown => {
                // PLANTED BUG lose-unknown-append (test-only): answered without a repeat.
                #[cfg(feature = "planted-bugs")]
                if self.planted == Some(crate::PlantedBug::LoseUnknownAppend) {
                    if let Op::Append { stream, flight } = p.op {
                        self.write_resolved(&stream, WriteDone::Committed(flight));
                    }
                    return;
                }
                p.uncertain = true;
                self.retry_later(p, "append", "outcome unknown".into());
            }
        }
    }

    /// A write of the pipeline has its outcome: outcomes are applied in order from the front,
    /// so heads only move over committed writes, and a failure fails what follows it.
    fn write_resolved(&mut self, name: &StreamName, done: WriteDone) {
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        let seq = match &done {
            WriteDone::Committed(f) | WriteDone::Failed(f, _) => f.write.seq,
            WriteDone::Parked(p, _) => match &p.op {
                Op::Append { flight, .. } => flight.write.seq,
                _ => return,
            },
        };
        if let WriteDone::Failed(f, _) = &done {
            s.failing = true;
            s.failed_ids += f.tentative;
        }
        if let Some(slot) = s.pipeline.iter_mut().find(|w| w.seq == seq) {
            slot.done = Some(done);
        }
        loop {
            let Some(s) = self.streams.get_mut(name) else {
                return;
            };
            if s.pipeline.front().is_none_or(|w| w.done.is_none()) {
                break;
            }
            let failing = s.failing;
            let Some(mut slot) = s.pipeline.pop_front() else {
                break;
            };
            match slot.done.take() {
                Some(WriteDone::Committed(flight)) => self.commit_append(name, *flight),
                Some(WriteDone::Failed(flight, err)) => {
                    for (origin, _) in flight.requests {
                        self.append_failed(origin, err.clone());
                    }
                }
                Some(WriteDone::Parked(p, err)) if failing => {
                    let Op::Append { flight, .. } = p.op else {
                        continue;
                    };
                    s.failed_ids += flight.tentative;
                    for (origin, _) in flight.requests {
                        self.append_failed(origin, err.clone());
                    }
                }
                Some(WriteDone::Parked(p, _)) => {
                    // First now, and everything before it committed: send it again, alone.
                    let Some(StorageRequest::Append(w)) = &p.retry else {
                        continue;
                    };
                    let req = StorageRequest::Append(Arc::new(AppendWrite {
                        after: None,
                        ..(**w).clone()
                    }));
                    s.pipeline.push_front(slot);
                    let mut p = *p;
                    p.attempt += 1;
                    self.storage_attempt(p, req);
                    break;
                }
                None => {}
            }
        }
        if let Some(s) = self.streams.get_mut(name)
            && s.failing
            && s.pipeline.is_empty()
        {
            s.dedup.pop_back(std::mem::take(&mut s.failed_ids));
            s.failing = false;
        }
        self.after_write(name);
    }

    /// A write behind one that definitely failed: it cannot have committed; fail it.
    pub(crate) fn fail_behind_failure(&mut self, name: &StreamName, p: PendingOp) {
        let Op::Append { flight, .. } = p.op else {
            return;
        };
        let err = Error::Unavailable(format!("an earlier write of stream {name} failed"));
        self.write_resolved(name, WriteDone::Failed(flight, err));
    }

    /// Whether a stream's pipeline is failing (a write definitely failed and the writes behind
    /// it are being resolved).
    pub(crate) fn stream_failing(&self, name: &StreamName) -> bool {
        self.streams.get(name).is_some_and(|s| s.failing)
    }

    /// The predecessor a repeated write must now name: the write before it that is still in
    /// the pipeline, if any.
    pub(crate) fn write_after(&self, name: &StreamName, seq: u64) -> Option<u64> {
        let s = self.streams.get(name)?;
        let i = s.pipeline.iter().position(|w| w.seq == seq)?;
        i.checked_sub(1).map(|j| s.pipeline[j].seq)
    }

    /// The group commit waited long enough: write what is queued.
    pub(crate) fn linger_expired(&mut self, name: &StreamName) {
        if let Some(s) = self.streams.get_mut(name)
            && matches!(s.linger, Linger::Waiting(_))
        {
            s.linger = Linger::Expired;
            self.flush(name);
        }
    }

    fn after_write(&mut self, name: &StreamName) {
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        if s.status == StreamStatus::Deleting {
            if !s.pipeline.is_empty() {
                return;
            }
            if let Some(origin) = s.delete_waiting.take() {
                self.storage(
                    Op::DeleteStream {
                        name: name.clone(),
                        origin,
                    },
                    StorageRequest::DeleteStream(name.clone()),
                );
            }
            return;
        }
        self.flush(name);
    }

    fn commit_append(&mut self, name: &StreamName, flight: AppendFlight) {
        let cache_max = self.cfg.tail_cache_events;
        if let Some(s) = self.streams.get_mut(name) {
            for (part, (next, ts)) in s
                .parts
                .iter_mut()
                .zip(flight.nexts.iter().zip(&flight.last_ts))
            {
                part.next = *next;
                part.last_ts = *ts;
            }
            for ev in &flight.write.events {
                let part = &mut s.parts[ev.partition as usize];
                part.cache.push_back(ev.clone());
                if part.cache.len() > cache_max {
                    part.cache.pop_front();
                }
            }
            s.clock = flight.clock;
        }
        for (origin, outcomes) in flight.requests {
            self.append_succeeded(origin, outcomes);
        }
        self.stream_grew(name);
    }

    fn append_ephemeral(&mut self, name: &StreamName, mut q: QueuedAppend) {
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        let StreamKind::Ephemeral(limits) = s.config.kind else {
            return;
        };
        s.dedup.expire(self.now.wall);
        let clock = s.clock.max(self.now.wall);
        let mut nexts = vec![s.parts[0].next];
        let mut last_ts = vec![s.parts[0].last_ts];
        let (planned, added) = match self.plan(name, &mut q, &mut nexts, &mut last_ts, clock) {
            Ok(p) => p,
            Err(e) => return self.append_failed(q.origin, e),
        };
        let (count, bytes) = planned.iter().fold((0u64, 0u64), |(c, b), p| match p {
            Planned::Write(e, _) => (c + 1, b + e.size() as u64),
            Planned::Duplicate(_) => (c, b),
        });
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        let part = &mut s.parts[0];
        let held = part.next - part.first;
        let fits = held + count <= limits.max_events && part.bytes + bytes <= limits.max_bytes;
        // PLANTED BUG ephemeral-overflow (test-only): everything fits.
        #[cfg(feature = "planted-bugs")]
        let fits = fits || self.planted == Some(crate::PlantedBug::EphemeralOverflow);
        let mut dropped = 0u64;
        if !fits {
            let could_fit = count <= limits.max_events && bytes <= limits.max_bytes;
            if limits.overflow == Overflow::Reject || !could_fit {
                let limit = if held + count > limits.max_events {
                    format!("max_events {}", limits.max_events)
                } else {
                    format!("max_bytes {}", limits.max_bytes)
                };
                s.dedup.pop_back(added);
                let stream = name.clone();
                return self.append_failed(q.origin, Error::StreamFull { stream, limit });
            }
            while part.next - part.first + count > limits.max_events
                || part.bytes + bytes > limits.max_bytes
            {
                let Some(e) = part.cache.pop_front() else {
                    break;
                };
                part.bytes -= e.size() as u64;
                part.first += 1;
                dropped += 1;
            }
        }
        let mut outcomes = Vec::with_capacity(planned.len());
        for p in planned {
            match p {
                Planned::Duplicate(original) => {
                    outcomes.push(AppendOutcome::Duplicate { original })
                }
                Planned::Write(ev, _) => {
                    outcomes.push(AppendOutcome::Appended(Position {
                        partition: 0,
                        offset: ev.offset,
                    }));
                    part.bytes += ev.size() as u64;
                    part.cache.push_back(ev);
                }
            }
        }
        part.next = nexts[0];
        part.last_ts = last_ts[0];
        s.clock = clock;
        if dropped > 0 {
            self.notice(Notice::Dropped {
                stream: name.clone(),
                count: dropped,
            });
        }
        self.append_succeeded(q.origin, outcomes);
        self.stream_grew(name);
        self.trim_ephemeral(name);
    }

    /// Removes from an ephemeral stream the prefix every subscription has acknowledged.
    pub(crate) fn trim_ephemeral(&mut self, name: &StreamName) {
        let Some(s) = self.streams.get(name) else {
            return;
        };
        if !s.config.is_ephemeral() {
            return;
        }
        let keep_from = s
            .subs
            .iter()
            .filter_map(|id| self.subs.get(id))
            .map(|sub| sub.retention_floor(0))
            .min();
        let Some(s) = self.streams.get_mut(name) else {
            return;
        };
        let part = &mut s.parts[0];
        let until = keep_from.unwrap_or(part.next).min(part.next);
        while part.first < until {
            let Some(e) = part.cache.pop_front() else {
                break;
            };
            part.bytes -= e.size() as u64;
            part.first += 1;
        }
    }

    // ---- read ------------------------------------------------------------------------------

    pub(crate) fn read_page(
        &mut self,
        origin: Origin,
        stream: StreamName,
        partition: u32,
        from: u64,
        max: u32,
    ) {
        let Some(s) = self
            .streams
            .get(&stream)
            .filter(|s| s.status != StreamStatus::Creating)
        else {
            return self.reply_to(origin, Err(Error::StreamNotFound(stream)));
        };
        if partition >= s.config.partitions {
            let e = InvalidInput::Range {
                field: "partition",
                value: partition.into(),
                min: 0,
                max: u64::from(s.config.partitions - 1),
            };
            return self.reply_to(origin, Err(e.into()));
        }
        if max == 0 || max > self.cfg.max_read_events {
            let e = InvalidInput::Range {
                field: "max",
                value: max.into(),
                min: 1,
                max: self.cfg.max_read_events.into(),
            };
            return self.reply_to(origin, Err(e.into()));
        }
        let part = &s.parts[partition as usize];
        if from < part.first {
            return self.reply_to(
                origin,
                Err(Error::Truncated {
                    first_available: part.first,
                }),
            );
        }
        if from > part.next {
            let e = InvalidInput::Range {
                field: "from",
                value: from,
                min: part.first,
                max: part.next,
            };
            return self.reply_to(origin, Err(e.into()));
        }
        let end = part.next.min(from.saturating_add(max.into()));
        if s.config.is_ephemeral() || from >= part.cache_start() {
            let events: Vec<EventRef> = (from..end)
                .filter_map(|o| part.cached(o).cloned())
                .collect();
            return self.reply_to(origin, Ok(Reply::Events(events)));
        }
        let req = StorageRequest::Read {
            stream: stream.clone(),
            partition,
            from,
            max,
        };
        self.storage(Op::ReadPage { origin, from }, req);
    }

    pub(crate) fn read_page_done(&mut self, p: PendingOp, result: StorageResult) {
        let Op::ReadPage { origin, from } = p.op else {
            return;
        };
        let r = match result {
            // A truncation whose outcome was unknown did happen: what it removed is gone.
            StorageResult::Ok(StorageReply::Events(ev))
                if ev.first().is_some_and(|e| e.offset > from) =>
            {
                let first_available = ev.first().map_or(from, |e| e.offset);
                Err(Error::Truncated { first_available })
            }
            StorageResult::Ok(StorageReply::Events(ev)) => Ok(Reply::Events(ev)),
            StorageResult::Ok(other) => Err(Error::Unavailable(format!(
                "store answered a read with {other:?}"
            ))),
            StorageResult::Err(e) => Err(unavailable(&e)),
            StorageResult::Unknown => Err(Error::Unavailable("read outcome unknown".into())),
        };
        self.reply_to(origin, r);
    }
}
