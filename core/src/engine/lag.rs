//! Lag and stall figures (for health and metrics): per position (a broadcast or read-receipt
//! consumer, or the shared position of an exclusive or consumer-group subscription), per
//! subscription, and per consumer-group member.
//!
//! - lag: events between the ack floor and the head (from the first retained offset);
//! - age of the oldest unacknowledged event, by its timestamp, when it is in memory (pending,
//!   or in the tail cache);
//! - last progress: when an event was last acknowledged or dead-lettered (this engine life).

use super::Engine;
use super::cursor::PartCursor;
use super::streams::Stream;
use super::subscriptions::Subscription;
use crate::api::{LagFigures, MemberInfo, SubscriptionInfo};
use crate::time::UnixMillis;
use std::time::Duration;

/// The figures of one position over the partitions `parts` selects.
fn figures_of<'a>(
    parts: impl Iterator<Item = (usize, &'a PartCursor)>,
    stream: &Stream,
    now: UnixMillis,
) -> LagFigures {
    let mut f = LagFigures::default();
    for (p, pc) in parts {
        let Some(part) = stream.parts.get(p) else {
            continue;
        };
        let floor = pc.floor().max(part.first);
        f.lag += part.next.saturating_sub(floor);
        let oldest = pc
            .window
            .iter()
            .find_map(|s| s.pending.as_ref().map(|p| p.event.timestamp))
            .or_else(|| {
                (floor < part.next)
                    .then(|| part.cached(floor).map(|e| e.timestamp))
                    .flatten()
            });
        if let Some(ts) = oldest {
            let age = Duration::from_millis(now.0.saturating_sub(ts.0));
            f.oldest_unacked_age = f.oldest_unacked_age.max(Some(age));
        }
        f.last_progress = f.last_progress.max(pc.last_progress);
    }
    f
}

impl Engine {
    /// Fills in the figures of a subscription's description.
    pub(crate) fn add_figures(&self, sub: &Subscription, info: &mut SubscriptionInfo) {
        let Some(stream) = self.streams.get(&sub.config.stream) else {
            return;
        };
        let now = self.now.wall;
        let mut all = LagFigures::default();
        for ((_, c), ci) in sub.live_cursors().zip(info.cursors.iter_mut()) {
            ci.figures = figures_of(c.parts.iter().enumerate(), stream, now);
            all = all.worst(ci.figures);
        }
        info.figures = all;
        if let (Some(g), Some(gi), Some(shared)) =
            (&sub.group, info.group.as_mut(), sub.cursors.first())
        {
            gi.members = sub
                .consumers
                .keys()
                .map(|m| {
                    let partitions = g.partitions_of(m);
                    let figures = figures_of(
                        shared
                            .parts
                            .iter()
                            .enumerate()
                            .filter(|(p, _)| g.owns(m, *p)),
                        stream,
                        now,
                    );
                    MemberInfo {
                        consumer: m.clone(),
                        partitions,
                        figures,
                    }
                })
                .collect();
        }
    }
}
