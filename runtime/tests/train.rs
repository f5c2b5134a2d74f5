//! `train::Trainer` against the reference's training loop: the five-step
//! float64 run of tests/fixtures/train/ (tools/parity/make_train_fixture.py:
//! OpenMythos 0.5.0, AdamW, warmup + cosine, clipping, the same batch each
//! step) — per-step losses and gradient norms, and the final weights.

use mythos_compiler::ir::grad::gradient;
use mythos_compiler::ir::lower::lower;
use mythos_compiler::sema::{self, Loader};
use mythos_runtime::cpu::grad::Depth;
use mythos_runtime::data::{self, DataOptions, TokenWidth};
use mythos_runtime::optim::{AdamWConfig, Schedule};
use mythos_runtime::train::{MicroBatch, TrainConfig, Trainer};
use mythos_runtime::weights::Weights;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("tests/fixtures/train"))
        .find(|p| p.is_dir())
        .expect("tests/fixtures/train/ above the crate")
}

#[test]
fn training_reproduces_the_reference_run() {
    let dir = dir();
    let manifest: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("manifest.json")).unwrap()).unwrap();
    let f = &manifest[0];
    let file = |key: &str| dir.join(f[key].as_str().unwrap());
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, file("spec").to_str().unwrap());
    assert!(!checked.has_errors());
    let forward = lower(sema::select(&checked, f["model"].as_str(), "train fixture").unwrap());
    let module = gradient(&forward).unwrap();
    let weights = Weights::load(&module, &file("weights")).unwrap();
    let opts = DataOptions {
        seq: None,
        width: TokenWidth::U16,
        vocab: module.vocab,
        max_rows: None,
    };
    let rows = data::load(&file("batch"), &opts).unwrap();
    let (o, s) = (&f["optimizer"], &f["schedule"]);
    let num = |v: &serde_json::Value| v.as_f64().unwrap();
    let config = TrainConfig {
        adamw: AdamWConfig {
            betas: (num(&o["betas"][0]), num(&o["betas"][1])),
            eps: num(&o["eps"]),
            weight_decay: num(&o["weight_decay"]),
        },
        schedule: Schedule {
            max_lr: num(&s["max_lr"]),
            min_lr: num(&s["min_lr"]),
            warmup: s["warmup"].as_u64().unwrap(),
            total: s["total"].as_u64().unwrap(),
        },
        clip: Some(num(&f["clip_grad_norm"])),
        router_bias_rate: None,
    };
    let mut trainer = Trainer::new(&module, weights, config);
    let loops = f["loops"].as_u64();
    for want in f["records"].as_array().unwrap() {
        let batch = MicroBatch {
            ids: &rows.input_ids,
            targets: &rows.targets,
            rows: rows.len(),
        };
        let r = trainer.step(&[batch], Depth::loops(loops)).unwrap();
        let (loss, norm, lr) = (
            num(&want["loss"]),
            num(&want["grad_norm"]),
            num(&want["lr"]),
        );
        println!(
            "step {}: loss {:.7} (ref {loss:.7}), grad norm {:.6} (ref {norm:.6}), lr {}",
            r.step, r.loss, r.grad_norm, r.lr
        );
        assert!(
            (r.lr - lr).abs() <= 1e-12 * lr.max(1e-3),
            "step {}: lr",
            r.step
        );
        assert!(
            (r.loss - loss).abs() <= 1e-5 * loss,
            "step {}: loss {} against {loss}",
            r.step,
            r.loss
        );
        assert!(
            (r.grad_norm - norm).abs() <= 1e-4 * norm,
            "step {}: grad norm {} against {norm}",
            r.step,
            r.grad_norm
        );
        assert_eq!(r.iterations, want["iterations"].as_u64().unwrap());
    }
    // Final weights: per tensor within 1e-4 of its largest value.
    let want = Weights::load(&module, &file("final")).unwrap();
    let mut worst = (0.0f64, String::new());
    for (i, w) in module.weights.iter().enumerate() {
        let (a, b) = (&trainer.weights.tensors()[i].data, &want.tensors()[i].data);
        let max = b.iter().fold(0.0f64, |m, &v| m.max(f64::from(v).abs()));
        let err = a
            .iter()
            .zip(b)
            .fold(0.0f64, |m, (&x, &y)| m.max(f64::from(x - y).abs()));
        assert!(
            err <= 1e-4 * max,
            "{}: max|ours - ref| {err:.3e}, max|ref| {max:.3e}",
            w.name
        );
        let ratio = if max > 0.0 { err / (1e-4 * max) } else { 0.0 };
        if ratio > worst.0 {
            worst = (ratio, w.name.clone());
        }
    }
    println!(
        "final weights: worst {:.3} of the tolerance ({})",
        worst.0, worst.1
    );
}
