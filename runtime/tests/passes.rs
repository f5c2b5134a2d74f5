//! Every optimization pass keeps the logits: the CPU runtime on random
//! weights, before and after each pass of the -O2 pipeline (applied in
//! order), prefill and decode through the cache, GQA and MLA with MoE and
//! ACT, must agree within 1e-5 of max|logits|.

mod common {
    pub mod models;
}
use common::models::{preset as module, rel};
use mythos_compiler::ir::Module;
use mythos_compiler::passes::{self, Options};
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::engine::Engine;
use mythos_runtime::weights::Weights;

/// Logits of a 2x9 prefill, and of the same ids as a 5-token prefill plus 4 decode steps.
fn logits(m: &Module, w: &Weights, loops: Option<u64>) -> (Vec<f32>, Vec<f32>, u64) {
    let vocab = m.vocab as i64;
    let ids: Vec<i64> = (0..18).map(|i| (i * 37 + 11) % vocab).collect();
    let rt = CpuRuntime::new(m, w);
    let prefill = rt.forward(&ids, 2, loops, None).unwrap();
    let decode = rt.prefill_then_decode(&ids, 2, loops, 5).unwrap();
    (
        prefill.logits.into_vec(),
        decode.logits.into_vec(),
        prefill.iterations,
    )
}

fn check(name: &str, loops: Option<u64>) {
    let base = module(name);
    let weights = Weights::init(&base, 7);
    let (p0, d0, it0) = logits(&base, &weights, loops);
    let mut m = base.clone();
    for pass in passes::pipeline(2) {
        let opts = Options {
            passes: Some(vec![pass.to_string()]),
            verify_each: true,
            ..Options::default()
        };
        let r = passes::run(&mut m, &opts).unwrap();
        let (p, d, it) = logits(&m, &weights, loops);
        let (rp, rd) = (rel(&p, &p0), rel(&d, &d0));
        println!(
            "{name} after {pass:<16} ({} rewrites): prefill {rp:.2e}  decode {rd:.2e}",
            r.passes[0].2
        );
        assert!(rp <= 1e-5, "{name}: {pass} moved prefill logits by {rp:e}");
        assert!(rd <= 1e-5, "{name}: {pass} moved decode logits by {rd:e}");
        assert_eq!(it, it0, "{name}: {pass} changed the loop iterations");
    }
}

#[test]
fn passes_keep_logits_tiny_gqa() {
    check("tiny-gqa", None);
}

#[test]
fn passes_keep_logits_tiny_mla() {
    check("tiny-mla", None);
}

#[test]
fn passes_keep_logits_beyond_max_loops_and_concat_injection() {
    check("tiny-mla", Some(6));
    check("tiny-huginn", None);
}
