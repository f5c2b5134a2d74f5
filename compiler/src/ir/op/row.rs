//! Row-local ops ([`Op::Row`]): each row of the result (`[.., width]`) is
//! computed from the same row of the operands (a weight or vector operand is
//! read whole). They are the steps of a rowwise kernel and of the CPU's row
//! evaluator, and (all but the ACT steps) what the `fuse` pass may group.
//! Everything the IR declares about one lives here: its name, attributes,
//! typing rule and whether it fuses; their FLOPs are not counted.

use super::act::ActStep;
use super::Typing;
use crate::ir::attrs::Attr;
use crate::ir::{DType, Dim, Op, TensorType, TypeError};

/// A row-local op, with its attributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowOp {
    /// `a + b`: two values of one type.
    Add,
    /// `x * w` with `w` broadcast over the last axis: `(x, w [width])`.
    Scale,
    /// Adds a vector to the first channels: `(h, v [c])`.
    AddPrefix,
    /// `a*h + be + out` (the LTI update with `B*e` and `A` given): `(h, be, out, a [d])`.
    LtiApply,
    /// `x * rsqrt(mean(x^2) + eps) * w`: `(x, w)`.
    RmsNorm { eps: f64 },
    /// Concatenation on the last axis: `(a, b)`.
    Concat,
    /// One step of the ACT rule on loop-carried values (see [`ActStep`]).
    Act(ActStep),
}

impl RowOp {
    /// Short name used by the printers.
    pub fn name(&self) -> &'static str {
        match self {
            RowOp::Add => "add",
            RowOp::Scale => "scale",
            RowOp::AddPrefix => "add_prefix",
            RowOp::LtiApply => "lti_apply",
            RowOp::RmsNorm { .. } => "rmsnorm",
            RowOp::Concat => "concat",
            RowOp::Act(step) => step.name(),
        }
    }

    /// Its attributes, in print order.
    pub fn attrs(&self) -> Vec<Attr> {
        match self {
            RowOp::RmsNorm { eps } => vec![Attr::Exp("eps", *eps)],
            RowOp::Act(step) => step.attrs(),
            RowOp::Add | RowOp::Scale | RowOp::AddPrefix | RowOp::LtiApply | RowOp::Concat => {
                Vec::new()
            }
        }
    }

    /// Whether a fused group may hold it. The ACT steps may not: their
    /// `[B, T, 1]` operands are read at column 0 of the row, which a GPU
    /// thread holding other columns of an earlier step could not do.
    pub fn fuses(&self) -> bool {
        match self {
            RowOp::Add
            | RowOp::Scale
            | RowOp::AddPrefix
            | RowOp::LtiApply
            | RowOp::RmsNorm { .. }
            | RowOp::Concat => true,
            RowOp::Act(_) => false,
        }
    }

    /// The width of a result row from the operands' row widths (`width(i)`
    /// of operand `i`): operand 0's, but for `concat` (the sum of both).
    pub fn result_width(&self, width: impl Fn(usize) -> usize) -> usize {
        match self {
            RowOp::Concat => width(0) + width(1),
            RowOp::Add
            | RowOp::Scale
            | RowOp::AddPrefix
            | RowOp::LtiApply
            | RowOp::RmsNorm { .. }
            | RowOp::Act(_) => width(0),
        }
    }

    /// The typing rule.
    pub fn infer(&self, t: &Typing) -> Result<TensorType, TypeError> {
        let err = |m: String| Err(TypeError(m));
        let ops = t.operands;
        let is_vector =
            |i: usize, n: u64| ops[i].dtype == DType::F32 && ops[i].shape == [Dim::Const(n)];
        match self {
            RowOp::RmsNorm { .. } => {
                t.arity(2)?;
                t.expect_shape(1, &[t.width(0)?])?;
                Ok(ops[0].clone())
            }
            RowOp::Add => {
                t.arity(2)?;
                if ops[0] != ops[1] {
                    return err(format!("add of {} and {}", ops[0], ops[1]));
                }
                Ok(ops[0].clone())
            }
            RowOp::Concat => {
                t.arity(2)?;
                let (a, b) = (ops[0], ops[1]);
                if a.shape.len() != b.shape.len()
                    || a.shape[..a.shape.len() - 1] != b.shape[..b.shape.len() - 1]
                {
                    return err(format!("concat of {a} and {b}"));
                }
                let mut r = a.clone();
                *r.shape.last_mut().expect("rank checked") = Dim::Const(t.width(0)? + t.width(1)?);
                Ok(r)
            }
            RowOp::Scale => {
                t.arity(2)?;
                if !is_vector(1, t.width(0)?) {
                    return err("scale takes (x, w) with w of x's width".into());
                }
                Ok(ops[0].clone())
            }
            RowOp::LtiApply => {
                t.arity(4)?;
                if ops[0] != ops[1] || ops[0] != ops[2] {
                    return err("lti_apply needs h, be and out of one type".into());
                }
                if !is_vector(3, t.width(0)?) {
                    return err("lti_apply takes the decay as a vector of the state's width".into());
                }
                Ok(ops[0].clone())
            }
            RowOp::AddPrefix => {
                t.arity(2)?;
                let v = t.vector(1)?;
                if v.len() != 1 || v[0] > t.width(0)? {
                    return err("add_prefix takes (h, v) with v no wider than h".into());
                }
                Ok(ops[0].clone())
            }
            RowOp::Act(step) => step.infer(ops),
        }
    }
}

impl Op {
    /// The op as a row-local op; `None` for every other op.
    pub fn row_op(&self) -> Option<RowOp> {
        if let Op::Row(r) = self {
            Some(*r)
        } else {
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_act_steps_are_row_local_but_never_fused() {
        let act = Op::Row(RowOp::Act(ActStep::Cumulate))
            .row_op()
            .expect("row-local");
        assert!(!act.fuses());
        let norm = RowOp::RmsNorm { eps: 1e-6 };
        assert_eq!(Op::Row(norm).row_op(), Some(norm));
        assert!(norm.fuses());
        assert_eq!(Op::Linear.row_op(), None);
        let widths = [3, 5];
        assert_eq!(RowOp::Concat.result_width(|i| widths[i]), 8);
        assert_eq!(RowOp::Add.result_width(|i| widths[i]), 3);
    }

    #[test]
    fn typing_checks_widths() {
        let (x, v4, v3) = (
            TensorType::activations(4),
            TensorType {
                dtype: DType::F32,
                shape: vec![Dim::Const(4)],
            },
            TensorType {
                dtype: DType::F32,
                shape: vec![Dim::Const(3)],
            },
        );
        let check = |op: RowOp, ops: &[&TensorType]| {
            op.infer(&Typing {
                name: op.name(),
                operands: ops,
            })
        };
        assert_eq!(check(RowOp::Scale, &[&x, &v4]), Ok(x.clone()));
        assert!(check(RowOp::Scale, &[&x, &v3]).is_err());
        assert_eq!(check(RowOp::AddPrefix, &[&x, &v3]), Ok(x.clone()));
        assert_eq!(
            check(RowOp::Concat, &[&x, &x]),
            Ok(TensorType::activations(8))
        );
        assert!(check(RowOp::Add, &[&x, &v4])
            .unwrap_err()
            .0
            .contains("add of"));
    }
}
