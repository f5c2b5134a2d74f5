//! The Slurm commands the controller and the worker run (`sbatch`, `squeue`,
//! `scancel`, `scontrol`, `sinfo`), each with an error that says what failed
//! and what to do. No accounting database is needed (`sacct` is not used).

use anyhow::{bail, Result};
use std::collections::HashMap;
use std::process::Command;

/// Runs a Slurm client; its stdout, or an error naming the command and
/// showing its stderr.
fn run(program: &str, args: &[String]) -> Result<String> {
    let out = match Command::new(program).args(args).output() {
        Ok(o) => o,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => bail!(
            "`{program}` not found: `--backend slurm` runs where the Slurm client commands are \
             installed (a cluster's login node); install Slurm's clients or run the sweep \
             without `--backend slurm`"
        ),
        Err(e) => bail!("cannot run `{program}`: {e}"),
    };
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        let stdout = String::from_utf8_lossy(&out.stdout);
        let msg = if stderr.trim().is_empty() {
            stdout.trim()
        } else {
            stderr.trim()
        };
        bail!(
            "`{program} {}` failed ({}): {msg}",
            args.join(" "),
            out.status
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Submits a batch script; the job id (`--parsable` prints `ID` or `ID;cluster`).
pub fn sbatch(args: &[String]) -> Result<String> {
    let mut all = vec!["--parsable".to_string()];
    all.extend(args.iter().cloned());
    let out = run("sbatch", &all).map_err(|e| {
        anyhow::anyhow!("{e:#}\nSlurm refused the submission; fix the `[slurm]` table or the --sbatch-arg flags")
    })?;
    let id = out
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_string();
    if id.is_empty() || !id.chars().all(|c| c.is_ascii_digit()) {
        bail!("`sbatch --parsable` printed `{}`, not a job id", out.trim());
    }
    Ok(id)
}

/// A task's state as `squeue` prints it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskState {
    Pending,
    Running,
}

/// What `squeue` knows of one sweep's array tasks.
#[derive(Default, Debug)]
pub struct Queue {
    /// (array job id, task index) -> state, for tasks still queued or running.
    pub tasks: HashMap<(String, usize), TaskState>,
    /// Submission token (the job's comment) -> array job id.
    pub arrays: HashMap<String, String>,
}

/// The tasks of every job named `name` that are queued or running.
pub fn queue(name: &str) -> Result<Queue> {
    let out = run(
        "squeue",
        &[
            "-h".into(),
            "-r".into(),
            format!("--name={name}"),
            "-o".into(),
            "%F|%K|%T|%k".into(),
        ],
    )?;
    Ok(parse_queue(&out))
}

/// Parses `squeue -h -r -o '%F|%K|%T|%k'`.
fn parse_queue(out: &str) -> Queue {
    let mut q = Queue::default();
    for line in out.lines() {
        let f: Vec<&str> = line.trim().splitn(4, '|').collect();
        let [array, task, state, comment] = f[..] else {
            continue;
        };
        let Ok(task) = task.parse::<usize>() else {
            continue;
        };
        let state = match state {
            "RUNNING" | "COMPLETING" | "CONFIGURING" | "SIGNALING" | "STAGE_OUT" | "RESIZING" => {
                TaskState::Running
            }
            "PENDING" | "REQUEUED" | "REQUEUE_HOLD" | "REQUEUE_FED" | "SUSPENDED" | "STOPPED"
            | "RESV_DEL_HOLD" => TaskState::Pending,
            // COMPLETED, FAILED, CANCELLED, TIMEOUT, NODE_FAIL, PREEMPTED,
            // OUT_OF_MEMORY, BOOT_FAIL, DEADLINE, SPECIAL_EXIT: gone.
            _ => continue,
        };
        if let Some(token) = comment.strip_prefix(super::COMMENT_PREFIX) {
            q.arrays.insert(token.to_string(), array.to_string());
        }
        q.tasks.insert((array.to_string(), task), state);
    }
    q
}

/// Cancels jobs (whole arrays or `ID_TASK`).
pub fn scancel(ids: &[String]) -> Result<()> {
    if ids.is_empty() {
        return Ok(());
    }
    run("scancel", ids).map(|_| ())
}

/// Requeues one array task (the worker, on USR2).
pub fn requeue(job: &str) -> Result<()> {
    run("scontrol", &["requeue".into(), job.into()]).map(|_| ())
}

/// The cluster's `MaxArraySize` (an array's task indices stay below it).
pub fn max_array_size() -> u64 {
    run("scontrol", &["show".into(), "config".into()])
        .ok()
        .and_then(|out| {
            out.lines()
                .find_map(|l| l.trim().strip_prefix("MaxArraySize"))
                .and_then(|rest| rest.trim().trim_start_matches('=').trim().parse().ok())
        })
        .unwrap_or(1001)
}

/// The names of the cluster's nodes.
pub fn nodes() -> Result<Vec<String>> {
    let out = run(
        "sinfo",
        &["-h".into(), "-N".into(), "-o".into(), "%N".into()],
    )?;
    let mut v: Vec<String> = out.lines().map(|l| l.trim().to_string()).collect();
    v.retain(|n| !n.is_empty());
    v.sort();
    v.dedup();
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn queue_lines() {
        let q = parse_queue(
            "12|0|RUNNING|mythos:ab\n12|1|PENDING|mythos:ab\n12|2|COMPLETED|mythos:ab\n13|N/A|PENDING|x\n",
        );
        assert_eq!(q.tasks.len(), 2);
        assert_eq!(q.tasks[&("12".into(), 0)], TaskState::Running);
        assert_eq!(q.tasks[&("12".into(), 1)], TaskState::Pending);
        assert_eq!(q.arrays["ab"], "12");
    }
}
