//! The CUDA runtime against the CPU reference runtime: same logits (f32,
//! within 1e-4 relative) for a prefill, a prefill then single-token decode
//! steps, and a chunked prefill through one device KV cache, with the same
//! ACT iterations. Needs a GPU: without one each test prints
//! "skipped: no CUDA device" and passes.

mod common {
    pub mod models;
}
use common::models::{for_backend, preset, rel};
use mythos_backend::compile::{compile, Options, Target};
use mythos_compiler::ir::Module;
use mythos_compiler::plan::ArgKind;
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::cuda::{self, abi, CudaDevice, CudaKernels, CudaKvCache, CudaRuntime};
use mythos_runtime::engine::Engine;
use mythos_runtime::weights::Weights;

fn device() -> Option<CudaDevice> {
    match cuda::probe() {
        Ok(d) => Some(d),
        Err(e) => {
            println!("skipped: no CUDA device ({e})");
            None
        }
    }
}

fn module(name: &str, level: u8) -> Module {
    for_backend(preset(name), level)
}

/// `name` at `level` on the device against the reference runtime.
fn parity(dev: &CudaDevice, name: &str, level: u8) {
    let m = module(name, level);
    let opts = Options {
        target: Target::Cuda { arch: dev.arch() },
        ..Options::default()
    };
    let compiled = compile(&m, &|_| None, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
    let ptx = abi::unbundle(&compiled.code).unwrap();
    assert_eq!(ptx, compiled.ptx);
    let kernels = CudaKernels::load(dev, &ptx, &compiled.plan).unwrap();
    let w = Weights::init(&m, 7);
    let reference = CpuRuntime::new(&m, &w);
    let gpu = CudaRuntime::new(dev, &m, &w, &kernels).unwrap();
    let vocab = m.vocab as i64;
    let ids: Vec<i64> = (0..18).map(|i| (i * 29 + 3) % vocab).collect();
    let p0 = reference.forward(&ids, 2, None, None).unwrap();
    let p1 = gpu.forward(&ids, 2, None, None).unwrap();
    let d0 = reference.prefill_then_decode(&ids, 2, None, 4).unwrap();
    let d1 = gpu.prefill_then_decode(&ids, 2, None, 4).unwrap();
    assert_eq!(p0.iterations, p1.iterations, "{name}: ACT iterations");
    assert_eq!(d0.iterations, d1.iterations, "{name}: ACT iterations");
    // Chunks of 3, 2 and 1 tokens per row through one cache.
    let mut c0 = Vec::new();
    let mut c1 = Vec::new();
    let mut k0 = mythos_runtime::cpu::kv::KvCache::new();
    let mut k1 = CudaKvCache::new();
    for (from, to) in [(0, 3), (3, 5), (5, 6)] {
        let step: Vec<i64> = (0..2)
            .flat_map(|r| ids[r * 9 + from..r * 9 + to].iter().copied())
            .collect();
        c0.extend_from_slice(
            &reference
                .forward(&step, 2, None, Some(&mut k0))
                .unwrap()
                .logits,
        );
        c1.extend_from_slice(&gpu.forward(&step, 2, None, Some(&mut k1)).unwrap().logits);
    }
    let (rp, rd, rc) = (
        rel(&p1.logits, &p0.logits),
        rel(&d1.logits, &d0.logits),
        rel(&c1, &c0),
    );
    println!(
        "{name} -O{level} on {dev:?}: prefill {rp:.2e}, decode {rd:.2e}, chunked {rc:.2e}; \
         cache {} bytes ({} entries)",
        k1.bytes(),
        k1.len_entries()
    );
    assert!(rp <= 1e-4 && rd <= 1e-4 && rc <= 1e-4, "{name} -O{level}");
}

#[test]
fn tiny_gqa_matches_reference() {
    let Some(dev) = device() else { return };
    parity(&dev, "tiny-gqa", 2);
    parity(&dev, "tiny-gqa", 0);
}

#[test]
fn tiny_mla_matches_reference() {
    let Some(dev) = device() else { return };
    // -O2 absorbs kv_up for decode steps (attention_mla_absorbed); -O1 expands.
    parity(&dev, "tiny-mla", 2);
    parity(&dev, "tiny-mla", 1);
}

/// Errors of the device runtime are the CPU runtime's for bad input.
#[test]
fn bad_input_is_an_error_not_a_launch() {
    let Some(dev) = device() else { return };
    let m = module("tiny-gqa", 2);
    let opts = Options {
        target: Target::Cuda { arch: dev.arch() },
        ..Options::default()
    };
    let compiled = compile(&m, &|_| None, &opts).unwrap();
    let kernels = CudaKernels::load(&dev, &compiled.ptx, &compiled.plan).unwrap();
    let w = Weights::init(&m, 7);
    let gpu = CudaRuntime::new(&dev, &m, &w, &kernels).unwrap();
    let e = gpu.forward(&[m.vocab as i64], 1, None, None).unwrap_err();
    assert!(e.to_string().contains("outside the vocabulary"), "{e}");
    assert!(gpu.forward(&[], 1, None, None).is_err());
}

/// Without a GPU: the CUDA compile's plan has what the runtime relies on.
/// Every kernel has a launch whose grid sizes are ones the runtime gives
/// (`rows` for the generic ABI and projections, `tokens` for attention
/// cores, `len` for the MLA expansion), and the argument kinds the runtime
/// packs: buffers, then the trailing indices (the generic ABI: `rows`;
/// projections: `rows, seq`; cores: `tokens, start`; expansion: `len`).
#[test]
fn cuda_plans_fit_the_runtime_abi() {
    for name in ["tiny-gqa", "tiny-mla", "tiny-huginn"] {
        let m = module(name, 2);
        let opts = Options {
            target: Target::Cuda {
                arch: "sm_90".into(),
            },
            ..Options::default()
        };
        let compiled = compile(&m, &|_| None, &opts).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(abi::unbundle(&compiled.code).unwrap(), compiled.ptx);
        for k in &compiled.plan.kernels {
            let launch = k.gpu.as_ref().expect("a GPU launch");
            let sizes: Vec<&str> = launch
                .grid
                .iter()
                .filter_map(|g| match g {
                    mythos_compiler::plan::GridDim::CeilDiv { size, .. } => Some(size.as_str()),
                    _ => None,
                })
                .collect();
            let (want, indices) = match k.kind.as_str() {
                "attention_gqa_proj" | "attention_mla_proj" => ("rows", 2),
                "attention_core" | "attention_mla_absorbed" => ("tokens", 2),
                "attention_mla_expand" => ("len", 1),
                _ => ("rows", 1),
            };
            assert!(sizes.iter().all(|s| *s == want), "{}: {sizes:?}", k.symbol);
            let trailing = k
                .args
                .iter()
                .rev()
                .take_while(|&&a| a == ArgKind::Index)
                .count();
            assert_eq!(trailing, indices, "{}: {:?}", k.symbol, k.args);
        }
        // Attention steps run [proj, core] (GQA) or [proj, expand, core,
        // (absorbed)] (MLA); every other step one kernel.
        let kind = |sym: &str| {
            let k = compiled.plan.kernels.iter().find(|k| k.symbol == sym);
            k.map(|k| k.kind.clone()).unwrap_or_default()
        };
        for s in &compiled.plan.steps {
            let kinds: Vec<String> = s.kernels.iter().map(|k| kind(k)).collect();
            let ok = match kinds[0].as_str() {
                "attention_gqa_proj" => kinds[1..] == ["attention_core"],
                "attention_mla_proj" => {
                    kinds[1..3] == ["attention_mla_expand", "attention_core"]
                        && (kinds.len() == 3 || kinds[3..] == ["attention_mla_absorbed"])
                }
                _ => kinds.len() == 1,
            };
            assert!(ok, "{}: {kinds:?}", s.label);
        }
    }
}
