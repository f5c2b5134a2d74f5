//! The Mythos runtime: executes what the compiler produces.
//!
//! This crate will hold:
//! - the CPU reference runtime, which executes the graph IR directly in f32 and is the
//!   numerical oracle for every other backend;
//! - the CUDA runtime (via `cudarc`), which loads the compiler's PTX kernels and runs them;
//! - weights loading from safetensors (weights stay apart from compiled code);
//! - the KV cache and sampling used for decoding.
//!
//! None of that exists yet: it lands with the CPU-runtime issue. Until then the crate only
//! pins down the artifact format version below.

pub mod cpu;
pub mod cuda;
pub mod finite;
pub mod rng;
pub mod sample;
pub mod tensor;
pub mod weights;

/// Version of the compiled-artifact format this runtime understands.
///
/// The compiler is to write it into every artifact it produces, and the runtime is to refuse
/// an artifact carrying a different version (asking the user to recompile) rather than
/// misread it. Bump it whenever the artifact layout changes incompatibly.
pub const RUNTIME_FORMAT_VERSION: u32 = 1;
