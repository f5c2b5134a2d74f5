//! Every preset checks cleanly, and its checked model description is an insta
//! snapshot (`tests/snapshots/presets@NAME.snap`), so a change to the language
//! or the checker that alters a preset's meaning shows up in review.

use mythos_compiler::diag;
use mythos_compiler::presets::PRESETS;
use mythos_compiler::sema::{self, Loader};

#[test]
fn every_preset_checks_and_matches_its_snapshot() {
    for preset in PRESETS {
        let name = format!("@{}", preset.name);
        let mut loader = Loader::new();
        let checked = sema::check_file(&mut loader, &name);
        assert!(
            checked.diagnostics.is_empty(),
            "{name}:\n{}",
            diag::render(&loader.sources, &checked.diagnostics)
        );
        assert_eq!(checked.models.len(), 1, "{name} holds one model");
        insta::with_settings!({ snapshot_suffix => preset.name, prepend_module_to_snapshot => false }, {
            insta::assert_yaml_snapshot!("presets", checked.models[0]);
        });
    }
}

/// The embedded presets are the files of `models/` (nothing missing, nothing stale).
#[test]
fn embedded_presets_match_models_folder() {
    let mut on_disk: Vec<String> = std::fs::read_dir("models")
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "mythos"))
        .map(|p| p.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = PRESETS.iter().map(|p| p.name.to_string()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded);
    for p in PRESETS {
        let text = std::fs::read_to_string(format!("models/{}.mythos", p.name)).unwrap();
        assert_eq!(
            text, p.source,
            "models/{}.mythos differs from the embedded copy",
            p.name
        );
    }
}

/// The seven OpenMythos presets reproduce `open_mythos.variants` (open-mythos
/// 0.5.0) field by field; values copied from variants.py.
#[test]
fn openmythos_presets_reproduce_the_reference_configs() {
    use mythos_compiler::model::{AttentionKind, FfnKind, Halting, Injection};
    // (preset, dim, heads, kv_heads, max_seq, loops, prelude, coda, kv_rank, q_rank, rope, nope, v,
    //  experts, shared, top_k, expert_dim, lora, rope_theta, vocab, max_output_tokens)
    #[rustfmt::skip]
    let table: &[(&str, [u64; 18], f64, u64, u64)] = &[
        ("openmythos-1b",   [2048, 16, 4, 4096, 16, 2, 2, 256, 512, 32, 64, 64, 64, 2, 4, 2048, 8, 0], 500000.0, 32000, 4096),
        ("openmythos-3b",   [3072, 24, 6, 4096, 16, 2, 2, 384, 768, 32, 96, 96, 64, 2, 4, 4096, 8, 0], 500000.0, 32000, 4096),
        ("openmythos-10b",  [4096, 32, 8, 8192, 24, 2, 2, 512, 1024, 64, 128, 128, 128, 2, 4, 5632, 16, 0], 500000.0, 32000, 4096),
        ("openmythos-50b",  [6144, 48, 8, 8192, 32, 3, 3, 512, 1536, 64, 128, 128, 256, 4, 4, 9728, 32, 0], 500000.0, 32000, 4096),
        ("openmythos-100b", [8192, 64, 8, 1000000, 32, 4, 4, 512, 2048, 64, 128, 128, 256, 4, 8, 13568, 64, 0], 1000000.0, 32000, 131072),
        ("openmythos-500b", [12288, 96, 16, 1000000, 48, 4, 4, 1024, 3072, 64, 128, 128, 512, 8, 8, 23040, 128, 0], 1000000.0, 100000, 131072),
        ("openmythos-1t",   [16384, 128, 16, 1000000, 64, 6, 6, 1024, 4096, 64, 128, 128, 512, 8, 8, 34560, 256, 0], 2000000.0, 100000, 131072),
    ];
    for (name, v, rope_theta, vocab, max_out) in table {
        let mut loader = Loader::new();
        let checked = sema::check_file(&mut loader, &format!("@{name}"));
        let m = &checked.models[0];
        assert_eq!(
            (m.dim, m.max_seq, m.vocab, m.max_output_tokens),
            (v[0], v[3], *vocab, *max_out),
            "{name}"
        );
        assert_eq!(m.rope_theta, *rope_theta, "{name}");
        assert_eq!(
            (m.prelude.len() as u64, m.coda.len() as u64),
            (v[5], v[6]),
            "{name}"
        );
        let r = &m.recurrence;
        assert_eq!(
            (r.max_iters, r.lora_rank, r.body.len()),
            (v[4], v[16], 1),
            "{name}"
        );
        assert_eq!(r.inject, Injection::Lti);
        assert_eq!(r.halt, Halting::Act { threshold: 0.99 });
        assert_eq!(r.loop_embedding.map(|e| e.channels), Some(v[0] / 8));
        let expect_mla = AttentionKind::Mla {
            heads: v[1],
            kv_heads: Some(v[2]),
            kv_rank: v[7],
            q_rank: v[8],
            rope_dim: v[9],
            nope_dim: v[10],
            v_dim: v[11],
        };
        for b in m.prelude.iter().chain(&m.coda).chain(&r.body) {
            assert_eq!(b.attention.kind, expect_mla, "{name}");
        }
        for b in m.prelude.iter().chain(&m.coda) {
            assert_eq!(
                b.ffn.kind,
                FfnKind::Dense {
                    hidden: v[0] * 4 / 3
                },
                "{name}"
            );
        }
        let expect_moe = FfnKind::Moe {
            experts: v[12],
            shared: v[13],
            top_k: v[14],
            expert_dim: v[15],
            shared_dim: v[15] * v[14],
            router_bias: true,
        };
        assert_eq!(r.body[0].ffn.kind, expect_moe, "{name}");
    }
}
