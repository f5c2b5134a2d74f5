//! The `mythos` binary end to end: exit codes, where output goes, and that
//! errors are rendered with `file:line:col`.

use std::process::{Command, Output};

fn mythos(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mythos"))
        .args(args)
        .output()
        .expect("the mythos binary runs")
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

#[test]
fn check_accepts_every_preset_and_example() {
    let mut args = vec!["check"];
    let files: Vec<String> = ["models", "examples"]
        .iter()
        .flat_map(|dir| std::fs::read_dir(dir).unwrap())
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mythos"))
        .map(|p| p.to_string_lossy().into_owned())
        .collect();
    args.extend(files.iter().map(|s| s.as_str()));
    let out = mythos(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        text(&out.stdout)
            .lines()
            .filter(|l| l.starts_with("ok "))
            .count(),
        files.len()
    );
}

#[test]
fn check_reports_errors_with_location_and_exit_1() {
    let out = mythos(&["check", "tests/ui/e0303-gqa-odd-head-dim.mythos"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("error[E0303]"), "{err}");
    assert!(
        err.contains("--> tests/ui/e0303-gqa-odd-head-dim.mythos:"),
        "{err}"
    );
    assert!(err.contains("help:"), "{err}");
}

#[test]
fn missing_file_and_unknown_preset_are_clean_errors() {
    let out = mythos(&["check", "no/such/file.mythos"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("error[E0004]: cannot read `no/such/file.mythos`: no such file")
    );
    let out = mythos(&["show", "@openmythos-1x"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("no preset named `@openmythos-1x`"), "{err}");
    assert!(err.contains("did you mean `openmythos-1b`?"), "{err}");
}

#[test]
fn show_prints_the_structure_of_the_default_preset() {
    let out = mythos(&["show"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.starts_with("model openmythos_1b\n"), "{s}");
    assert!(s.contains("2 x block(mla: 16 heads, q_rank 512, kv_rank 256, qk 64+32 (rope), v 64, dense swiglu: hidden 2730)"), "{s}");
    assert!(s.contains("loop (max 16 iterations)"), "{s}");
    assert!(s.contains("loop_embedding sincos over 256 channels"), "{s}");
}

#[test]
fn show_json_and_model_selection() {
    let out = mythos(&["show", "examples/variants.mythos"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("defines several models"));
    let out = mythos(&[
        "show",
        "examples/variants.mythos",
        "--model",
        "small_rdt_deep",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["name"], "small_rdt_deep");
    let out = mythos(&[
        "show",
        "examples/variants.mythos",
        "--model",
        "small_rdt_dep",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("did you mean `small_rdt_deep`?"));
}

#[test]
fn binary_garbage_is_an_error_not_a_panic() {
    let dir = std::env::temp_dir().join(format!("mythos-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let garbage = dir.join("garbage.mythos");
    let bytes: Vec<u8> = (0..4096u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    std::fs::write(&garbage, bytes).unwrap();
    let deep = dir.join("deep.mythos");
    std::fs::write(&deep, "(".repeat(1 << 20)).unwrap();
    for f in [&garbage, &deep] {
        let out = mythos(&["check", f.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out.stderr));
        assert!(
            text(&out.stderr).contains("error[E"),
            "{}",
            text(&out.stderr)
        );
        assert!(!text(&out.stderr).contains("panicked"));
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// `mythos inspect --json | head`: a reader that has gone ends the process
/// quietly (SIGPIPE), where Rust's default would panic in `println!`.
#[cfg(unix)]
#[test]
fn a_closed_stdout_is_no_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    let mut child = Command::new(env!("CARGO_BIN_EXE_mythos"))
        .args(["inspect", "@tiny-mla", "--json"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    assert!(
        !text(&out.stderr).contains("panicked"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        out.status.signal(),
        Some(13),
        "ended by SIGPIPE: {:?}",
        out.status
    );
}

#[test]
fn explain_and_presets_list() {
    let out = mythos(&["explain", "W0002"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).contains("not divisible"));
    let out = mythos(&["explain", "E9999"]);
    assert_eq!(out.status.code(), Some(1));
    let out = mythos(&["presets"]);
    assert!(text(&out.stdout).contains("@openmythos-1t"));
}

#[test]
fn inspect_prints_tables_and_stable_json() {
    let out = mythos(&["inspect", "@openmythos-1b"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let s = text(&out.stdout);
    assert!(s.contains("1,064,028,034  (1.06 G)"), "{s}");
    assert!(s.contains("loops 16 (max 16)"), "{s}");
    let out = mythos(&[
        "inspect",
        "@openmythos-1b",
        "--json",
        "--seq",
        "4096",
        "--loops",
        "32",
        "--dtype",
        "f32",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["schema"], "mythos.inspect/1");
    assert_eq!(v["params"]["total"], 1_064_028_034u64);
    assert_eq!(v["loops"], 32);
    assert_eq!(v["seq"], 4096);
    for key in ["active_per_token", "by_component"] {
        assert!(!v["params"][key].is_null(), "params.{key}");
    }
    for path in [
        ("flops", "prefill_per_token"),
        ("flops", "decode_per_token"),
        ("kv_cache", "bytes_per_token"),
        ("weights", "bytes"),
    ] {
        assert!(v[path.0][path.1].is_number(), "{}.{}", path.0, path.1);
    }
    assert_eq!(v["weights"]["bytes"], v["weights"]["bytes_f32"]);
    // Bad options are clean errors.
    let out = mythos(&["inspect", "@openmythos-1b", "--seq", "0"]);
    assert_eq!(out.status.code(), Some(1), "usage errors exit with 1");
    assert!(text(&out.stderr).contains("--seq"));
    let out = mythos(&["inspect", "@openmythos-1b", "--bandwidth=-1"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--bandwidth must be a positive number"));
}

#[test]
fn graph_prints_text_and_dot() {
    let out = mythos(&["graph", "@tiny-gqa"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.starts_with("module tiny_gqa"), "{s}");
    assert!(
        s.contains("loop[max_iters=4 inject=lti carried=cum_p:1,halted:1,h_out:64 halt_on=halted result=h_out]"),
        "{s}"
    );
    // The ACT rule is in the loop body.
    for op in [
        "act.weight[threshold=0.99]",
        "act.accumulate",
        "act.cumulate",
        "act.halted",
    ] {
        assert!(s.contains(op), "{op}: {s}");
    }
    let out = mythos(&["graph", "@tiny-gqa", "--format", "dot"]);
    assert_eq!(out.status.code(), Some(0));
    assert!(text(&out.stdout).starts_with("digraph"));
}

#[test]
fn pass_flags_end_to_end() {
    // -O2 graph: hoisted invariants, a loop header, fused groups.
    let out = mythos(&["graph", "@tiny-mla", "-O2"]);
    assert_eq!(out.status.code(), Some(0));
    let s = text(&out.stdout);
    assert!(s.contains("invariants=2"), "{s}");
    assert!(s.contains("header(%t = param 0)"), "{s}");
    assert!(s.contains("fused[add+lti_apply]"), "{s}");
    assert!(
        s.contains("kv=compact absorb prenorm(eps=1e-6) residual"),
        "{s}"
    );
    // --timings lists every pass of -O2; --print-ir-after prints after one pass.
    let out = mythos(&[
        "graph",
        "@tiny-gqa",
        "-O2",
        "--timings",
        "--verify-each",
        "--print-ir-after",
        "hoist",
    ]);
    assert_eq!(out.status.code(), Some(0));
    let err = text(&out.stderr);
    for pass in [
        "canonicalize",
        "hoist",
        "expert-batching",
        "fuse",
        "dce",
        "total",
    ] {
        assert!(err.contains(pass), "{pass}: {err}");
    }
    assert_eq!(err.matches("// IR after").count(), 1, "{err}");
    // An unknown pass is an error with a suggestion, exit 1.
    let out = mythos(&["inspect", "@tiny-gqa", "--passes", "cse,fusion"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("unknown pass `fusion`; the passes are: canonicalize, cse, hoist"),
        "{err}"
    );
    let out = mythos(&["graph", "@tiny-gqa", "-O3"]);
    assert_eq!(out.status.code(), Some(1));
    // inspect compares -O0 with the level: the tiny MLA model's figures.
    let out = mythos(&["inspect", "@tiny-mla", "--seq", "128", "--json"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let o = &v["optimization"];
    assert_eq!(o["level"], 2);
    // Each of the 4 iterations runs the ACT rule's 4 steps as kernels.
    assert_eq!(o["before"]["per_decode_step"], 83);
    assert_eq!(o["after"]["per_decode_step"], 48);
    assert_eq!(o["before"]["kv_bytes_per_token"], 576);
    assert_eq!(o["after"]["kv_bytes_per_token"], 288);
    let out = mythos(&["inspect", "@tiny-mla", "-O0"]);
    let s = text(&out.stdout);
    assert!(s.contains("kernels per decode step"), "{s}");
}

#[test]
fn openmythos_export_import_round_trip_through_the_cli() {
    let dir = std::env::temp_dir().join(format!("mythos-rt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (json, spec, again) = (
        dir.join("1b.json"),
        dir.join("my-1b.mythos"),
        dir.join("again.json"),
    );
    let out = mythos(&[
        "export",
        "openmythos",
        "@openmythos-1b",
        "-o",
        json.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = mythos(&[
        "import",
        "openmythos",
        json.to_str().unwrap(),
        "-o",
        spec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(std::fs::read_to_string(&spec)
        .unwrap()
        .contains("model my_1b {"));
    let out = mythos(&[
        "export",
        "openmythos",
        spec.to_str().unwrap(),
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(
        std::fs::read(&json).unwrap(),
        std::fs::read(&again).unwrap()
    );
    // A model OpenMythos cannot express, and a broken config.
    let out = mythos(&[
        "export",
        "openmythos",
        "@tiny-huginn",
        "-o",
        again.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error[E0403]"));
    std::fs::write(&json, "{\"vocab_size\": 32000,}").unwrap();
    let out = mythos(&[
        "import",
        "openmythos",
        json.to_str().unwrap(),
        "-o",
        spec.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error[E0401]: invalid JSON: trailing comma"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn fmt_check_and_rewrite() {
    let dir = std::env::temp_dir().join(format!("mythos-fmt-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("messy.mythos");
    std::fs::write(&file, "model m{vocab=256 dim=64   max_seq=128 # size\nattention mha{heads=4}\nffn dense{}\nloop max 2{block(attention,dense)}}").unwrap();
    let f = file.to_str().unwrap();
    let out = mythos(&["fmt", "--check", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("not in canonical form"));
    let out = mythos(&["fmt", f]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let formatted = std::fs::read_to_string(&file).unwrap();
    assert!(
        formatted.starts_with("model m {\n  vocab = 256\n  dim = 64\n  max_seq = 128 # size\n"),
        "{formatted}"
    );
    assert_eq!(mythos(&["fmt", "--check", f]).status.code(), Some(0));
    assert_eq!(mythos(&["check", f]).status.code(), Some(0));
    std::fs::write(&file, "model {").unwrap();
    let out = mythos(&["fmt", f]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("error[E0001]"));
    let models: Vec<String> = std::fs::read_dir("models")
        .unwrap()
        .map(|e| e.unwrap().path().to_string_lossy().into_owned())
        .collect();
    let mut args = vec!["fmt", "--check"];
    args.extend(models.iter().map(|s| s.as_str()));
    assert_eq!(
        mythos(&args).status.code(),
        Some(0),
        "presets are canonical"
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// init -> run (prefill and cached decode) -> generate -> bench, and the
/// errors a user meets on the way.
#[test]
fn runtime_commands_end_to_end() {
    let dir = std::env::temp_dir().join(format!("mythos-run-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let w = dir.join("w.safetensors");
    let (w_s, fx) = (w.to_str().unwrap(), "tests/fixtures/parity");
    let out = mythos(&["init", "@tiny-gqa", "--seed", "5", "-o", w_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let io = format!("{fx}/gqa_decode.io.safetensors");
    let (a, b) = (dir.join("a.safetensors"), dir.join("b.safetensors"));
    let out = mythos(&[
        "run",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--inputs",
        &io,
        "--dump-logits",
        a.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let args = [
        "run",
        "@tiny-gqa",
        "--seed",
        "5",
        "--inputs",
        &io,
        "--decode-from",
        "3",
        "--dump-logits",
        b.to_str().unwrap(),
    ];
    let out = mythos(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // The same weights from the file and from the seed; cached decode equals the prefill.
    let read = |p: &std::path::Path| {
        let bytes = std::fs::read(p).unwrap();
        let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
        let t = st.tensor("logits").unwrap();
        assert_eq!(t.shape(), &[2, 12, 256]);
        t.data()
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
            .collect::<Vec<f32>>()
    };
    let (la, lb) = (read(&a), read(&b));
    let (err, max) = max_diff(&lb, &la);
    assert!(
        err <= 1e-5 * max,
        "decode through the cache differs: {err} vs {max}"
    );

    let out = mythos(&[
        "generate",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert_eq!(text(&out.stdout).split_whitespace().count(), 5);
    assert!(text(&out.stderr).contains("tokens/s"));
    let out = mythos(&[
        "bench",
        "@tiny-gqa",
        "--seed",
        "1",
        "--seq",
        "16",
        "--decode",
        "2",
        "--repeats",
        "2",
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["repeats"], 2);
    assert!(v["prefill_tokens_per_s"].as_f64().unwrap() > 0.0);
    assert!(v["decode_ms_per_token"].as_f64().unwrap() > 0.0);

    // Wrong weights: every mismatch listed, exit 1.
    let out = mythos(&[
        "run",
        "@tiny-mla",
        "--weights",
        w_s,
        "--inputs",
        &io,
        "--dump-logits",
        a.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains("does not match the model")
            && err.contains("missing tensor `prelude.0.attn.q_down.weight`"),
        "{err}"
    );
    // Token ids beyond the vocabulary, and a file that is not safetensors.
    let out = mythos(&[
        "generate",
        "@tiny-gqa",
        "--seed",
        "1",
        "--prompt-ids",
        "1,999",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("token id 999"),
        "{}",
        text(&out.stderr)
    );
    let out = mythos(&[
        "run",
        "@tiny-gqa",
        "--seed",
        "1",
        "--inputs",
        "README.md",
        "--dump-logits",
        a.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        text(&out.stderr).contains("is not a safetensors file"),
        "{}",
        text(&out.stderr)
    );
    // Weights and seed together are refused.
    let out = mythos(&["bench", "@tiny-gqa", "--seed", "1", "--weights", w_s]);
    assert_eq!(out.status.code(), Some(1));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn generate_from_text_through_a_tokenizer() {
    let tok = "tests/fixtures/tokenizer/tiny-wordlevel.json";
    let args = [
        "generate",
        "@tiny-gqa",
        "--seed",
        "1",
        "--prompt",
        "The loop runs again",
        "--tokenizer",
        tok,
        "--max-new-tokens",
        "6",
        "--temperature",
        "0",
    ];
    let out = mythos(&args);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // Six words from the tokenizer's vocabulary, separated by spaces.
    let words: Vec<String> = text(&out.stdout)
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(words.len(), 6, "{words:?}");
    let vocab: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(tok).unwrap()).unwrap();
    for w in &words {
        assert!(
            vocab["model"]["vocab"].get(w).is_some(),
            "{w} is not in the vocabulary"
        );
    }
    let out = mythos(&[
        "generate",
        "@tiny-gqa",
        "--seed",
        "1",
        "--prompt",
        "x",
        "--tokenizer",
        "README.md",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("cannot load tokenizer README.md"));
}

// ---- NaN and infinities: in a weights file, and from a forward pass that overflows

/// Rewrites the f32 safetensors file `path` with `edit` applied to the values
/// of tensor `name` (the other tensors unchanged).
fn edit_weights(path: &std::path::Path, name: &str, edit: impl Fn(&mut [f32])) {
    use safetensors::{tensor::TensorView, Dtype, SafeTensors};
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = st
        .iter()
        .map(|(n, v)| (n.to_string(), v.shape().to_vec(), v.data().to_vec()))
        .collect();
    let (_, _, data) = tensors.iter_mut().find(|t| t.0 == name).expect(name);
    let mut vals: Vec<f32> = data
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    edit(&mut vals);
    *data = vals.iter().flat_map(|x| x.to_le_bytes()).collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, shape, data)| {
            let view = TensorView::new(Dtype::F32, shape.clone(), data).unwrap();
            (n.clone(), view)
        })
        .collect();
    let out = safetensors::serialize(views, None).unwrap();
    std::fs::write(path, out).unwrap();
}

/// A NaN in a weights file is an error naming the file, the tensor, the index
/// and the count, before anything runs: no tokens, no logits file, exit 1.
#[test]
fn nan_weights_are_an_error_not_garbage_tokens() {
    let dir = temp_dir("nan-weights");
    let w = dir.join("w.safetensors");
    let w_s = w.to_str().unwrap();
    let out = mythos(&["init", "@tiny-gqa", "--seed", "0", "-o", w_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    edit_weights(&w, "embed.weight", |v| v[5] = f32::NAN);
    let want = format!(
        "{w_s}: `embed.weight` is not finite: 1 NaN of 16384 values, \
         the first (NaN) at flat index 5\n"
    );
    let hint = "hint: re-export the weights; if they come from training, \
                resume from an earlier checkpoint";
    let args = [
        "generate",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--prompt-ids",
        "0,1,2",
        "--temperature",
        "0",
    ];
    let out = mythos(&args);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&want) && err.contains(hint), "{err}");
    assert_eq!(text(&out.stdout), "", "no tokens");
    let logits = dir.join("logits.safetensors");
    let out = mythos(&[
        "run",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--inputs",
        "tests/fixtures/parity/gqa_decode.io.safetensors",
        "--dump-logits",
        logits.to_str().unwrap(),
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains(&want), "{err}");
    assert!(!logits.exists(), "no logits written");
    std::fs::remove_dir_all(&dir).ok();
}

/// Finite weights whose forward pass overflows f32: the logits are checked
/// before they are sampled or written, and the error names the step.
#[test]
fn overflowing_logits_are_an_error_naming_the_step() {
    let dir = temp_dir("overflow");
    let base = dir.join("w.safetensors");
    let out = mythos(&[
        "init",
        "@tiny-gqa",
        "--seed",
        "0",
        "-o",
        base.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let hint = "hint: the weights are finite (checked on load), so the model overflowed f32";
    let fixture = "tests/fixtures/parity/gqa_decode.io.safetensors";
    let logits = dir.join("logits.safetensors");
    let logits_s = logits.to_str().unwrap();
    // The error of a command that must fail; no logits written.
    let fails = |args: &[&str]| {
        let out = mythos(args);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {err}");
        assert!(err.contains(hint), "{args:?}: {err}");
        assert!(!logits.exists(), "{args:?}: logits written");
        (text(&out.stdout), err)
    };

    // The final norm's weight at f32::MAX: every position overflows, so the
    // prefill fails first, before any token or logit comes out.
    let w = dir.join("norm-max.safetensors");
    std::fs::copy(&base, &w).unwrap();
    edit_weights(&w, "norm.weight", |v| v.fill(f32::MAX));
    let w_s = w.to_str().unwrap();
    let (stdout, err) = fails(&[
        "generate",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--prompt-ids",
        "0,1,2",
        "--temperature",
        "0",
    ]);
    assert!(
        err.contains("error: prefill produced non-finite logits at position 2 (batch row 0): "),
        "{err}"
    );
    assert_eq!(stdout, "", "no tokens");
    for extra in [&[][..], &["--decode-from", "3"][..]] {
        let mut args = vec![
            "run",
            "@tiny-gqa",
            "--weights",
            w_s,
            "--inputs",
            fixture,
            "--dump-logits",
            logits_s,
        ];
        args.extend_from_slice(extra);
        let (_, err) = fails(&args);
        let want = "error: prefill produced non-finite logits at position 0 (batch row 0): ";
        assert!(err.contains(want), "{extra:?}: {err}");
    }
    let (_, err) = fails(&[
        "bench",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--seq",
        "8",
        "--decode",
        "2",
    ]);
    assert!(
        err.contains("error: prefill produced non-finite logits at position 7 (batch row 0): "),
        "{err}"
    );

    // Token 7's embedding 10x larger and the final norm's weight at 5e37:
    // only the logit of token 7, at a position whose token is 7, overflows
    // (about 4.9e38; the others stay below 1.3e38), so the step that fails
    // is the one that reads token 7.
    let w = dir.join("token7.safetensors");
    std::fs::copy(&base, &w).unwrap();
    edit_weights(&w, "embed.weight", |v| {
        v[7 * 64..8 * 64].iter_mut().for_each(|x| *x *= 10.0)
    });
    edit_weights(&w, "norm.weight", |v| v.fill(5e37));
    let w_s = w.to_str().unwrap();
    let ids = dir.join("ids.safetensors");
    let id_bytes: Vec<u8> = [1i64, 2, 3, 4, 7, 5]
        .iter()
        .flat_map(|x| x.to_le_bytes())
        .collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![1, 6], &id_bytes)
        .unwrap();
    std::fs::write(
        &ids,
        safetensors::serialize([("input_ids", view)], None).unwrap(),
    )
    .unwrap();
    let ids_s = ids.to_str().unwrap();
    let one_inf = "1 infinite of 256 values, the first (+inf) at vocab index 7\n";
    // One forward over all tokens fails in the prefill; a prefill of 3 then
    // single-token steps fails at the step of position 4.
    for (extra, step) in [
        (&[][..], "prefill produced non-finite logits at position 4"),
        (
            &["--decode-from", "3"][..],
            "decode position 4 produced non-finite logits",
        ),
    ] {
        let mut args = vec![
            "run",
            "@tiny-gqa",
            "--weights",
            w_s,
            "--inputs",
            ids_s,
            "--dump-logits",
            logits_s,
        ];
        args.extend_from_slice(extra);
        let (_, err) = fails(&args);
        let want = format!("error: {step} (batch row 0): {one_inf}");
        assert!(err.contains(&want), "{extra:?}: {err}");
    }
    // Greedy generation picks token 7 (its logit is the largest everywhere),
    // then the step that reads it fails: the token line is ended first.
    let (stdout, err) = fails(&[
        "generate",
        "@tiny-gqa",
        "--weights",
        w_s,
        "--prompt-ids",
        "1,2,3",
        "--temperature",
        "0",
    ]);
    assert_eq!(stdout, "7\n");
    let want =
        format!("error: decode position 3 produced non-finite logits (batch row 0): {one_inf}");
    assert!(err.contains(&want), "{err}");
    std::fs::remove_dir_all(&dir).ok();
}

// ---- `mythos compile`, artifacts, the compile cache, `--backend mlir-cpu` (docs/compile.md)

/// `mythos` with extra environment (a private compile cache).
fn mythos_env(args: &[&str], env: &[(&str, &std::path::Path)]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_mythos"));
    cmd.args(args);
    for (k, v) in env {
        cmd.env(k, v);
    }
    cmd.output().expect("the mythos binary runs")
}

/// A fresh temporary folder for one test.
fn temp_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("mythos-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// `(max |got - want|, max |want|)` over two logit vectors of one length.
fn max_diff(got: &[f32], want: &[f32]) -> (f32, f32) {
    assert_eq!(got.len(), want.len(), "logits of different lengths");
    let max = want.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = got
        .iter()
        .zip(want)
        .fold(0f32, |m, (a, b)| m.max((a - b).abs()));
    (err, max)
}

/// Logits written by `mythos run --dump-logits`.
fn read_logits(p: &std::path::Path) -> Vec<f32> {
    let bytes = std::fs::read(p).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The portable kernels (`MYTHOS_CPU_PORTABLE=1`) and the SIMD ones give
/// the same logits, prefill and decode through the cache, GQA and MLA: the
/// check that the code the CI machine's CPU does not pick still works.
#[test]
fn portable_kernels_match_simd() {
    let dir = std::env::temp_dir().join(format!("mythos-portable-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for (preset, fixture) in [("@tiny-gqa", "gqa_decode"), ("@tiny-mla", "mla_decode")] {
        let io = format!("tests/fixtures/parity/{fixture}.io.safetensors");
        let run = |portable: &str, out: &std::path::Path| {
            let o = Command::new(env!("CARGO_BIN_EXE_mythos"))
                .args([
                    "run",
                    preset,
                    "--seed",
                    "5",
                    "--inputs",
                    &io,
                    "--decode-from",
                    "3",
                ])
                .args(["--dump-logits", out.to_str().unwrap()])
                .env("MYTHOS_CPU_PORTABLE", portable)
                .output()
                .unwrap();
            assert_eq!(o.status.code(), Some(0), "{}", text(&o.stderr));
            read_logits(out)
        };
        let simd = run("0", &dir.join("simd.safetensors"));
        let portable = run("1", &dir.join("portable.safetensors"));
        let (err, max) = max_diff(&portable, &simd);
        println!(
            "{preset}: portable vs SIMD kernels {:.2e} relative",
            err / max
        );
        assert!(
            err <= 1e-5 * max,
            "{preset}: portable kernels differ by {err} (max {max})"
        );
    }
    std::fs::remove_dir_all(&dir).ok();
}

/// Full compiles of a tiny model: needs a kernel for every op of it
/// (attention, MoE, ...). The summary, the artifact, --emit, --timings,
/// and the cache: a hit the second time, a miss with its reason after.
#[test]
fn compile_tiny_gqa_emit_timings_and_cache() {
    use mythos_compiler::artifact::Artifact;
    let dir = temp_dir("compile");
    let cache = dir.join("cache");
    let env = [("MYTHOS_CACHE_DIR", cache.as_path())];
    let out_path = dir.join("tiny.mythosc");
    let o = out_path.to_str().unwrap();
    let out = mythos_env(&["compile", "@tiny-gqa", "-o", o, "--timings"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("compiled tiny_gqa (@tiny-gqa) for cpu at -O2: ")
            && err.contains(" kernels, ")
            && err.contains(" plan steps, ")
            && err.contains(&format!(" of code -> {o}")),
        "{err}"
    );
    assert!(
        err.contains("cache miss: first compile of @tiny-gqa (model tiny_gqa) for cpu"),
        "{err}"
    );
    for row in [
        "parse + check",
        "lower to IR",
        "passes (-O2)",
        "  fuse (",
        "backend: kernels (IR -> MLIR text)",
        "backend: LLVM codegen + link",
        "write artifact",
        "total",
    ] {
        assert!(err.contains(row), "no `{row}` row: {err}");
    }
    let a = Artifact::read(&out_path, mythos_backend::cache::compiler_id()).unwrap();
    assert_eq!((a.model.as_str(), a.target.as_str()), ("tiny_gqa", "cpu"));
    assert!(!a.plan.steps.is_empty() && a.kernel("kernels.so").is_some());
    assert_eq!(a.sources[0].name, "@tiny-gqa");

    // The same compile again is a hit; other options are a miss that says why.
    let out = mythos_env(&["compile", "@tiny-gqa", "-o", o], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cache hit: "),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(
        Artifact::read(&out_path, mythos_backend::cache::compiler_id()).unwrap(),
        a
    );
    let out = mythos_env(&["compile", "@tiny-gqa", "-o", o, "-O1"], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("cache miss: options changed (-O2 -> -O1)"),
        "{}",
        text(&out.stderr)
    );
    // A changed spec file is named; --no-cache neither reads nor writes.
    let spec = dir.join("tiny.mythos");
    let preset = std::fs::read_to_string("models/tiny-gqa.mythos").unwrap();
    std::fs::write(&spec, &preset).unwrap();
    let s = spec.to_str().unwrap();
    let out = mythos_env(&["compile", s, "-o", o], &env);
    assert!(text(&out.stderr).contains("cache miss: first compile of"));
    std::fs::write(&spec, preset.replace("max_seq = ", "max_seq = 2 * ")).unwrap();
    let out = mythos_env(&["compile", s, "-o", o], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(&format!("cache miss: spec text changed ({s})")),
        "{}",
        text(&out.stderr)
    );
    let out = mythos_env(&["compile", s, "-o", o, "--no-cache"], &env);
    assert!(text(&out.stderr).contains("cache bypassed (--no-cache)"));

    // -O0 is legalized (canonicalize) before the backend; --emit writes the stages.
    let emit = dir.join("emit");
    let out = mythos_env(
        &[
            "compile",
            "@tiny-gqa",
            "-O0",
            "-o",
            o,
            "--emit",
            "mlir,ir",
            "--emit",
            "llvm",
            "--emit-dir",
            emit.to_str().unwrap(),
            "--timings",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(
        err.contains("legalize: canonicalize (the backend needs canonical IR)"),
        "{err}"
    );
    for ext in ["mlir", "ir", "ll"] {
        let f = emit.join(format!("tiny.{ext}"));
        let len = std::fs::metadata(&f).map(|m| m.len()).unwrap_or(0);
        assert!(len > 0, "{} is missing or empty", f.display());
    }
    assert!(std::fs::read_to_string(emit.join("tiny.mlir"))
        .unwrap()
        .contains("func.func"));
    assert!(std::fs::read_to_string(emit.join("tiny.ir"))
        .unwrap()
        .starts_with("module tiny_gqa"));
    std::fs::remove_dir_all(&dir).ok();
}

/// `run`/`generate`/`bench --backend mlir-cpu` compile through the cache and
/// give the reference's logits; `--artifact` runs a compiled file. Needs a
/// kernel for every op of the model (attention, MoE, ...).
#[test]
fn backend_mlir_cpu_matches_the_reference_runtime() {
    let dir = temp_dir("mlir-cpu");
    let cache = dir.join("cache");
    let env = [("MYTHOS_CACHE_DIR", cache.as_path())];
    let io = "tests/fixtures/parity/gqa_decode.io.safetensors";
    let logits = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let mut args = vec![
            "run",
            "@tiny-gqa",
            "--seed",
            "5",
            "--inputs",
            io,
            "--decode-from",
            "4",
            "--dump-logits",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        let out = mythos_env(&args, &env);
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        (read_logits(&path), text(&out.stderr))
    };
    let (reference, _) = logits("ref.safetensors", &[]);
    let (compiled, err) = logits("mlir.safetensors", &["--backend", "mlir-cpu"]);
    assert!(err.contains("cache miss: first compile"), "{err}");
    let (diff, max) = max_diff(&compiled, &reference);
    assert!(diff <= 1e-5 * max, "mlir-cpu differs: {diff} vs max {max}");
    let (_, err) = logits("again.safetensors", &["--backend", "mlir-cpu"]);
    assert!(err.contains("cache hit: "), "{err}");

    // A compiled artifact runs the same; at other options it is stale.
    let art = dir.join("tiny.mythosc");
    let a = art.to_str().unwrap();
    let out = mythos_env(&["compile", "@tiny-gqa", "-O1", "-o", a], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let (from_file, err) = logits("art.safetensors", &["--artifact", a]);
    assert!(err.contains(&format!("using {a}")), "{err}");
    let (diff, _) = max_diff(&from_file, &reference);
    assert!(diff <= 1e-5 * max, "the -O1 artifact differs: {diff}");
    let path = dir.join("x.safetensors");
    let out = mythos_env(
        &[
            "run",
            "@tiny-gqa",
            "--seed",
            "5",
            "--inputs",
            io,
            "--dump-logits",
            path.to_str().unwrap(),
            "--artifact",
            a,
            "-O2",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(
        err.contains(&format!("{a} is stale: it was compiled from other spec text or options (at -O1) than @tiny-gqa at -O2"))
            && err.contains("recompile it with `mythos compile @tiny-gqa --model tiny_gqa --target cpu -O2 -o"),
        "{err}"
    );

    let out = mythos_env(
        &[
            "generate",
            "@tiny-gqa",
            "--seed",
            "1",
            "--prompt-ids",
            "1,2,3",
            "--max-new-tokens",
            "5",
            "--temperature",
            "0",
            "--backend",
            "mlir-cpu",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let reference = mythos(&[
        "generate",
        "@tiny-gqa",
        "--seed",
        "1",
        "--prompt-ids",
        "1,2,3",
        "--max-new-tokens",
        "5",
        "--temperature",
        "0",
    ]);
    assert_eq!(text(&out.stdout), text(&reference.stdout));
    let out = mythos_env(
        &[
            "bench",
            "@tiny-gqa",
            "--seed",
            "1",
            "--seq",
            "16",
            "--decode",
            "2",
            "--json",
            "--backend",
            "mlir-cpu",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["backend"], "mlir-cpu");
    std::fs::remove_dir_all(&dir).ok();
}

/// Damaged artifacts: each kind of damage is its own error, exit 1, never
/// a panic. Made with the library (no compile needed).
#[test]
fn damaged_artifacts_fail_with_clear_errors() {
    use mythos_compiler::artifact::{Artifact, Kernel, Options};
    use sha2::Digest;
    let dir = temp_dir("artifacts");
    let compiler = mythos_backend::cache::compiler_id();
    let good = Artifact {
        compiler: compiler.to_string(),
        target: "cpu".into(),
        options: Options {
            level: 2,
            passes: mythos_compiler::passes::pipeline(2)
                .into_iter()
                .map(String::from)
                .collect(),
            legalized: false,
        },
        entry: "@tiny-gqa".into(),
        model: "tiny_gqa".into(),
        sources: Vec::new(),
        ir_fingerprint: "0".repeat(64),
        plan: Default::default(),
        kernels: vec![Kernel {
            name: "kernels.so".into(),
            bytes: vec![0x7f; 512],
        }],
    }
    .to_bytes();
    let rehash = |b: &mut Vec<u8>| {
        let end = b.len() - 32;
        let h = sha2::Sha256::digest(&b[..end]);
        b[end..].copy_from_slice(&h);
    };
    let mut corrupt = good.clone();
    let n = corrupt.len();
    corrupt[n - 200] ^= 0x01;
    let truncated = good[..good.len() / 2].to_vec();
    let mut bad_magic = good.clone();
    bad_magic[..4].copy_from_slice(b"GGUF");
    let mut old_format = good.clone();
    old_format[8] = old_format[8].wrapping_add(1);
    // Another compiler version, with a valid content hash.
    let mut old_compiler = good.clone();
    let at = 16 + compiler.find(|c: char| c.is_ascii_digit()).unwrap();
    old_compiler[at] = if old_compiler[at] == b'9' { b'8' } else { b'9' };
    rehash(&mut old_compiler);
    let io = "tests/fixtures/parity/gqa_decode.io.safetensors";
    let dump = dir.join("l.safetensors");
    let cases: [(&str, Vec<u8>, &str); 6] = [
        (
            "corrupt",
            corrupt,
            "is corrupt (its content hash does not match its contents); recompile it with `mythos compile",
        ),
        (
            "truncated",
            truncated,
            "is truncated (",
        ),
        (
            "magic",
            bad_magic,
            "is not a Mythos artifact (it does not start with the .mythosc header); compile one with `mythos compile",
        ),
        (
            "format",
            old_format,
            "is stale: it is in artifact format 2, this compiler",
        ),
        (
            "compiler",
            old_compiler,
            "is stale: it was compiled by mythos ",
        ),
        (
            // Readable, but not this spec's IR.
            "fingerprint",
            good,
            "is stale: it was compiled from other spec text or options (at -O2) than @tiny-gqa at -O2",
        ),
    ];
    for (name, bytes, message) in cases {
        let path = dir.join(format!("{name}.mythosc"));
        std::fs::write(&path, bytes).unwrap();
        let p = path.to_str().unwrap();
        let out = mythos(&[
            "run",
            "@tiny-gqa",
            "--seed",
            "1",
            "--inputs",
            io,
            "--dump-logits",
            dump.to_str().unwrap(),
            "--artifact",
            p,
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{name}: {err}");
        assert!(err.contains(&format!("error: {p} ")), "{name}: {err}");
        assert!(err.contains(message), "{name}: {err}");
        assert!(err.contains("mythos compile"), "{name}: {err}");
        assert!(!err.contains("panicked"), "{name}: {err}");
    }
    // Not a file at all, and --artifact with the reference runtime.
    let missing = dir.join("missing.mythosc");
    let out = mythos(&[
        "bench",
        "@tiny-gqa",
        "--seed",
        "1",
        "--artifact",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("missing.mythosc: no such file"));
    let out = mythos(&[
        "bench",
        "@tiny-gqa",
        "--seed",
        "1",
        "--backend",
        "cpu",
        "--artifact",
        missing.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--artifact needs --backend mlir-cpu"));
    std::fs::remove_dir_all(&dir).ok();
}

#[test]
fn compile_rejects_bad_option_combinations() {
    let dir = temp_dir("compile-flags");
    let o = dir.join("x.mythosc");
    let o = o.to_str().unwrap();
    for (args, message) in [
        (
            vec!["compile", "@tiny-gqa", "-o", o, "--arch", "sm_80"],
            "--arch sm_80 applies to --target cuda",
        ),
        (
            vec!["compile", "@tiny-gqa", "-o", o, "--emit", "ptx"],
            "--emit ptx needs --target cuda",
        ),
        (
            vec!["compile", "@tiny-gqa", "-o", o, "--emit", "bitcode"],
            "invalid value 'bitcode' for '--emit",
        ),
        (
            vec![
                "compile",
                "@tiny-gqa",
                "-o",
                o,
                "--target",
                "cuda",
                "--arch",
                "sm_70",
            ],
            "invalid value 'sm_70' for '--arch",
        ),
        (
            vec!["compile", "@tiny-gqa", "-o", o, "--passes", "fusion"],
            "unknown pass `fusion`",
        ),
        (vec!["compile", "@tiny-gqa"], "--output"),
        (
            vec!["compile", "tests/ui/e0303-gqa-odd-head-dim.mythos", "-o", o],
            "error[E0303]",
        ),
    ] {
        let out = mythos(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        let err = text(&out.stderr);
        assert!(err.contains(message), "{args:?}: {err}");
    }
    assert!(!std::path::Path::new(o).exists());
    std::fs::remove_dir_all(&dir).ok();
}

/// `--target cuda`: PTX for the chosen arch in the artifact and with
/// `--emit ptx`. Needs the CUDA lowering (backend/src/cuda.rs); no GPU.
#[test]
fn compile_for_cuda_writes_ptx() {
    use mythos_compiler::artifact::Artifact;
    let dir = temp_dir("compile-cuda");
    let cache = dir.join("cache");
    let env = [("MYTHOS_CACHE_DIR", cache.as_path())];
    let out_path = dir.join("tiny.mythosc");
    let o = out_path.to_str().unwrap();
    let out = mythos_env(
        &[
            "compile",
            "@tiny-gqa",
            "--target",
            "cuda",
            "--arch",
            "sm_80",
            "-o",
            o,
            "--emit",
            "ptx",
        ],
        &env,
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("compiled tiny_gqa (@tiny-gqa) for sm_80 at -O2: "));
    let a = Artifact::read(&out_path, mythos_backend::cache::compiler_id()).unwrap();
    assert_eq!(a.target, "sm_80");
    let ptx: Vec<_> = a
        .kernels
        .iter()
        .filter(|k| k.name.ends_with(".ptx"))
        .collect();
    assert!(!ptx.is_empty(), "no PTX blobs");
    for k in ptx {
        let text = String::from_utf8(k.bytes.clone()).unwrap();
        assert!(text.contains(".target sm_80"), "{}", k.name);
        let emitted = dir.join(format!("tiny.{}", k.name));
        assert_eq!(std::fs::read_to_string(&emitted).unwrap(), text);
    }
    // Compiled before for sm_80 only: sm_90 is a new target.
    let out = mythos_env(&["compile", "@tiny-gqa", "--target", "cuda", "-o", o], &env);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains(
            "cache miss: target changed: first compile for sm_90 (compiled before for sm_80)"
        ),
        "{}",
        text(&out.stderr)
    );
    std::fs::remove_dir_all(&dir).ok();
}

/// `--device cuda` probes the GPU before compiling anything: without one
/// (no libcuda, or no device) `run` prints the probe's error and exits 1,
/// never panics; with one it runs and gives the reference's logits.
#[test]
fn cuda_device_without_a_gpu_is_a_clean_error() {
    let dir = temp_dir("cuda");
    let cache = dir.join("cache");
    let env = [("MYTHOS_CACHE_DIR", cache.as_path())];
    let io = "tests/fixtures/parity/gqa_decode.io.safetensors";
    let logits = |name: &str, extra: &[&str]| {
        let path = dir.join(name);
        let mut args = vec![
            "run",
            "@tiny-gqa",
            "--seed",
            "0",
            "--inputs",
            io,
            "--decode-from",
            "4",
            "--dump-logits",
            path.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        (mythos_env(&args, &env), path)
    };
    let (out, path) = logits("gpu.safetensors", &["--device", "cuda"]);
    let err = text(&out.stderr);
    assert!(!err.contains("panicked"), "{err}");
    if mythos_runtime::cuda::probe().is_err() {
        assert_eq!(out.status.code(), Some(1), "{err}");
        assert!(err.contains("error: no CUDA device found"), "{err}");
        // Nothing was compiled: the probe comes first.
        assert!(!cache.exists(), "{err}");
        return;
    }
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("cache miss: first compile"), "{err}");
    let gpu = read_logits(&path);
    let (out, path) = logits("cpu.safetensors", &[]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let cpu = read_logits(&path);
    let (diff, max) = max_diff(&gpu, &cpu);
    assert!(diff <= 1e-4 * max, "cuda differs: {diff} vs max {max}");
}

/// `--arch` and `--backend`/`--artifact` are checked against `--device`.
#[test]
fn cuda_device_flags_are_checked() {
    let out = mythos(&[
        "bench",
        "@tiny-gqa",
        "--seed",
        "0",
        "--arch",
        "sm_90",
        "--seq",
        "4",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--arch is the GPU architecture: it needs --device cuda"));
    let out = mythos(&[
        "bench",
        "@tiny-gqa",
        "--seed",
        "0",
        "--device",
        "cuda",
        "--backend",
        "mlir-cpu",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out.stderr).contains("--device cuda always compiles for the GPU"));
}

/// A config OpenMythos runs that Mythos once rejected, from the CLI: export
/// the fixture's spec, import the JSON back (warning W0002: 5 heads of 14
/// over dim 72; 9 loop-embedding channels, odd), inspect it (the reference's
/// parameter count) and run it through the KV cache on both backends against
/// the reference's logits.
#[test]
fn config_with_uneven_heads_and_odd_loop_channels_imports_and_runs() {
    let dir = temp_dir("uneven-heads");
    let fx = "tests/fixtures/parity/gqa_uneven_heads_decode";
    let (cfg, spec) = (dir.join("cfg.json"), dir.join("uneven.mythos"));
    let (cfg_s, spec_s) = (cfg.to_str().unwrap(), spec.to_str().unwrap());
    let out = mythos(&["export", "openmythos", &format!("{fx}.mythos"), "-o", cfg_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let out = mythos(&["import", "openmythos", cfg_s, "-o", spec_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    assert!(err.contains("warning[W0002]"), "{err}");
    assert!(
        err.contains("dim // heads = 14 channels, 70 of 72"),
        "{err}"
    );
    let out = mythos(&["inspect", spec_s]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    // sum(p.numel()) of OpenMythos(cfg), tools/parity/count_params.py.
    assert!(
        text(&out.stdout).contains("139,338"),
        "{}",
        text(&out.stdout)
    );
    let io = format!("{fx}.io.safetensors");
    let want = read_logits(std::path::Path::new(&io));
    for backend in ["cpu", "mlir-cpu"] {
        let logits = dir.join(format!("{backend}.safetensors"));
        let out = mythos_env(
            &[
                "run",
                spec_s,
                "--weights",
                &format!("{fx}.weights.safetensors"),
                "--inputs",
                &io,
                "--decode-from",
                "4",
                "--backend",
                backend,
                "--dump-logits",
                logits.to_str().unwrap(),
            ],
            &[("MYTHOS_CACHE_DIR", &dir.join("cache"))],
        );
        assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
        let (err, max) = max_diff(&read_logits(&logits), &want);
        println!("{backend}: {:.2e} relative to OpenMythos", err / max);
        assert!(err <= 1e-4 * max, "{backend}: {err} vs max {max}");
    }
    std::fs::remove_dir_all(&dir).ok();
}
