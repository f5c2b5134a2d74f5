//! Vector-Jacobian products of the dense ops on the CPU, in f32: given an
//! op's inputs and the gradient `dy` of a loss with respect to its result,
//! the gradients with respect to each input, as PyTorch autograd computes
//! them for OpenMythos 0.5.0's modules. They are the CPU semantics of the
//! gradient transform's `vjp` ops ([`vjp`] maps an op's operands onto
//! them); each is checked against central finite differences of an f64
//! forward in the tests.
//!
//! Shapes follow the forward kernels: activations `[rows, width]` row-major,
//! a linear weight `[out, in]` (`y = x @ W^T`).

pub mod attention;
pub mod mla;
pub mod moe;
pub mod recurrence;
mod run;
pub(crate) mod vjp;

pub use run::{Depth, Gradient};

use super::kernels::{matmul, silu};
use crate::data::IGNORE;

/// `y = x @ W^T`: `(dx = dy @ W, dW = dy^T @ x)`.
pub fn linear(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; rows * k];
    matmul(dy, rows, n, w, k, &mut dx);
    let mut dy_t = vec![0.0; n * rows];
    for r in 0..rows {
        for j in 0..n {
            dy_t[j * rows + r] = dy[r * n + j];
        }
    }
    let mut dw = vec![0.0; n * k];
    matmul(&dy_t, n, rows, x, k, &mut dw);
    (dx, dw)
}

/// `y = x * r * w` with `r = 1 / sqrt(mean(x^2) + eps)` per row:
/// `dx = r * (dy*w - x * r^2 * mean(dy*w*x))`, `dw = sum over rows of dy * x * r`.
pub fn rmsnorm(x: &[f32], cols: usize, w: &[f32], eps: f64, dy: &[f32]) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![0.0; x.len()];
    let mut dw = vec![0.0; cols];
    for ((row, g), o) in x
        .chunks_exact(cols)
        .zip(dy.chunks_exact(cols))
        .zip(dx.chunks_exact_mut(cols))
    {
        let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        let dot: f32 = (0..cols).map(|i| g[i] * w[i] * row[i]).sum::<f32>() / cols as f32;
        for i in 0..cols {
            o[i] = r * (g[i] * w[i] - row[i] * r * r * dot);
            dw[i] += g[i] * row[i] * r;
        }
    }
    (dx, dw)
}

/// The gradients of SwiGLU's three weights and its input.
pub struct SwiGluGrads {
    pub dx: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
}

/// `y = down(silu(gate(x)) * up(x))` with `gate`, `up` `[hidden, dim]`, `down` `[dim, hidden]`.
pub fn swiglu(
    x: &[f32],
    rows: usize,
    dim: usize,
    (gate, up, down): (&[f32], &[f32], &[f32]),
    hidden: usize,
    dy: &[f32],
) -> SwiGluGrads {
    let mut a = vec![0.0; rows * hidden];
    let mut b = vec![0.0; rows * hidden];
    super::kernels::linear(x, rows, dim, gate, hidden, &mut a);
    super::kernels::linear(x, rows, dim, up, hidden, &mut b);
    let h: Vec<f32> = a.iter().zip(&b).map(|(&a, &b)| silu(a) * b).collect();
    let (dh, ddown) = linear(&h, rows, hidden, down, dim, dy);
    // d silu(a) / da = s + a s (1 - s), s = sigmoid(a).
    let mut da = vec![0.0; rows * hidden];
    let mut db = vec![0.0; rows * hidden];
    for i in 0..rows * hidden {
        let s = 1.0 / (1.0 + (-a[i]).exp());
        da[i] = dh[i] * b[i] * (s + a[i] * s * (1.0 - s));
        db[i] = dh[i] * silu(a[i]);
    }
    let (dx_a, dgate) = linear(x, rows, dim, gate, hidden, &da);
    let (dx_b, dup) = linear(x, rows, dim, up, hidden, &db);
    SwiGluGrads {
        dx: dx_a.iter().zip(&dx_b).map(|(a, b)| a + b).collect(),
        gate: dgate,
        up: dup,
        down: ddown,
    }
}

/// `y = table[ids]`: the table's gradient, `dy`'s rows added at their ids.
pub fn embedding(ids: &[i64], dy: &[f32], vocab: usize, dim: usize) -> Vec<f32> {
    let mut dt = vec![0.0; vocab * dim];
    for (&id, g) in ids.iter().zip(dy.chunks_exact(dim)) {
        let at = id as usize * dim;
        for (t, &v) in dt[at..at + dim].iter_mut().zip(g) {
            *t += v;
        }
    }
    dt
}

/// The mean cross-entropy of `logits` `[positions, vocab]` against
/// `targets` (`F.cross_entropy(..., ignore_index=-100)`, mean over the
/// scored positions) and its gradient `(softmax - onehot) / scored`
/// (zero rows where the target is ignored). A loss with nothing scored is
/// NaN, as in PyTorch.
pub fn cross_entropy(logits: &[f32], vocab: usize, targets: &[i64]) -> (f64, Vec<f32>) {
    let scored = targets.iter().filter(|&&t| t != IGNORE).count();
    let mut d = vec![0.0; logits.len()];
    let mut loss = 0.0f64;
    for ((row, &t), o) in logits
        .chunks_exact(vocab)
        .zip(targets)
        .zip(d.chunks_exact_mut(vocab))
    {
        if t == IGNORE {
            continue;
        }
        let m = row.iter().fold(f32::NEG_INFINITY, |m, &x| m.max(x));
        let sum: f64 = row.iter().map(|&x| f64::from(x - m).exp()).sum();
        loss += f64::from(m) + sum.ln() - f64::from(row[t as usize]);
        for (o, &x) in o.iter_mut().zip(row) {
            *o = (f64::from(x - m).exp() / sum / scored as f64) as f32;
        }
        o[t as usize] -= 1.0 / scored as f32;
    }
    (loss / scored as f64, d)
}

/// The gradients of the LTI update's inputs.
pub struct LtiGrads {
    pub h: Vec<f32>,
    pub e: Vec<f32>,
    pub out: Vec<f32>,
    pub log_a: Vec<f32>,
    pub log_dt: f32,
    pub b: Vec<f32>,
}

/// `h' = A*h + B*e + out`, `A = exp(-exp(z))`, `z = clamp(log_dt + log_A, -20, 20)`
/// per channel: `dA/dz = -A exp(z)`, and zero through the clamp outside (-20, 20)
/// (PyTorch's `clamp` passes the gradient where the bound is not taken).
pub fn lti_update(
    (h, e): (&[f32], &[f32]),
    (log_a, log_dt, b): (&[f32], f32, &[f32]),
    dy: &[f32],
) -> LtiGrads {
    let d = log_a.len();
    let mut g = LtiGrads {
        h: vec![0.0; h.len()],
        e: vec![0.0; e.len()],
        out: dy.to_vec(),
        log_a: vec![0.0; d],
        log_dt: 0.0,
        b: vec![0.0; d],
    };
    let z: Vec<f32> = log_a.iter().map(|&la| log_dt + la).collect();
    let a: Vec<f32> = z
        .iter()
        .map(|&z| (-(z.clamp(-20.0, 20.0)).exp()).exp())
        .collect();
    let mut da = vec![0.0f32; d];
    for (r, dyr) in dy.chunks_exact(d).enumerate() {
        for c in 0..d {
            let i = r * d + c;
            g.h[i] = a[c] * dyr[c];
            g.e[i] = b[c] * dyr[c];
            da[c] += h[i] * dyr[c];
            g.b[c] += e[i] * dyr[c];
        }
    }
    for c in 0..d {
        // PyTorch's clamp passes the gradient where min <= z <= max.
        let inside = (-20.0..=20.0).contains(&z[c]);
        let dz = if inside {
            da[c] * (-a[c] * z[c].exp())
        } else {
            0.0
        };
        g.log_a[c] = dz;
        g.log_dt += dz;
    }
    g
}

#[cfg(test)]
pub(super) mod tests {
    use super::*;
    use crate::rng::Rng;

    pub fn random(rng: &mut Rng, n: usize, scale: f64) -> Vec<f32> {
        (0..n).map(|_| (rng.normal() * scale) as f32).collect()
    }

    /// `sum(dy * f(x))`'s derivative along every coordinate of `x`, by
    /// central differences of the f64 forward `f`.
    pub fn numeric(x: &[f32], dy: &[f32], f: impl Fn(&[f64]) -> Vec<f64>) -> Vec<f64> {
        let x: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let loss = |x: &[f64]| -> f64 { f(x).iter().zip(dy).map(|(y, &g)| y * f64::from(g)).sum() };
        let h = 1e-6;
        (0..x.len())
            .map(|i| {
                let (mut p, mut m) = (x.clone(), x.clone());
                p[i] += h;
                m[i] -= h;
                (loss(&p) - loss(&m)) / (2.0 * h)
            })
            .collect()
    }

    /// `max|ours - want| <= 1e-3 * max|want| + 1e-5`.
    pub fn close(ours: &[f32], want: &[f64], what: &str) {
        assert_eq!(ours.len(), want.len(), "{what}: length");
        let max = want.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        let err = ours
            .iter()
            .zip(want)
            .fold(0.0f64, |m, (&a, b)| m.max((f64::from(a) - b).abs()));
        assert!(
            err <= 1e-3 * max + 1e-5,
            "{what}: error {err:e}, max {max:e}"
        );
        assert!(max > 1e-4, "{what}: the check sees a gradient");
    }

    pub fn linear64(x: &[f64], rows: usize, k: usize, w: &[f64], n: usize) -> Vec<f64> {
        let mut y = vec![0.0; rows * n];
        for r in 0..rows {
            for j in 0..n {
                y[r * n + j] = (0..k).map(|i| x[r * k + i] * w[j * k + i]).sum();
            }
        }
        y
    }

    pub fn f64s(v: &[f32]) -> Vec<f64> {
        v.iter().map(|&x| f64::from(x)).collect()
    }

    #[test]
    fn linear_matches_finite_differences() {
        let mut rng = Rng::new(1);
        let (rows, k, n) = (3, 5, 4);
        let (x, w, dy) = (
            random(&mut rng, rows * k, 1.0),
            random(&mut rng, n * k, 0.5),
            random(&mut rng, rows * n, 1.0),
        );
        let (dx, dw) = linear(&x, rows, k, &w, n, &dy);
        close(
            &dx,
            &numeric(&x, &dy, |x| linear64(x, rows, k, &f64s(&w), n)),
            "dx",
        );
        close(
            &dw,
            &numeric(&w, &dy, |w| linear64(&f64s(&x), rows, k, w, n)),
            "dw",
        );
    }

    /// Runs `f` on one fresh layer of a KV cache and the input `x` (`batch`
    /// sequences of `seq` tokens from position 0): how the tests call the
    /// runtime's attention forward.
    pub fn on_fresh_layer<R>(
        x: &[f32],
        (batch, seq, dim): (usize, usize, usize),
        f: impl FnOnce(&crate::cpu::attention::Input, &mut crate::cpu::kv::LayerCache) -> R,
    ) -> R {
        let mut cache = crate::cpu::kv::KvCache::new();
        let key = crate::kv::CacheKey {
            layer: 0,
            iteration: None,
        };
        let inp = crate::cpu::attention::Input {
            x,
            batch,
            seq,
            dim,
            start: 0,
        };
        f(&inp, cache.entry(key, batch))
    }

    pub fn rmsnorm64(x: &[f64], cols: usize, w: &[f64], eps: f64) -> Vec<f64> {
        x.chunks(cols)
            .flat_map(|row| {
                let r = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / cols as f64 + eps).sqrt();
                row.iter()
                    .zip(w)
                    .map(move |(v, g)| v * r * g)
                    .collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn rmsnorm_matches_finite_differences() {
        let mut rng = Rng::new(2);
        let (rows, cols, eps) = (3, 6, 1e-6);
        let (x, w, dy) = (
            random(&mut rng, rows * cols, 1.0),
            random(&mut rng, cols, 1.0),
            random(&mut rng, rows * cols, 1.0),
        );
        let (dx, dw) = rmsnorm(&x, cols, &w, eps, &dy);
        close(
            &dx,
            &numeric(&x, &dy, |x| rmsnorm64(x, cols, &f64s(&w), eps)),
            "dx",
        );
        close(
            &dw,
            &numeric(&w, &dy, |w| rmsnorm64(&f64s(&x), cols, w, eps)),
            "dw",
        );
    }

    #[test]
    fn swiglu_matches_finite_differences() {
        let mut rng = Rng::new(3);
        let (rows, dim, hidden) = (2, 4, 6);
        let x = random(&mut rng, rows * dim, 1.0);
        let (gate, up, down) = (
            random(&mut rng, hidden * dim, 0.5),
            random(&mut rng, hidden * dim, 0.5),
            random(&mut rng, dim * hidden, 0.5),
        );
        let dy = random(&mut rng, rows * dim, 1.0);
        let g = swiglu(&x, rows, dim, (&gate, &up, &down), hidden, &dy);
        let f = |x: &[f64], gate: &[f64], up: &[f64], down: &[f64]| {
            let a = linear64(x, rows, dim, gate, hidden);
            let b = linear64(x, rows, dim, up, hidden);
            let h: Vec<f64> = a
                .iter()
                .zip(&b)
                .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
                .collect();
            linear64(&h, rows, hidden, down, dim)
        };
        let (x64, g64, u64_, d64) = (f64s(&x), f64s(&gate), f64s(&up), f64s(&down));
        close(&g.dx, &numeric(&x, &dy, |x| f(x, &g64, &u64_, &d64)), "dx");
        close(
            &g.gate,
            &numeric(&gate, &dy, |w| f(&x64, w, &u64_, &d64)),
            "gate",
        );
        close(&g.up, &numeric(&up, &dy, |w| f(&x64, &g64, w, &d64)), "up");
        close(
            &g.down,
            &numeric(&down, &dy, |w| f(&x64, &g64, &u64_, w)),
            "down",
        );
    }

    #[test]
    fn embedding_adds_rows_at_their_ids() {
        let dt = embedding(&[2, 0, 2], &[1.0, 2.0, 3.0, 4.0, 5.0, 6.0], 3, 2);
        assert_eq!(dt, vec![3.0, 4.0, 0.0, 0.0, 6.0, 8.0]);
    }

    #[test]
    fn cross_entropy_matches_finite_differences_and_ignores() {
        let mut rng = Rng::new(4);
        let vocab = 5;
        let logits = random(&mut rng, 4 * vocab, 2.0);
        let targets = [3, IGNORE, 0, 4];
        let (loss, d) = cross_entropy(&logits, vocab, &targets);
        let f = |l: &[f64]| -> f64 {
            let mut s = 0.0;
            for (row, &t) in l.chunks(vocab).zip(&targets) {
                if t == IGNORE {
                    continue;
                }
                let lse = row.iter().map(|x| x.exp()).sum::<f64>().ln();
                s += lse - row[t as usize];
            }
            s / 3.0
        };
        assert!((loss - f(&f64s(&logits))).abs() < 1e-6);
        close(&d, &numeric(&logits, &[1.0], |l| vec![f(l)]), "dlogits");
        assert!(d[vocab..2 * vocab].iter().all(|&v| v == 0.0), "ignored row");
    }

    #[test]
    fn lti_update_matches_finite_differences_and_stops_at_the_clamp() {
        let mut rng = Rng::new(5);
        let (rows, d) = (3, 4);
        let (h, e) = (
            random(&mut rng, rows * d, 1.0),
            random(&mut rng, rows * d, 1.0),
        );
        // Channel 3 lies beyond the clamp (log_dt + log_A > 20).
        let log_a = vec![-0.5f32, 0.3, -1.2, 25.0];
        let log_dt = 0.1f32;
        let b = random(&mut rng, d, 1.0);
        let dy = random(&mut rng, rows * d, 1.0);
        let g = lti_update((&h, &e), (&log_a, log_dt, &b), &dy);
        let f = |h: &[f64], e: &[f64], la: &[f64], dt: f64, b: &[f64]| -> Vec<f64> {
            (0..rows * d)
                .map(|i| {
                    let c = i % d;
                    let a = (-(dt + la[c]).clamp(-20.0, 20.0).exp()).exp();
                    a * h[i] + b[c] * e[i]
                })
                .collect()
        };
        let (h64, e64, la64, b64) = (f64s(&h), f64s(&e), f64s(&log_a), f64s(&b));
        let dt64 = f64::from(log_dt);
        close(
            &g.h,
            &numeric(&h, &dy, |h| f(h, &e64, &la64, dt64, &b64)),
            "h",
        );
        close(
            &g.e,
            &numeric(&e, &dy, |e| f(&h64, e, &la64, dt64, &b64)),
            "e",
        );
        close(
            &g.b,
            &numeric(&b, &dy, |b| f(&h64, &e64, &la64, dt64, b)),
            "B",
        );
        close(
            &g.log_a,
            &numeric(&log_a, &dy, |la| f(&h64, &e64, la, dt64, &b64)),
            "log_A",
        );
        assert_eq!(g.log_a[3], 0.0, "no gradient through the clamp");
        let want_dt = numeric(&[log_dt], &dy, |dt| f(&h64, &e64, &la64, dt[0], &b64));
        close(&[g.log_dt], &want_dt, "log_dt");
        assert_eq!(g.out, dy);
    }
}
