//! The reference training script's step (`training/3b_fine_web_edu.py`) on
//! the CPU: the gradient of each micro-batch (a gradient module, see
//! `mythos_compiler::ir::grad`), averaged over the accumulation steps, the
//! global grad-norm clip, then AdamW at the schedule's learning rate, over
//! OpenMythos's parameters (one per expert of a stacked weight, so an
//! expert no token reached is skipped as torch skips a `None` gradient).

use crate::cpu::grad::Depth;
use crate::cpu::CpuRuntime;
use crate::exec::RunError;
use crate::optim::{clip_grad_norm, AdamW, AdamWConfig, Schedule};
use crate::weights::{parameters, Parameter, Weights};
use mythos_compiler::ir::{Module, WeightId};

/// The optimizer's settings.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TrainConfig {
    pub adamw: AdamWConfig,
    pub schedule: Schedule,
    /// `clip_grad_norm_`'s max norm (`None`: no clipping).
    pub clip: Option<f64>,
    /// DeepSeek-V3's auxiliary-loss-free balancing (`None`: off, as the
    /// reference, whose `router_bias` never changes): after each step, each
    /// expert's `router_bias` moves by this rate towards balance,
    /// `b_i += rate * sign(mean load - load_i)`.
    pub router_bias_rate: Option<f64>,
}

/// What one optimizer step did.
#[derive(Clone, Debug, PartialEq)]
pub struct StepReport {
    /// The step's index (0 first).
    pub step: u64,
    /// The mean loss over its micro-batches, before the update.
    pub loss: f64,
    pub lr: f64,
    /// The global gradient norm before clipping.
    pub grad_norm: f64,
    /// Loop iterations run, summed over the micro-batches.
    pub iterations: u64,
    /// The busiest expert's load over the mean load, the largest over the
    /// MoEs with a `router_bias` (1: balanced; `None`: no such MoE).
    pub load_imbalance: Option<f64>,
}

/// One micro-batch: `rows` rows of ids and their targets.
pub struct MicroBatch<'a> {
    pub ids: &'a [i64],
    pub targets: &'a [i64],
    pub rows: usize,
}

/// A model in training: its weights, AdamW's state and the step count.
pub struct Trainer<'m> {
    /// The gradient module (`ir::grad::gradient` of the forward module).
    pub module: &'m Module,
    pub weights: Weights,
    pub optimizer: AdamW,
    pub config: TrainConfig,
    /// Optimizer steps done.
    pub step: u64,
    params: Vec<Parameter>,
}

impl<'m> Trainer<'m> {
    /// Fresh AdamW state for `weights` of gradient module `module`.
    pub fn new(module: &'m Module, weights: Weights, config: TrainConfig) -> Trainer<'m> {
        let params = parameters(module);
        let optimizer = AdamW::new(config.adamw, params.iter().map(|p| p.range.len()));
        Trainer {
            module,
            weights,
            optimizer,
            config,
            step: 0,
            params,
        }
    }

    /// The parameters the optimizer updates, in its state's order.
    pub fn parameters(&self) -> &[Parameter] {
        &self.params
    }

    /// One optimizer step over `micro` (gradient accumulation: the mean of
    /// their losses and gradients, as the reference's `loss / accum`).
    pub fn step(&mut self, micro: &[MicroBatch], depth: Depth) -> Result<StepReport, RunError> {
        assert!(!micro.is_empty(), "a step needs a micro-batch");
        let n = micro.len() as f32;
        // Per parameter: the summed gradient, `None` until one micro-batch reaches it.
        let mut grads: Vec<Option<Vec<f32>>> = vec![None; self.params.len()];
        let (mut loss, mut iterations) = (0.0f64, 0);
        let mut loads: Vec<(WeightId, Vec<u64>)> = Vec::new();
        for mb in micro {
            let g = CpuRuntime::new(self.module, &self.weights)
                .gradient(mb.ids, mb.targets, mb.rows, depth)?;
            loss += f64::from(g.loss);
            iterations += g.iterations;
            for (bias, load) in g.expert_load {
                match loads.iter_mut().find(|(b, _)| *b == bias) {
                    Some((_, sum)) => sum.iter_mut().zip(&load).for_each(|(s, l)| *s += l),
                    None => loads.push((bias, load)),
                }
            }
            for (p, acc) in self.params.iter().zip(grads.iter_mut()) {
                let Some((_, values)) = g.grads.iter().find(|(w, _)| *w == p.weight) else {
                    continue;
                };
                let part = &values[p.range.clone()];
                // An expert no token reached has no gradient (torch: `None`).
                if p.expert && part.iter().all(|&x| x == 0.0) {
                    continue;
                }
                match acc {
                    None => *acc = Some(part.iter().map(|&x| x / n).collect()),
                    Some(a) => a.iter_mut().zip(part).for_each(|(a, &x)| *a += x / n),
                }
            }
        }
        let mut present: Vec<&mut [f32]> = grads
            .iter_mut()
            .flatten()
            .map(|g| g.as_mut_slice())
            .collect();
        let grad_norm = match self.config.clip {
            Some(max) => clip_grad_norm(&mut present, max),
            None => present
                .iter()
                .flat_map(|g| g.iter())
                .map(|&x| f64::from(x).powi(2))
                .sum::<f64>()
                .sqrt(),
        };
        let lr = self.config.schedule.lr(self.step);
        let grads: Vec<Option<&[f32]>> = grads.iter().map(|g| g.as_deref()).collect();
        // Each parameter's slice of its weight's data (disjoint, in order).
        let mut rest: Vec<(&mut [f32], usize)> = self
            .weights
            .tensors_mut()
            .iter_mut()
            .map(|t| (t.data.as_mut_slice(), 0))
            .collect();
        let mut views: Vec<&mut [f32]> = Vec::with_capacity(self.params.len());
        for p in &self.params {
            let (data, at) = &mut rest[p.weight.0 as usize];
            let (_, tail) = std::mem::take(data).split_at_mut(p.range.start - *at);
            let (mine, after) = tail.split_at_mut(p.range.len());
            views.push(mine);
            (*data, *at) = (after, p.range.end);
        }
        self.optimizer.update(&mut views, &grads, lr);
        if let Some(rate) = self.config.router_bias_rate {
            for (bias, load) in &loads {
                balance(&mut self.weights.get_mut(*bias).data, load, rate);
            }
        }
        let report = StepReport {
            step: self.step,
            loss: loss / micro.len() as f64,
            lr,
            grad_norm,
            iterations,
            load_imbalance: loads.iter().map(|(_, l)| imbalance(l)).reduce(f64::max),
        };
        self.step += 1;
        Ok(report)
    }
}

/// DeepSeek-V3's bias update: `b_i += rate * sign(mean - load_i)` (an
/// expert at the mean load keeps its bias).
fn balance(bias: &mut [f32], load: &[u64], rate: f64) {
    let mean = load.iter().sum::<u64>() as f64 / load.len() as f64;
    for (b, &l) in bias.iter_mut().zip(load) {
        let step = match (l as f64).partial_cmp(&mean) {
            Some(std::cmp::Ordering::Less) => rate,
            Some(std::cmp::Ordering::Greater) => -rate,
            _ => 0.0,
        };
        *b = (f64::from(*b) + step) as f32;
    }
}

/// The busiest expert's load over the mean (1 when nothing was routed).
fn imbalance(load: &[u64]) -> f64 {
    let total = load.iter().sum::<u64>();
    if total == 0 {
        return 1.0;
    }
    let max = *load.iter().max().expect("an MoE has experts") as f64;
    max * load.len() as f64 / total as f64
}

#[cfg(test)]
mod tests {
    use super::{balance, imbalance};

    #[test]
    fn the_bias_moves_towards_balance_by_the_rate() {
        let mut bias = [0.5f32, 0.0, -0.25, 0.0];
        // Loads 6, 2, 4, 4: mean 4.
        balance(&mut bias, &[6, 2, 4, 4], 0.001);
        assert_eq!(bias, [0.499, 0.001, -0.25, 0.0]);
        assert_eq!(imbalance(&[6, 2, 4, 4]), 1.5);
        assert_eq!(imbalance(&[0, 0]), 1.0);
    }
}
