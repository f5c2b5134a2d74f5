//! [`CudaRuntime`]: a module's graphs walked in the CPU runtime's order
//! (the same [`Schedule`]s), every compute node launched as its plan
//! step's GPU kernels, values kept on the device. The host keeps the loop
//! control, the loop-header memo and the KV cache bookkeeping, exactly as
//! [`crate::cpu::CpuRuntime`] does; the ACT rule runs on the device as the
//! body's `act.*` kernels, and only the halted mask comes back to the host
//! (after each iteration, when the loop may stop early).

use super::abi::Arg;
use super::kernels::{launch, Bound, CudaKernels, Kernel};
use super::kv::{alloc, copy_d2d, dptr, CudaKvCache};
use super::{attention, CudaDevice, CudaError};
use crate::cpu::{check_call, schedules, Forward, Logits, Schedule};
use crate::weights::Weights;
use cudarc::driver::CudaSlice;
use mythos_compiler::ir::walk::{GraphId, Graphs};
use mythos_compiler::ir::{Dim, Graph, LoopRegion, Module, NodeId, Op, WeightId};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// A device buffer shared by every value that reads it.
pub(crate) type Buf = Arc<CudaSlice<f32>>;

/// A value flowing through the graph, on the device.
#[derive(Clone)]
pub(crate) enum Value<'w> {
    /// `rows x cols` activations.
    Act(Buf, usize),
    Weight(&'w CudaSlice<f32>),
    /// A computed vector (LTI decay, loop-embedding vector, LoRA scale row).
    Vector(Buf),
    /// The loop iteration index.
    Step(usize),
    Ids,
}

impl Value<'_> {
    /// The buffer behind an activation, weight or vector.
    pub(crate) fn slice(&self) -> &CudaSlice<f32> {
        match self {
            Value::Act(b, _) | Value::Vector(b) => b,
            Value::Weight(w) => w,
            _ => unreachable!("the verifier guarantees a buffer here"),
        }
    }

    pub(crate) fn cols(&self) -> usize {
        match self {
            Value::Act(_, c) => *c,
            _ => unreachable!("the verifier guarantees an activation here"),
        }
    }

    /// The value as a kernel argument.
    pub(crate) fn arg(&self, dev: &CudaDevice, ctx: &Ctx) -> Arg {
        match self {
            Value::Ids => Arg::Buf {
                ptr: dptr(dev, &ctx.ids),
                len: ctx.ids.len(),
            },
            Value::Step(t) => Arg::Index(*t as u64),
            v => buf_arg(dev, v.slice()),
        }
    }
}

/// A whole buffer as a kernel argument.
pub(crate) fn buf_arg(dev: &CudaDevice, s: &CudaSlice<f32>) -> Arg {
    Arg::Buf {
        ptr: dptr(dev, s),
        len: s.len(),
    }
}

/// Per-call state, as the CPU runtime's.
pub(crate) struct Ctx<'c> {
    pub batch: usize,
    pub seq: usize,
    pub start: usize,
    /// The token ids on the device.
    pub ids: CudaSlice<i64>,
    pub cache: &'c mut CudaKvCache,
    pub may_exit_early: bool,
    pub loops: u64,
    pub iterations: u64,
    pub last_only: bool,
    /// RoPE cos/sin tables of this call's positions by (rotated dims, theta).
    pub ropes: HashMap<(usize, u64), (CudaSlice<f32>, CudaSlice<f32>)>,
}

/// A module, its weights on the device and its kernels, ready to run.
pub struct CudaRuntime<'a> {
    pub(crate) dev: &'a CudaDevice,
    module: &'a Module,
    weights: Vec<CudaSlice<f32>>,
    /// Every graph of the module, by id, and its schedule.
    graphs: Graphs<'a>,
    schedules: Vec<Schedule>,
    bound: Bound,
    _kernels: &'a CudaKernels,
    /// Loop-header outputs per (header graph, iteration index).
    header_values: Mutex<HashMap<(GraphId, usize), Vec<Buf>>>,
}

impl<'a> CudaRuntime<'a> {
    /// Uploads the weights (f32) and binds the kernels' plan to `module`
    /// (the module the plan was compiled from).
    pub fn new(
        dev: &'a CudaDevice,
        module: &'a Module,
        weights: &Weights,
        kernels: &'a CudaKernels,
    ) -> Result<CudaRuntime<'a>, CudaError> {
        let bound = kernels.bind(module)?;
        let mut dw = Vec::with_capacity(module.weights.len());
        for i in 0..module.weights.len() {
            let data = &weights.get(WeightId(i as u32)).data;
            dw.push(if data.is_empty() {
                alloc(dev, 1)?
            } else {
                dev.stream
                    .clone_htod(data)
                    .map_err(CudaError::driver("cuMemcpyHtoD"))?
            });
        }
        let graphs = module.graphs();
        let schedules = schedules(&graphs);
        Ok(CudaRuntime {
            dev,
            module,
            weights: dw,
            graphs,
            schedules,
            bound,
            _kernels: kernels,
            header_values: Mutex::new(HashMap::new()),
        })
    }

    /// The module it runs.
    pub fn module(&self) -> &'a Module {
        self.module
    }

    /// A forward pass on the device, as the CPU runtime's (see
    /// [`Engine::forward_with`](crate::engine::Engine::forward_with)).
    pub fn forward_with(
        &self,
        ids: &[i64],
        batch: usize,
        loops: Option<u64>,
        cache: Option<&mut CudaKvCache>,
        logits: Logits,
    ) -> Result<Forward, CudaError> {
        let loops = loops.unwrap_or_else(|| self.module.max_iters());
        let mut local = CudaKvCache::new();
        let may_exit_early = cache.is_none();
        let cache = cache.unwrap_or(&mut local);
        let seq = check_call(
            self.module,
            ids,
            batch,
            loops,
            (cache.pos, cache.loops, cache.batch),
        )?;
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))?;
        let dev_ids = self
            .dev
            .stream
            .clone_htod(ids)
            .map_err(CudaError::driver("cuMemcpyHtoD"))?;
        let mut ctx = Ctx {
            batch,
            seq,
            start: cache.pos,
            ids: dev_ids,
            cache,
            may_exit_early,
            loops,
            iterations: 0,
            last_only: logits == Logits::Last,
            ropes: HashMap::new(),
        };
        let outputs = self.run(Graphs::MAIN, &[], &mut ctx, None)?;
        let (out, vocab) = match outputs.into_iter().next() {
            Some(Value::Act(b, c)) => (b, c),
            _ => unreachable!("the module's output is the logits"),
        };
        let logits = self.to_host(&out)?;
        ctx.cache.pos += seq;
        ctx.cache.loops = Some(loops);
        ctx.cache.batch = Some(batch);
        Ok(Forward {
            logits: logits.into(),
            batch,
            seq: if ctx.last_only { 1 } else { seq },
            vocab,
            iterations: ctx.iterations,
        })
    }

    fn to_host(&self, b: &CudaSlice<f32>) -> Result<Vec<f32>, CudaError> {
        self.dev
            .stream
            .clone_dtoh(b)
            .map_err(CudaError::driver("cuMemcpyDtoH"))
    }

    /// Evaluates a graph; `params` are the loop-body (or header) parameters.
    fn run<'w>(
        &'w self,
        gid: GraphId,
        params: &[Value<'w>],
        ctx: &mut Ctx,
        iteration: Option<usize>,
    ) -> Result<Vec<Value<'w>>, CudaError> {
        let g = self.graphs.graph(gid);
        let sched = &self.schedules[gid.0 as usize];
        let mut slots: Vec<Option<Value<'w>>> = vec![None; sched.steps.len()];
        for (i, step) in sched.steps.iter().enumerate() {
            let args: Vec<Value<'w>> = step
                .operands
                .iter()
                .map(|&o| slots[o].clone().expect("operands run first"))
                .collect();
            let v = match g.op(step.node) {
                Op::Input => Value::Ids,
                Op::Param(p) => params[*p].clone(),
                Op::Weight(id) => Value::Weight(&self.weights[id.0 as usize]),
                Op::Loop(region) => {
                    let graphs = self.graphs.loop_graphs(gid, step.node);
                    self.run_loop(region, graphs, &args, ctx)?
                }
                op => {
                    let ks = self.bound.get(&(gid, step.node)).ok_or_else(|| {
                        CudaError::Load(format!(
                            "node `{}` ({}) has no GPU kernel in the plan; the artifact \
                             is stale, recompile it",
                            g.node(step.node).label,
                            op.name()
                        ))
                    })?;
                    match op {
                        Op::Attention(a) => attention::run(self, ks, a, &args, ctx, iteration)?,
                        _ => self.eval(ks, g, step.node, op, &args, ctx)?,
                    }
                }
            };
            slots[i] = Some(v);
            for &d in &step.last_use_of {
                slots[d] = None;
            }
        }
        Ok(sched
            .outputs
            .iter()
            .map(|&o| slots[o].clone().expect("outputs are kept"))
            .collect())
    }

    /// A node through its kernels with the generic ABI: operands in IR
    /// order, the output, the row count (grid sizes: `rows`).
    fn eval<'w>(
        &'w self,
        ks: &[Kernel],
        g: &Graph,
        n: NodeId,
        op: &Op,
        args: &[Value<'w>],
        ctx: &mut Ctx,
    ) -> Result<Value<'w>, CudaError> {
        let dev = self.dev;
        let ty = g.ty(n);
        let width = ty.width().unwrap_or(1) as usize;
        let act = ty.shape.iter().any(|d| !matches!(d, Dim::Const(_)));
        let mut rows = if act { ctx.batch * ctx.seq } else { 1 };
        let mut args = args.to_vec();
        if matches!(op, Op::Head(_)) && ctx.last_only && ctx.seq > 1 {
            // The last position of each batch row, gathered on the device.
            let (x, c) = (args[0].slice(), args[0].cols());
            let last = alloc(dev, ctx.batch * c)?;
            for b in 0..ctx.batch {
                let src = dptr(dev, x) + 4 * (((b + 1) * ctx.seq - 1) * c) as u64;
                // SAFETY: row `(b+1)*seq - 1` of x and row b of `last` exist.
                unsafe { copy_d2d(dev, dptr(dev, &last) + 4 * (b * c) as u64, src, c)? };
            }
            args[0] = Value::Act(Arc::new(last), c);
            rows = ctx.batch;
        }
        let out = alloc(dev, rows * width)?;
        let mut call: Vec<Arg> = args.iter().map(|v| v.arg(dev, ctx)).collect();
        call.push(buf_arg(dev, &out));
        call.push(Arg::Index(rows as u64));
        for k in ks {
            // SAFETY: the generic ABI: operands hold `rows` rows (or are
            // weights and vectors of the node's shapes), `out` holds `rows`
            // rows of the node's width; all live until the stream runs.
            unsafe { launch(dev, k, &call, &[("rows", rows as u64)])? };
        }
        let out = Arc::new(out);
        Ok(if act {
            Value::Act(out, width)
        } else {
            Value::Vector(out)
        })
    }

    /// The loop header's outputs for iteration `t`, computed once per index.
    fn header(&self, header: GraphId, t: usize, ctx: &mut Ctx) -> Result<Vec<Buf>, CudaError> {
        if self.graphs.graph(header).outputs.is_empty() {
            return Ok(Vec::new());
        }
        let key = (header, t);
        if let Some(v) = self.header_values.lock().expect("header lock").get(&key) {
            return Ok(v.clone());
        }
        let values: Vec<Buf> = self
            .run(header, &[Value::Step(t)], ctx, Some(t))?
            .into_iter()
            .map(|v| match v {
                Value::Act(b, _) | Value::Vector(b) => b,
                _ => unreachable!("loop headers compute vectors"),
            })
            .collect();
        self.header_values
            .lock()
            .expect("header lock")
            .insert(key, values.clone());
        Ok(values)
    }

    /// The recurrence, as the CPU runtime's: `args` are the loop node's
    /// operands (`h`, `e`, the hoisted invariants); the carried values start
    /// at zero on the device and take the body's outputs after each
    /// iteration. With a halted mask and early exit allowed, the mask is
    /// copied to the host after each iteration (one float per position).
    fn run_loop<'w>(
        &'w self,
        region: &LoopRegion,
        (header, body): (GraphId, GraphId),
        args: &[Value<'w>],
        ctx: &mut Ctx,
    ) -> Result<Value<'w>, CudaError> {
        let rows = ctx.batch * ctx.seq;
        let mut params = vec![args[0].clone(), args[1].clone(), Value::Step(0)];
        for c in &region.carried {
            let w = c.width as usize;
            params.push(Value::Act(Arc::new(alloc(self.dev, rows * w)?), w));
        }
        params.extend(args[2..].iter().cloned());
        let bound = params.len();
        for t in 0..ctx.loops as usize {
            params.truncate(bound);
            params[2] = Value::Step(t);
            params.extend(self.header(header, t, ctx)?.into_iter().map(Value::Vector));
            let outs = self.run(body, &params, ctx, Some(t))?;
            for (i, v) in outs.into_iter().enumerate() {
                let at = if i == 0 {
                    0
                } else {
                    region.carried_param(i - 1)
                };
                params[at] = v;
            }
            ctx.iterations = t as u64 + 1;
            if let (true, Some(i)) = (ctx.may_exit_early, region.halted) {
                let mask = self.to_host(params[region.carried_param(i)].slice())?;
                if mask.iter().all(|&m| m >= 0.5) {
                    break;
                }
            }
        }
        let result = region.result.map_or(0, |i| region.carried_param(i));
        Ok(params.swap_remove(result))
    }
}
