//! What the transport's connections are doing, for health and metrics: read at any time from
//! another task (atomics and short locks; the connection's own state is asked live).

use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use tributary_core::{StreamName, SubscriptionName};

/// The state of one connection to the broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LinkState {
    /// Not needed yet: the publisher connects on its first publish.
    Idle,
    /// Connected.
    Connected,
    /// Not connected (never yet, or lost): being tried again with back-off.
    Disconnected,
}

impl LinkState {
    /// `idle`, `connected` or `disconnected`.
    pub fn as_str(self) -> &'static str {
        match self {
            LinkState::Idle => "idle",
            LinkState::Connected => "connected",
            LinkState::Disconnected => "disconnected",
        }
    }
}

/// One connection's status: its live state, its last error, how often it connected.
#[derive(Debug, Default)]
pub struct LinkStatus {
    /// The open connection, asked for its state when the status is read (a connection that
    /// broke while idle shows as disconnected at once).
    conn: Mutex<Option<lapin::ConnectionStatus>>,
    /// Whether a connection was ever wanted.
    wanted: AtomicBool,
    /// Connections made.
    connects: AtomicU64,
    /// Why the last attempt failed or the connection was lost.
    error: Mutex<Option<String>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl LinkStatus {
    /// The connection's state now.
    pub fn state(&self) -> LinkState {
        match &*lock(&self.conn) {
            Some(c) if c.connected() => LinkState::Connected,
            _ if !self.wanted.load(Ordering::Relaxed) => LinkState::Idle,
            _ => LinkState::Disconnected,
        }
    }

    /// Why the connection is down (or last went down).
    pub fn last_error(&self) -> Option<String> {
        lock(&self.error).clone()
    }

    /// Connections made since the start (a reconnect counts).
    pub fn connects(&self) -> u64 {
        self.connects.load(Ordering::Relaxed)
    }

    pub(crate) fn wanted(&self) {
        self.wanted.store(true, Ordering::Relaxed);
    }

    pub(crate) fn up(&self, conn: &lapin::Connection) {
        self.wanted();
        *lock(&self.conn) = Some(conn.status().clone());
        self.connects.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn down(&self, error: &str) {
        self.wanted();
        *lock(&self.conn) = None;
        *lock(&self.error) = Some(error.to_string());
    }
}

/// Why a received message was dead-lettered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeadReason {
    /// No `message_id`, or one that is not a UUID: it cannot be deduplicated.
    NoId,
    /// The envelope cannot be read (no event type, a header of the wrong type...).
    BadEnvelope,
    /// The local stream refused it as an event (over a limit, a bad field).
    Refused,
}

impl DeadReason {
    /// Every reason, in a fixed order.
    pub const ALL: [DeadReason; 3] = [
        DeadReason::NoId,
        DeadReason::BadEnvelope,
        DeadReason::Refused,
    ];

    /// `no_id`, `bad_envelope` or `refused` (the metric's `reason` label).
    pub fn as_str(self) -> &'static str {
        match self {
            DeadReason::NoId => "no_id",
            DeadReason::BadEnvelope => "bad_envelope",
            DeadReason::Refused => "refused",
        }
    }

    fn index(self) -> usize {
        match self {
            DeadReason::NoId => 0,
            DeadReason::BadEnvelope => 1,
            DeadReason::Refused => 2,
        }
    }
}

/// What one inbound binding has done so far.
#[derive(Debug)]
pub struct InboundStatus {
    /// The remote stream it consumes.
    pub remote: StreamName,
    /// The subscription (its queue).
    pub subscription: SubscriptionName,
    /// The local stream it appends to.
    pub local: StreamName,
    /// Its connection.
    pub link: LinkStatus,
    received: AtomicU64,
    appended: AtomicU64,
    duplicates: AtomicU64,
    dead: [AtomicU64; 3],
}

impl InboundStatus {
    pub(crate) fn new(
        remote: StreamName,
        subscription: SubscriptionName,
        local: StreamName,
    ) -> InboundStatus {
        InboundStatus {
            remote,
            subscription,
            local,
            link: LinkStatus::default(),
            received: AtomicU64::new(0),
            appended: AtomicU64::new(0),
            duplicates: AtomicU64::new(0),
            dead: Default::default(),
        }
    }

    /// Messages received from the broker (redeliveries included).
    pub fn received(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Messages appended to the local stream as a new event and acknowledged.
    pub fn appended(&self) -> u64 {
        self.appended.load(Ordering::Relaxed)
    }

    /// Messages whose id the local stream already held (a redelivery), acknowledged without a
    /// second event.
    pub fn duplicates(&self) -> u64 {
        self.duplicates.load(Ordering::Relaxed)
    }

    /// Messages sent to the dead-letter queue for `reason`.
    pub fn dead_lettered(&self, reason: DeadReason) -> u64 {
        self.dead[reason.index()].load(Ordering::Relaxed)
    }

    pub(crate) fn count_received(&self) {
        self.received.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn count_appended(&self, duplicate: bool) {
        if duplicate {
            self.duplicates.fetch_add(1, Ordering::Relaxed);
        } else {
            self.appended.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn count_dead(&self, reason: DeadReason) {
        self.dead[reason.index()].fetch_add(1, Ordering::Relaxed);
    }
}
