//! The typed contexts of the kernel templates, one struct per template
//! (`templates/mlir/<kind>.mlir.tera`), with the small constructors that
//! derive their fields.

use mythos_compiler::ir::{ActStep, Graph, NodeId, RowOp};
use serde::Serialize;

/// Whether a value has one row per token (rather than being a vector).
pub(crate) fn is_act(g: &Graph, n: NodeId) -> bool {
    g.ty(n)
        .shape
        .iter()
        .any(|d| !matches!(d, mythos_compiler::ir::Dim::Const(_)))
}

#[derive(Serialize)]
pub struct Embedding {
    pub vocab: u64,
    pub dim: u64,
}

#[derive(Serialize)]
pub struct Linear {
    pub k: u64,
    pub n: u64,
    /// `x @ W^T` (W as `[n, k]`) rather than `x @ W` (W as `[k, n]`).
    pub transpose_b: bool,
    pub prenorm: bool,
    /// The prologue RMSNorm's epsilon as an exact f32 literal.
    pub eps: String,
    pub eps_text: String,
    pub residual: bool,
}

impl Linear {
    pub fn plain(k: u64, n: u64, transpose_b: bool) -> Linear {
        Linear {
            k,
            n,
            transpose_b,
            prenorm: false,
            eps: String::new(),
            eps_text: String::new(),
            residual: false,
        }
    }

    pub fn set_prenorm(&mut self, eps: Option<f64>) {
        if let Some(eps) = eps {
            self.prenorm = true;
            self.eps = f32_literal(eps);
            self.eps_text = format!("{eps:e}");
        }
    }
}

/// An f32 constant written exactly (MLIR hex float literal).
pub fn f32_literal(v: f64) -> String {
    format!("0x{:08X}", (v as f32).to_bits())
}

#[derive(Serialize)]
pub struct Rowwise {
    pub inputs: Vec<RowInput>,
    pub steps: Vec<RowStep>,
    pub out_width: u64,
    /// The step whose result is the output.
    pub last: usize,
}

#[derive(Serialize, Clone)]
pub struct RowInput {
    /// `act` (one row per token) or `vec`.
    pub kind: String,
    pub width: u64,
}

impl RowInput {
    pub fn of(g: &Graph, o: NodeId) -> RowInput {
        RowInput {
            kind: if is_act(g, o) { "act" } else { "vec" }.into(),
            width: g.ty(o).width().unwrap_or(1),
        }
    }
}

/// Where a row step reads an operand (see `macros.tera`).
#[derive(Serialize, Clone)]
pub struct Src {
    pub kind: String,
    pub mem: String,
    pub base: String,
    pub width: u64,
}

impl Src {
    pub fn input(i: usize, inp: &RowInput) -> Src {
        Src {
            kind: inp.kind.clone(),
            mem: format!("in{i}"),
            base: format!("base{i}"),
            width: inp.width,
        }
    }

    pub fn tmp(id: usize, width: u64) -> Src {
        Src {
            kind: "tmp".into(),
            mem: format!("t{id}"),
            base: String::new(),
            width,
        }
    }
}

#[derive(Serialize)]
pub struct RowStep {
    pub id: usize,
    pub kind: String,
    pub width: u64,
    pub args: Vec<Src>,
    pub eps: String,
    /// add_prefix: channels of the added vector; concat: width of the first part.
    pub prefix: u64,
    /// concat: width of the second part.
    pub suffix: u64,
    pub loc: String,
}

impl RowStep {
    pub fn new(id: usize, op: RowOp, g: &Graph, n: NodeId, args: Vec<Src>) -> RowStep {
        let width = g.ty(n).width().unwrap_or(1);
        // `eps` holds the rmsnorm epsilon or the ACT threshold.
        let (kind, eps) = match op {
            RowOp::Add => ("add", String::new()),
            RowOp::Scale => ("scale", String::new()),
            RowOp::LtiApply => ("lti_apply", String::new()),
            RowOp::AddPrefix => ("add_prefix", String::new()),
            RowOp::Concat => ("concat", String::new()),
            RowOp::RmsNorm { eps } => ("rmsnorm", f32_literal(eps)),
            RowOp::Act(step) => {
                let kind = match step {
                    ActStep::Weight { .. } => "act_weight",
                    ActStep::Accumulate => "act_accumulate",
                    ActStep::Cumulate => "act_cumulate",
                    ActStep::Halted { .. } => "act_halted",
                };
                (kind, step.threshold().map_or_else(String::new, f32_literal))
            }
        };
        // The widths of a concat's halves; the vector an add_prefix adds.
        let (prefix, suffix) = match op {
            RowOp::Concat => (args[0].width, args[1].width),
            RowOp::AddPrefix => (args.get(1).map_or(0, |s: &Src| s.width), 0),
            RowOp::Add | RowOp::Scale | RowOp::LtiApply | RowOp::RmsNorm { .. } | RowOp::Act(_) => {
                (0, 0)
            }
        };
        RowStep {
            id,
            kind: kind.into(),
            width,
            args,
            eps,
            prefix,
            suffix,
            loc: String::new(),
        }
    }
}

/// A fused prologue RMSNorm (`prenorm` false: none), of a composite or
/// an attention projection.
#[derive(Serialize)]
pub struct Prenorm {
    pub prenorm: bool,
    /// Its epsilon as an exact f32 literal, and as written.
    pub eps: String,
    pub eps_text: String,
}

impl Prenorm {
    pub fn of(eps: Option<f64>) -> Prenorm {
        Prenorm {
            prenorm: eps.is_some(),
            eps: eps.map(f32_literal).unwrap_or_default(),
            eps_text: eps.map(|e| format!("{e:e}")).unwrap_or_default(),
        }
    }
}

/// `swiglu.mlir.tera`.
#[derive(Serialize)]
pub struct SwiGlu {
    pub dim: u64,
    pub hidden: u64,
    /// The hidden activations on the heap (see `ops::STACK_FLOATS`).
    pub heap: bool,
    #[serde(flatten)]
    pub prenorm: Prenorm,
    pub residual: bool,
}

/// `moe.mlir.tera`.
#[derive(Serialize)]
pub struct Moe {
    pub dim: u64,
    pub experts: u64,
    pub top_k: u64,
    /// Hidden width of a routed expert.
    pub hidden: u64,
    pub shared: u64,
    /// Hidden width of a shared expert (0 without shared experts).
    pub shared_hidden: u64,
    /// The larger hidden width (the scratch buffer's size).
    pub hmax: u64,
    /// That buffer on the heap (see `ops::STACK_FLOATS`).
    pub heap: bool,
    pub router_bias: bool,
    #[serde(flatten)]
    pub prenorm: Prenorm,
    pub residual: bool,
}

/// `act_halt.mlir.tera`, `lti_decay.mlir.tera`: the model width.
#[derive(Serialize)]
pub struct Dim {
    pub dim: u64,
}

/// `loop_embedding_vec.mlir.tera`.
#[derive(Serialize)]
pub struct LoopEmbeddingVec {
    pub channels: u64,
    /// Frequencies: `ceil(channels / 2)` (sines first, then cosines).
    pub freqs: u64,
    /// `channels` and `theta` as exact f32 literals.
    pub channels_f32: String,
    pub theta: String,
    pub theta_text: String,
}

/// `lora_scale.mlir.tera`.
#[derive(Serialize)]
pub struct LoraScale {
    pub max_iters: u64,
    pub rank: u64,
}

/// `lora_apply.mlir.tera`.
#[derive(Serialize)]
pub struct LoraApply {
    pub dim: u64,
    pub rank: u64,
}

/// The softmax scale `qk^-0.5`, computed in f32 like the reference.
pub(crate) fn attention_scale(qk: u64) -> f32 {
    (qk as f32).powf(-0.5)
}

/// `attention_gqa_proj`.
#[derive(Serialize)]
pub(crate) struct GqaProj {
    pub(crate) dim: u64,
    pub(crate) heads: u64,
    pub(crate) kv_heads: u64,
    pub(crate) head_dim: u64,
    pub(crate) half: u64,
    /// `heads * head_dim`.
    pub(crate) q_width: u64,
    /// `kv_heads * head_dim`.
    pub(crate) kv_width: u64,
    #[serde(flatten)]
    pub(crate) norm: Prenorm,
}

/// `attention_mla_proj`.
#[derive(Serialize)]
pub(crate) struct MlaProj {
    pub(crate) dim: u64,
    pub(crate) heads: u64,
    pub(crate) q_rank: u64,
    pub(crate) kv_rank: u64,
    pub(crate) rope: u64,
    pub(crate) nope: u64,
    pub(crate) half: u64,
    /// `nope + rope`.
    pub(crate) qk: u64,
    /// `heads * qk`.
    pub(crate) q_width: u64,
    /// `kv_rank + rope`: one compact cache row.
    pub(crate) lat_width: u64,
    #[serde(flatten)]
    pub(crate) norm: Prenorm,
    /// `q_norm`/`kv_norm` epsilon.
    pub(crate) norm_eps: String,
    pub(crate) norm_eps_text: String,
}

/// `attention_core`: GQA, or MLA after expansion (`kv_heads == heads`).
#[derive(Serialize)]
pub(crate) struct Core {
    pub(crate) dim: u64,
    pub(crate) heads: u64,
    pub(crate) kv_heads: u64,
    /// Query heads per kv head.
    pub(crate) group: u64,
    pub(crate) qk: u64,
    pub(crate) vd: u64,
    /// `heads * vd`: one row of attention outputs, the input of `wo`.
    pub(crate) attn_width: u64,
    pub(crate) scale: String,
    pub(crate) scale_text: String,
    pub(crate) residual: bool,
}

impl Core {
    pub(crate) fn new(
        dim: u64,
        heads: u64,
        kv_heads: u64,
        qk: u64,
        vd: u64,
        residual: bool,
    ) -> Core {
        Core {
            dim,
            heads,
            kv_heads,
            group: heads / kv_heads,
            qk,
            vd,
            attn_width: heads * vd,
            scale: f32_literal(attention_scale(qk) as f64),
            scale_text: format!("{qk}^-0.5"),
            residual,
        }
    }
}

/// `attention_mla_expand`, and the MLA sizes of `attention_mla_absorbed`.
#[derive(Serialize, Clone, Copy)]
pub(crate) struct MlaShape {
    pub(crate) heads: u64,
    pub(crate) kv_rank: u64,
    pub(crate) rope: u64,
    pub(crate) nope: u64,
    pub(crate) vd: u64,
    /// `nope + rope`.
    pub(crate) qk: u64,
    /// `kv_rank + rope`.
    pub(crate) lat_width: u64,
    /// `nope + vd`: rows of `kv_up` per head.
    pub(crate) kv_width: u64,
}

/// `attention_mla_absorbed`.
#[derive(Serialize)]
pub(crate) struct MlaAbsorbed {
    pub(crate) dim: u64,
    #[serde(flatten)]
    pub(crate) shape: MlaShape,
    /// `heads * vd`: one row of attention outputs, the input of `wo`.
    pub(crate) attn_width: u64,
    pub(crate) scale: String,
    pub(crate) scale_text: String,
    pub(crate) residual: bool,
}
