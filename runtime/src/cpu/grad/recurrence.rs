//! Vector-Jacobian products of the recurrence's own ops: the ACT rule's
//! steps and halting probability, and the depth LoRA. As in PyTorch
//! autograd on OpenMythos 0.5.0: the halted mask and the threshold test
//! carry no gradient (`torch.where` picks a branch; `clamp(min=0)` of the
//! remainder passes the gradient where `1 - cum >= 0`).

use super::linear;
use crate::cpu::kernels::sigmoid;
use mythos_compiler::ir::ActStep;

/// The gradients of an ACT step's operands, in operand order (`None` for
/// the masks, which get none).
pub type ActGrads = Vec<Option<Vec<f32>>>;

/// One step of the ACT rule (see [`ActStep`] for its operands), `rows` rows,
/// the state `width` wide for `accumulate`; `dy` the gradient of its result.
pub fn act(step: ActStep, args: &[&[f32]], width: usize, dy: &[f32]) -> ActGrads {
    match step {
        ActStep::Weight { threshold } => {
            let (p, cum, halted) = (args[0], args[1], args[2]);
            let mut dp = vec![0.0; p.len()];
            let mut dcum = vec![0.0; p.len()];
            for i in 0..p.len() {
                let running = 1.0 - halted[i];
                if cum[i] + p[i] >= threshold as f32 {
                    // `(1 - cum).clamp(min=0) * running`.
                    if 1.0 - cum[i] >= 0.0 {
                        dcum[i] = -running * dy[i];
                    }
                } else {
                    dp[i] = running * dy[i];
                }
            }
            vec![Some(dp), Some(dcum), None]
        }
        ActStep::Accumulate => {
            let (h, w) = (args[1], args[2]);
            let mut dh = vec![0.0; h.len()];
            let mut dw = vec![0.0; w.len()];
            for (r, g) in dy.chunks_exact(width).enumerate() {
                let hr = &h[r * width..(r + 1) * width];
                for c in 0..width {
                    dh[r * width + c] = w[r] * g[c];
                    dw[r] += g[c] * hr[c];
                }
            }
            vec![Some(dy.to_vec()), Some(dh), Some(dw)]
        }
        ActStep::Cumulate => {
            let halted = args[2];
            let dp = dy.iter().zip(halted).map(|(g, h)| g * (1.0 - h)).collect();
            vec![Some(dy.to_vec()), Some(dp), None]
        }
        ActStep::Halted { .. } => vec![None, None],
    }
}

/// `p = sigmoid(h @ w^T + b)` per row (`w` `[1, width]`): `(dh, dw, db)`.
pub fn act_halt(
    h: &[f32],
    width: usize,
    w: &[f32],
    b: f32,
    dy: &[f32],
) -> (Vec<f32>, Vec<f32>, f32) {
    let mut dh = vec![0.0; h.len()];
    let mut dw = vec![0.0; width];
    let mut db = 0.0;
    for (r, row) in h.chunks_exact(width).enumerate() {
        let z: f32 = row.iter().zip(w).map(|(x, w)| x * w).sum::<f32>() + b;
        let p = sigmoid(z);
        let dz = dy[r] * p * (1.0 - p);
        for c in 0..width {
            dh[r * width + c] = dz * w[c];
            dw[c] += dz * row[c];
        }
        db += dz;
    }
    (dh, dw, db)
}

/// The gradients of the depth LoRA's input and weights.
pub struct LoraGrads {
    pub dx: Vec<f32>,
    pub down: Vec<f32>,
    pub b: Vec<f32>,
    /// `[max_iters, rank]`: only the row the iteration used is nonzero.
    pub scale: Vec<f32>,
}

/// `delta = (x @ down^T * scale[min(t, max_iters - 1)]) @ B` with `down`,
/// `B` `[rank, dim]` and `scale` `[max_iters, rank]`.
pub fn lora(
    x: &[f32],
    rows: usize,
    dim: usize,
    (down, b, scale): (&[f32], &[f32], &[f32]),
    (rank, max_iters, t): (usize, usize, usize),
    dy: &[f32],
) -> LoraGrads {
    let row = t.min(max_iters - 1);
    let s = &scale[row * rank..(row + 1) * rank];
    let mut low = vec![0.0; rows * rank];
    crate::cpu::kernels::linear(x, rows, dim, down, rank, &mut low);
    let scaled: Vec<f32> = (0..rows * rank).map(|i| low[i] * s[i % rank]).collect();
    // `delta = scaled @ B` is a linear layer with weight `B^T` (`[dim, rank]`).
    let mut b_t = vec![0.0; dim * rank];
    for r in 0..rank {
        for c in 0..dim {
            b_t[c * rank + r] = b[r * dim + c];
        }
    }
    let (dscaled, db_t) = linear(&scaled, rows, rank, &b_t, dim, dy);
    let mut db = vec![0.0; rank * dim];
    for c in 0..dim {
        for r in 0..rank {
            db[r * dim + c] = db_t[c * rank + r];
        }
    }
    let mut dscale = vec![0.0; max_iters * rank];
    let mut dlow = vec![0.0; rows * rank];
    for i in 0..rows * rank {
        dlow[i] = dscaled[i] * s[i % rank];
        dscale[row * rank + i % rank] += dscaled[i] * low[i];
    }
    let (dx, ddown) = linear(x, rows, dim, down, rank, &dlow);
    LoraGrads {
        dx,
        down: ddown,
        b: db,
        scale: dscale,
    }
}

#[cfg(test)]
mod tests {
    use super::super::tests::{close, f64s, linear64, numeric, random};
    use super::*;
    use crate::rng::Rng;

    #[test]
    fn act_steps_follow_the_branches_and_skip_the_masks() {
        let thr = 0.9;
        let weight = ActStep::Weight { threshold: thr };
        // Row 0 stays under the threshold (gradient to p), row 1 crosses it
        // (gradient to cum), row 2 crosses with cum > 1 (the clamp: none),
        // row 3 has halted (none).
        let p = [0.3f32, 0.5, 0.5, 0.3];
        let cum = [0.2f32, 0.6, 1.2, 0.2];
        let halted = [0.0f32, 0.0, 0.0, 1.0];
        let dy = [1.0f32, 2.0, 3.0, 4.0];
        let g = act(weight, &[&p, &cum, &halted], 1, &dy);
        assert_eq!(g[0].as_deref(), Some(&[1.0, 0.0, 0.0, 0.0][..]));
        assert_eq!(g[1].as_deref(), Some(&[0.0, -2.0, 0.0, 0.0][..]));
        assert!(g[2].is_none());
        let g = act(ActStep::Cumulate, &[&cum, &p, &halted], 1, &dy);
        assert_eq!(g[1].as_deref(), Some(&[1.0, 2.0, 3.0, 0.0][..]));
        assert!(
            act(ActStep::Halted { threshold: thr }, &[&halted, &cum], 1, &dy)
                .iter()
                .all(Option::is_none)
        );
    }

    #[test]
    fn accumulate_and_halt_match_finite_differences() {
        let mut rng = Rng::new(21);
        let (rows, width) = (3, 4);
        let (acc, h, w) = (
            random(&mut rng, rows * width, 1.0),
            random(&mut rng, rows * width, 1.0),
            random(&mut rng, rows, 1.0),
        );
        let dy = random(&mut rng, rows * width, 1.0);
        let g = act(ActStep::Accumulate, &[&acc, &h, &w], width, &dy);
        let f = |acc: &[f64], h: &[f64], w: &[f64]| -> Vec<f64> {
            (0..rows * width)
                .map(|i| acc[i] + w[i / width] * h[i])
                .collect()
        };
        let (a64, h64, w64) = (f64s(&acc), f64s(&h), f64s(&w));
        close(
            g[0].as_ref().unwrap(),
            &numeric(&acc, &dy, |a| f(a, &h64, &w64)),
            "acc",
        );
        close(
            g[1].as_ref().unwrap(),
            &numeric(&h, &dy, |h| f(&a64, h, &w64)),
            "h",
        );
        close(
            g[2].as_ref().unwrap(),
            &numeric(&w, &dy, |w| f(&a64, &h64, w)),
            "w",
        );

        let (hw, b) = (random(&mut rng, width, 1.0), 0.3f32);
        let dp = random(&mut rng, rows, 1.0);
        let (dh, dw, db) = act_halt(&h, width, &hw, b, &dp);
        let halt = |h: &[f64], w: &[f64], b: f64| -> Vec<f64> {
            h.chunks(width)
                .map(|r| {
                    1.0 / (1.0 + (-(r.iter().zip(w).map(|(x, w)| x * w).sum::<f64>() + b)).exp())
                })
                .collect()
        };
        let hw64 = f64s(&hw);
        close(&dh, &numeric(&h, &dp, |h| halt(h, &hw64, 0.3)), "halt dh");
        close(&dw, &numeric(&hw, &dp, |w| halt(&h64, w, 0.3)), "halt dw");
        close(
            &[db],
            &numeric(&[b], &dp, |b| halt(&h64, &hw64, b[0])),
            "halt db",
        );
    }

    #[test]
    fn lora_matches_finite_differences_with_the_clamped_index() {
        let mut rng = Rng::new(22);
        let (rows, dim, rank, max_iters) = (3, 5, 2, 3);
        let x = random(&mut rng, rows * dim, 1.0);
        let (down, b, scale) = (
            random(&mut rng, rank * dim, 0.5),
            random(&mut rng, rank * dim, 0.5),
            random(&mut rng, max_iters * rank, 1.0),
        );
        let dy = random(&mut rng, rows * dim, 1.0);
        // Iteration 7 is beyond the trained depth: it uses the last row.
        let t = 7;
        let g = lora(
            &x,
            rows,
            dim,
            (&down, &b, &scale),
            (rank, max_iters, t),
            &dy,
        );
        let f = |x: &[f64], down: &[f64], b: &[f64], scale: &[f64]| -> Vec<f64> {
            let low = linear64(x, rows, dim, down, rank);
            let s = &scale[(max_iters - 1) * rank..];
            let mut y = vec![0.0; rows * dim];
            for r in 0..rows {
                for c in 0..dim {
                    y[r * dim + c] = (0..rank)
                        .map(|k| low[r * rank + k] * s[k] * b[k * dim + c])
                        .sum();
                }
            }
            y
        };
        let (x64, d64, b64, s64) = (f64s(&x), f64s(&down), f64s(&b), f64s(&scale));
        close(&g.dx, &numeric(&x, &dy, |x| f(x, &d64, &b64, &s64)), "dx");
        close(
            &g.down,
            &numeric(&down, &dy, |d| f(&x64, d, &b64, &s64)),
            "down",
        );
        close(&g.b, &numeric(&b, &dy, |b| f(&x64, &d64, b, &s64)), "B");
        close(
            &g.scale,
            &numeric(&scale, &dy, |s| f(&x64, &d64, &b64, s)),
            "scale",
        );
        assert!(g.scale[..(max_iters - 1) * rank].iter().all(|&v| v == 0.0));
    }
}
