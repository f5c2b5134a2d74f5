//! Optimized IR -> kernels and plan.
//!
//! Every compute node of every graph becomes one or more kernels, each
//! rendered from a template in `templates/mlir/` with a typed context
//! (`vocab::ctx`); identical kernels (same template, same context)
//! are emitted once and shared by every node that needs them. A fused group
//! is one kernel. Loops (their control, the carried values' buffers),
//! parameters and weights stay on the host (the runtime walks the plan's
//! graphs); the ACT rule's steps are rowwise kernels like any other op.
//!
//! The kernel ABI (all kinds except attention, which documents its own):
//! every operand of the node in IR order (activations, weights and vectors
//! as `memref<?xf32>`, token ids as `memref<?xi64>`, the loop index as
//! `index`), then the output `memref<?xf32>`, then the row count `index`.

use crate::render::Templates;
use crate::vocab::ctx::{self, is_act};
pub use crate::vocab::LowerError;
use crate::vocab::{KernelCtx, KernelTarget, Request};
use mythos_compiler::ir::{FusedOp, Graph, Module, NodeId, Op, RowOp};
use mythos_compiler::plan::{ArgKind, KernelInfo, Launch, Plan, PlanStep};
use mythos_compiler::Span;
use serde_json::Value as Json;
use std::collections::HashMap;

/// The kernels of a module as one MLIR module text, and the plan.
pub struct Lowered {
    pub mlir: String,
    pub plan: Plan,
}

/// Turns a span into `file:line:col` (the CLI knows the source files).
pub type Locate<'a> = &'a dyn Fn(Span) -> Option<(String, usize, usize)>;

/// Lowers every compute node of an optimized (at least canonicalized) module
/// for the CPU. With `partial`, nodes that cannot be lowered yet are left
/// out of the plan (the runtime runs them itself) instead of failing.
pub fn lower(module: &Module, locate: Locate, partial: bool) -> Result<Lowered, LowerError> {
    lower_for(module, locate, partial, &crate::cpu::CpuKernels)
}

/// [`lower`] for any target.
pub(crate) fn lower_for(
    module: &Module,
    locate: Locate,
    partial: bool,
    target: &dyn KernelTarget,
) -> Result<Lowered, LowerError> {
    let templates = Templates::new()?;
    let mut plan = Plan::default();
    let mut texts: Vec<String> = Vec::new();
    let mut by_key: HashMap<String, String> = HashMap::new();
    let graphs = module.graphs();
    for (_, info) in graphs.planned() {
        let (path, g) = (&info.path, info.graph);
        let order = g.topo_order().expect("a verified graph is acyclic");
        for n in order {
            let op = g.op(n);
            if !op.is_compute() || matches!(op, Op::Loop(_)) {
                continue;
            }
            let label = g.node(n).label.clone();
            let requests = requests(module, g, n).and_then(|reqs| {
                reqs.into_iter()
                    .map(|req| match target.variant(&req) {
                        Some(v) => Ok((req, v)),
                        None => Err(LowerError::NoVariant {
                            target: target.name().to_string(),
                            kind: req.template().to_string(),
                            op: op.name().to_string(),
                            label: label.clone(),
                        }),
                    })
                    .collect::<Result<Vec<_>, _>>()
            });
            let requests = match requests {
                Err(LowerError::Unsupported { .. } | LowerError::NoVariant { .. }) if partial => {
                    continue
                }
                r => r?,
            };
            let block = requests
                .first()
                .and_then(|(_, v)| v.gpu.as_ref())
                .map(|l| l.threads());
            let loc = mlir_loc(&label, g.span(n).and_then(locate));
            let mut symbols = Vec::new();
            for (req, variant) in requests {
                let mut ctx = serde_json::to_value(&req.ctx).expect("kernel contexts serialize");
                if let Json::Object(map) = &mut ctx {
                    map.extend(variant.extra);
                }
                // Kernels are named by what they compute, not where they come
                // from: the location is left out of the key.
                let key = format!("{}:{}", variant.template, ctx);
                let symbol = match by_key.get(&key) {
                    Some(s) => s.clone(),
                    None => {
                        let symbol = format!("{}_{}", req.template(), short_hash(&key));
                        let text = templates.render(
                            &variant.template,
                            &ctx,
                            &symbol,
                            &loc,
                            &format!("{} `{}` ({})", op.name(), label, path),
                        )?;
                        texts.push(text);
                        plan.kernels.push(KernelInfo {
                            symbol: symbol.clone(),
                            kind: req.template().to_string(),
                            loc: g
                                .span(n)
                                .and_then(locate)
                                .map(|(f, l, c)| format!("{f}:{l}:{c}")),
                            args: req.args.clone(),
                            gpu: variant.gpu,
                        });
                        by_key.insert(key, symbol.clone());
                        symbol
                    }
                };
                symbols.push(symbol);
            }
            let width = g.ty(n).width().unwrap_or(1);
            plan.steps.push(PlanStep {
                graph: path.clone(),
                node: n.index() as u32,
                label,
                op: op.name().to_string(),
                kernels: symbols,
                weights: weights_read(module, g, n),
                launch: Launch {
                    rows: rows_of(g, n).to_string(),
                    width,
                    bytes_per_row: width * 4,
                    block,
                },
            });
        }
    }
    let mlir = target.module(&texts);
    Ok(Lowered { mlir, plan })
}

/// `loc("label"("file":line:col))`, or a bare name location.
fn mlir_loc(label: &str, at: Option<(String, usize, usize)>) -> String {
    let label = label.replace('"', "'");
    match at {
        Some((file, line, col)) => format!(
            "loc(\"{label}\"(\"{}\":{line}:{col}))",
            file.replace('"', "'")
        ),
        None => format!("loc(\"{label}\")"),
    }
}

/// First 8 bytes of SHA-256, hex: short, stable kernel names.
fn short_hash(s: &str) -> String {
    use sha2::Digest;
    let d = sha2::Sha256::digest(s.as_bytes());
    d[..6].iter().map(|b| format!("{b:02x}")).collect()
}

fn rows_of(g: &Graph, n: NodeId) -> &'static str {
    match g.op(n) {
        Op::Head(_) => "tokens-or-batch",
        Op::Attention(_) => "tokens",
        _ if is_act(g, n) => "tokens",
        _ => "one",
    }
}

/// State-dict names of the weights a node reads (through fused bodies too).
fn weights_read(module: &Module, g: &Graph, n: NodeId) -> Vec<String> {
    g.operands(n)
        .into_iter()
        .filter_map(|o| match g.op(o) {
            Op::Weight(id) => Some(module.weight(*id).name.clone()),
            _ => None,
        })
        .collect()
}

/// Argument kinds of the generic ABI: the operands, the output, the rows.
pub(crate) fn generic_args(g: &Graph, n: NodeId) -> Vec<ArgKind> {
    let mut args: Vec<ArgKind> = g
        .operands(n)
        .into_iter()
        .map(|o| match g.op(o) {
            Op::Input => ArgKind::I64,
            // The loop index (`t`: param 2 of a body, param 0 of a header).
            Op::Param(_) if !is_act(g, o) && g.ty(o).dtype == mythos_compiler::ir::DType::I64 => {
                ArgKind::Index
            }
            _ => ArgKind::F32,
        })
        .collect();
    args.extend([ArgKind::F32, ArgKind::Index]);
    args
}

/// The kernels of one node.
fn requests(module: &Module, g: &Graph, n: NodeId) -> Result<Vec<Request>, LowerError> {
    let op = g.op(n);
    let operands = g.operands(n);
    let width = |o: NodeId| g.ty(o).width().unwrap_or(1);
    let shape = |o: NodeId| crate::ops::shape(g, o);
    let args = generic_args(g, n);
    Ok(match op {
        Op::Embedding => vec![Request::new(
            KernelCtx::Embedding(ctx::Embedding {
                vocab: shape(operands[1])[0],
                dim: module.dim,
            }),
            args,
        )],
        Op::Linear => {
            let w = shape(operands[1]);
            vec![Request::new(
                KernelCtx::Linear(ctx::Linear::plain(w[1], w[0], true)),
                args,
            )]
        }
        Op::Head(f) => {
            let table = shape(*operands.last().expect("head has a table"));
            let mut l = ctx::Linear::plain(table[1], table[0], true);
            l.set_prenorm(f.prenorm);
            vec![Request::new(KernelCtx::Linear(l), args)]
        }
        Op::Fused(f) => vec![Request::new(
            KernelCtx::Rowwise(rowwise_fused(g, n, f)),
            args,
        )],
        Op::Attention(a) => crate::attention::requests(module, a),
        // A row-local op: a one-step rowwise kernel.
        Op::Row(row) => vec![Request::new(
            KernelCtx::Rowwise(rowwise_single(g, n, *row)),
            args,
        )],
        Op::SwiGlu(_)
        | Op::Moe(_)
        | Op::ActHalt
        | Op::LtiDecay
        | Op::LoopEmbeddingVec { .. }
        | Op::LoraScale { .. }
        | Op::LoraApply { .. } => vec![crate::ops::request(g, n, op, args, &width)],
        // The composites `canonicalize` splits (the backend needs canonical
        // IR), the loop (run by the host), and values that are no kernels.
        Op::LoopEmbedding { .. }
        | Op::Lora { .. }
        | Op::LtiUpdate
        | Op::Loop(_)
        | Op::Input
        | Op::Param(_)
        | Op::Weight(_)
        | Op::Targets
        | Op::Loss
        | Op::Vjp(_)
        | Op::LoopVjp(_)
        | Op::Pick(_)
        | Op::GradSum => {
            return Err(LowerError::Unsupported {
                op: op.name().to_string(),
                label: g.node(n).label.clone(),
            })
        }
    })
}

/// A single row-local op as a one-step rowwise kernel.
fn rowwise_single(g: &Graph, n: NodeId, row: RowOp) -> ctx::Rowwise {
    let inputs: Vec<ctx::RowInput> = g
        .operands(n)
        .into_iter()
        .map(|o| ctx::RowInput::of(g, o))
        .collect();
    let args = (0..inputs.len())
        .map(|i| ctx::Src::input(i, &inputs[i]))
        .collect();
    let step = ctx::RowStep::new(0, row, g, n, args);
    let out_width = step.width;
    ctx::Rowwise {
        inputs,
        steps: vec![step],
        out_width,
        last: 0,
    }
}

/// A fused group: its body's params are the node's operands.
fn rowwise_fused(g: &Graph, n: NodeId, f: &FusedOp) -> ctx::Rowwise {
    let body = &f.body;
    let inputs: Vec<ctx::RowInput> = g
        .operands(n)
        .into_iter()
        .map(|o| ctx::RowInput::of(g, o))
        .collect();
    let order = body.topo_order().expect("a verified body is acyclic");
    let mut src: HashMap<NodeId, ctx::Src> = HashMap::new();
    let mut steps = Vec::new();
    for b in order {
        match body.op(b) {
            Op::Param(p) => {
                src.insert(b, ctx::Src::input(*p, &inputs[*p]));
            }
            op => {
                let id = steps.len();
                let args = body.operands(b).iter().map(|o| src[o].clone()).collect();
                let row = op
                    .row_op()
                    .expect("the verifier admits only row-local ops in a fused body");
                let step = ctx::RowStep::new(id, row, body, b, args);
                src.insert(b, ctx::Src::tmp(id, step.width));
                steps.push(step);
            }
        }
    }
    let out = body.outputs[0];
    let last: usize = match &src[&out] {
        ctx::Src { kind, mem, .. } if kind == "tmp" => mem[1..].parse().expect("tN"),
        _ => unreachable!("a fused body's output is computed in the body"),
    };
    ctx::Rowwise {
        out_width: steps[last].width,
        inputs,
        steps,
        last,
    }
}
