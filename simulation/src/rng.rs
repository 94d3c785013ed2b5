//! The simulation's only randomness: ChaCha8 generators seeded from the run's seed, one per
//! subsystem, so that drawing more in one subsystem (say, the workload) never shifts what
//! another (say, the faults) draws.

use rand_chacha::ChaCha8Rng;
use rand_core::{RngCore, SeedableRng};

/// A seeded generator for one subsystem.
#[derive(Debug, Clone)]
pub struct SimRng(ChaCha8Rng);

impl SimRng {
    /// The generator of `subsystem` for the run of `seed`.
    pub fn new(seed: u64, subsystem: &str) -> SimRng {
        let sub = xxhash_rust::xxh3::xxh3_64(subsystem.as_bytes());
        SimRng(ChaCha8Rng::seed_from_u64(
            seed.rotate_left(17) ^ sub ^ 0x7472_6962_7574_6172,
        ))
    }

    /// A uniformly random `u64`.
    pub fn u64(&mut self) -> u64 {
        self.0.next_u64()
    }

    /// A number in `0..n` (`0` when `n` is zero).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            return 0;
        }
        ((u128::from(self.0.next_u64()) * u128::from(n)) >> 64) as u64
    }

    /// A number in `lo..=hi`.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo).saturating_add(1))
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u32) -> bool {
        self.below(1000) < u64::from(per_mille)
    }

    /// True or false, evenly.
    pub fn coin(&mut self) -> bool {
        self.0.next_u32() & 1 == 1
    }

    /// One element of a non-empty slice (the first when empty is impossible to return: `None`).
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> Option<&'a T> {
        if items.is_empty() {
            return None;
        }
        items.get(self.below(items.len() as u64) as usize)
    }

    /// An index drawn by weight; `None` when every weight is zero.
    pub fn weighted(&mut self, weights: &[u32]) -> Option<usize> {
        let total: u64 = weights.iter().map(|&w| u64::from(w)).sum();
        if total == 0 {
            return None;
        }
        let mut x = self.below(total);
        for (i, &w) in weights.iter().enumerate() {
            if x < u64::from(w) {
                return Some(i);
            }
            x -= u64::from(w);
        }
        None
    }

    /// 16 random bytes.
    pub fn bytes16(&mut self) -> [u8; 16] {
        let mut b = [0u8; 16];
        self.0.fill_bytes(&mut b);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subsystems_are_independent_and_reproducible() {
        let mut a = SimRng::new(1, "workload");
        let mut b = SimRng::new(1, "workload");
        let mut c = SimRng::new(1, "faults");
        let xa: Vec<u64> = (0..4).map(|_| a.u64()).collect();
        let xb: Vec<u64> = (0..4).map(|_| b.u64()).collect();
        let xc: Vec<u64> = (0..4).map(|_| c.u64()).collect();
        assert_eq!(xa, xb);
        assert_ne!(xa, xc);
        for _ in 0..1000 {
            assert!(a.below(7) < 7);
            let r = a.range(3, 5);
            assert!((3..=5).contains(&r));
        }
    }
}
