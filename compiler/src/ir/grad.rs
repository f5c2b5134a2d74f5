//! Reverse-mode differentiation as a transform of the IR: a forward module
//! (the logits of `input`) becomes a module computing the mean next-token
//! cross-entropy against `targets` and the gradient of every parameter.
//!
//! The result is an ordinary module that the verifier, the printer and the
//! executor handle like a forward one. Its main graph keeps the forward
//! computation, adds `targets` and `loss`, then the backward: for each node,
//! last first, a `vjp` of its op (operands, then the cotangent of its
//! result) whose tuple holds its operands' cotangents, picked and summed
//! (`grad_sum`) where a value has several uses. The recurrence is run as a
//! recording loop (each iteration's state and carried values on a tape)
//! and differentiated by a `loop_vjp`: its body recomputes one iteration of
//! the forward body from the tape and runs that body's backward, so only
//! each iteration's inputs are stored (recomputation per loop iteration).
//! Buffers (`router_bias`) and integer values get no cotangent; what the
//! VJPs compute (through the renormalized top-k scores but not the choice,
//! not through the ACT masks, zero outside the LTI clamp) is
//! `runtime/src/cpu/grad/`'s.
//!
//! It differentiates the unoptimized module (`-O0`): the fused and hoisted
//! forms the passes make have no VJP rules yet.

use super::op::grad::{results, scalar, tape_type};
use super::{Graph, LoopRegion, LoopVjp, Module, NodeId, Op, TensorType, Weight, WeightId};
use std::collections::{BTreeMap, HashMap};

/// Why a module cannot be differentiated.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum GradError {
    #[error("`{op}` (%{node}, {label}) has no backward rule; differentiate the unoptimized module (-O0)")]
    NoRule {
        op: &'static str,
        node: usize,
        label: String,
    },
    #[error("a loop header or a nested loop cannot be differentiated yet; use -O0")]
    Nested,
    #[error("the module is already a gradient module")]
    AlreadyGradient,
}

/// The gradient module of `m`: outputs the loss, then the gradient of each
/// weight in its `gradients` list (every parameter the loss depends on, in
/// weight-table order; buffers have none).
pub fn gradient(m: &Module) -> Result<Module, GradError> {
    if !m.gradients.is_empty() {
        return Err(GradError::AlreadyGradient);
    }
    let mut g = m.graph.clone();
    let logits = g.outputs[0];
    record_loops(&mut g, m.dim);
    let order = g.topo_order().expect("a verified module is acyclic");
    let targets = g.add(Op::Targets, &[], targets_type(), "targets");
    let loss = g.add(Op::Loss, &[logits, targets], scalar(), "loss");
    let kv_layers = m
        .graphs()
        .iter()
        .flat_map(|(_, info)| {
            let g = info.graph;
            g.nodes().filter_map(move |n| match g.op(n) {
                Op::Attention(a) => Some(a.cache.layer + 1),
                _ => None,
            })
        })
        .max()
        .unwrap_or(0);
    let mut sweep = Sweep::new(&m.weights, m.dim, kv_layers);
    let dlogits = sweep.vjp(&mut g, loss, None)?;
    sweep.contribute(logits, dlogits[0].expect("logits are differentiable"));
    sweep.run(&mut g, &order)?;
    let mut outputs = vec![loss];
    let mut gradients = Vec::new();
    for (w, parts) in std::mem::take(&mut sweep.weights) {
        outputs.push(sum(&mut g, &parts, &m.weights[w.0 as usize].name));
        gradients.push(w);
    }
    g.outputs = outputs;
    Ok(Module {
        name: m.name.clone(),
        dim: m.dim,
        vocab: m.vocab,
        max_seq: m.max_seq,
        weights: m.weights.clone(),
        graph: g,
        gradients,
    })
}

fn targets_type() -> TensorType {
    infer_of(&Op::Targets, &[])
}

fn infer_of(op: &Op, operands: &[&TensorType]) -> TensorType {
    super::infer(op, operands, &[]).expect("the transform builds well-typed nodes")
}

/// Makes every loop of `g` a recording loop: a tuple `(result, tape)`
/// whose result a `pick 0` hands to the loop's users.
fn record_loops(g: &mut Graph, dim: u64) {
    let loops: Vec<NodeId> = g
        .nodes()
        .filter(|&n| matches!(g.op(n), Op::Loop(_)))
        .collect();
    for l in loops {
        let Op::Loop(region) = g.op(l).clone() else {
            unreachable!("filtered to loops")
        };
        let region = LoopRegion {
            record: true,
            ..*region
        };
        let operands = g.operands(l);
        let ty = g.ty(l).clone();
        let label = g.node(l).label.clone();
        let tape = tape_type(&region, dim);
        let rec = g.add_tuple(
            Op::Loop(Box::new(region)),
            &operands,
            vec![ty.clone(), tape],
            label.clone(),
        );
        let result = g.add(Op::Pick(0), &[rec], ty, label);
        g.replace_uses(l, result);
        g.remove(l);
    }
}

/// The sum of gradient contributions (one needs no sum).
fn sum(g: &mut Graph, parts: &[NodeId], label: &str) -> NodeId {
    match parts {
        [one] => *one,
        _ => {
            let ty = g.ty(parts[0]).clone();
            g.add(Op::GradSum, parts, ty, format!("grad {label}"))
        }
    }
}

/// One reverse sweep over a graph: the cotangent contributions of each
/// value, and what reached the weights and the params.
struct Sweep<'w> {
    table: &'w [Weight],
    dim: u64,
    /// KV-cache layers the forward module uses: a backward body's
    /// recomputed attention takes layers past them.
    kv_layers: u32,
    contributions: HashMap<NodeId, Vec<NodeId>>,
    weights: BTreeMap<WeightId, Vec<NodeId>>,
    params: BTreeMap<usize, NodeId>,
}

impl<'w> Sweep<'w> {
    fn new(table: &'w [Weight], dim: u64, kv_layers: u32) -> Sweep<'w> {
        Sweep {
            table,
            dim,
            kv_layers,
            contributions: HashMap::new(),
            weights: BTreeMap::new(),
            params: BTreeMap::new(),
        }
    }

    fn contribute(&mut self, value: NodeId, cotangent: NodeId) {
        self.contributions.entry(value).or_default().push(cotangent);
    }

    /// Whether a value gets a cotangent: f32 values but buffers.
    fn differentiable(&self, g: &Graph, n: NodeId) -> bool {
        match g.op(n) {
            Op::Weight(w) => !self.table[w.0 as usize].buffer,
            _ => g.results(n).is_none() && g.ty(n).dtype == super::DType::F32,
        }
    }

    /// Visits `order` last first: every value with contributions passes
    /// its summed cotangent to its operands.
    fn run(&mut self, g: &mut Graph, order: &[NodeId]) -> Result<(), GradError> {
        for &n in order.iter().rev() {
            let Some(parts) = self.contributions.remove(&n) else {
                continue;
            };
            let label = g.node(n).label.clone();
            let ct = sum(g, &parts, &label);
            match g.op(n).clone() {
                Op::Weight(w) => self.weights.entry(w).or_default().push(ct),
                Op::Param(i) => {
                    self.params.insert(i, ct);
                }
                Op::Pick(0) if matches!(g.op(g.operands(n)[0]), Op::Loop(_)) => {
                    self.loop_vjp(g, g.operands(n)[0], ct)?;
                }
                _ => {
                    let cts = self.vjp(g, n, Some(ct))?;
                    for (operand, ct) in g.operands(n).into_iter().zip(cts) {
                        if let Some(ct) = ct {
                            self.contribute(operand, ct);
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Adds `vjp(op of n)` with the cotangent `dy` of `n` and picks the
    /// cotangent of each differentiable operand.
    fn vjp(
        &mut self,
        g: &mut Graph,
        n: NodeId,
        dy: Option<NodeId>,
    ) -> Result<Vec<Option<NodeId>>, GradError> {
        let op = g.op(n).clone();
        if !op.has_vjp() {
            return Err(GradError::NoRule {
                op: op.name(),
                node: n.index(),
                label: g.node(n).label.clone(),
            });
        }
        let fwd = g.operands(n);
        let mut operands = fwd.clone();
        operands.extend(dy);
        let label = g.node(n).label.clone();
        let vjp = Op::Vjp(Box::new(op));
        let types = self.results_of(g, &vjp, &operands);
        let node = g.add_tuple(vjp, &operands, types.clone(), format!("d {label}"));
        Ok(fwd
            .iter()
            .enumerate()
            .map(|(i, &o)| {
                self.differentiable(g, o)
                    .then(|| g.add(Op::Pick(i), &[node], types[i].clone(), format!("d {label}")))
            })
            .collect())
    }

    fn results_of(&self, g: &Graph, op: &Op, operands: &[NodeId]) -> Vec<TensorType> {
        let types: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
        results(op, &types, self.table, self.dim)
            .expect("a tuple op")
            .expect("the transform builds well-typed nodes")
    }

    /// The backward of recording loop `l` given its result's cotangent.
    fn loop_vjp(&mut self, g: &mut Graph, l: NodeId, dresult: NodeId) -> Result<(), GradError> {
        let Op::Loop(region) = g.op(l).clone() else {
            unreachable!("a recording loop")
        };
        let label = g.node(l).label.clone();
        let tape_ty = g.results(l).expect("a recording loop")[1].clone();
        let tape = g.add(Op::Pick(1), &[l], tape_ty, format!("{label} tape"));
        let (body, weights, zero) = backward_body(&region, self.table, self.dim, self.kv_layers)?;
        let forward = g.operands(l);
        let mut operands = forward.clone();
        operands.extend([tape, dresult]);
        let carried = region.carried.len();
        let op = Op::LoopVjp(Box::new(LoopVjp {
            region: LoopRegion {
                body,
                record: false,
                ..*region
            },
            weights: weights.clone(),
            zero: zero.clone(),
        }));
        let types = self.results_of(g, &op, &operands);
        let node = g.add_tuple(op, &operands, types.clone(), format!("d {label}"));
        let pick = |g: &mut Graph, i: usize| {
            g.add(Op::Pick(i), &[node], types[i].clone(), format!("d {label}"))
        };
        // Forward operand i's cotangent among the body's: h0 is dh's, e de's,
        // invariant j follows dh, de and the carried values.
        let activation = |i: usize| match i {
            0 | 1 => i,
            _ => i + carried,
        };
        for (i, &o) in forward.iter().enumerate() {
            if self.differentiable(g, o) && !zero.contains(&activation(i)) {
                let ct = pick(g, i);
                self.contribute(o, ct);
            }
        }
        for (j, w) in weights.into_iter().enumerate() {
            let ct = pick(g, forward.len() + j);
            self.weights.entry(w).or_default().push(ct);
        }
        Ok(())
    }
}

/// The backward body of a loop (see [`LoopVjp`]), the weights whose
/// gradients it yields after the activations' cotangents, and the
/// cotangents that are zero (params it never reads). Its recomputed
/// attention ops append to their own KV-cache layers, `kv_layers` on.
fn backward_body(
    region: &LoopRegion,
    table: &[Weight],
    dim: u64,
    kv_layers: u32,
) -> Result<(Graph, Vec<WeightId>, Vec<usize>), GradError> {
    if !region.header.outputs.is_empty() {
        return Err(GradError::Nested);
    }
    let mut g = region.body.clone();
    if g.nodes().any(|n| g.op(n).loop_region().is_some()) {
        return Err(GradError::Nested);
    }
    let nodes: Vec<NodeId> = g.nodes().collect();
    for n in nodes {
        if let Op::Attention(a) = &mut g.node_mut(n).op {
            a.cache.layer += kv_layers;
            a.cache.name.push_str(".recompute");
        }
    }
    let order = g.topo_order().expect("a verified body is acyclic");
    let first_cotangent = region.first_header_param();
    let mut sweep = Sweep::new(table, dim, kv_layers);
    for (k, &out) in region.body.outputs.clone().iter().enumerate() {
        let ty = g.ty(out).clone();
        let p = g.add(
            Op::Param(first_cotangent + k),
            &[],
            ty,
            format!("d output {k}"),
        );
        sweep.contribute(out, p);
    }
    sweep.run(&mut g, &order)?;
    let mut outputs = Vec::new();
    // dh, de, the carried values, the invariants; the step `t` has none.
    let params = [0, 1]
        .into_iter()
        .chain((0..region.carried.len()).map(|i| region.carried_param(i)))
        .chain((0..region.invariants).map(|i| region.first_invariant() + i));
    let mut zero = Vec::new();
    for (k, p) in params.enumerate() {
        match sweep.params.get(&p) {
            Some(ct) => outputs.push(*ct),
            None => zero.push(k),
        }
    }
    let mut weights = Vec::new();
    for (w, parts) in std::mem::take(&mut sweep.weights) {
        outputs.push(sum(&mut g, &parts, &table[w.0 as usize].name));
        weights.push(w);
    }
    g.outputs = outputs;
    Ok((g, weights, zero))
}
