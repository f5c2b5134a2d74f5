//! Typed operand views of the composite ops: each op's operand list read by
//! role (`MoeOp::args(&ops).router`) and written back (`MoeArgs::operands`),
//! generic over what an operand is (a node id, a type, a runtime value), so
//! no consumer does index arithmetic on operands: the fused prologue norm's
//! slot, MoE's optional bias and shared experts, attention's 4 or 8 weights.
//!
//! Views assume the operand count the verifier checked (`arity`); the typing
//! rule checks the count before it takes a view.

use super::{AttentionOp, AttnKind, Fusion, MoeOp};

impl Fusion {
    /// Operands before the op's own: `x` and, when a norm is fused into the
    /// prologue, its weight.
    pub fn inputs(&self) -> usize {
        1 + usize::from(self.prenorm.is_some())
    }

    /// `(x, [norm weight])` and the op's own operands after them.
    pub fn split<'o, T: Copy>(&self, ops: &'o [T]) -> (T, Option<T>, &'o [T]) {
        let norm = self.prenorm.map(|_| ops[1]);
        (ops[0], norm, &ops[self.inputs()..])
    }
}

/// `x`, `[norm]`, then `own`: the inverse of [`Fusion::split`].
pub fn join<T>(x: T, prenorm: Option<T>, own: impl IntoIterator<Item = T>) -> Vec<T> {
    let mut v = vec![x];
    v.extend(prenorm);
    v.extend(own);
    v
}

/// SwiGLU: `down(silu(gate(x)) * up(x))`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SwiGluArgs<T> {
    pub x: T,
    pub prenorm: Option<T>,
    pub gate: T,
    pub up: T,
    pub down: T,
}

impl<T: Copy> SwiGluArgs<T> {
    pub const OWN: usize = 3;

    pub fn of(fusion: Fusion, ops: &[T]) -> SwiGluArgs<T> {
        let (x, prenorm, own) = fusion.split(ops);
        SwiGluArgs {
            x,
            prenorm,
            gate: own[0],
            up: own[1],
            down: own[2],
        }
    }

    pub fn operands(self) -> Vec<T> {
        join(self.x, self.prenorm, [self.gate, self.up, self.down])
    }
}

/// One group of SwiGLU experts, stacked (`[count, hidden, dim]` ...).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct ExpertWeights<T> {
    pub gate: T,
    pub up: T,
    pub down: T,
}

/// MoE: router, its optional selection bias, the routed experts and the
/// optional shared ones.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeArgs<T> {
    pub x: T,
    pub prenorm: Option<T>,
    pub router: T,
    pub bias: Option<T>,
    pub routed: ExpertWeights<T>,
    pub shared: Option<ExpertWeights<T>>,
}

impl MoeOp {
    /// Operands besides `x` and the prologue norm.
    pub fn own_operands(&self) -> usize {
        4 + usize::from(self.router_bias) + if self.shared > 0 { 3 } else { 0 }
    }

    pub fn args<T: Copy>(&self, ops: &[T]) -> MoeArgs<T> {
        let (x, prenorm, own) = self.fusion.split(ops);
        let mut it = own.iter().copied();
        let mut next = || it.next().expect("the verifier checked the MoE arity");
        let router = next();
        let bias = self.router_bias.then(&mut next);
        let mut experts = || ExpertWeights {
            gate: next(),
            up: next(),
            down: next(),
        };
        let routed = experts();
        let shared = (self.shared > 0).then(experts);
        MoeArgs {
            x,
            prenorm,
            router,
            bias,
            routed,
            shared,
        }
    }
}

impl<T> MoeArgs<T> {
    pub fn operands(self) -> Vec<T> {
        let experts = |e: ExpertWeights<T>| [e.gate, e.up, e.down];
        let own = [self.router]
            .into_iter()
            .chain(self.bias)
            .chain(experts(self.routed))
            .chain(self.shared.map(experts).into_iter().flatten());
        join(self.x, self.prenorm, own)
    }
}

/// Attention's weights, in [`AttentionOp::weight_names`] order.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttnWeights<T> {
    Gqa {
        wq: T,
        wk: T,
        wv: T,
        wo: T,
    },
    Mla {
        q_down: T,
        q_norm: T,
        q_up_nope: T,
        q_up_rope: T,
        kv_down: T,
        kv_norm: T,
        kv_up: T,
        wo: T,
    },
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub struct AttentionArgs<T> {
    pub x: T,
    pub prenorm: Option<T>,
    pub weights: AttnWeights<T>,
}

impl AttentionOp {
    pub fn args<T: Copy>(&self, ops: &[T]) -> AttentionArgs<T> {
        let (x, prenorm, w) = self.fusion.split(ops);
        let weights = match self.kind {
            AttnKind::Gqa { .. } => AttnWeights::Gqa {
                wq: w[0],
                wk: w[1],
                wv: w[2],
                wo: w[3],
            },
            AttnKind::Mla { .. } => AttnWeights::Mla {
                q_down: w[0],
                q_norm: w[1],
                q_up_nope: w[2],
                q_up_rope: w[3],
                kv_down: w[4],
                kv_norm: w[5],
                kv_up: w[6],
                wo: w[7],
            },
        };
        AttentionArgs {
            x,
            prenorm,
            weights,
        }
    }
}

impl<T> AttnWeights<T> {
    /// In operand order.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            AttnWeights::Gqa { wq, wk, wv, wo } => vec![wq, wk, wv, wo],
            AttnWeights::Mla {
                q_down,
                q_norm,
                q_up_nope,
                q_up_rope,
                kv_down,
                kv_norm,
                kv_up,
                wo,
            } => vec![
                q_down, q_norm, q_up_nope, q_up_rope, kv_down, kv_norm, kv_up, wo,
            ],
        }
    }
}

impl<T> AttentionArgs<T> {
    pub fn operands(self) -> Vec<T> {
        join(self.x, self.prenorm, self.weights.into_vec())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::KvSlot;

    fn moe(router_bias: bool, shared: u64, prenorm: bool) -> MoeOp {
        MoeOp {
            experts: 4,
            top_k: 2,
            expert_dim: 8,
            shared,
            shared_dim: 16,
            router_bias,
            batched: false,
            fusion: Fusion {
                prenorm: prenorm.then_some(1e-6),
                residual: false,
            },
        }
    }

    #[test]
    fn moe_views_read_every_layout_and_round_trip() {
        for (bias, shared, prenorm) in [
            (true, 1, false),
            (false, 0, false),
            (true, 0, true),
            (false, 2, true),
        ] {
            let m = moe(bias, shared, prenorm);
            let n = m.fusion.inputs() + m.own_operands();
            let ops: Vec<usize> = (0..n).collect();
            let a = m.args(&ops);
            assert_eq!(a.x, 0);
            assert_eq!(a.prenorm, prenorm.then_some(1));
            let router = usize::from(prenorm) + 1;
            assert_eq!(a.router, router);
            assert_eq!(a.bias, bias.then_some(router + 1));
            assert_eq!(a.routed.gate, router + 1 + usize::from(bias));
            assert_eq!(a.shared.is_some(), shared > 0);
            if let Some(s) = a.shared {
                assert_eq!(s.down, n - 1);
            } else {
                assert_eq!(a.routed.down, n - 1);
            }
            assert_eq!(a.operands(), ops);
        }
    }

    #[test]
    fn swiglu_and_attention_views_skip_the_prologue_norm() {
        let fused = Fusion {
            prenorm: Some(1e-6),
            residual: true,
        };
        let s = SwiGluArgs::of(fused, &[10, 11, 12, 13, 14]);
        assert_eq!((s.x, s.prenorm, s.gate, s.down), (10, Some(11), 12, 14));
        assert_eq!(s.operands(), vec![10, 11, 12, 13, 14]);
        let a = AttentionOp {
            kind: AttnKind::Gqa {
                heads: 2,
                kv_heads: 1,
                head_dim: 4,
            },
            rope_theta: 1e4,
            norm_eps: 1e-6,
            cache: KvSlot {
                layer: 0,
                name: "c".into(),
            },
            kv_layout: Default::default(),
            absorb: false,
            fusion: Fusion::default(),
        };
        let v = a.args(&[0, 1, 2, 3, 4]);
        assert_eq!(
            v.weights,
            AttnWeights::Gqa {
                wq: 1,
                wk: 2,
                wv: 3,
                wo: 4
            }
        );
        assert_eq!(v.operands(), vec![0, 1, 2, 3, 4]);
    }
}
