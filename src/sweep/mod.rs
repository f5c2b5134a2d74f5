//! `mythos sweep`: ablation sweeps over a base model (docs/sweeps.md).
//!
//! A TOML sweep file ([`spec`]) names a base spec, axes and their values,
//! constraints and objectives. Each point of the axes is a trial ([`trial`]):
//! a variant spec written in memory (`model sweep_trial extends BASE { ... }`)
//! that goes through the ordinary checker, the IR lowering and the cost
//! analysis. Finished trials are appended to `journal.jsonl` ([`journal`]), so
//! a killed sweep resumes where it stopped. Then the Pareto front ([`pareto`]),
//! `results.csv`, `results.json` and SVG plots ([`report`], [`plot`]).
//!
//! [`prepare`] (read, check, plan) and [`evaluate`] (one trial) are shared by
//! the backends: [`run_local`] evaluates trials in this process, [`slurm`]
//! submits them as a Slurm job array whose tasks run `mythos sweep-worker`.

mod curves;
mod halving;
pub mod journal;
pub mod pareto;
mod report;
pub mod results;
pub mod slurm;
pub mod spec;
mod training;
pub mod trial;

use anyhow::{Context, Result};
use journal::{Entry, Journal, Status};
use mythos_compiler::analysis;
use mythos_compiler::diag::{self, Code};
use mythos_compiler::ir;
use mythos_compiler::sema::{self, Loader};
use mythos_compiler::{Diagnostic, SourceMap};
use rayon::prelude::*;
use spec::{Sort, SweepFile};
use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Instant;
use trial::{Base, Outcome};

/// Where the trials run.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Backend {
    /// In this process, `--jobs` at once.
    Local,
    /// As a Slurm job array (docs/sweeps.md, "On a cluster").
    Slurm,
}

/// Command-line arguments of `mythos sweep`.
pub struct Args {
    pub file: PathBuf,
    /// Trials run at once (default: the number of cores).
    pub jobs: Option<usize>,
    /// Output folder (default: `<sweep file stem>.out/` next to the sweep file).
    pub out: Option<PathBuf>,
    /// Stop at the first trial whose spec does not check.
    pub fail_fast: bool,
    pub backend: Backend,
    /// `--backend slurm` flags (they override the sweep file's `[slurm]` table).
    pub slurm: slurm::Flags,
}

/// Slows every trial down by this many milliseconds (tests of kill and resume).
const DELAY_ENV: &str = "MYTHOS_SWEEP_TRIAL_DELAY_MS";

/// A planned trial with its variant spec and hash.
pub struct Planned {
    pub point: trial::Point,
    pub text: String,
    pub hash: String,
}

/// A sweep read, checked and planned: what every backend and the Slurm
/// worker start from.
pub struct Prepared {
    /// The sweep file as given (for messages and plot titles).
    pub name: String,
    pub file: PathBuf,
    pub sweep: SweepFile,
    pub base: Base,
    pub opts: analysis::Options,
    /// Every trial of the plan, one per distinct hash, in plan order.
    pub planned: Vec<Planned>,
    pub out_dir: PathBuf,
}

fn render(sources: &SourceMap, diags: &[Diagnostic]) {
    eprint!("{}", diag::render(sources, diags));
}

pub fn run(args: &Args) -> Result<ExitCode> {
    let started = Instant::now();
    if args.backend == Backend::Slurm && args.fail_fast {
        eprintln!("error: --fail-fast works with the local backend only; a Slurm sweep records failed trials and goes on");
        return Ok(ExitCode::FAILURE);
    }
    let Some(prepared) = prepare(&args.file, args.out.as_deref()) else {
        return Ok(ExitCode::FAILURE);
    };
    if args.backend == Backend::Slurm && prepared.sweep.early_stop.is_some() {
        eprintln!("error: [early_stop] decides between trials as they train, which runs with the local backend; drop --backend slurm or the [early_stop] table");
        return Ok(ExitCode::FAILURE);
    }
    match args.backend {
        Backend::Local if prepared.sweep.options.measure_train => {
            halving::run(&prepared, args, started)
        }
        Backend::Local => run_local(&prepared, args, started),
        Backend::Slurm => slurm::run(&prepared, &args.slurm, started),
    }
}

/// Reads, checks and plans the sweep `file` (diagnostics rendered to stderr:
/// `None` means exit 1). `out` overrides the output folder.
pub fn prepare(file: &Path, out: Option<&Path>) -> Option<Prepared> {
    let name = file.display().to_string();
    let mut sources = SourceMap::new();
    let bytes = match std::fs::read(file) {
        Ok(b) => b,
        Err(e) => {
            let d = Diagnostic::error(Code::CannotRead, format!("cannot read `{name}`: {e}"))
                .help("pass the path of a sweep file (TOML); docs/sweeps.md describes them");
            render(&sources, &[d]);
            return None;
        }
    };
    let Ok(text) = String::from_utf8(bytes) else {
        let d = Diagnostic::error(Code::NotUtf8, format!("`{name}` is not UTF-8 text"))
            .help("sweep files are UTF-8 TOML");
        render(&sources, &[d]);
        return None;
    };
    let file_id = sources.add(name.clone(), text.clone());
    let mut sweep = match spec::parse(file_id, &text) {
        Ok(s) => s,
        Err(diags) => {
            render(&sources, &diags);
            eprintln!("{name}: {}", diag::summary(&diags).unwrap_or_default());
            return None;
        }
    };
    let sweep_dir = file.parent().unwrap_or(Path::new("")).to_path_buf();

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
        return None;
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
            return None;
        }
    };
    let taken: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
    let mut trial_model = "sweep_trial".to_string();
    while taken.contains(&trial_model.as_str()) {
        trial_model.push('_');
    }
    // The texts, not the names: a sweep file named by a relative path here
    // and by an absolute one in a Slurm task plans the same hashes.
    let mut base_sources = String::new();
    for (_, f) in loader.sources.files() {
        base_sources.push_str(&f.text);
        base_sources.push('\u{0}');
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
    let base_module = ir::lower::lower(&base_model);
    let base_metrics = trial::metrics(&analysis::analyze(&base_module, &opts));
    if sweep.options.measure_train && sweep.eval.loops.is_empty() {
        sweep.eval.loops = crate::eval::default_loops(base_module.max_iters());
    }
    if sweep.options.measure_train {
        match training::check_data(file, &sweep, base_module.vocab) {
            Ok(n) => {
                if let Some(t) = sweep.train.as_mut() {
                    t.row_tokens = n;
                }
            }
            Err((at, e)) => {
                let mut d = Diagnostic::error(Code::InvalidSweep, format!("{e:#}"));
                if let Some(at) = at {
                    d = d.label(at, "this data");
                }
                let d = d.help("[train] and [eval] data name a task (\"task:add,terms=2,digits=3\") or a data file relative to the sweep file; docs/training.md lists the formats");
                render(&sources, &[d]);
                return None;
            }
        }
    }
    let diags = spec::resolve(&mut sweep, &def_kinds, &base_metrics);
    if !diags.is_empty() {
        render(&sources, &diags);
        eprintln!("{name}: {}", diag::summary(&diags).unwrap_or_default());
        return None;
    }

    // The plan: every point's variant and hash (a repeated hash runs once).
    let options_key = sweep.options.key();
    let mut seen = std::collections::HashSet::new();
    let planned: Vec<Planned> = trial::plan(&sweep)
        .into_iter()
        .filter_map(|point| {
            let text = trial::variant_text(&sweep, &base, &point);
            let mut key = options_key.clone();
            if sweep.options.measure_train {
                key.push_str(&training::key(&sweep, file, &point.choice));
            }
            let hash = trial::trial_hash(&base, &text, &key);
            seen.insert(hash.clone())
                .then_some(Planned { point, text, hash })
        })
        .collect();

    let out_dir = out.map(Path::to_path_buf).unwrap_or_else(|| {
        let stem = file
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "sweep".into());
        sweep_dir.join(format!("{stem}.out"))
    });
    Some(Prepared {
        name,
        file: file.to_path_buf(),
        sweep,
        base,
        opts,
        planned,
        out_dir,
    })
}

/// The journal of `p`'s output folder, created when missing, with the result
/// files of Slurm tasks ([`results`]) merged in: the journal's one writer is
/// the process that calls this.
pub fn open_journal(p: &Prepared) -> Result<(Journal, HashMap<String, Entry>)> {
    std::fs::create_dir_all(&p.out_dir)
        .with_context(|| format!("creating {}", p.out_dir.display()))?;
    let (mut journal, loaded) = Journal::open(&p.out_dir.join("journal.jsonl"))?;
    if loaded.dropped > 0 {
        eprintln!(
            "sweep: dropped {} unreadable journal line(s) (a run that was killed mid-write)",
            loaded.dropped
        );
    }
    let mut entries = loaded.entries;
    results::merge(&p.out_dir, &mut journal, &mut entries)?;
    Ok((journal, entries))
}

/// Evaluates one trial: checks and costs its variant, applies the static
/// constraints, then (with `measure = ["cpu"]`) times it, (with `measure =
/// ["train"]`) trains every seed to the whole budget, and applies the rest.
pub fn evaluate(p: &Prepared, planned: &Planned) -> Entry {
    let t0 = Instant::now();
    let sweep = &p.sweep;
    let mut entry = evaluate_static(p, planned);
    if sweep.options.measure_train && entry.status == Status::Ok {
        // The whole budget at once (a Slurm task; a local sweep goes by rungs).
        let steps = training::steps(p, planned);
        let stop = std::sync::Arc::new(AtomicBool::new(false));
        match training::train_to(p, planned, steps, &stop) {
            Ok(Some(r)) => {
                r.record(&mut entry);
                classify(sweep, &mut entry, true);
            }
            Ok(None) => {}
            Err(e) => {
                entry.status = Status::Failed;
                entry.error = Some(format!("training failed: {e:#}"));
            }
        }
    }
    entry.seconds = t0.elapsed().as_secs_f64();
    entry
}

/// [`evaluate`] without the training: the cost analysis, the CPU timing
/// and the constraints on what they give.
pub fn evaluate_static(p: &Prepared, planned: &Planned) -> Entry {
    let t0 = Instant::now();
    let delay = std::env::var(DELAY_ENV)
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0);
    if delay > 0 {
        std::thread::sleep(std::time::Duration::from_millis(delay));
    }
    let sweep = &p.sweep;
    let mut entry = Entry {
        hash: planned.hash.clone(),
        index: planned.point.index,
        axes: axes_json(sweep, &planned.point),
        status: Status::Ok,
        violated: None,
        error: None,
        metrics: BTreeMap::new(),
        spec: planned.text.clone(),
        seconds: 0.0,
        spread: BTreeMap::new(),
        runs: Vec::new(),
    };
    match trial::evaluate(&p.base, &planned.text, &p.opts) {
        Outcome::Ok(m) => {
            entry.metrics = m;
            // Static constraints first: a rejected trial is never measured.
            classify(sweep, &mut entry, false);
            if sweep.options.measure_cpu && entry.status == Status::Ok {
                let o = &sweep.options;
                match trial::measure_cpu(
                    &p.base,
                    &planned.text,
                    o.loops,
                    o.measure_seq,
                    o.measure_decode,
                ) {
                    Ok(m) => {
                        entry.metrics.extend(m);
                        classify(sweep, &mut entry, !sweep.options.measure_train);
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
    entry
}

/// Writes the results of every planned trial in `entries` and prints the
/// table and a summary line that ends with `how` (what ran where).
pub fn finish(
    p: &Prepared,
    entries: HashMap<String, Entry>,
    how: &str,
    started: Instant,
) -> Result<()> {
    let c = report::write(p, entries)?;
    eprintln!(
        "sweep: {} trials: {} ok, {}{} rejected, {} failed ({how}) in {:.2}s; results in {}",
        c.trials,
        c.ok,
        if c.pruned > 0 {
            format!("{} pruned, ", c.pruned)
        } else {
            String::new()
        },
        c.rejected,
        c.failed,
        started.elapsed().as_secs_f64(),
        p.out_dir.display()
    );
    Ok(())
}

/// Runs the pending trials in this process, `--jobs` at once.
fn run_local(p: &Prepared, args: &Args, started: Instant) -> Result<ExitCode> {
    let (journal, mut entries) = open_journal(p)?;
    let pending: Vec<&Planned> = p
        .planned
        .iter()
        .filter(|t| !entries.contains_key(&t.hash))
        .collect();
    let from_journal = p.planned.len() - pending.len();

    let bar = crate::progress::bar(
        pending.len() as u64,
        "{spinner} [{bar:40}] {pos}/{len} trials  {elapsed} elapsed  ETA {eta}",
    );
    let journal = Mutex::new(journal);
    let stop = AtomicBool::new(false);
    let first_failure: Mutex<Option<String>> = Mutex::new(None);
    let fresh: Mutex<Vec<Entry>> = Mutex::new(Vec::new());
    let run_one = |t: &Planned| -> Result<()> {
        if stop.load(Ordering::SeqCst) {
            return Ok(());
        }
        let entry = evaluate(p, t);
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
    if p.sweep.options.measure_cpu && jobs > 1 {
        // Trials timed side by side would slow each other down.
        if args.jobs.is_some() {
            eprintln!(
                "sweep: measure = [\"cpu\"] times trials one at a time; ignoring --jobs {jobs}"
            );
        }
        jobs = 1;
    }
    if jobs == 1 {
        for t in &pending {
            run_one(t)?;
        }
    } else {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(jobs)
            .build()
            .context("starting the worker threads")?;
        pool.install(|| pending.par_iter().try_for_each(|t| run_one(t)))?;
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
    for e in fresh.into_inner().unwrap_or_default() {
        entries.insert(e.hash.clone(), e);
    }
    finish(
        p,
        entries,
        &format!("{ran} run now, {from_journal} from the journal"),
        started,
    )?;
    Ok(ExitCode::SUCCESS)
}

pub(crate) fn axes_json(
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

/// Sets `ok` or `rejected` from the constraints. Until a trial is measured
/// in full (`last == false`), a constraint on a measured metric (`cpu.*`,
/// `train.*`, `eval.*`) that the trial does not have yet waits.
pub(crate) fn classify(sweep: &SweepFile, entry: &mut Entry, last: bool) {
    let metrics = &entry.metrics;
    entry.violated = sweep
        .constraints
        .iter()
        .filter(|c| last || !spec::is_measured(&c.metric) || metrics.contains_key(&c.metric))
        .find_map(|c| c.violation(&entry.metrics));
    entry.status = if entry.violated.is_some() {
        Status::Rejected
    } else {
        Status::Ok
    };
}
