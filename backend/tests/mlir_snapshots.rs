//! Snapshots of the verified kernel MLIR (the rendered templates, with the
//! spec's locations) for the tiny GQA and MLA models at -O2, so that a change
//! to a template or to the lowering shows up in review.

use mythos_backend::compile::{compile, Options};
use mythos_compiler::ir::lower::lower;
use mythos_compiler::passes::{self, Options as PassOptions};
use mythos_compiler::sema::{self, Loader};

fn kernel_mlir(name: &str) -> (String, usize) {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, &format!("@{name}"));
    assert!(!checked.has_errors());
    let mut m = lower(&checked.models[0]);
    passes::run(
        &mut m,
        &PassOptions {
            level: 2,
            ..PassOptions::default()
        },
    )
    .unwrap();
    let sources = &loader.sources;
    let locate = |span: mythos_compiler::Span| {
        let f = sources.get(span.file);
        let (line, col) = f.line_col(span.start as usize);
        Some((f.name.clone(), line, col))
    };
    let compiled = compile(&m, &locate, &Options::default()).unwrap();
    (compiled.mlir, compiled.plan.kernels.len())
}

#[test]
fn tiny_gqa_kernels() {
    let (mlir, kernels) = kernel_mlir("tiny-gqa");
    assert_eq!(mlir.matches("func.func @").count(), kernels);
    assert!(
        mlir.contains("loc(\""),
        "kernels carry the spec's locations"
    );
    insta::assert_snapshot!(mlir);
}

#[test]
fn tiny_mla_kernels() {
    let (mlir, kernels) = kernel_mlir("tiny-mla");
    assert_eq!(mlir.matches("func.func @").count(), kernels);
    insta::assert_snapshot!(mlir);
}
