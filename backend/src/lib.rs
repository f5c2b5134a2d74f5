//! The Mythos backend: optimized IR -> MLIR (through `melior`) -> CPU object
//! code or PTX, and the compiled artifact.
//!
//! `kernels` turns IR nodes into kernels rendered from `templates/mlir/`
//! and a [`mythos_compiler::plan::Plan`]; `mlir` parses, verifies and lowers
//! them; `cpu` builds the shared object the runtime loads.

pub mod compile;
pub mod cpu;
pub mod kernels;
pub mod mlir;
mod ops;
pub mod render;
