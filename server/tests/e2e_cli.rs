//! End to end through the `tributary` binary: a server process per test and the client
//! commands, on SQLite and on a real PostgreSQL.

mod common;

use common::*;
use serde_json::Value;
use std::process::Command;

on_both_stores!(
    client_commands_work_together,
    declared_streams_exist_at_start,
    offsets_remove_drops_a_consumer_gone_for_good,
);

fn lines(out: &str) -> Vec<Value> {
    out.lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l:?}: {e}")))
        .collect()
}

/// Runs `tributary serve` with `args`, which must refuse to start; its stderr.
fn serve_refused(args: &[&str]) -> String {
    let out = Command::new(BIN)
        .arg("serve")
        .args(args)
        .output()
        .expect("run");
    assert!(!out.status.success(), "serve {args:?} started");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Runs a client command that must succeed; its stdout as JSON lines.
fn ok(s: &Server, args: &[&str], stdin: Option<&str>) -> Vec<Value> {
    let (success, out, err) = s.cli(args, stdin);
    assert!(success, "tributary {args:?} failed: {err}");
    lines(&out)
}

/// Runs a client command that must fail with one line on stderr; that line.
fn fails(s: &Server, args: &[&str], stdin: Option<&str>) -> String {
    let (success, out, err) = s.cli(args, stdin);
    assert!(!success, "tributary {args:?} should fail; printed {out}");
    assert_eq!(err.lines().count(), 1, "one line: {err:?}");
    err
}

async fn client_commands_work_together(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "cli");
    let created = ok(
        &server,
        &["stream", "create", "orders", "--partitions", "2"],
        None,
    );
    assert_eq!(created[0]["name"], "orders");
    assert_eq!(created[0]["partitions"].as_array().map(Vec::len), Some(2));

    let one = ok(
        &server,
        &[
            "publish",
            "orders",
            "--type",
            "created",
            "--key",
            "k",
            "--data",
            r#"{"n":0}"#,
        ],
        None,
    );
    assert_eq!(one[0]["duplicate"], false);
    let partition = one[0]["partition"].as_u64().expect("partition");
    let many = ok(
        &server,
        &["publish", "orders", "--type", "created", "--key", "k"],
        Some("{\"n\":1}\n{\"n\":2}\n\n{\"n\":3}\n"),
    );
    let offsets: Vec<u64> = many.iter().filter_map(|v| v["offset"].as_u64()).collect();
    assert_eq!(offsets, vec![1, 2, 3], "same key, same partition, in order");

    let e = fails(
        &server,
        &["publish", "orders", "--type", "t"],
        Some("{\"n\":1}\n{oops\n"),
    );
    assert!(
        e.contains("stdin line 2") && e.contains("not valid JSON"),
        "{e}"
    );
    let e = fails(
        &server,
        &["publish", "nowhere", "--type", "t", "--data", "{}"],
        None,
    );
    assert!(e.contains("NotFound"), "{e}");
    let shown = ok(&server, &["stream", "show", "orders"], None);
    assert_eq!(shown[0]["length"], 4, "refused publishes wrote nothing");

    let got = ok(
        &server,
        &[
            "subscribe",
            "orders",
            "--subscription",
            "audit",
            "--mode",
            "exclusive",
            "--count",
            "4",
        ],
        None,
    );
    let data: Vec<i64> = got.iter().filter_map(|v| v["data"]["n"].as_i64()).collect();
    assert_eq!(data, vec![0, 1, 2, 3]);
    assert!(
        got.iter()
            .all(|v| v["partition"].as_u64() == Some(partition))
    );

    let offsets = ok(
        &server,
        &["offsets", "show", "orders", "--subscription", "audit"],
        None,
    );
    assert_eq!(offsets[0]["mode"], "exclusive");
    assert_eq!(
        offsets[0]["cursors"][0]["lag"], 0,
        "everything acknowledged"
    );

    ok(
        &server,
        &[
            "offsets",
            "reset",
            "orders",
            "--subscription",
            "audit",
            "--to",
            "2",
        ],
        None,
    );
    let offsets = ok(
        &server,
        &["offsets", "show", "orders", "--subscription", "audit"],
        None,
    );
    assert_eq!(
        offsets[0]["cursors"][0]["lag"], 2,
        "reset to offset 2 of each partition"
    );
    let again = ok(
        &server,
        &[
            "subscribe",
            "orders",
            "--subscription",
            "audit",
            "--count",
            "2",
        ],
        None,
    );
    let data: Vec<i64> = again
        .iter()
        .filter_map(|v| v["data"]["n"].as_i64())
        .collect();
    assert_eq!(data, vec![2, 3], "the reset is seen by the next delivery");

    let replayed = ok(
        &server,
        &["replay", "orders", "--from", "1", "--rate", "1000"],
        None,
    );
    let data: Vec<i64> = replayed
        .iter()
        .filter_map(|v| v["data"]["n"].as_i64())
        .collect();
    assert_eq!(data, vec![1, 2, 3]);

    let group = ok(
        &server,
        &[
            "subscribe",
            "orders",
            "--subscription",
            "g",
            "--mode",
            "group",
            "--count",
            "4",
        ],
        None,
    );
    assert_eq!(group.len(), 4, "a lone group member reads every partition");
    let read = ok(
        &server,
        &[
            "subscribe",
            "orders",
            "--subscription",
            "r",
            "--mode",
            "receipts",
            "--count",
            "4",
        ],
        None,
    );
    assert_eq!(read.len(), 4);
    let shown = ok(
        &server,
        &["offsets", "show", "orders", "--subscription", "r"],
        None,
    );
    assert_eq!(shown[0]["mode"], "read_receipt");
    assert_eq!(
        shown[0]["cursors"][0]["lag"], 0,
        "marked read, so acknowledged"
    );
    let e = fails(&server, &["replay", "orders", "--from", "yesterday"], None);
    assert!(e.contains("--from"), "{e}");

    ok(
        &server,
        &[
            "schema",
            "register",
            "note",
            "1",
            "--json-schema",
            r#"{"type":"object"}"#,
        ],
        None,
    );
    ok(
        &server,
        &[
            "schema",
            "register",
            "note",
            "2",
            "--rules",
            r#"[{"op":"add","field":"tag","default":"x"}]"#,
        ],
        None,
    );
    let e = fails(
        &server,
        &[
            "schema",
            "register",
            "note",
            "3",
            "--rules",
            "[{\"op\":\"explode\"}]",
        ],
        None,
    );
    assert!(e.contains("rules"), "{e}");
    let schemas = ok(&server, &["schema", "list"], None);
    assert_eq!(schemas[0]["event_type"], "note");
    assert_eq!(schemas[0]["versions"].as_array().map(Vec::len), Some(2));

    let streams = ok(&server, &["stream", "list"], None);
    assert_eq!(streams.len(), 1);
    // Enum values are spelled as in the configuration and the HTTP API.
    assert_eq!(streams[0]["delivery"], "at_least_once");
    ok(&server, &["stream", "delete", "orders"], None);
    let e = fails(&server, &["stream", "show", "orders"], None);
    assert!(e.contains("NotFound"), "{e}");
}

async fn declared_streams_exist_at_start(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let config = dir.path().join("tributary.toml");
    std::fs::write(
        &config,
        r#"
        [[streams]]
        name = "declared"
        partitions = 3

        [[subscriptions]]
        stream = "declared"
        name = "reader"
        mode = "exclusive"
        "#,
    )
    .expect("write config");
    let store = new_store(b, dir.path(), "declared");
    let config_arg = config.display().to_string();
    // One runtime thread is enough to serve (`--worker-threads`), with appends pipelined two
    // deep whatever the store (`--append-writes-in-flight`).
    let server = Server::start_on(
        dir.path(),
        &store,
        &[
            "--config",
            &config_arg,
            "--worker-threads",
            "1",
            "--append-writes-in-flight",
            "2",
        ],
    );
    let shown = ok(&server, &["stream", "show", "declared"], None);
    assert_eq!(shown[0]["partitions"].as_array().map(Vec::len), Some(3));
    let subs = ok(
        &server,
        &["offsets", "show", "declared", "--subscription", "reader"],
        None,
    );
    assert_eq!(subs[0]["mode"], "exclusive");
    let published = ok(
        &server,
        &["publish", "declared", "--type", "t"],
        Some("{\"n\":1}\n{\"n\":2}\n{\"n\":3}\n"),
    );
    assert_eq!(published.len(), 3);
    // A second start on the same store with the same file finds them there.
    let server = server.restart();
    assert_eq!(ok(&server, &["stream", "list"], None).len(), 1);
    let shown = ok(&server, &["stream", "show", "declared"], None);
    assert_eq!(shown[0]["length"], 3, "{shown:?}");

    // A bad file: the server does not start, and says which entry is wrong.
    std::fs::write(&config, "[[streams]]\nname = \"x\"\npartitions = 0\n").expect("write");
    let err = serve_refused(&[
        "--grpc-listen",
        "127.0.0.1:0",
        "--config",
        &config_arg,
        "--store",
        &store,
    ]);
    assert!(
        err.contains("streams[0] (x)") && err.contains("partitions"),
        "{err}"
    );
    assert!(serve_refused(&["--store", "mysql://nope"]).contains("mysql://nope"));
    let err = serve_refused(&["--worker-threads", "0"]);
    assert!(
        err.contains("worker-threads") && err.contains("1..=1024"),
        "{err}"
    );
    let err = serve_refused(&["--append-writes-in-flight", "9"]);
    assert!(
        err.contains("append_writes_in_flight") && err.contains("9 is outside 1..=8"),
        "{err}"
    );
    let err = serve_refused(&["--durability", "fast"]);
    assert!(
        err.contains("\"fast\"") && err.contains("`full`") && err.contains("`normal`"),
        "{err}"
    );
}

/// `tributary offsets remove` drops a detached broadcast consumer's position; refusals are one
/// line naming the reason.
async fn offsets_remove_drops_a_consumer_gone_for_good(b: Backend) {
    let dir = tempfile::tempdir().expect("tempdir");
    let server = Server::start(b, dir.path(), "cli_remove");
    ok(&server, &["stream", "create", "feed"], None);
    ok(
        &server,
        &["publish", "feed", "--type", "t"],
        Some("{\"n\":0}\n{\"n\":1}\n"),
    );
    for (consumer, count) in [("keep", "2"), ("gone", "1")] {
        let got = ok(
            &server,
            &[
                "subscribe",
                "feed",
                "--subscription",
                "fan",
                "--consumer",
                consumer,
                "--count",
                count,
            ],
            None,
        );
        assert_eq!(got.len(), count.parse::<usize>().expect("count"));
    }
    let shown = |s: &Server| -> Vec<(String, u64)> {
        let v = ok(
            s,
            &["offsets", "show", "feed", "--subscription", "fan"],
            None,
        );
        v[0]["cursors"]
            .as_array()
            .expect("cursors")
            .iter()
            .map(|c| {
                let who = c["consumer"].as_str().unwrap_or_default().to_string();
                (who, c["lag"].as_u64().unwrap_or(u64::MAX))
            })
            .collect()
    };
    // The subscribers have exited; the server notices their sessions end a moment later.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    loop {
        let v = ok(
            &server,
            &["offsets", "show", "feed", "--subscription", "fan"],
            None,
        );
        if v[0]["attached"].as_array().is_some_and(Vec::is_empty) {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "still attached: {v:?}"
        );
    }
    let mut before = shown(&server);
    before.sort();
    assert_eq!(before, vec![("gone".into(), 1), ("keep".into(), 0)]);

    let remove = |consumer: &'static str, sub: &'static str| {
        [
            "offsets",
            "remove",
            "feed",
            "--subscription",
            sub,
            "--consumer",
            consumer,
        ]
    };
    let e = fails(&server, &remove("ghost", "fan"), None);
    assert!(e.contains("CONSUMER_NOT_FOUND"), "{e}");
    ok(&server, &remove("gone", "fan"), None);
    assert_eq!(shown(&server), vec![("keep".into(), 0)]);
    let e = fails(&server, &remove("gone", "fan"), None);
    assert!(e.contains("CONSUMER_NOT_FOUND"), "{e}");
    // Exclusive subscriptions have no position per consumer.
    ok(
        &server,
        &[
            "subscribe",
            "feed",
            "--subscription",
            "work",
            "--mode",
            "exclusive",
            "--consumer",
            "w",
            "--count",
            "2",
        ],
        None,
    );
    let e = fails(&server, &remove("w", "work"), None);
    assert!(
        e.contains("InvalidArgument") && e.contains("shared position"),
        "{e}"
    );
}
