//! Finiteness checks: a NaN or an infinity must stop a run with an error, not
//! come out as garbage tokens. One scan serves every caller: weights as they
//! are loaded ([`crate::weights`], fused into the conversion loop), the logits
//! rows that are sampled or dumped ([`check_logits`]), and, once training
//! exists, losses and gradients ([`check`]).
//!
//! The scan is a branch-free count ([`count`]) that the compiler vectorizes;
//! only when it finds something does a second, slow pass over the same slice
//! locate the first bad value and split the count into NaN and infinities.

use std::fmt;

/// Whether `x` is NaN or infinite. Branch-free: `!x.is_finite()` is one
/// compare of the absolute value against infinity (false for NaN).
#[inline(always)]
pub fn is_bad(x: f32) -> bool {
    !x.is_finite()
}

/// How many values of `values` are NaN or infinite: a branch-free count in
/// u32 lanes, block by block (vectorized).
pub fn count(values: &[f32]) -> usize {
    values
        .chunks(1 << 16)
        .map(|block| {
            let n: u32 = block.iter().map(|&x| u32::from(is_bad(x))).sum();
            n as usize
        })
        .sum()
}

/// `Ok` when every value is finite; otherwise where and how many are not.
/// The reusable check: weights, logits, and a training step's loss and
/// gradients all go through it.
pub fn check(values: &[f32]) -> Result<(), NonFinite> {
    match count(values) {
        0 => Ok(()),
        _ => Err(NonFinite::of(values).expect("count found a non-finite value")),
    }
}

/// What a non-finite value is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Nan,
    PosInf,
    NegInf,
}

impl Kind {
    fn of(x: f32) -> Kind {
        if x.is_nan() {
            Kind::Nan
        } else if x > 0.0 {
            Kind::PosInf
        } else {
            Kind::NegInf
        }
    }
}

impl fmt::Display for Kind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Kind::Nan => "NaN",
            Kind::PosInf => "+inf",
            Kind::NegInf => "-inf",
        })
    }
}

/// The non-finite values of a slice: the first one, and how many.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct NonFinite {
    /// Flat index of the first NaN or infinite value.
    pub first_index: usize,
    /// What that first value is.
    pub first: Kind,
    /// NaN values.
    pub nan: usize,
    /// Infinite values (either sign).
    pub infinite: usize,
    /// Values in the slice.
    pub total: usize,
}

impl NonFinite {
    /// The slow pass: `None` when every value is finite.
    pub fn of(values: &[f32]) -> Option<NonFinite> {
        let first_index = values.iter().position(|&x| is_bad(x))?;
        let nan = values.iter().filter(|x| x.is_nan()).count();
        let infinite = values.iter().filter(|x| x.is_infinite()).count();
        Some(NonFinite {
            first_index,
            first: Kind::of(values[first_index]),
            nan,
            infinite,
            total: values.len(),
        })
    }

    /// NaN and infinite values together.
    pub fn count(&self) -> usize {
        self.nan + self.infinite
    }

    /// `2 NaN and 1 infinite of 4096 values, the first (NaN) at {index} 17`,
    /// `index` naming what the flat index counts (`flat index`, `vocab index`).
    pub fn describe(&self, index: &str) -> String {
        let what = match (self.nan, self.infinite) {
            (n, 0) => format!("{n} NaN"),
            (0, i) => format!("{i} infinite"),
            (n, i) => format!("{n} NaN and {i} infinite"),
        };
        format!(
            "{what} of {} value{}, the first ({}) at {index} {}",
            self.total,
            if self.total == 1 { "" } else { "s" },
            self.first,
            self.first_index
        )
    }
}

impl fmt::Display for NonFinite {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.describe("index"))
    }
}

/// Which step of a run produced a row of logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Step {
    /// The forward pass over the prompt (or over all of `run`'s tokens).
    Prefill,
    /// A single-token step through the KV cache at this sequence position.
    Decode { position: usize },
}

/// A row of logits, sampled or dumped, that holds NaN or infinite values.
/// The weights were checked on load, so the forward pass overflowed.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{}", self.text())]
pub struct NonFiniteLogits {
    pub step: Step,
    pub batch_row: usize,
    /// The sequence position of the row.
    pub position: usize,
    pub values: NonFinite,
}

impl NonFiniteLogits {
    fn text(&self) -> String {
        let what = match self.step {
            Step::Prefill => format!(
                "prefill produced non-finite logits at position {} (batch row {})",
                self.position, self.batch_row
            ),
            Step::Decode { position } => format!(
                "decode position {position} produced non-finite logits (batch row {})",
                self.batch_row
            ),
        };
        format!(
            "{what}: {}\n\
             hint: the weights are finite (checked on load), so the model overflowed f32 \
             in the forward pass (activations growing through a long loop, an ACT edge case, \
             or weights far out of their trained scale); try fewer loop iterations (--loops N) \
             and check where the weights come from",
            self.values.describe("vocab index")
        )
    }
}

/// Checks one row of logits (`vocab` values) before it is sampled or
/// written: the cheap guard of `run`, `generate` and `bench`.
pub fn check_logits(
    row: &[f32],
    step: Step,
    batch_row: usize,
    position: usize,
) -> Result<(), NonFiniteLogits> {
    check(row).map_err(|values| NonFiniteLogits {
        step,
        batch_row,
        position,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finite_values_pass() {
        assert_eq!(check(&[0.0, -1.0, f32::MAX, f32::MIN_POSITIVE]), Ok(()));
        assert_eq!(check(&[]), Ok(()));
    }

    #[test]
    fn counts_and_first_index() {
        let v = [
            1.0,
            f32::NEG_INFINITY,
            2.0,
            f32::NAN,
            f32::INFINITY,
            f32::NAN,
        ];
        assert_eq!(count(&v), 4);
        let e = check(&v).unwrap_err();
        assert_eq!(
            e,
            NonFinite {
                first_index: 1,
                first: Kind::NegInf,
                nan: 2,
                infinite: 2,
                total: 6
            }
        );
        assert_eq!(
            e.to_string(),
            "2 NaN and 2 infinite of 6 values, the first (-inf) at index 1"
        );
        let one = check(&[f32::NAN]).unwrap_err();
        assert_eq!(
            one.to_string(),
            "1 NaN of 1 value, the first (NaN) at index 0"
        );
    }

    #[test]
    fn logits_errors_name_the_step() {
        let mut row = vec![0.5f32; 8];
        row[3] = f32::INFINITY;
        let e = check_logits(&row, Step::Prefill, 1, 4).unwrap_err();
        assert!(
            e.to_string().starts_with(
                "prefill produced non-finite logits at position 4 (batch row 1): \
                 1 infinite of 8 values, the first (+inf) at vocab index 3\n"
            ),
            "{e}"
        );
        let e = check_logits(&row, Step::Decode { position: 9 }, 0, 9).unwrap_err();
        assert!(
            e.to_string()
                .starts_with("decode position 9 produced non-finite logits (batch row 0): "),
            "{e}"
        );
        assert!(check_logits(&[1.0; 8], Step::Prefill, 0, 0).is_ok());
    }
}
