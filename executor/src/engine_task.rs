//! The engine task and the handles clients use to reach it.

use crate::clock::Clock;
use crate::journal::Journal;
use crate::runtime::Runtime;
use futures_channel::oneshot;
use futures_util::{FutureExt, select_biased};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tributary_core::{
    Command, ConnEvent, ConnId, Engine, Error, Event, Input, Notice, Now, OpId, Output,
    PublishResult, Reply, ReqId, StorageResult, StreamName,
};
use tributary_store_api::Store;

/// Limits of the executor's own queues.
#[derive(Debug, Clone)]
pub struct ExecutorConfig {
    /// Client messages waiting for the engine task; senders wait when it is full
    /// (back-pressure).
    pub queue: usize,
    /// Inputs handled per wake-up before the outputs are drained again.
    pub budget: usize,
    /// Record every input of the engine here (see [`Journal`]).
    pub journal: Option<Arc<Journal>>,
    /// Shown every input and output of the engine (metrics).
    pub observer: Option<Arc<dyn Observer>>,
    /// Carries out the relay's publishes of cross-service streams (the AMQP transport).
    /// Without one, a publish stays unconfirmed: the relay position does not move.
    pub publisher: Option<Arc<dyn Publisher>>,
}

/// The broker side of the relay (SPEC 9): publishes one event of a cross-service stream and
/// answers whether the broker confirmed it. The engine decides what goes out and when, and
/// sends a failed publish again after its back-off; a publisher never retries by itself.
pub trait Publisher: std::fmt::Debug + Send + Sync + 'static {
    /// Publishes `event` of `stream`.
    fn publish(
        &self,
        stream: StreamName,
        event: Arc<Event>,
    ) -> std::pin::Pin<Box<dyn std::future::Future<Output = PublishResult> + Send>>;
}

/// Something that watches the engine's inputs and outputs as the engine task handles them,
/// e.g. to count what happened for metrics. Called on the engine task: it must be quick and
/// never block. It only watches: it cannot change an input or an output.
pub trait Observer: std::fmt::Debug + Send + Sync + 'static {
    /// An input, just before the engine handles it, with the time it is handled at.
    fn input(&self, now: Now, input: &Input);
    /// An output, just before the executor carries it out, with the time it is carried out at.
    fn output(&self, now: Now, output: &Output);
}

impl Default for ExecutorConfig {
    fn default() -> Self {
        ExecutorConfig {
            queue: 4096,
            budget: 64,
            journal: None,
            observer: None,
            publisher: None,
        }
    }
}

// Commands travel by value: boxing them (clippy's advice once `Command` outgrew the other
// variants by 200 bytes) would add an allocation to every call, appends included.
#[allow(clippy::large_enum_variant)]
enum Msg {
    Call {
        conn: ConnId,
        req: ReqId,
        cmd: Command,
        reply: oneshot::Sender<Result<Reply, Error>>,
    },
    Open {
        conn: ConnId,
        events: async_channel::Sender<ConnEvent>,
    },
    Close {
        conn: ConnId,
    },
}

/// A cheap, cloneable way to reach the engine task.
#[derive(Clone)]
pub struct Handle {
    tx: async_channel::Sender<Msg>,
    ids: Arc<AtomicU64>,
    /// Closes when the engine task has ended.
    ended: async_channel::Receiver<()>,
}

impl std::fmt::Debug for Handle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Handle").finish_non_exhaustive()
    }
}

fn stopped() -> Error {
    Error::Unavailable("the engine task has stopped".into())
}

impl Handle {
    /// Completes once the engine task has ended (every handle and connection dropped) and
    /// released what it held (the store, the journal). Take it before dropping the handles.
    pub fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let ended = self.ended.clone();
        async move {
            let _ = ended.recv().await;
        }
    }

    /// Sends a command on `conn` and waits for its reply.
    pub async fn call(&self, conn: ConnId, cmd: Command) -> Result<Reply, Error> {
        self.submit(conn, cmd).await?.await
    }

    /// Queues a command on `conn` (waiting while the engine's queue is full) and returns the
    /// future of its reply: commands submitted one after another reach the engine in that
    /// order, while their replies are awaited together (pipelining).
    pub async fn submit(&self, conn: ConnId, cmd: Command) -> Result<PendingReply, Error> {
        let (reply, rx) = oneshot::channel();
        let req = ReqId(self.ids.fetch_add(1, Ordering::Relaxed));
        self.tx
            .send(Msg::Call {
                conn,
                req,
                cmd,
                reply,
            })
            .await
            .map_err(|_| stopped())?;
        Ok(PendingReply(rx))
    }

    /// Opens a connection: deliveries and replay items for it arrive on its `events`.
    pub async fn connect(&self) -> Result<Connection, Error> {
        let conn = ConnId(self.ids.fetch_add(1, Ordering::Relaxed));
        // Deliveries are bounded by the consumers' credit (max_in_flight) in the core.
        let (tx, events) = async_channel::unbounded();
        self.tx
            .send(Msg::Open { conn, events: tx })
            .await
            .map_err(|_| stopped())?;
        Ok(Connection {
            id: conn,
            events,
            handle: self.clone(),
        })
    }
}

/// A client connection. Dropping it detaches its consumers and stops its replays.
#[derive(Debug)]
pub struct Connection {
    /// Its id.
    pub id: ConnId,
    /// Deliveries and replay items.
    pub events: async_channel::Receiver<ConnEvent>,
    handle: Handle,
}

impl Connection {
    /// Sends a command on this connection and waits for its reply.
    pub async fn call(&self, cmd: Command) -> Result<Reply, Error> {
        self.handle.call(self.id, cmd).await
    }

    /// Queues a command on this connection; see [`Handle::submit`].
    pub async fn submit(&self, cmd: Command) -> Result<PendingReply, Error> {
        self.handle.submit(self.id, cmd).await
    }
}

/// The reply to a submitted command, to be awaited.
#[derive(Debug)]
pub struct PendingReply(oneshot::Receiver<Result<Reply, Error>>);

impl std::future::Future for PendingReply {
    type Output = Result<Reply, Error>;
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Self::Output> {
        std::pin::Pin::new(&mut self.0)
            .poll(cx)
            .map(|r| r.unwrap_or_else(|_| Err(stopped())))
    }
}

/// The connection id of commands that belong to no client connection (publish, read,
/// administration). Connections get ids from 1.
pub const NO_CONN: ConnId = ConnId(0);

impl Drop for Connection {
    fn drop(&mut self) {
        // Never lost, even when the queue is full: the engine must learn the connection closed.
        let _ = self.handle.tx.force_send(Msg::Close { conn: self.id });
    }
}

/// Starts the engine task on `rt`; it runs until every handle and connection is dropped.
pub fn start<S: Store, R: Runtime>(
    rt: R,
    store: S,
    engine: Engine,
    clock: Clock,
    config: ExecutorConfig,
) -> Handle {
    let (tx, rx) = async_channel::bounded(config.queue.max(1));
    let (alive, ended) = async_channel::bounded(1);
    let handle = Handle {
        tx,
        ids: Arc::new(AtomicU64::new(1)),
        ended,
    };
    let task = EngineTask {
        rt: rt.clone(),
        store: Arc::new(store),
        engine,
        clock,
        waiting: BTreeMap::new(),
        conns: BTreeMap::new(),
        budget: config.budget.max(1),
        journal: config.journal,
        observer: config.observer,
        publisher: config.publisher,
        _alive: alive,
    };
    rt.spawn(task.run(rx));
    handle
}

struct EngineTask<S, R> {
    rt: R,
    store: Arc<S>,
    engine: Engine,
    clock: Clock,
    waiting: BTreeMap<(ConnId, ReqId), oneshot::Sender<Result<Reply, Error>>>,
    conns: BTreeMap<ConnId, async_channel::Sender<ConnEvent>>,
    budget: usize,
    journal: Option<Arc<Journal>>,
    observer: Option<Arc<dyn Observer>>,
    publisher: Option<Arc<dyn Publisher>>,
    /// Dropped with the task: closes `Handle::stopped`.
    _alive: async_channel::Sender<()>,
}

impl<S: Store, R: Runtime> EngineTask<S, R> {
    /// Hands one input to the engine at `now` (recording it first when journaling: when the
    /// journal's queue is full this waits, yielding the thread).
    async fn input(&mut self, now: Now, i: Input) {
        if let Some(j) = &self.journal {
            j.record(now, &i).await;
        }
        if let Some(o) = &self.observer {
            o.input(now, &i);
        }
        self.engine.handle_input(now, i);
    }

    async fn run(mut self, rx: async_channel::Receiver<Msg>) {
        let (done_tx, done_rx) = async_channel::unbounded::<(OpId, StorageResult)>();
        // Publishes in flight are bounded by the relay window in the core.
        let (pub_tx, pub_rx) = async_channel::unbounded::<(OpId, PublishResult)>();
        loop {
            if self.drain(&done_tx, &pub_tx) > 0 {
                // Replies went out: let their callers run and send their next commands, so
                // that the appends they make are handled together (one write, group commit).
                YieldNow(false).await;
            }
            let wait = self
                .engine
                .poll_timeout()
                .map_or(Duration::from_secs(3600), |t| {
                    Duration::from_nanos(t.0.saturating_sub(self.clock.now().mono.0))
                });
            let input = select_biased! {
                done = done_rx.recv().fuse() => done.ok().map(|(op, result)| Input::StorageDone { op, result }),
                done = pub_rx.recv().fuse() => done.ok().map(|(op, result)| Input::PublishDone { op, result }),
                msg = rx.recv().fuse() => match msg {
                    Ok(m) => self.message(m),
                    Err(_) => return,
                },
                _ = self.rt.sleep(wait).fuse() => Some(Input::Tick),
            };
            // One reading of the clock for the inputs of this wake-up (they are ready together).
            let mut now = self.clock.now();
            let mut from_clients = matches!(input, Some(Input::Client { .. }));
            if let Some(i) = input {
                self.input(now, i).await;
            }
            // More inputs that are ready now, up to the budget, before draining again. When a
            // client's command woke the task and nothing else is ready yet, the other tasks get
            // one turn first: the callers woken by the last replies send their next commands
            // then, and they are handled together here instead of one wake-up each.
            let mut handled = 1;
            while handled < self.budget {
                let next = if let Ok((op, result)) = done_rx.try_recv() {
                    Some(Input::StorageDone { op, result })
                } else if let Ok((op, result)) = pub_rx.try_recv() {
                    Some(Input::PublishDone { op, result })
                } else {
                    match rx.try_recv() {
                        Ok(m) => self.message(m),
                        Err(_) if from_clients => {
                            from_clients = false;
                            YieldNow(false).await;
                            now = self.clock.now();
                            continue;
                        }
                        Err(_) => break,
                    }
                };
                handled += 1;
                if let Some(i) = next {
                    self.input(now, i).await;
                }
            }
        }
    }

    fn message(&mut self, m: Msg) -> Option<Input> {
        match m {
            Msg::Call {
                conn,
                req,
                cmd,
                reply,
            } => {
                self.waiting.insert((conn, req), reply);
                Some(Input::Client { conn, req, cmd })
            }
            Msg::Open { conn, events } => {
                self.conns.insert(conn, events);
                None
            }
            Msg::Close { conn } => {
                self.conns.remove(&conn);
                Some(Input::ConnClosed { conn })
            }
        }
    }

    /// Carries out the engine's outputs; returns how many replies were sent.
    fn drain(
        &mut self,
        done: &async_channel::Sender<(OpId, StorageResult)>,
        published: &async_channel::Sender<(OpId, PublishResult)>,
    ) -> usize {
        let mut replies = 0;
        let now = self.clock.now();
        while let Some(o) = self.engine.poll_output() {
            if let Some(obs) = &self.observer {
                obs.output(now, &o);
            }
            match o {
                Output::Storage { op, req } => {
                    let (store, done) = (self.store.clone(), done.clone());
                    self.rt.spawn(async move {
                        let result = store.execute(req).await;
                        let _ = done.send((op, result)).await;
                    });
                }
                Output::Reply { conn, req, reply } => {
                    if let Some(w) = self.waiting.remove(&(conn, req)) {
                        let _ = w.send(reply);
                        replies += 1;
                    }
                }
                Output::Deliver {
                    conn,
                    stream,
                    subscription,
                    consumer,
                    events,
                } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.try_send(ConnEvent::Deliver {
                            stream,
                            subscription,
                            consumer,
                            events,
                        });
                    }
                }
                Output::Replay { conn, replay, item } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.try_send(ConnEvent::Replay { replay, item });
                    }
                }
                Output::Assignment {
                    conn,
                    stream,
                    subscription,
                    consumer,
                    assignment,
                } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.try_send(ConnEvent::Assignment {
                            stream,
                            subscription,
                            consumer,
                            assignment,
                        });
                    }
                }
                Output::Publish { op, stream, event } => match &self.publisher {
                    Some(p) => {
                        let (sent, published) = (p.publish(stream, event), published.clone());
                        self.rt.spawn(async move {
                            let result = sent.await;
                            let _ = published.send((op, result)).await;
                        });
                    }
                    // No broker configured: the publish stays unconfirmed, so the relay
                    // position does not move and nothing is lost.
                    None => tracing::debug!(
                        code = 8001,
                        op = op.0,
                        stream = %stream,
                        partition = event.partition,
                        offset = event.offset,
                        event_id = %event.event_id.0,
                        correlation_id = event.correlation_id.as_deref().unwrap_or(""),
                        "cross-service event waits for a broker publisher"
                    ),
                },
                Output::ConsumerNotice {
                    conn,
                    consumer,
                    notice,
                } => {
                    if let Some(c) = self.conns.get(&conn) {
                        let _ = c.try_send(ConnEvent::Notice { consumer, notice });
                    }
                }
                Output::Notice(n) => log_notice(&n),
            }
        }
        replies
    }
}

/// Gives the other tasks of the runtime one turn (runtime-neutral).
struct YieldNow(bool);

impl std::future::Future for YieldNow {
    type Output = ();
    fn poll(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<()> {
        if self.0 {
            return std::task::Poll::Ready(());
        }
        self.0 = true;
        cx.waker().wake_by_ref();
        std::task::Poll::Pending
    }
}

fn log_notice(n: &Notice) {
    match n {
        Notice::Recovered {
            streams,
            subscriptions,
        } => {
            tracing::info!(
                code = 1000,
                streams,
                subscriptions,
                "recovered from the store"
            )
        }
        Notice::DeadLettered {
            stream,
            subscription,
            position,
            deliveries,
            event_id,
            correlation_id,
        } => tracing::warn!(
            code = 5003,
            stream = %stream,
            subscription = %subscription,
            partition = position.partition,
            offset = position.offset,
            event_id = %event_id.0,
            correlation_id = correlation_id.as_deref().unwrap_or(""),
            deliveries,
            "event moved to the dead letter stream"
        ),
        Notice::Dropped { stream, count } => {
            tracing::warn!(code = 4002, stream = %stream, count, "ephemeral stream full: oldest events dropped")
        }
        Notice::Rebalanced {
            stream,
            subscription,
            generation,
            members,
            moved,
        } => tracing::info!(
            code = 2010,
            stream = %stream,
            subscription = %subscription,
            generation,
            members,
            moved,
            "consumer group rebalanced"
        ),
        Notice::SessionExpired {
            stream,
            subscription,
            consumer,
        } => tracing::warn!(
            code = 3010,
            stream = %stream,
            subscription = %subscription,
            consumer = %consumer,
            "consumer group member's session timed out"
        ),
        Notice::UnreadTimeout {
            stream,
            subscription,
            consumer,
            position,
            redelivered,
            event,
        } => tracing::info!(
            code = 5010,
            stream = %stream,
            subscription = %subscription,
            consumer = %consumer,
            partition = position.partition,
            offset = position.offset,
            event_id = %event.as_ref().map(|e| e.0.0.to_string()).unwrap_or_default(),
            correlation_id = event.as_ref().and_then(|e| e.1.as_deref()).unwrap_or(""),
            redelivered,
            "event delivered but not read within unread_timeout"
        ),
        Notice::Truncated {
            stream,
            partition,
            first,
            removed,
        } => tracing::info!(
            code = 1010,
            stream = %stream,
            partition,
            first,
            removed,
            "retention removed a prefix of a partition"
        ),
        Notice::PublishFailed {
            stream,
            position,
            error,
            delay,
            event,
        } => tracing::warn!(
            code = 8002,
            stream = %stream,
            partition = position.partition,
            offset = position.offset,
            event_id = %event.as_ref().map(|e| e.0.0.to_string()).unwrap_or_default(),
            correlation_id = event.as_ref().and_then(|e| e.1.as_deref()).unwrap_or(""),
            error = %error,
            delay_ms = delay.as_millis() as u64,
            "publish to the broker failed; sent again after a back-off"
        ),
        Notice::StorageRetry { what, error } => {
            tracing::warn!(code = 1002, what, error = %error, "storage request failed; retrying")
        }
        Notice::ConsumerRemoved {
            stream,
            subscription,
            consumer,
            expired,
        } => tracing::info!(
            code = 2003,
            stream = %stream,
            subscription = %subscription,
            consumer = %consumer,
            expired,
            "consumer position removed"
        ),
    }
}
