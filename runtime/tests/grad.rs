//! The gradient transform end to end on the CPU: `ir::grad::gradient` of a
//! model's unoptimized module, run by the CPU runtime, against central
//! finite differences of the same module's loss, each weight tensor along
//! its gradient's direction and its largest coordinate.
//!
//! Finite differences need a loss without jumps, so these models route
//! every token to every expert (no top-k choice to flip) and start with a
//! halting bias of -4 (no position halts within the loops run); the
//! top-k and halting branches are checked against PyTorch autograd by
//! the fixtures of tests/fixtures/grad/ (tests/grad.rs) and, per rule, by
//! the f64 finite differences of runtime/src/cpu/grad/.

mod common {
    pub mod models;
}

use common::models::preset;
use mythos_compiler::ir::grad::gradient;
use mythos_compiler::ir::verify::verify;
use mythos_compiler::ir::{Module, WeightId};
use mythos_runtime::cpu::grad::Depth;
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::rng::Rng;
use mythos_runtime::weights::Weights;

/// A batch of `rows` x `seq` random ids; targets the next id, with the
/// last position and every fifth one ignored.
fn batch(vocab: u64, rows: usize, seq: usize, seed: u64) -> (Vec<i64>, Vec<i64>) {
    let mut rng = Rng::new(seed);
    let ids: Vec<i64> = (0..rows * seq)
        .map(|_| (rng.next_u64() % vocab) as i64)
        .collect();
    let targets = (0..rows * seq)
        .map(|i| {
            if i % seq == seq - 1 || i % 5 == 3 {
                -100
            } else {
                ids[i + 1]
            }
        })
        .collect();
    (ids, targets)
}

fn loss(m: &Module, w: &Weights, ids: &[i64], targets: &[i64], rows: usize, loops: u64) -> f64 {
    let rt = CpuRuntime::new(m, w);
    f64::from(
        rt.gradient(ids, targets, rows, Depth::loops(Some(loops)))
            .unwrap()
            .loss,
    )
}

/// Every weight's analytic directional derivative against the central
/// difference `(L(w + eps d) - L(w - eps d)) / 2 eps`.
fn check_module(name: &str, forward: &Module, loops: u64) {
    let m = gradient(forward).unwrap();
    let errors = verify(&m);
    assert!(
        errors.is_empty(),
        "{name}: the gradient module does not verify: {errors:?}"
    );
    let mut w = Weights::init(&m, 7);
    if let Some(i) = m
        .weights
        .iter()
        .position(|w| w.name == "recurrent.act.halt.bias")
    {
        w.get_mut(WeightId(i as u32)).data.fill(-4.0);
    }
    let (rows, seq) = (2, 6);
    let (ids, targets) = batch(m.vocab, rows, seq, 11);
    let rt = CpuRuntime::new(&m, &w);
    let g = rt
        .gradient(&ids, &targets, rows, Depth::loops(Some(loops)))
        .unwrap();
    println!("{name}: loss {} after {} iterations", g.loss, g.iterations);
    let mut failed = Vec::new();
    for (id, grad) in &g.grads {
        let name = &m.weights[id.0 as usize].name;
        let gnorm = grad
            .iter()
            .map(|&v| f64::from(v).powi(2))
            .sum::<f64>()
            .sqrt();
        if gnorm == 0.0 {
            continue;
        }
        // Two unit directions: the gradient's own and its largest coordinate.
        let top = (0..grad.len()).fold(0, |b, i| if grad[i].abs() > grad[b].abs() { i } else { b });
        let along: Vec<f64> = grad.iter().map(|&v| f64::from(v) / gnorm).collect();
        let mut coordinate = vec![0.0; grad.len()];
        coordinate[top] = 1.0;
        for (what, d) in [("gradient", along), ("coordinate", coordinate)] {
            let analytic: f64 = grad.iter().zip(&d).map(|(&a, b)| f64::from(a) * b).sum();
            let shifted = |step: f64| {
                let mut w2 = w.clone();
                for (x, dx) in w2.get_mut(*id).data.iter_mut().zip(&d) {
                    *x += (step * dx) as f32;
                }
                loss(&m, &w2, &ids, &targets, rows, loops)
            };
            // Steps that move the loss by 1e-3 down to 3e-5 to first order:
            // f32 losses carry ~1e-6 of rounding noise and curvature grows
            // with the step, so the first step (or the best) that agrees
            // within 1% beyond the noise passes.
            let mut best = (f64::INFINITY, 0.0);
            for change in [1e-3, 3e-4, 1e-4, 3e-5] {
                let step = (change / analytic.abs()).min(0.05);
                let numeric = (shifted(step) - shifted(-step)) / (2.0 * step);
                let slack = (analytic - numeric).abs() - 1e-6 / step;
                let excess = slack / analytic.abs().max(numeric.abs());
                if excess < best.0 {
                    best = (excess, numeric);
                }
                if excess <= 1e-2 {
                    break;
                }
            }
            println!(
                "  {name:50} {what:10} analytic {analytic:+.6e} numeric {:+.6e} excess {:.2e}",
                best.1, best.0
            );
            if best.0 > 1e-2 {
                failed.push(format!("{name} ({what})"));
            }
        }
    }
    assert!(
        failed.is_empty(),
        "{name}: the gradients of {failed:?} disagree with finite differences"
    );
}

/// `text` as a spec file (it may import presets), checked and lowered.
fn spec(name: &str, text: &str) -> Module {
    let path = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!("{name}.mythos"));
    std::fs::write(&path, text).unwrap();
    let mut loader = mythos_compiler::sema::Loader::new();
    let checked = mythos_compiler::sema::check_file(&mut loader, path.to_str().unwrap());
    assert!(!checked.has_errors(), "{name} checks");
    mythos_compiler::ir::lower::lower(checked.models.last().unwrap())
}

/// `@preset` with every token routed to all 4 experts.
fn all_experts(preset: &str) -> Module {
    let model = preset.replace('-', "_");
    spec(
        &format!("{preset}-all-experts"),
        &format!(
            "import \"@{preset}\"\nmodel all_experts extends {model} {{\n  ffn moe {{ top_k = 4 }}\n}}\n"
        ),
    )
}

#[test]
fn gqa_gradient_matches_finite_differences() {
    check_module("tiny-gqa, top_k 4", &all_experts("tiny-gqa"), 3);
}

#[test]
fn mla_gradient_matches_finite_differences() {
    check_module("tiny-mla, top_k 4", &all_experts("tiny-mla"), 3);
}

#[test]
fn huginn_gradient_matches_finite_differences() {
    check_module("tiny-huginn", &preset("tiny-huginn"), 3);
}

/// A loop without input injection (Ouro's form): the body never reads `e`,
/// whose cotangent is then zero (`loop_vjp`'s `zero` list).
#[test]
fn loop_without_injection_gradient_matches_finite_differences() {
    check_module("tiny-ouro", &ouro(), 3);
}

/// A two-layer loop without input injection (Ouro's form).
fn ouro() -> Module {
    spec(
        "tiny-ouro",
        "model tiny_ouro {
  vocab = 256
  dim = 32
  max_seq = 64
  attention gqa { heads = 2, kv_heads = 1 }
  ffn dense { hidden = 48 }
  prelude 1 x block(attention, dense)
  loop max 3 {
    2 x block(attention, dense)
    inject none
    halt act { threshold = 0.9 }
  }
}
",
    )
}

/// Backpropagating through the last k iterations only (Huginn's truncated
/// depth): with k at least the iterations run it is the whole gradient;
/// with fewer, the weights after the loop keep their gradient, the loop's
/// change, and in a loop without injection nothing reaches the prelude
/// (its only path is the detached first iterations).
#[test]
fn truncated_depth_detaches_the_first_iterations() {
    let m = gradient(&ouro()).unwrap();
    let mut w = Weights::init(&m, 3);
    let halt = m
        .weights
        .iter()
        .position(|w| w.name == "recurrent.act.halt.bias");
    w.get_mut(WeightId(halt.unwrap() as u32)).data.fill(-4.0);
    let (ids, targets) = batch(m.vocab, 2, 6, 5);
    let rt = CpuRuntime::new(&m, &w);
    let run = |backprop| {
        let depth = Depth {
            loops: Some(3),
            backprop,
        };
        rt.gradient(&ids, &targets, 2, depth).unwrap()
    };
    let (full, all, last) = (run(None), run(Some(3)), run(Some(1)));
    assert_eq!(full.iterations, 3, "ACT does not stop the loop early");
    assert_eq!(full.loss, last.loss, "the forward pass is the same");
    let of = |g: &mythos_runtime::cpu::grad::Gradient, prefix: &str| -> f64 {
        g.grads
            .iter()
            .filter(|(id, _)| m.weights[id.0 as usize].name.starts_with(prefix))
            .flat_map(|(_, v)| v.iter())
            .map(|&x| f64::from(x).abs())
            .sum()
    };
    assert_eq!(full.grads, all.grads, "k >= iterations: the whole gradient");
    for (prefix, truncated) in [("norm", false), ("recurrent", true)] {
        let (a, b) = (of(&full, prefix), of(&last, prefix));
        assert!(a > 0.0, "{prefix} has a gradient");
        assert_eq!((a - b).abs() > 1e-6 * a, truncated, "{prefix}: {a} vs {b}");
    }
    assert!(of(&full, "prelude") > 0.0);
    assert_eq!(of(&last, "prelude"), 0.0, "no path to the prelude");
}
