//! The inbox: exactly-once processing for consumers whose side effects live in the same
//! PostgreSQL database (SPEC 5). Inside its own transaction, a consumer records the event id
//! together with its side effects, commits, then acknowledges the event to Tributary. If the
//! event comes again (the ack was lost, the consumer crashed before it), `record` answers
//! `false`: the consumer skips the side effects and acknowledges.
//!
//! ```ignore
//! let mut tx = store.pool().begin().await?;
//! if Inbox::record(&mut tx, "billing", event.event_id).await? {
//!     sqlx::query("UPDATE accounts SET ...").execute(&mut *tx).await?;
//! }
//! tx.commit().await?;
//! // then: Command::Ack for the event
//! ```

use sqlx::PgConnection;
use std::time::Duration;
use tributary_core::EventId;

/// Records of processed events, kept in `tributary_inbox`.
#[derive(Debug, Clone, Copy, Default)]
pub struct Inbox;

impl Inbox {
    /// Records, inside the caller's transaction, that `subscription` processed `event_id`.
    /// `true` the first time; `false` if it was recorded before (skip the side effects).
    pub async fn record(
        conn: &mut PgConnection,
        subscription: &str,
        event_id: EventId,
    ) -> Result<bool, sqlx::Error> {
        let r = sqlx::query(
            "INSERT INTO tributary_inbox (subscription, event_id) VALUES ($1, $2) ON CONFLICT DO NOTHING",
        )
        .bind(subscription)
        .bind(event_id.as_bytes().as_slice())
        .execute(conn)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether `subscription` recorded `event_id`.
    pub async fn contains(
        conn: &mut PgConnection,
        subscription: &str,
        event_id: EventId,
    ) -> Result<bool, sqlx::Error> {
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM tributary_inbox WHERE subscription = $1 AND event_id = $2)")
            .bind(subscription)
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
