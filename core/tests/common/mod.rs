//! A test harness: one engine, the in-memory store, a virtual clock, and helpers that send a
//! command and return its reply. Storage requests are carried out at once unless the test
//! holds them (`hold_storage`), so tests can also complete them late, out of order, with
//! errors or with `Unknown`.

#![allow(dead_code)]

use std::collections::VecDeque;
use std::time::Duration;
use tributary_core::*;
use tributary_store_memory::MemoryStore;

pub const T0: u64 = 1_700_000_000_000;

/// `Config::default()` without the group-commit linger.
pub fn no_linger() -> Config {
    Config {
        append_linger: Duration::ZERO,
        ..Config::default()
    }
}

/// One append write in flight per stream, without linger: the plain group commit.
pub fn one_write() -> Config {
    Config {
        max_append_writes_in_flight: 1,
        ..no_linger()
    }
}

pub fn s(name: &str) -> StreamName {
    StreamName::new(name).unwrap()
}
pub fn sub(name: &str) -> SubscriptionName {
    SubscriptionName::new(name).unwrap()
}
pub fn c(name: &str) -> ConsumerId {
    ConsumerId::new(name).unwrap()
}
pub fn id(n: u8) -> EventId {
    EventId::from_bytes([n; 16])
}
pub fn ev(t: &str) -> NewEvent {
    NewEvent::new(t, b"{}".to_vec())
}
pub fn ev_id(t: &str, n: u8) -> NewEvent {
    ev(t).with_id(id(n))
}
pub fn pos(partition: u32, offset: u64) -> Position {
    Position { partition, offset }
}
/// How many positions an ack, nack or term applied and skipped (`None`: another reply).
pub fn counts(r: &Result<Reply, Error>) -> Option<(usize, usize)> {
    r.as_ref().ok().and_then(Reply::settled_counts)
}
/// The reply to an ack, nack or term that applied to `applied` and skipped `skipped`.
pub fn settled(applied: Vec<Position>, skipped: Vec<(Position, SkipReason)>) -> Reply {
    Reply::Settled(Settlement { applied, skipped })
}

pub struct Harness {
    pub engine: Engine,
    pub store: MemoryStore,
    pub now: Now,
    next_req: u64,
    /// Outputs other than storage requests and replies to `cmd`, in order.
    pub outputs: VecDeque<Output>,
    /// Storage requests held back by the test.
    pub held: VecDeque<(OpId, StorageRequest)>,
    pub hold_storage: bool,
    pub seed: u64,
    pub config: Config,
}

impl Harness {
    /// The default configuration, without the group-commit linger (tests that check timing
    /// of the linger say so with their own configuration).
    pub fn new() -> Harness {
        Harness::with(no_linger(), MemoryStore::new(), 7)
    }

    pub fn with(config: Config, store: MemoryStore, seed: u64) -> Harness {
        Harness::start(
            config,
            store,
            seed,
            Now {
                mono: MonoNanos(1_000_000_000),
                wall: UnixMillis(T0),
            },
        )
    }

    fn start(config: Config, store: MemoryStore, seed: u64, now: Now) -> Harness {
        let engine = Engine::new(config.clone(), seed, now).unwrap();
        let mut h = Harness {
            engine,
            store,
            now,
            next_req: 1,
            outputs: VecDeque::new(),
            held: VecDeque::new(),
            hold_storage: false,
            seed,
            config,
        };
        h.pump();
        assert!(h.engine.is_ready(), "recovery did not finish");
        h.outputs
            .retain(|o| !matches!(o, Output::Notice(Notice::Recovered { .. })));
        h
    }

    /// A new engine on the same store: a restart (everything in memory is lost).
    pub fn restart(self) -> Harness {
        let now = Now {
            mono: MonoNanos(self.now.mono.0 + 1),
            wall: self.now.wall,
        };
        Harness::start(self.config.clone(), self.store, self.seed + 1, now)
    }

    /// Carries out storage requests (unless held) until the engine is idle.
    pub fn pump(&mut self) {
        while let Some(o) = self.engine.poll_output() {
            match o {
                Output::Storage { op, req } if !self.hold_storage => {
                    let result = self.store.execute(&req);
                    self.engine
                        .handle_input(self.now, Input::StorageDone { op, result });
                }
                Output::Storage { op, req } => self.held.push_back((op, req)),
                other => self.outputs.push_back(other),
            }
        }
    }

    /// Completes a held storage request with `result` (`None`: carry it out on the store).
    pub fn complete(&mut self, i: usize, result: Option<StorageResult>) {
        let (op, req) = self.held.remove(i).expect("no such held request");
        let result = result.unwrap_or_else(|| self.store.execute(&req));
        self.engine
            .handle_input(self.now, Input::StorageDone { op, result });
        self.pump();
    }

    /// Sends a command without waiting; returns its request id.
    pub fn send(&mut self, conn: u64, cmd: Command) -> ReqId {
        let req = ReqId(self.next_req);
        self.next_req += 1;
        self.engine.handle_input(
            self.now,
            Input::Client {
                conn: ConnId(conn),
                req,
                cmd,
            },
        );
        self.pump();
        req
    }

    /// Takes the reply to `req` from the outputs, if it came.
    pub fn reply(&mut self, req: ReqId) -> Option<Result<Reply, Error>> {
        let i = self
            .outputs
            .iter()
            .position(|o| matches!(o, Output::Reply { req: r, .. } if *r == req))?;
        match self.outputs.remove(i) {
            Some(Output::Reply { reply, .. }) => Some(reply),
            _ => None,
        }
    }

    /// Sends a command on connection 1 and returns its reply (which must come at once).
    pub fn cmd(&mut self, cmd: Command) -> Result<Reply, Error> {
        self.cmd_on(1, cmd)
    }

    pub fn cmd_on(&mut self, conn: u64, cmd: Command) -> Result<Reply, Error> {
        let req = self.send(conn, cmd);
        self.reply(req).expect("no reply")
    }

    pub fn advance(&mut self, d: Duration) {
        self.now.mono = self.now.mono.saturating_add(d);
        self.now.wall = self.now.wall.saturating_add(d);
        self.engine.handle_input(self.now, Input::Tick);
        self.pump();
    }

    pub fn set_wall(&mut self, wall: u64) {
        self.now.wall = UnixMillis(wall);
    }

    // ---- shortcuts --------------------------------------------------------------------------

    pub fn create(&mut self, config: StreamConfig) {
        assert_eq!(self.cmd(Command::CreateStream(config)), Ok(Reply::Done));
    }

    pub fn create_persistent(&mut self, name: &str, partitions: u32) {
        let mut cfg = StreamConfig::persistent(s(name));
        cfg.partitions = partitions;
        self.create(cfg);
    }

    pub fn append(
        &mut self,
        stream: &str,
        events: Vec<NewEvent>,
    ) -> Result<Vec<AppendOutcome>, Error> {
        let req = AppendRequest {
            stream: s(stream),
            events,
            expected_offset: None,
        };
        match self.cmd(Command::Append(req))? {
            Reply::Appended(o) => Ok(o),
            other => panic!("unexpected reply {other:?}"),
        }
    }

    pub fn append_n(&mut self, stream: &str, n: usize) -> Vec<AppendOutcome> {
        self.append(stream, (0..n).map(|i| ev(&format!("t{i}"))).collect())
            .unwrap()
    }

    pub fn subscribe(&mut self, config: SubscriptionConfig) {
        assert_eq!(
            self.cmd(Command::CreateSubscription(config)),
            Ok(Reply::Done)
        );
    }

    pub fn sub_config(
        &self,
        stream: &str,
        name: &str,
        mode: SubscriptionMode,
    ) -> SubscriptionConfig {
        SubscriptionConfig::new(s(stream), sub(name), mode)
    }

    pub fn attach(
        &mut self,
        conn: u64,
        stream: &str,
        name: &str,
        consumer: &str,
        max_in_flight: Option<u32>,
    ) {
        let r = self.cmd_on(
            conn,
            Command::Attach {
                stream: s(stream),
                subscription: sub(name),
                consumer: c(consumer),
                max_in_flight,
            },
        );
        assert_eq!(r, Ok(Reply::Done));
    }

    pub fn ack(
        &mut self,
        conn: u64,
        stream: &str,
        name: &str,
        consumer: &str,
        positions: Vec<Position>,
    ) -> Result<Reply, Error> {
        self.cmd_on(
            conn,
            Command::Ack {
                stream: s(stream),
                subscription: sub(name),
                consumer: c(consumer),
                positions,
            },
        )
    }

    pub fn nack(
        &mut self,
        conn: u64,
        stream: &str,
        name: &str,
        consumer: &str,
        positions: Vec<Position>,
        delay: Option<Duration>,
    ) -> Result<Reply, Error> {
        self.cmd_on(
            conn,
            Command::Nack {
                stream: s(stream),
                subscription: sub(name),
                consumer: c(consumer),
                positions,
                delay,
                error: "boom".into(),
            },
        )
    }

    /// Takes every delivery made so far: (consumer, offset, attempt) in order.
    pub fn deliveries(&mut self) -> Vec<(String, Position, u32)> {
        let mut got = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Deliver {
                consumer, events, ..
            } => {
                for d in events {
                    got.push((
                        consumer.to_string(),
                        pos(d.event.partition, d.event.offset),
                        d.attempt,
                    ));
                }
                false
            }
            _ => true,
        });
        got
    }

    /// Takes every delivered event so far for `consumer`.
    pub fn delivered_events(&mut self, consumer: &str) -> Vec<Delivered> {
        let mut got = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Deliver {
                consumer: who,
                events,
                ..
            } if who.as_str() == consumer => {
                got.extend(events.iter().cloned());
                false
            }
            _ => true,
        });
        got
    }

    pub fn notices(&mut self) -> Vec<Notice> {
        let mut got = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Notice(n) => {
                got.push(n.clone());
                false
            }
            _ => true,
        });
        got
    }

    pub fn replay_items(&mut self) -> Vec<ReplayItem> {
        let mut got = Vec::new();
        self.outputs.retain(|o| match o {
            Output::Replay { item, .. } => {
                got.push(item.clone());
                false
            }
            _ => true,
        });
        got
    }

    pub fn describe(&mut self, stream: &str) -> StreamInfo {
        match self.cmd(Command::DescribeStream(s(stream))) {
            Ok(Reply::Stream(i)) => i,
            other => panic!("describe: {other:?}"),
        }
    }

    pub fn describe_sub(&mut self, stream: &str, name: &str) -> SubscriptionInfo {
        match self.cmd(Command::DescribeSubscription {
            stream: s(stream),
            subscription: sub(name),
        }) {
            Ok(Reply::Subscription(i)) => *i,
            other => panic!("describe subscription: {other:?}"),
        }
    }

    pub fn read(
        &mut self,
        stream: &str,
        partition: u32,
        from: u64,
        max: u32,
    ) -> Result<Vec<std::sync::Arc<Event>>, Error> {
        match self.cmd(Command::Read {
            stream: s(stream),
            partition,
            from,
            max,
        })? {
            Reply::Events(e) => Ok(e),
            other => panic!("read: {other:?}"),
        }
    }
}
