//! Swarm options: everything a run does, drawn from its seed. As in TigerBeetle's VOPR, each
//! seed switches whole features and faults on or off and picks their rates, so different
//! seeds stress different mixes instead of every seed averaging over everything.

use crate::rng::SimRng;
use std::time::Duration;
use tributary_core::Config;

/// How often the workload picks each kind of action (relative weights; zero: never).
#[derive(Debug, Clone)]
pub struct Mix {
    /// Appends (fresh events).
    pub append: u32,
    /// Appends that repeat an earlier append with the same producer ids (client retries).
    pub retry_append: u32,
    /// Appends with an `expected_offset`.
    pub expected_offset: u32,
    /// Reads of a page.
    pub read: u32,
    /// Describe a stream, a subscription or list streams (also feeds the oracles).
    pub describe: u32,
    /// Create a stream beyond the initial ones.
    pub create_stream: u32,
    /// Create a subscription.
    pub create_subscription: u32,
    /// Attach a consumer.
    pub attach: u32,
    /// Detach a consumer.
    pub detach: u32,
    /// Reset a subscription.
    pub reset: u32,
    /// Start a replay.
    pub replay: u32,
    /// Cancel a replay.
    pub cancel_replay: u32,
    /// Delete a subscription.
    pub delete_subscription: u32,
    /// Delete a stream.
    pub delete_stream: u32,
    /// Commands the engine must refuse (bad input, unknown names, acks of nothing).
    pub invalid: u32,
    /// Ask where a consumer of a ReadReceipt subscription stands (`ReceiptStatus`).
    pub receipt_status: u32,
    /// Register a schema version (sometimes one the engine must refuse, sometimes one
    /// registered before), or list the registry.
    pub register_schema: u32,
}

/// How consumers answer what they are given (relative weights per event).
#[derive(Debug, Clone)]
pub struct ConsumerMix {
    /// Acknowledge.
    pub ack: u32,
    /// Refuse: redeliver later.
    pub nack: u32,
    /// Send to the dead letter stream.
    pub term: u32,
    /// Say nothing: the ack wait expires.
    pub ignore: u32,
    /// Longest think time before answering, ms.
    pub think_max_ms: u64,
    /// Whether nacks name a delay (else the engine's back-off).
    pub nack_delay: bool,
    /// ReadReceipt: chance (per mille) that a consumer also marks what it was given read
    /// (some positions, or everything up to an offset).
    pub mark_read: u32,
}

/// Faults of the chaos phase (per mille unless named otherwise).
#[derive(Debug, Clone)]
pub struct Faults {
    /// Longest ordinary storage latency, µs.
    pub latency_max_us: u64,
    /// Chance of a latency spike.
    pub spike: u32,
    /// Longest spike, ms.
    pub spike_max_ms: u64,
    /// Chance a storage request fails (nothing written).
    pub error: u32,
    /// Chance a write is applied and its reply lost (`Unknown`).
    pub unknown_applied: u32,
    /// Chance a request is not applied and answered `Unknown`.
    pub unknown_lost: u32,
    /// Chance per workload action that a node crashes.
    pub crash: u32,
    /// Longest time a crashed node stays down, ms.
    pub down_max_ms: u64,
    /// Chance per action that a client connection drops.
    pub disconnect: u32,
    /// Chance per action that a wall clock steps.
    pub clock_step: u32,
    /// Largest wall clock step, ms (either way).
    pub clock_step_max_ms: u64,
}

/// Everything a run does, drawn from its seed.
#[derive(Debug, Clone)]
pub struct Swarm {
    /// Engines, each with its own store and clients.
    pub nodes: usize,
    /// Workload actions in the chaos phase (shared by all nodes).
    pub actions: u32,
    /// Longest pause between two actions, ms.
    pub think_max_ms: u64,
    /// The engines' configuration.
    pub config: Config,
    /// Persistent streams created at the start, per node.
    pub persistent_streams: u32,
    /// Ephemeral streams created at the start, per node.
    pub ephemeral_streams: u32,
    /// Most partitions of a stream.
    pub max_partitions: u32,
    /// Distinct keys events use.
    pub keys: u32,
    /// Chance an event has a key.
    pub keyed: u32,
    /// Chance an event carries a producer id.
    pub producer_ids: u32,
    /// Most events per append.
    pub batch_max: u32,
    /// Dedup windows streams pick from.
    pub dedup_windows: Vec<Duration>,
    /// Ack waits subscriptions pick from.
    pub ack_waits: Vec<Duration>,
    /// Chance a new exclusive subscription is ordered by key.
    pub ordered: u32,
    /// Chance (per mille) a new subscription is a ReadReceipt one.
    pub read_receipts: u32,
    /// Unread timeouts ReadReceipt subscriptions pick from (none: never one).
    pub unread_timeouts: Vec<Duration>,
    /// Chance (per mille) an event of a type with schemas carries a JSON object payload
    /// (else random bytes, which cannot be upcast).
    pub json_payloads: u32,
    /// Chance (per mille) a subscription or replay names the versions it asks for.
    pub ask_versions: u32,
    /// Chance (per mille) a persistent stream gets a retention policy.
    pub retention: u32,
    /// Chance (per mille) a stream is cross-service (relayed to the simulated broker).
    pub cross_service: u32,
    /// The simulated broker: chance (per mille) a publish fails in the chaos phase.
    pub publish_fail: u32,
    /// The simulated broker: chance (per mille) a publish is answered twice.
    pub publish_twice: u32,
    /// The simulated broker: longest time to answer a publish, ms.
    pub publish_latency_ms: u64,
    /// The action mix.
    pub mix: Mix,
    /// Consumer behaviour.
    pub consumers: ConsumerMix,
    /// Faults.
    pub faults: Faults,
}

/// `x` with probability `on_per_mille`, else zero: a feature switched off for the whole run.
fn maybe(rng: &mut SimRng, on_per_mille: u32, base: u32, spread: u32) -> u32 {
    if rng.chance(on_per_mille) {
        base + rng.below(u64::from(spread)) as u32
    } else {
        0
    }
}

impl Swarm {
    /// The options of the run of `seed`.
    #[allow(clippy::field_reassign_with_default)]
    pub fn draw(seed: u64) -> Swarm {
        let mut r = SimRng::new(seed, "swarm");
        let pick = |r: &mut SimRng, xs: &[u64]| xs[r.below(xs.len() as u64) as usize];

        let mut config = Config::default();
        config.tail_cache_events = pick(&mut r, &[2, 8, 64, 4096]) as usize;
        config.read_batch_events = pick(&mut r, &[1, 3, 16, 512]) as usize;
        config.max_ack_pending = pick(&mut r, &[4, 16, 10_000]);
        config.max_pending_append_events = pick(&mut r, &[8, 64, 100_000]) as usize;
        config.max_dedup_ids_per_stream = pick(&mut r, &[40, 400, 20_000_000]) as usize;
        config.recovery_page = pick(&mut r, &[1, 5, 10_000]) as u32;
        config.max_queued_commands = pick(&mut r, &[4, 10_000]) as usize;
        config.storage_retry_base = Duration::from_millis(pick(&mut r, &[5, 50]));
        config.storage_retry_max = Duration::from_millis(pick(&mut r, &[200, 1000, 5000]));
        config.backoff_base = Duration::from_millis(pick(&mut r, &[10, 100, 1000]));
        config.backoff_max = Duration::from_millis(pick(&mut r, &[500, 5_000, 30_000]));
        config.default_max_in_flight = pick(&mut r, &[2, 10, 1000]) as u32;
        config.default_max_deliveries = pick(&mut r, &[1, 3, 5]) as u32;
        config.default_replay_batch = pick(&mut r, &[1, 7, 100]) as u32;
        config.max_read_events = pick(&mut r, &[5, 1000]) as u32;
        // The checker models one append write in flight per stream; pipelined writes (the
        // engine's default of 2) are covered by the core's property tests for now.
        config.max_append_writes_in_flight = 1;

        let mix = Mix {
            append: 30 + r.below(40) as u32,
            retry_append: maybe(&mut r, 700, 5, 20),
            expected_offset: maybe(&mut r, 500, 2, 10),
            read: maybe(&mut r, 700, 2, 8),
            describe: 5 + r.below(10) as u32,
            create_stream: maybe(&mut r, 400, 1, 3),
            create_subscription: 2 + r.below(6) as u32,
            attach: 5 + r.below(10) as u32,
            detach: maybe(&mut r, 600, 1, 5),
            reset: maybe(&mut r, 400, 1, 3),
            replay: maybe(&mut r, 600, 1, 6),
            cancel_replay: maybe(&mut r, 400, 1, 3),
            delete_subscription: maybe(&mut r, 250, 1, 1),
            delete_stream: maybe(&mut r, 200, 1, 1),
            invalid: maybe(&mut r, 500, 1, 4),
            receipt_status: 0,
            register_schema: 0,
        };
        let consumers = ConsumerMix {
            ack: 40 + r.below(60) as u32,
            nack: maybe(&mut r, 600, 3, 20),
            term: maybe(&mut r, 400, 1, 5),
            ignore: maybe(&mut r, 500, 1, 10),
            think_max_ms: pick(&mut r, &[1, 20, 300, 2000]),
            nack_delay: r.coin(),
            mark_read: 0,
        };
        let chaos = r.chance(850);
        let f = |r: &mut SimRng, on: u32, base: u32, spread: u32| {
            if chaos { maybe(r, on, base, spread) } else { 0 }
        };
        let faults = Faults {
            latency_max_us: pick(&mut r, &[0, 100, 5_000, 50_000]),
            spike: f(&mut r, 500, 1, 30),
            spike_max_ms: pick(&mut r, &[10, 200, 2_000]),
            error: f(&mut r, 600, 1, 80),
            unknown_applied: f(&mut r, 600, 1, 60),
            unknown_lost: f(&mut r, 600, 1, 60),
            crash: f(&mut r, 500, 1, 15),
            down_max_ms: pick(&mut r, &[0, 100, 3_000]),
            disconnect: f(&mut r, 500, 1, 20),
            clock_step: f(&mut r, 500, 1, 20),
            clock_step_max_ms: pick(&mut r, &[50, 5_000, 600_000]),
        };
        let mut swarm = Swarm {
            nodes: if r.chance(150) { 2 } else { 1 },
            actions: r.range(150, 900) as u32,
            think_max_ms: pick(&mut r, &[2, 30, 200]),
            config,
            persistent_streams: r.range(1, 3) as u32,
            ephemeral_streams: r.range(0, 2) as u32,
            max_partitions: pick(&mut r, &[1, 2, 4]) as u32,
            keys: pick(&mut r, &[1, 3, 12]) as u32,
            keyed: pick(&mut r, &[0, 500, 1000]) as u32,
            producer_ids: pick(&mut r, &[0, 500, 1000]) as u32,
            batch_max: pick(&mut r, &[1, 4, 20]) as u32,
            dedup_windows: [0u64, 200, 5_000, 600_000]
                .into_iter()
                .filter(|_| r.chance(600))
                .map(Duration::from_millis)
                .collect(),
            ack_waits: [40u64, 500, 5_000, 30_000]
                .into_iter()
                .filter(|_| r.chance(600))
                .map(Duration::from_millis)
                .collect(),
            ordered: pick(&mut r, &[0, 500, 1000]) as u32,
            read_receipts: 0,
            unread_timeouts: Vec::new(),
            json_payloads: 0,
            ask_versions: 0,
            retention: 0,
            cross_service: 0,
            publish_fail: 0,
            publish_twice: 0,
            publish_latency_ms: 1,
            mix,
            consumers,
            faults,
        };
        swarm.add_part2(seed);
        swarm.add_part3(seed);
        swarm
    }

    /// Part 3 features (schemas, retention, the relay), from their own sub-seed.
    fn add_part3(&mut self, seed: u64) {
        let mut r = SimRng::new(seed, "swarm-part3");
        let pick = |r: &mut SimRng, xs: &[u64]| xs[r.below(xs.len() as u64) as usize];
        self.mix.register_schema = maybe(&mut r, 600, 1, 6);
        self.json_payloads = pick(&mut r, &[500, 900, 1000]) as u32;
        self.ask_versions = pick(&mut r, &[0, 300, 700]) as u32;
        self.retention = maybe(&mut r, 500, 300, 700);
        self.cross_service = maybe(&mut r, 500, 300, 700);
        if self.cross_service > 0 {
            self.publish_fail = maybe(&mut r, 600, 5, 200);
            self.publish_twice = maybe(&mut r, 500, 5, 100);
            self.publish_latency_ms = pick(&mut r, &[1, 20, 500]);
            self.config.relay_window = pick(&mut r, &[1, 4, 100]) as usize;
            self.config.relay_retry_base = Duration::from_millis(pick(&mut r, &[2, 50]));
            self.config.relay_retry_max = Duration::from_millis(pick(&mut r, &[100, 2_000]));
        }
        if self.retention > 0 {
            self.config.cleanup_interval = Duration::from_millis(pick(&mut r, &[20, 200, 2_000]));
            // The run starts at midnight UTC; wall clock steps move in and out of a window.
            self.config.cleanup_window = match r.below(4) {
                0 => Some(tributary_core::CleanupWindow { start: 0, end: 4 }),
                1 => Some(tributary_core::CleanupWindow {
                    start: 86_390,
                    end: 6,
                }),
                2 => Some(tributary_core::CleanupWindow { start: 2, end: 600 }),
                _ => None,
            };
        }
    }

    /// Part 2 features (read receipts, ...), drawn from their own sub-seed so that the rest of
    /// a seed's mix stays what it was before they came.
    fn add_part2(&mut self, seed: u64) {
        let mut r = SimRng::new(seed, "swarm-part2");
        let pick = |r: &mut SimRng, xs: &[u64]| xs[r.below(xs.len() as u64) as usize];
        self.read_receipts = pick(&mut r, &[0, 0, 200, 500]) as u32;
        self.mix.receipt_status = if self.read_receipts > 0 {
            2 + r.below(8) as u32
        } else {
            0
        };
        self.consumers.mark_read = pick(&mut r, &[0, 200, 600]) as u32;
        self.unread_timeouts = [30u64, 400, 3_000]
            .into_iter()
            .filter(|_| r.chance(500))
            .map(Duration::from_millis)
            .collect();
    }
}
