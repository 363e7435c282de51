//! The keys a workload touches: `count` fixed-width keys under a prefix,
//! chosen uniformly or by a zipfian law, reproducibly from a seed.

use anyhow::{bail, Result};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use rand_distr::{Distribution as _, Zipf};

/// How keys are picked.
#[derive(Debug, Clone, Copy, PartialEq, clap::ValueEnum, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Distribution {
    /// Every key equally often.
    Uniform,
    /// Key `i` (from 0) about `1 / (i + 1)^s` as often as key 0.
    Zipfian,
}

/// A keyspace of `count` keys `prefix` + zero-padded number.
#[derive(Debug, Clone)]
pub struct KeySpace {
    prefix: Vec<u8>,
    count: u64,
    width: usize,
    picker: Picker,
}

#[derive(Debug, Clone)]
enum Picker {
    Uniform,
    Zipfian(Zipf<f64>),
}

impl KeySpace {
    /// `count` keys of `key_size` bytes (or as long as the prefix and the
    /// largest number need, if longer) under `prefix`.
    ///
    /// # Errors
    /// When `count` is 0 or the zipfian exponent is not positive.
    pub fn new(
        prefix: &str,
        count: u64,
        key_size: usize,
        distribution: Distribution,
        zipf_exponent: f64,
    ) -> Result<KeySpace> {
        if count == 0 {
            bail!("the key count must be at least 1");
        }
        let digits = (count - 1).max(1).ilog10() as usize + 1;
        let width = key_size.saturating_sub(prefix.len()).max(digits);
        let picker = match distribution {
            Distribution::Uniform => Picker::Uniform,
            Distribution::Zipfian => match Zipf::new(count, zipf_exponent) {
                Ok(zipf) => Picker::Zipfian(zipf),
                Err(e) => bail!("zipfian exponent {zipf_exponent}: {e}"),
            },
        };
        Ok(KeySpace {
            prefix: prefix.as_bytes().to_vec(),
            count,
            width,
            picker,
        })
    }

    /// How many keys there are.
    pub fn count(&self) -> u64 {
        self.count
    }

    /// The prefix every key starts with.
    pub fn prefix(&self) -> &[u8] {
        &self.prefix
    }

    /// Key number `index` (taken modulo the count).
    pub fn key(&self, index: u64) -> Vec<u8> {
        // Digits written by hand: this runs for every request, and
        // `format!` took about 4% of the generator's time.
        let mut key = Vec::with_capacity(self.prefix.len() + self.width);
        key.extend_from_slice(&self.prefix);
        key.resize(self.prefix.len() + self.width, b'0');
        let mut number = index % self.count;
        for digit in key.iter_mut().rev().take(self.width) {
            if number == 0 {
                break;
            }
            *digit = b'0' + (number % 10) as u8;
            number /= 10;
        }
        key
    }

    /// `[first, end)` holding exactly this keyspace's keys among the keys
    /// of the same width under the prefix: a larger keyspace written by an
    /// earlier run (same key size) does not leak into a range over it.
    pub fn bounds(&self) -> (Vec<u8>, Vec<u8>) {
        let mut end = self.key(self.count - 1);
        end.push(0);
        (self.key(0), end)
    }

    /// The number of a key drawn by the distribution.
    pub fn pick_index(&self, rng: &mut StdRng) -> u64 {
        match &self.picker {
            Picker::Uniform => rng.gen_range(0..self.count),
            // Zipf draws ranks from 1; rank 1 is the most frequent.
            Picker::Zipfian(zipf) => (zipf.sample(rng) as u64).saturating_sub(1) % self.count,
        }
    }

    /// A key drawn by the distribution.
    pub fn pick(&self, rng: &mut StdRng) -> Vec<u8> {
        self.key(self.pick_index(rng))
    }
}

/// The random source of worker `worker` of a run seeded with `seed`:
/// the same seed gives every worker the same sequence again.
pub fn worker_rng(seed: u64, worker: u64) -> StdRng {
    StdRng::seed_from_u64(seed ^ worker.wrapping_mul(0x9E37_79B9_7F4A_7C15))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_the_asked_size_and_sort_by_number() {
        let keys = KeySpace::new("k/", 1000, 16, Distribution::Uniform, 0.99).unwrap();
        assert_eq!(keys.key(7), b"k/00000000000007".to_vec());
        assert_eq!(keys.key(7).len(), 16);
        assert!(keys.key(9) < keys.key(10));
        assert_eq!(keys.key(1007), keys.key(7));
        // A key size too small for the numbers grows to fit them.
        let keys = KeySpace::new("prefix/", 100_000, 4, Distribution::Uniform, 0.99).unwrap();
        assert_eq!(keys.key(99_999), b"prefix/99999".to_vec());
    }

    #[test]
    fn the_bounds_hold_exactly_the_keyspace() {
        let keys = KeySpace::new("k/", 1000, 8, Distribution::Uniform, 0.99).unwrap();
        let (start, end) = keys.bounds();
        let inside = |key: &[u8]| start.as_slice() <= key && key < end.as_slice();
        assert!((0..1000).all(|i| inside(&keys.key(i))));
        let larger = KeySpace::new("k/", 10_000, 8, Distribution::Uniform, 0.99).unwrap();
        assert!((1000..10_000).all(|i| !inside(&larger.key(i))));
        assert!(!inside(b"k/"));
    }

    #[test]
    fn the_same_seed_picks_the_same_keys() {
        let keys = KeySpace::new("k/", 1000, 16, Distribution::Uniform, 0.99).unwrap();
        let picks = |seed| {
            let mut rng = worker_rng(seed, 3);
            (0..50)
                .map(|_| keys.pick_index(&mut rng))
                .collect::<Vec<_>>()
        };
        assert_eq!(picks(1), picks(1));
        assert_ne!(picks(1), picks(2));
    }

    #[test]
    fn zipfian_picks_favour_the_first_keys_and_uniform_does_not() {
        let count = 10_000;
        let share_of_first_ten = |distribution| {
            let keys = KeySpace::new("k/", count, 16, distribution, 0.99).unwrap();
            let mut rng = worker_rng(1, 0);
            let draws = 100_000;
            let hits = (0..draws)
                .filter(|_| keys.pick_index(&mut rng) < 10)
                .count();
            hits as f64 / draws as f64
        };
        // With s = 0.99 over 10,000 keys the first ten take about 30%.
        let zipfian = share_of_first_ten(Distribution::Zipfian);
        assert!((0.2..0.45).contains(&zipfian), "zipfian share {zipfian}");
        let uniform = share_of_first_ten(Distribution::Uniform);
        assert!(uniform < 0.01, "uniform share {uniform}");
    }

    #[test]
    fn an_empty_keyspace_is_refused() {
        assert!(KeySpace::new("k/", 0, 16, Distribution::Uniform, 0.99).is_err());
    }
}
