//! The kill loop (issue 26): a real `tributary serve` process on SQLite or PostgreSQL, under
//! load from publishers and a consumer over gRPC, killed with SIGKILL at random moments and
//! started again on the same data, round after round. Optionally PostgreSQL itself is crashed
//! (`pg_ctl stop -m immediate`) and started again under load.
//!
//! Publishers send fresh event ids, and after every restart they publish again every id whose
//! answer they never received (in flight at the kill) and a sample of the ids already
//! acknowledged: the stream's dedup window (24 h here) must hold each to one copy, and a
//! publish of an acknowledged id must answer `duplicate` with the position first answered. One
//! consumer reads the stream through an exclusive subscription and acknowledges everything it
//! receives.
//!
//! "Acknowledged" means that the server's answer was received: a publish answer, or the
//! `AckResult` of a consumer's ack with every position acked. At the end, with the server
//! running once more, the harness resolves every id still in doubt by publishing it again,
//! lets the consumer drain the stream, reads the whole stream back and checks:
//!
//! - every acknowledged publish is in the stream exactly once, at the position it was answered;
//! - no event id is in the stream twice, and no event is there that was never published;
//! - no consumer ever received an event whose ack it had seen answered (the ack floor held
//!   across every crash), and after the drain every event has been acknowledged by the
//!   consumer (none lost to the subscription).
//!
//! Each round's kill comes a random time after the restarted server answered its first
//! publish (a restart first recovers streams, dedup ids and cursors, which takes longer as
//! the data grows; the time is printed). The kill moments, ids and samples come from a seed
//! printed at the start (`--seed` replays the same choices; the interleaving of a real server
//! is not replayable).
//!
//! ```text
//! cargo build --release -p tributary-server -p tributary-tests --bin tributary --bin kill-loop
//! target/release/kill-loop --store sqlite --rounds 200
//! target/release/kill-loop --store postgres --rounds 200 --kill-postgres-every 10
//! ```

use clap::Parser;
use rand::{Rng, SeedableRng};
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tonic::transport::Channel;
use tributary_grpc::pb;
use tributary_grpc::pb::event_stream_client::EventStreamClient;

const STREAM: &str = "killloop";
const SUBSCRIPTION: &str = "kl";
const PARTITIONS: u32 = 4;

#[derive(Parser)]
struct Args {
    /// `sqlite` (a file in the data folder) or `postgres`.
    #[arg(long, default_value = "sqlite")]
    store: String,
    /// The server binary.
    #[arg(long, default_value = "target/release/tributary")]
    server_bin: PathBuf,
    /// Rounds: each runs the load until a kill, then starts the server again.
    #[arg(long, default_value_t = 20)]
    rounds: u32,
    /// Seed of the kill moments, ids and samples (default: from the clock; printed).
    #[arg(long)]
    seed: Option<u64>,
    /// Publishers (each one call in flight).
    #[arg(long, default_value_t = 4)]
    publishers: usize,
    /// Events per publish call.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Shortest and longest run of a round before the kill, in milliseconds.
    #[arg(long, default_value_t = 50)]
    min_ms: u64,
    /// See `min_ms`.
    #[arg(long, default_value_t = 1500)]
    max_ms: u64,
    /// Acknowledged ids published again after each restart (a random sample).
    #[arg(long, default_value_t = 200)]
    republish_sample: usize,
    /// PostgreSQL: the database URL; without it a private cluster is started
    /// (`scripts/pg-test-cluster` on port 54339, data in /tmp/tributary-pg-killloop).
    #[arg(long)]
    pg_url: Option<String>,
    /// PostgreSQL: every K-th round crashes PostgreSQL (immediate stop) under load and starts
    /// it again, then kills the server as usual (0: never). Needs the private cluster.
    #[arg(long, default_value_t = 0)]
    kill_postgres_every: u32,
    /// After PostgreSQL is started again, the load runs this long (milliseconds, drawn up to
    /// twice this) before the server is killed: the server must find its database again.
    #[arg(long, default_value_t = 3000)]
    pg_back_ms: u64,
    /// The folder for the data and the server's log (default: a new one under /tmp, removed
    /// at the end when every check passed).
    #[arg(long)]
    data_dir: Option<PathBuf>,
}

/// A check that failed.
#[derive(Default)]
struct Violations(Vec<String>);

impl Violations {
    fn push(&mut self, v: String) {
        eprintln!("VIOLATION: {v}");
        self.0.push(v);
    }
}

/// What the harness knows, across every round.
#[derive(Default)]
struct State {
    /// Publishes answered: event id -> (partition, offset).
    acked: BTreeMap<String, (u32, u64)>,
    /// The same ids in the order they were answered (to sample from).
    acked_order: Vec<String>,
    /// Sent, answer never received (and not answered since): may or may not be stored.
    in_doubt: BTreeSet<String>,
    /// Ids to publish again, taken by the publishers before fresh ones.
    republish: VecDeque<String>,
    /// Ids queued in `republish` or in a publish in flight: an id is never in two requests at
    /// once, so that the answer that wrote it is the one recorded.
    busy: HashSet<String>,
    /// Positions whose consumer ack was answered (every position of the ack acked).
    consumer_acked: BTreeSet<(u32, u64)>,
    /// Positions whose consumer ack was sent and never answered: the server may or may not
    /// have saved it, so it may or may not deliver them again.
    consumer_ack_in_doubt: BTreeSet<(u32, u64)>,
    /// Deliveries received by the consumer, over every round.
    deliveries: u64,
    /// Publishes of an acknowledged id answered `duplicate` at the same position.
    duplicates_held: u64,
    /// Publishes of an id in doubt answered `duplicate` (its first write had committed).
    in_doubt_found: u64,
    /// Acks answered with some positions ignored.
    acks_partly_ignored: u64,
    /// Publish calls answered, over every round.
    answers: u64,
    /// Per round: from the server's start to the first publish answered.
    ready_after: Vec<Duration>,
    violations: Violations,
}

impl State {
    /// Queues `id` to be published again, unless it is queued or in flight already.
    fn queue_again(&mut self, id: String) {
        if self.busy.insert(id.clone()) {
            self.republish.push_back(id);
        }
    }
}

type Shared = Arc<Mutex<State>>;

fn lock(s: &Shared) -> std::sync::MutexGuard<'_, State> {
    s.lock().unwrap_or_else(|p| p.into_inner())
}

/// The key of an event: a function of its id, so that a second publish goes to the same
/// partition.
fn event_of(id: &str) -> pb::NewEvent {
    let key = format!("k{}", id.bytes().map(u32::from).sum::<u32>() % 16);
    pb::NewEvent {
        event_id: id.to_string(),
        event_type: "kill.loop".into(),
        key: Some(key.into_bytes().into()),
        payload: format!("{{\"id\":\"{id}\"}}").into_bytes().into(),
        ..Default::default()
    }
}

fn fresh_id(rng: &mut rand_chacha::ChaCha8Rng) -> String {
    tributary_core::EventId::from_bytes(rng.random()).to_string()
}

/// One publisher: batches of ids to publish again first, then fresh ones, until `stop`.
async fn publisher(
    mut client: EventStreamClient<Channel>,
    state: Shared,
    mut rng: rand_chacha::ChaCha8Rng,
    batch: usize,
    stop: Arc<AtomicBool>,
) {
    while !stop.load(Ordering::Relaxed) {
        let ids: Vec<String> = {
            let mut s = lock(&state);
            let mut ids = Vec::with_capacity(batch);
            while ids.len() < batch {
                match s.republish.pop_front() {
                    Some(id) => ids.push(id),
                    None => break,
                }
            }
            while ids.len() < batch {
                let id = fresh_id(&mut rng);
                s.in_doubt.insert(id.clone());
                s.busy.insert(id.clone());
                ids.push(id);
            }
            ids
        };
        if !publish_batch(&mut client, &state, ids).await {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Publishes `ids` and records the answer; `false` when there was none (the ids not yet
/// acknowledged are queued to go out again).
async fn publish_batch(
    client: &mut EventStreamClient<Channel>,
    state: &Shared,
    ids: Vec<String>,
) -> bool {
    let req = pb::PublishRequest {
        stream: STREAM.into(),
        events: ids.iter().map(|id| event_of(id)).collect(),
        expected_offset: None,
    };
    let outcomes = match client.publish(req).await {
        Ok(resp) => resp.into_inner().outcomes,
        Err(_) => {
            // Not answered: those not acknowledged stay in doubt and go out again (in this
            // round if the server is still there, e.g. PostgreSQL was down).
            let mut s = lock(state);
            for id in ids {
                if s.acked.contains_key(&id) {
                    s.busy.remove(&id);
                } else {
                    // Still busy: queued again.
                    s.republish.push_back(id);
                }
            }
            return false;
        }
    };
    let mut s = lock(state);
    s.answers += 1;
    for id in &ids {
        s.busy.remove(id);
    }
    if outcomes.len() != ids.len() {
        s.violations.push(format!(
            "{} outcomes for {} events",
            outcomes.len(),
            ids.len()
        ));
        return true;
    }
    for (id, o) in ids.iter().zip(outcomes) {
        let Some(p) = o.position else {
            s.violations.push(format!("no position for {id}"));
            continue;
        };
        let pos = (p.partition, p.offset);
        match s.acked.get(id).copied() {
            Some(first) => {
                if !o.duplicate {
                    s.violations.push(format!(
                        "acknowledged id {id} (at {first:?}) written again at {pos:?}"
                    ));
                } else if first != pos {
                    s.violations.push(format!(
                        "acknowledged id {id} at {first:?} now answered as a duplicate of {pos:?}"
                    ));
                } else {
                    s.duplicates_held += 1;
                }
            }
            None => {
                if o.duplicate {
                    s.in_doubt_found += 1;
                }
                s.in_doubt.remove(id);
                s.acked.insert(id.clone(), pos);
                s.acked_order.push(id.clone());
            }
        }
    }
    true
}

/// The consumer: an exclusive subscription session, opened again whenever it ends, until
/// `stop`. Every delivery is acknowledged at once.
async fn consumer(client: EventStreamClient<Channel>, state: Shared, stop: Arc<AtomicBool>) {
    while !stop.load(Ordering::Relaxed) {
        let _ = session(client.clone(), &state, &stop).await;
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn session(
    mut client: EventStreamClient<Channel>,
    state: &Shared,
    stop: &AtomicBool,
) -> Result<(), tonic::Status> {
    let (tx, rx) = tokio::sync::mpsc::channel(256);
    let open = pb::OpenSubscription {
        stream: STREAM.into(),
        subscription: SUBSCRIPTION.into(),
        consumer: "c1".into(),
        max_in_flight: Some(500),
        ..Default::default()
    };
    let _ = tx
        .send(pb::SubscribeRequest {
            request_id: 1,
            kind: Some(pb::subscribe_request::Kind::Open(open)),
        })
        .await;
    let mut rx = client
        .subscribe(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await?
        .into_inner();
    let mut next_request = 2;
    let mut pending: HashMap<u64, Vec<(u32, u64)>> = HashMap::new();
    while !stop.load(Ordering::Relaxed) {
        let m = match tokio::time::timeout(Duration::from_millis(200), rx.message()).await {
            Err(_) => continue,
            Ok(m) => match m? {
                Some(m) => m,
                None => return Ok(()),
            },
        };
        use pb::subscribe_response::Kind;
        match m.kind {
            Some(Kind::Events(d)) => {
                let mut positions = Vec::new();
                {
                    let mut s = lock(state);
                    for e in d.events.iter().filter_map(|d| d.event.as_ref()) {
                        let pos = (e.partition, e.offset);
                        s.deliveries += 1;
                        s.consumer_ack_in_doubt.remove(&pos);
                        if s.consumer_acked.contains(&pos) {
                            s.violations.push(format!(
                                "event {} at {pos:?} delivered again after its ack was answered",
                                e.event_id
                            ));
                        }
                        positions.push(pos);
                    }
                }
                let request_id = next_request;
                next_request += 1;
                let ack = pb::SubscribeRequest {
                    request_id,
                    kind: Some(pb::subscribe_request::Kind::Ack(pb::Ack {
                        positions: positions
                            .iter()
                            .map(|&(partition, offset)| pb::Position { partition, offset })
                            .collect(),
                    })),
                };
                lock(state)
                    .consumer_ack_in_doubt
                    .extend(positions.iter().copied());
                pending.insert(request_id, positions);
                if tx.send(ack).await.is_err() {
                    return Ok(());
                }
            }
            Some(Kind::Settled(a)) => {
                if let Some(positions) = pending.remove(&m.request_id) {
                    let mut s = lock(state);
                    if a.skipped.is_empty() && a.applied.len() == positions.len() {
                        for p in &positions {
                            s.consumer_ack_in_doubt.remove(p);
                        }
                        s.consumer_acked.extend(positions);
                    } else {
                        s.acks_partly_ignored += 1;
                    }
                }
            }
            Some(Kind::Error(e)) => {
                // The session goes on; an ack refused leaves its events unacknowledged.
                pending.remove(&m.request_id);
                eprintln!(
                    "consumer: session error {}",
                    tributary_grpc::status_of(&e).message()
                );
            }
            _ => {}
        }
    }
    Ok(())
}

/// A server process, its gRPC URL and when it was started.
struct Server {
    child: Child,
    url: String,
    started: Instant,
}

fn start_server(args: &Args, dir: &Path, store: &str) -> Result<Server, String> {
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(dir.join("server.log"))
        .map_err(|e| format!("server.log: {e}"))?;
    let started = Instant::now();
    let mut child = Command::new(&args.server_bin)
        .args([
            "serve",
            "--grpc-listen",
            "127.0.0.1:0",
            "--http-listen",
            "127.0.0.1:0",
            "--store",
            store,
            "--data-dir",
        ])
        .arg(dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(log)
        .spawn()
        .map_err(|e| format!("{}: {e}", args.server_bin.display()))?;
    let out = child.stdout.take().ok_or("no stdout")?;
    let mut reader = BufReader::new(out);
    let mut line = String::new();
    reader.read_line(&mut line).map_err(|e| e.to_string())?;
    let Some(url) = line
        .split_whitespace()
        .find_map(|w| w.strip_prefix("grpc="))
        .map(str::to_string)
    else {
        let _ = child.kill();
        let _ = child.wait();
        return Err(format!(
            "the server did not start: {line:?} (see {})",
            dir.join("server.log").display()
        ));
    };
    // Whatever else it prints is drained, so that it never blocks on a full pipe.
    std::thread::spawn(move || for _ in reader.lines().map_while(Result::ok) {});
    Ok(Server {
        child,
        url,
        started,
    })
}

async fn connect(url: &str) -> Result<EventStreamClient<Channel>, String> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let endpoint = Channel::from_shared(url.to_string()).map_err(|e| format!("{url}: {e}"))?;
        match endpoint.connect().await {
            Ok(ch) => return Ok(EventStreamClient::new(ch)),
            Err(e) if Instant::now() > deadline => return Err(format!("connect {url}: {e}")),
            Err(_) => tokio::time::sleep(Duration::from_millis(20)).await,
        }
    }
}

/// Creates the stream and the subscription unless they exist.
async fn declare(client: &mut EventStreamClient<Channel>) -> Result<(), String> {
    let stream = pb::CreateStreamRequest {
        name: STREAM.into(),
        partitions: Some(PARTITIONS),
        delivery: pb::DeliverySemantics::AtLeastOnce as i32,
        dedup_window_ms: Some(24 * 3600 * 1000),
        ..Default::default()
    };
    match client.create_stream(stream).await {
        Ok(_) => {}
        Err(s) if s.code() == tonic::Code::AlreadyExists => {}
        Err(s) => return Err(format!("create stream: {s}")),
    }
    let sub = pb::SubscriptionConfig {
        stream: STREAM.into(),
        name: SUBSCRIPTION.into(),
        mode: pb::SubscriptionMode::Exclusive as i32,
        max_deliveries: Some(1_000_000),
        ..Default::default()
    };
    match client.create_subscription(sub).await {
        Ok(_) => Ok(()),
        Err(s) if s.code() == tonic::Code::AlreadyExists => Ok(()),
        Err(s) => Err(format!("create subscription: {s}")),
    }
}

/// A private PostgreSQL cluster (scripts/pg-test-cluster on a port of its own).
struct PgCluster {
    script: PathBuf,
}

const PG_PORT: &str = "54339";
const PG_DIR: &str = "/tmp/tributary-pg-killloop";

impl PgCluster {
    fn run(&self, verb: &str) -> Result<String, String> {
        let out = Command::new(&self.script)
            .arg(verb)
            .env("TRIBUTARY_PG_PORT", PG_PORT)
            .env("TRIBUTARY_PG_DIR", PG_DIR)
            .output()
            .map_err(|e| format!("{}: {e}", self.script.display()))?;
        if !out.status.success() {
            return Err(format!(
                "pg-test-cluster {verb}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
    }
}

/// Runs the load until the round's moment, then kills what the round kills.
async fn round(
    args: &Args,
    server: &mut Server,
    state: &Shared,
    rng: &mut rand_chacha::ChaCha8Rng,
    run_for: Duration,
    pg_crash: Option<&PgCluster>,
) -> Result<(), String> {
    let client = connect(&server.url).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..args.publishers {
        let r = rand_chacha::ChaCha8Rng::seed_from_u64(rng.random());
        tasks.push(tokio::spawn(publisher(
            client.clone(),
            state.clone(),
            r,
            args.batch,
            stop.clone(),
        )));
    }
    tasks.push(tokio::spawn(consumer(
        client.clone(),
        state.clone(),
        stop.clone(),
    )));
    // The round's clock starts once the server serves (its first publish answered): a
    // restart recovers the stream, the dedup ids and the cursors first, which takes longer
    // as the data grows.
    let answers = lock(state).answers;
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        if lock(state).answers > answers {
            let ready = server.started.elapsed();
            lock(state).ready_after.push(ready);
            break;
        }
        if Instant::now() > deadline {
            return Err("the server answered no publish within 120 s of its start".into());
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // The moment of the kill is the point of the harness: a sleep here is the schedule.
    tokio::time::sleep(run_for).await;
    if let Some(pg) = pg_crash {
        pg.run("crash")?;
        let down = Duration::from_millis(rng.random_range(100..2000));
        tokio::time::sleep(down).await;
        pg.run("start")?;
        // Load goes on against the server after PostgreSQL is back: it must serve again.
        let before = lock(state).acked.len();
        let back = args.pg_back_ms.max(1);
        let wait = Duration::from_millis(rng.random_range(back..=2 * back));
        tokio::time::sleep(wait).await;
        let answered = lock(state).acked.len() - before;
        println!(
            "round with PostgreSQL crashed: down {} ms, then {answered} events acknowledged in the {} ms after its start",
            down.as_millis(),
            wait.as_millis()
        );
    }
    // Killed under load: calls in flight are never answered.
    kill(server);
    finish_tasks(stop, tasks).await;
    Ok(())
}

async fn finish_tasks(stop: Arc<AtomicBool>, tasks: Vec<tokio::task::JoinHandle<()>>) {
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        // A call to a killed server fails at once; to a live one it is answered.
        let _ = tokio::time::timeout(Duration::from_secs(60), t).await;
    }
}

fn kill(server: &mut Server) {
    // SIGKILL: no shutdown, no flush.
    let _ = server.child.kill();
    let _ = server.child.wait();
}

/// Every event of the stream, partition by partition: (partition, offset, id).
async fn read_stream(url: &str) -> Result<Vec<(u32, u64, String)>, String> {
    let mut client = connect(url).await?;
    let mut all = Vec::new();
    for partition in 0..PARTITIONS {
        let mut from = 0;
        loop {
            let page = client
                .read(pb::ReadRequest {
                    stream: STREAM.into(),
                    partition,
                    from,
                    max: Some(1000),
                })
                .await
                .map_err(|s| format!("read: {s}"))?
                .into_inner()
                .events;
            let Some(last) = page.last() else { break };
            from = last.offset + 1;
            all.extend(
                page.into_iter()
                    .map(|e| (e.partition, e.offset, e.event_id)),
            );
        }
    }
    Ok(all)
}

/// The end: publishes every id still in doubt until answered, lets the consumer drain the
/// stream, and checks the stream and the consumer.
async fn finish(url: &str, state: &Shared, args: &Args) -> Result<(), String> {
    let client = connect(url).await?;
    let stop = Arc::new(AtomicBool::new(false));
    let consumer_task = tokio::spawn(consumer(client.clone(), state.clone(), stop.clone()));
    {
        let mut s = lock(state);
        let doubt: Vec<String> = s.in_doubt.iter().cloned().collect();
        for id in doubt {
            s.queue_again(id);
        }
    }
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut c = client.clone();
    loop {
        let batch: Vec<String> = {
            let mut s = lock(state);
            let n = s.republish.len().min(args.batch);
            s.republish.drain(..n).collect()
        };
        if batch.is_empty() {
            break;
        }
        if Instant::now() > deadline {
            return Err("ids in doubt could not be published again in 120 s".into());
        }
        if !publish_batch(&mut c, state, batch).await {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    let events = read_stream(url).await?;
    // The consumer drains: every stored event acknowledged (or its ack sent before a kill
    // and never answered, which the server may have saved), or 120 s.
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let missing = {
            let s = lock(state);
            events
                .iter()
                .filter(|(p, o, _)| {
                    !s.consumer_acked.contains(&(*p, *o))
                        && !s.consumer_ack_in_doubt.contains(&(*p, *o))
                })
                .count()
        };
        if missing == 0 {
            break;
        }
        if Instant::now() > deadline {
            lock(state).violations.push(format!(
                "{missing} stored events never delivered and acknowledged after 120 s"
            ));
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let _ = tokio::time::timeout(Duration::from_secs(30), consumer_task).await;

    let mut s = lock(state);
    let mut seen: HashMap<&str, (u32, u64)> = HashMap::new();
    for (p, o, id) in &events {
        if let Some(first) = seen.insert(id, (*p, *o)) {
            s.violations.push(format!(
                "event id {id} stored twice: at {first:?} and ({p}, {o})"
            ));
        }
    }
    let stored: BTreeMap<&str, (u32, u64)> = seen.into_iter().collect();
    let mut lost = Vec::new();
    let mut moved = Vec::new();
    for (id, pos) in &s.acked {
        match stored.get(id.as_str()) {
            None => lost.push(id.clone()),
            Some(at) if at != pos => moved.push(format!("{id}: answered {pos:?}, stored {at:?}")),
            Some(_) => {}
        }
    }
    for id in &lost {
        s.violations
            .push(format!("acknowledged event {id} is not in the stream"));
    }
    for m in moved {
        s.violations.push(format!("acknowledged event moved: {m}"));
    }
    let unknown = stored
        .keys()
        .filter(|id| !s.acked.contains_key(**id))
        .count();
    if unknown > 0 {
        s.violations.push(format!(
            "{unknown} stored events whose publish was never answered, after every id in doubt was published again"
        ));
    }
    println!(
        "end: {} events stored, {} acknowledged publishes, {} ids in doubt left, {} consumer acks in doubt (not delivered again: saved before the kill)",
        events.len(),
        s.acked.len(),
        s.in_doubt.len(),
        s.consumer_ack_in_doubt.len()
    );
    Ok(())
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match tributary_tests::block_on(2, run(args)).and_then(|r| r) {
        Ok(true) => std::process::ExitCode::SUCCESS,
        Ok(false) => std::process::ExitCode::FAILURE,
        Err(e) => {
            eprintln!("kill-loop: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

async fn run(args: Args) -> Result<bool, String> {
    let seed = args.seed.unwrap_or_else(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(1, |d| d.as_nanos() as u64)
    });
    println!(
        "kill-loop seed {seed} (replay: --seed {seed}), store {}, {} rounds",
        args.store, args.rounds
    );
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let (dir, own_dir) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("tributary-kill-loop-{}-{seed}", std::process::id())),
            true,
        ),
    };
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/pg-test-cluster");
    let mut pg = None;
    let store = match args.store.as_str() {
        "sqlite" => format!("sqlite:{}", dir.join("kill.db").display()),
        "postgres" => {
            let url = match &args.pg_url {
                Some(u) => u.clone(),
                None => {
                    let c = PgCluster { script };
                    let url = c.run("start")?;
                    pg = Some(c);
                    url
                }
            };
            format!("{url}#killloop_{}_{seed}", std::process::id())
        }
        other => return Err(format!("--store {other}: sqlite or postgres")),
    };
    if args.kill_postgres_every > 0 && pg.is_none() {
        return Err("--kill-postgres-every needs the private cluster (no --pg-url)".into());
    }
    let state: Shared = Arc::default();
    let started = Instant::now();
    let mut server = start_server(&args, &dir, &store)?;
    declare(&mut connect(&server.url).await?).await?;
    let mut pg_crashes = 0;
    for r in 0..args.rounds {
        // After a restart: every id in doubt, and a sample of the acknowledged ones.
        {
            let mut s = lock(&state);
            let doubt: Vec<String> = s.in_doubt.iter().cloned().collect();
            for id in doubt {
                s.queue_again(id);
            }
            let n = s.acked_order.len();
            if n > 0 {
                let picks: Vec<String> = (0..args.republish_sample.min(n))
                    .map(|_| s.acked_order[rng.random_range(0..n)].clone())
                    .collect();
                for id in picks {
                    s.queue_again(id);
                }
            }
        }
        let run_for = Duration::from_millis(rng.random_range(args.min_ms..=args.max_ms));
        let crash_pg = args.kill_postgres_every > 0 && (r + 1) % args.kill_postgres_every == 0;
        let pg_for_round = if crash_pg { pg.as_ref() } else { None };
        round(&args, &mut server, &state, &mut rng, run_for, pg_for_round).await?;
        if crash_pg {
            pg_crashes += 1;
        }
        {
            let s = lock(&state);
            println!(
                "round {r}: killed {} ms after serving{}; {} acknowledged, {} in doubt, {} consumer-acked, {} violations",
                run_for.as_millis(),
                if crash_pg {
                    " (and PostgreSQL crashed)"
                } else {
                    ""
                },
                s.acked.len(),
                s.in_doubt.len(),
                s.consumer_acked.len(),
                s.violations.0.len()
            );
        }
        server = start_server(&args, &dir, &store)?;
    }
    finish(&server.url, &state, &args).await?;
    kill(&mut server);
    let s = lock(&state);
    println!(
        "kill-loop: {} rounds ({} with PostgreSQL crashed) in {:.0} s; {} acknowledged publishes, \
         {} publishes of acknowledged ids held as duplicates, {} ids in doubt found written, \
         {} deliveries, {} consumer acks answered, {} acks partly ignored; {} violations",
        args.rounds,
        pg_crashes,
        started.elapsed().as_secs_f64(),
        s.acked.len(),
        s.duplicates_held,
        s.in_doubt_found,
        s.deliveries,
        s.consumer_acked.len(),
        s.acks_partly_ignored,
        s.violations.0.len()
    );
    if let Some(c) = &pg {
        // The private cluster goes (its data stays in /tmp/tributary-pg-killloop).
        c.run("stop")?;
    }
    let mut ready = s.ready_after.clone();
    ready.sort();
    if let (Some(first), Some(last)) = (ready.first(), ready.last()) {
        println!(
            "restart to first publish answered: min {} ms, median {} ms, max {} ms",
            first.as_millis(),
            ready[ready.len() / 2].as_millis(),
            last.as_millis()
        );
    }
    let ok = s.violations.0.is_empty();
    if ok && own_dir {
        let _ = std::fs::remove_dir_all(&dir);
    } else {
        println!("data and server log kept in {}", dir.display());
    }
    Ok(ok)
}
