//! Choosing the next token from logits: greedy, or temperature, top-k (ties
//! at the k-th value kept, as OpenMythos's `generate` does), top-p (nucleus)
//! and a multinomial draw from a seeded generator.

use crate::rng::Rng;

/// Sampling settings. `temperature == 0` means greedy (argmax).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplingOptions {
    pub temperature: f32,
    /// 0 = no top-k filter.
    pub top_k: usize,
    /// 1.0 = no nucleus filter.
    pub top_p: f32,
    pub seed: u64,
}

impl Default for SamplingOptions {
    fn default() -> Self {
        SamplingOptions {
            temperature: 1.0,
            top_k: 50,
            top_p: 1.0,
            seed: 0,
        }
    }
}

pub struct Sampler {
    opts: SamplingOptions,
    rng: Rng,
    /// Reused between tokens (no allocation per token).
    probs: Vec<f32>,
    order: Vec<usize>,
}

impl Sampler {
    pub fn new(opts: SamplingOptions) -> Sampler {
        Sampler {
            opts,
            rng: Rng::new(opts.seed),
            probs: Vec::new(),
            order: Vec::new(),
        }
    }

    /// The next token for one row of logits.
    pub fn sample(&mut self, logits: &[f32]) -> usize {
        if self.opts.temperature <= 0.0 {
            return argmax(logits);
        }
        let t = self.opts.temperature;
        self.probs.clear();
        self.probs.extend(logits.iter().map(|&l| l / t));
        if self.opts.top_k > 0 && self.opts.top_k < logits.len() {
            // Keep every logit >= the k-th largest (ties at the boundary stay).
            self.order.clear();
            self.order.extend(0..self.probs.len());
            let probs = &self.probs;
            let k = self.opts.top_k;
            self.order
                .select_nth_unstable_by(k - 1, |&a, &b| probs[b].total_cmp(&probs[a]));
            let kth = self.probs[self.order[k - 1]];
            for p in self.probs.iter_mut() {
                if *p < kth {
                    *p = f32::NEG_INFINITY;
                }
            }
        }
        let max = self.probs.iter().copied().fold(f32::NEG_INFINITY, f32::max);
        let mut sum = 0.0f32;
        for p in self.probs.iter_mut() {
            *p = (*p - max).exp();
            sum += *p;
        }
        for p in self.probs.iter_mut() {
            *p /= sum;
        }
        if self.opts.top_p < 1.0 {
            // Smallest set of most likely tokens whose mass reaches top_p.
            self.order.clear();
            self.order.extend(0..self.probs.len());
            let probs = &self.probs;
            self.order
                .sort_by(|&a, &b| probs[b].total_cmp(&probs[a]).then(a.cmp(&b)));
            let mut mass = 0.0f32;
            let mut keep = self.order.len();
            for (i, &tok) in self.order.iter().enumerate() {
                mass += self.probs[tok];
                if mass >= self.opts.top_p {
                    keep = i + 1;
                    break;
                }
            }
            let dropped: Vec<usize> = self.order[keep..].to_vec();
            for tok in dropped {
                self.probs[tok] = 0.0;
            }
            let total: f32 = self.probs.iter().sum();
            for p in self.probs.iter_mut() {
                *p /= total;
            }
        }
        let u = self.rng.uniform_f32();
        let mut acc = 0.0f32;
        let mut last = 0;
        for (i, &p) in self.probs.iter().enumerate() {
            if p > 0.0 {
                last = i;
                acc += p;
                if u < acc {
                    return i;
                }
            }
        }
        last
    }
}

/// Index of the largest logit (the first on ties).
pub fn argmax(logits: &[f32]) -> usize {
    let mut best = 0;
    for (i, &l) in logits.iter().enumerate() {
        if l > logits[best] {
            best = i;
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn greedy_takes_the_argmax() {
        let mut s = Sampler::new(SamplingOptions {
            temperature: 0.0,
            ..Default::default()
        });
        assert_eq!(s.sample(&[0.1, 3.0, 2.0]), 1);
    }

    #[test]
    fn top_k_one_is_greedy_and_top_p_small_is_greedy() {
        let logits = [0.5, 0.1, 2.0, 1.9];
        for opts in [
            SamplingOptions {
                temperature: 1.0,
                top_k: 1,
                top_p: 1.0,
                seed: 3,
            },
            SamplingOptions {
                temperature: 1.0,
                top_k: 0,
                top_p: 0.01,
                seed: 3,
            },
        ] {
            let mut s = Sampler::new(opts);
            for _ in 0..50 {
                assert_eq!(s.sample(&logits), 2);
            }
        }
    }

    #[test]
    fn sampling_follows_the_distribution_and_the_seed() {
        let logits = [0.0f32, (3.0f32).ln()]; // probabilities 1/4 and 3/4
        let opts = SamplingOptions {
            temperature: 1.0,
            top_k: 0,
            top_p: 1.0,
            seed: 7,
        };
        let mut s = Sampler::new(opts);
        let ones = (0..20_000).filter(|_| s.sample(&logits) == 1).count();
        let frac = ones as f64 / 20_000.0;
        assert!((frac - 0.75).abs() < 0.02, "{frac}");
        let draw = |seed| {
            let mut s = Sampler::new(SamplingOptions { seed, ..opts });
            (0..32).map(|_| s.sample(&logits)).collect::<Vec<_>>()
        };
        assert_eq!(draw(1), draw(1));
        assert_ne!(draw(1), draw(2));
    }

    #[test]
    fn top_k_keeps_ties() {
        // k = 1 but two logits tie for the top: both can be drawn.
        let mut s = Sampler::new(SamplingOptions {
            temperature: 1.0,
            top_k: 1,
            top_p: 1.0,
            seed: 1,
        });
        let seen: std::collections::HashSet<usize> =
            (0..200).map(|_| s.sample(&[1.0, 5.0, 5.0, 0.0])).collect();
        assert_eq!(seen, [1, 2].into_iter().collect());
    }
}
