//! Optimized IR -> kernels and plan.
//!
//! Every compute node of every graph becomes one or more kernels, each
//! rendered from a template in `templates/mlir/` with a typed context
//! (`ctx` structs below); identical kernels (same template, same context)
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
use mythos_compiler::ir::{ActStep, Dim, FusedOp, Graph, Module, NodeId, Op};
use mythos_compiler::plan::{ArgKind, KernelInfo, Launch, Plan, PlanStep};
use mythos_compiler::Span;
use serde::Serialize;
use serde_json::Value as Json;
use std::collections::HashMap;

/// Why a module cannot be lowered.
#[derive(Debug, thiserror::Error)]
pub enum LowerError {
    #[error("the MLIR backend cannot lower `{op}` ({label}) yet; run it with the CPU reference runtime (--backend cpu)")]
    Unsupported { op: String, label: String },
    #[error("no {target} kernel for `{kind}` yet (needed by `{op}` {label}); compile with partial lowering or run it on another backend")]
    NoVariant {
        target: String,
        kind: String,
        op: String,
        label: String,
    },
    #[error("kernel template `{template}` failed to render: {message}")]
    Template { template: String, message: String },
}

/// The kernels of a module as one MLIR module text, and the plan.
pub struct Lowered {
    pub mlir: String,
    pub plan: Plan,
}

/// Turns a span into `file:line:col` (the CLI knows the source files).
pub type Locate<'a> = &'a dyn Fn(Span) -> Option<(String, usize, usize)>;

/// A kernel's typed context: one variant per kernel kind, each named as its
/// template (`templates/mlir/<kind>.mlir.tera`). Serialized as the bare
/// struct for the templates.
#[derive(Serialize)]
#[serde(untagged)]
pub(crate) enum KernelCtx {
    Rowwise(ctx::Rowwise),
    Linear(ctx::Linear),
    Embedding(ctx::Embedding),
    SwiGlu(crate::ops::ctx::SwiGlu),
    Moe(crate::ops::ctx::Moe),
    ActHalt(crate::ops::ctx::Dim),
    LtiDecay(crate::ops::ctx::Dim),
    LoopEmbeddingVec(crate::ops::ctx::LoopEmbeddingVec),
    LoraScale(crate::ops::ctx::LoraScale),
    LoraApply(crate::ops::ctx::LoraApply),
    AttentionGqaProj(crate::attention::GqaProj),
    AttentionMlaProj(crate::attention::MlaProj),
    AttentionMlaExpand(crate::attention::MlaShape),
    AttentionCore(crate::attention::Core),
    AttentionMlaAbsorbed(crate::attention::MlaAbsorbed),
}

impl KernelCtx {
    /// The kernel kind: its template's name.
    pub fn template(&self) -> &'static str {
        match self {
            KernelCtx::Rowwise(_) => "rowwise",
            KernelCtx::Linear(_) => "linear",
            KernelCtx::Embedding(_) => "embedding",
            KernelCtx::SwiGlu(_) => "swiglu",
            KernelCtx::Moe(_) => "moe",
            KernelCtx::ActHalt(_) => "act_halt",
            KernelCtx::LtiDecay(_) => "lti_decay",
            KernelCtx::LoopEmbeddingVec(_) => "loop_embedding_vec",
            KernelCtx::LoraScale(_) => "lora_scale",
            KernelCtx::LoraApply(_) => "lora_apply",
            KernelCtx::AttentionGqaProj(_) => "attention_gqa_proj",
            KernelCtx::AttentionMlaProj(_) => "attention_mla_proj",
            KernelCtx::AttentionMlaExpand(_) => "attention_mla_expand",
            KernelCtx::AttentionCore(_) => "attention_core",
            KernelCtx::AttentionMlaAbsorbed(_) => "attention_mla_absorbed",
        }
    }
}

/// One kernel a node needs: its typed context and argument kinds.
pub(crate) struct Request {
    pub ctx: KernelCtx,
    /// Argument kinds in call order.
    pub args: Vec<ArgKind>,
}

impl Request {
    pub(crate) fn new(ctx: KernelCtx, args: Vec<ArgKind>) -> Request {
        Request { ctx, args }
    }

    pub(crate) fn template(&self) -> &'static str {
        self.ctx.template()
    }
}

/// How a target renders the kernels: the CPU uses each kind's template as
/// it is; CUDA (`crate::cuda`) picks a GPU variant of each kind.
pub(crate) trait KernelTarget {
    /// Names the target in messages (`GPU`).
    fn name(&self) -> &str;
    /// This target's variant of a kernel, or `None` when it has none yet.
    fn variant(&self, req: &Request) -> Option<Variant>;
    /// The module text around the rendered kernels.
    fn module(&self, kernels: &[String]) -> String;
}

/// The template a target renders for a kernel, what it adds to the
/// kernel's context, and (CUDA) how the kernel is launched.
pub(crate) struct Variant {
    pub template: String,
    pub extra: serde_json::Map<String, Json>,
    pub gpu: Option<mythos_compiler::plan::GpuLaunch>,
}

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

/// Whether a value has one row per token (rather than being a vector).
pub(crate) fn is_act(g: &Graph, n: NodeId) -> bool {
    g.ty(n).shape.iter().any(|d| !matches!(d, Dim::Const(_)))
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
        Op::Add | Op::Scale | Op::LtiApply | Op::AddPrefix | Op::RmsNorm { .. } | Op::Concat => {
            debug_assert!(FusedOp::admits(op), "row-local ops are the fusable ones");
            vec![Request::new(KernelCtx::Rowwise(rowwise_single(g, n)), args)]
        }
        // Row-local too, but never fused: their `[B, T, 1]` operands are
        // read at column 0 of the row, which a GPU thread holding other
        // columns of an earlier step could not do.
        Op::Act(_) => vec![Request::new(KernelCtx::Rowwise(rowwise_single(g, n)), args)],
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
        | Op::Weight(_) => {
            return Err(LowerError::Unsupported {
                op: op.name().to_string(),
                label: g.node(n).label.clone(),
            })
        }
    })
}

/// A single row-local op as a one-step rowwise kernel.
fn rowwise_single(g: &Graph, n: NodeId) -> ctx::Rowwise {
    let inputs: Vec<ctx::RowInput> = g
        .operands(n)
        .into_iter()
        .map(|o| ctx::RowInput::of(g, o))
        .collect();
    let args = (0..inputs.len())
        .map(|i| ctx::Src::input(i, &inputs[i]))
        .collect();
    let step = ctx::RowStep::new(0, g.op(n), g, n, args);
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
                let step = ctx::RowStep::new(id, op, body, b, args);
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

/// Typed template contexts, one per kernel template.
pub(crate) mod ctx {
    use super::*;

    #[derive(Serialize)]
    pub struct Embedding {
        pub vocab: u64,
        pub dim: u64,
    }

    #[derive(Serialize)]
    pub struct Linear {
        pub k: u64,
        pub n: u64,
        /// `x @ W^T` (W as `[n, k]`) rather than `x @ W` (W as `[k, n]`).
        pub transpose_b: bool,
        pub prenorm: bool,
        /// The prologue RMSNorm's epsilon as an exact f32 literal.
        pub eps: String,
        pub eps_text: String,
        pub residual: bool,
    }

    impl Linear {
        pub fn plain(k: u64, n: u64, transpose_b: bool) -> Linear {
            Linear {
                k,
                n,
                transpose_b,
                prenorm: false,
                eps: String::new(),
                eps_text: String::new(),
                residual: false,
            }
        }

        pub fn set_prenorm(&mut self, eps: Option<f64>) {
            if let Some(eps) = eps {
                self.prenorm = true;
                self.eps = f32_literal(eps);
                self.eps_text = format!("{eps:e}");
            }
        }
    }

    /// An f32 constant written exactly (MLIR hex float literal).
    pub fn f32_literal(v: f64) -> String {
        format!("0x{:08X}", (v as f32).to_bits())
    }

    #[derive(Serialize)]
    pub struct Rowwise {
        pub inputs: Vec<RowInput>,
        pub steps: Vec<RowStep>,
        pub out_width: u64,
        /// The step whose result is the output.
        pub last: usize,
    }

    #[derive(Serialize, Clone)]
    pub struct RowInput {
        /// `act` (one row per token) or `vec`.
        pub kind: String,
        pub width: u64,
    }

    impl RowInput {
        pub fn of(g: &Graph, o: NodeId) -> RowInput {
            RowInput {
                kind: if is_act(g, o) { "act" } else { "vec" }.into(),
                width: g.ty(o).width().unwrap_or(1),
            }
        }
    }

    /// Where a row step reads an operand (see `macros.tera`).
    #[derive(Serialize, Clone)]
    pub struct Src {
        pub kind: String,
        pub mem: String,
        pub base: String,
        pub width: u64,
    }

    impl Src {
        pub fn input(i: usize, inp: &RowInput) -> Src {
            Src {
                kind: inp.kind.clone(),
                mem: format!("in{i}"),
                base: format!("base{i}"),
                width: inp.width,
            }
        }

        pub fn tmp(id: usize, width: u64) -> Src {
            Src {
                kind: "tmp".into(),
                mem: format!("t{id}"),
                base: String::new(),
                width,
            }
        }
    }

    #[derive(Serialize)]
    pub struct RowStep {
        pub id: usize,
        pub kind: String,
        pub width: u64,
        pub args: Vec<Src>,
        pub eps: String,
        /// add_prefix: channels of the added vector; concat: width of the first part.
        pub prefix: u64,
        /// concat: width of the second part.
        pub suffix: u64,
        pub loc: String,
    }

    impl RowStep {
        pub fn new(id: usize, op: &Op, g: &Graph, n: NodeId, args: Vec<Src>) -> RowStep {
            let width = g.ty(n).width().unwrap_or(1);
            // `eps` holds the rmsnorm epsilon or the ACT threshold.
            let (kind, eps) = match op {
                Op::Add => ("add", String::new()),
                Op::Scale => ("scale", String::new()),
                Op::LtiApply => ("lti_apply", String::new()),
                Op::AddPrefix => ("add_prefix", String::new()),
                Op::Concat => ("concat", String::new()),
                Op::RmsNorm { eps } => ("rmsnorm", f32_literal(*eps)),
                Op::Act(step) => {
                    let kind = match step {
                        ActStep::Weight { .. } => "act_weight",
                        ActStep::Accumulate => "act_accumulate",
                        ActStep::Cumulate => "act_cumulate",
                        ActStep::Halted { .. } => "act_halted",
                    };
                    (kind, step.threshold().map_or_else(String::new, f32_literal))
                }
                other => unreachable!("`{}` is not row-local", other.name()),
            };
            let prefix = match op {
                Op::AddPrefix | Op::Concat => args
                    .get(if matches!(op, Op::Concat) { 0 } else { 1 })
                    .map_or(0, |s: &Src| s.width),
                _ => 0,
            };
            let suffix = if matches!(op, Op::Concat) {
                args[1].width
            } else {
                0
            };
            RowStep {
                id,
                kind: kind.into(),
                width,
                args,
                eps,
                prefix,
                suffix,
                loc: String::new(),
            }
        }
    }
}
