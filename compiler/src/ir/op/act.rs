//! The ACT rule's steps (`act.weight`, `act.accumulate`, `act.cumulate`,
//! `act.halted`): OpenMythos's halting arithmetic on the loop-carried
//! values, row-local, never fused. The halting probability itself is
//! `act_halt` (a matrix-vector product, beside the other composites).

use crate::ir::attrs::Attr;
use crate::ir::{DType, TensorType, TypeError};

/// The ACT rule (OpenMythos, reference item 8) as row-local steps on the
/// loop-carried values. `p` is the iteration's halting probability, `cum`
/// the cumulative one, `halted` the mask (0 or 1), all `[B, T, 1]`; the
/// masks carry no gradient.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum ActStep {
    /// The weight of this iteration's state, `(cum + p >= threshold ?
    /// max(1 - cum, 0) : p) * (1 - halted)`: `(p, cum, halted)`.
    Weight { threshold: f64 },
    /// The weighted sum of states `acc + w * h` (`w` broadcast over the
    /// row): `(acc, h, w)`.
    Accumulate,
    /// The cumulative probability `cum + p * (1 - halted)`: `(cum, p, halted)`.
    Cumulate,
    /// The halted mask `max(halted, cum >= threshold ? 1 : 0)` on the
    /// updated `cum`: `(halted, cum)`.
    Halted { threshold: f64 },
}

impl ActStep {
    pub fn name(&self) -> &'static str {
        match self {
            ActStep::Weight { .. } => "act.weight",
            ActStep::Accumulate => "act.accumulate",
            ActStep::Cumulate => "act.cumulate",
            ActStep::Halted { .. } => "act.halted",
        }
    }

    /// The threshold the step compares with, if any.
    pub fn threshold(&self) -> Option<f64> {
        match self {
            ActStep::Weight { threshold } | ActStep::Halted { threshold } => Some(*threshold),
            ActStep::Accumulate | ActStep::Cumulate => None,
        }
    }

    /// The typing rule: the halting values are `[B, T, 1]`; `accumulate`'s
    /// sum has the state's type.
    pub fn infer(&self, operands: &[&TensorType]) -> Result<TensorType, TypeError> {
        let err = |m: String| Err(TypeError(m));
        let arity = |n: usize| {
            if operands.len() == n {
                Ok(())
            } else {
                Err(TypeError(format!(
                    "{} takes {n} operands, has {}",
                    self.name(),
                    operands.len()
                )))
            }
        };
        let halting = TensorType::activations(1);
        let all_halting = |from: usize| operands[from..].iter().all(|&o| *o == halting);
        match self {
            ActStep::Weight { .. } | ActStep::Cumulate => {
                arity(3)?;
                if !all_halting(0) {
                    return err(format!("{} takes three [B, T, 1] values", self.name()));
                }
                Ok(halting)
            }
            ActStep::Halted { .. } => {
                arity(2)?;
                if !all_halting(0) {
                    return err("act.halted takes (halted, cum), both [B, T, 1]".into());
                }
                Ok(halting)
            }
            ActStep::Accumulate => {
                arity(3)?;
                let state = operands[0];
                if state.dtype != DType::F32
                    || state.shape.len() != 3
                    || operands[1] != state
                    || !all_halting(2)
                {
                    return err("act.accumulate takes (acc, h) of one type and w [B, T, 1]".into());
                }
                Ok(state.clone())
            }
        }
    }

    /// Its attributes (`threshold=0.99`), if any.
    pub fn attrs(&self) -> Vec<Attr> {
        self.threshold()
            .map(|t| Attr::Float("threshold", t))
            .into_iter()
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn typing_takes_halting_values_of_width_one() {
        let (one, two, state) = (
            TensorType::activations(1),
            TensorType::activations(2),
            TensorType::activations(8),
        );
        let weight = ActStep::Weight { threshold: 0.99 };
        assert_eq!(weight.infer(&[&one, &one, &one]), Ok(one.clone()));
        assert!(weight.infer(&[&one, &two, &one]).is_err());
        assert!(weight
            .infer(&[&one, &one])
            .unwrap_err()
            .0
            .contains("takes 3 operands, has 2"));
        let acc = ActStep::Accumulate;
        assert_eq!(acc.infer(&[&state, &state, &one]), Ok(state.clone()));
        assert!(acc.infer(&[&state, &state, &two]).is_err());
        assert!(acc.infer(&[&state, &two, &one]).is_err());
        assert_eq!(
            ActStep::Halted { threshold: 0.5 }.infer(&[&one, &one]),
            Ok(one.clone())
        );
        assert_eq!(ActStep::Cumulate.attrs(), vec![]);
        assert_eq!(weight.attrs()[0].to_string(), "threshold=0.99");
    }
}
