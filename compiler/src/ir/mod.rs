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

pub mod args;
pub mod attrs;
pub mod decl;
pub mod effects;
pub mod grad;
pub mod lower;
pub mod op;
pub mod print;
pub mod verify;
pub mod walk;

pub use decl::{infer, CostInputs, OpDecl, OpFlops};
pub use effects::Effect;
pub use op::act::ActStep;
pub use op::attention::{AttentionOp, AttnKind, KvLayout, KvSlot};
pub use op::grad::LoopVjp;
pub use op::moe::MoeOp;
pub use op::region::{param_type, Carried, FusedOp, LoopRegion};
pub use op::row::RowOp;

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
    /// The loop iterations run (a recording loop's tape).
    Iters,
    Const(u64),
}

impl fmt::Display for Dim {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dim::Batch => f.write_str("B"),
            Dim::Seq => f.write_str("T"),
            Dim::Iters => f.write_str("N"),
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

/// What the `fuse` pass folded into a composite op (attention, SwiGLU, MoE,
/// head): the RMSNorm of its input in the prologue and the residual add in
/// the epilogue. With `prenorm` the op computes `op(rmsnorm(x, w))` and takes
/// the norm weight `w` as operand 1 (its own weights follow); with `residual`
/// the result is `x + op(...)`. The default is neither.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Fusion {
    /// Epsilon of the RMSNorm computed in the prologue.
    pub prenorm: Option<f64>,
    /// The input is added to the result.
    pub residual: bool,
}

impl Fusion {
    pub fn is_none(&self) -> bool {
        self.prenorm.is_none() && !self.residual
    }

    /// ` prenorm(eps) residual` for printers (empty when nothing is fused).
    pub fn describe(&self) -> String {
        let mut s = String::new();
        if let Some(eps) = self.prenorm {
            s.push_str(&format!(" prenorm(eps={eps:e})"));
        }
        if self.residual {
            s.push_str(" residual");
        }
        s
    }
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
    /// `x @ W^T`: `(x, W)` with `W` as `[out, in]`.
    Linear,
    /// A row-local op (`add`, `rmsnorm`, `concat`, the ACT steps, ...):
    /// see [`RowOp`].
    Row(RowOp),
    Attention(AttentionOp),
    /// `down(silu(gate(x)) * up(x))`: `(x, [norm], gate, up, down)`.
    SwiGlu(Fusion),
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
    /// The recurrence: `(h0, e, invariants...)`.
    Loop(Box<LoopRegion>),
    /// Output logits `x @ table^T`: `(x, [norm], table)` (only `prenorm` fuses).
    Head(Fusion),
    /// The LTI decay `exp(-exp(clamp(log_dt + log_A, -20, 20)))`: `(log_A, log_dt)` -> `[d]`.
    LtiDecay,
    /// The loop-embedding vector `[sin(t f), cos(t f)][:channels]`: `(t)` -> `[channels]`.
    LoopEmbeddingVec {
        channels: u64,
        theta: f64,
    },
    /// The LoRA scale row `scale[min(t, max_iters-1)]`: `(scale, t)` -> `[rank]`.
    LoraScale {
        max_iters: u64,
    },
    /// Depth LoRA delta with its scale given: `(down(x) * s) @ B`: `(x, down, B, s [rank])`.
    LoraApply {
        rank: u64,
    },
    /// A fused group of row-local ops: `(inputs...)`.
    Fused(Box<FusedOp>),
    /// The training targets `[B, T]` i64 (`-100`: not scored).
    Targets,
    /// Mean next-token cross-entropy over the scored targets:
    /// `(logits, targets)` -> `[]`.
    Loss,
    /// The vector-Jacobian product of a forward op: `(operands..., dy)`
    /// (the loss takes no `dy`) -> the tuple of its operands' cotangents.
    Vjp(Box<Op>),
    /// The backward of the recurrence (see [`LoopVjp`]): a tuple.
    LoopVjp(Box<LoopVjp>),
    /// Element `k` of a tuple result.
    Pick(usize),
    /// The sum of its operands (gradient contributions of one value).
    GradSum,
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
    /// The element types of tuple-valued nodes (see [`op::grad`]).
    tuples: HashMap<NodeId, Vec<TensorType>>,
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

    /// Adds a tuple-valued node (`vjp`, `loop_vjp`, a recording `loop`)
    /// with its element types; only `pick` nodes read it.
    pub fn add_tuple(
        &mut self,
        op: Op,
        operands: &[NodeId],
        results: Vec<TensorType>,
        label: impl Into<String>,
    ) -> NodeId {
        let id = self.add(op, operands, op::grad::scalar(), label);
        self.tuples.insert(id, results);
        id
    }

    /// The element types of a tuple-valued node, `None` for one result.
    pub fn results(&self, id: NodeId) -> Option<&[TensorType]> {
        self.tuples.get(&id).map(|v| v.as_slice())
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

    /// Replaces a node's operands (in order).
    pub fn set_operands(&mut self, id: NodeId, operands: &[NodeId]) {
        let old: Vec<_> = self
            .g
            .edges_directed(id.0, Direction::Incoming)
            .map(|e| e.id())
            .collect();
        for e in old {
            self.g.remove_edge(e);
        }
        for (pos, operand) in operands.iter().enumerate() {
            self.g.add_edge(operand.0, id.0, pos);
        }
    }

    /// Makes every use of `old` (operands and outputs) a use of `new`.
    pub fn replace_uses(&mut self, old: NodeId, new: NodeId) {
        let uses: Vec<_> = self
            .g
            .edges_directed(old.0, Direction::Outgoing)
            .map(|e| (e.id(), e.target(), *e.weight()))
            .collect();
        for (edge, target, pos) in uses {
            self.g.remove_edge(edge);
            self.g.add_edge(new.0, target, pos);
        }
        for o in &mut self.outputs {
            if *o == old {
                *o = new;
            }
        }
    }

    /// Removes a node and its edges (callers make sure nothing uses it).
    pub fn remove(&mut self, id: NodeId) -> Option<Node> {
        self.types.remove(&id);
        self.tuples.remove(&id);
        self.spans.remove(&id);
        self.g.remove_node(id.0)
    }

    pub fn set_ty(&mut self, id: NodeId, ty: TensorType) {
        self.types.insert(id, ty);
    }

    /// Number of uses (edges out, plus graph outputs).
    pub fn use_count(&self, id: NodeId) -> usize {
        self.g.edges_directed(id.0, Direction::Outgoing).count()
            + self.outputs.iter().filter(|&&o| o == id).count()
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
    /// Empty for a forward module (its one output is the logits). A module
    /// made by [`grad::gradient`] outputs the loss and then the gradient of
    /// each of these weights, in this order.
    pub gradients: Vec<WeightId>,
}

impl Module {
    pub fn weight(&self, id: WeightId) -> &Weight {
        &self.weights[id.0 as usize]
    }

    /// The loop's trained iteration count (1 for a model without a loop).
    pub fn max_iters(&self) -> u64 {
        let g = &self.graph;
        g.nodes()
            .find_map(|n| match g.op(n) {
                Op::Loop(r) => Some(r.max_iters),
                _ => None,
            })
            .unwrap_or(1)
    }

    /// Every graph of the module, with ids and paths (see [`walk`]).
    pub fn graphs(&self) -> walk::Graphs<'_> {
        walk::Graphs::of(self)
    }
}

/// Why an op cannot take its operands (verifier and builder).
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("{0}")]
pub struct TypeError(pub String);
