//! The vector-Jacobian product of causal Multi-Latent Attention
//! (OpenMythos's `MLAttention` without a cache, as in training):
//! `c_q = rmsnorm(q_down(x))`, `q = [q_up_nope(c_q) | rope(q_up_rope(c_q))]`
//! per head; `kv_down(x) = [c_kv | k_rope]`, `[k_nope | v] = kv_up(rmsnorm(c_kv))`
//! per head, the one rotated `k_rope` shared by every head; scale
//! `(nope + rope)^-0.5`, causal softmax, `wo`. Built from the dense
//! products and the attention core of [`super::attention`].

use super::attention::{rotate, Core};
use super::{linear, rmsnorm};
use crate::cpu::attention::{MlaDims, MlaWeights};
use crate::cpu::kernels::Rope;

/// The gradients of MLA's input and weights.
pub struct MlaGrads {
    pub dx: Vec<f32>,
    pub q_down: Vec<f32>,
    pub q_norm: Vec<f32>,
    pub q_up_nope: Vec<f32>,
    pub q_up_rope: Vec<f32>,
    pub kv_down: Vec<f32>,
    pub kv_norm: Vec<f32>,
    pub kv_up: Vec<f32>,
    pub wo: Vec<f32>,
}

fn project(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Vec<f32> {
    let mut y = vec![0.0; rows * n];
    crate::cpu::kernels::linear(x, rows, k, w, n, &mut y);
    y
}

/// `x` is `[batch * seq, dim]`, each sequence from position 0 (`rope`: the
/// rope dimension's tables); `dy` the gradient of the output.
#[allow(clippy::too_many_arguments)]
pub fn mla(
    x: &[f32],
    (batch, seq, dim): (usize, usize, usize),
    m: &MlaDims,
    w: &MlaWeights,
    eps: f64,
    rope: &Rope,
    dy: &[f32],
) -> MlaGrads {
    let rows = batch * seq;
    let (h_n, qk, lat_w, kv_w) = (m.heads, m.nope + m.rope, m.kv_rank + m.rope, m.nope + m.v);
    // The forward values.
    let cq_raw = project(x, rows, dim, w.q_down, m.q_rank);
    let mut cq = vec![0.0; rows * m.q_rank];
    crate::cpu::kernels::rmsnorm(&cq_raw, m.q_rank, w.q_norm, eps, &mut cq);
    let q_nope = project(&cq, rows, m.q_rank, w.q_up_nope, h_n * m.nope);
    let mut q_rope = project(&cq, rows, m.q_rank, w.q_up_rope, h_n * m.rope);
    let lat_raw = project(x, rows, dim, w.kv_down, lat_w);
    let mut c_kv_raw = Vec::with_capacity(rows * m.kv_rank);
    let mut k_rope = Vec::with_capacity(rows * m.rope);
    for row in lat_raw.chunks_exact(lat_w) {
        c_kv_raw.extend_from_slice(&row[..m.kv_rank]);
        k_rope.extend_from_slice(&row[m.kv_rank..]);
    }
    let mut c_kv = vec![0.0; rows * m.kv_rank];
    crate::cpu::kernels::rmsnorm(&c_kv_raw, m.kv_rank, w.kv_norm, eps, &mut c_kv);
    for r in 0..rows {
        rotate(
            &mut q_rope[r * h_n * m.rope..(r + 1) * h_n * m.rope],
            m.rope,
            rope,
            r % seq,
            false,
        );
        rotate(
            &mut k_rope[r * m.rope..(r + 1) * m.rope],
            m.rope,
            rope,
            r % seq,
            false,
        );
    }
    let kv = project(&c_kv, rows, m.kv_rank, w.kv_up, h_n * kv_w);
    let (mut q, mut k, mut v) = (
        vec![0.0; rows * h_n * qk],
        vec![0.0; rows * h_n * qk],
        vec![0.0; rows * h_n * m.v],
    );
    for i in 0..rows * h_n {
        let r = i / h_n;
        q[i * qk..i * qk + m.nope].copy_from_slice(&q_nope[i * m.nope..(i + 1) * m.nope]);
        q[i * qk + m.nope..(i + 1) * qk].copy_from_slice(&q_rope[i * m.rope..(i + 1) * m.rope]);
        let src = &kv[i * kv_w..(i + 1) * kv_w];
        k[i * qk..i * qk + m.nope].copy_from_slice(&src[..m.nope]);
        k[i * qk + m.nope..(i + 1) * qk].copy_from_slice(&k_rope[r * m.rope..(r + 1) * m.rope]);
        v[i * m.v..(i + 1) * m.v].copy_from_slice(&src[m.nope..]);
    }
    let core = Core {
        q: &q,
        k: &k,
        v: &v,
        heads: h_n,
        kv_heads: h_n,
        qk,
        vd: m.v,
        scale: (qk as f32).powf(-0.5),
        batch,
        seq,
    };
    let (probs, attn) = core.forward();
    // Backward, in reverse.
    let (dattn, dwo) = linear(&attn, rows, h_n * m.v, w.wo, dim, dy);
    let (dq, dk, dv) = core.backward(&probs, &dattn);
    let mut dq_nope = vec![0.0; rows * h_n * m.nope];
    let mut dq_rope = vec![0.0; rows * h_n * m.rope];
    let mut dkv = vec![0.0; rows * h_n * kv_w];
    let mut dk_rope = vec![0.0; rows * m.rope];
    for i in 0..rows * h_n {
        let r = i / h_n;
        dq_nope[i * m.nope..(i + 1) * m.nope].copy_from_slice(&dq[i * qk..i * qk + m.nope]);
        dq_rope[i * m.rope..(i + 1) * m.rope].copy_from_slice(&dq[i * qk + m.nope..(i + 1) * qk]);
        dkv[i * kv_w..i * kv_w + m.nope].copy_from_slice(&dk[i * qk..i * qk + m.nope]);
        dkv[i * kv_w + m.nope..(i + 1) * kv_w].copy_from_slice(&dv[i * m.v..(i + 1) * m.v]);
        for c in 0..m.rope {
            dk_rope[r * m.rope + c] += dk[i * qk + m.nope + c];
        }
    }
    for r in 0..rows {
        rotate(
            &mut dq_rope[r * h_n * m.rope..(r + 1) * h_n * m.rope],
            m.rope,
            rope,
            r % seq,
            true,
        );
        rotate(
            &mut dk_rope[r * m.rope..(r + 1) * m.rope],
            m.rope,
            rope,
            r % seq,
            true,
        );
    }
    let (dc_kv, dkv_up) = linear(&c_kv, rows, m.kv_rank, w.kv_up, h_n * kv_w, &dkv);
    let (dc_kv_raw, dkv_norm) = rmsnorm(&c_kv_raw, m.kv_rank, w.kv_norm, eps, &dc_kv);
    let mut dlat = Vec::with_capacity(rows * lat_w);
    for r in 0..rows {
        dlat.extend_from_slice(&dc_kv_raw[r * m.kv_rank..(r + 1) * m.kv_rank]);
        dlat.extend_from_slice(&dk_rope[r * m.rope..(r + 1) * m.rope]);
    }
    let (dx_kv, dkv_down) = linear(x, rows, dim, w.kv_down, lat_w, &dlat);
    let (dcq_n, dq_up_nope) = linear(&cq, rows, m.q_rank, w.q_up_nope, h_n * m.nope, &dq_nope);
    let (dcq_r, dq_up_rope) = linear(&cq, rows, m.q_rank, w.q_up_rope, h_n * m.rope, &dq_rope);
    let dcq: Vec<f32> = dcq_n.iter().zip(&dcq_r).map(|(a, b)| a + b).collect();
    let (dcq_raw, dq_norm) = rmsnorm(&cq_raw, m.q_rank, w.q_norm, eps, &dcq);
    let (dx_q, dq_down) = linear(x, rows, dim, w.q_down, m.q_rank, &dcq_raw);
    MlaGrads {
        dx: dx_kv.iter().zip(&dx_q).map(|(a, b)| a + b).collect(),
        q_down: dq_down,
        q_norm: dq_norm,
        q_up_nope: dq_up_nope,
        q_up_rope: dq_up_rope,
        kv_down: dkv_down,
        kv_norm: dkv_norm,
        kv_up: dkv_up,
        wo: dwo,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, f64s, linear64, numeric, on_fresh_layer, random, rmsnorm64};
    use super::*;
    use crate::rng::Rng;

    fn rot64(v: &mut [f64], pos: usize, theta: f64) {
        let n = v.len();
        for i in 0..n / 2 {
            let f = 1.0 / theta.powf((2 * i) as f64 / n as f64);
            let (c, s) = ((pos as f64 * f).cos(), (pos as f64 * f).sin());
            let (a, b) = (v[2 * i], v[2 * i + 1]);
            v[2 * i] = a * c - b * s;
            v[2 * i + 1] = a * s + b * c;
        }
    }

    /// MLA's forward in f64 from the reference's description; `w` in
    /// `MlaWeights` order.
    fn forward64(
        x: &[f64],
        (batch, seq, dim): (usize, usize, usize),
        m: &MlaDims,
        w: &[Vec<f64>; 8],
        theta: f64,
    ) -> Vec<f64> {
        let (rows, h_n, eps) = (batch * seq, m.heads, 1e-6);
        let (qk, kv_w, lat_w) = (m.nope + m.rope, m.nope + m.v, m.kv_rank + m.rope);
        let cq = rmsnorm64(
            &linear64(x, rows, dim, &w[0], m.q_rank),
            m.q_rank,
            &w[1],
            eps,
        );
        let q_nope = linear64(&cq, rows, m.q_rank, &w[2], h_n * m.nope);
        let q_rope = linear64(&cq, rows, m.q_rank, &w[3], h_n * m.rope);
        let lat = linear64(x, rows, dim, &w[4], lat_w);
        let c_kv: Vec<f64> = lat
            .chunks(lat_w)
            .flat_map(|r| r[..m.kv_rank].to_vec())
            .collect();
        let kv = linear64(
            &rmsnorm64(&c_kv, m.kv_rank, &w[5], eps),
            rows,
            m.kv_rank,
            &w[6],
            h_n * kv_w,
        );
        let mut attn = vec![0.0; rows * h_n * m.v];
        let qv = |r: usize, h: usize| -> Vec<f64> {
            let mut q = q_nope[(r * h_n + h) * m.nope..][..m.nope].to_vec();
            let mut qr = q_rope[(r * h_n + h) * m.rope..][..m.rope].to_vec();
            rot64(&mut qr, r % seq, theta);
            q.extend(qr);
            q
        };
        let kvv = |r: usize, h: usize| -> (Vec<f64>, Vec<f64>) {
            let src = &kv[(r * h_n + h) * kv_w..][..kv_w];
            let mut k = src[..m.nope].to_vec();
            let mut kr = lat[r * lat_w + m.kv_rank..(r + 1) * lat_w].to_vec();
            rot64(&mut kr, r % seq, theta);
            k.extend(kr);
            (k, src[m.nope..].to_vec())
        };
        for b in 0..batch {
            for h in 0..h_n {
                for t in 0..seq {
                    let q = qv(b * seq + t, h);
                    let s: Vec<f64> = (0..=t)
                        .map(|u| {
                            let (k, _) = kvv(b * seq + u, h);
                            q.iter().zip(&k).map(|(a, b)| a * b).sum::<f64>() / (qk as f64).sqrt()
                        })
                        .collect();
                    let mx = s.iter().fold(f64::NEG_INFINITY, |a, &b| a.max(b));
                    let z: f64 = s.iter().map(|v| (v - mx).exp()).sum();
                    for (u, sv) in s.iter().enumerate() {
                        let (_, vv) = kvv(b * seq + u, h);
                        for i in 0..m.v {
                            attn[((b * seq + t) * h_n + h) * m.v + i] +=
                                (sv - mx).exp() / z * vv[i];
                        }
                    }
                }
            }
        }
        linear64(&attn, rows, h_n * m.v, &w[7], dim)
    }

    #[test]
    fn mla_matches_finite_differences() {
        let mut rng = Rng::new(41);
        let m = MlaDims {
            heads: 2,
            q_rank: 4,
            kv_rank: 3,
            rope: 2,
            nope: 2,
            v: 3,
        };
        let (batch, seq, dim, theta) = (2, 4, 6, 10000.0);
        let h_n = m.heads;
        let sizes = [
            m.q_rank * dim,
            m.q_rank,
            h_n * m.nope * m.q_rank,
            h_n * m.rope * m.q_rank,
            (m.kv_rank + m.rope) * dim,
            m.kv_rank,
            h_n * (m.nope + m.v) * m.kv_rank,
            dim * h_n * m.v,
        ];
        let ws: Vec<Vec<f32>> = sizes
            .iter()
            .enumerate()
            .map(|(i, &n)| {
                let mut v = random(&mut rng, n, 0.5);
                if i == 1 || i == 5 {
                    v.iter_mut().for_each(|x| *x += 1.0); // norm weights near 1
                }
                v
            })
            .collect();
        let x = random(&mut rng, batch * seq * dim, 1.0);
        let dy = random(&mut rng, batch * seq * dim, 1.0);
        let w = MlaWeights {
            q_down: &ws[0],
            q_norm: &ws[1],
            q_up_nope: &ws[2],
            q_up_rope: &ws[3],
            kv_down: &ws[4],
            kv_norm: &ws[5],
            kv_up: &ws[6],
            wo: &ws[7],
        };
        let rope = Rope::new(m.rope, 0, seq, theta);
        let g = mla(&x, (batch, seq, dim), &m, &w, 1e-6, &rope, &dy);
        let w64: [Vec<f64>; 8] = std::array::from_fn(|i| f64s(&ws[i]));
        let shape = (batch, seq, dim);
        let with = |i: usize, v: &[f64]| {
            let mut all = w64.clone();
            all[i] = v.to_vec();
            forward64(&f64s(&x), shape, &m, &all, theta)
        };
        close(
            &g.dx,
            &numeric(&x, &dy, |x| forward64(x, shape, &m, &w64, theta)),
            "dx",
        );
        let ours = [
            &g.q_down,
            &g.q_norm,
            &g.q_up_nope,
            &g.q_up_rope,
            &g.kv_down,
            &g.kv_norm,
            &g.kv_up,
            &g.wo,
        ];
        let names = [
            "q_down",
            "q_norm",
            "q_up_nope",
            "q_up_rope",
            "kv_down",
            "kv_norm",
            "kv_up",
            "wo",
        ];
        for i in 0..8 {
            close(ours[i], &numeric(&ws[i], &dy, |v| with(i, v)), names[i]);
        }
        // The f64 forward is the runtime's (parity-tested) MLA.
        let runtime = on_fresh_layer(&x, shape, |inp, layer| {
            crate::cpu::attention::mla_with(inp, &w, &m, 1e-6, &rope, layer, Default::default())
        });
        close(
            &runtime,
            &forward64(&f64s(&x), shape, &m, &w64, theta),
            "forward",
        );
    }
}
