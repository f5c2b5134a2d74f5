//! The local runner of sweeps that train (`measure = ["train"]`): every
//! trial that passes the static constraints is trained to its budget, or,
//! with `[early_stop]`, by successive halving over the training budget.
//!
//! Successive halving: every trial trains to the first rung (`min_steps`);
//! they are ranked (by non-dominated rank over the objectives, then by the
//! first; or by `primary`), the best `ceil(n / eta)` go on to the next rung
//! from their checkpoints and the rest are recorded as `pruned` with the
//! budget they reached. The rungs are synchronous and the ranking uses the
//! scores stored beside each training (`rung-B.json`), so a sweep killed at
//! any point makes the same decisions when it resumes.

use super::journal::{Entry, Journal, Status};
use super::spec::SweepFile;
use super::{classify, evaluate_static, open_journal, pareto, training, Args, Planned, Prepared};
use anyhow::Result;
use std::collections::HashMap;
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;
use std::time::Instant;

/// The exit code of a sweep stopped by Ctrl-C (128 + SIGINT).
const INTERRUPTED: u8 = 130;

pub fn run(p: &Prepared, args: &Args, started: Instant) -> Result<ExitCode> {
    let (mut journal, mut entries) = open_journal(p)?;
    let stop = Arc::new(AtomicBool::new(false));
    signal_hook::flag::register(signal_hook::consts::SIGINT, stop.clone())?;
    if args.jobs.is_some_and(|j| j > 1) {
        eprintln!(
            "sweep: trials that train run one at a time (a training uses every core); ignoring --jobs"
        );
    }
    let seeds = p.sweep.train.as_ref().map_or(1, |t| t.seeds);

    // The static phase: cost analysis, CPU timing, static constraints.
    let mut alive: Vec<(&Planned, Entry)> = Vec::new();
    for t in &p.planned {
        match entries.get(&t.hash) {
            Some(e) if matches!(e.status, Status::Ok | Status::Pruned) => {
                let mut e = e.clone();
                training::forget(&mut e);
                alive.push((t, e));
            }
            Some(_) => {}
            None => {
                let e = evaluate_static(p, t);
                if e.status == Status::Ok {
                    alive.push((t, e));
                } else {
                    let failed = fail_fast(args, &e);
                    record(&mut journal, &mut entries, e)?;
                    if failed {
                        return Ok(ExitCode::FAILURE);
                    }
                }
            }
        }
    }

    let rungs: Vec<Option<u64>> = match (&p.sweep.early_stop, alive.first()) {
        (Some(es), Some((t, _))) => es
            .rungs(training::steps(p, t))
            .into_iter()
            .map(Some)
            .collect(),
        // Each trial to its own `steps`.
        _ => vec![None],
    };
    let eta = p.sweep.early_stop.as_ref().map_or(1, |e| e.eta) as usize;
    let total: u64 = {
        let (mut n, mut before, mut sum) = (alive.len(), 0u64, 0u64);
        for r in &rungs {
            sum += match r {
                Some(b) => n as u64 * (b - before),
                None => alive.iter().map(|(t, _)| training::steps(p, t)).sum(),
            };
            before = r.unwrap_or(0);
            n = n.div_ceil(eta).max(1);
        }
        sum * seeds
    };
    let bar = crate::progress::bar(
        total,
        "{spinner} [{bar:40}] {pos}/{len} training steps  {msg}  {elapsed} elapsed  ETA {eta}",
    );
    let mut before = 0u64;
    for (k, rung) in rungs.iter().enumerate() {
        let last = k + 1 == rungs.len();
        let mut scored: Vec<(&Planned, Entry)> = Vec::new();
        let n = alive.len();
        for (i, (t, mut e)) in std::mem::take(&mut alive).into_iter().enumerate() {
            let budget = rung.unwrap_or_else(|| training::steps(p, t));
            let rung_text = if rungs.len() > 1 {
                format!("rung {}/{} ({budget} steps), ", k + 1, rungs.len())
            } else {
                String::new()
            };
            bar.set_message(format!("{rung_text}trial {}/{n}", i + 1));
            let t0 = Instant::now();
            match training::train_to(p, t, budget, &stop) {
                Ok(Some(r)) => r.record(&mut e),
                Ok(None) => {
                    bar.finish_and_clear();
                    eprintln!(
                        "sweep: interrupted; every training's checkpoint is saved in {}; run the same command to resume",
                        p.out_dir.display()
                    );
                    return Ok(ExitCode::from(INTERRUPTED));
                }
                Err(err) => {
                    e.status = Status::Failed;
                    e.error = Some(format!("training failed: {err:#}"));
                    bar.inc((budget - before.min(budget)) * seeds);
                    let failed = fail_fast(args, &e);
                    record(&mut journal, &mut entries, e)?;
                    if failed {
                        bar.finish_and_clear();
                        return Ok(ExitCode::FAILURE);
                    }
                    continue;
                }
            }
            e.seconds += t0.elapsed().as_secs_f64();
            bar.inc((budget - before.min(budget)) * seeds);
            if last {
                classify(&p.sweep, &mut e, true);
                training::prune_checkpoints(p, &e);
                record(&mut journal, &mut entries, e)?;
            } else {
                scored.push((t, e));
            }
        }
        before = rung.unwrap_or(0);
        if last {
            break;
        }
        let keep = scored.len().div_ceil(eta).max(1);
        let order = promotion_order(&p.sweep, &scored);
        let mut promoted = vec![false; scored.len()];
        for &i in order.iter().take(keep) {
            promoted[i] = true;
        }
        for ((t, mut e), up) in scored.into_iter().zip(promoted) {
            if up {
                training::forget(&mut e);
                alive.push((t, e));
            } else {
                e.status = Status::Pruned;
                training::prune_checkpoints(p, &e);
                record(&mut journal, &mut entries, e)?;
            }
        }
    }
    bar.finish_and_clear();
    let (run, full) = training::steps_run(
        p,
        p.planned
            .iter()
            .filter_map(|t| Some((t, entries.get(&t.hash)?))),
    );
    let how = format!(
        "{} training steps of the {} that training every trial to the end takes",
        run as u64, full as u64
    );
    super::finish(p, entries, &how, started)?;
    Ok(ExitCode::SUCCESS)
}

/// With `--fail-fast`, prints a failed trial's error and says to stop.
fn fail_fast(args: &Args, e: &Entry) -> bool {
    if !(args.fail_fast && e.status == Status::Failed) {
        return false;
    }
    eprint!("{}", e.error.as_deref().unwrap_or(""));
    eprintln!(
        "\nsweep: stopped at the first failed trial (--fail-fast); the journal keeps what ran"
    );
    true
}

/// Journals `e` unless the journal has its trial already (a resumed sweep
/// remakes the same decisions; the first record, with its times, stays),
/// or had it only as pruned and `e` is final.
fn record(journal: &mut Journal, entries: &mut HashMap<String, Entry>, e: Entry) -> Result<()> {
    let new = match entries.get(&e.hash) {
        None => true,
        Some(old) => old.status == Status::Pruned && e.status != Status::Pruned,
    };
    if new {
        journal.append(&e)?;
        entries.insert(e.hash.clone(), e);
    }
    Ok(())
}

/// The trials of a rung, best first: by `primary` when `[early_stop]`
/// names one, else by non-dominated rank over the objectives, then by the
/// first objective; ties in plan order.
fn promotion_order(sweep: &SweepFile, scored: &[(&Planned, Entry)]) -> Vec<usize> {
    let objectives: Vec<(String, bool)> =
        match sweep.early_stop.as_ref().and_then(|e| e.primary.as_ref()) {
            Some(m) => vec![(
                m.clone(),
                sweep
                    .objectives
                    .iter()
                    .find(|o| &o.metric == m)
                    .is_some_and(|o| o.maximize),
            )],
            None => sweep
                .objectives
                .iter()
                .map(|o| (o.metric.clone(), o.maximize))
                .collect(),
        };
    let maximize: Vec<bool> = objectives.iter().map(|o| o.1).collect();
    let points: Vec<Vec<f64>> = scored
        .iter()
        .map(|(_, e)| {
            objectives
                .iter()
                .map(|(m, _)| e.metrics.get(m).copied().unwrap_or(f64::NAN))
                .collect()
        })
        .collect();
    let ranks = pareto::ranks(&points, &maximize);
    let first = |i: usize| -> f64 {
        let x = points[i].first().copied().unwrap_or(f64::NAN);
        match (x.is_nan(), maximize.first()) {
            (true, _) => f64::INFINITY,
            (false, Some(true)) => -x,
            (false, _) => x,
        }
    };
    let mut order: Vec<usize> = (0..scored.len()).collect();
    order.sort_by(|&a, &b| {
        ranks[a]
            .cmp(&ranks[b])
            .then(first(a).total_cmp(&first(b)))
            .then(scored[a].0.point.index.cmp(&scored[b].0.point.index))
    });
    order
}
