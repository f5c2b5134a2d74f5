//! Op families, one module each: an op's attributes (what the text form
//! prints and CSE compares), its typing rule and its cost figures live
//! beside each other, and the matches that declare every op (`ir/decl.rs`:
//! `Op::decl`, `Op::attrs`, `infer`, `Op::flops`) and the backends delegate
//! to them.
//!
//! So far: [`act`] (the ACT rule's steps), [`attention`] (GQA and MLA),
//! [`grad`] (the ops reverse-mode differentiation emits),
//! [`moe`], [`region`] (the loop and the fused group) and [`row`] (the
//! row-local ops, one `Op::Row` variant). The other ops' rules are written
//! in `ir/decl.rs` itself.

pub mod act;
pub mod attention;
pub mod grad;
pub mod moe;
pub mod region;
pub mod row;

use crate::ir::{Dim, TensorType, TypeError};

/// An op's operand types, with the checks typing rules share; errors name
/// the op.
pub struct Typing<'a> {
    pub name: &'static str,
    pub operands: &'a [&'a TensorType],
}

impl Typing<'_> {
    pub fn len(&self) -> usize {
        self.operands.len()
    }

    pub fn is_empty(&self) -> bool {
        self.operands.is_empty()
    }

    pub fn operand(&self, i: usize) -> &TensorType {
        self.operands[i]
    }

    pub fn arity(&self, n: usize) -> Result<(), TypeError> {
        if self.operands.len() == n {
            Ok(())
        } else {
            Err(TypeError(format!(
                "{} takes {n} operands, has {}",
                self.name,
                self.operands.len()
            )))
        }
    }

    /// The constant last dimension of operand `i`.
    pub fn width(&self, i: usize) -> Result<u64, TypeError> {
        self.operands[i]
            .width()
            .ok_or_else(|| TypeError(format!("operand {i} has no constant width")))
    }

    /// Operand `i`'s shape, which must be constant (a weight or vector).
    pub fn vector(&self, i: usize) -> Result<Vec<u64>, TypeError> {
        self.operands[i]
            .shape
            .iter()
            .map(|d| match d {
                Dim::Const(n) => Ok(*n),
                _ => Err(TypeError(format!(
                    "operand {i} of {} must be a weight",
                    self.name
                ))),
            })
            .collect()
    }

    pub fn expect_shape(&self, i: usize, want: &[u64]) -> Result<(), TypeError> {
        let got = self.vector(i)?;
        if got == want {
            Ok(())
        } else {
            Err(TypeError(format!(
                "{} operand {i}: expected shape {want:?}, found {got:?}",
                self.name
            )))
        }
    }
}
