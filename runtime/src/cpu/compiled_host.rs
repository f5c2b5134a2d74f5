//! The compiled CPU kernels (the `mlir-cpu` backend) as a [`KernelHost`]:
//! host buffers, calls through memref descriptors. Through it a node runs
//! its kernels on the generic ABI ([`launch::generic`]) and attention runs
//! the shared host sequence ([`crate::attention_host`]) with the cache
//! entries of the caller's [`KvCache`](super::kv::KvCache) (the reference
//! runtime's, by `(layer, iteration)`) and the reference's own RoPE tables.

use super::compiled::{call_args, KernelFn};
use super::kernels::Rope;
use super::kv::append_reserved;
use super::pool::Buf;
use super::{Ctx, Value};
use crate::attention_host;
use crate::kv::CacheKey;
use crate::launch::{self, Arg, ArgList, GridSizes, KernelHost, Output, Tokens};
use mythos_compiler::ir::AttentionOp;
use std::convert::Infallible;

/// The compiled CPU kernels as a [`KernelHost`].
struct Host;

impl KernelHost for Host {
    type Buf = Buf<f32>;
    type Kernel = KernelFn;
    type Stream = Vec<f32>;
    type Error = Infallible;

    fn alloc(&self, len: usize) -> Result<Buf<f32>, Infallible> {
        Ok(Buf::zeroed(len))
    }

    fn arg(&self, b: &mut Buf<f32>) -> Arg {
        Arg::host_mut(b)
    }

    fn stream_arg(&self, s: &mut Vec<f32>) -> Result<Arg, Infallible> {
        Ok(Arg::host(s))
    }

    fn scores(&self, len: usize) -> Result<Buf<f32>, Infallible> {
        self.alloc(len)
    }

    unsafe fn last_rows(&self, x: Arg, t: Tokens) -> Result<Buf<f32>, Infallible> {
        let (ptr, len) = x.buffer();
        // SAFETY: the caller's contract: `x` addresses `len` live f32s.
        let x = unsafe { std::slice::from_raw_parts(ptr as *const f32, len) };
        Ok(super::last_rows(x, t.dim, t.batch, t.seq))
    }

    unsafe fn launch(&self, k: &KernelFn, args: &[Arg], _: GridSizes) -> Result<(), Infallible> {
        // SAFETY: the caller's contract.
        unsafe { call_args(*k, args) };
        Ok(())
    }

    unsafe fn append(&self, s: &mut Vec<f32>, src: Arg, reserve: usize) -> Result<(), Infallible> {
        let (ptr, len) = src.buffer();
        // SAFETY: the caller's contract: `src` addresses `len` live f32s of
        // a buffer the projection kernel wrote, not the cache's.
        let data = unsafe { std::slice::from_raw_parts(ptr as *const f32, len) };
        append_reserved(s, data, reserve);
        Ok(())
    }
}

/// One attention node: `fns` are the plan's kernels for it, `args` its
/// operands, `rope` the reference's RoPE tables (from position 0), cut to
/// this call's positions so that the rotations use bitwise its cos/sin.
pub(super) fn run<'w>(
    fns: &[KernelFn],
    a: &AttentionOp,
    args: &[&Value<'w>],
    ctx: &mut Ctx,
    iteration: Option<usize>,
    rope: &Rope,
) -> Value<'w> {
    let dim = args[0].act().1;
    let t = Tokens {
        batch: ctx.batch,
        seq: ctx.seq,
        start: ctx.start,
        dim,
    };
    let at = (t.start - rope.start) * rope.half..(t.start - rope.start + t.seq) * rope.half;
    let tables = (Arg::host(&rope.cos[at.clone()]), Arg::host(&rope.sin[at]));
    let ins: ArgList = args.iter().map(|v| v.arg(ctx.local.ids)).collect();
    let layer = ctx.cache.entry(CacheKey::of(&a.cache, iteration), t.batch);
    let Ok(out) = attention_host::run(&Host, fns, a, ins.as_slice(), tables, t, layer);
    Value::Act(out, dim)
}

/// A node through its kernels with the generic ABI: operands in IR order,
/// the output, the row count.
pub(super) fn generic<'w>(
    fns: &[KernelFn],
    out: Output,
    args: &[&Value<'w>],
    ctx: &Ctx,
) -> Value<'w> {
    let ins: ArgList = args.iter().map(|v| v.arg(ctx.local.ids)).collect();
    // SAFETY: the plan's kernels for this node take exactly these arguments
    // (the generic ABI); the operands outlive the call.
    let Ok(buf) = unsafe { launch::generic(&Host, fns, ins, out, (ctx.batch, ctx.seq)) };
    if out.act {
        Value::Act(buf, out.width)
    } else {
        Value::Vector(buf)
    }
}
