//! `mythos eval`: loss, perplexity and next-token accuracy of a model on a
//! data file at each of several test-time loop counts (the depth curve of a
//! looped model), printed as a table and written as `eval.csv`,
//! `eval.json` (schema `mythos.eval/1`) and plots (docs/training.md).

use crate::plot;
use anyhow::{bail, Context, Result};
use mythos_runtime::data::{DataOptions, Rows, TokenWidth};
use mythos_runtime::engine::Engine;
use mythos_runtime::finite::{check_logits, Step};
use mythos_runtime::loss::Score;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// The scores at one loop count.
#[derive(Clone, Debug, Serialize)]
pub struct DepthPoint {
    pub loops: u64,
    pub loss: f64,
    pub perplexity: f64,
    pub accuracy: f64,
    /// Positions scored.
    pub tokens: u64,
    /// Loop iterations run, averaged over the batches (ACT may stop a
    /// batch's loop before `loops`).
    pub mean_iterations: f64,
    pub seconds: f64,
}

/// The `eval.json` document.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub model: String,
    pub data: String,
    pub rows: usize,
    pub seq: usize,
    pub batch: usize,
    /// The loop's trained depth.
    pub max_loops: u64,
    pub results: Vec<DepthPoint>,
}

/// What `mythos eval` was asked for.
pub struct Request<'a> {
    /// A data file, text, or a task (`task:parity,bits=32`).
    pub data: &'a str,
    /// How text data is tokenized (`None`: bytes).
    pub tokenizer: Option<&'a crate::text::TokenizerChoice>,
    pub seq: Option<usize>,
    pub width: TokenWidth,
    pub max_rows: Option<usize>,
    /// Loop counts (empty: [`default_loops`]).
    pub loops: &'a [u64],
    /// Rows per forward pass.
    pub batch: usize,
}

/// Loads the data for `rt`'s model and scores it at each loop count.
pub fn run(rt: &impl Engine, req: &Request) -> Result<Report> {
    let module = rt.module();
    let opts = DataOptions {
        seq: req.seq,
        width: req.width,
        vocab: module.vocab,
        max_rows: req.max_rows,
    };
    let rows = crate::text::open(req.data, &opts, req.tokenizer, None)?;
    let max_loops = module.max_iters();
    let loops = if req.loops.is_empty() {
        default_loops(max_loops)
    } else {
        req.loops.to_vec()
    };
    Ok(Report {
        schema: "mythos.eval/1",
        model: module.name.clone(),
        data: req.data.to_string(),
        rows: rows.len(),
        seq: rows.seq,
        batch: req.batch,
        max_loops,
        results: depth_curve(rt, &rows, &loops, req.batch, true)?,
    })
}

/// The default loop counts: powers of two up to twice the trained depth,
/// and the trained depth itself.
pub fn default_loops(max_loops: u64) -> Vec<u64> {
    let mut l: Vec<u64> = std::iter::successors(Some(1u64), |&n| Some(n * 2))
        .take_while(|&n| n <= 2 * max_loops)
        .collect();
    l.push(max_loops);
    l.sort_unstable();
    l.dedup();
    l
}

/// Scores `rows` in batches of `batch` rows at each loop count, with a
/// progress bar when `progress` (and stderr is a terminal).
pub fn depth_curve(
    rt: &impl Engine,
    rows: &Rows,
    loops: &[u64],
    batch: usize,
    progress: bool,
) -> Result<Vec<DepthPoint>> {
    if rows.scored() == 0 {
        bail!("the data has no scored positions (every target is -100)");
    }
    let vocab = rt.module().vocab as usize;
    let batches = rows.len().div_ceil(batch);
    let bar = if progress {
        crate::progress::bar(
            (batches * loops.len()) as u64,
            "{spinner} [{bar:40}] {pos}/{len} batches  {msg}  ETA {eta}",
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut points = Vec::with_capacity(loops.len());
    for &n in loops {
        bar.set_message(format!("{n} loops"));
        let start = Instant::now();
        let mut score = Score::default();
        let mut iterations = 0u64;
        for b in 0..batches {
            let first = b * batch;
            let count = batch.min(rows.len() - first);
            let (ids, targets) = rows.slice(first, count);
            let f = rt.forward(ids, count, Some(n), None)?;
            for (r, row) in f.logits.chunks_exact(vocab).enumerate() {
                check_logits(row, Step::Prefill, first + r / rows.seq, r % rows.seq)?;
            }
            score.add(Score::of(&f.logits, vocab, targets));
            iterations += f.iterations;
            bar.inc(1);
        }
        points.push(DepthPoint {
            loops: n,
            loss: score.loss(),
            perplexity: score.perplexity(),
            accuracy: score.accuracy(),
            tokens: score.tokens,
            mean_iterations: iterations as f64 / batches as f64,
            seconds: start.elapsed().as_secs_f64(),
        });
    }
    bar.finish_and_clear();
    Ok(points)
}

/// The table printed on stdout.
pub fn table(r: &Report) -> String {
    let mut s = format!(
        "{} on {} ({} rows x {} tokens, {} scored; trained depth {})\n",
        r.model,
        r.data,
        r.rows,
        r.seq,
        r.results.first().map_or(0, |p| p.tokens),
        r.max_loops
    );
    s.push_str("loops      loss  perplexity  accuracy  iterations   seconds\n");
    for p in &r.results {
        s.push_str(&format!(
            "{:>5}  {:>8.4}  {:>10.3}  {:>7.2}%  {:>10.2}  {:>8.2}\n",
            p.loops,
            p.loss,
            p.perplexity,
            100.0 * p.accuracy,
            p.mean_iterations,
            p.seconds
        ));
    }
    s
}

/// Writes `eval.csv`, `eval.json`, `eval_loss.svg` and `eval_accuracy.svg` into `dir`.
pub fn write(dir: &Path, r: &Report) -> Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let mut csv = String::from("loops,loss,perplexity,accuracy,tokens,mean_iterations,seconds\n");
    for p in &r.results {
        csv.push_str(&format!(
            "{},{},{},{},{},{},{}\n",
            p.loops, p.loss, p.perplexity, p.accuracy, p.tokens, p.mean_iterations, p.seconds
        ));
    }
    let curve = |f: fn(&DepthPoint) -> f64| -> Vec<(String, Option<f64>)> {
        r.results
            .iter()
            .map(|p| (p.loops.to_string(), Some(f(p)).filter(|v| v.is_finite())))
            .collect()
    };
    let files = [
        ("eval.csv", csv),
        ("eval.json", serde_json::to_string_pretty(r)? + "\n"),
        (
            "eval_loss.svg",
            plot::effect(
                &format!("{}: loss against test-time loops", r.model),
                "loops",
                "loss",
                &curve(|p| p.loss),
            ),
        ),
        (
            "eval_accuracy.svg",
            plot::effect(
                &format!("{}: accuracy against test-time loops", r.model),
                "loops",
                "accuracy",
                &curve(|p| p.accuracy),
            ),
        ),
    ];
    for (name, text) in files {
        let path = dir.join(name);
        std::fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_loops_cover_twice_the_trained_depth() {
        assert_eq!(default_loops(4), vec![1, 2, 4, 8]);
        assert_eq!(default_loops(6), vec![1, 2, 4, 6, 8]);
        assert_eq!(default_loops(1), vec![1, 2]);
    }
}
