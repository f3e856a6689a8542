//! `ctx:random`'s generator: xoshiro256** (Blackman & Vigna), seeded through splitmix64 from the config's
//! `seed`, so a replay of the same poses makes the same choices as the live session.

/// xoshiro256** state.
#[derive(Clone, Copy, Debug)]
pub(super) struct Rng {
    s: [u64; 4],
}

impl Rng {
    /// The generator for `seed` (any value, 0 included: splitmix64 never yields an all-zero state).
    pub(super) fn new(seed: u64) -> Rng {
        let mut x = seed;
        let mut next = || {
            x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
            z ^ (z >> 31)
        };
        Rng {
            s: [next(), next(), next(), next()],
        }
    }

    /// The next 64 random bits.
    pub(super) fn next_u64(&mut self) -> u64 {
        let s = &mut self.s;
        let result = s[1].wrapping_mul(5).rotate_left(7).wrapping_mul(9);
        let t = s[1] << 17;
        s[2] ^= s[0];
        s[3] ^= s[1];
        s[1] ^= s[2];
        s[0] ^= s[3];
        s[2] ^= t;
        s[3] = s[3].rotate_left(45);
        result
    }

    /// A float in [0, 1) with 53 random bits.
    pub(super) fn unit(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
    }

    /// An integer in `0..=max`, uniform (rejection on the smallest covering power of two, as Lua's own
    /// `math.random` does, so no modulo bias).
    pub(super) fn up_to(&mut self, max: u64) -> u64 {
        if max & max.wrapping_add(1) == 0 {
            return self.next_u64() & max;
        }
        let mask = u64::MAX >> max.leading_zeros();
        loop {
            let r = self.next_u64() & mask;
            if r <= max {
                return r;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reference_values_of_xoshiro256starstar() {
        // State 1, 2, 3, 4: the first outputs of the reference implementation (prng.di.unimi.it).
        let mut rng = Rng { s: [1, 2, 3, 4] };
        let first: Vec<u64> = (0..3).map(|_| rng.next_u64()).collect();
        assert_eq!(first, [11520, 0, 1509978240]);
    }

    #[test]
    fn ranges_are_respected_and_covered() {
        let mut rng = Rng::new(7);
        let mut seen = [false; 6];
        for _ in 0..1000 {
            let r = rng.up_to(5);
            seen[r as usize] = true;
            let u = rng.unit();
            assert!((0.0..1.0).contains(&u));
        }
        assert!(seen.iter().all(|&s| s));
        assert_eq!(rng.up_to(0), 0);
        let _full_range = rng.up_to(u64::MAX);
    }
}
