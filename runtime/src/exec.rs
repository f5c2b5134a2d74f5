//! The one graph executor every engine runs on: the checks of a call, the
//! walk of a graph in schedule order (values freed after their last use),
//! the recurrence's loop control (parameters bound as [`LoopRegion`] lays
//! them out, carried values from zero, the early exit on the halted mask),
//! the loop-header memo and the cache bookkeeping. What differs between
//! engines is a [`Device`]: what a value is, how a compute node runs, how
//! a zero buffer is made and a halted mask read. The CPU reference runtime
//! (with or without the mlir-cpu kernels) and the CUDA runtime implement it.

use crate::cpu::pool::Buf;
use crate::kv::{Cache, KvStream};
use mythos_compiler::ir::walk::{GraphId, Graphs};
use mythos_compiler::ir::{Graph, LoopRegion, Module, NodeId, Op};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Why a forward pass cannot run on the given input.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum RunError {
    #[error(
        "token id {id} at batch row {row}, position {pos} is outside the vocabulary (0..{vocab})"
    )]
    TokenOutOfRange {
        id: i64,
        row: usize,
        pos: usize,
        vocab: u64,
    },
    #[error("position {pos} is beyond the model's max_seq ({max_seq}): the sequence is too long")]
    TooLong { pos: usize, max_seq: u64 },
    #[error("{len} token ids do not split into {batch} rows of equal length")]
    BadBatch { len: usize, batch: usize },
    #[error("no tokens to run")]
    Empty,
    #[error("the KV cache was filled with {cached} loop iterations; decode must use the same (got {requested})")]
    LoopsMismatch { cached: u64, requested: u64 },
    #[error("--decode-from {k} must be between 1 and the number of tokens ({tokens})")]
    BadDecodeFrom { k: usize, tokens: usize },
    #[error("the KV cache holds {cached} batch rows; this call has {batch}")]
    BatchMismatch { cached: usize, batch: usize },
    #[error("{targets} targets for {ids} token ids: a batch needs one target per token")]
    TargetsMismatch { targets: usize, ids: usize },
}

/// Logits of one forward pass and what the loop did.
#[derive(Debug, Clone)]
pub struct Forward {
    /// `[batch, seq, vocab]`, row-major. A pooled buffer (derefs to
    /// `Vec<f32>`): dropping it hands it back for the next call, so that a
    /// decode loop allocates nothing; `into_vec` keeps it.
    pub logits: Buf<f32>,
    pub batch: usize,
    pub seq: usize,
    pub vocab: usize,
    /// Loop iterations actually run (fewer than asked when ACT exits early).
    pub iterations: u64,
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
}

/// A graph flattened once, so that running it (every loop iteration of every
/// token) does no graph analysis: steps in topological order, operands as
/// step indices, and the values each step is the last user of.
pub(crate) struct Schedule {
    pub(crate) steps: Vec<Step>,
    pub(crate) outputs: Vec<usize>,
}

pub(crate) struct Step {
    pub(crate) node: NodeId,
    pub(crate) operands: Vec<usize>,
    /// Values that can be dropped once this step has run.
    pub(crate) last_use_of: Vec<usize>,
    /// Where this step's row starts in a fused group's per-row scratch
    /// (the widths of the steps before it), and its width.
    pub(crate) row_at: usize,
    pub(crate) row_width: usize,
}

impl Schedule {
    pub(crate) fn new(g: &Graph) -> Schedule {
        let order = g
            .topo_order()
            .expect("the verifier guarantees an acyclic graph");
        let index: HashMap<NodeId, usize> =
            order.iter().enumerate().map(|(i, &n)| (n, i)).collect();
        let operands: Vec<Vec<usize>> = order
            .iter()
            .map(|&n| g.operands(n).iter().map(|o| index[o]).collect())
            .collect();
        let outputs: Vec<usize> = g.outputs.iter().map(|o| index[o]).collect();
        let mut last = vec![None; order.len()];
        for (i, ops) in operands.iter().enumerate() {
            for &o in ops {
                last[o] = Some(i);
            }
        }
        let mut last_use_of = vec![Vec::new(); order.len()];
        for (value, step) in last.iter().enumerate() {
            if let (Some(step), false) = (step, outputs.contains(&value)) {
                last_use_of[*step].push(value);
            }
        }
        let mut row_at = 0;
        let steps = order
            .into_iter()
            .zip(operands)
            .zip(last_use_of)
            .map(|((node, operands), last_use_of)| {
                let row_width = g.ty(node).width().unwrap_or(0) as usize;
                row_at += row_width;
                Step {
                    node,
                    operands,
                    last_use_of,
                    row_at: row_at - row_width,
                    row_width,
                }
            })
            .collect();
        Schedule { steps, outputs }
    }
}

/// Per-call state: shapes, positions, the loop's control, the cache, and
/// what the engine keeps per call (`local`: the CPU's token ids, the GPU's
/// ids and RoPE tables on the device).
pub(crate) struct Call<'k, S, L> {
    pub batch: usize,
    pub seq: usize,
    /// The first position of this call (the cache's position before it).
    pub start: usize,
    pub cache: &'k mut Cache<S>,
    /// Early ACT exit is allowed only without a caller's cache (as in the reference).
    pub may_exit_early: bool,
    pub loops: u64,
    /// Loop iterations run so far.
    pub iterations: u64,
    /// Compute the head for the last position of each row only.
    pub last_only: bool,
    /// A gradient's truncated depth: backpropagate through the last this
    /// many loop iterations only (`None`: all).
    pub backprop: Option<u64>,
    pub local: L,
}

impl<S, L> Call<'_, S, L> {
    /// Rows of the call's activations (`batch * seq`).
    pub fn rows(&self) -> usize {
        self.batch * self.seq
    }
}

/// The values of one graph walk, by step (or the parameters of a loop body).
pub(crate) type Slots<V> = Vec<Option<V>>;

/// What an engine supplies to the executor.
pub(crate) trait Device: Sized {
    /// A value flowing through the graph (activations, weights, vectors,
    /// the iteration index, the ids).
    type Value: Clone;
    type Error: std::error::Error + Send + Sync + 'static + From<RunError>;
    /// One buffer of a KV-cache entry.
    type Stream: KvStream;
    /// What the engine keeps per call.
    type Local<'c>;

    /// The graphs, schedules and memos of the module it runs.
    fn exec(&self) -> &Exec<'_, Self::Value>;

    /// `cpu`, `mlir-cpu` or `cuda` (the bench report's backend).
    fn backend(&self) -> &'static str;

    /// The per-call state for these token ids (and, for a gradient
    /// module, the targets; empty otherwise).
    fn begin<'c>(&self, ids: &'c [i64], targets: &'c [i64])
        -> Result<Self::Local<'c>, Self::Error>;

    /// Runs node `at` (any op but `Param` and `Loop`, which the executor
    /// binds and runs itself) on its operands.
    fn eval<'c>(
        &self,
        at: (GraphId, NodeId),
        op: &Op,
        args: &[&Self::Value],
        call: &mut Call<'_, Self::Stream, Self::Local<'c>>,
        iteration: Option<usize>,
    ) -> Result<Self::Value, Self::Error>;

    /// The loop iteration index as a value.
    fn step(&self, t: usize) -> Self::Value;

    /// `rows x width` zeros (a carried value before the first iteration).
    fn zeros(&self, rows: usize, width: usize) -> Result<Self::Value, Self::Error>;

    /// Whether a halted mask is 1 everywhere.
    fn all_halted(&self, mask: &Self::Value) -> Result<bool, Self::Error>;

    /// The module's output as host logits and their width.
    fn logits(&self, out: Self::Value) -> Result<(Buf<f32>, usize), Self::Error>;

    /// A tuple of values (a `vjp`'s, a `loop_vjp`'s, a recording loop's).
    /// An engine that cannot run gradient modules (CUDA, today) refuses.
    fn tuple(&self, items: Vec<Option<Self::Value>>) -> Result<Self::Value, Self::Error>;

    /// Element `k` of a tuple.
    fn pick(&self, tuple: &Self::Value, k: usize) -> Self::Value;

    /// Elements of a tuple.
    fn tuple_len(&self, tuple: &Self::Value) -> usize;

    /// `acc += v`, values of one type (gradient contributions).
    fn add_into(&self, acc: &mut Self::Value, v: &Self::Value) -> Result<(), Self::Error>;
}

/// Most operands of one op (the verifier's op signatures stay far below).
pub(crate) const MAX_OPERANDS: usize = 24;

/// An op's operands in a stack array: collecting them into a `Vec` would
/// allocate on every op (the first operand fills the unused places).
pub(crate) struct Args<'v, V> {
    a: Option<[&'v V; MAX_OPERANDS]>,
    n: usize,
}

impl<'v, V> Args<'v, V> {
    pub(crate) fn new(values: impl IntoIterator<Item = &'v V>) -> Args<'v, V> {
        let mut values = values.into_iter();
        let Some(first) = values.next() else {
            return Args { a: None, n: 0 };
        };
        let mut a = [first; MAX_OPERANDS];
        let mut n = 1;
        for v in values {
            assert!(
                n < MAX_OPERANDS,
                "an op with more than {MAX_OPERANDS} operands"
            );
            a[n] = v;
            n += 1;
        }
        Args { a: Some(a), n }
    }

    pub(crate) fn as_slice(&self) -> &[&'v V] {
        self.a.as_ref().map_or(&[], |a| &a[..self.n])
    }
}

/// A module's graphs ready to walk: every graph by id and its schedule,
/// the loop-header memo, the free list of slot vectors and the profile.
pub(crate) struct Exec<'m, V> {
    pub(crate) module: &'m Module,
    pub(crate) graphs: Graphs<'m>,
    /// One schedule per graph, by graph id.
    pub(crate) schedules: Vec<Schedule>,
    /// Loop-header outputs per (header, iteration index): per-iteration
    /// constants, computed once and reused by every token.
    header_values: Mutex<HashMap<(GraphId, usize), Vec<V>>>,
    /// Emptied slot vectors, reused by every graph walk (with the buffers of
    /// `cpu/pool.rs`, what keeps a CPU decode step from allocating).
    slot_pool: Mutex<Vec<Slots<V>>>,
    /// Time per op kind, when profiling (`mythos bench --profile`).
    profile: Option<Mutex<HashMap<&'static str, Duration>>>,
}

impl<'m, V: Clone> Exec<'m, V> {
    pub(crate) fn new(module: &'m Module) -> Exec<'m, V> {
        let graphs = module.graphs();
        let schedules = graphs.iter().map(|(_, g)| Schedule::new(g.graph)).collect();
        Exec {
            module,
            graphs,
            schedules,
            header_values: Mutex::new(HashMap::new()),
            slot_pool: Mutex::new(Vec::new()),
            profile: None,
        }
    }

    /// Records the time spent in each op kind from now on.
    pub(crate) fn start_profiling(&mut self) {
        self.profile = Some(Default::default());
    }

    /// Time per op kind so far, largest first (loops counted in their
    /// ops); `None` unless profiling.
    pub(crate) fn profile(&self) -> Option<Vec<(&'static str, Duration)>> {
        let p = self.profile.as_ref()?.lock().expect("profile lock");
        let mut v: Vec<_> = p.iter().map(|(k, v)| (*k, *v)).collect();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        Some(v)
    }

    /// An empty slot vector of `n` slots from the free list.
    pub(crate) fn take_slots(&self, n: usize) -> Slots<V> {
        let mut v = self
            .slot_pool
            .lock()
            .expect("slot pool lock")
            .pop()
            .unwrap_or_default();
        v.resize_with(n, || None);
        v
    }

    /// Drops the values of `v` and keeps the vector for [`Self::take_slots`].
    pub(crate) fn give_slots(&self, mut v: Slots<V>) {
        v.clear();
        self.slot_pool.lock().expect("slot pool lock").push(v);
    }
}

/// A forward pass (see [`Engine::forward_with`](crate::engine::Engine::forward_with)).
pub(crate) fn forward<D: Device>(
    dev: &D,
    ids: &[i64],
    batch: usize,
    loops: Option<u64>,
    cache: Option<&mut Cache<D::Stream>>,
    logits: Logits,
) -> Result<Forward, D::Error> {
    let exec = dev.exec();
    let loops = loops.unwrap_or_else(|| exec.module.max_iters());
    let mut own_cache = Cache::new();
    let may_exit_early = cache.is_none();
    let cache = cache.unwrap_or(&mut own_cache);
    let seq = check_call(
        exec.module,
        ids,
        batch,
        loops,
        (cache.pos, cache.loops, cache.batch),
    )?;
    let mut call = Call {
        batch,
        seq,
        start: cache.pos,
        cache,
        may_exit_early,
        loops,
        iterations: 0,
        last_only: logits == Logits::Last,
        backprop: None,
        local: dev.begin(ids, &[])?,
    };
    let mut outputs = run(dev, Graphs::MAIN, &[], &mut call, None)?;
    let out = outputs[0]
        .take()
        .expect("the module's output is the logits");
    exec.give_slots(outputs);
    let (logits, vocab) = dev.logits(out)?;
    call.cache.advance(seq, loops, batch);
    Ok(Forward {
        logits,
        batch,
        seq: if call.last_only { 1 } else { seq },
        vocab,
        iterations: call.iterations,
    })
}

/// Evaluates graph `gid`; `params` are the loop-body (or header)
/// parameters. Returns the graph's outputs in a slot vector from the free
/// list (hand it back with [`Exec::give_slots`]).
pub(crate) fn run<'c, D: Device>(
    dev: &D,
    gid: GraphId,
    params: &[Option<D::Value>],
    call: &mut Call<'_, D::Stream, D::Local<'c>>,
    iteration: Option<usize>,
) -> Result<Slots<D::Value>, D::Error> {
    let exec = dev.exec();
    let g = exec.graphs.graph(gid);
    let sched = &exec.schedules[gid.0 as usize];
    let mut slots = exec.take_slots(sched.steps.len());
    for (i, step) in sched.steps.iter().enumerate() {
        let op = g.op(step.node);
        let started = exec.profile.as_ref().map(|_| Instant::now());
        let v = {
            let args = Args::new(
                step.operands
                    .iter()
                    .map(|&o| slots[o].as_ref().expect("operands run first")),
            );
            let args = args.as_slice();
            match op {
                Op::Param(p) => params[*p].clone().expect("loop parameters are bound"),
                Op::Loop(region) => {
                    let graphs = exec.graphs.loop_graphs(gid, step.node);
                    run_loop(dev, region, graphs, args, call)?
                }
                Op::LoopVjp(l) => {
                    let graphs = exec.graphs.loop_graphs(gid, step.node);
                    crate::exec_grad::run_loop_vjp(dev, l, graphs, args, call)?
                }
                Op::Pick(k) => dev.pick(args[0], *k),
                _ => dev.eval((gid, step.node), op, args, call, iteration)?,
            }
        };
        if let (Some(p), Some(t0), false) = (&exec.profile, started, matches!(op, Op::Loop(_))) {
            *p.lock()
                .expect("profile lock")
                .entry(op.name())
                .or_default() += t0.elapsed();
        }
        slots[i] = Some(v);
        // Free values nobody needs any more (on the CPU, back to the pool).
        for &d in &step.last_use_of {
            slots[d] = None;
        }
    }
    let mut out = exec.take_slots(sched.outputs.len());
    for (j, &s) in sched.outputs.iter().enumerate() {
        out[j] = match slots[s].take() {
            Some(v) => Some(v),
            // The same value output twice: copy the first.
            None => {
                let first = sched.outputs[..j]
                    .iter()
                    .position(|&o| o == s)
                    .expect("outputs are kept");
                out[first].clone()
            }
        };
    }
    exec.give_slots(slots);
    Ok(out)
}

/// Pushes the loop header's outputs for iteration `t` onto `params`,
/// computed once per index.
pub(crate) fn push_header<'c, D: Device>(
    dev: &D,
    header: GraphId,
    t: usize,
    call: &mut Call<'_, D::Stream, D::Local<'c>>,
    params: &mut Slots<D::Value>,
) -> Result<(), D::Error> {
    let exec = dev.exec();
    if exec.graphs.graph(header).outputs.is_empty() {
        return Ok(());
    }
    let key = (header, t);
    if let Some(v) = exec.header_values.lock().expect("header lock").get(&key) {
        params.extend(v.iter().map(|v| Some(v.clone())));
        return Ok(());
    }
    let mut header_params = exec.take_slots(0);
    header_params.push(Some(dev.step(t)));
    let mut outs = run(dev, header, &header_params, call, Some(t))?;
    let values: Vec<D::Value> = outs
        .iter_mut()
        .map(|v| v.take().expect("header outputs"))
        .collect();
    params.extend(values.iter().map(|v| Some(v.clone())));
    exec.give_slots(outs);
    exec.give_slots(header_params);
    exec.header_values
        .lock()
        .expect("header lock")
        .insert(key, values);
    Ok(())
}

/// The recurrence: `args` are the loop's operands (`h0`, `e`, the
/// invariants). The body's parameters are bound as [`LoopRegion`] lays
/// them out; the carried values start at zero and take the body's outputs
/// after each iteration. With a halted mask and early exit allowed, the
/// loop stops once the mask is 1 everywhere.
fn run_loop<'c, D: Device>(
    dev: &D,
    region: &LoopRegion,
    (header, body): (GraphId, GraphId),
    args: &[&D::Value],
    call: &mut Call<'_, D::Stream, D::Local<'c>>,
) -> Result<D::Value, D::Error> {
    let exec = dev.exec();
    let rows = call.rows();
    let mut params = exec.take_slots(0);
    params.extend([Some(args[0].clone()), Some(args[1].clone()), None]);
    for c in &region.carried {
        params.push(Some(dev.zeros(rows, c.width as usize)?));
    }
    params.extend(args[2..].iter().map(|&v| Some(v.clone())));
    let bound = params.len();
    let mut tape = Vec::new();
    for t in 0..call.loops as usize {
        params.truncate(bound);
        if region.record {
            let inputs = [0]
                .into_iter()
                .chain((0..region.carried.len()).map(|i| region.carried_param(i)));
            tape.push(dev.tuple(inputs.map(|p| params[p].clone()).collect())?);
        }
        params[2] = Some(dev.step(t));
        push_header(dev, header, t, call, &mut params)?;
        let mut outs = run(dev, body, &params, call, Some(t))?;
        params[0] = outs[0].take();
        for i in 0..region.carried.len() {
            params[region.carried_param(i)] = outs[1 + i].take();
        }
        exec.give_slots(outs);
        call.iterations = t as u64 + 1;
        if let (true, Some(i)) = (call.may_exit_early, region.halted) {
            let mask = params[region.carried_param(i)]
                .as_ref()
                .expect("the body yields the halted mask");
            if dev.all_halted(mask)? {
                break;
            }
        }
    }
    let result = region.result.map_or(0, |i| region.carried_param(i));
    let out = params[result].take().expect("the loop's result is bound");
    exec.give_slots(params);
    if region.record {
        let tape = dev.tuple(tape.into_iter().map(Some).collect())?;
        return dev.tuple(vec![Some(out), Some(tape)]);
    }
    Ok(out)
}

/// Checks a forward call: `ids` split into `batch` rows, every id in the
/// vocabulary, the cache's `(pos, loops, batch)` compatible, the positions
/// within `max_seq`. Returns the tokens per row.
pub(crate) fn check_call(
    module: &Module,
    ids: &[i64],
    batch: usize,
    loops: u64,
    (start, cached_loops, cached_batch): (usize, Option<u64>, Option<usize>),
) -> Result<usize, RunError> {
    if ids.is_empty() {
        return Err(RunError::Empty);
    }
    if batch == 0 || ids.len() % batch != 0 {
        return Err(RunError::BadBatch {
            len: ids.len(),
            batch,
        });
    }
    let seq = ids.len() / batch;
    if let Some(cached) = cached_loops {
        if cached != loops {
            return Err(RunError::LoopsMismatch {
                cached,
                requested: loops,
            });
        }
    }
    if let Some(cached) = cached_batch {
        if cached != batch {
            return Err(RunError::BatchMismatch { cached, batch });
        }
    }
    if start + seq > module.max_seq as usize {
        return Err(RunError::TooLong {
            pos: start + seq - 1,
            max_seq: module.max_seq,
        });
    }
    for (i, &id) in ids.iter().enumerate() {
        if id < 0 || id as u64 >= module.vocab {
            return Err(RunError::TokenOutOfRange {
                id,
                row: i / seq,
                pos: start + i % seq,
                vocab: module.vocab,
            });
        }
    }
    Ok(seq)
}
