//! The CPU target: kernels lowered to the LLVM dialect, compiled to machine
//! code for this machine by LLVM, and linked into a shared object that the
//! runtime loads (`mythos run --backend mlir-cpu`).

use crate::mlir::{link_shared, Error, Toolchain};
use crate::vocab::{KernelTarget, Request, Variant};
use melior::ir::Module;

/// The CPU kernels: every kind's own template (`templates/mlir/<kind>.mlir.tera`),
/// one `func.func` each, in a plain module.
pub(crate) struct CpuKernels;

impl KernelTarget for CpuKernels {
    fn name(&self) -> &str {
        "CPU"
    }

    fn variant(&self, req: &Request) -> Option<Variant> {
        Some(Variant {
            template: req.template().to_string(),
            extra: Default::default(),
            gpu: None,
        })
    }

    fn module(&self, kernels: &[String]) -> String {
        let mut mlir = String::from("module {\n");
        for t in kernels {
            mlir.push_str(t.trim_end());
            mlir.push_str("\n\n");
        }
        mlir.push_str("}\n");
        mlir
    }
}

/// Kernel module (scf/memref/arith/math on 1-D memrefs) -> LLVM dialect.
pub const PIPELINE: &str = "builtin.module(\
    lower-affine,\
    convert-scf-to-cf,\
    convert-math-to-llvm,\
    expand-strided-metadata,\
    finalize-memref-to-llvm,\
    convert-arith-to-llvm,\
    convert-cf-to-llvm,\
    convert-func-to-llvm,\
    reconcile-unrealized-casts)";

/// LLVM optimization level for the CPU kernels.
pub const LLVM_OPT: usize = 3;

/// Lowers a verified kernel module to the LLVM dialect in place.
pub fn lower_to_llvm(tc: &Toolchain, module: &mut Module) -> Result<(), Error> {
    tc.run_pipeline(module, PIPELINE)
}

/// Machine code of a module already in the LLVM dialect, as a shared object.
pub fn shared_object(tc: &Toolchain, module: &Module) -> Result<Vec<u8>, Error> {
    let object = tc.object_code(module, LLVM_OPT)?;
    link_shared(&object)
}
