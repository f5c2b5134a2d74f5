//! The Mythos runtime: executes what the compiler produces.
//!
//! - `cpu`: the CPU reference runtime, which interprets the graph IR in f32
//!   and is the numerical oracle for every other backend, and the mlir-cpu
//!   kernels it can call instead of its own code;
//! - `cuda`: the CUDA runtime (cudarc), which loads the compiler's PTX;
//! - `engine`: the [`engine::Engine`] trait every runtime implements (what the
//!   CLI, benchmarks and tests drive), with prefill-then-decode written once;
//! - `exec`: the one executor (graph walk, loop control, header memo) over a
//!   `Device` trait the CPU and CUDA runtimes implement; `kv`: the KV cache's
//!   bookkeeping for every engine; `exec_grad`: a gradient module's run and
//!   the recurrence's backward (`loop_vjp`) over the same `Device`; `launch` and `attention_host`: kernel
//!   arguments, the `KernelHost` an engine that runs kernels supplies, and
//!   the host sequences over it (a node's kernels on the generic ABI,
//!   compiled attention), shared by the mlir-cpu kernels and CUDA;
//! - `weights` (safetensors), `sample` (decoding), `finite` (overflow checks);
//! - `data` (token rows and targets from safetensors or `.bin` files) and
//!   `loss` (next-token cross-entropy and accuracy): what `mythos eval` scores;
//!   `tasks`: seeded synthetic reasoning tasks (parity, p-hop, addition);
//!   `optim`: AdamW, the learning-rate schedule and gradient clipping of the
//!   reference's training script (for `mythos train`, not built yet); the
//!   gradient itself is `cpu::grad` (`CpuRuntime::gradient`).

mod attention_host;
pub mod cpu;
pub mod cuda;
pub mod data;
pub mod engine;
mod exec;
mod exec_grad;
pub mod finite;
pub mod kv;
pub mod launch;
pub mod loss;
pub mod optim;
pub mod rng;
pub mod sample;
pub mod tasks;
pub mod tensor;
pub mod train;
pub mod weights;

/// Version of the compiled-artifact format this runtime understands.
///
/// The compiler is to write it into every artifact it produces, and the runtime is to refuse
/// an artifact carrying a different version (asking the user to recompile) rather than
/// misread it. Bump it whenever the artifact layout changes incompatibly.
pub const RUNTIME_FORMAT_VERSION: u32 = 1;
