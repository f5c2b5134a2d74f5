//! What the IR declares about each op, side by side: [`Op::decl`] (name,
//! effect, fusion flags), [`Op::attrs`] (what the text form prints and CSE
//! compares), [`infer`] (the typing rule) and [`Op::flops`] (the cost).
//! Each is one exhaustive match, so a new `Op` variant is pointed to all
//! four here; an op family with its own module under `ir/op/` (attention,
//! MoE, the row-local ops, the regions) holds the rules and the arms
//! delegate to it.

use super::attrs::Attr;
use super::{
    args, op, AttentionOp, DType, Dim, Effect, Fusion, LoopRegion, MoeOp, Op, RowOp, TensorType,
    TypeError, Weight,
};

/// What [`Op::decl`] declares about an op.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct OpDecl {
    /// Short name used by the printers (`attention.gqa`, `act.weight`).
    pub name: &'static str,
    pub effect: Effect,
    /// The op's fusion flags; `None` for ops that cannot fuse.
    pub fusion: Option<Fusion>,
}

impl Op {
    /// What the IR declares about the op besides its typing rule: its
    /// name, its effect and what may fuse into it. One exhaustive match, so
    /// a new op states all three in one place.
    pub fn decl(&self) -> OpDecl {
        use Effect::{CacheWrite, Pure, Region, Source};
        let (name, effect, fusion) = match self {
            Op::Input => ("input", Source, None),
            Op::Param(_) => ("param", Source, None),
            Op::Weight(_) => ("weight", Source, None),
            Op::Embedding => ("embedding", Pure, None),
            Op::Linear => ("linear", Pure, None),
            Op::Row(r) => (r.name(), Pure, None),
            Op::Attention(a) => (a.name(), CacheWrite, Some(a.fusion)),
            Op::SwiGlu(f) => ("swiglu", Pure, Some(*f)),
            Op::Moe(m) => ("moe", Pure, Some(m.fusion)),
            Op::LoopEmbedding { .. } => ("loop_embedding", Pure, None),
            Op::Lora { .. } => ("lora", Pure, None),
            Op::LtiUpdate => ("lti_update", Pure, None),
            Op::ActHalt => ("act_halt", Pure, None),
            Op::Loop(_) => ("loop", Region, None),
            Op::Head(f) => ("head", Pure, Some(*f)),
            Op::LtiDecay => ("lti_decay", Pure, None),
            Op::LoopEmbeddingVec { .. } => ("loop_embedding_vec", Pure, None),
            Op::LoraScale { .. } => ("lora_scale", Pure, None),
            Op::LoraApply { .. } => ("lora_apply", Pure, None),
            // A fused group is row-local arithmetic on its operands.
            Op::Fused(_) => ("fused", Pure, None),
            Op::Targets => ("targets", Source, None),
            Op::Loss => ("loss", Pure, None),
            Op::Vjp(_) => ("vjp", Pure, None),
            Op::LoopVjp(_) => ("loop_vjp", Region, None),
            Op::Pick(_) => ("pick", Pure, None),
            Op::GradSum => ("grad_sum", Pure, None),
        };
        OpDecl {
            name,
            effect,
            fusion,
        }
    }

    /// Short name used by the printers.
    pub fn name(&self) -> &'static str {
        self.decl().name
    }

    /// The op's effect class.
    pub fn effect(&self) -> Effect {
        self.decl().effect
    }

    /// What was fused into this op (default for ops that cannot fuse).
    pub fn fusion(&self) -> Fusion {
        self.fusion_slot().unwrap_or_default()
    }

    /// The op's fusion flags, `None` for ops that cannot fuse.
    fn fusion_slot(&self) -> Option<Fusion> {
        self.decl().fusion
    }

    /// The same op with `fusion` (for ops that can fuse; others unchanged).
    pub fn with_fusion(&self, fusion: Fusion) -> Op {
        match self {
            Op::Attention(a) => Op::Attention(AttentionOp {
                fusion,
                ..a.clone()
            }),
            Op::SwiGlu(_) => Op::SwiGlu(fusion),
            Op::Head(_) => Op::Head(fusion),
            Op::Moe(m) => Op::Moe(MoeOp { fusion, ..*m }),
            other => {
                debug_assert!(other.fusion_slot().is_none());
                other.clone()
            }
        }
    }

    /// Whether a norm can move into this op's prologue and a residual add
    /// into its epilogue (`residual` is not offered by the head).
    pub fn can_fuse(&self) -> (bool, bool) {
        match self {
            Op::Head(_) => (true, false),
            op => {
                let fusable = op.fusion_slot().is_some();
                (fusable, fusable)
            }
        }
    }

    /// Whether reverse-mode differentiation (`ir::grad`) has a backward
    /// rule for the op: a `vjp` of it yields its operands' cotangents (the
    /// rules are `runtime/src/cpu/grad/`'s). The loop is differentiated by
    /// a `loop_vjp` instead; fused, hoisted and absorbed forms (what the
    /// passes make) have none yet.
    pub fn has_vjp(&self) -> bool {
        match self {
            Op::Embedding
            | Op::Linear
            | Op::LoopEmbedding { .. }
            | Op::Lora { .. }
            | Op::LtiUpdate
            | Op::ActHalt
            | Op::Loss => true,
            Op::Row(r) => match r {
                RowOp::Add | RowOp::RmsNorm { .. } | RowOp::Act(_) | RowOp::Concat => true,
                RowOp::Scale | RowOp::AddPrefix | RowOp::LtiApply => false,
            },
            Op::Head(f) | Op::SwiGlu(f) => f.is_none(),
            Op::Attention(a) => a.fusion.is_none() && !a.absorb,
            Op::Moe(m) => m.fusion.is_none(),
            Op::Input
            | Op::Param(_)
            | Op::Weight(_)
            | Op::Targets
            | Op::Loop(_)
            | Op::LtiDecay
            | Op::LoopEmbeddingVec { .. }
            | Op::LoraScale { .. }
            | Op::LoraApply { .. }
            | Op::Fused(_)
            | Op::Vjp(_)
            | Op::LoopVjp(_)
            | Op::Pick(_)
            | Op::GradSum => false,
        }
    }

    /// The loop region of a `loop` or `loop_vjp` (its header and body).
    pub fn loop_region(&self) -> Option<&LoopRegion> {
        match self {
            Op::Loop(r) => Some(r),
            Op::LoopVjp(l) => Some(&l.region),
            _ => None,
        }
    }

    /// Ops that compute something (not inputs, params or weights).
    pub fn is_compute(&self) -> bool {
        !matches!(self, Op::Input | Op::Param(_) | Op::Weight(_) | Op::Targets)
    }
}

impl Op {
    /// The op's attributes, in print order.
    pub fn attrs(&self) -> Vec<Attr> {
        match self {
            Op::Param(i) => vec![Attr::Index(*i)],
            Op::Weight(id) => vec![Attr::Weight(*id)],
            Op::Row(r) => r.attrs(),
            Op::Attention(a) => a.attrs(),
            Op::Moe(m) => m.attrs(),
            Op::SwiGlu(f) | Op::Head(f) => vec![Attr::Fusion(*f)],
            Op::LoopEmbedding { channels, theta } | Op::LoopEmbeddingVec { channels, theta } => {
                vec![
                    Attr::Int("channels", *channels),
                    Attr::Float("theta", *theta),
                ]
            }
            Op::Lora { rank, max_iters } => {
                vec![Attr::Int("rank", *rank), Attr::Int("max_iters", *max_iters)]
            }
            Op::LoraScale { max_iters } => vec![Attr::Int("max_iters", *max_iters)],
            Op::LoraApply { rank } => vec![Attr::Int("rank", *rank)],
            Op::Loop(r) => r.attrs(),
            Op::Fused(f) => {
                let ops: Vec<&str> = f
                    .body
                    .topo_order()
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|&n| f.body.op(n).is_compute())
                    .map(|n| f.body.op(n).name())
                    .collect();
                vec![Attr::Text(ops.join("+"))]
            }
            // The forward op's name, then its attributes.
            Op::Vjp(of) => {
                let mut a = vec![Attr::Text(of.name().into())];
                a.extend(of.attrs());
                a
            }
            Op::LoopVjp(l) => l.attrs(),
            Op::Pick(k) => vec![Attr::Index(*k)],
            // No attributes: everything they compute is in their operands.
            Op::Input
            | Op::Embedding
            | Op::Linear
            | Op::LtiUpdate
            | Op::ActHalt
            | Op::LtiDecay
            | Op::Targets
            | Op::Loss
            | Op::GradSum => Vec::new(),
        }
    }
}

/// What an op's FLOP count depends on besides its attributes.
pub struct CostInputs<'a> {
    /// The model width.
    pub dim: u64,
    pub vocab: u64,
    /// The op's weight operands, in operand order.
    pub weights: &'a [&'a Weight],
}

/// FLOPs per token of one op (docs/inspect.md: matrix products at 2 per
/// multiply-add; elementwise work not counted): `per_token`, plus `per_key`
/// for every key a token attends to.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct OpFlops {
    pub per_token: f64,
    pub per_key: f64,
}

impl Op {
    /// The op's FLOPs per token (a loop counts its body separately).
    pub fn flops(&self, cx: &CostInputs) -> OpFlops {
        let d = cx.dim as f64;
        // The matrix products with the op's 2-D weights (not a norm's vector).
        let products = || -> f64 {
            cx.weights
                .iter()
                .filter(|w| w.shape.len() == 2)
                .map(|w| 2.0 * w.numel() as f64)
                .sum()
        };
        let per_token = match self {
            Op::Linear => 2.0 * cx.weights[0].numel() as f64,
            Op::Head(_) => 2.0 * d * cx.vocab as f64,
            Op::SwiGlu(_) => products(),
            Op::Moe(m) => m.flops_per_token(d),
            Op::Lora { rank, .. } | Op::LoraApply { rank } => 4.0 * d * *rank as f64,
            Op::ActHalt => 2.0 * d,
            Op::Attention(a) => {
                return OpFlops {
                    per_token: products(),
                    per_key: a.flops_per_key(),
                }
            }
            // A backward costs about twice its forward (the products with
            // the input's and with the weight's cotangent).
            Op::Vjp(of) => {
                let f = of.flops(cx);
                return OpFlops {
                    per_token: 2.0 * f.per_token,
                    per_key: 2.0 * f.per_key,
                };
            }
            // No matrix products: gathers, row-local arithmetic (fused
            // groups hold only such ops), per-iteration constants, and the
            // loop (its body is counted on its own).
            Op::Input
            | Op::Param(_)
            | Op::Weight(_)
            | Op::Embedding
            | Op::Row(_)
            | Op::LoopEmbedding { .. }
            | Op::LtiUpdate
            | Op::Loop(_)
            | Op::LtiDecay
            | Op::LoopEmbeddingVec { .. }
            | Op::LoraScale { .. }
            | Op::Fused(_)
            | Op::Targets
            | Op::Loss
            | Op::LoopVjp(_)
            | Op::Pick(_)
            | Op::GradSum => 0.0,
        };
        OpFlops {
            per_token,
            per_key: 0.0,
        }
    }
}

/// The result type of `op` given its operand types and the weight table:
/// the typing rules of the IR, shared by the builder and the verifier.
pub fn infer(
    op: &Op,
    operands: &[&TensorType],
    weights: &[Weight],
) -> Result<TensorType, TypeError> {
    let err = |m: String| Err(TypeError(m));
    let typing = op::Typing {
        name: op.name(),
        operands,
    };
    let arity = |n: usize| typing.arity(n);
    let width = |i: usize| typing.width(i);
    let vector = |i: usize| typing.vector(i);
    let expect_shape = |i: usize, want: &[u64]| typing.expect_shape(i, want);
    // Operand positions, for the typed views (`args`) of the composites.
    let positions: Vec<usize> = (0..operands.len()).collect();
    let fusion = op.fusion();
    if let Some(_eps) = fusion.prenorm {
        // `(x, norm, rest...)`: check the norm weight, then type the op without it.
        if operands.len() < 2 {
            return err(format!("fused {} needs its norm weight", op.name()));
        }
        expect_shape(1, &[width(0)?])?;
        let plain = op.with_fusion(Fusion {
            prenorm: None,
            ..fusion
        });
        let (x, _, own) = fusion.split(operands);
        let mut rest: Vec<&TensorType> = vec![x];
        rest.extend(own);
        return infer(&plain, &rest, weights);
    }
    if fusion.residual && !op.can_fuse().1 {
        return err(format!("{} cannot take a residual", op.name()));
    }
    let is_vector =
        |i: usize, n: u64| operands[i].dtype == DType::F32 && operands[i].shape == [Dim::Const(n)];
    let is_step = |i: usize| operands[i].dtype == DType::I64 && operands[i].shape.is_empty();
    match op {
        Op::Input => {
            arity(0)?;
            Ok(TensorType {
                dtype: DType::I64,
                shape: vec![Dim::Batch, Dim::Seq],
            })
        }
        Op::Param(_) => err("param types are given by the loop region".into()),
        Op::Weight(id) => {
            arity(0)?;
            let w = weights
                .get(id.0 as usize)
                .ok_or_else(|| TypeError(format!("weight w{} does not exist", id.0)))?;
            Ok(TensorType {
                dtype: DType::F32,
                shape: w.shape.iter().map(|&d| Dim::Const(d)).collect(),
            })
        }
        Op::Embedding => {
            arity(2)?;
            if operands[0].dtype != DType::I64 {
                return err("embedding ids must be i64".into());
            }
            let t = vector(1)?;
            if t.len() != 2 {
                return err("embedding table must be [vocab, dim]".into());
            }
            let mut shape = operands[0].shape.clone();
            shape.push(Dim::Const(t[1]));
            Ok(TensorType {
                dtype: DType::F32,
                shape,
            })
        }
        Op::Linear | Op::Head(_) => {
            arity(2)?;
            let w = vector(1)?;
            if w.len() != 2 || w[1] != width(0)? {
                return err(format!(
                    "{}: weight {w:?} does not take width {}",
                    op.name(),
                    width(0)?
                ));
            }
            let mut t = operands[0].clone();
            *t.shape.last_mut().expect("width checked") = Dim::Const(w[0]);
            Ok(t)
        }
        Op::Row(r) => r.infer(&typing),
        Op::Attention(a) => a.infer(&typing),
        Op::SwiGlu(f) => {
            arity(1 + args::SwiGluArgs::<usize>::OWN)?;
            let a = args::SwiGluArgs::of(*f, &positions);
            let d = width(a.x)?;
            let h = vector(a.gate)?.first().copied().unwrap_or(0);
            expect_shape(a.gate, &[h, d])?;
            expect_shape(a.up, &[h, d])?;
            expect_shape(a.down, &[d, h])?;
            Ok(operands[0].clone())
        }
        Op::Moe(m) => m.infer(&typing),
        Op::LoopEmbedding { channels, .. } => {
            arity(2)?;
            if *channels > width(0)? || !operands[1].shape.is_empty() {
                return err("loop_embedding takes (h, t) with channels <= width".into());
            }
            Ok(operands[0].clone())
        }
        Op::Lora { rank, max_iters } => {
            arity(5)?;
            let d = width(0)?;
            expect_shape(1, &[*rank, d])?;
            expect_shape(2, &[*rank, d])?;
            expect_shape(3, &[*max_iters, *rank])?;
            Ok(operands[0].clone())
        }
        Op::LtiUpdate => {
            arity(6)?;
            if operands[0] != operands[1] || operands[0] != operands[2] {
                return err("lti_update needs h, e and out of one type".into());
            }
            let d = width(0)?;
            expect_shape(3, &[d])?;
            expect_shape(4, &[1])?;
            expect_shape(5, &[d])?;
            Ok(operands[0].clone())
        }
        Op::ActHalt => {
            arity(3)?;
            expect_shape(1, &[1, width(0)?])?;
            expect_shape(2, &[1])?;
            let mut t = operands[0].clone();
            *t.shape.last_mut().expect("activation") = Dim::Const(1);
            Ok(t)
        }
        Op::Loop(region) => region.infer(&typing),
        Op::LtiDecay => {
            arity(2)?;
            let d = vector(0)?;
            if d.len() != 1 {
                return err("lti_decay takes (log_A [d], log_dt [1])".into());
            }
            expect_shape(1, &[1])?;
            Ok(operands[0].clone())
        }
        Op::LoopEmbeddingVec { channels, .. } => {
            arity(1)?;
            if !is_step(0) {
                return err("loop_embedding_vec takes the iteration index".into());
            }
            Ok(TensorType {
                dtype: DType::F32,
                shape: vec![Dim::Const(*channels)],
            })
        }
        Op::LoraScale { max_iters } => {
            arity(2)?;
            let s = vector(0)?;
            if s.len() != 2 || s[0] != *max_iters || !is_step(1) {
                return err("lora_scale takes (scale [max_iters, rank], t)".into());
            }
            Ok(TensorType {
                dtype: DType::F32,
                shape: vec![Dim::Const(s[1])],
            })
        }
        Op::LoraApply { rank } => {
            arity(4)?;
            let d = width(0)?;
            expect_shape(1, &[*rank, d])?;
            expect_shape(2, &[*rank, d])?;
            if !is_vector(3, *rank) {
                return err("lora_apply takes the scale row as a vector of the rank".into());
            }
            Ok(operands[0].clone())
        }
        Op::Fused(f) => f.infer(&typing),
        Op::Targets => op::grad::targets(&typing),
        Op::Loss => op::grad::loss(&typing),
        Op::GradSum => op::grad::grad_sum(&typing),
        Op::Pick(_) => err("a pick's type is its tuple's element type".into()),
        Op::Vjp(_) | Op::LoopVjp(_) => err(format!("{} is typed by its results", op.name())),
    }
}
