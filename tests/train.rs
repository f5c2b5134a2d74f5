//! `mythos train` end to end: what it writes, an exact resume after
//! `kill -9`, and its errors (a checkpoint of another model, a damaged
//! checkpoint, other flags on the same directory, a diverged loss).

use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

const DATA: &str = "task:phop,len=16,hops=1,rows=64";

fn mythos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mythos"))
        .args(args)
        .output()
        .expect("run mythos")
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// Runs `mythos args`, which must succeed, and parses what it prints (`--json`).
fn json_of(args: &[&str]) -> serde_json::Value {
    let o = mythos(args);
    assert!(o.status.success(), "{args:?}: {}", text(&o.stderr));
    serde_json::from_slice(&o.stdout).expect("a JSON document on stdout")
}

/// Runs `mythos args`, which must fail with exit code 1 saying `says`.
fn refused(args: &[&str], says: &str) {
    let o = mythos(args);
    assert_eq!(o.status.code(), Some(1), "{args:?}: {}", text(&o.stderr));
    assert!(
        text(&o.stderr).contains(says),
        "{args:?}: {}",
        text(&o.stderr)
    );
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("mythos-train-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// `mythos train SPEC --seed 0 --data DATA --out OUT --batch 4` and `extra`,
/// with `--lr 3e-3 --warmup 2` unless `extra` sets them.
fn train_args<'a>(spec: &'a str, out: &'a str, extra: &[&'a str]) -> Vec<&'a str> {
    let mut all = vec![
        "train", spec, "--seed", "0", "--data", DATA, "--out", out, "--batch", "4",
    ];
    for (flag, value) in [("--lr", "3e-3"), ("--warmup", "2")] {
        if !extra.contains(&flag) {
            all.extend([flag, value]);
        }
    }
    all.extend_from_slice(extra);
    all
}

/// The `step`s and `loss`es of `DIR/metrics.jsonl`.
fn metrics(dir: &Path) -> Vec<(u64, f64)> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .expect("metrics.jsonl")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("a JSON line");
            for key in ["lr", "grad_norm", "tokens_per_s", "iterations"] {
                assert!(v[key].is_number(), "`{key}` in {l}");
            }
            (v["step"].as_u64().unwrap(), v["loss"].as_f64().unwrap())
        })
        .collect()
}

#[test]
fn a_run_killed_with_sigkill_resumes_to_bit_identical_weights() {
    let (a, b) = (scratch("whole"), scratch("killed"));
    let (a_s, b_s) = (a.to_str().unwrap(), b.to_str().unwrap());
    let steps = ["--steps", "16", "--save-every", "2"];
    let whole = mythos(&train_args("@tiny-gqa", a_s, &steps));
    assert!(whole.status.success(), "{}", text(&whole.stderr));
    assert!(
        text(&whole.stdout).contains("step 16 loss"),
        "{}",
        text(&whole.stdout)
    );
    let m = metrics(&a);
    assert_eq!(
        m.iter().map(|s| s.0).collect::<Vec<_>>(),
        (0..16).collect::<Vec<_>>()
    );
    assert!(
        m[15].1 < m[0].1 - 0.5,
        "16 steps at lr 3e-3 lower the loss: {:?}",
        m
    );
    for f in ["weights.safetensors", "loss.svg", "checkpoint/state.json"] {
        assert!(a.join(f).is_file(), "{f} is written");
    }

    // The same run, killed once it has checkpointed a few steps, then run again.
    let mut child = Command::new(env!("CARGO_BIN_EXE_mythos"))
        .args(train_args("@tiny-gqa", b_s, &steps))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start mythos train");
    let start = Instant::now();
    while std::fs::read_to_string(b.join("metrics.jsonl")).map_or(0, |t| t.lines().count()) < 7 {
        assert!(
            start.elapsed() < Duration::from_secs(120),
            "the run makes progress"
        );
        assert!(child.try_wait().unwrap().is_none(), "killed before the end");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().expect("SIGKILL");
    child.wait().unwrap();
    let resumed = mythos(&train_args("@tiny-gqa", b_s, &steps));
    assert!(resumed.status.success(), "{}", text(&resumed.stderr));
    assert!(
        text(&resumed.stderr).contains("resuming"),
        "{}",
        text(&resumed.stderr)
    );
    assert_eq!(
        metrics(&b),
        m,
        "the resumed run's metrics are the whole run's"
    );
    assert!(
        std::fs::read(a.join("weights.safetensors")).unwrap()
            == std::fs::read(b.join("weights.safetensors")).unwrap(),
        "bit-identical final weights"
    );

    // Done: a third run trains nothing; its weights score as trained.
    let again = mythos(&train_args("@tiny-gqa", b_s, &steps));
    assert!(text(&again.stdout).contains("already trained for 16 steps"));
    let weights = a.join("weights.safetensors");
    let v = json_of(&[
        "eval",
        "@tiny-gqa",
        "--weights",
        weights.to_str().unwrap(),
        "--data",
        DATA,
        "--loops",
        "4",
        "--json",
    ]);
    let loss = v["results"][0]["loss"].as_f64().unwrap();
    assert!(loss < m[0].1 - 0.5, "trained weights score {loss}");
    for d in [a, b] {
        std::fs::remove_dir_all(d).unwrap();
    }
}

#[test]
fn a_directory_of_another_model_or_other_flags_or_a_damaged_checkpoint_is_refused() {
    let dir = scratch("refused");
    let d = dir.to_str().unwrap();
    let ok = mythos(&train_args("@tiny-gqa", d, &["--steps", "2"]));
    assert!(ok.status.success(), "{}", text(&ok.stderr));

    let other_model = mythos(&train_args("@tiny-mla", d, &["--steps", "2"]));
    assert_eq!(other_model.status.code(), Some(1));
    let e = text(&other_model.stderr);
    assert!(
        e.contains("checkpoint of model `tiny_gqa`, not `tiny_mla`") && e.contains("--out"),
        "{e}"
    );

    let other_flags = mythos(&train_args(
        "@tiny-gqa",
        d,
        &["--steps", "2", "--lr", "1e-2"],
    ));
    assert_eq!(other_flags.status.code(), Some(1));
    let e = text(&other_flags.stderr);
    assert!(
        e.contains("other settings") && e.contains("same flags"),
        "{e}"
    );

    let state = dir.join("checkpoint/state.json");
    std::fs::write(&state, "{\"schema\": ").unwrap();
    let damaged = mythos(&train_args("@tiny-gqa", d, &["--steps", "2"]));
    assert_eq!(damaged.status.code(), Some(1));
    let e = text(&damaged.stderr);
    assert!(
        e.contains("state.json") && e.contains("damaged") && !e.contains("panicked"),
        "{e}"
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn a_diverged_loss_stops_with_the_step_and_keeps_the_last_checkpoint() {
    let dir = scratch("nan");
    let d = dir.to_str().unwrap();
    let out = mythos(&train_args(
        "@tiny-gqa",
        d,
        &[
            "--steps",
            "8",
            "--lr",
            "1e30",
            "--warmup",
            "4",
            "--clip",
            "0",
            "--save-every",
            "1",
        ],
    ));
    assert_eq!(out.status.code(), Some(1));
    let e = text(&out.stderr);
    assert!(e.contains("training diverged at step 1"), "{e}");
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("checkpoint/state.json")).unwrap())
            .unwrap();
    // Step 0 has lr 0 (the warmup starts there); step 1's update overflows.
    assert_eq!(state["step"], 1, "the checkpoint after step 0 is kept");
    assert_eq!(metrics(&dir).len(), 1);
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn loop_policies_truncated_depth_and_validation_reach_the_metrics() {
    let dir = scratch("policies");
    let d = dir.to_str().unwrap();
    let extra = [
        "--steps",
        "6",
        "--loops",
        "1..3",
        "--backprop",
        "1",
        "--val-rows",
        "8",
        "--val-every",
        "2",
    ];
    let out = mythos(&train_args("@tiny-gqa", d, &extra));
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(
        text(&out.stdout).contains("validation loss"),
        "{}",
        text(&out.stdout)
    );
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let iterations: Vec<u64> = lines
        .iter()
        .map(|v| v["iterations"].as_u64().unwrap())
        .collect();
    assert!(
        iterations.iter().all(|n| (1..=3).contains(n)),
        "{iterations:?}"
    );
    assert!(
        iterations.iter().any(|&n| n != iterations[0]),
        "drawn per step: {iterations:?}"
    );
    let validated: Vec<u64> = lines
        .iter()
        .filter(|v| v["val_loss"].is_number() && v["val_accuracy"].is_number())
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(validated, [1, 3, 5], "after every second step");

    let too_many = mythos(&train_args("@tiny-gqa", d, &["--val-rows", "64"]));
    assert_eq!(too_many.status.code(), Some(1));
    assert!(
        text(&too_many.stderr).contains("too few"),
        "{}",
        text(&too_many.stderr)
    );
    std::fs::remove_dir_all(dir).unwrap();
}

#[test]
fn bad_flags_are_clear_errors() {
    let dir = scratch("flags");
    let d = dir.to_str().unwrap();
    refused(&train_args("@tiny-gqa", d, &["--steps", "0"]), "--steps");
    refused(
        &[
            "train",
            "@tiny-gqa",
            "--seed",
            "0",
            "--data",
            "task:nope",
            "--out",
            d,
        ],
        "task",
    );
}

#[test]
fn bench_train_reports_the_step_its_throughput_and_peak_memory() {
    let r = json_of(&[
        "bench",
        "@tiny-gqa",
        "--train",
        "--seed",
        "0",
        "--batch",
        "2",
        "--seq",
        "16",
        "--loops",
        "3",
        "--repeats",
        "2",
        "--json",
    ]);
    let ms = r["train_step_ms"].as_f64().unwrap();
    assert!(ms > 0.0 && r["mean_step_ms"].as_f64().unwrap() >= ms, "{r}");
    let tokens_per_s = r["tokens_per_s"].as_f64().unwrap();
    assert!(
        (tokens_per_s * ms / 1e3 - 32.0).abs() < 1e-6,
        "2 x 16 tokens per step: {r}"
    );
    assert!((1..=3).contains(&r["iterations"].as_u64().unwrap()), "{r}");
    assert!(r["gflops"].as_f64().unwrap() > 0.0, "{r}");
    assert!(r["peak_memory_mib"].as_f64().unwrap() > 1.0, "{r}");

    refused(
        &[
            "bench",
            "@tiny-gqa",
            "--train",
            "--seed",
            "0",
            "--backend",
            "mlir-cpu",
        ],
        "CPU reference runtime",
    );
}

/// The tensors of a safetensors file by name, as raw bytes.
fn tensors(path: &Path) -> std::collections::BTreeMap<String, Vec<u8>> {
    let bytes = std::fs::read(path).expect("a weights file");
    let file = safetensors::SafeTensors::deserialize(&bytes).expect("safetensors");
    file.iter()
        .map(|(name, view)| (name.to_string(), view.data().to_vec()))
        .collect()
}

#[test]
fn no_act_trains_the_loop_without_halting_and_keeps_the_halting_weights() {
    let dir = scratch("no-act");
    std::fs::create_dir_all(&dir).unwrap();
    let spec = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/tiny-gqa.mythos"
    ))
    .unwrap();
    assert!(spec.contains("halt act"), "tiny-gqa halts by ACT");
    // The same model written without ACT: the weights `--seed` draws for
    // it are the full model's minus the halting ones (one stream per name).
    let plain: String = spec
        .lines()
        .filter(|l| !l.trim_start().starts_with("halt act"))
        .map(|l| format!("{l}\n"))
        .collect();
    let (full_spec, plain_spec) = (dir.join("full.mythos"), dir.join("plain.mythos"));
    std::fs::write(&full_spec, &spec).unwrap();
    std::fs::write(&plain_spec, plain).unwrap();
    let (a, b) = (dir.join("a"), dir.join("b"));
    let steps = ["--steps", "3", "--loops", "3"];
    let mut args = train_args(full_spec.to_str().unwrap(), a.to_str().unwrap(), &steps);
    args.push("--no-act");
    let off = mythos(&args);
    assert!(off.status.success(), "{}", text(&off.stderr));
    let plain = mythos(&train_args(
        plain_spec.to_str().unwrap(),
        b.to_str().unwrap(),
        &steps,
    ));
    assert!(plain.status.success(), "{}", text(&plain.stderr));
    let iterations: Vec<u64> = std::fs::read_to_string(a.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["iterations"]
                .as_u64()
                .unwrap()
        })
        .collect();
    assert_eq!(iterations, [3, 3, 3], "no halting: every iteration runs");
    let (with_act, without) = (
        tensors(&a.join("weights.safetensors")),
        tensors(&b.join("weights.safetensors")),
    );
    let init = dir.join("init.safetensors");
    let made = mythos(&[
        "init",
        full_spec.to_str().unwrap(),
        "--seed",
        "0",
        "-o",
        init.to_str().unwrap(),
    ]);
    assert!(made.status.success(), "{}", text(&made.stderr));
    let init = tensors(&init);
    let halting: Vec<&String> = with_act
        .keys()
        .filter(|k| !without.contains_key(*k))
        .collect();
    assert_eq!(
        halting,
        ["recurrent.act.halt.bias", "recurrent.act.halt.weight"]
    );
    for name in halting {
        assert_eq!(
            with_act[name], init[name],
            "`{name}` is not trained under --no-act"
        );
    }
    for (name, bytes) in &without {
        assert_eq!(
            &with_act[name], bytes,
            "`{name}`: --no-act trains the model without ACT"
        );
    }
    assert_ne!(
        with_act["embed.weight"], init["embed.weight"],
        "training moved the weights"
    );
    // eval --no-act reads the full model's file and runs the loop without ACT.
    let report = json_of(&[
        "eval",
        full_spec.to_str().unwrap(),
        "--weights",
        a.join("weights.safetensors").to_str().unwrap(),
        "--data",
        DATA,
        "--loops",
        "2,6",
        "--no-act",
        "--json",
    ]);
    let mean: Vec<f64> = report["results"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["mean_iterations"].as_f64().unwrap())
        .collect();
    assert_eq!(mean, [2.0, 6.0]);
    refused(
        &[
            "eval",
            full_spec.to_str().unwrap(),
            "--seed",
            "0",
            "--data",
            DATA,
            "--no-act",
            "--backend",
            "mlir-cpu",
        ],
        "--no-act runs on the CPU reference runtime",
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_router_bias_update_moves_each_bias_by_the_rate_per_step() {
    let (a, b) = (scratch("bias-on"), scratch("bias-off"));
    let steps = ["--steps", "3", "--router-bias-rate", "0.125"];
    let on = mythos(&train_args("@tiny-gqa", a.to_str().unwrap(), &steps));
    assert!(on.status.success(), "{}", text(&on.stderr));
    let off = mythos(&train_args("@tiny-gqa", b.to_str().unwrap(), &steps[..2]));
    assert!(off.status.success(), "{}", text(&off.stderr));
    let bias = |dir: &Path| -> Vec<f32> {
        tensors(&dir.join("weights.safetensors"))
            .iter()
            .filter(|(name, _)| name.ends_with("router_bias"))
            .flat_map(|(_, bytes)| {
                bytes
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
                    .collect::<Vec<_>>()
            })
            .collect()
    };
    let (moved, kept) = (bias(&a), bias(&b));
    assert!(
        !kept.is_empty() && kept.iter().all(|&x| x == 0.0),
        "the reference never moves it: {kept:?}"
    );
    // Three steps of +-0.125 (or 0 at the mean load) from 0.
    for &x in &moved {
        assert!(x.abs() <= 0.375 && (x * 8.0).fract() == 0.0, "{moved:?}");
    }
    assert!(moved.iter().any(|&x| x != 0.0), "{moved:?}");
    let line = std::fs::read_to_string(a.join("metrics.jsonl")).unwrap();
    let first: serde_json::Value = serde_json::from_str(line.lines().next().unwrap()).unwrap();
    let imbalance = first["load_imbalance"].as_f64().unwrap();
    assert!((1.0..=4.0).contains(&imbalance), "{first}");
    refused(
        &train_args(
            "@tiny-gqa",
            a.to_str().unwrap(),
            &["--router-bias-rate", "0"],
        ),
        "the rate is a positive number",
    );
    refused(
        &train_args(
            "@tiny-huginn",
            a.to_str().unwrap(),
            &["--router-bias-rate", "0.001"],
        ),
        "has no MoE with a router_bias",
    );
    for d in [a, b] {
        let _ = std::fs::remove_dir_all(d);
    }
}

#[test]
fn text_trains_through_bytes_or_a_bpe_trained_on_it_which_eval_reuses() {
    let dir = scratch("text");
    let corpus = dir.join("corpus");
    std::fs::create_dir_all(&corpus).unwrap();
    let line = |i: usize| format!("The loop runs {i} times; the state stays bounded by A.\n");
    let corpus_text: String = (0..400).map(line).collect();
    std::fs::write(corpus.join("a.txt"), &corpus_text[..corpus_text.len() / 2]).unwrap();
    std::fs::write(corpus.join("b.txt"), &corpus_text[corpus_text.len() / 2..]).unwrap();
    let spec = dir.join("v512.mythos");
    let tiny = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/models/tiny-gqa.mythos"
    ))
    .unwrap();
    std::fs::write(&spec, tiny.replace("vocab = 256", "vocab = 300")).unwrap();
    let (spec, corpus_s) = (spec.to_str().unwrap(), corpus.to_str().unwrap());
    let out = dir.join("bpe");
    let run = |tokenizer: &str, out: &Path| {
        mythos(&[
            "train",
            spec,
            "--seed",
            "0",
            "--data",
            corpus_s,
            "--tokenizer",
            tokenizer,
            "--seq",
            "32",
            "--out",
            out.to_str().unwrap(),
            "--steps",
            "2",
            "--batch",
            "4",
        ])
    };
    let bpe = run("bpe:300", &out);
    assert!(bpe.status.success(), "{}", text(&bpe.stderr));
    let tokenizer = out.join("tokenizer.json");
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&tokenizer).unwrap()).unwrap();
    let vocab = json["model"]["vocab"].as_object().unwrap().len();
    assert!(
        (257..=300).contains(&vocab),
        "a BPE of at most 300 tokens: {vocab}"
    );
    // The same text in bytes is longer than in BPE tokens: fewer rows.
    let eval = |tokenizer: &str| {
        json_of(&[
            "eval",
            spec,
            "--weights",
            out.join("weights.safetensors").to_str().unwrap(),
            "--data",
            corpus_s,
            "--tokenizer",
            tokenizer,
            "--seq",
            "32",
            "--loops",
            "2",
            "--json",
        ])["rows"]
            .as_u64()
            .unwrap()
    };
    let (bpe_rows, byte_rows) = (eval(tokenizer.to_str().unwrap()), eval("bytes"));
    assert_eq!(byte_rows, (corpus_text.len() / 33) as u64);
    assert!(
        bpe_rows * 2 < byte_rows,
        "BPE {bpe_rows} rows, bytes {byte_rows}"
    );
    let bytes = run("bytes", &dir.join("bytes"));
    assert!(bytes.status.success(), "{}", text(&bytes.stderr));
    // Errors: eval cannot train a BPE, --tokenizer on non-text data, a
    // tokenizer larger than the model's vocabulary, text that is not UTF-8.
    let eval_args = |data: &str, tokenizer: &str| -> Vec<String> {
        let args = [
            "eval",
            spec,
            "--seed",
            "0",
            "--data",
            data,
            "--tokenizer",
            tokenizer,
        ];
        args.iter()
            .chain(&["--seq", "32"])
            .map(|a| a.to_string())
            .collect()
    };
    for (data, tokenizer, says) in [
        (corpus_s, "bpe:300", "only `mythos train` does"),
        (DATA, "bytes", "--tokenizer reads text data"),
        (
            corpus_s,
            "bpe:301",
            "more than the model's vocabulary of 300",
        ),
    ] {
        let args = eval_args(data, tokenizer);
        refused(&args.iter().map(String::as_str).collect::<Vec<_>>(), says);
    }
    let big = dir.join("big");
    refused(
        &[
            "train",
            spec,
            "--seed",
            "0",
            "--data",
            corpus_s,
            "--tokenizer",
            "bpe:400",
            "--seq",
            "32",
            "--out",
            big.to_str().unwrap(),
        ],
        "more than the model's vocabulary of 300",
    );
    let latin1 = dir.join("latin1.txt");
    std::fs::write(&latin1, b"caf\xe9\n").unwrap();
    refused(
        &[
            "eval",
            spec,
            "--seed",
            "0",
            "--data",
            latin1.to_str().unwrap(),
            "--seq",
            "2",
        ],
        "not UTF-8 text (byte 3",
    );
    let _ = std::fs::remove_dir_all(&dir);
}
