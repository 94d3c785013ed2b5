//! The checker: a reference model of SPEC plus the invariants, fed with exactly what crosses
//! an engine's boundary: every `(Now, Input)` it is handed and every `Output` it produces.
//! Because it needs nothing else, it checks a simulated run step by step and a recorded
//! journal alike. The first broken rule is kept as a [`Violation`].
//!
//! Oracles (names as they appear in failures):
//!
//! - `append-committed`: an append is answered only after the store committed its write, with
//!   the content the producer sent, at the partition its key maps to.
//! - `offsets-dense`: every write starts at the committed head of its partition and is dense;
//!   the store never refuses a write as conflicting.
//! - `dedup`: an id committed within its dedup window is answered `Duplicate` with its original
//!   position, and `Duplicate` always names where the id was written.
//! - `expected-offset`: an append with `expected_offset` lands there.
//! - `exactly-once`: an exactly-once stream is never created without a dedup window, and an
//!   append to one is refused for a missing `event_id` exactly when one of its events has
//!   none (SPEC 5).
//! - `durable`: after a restart, every committed event, subscription and saved position is
//!   recovered; stream heads and `describe` agree with the model.
//! - `readable`: a read returns every committed event of its range, dense and unchanged.
//! - `ack-durable`: an ack is answered only once a saved position covers it.
//! - `ack-floor`: saved positions never lose an acknowledged offset and the floor a describe
//!   shows never moves back (except by a reset).
//! - `no-redelivery`: an acknowledged (or dead-lettered) event is never delivered again on its
//!   cursor, and an at-most-once event at most once per engine life.
//! - `exclusive`: an event is in flight at one consumer at a time, redelivered only after its
//!   ack wait, nack delay or dead-letter failure, with attempts counting up.
//! - `credit`: no consumer has more than `max_in_flight` events in flight.
//! - `group-owner`: in a consumer group, no partition has two owners in one generation.
//! - `session-expiry`: a consumer group member not heard from (no command of its own: attach,
//!   heartbeat, ack, nack, term, commit) for its `session_timeout` is expired: told
//!   `member: false` and detached (see `groups.rs`).
//! - `holder-only`: in an exclusive subscription, a nack or term naming an event in flight to
//!   another consumer is refused (`NotHolder`), and only such a one.
//! - `ordered-by-key`: never two events of one key pending at once on an ordered subscription.
//! - `delivered-to-attached`: deliveries go to consumers attached on that connection.
//! - `ephemeral-bounds`: an ephemeral stream never holds more than its `max_events` /
//!   `max_bytes`.
//! - `receipt-delivered`: a read receipt (delivered or read) and an unread timeout only
//!   concern events delivered to that consumer: a read receipt implies a delivery.
//! - `receipt-unread`: `ReceiptStatus` shows as unread exactly the model's receipts delivered
//!   and not read, the model's last read offsets and the model's receipt of the event asked
//!   about; a read receipt never gets an unread timeout.
//! - `receipts-durable`: the same, after a restart, for receipts as the store gave them back
//!   (not written since): receipts survive restarts.
//! - `unread-timeout-once`: an unread timeout fires at most once per delivery (also across a
//!   restart, once its firing is stored).
//! - `retention-prefix`, `retention-limits`, `retention-keeps-unconsumed`: see
//!   `retention.rs` (a cut never passes the head, removes only what the policy allows and,
//!   with `keep_unconsumed`, nothing a subscription has not acknowledged).
//! - `schemas-durable`: a schema registration is answered only once a save of it committed;
//!   every acknowledged version is given back at recovery and `ListSchemas` shows exactly the
//!   model's registry; an acknowledged version registered again unchanged is accepted.
//! - `schema-compatible`: a version the engine registers is compatible with the one before,
//!   and a registration refused as incompatible is not, naming a field that may be missing
//!   (by the model's own reading of SPEC 7's rule, in `schemas.rs`: dotted paths, nested
//!   `required` lists).
//! - `upcast`: a delivered or replayed event equals the model's shaping of the stored one to
//!   the versions its reader asks for (upcast hop by hop by the model's own rules, or marked
//!   `x-schema-newer-than-requested` / `x-upcast-error`, or left out when strict).
//! - `relay-order`, `relay-confirmed`: see `relay.rs` (publishes in offset order per
//!   partition, duplicates with the same message id, positions saved only over confirmed
//!   offsets and never back).
//! - `replay`: replays send matching events in order, within their range, filter, rate and
//!   `max_events`, and a finished replay of a persistent stream sent everything committed
//!   before it started.

mod groups;
mod model;
mod receipts;
mod relay;
mod replays;
mod retention;
mod schemas;
mod streams;
mod subs;

use model::{Attachment, ReplayM, StreamM, SubM};
pub use model::{digest_event, digest_new};
use std::collections::BTreeMap;
use tributary_core::{
    Command, Config, ConnId, ConsumerId, DeliverySemantics, Input, MonoNanos, Now, OpId, Output,
    ReplayId, ReqId, StorageRequest, StorageResult, StreamName, SubId, SubscriptionName,
};

/// A broken rule: which oracle, and what it saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// The oracle's name (see the module documentation).
    pub oracle: &'static str,
    /// What happened.
    pub detail: String,
}

impl std::fmt::Display for Violation {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "[{}] {}", self.oracle, self.detail)
    }
}

pub(crate) type SubKey = (StreamName, SubscriptionName);

/// A command waiting for its reply, with what the model knew when it was sent.
#[derive(Debug, Clone)]
pub(crate) struct Sent {
    cmd: Command,
    /// The stream's heads when it was sent (reads, replays).
    heads: Vec<u64>,
    /// Acks: the subscription's reset count when it was sent.
    epoch: u64,
    /// Nacks and terms: what the holder rule expects of the reply.
    holder: groups::HolderCheck,
}

/// The reference model and the oracles of one node (across its restarts).
#[derive(Debug)]
pub struct Checker {
    cfg: Config,
    now: Now,
    max_wall: u64,
    violation: Option<Violation>,
    requests: BTreeMap<(ConnId, ReqId), Sent>,
    ops: BTreeMap<OpId, StorageRequest>,
    streams: BTreeMap<StreamName, StreamM>,
    sub_ids: BTreeMap<SubId, SubKey>,
    subs: BTreeMap<SubKey, SubM>,
    attached: BTreeMap<(SubKey, ConsumerId), Attachment>,
    replays: BTreeMap<ReplayId, ReplayM>,
    dead_letters: Vec<(StreamName, SubscriptionName, tributary_core::Position)>,
    /// Consumer groups: each member's partitions, as last told.
    owned: BTreeMap<(SubKey, ConsumerId), Vec<u32>>,
    /// Consumer groups: the owner of each partition in the latest generation told (cleared
    /// when the engine recovers: generations count again in each life).
    generation_owners: BTreeMap<SubKey, (u64, BTreeMap<u32, ConsumerId>)>,
    lives: u64,
    /// ReadReceipt subscriptions: what each consumer was given and its receipts.
    receipts: BTreeMap<(SubKey, ConsumerId), receipts::RcConsumer>,
    /// ReadReceipt subscriptions whose receipts were reloaded in this life and not written
    /// since.
    receipts_reloaded: std::collections::BTreeSet<SubKey>,
    /// The schema registry the engine holds: per event type, versions 1..=n.
    registry: BTreeMap<String, Vec<tributary_core::SchemaRecord>>,
    /// Schema versions whose save committed (the store's content).
    schemas_committed: BTreeMap<(String, u32), tributary_core::SchemaRecord>,
    /// Schema versions whose registration was answered `Done`.
    schemas_acked: BTreeMap<(String, u32), tributary_core::SchemaRecord>,
    /// Cross-service streams: the relay of each partition.
    relays: BTreeMap<StreamName, BTreeMap<u32, relay::RelayPartM>>,
    /// Publishes waiting for the broker: stream, partition, offset.
    publishes: BTreeMap<OpId, (StreamName, u32, u64)>,
    /// Detaches waiting for their reply, with the attachment they ended.
    detaching: BTreeMap<(ConnId, ReqId), ((SubKey, ConsumerId), Attachment)>,
    /// Consumer groups: when each member (attached in this life) was last heard from, at the
    /// latest.
    group_heard: BTreeMap<(SubKey, ConsumerId), MonoNanos>,
}

impl Checker {
    /// A checker for engines with this configuration.
    pub fn new(cfg: Config) -> Checker {
        Checker {
            cfg,
            now: Now::default(),
            max_wall: 0,
            violation: None,
            requests: BTreeMap::new(),
            ops: BTreeMap::new(),
            streams: BTreeMap::new(),
            sub_ids: BTreeMap::new(),
            subs: BTreeMap::new(),
            attached: BTreeMap::new(),
            replays: BTreeMap::new(),
            dead_letters: Vec::new(),
            owned: BTreeMap::new(),
            generation_owners: BTreeMap::new(),
            lives: 0,
            receipts: BTreeMap::new(),
            receipts_reloaded: std::collections::BTreeSet::new(),
            registry: BTreeMap::new(),
            schemas_committed: BTreeMap::new(),
            schemas_acked: BTreeMap::new(),
            relays: BTreeMap::new(),
            publishes: BTreeMap::new(),
            detaching: BTreeMap::new(),
            group_heard: BTreeMap::new(),
        }
    }

    /// The first violation seen, if any.
    pub fn violation(&self) -> Option<&Violation> {
        self.violation.as_ref()
    }

    /// Takes the first violation seen.
    pub fn take_violation(&mut self) -> Option<Violation> {
        self.violation.take()
    }

    pub(crate) fn fail(&mut self, oracle: &'static str, detail: String) {
        if self.violation.is_none() {
            self.violation = Some(Violation { oracle, detail });
        }
    }

    /// A new engine starts (`Engine::new` at `now`): everything in memory of the last one is
    /// gone; what the store holds stays.
    pub fn on_start(&mut self, now: Now) {
        self.lives += 1;
        self.now = Now {
            mono: self.now.mono.max(now.mono),
            wall: now.wall,
        };
        self.max_wall = self.max_wall.max(now.wall.0);
        self.requests.clear();
        self.detaching.clear();
        for s in self.subs.values_mut() {
            // No delete is in flight in a new engine.
            s.deleting = false;
            s.delete_uncertain = false;
        }
        self.ops.clear();
        self.attached.clear();
        self.group_heard.clear();
        self.replays.clear();
        self.registry.clear();
        self.publishes.clear();
        self.receipts_restart();
        let gone: Vec<StreamName> = self
            .streams
            .iter()
            .filter(|(_, s)| s.ephemeral())
            .map(|(n, _)| n.clone())
            .collect();
        for n in gone {
            self.drop_stream(&n);
        }
        for sub in self.subs.values_mut() {
            let resetting = sub.resetting > 0;
            sub.resetting = 0;
            for c in sub.cursors.values_mut() {
                for p in c.parts.values_mut() {
                    p.forget_volatile();
                    if resetting {
                        p.amo_ever.clear();
                        // The reset may or may not have become durable.
                        p.saved = None;
                        p.acked.clear();
                        c.reset = true;
                    }
                }
            }
        }
    }

    /// Engine lives seen so far.
    pub fn lives(&self) -> u64 {
        self.lives
    }

    /// The engine is handed `input` at `now` (call before `Engine::handle_input`).
    pub fn on_input(&mut self, now: Now, input: &Input) {
        self.now = Now {
            mono: self.now.mono.max(now.mono),
            wall: now.wall,
        };
        self.max_wall = self.max_wall.max(now.wall.0);
        self.sessions_due();
        match input {
            Input::Client { conn, req, cmd } => self.command_in(*conn, *req, cmd),
            Input::ConnClosed { conn } => self.conn_closed(*conn),
            Input::StorageDone { op, result } => {
                if let Some(req) = self.ops.remove(op) {
                    self.storage_done(&req, result);
                }
            }
            Input::PublishDone { op, result } => self.publish_done(*op, result),
            Input::Tick => {}
        }
    }

    /// The engine produced `out`.
    pub fn on_output(&mut self, out: &Output) {
        match out {
            Output::Storage { op, req } => {
                if let StorageRequest::SaveReceipts(records) = req {
                    self.receipts_saved(records);
                }
                if let StorageRequest::SaveSchemas(records) = req {
                    self.schemas_out(records);
                }
                if let StorageRequest::SaveRelay(rec) = req {
                    self.relay_save_out(rec);
                }
                if let StorageRequest::Truncate {
                    stream,
                    partition,
                    before,
                } = req
                {
                    self.truncate_out(stream, *partition, *before);
                }
                self.storage_out(req);
                self.ops.insert(*op, req.clone());
            }
            Output::Reply { conn, req, reply } => {
                if let Some((key, a)) = self.detaching.remove(&(*conn, *req))
                    && matches!(
                        reply,
                        Err(tributary_core::Error::SubscriptionNotFound { .. })
                    )
                    && self
                        .subs
                        .get(&key.0)
                        .is_some_and(|s| !s.delete_requested || s.exists)
                {
                    self.attached.entry(key).or_insert(a);
                }
                if let Some(sent) = self.requests.remove(&(*conn, *req)) {
                    self.reply(*conn, sent, reply);
                }
            }
            Output::Deliver {
                conn,
                stream,
                subscription,
                consumer,
                events,
            } => self.deliver(*conn, stream, subscription, consumer, events),
            Output::Replay { conn, replay, item } => self.replay_item(*conn, *replay, item),
            Output::Notice(n) => {
                match n {
                    tributary_core::Notice::Recovered { .. } => self.schemas_recovered(),
                    tributary_core::Notice::Truncated {
                        stream,
                        partition,
                        first,
                        ..
                    } => self.truncated(stream, *partition, *first),
                    _ => {}
                }
                self.unread_timeout(n);
                self.notice(n)
            }
            // The workload makes no consumer groups yet.
            // A consumer group rebalanced: what a member lost is no longer in flight to it.
            Output::Assignment {
                stream,
                subscription,
                consumer,
                assignment,
                conn,
            } if !assignment.member => {
                self.expired(&(stream.clone(), subscription.clone()), consumer, *conn)
            }
            Output::Assignment {
                stream,
                subscription,
                consumer,
                assignment,
                ..
            } => self.assignment(
                &(stream.clone(), subscription.clone()),
                consumer,
                assignment.generation,
                &assignment.partitions,
            ),
            Output::Publish { op, stream, event } => self.publish_out(*op, stream, event),
            Output::ConsumerNotice { .. } => {}
        }
    }

    fn command_in(&mut self, conn: ConnId, req: ReqId, cmd: &Command) {
        let mut heads = Vec::new();
        let mut epoch = 0;
        let mut holder = groups::HolderCheck::default();
        self.heard(cmd);
        match cmd {
            Command::Append(a) => heads = self.heads_of(&a.stream),
            Command::Read { stream, .. } | Command::Replay { stream, .. } => {
                heads = self.heads_of(stream)
            }
            Command::Ack {
                stream,
                subscription,
                consumer,
                positions,
            } => {
                // An ack sent while a reset is unanswered may be handled before the reset
                // applies and answered after: it is not checked at its reply (seed
                // 6906334499690708372).
                epoch = self
                    .subs
                    .get(&(stream.clone(), subscription.clone()))
                    .map_or(0, |s| if s.resetting > 0 { u64::MAX } else { s.resets });
                self.ack_in(conn, stream, subscription, consumer, positions)
            }
            Command::MarkRead {
                stream,
                subscription,
                consumer,
                read,
            } => {
                // Marking read acknowledges what is still pending.
                let positions = match read {
                    tributary_core::MarkRead::Positions(p) => p.clone(),
                    tributary_core::MarkRead::UpTo(p) => {
                        let key = (stream.clone(), subscription.clone());
                        self.read_up_to_asked(&key, consumer, *p);
                        self.in_flight_up_to(&key, consumer, *p)
                    }
                };
                self.ack_in(conn, stream, subscription, consumer, &positions)
            }
            Command::Nack {
                stream,
                subscription,
                consumer,
                positions,
                delay,
                ..
            } => {
                holder = self.holder_check(conn, stream, subscription, consumer, positions);
                if !holder.must_refuse {
                    let (judged, d) = (holder.judged, *delay);
                    self.nack_in(conn, stream, subscription, consumer, positions, d, judged)
                }
            }
            Command::Term {
                stream,
                subscription,
                consumer,
                positions,
                ..
            } => {
                holder = self.holder_check(conn, stream, subscription, consumer, positions);
                if !holder.must_refuse {
                    self.term_in(
                        conn,
                        stream,
                        subscription,
                        consumer,
                        positions,
                        holder.judged,
                    )
                }
            }
            Command::Detach {
                stream,
                subscription,
                consumer,
            } => {
                let key = ((stream.clone(), subscription.clone()), consumer.clone());
                if self.attached.get(&key).is_some_and(|a| a.conn == conn) {
                    self.group_heard.remove(&key);
                    // Kept until the reply: a detach the engine refuses (its subscription
                    // is being deleted, and the delete may fail) leaves the consumer
                    // attached (seed 3331109919175061133).
                    if let Some(a) = self.attached.remove(&key) {
                        self.detaching.insert((conn, req), (key.clone(), a));
                    }
                    self.release_consumer(&key.0, consumer);
                }
            }
            Command::ResetSubscription {
                stream,
                subscription,
                consumer,
                ..
            } => self.reset_in(stream, subscription, consumer.as_ref()),
            _ => {}
        }
        self.requests.insert(
            (conn, req),
            Sent {
                cmd: cmd.clone(),
                heads,
                epoch,
                holder,
            },
        );
    }

    fn heads_of(&self, stream: &StreamName) -> Vec<u64> {
        self.streams
            .get(stream)
            .map(|s| s.heads.clone())
            .unwrap_or_default()
    }

    fn conn_closed(&mut self, conn: ConnId) {
        let gone: Vec<(SubKey, ConsumerId)> = self
            .attached
            .iter()
            .filter(|(_, a)| a.conn == conn)
            .map(|(k, _)| k.clone())
            .collect();
        for (sub, consumer) in gone {
            self.group_heard.remove(&(sub.clone(), consumer.clone()));
            self.attached.remove(&(sub.clone(), consumer.clone()));
            self.release_consumer(&sub, &consumer);
        }
        self.replays.retain(|_, r| r.conn != conn);
    }

    fn storage_done(&mut self, req: &StorageRequest, result: &StorageResult) {
        match result {
            StorageResult::Ok(reply) => {
                if let (
                    StorageRequest::LoadReceipts { sub, .. },
                    tributary_core::StorageReply::Receipts(records),
                ) = (req, reply)
                {
                    self.receipts_loaded(*sub, records);
                }
                match (req, reply) {
                    (StorageRequest::SaveSchemas(records), _) => self.schemas_saved(records),
                    (StorageRequest::SaveRelay(rec), _) => self.relay_saved(rec),
                    (StorageRequest::Recover, tributary_core::StorageReply::Recovered(state)) => {
                        self.relays_recovered(state)
                    }
                    (
                        StorageRequest::Truncate {
                            stream,
                            partition,
                            before,
                        },
                        _,
                    ) => self.truncated(stream, *partition, *before),
                    (
                        StorageRequest::LoadSchemas { .. },
                        tributary_core::StorageReply::Schemas(records),
                    ) => self.schemas_loaded(records),
                    _ => {}
                }
                self.storage_ok(req, reply)
            }
            StorageResult::Err(tributary_core::StorageError::Conflict(m)) => {
                self.fail(
                    "offsets-dense",
                    format!("the store refused a write as conflicting ({m}): {req:?}"),
                );
            }
            StorageResult::Err(_) => self.delete_subscription_failed(req, false),
            StorageResult::Unknown => self.delete_subscription_failed(req, true),
        }
    }

    /// A subscription's delete did not commit: for certain (the engine brings the subscription
    /// back and takes its commands again, unless an earlier attempt's outcome was unknown) or
    /// not known (the engine retries it).
    fn delete_subscription_failed(&mut self, req: &StorageRequest, unknown: bool) {
        let StorageRequest::DeleteSubscription(id) = req else {
            return;
        };
        if let Some(k) = self.sub_ids.get(id)
            && let Some(s) = self.subs.get_mut(k)
        {
            if unknown {
                s.delete_uncertain = true;
            } else if !s.delete_uncertain {
                s.deleting = false;
            }
        }
    }

    fn drop_stream(&mut self, name: &StreamName) {
        self.streams.remove(name);
        self.relays.remove(name);
        self.publishes.retain(|_, (s, _, _)| s != name);
        let subs: Vec<SubKey> = self.subs.keys().filter(|k| &k.0 == name).cloned().collect();
        for k in subs {
            self.drop_sub(&k);
        }
    }

    fn drop_sub(&mut self, key: &SubKey) {
        self.subs.remove(key);
        self.receipts.retain(|(k, _), _| k != key);
        self.sub_ids.retain(|_, k| k != key);
        self.attached.retain(|(k, _), _| k != key);
    }

    /// The engine's current time as the checker tracks it.
    pub fn now(&self) -> MonoNanos {
        self.now.mono
    }

    /// Dead letters announced so far: (stream, subscription, position).
    pub fn dead_letters(&self) -> &[(StreamName, SubscriptionName, tributary_core::Position)] {
        &self.dead_letters
    }

    /// Per partition, every offset delivered (since any reset) for each cursor of every
    /// subscription of a persistent stream that was never reset: (stream, subscription,
    /// consumer, partition) -> offsets, with the subscription's start offsets.
    pub fn coverage(&self) -> Vec<Coverage> {
        let mut out = Vec::new();
        for (key, sub) in &self.subs {
            // At-most-once promises no delivery (events can be lost, never sent twice).
            if !sub.durable || sub.delete_requested || sub.delivery == DeliverySemantics::AtMostOnce
            {
                continue;
            }
            let Some(start) = &sub.start_offsets else {
                continue;
            };
            for (consumer, c) in &sub.cursors {
                // A reset moves the position (also one sent before the cursor was first used).
                if c.reset || sub.resets > 0 {
                    continue;
                }
                for (p, cp) in &c.parts {
                    out.push(Coverage {
                        stream: key.0.clone(),
                        subscription: key.1.clone(),
                        consumer: consumer.clone(),
                        partition: *p,
                        start: start.get(*p as usize).copied().unwrap_or(0),
                        delivered: cp.delivered.clone(),
                    });
                }
            }
        }
        out
    }

    /// Whether the model knows `stream` and a delete of it was never requested.
    pub fn stream_is_stable(&self, stream: &StreamName) -> bool {
        self.streams
            .get(stream)
            .is_some_and(|s| !s.delete_requested)
    }

    /// The committed content the model knows for a position: (id, digest, confirmed).
    pub fn known_event(
        &self,
        stream: &StreamName,
        partition: u32,
        offset: u64,
    ) -> Option<(Option<tributary_core::EventId>, u64, bool)> {
        self.streams
            .get(stream)?
            .events
            .get(&(partition, offset))
            .map(|e| (e.id, e.digest, e.confirmed))
    }

    /// Confirmed events of a stream: (partition, offset, id, digest).
    pub fn confirmed_events(
        &self,
        stream: &StreamName,
    ) -> Vec<(u32, u64, Option<tributary_core::EventId>, u64)> {
        self.streams
            .get(stream)
            .map(|s| {
                s.events
                    .iter()
                    .filter(|(_, e)| e.confirmed)
                    .map(|(&(p, o), e)| (p, o, e.id, e.digest))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What one cursor partition was given, for the liveness phase's coverage check.
#[derive(Debug, Clone)]
pub struct Coverage {
    /// The stream.
    pub stream: StreamName,
    /// The subscription.
    pub subscription: SubscriptionName,
    /// Broadcast: the consumer.
    pub consumer: Option<ConsumerId>,
    /// The partition.
    pub partition: u32,
    /// The subscription's start offset there.
    pub start: u64,
    /// Offsets delivered.
    pub delivered: std::collections::BTreeSet<u64>,
}
