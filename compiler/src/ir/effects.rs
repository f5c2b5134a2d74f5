//! What each op does besides computing its result (its [`Effect`], declared
//! in [`Op::decl`]), and when two nodes are the same computation
//! ([`Op::cse_key`], an exhaustive match): what CSE, hoisting and the
//! verifier ask.

use super::Op;

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

impl Op {
    /// The key under which CSE merges nodes with equal operands: the name
    /// and the attribute words of [`Op::attrs`]. `None` for ops that are
    /// never merged: cache writers and regions (by their effect) and ops
    /// with a text attribute (fused groups, whose bodies are not compared).
    pub fn cse_key(&self) -> Option<OpKey> {
        match self.effect() {
            Effect::CacheWrite | Effect::Region => return None,
            Effect::Source | Effect::Pure => {}
        }
        let mut attributes = Vec::new();
        for a in self.attrs() {
            attributes.extend(a.words()?);
        }
        Some(OpKey {
            name: self.name(),
            attributes,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ir::{Fusion, RowOp};

    #[test]
    fn keys_tell_attributes_apart_and_skip_stateful_ops() {
        let norm = |eps: f64| Op::Row(RowOp::RmsNorm { eps }).cse_key();
        assert_eq!(norm(1e-6), norm(1e-6));
        assert_ne!(norm(1e-6), norm(1e-5));
        assert_ne!(
            Op::Row(RowOp::Add).cse_key(),
            Op::Row(RowOp::Concat).cse_key()
        );
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
