//! The `tributary.v1.EventStream` service over an [`EngineLink`].

use crate::convert::{
    consumer_id, ms, new_event_from_pb, outcome_to_pb, position, replay, reset_target,
    schema_registration, schemas_to_pb, stream_config, stream_info_to_pb, stream_name,
    subscription_config, subscription_info_to_pb, subscription_name,
};
use crate::limit::{LimitedServer, MAX_REQUEST_MESSAGE_BYTES};
use crate::link::{EngineConn, EngineLink};
use crate::pb;
use crate::pb::event_stream_server::EventStream;
use crate::session::{
    Answer, Out, PIPELINED_COMMANDS, Sent, Session, Settle, Step, answer_in_order, error_status,
    expect_open, forward, reply_kind, request_id_rule,
};
use crate::status::{invalid, session_not_found, with_context};
use crate::{CORRELATION_HEADER, error_to_status, event_to_pb};
use futures_util::{FutureExt, Stream, select_biased};
use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tributary_core::{AppendRequest, Command, ConnEvent, Error, ReplayItem, Reply, StreamName};

/// A publish's stream and, per event, its producer-given id and correlation id (for logs).
type Published = (
    StreamName,
    Vec<(Option<tributary_core::EventId>, Option<String>)>,
);

/// How the service behaves.
#[derive(Debug, Clone)]
pub struct ServiceConfig {
    /// A subscription stream with nothing to send sends a heartbeat this often (10 s).
    pub heartbeat_interval: Duration,
    /// Messages queued per response stream before the sender waits for the client.
    pub response_buffer: usize,
    /// A replay's flow control: batches of events the engine may have sent that tonic has
    /// not yet taken from the response stream (tonic takes one when HTTP/2 flow control lets
    /// it send). A slow reader holds at most this many batches on the server; the replay
    /// waits for it. At least 1.
    pub replay_window: u32,
    /// The engine's limits and defaults, as `GetServerInfo` tells them.
    pub engine: tributary_core::Config,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        ServiceConfig {
            heartbeat_interval: Duration::from_secs(10),
            response_buffer: 64,
            replay_window: 8,
            engine: tributary_core::Config::default(),
        }
    }
}

/// The service. Cheap to clone; clones share their sessions.
pub struct EventStreamService<L: EngineLink> {
    link: L,
    config: ServiceConfig,
    /// Sessions of the server-streaming variant, by session id (for `Settle`).
    sessions: Sessions<L::Conn>,
    /// Closed when the server shuts down: every session and replay ends.
    stop: async_channel::Receiver<()>,
}

impl<L: EngineLink> Clone for EventStreamService<L> {
    fn clone(&self) -> Self {
        EventStreamService {
            link: self.link.clone(),
            config: self.config.clone(),
            sessions: self.sessions.clone(),
            stop: self.stop.clone(),
        }
    }
}

/// Open sessions of the server-streaming variant, by session id, with their credit grants.
type Sessions<C> = Arc<Mutex<BTreeMap<String, (Arc<Session<C>>, async_channel::Sender<u32>)>>>;

type BoxStream<T> = Pin<Box<dyn Stream<Item = Result<T, Status>> + Send + 'static>>;

/// A new session, the sender of its credit grants and their receiver.
type Opened<C> = (
    Arc<Session<C>>,
    async_channel::Sender<u32>,
    async_channel::Receiver<u32>,
);

fn response_channel(config: &ServiceConfig) -> (Out, tokio::sync::mpsc::Receiver<Sent>) {
    tokio::sync::mpsc::channel(config.response_buffer.max(1))
}

fn correlation<T>(req: &Request<T>) -> Option<String> {
    req.metadata()
        .get(CORRELATION_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// Events of a Read page when the request does not say.
pub(crate) const DEFAULT_READ_MAX: u32 = 100;

/// What `GetServerInfo` answers: the engine's limits and defaults.
fn server_info(c: &tributary_core::Config) -> pb::ServerInfo {
    let n = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
    pb::ServerInfo {
        version: env!("CARGO_PKG_VERSION").to_string(),
        max_message_bytes: MAX_REQUEST_MESSAGE_BYTES as u64,
        name_pattern: tributary_core::NAME_PATTERN.to_string(),
        max_name_bytes: n(tributary_core::MAX_NAME_LEN),
        max_stream_name_bytes: n(tributary_core::MAX_DLQ_SOURCE_NAME_LEN),
        max_consumer_bytes: n(tributary_core::MAX_CONSUMER_ID_LEN),
        max_partitions: c.max_partitions,
        max_batch_events: n(c.max_batch_events),
        max_batch_bytes: c.max_batch_bytes as u64,
        max_payload_bytes: c.max_payload_bytes as u64,
        max_event_type_bytes: n(c.max_event_type_bytes),
        max_key_bytes: n(c.max_key_bytes),
        max_headers: n(c.max_headers),
        max_headers_bytes: c.max_headers_bytes as u64,
        max_positions: u32::try_from(c.max_ack_pending).unwrap_or(u32::MAX),
        max_read_events: c.max_read_events,
        defaults: Some(pb::ServerDefaults {
            ack_wait_ms: ms(c.default_ack_wait),
            max_deliveries: c.default_max_deliveries,
            max_in_flight: c.default_max_in_flight,
            dedup_window_ms: ms(c.default_dedup_window),
            replay_batch_size: c.default_replay_batch,
            read_max: DEFAULT_READ_MAX,
            heartbeat_interval_ms: ms(c.default_heartbeat_interval),
            session_timeout_ms: ms(c.default_session_timeout),
        }),
    }
}

fn unexpected(r: Reply) -> Status {
    Status::internal(format!("unexpected reply from the engine: {r:?}"))
}

impl<L: EngineLink> EventStreamService<L> {
    /// A service over `link`. Sessions and replays end when every sender of `stop` is
    /// dropped (the server shuts down).
    pub fn new(link: L, config: ServiceConfig, stop: async_channel::Receiver<()>) -> Self {
        EventStreamService {
            link,
            config,
            sessions: Arc::default(),
            stop,
        }
    }

    /// The tonic server of this service. A request message over
    /// [`MAX_REQUEST_MESSAGE_BYTES`] is refused with `RESOURCE_EXHAUSTED` and details, before
    /// its bytes are buffered ([`LimitedServer`]).
    pub fn into_server(self) -> LimitedServer<pb::event_stream_server::EventStreamServer<Self>> {
        LimitedServer::new(
            pb::event_stream_server::EventStreamServer::new(self)
                .max_decoding_message_size(MAX_REQUEST_MESSAGE_BYTES)
                .max_encoding_message_size(64 << 20),
            MAX_REQUEST_MESSAGE_BYTES,
        )
    }

    async fn call(&self, cmd: Command) -> Result<Reply, Status> {
        self.link.call(cmd).await.map_err(|e| error_to_status(&e))
    }

    /// The append command of a publish request.
    fn append_command(
        r: pb::PublishRequest,
        correlation: Option<&str>,
    ) -> Result<(Published, Command), Status> {
        let stream = stream_name(&r.stream)?;
        let events = r
            .events
            .into_iter()
            .map(|e| new_event_from_pb(e, correlation))
            .collect::<Result<Vec<_>, _>>()?;
        // What the log lines of the answer name per event (the id when the producer gave one).
        let ids = events
            .iter()
            .map(|e| (e.event_id, e.correlation_id.clone()))
            .collect();
        let cmd = Command::Append(AppendRequest {
            stream: stream.clone(),
            events,
            expected_offset: r.expected_offset,
        });
        Ok(((stream, ids), cmd))
    }

    /// The answer to a publish, logged.
    fn appended(
        (stream, ids): &Published,
        reply: Result<Reply, Error>,
        correlation: Option<&str>,
    ) -> Result<pb::PublishResponse, Status> {
        match reply {
            Ok(Reply::Appended(outcomes)) => {
                for (o, (id, corr)) in outcomes.iter().zip(ids) {
                    let (p, duplicate) = match o {
                        tributary_core::AppendOutcome::Appended(p) => (p, false),
                        tributary_core::AppendOutcome::Duplicate { original } => (original, true),
                    };
                    tracing::debug!(
                        code = 4000,
                        stream = %stream,
                        partition = p.partition,
                        offset = p.offset,
                        event_id = %id.map(|i| i.0.to_string()).unwrap_or_default(),
                        duplicate,
                        correlation_id = corr.as_deref().unwrap_or(""),
                        "published"
                    );
                }
                Ok(pb::PublishResponse {
                    outcomes: outcomes.iter().map(outcome_to_pb).collect(),
                })
            }
            Ok(r) => Err(unexpected(r)),
            Err(e) => {
                let s = error_to_status(&e);
                tracing::info!(code = 4001, stream = %stream, status = ?s.code(), error = s.message(), correlation_id = correlation.unwrap_or(""), "publish refused");
                Err(s)
            }
        }
    }

    /// One page of one partition: `max` events at most (unset: 100).
    async fn read_page(
        &self,
        stream: StreamName,
        partition: u32,
        from: u64,
        max: Option<u32>,
    ) -> Result<Vec<Arc<tributary_core::Event>>, Status> {
        let cmd = Command::Read {
            stream,
            partition,
            from,
            max: max.unwrap_or(DEFAULT_READ_MAX),
        };
        match self.call(cmd).await? {
            Reply::Events(events) => Ok(events),
            r => Err(unexpected(r)),
        }
    }

    async fn append(
        &self,
        r: pb::PublishRequest,
        correlation: Option<&str>,
    ) -> Result<pb::PublishResponse, Status> {
        let (published, cmd) = Self::append_command(r, correlation)?;
        Self::appended(&published, self.link.call(cmd).await, correlation)
    }

    /// Opens a session: connects, creates the subscription if asked and missing, attaches.
    async fn open(&self, o: pb::OpenSubscription) -> Result<Opened<L::Conn>, Status> {
        let stream = stream_name(&o.stream)?;
        let subscription = subscription_name(&o.subscription)?;
        let consumer = consumer_id(&o.consumer)?;
        if let Some(mut c) = o.create {
            c.stream.clone_from(&o.stream);
            c.name.clone_from(&o.subscription);
            match self
                .link
                .call(Command::CreateSubscription(subscription_config(c)?))
                .await
            {
                Ok(_) | Err(Error::SubscriptionExists { .. }) => {}
                Err(e) => return Err(error_to_status(&e)),
            }
        }
        let conn = self.link.connect().await.map_err(|e| error_to_status(&e))?;
        conn.call(Command::Attach {
            stream: stream.clone(),
            subscription: subscription.clone(),
            consumer: consumer.clone(),
            max_in_flight: o.max_in_flight,
        })
        .await
        .map_err(|e| error_to_status(&e))?;
        let config = match conn
            .call(Command::DescribeSubscription {
                stream: stream.clone(),
                subscription: subscription.clone(),
            })
            .await
        {
            Ok(Reply::Subscription(i)) => i.config,
            Ok(r) => return Err(unexpected(r)),
            Err(e) => return Err(error_to_status(&e)),
        };
        tracing::info!(code = 3000, stream = %stream, subscription = %subscription, consumer = %consumer, "consumer attached");
        let (grants, grants_rx) = async_channel::unbounded();
        let session = Arc::new(Session {
            id: uuid::Uuid::new_v4().to_string(),
            conn,
            stream,
            subscription,
            consumer,
            mode: config.mode,
        });
        Ok((session, grants, grants_rx))
    }

    fn subscribed(&self, request_id: u64, session: &Session<L::Conn>) -> Sent {
        Ok(pb::SubscribeResponse {
            request_id,
            kind: Some(pb::subscribe_response::Kind::Subscribed(pb::Subscribed {
                session_id: session.id.clone(),
            })),
        })
    }
}

#[tonic::async_trait]
impl<L: EngineLink> EventStream for EventStreamService<L> {
    async fn publish(
        &self,
        req: Request<pb::PublishRequest>,
    ) -> Result<Response<pb::PublishResponse>, Status> {
        let corr = correlation(&req);
        self.append(req.into_inner(), corr.as_deref())
            .await
            .map(Response::new)
    }

    async fn publish_stream(
        &self,
        req: Request<Streaming<pb::PublishRequest>>,
    ) -> Result<Response<pb::PublishStreamResponse>, Status> {
        let corr = correlation(&req);
        let mut input = req.into_inner();
        let mut out = pb::PublishStreamResponse::default();
        // A refused batch is an in-band `error` result and the stream goes on, as in
        // PublishPipelined. A message that cannot be read (not protobuf, too large) ends the
        // call with its status, the batches and events appended before it added to its
        // ErrorInfo's metadata (`batches_before`, `appended_before`).
        loop {
            let r = match input.message().await {
                Ok(Some(r)) => r,
                Ok(None) => break,
                Err(s) => {
                    let (batches, events) = (out.batches.len(), out.events);
                    return Err(with_context(
                        &s,
                        format!(
                            "message {batches} unreadable ({batches} batches, {events} events appended before it): {}",
                            s.message()
                        ),
                        &[
                            ("batches_before", batches.to_string()),
                            ("appended_before", events.to_string()),
                        ],
                        "BATCH_REFUSED",
                    ));
                }
            };
            use pb::publish_result::Kind;
            let kind = match self.append(r, corr.as_deref()).await {
                Ok(b) => {
                    out.events += b.outcomes.len() as u64;
                    Kind::Published(b)
                }
                Err(s) => Kind::Error(error_status(&s)),
            };
            out.batches.push(pb::PublishResult { kind: Some(kind) });
        }
        Ok(Response::new(out))
    }

    type PublishPipelinedStream = BoxStream<pb::PipelinedAnswer>;

    async fn publish_pipelined(
        &self,
        req: Request<Streaming<pb::PipelinedPublish>>,
    ) -> Result<Response<Self::PublishPipelinedStream>, Status> {
        let corr = correlation(&req);
        let mut input = req.into_inner();
        let conn = self.link.connect().await.map_err(|e| error_to_status(&e))?;
        let (out, rx) = tokio::sync::mpsc::channel(self.config.response_buffer.max(1));
        type Pending = (
            u64,
            Pin<Box<dyn std::future::Future<Output = Result<pb::PublishResponse, Status>> + Send>>,
        );
        let (pending_tx, pending_rx) = async_channel::bounded::<Pending>(PIPELINED_COMMANDS);
        // Answers go out in the order the batches came, each once it is durable.
        self.link.spawn(async move {
            while let Ok((id, answer)) = pending_rx.recv().await {
                let kind = match answer.await {
                    Ok(p) => pb::pipelined_answer::Kind::Published(p),
                    Err(s) => pb::pipelined_answer::Kind::Error(error_status(&s)),
                };
                let msg = pb::PipelinedAnswer {
                    request_id: id,
                    kind: Some(kind),
                };
                if out.send(Ok(msg)).await.is_err() {
                    return;
                }
            }
        });
        let stop = self.stop.clone();
        self.link.spawn(async move {
            // One wait for the stop for the whole stream, not one per message.
            let mut stopped = std::pin::pin!(stop.recv().fuse());
            loop {
                let m = select_biased! {
                    _ = stopped.as_mut() => return,
                    m = input.message().fuse() => m,
                };
                let Ok(Some(m)) = m else { return };
                let corr = corr.clone();
                let pending: Pending =
                    match m.batch.map(|b| Self::append_command(b, corr.as_deref())) {
                        None => (
                            m.request_id,
                            Box::pin(std::future::ready(Err(invalid(
                                "batch",
                                "a batch is needed",
                            )))),
                        ),
                        Some(Err(s)) => (m.request_id, Box::pin(std::future::ready(Err(s)))),
                        Some(Ok((published, cmd))) => match conn.submit(cmd).await {
                            Ok(reply) => (
                                m.request_id,
                                Box::pin(async move {
                                    Self::appended(&published, reply.await, corr.as_deref())
                                }),
                            ),
                            Err(e) => (
                                m.request_id,
                                Box::pin(std::future::ready(Err(error_to_status(&e)))),
                            ),
                        },
                    };
                if pending_tx.send(pending).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe(
        &self,
        req: Request<Streaming<pb::SubscribeRequest>>,
    ) -> Result<Response<Self::SubscribeStream>, Status> {
        let mut input = req.into_inner();
        let (request_id, open) = expect_open(input.message().await?)?;
        let credit = open.initial_credit.map(u64::from);
        let (session, grants, grants_rx) = self.open(open).await?;
        let (out, rx) = response_channel(&self.config);
        let _ = out.send(self.subscribed(request_id, &session)).await;
        self.link.spawn(forward(
            self.link.clone(),
            session.clone(),
            grants_rx,
            credit,
            self.config.heartbeat_interval,
            out.clone(),
            self.stop.clone(),
        ));
        // Commands are handed to the engine in the order they came; their answers are awaited
        // by a task of their own, so acks are pipelined rather than one durable save at a time.
        let (answers_tx, answers_rx) = async_channel::bounded::<Answer>(PIPELINED_COMMANDS);
        self.link.spawn(answer_in_order(answers_rx, out.clone()));
        let stop = self.stop.clone();
        self.link.spawn(async move {
            // One wait for the stop for the whole stream, not one per message.
            let mut stopped = std::pin::pin!(stop.recv().fuse());
            let mut last_id = request_id;
            loop {
                let m = select_biased! {
                    _ = stopped.as_mut() => return,
                    m = input.message().fuse() => m,
                };
                let m = match m {
                    Ok(Some(m)) => m,
                    // The client finished or broke the stream: the session ends (dropping the
                    // grants sender stops the forwarding task, which drops the connection).
                    Ok(None) | Err(_) => return,
                };
                use pb::subscribe_request::Kind;
                if m.request_id <= last_id {
                    let e = request_id_rule(m.request_id, last_id);
                    let _ = answers_tx
                        .send((m.request_id, Box::pin(std::future::ready(Err(e)))))
                        .await;
                    continue;
                }
                last_id = m.request_id;
                let settle = match m.kind {
                    Some(Kind::Ack(a)) => Settle::Ack(a),
                    Some(Kind::Nack(n)) => Settle::Nack(n),
                    Some(Kind::Term(t)) => Settle::Term(t),
                    Some(Kind::Credit(c)) => Settle::Credit(c),
                    Some(Kind::Heartbeat(_)) => Settle::Heartbeat,
                    Some(Kind::Commit(c)) => Settle::Commit(c),
                    Some(Kind::MarkRead(m)) => Settle::MarkRead(m),
                    Some(Kind::ReceiptStatus(q)) => Settle::ReceiptStatus(q),
                    Some(Kind::Open(_)) | None => {
                        let e = invalid("open", "a session is opened once, by its first message");
                        let _ = answers_tx
                            .send((m.request_id, Box::pin(std::future::ready(Err(e)))))
                            .await;
                        continue;
                    }
                };
                let reply: Answer = match session.command(settle, &grants).await {
                    Err(e) => (m.request_id, Box::pin(std::future::ready(Err(e)))),
                    Ok(Step::Answered(kind)) => {
                        (m.request_id, Box::pin(std::future::ready(Ok(kind))))
                    }
                    Ok(Step::Engine(cmd)) => match session.conn.submit(cmd).await {
                        Ok(pending) => (
                            m.request_id,
                            Box::pin(async move { reply_kind(pending.await) }),
                        ),
                        Err(e) => (
                            m.request_id,
                            Box::pin(std::future::ready(reply_kind(Err(e)))),
                        ),
                    },
                };
                if answers_tx.send(reply).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type SubscribeServerStreamStream = BoxStream<pb::SubscribeResponse>;

    async fn subscribe_server_stream(
        &self,
        req: Request<pb::OpenSubscription>,
    ) -> Result<Response<Self::SubscribeServerStreamStream>, Status> {
        let open = req.into_inner();
        let credit = open.initial_credit.map(u64::from);
        let (session, grants, grants_rx) = self.open(open).await?;
        let (out, rx) = response_channel(&self.config);
        let _ = out.send(self.subscribed(0, &session)).await;
        if let Ok(mut s) = self.sessions.lock() {
            s.insert(session.id.clone(), (session.clone(), grants));
        }
        let (link, sessions, heartbeat, stop) = (
            self.link.clone(),
            self.sessions.clone(),
            self.config.heartbeat_interval,
            self.stop.clone(),
        );
        self.link.spawn(async move {
            let id = session.id.clone();
            forward(link, session, grants_rx, credit, heartbeat, out, stop).await;
            if let Ok(mut s) = sessions.lock() {
                s.remove(&id);
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn settle(
        &self,
        req: Request<pb::SettleRequest>,
    ) -> Result<Response<pb::SettleResponse>, Status> {
        let r = req.into_inner();
        let (session, grants) = self
            .sessions
            .lock()
            .ok()
            .and_then(|s| s.get(&r.session_id).cloned())
            .ok_or_else(|| session_not_found(&r.session_id))?;
        use pb::settle_request::Kind;
        let settle = match r.kind {
            Some(Kind::Ack(a)) => Settle::Ack(a),
            Some(Kind::Nack(n)) => Settle::Nack(n),
            Some(Kind::Term(t)) => Settle::Term(t),
            Some(Kind::Credit(c)) => Settle::Credit(c),
            Some(Kind::Heartbeat(_)) => Settle::Heartbeat,
            Some(Kind::Commit(c)) => Settle::Commit(c),
            Some(Kind::MarkRead(m)) => Settle::MarkRead(m),
            Some(Kind::ReceiptStatus(q)) => Settle::ReceiptStatus(q),
            None => return Err(invalid("kind", "a command is needed")),
        };
        use pb::settle_response::Kind as S;
        use pb::subscribe_response::Kind as K;
        let kind = match session.settle(settle, &grants).await? {
            K::Settled(a) => S::Settled(a),
            K::Credited(c) => S::Credited(c),
            K::Assignment(a) => S::Assignment(a),
            K::Committed(c) => S::Committed(c),
            K::MarkedRead(m) => S::MarkedRead(m),
            K::ReceiptStatus(r) => S::ReceiptStatus(r),
            K::Heartbeat(h) => S::Heartbeat(h),
            k => return Err(Status::internal(format!("unexpected answer: {k:?}"))),
        };
        Ok(Response::new(pb::SettleResponse { kind: Some(kind) }))
    }

    type ReplayStream = BoxStream<pb::ReplayResponse>;

    async fn replay(
        &self,
        req: Request<pb::ReplayRequest>,
    ) -> Result<Response<Self::ReplayStream>, Status> {
        let r = req.into_inner();
        let stream = stream_name(&r.stream)?;
        let (from, mut options) = replay(&r)?;
        options.window = Some(self.config.replay_window.max(1));
        let conn = self.link.connect().await.map_err(|e| error_to_status(&e))?;
        let id = match conn
            .call(Command::Replay {
                stream,
                from,
                options,
            })
            .await
        {
            Ok(Reply::ReplayStarted(id)) => id,
            Ok(r) => return Err(unexpected(r)),
            Err(e) => return Err(error_to_status(&e)),
        };
        let (out, rx) = tokio::sync::mpsc::channel(self.config.response_buffer.max(1));
        // Batches tonic took from the response stream, reported to the engine as credit.
        let (taken_tx, taken_rx) = async_channel::unbounded::<()>();
        let stop = self.stop.clone();
        self.link.spawn(async move {
            use pb::replay_response::Kind;
            let mut stopped = std::pin::pin!(stop.recv().fuse());
            loop {
                let item = select_biased! {
                    _ = out.closed().fuse() => return,
                    _ = stopped.as_mut() => {
                        let _ = out.send(Err(Status::unavailable("the server is shutting down"))).await;
                        return;
                    }
                    t = taken_rx.recv().fuse() => {
                        // Every batch taken so far, in one command.
                        let mut batches = u32::from(t.is_ok());
                        while taken_rx.try_recv().is_ok() {
                            batches = batches.saturating_add(1);
                        }
                        // The answer is not awaited: a replay that has just ended answers
                        // `REPLAY_NOT_FOUND`, and its last items are on their way anyway.
                        if batches > 0
                            && conn.submit(Command::ReplayCredit { replay: id, batches }).await.is_err()
                        {
                            let _ = out.send(Err(Status::unavailable("the engine has stopped"))).await;
                            return;
                        }
                        continue;
                    }
                    e = conn.next().fuse() => e,
                };
                let (kind, last) = match item {
                    Some(ConnEvent::Replay { replay, item }) if replay == id => match item {
                        ReplayItem::Events(events) => (
                            Kind::Events(pb::Deliveries {
                                events: events
                                    .iter()
                                    .map(|e| pb::Delivery { event: Some(event_to_pb(e)), attempt: 1 })
                                    .collect(),
                            }),
                            false,
                        ),
                        ReplayItem::Progress { done, rate, remaining, eta } => (
                            Kind::Progress(pb::ReplayProgress {
                                done,
                                rate,
                                remaining,
                                eta_ms: crate::convert::ms(eta),
                            }),
                            false,
                        ),
                        ReplayItem::Done { total } => (Kind::Done(pb::ReplayDone { total }), true),
                        ReplayItem::Failed(e) => {
                            let _ = out.send(Err(error_to_status(&e))).await;
                            return;
                        }
                    },
                    Some(_) => continue,
                    None => {
                        let _ = out.send(Err(Status::unavailable("the engine has stopped"))).await;
                        return;
                    }
                };
                if out.send(Ok(pb::ReplayResponse { kind: Some(kind) })).await.is_err() || last {
                    // Dropping the connection stops the replay in the engine.
                    return;
                }
            }
        });
        // A batch counts as taken when tonic takes it from the stream to send it, which HTTP/2
        // flow control paces: the engine's window covers the batches queued here.
        let taken = move |m: &Result<pb::ReplayResponse, Status>| {
            if let Ok(pb::ReplayResponse {
                kind: Some(pb::replay_response::Kind::Events(_)),
            }) = m
            {
                let _ = taken_tx.try_send(());
            }
        };
        Ok(Response::new(Box::pin(tokio_stream::StreamExt::map(
            ReceiverStream::new(rx),
            move |m| {
                taken(&m);
                m
            },
        ))))
    }

    async fn read(
        &self,
        req: Request<pb::ReadRequest>,
    ) -> Result<Response<pb::ReadResponse>, Status> {
        let r = req.into_inner();
        let events = self
            .read_page(stream_name(&r.stream)?, r.partition, r.from, r.max)
            .await?;
        Ok(Response::new(pb::ReadResponse {
            events: events.iter().map(|e| event_to_pb(e)).collect(),
        }))
    }

    async fn read_stream(
        &self,
        req: Request<pb::ReadStreamRequest>,
    ) -> Result<Response<pb::ReadStreamResponse>, Status> {
        let r = req.into_inner();
        let stream = stream_name(&r.stream)?;
        let max = r.max.unwrap_or(DEFAULT_READ_MAX);
        let limit = self.config.engine.max_read_events;
        if !(1..=limit).contains(&max) {
            return Err(invalid("max", format!("{max} is outside 1..={limit}")));
        }
        let info = match self.call(Command::DescribeStream(stream.clone())).await? {
            Reply::Stream(i) => i,
            r => return Err(unexpected(r)),
        };
        let given = tributary_core::partition_offsets(
            info.partitions.len(),
            &r.from.iter().map(position).collect::<Vec<_>>(),
        )
        .map_err(|e| error_to_status(&e))?;
        let mut events = Vec::new();
        let mut next = Vec::with_capacity(info.partitions.len());
        let mut end = true;
        for ((p, part), from) in (0u32..).zip(&info.partitions).zip(given) {
            let mut at = from.unwrap_or(part.first).max(part.first);
            let room = max.saturating_sub(events.len() as u32);
            if at < part.next && room > 0 {
                let page = self.read_page(stream.clone(), p, at, Some(room)).await?;
                if let Some(last) = page.last() {
                    at = last.offset + 1;
                }
                events.extend(page.iter().map(|e| event_to_pb(e)));
            }
            end &= at >= part.next;
            next.push(pb::Position {
                partition: p,
                offset: at,
            });
        }
        Ok(Response::new(pb::ReadStreamResponse { events, next, end }))
    }

    async fn get_server_info(&self, _req: Request<()>) -> Result<Response<pb::ServerInfo>, Status> {
        Ok(Response::new(server_info(&self.config.engine)))
    }

    async fn create_stream(
        &self,
        req: Request<pb::CreateStreamRequest>,
    ) -> Result<Response<pb::StreamInfo>, Status> {
        let config = stream_config(req.into_inner())?;
        let name = config.name.clone();
        self.call(Command::CreateStream(config)).await?;
        tracing::info!(code = 1001, stream = %name, "stream created");
        match self.call(Command::DescribeStream(name)).await? {
            Reply::Stream(i) => Ok(Response::new(stream_info_to_pb(&i))),
            r => Err(unexpected(r)),
        }
    }

    async fn delete_stream(
        &self,
        req: Request<pb::DeleteStreamRequest>,
    ) -> Result<Response<()>, Status> {
        let name = stream_name(&req.into_inner().name)?;
        self.call(Command::DeleteStream(name.clone())).await?;
        tracing::info!(code = 1003, stream = %name, "stream deleted");
        Ok(Response::new(()))
    }

    async fn get_stream(
        &self,
        req: Request<pb::GetStreamRequest>,
    ) -> Result<Response<pb::StreamInfo>, Status> {
        let name = stream_name(&req.into_inner().name)?;
        match self.call(Command::DescribeStream(name)).await? {
            Reply::Stream(i) => Ok(Response::new(stream_info_to_pb(&i))),
            r => Err(unexpected(r)),
        }
    }

    async fn list_streams(
        &self,
        _req: Request<()>,
    ) -> Result<Response<pb::ListStreamsResponse>, Status> {
        match self.call(Command::ListStreams).await? {
            Reply::Streams(s) => Ok(Response::new(pb::ListStreamsResponse {
                streams: s.iter().map(stream_info_to_pb).collect(),
            })),
            r => Err(unexpected(r)),
        }
    }

    async fn create_subscription(
        &self,
        req: Request<pb::SubscriptionConfig>,
    ) -> Result<Response<()>, Status> {
        let config = subscription_config(req.into_inner())?;
        let (stream, name) = (config.stream.clone(), config.name.clone());
        self.call(Command::CreateSubscription(config)).await?;
        tracing::info!(code = 2000, stream = %stream, subscription = %name, "subscription created");
        Ok(Response::new(()))
    }

    async fn delete_subscription(
        &self,
        req: Request<pb::SubscriptionRef>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let (stream, subscription) = (stream_name(&r.stream)?, subscription_name(&r.subscription)?);
        self.call(Command::DeleteSubscription {
            stream: stream.clone(),
            subscription: subscription.clone(),
        })
        .await?;
        tracing::info!(code = 2001, stream = %stream, subscription = %subscription, "subscription deleted");
        Ok(Response::new(()))
    }

    async fn get_subscription(
        &self,
        req: Request<pb::SubscriptionRef>,
    ) -> Result<Response<pb::SubscriptionInfo>, Status> {
        let r = req.into_inner();
        let stream = stream_name(&r.stream)?;
        let subscription = subscription_name(&r.subscription)?;
        match self
            .call(Command::DescribeSubscription {
                stream,
                subscription,
            })
            .await?
        {
            Reply::Subscription(i) => Ok(Response::new(subscription_info_to_pb(&i))),
            r => Err(unexpected(r)),
        }
    }

    async fn list_subscriptions(
        &self,
        req: Request<pb::ListSubscriptionsRequest>,
    ) -> Result<Response<pb::ListSubscriptionsResponse>, Status> {
        let stream = stream_name(&req.into_inner().stream)?;
        match self.call(Command::ListSubscriptions(stream)).await? {
            Reply::Subscriptions(list) => Ok(Response::new(pb::ListSubscriptionsResponse {
                subscriptions: list.iter().map(subscription_info_to_pb).collect(),
            })),
            r => Err(unexpected(r)),
        }
    }

    async fn reset_offset(
        &self,
        req: Request<pb::ResetOffsetRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let (stream, subscription) = (stream_name(&r.stream)?, subscription_name(&r.subscription)?);
        let consumer = if r.consumer.is_empty() {
            None
        } else {
            Some(consumer_id(&r.consumer)?)
        };
        self.call(Command::ResetSubscription {
            stream: stream.clone(),
            subscription: subscription.clone(),
            consumer,
            to: reset_target(r.to)?,
        })
        .await?;
        tracing::info!(code = 2002, stream = %stream, subscription = %subscription, consumer = r.consumer, "offset reset");
        Ok(Response::new(()))
    }

    async fn remove_consumer(
        &self,
        req: Request<pb::RemoveConsumerRequest>,
    ) -> Result<Response<()>, Status> {
        let r = req.into_inner();
        let (stream, subscription) = (stream_name(&r.stream)?, subscription_name(&r.subscription)?);
        let consumer = consumer_id(&r.consumer)?;
        // Logged by the server as the engine's `ConsumerRemoved` notice (code 2003).
        self.call(Command::RemoveConsumer {
            stream,
            subscription,
            consumer,
        })
        .await?;
        Ok(Response::new(()))
    }

    async fn register_schema(
        &self,
        req: Request<pb::RegisterSchemaRequest>,
    ) -> Result<Response<()>, Status> {
        let r = schema_registration(req.into_inner())?;
        let (t, v) = (r.event_type.clone(), r.version);
        self.call(Command::RegisterSchema(r)).await?;
        tracing::info!(code = 6000, event_type = %t, version = v, "schema registered");
        Ok(Response::new(()))
    }

    async fn list_schemas(
        &self,
        _req: Request<()>,
    ) -> Result<Response<pb::ListSchemasResponse>, Status> {
        match self.call(Command::ListSchemas).await? {
            Reply::Schemas(list) => Ok(Response::new(schemas_to_pb(&list))),
            r => Err(unexpected(r)),
        }
    }
}
