//! Next-token scores of logits against targets: the mean cross-entropy of
//! `F.cross_entropy(logits, targets, ignore_index=-100)` and the accuracy
//! of the arg-max, over the positions that are scored. Sums are in f64, so
//! they do not depend on how many rows a batch holds.

use crate::data::IGNORE;

/// Sums over scored positions; [`Score::add`] merges batches.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Score {
    /// The sum of `-log softmax(logits)[target]`.
    pub loss_sum: f64,
    /// Positions scored (targets other than [`IGNORE`]).
    pub tokens: u64,
    /// Positions whose arg-max (the first, on ties) is the target.
    pub correct: u64,
}

impl Score {
    /// Scores `logits` (`[positions, vocab]`) against `targets` (one per position).
    pub fn of(logits: &[f32], vocab: usize, targets: &[i64]) -> Score {
        assert_eq!(
            logits.len(),
            targets.len() * vocab,
            "one row of logits per target"
        );
        let mut s = Score::default();
        for (row, &target) in logits.chunks_exact(vocab).zip(targets) {
            if target == IGNORE {
                continue;
            }
            let (mut best, mut max) = (0, f32::NEG_INFINITY);
            for (i, &x) in row.iter().enumerate() {
                if x > max {
                    (best, max) = (i, x);
                }
            }
            let m = f64::from(max);
            let sum: f64 = row.iter().map(|&x| (f64::from(x) - m).exp()).sum();
            s.loss_sum += m + sum.ln() - f64::from(row[target as usize]);
            s.tokens += 1;
            s.correct += u64::from(best == target as usize);
        }
        s
    }

    pub fn add(&mut self, other: Score) {
        self.loss_sum += other.loss_sum;
        self.tokens += other.tokens;
        self.correct += other.correct;
    }

    /// The mean loss (NaN when nothing was scored).
    pub fn loss(&self) -> f64 {
        self.loss_sum / self.tokens as f64
    }

    pub fn perplexity(&self) -> f64 {
        self.loss().exp()
    }

    /// The fraction of scored positions predicted right (NaN when none).
    pub fn accuracy(&self) -> f64 {
        self.correct as f64 / self.tokens as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cross_entropy_and_accuracy_by_hand() {
        // Uniform logits: loss ln(V); the first index wins the tie.
        let s = Score::of(&[0.5; 4], 4, &[0]);
        assert!((s.loss() - 4f64.ln()).abs() < 1e-12);
        assert_eq!((s.tokens, s.correct), (1, 1));
        // [ln 1, ln 3] against target 1: -ln(3/4); against 0: -ln(1/4).
        let logits = [0.0, 3f32.ln(), 0.0, 3f32.ln(), 9.0, 9.0];
        let s = Score::of(&logits, 2, &[1, 0, IGNORE]);
        let want = (-(0.75f64).ln() - (0.25f64).ln()) / 2.0;
        assert!((s.loss() - want).abs() < 1e-7, "{} vs {want}", s.loss());
        assert_eq!((s.tokens, s.correct), (2, 1));
        assert!((s.accuracy() - 0.5).abs() < 1e-12);
        let mut total = Score::default();
        total.add(s);
        total.add(s);
        assert_eq!(total.tokens, 4);
        assert!((total.loss() - want).abs() < 1e-7);
        // Large logits do not overflow.
        let s = Score::of(&[1000.0, 0.0], 2, &[1]);
        assert!((s.loss() - 1000.0).abs() < 1e-9);
        assert!(Score::of(&[1.0, 2.0], 2, &[IGNORE]).loss().is_nan());
    }
}
