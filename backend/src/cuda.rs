//! The CUDA target: the same kernels (same kinds, same typed contexts, same
//! argument order) as GPU variants, rendered from `templates/mlir/gpu/` into
//! one `gpu.module @kernels` of `gpu.func ... kernel`s with real block and
//! thread mapping, lowered to NVVM and emitted as PTX by LLVM's NVPTX
//! backend (`gpu-module-to-binary{format=isa}`). No CUDA toolkit is needed.
//!
//! Adding a GPU variant of a kernel kind is one template
//! (`templates/mlir/gpu/<kind>.mlir.tera`, embedded by `build.rs`)
//! and one arm in `CudaKernels::variant` saying how it is launched; the
//! match is over the typed [`KernelCtx`], so a new kind without an arm does
//! not build.
//!
//! Math: `convert-gpu-to-nvvm` turns `math.exp` and friends into libdevice
//! calls (`__nv_expf`), which would need `libdevice.10.bc` at compile time.
//! The GPU templates use NVVM intrinsics instead (`templates/mlir/gpu/macros.tera`),
//! and [`ptx`] rejects PTX with any `.extern`.

use crate::mlir::{Error, Toolchain};
use crate::vocab::ctx::{f32_literal, Rowwise};
use crate::vocab::{KernelCtx, KernelTarget, Request, Variant};
use melior::ir::Module;
use mythos_compiler::plan::{GpuLaunch, GridDim};
use serde_json::{json, Map, Value as Json};

/// The GPU variants of the kernel kinds.
pub(crate) struct CudaKernels;

impl KernelTarget for CudaKernels {
    fn name(&self) -> &str {
        "GPU"
    }

    /// One arm per kernel kind (exhaustive over [`KernelCtx`]): its GPU
    /// template, the launch, and the context entries the template needs
    /// besides the kind's own context. `None`: no GPU variant yet.
    fn variant(&self, req: &Request) -> Option<Variant> {
        Some(match &req.ctx {
            KernelCtx::Rowwise(c) => rowwise(c),
            KernelCtx::Linear(c) => gpu(
                "linear",
                [256, 1, 1],
                [GridDim::Fixed(blocks(c.n, 64)), GridDim::rows(64), one()],
                Map::new(),
            ),
            KernelCtx::Embedding(c) => per_row("embedding", threads(c.dim, 4)),
            KernelCtx::SwiGlu(c) => ffn("swiglu", c.dim, c.hidden, 0),
            KernelCtx::Moe(c) => ffn("moe", c.dim, c.hmax, 2 * c.experts),
            KernelCtx::ActHalt(c) => per_row("act_halt", threads(c.dim, 8)),
            KernelCtx::LoraApply(c) => per_row("lora_apply", threads(c.dim, 8)),
            KernelCtx::LtiDecay(c) => gpu(
                "lti_decay",
                [256, 1, 1],
                [GridDim::Fixed(blocks(c.dim, 256)), one(), one()],
                Map::new(),
            ),
            KernelCtx::LoraScale(c) => single("lora_scale", threads(c.rank, 1), Map::new()),
            KernelCtx::LoopEmbeddingVec(c) => {
                let theta = f32_of_literal(&c.theta);
                let mut extra = Map::new();
                extra.insert(
                    "log2_theta".into(),
                    json!(f32_literal(f64::from(theta).log2())),
                );
                single("loop_embedding_vec", threads(c.channels, 1).min(256), extra)
            }
            KernelCtx::AttentionGqaProj(c) => staged(per_row("attention_gqa_proj", 256), c.dim, 0),
            KernelCtx::AttentionMlaProj(c) => staged(
                per_row("attention_mla_proj", 256),
                c.dim,
                c.q_rank + c.lat_width,
            ),
            KernelCtx::AttentionMlaExpand(_) => per_size("attention_mla_expand", "len"),
            KernelCtx::AttentionCore(c) => attention("attention_core", c.heads, "vslots", c.vd),
            KernelCtx::AttentionMlaAbsorbed(c) => attention(
                "attention_mla_absorbed",
                c.shape.heads,
                "rslots",
                c.shape.kv_rank,
            ),
        })
    }

    fn module(&self, kernels: &[String]) -> String {
        let mut mlir =
            String::from("module attributes {gpu.container_module} {\ngpu.module @kernels {\n");
        for t in kernels {
            mlir.push_str(t.trim_end());
            mlir.push_str("\n\n");
        }
        mlir.push_str("}\n}\n");
        mlir
    }
}

/// A variant rendered from `gpu/<kind>` with a `block` entry (threads in x).
fn gpu(kind: &str, block: [u32; 3], grid: [GridDim; 3], mut extra: Map<String, Json>) -> Variant {
    extra.insert("block".into(), json!(block[0]));
    Variant {
        template: format!("gpu/{kind}"),
        extra,
        gpu: Some(GpuLaunch { block, grid }),
    }
}

/// One block of `threads` per row.
fn per_row(kind: &str, threads: u32) -> Variant {
    gpu(
        kind,
        [threads, 1, 1],
        [GridDim::rows(1), one(), one()],
        Map::new(),
    )
}

/// One block of 256 threads per unit of the kernel's `index` argument `size`.
fn per_size(kind: &str, size: &str) -> Variant {
    let grid = GridDim::CeilDiv {
        size: size.into(),
        per_block: 1,
    };
    gpu(kind, [256, 1, 1], [grid, one(), one()], Map::new())
}

/// Attention over the cache: one block of 256 threads per new token, a warp
/// per head (8 at a time: `hiters` rounds); each lane keeps `slots` =
/// ceil(width / 32) partial outputs (value dims or latent ranks) in registers.
fn attention(kind: &str, heads: u64, slots: &str, width: u64) -> Variant {
    let mut v = per_size(kind, "tokens");
    v.extra.insert(slots.into(), json!(width.div_ceil(32)));
    v.extra.insert("hiters".into(), json!(heads.div_ceil(8)));
    v
}

/// One block for the whole (vector) output.
fn single(kind: &str, threads: u32, extra: Map<String, Json>) -> Variant {
    gpu(kind, [threads, 1, 1], [one(), one(), one()], extra)
}

/// SwiGLU and MoE: one block of 256 threads per row; hidden activations go
/// through shared memory in chunks of at most 2048 units.
fn ffn(kind: &str, dim: u64, hidden: u64, other_floats: u64) -> Variant {
    let chunk = hidden.clamp(1, 2048);
    let mut v = per_row(kind, 256);
    v.extra.insert("chunk".into(), json!(chunk));
    staged(v, dim, chunk + other_floats)
}

/// Sets `stage`: whether the kernel keeps its (normalized) input row of
/// `dim` floats in shared memory beside `other_floats` of its own, or, for
/// rows too long for that, recomputes elements from the input where they
/// are read (`row_*` in `templates/mlir/gpu/macros.tera`).
fn staged(mut v: Variant, dim: u64, other_floats: u64) -> Variant {
    // 1 KiB left for the scratch of block reductions.
    let stage = (dim + other_floats) * 4 + 1024 <= MAX_STATIC_SHARED;
    v.extra.insert("stage".into(), json!(stage));
    v
}

/// Rowwise and fused groups: one block per row; each thread keeps
/// `slots = ceil(width / block)` columns of every step in registers.
fn rowwise(c: &Rowwise) -> Variant {
    let widest = c
        .steps
        .iter()
        .map(|s| s.width)
        .chain([c.out_width])
        .max()
        .unwrap_or(1);
    let block = threads(widest, 8);
    let slots: Map<String, Json> = c
        .steps
        .iter()
        .map(|s| {
            (
                format!("t{}", s.id),
                json!(blocks(s.width, u64::from(block))),
            )
        })
        .collect();
    let mut v = per_row("rowwise", block);
    v.extra.insert("slots".into(), Json::Object(slots));
    v
}

/// Threads per block for `width` columns at about `per_thread` columns a
/// thread: a multiple of 32 (whole warps) from 32 to 1024.
fn threads(width: u64, per_thread: u64) -> u32 {
    let t = width.div_ceil(per_thread).next_multiple_of(32);
    t.clamp(32, 1024) as u32
}

/// `ceil(size / per_block)`, at least 1.
fn blocks(size: u64, per_block: u64) -> u32 {
    size.div_ceil(per_block).max(1) as u32
}

fn one() -> GridDim {
    GridDim::Fixed(1)
}

/// The value of an exact f32 literal (`0x3F800000`) from a kernel context.
fn f32_of_literal(lit: &str) -> f32 {
    let bits = lit
        .strip_prefix("0x")
        .and_then(|h| u32::from_str_radix(h, 16).ok());
    f32::from_bits(bits.unwrap_or_else(|| panic!("not an f32 literal: {lit:?}")))
}

/// GPU architectures the CUDA target accepts: `sm_80` and newer (the kernels
/// use `max.NaN.f32`, an sm_80 instruction).
pub fn check_arch(arch: &str) -> Result<(), Error> {
    match arch.strip_prefix("sm_").and_then(|n| n.parse::<u32>().ok()) {
        Some(n) if n >= 80 => Ok(()),
        _ => Err(Error::Other(format!(
            "unsupported CUDA architecture `{arch}`: use sm_80 or newer (sm_80, sm_86, sm_89, sm_90)"
        ))),
    }
}

/// Kernel module (gpu.func over scf/memref/arith) -> NVVM/LLVM dialect
/// inside the `gpu.module`, with the NVVM target attached.
pub fn nvvm_pipeline(arch: &str) -> String {
    format!(
        "builtin.module(\
         nvvm-attach-target{{chip={arch} features=+ptx80 O=3}},\
         gpu.module(convert-scf-to-cf,convert-gpu-to-nvvm,canonicalize,cse),\
         reconcile-unrealized-casts)"
    )
}

/// The NVVM/LLVM dialect `gpu.module` -> `gpu.binary` holding PTX text.
pub const PTX_PIPELINE: &str = "builtin.module(gpu-module-to-binary{format=isa})";

/// Lowers a verified kernel module to the NVVM/LLVM dialect in place.
pub fn lower_to_nvvm(tc: &Toolchain, module: &mut Module, arch: &str) -> Result<(), Error> {
    check_arch(arch)?;
    tc.run_pipeline(module, &nvvm_pipeline(arch))
}

/// The PTX of a module lowered by [`lower_to_nvvm`], as `(gpu.module name,
/// PTX text)`; fails when the PTX calls anything external (libdevice).
pub fn ptx(tc: &Toolchain, module: &mut Module) -> Result<Vec<(String, String)>, Error> {
    tc.run_pipeline(module, PTX_PIPELINE)?;
    let ptx = tc.ptx(module)?;
    if ptx.is_empty() {
        return Err(Error::Other(format!(
            "gpu-module-to-binary produced no PTX:\n{}",
            module.as_operation()
        )));
    }
    for (name, text) in &ptx {
        for (kernel, bytes) in shared_bytes(text) {
            if bytes > MAX_STATIC_SHARED {
                return Err(Error::Other(format!(
                    "GPU kernel `{kernel}` needs {bytes} bytes of shared memory, more than the \
                     {MAX_STATIC_SHARED} a kernel can declare statically: the model is too wide \
                     for this kernel's GPU variant yet (it would need dynamic shared memory)"
                )));
            }
        }
        let externs: Vec<&str> = text
            .lines()
            .filter(|l| l.trim_start().starts_with(".extern"))
            .collect();
        if !externs.is_empty() {
            return Err(Error::Other(format!(
                "the PTX of `{name}` calls external functions it cannot load with \
                 (a compiler bug; a GPU template uses a math op without a macro?):\n{}",
                externs.join("\n")
            )));
        }
    }
    Ok(ptx)
}

/// The most static shared memory a kernel may declare (CUDA's 48 KiB; more
/// needs dynamic shared memory and an opt-in at launch).
pub const MAX_STATIC_SHARED: u64 = 48 * 1024;

/// Static shared memory per kernel, bytes, from the `.shared` declarations
/// (`__wg_<kernel>_<n>...`: the kernel's workgroup buffers and the scratch of
/// its block reductions, as arrays `.b8 name[bytes]` or, after LLVM split
/// them, scalars `.f32 name`).
pub fn shared_bytes(ptx: &str) -> std::collections::BTreeMap<String, u64> {
    let entries: Vec<&str> = ptx
        .match_indices(".entry ")
        .filter_map(|(i, _)| ptx[i + 7..].split(['(', ' ', '\n']).next())
        .collect();
    let mut out: std::collections::BTreeMap<String, u64> =
        entries.iter().map(|e| (e.to_string(), 0)).collect();
    for line in ptx.lines().map(str::trim) {
        let Some(decl) = line.strip_prefix(".shared") else {
            continue;
        };
        let words: Vec<&str> = decl.trim_end_matches(';').split_whitespace().collect();
        let Some((name, ty)) = words.last().zip(words.iter().rev().nth(1)) else {
            continue;
        };
        let (name, count) = match name.split_once('[') {
            Some((n, c)) => (n, c.trim_end_matches(']').parse::<u64>().unwrap_or(0)),
            None => (*name, 1),
        };
        let size: u64 = match &ty[ty.len().saturating_sub(2)..] {
            "b8" | "u8" | "s8" => 1,
            "16" => 2,
            "64" => 8,
            _ => 4,
        };
        let kernel = entries
            .iter()
            .find(|e| name.starts_with(&format!("__wg_{e}_")))
            .map_or("(module)", |e| e);
        *out.entry(kernel.to_string()).or_insert(0) += size * count;
    }
    out
}

/// The PTX of each GPU module as one byte string: the texts one after
/// another, each preceded by a line `// mythos-ptx-module <name> <bytes>`.
/// With the one module the backend emits, `code` is that module's PTX
/// after one header line.
pub fn bundle(ptx: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, text) in ptx {
        out.extend_from_slice(format!("// mythos-ptx-module {name} {}\n", text.len()).as_bytes());
        out.extend_from_slice(text.as_bytes());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kernels::{lower_for, LowerError};
    use mythos_compiler::sema::{self, Loader};

    /// The CUDA kernels without an embedding variant.
    struct NoEmbedding;

    impl KernelTarget for NoEmbedding {
        fn name(&self) -> &str {
            "GPU"
        }
        fn variant(&self, req: &Request) -> Option<Variant> {
            (req.template() != "embedding").then(|| CudaKernels.variant(req))?
        }
        fn module(&self, kernels: &[String]) -> String {
            CudaKernels.module(kernels)
        }
    }

    fn tiny_gqa() -> mythos_compiler::ir::Module {
        let mut loader = Loader::new();
        let checked = sema::check_file(&mut loader, "@tiny-gqa");
        let mut m = mythos_compiler::ir::lower::lower(&checked.models[0]);
        let opts = mythos_compiler::passes::Options {
            level: 2,
            ..Default::default()
        };
        mythos_compiler::passes::run(&mut m, &opts).unwrap();
        m
    }

    #[test]
    fn a_kind_without_gpu_variant_fails_unless_partial() {
        let m = tiny_gqa();
        let e = lower_for(&m, &|_| None, false, &NoEmbedding).err().unwrap();
        assert!(matches!(e, LowerError::NoVariant { .. }));
        let text = e.to_string();
        assert!(text.contains("no GPU kernel for `embedding` yet"), "{text}");
        let partial = lower_for(&m, &|_| None, true, &NoEmbedding).unwrap();
        assert!(partial.plan.steps.iter().all(|s| s.op != "embedding"));
        assert!(!partial.plan.steps.is_empty());
    }

    #[test]
    fn every_kind_has_a_launch_and_a_gpu_func() {
        let l = lower_for(&tiny_gqa(), &|_| None, false, &CudaKernels).unwrap();
        assert!(l
            .mlir
            .starts_with("module attributes {gpu.container_module}"));
        for k in &l.plan.kernels {
            let launch = k.gpu.as_ref().expect("a GPU launch");
            assert!(launch.threads() % 32 == 0 && launch.threads() <= 1024);
            assert!(l.mlir.contains(&format!("gpu.func @{}(", k.symbol)));
        }
        for s in &l.plan.steps {
            assert!(s.launch.block.is_some(), "{}", s.label);
        }
    }

    /// A concat whose second part is an earlier step (no preset has one)
    /// stages it through shared memory; the kernel lowers to PTX.
    #[test]
    fn rowwise_concat_of_a_step_goes_through_shared_memory() {
        use crate::vocab::ctx::{RowInput, RowStep, Rowwise, Src};
        let src = |kind: &str, mem: &str, base: &str, width: u64| Src {
            kind: kind.into(),
            mem: mem.into(),
            base: base.into(),
            width,
        };
        let step =
            |id: usize, kind: &str, width: u64, args: Vec<Src>, prefix: u64, suffix: u64| RowStep {
                id,
                kind: kind.into(),
                width,
                args,
                eps: String::new(),
                prefix,
                suffix,
                loc: String::new(),
            };
        let input = |kind: &str, width: u64| RowInput {
            kind: kind.into(),
            width,
        };
        let rowwise = Rowwise {
            inputs: vec![input("act", 64), input("act", 32), input("vec", 32)],
            steps: vec![
                step(
                    0,
                    "add",
                    32,
                    vec![src("act", "in1", "base1", 32), src("vec", "in2", "", 32)],
                    0,
                    0,
                ),
                step(
                    1,
                    "concat",
                    96,
                    vec![src("act", "in0", "base0", 64), src("tmp", "t0", "", 32)],
                    64,
                    32,
                ),
            ],
            out_width: 96,
            last: 1,
        };
        let req = Request::new(KernelCtx::Rowwise(rowwise), vec![]);
        let ctx = serde_json::to_value(&req.ctx).unwrap();
        let v = CudaKernels.variant(&req).unwrap();
        let mut ctx = ctx;
        ctx.as_object_mut().unwrap().extend(v.extra);
        let text = crate::render::Templates::new()
            .unwrap()
            .render(&v.template, &ctx, "k", "loc(\"k\")", "test")
            .unwrap();
        assert!(text.contains("workgroup(%sh1: memref<32xf32"), "{text}");
        let tc = Toolchain::new();
        let mut m = tc.parse(&CudaKernels.module(&[text])).unwrap();
        lower_to_nvvm(&tc, &mut m, "sm_90").unwrap();
        let ptx = ptx(&tc, &mut m).unwrap();
        assert!(ptx[0].1.contains("bar.sync"));
        assert_eq!(shared_bytes(&ptx[0].1)["k"], 128);
    }

    #[test]
    fn arch_names() {
        assert!(check_arch("sm_80").is_ok() && check_arch("sm_90").is_ok());
        assert!(check_arch("sm_75").is_err() && check_arch("gfx90a").is_err());
    }
}
