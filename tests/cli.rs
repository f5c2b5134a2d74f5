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
    let out = mythos(&["check", "tests/ui/e0301-dim-not-divisible-by-heads.mythos"]);
    assert_eq!(out.status.code(), Some(1));
    let err = text(&out.stderr);
    assert!(err.contains("error[E0301]"), "{err}");
    assert!(
        err.contains("--> tests/ui/e0301-dim-not-divisible-by-heads.mythos:"),
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

#[test]
fn explain_and_presets_list() {
    let out = mythos(&["explain", "E0301"]);
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
        s.contains("loop[max_iters=4 inject=lti halt=act(0.99)]"),
        "{s}"
    );
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
    assert_eq!(o["before"]["per_decode_step"], 67);
    assert_eq!(o["after"]["per_decode_step"], 32);
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
    let max = la.iter().fold(0f32, |m, v| m.max(v.abs()));
    let err = la
        .iter()
        .zip(&lb)
        .fold(0f32, |m, (x, y)| m.max((x - y).abs()));
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
        "--json",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
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
