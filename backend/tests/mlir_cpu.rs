//! The mlir-cpu backend against the reference runtime: same logits.

use mythos_backend::compile::{compile, Options};
use mythos_compiler::ir::{Module, Op};
use mythos_compiler::plan::Plan;
use mythos_runtime::cpu::compiled::CompiledKernels;
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::engine::Engine;
use mythos_runtime::weights::Weights;

#[path = "../../runtime/tests/common/fixtures.rs"]
mod fixtures;
#[path = "../../runtime/tests/common/models.rs"]
mod models;
use models::{for_backend as optimized, preset, rel};

/// A preset at `level`.
fn module(name: &str, level: u8) -> Module {
    optimized(preset(name), level)
}

/// Compiles every node of `m` (no fallback to the reference runtime).
fn compile_full(m: &Module, name: &str, level: u8) -> (Vec<u8>, Plan) {
    let compiled = compile(m, &|_| None, &Options::default())
        .unwrap_or_else(|e| panic!("{name} -O{level}: {e}"));
    // Every compute node of every graph (loops stay on the host) is planned.
    let compute: usize = m
        .graphs()
        .planned()
        .map(|(_, info)| {
            let g = info.graph;
            g.nodes()
                .filter(|&n| g.op(n).is_compute() && !matches!(g.op(n), Op::Loop(_)))
                .count()
        })
        .sum();
    assert_eq!(compiled.plan.steps.len(), compute, "{name} -O{level}");
    (compiled.code, compiled.plan)
}

/// Relative errors of the prefill and of the prefill-then-decode logits of
/// the kernels against the reference, with `loops` iterations; asserts that
/// ACT ran the same iterations.
fn parity(
    m: &Module,
    w: &Weights,
    code: &[u8],
    plan: &Plan,
    ids: &[i64],
    loops: Option<u64>,
) -> (f32, f32, u64) {
    let kernels = CompiledKernels::load(code, plan).unwrap();
    let reference = CpuRuntime::new(m, w);
    let ours = CpuRuntime::new(m, w).with_kernels(&kernels).unwrap();
    let p0 = reference.forward(ids, 2, loops, None).unwrap();
    let p1 = ours.forward(ids, 2, loops, None).unwrap();
    let d0 = reference.prefill_then_decode(ids, 2, loops, 4).unwrap();
    let d1 = ours.prefill_then_decode(ids, 2, loops, 4).unwrap();
    assert_eq!(p0.iterations, p1.iterations);
    assert_eq!(d0.iterations, d1.iterations);
    (
        rel(&p1.logits, &p0.logits),
        rel(&d1.logits, &d0.logits),
        p1.iterations,
    )
}

/// Whole models through the compiled kernels (attention GQA/MHA/MLA plain
/// and absorbed, SwiGLU, MoE, ACT, LoRA, LTI, loop embedding, fused groups)
/// and the host KV cache: every compute node planned, logits within 1e-5 of
/// the reference for a prefill, a prefill then single-token decode steps,
/// and a chunked prefill over a cached prefix, with the same ACT iterations.
#[test]
fn compiled_models_match_reference() {
    for (name, level) in [
        ("tiny-gqa", 2),
        ("tiny-gqa", 1),
        ("tiny-mla", 2),
        ("tiny-mla", 1),
        ("tiny-huginn", 2),
        ("tiny-huginn", 1),
        ("tiny-gqa", 0),
    ] {
        let m = module(name, level);
        let (code, plan) = compile_full(&m, name, level);
        let kinds: Vec<&str> = plan
            .kernels
            .iter()
            .map(|k| k.kind.as_str())
            .filter(|k| k.starts_with("attention"))
            .collect();
        if name == "tiny-mla" && level == 2 {
            assert!(kinds.contains(&"attention_mla_absorbed"), "{kinds:?}");
        }
        let kernels = CompiledKernels::load(&code, &plan).unwrap();
        let w = Weights::init(&m, 7);
        let reference = CpuRuntime::new(&m, &w);
        let ours = CpuRuntime::new(&m, &w).with_kernels(&kernels).unwrap();
        let vocab = m.vocab as i64;
        let ids: Vec<i64> = (0..18).map(|i| (i * 29 + 3) % vocab).collect();
        let p0 = reference.forward(&ids, 2, None, None).unwrap();
        let p1 = ours.forward(&ids, 2, None, None).unwrap();
        let d0 = reference.prefill_then_decode(&ids, 2, None, 4).unwrap();
        let d1 = ours.prefill_then_decode(&ids, 2, None, 4).unwrap();
        // Chunks of 3, 2 and 1 tokens per row through one cache.
        let chunked = |rt: &CpuRuntime| {
            let mut cache = mythos_runtime::cpu::kv::KvCache::new();
            let mut logits = Vec::new();
            for (from, to) in [(0, 3), (3, 5), (5, 6)] {
                let step: Vec<i64> = (0..2)
                    .flat_map(|r| ids[r * 9 + from..r * 9 + to].iter().copied())
                    .collect();
                let f = rt.forward(&step, 2, None, Some(&mut cache)).unwrap();
                logits.extend_from_slice(&f.logits);
            }
            (logits, cache.bytes())
        };
        let ((c0, bytes0), (c1, bytes1)) = (chunked(&reference), chunked(&ours));
        let (rp, rd, rc) = (
            rel(&p1.logits, &p0.logits),
            rel(&d1.logits, &d0.logits),
            rel(&c1, &c0),
        );
        println!(
            "{name} -O{level}: {} planned nodes, {} kernels ({kinds:?}); \
             prefill {rp:.2e}, decode {rd:.2e}, chunked {rc:.2e}; cache {bytes1} bytes (reference {bytes0})",
            ours.compiled_nodes(),
            plan.kernels.len()
        );
        assert_eq!(p0.iterations, p1.iterations);
        assert_eq!(d0.iterations, d1.iterations);
        for (what, e) in [("prefill", rp), ("decode", rd), ("chunked", rc)] {
            assert!(e <= 1e-5, "{name} -O{level} {what}: {e:e}");
        }
    }
}

/// The routing bias, the LTI clamp and the LoRA row clamp on weights the
/// reference init leaves at neutral values: a nonzero router bias (it picks
/// experts the scores alone would not), `log_A + log_dt` past both clamp
/// bounds, and more loop iterations than trained (LoRA reuses its last scale
/// row, the loop embedding goes on). With `ties`, the router is zero and
/// every expert ties: the lowest indices must win, as in the reference.
#[test]
fn perturbed_weights_match_reference() {
    for (name, level, ties) in [
        ("tiny-gqa", 2, false),
        ("tiny-mla", 1, false),
        ("tiny-gqa", 1, true),
    ] {
        let m = module(name, level);
        let (code, plan) = compile_full(&m, name, level);
        let mut w = Weights::init(&m, 11);
        for (i, wt) in m.weights.iter().enumerate() {
            let data = &mut w.get_mut(mythos_compiler::ir::WeightId(i as u32)).data;
            let n = data.len();
            if ties && wt.name.contains("ffn.router") {
                data.fill(0.0);
            } else if wt.name.ends_with("router_bias") {
                for (e, v) in data.iter_mut().enumerate() {
                    *v = 0.15 * ((e * 7 % 5) as f32 - 2.0);
                }
            } else if wt.name.ends_with("injection.log_A") {
                for (j, v) in data.iter_mut().enumerate() {
                    *v = -30.0 + 60.0 * j as f32 / (n - 1) as f32;
                }
            } else if wt.name.ends_with("injection.log_dt") {
                data[0] = 0.25;
            } else if wt.name.ends_with("lora.scale.weight") {
                for (j, v) in data.iter_mut().enumerate() {
                    *v = 1.0 + 0.5 * (j as f32).sin();
                }
            }
        }
        let vocab = m.vocab as i64;
        let ids: Vec<i64> = (0..18).map(|i| (i * 53 + 5) % vocab).collect();
        let loops = m
            .graph
            .nodes()
            .find_map(|n| match m.graph.op(n) {
                mythos_compiler::ir::Op::Loop(r) => Some(r.max_iters + 3),
                _ => None,
            })
            .expect("a loop");
        let (rp, rd, iterations) = parity(&m, &w, &code, &plan, &ids, Some(loops));
        println!(
            "{name} -O{level} perturbed (ties {ties}), {loops} loops: prefill {rp:.2e} \
             ({iterations} iterations; decode runs all), decode {rd:.2e}"
        );
        assert!(rp.max(rd) <= 1e-5, "{name} -O{level}: {rp:e} {rd:e}");
    }
}

/// The OpenMythos parity fixtures through the compiled kernels, every node
/// planned, at -O2 and -O0: the reference's logits within 1e-4 relative (the
/// tolerance of the CPU runtime's own parity test), with the iterations the
/// reference ran.
#[test]
fn compiled_kernels_match_openmythos_fixtures() {
    let all = fixtures::manifest();
    assert!(
        all.len() >= 13,
        "expected the parity fixtures, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    for f in &all {
        let io = f.io();
        for level in [2, 0] {
            let m = optimized(f.lowered(), level);
            let (code, plan) = compile_full(&m, &f.name, level);
            let kernels = CompiledKernels::load(&code, &plan).unwrap();
            let w = f.weights(&m);
            let ours = CpuRuntime::new(&m, &w).with_kernels(&kernels).unwrap();
            let (err, max_ref, iterations) = f.compare(&ours, &io);
            println!(
                "mlir-cpu -O{level} {:<30} relative {:.3e}  loop iterations {iterations}",
                f.name,
                err / max_ref
            );
            if err.is_nan() || err > 1e-4 * max_ref {
                failures.push(format!(
                    "-O{level} {}: relative error {:.3e}",
                    f.name,
                    err / max_ref
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}
