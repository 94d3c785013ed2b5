//! A `tributary serve` process per test, on a free port, on SQLite (a temporary folder) or on
//! the PostgreSQL of `TRIBUTARY_TEST_DATABASE_URL` (a schema of its own), with a tonic client.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tonic::transport::Channel;
use tributary_grpc::pb;
use tributary_grpc::pb::event_stream_client::EventStreamClient;

pub type Client = EventStreamClient<Channel>;

/// The store a test's server runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Store {
    Sqlite,
    Postgres,
}

/// The runtime a test's server runs on: `tributary serve` (tokio) or `tributary-async-std
/// serve` (async-std, gRPC only: no HTTP transport, no TLS).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Runtime {
    Tokio,
    AsyncStd,
}

/// The store and the runtime a test's server runs on. `Backend::Sqlite` and
/// `Backend::Postgres` are on tokio; [`Backend::on_async_std`] moves one to async-std.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Backend {
    pub store: Store,
    pub runtime: Runtime,
}

#[allow(non_upper_case_globals)]
impl Backend {
    pub const Sqlite: Backend = Backend {
        store: Store::Sqlite,
        runtime: Runtime::Tokio,
    };
    pub const Postgres: Backend = Backend {
        store: Store::Postgres,
        runtime: Runtime::Tokio,
    };

    /// The same store, served by `tributary-async-std`.
    pub const fn on_async_std(self) -> Backend {
        Backend {
            store: self.store,
            runtime: Runtime::AsyncStd,
        }
    }
}

pub const BIN: &str = env!("CARGO_BIN_EXE_tributary");

/// The async-std server binary (`tributary-io-async-std`), next to `tributary` in the target
/// folder: `cargo nextest run --workspace` (scripts/test) builds it; running only this crate's
/// tests uses whatever was built last (`cargo build -p tributary-io-async-std` refreshes it).
pub fn async_std_bin() -> PathBuf {
    let bin = Path::new(BIN).with_file_name(format!(
        "tributary-async-std{}",
        std::env::consts::EXE_SUFFIX
    ));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p tributary-io-async-std`",
        bin.display()
    );
    bin
}

/// A running server. Killed (SIGKILL) on drop if still running.
pub struct Server {
    child: Option<Child>,
    /// The gRPC URL (`https://` under TLS).
    pub url: String,
    /// The HTTP transport's base URL (`https://` under TLS); empty on async-std (no HTTP).
    pub http: String,
    pub runtime: Runtime,
    pub dir: PathBuf,
    store: String,
    extra: Vec<String>,
    stderr: PathBuf,
}

static SCHEMAS: AtomicU32 = AtomicU32::new(0);

/// The `--store` of a new, empty store for `backend`, inside `dir` for SQLite.
pub fn new_store(backend: Backend, dir: &Path, name: &str) -> String {
    match backend.store {
        Store::Sqlite => format!("sqlite:{}", dir.join("tributary.db").display()),
        Store::Postgres => {
            let url = std::env::var("TRIBUTARY_TEST_DATABASE_URL").expect(
                "TRIBUTARY_TEST_DATABASE_URL must name a PostgreSQL for these tests \
                 (scripts/pg-test-cluster start prints one)",
            );
            // Unique across runs: process ids repeat on a long-lived cluster.
            let n = SCHEMAS.fetch_add(1, Ordering::Relaxed);
            let t = std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map_or(0, |d| d.as_micros());
            format!("{url}#e2e_{name}_{}_{t}_{n}", std::process::id())
        }
    }
}

impl Server {
    /// Starts a server on a new store.
    pub fn start(backend: Backend, dir: &Path, name: &str) -> Server {
        let store = new_store(backend, dir, name);
        Server::start_with(backend.runtime, dir, &store, &[], "info")
    }

    /// Starts a server on `store` with extra arguments; waits until it listens.
    pub fn start_on(dir: &Path, store: &str, extra: &[&str]) -> Server {
        Server::start_env(dir, store, extra, "info")
    }

    /// The same, with this `RUST_LOG`.
    pub fn start_env(dir: &Path, store: &str, extra: &[&str], rust_log: &str) -> Server {
        Server::start_with(Runtime::Tokio, dir, store, extra, rust_log)
    }

    /// The same, on `runtime`.
    pub fn start_with(
        runtime: Runtime,
        dir: &Path,
        store: &str,
        extra: &[&str],
        rust_log: &str,
    ) -> Server {
        let stderr = dir.join(format!(
            "server-{}.log",
            SCHEMAS.fetch_add(1, Ordering::Relaxed)
        ));
        let log = std::fs::File::create(&stderr).expect("log file");
        let mut cmd = match runtime {
            Runtime::Tokio => {
                let mut c = Command::new(BIN);
                c.args(["serve", "--http-listen", "127.0.0.1:0"]);
                c
            }
            Runtime::AsyncStd => {
                let mut c = Command::new(async_std_bin());
                c.arg("serve");
                c
            }
        };
        let mut child = cmd
            .args(["--grpc-listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir)
            .args(["--store", store])
            .args(extra)
            .env("RUST_LOG", rust_log)
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .expect("start tributary serve");
        let stdout = child.stdout.take().expect("stdout");
        let mut line = String::new();
        BufReader::new(stdout)
            .read_line(&mut line)
            .expect("read stdout");
        let field = |name: &str| {
            line.split_whitespace()
                .find_map(|w| w.strip_prefix(name))
                .map(str::to_string)
        };
        let http = match runtime {
            Runtime::Tokio => field("http="),
            Runtime::AsyncStd => Some(String::new()),
        };
        let (Some(url), Some(http)) = (field("grpc="), http) else {
            let log = std::fs::read_to_string(&stderr).unwrap_or_default();
            panic!("the server did not start; stdout {line:?}; stderr:\n{log}");
        };
        Server {
            url,
            http,
            runtime,
            child: Some(child),
            dir: dir.to_path_buf(),
            store: store.to_string(),
            extra: extra.iter().map(|s| s.to_string()).collect(),
            stderr,
        }
    }

    /// The same store, a new process.
    pub fn restart(mut self) -> Server {
        self.terminate();
        let extra: Vec<&str> = self.extra.iter().map(String::as_str).collect();
        Server::start_with(
            self.runtime,
            &self.dir.clone(),
            &self.store.clone(),
            &extra,
            "info",
        )
    }

    pub async fn client(&self) -> Client {
        let channel = Channel::from_shared(self.url.clone())
            .expect("url")
            .connect()
            .await
            .expect("connect");
        EventStreamClient::new(channel)
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map_or(0, Child::id)
    }

    /// Sends SIGTERM and waits for the process to end; returns whether it exited cleanly.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let _ = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status();
        child.wait().map(|s| s.success()).unwrap_or(false)
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    /// Runs the binary's client with `--server` set; returns (exit ok, stdout, stderr).
    pub fn cli(&self, args: &[&str], stdin: Option<&str>) -> (bool, String, String) {
        let mut cmd = Command::new(BIN);
        cmd.args(args)
            .env("TRIBUTARY_SERVER", &self.url)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd.spawn().expect("run tributary");
        if let Some(text) = stdin {
            use std::io::Write;
            let mut i = child.stdin.take().expect("stdin");
            i.write_all(text.as_bytes()).expect("write stdin");
        }
        let out = child.wait_with_output().expect("wait");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Bounds a step of a test: a hang fails the test instead of blocking it.
pub async fn within<F: std::future::Future>(what: &str, f: F) -> F::Output {
    tokio::time::timeout(Duration::from_secs(30), f)
        .await
        .unwrap_or_else(|_| panic!("{what}: no answer within 30 s"))
}

pub fn json_event(t: &str, body: &str) -> pb::NewEvent {
    pb::NewEvent {
        event_type: t.into(),
        payload: body.as_bytes().to_vec().into(),
        ..Default::default()
    }
}

pub async fn create_stream(c: &mut Client, name: &str, partitions: u32) {
    c.create_stream(pb::CreateStreamRequest {
        name: name.into(),
        partitions: Some(partitions),
        ..Default::default()
    })
    .await
    .expect("create stream");
}

pub async fn publish(
    c: &mut Client,
    stream: &str,
    events: Vec<pb::NewEvent>,
) -> Vec<pb::PublishOutcome> {
    c.publish(pb::PublishRequest {
        stream: stream.into(),
        events,
        expected_offset: None,
    })
    .await
    .expect("publish")
    .into_inner()
    .outcomes
}

/// A bidirectional subscription session driven by the test.
pub struct Session {
    pub tx: tokio::sync::mpsc::Sender<pb::SubscribeRequest>,
    pub rx: tonic::Streaming<pb::SubscribeResponse>,
    next_id: u64,
    /// Messages other than events that came while [`Session::answer`] waited for another
    /// (notices, assignments, other answers): [`Session::next`] gives them first, in order.
    kept: std::collections::VecDeque<pb::SubscribeResponse>,
}

pub fn open(stream: &str, subscription: &str, consumer: &str) -> pb::OpenSubscription {
    pb::OpenSubscription {
        stream: stream.into(),
        subscription: subscription.into(),
        consumer: consumer.into(),
        ..Default::default()
    }
}

impl Session {
    pub async fn open(c: &mut Client, open: pb::OpenSubscription) -> Session {
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tx.send(pb::SubscribeRequest {
            request_id: 1,
            kind: Some(pb::subscribe_request::Kind::Open(open)),
        })
        .await
        .expect("send open");
        let mut rx = within(
            "subscribe",
            c.subscribe(tokio_stream::wrappers::ReceiverStream::new(rx)),
        )
        .await
        .expect("subscribe")
        .into_inner();
        let first = within("subscribed", rx.message())
            .await
            .expect("stream")
            .expect("message");
        assert!(
            matches!(
                first.kind,
                Some(pb::subscribe_response::Kind::Subscribed(_))
            ),
            "first message: {first:?}"
        );
        Session {
            tx,
            rx,
            next_id: 2,
            kept: Default::default(),
        }
    }

    /// The next message that is not the server's own heartbeat: a kept one first, else from
    /// the server within 30 s (heartbeats do not extend the wait).
    pub async fn next(&mut self) -> pb::SubscribeResponse {
        match self.kept.pop_front() {
            Some(m) => m,
            None => self.receive().await,
        }
    }

    async fn receive(&mut self) -> pb::SubscribeResponse {
        let rx = &mut self.rx;
        within("next message", async {
            loop {
                let m = rx.message().await.expect("stream ok").expect("stream open");
                let own_heartbeat = m.request_id == 0
                    && matches!(m.kind, Some(pb::subscribe_response::Kind::Heartbeat(_)));
                if !own_heartbeat {
                    return m;
                }
            }
        })
        .await
    }

    /// Events until `n` have arrived (acks and other answers in between are skipped).
    pub async fn events(&mut self, n: usize) -> Vec<pb::Delivery> {
        let mut got = Vec::new();
        while got.len() < n {
            if let Some(pb::subscribe_response::Kind::Events(d)) = self.next().await.kind {
                got.extend(d.events);
            }
        }
        got
    }

    pub async fn send(&mut self, kind: pb::subscribe_request::Kind) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.tx
            .send(pb::SubscribeRequest {
                request_id: id,
                kind: Some(kind),
            })
            .await
            .expect("send");
        id
    }

    /// The answer to request `id`, with the events that came before it; other messages are
    /// kept for [`Session::next`] (a notice may come before an answer on a loaded machine).
    pub async fn answer(&mut self, id: u64) -> (pb::subscribe_response::Kind, Vec<pb::Delivery>) {
        let is_answer = |m: &pb::SubscribeResponse| {
            m.request_id == id
                && !matches!(m.kind, None | Some(pb::subscribe_response::Kind::Events(_)))
        };
        if let Some(at) = self.kept.iter().position(is_answer)
            && let Some(pb::SubscribeResponse { kind: Some(k), .. }) = self.kept.remove(at)
        {
            return (k, Vec::new());
        }
        let mut events = Vec::new();
        loop {
            let m = self.receive().await;
            match m.kind {
                Some(pb::subscribe_response::Kind::Events(d)) => events.extend(d.events),
                Some(k) if m.request_id == id => return (k, events),
                _ => self.kept.push_back(m),
            }
        }
    }

    pub async fn ack(&mut self, ds: &[pb::Delivery]) -> pb::Settled {
        let positions = positions(ds);
        let id = self
            .send(pb::subscribe_request::Kind::Ack(pb::Ack { positions }))
            .await;
        match self.answer(id).await.0 {
            pb::subscribe_response::Kind::Settled(r) => r,
            other => panic!("ack answered {other:?}"),
        }
    }
}

/// Runs `scripts/<script>` with `args` and `envs`: a check by a tool no one here wrote. False
/// when it was skipped: a script exits 2 when its tool is missing, which fails the test only
/// when the environment variable `require` is set (CI installs the tools and sets it).
pub fn outside_check(script: &str, args: &[&str], envs: &[(&str, String)], require: &str) -> bool {
    let path = format!("{}/../scripts/{script}", env!("CARGO_MANIFEST_DIR"));
    let out = std::process::Command::new(&path)
        .args(args)
        .envs(envs.iter().map(|(k, v)| (*k, v.as_str())))
        .output()
        .unwrap_or_else(|e| panic!("run scripts/{script}: {e}"));
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    if out.status.code() == Some(2) && std::env::var_os(require).is_none() {
        eprintln!("scripts/{script} skipped: {log}");
        return false;
    }
    assert!(
        out.status.success(),
        "scripts/{script} {args:?} failed:\n{log}"
    );
    true
}

/// The `ErrorInfo` reason of an in-band error.
pub fn reason(e: &pb::ErrorStatus) -> String {
    tonic_types::StatusExt::get_details_error_info(&tributary_grpc::status_of(e))
        .map(|i| i.reason)
        .unwrap_or_default()
}

pub fn positions(ds: &[pb::Delivery]) -> Vec<pb::Position> {
    ds.iter()
        .map(|d| {
            let e = d.event.as_ref().expect("event");
            pb::Position {
                partition: e.partition,
                offset: e.offset,
            }
        })
        .collect()
}

pub fn offsets(ds: &[pb::Delivery]) -> Vec<u64> {
    ds.iter()
        .map(|d| d.event.as_ref().expect("event").offset)
        .collect()
}

/// Declares each test twice: on SQLite and on PostgreSQL.
#[macro_export]
macro_rules! on_both_stores {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres).await
                }
            )*
        }
    };
}

/// Declares each test again on the async-std server (`tributary-async-std`), on SQLite and
/// on PostgreSQL: modules `async_std_sqlite` and `async_std_postgres`.
#[macro_export]
macro_rules! on_async_std {
    ($($name:ident),* $(,)?) => {
        mod async_std_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite.on_async_std()).await
                }
            )*
        }
        mod async_std_postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Postgres.on_async_std()).await
                }
            )*
        }
    };
}

/// Declares each test on SQLite, on tokio (module `sqlite`) and on async-std
/// (`async_std_sqlite`).
#[macro_export]
macro_rules! on_sqlite_both_runtimes {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite).await
                }
            )*
        }
        mod async_std_sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    super::$name($crate::common::Backend::Sqlite.on_async_std()).await
                }
            )*
        }
    };
}

/// Waits until the server no longer lists `consumer` as attached (a session the client
/// dropped ends on the server a moment later).
pub async fn wait_detached(c: &mut Client, stream: &str, subscription: &str, consumer: &str) {
    within("consumer detached", async {
        loop {
            let info = c
                .get_subscription(pb::SubscriptionRef {
                    stream: stream.into(),
                    subscription: subscription.into(),
                })
                .await
                .expect("describe")
                .into_inner();
            if !info.attached.iter().any(|a| a == consumer) {
                return;
            }
            tokio::task::yield_now().await;
        }
    })
    .await
}
