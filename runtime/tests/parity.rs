//! CPU runtime vs OpenMythos: the committed fixtures of tests/fixtures/parity/
//! (made by tools/parity/make_fixtures.py with open-mythos 0.5.0) must give
//! the reference logits within `max|ours - ref| <= 1e-4 * max|ref|`.

use mythos_compiler::ir::lower::lower;
use mythos_compiler::sema::{self, Loader};
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::weights::Weights;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/parity")
}

struct Fixture {
    name: String,
    spec: String,
    model: String,
    weights: String,
    io: String,
    loops: Option<u64>,
    decode_from: Option<usize>,
}

fn manifest() -> Vec<Fixture> {
    let text = std::fs::read_to_string(fixtures().join("manifest.json")).expect("manifest.json");
    let v: serde_json::Value = serde_json::from_str(&text).expect("manifest is JSON");
    let list = v
        .as_array()
        .or_else(|| v["fixtures"].as_array())
        .expect("a list of fixtures");
    list.iter()
        .map(|f| Fixture {
            name: f["name"].as_str().unwrap().to_string(),
            spec: f["spec"].as_str().unwrap().to_string(),
            model: f["model"].as_str().unwrap().to_string(),
            weights: f["weights"].as_str().unwrap().to_string(),
            io: f["io"].as_str().unwrap().to_string(),
            loops: f["loops"].as_u64(),
            decode_from: f["decode_from"].as_u64().map(|k| k as usize),
        })
        .collect()
}

/// `(ids [B, T], logits [B, T, V], B, T)` from the io file.
fn read_io(path: &Path) -> (Vec<i64>, Vec<f32>, usize, usize) {
    let bytes = std::fs::read(path).unwrap();
    let st = SafeTensors::deserialize(&bytes).unwrap();
    let ids = st.tensor("input_ids").unwrap();
    let shape = ids.shape().to_vec();
    let ids: Vec<i64> = ids
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
        .collect();
    let logits: Vec<f32> = st
        .tensor("logits")
        .unwrap()
        .data()
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes(c.try_into().unwrap()))
        .collect();
    (ids, logits, shape[0], shape[1])
}

fn run_fixture(f: &Fixture, level: u8) -> (f32, f32, u64) {
    let dir = fixtures();
    let spec = dir.join(&f.spec);
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, spec.to_str().unwrap());
    assert!(
        !checked.has_errors(),
        "{}",
        mythos_compiler::diag::render(&loader.sources, &checked.diagnostics)
    );
    let model = sema::select(&checked, Some(&f.model), &f.spec).unwrap();
    let mut module = lower(model);
    let opts = mythos_compiler::passes::Options {
        level,
        verify_each: true,
        ..Default::default()
    };
    mythos_compiler::passes::run(&mut module, &opts).unwrap();
    let weights =
        Weights::load(&module, &dir.join(&f.weights)).unwrap_or_else(|e| panic!("{}: {e}", f.name));
    let (ids, expected, b, _) = read_io(&dir.join(&f.io));
    let rt = CpuRuntime::new(&module, &weights);
    let out = match f.decode_from {
        None => rt.forward(&ids, b, f.loops, None).unwrap(),
        Some(k) => rt.prefill_then_decode(&ids, b, f.loops, k).unwrap(),
    };
    let (logits, iterations) = (out.logits, out.iterations);
    assert_eq!(logits.len(), expected.len(), "{}: logits shape", f.name);
    let max_ref = expected.iter().fold(0.0f32, |m, v| m.max(v.abs()));
    let max_err = logits
        .iter()
        .zip(&expected)
        .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
    (max_err, max_ref, iterations)
}

#[test]
fn cpu_runtime_matches_openmythos_logits() {
    let all = manifest();
    assert!(
        all.len() >= 8,
        "expected the parity fixtures, found {}",
        all.len()
    );
    let mut failures = Vec::new();
    // The IR as lowered and the fully optimized IR both match the reference.
    for level in [0, 2] {
        for f in &all {
            let (err, max_ref, iterations) = run_fixture(f, level);
            let rel = err / max_ref;
            println!(
                "parity -O{level} {:<24} max|ours-ref| = {err:.3e}  max|ref| = {max_ref:.3}  relative = {rel:.3e}  loop iterations = {iterations}",
                f.name
            );
            // NaN errors fail too.
            if err.is_nan() || err > 1e-4 * max_ref {
                failures.push(format!(
                    "-O{level} {}: relative error {rel:.3e} > 1e-4",
                    f.name
                ));
            }
        }
    }
    assert!(failures.is_empty(), "{}", failures.join("\n"));
}

/// `Logits::Last` gives exactly the last position's logits of a full forward.
#[test]
fn last_position_logits_equal_the_full_forward() {
    let f = &manifest()[0];
    let dir = fixtures();
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, dir.join(&f.spec).to_str().unwrap());
    let module = lower(sema::select(&checked, Some(&f.model), &f.spec).unwrap());
    let weights = Weights::load(&module, &dir.join(&f.weights)).unwrap();
    let (ids, _, b, t) = read_io(&dir.join(&f.io));
    let rt = CpuRuntime::new(&module, &weights);
    let all = rt.forward(&ids, b, f.loops, None).unwrap();
    let last = rt
        .forward_with(&ids, b, f.loops, None, mythos_runtime::cpu::Logits::Last)
        .unwrap();
    let v = module.vocab as usize;
    assert_eq!((last.seq, last.logits.len()), (1, b * v));
    // Equal up to summation order (one row takes the matrix-vector path).
    for r in 0..b {
        let full = &all.logits[((r + 1) * t - 1) * v..(r + 1) * t * v];
        for (a, e) in last.logits[r * v..(r + 1) * v].iter().zip(full) {
            assert!((a - e).abs() <= 1e-6, "{a} vs {e}");
        }
    }
}
