//! The preset models the runtime's tests run (checked, lowered, optimized)
//! and the error measure they compare logits with. Shared by the runtime's
//! tests and the backend's mlir-cpu one (`#[path]`-included there), which do
//! not each use every item.
#![allow(dead_code)]

use mythos_compiler::ir::{lower::lower, Module};
use mythos_compiler::passes::{self, Options};
use mythos_compiler::sema::{self, Loader};

/// `@name`, checked and lowered (no passes).
pub fn preset(name: &str) -> Module {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, &format!("@{name}"));
    assert!(!checked.has_errors(), "@{name} checks");
    lower(&checked.models[0])
}

/// `@name` optimized at `level`, or by exactly `passes`.
pub fn optimized(name: &str, level: u8, passes: Option<Vec<String>>) -> Module {
    let mut m = preset(name);
    let opts = Options {
        level,
        passes,
        ..Options::default()
    };
    passes::run(&mut m, &opts).unwrap();
    m
}

/// `m` after the passes of `level`, each verified, as the backend takes it:
/// it needs canonical IR, so -O0 runs canonicalize alone (what `mythos
/// compile -O0` does).
pub fn for_backend(mut m: Module, level: u8) -> Module {
    let opts = Options {
        level,
        passes: (level == 0).then(|| vec!["canonicalize".to_string()]),
        verify_each: true,
        ..Options::default()
    };
    passes::run(&mut m, &opts).unwrap();
    m
}

/// `max|a - b| / max|b|`.
pub fn rel(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    let max = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    err / max
}
