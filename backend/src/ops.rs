//! Kernels of the composite ops (attention, SwiGLU, MoE, ACT, LoRA, the
//! loop-header constants). See `kernels` for the generic ABI.
//!
//! Every kernel here uses the generic ABI; each template's header comment
//! lists its arguments. Vector-valued nodes (the LTI decay, the
//! loop-embedding vector, the LoRA scale row) are called with `rows = 1`
//! and ignore it.

use crate::vocab::ctx::{self, f32_literal};
use crate::vocab::{KernelCtx, Request};
use mythos_compiler::ir::args::SwiGluArgs;
use mythos_compiler::ir::{Dim, Graph, NodeId, Op};
use mythos_compiler::plan::ArgKind;

/// Scratch buffers above this many floats (64 KiB) live on the heap
/// (`memref.alloc`, freed on return) rather than the stack: a shared
/// expert of the largest presets is over a megabyte wide.
const STACK_FLOATS: u64 = 1 << 14;

/// The kernel of a composite node (`kernels::requests` routes these ops here).
pub(crate) fn request(
    g: &Graph,
    n: NodeId,
    op: &Op,
    args: Vec<ArgKind>,
    width: &dyn Fn(NodeId) -> u64,
) -> Request {
    let operands = g.operands(n);
    let shape = |o: NodeId| shape(g, o);
    match op {
        Op::SwiGlu(f) => {
            let gate = SwiGluArgs::of(*f, &operands).gate;
            let hidden = shape(gate)[0];
            Request::new(
                KernelCtx::SwiGlu(ctx::SwiGlu {
                    dim: width(operands[0]),
                    hidden,
                    heap: hidden > STACK_FLOATS,
                    prenorm: ctx::Prenorm::of(f.prenorm),
                    residual: f.residual,
                }),
                args,
            )
        }
        Op::Moe(m) => {
            let hidden = m.expert_dim;
            let shared_hidden = if m.shared > 0 { m.shared_dim } else { 0 };
            let hmax = hidden.max(shared_hidden);
            Request::new(
                KernelCtx::Moe(ctx::Moe {
                    dim: width(operands[0]),
                    experts: m.experts,
                    top_k: m.top_k,
                    hidden,
                    shared: m.shared,
                    shared_hidden,
                    hmax,
                    heap: hmax > STACK_FLOATS,
                    router_bias: m.router_bias,
                    prenorm: ctx::Prenorm::of(m.fusion.prenorm),
                    residual: m.fusion.residual,
                }),
                args,
            )
        }
        Op::ActHalt => Request::new(
            KernelCtx::ActHalt(ctx::Dim {
                dim: width(operands[0]),
            }),
            args,
        ),
        Op::LtiDecay => Request::new(
            KernelCtx::LtiDecay(ctx::Dim {
                dim: width(operands[0]),
            }),
            args,
        ),
        Op::LoopEmbeddingVec { channels, theta } => Request::new(
            KernelCtx::LoopEmbeddingVec(ctx::LoopEmbeddingVec {
                channels: *channels,
                freqs: channels.div_ceil(2),
                channels_f32: f32_literal(*channels as f64),
                theta: f32_literal(*theta),
                theta_text: format!("{theta:e}"),
            }),
            args,
        ),
        Op::LoraScale { max_iters } => Request::new(
            KernelCtx::LoraScale(ctx::LoraScale {
                max_iters: *max_iters,
                rank: width(n),
            }),
            args,
        ),
        Op::LoraApply { rank } => Request::new(
            KernelCtx::LoraApply(ctx::LoraApply {
                dim: width(operands[0]),
                rank: *rank,
            }),
            args,
        ),
        other => unreachable!(
            "`{}` has no composite kernel; kernels::requests routes it",
            other.name()
        ),
    }
}

/// The constant dims of a value (0 for symbolic ones).
pub(crate) fn shape(g: &Graph, o: NodeId) -> Vec<u64> {
    g.ty(o)
        .shape
        .iter()
        .map(|d| match d {
            Dim::Const(c) => *c,
            _ => 0,
        })
        .collect()
}
