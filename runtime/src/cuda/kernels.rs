//! The compiled PTX on the device: each GPU module loaded with
//! `cuModuleLoadData`, each kernel of the plan resolved with
//! `cuModuleGetFunction`, plan steps bound to IR nodes by graph path (as the
//! mlir-cpu backend binds them), and launches with the plan's geometry.

use super::abi::{self, Arg, GridSizes};
use super::{CudaDevice, CudaError};
use cudarc::driver::{result, sys, CudaContext};
use mythos_compiler::ir::walk::GraphId;
use mythos_compiler::ir::{Module, NodeId};
use mythos_compiler::plan::{ArgKind, GpuLaunch, Plan};
use std::collections::HashMap;
use std::ffi::{c_void, CString};
use std::sync::Arc;

/// A kernel entry point with its declared arguments and launch.
#[derive(Clone)]
pub struct Kernel {
    pub symbol: String,
    func: sys::CUfunction,
    args: Vec<ArgKind>,
    launch: GpuLaunch,
}

// SAFETY: a CUfunction is a handle into a module that lives as long as the
// `CudaKernels` holding it; the driver API may use it from any thread.
unsafe impl Send for Kernel {}
unsafe impl Sync for Kernel {}

/// The loaded PTX modules and, per plan step, its kernels.
pub struct CudaKernels {
    ctx: Arc<CudaContext>,
    modules: Vec<sys::CUmodule>,
    /// (graph path, node index) -> kernels, in call order.
    steps: HashMap<(String, u32), Vec<Kernel>>,
}

// SAFETY: module handles are only unloaded in `drop`, with the context bound.
unsafe impl Send for CudaKernels {}
unsafe impl Sync for CudaKernels {}

impl CudaKernels {
    /// Loads the PTX modules (`(name, text)`, as the artifact's `MODULE.ptx`
    /// blobs or [`abi::unbundle`] of a compile's `code`) and resolves every
    /// kernel of `plan`, which must carry GPU launches (`--target cuda`).
    pub fn load(
        dev: &CudaDevice,
        ptx: &[(String, String)],
        plan: &Plan,
    ) -> Result<CudaKernels, CudaError> {
        dev.ctx
            .bind_to_thread()
            .map_err(CudaError::driver("cuCtxSetCurrent"))?;
        let mut kernels = CudaKernels {
            ctx: dev.ctx.clone(),
            modules: Vec::new(),
            steps: HashMap::new(),
        };
        for (name, text) in ptx {
            let c = CString::new(text.as_str())
                .map_err(|_| CudaError::Load(format!("the PTX of `{name}` holds a NUL byte")))?;
            // SAFETY: `c` is a NUL-terminated PTX text; the driver JIT-compiles it.
            let m =
                unsafe { result::module::load_data(c.as_ptr() as *const c_void) }.map_err(|e| {
                    CudaError::Load(format!(
                        "the driver rejected the PTX of `{name}`: {e} (compiled for another \
                         architecture or by a newer PTX ISA than this driver supports?)"
                    ))
                })?;
            kernels.modules.push(m);
        }
        let mut by_symbol: HashMap<&str, Kernel> = HashMap::new();
        for k in &plan.kernels {
            let launch = k.gpu.clone().ok_or_else(|| {
                CudaError::Load(format!(
                    "kernel `{}` has no GPU launch: the artifact was not compiled for CUDA",
                    k.symbol
                ))
            })?;
            let name = CString::new(k.symbol.as_str()).expect("kernel symbols have no NUL");
            let func = kernels
                .modules
                .iter()
                // SAFETY: a loaded module and a NUL-terminated name.
                .find_map(|&m| unsafe { result::module::get_function(m, name.clone()) }.ok())
                .ok_or_else(|| {
                    CudaError::Load(format!(
                        "the PTX lacks kernel `{}`; the artifact is corrupt or stale, \
                         recompile it (`mythos compile --target cuda`)",
                        k.symbol
                    ))
                })?;
            by_symbol.insert(
                &k.symbol,
                Kernel {
                    symbol: k.symbol.clone(),
                    func,
                    args: k.args.clone(),
                    launch,
                },
            );
        }
        for s in &plan.steps {
            let ks = s
                .kernels
                .iter()
                .map(|k| {
                    by_symbol.get(k.as_str()).cloned().ok_or_else(|| {
                        CudaError::Load(format!("the plan names an unknown kernel `{k}`"))
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            kernels.steps.insert((s.graph.clone(), s.node), ks);
        }
        Ok(kernels)
    }

    /// The kernels of every planned node of `module` (the module the plan
    /// was made from), keyed by graph and node.
    pub(crate) fn bind(&self, module: &Module) -> Result<Bound, CudaError> {
        let graphs = module.graphs();
        let mut out = HashMap::new();
        for ((path, node), ks) in &self.steps {
            let at = graphs.node_at(path, *node).ok_or_else(|| {
                CudaError::Load(format!(
                    "the plan names {path} node {node}, which this model does not have; \
                     the artifact is stale, recompile it"
                ))
            })?;
            out.insert(at, ks.clone());
        }
        Ok(out)
    }

    /// Planned steps.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }
}

impl Drop for CudaKernels {
    fn drop(&mut self) {
        if self.ctx.bind_to_thread().is_ok() {
            for &m in &self.modules {
                // SAFETY: loaded by `load`, unloaded once; no launch is pending
                // that the caller still waits for (the stream is in order).
                let _ = unsafe { result::module::unload(m) };
            }
        }
    }
}

/// Kernels by (graph, node).
pub(crate) type Bound = HashMap<(GraphId, NodeId), Vec<Kernel>>;

/// Launches `k` on `dev`'s stream with `args` (checked against the kernel's
/// declared kinds) and the grid computed from `sizes`.
///
/// # Safety
/// Every buffer in `args` must be a live device allocation of at least its
/// `len` elements, and outputs large enough for what the kernel writes,
/// until the stream has run the kernel.
pub(crate) unsafe fn launch(
    dev: &CudaDevice,
    k: &Kernel,
    args: &[Arg],
    sizes: GridSizes,
) -> Result<(), CudaError> {
    abi::check_kinds(&k.symbol, &k.args, args)?;
    let grid = abi::grid(&k.symbol, &k.launch, sizes)?;
    let [bx, by, bz] = k.launch.block;
    let mut words = abi::pack(args);
    let mut params: Vec<*mut c_void> = words
        .iter_mut()
        .map(|w| w as *mut u64 as *mut c_void)
        .collect();
    // SAFETY: `params` points at one word per kernel parameter (the ABI in
    // `abi.rs`); the driver copies them before returning.
    unsafe {
        result::launch_kernel(
            k.func,
            grid,
            (bx, by, bz),
            0,
            dev.stream.cu_stream(),
            &mut params,
        )
    }
    .map_err(|e| CudaError::Driver {
        call: "cuLaunchKernel",
        error: format!("{} (kernel `{}`, grid {grid:?})", e, k.symbol),
    })
}
