//! Health (SPEC 11): the status of every stream, subscription and consumer position from the
//! engine's lag figures, against configurable thresholds.
//!
//! A position (a consumer, or the shared position of an exclusive or consumer group
//! subscription) is
//!
//! - `unhealthy` when its lag is above `lag_unhealthy` (10,000) or it has lag and has made no
//!   progress for `stall_unhealthy` (15 min);
//! - `degraded` when its lag is above `lag_degraded` (1,000) or it has lag and has made no
//!   progress for `stall_degraded` (5 min);
//! - `healthy` otherwise.
//!
//! "No progress for" counts from the later of its last acknowledgement (or dead letter) and the
//! arrival of the oldest event it has not acknowledged (so a consumer that was idle with nothing
//! to do is not stalled the moment an event arrives); when neither is known (nothing
//! acknowledged since the server started and the event no longer in memory), from the server's
//! start. A subscription, a stream and the whole server take the worst status below them.
//!
//! A cross-service stream also shows its relay lag (events not yet confirmed by the broker)
//! and is `degraded` while it is above `lag_degraded`. The broker's connections are components
//! (`amqp-publisher`, `amqp-inbound <remote>:<subscription>`), `degraded` while disconnected.

use serde::Serialize;
use std::time::Duration;
use tributary_core::{LagFigures, StreamInfo, SubscriptionInfo, SubscriptionMode, UnixMillis};
use utoipa::ToSchema;

/// When a position is degraded or unhealthy.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HealthThresholds {
    /// Lag above this is degraded (1,000 events).
    pub lag_degraded: u64,
    /// Lag above this is unhealthy (10,000 events).
    pub lag_unhealthy: u64,
    /// Lag and no progress for this long is degraded (5 min).
    pub stall_degraded: Duration,
    /// Lag and no progress for this long is unhealthy (15 min).
    pub stall_unhealthy: Duration,
}

impl Default for HealthThresholds {
    fn default() -> Self {
        HealthThresholds {
            lag_degraded: 1_000,
            lag_unhealthy: 10_000,
            stall_degraded: Duration::from_secs(300),
            stall_unhealthy: Duration::from_secs(900),
        }
    }
}

impl HealthThresholds {
    /// Refuses thresholds where the unhealthy one is below the degraded one, naming them.
    pub fn validate(&self) -> Result<(), String> {
        if self.lag_unhealthy < self.lag_degraded {
            return Err(format!(
                "lag_unhealthy ({}) is below lag_degraded ({})",
                self.lag_unhealthy, self.lag_degraded
            ));
        }
        if self.stall_unhealthy < self.stall_degraded {
            return Err(format!(
                "stall_unhealthy ({}) is below stall_degraded ({})",
                humantime::format_duration(self.stall_unhealthy),
                humantime::format_duration(self.stall_degraded)
            ));
        }
        Ok(())
    }
}

/// A health status, from best to worst.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fine.
    Healthy,
    /// Behind or slow: look at it.
    Degraded,
    /// Far behind or stuck.
    Unhealthy,
}

/// The health of one position.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ConsumerHealth {
    /// The consumer; `null` for the shared position of an exclusive subscription.
    pub consumer: Option<String>,
    /// Its status.
    pub status: Status,
    /// Events between its committed position and the head.
    pub lag: u64,
    /// When it last acknowledged (Unix ms), in this server's life.
    pub last_progress: Option<u64>,
    /// How long it has had lag without progress (ms); 0 without lag.
    pub stalled_for_ms: u64,
    /// Why it is not healthy.
    pub reasons: Vec<String>,
}

/// The health of one subscription.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct SubscriptionHealth {
    /// Its name.
    pub subscription: String,
    /// The worst of its positions.
    pub status: Status,
    /// Its positions.
    pub consumers: Vec<ConsumerHealth>,
}

/// The health of one stream.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct StreamHealth {
    /// Its name.
    pub stream: String,
    /// The worst of its subscriptions.
    pub status: Status,
    /// Events held.
    pub length: u64,
    /// Cross-service streams: events not yet confirmed by the broker.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub relay_lag: Option<u64>,
    /// Why the stream itself is not healthy (its relay).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub reasons: Vec<String>,
    /// Its subscriptions.
    pub subscriptions: Vec<SubscriptionHealth>,
}

/// The health of one of the server's own components (the journal).
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct ComponentHealth {
    /// Which: `journal`, `amqp-publisher`, `amqp-inbound <remote>:<subscription>`.
    pub component: String,
    /// Its status.
    pub status: Status,
    /// A broker connection's state: `idle`, `connected` or `disconnected`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::BrokerState>,
    /// Why it is not healthy.
    pub reasons: Vec<String>,
}

/// The health of the whole server.
#[derive(Debug, Clone, Serialize, ToSchema)]
pub struct HealthReport {
    /// The worst of everything (`unhealthy` answers 503).
    pub status: Status,
    /// Every stream.
    pub streams: Vec<StreamHealth>,
    /// The server's own components: the journal when it keeps one.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub components: Vec<ComponentHealth>,
}

/// The journal's health: `degraded` once a write failed or an input was not recorded (the
/// journal is incomplete for the rest of the process's life; events are served as before, so
/// never `unhealthy`).
pub fn journal(j: &crate::JournalFigures) -> ComponentHealth {
    let mut reasons = Vec::new();
    if j.write_failures > 0 {
        reasons.push(format!(
            "write failed: {}",
            j.error.as_deref().unwrap_or("unknown error")
        ));
    }
    if j.dropped > 0 {
        reasons.push(format!("{} inputs not recorded", j.dropped));
    }
    ComponentHealth {
        component: "journal".into(),
        status: if reasons.is_empty() {
            Status::Healthy
        } else {
            Status::Degraded
        },
        state: None,
        reasons,
    }
}

/// The broker's connections: `degraded` while one is disconnected (what is relayed waits in
/// the store and what is consumed waits in the broker, so never `unhealthy`).
pub fn broker(b: &crate::BrokerFigures) -> Vec<ComponentHealth> {
    let one = |component: String, c: &crate::ConnectionFigures| {
        let mut reasons = Vec::new();
        if c.state == crate::BrokerState::Disconnected {
            reasons.push(format!(
                "broker disconnected: {}",
                c.last_error.as_deref().unwrap_or("not connected yet")
            ));
        }
        ComponentHealth {
            component,
            status: if reasons.is_empty() {
                Status::Healthy
            } else {
                Status::Degraded
            },
            state: Some(c.state),
            reasons,
        }
    };
    std::iter::once(one("amqp-publisher".into(), &b.publisher))
        .chain(b.inbound.iter().map(|i| {
            one(
                format!("amqp-inbound {}:{}", i.remote_stream, i.subscription),
                &i.connection,
            )
        }))
        .collect()
}

/// Every position of a subscription with its figures: broadcast and read-receipt consumers
/// (each has its own), consumer group members (over their partitions), or the shared position
/// of an exclusive subscription (consumer `None`).
pub fn positions(sub: &SubscriptionInfo) -> Vec<(Option<String>, LagFigures)> {
    match (&sub.group, sub.config.mode) {
        (Some(g), _) if !g.members.is_empty() => g
            .members
            .iter()
            .map(|m| (Some(m.consumer.to_string()), m.figures))
            .collect(),
        (_, SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt) => sub
            .cursors
            .iter()
            .map(|c| (c.consumer.as_ref().map(|c| c.to_string()), c.figures))
            .collect(),
        _ => sub.cursors.iter().map(|c| (None, c.figures)).collect(),
    }
}

/// How long a position with lag has made no progress, at `now` (see the module's doc).
pub fn stalled_for(f: &LagFigures, now: UnixMillis, started: UnixMillis) -> Duration {
    if f.lag == 0 {
        return Duration::ZERO;
    }
    let oldest = f
        .oldest_unacked_age
        .map(|a| UnixMillis(now.0.saturating_sub(a.as_millis() as u64)));
    let since = match (f.last_progress, oldest) {
        (None, None) => started,
        (a, b) => a.max(b).unwrap_or(started),
    };
    Duration::from_millis(now.0.saturating_sub(since.0))
}

/// The health of one position.
pub fn consumer_health(
    consumer: Option<String>,
    f: &LagFigures,
    t: &HealthThresholds,
    now: UnixMillis,
    started: UnixMillis,
) -> ConsumerHealth {
    let stalled = stalled_for(f, now, started);
    let mut status = Status::Healthy;
    let mut reasons = Vec::new();
    let mut worse = |s: Status, why: String| {
        status = status.max(s);
        reasons.push(why);
    };
    if f.lag > t.lag_unhealthy {
        worse(
            Status::Unhealthy,
            format!("lag {} above {}", f.lag, t.lag_unhealthy),
        );
    } else if f.lag > t.lag_degraded {
        worse(
            Status::Degraded,
            format!("lag {} above {}", f.lag, t.lag_degraded),
        );
    }
    let fmt = |d: Duration| humantime::format_duration(Duration::from_secs(d.as_secs()));
    if f.lag > 0 && stalled >= t.stall_unhealthy {
        worse(
            Status::Unhealthy,
            format!("no progress for {}", fmt(stalled)),
        );
    } else if f.lag > 0 && stalled >= t.stall_degraded {
        worse(
            Status::Degraded,
            format!("no progress for {}", fmt(stalled)),
        );
    }
    ConsumerHealth {
        consumer,
        status,
        lag: f.lag,
        last_progress: f.last_progress.map(|m| m.0),
        stalled_for_ms: stalled.as_millis() as u64,
        reasons,
    }
}

/// The health of everything, at `now`.
pub fn report(
    streams: &[(StreamInfo, Vec<SubscriptionInfo>)],
    components: Vec<ComponentHealth>,
    t: &HealthThresholds,
    now: UnixMillis,
    started: UnixMillis,
) -> HealthReport {
    let streams: Vec<StreamHealth> = streams
        .iter()
        .map(|(s, subs)| {
            let subscriptions: Vec<SubscriptionHealth> = subs
                .iter()
                .map(|sub| {
                    let consumers: Vec<ConsumerHealth> = positions(sub)
                        .into_iter()
                        .map(|(c, f)| consumer_health(c, &f, t, now, started))
                        .collect();
                    SubscriptionHealth {
                        subscription: sub.config.name.to_string(),
                        status: worst(consumers.iter().map(|c| c.status)),
                        consumers,
                    }
                })
                .collect();
            let relay_lag = crate::relay_lag(s);
            let mut reasons = Vec::new();
            if let Some(lag) = relay_lag.filter(|l| *l > t.lag_degraded) {
                reasons.push(format!(
                    "relay lag {lag} above {}: events not yet confirmed by the broker",
                    t.lag_degraded
                ));
            }
            let own = if reasons.is_empty() {
                Status::Healthy
            } else {
                Status::Degraded
            };
            StreamHealth {
                stream: s.config.name.to_string(),
                status: worst(subscriptions.iter().map(|s| s.status).chain([own])),
                length: s.length(),
                relay_lag,
                reasons,
                subscriptions,
            }
        })
        .collect();
    HealthReport {
        status: worst(
            streams
                .iter()
                .map(|s| s.status)
                .chain(components.iter().map(|c| c.status)),
        ),
        streams,
        components,
    }
}

fn worst(i: impl Iterator<Item = Status>) -> Status {
    i.max().unwrap_or(Status::Healthy)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn t() -> HealthThresholds {
        HealthThresholds {
            lag_degraded: 10,
            lag_unhealthy: 100,
            stall_degraded: Duration::from_secs(60),
            stall_unhealthy: Duration::from_secs(180),
        }
    }

    fn fig(lag: u64, progress: Option<u64>, oldest_age_s: Option<u64>) -> LagFigures {
        LagFigures {
            lag,
            oldest_unacked_age: oldest_age_s.map(Duration::from_secs),
            last_progress: progress.map(UnixMillis),
        }
    }

    const NOW: UnixMillis = UnixMillis(10_000_000);
    const START: UnixMillis = UnixMillis(0);

    fn status(f: LagFigures) -> Status {
        consumer_health(None, &f, &t(), NOW, START).status
    }

    #[test]
    fn lag_thresholds_are_exclusive_bounds() {
        assert_eq!(status(fig(10, Some(NOW.0), Some(0))), Status::Healthy);
        assert_eq!(status(fig(11, Some(NOW.0), Some(0))), Status::Degraded);
        assert_eq!(status(fig(100, Some(NOW.0), Some(0))), Status::Degraded);
        assert_eq!(status(fig(101, Some(NOW.0), Some(0))), Status::Unhealthy);
    }

    #[test]
    fn a_stall_counts_from_the_later_of_progress_and_the_oldest_arrival() {
        // Progress 2 min ago, the oldest unacknowledged event 10 min old: stalled 2 min.
        let f = fig(1, Some(NOW.0 - 120_000), Some(600));
        assert_eq!(stalled_for(&f, NOW, START), Duration::from_secs(120));
        assert_eq!(status(f), Status::Degraded);
        // Idle for an hour, an event 30 s ago: not stalled yet.
        assert_eq!(
            status(fig(1, Some(NOW.0 - 3_600_000), Some(30))),
            Status::Healthy
        );
        // Nothing known: since the start.
        assert_eq!(
            stalled_for(&fig(1, None, None), NOW, START),
            Duration::from_secs(10_000)
        );
        assert_eq!(status(fig(1, None, None)), Status::Unhealthy);
        // Without lag nothing is stalled.
        assert_eq!(status(fig(0, None, None)), Status::Healthy);
    }

    #[test]
    fn a_journal_that_lost_inputs_degrades_the_server() {
        let fine = journal(&crate::JournalFigures::default());
        assert_eq!((fine.status, fine.reasons.len()), (Status::Healthy, 0));
        let failed = journal(&crate::JournalFigures {
            write_failures: 1,
            dropped: 3,
            error: Some("journal i/o: No space left on device".into()),
        });
        assert_eq!(failed.status, Status::Degraded);
        assert_eq!(
            failed.reasons,
            [
                "write failed: journal i/o: No space left on device",
                "3 inputs not recorded"
            ]
        );
        let r = report(&[], vec![failed], &t(), NOW, START);
        assert_eq!(r.status, Status::Degraded);
        assert_eq!(
            report(&[], vec![fine], &t(), NOW, START).status,
            Status::Healthy
        );
    }

    #[test]
    fn the_relay_lag_and_a_disconnected_broker_degrade() {
        let stream = |relay: Option<Vec<u64>>| tributary_core::StreamInfo {
            config: tributary_core::StreamConfig::persistent(
                tributary_core::StreamName::new("orders").expect("name"),
            ),
            partitions: vec![
                tributary_core::PartitionInfo { first: 0, next: 8 },
                tributary_core::PartitionInfo { first: 2, next: 9 },
            ],
            subscriptions: 0,
            relay,
        };
        // 10 threshold: 8 + 9 = 17 not confirmed is degraded, 4 is not.
        let r = report(
            &[(stream(Some(vec![0, 0])), vec![])],
            vec![],
            &t(),
            NOW,
            START,
        );
        assert_eq!(r.streams[0].relay_lag, Some(17));
        assert_eq!(r.streams[0].status, Status::Degraded);
        assert!(r.streams[0].reasons[0].contains("relay lag 17 above 10"));
        assert_eq!(r.status, Status::Degraded);
        let r = report(
            &[(stream(Some(vec![6, 7])), vec![])],
            vec![],
            &t(),
            NOW,
            START,
        );
        assert_eq!(
            (r.streams[0].relay_lag, r.status),
            (Some(4), Status::Healthy)
        );
        let r = report(&[(stream(None), vec![])], vec![], &t(), NOW, START);
        assert_eq!((r.streams[0].relay_lag, r.status), (None, Status::Healthy));

        let conn = |state| crate::ConnectionFigures {
            state,
            last_error: Some("connection refused".into()),
        };
        let figures = crate::BrokerFigures {
            publisher: conn(crate::BrokerState::Idle),
            inbound: vec![crate::InboundFigures {
                remote_stream: "orders".into(),
                subscription: "billing".into(),
                stream: "orders-in".into(),
                connection: conn(crate::BrokerState::Disconnected),
                received: 0,
                appended: 0,
                duplicates: 0,
                dead_lettered: vec![],
            }],
        };
        let cs = broker(&figures);
        assert_eq!(
            cs.iter()
                .map(|c| (c.component.as_str(), c.status, c.state))
                .collect::<Vec<_>>(),
            [
                (
                    "amqp-publisher",
                    Status::Healthy,
                    Some(crate::BrokerState::Idle)
                ),
                (
                    "amqp-inbound orders:billing",
                    Status::Degraded,
                    Some(crate::BrokerState::Disconnected)
                ),
            ]
        );
        assert_eq!(cs[1].reasons, ["broker disconnected: connection refused"]);
        assert_eq!(report(&[], cs, &t(), NOW, START).status, Status::Degraded);
    }

    #[test]
    fn unhealthy_below_degraded_is_refused() {
        let mut bad = t();
        bad.lag_unhealthy = 5;
        assert!(bad.validate().unwrap_err().contains("lag_unhealthy"));
        let mut bad = t();
        bad.stall_unhealthy = Duration::from_secs(1);
        assert!(bad.validate().unwrap_err().contains("stall_unhealthy"));
        assert!(HealthThresholds::default().validate().is_ok());
    }
}
