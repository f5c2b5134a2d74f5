//! Causal attention, GQA and MLA, with the KV cache. Semantics follow
//! OpenMythos (shared/openmythos-reference.md, items 4-6): RoPE on interleaved
//! pairs, KV heads serving consecutive groups of query heads, scale
//! `head_dim^-0.5` (MLA: `(nope + rope)^-0.5`). Masking is by absolute
//! position (key `s` is visible to the query at position `p` iff `s <= p`),
//! which equals the reference's mask wherever the reference works and also
//! handles a prefill after a cached prefix.

use super::kernels::{dot, gemm_strided, linear, linear_new, rmsnorm, softmax, Rope};
use super::kv::LayerCache;
use rayon::prelude::*;

/// The activations an attention layer sees.
pub struct Input<'a> {
    /// `batch * seq` rows of `dim`.
    pub x: &'a [f32],
    pub batch: usize,
    pub seq: usize,
    pub dim: usize,
    /// Absolute position of the first token.
    pub start: usize,
}

/// Scaled dot-product attention of one batch row's queries against its cache.
/// `q`: `tokens * heads * qk` (one query per token and head), keys
/// `len * kv_heads * qk`, values `len * kv_heads * vd`; `out`: `tokens * heads * vd`.
/// Per head: scores = Q K^T (one GEMM), causal mask by absolute position,
/// softmax, then P V (one GEMM); heads run in parallel.
#[allow(clippy::too_many_arguments)]
fn attend(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    heads: usize,
    kv_heads: usize,
    qk: usize,
    vd: usize,
    scale: f32,
    out: &mut [f32],
) {
    let tokens = q.len() / (heads * qk);
    let len = keys.len() / (kv_heads * qk);
    let group = heads / kv_heads;
    if tokens == 1 {
        attend_one(q, keys, values, start, heads, kv_heads, qk, vd, scale, out);
        return;
    }
    // Queries go in blocks: a block only needs the keys up to its last
    // position, so a causal prefill computes about half of the full scores.
    const BLOCK: usize = 64;
    let per_head: Vec<Vec<f32>> = (0..heads)
        .into_par_iter()
        .map(|h| {
            let kvh = h / group;
            let mut o = vec![0.0f32; tokens * vd];
            let mut scores = Vec::new();
            for t0 in (0..tokens).step_by(BLOCK) {
                let rows = BLOCK.min(tokens - t0);
                let keys_needed = (start + t0 + rows).min(len);
                scores.clear();
                scores.resize(rows * keys_needed, 0.0);
                gemm_strided(
                    rows,
                    qk,
                    keys_needed,
                    &q[t0 * heads * qk + h * qk..],
                    heads * qk,
                    1,
                    &keys[kvh * qk..],
                    1,
                    kv_heads * qk,
                    &mut scores,
                    keys_needed,
                    1,
                );
                for (i, row) in scores.chunks_exact_mut(keys_needed).enumerate() {
                    let visible = start + t0 + i + 1;
                    for v in row[..visible].iter_mut() {
                        *v *= scale;
                    }
                    row[visible..].fill(f32::NEG_INFINITY);
                    softmax(row);
                }
                gemm_strided(
                    rows,
                    keys_needed,
                    vd,
                    &scores,
                    keys_needed,
                    1,
                    &values[kvh * vd..],
                    kv_heads * vd,
                    1,
                    &mut o[t0 * vd..],
                    vd,
                    1,
                );
            }
            o
        })
        .collect();
    for (h, o) in per_head.iter().enumerate() {
        for t in 0..tokens {
            out[(t * heads + h) * vd..(t * heads + h + 1) * vd]
                .copy_from_slice(&o[t * vd..(t + 1) * vd]);
        }
    }
}

/// One query per head (a decode step): dot products over the cache, no GEMM
/// set-up, and threads only when the cache is long enough to pay for them.
#[allow(clippy::too_many_arguments)]
fn attend_one(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    start: usize,
    heads: usize,
    kv_heads: usize,
    qk: usize,
    vd: usize,
    scale: f32,
    out: &mut [f32],
) {
    let visible = start + 1;
    let group = heads / kv_heads;
    let head = |h: usize, o: &mut [f32]| {
        let kvh = h / group;
        let qv = &q[h * qk..(h + 1) * qk];
        let mut scores: Vec<f32> = (0..visible)
            .map(|s| {
                dot(
                    qv,
                    &keys[(s * kv_heads + kvh) * qk..(s * kv_heads + kvh + 1) * qk],
                ) * scale
            })
            .collect();
        softmax(&mut scores);
        o.fill(0.0);
        for (s, &p) in scores.iter().enumerate() {
            let v = &values[(s * kv_heads + kvh) * vd..(s * kv_heads + kvh + 1) * vd];
            for (o, &v) in o.iter_mut().zip(v) {
                *o += p * v;
            }
        }
    };
    if visible * heads * (qk + vd) >= 1 << 16 {
        out.par_chunks_mut(vd)
            .enumerate()
            .for_each(|(h, o)| head(h, o));
    } else {
        out.chunks_mut(vd).enumerate().for_each(|(h, o)| head(h, o));
    }
}

/// GQA weights: `wq [H*hd, d]`, `wk`, `wv [Hkv*hd, d]`, `wo [d, H*hd]`.
pub struct GqaWeights<'a> {
    pub wq: &'a [f32],
    pub wk: &'a [f32],
    pub wv: &'a [f32],
    pub wo: &'a [f32],
}

pub fn gqa(
    inp: &Input,
    w: &GqaWeights,
    heads: usize,
    kv_heads: usize,
    hd: usize,
    rope: &Rope,
    cache: &mut LayerCache,
) -> Vec<f32> {
    let (b_n, t_n, d) = (inp.batch, inp.seq, inp.dim);
    let rows = b_n * t_n;
    let mut q = linear_new(inp.x, rows, d, w.wq, heads * hd);
    let mut k = linear_new(inp.x, rows, d, w.wk, kv_heads * hd);
    let v = linear_new(inp.x, rows, d, w.wv, kv_heads * hd);
    for r in 0..rows {
        let pos = inp.start + r % t_n;
        for h in 0..heads {
            rope.apply(&mut q[(r * heads + h) * hd..(r * heads + h + 1) * hd], pos);
        }
        for h in 0..kv_heads {
            rope.apply(
                &mut k[(r * kv_heads + h) * hd..(r * kv_heads + h + 1) * hd],
                pos,
            );
        }
    }
    let width = kv_heads * hd;
    let mut attn = vec![0.0f32; rows * heads * hd];
    for b in 0..b_n {
        let range = b * t_n * width..(b + 1) * t_n * width;
        cache.keys[b].extend_from_slice(&k[range.clone()]);
        cache.values[b].extend_from_slice(&v[range]);
        attend(
            &q[b * t_n * heads * hd..(b + 1) * t_n * heads * hd],
            &cache.keys[b],
            &cache.values[b],
            inp.start,
            heads,
            kv_heads,
            hd,
            hd,
            (hd as f32).powf(-0.5),
            &mut attn[b * t_n * heads * hd..(b + 1) * t_n * heads * hd],
        );
    }
    cache.len += t_n;
    linear_new(&attn, rows, heads * hd, w.wo, d)
}

/// MLA weights in OpenMythos order.
pub struct MlaWeights<'a> {
    pub q_down: &'a [f32],
    pub q_norm: &'a [f32],
    pub q_up_nope: &'a [f32],
    pub q_up_rope: &'a [f32],
    pub kv_down: &'a [f32],
    pub kv_norm: &'a [f32],
    pub kv_up: &'a [f32],
    pub wo: &'a [f32],
}

/// MLA sizes.
pub struct MlaDims {
    pub heads: usize,
    pub q_rank: usize,
    pub kv_rank: usize,
    pub rope: usize,
    pub nope: usize,
    pub v: usize,
}

pub fn mla(
    inp: &Input,
    w: &MlaWeights,
    m: &MlaDims,
    eps: f64,
    rope: &Rope,
    cache: &mut LayerCache,
) -> Vec<f32> {
    let (b_n, t_n, d) = (inp.batch, inp.seq, inp.dim);
    let rows = b_n * t_n;
    let h_n = m.heads;
    let qk = m.nope + m.rope;
    // Queries: [q_nope | rope(q_rope)] per head.
    let mut c_q = linear_new(inp.x, rows, d, w.q_down, m.q_rank);
    let raw = c_q.clone();
    rmsnorm(&raw, m.q_rank, w.q_norm, eps, &mut c_q);
    let q_nope = linear_new(&c_q, rows, m.q_rank, w.q_up_nope, h_n * m.nope);
    let mut q_rope = linear_new(&c_q, rows, m.q_rank, w.q_up_rope, h_n * m.rope);
    let mut q = vec![0.0f32; rows * h_n * qk];
    for r in 0..rows {
        let pos = inp.start + r % t_n;
        for h in 0..h_n {
            let qr = &mut q_rope[(r * h_n + h) * m.rope..(r * h_n + h + 1) * m.rope];
            rope.apply(qr, pos);
            let dst = &mut q[(r * h_n + h) * qk..(r * h_n + h + 1) * qk];
            dst[..m.nope]
                .copy_from_slice(&q_nope[(r * h_n + h) * m.nope..(r * h_n + h + 1) * m.nope]);
            dst[m.nope..].copy_from_slice(qr);
        }
    }
    // New keys and values from the latent: c_kv (cached before its norm) and one rope key.
    let latent_w = m.kv_rank + m.rope;
    let mut kv_raw = linear_new(inp.x, rows, d, w.kv_down, latent_w);
    for r in 0..rows {
        let pos = inp.start + r % t_n;
        rope.apply(
            &mut kv_raw[r * latent_w + m.kv_rank..(r + 1) * latent_w],
            pos,
        );
    }
    let mut c_kv = vec![0.0f32; rows * m.kv_rank];
    for r in 0..rows {
        c_kv[r * m.kv_rank..(r + 1) * m.kv_rank]
            .copy_from_slice(&kv_raw[r * latent_w..r * latent_w + m.kv_rank]);
    }
    let normed = {
        let mut n = vec![0.0f32; c_kv.len()];
        rmsnorm(&c_kv, m.kv_rank, w.kv_norm, eps, &mut n);
        n
    };
    let kv = linear_new(&normed, rows, m.kv_rank, w.kv_up, h_n * (m.nope + m.v));
    let mut keys = vec![0.0f32; rows * h_n * qk];
    let mut values = vec![0.0f32; rows * h_n * m.v];
    for r in 0..rows {
        let k_rope = &kv_raw[r * latent_w + m.kv_rank..(r + 1) * latent_w];
        for h in 0..h_n {
            let src = &kv[(r * h_n + h) * (m.nope + m.v)..(r * h_n + h + 1) * (m.nope + m.v)];
            let k = &mut keys[(r * h_n + h) * qk..(r * h_n + h + 1) * qk];
            k[..m.nope].copy_from_slice(&src[..m.nope]);
            k[m.nope..].copy_from_slice(k_rope);
            values[(r * h_n + h) * m.v..(r * h_n + h + 1) * m.v].copy_from_slice(&src[m.nope..]);
        }
    }
    let mut attn = vec![0.0f32; rows * h_n * m.v];
    for b in 0..b_n {
        cache.latent[b].extend_from_slice(&kv_raw[b * t_n * latent_w..(b + 1) * t_n * latent_w]);
        cache.keys[b].extend_from_slice(&keys[b * t_n * h_n * qk..(b + 1) * t_n * h_n * qk]);
        cache.values[b].extend_from_slice(&values[b * t_n * h_n * m.v..(b + 1) * t_n * h_n * m.v]);
        attend(
            &q[b * t_n * h_n * qk..(b + 1) * t_n * h_n * qk],
            &cache.keys[b],
            &cache.values[b],
            inp.start,
            h_n,
            h_n,
            qk,
            m.v,
            (qk as f32).powf(-0.5),
            &mut attn[b * t_n * h_n * m.v..(b + 1) * t_n * h_n * m.v],
        );
    }
    cache.len += t_n;
    let mut out = vec![0.0f32; rows * d];
    linear(&attn, rows, h_n * m.v, w.wo, d, &mut out);
    out
}
