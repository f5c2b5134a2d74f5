//! The vector-Jacobian product of causal GQA attention (OpenMythos's
//! `GQAttention` without a cache, as in training): q/k/v projections, RoPE
//! on q and k (interleaved pairs), KV heads shared by groups of query heads
//! (`repeat_interleave`), scale `head_dim^-0.5`, a causal mask when a
//! sequence has more than one token, softmax, the output projection. The
//! forward values are recomputed per sequence.

use super::linear;
use crate::cpu::attention::GqaWeights;
use crate::cpu::kernels::Rope;
use rayon::prelude::*;

/// GQA's sizes.
#[derive(Clone, Copy, Debug)]
pub struct GqaDims {
    pub dim: usize,
    pub heads: usize,
    pub kv_heads: usize,
    pub head_dim: usize,
}

/// The gradients of GQA's input and weights.
pub struct GqaGrads {
    pub dx: Vec<f32>,
    pub wq: Vec<f32>,
    pub wk: Vec<f32>,
    pub wv: Vec<f32>,
    pub wo: Vec<f32>,
}

/// Rotates the interleaved pairs of each head's row by the angles of
/// position `p` (`inverse`: by minus them, which is the rotation's transpose).
pub(super) fn rotate(row: &mut [f32], head_dim: usize, rope: &Rope, p: usize, inverse: bool) {
    let at = (p - rope.start) * rope.half;
    for head in row.chunks_exact_mut(head_dim) {
        for i in 0..head_dim / 2 {
            let (c, s) = (rope.cos[at + i], rope.sin[at + i]);
            let s = if inverse { -s } else { s };
            let (a, b) = (head[2 * i], head[2 * i + 1]);
            head[2 * i] = a * c - b * s;
            head[2 * i + 1] = a * s + b * c;
        }
    }
}

/// The heads of causal attention after the projections: `q` `[rows,
/// heads * qk]`, `k` `[rows, kv_heads * qk]`, `v` `[rows, kv_heads * vd]`,
/// each query head `h` attending with KV head `h / (heads / kv_heads)`.
pub struct Core<'a> {
    pub q: &'a [f32],
    pub k: &'a [f32],
    pub v: &'a [f32],
    pub heads: usize,
    pub kv_heads: usize,
    pub qk: usize,
    pub vd: usize,
    pub scale: f32,
    /// Sequences and their length (`rows = batch * seq`).
    pub batch: usize,
    pub seq: usize,
}

impl Core<'_> {
    fn rows(&self) -> usize {
        self.batch * self.seq
    }

    /// Row widths of `q`, `k` and `v`.
    fn widths(&self) -> (usize, usize, usize) {
        (
            self.heads * self.qk,
            self.kv_heads * self.qk,
            self.kv_heads * self.vd,
        )
    }

    /// The softmax probabilities of every (sequence, head), `[seq, seq]`
    /// each (zero above the diagonal), and the output `[rows, heads * vd]`.
    /// The (sequence, head) pairs run in parallel; each is computed as a
    /// whole by one thread, so the numbers do not depend on the threads.
    pub fn forward(&self) -> (Vec<Vec<f32>>, Vec<f32>) {
        let (seq, group) = (self.seq, self.heads / self.kv_heads);
        let (qw, kw, vw) = self.widths();
        let parts: Vec<(Vec<f32>, Vec<f32>)> = (0..self.batch * self.heads)
            .into_par_iter()
            .map(|bh| {
                let (b, h) = (bh / self.heads, bh % self.heads);
                let j = h / group;
                let mut p = vec![0.0f32; seq * seq];
                let mut out = vec![0.0f32; seq * self.vd];
                for t in 0..seq {
                    let qr = &self.q[(b * seq + t) * qw + h * self.qk..][..self.qk];
                    let row = &mut p[t * seq..(t + 1) * seq];
                    let mut max = f32::NEG_INFINITY;
                    for (u, s) in row.iter_mut().enumerate().take(t + 1) {
                        let kr = &self.k[(b * seq + u) * kw + j * self.qk..][..self.qk];
                        *s = qr.iter().zip(kr).map(|(a, b)| a * b).sum::<f32>() * self.scale;
                        max = max.max(*s);
                    }
                    let mut sum = 0.0;
                    for s in row.iter_mut().take(t + 1) {
                        *s = (*s - max).exp();
                        sum += *s;
                    }
                    let o = &mut out[t * self.vd..][..self.vd];
                    for (u, pu) in row.iter_mut().enumerate().take(t + 1) {
                        *pu /= sum;
                        let vr = &self.v[(b * seq + u) * vw + j * self.vd..][..self.vd];
                        for (o, &vv) in o.iter_mut().zip(vr) {
                            *o += *pu * vv;
                        }
                    }
                }
                (p, out)
            })
            .collect();
        let mut out = vec![0.0; self.rows() * self.heads * self.vd];
        let mut probs = Vec::with_capacity(self.batch * self.heads);
        for (bh, (p, o)) in parts.into_iter().enumerate() {
            let (b, h) = (bh / self.heads, bh % self.heads);
            for (t, o) in o.chunks_exact(self.vd).enumerate() {
                out[(b * seq + t) * self.heads * self.vd + h * self.vd..][..self.vd]
                    .copy_from_slice(o);
            }
            probs.push(p);
        }
        (probs, out)
    }

    /// `(dq, dk, dv)` from the output's gradient and [`Core::forward`]'s
    /// probabilities. The (sequence, KV head) pairs run in parallel: each
    /// owns its query heads' `dq` and its `dk`, `dv`, and sums into them in
    /// the order of one thread, so the numbers do not depend on the threads.
    pub fn backward(&self, probs: &[Vec<f32>], dout: &[f32]) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
        let (seq, group) = (self.seq, self.heads / self.kv_heads);
        let (qw, kw, vw) = self.widths();
        let (qk, vd) = (self.qk, self.vd);
        // Per (sequence, KV head): dq of its query heads `[group, seq, qk]`,
        // dk `[seq, qk]` and dv `[seq, vd]`.
        let parts: Vec<(Vec<f32>, Vec<f32>, Vec<f32>)> = (0..self.batch * self.kv_heads)
            .into_par_iter()
            .map(|bj| {
                let (b, j) = (bj / self.kv_heads, bj % self.kv_heads);
                let mut dq = vec![0.0f32; group * seq * qk];
                let (mut dk, mut dv) = (vec![0.0f32; seq * qk], vec![0.0f32; seq * vd]);
                let mut dp = vec![0.0f32; seq];
                for g in 0..group {
                    let h = j * group + g;
                    let p = &probs[b * self.heads + h];
                    for t in 0..seq {
                        let prow = &p[t * seq..(t + 1) * seq];
                        let g_o = &dout[(b * seq + t) * self.heads * vd + h * vd..][..vd];
                        // dP = dO v^T; dS = P * (dP - sum(P * dP)).
                        let mut dot = 0.0;
                        for u in 0..=t {
                            let vr = &self.v[(b * seq + u) * vw + j * vd..][..vd];
                            dp[u] = g_o.iter().zip(vr).map(|(a, b)| a * b).sum();
                            dot += prow[u] * dp[u];
                        }
                        let qa = (b * seq + t) * qw + h * qk;
                        let dqa = (g * seq + t) * qk;
                        for u in 0..=t {
                            let gs = prow[u] * (dp[u] - dot) * self.scale;
                            let ka = (b * seq + u) * kw + j * qk;
                            for i in 0..qk {
                                dq[dqa + i] += gs * self.k[ka + i];
                                dk[u * qk + i] += gs * self.q[qa + i];
                            }
                            for i in 0..vd {
                                dv[u * vd + i] += prow[u] * g_o[i];
                            }
                        }
                    }
                }
                (dq, dk, dv)
            })
            .collect();
        let rows = self.rows();
        let (mut dq, mut dk, mut dv) = (
            vec![0.0; rows * qw],
            vec![0.0; rows * kw],
            vec![0.0; rows * vw],
        );
        for (bj, (pq, pk, pv)) in parts.into_iter().enumerate() {
            let (b, j) = (bj / self.kv_heads, bj % self.kv_heads);
            for t in 0..seq {
                let r = b * seq + t;
                for g in 0..group {
                    let h = j * group + g;
                    dq[r * qw + h * qk..][..qk].copy_from_slice(&pq[(g * seq + t) * qk..][..qk]);
                }
                dk[r * kw + j * qk..][..qk].copy_from_slice(&pk[t * qk..][..qk]);
                dv[r * vw + j * vd..][..vd].copy_from_slice(&pv[t * vd..][..vd]);
            }
        }
        (dq, dk, dv)
    }
}

/// `x` is `[batch * seq, dim]` (each sequence from position 0, `rope`'s
/// tables cover them); `dy` the gradient of the output, of the same shape.
pub fn gqa(
    x: &[f32],
    (batch, seq): (usize, usize),
    d: GqaDims,
    w: &GqaWeights,
    rope: &Rope,
    dy: &[f32],
) -> GqaGrads {
    let rows = batch * seq;
    let (qw, kw, hd) = (d.heads * d.head_dim, d.kv_heads * d.head_dim, d.head_dim);
    let project = |w: &[f32], n: usize| {
        let mut y = vec![0.0; rows * n];
        crate::cpu::kernels::linear(x, rows, d.dim, w, n, &mut y);
        y
    };
    let (mut q, mut k, v) = (project(w.wq, qw), project(w.wk, kw), project(w.wv, kw));
    for r in 0..rows {
        rotate(&mut q[r * qw..(r + 1) * qw], hd, rope, r % seq, false);
        rotate(&mut k[r * kw..(r + 1) * kw], hd, rope, r % seq, false);
    }
    let core = Core {
        q: &q,
        k: &k,
        v: &v,
        heads: d.heads,
        kv_heads: d.kv_heads,
        qk: hd,
        vd: hd,
        scale: 1.0 / (hd as f32).sqrt(),
        batch,
        seq,
    };
    let (probs, attn) = core.forward();
    let (dattn, dwo) = linear(&attn, rows, qw, w.wo, d.dim, dy);
    let (mut dq, mut dk, dv) = core.backward(&probs, &dattn);
    for r in 0..rows {
        rotate(&mut dq[r * qw..(r + 1) * qw], hd, rope, r % seq, true);
        rotate(&mut dk[r * kw..(r + 1) * kw], hd, rope, r % seq, true);
    }
    let (dx_q, wq) = linear(x, rows, d.dim, w.wq, qw, &dq);
    let (dx_k, wk) = linear(x, rows, d.dim, w.wk, kw, &dk);
    let (dx_v, wv) = linear(x, rows, d.dim, w.wv, kw, &dv);
    let dx = (0..rows * d.dim)
        .map(|i| dx_q[i] + dx_k[i] + dx_v[i])
        .collect();
    GqaGrads {
        dx,
        wq,
        wk,
        wv,
        wo: dwo,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, f64s, linear64, numeric, on_fresh_layer, random};
    use super::*;
    use crate::rng::Rng;

    /// GQA's forward in f64, written from the reference's description.
    fn forward64(
        x: &[f64],
        (batch, seq): (usize, usize),
        d: GqaDims,
        w: [&[f64]; 4],
        theta: f64,
    ) -> Vec<f64> {
        let rows = batch * seq;
        let (qw, kw, hd) = (d.heads * d.head_dim, d.kv_heads * d.head_dim, d.head_dim);
        let mut q = linear64(x, rows, d.dim, w[0], qw);
        let mut k = linear64(x, rows, d.dim, w[1], kw);
        let v = linear64(x, rows, d.dim, w[2], kw);
        let rot = |m: &mut [f64], width: usize| {
            for r in 0..rows {
                let pos = (r % seq) as f64;
                for head in m[r * width..(r + 1) * width].chunks_mut(hd) {
                    for i in 0..hd / 2 {
                        let f = 1.0 / theta.powf((2 * i) as f64 / hd as f64);
                        let (c, s) = ((pos * f).cos(), (pos * f).sin());
                        let (a, b) = (head[2 * i], head[2 * i + 1]);
                        head[2 * i] = a * c - b * s;
                        head[2 * i + 1] = a * s + b * c;
                    }
                }
            }
        };
        rot(&mut q, qw);
        rot(&mut k, kw);
        let mut attn = vec![0.0; rows * qw];
        let g = d.heads / d.kv_heads;
        for b in 0..batch {
            for h in 0..d.heads {
                let j = h / g;
                for t in 0..seq {
                    let s: Vec<f64> = (0..=t)
                        .map(|u| {
                            (0..hd)
                                .map(|i| {
                                    q[(b * seq + t) * qw + h * hd + i]
                                        * k[(b * seq + u) * kw + j * hd + i]
                                })
                                .sum::<f64>()
                                / (hd as f64).sqrt()
                        })
                        .collect();
                    let m = s.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v));
                    let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
                    for (u, sv) in s.iter().enumerate() {
                        let pr = (sv - m).exp() / z;
                        for i in 0..hd {
                            attn[(b * seq + t) * qw + h * hd + i] +=
                                pr * v[(b * seq + u) * kw + j * hd + i];
                        }
                    }
                }
            }
        }
        linear64(&attn, rows, qw, w[3], d.dim)
    }

    #[test]
    fn gqa_matches_finite_differences() {
        let mut rng = Rng::new(11);
        let d = GqaDims {
            dim: 8,
            heads: 4,
            kv_heads: 2,
            head_dim: 4,
        };
        let (batch, seq, theta) = (2, 5, 10000.0);
        let (qw, kw) = (d.heads * d.head_dim, d.kv_heads * d.head_dim);
        let x = random(&mut rng, batch * seq * d.dim, 1.0);
        let wq = random(&mut rng, qw * d.dim, 0.5);
        let wk = random(&mut rng, kw * d.dim, 0.5);
        let wv = random(&mut rng, kw * d.dim, 0.5);
        let wo = random(&mut rng, d.dim * qw, 0.5);
        let dy = random(&mut rng, batch * seq * d.dim, 1.0);
        let rope = Rope::new(d.head_dim, 0, seq, theta);
        let w = GqaWeights {
            wq: &wq,
            wk: &wk,
            wv: &wv,
            wo: &wo,
        };
        let g = gqa(&x, (batch, seq), d, &w, &rope, &dy);
        let all = [f64s(&wq), f64s(&wk), f64s(&wv), f64s(&wo)];
        let x64 = f64s(&x);
        let f = |x: &[f64], ws: [&[f64]; 4]| forward64(x, (batch, seq), d, ws, theta);
        let with = |i: usize, m: &[f64]| -> Vec<f64> {
            let mut ws: [&[f64]; 4] = [&all[0], &all[1], &all[2], &all[3]];
            ws[i] = m;
            f(&x64, ws)
        };
        close(
            &g.dx,
            &numeric(&x, &dy, |x| f(x, [&all[0], &all[1], &all[2], &all[3]])),
            "dx",
        );
        close(&g.wq, &numeric(&wq, &dy, |m| with(0, m)), "wq");
        close(&g.wk, &numeric(&wk, &dy, |m| with(1, m)), "wk");
        close(&g.wv, &numeric(&wv, &dy, |m| with(2, m)), "wv");
        close(&g.wo, &numeric(&wo, &dy, |m| with(3, m)), "wo");
        // The f64 forward is the runtime's (parity-tested) GQA.
        let ours = on_fresh_layer(&x, (batch, seq, d.dim), |inp, layer| {
            crate::cpu::attention::gqa(inp, &w, d.heads, d.kv_heads, d.head_dim, &rope, layer)
        });
        let want = f(&x64, [&all[0], &all[1], &all[2], &all[3]]);
        close(&ours, &want, "forward");
    }
}
