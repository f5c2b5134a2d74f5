//! DeepSeek-style MoE as in OpenMythos: `scores = softmax(router(x))`, top-k
//! chosen on `router(x) + router_bias`, gates = chosen scores renormalised to
//! sum 1, routed SwiGLU experts weighted by their gates, plus every shared
//! expert. Each routed expert runs once over the tokens routed to it
//! (gathered rows), not token by token.

use super::kernels::{linear_new, softmax, swiglu};
use rayon::prelude::*;

pub struct MoeWeights<'a> {
    pub router: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// Stacked `[E, hidden, dim]`, `[E, hidden, dim]`, `[E, dim, hidden]`.
    pub gate: &'a [f32],
    pub up: &'a [f32],
    pub down: &'a [f32],
    /// Shared experts, stacked the same way (empty when there are none).
    pub shared: Option<(&'a [f32], &'a [f32], &'a [f32])>,
}

/// The tokens an expert served (row, gate) and its outputs for them.
type ExpertOutput = (Vec<(usize, f32)>, Vec<f32>);

pub struct MoeDims {
    pub experts: usize,
    pub top_k: usize,
    pub hidden: usize,
    pub shared: usize,
    pub shared_hidden: usize,
}

pub fn moe(x: &[f32], rows: usize, dim: usize, w: &MoeWeights, m: &MoeDims) -> Vec<f32> {
    let logits = linear_new(x, rows, dim, w.router, m.experts);
    // Routing per token: (expert, gate) pairs.
    let mut routed: Vec<Vec<(usize, f32)>> = vec![Vec::new(); m.experts];
    for r in 0..rows {
        let l = &logits[r * m.experts..(r + 1) * m.experts];
        let mut scores = l.to_vec();
        softmax(&mut scores);
        let mut order: Vec<usize> = (0..m.experts).collect();
        let biased = |e: usize| l[e] + w.bias.map_or(0.0, |b| b[e]);
        // Highest biased logit first; ties go to the lower index.
        order.sort_by(|&a, &b| biased(b).total_cmp(&biased(a)).then(a.cmp(&b)));
        let chosen = &order[..m.top_k];
        let total: f32 = chosen.iter().map(|&e| scores[e]).sum();
        for &e in chosen {
            routed[e].push((r, scores[e] / total));
        }
    }
    let (h, e_stride, d_stride) = (m.hidden, m.hidden * dim, dim * m.hidden);
    // Each expert over its gathered tokens, in parallel; results added in expert order.
    let partial: Vec<Option<ExpertOutput>> = routed
        .into_par_iter()
        .enumerate()
        .map(|(e, tokens)| {
            if tokens.is_empty() {
                return None;
            }
            let mut gathered = Vec::with_capacity(tokens.len() * dim);
            for &(r, _) in &tokens {
                gathered.extend_from_slice(&x[r * dim..(r + 1) * dim]);
            }
            let y = swiglu(
                &gathered,
                tokens.len(),
                dim,
                &w.gate[e * e_stride..(e + 1) * e_stride],
                &w.up[e * e_stride..(e + 1) * e_stride],
                &w.down[e * d_stride..(e + 1) * d_stride],
                h,
            );
            Some((tokens, y))
        })
        .collect();
    let mut out = vec![0.0f32; rows * dim];
    for (tokens, y) in partial.into_iter().flatten() {
        for (i, &(r, g)) in tokens.iter().enumerate() {
            for (o, &v) in out[r * dim..(r + 1) * dim]
                .iter_mut()
                .zip(&y[i * dim..(i + 1) * dim])
            {
                *o += g * v;
            }
        }
    }
    if let Some((gate, up, down)) = w.shared {
        let (sh, se, sd) = (
            m.shared_hidden,
            m.shared_hidden * dim,
            dim * m.shared_hidden,
        );
        for s in 0..m.shared {
            let y = swiglu(
                x,
                rows,
                dim,
                &gate[s * se..(s + 1) * se],
                &up[s * se..(s + 1) * se],
                &down[s * sd..(s + 1) * sd],
                sh,
            );
            for (o, v) in out.iter_mut().zip(&y) {
                *o += v;
            }
        }
    }
    out
}
