//! The executor's half of a gradient module (`ir::grad`): the call that
//! runs one (ids and targets in, the loss and the gradients out) and the
//! recurrence's backward, `loop_vjp`, written once over a [`Device`] like
//! the forward loop.

use crate::cpu::grad::Depth;
use crate::exec::{check_call, push_header, run, Call, Device, RunError, Slots};
use crate::kv::Cache;
use mythos_compiler::ir::walk::{GraphId, Graphs};
use mythos_compiler::ir::LoopVjp;

/// What a gradient module's run yields: its outputs (the loss, then one
/// gradient per `Module::gradients` entry) and the loop iterations run.
pub(crate) struct GradientRun<V> {
    pub outputs: Vec<V>,
    pub iterations: u64,
}

/// Runs a gradient module on `batch` rows of `ids` with their `targets`
/// (as many, `-100` = not scored), without a KV cache (so ACT stops the
/// loop once every position has halted, as the reference's training does).
pub(crate) fn gradient<D: Device>(
    dev: &D,
    ids: &[i64],
    targets: &[i64],
    batch: usize,
    depth: Depth,
) -> Result<GradientRun<D::Value>, D::Error> {
    let exec = dev.exec();
    let loops = depth.loops.unwrap_or_else(|| exec.module.max_iters());
    if targets.len() != ids.len() {
        return Err(RunError::TargetsMismatch {
            targets: targets.len(),
            ids: ids.len(),
        }
        .into());
    }
    let seq = check_call(exec.module, ids, batch, loops, (0, None, None))?;
    let mut cache = Cache::new();
    let mut call = Call {
        batch,
        seq,
        start: 0,
        cache: &mut cache,
        may_exit_early: true,
        loops,
        iterations: 0,
        last_only: false,
        backprop: depth.backprop,
        local: dev.begin(ids, targets)?,
    };
    let mut outputs = run(dev, Graphs::MAIN, &[], &mut call, None)?;
    let values = outputs
        .iter_mut()
        .map(|v| v.take().expect("the module's outputs"))
        .collect();
    exec.give_slots(outputs);
    Ok(GradientRun {
        outputs: values,
        iterations: call.iterations,
    })
}

/// `loop_vjp` (see [`LoopVjp`]): `args` are the forward loop's operands
/// `(h0, e, invariants...)`, its tape and the cotangent of its result.
/// Runs the backward body for the taped iterations, last first; each run
/// recomputes that iteration's forward body (so the KV cache its attention
/// appends to is emptied first) and passes the state's and carried values'
/// cotangents to the iteration before. With a truncated depth (`backprop`
/// k), only the last k iterations run backward and the ones before are
/// constants (Huginn's detached iterations): the loop's input state gets a
/// zero cotangent.
pub(crate) fn run_loop_vjp<'c, D: Device>(
    dev: &D,
    l: &LoopVjp,
    (header, body): (GraphId, GraphId),
    args: &[&D::Value],
    call: &mut Call<'_, D::Stream, D::Local<'c>>,
) -> Result<D::Value, D::Error> {
    let exec = dev.exec();
    let region = &l.region;
    let forward = 2 + region.invariants;
    let (tape, dresult) = (args[forward], args[forward + 1]);
    let rows = call.rows();
    let dim = exec.module.dim as usize;
    // The cotangents of the last iteration's outputs: the loop's result's.
    let mut dh = match region.result {
        None => dresult.clone(),
        Some(_) => dev.zeros(rows, dim)?,
    };
    let mut dcarried: Vec<D::Value> = Vec::with_capacity(region.carried.len());
    for (i, c) in region.carried.iter().enumerate() {
        dcarried.push(match region.result {
            Some(r) if r == i => dresult.clone(),
            _ => dev.zeros(rows, c.width as usize)?,
        });
    }
    // Summed over iterations: de, the invariants', the weights'.
    let mut sums: Vec<Option<D::Value>> = vec![None; 1 + region.invariants + l.weights.len()];
    let taped = dev.tuple_len(tape);
    let first = call.backprop.map_or(0, |k| {
        taped.saturating_sub(usize::try_from(k).unwrap_or(usize::MAX))
    });
    for t in (first..taped).rev() {
        call.cache.clear();
        let inputs = dev.pick(tape, t);
        let mut params: Slots<D::Value> = exec.take_slots(0);
        params.extend([
            Some(dev.pick(&inputs, 0)),
            Some(args[1].clone()),
            Some(dev.step(t)),
        ]);
        params.extend((0..region.carried.len()).map(|i| Some(dev.pick(&inputs, 1 + i))));
        params.extend(args[2..forward].iter().map(|&v| Some(v.clone())));
        push_header(dev, header, t, call, &mut params)?;
        params.push(Some(dh));
        params.extend(dcarried.drain(..).map(Some));
        let mut outs = run(dev, body, &params, call, Some(t))?;
        exec.give_slots(params);
        // The body's outputs in order, `None` for the zero cotangents.
        let mut yielded = outs.iter_mut().map(|v| v.take());
        let mut activation: Vec<Option<D::Value>> = (0..l.activation_outputs())
            .map(|k| {
                if l.zero.contains(&k) {
                    None
                } else {
                    yielded.next().flatten()
                }
            })
            .collect();
        let weights: Vec<Option<D::Value>> = yielded.collect();
        dh = match activation[0].take() {
            Some(v) => v,
            None => dev.zeros(rows, dim)?,
        };
        for (i, c) in region.carried.iter().enumerate() {
            dcarried.push(match activation[2 + i].take() {
                Some(v) => v,
                None => dev.zeros(rows, c.width as usize)?,
            });
        }
        let invariants = 2 + region.carried.len()..activation.len();
        let summed = std::iter::once(activation[1].take())
            .chain(activation[invariants].iter_mut().map(|v| v.take()))
            .chain(weights);
        for (slot, v) in sums.iter_mut().zip(summed) {
            match (slot.as_mut(), v) {
                (_, None) => {}
                (None, Some(v)) => *slot = Some(v),
                (Some(acc), Some(v)) => dev.add_into(acc, &v)?,
            }
        }
        exec.give_slots(outs);
    }
    call.cache.clear();
    if first > 0 {
        dh = dev.zeros(rows, dim)?;
    }
    let mut result = vec![Some(dh), sums[0].take()];
    result.extend(sums[1..].iter_mut().map(|v| v.take()));
    dev.tuple(result)
}
