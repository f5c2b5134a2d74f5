//! Causal attention, GQA and MLA, with the KV cache. Semantics follow
//! OpenMythos (shared/openmythos-reference.md, items 4-6): RoPE on interleaved
//! pairs, KV heads serving consecutive groups of query heads, scale
//! `head_dim^-0.5` (MLA: `(nope + rope)^-0.5`). Masking is by absolute
//! position (key `s` is visible to the query at position `p` iff `s <= p`),
//! which equals the reference's mask wherever the reference works and also
//! handles a prefill after a cached prefix.

use super::kernels::{axpy, dot, gemm_strided, linear_group, linear_new, rmsnorm, softmax, Rope};
#[cfg(target_arch = "x86_64")]
use super::kernels::{dot_avx2, has_avx2_fma, weighted_rows_avx2, Weights};
use super::kv::LayerCache;
use super::pool::Buf;
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
/// The query heads that share a KV head go together ([`kv_group`]), so each
/// cached key and value is read once per group. The scores of all heads
/// share one pooled buffer.
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
    let shape = GroupShape {
        kv_heads,
        qk,
        vd,
        visible,
        scale,
    };
    let run = |kvh: usize, (o, scores): (&mut [f32], &mut [f32])| {
        let qg = &q[kvh * group * qk..(kvh + 1) * group * qk];
        kv_group(qg, keys, values, kvh, &shape, scores, o);
    };
    let mut scores = Buf::<f32>::zeroed(heads * visible);
    if visible * heads * (qk + vd) >= 1 << 16 && kv_heads > 1 {
        out.par_chunks_mut(group * vd)
            .zip(scores.par_chunks_mut(group * visible))
            .enumerate()
            .for_each(|(kvh, bufs)| run(kvh, bufs));
    } else {
        out.chunks_mut(group * vd)
            .zip(scores.chunks_mut(group * visible))
            .enumerate()
            .for_each(|(kvh, bufs)| run(kvh, bufs));
    }
}

/// Sizes of one decode step's attention over the cache.
struct GroupShape {
    kv_heads: usize,
    qk: usize,
    vd: usize,
    /// Cached positions the query sees.
    visible: usize,
    scale: f32,
}

/// The query heads `q` (`[group, qk]`) that share KV head `kvh`, against
/// every visible cached position: `scores[g, s] = q_g . k_s * scale`,
/// softmax per head, `o[g] = sum_s p[g, s] v_s` (in position order, one
/// fused multiply-add per position where the CPU has FMA). With AVX2 and
/// groups of 1, 2 or 4 heads it runs as [`kv_group_avx2`].
fn kv_group(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    kvh: usize,
    sh: &GroupShape,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let (qk, vd, visible) = (sh.qk, sh.vd, sh.visible);
    let group = q.len() / qk;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() && matches!(group, 1 | 2 | 4) {
        let (k_at, v_at) = (kvh * qk, kvh * vd);
        let (k_stride, v_stride) = (sh.kv_heads * qk, sh.kv_heads * vd);
        let last = visible.saturating_sub(1);
        assert!(visible == 0 || k_at + last * k_stride + qk <= keys.len());
        assert!(visible == 0 || v_at + last * v_stride + vd <= values.len());
        assert!(scores.len() >= group * visible && o.len() >= group * vd);
        let rows = Rows {
            k_at,
            k_stride,
            v_at,
            v_stride,
        };
        // SAFETY: AVX2/FMA were detected; the asserts bound every key,
        // value, score and output access.
        unsafe {
            match group {
                1 => kv_group_avx2::<1>(q, keys, values, &rows, sh, scores, o),
                2 => kv_group_avx2::<2>(q, keys, values, &rows, sh, scores, o),
                _ => kv_group_avx2::<4>(q, keys, values, &rows, sh, scores, o),
            }
        }
        return;
    }
    for s in 0..visible {
        let at = (s * sh.kv_heads + kvh) * qk;
        let k = &keys[at..at + qk];
        for g in 0..group {
            scores[g * visible + s] = dot(&q[g * qk..(g + 1) * qk], k) * sh.scale;
        }
    }
    for row in scores.chunks_exact_mut(visible) {
        softmax(row);
    }
    o.fill(0.0);
    for s in 0..visible {
        let at = (s * sh.kv_heads + kvh) * vd;
        let v = &values[at..at + vd];
        for (g, og) in o.chunks_exact_mut(vd).enumerate() {
            axpy(og, scores[g * visible + s], v);
        }
    }
}

/// Where one KV head's rows start in the cache and how far apart positions are.
struct Rows {
    k_at: usize,
    k_stride: usize,
    v_at: usize,
    v_stride: usize,
}

/// [`kv_group`] for `G` heads with AVX2/FMA: the score dot products inline
/// ([`dot_avx2`], the same arithmetic as [`dot`]); then the values through
/// [`weighted_rows_avx2`] (each value row loaded once for the group).
///
/// # Safety
/// AVX2 and FMA are available; `q` holds `G * qk`, `scores` `G * visible`,
/// `o` `G * vd`, and every key / value row of a visible position lies in
/// `keys` / `values`.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn kv_group_avx2<const G: usize>(
    q: &[f32],
    keys: &[f32],
    values: &[f32],
    at: &Rows,
    sh: &GroupShape,
    scores: &mut [f32],
    o: &mut [f32],
) {
    let (qk, vd, visible) = (sh.qk, sh.vd, sh.visible);
    for s in 0..visible {
        let k = std::slice::from_raw_parts(keys.as_ptr().add(at.k_at + s * at.k_stride), qk);
        for g in 0..G {
            let qg = std::slice::from_raw_parts(q.as_ptr().add(g * qk), qk);
            *scores.get_unchecked_mut(g * visible + s) = dot_avx2(qg, k) * sh.scale;
        }
    }
    for row in scores[..G * visible].chunks_exact_mut(visible.max(1)) {
        softmax(row);
    }
    let w = Weights {
        ptr: scores.as_ptr(),
        row: visible,
        col: 1,
    };
    let rows = values.as_ptr().add(at.v_at);
    weighted_rows_avx2::<G>(&w, rows, (at.v_stride, visible, vd, vd), o.as_mut_ptr());
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
) -> Buf<f32> {
    let (b_n, t_n, d) = (inp.batch, inp.seq, inp.dim);
    let rows = b_n * t_n;
    let mut q = Buf::<f32>::zeroed(rows * heads * hd);
    let mut k = Buf::<f32>::zeroed(rows * kv_heads * hd);
    let mut v = Buf::<f32>::zeroed(rows * kv_heads * hd);
    linear_group(
        inp.x,
        rows,
        d,
        [(w.wq, &mut q), (w.wk, &mut k), (w.wv, &mut v)],
    );
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
    let mut attn = Buf::<f32>::zeroed(rows * heads * hd);
    for b in 0..b_n {
        cache.append_kv(b, t_n, (&k, width), (&v, width));
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

/// How an MLA layer keeps its cache and attends. The default is the
/// reference behaviour; every combination gives the same numbers up to float
/// reassociation.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct MlaOptions {
    /// Cache only the compact per-token state (`kv_rank + rope` floats per
    /// token, see `kv.rs`), not the per-head keys and values. Without
    /// `absorb`, every call then re-expands all cached positions through
    /// `kv_up`: smallest cache, slower decode. Picks the layout of an empty
    /// cache entry only; an entry that already holds positions keeps its
    /// layout, so mixing options across calls stays correct.
    pub compact: bool,
    /// Weight absorption for calls with one new token per batch row (decode):
    /// queries are folded through the key block of `kv_up` and attend to the
    /// cached latent directly, and the value block of `kv_up` is applied once
    /// to the attention-weighted latent, so no per-head key or value of a
    /// cached position is ever formed. Works with both layouts; calls with
    /// more tokens use the expanded path.
    pub absorb: bool,
}

/// MLA with the reference options ([`MlaOptions::default`]).
pub fn mla(
    inp: &Input,
    w: &MlaWeights,
    m: &MlaDims,
    eps: f64,
    rope: &Rope,
    cache: &mut LayerCache,
) -> Buf<f32> {
    mla_with(inp, w, m, eps, rope, cache, MlaOptions::default())
}

/// Multi-latent attention of `inp` against (and appending to) `cache`;
/// returns `batch * seq` rows of `dim`. `opts` picks the cache layout and
/// whether a decode step uses weight absorption.
#[allow(clippy::too_many_arguments)]
pub fn mla_with(
    inp: &Input,
    w: &MlaWeights,
    m: &MlaDims,
    eps: f64,
    rope: &Rope,
    cache: &mut LayerCache,
    opts: MlaOptions,
) -> Buf<f32> {
    let (b_n, t_n, d) = (inp.batch, inp.seq, inp.dim);
    let rows = b_n * t_n;
    let h_n = m.heads;
    let qk = m.nope + m.rope;
    let lat_w = m.kv_rank + m.rope;
    let scale = (qk as f32).powf(-0.5);
    // Query halves: q_nope, and q_rope rotated at each token's position.
    let mut c_q = linear_new(inp.x, rows, d, w.q_down, m.q_rank);
    let raw = c_q.clone();
    rmsnorm(&raw, m.q_rank, w.q_norm, eps, &mut c_q);
    drop(raw);
    let q_nope = linear_new(&c_q, rows, m.q_rank, w.q_up_nope, h_n * m.nope);
    let mut q_rope = linear_new(&c_q, rows, m.q_rank, w.q_up_rope, h_n * m.rope);
    for (r, qr) in q_rope.chunks_exact_mut(h_n * m.rope).enumerate() {
        let pos = inp.start + r % t_n;
        for head in qr.chunks_exact_mut(m.rope) {
            rope.apply(head, pos);
        }
    }
    // Append the new tokens: latent always, per-head keys/values in the reference layout.
    let expanded = if cache.len == 0 {
        !opts.compact
    } else {
        cache.holds_keys()
    };
    let lat = new_latent(inp, w, m, eps, rope);
    let new_kv = expanded.then(|| expand(&lat, w, m));
    for b in 0..b_n {
        let at = b * t_n * lat_w..(b + 1) * t_n * lat_w;
        cache.append_latent(b, &lat[at], lat_w);
        if let Some((keys, values)) = &new_kv {
            cache.append_kv(b, t_n, (keys, h_n * qk), (values, h_n * m.v));
        }
    }
    cache.len += t_n;
    let attn = if opts.absorb && t_n == 1 {
        absorbed(&q_nope, &q_rope, &cache.latent, inp.start, w, m, scale)
    } else {
        // q = [q_nope | q_rope] per token and head.
        let mut q = Buf::<f32>::zeroed(rows * h_n * qk);
        for (i, dst) in q.chunks_exact_mut(qk).enumerate() {
            dst[..m.nope].copy_from_slice(&q_nope[i * m.nope..(i + 1) * m.nope]);
            dst[m.nope..].copy_from_slice(&q_rope[i * m.rope..(i + 1) * m.rope]);
        }
        let mut attn = Buf::<f32>::zeroed(rows * h_n * m.v);
        for b in 0..b_n {
            // The compact layout expands every cached position for this call.
            let rebuilt;
            let (keys, values) = if expanded {
                (&cache.keys[b][..], &cache.values[b][..])
            } else {
                rebuilt = expand(&cache.latent[b], w, m);
                (&rebuilt.0[..], &rebuilt.1[..])
            };
            attend(
                &q[b * t_n * h_n * qk..(b + 1) * t_n * h_n * qk],
                keys,
                values,
                inp.start,
                h_n,
                h_n,
                qk,
                m.v,
                scale,
                &mut attn[b * t_n * h_n * m.v..(b + 1) * t_n * h_n * m.v],
            );
        }
        attn
    };
    linear_new(&attn, rows, h_n * m.v, w.wo, d)
}

/// The compact state of the new tokens, `batch * seq` rows of
/// `kv_rank + rope`: `kv_down(x)` with its `c_kv` part normalized by
/// `kv_norm` and its rope key rotated at the token's position.
fn new_latent(inp: &Input, w: &MlaWeights, m: &MlaDims, eps: f64, rope: &Rope) -> Buf<f32> {
    let lat_w = m.kv_rank + m.rope;
    let rows = inp.batch * inp.seq;
    let mut lat = linear_new(inp.x, rows, inp.dim, w.kv_down, lat_w);
    let mut raw = Buf::<f32>::zeroed(m.kv_rank);
    for (r, row) in lat.chunks_exact_mut(lat_w).enumerate() {
        let (c_kv, k_rope) = row.split_at_mut(m.kv_rank);
        raw.copy_from_slice(c_kv);
        rmsnorm(&raw, m.kv_rank, w.kv_norm, eps, c_kv);
        rope.apply(k_rope, inp.start + r % inp.seq);
    }
    lat
}

/// Up-projects latent rows (`n * (kv_rank + rope)`, as cached) into per-head
/// keys `n * heads * (nope + rope)` (`[k_nope | shared k_rope]`) and values
/// `n * heads * v`. Rows of `kv_up` per head: `nope` key rows, then `v` value rows.
fn expand(lat: &[f32], w: &MlaWeights, m: &MlaDims) -> (Buf<f32>, Buf<f32>) {
    let (h_n, qk, kv_w) = (m.heads, m.nope + m.rope, m.nope + m.v);
    let lat_w = m.kv_rank + m.rope;
    let n = lat.len() / lat_w;
    let mut c_kv = Buf::<f32>::with_capacity(n * m.kv_rank);
    for row in lat.chunks_exact(lat_w) {
        c_kv.extend_from_slice(&row[..m.kv_rank]);
    }
    let kv = linear_new(&c_kv, n, m.kv_rank, w.kv_up, h_n * kv_w);
    let mut keys = Buf::<f32>::zeroed(n * h_n * qk);
    let mut values = Buf::<f32>::zeroed(n * h_n * m.v);
    for (s, row) in lat.chunks_exact(lat_w).enumerate() {
        let k_rope = &row[m.kv_rank..];
        for h in 0..h_n {
            let i = s * h_n + h;
            let src = &kv[i * kv_w..(i + 1) * kv_w];
            let k = &mut keys[i * qk..(i + 1) * qk];
            k[..m.nope].copy_from_slice(&src[..m.nope]);
            k[m.nope..].copy_from_slice(k_rope);
            values[i * m.v..(i + 1) * m.v].copy_from_slice(&src[m.nope..]);
        }
    }
    (keys, values)
}

/// Weight-absorbed attention of one new token per batch row against the
/// cached latents (`latent[b]`, already holding that token). Per head `h`,
/// with `W_uk[h]` / `W_uv[h]` the key / value blocks of `kv_up`:
/// `q_abs = W_uk[h]^T q_nope`, score `s` = `[q_abs | q_rope] . latent[s]`
/// (normalized `c_kv` and rope key in one dot product) times `scale`,
/// softmax, `o_lat = sum_s p_s c_kv[s]`, output `W_uv[h] o_lat`. All heads
/// share the latent, so scores and `o_lat` are one GEMM each per batch row,
/// threaded by the GEMM itself when large. Returns `batch * heads * v`.
fn absorbed(
    q_nope: &[f32],
    q_rope: &[f32],
    latent: &[Vec<f32>],
    start: usize,
    w: &MlaWeights,
    m: &MlaDims,
    scale: f32,
) -> Buf<f32> {
    let b_n = latent.len();
    let (h_n, r, nope, vd) = (m.heads, m.kv_rank, m.nope, m.v);
    let (lat_w, kv_w) = (r + m.rope, nope + vd);
    // The per-head products read all of `kv_up` once per batch row: threads
    // from 2^18 multiply-adds, as for a linear layer.
    let parallel = h_n * kv_w * r * b_n >= 1 << 18;
    // Absorbed queries, `[heads, batch, kv_rank + rope]` (one block per head).
    let mut q_cat = Buf::<f32>::zeroed(h_n * b_n * lat_w);
    for_heads(&mut q_cat, b_n * lat_w, parallel, |h, qh| {
        // q_abs[b] = q_nope[b, h] @ W_uk[h]  ([nope] x [nope, kv_rank]).
        gemm_strided(
            b_n,
            nope,
            r,
            &q_nope[h * nope..],
            h_n * nope,
            1,
            &w.kv_up[h * kv_w * r..],
            r,
            1,
            qh,
            lat_w,
            1,
        );
        for (b, dst) in qh.chunks_exact_mut(lat_w).enumerate() {
            dst[r..].copy_from_slice(&q_rope[(b * h_n + h) * m.rope..(b * h_n + h + 1) * m.rope]);
        }
    });
    // Attention-weighted latents, `[heads, batch, kv_rank]`.
    let mut o_lat = Buf::<f32>::zeroed(h_n * b_n * r);
    let most = latent.iter().map(|l| l.len() / lat_w).max().unwrap_or(0);
    let mut scores = Buf::<f32>::with_capacity(h_n * (start + 1).min(most));
    for (b, lat) in latent.iter().enumerate() {
        let visible = (start + 1).min(lat.len() / lat_w);
        if visible == 0 {
            continue;
        }
        scores.clear();
        scores.resize(h_n * visible, 0.0);
        // scores[h, s] = q_cat[h, b] . latent[s]
        gemm_strided(
            h_n,
            lat_w,
            visible,
            &q_cat[b * lat_w..],
            b_n * lat_w,
            1,
            lat,
            1,
            lat_w,
            &mut scores,
            visible,
            1,
        );
        for row in scores.chunks_exact_mut(visible) {
            for v in row.iter_mut() {
                *v *= scale;
            }
            softmax(row);
        }
        // o_lat[h, b] = sum_s p[h, s] c_kv[s]
        gemm_strided(
            h_n,
            visible,
            r,
            &scores,
            visible,
            1,
            lat,
            lat_w,
            1,
            &mut o_lat[b * r..],
            b_n * r,
            1,
        );
    }
    // Per-head values, `[heads, batch, v]`: o_lat[h, b] @ W_uv[h]^T.
    let mut v_heads = Buf::<f32>::zeroed(h_n * b_n * vd);
    for_heads(&mut v_heads, b_n * vd, parallel, |h, vh| {
        gemm_strided(
            b_n,
            r,
            vd,
            &o_lat[h * b_n * r..],
            r,
            1,
            &w.kv_up[(h * kv_w + nope) * r..],
            1,
            r,
            vh,
            vd,
            1,
        );
    });
    let mut attn = Buf::<f32>::zeroed(b_n * h_n * vd);
    for (h, vh) in v_heads.chunks_exact(b_n * vd).enumerate() {
        for (b, v) in vh.chunks_exact(vd).enumerate() {
            attn[(b * h_n + h) * vd..(b * h_n + h + 1) * vd].copy_from_slice(v);
        }
    }
    attn
}

/// Runs `f(h, block)` over the consecutive `chunk`-sized blocks of `out`,
/// one per head, on all threads when `parallel`.
fn for_heads<F>(out: &mut [f32], chunk: usize, parallel: bool, f: F)
where
    F: Fn(usize, &mut [f32]) + Sync + Send,
{
    if chunk == 0 {
        return;
    }
    if parallel {
        out.par_chunks_mut(chunk)
            .enumerate()
            .for_each(|(h, c)| f(h, c));
    } else {
        out.chunks_mut(chunk).enumerate().for_each(|(h, c)| f(h, c));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cpu::kv::{CacheKey, KvCache};

    /// The entry these tests fill: a layer outside the loop.
    const PRELUDE_0: CacheKey = CacheKey {
        layer: 0,
        iteration: None,
    };

    const THETA: f64 = 10000.0;
    const EPS: f64 = 1e-6;

    /// The small MLA of the tests.
    const SMALL: Case = Case {
        dim: 32,
        batch: 2,
        m: MlaDims {
            heads: 4,
            q_rank: 16,
            kv_rank: 12,
            rope: 4,
            nope: 8,
            v: 8,
        },
    };

    const ALL: [MlaOptions; 4] = [
        MlaOptions {
            compact: false,
            absorb: false,
        },
        MlaOptions {
            compact: true,
            absorb: false,
        },
        MlaOptions {
            compact: false,
            absorb: true,
        },
        MlaOptions {
            compact: true,
            absorb: true,
        },
    ];

    /// Deterministic uniform values in `[-1, 1)` (SplitMix64).
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = self.0;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^= z >> 31;
            (z >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
        }

        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.next() * scale).collect()
        }
    }

    /// A model width, batch and MLA sizes.
    struct Case {
        dim: usize,
        batch: usize,
        m: MlaDims,
    }

    impl Case {
        /// Compact floats per token: `kv_rank + rope`.
        fn compact_width(&self) -> usize {
            self.m.kv_rank + self.m.rope
        }

        /// Reference floats per token: the latent, plus keys
        /// `heads * (nope + rope)` and values `heads * v`.
        fn reference_width(&self) -> usize {
            let m = &self.m;
            self.compact_width() + m.heads * (m.nope + m.rope + m.v)
        }

        /// Random weights, `[out, in]` each, in [`MlaWeights`] order.
        fn weights(&self, seed: u64) -> Vec<Vec<f32>> {
            let (m, mut rng) = (&self.m, Rng(seed));
            let mut linear = |out: usize, inp: usize| rng.vec(out * inp, (inp as f32).powf(-0.5));
            let (q_down, q_up_nope, q_up_rope) = (
                linear(m.q_rank, self.dim),
                linear(m.heads * m.nope, m.q_rank),
                linear(m.heads * m.rope, m.q_rank),
            );
            let (kv_down, kv_up, wo) = (
                linear(m.kv_rank + m.rope, self.dim),
                linear(m.heads * (m.nope + m.v), m.kv_rank),
                linear(self.dim, m.heads * m.v),
            );
            let mut norm = |n: usize| rng.vec(n, 0.2).iter().map(|v| 1.0 + v).collect();
            let (q_norm, kv_norm) = (norm(m.q_rank), norm(m.kv_rank));
            vec![
                q_down, q_norm, q_up_nope, q_up_rope, kv_down, kv_norm, kv_up, wo,
            ]
        }

        /// One MLA call of `seq` new tokens at `start` (inputs from `rng`).
        fn call(
            &self,
            w: &[Vec<f32>],
            rng: &mut Rng,
            cache: &mut KvCache,
            seq: usize,
            start: usize,
            opts: MlaOptions,
        ) -> Vec<f32> {
            let x = rng.vec(self.batch * seq * self.dim, 1.0);
            let inp = Input {
                x: &x,
                batch: self.batch,
                seq,
                dim: self.dim,
                start,
            };
            let weights = MlaWeights {
                q_down: &w[0],
                q_norm: &w[1],
                q_up_nope: &w[2],
                q_up_rope: &w[3],
                kv_down: &w[4],
                kv_norm: &w[5],
                kv_up: &w[6],
                wo: &w[7],
            };
            let rope = Rope::new(self.m.rope, start, seq, THETA);
            let layer = cache.entry(PRELUDE_0, self.batch);
            let out = mla_with(&inp, &weights, &self.m, EPS, &rope, layer, opts);
            assert_eq!(layer.len, start + seq);
            assert_eq!(out.len(), self.batch * seq * self.dim);
            out.into_vec()
        }

        /// Calls of `seqs` tokens each through one fresh cache (inputs from
        /// `seed`); each call's output and the cache bytes at the end.
        fn run(
            &self,
            w: &[Vec<f32>],
            seqs: &[usize],
            seed: u64,
            opts: MlaOptions,
        ) -> (Vec<Vec<f32>>, usize) {
            let (mut rng, mut cache) = (Rng(seed), KvCache::new());
            let mut start = 0;
            let mut outs = Vec::new();
            for &seq in seqs {
                outs.push(self.call(w, &mut rng, &mut cache, seq, start, opts));
                start += seq;
            }
            (outs, cache.bytes())
        }

        /// Runs `seqs` under every option combination and checks outputs
        /// against the default and the cache bytes; returns the worst figure.
        fn check_all(&self, seqs: &[usize]) -> f32 {
            let w = self.weights(1);
            let positions: usize = seqs.iter().sum();
            let (reference, ref_bytes) = self.run(&w, seqs, 2, MlaOptions::default());
            assert_eq!(
                ref_bytes,
                self.batch * positions * self.reference_width() * 4
            );
            let mut all_worst = 0.0f32;
            for opts in ALL {
                let (outs, bytes) = self.run(&w, seqs, 2, opts);
                let err = worst(&reference, &outs);
                println!("calls {seqs:?}, {opts:?}: worst relative difference {err:.3e}, cache {bytes} bytes");
                assert!(err <= 1e-5, "{opts:?}: {err}");
                let width = if opts.compact {
                    self.compact_width()
                } else {
                    self.reference_width()
                };
                assert_eq!(bytes, self.batch * positions * width * 4);
                all_worst = all_worst.max(err);
            }
            all_worst
        }
    }

    /// Largest `|a - b|` over the calls, relative to the largest `|a|`.
    fn worst(reference: &[Vec<f32>], other: &[Vec<f32>]) -> f32 {
        let scale = reference
            .iter()
            .flatten()
            .fold(0.0f32, |m, v| m.max(v.abs()));
        assert!(scale > 0.0);
        assert_eq!(reference.len(), other.len());
        let diff = reference.iter().zip(other).fold(0.0f32, |m, (a, b)| {
            assert_eq!(a.len(), b.len());
            a.iter().zip(b).fold(m, |m, (x, y)| m.max((x - y).abs()))
        });
        diff / scale
    }

    #[test]
    fn mla_options_match_reference_on_prefill_and_decode() {
        // A 5-token prefill, then three decode steps.
        SMALL.check_all(&[5, 1, 1, 1]);
        // Exact sizes for these dims: 8 positions x 2 rows x (12 + 4) floats,
        // against x (16 + 4 * (8 + 4) + 4 * 8) floats.
        assert_eq!(SMALL.batch * 8 * SMALL.compact_width() * 4, 1024);
        assert_eq!(SMALL.batch * 8 * SMALL.reference_width() * 4, 6144);
    }

    #[test]
    fn prefill_after_cached_prefix_matches() {
        // A 3-token prefill, a 2-token call over the cached prefix, one decode step.
        SMALL.check_all(&[3, 2, 1]);
    }

    #[test]
    fn threaded_paths_match_reference() {
        // Big enough that the absorbed per-head products
        // (heads * (nope + v) * kv_rank * batch = 2^18) and the decode
        // scores of the expanded path run on all threads.
        let case = Case {
            dim: 64,
            batch: 2,
            m: MlaDims {
                heads: 16,
                q_rank: 32,
                kv_rank: 128,
                rope: 16,
                nope: 32,
                v: 32,
            },
        };
        case.check_all(&[60, 1, 1]);
    }

    /// A decode step's attention (the AVX2 group kernel for groups of 1, 2
    /// and 4 heads, the portable path otherwise; a value width with a tail
    /// past the 32-column blocks) against a plain softmax-weighted sum.
    #[test]
    fn decode_attention_matches_naive() {
        for &(heads, kv_heads, qk, vd, len) in &[
            (4, 4, 16, 40, 9),
            (8, 4, 64, 64, 33),
            (8, 2, 32, 96, 5),
            (6, 2, 16, 24, 7),
            (4, 1, 8, 32, 1),
        ] {
            let mut rng = Rng(heads as u64 * 31 + len as u64);
            let q = rng.vec(heads * qk, 1.0);
            let keys = rng.vec(len * kv_heads * qk, 1.0);
            let values = rng.vec(len * kv_heads * vd, 1.0);
            let scale = (qk as f32).powf(-0.5);
            let mut out = vec![f32::NAN; heads * vd];
            attend_one(
                &q,
                &keys,
                &values,
                len - 1,
                heads,
                kv_heads,
                qk,
                vd,
                scale,
                &mut out,
            );
            let group = heads / kv_heads;
            for h in 0..heads {
                let kvh = h / group;
                let s: Vec<f64> = (0..len)
                    .map(|p| {
                        let k = &keys[(p * kv_heads + kvh) * qk..][..qk];
                        let d: f64 = q[h * qk..][..qk]
                            .iter()
                            .zip(k)
                            .map(|(a, b)| (a * b) as f64)
                            .sum();
                        d * scale as f64
                    })
                    .collect();
                let max = s.iter().cloned().fold(f64::MIN, f64::max);
                let e: Vec<f64> = s.iter().map(|v| (v - max).exp()).collect();
                let total: f64 = e.iter().sum();
                for c in 0..vd {
                    let want: f64 = (0..len)
                        .map(|p| e[p] / total * values[(p * kv_heads + kvh) * vd + c] as f64)
                        .sum();
                    let got = out[h * vd + c] as f64;
                    assert!(
                        (got - want).abs() < 1e-5,
                        "heads {heads}/{kv_heads} qk {qk} vd {vd} len {len}: head {h} col {c}: {got} vs {want}"
                    );
                }
            }
        }
    }

    #[test]
    fn cache_entry_keeps_its_first_layout() {
        let w = SMALL.weights(5);
        let (mut rng_a, mut rng_b) = (Rng(6), Rng(6));
        let (mut reference, mut mixed) = (KvCache::new(), KvCache::new());
        let compact = MlaOptions {
            compact: true,
            absorb: false,
        };
        let absorb = MlaOptions {
            compact: false,
            absorb: true,
        };
        // `mixed` is filled compact, then asked for the reference layout.
        let steps = [
            (3, compact),
            (1, MlaOptions::default()),
            (2, absorb),
            (1, absorb),
        ];
        let mut start = 0;
        for (seq, opts) in steps {
            let want = SMALL.call(
                &w,
                &mut rng_a,
                &mut reference,
                seq,
                start,
                MlaOptions::default(),
            );
            let got = SMALL.call(&w, &mut rng_b, &mut mixed, seq, start, opts);
            assert!(worst(&[want], &[got]) <= 1e-5);
            start += seq;
        }
        assert!(!mixed.entry(PRELUDE_0, SMALL.batch).holds_keys());
        assert_eq!(
            mixed.bytes(),
            SMALL.batch * start * SMALL.compact_width() * 4
        );
    }
}
