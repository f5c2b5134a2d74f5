//! The ops of reverse-mode differentiation (what `ir::grad` emits): the
//! training targets, the loss, the vector-Jacobian product of a forward op,
//! the recurrence's backward, tuple element picks and gradient sums. Here:
//! their structure and typing rules. Their CPU semantics are the VJPs in
//! `runtime/src/cpu/grad/` (each checked against finite differences).
//!
//! Three of them have several results, a tuple ([`results`]): `vjp` (one
//! cotangent per forward operand), `loop_vjp` (the cotangents of the
//! loop's operands and the body weights' gradients) and a `loop` that
//! records its iterations (its result and the tape). Only `pick` reads a
//! tuple; the graph keeps the element types beside the node
//! ([`crate::ir::Graph::results`]).

use super::Typing;
use crate::ir::attrs::Attr;
use crate::ir::{infer, DType, Dim, LoopRegion, Op, TensorType, TypeError, Weight, WeightId};

/// The backward of the recurrence. `region` is the forward loop's
/// structure, with `body` the backward body: its params are the forward
/// body's (`h_t`, `e`, `t`, the carried values at `t`, the invariants, the
/// header's outputs) followed by the cotangents of the forward body's
/// outputs (`dh_{t+1}`, then one per carried value). It recomputes the
/// forward body from them and yields `dh_t`, `de`, the carried values'
/// cotangents, the invariants' and then the gradient of each weight in
/// `weights` (the body's own weights) for that iteration.
///
/// Operands: the forward loop's `(h0, e, invariants...)`, its tape (what a
/// recording loop yields second: each iteration's `h_t` and carried
/// values) and the cotangent of the loop's result. It runs the iterations
/// the tape holds, last first, and yields the tuple `(dh0, de,
/// dinvariants..., dweights...)`, the per-iteration contributions to `de`,
/// the invariants and the weights summed.
///
/// A body param the forward body never reads (`e` of a loop without input
/// injection) has a zero cotangent: it is listed in `zero` (by its index
/// among `dh, de, carried..., invariants...`), the body does not yield it
/// and the tuple holds no value for it (nothing picks one).
#[derive(Clone, Debug)]
pub struct LoopVjp {
    pub region: LoopRegion,
    pub weights: Vec<WeightId>,
    pub zero: Vec<usize>,
}

impl LoopVjp {
    /// The cotangents the backward body accounts for before the weight
    /// gradients: `dh`, `de`, one per carried value, one per invariant.
    pub fn activation_outputs(&self) -> usize {
        2 + self.region.carried.len() + self.region.invariants
    }

    /// Of those, the ones the body yields (all but `zero`).
    pub fn yielded(&self) -> usize {
        self.activation_outputs() - self.zero.len()
    }

    /// The backward body's first cotangent param (`dh_{t+1}`).
    pub fn first_cotangent_param(&self, header_outputs: usize) -> usize {
        self.region.first_header_param() + header_outputs
    }

    pub fn attrs(&self) -> Vec<Attr> {
        let mut a = self.region.attrs();
        a.push(Attr::Int("weights", self.weights.len() as u64));
        if !self.zero.is_empty() {
            a.push(Attr::Int("zero", self.zero.len() as u64));
        }
        a
    }
}

/// The tape of a recording loop: per iteration run (`N`), each position's
/// state and carried values side by side.
pub fn tape_type(region: &LoopRegion, dim: u64) -> TensorType {
    let width = dim + region.carried.iter().map(|c| c.width).sum::<u64>();
    TensorType {
        dtype: DType::F32,
        shape: vec![Dim::Iters, Dim::Batch, Dim::Seq, Dim::Const(width)],
    }
}

/// The scalar loss's type.
pub fn scalar() -> TensorType {
    TensorType {
        dtype: DType::F32,
        shape: Vec::new(),
    }
}

/// The element types of a tuple-valued op, or `None` for an op with one
/// result (typed by [`infer`]). `operands` are its operand types.
pub fn results(
    op: &Op,
    operands: &[&TensorType],
    weights: &[Weight],
    dim: u64,
) -> Option<Result<Vec<TensorType>, TypeError>> {
    match op {
        Op::Vjp(of) => Some(vjp_results(of, operands, weights)),
        Op::LoopVjp(l) => Some(loop_vjp_results(l, operands, weights)),
        Op::Loop(r) if r.record => Some(
            r.infer(&Typing {
                name: "loop",
                operands,
            })
            .map(|t| vec![t, tape_type(r, dim)]),
        ),
        _ => None,
    }
}

/// `vjp(op)`: `(operands..., dy)` (the loss takes no `dy`: its seed is 1).
fn vjp_results(
    of: &Op,
    operands: &[&TensorType],
    weights: &[Weight],
) -> Result<Vec<TensorType>, TypeError> {
    let forward = match of {
        Op::Loss => operands,
        _ => {
            let (dy, fwd) = operands
                .split_last()
                .ok_or_else(|| TypeError("vjp takes its op's operands and dy".into()))?;
            let y = infer(of, fwd, weights)?;
            if &y != *dy {
                return Err(TypeError(format!(
                    "vjp of {}: dy is {dy}, the op yields {y}",
                    of.name()
                )));
            }
            fwd
        }
    };
    if let Op::Loss = of {
        infer(of, forward, weights)?;
    }
    Ok(forward.iter().map(|&t| t.clone()).collect())
}

/// `loop_vjp`: `(h0, e, invariants..., tape, dresult)`.
fn loop_vjp_results(
    l: &LoopVjp,
    operands: &[&TensorType],
    weights: &[Weight],
) -> Result<Vec<TensorType>, TypeError> {
    let n = 2 + l.region.invariants;
    if operands.len() != n + 2 {
        return Err(TypeError(format!(
            "loop_vjp takes {} operands, has {}",
            n + 2,
            operands.len()
        )));
    }
    let mut out: Vec<TensorType> = operands[..n].iter().map(|&t| t.clone()).collect();
    for w in &l.weights {
        let w = weights
            .get(w.0 as usize)
            .ok_or_else(|| TypeError(format!("weight w{} does not exist", w.0)))?;
        out.push(TensorType {
            dtype: DType::F32,
            shape: w.shape.iter().map(|&d| Dim::Const(d)).collect(),
        });
    }
    let want = l.yielded() + l.weights.len();
    if l.region.body.outputs.len() != want {
        return Err(TypeError(format!(
            "the loop_vjp body must yield {want} values, yields {}",
            l.region.body.outputs.len()
        )));
    }
    Ok(out)
}

/// `targets`: the training targets `[B, T]` i64.
pub fn targets(t: &Typing) -> Result<TensorType, TypeError> {
    t.arity(0)?;
    Ok(TensorType {
        dtype: DType::I64,
        shape: vec![Dim::Batch, Dim::Seq],
    })
}

/// `loss`: `(logits [B, T, V], targets [B, T] i64)` -> `[]`.
pub fn loss(t: &Typing) -> Result<TensorType, TypeError> {
    t.arity(2)?;
    let (logits, targets) = (t.operand(0), t.operand(1));
    if logits.dtype != DType::F32
        || logits.shape.len() != 3
        || targets.dtype != DType::I64
        || targets.shape[..] != logits.shape[..2]
    {
        return Err(TypeError(
            "loss takes (logits [B, T, V], targets [B, T] i64)".into(),
        ));
    }
    Ok(scalar())
}

/// `grad_sum`: one or more values of one type.
pub fn grad_sum(t: &Typing) -> Result<TensorType, TypeError> {
    if t.is_empty() || t.operands.iter().any(|o| o != &t.operands[0]) {
        return Err(TypeError(
            "grad_sum takes one or more values of one type".into(),
        ));
    }
    Ok(t.operand(0).clone())
}
