//! [`Engine`]: what the CLI, the benchmarks and the tests drive, with the
//! same calls for every runtime: the CPU reference runtime (with or without
//! the mlir-cpu kernels) and the CUDA runtime. What is the same for every
//! engine (the default loop count, prefill-then-decode) is written here
//! once; an engine supplies one forward pass and its cache.

use crate::cpu::{pool::Buf, CpuRuntime};
use crate::cuda::{kv::Stream, CudaError, CudaRuntime};
use crate::exec::{self, Device, Forward, Logits, RunError};
use crate::kv::{Cache, KvStream};
use mythos_compiler::ir::Module;

/// A runtime that runs a module's forward pass.
pub trait Engine {
    /// A buffer of its KV cache's entries (host vectors, device buffers).
    type Stream: KvStream;
    type Error: std::error::Error + Send + Sync + 'static + From<RunError>;

    /// The module it runs.
    fn module(&self) -> &Module;

    /// A KV cache with room reserved for `positions` tokens (the CPU cache
    /// then never grows during decode; see [`Cache::with_capacity`]).
    fn new_cache(&self, positions: usize) -> Cache<Self::Stream> {
        Cache::with_capacity(positions)
    }

    /// Runs `ids` (`batch` rows of equal length) through the model; `loops`
    /// defaults to the loop's trained depth. With a cache, the tokens
    /// continue the cached sequence at its position and the cache is
    /// extended; without one, the call is a stand-alone prefill (and ACT may
    /// stop the loop early when every position has halted). With
    /// [`Logits::Last`] only each row's last position gets logits (`seq == 1`).
    fn forward_with(
        &self,
        ids: &[i64],
        batch: usize,
        loops: Option<u64>,
        cache: Option<&mut Cache<Self::Stream>>,
        logits: Logits,
    ) -> Result<Forward, Self::Error>;

    /// `cpu`, `mlir-cpu` or `cuda` (the bench report's backend).
    fn backend(&self) -> &'static str;

    /// Time per op kind, when profiling (`CpuRuntime::with_profiling`).
    fn profile(&self) -> Option<Vec<(&'static str, std::time::Duration)>> {
        None
    }

    /// The loop's trained iteration count (1 without a loop).
    fn max_iters(&self) -> u64 {
        self.module().max_iters()
    }

    /// [`Engine::forward_with`] with logits for every position.
    fn forward(
        &self,
        ids: &[i64],
        batch: usize,
        loops: Option<u64>,
        cache: Option<&mut Cache<Self::Stream>>,
    ) -> Result<Forward, Self::Error> {
        self.forward_with(ids, batch, loops, cache, Logits::All)
    }

    /// Logits for every position of `ids`, computed the way generation runs:
    /// positions `[0, k)` as one prefill, then each later position alone
    /// through the KV cache (`mythos run --decode-from K`). Shape `[B, T, V]`.
    fn prefill_then_decode(
        &self,
        ids: &[i64],
        batch: usize,
        loops: Option<u64>,
        k: usize,
    ) -> Result<Forward, Self::Error> {
        if batch == 0 || ids.len() % batch != 0 {
            return Err(RunError::BadBatch {
                len: ids.len(),
                batch,
            }
            .into());
        }
        let t = ids.len() / batch;
        if k == 0 || k > t {
            return Err(RunError::BadDecodeFrom { k, tokens: t }.into());
        }
        let mut cache = self.new_cache(t);
        let prefix: Vec<i64> = (0..batch)
            .flat_map(|r| ids[r * t..r * t + k].iter().copied())
            .collect();
        let first = self.forward(&prefix, batch, loops, Some(&mut cache))?;
        let v = first.vocab;
        let mut logits = Buf::<f32>::zeroed(batch * t * v);
        for r in 0..batch {
            logits[r * t * v..(r * t + k) * v]
                .copy_from_slice(&first.logits[r * k * v..(r + 1) * k * v]);
        }
        let mut iterations = first.iterations;
        for pos in k..t {
            let step: Vec<i64> = (0..batch).map(|r| ids[r * t + pos]).collect();
            let f = self.forward(&step, batch, loops, Some(&mut cache))?;
            for r in 0..batch {
                logits[(r * t + pos) * v..(r * t + pos + 1) * v]
                    .copy_from_slice(&f.logits[r * v..(r + 1) * v]);
            }
            iterations = f.iterations;
        }
        Ok(Forward {
            logits,
            batch,
            seq: t,
            vocab: v,
            iterations,
        })
    }
}

/// Every device of the executor is an engine: the impl, written once (a
/// blanket `impl<D: Device>` would show the crate's internal `Device` trait
/// in the public interface).
/// `$run` runs the forward pass `$call` (a closure) where the engine wants it.
macro_rules! engine_of_device {
    ($device:ty, $stream:ty, $error:ty, |$rt:ident, $call:ident| $run:expr) => {
        impl Engine for $device {
            type Stream = $stream;
            type Error = $error;

            fn module(&self) -> &Module {
                self.exec().module
            }

            fn forward_with(
                &self,
                ids: &[i64],
                batch: usize,
                loops: Option<u64>,
                cache: Option<&mut Cache<$stream>>,
                logits: Logits,
            ) -> Result<Forward, $error> {
                let ($rt, $call) = (self, || {
                    exec::forward(self, ids, batch, loops, cache, logits)
                });
                $run
            }

            fn backend(&self) -> &'static str {
                Device::backend(self)
            }

            fn profile(&self) -> Option<Vec<(&'static str, std::time::Duration)>> {
                self.exec().profile()
            }
        }
    };
}

// The CPU runs a whole forward pass on a worker of its thread pool.
engine_of_device!(CpuRuntime<'_>, Vec<f32>, RunError, |rt, call| rt
    .on_pool(call));
engine_of_device!(CudaRuntime<'_>, Stream, CudaError, |_rt, call| call());
