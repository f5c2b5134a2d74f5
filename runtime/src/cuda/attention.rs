//! Attention on the device: the shared host sequence
//! ([`crate::attention_host`]) with device buffers, the device KV cache
//! (appends are device-to-device copies) and RoPE tables of this call's
//! positions uploaded once per call. The cores' `scores` buffer is unused
//! on the GPU: a one-element placeholder is passed.

use super::kernels::{launch, Kernel};
use super::kv::{alloc, copy_d2d, dptr, Stream};
use super::runtime::{buf_arg, Ctx, Value};
use super::{CudaDevice, CudaError};
use crate::attention_host;
use crate::cpu::kernels::Rope;
use crate::kv::CacheKey;
use crate::launch::{Arg, ArgList, GridSizes, KernelHost, Tokens};
use cudarc::driver::CudaSlice;
use mythos_compiler::ir::AttentionOp;
use std::sync::Arc;

impl KernelHost for CudaDevice {
    type Buf = CudaSlice<f32>;
    type Kernel = Kernel;
    type Stream = Stream;
    type Error = CudaError;

    fn alloc(&self, len: usize) -> Result<CudaSlice<f32>, CudaError> {
        alloc(self, len)
    }

    fn arg(&self, b: &mut CudaSlice<f32>) -> Arg {
        buf_arg(self, b)
    }

    fn stream_arg(&self, s: &mut Stream) -> Result<Arg, CudaError> {
        use crate::kv::KvStream;
        Ok(Arg::Buf {
            ptr: s.ptr(self)?,
            len: s.len(),
        })
    }

    fn scores(&self, _len: usize) -> Result<CudaSlice<f32>, CudaError> {
        alloc(self, 1)
    }

    unsafe fn last_rows(&self, x: Arg, t: Tokens) -> Result<CudaSlice<f32>, CudaError> {
        let (x, _) = x.buffer();
        let gathered = alloc(self, t.batch * t.dim)?;
        for b in 0..t.batch {
            let src = x + 4 * (((b + 1) * t.seq - 1) * t.dim) as u64;
            let dst = dptr(self, &gathered) + 4 * (b * t.dim) as u64;
            // SAFETY: the caller's contract: row `(b+1)*seq - 1` of x exists;
            // row b of `gathered` does.
            unsafe { copy_d2d(self, dst, src, t.dim)? };
        }
        Ok(gathered)
    }

    unsafe fn launch(&self, k: &Kernel, args: &[Arg], sizes: GridSizes) -> Result<(), CudaError> {
        // SAFETY: the caller's contract.
        unsafe { launch(self, k, args, sizes) }
    }

    unsafe fn append(&self, s: &mut Stream, src: Arg, _reserve: usize) -> Result<(), CudaError> {
        let (ptr, len) = src.buffer();
        // SAFETY: the caller's contract: `src` addresses `len` f32s on the device.
        unsafe { s.append(self, ptr, len) }
    }
}

/// One attention node: `ks` are the plan's kernels, `args` its operands.
pub(super) fn run(
    dev: &CudaDevice,
    ks: &[Kernel],
    a: &AttentionOp,
    args: &[&Value],
    ctx: &mut Ctx,
    iteration: Option<usize>,
) -> Result<Value, CudaError> {
    let dim = args[0].cols();
    let t = Tokens {
        batch: ctx.batch,
        seq: ctx.seq,
        start: ctx.start,
        dim,
    };
    let rope_dim = a.rope_dims() as usize;
    // The reference's RoPE tables for this call's positions (bitwise its cos/sin).
    let rope_key = (rope_dim, a.rope_theta.to_bits());
    if let std::collections::hash_map::Entry::Vacant(slot) = ctx.local.ropes.entry(rope_key) {
        let r = Rope::new(rope_dim, t.start, t.seq, a.rope_theta);
        let up = |v: &Vec<f32>| {
            dev.stream
                .clone_htod(v)
                .map_err(CudaError::driver("cuMemcpyHtoD"))
        };
        slot.insert((up(&r.cos)?, up(&r.sin)?));
    }
    let (cos, sin) = &ctx.local.ropes[&rope_key];
    let tables = (buf_arg(dev, cos), buf_arg(dev, sin));
    let ins: ArgList = args.iter().map(|v| v.arg(dev, ctx)).collect();
    let layer = ctx.cache.entry(CacheKey::of(&a.cache, iteration), t.batch);
    let out = attention_host::run(dev, ks, a, ins.as_slice(), tables, t, layer)?;
    Ok(Value::Act(Arc::new(out), dim))
}
