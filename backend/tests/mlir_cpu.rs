//! The mlir-cpu backend against the reference runtime: same logits.

use mythos_backend::compile::{compile, Options};
use mythos_compiler::ir::{lower::lower, Module};
use mythos_compiler::passes::{self, Options as PassOptions};
use mythos_compiler::sema::{self, Loader};
use mythos_runtime::cpu::compiled::CompiledKernels;
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::weights::Weights;

fn module(name: &str, level: u8) -> Module {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, &format!("@{name}"));
    assert!(!checked.has_errors());
    let mut m = lower(&checked.models[0]);
    let opts = PassOptions {
        level,
        verify_each: true,
        ..PassOptions::default()
    };
    passes::run(&mut m, &opts).unwrap();
    m
}

fn rel(a: &[f32], b: &[f32]) -> f32 {
    let max = b.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let err = a
        .iter()
        .zip(b)
        .fold(0.0f32, |m, (x, y)| m.max((x - y).abs()));
    err / max
}

/// Compiles (partially when `partial`), runs a 2x9 prefill and a 5-token
/// prefill + 4 decode steps both ways, and returns the worst relative error.
fn parity(name: &str, level: u8, partial: bool) -> f32 {
    let m = module(name, level);
    let compiled = compile(
        &m,
        &|_| None,
        &Options {
            partial,
            ..Options::default()
        },
    )
    .unwrap_or_else(|e| panic!("{e}"));
    let kernels = CompiledKernels::load(&compiled.code, &compiled.plan).unwrap();
    let w = Weights::init(&m, 7);
    let reference = CpuRuntime::new(&m, &w);
    let ours = CpuRuntime::new(&m, &w).with_kernels(&kernels).unwrap();
    assert!(ours.compiled_nodes() > 0);
    let vocab = m.vocab as i64;
    let ids: Vec<i64> = (0..18).map(|i| (i * 37 + 11) % vocab).collect();
    let p0 = reference.forward(&ids, 2, None, None).unwrap();
    let p1 = ours.forward(&ids, 2, None, None).unwrap();
    let d0 = reference.prefill_then_decode(&ids, 2, None, 5).unwrap();
    let d1 = ours.prefill_then_decode(&ids, 2, None, 5).unwrap();
    let (rp, rd) = (rel(&p1.logits, &p0.logits), rel(&d1.logits, &d0.logits));
    println!(
        "{name} -O{level}: {} kernels, {} planned nodes; prefill {rp:.2e}, decode {rd:.2e}",
        compiled.plan.kernels.len(),
        ours.compiled_nodes()
    );
    assert_eq!(p0.iterations, p1.iterations);
    rp.max(rd)
}

#[test]
fn partial_rowwise_linear_embedding_match_reference() {
    for (name, level) in [("tiny-gqa", 2), ("tiny-mla", 2), ("tiny-mla", 1)] {
        let e = parity(name, level, true);
        assert!(e <= 1e-5, "{name} -O{level}: {e:e}");
    }
}
