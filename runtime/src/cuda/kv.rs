//! The KV cache on the device, keyed like the CPU runtime's
//! ([`crate::cpu::kv`]): one entry per prelude layer, loop iteration of each
//! looped attention, and coda layer. Each entry holds, per batch row, one
//! contiguous buffer per stream (GQA: rotated keys and values; MLA: the
//! compact latent `[c_kv normalized | rotated k_rope]`, always), so the
//! attention kernels read a row's whole history through one pointer. A
//! buffer grows by reallocation (capacity doubles), so a cache costs what
//! it holds rather than `max_seq` up front.

use super::{CudaDevice, CudaError};
use crate::cpu::kv::CacheKey;
use cudarc::driver::{result, CudaSlice, DevicePtr};
use std::collections::HashMap;

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

impl Stream {
    /// Elements held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

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

/// One attention layer's cache: per batch row, keys and values (GQA) or
/// the latent (MLA), and the positions held.
#[derive(Default)]
pub struct LayerCache {
    pub keys: Vec<Stream>,
    pub values: Vec<Stream>,
    pub latent: Vec<Stream>,
    pub len: usize,
}

/// Every entry of one sequence batch on the device, and how many positions
/// they hold (the same bookkeeping as [`crate::cpu::kv::KvCache`]).
#[derive(Default)]
pub struct CudaKvCache {
    entries: HashMap<CacheKey, LayerCache>,
    /// Positions already processed (the next token's position).
    pub pos: usize,
    /// Loop iterations the cache was filled with; decode must use the same.
    pub loops: Option<u64>,
    /// Batch rows the cache holds.
    pub batch: Option<usize>,
}

impl CudaKvCache {
    pub fn new() -> CudaKvCache {
        CudaKvCache::default()
    }

    pub(crate) fn entry(&mut self, key: CacheKey, batch: usize) -> &mut LayerCache {
        self.entries.entry(key).or_insert_with(|| LayerCache {
            keys: (0..batch).map(|_| Stream::default()).collect(),
            values: (0..batch).map(|_| Stream::default()).collect(),
            latent: (0..batch).map(|_| Stream::default()).collect(),
            len: 0,
        })
    }

    pub fn len_entries(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held (not the capacity reserved).
    pub fn bytes(&self) -> usize {
        self.entries
            .values()
            .map(|e| {
                e.keys
                    .iter()
                    .chain(&e.values)
                    .chain(&e.latent)
                    .map(Stream::len)
                    .sum::<usize>()
                    * 4
            })
            .sum()
    }
}
