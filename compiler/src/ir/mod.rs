//! The graph IR: what every pass and backend works on.
//!
//! A [`Module`] holds the weight table and the top-level [`Graph`]. A graph is
//! a petgraph `StableGraph` behind a small API: nodes are [`NodeId`]s, each
//! node has one [`Op`] and one result; operand order is the edge weight.
//! Result types and source spans live in side tables. The recurrence is one
//! structured region: an [`Op::Loop`] node owns its body graph and the loop
//! control (iteration count, halting); it is never unrolled silently.
//!
//! Invariants (checked by [`verify::verify`]): operand positions are 0..n,
//! every op has the operands its [`infer`] rule expects, recorded types equal
//! inferred types, graphs outside loop bodies and each body are acyclic,
//! `Param` appears only in loop bodies, and every weight is used.

pub mod lower;
pub mod print;
pub mod verify;

use crate::model::Injection;
use crate::source::Span;
use petgraph::stable_graph::{NodeIndex, StableDiGraph};
use petgraph::visit::EdgeRef;
use petgraph::Direction;
use serde::Serialize;
use std::collections::HashMap;
use std::fmt;

/// Element types.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    F32,
    I64,
}

/// One dimension of a tensor type: the dynamic batch and sequence sizes, or a constant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Dim {
    Batch,
    Seq,
    Const(u64),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("B"),
            Dim::Seq => f.write_str("T"),
            Dim::Const(n) => write!(f, "{n}"),
        }
    }
}

/// The type of a node's result.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct TensorType {
    pub dtype: DType,
    pub shape: Vec<Dim>,
}

impl TensorType {
    /// `[B, T, n]` in f32: the activations of the residual stream.
    pub fn activations(n: u64) -> TensorType {
        TensorType {
            dtype: DType::F32,
            shape: vec![Dim::Batch, Dim::Seq, Dim::Const(n)],
        }
    }

    /// The size of the last dimension, when constant.
    pub fn width(&self) -> Option<u64> {
        match self.shape.last() {
            Some(Dim::Const(n)) => Some(*n),
            _ => None,
        }
    }
}

impl fmt::Display for TensorType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let dims: Vec<String> = self.shape.iter().map(|d| d.to_string()).collect();
        let dt = match self.dtype {
            DType::F32 => "f32",
            DType::I64 => "i64",
        };
        write!(f, "[{}] {dt}", dims.join(", "))
    }
}

/// Index into [`Module::weights`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WeightId(pub u32);

/// How a weight is initialised (`mythos init`, `--seed`): the reference's scheme.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Init {
    Normal { std: f64 },
    Uniform { bound: f64 },
    Const { value: f64 },
}

/// Experts stacked into one weight: `count` of them, `active` used per token.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub struct Stacked {
    pub count: u64,
    pub active: u64,
}

/// A parameter tensor (or a buffer such as `router_bias`).
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Weight {
    /// The OpenMythos state_dict name; `{e}` stands for the expert index of a
    /// stacked weight (`recurrent.block.ffn.routed_experts.{e}.gate.weight`).
    pub name: String,
    /// Shape; a stacked weight has the expert count first.
    pub shape: Vec<u64>,
    pub init: Init,
    /// Buffers are state but not parameters (not counted, not trained).
    pub buffer: bool,
    pub stacked: Option<Stacked>,
    /// The part of the model it belongs to, for cost breakdowns:
    /// `embedding`, `prelude.0`, `loop.block.0`, `loop.injection`, `head`, ...
    pub component: String,
}

impl Weight {
    pub fn numel(&self) -> u128 {
        self.shape.iter().map(|&d| d as u128).product()
    }
}

/// Attention variants as the IR sees them (MHA is GQA with `kv_heads == heads`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttnKind {
    Gqa {
        heads: u64,
        kv_heads: u64,
        head_dim: u64,
    },
    Mla {
        heads: u64,
        q_rank: u64,
        kv_rank: u64,
        rope_dim: u64,
        nope_dim: u64,
        v_dim: u64,
    },
}

/// A whole attention sub-layer: projections, RoPE, causal softmax attention
/// over its KV-cache slot, output projection. Operands: `x`, then the weights
/// in [`AttentionOp::weight_names`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOp {
    pub kind: AttnKind,
    pub rope_theta: f64,
    /// RMSNorm epsilon of MLA's `q_norm`/`kv_norm`.
    pub norm_eps: f64,
    /// The KV-cache entry: `prelude_0`, `recurrent_loop` (one per iteration), `coda_0`.
    pub cache: String,
}

impl AttentionOp {
    /// Weight operand names (after the module prefix `....attn.`).
    pub fn weight_names(&self) -> &'static [&'static str] {
        match self.kind {
            AttnKind::Gqa { .. } => &["wq", "wk", "wv", "wo"],
            AttnKind::Mla { .. } => &[
                "q_down",
                "q_norm",
                "q_up_nope",
                "q_up_rope",
                "kv_down",
                "kv_norm",
                "kv_up",
                "wo",
            ],
        }
    }

    /// Expected weight shapes (`[out, in]` for linear layers), in operand order.
    pub fn weight_shapes(&self, dim: u64) -> Vec<Vec<u64>> {
        match self.kind {
            AttnKind::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => vec![
                vec![heads * head_dim, dim],
                vec![kv_heads * head_dim, dim],
                vec![kv_heads * head_dim, dim],
                vec![dim, heads * head_dim],
            ],
            AttnKind::Mla {
                heads,
                q_rank,
                kv_rank,
                rope_dim,
                nope_dim,
                v_dim,
            } => vec![
                vec![q_rank, dim],
                vec![q_rank],
                vec![heads * nope_dim, q_rank],
                vec![heads * rope_dim, q_rank],
                vec![kv_rank + rope_dim, dim],
                vec![kv_rank],
                vec![heads * (nope_dim + v_dim), kv_rank],
                vec![dim, heads * v_dim],
            ],
        }
    }
}

/// DeepSeek-style MoE: router softmax, biased top-k, renormalised gates,
/// routed SwiGLU experts plus shared ones. Operands: `x`, `router`,
/// [`router_bias`], routed `gate`, `up`, `down` (stacked), then the shared
/// `gate`, `up`, `down` (stacked) when `shared > 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeOp {
    pub experts: u64,
    pub top_k: u64,
    pub expert_dim: u64,
    pub shared: u64,
    pub shared_dim: u64,
    pub router_bias: bool,
}

impl MoeOp {
    pub fn operand_count(&self) -> usize {
        5 + usize::from(self.router_bias) + if self.shared > 0 { 3 } else { 0 }
    }
}

/// The recurrent stage. Body parameters: `Param 0` = state `h`, `Param 1` =
/// the prelude output `e`, `Param 2` = the iteration index `t` (`[]` i64).
/// Body outputs: the next `h`, and with ACT the halting probability `p`
/// (`[B, T, 1]`). The loop op's result is the ACT-weighted sum of states
/// (OpenMythos's `h_out`) with ACT, else the last state. The loop starts from
/// `h = e`. Operands: `h0`, `e`.
#[derive(Clone, Debug)]
pub struct LoopRegion {
    pub body: Graph,
    pub max_iters: u64,
    pub inject: Injection,
    /// ACT threshold; `None` runs every iteration.
    pub act_threshold: Option<f64>,
}

/// The operations. Composites name what backends match (attention, norms,
/// MoE, ...); primitives (`Linear`, `Add`, `Concat`) are plain tensor ops.
#[derive(Clone, Debug)]
pub enum Op {
    /// Token ids `[B, T]` i64.
    Input,
    /// A loop-body parameter (see [`LoopRegion`]).
    Param(usize),
    /// A parameter tensor from the module's weight table.
    Weight(WeightId),
    /// `table[ids]`: `(ids, table)`.
    Embedding,
    /// `x * rsqrt(mean(x^2) + eps) * w`: `(x, w)`.
    RmsNorm {
        eps: f64,
    },
    /// `x @ W^T`: `(x, W)` with `W` as `[out, in]`.
    Linear,
    /// Elementwise sum of two values of one type.
    Add,
    /// Concatenation on the last axis: `(a, b)`.
    Concat,
    Attention(AttentionOp),
    /// `down(silu(gate(x)) * up(x))`: `(x, gate, up, down)`.
    SwiGlu,
    Moe(MoeOp),
    /// Adds `[sin(t f), cos(t f)][:channels]` to the first channels: `(h, t)`.
    LoopEmbedding {
        channels: u64,
        theta: f64,
    },
    /// Depth LoRA delta `(down(x) * scale[min(t, max_iters-1)]) @ B`:
    /// `(x, down, B, scale, t)`.
    Lora {
        rank: u64,
        max_iters: u64,
    },
    /// `A*h + B*e + out`, `A = exp(-exp(clamp(log_dt + log_A, -20, 20)))`:
    /// `(h, e, out, log_A, log_dt, B)`.
    LtiUpdate,
    /// ACT halting probability `sigmoid(h @ w^T + b)`: `(h, w, b)` -> `[B, T, 1]`.
    ActHalt,
    /// The recurrence: `(h0, e)`.
    Loop(Box<LoopRegion>),
    /// Output logits `x @ table^T`: `(x, table)`.
    Head,
}

impl Op {
    /// Short name used by the printers.
    pub fn name(&self) -> &'static str {
        match self {
            Op::Input => "input",
            Op::Param(_) => "param",
            Op::Weight(_) => "weight",
            Op::Embedding => "embedding",
            Op::RmsNorm { .. } => "rmsnorm",
            Op::Linear => "linear",
            Op::Add => "add",
            Op::Concat => "concat",
            Op::Attention(a) => match a.kind {
                AttnKind::Gqa { .. } => "attention.gqa",
                AttnKind::Mla { .. } => "attention.mla",
            },
            Op::SwiGlu => "swiglu",
            Op::Moe(_) => "moe",
            Op::LoopEmbedding { .. } => "loop_embedding",
            Op::Lora { .. } => "lora",
            Op::LtiUpdate => "lti_update",
            Op::ActHalt => "act_halt",
            Op::Loop(_) => "loop",
            Op::Head => "head",
        }
    }
}

/// A node handle. Stable across removals (petgraph `StableGraph`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NodeId(NodeIndex);

impl NodeId {
    pub fn index(self) -> usize {
        self.0.index()
    }
}

#[derive(Clone, Debug)]
pub struct Node {
    pub op: Op,
    /// What the node is in model terms (`prelude.0.attn`), for printers and errors.
    pub label: String,
}

/// A dataflow graph; results in `outputs`.
#[derive(Clone, Debug, Default)]
pub struct Graph {
    g: StableDiGraph<Node, usize>,
    pub outputs: Vec<NodeId>,
    types: HashMap<NodeId, TensorType>,
    spans: HashMap<NodeId, Span>,
}

impl Graph {
    /// Adds a node with its operands (in order) and result type.
    pub fn add(
        &mut self,
        op: Op,
        operands: &[NodeId],
        ty: TensorType,
        label: impl Into<String>,
    ) -> NodeId {
        let id = NodeId(self.g.add_node(Node {
            op,
            label: label.into(),
        }));
        for (pos, operand) in operands.iter().enumerate() {
            self.g.add_edge(operand.0, id.0, pos);
        }
        self.types.insert(id, ty);
        id
    }

    pub fn node(&self, id: NodeId) -> &Node {
        &self.g[id.0]
    }

    pub fn node_mut(&mut self, id: NodeId) -> &mut Node {
        &mut self.g[id.0]
    }

    pub fn op(&self, id: NodeId) -> &Op {
        &self.g[id.0].op
    }

    /// Operands in position order.
    pub fn operands(&self, id: NodeId) -> Vec<NodeId> {
        let mut edges: Vec<(usize, NodeId)> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| (*e.weight(), NodeId(e.source())))
            .collect();
        edges.sort();
        edges.into_iter().map(|(_, n)| n).collect()
    }

    /// Operand positions as recorded (for the verifier).
    pub fn operand_positions(&self, id: NodeId) -> Vec<usize> {
        let mut p: Vec<usize> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| *e.weight())
            .collect();
        p.sort();
        p
    }

    /// Nodes that use this node's result.
    pub fn users(&self, id: NodeId) -> Vec<NodeId> {
        let mut u: Vec<NodeId> = self
            .g
            .neighbors_directed(id.0, Direction::Outgoing)
            .map(NodeId)
            .collect();
        u.sort();
        u.dedup();
        u
    }

    pub fn ty(&self, id: NodeId) -> &TensorType {
        &self.types[&id]
    }

    pub fn set_span(&mut self, id: NodeId, span: Span) {
        self.spans.insert(id, span);
    }

    pub fn span(&self, id: NodeId) -> Option<Span> {
        self.spans.get(&id).copied()
    }

    /// All nodes in insertion order.
    pub fn nodes(&self) -> impl Iterator<Item = NodeId> + '_ {
        self.g.node_indices().map(NodeId)
    }

    pub fn len(&self) -> usize {
        self.g.node_count()
    }

    pub fn is_empty(&self) -> bool {
        self.g.node_count() == 0
    }

    pub fn contains(&self, id: NodeId) -> bool {
        self.g.contains_node(id.0)
    }

    /// Nodes in a deterministic topological order (ties by insertion order),
    /// or the node found on a cycle.
    pub fn topo_order(&self) -> Result<Vec<NodeId>, NodeId> {
        let mut indegree: HashMap<NodeId, usize> = self
            .nodes()
            .map(|n| (n, self.g.edges_directed(n.0, Direction::Incoming).count()))
            .collect();
        let mut ready: std::collections::BTreeSet<NodeId> = indegree
            .iter()
            .filter(|(_, &d)| d == 0)
            .map(|(&n, _)| n)
            .collect();
        let mut order = Vec::with_capacity(self.len());
        while let Some(n) = ready.pop_first() {
            order.push(n);
            for e in self.g.edges_directed(n.0, Direction::Outgoing) {
                let t = NodeId(e.target());
                let d = indegree.get_mut(&t).expect("target is a node");
                *d -= 1;
                if *d == 0 {
                    ready.insert(t);
                }
            }
        }
        if order.len() == self.len() {
            Ok(order)
        } else {
            let stuck = self
                .nodes()
                .find(|n| indegree[n] > 0)
                .expect("a node is left");
            Err(stuck)
        }
    }
}

/// A lowered model: its weights and its top-level graph (`Input` -> logits).
#[derive(Clone, Debug)]
pub struct Module {
    pub name: String,
    pub dim: u64,
    pub vocab: u64,
    pub max_seq: u64,
    pub weights: Vec<Weight>,
    pub graph: Graph,
}

impl Module {
    pub fn weight(&self, id: WeightId) -> &Weight {
        &self.weights[id.0 as usize]
    }

    /// Visits every graph (the top level and loop bodies, outer first).
    pub fn graphs(&self) -> Vec<(&Graph, u32)> {
        let mut out = Vec::new();
        collect_graphs(&self.graph, 0, &mut out);
        out
    }
}

fn collect_graphs<'g>(g: &'g Graph, depth: u32, out: &mut Vec<(&'g Graph, u32)>) {
    out.push((g, depth));
    for n in g.nodes() {
        if let Op::Loop(region) = g.op(n) {
            collect_graphs(&region.body, depth + 1, out);
        }
    }
}

/// Why an op cannot take its operands (verifier and builder).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TypeError(pub String);

/// The result type of `op` given its operand types and the weight table:
/// the typing rules of the IR, shared by the builder and the verifier.
pub fn infer(
    op: &Op,
    operands: &[&TensorType],
    weights: &[Weight],
) -> Result<TensorType, TypeError> {
    let err = |m: String| Err(TypeError(m));
    let arity = |n: usize| -> Result<(), TypeError> {
        if operands.len() == n {
            Ok(())
        } else {
            Err(TypeError(format!(
                "{} takes {n} operands, has {}",
                op.name(),
                operands.len()
            )))
        }
    };
    let width = |i: usize| {
        operands[i]
            .width()
            .ok_or_else(|| TypeError(format!("operand {i} has no constant width")))
    };
    let vector = |i: usize| -> Result<Vec<u64>, TypeError> {
        operands[i]
            .shape
            .iter()
            .map(|d| match d {
                Dim::Const(n) => Ok(*n),
                _ => Err(TypeError(format!(
                    "operand {i} of {} must be a weight",
                    op.name()
                ))),
            })
            .collect()
    };
    let expect_shape = |i: usize, want: &[u64]| -> Result<(), TypeError> {
        let got = vector(i)?;
        if got == want {
            Ok(())
        } else {
            Err(TypeError(format!(
                "{} operand {i}: expected shape {want:?}, found {got:?}",
                op.name()
            )))
        }
    };
    let is_act = |i: usize| operands[i].dtype == DType::F32 && operands[i].shape.len() == 3;
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
        Op::RmsNorm { .. } => {
            arity(2)?;
            expect_shape(1, &[width(0)?])?;
            Ok(operands[0].clone())
        }
        Op::Linear | Op::Head => {
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
        Op::Add => {
            arity(2)?;
            if operands[0] != operands[1] {
                return err(format!("add of {} and {}", operands[0], operands[1]));
            }
            Ok(operands[0].clone())
        }
        Op::Concat => {
            arity(2)?;
            let (a, b) = (operands[0], operands[1]);
            if a.shape.len() != b.shape.len()
                || a.shape[..a.shape.len() - 1] != b.shape[..b.shape.len() - 1]
            {
                return err(format!("concat of {a} and {b}"));
            }
            let mut t = a.clone();
            *t.shape.last_mut().expect("rank checked") = Dim::Const(width(0)? + width(1)?);
            Ok(t)
        }
        Op::Attention(a) => {
            let shapes = a.weight_shapes(width(0)?);
            arity(1 + shapes.len())?;
            for (i, s) in shapes.iter().enumerate() {
                expect_shape(i + 1, s)?;
            }
            Ok(operands[0].clone())
        }
        Op::SwiGlu => {
            arity(4)?;
            let d = width(0)?;
            let h = vector(1)?.first().copied().unwrap_or(0);
            expect_shape(1, &[h, d])?;
            expect_shape(2, &[h, d])?;
            expect_shape(3, &[d, h])?;
            Ok(operands[0].clone())
        }
        Op::Moe(m) => {
            arity(m.operand_count())?;
            let d = width(0)?;
            expect_shape(1, &[m.experts, d])?;
            let mut i = 2;
            if m.router_bias {
                expect_shape(i, &[m.experts])?;
                i += 1;
            }
            for (count, hidden) in [(m.experts, m.expert_dim), (m.shared, m.shared_dim)] {
                if count == 0 {
                    continue;
                }
                expect_shape(i, &[count, hidden, d])?;
                expect_shape(i + 1, &[count, hidden, d])?;
                expect_shape(i + 2, &[count, d, hidden])?;
                i += 3;
            }
            Ok(operands[0].clone())
        }
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
        Op::Loop(region) => {
            arity(2)?;
            if !is_act(0) || operands[0] != operands[1] {
                return err("loop takes (h0, e) activations of one type".into());
            }
            let want_outputs = if region.act_threshold.is_some() { 2 } else { 1 };
            if region.body.outputs.len() != want_outputs {
                return err(format!("loop body must yield {want_outputs} values"));
            }
            let h = region.body.ty(region.body.outputs[0]);
            if h != operands[0] {
                return err(format!("loop body yields {h}, state is {}", operands[0]));
            }
            Ok(operands[0].clone())
        }
    }
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
