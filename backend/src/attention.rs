//! Kernels of `attention` nodes (GQA and MLA), and the ABI the runtime
//! calls them with (`runtime/src/cpu/compiled_host.rs`).
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

use crate::vocab::ctx::{
    attention_scale, f32_literal, Core, GqaProj, MlaAbsorbed, MlaProj, MlaShape, Prenorm,
};
use crate::vocab::{KernelCtx, Request};
use mythos_compiler::ir::{AttentionOp, AttnKind, Module};
use mythos_compiler::plan::ArgKind;

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
                norm: Prenorm::of(prenorm),
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
                norm: Prenorm::of(prenorm),
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
                scale: f32_literal(attention_scale(qk) as f64),
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
