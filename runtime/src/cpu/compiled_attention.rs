//! Attention through compiled kernels (the `mlir-cpu` backend): the host
//! side of the split documented in `backend/src/attention.rs`.
//!
//! The projection kernel computes the queries and the new cache rows of
//! every token; the host appends those rows to the layer's entry of the
//! caller's [`KvCache`](super::kv::KvCache) (the same entries as the
//! reference runtime's, by `(layer, iteration)`); then, per batch row, the core
//! kernel attends over the whole entry and applies the output projection
//! and the fused residual. GQA entries hold rotated keys and values as in
//! the reference; MLA entries always hold the compact latent (`kv.rs`), which
//! gives the reference's numbers whatever the layer's `kv_layout`.

use super::compiled::{call, Desc, Descs, KernelFn, Words};
use super::kernels::Rope;
use super::kv::CacheKey;
use super::pool::Buf;
use super::{Ctx, Value};
use mythos_compiler::ir::{AttentionOp, AttnKind};

/// The buffer of an operand: an activation, a weight or a computed vector.
fn buf<'a>(v: &'a Value) -> &'a [f32] {
    match v {
        Value::Act(v, _) => v,
        other => other.weight(),
    }
}

/// One attention node: `fns` are the plan's kernels for it (GQA
/// `[proj, core]`, MLA `[proj, expand, core, (absorbed)]`), `args` its
/// operands (x, the prologue norm weight when fused, the weights in
/// `AttnKind::weight_names` order).
pub(super) fn run<'w>(
    fns: &[KernelFn],
    a: &AttentionOp,
    args: &[&Value<'w>],
    ctx: &mut Ctx,
    iteration: Option<usize>,
    rope: &Rope,
) -> Value<'w> {
    let (x, dim) = args[0].act();
    let (batch, seq, start) = (ctx.batch, ctx.seq, ctx.start);
    let rows = batch * seq;
    // The reference's own RoPE tables (`rope` covers positions from 0),
    // cut to this call's positions and passed to the kernels as buffers:
    // the rotations use bitwise the reference's cos/sin.
    let at = (start - rope.start) * rope.half..(start - rope.start + seq) * rope.half;
    let (cos, sin) = (Desc::of(&rope.cos[at.clone()]), Desc::of(&rope.sin[at]));
    // x and the prologue norm weight, then the weights (descriptors on the
    // stack: a call allocates nothing).
    let inputs = a.fusion.inputs();
    let w = |i: usize| buf(args[inputs + i]);
    let mut ins = Descs::new();
    for v in args {
        ins.push(buf(v));
    }
    let ins = ins.as_slice();
    let mut out = Buf::<f32>::zeroed(rows * dim);
    let residual = a.fusion.residual;
    let x_rows = |b: usize| &x[b * seq * dim..(b + 1) * seq * dim];
    // A projection kernel's words: x, [g], its first `n` weights, cos, sin,
    // its outputs, rows, seq.
    let proj_words = |n: usize, outs: &[Desc<f32>]| {
        let mut words = Words::new();
        words.extend(ins[..inputs + n].iter().map(Desc::word));
        words.extend([cos.word(), sin.word()]);
        words.extend(outs.iter().map(Desc::word));
        words.extend([rows, seq]);
        words
    };
    // A core kernel's words for batch row `b`: [x_b when the residual is
    // fused], its four buffers (query, keys, values, wo; or query, latent,
    // kv_up, wo for the absorbed one), scores, output, seq, start.
    let core_words = |xb: &Desc<f32>, bufs: [&Desc<f32>; 4], sc: &Desc<f32>, ob: &Desc<f32>| {
        let mut words = Words::new();
        if residual {
            words.push(xb.word());
        }
        words.extend(bufs.iter().map(|d| d.word()));
        words.extend([sc.word(), ob.word(), seq, start]);
        words
    };
    match a.kind {
        AttnKind::Gqa {
            heads,
            kv_heads,
            head_dim,
        } => {
            let (qw, kw) = ((heads * head_dim) as usize, (kv_heads * head_dim) as usize);
            let mut q = Buf::<f32>::zeroed(rows * qw);
            let mut k = Buf::<f32>::zeroed(rows * kw);
            let mut v = Buf::<f32>::zeroed(rows * kw);
            {
                let outs = [
                    Desc::of_mut(&mut q),
                    Desc::of_mut(&mut k),
                    Desc::of_mut(&mut v),
                ];
                // x, [g], wq, wk, wv, cos, sin, q, k, v, rows, seq.
                let words = proj_words(3, &outs);
                // SAFETY: `attention_gqa_proj`'s signature; q/k/v hold `rows` rows.
                unsafe { call(fns[0], words.as_slice()) };
            }
            let layer = ctx.cache.entry(CacheKey::of(&a.cache, iteration), batch);
            for b in 0..batch {
                layer.append_kv(b, seq, (&k, kw), (&v, kw));
            }
            layer.len += seq;
            let mut scores = Buf::<f32>::zeroed(layer.len.max(start + seq));
            let wo = Desc::of(w(3));
            for b in 0..batch {
                let xb = Desc::of(x_rows(b));
                let qb = Desc::of(&q[b * seq * qw..(b + 1) * seq * qw]);
                let (keys, values) = (Desc::of(&layer.keys[b]), Desc::of(&layer.values[b]));
                let sc = Desc::of_mut(&mut scores);
                let ob = Desc::of_mut(&mut out[b * seq * dim..(b + 1) * seq * dim]);
                let words = core_words(&xb, [&qb, &keys, &values, &wo], &sc, &ob);
                // SAFETY: `attention_core`'s signature; the entry holds
                // `start + seq` positions and `scores` as many floats.
                unsafe { call(fns[1], words.as_slice()) };
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
            let mut q = Buf::<f32>::zeroed(rows * h * qk);
            let mut lat = Buf::<f32>::zeroed(rows * lat_w);
            {
                let outs = [Desc::of_mut(&mut q), Desc::of_mut(&mut lat)];
                // x, [g], q_down, q_norm, q_up_nope, q_up_rope, kv_down,
                // kv_norm, cos, sin, q, lat, rows, seq.
                let words = proj_words(6, &outs);
                // SAFETY: `attention_mla_proj`'s signature; q/lat hold `rows` rows.
                unsafe { call(fns[0], words.as_slice()) };
            }
            let layer = ctx.cache.entry(CacheKey::of(&a.cache, iteration), batch);
            for b in 0..batch {
                let at = b * seq * lat_w..(b + 1) * seq * lat_w;
                layer.append_latent(b, &lat[at], lat_w);
            }
            layer.len += seq;
            let len = layer.len.max(start + seq);
            let mut scores = Buf::<f32>::zeroed(len);
            let (kv_up, wo) = (Desc::of(w(6)), Desc::of(w(7)));
            // A decode step of an absorbed layer attends over the latent
            // directly, as the reference does; anything else expands it.
            let absorbed = a.absorb && seq == 1 && fns.len() > 3;
            let (mut keys, mut values) = if absorbed {
                (Buf::<f32>::default(), Buf::<f32>::default())
            } else {
                (Buf::zeroed(len * h * qk), Buf::zeroed(len * h * vd))
            };
            for b in 0..batch {
                let cached = &layer.latent[b];
                let n = cached.len() / lat_w;
                let latent = Desc::of(cached);
                if !absorbed {
                    let (kd, vdsc) = (
                        Desc::of_mut(&mut keys[..n * h * qk]),
                        Desc::of_mut(&mut values[..n * h * vd]),
                    );
                    let words = [latent.word(), kv_up.word(), kd.word(), vdsc.word(), n];
                    // SAFETY: `attention_mla_expand`'s signature; keys and
                    // values hold `n` positions.
                    unsafe { call(fns[1], words.as_slice()) };
                }
                let xb = Desc::of(x_rows(b));
                let qb = Desc::of(&q[b * seq * h * qk..(b + 1) * seq * h * qk]);
                let sc = Desc::of_mut(&mut scores);
                let ob = Desc::of_mut(&mut out[b * seq * dim..(b + 1) * seq * dim]);
                let (kd, vdsc) = (Desc::of(&keys), Desc::of(&values));
                let bufs = if absorbed {
                    [&qb, &latent, &kv_up, &wo]
                } else {
                    [&qb, &kd, &vdsc, &wo]
                };
                let words = core_words(&xb, bufs, &sc, &ob);
                // SAFETY: `attention_mla_absorbed` / `attention_core`'s
                // signature; the entry holds `start + seq` positions.
                unsafe { call(fns[if absorbed { 3 } else { 2 }], words.as_slice()) };
            }
        }
    }
    Value::Act(out, dim)
}
