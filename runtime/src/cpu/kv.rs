//! The KV cache: one entry per prelude layer, per loop iteration of each
//! looped attention, and per coda layer (OpenMythos's `cache_key`s
//! `prelude_0`, `recurrent_loop_3`, `coda_1`), addressed by [`CacheKey`]:
//! the attention op's KV layer ([`KvSlot`]) and the loop iteration.
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
//! [`LayerCache::holds_keys`]).

use mythos_compiler::ir::KvSlot;
use std::collections::HashMap;

/// Where an entry lives: an attention op's KV layer and, for an op inside
/// the loop, the iteration (each iteration keeps its own keys and values).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct CacheKey {
    pub layer: u32,
    pub iteration: Option<usize>,
}

impl CacheKey {
    /// The entry of `slot` at `iteration` (`None` outside the loop).
    pub fn of(slot: &KvSlot, iteration: Option<usize>) -> CacheKey {
        CacheKey {
            layer: slot.layer,
            iteration,
        }
    }
}

/// Keys and values of one attention layer, per batch row, appended in order.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    /// Per batch row: `len * k_width` keys (GQA: rotated k; MLA: `[k_nope | k_rope]`
    /// per head). Empty for an MLA entry in the compact layout.
    pub keys: Vec<Vec<f32>>,
    /// Per batch row: `len * v_width` values. Empty for an MLA entry in the compact layout.
    pub values: Vec<Vec<f32>>,
    /// MLA only, per batch row: `len * (kv_rank + rope)`, the normalized
    /// `c_kv` then the rotated rope key of each token.
    pub latent: Vec<Vec<f32>>,
    /// Positions held.
    pub len: usize,
    /// Positions to reserve room for on the first append (see
    /// [`KvCache::with_capacity`]); 0 lets the buffers grow as they fill.
    pub capacity: usize,
}

impl LayerCache {
    /// Whether the entry holds per-head keys (GQA, or MLA in the reference
    /// layout). An empty entry holds none, so its first fill picks the layout.
    pub fn holds_keys(&self) -> bool {
        self.keys.iter().any(|k| !k.is_empty())
    }

    /// Appends `data` (positions of `width` floats) to batch row `row` of
    /// the MLA latent (see [`append_reserved`]).
    pub fn append_latent(&mut self, row: usize, data: &[f32], width: usize) {
        append_reserved(&mut self.latent[row], data, width, self.capacity);
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
        append_reserved(&mut self.keys[row], k, kw, self.capacity);
        append_reserved(&mut self.values[row], v, vw, self.capacity);
    }
}

/// Appends `data` (positions of `width` floats) to `buf`. The first append
/// reserves room for `capacity` positions (see [`KvCache::with_capacity`]),
/// so such a cache never reallocates while it stays within it.
fn append_reserved(buf: &mut Vec<f32>, data: &[f32], width: usize, capacity: usize) {
    if buf.capacity() < buf.len() + data.len() {
        let want = (capacity * width).max(buf.len() + data.len());
        buf.reserve(want - buf.len());
    }
    buf.extend_from_slice(data);
}

/// All cache entries of one sequence batch, and how many positions they hold.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    entries: HashMap<CacheKey, LayerCache>,
    /// Positions already processed (the next token's position).
    pub pos: usize,
    /// Loop iterations the cache was filled with; decode must use the same.
    pub loops: Option<u64>,
    /// Batch rows the cache holds.
    pub batch: Option<usize>,
    /// Positions each entry reserves room for.
    capacity: usize,
}

impl KvCache {
    pub fn new() -> KvCache {
        KvCache::default()
    }

    /// A cache whose entries reserve room for `positions` tokens per batch
    /// row when first filled: decoding within that many positions then
    /// never grows a buffer (generation knows prompt plus new tokens).
    pub fn with_capacity(positions: usize) -> KvCache {
        KvCache {
            capacity: positions,
            ..KvCache::default()
        }
    }

    /// The entry at `key`, created empty (for `batch` rows) on first use.
    pub fn entry(&mut self, key: CacheKey, batch: usize) -> &mut LayerCache {
        let capacity = self.capacity;
        self.entries.entry(key).or_insert_with(|| LayerCache {
            keys: vec![Vec::new(); batch],
            values: vec![Vec::new(); batch],
            latent: vec![Vec::new(); batch],
            len: 0,
            capacity,
        })
    }

    pub fn len_entries(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held (f32): keys, values and latent, whatever the layout holds
    /// (an MLA cache in the compact layout counts only its latent).
    pub fn bytes(&self) -> usize {
        self.entries
            .values()
            .map(|e| {
                let n: usize = e
                    .keys
                    .iter()
                    .chain(&e.values)
                    .chain(&e.latent)
                    .map(Vec::len)
                    .sum();
                n * 4
            })
            .sum()
    }
}
