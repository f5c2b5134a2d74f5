//! The attention family: GQA (MHA is GQA with `kv_heads == heads`) and
//! MLA, as one composite op with its KV-cache slot. Here: its attributes,
//! the weights it takes and their shapes, its typing rule, its print form
//! and the per-head sizes every consumer derives (cost, kernels, runtimes).
//! Its operand views are [`crate::ir::args::AttentionArgs`].

use super::Typing;
use crate::ir::attrs::Attr;
use crate::ir::{Fusion, TensorType, TypeError};

/// Attention variants as the IR sees them (MHA is GQA with `kv_heads == heads`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum AttnKind {
    Gqa {
        heads: u64,
        kv_heads: u64,
        head_dim: u64,
    },
    Mla {
        heads: u64,
        q_rank: u64,
        kv_rank: u64,
        rope_dim: u64,
        nope_dim: u64,
        v_dim: u64,
    },
}

/// How an attention layer stores its KV cache.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum KvLayout {
    /// As OpenMythos: GQA rotated k and v; MLA `c_kv` plus the rope key per head.
    #[default]
    Reference,
    /// MLA: `c_kv` and the rope key once per token (the `compact-kv` pass).
    Compact,
}

/// An attention op's KV-cache layer: numbered in lowering order, one per
/// attention op of the module; a looped layer has one entry per iteration,
/// so a runtime addresses an entry by `(layer, iteration)`. The name is
/// OpenMythos's `cache_key` (`prelude_0`, `recurrent_loop`, `coda_0`), for
/// printing.
#[derive(Clone, Debug, PartialEq)]
pub struct KvSlot {
    pub layer: u32,
    pub name: String,
}

impl std::fmt::Display for KvSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.name)
    }
}

/// A whole attention sub-layer: projections, RoPE, causal softmax attention
/// over its KV-cache slot, output projection. Operands: `x`, [the prologue
/// norm weight], then the weights in [`AttentionOp::weight_names`] order.
#[derive(Clone, Debug, PartialEq)]
pub struct AttentionOp {
    pub kind: AttnKind,
    pub rope_theta: f64,
    /// RMSNorm epsilon of MLA's `q_norm`/`kv_norm`.
    pub norm_eps: f64,
    /// The KV-cache layer it reads and appends to (its declared effect).
    pub cache: KvSlot,
    pub kv_layout: KvLayout,
    /// MLA only: decode steps attend over the latent cache with `kv_up`
    /// folded into the query and the output (the `mla-absorb` pass).
    pub absorb: bool,
    pub fusion: Fusion,
}

impl AttentionOp {
    /// KV-cache elements stored per token by this layer.
    pub fn kv_elems_per_token(&self) -> u64 {
        self.kv_elems_in(self.kv_layout)
    }

    /// KV-cache elements per token in `layout`.
    pub fn kv_elems_in(&self, layout: KvLayout) -> u64 {
        match (self.kind, layout) {
            (
                AttnKind::Gqa {
                    kv_heads, head_dim, ..
                },
                _,
            ) => 2 * kv_heads * head_dim,
            (
                AttnKind::Mla {
                    heads,
                    kv_rank,
                    rope_dim,
                    ..
                },
                KvLayout::Reference,
            ) => kv_rank + heads * rope_dim,
            (
                AttnKind::Mla {
                    kv_rank, rope_dim, ..
                },
                KvLayout::Compact,
            ) => kv_rank + rope_dim,
        }
    }
}

impl AttentionOp {
    /// Dimensions RoPE rotates per head: the whole head for GQA, the
    /// decoupled rope part for MLA.
    pub fn rope_dims(&self) -> u64 {
        match self.kind {
            AttnKind::Gqa { head_dim, .. } => head_dim,
            AttnKind::Mla { rope_dim, .. } => rope_dim,
        }
    }

    /// Weight operand names (after the module prefix `....attn.`).
    pub fn weight_names(&self) -> &'static [&'static str] {
        match self.kind {
            AttnKind::Gqa { .. } => &["wq", "wk", "wv", "wo"],
            AttnKind::Mla { .. } => &[
                "q_down",
                "q_norm",
                "q_up_nope",
                "q_up_rope",
                "kv_down",
                "kv_norm",
                "kv_up",
                "wo",
            ],
        }
    }

    /// Expected weight shapes (`[out, in]` for linear layers), in operand order.
    pub fn weight_shapes(&self, dim: u64) -> Vec<Vec<u64>> {
        match self.kind {
            AttnKind::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => vec![
                vec![heads * head_dim, dim],
                vec![kv_heads * head_dim, dim],
                vec![kv_heads * head_dim, dim],
                vec![dim, heads * head_dim],
            ],
            AttnKind::Mla {
                heads,
                q_rank,
                kv_rank,
                rope_dim,
                nope_dim,
                v_dim,
            } => vec![
                vec![q_rank, dim],
                vec![q_rank],
                vec![heads * nope_dim, q_rank],
                vec![heads * rope_dim, q_rank],
                vec![kv_rank + rope_dim, dim],
                vec![kv_rank],
                vec![heads * (nope_dim + v_dim), kv_rank],
                vec![dim, heads * v_dim],
            ],
        }
    }
}

impl AttnKind {
    pub fn heads(&self) -> u64 {
        match *self {
            AttnKind::Gqa { heads, .. } | AttnKind::Mla { heads, .. } => heads,
        }
    }

    /// Query and key width per head: `head_dim` (GQA), `nope_dim + rope_dim` (MLA).
    pub fn qk_dim(&self) -> u64 {
        match *self {
            AttnKind::Gqa { head_dim, .. } => head_dim,
            AttnKind::Mla {
                nope_dim, rope_dim, ..
            } => nope_dim + rope_dim,
        }
    }

    /// Value width per head.
    pub fn v_dim(&self) -> u64 {
        match *self {
            AttnKind::Gqa { head_dim, .. } => head_dim,
            AttnKind::Mla { v_dim, .. } => v_dim,
        }
    }

    /// MLA: the latent of one token, `c_kv` then the rope key (`kv_rank + rope_dim`).
    pub fn latent_width(&self) -> Option<u64> {
        match *self {
            AttnKind::Gqa { .. } => None,
            AttnKind::Mla {
                kv_rank, rope_dim, ..
            } => Some(kv_rank + rope_dim),
        }
    }

    /// `heads=.. kv_heads=..` (or MLA's ranks and head parts).
    pub fn attrs(&self) -> Vec<Attr> {
        match *self {
            AttnKind::Gqa {
                heads,
                kv_heads,
                head_dim,
            } => vec![
                Attr::Int("heads", heads),
                Attr::Int("kv_heads", kv_heads),
                Attr::Int("head_dim", head_dim),
            ],
            AttnKind::Mla {
                heads,
                q_rank,
                kv_rank,
                rope_dim,
                nope_dim,
                v_dim,
            } => vec![
                Attr::Int("heads", heads),
                Attr::Int("q_rank", q_rank),
                Attr::Int("kv_rank", kv_rank),
                Attr::Int("rope_dim", rope_dim),
                Attr::Int("nope_dim", nope_dim),
                Attr::Int("v_dim", v_dim),
            ],
        }
    }
}

impl AttentionOp {
    /// The op's name: `attention.gqa` or `attention.mla`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            AttnKind::Gqa { .. } => "attention.gqa",
            AttnKind::Mla { .. } => "attention.mla",
        }
    }

    /// The typing rule (without a fused prologue norm): `x` then the
    /// weights of [`AttentionOp::weight_shapes`]; the result is `x`'s type.
    pub fn infer(&self, t: &Typing) -> Result<TensorType, TypeError> {
        let shapes = self.weight_shapes(t.width(0)?);
        t.arity(1 + shapes.len())?;
        for (i, s) in shapes.iter().enumerate() {
            t.expect_shape(i + 1, s)?;
        }
        Ok(t.operand(0).clone())
    }

    /// Its attributes, in print order (the cache slot by name).
    pub fn attrs(&self) -> Vec<Attr> {
        let mut a = self.kind.attrs();
        a.extend([
            Attr::Float("rope_theta", self.rope_theta),
            Attr::Text(format!("cache={}", self.cache)),
            Attr::Flag("kv=compact", self.kv_layout == KvLayout::Compact),
            Attr::Flag("absorb", self.absorb),
            Attr::Fusion(self.fusion),
        ]);
        a
    }

    /// Multiply-adds x2 per query and cached key beyond the projections:
    /// the scores and the weighted values of every head.
    pub fn flops_per_key(&self) -> f64 {
        let k = self.kind;
        2.0 * (k.heads() * k.qk_dim()) as f64 + 2.0 * (k.heads() * k.v_dim()) as f64
    }

    /// Cache elements a decode step reads per cached position: the stored
    /// entry, or for a non-absorbed MLA the keys and values it expands.
    pub fn kv_elems_read_per_key(&self) -> u64 {
        match (self.kind, self.absorb) {
            (AttnKind::Mla { .. }, false) => {
                self.kind.heads() * (self.kind.qk_dim() + self.kind.v_dim())
            }
            _ => self.kv_elems_per_token(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mla() -> AttentionOp {
        AttentionOp {
            kind: AttnKind::Mla {
                heads: 4,
                q_rank: 16,
                kv_rank: 12,
                rope_dim: 4,
                nope_dim: 8,
                v_dim: 6,
            },
            rope_theta: 1e4,
            norm_eps: 1e-6,
            cache: KvSlot {
                layer: 0,
                name: "prelude_0".into(),
            },
            kv_layout: KvLayout::Reference,
            absorb: false,
            fusion: Fusion::default(),
        }
    }

    #[test]
    fn sizes_follow_the_kind() {
        let a = mla();
        assert_eq!((a.kind.qk_dim(), a.kind.v_dim()), (12, 6));
        assert_eq!(a.kind.latent_width(), Some(16));
        assert_eq!(a.kv_elems_in(KvLayout::Reference), 12 + 4 * 4);
        assert_eq!(a.kv_elems_in(KvLayout::Compact), 16);
        assert_eq!(a.kv_elems_read_per_key(), 4 * (12 + 6));
        assert_eq!(a.flops_per_key(), 2.0 * 48.0 + 2.0 * 24.0);
        let absorbed = AttentionOp {
            absorb: true,
            ..mla()
        };
        assert_eq!(absorbed.kv_elems_read_per_key(), 28);
        let gqa = AttnKind::Gqa {
            heads: 4,
            kv_heads: 2,
            head_dim: 8,
        };
        assert_eq!(
            (gqa.qk_dim(), gqa.v_dim(), gqa.latent_width()),
            (8, 8, None)
        );
    }

    #[test]
    fn typing_checks_every_weight_shape() {
        let a = mla();
        let x = TensorType::activations(32);
        let weights: Vec<TensorType> = a
            .weight_shapes(32)
            .into_iter()
            .map(|s| TensorType {
                dtype: crate::ir::DType::F32,
                shape: s.into_iter().map(crate::ir::Dim::Const).collect(),
            })
            .collect();
        let mut operands: Vec<&TensorType> = vec![&x];
        operands.extend(weights.iter());
        let t = Typing {
            name: "attention.mla",
            operands: &operands,
        };
        assert_eq!(a.infer(&t), Ok(x.clone()));
        let wrong = TensorType::activations(3);
        operands[3] = &wrong;
        let t = Typing {
            name: "attention.mla",
            operands: &operands,
        };
        let e = a.infer(&t).unwrap_err().0;
        assert!(e.contains("must be a weight"), "{e}");
        let t = Typing {
            name: "attention.mla",
            operands: &operands[..5],
        };
        assert!(a
            .infer(&t)
            .unwrap_err()
            .0
            .contains("takes 9 operands, has 5"));
    }
}
