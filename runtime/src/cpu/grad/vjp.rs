//! The CPU semantics of the gradient transform's ops (`ir::grad`): `loss`,
//! `grad_sum`, and `vjp` of each forward op through the VJPs of this
//! module's siblings. A `vjp` yields one cotangent per forward operand, in
//! operand order (`None` for the ids, the iteration index and buffers,
//! which get none; zeros for the ACT masks, whose cotangent is zero).

use super::super::parts::{self, AttnParts};
use super::super::pool::Buf;
use super::super::{CpuRuntime, Ctx, Value};
use super::{attention as gqa_vjp, mla as mla_vjp, moe as moe_vjp, recurrence};
use mythos_compiler::ir::args::{AttnWeights, SwiGluArgs};
use mythos_compiler::ir::{Op, RowOp};
use std::sync::Arc;

/// The cotangents of a forward op's operands, as a tuple value.
pub(crate) type Cotangents<'a> = Vec<Option<Value<'a>>>;

fn act(v: Vec<f32>, width: usize) -> Option<Value<'static>> {
    Some(Value::Act(Buf::from(v), width))
}

fn vector(v: Vec<f32>) -> Option<Value<'static>> {
    Some(Value::Vector(Buf::from(v)))
}

/// `loss(logits, targets)`: the mean cross-entropy over scored targets.
pub(crate) fn loss<'a>(args: &[&Value<'a>], targets: &[i64]) -> Value<'a> {
    let (logits, vocab) = args[0].act();
    let (loss, _) = super::cross_entropy(logits, vocab, targets);
    Value::Vector(Buf::from(vec![loss as f32]))
}

/// `grad_sum(parts...)`, summed in operand order.
pub(crate) fn grad_sum<'a>(args: &[&Value<'a>]) -> Value<'a> {
    let mut out = args[0].clone();
    for a in &args[1..] {
        add_into(&mut out, a);
    }
    out
}

/// `acc += v` (values of one type).
pub(crate) fn add_into(acc: &mut Value, v: &Value) {
    let dst: &mut [f32] = match acc {
        Value::Act(b, _) | Value::Vector(b) => b,
        Value::Weight(w) => {
            *acc = Value::Vector(Buf::copy_of(w));
            return add_into(acc, v);
        }
        Value::Step(_) | Value::Ids | Value::Targets | Value::Tuple(_) => {
            unreachable!("gradients are f32 values")
        }
    };
    for (d, s) in dst.iter_mut().zip(v.floats()) {
        *d += s;
    }
}

impl<'a> CpuRuntime<'a> {
    /// `vjp(of)`: `args` are the forward operands then `dy` (none for the loss).
    pub(crate) fn vjp(&self, of: &Op, args: &[&Value<'a>], ctx: &Ctx) -> Value<'a> {
        let rows = ctx.rows();
        let (fwd, dy) = match of {
            Op::Loss => (args, &[][..]),
            _ => {
                let (dy, fwd) = args.split_last().expect("vjp takes dy last");
                (fwd, dy.floats())
            }
        };
        let mut out: Cotangents<'a> = vec![None; fwd.len()];
        match of {
            Op::Loss => {
                let (logits, vocab) = fwd[0].act();
                let (_, d) = super::cross_entropy(logits, vocab, ctx.local.targets);
                out[0] = act(d, vocab);
            }
            Op::Embedding => {
                let table = fwd[1].weight();
                let d = self.module().dim as usize;
                out[1] = vector(super::embedding(ctx.local.ids, dy, table.len() / d, d));
            }
            Op::Linear | Op::Head(_) => {
                let (x, c) = fwd[0].act();
                let w = fwd[1].weight();
                let (dx, dw) = super::linear(x, rows, c, w, w.len() / c, dy);
                out[0] = act(dx, c);
                out[1] = vector(dw);
            }
            Op::Row(RowOp::Add) => {
                let (_, c) = fwd[0].act();
                out[0] = act(dy.to_vec(), c);
                out[1] = act(dy.to_vec(), c);
            }
            Op::Row(RowOp::Concat) => {
                let (a, b) = (fwd[0].row_width(), fwd[1].row_width());
                let (mut da, mut db) = (Vec::new(), Vec::new());
                for row in dy.chunks_exact(a + b) {
                    da.extend_from_slice(&row[..a]);
                    db.extend_from_slice(&row[a..]);
                }
                out[0] = act(da, a);
                out[1] = act(db, b);
            }
            Op::Row(RowOp::RmsNorm { eps }) => {
                let (x, c) = fwd[0].act();
                let (dx, dw) = super::rmsnorm(x, c, fwd[1].weight(), *eps, dy);
                out[0] = act(dx, c);
                out[1] = vector(dw);
            }
            Op::Row(RowOp::Act(step)) => {
                let width = fwd[0].row_width().max(fwd[1].row_width());
                let inputs: Vec<&[f32]> = fwd.iter().map(|v| v.floats()).collect();
                let grads = recurrence::act(*step, &inputs, width, dy);
                for (i, g) in grads.into_iter().enumerate() {
                    let w = fwd[i].row_width();
                    out[i] = act(g.unwrap_or_else(|| vec![0.0; fwd[i].floats().len()]), w);
                }
            }
            Op::SwiGlu(f) => {
                let a = SwiGluArgs::of(*f, fwd);
                let (x, c) = a.x.act();
                let gate = a.gate.weight();
                let g = super::swiglu(
                    x,
                    rows,
                    c,
                    (gate, a.up.weight(), a.down.weight()),
                    gate.len() / c,
                    dy,
                );
                let at = SwiGluArgs::of(*f, &positions(fwd.len()));
                out[at.x] = act(g.dx, c);
                out[at.gate] = vector(g.gate);
                out[at.up] = vector(g.up);
                out[at.down] = vector(g.down);
            }
            Op::Attention(a) => {
                let view = a.args(fwd);
                let (x, c) = view.x.act();
                let rope = self.attention_rope(a, ctx);
                let at = a.args(&positions(fwd.len()));
                out[at.x] = match parts::attention(a.kind, view.weights) {
                    AttnParts::Gqa(w, (heads, kv_heads, head_dim)) => {
                        let d = gqa_vjp::GqaDims {
                            dim: c,
                            heads,
                            kv_heads,
                            head_dim,
                        };
                        let g = gqa_vjp::gqa(x, (ctx.batch, ctx.seq), d, &w, &rope, dy);
                        let AttnWeights::Gqa { wq, wk, wv, wo } = at.weights else {
                            unreachable!("the kind's weights")
                        };
                        out[wq] = vector(g.wq);
                        out[wk] = vector(g.wk);
                        out[wv] = vector(g.wv);
                        out[wo] = vector(g.wo);
                        act(g.dx, c)
                    }
                    AttnParts::Mla(w, dims) => {
                        let g = mla_vjp::mla(
                            x,
                            (ctx.batch, ctx.seq, c),
                            &dims,
                            &w,
                            a.norm_eps,
                            &rope,
                            dy,
                        );
                        let AttnWeights::Mla {
                            q_down,
                            q_norm,
                            q_up_nope,
                            q_up_rope,
                            kv_down,
                            kv_norm,
                            kv_up,
                            wo,
                        } = at.weights
                        else {
                            unreachable!("the kind's weights")
                        };
                        out[q_down] = vector(g.q_down);
                        out[q_norm] = vector(g.q_norm);
                        out[q_up_nope] = vector(g.q_up_nope);
                        out[q_up_rope] = vector(g.q_up_rope);
                        out[kv_down] = vector(g.kv_down);
                        out[kv_norm] = vector(g.kv_norm);
                        out[kv_up] = vector(g.kv_up);
                        out[wo] = vector(g.wo);
                        act(g.dx, c)
                    }
                };
            }
            Op::Moe(m) => {
                let a = m.args(fwd);
                let (x, c) = a.x.act();
                let (weights, dims) = parts::moe(m, &a);
                let g = moe_vjp::moe(x, rows, c, &weights, &dims, dy);
                if let Some(bias) = weights.bias {
                    self.record_load(bias, &g.load);
                }
                let at = m.args(&positions(fwd.len()));
                out[at.x] = act(g.dx, c);
                out[at.router] = vector(g.router);
                out[at.routed.gate] = vector(g.gate);
                out[at.routed.up] = vector(g.up);
                out[at.routed.down] = vector(g.down);
                if let (Some(e), Some((gate, up, down))) = (at.shared, g.shared) {
                    out[e.gate] = vector(gate);
                    out[e.up] = vector(up);
                    out[e.down] = vector(down);
                }
            }
            Op::LoopEmbedding { .. } => {
                let (_, c) = fwd[0].act();
                out[0] = act(dy.to_vec(), c);
            }
            Op::Lora { rank, max_iters } => {
                let (x, c) = fwd[0].act();
                let g = recurrence::lora(
                    x,
                    rows,
                    c,
                    (fwd[1].weight(), fwd[2].weight(), fwd[3].weight()),
                    (*rank as usize, *max_iters as usize, fwd[4].step()),
                    dy,
                );
                out[0] = act(g.dx, c);
                out[1] = vector(g.down);
                out[2] = vector(g.b);
                out[3] = vector(g.scale);
            }
            Op::LtiUpdate => {
                let (h, c) = fwd[0].act();
                let (e, _) = fwd[1].act();
                let g = super::lti_update(
                    (h, e),
                    (fwd[3].weight(), fwd[4].weight()[0], fwd[5].weight()),
                    dy,
                );
                out[0] = act(g.h, c);
                out[1] = act(g.e, c);
                out[2] = act(g.out, c);
                out[3] = vector(g.log_a);
                out[4] = vector(vec![g.log_dt]);
                out[5] = vector(g.b);
            }
            Op::ActHalt => {
                let (h, c) = fwd[0].act();
                let (dh, dw, db) =
                    recurrence::act_halt(h, c, fwd[1].weight(), fwd[2].weight()[0], dy);
                out[0] = act(dh, c);
                out[1] = vector(dw);
                out[2] = vector(vec![db]);
            }
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
            | Op::GradSum
            | Op::Row(RowOp::Scale | RowOp::AddPrefix | RowOp::LtiApply) => {
                unreachable!("ir::grad emits a vjp only where Op::has_vjp")
            }
        }
        Value::Tuple(Arc::new(out))
    }
}

fn positions(n: usize) -> Vec<usize> {
    (0..n).collect()
}
