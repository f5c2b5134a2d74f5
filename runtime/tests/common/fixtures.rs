//! The OpenMythos parity fixtures of tests/fixtures/parity/ (made by
//! tools/parity/make_fixtures.py with open-mythos 0.5.0): the manifest, the
//! io files and the checked, lowered module of each. Shared by the runtime's
//! parity test, the backend's mlir-cpu one and the CLI's eval test
//! (`#[path]`-included there), which do not each use every item.
#![allow(dead_code)]

use mythos_compiler::ir::{lower::lower, Module};
use mythos_compiler::sema::{self, Loader};
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::engine::Engine;
use mythos_runtime::weights::Weights;
use safetensors::SafeTensors;
use std::path::{Path, PathBuf};

/// `tests/fixtures/parity/` of the workspace, from whichever of its crates
/// includes this file.
pub fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .map(|a| a.join("tests/fixtures/parity"))
        .find(|p| p.is_dir())
        .expect("tests/fixtures/parity/ above the crate")
}

pub struct Fixture {
    pub name: String,
    pub spec: String,
    pub model: String,
    pub weights: String,
    pub io: String,
    pub loops: Option<u64>,
    pub decode_from: Option<usize>,
}

pub fn manifest() -> Vec<Fixture> {
    let text = std::fs::read_to_string(dir().join("manifest.json")).expect("manifest.json");
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

/// The reference's input ids `[B, T]` and logits `[B, T, V]`.
pub struct Io {
    pub ids: Vec<i64>,
    pub logits: Vec<f32>,
    pub batch: usize,
    pub seq: usize,
}

impl Fixture {
    pub fn io(&self) -> Io {
        let bytes = std::fs::read(dir().join(&self.io)).unwrap();
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
        Io {
            ids,
            logits,
            batch: shape[0],
            seq: shape[1],
        }
    }

    /// The fixture's model, checked and lowered, before any pass.
    pub fn lowered(&self) -> Module {
        let mut loader = Loader::new();
        let spec = dir().join(&self.spec);
        let checked = sema::check_file(&mut loader, spec.to_str().unwrap());
        assert!(
            !checked.has_errors(),
            "{}",
            mythos_compiler::diag::render(&loader.sources, &checked.diagnostics)
        );
        lower(sema::select(&checked, Some(&self.model), &self.spec).unwrap())
    }

    pub fn weights(&self, module: &Module) -> Weights {
        Weights::load(module, &dir().join(&self.weights))
            .unwrap_or_else(|e| panic!("{}: {e}", self.name))
    }

    /// `(max|ours - ref|, max|ref|, loop iterations)` of the fixture's run
    /// (one forward, or a prefill then single-token steps) on `rt`.
    pub fn compare(&self, rt: &CpuRuntime, io: &Io) -> (f32, f32, u64) {
        let out = match self.decode_from {
            None => rt.forward(&io.ids, io.batch, self.loops, None).unwrap(),
            Some(k) => rt
                .prefill_then_decode(&io.ids, io.batch, self.loops, k)
                .unwrap(),
        };
        assert_eq!(
            out.logits.len(),
            io.logits.len(),
            "{}: logits shape",
            self.name
        );
        let max_ref = io.logits.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        let max_err = out
            .logits
            .iter()
            .zip(&io.logits)
            .fold(0.0f32, |m, (a, b)| m.max((a - b).abs()));
        (max_err, max_ref, out.iterations)
    }
}
