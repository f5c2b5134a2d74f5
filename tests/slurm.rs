//! `mythos sweep --backend slurm` against a real Slurm: each test starts a
//! one-node cluster (munged, slurmctld, slurmd; `tools/slurm/cluster.sh`,
//! installed by `tools/slurm/ensure-slurm.sh` when missing) and stops it
//! after. Where Slurm cannot be installed or started (not root, no package
//! access), the tests say so and pass without running.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// One cluster at a time: they share the daemons' ports.
static CLUSTER: Mutex<()> = Mutex::new(());

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A running test cluster; stopped (by its pid files) when dropped.
struct Cluster {
    dir: PathBuf,
    conf: PathBuf,
    _lock: std::sync::MutexGuard<'static, ()>,
}

impl Cluster {
    /// Starts a cluster with 2 CPUs and `MaxArraySize=10`, or says why not.
    fn start(name: &str) -> Option<Cluster> {
        let lock = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
        let ensure = Command::new(root().join("tools/slurm/ensure-slurm.sh"))
            .output()
            .expect("running tools/slurm/ensure-slurm.sh");
        if !ensure.status.success() {
            eprintln!(
                "skipping the Slurm test {name}: Slurm cannot be installed here: {}",
                text(&ensure.stderr).trim()
            );
            return None;
        }
        // One fixed folder: a cluster left by a killed test run is found by
        // its pid files and stopped before this one starts.
        let dir = PathBuf::from("/tmp/mythos-slurm-test");
        let t0 = Instant::now();
        let out = Command::new(root().join("tools/slurm/cluster.sh"))
            .arg("start")
            .arg(&dir)
            .arg("2")
            .env("MYTHOS_TEST_MAX_ARRAY_SIZE", "10")
            .output()
            .expect("running tools/slurm/cluster.sh");
        if out.status.code() == Some(3) {
            eprintln!(
                "skipping the Slurm test {name}: {}",
                text(&out.stderr).trim()
            );
            return None;
        }
        assert!(
            out.status.success(),
            "the test cluster did not start: {}{}",
            text(&out.stdout),
            text(&out.stderr)
        );
        eprintln!(
            "{name}: test cluster up in {:.2}s",
            t0.elapsed().as_secs_f64()
        );
        Some(Cluster {
            conf: dir.join("slurm.conf"),
            dir,
            _lock: lock,
        })
    }

    /// A command with this cluster's `SLURM_CONF`.
    fn cmd(&self, program: impl AsRef<std::ffi::OsStr>) -> Command {
        let mut c = Command::new(program);
        c.env("SLURM_CONF", &self.conf);
        c
    }

    fn mythos(&self) -> Command {
        self.cmd(env!("CARGO_BIN_EXE_mythos"))
    }

    fn slurm(&self, program: &str, args: &[&str]) -> Output {
        let out = self.cmd(program).args(args).output().unwrap();
        assert!(
            out.status.success(),
            "{program} {args:?}: {}",
            text(&out.stderr)
        );
        out
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(root().join("tools/slurm/cluster.sh"))
            .arg("stop")
            .arg(&self.dir)
            .status();
    }
}

/// A fresh folder for one test's sweep.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mythos-slurm-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A sweep over @tiny-gqa with `n` trials (n <= 16) and the `[slurm]` lines.
fn write_sweep(dir: &Path, n: usize, slurm: &str) -> PathBuf {
    let values: Vec<String> = (1..=n).map(|i| i.to_string()).collect();
    let path = dir.join("sweep.toml");
    std::fs::write(
        &path,
        format!(
            "base = \"@tiny-gqa\"\nobjectives = [{{ minimize = \"params.total\" }}]\n\n[axes]\n\
             \"loop.max\" = [{}]\n\n[slurm]\n{slurm}\n",
            values.join(", ")
        ),
    )
    .unwrap();
    path
}

/// One task's run, from the worker's `start` and `end` lines.
#[derive(Debug, Clone)]
struct Run {
    hash: String,
    task: String,
    restart: u32,
    start: f64,
    end: Option<f64>,
}

/// Every worker run in the sweep's task logs (`DIR/slurm/logs/*.out`).
fn runs(out: &Path) -> Vec<Run> {
    let mut runs: Vec<Run> = Vec::new();
    let Ok(dir) = std::fs::read_dir(out.join("slurm/logs")) else {
        return runs;
    };
    let mut files: Vec<PathBuf> = dir.flatten().map(|e| e.path()).collect();
    files.sort();
    for f in files
        .iter()
        .filter(|f| f.extension().is_some_and(|e| e == "out"))
    {
        for line in std::fs::read_to_string(f).unwrap_or_default().lines() {
            let w: Vec<&str> = line.split_whitespace().collect();
            let at = || w.last().and_then(|t| t.parse::<f64>().ok());
            // mythos sweep-worker: start trial H (plan index I) task J_T host X restart R at T
            if line.starts_with("mythos sweep-worker: start trial") && w.len() == 16 {
                runs.push(Run {
                    hash: w[4].to_string(),
                    task: w[9].to_string(),
                    restart: w[13].parse().unwrap_or(0),
                    start: at().unwrap_or(0.0),
                    end: None,
                });
            } else if line.starts_with("mythos sweep-worker: end trial") && w.len() > 4 {
                let hash = w[4];
                if let Some(r) = runs
                    .iter_mut()
                    .rev()
                    .find(|r| r.hash == hash && r.end.is_none())
                {
                    r.end = at();
                }
            }
        }
    }
    runs
}

/// How many times each trial started.
fn starts(out: &Path) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in runs(out) {
        *m.entry(r.hash).or_insert(0) += 1;
    }
    m
}

/// The hashes of the journal's lines, duplicates kept.
fn journal(out: &Path) -> Vec<String> {
    std::fs::read_to_string(out.join("journal.jsonl"))
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["hash"].as_str().unwrap().to_string())
        .collect()
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// The planned trials' hashes, from results.json.
fn planned(out: &Path) -> BTreeSet<String> {
    results(out)["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["hash"].as_str().unwrap().to_string())
        .collect()
}

/// Waits (at most two minutes) until `cond` holds.
fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    let t0 = Instant::now();
    while !cond() {
        assert!(
            t0.elapsed() < Duration::from_secs(120),
            "timed out waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// Waits for a spawned controller; its output, or the logs on a timeout.
fn finish(child: Child, what: &str) -> Output {
    let out = child.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "{what}: {}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    out
}

/// Asserts that every planned trial is in the journal exactly once.
fn assert_complete(out: &Path, n: usize) {
    let j = journal(out);
    let unique: BTreeSet<String> = j.iter().cloned().collect();
    assert_eq!(j.len(), unique.len(), "a trial was journaled twice: {j:?}");
    let plan = planned(out);
    assert_eq!(plan.len(), n);
    assert_eq!(unique, plan, "the journal and the plan differ");
    for t in results(out)["trials"].as_array().unwrap() {
        assert_eq!(t["status"], "ok", "{t}");
    }
}

#[test]
fn example_sweep_on_slurm_gives_the_local_results() {
    let Some(c) = Cluster::start("example") else {
        return;
    };
    let dir = scratch("example");
    std::fs::copy(
        root().join("examples/sweeps/injection.toml"),
        dir.join("injection.toml"),
    )
    .unwrap();
    let local = c
        .mythos()
        .current_dir(&dir)
        .args(["sweep", "injection.toml", "--out", "local.out"])
        .output()
        .unwrap();
    assert!(local.status.success(), "{}", text(&local.stderr));
    let t0 = Instant::now();
    let slurm = c
        .mythos()
        .current_dir(&dir)
        .args([
            "sweep",
            "injection.toml",
            "--backend",
            "slurm",
            "--out",
            "slurm.out",
        ])
        .output()
        .unwrap();
    let stderr = text(&slurm.stderr);
    assert!(slurm.status.success(), "{stderr}");
    eprintln!(
        "16 trials on the test cluster in {:.1}s",
        t0.elapsed().as_secs_f64()
    );
    // 16 trials, MaxArraySize 10: two arrays.
    assert_eq!(
        stderr.matches("sweep: submitted array").count(),
        2,
        "{stderr}"
    );
    assert!(stderr.contains("16 run on Slurm now"), "{stderr}");
    assert_eq!(
        text(&local.stdout),
        text(&slurm.stdout),
        "the ranked tables differ"
    );
    let (l, s) = (dir.join("local.out"), dir.join("slurm.out"));
    for f in [
        "results.csv",
        "results.json",
        "pareto.svg",
        "effect-loop.inject.svg",
        "effect-loop.halt.svg",
        "effect-loop.max.svg",
    ] {
        let a = std::fs::read(l.join(f)).unwrap();
        let b = std::fs::read(s.join(f)).unwrap();
        assert!(a == b, "{f} differs between the local and the Slurm run");
    }
    assert_complete(&s, 16);
    // Per-task logs named by array job and task id, one start per trial.
    let runs = runs(&s);
    assert_eq!(runs.len(), 16, "{runs:?}");
    for r in &runs {
        assert!(
            s.join(format!("slurm/logs/{}.out", r.task)).exists(),
            "no log for task {}",
            r.task
        );
        assert!(r.end.is_some(), "task {} did not end", r.task);
    }
    // A second run finds everything in the journal and submits nothing.
    let again = c
        .mythos()
        .current_dir(&dir)
        .args([
            "sweep",
            "injection.toml",
            "--backend",
            "slurm",
            "--out",
            "slurm.out",
        ])
        .output()
        .unwrap();
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    assert!(!stderr.contains("submitted array"), "{stderr}");
    assert!(stderr.contains("16 from the journal"), "{stderr}");
    // A submission Slurm refuses: exit 1 with its message.
    let refused = c
        .mythos()
        .current_dir(&dir)
        .args([
            "sweep",
            "injection.toml",
            "--backend",
            "slurm",
            "--out",
            "refused.out",
            "--sbatch-arg=--partition=nosuchpartition",
        ])
        .output()
        .unwrap();
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("Slurm refused the submission"), "{stderr}");
    assert!(stderr.to_lowercase().contains("partition"), "{stderr}");
}

#[test]
fn killed_controller_resumes_without_losing_or_repeating_a_trial() {
    let Some(c) = Cluster::start("kill") else {
        return;
    };
    let dir = scratch("kill");
    let sweep = write_sweep(&dir, 8, "poll = 0.5");
    let out = dir.join("out");
    let mut child = c
        .mythos()
        .args(["sweep"])
        .arg(&sweep)
        .args(["--backend", "slurm", "--max-parallel", "2", "--out"])
        .arg(&out)
        .env("MYTHOS_SWEEP_TRIAL_DELAY_MS", "1500")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill the controller once some trials are done and others are not.
    wait_for("two finished trials", || {
        std::fs::read_dir(out.join("results.d")).map_or(0, |d| d.count()) >= 2
    });
    child.kill().unwrap();
    child.wait().unwrap();
    let before = journal(&out).len();
    let status = c
        .mythos()
        .args(["sweep", "status"])
        .arg(&out)
        .output()
        .unwrap();
    let shown = text(&status.stdout);
    assert!(status.status.success(), "{}", text(&status.stderr));
    assert!(shown.contains("/8 done"), "{shown}");
    let again = c
        .mythos()
        .arg("sweep")
        .arg(&sweep)
        .args(["--backend", "slurm", "--max-parallel", "2", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    let stderr = text(&again.stderr);
    assert!(again.status.success(), "{stderr}");
    // Re-attached to the array still running: nothing submitted twice.
    assert!(!stderr.contains("submitted array"), "{stderr}");
    assert!(!stderr.contains("resubmitting"), "{stderr}");
    eprintln!("killed with {before} trials journaled; {stderr}");
    assert_complete(&out, 8);
    let s = starts(&out);
    assert_eq!(s.len(), 8, "{s:?}");
    assert!(s.values().all(|&n| n == 1), "a trial ran twice: {s:?}");
}

#[test]
fn cancelled_task_is_resubmitted_and_completes() {
    let Some(c) = Cluster::start("scancel") else {
        return;
    };
    let dir = scratch("scancel");
    let sweep = write_sweep(&dir, 4, "poll = 0.5\nresult_grace = 1");
    let out = dir.join("out");
    let child = c
        .mythos()
        .arg("sweep")
        .arg(&sweep)
        .args(["--backend", "slurm", "--out"])
        .arg(&out)
        .env("MYTHOS_SWEEP_TRIAL_DELAY_MS", "4000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut victim = None;
    wait_for("a running trial", || {
        victim = runs(&out).into_iter().find(|r| r.end.is_none());
        victim.is_some()
    });
    let victim = victim.unwrap();
    c.slurm("scancel", &[&victim.task]);
    let done = finish(child, "the controller after scancel");
    let stderr = text(&done.stderr);
    assert!(
        stderr.contains(&format!("trial {} (task {})", victim.hash, victim.task)),
        "{stderr}"
    );
    assert!(
        stderr.contains("resubmitting (submission 2 of 3)"),
        "{stderr}"
    );
    assert!(
        stderr.contains("CANCELLED"),
        "the stderr tail is shown: {stderr}"
    );
    assert_complete(&out, 4);
    let s = starts(&out);
    assert_eq!(s[&victim.hash], 2, "{s:?}");
    assert_eq!(s.values().sum::<usize>(), 5, "{s:?}");
}

#[test]
fn max_parallel_1_never_runs_two_tasks_at_once() {
    let Some(c) = Cluster::start("throttle") else {
        return;
    };
    let dir = scratch("throttle");
    let sweep = write_sweep(&dir, 5, "poll = 0.5");
    let out = dir.join("out");
    let done = c
        .mythos()
        .arg("sweep")
        .arg(&sweep)
        .args(["--backend", "slurm", "--max-parallel", "1", "--out"])
        .arg(&out)
        .env("MYTHOS_SWEEP_TRIAL_DELAY_MS", "700")
        .output()
        .unwrap();
    assert!(done.status.success(), "{}", text(&done.stderr));
    assert!(text(&done.stderr).contains("at most 1 at once"));
    assert_complete(&out, 5);
    let mut r = runs(&out);
    assert_eq!(r.len(), 5, "{r:?}");
    r.sort_by(|a, b| a.start.total_cmp(&b.start));
    for w in r.windows(2) {
        let end = w[0].end.expect("every task ended");
        assert!(
            end <= w[1].start,
            "tasks {} and {} overlap: {end} > {}",
            w[0].task,
            w[1].task,
            w[1].start
        );
    }
}

#[test]
fn usr2_requeues_the_task_which_then_completes() {
    let Some(c) = Cluster::start("usr2") else {
        return;
    };
    let dir = scratch("usr2");
    let sweep = write_sweep(&dir, 1, "poll = 0.5");
    let out = dir.join("out");
    let child = c
        .mythos()
        .arg("sweep")
        .arg(&sweep)
        .args(["--backend", "slurm", "--out"])
        .arg(&out)
        .env("MYTHOS_SWEEP_TRIAL_DELAY_MS", "5000")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut task = String::new();
    wait_for("the trial to start", || match runs(&out).first() {
        Some(r) => {
            task = r.task.clone();
            true
        }
        None => false,
    });
    // What Slurm does `signal_before` seconds before a time limit or a preemption.
    c.slurm("scancel", &["--signal=USR2", "--batch", &task]);
    let log = out.join(format!("slurm/logs/{task}.out"));
    wait_for("the requeue", || {
        std::fs::read_to_string(&log).is_ok_and(|l| l.contains(&format!("requeued {task}")))
    });
    // A requeued job waits ~120 s to start again; let it start now.
    wait_for("the task to be pending", || {
        let q = c.slurm("squeue", &["-h", "-r", "-j", &task, "-o", "%T"]);
        text(&q.stdout).trim() == "PENDING"
    });
    // The requeue may set its begin time after the job shows as pending,
    // overwriting an earlier update: repeat the update (every 2 s) until the
    // task has started again.
    let mut polls = 0;
    wait_for("the requeued task to start again", || {
        if runs(&out).len() >= 2 {
            return true;
        }
        if polls % 10 == 0 {
            // A job requeued while still completing can also come back held;
            // both commands are refused once the task has run again: fine.
            let _ = c.cmd("scontrol").args(["release", &task]).output();
            let _ = c
                .cmd("scontrol")
                .args(["update", &format!("jobid={task}"), "starttime=now"])
                .output();
        }
        polls += 1;
        false
    });
    finish(child, "the controller after the requeue");
    assert_complete(&out, 1);
    let r = runs(&out);
    assert_eq!(r.len(), 2, "{r:?}");
    assert_eq!((r[0].restart, r[1].restart), (0, 1), "{r:?}");
    assert!(r[0].end.is_none() && r[1].end.is_some(), "{r:?}");
}

#[test]
fn detached_sweep_status_and_cancel() {
    let Some(c) = Cluster::start("detach") else {
        return;
    };
    let dir = scratch("detach");
    let sweep = write_sweep(&dir, 4, "poll = 0.5\nresult_grace = 1");
    let out = dir.join("out");
    let detached = c
        .mythos()
        .arg("sweep")
        .arg(&sweep)
        .args([
            "--backend",
            "slurm",
            "--detach",
            "--max-parallel",
            "1",
            "--out",
        ])
        .arg(&out)
        .env("MYTHOS_SWEEP_TRIAL_DELAY_MS", "3000")
        .output()
        .unwrap();
    let stderr = text(&detached.stderr);
    assert!(detached.status.success(), "{stderr}");
    assert!(stderr.contains("detached with 0/4 done"), "{stderr}");
    let status = c
        .mythos()
        .args(["sweep", "status"])
        .arg(&out)
        .output()
        .unwrap();
    let shown = text(&status.stdout);
    assert!(shown.contains("0/4 done"), "{shown}");
    assert!(shown.contains("arrays in the queue"), "{shown}");
    let cancel = c
        .mythos()
        .args(["sweep", "cancel"])
        .arg(&out)
        .output()
        .unwrap();
    let shown = text(&cancel.stdout);
    assert!(cancel.status.success(), "{}", text(&cancel.stderr));
    assert!(shown.contains("cancelled array(s)"), "{shown}");
    wait_for("the queue to empty", || {
        let q = c.slurm("squeue", &["-h", "-r", "-o", "%i"]);
        text(&q.stdout).trim().is_empty()
    });
    // Running the command again submits what the cancel left undone.
    let resumed = c
        .mythos()
        .arg("sweep")
        .arg(&sweep)
        .args(["--backend", "slurm", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert_complete(&out, 4);
}

#[test]
fn missing_slurm_commands_are_a_clear_error() {
    // Needs no cluster: the Slurm clients are simply not on PATH.
    let dir = scratch("nosbatch");
    let sweep = write_sweep(&dir, 2, "");
    let out = Command::new(env!("CARGO_BIN_EXE_mythos"))
        .arg("sweep")
        .arg(&sweep)
        .args(["--backend", "slurm"])
        .env("PATH", "/nonexistent")
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("not found"), "{stderr}");
    assert!(stderr.contains("without `--backend slurm`"), "{stderr}");
}

#[test]
fn training_sweep_on_slurm_gives_the_local_results() {
    let Some(c) = Cluster::start("training") else {
        return;
    };
    let dir = scratch("training");
    std::fs::write(
        dir.join("tiny.mythos"),
        "model tiny_add {\n  vocab = 12\n  dim = 16\n  max_seq = 16\n  rope_theta = 10000.0\n  \
         max_output_tokens = 16\n  dropout = 0.0\n  attention gqa { heads = 2, kv_heads = 1 }\n  \
         ffn dense { hidden = 32 }\n  prelude 1 x block(attention, dense)\n  loop max 2 {\n    \
         block(attention, dense)\n    inject lti\n  }\n  coda 1 x block(attention, dense)\n}\n",
    )
    .unwrap();
    let body = "base = \"tiny.mythos\"\nobjectives = [{ minimize = \"eval.loss\" }]\n\n[axes]\n\
                \"train.lr\" = [1e-4, 3e-3]\n\n[options]\nmeasure = [\"train\"]\n\n[eval]\n\
                data = \"task:add,terms=2,digits=2,rows=32,seed=9\"\nloops = [1, 2]\n\n[train]\n\
                data = \"task:add,terms=2,digits=2,rows=256\"\nsteps = 20\nbatch = 8\n";
    std::fs::write(dir.join("train.toml"), body).unwrap();
    let run = |extra: &[&str]| {
        let out = c
            .mythos()
            .current_dir(&dir)
            .arg("sweep")
            .arg("train.toml")
            .args(extra)
            .output()
            .unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        out
    };
    let local = run(&["--out", "local.out"]);
    let slurm = run(&["--backend", "slurm", "--out", "slurm.out"]);
    assert_eq!(
        text(&local.stdout),
        text(&slurm.stdout),
        "the tables differ"
    );
    // The same metrics, times aside; each task trained in the shared folder.
    let metrics = |out: &str| -> Vec<(String, Vec<(String, f64)>)> {
        let r = results(&dir.join(out));
        let mut v: Vec<_> = r["trials"]
            .as_array()
            .unwrap()
            .iter()
            .map(|t| {
                let m = t["metrics"]
                    .as_object()
                    .unwrap()
                    .iter()
                    .filter(|(k, _)| !k.ends_with("seconds") && !k.ends_with("tokens_per_s"))
                    .map(|(k, x)| (k.clone(), x.as_f64().unwrap()))
                    .collect();
                (t["hash"].as_str().unwrap().to_string(), m)
            })
            .collect();
        v.sort_by(|a, b| a.0.cmp(&b.0));
        v
    };
    let (l, s) = (metrics("local.out"), metrics("slurm.out"));
    assert_eq!(l, s);
    assert_eq!(l.len(), 2);
    assert!(l
        .iter()
        .all(|(_, m)| m.iter().any(|(k, _)| k == "eval.acc@loops=2")));
    for (hash, _) in &s {
        let seed0 = dir.join("slurm.out/trials").join(hash).join("seed-0");
        assert!(seed0.join("weights.safetensors").is_file(), "{hash}");
    }
    // Successive halving decides between trainings in one process: refused on Slurm.
    std::fs::write(
        dir.join("halving.toml"),
        format!("{body}\n[early_stop]\nmin_steps = 5\n"),
    )
    .unwrap();
    let refused = c
        .mythos()
        .current_dir(&dir)
        .args(["sweep", "halving.toml", "--backend", "slurm"])
        .output()
        .unwrap();
    let stderr = text(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("[early_stop]"), "{stderr}");
}
