//! What the controller records under `DIR/slurm/`, so that a controller
//! killed at any moment (or detached) can be started again and re-attach:
//!
//! - `state.json`: the arrays submitted (a token, the job id once `sbatch`
//!   returned, the manifest, the trials), submissions per trial, the trials
//!   given up. Rewritten atomically by the controller, its only writer.
//! - `manifest-TOKEN.json`: one array's trials, task index -> trial; what
//!   `mythos sweep-worker --manifest M --index I` reads.
//! - `worker.sbatch`: the batch script every array runs.
//! - `logs/JOB_TASK.out|.err`: each task's output (appended over requeues).
//! - `faults/HASH.json`: written by a worker that could not run its trial.
//! - `cancelled`: left by `mythos sweep cancel`; a running controller stops.

use crate::sweep::results::write_durable;
use anyhow::{bail, Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

pub const STATE_SCHEMA: &str = "mythos.slurm/1";
pub const MANIFEST_SCHEMA: &str = "mythos.slurm-manifest/1";

/// One submitted (or about to be submitted) job array.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ArrayRecord {
    /// Unique per submission; the job's comment, so that an array whose id
    /// was never recorded (a kill right after `sbatch`) is found in `squeue`.
    pub token: String,
    /// The array job id, once `sbatch` returned it.
    pub job_id: Option<String>,
    /// Trial hashes by task index (as in the manifest).
    pub hashes: Vec<String>,
    /// Unix seconds of the submission.
    pub submitted_at: f64,
}

#[derive(Clone, Debug, Default, Serialize, Deserialize)]
pub struct State {
    pub schema: String,
    /// Every array of this sweep has this job name.
    pub job_name: String,
    pub arrays: Vec<ArrayRecord>,
    /// Trial hash -> times submitted.
    #[serde(default)]
    pub attempts: BTreeMap<String, u64>,
    /// Trial hash -> why it was given up (after the retries).
    #[serde(default)]
    pub gave_up: BTreeMap<String, String>,
    /// Hashes of the latest plan (what `mythos sweep status` counts).
    #[serde(default)]
    pub planned: Vec<String>,
}

/// One task of a manifest.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct ManifestTrial {
    pub hash: String,
    /// Position in the plan.
    pub index: usize,
}

/// `manifest-TOKEN.json`: what the tasks of one array run.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Manifest {
    pub schema: String,
    /// The sweep file (absolute).
    pub sweep: PathBuf,
    /// The output folder (absolute).
    pub out: PathBuf,
    pub trials: Vec<ManifestTrial>,
}

pub fn slurm_dir(out_dir: &Path) -> PathBuf {
    out_dir.join("slurm")
}

pub fn state_path(out_dir: &Path) -> PathBuf {
    slurm_dir(out_dir).join("state.json")
}

pub fn manifest_path(out_dir: &Path, token: &str) -> PathBuf {
    slurm_dir(out_dir).join(format!("manifest-{token}.json"))
}

pub fn logs_dir(out_dir: &Path) -> PathBuf {
    slurm_dir(out_dir).join("logs")
}

pub fn faults_dir(out_dir: &Path) -> PathBuf {
    slurm_dir(out_dir).join("faults")
}

pub fn cancelled_path(out_dir: &Path) -> PathBuf {
    slurm_dir(out_dir).join("cancelled")
}

impl State {
    /// The recorded state of `out_dir`, or `None` when no Slurm sweep ran there.
    pub fn load(out_dir: &Path) -> Result<Option<State>> {
        let path = state_path(out_dir);
        let bytes = match std::fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => bail!("cannot read {}: {e}", path.display()),
        };
        let state: State = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a Slurm sweep state ({STATE_SCHEMA}); it is written by \
                 `mythos sweep --backend slurm` only. Cancel its jobs by hand (`scancel`) \
                 and delete the file to start over",
                path.display()
            )
        })?;
        if state.schema != STATE_SCHEMA {
            bail!(
                "{} has schema `{}`, not `{STATE_SCHEMA}`: written by another mythos version",
                path.display(),
                state.schema
            );
        }
        Ok(Some(state))
    }

    pub fn save(&self, out_dir: &Path) -> Result<()> {
        let bytes = serde_json::to_vec_pretty(self)?;
        write_durable(&state_path(out_dir), &bytes)
    }

    /// The record and task index of the latest submission of `hash`.
    pub fn latest(&self, hash: &str) -> Option<(&ArrayRecord, usize)> {
        self.arrays
            .iter()
            .rev()
            .find_map(|a| a.hashes.iter().position(|h| h == hash).map(|i| (a, i)))
    }
}

impl Manifest {
    pub fn load(path: &Path) -> Result<Manifest> {
        let bytes =
            std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
        let m: Manifest = serde_json::from_slice(&bytes).with_context(|| {
            format!(
                "{} is not a sweep manifest ({MANIFEST_SCHEMA}); manifests are written by \
                 `mythos sweep --backend slurm`",
                path.display()
            )
        })?;
        if m.schema != MANIFEST_SCHEMA {
            bail!(
                "{} has schema `{}`, not `{MANIFEST_SCHEMA}`",
                path.display(),
                m.schema
            );
        }
        Ok(m)
    }

    pub fn save(&self, path: &Path) -> Result<()> {
        write_durable(path, &serde_json::to_vec_pretty(self)?)
    }
}

/// The last `lines` lines of a file (empty when it cannot be read).
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
