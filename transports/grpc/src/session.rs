//! A subscription session: one engine connection with one attached consumer, its deliveries
//! forwarded to the client under transport credit, with heartbeats, and its acks, nacks and
//! terms carried out in the order the client sent them.

use crate::convert::{event_to_pb, positions};
use crate::link::{EngineConn, EngineLink};
use crate::pb;
use crate::pb::subscribe_response::Kind;
use crate::{error_to_status, status::invalid};
use futures_util::{FutureExt, select_biased};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Status;
use tributary_core::{Command, ConnEvent, ConsumerId, Reply, StreamName, SubscriptionName};

/// What a response channel carries.
pub(crate) type Sent = Result<pb::SubscribeResponse, Status>;

/// The sending side of a response stream; its receiver is the stream tonic sends.
pub(crate) type Out = tokio::sync::mpsc::Sender<Sent>;

/// A session's identity and its connection, shared by the task that forwards deliveries and
/// the one (or the `Settle` calls) that carries out the client's commands.
pub(crate) struct Session<C> {
    pub(crate) id: String,
    pub(crate) conn: C,
    pub(crate) stream: StreamName,
    pub(crate) subscription: SubscriptionName,
    pub(crate) consumer: ConsumerId,
}

/// A client command of a session.
pub(crate) enum Settle {
    Ack(pb::Ack),
    Nack(pb::Nack),
    Term(pb::Term),
    Credit(pb::Credit),
}

impl<C: EngineConn> Session<C> {
    /// Carries out one command; the answer to send back.
    /// Carries out one command and waits for its answer. Credit goes to the forwarding task
    /// through `grants`.
    pub(crate) async fn settle(
        &self,
        s: Settle,
        grants: &async_channel::Sender<u32>,
    ) -> Result<Kind, Status> {
        match self.command(s, grants).await? {
            None => Ok(Kind::Done(pb::Empty {})),
            Some(cmd) => reply_kind(self.conn.call(cmd).await),
        }
    }

    /// The engine command of a client command, or `None` when it was carried out here
    /// (credit, handed to the forwarding task through `grants`).
    pub(crate) async fn command(
        &self,
        s: Settle,
        grants: &async_channel::Sender<u32>,
    ) -> Result<Option<Command>, Status> {
        let (stream, subscription, consumer) = (
            self.stream.clone(),
            self.subscription.clone(),
            self.consumer.clone(),
        );
        Ok(Some(match s {
            Settle::Credit(c) => {
                // The forwarding task has ended when this fails: nothing left to grant to.
                let _ = grants.send(c.events).await;
                return Ok(None);
            }
            Settle::Ack(a) => Command::Ack {
                stream,
                subscription,
                consumer,
                positions: positions(a.positions)?,
            },
            Settle::Nack(n) => Command::Nack {
                stream,
                subscription,
                consumer,
                positions: positions(n.positions)?,
                delay: n.delay_ms.map(Duration::from_millis),
                error: n.error,
            },
            Settle::Term(t) => Command::Term {
                stream,
                subscription,
                consumer,
                positions: positions(t.positions)?,
                reason: t.reason,
            },
        }))
    }
}

/// The engine's reply to a session command as the message kind that answers it.
pub(crate) fn reply_kind(r: Result<Reply, tributary_core::Error>) -> Result<Kind, Status> {
    match r {
        Ok(Reply::Acked { acked, ignored }) => {
            Ok(Kind::AckResult(pb::AckResult { acked, ignored }))
        }
        Ok(_) => Ok(Kind::Done(pb::Empty {})),
        Err(e) => Err(error_to_status(&e)),
    }
}

/// An answer still to come, in the order the commands came.
pub(crate) type Answer = (
    u64,
    std::pin::Pin<Box<dyn std::future::Future<Output = Result<Kind, Status>> + Send>>,
);

/// Commands of a session whose answers are awaited at once, at most (then the session stops
/// reading the client's messages until answers come: back-pressure).
pub(crate) const PIPELINED_COMMANDS: usize = 256;

/// Sends the answers of a session's commands, in the order of the commands.
pub(crate) async fn answer_in_order(answers: async_channel::Receiver<Answer>, out: Out) {
    while let Ok((id, reply)) = answers.recv().await {
        if out.send(Ok(answer(id, reply.await))).await.is_err() {
            return;
        }
    }
}

/// The answer to a session command as a message of the stream: a failed command is an
/// `error` message and the session goes on.
pub(crate) fn answer(request_id: u64, r: Result<Kind, Status>) -> pb::SubscribeResponse {
    let kind = match r {
        Ok(k) => k,
        Err(s) => Kind::Error(session_error(&s)),
    };
    pb::SubscribeResponse {
        request_id,
        kind: Some(kind),
    }
}

/// A status as an error message inside a stream that goes on.
pub(crate) fn session_error(s: &Status) -> pb::SessionError {
    pb::SessionError {
        code: s.code() as i32,
        reason: tonic_types::StatusExt::get_details_error_info(s)
            .map(|i| i.reason)
            .unwrap_or_default(),
        message: s.message().to_string(),
    }
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Forwards the session's deliveries to `out` until the client leaves (the response stream
/// is dropped), the grants channel closes (the command side ended) or `stop` fires. `credit`
/// is `None` without credit control.
pub(crate) async fn forward<L: EngineLink>(
    link: L,
    session: Arc<Session<L::Conn>>,
    grants: async_channel::Receiver<u32>,
    mut credit: Option<u64>,
    heartbeat: Duration,
    out: Out,
    stop: async_channel::Receiver<()>,
) {
    // Deliveries waiting for credit: bounded by the consumer's max_in_flight in the core.
    let mut held: VecDeque<pb::Delivery> = VecDeque::new();
    loop {
        let sendable = credit.map_or(held.len(), |c| held.len().min(c as usize));
        if sendable > 0 {
            let events: Vec<pb::Delivery> = held.drain(..sendable).collect();
            if let Some(c) = credit.as_mut() {
                *c -= events.len() as u64;
            }
            let msg = pb::SubscribeResponse {
                request_id: 0,
                kind: Some(Kind::Events(pb::Deliveries { events })),
            };
            if out.send(Ok(msg)).await.is_err() {
                return;
            }
            continue;
        }
        select_biased! {
            _ = out.closed().fuse() => return,
            _ = stop.recv().fuse() => {
                let _ = out.send(Err(Status::unavailable("the server is shutting down"))).await;
                return;
            }
            g = grants.recv().fuse() => match g {
                Ok(n) => if let Some(c) = credit.as_mut() { *c = c.saturating_add(n.into()) },
                Err(_) => return,
            },
            e = session.conn.next().fuse() => match e {
                Some(ConnEvent::Deliver { events, .. }) => {
                    for d in events {
                        tracing::debug!(
                            code = 5000,
                            stream = %d.event.stream,
                            subscription = %session.subscription,
                            consumer = %session.consumer,
                            partition = d.event.partition,
                            offset = d.event.offset,
                            event_id = %d.event.event_id.0,
                            correlation_id = d.event.correlation_id.as_deref().unwrap_or(""),
                            attempt = d.attempt,
                            "delivered"
                        );
                        held.push_back(pb::Delivery { event: Some(event_to_pb(&d.event)), attempt: d.attempt });
                    }
                }
                Some(ConnEvent::Replay { .. }) => {}
                None => {
                    let _ = out.send(Err(Status::unavailable("the engine has stopped"))).await;
                    return;
                }
            },
            _ = link.sleep(heartbeat).fuse() => {
                let msg = pb::SubscribeResponse {
                    request_id: 0,
                    kind: Some(Kind::Heartbeat(pb::Heartbeat { time: unix_now() })),
                };
                if out.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        }
    }
}

/// Checks the first message of a bidirectional session.
pub(crate) fn expect_open(
    m: Option<pb::SubscribeRequest>,
) -> Result<(u64, pb::OpenSubscription), Status> {
    match m {
        Some(pb::SubscribeRequest {
            request_id,
            kind: Some(pb::subscribe_request::Kind::Open(o)),
        }) => Ok((request_id, o)),
        _ => Err(invalid(
            "open",
            "the first message of a subscribe stream must be `open`",
        )),
    }
}
