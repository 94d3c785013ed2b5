//! The engine: one pure, synchronous state machine that owns every decision.
//!
//! Drive it like this (after every input, drain the outputs):
//!
//! ```text
//! loop {
//!     while let Some(o) = engine.poll_output() { dispatch(o) }
//!     wait for: a storage completion, a client command, or engine.poll_timeout()
//!     engine.handle_input(now(), input)        // Input::Tick when only the deadline passed
//! }
//! ```
//!
//! Submodules hold one concern each: `streams` (create, delete, append pipeline, reads),
//! `dedup` (the idempotency window), `cursor` (one subscription position in one partition),
//! `subscriptions` (modes, delivery, acks, dead letters, resets), `groups` (consumer group
//! membership, generations, sticky assignment, commit strategies), `receipts` (read receipts,
//! unread timeouts, receipt cleanup), `retention` (retention runs and dedup id expiry),
//! `schemas` (the registry's commands and upcasting on delivery and replay), `relay` (the
//! broker relay of cross-service streams), `lag` (lag and stall figures),
//! `replay`, `recovery`, and
//! `resolve` (turning start positions into offsets).

mod cursor;
mod dedup;
mod groups;
mod lag;
mod receipts;
mod recovery;
mod relay;
mod replay;
mod resolve;
mod retention;
mod schemas;
mod streams;
mod subscriptions;

use crate::api::{Command, Input, Notice, Output, Reply};
use crate::config::Config;
use crate::error::{Error, InvalidInput};
use crate::ids::{ConnId, OpId, ReplayId, ReqId, SubId};
use crate::names::{ConsumerId, StreamName, SubscriptionName};
use crate::storage::{StorageError, StorageRequest, StorageResult};
use crate::time::{MonoNanos, Now};
use rand_chacha::ChaCha8Rng;
use rand_core::SeedableRng;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::sync::Arc;

pub(crate) use cursor::SlotKey;
use replay::Replay;
use resolve::Resolve;
pub use resolve::partition_offsets;
pub use schemas::{NEWER_THAN_REQUESTED, UPCAST_ERROR};
pub use streams::partition_of_key;
use streams::{AppendFlight, Stream};
use subscriptions::Subscription;

/// A client request waiting for its reply.
pub(crate) type Origin = (ConnId, ReqId);

/// What the engine does when a storage request completes.
#[derive(Debug)]
pub(crate) enum Op {
    Recover,
    LoadDedup {
        stream: StreamName,
    },
    CreateStream {
        name: StreamName,
        origin: Option<Origin>,
    },
    DeleteStream {
        name: StreamName,
        origin: Origin,
    },
    Append {
        stream: StreamName,
        flight: Box<AppendFlight>,
    },
    ReadPage {
        origin: Origin,
        from: u64,
    },
    FindOffset {
        resolve: u64,
        partition: u32,
    },
    SaveSubscription {
        sub: SubId,
        origin: Origin,
    },
    DeleteSubscription {
        sub: SubId,
        origin: Origin,
    },
    SaveCursor {
        key: cursor::CursorKey,
    },
    SaveReceipts {
        sub: SubId,
        /// The ack or mark waiting for it.
        wait: Option<u64>,
    },
    LoadReceipts {
        sub: SubId,
    },
    ExpireReceipts {
        sub: SubId,
    },
    /// A consumer's cursor records and receipts are being deleted (`RemoveConsumer`).
    DeleteCursor {
        sub: SubId,
        cursor: u32,
    },
    SaveSchemas {
        event_type: String,
        /// The highest version the request saves (every one below it is saved too).
        upto: u32,
        /// The registration waiting for it.
        origin: Option<Origin>,
    },
    LoadSchemas,
    ReceiptFetch {
        key: SlotKey,
    },
    RetentionFind {
        cut: u64,
    },
    Truncate {
        stream: StreamName,
        partition: u32,
        before: u64,
    },
    ExpireDedup {
        stream: StreamName,
    },
    SaveRelay {
        stream: StreamName,
        partition: u32,
    },
    RelayFetch {
        stream: StreamName,
        partition: u32,
    },
    Fetch {
        key: cursor::CursorKey,
        generation: u64,
    },
    ReplayRead {
        replay: ReplayId,
    },
}

/// A storage request in flight.
#[derive(Debug)]
pub(crate) struct PendingOp {
    op: Op,
    /// The request, kept so it can be repeated after `Unknown` or a background failure
    /// (cheap: appends share their events through an `Arc`).
    retry: Option<StorageRequest>,
    /// Times this request was sent before.
    attempt: u32,
    /// An earlier attempt ended `Unknown`: the write may already be applied.
    uncertain: bool,
}

/// A deadline.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Timer {
    /// An in-flight delivery's ack wait ends.
    AckWait(SlotKey),
    /// A nacked delivery's delay ends.
    Redeliver(SlotKey),
    /// A failed storage request is sent again.
    Retry(u64),
    /// A replay may send again (rate limit) or report progress.
    Replay(ReplayId),
    /// A stream's group commit stops waiting for more appends.
    Linger(StreamName),
    /// A consumer group member's session may have timed out.
    Session(SubId, ConsumerId),
    /// A consumer group's periodic commit is due.
    Commit(SubId),
    /// A read receipt's unread timeout (one per delivery).
    Unread(SlotKey),
    /// A read receipt subscription's cleanup of old receipts.
    ReceiptCleanup(SubId),
    /// Retention and the removal of expired dedup ids (engine-wide).
    Cleanup,
    /// A cross-service stream's relay may send again after a failed publish.
    Relay(StreamName),
    /// A detached broadcast or read receipt consumer's position expires (`consumer_expiry`).
    ConsumerExpiry(SubId, ConsumerId),
}

/// How far the engine is in its life.
#[derive(Debug, PartialEq, Eq)]
enum Phase {
    /// Loading state from the store: streams still loading dedup ids.
    Recovering { dedup_loading: usize, loaded: bool },
    /// Serving.
    Ready,
}

/// What a connection holds in the engine.
#[derive(Debug, Default)]
struct Conn {
    attached: BTreeSet<(SubId, ConsumerId)>,
    replays: BTreeSet<ReplayId>,
}

/// A save barrier: a reply (to an ack, commit, mark-read or reset) or held outputs waiting
/// until cursor and receipt saves are durable.
#[derive(Debug)]
struct AckWait {
    /// The command to answer (`None`: only outputs to release).
    origin: Option<Origin>,
    /// Outputs held until the saves are done (at-most-once deliveries), with the generation
    /// of each cursor they move: a reset meanwhile voids them.
    release: Vec<Output>,
    generations: Vec<(cursor::CursorKey, u64)>,
    /// Saves still to come.
    saves: u32,
    /// The answer once they are done.
    reply: Reply,
}

/// Tributary's engine. See the module documentation for how to drive it.
#[derive(Debug)]
pub struct Engine {
    cfg: Config,
    rng: ChaCha8Rng,
    now: Now,
    phase: Phase,
    queued: VecDeque<(ConnId, ReqId, Command)>,
    streams: BTreeMap<StreamName, Stream>,
    subs: BTreeMap<SubId, Subscription>,
    sub_names: BTreeMap<(StreamName, SubscriptionName), SubId>,
    next_sub: u64,
    ops: BTreeMap<OpId, PendingOp>,
    next_op: u64,
    retries: BTreeMap<u64, PendingOp>,
    next_retry: u64,
    timers: BTreeSet<(MonoNanos, Timer)>,
    out: VecDeque<Output>,
    conns: BTreeMap<ConnId, Conn>,
    replays: BTreeMap<ReplayId, Replay>,
    next_replay: u64,
    resolves: BTreeMap<u64, Resolve>,
    next_resolve: u64,
    ack_waits: BTreeMap<u64, AckWait>,
    next_ack_wait: u64,
    /// Cursors being removed whose records are not being deleted yet: they wait until no
    /// storage request about them is in flight.
    removals: BTreeSet<(SubId, u32)>,
    /// Streams with queued appends whose write is built at the next `poll_output` (group
    /// commit: every append handled before the driver polls goes into one write).
    unflushed: BTreeSet<StreamName>,
    /// First number of every stream's writes in this engine's life (from the seed and the
    /// start time), so that a store never confuses a write with one of an earlier life.
    write_epoch: u64,
    /// Streams created or recovered in this engine's life: each gets its own range of write
    /// numbers, so a stream deleted and created again never reuses one.
    streams_made: u64,
    seed: u64,
    /// Publishes waiting for the broker: stream, partition, offset.
    publishes: BTreeMap<OpId, (StreamName, u32, u64)>,
    /// Event types, versions and upcasters.
    schemas: crate::schema::SchemaRegistry,
    /// Per event type, the versions known saved in the store (1..=n).
    schemas_saved: BTreeMap<String, u32>,
    /// When the retention run is due, if its timer is set.
    cleanup_due: Option<MonoNanos>,
    /// Retention cuts being worked out, by number.
    cuts: BTreeMap<u64, retention::Cut>,
    next_cut: u64,
    /// PLANTED BUG switch (test-only, feature `planted-bugs`).
    #[cfg(feature = "planted-bugs")]
    pub(crate) planted: Option<crate::PlantedBug>,
}

impl Engine {
    /// A new engine. It starts by recovering its state from the store: the first output is
    /// `StorageRequest::Recover`. Client commands sent meanwhile are held (up to
    /// `max_queued_commands`) and served once recovery ends.
    pub fn new(cfg: Config, seed: u64, now: Now) -> Result<Engine, InvalidInput> {
        validate_config(&cfg)?;
        let mut e = Engine {
            cfg,
            rng: ChaCha8Rng::seed_from_u64(seed),
            now,
            phase: Phase::Recovering {
                dedup_loading: 0,
                loaded: false,
            },
            queued: VecDeque::new(),
            streams: BTreeMap::new(),
            subs: BTreeMap::new(),
            sub_names: BTreeMap::new(),
            next_sub: 1,
            ops: BTreeMap::new(),
            next_op: 1,
            retries: BTreeMap::new(),
            next_retry: 1,
            timers: BTreeSet::new(),
            out: VecDeque::new(),
            conns: BTreeMap::new(),
            replays: BTreeMap::new(),
            next_replay: 1,
            resolves: BTreeMap::new(),
            next_resolve: 1,
            ack_waits: BTreeMap::new(),
            next_ack_wait: 1,
            removals: BTreeSet::new(),
            unflushed: BTreeSet::new(),
            streams_made: 0,
            write_epoch: xxhash_rust::xxh3::xxh3_64_with_seed(
                &[now.mono.0.to_le_bytes(), now.wall.0.to_le_bytes()].concat(),
                seed,
            ),
            seed,
            publishes: BTreeMap::new(),
            schemas: crate::schema::SchemaRegistry::default(),
            schemas_saved: BTreeMap::new(),
            cleanup_due: None,
            cuts: BTreeMap::new(),
            next_cut: 1,
            #[cfg(feature = "planted-bugs")]
            planted: None,
        };
        e.storage(Op::Recover, StorageRequest::Recover);
        Ok(e)
    }

    /// Test-only (feature `planted-bugs`): breaks one rule of the core from now on, so a test
    /// can show that the simulator catches it. `None` restores the real behaviour.
    #[cfg(feature = "planted-bugs")]
    #[doc(hidden)]
    pub fn plant_bug(&mut self, bug: Option<crate::PlantedBug>) {
        self.planted = bug;
        self.schemas.skip_hop = bug == Some(crate::PlantedBug::UpcastSkipsHop);
        self.schemas.rename_drops_parent = bug == Some(crate::PlantedBug::RenameDropsParent);
    }

    /// The engine's configuration.
    pub fn config(&self) -> &Config {
        &self.cfg
    }

    /// Whether recovery is over and commands are served.
    pub fn is_ready(&self) -> bool {
        self.phase == Phase::Ready
    }

    /// Handles one input at `now`, then fires every timer that is due.
    pub fn handle_input(&mut self, now: Now, input: Input) {
        self.now = Now {
            mono: self.now.mono.max(now.mono),
            wall: now.wall,
        };
        match input {
            Input::Client { conn, req, cmd } => {
                if self.phase == Phase::Ready {
                    self.command(conn, req, cmd);
                } else if self.queued.len() >= self.cfg.max_queued_commands {
                    let limit = self.cfg.max_queued_commands as u64;
                    self.reply(
                        conn,
                        req,
                        Err(Error::Busy {
                            what: "commands held during recovery",
                            limit,
                        }),
                    );
                } else {
                    self.queued.push_back((conn, req, cmd));
                }
            }
            Input::ConnClosed { conn } => self.conn_closed(conn),
            Input::StorageDone { op, result } => self.storage_done(op, result),
            Input::PublishDone { op, result } => self.publish_done(op, result),
            Input::Tick => {}
        }
        self.fire_timers();
    }

    /// The next thing the driver must do, if any. Drain it after every input.
    pub fn poll_output(&mut self) -> Option<Output> {
        while let Some(name) = self.unflushed.pop_first() {
            self.flush(&name);
        }
        self.out.pop_front()
    }

    /// When the engine next needs `Input::Tick`: now while outputs wait, else the earliest timer.
    pub fn poll_timeout(&self) -> Option<MonoNanos> {
        if !self.out.is_empty() || !self.unflushed.is_empty() {
            return Some(self.now.mono);
        }
        self.timers.first().map(|(t, _)| (*t).max(self.now.mono))
    }

    fn command(&mut self, conn: ConnId, req: ReqId, cmd: Command) {
        let needs_storage = !matches!(
            cmd,
            Command::Ack { .. }
                | Command::Nack { .. }
                | Command::Term { .. }
                | Command::Attach { .. }
                | Command::Detach { .. }
                | Command::DescribeStream(_)
                | Command::DescribeSubscription { .. }
                | Command::ListSubscriptions(_)
                | Command::ListStreams
                | Command::CancelReplay(_)
                // Never refused (a lost grant would stall its replay); it starts at most one
                // read of that replay, as the replay's timer does.
                | Command::ReplayCredit { .. }
                | Command::Heartbeat { .. }
                | Command::Commit { .. }
                | Command::MarkRead { .. }
                | Command::ReceiptStatus { .. }
                | Command::ListSchemas
        );
        if needs_storage && self.ops.len() >= self.cfg.max_storage_ops {
            let limit = self.cfg.max_storage_ops as u64;
            self.reply(
                conn,
                req,
                Err(Error::Busy {
                    what: "storage requests in flight",
                    limit,
                }),
            );
            return;
        }
        let origin = (conn, req);
        match cmd {
            Command::CreateStream(c) => self.create_stream(origin, c),
            Command::DeleteStream(n) => self.delete_stream(origin, n),
            Command::DescribeStream(n) => {
                let r = self.describe_stream(&n).map(Reply::Stream);
                self.reply(conn, req, r);
            }
            Command::ListStreams => {
                let list = self
                    .streams
                    .keys()
                    .filter_map(|n| self.describe_stream(n).ok())
                    .collect();
                self.reply(conn, req, Ok(Reply::Streams(list)));
            }
            Command::Append(a) => self.append(origin, a),
            Command::Read {
                stream,
                partition,
                from,
                max,
            } => self.read_page(origin, stream, partition, from, max),
            Command::CreateSubscription(c) => self.create_subscription(origin, c),
            Command::DeleteSubscription {
                stream,
                subscription,
            } => self.delete_subscription(origin, stream, subscription),
            Command::DescribeSubscription {
                stream,
                subscription,
            } => {
                let r = self
                    .describe_subscription(&stream, &subscription)
                    .map(|i| Reply::Subscription(Box::new(i)));
                self.reply(conn, req, r);
            }
            Command::ListSubscriptions(stream) => {
                let r = self.list_subscriptions(&stream).map(Reply::Subscriptions);
                self.reply(conn, req, r);
            }
            Command::Attach {
                stream,
                subscription,
                consumer,
                max_in_flight,
            } => self.attach(origin, stream, subscription, consumer, max_in_flight),
            Command::Detach {
                stream,
                subscription,
                consumer,
            } => self.detach(origin, stream, subscription, consumer),
            Command::Ack {
                stream,
                subscription,
                consumer,
                positions,
            } => self.ack(origin, stream, subscription, consumer, positions),
            Command::Nack {
                stream,
                subscription,
                consumer,
                positions,
                delay,
                error,
            } => self.nack(
                origin,
                stream,
                subscription,
                consumer,
                positions,
                delay,
                error,
            ),
            Command::Term {
                stream,
                subscription,
                consumer,
                positions,
                reason,
            } => self.term(origin, stream, subscription, consumer, positions, reason),
            Command::ResetSubscription {
                stream,
                subscription,
                consumer,
                to,
            } => self.reset(origin, stream, subscription, consumer, to),
            Command::RemoveConsumer {
                stream,
                subscription,
                consumer,
            } => self.remove_consumer(origin, stream, subscription, consumer),
            Command::Replay {
                stream,
                from,
                options,
            } => self.start_replay(origin, stream, from, options),
            Command::CancelReplay(id) => self.cancel_replay(origin, id),
            Command::ReplayCredit { replay, batches } => {
                self.replay_credit(origin, replay, batches)
            }
            Command::Heartbeat {
                stream,
                subscription,
                consumer,
            } => self.heartbeat(origin, stream, subscription, consumer),
            Command::Commit {
                stream,
                subscription,
                consumer,
                generation,
                offsets,
            } => self.commit(origin, stream, subscription, consumer, generation, offsets),
            Command::MarkRead {
                stream,
                subscription,
                consumer,
                read,
            } => self.mark_read(origin, stream, subscription, consumer, read),
            Command::ReceiptStatus {
                stream,
                subscription,
                consumer,
                position,
            } => self.receipt_status(origin, stream, subscription, consumer, position),
            Command::RegisterSchema(reg) => self.register_schema_cmd(origin, reg),
            Command::ListSchemas => {
                let list = self.schemas.describe();
                self.reply(conn, req, Ok(Reply::Schemas(list)));
            }
        }
    }

    fn conn_closed(&mut self, conn: ConnId) {
        self.queued.retain(|(c, _, _)| *c != conn);
        let Some(c) = self.conns.remove(&conn) else {
            return;
        };
        let mut subs = BTreeSet::new();
        for (sub, consumer) in c.attached {
            self.release_consumer(sub, &consumer);
            subs.insert(sub);
        }
        for sub in subs {
            self.pump(sub);
        }
        for id in c.replays {
            self.replays.remove(&id);
        }
    }

    fn conn(&mut self, conn: ConnId) -> &mut Conn {
        self.conns.entry(conn).or_default()
    }

    // ---- outputs -------------------------------------------------------------------------

    pub(crate) fn reply(&mut self, conn: ConnId, req: ReqId, reply: Result<Reply, Error>) {
        self.out.push_back(Output::Reply { conn, req, reply });
    }

    fn reply_to(&mut self, origin: Origin, reply: Result<Reply, Error>) {
        self.reply(origin.0, origin.1, reply);
    }

    fn notice(&mut self, n: Notice) {
        self.out.push_back(Output::Notice(n));
    }

    // ---- storage -------------------------------------------------------------------------

    /// Sends a storage request, keeping a copy so it can be repeated.
    fn storage(&mut self, op: Op, req: StorageRequest) -> OpId {
        self.storage_attempt(
            PendingOp {
                op,
                retry: None,
                attempt: 0,
                uncertain: false,
            },
            req,
        )
    }

    pub(crate) fn storage_attempt(&mut self, mut p: PendingOp, req: StorageRequest) -> OpId {
        let id = OpId(self.next_op);
        self.next_op += 1;
        p.retry = Some(req.clone());
        self.ops.insert(id, p);
        self.out.push_back(Output::Storage { op: id, req });
        id
    }

    /// Schedules a failed request to be sent again after a back-off.
    fn retry_later(&mut self, mut p: PendingOp, what: &'static str, error: String) {
        p.attempt += 1;
        let delay = Config::backoff(
            self.cfg.storage_retry_base,
            self.cfg.storage_retry_max,
            p.attempt - 1,
        );
        let id = self.next_retry;
        self.next_retry += 1;
        self.retries.insert(id, p);
        self.timers
            .insert((self.now.mono.saturating_add(delay), Timer::Retry(id)));
        self.notice(Notice::StorageRetry { what, error });
    }

    fn fire_retry(&mut self, id: u64) {
        let Some(mut p) = self.retries.remove(&id) else {
            return;
        };
        let Some(mut req) = p.retry.take() else {
            return;
        };
        if !self.op_still_wanted(&p.op) {
            return;
        }
        // A repeated append behind a write that definitely failed cannot have committed: it
        // failed too, and is not sent again.
        if let Op::Append { stream, .. } = &p.op
            && self.stream_failing(stream)
        {
            let stream = stream.clone();
            return self.fail_behind_failure(&stream, p);
        }
        // A repeated append names the write now before it in the pipeline (the one it named
        // may have committed since).
        if let (Op::Append { stream, .. }, StorageRequest::Append(w)) = (&p.op, &req) {
            let after = self.write_after(stream, w.seq);
            if after != w.after {
                let w = crate::storage::AppendWrite {
                    after,
                    ..(**w).clone()
                };
                req = StorageRequest::Append(Arc::new(w));
            }
        }
        self.storage_attempt(p, req);
    }

    /// Whether a request to be repeated still has a purpose (its subject may be gone).
    fn op_still_wanted(&self, op: &Op) -> bool {
        match op {
            Op::SaveCursor { key } | Op::Fetch { key, .. } => self.subs.contains_key(&key.sub),
            Op::SaveReceipts { sub, .. }
            | Op::ExpireReceipts { sub }
            | Op::DeleteCursor { sub, .. }
            | Op::LoadReceipts { sub } => self.subs.contains_key(sub),
            Op::ReceiptFetch { key } => self.subs.contains_key(&key.key.sub),
            Op::RetentionFind { cut } => self.cuts.contains_key(cut),
            Op::Truncate { stream, .. }
            | Op::ExpireDedup { stream }
            | Op::SaveRelay { stream, .. }
            | Op::RelayFetch { stream, .. } => self.streams.contains_key(stream),
            Op::ReplayRead { replay } => self.replays.contains_key(replay),
            _ => true,
        }
    }

    fn storage_done(&mut self, op: OpId, result: StorageResult) {
        let Some(p) = self.ops.remove(&op) else {
            return;
        };
        // A cursor being removed may have waited for this request.
        let about = match &p.op {
            Op::SaveCursor { key } | Op::Fetch { key, .. } => Some(key.sub),
            Op::ReceiptFetch { key } => Some(key.key.sub),
            Op::SaveReceipts { sub, .. } => Some(*sub),
            _ => None,
        }
        .filter(|id| {
            self.removals
                .range((*id, 0)..=(*id, u32::MAX))
                .next()
                .is_some()
        });
        self.storage_op_done(p, result);
        if let Some(id) = about {
            self.advance_removals(id);
        }
    }

    fn storage_op_done(&mut self, p: PendingOp, result: StorageResult) {
        match p.op {
            Op::Recover | Op::LoadDedup { .. } => self.recovery_done(p, result),
            Op::CreateStream { .. } | Op::DeleteStream { .. } => self.stream_op_done(p, result),
            Op::Append { .. } => self.append_done(p, result),
            Op::ReadPage { .. } => self.read_page_done(p, result),
            Op::FindOffset { .. } => self.find_offset_done(p, result),
            Op::SaveSubscription { .. } | Op::DeleteSubscription { .. } => {
                self.subscription_op_done(p, result)
            }
            Op::SaveCursor { .. } => self.save_cursor_done(p, result),
            Op::DeleteCursor { .. } => self.delete_cursor_done(p, result),
            Op::SaveReceipts { .. } | Op::ExpireReceipts { .. } => self.receipts_op_done(p, result),
            Op::LoadReceipts { .. } | Op::LoadSchemas => self.recovery_done(p, result),
            Op::SaveSchemas { .. } => self.save_schemas_done(p, result),
            Op::ReceiptFetch { .. } => self.receipt_fetch_done(p, result),
            Op::RetentionFind { .. } | Op::Truncate { .. } | Op::ExpireDedup { .. } => {
                self.retention_op_done(p, result)
            }
            Op::SaveRelay { .. } | Op::RelayFetch { .. } => self.relay_op_done(p, result),
            Op::Fetch { .. } => self.fetch_done(p, result),
            Op::ReplayRead { .. } => self.replay_read_done(p, result),
        }
    }

    // ---- timers --------------------------------------------------------------------------

    fn fire_timers(&mut self) {
        while let Some((at, _)) = self.timers.first() {
            if *at > self.now.mono {
                break;
            }
            let Some((at, t)) = self.timers.pop_first() else {
                break;
            };
            match t {
                Timer::AckWait(k) => self.ack_wait_expired(k),
                Timer::Redeliver(k) => self.redeliver_due(k),
                Timer::Retry(id) => self.fire_retry(id),
                Timer::Replay(id) => self.replay_wake(id),
                Timer::Linger(name) => self.linger_expired(&name),
                Timer::Session(sub, consumer) => self.session_expired(sub, consumer),
                Timer::Commit(sub) => self.periodic_commit(sub),
                Timer::Unread(key) => self.unread_expired(at, key),
                Timer::ReceiptCleanup(sub) => self.receipt_cleanup(sub),
                Timer::Cleanup => self.cleanup_due_now(),
                Timer::Relay(name) => self.relay_wake(&name),
                Timer::ConsumerExpiry(sub, consumer) => self.consumer_expired(at, sub, consumer),
            }
        }
    }

    /// The first write number of a stream being created or recovered (see `streams_made`).
    pub(crate) fn first_write_seq(&mut self) -> u64 {
        self.streams_made += 1;
        self.write_epoch.wrapping_add(self.streams_made << 32)
    }

    /// Number of timers set (for tests of boundedness), not counting the one engine-wide
    /// retention timer (see `retention_due`).
    #[doc(hidden)]
    pub fn timer_count(&self) -> usize {
        self.timers.len() - usize::from(self.cleanup_due.is_some())
    }

    /// When the next retention run is due, if one is set.
    #[doc(hidden)]
    pub fn retention_due(&self) -> Option<MonoNanos> {
        self.cleanup_due
    }

    /// Number of storage requests in flight.
    pub fn storage_in_flight(&self) -> usize {
        self.ops.len()
    }

    /// Bytes held by the dedup windows of all streams (for the memory benchmark).
    #[doc(hidden)]
    pub fn dedup_heap_bytes(&self) -> usize {
        self.streams.values().map(|s| s.dedup.heap_bytes()).sum()
    }

    /// Ids held by the dedup windows of all streams.
    #[doc(hidden)]
    pub fn dedup_ids(&self) -> usize {
        self.streams.values().map(|s| s.dedup.len()).sum()
    }
}

/// Treats a storage failure as the client sees it.
pub(crate) fn unavailable(e: &StorageError) -> Error {
    Error::Unavailable(e.to_string())
}

fn validate_config(c: &Config) -> Result<(), InvalidInput> {
    let positive: [(&'static str, u64); 13] = [
        ("max_batch_events", c.max_batch_events as u64),
        ("max_batch_bytes", c.max_batch_bytes as u64),
        ("max_streams", c.max_streams as u64),
        ("max_partitions", c.max_partitions as u64),
        ("max_subscriptions", c.max_subscriptions as u64),
        ("max_write_events", c.max_write_events as u64),
        ("read_batch_events", c.read_batch_events as u64),
        ("max_ack_pending", c.max_ack_pending),
        ("max_storage_ops", c.max_storage_ops as u64),
        ("max_read_events", c.max_read_events as u64),
        ("recovery_page", c.recovery_page as u64),
        ("default_max_in_flight", c.default_max_in_flight as u64),
        (
            "max_append_writes_in_flight",
            c.max_append_writes_in_flight as u64,
        ),
    ];
    for (field, v) in positive {
        if v == 0 {
            return Err(InvalidInput::Range {
                field,
                value: 0,
                min: 1,
                max: u64::MAX,
            });
        }
    }
    if c.cleanup_interval.is_zero() {
        return Err(InvalidInput::Range {
            field: "cleanup_interval (ms)",
            value: 0,
            min: 1,
            max: u64::MAX,
        });
    }
    if let Some(w) = &c.cleanup_window {
        w.validate()?;
    }
    c.default_retention.validate()?;
    c.dead_letter_retention.validate()?;
    if c.max_write_events < c.max_batch_events {
        return Err(InvalidInput::Conflict {
            field: "max_write_events",
            reason: "must be at least max_batch_events (one append is written whole)",
        });
    }
    Ok(())
}

/// A shared event.
pub(crate) type EventRef = Arc<crate::event::Event>;

impl Engine {
    /// The id and correlation id of an event the tail cache still holds (for notices).
    pub(crate) fn cached_ids(
        &self,
        stream: &StreamName,
        position: crate::api::Position,
    ) -> Option<(crate::ids::EventId, Option<String>)> {
        let e = self
            .streams
            .get(stream)?
            .parts
            .get(position.partition as usize)?
            .cached(position.offset)?;
        Some((e.event_id, e.correlation_id.clone()))
    }
}
