//! `measure = ["train"]`: every trial is trained with `mythos train`'s
//! semantics, once per seed, in `OUT/trials/HASH/seed-K/`, and scored at
//! each test-time loop count of `[eval]`. A training stops at a budget
//! (a rung of `[early_stop]`, or `steps`) with a checkpoint, and its
//! scores at that budget are written as `rung-B.json` beside it: a sweep
//! that is killed resumes each training from its checkpoint and never
//! scores a rung twice.

use super::journal::Entry;
use super::spec::{SweepFile, TrainTable};
use super::{Planned, Prepared};
use crate::run::WeightSource;
use crate::train::{Control, LoopPolicy, Settings};
use anyhow::{Context, Result};
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::data::DataOptions;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

/// One training of a trial: one seed.
pub struct Run {
    pub seed: u64,
    pub dir: PathBuf,
    pub settings: Settings,
}

/// A data source of the sweep file `file`: a task as written, a path
/// relative to the sweep file's folder, made absolute (so that a trial has
/// the same settings and hash wherever the sweep is started from, a Slurm
/// task included).
pub fn resolve_data(file: &Path, data: &str) -> String {
    if mythos_runtime::tasks::is_task(data) {
        return data.to_string();
    }
    let dir = file.parent().unwrap_or(Path::new(""));
    let path = dir.join(data);
    std::fs::canonicalize(&path)
        .unwrap_or(path)
        .display()
        .to_string()
}

fn table(sweep: &SweepFile) -> &TrainTable {
    sweep
        .train
        .as_ref()
        .expect("measure = [\"train\"] comes with [train] (checked when the sweep file is read)")
}

/// The training settings of the point `choice` for `seed`.
fn settings(sweep: &SweepFile, file: &Path, choice: &[usize], seed: u64) -> Settings {
    let t = table(sweep);
    t.settings(
        &sweep.train_overrides(choice),
        seed,
        &resolve_data(file, &t.data),
    )
}

/// Reads the training data of `t` (and `[eval]`'s) as the trials will, so
/// that a bad data file is an error before anything trains; the tokens
/// per row of the training data, or the error and where the data is named.
pub fn check_data(
    file: &Path,
    sweep: &SweepFile,
    vocab: u64,
) -> std::result::Result<usize, (Option<mythos_compiler::source::Span>, anyhow::Error)> {
    let t = table(sweep);
    let open = |data: &str| -> Result<usize> {
        if matches!(t.tokenizer, Some(crate::text::TokenizerChoice::Bpe(_))) {
            // The tokenizer is trained with the first trial.
            return Ok(t.seq.unwrap_or(0));
        }
        let opts = DataOptions {
            seq: t.seq,
            width: mythos_runtime::data::TokenWidth::U16,
            vocab,
            max_rows: Some(1),
        };
        let rows = crate::text::open(&resolve_data(file, data), &opts, t.tokenizer.as_ref(), None)?;
        Ok(rows.seq)
    };
    let row_tokens = open(&t.data).map_err(|e| (t.data_span, e.context("[train] data")))?;
    if let Some(d) = &sweep.eval.data {
        open(d).map_err(|e| (sweep.eval.data_span, e.context("[eval] data")))?;
    }
    Ok(row_tokens)
}

/// The trainings of `planned`, one per seed.
pub fn runs(p: &Prepared, planned: &Planned) -> Vec<Run> {
    (0..table(&p.sweep).seeds)
        .map(|seed| Run {
            seed,
            dir: trial_dir(p, &planned.hash).join(format!("seed-{seed}")),
            settings: settings(&p.sweep, &p.file, &planned.point.choice, seed),
        })
        .collect()
}

pub fn trial_dir(p: &Prepared, hash: &str) -> PathBuf {
    p.out_dir.join("trials").join(hash)
}

/// The training steps of a trial's point (the same for every seed).
pub fn steps(p: &Prepared, planned: &Planned) -> u64 {
    settings(&p.sweep, &p.file, &planned.point.choice, 0).steps
}

/// The part of a trial's identity that its training adds: the settings of
/// every seed and how they are scored.
pub fn key(sweep: &SweepFile, file: &Path, choice: &[usize]) -> String {
    let all: Vec<String> = (0..table(sweep).seeds)
        .map(|seed| serde_json::to_string(&settings(sweep, file, choice, seed)).unwrap_or_default())
        .collect();
    let e = &sweep.eval;
    format!(
        ";train={};eval={:?}:{:?}:{}",
        all.join("|"),
        e.data.as_ref().map(|d| resolve_data(file, d)),
        e.loops,
        e.batch
    )
}

/// A trial trained to a budget: the mean over seeds of each metric, their
/// spread and each seed's own.
pub struct Trained {
    pub mean: BTreeMap<String, f64>,
    pub spread: BTreeMap<String, f64>,
    pub runs: Vec<BTreeMap<String, f64>>,
}

/// The training steps the trained trials among `trials` ran, over all their
/// seeds, and the steps training each of them to the end takes.
pub fn steps_run<'t>(
    p: &Prepared,
    trials: impl Iterator<Item = (&'t Planned, &'t Entry)>,
) -> (f64, f64) {
    let (mut run, mut full) = (0.0, 0.0);
    for (planned, e) in trials {
        if let Some(&steps) = e.metrics.get("train.steps") {
            let seeds = e.runs.len().max(1) as f64;
            run += steps * seeds;
            full += self::steps(p, planned) as f64 * seeds;
        }
    }
    (run, full)
}

/// Drops what training added to `e` (its static and CPU metrics stay), so
/// that the next budget's scores take their place.
pub fn forget(e: &mut Entry) {
    e.metrics
        .retain(|k, _| !k.starts_with("train.") && !k.starts_with("eval."));
    e.spread.clear();
    e.runs.clear();
}

impl Trained {
    /// Adds the trained metrics to a trial's (static) entry.
    pub fn record(self, entry: &mut Entry) {
        entry.metrics.extend(self.mean);
        entry.spread = self.spread;
        entry.runs = self.runs;
    }
}

/// Trains every seed of `planned` to `budget` and scores them; `Ok(None)`
/// when `stop` (Ctrl-C) interrupted a training (its checkpoint is saved).
pub fn train_to(
    p: &Prepared,
    planned: &Planned,
    budget: u64,
    stop: &Arc<AtomicBool>,
) -> Result<Option<Trained>> {
    let mut per_seed = Vec::new();
    for run in runs(p, planned) {
        match rung(p, planned, &run, budget, stop)? {
            Some(m) => per_seed.push(m),
            None => return Ok(None),
        }
    }
    let (mean, spread) = aggregate(&per_seed);
    Ok(Some(Trained {
        mean,
        spread,
        runs: per_seed,
    }))
}

/// Trains `run` to `budget` steps (resuming from its checkpoint) and scores
/// it; `Ok(None)` when Ctrl-C stopped it (its checkpoint is saved).
fn rung(
    p: &Prepared,
    planned: &Planned,
    run: &Run,
    budget: u64,
    stop: &Arc<AtomicBool>,
) -> Result<Option<BTreeMap<String, f64>>> {
    let file = run.dir.join(format!("rung-{budget}.json"));
    if let Ok(text) = std::fs::read_to_string(&file) {
        if let Ok(m) = serde_json::from_str::<BTreeMap<String, f64>>(&text) {
            return Ok(Some(m));
        }
    }
    let model = super::trial::load(&p.base, &planned.text).map_err(anyhow::Error::msg)?;
    let s = &run.settings;
    let prepared = crate::run::Prepared::new(&model, &WeightSource::Seed(run.seed), s.no_act)?;
    let grad = crate::grad::module(&prepared.module)?;
    let control = Control {
        until: Some(budget),
        quiet: true,
        stop: stop.clone(),
    };
    let finished = crate::train::train(prepared, &grad, s, &run.dir, &control)?;
    if finished.interrupted {
        return Ok(None);
    }
    let mut metrics = training_metrics(&run.dir.join("metrics.jsonl"), budget)?;
    metrics.extend(score(p, &model, run)?);
    let text = serde_json::to_string_pretty(&metrics)? + "\n";
    let tmp = file.with_extension("json.tmp");
    std::fs::write(&tmp, text).with_context(|| format!("cannot write {}", tmp.display()))?;
    std::fs::rename(&tmp, &file).with_context(|| format!("cannot write {}", file.display()))?;
    Ok(Some(metrics))
}

/// `train.*` from the first `budget` lines of `metrics.jsonl`: the mean
/// loss of the last tenth of the steps, the steps' own time (validation
/// excluded) and their tokens per second.
fn training_metrics(path: &Path, budget: u64) -> Result<BTreeMap<String, f64>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    // (loss, tokens/s, seconds) of each step.
    let lines: Vec<(f64, f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["step"].as_u64().is_some_and(|st| st < budget))
        .filter_map(|v| {
            Some((
                v["loss"].as_f64()?,
                v["tokens_per_s"].as_f64()?,
                v["seconds"].as_f64()?,
            ))
        })
        .collect();
    if lines.is_empty() {
        anyhow::bail!(
            "{} has no steps before {budget}: delete the trial's folder to train it again",
            path.display()
        );
    }
    let tail = (lines.len() / 10).max(1);
    let loss = lines[lines.len() - tail..].iter().map(|l| l.0).sum::<f64>() / tail as f64;
    let seconds: f64 = lines.iter().map(|l| l.2).sum();
    let tokens: f64 = lines.iter().map(|l| l.1 * l.2).sum();
    Ok(BTreeMap::from([
        ("train.loss".to_string(), loss),
        ("train.steps".to_string(), budget as f64),
        ("train.seconds".to_string(), seconds),
        ("train.tokens_per_s".to_string(), tokens / seconds),
    ]))
}

/// `eval.*`: the trained weights at every test-time loop count.
fn score(
    p: &Prepared,
    model: &mythos_compiler::model::Model,
    run: &Run,
) -> Result<BTreeMap<String, f64>> {
    let s = &run.settings;
    let weights = run.dir.join("weights.safetensors");
    let trained = crate::run::Prepared::new(model, &WeightSource::File(&weights), s.no_act)?;
    let module = &trained.module;
    let rows = match &p.sweep.eval.data {
        Some(d) => {
            let opts = DataOptions {
                seq: s.seq,
                width: s.width,
                vocab: module.vocab,
                max_rows: None,
            };
            let tokenizer = s.tokenizer.as_ref().map(|t| match t {
                crate::text::TokenizerChoice::Bpe(_) => {
                    crate::text::TokenizerChoice::File(run.dir.join("tokenizer.json"))
                }
                other => other.clone(),
            });
            crate::text::open(&resolve_data(&p.file, d), &opts, tokenizer.as_ref(), None)?
        }
        None => crate::train::split(s, module.vocab, &run.dir)?.1,
    };
    if rows.is_empty() {
        anyhow::bail!(
            "no rows to score: [train] val_rows = 0 holds none out and [eval] names no data"
        );
    }
    let trained_depth = match s.loops {
        LoopPolicy::Fixed(n) => n,
        _ => module.max_iters(),
    };
    let mut loops = p.sweep.eval.loops.clone();
    loops.push(trained_depth);
    loops.sort_unstable();
    loops.dedup();
    let rt = CpuRuntime::new(module, &trained.weights);
    let start = std::time::Instant::now();
    let curve = crate::eval::depth_curve(&rt, &rows, &loops, p.sweep.eval.batch, false)?;
    let mut m = BTreeMap::new();
    for point in &curve {
        m.insert(format!("eval.loss@loops={}", point.loops), point.loss);
        m.insert(format!("eval.acc@loops={}", point.loops), point.accuracy);
        if point.loops == trained_depth {
            m.insert("eval.loss".to_string(), point.loss);
            m.insert("eval.acc".to_string(), point.accuracy);
            m.insert("eval.ppl".to_string(), point.perplexity);
        }
    }
    let deepest = curve.last().map_or(0.0, |p| p.accuracy);
    m.insert(
        "eval.depth_gain".to_string(),
        deepest - m.get("eval.acc").copied().unwrap_or(0.0),
    );
    m.insert("eval.seconds".to_string(), start.elapsed().as_secs_f64());
    Ok(m)
}

/// The mean over seeds of every metric, and the standard deviation of
/// those that vary (with two or more seeds).
pub fn aggregate(
    per_seed: &[BTreeMap<String, f64>],
) -> (BTreeMap<String, f64>, BTreeMap<String, f64>) {
    let mut mean = BTreeMap::new();
    let mut spread = BTreeMap::new();
    let n = per_seed.len() as f64;
    for key in per_seed.first().map(|m| m.keys()).into_iter().flatten() {
        let xs: Vec<f64> = per_seed
            .iter()
            .filter_map(|m| m.get(key).copied())
            .collect();
        if xs.len() != per_seed.len() {
            continue;
        }
        let mu = xs.iter().sum::<f64>() / n;
        mean.insert(key.clone(), mu);
        if xs.len() > 1 {
            let var = xs.iter().map(|x| (x - mu).powi(2)).sum::<f64>() / (n - 1.0);
            spread.insert(key.clone(), var.sqrt());
        }
    }
    (mean, spread)
}

/// Removes the checkpoints of a finished trial's trainings (unless
/// `[train] keep_checkpoints`): weights, metrics and plots stay.
pub fn prune_checkpoints(p: &Prepared, entry: &Entry) {
    if table(&p.sweep).keep_checkpoints {
        return;
    }
    let dir = trial_dir(p, &entry.hash);
    let Ok(seeds) = std::fs::read_dir(&dir) else {
        return;
    };
    for seed in seeds.flatten() {
        let Ok(files) = std::fs::read_dir(seed.path()) else {
            continue;
        };
        for f in files.flatten() {
            if f.file_name().to_string_lossy().starts_with("checkpoint") {
                let path = f.path();
                let _ = if path.is_dir() {
                    std::fs::remove_dir_all(&path)
                } else {
                    std::fs::remove_file(&path)
                };
            }
        }
    }
}
