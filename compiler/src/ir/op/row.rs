//! Row-local ops: each row of the result (`[.., width]`) is computed from
//! the same row of the operands (a weight or vector operand is read whole).
//! They are the steps of a rowwise kernel and of the CPU's row evaluator,
//! and (all but the ACT steps) what the `fuse` pass may group.
//! [`Op::row_op`] is the one list of them.

use super::act::ActStep;
use crate::ir::Op;

/// A row-local op, with its attributes.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum RowOp {
    /// `a + b`.
    Add,
    /// `x * w`.
    Scale,
    /// `x` with `v` added to its first channels.
    AddPrefix,
    /// `a*h + be + out`.
    LtiApply,
    /// `x * rsqrt(mean(x^2) + eps) * w`.
    RmsNorm { eps: f64 },
    /// `[a, b]`.
    Concat,
    /// A step of the ACT rule.
    Act(ActStep),
}

impl RowOp {
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
}

impl Op {
    /// The op as a row-local op; `None` for every other op.
    pub fn row_op(&self) -> Option<RowOp> {
        match self {
            Op::Add => Some(RowOp::Add),
            Op::Scale => Some(RowOp::Scale),
            Op::AddPrefix => Some(RowOp::AddPrefix),
            Op::LtiApply => Some(RowOp::LtiApply),
            Op::RmsNorm { eps } => Some(RowOp::RmsNorm { eps: *eps }),
            Op::Concat => Some(RowOp::Concat),
            Op::Act(step) => Some(RowOp::Act(*step)),
            Op::Input
            | Op::Param(_)
            | Op::Weight(_)
            | Op::Embedding
            | Op::Linear
            | Op::Attention(_)
            | Op::SwiGlu(_)
            | Op::Moe(_)
            | Op::LoopEmbedding { .. }
            | Op::Lora { .. }
            | Op::LtiUpdate
            | Op::ActHalt
            | Op::Loop(_)
            | Op::Head(_)
            | Op::LtiDecay
            | Op::LoopEmbeddingVec { .. }
            | Op::LoraScale { .. }
            | Op::LoraApply { .. }
            | Op::Fused(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_act_steps_are_row_local_but_never_fused() {
        let act = Op::Act(ActStep::Cumulate).row_op().expect("row-local");
        assert!(!act.fuses());
        assert_eq!(
            Op::RmsNorm { eps: 1e-6 }.row_op(),
            Some(RowOp::RmsNorm { eps: 1e-6 })
        );
        assert!(Op::RmsNorm { eps: 1e-6 }.row_op().unwrap().fuses());
        assert_eq!(Op::Linear.row_op(), None);
    }
}
