//! The execution plan of a compiled model: which kernel runs for which IR
//! node, in what order, on how many rows, reading which weights.
//!
//! The plan names IR nodes by graph path and node index. Graph paths are
//! stable because lowering and the passes are deterministic: `main` is the
//! top level, `main/12/body` and `main/12/header` the body and header of the
//! loop at node 12 of `main` (`ir::walk` names them). Kernels take 1-D `memref<?xf32>` buffers (ids:
//! `memref<?xi64>`) and `index` scalars through MLIR's C interface
//! (`_mlir_ciface_<symbol>`); each kernel kind documents its argument order
//! in its template (`templates/mlir/`).

use serde::{Deserialize, Serialize};

/// Every compiled node of a module, graph by graph, in execution order.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct Plan {
    pub steps: Vec<PlanStep>,
    /// Every kernel the plan calls, once, in first-use order.
    pub kernels: Vec<KernelInfo>,
}

/// One IR node and the kernels that compute it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct PlanStep {
    /// Graph path (see the module docs).
    pub graph: String,
    /// Node index in that graph.
    pub node: u32,
    /// The node's label (`prelude.0.attn`).
    pub label: String,
    /// The IR op's name.
    pub op: String,
    /// Kernel symbols, called in this order.
    pub kernels: Vec<String>,
    /// Weights the kernels read (state_dict names).
    pub weights: Vec<String>,
    pub launch: Launch,
}

/// How a step is launched and what it writes.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Launch {
    /// What the kernels iterate over: `tokens` (batch x seq rows),
    /// `batch` (the head on the last position only), `rows-of-cache`
    /// (attention: per batch row over the cached positions) or `one`.
    pub rows: String,
    /// Output elements per row.
    pub width: u64,
    /// Output buffer bytes per row (f32).
    pub bytes_per_row: u64,
    /// CUDA only: threads per block, and what one block covers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub block: Option<u32>,
}

/// A kernel argument's kind in the memref ABI, written `f32[]`, `i64[]` or
/// `index` (in the artifact's plan and in errors).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ArgKind {
    /// A buffer of f32.
    #[serde(rename = "f32[]")]
    F32,
    /// A buffer of i64 (token ids).
    #[serde(rename = "i64[]")]
    I64,
    /// One `index` scalar.
    #[serde(rename = "index")]
    Index,
}

impl ArgKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ArgKind::F32 => "f32[]",
            ArgKind::I64 => "i64[]",
            ArgKind::Index => "index",
        }
    }

    /// A buffer (either element type), not a scalar.
    pub fn is_buffer(self) -> bool {
        match self {
            ArgKind::F32 | ArgKind::I64 => true,
            ArgKind::Index => false,
        }
    }
}

impl std::fmt::Display for ArgKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A kernel in the compiled code.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct KernelInfo {
    pub symbol: String,
    /// Which template made it (`linear`, `rowwise`, ...).
    pub kind: String,
    /// Where in the spec the first node using it was written (`file:line:col`).
    pub loc: Option<String>,
    /// Argument kinds in call order.
    pub args: Vec<ArgKind>,
    /// CUDA only: how the kernel is launched.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuLaunch>,
}

/// How a CUDA kernel is launched. Kernel parameters follow MLIR's memref
/// ABI: every `f32[]`/`i64[]` argument is five parameters (allocated
/// pointer, aligned pointer, offset, size, stride; the kernels read only
/// the aligned pointer), every `index` one 64-bit integer. Shared memory
/// is static (declared in the PTX): no dynamic shared memory is needed.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct GpuLaunch {
    /// Threads per block in x, y, z.
    pub block: [u32; 3],
    /// Blocks in x, y, z.
    pub grid: [GridDim; 3],
}

impl GpuLaunch {
    /// Threads per block.
    pub fn threads(&self) -> u32 {
        self.block.iter().product()
    }
}

/// One grid dimension: a constant, or `ceil(size / per_block)` of a size
/// known at launch, named as the kernel's `index` argument that carries it
/// (`rows`; attention: `tokens`, `len`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GridDim {
    Fixed(u32),
    CeilDiv { size: String, per_block: u32 },
}

impl GridDim {
    /// One block per `per_block` rows.
    pub fn rows(per_block: u32) -> GridDim {
        GridDim::CeilDiv {
            size: "rows".into(),
            per_block,
        }
    }

    /// The number of blocks given the launch-time sizes.
    pub fn blocks(&self, size: impl Fn(&str) -> Option<u64>) -> Option<u64> {
        match self {
            GridDim::Fixed(n) => Some(u64::from(*n)),
            GridDim::CeilDiv { size: s, per_block } => {
                Some(size(s)?.div_ceil(u64::from(*per_block)))
            }
        }
    }
}
