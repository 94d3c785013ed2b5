//! The workload: what the simulated clients know and the commands they send. Every choice is
//! drawn from the workload sub-seed with the weights of the run's [`Swarm`]. Part 2 features
//! (consumer groups, receipts, retention, schemas, the relay) plug in here as new actions, and
//! their oracles in the checker.

use crate::rng::SimRng;
use crate::swarm::Swarm;
use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::Duration;
use tributary_core::{
    AppendOutcome, AppendRequest, Command, ConnId, ConsumerId, DeliverySemantics, Error, EventId,
    NewEvent, Overflow, Position, ReplayFrom, ReplayId, ReplayOptions, Reply, ReqId, StartPosition,
    StreamConfig, StreamName, SubscriptionConfig, SubscriptionInfo, SubscriptionMode,
    SubscriptionName, UnixMillis, partition_of_key,
};
use tributary_core::{Rule, SchemaRegistration};

/// A stream the clients know of.
#[derive(Debug, Clone)]
pub struct StreamW {
    /// Its configuration.
    pub config: StreamConfig,
    /// Deleted (or being deleted): no longer used.
    pub retired: bool,
    /// The clients' guess of each partition's next offset.
    pub heads: Vec<u64>,
}

/// A subscription the clients know of.
#[derive(Debug, Clone)]
pub struct SubW {
    /// Its configuration.
    pub config: SubscriptionConfig,
    /// Deleted (or being deleted): no longer used.
    pub retired: bool,
}

/// What a request was, for the clients' bookkeeping.
#[derive(Debug, Clone)]
pub enum Pending {
    /// An attach.
    Attach(usize, ConsumerId),
    /// An append (kept for retries).
    Append(AppendRequest),
    /// A replay.
    Replay,
    /// A schema registration.
    Schema(SchemaRegistration),
    /// A liveness probe's list of streams.
    ProbeList(u64),
    /// A liveness probe's describe of a subscription.
    ProbeSub(u64, usize),
    /// The inbound binding's append of the message with this id, in this delivery generation.
    Inbound(EventId, u64),
    /// The creation of the inbound binding's local stream.
    InboundCreate,
    /// Anything else.
    Other,
}

/// One round of liveness probing.
#[derive(Debug, Clone, Default)]
pub struct Probe {
    /// Its number.
    pub id: u64,
    /// Replies still to come.
    pub outstanding: usize,
    /// Heads per stream.
    pub heads: BTreeMap<StreamName, Vec<u64>>,
    /// Cross-service streams: relay positions per stream.
    pub relays: BTreeMap<StreamName, Vec<u64>>,
    /// Each subscription's description (`None`: not found).
    pub subs: BTreeMap<usize, Option<SubscriptionInfo>>,
}

/// What one node's clients know.
#[derive(Debug, Default)]
pub struct World {
    /// Streams, in creation order.
    pub streams: Vec<StreamW>,
    /// Subscriptions, in creation order.
    pub subs: Vec<SubW>,
    /// Every consumer ever attached to a subscription, and where it is attached now.
    pub consumers: BTreeMap<(usize, ConsumerId), Option<ConnId>>,
    /// Open connections.
    pub conns: BTreeSet<ConnId>,
    next_conn: u64,
    next_req: u64,
    /// Requests waiting for replies.
    pub pending: BTreeMap<(ConnId, ReqId), Pending>,
    /// Recent appends with producer ids, for retries.
    history: VecDeque<AppendRequest>,
    /// Replays running, per connection.
    pub replays: BTreeMap<ConnId, BTreeSet<ReplayId>>,
    next_stream: u32,
    next_sub: u32,
    /// The liveness probe in progress.
    pub probe: Option<Probe>,
    /// Schema registrations answered `Done`, in order.
    pub schemas: Vec<SchemaRegistration>,
    /// Consumer group members that stopped heartbeating and answering (hung).
    pub hung: BTreeSet<(usize, ConsumerId)>,
    /// Consumer group members: the generation of their last assignment.
    pub generations: BTreeMap<(usize, ConsumerId), u64>,
    /// Consumer group members: when each last sent a heartbeat.
    pub beats: BTreeMap<(usize, ConsumerId), u64>,
    /// Exclusive subscriptions: the last event delivered and to whom (another consumer of it
    /// may try to nack or term it).
    pub last_given: BTreeMap<usize, (ConsumerId, Position)>,
    /// The inbound binding (another service's stream consumed into a local one), if the run
    /// has one.
    pub inbound: Option<crate::inbound::InboundW>,
}

const TYPES: [&str; 4] = ["created", "updated", "deleted", "audit"];
/// The event types that get schemas (the first two of `TYPES`).
const SCHEMA_TYPES: [&str; 2] = ["created", "updated"];
/// Fields of the JSON payloads and of the rules that upcast them.
const FIELDS: [&str; 10] = [
    "id",
    "name",
    "full_name",
    "n",
    "tag",
    "meta.src",
    "meta",
    "meta.kind",
    "src",
    "kind",
];
/// The top-level fields a schema may require; `meta` may require `META_FIELDS` in turn.
const TOP_FIELDS: [&str; 8] = ["id", "name", "full_name", "n", "tag", "meta", "src", "kind"];
const META_FIELDS: [&str; 2] = ["src", "kind"];

impl World {
    /// Opens a connection.
    pub fn connect(&mut self) -> ConnId {
        self.next_conn += 1;
        let c = ConnId(self.next_conn);
        self.conns.insert(c);
        c
    }

    /// A request id for a command about to be sent, recorded as `what`.
    pub fn request(&mut self, conn: ConnId, what: Pending) -> ReqId {
        self.next_req += 1;
        let r = ReqId(self.next_req);
        self.pending.insert((conn, r), what);
        r
    }

    /// An open connection, sometimes a new one.
    pub fn some_conn(&mut self, r: &mut SimRng) -> ConnId {
        if self.conns.is_empty() || r.chance(80) {
            return self.connect();
        }
        let v: Vec<ConnId> = self.conns.iter().copied().collect();
        v[r.below(v.len() as u64) as usize]
    }

    /// The engine crashed: every connection is gone.
    pub fn crash(&mut self) {
        self.conns.clear();
        self.pending.clear();
        self.replays.clear();
        for c in self.consumers.values_mut() {
            *c = None;
        }
        self.probe = None;
        self.hung.clear();
        self.beats.clear();
        // The consumer's channel closed with the engine: the broker requeues.
        if let Some(i) = self.inbound.as_mut() {
            i.requeue();
            if i.created == crate::inbound::Created::Asking {
                i.created = crate::inbound::Created::No;
            }
        }
    }

    /// Consumer group members attached now: (subscription, consumer, connection).
    pub fn group_members(&self) -> Vec<(usize, ConsumerId, ConnId)> {
        self.consumers
            .iter()
            .filter_map(|((sub, c), conn)| Some((*sub, c.clone(), (*conn)?)))
            .filter(|(sub, _, conn)| {
                self.conns.contains(conn)
                    && self.subs.get(*sub).is_some_and(|s| {
                        !s.retired && s.config.mode == SubscriptionMode::ConsumerGroup
                    })
            })
            .collect()
    }

    /// A consumer group member was told its share, or (`member: false`) that its session
    /// ended: it is no longer attached.
    pub fn assigned(
        &mut self,
        conn: ConnId,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        generation: u64,
        member: bool,
    ) {
        let Some(sub) = self.sub_index(stream, subscription) else {
            return;
        };
        let key = (sub, consumer.clone());
        if member {
            self.generations.insert(key, generation);
        } else if self.consumers.get(&key) == Some(&Some(conn)) {
            self.consumers.insert(key.clone(), None);
            self.hung.remove(&key);
            self.beats.remove(&key);
        }
    }

    /// A connection closed.
    pub fn disconnect(&mut self, conn: ConnId) {
        self.conns.remove(&conn);
        self.replays.remove(&conn);
        for c in self.consumers.values_mut() {
            if *c == Some(conn) {
                *c = None;
            }
        }
    }

    /// A reply arrived.
    pub fn on_reply(&mut self, conn: ConnId, req: ReqId, reply: &Result<Reply, Error>) {
        let Some(what) = self.pending.remove(&(conn, req)) else {
            return;
        };
        match (what, reply) {
            (Pending::Attach(sub, consumer), Ok(_)) if self.conns.contains(&conn) => {
                self.consumers.insert((sub, consumer), Some(conn));
            }
            (Pending::Append(a), Ok(Reply::Appended(outs))) => {
                if let Some(s) = self.streams.iter_mut().find(|s| s.config.name == a.stream) {
                    for o in outs {
                        if let AppendOutcome::Appended(p) = o
                            && let Some(h) = s.heads.get_mut(p.partition as usize)
                        {
                            *h = (*h).max(p.offset + 1);
                        }
                    }
                }
            }
            (Pending::Append(a), Err(_)) if a.events.iter().any(|e| e.event_id.is_some()) => {
                self.history.push_front(a);
            }
            (Pending::Inbound(id, generation), r) => {
                if let Some(i) = self.inbound.as_mut() {
                    i.replied(id, generation, r);
                }
            }
            (Pending::InboundCreate, r) => {
                if let Some(i) = self.inbound.as_mut() {
                    i.create_replied(r);
                }
            }
            (Pending::Schema(reg), Ok(Reply::Done)) if !self.schemas.contains(&reg) => {
                self.schemas.push(reg);
            }
            (Pending::Replay, Ok(Reply::ReplayStarted(id))) => {
                self.replays.entry(conn).or_default().insert(*id);
            }
            (Pending::ProbeList(id), r) => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.id == id) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                    if let Ok(Reply::Streams(list)) = r {
                        p.relays = list
                            .iter()
                            .filter_map(|i| Some((i.config.name.clone(), i.relay.clone()?)))
                            .collect();
                        p.heads = list
                            .iter()
                            .map(|i| {
                                (
                                    i.config.name.clone(),
                                    i.partitions.iter().map(|x| x.next).collect(),
                                )
                            })
                            .collect();
                    }
                }
            }
            (Pending::ProbeSub(id, sub), r) => {
                if let Some(p) = self.probe.as_mut().filter(|p| p.id == id) {
                    p.outstanding = p.outstanding.saturating_sub(1);
                    match r {
                        Ok(Reply::Subscription(info)) => {
                            p.subs.insert(sub, Some((**info).clone()));
                        }
                        Err(Error::SubscriptionNotFound { .. } | Error::StreamNotFound(_)) => {
                            p.subs.insert(sub, None);
                        }
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }

    /// A replay ended.
    pub fn replay_ended(&mut self, conn: ConnId, id: ReplayId) {
        if let Some(s) = self.replays.get_mut(&conn) {
            s.remove(&id);
        }
    }

    fn live_streams(&self) -> Vec<usize> {
        (0..self.streams.len())
            .filter(|&i| !self.streams[i].retired)
            .collect()
    }

    fn live_subs(&self) -> Vec<usize> {
        (0..self.subs.len())
            .filter(|&i| !self.subs[i].retired)
            .collect()
    }

    /// The subscription index of a (stream, name).
    pub fn sub_index(&self, stream: &StreamName, name: &SubscriptionName) -> Option<usize> {
        self.subs
            .iter()
            .position(|s| &s.config.stream == stream && &s.config.name == name)
    }
}

fn name<T>(f: impl Fn(&str) -> Result<T, tributary_core::InvalidInput>, s: String) -> T {
    match f(&s) {
        Ok(n) => n,
        Err(_) => unreachable_name(),
    }
}

#[cold]
fn unreachable_name() -> ! {
    // Names the workload builds are always valid: `p1`, `s2`, `c3`.
    panic!("the workload built an invalid name")
}

/// A consumer id among the few the workload uses.
pub fn consumer(n: u64) -> ConsumerId {
    name(ConsumerId::new, format!("c{n}"))
}

/// Generates the commands of one workload action on one node.
pub struct Generator<'a> {
    /// The seed's options.
    pub swarm: &'a Swarm,
    /// The workload's generator.
    pub rng: &'a mut SimRng,
    /// The node's wall clock now.
    pub wall: UnixMillis,
}

impl Generator<'_> {
    fn event(&mut self, key: Option<Bytes>) -> NewEvent {
        let r = &mut *self.rng;
        let t = TYPES[r.below(TYPES.len() as u64) as usize];
        let len = r.below(48) as usize;
        let mut payload: Vec<u8> = (0..len).map(|_| r.below(256) as u8).collect();
        let mut version = 1;
        if self.swarm.mix.register_schema > 0 && SCHEMA_TYPES.contains(&t) {
            version = r.range(1, 3) as u32;
            if r.chance(self.swarm.json_payloads) {
                let mut doc = serde_json::Map::new();
                for f in ["id", "name", "full_name", "n", "tag"] {
                    if r.chance(600) {
                        doc.insert(f.into(), serde_json::Value::from(r.below(100)));
                    }
                }
                if r.chance(300) {
                    doc.insert("meta".into(), serde_json::json!({"src": r.below(9)}));
                }
                payload = serde_json::Value::Object(doc).to_string().into_bytes();
            }
        }
        let mut e = NewEvent::new(t, payload);
        e.schema_version = version;
        e.key = key.or_else(|| {
            r.chance(self.swarm.keyed)
                .then(|| Bytes::from(format!("k{}", r.below(u64::from(self.swarm.keys)))))
        });
        if r.chance(self.swarm.producer_ids) {
            e.event_id = Some(EventId::from_random(r.bytes16()));
        }
        if r.chance(100) {
            e.headers
                .insert("trace".into(), format!("t{}", r.below(1000)));
        }
        e
    }

    /// A new stream's configuration.
    pub fn stream_config(&mut self, world: &mut World, ephemeral: bool) -> StreamConfig {
        world.next_stream += 1;
        let r = &mut *self.rng;
        let n = world.next_stream;
        let mut c = if ephemeral {
            let overflow = if r.coin() {
                Overflow::Reject
            } else {
                Overflow::DropOldest
            };
            StreamConfig::ephemeral(
                name(StreamName::new, format!("e{n}")),
                r.range(2, 30),
                r.range(60, 2000),
                overflow,
            )
        } else {
            let mut c = StreamConfig::persistent(name(StreamName::new, format!("p{n}")));
            c.partitions = r.range(1, u64::from(self.swarm.max_partitions)) as u32;
            if r.chance(self.swarm.retention) {
                let mut p = tributary_core::RetentionPolicy {
                    max_age: r
                        .chance(400)
                        .then(|| Duration::from_millis(r.range(50, 20_000))),
                    max_events: r.chance(500).then(|| r.range(1, 40)),
                    max_bytes: r.chance(400).then(|| r.range(30, 2_000)),
                    keep_unconsumed: r.coin(),
                };
                if p.is_unlimited() {
                    p.max_events = Some(r.range(1, 40));
                }
                c.retention = Some(p);
            }
            c
        };
        c.delivery = match r.below(20) {
            0..=11 => DeliverySemantics::AtLeastOnce,
            12..=16 => DeliverySemantics::ExactlyOnce,
            _ => DeliverySemantics::AtMostOnce,
        };
        if let Some(w) = r.pick(&self.swarm.dedup_windows) {
            c.dedup_window = *w;
        }
        // An exactly-once stream needs a dedup window: now and then one without is asked
        // for, and must be refused.
        if c.delivery == DeliverySemantics::ExactlyOnce
            && c.dedup_window.is_zero()
            && !r.chance(125)
        {
            c.dedup_window = Duration::from_secs(600);
        }
        if r.chance(self.swarm.cross_service) {
            c.scope = tributary_core::Scope::CrossService;
        }
        c
    }

    /// Appends fresh events to a live stream.
    pub fn append(&mut self, world: &mut World, expected: bool) -> Option<Command> {
        let live = world.live_streams();
        let i = *self.rng.pick(&live)?;
        let s = world.streams[i].clone();
        let n = self.rng.range(1, u64::from(self.swarm.batch_max)) as usize;
        let mut req = AppendRequest {
            stream: s.config.name.clone(),
            events: Vec::new(),
            expected_offset: None,
        };
        if expected {
            let key = Bytes::from(format!("k{}", self.rng.below(u64::from(self.swarm.keys))));
            let p = partition_of_key(&key, s.config.partitions);
            let key = (s.config.partitions > 1).then_some(key);
            req.events = (0..n).map(|_| self.event(key.clone())).collect();
            let p = if key.is_some() { p } else { 0 };
            let guess = s.heads.get(p as usize).copied().unwrap_or(0);
            req.expected_offset = Some(match self.rng.below(4) {
                0 => guess + 1,
                1 => guess.saturating_sub(1),
                _ => guess,
            });
        } else {
            req.events = (0..n).map(|_| self.event(None)).collect();
        }
        // Producers of an exactly-once stream give ids (the stream refuses an event without
        // one): nearly always.
        if s.config.delivery == DeliverySemantics::ExactlyOnce && !self.rng.chance(30) {
            for e in &mut req.events {
                if e.event_id.is_none() {
                    e.event_id = Some(EventId::from_random(self.rng.bytes16()));
                }
            }
        }
        if req.events.iter().any(|e| e.event_id.is_some()) {
            world.history.push_back(req.clone());
            if world.history.len() > 64 {
                world.history.pop_front();
            }
        }
        Some(Command::Append(req))
    }

    /// Repeats an earlier append with the same producer ids (a client retry).
    pub fn retry(&mut self, world: &mut World) -> Option<Command> {
        let n = world.history.len() as u64;
        if n == 0 {
            return None;
        }
        // Favour the most recent ones (failed appends are pushed to the front).
        let i = self.rng.below(n.min(8));
        let mut a = world.history.get(i as usize)?.clone();
        if self.rng.chance(200) && a.events.len() > 1 {
            // A partial retry: some events again, plus a fresh one.
            a.events.truncate(1);
            let fresh = self.event(None);
            a.events.push(fresh);
            a.expected_offset = None;
        }
        Some(Command::Append(a))
    }

    /// Reads a page.
    pub fn read(&mut self, world: &World) -> Option<Command> {
        let live = world.live_streams();
        let s = &world.streams[*self.rng.pick(&live)?];
        let partition = self.rng.below(u64::from(s.config.partitions)) as u32;
        let head = s.heads.get(partition as usize).copied().unwrap_or(0);
        Some(Command::Read {
            stream: s.config.name.clone(),
            partition,
            from: self.rng.below(head + 1),
            max: self.rng.range(1, 20) as u32,
        })
    }

    /// Describes something.
    pub fn describe(&mut self, world: &World) -> Option<Command> {
        match self.rng.below(3) {
            0 => Some(Command::ListStreams),
            1 => {
                let live = world.live_streams();
                let s = &world.streams[*self.rng.pick(&live)?];
                Some(Command::DescribeStream(s.config.name.clone()))
            }
            _ => {
                let live = world.live_subs();
                let s = &world.subs[*self.rng.pick(&live)?];
                Some(Command::DescribeSubscription {
                    stream: s.config.stream.clone(),
                    subscription: s.config.name.clone(),
                })
            }
        }
    }

    /// Creates a subscription (or repeats the creation of a known one).
    pub fn create_subscription(&mut self, world: &mut World) -> Option<Command> {
        if !world.subs.is_empty() && self.rng.chance(150) {
            let live = world.live_subs();
            let s = &world.subs[*self.rng.pick(&live)?];
            return Some(Command::CreateSubscription(s.config.clone()));
        }
        let live = world.live_streams();
        let stream = world.streams[*self.rng.pick(&live)?].config.clone();
        world.next_sub += 1;
        let r = &mut *self.rng;
        let mode = if self.swarm.read_receipts > 0 && r.chance(self.swarm.read_receipts) {
            SubscriptionMode::ReadReceipt
        } else {
            match r.below(3) {
                0 => SubscriptionMode::Exclusive,
                1 => SubscriptionMode::Broadcast,
                _ => SubscriptionMode::ConsumerGroup,
            }
        };
        let mut c = SubscriptionConfig::new(
            stream.name.clone(),
            name(SubscriptionName::new, format!("s{}", world.next_sub)),
            mode,
        );
        c.start = match r.below(10) {
            0 => StartPosition::End,
            1 => StartPosition::Offset(r.below(5)),
            2 => StartPosition::Time(UnixMillis(self.wall.0.saturating_sub(r.below(5_000)))),
            3 => StartPosition::Offsets(some_offsets(r, stream.partitions, 5)),
            _ => StartPosition::Beginning,
        };
        if let Some(w) = r.pick(&self.swarm.ack_waits) {
            c.ack_wait = *w;
        }
        c.max_deliveries = self.swarm.config.default_max_deliveries;
        if r.chance(300) {
            c.max_deliveries = r.range(1, 6) as u32;
        }
        c.ordered_by_key = mode == SubscriptionMode::Exclusive && r.chance(self.swarm.ordered);
        if mode == SubscriptionMode::ConsumerGroup {
            // Every commit strategy; members heartbeat every third of their session timeout
            // (the simulator's `Ev::Beat`), and some stop (hang) in the chaos phase.
            use tributary_core::CommitStrategy;
            c.commit = match r.below(4) {
                0 => CommitStrategy::Manual,
                1 => CommitStrategy::AfterEach,
                2 => CommitStrategy::AfterBatch(r.range(1, 6) as u32),
                _ => CommitStrategy::Periodic(Duration::from_millis(r.range(200, 3_000))),
            };
            c.session_timeout = Duration::from_secs([3, 6, 15][r.below(3) as usize]);
            c.heartbeat_interval = c.session_timeout / 3;
        }
        if r.chance(self.swarm.ask_versions) {
            let t = SCHEMA_TYPES[r.below(2) as usize];
            c.schema_versions.insert(t.into(), r.range(1, 4) as u32);
        }
        if mode == SubscriptionMode::ReadReceipt && r.chance(700) {
            c.unread_timeout = r.pick(&self.swarm.unread_timeouts).copied();
            c.redeliver_unread = c.unread_timeout.is_some() && r.coin();
        }
        world.subs.push(SubW {
            config: c.clone(),
            retired: false,
        });
        Some(Command::CreateSubscription(c))
    }

    /// Attaches a consumer: (subscription index, consumer, command).
    pub fn attach(&mut self, world: &World) -> Option<(usize, ConsumerId, Command)> {
        let live = world.live_subs();
        let i = *self.rng.pick(&live)?;
        let s = &world.subs[i];
        let c = consumer(self.rng.below(4));
        let max_in_flight = match self.rng.below(4) {
            0 => None,
            _ => Some(self.rng.range(1, 6) as u32),
        };
        Some((
            i,
            c.clone(),
            Command::Attach {
                stream: s.config.stream.clone(),
                subscription: s.config.name.clone(),
                consumer: c,
                max_in_flight,
            },
        ))
    }

    /// Detaches an attached consumer: (its connection, command).
    pub fn detach(&mut self, world: &mut World) -> Option<(ConnId, Command)> {
        let attached: Vec<(usize, ConsumerId, ConnId)> = world
            .consumers
            .iter()
            .filter_map(|((s, c), conn)| conn.map(|conn| (*s, c.clone(), conn)))
            .collect();
        let (s, c, conn) = self.rng.pick(&attached)?.clone();
        world.consumers.insert((s, c.clone()), None);
        let sub = &world.subs[s];
        Some((
            conn,
            Command::Detach {
                stream: sub.config.stream.clone(),
                subscription: sub.config.name.clone(),
                consumer: c,
            },
        ))
    }

    fn position(&mut self, partitions: u32) -> StartPosition {
        match self.rng.below(5) {
            0 => StartPosition::Beginning,
            1 => StartPosition::End,
            2 => StartPosition::Offset(self.rng.below(10)),
            3 => StartPosition::Offsets(some_offsets(self.rng, partitions, 10)),
            _ => StartPosition::Time(UnixMillis(
                self.wall.0.saturating_sub(self.rng.below(3_000)),
            )),
        }
    }

    /// Resets a subscription.
    pub fn reset(&mut self, world: &World) -> Option<Command> {
        let live = world.live_subs();
        let i = *self.rng.pick(&live)?;
        let s = &world.subs[i];
        let consumer = (s.config.mode == SubscriptionMode::Broadcast && self.rng.coin())
            .then(|| consumer(self.rng.below(4)));
        let partitions = world
            .streams
            .iter()
            .find(|w| w.config.name == s.config.stream)
            .map_or(1, |w| w.config.partitions);
        let to = self.position(partitions);
        Some(Command::ResetSubscription {
            stream: s.config.stream.clone(),
            subscription: s.config.name.clone(),
            consumer,
            to,
        })
    }

    /// Starts a replay.
    pub fn replay(&mut self, world: &World) -> Option<Command> {
        let live = world.live_streams();
        let s = &world.streams[*self.rng.pick(&live)?];
        let r = &mut *self.rng;
        let from = match r.below(5) {
            0 | 1 => ReplayFrom::Offset(r.below(4)),
            4 => ReplayFrom::Offsets(some_offsets(r, s.config.partitions, 4)),
            2 => ReplayFrom::Time(UnixMillis(self.wall.0.saturating_sub(r.below(10_000)))),
            _ => {
                let a = self.wall.0.saturating_sub(r.below(10_000));
                ReplayFrom::TimeRange(UnixMillis(a), UnixMillis(a + r.range(1, 8_000)))
            }
        };
        let options = ReplayOptions {
            batch_size: r.chance(500).then(|| r.range(1, 10) as u32),
            max_events: r.chance(200).then(|| r.range(1, 20)),
            max_events_per_second: r.chance(500).then(|| r.range(1, 200) as u32),
            event_types: if r.chance(200) {
                vec![TYPES[r.below(4) as usize].to_string()]
            } else {
                Vec::new()
            },
            progress_interval: r
                .chance(500)
                .then(|| Duration::from_millis(r.range(10, 2_000))),
            from_first_available: r.coin(),
            ..ReplayOptions::default()
        };
        let mut options = options;
        if r.chance(self.swarm.ask_versions) {
            let t = SCHEMA_TYPES[r.below(2) as usize];
            options
                .schema_versions
                .insert(t.into(), r.range(1, 4) as u32);
        }
        Some(Command::Replay {
            stream: s.config.name.clone(),
            from,
            options,
        })
    }

    /// Asks where a consumer of a ReadReceipt subscription stands, sometimes with the receipt
    /// of one event.
    pub fn receipt_status(&mut self, world: &World) -> Option<Command> {
        let live: Vec<usize> = world
            .live_subs()
            .into_iter()
            .filter(|&i| world.subs[i].config.mode == SubscriptionMode::ReadReceipt)
            .collect();
        let s = &world.subs[*self.rng.pick(&live)?].config;
        let stream = world.streams.iter().find(|w| w.config.name == s.stream)?;
        let position = self.rng.coin().then(|| {
            let partition = self.rng.below(u64::from(stream.config.partitions)) as u32;
            let head = stream.heads.get(partition as usize).copied().unwrap_or(0);
            Position {
                partition,
                offset: self.rng.below(head + 1),
            }
        });
        Some(Command::ReceiptStatus {
            stream: s.stream.clone(),
            subscription: s.name.clone(),
            consumer: consumer(self.rng.below(4)),
            position,
        })
    }

    /// Registers a schema version: usually the next one of a type (its schema requiring some
    /// fields, its rules moving some, so that some registrations are incompatible and
    /// refused), sometimes one registered before (accepted again) or one out of order
    /// (refused); or lists the registry.
    pub fn register_schema(&mut self, world: &World) -> (Command, Pending) {
        let r = &mut *self.rng;
        if r.chance(100) {
            return (Command::ListSchemas, Pending::Other);
        }
        if !world.schemas.is_empty() && r.chance(150) {
            let reg = world.schemas[r.below(world.schemas.len() as u64) as usize].clone();
            return (Command::RegisterSchema(reg.clone()), Pending::Schema(reg));
        }
        let t = SCHEMA_TYPES[r.below(2) as usize];
        let latest = world
            .schemas
            .iter()
            .filter(|g| g.event_type == t)
            .map(|g| g.version)
            .max()
            .unwrap_or(0);
        let version = match r.below(20) {
            0 => latest + 2,
            1 => latest,
            _ => latest + 1,
        };
        let field = |r: &mut SimRng| FIELDS[r.below(FIELDS.len() as u64) as usize].to_string();
        let rules: Vec<Rule> = if version > 1 {
            (0..r.below(4))
                .map(|_| match r.below(5) {
                    // Often out of `meta` (a dotted path).
                    0 => Rule::Rename {
                        from: if r.coin() {
                            format!("meta.{}", META_FIELDS[r.below(2) as usize])
                        } else {
                            field(r)
                        },
                        to: field(r),
                    },
                    1 => Rule::Add {
                        field: field(r),
                        default: serde_json::Value::from(r.below(10)),
                    },
                    2 => Rule::Remove { field: field(r) },
                    3 => Rule::Set {
                        field: field(r),
                        value: serde_json::json!({"v": r.below(10)}),
                    },
                    _ => Rule::Copy {
                        from: field(r),
                        to: field(r),
                    },
                })
                .collect()
        } else {
            Vec::new()
        };
        // The schema mostly requires what the version before required or the rules write
        // (often compatible), now and then something else (often not): the checker judges
        // both answers. `meta` may require fields of its own.
        let prev = world
            .schemas
            .iter()
            .rev()
            .find(|g| g.event_type == t && g.version == latest)
            .and_then(|g| g.schema.clone());
        let mut likely: BTreeSet<String> = BTreeSet::new();
        match &prev {
            Some(p) => {
                for f in p["required"].as_array().into_iter().flatten() {
                    likely.insert(f.as_str().unwrap_or_default().to_string());
                }
                for f in p["properties"]["meta"]["required"]
                    .as_array()
                    .into_iter()
                    .flatten()
                {
                    likely.insert(format!("meta.{}", f.as_str().unwrap_or_default()));
                }
            }
            None => likely.extend(FIELDS.iter().map(|f| f.to_string())),
        }
        for rule in &rules {
            let (Rule::Rename { to: f, .. }
            | Rule::Copy { to: f, .. }
            | Rule::Add { field: f, .. }
            | Rule::Set { field: f, .. }) = rule
            else {
                continue;
            };
            likely.insert(f.clone());
            if let Some((top, _)) = f.split_once('.') {
                likely.insert(top.to_string());
            }
        }
        let pick = |r: &mut SimRng, f: &str| r.chance(if likely.contains(f) { 650 } else { 50 });
        let schema = r.chance(700).then(|| {
            let required: Vec<&str> = TOP_FIELDS.into_iter().filter(|f| pick(r, f)).collect();
            let mut schema = serde_json::json!({"type": "object", "required": required});
            if required.contains(&"meta") && r.chance(700) {
                let inner: Vec<&str> = META_FIELDS
                    .into_iter()
                    .filter(|f| pick(r, &format!("meta.{f}")))
                    .collect();
                schema["properties"] =
                    serde_json::json!({"meta": {"type": "object", "required": inner}});
            }
            schema
        });
        let reg = SchemaRegistration {
            event_type: t.into(),
            version,
            schema,
            rules,
        };
        (Command::RegisterSchema(reg.clone()), Pending::Schema(reg))
    }

    /// Cancels a running replay: (its connection, command).
    pub fn cancel_replay(&mut self, world: &World) -> Option<(ConnId, Command)> {
        let all: Vec<(ConnId, ReplayId)> = world
            .replays
            .iter()
            .flat_map(|(c, ids)| ids.iter().map(|id| (*c, *id)))
            .collect();
        let (c, id) = *self.rng.pick(&all)?;
        Some((c, Command::CancelReplay(id)))
    }

    /// Deletes a subscription (its name is never used again).
    pub fn delete_subscription(&mut self, world: &mut World) -> Option<Command> {
        let live = world.live_subs();
        let i = *self.rng.pick(&live)?;
        world.subs[i].retired = true;
        let s = &world.subs[i];
        Some(Command::DeleteSubscription {
            stream: s.config.stream.clone(),
            subscription: s.config.name.clone(),
        })
    }

    /// Deletes a stream and retires its subscriptions.
    pub fn delete_stream(&mut self, world: &mut World) -> Option<Command> {
        let live = world.live_streams();
        if live.len() <= 1 {
            return None;
        }
        let i = *self.rng.pick(&live)?;
        world.streams[i].retired = true;
        let n = world.streams[i].config.name.clone();
        for s in world.subs.iter_mut() {
            if s.config.stream == n {
                s.retired = true;
            }
        }
        Some(Command::DeleteStream(n))
    }

    /// A command the engine must refuse.
    pub fn invalid(&mut self, world: &World) -> Option<Command> {
        let live = world.live_streams();
        let stream = world.streams[*self.rng.pick(&live)?].config.name.clone();
        let sub = world
            .subs
            .first()
            .map(|s| s.config.name.clone())
            .unwrap_or_else(|| name(SubscriptionName::new, "none".into()));
        Some(match self.rng.below(6) {
            0 => Command::Append(AppendRequest {
                stream,
                events: Vec::new(),
                expected_offset: None,
            }),
            1 => Command::Ack {
                stream,
                subscription: sub,
                consumer: consumer(9),
                positions: vec![Position {
                    partition: 0,
                    offset: 0,
                }],
            },
            2 => Command::Read {
                stream,
                partition: 99,
                from: 0,
                max: 1,
            },
            3 => Command::Attach {
                stream: name(StreamName::new, "nowhere".into()),
                subscription: sub,
                consumer: consumer(0),
                max_in_flight: Some(0),
            },
            4 => Command::Replay {
                stream,
                from: ReplayFrom::Offset(0),
                options: ReplayOptions {
                    batch_size: Some(0),
                    ..Default::default()
                },
            },
            _ => {
                let mut c = SubscriptionConfig::new(stream, sub, SubscriptionMode::Broadcast);
                c.ordered_by_key = true;
                Command::CreateSubscription(c)
            }
        })
    }
}

/// Per-partition offsets below `max` for some of a stream's `partitions` (each named at most
/// once, in partition order).
fn some_offsets(r: &mut SimRng, partitions: u32, max: u64) -> Vec<Position> {
    let mut out = Vec::new();
    for partition in 0..partitions {
        if r.coin() {
            out.push(Position {
                partition,
                offset: r.below(max),
            });
        }
    }
    out
}
