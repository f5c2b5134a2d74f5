//! The Mythos backend: optimized IR -> MLIR (through `melior`) -> CPU object
//! code or PTX, and the compiled artifact.
//!
//! `kernels` turns IR nodes into kernels rendered from `templates/mlir/`
//! and a [`mythos_compiler::plan::Plan`]; `mlir` parses, verifies and lowers
//! them; `cpu` builds the shared object the runtime loads, `cuda` the PTX
//! of the GPU variants (`templates/mlir/gpu/`), which `ptxas` can check
//! offline; `cache` keeps compiled artifacts (`mythos_compiler::artifact`)
//! by content.

mod attention;
pub mod cache;
pub mod compile;
pub mod cpu;
pub mod cuda;
pub mod kernels;
pub mod mlir;
mod ops;
pub mod ptxas;
pub mod render;
mod vocab;
