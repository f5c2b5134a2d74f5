//! The region ops: the recurrence (`loop`, whose body graph and header are
//! the loop's, with its carried values) and the fused group of row-local
//! ops (`fused`, whose body runs one row at a time). Here: their structure,
//! the layout of a loop body's parameters, and their typing rules.

use super::Typing;
use crate::ir::attrs::Attr;
use crate::ir::{DType, Graph, Op, TensorType, TypeError};
use crate::model::Injection;

/// The recurrent stage. Body parameters: `Param 0` = state `h`, `Param 1` =
/// the prelude output `e`, `Param 2` = the iteration index `t` (`[]` i64),
/// then one per carried value (`Param 3..3+carried`), then one per
/// loop-invariant operand (hoisted out by the `hoist` pass), then the
/// header's outputs. Body outputs: the next `h`, then the next value of
/// each carried value, in order. The loop starts from `h = e` and every
/// carried value at zero. Operands: `h0`, `e`, then the invariants.
///
/// With ACT (OpenMythos's rule, reference item 8) the carried values are the
/// cumulative halting probability, the halted mask and the ACT-weighted sum
/// of states, all updated by `act.*` ops in the body: the loop yields the
/// weighted sum and may stop once every position has halted.
#[derive(Clone, Debug)]
pub struct LoopRegion {
    pub body: Graph,
    pub max_iters: u64,
    pub inject: Injection,
    /// Values carried from one iteration to the next beside `h`.
    pub carried: Vec<Carried>,
    /// The carried value that is a halted mask (1 = halted): a run that may
    /// exit early (inference) stops once it is 1 everywhere.
    pub halted: Option<usize>,
    /// The carried value the loop yields; `None` yields the last state.
    pub result: Option<usize>,
    /// Loop operands after `h0` and `e`: values computed once before the loop.
    pub invariants: usize,
    /// Per-iteration constants: a graph of `Param 0` = `t` and weights only
    /// (loop embedding vectors, LoRA scales). Its outputs depend on nothing
    /// but the iteration index, so a runtime computes them once per index and
    /// reuses them for every token. Empty (no outputs) until `hoist` fills it.
    pub header: Graph,
    /// Records each iteration's state and carried values (for its
    /// backward, [`crate::ir::LoopVjp`]): the loop's result is then the
    /// tuple `(result, tape)`. Only in a module made by `ir::grad`.
    pub record: bool,
}

/// A loop-carried value: `[B, T, width]`, zero before the first iteration.
#[derive(Clone, Debug, PartialEq)]
pub struct Carried {
    pub name: String,
    pub width: u64,
}

impl LoopRegion {
    /// The body parameter of carried value `i`.
    pub fn carried_param(&self, i: usize) -> usize {
        3 + i
    }

    /// The body parameter of the first invariant.
    pub fn first_invariant(&self) -> usize {
        3 + self.carried.len()
    }

    /// The body parameter of the first header output.
    pub fn first_header_param(&self) -> usize {
        self.first_invariant() + self.invariants
    }

    /// Types of the body's parameters, given the loop's operand types.
    pub fn param_types(&self, operands: &[&TensorType], dim: u64) -> Vec<TensorType> {
        let mut t: Vec<TensorType> = (0..3).map(|i| param_type(i, dim)).collect();
        t.extend(
            self.carried
                .iter()
                .map(|c| TensorType::activations(c.width)),
        );
        t.extend(operands.iter().skip(2).map(|&o| o.clone()));
        t.extend(
            self.header
                .outputs
                .iter()
                .map(|&o| self.header.ty(o).clone()),
        );
        t
    }
}

/// A fused group of row-local ops (the `fuse` pass): its body reads the
/// group's operands as `Param i` and yields one value; a backend runs it as
/// one kernel that never writes the intermediate values to memory. Body ops
/// work on one row (`[.., width]`) at a time: `add`, `scale`, `lti_apply`,
/// `add_prefix`, `rmsnorm`, `concat`.
#[derive(Clone, Debug)]
pub struct FusedOp {
    pub body: Graph,
}

impl FusedOp {
    /// Whether `op` may live in a fused body (a row-local op that fuses).
    pub fn admits(op: &Op) -> bool {
        op.row_op().is_some_and(|r| r.fuses())
    }
}

impl LoopRegion {
    /// The typing rule: `(h0, e, invariants...)` with `h0` and `e`
    /// activations of one type; the body yields the state and each carried
    /// value with their types; the result is the state's type or the
    /// carried result's.
    pub fn infer(&self, t: &Typing) -> Result<TensorType, TypeError> {
        let err = |m: String| Err(TypeError(m));
        let is_act = |o: &TensorType| o.dtype == DType::F32 && o.shape.len() == 3;
        t.arity(2 + self.invariants)?;
        if !is_act(t.operand(0)) || t.operands[0] != t.operands[1] {
            return err("loop takes (h0, e) activations of one type".into());
        }
        if self
            .header
            .nodes()
            .any(|n| matches!(self.header.op(n), Op::Param(i) if *i > 0))
        {
            return err("a loop header has one param, the iteration index".into());
        }
        let want_outputs = 1 + self.carried.len();
        if self.body.outputs.len() != want_outputs {
            return err(format!(
                "loop body must yield {want_outputs} values (the state and {} carried)",
                self.carried.len()
            ));
        }
        let h = self.body.ty(self.body.outputs[0]);
        if h != t.operands[0] {
            return err(format!("loop body yields {h}, state is {}", t.operands[0]));
        }
        for (c, &o) in self.carried.iter().zip(&self.body.outputs[1..]) {
            let (want, got) = (TensorType::activations(c.width), self.body.ty(o));
            if *got != want {
                return err(format!(
                    "carried `{}` is {want}, the body yields {got}",
                    c.name
                ));
            }
        }
        let carried = |i: Option<usize>, what: &str| match i {
            Some(i) if i >= self.carried.len() => Err(TypeError(format!(
                "the loop's {what} is carried value {i} of {}",
                self.carried.len()
            ))),
            _ => Ok(()),
        };
        carried(self.halted, "halted mask")?;
        carried(self.result, "result")?;
        if let Some(i) = self.halted {
            if self.carried[i].width != 1 {
                return err("a halted mask has width 1".into());
            }
        }
        Ok(match self.result {
            Some(i) => TensorType::activations(self.carried[i].width),
            None => t.operands[0].clone(),
        })
    }
}

impl LoopRegion {
    /// Its attributes, in print order (the carried values by name).
    pub fn attrs(&self) -> Vec<Attr> {
        let mut a = vec![
            Attr::Int("max_iters", self.max_iters),
            Attr::Text(format!("inject={}", self.inject.name())),
        ];
        if !self.carried.is_empty() {
            let carried: Vec<String> = self
                .carried
                .iter()
                .map(|c| format!("{}:{}", c.name, c.width))
                .collect();
            a.push(Attr::Text(format!("carried={}", carried.join(","))));
        }
        if let Some(i) = self.halted {
            a.push(Attr::Text(format!("halt_on={}", self.carried[i].name)));
        }
        if let Some(i) = self.result {
            a.push(Attr::Text(format!("result={}", self.carried[i].name)));
        }
        if self.invariants > 0 {
            a.push(Attr::Int("invariants", self.invariants as u64));
        }
        if self.record {
            a.push(Attr::Text("record".into()));
        }
        a
    }
}

impl FusedOp {
    /// The typing rule: one operand per body param; the result is the
    /// body's one output.
    pub fn infer(&self, t: &Typing) -> Result<TensorType, TypeError> {
        t.arity(fused_params(&self.body)?)?;
        if self.body.outputs.len() != 1 {
            return Err(TypeError("a fused group yields one value".into()));
        }
        Ok(self.body.ty(self.body.outputs[0]).clone())
    }
}

/// The number of params of a fused body (`Param 0..n`, each once).
pub fn fused_params(body: &Graph) -> Result<usize, TypeError> {
    let mut seen: Vec<usize> = body
        .nodes()
        .filter_map(|n| match body.op(n) {
            Op::Param(i) => Some(*i),
            _ => None,
        })
        .collect();
    seen.sort();
    if seen.iter().enumerate().any(|(i, &p)| i != p) {
        return Err(TypeError(format!(
            "fused body params are {seen:?}, not 0..{}",
            seen.len()
        )));
    }
    Ok(seen.len())
}

/// Types of the loop-body parameters for a state of width `dim`.
pub fn param_type(index: usize, dim: u64) -> TensorType {
    match index {
        2 => TensorType {
            dtype: DType::I64,
            shape: vec![],
        },
        _ => TensorType::activations(dim),
    }
}
