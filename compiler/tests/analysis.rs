//! Cost analysis from the IR: exact parameter counts against the PyTorch
//! reference, a hand-derived FLOP count, KV-cache and decode figures.

use mythos_compiler::analysis::{analyze, Options, Report, StorageType};
use mythos_compiler::ir::{self, lower::lower};
use mythos_compiler::sema::{self, Loader};
use mythos_compiler::{diag, model::Model};

/// Checks `source` (which may import presets as `@name`) and returns its last model.
fn model(source: &str) -> Model {
    let mut loader = Loader::in_memory();
    loader.add_virtual("test.mythos", source.as_bytes().to_vec());
    let checked = sema::check_file(&mut loader, "test.mythos");
    assert!(
        !checked.has_errors(),
        "{}",
        diag::render(&loader.sources, &checked.diagnostics)
    );
    checked.models.last().expect("a model").clone()
}

fn preset(name: &str) -> Model {
    model(&format!(
        "import \"@{name}\"\nmodel m extends {} {{}}\n",
        name.replace('-', "_")
    ))
}

fn report(m: &Model, opts: Options) -> Report {
    let module = lower(m);
    let errors = ir::verify::verify(&module);
    assert!(errors.is_empty(), "{errors:#?}");
    analyze(&module, &opts)
}

fn params(m: &Model) -> u64 {
    report(m, Options::default()).params.total
}

/// `sum(p.numel() for p in OpenMythos(cfg).parameters())` for each config, as
/// printed by `tools/parity/count_params.py` with open-mythos 0.5.0 and torch
/// 2.11.0 (models built on the meta device). The seven presets also match the
/// table in shared/openmythos-reference.md.
#[test]
fn parameter_counts_equal_the_pytorch_modules() {
    let presets = [
        ("openmythos-1b", 1_064_028_034u64),
        ("openmythos-3b", 3_041_725_186),
        ("openmythos-10b", 9_981_316_994),
        ("openmythos-50b", 50_374_247_426),
        ("openmythos-100b", 99_545_072_130),
        ("openmythos-500b", 497_849_137_154),
        ("openmythos-1t", 999_326_352_386),
        ("openmythos-1b-gqa", 1_091_221_634),
        ("tiny-mla", 121_314),
        ("tiny-gqa", 124_242),
    ];
    for (name, expected) in presets {
        assert_eq!(params(&preset(name)), expected, "{name}");
    }
    let base = "import \"@openmythos-1b\"\n";
    let variants = [
        (
            "model m extends openmythos_1b { ffn moe { shared = 0 } }",
            963_364_738u64,
        ),
        (
            "model m extends openmythos_1b { ffn moe { top_k = 1 } }",
            988_530_562,
        ),
        (
            "model m extends openmythos_1b { loop { lora { rank = 0 } } }",
            1_063_995_138,
        ),
        (
            "model m extends openmythos_1b { loop { lora none } }",
            1_063_995_138,
        ),
        (
            "model m extends openmythos_1b { loop { loop_embedding none } }",
            1_064_028_034,
        ),
    ];
    for (spec, expected) in variants {
        assert_eq!(params(&model(&format!("{base}{spec}"))), expected, "{spec}");
    }
    // 3b with GQA, 2 KV heads, top-2, LoRA rank 4, one shared expert.
    let mix = "import \"@openmythos-3b\"\nmodel m extends openmythos_3b {\n\
               attention gqa { heads = 24, kv_heads = 2 }\n\
               ffn moe { experts = 64, shared = 1, top_k = 2, expert_dim = 4096 }\n\
               loop { lora { rank = 4 } }\n}";
    assert_eq!(params(&model(mix)), 2_843_219_010);
    // What OpenMythos runs and Mythos once rejected: an odd loop-embedding
    // width (2056 // 8 = 257), q/k/v narrower than `dim` (5 heads of 72 // 5 =
    // 14), and dim < 8 (no loop-embedding channels).
    let runs_in_the_reference = [
        (
            "import \"@openmythos-1b\"\nmodel m extends openmythos_1b { dim = 2056 }",
            1_068_430_170u64,
        ),
        (
            "import \"@tiny-gqa\"\nmodel m extends tiny_gqa {\n\
             dim = 72\nattention gqa { heads = 5, kv_heads = 1 }\n}",
            139_338,
        ),
        (
            "import \"@tiny-gqa\"\nmodel m extends tiny_gqa {\n\
             dim = 4\nattention gqa { heads = 2, kv_heads = 1 }\n}",
            3_702,
        ),
    ];
    for (spec, expected) in runs_in_the_reference {
        assert_eq!(params(&model(spec)), expected, "{spec}");
    }
}

#[test]
fn active_parameters_count_top_k_routed_experts() {
    let r = report(&preset("openmythos-1b"), Options::default());
    // Routed experts: 64 x 3 x 2048 x 2048 = 805,306,368 of which 4/64 are active.
    let routed = 64u64 * 3 * 2048 * 2048;
    assert_eq!(
        r.params.total - r.params.active_per_token,
        routed - routed / 64 * 4
    );
    assert_eq!(r.params.buffers, 64, "router_bias is a buffer");
    let sum: u64 = r.params.by_component.values().sum();
    assert_eq!(sum, r.params.total);
}

/// tiny-gqa: dim 64, 4 heads of 16, 2 KV heads, vocab 256, dense hidden 85,
/// MoE 4 experts top-2 of 32 + 1 shared of 64, LoRA 4, 1 + loop + 1 blocks.
/// At S = 8 and 4 loops, per token (2 FLOPs per multiply-add):
///   attention projections  wq 2*64*64 + wk 2*64*32 + wv 2*64*32 + wo 2*64*64 = 24,576
///   scores + values        4 * 64 per key: prefill (8+1)/2 keys = 1,152; decode 8 keys = 2,048
///   dense SwiGLU           3 * 2*64*85 = 32,640
///   MoE                    router 2*64*4 + 2 * 6*64*32 + 1 * 6*64*64 = 49,664
///   LoRA 4*64*4 = 1,024;   ACT halt 2*64 = 128;   head 2*64*256 = 32,768
///   prefill: 2 * (24,576 + 1,152 + 32,640) + 4 * (24,576 + 1,152 + 49,664 + 1,024 + 128) + 32,768 = 455,680
///   decode:  2 * (24,576 + 2,048 + 32,640) + 4 * (24,576 + 2,048 + 49,664 + 1,024 + 128) + 32,768 = 461,056
#[test]
fn flops_match_a_hand_derivation() {
    let opts = Options {
        seq: 8,
        loops: None,
        dtype: StorageType::F32,
        bandwidth: 1e12,
    };
    let r = report(&preset("tiny-gqa"), opts);
    assert_eq!(r.loops, 4);
    assert_eq!(r.flops.prefill_per_token, 455_680.0);
    assert_eq!(r.flops.decode_per_token, 461_056.0);
    assert_eq!(r.flops.prefill_total, 455_680.0 * 8.0);
    // Twice the loops: the loop's share doubles, the rest stays.
    let r8 = report(
        &preset("tiny-gqa"),
        Options {
            loops: Some(8),
            ..opts
        },
    );
    assert_eq!(r8.flops.prefill_per_token, 455_680.0 + 4.0 * 76_544.0);
}

#[test]
fn kv_cache_reference_and_compact_layouts() {
    let opts = Options {
        seq: 100,
        loops: None,
        dtype: StorageType::F32,
        bandwidth: 1e12,
    };
    // GQA: 2 (k, v) x 2 KV heads x 16 per entry; 1 prelude + 4 loops + 1 coda entries.
    let gqa = report(&preset("tiny-gqa"), opts).kv_cache;
    assert_eq!(gqa.entries, 6);
    assert_eq!(gqa.bytes_per_token, 6 * 64 * 4);
    assert_eq!(gqa.compact_bytes_per_token, gqa.bytes_per_token);
    assert_eq!(gqa.compact_bytes_at_seq, 6 * 64 * 4 * 100);
    // MLA: c_kv (16) + rope key per head (4 x 8) vs once (8).
    let mla = report(&preset("tiny-mla"), opts).kv_cache;
    assert_eq!(mla.bytes_per_token, 6 * (16 + 4 * 8) * 4);
    assert_eq!(mla.compact_bytes_per_token, 6 * (16 + 8) * 4);
    // Loops beyond max add cache entries.
    let deeper = report(
        &preset("tiny-mla"),
        Options {
            loops: Some(10),
            ..opts
        },
    )
    .kv_cache;
    assert_eq!(deeper.entries, 12);
}

#[test]
fn decode_reads_loop_weights_per_iteration_and_active_experts_only() {
    let one = Options {
        seq: 1,
        loops: Some(1),
        dtype: StorageType::Bf16,
        bandwidth: 2e12,
    };
    // A dense model at one loop reads every weight once, plus the embedding row
    // (the tied table is read in full by the head).
    let m = preset("tiny-huginn");
    let r = report(&m, one);
    assert_eq!(
        r.decode.weight_bytes_per_token,
        (r.params.total + m.dim) * 2
    );
    let loop_params: u64 = r
        .params
        .by_component
        .iter()
        .filter(|(k, _)| k.starts_with("loop"))
        .map(|(_, v)| v)
        .sum();
    let r3 = report(
        &m,
        Options {
            loops: Some(3),
            ..one
        },
    );
    assert_eq!(
        r3.decode.weight_bytes_per_token,
        r.decode.weight_bytes_per_token + 2 * loop_params * 2
    );
    let read = (r3.decode.weight_bytes_per_token + r3.decode.kv_bytes_per_token) as f64;
    assert_eq!(r3.decode.tokens_per_s_ceiling, 2e12 / read);
    // MoE: per iteration only top-k of the routed experts are read.
    let moe = report(
        &preset("openmythos-1b"),
        Options {
            loops: Some(1),
            ..one
        },
    );
    let routed = 64u64 * 3 * 2048 * 2048;
    let expected = (moe.params.total + 64 + 2048 - routed + routed / 16) * 2;
    assert_eq!(moe.decode.weight_bytes_per_token, expected);
}

#[test]
fn weight_memory_by_storage_type() {
    let r = report(&preset("openmythos-1b"), Options::default());
    let all = 1_064_028_034u64 + 64;
    assert_eq!(
        (
            r.weights.bytes_f32,
            r.weights.bytes_bf16,
            r.weights.bytes_fp8
        ),
        (all * 4, all * 2, all)
    );
    assert_eq!(r.weights.bytes, all * 2, "default storage is bf16");
}
