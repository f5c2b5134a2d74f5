//! Attention through compiled kernels, the host side of the split
//! documented in `backend/src/attention.rs`, written once for the mlir-cpu
//! kernels and the GPU kernels (each supplies a [`KernelHost`]).
//!
//! The projection kernel (grid: `rows`) computes the queries and the new
//! cache rows of every token; the host appends those rows to the layer's
//! entry of the caller's KV cache (the same entries as the reference
//! runtime's, by `(layer, iteration)`); then, per batch row, the core
//! kernel (grid: `tokens`) attends over the row's whole entry and applies
//! the output projection and the fused residual. GQA entries hold rotated
//! keys and values as in the reference; MLA entries always hold the compact
//! latent `[c_kv normalized | rotated k_rope]` (`cpu/kv.rs`), which gives
//! the reference's numbers whatever the layer's `kv_layout`: a
//! non-absorbed step expands it per batch row first (`attention_mla_expand`,
//! grid: `len`), an absorbed decode step attends over it directly
//! (`attention_mla_absorbed`).

use crate::kv::{KvStream, LayerCache};
use crate::launch::{Arg, ArgList, KernelHost, Tokens};
use mythos_compiler::ir::{AttentionOp, AttnKind};

/// One attention node: `kernels` are the plan's kernels for it (GQA
/// `[proj, core]`, MLA `[proj, expand, core, (absorbed)]`), `ins` its
/// operands (x, the prologue norm weight when fused, the weights in
/// `AttentionOp::weight_names` order), `rope` the cos/sin tables of this
/// call's positions. Returns the `[batch * seq, dim]` output.
pub(crate) fn run<H: KernelHost>(
    host: &H,
    kernels: &[H::Kernel],
    a: &AttentionOp,
    ins: &[Arg],
    (cos, sin): (Arg, Arg),
    t: Tokens,
    layer: &mut LayerCache<H::Stream>,
) -> Result<H::Buf, H::Error> {
    let Tokens {
        batch,
        seq,
        start,
        dim,
    } = t;
    let rows = batch * seq;
    let inputs = a.fusion.inputs();
    let w = |i: usize| ins[inputs + i];
    let x = ins[0];
    let mut out = host.alloc(rows * dim)?;
    let out_arg = host.arg(&mut out);
    let proj_sizes = [("rows", rows as u64), ("seq", seq as u64)];
    let core_sizes = [("tokens", seq as u64), ("start", start as u64)];
    // A projection's arguments: x, [g], its first `n` weights, cos, sin,
    // its outputs, rows, seq.
    let proj_args = |n: usize, outs: &[Arg]| {
        let mut l: ArgList = ins[..inputs + n].iter().copied().collect();
        l.extend([cos, sin]);
        l.extend(outs.iter().copied());
        l.extend([Arg::index(rows), Arg::index(seq)]);
        l
    };
    // A core kernel's arguments for batch row `b`: [x_b when the residual
    // is fused], its query rows, two buffers (keys and values; or the
    // latent and kv_up for the absorbed one), wo, scores, out_b, seq, start.
    let core_args = |b: usize, q: (Arg, usize), kv: [Arg; 2], wo: Arg, scores: Arg| {
        let mut l = ArgList::new();
        if a.fusion.residual {
            l.push(x.view(b * seq * dim, seq * dim));
        }
        l.push(q.0.view(b * seq * q.1, seq * q.1));
        l.extend(kv);
        l.extend([wo, scores, out_arg.view(b * seq * dim, seq * dim)]);
        l.extend([Arg::index(seq), Arg::index(start)]);
        l
    };
    // SAFETY (every launch and append below): buffers are sized by the
    // kernels' documented shapes (templates/mlir/*attention*), views lie
    // inside their buffers, and everything lives until the kernels have run.
    match a.kind {
        AttnKind::Gqa {
            heads,
            kv_heads,
            head_dim,
        } => {
            let (qw, kw) = ((heads * head_dim) as usize, (kv_heads * head_dim) as usize);
            // The owned buffers live to the end of the arm; the kernels
            // get their arguments.
            let mut bufs = (
                host.alloc(rows * qw)?,
                host.alloc(rows * kw)?,
                host.alloc(rows * kw)?,
            );
            let (q, k, v) = (
                host.arg(&mut bufs.0),
                host.arg(&mut bufs.1),
                host.arg(&mut bufs.2),
            );
            // x, [g], wq, wk, wv, cos, sin, q, k, v, rows, seq.
            let args = proj_args(3, &[q, k, v]);
            unsafe { host.launch(&kernels[0], args.as_slice(), &proj_sizes)? };
            let reserve = layer.capacity * kw;
            for b in 0..batch {
                let at = b * seq * kw;
                unsafe {
                    host.append(&mut layer.keys[b], k.view(at, seq * kw), reserve)?;
                    host.append(&mut layer.values[b], v.view(at, seq * kw), reserve)?;
                }
            }
            layer.len += seq;
            let mut scores_buf = host.scores(layer.len.max(start + seq))?;
            let scores = host.arg(&mut scores_buf);
            for b in 0..batch {
                let keys = host.stream_arg(&mut layer.keys[b])?;
                let values = host.stream_arg(&mut layer.values[b])?;
                let args = core_args(b, (q, qw), [keys, values], w(3), scores);
                unsafe { host.launch(&kernels[1], args.as_slice(), &core_sizes)? };
            }
        }
        AttnKind::Mla { .. } => {
            let k = a.kind;
            let (h, qk, vd) = (k.heads() as usize, k.qk_dim() as usize, k.v_dim() as usize);
            let lat_w = k.latent_width().expect("MLA has a latent") as usize;
            let mut bufs = (host.alloc(rows * h * qk)?, host.alloc(rows * lat_w)?);
            let (q, lat) = (host.arg(&mut bufs.0), host.arg(&mut bufs.1));
            // x, [g], q_down, q_norm, q_up_nope, q_up_rope, kv_down, kv_norm,
            // cos, sin, q, lat, rows, seq.
            let args = proj_args(6, &[q, lat]);
            unsafe { host.launch(&kernels[0], args.as_slice(), &proj_sizes)? };
            let reserve = layer.capacity * lat_w;
            for b in 0..batch {
                let src = lat.view(b * seq * lat_w, seq * lat_w);
                unsafe { host.append(&mut layer.latent[b], src, reserve)? };
            }
            layer.len += seq;
            let len = layer.len.max(start + seq);
            let mut scores_buf = host.scores(len)?;
            let scores = host.arg(&mut scores_buf);
            let kv_up = w(6);
            // A decode step of an absorbed layer attends over the latent
            // directly, as the reference does; anything else expands it.
            let absorbed = a.absorb && seq == 1 && kernels.len() > 3;
            let mut expanded = if absorbed {
                (host.alloc(0)?, host.alloc(0)?)
            } else {
                (host.alloc(len * h * qk)?, host.alloc(len * h * vd)?)
            };
            let (keys, values) = (host.arg(&mut expanded.0), host.arg(&mut expanded.1));
            for b in 0..batch {
                let latent = host.stream_arg(&mut layer.latent[b])?;
                let kv = if absorbed {
                    [latent, kv_up]
                } else {
                    let n = layer.latent[b].len() / lat_w;
                    let (kn, vn) = (keys.view(0, n * h * qk), values.view(0, n * h * vd));
                    let args = [latent, kv_up, kn, vn, Arg::index(n)];
                    unsafe { host.launch(&kernels[1], &args, &[("len", n as u64)])? };
                    [kn, vn]
                };
                let core = if absorbed { &kernels[3] } else { &kernels[2] };
                let args = core_args(b, (q, h * qk), kv, w(7), scores);
                unsafe { host.launch(core, args.as_slice(), &core_sizes)? };
            }
        }
    }
    Ok(out)
}
