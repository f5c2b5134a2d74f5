//! The composites' operands as the CPU kernels take them (weights and
//! sizes), from the IR's typed operand views: one place for the forward
//! kernels and their VJPs.

use super::attention::{GqaWeights, MlaDims, MlaWeights};
use super::moe::{MoeDims, MoeWeights};
use super::Value;
use mythos_compiler::ir::args::{AttnWeights, MoeArgs};
use mythos_compiler::ir::{AttnKind, MoeOp};

/// GQA's weights and `(heads, kv_heads, head_dim)`, or MLA's weights and
/// sizes, by the op's kind.
pub(crate) enum AttnParts<'v> {
    Gqa(GqaWeights<'v>, (usize, usize, usize)),
    Mla(MlaWeights<'v>, MlaDims),
}

pub(crate) fn attention<'v>(kind: AttnKind, w: AttnWeights<&'v Value<'_>>) -> AttnParts<'v> {
    match (kind, w) {
        (
            AttnKind::Gqa {
                heads,
                kv_heads,
                head_dim,
            },
            AttnWeights::Gqa { wq, wk, wv, wo },
        ) => AttnParts::Gqa(
            GqaWeights {
                wq: wq.weight(),
                wk: wk.weight(),
                wv: wv.weight(),
                wo: wo.weight(),
            },
            (heads as usize, kv_heads as usize, head_dim as usize),
        ),
        (
            AttnKind::Mla {
                heads,
                q_rank,
                kv_rank,
                rope_dim,
                nope_dim,
                v_dim,
            },
            AttnWeights::Mla {
                q_down,
                q_norm,
                q_up_nope,
                q_up_rope,
                kv_down,
                kv_norm,
                kv_up,
                wo,
            },
        ) => AttnParts::Mla(
            MlaWeights {
                q_down: q_down.weight(),
                q_norm: q_norm.weight(),
                q_up_nope: q_up_nope.weight(),
                q_up_rope: q_up_rope.weight(),
                kv_down: kv_down.weight(),
                kv_norm: kv_norm.weight(),
                kv_up: kv_up.weight(),
                wo: wo.weight(),
            },
            MlaDims {
                heads: heads as usize,
                q_rank: q_rank as usize,
                kv_rank: kv_rank as usize,
                rope: rope_dim as usize,
                nope: nope_dim as usize,
                v: v_dim as usize,
            },
        ),
        (AttnKind::Gqa { .. }, AttnWeights::Mla { .. })
        | (AttnKind::Mla { .. }, AttnWeights::Gqa { .. }) => {
            unreachable!("AttentionOp::args follows the op's kind")
        }
    }
}

/// The MoE's weights and sizes.
pub(crate) fn moe<'v>(m: &MoeOp, a: &MoeArgs<&'v Value<'_>>) -> (MoeWeights<'v>, MoeDims) {
    let weights = MoeWeights {
        router: a.router.weight(),
        bias: a.bias.map(|b| b.weight()),
        gate: a.routed.gate.weight(),
        up: a.routed.up.weight(),
        down: a.routed.down.weight(),
        shared: a
            .shared
            .as_ref()
            .map(|e| (e.gate.weight(), e.up.weight(), e.down.weight())),
    };
    let dims = MoeDims {
        experts: m.experts as usize,
        top_k: m.top_k as usize,
        hidden: m.expert_dim as usize,
        shared: m.shared as usize,
        shared_hidden: m.shared_dim as usize,
    };
    (weights, dims)
}
