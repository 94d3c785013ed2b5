//! A subscription session: one engine connection with one attached consumer, its deliveries,
//! notices and group assignments forwarded to the client (deliveries under transport credit),
//! with heartbeats, and its commands (ack, nack, term, commit, mark-read, receipt queries,
//! heartbeats) carried out in the order the client sent them.

use crate::convert::{event_to_pb, position, position_to_pb, positions};
use crate::link::{EngineConn, EngineLink};
use crate::pb;
use crate::pb::subscribe_response::Kind;
use crate::{error_to_status, status::invalid};
use futures_util::{FutureExt, select_biased};
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tonic::Status;
use tributary_core::{
    Command, ConnEvent, ConsumerId, GroupAssignment, MarkRead, Notice, Reply, Settlement,
    SkipReason, StreamName, SubscriptionMode, SubscriptionName,
};

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
    /// The subscription's mode (a group member's heartbeats go to the engine).
    pub(crate) mode: SubscriptionMode,
}

/// A client command of a session.
pub(crate) enum Settle {
    Ack(pb::Ack),
    Nack(pb::Nack),
    Term(pb::Term),
    Credit(pb::Credit),
    Heartbeat,
    Commit(pb::Commit),
    MarkRead(pb::MarkRead),
    ReceiptStatus(pb::ReceiptQuery),
}

/// A group assignment as a message kind.
pub(crate) fn assignment_to_pb(a: &GroupAssignment) -> Kind {
    Kind::Assignment(pb::Assignment {
        generation: a.generation,
        partitions: a.partitions.clone(),
        member: a.member,
    })
}

/// A notice about a consumer as a message kind; `None` for notices that are not a consumer's.
fn notice_to_pb(n: &Notice) -> Option<Kind> {
    use pb::consumer_notice::Kind as N;
    let kind = match n {
        Notice::UnreadTimeout {
            position,
            redelivered,
            ..
        } => N::UnreadTimeout(pb::UnreadTimeout {
            position: Some(position_to_pb(position)),
            redelivered: *redelivered,
        }),
        Notice::SessionExpired { .. } => N::MemberExpired(pb::MemberExpired {}),
        _ => return None,
    };
    Some(Kind::Notice(pb::ConsumerNotice { kind: Some(kind) }))
}

/// What an ack, nack or term did, as the protocol says it.
fn settled_to_pb(s: &Settlement) -> pb::Settled {
    pb::Settled {
        applied: s.applied.iter().map(position_to_pb).collect(),
        skipped: s
            .skipped
            .iter()
            .map(|(p, reason)| pb::SkippedPosition {
                position: Some(position_to_pb(p)),
                reason: match reason {
                    SkipReason::NotDelivered => pb::SkipReason::NotDelivered,
                    SkipReason::AlreadySettled => pb::SkipReason::AlreadySettled,
                    SkipReason::NotInFlight => pb::SkipReason::NotInFlight,
                    SkipReason::Unavailable => pb::SkipReason::Unavailable,
                } as i32,
            })
            .collect(),
    }
}

/// What a client command of a session becomes.
pub(crate) enum Step {
    /// A command for the engine; its reply is the answer.
    Engine(Command),
    /// Carried out here: the answer.
    Answered(Kind),
}

impl<C: EngineConn> Session<C> {
    /// Carries out one command and waits for its answer. Credit goes to the forwarding task
    /// through `grants`.
    pub(crate) async fn settle(
        &self,
        s: Settle,
        grants: &async_channel::Sender<u32>,
    ) -> Result<Kind, Status> {
        match self.command(s, grants).await? {
            Step::Answered(k) => Ok(k),
            Step::Engine(cmd) => reply_kind(self.conn.call(cmd).await),
        }
    }

    /// What a client command becomes: an engine command, or an answer when it was carried
    /// out here (credit, handed to the forwarding task through `grants`; a heartbeat outside
    /// a consumer group).
    pub(crate) async fn command(
        &self,
        s: Settle,
        grants: &async_channel::Sender<u32>,
    ) -> Result<Step, Status> {
        let (stream, subscription, consumer) = (
            self.stream.clone(),
            self.subscription.clone(),
            self.consumer.clone(),
        );
        Ok(Step::Engine(match s {
            Settle::Credit(c) => {
                // The forwarding task has ended when this fails: nothing left to grant to.
                let _ = grants.send(c.events).await;
                return Ok(Step::Answered(Kind::Credited(pb::Credited {
                    granted: c.events,
                })));
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
            Settle::Heartbeat if self.mode != SubscriptionMode::ConsumerGroup => {
                return Ok(Step::Answered(Kind::Heartbeat(pb::Heartbeat {
                    time: unix_now(),
                })));
            }
            Settle::Heartbeat => Command::Heartbeat {
                stream,
                subscription,
                consumer,
            },
            Settle::Commit(c) => Command::Commit {
                stream,
                subscription,
                consumer,
                generation: c.generation,
                offsets: c.offsets.iter().map(position).collect(),
            },
            Settle::MarkRead(m) => Command::MarkRead {
                stream,
                subscription,
                consumer,
                read: match (m.up_to, m.positions.is_empty()) {
                    (Some(p), true) => MarkRead::UpTo(position(&p)),
                    (None, false) => MarkRead::Positions(positions(m.positions)?),
                    _ => {
                        return Err(invalid(
                            "mark_read",
                            "give either positions or up_to, not both and not neither",
                        ));
                    }
                },
            },
            Settle::ReceiptStatus(q) => Command::ReceiptStatus {
                stream,
                subscription,
                consumer,
                position: q.position.as_ref().map(position),
            },
        }))
    }
}

/// The engine's reply to a session command as the message kind that answers it.
pub(crate) fn reply_kind(r: Result<Reply, tributary_core::Error>) -> Result<Kind, Status> {
    match r {
        Ok(Reply::Settled(s)) => Ok(Kind::Settled(settled_to_pb(&s))),
        Ok(Reply::Assignment(a)) => Ok(assignment_to_pb(&a)),
        Ok(Reply::Committed(ps)) => Ok(Kind::Committed(pb::Committed {
            positions: ps.iter().map(position_to_pb).collect(),
        })),
        Ok(Reply::MarkedRead { marked, ignored }) => {
            Ok(Kind::MarkedRead(pb::MarkedRead { marked, ignored }))
        }
        Ok(Reply::ReceiptStatus(r)) => Ok(Kind::ReceiptStatus(pb::ReceiptStatus {
            unread: r.unread,
            last_read: r
                .last_read
                .iter()
                .map(|o| o.map_or(-1, |v| i64::try_from(v).unwrap_or(i64::MAX)))
                .collect(),
            receipt: r.receipt.map(|x| pb::Receipt {
                delivered_at: x.delivered_at.0,
                read_at: x.read_at.map(|t| t.0),
            }),
        })),
        Ok(r) => Err(Status::internal(format!(
            "unexpected reply from the engine: {r:?}"
        ))),
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
        Err(s) => Kind::Error(error_status(&s)),
    };
    pb::SubscribeResponse {
        request_id,
        kind: Some(kind),
    }
}

/// A status as an error message inside a stream that goes on: the same code, message and
/// details. A status's details are an encoded `google.rpc.Status`, which `ErrorStatus` is on
/// the wire.
pub(crate) fn error_status(s: &Status) -> pb::ErrorStatus {
    let details = <pb::ErrorStatus as prost::Message>::decode(s.details())
        .map(|d| d.details)
        .unwrap_or_default();
    pb::ErrorStatus {
        code: s.code() as i32,
        message: s.message().to_string(),
        details,
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
                Some(ConnEvent::Notice { notice, .. }) => {
                    let Some(kind) = notice_to_pb(&notice) else { continue };
                    let msg = pb::SubscribeResponse { request_id: 0, kind: Some(kind) };
                    if out.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                Some(ConnEvent::Assignment { assignment, .. }) => {
                    let msg = pb::SubscribeResponse { request_id: 0, kind: Some(assignment_to_pb(&assignment)) };
                    if out.send(Ok(msg)).await.is_err() {
                        return;
                    }
                }
                None => {
                    let _ = out.send(Err(Status::unavailable("the engine has stopped"))).await;
                    return;
                }
            },
            _ = link.sleep(heartbeat).fuse() => {
                // The server's own heartbeat, so that the client sees the server alive. It is
                // never a group member's: a member heartbeats itself (SPEC 3), so a hung
                // member loses its partitions after its session timeout even while its
                // connection stays open.
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
        Some(pb::SubscribeRequest { request_id: 0, .. }) => Err(request_id_rule(0, 0)),
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

/// The error for a client message whose request id breaks the correlation rule: above 0 and
/// greater than the previous one (`last`; 0 before the first).
pub(crate) fn request_id_rule(given: u64, last: u64) -> Status {
    invalid(
        "request_id",
        format!(
            "{given}: every message of a session carries a request_id above 0 and greater than the previous one ({last})"
        ),
    )
}
