//! Weights: seeded init, safetensors save/load with OpenMythos names, and the
//! errors a wrong or damaged file gives.

use mythos_compiler::ir::{Graph, Init, Module, Weight, WeightId};
use mythos_compiler::sema::{check_file, Loader};
use mythos_runtime::weights::{Weights, WeightsError};
use safetensors::{Dtype, SafeTensors, View};
use std::borrow::Cow;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// The IR module of a preset (`@tiny-mla`).
fn module(preset: &str) -> Module {
    let mut loader = Loader::new();
    let checked = check_file(&mut loader, preset);
    assert!(!checked.has_errors(), "{preset} does not check");
    mythos_compiler::ir::lower::lower(&checked.models[0])
}

/// A fresh path in cargo's per-test-target scratch directory.
fn tmp(stem: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    Path::new(env!("CARGO_TARGET_TMPDIR")).join(format!(
        "weights-{}-{n}-{stem}.safetensors",
        std::process::id()
    ))
}

fn id(m: &Module, name: &str) -> WeightId {
    let i = m
        .weights
        .iter()
        .position(|w| w.name == name)
        .unwrap_or_else(|| panic!("no weight {name}"));
    WeightId(i as u32)
}

fn bits(w: &Weights) -> Vec<Vec<u32>> {
    w.tensors()
        .iter()
        .map(|t| t.data.iter().map(|x| x.to_bits()).collect())
        .collect()
}

/// A tensor of any dtype, for writing files by hand.
#[derive(Clone)]
struct Raw {
    dtype: Dtype,
    shape: Vec<usize>,
    bytes: Vec<u8>,
}

impl Raw {
    fn f32(shape: &[usize], values: &[f32]) -> Raw {
        Raw {
            dtype: Dtype::F32,
            shape: shape.to_vec(),
            bytes: values.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }
}

impl View for Raw {
    fn dtype(&self) -> Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// The tensors of a file, sorted by name.
fn read_raw(path: &Path) -> Vec<(String, Raw)> {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let mut out: Vec<(String, Raw)> = st
        .iter()
        .map(|(n, v)| {
            (
                n.to_string(),
                Raw {
                    dtype: v.dtype(),
                    shape: v.shape().to_vec(),
                    bytes: v.data().to_vec(),
                },
            )
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

fn write_raw(path: &Path, tensors: Vec<(String, Raw)>) {
    safetensors::serialize_to_file(tensors, None, path).unwrap();
}

/// Saved weights of `m` as raw tensors, to edit into broken files.
fn saved_raw(m: &Module, seed: u64) -> (Weights, Vec<(String, Raw)>) {
    let w = Weights::init(m, seed);
    let p = tmp("base");
    w.save(m, &p).unwrap();
    let raw = read_raw(&p);
    let _ = std::fs::remove_file(&p);
    (w, raw)
}

fn one_weight_module(weights: Vec<Weight>) -> Module {
    Module {
        name: "synthetic".into(),
        dim: 1,
        vocab: 1,
        max_seq: 1,
        weights,
        graph: Graph::default(),
        gradients: Vec::new(),
    }
}

fn weight(name: &str, shape: Vec<u64>, init: Init) -> Weight {
    Weight {
        name: name.into(),
        shape,
        init,
        buffer: false,
        stacked: None,
        component: "test".into(),
    }
}

// ---------------------------------------------------------------- init

#[test]
fn init_is_deterministic_per_seed() {
    let m = module("@tiny-mla");
    let a = Weights::init(&m, 7);
    let b = Weights::init(&m, 7);
    assert_eq!(bits(&a), bits(&b), "same seed, same bits");
    assert_eq!(a.len(), m.weights.len());
    let c = Weights::init(&m, 8);
    let embed = id(&m, "embed.weight");
    assert_ne!(a.get(embed).data, c.get(embed).data, "another seed differs");
    // Every random weight gets its own stream: no two equal tensors.
    let q = id(&m, "prelude.0.attn.q_down.weight");
    let k = id(&m, "coda.0.attn.q_down.weight");
    assert_ne!(a.get(q).data, a.get(k).data);
    for (w, t) in m.weights.iter().zip(a.tensors()) {
        let want: Vec<usize> = w.shape.iter().map(|&d| d as usize).collect();
        assert_eq!(t.shape, want, "{}", w.name);
    }
}

#[test]
fn const_inits_are_exact() {
    let m = module("@tiny-mla");
    let w = Weights::init(&m, 1);
    let all = |name: &str, v: f32| {
        let t = w.get(id(&m, name));
        assert!(t.data.iter().all(|&x| x == v), "{name} should be all {v}");
    };
    all("recurrent.injection.B", 0.1);
    all("recurrent.injection.log_A", 0.0);
    all("recurrent.injection.log_dt", 0.0);
    all("norm.weight", 1.0);
    all("prelude.0.attn.q_norm.weight", 1.0);
    all("recurrent.block.ffn.router_bias", 0.0);
}

#[test]
fn normal_init_has_the_requested_std() {
    let m = module("@tiny-gqa");
    let w = Weights::init(&m, 3);
    let t = w.get(id(&m, "embed.weight"));
    let n = t.numel() as f64;
    assert!(n > 10_000.0);
    let mean = t.data.iter().map(|&x| x as f64).sum::<f64>() / n;
    let var = t
        .data
        .iter()
        .map(|&x| (x as f64 - mean).powi(2))
        .sum::<f64>()
        / n;
    let std = var.sqrt();
    assert!(mean.abs() < 0.002, "mean {mean}");
    assert!(
        (std - 0.02).abs() < 0.002,
        "std {std}, want 0.02 within 10%"
    );
    // Stacked expert weights are initialised as a whole, not left at zero.
    let e = w.get(id(&m, "recurrent.block.ffn.routed_experts.{e}.gate.weight"));
    assert_eq!(e.shape, vec![4, 32, 64]);
    assert!(e.data[e.numel() - 100..].iter().any(|&x| x != 0.0));
}

#[test]
fn uniform_init_stays_within_bounds() {
    let m = one_weight_module(vec![weight(
        "u",
        vec![100, 1000],
        Init::Uniform { bound: 0.125 },
    )]);
    let w = Weights::init(&m, 11);
    let t = &w.tensors()[0];
    assert!(t.data.iter().all(|&x| (-0.125..=0.125).contains(&x)));
    let lo = t.data.iter().cloned().fold(f32::INFINITY, f32::min);
    let hi = t.data.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    assert!(lo < -0.124 && hi > 0.124, "spans the range: {lo}..{hi}");
    let mean = t.data.iter().map(|&x| x as f64).sum::<f64>() / t.numel() as f64;
    assert!(mean.abs() < 0.001, "mean {mean}");
    // The real halt bias: U(+-1/sqrt(d)).
    let m = module("@tiny-mla");
    let b = Weights::init(&m, 5);
    let bias = b.get(id(&m, "recurrent.act.halt.bias"));
    let bound = 1.0 / (m.dim as f32).sqrt();
    assert!(bias.data.iter().all(|x| x.abs() <= bound));
}

#[test]
fn adding_a_weight_leaves_the_others_unchanged() {
    let b = weight("b", vec![64], Init::Normal { std: 1.0 });
    let alone = one_weight_module(vec![b.clone()]);
    let with = one_weight_module(vec![weight("a", vec![64], Init::Normal { std: 1.0 }), b]);
    let x = Weights::init(&alone, 9);
    let y = Weights::init(&with, 9);
    assert_eq!(x.tensors()[0], y.tensors()[1]);
    assert_ne!(y.tensors()[0], y.tensors()[1]);
}

// ---------------------------------------------------------------- save / load

fn round_trip(preset: &str) {
    let m = module(preset);
    let w = Weights::init(&m, 1234);
    let p = tmp("roundtrip");
    w.save(&m, &p).unwrap();
    let back = Weights::load(&m, &p).unwrap();
    assert_eq!(bits(&w), bits(&back), "{preset}: load(save(w)) == w");

    // OpenMythos names: experts unstacked, buffers kept, tied head left out.
    let names: Vec<String> = read_raw(&p).into_iter().map(|(n, _)| n).collect();
    assert!(names.iter().all(|n| !n.contains("{e}")));
    for e in 0..4 {
        for proj in ["gate", "up", "down"] {
            let n = format!("recurrent.block.ffn.routed_experts.{e}.{proj}.weight");
            assert!(names.contains(&n), "{n} missing");
        }
    }
    assert!(names.contains(&"recurrent.block.ffn.shared_experts.0.down.weight".to_string()));
    assert!(names.contains(&"recurrent.block.ffn.router_bias".to_string()));
    assert!(!names.contains(&"head.weight".to_string()));
    let raw = read_raw(&p);
    let (_, g) = raw
        .iter()
        .find(|(n, _)| n == "recurrent.block.ffn.routed_experts.2.gate.weight")
        .unwrap();
    assert_eq!(g.shape, vec![32, 64]);
    assert_eq!(g.dtype, Dtype::F32);
    // Expert 2 is the third slice of the stacked tensor.
    let stacked = w.get(id(&m, "recurrent.block.ffn.routed_experts.{e}.gate.weight"));
    let n = 32 * 64;
    assert_eq!(
        g.bytes,
        Raw::f32(&[32, 64], &stacked.data[2 * n..3 * n]).bytes
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn save_load_round_trip_tiny_mla() {
    round_trip("@tiny-mla");
}

#[test]
fn save_load_round_trip_tiny_gqa() {
    round_trip("@tiny-gqa");
}

#[test]
fn bf16_and_f16_files_load() {
    let m = module("@tiny-mla");
    let (_, raw) = saved_raw(&m, 21);
    // Everything as bf16, except embed.weight as f16.
    let mut want = Vec::new();
    let mut converted = Vec::new();
    for (name, r) in raw {
        let vals: Vec<f32> = r
            .bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect();
        let (dtype, bytes, widened): (Dtype, Vec<u8>, Vec<f32>) = if name == "embed.weight" {
            let h: Vec<half::f16> = vals.iter().map(|&x| half::f16::from_f32(x)).collect();
            (
                Dtype::F16,
                h.iter().flat_map(|x| x.to_le_bytes()).collect(),
                h.iter().map(|x| x.to_f32()).collect(),
            )
        } else {
            let h: Vec<half::bf16> = vals.iter().map(|&x| half::bf16::from_f32(x)).collect();
            (
                Dtype::BF16,
                h.iter().flat_map(|x| x.to_le_bytes()).collect(),
                h.iter().map(|x| x.to_f32()).collect(),
            )
        };
        want.push((name.clone(), widened));
        converted.push((
            name,
            Raw {
                dtype,
                shape: r.shape,
                bytes,
            },
        ));
    }
    let p = tmp("bf16");
    write_raw(&p, converted);
    let w = Weights::load(&m, &p).unwrap();
    let by_name = |n: &str| want.iter().find(|(k, _)| k == n).unwrap().1.clone();
    assert_eq!(w.get(id(&m, "embed.weight")).data, by_name("embed.weight"));
    assert_eq!(
        w.get(id(&m, "recurrent.injection.B")).data,
        by_name("recurrent.injection.B")
    );
    let stacked = w.get(id(&m, "recurrent.block.ffn.routed_experts.{e}.up.weight"));
    let n = 32 * 64;
    assert_eq!(
        stacked.data[3 * n..4 * n],
        by_name("recurrent.block.ffn.routed_experts.3.up.weight")[..]
    );
    let _ = std::fs::remove_file(&p);
}

/// `raw` with tensor `name` stored as `dtype` and `edits` (flat index, value)
/// written into it.
fn edited(
    raw: &[(String, Raw)],
    name: &str,
    dtype: Dtype,
    edits: &[(usize, f32)],
) -> Vec<(String, Raw)> {
    let mut out = raw.to_vec();
    let r = &mut out.iter_mut().find(|(n, _)| n == name).expect(name).1;
    let mut vals: Vec<f32> = r
        .bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect();
    for &(i, x) in edits {
        vals[i] = x;
    }
    r.dtype = dtype;
    r.bytes = match dtype {
        Dtype::F32 => vals.iter().flat_map(|x| x.to_le_bytes()).collect(),
        Dtype::BF16 => vals
            .iter()
            .flat_map(|&x| half::bf16::from_f32(x).to_le_bytes())
            .collect(),
        Dtype::F16 => vals
            .iter()
            .flat_map(|&x| half::f16::from_f32(x).to_le_bytes())
            .collect(),
        other => panic!("no {other} here"),
    };
    out
}

/// Loads `tensors` as a file; the error it must give.
fn load_error(m: &Module, tensors: Vec<(String, Raw)>) -> (WeightsError, PathBuf) {
    let p = tmp("nonfinite");
    write_raw(&p, tensors);
    let err = Weights::load(m, &p).expect_err("non-finite weights loaded");
    let _ = std::fs::remove_file(&p);
    (err, p)
}

#[test]
fn nan_and_inf_weights_are_errors_in_every_dtype() {
    let m = module("@tiny-mla");
    let (_, raw) = saved_raw(&m, 22);
    let hint = "hint: re-export the weights; if they come from training, \
                resume from an earlier checkpoint";
    for dtype in [Dtype::F32, Dtype::BF16, Dtype::F16] {
        for (bad, kind, count) in [
            (f32::NAN, "NaN", "NaN"),
            (f32::INFINITY, "+inf", "infinite"),
            (f32::NEG_INFINITY, "-inf", "infinite"),
        ] {
            // Two bad values in `embed.weight` ([256, 64]), the first at
            // 4100: past the loader's first block of 4096 values.
            let tensors = edited(&raw, "embed.weight", dtype, &[(12345, bad), (4100, bad)]);
            let (err, p) = load_error(&m, tensors);
            let text = err.to_string();
            let want = format!(
                "{}: `embed.weight` is not finite: 2 {count} of 16384 values, \
                 the first ({kind}) at flat index 4100\n\
                 the file is damaged, or the training run that wrote it diverged\n{hint}",
                p.display()
            );
            assert_eq!(text, want, "{dtype} {kind}");
            let WeightsError::NonFinite { path, tensors } = err else {
                panic!("{dtype} {kind}: not a NonFinite error");
            };
            assert_eq!(path, p);
            assert_eq!(tensors.len(), 1);
            assert_eq!(tensors[0].0, "embed.weight");
            assert_eq!(tensors[0].1.first_index, 4100);
            assert_eq!(tensors[0].1.count(), 2);
        }
    }
}

#[test]
fn every_non_finite_tensor_is_listed_with_expert_names() {
    let m = module("@tiny-mla");
    let (_, raw) = saved_raw(&m, 23);
    // Expert 3 of a stacked weight, as bf16: 2 NaN and 1 -inf, the first an
    // infinity; and a norm weight with one +inf at its last value.
    let expert = "recurrent.block.ffn.routed_experts.3.gate.weight";
    let tensors = edited(
        &raw,
        expert,
        Dtype::BF16,
        &[(5, f32::NEG_INFINITY), (6, f32::NAN), (2047, f32::NAN)],
    );
    let tensors = edited(&tensors, "norm.weight", Dtype::F32, &[(63, f32::INFINITY)]);
    let (err, p) = load_error(&m, tensors);
    let text = err.to_string();
    let want = format!(
        "{}: 2 tensors are not finite:\n  \
         `norm.weight`: 1 infinite of 64 values, the first (+inf) at flat index 63\n  \
         `{expert}`: 2 NaN and 1 infinite of 2048 values, the first (-inf) at flat index 5\n\
         the file is damaged, or the training run that wrote it diverged\n\
         hint: re-export the weights; if they come from training, resume from an earlier checkpoint",
        p.display()
    );
    assert_eq!(text, want);
}

#[test]
fn extreme_finite_weights_load() {
    // f32::MAX and subnormals are finite: only NaN and infinities are refused.
    let m = module("@tiny-mla");
    let (_, raw) = saved_raw(&m, 24);
    let tensors = edited(
        &raw,
        "embed.weight",
        Dtype::F32,
        &[(0, f32::MAX), (1, f32::MIN), (2, 1e-45)],
    );
    let p = tmp("extreme");
    write_raw(&p, tensors);
    let w = Weights::load(&m, &p).unwrap();
    assert_eq!(
        w.get(id(&m, "embed.weight")).data[..3],
        [f32::MAX, f32::MIN, 1e-45]
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn tied_head_and_rope_buffers_in_a_pytorch_file_are_accepted() {
    let m = module("@tiny-mla");
    assert!(m.weights.iter().all(|w| w.name != "head.weight"), "tied");
    let (w, mut raw) = saved_raw(&m, 5);
    // PyTorch's state_dict carries the tied head and complex RoPE tables.
    raw.push((
        "head.weight".into(),
        Raw::f32(&[256, 64], &vec![9.0; 256 * 64]),
    ));
    raw.push((
        "freqs_cis".into(),
        Raw {
            dtype: Dtype::C64,
            shape: vec![128, 8],
            bytes: vec![0; 128 * 8 * 8],
        },
    ));
    raw.push(("freqs_cis_mla".into(), Raw::f32(&[3], &[1.0, 2.0, 3.0])));
    let p = tmp("tied");
    write_raw(&p, raw.clone());
    let back = Weights::load(&m, &p).unwrap();
    assert_eq!(bits(&w), bits(&back), "head.weight values are ignored");

    // A head.weight that cannot be the tied embedding is an error.
    let last = raw.iter_mut().find(|(n, _)| n == "head.weight").unwrap();
    last.1 = Raw::f32(&[64, 64], &vec![0.0; 64 * 64]);
    write_raw(&p, raw);
    let err = Weights::load(&m, &p).unwrap_err().to_string();
    assert!(
        err.contains(
            "`head.weight` (tied to `embed.weight`) has shape [64, 64], expected [256, 64]"
        ),
        "{err}"
    );
    let _ = std::fs::remove_file(&p);
}

#[test]
fn every_mismatch_is_reported_together() {
    let m = module("@tiny-mla");
    let (_, raw) = saved_raw(&m, 2);
    let mut edited: Vec<(String, Raw)> = Vec::new();
    for (name, r) in raw {
        match name.as_str() {
            // missing tensor
            "norm.weight" => {}
            // missing expert
            "recurrent.block.ffn.routed_experts.3.gate.weight" => {}
            // a whole stacked weight missing
            n if n.starts_with("recurrent.block.ffn.shared_experts.")
                && n.ends_with(".up.weight") => {}
            // wrong shape
            "coda.0.ffn.gate.weight" => {
                edited.push((name, Raw::f32(&[10, 10], &[0.0; 100])));
            }
            // unsupported dtype
            "prelude.0.attn.kv_norm.weight" => {
                let bytes = (0..16).flat_map(|_| 1.0f64.to_le_bytes()).collect();
                edited.push((
                    name,
                    Raw {
                        dtype: Dtype::F64,
                        shape: r.shape,
                        bytes,
                    },
                ));
            }
            // a typo: unexpected, with a did-you-mean
            "prelude.0.attn.q_down.weight" => {
                edited.push(("prelude.0.attn.q_dwn.weight".into(), r));
            }
            _ => edited.push((name, r)),
        }
    }
    // an expert the model does not have
    edited.push((
        "recurrent.block.ffn.routed_experts.4.up.weight".into(),
        Raw::f32(&[32, 64], &vec![0.0; 32 * 64]),
    ));
    // something unrelated
    edited.push(("optimizer.step".into(), Raw::f32(&[], &[1.0])));
    let p = tmp("mismatch");
    write_raw(&p, edited);
    let err = Weights::load(&m, &p).unwrap_err();
    let WeightsError::Mismatch { problems, .. } = &err else {
        panic!("expected a mismatch, got {err}");
    };
    let text = err.to_string();
    let expect = [
        format!("{} does not match the model (9 problems):", p.display()),
        "\n  missing tensor `norm.weight` of shape [64]".into(),
        "\n  missing expert 3 of `recurrent.block.ffn.routed_experts.{e}.gate.weight` \
         (the model has 4 experts, each of shape [32, 64]): \
         no `recurrent.block.ffn.routed_experts.3.gate.weight`"
            .into(),
        "\n  missing `recurrent.block.ffn.shared_experts.{e}.up.weight` for every expert \
         (the model has 1 expert, each of shape [64, 64])"
            .into(),
        "\n  `coda.0.ffn.gate.weight` has shape [10, 10], expected [85, 64]".into(),
        "\n  `prelude.0.attn.kv_norm.weight` has dtype F64; accepted dtypes are F32, BF16 and F16"
            .into(),
        "\n  unexpected tensor `prelude.0.attn.q_dwn.weight` of shape [32, 64]: \
         did you mean `prelude.0.attn.q_down.weight`?"
            .into(),
        "\n  missing tensor `prelude.0.attn.q_down.weight` of shape [32, 64]".into(),
        "\n  unexpected tensor `recurrent.block.ffn.routed_experts.4.up.weight` of shape \
         [32, 64]: expert 4 is out of range, the model has 4 experts (0..3)"
            .into(),
        "\n  unexpected tensor `optimizer.step` of shape []".into(),
        "\nhint: weights must come from the same spec \
         (mythos init SPEC --seed N -o W.safetensors writes matching ones)"
            .into(),
    ];
    for e in &expect {
        assert!(text.contains(e.as_str()), "missing {e:?} in:\n{text}");
    }
    assert_eq!(problems.len(), 9, "{text}");
    assert!(text.ends_with("writes matching ones)"));
    let _ = std::fs::remove_file(&p);
}

#[test]
fn a_file_for_another_model_is_a_mismatch() {
    let gqa = module("@tiny-gqa");
    let mla = module("@tiny-mla");
    let p = tmp("other");
    Weights::init(&gqa, 1).save(&gqa, &p).unwrap();
    let err = Weights::load(&mla, &p).unwrap_err().to_string();
    assert!(
        err.contains("missing tensor `prelude.0.attn.q_down.weight`"),
        "{err}"
    );
    assert!(
        err.contains("unexpected tensor `prelude.0.attn.wq.weight`"),
        "{err}"
    );
    let _ = std::fs::remove_file(&p);
}

// ---------------------------------------------------------------- damaged files

#[test]
fn missing_file_is_an_io_error() {
    let m = module("@tiny-mla");
    let p = tmp("does-not-exist");
    let err = Weights::load(&m, &p).unwrap_err();
    assert!(matches!(err, WeightsError::Io { .. }), "{err}");
    assert!(err.to_string().contains(&p.display().to_string()));
}

fn assert_format(m: &Module, bytes: &[u8], what: &str) {
    match Weights::load_bytes(m, bytes, Path::new("w.safetensors")) {
        Err(e @ WeightsError::Format { .. }) => {
            let text = e.to_string();
            assert!(text.contains("is this a safetensors file?"), "{text}");
            assert!(text.contains("w.safetensors"), "{text}");
        }
        Err(e) => panic!("{what}: expected a format error, got {e}"),
        Ok(_) => panic!("{what}: loaded"),
    }
}

#[test]
fn garbage_and_truncated_files_are_format_errors() {
    let m = module("@tiny-mla");
    let p = tmp("good");
    Weights::init(&m, 3).save(&m, &p).unwrap();
    let good = std::fs::read(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    assert!(Weights::load_bytes(&m, &good, &p).is_ok());

    assert_format(&m, b"", "empty");
    assert_format(&m, b"abc", "short");
    assert_format(&m, b"PK\x03\x04 this is a zip file, not weights", "zip");
    assert_format(&m, &u64::MAX.to_le_bytes(), "huge header length");
    let mut not_json = 8u64.to_le_bytes().to_vec();
    not_json.extend_from_slice(b"not json");
    assert_format(&m, &not_json, "header not JSON");
    let mut not_utf8 = 4u64.to_le_bytes().to_vec();
    not_utf8.extend_from_slice(&[0xff, 0xfe, 0xfd, 0xfc]);
    assert_format(&m, &not_utf8, "header not UTF-8");

    // Every truncation, sampled, is a format error.
    let step = (good.len() / 200).max(1);
    for len in (0..good.len()).step_by(step).chain([good.len() - 1]) {
        assert_format(&m, &good[..len], &format!("truncated to {len}"));
    }
    // Trailing bytes too.
    let mut longer = good.clone();
    longer.extend_from_slice(&[0; 4]);
    assert_format(&m, &longer, "trailing bytes");
}

/// Corrupted bytes must never panic; header corruption gives an error, data
/// corruption may load (different values).
#[test]
fn corrupted_files_never_panic() {
    let m = module("@tiny-mla");
    let p = tmp("fuzz");
    Weights::init(&m, 4).save(&m, &p).unwrap();
    let good = std::fs::read(&p).unwrap();
    let _ = std::fs::remove_file(&p);
    let header_len = u64::from_le_bytes(good[..8].try_into().unwrap()) as usize;
    // A small LCG, so the test is deterministic without the crate's own RNG.
    let mut state: u64 = 0x1234_5678;
    let mut next = || {
        state = state
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        (state >> 33) as usize
    };
    for _ in 0..2000 {
        let mut bytes = good.clone();
        for _ in 0..1 + next() % 4 {
            // Mostly the header, where structure lives.
            let at = if next() % 4 == 0 {
                next() % bytes.len()
            } else {
                next() % (8 + header_len)
            };
            bytes[at] = next() as u8;
        }
        let _ = Weights::load_bytes(&m, &bytes, &p);
    }
    // Specific header edits that keep valid JSON but lie about the data.
    let header = std::str::from_utf8(&good[8..8 + header_len]).unwrap();
    for (from, to) in [
        ("\"F32\"", "\"F16\""),
        ("\"F32\"", "\"I64\""),
        ("\"shape\":[64]", "\"shape\":[65]"),
        ("\"shape\":[64]", "\"shape\":[18446744073709551615,2]"),
        ("\"data_offsets\":[0,", "\"data_offsets\":[4,"),
    ] {
        let edited = header.replacen(from, to, 1);
        assert_ne!(edited, header, "{from} not in the header");
        let mut bytes = (edited.len() as u64).to_le_bytes().to_vec();
        bytes.extend_from_slice(edited.as_bytes());
        bytes.extend_from_slice(&good[8 + header_len..]);
        let r = Weights::load_bytes(&m, &bytes, &p);
        assert!(r.is_err(), "{from} -> {to} loaded");
    }
}
