//! Replays in the model: order, range, filter, rate, `max_events`, completeness.

use super::Checker;
use super::model::ReplayM;
use tributary_core::{
    ConnId, Position, ReplayFrom, ReplayId, ReplayItem, ReplayOptions, StreamName,
};

impl Checker {
    pub(super) fn replay_started(
        &mut self,
        conn: ConnId,
        id: ReplayId,
        stream: &StreamName,
        from: ReplayFrom,
        options: &ReplayOptions,
        heads: Vec<u64>,
    ) {
        let persistent = self.streams.get(stream).is_some_and(|s| !s.ephemeral());
        self.replays.insert(
            id,
            ReplayM {
                conn,
                stream: stream.clone(),
                from,
                options: options.clone(),
                started: self.now.mono,
                heads,
                count: 0,
                seen: Default::default(),
                last: None,
                persistent,
            },
        );
    }

    pub(super) fn replay_item(&mut self, conn: ConnId, id: ReplayId, item: &ReplayItem) {
        let now = self.now.mono;
        // Where retention asked to cut the stream's partitions (a replay may skip what lies
        // below, and is then not complete).
        let cuts: Vec<u64> = self
            .replays
            .get(&id)
            .and_then(|r| self.streams.get(&r.stream))
            .map(|s| s.cut_sent.clone())
            .unwrap_or_default();
        let Some(r) = self.replays.get_mut(&id) else {
            return;
        };
        if r.conn != conn {
            let d = format!(
                "replay {id:?} of connection {} sent to connection {}",
                r.conn.0, conn.0
            );
            return self.fail("replay", d);
        }
        let reader = Some((r.options.schema_versions.clone(), r.options.strict_versions));
        let mut errors: Vec<String> = Vec::new();
        let mut finished = false;
        let mut events = Vec::new();
        match item {
            ReplayItem::Events(evs) => {
                for e in evs {
                    let pos = Position {
                        partition: e.partition,
                        offset: e.offset,
                    };
                    if e.stream != r.stream {
                        errors.push(format!(
                            "replay of {} sent an event of {}",
                            r.stream, e.stream
                        ));
                    }
                    if r.last.is_some_and(|l| pos <= l) {
                        errors.push(format!(
                            "replay of {}: {}/{} after {:?}",
                            r.stream, pos.partition, pos.offset, r.last
                        ));
                    }
                    let ts = e.timestamp;
                    let in_range = match &r.from {
                        ReplayFrom::Offset(n) => e.offset >= *n,
                        ReplayFrom::Offsets(given) => given
                            .iter()
                            .find(|p| p.partition == e.partition)
                            .is_none_or(|p| e.offset >= p.offset),
                        ReplayFrom::Time(t) => ts >= *t,
                        ReplayFrom::TimeRange(a, b) => *a <= ts && ts < *b,
                    };
                    if !in_range {
                        errors.push(format!(
                            "replay of {} from {:?}: {}/{} (timestamp {}) is out of range",
                            r.stream, r.from, pos.partition, pos.offset, ts.0
                        ));
                    }
                    if !r.options.event_types.is_empty()
                        && !r.options.event_types.contains(&e.event_type)
                    {
                        errors.push(format!(
                            "replay of {}: type {} is filtered out",
                            r.stream, e.event_type
                        ));
                    }
                    // Retention may have removed what lies below a cut it asked for.
                    let cut = cuts.get(pos.partition as usize).copied().unwrap_or(0);
                    let contiguous = match r.seen.get(&pos.partition) {
                        Some(&(_, last)) => pos.offset == last + 1 || pos.offset <= cut,
                        None => match r.from {
                            ReplayFrom::Offset(n) => pos.offset == n || pos.offset <= cut.max(n),
                            _ => true,
                        },
                    };
                    let seen = r
                        .seen
                        .entry(pos.partition)
                        .or_insert((pos.offset, pos.offset));
                    seen.1 = pos.offset;
                    if r.persistent
                        && r.options.event_types.is_empty()
                        && matches!(r.from, ReplayFrom::Offset(_))
                        && !contiguous
                    {
                        errors.push(format!(
                            "replay of {}: {}/{} skips events",
                            r.stream, pos.partition, pos.offset
                        ));
                    }
                    r.last = Some(pos);
                    r.count += 1;
                    events.push(e.clone());
                }
                if let Some(m) = r.options.max_events
                    && r.count > m
                {
                    errors.push(format!(
                        "replay of {}: {} events sent, max_events {m}",
                        r.stream, r.count
                    ));
                }
                if let Some(rate) = r.options.max_events_per_second {
                    let elapsed = u128::from(now.since(r.started));
                    let rate = u128::from(rate);
                    let allowed = rate * 1_000_000_000 + rate * elapsed;
                    if u128::from(r.count) * 1_000_000_000 > allowed {
                        errors.push(format!(
                            "replay of {}: {} events sent in {} ms, over {} per second (bucket of {})",
                            r.stream, r.count, elapsed / 1_000_000, rate, rate
                        ));
                    }
                }
            }
            ReplayItem::Progress { done, .. } => {
                if *done != r.count {
                    errors.push(format!(
                        "replay of {}: progress says {done} done, {} were sent",
                        r.stream, r.count
                    ));
                }
            }
            ReplayItem::Done { total } => {
                finished = true;
                if *total != r.count {
                    errors.push(format!(
                        "replay of {}: done with total {total}, {} were sent",
                        r.stream, r.count
                    ));
                }
                let complete_expected = r.persistent
                    && r.options.event_types.is_empty()
                    && r.options.max_events.is_none()
                    && cuts.iter().all(|&c| c == 0);
                if let (true, &ReplayFrom::Offset(n)) = (complete_expected, &r.from) {
                    for (p, &h) in r.heads.iter().enumerate() {
                        if h <= n {
                            continue;
                        }
                        let got = r.seen.get(&(p as u32)).map(|&(_, l)| l + 1).unwrap_or(n);
                        if got < h {
                            errors.push(format!(
                                "replay of {} from offset {n}: partition {p} ended at {got}, but {h} was committed before it started",
                                r.stream
                            ));
                        }
                    }
                }
            }
            ReplayItem::Failed(_) => finished = true,
        }
        if finished {
            self.replays.remove(&id);
        }
        for e in events {
            self.check_content("replay", &e, reader.as_ref());
        }
        for d in errors {
            self.fail("replay", d);
        }
    }
}
