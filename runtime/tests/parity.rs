//! CPU runtime vs OpenMythos: the committed fixtures of tests/fixtures/parity/
//! (made by tools/parity/make_fixtures.py with open-mythos 0.5.0) must give
//! the reference logits within `max|ours - ref| <= 1e-4 * max|ref|`.

mod common {
    pub mod fixtures;
}
use common::fixtures::{manifest, Fixture};
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::engine::Engine;

fn run_fixture(f: &Fixture, level: u8) -> (f32, f32, u64) {
    let mut module = f.lowered();
    let opts = mythos_compiler::passes::Options {
        level,
        verify_each: true,
        ..Default::default()
    };
    mythos_compiler::passes::run(&mut module, &opts).unwrap();
    let weights = f.weights(&module);
    f.compare(&CpuRuntime::new(&module, &weights), &f.io())
}

#[test]
fn cpu_runtime_matches_openmythos_logits() {
    let all = manifest();
    assert!(
        all.len() >= 8,
        "expected the parity fixtures, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    // The IR as lowered and the fully optimized IR both match the reference.
    for level in [0, 2] {
        for f in &all {
            let (err, max_ref, iterations) = run_fixture(f, level);
            let rel = err / max_ref;
            println!(
                "parity -O{level} {:<24} max|ours-ref| = {err:.3e}  max|ref| = {max_ref:.3}  relative = {rel:.3e}  loop iterations = {iterations}",
                f.name
            );
            // NaN errors fail too.
            if err.is_nan() || err > 1e-4 * max_ref {
                failures.push(format!(
                    "-O{level} {}: relative error {rel:.3e} > 1e-4",
                    f.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `Logits::Last` gives exactly the last position's logits of a full forward.
#[test]
fn last_position_logits_equal_the_full_forward() {
    let f = &manifest()[0];
    let module = f.lowered();
    let weights = f.weights(&module);
    let io = f.io();
    let (ids, b, t) = (&io.ids, io.batch, io.seq);
    let rt = CpuRuntime::new(&module, &weights);
    let all = rt.forward(ids, b, f.loops, None).unwrap();
    let last = rt
        .forward_with(ids, b, f.loops, None, mythos_runtime::cpu::Logits::Last)
        .unwrap();
    let v = module.vocab as usize;
    assert_eq!((last.seq, last.logits.len()), (1, b * v));
    // Equal up to summation order (one row takes the matrix-vector path).
    for r in 0..b {
        let full = &all.logits[((r + 1) * t - 1) * v..(r + 1) * t * v];
        for (a, e) in last.logits[r * v..(r + 1) * v].iter().zip(full) {
            assert!((a - e).abs() <= 1e-6, "{a} vs {e}");
        }
    }
}
