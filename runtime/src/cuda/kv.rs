//! The KV cache on the device: [`crate::kv::Cache`] (keyed and counted like
//! the CPU runtime's) over growing device buffers. Each entry holds, per batch row, one
//! contiguous buffer per stream (GQA: rotated keys and values; MLA: the
//! compact latent `[c_kv normalized | rotated k_rope]`, always), so the
//! attention kernels read a row's whole history through one pointer. A
//! buffer grows by reallocation (capacity doubles), so a cache costs what
//! it holds rather than `max_seq` up front.

use super::{CudaDevice, CudaError};
use crate::kv::KvStream;
use cudarc::driver::{result, CudaSlice, DevicePtr};

/// The device address of a buffer's first element.
pub(crate) fn dptr<T>(dev: &CudaDevice, s: &CudaSlice<T>) -> u64 {
    let (p, _sync) = s.device_ptr(&dev.stream);
    p
}

/// A zeroed device buffer of `len` f32s (at least one, so that every
/// descriptor has a valid address).
pub(crate) fn alloc(dev: &CudaDevice, len: usize) -> Result<CudaSlice<f32>, CudaError> {
    dev.stream
        .alloc_zeros::<f32>(len.max(1))
        .map_err(CudaError::driver("cuMemAlloc"))
}

/// Copies `n` f32s from device address `src` to `dst`, in stream order.
///
/// # Safety
/// Both ranges must lie in live device allocations.
pub(crate) unsafe fn copy_d2d(
    dev: &CudaDevice,
    dst: u64,
    src: u64,
    n: usize,
) -> Result<(), CudaError> {
    if n == 0 {
        return Ok(());
    }
    // SAFETY: the caller's contract.
    unsafe { result::memcpy_dtod_async(dst, src, n * 4, dev.stream.cu_stream()) }
        .map_err(CudaError::driver("cuMemcpyDtoDAsync"))
}

/// One growing device buffer of f32s.
#[derive(Default)]
pub struct Stream {
    buf: Option<CudaSlice<f32>>,
    /// Elements held.
    len: usize,
}

impl KvStream for Stream {
    fn len(&self) -> usize {
        self.len
    }
}

impl Stream {
    /// The address of the first element (of a one-element placeholder while empty).
    pub(crate) fn ptr(&mut self, dev: &CudaDevice) -> Result<u64, CudaError> {
        if self.buf.is_none() {
            self.buf = Some(alloc(dev, 1)?);
        }
        Ok(dptr(dev, self.buf.as_ref().expect("allocated above")))
    }

    /// Appends `n` f32s read from device address `src`.
    ///
    /// # Safety
    /// `src` must address `n` f32s of a live device allocation.
    pub(crate) unsafe fn append(
        &mut self,
        dev: &CudaDevice,
        src: u64,
        n: usize,
    ) -> Result<(), CudaError> {
        let cap = self.buf.as_ref().map_or(0, |b| b.len());
        if self.len + n > cap {
            let grown = alloc(dev, (self.len + n).max(2 * cap).max(256))?;
            if let Some(old) = &self.buf {
                // SAFETY: both buffers are live and hold `len` elements.
                unsafe { copy_d2d(dev, dptr(dev, &grown), dptr(dev, old), self.len)? };
            }
            // The old buffer is freed in stream order, after the copy.
            self.buf = Some(grown);
        }
        let at = self.ptr(dev)? + 4 * self.len as u64;
        // SAFETY: the buffer holds `len + n` elements now; the caller's contract for `src`.
        unsafe { copy_d2d(dev, at, src, n)? };
        self.len += n;
        Ok(())
    }
}

/// Every entry of one sequence batch on the device ([`crate::kv::Cache`]
/// with device buffers; the same bookkeeping as the CPU's).
pub type CudaKvCache = crate::kv::Cache<Stream>;
