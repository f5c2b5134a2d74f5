//! `mythos bench --train`: the time of one training step (forward,
//! backward, clip, AdamW) on random token rows, as `Trainer::step` runs it
//! in `mythos train`, with tokens/s, GFLOP/s and the process's peak memory.

use anyhow::Result;
use mythos_compiler::analysis;
use mythos_compiler::ir::Module;
use mythos_runtime::cpu::grad::Depth;
use mythos_runtime::optim::{AdamWConfig, Schedule};
use mythos_runtime::rng::Rng;
use mythos_runtime::train::{MicroBatch, TrainConfig, Trainer};
use mythos_runtime::weights::Weights;
use serde::Serialize;
use std::time::Instant;

/// Figures of `mythos bench --train`.
#[derive(Serialize)]
pub struct TrainBenchReport {
    pub model: String,
    pub batch: usize,
    pub seq: usize,
    /// The loop count asked for (ACT may stop earlier: see `iterations`).
    pub loops: u64,
    /// Loop iterations the measured steps ran (each).
    pub iterations: u64,
    pub threads: usize,
    /// Steps measured after one warm-up step; the figures are the fastest's.
    pub repeats: usize,
    pub train_step_ms: f64,
    /// The mean over the measured steps.
    pub mean_step_ms: f64,
    pub tokens_per_s: f64,
    /// Three times the forward pass's FLOPs (the usual estimate of forward
    /// plus backward, not counting the loop's recomputation) per second.
    pub gflops: f64,
    /// The process's peak resident memory (VmHWM), weights and AdamW's
    /// moments included.
    pub peak_memory_mib: f64,
}

/// `repeats` training steps of `grad` (the gradient module of `forward`)
/// on `batch` random rows of `seq` tokens at `loops` iterations.
pub fn run(
    forward: &Module,
    grad: &Module,
    weights: Weights,
    (batch, seq): (usize, usize),
    loops: Option<u64>,
    repeats: usize,
) -> Result<TrainBenchReport> {
    let loops_n = loops.unwrap_or_else(|| forward.max_iters());
    let mut rng = Rng::new(0);
    let ids: Vec<i64> = (0..batch * seq)
        .map(|_| (rng.next_u64() % forward.vocab) as i64)
        .collect();
    let targets: Vec<i64> = (0..batch * seq)
        .map(|_| (rng.next_u64() % forward.vocab) as i64)
        .collect();
    let config = TrainConfig {
        adamw: AdamWConfig::default(),
        schedule: Schedule {
            max_lr: 3e-4,
            min_lr: 3e-5,
            warmup: 0,
            total: repeats as u64 + 1,
        },
        clip: Some(1.0),
        router_bias_rate: None,
    };
    let mut trainer = Trainer::new(grad, weights, config);
    let micro = [MicroBatch {
        ids: &ids,
        targets: &targets,
        rows: batch,
    }];
    let depth = Depth::loops(Some(loops_n));
    trainer.step(&micro, depth)?; // warm-up: buffer pools, AdamW's moments
    let (mut best, mut total, mut iterations) = (f64::INFINITY, 0.0, 0);
    let bar = crate::progress::bar(repeats as u64, "{spinner} [{bar:40}] {pos}/{len} steps");
    for _ in 0..repeats {
        let t = Instant::now();
        let r = trainer.step(&micro, depth)?;
        let s = t.elapsed().as_secs_f64();
        (best, total, iterations) = (best.min(s), total + s, r.iterations);
        bar.inc(1);
    }
    bar.finish_and_clear();
    let flops = analysis::analyze(
        forward,
        &analysis::Options {
            seq: seq as u64,
            loops: Some(iterations.max(1)),
            ..Default::default()
        },
    );
    Ok(TrainBenchReport {
        model: forward.name.clone(),
        batch,
        seq,
        loops: loops_n,
        iterations,
        threads: rayon::current_num_threads(),
        repeats,
        train_step_ms: best * 1e3,
        mean_step_ms: total / repeats as f64 * 1e3,
        tokens_per_s: (batch * seq) as f64 / best,
        gflops: 3.0 * flops.flops.prefill_total * batch as f64 / best / 1e9,
        peak_memory_mib: peak_resident_mib().unwrap_or(f64::NAN),
    })
}

/// VmHWM of `/proc/self/status` in MiB (Linux).
fn peak_resident_mib() -> Option<f64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kib / 1024.0)
}
