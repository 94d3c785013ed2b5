//! The reference model: what SPEC says the engine holds, kept as plainly as possible from what
//! crosses the engine's boundary (commands, replies, deliveries, storage requests and their
//! completions). Ordered maps only; no cleverness.

use bytes::Bytes;
use std::collections::{BTreeMap, BTreeSet};
use tributary_core::{
    ConnId, ConsumerId, CursorRecord, DeliverySemantics, Event, EventId, MonoNanos, NewEvent,
    Position, ReplayFrom, ReplayOptions, StreamConfig, SubscriptionConfig, SubscriptionMode,
    UnixMillis,
};
use xxhash_rust::xxh3::Xxh3;

/// The content of an event, as a producer sent it: type, version, key, ids, headers, payload.
#[allow(clippy::too_many_arguments)]
pub fn digest_parts(
    event_type: &str,
    schema_version: u32,
    key: Option<&Bytes>,
    correlation: Option<&String>,
    causation: Option<&String>,
    headers: &BTreeMap<String, String>,
    content_type: &str,
    payload: &[u8],
) -> u64 {
    let mut h = Xxh3::new();
    let field = |h: &mut Xxh3, b: &[u8]| {
        h.update(&(b.len() as u64).to_le_bytes());
        h.update(b);
    };
    field(&mut h, event_type.as_bytes());
    h.update(&schema_version.to_le_bytes());
    for o in [
        key.map(|k| &k[..]),
        correlation.map(|s| s.as_bytes()),
        causation.map(|s| s.as_bytes()),
    ] {
        match o {
            Some(b) => {
                h.update(&[1]);
                field(&mut h, b);
            }
            None => h.update(&[0]),
        }
    }
    for (k, v) in headers {
        field(&mut h, k.as_bytes());
        field(&mut h, v.as_bytes());
    }
    field(&mut h, content_type.as_bytes());
    field(&mut h, payload);
    h.digest()
}

/// The content digest of a producer's event.
pub fn digest_new(e: &NewEvent) -> u64 {
    digest_parts(
        &e.event_type,
        e.schema_version,
        e.key.as_ref(),
        e.correlation_id.as_ref(),
        e.causation_id.as_ref(),
        &e.headers,
        &e.content_type,
        &e.payload,
    )
}

/// The content digest of a stored event (equal to `digest_new` of what the producer sent).
pub fn digest_event(e: &Event) -> u64 {
    digest_parts(
        &e.event_type,
        e.schema_version,
        e.key.as_ref(),
        e.correlation_id.as_ref(),
        e.causation_id.as_ref(),
        &e.headers,
        &e.content_type,
        &e.payload,
    )
}

/// What a reader's version shaping depends on, as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Content {
    /// The event type.
    pub event_type: String,
    /// The stored schema version.
    pub schema_version: u32,
    /// The content type.
    pub content_type: String,
    /// The stored payload.
    pub payload: Bytes,
}

impl Content {
    /// Of a stored event.
    pub fn of_event(e: &Event) -> std::sync::Arc<Content> {
        std::sync::Arc::new(Content {
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            content_type: e.content_type.clone(),
            payload: e.payload.clone(),
        })
    }

    /// Of a producer's event.
    pub fn of_new(e: &NewEvent) -> std::sync::Arc<Content> {
        std::sync::Arc::new(Content {
            event_type: e.event_type.clone(),
            schema_version: e.schema_version,
            content_type: e.content_type.clone(),
            payload: e.payload.clone(),
        })
    }
}

/// An event the model knows at a position.
#[derive(Debug, Clone)]
pub struct EvM {
    /// Its id (`None`: an ephemeral event whose id the core assigned).
    pub id: Option<EventId>,
    /// Its content digest.
    pub digest: u64,
    /// Bytes it counts for in size limits.
    pub size: u64,
    /// Confirmed: the store committed it (persistent) or the engine answered it (ephemeral).
    pub confirmed: bool,
    /// What shaping to a reader's version depends on.
    pub content: std::sync::Arc<Content>,
    /// Its timestamp (persistent events; zero when unknown).
    pub ts: u64,
    /// Bytes retention's `max_bytes` counts: payload and key.
    pub bytes: u64,
}

/// A producer id in the model's dedup view.
#[derive(Debug, Clone, Copy)]
pub struct IdM {
    /// Where it was written.
    pub pos: Position,
    /// A lower bound of when it leaves the window.
    pub expires_at: UnixMillis,
    /// Its write was committed (it cannot have been popped from the window).
    pub confirmed: bool,
}

/// A stream as the model sees it.
#[derive(Debug, Clone)]
pub struct StreamM {
    /// Its configuration.
    pub config: StreamConfig,
    /// The engine's committed next offset per partition (exact: it moves on commit/recovery).
    pub heads: Vec<u64>,
    /// Events written (or, ephemeral, answered), by (partition, offset).
    pub events: BTreeMap<(u32, u64), EvM>,
    /// Producer ids: the last copy written.
    pub ids: BTreeMap<EventId, IdM>,
    /// Every position each producer id was written at (an id may be appended again once its
    /// window passed; a `Duplicate` may name any copy).
    pub copies: BTreeMap<EventId, std::collections::BTreeSet<Position>>,
    /// A delete of it was requested (it may be gone).
    pub delete_requested: bool,
    /// Ephemeral: the highest first offset seen.
    pub first_seen: u64,
    /// Persistent: per partition, the first offset retention is known to have kept (a
    /// truncation the store confirmed, or recovered).
    pub first: Vec<u64>,
    /// Persistent: per partition, the highest first offset a truncation asked for (it may
    /// have happened even if not confirmed).
    pub cut_sent: Vec<u64>,
}

impl StreamM {
    /// A new, empty stream.
    pub fn new(config: StreamConfig) -> StreamM {
        let n = config.partitions as usize;
        StreamM {
            config,
            heads: vec![0; n],
            events: BTreeMap::new(),
            ids: BTreeMap::new(),
            copies: BTreeMap::new(),
            delete_requested: false,
            first_seen: 0,
            first: vec![0; n],
            cut_sent: vec![0; n],
        }
    }

    /// Whether events live in memory only.
    pub fn ephemeral(&self) -> bool {
        self.config.is_ephemeral()
    }
}

/// A delivery not yet answered.
#[derive(Debug, Clone)]
pub struct Flight {
    /// Who holds it.
    pub consumer: ConsumerId,
    /// When its ack wait ends.
    pub deadline: MonoNanos,
}

/// One cursor of a subscription in one partition.
#[derive(Debug, Clone, Default)]
pub struct CurPartM {
    /// The last position the store confirmed (floor, acked offsets above it).
    pub saved: Option<(u64, BTreeSet<u64>)>,
    /// The last position sent to the store in this engine's life.
    pub last_sent: Option<(u64, BTreeSet<u64>)>,
    /// Offsets whose ack the engine confirmed (all positions of an `Acked` reply).
    pub acked: BTreeSet<u64>,
    /// Consumer groups that commit later than each ack: offsets whose ack the engine
    /// confirmed before committing it (a crash may deliver them again).
    pub acked_uncommitted: BTreeSet<u64>,
    /// Offsets a consumer sent an ack for in this engine life (the engine's position may
    /// cover them before a save does).
    pub ack_asked: BTreeSet<u64>,
    /// Deliveries in flight.
    pub in_flight: BTreeMap<u64, Flight>,
    /// Not to be delivered again before this time (nack delay, dead letter failure).
    pub not_before: BTreeMap<u64, MonoNanos>,
    /// Last attempt number delivered, this engine life.
    pub last_attempt: BTreeMap<u64, u32>,
    /// Ordered by key: offsets delivered and not settled, per key.
    pub pending_keys: BTreeMap<Bytes, BTreeSet<u64>>,
    /// Every offset ever delivered (coverage, until a reset).
    pub delivered: BTreeSet<u64>,
    /// Offsets delivered in this engine life since the last reset.
    pub delivered_now: BTreeSet<u64>,
    /// At-most-once offsets sent, this engine life since the last reset.
    pub amo_sent: BTreeSet<u64>,
    /// At-most-once offsets sent in any engine life since the last reset (persistent streams
    /// save the position before sending, so not even a crash sends one twice).
    pub amo_ever: BTreeSet<u64>,
    /// Last ack floor seen by a describe, this engine life.
    pub describe_floor: Option<u64>,
}

impl CurPartM {
    /// Whether `o` is known acknowledged (durably saved, or confirmed by an ack reply).
    pub fn is_acked(&self, o: u64) -> bool {
        self.acked.contains(&o)
            || self.acked_uncommitted.contains(&o)
            || self.saved.as_ref().is_some_and(|s| covers(s, o))
    }

    /// Forgets everything a reset or a restart voids.
    pub fn forget_volatile(&mut self) {
        self.in_flight.clear();
        self.not_before.clear();
        self.last_attempt.clear();
        self.pending_keys.clear();
        self.delivered_now.clear();
        self.amo_sent.clear();
        self.ack_asked.clear();
        self.acked_uncommitted.clear();
        self.describe_floor = None;
        self.last_sent = None;
    }

    /// Removes `o` from the key it waits on.
    pub fn unpend_key(&mut self, o: u64) {
        self.pending_keys.retain(|_, offs| {
            offs.remove(&o);
            !offs.is_empty()
        });
    }
}

/// Whether a saved position (floor, acked above) counts `o` as acknowledged.
pub fn covers(pos: &(u64, BTreeSet<u64>), o: u64) -> bool {
    o < pos.0 || pos.1.contains(&o)
}

/// A saved position as (floor, acked set).
pub fn position_of(r: &CursorRecord) -> (u64, BTreeSet<u64>) {
    (r.floor, r.acked.iter().copied().collect())
}

/// The first offset `old` acknowledges that `new` does not, if any.
pub fn lost_ack(new: &(u64, BTreeSet<u64>), old: &(u64, BTreeSet<u64>)) -> Option<u64> {
    if new.0 < old.0 {
        return (new.0..old.0).find(|o| !new.1.contains(o));
    }
    old.1.iter().copied().find(|&o| !covers(new, o))
}

/// One cursor (exclusive: the only one; broadcast: one per consumer).
#[derive(Debug, Clone, Default)]
pub struct CursorM {
    /// Per partition.
    pub parts: BTreeMap<u32, CurPartM>,
    /// It was reset (coverage no longer applies).
    pub reset: bool,
}

/// A subscription as the model sees it.
#[derive(Debug, Clone)]
pub struct SubM {
    /// Its configuration.
    pub config: SubscriptionConfig,
    /// Its stream's delivery guarantee.
    pub delivery: DeliverySemantics,
    /// Persistent stream: positions are saved.
    pub durable: bool,
    /// Start offsets, once known.
    pub start_offsets: Option<Vec<u64>>,
    /// Resets sent and not answered.
    pub resetting: u32,
    /// Resets sent so far (an ack sent before one is not checked at its reply).
    pub resets: u64,
    /// Cursors, by consumer (exclusive: `None`).
    pub cursors: BTreeMap<Option<ConsumerId>, CursorM>,
    /// A delete of it was requested.
    pub delete_requested: bool,
    /// A delete of it is in flight: the engine refuses its commands (acks, nacks, terms)
    /// until the delete commits, or fails for certain and the subscription is back.
    pub deleting: bool,
    /// The delete in flight had an `Unknown` outcome: the engine retries it until it knows,
    /// and a later failure does not bring the subscription back.
    pub delete_uncertain: bool,
    /// Known to exist: its save committed, its creation was answered, or it was recovered
    /// (a creation whose save failed leaves nothing).
    pub exists: bool,
}

impl SubM {
    /// A new subscription.
    pub fn new(config: SubscriptionConfig, delivery: DeliverySemantics, durable: bool) -> SubM {
        SubM {
            config,
            delivery,
            durable,
            start_offsets: None,
            resetting: 0,
            resets: 0,
            cursors: BTreeMap::new(),
            delete_requested: false,
            deleting: false,
            delete_uncertain: false,
            exists: false,
        }
    }

    /// The cursor a consumer reads through.
    pub fn cursor_key(&self, consumer: &ConsumerId) -> Option<ConsumerId> {
        match self.config.mode {
            SubscriptionMode::Exclusive | SubscriptionMode::ConsumerGroup => None,
            SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt => Some(consumer.clone()),
        }
    }

    /// A cursor partition, created on first use.
    pub fn part(&mut self, cursor: Option<ConsumerId>, p: u32) -> &mut CurPartM {
        self.cursors
            .entry(cursor)
            .or_default()
            .parts
            .entry(p)
            .or_default()
    }
}

/// An attached consumer.
#[derive(Debug, Clone)]
pub struct Attachment {
    /// Its connection.
    pub conn: ConnId,
    /// Its credit.
    pub max_in_flight: u32,
}

/// A replay being checked.
#[derive(Debug, Clone)]
pub struct ReplayM {
    /// Its connection.
    pub conn: ConnId,
    /// The stream.
    pub stream: tributary_core::StreamName,
    /// Where from.
    pub from: ReplayFrom,
    /// Its options.
    pub options: ReplayOptions,
    /// When it started.
    pub started: MonoNanos,
    /// The model's heads when it was asked for.
    pub heads: Vec<u64>,
    /// Events received.
    pub count: u64,
    /// Per partition: (first, last) offset received.
    pub seen: BTreeMap<u32, (u64, u64)>,
    /// The last position received.
    pub last: Option<Position>,
    /// Whether the stream is persistent.
    pub persistent: bool,
}
