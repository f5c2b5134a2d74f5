//! The checked model description: what a `.mythos` model means once names are
//! resolved, variants merged, defaults filled in and every check has passed.
//!
//! Invariants (established by `sema`, relied on by everything after it):
//! every size is positive and within its documented limit, `heads <= dim`
//! for GQA/MHA (each head gets `dim // heads` channels, as in OpenMythos;
//! `heads * head_dim` may be less than `dim`), `heads % kv_heads == 0`, RoPE
//! dimensions are even, `top_k <= experts`, loop-embedding channels are
//! `<= dim` (odd counts and 0 allowed), the halting threshold is finite (any
//! value, as in OpenMythos), the loop has at least one block and
//! `max_iters >= 1`. Repetitions (`N x block`) are expanded: `prelude[i]` is
//! OpenMythos's `prelude.{i}`.

use serde::Serialize;

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Model {
    pub name: String,
    /// Where the model's name is written (for diagnostics about the whole model).
    #[serde(skip)]
    pub span: crate::source::Span,
    pub vocab: u64,
    pub dim: u64,
    pub max_seq: u64,
    pub rope_theta: f64,
    pub norm_eps: f64,
    pub tie_embeddings: bool,
    pub dropout: f64,
    pub max_output_tokens: u64,
    /// Blocks run once before the loop.
    pub prelude: Vec<Block>,
    /// The recurrent stage.
    pub recurrence: Recurrence,
    /// Blocks run once after the loop.
    pub coda: Vec<Block>,
}

impl Model {
    /// This model with its ACT halting off (OpenMythos PR #58's
    /// `disable_act`): the loop runs every iteration it is given and yields
    /// its last state. The halting weights are not part of the result; a
    /// model without ACT is returned as it is.
    pub fn without_act(&self) -> Model {
        let mut m = self.clone();
        m.recurrence.halt = Halting::None;
        m
    }
}

/// A pre-norm transformer block: `x += attn(norm(x)); x += ffn(norm(x))`.
/// Equality ignores the span (two specs can describe the same model).
#[derive(Clone, Debug, Serialize)]
pub struct Block {
    pub attention: Attention,
    pub ffn: Ffn,
    /// The `block(...)` reference that made it (IR nodes, MLIR locations).
    #[serde(skip)]
    pub span: crate::source::Span,
}

impl PartialEq for Block {
    fn eq(&self, other: &Block) -> bool {
        self.attention == other.attention && self.ffn == other.ffn
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Attention {
    /// The definition's name in the spec (`attention` by default).
    pub name: String,
    #[serde(flatten)]
    pub kind: AttentionKind,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum AttentionKind {
    /// Grouped-query attention; `kv_heads` key/value heads shared by groups of query heads.
    Gqa { heads: u64, kv_heads: u64 },
    /// Multi-head attention (GQA with `kv_heads == heads`).
    Mha { heads: u64 },
    /// Multi-latent attention (DeepSeek-V2 style) as in OpenMythos.
    Mla {
        heads: u64,
        /// Ignored by MLA; kept so that OpenMythos configs round-trip.
        kv_heads: Option<u64>,
        q_rank: u64,
        kv_rank: u64,
        rope_dim: u64,
        nope_dim: u64,
        v_dim: u64,
    },
}

impl AttentionKind {
    pub fn heads(&self) -> u64 {
        match *self {
            AttentionKind::Gqa { heads, .. }
            | AttentionKind::Mha { heads }
            | AttentionKind::Mla { heads, .. } => heads,
        }
    }

    pub fn kind_name(&self) -> &'static str {
        match self {
            AttentionKind::Gqa { .. } => "gqa",
            AttentionKind::Mha { .. } => "mha",
            AttentionKind::Mla { .. } => "mla",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Ffn {
    /// The definition's name in the spec (its kind by default).
    pub name: String,
    #[serde(flatten)]
    pub kind: FfnKind,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum FfnKind {
    /// SwiGLU: `down(silu(gate(x)) * up(x))`.
    Dense { hidden: u64 },
    /// DeepSeek-style MoE: routed SwiGLU experts chosen by top-k, plus shared experts.
    Moe {
        experts: u64,
        shared: u64,
        top_k: u64,
        expert_dim: u64,
        /// Hidden size of each shared expert (OpenMythos: `expert_dim * top_k`).
        shared_dim: u64,
        /// Whether the router has a selection bias buffer (OpenMythos: yes).
        router_bias: bool,
    },
}

impl FfnKind {
    pub fn kind_name(&self) -> &'static str {
        match self {
            FfnKind::Dense { .. } => "dense",
            FfnKind::Moe { .. } => "moe",
        }
    }
}

/// The looped stage: `body` runs up to `max_iters` times (more at inference).
/// Equality ignores the span.
#[derive(Clone, Debug, Serialize)]
pub struct Recurrence {
    /// The `loop` stage in the spec (IR nodes, MLIR locations).
    #[serde(skip)]
    pub span: crate::source::Span,
    pub max_iters: u64,
    pub body: Vec<Block>,
    pub inject: Injection,
    pub halt: Halting,
    /// Depth-wise LoRA rank; 0 = off.
    pub lora_rank: u64,
    pub loop_embedding: Option<LoopEmbedding>,
}

impl PartialEq for Recurrence {
    fn eq(&self, o: &Recurrence) -> bool {
        let Recurrence {
            span: _,
            max_iters,
            body,
            inject,
            halt,
            lora_rank,
            loop_embedding,
        } = self;
        *max_iters == o.max_iters
            && *body == o.body
            && *inject == o.inject
            && *halt == o.halt
            && *lora_rank == o.lora_rank
            && *loop_embedding == o.loop_embedding
    }
}

/// How the prelude output `e` enters each iteration.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Injection {
    /// OpenMythos: `h = A*h + B*e + block(norm(h + e))`, A = exp(-exp(log_dt + log_A)).
    Lti,
    /// `h = block(norm(h + e))`.
    Add,
    /// Huginn: `h = block(adapter([h, e]))` with a Linear(2*dim -> dim) adapter.
    Concat,
    /// Plain recurrence: `h = block(h)`.
    None,
}

impl Injection {
    pub const NAMES: &'static [&'static str] = &["lti", "add", "concat", "none"];

    pub fn name(self) -> &'static str {
        match self {
            Injection::Lti => "lti",
            Injection::Add => "add",
            Injection::Concat => "concat",
            Injection::None => "none",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum Halting {
    /// Adaptive Computation Time with OpenMythos's remainder rule.
    Act { threshold: f64 },
    /// Always run the requested number of iterations.
    None,
}

/// Sinusoidal loop-index signal added to the first `channels` of the state.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct LoopEmbedding {
    pub channels: u64,
    pub theta: f64,
}
