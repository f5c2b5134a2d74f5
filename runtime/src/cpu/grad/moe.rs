//! The vector-Jacobian product of the DeepSeek-style MoE (OpenMythos's
//! `MoEFFN`), as autograd computes it: the top-k selection (by router
//! logits plus `router_bias`) carries no gradient; the router learns only
//! through the chosen scores renormalised to sum 1 (so with top-1 routing
//! it gets none); an expert no token chose gets zero; `router_bias` is a
//! buffer (no gradient).

use super::swiglu as swiglu_vjp;
use crate::cpu::kernels::{linear, swiglu};
use crate::cpu::moe::{route, MoeDims, MoeWeights};

/// The gradients of the MoE's input and weights (stacked like the weights).
pub struct MoeGrads {
    pub dx: Vec<f32>,
    pub router: Vec<f32>,
    pub gate: Vec<f32>,
    pub up: Vec<f32>,
    pub down: Vec<f32>,
    /// The shared experts' `(gate, up, down)`, when there are any.
    pub shared: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    /// The tokens routed to each expert (DeepSeek-V3's load).
    pub load: Vec<u64>,
}

/// `x` `[rows, dim]`, `dy` the gradient of the MoE's output.
pub fn moe(
    x: &[f32],
    rows: usize,
    dim: usize,
    w: &MoeWeights,
    m: &MoeDims,
    dy: &[f32],
) -> MoeGrads {
    let (experts, k, h) = (m.experts, m.top_k, m.hidden);
    let routing = route(x, rows, dim, w, m);
    let (e_stride, d_stride) = (h * dim, dim * h);
    let mut g = MoeGrads {
        dx: vec![0.0; rows * dim],
        router: vec![0.0; experts * dim],
        gate: vec![0.0; w.gate.len()],
        up: vec![0.0; w.up.len()],
        down: vec![0.0; w.down.len()],
        shared: None,
        load: vec![0; experts],
    };
    // d out / d gate of each (token, slot): dy . y_expert(x).
    let mut dgates = vec![0.0f32; rows * k];
    for e in 0..experts {
        let slots: Vec<usize> = (0..rows * k)
            .filter(|&i| routing.choices[i].0 == e)
            .collect();
        if slots.is_empty() {
            continue;
        }
        let n = slots.len();
        g.load[e] = n as u64;
        let mut xs = Vec::with_capacity(n * dim);
        let mut dys = Vec::with_capacity(n * dim);
        for &i in &slots {
            let (r, gate) = (i / k, routing.choices[i].1);
            xs.extend_from_slice(&x[r * dim..(r + 1) * dim]);
            dys.extend(dy[r * dim..(r + 1) * dim].iter().map(|v| v * gate));
        }
        let ws = (
            &w.gate[e * e_stride..(e + 1) * e_stride],
            &w.up[e * e_stride..(e + 1) * e_stride],
            &w.down[e * d_stride..(e + 1) * d_stride],
        );
        let y = swiglu(&xs, n, dim, ws.0, ws.1, ws.2, h);
        for (s, &i) in slots.iter().enumerate() {
            let r = i / k;
            dgates[i] = (0..dim).map(|c| dy[r * dim + c] * y[s * dim + c]).sum();
        }
        let eg = swiglu_vjp(&xs, n, dim, ws, h, &dys);
        for (s, &i) in slots.iter().enumerate() {
            let r = i / k;
            for c in 0..dim {
                g.dx[r * dim + c] += eg.dx[s * dim + c];
            }
        }
        g.gate[e * e_stride..(e + 1) * e_stride].copy_from_slice(&eg.gate);
        g.up[e * e_stride..(e + 1) * e_stride].copy_from_slice(&eg.up);
        g.down[e * d_stride..(e + 1) * d_stride].copy_from_slice(&eg.down);
    }
    // Through the renormalised scores to the router's logits.
    let mut logits = vec![0.0; rows * experts];
    linear(x, rows, dim, w.router, experts, &mut logits);
    let mut dlogits = vec![0.0; rows * experts];
    for r in 0..rows {
        let l = &logits[r * experts..(r + 1) * experts];
        let max = l.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
        let z: f32 = l.iter().map(|&v| (v - max).exp()).sum();
        let s: Vec<f32> = l.iter().map(|&v| (v - max).exp() / z).collect();
        let chosen = &routing.choices[r * k..(r + 1) * k];
        let sum: f32 = chosen.iter().map(|&(e, _)| s[e]).sum();
        let mean: f32 = (0..k).map(|j| dgates[r * k + j] * chosen[j].1).sum();
        let mut ds = vec![0.0f32; experts];
        for (j, &(e, _)) in chosen.iter().enumerate() {
            ds[e] += (dgates[r * k + j] - mean) / sum;
        }
        let dot: f32 = (0..experts).map(|e| ds[e] * s[e]).sum();
        for e in 0..experts {
            dlogits[r * experts + e] = s[e] * (ds[e] - dot);
        }
    }
    let (dx_router, drouter) = super::linear(x, rows, dim, w.router, experts, &dlogits);
    g.router = drouter;
    for (d, v) in g.dx.iter_mut().zip(&dx_router) {
        *d += v;
    }
    if let Some((sg, su, sd)) = w.shared {
        let (hs, n) = (m.shared_hidden, m.shared);
        let (es, ds) = (hs * dim, dim * hs);
        let mut grads = (
            vec![0.0; sg.len()],
            vec![0.0; su.len()],
            vec![0.0; sd.len()],
        );
        for s in 0..n {
            let ws = (
                &sg[s * es..(s + 1) * es],
                &su[s * es..(s + 1) * es],
                &sd[s * ds..(s + 1) * ds],
            );
            let sgr = swiglu_vjp(x, rows, dim, ws, hs, dy);
            for (d, v) in g.dx.iter_mut().zip(&sgr.dx) {
                *d += v;
            }
            grads.0[s * es..(s + 1) * es].copy_from_slice(&sgr.gate);
            grads.1[s * es..(s + 1) * es].copy_from_slice(&sgr.up);
            grads.2[s * ds..(s + 1) * ds].copy_from_slice(&sgr.down);
        }
        g.shared = Some(grads);
    }
    g
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, f64s, linear64, numeric, random};
    use super::*;
    use crate::rng::Rng;

    fn swiglu64(
        x: &[f64],
        rows: usize,
        dim: usize,
        w: (&[f64], &[f64], &[f64]),
        h: usize,
    ) -> Vec<f64> {
        let a = linear64(x, rows, dim, w.0, h);
        let b = linear64(x, rows, dim, w.1, h);
        let act: Vec<f64> = a
            .iter()
            .zip(&b)
            .map(|(a, b)| a / (1.0 + (-a).exp()) * b)
            .collect();
        linear64(&act, rows, h, w.2, dim)
    }

    /// The MoE forward in f64 from the reference's description.
    #[allow(clippy::too_many_arguments)]
    fn forward64(
        x: &[f64],
        rows: usize,
        dim: usize,
        m: &MoeDims,
        router: &[f64],
        bias: &[f64],
        routed: [&[f64]; 3],
        shared: [&[f64]; 3],
    ) -> Vec<f64> {
        let (e_n, k, h) = (m.experts, m.top_k, m.hidden);
        let logits = linear64(x, rows, dim, router, e_n);
        let mut y = vec![0.0; rows * dim];
        for r in 0..rows {
            let l = &logits[r * e_n..(r + 1) * e_n];
            let z: f64 = l.iter().map(|v| v.exp()).sum();
            let s: Vec<f64> = l.iter().map(|v| v.exp() / z).collect();
            let mut order: Vec<usize> = (0..e_n).collect();
            order.sort_by(|&a, &b| (l[b] + bias[b]).partial_cmp(&(l[a] + bias[a])).unwrap());
            let chosen = &order[..k];
            let sum: f64 = chosen.iter().map(|&e| s[e]).sum();
            let xr = &x[r * dim..(r + 1) * dim];
            for &e in chosen {
                let (es, ds) = (h * dim, dim * h);
                let out = swiglu64(
                    xr,
                    1,
                    dim,
                    (
                        &routed[0][e * es..(e + 1) * es],
                        &routed[1][e * es..(e + 1) * es],
                        &routed[2][e * ds..(e + 1) * ds],
                    ),
                    h,
                );
                for c in 0..dim {
                    y[r * dim + c] += s[e] / sum * out[c];
                }
            }
            let out = swiglu64(
                xr,
                1,
                dim,
                (shared[0], shared[1], shared[2]),
                m.shared_hidden,
            );
            for c in 0..dim {
                y[r * dim + c] += out[c];
            }
        }
        y
    }

    #[test]
    fn moe_matches_finite_differences() {
        for top_k in [1, 2] {
            let mut rng = Rng::new(31 + top_k as u64);
            let (rows, dim) = (5, 4);
            let m = MoeDims {
                experts: 4,
                top_k,
                hidden: 3,
                shared: 1,
                shared_hidden: 6,
            };
            let (es, hs) = (m.hidden * dim, m.shared_hidden * dim);
            let x = random(&mut rng, rows * dim, 1.0);
            let router = random(&mut rng, m.experts * dim, 1.0);
            let bias = vec![0.0f32, 0.3, -0.2, 0.1];
            let (gate, up, down) = (
                random(&mut rng, m.experts * es, 0.5),
                random(&mut rng, m.experts * es, 0.5),
                random(&mut rng, m.experts * es, 0.5),
            );
            let (sg, su, sd) = (
                random(&mut rng, hs, 0.5),
                random(&mut rng, hs, 0.5),
                random(&mut rng, hs, 0.5),
            );
            let dy = random(&mut rng, rows * dim, 1.0);
            let w = MoeWeights {
                router: &router,
                bias: Some(&bias),
                gate: &gate,
                up: &up,
                down: &down,
                shared: Some((&sg, &su, &sd)),
            };
            let g = moe(&x, rows, dim, &w, &m, &dy);
            let v = |a: &[f32]| f64s(a);
            let (x64, r64, b64) = (v(&x), v(&router), v(&bias));
            let (g64, u64_, d64) = (v(&gate), v(&up), v(&down));
            let (sg64, su64, sd64) = (v(&sg), v(&su), v(&sd));
            let f = |x: &[f64], r: &[f64], routed: [&[f64]; 3], shared: [&[f64]; 3]| {
                forward64(x, rows, dim, &m, r, &b64, routed, shared)
            };
            let routed = [&g64[..], &u64_, &d64];
            let shared = [&sg64[..], &su64, &sd64];
            close(
                &g.dx,
                &numeric(&x, &dy, |x| f(x, &r64, routed, shared)),
                "dx",
            );
            let dr = numeric(&router, &dy, |r| f(&x64, r, routed, shared));
            if top_k == 1 {
                assert!(
                    g.router.iter().all(|&v| v.abs() < 1e-6),
                    "top-1: no router gradient"
                );
                assert!(dr.iter().all(|v| v.abs() < 1e-6));
            } else {
                close(&g.router, &dr, "router");
            }
            close(
                &g.gate,
                &numeric(&gate, &dy, |w| f(&x64, &r64, [w, &u64_, &d64], shared)),
                "gate",
            );
            close(
                &g.up,
                &numeric(&up, &dy, |w| f(&x64, &r64, [&g64, w, &d64], shared)),
                "up",
            );
            close(
                &g.down,
                &numeric(&down, &dy, |w| f(&x64, &r64, [&g64, &u64_, w], shared)),
                "down",
            );
            // The f64 forward is the runtime's (parity-tested) MoE.
            let ours = crate::cpu::moe::moe(&x, rows, dim, &w, &m);
            close(&ours, &f(&x64, &r64, routed, shared), "forward");
            let (dsg, _, dsd) = g.shared.as_ref().unwrap();
            close(
                dsg,
                &numeric(&sg, &dy, |w| f(&x64, &r64, routed, [w, &su64, &sd64])),
                "shared gate",
            );
            close(
                dsd,
                &numeric(&sd, &dy, |w| f(&x64, &r64, routed, [&sg64, &su64, w])),
                "shared down",
            );
        }
    }
}
