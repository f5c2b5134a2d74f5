//! The optimizer of OpenMythos's training script (`training/3b_fine_web_edu.py`),
//! for `mythos train`: `torch.optim.AdamW` (one parameter group, decoupled
//! weight decay on every parameter), the learning rate of its `get_lr`
//! (linear warmup from 0, half cosine to `min_lr`) and
//! `nn.utils.clip_grad_norm_`. Element arithmetic is f32;
//! the scalar factors are computed in f64 as Python computes them. The
//! update follows the order of torch's single-tensor implementation.

use rayon::prelude::*;

/// `torch.optim.AdamW`'s hyper-parameters other than the learning rate.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AdamWConfig {
    pub betas: (f64, f64),
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// The reference's: betas (0.9, 0.95), eps 1e-8, weight decay 0.1.
    fn default() -> Self {
        AdamWConfig {
            betas: (0.9, 0.95),
            eps: 1e-8,
            weight_decay: 0.1,
        }
    }
}

/// AdamW's state: per parameter, its step count and both moments. As in
/// torch, a parameter without a gradient in a step (an expert no token
/// reached) is skipped: no decay, no moment update, and its own step
/// count (its bias correction) does not advance.
#[derive(Clone, Debug, PartialEq)]
pub struct AdamW {
    pub config: AdamWConfig,
    /// Updates each parameter has had.
    pub steps: Vec<u64>,
    pub exp_avg: Vec<Vec<f32>>,
    pub exp_avg_sq: Vec<Vec<f32>>,
}

impl AdamW {
    /// Zero moments for parameters of the given lengths.
    pub fn new(config: AdamWConfig, lens: impl IntoIterator<Item = usize>) -> AdamW {
        let (exp_avg, exp_avg_sq): (Vec<Vec<f32>>, Vec<Vec<f32>>) = lens
            .into_iter()
            .map(|n| (vec![0.0; n], vec![0.0; n]))
            .unzip();
        let steps = vec![0; exp_avg.len()];
        AdamW {
            config,
            steps,
            exp_avg,
            exp_avg_sq,
        }
    }

    /// One update of every parameter with a gradient at learning rate `lr`
    /// (torch's single-tensor AdamW: decay, moments, bias-corrected step);
    /// a `None` gradient leaves its parameter and state as they are.
    pub fn update(&mut self, params: &mut [&mut [f32]], grads: &[Option<&[f32]>], lr: f64) {
        assert_eq!(params.len(), self.exp_avg.len(), "one state per parameter");
        assert_eq!(params.len(), grads.len(), "one gradient per parameter");
        let AdamWConfig {
            betas: (b1, b2),
            eps,
            weight_decay,
        } = self.config;
        let decay = (1.0 - lr * weight_decay) as f32;
        let (w1, b2f, w2, eps) = ((1.0 - b1) as f32, b2 as f32, (1.0 - b2) as f32, eps as f32);
        for (i, p) in params.iter_mut().enumerate() {
            let Some(g) = grads[i] else { continue };
            self.steps[i] += 1;
            let t = self.steps[i] as i32;
            let step_size = (lr / (1.0 - b1.powi(t))) as f32;
            let bc2_sqrt = (1.0 - b2.powi(t)).sqrt() as f32;
            let (m, v) = (&mut self.exp_avg[i], &mut self.exp_avg_sq[i]);
            assert_eq!(
                (p.len(), g.len()),
                (m.len(), m.len()),
                "parameter {i}'s length"
            );
            // Element-wise, so any split across threads gives the same bits.
            const CHUNK: usize = 1 << 14;
            p.par_chunks_mut(CHUNK)
                .zip(m.par_chunks_mut(CHUNK))
                .zip(v.par_chunks_mut(CHUNK))
                .zip(g.par_chunks(CHUNK))
                .for_each(|(((p, m), v), g)| {
                    for (((p, m), v), &g) in p.iter_mut().zip(m).zip(v).zip(g) {
                        *p *= decay;
                        // `exp_avg.lerp_(grad, 1 - beta1)`.
                        *m += w1 * (g - *m);
                        *v = *v * b2f + w2 * g * g;
                        let denom = v.sqrt() / bc2_sqrt + eps;
                        *p -= step_size * (*m / denom);
                    }
                });
        }
    }
}

/// The reference's `get_lr`: `max_lr * step / warmup` during warmup, then a
/// half cosine from `max_lr` to `min_lr` at `total`, `min_lr` after.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub max_lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub total: u64,
}

impl Schedule {
    /// The learning rate of optimizer step `step` (0-indexed).
    pub fn lr(&self, step: u64) -> f64 {
        if step < self.warmup {
            return self.max_lr * step as f64 / self.warmup as f64;
        }
        if step >= self.total {
            return self.min_lr;
        }
        let decay = (step - self.warmup) as f64 / (self.total - self.warmup) as f64;
        self.min_lr
            + 0.5 * (self.max_lr - self.min_lr) * (1.0 + (std::f64::consts::PI * decay).cos())
    }
}

/// `nn.utils.clip_grad_norm_(params, max_norm)`: scales every gradient by
/// `min(1, max_norm / (norm + 1e-6))`, where `norm` is the L2 norm of all of
/// them together; returns that norm (before clipping).
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f64) -> f64 {
    let norm = grads
        .iter()
        .map(|g| g.iter().map(|&x| f64::from(x) * f64::from(x)).sum::<f64>())
        .sum::<f64>()
        .sqrt();
    let coef = (max_norm / (norm + 1e-6)).min(1.0) as f32;
    for g in grads.iter_mut() {
        for x in g.iter_mut() {
            *x *= coef;
        }
    }
    norm
}

#[cfg(test)]
mod tests {
    use super::*;

    /// AdamW in f64, straight from torch's documentation.
    fn oracle(p: f64, grads: &[f64], lr: &[f64], c: AdamWConfig) -> f64 {
        let (mut p, mut m, mut v) = (p, 0.0, 0.0);
        for (t, (&g, &lr)) in grads.iter().zip(lr).enumerate() {
            let t = t as i32 + 1;
            p *= 1.0 - lr * c.weight_decay;
            m = c.betas.0 * m + (1.0 - c.betas.0) * g;
            v = c.betas.1 * v + (1.0 - c.betas.1) * g * g;
            let m_hat = m / (1.0 - c.betas.0.powi(t));
            let v_hat = v / (1.0 - c.betas.1.powi(t));
            p -= lr * m_hat / (v_hat.sqrt() + c.eps);
        }
        p
    }

    #[test]
    fn adamw_follows_torch_formula() {
        let c = AdamWConfig::default();
        // The first step by hand: decay to 0.99, then lr * m_hat / sqrt(v_hat) = 0.1 * sign(g).
        let mut opt = AdamW::new(c, [2]);
        let mut p = vec![1.0f32, -2.0];
        opt.update(&mut [&mut p], &[Some(&[0.5, -3.0])], 0.1);
        assert!((p[0] - 0.89).abs() < 1e-6, "{}", p[0]);
        assert!((p[1] - (-2.0 * 0.99 + 0.1)).abs() < 1e-6, "{}", p[1]);
        // Several steps against the f64 oracle.
        let grads = [0.5, -0.25, 0.125, 2.0, -1.0];
        let lrs = [0.1, 0.05, 0.02, 0.01, 0.005];
        let mut opt = AdamW::new(c, [1]);
        let mut p = vec![1.0f32];
        for (g, lr) in grads.iter().zip(lrs) {
            opt.update(&mut [&mut p], &[Some(&[*g as f32])], lr);
        }
        let want = oracle(1.0, &grads, &lrs, c);
        assert!((f64::from(p[0]) - want).abs() < 1e-6, "{} vs {want}", p[0]);
        assert_eq!(opt.steps, [5]);
    }

    #[test]
    fn a_parameter_without_a_gradient_is_skipped() {
        let c = AdamWConfig::default();
        let mut opt = AdamW::new(c, [1, 1]);
        let (mut a, mut b) = (vec![1.0f32], vec![1.0f32]);
        opt.update(&mut [&mut a, &mut b], &[Some(&[0.5]), None], 0.1);
        assert_eq!(b, [1.0], "no decay without a gradient");
        assert_eq!(opt.steps, [1, 0]);
        // b's first update is a first step: its bias correction starts at 1.
        opt.update(&mut [&mut a, &mut b], &[Some(&[0.5]), Some(&[0.5])], 0.1);
        assert_eq!(opt.steps, [2, 1]);
        let want = oracle(1.0, &[0.5], &[0.1], c);
        assert!((f64::from(b[0]) - want).abs() < 1e-6, "{} vs {want}", b[0]);
    }

    #[test]
    fn the_schedule_is_the_references_get_lr() {
        let s = Schedule {
            max_lr: 3e-4,
            min_lr: 3e-5,
            warmup: 10,
            total: 110,
        };
        assert_eq!(s.lr(0), 0.0);
        assert!((s.lr(5) - 1.5e-4).abs() < 1e-18);
        assert!((s.lr(10) - 3e-4).abs() < 1e-18);
        assert!((s.lr(60) - (3e-5 + 0.5 * 2.7e-4)).abs() < 1e-15);
        assert_eq!(s.lr(110), 3e-5);
        assert_eq!(s.lr(1000), 3e-5);
        assert!(s.lr(100) > s.lr(101));
    }

    #[test]
    fn clipping_scales_to_the_max_norm() {
        let (mut a, mut b) = (vec![3.0f32, 0.0], vec![4.0f32]);
        let norm = clip_grad_norm(&mut [&mut a, &mut b], 1.0);
        assert!((norm - 5.0).abs() < 1e-12);
        let coef = 1.0 / (5.0 + 1e-6);
        assert!((f64::from(a[0]) - 3.0 * coef).abs() < 1e-6);
        assert!((f64::from(b[0]) - 4.0 * coef).abs() < 1e-6);
        // Under the limit: unchanged.
        let mut c = vec![0.3f32, 0.4];
        assert!((clip_grad_norm(&mut [&mut c], 1.0) - 0.5).abs() < 1e-7);
        assert_eq!(c, vec![0.3, 0.4]);
    }
}
