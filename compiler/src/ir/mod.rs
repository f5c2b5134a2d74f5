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
pub mod effects;
pub mod lower;
pub mod op;
pub mod print;
pub mod verify;
pub mod walk;

pub use effects::Effect;
pub use op::act::ActStep;
pub use op::attention::{AttentionOp, AttnKind, KvLayout, KvSlot};
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
    /// One step of the ACT rule on loop-carried values (see [`ActStep`]).
    Act(ActStep),
    /// The recurrence: `(h0, e, invariants...)`.
    Loop(Box<LoopRegion>),
    /// Output logits `x @ table^T`: `(x, [norm], table)` (only `prenorm` fuses).
    Head(Fusion),
    /// `x * w` with `w` broadcast over the last axis: `(x, w [width])`.
    Scale,
    /// The LTI decay `exp(-exp(clamp(log_dt + log_A, -20, 20)))`: `(log_A, log_dt)` -> `[d]`.
    LtiDecay,
    /// `a*h + be + out` (the LTI update with `B*e` and `A` given): `(h, be, out, a [d])`.
    LtiApply,
    /// The loop-embedding vector `[sin(t f), cos(t f)][:channels]`: `(t)` -> `[channels]`.
    LoopEmbeddingVec {
        channels: u64,
        theta: f64,
    },
    /// Adds a vector to the first channels: `(h, v [c])`.
    AddPrefix,
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
}

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
            Op::RmsNorm { .. } => ("rmsnorm", Pure, None),
            Op::Linear => ("linear", Pure, None),
            Op::Add => ("add", Pure, None),
            Op::Concat => ("concat", Pure, None),
            Op::Attention(a) => (a.name(), CacheWrite, Some(a.fusion)),
            Op::SwiGlu(f) => ("swiglu", Pure, Some(*f)),
            Op::Moe(m) => ("moe", Pure, Some(m.fusion)),
            Op::LoopEmbedding { .. } => ("loop_embedding", Pure, None),
            Op::Lora { .. } => ("lora", Pure, None),
            Op::LtiUpdate => ("lti_update", Pure, None),
            Op::ActHalt => ("act_halt", Pure, None),
            Op::Act(a) => (a.name(), Pure, None),
            Op::Loop(_) => ("loop", Region, None),
            Op::Head(f) => ("head", Pure, Some(*f)),
            Op::Scale => ("scale", Pure, None),
            Op::LtiDecay => ("lti_decay", Pure, None),
            Op::LtiApply => ("lti_apply", Pure, None),
            Op::LoopEmbeddingVec { .. } => ("loop_embedding_vec", Pure, None),
            Op::AddPrefix => ("add_prefix", Pure, None),
            Op::LoraScale { .. } => ("lora_scale", Pure, None),
            Op::LoraApply { .. } => ("lora_apply", Pure, None),
            // A fused group is row-local arithmetic on its operands.
            Op::Fused(_) => ("fused", Pure, None),
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

    /// Ops that compute something (not inputs, params or weights).
    pub fn is_compute(&self) -> bool {
        !matches!(self, Op::Input | Op::Param(_) | Op::Weight(_))
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
        Op::RmsNorm { .. } => {
            arity(2)?;
            expect_shape(1, &[width(0)?])?;
            Ok(operands[0].clone())
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
        Op::Act(step) => step.infer(operands),
        Op::Loop(region) => region.infer(&typing),
        Op::Scale => {
            arity(2)?;
            if !is_vector(1, width(0)?) {
                return err("scale takes (x, w) with w of x's width".into());
            }
            Ok(operands[0].clone())
        }
        Op::LtiDecay => {
            arity(2)?;
            let d = vector(0)?;
            if d.len() != 1 {
                return err("lti_decay takes (log_A [d], log_dt [1])".into());
            }
            expect_shape(1, &[1])?;
            Ok(operands[0].clone())
        }
        Op::LtiApply => {
            arity(4)?;
            if operands[0] != operands[1] || operands[0] != operands[2] {
                return err("lti_apply needs h, be and out of one type".into());
            }
            if !is_vector(3, width(0)?) {
                return err("lti_apply takes the decay as a vector of the state's width".into());
            }
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
        Op::AddPrefix => {
            arity(2)?;
            let v = vector(1)?;
            if v.len() != 1 || v[0] > width(0)? {
                return err("add_prefix takes (h, v) with v no wider than h".into());
            }
            Ok(operands[0].clone())
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
    }
}
