//! `mythos train`'s checkpoints: `DIR/checkpoint/` holds `weights.safetensors`
//! (OpenMythos names), `optimizer.safetensors` (AdamW's moments, `m/NAME` and
//! `v/NAME` per parameter) and `state.json` (the step, the data position,
//! each parameter's AdamW step count and the run's settings). A checkpoint is
//! written whole into `checkpoint.tmp/` and then renamed into place (the
//! previous one kept as `checkpoint.old/` until then), so a run killed at any
//! moment leaves one complete checkpoint.

use anyhow::{bail, Context, Result};
use mythos_compiler::ir::Module;
use mythos_runtime::train::Trainer;
use mythos_runtime::weights::Weights;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// `state.json`.
#[derive(Clone, Debug, Serialize, Deserialize, PartialEq)]
pub struct State {
    pub schema: String,
    pub model: String,
    /// Optimizer steps done.
    pub step: u64,
    /// Data rows consumed (the position in the shuffled stream).
    pub cursor: u64,
    /// AdamW's step count per parameter, in `weights::parameters` order.
    pub adam_steps: Vec<u64>,
    /// The settings the run was started with (a resume must use the same).
    pub settings: serde_json::Value,
}

pub const SCHEMA: &str = "mythos.checkpoint/1";

fn dir(out: &Path) -> PathBuf {
    out.join("checkpoint")
}

/// Writes the checkpoint of `trainer` atomically.
pub fn save(out: &Path, trainer: &Trainer, state: &State) -> Result<()> {
    let tmp = out.join("checkpoint.tmp");
    let old = out.join("checkpoint.old");
    let _ = std::fs::remove_dir_all(&tmp);
    std::fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
    trainer
        .weights
        .save(trainer.module, &tmp.join("weights.safetensors"))?;
    let bytes: Vec<(String, Vec<u8>, usize)> = trainer
        .parameters()
        .iter()
        .enumerate()
        .flat_map(|(i, p)| {
            let o = &trainer.optimizer;
            [("m", &o.exp_avg[i]), ("v", &o.exp_avg_sq[i])].map(|(k, v)| {
                let b = v.iter().flat_map(|x| x.to_le_bytes()).collect();
                (format!("{k}/{}", p.name), b, v.len())
            })
        })
        .collect();
    let views: Vec<(String, TensorView)> = bytes
        .iter()
        .map(|(n, b, len)| {
            let view = TensorView::new(Dtype::F32, vec![*len], b).expect("a well-formed view");
            (n.clone(), view)
        })
        .collect();
    safetensors::serialize_to_file(views, None, &tmp.join("optimizer.safetensors"))
        .context("cannot write the optimizer state")?;
    std::fs::write(
        tmp.join("state.json"),
        serde_json::to_string_pretty(state)? + "\n",
    )?;
    for f in ["weights.safetensors", "optimizer.safetensors", "state.json"] {
        std::fs::File::open(tmp.join(f))?.sync_all()?;
    }
    let current = dir(out);
    let _ = std::fs::remove_dir_all(&old);
    if current.exists() {
        std::fs::rename(&current, &old)?;
    }
    std::fs::rename(&tmp, &current)?;
    let _ = std::fs::remove_dir_all(&old);
    Ok(())
}

/// The checkpoint in `out`, if any (after a crash between the two renames,
/// the previous one).
pub fn find(out: &Path) -> Option<PathBuf> {
    [dir(out), out.join("checkpoint.old")]
        .into_iter()
        .find(|d| d.join("state.json").is_file())
}

/// Restores `trainer` from checkpoint directory `ck`; returns its state.
pub fn load(ck: &Path, module: &Module, trainer: &mut Trainer) -> Result<State> {
    let state_path = ck.join("state.json");
    let text = std::fs::read_to_string(&state_path)
        .with_context(|| format!("cannot read {}", state_path.display()))?;
    let state: State = serde_json::from_str(&text).map_err(|e| {
        anyhow::anyhow!(
            "{}: not a Mythos checkpoint state ({e}); the checkpoint is damaged: delete {} to start over",
            state_path.display(),
            ck.display()
        )
    })?;
    if state.schema != SCHEMA {
        bail!(
            "{}: schema `{}`, expected `{SCHEMA}`",
            state_path.display(),
            state.schema
        );
    }
    if state.model != module.name {
        bail!(
            "{} is a checkpoint of model `{}`, not `{}`: use another --out directory",
            ck.display(),
            state.model,
            module.name
        );
    }
    let n = trainer.parameters().len();
    if state.adam_steps.len() != n {
        bail!(
            "{}: {} AdamW step counts for {n} parameters: a checkpoint of another model",
            state_path.display(),
            state.adam_steps.len()
        );
    }
    trainer.weights = Weights::load(module, &ck.join("weights.safetensors"))?;
    let opt_path = ck.join("optimizer.safetensors");
    let bytes =
        std::fs::read(&opt_path).with_context(|| format!("cannot read {}", opt_path.display()))?;
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|e| anyhow::anyhow!("{}: not a safetensors file ({e})", opt_path.display()))?;
    let params = trainer.parameters().to_vec();
    for (i, p) in params.iter().enumerate() {
        for (k, dst) in [
            ("m", &mut trainer.optimizer.exp_avg[i]),
            ("v", &mut trainer.optimizer.exp_avg_sq[i]),
        ] {
            let name = format!("{k}/{}", p.name);
            let t = st.tensor(&name).map_err(|_| {
                anyhow::anyhow!(
                    "{}: `{name}` is missing: a checkpoint of another model",
                    opt_path.display()
                )
            })?;
            if t.dtype() != Dtype::F32 || t.data().len() != dst.len() * 4 {
                bail!(
                    "{}: `{name}` has the wrong dtype or size: a checkpoint of another model",
                    opt_path.display()
                );
            }
            for (d, b) in dst.iter_mut().zip(t.data().chunks_exact(4)) {
                *d = f32::from_le_bytes(b.try_into().expect("4 bytes"));
            }
        }
    }
    trainer.optimizer.steps.clone_from(&state.adam_steps);
    trainer.step = state.step;
    Ok(state)
}
