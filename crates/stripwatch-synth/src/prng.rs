//! A tiny deterministic pseudo-random generator (SplitMix64).
//!
//! The generator's output must be byte-for-byte reproducible for a seed, across runs and
//! machines, so that scenario captures and benchmark captures never change under a test. No
//! external crate is involved, so a dependency upgrade cannot change the bytes either.

/// SplitMix64: small, fast and good enough for synthetic traffic (not for cryptography).
#[derive(Debug, Clone)]
pub struct Prng {
    state: u64,
}

impl Prng {
    /// Starts a stream of numbers that depends only on `seed`.
    pub fn new(seed: u64) -> Self {
        Prng { state: seed }
    }

    /// Starts a stream seeded by a name (FNV-1a), so each scenario gets its own stable stream.
    pub fn from_name(name: &str) -> Self {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325;
        for b in name.bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
        Prng::new(h)
    }

    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// The next 32 random bits (TCP initial sequence numbers).
    pub fn next_u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }

    /// A number in `lo..=hi` (inclusive); `lo` when the range is empty.
    pub fn range(&mut self, lo: u64, hi: u64) -> u64 {
        if hi <= lo {
            return lo;
        }
        let span = hi - lo + 1;
        lo + self.next_u64() % span
    }

    /// True with probability `per_mille / 1000`.
    pub fn chance(&mut self, per_mille: u64) -> bool {
        self.next_u64() % 1000 < per_mille
    }

    /// A number between `lo` and `hi` whose logarithm is uniform (sizes of mail bodies).
    pub fn log_uniform(&mut self, lo: u64, hi: u64) -> u64 {
        let lo_f = (lo.max(1) as f64).ln();
        let hi_f = (hi.max(lo.max(1)) as f64).ln();
        let unit = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((lo_f + (hi_f - lo_f) * unit).exp() as u64).clamp(lo, hi.max(lo))
    }

    /// Fills `buf` with random bytes (ciphertext-looking payloads).
    pub fn fill(&mut self, buf: &mut [u8]) {
        let mut chunks = buf.chunks_exact_mut(8);
        for chunk in &mut chunks {
            chunk.copy_from_slice(&self.next_u64().to_le_bytes());
        }
        let rest = chunks.into_remainder();
        if !rest.is_empty() {
            let bytes = self.next_u64().to_le_bytes();
            rest.copy_from_slice(&bytes[..rest.len()]);
        }
    }

    /// Picks one element of a non-empty slice.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[(self.next_u64() % items.len() as u64) as usize]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn synth_prng_is_deterministic_and_seed_dependent() {
        let a: Vec<u64> = (0..4)
            .map({
                let mut p = Prng::new(7);
                move |_| p.next_u64()
            })
            .collect();
        let b: Vec<u64> = (0..4)
            .map({
                let mut p = Prng::new(7);
                move |_| p.next_u64()
            })
            .collect();
        let mut c = Prng::new(8);
        assert_eq!(a, b);
        assert_ne!(a[0], c.next_u64());
    }

    #[test]
    fn synth_prng_ranges_stay_in_bounds() {
        let mut p = Prng::new(1);
        for _ in 0..1000 {
            let v = p.range(3, 9);
            assert!((3..=9).contains(&v));
            let s = p.log_uniform(100, 10_000);
            assert!((100..=10_000).contains(&s));
        }
        let mut buf = [0u8; 13];
        p.fill(&mut buf);
        assert!(buf.iter().any(|&b| b != 0));
    }
}
