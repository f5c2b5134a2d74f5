//! Cost analysis computed from the IR (so it stays true as the language
//! grows): parameters (total, active per token, by component), FLOPs per token
//! for prefill and decode, weight memory, KV cache per token (reference and
//! compact layout), and the decode bandwidth ceiling (`mythos inspect`).
//!
//! Conventions (docs/inspect.md): FLOPs count matrix products at 2 per
//! multiply-add, attention scores and values included; elementwise work
//! (norms, residual adds, LTI, ACT accumulation) is not counted. Causal
//! attention at prefill averages `(S+1)/2` keys per token; a decode step
//! attends to `S` keys. The loop body counts `loops` times (ACT may stop
//! earlier; this is the upper bound). KV cache: one entry per prelude layer,
//! per loop iteration and per coda layer.

use crate::ir::{CostInputs, Graph, KvLayout, Module, Op, Weight};
use serde::Serialize;
use std::collections::BTreeMap;

/// Storage type for weights and the KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum StorageType {
    F32,
    Bf16,
    Fp8,
}

impl StorageType {
    pub fn bytes(self) -> u128 {
        match self {
            StorageType::F32 => 4,
            StorageType::Bf16 => 2,
            StorageType::Fp8 => 1,
        }
    }

    pub fn parse(s: &str) -> Option<StorageType> {
        match s {
            "f32" => Some(StorageType::F32),
            "bf16" => Some(StorageType::Bf16),
            "fp8" => Some(StorageType::Fp8),
            _ => None,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub struct Options {
    /// Sequence length for prefill, context length for decode.
    pub seq: u64,
    /// Loop iterations (default: the model's max).
    pub loops: Option<u64>,
    pub dtype: StorageType,
    /// Memory bandwidth in bytes/s for the decode ceiling.
    pub bandwidth: f64,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            seq: 2048,
            loops: None,
            dtype: StorageType::Bf16,
            bandwidth: 3.35e12,
        }
    }
}

/// The `mythos inspect --json` document (schema `mythos.inspect/1`, docs/inspect.md).
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub model: String,
    pub seq: u64,
    pub loops: u64,
    pub max_loops: u64,
    pub dtype: StorageType,
    pub params: Params,
    pub flops: Flops,
    pub weights: WeightMemory,
    pub kv_cache: KvCache,
    pub decode: Decode,
    /// Kernels and bytes moved before and after the passes (set by the caller
    /// that ran them, see [`kernels`]).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub optimization: Option<Optimization>,
}

/// `-O0` against the optimized module.
#[derive(Clone, Debug, Serialize)]
pub struct Optimization {
    pub level: u8,
    pub passes: Vec<String>,
    pub before: Kernels,
    pub after: Kernels,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Params {
    pub total: u64,
    pub active_per_token: u64,
    /// Non-parameter state (`router_bias`), not in `total`.
    pub buffers: u64,
    pub by_component: BTreeMap<String, u64>,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct Flops {
    pub prefill_per_token: f64,
    pub decode_per_token: f64,
    /// `prefill_per_token * seq`.
    pub prefill_total: f64,
    pub by_component: BTreeMap<String, ComponentFlops>,
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ComponentFlops {
    pub prefill_per_token: f64,
    pub decode_per_token: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct WeightMemory {
    /// Parameters and buffers at `dtype`.
    pub bytes: u64,
    pub bytes_f32: u64,
    pub bytes_bf16: u64,
    pub bytes_fp8: u64,
}

#[derive(Clone, Debug, Default, Serialize)]
pub struct KvCache {
    /// Cache entries (prelude layers + loops x looped attentions + coda layers).
    pub entries: u64,
    /// Reference layout (OpenMythos: MLA rope key stored per head), at `dtype`.
    pub bytes_per_token: u64,
    /// Compact layout (MLA rope key stored once), at `dtype`.
    pub compact_bytes_per_token: u64,
    /// Compact layout for a whole `seq`-token sequence.
    pub compact_bytes_at_seq: u64,
}

#[derive(Clone, Debug, Serialize)]
pub struct Decode {
    /// Weight bytes read for one token at batch 1 (loop weights once per
    /// iteration, only the active experts, one embedding row).
    pub weight_bytes_per_token: u64,
    /// KV cache bytes read for one token at context `seq` (compact layout).
    pub kv_bytes_per_token: u64,
    pub bandwidth: f64,
    /// `bandwidth / (weight + kv bytes)`: the memory-bound ceiling at batch 1.
    pub tokens_per_s_ceiling: f64,
}

pub fn analyze(module: &Module, opts: &Options) -> Report {
    let max_loops = max_iters(&module.graph).unwrap_or(1);
    let loops = opts.loops.unwrap_or(max_loops);
    let mut params = Params::default();
    let mut all_numel: u128 = 0;
    for w in &module.weights {
        let n = w.numel();
        all_numel += n;
        if w.buffer {
            params.buffers += sat(n);
            continue;
        }
        params.total += sat(n);
        params.active_per_token += sat(active_numel(w));
        *params.by_component.entry(w.component.clone()).or_default() += sat(n);
    }
    let mut walk = Walk {
        module,
        seq: opts.seq as f64,
        flops: Flops::default(),
        kv: KvCache::default(),
        kv_ref_elems: 0,
        kv_compact_elems: 0,
        weight_read: 0,
    };
    walk.graph(&module.graph, 1, loops);
    let mut flops = walk.flops;
    flops.prefill_total = flops.prefill_per_token * opts.seq as f64;
    let dt = opts.dtype.bytes();
    let mut kv = walk.kv;
    kv.bytes_per_token = sat(walk.kv_ref_elems * dt);
    kv.compact_bytes_per_token = sat(walk.kv_compact_elems * dt);
    kv.compact_bytes_at_seq = sat(walk.kv_compact_elems * dt * opts.seq as u128);
    let weight_bytes = sat(walk.weight_read * dt);
    let kv_read = kv.compact_bytes_at_seq;
    let total_read = weight_bytes as f64 + kv_read as f64;
    Report {
        schema: "mythos.inspect/1",
        model: module.name.clone(),
        seq: opts.seq,
        loops,
        max_loops,
        dtype: opts.dtype,
        params,
        flops,
        weights: WeightMemory {
            bytes: sat(all_numel * dt),
            bytes_f32: sat(all_numel * 4),
            bytes_bf16: sat(all_numel * 2),
            bytes_fp8: sat(all_numel),
        },
        kv_cache: kv,
        decode: Decode {
            weight_bytes_per_token: weight_bytes,
            kv_bytes_per_token: kv_read,
            bandwidth: opts.bandwidth,
            tokens_per_s_ceiling: if total_read > 0.0 {
                opts.bandwidth / total_read
            } else {
                0.0
            },
        },
        optimization: None,
    }
}

fn sat(v: u128) -> u64 {
    u64::try_from(v).unwrap_or(u64::MAX)
}

/// Elements of a weight used per token: routed experts count `active / count`.
fn active_numel(w: &Weight) -> u128 {
    match w.stacked {
        Some(s) => w.numel() / s.count as u128 * s.active as u128,
        None => w.numel(),
    }
}

/// The `max_iters` of the graph's loop.
fn max_iters(g: &Graph) -> Option<u64> {
    g.nodes().find_map(|n| match g.op(n) {
        Op::Loop(r) => Some(r.max_iters),
        _ => None,
    })
}

struct Walk<'m> {
    module: &'m Module,
    seq: f64,
    flops: Flops,
    kv: KvCache,
    kv_ref_elems: u128,
    kv_compact_elems: u128,
    /// Weight elements read per decoded token.
    weight_read: u128,
}

impl Walk<'_> {
    fn graph(&mut self, g: &Graph, times: u64, loops: u64) {
        for n in g.nodes() {
            let op = g.op(n);
            if let Op::Loop(region) = op {
                self.graph(&region.body, times * loops, loops);
                continue;
            }
            let weights: Vec<&Weight> = g
                .operands(n)
                .into_iter()
                .filter_map(|o| match g.op(o) {
                    Op::Weight(id) => Some(self.module.weight(*id)),
                    _ => None,
                })
                .collect();
            let component = match op {
                Op::Head(_) => "head".to_string(),
                _ => weights
                    .first()
                    .map_or_else(|| "other".to_string(), |w| w.component.clone()),
            };
            let t = times as f64;
            let cost = op.flops(&CostInputs {
                dim: self.module.dim,
                vocab: self.module.vocab,
                weights: &weights,
            });
            // Causal prefill averages `(S+1)/2` keys per token; decode attends to `S`.
            let prefill = cost.per_token + cost.per_key * (self.seq + 1.0) / 2.0;
            let decode = cost.per_token + cost.per_key * self.seq;
            if let Op::Attention(a) = op {
                self.kv.entries += times;
                self.kv_ref_elems += a.kv_elems_in(KvLayout::Reference) as u128 * times as u128;
                self.kv_compact_elems += a.kv_elems_in(KvLayout::Compact) as u128 * times as u128;
            }
            // Bytes read per decoded token.
            let read: u128 = match op {
                Op::Embedding => self.module.dim as u128,
                _ => weights.iter().map(|w| active_numel(w)).sum(),
            };
            self.weight_read += read * times as u128;
            if prefill > 0.0 || decode > 0.0 {
                let c = self.flops.by_component.entry(component).or_default();
                c.prefill_per_token += prefill * t;
                c.decode_per_token += decode * t;
                self.flops.prefill_per_token += prefill * t;
                self.flops.decode_per_token += decode * t;
            }
        }
    }
}

/// Kernels and memory traffic of a (possibly optimized) module: what
/// `mythos inspect` compares between `-O0` and the chosen level.
///
/// A kernel is a compute node of the graph (a fused group counts once): the
/// unit a backend lowers to one function. Bytes moved estimate the traffic
/// through memory: every kernel reads its operands (activations of the
/// tokens it runs on, weights, vectors) and writes its result; values inside
/// a fused group or folded into a composite's prologue or epilogue never
/// touch memory. Attention also reads its KV cache: at prefill what the new
/// tokens wrote, at decode the whole cache at context `seq` (MLA without
/// absorption reads the keys and values expanded per head). Everything is
/// at the storage type of the options; batch 1.
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize)]
pub struct Kernels {
    /// Kernels of a prefill (loop bodies and headers counted `loops` times).
    pub per_forward: u64,
    /// Kernels of one decode step (loop headers are per-iteration constants,
    /// computed once per index and reused: not counted).
    pub per_decode_step: u64,
    pub bytes_per_forward: u64,
    pub bytes_per_decode_step: u64,
    /// KV cache stored per token, all entries (the layout each layer uses).
    pub kv_bytes_per_token: u64,
}

pub fn kernels(module: &Module, opts: &Options) -> Kernels {
    let loops = opts
        .loops
        .unwrap_or_else(|| max_iters(&module.graph).unwrap_or(1));
    let mut k = Kernels::default();
    kernel_walk(module, &module.graph, 1, loops, opts, false, &mut k);
    k
}

fn kernel_walk(
    module: &Module,
    g: &Graph,
    times: u64,
    loops: u64,
    opts: &Options,
    header: bool,
    k: &mut Kernels,
) {
    let dt = opts.dtype.bytes();
    let seq = opts.seq as u128;
    for n in g.nodes() {
        let op = g.op(n);
        if let Op::Loop(region) = op {
            kernel_walk(module, &region.header, times * loops, loops, opts, true, k);
            kernel_walk(module, &region.body, times * loops, loops, opts, false, k);
            continue;
        }
        if !op.is_compute() {
            continue;
        }
        // Elements moved for `tokens` tokens.
        let moved = |tokens: u128, decode: bool| -> u128 {
            let value = |id: crate::ir::NodeId| -> u128 {
                let ty = g.ty(id);
                let per: u128 = ty
                    .shape
                    .iter()
                    .map(|d| match d {
                        crate::ir::Dim::Const(c) => *c as u128,
                        crate::ir::Dim::Seq => tokens,
                        crate::ir::Dim::Batch => 1,
                        crate::ir::Dim::Iters => module.max_iters() as u128,
                    })
                    .product();
                if let Op::Weight(w) = g.op(id) {
                    let w = module.weight(*w);
                    if let Some(s) = w.stacked {
                        // Experts touched: the active ones per token, at most all.
                        let experts = (s.active as u128 * tokens).min(s.count as u128);
                        return w.numel() / s.count as u128 * experts;
                    }
                    return w.numel();
                }
                per
            };
            let operands: u128 = g.operands(n).into_iter().map(value).sum();
            let kv = match op {
                Op::Attention(a) => {
                    let stored = a.kv_elems_per_token() as u128;
                    if !decode {
                        2 * stored * tokens
                    } else {
                        let read = a.kv_elems_read_per_key() as u128;
                        read * seq + stored
                    }
                }
                _ => 0,
            };
            operands + value(n) + kv
        };
        k.per_forward += times;
        k.bytes_per_forward = k
            .bytes_per_forward
            .saturating_add(sat(moved(seq, false) * times as u128 * dt));
        if !header {
            k.per_decode_step += times;
            k.bytes_per_decode_step = k
                .bytes_per_decode_step
                .saturating_add(sat(moved(1, true) * times as u128 * dt));
        }
        if let Op::Attention(a) = op {
            k.kv_bytes_per_token += a.kv_elems_per_token() * times * dt as u64;
        }
    }
}
