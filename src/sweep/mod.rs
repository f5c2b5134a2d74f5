//! `mythos sweep`: ablation sweeps over a base model (docs/sweeps.md).
//!
//! A TOML sweep file ([`spec`]) names a base spec, axes and their values,
//! constraints and objectives. Each point of the axes is a trial ([`trial`]):
//! a variant spec written in memory (`model sweep_trial extends BASE { ... }`)
//! that goes through the ordinary checker, the IR lowering and the cost
//! analysis. Finished trials are appended to `journal.jsonl` ([`journal`]), so
//! a killed sweep resumes where it stopped. Then the Pareto front ([`pareto`]),
//! `results.csv`, `results.json` and SVG plots ([`plot`]).

pub mod journal;
pub mod pareto;
pub mod plot;
pub mod spec;
pub mod trial;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use journal::{Entry, Journal, Status};
use mythos_compiler::analysis;
use mythos_compiler::diag::{self, Code};
use mythos_compiler::ir;
use mythos_compiler::sema::{self, Loader};
use mythos_compiler::{Diagnostic, SourceMap};
use rayon::prelude::*;
use spec::{Sort, SweepFile};
use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use trial::{Base, Outcome};

/// Command-line arguments of `mythos sweep`.
pub struct Args {
    pub file: PathBuf,
    /// Trials run at once (default: the number of cores).
    pub jobs: Option<usize>,
    /// Output folder (default: `<sweep file stem>.out/` next to the sweep file).
    pub out: Option<PathBuf>,
    /// Stop at the first trial whose spec does not check.
    pub fail_fast: bool,
}

/// Slows every trial down by this many milliseconds (tests of kill and resume).
const DELAY_ENV: &str = "MYTHOS_SWEEP_TRIAL_DELAY_MS";

/// A planned trial with its variant spec and hash.
struct Planned {
    point: trial::Point,
    text: String,
    hash: String,
}

/// A trial in the results.
struct Row<'p> {
    planned: &'p Planned,
    entry: Entry,
    pareto: bool,
    objectives: Vec<f64>,
}

fn render(sources: &SourceMap, diags: &[Diagnostic]) {
    eprint!("{}", diag::render(sources, diags));
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let started = Instant::now();
    let name = args.file.display().to_string();
    let mut sources = SourceMap::new();
    let bytes = match std::fs::read(&args.file) {
        Ok(b) => b,
        Err(e) => {
            let d = Diagnostic::error(Code::CannotRead, format!("cannot read `{name}`: {e}"))
                .help("pass the path of a sweep file (TOML); docs/sweeps.md describes them");
            render(&sources, &[d]);
            return Ok(ExitCode::FAILURE);
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        let d = Diagnostic::error(Code::NotUtf8, format!("`{name}` is not UTF-8 text"))
            .help("sweep files are UTF-8 TOML");
        render(&sources, &[d]);
        return Ok(ExitCode::FAILURE);
    };
    let file = sources.add(name.clone(), text.clone());
    let mut sweep = match spec::parse(file, &text) {
        Ok(s) => s,
        Err(diags) => {
            render(&sources, &diags);
            eprintln!("{name}: {}", diag::summary(&diags).unwrap_or_default());
            return Ok(ExitCode::FAILURE);
        }
    };
    let sweep_dir = args.file.parent().unwrap_or(Path::new("")).to_path_buf();

    // The base model: checked once, for its definitions' kinds and its metrics.
    let (root, import, virtual_name) = if sweep.base.starts_with('@') {
        (
            sweep.base.clone(),
            sweep.base.clone(),
            "sweep-trial.mythos".to_string(),
        )
    } else {
        let path = sweep_dir.join(&sweep.base);
        let file_name = path
            .file_name()
            .map(|f| f.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().unwrap_or(Path::new("")).to_path_buf();
        (
            path.display().to_string(),
            file_name,
            dir.join("sweep-trial.mythos").display().to_string(),
        )
    };
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, &root);
    if checked.has_errors() {
        render(&loader.sources, &checked.diagnostics);
        let d = Diagnostic::error(
            Code::InvalidSweep,
            format!("the base `{root}` does not check"),
        )
        .label(sweep.base_span, "this base")
        .help("fix the base spec first (`mythos check` shows the same errors)");
        render(&sources, &[d]);
        return Ok(ExitCode::FAILURE);
    }
    let base_model = match sema::select(&checked, sweep.model.as_deref(), &root) {
        Ok(m) => m.clone(),
        Err(d) => {
            let d = d.label(
                sweep.model_span.unwrap_or(sweep.base_span),
                "choose the model here",
            );
            let d = if sweep.model.is_none() {
                d.help("add model = \"NAME\" to the sweep file")
            } else {
                d
            };
            render(&sources, &[d]);
            return Ok(ExitCode::FAILURE);
        }
    };
    let taken: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
    let mut trial_model = "sweep_trial".to_string();
    while taken.contains(&trial_model.as_str()) {
        trial_model.push('_');
    }
    let mut base_sources = String::new();
    for (_, f) in loader.sources.files() {
        base_sources.push_str(&f.name);
        base_sources.push('\n');
        base_sources.push_str(&f.text);
    }
    let base = Base {
        import,
        virtual_name,
        model: base_model.name.clone(),
        trial_model,
        sources: base_sources,
    };
    let mut def_kinds = BTreeMap::new();
    let r = &base_model.recurrence;
    for b in base_model
        .prelude
        .iter()
        .chain(&r.body)
        .chain(&base_model.coda)
    {
        def_kinds.insert(
            (Sort::Attention, b.attention.name.clone()),
            b.attention.kind.kind_name().to_string(),
        );
        def_kinds.insert(
            (Sort::Ffn, b.ffn.name.clone()),
            b.ffn.kind.kind_name().to_string(),
        );
    }
    let opts = analysis::Options {
        seq: sweep.options.seq,
        loops: sweep.options.loops,
        dtype: sweep.options.dtype,
        bandwidth: sweep.options.bandwidth,
    };
    let base_metrics = trial::metrics(&analysis::analyze(&ir::lower::lower(&base_model), &opts));
    let diags = spec::resolve(&mut sweep, &def_kinds, &base_metrics);
    if !diags.is_empty() {
        render(&sources, &diags);
        eprintln!("{name}: {}", diag::summary(&diags).unwrap_or_default());
        return Ok(ExitCode::FAILURE);
    }

    // The plan: every point's variant and hash (a repeated hash runs once).
    let options_key = sweep.options.key();
    let mut seen = std::collections::HashSet::new();
    let planned: Vec<Planned> = trial::plan(&sweep)
        .into_iter()
        .filter_map(|point| {
            let text = trial::variant_text(&sweep, &base, &point);
            let hash = trial::trial_hash(&base, &text, &options_key);
            seen.insert(hash.clone())
                .then_some(Planned { point, text, hash })
        })
        .collect();

    let out_dir = args.out.clone().unwrap_or_else(|| {
        let stem = args
            .file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into());
        sweep_dir.join(format!("{stem}.out"))
    });
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    let (journal, loaded) = Journal::open(&out_dir.join("journal.jsonl"))?;
    if loaded.dropped > 0 {
        eprintln!(
            "sweep: dropped {} unreadable journal line(s) (a run that was killed mid-write)",
            loaded.dropped
        );
    }
    let pending: Vec<&Planned> = planned
        .iter()
        .filter(|p| !loaded.entries.contains_key(&p.hash))
        .collect();
    let from_journal = planned.len() - pending.len();

    let bar = if std::io::stderr().is_terminal() {
        let bar = ProgressBar::new(pending.len() as u64);
        bar.set_style(
            ProgressStyle::with_template(
                "{spinner} [{bar:40}] {pos}/{len} trials  {elapsed} elapsed  ETA {eta}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    } else {
        ProgressBar::hidden()
    };
    let delay = std::env::var(DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    let journal = Mutex::new(journal);
    let stop = AtomicBool::new(false);
    let first_failure: Mutex<Option<String>> = Mutex::new(None);
    let fresh: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let run_one = |p: &Planned| -> Result<()> {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let t0 = Instant::now();
        if delay > 0 {
            std::thread::sleep(std::time::Duration::from_millis(delay));
        }
        let mut entry = Entry {
            hash: p.hash.clone(),
            index: p.point.index,
            axes: axes_json(&sweep, &p.point),
            status: Status::Ok,
            violated: None,
            error: None,
            metrics: BTreeMap::new(),
            spec: p.text.clone(),
            seconds: 0.0,
        };
        match trial::evaluate(&base, &p.text, &opts) {
            Outcome::Ok(m) => {
                entry.metrics = m;
                // Static constraints first: a rejected trial is never measured.
                classify(&sweep, &mut entry, false);
                if sweep.options.measure_cpu && entry.status == Status::Ok {
                    let o = &sweep.options;
                    match trial::measure_cpu(
                        &base,
                        &p.text,
                        o.loops,
                        o.measure_seq,
                        o.measure_decode,
                    ) {
                        Ok(m) => {
                            entry.metrics.extend(m);
                            classify(&sweep, &mut entry, true);
                        }
                        Err(e) => {
                            entry.status = Status::Failed;
                            entry.error = Some(e);
                        }
                    }
                }
            }
            Outcome::Failed(e) => {
                entry.status = Status::Failed;
                entry.error = Some(e);
            }
        }
        entry.seconds = t0.elapsed().as_secs_f64();
        journal
            .lock()
            .map_err(|_| anyhow::anyhow!("journal lock poisoned"))?
            .append(&entry)
            .context("appending to journal.jsonl")?;
        bar.inc(1);
        if args.fail_fast && entry.status == Status::Failed {
            stop.store(true, Ordering::SeqCst);
            let mut f = first_failure
                .lock()
                .map_err(|_| anyhow::anyhow!("lock poisoned"))?;
            if f.is_none() {
                *f = entry.error.clone();
            }
        }
        fresh
            .lock()
            .map_err(|_| anyhow::anyhow!("lock poisoned"))?
            .push(entry);
        Ok(())
    };
    let mut jobs = args
        .jobs
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
        .max(1);
    if sweep.options.measure_cpu && jobs > 1 {
        // Trials timed side by side would slow each other down.
        if args.jobs.is_some() {
            eprintln!(
                "sweep: measure = [\"cpu\"] times trials one at a time; ignoring --jobs {jobs}"
            );
        }
        jobs = 1;
    }
    if jobs == 1 {
        for p in &pending {
            run_one(p)?;
        }
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build()
            .context("starting the worker threads")?;
        pool.install(|| pending.par_iter().try_for_each(|p| run_one(p)))?;
    }
    bar.finish_and_clear();
    let ran = pending.len();
    if let Some(err) = first_failure.into_inner().unwrap_or(None) {
        eprint!("{err}");
        eprintln!(
            "sweep: stopped at the first failed trial (--fail-fast); the journal keeps what ran"
        );
        return Ok(ExitCode::FAILURE);
    }

    // Results: every planned trial, from the journal or from this run.
    let mut all = loaded.entries;
    for e in fresh.into_inner().unwrap_or_default() {
        all.insert(e.hash.clone(), e);
    }
    let mut rows: Vec<Row> = planned
        .iter()
        .filter_map(|p| {
            let mut entry = all.remove(&p.hash)?;
            entry.index = p.point.index;
            entry.axes = axes_json(&sweep, &p.point);
            if entry.status != Status::Failed {
                // Constraints may have changed since the trial ran.
                classify(&sweep, &mut entry, sweep.options.measure_cpu);
            }
            let objectives = sweep
                .objectives
                .iter()
                .map(|o| entry.metrics.get(&o.metric).copied().unwrap_or(f64::NAN))
                .collect();
            Some(Row {
                planned: p,
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
    write_outputs(&sweep, &name, &out_dir, &rows)?;
    print_table(&sweep, &rows);
    let count = |s: Status| rows.iter().filter(|r| r.entry.status == s).count();
    eprintln!(
        "sweep: {} trials: {} ok, {} rejected, {} failed ({ran} run now, {from_journal} from the journal) in {:.2}s; results in {}",
        rows.len(),
        count(Status::Ok),
        count(Status::Rejected),
        count(Status::Failed),
        started.elapsed().as_secs_f64(),
        out_dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

fn axes_json(
    sweep: &SweepFile,
    point: &trial::Point,
) -> serde_json::Map<String, serde_json::Value> {
    sweep
        .axes
        .iter()
        .zip(&point.choice)
        .map(|(a, &c)| (a.path.clone(), a.values[c].json()))
        .collect()
}

/// Sets `ok` or `rejected` from the constraints; before a trial is measured
/// (`measured == false`) the constraints on measured metrics wait.
fn classify(sweep: &SweepFile, entry: &mut Entry, measured: bool) {
    entry.violated = sweep
        .constraints
        .iter()
        .filter(|c| measured || !c.metric.starts_with("cpu."))
        .find_map(|c| c.violation(&entry.metrics));
    entry.status = if entry.violated.is_some() {
        Status::Rejected
    } else {
        Status::Ok
    };
}

fn label(sweep: &SweepFile, row: &Row, axis: usize) -> String {
    sweep.axes[axis].values[row.planned.point.choice[axis]].label()
}

/// Pareto trials first, then the other analyzed ones, each by the first
/// objective (best first); rejected, then failed, last.
fn ranked<'r, 'p>(sweep: &SweepFile, rows: &'r [Row<'p>]) -> Vec<&'r Row<'p>> {
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
        (false, Status::Rejected) => 2,
        (false, Status::Failed) => 3,
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

fn write_outputs(sweep: &SweepFile, name: &str, out: &Path, rows: &[Row]) -> Result<()> {
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
                "spec": r.entry.spec,
            })
        })
        .collect();
    let doc = serde_json::json!({
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
        line.extend(
            r.objectives
                .iter()
                .map(|&x| if x.is_nan() { "-".into() } else { plot::si(x) }),
        );
        line.push(match r.entry.status {
            Status::Ok => "ok".into(),
            Status::Rejected => format!("rejected: {}", r.entry.violated.as_deref().unwrap_or("")),
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
