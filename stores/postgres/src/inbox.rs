//! The inbox: exactly-once processing for consumers whose side effects live in the same
//! PostgreSQL database (SPEC 5). Inside its own transaction, a consumer records the event
//! together with its side effects, commits, then acknowledges the event to Tributary. If the
//! event comes again (the ack was lost, the consumer crashed before it), `record` answers
//! `false`: the consumer skips the side effects and acknowledges.
//!
//! A record's key is (stream, subscription, consumer where broadcast, event id), an
//! [`InboxKey`] and the event's id: every consumer of a broadcast (or read-receipt)
//! subscription processes every event, so each has its own records; the consumers of an
//! exclusive subscription or a consumer group share the events, so they share the records
//! (an event redelivered to another consumer is skipped by it).
//!
//! The ack itself is not written in the caller's transaction (the engine owns the positions);
//! the effect is the same: the ack comes after the commit, and if it is lost the event comes
//! again, `record` answers `false` and the consumer acknowledges it then. An ack of an event
//! already acknowledged is counted as ignored, never refused, so acknowledging twice is
//! harmless.
//!
//! ```ignore
//! let key = InboxKey::new(mode, &delivery.stream, &delivery.subscription, &delivery.consumer);
//! let mut tx = store.pool().begin().await?;
//! if Inbox::record(&mut tx, &key, event.event_id).await? {
//!     sqlx::query("UPDATE accounts SET ...").execute(&mut *tx).await?;
//! }
//! tx.commit().await?;
//! // then: Command::Ack for the event
//! ```

use sqlx::PgConnection;
use std::time::Duration;
use tributary_core::{ConsumerId, EventId, StreamName, SubscriptionMode, SubscriptionName};

/// Whose processing an inbox record stands for: a stream's subscription, and the consumer
/// where each consumer gets every event (SPEC 5).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct InboxKey {
    stream: StreamName,
    subscription: SubscriptionName,
    /// `Some` for broadcast and read-receipt subscriptions.
    consumer: Option<ConsumerId>,
}

impl InboxKey {
    /// The key of `consumer`'s deliveries on a subscription of this `mode`: its own for
    /// `Broadcast` and `ReadReceipt` (every consumer gets every event), the subscription's
    /// for `Exclusive` and `ConsumerGroup` (its consumers share the events).
    pub fn new(
        mode: SubscriptionMode,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
    ) -> Self {
        match mode {
            SubscriptionMode::Broadcast | SubscriptionMode::ReadReceipt => {
                InboxKey::consumer(stream, subscription, consumer)
            }
            SubscriptionMode::Exclusive | SubscriptionMode::ConsumerGroup => {
                InboxKey::shared(stream, subscription)
            }
        }
    }

    /// The key shared by every consumer of an exclusive or consumer-group subscription.
    pub fn shared(stream: &StreamName, subscription: &SubscriptionName) -> Self {
        InboxKey {
            stream: stream.clone(),
            subscription: subscription.clone(),
            consumer: None,
        }
    }

    /// The key of one consumer of a broadcast or read-receipt subscription.
    pub fn consumer(
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
    ) -> Self {
        InboxKey {
            stream: stream.clone(),
            subscription: subscription.clone(),
            consumer: Some(consumer.clone()),
        }
    }

    /// The consumer column: the consumer's id, or '' where the records are shared.
    fn consumer_column(&self) -> &str {
        self.consumer.as_ref().map_or("", ConsumerId::as_str)
    }
}

/// Records of processed events, kept in `tributary_inbox`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inbox;

impl Inbox {
    /// Records, inside the caller's transaction, that `key` processed `event_id`. `true` the
    /// first time; `false` if it was recorded before (skip the side effects, then ack). A
    /// record made before the key had a stream and a consumer (schema version 7) counts for
    /// every consumer of its subscription, as it did then.
    pub async fn record(
        conn: &mut PgConnection,
        key: &InboxKey,
        event_id: EventId,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO tributary_inbox (stream, subscription, consumer, event_id) \
             SELECT $1, $2, $3, $4 WHERE NOT EXISTS (SELECT 1 FROM tributary_inbox \
                 WHERE stream = '' AND consumer = '' AND subscription = $2 AND event_id = $4) \
             ON CONFLICT DO NOTHING",
        )
        .bind(key.stream.as_str())
        .bind(key.subscription.as_str())
        .bind(key.consumer_column())
        .bind(event_id.as_bytes().as_slice())
        .execute(conn)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether `key` recorded `event_id` (or a record from before version 7 did, for its
    /// subscription).
    pub async fn contains(
        conn: &mut PgConnection,
        key: &InboxKey,
        event_id: EventId,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM tributary_inbox WHERE subscription = $2 AND event_id = $4 \
                 AND ((stream = $1 AND consumer = $3) OR (stream = '' AND consumer = '')))",
        )
        .bind(key.stream.as_str())
        .bind(key.subscription.as_str())
        .bind(key.consumer_column())
        .bind(event_id.as_bytes().as_slice())
        .fetch_one(conn)
        .await
    }

    /// Removes records older than `age` (their events can no longer come again once the
    /// subscription's position is past them). Returns how many were removed.
    pub async fn forget_older_than(
        conn: &mut PgConnection,
        age: Duration,
    ) -> Result<u64, sqlx::Error> {
        let secs = age.as_secs_f64();
        let r = sqlx::query(
            "DELETE FROM tributary_inbox WHERE processed_at < now() - make_interval(secs => $1)",
        )
        .bind(secs)
        .execute(conn)
        .await?;
        Ok(r.rows_affected())
    }
}
