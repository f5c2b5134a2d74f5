//! The CPU reference runtime: executes the graph IR in f32, op by op, on
//! the shared executor (`crate::exec`: graph walk, loop control, header
//! memo). It is the oracle every other backend and every pass is compared
//! against, so it follows OpenMythos's semantics exactly
//! (shared/openmythos-reference.md).

pub mod attention;
pub mod compiled;
mod compiled_host;
pub mod grad;
pub mod kernels;
pub mod kv;
pub mod moe;
mod parts;
pub mod pool;

pub use crate::exec::{Forward, Logits, RunError};

use crate::exec::{Args, Call, Device, Exec};
use crate::launch::{Arg, Output};
use crate::weights::Weights;
use kernels::{linear_new, rmsnorm, sigmoid, Rope};
use kv::CacheKey;
use mythos_compiler::ir::args::SwiGluArgs;
use mythos_compiler::ir::walk::GraphId;
use mythos_compiler::ir::{Fusion, Graph, KvLayout, Module, NodeId, Op};
use parts::AttnParts;
use pool::Buf;
use std::collections::HashMap;
use std::sync::Arc;
use std::sync::Mutex;

/// A module and its weights, ready to run.
pub struct CpuRuntime<'a> {
    module: &'a Module,
    weights: &'a Weights,
    /// The module's graphs, schedules and memos.
    exec: Exec<'a, Value<'a>>,
    /// Compiled kernels (the `mlir-cpu` backend) by node, when loaded.
    kernels: Option<(&'a compiled::CompiledKernels, compiled::Bound)>,
    /// RoPE tables by (rotated dims, theta) for positions `[0, n)`, grown
    /// (doubling) when a call reaches past them.
    ropes: Mutex<HashMap<(usize, u64), Arc<Rope>>>,
    /// The tokens each expert got in the MoE backward passes run, by the
    /// address of the MoE's `router_bias` (see [`grad::Gradient::expert_load`]).
    loads: Mutex<Vec<(usize, Vec<u64>)>>,
}

/// A value flowing through the graph. Activations and vectors live in
/// pooled buffers, so dropping a value hands its storage back.
#[derive(Clone)]
pub(crate) enum Value<'a> {
    /// `rows x cols` activations.
    Act(Buf<f32>, usize),
    Weight(&'a [f32]),
    /// A computed vector (the LTI decay, a loop-embedding vector, a LoRA scale row).
    Vector(Buf<f32>),
    /// The loop iteration index.
    Step(usize),
    Ids,
    /// The training targets (`targets`).
    Targets,
    /// A tuple (`vjp`, `loop_vjp`, a recording loop and its tape): only
    /// `pick` reads one.
    Tuple(Arc<Vec<Option<Value<'a>>>>),
}

impl Value<'_> {
    fn act(&self) -> (&[f32], usize) {
        match self {
            Value::Act(v, c) => (v, *c),
            _ => unreachable!("the verifier guarantees an activation here"),
        }
    }

    /// The value as a compiled kernel's argument (`ids`: the call's token ids).
    fn arg(&self, ids: &[i64]) -> Arg {
        match self {
            Value::Act(v, _) | Value::Vector(v) => Arg::host(v),
            Value::Weight(w) => Arg::host(w),
            Value::Ids => Arg::host(ids),
            Value::Step(t) => Arg::index(*t),
            Value::Targets | Value::Tuple(_) => {
                unreachable!("compiled kernels run forward ops only")
            }
        }
    }

    /// Row `r` of an activation; a weight or vector whole (what a row-local
    /// op reads of each operand).
    fn row(&self, r: usize) -> &[f32] {
        match self {
            Value::Act(v, c) => &v[r * c..(r + 1) * c],
            other => other.weight(),
        }
    }

    /// The length of [`Value::row`].
    fn row_width(&self) -> usize {
        match self {
            Value::Act(_, c) => *c,
            other => other.weight().len(),
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

    /// The floats of an activation, weight or vector.
    fn floats(&self) -> &[f32] {
        match self {
            Value::Act(v, _) | Value::Vector(v) => v,
            Value::Weight(w) => w,
            _ => unreachable!("the verifier guarantees an f32 value here"),
        }
    }

    fn step(&self) -> usize {
        match self {
            Value::Step(t) => *t,
            _ => unreachable!("the verifier guarantees the iteration index here"),
        }
    }
}

/// What the CPU runtime keeps per call: the token ids.
pub(crate) struct Local<'c> {
    pub(crate) ids: &'c [i64],
    /// The training targets of a gradient call (empty otherwise).
    pub(crate) targets: &'c [i64],
}

/// Per-call state (see [`exec::Call`]).
pub(crate) type Ctx<'k, 'c> = Call<'k, Vec<f32>, Local<'c>>;

impl<'a> Device for CpuRuntime<'a> {
    type Value = Value<'a>;
    type Error = RunError;
    type Stream = Vec<f32>;
    type Local<'c> = Local<'c>;

    fn exec(&self) -> &Exec<'_, Value<'a>> {
        &self.exec
    }

    fn backend(&self) -> &'static str {
        if self.compiled_nodes() > 0 {
            "mlir-cpu"
        } else {
            "cpu"
        }
    }

    fn begin<'c>(&self, ids: &'c [i64], targets: &'c [i64]) -> Result<Local<'c>, RunError> {
        Ok(Local { ids, targets })
    }

    fn tuple(&self, items: Vec<Option<Value<'a>>>) -> Result<Value<'a>, RunError> {
        Ok(Value::Tuple(Arc::new(items)))
    }

    fn tuple_len(&self, tuple: &Value<'a>) -> usize {
        match tuple {
            Value::Tuple(items) => items.len(),
            _ => unreachable!("the verifier guarantees a tuple here"),
        }
    }

    fn pick(&self, tuple: &Value<'a>, k: usize) -> Value<'a> {
        match tuple {
            Value::Tuple(items) => items[k].clone().expect("the picked element exists"),
            _ => unreachable!("the verifier guarantees a tuple here"),
        }
    }

    fn add_into(&self, acc: &mut Value<'a>, v: &Value<'a>) -> Result<(), RunError> {
        grad::vjp::add_into(acc, v);
        Ok(())
    }

    fn eval<'c>(
        &self,
        (gid, node): (GraphId, NodeId),
        op: &Op,
        args: &[&Value<'a>],
        ctx: &mut Ctx<'_, 'c>,
        iteration: Option<usize>,
    ) -> Result<Value<'a>, RunError> {
        let g = self.exec.graphs.graph(gid);
        Ok(match (op, self.compiled_for(gid, node)) {
            (_, Some(fns)) => self.eval_compiled(fns, g, node, op, args, ctx, iteration),
            (Op::Fused(_), None) => {
                let body = self.exec.graphs.fused_body(gid, node);
                self.run_fused(body, args, ctx.rows())
            }
            (_, None) => self.eval_reference(op, args, ctx, iteration),
        })
    }

    fn step(&self, t: usize) -> Value<'a> {
        Value::Step(t)
    }

    fn zeros(&self, rows: usize, width: usize) -> Result<Value<'a>, RunError> {
        Ok(Value::Act(Buf::zeroed(rows * width), width))
    }

    fn all_halted(&self, mask: &Value<'a>) -> Result<bool, RunError> {
        Ok(mask.act().0.iter().all(|&m| m >= 0.5))
    }

    fn logits(&self, out: Value<'a>) -> Result<(Buf<f32>, usize), RunError> {
        match out {
            Value::Act(v, c) => Ok((v, c)),
            _ => unreachable!("the module's output is the logits"),
        }
    }
}

impl<'a> CpuRuntime<'a> {
    pub fn new(module: &'a Module, weights: &'a Weights) -> CpuRuntime<'a> {
        CpuRuntime {
            module,
            weights,
            exec: Exec::new(module),
            kernels: None,
            ropes: Mutex::new(HashMap::new()),
            loads: Mutex::new(Vec::new()),
        }
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

    /// Records the time spent in each op kind (see
    /// [`Engine::profile`](crate::engine::Engine::profile)).
    pub fn with_profiling(mut self) -> CpuRuntime<'a> {
        self.exec.start_profiling();
        self
    }

    /// Runs `call` (a whole forward pass) on a worker of the thread pool:
    /// every parallel kernel inside it then forks from a worker (its own
    /// deque, the other workers steal) instead of injecting a job and
    /// parking the caller's thread on each of them, one context switch per
    /// call instead of one per kernel.
    pub(crate) fn on_pool<R: Send>(&self, call: impl FnOnce() -> R + Send) -> R {
        if rayon::current_thread_index().is_none() && rayon::current_num_threads() > 1 {
            let mut out = None;
            rayon::scope(|_| out = Some(call()));
            return out.expect("the scope ran the forward pass");
        }
        call()
    }

    /// The module it runs.
    pub fn module(&self) -> &'a Module {
        self.module
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
        let out = Output::of(g.ty(n), op, ctx.batch, ctx.seq, ctx.last_only);
        compiled_host::generic(fns, out, args, ctx)
    }

    /// Attention through compiled kernels: projections, the KV cache on the
    /// host, core attention per batch row (see `compiled_host.rs` and
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
        compiled_host::run(fns, a, args, ctx, iteration, &rope)
    }

    /// One op on the reference kernels; a composite with a fused prologue
    /// or epilogue goes through [`CpuRuntime::eval_fused_composite`].
    fn eval_reference(
        &self,
        op: &Op,
        args: &[&Value<'a>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
    ) -> Value<'a> {
        let fusion = op.fusion();
        if fusion.is_none() {
            self.eval_op(op, args, ctx, iteration)
        } else {
            self.eval_fused_composite(op, fusion, args, ctx, iteration)
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
    ) -> Value<'a> {
        let rows = ctx.rows();
        let d = self.module.dim as usize;
        match op {
            Op::Input => Value::Ids,
            Op::Weight(id) => Value::Weight(&self.weights.get(*id).data),
            Op::Embedding => {
                let table = args[1].weight();
                let mut out = Buf::with_capacity(rows * d);
                for &id in ctx.local.ids {
                    out.extend_from_slice(&table[id as usize * d..(id as usize + 1) * d]);
                }
                Value::Act(out, d)
            }
            Op::Row(op) => {
                let width = op.result_width(|i| args[i].row_width());
                let mut out = Buf::zeroed(rows * width);
                for (r, o) in out.chunks_exact_mut(width.max(1)).enumerate() {
                    row::eval(*op, &|i| args[i].row(r), o);
                }
                Value::Act(out, width)
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
                let out = match parts::attention(a.kind, view.weights) {
                    AttnParts::Gqa(weights, (heads, kv_heads, head_dim)) => {
                        attention::gqa(&inp, &weights, heads, kv_heads, head_dim, rope, layer)
                    }
                    AttnParts::Mla(weights, dims) => {
                        let opts = attention::MlaOptions {
                            compact: a.kv_layout == KvLayout::Compact,
                            absorb: a.absorb,
                        };
                        attention::mla_with(&inp, &weights, &dims, a.norm_eps, rope, layer, opts)
                    }
                };
                Value::Act(out, c)
            }
            Op::Moe(m) => {
                let a = m.args(args);
                let (x, c) = a.x.act();
                let (weights, dims) = parts::moe(m, &a);
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
            Op::Param(_) | Op::Loop(_) | Op::Fused(_) | Op::LoopVjp(_) | Op::Pick(_) => {
                unreachable!(
                    "the executor binds params, runs loops and picks; `eval` runs fused groups"
                )
            }
            Op::Targets => Value::Targets,
            Op::Loss => grad::vjp::loss(args, ctx.local.targets),
            Op::Vjp(of) => self.vjp(of, args, ctx),
            Op::GradSum => grad::vjp::grad_sum(args),
            Op::LtiDecay => Value::Vector(lti_decay(args[0].weight(), args[1].weight()[0])),
            Op::LoopEmbeddingVec { channels, theta } => {
                Value::Vector(loop_embedding(*channels as usize, *theta, args[0].step()))
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
        let mut v = self.eval_op(op, inner.as_slice(), ctx, iteration);
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
        let sched = &self.exec.schedules[body.0 as usize];
        let body = self.exec.graphs.graph(body);
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
                let row_op = op
                    .row_op()
                    .expect("the verifier admits only row-local ops in a fused body");
                // Operands come before the step in topological order, so
                // their rows lie before this step's row in the scratch.
                let (done, rest) = scratch.split_at_mut(step.row_at);
                let arg = |j: usize| -> &[f32] {
                    let s = &sched.steps[step.operands[j]];
                    match body.op(s.node) {
                        Op::Param(p) => args[*p].row(r),
                        _ => &done[s.row_at..s.row_at + s.row_width],
                    }
                };
                row::eval(row_op, &arg, &mut rest[..step.row_width]);
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
    use mythos_compiler::ir::{ActStep, RowOp};

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
    pub fn eval<'a>(op: RowOp, arg: &dyn Fn(usize) -> &'a [f32], out: &mut [f32]) {
        match op {
            RowOp::Add => {
                for ((o, a), b) in out.iter_mut().zip(arg(0)).zip(arg(1)) {
                    *o = a + b;
                }
            }
            RowOp::Scale => {
                out.copy_from_slice(arg(0));
                scale(out, arg(1));
            }
            RowOp::AddPrefix => {
                out.copy_from_slice(arg(0));
                add_prefix(out, arg(1));
            }
            RowOp::LtiApply => lti_apply(arg(0), arg(1), arg(2), arg(3), out),
            RowOp::RmsNorm { eps } => {
                let x = arg(0);
                rmsnorm(x, x.len(), arg(1), eps, out);
            }
            RowOp::Concat => {
                let (a, b) = out.split_at_mut(arg(0).len());
                a.copy_from_slice(arg(0));
                b.copy_from_slice(arg(1));
            }
            RowOp::Act(step) => act(step, arg, out),
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
