//! The Mythos compiler.
//!
//! Data flows one way (see ARCHITECTURE.md):
//! text -> [`syntax`] (AST with spans) -> [`sema`] (resolved, checked
//! [`model::Model`]) -> [`ir`] (graph IR, verifier, printers) -> [`analysis`]
//! (cost) -> [`passes`] -> backends ([`plan`]) -> [`artifact`] (`.mythosc` files).
//! Diagnostics from every stage are [`diag::Diagnostic`]s rendered in one place.

pub mod analysis;
pub mod artifact;
pub mod diag;
pub mod fmt;
pub mod interop;
pub mod ir;
pub mod model;
pub mod passes;
pub mod plan;
pub mod presets;
pub mod report;
pub mod sema;
pub mod source;
pub mod suggest;
pub mod syntax;

pub use diag::{Diagnostic, Severity};
pub use source::{FileId, SourceMap, Span};

/// Entry point for the fuzzer: parse, check every model, and format arbitrary
/// bytes as a spec. Must never panic, whatever the input.
pub fn fuzz_entry(data: &[u8]) -> usize {
    let mut loader = sema::Loader::in_memory();
    loader.add_virtual("fuzz.mythos", data.to_vec());
    let session = sema::check_file(&mut loader, "fuzz.mythos");
    let mut n = session.diagnostics.len();
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(formatted) = fmt::format_source(FileId(0), text) {
            n += formatted.len();
        }
    }
    n
}
