//! `mythos sweep-worker --manifest M --index I`: one array task, one trial.
//!
//! The batch script `exec`s this (so that Slurm's `--signal=B:USR2@N` reaches
//! it). It re-reads the sweep file named in the manifest, finds its trial by
//! hash, evaluates it exactly as a local sweep would ([`crate::sweep::evaluate`])
//! and writes the result file ([`crate::sweep::results`]). Its stdout (the
//! task's `.out` log) gets one `start` and one `end` line with Unix times.
//!
//! On USR2 (the time limit or a preemption is near) it requeues its own task
//! with `scontrol requeue`; the task runs again from the start. Today's
//! trials (a static analysis, a CPU timing) take seconds and keep no partial
//! state, so starting over loses nothing; a trial with a checkpoint saves it
//! here before the requeue.

use super::cmd;
use super::state::{faults_dir, Manifest};
use crate::sweep::{self, results};
use anyhow::{bail, Context, Result};
use std::path::Path;
use std::process::ExitCode;
use std::time::{SystemTime, UNIX_EPOCH};

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

/// `JOB_TASK` of this array task (from Slurm's environment), if any.
fn task_id() -> Option<String> {
    let job = std::env::var("SLURM_ARRAY_JOB_ID").ok()?;
    let task = std::env::var("SLURM_ARRAY_TASK_ID").ok()?;
    Some(format!("{job}_{task}"))
}

pub fn run(manifest: &Path, index: usize) -> Result<ExitCode> {
    let m = Manifest::load(manifest)?;
    let Some(t) = m.trials.get(index).cloned() else {
        bail!(
            "{} has {} trials; there is no task index {index}",
            manifest.display(),
            m.trials.len()
        );
    };
    // Before the `start` line: a USR2 that follows it finds the handler.
    watch_usr2();
    let task = task_id().unwrap_or_else(|| "-".into());
    let restart = std::env::var("SLURM_RESTART_COUNT").unwrap_or_else(|_| "0".into());
    println!(
        "mythos sweep-worker: start trial {} (plan index {}) task {task} host {} restart {restart} at {:.3}",
        t.hash,
        t.index,
        results::hostname(),
        now()
    );
    match evaluate(&m, &t.hash) {
        Ok(status) => {
            println!(
                "mythos sweep-worker: end trial {} status {status} task {task} at {:.3}",
                t.hash,
                now()
            );
            Ok(ExitCode::SUCCESS)
        }
        Err(e) => {
            let msg = format!("{e:#}");
            eprintln!("error: {msg}");
            let fault = serde_json::json!({
                "hash": t.hash,
                "task": task,
                "host": results::hostname(),
                "at": now(),
                "error": msg,
            });
            let dir = faults_dir(&m.out);
            let _ = std::fs::create_dir_all(&dir);
            let _ = results::write_durable(
                &dir.join(format!("{}.json", t.hash)),
                &serde_json::to_vec_pretty(&fault).unwrap_or_default(),
            );
            Ok(ExitCode::FAILURE)
        }
    }
}

/// Evaluates the trial `hash` of the manifest's sweep and writes its result.
fn evaluate(m: &Manifest, hash: &str) -> Result<&'static str> {
    let Some(p) = sweep::prepare(&m.sweep, Some(&m.out)) else {
        bail!(
            "the sweep file {} does not check any more (its errors are above); fix it and run \
             `mythos sweep` again",
            m.sweep.display()
        );
    };
    let Some(planned) = p.planned.iter().find(|t| t.hash == hash) else {
        bail!(
            "trial {hash} is no longer in the plan of {}: the sweep file, its base or the mythos \
             binary changed since the submission. Run `mythos sweep` again to submit the new plan",
            m.sweep.display()
        );
    };
    let entry = sweep::evaluate(&p, planned);
    results::write(&m.out, &entry).context("writing the trial's result file")?;
    Ok(entry.status.as_str())
}

/// On USR2, requeues this task (a thread waits for the signal).
fn watch_usr2() {
    let Some(task) = task_id() else {
        return;
    };
    let Ok(mut signals) = signal_hook::iterator::Signals::new([signal_hook::consts::SIGUSR2])
    else {
        eprintln!("mythos sweep-worker: cannot watch for USR2; the task will not requeue itself");
        return;
    };
    std::thread::spawn(move || {
        if signals.forever().next().is_some() {
            println!(
                "mythos sweep-worker: USR2 at {:.3} (time limit or preemption near): requeueing task {task}",
                now()
            );
            match cmd::requeue(&task) {
                Ok(()) => println!("mythos sweep-worker: requeued {task}"),
                Err(e) => eprintln!(
                    "mythos sweep-worker: could not requeue {task} ({e:#}); going on until killed"
                ),
            }
        }
    });
}
