//! The trace: every input and output of every engine, folded into one hash (the run's
//! fingerprint: the same seed always gives the same hash) and, when asked, kept as lines for
//! a trace file.

use tributary_core::{Input, Now, Output, ReplayItem, Reply};
use xxhash_rust::xxh3::Xxh3;

/// The running hash and, optionally, the lines.
pub struct Trace {
    hash: Xxh3,
    buf: Vec<u8>,
    lines: Option<Vec<String>>,
}

impl std::fmt::Debug for Trace {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Trace").field("hash", &self.hash()).finish()
    }
}

/// Longest line kept for one input or output.
const LINE_MAX: usize = 400;

fn clip(mut s: String) -> String {
    if s.len() > LINE_MAX {
        let mut end = LINE_MAX;
        while !s.is_char_boundary(end) {
            end -= 1;
        }
        s.truncate(end);
        s.push_str(" …");
    }
    s
}

impl Trace {
    /// A trace; `lines`: keep readable lines too.
    pub fn new(lines: bool) -> Trace {
        Trace {
            hash: Xxh3::new(),
            buf: Vec::new(),
            lines: lines.then(Vec::new),
        }
    }

    /// The hash so far.
    pub fn hash(&self) -> u64 {
        self.hash.digest()
    }

    /// The lines kept.
    pub fn take_lines(&mut self) -> Vec<String> {
        self.lines.take().unwrap_or_default()
    }

    /// Whether lines are kept.
    pub fn keeps_lines(&self) -> bool {
        self.lines.is_some()
    }

    /// Adds a free-form note (also hashed).
    pub fn note(&mut self, step: u64, at: u64, s: impl FnOnce() -> String) {
        self.hash.update(&step.to_le_bytes());
        self.hash.update(&at.to_le_bytes());
        if let Some(lines) = &mut self.lines {
            let s = s();
            lines.push(format!("{step:>8} {:>10.3}s  -- {s}", at as f64 / 1e9));
        }
    }

    /// An input handed to an engine.
    pub fn input(&mut self, step: u64, node: usize, now: Now, input: &Input) {
        self.buf.clear();
        let buf = std::mem::take(&mut self.buf);
        let buf = postcard::to_extend(&(step, node as u32, now, input), buf).unwrap_or_default();
        self.hash.update(&buf);
        self.buf = buf;
        if let Some(lines) = &mut self.lines {
            lines.push(clip(format!(
                "{step:>8} {:>10.3}s n{node} wall {} > {input:?}",
                now.mono.0 as f64 / 1e9,
                now.wall.0
            )));
        }
    }

    /// An output of an engine.
    pub fn output(&mut self, node: usize, out: &Output) {
        self.hash.update(&[node as u8]);
        digest_output(&mut self.hash, out);
        if let Some(lines) = &mut self.lines {
            lines.push(clip(format!("{:>22} n{node} < {out:?}", "")));
        }
    }
}

fn u(h: &mut Xxh3, x: u64) {
    h.update(&x.to_le_bytes());
}

/// Folds the parts of an output that matter into the hash (cheaply: no formatting of events).
fn digest_output(h: &mut Xxh3, out: &Output) {
    match out {
        Output::Storage { op, req } => {
            u(h, 1);
            u(h, op.0);
            if let Ok(b) = postcard::to_allocvec(req) {
                h.update(&b);
            }
        }
        Output::Reply { conn, req, reply } => {
            u(h, 2);
            u(h, conn.0);
            u(h, req.0);
            match reply {
                Ok(r) => digest_reply(h, r),
                Err(e) => h.update(e.to_string().as_bytes()),
            }
        }
        Output::Deliver {
            conn,
            consumer,
            events,
            ..
        } => {
            u(h, 3);
            u(h, conn.0);
            h.update(consumer.as_str().as_bytes());
            for d in events {
                u(h, u64::from(d.event.partition));
                u(h, d.event.offset);
                u(h, u64::from(d.attempt));
            }
        }
        Output::Replay { conn, replay, item } => {
            u(h, 4);
            u(h, conn.0);
            u(h, replay.0);
            match item {
                ReplayItem::Events(evs) => {
                    for e in evs {
                        u(h, u64::from(e.partition));
                        u(h, e.offset);
                    }
                }
                ReplayItem::Progress {
                    done, remaining, ..
                } => {
                    u(h, *done);
                    u(h, *remaining);
                }
                ReplayItem::Done { total } => u(h, *total),
                ReplayItem::Failed(e) => h.update(e.to_string().as_bytes()),
            }
        }
        Output::Notice(n) => {
            u(h, 5);
            h.update(format!("{n:?}").as_bytes());
        }
        Output::Publish { op, stream, event } => {
            u(h, 8);
            u(h, op.0);
            h.update(stream.as_str().as_bytes());
            u(h, u64::from(event.partition));
            u(h, event.offset);
        }
        Output::ConsumerNotice {
            conn,
            consumer,
            notice,
        } => {
            u(h, 7);
            u(h, conn.0);
            h.update(consumer.as_str().as_bytes());
            h.update(format!("{notice:?}").as_bytes());
        }
        Output::Assignment {
            conn,
            consumer,
            assignment,
            ..
        } => {
            u(h, 6);
            u(h, conn.0);
            h.update(consumer.as_str().as_bytes());
            u(h, assignment.generation);
            for p in &assignment.partitions {
                u(h, u64::from(*p));
            }
        }
    }
}

fn digest_reply(h: &mut Xxh3, r: &Reply) {
    match r {
        Reply::Done => u(h, 10),
        Reply::Stream(i) => {
            u(h, 11);
            for p in &i.partitions {
                u(h, p.first);
                u(h, p.next);
            }
        }
        Reply::Streams(l) => {
            u(h, 12);
            for i in l {
                h.update(i.config.name.as_str().as_bytes());
                for p in &i.partitions {
                    u(h, p.next);
                }
            }
        }
        Reply::Appended(outs) => {
            u(h, 13);
            for o in outs {
                match o {
                    tributary_core::AppendOutcome::Appended(p) => {
                        u(h, u64::from(p.partition));
                        u(h, p.offset);
                    }
                    tributary_core::AppendOutcome::Duplicate { original } => {
                        u(h, u64::MAX);
                        u(h, original.offset);
                    }
                }
            }
        }
        Reply::Events(evs) => {
            u(h, 14);
            for e in evs {
                u(h, e.offset);
            }
        }
        Reply::Subscription(i) => {
            u(h, 15);
            for c in &i.cursors {
                for f in &c.floors {
                    u(h, *f);
                }
                u(h, c.pending);
            }
        }
        Reply::Settled(s) => {
            u(h, 16);
            u(h, s.applied.len() as u64);
            u(h, s.skipped.len() as u64);
        }
        Reply::ReplayStarted(id) => {
            u(h, 17);
            u(h, id.0);
        }
        Reply::Assignment(a) => {
            u(h, 18);
            u(h, a.generation);
            for p in &a.partitions {
                u(h, u64::from(*p));
            }
        }
        Reply::MarkedRead { marked, ignored } => {
            u(h, 20);
            u(h, u64::from(*marked));
            u(h, u64::from(*ignored));
        }
        Reply::ReceiptStatus(st) => {
            u(h, 21);
            u(h, st.unread);
            h.update(format!("{:?}{:?}", st.last_read, st.receipt).as_bytes());
        }
        Reply::Subscriptions(list) => {
            u(h, 23);
            for s in list {
                h.update(s.config.name.as_str().as_bytes());
            }
        }
        Reply::Schemas(list) => {
            u(h, 22);
            for s in list {
                h.update(s.event_type.as_bytes());
                u(h, s.versions.len() as u64);
            }
        }
        Reply::Committed(positions) => {
            u(h, 19);
            for p in positions {
                u(h, u64::from(p.partition));
                u(h, p.offset);
            }
        }
    }
}
