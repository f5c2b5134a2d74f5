//! Attention on the device: the host side of the split documented in
//! `backend/src/attention.rs`, as `cpu/compiled_attention.rs` does it on
//! the CPU. The projection kernel (grid: `rows`) computes the queries and
//! the new cache rows of every token; they are appended to the layer's
//! device cache entry by device-to-device copies; then per batch row the
//! core kernel (grid: `tokens`) attends over the row's whole entry and
//! applies the output projection and the fused residual. MLA entries hold
//! the compact latent; a non-absorbed step expands it per batch row first
//! (`attention_mla_expand`, grid: `len`), an absorbed decode step attends
//! over it directly (`attention_mla_absorbed`). The cores' `scores` buffer
//! is unused on the GPU: a one-element placeholder is passed.

use super::abi::Arg;
use super::kernels::{launch, Kernel};
use super::kv::{alloc, dptr};
use super::runtime::{buf_arg, Ctx, CudaRuntime, Value};
use super::CudaError;
use crate::cpu::kernels::Rope;
use crate::cpu::kv::CacheKey;
use mythos_compiler::ir::{AttentionOp, AttnKind};
use std::sync::Arc;

/// `len` f32s at element `at` of a buffer.
fn view(base: u64, at: usize, len: usize) -> Arg {
    Arg::Buf {
        ptr: base + 4 * at as u64,
        len,
    }
}

/// One attention node: `ks` are the plan's kernels (GQA `[proj, core]`,
/// MLA `[proj, expand, core, (absorbed)]`), `args` its operands (x, the
/// prologue norm weight when fused, the weights in `weight_names` order).
pub(super) fn run<'w>(
    rt: &CudaRuntime,
    ks: &[Kernel],
    a: &AttentionOp,
    args: &[Value<'w>],
    ctx: &mut Ctx,
    iteration: Option<usize>,
) -> Result<Value<'w>, CudaError> {
    let dev = rt.dev;
    let dim = args[0].cols();
    let (batch, seq, start) = (ctx.batch, ctx.seq, ctx.start);
    let rows = batch * seq;
    let key = CacheKey::of(&a.cache, iteration);
    let rope_dim = a.rope_dims() as usize;
    // The reference's RoPE tables for this call's positions (bitwise its cos/sin).
    let rope_key = (rope_dim, a.rope_theta.to_bits());
    if let std::collections::hash_map::Entry::Vacant(slot) = ctx.ropes.entry(rope_key) {
        let r = Rope::new(rope_dim, start, seq, a.rope_theta);
        let up = |v: &Vec<f32>| {
            dev.stream
                .clone_htod(v)
                .map_err(CudaError::driver("cuMemcpyHtoD"))
        };
        slot.insert((up(&r.cos)?, up(&r.sin)?));
    }
    let (cos, sin) = &ctx.ropes[&rope_key];
    let (cos, sin) = (buf_arg(dev, cos), buf_arg(dev, sin));
    let inputs = a.fusion.inputs();
    let ins: Vec<Arg> = args.iter().map(|v| v.arg(dev, ctx)).collect();
    let w = &args[inputs..];
    let x = dptr(dev, args[0].slice());
    let out = alloc(dev, rows * dim)?;
    let outp = dptr(dev, &out);
    let scores = alloc(dev, 1)?;
    let scores = buf_arg(dev, &scores);
    let residual = a.fusion.residual;
    let proj_sizes = [("rows", rows as u64), ("seq", seq as u64)];
    let core_sizes = [("tokens", seq as u64), ("start", start as u64)];
    let layer = ctx.cache.entry(key, batch);
    // SAFETY (every launch and append below): buffers are sized by the
    // kernels' documented shapes (templates/mlir/gpu/attention_*), views lie
    // inside their buffers, and everything lives until the stream has run.
    match a.kind {
        AttnKind::Gqa {
            heads,
            kv_heads,
            head_dim,
        } => {
            let (qw, kw) = ((heads * head_dim) as usize, (kv_heads * head_dim) as usize);
            let (q, k, v) = (
                alloc(dev, rows * qw)?,
                alloc(dev, rows * kw)?,
                alloc(dev, rows * kw)?,
            );
            // x, [g], wq, wk, wv, cos, sin, q, k, v, rows, seq.
            let mut call = ins[..inputs + 3].to_vec();
            call.extend([
                cos,
                sin,
                buf_arg(dev, &q),
                buf_arg(dev, &k),
                buf_arg(dev, &v),
            ]);
            call.extend([Arg::Index(rows as u64), Arg::Index(seq as u64)]);
            unsafe { launch(dev, &ks[0], &call, &proj_sizes)? };
            let (kp, vp) = (dptr(dev, &k), dptr(dev, &v));
            for b in 0..batch {
                let at = 4 * (b * seq * kw) as u64;
                unsafe {
                    layer.keys[b].append(dev, kp + at, seq * kw)?;
                    layer.values[b].append(dev, vp + at, seq * kw)?;
                }
            }
            layer.len += seq;
            let len = layer.len;
            let (qp, wo) = (dptr(dev, &q), buf_arg(dev, w[3].slice()));
            for b in 0..batch {
                let mut call = Vec::with_capacity(9);
                if residual {
                    call.push(view(x, b * seq * dim, seq * dim));
                }
                call.push(view(qp, b * seq * qw, seq * qw));
                call.push(view(layer.keys[b].ptr(dev)?, 0, len * kw));
                call.push(view(layer.values[b].ptr(dev)?, 0, len * kw));
                call.extend([wo, scores, view(outp, b * seq * dim, seq * dim)]);
                call.extend([Arg::Index(seq as u64), Arg::Index(start as u64)]);
                unsafe { launch(dev, &ks[1], &call, &core_sizes)? };
            }
        }
        AttnKind::Mla {
            heads,
            kv_rank,
            rope_dim,
            nope_dim,
            v_dim,
            ..
        } => {
            let (h, qk, vd) = (
                heads as usize,
                (nope_dim + rope_dim) as usize,
                v_dim as usize,
            );
            let lat_w = (kv_rank + rope_dim) as usize;
            let (q, lat) = (alloc(dev, rows * h * qk)?, alloc(dev, rows * lat_w)?);
            // x, [g], q_down, q_norm, q_up_nope, q_up_rope, kv_down, kv_norm,
            // cos, sin, q, lat, rows, seq.
            let mut call = ins[..inputs + 6].to_vec();
            call.extend([cos, sin, buf_arg(dev, &q), buf_arg(dev, &lat)]);
            call.extend([Arg::Index(rows as u64), Arg::Index(seq as u64)]);
            unsafe { launch(dev, &ks[0], &call, &proj_sizes)? };
            let lp = dptr(dev, &lat);
            for b in 0..batch {
                let at = 4 * (b * seq * lat_w) as u64;
                unsafe { layer.latent[b].append(dev, lp + at, seq * lat_w)? };
            }
            layer.len += seq;
            let len = layer.len;
            let (kv_up, wo) = (buf_arg(dev, w[6].slice()), buf_arg(dev, w[7].slice()));
            // A decode step of an absorbed layer attends over the latent
            // directly, as the reference does; anything else expands it.
            let absorbed = a.absorb && seq == 1 && ks.len() > 3;
            let (keys, values) = if absorbed {
                (alloc(dev, 1)?, alloc(dev, 1)?)
            } else {
                (alloc(dev, len * h * qk)?, alloc(dev, len * h * vd)?)
            };
            let qp = dptr(dev, &q);
            for b in 0..batch {
                let latent = view(layer.latent[b].ptr(dev)?, 0, len * lat_w);
                if !absorbed {
                    let call = [
                        latent,
                        kv_up,
                        buf_arg(dev, &keys),
                        buf_arg(dev, &values),
                        Arg::Index(len as u64),
                    ];
                    unsafe { launch(dev, &ks[1], &call, &[("len", len as u64)])? };
                }
                let mut call = Vec::with_capacity(9);
                if residual {
                    call.push(view(x, b * seq * dim, seq * dim));
                }
                call.push(view(qp, b * seq * h * qk, seq * h * qk));
                if absorbed {
                    call.extend([latent, kv_up]);
                } else {
                    call.extend([buf_arg(dev, &keys), buf_arg(dev, &values)]);
                }
                call.extend([wo, scores, view(outp, b * seq * dim, seq * dim)]);
                call.extend([Arg::Index(seq as u64), Arg::Index(start as u64)]);
                let core = if absorbed { &ks[3] } else { &ks[2] };
                unsafe { launch(dev, core, &call, &core_sizes)? };
            }
        }
    }
    Ok(Value::Act(Arc::new(out), dim))
}
