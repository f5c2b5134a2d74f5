//! The KV cache's bookkeeping, the same for every engine: one entry per
//! prelude layer, per loop iteration of each looped attention, and per coda
//! layer (OpenMythos's `cache_key`s `prelude_0`, `recurrent_loop_3`,
//! `coda_1`), addressed by [`CacheKey`] (the attention op's KV layer, a
//! [`KvSlot`], and the loop iteration), plus the positions, loop count and
//! batch the cache was filled with. What an entry's buffers are is the
//! engine's: host vectors on the CPU ([`crate::cpu::kv`]), growing device
//! buffers on the GPU ([`crate::cuda::kv`]).

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

/// One growing buffer of an entry (per batch row and stream).
pub trait KvStream: Default {
    /// f32 elements held.
    fn len(&self) -> usize;

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

impl KvStream for Vec<f32> {
    fn len(&self) -> usize {
        Vec::len(self)
    }
}

/// Keys and values of one attention layer, per batch row, appended in order.
#[derive(Clone, Debug, Default)]
pub struct LayerCache<S> {
    /// Per batch row: `len * k_width` keys (GQA: rotated k; MLA: `[k_nope |
    /// k_rope]` per head). Empty for an MLA entry in the compact layout.
    pub keys: Vec<S>,
    /// Per batch row: `len * v_width` values. Empty for an MLA entry in the
    /// compact layout.
    pub values: Vec<S>,
    /// MLA only, per batch row: `len * (kv_rank + rope)`, the normalized
    /// `c_kv` then the rotated rope key of each token.
    pub latent: Vec<S>,
    /// Positions held.
    pub len: usize,
    /// Positions to reserve room for on the first append (see
    /// [`Cache::with_capacity`]); 0 lets the buffers grow as they fill.
    pub capacity: usize,
}

impl<S: KvStream> LayerCache<S> {
    /// Whether the entry holds per-head keys (GQA, or MLA in the reference
    /// layout). An empty entry holds none, so its first fill picks the layout.
    pub fn holds_keys(&self) -> bool {
        self.keys.iter().any(|k| !k.is_empty())
    }
}

/// All cache entries of one sequence batch, and how many positions they hold.
#[derive(Clone, Debug)]
pub struct Cache<S> {
    entries: HashMap<CacheKey, LayerCache<S>>,
    /// Positions already processed (the next token's position).
    pub pos: usize,
    /// Loop iterations the cache was filled with; decode must use the same.
    pub loops: Option<u64>,
    /// Batch rows the cache holds.
    pub batch: Option<usize>,
    /// Positions each entry reserves room for.
    capacity: usize,
}

impl<S> Default for Cache<S> {
    fn default() -> Self {
        Cache {
            entries: HashMap::new(),
            pos: 0,
            loops: None,
            batch: None,
            capacity: 0,
        }
    }
}

impl<S: KvStream> Cache<S> {
    pub fn new() -> Cache<S> {
        Cache::default()
    }

    /// Drops every entry (a gradient run's backward recomputes each loop
    /// iteration's attention from an empty cache).
    pub fn clear(&mut self) {
        self.entries.clear();
    }

    /// A cache whose entries reserve room for `positions` tokens per batch
    /// row when first filled: decoding within that many positions then
    /// never grows a buffer (generation knows prompt plus new tokens). The
    /// CPU cache reserves; the device cache grows by doubling regardless.
    pub fn with_capacity(positions: usize) -> Cache<S> {
        Cache {
            capacity: positions,
            ..Cache::default()
        }
    }

    /// The entry at `key`, created empty (for `batch` rows) on first use.
    pub fn entry(&mut self, key: CacheKey, batch: usize) -> &mut LayerCache<S> {
        let capacity = self.capacity;
        let rows = || (0..batch).map(|_| S::default()).collect();
        self.entries.entry(key).or_insert_with(|| LayerCache {
            keys: rows(),
            values: rows(),
            latent: rows(),
            len: 0,
            capacity,
        })
    }

    pub fn len_entries(&self) -> usize {
        self.entries.len()
    }

    /// Bytes held (f32; not the capacity reserved): keys, values and
    /// latent, whatever the layout holds (an MLA cache in the compact
    /// layout counts only its latent).
    pub fn bytes(&self) -> usize {
        self.entries
            .values()
            .map(|e| {
                e.keys
                    .iter()
                    .chain(&e.values)
                    .chain(&e.latent)
                    .map(KvStream::len)
                    .sum::<usize>()
                    * 4
            })
            .sum()
    }

    /// Records a call of `seq` positions with `loops` iterations on `batch` rows.
    pub(crate) fn advance(&mut self, seq: usize, loops: u64, batch: usize) {
        self.pos += seq;
        self.loops = Some(loops);
        self.batch = Some(batch);
    }
}
