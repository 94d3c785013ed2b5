//! Consumer group liveness (`session-expiry`) and the holder rule of nacks and terms
//! (`holder-only`).
//!
//! Sessions: the checker keeps, per member attached in this life, the latest time it could
//! have been heard from (any command naming it, whatever its outcome: that is never earlier
//! than the engine's own last touch). Once that time plus the subscription's
//! `session_timeout` has passed, the engine must have expired the member (told it
//! `member: false`); the timer fires at the deadline, so a small slack covers the tick.

use super::{Checker, Sent, SubKey};
use std::time::Duration;
use tributary_core::{
    Command, ConnId, ConsumerId, Error, Position, Reply, StreamName, SubscriptionMode,
    SubscriptionName,
};

/// Past a member's deadline, how long the engine may take to expire it.
const EXPIRY_SLACK: Duration = Duration::from_millis(100);

/// What the holder rule expects of the reply to a nack or term.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct HolderCheck {
    /// A named event is surely in flight to another consumer: the command must be refused
    /// with `NotHolder` (and the model does not apply it).
    pub(super) must_refuse: bool,
    /// Every named event is surely in flight to the sender: a `NotHolder` refusal is wrong.
    /// (The model forgets deliveries made while a reset was unanswered, so where it knows of
    /// no flight it does not judge.)
    pub(super) must_take: bool,
    /// The model knows enough to judge: no reset unanswered, no delete of the subscription
    /// that may have happened. When it does not, the engine may refuse the command with
    /// `NotHolder` or take it, so the model applies neither.
    pub(super) judged: bool,
}

impl Checker {
    /// A member joined (its attach was answered): its session starts.
    pub(super) fn joined(&mut self, key: &(SubKey, ConsumerId)) {
        let group = self
            .subs
            .get(&key.0)
            .is_some_and(|s| s.config.mode == SubscriptionMode::ConsumerGroup);
        if group {
            self.group_heard.insert(key.clone(), self.now.mono);
        }
    }

    /// A command: a member it names is heard from; a subscription or stream being deleted
    /// takes its members out of the check (a deleted group expires nobody).
    pub(super) fn heard(&mut self, cmd: &Command) {
        let (stream, subscription, consumer) = match cmd {
            Command::Ack {
                stream,
                subscription,
                consumer,
                ..
            }
            | Command::Nack {
                stream,
                subscription,
                consumer,
                ..
            }
            | Command::Term {
                stream,
                subscription,
                consumer,
                ..
            }
            | Command::Heartbeat {
                stream,
                subscription,
                consumer,
            }
            | Command::Commit {
                stream,
                subscription,
                consumer,
                ..
            }
            | Command::MarkRead {
                stream,
                subscription,
                consumer,
                ..
            } => (stream, subscription, consumer),
            Command::DeleteSubscription {
                stream,
                subscription,
            } => {
                let key = (stream.clone(), subscription.clone());
                self.group_heard.retain(|(k, _), _| *k != key);
                return;
            }
            Command::DeleteStream(stream) => {
                self.group_heard.retain(|((s, _), _), _| s != stream);
                return;
            }
            _ => return,
        };
        let key = ((stream.clone(), subscription.clone()), consumer.clone());
        if let Some(t) = self.group_heard.get_mut(&key) {
            *t = self.now.mono;
        }
    }

    /// A member was told its session ended: it is detached, what it held is ready again.
    pub(super) fn expired(&mut self, key: &SubKey, consumer: &ConsumerId, conn: ConnId) {
        let k = (key.clone(), consumer.clone());
        self.group_heard.remove(&k);
        if self.attached.get(&k).is_some_and(|a| a.conn == conn) {
            self.attached.remove(&k);
            self.release_consumer(key, consumer);
        }
    }

    /// Every member whose session has surely ended must have been expired by now.
    pub(super) fn sessions_due(&mut self) {
        let now = self.now.mono;
        let mut late = None;
        for ((key, consumer), heard) in &self.group_heard {
            let Some(sub) = self.subs.get(key) else {
                continue;
            };
            let due = heard
                .saturating_add(sub.config.session_timeout)
                .saturating_add(EXPIRY_SLACK);
            if now > due {
                late = Some((
                    key.clone(),
                    consumer.clone(),
                    *heard,
                    sub.config.session_timeout,
                ));
                break;
            }
        }
        if let Some((key, consumer, heard, timeout)) = late {
            self.group_heard.remove(&(key.clone(), consumer.clone()));
            self.fail(
                "session-expiry",
                format!(
                    "{}/{}: member {consumer} last heard from at {} ns is still a member at {} ns, past its session timeout of {timeout:?}",
                    key.0, key.1, heard.0, now.0
                ),
            );
        }
    }

    /// What the holder rule expects of a nack or term the engine takes up (attached, valid
    /// positions, owned partitions; no reset or delete in flight).
    pub(super) fn holder_check(
        &self,
        conn: ConnId,
        stream: &StreamName,
        subscription: &SubscriptionName,
        consumer: &ConsumerId,
        positions: &[Position],
    ) -> HolderCheck {
        let key = (stream.clone(), subscription.clone());
        let Some(sub) = self.subs.get(&key) else {
            return HolderCheck::default();
        };
        if !self.attached_on(conn, &key, consumer)
            || !self.positions_valid(stream, positions)
            || !self.owns_all(&key, consumer, positions)
            || sub.resetting > 0
            || sub.delete_requested
        {
            // Refused for another reason first, or not judged.
            return HolderCheck::default();
        }
        let cursor = sub.cursor_key(consumer);
        let now = self.now.mono;
        let mut check = HolderCheck {
            must_refuse: false,
            must_take: true,
            judged: true,
        };
        for p in positions {
            let flight = sub
                .cursors
                .get(&cursor)
                .and_then(|c| c.parts.get(&p.partition))
                .and_then(|cp| cp.in_flight.get(&p.offset))
                .filter(|f| f.deadline > now);
            match flight {
                Some(f) if &f.consumer != consumer => {
                    check.must_refuse = true;
                    check.must_take = false;
                }
                Some(_) => {}
                None => check.must_take = false,
            }
        }
        check
    }

    /// Judges the reply to a nack or term by the holder rule.
    pub(super) fn holder_reply(&mut self, sent: &Sent, reply: &Result<Reply, Error>) {
        let (Command::Nack { consumer, .. } | Command::Term { consumer, .. }) = &sent.cmd else {
            return;
        };
        let refused = matches!(reply, Err(Error::NotHolder { .. }));
        if sent.holder.must_refuse && !refused {
            self.fail(
                "holder-only",
                format!(
                    "{consumer} settled an event in flight to another consumer: answered {reply:?}"
                ),
            );
        } else if refused && sent.holder.must_take {
            self.fail(
                "holder-only",
                format!("{consumer}'s settle of its own events refused: {reply:?}"),
            );
        }
    }
}
