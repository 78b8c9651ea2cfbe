//! Counter-based random numbers.
//!
//! Every random draw in densetrain is a pure function of `(seed, stream,
//! counter)`: initialisation, splits, shuffling and dropout masks. A CUDA
//! kernel computes the same function, so both devices draw the same dropout
//! masks, and a resumed run needs only the seed and the counters, not a
//! generator's internal state.

/// Stream of the weight initialisation draws.
pub const STREAM_INIT: u64 = 1;
/// Stream of the shuffled and stratified validation splits.
pub const STREAM_SPLIT: u64 = 2;
/// Stream of the per-epoch batch shuffles.
pub const STREAM_SHUFFLE: u64 = 3;
/// Stream of the dropout masks.
pub const STREAM_DROPOUT: u64 = 4;
/// Stream of the k-fold assignment.
pub const STREAM_FOLDS: u64 = 5;

/// Applies the SplitMix64 finaliser (Steele, Lea, Flood 2014) to `z`.
#[inline]
pub fn mix64(z: u64) -> u64 {
    let mut z = z.wrapping_add(0x9E37_79B9_7F4A_7C15);
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// Hashes a seed, a stream key and a counter into 64 random bits.
#[inline]
pub fn hash(seed: u64, key: u64, counter: u64) -> u64 {
    mix64(mix64(seed ^ mix64(key)) ^ counter)
}

/// Maps 64 random bits to a float uniform in `[0, 1)` with 24 bits of precision.
#[inline]
pub fn unit_f32(bits: u64) -> f32 {
    (bits >> 40) as f32 * (1.0 / (1u64 << 24) as f32)
}

/// Maps 64 random bits to a float uniform in `[0, 1)` with 53 bits of precision.
#[inline]
pub fn unit_f64(bits: u64) -> f64 {
    (bits >> 11) as f64 * (1.0 / (1u64 << 53) as f64)
}

/// Key of the dropout stream for one layer at one optimizer step.
#[inline]
pub fn dropout_key(step: u64, layer: u64) -> u64 {
    mix64(STREAM_DROPOUT ^ mix64(step.wrapping_mul(0x100_0000_01B3) ^ layer))
}

/// Decides whether dropout keeps `element` of `layer` at optimizer `step`.
///
/// The element is kept when its uniform draw is at least `rate`, so a rate
/// of 0 keeps everything.
#[inline]
pub fn dropout_keep(seed: u64, step: u64, layer: u64, element: u64, rate: f32) -> bool {
    unit_f32(hash(seed, dropout_key(step, layer), element)) >= rate
}

/// A sequence of draws from one `(seed, key)` pair.
#[derive(Clone, Debug)]
pub struct Stream {
    seed: u64,
    key: u64,
    counter: u64,
}

impl Stream {
    /// Creates the stream `key` of `seed`, starting at counter 0.
    pub fn new(seed: u64, key: u64) -> Self {
        Self {
            seed,
            key,
            counter: 0,
        }
    }

    /// Draws the next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let bits = hash(self.seed, self.key, self.counter);
        self.counter += 1;
        bits
    }

    /// Draws a float uniform in `[0, 1)`.
    pub fn next_f64(&mut self) -> f64 {
        unit_f64(self.next_u64())
    }

    /// Draws an integer uniform in `0..n` (multiply-shift; the bias is below 2^-32 for
    /// any `n` under 2^32).
    pub fn below(&mut self, n: usize) -> usize {
        ((self.next_u64() as u128 * n as u128) >> 64) as usize
    }

    /// Shuffles `items` in place with Fisher-Yates.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            let j = self.below(i + 1);
            items.swap(i, j);
        }
    }
}

/// Returns the shuffled order of `n` training rows for `epoch` (counted from 0).
pub fn epoch_permutation(seed: u64, epoch: u64, n: usize) -> Vec<u32> {
    let mut order: Vec<u32> = (0..n as u32).collect();
    Stream::new(seed, mix64(STREAM_SHUFFLE) ^ epoch).shuffle(&mut order);
    order
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn same_inputs_same_bits() {
        assert_eq!(hash(7, 3, 11), hash(7, 3, 11));
        assert_ne!(hash(7, 3, 11), hash(7, 3, 12));
        assert_ne!(hash(7, 3, 11), hash(8, 3, 11));
    }

    #[test]
    fn unit_draws_stay_in_range_and_spread() {
        let mut s = Stream::new(42, STREAM_INIT);
        let draws: Vec<f64> = (0..10_000).map(|_| s.next_f64()).collect();
        assert!(draws.iter().all(|&u| (0.0..1.0).contains(&u)));
        let mean = draws.iter().sum::<f64>() / draws.len() as f64;
        assert!((mean - 0.5).abs() < 0.02, "mean {mean}");
    }

    #[test]
    fn permutation_is_a_permutation() {
        let mut p = epoch_permutation(1, 0, 1000);
        assert_ne!(p, (0..1000).collect::<Vec<u32>>());
        p.sort_unstable();
        assert_eq!(p, (0..1000).collect::<Vec<u32>>());
    }

    #[test]
    fn dropout_keeps_about_one_minus_rate() {
        let kept = (0..20_000)
            .filter(|&e| dropout_keep(5, 9, 1, e, 0.25))
            .count();
        let share = kept as f64 / 20_000.0;
        assert!((share - 0.75).abs() < 0.02, "kept share {share}");
    }
}
