//! A replay without a rate to a client that stops reading: the engine, the gRPC service and a
//! tonic client over a real socket, in this process, so that the test can watch what the
//! server holds for the replay. The service runs over a [`Watch`] link, which passes
//! everything to the executor and keeps, for the replay's connection, the number of batches
//! the engine has sent and the service has not yet reported taken (the engine's window), as
//! seen at every item the service takes. On SQLite and on PostgreSQL.

mod common;

use common::{Backend, Store, within};
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio_stream::wrappers::TcpListenerStream;
use tributary_core::{Command, Config, ConnEvent, Engine, Error, ReplayItem, Reply};
use tributary_grpc::Link;
use tributary_grpc::pb::event_stream_client::EventStreamClient;
use tributary_grpc::{EngineConn, EngineLink, EventStreamService, ServiceConfig, pb};
use tributary_io_tokio::{Clock, Connection, ExecutorConfig, TokioRuntime, start};
use tributary_server::store::StoreSpec;

/// What the server holds for a replay, as the [`Watch`] sees it.
#[derive(Debug, Default)]
struct Held {
    /// Events batches the service took from the executor's queue.
    taken: u64,
    /// Batches reported taken to the engine (`ReplayCredit`).
    credited: u64,
    /// The most seen at once of: batches taken or still queued, minus those credited.
    most: u64,
}

/// The executor's link, watching what the service does with replays.
#[derive(Clone)]
struct Watch {
    link: Link<TokioRuntime>,
    held: Arc<Mutex<Held>>,
    /// The latest figure, for the test to wait on.
    now: Arc<tokio::sync::watch::Sender<u64>>,
}

struct WatchConn {
    conn: Connection,
    watch: Watch,
}

impl Watch {
    fn update(&self, f: impl FnOnce(&mut Held), queued: u64) {
        let Ok(mut h) = self.held.lock() else { return };
        f(&mut h);
        let out = (h.taken + queued).saturating_sub(h.credited);
        h.most = h.most.max(out);
        self.now.send_replace(out);
    }
}

impl EngineLink for Watch {
    type Conn = WatchConn;

    fn call(&self, cmd: Command) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.link.call(cmd)
    }

    async fn connect(&self) -> Result<WatchConn, Error> {
        Ok(WatchConn {
            conn: self.link.connect().await?,
            watch: self.clone(),
        })
    }

    fn spawn<F: Future<Output = ()> + Send + 'static>(&self, f: F) {
        self.link.spawn(f);
    }

    fn sleep(&self, d: Duration) -> impl Future<Output = ()> + Send {
        self.link.sleep(d)
    }
}

impl EngineConn for WatchConn {
    fn call(&self, cmd: Command) -> impl Future<Output = Result<Reply, Error>> + Send {
        self.conn.call(cmd)
    }

    async fn submit(
        &self,
        cmd: Command,
    ) -> Result<impl Future<Output = Result<Reply, Error>> + Send + 'static, Error> {
        if let Command::ReplayCredit { batches, .. } = &cmd {
            let batches = u64::from(*batches);
            self.watch
                .update(|h| h.credited += batches, self.conn.events.len() as u64);
        }
        self.conn.submit(cmd).await
    }

    async fn next(&self) -> Option<ConnEvent> {
        let e = self.conn.events.recv().await.ok();
        let batch = matches!(
            e,
            Some(ConnEvent::Replay {
                item: ReplayItem::Events(_),
                ..
            })
        );
        // The queue may also hold the replay's `Done` behind its last batches: one more.
        self.watch.update(
            |h| h.taken += u64::from(batch),
            self.conn.events.len() as u64,
        );
        e
    }

    fn backlog(&self) -> usize {
        self.conn.events.len()
    }
}

static SCHEMAS: AtomicU64 = AtomicU64::new(0);

fn store_spec(b: Backend, dir: &std::path::Path) -> StoreSpec {
    match b.store {
        Store::Sqlite => StoreSpec::Sqlite(Some(dir.join("tributary.db"))),
        Store::Postgres => {
            let url = std::env::var("TRIBUTARY_TEST_DATABASE_URL")
                .expect("TRIBUTARY_TEST_DATABASE_URL must name a PostgreSQL for these tests");
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
            StoreSpec::Postgres {
                url,
                schema: Some(format!("e2e_replay_{}_{t}_{n}", std::process::id())),
            }
        }
    }
}

const WINDOW: u32 = 4;
const EVENTS: usize = 3_000;
const PAYLOAD: usize = 4 << 10;

async fn a_replay_to_a_stalled_reader_holds_its_window_and_finishes(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let store = store_spec(b, dir.path())
        .open(dir.path())
        .await
        .expect("open store");
    let clock = Clock::default();
    let engine = Engine::new(Config::default(), 1, clock.now()).expect("engine");
    let handle = start(
        TokioRuntime,
        store,
        engine,
        clock,
        ExecutorConfig::default(),
    );
    let (now_tx, mut now_rx) = tokio::sync::watch::channel(0);
    let watch = Watch {
        link: Link {
            handle: handle.clone(),
            rt: TokioRuntime,
        },
        held: Arc::default(),
        now: Arc::new(now_tx),
    };
    let (stop_tx, stop_rx) = async_channel::bounded::<()>(1);
    let service = EventStreamService::new(
        watch.clone(),
        ServiceConfig {
            replay_window: WINDOW,
            ..ServiceConfig::default()
        },
        stop_rx,
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("addr");
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service.into_server())
            .serve_with_incoming(TcpListenerStream::new(listener)),
    );
    let channel = tonic::transport::Channel::from_shared(format!("http://{addr}"))
        .expect("url")
        .connect()
        .await
        .expect("connect");
    let mut c = EventStreamClient::new(channel);

    c.create_stream(pb::CreateStreamRequest {
        name: "big".into(),
        partitions: Some(2),
        ..Default::default()
    })
    .await
    .expect("create stream");
    // 12 MB in 3,000 events, far more than HTTP/2's flow-control windows hold.
    for chunk in 0..EVENTS / 250 {
        let events = (0..250)
            .map(|i| pb::NewEvent {
                event_type: "blob".into(),
                key: Some(format!("k{}", chunk * 250 + i).into_bytes().into()),
                payload: vec![b'x'; PAYLOAD].into(),
                ..Default::default()
            })
            .collect();
        c.publish(pb::PublishRequest {
            stream: "big".into(),
            events,
            expected_offset: None,
        })
        .await
        .expect("publish");
    }

    // One event per batch, no rate, no progress: 3,000 batches as fast as the server goes.
    let mut r = within(
        "replay",
        c.replay(pb::ReplayRequest {
            stream: "big".into(),
            batch_size: Some(1),
            progress_interval_ms: Some(3_600_000),
            ..Default::default()
        }),
    )
    .await
    .expect("replay")
    .into_inner();
    // The client reads nothing until the server holds its whole window: the replay then
    // waits for the reader (before the window, the server queued batch after batch until it
    // gave up on the replay).
    within(
        "the replay to reach its window",
        now_rx.wait_for(|&out| out >= u64::from(WINDOW)),
    )
    .await
    .expect("watch");

    let mut got = Vec::new();
    let total = loop {
        let m = within("replay item", r.message())
            .await
            .expect("replay stream")
            .expect("an item before the end");
        match m.kind {
            Some(pb::replay_response::Kind::Events(d)) => {
                for e in d.events {
                    let e = e.event.expect("event");
                    got.push((e.partition, e.offset));
                }
            }
            Some(pb::replay_response::Kind::Done(d)) => break d.total,
            _ => {}
        }
    };
    assert_eq!(total, EVENTS as u64);
    // Everything once, partition after partition, in order.
    let mut expected = got.clone();
    expected.sort();
    expected.dedup();
    assert_eq!(got.len(), EVENTS);
    assert_eq!(got, expected);
    let held = watch.held.lock().map(|h| (h.most, h.taken)).expect("lock");
    assert_eq!(
        held.1, EVENTS as u64,
        "every batch went through the service"
    );
    assert!(
        held.0 <= u64::from(WINDOW) + 1,
        "the server held {} batches for the replay; window {WINDOW}",
        held.0
    );

    drop(stop_tx);
    server.abort();
}

mod sqlite {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_to_a_stalled_reader_holds_its_window_and_finishes() {
        super::a_replay_to_a_stalled_reader_holds_its_window_and_finishes(super::Backend::Sqlite)
            .await
    }
}

mod postgres {
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_replay_to_a_stalled_reader_holds_its_window_and_finishes() {
        super::a_replay_to_a_stalled_reader_holds_its_window_and_finishes(super::Backend::Postgres)
            .await
    }
}
