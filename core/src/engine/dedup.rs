//! The dedup window of one stream: producer event ids appended within `dedup_window`.
//!
//! Memory matters here (SPEC target: under 64 bytes per id), so ids live once, in a ring
//! ordered by expiry (`VecDeque<Entry>`, 40 bytes each), and the hash index holds only a
//! 4-byte ring sequence number per id (`hashbrown::HashTable<u32>`). Expired ids leave from
//! the front of the ring. The hash is keyed from the engine's seed, so a producer cannot
//! choose ids that collide, and iteration never depends on it.

use crate::ids::EventId;
use crate::storage::DedupRecord;
use crate::time::UnixMillis;
use hashbrown::HashTable;
use std::collections::VecDeque;

#[derive(Debug, Clone, Copy)]
struct Entry {
    id: [u8; 16],
    offset: u64,
    expires_at: u64,
    partition: u32,
}

/// A bounded set of ids with their positions and expiry.
#[derive(Debug)]
pub(crate) struct DedupWindow {
    index: HashTable<u32>,
    ring: VecDeque<Entry>,
    /// Sequence number of `ring[0]` (wrapping).
    front_seq: u32,
    seed: u64,
}

impl DedupWindow {
    pub(crate) fn new(seed: u64) -> Self {
        DedupWindow {
            index: HashTable::new(),
            ring: VecDeque::new(),
            front_seq: 0,
            seed,
        }
    }

    fn hash(&self, id: &[u8; 16]) -> u64 {
        xxhash_rust::xxh3::xxh3_64_with_seed(id, self.seed)
    }

    pub(crate) fn len(&self) -> usize {
        self.ring.len()
    }

    /// Where `id` was appended, if it is in the window.
    pub(crate) fn get(&self, id: &EventId) -> Option<(u32, u64)> {
        let b = id.as_bytes();
        let h = self.hash(b);
        let front = self.front_seq;
        self.index
            .find(h, |&seq| {
                &self.ring[seq.wrapping_sub(front) as usize].id == b
            })
            .map(|&seq| {
                let e = &self.ring[seq.wrapping_sub(front) as usize];
                (e.partition, e.offset)
            })
    }

    /// Adds an id. Expiries must be given in non-decreasing order (the core's stream clock
    /// is monotonic); an earlier one is raised to the last.
    pub(crate) fn insert(&mut self, r: &DedupRecord) {
        let h = self.hash(r.event_id.as_bytes());
        self.push(r, h);
    }

    fn push(&mut self, r: &DedupRecord, h: u64) {
        let mut expires_at = r.expires_at.0;
        if let Some(last) = self.ring.back() {
            expires_at = expires_at.max(last.expires_at);
        }
        let seq = self.front_seq.wrapping_add(self.ring.len() as u32);
        self.ring.push_back(Entry {
            id: *r.event_id.as_bytes(),
            offset: r.offset,
            expires_at,
            partition: r.partition,
        });
        let (ring, front, seed) = (&self.ring, self.front_seq, self.seed);
        self.index.insert_unique(h, seq, |&s| {
            xxhash_rust::xxh3::xxh3_64_with_seed(&ring[s.wrapping_sub(front) as usize].id, seed)
        });
    }

    /// Adds an id unless it is there already; then returns where the one there was appended.
    /// Hashes the id once.
    pub(crate) fn insert_if_absent(&mut self, r: &DedupRecord) -> Option<(u32, u64)> {
        let b = r.event_id.as_bytes();
        let h = self.hash(b);
        let front = self.front_seq;
        if let Some(&seq) = self.index.find(h, |&seq| {
            &self.ring[seq.wrapping_sub(front) as usize].id == b
        }) {
            let e = &self.ring[seq.wrapping_sub(front) as usize];
            return Some((e.partition, e.offset));
        }
        self.push(r, h);
        None
    }

    /// Removes the `n` newest ids (the tentative ids of a write that failed).
    pub(crate) fn pop_back(&mut self, n: usize) {
        for _ in 0..n {
            let Some(e) = self.ring.back() else { return };
            let seq = self.front_seq.wrapping_add(self.ring.len() as u32 - 1);
            let h = self.hash(&e.id);
            if let Ok(entry) = self.index.find_entry(h, |&s| s == seq) {
                entry.remove();
            }
            self.ring.pop_back();
        }
    }

    /// Removes every id whose expiry is at or before `now`.
    pub(crate) fn expire(&mut self, now: UnixMillis) {
        while let Some(e) = self.ring.front() {
            if e.expires_at > now.0 {
                break;
            }
            let id = e.id;
            let h = self.hash(&id);
            let seq = self.front_seq;
            if let Ok(entry) = self.index.find_entry(h, |&s| s == seq) {
                entry.remove();
            }
            self.ring.pop_front();
            self.front_seq = self.front_seq.wrapping_add(1);
        }
        if self.ring.is_empty() && self.index.capacity() > 1024 {
            self.index.shrink_to_fit(|_| 0);
            self.ring.shrink_to_fit();
        }
    }

    /// Bytes of heap held, for the memory benchmark.
    pub(crate) fn heap_bytes(&self) -> usize {
        // hashbrown: one u32 slot plus one control byte per bucket.
        self.index.capacity() * 8 / 7 * (std::mem::size_of::<u32>() + 1)
            + self.ring.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(n: u8, offset: u64, exp: u64) -> DedupRecord {
        DedupRecord {
            event_id: EventId::from_bytes([n; 16]),
            partition: 0,
            offset,
            expires_at: UnixMillis(exp),
        }
    }

    #[test]
    fn finds_what_it_holds_until_expiry() {
        let mut w = DedupWindow::new(7);
        for i in 0..200u8 {
            w.insert(&rec(i, i as u64, 100 + i as u64));
        }
        assert_eq!(w.get(&EventId::from_bytes([5; 16])), Some((0, 5)));
        w.expire(UnixMillis(150));
        assert_eq!(w.get(&EventId::from_bytes([5; 16])), None);
        assert_eq!(w.get(&EventId::from_bytes([50; 16])), None);
        assert_eq!(w.get(&EventId::from_bytes([51; 16])), Some((0, 51)));
        assert_eq!(w.len(), 149);
        w.expire(UnixMillis(10_000));
        assert_eq!(w.len(), 0);
        assert_eq!(w.insert_if_absent(&rec(2, 7, 20_000)), None);
        assert_eq!(w.insert_if_absent(&rec(2, 8, 20_000)), Some((0, 7)));
        assert_eq!(w.insert_if_absent(&rec(3, 9, 20_000)), None);
        w.pop_back(1);
        assert_eq!(w.get(&EventId::from_bytes([3; 16])), None);
        assert_eq!(w.get(&EventId::from_bytes([2; 16])), Some((0, 7)));
        w.insert(&rec(1, 9, 20_000));
        assert_eq!(w.get(&EventId::from_bytes([1; 16])), Some((0, 9)));
    }

    #[test]
    fn memory_per_id_is_small() {
        let mut w = DedupWindow::new(1);
        let n = 1u32 << 20;
        for i in 0..n {
            let mut id = [0u8; 16];
            id[..4].copy_from_slice(&i.to_le_bytes());
            w.insert(&DedupRecord {
                event_id: EventId::from_bytes(id),
                partition: 0,
                offset: i as u64,
                expires_at: UnixMillis(1),
            });
        }
        let per_id = w.heap_bytes() / n as usize;
        assert!(per_id < 64, "{per_id} bytes per id");
    }
}
