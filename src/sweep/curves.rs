//! What a sweep that trains adds to the results: every trial's loss curve
//! on one plot, the test-loop curves (accuracy and loss against test-time
//! loops), parallel coordinates, the parameter-importance table, and the
//! pairs of trials whose difference is within the noise of their seeds.

use super::journal::Status;
use super::report::{label, Row};
use super::spec::SweepFile;
use super::{training, Prepared};
use crate::plot::{self, ParallelAxis, Series};
use anyhow::{Context, Result};
use std::collections::BTreeMap;

/// Plots drawn with more trials than this show the best ones only.
const MOST_LINES: usize = 20;

/// Writes `loss_curves.svg`, `depth_accuracy.svg`, `depth_loss.svg`,
/// `parallel.svg` and `importance.csv` into the sweep's output folder.
pub fn write(p: &Prepared, title: &str, rows: &[Row]) -> Result<()> {
    let sweep = &p.sweep;
    let write = |file: &str, text: String| -> Result<()> {
        let path = p.out_dir.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let ranked = super::report::ranked(sweep, rows);
    let trained: Vec<&Row> = ranked
        .iter()
        .copied()
        .filter(|r| matches!(r.entry.status, Status::Ok | Status::Pruned))
        .filter(|r| r.entry.metrics.contains_key("train.steps"))
        .collect();
    let shown = |n: usize| {
        if n > MOST_LINES {
            format!(" (the best {MOST_LINES} of {n})")
        } else {
            String::new()
        }
    };

    // Loss curves: the mean over seeds per step, smoothed.
    let longest = trained
        .iter()
        .map(|r| r.entry.metrics["train.steps"] as usize)
        .max()
        .unwrap_or(1);
    let window = (longest / 40).max(1);
    let series: Vec<Series> = trained
        .iter()
        .take(MOST_LINES)
        .map(|r| Series {
            label: trial_label(sweep, r),
            points: smooth(&mean_loss(p, r), window),
            dashed: r.entry.status == Status::Pruned,
        })
        .collect();
    let smoothing = if window > 1 {
        format!(", mean of {window} steps")
    } else {
        String::new()
    };
    write(
        "loss_curves.svg",
        plot::lines(
            &format!("{title}: training loss{smoothing}{}", shown(trained.len())),
            "step (dashed: pruned)",
            "training loss",
            &series,
        ),
    )?;

    // Test-loop curves of the trials trained to the end.
    let finished: Vec<&Row> = trained
        .iter()
        .copied()
        .filter(|r| r.entry.status == Status::Ok)
        .collect();
    for (metric, what, file) in [
        ("eval.acc", "accuracy", "depth_accuracy.svg"),
        ("eval.loss", "loss", "depth_loss.svg"),
    ] {
        let series: Vec<Series> = finished
            .iter()
            .take(MOST_LINES)
            .map(|r| Series {
                label: trial_label(sweep, r),
                points: sweep
                    .eval
                    .loops
                    .iter()
                    .filter_map(|&n| {
                        let y = r.entry.metrics.get(&format!("{metric}@loops={n}"))?;
                        Some((n as f64, *y))
                    })
                    .collect(),
                dashed: false,
            })
            .collect();
        write(
            file,
            plot::lines(
                &format!(
                    "{title}: {what} against test-time loops{}",
                    shown(finished.len())
                ),
                "test-time loops",
                &format!("eval {what}"),
                &series,
            ),
        )?;
    }

    // Parallel coordinates: the axes, then the objectives.
    let mut axes: Vec<ParallelAxis> = sweep
        .axes
        .iter()
        .map(|a| ParallelAxis::Values {
            name: a.path.clone(),
            labels: a.values.iter().map(|v| v.label()).collect(),
        })
        .collect();
    for (k, o) in sweep.objectives.iter().enumerate() {
        let ys = finished
            .iter()
            .map(|r| r.objectives[k])
            .filter(|y| !y.is_nan());
        let (lo, hi) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), y| {
            (lo.min(y), hi.max(y))
        });
        axes.push(ParallelAxis::Metric {
            name: format!("{} {}", if o.maximize { "max" } else { "min" }, o.metric),
            lo,
            hi,
        });
    }
    let lines: Vec<(Vec<f64>, bool)> = finished
        .iter()
        .map(|r| {
            let mut v: Vec<f64> = r.planned.point.choice.iter().map(|&c| c as f64).collect();
            v.extend(&r.objectives);
            (v, r.pareto)
        })
        .collect();
    write(
        "parallel.svg",
        plot::parallel(
            &format!("{title}: axes and objectives of the trained trials"),
            &axes,
            &lines,
        ),
    )?;

    let (header, table) = importance(sweep, rows);
    let mut csv = format!("axis,{}\n", header.join(","));
    for (axis, shares) in &table {
        let cells: Vec<String> = shares.iter().map(|s| s.to_string()).collect();
        csv.push_str(&format!("{axis},{}\n", cells.join(",")));
    }
    write("importance.csv", csv)
}

/// A trial's axis values with short names: `loops=1..8 no_act=true`.
fn trial_label(sweep: &SweepFile, r: &Row) -> String {
    let short = |path: &str| -> String {
        let last = path.rsplit('.').next().unwrap_or(path);
        let clash = sweep
            .axes
            .iter()
            .filter(|a| a.path.rsplit('.').next() == Some(last))
            .count()
            > 1;
        if clash {
            path.to_string()
        } else {
            last.to_string()
        }
    };
    (0..sweep.axes.len())
        .map(|a| format!("{}={}", short(&sweep.axes[a].path), label(sweep, r, a)))
        .collect::<Vec<_>>()
        .join(" ")
}

/// The mean over a trial's seeds of the loss at each step.
fn mean_loss(p: &Prepared, r: &Row) -> Vec<(f64, f64)> {
    let steps = r.entry.metrics["train.steps"] as u64;
    let mut sum: BTreeMap<u64, (f64, usize)> = BTreeMap::new();
    let seeds = r.entry.runs.len().max(1);
    for seed in 0..seeds {
        let path = training::trial_dir(p, &r.entry.hash)
            .join(format!("seed-{seed}"))
            .join("metrics.jsonl");
        let text = std::fs::read_to_string(path).unwrap_or_default();
        for v in text
            .lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        {
            if let (Some(step), Some(loss)) = (v["step"].as_u64(), v["loss"].as_f64()) {
                if step < steps {
                    let e = sum.entry(step).or_insert((0.0, 0));
                    e.0 += loss;
                    e.1 += 1;
                }
            }
        }
    }
    sum.into_iter()
        .filter(|(_, (_, n))| *n == seeds)
        .map(|(s, (l, n))| (s as f64 + 1.0, l / n as f64))
        .collect()
}

/// The trailing mean of `window` points, one point per window.
fn smooth(points: &[(f64, f64)], window: usize) -> Vec<(f64, f64)> {
    points
        .chunks(window)
        .map(|c| {
            let y = c.iter().map(|p| p.1).sum::<f64>() / c.len() as f64;
            (c[c.len() - 1].0, y)
        })
        .collect()
}

/// For each group of axes, the share of each objective's variance across
/// the trials trained to the end that the group's values explain
/// (between-group over total sum of squares, eta squared).
fn importance(sweep: &SweepFile, rows: &[Row]) -> (Vec<String>, Vec<(String, Vec<f64>)>) {
    let finished: Vec<&Row> = rows
        .iter()
        .filter(|r| r.entry.status == Status::Ok)
        .collect();
    let header: Vec<String> = sweep.objectives.iter().map(|o| o.metric.clone()).collect();
    let mut table = Vec::new();
    for (k, axis) in sweep.axes.iter().enumerate() {
        if k > 0 && sweep.axes[k - 1].group == axis.group {
            continue;
        }
        let name = sweep.axes[k..]
            .iter()
            .take_while(|a| a.group == axis.group)
            .map(|a| a.path.as_str())
            .collect::<Vec<_>>()
            .join(", ");
        let shares = (0..sweep.objectives.len())
            .map(|o| {
                let ys: Vec<(usize, f64)> = finished
                    .iter()
                    .map(|r| (r.planned.point.choice[k], r.objectives[o]))
                    .filter(|(_, y)| !y.is_nan())
                    .collect();
                let n = ys.len() as f64;
                let mean = ys.iter().map(|y| y.1).sum::<f64>() / n;
                let total: f64 = ys.iter().map(|y| (y.1 - mean).powi(2)).sum();
                let mut by_value: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
                for &(v, y) in &ys {
                    let e = by_value.entry(v).or_insert((0.0, 0.0));
                    e.0 += y;
                    e.1 += 1.0;
                }
                let between: f64 = by_value
                    .values()
                    .map(|(s, c)| c * (s / c - mean).powi(2))
                    .sum();
                if total > 0.0 {
                    between / total
                } else {
                    0.0
                }
            })
            .collect();
        table.push((name, shares));
    }
    (header, table)
}

/// Prints the importance table under the results table.
pub fn print_importance(sweep: &SweepFile, rows: &[Row]) {
    let (header, table) = importance(sweep, rows);
    let n = rows.iter().filter(|r| r.entry.status == Status::Ok).count();
    // One axis explains all the variance there is: nothing to compare.
    if header.is_empty() || n < 2 || table.len() < 2 {
        return;
    }
    println!(
        "\nimportance: the share of each objective's variance over the {n} trials trained to the end that each axis explains"
    );
    let width = table.iter().map(|(a, _)| a.len()).max().unwrap_or(4).max(4);
    let cols: Vec<usize> = header.iter().map(|h| h.len().max(6)).collect();
    let mut line = format!("{:<width$}", "axis");
    for (h, w) in header.iter().zip(&cols) {
        line.push_str(&format!("  {h:>w$}"));
    }
    println!("{line}");
    for (axis, shares) in &table {
        let mut line = format!("{axis:<width$}");
        for (s, w) in shares.iter().zip(&cols) {
            line.push_str(&format!("  {:>w$}", format!("{:.0}%", 100.0 * s)));
        }
        println!("{line}");
    }
}

/// Pairs of the ranked trials (at least one of them on the Pareto front)
/// that no objective tells apart: on each, the means differ by less than
/// two standard errors of the difference (seeds of a measured metric; a
/// static one must be equal), and one objective at least has a spread.
pub fn noise_pairs(sweep: &SweepFile, ranked: &[&Row]) -> Vec<(usize, usize)> {
    let mut pairs = Vec::new();
    let se2 = |r: &Row, m: &str| -> f64 {
        let n = r.entry.runs.len().max(1) as f64;
        r.entry.spread.get(m).map_or(0.0, |sd| sd * sd / n)
    };
    for a in 0..ranked.len() {
        for b in a + 1..ranked.len() {
            let (ra, rb) = (ranked[a], ranked[b]);
            let ok = |r: &Row| r.entry.status == Status::Ok;
            if !(ok(ra) && ok(rb)) || !(ra.pareto || rb.pareto) {
                continue;
            }
            let mut noisy = false;
            let same = sweep.objectives.iter().enumerate().all(|(k, o)| {
                let (x, y) = (ra.objectives[k], rb.objectives[k]);
                let s = se2(ra, &o.metric) + se2(rb, &o.metric);
                noisy |= s > 0.0;
                (x - y).abs() <= 2.0 * s.sqrt()
            });
            if same && noisy {
                pairs.push((a, b));
            }
        }
    }
    pairs
}

/// Prints the [`noise_pairs`] of the table (ranks as printed).
pub fn print_noise(sweep: &SweepFile, ranked: &[&Row]) {
    let pairs = noise_pairs(sweep, ranked);
    for &(a, b) in pairs.iter().take(10) {
        let what: Vec<String> = sweep
            .objectives
            .iter()
            .enumerate()
            .map(|(k, o)| {
                let cell = |r: &Row| match r.entry.spread.get(&o.metric) {
                    Some(sd) => format!("{} ± {}", plot::si(r.objectives[k]), plot::si(*sd)),
                    None => plot::si(r.objectives[k]),
                };
                format!("{} {} vs {}", o.metric, cell(ranked[a]), cell(ranked[b]))
            })
            .collect();
        println!(
            "~ ranks {} and {} are within noise on every objective ({})",
            a + 1,
            b + 1,
            what.join(", ")
        );
    }
    if pairs.len() > 10 {
        println!("~ ... {} more pairs within noise", pairs.len() - 10);
    }
}

/// What `results.json` adds for a sweep that trains: the training steps
/// run against those of training every trial to the end, and the pairs of
/// trials within noise (by hash).
pub fn summary(p: &Prepared, rows: &[Row]) -> serde_json::Map<String, serde_json::Value> {
    let (run, full) = training::steps_run(p, rows.iter().map(|r| (r.planned, &r.entry)));
    let ranked = super::report::ranked(&p.sweep, rows);
    let pairs: Vec<serde_json::Value> = noise_pairs(&p.sweep, &ranked)
        .into_iter()
        .map(|(a, b)| serde_json::json!([ranked[a].entry.hash, ranked[b].entry.hash]))
        .collect();
    let mut m = serde_json::Map::new();
    m.insert(
        "training_steps".into(),
        serde_json::json!({ "run": run, "full": full }),
    );
    m.insert("within_noise".into(), pairs.into());
    m
}
