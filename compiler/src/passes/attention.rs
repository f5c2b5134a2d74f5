//! The attribute passes: `expert-batching`, `mla-absorb`, `compact-kv`. Each
//! marks the ops it applies to; the runtimes implement the marked form.

use super::each_graph;
use crate::ir::{AttnKind, KvLayout, Module, NodeId, Op};

/// Sets a flag on every op `pick` accepts; counts the ops changed.
fn mark(module: &mut Module, pick: fn(&mut Op) -> bool) -> usize {
    each_graph(&mut module.graph, &mut |g| {
        let ids: Vec<NodeId> = g.nodes().collect();
        ids.into_iter()
            .filter(|&id| pick(&mut g.node_mut(id).op))
            .count()
    })
}

/// MoE ops run as permute, grouped GEMMs, un-permute.
pub fn expert_batching(module: &mut Module) -> usize {
    mark(module, |op| match op {
        Op::Moe(m) if !m.batched => {
            m.batched = true;
            true
        }
        _ => false,
    })
}

/// MLA attention absorbs `kv_up` for decode steps.
pub fn mla_absorb(module: &mut Module) -> usize {
    mark(module, |op| match op {
        Op::Attention(a) if matches!(a.kind, AttnKind::Mla { .. }) && !a.absorb => {
            a.absorb = true;
            true
        }
        _ => false,
    })
}

/// MLA attention keeps the compact cache (GQA's cache is compact already).
pub fn compact_kv(module: &mut Module) -> usize {
    mark(module, |op| match op {
        Op::Attention(a)
            if matches!(a.kind, AttnKind::Mla { .. }) && a.kv_layout != KvLayout::Compact =>
        {
            a.kv_layout = KvLayout::Compact;
            true
        }
        _ => false,
    })
}
