//! OpenMythos `MythosConfig` JSON import and export.
//!
//! The fixtures under `tests/fixtures/openmythos/` are what Python writes for
//! `json.dumps(dataclasses.asdict(config), indent=2)` (plus a newline): the
//! seven presets of `open_mythos/variants.py` (`mythos_*.json`, every field the
//! preset leaves out at its dataclass default) and three made-up configs
//! (`gqa_small.json`, `gqa_mla_fields.json`, `edge_floats.json`).

use mythos_compiler::diag::{render, Code, Diagnostic, Severity};
use mythos_compiler::interop::openmythos::{export, import, Imported};
use mythos_compiler::model::Model;
use mythos_compiler::sema::{self, Loader};
use mythos_compiler::SourceMap;

const PRESETS: [&str; 7] = [
    "mythos_1b",
    "mythos_3b",
    "mythos_10b",
    "mythos_50b",
    "mythos_100b",
    "mythos_500b",
    "mythos_1t",
];

fn fixture(name: &str) -> String {
    let path = format!(
        "{}/tests/fixtures/openmythos/{name}.json",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// Checks a spec on its own, as a user's `mythos check` would.
fn check_spec(spec: &str) -> Model {
    let mut loader = Loader::in_memory();
    loader.add_virtual("imported.mythos", spec.as_bytes().to_vec());
    let checked = sema::check_file(&mut loader, "imported.mythos");
    assert!(
        !checked.has_errors(),
        "{}\n{spec}",
        render(&loader.sources, &checked.diagnostics)
    );
    assert_eq!(checked.models.len(), 1);
    checked.models[0].clone()
}

fn import_ok(name: &str, json: &str) -> Imported {
    let mut sources = SourceMap::new();
    match import(&mut sources, &format!("{name}.json"), json, name) {
        Ok(imported) => imported,
        Err(diags) => panic!("{}", render(&sources, &diags)),
    }
}

/// Imports text that must fail; gives the diagnostics and their rendering.
fn import_err(json: &str) -> (Vec<Diagnostic>, String) {
    let mut sources = SourceMap::new();
    match import(&mut sources, "cfg.json", json, "cfg") {
        Ok(imported) => panic!("import succeeded:\n{}", imported.spec),
        Err(diags) => {
            let text = render(&sources, &diags);
            for d in &diags {
                assert!(!d.labels.is_empty(), "no label: {d:?}");
                assert!(!d.help.is_empty(), "no help: {d:?}");
            }
            (diags, text)
        }
    }
}

fn codes(diags: &[Diagnostic]) -> Vec<&'static str> {
    diags.iter().map(|d| d.code.as_str()).collect()
}

/// The 1B fixture with one field's value text replaced (`None`: removed).
fn edited(field: &str, value: Option<&str>) -> String {
    let mut out = Vec::new();
    for line in fixture("mythos_1b").lines() {
        match (
            line.trim_start().starts_with(&format!("\"{field}\":")),
            value,
        ) {
            (false, _) => out.push(line.to_string()),
            (true, Some(v)) => {
                let comma = if line.ends_with(',') { "," } else { "" };
                out.push(format!("  \"{field}\": {v}{comma}"));
            }
            (true, None) => {}
        }
    }
    let mut text = out.join("\n") + "\n";
    if value.is_none() && field == "dropout" {
        text = text.replace("4096,\n}", "4096\n}");
    }
    text
}

fn round_trip(name: &str) -> Imported {
    let json = fixture(name);
    let imported = import_ok(name, &json);
    let model = check_spec(&imported.spec);
    assert_eq!(model.name, name);
    let exported = export(&model).unwrap_or_else(|d| panic!("{d:?}"));
    assert_eq!(
        exported, json,
        "{name}: export differs; spec:\n{}",
        imported.spec
    );
    imported
}

#[test]
fn presets_round_trip_exactly() {
    for name in PRESETS {
        let imported = round_trip(name);
        assert!(
            imported.warnings.is_empty(),
            "{name}: {:?}",
            imported.warnings
        );
    }
}

#[test]
fn gqa_and_edge_configs_round_trip_exactly() {
    let imported = round_trip("gqa_small");
    assert!(imported.warnings.is_empty());
    assert!(imported
        .spec
        .contains("attention gqa { heads = 8, kv_heads = 2 }"));
    assert!(imported
        .spec
        .contains("prelude 1 x block(attention, dense)"));
    assert!(!imported.spec.contains("coda"), "{}", imported.spec);
    assert!(imported.spec.contains("lora { rank = 0 }"));

    let imported = round_trip("edge_floats");
    assert!(
        imported.spec.contains("rope_theta = 1e+16"),
        "{}",
        imported.spec
    );
    assert!(imported.spec.contains("threshold = 1e-05"));
    assert!(imported.spec.contains("dropout = 0.0001"));
    assert!(!imported.spec.contains("prelude"));
    assert!(
        !imported.spec.contains("ffn dense"),
        "unused dense FFN written"
    );
}

/// Configs OpenMythos runs that Mythos once rejected import, check and export
/// back to the same JSON: an odd loop-embedding width (2056 // 8 = 257),
/// `dim % n_heads != 0` (warning W0002), dim < 8 (no loop-embedding
/// channels), a threshold above 1 (warning W0003) and `dropout = 1.0`.
#[test]
fn configs_the_reference_runs_import_and_round_trip() {
    // (fixture, text replacements, the warnings expected)
    type Case = (
        &'static str,
        &'static [(&'static str, &'static str)],
        &'static [&'static str],
    );
    let cases: [Case; 5] = [
        ("mythos_1b", &[("\"dim\": 2048", "\"dim\": 2056")], &[]),
        ("gqa_small", &[("\"dim\": 256", "\"dim\": 258")], &["W0002"]),
        (
            "gqa_small",
            &[
                ("\"dim\": 256", "\"dim\": 4"),
                ("\"n_heads\": 8", "\"n_heads\": 2"),
                ("\"n_kv_heads\": 2", "\"n_kv_heads\": 1"),
            ],
            &[],
        ),
        (
            "mythos_1b",
            &[("\"act_threshold\": 0.99", "\"act_threshold\": 1.5")],
            &["W0003"],
        ),
        (
            "gqa_small",
            &[("\"dropout\": 0.1", "\"dropout\": 1.0")],
            &[],
        ),
    ];
    for (base, edits, warnings) in cases {
        let mut json = fixture(base);
        for (from, to) in edits {
            assert!(json.contains(from), "{base}: {from}");
            json = json.replace(from, to);
        }
        let imported = import_ok("cfg", &json);
        assert_eq!(codes(&imported.warnings), warnings, "{edits:?}");
        let mut loader = Loader::in_memory();
        loader.add_virtual("imported.mythos", imported.spec.as_bytes().to_vec());
        let checked = sema::check_file(&mut loader, "imported.mythos");
        assert_eq!(codes(&checked.diagnostics), warnings, "{edits:?}");
        let exported = export(&checked.models[0]).unwrap_or_else(|d| panic!("{d:?}"));
        assert_eq!(exported, json, "{edits:?}: spec\n{}", imported.spec);
    }
}

#[test]
fn imported_1b_is_the_shipped_spec() {
    let imported = import_ok("openmythos_1b", &fixture("mythos_1b"));
    assert!(imported
        .spec
        .starts_with("# Imported from openmythos_1b.json (OpenMythos MythosConfig).\n"));
    let strip = |s: &str| -> String {
        s.lines()
            .filter(|l| !l.trim_start().starts_with('#'))
            .map(|l| format!("{l}\n"))
            .collect()
    };
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/openmythos-1b.mythos"
    ))
    .unwrap();
    assert_eq!(strip(&imported.spec), strip(&shipped));
}

#[test]
fn exporting_the_shipped_1b_spec_gives_the_1b_config() {
    let mut loader = Loader::new();
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/openmythos-1b.mythos"
    );
    let checked = sema::check_file(&mut loader, path);
    assert!(
        !checked.has_errors(),
        "{}",
        render(&loader.sources, &checked.diagnostics)
    );
    let model = sema::select(&checked, None, path).unwrap();
    assert_eq!(export(model).unwrap(), fixture("mythos_1b"));
}

#[test]
fn model_names_become_spec_names() {
    let imported = import_ok("x", &fixture("mythos_1b"));
    let mut sources = SourceMap::new();
    let renamed = import(
        &mut sources,
        "c.json",
        &fixture("mythos_1b"),
        "openmythos-1b",
    )
    .unwrap_or_else(|_| panic!("import failed"));
    assert!(renamed.spec.contains("model openmythos_1b {"));
    assert_eq!(
        check_spec(&renamed.spec),
        Model {
            name: "openmythos_1b".to_string(),
            span: check_spec(&renamed.spec).span,
            ..check_spec(&imported.spec)
        }
    );
}

#[test]
fn gqa_with_mla_fields_warns_and_exports_defaults() {
    let json = fixture("gqa_mla_fields");
    let imported = import_ok("gqa_mla_fields", &json);
    assert_eq!(imported.warnings.len(), 1, "{:?}", imported.warnings);
    let w = &imported.warnings[0];
    assert_eq!(w.severity, Severity::Warning);
    assert_eq!(w.code, Code::BadConfigField);
    // kv_lora_rank 256, q_lora_rank 512, qk_rope_head_dim 32, qk_nope_head_dim 64, v_head_dim 64.
    assert_eq!(w.labels.iter().filter(|l| l.primary).count(), 5);
    assert!(w.message.contains("ignored by GQA"), "{}", w.message);

    let model = check_spec(&imported.spec);
    let expected = json
        .replace("\"kv_lora_rank\": 256", "\"kv_lora_rank\": 512")
        .replace("\"q_lora_rank\": 512", "\"q_lora_rank\": 1536")
        .replace("\"qk_rope_head_dim\": 32", "\"qk_rope_head_dim\": 64")
        .replace("\"qk_nope_head_dim\": 64", "\"qk_nope_head_dim\": 128")
        .replace("\"v_head_dim\": 64", "\"v_head_dim\": 128");
    assert_eq!(export(&model).unwrap(), expected);

    // The defaults themselves are not worth a warning.
    let imported = import_ok("again", &expected);
    assert!(imported.warnings.is_empty());
}

#[test]
fn ints_are_accepted_for_floats() {
    let imported = import_ok("c", &edited("act_threshold", Some("1")));
    let exported = export(&check_spec(&imported.spec)).unwrap();
    assert_eq!(exported, edited("act_threshold", Some("1.0")));
    // Any key order is read; export writes the dataclass order.
    let json = fixture("mythos_1b");
    let mut lines: Vec<&str> = json.lines().collect();
    let (first, last) = (lines.remove(0), lines.pop().unwrap());
    let mut body: Vec<String> = lines
        .iter()
        .map(|l| l.trim_end_matches(',').to_string())
        .collect();
    body.reverse();
    let shuffled = format!("{first}\n{}\n{last}", body.join(",\n"));
    let imported = import_ok("c", &shuffled);
    assert_eq!(export(&check_spec(&imported.spec)).unwrap(), json);
}

// ------------------------------------------------------------------ errors

#[test]
fn invalid_json_points_at_the_byte() {
    let (diags, text) = import_err("{\n  \"dim\": 20x48,\n  \"n_heads\": 16\n}\n");
    assert_eq!(codes(&diags), ["E0401"]);
    assert!(text.contains("cfg.json:2:12"), "{text}");
    assert_eq!(diags[0].labels[0].span.start, 13);

    // serde_json counts bytes; the label is at the byte, rendered columns count characters.
    let (diags, text) = import_err("{\"é\": 1, \"ü\": x}");
    assert_eq!(codes(&diags), ["E0401"]);
    assert_eq!(
        diags[0].labels[0].span.start as usize,
        "{\"é\": 1, \"ü\": ".len()
    );
    assert!(text.contains("cfg.json:1:15"), "{text}");

    let (diags, text) = import_err("{\n  \"dim\": 2048,\n}");
    assert_eq!(codes(&diags), ["E0401"]);
    assert!(text.contains("trailing comma"), "{text}");
    assert!(text.contains("cfg.json:2:14"), "at the comma: {text}");

    let (diags, text) = import_err("{\n  \"dim\": 2048\n");
    assert_eq!(codes(&diags), ["E0401"]);
    assert!(text.contains("cfg.json:3:1"), "{text}");
    assert!(text.contains("closing `}` missing"), "{text}");

    let (diags, text) = import_err("{\"dim\": NaN}");
    assert_eq!(codes(&diags), ["E0401"]);
    assert!(text.contains("NaN or Infinity"), "{text}");

    let (diags, text) = import_err("{'dim': 2048}");
    assert_eq!(codes(&diags), ["E0401"]);
    assert!(text.contains("cfg.json:1:2"), "{text}");
}

#[test]
fn top_level_must_be_an_object() {
    let (diags, text) = import_err("  [1, 2]\n");
    assert_eq!(codes(&diags), ["E0402"]);
    assert!(text.contains("cfg.json:1:3"), "{text}");
    assert!(text.contains("found an array"), "{text}");
}

#[test]
fn missing_field_points_at_the_object() {
    let (diags, text) = import_err(&edited("lora_rank", None));
    assert_eq!(codes(&diags), ["E0402"]);
    assert!(diags[0].message.contains("`lora_rank` is missing"));
    assert!(text.contains("cfg.json:1:1"), "{text}");
    assert!(
        text.contains("\"lora_rank\": 16"),
        "help gives the default: {text}"
    );

    let (diags, _) = import_err("{}");
    assert_eq!(diags.len(), 23);
    assert!(diags.iter().all(|d| d.code == Code::BadConfigField));
}

#[test]
fn wrong_types_point_at_the_value() {
    let (diags, text) = import_err(&edited("dim", Some("\"2048\"")));
    assert_eq!(codes(&diags), ["E0402"]);
    assert!(diags[0]
        .message
        .contains("`dim` must be an integer, found a string"));
    assert!(text.contains("cfg.json:3:10"), "{text}");
    assert!(text.contains("remove the quotes"), "{text}");

    let (diags, text) = import_err(&edited("n_heads", Some("16.0")));
    assert_eq!(codes(&diags), ["E0402"]);
    assert!(text.contains("cfg.json:4:14"), "{text}");
    assert!(text.contains("`16`"), "{text}");

    let (diags, _) = import_err(&edited("dropout", Some("null")));
    assert_eq!(codes(&diags), ["E0402"]);
    let (diags, _) = import_err(&edited("expert_dim", Some("[2048]")));
    assert_eq!(codes(&diags), ["E0402"]);
    assert!(diags[0].message.contains("found an array"));
    let (diags, _) = import_err(&edited("rope_theta", Some("{\"x\": 1}")));
    assert_eq!(codes(&diags), ["E0402"]);
    let (diags, _) = import_err(&edited("lora_rank", Some("true")));
    assert_eq!(codes(&diags), ["E0402"]);
    let (diags, _) = import_err(&edited("vocab_size", Some("99999999999999999999")));
    assert_eq!(codes(&diags), ["E0204"]);

    let (diags, text) = import_err(&edited("attn_type", Some("\"mlaa\"")));
    assert_eq!(codes(&diags), ["E0402"]);
    assert!(text.contains("did you mean `mla`?"), "{text}");
}

#[test]
fn all_problems_are_reported_at_once() {
    let json = edited("n_heads", None)
        .replace("\"n_kv_heads\"", "\"n_head\": 16,\n  \"n_kv_heads\"")
        .replace("\"dim\": 2048", "\"dim\": 2048.5")
        .replace("\"act_threshold\": 0.99", "\"act_threshold\": \"high\"");
    let (diags, text) = import_err(&json);
    assert_eq!(codes(&diags), ["E0402"; 4], "{text}");
    assert!(
        text.contains("`n_head` is not a MythosConfig field"),
        "{text}"
    );
    assert!(text.contains("did you mean `n_heads`?"), "{text}");
    assert!(text.contains("cfg.json:4:3"), "the unknown key: {text}");
    assert!(text.contains("`n_heads` is missing"), "{text}");
    assert!(text.contains("`dim` must be an integer"), "{text}");
    assert!(text.contains("`act_threshold` must be a number"), "{text}");

    let (diags, text) =
        import_err(&json.replacen("\"dim\": 2048.5,", "\"dim\": 2048.5,\n  \"dim\": 1,", 1));
    assert!(text.contains("`dim` is given twice"), "{text}");
    assert_eq!(diags.len(), 5);
}

#[test]
fn checker_errors_point_at_the_config_values() {
    // GQA with 16 heads over 8 channels: a head dimension of 0.
    let json = fixture("gqa_small")
        .replace("\"dim\": 256", "\"dim\": 8")
        .replace("\"n_heads\": 8", "\"n_heads\": 16");
    let (diags, text) = import_err(&json);
    assert_eq!(codes(&diags), ["E0301"], "{text}");
    assert!(text.contains("cfg.json:4:14"), "at n_heads: {text}");
    assert!(
        text.contains("3 |   \"dim\": 8,"),
        "secondary at dim: {text}"
    );
    assert!(text.contains("- `dim` is 8"), "secondary at dim: {text}");
    assert!(text.contains("config's `n_heads`"), "{text}");
    assert!(!text.contains("imported.mythos"), "{text}");

    // Several at once: range, RoPE, top_k, threshold.
    let json = fixture("mythos_1b")
        .replace("\"vocab_size\": 32000", "\"vocab_size\": 0")
        .replace("\"qk_rope_head_dim\": 32", "\"qk_rope_head_dim\": 33")
        .replace("\"n_experts_per_tok\": 4", "\"n_experts_per_tok\": 65")
        .replace("\"act_threshold\": 0.99", "\"act_threshold\": 1.5");
    let (diags, text) = import_err(&json);
    assert_eq!(
        codes(&diags),
        ["E0204", "E0303", "E0304", "W0003"],
        "{text}"
    );
    assert!(text.contains("cfg.json:2:17"), "{text}");
    assert!(text.contains("cfg.json:13:23"), "{text}");

    // Layer counts are checked before the spec is written.
    let (diags, text) = import_err(&edited("coda_layers", Some("-1")));
    assert_eq!(codes(&diags), ["E0204"]);
    assert!(text.contains("cfg.json:9:18"), "{text}");

    // An error about a field that is missing is not reported twice.
    let json = fixture("gqa_small")
        .replace("  \"dim\": 256,\n", "")
        .replace("\"n_heads\": 8", "\"n_heads\": 6");
    let (diags, text) = import_err(&json);
    assert_eq!(codes(&diags), ["E0402"], "{text}");
}

#[test]
fn export_rejects_models_openmythos_cannot_build() {
    let spec = "model huginn {\n  vocab = 32000\n  dim = 512\n  max_seq = 1024\n  attention gqa { heads = 8, kv_heads = 2 }\n  ffn moe { experts = 8, top_k = 2, expert_dim = 256 }\n  loop max 4 {\n    block(attention, moe)\n    inject concat\n    halt act { threshold = 0.99 }\n    loop_embedding { channels = dim // 8 }\n  }\n}\n";
    let mut loader = Loader::in_memory();
    loader.add_virtual("huginn.mythos", spec.as_bytes().to_vec());
    let checked = sema::check_file(&mut loader, "huginn.mythos");
    assert!(
        !checked.has_errors(),
        "{}",
        render(&loader.sources, &checked.diagnostics)
    );
    let diags = export(&checked.models[0]).unwrap_err();
    assert_eq!(codes(&diags), ["E0403"]);
    assert!(
        diags[0].message.contains("inject concat"),
        "{}",
        diags[0].message
    );
    let text = render(&loader.sources, &diags);
    assert!(text.contains("huginn.mythos:1:7"), "{text}");
    assert!(text.contains("help: write `inject lti`"), "{text}");

    // Every reason is its own diagnostic.
    let spec = "model odd {\n  vocab = 100\n  dim = 64\n  max_seq = 128\n  norm_eps = 1e-5\n  tie_embeddings = false\n  attention mha { heads = 4 }\n  attention gqa as other { heads = 4, kv_heads = 2 }\n  ffn dense { hidden = 100 }\n  ffn moe { experts = 4, top_k = 2, expert_dim = 32, shared_dim = 16, router_bias = false }\n  prelude block(attention, moe)\n  loop max 2 {\n    block(other, dense)\n    block(attention, dense)\n  }\n  coda block(attention, dense)\n}\n";
    let mut loader = Loader::in_memory();
    loader.add_virtual("odd.mythos", spec.as_bytes().to_vec());
    let checked = sema::check_file(&mut loader, "odd.mythos");
    assert!(
        !checked.has_errors(),
        "{}",
        render(&loader.sources, &checked.diagnostics)
    );
    let diags = export(&checked.models[0]).unwrap_err();
    let text = render(&loader.sources, &diags);
    // attentions differ, MHA, prelude MoE, coda hidden, 2 loop blocks, dense loop
    // block, no lti, no halt, no loop embedding, untied, norm_eps.
    assert_eq!(diags.len(), 11, "{text}");
    assert!(diags
        .iter()
        .all(|d| d.code == Code::NotExportable && d.help.len() == 1));
    assert!(text.contains("odd.mythos:1:7"), "{text}");

    // An MoE block with OpenMythos's shape except for the shared experts and router.
    let spec = fixture_spec_with("ffn moe { experts = 64, shared = 2, top_k = 4, expert_dim = 2048 }", "ffn moe { experts = 64, shared = 2, top_k = 4, expert_dim = 2048, shared_dim = 4096, router_bias = false }");
    let mut loader = Loader::in_memory();
    loader.add_virtual("m.mythos", spec.into_bytes());
    let checked = sema::check_file(&mut loader, "m.mythos");
    let diags = export(&checked.models[0]).unwrap_err();
    assert_eq!(diags.len(), 2, "{}", render(&loader.sources, &diags));
}

/// The shipped 1B spec with one piece of text replaced.
fn fixture_spec_with(from: &str, to: &str) -> String {
    let shipped = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../models/openmythos-1b.mythos"
    ))
    .unwrap();
    assert!(shipped.contains(from));
    shipped.replace(from, to)
}

#[test]
fn odd_values_never_panic_and_always_point_into_the_config() {
    const FIELDS: [&str; 23] = [
        "vocab_size",
        "dim",
        "n_heads",
        "n_kv_heads",
        "max_seq_len",
        "max_loop_iters",
        "prelude_layers",
        "coda_layers",
        "attn_type",
        "kv_lora_rank",
        "q_lora_rank",
        "qk_rope_head_dim",
        "qk_nope_head_dim",
        "v_head_dim",
        "n_experts",
        "n_shared_experts",
        "n_experts_per_tok",
        "expert_dim",
        "act_threshold",
        "rope_theta",
        "lora_rank",
        "max_output_tokens",
        "dropout",
    ];
    const VALUES: [&str; 16] = [
        "-1",
        "0",
        "1",
        "3",
        "-9223372036854775808",
        "9223372036854775807",
        "1e308",
        "-0.0",
        "0.5",
        "\"x\"",
        "\"gqa\"",
        "null",
        "[]",
        "{}",
        "true",
        "1E-3",
    ];
    for field in FIELDS {
        for value in VALUES {
            let json = edited(field, Some(value));
            let mut sources = SourceMap::new();
            match import(&mut sources, "cfg.json", &json, "cfg") {
                Ok(imported) => {
                    let model = check_spec(&imported.spec);
                    export(&model).unwrap_or_else(|d| panic!("{field} = {value}: {d:?}"));
                }
                Err(diags) => {
                    assert!(diags.iter().any(|d| d.is_error()));
                    let text = render(&sources, &diags);
                    assert!(
                        !text.contains("imported.mythos"),
                        "{field} = {value}:\n{text}"
                    );
                    for d in &diags {
                        assert!(!d.labels.is_empty() && !d.help.is_empty(), "{d:?}");
                    }
                }
            }
        }
    }
    let json = fixture("mythos_1b");
    for end in 0..json.trim_end().len() {
        let (diags, _) = import_err(&json[..end]);
        assert_eq!(codes(&diags), ["E0401"]);
    }
}
