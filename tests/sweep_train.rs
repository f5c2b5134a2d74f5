//! `mythos sweep` with `measure = ["train"]`: every trial trained and
//! scored; seeds with mean and spread; successive halving that finds the
//! full grid's Pareto front with fewer training steps; a sweep killed with
//! SIGKILL mid-training that resumes to the same results; the new outputs;
//! sweep-file errors of the training tables.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn mythos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mythos"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A tiny looped model for 2-digit addition, fast enough for debug builds.
const MODEL: &str = "model tiny_add {
  vocab = 12
  dim = 16
  max_seq = 16
  rope_theta = 10000.0
  max_output_tokens = 16
  dropout = 0.0
  attention gqa { heads = 2, kv_heads = 1 }
  ffn dense { hidden = 32 }
  prelude 1 x block(attention, dense)
  loop max 2 {
    block(attention, dense)
    inject lti
    halt act { threshold = 0.99 }
  }
  coda 1 x block(attention, dense)
}
";

/// The `[options]`, `[eval]` and `[train]` tables every test here shares
/// (`[train]` last: a test adds its own keys to it).
const TRAINING: &str = "
[options]
measure = [\"train\"]

[eval]
data = \"task:add,terms=2,digits=2,rows=64,seed=9\"
loops = [1, 2, 4]

[train]
data = \"task:add,terms=2,digits=2,rows=512\"
batch = 8
warmup = 2
save_every = 5
";

/// A fresh folder holding the tiny model.
fn scratch(name: &str) -> PathBuf {
    let dir =
        std::env::temp_dir().join(format!("mythos-sweep-train-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("tiny.mythos"), MODEL).unwrap();
    dir
}

fn write(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn sweep(file: &Path, out: &Path) -> Output {
    mythos()
        .arg("sweep")
        .arg(file)
        .arg("--out")
        .arg(out)
        .output()
        .unwrap()
}

fn ok(o: &Output) -> String {
    assert!(
        o.status.success(),
        "stdout:\n{}\nstderr:\n{}",
        text(&o.stdout),
        text(&o.stderr)
    );
    text(&o.stdout)
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

/// The hashes of the trials on the Pareto front.
fn front(r: &serde_json::Value) -> BTreeSet<String> {
    r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["pareto"] == true)
        .map(|t| t["hash"].as_str().unwrap().to_string())
        .collect()
}

/// A trial's hash, status and metrics.
type Outcome = (String, String, Vec<(String, f64)>);

/// Each trial's status and metrics, without the ones that measure time.
fn outcome(r: &serde_json::Value) -> Vec<Outcome> {
    let mut v: Vec<_> = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            let metrics = t["metrics"]
                .as_object()
                .unwrap()
                .iter()
                .filter(|(k, _)| !k.ends_with("seconds") && !k.ends_with("tokens_per_s"))
                .map(|(k, x)| (k.clone(), x.as_f64().unwrap()))
                .collect();
            (
                t["hash"].as_str().unwrap().to_string(),
                t["status"].as_str().unwrap().to_string(),
                metrics,
            )
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    v
}

#[test]
fn trained_trials_report_quality_with_seeds_beside_cost() {
    let dir = scratch("quality");
    let body = format!(
        "base = \"tiny.mythos\"
objectives = [{{ minimize = \"eval.loss\" }}, {{ minimize = \"params.total\" }}]
[axes]
\"train.lr\" = [1e-5, 3e-3]
{TRAINING}steps = 30
seeds = 2
"
    );
    let file = write(&dir, "quality.toml", &body);
    let out = dir.join("quality.out");
    let stdout = ok(&sweep(&file, &out));
    let r = results(&out);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 2);
    let by_lr = |lr: f64| {
        trials
            .iter()
            .find(|t| t["axes"]["train.lr"].as_f64() == Some(lr))
            .unwrap()
    };
    let (slow, fast) = (by_lr(1e-5), by_lr(3e-3));
    for t in [slow, fast] {
        assert_eq!(t["status"], "ok");
        let m = &t["metrics"];
        assert_eq!(m["train.steps"], 30.0);
        for n in [1, 2, 4] {
            assert!(m[format!("eval.acc@loops={n}")].as_f64().is_some());
            assert!(m[format!("eval.loss@loops={n}")].as_f64().is_some());
        }
        // The trained depth is the loop's max (2): eval.loss is its loss.
        assert_eq!(m["eval.loss"], m["eval.loss@loops=2"]);
        let gain = m["eval.acc@loops=4"].as_f64().unwrap() - m["eval.acc"].as_f64().unwrap();
        assert!((m["eval.depth_gain"].as_f64().unwrap() - gain).abs() < 1e-12);
        // Two seeds: each seed's own metrics, their mean and their spread.
        let runs = t["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        let mean =
            (runs[0]["eval.loss"].as_f64().unwrap() + runs[1]["eval.loss"].as_f64().unwrap()) / 2.0;
        assert!((m["eval.loss"].as_f64().unwrap() - mean).abs() < 1e-12);
        assert!(runs[0]["eval.loss"] != runs[1]["eval.loss"], "seeds differ");
        assert!(t["spread"]["eval.loss"].as_f64().unwrap() > 0.0);
        assert!(
            m["params.total"].as_f64().unwrap() > 0.0,
            "cost beside quality"
        );
    }
    // A learning rate 300 times larger learns in 30 steps; the slow one barely moves.
    let loss = |t: &serde_json::Value| t["metrics"]["eval.loss"].as_f64().unwrap();
    assert!(
        loss(fast) < loss(slow) - 0.1,
        "{} vs {}",
        loss(fast),
        loss(slow)
    );
    assert_eq!(fast["pareto"], true);
    assert_eq!(slow["pareto"], false);
    assert_eq!(r["training_steps"]["run"], 120.0);
    assert!(stdout.contains(" ± "), "{stdout}");
    assert!(!stdout.contains("importance"), "not for one axis: {stdout}");
    for f in [
        "loss_curves.svg",
        "depth_accuracy.svg",
        "depth_loss.svg",
        "parallel.svg",
        "importance.csv",
    ] {
        assert!(out.join(f).is_file(), "{f}");
    }
    let curves = std::fs::read_to_string(out.join("loss_curves.svg")).unwrap();
    assert_eq!(curves.matches("<polyline").count(), 2, "one line per trial");
    let importance = std::fs::read_to_string(out.join("importance.csv")).unwrap();
    let lr_row = importance
        .lines()
        .find(|l| l.starts_with("train.lr,"))
        .unwrap();
    // Two trials, one axis: the axis explains all of the loss's variance.
    assert_eq!(lr_row, "train.lr,1,0");
    // Finished trials keep weights and metrics, not checkpoints.
    let seed0 = out
        .join("trials")
        .join(fast["hash"].as_str().unwrap())
        .join("seed-0");
    assert!(seed0.join("weights.safetensors").is_file());
    assert!(seed0.join("metrics.jsonl").is_file());
    assert!(!seed0.join("checkpoint").exists());
}

#[test]
fn early_stopping_finds_the_full_grids_front_with_fewer_steps() {
    let dir = scratch("halving");
    // Known answer: the two tiny learning rates cannot compete in loss, so
    // the front holds the good one at each width (and only those).
    let grid = format!(
        "base = \"tiny.mythos\"
objectives = [{{ minimize = \"eval.loss\" }}, {{ minimize = \"params.total\" }}]
[axes]
\"dim\" = [16, 24]
\"train.lr\" = [1e-6, 1e-5, 3e-3]
{TRAINING}steps = 40
"
    );
    let full_file = write(&dir, "full.toml", &grid);
    let halving_file = write(
        &dir,
        "halving.toml",
        &format!("{grid}\n[early_stop]\nmin_steps = 10\neta = 2\n"),
    );
    ok(&sweep(&full_file, &dir.join("full.out")));
    let stdout = ok(&sweep(&halving_file, &dir.join("halving.out")));
    let (full, halving) = (
        results(&dir.join("full.out")),
        results(&dir.join("halving.out")),
    );
    assert_eq!(full["training_steps"]["run"], 240.0);
    // 6 trials to 10 steps, 3 on to 20, 2 on to 40.
    assert_eq!(halving["training_steps"]["run"], 60.0 + 30.0 + 40.0);
    assert_eq!(front(&full), front(&halving));
    let trials = halving["trials"].as_array().unwrap();
    for t in trials {
        let good = t["axes"]["train.lr"].as_f64() == Some(3e-3);
        if t["pareto"] == true {
            assert!(good, "{t}");
        }
        let status = t["status"].as_str().unwrap();
        assert_eq!(status == "ok", good, "{t}");
        if status == "pruned" {
            let steps = t["metrics"]["train.steps"].as_f64().unwrap();
            assert!(steps == 10.0 || steps == 20.0, "{steps}");
        }
    }
    assert!(stdout.contains("pruned at 10 steps"), "{stdout}");
    assert!(stdout.contains("\nimportance: "), "{stdout}");
    // The same folder without [early_stop]: the pruned trials train to the
    // end and the results become the full grid's.
    ok(&sweep(&full_file, &dir.join("halving.out")));
    assert_eq!(outcome(&results(&dir.join("halving.out"))), outcome(&full));
}

#[test]
fn a_sweep_killed_mid_training_resumes_to_the_same_results() {
    let dir = scratch("kill");
    let body = format!(
        "base = \"tiny.mythos\"
objectives = [{{ minimize = \"eval.loss\" }}]
[axes]
\"train.loops\" = [\"2\", \"1..3\"]
{TRAINING}steps = 60
"
    );
    let file = write(&dir, "kill.toml", &body);
    let (killed, whole) = (dir.join("killed.out"), dir.join("whole.out"));
    let mut child = mythos()
        .arg("sweep")
        .arg(&file)
        .arg("--out")
        .arg(&killed)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Kill it once the first trial has a checkpoint and before it finishes.
    let start = Instant::now();
    let checkpointed = || {
        std::fs::read_dir(killed.join("trials"))
            .into_iter()
            .flatten()
            .flatten()
            .any(|t| t.path().join("seed-0/checkpoint/state.json").is_file())
    };
    while !checkpointed() {
        assert!(start.elapsed() < Duration::from_secs(300), "no checkpoint");
        assert!(
            child.try_wait().unwrap().is_none(),
            "finished before the kill"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    assert!(
        !killed.join("results.json").exists(),
        "killed before the end"
    );
    ok(&sweep(&file, &killed));
    ok(&sweep(&file, &whole));
    let (a, b) = (results(&killed), results(&whole));
    assert_eq!(outcome(&a), outcome(&b));
    assert_eq!(a["trials"].as_array().unwrap().len(), 2);
}

#[test]
fn training_tables_errors_have_codes_and_positions() {
    let dir = scratch("errors");
    let base = "base = \"tiny.mythos\"\n";
    let cases = [
        (
            "unused.toml",
            format!("{base}[axes]\n\"dim\" = [16]\n[train]\ndata = \"task:add\"\n"),
            "E0501",
            "unused.toml:4:1",
        ),
        (
            "axis.toml",
            format!("{base}[axes]\n\"train.lrr\" = [1e-3]\n{TRAINING}"),
            "E0502",
            "axis.toml:3:1",
        ),
        (
            "policy.toml",
            format!("{base}[axes]\n\"train.loops\" = [\"4\", \"8..2\"]\n{TRAINING}"),
            "E0503",
            "policy.toml:3:23",
        ),
        (
            "lr.toml",
            format!("{base}[axes]\n\"train.lr\" = [0.0]\n{TRAINING}"),
            "E0503",
            "lr.toml:3:15",
        ),
        (
            "key.toml",
            format!("{base}[axes]\n\"dim\" = [16]\n{TRAINING}stepz = 4\n"),
            "E0501",
            "key.toml:17:1",
        ),
        (
            "budget2.toml",
            format!("{base}[axes]\n\"dim\" = [16]\n{TRAINING}steps = 4\ntokens = 400\n"),
            "E0501",
            "budget2.toml:18:10",
        ),
        (
            "data.toml",
            format!("{base}[axes]\n\"dim\" = [16]\n{TRAINING}").replace("task:add,terms=2,digits=2,rows=512", "missing.bin"),
            "E0501",
            "data.toml:13:8",
        ),
        (
            "metric.toml",
            format!("{base}objectives = [{{ maximize = \"eval.acc@loops=3\" }}]\n[axes]\n\"dim\" = [16]\n{TRAINING}"),
            "E0504",
            "metric.toml:2:29",
        ),
        (
            "budget.toml",
            format!("{base}objectives = [{{ minimize = \"eval.loss\" }}]\n[axes]\n\"train.steps\" = [10, 20]\n{TRAINING}[early_stop]\nmin_steps = 5\n"),
            "E0502",
            "budget.toml:4:1",
        ),
    ];
    for (name, body, code, at) in cases {
        write(&dir, name, &body);
        let out = mythos()
            .current_dir(&dir)
            .args(["sweep", name])
            .output()
            .unwrap();
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {stderr}");
        assert!(
            stderr.contains(&format!("error[{code}]")),
            "{name}: {stderr}"
        );
        assert!(stderr.contains(&format!("--> {at}")), "{name}: {stderr}");
        assert!(stderr.contains("= help:"), "{name}: {stderr}");
    }
}

#[test]
fn a_token_budget_sets_the_steps_from_the_batch() {
    let dir = scratch("tokens");
    let body = format!(
        "base = \"tiny.mythos\"
[axes]
\"train.batch\" = [4, 8]
{TRAINING}tokens = 400
"
    )
    .replace("batch = 8\n", "");
    let file = write(&dir, "tokens.toml", &body);
    let out = dir.join("tokens.out");
    ok(&sweep(&file, &out));
    let r = results(&out);
    // A 2-digit addition is 9 tokens (`ab+cd=` and 3 sum digits): rows of 8
    // positions, so 400 tokens are 13 steps of 4 rows and 7 of 8.
    const ROW: f64 = 8.0;
    let steps: Vec<(i64, f64)> = r["trials"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["axes"]["train.batch"].as_i64().unwrap(),
                t["metrics"]["train.steps"].as_f64().unwrap(),
            )
        })
        .collect();
    let of = |b: i64| steps.iter().find(|s| s.0 == b).unwrap().1;
    assert_eq!(of(4), (400f64 / (4.0 * ROW)).ceil());
    assert_eq!(of(8), (400f64 / (8.0 * ROW)).ceil());
    assert_eq!((of(4), of(8)), (13.0, 7.0));
}
