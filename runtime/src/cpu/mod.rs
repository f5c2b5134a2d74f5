//! The CPU reference runtime: executes the graph IR in f32, op by op in
//! topological order, with the loop region's control (iterations, ACT) here.
//! It is the oracle every other backend and every pass is compared against,
//! so it follows OpenMythos's semantics exactly (shared/openmythos-reference.md).

pub mod attention;
pub mod compiled;
mod compiled_attention;
pub mod kernels;
pub mod kv;
pub mod moe;
pub mod pool;

use crate::weights::Weights;
use kernels::{linear_new, rmsnorm, sigmoid, Rope};
use kv::{CacheKey, KvCache};
use mythos_compiler::ir::args::{AttnWeights, SwiGluArgs};
use mythos_compiler::ir::walk::{GraphId, Graphs};
use mythos_compiler::ir::{AttnKind, Fusion, Graph, KvLayout, LoopRegion, Module, NodeId, Op};
use pool::Buf;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

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

/// A graph flattened once, so that running it (every loop iteration of every
/// token) does no graph analysis: steps in topological order, operands as
/// step indices, and the values each step is the last user of.
/// (Shared with the CUDA runtime, which walks graphs in the same order.)
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

/// One schedule per graph of the walk, by graph id.
pub(crate) fn schedules(graphs: &Graphs) -> Vec<Schedule> {
    graphs.iter().map(|(_, g)| Schedule::new(g.graph)).collect()
}

/// A module and its weights, ready to run.
pub struct CpuRuntime<'a> {
    module: &'a Module,
    weights: &'a Weights,
    /// Every graph of the module, by id.
    graphs: Graphs<'a>,
    /// One schedule per graph, by graph id.
    schedules: Vec<Schedule>,
    /// Time per op kind, when profiling (`mythos bench --profile`).
    profile: Option<Mutex<HashMap<&'static str, std::time::Duration>>>,
    /// Loop-header outputs per (header, iteration index): per-iteration
    /// constants, computed once and reused by every token.
    header_values: Mutex<HeaderValues>,
    /// Compiled kernels (the `mlir-cpu` backend) by node, when loaded.
    kernels: Option<(&'a compiled::CompiledKernels, compiled::Bound)>,
    /// RoPE tables by (rotated dims, theta) for positions `[0, n)`, grown
    /// (doubling) when a call reaches past them.
    ropes: Mutex<HashMap<(usize, u64), Arc<Rope>>>,
    /// Emptied value-slot vectors, reused by every graph walk (with the
    /// buffers of `pool.rs`, what keeps a decode step from allocating).
    slot_pool: Mutex<Vec<Slots<'a>>>,
}

/// Loop-header outputs keyed by (header graph, iteration index).
type HeaderValues = HashMap<(GraphId, usize), Vec<Buf<f32>>>;

/// The values of one graph walk, by step (or the parameters of a loop body).
type Slots<'a> = Vec<Option<Value<'a>>>;

/// Most operands of one op (the verifier's op signatures stay far below).
const MAX_OPERANDS: usize = 24;

/// A value flowing through the graph. Activations and vectors live in
/// pooled buffers, so dropping a value hands its storage back.
#[derive(Clone)]
enum Value<'a> {
    /// `rows x cols` activations.
    Act(Buf<f32>, usize),
    Weight(&'a [f32]),
    /// A computed vector (the LTI decay, a loop-embedding vector, a LoRA scale row).
    Vector(Buf<f32>),
    /// The loop iteration index.
    Step(usize),
    Ids,
}

/// A filler for unused operand slots.
static NO_VALUE: Value<'static> = Value::Ids;

/// An op's operands in a stack array: collecting them into a `Vec` would
/// allocate on every op.
struct Args<'v, 'a> {
    a: [&'v Value<'a>; MAX_OPERANDS],
    n: usize,
}

impl<'v, 'a> Args<'v, 'a> {
    fn new(values: impl IntoIterator<Item = &'v Value<'a>>) -> Args<'v, 'a> {
        let mut a: [&'v Value<'a>; MAX_OPERANDS] = [&NO_VALUE; MAX_OPERANDS];
        let mut n = 0;
        for v in values {
            assert!(
                n < MAX_OPERANDS,
                "an op with more than {MAX_OPERANDS} operands"
            );
            a[n] = v;
            n += 1;
        }
        Args { a, n }
    }

    fn as_slice(&self) -> &[&'v Value<'a>] {
        &self.a[..self.n]
    }

    fn as_mut_slice(&mut self) -> &mut [&'v Value<'a>] {
        &mut self.a[..self.n]
    }
}

impl Value<'_> {
    fn act(&self) -> (&[f32], usize) {
        match self {
            Value::Act(v, c) => (v, *c),
            _ => unreachable!("the verifier guarantees an activation here"),
        }
    }

    /// A weight or a computed vector.
    fn weight(&self) -> &[f32] {
        match self {
            Value::Weight(w) => w,
            Value::Vector(v) => v,
            _ => unreachable!("the verifier guarantees a weight or vector here"),
        }
    }

    fn step(&self) -> usize {
        match self {
            Value::Step(t) => *t,
            _ => unreachable!("the verifier guarantees the iteration index here"),
        }
    }
}

/// Per-call state: shapes, positions, the cache and the loop iteration.
struct Ctx<'c> {
    batch: usize,
    seq: usize,
    start: usize,
    ids: &'c [i64],
    cache: &'c mut KvCache,
    /// Early ACT exit is allowed only without a caller's cache (as in the reference).
    may_exit_early: bool,
    loops: u64,
    iterations: u64,
    /// Compute the head for the last position of each row only.
    last_only: bool,
}

/// Which positions get logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    All,
    Last,
}

impl<'a> CpuRuntime<'a> {
    pub fn new(module: &'a Module, weights: &'a Weights) -> CpuRuntime<'a> {
        let graphs = module.graphs();
        let schedules = schedules(&graphs);
        CpuRuntime {
            module,
            weights,
            graphs,
            schedules,
            profile: None,
            header_values: Mutex::new(HashMap::new()),
            kernels: None,
            ropes: Mutex::new(HashMap::new()),
            slot_pool: Mutex::new(Vec::new()),
        }
    }

    /// An empty slot vector of `n` slots from the free list.
    fn take_slots(&self, n: usize) -> Slots<'a> {
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
    fn give_slots(&self, mut v: Slots<'a>) {
        v.clear();
        self.slot_pool.lock().expect("slot pool lock").push(v);
    }

    /// The RoPE tables attention `a` needs for this call's positions.
    fn attention_rope(&self, a: &mythos_compiler::ir::AttentionOp, ctx: &Ctx) -> Arc<Rope> {
        self.rope(a.rope_dims() as usize, a.rope_theta, ctx.start + ctx.seq)
    }

    /// RoPE tables covering positions `[0, end)` for heads of `dim` dims.
    /// Every position's angles are computed the same way whatever the
    /// table's length, so a grown table gives the same numbers.
    fn rope(&self, dim: usize, theta: f64, end: usize) -> Arc<Rope> {
        let mut ropes = self.ropes.lock().expect("rope lock");
        let key = (dim, theta.to_bits());
        match ropes.get(&key) {
            Some(r) if r.cos.len() >= end * r.half => r.clone(),
            _ => {
                let n = end
                    .next_power_of_two()
                    .max(256)
                    .min((self.module.max_seq as usize).max(end));
                let r = Arc::new(Rope::new(dim, 0, n, theta));
                ropes.insert(key, r.clone());
                r
            }
        }
    }

    /// Runs every node the compiled plan covers with its compiled kernels
    /// (the `mlir-cpu` backend); the rest stays on the reference code.
    pub fn with_kernels(
        mut self,
        kernels: &'a compiled::CompiledKernels,
    ) -> Result<CpuRuntime<'a>, compiled::LoadError> {
        let bound = kernels.bind(self.module)?;
        self.kernels = Some((kernels, bound));
        Ok(self)
    }

    /// How many nodes run compiled kernels.
    pub fn compiled_nodes(&self) -> usize {
        self.kernels.as_ref().map_or(0, |(_, b)| b.len())
    }

    /// Records the time spent in each op kind (see [`CpuRuntime::profile`]).
    pub fn with_profiling(mut self) -> CpuRuntime<'a> {
        self.profile = Some(Default::default());
        self
    }

    /// Time per op kind so far, largest first (loop bodies counted in their ops).
    pub fn profile(&self) -> Vec<(&'static str, std::time::Duration)> {
        let mut v: Vec<_> = self
            .profile
            .as_ref()
            .map(|p| {
                p.lock()
                    .expect("profile lock")
                    .iter()
                    .map(|(k, v)| (*k, *v))
                    .collect()
            })
            .unwrap_or_default();
        v.sort_by_key(|e| std::cmp::Reverse(e.1));
        v
    }

    /// A forward pass (see [`Engine::forward_with`](crate::engine::Engine::forward_with)),
    /// choosing which positions get logits: generation
    /// needs only the last one of each row, which skips most of the output
    /// head during a prefill. With [`Logits::Last`] the result has `seq == 1`.
    pub fn forward_with(
        &self,
        ids: &[i64],
        batch: usize,
        loops: Option<u64>,
        cache: Option<&mut KvCache>,
        logits: Logits,
    ) -> Result<Forward, RunError> {
        // The whole call runs on a worker of the thread pool: every parallel
        // kernel inside it then forks from a worker (its own deque, the other
        // workers steal) instead of injecting a job and parking the caller's
        // thread on each of them, one context switch per call instead of
        // one per kernel.
        if rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
            let mut out = None;
            rayon::scope(|_| out = Some(self.forward_on_pool(ids, batch, loops, cache, logits)));
            return out.expect("the scope ran the forward pass");
        }
        self.forward_on_pool(ids, batch, loops, cache, logits)
    }

    /// [`CpuRuntime::forward_with`] on the current thread.
    fn forward_on_pool(
        &self,
        ids: &[i64],
        batch: usize,
        loops: Option<u64>,
        cache: Option<&mut KvCache>,
        logits: Logits,
    ) -> Result<Forward, RunError> {
        let loops = loops.unwrap_or_else(|| self.module.max_iters());
        let mut local = KvCache::new();
        let may_exit_early = cache.is_none();
        let cache = cache.unwrap_or(&mut local);
        let seq = check_call(
            self.module,
            ids,
            batch,
            loops,
            (cache.pos, cache.loops, cache.batch),
        )?;
        let start = cache.pos;
        let mut ctx = Ctx {
            batch,
            seq,
            start,
            ids,
            cache,
            may_exit_early,
            loops,
            iterations: 0,
            last_only: logits == Logits::Last,
        };
        let logits_mode_last = ctx.last_only;
        let mut outputs = self.run(Graphs::MAIN, &[], &mut ctx, None);
        ctx.cache.pos += seq;
        ctx.cache.loops = Some(loops);
        ctx.cache.batch = Some(batch);
        let (logits, vocab) = match outputs.first_mut().and_then(Option::take) {
            Some(Value::Act(v, c)) => (v, c),
            _ => unreachable!("the module's output is the logits"),
        };
        self.give_slots(outputs);
        Ok(Forward {
            logits,
            batch,
            seq: if logits_mode_last { 1 } else { seq },
            vocab,
            iterations: ctx.iterations,
        })
    }

    /// The module it runs.
    pub fn module(&self) -> &'a Module {
        self.module
    }

    /// Evaluates a graph; `params` are the loop-body parameters. Returns
    /// the graph's outputs in a slot vector from the free list (hand it back
    /// with [`Self::give_slots`]).
    fn run(
        &self,
        gid: GraphId,
        params: &[Option<Value<'a>>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
    ) -> Slots<'a> {
        let g = self.graphs.graph(gid);
        let sched = &self.schedules[gid.0 as usize];
        let mut slots = self.take_slots(sched.steps.len());
        for (i, step) in sched.steps.iter().enumerate() {
            let op = g.op(step.node);
            let started = self.profile.as_ref().map(|_| std::time::Instant::now());
            let v = {
                let args = Args::new(
                    step.operands
                        .iter()
                        .map(|&o| slots[o].as_ref().expect("operands run first")),
                );
                let args = args.as_slice();
                // Nodes that hold graphs run them here; the others are ops.
                match (op, self.compiled_for(gid, step.node)) {
                    (Op::Loop(region), _) => {
                        let (header, body) = self.graphs.loop_graphs(gid, step.node);
                        self.run_loop(region, (header, body), args, ctx)
                    }
                    (_, Some(fns)) => {
                        self.eval_compiled(fns, g, step.node, op, args, ctx, iteration)
                    }
                    (Op::Fused(_), None) => {
                        let body = self.graphs.fused_body(gid, step.node);
                        self.run_fused(body, args, ctx.batch * ctx.seq)
                    }
                    (_, None) => self.eval(op, args, ctx, iteration, params),
                }
            };
            if let (Some(p), Some(t0), false) = (&self.profile, started, matches!(op, Op::Loop(_)))
            {
                *p.lock()
                    .expect("profile lock")
                    .entry(op.name())
                    .or_default() += t0.elapsed();
            }
            slots[i] = Some(v);
            // Free activations nobody needs any more (back to the pool).
            for &d in &step.last_use_of {
                slots[d] = None;
            }
        }
        let mut out = self.take_slots(sched.outputs.len());
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
        self.give_slots(slots);
        out
    }

    fn compiled_for(&self, g: GraphId, n: NodeId) -> Option<&[compiled::KernelFn]> {
        let (_, bound) = self.kernels.as_ref()?;
        bound.get(&(g, n)).map(|v| v.as_slice())
    }

    /// A node through its compiled kernels. Every kind but attention uses
    /// the generic ABI: operands in order, the output, the row count.
    #[allow(clippy::too_many_arguments)]
    fn eval_compiled(
        &self,
        fns: &[compiled::KernelFn],
        g: &Graph,
        n: NodeId,
        op: &Op,
        args: &[&Value<'a>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
    ) -> Value<'a> {
        if let Op::Attention(a) = op {
            return self.attention_compiled(fns, a, args, ctx, iteration);
        }
        let ty = g.ty(n);
        let width = ty.width().unwrap_or(1) as usize;
        let act = ty
            .shape
            .iter()
            .any(|d| !matches!(d, mythos_compiler::ir::Dim::Const(_)));
        let mut rows = if act { ctx.batch * ctx.seq } else { 1 };
        let last;
        let mut argv = Args::new(args.iter().copied());
        let args = argv.as_mut_slice();
        if matches!(op, Op::Head(_)) && ctx.last_only && ctx.seq > 1 {
            let (x, c) = args[0].act();
            last = Value::Act(last_rows(x, c, ctx.batch, ctx.seq), c);
            args[0] = &last;
            rows = ctx.batch;
        }
        let mut out = Buf::<f32>::zeroed(rows * width);
        // Descriptors and words on the stack: a call allocates nothing.
        let mut descs = compiled::Descs::new();
        let mut at = [usize::MAX; MAX_OPERANDS];
        for (i, v) in args.iter().enumerate() {
            match v {
                Value::Act(v, _) | Value::Vector(v) => at[i] = descs.push(v),
                Value::Weight(w) => at[i] = descs.push(w),
                _ => {}
            }
        }
        let ids = compiled::Desc::of(ctx.ids);
        let out_desc = compiled::Desc::of_mut(&mut out);
        let mut words = compiled::Words::new();
        for (i, v) in args.iter().enumerate() {
            words.push(match v {
                Value::Ids => ids.word(),
                Value::Step(t) => *t,
                _ => descs.get(at[i]).word(),
            });
        }
        words.push(out_desc.word());
        words.push(rows);
        for &k in fns {
            // SAFETY: the plan's kernels for this node take exactly these
            // words (the generic ABI), and the buffers outlive the call.
            unsafe { compiled::call(k, words.as_slice()) };
        }
        if act {
            Value::Act(out, width)
        } else {
            Value::Vector(out)
        }
    }

    /// Attention through compiled kernels: projections, the KV cache on the
    /// host, core attention per batch row (see `compiled_attention.rs` and
    /// `backend/src/attention.rs`).
    fn attention_compiled(
        &self,
        fns: &[compiled::KernelFn],
        a: &mythos_compiler::ir::AttentionOp,
        args: &[&Value<'a>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
    ) -> Value<'a> {
        let rope = self.attention_rope(a, ctx);
        compiled_attention::run(fns, a, args, ctx, iteration, &rope)
    }

    /// One op; a composite with a fused prologue or epilogue goes through
    /// [`CpuRuntime::eval_fused_composite`].
    fn eval(
        &self,
        op: &Op,
        args: &[&Value<'a>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
        params: &[Option<Value<'a>>],
    ) -> Value<'a> {
        let fusion = op.fusion();
        if fusion.is_none() {
            self.eval_op(op, args, ctx, iteration, params)
        } else {
            self.eval_fused_composite(op, fusion, args, ctx, iteration, params)
        }
    }

    /// One op without its fusion flags: the operands as the op declares them
    /// (the prologue norm weight, when fused, is in its slot but already applied).
    fn eval_op(
        &self,
        op: &Op,
        args: &[&Value<'a>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
        params: &[Option<Value<'a>>],
    ) -> Value<'a> {
        let rows = ctx.batch * ctx.seq;
        let d = self.module.dim as usize;
        match op {
            Op::Input => Value::Ids,
            Op::Param(i) => params[*i].clone().expect("loop parameters are bound"),
            Op::Weight(id) => Value::Weight(&self.weights.get(*id).data),
            Op::Embedding => {
                let table = args[1].weight();
                let mut out = Buf::with_capacity(rows * d);
                for &id in ctx.ids {
                    out.extend_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
                }
                Value::Act(out, d)
            }
            Op::RmsNorm { eps } => {
                let (x, c) = args[0].act();
                let mut out = Buf::zeroed(x.len());
                rmsnorm(x, c, args[1].weight(), *eps, &mut out);
                Value::Act(out, c)
            }
            Op::Head(f) => {
                let (x, _, own) = f.split(args);
                let (x, c) = x.act();
                let w = own[0].weight();
                let n = w.len() / c;
                if ctx.last_only && ctx.seq > 1 {
                    let last = last_rows(x, c, ctx.batch, ctx.seq);
                    Value::Act(linear_new(&last, ctx.batch, c, w, n), n)
                } else {
                    Value::Act(linear_new(x, rows, c, w, n), n)
                }
            }
            Op::Linear => {
                let (x, c) = args[0].act();
                let w = args[1].weight();
                let n = w.len() / c;
                Value::Act(linear_new(x, rows, c, w, n), n)
            }
            Op::Add => {
                let (a, c) = args[0].act();
                let (b, _) = args[1].act();
                let mut out = Buf::with_capacity(a.len());
                out.extend(a.iter().zip(b).map(|(a, b)| a + b));
                Value::Act(out, c)
            }
            Op::Concat => {
                let (a, ca) = args[0].act();
                let (b, cb) = args[1].act();
                let mut out = Buf::with_capacity(rows * (ca + cb));
                for r in 0..rows {
                    out.extend_from_slice(&a[r * ca..(r + 1) * ca]);
                    out.extend_from_slice(&b[r * cb..(r + 1) * cb]);
                }
                Value::Act(out, ca + cb)
            }
            Op::SwiGlu(f) => {
                let a = SwiGluArgs::of(*f, args);
                let (x, c) = a.x.act();
                let gate = a.gate.weight();
                let hidden = gate.len() / c;
                Value::Act(
                    kernels::swiglu(x, rows, c, gate, a.up.weight(), a.down.weight(), hidden),
                    c,
                )
            }
            Op::Attention(a) => {
                let view = a.args(args);
                let (x, c) = view.x.act();
                let inp = attention::Input {
                    x,
                    batch: ctx.batch,
                    seq: ctx.seq,
                    dim: c,
                    start: ctx.start,
                };
                let rope = &*self.attention_rope(a, ctx);
                let layer = ctx
                    .cache
                    .entry(CacheKey::of(&a.cache, iteration), ctx.batch);
                let out = match (a.kind, view.weights) {
                    (
                        AttnKind::Gqa {
                            heads,
                            kv_heads,
                            head_dim,
                        },
                        AttnWeights::Gqa { wq, wk, wv, wo },
                    ) => {
                        let weights = attention::GqaWeights {
                            wq: wq.weight(),
                            wk: wk.weight(),
                            wv: wv.weight(),
                            wo: wo.weight(),
                        };
                        attention::gqa(
                            &inp,
                            &weights,
                            heads as usize,
                            kv_heads as usize,
                            head_dim as usize,
                            rope,
                            layer,
                        )
                    }
                    (
                        AttnKind::Mla {
                            heads,
                            q_rank,
                            kv_rank,
                            rope_dim,
                            nope_dim,
                            v_dim,
                        },
                        AttnWeights::Mla {
                            q_down,
                            q_norm,
                            q_up_nope,
                            q_up_rope,
                            kv_down,
                            kv_norm,
                            kv_up,
                            wo,
                        },
                    ) => {
                        let weights = attention::MlaWeights {
                            q_down: q_down.weight(),
                            q_norm: q_norm.weight(),
                            q_up_nope: q_up_nope.weight(),
                            q_up_rope: q_up_rope.weight(),
                            kv_down: kv_down.weight(),
                            kv_norm: kv_norm.weight(),
                            kv_up: kv_up.weight(),
                            wo: wo.weight(),
                        };
                        let dims = attention::MlaDims {
                            heads: heads as usize,
                            q_rank: q_rank as usize,
                            kv_rank: kv_rank as usize,
                            rope: rope_dim as usize,
                            nope: nope_dim as usize,
                            v: v_dim as usize,
                        };
                        let opts = attention::MlaOptions {
                            compact: a.kv_layout == KvLayout::Compact,
                            absorb: a.absorb,
                        };
                        attention::mla_with(&inp, &weights, &dims, a.norm_eps, rope, layer, opts)
                    }
                    (AttnKind::Gqa { .. }, AttnWeights::Mla { .. })
                    | (AttnKind::Mla { .. }, AttnWeights::Gqa { .. }) => {
                        unreachable!("AttentionOp::args follows the op's kind")
                    }
                };
                Value::Act(out, c)
            }
            Op::Moe(m) => {
                let a = m.args(args);
                let (x, c) = a.x.act();
                let weights = moe::MoeWeights {
                    router: a.router.weight(),
                    bias: a.bias.map(|b| b.weight()),
                    gate: a.routed.gate.weight(),
                    up: a.routed.up.weight(),
                    down: a.routed.down.weight(),
                    shared: a
                        .shared
                        .map(|e| (e.gate.weight(), e.up.weight(), e.down.weight())),
                };
                let dims = moe::MoeDims {
                    experts: m.experts as usize,
                    top_k: m.top_k as usize,
                    hidden: m.expert_dim as usize,
                    shared: m.shared as usize,
                    shared_hidden: m.shared_dim as usize,
                };
                let out = if m.batched {
                    moe::moe_batched(x, rows, c, &weights, &dims)
                } else {
                    moe::moe(x, rows, c, &weights, &dims)
                };
                Value::Act(out, c)
            }
            Op::LoopEmbedding { channels, theta } => {
                let (h, c) = args[0].act();
                let emb = loop_embedding(*channels as usize, *theta, args[1].step());
                let mut out = Buf::copy_of(h);
                for row in out.chunks_exact_mut(c) {
                    row::add_prefix(row, &emb);
                }
                Value::Act(out, c)
            }
            Op::Lora { rank, max_iters } => {
                let (x, c) = args[0].act();
                let r = *rank as usize;
                let scale = lora_scale_row(args[3].weight(), *max_iters, args[4].step());
                let out = lora_delta(x, rows, c, args[1].weight(), args[2].weight(), scale, r);
                Value::Act(out, c)
            }
            Op::LtiUpdate => {
                let (h, c) = args[0].act();
                let (e, _) = args[1].act();
                let (x, _) = args[2].act();
                let (log_a, log_dt, b) = (args[3].weight(), args[4].weight()[0], args[5].weight());
                let a = lti_decay(log_a, log_dt);
                let mut next = Buf::zeroed(h.len());
                let mut be = Buf::zeroed(c);
                for (r, o) in next.chunks_exact_mut(c).enumerate() {
                    let at = r * c..(r + 1) * c;
                    be.copy_from_slice(&e[at.clone()]);
                    row::scale(&mut be, b);
                    row::lti_apply(&h[at.clone()], &be, &x[at], &a, o);
                }
                Value::Act(next, c)
            }
            Op::ActHalt => {
                let (h, c) = args[0].act();
                let w = args[1].weight();
                let b = args[2].weight()[0];
                let mut p = Buf::with_capacity(h.len() / c.max(1));
                p.extend(
                    h.chunks_exact(c)
                        .map(|row| sigmoid(row.iter().zip(w).map(|(x, w)| x * w).sum::<f32>() + b)),
                );
                Value::Act(p, 1)
            }
            Op::Act(_) => {
                let width = args[0].act().1;
                let mut out = Buf::zeroed(rows * width);
                for (r, o) in out.chunks_exact_mut(width).enumerate() {
                    let arg = |i: usize| {
                        let (v, c) = args[i].act();
                        &v[r * c..(r + 1) * c]
                    };
                    row::eval(op, &arg, o);
                }
                Value::Act(out, width)
            }
            Op::Loop(_) | Op::Fused(_) => {
                unreachable!("the graph walk (`run`) runs the graphs inside loops and groups")
            }
            Op::Scale => {
                let (x, c) = args[0].act();
                let w = args[1].weight();
                let mut out = Buf::copy_of(x);
                for row in out.chunks_exact_mut(c) {
                    row::scale(row, w);
                }
                Value::Act(out, c)
            }
            Op::LtiDecay => Value::Vector(lti_decay(args[0].weight(), args[1].weight()[0])),
            Op::LtiApply => {
                let (h, c) = args[0].act();
                let (be, _) = args[1].act();
                let (x, _) = args[2].act();
                let a = args[3].weight();
                let mut out = Buf::zeroed(h.len());
                for (r, o) in out.chunks_exact_mut(c).enumerate() {
                    let at = r * c..(r + 1) * c;
                    row::lti_apply(&h[at.clone()], &be[at.clone()], &x[at], a, o);
                }
                Value::Act(out, c)
            }
            Op::LoopEmbeddingVec { channels, theta } => {
                Value::Vector(loop_embedding(*channels as usize, *theta, args[0].step()))
            }
            Op::AddPrefix => {
                let (h, c) = args[0].act();
                let v = args[1].weight();
                let mut out = Buf::copy_of(h);
                for row in out.chunks_exact_mut(c) {
                    row::add_prefix(row, v);
                }
                Value::Act(out, c)
            }
            Op::LoraScale { max_iters } => Value::Vector(Buf::copy_of(lora_scale_row(
                args[0].weight(),
                *max_iters,
                args[1].step(),
            ))),
            Op::LoraApply { rank } => {
                let (x, c) = args[0].act();
                let out = lora_delta(
                    x,
                    rows,
                    c,
                    args[1].weight(),
                    args[2].weight(),
                    args[3].weight(),
                    *rank as usize,
                );
                Value::Act(out, c)
            }
        }
    }

    /// A composite with a norm folded into its prologue and/or the residual
    /// add into its epilogue: the same arithmetic as the unfused ops, without
    /// the separate nodes.
    fn eval_fused_composite(
        &self,
        op: &Op,
        fusion: Fusion,
        args: &[&Value<'a>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
        params: &[Option<Value<'a>>],
    ) -> Value<'a> {
        let (x_in, norm, _) = fusion.split(args);
        let (x, c) = x_in.act();
        let normed;
        // The operands as the op declares them (its views skip the norm's
        // slot), with `x` normalized.
        let inner = if let (Some(eps), Some(norm)) = (fusion.prenorm, norm) {
            let mut out = Buf::zeroed(x.len());
            rmsnorm(x, c, norm.weight(), eps, &mut out);
            normed = Value::Act(out, c);
            Args::new(std::iter::once(&normed).chain(args[1..].iter().copied()))
        } else {
            Args::new(args.iter().copied())
        };
        let mut v = self.eval_op(op, inner.as_slice(), ctx, iteration, params);
        if fusion.residual {
            if let Value::Act(out, _) = &mut v {
                for (o, &x) in out.iter_mut().zip(x) {
                    *o += x;
                }
            }
        }
        v
    }

    /// A fused group, one row at a time: every body op works on row slices
    /// of one per-task scratch row (each step at its `row_at`), so no
    /// intermediate tensor is made.
    fn run_fused(&self, body: GraphId, args: &[&Value<'a>], rows: usize) -> Value<'a> {
        let sched = &self.schedules[body.0 as usize];
        let body = self.graphs.graph(body);
        let out_c = body
            .ty(body.outputs[0])
            .width()
            .expect("activations have a constant width") as usize;
        let out_step = &sched.steps[sched.outputs[0]];
        let scratch_len = sched.steps.last().map_or(0, |s| s.row_at + s.row_width);
        let mut out = Buf::<f32>::zeroed(rows * out_c);
        let row_fn = |scratch: &mut Buf<f32>, (r, o): (usize, &mut [f32])| {
            for step in &sched.steps {
                let op = body.op(step.node);
                if let Op::Param(_) = op {
                    continue;
                }
                // Operands come before the step in topological order, so
                // their rows lie before this step's row in the scratch.
                let (done, rest) = scratch.split_at_mut(step.row_at);
                let arg = |j: usize| -> &[f32] {
                    let s = &sched.steps[step.operands[j]];
                    match body.op(s.node) {
                        Op::Param(p) => match args[*p] {
                            Value::Act(v, c) => &v[r * c..(r + 1) * c],
                            other => other.weight(),
                        },
                        _ => &done[s.row_at..s.row_at + s.row_width],
                    }
                };
                row::eval(op, &arg, &mut rest[..step.row_width]);
            }
            o.copy_from_slice(&scratch[out_step.row_at..out_step.row_at + out_step.row_width]);
        };
        if rows * out_c >= 1 << 15 {
            use rayon::prelude::*;
            out.par_chunks_mut(out_c)
                .enumerate()
                .for_each_init(|| Buf::zeroed(scratch_len), row_fn);
        } else {
            let mut scratch = Buf::zeroed(scratch_len);
            for item in out.chunks_mut(out_c).enumerate() {
                row_fn(&mut scratch, item);
            }
        }
        Value::Act(out, out_c)
    }

    /// Pushes the loop header's outputs for iteration `t` onto `params`,
    /// computed once per index.
    fn push_header(&self, header: GraphId, t: usize, ctx: &mut Ctx, params: &mut Slots<'a>) {
        if self.graphs.graph(header).outputs.is_empty() {
            return;
        }
        let key = (header, t);
        if let Some(v) = self.header_values.lock().expect("header lock").get(&key) {
            params.extend(v.iter().map(|b| Some(Value::Vector(b.clone()))));
            return;
        }
        let mut header_params = self.take_slots(0);
        header_params.push(Some(Value::Step(t)));
        let outs = self.run(header, &header_params, ctx, Some(t));
        let values: Vec<Buf<f32>> = outs
            .iter()
            .map(|v| Buf::copy_of(v.as_ref().expect("header outputs").weight()))
            .collect();
        params.extend(values.iter().map(|b| Some(Value::Vector(b.clone()))));
        self.give_slots(outs);
        self.give_slots(header_params);
        self.header_values
            .lock()
            .expect("header lock")
            .insert(key, values);
    }

    /// The recurrence: `args` are the loop's operands (`h0`, `e`, the
    /// invariants). The body's parameters are bound as [`LoopRegion`] lays
    /// them out; the carried values start at zero and take the body's
    /// outputs after each iteration.
    fn run_loop(
        &self,
        region: &LoopRegion,
        (header, body): (GraphId, GraphId),
        args: &[&Value<'a>],
        ctx: &mut Ctx,
    ) -> Value<'a> {
        let rows = ctx.batch * ctx.seq;
        let mut params = self.take_slots(0);
        params.extend([Some(args[0].clone()), Some(args[1].clone()), None]);
        for c in &region.carried {
            let w = c.width as usize;
            params.push(Some(Value::Act(Buf::zeroed(rows * w), w)));
        }
        params.extend(args[2..].iter().map(|&v| Some(v.clone())));
        let bound = params.len();
        for t in 0..ctx.loops as usize {
            params.truncate(bound);
            params[2] = Some(Value::Step(t));
            self.push_header(header, t, ctx, &mut params);
            let mut outs = self.run(body, &params, ctx, Some(t));
            params[0] = outs[0].take();
            for i in 0..region.carried.len() {
                params[region.carried_param(i)] = outs[1 + i].take();
            }
            self.give_slots(outs);
            ctx.iterations = t as u64 + 1;
            let all_halted = |i: usize| match &params[region.carried_param(i)] {
                Some(Value::Act(mask, _)) => mask.iter().all(|&m| m >= 0.5),
                _ => unreachable!("the body yields the halted mask"),
            };
            if ctx.may_exit_early && region.halted.is_some_and(all_halted) {
                break;
            }
        }
        let result = region.result.map_or(0, |i| region.carried_param(i));
        let out = params[result].take().expect("the loop's result is bound");
        self.give_slots(params);
        out
    }
}

/// Checks a forward call (shared with the CUDA runtime): `ids` split into
/// `batch` rows, every id in the vocabulary, the cache's `(pos, loops,
/// batch)` compatible, the positions within `max_seq`. Returns the tokens
/// per row.
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

/// Row `t` of the LoRA scale table `[max_iters, rank]`; iterations beyond
/// the trained depth reuse the last row (the reference's index clamp).
fn lora_scale_row(table: &[f32], max_iters: u64, t: usize) -> &[f32] {
    let rank = table.len() / max_iters as usize;
    let idx = t.min(max_iters as usize - 1);
    &table[idx * rank..(idx + 1) * rank]
}

/// The LoRA delta `(x @ down^T * scale) @ B` for `rows` rows.
fn lora_delta(
    x: &[f32],
    rows: usize,
    c: usize,
    down: &[f32],
    b: &[f32],
    scale: &[f32],
    rank: usize,
) -> Buf<f32> {
    let mut low = linear_new(x, rows, c, down, rank);
    for row in low.chunks_exact_mut(rank) {
        row::scale(row, scale);
    }
    let mut out = Buf::zeroed(rows * c);
    kernels::matmul(&low, rows, rank, b, c, &mut out);
    out
}

/// The LTI decay `A = exp(-exp(clamp(log_dt + log_A, -20, 20)))` in f32.
fn lti_decay(log_a: &[f32], log_dt: f32) -> Buf<f32> {
    let mut a = Buf::with_capacity(log_a.len());
    a.extend(
        log_a
            .iter()
            .map(|&la| (-((log_dt + la).clamp(-20.0, 20.0)).exp()).exp()),
    );
    a
}

/// The last position's row of each of `batch` sequences of `seq` rows.
fn last_rows(x: &[f32], c: usize, batch: usize, seq: usize) -> Buf<f32> {
    let mut last = Buf::with_capacity(batch * c);
    for b in 0..batch {
        last.extend_from_slice(&x[((b + 1) * seq - 1) * c..(b + 1) * seq * c]);
    }
    last
}

/// Row-local ops: what a fused group runs on each row, and what the unfused
/// ops run on every row, so both give the same bits.
mod row {
    use super::kernels::rmsnorm;
    use mythos_compiler::ir::{ActStep, Op};

    pub fn scale(x: &mut [f32], w: &[f32]) {
        for (v, s) in x.iter_mut().zip(w) {
            *v *= s;
        }
    }

    pub fn add_prefix(x: &mut [f32], v: &[f32]) {
        for (o, e) in x.iter_mut().zip(v) {
            *o += e;
        }
    }

    /// `a*h + be + x`, in that order.
    pub fn lti_apply(h: &[f32], be: &[f32], x: &[f32], a: &[f32], out: &mut [f32]) {
        for i in 0..out.len() {
            out[i] = a[i] * h[i] + be[i] + x[i];
        }
    }

    /// Evaluates a row-local op on row slices (`arg(i)` is operand `i`)
    /// into `out`, which has the op's width.
    pub fn eval<'a>(op: &Op, arg: &dyn Fn(usize) -> &'a [f32], out: &mut [f32]) {
        match op {
            Op::Add => {
                for ((o, a), b) in out.iter_mut().zip(arg(0)).zip(arg(1)) {
                    *o = a + b;
                }
            }
            Op::Scale => {
                out.copy_from_slice(arg(0));
                scale(out, arg(1));
            }
            Op::AddPrefix => {
                out.copy_from_slice(arg(0));
                add_prefix(out, arg(1));
            }
            Op::LtiApply => lti_apply(arg(0), arg(1), arg(2), arg(3), out),
            Op::RmsNorm { eps } => {
                let x = arg(0);
                rmsnorm(x, x.len(), arg(1), *eps, out);
            }
            Op::Concat => {
                let (a, b) = out.split_at_mut(arg(0).len());
                a.copy_from_slice(arg(0));
                b.copy_from_slice(arg(1));
            }
            Op::Act(step) => act(*step, arg, out),
            other => unreachable!("the verifier admits no `{}` in a fused group", other.name()),
        }
    }

    /// One step of the ACT rule on a row (`[B, T, 1]` operands are one float).
    fn act<'a>(step: ActStep, arg: &dyn Fn(usize) -> &'a [f32], out: &mut [f32]) {
        match step {
            ActStep::Weight { threshold } => {
                let (p, cum, halted) = (arg(0)[0], arg(1)[0], arg(2)[0]);
                let w = if cum + p >= threshold as f32 {
                    (1.0 - cum).max(0.0)
                } else {
                    p
                };
                out[0] = w * (1.0 - halted);
            }
            ActStep::Accumulate => {
                let w = arg(2)[0];
                for ((o, a), h) in out.iter_mut().zip(arg(0)).zip(arg(1)) {
                    *o = a + w * h;
                }
            }
            ActStep::Cumulate => out[0] = arg(0)[0] + arg(1)[0] * (1.0 - arg(2)[0]),
            // The mask is 0 or 1: setting it is an `or`.
            ActStep::Halted { threshold } => {
                out[0] = if arg(1)[0] >= threshold as f32 {
                    1.0
                } else {
                    arg(0)[0]
                };
            }
        }
    }
}

/// `[sin(t f_j)..., cos(t f_j)...][:channels]`, `f_j = 1 / theta^(2j / channels)`, in f32.
fn loop_embedding(channels: usize, theta: f64, t: usize) -> Buf<f32> {
    let theta = theta as f32;
    // One angle per even channel index j: the sines fill the first `half`
    // places, the cosines the rest (cut at `channels`).
    let half = channels.div_ceil(2);
    let mut emb = Buf::zeroed(channels);
    for (i, j) in (0..channels).step_by(2).enumerate() {
        let angle = t as f32 * (1.0 / theta.powf(j as f32 / channels as f32));
        emb[i] = angle.sin();
        if half + i < channels {
            emb[half + i] = angle.cos();
        }
    }
    emb
}
