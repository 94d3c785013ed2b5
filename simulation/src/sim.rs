//! The simulator: nodes (an engine, its simulated store, its clock, its clients and its
//! checker), one event queue ordered by (virtual time, sequence), and one seed from which
//! everything is drawn. A run has a chaos phase (the workload with faults), then a liveness
//! phase that heals every fault and requires convergence within a bound, then final checks.

use crate::checker::{Checker, Violation};
use crate::clock::Clock;
use crate::inbound::{Created, InboundOptions, InboundW};
use crate::journal::{JournalHeader, JournalWriter};
use crate::queue::{EventQueue, VTime};
use crate::rng::SimRng;
use crate::store::SimStore;
use crate::swarm::Swarm;
use crate::workload::{Generator, Pending, StreamW, World, consumer};
use std::time::Duration;
use tributary_core::{
    Command, ConnId, ConsumerId, Engine, Input, MarkRead, OpId, Output, Position, PublishResult,
    ReplayItem, SubscriptionMode,
};

const MS: u64 = 1_000_000;
/// Longest the liveness phase may take to converge, virtual time.
pub const LIVENESS_BOUND: VTime = 20 * 60 * 1000 * MS;
/// A run stops as failed past this many engine inputs in all (a run that never ends). A
/// workload may legitimately need millions (e.g. unread events redelivered every 30 ms while
/// the chaos phase lasts a minute: seed 2527413009502022764 needed more than 3,000,000).
pub const MAX_STEPS: u64 = 30_000_000;
/// A run stops as failed past this many engine inputs without virtual time moving (a busy
/// loop: the engine keeps itself busy at one instant).
pub const MAX_STEPS_AT_ONE_INSTANT: u64 = 200_000;

/// How to run one seed.
#[derive(Debug, Clone, Default)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Keep readable trace lines (for the trace file of a failure).
    pub trace: bool,
    /// Record a journal per engine life.
    pub journals: bool,
    /// Test-only: the bug to plant in every engine.
    #[cfg(feature = "planted-bugs")]
    pub plant: Option<tributary_core::PlantedBug>,
}

impl RunOptions {
    /// Options for `seed`, nothing else.
    pub fn seed(seed: u64) -> RunOptions {
        RunOptions {
            seed,
            ..RunOptions::default()
        }
    }
}

/// A broken rule, where it broke.
#[derive(Debug, Clone)]
pub struct Failure {
    /// The engine input (counted over all nodes from 1) at which it was seen.
    pub step: u64,
    /// The node.
    pub node: usize,
    /// Virtual time, ns.
    pub at: VTime,
    /// What broke.
    pub violation: Violation,
}

/// What a run did.
#[derive(Debug)]
pub struct Outcome {
    /// The seed.
    pub seed: u64,
    /// Engine inputs handled.
    pub steps: u64,
    /// The trace hash.
    pub hash: u64,
    /// Virtual time at the end, ns.
    pub virtual_ns: VTime,
    /// Engine restarts (crashes) during the run.
    pub crashes: u64,
    /// The first broken rule, if any.
    pub failure: Option<Failure>,
    /// Trace lines (when asked for).
    pub trace: Vec<String>,
    /// Journals recorded (when asked for): (file name, bytes).
    pub journals: Vec<(String, Vec<u8>)>,
    /// The options drawn from the seed.
    pub swarm: Swarm,
    /// What the inbound bindings did (`None`: the run has none).
    pub inbound: Option<crate::inbound::InboundStats>,
}

#[derive(Debug)]
enum Ev {
    Action,
    Storage {
        node: usize,
        life: u64,
        op: OpId,
    },
    Tick {
        node: usize,
        life: u64,
    },
    React {
        node: usize,
        life: u64,
        conn: ConnId,
        sub: usize,
        consumer: ConsumerId,
        positions: Vec<Position>,
    },
    Restart {
        node: usize,
    },
    /// The simulated broker answers a publish.
    PublishDone {
        node: usize,
        life: u64,
        op: OpId,
        result: PublishResult,
    },
    Probe,
    /// Consumer group members heartbeat (those that have not hung).
    Beat {
        node: usize,
        life: u64,
    },
    /// The inbound binding's turn: the remote publishes, the broker delivers.
    Inbound {
        node: usize,
    },
}

/// How often the simulated group members look whether a heartbeat is due.
const BEAT_EVERY: VTime = 1000 * MS;
/// Chaos phase: the chance (per mille, per beat) that a group member hangs: no more
/// heartbeats, acks or anything else until its session ends.
const HANG_PER_MILLE: u32 = 15;
/// Chaos phase: the chance (per mille, per reaction) that a consumer of an exclusive
/// subscription nacks or terms the event last delivered to another consumer.
const FOREIGN_SETTLE_PER_MILLE: u32 = 40;

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Chaos,
    Liveness,
    Done,
}

struct Node {
    engine: Option<Engine>,
    store: SimStore,
    clock: Clock,
    checker: Checker,
    life: u64,
    next_tick: Option<VTime>,
    world: World,
    journal: Option<JournalWriter<Vec<u8>>>,
    converged: bool,
    /// The stream heads of the last probe that showed convergence: a node has converged only
    /// when two probes in a row show it with the same heads (appends still in flight from the
    /// chaos phase may land after a probe's snapshot).
    converged_heads: Option<std::collections::BTreeMap<tributary_core::StreamName, Vec<u64>>>,
    clock_went_back: bool,
    /// When its next `Ev::Beat` is due (none while it has no group member).
    beat_at: Option<VTime>,
}

/// One run.
struct Sim {
    seed: u64,
    swarm: Swarm,
    queue: EventQueue<Ev>,
    now: VTime,
    nodes: Vec<Node>,
    work: SimRng,
    storage: SimRng,
    faults: SimRng,
    clients: SimRng,
    steps: u64,
    crashes: u64,
    trace: crate::trace::Trace,
    phase: Phase,
    actions_left: u32,
    setup_left: Vec<u32>,
    failure: Option<Failure>,
    journals_on: bool,
    journals: Vec<(String, Vec<u8>)>,
    deadline: VTime,
    /// When the liveness phase healed the faults.
    healed: VTime,
    probe_id: u64,
    /// The inbound bindings' options and draws.
    inbound: InboundOptions,
    inbound_rng: SimRng,
    #[cfg(feature = "planted-bugs")]
    plant: Option<tributary_core::PlantedBug>,
}

/// Runs one seed.
pub fn run(opts: &RunOptions) -> Outcome {
    let swarm = Swarm::draw(opts.seed);
    let nodes = (0..swarm.nodes)
        .map(|_| Node {
            engine: None,
            store: SimStore::default(),
            clock: Clock::default(),
            checker: Checker::new(swarm.config.clone()),
            life: 0,
            next_tick: None,
            world: World::default(),
            journal: None,
            converged: false,
            converged_heads: None,
            clock_went_back: false,
            beat_at: None,
        })
        .collect();
    let setup = swarm.persistent_streams + swarm.ephemeral_streams + 1;
    let mut sim = Sim {
        seed: opts.seed,
        queue: EventQueue::default(),
        now: 0,
        nodes,
        work: SimRng::new(opts.seed, "workload"),
        storage: SimRng::new(opts.seed, "storage"),
        faults: SimRng::new(opts.seed, "faults"),
        clients: SimRng::new(opts.seed, "clients"),
        steps: 0,
        crashes: 0,
        trace: crate::trace::Trace::new(opts.trace),
        phase: Phase::Chaos,
        actions_left: swarm.actions,
        setup_left: vec![setup; swarm.nodes],
        failure: None,
        journals_on: opts.journals,
        journals: Vec::new(),
        deadline: 0,
        healed: 0,
        probe_id: 0,
        inbound: InboundOptions::draw(
            opts.seed,
            swarm.config.max_dedup_ids_per_stream,
            swarm.max_partitions,
        ),
        inbound_rng: SimRng::new(opts.seed, "inbound-work"),
        #[cfg(feature = "planted-bugs")]
        plant: opts.plant,
        swarm,
    };
    if sim.inbound.on {
        for node in 0..sim.nodes.len() {
            sim.nodes[node].world.inbound = Some(InboundW::new(node));
            sim.queue.push(MS, Ev::Inbound { node });
        }
    }
    sim.run();
    let hash = sim.trace.hash();
    for n in 0..sim.nodes.len() {
        sim.close_journal(n);
    }
    let inbound = sim.inbound.on.then(|| {
        sim.nodes
            .iter()
            .filter_map(|n| n.world.inbound.as_ref().map(InboundW::stats))
            .fold(crate::inbound::InboundStats::default(), |a, b| {
                crate::inbound::InboundStats {
                    published: a.published + b.published,
                    appended: a.appended + b.appended,
                    duplicates: a.duplicates + b.duplicates,
                    requeues: a.requeues + b.requeues,
                    dead: a.dead + b.dead,
                }
            })
    });
    Outcome {
        seed: sim.seed,
        steps: sim.steps,
        hash,
        virtual_ns: sim.now,
        crashes: sim.crashes,
        failure: sim.failure,
        trace: sim.trace.take_lines(),
        journals: sim.journals,
        swarm: sim.swarm,
        inbound,
    }
}

impl Sim {
    fn run(&mut self) {
        for n in 0..self.nodes.len() {
            self.start_engine(n);
        }
        self.queue.push(MS, Ev::Action);
        // The first input handled at the current virtual instant.
        let mut instant = (0, 0);
        while let Some((t, ev)) = self.queue.pop() {
            if self.failure.is_some() || self.phase == Phase::Done {
                break;
            }
            self.now = t;
            if t != instant.0 {
                instant = (t, self.steps);
            }
            if self.steps - instant.1 > MAX_STEPS_AT_ONE_INSTANT {
                self.fail_at(
                    0,
                    "liveness",
                    format!(
                        "a busy loop: {MAX_STEPS_AT_ONE_INSTANT} engine inputs without virtual time moving"
                    ),
                );
                break;
            }
            if self.steps > MAX_STEPS {
                self.fail_at(
                    0,
                    "liveness",
                    format!("no end after {MAX_STEPS} engine inputs"),
                );
                break;
            }
            match ev {
                Ev::Action => self.action(),
                Ev::Storage { node, life, op } => {
                    if self.nodes[node].life == life
                        && let Some(result) = self.nodes[node].store.complete(op)
                    {
                        self.input(node, Input::StorageDone { op, result });
                    }
                }
                Ev::Tick { node, life } => {
                    let n = &mut self.nodes[node];
                    if n.life != life {
                        continue;
                    }
                    if n.next_tick == Some(t) {
                        n.next_tick = None;
                    }
                    let due = n
                        .engine
                        .as_ref()
                        .and_then(Engine::poll_timeout)
                        .is_some_and(|d| d.0 <= t);
                    if due {
                        self.input(node, Input::Tick);
                    } else {
                        self.schedule_tick(node);
                    }
                }
                Ev::React {
                    node,
                    life,
                    conn,
                    sub,
                    consumer,
                    positions,
                } => self.react(node, life, conn, sub, consumer, positions),
                Ev::Restart { node } => {
                    if self.nodes[node].engine.is_none() {
                        self.start_engine(node);
                    }
                }
                Ev::PublishDone {
                    node,
                    life,
                    op,
                    result,
                } => {
                    if self.nodes[node].life == life {
                        self.input(node, Input::PublishDone { op, result });
                    }
                }
                Ev::Probe => self.probe(),
                Ev::Beat { node, life } => self.beat(node, life),
                Ev::Inbound { node } => self.inbound_turn(node),
            }
        }
        if self.failure.is_none() && self.phase != Phase::Done {
            self.fail_at(0, "liveness", "the simulation ran out of events".into());
        }
    }

    fn fail_at(&mut self, node: usize, oracle: &'static str, detail: String) {
        if self.failure.is_none() {
            self.failure = Some(Failure {
                step: self.steps,
                node,
                at: self.now,
                violation: Violation { oracle, detail },
            });
        }
    }

    // ---- engines -------------------------------------------------------------------------

    fn engine_seed(&self, node: usize, life: u64) -> u64 {
        self.seed
            .wrapping_mul(0x9e37_79b9_7f4a_7c15)
            .wrapping_add((node as u64) << 32 | life)
    }

    fn start_engine(&mut self, node: usize) {
        let seed = self.engine_seed(node, self.nodes[node].life);
        let now = self.nodes[node].clock.now(self.now);
        let cfg = self.swarm.config.clone();
        #[allow(unused_mut)]
        let mut engine = match Engine::new(cfg.clone(), seed, now) {
            Ok(e) => e,
            Err(e) => return self.fail_at(node, "config", format!("Engine::new refused: {e}")),
        };
        #[cfg(feature = "planted-bugs")]
        engine.plant_bug(self.plant);
        let n = &mut self.nodes[node];
        n.engine = Some(engine);
        n.checker.on_start(now);
        if self.journals_on {
            let header = JournalHeader {
                config: cfg,
                seed,
                start: now,
            };
            n.journal = JournalWriter::new(Vec::new(), &header).ok();
        }
        let life = n.life;
        self.trace.note(self.steps, self.now, || {
            format!("node {node} starts (life {life})")
        });
        self.drain(node);
    }

    fn close_journal(&mut self, node: usize) {
        if let Some(j) = self.nodes[node].journal.take()
            && let Ok(bytes) = j.finish()
        {
            let name = format!(
                "seed-{}-node-{node}-life-{}.journal",
                self.seed, self.nodes[node].life
            );
            self.journals.push((name, bytes));
        }
    }

    fn crash(&mut self, node: usize) {
        if self.nodes[node].engine.is_none() {
            return;
        }
        self.crashes += 1;
        self.trace
            .note(self.steps, self.now, || format!("node {node} crashes"));
        self.close_journal(node);
        let n = &mut self.nodes[node];
        n.engine = None;
        n.store.crash(&mut self.faults);
        n.life += 1;
        n.next_tick = None;
        n.beat_at = None;
        n.world.crash();
        let down = self.faults.below(self.swarm.faults.down_max_ms * MS + 1);
        self.queue.push(self.now + down, Ev::Restart { node });
    }

    /// Hands one input to a node's engine, then drains and routes its outputs.
    fn input(&mut self, node: usize, input: Input) {
        let n = &mut self.nodes[node];
        let Some(engine) = n.engine.as_mut() else {
            return;
        };
        self.steps += 1;
        let now = n.clock.now(self.now);
        self.trace.input(self.steps, node, now, &input);
        if let Some(j) = n.journal.as_mut() {
            let _ = j.record(now, &input);
        }
        n.checker.on_input(now, &input);
        engine.handle_input(now, input);
        self.drain(node);
    }

    fn drain(&mut self, node: usize) {
        let faults = (self.phase == Phase::Chaos).then_some(&self.swarm.faults);
        loop {
            let n = &mut self.nodes[node];
            let Some(out) = n.engine.as_mut().and_then(Engine::poll_output) else {
                break;
            };
            self.trace.output(node, &out);
            n.checker.on_output(&out);
            match out {
                Output::Storage { op, req } => {
                    let at = n.store.issue(&mut self.storage, faults, self.now, op, req);
                    let life = n.life;
                    self.queue.push(at, Ev::Storage { node, life, op });
                }
                Output::Reply { conn, req, reply } => n.world.on_reply(conn, req, &reply),
                Output::Deliver {
                    conn,
                    stream,
                    subscription,
                    consumer,
                    events,
                } => {
                    if !n.world.conns.contains(&conn) {
                        continue;
                    }
                    let Some(sub) = n.world.sub_index(&stream, &subscription) else {
                        continue;
                    };
                    let think = if self.phase == Phase::Chaos {
                        self.clients
                            .below(self.swarm.consumers.think_max_ms * MS + 1)
                    } else {
                        self.clients.below(5 * MS)
                    };
                    let positions: Vec<Position> = events
                        .iter()
                        .map(|d| Position {
                            partition: d.event.partition,
                            offset: d.event.offset,
                        })
                        .collect();
                    if n.world.subs[sub].config.mode == SubscriptionMode::Exclusive
                        && let Some(&last) = positions.last()
                    {
                        n.world.last_given.insert(sub, (consumer.clone(), last));
                    }
                    let life = n.life;
                    self.queue.push(
                        self.now + think,
                        Ev::React {
                            node,
                            life,
                            conn,
                            sub,
                            consumer,
                            positions,
                        },
                    );
                }
                Output::Replay { conn, replay, item } => {
                    if matches!(item, ReplayItem::Done { .. } | ReplayItem::Failed(_)) {
                        n.world.replay_ended(conn, replay);
                    }
                }
                Output::Publish { op, .. } => {
                    // The simulated broker: each publish is confirmed or fails (chaos phase),
                    // sometimes answered twice.
                    let chaos = self.phase == Phase::Chaos;
                    let sw = &self.swarm;
                    let fail = chaos && self.clients.chance(sw.publish_fail);
                    let result = if fail {
                        PublishResult::Failed("simulated broker failure".into())
                    } else {
                        PublishResult::Confirmed
                    };
                    let twice = chaos && self.clients.chance(sw.publish_twice);
                    let life = n.life;
                    for _ in 0..1 + usize::from(twice) {
                        let at = self.now + self.clients.below(sw.publish_latency_ms * MS + 1);
                        let ev = Ev::PublishDone {
                            node,
                            life,
                            op,
                            result: result.clone(),
                        };
                        self.queue.push(at, ev);
                    }
                }
                Output::Assignment {
                    conn,
                    stream,
                    subscription,
                    consumer,
                    assignment,
                } => n.world.assigned(
                    conn,
                    &stream,
                    &subscription,
                    &consumer,
                    assignment.generation,
                    assignment.member,
                ),
                Output::Notice(_) | Output::ConsumerNotice { .. } => {}
            }
        }
        self.ensure_beat(node);
        if let Some(v) = self.nodes[node].checker.take_violation() {
            self.fail_at(node, v.oracle, v.detail);
        }
        if let Some(v) = self.nodes[node]
            .world
            .inbound
            .as_mut()
            .and_then(InboundW::take_violation)
        {
            self.fail_at(node, v.oracle, v.detail);
        }
        self.schedule_tick(node);
    }

    fn schedule_tick(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let Some(t) = n.engine.as_ref().and_then(Engine::poll_timeout) else {
            return;
        };
        let t = t.0.max(self.now);
        if n.next_tick.is_none_or(|s| t < s || s < self.now) {
            n.next_tick = Some(t);
            let life = n.life;
            self.queue.push(t, Ev::Tick { node, life });
        }
    }

    /// Sends a command from a client.
    fn send(&mut self, node: usize, conn: ConnId, cmd: Command, what: Pending) {
        let req = self.nodes[node].world.request(conn, what);
        self.input(node, Input::Client { conn, req, cmd });
    }

    // ---- the workload --------------------------------------------------------------------

    fn action(&mut self) {
        if self.phase != Phase::Chaos {
            return;
        }
        let node = self.work.below(self.nodes.len() as u64) as usize;
        if self.nodes[node].engine.is_some() {
            if self.setup_left[node] > 0 {
                self.setup_left[node] -= 1;
                self.setup(node);
            } else {
                self.workload(node);
            }
        }
        self.chaos_faults();
        self.actions_left = self.actions_left.saturating_sub(1);
        if self.actions_left == 0 {
            self.start_liveness();
        } else {
            let think = self.work.below(self.swarm.think_max_ms * MS + 1);
            self.queue.push(self.now + think, Ev::Action);
        }
    }

    /// The first actions of a node: its streams, then a subscription.
    fn setup(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let made = n.world.streams.len() as u32;
        let mut g = Generator {
            swarm: &self.swarm,
            rng: &mut self.work,
            wall: n.clock.now(self.now).wall,
        };
        let cmd = if made < self.swarm.persistent_streams + self.swarm.ephemeral_streams {
            let ephemeral = made >= self.swarm.persistent_streams;
            let config = g.stream_config(&mut n.world, ephemeral);
            n.world.streams.push(StreamW {
                heads: vec![0; config.partitions as usize],
                config: config.clone(),
                retired: false,
            });
            Some(Command::CreateStream(config))
        } else {
            g.create_subscription(&mut n.world)
        };
        if let Some(cmd) = cmd {
            let conn = n.world.some_conn(&mut self.work);
            self.send(node, conn, cmd, Pending::Other);
        }
    }

    fn workload(&mut self, node: usize) {
        let m = &self.swarm.mix;
        let weights = [
            m.append,
            m.retry_append,
            m.expected_offset,
            m.read,
            m.describe,
            m.create_stream,
            m.create_subscription,
            m.attach,
            m.detach,
            m.reset,
            m.replay,
            m.cancel_replay,
            m.delete_subscription,
            m.delete_stream,
            m.invalid,
            m.receipt_status,
            m.register_schema,
        ];
        let Some(kind) = self.work.weighted(&weights) else {
            return;
        };
        let n = &mut self.nodes[node];
        let mut g = Generator {
            swarm: &self.swarm,
            rng: &mut self.work,
            wall: n.clock.now(self.now).wall,
        };
        let w = &mut n.world;
        let (conn, cmd, what) = match kind {
            0 | 2 => match g.append(w, kind == 2) {
                Some(Command::Append(a)) => (None, Command::Append(a.clone()), Pending::Append(a)),
                _ => return,
            },
            1 => match g.retry(w) {
                Some(Command::Append(a)) => (None, Command::Append(a.clone()), Pending::Append(a)),
                _ => return,
            },
            3 => match g.read(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            4 => match g.describe(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            5 => {
                let ephemeral = g.rng.chance(300);
                let config = g.stream_config(w, ephemeral);
                w.streams.push(StreamW {
                    heads: vec![0; config.partitions as usize],
                    config: config.clone(),
                    retired: false,
                });
                (None, Command::CreateStream(config), Pending::Other)
            }
            6 => match g.create_subscription(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            7 => match g.attach(w) {
                Some((sub, c, cmd)) => (None, cmd, Pending::Attach(sub, c)),
                None => return,
            },
            8 => match g.detach(w) {
                Some((conn, cmd)) => (Some(conn), cmd, Pending::Other),
                None => return,
            },
            9 => match g.reset(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            10 => match g.replay(w) {
                Some(c) => (None, c, Pending::Replay),
                None => return,
            },
            11 => match g.cancel_replay(w) {
                Some((conn, cmd)) => (Some(conn), cmd, Pending::Other),
                None => return,
            },
            12 => match g.delete_subscription(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            13 => match g.delete_stream(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            15 => match g.receipt_status(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
            16 => {
                let (cmd, what) = g.register_schema(w);
                (None, cmd, what)
            }
            _ => match g.invalid(w) {
                Some(c) => (None, c, Pending::Other),
                None => return,
            },
        };
        let conn = match conn {
            Some(c) => c,
            None => w.some_conn(&mut self.work),
        };
        self.send(node, conn, cmd, what);
    }

    fn chaos_faults(&mut self) {
        let f = self.swarm.faults.clone();
        let node = self.faults.below(self.nodes.len() as u64) as usize;
        if self.faults.chance(f.crash) {
            self.crash(node);
        }
        if self.faults.chance(f.disconnect) {
            let conns: Vec<ConnId> = self.nodes[node].world.conns.iter().copied().collect();
            if let Some(&c) = self.faults.pick(&conns) {
                self.nodes[node].world.disconnect(c);
                self.input(node, Input::ConnClosed { conn: c });
            }
        }
        if self.faults.chance(f.clock_step) {
            let ms = self.faults.below(f.clock_step_max_ms + 1) as i64;
            let ms = if self.faults.coin() { ms } else { -ms };
            self.nodes[node].clock.step(ms);
            self.nodes[node].clock_went_back |= ms < 0;
            self.trace.note(self.steps, self.now, || {
                format!("node {node} wall clock steps {ms} ms")
            });
        }
    }

    /// A consumer answers what it was given.
    fn react(
        &mut self,
        node: usize,
        life: u64,
        conn: ConnId,
        sub: usize,
        consumer: ConsumerId,
        positions: Vec<Position>,
    ) {
        let n = &self.nodes[node];
        if n.life != life
            || n.engine.is_none()
            || !n.world.conns.contains(&conn)
            || n.world.consumers.get(&(sub, consumer.clone())) != Some(&Some(conn))
            || n.world.hung.contains(&(sub, consumer.clone()))
        {
            return;
        }
        let (stream, subscription, receipts) = {
            let s = &n.world.subs[sub].config;
            (
                s.stream.clone(),
                s.name.clone(),
                s.mode == SubscriptionMode::ReadReceipt,
            )
        };
        let c = self.swarm.consumers.clone();
        let c = &c;
        let mut acks = Vec::new();
        let mut nacks = Vec::new();
        let mut terms = Vec::new();
        let mark = if !receipts || positions.is_empty() {
            None
        } else if self.phase == Phase::Chaos {
            self.clients
                .chance(c.mark_read)
                .then(|| self.mark_read(&positions))
        } else {
            // Liveness: everything given is read (which also stops unread redeliveries).
            let mut upto: std::collections::BTreeMap<u32, u64> = Default::default();
            for p in &positions {
                let o = upto.entry(p.partition).or_default();
                *o = (*o).max(p.offset);
            }
            Some(
                upto.into_iter()
                    .map(|(partition, offset)| MarkRead::UpTo(Position { partition, offset }))
                    .collect(),
            )
        };
        for p in positions {
            let choice = if self.phase == Phase::Chaos {
                self.clients
                    .weighted(&[c.ack, c.nack, c.term, c.ignore])
                    .unwrap_or(0)
            } else {
                0
            };
            match choice {
                0 => acks.push(p),
                1 => nacks.push(p),
                2 => terms.push(p),
                _ => {}
            }
        }
        let twice = self.phase == Phase::Chaos && self.clients.chance(30);
        // A command names at most `max_ack_pending` positions, and a consumer may hold more
        // (one window per partition). In the chaos phase a longer list is sent as it is (and
        // refused); in the liveness phase what a consumer settles goes in as many commands as
        // needed (seed 523600807091666462: refused acks of 6 left events in flight until
        // their ack_wait, 30 s, again and again).
        let most = match self.phase {
            Phase::Chaos => usize::MAX,
            _ => self.swarm.config.max_ack_pending.max(1) as usize,
        };
        for chunk in acks.chunks(most) {
            let cmd = Command::Ack {
                stream: stream.clone(),
                subscription: subscription.clone(),
                consumer: consumer.clone(),
                positions: chunk.to_vec(),
            };
            if twice {
                self.send(node, conn, cmd.clone(), Pending::Other);
            }
            self.send(node, conn, cmd, Pending::Other);
        }
        if !nacks.is_empty() {
            let delay = c
                .nack_delay
                .then(|| Duration::from_millis(self.clients.below(2_000)));
            for chunk in nacks.chunks(most) {
                let cmd = Command::Nack {
                    stream: stream.clone(),
                    subscription: subscription.clone(),
                    consumer: consumer.clone(),
                    positions: chunk.to_vec(),
                    delay,
                    error: "simulated failure".into(),
                };
                self.send(node, conn, cmd, Pending::Other);
            }
        }
        for chunk in terms.chunks(most) {
            let cmd = Command::Term {
                stream: stream.clone(),
                subscription: subscription.clone(),
                consumer: consumer.clone(),
                positions: chunk.to_vec(),
                reason: "simulated poison".into(),
            };
            self.send(node, conn, cmd, Pending::Other);
        }
        for read in mark.into_iter().flatten() {
            let cmd = Command::MarkRead {
                stream: stream.clone(),
                subscription: subscription.clone(),
                consumer: consumer.clone(),
                read,
            };
            self.send(node, conn, cmd, Pending::Other);
        }
        self.commit_or_meddle(node, conn, sub, &consumer);
    }

    /// After a reaction: a consumer group member may commit (a `Manual` group always does in
    /// the liveness phase), and in the chaos phase a consumer of an exclusive subscription may
    /// try to nack or term what was last delivered to another consumer (to be refused).
    fn commit_or_meddle(&mut self, node: usize, conn: ConnId, sub: usize, consumer: &ConsumerId) {
        let chaos = self.phase == Phase::Chaos;
        let w = &self.nodes[node].world;
        let config = &w.subs[sub].config;
        let (stream, subscription) = (config.stream.clone(), config.name.clone());
        match config.mode {
            SubscriptionMode::ConsumerGroup => {
                let manual = config.commit == tributary_core::CommitStrategy::Manual;
                let Some(&generation) = w.generations.get(&(sub, consumer.clone())) else {
                    return;
                };
                let commit = if chaos {
                    self.clients.chance(if manual { 500 } else { 100 })
                } else {
                    manual
                };
                if commit {
                    let cmd = Command::Commit {
                        stream,
                        subscription,
                        consumer: consumer.clone(),
                        generation,
                        offsets: Vec::new(),
                    };
                    self.send(node, conn, cmd, Pending::Other);
                }
            }
            SubscriptionMode::Exclusive if chaos => {
                let Some((holder, pos)) = w.last_given.get(&sub).cloned() else {
                    return;
                };
                if &holder == consumer || !self.clients.chance(FOREIGN_SETTLE_PER_MILLE) {
                    return;
                }
                let cmd = if self.clients.coin() {
                    Command::Nack {
                        stream,
                        subscription,
                        consumer: consumer.clone(),
                        positions: vec![pos],
                        delay: None,
                        error: "not mine".into(),
                    }
                } else {
                    Command::Term {
                        stream,
                        subscription,
                        consumer: consumer.clone(),
                        positions: vec![pos],
                        reason: "not mine".into(),
                    }
                };
                self.send(node, conn, cmd, Pending::Other);
            }
            _ => {}
        }
    }

    /// Schedules the node's next beat if it has group members and none is due.
    fn ensure_beat(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.beat_at.is_some() || n.engine.is_none() || self.phase == Phase::Done {
            return;
        }
        if n.world.group_members().is_empty() {
            return;
        }
        let at = self.now + BEAT_EVERY;
        n.beat_at = Some(at);
        let life = n.life;
        self.queue.push(at, Ev::Beat { node, life });
    }

    /// Group members heartbeat when due; in the chaos phase one may hang instead.
    fn beat(&mut self, node: usize, life: u64) {
        let n = &mut self.nodes[node];
        if n.life != life {
            return;
        }
        n.beat_at = None;
        if n.engine.is_none() {
            return;
        }
        let chaos = self.phase == Phase::Chaos;
        for (sub, consumer, conn) in self.nodes[node].world.group_members() {
            let key = (sub, consumer.clone());
            let w = &self.nodes[node].world;
            if w.hung.contains(&key) {
                continue;
            }
            if chaos && self.clients.chance(HANG_PER_MILLE) {
                self.nodes[node].world.hung.insert(key);
                continue;
            }
            let c = &w.subs[sub].config;
            let due = w
                .beats
                .get(&key)
                .is_none_or(|&last| self.now >= last + c.heartbeat_interval.as_nanos() as u64);
            if !due {
                continue;
            }
            let cmd = Command::Heartbeat {
                stream: c.stream.clone(),
                subscription: c.name.clone(),
                consumer,
            };
            self.nodes[node].world.beats.insert(key, self.now);
            self.send(node, conn, cmd, Pending::Other);
        }
        self.ensure_beat(node);
    }

    /// ReadReceipt: what a consumer marks read of what it was given: some of the positions,
    /// or everything of one partition up to an offset (sometimes past what it was given).
    fn mark_read(&mut self, positions: &[Position]) -> Vec<MarkRead> {
        let r = &mut self.clients;
        if r.coin() {
            let max = self.swarm.config.max_ack_pending.max(1) as usize;
            let some: Vec<Position> = positions
                .iter()
                .copied()
                .filter(|_| r.chance(700))
                .take(max)
                .collect();
            if some.is_empty() {
                return Vec::new();
            }
            vec![MarkRead::Positions(some)]
        } else {
            let p = positions[r.below(positions.len() as u64) as usize];
            vec![MarkRead::UpTo(Position {
                partition: p.partition,
                offset: p.offset + r.below(3),
            })]
        }
    }

    // ---- the inbound binding ---------------------------------------------------------------

    /// The inbound binding's turn on `node`: in the chaos phase the remote service publishes
    /// and the broker connection may drop; then, with the engine ready, the local stream is
    /// created if it is not there yet and the broker delivers up to the prefetch.
    fn inbound_turn(&mut self, node: usize) {
        if self.phase == Phase::Done {
            return;
        }
        let o = self.inbound.clone();
        let chaos = self.phase == Phase::Chaos;
        let ready = self.nodes[node]
            .engine
            .as_ref()
            .is_some_and(Engine::is_ready);
        let r = &mut self.inbound_rng;
        let (publish, drop) = (chaos && r.chance(o.publish), chaos && r.chance(o.drop));
        let Some(ib) = self.nodes[node].world.inbound.as_mut() else {
            return;
        };
        if publish {
            ib.publish(&o, &mut self.inbound_rng);
        }
        if drop {
            ib.requeue();
            self.trace.note(self.steps, self.now, || {
                format!("node {node} inbound: the broker connection drops; unacknowledged messages requeued")
            });
        }
        if ready {
            if ib.created == Created::No {
                ib.created = Created::Asking;
                let cmd = Command::CreateStream(ib.stream_config(&o));
                self.send(node, ConnId(0), cmd, Pending::InboundCreate);
            }
            if let Some(ib) = self.nodes[node].world.inbound.as_mut() {
                let generation = ib.generation;
                let appends = ib.deliver(o.prefetch);
                for (id, cmd) in appends {
                    // A refusal answered at once may have requeued what follows.
                    let still = self.nodes[node]
                        .world
                        .inbound
                        .as_ref()
                        .is_some_and(|i| i.generation == generation);
                    let (Some(id), true) = (id, still) else {
                        break;
                    };
                    self.send(node, ConnId(0), cmd, Pending::Inbound(id, generation));
                }
            }
        }
        self.queue
            .push(self.now + o.every_ms.max(1) * MS, Ev::Inbound { node });
    }

    // ---- liveness --------------------------------------------------------------------------

    fn start_liveness(&mut self) {
        self.phase = Phase::Liveness;
        // Hung group members come back: they heartbeat and answer again.
        for n in &mut self.nodes {
            n.world.hung.clear();
        }
        self.healed = self.now;
        let bound = self.liveness_bound();
        self.deadline = self.now + bound;
        self.trace.note(self.steps, self.now, || {
            format!(
                "liveness: faults healed; convergence due within {} s",
                bound / (1000 * MS)
            )
        });
        for node in 0..self.nodes.len() {
            if self.nodes[node].engine.is_none() {
                self.queue.push(self.now, Ev::Restart { node });
            }
        }
        self.queue.push(self.now + 100 * MS, Ev::Probe);
    }

    /// How long the liveness phase may take: [`LIVENESS_BOUND`], plus the time the relay needs
    /// for the backlog left by the chaos phase, since the broker keeps its latency when faults
    /// heal: each event takes at most one publish latency and two healthy storage requests,
    /// with `relay_window` in flight per partition (seed 6543629422528533875: 2,755 events
    /// behind, 500 ms publishes, one at a time).
    fn liveness_bound(&self) -> VTime {
        let backlog = self
            .nodes
            .iter()
            .filter_map(|n| relay_backlog(&n.store.store))
            .max()
            .unwrap_or(0);
        let per_event = self.swarm.publish_latency_ms * MS + MS;
        let window = self.swarm.config.relay_window.max(1) as u64;
        LIVENESS_BOUND + backlog.saturating_mul(per_event) / window
    }

    /// Every half second of the liveness phase: attach what should be attached, ask where
    /// every subscription stands, and finish once every node has converged.
    fn probe(&mut self) {
        if self.phase != Phase::Liveness {
            return;
        }
        for node in 0..self.nodes.len() {
            let ready = self.nodes[node]
                .engine
                .as_ref()
                .is_some_and(Engine::is_ready);
            if !ready || self.nodes[node].converged {
                continue;
            }
            // Appends still unanswered (a write stalled since the chaos phase) may yet move the
            // heads: no convergence before they are answered (seed 70).
            let w = &self.nodes[node].world;
            let appending = w
                .pending
                .iter()
                .any(|((c, _), p)| matches!(p, Pending::Append(_)) && w.conns.contains(c));
            // Cross-service streams: the relay positions are saved at the heads (a save may
            // still be in flight after the broker confirmed everything; seed
            // 5977934289289247728).
            let relays_saved = relays_saved(&self.nodes[node].store.store);
            let heads = self.nodes[node]
                .world
                .probe
                .as_ref()
                .filter(|p| {
                    !appending
                        && w.inbound.as_ref().is_none_or(InboundW::idle)
                        && relays_saved
                        && p.outstanding == 0
                        && converged(&self.nodes[node].world, p)
                })
                .map(|p| p.heads.clone());
            let n = &mut self.nodes[node];
            match heads {
                Some(h) if n.converged_heads.as_ref() == Some(&h) => {
                    n.converged = true;
                    continue;
                }
                h => n.converged_heads = h,
            }
            self.probe_node(node);
        }
        if self.nodes.iter().all(|n| n.converged) {
            self.trace
                .note(self.steps, self.now, || "liveness: converged".into());
            for node in 0..self.nodes.len() {
                if let Some(v) = crate::finale::final_checks(
                    &self.nodes[node].store.store,
                    &self.nodes[node].checker,
                    self.nodes[node].world.probe.as_ref(),
                    self.nodes[node].clock_went_back,
                ) {
                    self.fail_at(node, v.oracle, v.detail);
                }
                if let Some(v) = self.nodes[node].world.inbound.as_ref().and_then(|i| {
                    i.final_check(&self.nodes[node].store.store, self.inbound.partitions)
                }) {
                    self.fail_at(node, v.oracle, v.detail);
                }
            }
            self.phase = Phase::Done;
            return;
        }
        if self.now > self.deadline {
            let stuck: Vec<String> = self
                .nodes
                .iter()
                .enumerate()
                .filter(|(_, n)| !n.converged)
                .map(|(i, n)| format!("node {i}: {}", describe_stuck(&n.world)))
                .collect();
            self.fail_at(
                0,
                "liveness",
                format!(
                    "no convergence within {} s of healing: {}",
                    self.deadline.saturating_sub(self.healed) / (1000 * MS),
                    stuck.join("; ")
                ),
            );
            return;
        }
        self.queue.push(self.now + 500 * MS, Ev::Probe);
    }

    fn probe_node(&mut self, node: usize) {
        self.probe_id += 1;
        let id = self.probe_id;
        let w = &mut self.nodes[node].world;
        // Attach: every subscription gets its consumers back.
        let mut attach = Vec::new();
        for (i, s) in w.subs.iter().enumerate() {
            if s.retired {
                continue;
            }
            let known: Vec<ConsumerId> = w
                .consumers
                .keys()
                .filter(|(x, _)| *x == i)
                .map(|(_, c)| c.clone())
                .collect();
            let wanted = match s.config.mode {
                SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt
                    if !known.is_empty() =>
                {
                    known
                }
                _ => vec![consumer(0)],
            };
            let attached_any = w.consumers.iter().any(|((x, _), c)| *x == i && c.is_some());
            for c in wanted {
                let here = w.consumers.get(&(i, c.clone())).cloned().flatten();
                if here.is_none() && !(s.config.mode.shared_position() && attached_any) {
                    attach.push((i, c, s.config.stream.clone(), s.config.name.clone()));
                }
            }
        }
        let subs: Vec<(usize, Command)> = w
            .subs
            .iter()
            .enumerate()
            .filter(|(_, s)| !s.retired)
            .map(|(i, s)| {
                (
                    i,
                    Command::DescribeSubscription {
                        stream: s.config.stream.clone(),
                        subscription: s.config.name.clone(),
                    },
                )
            })
            .collect();
        w.probe = Some(crate::workload::Probe {
            id,
            outstanding: subs.len() + 1,
            ..Default::default()
        });
        for (i, c, stream, subscription) in attach {
            let conn = self.nodes[node].world.connect();
            let cmd = Command::Attach {
                stream,
                subscription,
                consumer: c.clone(),
                max_in_flight: None,
            };
            self.send(node, conn, cmd, Pending::Attach(i, c));
        }
        let conn = self.nodes[node].world.connect();
        self.send(node, conn, Command::ListStreams, Pending::ProbeList(id));
        for (i, cmd) in subs {
            self.send(node, conn, cmd, Pending::ProbeSub(id, i));
        }
    }
}

/// Whether the store holds every cross-service partition's relay position at its head.
/// The relay's largest backlog: events of a cross-service partition the store holds past its
/// saved relay position (`None`: the store cannot say).
fn relay_backlog(store: &tributary_store_memory::MemoryStore) -> Option<u64> {
    let mut store = store.clone();
    let req = tributary_core::StorageRequest::Recover;
    let tributary_core::StorageResult::Ok(tributary_core::StorageReply::Recovered(state)) =
        store.execute(&req)
    else {
        return None;
    };
    let mut most = 0;
    for s in state
        .streams
        .iter()
        .filter(|s| s.config.scope == tributary_core::Scope::CrossService)
    {
        for (p, h) in s.heads.iter().enumerate() {
            let at = state
                .relays
                .iter()
                .find(|r| r.stream == s.config.name && r.partition == p as u32)
                .map_or(0, |r| r.next);
            most = most.max(h.next.saturating_sub(at));
        }
    }
    Some(most)
}

fn relays_saved(store: &tributary_store_memory::MemoryStore) -> bool {
    relay_backlog(store) == Some(0)
}

/// Whether a probe shows every subscription caught up: every cursor's floor at its stream's
/// head in every partition, nothing pending, every wanted consumer attached.
fn converged(w: &World, p: &crate::workload::Probe) -> bool {
    // Cross-service streams: the broker confirmed everything.
    let relayed = p
        .relays
        .iter()
        .all(|(name, r)| p.heads.get(name) == Some(r));
    relayed
        && w.subs.iter().enumerate().all(|(i, s)| {
            if s.retired {
                return true;
            }
            match p.subs.get(&i) {
                None => false,
                Some(None) => true,
                Some(Some(info)) => {
                    let Some(heads) = p.heads.get(&s.config.stream) else {
                        return false;
                    };
                    info.cursors
                        .iter()
                        .all(|c| c.pending == 0 && c.floors.iter().zip(heads).all(|(f, h)| f == h))
                        && !info.attached.is_empty()
                }
            }
        })
}

fn describe_stuck(w: &World) -> String {
    let Some(p) = &w.probe else {
        return "no probe answered".into();
    };
    let mut out = Vec::new();
    if let Some(i) = w.inbound.as_ref().filter(|i| !i.idle()) {
        out.push(i.describe());
    }
    for (name, r) in &p.relays {
        if p.heads.get(name) != Some(r) {
            out.push(format!(
                "{name}: relay positions {r:?}, heads {:?}",
                p.heads.get(name)
            ));
        }
    }
    for (i, s) in w.subs.iter().enumerate() {
        if s.retired {
            continue;
        }
        match p.subs.get(&i) {
            None => out.push(format!("{}/{}: no answer", s.config.stream, s.config.name)),
            Some(None) => {}
            Some(Some(info)) => {
                let heads = p.heads.get(&s.config.stream);
                for c in &info.cursors {
                    if c.pending > 0 || heads.is_none_or(|h| &c.floors != h) {
                        out.push(format!(
                            "{}/{} cursor {:?}: floors {:?} heads {:?} pending {} attached {:?}",
                            s.config.stream,
                            s.config.name,
                            c.consumer,
                            c.floors,
                            heads,
                            c.pending,
                            info.attached
                        ));
                    }
                }
            }
        }
        if out.len() > 4 {
            break;
        }
    }
    out.join(", ")
}
