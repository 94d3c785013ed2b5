//! Prometheus metrics (SPEC 11), all under the prefix `tributary_`.
//!
//! Counters and the latency histogram count what the engine really did: [`Metrics`] is shown
//! every input and output of the engine by the executor (it implements the executor's
//! observer in `tributary-server`), and counts
//!
//! - `events_published_total{stream, event_type}`: events appended (a duplicate is not counted),
//!   from the append's reply;
//! - `events_consumed_total{stream, subscription, consumer, event_type}`: first deliveries to a
//!   consumer;
//! - `event_retries_total{stream, subscription, consumer, event_type}`: deliveries after the
//!   first (after a nack, an ack wait or an unread timeout);
//! - `event_errors_total{stream, subscription, reason}`: `nack` (events a consumer refused),
//!   `dead_letter` (events moved to the dead letter stream), `publish_refused` (events of
//!   refused appends, `subscription` empty);
//! - `event_processing_latency_seconds{stream, subscription}`: from a delivery to the
//!   consumer's ack (or mark-read) of that event;
//! - `unread_timeouts_total{stream, subscription, consumer}`: read-receipt deliveries not read
//!   within `unread_timeout` (SPEC 6: the engine's `UnreadTimeout` notice, once per delivery);
//! - `journal_write_failures_total` and `journal_dropped_records_total`: the journal's losses,
//!   set from its own counts at each scrape (0 without a journal);
//! - `relay_published_total{stream}`, `relay_confirmed_total{stream}` and
//!   `relay_failed_total{stream}`: the relay's publishes to the broker (a publish sent again
//!   counts again), and their answers;
//! - `inbound_received_total`, `inbound_appended_total`, `inbound_duplicates_total` and
//!   `inbound_dead_lettered_total{..., reason}`, labelled `remote_stream, subscription,
//!   stream`: messages consumed from another service's stream, set from the transport's counts
//!   at each scrape.
//!
//! Gauges are read from the engine when `/metrics` is scraped: `stream_length{stream}`,
//! `consumer_lag{stream, subscription, consumer}` (`consumer` empty for the shared position of
//! an exclusive subscription), `active_consumers{stream, subscription}`,
//! `relay_lag{stream}` (cross-service streams: events not yet confirmed by the broker) and
//! `broker_connection{connection, state}` (1 for the state each broker connection is in,
//! `idle`, `connected` or `disconnected`; `connection` is `publisher` or
//! `inbound:<remote>:<subscription>`).
//!
//! [`Metrics::render`] writes the Prometheus text format 0.0.4 or OpenMetrics 1.0.0
//! ([`Format`], negotiated from `Accept` by [`Format::from_accept`]), with label values
//! escaped.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::collections::HashMap;
use std::sync::Mutex;
use tributary_core::{
    Command, ConnId, Input, MarkRead, Notice, Now, Output, Position, Reply, ReqId, StreamInfo,
    StreamName, SubscriptionInfo,
};

/// The buckets of `event_processing_latency_seconds`: 1 ms to 60 s.
pub const LATENCY_BUCKETS: [f64; 14] = [
    0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
];

/// Deliveries waiting for their ack, kept for the latency histogram at most.
const MAX_TIMED: usize = 65_536;
/// Commands waiting for their reply, kept to count their outcome at most.
const MAX_PENDING: usize = 65_536;
/// `events_published_total` counters kept at hand (stream and event type pairs) at most.
const MAX_CACHED_COUNTERS: usize = 4_096;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamType {
    stream: String,
    event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerType {
    stream: String,
    subscription: String,
    consumer: String,
    event_type: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ErrorLabels {
    stream: String,
    subscription: String,
    reason: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SubLabels {
    stream: String,
    subscription: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConsumerLabels {
    stream: String,
    subscription: String,
    consumer: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StreamLabels {
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ConnectionLabels {
    connection: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InboundLabels {
    remote_stream: String,
    subscription: String,
    stream: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct InboundReasonLabels {
    remote_stream: String,
    subscription: String,
    stream: String,
    reason: String,
}

/// A command whose reply decides what is counted.
#[derive(Debug)]
enum Pending {
    /// An append: the event types of its events in order, as runs of one type.
    Append { stream: StreamName, runs: Runs },
    /// A nack of this many events.
    Nack {
        stream: String,
        subscription: String,
        count: u64,
    },
}

/// Which delivery an ack settles: a hash of (stream, subscription, consumer), and the position
/// (no allocation per delivered event).
type DeliveryKey = (u64, Position);

fn reader_hash(stream: &str, subscription: &str, consumer: &str) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::hash::DefaultHasher::new();
    (stream, subscription, consumer).hash(&mut h);
    h.finish()
}

/// The maps below are written for every append and every delivered event: a fast hasher
/// (their keys are the engine's ids and positions, not a client's strings).
type FastMap<K, V> = HashMap<K, V, foldhash::fast::RandomState>;

/// The runs of an append: a type and the number of events in the run. Most appends have one.
#[derive(Debug)]
enum Runs {
    One((RunType, u64)),
    Many(Vec<(RunType, u64)>),
}

impl Runs {
    fn as_slice(&self) -> &[(RunType, u64)] {
        match self {
            Runs::One(r) => std::slice::from_ref(r),
            Runs::Many(v) => v,
        }
    }
}

/// The type of a run: its counter when one is at hand, or its name (the counter is made when
/// the first event of that type is appended, so a refused append leaves no series).
#[derive(Debug)]
enum RunType {
    Counter(Counter),
    Name(String),
}

#[derive(Debug, Default)]
struct State {
    pending: FastMap<(ConnId, ReqId), Pending>,
    /// The `events_published_total` counters made so far, by stream and event type (found
    /// without allocating; a counter is never removed from its family, so the one at hand is
    /// the one scraped).
    published: FastMap<StreamName, FastMap<String, Counter>>,
    /// Counters in `published`.
    cached: usize,
    /// When each unacknowledged delivery was sent (monotonic nanoseconds), and on which
    /// connection.
    delivered: FastMap<DeliveryKey, (ConnId, u64)>,
    /// The stream of each publish to the broker not answered yet (bounded by the relay
    /// windows).
    publishes: FastMap<tributary_core::OpId, StreamName>,
}

/// The event types of `events` as runs of one type: one entry per run, not per event, with
/// the run's counter when `st` has it.
fn type_runs(st: &State, stream: &StreamName, events: &[tributary_core::NewEvent]) -> Runs {
    let known = st.published.get(stream);
    let mut runs: Option<Runs> = None;
    let mut rest = events;
    while let Some(first) = rest.first() {
        let t = first.event_type.as_str();
        let n = rest.iter().take_while(|e| e.event_type == t).count();
        rest = &rest[n..];
        let ty = match known.and_then(|m| m.get(t)) {
            Some(c) => RunType::Counter(c.clone()),
            None => RunType::Name(t.to_string()),
        };
        let run = (ty, n as u64);
        runs = Some(match runs {
            None => Runs::One(run),
            Some(Runs::One(r)) => Runs::Many(vec![r, run]),
            Some(Runs::Many(mut v)) => {
                v.push(run);
                Runs::Many(v)
            }
        });
    }
    runs.unwrap_or(Runs::Many(Vec::new()))
}

type HistogramFamily = Family<SubLabels, Histogram, fn() -> Histogram>;

/// The metrics registry and the counting observer.
#[derive(Debug)]
pub struct Metrics {
    registry: Registry,
    published: Family<StreamType, Counter>,
    consumed: Family<ConsumerType, Counter>,
    retries: Family<ConsumerType, Counter>,
    errors: Family<ErrorLabels, Counter>,
    latency: HistogramFamily,
    lag: Family<ConsumerLabels, Gauge>,
    length: Family<StreamLabels, Gauge>,
    active: Family<SubLabels, Gauge>,
    unread: Family<ConsumerLabels, Counter>,
    journal_failures: Counter,
    journal_dropped: Counter,
    relay_published: Family<StreamLabels, Counter>,
    relay_confirmed: Family<StreamLabels, Counter>,
    relay_failed: Family<StreamLabels, Counter>,
    relay_lag: Family<StreamLabels, Gauge>,
    broker_connection: Family<ConnectionLabels, Gauge>,
    inbound_received: Family<InboundLabels, Counter>,
    inbound_appended: Family<InboundLabels, Counter>,
    inbound_duplicates: Family<InboundLabels, Counter>,
    inbound_dead: Family<InboundReasonLabels, Counter>,
    state: Mutex<State>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics::new()
    }
}

fn latency_histogram() -> Histogram {
    Histogram::new(LATENCY_BUCKETS)
}

fn gauge_value(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

impl Metrics {
    /// Empty metrics, registered under `tributary_`.
    pub fn new() -> Metrics {
        let mut registry = Registry::with_prefix("tributary");
        let m = Metrics {
            published: Family::default(),
            consumed: Family::default(),
            retries: Family::default(),
            errors: Family::default(),
            latency: Family::new_with_constructor(latency_histogram as fn() -> Histogram),
            lag: Family::default(),
            length: Family::default(),
            active: Family::default(),
            unread: Family::default(),
            journal_failures: Counter::default(),
            journal_dropped: Counter::default(),
            relay_published: Family::default(),
            relay_confirmed: Family::default(),
            relay_failed: Family::default(),
            relay_lag: Family::default(),
            broker_connection: Family::default(),
            inbound_received: Family::default(),
            inbound_appended: Family::default(),
            inbound_duplicates: Family::default(),
            inbound_dead: Family::default(),
            state: Mutex::new(State::default()),
            registry: Registry::default(),
        };
        registry.register(
            "events_published",
            "Events appended to a stream (duplicates not counted)",
            m.published.clone(),
        );
        registry.register(
            "events_consumed",
            "Events delivered to a consumer for the first time",
            m.consumed.clone(),
        );
        registry.register(
            "event_retries",
            "Deliveries of an event after its first (redeliveries)",
            m.retries.clone(),
        );
        registry.register(
            "event_errors",
            "Events that failed: nacked, dead-lettered, or refused on publish",
            m.errors.clone(),
        );
        registry.register(
            "event_processing_latency_seconds",
            "Time from a delivery to the consumer's acknowledgement of it",
            m.latency.clone(),
        );
        registry.register(
            "consumer_lag",
            "Events between a consumer's committed position and the head",
            m.lag.clone(),
        );
        registry.register("stream_length", "Events held by a stream", m.length.clone());
        registry.register(
            "active_consumers",
            "Consumers attached to a subscription",
            m.active.clone(),
        );
        registry.register(
            "unread_timeouts",
            "Read-receipt deliveries not read within the subscription's unread timeout",
            m.unread.clone(),
        );
        registry.register(
            "journal_write_failures",
            "Writes of the engine's journal that failed (a failure ends the journal)",
            m.journal_failures.clone(),
        );
        registry.register(
            "journal_dropped_records",
            "Inputs of the engine that its journal does not hold (after a write failure)",
            m.journal_dropped.clone(),
        );
        registry.register(
            "relay_published",
            "Events of cross-service streams handed to the broker (a publish sent again counts again)",
            m.relay_published.clone(),
        );
        registry.register(
            "relay_confirmed",
            "Publishes of cross-service streams the broker confirmed",
            m.relay_confirmed.clone(),
        );
        registry.register(
            "relay_failed",
            "Publishes of cross-service streams that failed (sent again after a back-off)",
            m.relay_failed.clone(),
        );
        registry.register(
            "relay_lag",
            "Events of a cross-service stream not yet confirmed by the broker",
            m.relay_lag.clone(),
        );
        registry.register(
            "broker_connection",
            "1 for the state each broker connection is in (idle, connected, disconnected)",
            m.broker_connection.clone(),
        );
        registry.register(
            "inbound_received",
            "Messages received from another service's stream (redeliveries included)",
            m.inbound_received.clone(),
        );
        registry.register(
            "inbound_appended",
            "Messages of another service's stream appended to the local stream",
            m.inbound_appended.clone(),
        );
        registry.register(
            "inbound_duplicates",
            "Messages of another service's stream already appended (redeliveries), not appended again",
            m.inbound_duplicates.clone(),
        );
        registry.register(
            "inbound_dead_lettered",
            "Messages of another service's stream moved to the dead-letter queue, by reason",
            m.inbound_dead.clone(),
        );
        Metrics { registry, ..m }
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Counts what an input starts: appends and nacks wait for their reply; an ack or a
    /// mark-read settles the latency of the deliveries it names; a closed connection forgets
    /// its deliveries.
    pub fn on_input(&self, now: Now, input: &Input) {
        let mut st = self.state();
        match input {
            Input::Client { conn, req, cmd } => match cmd {
                Command::Append(a) if st.pending.len() < MAX_PENDING => {
                    let runs = type_runs(&st, &a.stream, &a.events);
                    st.pending.insert(
                        (*conn, *req),
                        Pending::Append {
                            stream: a.stream.clone(),
                            runs,
                        },
                    );
                }
                Command::Nack {
                    stream,
                    subscription,
                    positions,
                    ..
                } if st.pending.len() < MAX_PENDING => {
                    st.pending.insert(
                        (*conn, *req),
                        Pending::Nack {
                            stream: stream.to_string(),
                            subscription: subscription.to_string(),
                            count: positions.len() as u64,
                        },
                    );
                }
                Command::Ack {
                    stream,
                    subscription,
                    consumer,
                    positions,
                } => self.settle(
                    &mut st,
                    now,
                    stream.as_str(),
                    subscription.as_str(),
                    consumer.as_str(),
                    positions,
                ),
                Command::MarkRead {
                    stream,
                    subscription,
                    consumer,
                    read: MarkRead::Positions(positions),
                } => self.settle(
                    &mut st,
                    now,
                    stream.as_str(),
                    subscription.as_str(),
                    consumer.as_str(),
                    positions,
                ),
                _ => {}
            },
            Input::ConnClosed { conn } => {
                st.delivered.retain(|_, (c, _)| c != conn);
                st.pending.retain(|(c, _), _| c != conn);
            }
            Input::PublishDone { op, result } => {
                if let Some(stream) = st.publishes.remove(op) {
                    let family = match result {
                        tributary_core::PublishResult::Confirmed => &self.relay_confirmed,
                        tributary_core::PublishResult::Failed(_) => &self.relay_failed,
                    };
                    family
                        .get_or_create(&StreamLabels {
                            stream: stream.to_string(),
                        })
                        .inc();
                }
            }
            _ => {}
        }
    }

    fn settle(
        &self,
        st: &mut State,
        now: Now,
        stream: &str,
        subscription: &str,
        consumer: &str,
        positions: &[Position],
    ) {
        let reader = reader_hash(stream, subscription, consumer);
        let mut histogram = None;
        for p in positions {
            if let Some((_, at)) = st.delivered.remove(&(reader, *p)) {
                let secs = now.mono.0.saturating_sub(at) as f64 / 1e9;
                // The label set is looked up once per ack, not once per position.
                histogram
                    .get_or_insert_with(|| {
                        self.latency.get_or_create_owned(&SubLabels {
                            stream: stream.to_string(),
                            subscription: subscription.to_string(),
                        })
                    })
                    .observe(secs);
            }
        }
    }

    /// Counts what an output says happened: appends answered, deliveries, dead letters, unread
    /// timeouts.
    pub fn on_output(&self, now: Now, output: &Output) {
        match output {
            Output::Reply { conn, req, reply } => {
                let Some(p) = self.state().pending.remove(&(*conn, *req)) else {
                    return;
                };
                match (p, reply) {
                    (Pending::Append { stream, runs }, Ok(Reply::Appended(outcomes))) => {
                        // One label set per run of events of the same type; duplicates are
                        // not counted.
                        let mut outcomes = outcomes.iter();
                        for (ty, len) in runs.as_slice() {
                            let appended = outcomes
                                .by_ref()
                                .take(usize::try_from(*len).unwrap_or(usize::MAX))
                                .filter(|o| matches!(o, tributary_core::AppendOutcome::Appended(_)))
                                .count() as u64;
                            if appended == 0 {
                                continue;
                            }
                            match ty {
                                RunType::Counter(c) => {
                                    c.inc_by(appended);
                                }
                                RunType::Name(t) => self.count_published(&stream, t, appended),
                            }
                        }
                    }
                    (Pending::Append { stream, runs }, Err(_)) => {
                        self.errors
                            .get_or_create(&ErrorLabels {
                                stream: stream.to_string(),
                                subscription: String::new(),
                                reason: "publish_refused".into(),
                            })
                            .inc_by(runs.as_slice().iter().map(|(_, n)| n).sum());
                    }
                    (
                        Pending::Nack {
                            stream,
                            subscription,
                            count,
                        },
                        Ok(_),
                    ) => {
                        self.errors
                            .get_or_create(&ErrorLabels {
                                stream,
                                subscription,
                                reason: "nack".into(),
                            })
                            .inc_by(count);
                    }
                    _ => {}
                }
            }
            Output::Deliver {
                conn,
                stream,
                subscription,
                consumer,
                events,
            } => {
                // Counted per event type and attempt kind, one label set each.
                let mut counts: Vec<(&str, bool, u64)> = Vec::new();
                let reader = reader_hash(stream.as_str(), subscription.as_str(), consumer.as_str());
                let mut st = self.state();
                for d in events {
                    let first = d.attempt <= 1;
                    match counts
                        .iter_mut()
                        .find(|(t, f, _)| *t == d.event.event_type && *f == first)
                    {
                        Some(c) => c.2 += 1,
                        None => counts.push((&d.event.event_type, first, 1)),
                    }
                    let key = (
                        reader,
                        Position {
                            partition: d.event.partition,
                            offset: d.event.offset,
                        },
                    );
                    if st.delivered.len() < MAX_TIMED || st.delivered.contains_key(&key) {
                        st.delivered.insert(key, (*conn, now.mono.0));
                    }
                }
                drop(st);
                for (event_type, first, n) in counts {
                    let labels = ConsumerType {
                        stream: stream.to_string(),
                        subscription: subscription.to_string(),
                        consumer: consumer.to_string(),
                        event_type: event_type.to_string(),
                    };
                    if first {
                        self.consumed.get_or_create(&labels).inc_by(n);
                    } else {
                        self.retries.get_or_create(&labels).inc_by(n);
                    }
                }
            }
            Output::Publish { op, stream, .. } => {
                let mut st = self.state();
                if st.publishes.len() < MAX_PENDING {
                    st.publishes.insert(*op, stream.clone());
                }
                drop(st);
                self.relay_published
                    .get_or_create(&StreamLabels {
                        stream: stream.to_string(),
                    })
                    .inc();
            }
            Output::Notice(Notice::DeadLettered {
                stream,
                subscription,
                ..
            }) => {
                self.errors
                    .get_or_create(&ErrorLabels {
                        stream: stream.to_string(),
                        subscription: subscription.to_string(),
                        reason: "dead_letter".into(),
                    })
                    .inc();
            }
            Output::Notice(Notice::UnreadTimeout {
                stream,
                subscription,
                consumer,
                ..
            }) => {
                self.unread
                    .get_or_create(&ConsumerLabels {
                        stream: stream.to_string(),
                        subscription: subscription.to_string(),
                        consumer: consumer.to_string(),
                    })
                    .inc();
            }
            _ => {}
        }
    }

    /// Counts `n` events published of a type that had no counter at hand when its append came
    /// in, and keeps the counter at hand (up to `MAX_CACHED_COUNTERS`).
    fn count_published(&self, stream: &StreamName, event_type: &str, n: u64) {
        let counter = self
            .published
            .get_or_create(&StreamType {
                stream: stream.to_string(),
                event_type: event_type.to_string(),
            })
            .clone();
        counter.inc_by(n);
        let mut st = self.state();
        if st.cached < MAX_CACHED_COUNTERS {
            let types = st.published.entry(stream.clone()).or_default();
            if !types.contains_key(event_type) {
                types.insert(event_type.to_string(), counter);
                st.cached += 1;
            }
        }
    }

    /// Sets the gauges from the engine's state: every stream with its subscriptions.
    pub fn set_gauges(&self, streams: &[(StreamInfo, Vec<SubscriptionInfo>)]) {
        self.length.clear();
        self.lag.clear();
        self.active.clear();
        self.relay_lag.clear();
        for (s, subs) in streams {
            let stream = s.config.name.to_string();
            if let Some(lag) = crate::relay_lag(s) {
                self.relay_lag
                    .get_or_create(&StreamLabels {
                        stream: stream.clone(),
                    })
                    .set(gauge_value(lag));
            }
            self.length
                .get_or_create(&StreamLabels {
                    stream: stream.clone(),
                })
                .set(gauge_value(s.length()));
            for sub in subs {
                let subscription = sub.config.name.to_string();
                self.active
                    .get_or_create(&SubLabels {
                        stream: stream.clone(),
                        subscription: subscription.clone(),
                    })
                    .set(gauge_value(sub.attached.len() as u64));
                for (consumer, figures) in crate::health::positions(sub) {
                    self.lag
                        .get_or_create(&ConsumerLabels {
                            stream: stream.clone(),
                            subscription: subscription.clone(),
                            consumer: consumer.unwrap_or_default(),
                        })
                        .set(gauge_value(figures.lag));
                }
            }
        }
    }

    /// Sets the broker's gauges and the inbound counters to what the transport has counted
    /// (the counters only grow).
    pub fn set_broker(&self, b: &crate::BrokerFigures) {
        // One scrape at a time moves them, so that two do not add the same difference.
        let _st = self.state();
        self.broker_connection.clear();
        let state = |connection: String, c: &crate::ConnectionFigures| {
            for s in crate::BrokerState::ALL {
                self.broker_connection
                    .get_or_create(&ConnectionLabels {
                        connection: connection.clone(),
                        state: s.as_str().into(),
                    })
                    .set(i64::from(c.state == s));
            }
        };
        state("publisher".into(), &b.publisher);
        for i in &b.inbound {
            state(
                format!("inbound:{}:{}", i.remote_stream, i.subscription),
                &i.connection,
            );
            let labels = InboundLabels {
                remote_stream: i.remote_stream.clone(),
                subscription: i.subscription.clone(),
                stream: i.stream.clone(),
            };
            for (family, total) in [
                (&self.inbound_received, i.received),
                (&self.inbound_appended, i.appended),
                (&self.inbound_duplicates, i.duplicates),
            ] {
                let c = family.get_or_create(&labels);
                c.inc_by(total.saturating_sub(c.get()));
            }
            for (reason, total) in &i.dead_lettered {
                let c = self.inbound_dead.get_or_create(&InboundReasonLabels {
                    remote_stream: i.remote_stream.clone(),
                    subscription: i.subscription.clone(),
                    stream: i.stream.clone(),
                    reason: reason.clone(),
                });
                c.inc_by(total.saturating_sub(c.get()));
            }
        }
    }

    /// Sets the journal's counters to what it has counted (they only grow).
    pub fn set_journal(&self, j: &crate::JournalFigures) {
        // One scrape at a time moves them, so that two do not add the same difference.
        let _st = self.state();
        for (counter, total) in [
            (&self.journal_failures, j.write_failures),
            (&self.journal_dropped, j.dropped),
        ] {
            counter.inc_by(total.saturating_sub(counter.get()));
        }
    }

    /// The metrics in `format`. Label values are escaped (`\\`, `"` and newlines) as both
    /// formats require, so any event type or consumer id leaves the exposition parseable.
    pub fn render(&self, format: Format) -> String {
        let mut out = String::new();
        // Writing to a String cannot fail.
        let _ = match format {
            Format::Text => {
                prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            }
            Format::OpenMetrics => {
                prometheus_client::encoding::text::encode(&mut out, &self.registry)
            }
        };
        out
    }
}

/// The exposition formats `/metrics` serves, chosen from the request's `Accept` header as
/// Prometheus's own client libraries choose: OpenMetrics only when the client asks for it,
/// else the text format 0.0.4.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// The Prometheus text format 0.0.4: a counter's `# HELP` and `# TYPE` name its samples
    /// (`..._total`); no `# UNIT`, no `# EOF`.
    Text,
    /// OpenMetrics 1.0.0: a counter's family is named without `_total`; ends with `# EOF`.
    OpenMetrics,
}

/// The `Content-Type` of [`Format::Text`].
pub const TEXT_CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
/// The `Content-Type` of [`Format::OpenMetrics`].
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";

impl Format {
    /// The `Content-Type` of an answer in this format.
    pub fn content_type(self) -> &'static str {
        match self {
            Format::Text => TEXT_CONTENT_TYPE,
            Format::OpenMetrics => OPENMETRICS_CONTENT_TYPE,
        }
    }

    /// The format to answer an `Accept` header with (`None`: no header). Each media range is
    /// weighed by its `q` (1 when absent; 0 refuses it), then by how specific it is (a type
    /// before `text/*` before `*/*`), then by its place in the header. Served:
    /// `application/openmetrics-text` (without a version or `version=1.0.0`) as OpenMetrics;
    /// `text/plain` (without a version or `version=0.0.4`), `text/*` and `*/*` as the text
    /// format. A header that accepts neither gets the text format, as Prometheus's client
    /// libraries answer it.
    pub fn from_accept(accept: Option<&str>) -> Format {
        let mut best: Option<(f32, u8, Format)> = None;
        for range in accept.unwrap_or("").split(',') {
            let Ok(m) = range.trim().parse::<mime::Mime>() else {
                continue;
            };
            let q = match m.get_param("q") {
                None => 1.0,
                Some(q) => match q.as_str().parse::<f32>() {
                    Ok(q) if (0.0..=1.0).contains(&q) => q,
                    _ => continue,
                },
            };
            let version = m.get_param("version").map(|v| v.as_str().to_string());
            let (specific, format) = match (m.type_().as_str(), m.subtype().as_str()) {
                ("application", "openmetrics-text")
                    if version.as_deref().is_none_or(|v| v == "1.0.0") =>
                {
                    (2, Format::OpenMetrics)
                }
                ("text", "plain") if version.as_deref().is_none_or(|v| v == "0.0.4") => {
                    (2, Format::Text)
                }
                ("text", "*") => (1, Format::Text),
                ("*", "*") => (0, Format::Text),
                _ => continue,
            };
            if q > 0.0 && best.is_none_or(|(bq, bs, _)| (q, specific) > (bq, bs)) {
                best = Some((q, specific, format));
            }
        }
        best.map_or(Format::Text, |(_, _, f)| f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;
    use tributary_core::{
        AppendOutcome, AppendRequest, ConsumerId, Delivered, Error, Event, EventId, MonoNanos,
        NewEvent, StreamName, SubscriptionName, UnixMillis,
    };

    fn now(ms: u64) -> Now {
        Now {
            mono: MonoNanos(ms * 1_000_000),
            wall: UnixMillis(ms),
        }
    }

    fn name(s: &str) -> StreamName {
        StreamName::new(s).expect("name")
    }

    fn delivered(offset: u64, attempt: u32) -> Delivered {
        let e = Event::from_new(
            NewEvent::new("t", "{}"),
            EventId::from_bytes([offset as u8; 16]),
            name("s"),
            0,
            offset,
            UnixMillis(0),
        );
        Delivered {
            event: Arc::new(e),
            attempt,
        }
    }

    fn value(m: &Metrics, line_start: &str) -> f64 {
        m.render(Format::OpenMetrics)
            .lines()
            .find(|l| l.starts_with(line_start))
            .and_then(|l| l.rsplit_once(' '))
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0.0)
    }

    /// An append of one event per type in `types`, as the engine's input.
    fn append_input(conn: ConnId, req: u64, types: &[&str]) -> Input {
        Input::Client {
            conn,
            req: ReqId(req),
            cmd: Command::Append(AppendRequest {
                stream: name("s"),
                events: types.iter().map(|t| NewEvent::new(*t, "{}")).collect(),
                expected_offset: None,
            }),
        }
    }

    /// An event type and a consumer id holding every character the exposition formats
    /// escape (`"`, `\\` and, in the event type, a newline; a consumer id is printable ASCII),
    /// and the characters that delimit labels.
    const HOSTILE_TYPE: &str = "odd\"type\\with\nnewline},x=\"y";
    const HOSTILE_CONSUMER: &str = "c\"o\\n},s=\"u";

    /// Every (family, label name, label value) of a parsed exposition (the parser unescapes
    /// the values).
    fn labels_of<T: Clone, V: Clone + openmetrics_parser::RenderableMetricValue>(
        families: &std::collections::HashMap<String, openmetrics_parser::MetricFamily<T, V>>,
    ) -> Vec<(String, String, String)> {
        let mut out = Vec::new();
        for (name, family) in families {
            for sample in family.iter_samples() {
                let set = sample.get_labelset().expect("a sample's labels");
                for (k, v) in set.iter() {
                    out.push((name.clone(), k.clone(), v.clone()));
                }
            }
        }
        out
    }

    /// A workload whose event type and consumer id hold what the formats must escape.
    fn hostile_workload() -> Metrics {
        let m = Metrics::new();
        let conn = ConnId(1);
        m.on_input(now(0), &append_input(conn, 1, &[HOSTILE_TYPE]));
        let p = Position {
            partition: 0,
            offset: 0,
        };
        m.on_output(
            now(1),
            &Output::Reply {
                conn,
                req: ReqId(1),
                reply: Ok(Reply::Appended(vec![AppendOutcome::Appended(p)])),
            },
        );
        let event = Event::from_new(
            NewEvent::new(HOSTILE_TYPE, "{}"),
            EventId::from_bytes([9; 16]),
            name("s"),
            0,
            0,
            UnixMillis(0),
        );
        let d = Delivered {
            event: Arc::new(event),
            attempt: 1,
        };
        let again = Delivered {
            attempt: 2,
            ..d.clone()
        };
        let consumer = ConsumerId::new(HOSTILE_CONSUMER).expect("a valid consumer id");
        for d in [d, again] {
            m.on_output(
                now(2),
                &Output::Deliver {
                    conn,
                    stream: name("s"),
                    subscription: SubscriptionName::new("q").expect("sub"),
                    consumer: consumer.clone(),
                    events: vec![d],
                },
            );
        }
        m
    }

    #[test]
    fn hostile_label_values_are_escaped_and_both_formats_parse() {
        let m = hostile_workload();
        let want = |labels: &[(String, String, String)], family: &str| {
            for (name, value) in [("event_type", HOSTILE_TYPE), ("consumer", HOSTILE_CONSUMER)] {
                if family.starts_with("tributary_events_published") && name == "consumer" {
                    continue;
                }
                assert!(
                    labels.contains(&(family.into(), name.into(), value.into())),
                    "{family} {name}: {labels:?}"
                );
            }
        };
        let text = m.render(Format::OpenMetrics);
        let parsed = openmetrics_parser::openmetrics::parse_openmetrics(&text)
            .unwrap_or_else(|e| panic!("OpenMetrics does not parse ({e:?}):\n{text}"));
        let labels = labels_of(&parsed.families);
        for family in [
            "tributary_events_published",
            "tributary_events_consumed",
            "tributary_event_retries",
        ] {
            want(&labels, family);
        }
        let text = m.render(Format::Text);
        let parsed = openmetrics_parser::prometheus::parse_prometheus(&text)
            .unwrap_or_else(|e| panic!("the text format does not parse ({e:?}):\n{text}"));
        let labels = labels_of(&parsed.families);
        for family in [
            "tributary_events_published_total",
            "tributary_events_consumed_total",
            "tributary_event_retries_total",
        ] {
            want(&labels, family);
        }
        // The escapes themselves, as both formats write them.
        assert!(
            text.contains(r#"event_type="odd\"type\\with\nnewline},x=\"y""#),
            "{text}"
        );
    }

    #[test]
    fn unread_timeouts_are_counted_per_consumer() {
        let m = Metrics::new();
        let timeout = |consumer: &str, offset| {
            Output::Notice(Notice::UnreadTimeout {
                stream: name("s"),
                subscription: SubscriptionName::new("q").expect("sub"),
                consumer: ConsumerId::new(consumer).expect("consumer"),
                position: Position {
                    partition: 0,
                    offset,
                },
                redelivered: offset % 2 == 0,
                event: None,
            })
        };
        m.on_output(now(1), &timeout("c1", 0));
        m.on_output(now(2), &timeout("c1", 1));
        m.on_output(now(3), &timeout("c2", 1));
        let series = |c: &str| {
            format!(
                "tributary_unread_timeouts_total{{stream=\"s\",subscription=\"q\",consumer=\"{c}\"}}"
            )
        };
        assert_eq!(value(&m, &series("c1")), 2.0);
        assert_eq!(value(&m, &series("c2")), 1.0);
        assert!(
            m.render(Format::Text)
                .contains("# TYPE tributary_unread_timeouts_total counter\n")
        );
    }

    #[test]
    fn the_relay_and_the_broker_are_counted() {
        let m = Metrics::new();
        let e = Arc::new(delivered(0, 1).event.as_ref().clone());
        let publish = |op| Output::Publish {
            op: tributary_core::OpId(op),
            stream: name("s"),
            event: e.clone(),
        };
        let done = |op, result| Input::PublishDone {
            op: tributary_core::OpId(op),
            result,
        };
        for op in [1, 2, 3] {
            m.on_output(now(0), &publish(op));
        }
        m.on_input(now(1), &done(1, tributary_core::PublishResult::Confirmed));
        m.on_input(
            now(1),
            &done(2, tributary_core::PublishResult::Failed("x".into())),
        );
        m.on_input(now(1), &done(9, tributary_core::PublishResult::Confirmed));
        let series = |n: &str| value(&m, &format!("tributary_relay_{n}_total{{stream=\"s\"}}"));
        assert_eq!(
            (series("published"), series("confirmed"), series("failed")),
            (3.0, 1.0, 1.0),
            "an answer to an unknown publish counts nothing"
        );

        let figures = |received, state| crate::BrokerFigures {
            publisher: crate::ConnectionFigures {
                state,
                last_error: None,
            },
            inbound: vec![crate::InboundFigures {
                remote_stream: "o".into(),
                subscription: "b".into(),
                stream: "l".into(),
                connection: crate::ConnectionFigures {
                    state: crate::BrokerState::Connected,
                    last_error: None,
                },
                received,
                appended: 4,
                duplicates: 1,
                dead_lettered: vec![("no_id".into(), 2), ("refused".into(), 0)],
            }],
        };
        m.set_broker(&figures(7, crate::BrokerState::Disconnected));
        // Totals are set, not added: a second scrape with the same totals changes nothing.
        m.set_broker(&figures(7, crate::BrokerState::Connected));
        let labels = "remote_stream=\"o\",subscription=\"b\",stream=\"l\"";
        let inbound = |n: &str| value(&m, &format!("tributary_inbound_{n}_total{{{labels}}}"));
        assert_eq!(
            (
                inbound("received"),
                inbound("appended"),
                inbound("duplicates")
            ),
            (7.0, 4.0, 1.0)
        );
        assert_eq!(
            value(
                &m,
                &format!("tributary_inbound_dead_lettered_total{{{labels},reason=\"no_id\"}}")
            ),
            2.0
        );
        let state = |c: &str, s: &str| {
            value(
                &m,
                &format!("tributary_broker_connection{{connection=\"{c}\",state=\"{s}\"}}"),
            )
        };
        assert_eq!(
            (
                state("publisher", "connected"),
                state("publisher", "disconnected"),
                state("inbound:o:b", "connected")
            ),
            (1.0, 0.0, 1.0)
        );
    }

    #[test]
    fn the_format_follows_accept() {
        let f = |a: &str| Format::from_accept(Some(a));
        assert_eq!(Format::from_accept(None), Format::Text);
        assert_eq!(f(""), Format::Text);
        assert_eq!(f("text/plain;version=0.0.4"), Format::Text);
        assert_eq!(f("*/*"), Format::Text);
        assert_eq!(f("application/json"), Format::Text);
        assert_eq!(f("application/openmetrics-text"), Format::OpenMetrics);
        assert_eq!(
            f("application/openmetrics-text; version=1.0.0; charset=utf-8"),
            Format::OpenMetrics
        );
        // What Prometheus sends.
        assert_eq!(
            f(
                "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
            ),
            Format::OpenMetrics
        );
        // Weights, then specificity, then order.
        assert_eq!(
            f("application/openmetrics-text;q=0.2, text/plain;q=0.9"),
            Format::Text
        );
        assert_eq!(f("*/*, application/openmetrics-text"), Format::OpenMetrics);
        assert_eq!(f("text/plain, application/openmetrics-text"), Format::Text);
        assert_eq!(f("application/openmetrics-text;q=0, */*"), Format::Text);
        // A version not served is not taken; a malformed range or weight is skipped.
        assert_eq!(
            f("application/openmetrics-text;version=0.0.1"),
            Format::Text
        );
        assert_eq!(f("text/plain;version=9"), Format::Text);
        assert_eq!(f("garbage, application/openmetrics-text;q=2"), Format::Text);
        assert_eq!(
            f("garbage, application/openmetrics-text;q=0.5"),
            Format::OpenMetrics
        );
    }

    #[test]
    fn counts_appends_from_their_reply_deliveries_by_attempt_and_latency_to_the_ack() {
        let m = Metrics::new();
        let (conn, req) = (ConnId(1), ReqId(7));
        m.on_input(now(0), &append_input(conn, req.0, &["a", "a"]));
        // Nothing is counted before the reply; a duplicate is not counted.
        assert_eq!(value(&m, "tributary_events_published_total"), 0.0);
        let p = Position {
            partition: 0,
            offset: 0,
        };
        m.on_output(
            now(1),
            &Output::Reply {
                conn,
                req,
                reply: Ok(Reply::Appended(vec![
                    AppendOutcome::Appended(p),
                    AppendOutcome::Duplicate { original: p },
                ])),
            },
        );
        assert_eq!(
            value(
                &m,
                "tributary_events_published_total{stream=\"s\",event_type=\"a\"}"
            ),
            1.0
        );
        // Mixed types in one append: each counted under its own type.
        m.on_input(now(1), &append_input(conn, 8, &["a", "a", "b", "a"]));
        m.on_output(
            now(1),
            &Output::Reply {
                conn,
                req: ReqId(8),
                reply: Ok(Reply::Appended(vec![AppendOutcome::Appended(p); 4])),
            },
        );
        let published = |t: &str| {
            value(
                &m,
                &format!("tributary_events_published_total{{stream=\"s\",event_type=\"{t}\"}}"),
            )
        };
        assert_eq!((published("a"), published("b")), (4.0, 1.0));
        // A duplicate inside a run of one type: the rest of the run and the next run count.
        m.on_input(now(1), &append_input(conn, 9, &["b", "b", "b", "a"]));
        m.on_output(
            now(1),
            &Output::Reply {
                conn,
                req: ReqId(9),
                reply: Ok(Reply::Appended(vec![
                    AppendOutcome::Appended(p),
                    AppendOutcome::Duplicate { original: p },
                    AppendOutcome::Appended(p),
                    AppendOutcome::Appended(p),
                ])),
            },
        );
        assert_eq!((published("a"), published("b")), (5.0, 3.0));
        // A refused append counts its events as errors.
        let refused = |req| Output::Reply {
            conn,
            req: ReqId(req),
            reply: Err(Error::Unavailable("x".into())),
        };
        m.on_input(now(1), &append_input(conn, 8, &["a"]));
        m.on_output(now(1), &refused(8));
        assert_eq!(value(&m, "tributary_event_errors_total"), 1.0);
        assert_eq!((published("a"), published("b")), (5.0, 3.0));
        // A type first seen in a refused append gets no series.
        m.on_input(now(1), &append_input(conn, 10, &["z"]));
        m.on_output(now(1), &refused(10));
        assert!(!m.render(Format::OpenMetrics).contains("event_type=\"z\""));
        // The same type in another stream is its own series.
        let mut other = append_input(conn, 11, &["a"]);
        if let Input::Client {
            cmd: Command::Append(a),
            ..
        } = &mut other
        {
            a.stream = name("t");
        }
        m.on_input(now(1), &other);
        m.on_output(
            now(1),
            &Output::Reply {
                conn,
                req: ReqId(11),
                reply: Ok(Reply::Appended(vec![AppendOutcome::Appended(p)])),
            },
        );
        let in_t = "tributary_events_published_total{stream=\"t\",event_type=\"a\"}";
        assert_eq!((value(&m, in_t), published("a")), (1.0, 5.0));
        let deliver = |events| Output::Deliver {
            conn,
            stream: name("s"),
            subscription: SubscriptionName::new("q").expect("sub"),
            consumer: ConsumerId::new("c").expect("consumer"),
            events,
        };
        m.on_output(now(10), &deliver(vec![delivered(0, 1), delivered(1, 2)]));
        assert_eq!(value(&m, "tributary_events_consumed_total"), 1.0);
        assert_eq!(value(&m, "tributary_event_retries_total"), 1.0);
        m.on_input(
            now(260),
            &Input::Client {
                conn,
                req: ReqId(9),
                cmd: Command::Ack {
                    stream: name("s"),
                    subscription: SubscriptionName::new("q").expect("sub"),
                    consumer: ConsumerId::new("c").expect("consumer"),
                    positions: vec![p],
                },
            },
        );
        // 250 ms from delivery to ack: in the 0.25 bucket, not in 0.1.
        assert_eq!(
            value(&m, "tributary_event_processing_latency_seconds_count"),
            1.0
        );
        assert_eq!(
            value(
                &m,
                "tributary_event_processing_latency_seconds_bucket{le=\"0.1\""
            ),
            0.0
        );
        assert_eq!(
            value(
                &m,
                "tributary_event_processing_latency_seconds_bucket{le=\"0.25\""
            ),
            1.0
        );
        // A closed connection forgets its deliveries: a late ack times nothing.
        m.on_input(now(300), &Input::ConnClosed { conn });
        assert!(m.state().delivered.is_empty());
    }
}
