//! The KV cache: one entry per prelude layer, per loop iteration of each
//! looped attention, and per coda layer (OpenMythos's `cache_key`s:
//! `prelude_0`, `recurrent_loop_3`, `coda_1`). MLA entries use the compact
//! layout: the latent `c_kv` (before its norm) and the rotated rope key once,
//! not per head; the up-projected keys/values are kept beside them so that a
//! decode step projects only its new token.

use std::collections::HashMap;

/// Keys and values of one attention layer, per batch row, appended in order.
#[derive(Clone, Debug, Default)]
pub struct LayerCache {
    /// Per batch row: `len * k_width` keys (GQA: rotated k; MLA: `[k_nope | k_rope]` per head).
    pub keys: Vec<Vec<f32>>,
    /// Per batch row: `len * v_width` values.
    pub values: Vec<Vec<f32>>,
    /// MLA only, per batch row: the compact state (`c_kv` then the rotated rope key).
    pub latent: Vec<Vec<f32>>,
    pub len: usize,
}

/// All cache entries of one sequence batch, and how many positions they hold.
#[derive(Clone, Debug, Default)]
pub struct KvCache {
    entries: HashMap<String, LayerCache>,
    /// Positions already processed (the next token's position).
    pub pos: usize,
    /// Loop iterations the cache was filled with; decode must use the same.
    pub loops: Option<u64>,
    /// Batch rows the cache holds.
    pub batch: Option<usize>,
}

impl KvCache {
    pub fn new() -> KvCache {
        KvCache::default()
    }

    pub fn entry(&mut self, key: &str, batch: usize) -> &mut LayerCache {
        self.entries
            .entry(key.to_string())
            .or_insert_with(|| LayerCache {
                keys: vec![Vec::new(); batch],
                values: vec![Vec::new(); batch],
                latent: vec![Vec::new(); batch],
                len: 0,
            })
    }

    pub fn len_entries(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held (f32), compact latent included.
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
