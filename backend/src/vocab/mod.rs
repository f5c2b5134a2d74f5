//! The backend's vocabulary: what a kernel is (its typed context, the
//! request a node makes, the variant a target renders) and why lowering
//! fails. A leaf module: it imports nothing from the rest of the backend,
//! and every other module (the lowering in `kernels`, the composite
//! requests in `ops` and `attention`, the targets in `cpu` and `cuda`, the
//! renderer) builds on it, so `backend/src` has no import cycle.

pub(crate) mod ctx;

use mythos_compiler::plan::ArgKind;
use serde::Serialize;
use serde_json::Value as Json;

/// Why a module cannot be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("the MLIR backend cannot lower `{op}` ({label}) yet; run it with the CPU reference runtime (--backend cpu)")]
    Unsupported { op: String, label: String },
    #[error("no {target} kernel for `{kind}` yet (needed by `{op}` {label}); compile with partial lowering or run it on another backend")]
    NoVariant {
        target: String,
        kind: String,
        op: String,
        label: String,
    },
    #[error("kernel template `{template}` failed to render: {message}")]
    Template { template: String, message: String },
}

/// A kernel's typed context: one variant per kernel kind, each named as its
/// template (`templates/mlir/<kind>.mlir.tera`). Serialized as the bare
/// struct for the templates.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum KernelCtx {
    Rowwise(ctx::Rowwise),
    Linear(ctx::Linear),
    Embedding(ctx::Embedding),
    SwiGlu(ctx::SwiGlu),
    Moe(ctx::Moe),
    ActHalt(ctx::Dim),
    LtiDecay(ctx::Dim),
    LoopEmbeddingVec(ctx::LoopEmbeddingVec),
    LoraScale(ctx::LoraScale),
    LoraApply(ctx::LoraApply),
    AttentionGqaProj(ctx::GqaProj),
    AttentionMlaProj(ctx::MlaProj),
    AttentionMlaExpand(ctx::MlaShape),
    AttentionCore(ctx::Core),
    AttentionMlaAbsorbed(ctx::MlaAbsorbed),
}

impl KernelCtx {
    /// The kernel kind: its template's name.
    pub fn template(&self) -> &'static str {
        match self {
            KernelCtx::Rowwise(_) => "rowwise",
            KernelCtx::Linear(_) => "linear",
            KernelCtx::Embedding(_) => "embedding",
            KernelCtx::SwiGlu(_) => "swiglu",
            KernelCtx::Moe(_) => "moe",
            KernelCtx::ActHalt(_) => "act_halt",
            KernelCtx::LtiDecay(_) => "lti_decay",
            KernelCtx::LoopEmbeddingVec(_) => "loop_embedding_vec",
            KernelCtx::LoraScale(_) => "lora_scale",
            KernelCtx::LoraApply(_) => "lora_apply",
            KernelCtx::AttentionGqaProj(_) => "attention_gqa_proj",
            KernelCtx::AttentionMlaProj(_) => "attention_mla_proj",
            KernelCtx::AttentionMlaExpand(_) => "attention_mla_expand",
            KernelCtx::AttentionCore(_) => "attention_core",
            KernelCtx::AttentionMlaAbsorbed(_) => "attention_mla_absorbed",
        }
    }
}

/// One kernel a node needs: its typed context and argument kinds.
pub(crate) struct Request {
    pub ctx: KernelCtx,
    /// Argument kinds in call order.
    pub args: Vec<ArgKind>,
}

impl Request {
    pub(crate) fn new(ctx: KernelCtx, args: Vec<ArgKind>) -> Request {
        Request { ctx, args }
    }

    pub(crate) fn template(&self) -> &'static str {
        self.ctx.template()
    }
}

/// How a target renders the kernels: the CPU uses each kind's template as
/// it is; CUDA (`crate::cuda`) picks a GPU variant of each kind.
pub(crate) trait KernelTarget {
    /// Names the target in messages (`GPU`).
    fn name(&self) -> &str;
    /// This target's variant of a kernel, or `None` when it has none yet.
    fn variant(&self, req: &Request) -> Option<Variant>;
    /// The module text around the rendered kernels.
    fn module(&self, kernels: &[String]) -> String;
}

/// The template a target renders for a kernel, what it adds to the
/// kernel's context, and (CUDA) how the kernel is launched.
pub(crate) struct Variant {
    pub template: String,
    pub extra: serde_json::Map<String, Json>,
    pub gpu: Option<mythos_compiler::plan::GpuLaunch>,
}
