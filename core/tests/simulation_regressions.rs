//! Regressions found by the deterministic simulator (`simulation/`): each test replays, in a
//! few steps, what a failing seed showed, and names the seed it came from.

mod common;
use common::*;
use std::time::Duration;
use tributary_core::*;

fn term(h: &mut Harness, offset: u64) {
    let r = h.cmd(Command::Term {
        stream: s("s"),
        subscription: sub("q"),
        consumer: c("a"),
        positions: vec![pos(0, offset)],
        reason: "poison".into(),
    });
    assert_eq!(r, Ok(settled(vec![pos(0, offset)], vec![])));
}

/// Seed 15: with dedup off a producer may append one id twice; both events were then
/// dead-lettered, but the second copy had the same derived id and was dropped as a duplicate
/// by the dead letter stream, so one dead-lettered event was nowhere.
#[test]
fn dead_letters_of_two_events_with_one_id_are_both_kept() {
    let mut h = Harness::new();
    let mut cfg = StreamConfig::persistent(s("s"));
    cfg.dedup_window = Duration::ZERO;
    h.create(cfg);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", None);
    let out = h.append("s", vec![ev_id("t", 1), ev_id("t", 1)]).unwrap();
    assert_eq!(out.len(), 2, "dedup is off: both are appended");
    h.deliveries();
    term(&mut h, 0);
    term(&mut h, 1);
    let dl = h.read("s.dlq", 0, 0, 10).unwrap();
    let origins: Vec<&str> = dl
        .iter()
        .map(|e| e.headers["x-original-offset"].as_str())
        .collect();
    assert_eq!(
        origins,
        vec!["0", "1"],
        "each dead-lettered event has its copy"
    );
}

/// Seed 22: a closing connection detached its consumers one by one, and each detach delivered
/// what the previous one let go, to the next consumer of the same (closed) connection: an
/// event was "delivered" into the void and its attempt counted towards `max_deliveries`.
#[test]
fn a_closing_connection_delivers_nothing_to_its_own_consumers() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    h.subscribe(h.sub_config("s", "q", SubscriptionMode::Exclusive));
    h.attach(1, "s", "q", "a", Some(1));
    h.attach(1, "s", "q", "b", Some(5));
    h.append_n("s", 1);
    assert_eq!(h.deliveries(), vec![("a".into(), pos(0, 0), 1)]);
    h.engine
        .handle_input(h.now, Input::ConnClosed { conn: ConnId(1) });
    h.pump();
    assert_eq!(
        h.deliveries(),
        vec![],
        "nothing goes to a closed connection"
    );
    h.attach(2, "s", "q", "c", None);
    assert_eq!(
        h.deliveries(),
        vec![("c".into(), pos(0, 0), 2)],
        "one delivery was made before, not two"
    );
}
