//! `mythos train`: the reference training script's loop (AdamW, linear
//! warmup then cosine, grad-norm clipping, gradient accumulation) on the CPU
//! over a data file or a synthetic task, with `metrics.jsonl`, the latest
//! `weights.safetensors`, a loss plot, atomic checkpoints and an exact
//! resume (docs/training.md).

use crate::checkpoint::{self, State};
use crate::run::Prepared;
use crate::text::TokenizerChoice;
use anyhow::{bail, Context, Result};
use mythos_compiler::ir::Module;
use mythos_runtime::cpu::grad::Depth;
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::data::{DataOptions, Rows, TokenWidth};
use mythos_runtime::optim::{AdamWConfig, Schedule};
use mythos_runtime::rng::{fnv1a64, Rng};
use mythos_runtime::train::{MicroBatch, StepReport, TrainConfig, Trainer};
use mythos_runtime::weights::Weights;
use serde::Serialize;
use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// What `mythos train` was asked for (its flags).
#[derive(Clone, Debug, Serialize)]
pub struct Settings {
    pub data: String,
    pub seq: Option<usize>,
    /// How text data is tokenized (`None`: bytes, or not text); not
    /// written when `None`, so runs from before the flag resume.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub tokenizer: Option<TokenizerChoice>,
    #[serde(skip)]
    pub width: TokenWidth,
    pub steps: u64,
    pub batch: usize,
    pub accum: usize,
    pub lr: f64,
    pub min_lr: f64,
    pub warmup: u64,
    pub weight_decay: f64,
    pub clip: Option<f64>,
    pub loops: LoopPolicy,
    /// Backpropagate through the last this many iterations only.
    pub backprop: Option<u64>,
    /// Rows held out of the data's end for validation (`None`: a tenth,
    /// at most 256).
    pub val_rows: Option<usize>,
    /// Seeds the data order and the loop counts.
    pub seed: u64,
    pub shuffle: bool,
    #[serde(skip)]
    pub save_every: u64,
    /// Validate every this many steps (and at the end); 0: only at the end.
    #[serde(skip)]
    pub val_every: u64,
    /// ACT halting off (`--no-act`); not written when false, so runs from
    /// before the flag resume.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub no_act: bool,
    /// DeepSeek-V3's router-bias update rate (`--router-bias-rate`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub router_bias_rate: Option<f64>,
}

/// How many loop iterations each training step runs.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub enum LoopPolicy {
    /// The spec's `max_loop_iters` (the reference's training).
    Max,
    Fixed(u64),
    /// Uniform in `lo..=hi`, drawn per step.
    Uniform {
        lo: u64,
        hi: u64,
    },
    /// Huginn's draw per step: `1 + Poisson(exp(tau))`, `tau ~ N(ln(mean) -
    /// sigma^2 / 2, sigma)`, sigma 0.5 (the mean is `mean + 1`).
    PoissonLognormal {
        mean: f64,
    },
}

/// The most iterations one step may draw.
const MAX_LOOPS: u64 = 1 << 16;

impl std::str::FromStr for LoopPolicy {
    type Err = String;

    fn from_str(text: &str) -> Result<LoopPolicy, String> {
        let bad = || {
            format!(
                "`{text}` is not a loop policy: write N (fixed), A..B (uniform, both included) or \
                 poisson:MEAN (Huginn's Poisson-lognormal)"
            )
        };
        let count = |t: &str| -> Result<u64, String> {
            match t.trim().parse::<u64>() {
                Ok(n) if (1..=MAX_LOOPS).contains(&n) => Ok(n),
                _ => Err(format!(
                    "`{t}`: a loop count is a whole number in 1..={MAX_LOOPS}"
                )),
            }
        };
        if let Some(mean) = text.strip_prefix("poisson:") {
            return match mean.trim().parse::<f64>() {
                Ok(m) if m > 0.0 && m <= 1024.0 => Ok(LoopPolicy::PoissonLognormal { mean: m }),
                _ => Err(format!("{}; the mean must be in (0, 1024]", bad())),
            };
        }
        if let Some((lo, hi)) = text.split_once("..") {
            let (lo, hi) = (count(lo)?, count(hi)?);
            if lo > hi {
                return Err(format!("`{text}`: the range is empty"));
            }
            return Ok(LoopPolicy::Uniform { lo, hi });
        }
        if text.chars().all(|c| c.is_ascii_digit()) && !text.is_empty() {
            return Ok(LoopPolicy::Fixed(count(text)?));
        }
        Err(bad())
    }
}

impl LoopPolicy {
    /// The loop count of step `step` (`None`: the spec's maximum), the same
    /// for a resumed run.
    pub fn draw(&self, seed: u64, step: u64) -> Option<u64> {
        let mut rng = Rng::new(
            fnv1a64(b"mythos.train.loops") ^ seed ^ step.wrapping_mul(0x9E37_79B9_7F4A_7C15),
        );
        match *self {
            LoopPolicy::Max => None,
            LoopPolicy::Fixed(n) => Some(n),
            LoopPolicy::Uniform { lo, hi } => Some(lo + rng.next_u64() % (hi - lo + 1)),
            LoopPolicy::PoissonLognormal { mean } => {
                let sigma = 0.5;
                let tau = mean.ln() - sigma * sigma / 2.0 + sigma * rng.normal();
                Some((1 + poisson(&mut rng, tau.exp())).min(MAX_LOOPS))
            }
        }
    }
}

/// A Poisson draw (Knuth's product of uniforms, in chunks of rate 500 so
/// that `exp(-rate)` stays a normal float; a sum of Poissons is Poisson).
fn poisson(rng: &mut Rng, rate: f64) -> u64 {
    let (mut n, mut rest) = (0u64, rate.min(1e6));
    while rest > 0.0 {
        let chunk = rest.min(500.0);
        rest -= chunk;
        let limit = (-chunk).exp();
        let mut p = 1.0;
        loop {
            p *= rng.uniform_f64();
            if p <= limit {
                break;
            }
            n += 1;
        }
    }
    n
}

/// One line of `metrics.jsonl`.
#[derive(Serialize)]
struct Metrics {
    step: u64,
    loss: f64,
    lr: f64,
    grad_norm: f64,
    tokens_per_s: f64,
    /// The step's own time (before any validation).
    seconds: f64,
    iterations: u64,
    /// The busiest expert's load over the mean (MoEs with a router bias).
    #[serde(skip_serializing_if = "Option::is_none")]
    load_imbalance: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    val_loss: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    val_accuracy: Option<f64>,
}

/// The rows of epoch `epoch` in the order they are used: shuffled by a
/// Fisher-Yates draw seeded from `seed` and the epoch (so a resumed run
/// finds the same order from the cursor alone), or in file order.
fn order(rows: usize, seed: u64, epoch: u64, shuffle: bool) -> Vec<usize> {
    let mut v: Vec<usize> = (0..rows).collect();
    if shuffle {
        let mut rng = Rng::new(seed ^ epoch.wrapping_mul(0x9E37_79B9_7F4A_7C15));
        for i in (1..rows).rev() {
            let j = (rng.next_u64() % (i as u64 + 1)) as usize;
            v.swap(i, j);
        }
    }
    v
}

/// The next `n` rows from `cursor` (wrapping into the next epoch).
fn take(rows: &Rows, s: &Settings, cursor: &mut u64, n: usize) -> (Vec<i64>, Vec<i64>) {
    let len = rows.len() as u64;
    let (mut ids, mut targets) = (Vec::new(), Vec::new());
    let mut epoch_order = (u64::MAX, Vec::new());
    for _ in 0..n {
        let epoch = *cursor / len;
        if epoch_order.0 != epoch {
            epoch_order = (epoch, order(rows.len(), s.seed, epoch, s.shuffle));
        }
        let r = epoch_order.1[(*cursor % len) as usize];
        let (i, t) = rows.slice(r, 1);
        ids.extend_from_slice(i);
        targets.extend_from_slice(t);
        *cursor += 1;
    }
    (ids, targets)
}

/// Keeps the lines of `metrics.jsonl` before step `step` (a killed run's
/// lines past its last checkpoint are run again).
fn truncate_metrics(path: &Path, step: u64) -> Result<()> {
    let Ok(text) = std::fs::read_to_string(path) else {
        return Ok(());
    };
    let kept: String = text
        .lines()
        .filter(|l| {
            serde_json::from_str::<serde_json::Value>(l)
                .ok()
                .and_then(|v| v["step"].as_u64())
                .is_some_and(|s| s < step)
        })
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(path, kept).with_context(|| format!("cannot rewrite {}", path.display()))
}

/// The loss curve of `metrics.jsonl` as `loss.svg`.
fn plot(out: &Path, model: &str) -> Result<()> {
    let text = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap_or_default();
    let points: Vec<(f64, f64)> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter_map(|v| Some((v["step"].as_f64()?, v["loss"].as_f64()?)))
        .collect();
    let svg = crate::plot::line(&format!("{model}: training loss"), "step", "loss", &points);
    std::fs::write(out.join("loss.svg"), svg)?;
    Ok(())
}

/// The loss and answer accuracy of `weights` on the validation rows, at
/// the spec's depth (or the fixed one trained at).
fn validate(forward: &Module, weights: &Weights, val: &Rows, s: &Settings) -> Result<(f64, f64)> {
    let rt = CpuRuntime::new(forward, weights);
    let loops = match s.loops {
        LoopPolicy::Fixed(n) => n,
        _ => forward.max_iters(),
    };
    let point = &crate::eval::depth_curve(&rt, val, &[loops], s.batch, false)?[0];
    Ok((point.loss, point.accuracy))
}

/// Splits the last `n` rows off `rows`.
fn hold_out(rows: &mut Rows, n: usize) -> Rows {
    let keep = rows.len() - n;
    let (ids, targets) = rows.slice(keep, n);
    let val = Rows {
        seq: rows.seq,
        input_ids: ids.to_vec(),
        targets: targets.to_vec(),
    };
    rows.truncate(keep);
    val
}

/// How a caller steers a run beyond its [`Settings`].
pub struct Control {
    /// Stop after this step (with a checkpoint there) though the schedule
    /// spans `--steps`: a sweep's budget rung. `None`: run to the end.
    pub until: Option<u64>,
    /// No progress bar (a sweep draws its own).
    pub quiet: bool,
    /// Set by Ctrl-C: save a checkpoint and return.
    pub stop: Arc<AtomicBool>,
}

/// How a run ended.
pub struct Finished {
    /// Optimizer steps done (the checkpoint's step).
    pub step: u64,
    /// Stopped by [`Control::stop`] before its end.
    pub interrupted: bool,
    /// The last step this call ran and its validation, if it ran any.
    pub last: Option<(StepReport, Option<(f64, f64)>)>,
}

/// The data of `s`, tokenized for `vocab`, split into training rows and
/// the validation rows held out of its end.
pub fn split(s: &Settings, vocab: u64, out: &Path) -> Result<(Rows, Rows)> {
    let opts = DataOptions {
        seq: s.seq,
        width: s.width,
        vocab,
        max_rows: None,
    };
    let mut rows = crate::text::open(&s.data, &opts, s.tokenizer.as_ref(), Some(out))?;
    let val_rows = s.val_rows.unwrap_or((rows.len() / 10).min(256));
    if rows.len() <= val_rows {
        bail!(
            "--data `{}` holds {} rows: too few to hold out --val-rows {} for validation and train on the rest",
            s.data,
            rows.len(),
            val_rows
        );
    }
    let val = hold_out(&mut rows, val_rows);
    if val_rows > 0 && val.scored() == 0 {
        bail!(
            "the last {} rows of --data `{}` (the validation rows) have no scored positions; raise --val-rows",
            val_rows,
            s.data
        );
    }
    if rows.scored() == 0 {
        bail!(
            "--data `{}` has no scored positions (every target is -100)",
            s.data
        );
    }
    Ok((rows, val))
}

/// `mythos train`: trains as `s` says in `out` (resuming from its
/// checkpoint), registers Ctrl-C, prints the summary line.
pub fn run(model: Prepared, grad: &Module, s: &Settings, out: &Path) -> Result<()> {
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    let control = Control {
        until: None,
        quiet: false,
        stop,
    };
    let f = train(model, grad, s, out, &control)?;
    if f.interrupted {
        eprintln!(
            "interrupted: checkpoint at step {} saved in {}; run the same command to resume",
            f.step,
            out.display()
        );
        return Ok(());
    }
    if let Some((r, validated)) = f.last {
        let val = validated.map_or(String::new(), |(loss, acc)| {
            format!(", validation loss {loss:.4} accuracy {:.2}%", 100.0 * acc)
        });
        println!(
            "{}: step {} loss {:.4} (lr {:.2e}, grad norm {:.3}){val}; wrote {}/weights.safetensors, metrics.jsonl, loss.svg",
            grad.name,
            r.step + 1,
            r.loss,
            r.lr,
            r.grad_norm,
            out.display()
        );
    } else {
        println!(
            "{}: already trained for {} steps in {}",
            grad.name,
            s.steps,
            out.display()
        );
    }
    Ok(())
}

/// Trains `grad` (the gradient module of `model`'s forward module) from
/// `model`'s weights as `s` says, in `out`, up to `control.until`; resumes
/// from `out`'s checkpoint when there is one.
pub fn train(
    mut model: Prepared,
    grad: &Module,
    s: &Settings,
    out: &Path,
    control: &Control,
) -> Result<Finished> {
    let weights = std::mem::take(&mut model.weights);
    let forward = &model.module;
    if s.steps == 0 || s.batch == 0 || s.accum == 0 {
        bail!("--steps, --batch and --accum must be at least 1");
    }
    if s.router_bias_rate.is_some()
        && !grad
            .weights
            .iter()
            .any(|w| w.name.ends_with(".router_bias"))
    {
        bail!(
            "--router-bias-rate: {} has no MoE with a router_bias to update (drop the flag)",
            grad.name
        );
    }
    std::fs::create_dir_all(out).with_context(|| format!("cannot create {}", out.display()))?;
    let (rows, val) = split(s, grad.vocab, out)?;
    let end = control.until.unwrap_or(s.steps).min(s.steps);
    let config = TrainConfig {
        adamw: AdamWConfig {
            weight_decay: s.weight_decay,
            ..AdamWConfig::default()
        },
        schedule: Schedule {
            max_lr: s.lr,
            min_lr: s.min_lr,
            warmup: s.warmup,
            total: s.steps,
        },
        clip: s.clip,
        router_bias_rate: s.router_bias_rate,
    };
    let settings = serde_json::to_value(s)?;
    let mut trainer = Trainer::new(grad, weights, config);
    let mut cursor = 0u64;
    if let Some(ck) = checkpoint::find(out) {
        let state = checkpoint::load(&ck, grad, &mut trainer)?;
        if state.settings != settings {
            bail!(
                "{} was trained with other settings ({}); resume with the same flags, or use a new --out",
                out.display(),
                state.settings
            );
        }
        cursor = state.cursor;
        if !control.quiet {
            eprintln!("resuming {} from step {}", out.display(), state.step);
        }
    }
    let metrics_path = out.join("metrics.jsonl");
    truncate_metrics(&metrics_path, trainer.step)?;
    let mut metrics = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&metrics_path)
        .with_context(|| format!("cannot open {}", metrics_path.display()))?;
    let state_of = |trainer: &Trainer, cursor: u64| State {
        schema: checkpoint::SCHEMA.into(),
        model: grad.name.clone(),
        step: trainer.step,
        cursor,
        adam_steps: trainer.optimizer.steps.clone(),
        settings: settings.clone(),
    };
    let bar = if control.quiet {
        indicatif::ProgressBar::hidden()
    } else {
        crate::progress::bar(
            s.steps,
            "{spinner} [{bar:40}] {pos}/{len} steps  {msg}  ETA {eta}",
        )
    };
    bar.set_position(trainer.step);
    let mut last: Option<(StepReport, Option<(f64, f64)>)> = None;
    while trainer.step < end {
        let start = Instant::now();
        let mut next = cursor;
        let micro: Vec<(Vec<i64>, Vec<i64>)> = (0..s.accum)
            .map(|_| take(&rows, s, &mut next, s.batch))
            .collect();
        let batches: Vec<MicroBatch> = micro
            .iter()
            .map(|(ids, targets)| MicroBatch {
                ids,
                targets,
                rows: s.batch,
            })
            .collect();
        let depth = Depth {
            loops: s.loops.draw(s.seed, trainer.step),
            backprop: s.backprop,
        };
        let r = trainer.step(&batches, depth)?;
        let finite = |w: &Weights| {
            w.tensors()
                .iter()
                .all(|t| t.data.iter().all(|x| x.is_finite()))
        };
        // Nothing of a diverged step is saved: the last checkpoint stays.
        let diverged = |why: String| {
            anyhow::anyhow!(
                "training diverged at step {}: {why}; the last good checkpoint is kept in {} \
                 (lower --lr, or raise --warmup)",
                r.step,
                out.display()
            )
        };
        if !r.loss.is_finite() || !r.grad_norm.is_finite() || !finite(&trainer.weights) {
            return Err(diverged(format!(
                "loss {}, grad norm {}, weights after the update {}",
                r.loss,
                r.grad_norm,
                if finite(&trainer.weights) {
                    "finite"
                } else {
                    "not finite"
                }
            )));
        }
        cursor = next;
        // The step's own speed, before any validation.
        let tokens = (s.batch * s.accum * rows.seq) as f64;
        let seconds = start.elapsed().as_secs_f64();
        let tokens_per_s = tokens / seconds;
        let done = trainer.step == end;
        let validated = (!val.is_empty()
            && (done || (s.val_every > 0 && trainer.step % s.val_every == 0)))
            .then(|| validate(forward, &trainer.weights, &val, s))
            .transpose()
            .map_err(|e| diverged(format!("on the validation rows, {e}")))?;
        let m = Metrics {
            step: r.step,
            loss: r.loss,
            lr: r.lr,
            grad_norm: r.grad_norm,
            tokens_per_s,
            seconds,
            iterations: r.iterations,
            load_imbalance: r.load_imbalance,
            val_loss: validated.map(|v| v.0),
            val_accuracy: validated.map(|v| v.1),
        };
        writeln!(metrics, "{}", serde_json::to_string(&m)?)?;
        metrics.flush()?;
        bar.set_position(trainer.step);
        bar.set_message(format!("loss {:.4}  {:.0} tok/s", m.loss, m.tokens_per_s));
        let interrupted = control.stop.load(Ordering::Relaxed);
        if done || interrupted || (s.save_every > 0 && trainer.step % s.save_every == 0) {
            checkpoint::save(out, &trainer, &state_of(&trainer, cursor))?;
            model.save(&trainer.weights, &out.join("weights.safetensors"))?;
            plot(out, &grad.name)?;
        }
        last = Some((r, validated));
        if interrupted && !done {
            bar.finish_and_clear();
            return Ok(Finished {
                step: trainer.step,
                interrupted: true,
                last,
            });
        }
    }
    bar.finish_and_clear();
    Ok(Finished {
        step: trainer.step,
        interrupted: false,
        last,
    })
}

#[cfg(test)]
mod tests {
    use super::LoopPolicy;

    #[test]
    fn loop_policies_parse_and_draw_their_distribution() {
        let p = |t: &str| t.parse::<LoopPolicy>();
        assert_eq!(p("8"), Ok(LoopPolicy::Fixed(8)));
        assert_eq!(p("2..6"), Ok(LoopPolicy::Uniform { lo: 2, hi: 6 }));
        assert_eq!(
            p("poisson:8"),
            Ok(LoopPolicy::PoissonLognormal { mean: 8.0 })
        );
        for bad in ["0", "6..2", "poisson:0", "poisson:x", "a", "", "1..70000"] {
            assert!(p(bad).is_err(), "`{bad}` is refused");
        }
        let draws = |policy: &LoopPolicy| -> Vec<u64> {
            (0..4000).map(|s| policy.draw(7, s).unwrap()).collect()
        };
        let uniform = draws(&LoopPolicy::Uniform { lo: 2, hi: 6 });
        for n in 2..=6 {
            let share = uniform.iter().filter(|&&d| d == n).count() as f64 / 4000.0;
            assert!((share - 0.2).abs() < 0.03, "{n} drawn {share}");
        }
        // Huginn's draw: 1 + Poisson(lognormal of mean 8), so a mean of 9.
        let poisson = draws(&LoopPolicy::PoissonLognormal { mean: 8.0 });
        let mean = poisson.iter().sum::<u64>() as f64 / 4000.0;
        assert!((mean - 9.0).abs() < 0.3, "mean {mean}");
        assert!(poisson.iter().all(|&n| n >= 1));
        assert!(*poisson.iter().max().unwrap() > 16, "a long tail");
        let again = (0..4000).map(|s| LoopPolicy::PoissonLognormal { mean: 8.0 }.draw(7, s));
        assert!(
            again.eq(poisson.iter().map(|&n| Some(n))),
            "the same per step"
        );
        assert_eq!(LoopPolicy::Max.draw(7, 3), None);
    }
}
