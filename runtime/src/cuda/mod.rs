//! The CUDA runtime: runs a model's PTX kernels (the `--target cuda`
//! compile) on an NVIDIA GPU through the driver API (`cudarc`, loaded at
//! run time), with the host keeping what the CPU runtime keeps: the graph
//! walk, loop control and ACT bookkeeping, and the KV cache (on the device).
//!
//! `cudarc` panics when `libcuda` cannot be loaded, so [`probe`] checks
//! that first with `libloading`, and nothing calls into `cudarc` before a
//! successful probe: every entry point takes the [`CudaDevice`] it returns.
//!
//! - `abi.rs`: kernel parameters (memref descriptors, indices), grids, PTX bundles;
//! - `kernels.rs`: the PTX module loaded, its functions bound to plan steps, launches;
//! - `runtime.rs`: [`CudaRuntime`]: weights on the device, the graph walk, the loop;
//! - `attention.rs` and `kv.rs`: attention and its device KV cache.

pub mod abi;
mod attention;
pub mod kernels;
pub mod kv;
mod runtime;

pub use kernels::CudaKernels;
pub use kv::CudaKvCache;
pub use runtime::CudaRuntime;

use crate::cpu::RunError;
use cudarc::driver::{CudaContext, CudaStream, DriverError};
use std::sync::Arc;

/// What the CUDA runtime reports.
#[derive(Debug, thiserror::Error)]
pub enum CudaError {
    /// libcuda is not installed (no NVIDIA driver): the usual case on a
    /// machine without a GPU.
    #[error("no CUDA device found (libcuda could not be loaded)")]
    NoDriver,
    /// The driver loaded but sees no usable device.
    #[error("no CUDA device found ({0})")]
    NoDevice(String),
    /// A driver call failed.
    #[error("CUDA driver error in {call}: {error}")]
    Driver { call: &'static str, error: String },
    #[error("cannot load the CUDA kernels: {0}")]
    Load(String),
    #[error("{0}")]
    Abi(String),
    #[error(transparent)]
    Run(#[from] RunError),
}

impl CudaError {
    /// A failed driver call.
    pub(crate) fn driver(call: &'static str) -> impl FnOnce(DriverError) -> CudaError {
        move |e| CudaError::Driver {
            call,
            error: e.to_string(),
        }
    }
}

/// A GPU ready for work: its context, the one stream everything runs on,
/// and what it is.
pub struct CudaDevice {
    pub(crate) ctx: Arc<CudaContext>,
    pub(crate) stream: Arc<CudaStream>,
    /// The device's name (`NVIDIA H100 80GB HBM3`).
    pub name: String,
    /// Compute capability (major, minor).
    pub capability: (i32, i32),
    /// Global memory, bytes.
    pub memory: usize,
}

impl CudaDevice {
    /// The PTX architecture of the device: `sm_90` for compute capability 9.0.
    pub fn arch(&self) -> String {
        format!("sm_{}{}", self.capability.0, self.capability.1)
    }
}

impl std::fmt::Debug for CudaDevice {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} ({}, {} MiB)",
            self.name,
            self.arch(),
            self.memory >> 20
        )
    }
}

/// Whether libcuda can be loaded, trying the names `cudarc` tries
/// (`libcuda.so`, `libcuda.so.1`, ...). Loading it runs no driver code.
pub fn driver_present() -> bool {
    let mut names = cudarc::get_lib_name_candidates("cuda");
    names.extend(["libcuda.so.1".to_string(), "libcuda.so".to_string()]);
    names.iter().any(|n| {
        // SAFETY: libcuda's initializers are the driver's own; nothing of it
        // is called here, and the library is closed again.
        unsafe { libloading::Library::new(n) }.is_ok()
    })
}

/// The first CUDA device (ordinal 0), or why there is none. Never panics:
/// libcuda is looked for before any `cudarc` call.
pub fn probe() -> Result<CudaDevice, CudaError> {
    if !driver_present() {
        return Err(CudaError::NoDriver);
    }
    match cudarc::driver::result::init() {
        Ok(()) => {}
        Err(e) if e.0 == cudarc::driver::sys::CUresult::CUDA_ERROR_NO_DEVICE => {
            return Err(CudaError::NoDevice(format!("the driver sees none: {e}")))
        }
        Err(e) => return Err(CudaError::driver("cuInit")(e)),
    }
    let count = CudaContext::device_count().map_err(CudaError::driver("cuDeviceGetCount"))?;
    if count < 1 {
        return Err(CudaError::NoDevice("the driver sees none".into()));
    }
    let ctx = CudaContext::new(0).map_err(CudaError::driver("cuDevicePrimaryCtxRetain"))?;
    // One stream: ordering is the stream's, so no per-buffer events.
    // SAFETY: no buffer exists yet, and this runtime never uses a second stream.
    unsafe { ctx.disable_event_tracking() };
    let name = ctx.name().map_err(CudaError::driver("cuDeviceGetName"))?;
    let capability = ctx
        .compute_capability()
        .map_err(CudaError::driver("cuDeviceGetAttribute"))?;
    let memory = ctx
        .total_mem()
        .map_err(CudaError::driver("cuDeviceTotalMem"))?;
    let stream = ctx.default_stream();
    Ok(CudaDevice {
        ctx,
        stream,
        name,
        capability,
        memory,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On a machine without libcuda the probe is an error with the exact
    /// message the CLI prints; with a GPU it finds one. Never a panic.
    #[test]
    fn probe_never_panics() {
        match probe() {
            Ok(d) => assert!(d.arch().starts_with("sm_"), "{d:?}"),
            Err(e) => {
                let text = e.to_string();
                assert!(text.starts_with("no CUDA device found") || text.contains("CUDA"));
                if !driver_present() {
                    assert_eq!(text, "no CUDA device found (libcuda could not be loaded)");
                }
            }
        }
    }
}
