//! The results of a sweep: every planned trial ranked, the Pareto front,
//! `results.csv`, `results.json`, the plots and the table on stdout. The same
//! for every backend: only the journal's entries go in.

use super::journal::{Entry, Status};
use super::spec::{self, SweepFile};
use super::{pareto, Planned, Prepared};
use crate::plot;
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::path::Path;

/// A trial in the results.
pub(super) struct Row<'p> {
    pub planned: &'p Planned,
    pub entry: Entry,
    pub pareto: bool,
    pub objectives: Vec<f64>,
}

/// Counts of a finished sweep, for its summary line.
pub struct Counts {
    pub trials: usize,
    pub ok: usize,
    pub rejected: usize,
    pub failed: usize,
    pub pruned: usize,
}

/// Ranks every planned trial found in `entries`, marks the Pareto front,
/// writes the output files and prints the table.
pub fn write(p: &Prepared, mut entries: HashMap<String, Entry>) -> Result<Counts> {
    let sweep = &p.sweep;
    let mut rows: Vec<Row> = p
        .planned
        .iter()
        .filter_map(|planned| {
            let mut entry = entries.remove(&planned.hash)?;
            entry.index = planned.point.index;
            entry.axes = super::axes_json(sweep, &planned.point);
            if matches!(entry.status, Status::Ok | Status::Rejected) {
                // Constraints may have changed since the trial ran.
                let o = &sweep.options;
                super::classify(sweep, &mut entry, o.measure_cpu || o.measure_train);
            }
            let objectives = sweep
                .objectives
                .iter()
                .map(|o| entry.metrics.get(&o.metric).copied().unwrap_or(f64::NAN))
                .collect();
            Some(Row {
                planned,
                entry,
                pareto: false,
                objectives,
            })
        })
        .collect();
    if !sweep.objectives.is_empty() {
        let maximize: Vec<bool> = sweep.objectives.iter().map(|o| o.maximize).collect();
        let ok: Vec<usize> = (0..rows.len())
            .filter(|&i| rows[i].entry.status == Status::Ok)
            .collect();
        let points: Vec<Vec<f64>> = ok.iter().map(|&i| rows[i].objectives.clone()).collect();
        for (k, on) in pareto::front(&points, &maximize).into_iter().enumerate() {
            rows[ok[k]].pareto = on;
        }
    }
    let title = title_of(&p.file);
    let mut extra = serde_json::Map::new();
    if sweep.options.measure_train {
        extra = super::curves::summary(p, &rows);
    }
    write_outputs(sweep, &title, &p.out_dir, &rows, extra)?;
    if sweep.options.measure_train {
        super::curves::write(p, &title, &rows)?;
    }
    print_table(sweep, &rows);
    if sweep.options.measure_train {
        super::curves::print_noise(sweep, &ranked(sweep, &rows));
        super::curves::print_importance(sweep, &rows);
    }
    let count = |s: Status| rows.iter().filter(|r| r.entry.status == s).count();
    Ok(Counts {
        trials: rows.len(),
        ok: count(Status::Ok),
        rejected: count(Status::Rejected),
        failed: count(Status::Failed),
        pruned: count(Status::Pruned),
    })
}

/// A plot title's name for the sweep: its file name, not its path.
fn title_of(file: &Path) -> String {
    file.file_name().map_or_else(
        || file.display().to_string(),
        |f| f.to_string_lossy().into_owned(),
    )
}

pub(super) fn label(sweep: &SweepFile, row: &Row, axis: usize) -> String {
    sweep.axes[axis].values[row.planned.point.choice[axis]].label()
}

/// Pareto trials first, then the other analyzed ones, each by the first
/// objective (best first); rejected, then failed, last.
pub(super) fn ranked<'r, 'p>(sweep: &SweepFile, rows: &'r [Row<'p>]) -> Vec<&'r Row<'p>> {
    let mut v: Vec<&Row> = rows.iter().collect();
    let key = |r: &Row| -> f64 {
        match (sweep.objectives.first(), r.objectives.first()) {
            (Some(o), Some(&x)) if !x.is_nan() => {
                if o.maximize {
                    -x
                } else {
                    x
                }
            }
            _ => f64::INFINITY,
        }
    };
    let group = |r: &Row| match (r.pareto, r.entry.status) {
        (true, _) => 0,
        (false, Status::Ok) => 1,
        (false, Status::Pruned) => 2,
        (false, Status::Rejected) => 3,
        (false, Status::Failed) => 4,
    };
    v.sort_by(|a, b| {
        group(a)
            .cmp(&group(b))
            .then(key(a).total_cmp(&key(b)))
            .then(a.entry.index.cmp(&b.entry.index))
    });
    v
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn first_line(s: &str) -> &str {
    s.lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("")
        .trim()
}

fn write_outputs(
    sweep: &SweepFile,
    name: &str,
    out: &Path,
    rows: &[Row],
    extra: serde_json::Map<String, serde_json::Value>,
) -> Result<()> {
    let write = |file: &str, text: String| -> Result<()> {
        let path = out.join(file);
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))
    };
    let mut metric_names: Vec<&String> = rows.iter().flat_map(|r| r.entry.metrics.keys()).collect();
    metric_names.sort();
    metric_names.dedup();

    // results.csv
    let mut csv = String::new();
    let mut header = vec![
        "index".to_string(),
        "hash".into(),
        "status".into(),
        "pareto".into(),
    ];
    header.extend(sweep.axes.iter().map(|a| a.path.clone()));
    header.extend(metric_names.iter().map(|m| m.to_string()));
    let mut spread_names: Vec<&String> = rows.iter().flat_map(|r| r.entry.spread.keys()).collect();
    spread_names.sort();
    spread_names.dedup();
    header.extend(spread_names.iter().map(|m| format!("{m} std")));
    header.extend(["violated".to_string(), "error".into()]);
    csv.push_str(
        &header
            .iter()
            .map(|h| csv_field(h))
            .collect::<Vec<_>>()
            .join(","),
    );
    csv.push('\n');
    for r in rows {
        let mut f = vec![
            r.entry.index.to_string(),
            r.entry.hash.clone(),
            r.entry.status.as_str().to_string(),
            r.pareto.to_string(),
        ];
        f.extend((0..sweep.axes.len()).map(|a| label(sweep, r, a)));
        f.extend(metric_names.iter().map(|m| {
            r.entry
                .metrics
                .get(*m)
                .map_or(String::new(), |v| v.to_string())
        }));
        f.extend(spread_names.iter().map(|m| {
            r.entry
                .spread
                .get(*m)
                .map_or(String::new(), |v| v.to_string())
        }));
        f.push(r.entry.violated.clone().unwrap_or_default());
        f.push(
            r.entry
                .error
                .as_deref()
                .map_or(String::new(), |e| first_line(e).to_string()),
        );
        csv.push_str(&f.iter().map(|x| csv_field(x)).collect::<Vec<_>>().join(","));
        csv.push('\n');
    }
    write("results.csv", csv)?;

    // results.json
    let trials: Vec<serde_json::Value> = rows
        .iter()
        .map(|r| {
            serde_json::json!({
                "index": r.entry.index,
                "hash": r.entry.hash,
                "status": r.entry.status,
                "pareto": r.pareto,
                "axes": r.entry.axes,
                "violated": r.entry.violated,
                "error": r.entry.error,
                "metrics": r.entry.metrics,
                "spread": r.entry.spread,
                "runs": r.entry.runs,
                "spec": r.entry.spec,
            })
        })
        .collect();
    let mut doc = serde_json::json!({
        "schema": "mythos.sweep/1",
        "sweep": name,
        "base": sweep.base,
        "model": sweep.model,
        "strategy": match &sweep.strategy {
            spec::Strategy::Grid => serde_json::json!("grid"),
            spec::Strategy::Random { seed, budget } => serde_json::json!({ "random": { "seed": seed, "budget": budget } }),
        },
        "options": {
            "seq": sweep.options.seq,
            "loops": sweep.options.loops,
            "dtype": sweep.options.dtype,
            "bandwidth": sweep.options.bandwidth,
        },
        "axes": sweep.axes.iter().map(|a| serde_json::json!({
            "path": a.path,
            "values": a.values.iter().map(|v| v.json()).collect::<Vec<_>>(),
        })).collect::<Vec<_>>(),
        "constraints": sweep.constraints.iter().map(|c| c.text.clone()).collect::<Vec<_>>(),
        "objectives": sweep.objectives.iter().map(|o| serde_json::json!({
            if o.maximize { "maximize" } else { "minimize" }: o.metric,
        })).collect::<Vec<_>>(),
        "trials": trials,
    });
    if let Some(m) = doc.as_object_mut() {
        m.extend(extra);
    }
    write("results.json", serde_json::to_string_pretty(&doc)? + "\n")?;

    // Plots.
    let ok: Vec<&Row> = rows
        .iter()
        .filter(|r| r.entry.status == Status::Ok)
        .collect();
    if sweep.objectives.len() >= 2 {
        let points: Vec<(f64, f64, bool)> = ok
            .iter()
            .filter(|r| !r.objectives[0].is_nan() && !r.objectives[1].is_nan())
            .map(|r| (r.objectives[0], r.objectives[1], r.pareto))
            .collect();
        let (a, b) = (&sweep.objectives[0], &sweep.objectives[1]);
        write(
            "pareto.svg",
            plot::pareto(
                &format!("{name}: {} vs {}", b.metric, a.metric),
                &a.describe(),
                &b.describe(),
                &points,
            ),
        )?;
    }
    if let Some(o) = sweep.objectives.first() {
        // One plot per group of axes: a tied axis is labelled by its joined paths.
        for (k, axis) in sweep.axes.iter().enumerate() {
            if k > 0 && sweep.axes[k - 1].group == axis.group {
                continue;
            }
            let members: Vec<_> = sweep.axes[k..]
                .iter()
                .take_while(|a| a.group == axis.group)
                .collect();
            let path = members
                .iter()
                .map(|a| a.path.as_str())
                .collect::<Vec<_>>()
                .join(", ");
            let means: Vec<(String, Option<f64>)> = (0..axis.values.len())
                .map(|vi| {
                    let label = members
                        .iter()
                        .map(|a| a.values[vi].label())
                        .collect::<Vec<_>>()
                        .join(", ");
                    let ys: Vec<f64> = ok
                        .iter()
                        .filter(|r| r.planned.point.choice[k] == vi && !r.objectives[0].is_nan())
                        .map(|r| r.objectives[0])
                        .collect();
                    let mean = (!ys.is_empty()).then(|| ys.iter().sum::<f64>() / ys.len() as f64);
                    (label, mean)
                })
                .collect();
            let file: String = path
                .replace(", ", "+")
                .chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "._-".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect();
            write(
                &format!("effect-{file}.svg"),
                plot::effect(
                    &format!("{name}: mean {} by {path}", o.metric),
                    &path,
                    &format!("mean {}", o.metric),
                    &means,
                ),
            )?;
        }
    }
    Ok(())
}

/// The ranked table on stdout (at most 25 rows; the rest are in results.csv).
fn print_table(sweep: &SweepFile, rows: &[Row]) {
    const SHOWN: usize = 25;
    let mut header = vec!["rank".to_string(), "P".into()];
    header.extend(sweep.axes.iter().map(|a| a.path.clone()));
    header.extend(sweep.objectives.iter().map(|o| o.metric.clone()));
    header.push("status".into());
    let ranked = ranked(sweep, rows);
    let mut table = vec![header];
    for (i, r) in ranked.iter().take(SHOWN).enumerate() {
        let mut line = vec![
            (i + 1).to_string(),
            if r.pareto { "*".into() } else { String::new() },
        ];
        line.extend((0..sweep.axes.len()).map(|a| label(sweep, r, a)));
        line.extend(sweep.objectives.iter().zip(&r.objectives).map(|(o, &x)| {
            match (x.is_nan(), r.entry.spread.get(&o.metric)) {
                (true, _) => "-".into(),
                (false, Some(sd)) => format!("{} ± {}", plot::si(x), plot::si(*sd)),
                (false, None) => plot::si(x),
            }
        }));
        line.push(match r.entry.status {
            Status::Ok => "ok".into(),
            Status::Rejected => format!("rejected: {}", r.entry.violated.as_deref().unwrap_or("")),
            Status::Pruned => format!(
                "pruned at {} steps",
                r.entry.metrics.get("train.steps").copied().unwrap_or(0.0)
            ),
            Status::Failed => format!(
                "failed: {}",
                first_line(r.entry.error.as_deref().unwrap_or(""))
            ),
        });
        table.push(line);
    }
    let cols = table[0].len();
    let widths: Vec<usize> = (0..cols)
        .map(|c| {
            table
                .iter()
                .map(|l| l[c].chars().count())
                .max()
                .unwrap_or(0)
        })
        .collect();
    for line in &table {
        let cells: Vec<String> = line
            .iter()
            .enumerate()
            .map(|(c, s)| {
                if c + 1 == cols {
                    s.clone()
                } else {
                    format!("{s:<w$}", w = widths[c])
                }
            })
            .collect();
        println!("{}", cells.join("  ").trim_end());
    }
    if ranked.len() > SHOWN {
        println!("... {} more in results.csv", ranked.len() - SHOWN);
    }
}
