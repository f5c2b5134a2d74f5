//! Op families, one module each: an op's attributes, its typing rule, its
//! print form and its CSE identity live beside each other, and the central
//! exhaustive matches (`Op::name`, `infer`, `effects`, `print::attributes`,
//! the cost analysis, the backends) delegate to them.
//!
//! So far: [`act`] (the ACT rule's steps). The other families still live in
//! `ir/mod.rs` and the files those matches are in.

pub mod act;
