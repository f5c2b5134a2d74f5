//! Running a gradient module (`ir::grad::gradient`) on the CPU: one batch
//! of ids and targets in, the loss and every parameter's gradient out.

use super::super::CpuRuntime;
use crate::exec::RunError;
use crate::exec_grad;
use mythos_compiler::ir::WeightId;

/// How deep a gradient's forward pass loops and backpropagates.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Depth {
    /// Recurrent iterations (`None`: the module's `max_loop_iters`; ACT
    /// may stop earlier).
    pub loops: Option<u64>,
    /// Backpropagate through the last this many iterations only, the ones
    /// before being constants (Huginn's truncated depth; `None`: all).
    pub backprop: Option<u64>,
}

impl Depth {
    /// `loops` iterations, all backpropagated.
    pub fn loops(loops: Option<u64>) -> Depth {
        Depth {
            loops,
            backprop: None,
        }
    }
}

/// The loss and gradients of one batch.
#[derive(Clone, Debug)]
pub struct Gradient {
    /// The mean cross-entropy over the scored targets (0 when none is).
    pub loss: f32,
    /// The gradient of each weight in the module's `gradients` list, in
    /// its order, shaped as the weight; weights the loss does not depend
    /// on (buffers, experts no token reached in any call) are absent.
    pub grads: Vec<(WeightId, Vec<f32>)>,
    /// Loop iterations the forward pass ran.
    pub iterations: u64,
    /// Per MoE with a `router_bias` (named by that buffer): the tokens
    /// routed to each expert, summed over the calls that backpropagated
    /// (every loop iteration unless the depth is truncated).
    pub expert_load: Vec<(WeightId, Vec<u64>)>,
}

impl CpuRuntime<'_> {
    /// Adds `load` to the expert load of the MoE whose `router_bias` is `bias`.
    pub(crate) fn record_load(&self, bias: &[f32], load: &[u64]) {
        let key = bias.as_ptr() as usize;
        let mut loads = self.loads.lock().expect("the loads lock");
        match loads.iter_mut().find(|(k, _)| *k == key) {
            Some((_, sum)) => sum.iter_mut().zip(load).for_each(|(s, l)| *s += l),
            None => loads.push((key, load.to_vec())),
        }
    }

    /// The loads recorded since the last call, by `router_bias` weight.
    fn take_loads(&self) -> Vec<(WeightId, Vec<u64>)> {
        let loads = std::mem::take(&mut *self.loads.lock().expect("the loads lock"));
        loads
            .into_iter()
            .map(|(key, load)| {
                let id = (0..self.module.weights.len())
                    .map(|i| WeightId(i as u32))
                    .find(|&id| self.weights.get(id).data.as_ptr() as usize == key)
                    .expect("a router_bias is one of the module's weights");
                (id, load)
            })
            .collect()
    }

    /// Runs this runtime's gradient module on `batch` rows of `ids` and
    /// their `targets` (`-100`: not scored), as deep as `depth` says
    /// (`Depth::default()`: `max_loop_iters`, all backpropagated). Without a
    /// KV cache, so ACT stops the loop once every position has halted, as
    /// in the reference's training.
    pub fn gradient(
        &self,
        ids: &[i64],
        targets: &[i64],
        batch: usize,
        depth: Depth,
    ) -> Result<Gradient, RunError> {
        let module = self.module();
        assert!(
            !module.gradients.is_empty(),
            "CpuRuntime::gradient runs a gradient module (ir::grad::gradient)"
        );
        self.on_pool(|| {
            let run = exec_grad::gradient(self, ids, targets, batch, depth)?;
            let mut outputs = run.outputs.iter();
            let loss = outputs
                .next()
                .expect("a gradient module yields the loss")
                .floats()[0];
            let grads = module
                .gradients
                .iter()
                .zip(outputs)
                .map(|(&w, v)| (w, v.floats().to_vec()))
                .collect();
            Ok(Gradient {
                loss,
                grads,
                iterations: run.iterations,
                expert_load: self.take_loads(),
            })
        })
    }
}
