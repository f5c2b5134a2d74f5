//! The CPU runtime's KV cache: [`crate::kv::Cache`] with host vectors.
//!
//! MLA entries always hold the compact per-token state (`latent`): the latent
//! `c_kv` *after* its RMSNorm (`kv_norm`), then the rotated rope key, once per
//! token rather than per head. Keeping `c_kv` normalized (same size as the raw
//! one) spares the absorbed decode and the compact expansion from
//! re-normalizing the whole cache on every step; every consumer of `c_kv`
//! reads it normalized, so the numbers are unchanged. Two layouts:
//!
//! - reference: `latent` plus the up-projected per-head keys/values, so that
//!   a non-absorbed decode step up-projects only its new token;
//! - compact (`MlaOptions::compact`): `latent` only; `keys`/`values` stay empty.
//!
//! An entry keeps the layout it was first filled with (see
//! [`crate::kv::LayerCache::holds_keys`]).

pub use crate::kv::CacheKey;

/// All entries of one sequence batch, in host memory.
pub type KvCache = crate::kv::Cache<Vec<f32>>;

/// One attention layer's keys and values, in host memory.
pub type LayerCache = crate::kv::LayerCache<Vec<f32>>;

impl LayerCache {
    /// Appends `data` (positions of `width` floats) to batch row `row` of
    /// the MLA latent (see [`append_reserved`]).
    pub fn append_latent(&mut self, row: usize, data: &[f32], width: usize) {
        append_reserved(&mut self.latent[row], data, self.capacity * width);
    }

    /// Appends batch row `row`'s `seq` new positions of `keys` (rows of
    /// `kw`) and `values` (rows of `vw`), both laid out `[batch, seq, width]`.
    pub fn append_kv(
        &mut self,
        row: usize,
        seq: usize,
        (keys, kw): (&[f32], usize),
        (values, vw): (&[f32], usize),
    ) {
        let (k, v) = (
            &keys[row * seq * kw..(row + 1) * seq * kw],
            &values[row * seq * vw..(row + 1) * seq * vw],
        );
        append_reserved(&mut self.keys[row], k, self.capacity * kw);
        append_reserved(&mut self.values[row], v, self.capacity * vw);
    }
}

/// Appends `data` to `buf`. The first append reserves room for `reserve`
/// floats (the cache's capacity in positions times the width; see
/// [`KvCache::with_capacity`]), so such a cache never reallocates while it
/// stays within it.
pub(crate) fn append_reserved(buf: &mut Vec<f32>, data: &[f32], reserve: usize) {
    if buf.capacity() < buf.len() + data.len() {
        let want = reserve.max(buf.len() + data.len());
        buf.reserve(want - buf.len());
    }
    buf.extend_from_slice(data);
}
