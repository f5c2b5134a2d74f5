//! Optimization passes over the graph IR and the pass manager that runs them.
//!
//! A pass is a plain function `fn(&mut Module) -> usize` (the number of
//! rewrites it made) listed once in [`PASSES`]. `-O0` runs nothing (the IR as
//! lowered, OpenMythos's structure), `-O1` the cleanups and hoisting, `-O2`
//! everything. Every pass keeps logits unchanged up to float reassociation
//! (the runtime equivalence tests hold them to 1e-5 relative), and the
//! verifier can run after each one (`--verify-each`; always in tests).

mod attention;
mod cleanup;
mod fuse;
mod hoist;

use crate::ir::{infer, print, verify, Graph, Module, NodeId, Op, TensorType, Weight};
use std::time::{Duration, Instant};

/// One pass: its name on the command line, what it does, and the function.
pub struct Pass {
    pub name: &'static str,
    pub summary: &'static str,
    pub run: fn(&mut Module) -> usize,
}

/// Every pass, in the order `-O2` runs them.
pub const PASSES: &[Pass] = &[
    Pass {
        name: "canonicalize",
        summary: "split composite loop ops into their invariant and per-step parts \
                  (lti_update -> lti_decay + scale + lti_apply, loop_embedding, lora)",
        run: cleanup::canonicalize,
    },
    Pass {
        name: "cse",
        summary: "merge nodes that compute the same op on the same operands",
        run: cleanup::cse,
    },
    Pass {
        name: "hoist",
        summary: "move loop-invariant values (B*e, the LTI decay) before the loop and \
                  per-iteration constants (loop embedding, LoRA scale) into the loop header",
        run: hoist::hoist,
    },
    Pass {
        name: "expert-batching",
        summary: "MoE: permute tokens by expert, one grouped GEMM per projection, \
                  un-permute weighted by the gates",
        run: attention::expert_batching,
    },
    Pass {
        name: "mla-absorb",
        summary:
            "MLA decode: fold kv_up into the query and the output, attend over the latent cache",
        run: attention::mla_absorb,
    },
    Pass {
        name: "compact-kv",
        summary: "MLA: store the rope key once per token, not once per head",
        run: attention::compact_kv,
    },
    Pass {
        name: "fuse",
        summary: "fold norms into the consumer's prologue and residual adds into the \
                  producer's epilogue; group row-local chains into fused kernels",
        run: fuse::fuse,
    },
    Pass {
        name: "dce",
        summary: "remove nodes no output depends on",
        run: cleanup::dce,
    },
];

/// The passes an optimization level runs, in order.
pub fn pipeline(level: u8) -> Vec<&'static str> {
    match level {
        0 => vec![],
        1 => vec!["canonicalize", "cse", "hoist", "dce"],
        _ => vec![
            "canonicalize",
            "cse",
            "hoist",
            "expert-batching",
            "mla-absorb",
            "compact-kv",
            "fuse",
            "dce",
        ],
    }
}

/// How to run the pipeline (`-O`, `--passes`, `--print-ir-after`, `--verify-each`).
#[derive(Clone, Debug, Default)]
pub struct Options {
    pub level: u8,
    /// An explicit pass list, replacing the level's.
    pub passes: Option<Vec<String>>,
    /// Print the IR after this pass (`all`: after every pass).
    pub print_ir_after: Option<String>,
    pub verify_each: bool,
}

/// What the pipeline did: per pass, its time and how many rewrites it made.
#[derive(Clone, Debug, Default)]
pub struct Report {
    pub passes: Vec<(&'static str, Duration, usize)>,
    /// The IR text printed after passes, as `(pass, text)`.
    pub printed: Vec<(&'static str, String)>,
}

/// Why the pipeline could not run.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum PassError {
    #[error("unknown pass `{name}`{}", did_you_mean(.suggestion))]
    Unknown {
        name: String,
        suggestion: Option<&'static str>,
    },
    #[error("the IR is invalid after pass `{pass}` (a compiler bug; please report it with the spec):\n{errors}")]
    Invalid { pass: &'static str, errors: String },
}

fn did_you_mean(s: &Option<&'static str>) -> String {
    match s {
        Some(n) => format!(" (did you mean `{n}`?)"),
        None => {
            let names: Vec<&str> = PASSES.iter().map(|p| p.name).collect();
            format!("; the passes are: {}", names.join(", "))
        }
    }
}

fn find(name: &str) -> Result<&'static Pass, PassError> {
    PASSES
        .iter()
        .find(|p| p.name == name)
        .ok_or_else(|| PassError::Unknown {
            name: name.to_string(),
            suggestion: crate::suggest::closest(name, PASSES.iter().map(|p| p.name)),
        })
}

/// Checks pass names (for `--passes` and `--print-ir-after`) before any work.
pub fn validate(opts: &Options) -> Result<(), PassError> {
    for name in opts.passes.iter().flatten() {
        find(name)?;
    }
    match opts.print_ir_after.as_deref() {
        Some("all") | None => Ok(()),
        Some(name) => find(name).map(|_| ()),
    }
}

/// Runs the pipeline on `module`.
pub fn run(module: &mut Module, opts: &Options) -> Result<Report, PassError> {
    validate(opts)?;
    let names: Vec<String> = match &opts.passes {
        Some(list) => list.clone(),
        None => pipeline(opts.level).into_iter().map(String::from).collect(),
    };
    let mut report = Report::default();
    for name in &names {
        let pass = find(name)?;
        let started = Instant::now();
        let changes = (pass.run)(module);
        report.passes.push((pass.name, started.elapsed(), changes));
        if opts.verify_each {
            let errors = verify::verify(module);
            if !errors.is_empty() {
                let errors: Vec<String> = errors.iter().map(|e| format!("  {e}")).collect();
                return Err(PassError::Invalid {
                    pass: pass.name,
                    errors: errors.join("\n"),
                });
            }
        }
        match opts.print_ir_after.as_deref() {
            Some("all") => report.printed.push((pass.name, print::text(module))),
            Some(p) if p == pass.name => report.printed.push((pass.name, print::text(module))),
            _ => {}
        }
    }
    Ok(report)
}

/// The `--timings` table.
pub fn timings_table(report: &Report) -> String {
    let mut s = String::from("pass              time      rewrites\n");
    let mut total = Duration::ZERO;
    for (name, t, n) in &report.passes {
        s.push_str(&format!(
            "{name:<16} {:>7.3} ms {n:>9}\n",
            t.as_secs_f64() * 1e3
        ));
        total += *t;
    }
    s.push_str(&format!(
        "{:<16} {:>7.3} ms\n",
        "total",
        total.as_secs_f64() * 1e3
    ));
    s
}

/// Calls `f` on every graph: `g`, then the loop headers and bodies and fused
/// bodies inside it (outer first). Returns the sum of `f`'s counts.
fn each_graph(g: &mut Graph, f: &mut dyn FnMut(&mut Graph) -> usize) -> usize {
    let mut n = f(g);
    let ids: Vec<NodeId> = g.nodes().collect();
    for id in ids {
        match &mut g.node_mut(id).op {
            Op::Loop(region) => {
                n += each_graph(&mut region.header, f);
                n += each_graph(&mut region.body, f);
            }
            Op::Fused(fused) => n += each_graph(&mut fused.body, f),
            _ => {}
        }
    }
    n
}

/// Adds a node typed by the IR's rules (passes only build well-typed nodes;
/// a failure is a compiler bug).
fn add_typed(
    g: &mut Graph,
    weights: &[Weight],
    op: Op,
    operands: &[NodeId],
    label: &str,
) -> NodeId {
    let types: Vec<&TensorType> = operands.iter().map(|&o| g.ty(o)).collect();
    let ty = infer(&op, &types, weights)
        .unwrap_or_else(|e| panic!("a pass built an ill-typed {label}: {e} (a compiler bug)"));
    g.add(op, operands, ty, label)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn levels_name_known_passes_and_o2_runs_them_all() {
        for level in 0..=2 {
            for name in pipeline(level) {
                assert!(find(name).is_ok(), "{name}");
            }
        }
        assert_eq!(pipeline(2).len(), PASSES.len());
    }

    #[test]
    fn unknown_pass_suggests_the_closest() {
        let opts = Options {
            passes: Some(vec!["hoistt".into()]),
            ..Options::default()
        };
        let e = validate(&opts).unwrap_err();
        assert_eq!(
            e.to_string(),
            "unknown pass `hoistt` (did you mean `hoist`?)"
        );
    }
}
