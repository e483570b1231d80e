//! The run's randomness: one generator of a fixed algorithm (xorshift128), seeded from the run's
//! seed, so that a seed replays the same faults in the same order.

use rand_core::{Rng, SeedableRng};
use rand_xorshift::XorShiftRng;

pub struct Dice(XorShiftRng);

impl Dice {
    pub fn new(seed: u64) -> Dice {
        Dice(XorShiftRng::seed_from_u64(seed))
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 {
            0
        } else {
            self.0.next_u64() % n
        }
    }

    /// A number in `lo..=hi`.
    pub fn between(&mut self, lo: u64, hi: u64) -> u64 {
        lo + self.below(hi.saturating_sub(lo) + 1)
    }

    /// True with probability `num / den`.
    pub fn chance(&mut self, num: u64, den: u64) -> bool {
        self.below(den) < num
    }

    /// One of `items` (panics on an empty slice: callers draw from lists they built non-empty).
    pub fn pick<T: Copy>(&mut self, items: &[T]) -> T {
        items[self.below(items.len() as u64) as usize]
    }
}

/// A seed from the clock and the process, for runs that were given none.
pub fn fresh_seed() -> u64 {
    let t = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    let mut r = XorShiftRng::seed_from_u64(t ^ (u64::from(std::process::id()) << 32));
    r.next_u64()
}
