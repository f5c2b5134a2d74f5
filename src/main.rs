//! `mythos`: the command-line edge of the compiler. Errors from the libraries
//! arrive as diagnostics (rendered here, exit code 1); anything else that goes
//! wrong (I/O on output files, unreadable artifacts) is an `anyhow` error,
//! also exit code 1.

use anyhow::{Context, Result};
use clap::{Parser, Subcommand, ValueEnum};
use mythos_compiler::diag::{self, Code};
use mythos_compiler::sema::{self, Loader};
use mythos_compiler::{
    analysis, fmt, interop::openmythos, ir, passes, presets, report, Diagnostic, SourceMap,
};
use mythos_runtime::cpu::compiled::CompiledKernels;
use mythos_runtime::cuda::{CudaDevice, CudaKernels, CudaRuntime};
use std::path::PathBuf;
use std::process::ExitCode;

mod bench_train;
mod checkpoint;
mod compile;
mod eval;
mod grad;
mod plot;
mod progress;
mod run;
mod sweep;
mod text;
mod train;

#[derive(Parser)]
#[command(
    name = "mythos",
    version,
    about = "A compiler for Recurrent-Depth Transformers (looped transformers)",
    long_about = "A compiler for Recurrent-Depth Transformers.\n\n\
        SPEC arguments are .mythos files, or `@NAME` for a preset built into the binary \
        (`mythos presets` lists them). The language is documented in docs/language.md."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Check specs: parse, resolve and validate every model; exit 1 on any error
    Check {
        /// Spec files (or @presets)
        #[arg(required = true)]
        specs: Vec<String>,
        /// Treat warnings as errors
        #[arg(long)]
        deny_warnings: bool,
    },
    /// Show the checked structure of a model: stages, blocks, loop features
    Show {
        /// Spec file or @preset (default: @openmythos-1b)
        spec: Option<String>,
        /// Model to show when the file defines several
        #[arg(long)]
        model: Option<String>,
        /// Print the checked model description as JSON
        #[arg(long)]
        json: bool,
    },
    /// Format specs in the canonical style (in place unless --check or --stdout)
    Fmt {
        #[arg(required = true)]
        files: Vec<PathBuf>,
        /// Do not write; exit 1 if a file is not canonical
        #[arg(long, conflicts_with = "stdout")]
        check: bool,
        /// Print the formatted text instead of writing the file
        #[arg(long)]
        stdout: bool,
    },
    /// Make a spec from another tool's model description
    Import {
        #[arg(value_enum)]
        format: Format,
        /// The config file (for openmythos: dataclasses.asdict(MythosConfig) as JSON)
        config: PathBuf,
        /// Where to write the spec
        #[arg(short, long)]
        output: PathBuf,
        /// Model name to write (default: from the output file name)
        #[arg(long)]
        name: Option<String>,
    },
    /// Write a model as another tool's model description
    Export {
        #[arg(value_enum)]
        format: Format,
        /// Spec file or @preset
        spec: String,
        /// Model to export when the file defines several
        #[arg(long)]
        model: Option<String>,
        /// Where to write the config (JSON)
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Cost of a model from its IR: parameters, FLOPs, memory, KV cache, decode ceiling
    Inspect {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        /// Sequence length for prefill; context length for decode
        #[arg(long, default_value_t = 2048, value_parser = clap::value_parser!(u64).range(1..=1u64 << 31))]
        seq: u64,
        /// Loop iterations (default: the loop's max)
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1u64 << 20))]
        loops: Option<u64>,
        /// Storage type for weights and KV cache: f32, bf16 or fp8
        #[arg(long, default_value = "bf16", value_parser = ["f32", "bf16", "fp8"])]
        dtype: String,
        /// Memory bandwidth in bytes/s for the decode ceiling (default: H100 SXM HBM3)
        #[arg(long, default_value_t = 3.35e12)]
        bandwidth: f64,
        /// Print the stable JSON document (schema mythos.inspect/1) instead of tables
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opt: OptArgs,
    },
    /// Print the graph IR of a model (text or Graphviz DOT); as lowered unless -O1/-O2
    Graph {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long, value_enum, default_value = "text")]
        format: GraphFormat,
        /// Print the gradient module instead (the loss and the backward IR of the
        /// unoptimized model; docs/training.md)
        #[arg(long, conflicts_with_all = ["opt_level", "passes"])]
        grad: bool,
        #[command(flatten)]
        opt: OptArgs,
    },
    /// The loss of one batch and every parameter's gradient (CPU; docs/training.md)
    Grad {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        weights: WeightArgs,
        /// The batch: .safetensors with I64 input_ids [B, T] and targets [B, T]
        /// (-100 = not scored; without targets, each position predicts the next id)
        #[arg(long)]
        batch: PathBuf,
        /// Recurrent loop iterations [default: the spec's max]
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1u64 << 16))]
        loops: Option<u64>,
        /// Write every parameter's gradient (OpenMythos names) and the scalar `loss` here
        #[arg(long)]
        dump_grads: Option<PathBuf>,
        /// Print the summary as JSON
        #[arg(long)]
        json: bool,
    },
    /// Train a model on the CPU: AdamW, warmup + cosine, clipping; checkpoints and exact resume
    /// (docs/training.md)
    Train {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        weights: WeightArgs,
        #[command(flatten)]
        data: DataArgs,
        /// Where metrics.jsonl, weights.safetensors, loss.svg and the checkpoint go; running
        /// again on the same directory resumes
        #[arg(long)]
        out: PathBuf,
        /// Optimizer steps
        #[arg(long, default_value_t = 100, value_parser = clap::value_parser!(u64).range(1..))]
        steps: u64,
        /// Rows per micro-batch
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
        batch: u64,
        /// Micro-batches per optimizer step (gradient accumulation)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
        accum: u64,
        /// Peak learning rate
        #[arg(long, default_value_t = 3e-4)]
        lr: f64,
        /// Final learning rate of the cosine [default: lr / 10]
        #[arg(long)]
        min_lr: Option<f64>,
        /// Linear warmup steps from lr 0 [default: steps / 10]
        #[arg(long)]
        warmup: Option<u64>,
        #[arg(long, default_value_t = 0.1)]
        weight_decay: f64,
        /// Max global gradient norm (0: no clipping)
        #[arg(long, default_value_t = 1.0)]
        clip: f64,
        /// Loop iterations per step: N (fixed), A..B (uniform per step, both included) or
        /// poisson:MEAN (Huginn's Poisson-lognormal per step) [default: the spec's max]
        #[arg(long)]
        loops: Option<train::LoopPolicy>,
        /// Backpropagate through the last K loop iterations only (Huginn's truncated depth)
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        backprop: Option<u64>,
        /// Rows held out of the data's end for validation (val_loss, val_accuracy in
        /// metrics.jsonl) [default: a tenth of the rows, at most 256]
        #[arg(long)]
        val_rows: Option<u64>,
        /// Validate every N steps (and at the end); 0: only at the end [default: --save-every]
        #[arg(long)]
        val_every: Option<u64>,
        /// Seed of the data order and of the loop counts drawn
        #[arg(long, default_value_t = 0)]
        data_seed: u64,
        /// Use the rows in file order (no shuffling)
        #[arg(long)]
        no_shuffle: bool,
        /// Checkpoint every N steps (and at the end, and on Ctrl-C); 0: only then
        #[arg(long, default_value_t = 50)]
        save_every: u64,
        #[command(flatten)]
        act: ActArgs,
        /// Balance the experts as DeepSeek-V3 does without an auxiliary loss: after each step
        /// every router_bias entry moves by this rate towards the mean load (the reference
        /// never updates router_bias; DeepSeek-V3 used 0.001)
        #[arg(long)]
        router_bias_rate: Option<f64>,
    },
    /// Compile a model to an artifact (.mythosc): plan + kernels for the CPU or CUDA (docs/compile.md)
    Compile(compile::CompileArgs),
    /// Write random weights with the reference's init scheme (safetensors, OpenMythos names)
    Init {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[arg(long, default_value_t = 0)]
        seed: u64,
        #[arg(short, long)]
        output: PathBuf,
    },
    /// Run token ids through the model on the CPU and write the logits
    Run {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        weights: WeightArgs,
        /// safetensors file with `input_ids` (I64, [batch, tokens])
        #[arg(long)]
        inputs: PathBuf,
        /// Loop iterations (default: the loop's max; more extrapolates in depth)
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1u64 << 16))]
        loops: Option<u64>,
        /// Prefill tokens [0, K) at once, then feed the rest one at a time through the KV cache
        #[arg(long)]
        decode_from: Option<usize>,
        /// Where to write `logits` (F32, [batch, tokens, vocab])
        #[arg(long)]
        dump_logits: PathBuf,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Generate tokens from a prompt on the CPU (streams token ids)
    Generate {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        weights: WeightArgs,
        /// Prompt token ids, comma separated: 1,2,3
        #[arg(
            long,
            value_delimiter = ',',
            required_unless_present = "prompt",
            conflicts_with = "prompt"
        )]
        prompt_ids: Vec<i64>,
        /// Prompt text, encoded with --tokenizer; the output is decoded text
        #[arg(long, requires = "tokenizer")]
        prompt: Option<String>,
        /// A Hugging Face tokenizer.json (for --prompt)
        #[arg(long)]
        tokenizer: Option<PathBuf>,
        #[arg(long, default_value_t = 32)]
        max_new_tokens: usize,
        /// 0 = greedy
        #[arg(long, default_value_t = 1.0)]
        temperature: f32,
        /// 0 = off
        #[arg(long, default_value_t = 50)]
        top_k: usize,
        /// 1.0 = off
        #[arg(long, default_value_t = 1.0)]
        top_p: f32,
        /// Sampling seed
        #[arg(long, default_value_t = 0)]
        sample_seed: u64,
        /// Stop at this token id
        #[arg(long)]
        eos: Option<i64>,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1u64 << 16))]
        loops: Option<u64>,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Measure CPU prefill and decode speed on random tokens
    Bench {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        weights: WeightArgs,
        #[arg(long, default_value_t = 256)]
        seq: usize,
        #[arg(long, default_value_t = 16)]
        decode: usize,
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..=1u64 << 16))]
        loops: Option<u64>,
        /// Worker threads (default: all cores)
        #[arg(long)]
        threads: Option<usize>,
        /// Measure this many prefill + decode rounds (each on a fresh KV
        /// cache) and report the fastest prefill and decode
        #[arg(long, default_value_t = 3, value_parser = clap::value_parser!(u64).range(1..=1000))]
        repeats: u64,
        /// Print the time spent in each op kind
        #[arg(long)]
        profile: bool,
        /// Time training steps (forward, backward, clip, AdamW on --batch random rows of
        /// --seq tokens) instead of prefill and decode
        #[arg(long)]
        train: bool,
        /// Rows per training step (with --train)
        #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u64).range(1..=4096))]
        batch: u64,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Loss, perplexity and accuracy on a data file at each test-time loop count (docs/training.md)
    Eval {
        /// Spec file or @preset
        spec: String,
        #[arg(long)]
        model: Option<String>,
        #[command(flatten)]
        weights: WeightArgs,
        #[command(flatten)]
        data: DataArgs,
        /// Test-time loop counts, comma separated [default: 1, 2, 4, ... up to twice the
        /// trained depth, and the trained depth]
        #[arg(long, value_delimiter = ',', value_parser = clap::value_parser!(u64).range(1..=1u64 << 16))]
        loops: Vec<u64>,
        /// Rows per forward pass
        #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u64).range(1..=4096))]
        batch: u64,
        /// Score only the first N rows
        #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
        max_rows: Option<u64>,
        /// Write eval.csv, eval.json and the plots eval_loss.svg, eval_accuracy.svg here
        #[arg(long)]
        out: Option<PathBuf>,
        /// Print eval.json's document instead of the table
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        act: ActArgs,
        #[command(flatten)]
        opt: OptArgs,
        #[command(flatten)]
        backend: BackendArgs,
    },
    /// Run an ablation sweep over a base model (docs/sweeps.md); resumes from its journal.
    /// `mythos sweep status DIR` / `mythos sweep cancel DIR` for a Slurm sweep
    #[command(args_conflicts_with_subcommands = true)]
    Sweep {
        #[command(subcommand)]
        action: Option<SweepAction>,
        /// The sweep file (TOML)
        #[arg(required = true)]
        file: Option<PathBuf>,
        /// Trials run at once (default: all cores; local backend)
        #[arg(long)]
        jobs: Option<usize>,
        /// Output folder (default: <sweep file stem>.out/ next to the sweep file)
        #[arg(long)]
        out: Option<PathBuf>,
        /// Stop at the first trial whose spec does not check (local backend)
        #[arg(long)]
        fail_fast: bool,
        /// Where trials run: in this process, or as Slurm job arrays (docs/sweeps.md, "On a cluster")
        #[arg(long, value_enum, default_value = "local")]
        backend: sweep::Backend,
        /// Slurm: at most P array tasks at once (over the sweep file's [slurm] max_parallel)
        #[arg(long, value_name = "P", value_parser = clap::value_parser!(u64).range(1..))]
        max_parallel: Option<u64>,
        /// Slurm: pass ARG to every sbatch (repeatable), e.g. --sbatch-arg=--mem=4G
        #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
        sbatch_arg: Vec<String>,
        /// Slurm: submit, then return without waiting (run the same command again to collect)
        #[arg(long)]
        detach: bool,
    },
    /// One trial of a Slurm sweep: what each array task runs (written into the batch script)
    #[command(hide = true)]
    SweepWorker {
        /// The array's manifest (DIR/slurm/manifest-TOKEN.json)
        #[arg(long)]
        manifest: PathBuf,
        /// The task index ($SLURM_ARRAY_TASK_ID)
        #[arg(long)]
        index: usize,
    },
    /// List the presets built into the binary
    Presets,
    /// Explain a diagnostic code (`mythos explain E0301`), or list them all
    Explain { code: Option<String> },
}

/// `mythos sweep status|cancel DIR`: a Slurm sweep's output folder.
#[derive(Subcommand)]
enum SweepAction {
    /// Trials done / running / pending / failed of a Slurm sweep (reads only)
    Status {
        /// The sweep's output folder
        dir: PathBuf,
    },
    /// Cancel a Slurm sweep's arrays still queued or running (`scancel`)
    Cancel {
        /// The sweep's output folder
        dir: PathBuf,
    },
}

/// The pass pipeline (docs/passes.md): `-O0|-O1|-O2`, or an explicit list.
#[derive(clap::Args, Clone, Debug)]
struct OptArgs {
    /// Optimization level: 0 = the IR as lowered, 1 = cleanups and hoisting, 2 = all passes
    /// [default: 2; `graph`: 0]
    #[arg(short = 'O', long = "opt-level", value_parser = clap::value_parser!(u8).range(0..=2))]
    opt_level: Option<u8>,
    /// Run exactly these passes in this order instead of the level's (comma separated)
    #[arg(long, value_delimiter = ',', value_name = "PASS,...")]
    passes: Option<Vec<String>>,
    /// Print the IR to stderr after this pass (`all`: after every pass)
    #[arg(long, value_name = "PASS")]
    print_ir_after: Option<String>,
    /// Run the IR verifier after every pass
    #[arg(long)]
    verify_each: bool,
    /// Print the time and rewrites of each pass to stderr (`compile`: the time of every stage)
    #[arg(long)]
    timings: bool,
}

impl OptArgs {
    /// The level asked for, or the command's default.
    fn level(&self, default: u8) -> u8 {
        self.opt_level.unwrap_or(default)
    }

    fn options(&self, default: u8) -> passes::Options {
        passes::Options {
            level: self.level(default),
            passes: self.passes.clone(),
            print_ir_after: self.print_ir_after.clone(),
            verify_each: self.verify_each,
        }
    }

    /// Checks the pass names before any slow work (loading a spec or weights).
    fn check(&self) -> Result<()> {
        Ok(passes::validate(&self.options(0))?)
    }

    /// Runs the pipeline on `module`, printing `--print-ir-after` and
    /// `--timings` to stderr; returns the passes run.
    fn optimize(&self, module: &mut ir::Module, default: u8) -> Result<Vec<String>> {
        let report = passes::run(module, &self.options(default))?;
        for (pass, text) in &report.printed {
            eprintln!("// IR after {pass}");
            eprint!("{text}");
        }
        if self.timings {
            eprint!("{}", passes::timings_table(&report));
        }
        Ok(report.passes.iter().map(|p| p.0.to_string()).collect())
    }
}

/// Which code runs the model: the reference runtime or compiled kernels.
#[derive(clap::Args)]
struct BackendArgs {
    /// cpu: the reference runtime; mlir-cpu: kernels compiled by the MLIR backend
    /// (through the compile cache) [default: cpu; mlir-cpu with --artifact]
    #[arg(long, value_enum)]
    backend: Option<Backend>,
    /// Run the kernels of this artifact (`mythos compile --target cpu`) instead of compiling;
    /// it must match the spec and options
    #[arg(long, value_name = "MODEL.mythosc")]
    artifact: Option<PathBuf>,
    /// mlir-cpu, cuda: compile without reading or writing the compile cache
    #[arg(long)]
    no_cache: bool,
    /// Where the model runs: cpu, or cuda (the first NVIDIA GPU: the model is compiled
    /// with --target cuda for its architecture through the compile cache; docs/cuda.md)
    #[arg(long, value_enum, default_value = "cpu")]
    device: Device,
    /// cuda: the architecture to compile for (sm_80, sm_90) [default: the device's]
    #[arg(long, value_name = "SM_XY")]
    arch: Option<String>,
}

/// The width of a `.bin` data file's token ids.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum DataWidth {
    /// uint16 (nanoGPT's convention)
    U16,
    /// uint32 (vocabularies over 65536)
    U32,
}

/// Token rows for `train` and `eval` (docs/training.md, "Data files").
#[derive(clap::Args)]
struct DataArgs {
    /// Token rows: .safetensors (I64 input_ids [rows, seq], optional targets, -100 = not
    /// scored), .bin (flat token ids, cut into rows of --seq + 1), text (.txt or a directory
    /// of them, read with --tokenizer and cut like .bin), or a synthetic task:
    /// task:parity[,bits=16], task:phop[,len=64,hops=8,symbols=4], task:add[,terms=4,digits=3],
    /// task:khop[,symbols=8,hops=4]
    /// (each also takes rows=256, seed=0)
    #[arg(long)]
    data: String,
    /// Width of a .bin file's token ids
    #[arg(long, value_enum, default_value = "u16")]
    data_width: DataWidth,
    /// Tokens per row (required for .bin and text data)
    #[arg(long, value_parser = clap::value_parser!(u64).range(1..))]
    seq: Option<u64>,
    /// How text data (.txt, or a directory of .txt files) becomes ids: bytes (UTF-8 bytes,
    /// ids 0-255), a Hugging Face tokenizer.json, or bpe:N (train writes a BPE of N tokens
    /// trained on the text as OUT/tokenizer.json) [default: bytes]
    #[arg(long)]
    tokenizer: Option<text::TokenizerChoice>,
}

impl DataArgs {
    fn seq(&self) -> Option<usize> {
        self.seq.map(|s| s as usize)
    }

    fn width(&self) -> mythos_runtime::data::TokenWidth {
        match self.data_width {
            DataWidth::U16 => mythos_runtime::data::TokenWidth::U16,
            DataWidth::U32 => mythos_runtime::data::TokenWidth::U32,
        }
    }
}

#[derive(clap::Args)]
struct ActArgs {
    /// Run the loop without ACT halting (OpenMythos PR #58's disable_act): every iteration
    /// runs and the loop yields its last state; the halting weights stay as they are
    #[arg(long)]
    no_act: bool,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Device {
    /// This machine's CPU
    Cpu,
    /// The first CUDA device
    Cuda,
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Backend {
    /// The CPU reference runtime
    Cpu,
    /// Kernels compiled by the MLIR backend, run by the CPU runtime
    MlirCpu,
}

impl BackendArgs {
    fn compiled(&self) -> Result<bool> {
        if self.device == Device::Cuda {
            if self.backend.is_some() || self.artifact.is_some() {
                anyhow::bail!(
                    "--backend and --artifact choose how the CPU runs the model; \
                     --device cuda always compiles for the GPU"
                );
            }
            return Ok(true);
        }
        if self.arch.is_some() {
            anyhow::bail!("--arch is the GPU architecture: it needs --device cuda");
        }
        match (self.backend, &self.artifact) {
            (Some(Backend::Cpu), Some(_)) => {
                anyhow::bail!(
                    "--artifact needs --backend mlir-cpu (the reference runtime runs the IR)"
                )
            }
            (Some(Backend::Cpu), None) | (None, None) => Ok(false),
            (Some(Backend::MlirCpu), _) | (None, Some(_)) => Ok(true),
        }
    }
}

/// What `run`, `generate` and `bench` run: the module, its weights and,
/// with `--backend mlir-cpu`, the compiled kernels.
type Runnable = (
    ir::Module,
    mythos_runtime::weights::Weights,
    Option<CompiledKernels>,
);

/// The module to run and, with `--backend mlir-cpu`, its compiled kernels
/// (the cache or artifact line printed to stderr). Weights are loaded
/// before compiling so that a wrong file fails fast. `None` when the spec
/// has errors (printed).
/// The unoptimized forward module of `spec`, its gradient module and the
/// weights, for `grad`, `train` and `bench --train`; `None` after the
/// checker's diagnostics.
/// The forward module and its weights (without ACT under `no_act`), and
/// the gradient module of the forward one.
fn prepare_gradient(
    spec: &str,
    model: Option<&str>,
    weights: &WeightArgs,
    no_act: bool,
) -> Result<Option<(run::Prepared, ir::Module)>> {
    let Some(m) = load_model(spec, model) else {
        return Ok(None);
    };
    let prepared = run::Prepared::new(&m, &weights.source(), no_act)?;
    let module = grad::module(&prepared.module)?;
    Ok(Some((prepared, module)))
}

fn prepare_run(
    spec: &str,
    model: Option<&str>,
    opt: &OptArgs,
    backend: &BackendArgs,
    weights: &WeightArgs,
    no_act: bool,
) -> Result<Option<Runnable>> {
    opt.check()?;
    if !backend.compiled()? {
        let Some(m) = load_model(spec, model) else {
            return Ok(None);
        };
        let run::Prepared {
            mut module,
            weights,
            ..
        } = run::Prepared::new(&m, &weights.source(), no_act)?;
        opt.optimize(&mut module, 2)?;
        return Ok(Some((module, weights, None)));
    }
    if no_act {
        anyhow::bail!("--no-act runs on the CPU reference runtime: drop --backend");
    }
    let Some(c) = compile::for_run(
        spec,
        model,
        opt,
        backend.artifact.as_deref(),
        backend.no_cache,
    )?
    else {
        return Ok(None);
    };
    let w = run::load_weights(c.module(), &weights.source())?;
    let (module, kernels) = c.finish()?;
    Ok(Some((module, w, Some(kernels))))
}

/// What `run`, `generate` and `bench --device cuda` run: the device, the
/// module, its weights and its loaded PTX kernels.
struct CudaRunnable {
    dev: CudaDevice,
    module: ir::Module,
    weights: mythos_runtime::weights::Weights,
    kernels: CudaKernels,
}

impl CudaRunnable {
    fn runtime(&self) -> Result<CudaRuntime<'_>> {
        Ok(CudaRuntime::new(
            &self.dev,
            &self.module,
            &self.weights,
            &self.kernels,
        )?)
    }
}

/// `--device cuda`: the device probed first (no GPU: the probe's error,
/// before compiling anything), then the spec checked, the weights loaded,
/// the model compiled for the device's architecture (or `--arch`) through
/// the compile cache and its kernels loaded. `None` when the spec has
/// errors (printed).
fn prepare_cuda(
    spec: &str,
    model: Option<&str>,
    opt: &OptArgs,
    backend: &BackendArgs,
    weights: &WeightArgs,
) -> Result<Option<CudaRunnable>> {
    opt.check()?;
    backend.compiled()?;
    let dev = mythos_runtime::cuda::probe()?;
    let arch = backend.arch.clone().unwrap_or_else(|| dev.arch());
    eprintln!("device: {} ({})", dev.name, dev.arch());
    let Some(c) = compile::for_cuda(spec, model, opt, &arch, backend.no_cache)? else {
        return Ok(None);
    };
    let w = run::load_weights(c.module(), &weights.source())?;
    let (module, ptx, plan) = c.finish()?;
    let kernels = CudaKernels::load(&dev, &ptx, &plan)?;
    Ok(Some(CudaRunnable {
        dev,
        module,
        weights: w,
        kernels,
    }))
}

/// Weights from a file or from a seed.
#[derive(clap::Args)]
#[group(required = true, multiple = false)]
struct WeightArgs {
    /// safetensors weights with OpenMythos state_dict names (f32, bf16 or f16; all values finite)
    #[arg(long)]
    weights: Option<PathBuf>,
    /// Random weights with the reference's init scheme and this seed
    #[arg(long)]
    seed: Option<u64>,
}

impl WeightArgs {
    fn source(&self) -> run::WeightSource<'_> {
        match (&self.weights, self.seed) {
            (Some(path), _) => run::WeightSource::File(path),
            (None, Some(seed)) => run::WeightSource::Seed(seed),
            (None, None) => unreachable!("clap requires one of them"),
        }
    }
}

#[derive(Clone, Copy, ValueEnum)]
enum GraphFormat {
    Text,
    Dot,
}

#[derive(Clone, Copy, ValueEnum)]
enum Format {
    /// OpenMythos (PyPI open-mythos) MythosConfig as JSON
    Openmythos,
}

fn main() -> ExitCode {
    restore_sigpipe();
    // Usage errors exit with 1 like every other bad input (clap's default is 2).
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            let code = if e.use_stderr() {
                ExitCode::FAILURE
            } else {
                ExitCode::SUCCESS
            };
            let _ = e.print();
            return code;
        }
    };
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

/// Rust ignores SIGPIPE, so printing into a closed pipe (`mythos inspect
/// --json | head`) would panic; with the default action the process ends
/// quietly when the reader has gone, like other Unix tools. Nothing in the
/// CLI writes into a child's pipe, where that would end it too.
fn restore_sigpipe() {
    #[cfg(unix)]
    // SAFETY: sets a signal disposition at start-up, before any thread.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    match cli.command {
        Command::Check {
            specs,
            deny_warnings,
        } => check(&specs, deny_warnings),
        Command::Show { spec, model, json } => show(spec.as_deref(), model.as_deref(), json),
        Command::Fmt {
            files,
            check,
            stdout,
        } => format_files(&files, check, stdout),
        Command::Import {
            format: Format::Openmythos,
            config,
            output,
            name,
        } => import(&config, &output, name),
        Command::Export {
            format: Format::Openmythos,
            spec,
            model,
            output,
        } => export(&spec, model.as_deref(), &output),
        Command::Inspect {
            spec,
            model,
            seq,
            loops,
            dtype,
            bandwidth,
            json,
            opt,
        } => {
            opt.check()?;
            let Some(m) = load_model(&spec, model.as_deref()) else {
                return Ok(ExitCode::FAILURE);
            };
            if !(bandwidth.is_finite() && bandwidth > 0.0) {
                anyhow::bail!("--bandwidth must be a positive number of bytes/s, got {bandwidth}");
            }
            let module = ir::lower::lower(&m);
            let opts = analysis::Options {
                seq,
                loops,
                dtype: analysis::StorageType::parse(&dtype).expect("clap checked the value"),
                bandwidth,
            };
            let mut optimized = module.clone();
            let ran = opt.optimize(&mut optimized, 2)?;
            let mut report = analysis::analyze(&module, &opts);
            report.optimization = Some(analysis::Optimization {
                level: opt.level(2),
                passes: ran,
                before: analysis::kernels(&module, &opts),
                after: analysis::kernels(&optimized, &opts),
            });
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", mythos_compiler::report::inspect(&report));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Graph {
            spec,
            model,
            format,
            grad: backward,
            opt,
        } => {
            opt.check()?;
            let Some(m) = load_model(&spec, model.as_deref()) else {
                return Ok(ExitCode::FAILURE);
            };
            let mut module = ir::lower::lower(&m);
            if backward {
                module = grad::module(&module)?;
            } else {
                opt.optimize(&mut module, 0)?;
            }
            match format {
                GraphFormat::Text => print!("{}", ir::print::text(&module)),
                GraphFormat::Dot => print!("{}", ir::print::dot(&module)),
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Grad {
            spec,
            model,
            weights,
            batch,
            loops,
            dump_grads,
            json,
        } => {
            let Some((prepared, module)) =
                prepare_gradient(&spec, model.as_deref(), &weights, false)?
            else {
                return Ok(ExitCode::FAILURE);
            };
            let (g, report) = grad::run(&module, &prepared.weights, &batch, loops)?;
            if let Some(path) = &dump_grads {
                grad::dump(&module, &g, path)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", grad::summary(&report));
                if let Some(path) = &dump_grads {
                    println!("wrote {}", path.display());
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Train {
            spec,
            model,
            weights,
            data,
            out,
            steps,
            batch,
            accum,
            lr,
            min_lr,
            warmup,
            weight_decay,
            clip,
            loops,
            backprop,
            val_rows,
            val_every,
            data_seed,
            no_shuffle,
            save_every,
            act: ActArgs { no_act },
            router_bias_rate,
        } => {
            if let Some(rate) = router_bias_rate {
                if !(rate.is_finite() && rate > 0.0) {
                    anyhow::bail!("--router-bias-rate {rate}: the rate is a positive number (DeepSeek-V3: 0.001)");
                }
            }
            // A resumed run reads its weights from the checkpoint.
            let Some((prepared, module)) =
                prepare_gradient(&spec, model.as_deref(), &weights, no_act)?
            else {
                return Ok(ExitCode::FAILURE);
            };
            let settings = train::Settings {
                seq: data.seq(),
                tokenizer: data.tokenizer.clone(),
                width: data.width(),
                data: data.data,
                steps,
                batch: batch as usize,
                accum: accum as usize,
                lr,
                min_lr: min_lr.unwrap_or(lr / 10.0),
                warmup: warmup.unwrap_or(steps / 10),
                weight_decay,
                clip: (clip > 0.0).then_some(clip),
                loops: loops.unwrap_or(train::LoopPolicy::Max),
                backprop,
                val_rows: val_rows.map(|n| n as usize),
                seed: data_seed,
                shuffle: !no_shuffle,
                save_every,
                val_every: val_every.unwrap_or(save_every),
                no_act,
                router_bias_rate,
            };
            train::run(prepared, &module, &settings, &out)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Compile(args) => compile::command(args),
        Command::Init {
            spec,
            model,
            seed,
            output,
        } => {
            let Some(m) = load_model(&spec, model.as_deref()) else {
                return Ok(ExitCode::FAILURE);
            };
            run::init(&run::module_of(&m), seed, &output)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Run {
            spec,
            model,
            weights,
            inputs,
            loops,
            decode_from,
            dump_logits,
            opt,
            backend,
        } => {
            if backend.device == Device::Cuda {
                let Some(c) = prepare_cuda(&spec, model.as_deref(), &opt, &backend, &weights)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                let rt = c.runtime()?;
                run::run_on(&c.module, &rt, &inputs, loops, decode_from, &dump_logits)?;
                return Ok(ExitCode::SUCCESS);
            }
            let Some((module, w, kernels)) =
                prepare_run(&spec, model.as_deref(), &opt, &backend, &weights, false)?
            else {
                return Ok(ExitCode::FAILURE);
            };
            run::run(
                &module,
                &w,
                kernels.as_ref(),
                &inputs,
                loops,
                decode_from,
                &dump_logits,
            )?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Generate {
            spec,
            model,
            weights,
            prompt_ids,
            prompt,
            tokenizer,
            max_new_tokens,
            temperature,
            top_k,
            top_p,
            sample_seed,
            eos,
            loops,
            opt,
            backend,
        } => {
            opt.check()?;
            backend.compiled()?;
            if !(temperature >= 0.0 && temperature.is_finite()) {
                anyhow::bail!("--temperature must be >= 0 (0 = greedy), got {temperature}");
            }
            if !(top_p > 0.0 && top_p <= 1.0) {
                anyhow::bail!("--top-p must be in (0, 1], got {top_p}");
            }
            let opts = run::GenerateOptions {
                max_new_tokens,
                loops,
                sampling: mythos_runtime::sample::SamplingOptions {
                    temperature,
                    top_k,
                    top_p,
                    seed: sample_seed,
                },
                eos,
            };
            let prompt = match (prompt, tokenizer) {
                (Some(text), Some(path)) => Some((text::Tokenizer::load(&path)?, text, path)),
                _ => None,
            };
            // Generation on either engine, with the prompt as ids or text.
            fn go(
                module: &ir::Module,
                rt: &impl mythos_runtime::engine::Engine,
                prompt: Option<(text::Tokenizer, String, PathBuf)>,
                prompt_ids: &[i64],
                opts: &run::GenerateOptions,
            ) -> Result<()> {
                let Some((tok, text, path)) = prompt else {
                    run::generate(module, rt, prompt_ids, opts)?;
                    return Ok(());
                };
                let ids = tok.encode(&text)?;
                if let Some(&max) = ids.iter().max() {
                    if max as u64 >= module.vocab {
                        anyhow::bail!(
                            "{} produces token id {max}, but the model's vocab is {}: the tokenizer does not fit this model",
                            path.display(),
                            module.vocab
                        );
                    }
                }
                run::generate_text(module, rt, &ids, opts, &tok)?;
                Ok(())
            }
            if backend.device == Device::Cuda {
                let Some(c) = prepare_cuda(&spec, model.as_deref(), &opt, &backend, &weights)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                go(&c.module, &c.runtime()?, prompt, &prompt_ids, &opts)?;
                return Ok(ExitCode::SUCCESS);
            }
            let Some((module, w, kernels)) =
                prepare_run(&spec, model.as_deref(), &opt, &backend, &weights, false)?
            else {
                return Ok(ExitCode::FAILURE);
            };
            let rt = run::runtime(&module, &w, kernels.as_ref())?;
            go(&module, &rt, prompt, &prompt_ids, &opts)?;
            Ok(ExitCode::SUCCESS)
        }
        Command::Bench {
            spec,
            model,
            weights,
            seq,
            decode,
            loops,
            threads,
            repeats,
            profile,
            train,
            batch,
            json,
            opt,
            backend,
        } => {
            opt.check()?;
            let compiled = backend.compiled()?;
            if let Some(n) = threads {
                rayon::ThreadPoolBuilder::new()
                    .num_threads(n)
                    .build_global()
                    .context("setting --threads")?;
            }
            if train {
                if compiled || backend.device == Device::Cuda || profile {
                    anyhow::bail!(
                        "bench --train times the CPU reference runtime (the gradient runs there only); \
                         drop --backend, --device and --profile"
                    );
                }
                let Some((prepared, module)) =
                    prepare_gradient(&spec, model.as_deref(), &weights, false)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                let r = bench_train::run(
                    &prepared.module,
                    &module,
                    prepared.weights,
                    (batch as usize, seq),
                    loops,
                    repeats as usize,
                )?;
                if json {
                    println!("{}", serde_json::to_string_pretty(&r)?);
                } else {
                    println!(
                        "model {}   train step {} x {}   loops {} ({} run)   threads {}   best of {}",
                        r.model, r.batch, r.seq, r.loops, r.iterations, r.threads, r.repeats
                    );
                    println!(
                        "train step {:>9.1} ms (mean {:.1})   {:>8.0} tokens/s   {:>6.2} GFLOP/s   peak memory {:.0} MiB",
                        r.train_step_ms, r.mean_step_ms, r.tokens_per_s, r.gflops, r.peak_memory_mib
                    );
                }
                return Ok(ExitCode::SUCCESS);
            }
            let bench_opts = run::BenchOptions {
                seq,
                decode,
                loops,
                seed: 0,
                repeats: repeats as usize,
                profile,
            };
            let r = if backend.device == Device::Cuda {
                if profile {
                    anyhow::bail!("--profile times the CPU runtime's ops; it does not work with --device cuda yet");
                }
                let Some(c) = prepare_cuda(&spec, model.as_deref(), &opt, &backend, &weights)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                let opts = run::BenchOptions {
                    profile: false,
                    ..bench_opts
                };
                run::bench_on(&c.module, &c.runtime()?, &opts)?
            } else {
                let Some((module, w, kernels)) =
                    prepare_run(&spec, model.as_deref(), &opt, &backend, &weights, false)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                run::bench(&module, &w, kernels.as_ref(), &bench_opts)?
            };
            if json {
                println!("{}", serde_json::to_string_pretty(&r)?);
            } else {
                println!(
                    "model {}   loops {}   threads {}   -O{}   backend {}   best of {}",
                    r.model,
                    r.loops,
                    r.threads,
                    opt.level(2),
                    r.backend,
                    r.repeats
                );
                println!(
                    "  prefill {} tokens   {:>10.1} ms   {:>10.1} tokens/s   {:>8.2} GFLOP/s",
                    r.seq, r.prefill_ms, r.prefill_tokens_per_s, r.prefill_gflops
                );
                println!(
                    "  decode  {} tokens   {:>10.2} ms/token {:>8.2} tokens/s   {:>8.2} GFLOP/s",
                    r.decode_tokens, r.decode_ms_per_token, r.decode_tokens_per_s, r.decode_gflops
                );
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Eval {
            spec,
            model,
            weights,
            data,
            loops,
            batch,
            max_rows,
            out,
            json,
            act: ActArgs { no_act },
            opt,
            backend,
        } => {
            let request = eval::Request {
                data: &data.data,
                tokenizer: data.tokenizer.as_ref(),
                seq: data.seq(),
                width: data.width(),
                max_rows: max_rows.map(|n| n as usize),
                loops: &loops,
                batch: batch as usize,
            };
            let report = if backend.device == Device::Cuda {
                if no_act {
                    anyhow::bail!("--no-act runs on the CPU reference runtime: drop --device cuda");
                }
                let Some(c) = prepare_cuda(&spec, model.as_deref(), &opt, &backend, &weights)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                eval::run(&c.runtime()?, &request)?
            } else {
                let Some((module, w, kernels)) =
                    prepare_run(&spec, model.as_deref(), &opt, &backend, &weights, no_act)?
                else {
                    return Ok(ExitCode::FAILURE);
                };
                eval::run(&run::runtime(&module, &w, kernels.as_ref())?, &request)?
            };
            if let Some(dir) = &out {
                eval::write(dir, &report)?;
            }
            if json {
                println!("{}", serde_json::to_string_pretty(&report)?);
            } else {
                print!("{}", eval::table(&report));
                if let Some(dir) = &out {
                    println!(
                        "wrote {}/eval.csv, eval.json, eval_loss.svg, eval_accuracy.svg",
                        dir.display()
                    );
                }
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Presets => {
            for p in presets::PRESETS {
                let first = p
                    .source
                    .lines()
                    .next()
                    .unwrap_or("")
                    .trim_start_matches("# ");
                println!("@{:<18} {first}", p.name);
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Sweep {
            action: Some(SweepAction::Status { dir }),
            ..
        } => sweep::slurm::status(&dir),
        Command::Sweep {
            action: Some(SweepAction::Cancel { dir }),
            ..
        } => sweep::slurm::cancel(&dir),
        Command::Sweep {
            action: None,
            file,
            jobs,
            out,
            fail_fast,
            backend,
            max_parallel,
            sbatch_arg,
            detach,
        } => {
            let Some(file) = file else {
                anyhow::bail!("`mythos sweep` needs a sweep file: mythos sweep SWEEP.toml");
            };
            if backend != sweep::Backend::Slurm
                && (max_parallel.is_some() || !sbatch_arg.is_empty() || detach)
            {
                anyhow::bail!(
                    "--max-parallel, --sbatch-arg and --detach are for --backend slurm; add it, or drop them"
                );
            }
            sweep::run(&sweep::Args {
                file,
                jobs,
                out,
                fail_fast,
                backend,
                slurm: sweep::slurm::Flags {
                    max_parallel,
                    sbatch_args: sbatch_arg,
                    detach,
                },
            })
        }
        Command::SweepWorker { manifest, index } => sweep::slurm::worker::run(&manifest, index),
        Command::Explain { code } => explain(code.as_deref()),
    }
}

/// Prints diagnostics to stderr; true when there was an error.
fn report(sources: &SourceMap, diags: &[Diagnostic]) -> bool {
    if !diags.is_empty() {
        eprint!("{}", diag::render(sources, diags));
    }
    diags.iter().any(|d| d.is_error())
}

fn check(specs: &[String], deny_warnings: bool) -> Result<ExitCode> {
    let mut failed = false;
    for spec in specs {
        let mut loader = Loader::new();
        let checked = sema::check_file(&mut loader, spec);
        let has_error = report(&loader.sources, &checked.diagnostics);
        let bad = has_error || (deny_warnings && !checked.diagnostics.is_empty());
        if bad {
            let summary = diag::summary(&checked.diagnostics).unwrap_or_default();
            eprintln!("{spec}: {summary}");
            failed = true;
        } else {
            let names: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
            println!("ok  {spec}  ({})", names.join(", "));
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

/// Loads and checks a spec and picks one model; diagnostics are printed.
fn load_model(spec: &str, model: Option<&str>) -> Option<mythos_compiler::model::Model> {
    compile::front(spec, model).map(|f| f.model)
}

fn show(spec: Option<&str>, model: Option<&str>, json: bool) -> Result<ExitCode> {
    let spec = spec.unwrap_or(presets::DEFAULT);
    let Some(m) = load_model(spec, model) else {
        return Ok(ExitCode::FAILURE);
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&m)?);
    } else {
        print!("{}", report::structure(&m));
    }
    Ok(ExitCode::SUCCESS)
}

fn format_files(files: &[PathBuf], check: bool, stdout: bool) -> Result<ExitCode> {
    let mut failed = false;
    for path in files {
        let name = path.display().to_string();
        let mut sources = SourceMap::new();
        let bytes = match std::fs::read(path) {
            Ok(b) => b,
            Err(e) => {
                let d = Diagnostic::error(Code::CannotRead, format!("cannot read `{name}`: {e}"))
                    .help("check the path");
                report(&sources, &[d]);
                failed = true;
                continue;
            }
        };
        let Ok(text) = String::from_utf8(bytes) else {
            let d = Diagnostic::error(Code::NotUtf8, format!("`{name}` is not UTF-8 text"))
                .help("specs are UTF-8 text; is this the right file?");
            report(&sources, &[d]);
            failed = true;
            continue;
        };
        let id = sources.add(name.clone(), text.clone());
        match fmt::format_source(id, &text) {
            Err(diags) => {
                report(&sources, &diags);
                failed = true;
            }
            Ok(formatted) if stdout => print!("{formatted}"),
            Ok(formatted) if check => {
                if formatted != text {
                    eprintln!("{name}: not in canonical form (run `mythos fmt {name}`)");
                    failed = true;
                }
            }
            Ok(formatted) => {
                if formatted != text {
                    std::fs::write(path, formatted).with_context(|| format!("writing {name}"))?;
                    eprintln!("formatted {name}");
                }
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}

fn import(config: &PathBuf, output: &PathBuf, name: Option<String>) -> Result<ExitCode> {
    let config_name = config.display().to_string();
    let mut sources = SourceMap::new();
    let text = match std::fs::read_to_string(config) {
        Ok(t) => t,
        Err(e) => {
            let d = Diagnostic::error(
                Code::CannotRead,
                format!("cannot read `{config_name}`: {e}"),
            )
            .help("pass the path of a JSON file written from dataclasses.asdict(MythosConfig)");
            report(&sources, &[d]);
            return Ok(ExitCode::FAILURE);
        }
    };
    let model_name = name.unwrap_or_else(|| model_name_from_path(output));
    match openmythos::import(&mut sources, &config_name, &text, &model_name) {
        Err(diags) => {
            report(&sources, &diags);
            Ok(ExitCode::FAILURE)
        }
        Ok(imported) => {
            report(&sources, &imported.warnings);
            std::fs::write(output, &imported.spec)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `models/my-model.mythos` -> `my_model`: a valid model name.
fn model_name_from_path(path: &std::path::Path) -> String {
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let mut name: String = stem
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '_' })
        .collect();
    if name.is_empty() || name.starts_with(|c: char| c.is_ascii_digit()) {
        name.insert(0, 'm');
    }
    name
}

fn export(spec: &str, model: Option<&str>, output: &PathBuf) -> Result<ExitCode> {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, spec);
    if report(&loader.sources, &checked.diagnostics) {
        return Ok(ExitCode::FAILURE);
    }
    let m = match sema::select(&checked, model, spec) {
        Ok(m) => m,
        Err(d) => {
            report(&loader.sources, &[d]);
            return Ok(ExitCode::FAILURE);
        }
    };
    match openmythos::export(m) {
        Err(diags) => {
            report(&loader.sources, &diags);
            Ok(ExitCode::FAILURE)
        }
        Ok(json) => {
            std::fs::write(output, json)
                .with_context(|| format!("writing {}", output.display()))?;
            eprintln!("wrote {}", output.display());
            Ok(ExitCode::SUCCESS)
        }
    }
}

fn explain(code: Option<&str>) -> Result<ExitCode> {
    match code {
        None => {
            for c in Code::ALL {
                println!("{c}  {}", c.summary());
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(code) => match Code::ALL
            .iter()
            .find(|c| c.as_str().eq_ignore_ascii_case(code))
        {
            Some(c) => {
                println!("{c}: {}", c.summary());
                println!(
                    "See the diagnostics table in docs/language.md for an example and the fix."
                );
                Ok(ExitCode::SUCCESS)
            }
            None => {
                eprintln!("error: no diagnostic code `{code}` (run `mythos explain` for the list)");
                Ok(ExitCode::FAILURE)
            }
        },
    }
}
