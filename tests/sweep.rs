//! `mythos sweep` end to end: a 1,000-trial grid, kill and resume without a
//! lost or repeated trial, constraints, sweep-file errors with file:line:col,
//! and the Pareto front on a hand-made set.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

#[allow(dead_code)]
#[path = "../src/sweep/pareto.rs"]
mod pareto;

fn mythos() -> Command {
    Command::new(env!("CARGO_BIN_EXE_mythos"))
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// A fresh folder for one test.
fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mythos-sweep-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

fn write_sweep(dir: &Path, name: &str, body: &str) -> PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, body).unwrap();
    path
}

fn sweep(file: &Path, extra: &[&str]) -> Output {
    mythos()
        .arg("sweep")
        .arg(file)
        .args(extra)
        .output()
        .unwrap()
}

/// Hashes of the journal's complete lines, every line (duplicates kept).
/// Writes the sweep file `name` into `dir`, runs it there and checks that it
/// fails with `error[code]` at `at` (`file:line:col`) and a help line.
fn assert_sweep_error(dir: &Path, name: &str, body: &str, code: &str, at: &str) -> PathBuf {
    let file = write_sweep(dir, name, body);
    let out = mythos()
        .current_dir(dir)
        .args(["sweep", name])
        .output()
        .unwrap();
    let stderr = text(&out.stderr);
    assert!(!out.status.success(), "{name} succeeded");
    assert!(
        stderr.contains(&format!("error[{code}]")),
        "{name}: {stderr}"
    );
    assert!(stderr.contains(&format!("--> {at}")), "{name}: {stderr}");
    assert!(stderr.contains("= help:"), "{name}: {stderr}");
    file
}

fn journal_hashes(out: &Path) -> Vec<String> {
    let text = std::fs::read_to_string(out.join("journal.jsonl")).unwrap_or_default();
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| v["hash"].as_str().unwrap().to_string())
        .collect()
}

fn results(out: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(out.join("results.json")).unwrap()).unwrap()
}

#[test]
fn grid_of_1000_trials() {
    let dir = scratch("grid");
    let file = write_sweep(
        &dir,
        "grid.toml",
        r#"
base = "@tiny-gqa"
objectives = [{ minimize = "params.active_per_token" }, { minimize = "flops.decode_per_token" }]

[axes]
"loop.max" = { range = [1, 10], step = 1 }
"ffn.moe.experts" = { range = [2, 20], step = 2 }
"loop.lora.rank" = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9]
"#,
    );
    let start = Instant::now();
    let out = sweep(&file, &["--jobs", "2"]);
    let wall = start.elapsed();
    assert!(out.status.success(), "{}", text(&out.stderr));
    println!(
        "1,000-trial grid (tiny-gqa, --jobs 2, debug build): {:.2} s wall",
        wall.as_secs_f64()
    );
    let out_dir = dir.join("grid.out");
    let hashes = journal_hashes(&out_dir);
    assert_eq!(hashes.len(), 1000);
    assert_eq!(hashes.iter().collect::<HashSet<_>>().len(), 1000);
    let r = results(&out_dir);
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 1000);
    assert!(trials.iter().all(|t| t["status"] == "ok"));
    assert!(trials.iter().any(|t| t["pareto"] == true));
    for f in [
        "results.csv",
        "pareto.svg",
        "effect-loop.max.svg",
        "effect-ffn.moe.experts.svg",
        "effect-loop.lora.rank.svg",
    ] {
        assert!(out_dir.join(f).exists(), "{f} missing");
    }
    let csv = std::fs::read_to_string(out_dir.join("results.csv")).unwrap();
    assert_eq!(csv.lines().count(), 1001);
    // A second run finds everything in the journal.
    let again = sweep(&file, &["--jobs", "2"]);
    assert!(again.status.success());
    assert!(
        text(&again.stderr).contains("(0 run now, 1000 from the journal)"),
        "{}",
        text(&again.stderr)
    );
    assert_eq!(journal_hashes(&out_dir).len(), 1000);
}

#[test]
fn killed_sweep_resumes_without_losing_or_repeating_a_trial() {
    let dir = scratch("resume");
    // 16 x 20 = 320 trials, 5 ms each: about 2 s with --jobs 1.
    let file = write_sweep(
        &dir,
        "resume.toml",
        r#"
base = "@tiny-gqa"

[axes]
"loop.max" = { range = [1, 16], step = 1 }
"loop.lora.rank" = { range = [0, 19], step = 1 }
"#,
    );
    let out_dir = dir.join("resume.out");
    let mut child = mythos()
        .arg("sweep")
        .arg(&file)
        .args(["--jobs", "1"])
        .env("MYTHOS_SWEEP_TRIAL_DELAY_MS", "5")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let before = journal_hashes(&out_dir);
    println!("killed after {} of 320 trials", before.len());
    assert!(
        before.len() < 320,
        "the sweep finished before it was killed"
    );
    // A torn last line, as a kill in the middle of a write leaves it.
    let journal = out_dir.join("journal.jsonl");
    let mut bytes = std::fs::read(&journal).unwrap();
    bytes.extend_from_slice(br#"{"hash":"0123","index":5,"axes":{"#);
    std::fs::write(&journal, bytes).unwrap();

    let out = sweep(&file, &["--jobs", "1"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let after = journal_hashes(&out_dir);
    let distinct: HashSet<&String> = after.iter().collect();
    assert_eq!(after.len(), 320, "every trial once");
    assert_eq!(distinct.len(), 320, "no duplicates");
    assert!(before.iter().all(|h| distinct.contains(h)));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains(&format!(
            "({} run now, {} from the journal)",
            320 - before.len(),
            before.len()
        )),
        "{stderr}"
    );
    // Every line of the journal parses again (the torn line was cut).
    let text = std::fs::read_to_string(&journal).unwrap();
    assert!(text
        .lines()
        .all(|l| serde_json::from_str::<serde_json::Value>(l).is_ok()));
}

#[test]
fn constraints_reject_and_failed_specs_are_recorded() {
    let dir = scratch("constraints");
    let file = write_sweep(
        &dir,
        "c.toml",
        r#"
base = "@tiny-gqa"
constraints = ["params.total <= 150000"]
objectives = [{ minimize = "params.total" }, { maximize = "decode.tokens_per_s_ceiling" }]

[axes]
"ffn.moe.experts" = [2, 4, 8, 16]
"attention.heads" = [3, 4]
"#,
    );
    let out = sweep(&file, &["--jobs", "2"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = results(&dir.join("c.out"));
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 8);
    for t in trials {
        let experts = t["axes"]["ffn.moe.experts"].as_i64().unwrap();
        let heads = t["axes"]["attention.heads"].as_i64().unwrap();
        let status = t["status"].as_str().unwrap();
        if heads == 3 {
            assert_eq!(status, "failed");
            // head_dim 64 // 3 = 21 is odd: RoPE cannot pair it (OpenMythos fails too).
            assert!(t["error"].as_str().unwrap().contains("E0303"));
            continue;
        }
        let total = t["metrics"]["params.total"].as_f64().unwrap();
        if total <= 150000.0 {
            assert_eq!(status, "ok", "{t}");
        } else {
            assert_eq!(status, "rejected", "{t}");
            assert!(t["violated"]
                .as_str()
                .unwrap()
                .contains("params.total <= 150000"));
            assert!(experts >= 8);
        }
        if status != "ok" {
            assert_eq!(t["pareto"], false);
        }
    }
    assert!(trials.iter().any(|t| t["status"] == "rejected"));
    assert!(trials.iter().any(|t| t["status"] == "ok"));
    // --fail-fast stops at the failed spec with its diagnostic.
    let dir2 = scratch("failfast");
    let file2 = write_sweep(
        &dir2,
        "f.toml",
        "base = \"@tiny-gqa\"\n[axes]\n\"attention.heads\" = [3, 4]\n",
    );
    let out = sweep(&file2, &["--jobs", "1", "--fail-fast"]);
    assert!(!out.status.success());
    assert!(text(&out.stderr).contains("error[E0303]"));
}

#[test]
fn base_file_relative_to_the_sweep_file() {
    let dir = scratch("file-base");
    std::fs::create_dir_all(dir.join("specs")).unwrap();
    std::fs::write(
        dir.join("specs/base.mythos"),
        "model base {\n  vocab = 256\n  dim = 64\n  max_seq = 128\n  attention gqa { heads = 4, kv_heads = 2 }\n  ffn dense\n  loop max 4 {\n    block(attention, dense)\n  }\n}\n",
    )
    .unwrap();
    let file = write_sweep(
        &dir,
        "s.toml",
        "base = \"specs/base.mythos\"\nobjectives = [{ minimize = \"params.total\" }]\n[axes]\n\"loop.inject\" = [\"lti\", \"add\", \"concat\"]\n\"dim\" = [64, 128]\n",
    );
    let out = sweep(&file, &["--out", dir.join("o").to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = results(&dir.join("o"));
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6);
    assert!(trials.iter().all(|t| t["status"] == "ok"), "{r}");
    // Changing the base file changes every trial's hash: nothing stale is reused.
    let old = journal_hashes(&dir.join("o"));
    let base = std::fs::read_to_string(dir.join("specs/base.mythos")).unwrap();
    std::fs::write(
        dir.join("specs/base.mythos"),
        base.replace("max 4", "max 6"),
    )
    .unwrap();
    let out = sweep(&file, &["--out", dir.join("o").to_str().unwrap()]);
    assert!(text(&out.stderr).contains("(6 run now, 0 from the journal)"));
    assert_eq!(journal_hashes(&dir.join("o")).len(), old.len() + 6);
}

#[test]
fn random_strategy_draws_a_budget_of_distinct_points() {
    let dir = scratch("random");
    let file = write_sweep(
        &dir,
        "r.toml",
        "base = \"@tiny-gqa\"\nstrategy = \"random\"\nseed = 7\nbudget = 25\n[axes]\n\"loop.max\" = { range = [1, 32], step = 1 }\n\"loop.lora.rank\" = { range = [1, 64], factor = 2 }\n",
    );
    let out = sweep(&file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = results(&dir.join("r.out"));
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 25);
    let points: HashSet<String> = trials.iter().map(|t| t["axes"].to_string()).collect();
    assert_eq!(points.len(), 25);
    // The same seed draws the same points: all 25 come from the journal.
    let out = sweep(&file, &[]);
    assert!(text(&out.stderr).contains("(0 run now, 25 from the journal)"));
}

/// Each case: the sweep file, the code, `file:line:col`.
#[test]
fn sweep_file_errors_have_codes_and_positions() {
    let dir = scratch("errors");
    let cases = [
        ("syntax.toml", "base = \"@tiny-gqa\"\n[axes\n\"loop.max\" = [4]\n", "E0501", "syntax.toml:2:6"),
        ("key.toml", "base = \"@tiny-gqa\"\nobjectivs = []\n[axes]\n\"loop.max\" = [4]\n", "E0501", "key.toml:2:1"),
        ("axis.toml", "base = \"@tiny-gqa\"\n[axes]\n\"loop.maxx\" = [4]\n", "E0502", "axis.toml:3:1"),
        ("def.toml", "base = \"@tiny-gqa\"\n[axes]\n\"attention.q_rank\" = [4]\n", "E0502", "def.toml:3:1"),
        ("value.toml", "base = \"@tiny-gqa\"\n[axes]\n\"loop.max\" = [4, \"8\"]\n", "E0503", "value.toml:3:18"),
        ("kind.toml", "base = \"@tiny-gqa\"\n[axes]\n\"loop.inject\" = [\"lti\", \"ad\"]\n", "E0503", "kind.toml:3:25"),
        ("range.toml", "base = \"@tiny-gqa\"\n[axes]\n\"dim\" = { range = [64, 8], step = 8 }\n", "E0503", "range.toml:3:19"),
        ("constraint.toml", "base = \"@tiny-gqa\"\nconstraints = [\"params.totl <= 2e9\"]\n[axes]\n\"loop.max\" = [4]\n", "E0504", "constraint.toml:2:17"),
        ("garbled.toml", "base = \"@tiny-gqa\"\nconstraints = [\"banana\"]\n[axes]\n\"loop.max\" = [4]\n", "E0504", "garbled.toml:2:16"),
    ];
    for (name, body, code, at) in cases {
        let file = assert_sweep_error(&dir, name, body, code, at);
        assert!(!dir.join(file.with_extension("out")).exists());
    }
}

#[test]
fn pareto_front_of_a_hand_made_set() {
    // Minimize both: (1,5) (2,3) (3,4) (4,1) (2,3) (5,5) (nan,0).
    let pts = vec![
        vec![1.0, 5.0],
        vec![2.0, 3.0],
        vec![3.0, 4.0], // dominated by (2,3)
        vec![4.0, 1.0],
        vec![2.0, 3.0], // equal to a front point: also on it
        vec![5.0, 5.0], // dominated by everything
        vec![f64::NAN, 0.0],
    ];
    assert_eq!(
        pareto::front(&pts, &[false, false]),
        vec![true, true, false, true, true, false, false]
    );
    // Maximize the second: (1,5) and (5,5) tie on it; (1,5) dominates (5,5) on the first.
    assert_eq!(
        pareto::front(&pts, &[false, true]),
        vec![true, false, false, false, false, false, false]
    );
    // Maximize both: (5,5) dominates everything.
    assert_eq!(
        pareto::front(&pts, &[true, true]),
        vec![false, false, false, false, false, true, false]
    );
    // One objective: the minima.
    let one = vec![vec![3.0], vec![1.0], vec![1.0], vec![2.0]];
    assert_eq!(
        pareto::front(&one, &[false]),
        vec![false, true, true, false]
    );
    // Brute force agrees on a pseudo-random set.
    let mut x: u64 = 42;
    let mut next = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (x >> 40) as f64 % 50.0
    };
    let pts: Vec<Vec<f64>> = (0..300).map(|_| vec![next(), next(), next()]).collect();
    let dirs = [false, true, false];
    let brute: Vec<bool> = pts
        .iter()
        .map(|p| !pts.iter().any(|q| pareto::dominates(q, p, &dirs)))
        .collect();
    assert_eq!(pareto::front(&pts, &dirs), brute);
}

/// `measure = ["cpu"]` adds measured speed to the trials that pass the static
/// constraints, and constraints on measured metrics apply after measuring.
#[test]
fn measured_metrics_on_the_cpu() {
    let dir = std::env::temp_dir().join(format!("mythos-sweep-measure-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("m.toml");
    std::fs::write(
        &file,
        "base = \"@tiny-gqa\"\nconstraints = [\"params.total <= 125000\", \"cpu.decode_tokens_per_s > 0\"]\n\
         objectives = [{ maximize = \"cpu.decode_tokens_per_s\" }]\n[axes]\n\"loop.max\" = [2, 4]\n\
         \"loop.lora.rank\" = [0, 64]\n[options]\nmeasure = [\"cpu\"]\nmeasure_seq = 8\nmeasure_decode = 2\n",
    )
    .unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_mythos"))
        .arg("sweep")
        .arg(&file)
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("m.out/results.json")).unwrap())
            .unwrap();
    let trials = results["trials"]
        .as_array()
        .or_else(|| results.as_array())
        .expect("trials");
    let (mut measured, mut rejected) = (0, 0);
    for t in trials {
        match t["status"].as_str().unwrap() {
            "ok" => {
                assert!(
                    t["metrics"]["cpu.decode_tokens_per_s"].as_f64().unwrap() > 0.0,
                    "{t}"
                );
                measured += 1;
            }
            "rejected" => {
                // LoRA rank 64 adds 8,192 + 64 x 64 x loops parameters: over the limit, never measured.
                assert!(t["metrics"].get("cpu.decode_tokens_per_s").is_none(), "{t}");
                rejected += 1;
            }
            s => panic!("unexpected status {s}: {t}"),
        }
    }
    assert_eq!((measured, rejected), (2, 2));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn derived_values_are_evaluated_in_each_trial() {
    let dir = scratch("derived");
    let file = write_sweep(
        &dir,
        "d.toml",
        r#"
base = "@tiny-gqa"
[axes]
"dim" = [64, 128]
"ffn.dense.hidden" = ["dim * 2", "dim * 4"]
"ffn.moe.expert_dim" = "dim // 4"
"#,
    );
    let out = sweep(&file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = results(&dir.join("d.out"));
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 4);
    assert!(trials.iter().all(|t| t["status"] == "ok"), "{r}");
    let total = |dim: i64, hidden: &str| {
        trials
            .iter()
            .find(|t| t["axes"]["dim"] == dim && t["axes"]["ffn.dense.hidden"] == hidden)
            .unwrap()["metrics"]["params.total"]
            .as_f64()
            .unwrap()
    };
    // Two dense blocks (prelude and coda), each w1, w2, w3 of dim x hidden:
    // going from dim * 2 to dim * 4 adds 2 * 3 * dim * 2 * dim parameters.
    for dim in [64, 128] {
        let d = dim as f64;
        assert_eq!(total(dim, "dim * 4") - total(dim, "dim * 2"), 12.0 * d * d);
    }
    // The variant writes the expression verbatim, in parentheses.
    let journal = std::fs::read_to_string(dir.join("d.out/journal.jsonl")).unwrap();
    assert!(journal.contains("hidden = (dim * 2)"), "{journal}");
    assert!(journal.contains("expert_dim = (dim // 4)"), "{journal}");
    // An unknown name fails the trial with the rendered diagnostic.
    let bad = write_sweep(
        &dir,
        "u.toml",
        "base = \"@tiny-gqa\"\n[axes]\n\"ffn.dense.hidden\" = [\"dimm * 2\"]\n",
    );
    let out = sweep(&bad, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = results(&dir.join("u.out"));
    assert_eq!(r["trials"][0]["status"], "failed", "{r}");
}

#[test]
fn tied_axes_vary_together() {
    let dir = scratch("tied");
    let file = write_sweep(
        &dir,
        "t.toml",
        r#"
base = "@tiny-gqa"
objectives = [{ minimize = "params.total" }]
[axes]
"dim, attention.heads" = [[64, 4], [128, 8], [256, 16]]
"loop.max" = [2, 4]
"#,
    );
    let out = sweep(&file, &[]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let r = results(&dir.join("t.out"));
    let trials = r["trials"].as_array().unwrap();
    assert_eq!(trials.len(), 6);
    assert!(trials.iter().all(|t| t["status"] == "ok"), "{r}");
    let mut pairs = HashSet::new();
    for t in trials {
        let dim = t["axes"]["dim"].as_i64().unwrap();
        let heads = t["axes"]["attention.heads"].as_i64().unwrap();
        assert_eq!(dim, heads * 16, "{t}");
        pairs.insert((dim, t["axes"]["loop.max"].as_i64().unwrap()));
    }
    assert_eq!(pairs.len(), 6);
    // One CSV column per path; one effect plot for the tied axis.
    let csv = std::fs::read_to_string(dir.join("t.out/results.csv")).unwrap();
    let header = csv.lines().next().unwrap();
    assert!(header.contains("dim,attention.heads,loop.max"), "{header}");
    let plots: Vec<String> = std::fs::read_dir(dir.join("t.out"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with("effect-"))
        .collect();
    assert_eq!(plots.len(), 2, "{plots:?}");
}

#[test]
fn derived_and_tied_errors_have_codes_and_positions() {
    let dir = scratch("derived-errors");
    let cases = [
        (
            "expr.toml",
            "base = \"@tiny-gqa\"\n[axes]\n\"ffn.dense.hidden\" = [\"dim * \"]\n",
            "E0503",
            "expr.toml:3:23",
        ),
        (
            "tuple.toml",
            "base = \"@tiny-gqa\"\n[axes]\n\"dim, attention.heads\" = [[64, 4], [128]]\n",
            "E0503",
            "tuple.toml:3:36",
        ),
        (
            "tiedpath.toml",
            "base = \"@tiny-gqa\"\n[axes]\n\"dim, loop.maxx\" = [[64, 4]]\n",
            "E0502",
            "tiedpath.toml:3:1",
        ),
    ];
    for (name, body, code, at) in cases {
        assert_sweep_error(&dir, name, body, code, at);
    }
}

#[test]
fn slurm_table_errors_have_codes_and_positions() {
    let dir = scratch("slurm-errors");
    let head = "base = \"@tiny-gqa\"\n[axes]\n\"loop.max\" = [2]\n[slurm]\n";
    let cases = [
        ("key.toml", "partiton = \"gpu\"\n", "E0501", "key.toml:5:1"),
        (
            "opt.toml",
            "sbatch = [\"mem=4G\"]\n",
            "E0501",
            "opt.toml:5:11",
        ),
        ("par.toml", "max_parallel = 0\n", "E0501", "par.toml:5:16"),
        ("time.toml", "time = \"\"\n", "E0501", "time.toml:5:8"),
    ];
    for (name, body, code, at) in cases {
        assert_sweep_error(&dir, name, &format!("{head}{body}"), code, at);
    }
    // The unknown key gets a suggestion.
    let out = mythos()
        .current_dir(&dir)
        .args(["sweep", "key.toml"])
        .output()
        .unwrap();
    assert!(
        text(&out.stderr).contains("`partition`"),
        "{}",
        text(&out.stderr)
    );
    // Slurm flags without the Slurm backend.
    let out = mythos()
        .current_dir(&dir)
        .args(["sweep", "key.toml", "--max-parallel", "2"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("are for --backend slurm"));
    // status of a folder that holds no Slurm sweep.
    let out = mythos()
        .args(["sweep", "status"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("holds no Slurm sweep"),
        "{}",
        text(&out.stderr)
    );
}
