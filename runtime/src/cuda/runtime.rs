//! [`CudaRuntime`]: the shared executor (`crate::exec`: the graph walk,
//! the loop control, the loop-header memo, the KV cache bookkeeping, as for
//! the CPU runtime) over a device where every compute node is launched as
//! its plan step's GPU kernels and values stay on the device. The ACT rule
//! runs on the device as the body's `act.*` kernels; only the halted mask
//! comes back to the host (after each iteration, when the loop may stop
//! early).

use super::abi::Arg;
use super::kernels::{Bound, CudaKernels, Kernel};
use super::kv::{alloc, dptr, Stream};
use super::{attention, CudaDevice, CudaError};
use crate::cpu::pool::Buf as HostBuf;
use crate::exec::{Call, Device, Exec};
use crate::launch::{self, ArgList, Output};
use crate::weights::Weights;
use cudarc::driver::CudaSlice;
use mythos_compiler::ir::walk::GraphId;
use mythos_compiler::ir::{Graph, Module, NodeId, Op, WeightId};
use std::collections::HashMap;
use std::sync::Arc;

/// A device buffer shared by every value that reads it.
pub(crate) type Buf = Arc<CudaSlice<f32>>;

/// A value flowing through the graph, on the device.
#[derive(Clone)]
pub(crate) enum Value {
    /// `rows x cols` activations.
    Act(Buf, usize),
    Weight(Buf),
    /// A computed vector (LTI decay, loop-embedding vector, LoRA scale row).
    Vector(Buf),
    /// The loop iteration index.
    Step(usize),
    Ids,
}

impl Value {
    /// The buffer behind an activation, weight or vector.
    pub(crate) fn slice(&self) -> &CudaSlice<f32> {
        match self {
            Value::Act(b, _) | Value::Vector(b) | Value::Weight(b) => b,
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
                ptr: dptr(dev, &ctx.local.ids),
                len: ctx.local.ids.len(),
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

/// What the CUDA runtime keeps per call.
pub(crate) struct Local {
    /// The token ids on the device.
    pub ids: CudaSlice<i64>,
    /// RoPE cos/sin tables of this call's positions by (rotated dims, theta).
    pub ropes: HashMap<(usize, u64), (CudaSlice<f32>, CudaSlice<f32>)>,
}

/// Per-call state (see [`crate::exec::Call`]).
pub(crate) type Ctx<'k> = Call<'k, Stream, Local>;

/// A module, its weights on the device and its kernels, ready to run.
pub struct CudaRuntime<'a> {
    pub(crate) dev: &'a CudaDevice,
    module: &'a Module,
    weights: Vec<Buf>,
    /// The module's graphs, schedules and memos.
    exec: Exec<'a, Value>,
    bound: Bound,
    _kernels: &'a CudaKernels,
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
            dw.push(Arc::new(if data.is_empty() {
                alloc(dev, 1)?
            } else {
                dev.stream
                    .clone_htod(data)
                    .map_err(CudaError::driver("cuMemcpyHtoD"))?
            }));
        }
        Ok(CudaRuntime {
            dev,
            module,
            weights: dw,
            exec: Exec::new(module),
            bound,
            _kernels: kernels,
        })
    }

    /// The module it runs.
    pub fn module(&self) -> &'a Module {
        self.module
    }

    fn to_host(&self, b: &CudaSlice<f32>) -> Result<Vec<f32>, CudaError> {
        self.dev
            .stream
            .clone_dtoh(b)
            .map_err(CudaError::driver("cuMemcpyDtoH"))
    }

    /// A node through its kernels with the generic ABI: operands in IR
    /// order, the output, the row count (grid sizes: `rows`).
    fn eval_generic(
        &self,
        ks: &[Kernel],
        g: &Graph,
        n: NodeId,
        op: &Op,
        args: &[&Value],
        ctx: &mut Ctx,
    ) -> Result<Value, CudaError> {
        let out = Output::of(g.ty(n), op, ctx.batch, ctx.seq, ctx.last_only);
        let ins: ArgList = args.iter().map(|v| v.arg(self.dev, ctx)).collect();
        // SAFETY: the generic ABI: operands hold `batch * seq` rows (or are
        // weights and vectors of the node's shapes) and live until the
        // stream has run the kernels (values are reference-counted).
        let buf = unsafe { launch::generic(self.dev, ks, ins, out, (ctx.batch, ctx.seq))? };
        let buf = Arc::new(buf);
        Ok(if out.act {
            Value::Act(buf, out.width)
        } else {
            Value::Vector(buf)
        })
    }
}

impl Device for CudaRuntime<'_> {
    type Value = Value;
    type Error = CudaError;
    type Stream = Stream;
    type Local<'c> = Local;

    fn exec(&self) -> &Exec<'_, Value> {
        &self.exec
    }

    fn backend(&self) -> &'static str {
        "cuda"
    }

    fn begin(&self, ids: &[i64], _targets: &[i64]) -> Result<Local, CudaError> {
        self.dev
            .ctx
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))?;
        let ids = self
            .dev
            .stream
            .clone_htod(ids)
            .map_err(CudaError::driver("cuMemcpyHtoD"))?;
        Ok(Local {
            ids,
            ropes: HashMap::new(),
        })
    }

    fn eval(
        &self,
        (gid, node): (GraphId, NodeId),
        op: &Op,
        args: &[&Value],
        ctx: &mut Ctx,
        iteration: Option<usize>,
    ) -> Result<Value, CudaError> {
        // Leaves need no kernel.
        match op {
            Op::Input => return Ok(Value::Ids),
            Op::Weight(id) => return Ok(Value::Weight(self.weights[id.0 as usize].clone())),
            _ => {}
        }
        let g = self.exec.graphs.graph(gid);
        let ks = self.bound.get(&(gid, node)).ok_or_else(|| {
            CudaError::Load(format!(
                "node `{}` ({}) has no GPU kernel in the plan; the artifact is stale, \
                 recompile it",
                g.node(node).label,
                op.name()
            ))
        })?;
        match op {
            Op::Attention(a) => attention::run(self.dev, ks, a, args, ctx, iteration),
            _ => self.eval_generic(ks, g, node, op, args, ctx),
        }
    }

    fn step(&self, t: usize) -> Value {
        Value::Step(t)
    }

    fn zeros(&self, rows: usize, width: usize) -> Result<Value, CudaError> {
        Ok(Value::Act(Arc::new(alloc(self.dev, rows * width)?), width))
    }

    fn all_halted(&self, mask: &Value) -> Result<bool, CudaError> {
        Ok(self.to_host(mask.slice())?.iter().all(|&m| m >= 0.5))
    }

    fn logits(&self, out: Value) -> Result<(HostBuf<f32>, usize), CudaError> {
        let vocab = out.cols();
        Ok((self.to_host(out.slice())?.into(), vocab))
    }

    fn tuple(&self, _items: Vec<Option<Value>>) -> Result<Value, CudaError> {
        Err(CudaError::Abi(
            "gradient modules run on the CPU runtime only (--backend cpu)".into(),
        ))
    }

    fn pick(&self, _tuple: &Value, _k: usize) -> Value {
        unreachable!("the CUDA runtime builds no tuples")
    }

    fn tuple_len(&self, _tuple: &Value) -> usize {
        unreachable!("the CUDA runtime builds no tuples")
    }

    fn add_into(&self, _acc: &mut Value, _v: &Value) -> Result<(), CudaError> {
        Err(CudaError::Abi(
            "gradient modules run on the CPU runtime only (--backend cpu)".into(),
        ))
    }
}
