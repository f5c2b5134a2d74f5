//! `mythos grad`: the loss of one batch and the gradient of every
//! parameter, through the gradient transform of the IR (`ir::grad`) run by
//! the CPU runtime (docs/training.md).

use anyhow::{bail, Context, Result};
use mythos_compiler::ir::{self, Module};
use mythos_runtime::cpu::grad::{Depth, Gradient};
use mythos_runtime::cpu::CpuRuntime;
use mythos_runtime::data::{self, DataOptions, TokenWidth};
use mythos_runtime::weights::Weights;
use serde::Serialize;
use std::path::Path;
use std::time::Instant;

/// What `mythos grad` prints with `--json`.
#[derive(Debug, Serialize)]
pub struct Report {
    pub schema: &'static str,
    pub model: String,
    pub rows: usize,
    pub seq: usize,
    /// Positions whose target is scored.
    pub scored: usize,
    pub loss: f64,
    pub iterations: u64,
    /// The global L2 norm over every parameter's gradient.
    pub grad_norm: f64,
    /// Parameters the loss does not reach (their gradient is zero).
    pub unreached: Vec<String>,
    pub seconds: f64,
}

/// The gradient module of `forward` (its unoptimized form), verified, with
/// a clear error when an op has no backward rule.
pub fn module(forward: &Module) -> Result<Module> {
    let grad = ir::grad::gradient(forward).with_context(|| {
        format!(
            "cannot differentiate model `{}` (training runs on the CPU runtime, -O0)",
            forward.name
        )
    })?;
    let errors = ir::verify::verify(&grad);
    if let Some(e) = errors.first() {
        bail!(
            "internal error: the gradient module of `{}` does not verify ({} problems; the first: {e}); please report it",
            forward.name,
            errors.len()
        );
    }
    Ok(grad)
}

/// The gradient of `weights` on the rows of `batch` (a safetensors file
/// with I64 `input_ids` and optional `targets`, `-100` = not scored).
pub fn run(
    grad: &Module,
    weights: &Weights,
    batch: &Path,
    loops: Option<u64>,
) -> Result<(Gradient, Report)> {
    if batch.extension().and_then(|e| e.to_str()) != Some("safetensors") {
        bail!(
            "--batch `{}`: give a .safetensors file with I64 input_ids [B, T] and targets [B, T]",
            batch.display()
        );
    }
    let opts = DataOptions {
        seq: None,
        width: TokenWidth::U16,
        vocab: grad.vocab,
        max_rows: None,
    };
    let rows = data::load(batch, &opts)?;
    if rows.is_empty() {
        bail!("--batch `{}` holds no rows", batch.display());
    }
    let rt = CpuRuntime::new(grad, weights);
    let start = Instant::now();
    let g = rt
        .gradient(
            &rows.input_ids,
            &rows.targets,
            rows.len(),
            Depth::loops(loops),
        )
        .with_context(|| format!("--batch `{}`", batch.display()))?;
    let seconds = start.elapsed().as_secs_f64();
    if !g.loss.is_finite() {
        bail!(
            "the loss is {} on `{}`: the weights overflow",
            g.loss,
            batch.display()
        );
    }
    let reached: Vec<_> = g.grads.iter().map(|(w, _)| *w).collect();
    let unreached = grad
        .weights
        .iter()
        .enumerate()
        .filter(|(i, w)| !w.buffer && !reached.contains(&ir::WeightId(*i as u32)))
        .map(|(_, w)| w.name.clone())
        .collect();
    let sq: f64 = g
        .grads
        .iter()
        .flat_map(|(_, v)| v.iter())
        .map(|&x| f64::from(x).powi(2))
        .sum();
    let report = Report {
        schema: "mythos.grad/1",
        model: grad.name.clone(),
        rows: rows.len(),
        seq: rows.seq,
        scored: rows.scored(),
        loss: f64::from(g.loss),
        iterations: g.iterations,
        grad_norm: sq.sqrt(),
        unreached,
        seconds,
    };
    Ok((g, report))
}

/// Writes the gradients under OpenMythos names (zeros for parameters the
/// loss does not reach, no buffers) and the scalar `loss`.
pub fn dump(grad: &Module, g: &Gradient, path: &Path) -> Result<()> {
    let mut out = Weights::zeros(grad);
    for (w, values) in &g.grads {
        out.get_mut(*w).data.copy_from_slice(values);
    }
    out.save_gradients(grad, path, g.loss)?;
    Ok(())
}

/// The human-readable summary.
pub fn summary(r: &Report) -> String {
    let mut s = format!(
        "{}: {} rows x {} tokens ({} scored), {} loop iterations\n  loss {:.6}   grad norm {:.6}   {:.2} s\n",
        r.model, r.rows, r.seq, r.scored, r.iterations, r.loss, r.grad_norm, r.seconds
    );
    if !r.unreached.is_empty() {
        s.push_str(&format!(
            "  {} parameters get no gradient on this batch (written as zeros): {}\n",
            r.unreached.len(),
            r.unreached.join(", ")
        ));
    }
    s
}
