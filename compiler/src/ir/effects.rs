//! What each op does besides computing its result (its [`Effect`], declared
//! in [`Op::decl`]), and when two nodes are the same computation
//! ([`Op::cse_key`], an exhaustive match): what CSE, hoisting and the
//! verifier ask.

use super::{Fusion, Op};

/// An op's effect class.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Effect {
    /// A value from outside the graph: the token ids, a loop or group
    /// parameter, a weight.
    Source,
    /// The result depends on the operands and attributes only.
    Pure,
    /// Reads and appends to its KV-cache slot (attention): two such nodes are
    /// never the same, and the value varies with every call.
    CacheWrite,
    /// Runs a nested region with its own state (the loop): never merged,
    /// never moved.
    Region,
}

/// A node's identity for CSE: the op's name and attributes (floats by their
/// bits), compared and hashed exactly.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct OpKey {
    name: &'static str,
    attributes: Vec<u64>,
}

pub(crate) fn fusion_words(f: Fusion) -> [u64; 2] {
    [
        f.prenorm.map_or(u64::MAX, f64::to_bits),
        u64::from(f.residual),
    ]
}

impl Op {
    /// The key under which CSE merges nodes with equal operands; `None` for
    /// ops that are never merged (cache writers, regions, fused groups, whose
    /// bodies are not compared).
    pub fn cse_key(&self) -> Option<OpKey> {
        let attributes = match self {
            Op::Attention(_) | Op::Loop(_) | Op::Fused(_) => return None,
            Op::Input
            | Op::Embedding
            | Op::Linear
            | Op::Add
            | Op::Concat
            | Op::LtiUpdate
            | Op::ActHalt
            | Op::Scale
            | Op::LtiDecay
            | Op::LtiApply
            | Op::AddPrefix => Vec::new(),
            Op::Param(i) => vec![*i as u64],
            Op::Weight(id) => vec![u64::from(id.0)],
            Op::RmsNorm { eps } => vec![eps.to_bits()],
            Op::Act(step) => step.cse_words(),
            Op::SwiGlu(f) | Op::Head(f) => fusion_words(*f).to_vec(),
            Op::Moe(m) => m.cse_words(),
            Op::LoopEmbedding { channels, theta } | Op::LoopEmbeddingVec { channels, theta } => {
                vec![*channels, theta.to_bits()]
            }
            Op::Lora { rank, max_iters } => vec![*rank, *max_iters],
            Op::LoraScale { max_iters } => vec![*max_iters],
            Op::LoraApply { rank } => vec![*rank],
        };
        Some(OpKey {
            name: self.name(),
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_tell_attributes_apart_and_skip_stateful_ops() {
        let norm = |eps: f64| Op::RmsNorm { eps }.cse_key();
        assert_eq!(norm(1e-6), norm(1e-6));
        assert_ne!(norm(1e-6), norm(1e-5));
        assert_ne!(Op::Add.cse_key(), Op::Concat.cse_key());
        assert_ne!(
            Op::LoopEmbeddingVec {
                channels: 7,
                theta: 1e4
            }
            .cse_key(),
            Op::LoopEmbedding {
                channels: 7,
                theta: 1e4
            }
            .cse_key()
        );
        let swiglu = |residual| {
            Op::SwiGlu(Fusion {
                prenorm: None,
                residual,
            })
            .cse_key()
        };
        assert_ne!(swiglu(false), swiglu(true));
        assert_eq!(
            Op::Weight(super::super::WeightId(3)).effect(),
            Effect::Source
        );
    }
}
