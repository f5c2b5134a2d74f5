//! The MoE family: DeepSeek-style routed plus shared SwiGLU experts, one
//! composite op. Here: its attributes (printed and compared by CSE),
//! typing rule and cost.
//! Its operand views are [`crate::ir::args::MoeArgs`] (`MoeOp::args`).

use super::Typing;
use crate::ir::attrs::Attr;
use crate::ir::{Fusion, TensorType, TypeError};

/// DeepSeek-style MoE: router softmax, biased top-k, renormalised gates,
/// routed SwiGLU experts plus shared ones. Operands: `x`, `router`,
/// [`router_bias`], routed `gate`, `up`, `down` (stacked), then the shared
/// `gate`, `up`, `down` (stacked) when `shared > 0`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct MoeOp {
    pub experts: u64,
    pub top_k: u64,
    pub expert_dim: u64,
    pub shared: u64,
    pub shared_dim: u64,
    pub router_bias: bool,
    /// Tokens permuted by expert and one grouped GEMM per projection (the
    /// `expert-batching` pass) instead of one dispatch per expert.
    pub batched: bool,
    pub fusion: Fusion,
}

impl MoeOp {
    /// The typing rule (without a fused prologue norm): `x`, the router
    /// `[experts, d]`, the bias `[experts]` if any, the routed experts
    /// `[experts, hidden, d]` (gate, up) and `[experts, d, hidden]` (down),
    /// then the shared ones likewise; the result is `x`'s type.
    pub fn infer(&self, t: &Typing) -> Result<TensorType, TypeError> {
        t.arity(1 + self.own_operands())?;
        let positions: Vec<usize> = (0..t.len()).collect();
        let a = self.args(&positions);
        let d = t.width(a.x)?;
        t.expect_shape(a.router, &[self.experts, d])?;
        if let Some(bias) = a.bias {
            t.expect_shape(bias, &[self.experts])?;
        }
        let groups = [
            (Some(a.routed), self.experts, self.expert_dim),
            (a.shared, self.shared, self.shared_dim),
        ];
        for (e, count, hidden) in groups {
            if let Some(e) = e {
                t.expect_shape(e.gate, &[count, hidden, d])?;
                t.expect_shape(e.up, &[count, hidden, d])?;
                t.expect_shape(e.down, &[count, d, hidden])?;
            }
        }
        Ok(t.operand(0).clone())
    }

    /// Its attributes, in print order.
    pub fn attrs(&self) -> Vec<Attr> {
        vec![
            Attr::Int("experts", self.experts),
            Attr::Int("top_k", self.top_k),
            Attr::Int("expert_dim", self.expert_dim),
            Attr::Int("shared", self.shared),
            Attr::Int("shared_dim", self.shared_dim),
            Attr::Bool("router_bias", self.router_bias),
            Attr::Flag("batched", self.batched),
            Attr::Fusion(self.fusion),
        ]
    }

    /// FLOPs per token of width `d`: the router, the `top_k` routed and
    /// every shared SwiGLU expert (three products each).
    pub fn flops_per_token(&self, d: f64) -> f64 {
        2.0 * d * self.experts as f64
            + self.top_k as f64 * 6.0 * d * self.expert_dim as f64
            + self.shared as f64 * 6.0 * d * self.shared_dim as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{DType, Dim};

    fn weight(shape: &[u64]) -> TensorType {
        TensorType {
            dtype: DType::F32,
            shape: shape.iter().map(|&d| Dim::Const(d)).collect(),
        }
    }

    #[test]
    fn typing_places_the_optional_bias_and_shared_experts() {
        let m = MoeOp {
            experts: 4,
            top_k: 2,
            expert_dim: 6,
            shared: 1,
            shared_dim: 5,
            router_bias: true,
            batched: false,
            fusion: Fusion::default(),
        };
        let d = 8;
        let x = TensorType::activations(d);
        let ws = [
            weight(&[4, d]),
            weight(&[4]),
            weight(&[4, 6, d]),
            weight(&[4, 6, d]),
            weight(&[4, d, 6]),
            weight(&[1, 5, d]),
            weight(&[1, 5, d]),
            weight(&[1, d, 5]),
        ];
        let mut ops: Vec<&TensorType> = vec![&x];
        ops.extend(ws.iter());
        let t = Typing {
            name: "moe",
            operands: &ops,
        };
        assert_eq!(m.infer(&t), Ok(x.clone()));
        // The shared down projection with the routed hidden size.
        let bad = weight(&[1, d, 6]);
        ops[8] = &bad;
        let t = Typing {
            name: "moe",
            operands: &ops,
        };
        let e = m.infer(&t).unwrap_err().0;
        assert!(e.contains("operand 8: expected shape [1, 8, 5]"), "{e}");
        assert_eq!(
            m.flops_per_token(8.0),
            2.0 * 8.0 * 4.0 + 2.0 * 6.0 * 8.0 * 6.0 + 6.0 * 8.0 * 5.0
        );
        assert_ne!(m.attrs(), MoeOp { batched: true, ..m }.attrs());
    }
}
