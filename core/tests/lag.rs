//! Lag and stall figures in the subscription description: per position (consumer), per
//! subscription, and per consumer-group member.

mod common;

use common::*;
use std::time::Duration;
use tributary_core::*;

#[test]
fn a_position_reports_lag_oldest_unacked_age_and_last_progress() {
    let mut h = Harness::new();
    h.create_persistent("s", 1);
    let cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    h.subscribe(cfg);
    let f = h.describe_sub("s", "q").figures;
    assert_eq!(f, LagFigures::default(), "nothing to read yet");
    h.append_n("s", 10);
    h.advance(Duration::from_secs(5));
    let f = h.describe_sub("s", "q").cursors[0].figures;
    assert_eq!(f.lag, 10);
    assert_eq!(
        f.oldest_unacked_age,
        Some(Duration::from_secs(5)),
        "the oldest unread event, from the tail cache"
    );
    assert_eq!(f.last_progress, None);
    h.attach(1, "s", "q", "c", Some(3));
    h.deliveries();
    h.advance(Duration::from_secs(2));
    h.ack(1, "s", "q", "c", vec![pos(0, 0), pos(0, 1)]).unwrap();
    let f = h.describe_sub("s", "q").cursors[0].figures;
    assert_eq!(f.lag, 8);
    assert_eq!(f.last_progress, Some(h.now.wall));
    assert_eq!(
        f.oldest_unacked_age,
        Some(Duration::from_secs(7)),
        "offset 2, delivered and not acknowledged"
    );
    // A stalled consumer: time passes, nothing moves.
    let progressed = h.now.wall;
    h.advance(Duration::from_secs(60));
    let f = h.describe_sub("s", "q").figures;
    assert_eq!((f.lag, f.last_progress), (8, Some(progressed)));
    assert_eq!(f.oldest_unacked_age, Some(Duration::from_secs(67)));
}

#[test]
fn a_subscription_reports_its_slowest_consumer() {
    let mut h = Harness::new();
    h.create_persistent("s", 2);
    let cfg = h.sub_config("s", "b", SubscriptionMode::Broadcast);
    h.subscribe(cfg);
    h.attach(1, "s", "b", "fast", None);
    h.attach(1, "s", "b", "slow", None);
    h.append(
        "s",
        vec![
            ev("t").with_key(b"a".to_vec()),
            ev("t").with_key(b"b".to_vec()),
            ev("t"),
        ],
    )
    .unwrap();
    let d = h.deliveries();
    let fast: Vec<Position> = d.iter().filter(|x| x.0 == "fast").map(|x| x.1).collect();
    h.ack(1, "s", "b", "fast", fast).unwrap();
    let info = h.describe_sub("s", "b");
    let by = |who: &str| {
        info.cursors
            .iter()
            .find(|c| c.consumer.as_ref().is_some_and(|c| c.as_str() == who))
            .map(|c| c.figures)
            .unwrap()
    };
    assert_eq!(by("fast").lag, 0);
    assert_eq!(by("fast").oldest_unacked_age, None);
    assert_eq!(by("slow").lag, 3);
    assert_eq!(
        info.figures.lag, 3,
        "the subscription's lag is its slowest consumer's"
    );
    assert_eq!(info.figures.last_progress, by("fast").last_progress);
}

#[test]
fn a_consumer_group_reports_each_member_over_its_partitions() {
    let mut h = Harness::new();
    h.create_persistent("s", 4);
    let mut cfg = h.sub_config("s", "g", SubscriptionMode::ConsumerGroup);
    cfg.commit = CommitStrategy::AfterEach;
    h.subscribe(cfg);
    h.attach(1, "s", "g", "m1", None);
    h.attach(2, "s", "g", "m2", None);
    let events = (0..40)
        .map(|i| ev("t").with_key(format!("k{i}").into_bytes()))
        .collect();
    h.append("s", events).unwrap();
    let d = h.deliveries();
    let m1: Vec<Position> = d.iter().filter(|x| x.0 == "m1").map(|x| x.1).collect();
    h.ack(1, "s", "g", "m1", m1).unwrap();
    let info = h.describe_sub("s", "g");
    let g = info.group.unwrap();
    let member = |who: &str| {
        g.members
            .iter()
            .find(|m| m.consumer.as_str() == who)
            .unwrap()
    };
    assert_eq!(member("m1").figures.lag, 0);
    let m2_lag: u64 = member("m2")
        .partitions
        .iter()
        .map(|&p| {
            let part = h.describe("s").partitions[p as usize];
            part.next - part.first
        })
        .sum();
    assert!(m2_lag > 0);
    assert_eq!(member("m2").figures.lag, m2_lag);
    assert_eq!(
        info.figures.lag, m2_lag,
        "the group's lag is over all partitions"
    );
}

#[test]
fn lag_counts_from_the_first_retained_offset() {
    let mut h = Harness::new();
    let mut sc = StreamConfig::persistent(s("s"));
    sc.retention = Some(RetentionPolicy {
        max_events: Some(4),
        ..RetentionPolicy::default()
    });
    h.create(sc);
    let cfg = h.sub_config("s", "q", SubscriptionMode::Exclusive);
    h.subscribe(cfg);
    h.append_n("s", 10);
    h.advance(Duration::from_secs(3600));
    assert_eq!(h.describe("s").partitions[0].first, 6);
    assert_eq!(h.describe_sub("s", "q").figures.lag, 4);
}
