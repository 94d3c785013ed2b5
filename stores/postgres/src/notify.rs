//! Wake-ups for readers in other processes. Each committed append sends one `pg_notify` on
//! [`NOTIFY_CHANNEL`](crate::NOTIFY_CHANNEL) with the stream's name. A notification is only a
//! hint (it is lost while the listener reconnects, and its payload is small), so readers also
//! poll: [`Notifications::next`] answers `Poll` when none came within the polling interval.

use crate::{NOTIFY_CHANNEL, PgStore};
use sqlx::postgres::PgListener;
use std::time::Duration;

/// Why a reader should look again.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Wakeup {
    /// Events were appended to this stream.
    Appended(String),
    /// No notification within the interval (or the listener reconnected): look anyway.
    Poll,
}

/// A listener on the append notifications with a polling fallback.
pub struct Notifications {
    listener: PgListener,
    poll_every: Duration,
}

impl std::fmt::Debug for Notifications {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Notifications")
            .field("poll_every", &self.poll_every)
            .finish()
    }
}

impl Notifications {
    /// Starts listening.
    pub async fn listen(
        store: &PgStore,
        poll_every: Duration,
    ) -> Result<Notifications, sqlx::Error> {
        let mut listener = PgListener::connect_with(store.pool()).await?;
        listener.listen(NOTIFY_CHANNEL).await?;
        Ok(Notifications {
            listener,
            poll_every,
        })
    }

    /// The next reason to look: a notification, or `Poll` after `poll_every` without one.
    /// While the server is away it waits `poll_every` between attempts, then answers `Poll`.
    pub async fn next(&mut self) -> Wakeup {
        match sqlx_core::rt::timeout(self.poll_every, self.listener.try_recv()).await {
            Ok(Ok(Some(n))) => Wakeup::Appended(n.payload().to_string()),
            Ok(Ok(None)) => Wakeup::Poll,
            Ok(Err(_)) => {
                sqlx_core::rt::sleep(self.poll_every).await;
                Wakeup::Poll
            }
            Err(_) => Wakeup::Poll,
        }
    }
}
