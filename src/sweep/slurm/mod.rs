//! `mythos sweep --backend slurm`: the trials run as Slurm job arrays, one
//! trial per task, through Slurm itself (docs/sweeps.md, "On a cluster").
//!
//! The controller (this process, on a login node) plans the sweep like a
//! local run, drops the trials its journal has, writes a manifest of the rest
//! and submits one array (`sbatch --parsable --array=0-(N-1)%P`; split when
//! the cluster's `MaxArraySize` is smaller). Each task runs
//! `mythos sweep-worker` ([`worker`]), which writes its trial's result file.
//! The controller is the only writer of `journal.jsonl`: it merges result
//! files, watches `squeue`, resubmits tasks that left the queue without a
//! result (up to `retries`), and writes the same results as a local run.
//! Everything it needs to re-attach is under `DIR/slurm/` ([`state`]), so
//! running `mythos sweep` again is the resume.

pub mod cmd;
pub mod state;
pub mod worker;

use super::journal::{Entry, Journal, Status};
use super::spec::SlurmTable;
use super::{results, Planned, Prepared};
use anyhow::{bail, Context, Result};
use state::{ArrayRecord, Manifest, ManifestTrial, State};
use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// Array jobs carry `--comment=mythos:TOKEN`.
pub const COMMENT_PREFIX: &str = "mythos:";

/// Command-line flags of `--backend slurm` (over the `[slurm]` table).
#[derive(Clone, Debug, Default)]
pub struct Flags {
    pub max_parallel: Option<u64>,
    /// Passed to every `sbatch` as they are (`--sbatch-arg=--mem=4G`).
    pub sbatch_args: Vec<String>,
    /// Submit, then return without waiting.
    pub detach: bool,
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0.0, |d| d.as_secs_f64())
}

fn absolute(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf())
}

/// The job name of every array of the sweep whose output folder is `out_dir`.
fn job_name(out_dir: &Path) -> String {
    let h = super::trial::fnv1a64(&[&out_dir.display().to_string()]);
    format!("mythos-sweep-{:08x}", h as u32)
}

/// Where the controller is in the sweep.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
struct Counts {
    done: usize,
    running: usize,
    /// Queued, or out of the queue with its result not yet visible.
    pending: usize,
    gave_up: usize,
}

impl Counts {
    fn line(&self, total: usize) -> String {
        format!(
            "{}/{total} done, {} running, {} pending, {} failed",
            self.done, self.running, self.pending, self.gave_up
        )
    }
}

/// Filesystems that only the machine they are mounted on can see.
const LOCAL_FS: &[&str] = &["tmpfs", "ramfs", "devtmpfs"];

/// The type of the filesystem holding `path` (from /proc/mounts).
fn fs_type(path: &Path) -> Option<String> {
    let path = std::fs::canonicalize(path).ok()?;
    let mounts = std::fs::read_to_string("/proc/mounts").ok()?;
    mounts
        .lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let mount = f.get(1)?.replace("\\040", " ");
            let fs = f.get(2)?.to_string();
            path.starts_with(&mount).then_some((mount.len(), fs))
        })
        .max_by_key(|(len, _)| *len)
        .map(|(_, t)| t)
}

/// Refuses an output folder the tasks cannot write: one this process cannot
/// write, or one on a machine-local filesystem when the cluster has other nodes.
fn check_out_dir(out_dir: &Path, exe: &Path) -> Result<()> {
    let slurm = state::slurm_dir(out_dir);
    for d in [
        state::logs_dir(out_dir),
        state::faults_dir(out_dir),
        results::dir(out_dir),
    ] {
        std::fs::create_dir_all(&d).with_context(|| {
            format!(
                "cannot create {}: the output folder must be writable by the tasks; choose another with --out",
                d.display()
            )
        })?;
    }
    let probe = slurm.join(".write-probe");
    results::write_durable(&probe, b"probe\n").with_context(|| {
        format!(
            "the output folder {} is not writable; choose another with --out",
            out_dir.display()
        )
    })?;
    let _ = std::fs::remove_file(&probe);
    let here = results::hostname();
    let short = here.split('.').next().unwrap_or("").to_string();
    let others: Vec<String> = cmd::nodes()?
        .into_iter()
        .filter(|n| n != "localhost" && *n != here && *n != short)
        .collect();
    if others.is_empty() {
        return Ok(());
    }
    for (what, path) in [("the output folder", out_dir), ("the mythos binary", exe)] {
        if let Some(t) = fs_type(path).filter(|t| LOCAL_FS.contains(&t.as_str())) {
            bail!(
                "{what} {} is on a {t} filesystem, which only this machine sees; the cluster's \
                 nodes ({}) cannot. Put it on a filesystem they share (NFS, Lustre, GPFS, \
                 BeeGFS): --out for the folder, a shared install for the binary",
                path.display(),
                others.join(", ")
            );
        }
    }
    Ok(())
}

/// Single-quotes `s` for bash.
fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "'\\''"))
}

/// The batch script every array of this sweep runs.
fn batch_script(p: &Prepared, table: &SlurmTable, name: &str, exe: &Path) -> String {
    let mut s = format!(
        "#!/bin/bash\n# Written by `mythos sweep --backend slurm` for {}.\n# Each task of the \
         array runs one trial: sbatch [...] worker.sbatch MANIFEST\n#SBATCH --job-name={name}\n\
         #SBATCH --open-mode=append\n#SBATCH --requeue\n#SBATCH --signal=B:USR2@{}\n",
        p.name, table.signal_before
    );
    if let Some(x) = &table.partition {
        s += &format!("#SBATCH --partition={x}\n");
    }
    if let Some(x) = &table.time {
        s += &format!("#SBATCH --time={x}\n");
    }
    if let Some(x) = table.cpus_per_task {
        s += &format!("#SBATCH --cpus-per-task={x}\n");
    }
    if let Some(x) = table.gpus_per_task {
        s += &format!("#SBATCH --gpus-per-task={x}\n");
    }
    for line in &table.sbatch {
        s += &format!("#SBATCH {line}\n");
    }
    // `exec`: the worker becomes the batch shell, which --signal=B:... reaches.
    s += &format!(
        "exec {} sweep-worker --manifest \"$1\" --index \"$SLURM_ARRAY_TASK_ID\"\n",
        quote(&exe.display().to_string())
    );
    s
}

/// What made a trial's task fail: the worker's fault record, else the tail
/// of the task's stderr.
fn fault_of(out_dir: &Path, record: &ArrayRecord, task: usize, hash: &str) -> String {
    let fault = state::faults_dir(out_dir).join(format!("{hash}.json"));
    if let Some(v) = std::fs::read(&fault)
        .ok()
        .and_then(|b| serde_json::from_slice::<serde_json::Value>(&b).ok())
        .filter(|v| v["at"].as_f64().unwrap_or(0.0) >= record.submitted_at)
    {
        if let Some(e) = v["error"].as_str() {
            return e.to_string();
        }
    }
    let Some(job) = &record.job_id else {
        return "no log: the array's job id was never recorded (was the controller killed while submitting?)".into();
    };
    let err = state::logs_dir(out_dir).join(format!("{job}_{task}.err"));
    let tail = state::tail(&err, 12);
    if tail.trim().is_empty() {
        format!(
            "no output in {} (the task was cancelled before it started, or never ran)",
            err.display()
        )
    } else {
        format!("stderr of {job}_{task} ended with:\n{tail}")
    }
}

/// Submits `trials` as one array per `MaxArraySize` tasks.
struct Submitter<'a> {
    p: &'a Prepared,
    out_dir: &'a Path,
    table: &'a SlurmTable,
    flags: &'a Flags,
    script: PathBuf,
    counter: u64,
}

impl Submitter<'_> {
    fn submit(
        &mut self,
        state: &mut State,
        trials: &[&Planned],
        mut depend: Vec<String>,
    ) -> Result<()> {
        // Task indices stay below MaxArraySize.
        let size = cmd::max_array_size().max(1) as usize;
        for chunk in trials.chunks(size) {
            self.counter += 1;
            let token = format!(
                "{:016x}",
                super::trial::fnv1a64(&[
                    &self.out_dir.display().to_string(),
                    &unix_now().to_string(),
                    &std::process::id().to_string(),
                    &self.counter.to_string(),
                ])
            );
            let manifest = state::manifest_path(self.out_dir, &token);
            Manifest {
                schema: state::MANIFEST_SCHEMA.into(),
                sweep: absolute(&self.p.file),
                out: self.out_dir.to_path_buf(),
                trials: chunk
                    .iter()
                    .map(|t| ManifestTrial {
                        hash: t.hash.clone(),
                        index: t.point.index,
                    })
                    .collect(),
            }
            .save(&manifest)?;
            // Recorded before sbatch: a kill right after it leaves a record
            // whose array is found again by its comment.
            state.arrays.push(ArrayRecord {
                token: token.clone(),
                job_id: None,
                hashes: chunk.iter().map(|t| t.hash.clone()).collect(),
                submitted_at: unix_now(),
            });
            for t in chunk {
                *state.attempts.entry(t.hash.clone()).or_insert(0) += 1;
            }
            state.save(self.out_dir)?;
            let throttle = self.flags.max_parallel.or(self.table.max_parallel);
            let logs = state::logs_dir(self.out_dir);
            let mut args = vec![
                format!(
                    "--array=0-{}{}",
                    chunk.len() - 1,
                    throttle.map_or(String::new(), |p| format!("%{p}"))
                ),
                format!("--comment={COMMENT_PREFIX}{token}"),
                format!("--output={}", logs.join("%A_%a.out").display()),
                format!("--error={}", logs.join("%A_%a.err").display()),
            ];
            // With a throttle, arrays run one after the other, so that the
            // sweep never runs more than P tasks at once.
            if throttle.is_some() && !depend.is_empty() {
                args.push(format!("--dependency=afterany:{}", depend.join(":")));
            }
            args.extend(self.flags.sbatch_args.iter().cloned());
            args.push(self.script.display().to_string());
            args.push(manifest.display().to_string());
            let id = match cmd::sbatch(&args) {
                Ok(id) => id,
                Err(e) => {
                    state.arrays.pop();
                    for t in chunk {
                        if let Some(n) = state.attempts.get_mut(&t.hash) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    state.save(self.out_dir)?;
                    let _ = std::fs::remove_file(&manifest);
                    return Err(e);
                }
            };
            if let Some(last) = state.arrays.last_mut() {
                last.job_id = Some(id.clone());
            }
            state.save(self.out_dir)?;
            eprintln!(
                "sweep: submitted array {id}: {} trial(s){}; logs in {}/{id}_*.out",
                chunk.len(),
                throttle.map_or(String::new(), |p| format!(", at most {p} at once")),
                logs.display()
            );
            depend = vec![id];
        }
        Ok(())
    }
}

pub fn run(p: &Prepared, flags: &Flags, started: Instant) -> Result<ExitCode> {
    let table = &p.sweep.slurm;
    let out_dir = absolute(&p.out_dir);
    let exe = std::env::current_exe().context("finding the mythos binary")?;
    std::fs::create_dir_all(&out_dir).with_context(|| format!("creating {}", out_dir.display()))?;
    check_out_dir(&out_dir, &exe)?;
    let (mut journal, mut entries) = super::open_journal(p)?;
    let _ = std::fs::remove_file(state::cancelled_path(&out_dir));
    let name = job_name(&out_dir);
    let mut state = State::load(&out_dir)?.unwrap_or_else(|| State {
        schema: state::STATE_SCHEMA.into(),
        job_name: name.clone(),
        ..State::default()
    });
    state.job_name = name;
    state.planned = p.planned.iter().map(|t| t.hash.clone()).collect();
    // A new run gives up-on trials a new set of retries.
    for h in std::mem::take(&mut state.gave_up).into_keys() {
        state.attempts.remove(&h);
    }
    state.save(&out_dir)?;
    let script = state::slurm_dir(&out_dir).join("worker.sbatch");
    results::write_durable(
        &script,
        batch_script(p, table, &state.job_name, &exe).as_bytes(),
    )?;
    let mut submitter = Submitter {
        p,
        out_dir: &out_dir,
        table,
        flags,
        script,
        counter: 0,
    };
    let from_journal = p
        .planned
        .iter()
        .filter(|t| entries.contains_key(&t.hash))
        .count();

    let total = p.planned.len();
    let bar = crate::progress::bar(
        total as u64,
        "{spinner} [{bar:40}] {pos}/{len} trials  {msg}  {elapsed}",
    );
    let grace = Duration::from_secs(table.result_grace);
    let mut missing_since: HashMap<String, Instant> = HashMap::new();
    let mut last: Option<(Counts, Instant)> = None;
    let mut queue_errors = 0;
    loop {
        if state::cancelled_path(&out_dir).exists() {
            bar.finish_and_clear();
            eprintln!(
                "sweep: cancelled (`mythos sweep cancel`); {} of {total} trials have results. \
                 Run the same command again to submit the rest",
                p.planned
                    .iter()
                    .filter(|t| entries.contains_key(&t.hash))
                    .count()
            );
            return Ok(ExitCode::FAILURE);
        }
        // The queue first, then the result files: a task gone from the queue
        // wrote its result before it left, so the scan after sees it.
        let q = match cmd::queue(&state.job_name) {
            Ok(q) => {
                queue_errors = 0;
                q
            }
            Err(e) if queue_errors < 5 => {
                queue_errors += 1;
                eprintln!("sweep: {e:#} (trying again)");
                std::thread::sleep(Duration::from_secs_f64(table.poll));
                continue;
            }
            Err(e) => return Err(e),
        };
        let mut recovered = false;
        for rec in state.arrays.iter_mut().filter(|r| r.job_id.is_none()) {
            if let Some(id) = q.arrays.get(&rec.token) {
                eprintln!(
                    "sweep: re-attached to array {id} (submitted by a controller that was stopped)"
                );
                rec.job_id = Some(id.clone());
                recovered = true;
            }
        }
        if recovered {
            state.save(&out_dir)?;
        }
        results::merge(&out_dir, &mut journal, &mut entries)?;

        let mut counts = Counts::default();
        let mut to_submit: Vec<&Planned> = Vec::new();
        let mut changed = false;
        for t in &p.planned {
            if entries.contains_key(&t.hash) {
                counts.done += 1;
                missing_since.remove(&t.hash);
                continue;
            }
            if state.gave_up.contains_key(&t.hash) {
                counts.gave_up += 1;
                continue;
            }
            let Some((rec, task)) = state.latest(&t.hash) else {
                to_submit.push(t);
                continue;
            };
            let in_queue = rec
                .job_id
                .as_ref()
                .and_then(|j| q.tasks.get(&(j.clone(), task)));
            match in_queue {
                Some(cmd::TaskState::Running) => {
                    counts.running += 1;
                    missing_since.remove(&t.hash);
                }
                Some(cmd::TaskState::Pending) => {
                    counts.pending += 1;
                    missing_since.remove(&t.hash);
                }
                None => {
                    let since = *missing_since
                        .entry(t.hash.clone())
                        .or_insert_with(Instant::now);
                    // A task that requeued itself (USR2) can be out of
                    // squeue's view while slurmctld requeues it, and is
                    // held about two minutes before it runs again.
                    let requeued = rec
                        .job_id
                        .as_ref()
                        .is_some_and(|j| requeued_itself(&out_dir, j, task));
                    let wait = if requeued {
                        grace.max(REQUEUE_HOLD)
                    } else {
                        grace
                    };
                    if since.elapsed() < wait {
                        counts.pending += 1;
                        continue;
                    }
                    missing_since.remove(&t.hash);
                    let why = fault_of(&out_dir, rec, task, &t.hash);
                    let task_name = rec
                        .job_id
                        .as_ref()
                        .map_or("?".to_string(), |j| format!("{j}_{task}"));
                    let n = state.attempts.get(&t.hash).copied().unwrap_or(1);
                    bar.suspend(|| {
                        if n > table.retries {
                            eprintln!(
                                "sweep: trial {} (task {task_name}) failed {n} time(s); giving up. {why}",
                                t.hash
                            );
                        } else {
                            eprintln!(
                                "sweep: trial {} (task {task_name}) left the queue without a result; \
                                 resubmitting (submission {} of {}). {why}",
                                t.hash,
                                n + 1,
                                table.retries + 1
                            );
                        }
                    });
                    if n > table.retries {
                        state.gave_up.insert(
                            t.hash.clone(),
                            format!("the Slurm task failed {n} time(s); the last time: {why}"),
                        );
                        counts.gave_up += 1;
                        changed = true;
                    } else {
                        to_submit.push(t);
                    }
                }
            }
        }
        if changed {
            state.save(&out_dir)?;
        }
        if !to_submit.is_empty() {
            let active: BTreeSet<String> = q.tasks.keys().map(|(j, _)| j.clone()).collect();
            bar.suspend(|| submitter.submit(&mut state, &to_submit, active.into_iter().collect()))?;
            counts.pending += to_submit.len();
        }
        bar.set_position(counts.done as u64);
        bar.set_message(format!(
            "{} running, {} pending, {} failed",
            counts.running, counts.pending, counts.gave_up
        ));
        let quiet =
            last.is_some_and(|(c, at)| c == counts || at.elapsed() < Duration::from_secs(10));
        if bar.is_hidden() && !quiet {
            eprintln!("sweep: {}", counts.line(total));
            last = Some((counts, Instant::now()));
        }
        if flags.detach {
            eprintln!(
                "sweep: detached with {}; `mythos sweep status {}` shows progress, running the same \
                 `mythos sweep` command again waits for the rest and writes the results",
                counts.line(total),
                out_dir.display()
            );
            return Ok(ExitCode::SUCCESS);
        }
        if counts.running + counts.pending == 0 {
            break;
        }
        std::thread::sleep(Duration::from_secs_f64(table.poll));
    }
    bar.finish_and_clear();

    let ran = p
        .planned
        .iter()
        .filter(|t| entries.contains_key(&t.hash))
        .count()
        - from_journal;
    // Trials given up on show as failed (not journaled: the next run retries them).
    let mut all = entries;
    for t in &p.planned {
        if let Some(why) = state.gave_up.get(&t.hash) {
            all.entry(t.hash.clone()).or_insert_with(|| Entry {
                hash: t.hash.clone(),
                index: t.point.index,
                axes: super::axes_json(&p.sweep, &t.point),
                status: Status::Failed,
                violated: None,
                error: Some(why.clone()),
                metrics: Default::default(),
                spec: t.text.clone(),
                seconds: 0.0,
                spread: Default::default(),
                runs: Vec::new(),
            });
        }
    }
    super::finish(
        p,
        all,
        &format!(
            "{ran} run on Slurm now, {from_journal} from the journal, {} given up",
            state.gave_up.len()
        ),
        started,
    )?;
    Ok(ExitCode::SUCCESS)
}

/// How long a task that requeued itself may be out of the queue (Slurm
/// holds a requeued job about 120 s before it may start again).
const REQUEUE_HOLD: Duration = Duration::from_secs(150);

/// Whether task `job_task`'s last log line is its worker's requeue.
fn requeued_itself(out_dir: &Path, job: &str, task: usize) -> bool {
    let log = state::logs_dir(out_dir).join(format!("{job}_{task}.out"));
    std::fs::read_to_string(log).is_ok_and(|l| {
        l.lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .is_some_and(|l| l.starts_with("mythos sweep-worker: requeued "))
    })
}

/// Loads the state of the Slurm sweep in `dir`, or says what `dir` is not.
fn load_state(dir: &Path) -> Result<State> {
    State::load(dir)?.ok_or_else(|| {
        anyhow::anyhow!(
            "{} holds no Slurm sweep (no {}); pass the output folder of a \
             `mythos sweep --backend slurm` run",
            dir.display(),
            state::state_path(dir).display()
        )
    })
}

/// `mythos sweep status DIR`: counts from the journal, the result files and
/// `squeue` (reads only; the controller stays the journal's one writer).
pub fn status(dir: &Path) -> Result<ExitCode> {
    let dir = absolute(dir);
    let state = load_state(&dir)?;
    let mut entries = Journal::read(&dir.join("journal.jsonl"))?;
    for e in results::scan(&dir) {
        entries.entry(e.hash.clone()).or_insert(e);
    }
    let q = cmd::queue(&state.job_name)?;
    let mut c = Counts::default();
    let (mut ok, mut rejected, mut failed, mut unsubmitted) = (0, 0, 0, 0);
    for h in &state.planned {
        if let Some(e) = entries.get(h) {
            c.done += 1;
            match e.status {
                Status::Ok => ok += 1,
                // A Slurm sweep never prunes ([early_stop] runs locally).
                Status::Rejected | Status::Pruned => rejected += 1,
                Status::Failed => failed += 1,
            }
            continue;
        }
        if state.gave_up.contains_key(h) {
            c.gave_up += 1;
            continue;
        }
        match state
            .latest(h)
            .and_then(|(r, i)| r.job_id.as_ref().and_then(|j| q.tasks.get(&(j.clone(), i))))
        {
            Some(cmd::TaskState::Running) => c.running += 1,
            Some(cmd::TaskState::Pending) => c.pending += 1,
            None => unsubmitted += 1,
        }
    }
    let arrays: BTreeSet<&String> = q.tasks.keys().map(|(j, _)| j).collect();
    println!(
        "{}: {} ({ok} ok, {rejected} rejected, {failed} failed trials among the done), {unsubmitted} \
         neither queued nor done",
        dir.display(),
        c.line(state.planned.len())
    );
    if arrays.is_empty() {
        println!(
            "no array of this sweep ({}) is in the queue",
            state.job_name
        );
    } else {
        let ids: Vec<&str> = arrays.iter().map(|s| s.as_str()).collect();
        println!(
            "arrays in the queue: {} (job name {})",
            ids.join(", "),
            state.job_name
        );
    }
    if unsubmitted > 0 {
        println!(
            "run the `mythos sweep` command again to submit or resubmit the trials not queued"
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// `mythos sweep cancel DIR`: `scancel` of the sweep's arrays still queued or
/// running; a controller that waits on them stops.
pub fn cancel(dir: &Path) -> Result<ExitCode> {
    let dir = absolute(dir);
    let state = load_state(&dir)?;
    // The mark first, so that a waiting controller does not resubmit.
    results::write_durable(
        &state::cancelled_path(&dir),
        b"cancelled by `mythos sweep cancel`\n",
    )?;
    let q = cmd::queue(&state.job_name)?;
    let ids: BTreeSet<String> = q.tasks.keys().map(|(j, _)| j.clone()).collect();
    let ids: Vec<String> = ids.into_iter().collect();
    cmd::scancel(&ids)?;
    if ids.is_empty() {
        println!("nothing to cancel: no array of this sweep is queued or running");
    } else {
        println!(
            "cancelled array(s) {} ({} task(s) queued or running); the results so far stay in {}",
            ids.join(", "),
            q.tasks.len(),
            dir.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
