//! Finding an offset by time without an index on the timestamp.
//!
//! Within a partition, timestamps never decrease with the offset: the core gives each event
//! the later of its clock and the partition's last timestamp. So the first event at or after a
//! time is found by bisecting the stored offsets, one probe ("the first event at or after this
//! offset and below that one") per step, as many steps as the binary logarithm of the
//! partition's length. The SQLite store keeps no index on the timestamp: it would cost an index
//! insertion per appended event, where a search by time is a rare start of a subscription or a
//! replay. (PostgreSQL stores record batches and indexes their last timestamps, one entry per
//! batch.)
//!
//! [`TimeSearch`] holds the decisions and no I/O: a store asks it for the next [`Probe`], runs
//! it, and hands back what it found, until there is no probe left. [`find_offset`] does that on
//! a connection of a store of one row per event.

use crate::{failed, i32_of, i64_of, next_offset, u64_of};
use tributary_core::{StorageError, StreamName, UnixMillis};

/// The bounds of a search in a SQL store (`$1` the stream's id, `$2` the partition): the
/// lowest and highest stored offsets and the partition's next floor; no row when the partition
/// does not exist.
const FIND_BOUNDS: &str = r#"SELECT
     (SELECT e."offset" FROM tributary_events e WHERE e.stream_id = p.stream_id
        AND e.partition = p.partition ORDER BY e."offset" ASC LIMIT 1),
     (SELECT e."offset" FROM tributary_events e WHERE e.stream_id = p.stream_id
        AND e.partition = p.partition ORDER BY e."offset" DESC LIMIT 1),
     p.next_floor
   FROM tributary_partitions p WHERE p.stream_id = $1 AND p.partition = $2"#;
/// A [`Probe`] in a SQL store (`$3` its `from`, `$4` its `below`): the offset and timestamp
/// of the first event in the range, one look-up in the offset index.
const FIND_PROBE: &str = r#"SELECT "offset", ts FROM tributary_events
   WHERE stream_id = $1 AND partition = $2 AND "offset" >= $3 AND "offset" < $4
   ORDER BY "offset" LIMIT 1"#;

/// One step of a [`TimeSearch`]: the store looks up the stored event with the lowest offset in
/// `from..below` and answers with its offset and timestamp (or nothing).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Probe {
    /// The lowest offset the event may have.
    pub from: u64,
    /// The offset it must be below.
    pub below: u64,
}

/// A bisection for the first stored event with a timestamp at or after a time.
#[derive(Debug, Clone)]
pub struct TimeSearch {
    at: UnixMillis,
    /// Every stored event below `lo` is before `at`.
    lo: u64,
    /// No event in `hi..` at or after `at` is below `found`.
    hi: u64,
    /// The lowest offset seen at or after `at`.
    found: Option<u64>,
}

impl TimeSearch {
    /// A search for the first event at or after `at` among the stored offsets `lo..hi`.
    pub fn new(lo: u64, hi: u64, at: UnixMillis) -> Self {
        Self {
            at,
            lo,
            hi,
            found: None,
        }
    }

    /// The next probe to run, or `None` once the search is decided.
    pub fn probe(&self) -> Option<Probe> {
        (self.lo < self.hi).then(|| Probe {
            from: self.lo + (self.hi - self.lo) / 2,
            below: self.hi,
        })
    }

    /// The answer to the last [`probe`](Self::probe): the first stored event in its range, as
    /// its offset and timestamp. An offset outside the range counts as nothing found, so the
    /// search ends in at most 64 steps whatever the store answers.
    pub fn answer(&mut self, first: Option<(u64, UnixMillis)>) {
        let Some(p) = self.probe() else { return };
        match first {
            Some((offset, ts)) if (p.from..p.below).contains(&offset) => {
                if ts >= self.at {
                    self.found = Some(offset);
                    self.hi = offset;
                } else {
                    // Every event below `offset` is no later than it: before `at` too.
                    self.lo = offset + 1;
                }
            }
            _ => self.hi = p.from,
        }
    }

    /// The offset of the first event at or after the time, once the search is decided
    /// (`None`: every stored event is before it).
    pub fn found(&self) -> Option<u64> {
        self.found
    }
}

/// `FindOffset` in a SQL store: the first offset of `partition` (of the stream `stream`, stored
/// with the id `id`) at or after `at`, or the partition's next offset when every stored event
/// is before it; [`FIND_BOUNDS`], then one [`FIND_PROBE`] per step of a [`TimeSearch`], on the
/// connection `c`.
pub async fn find_offset<DB>(
    c: &mut DB::Connection,
    stream: &StreamName,
    id: i64,
    partition: u32,
    at: UnixMillis,
) -> Result<u64, StorageError>
where
    DB: sqlx::Database,
    DB::Arguments: sqlx::IntoArguments<DB>,
    for<'c> &'c mut DB::Connection: sqlx::Executor<'c, Database = DB>,
    for<'q> i64: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'q> i32: sqlx::Encode<'q, DB> + sqlx::Type<DB>,
    for<'r> (i64, i64): sqlx::FromRow<'r, DB::Row>,
    for<'r> (Option<i64>, Option<i64>, i64): sqlx::FromRow<'r, DB::Row>,
{
    let p = i32_of(partition);
    let (lo, hi, floor) = sqlx::query_as::<DB, (Option<i64>, Option<i64>, i64)>(FIND_BOUNDS)
        .bind(id)
        .bind(p)
        .fetch_optional(&mut *c)
        .await
        .map_err(|e| failed(&e))?
        .ok_or_else(|| StorageError::NotFound(format!("stream {stream} partition {partition}")))?;
    // Every stored event before `at`: the partition's next offset.
    let next = next_offset(hi, floor);
    let mut search = TimeSearch::new(lo.map_or(0, u64_of), next, at);
    while let Some(probe) = search.probe() {
        let row = sqlx::query_as::<DB, (i64, i64)>(FIND_PROBE)
            .bind(id)
            .bind(p)
            .bind(i64_of(probe.from))
            .bind(i64_of(probe.below))
            .fetch_optional(&mut *c)
            .await
            .map_err(|e| failed(&e))?;
        search.answer(row.map(|(o, ts)| (u64_of(o), UnixMillis(u64_of(ts)))));
    }
    Ok(search.found().unwrap_or(next))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Runs a search over `events` (offset, timestamp), sorted by offset, as a store would.
    fn search(events: &[(u64, u64)], at: u64) -> (Option<u64>, usize) {
        let lo = events.first().map_or(0, |e| e.0);
        let hi = events.last().map_or(0, |e| e.0 + 1);
        let mut s = TimeSearch::new(lo, hi, UnixMillis(at));
        let mut steps = 0;
        while let Some(p) = s.probe() {
            steps += 1;
            assert!(steps <= 64, "the search did not end");
            let first = events
                .iter()
                .find(|e| e.0 >= p.from && e.0 < p.below)
                .map(|e| (e.0, UnixMillis(e.1)));
            s.answer(first);
        }
        (s.found(), steps)
    }

    /// A small deterministic generator, so that the cases are the same on every run.
    fn next(state: &mut u64) -> u64 {
        *state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        *state >> 33
    }

    #[test]
    fn finds_what_a_scan_finds_with_repeated_times_and_gaps() {
        let mut state = 7;
        for case in 0..400 {
            let n = case % 60;
            let mut offset = next(&mut state) % 1_000;
            let mut ts = next(&mut state) % 50;
            let mut events = Vec::new();
            for _ in 0..n {
                events.push((offset, ts));
                // Gaps in the offsets (a store may hold some), repeated timestamps.
                offset +=
                    1 + u64::from(next(&mut state).is_multiple_of(4)) * (next(&mut state) % 9);
                ts += next(&mut state) % 3;
            }
            let last = events.last().map_or(0, |e| e.1);
            for at in 0..=last + 2 {
                let want = events.iter().find(|e| e.1 >= at).map(|e| e.0);
                let (got, steps) = search(&events, at);
                assert_eq!(got, want, "case {case}, at {at}, events {events:?}");
                let bound = 2 * (64 - (n as u64 * 10).leading_zeros()) as usize + 2;
                assert!(steps <= bound, "{steps} steps for {n} events");
            }
        }
    }

    #[test]
    fn a_wrong_answer_from_the_store_ends_the_search() {
        let mut s = TimeSearch::new(0, u64::MAX, UnixMillis(5));
        let mut steps = 0;
        while s.probe().is_some() {
            steps += 1;
            // Always an offset outside the probed range.
            s.answer(Some((u64::MAX, UnixMillis(9))));
        }
        assert!(steps <= 64);
        assert_eq!(s.found(), None);
    }

    #[test]
    fn an_empty_range_needs_no_probe() {
        let s = TimeSearch::new(4, 4, UnixMillis(1));
        assert_eq!(s.probe(), None);
        assert_eq!(s.found(), None);
    }
}
