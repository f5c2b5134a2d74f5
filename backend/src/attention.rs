//! Kernels of `attention` nodes (GQA and MLA), and the ABI the runtime
//! calls them with (`runtime/src/cpu/compiled_attention.rs`).
//!
//! An attention node is split where the KV cache is: the host owns the
//! cache (it grows between calls and lives across forwards), so the node
//! becomes
//!
//! 1. a projection kernel over every token row (`attention_gqa_proj`,
//!    `attention_mla_proj`): the fused prologue norm, the queries and the
//!    new cache rows (GQA: rotated k and v; MLA: the compact latent
//!    `[rmsnorm(c_kv) | rotated k_rope]`), RoPE at position
//!    `start + (row mod seq)` from the runtime's own tables;
//! 2. the host appends the new rows to the layer's cache entry;
//! 3. per batch row, a core kernel: causal attention over the cached
//!    positions, the output projection and the fused residual
//!    (`attention_core`; MLA first expands its latent to per-head keys and
//!    values with `attention_mla_expand`, or, for a decode step of an
//!    absorbed layer, attends over the latent with `attention_mla_absorbed`).
//!
//! Kernels of a plan step, in order: GQA `[proj, core]`; MLA
//! `[proj, expand, core]`, plus `absorbed` when `absorb` is set. Each
//! template documents its arguments.

use crate::kernels::ctx::f32_literal;
use crate::kernels::{KernelCtx, Request};
use mythos_compiler::ir::{AttentionOp, AttnKind, Module};
use mythos_compiler::plan::ArgKind;
use serde::Serialize;

/// The kernels of one attention node.
pub(crate) fn requests(module: &Module, a: &AttentionOp) -> Vec<Request> {
    let dim = module.dim;
    let prenorm = a.fusion.prenorm;
    let residual = a.fusion.residual;
    let f32s = |n: usize| vec![ArgKind::F32; n];
    let index = |n: usize| vec![ArgKind::Index; n];
    // Operands before the weights: x and the prologue norm's weight.
    let inputs = a.fusion.inputs();
    // Core kernels: [x], q, keys/latent, (values), weights, scores, out, tokens, start.
    let core_args = |buffers: usize| {
        let mut v = f32s(usize::from(residual) + buffers + 2);
        v.extend(index(2));
        v
    };
    match a.kind {
        AttnKind::Gqa {
            heads,
            kv_heads,
            head_dim,
        } => {
            let proj = GqaProj {
                dim,
                heads,
                kv_heads,
                head_dim,
                half: head_dim / 2,
                q_width: heads * head_dim,
                kv_width: kv_heads * head_dim,
                norm: Norm::of(prenorm),
            };
            // x, [g], wq, wk, wv, cos, sin, q, k, v, rows, seq.
            let mut proj_args = f32s(inputs + 3 + 2 + 3);
            proj_args.extend(index(2));
            vec![
                Request::new(KernelCtx::AttentionGqaProj(proj), proj_args),
                // q, keys, values, wo.
                Request::new(
                    KernelCtx::AttentionCore(Core::new(
                        dim, heads, kv_heads, head_dim, head_dim, residual,
                    )),
                    core_args(4),
                ),
            ]
        }
        AttnKind::Mla {
            heads,
            q_rank,
            kv_rank,
            rope_dim,
            nope_dim,
            v_dim,
        } => {
            let qk = nope_dim + rope_dim;
            let proj = MlaProj {
                dim,
                heads,
                q_rank,
                kv_rank,
                rope: rope_dim,
                nope: nope_dim,
                half: rope_dim / 2,
                qk,
                q_width: heads * qk,
                lat_width: kv_rank + rope_dim,
                norm: Norm::of(prenorm),
                norm_eps: f32_literal(a.norm_eps),
                norm_eps_text: format!("{:e}", a.norm_eps),
            };
            let shape = MlaShape {
                heads,
                kv_rank,
                rope: rope_dim,
                nope: nope_dim,
                vd: v_dim,
                qk,
                lat_width: kv_rank + rope_dim,
                kv_width: nope_dim + v_dim,
            };
            let absorbed = MlaAbsorbed {
                dim,
                shape,
                attn_width: heads * v_dim,
                scale: f32_literal(scale(qk) as f64),
                scale_text: format!("{qk}^-0.5"),
                residual,
            };
            // x, [g], q_down, q_norm, q_up_nope, q_up_rope, kv_down, kv_norm,
            // cos, sin, q, lat, rows, seq.
            let mut proj_args = f32s(inputs + 6 + 2 + 2);
            proj_args.extend(index(2));
            // lat, kv_up, keys, values, len.
            let mut expand_args = f32s(4);
            expand_args.extend(index(1));
            let mut out = vec![
                Request::new(KernelCtx::AttentionMlaProj(proj), proj_args),
                Request::new(KernelCtx::AttentionMlaExpand(shape), expand_args),
                Request::new(
                    KernelCtx::AttentionCore(Core::new(dim, heads, heads, qk, v_dim, residual)),
                    core_args(4),
                ),
            ];
            if a.absorb {
                // q, lat, kv_up, wo.
                out.push(Request::new(
                    KernelCtx::AttentionMlaAbsorbed(absorbed),
                    core_args(4),
                ));
            }
            out
        }
    }
}

/// The softmax scale `qk^-0.5`, computed in f32 like the reference.
fn scale(qk: u64) -> f32 {
    (qk as f32).powf(-0.5)
}

/// The fused prologue RMSNorm of a projection kernel, if any.
#[derive(Serialize)]
pub(crate) struct Norm {
    prenorm: bool,
    /// Its epsilon as an exact f32 literal.
    eps: String,
    eps_text: String,
}

impl Norm {
    fn of(eps: Option<f64>) -> Norm {
        Norm {
            prenorm: eps.is_some(),
            eps: eps.map(f32_literal).unwrap_or_default(),
            eps_text: eps.map(|e| format!("{e:e}")).unwrap_or_default(),
        }
    }
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
    pub(crate) norm: Norm,
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
    pub(crate) norm: Norm,
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
    fn new(dim: u64, heads: u64, kv_heads: u64, qk: u64, vd: u64, residual: bool) -> Core {
        Core {
            dim,
            heads,
            kv_heads,
            group: heads / kv_heads,
            qk,
            vd,
            attn_width: heads * vd,
            scale: f32_literal(scale(qk) as f64),
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
