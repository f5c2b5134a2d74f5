//! The backend driver: optimized IR -> kernels (MLIR text) -> verified MLIR
//! -> LLVM dialect -> machine code (CPU), timing every stage.

use crate::kernels::{self, Locate, LowerError};
use crate::mlir::{self, Toolchain};
use mythos_compiler::ir::Module;
use mythos_compiler::plan::Plan;
use std::time::{Duration, Instant};

/// What to compile for.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// This machine's CPU: a shared object of the kernels.
    Cpu,
    /// NVIDIA GPUs: PTX for `arch` (`sm_80`, `sm_90`).
    Cuda { arch: String },
}

#[derive(Clone, Debug)]
pub struct Options {
    pub target: Target,
    /// Lower the nodes that can be lowered and leave the rest to the
    /// reference runtime (tests of single kernel kinds); off for products.
    pub partial: bool,
    /// Keep the text of every stage (`--emit`); costs time on big models.
    pub keep_text: bool,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            target: Target::Cpu,
            partial: false,
            keep_text: false,
        }
    }
}

/// Why compiling failed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Lower(#[from] LowerError),
    #[error(transparent)]
    Mlir(#[from] mlir::Error),
}

/// What a compile produced.
#[derive(Debug, Default)]
pub struct Compiled {
    pub plan: Plan,
    /// The kernel module as generated and verified (before any pass).
    pub mlir: String,
    /// After lowering to the LLVM dialect (CUDA: the NVVM/LLVM dialect
    /// inside the `gpu.module`), with `keep_text`.
    pub llvm_dialect: Option<String>,
    /// LLVM IR (with `keep_text`).
    pub llvm_ir: Option<String>,
    /// The shared object (CPU), or the PTX bundle (CUDA, see
    /// [`crate::cuda::bundle`]: one module's PTX after a header line).
    pub code: Vec<u8>,
    /// CUDA: the PTX of each GPU module, as `(module name, PTX text)`.
    pub ptx: Vec<(String, String)>,
    /// Wall time per stage, in order.
    pub timings: Vec<(&'static str, Duration)>,
}

pub fn compile(module: &Module, locate: Locate, opts: &Options) -> Result<Compiled, Error> {
    let mut timings = Vec::new();
    let mut t = Instant::now();
    let mut lap = |name: &'static str, timings: &mut Vec<(&'static str, Duration)>| {
        timings.push((name, t.elapsed()));
        t = Instant::now();
    };
    let lowered = match &opts.target {
        Target::Cpu => kernels::lower(module, locate, opts.partial)?,
        Target::Cuda { arch } => {
            crate::cuda::check_arch(arch)?;
            kernels::lower_for(module, locate, opts.partial, &crate::cuda::CudaKernels)?
        }
    };
    lap("kernels (IR -> MLIR text)", &mut timings);
    let tc = Toolchain::new();
    let mut m = tc.parse(&lowered.mlir)?;
    lap("parse + verify", &mut timings);
    let mut out = Compiled {
        plan: lowered.plan,
        mlir: lowered.mlir,
        ..Compiled::default()
    };
    match &opts.target {
        Target::Cpu => {
            crate::cpu::lower_to_llvm(&tc, &mut m)?;
            lap("lower to LLVM dialect", &mut timings);
            if opts.keep_text {
                out.llvm_dialect = Some(m.as_operation().to_string());
                out.llvm_ir = Some(tc.llvm_ir(&m)?);
                lap("print LLVM", &mut timings);
            }
            out.code = crate::cpu::shared_object(&tc, &m)?;
            lap("LLVM codegen + link", &mut timings);
        }
        Target::Cuda { arch } => {
            crate::cuda::lower_to_nvvm(&tc, &mut m, arch)?;
            lap("lower to NVVM", &mut timings);
            if opts.keep_text {
                out.llvm_dialect = Some(m.as_operation().to_string());
                lap("print NVVM", &mut timings);
            }
            out.ptx = crate::cuda::ptx(&tc, &mut m)?;
            out.code = crate::cuda::bundle(&out.ptx);
            lap("LLVM NVPTX codegen (PTX)", &mut timings);
        }
    }
    out.timings = timings;
    Ok(out)
}
