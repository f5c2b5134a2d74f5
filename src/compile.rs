//! `mythos compile`, and the `mlir-cpu` backend of `run`, `generate` and
//! `bench` (docs/compile.md): the front end with its sources kept, the pass
//! pipeline plus the backend's legalization, the compile cache, `--emit`
//! and `--timings`. The work happens in `mythos-backend`; this is glue.

use crate::OptArgs;
use anyhow::{bail, Context, Result};
use mythos_backend::cache::{self, Cache, Inputs, Lookup, Miss};
use mythos_backend::compile::{self as backend, Target};
use mythos_compiler::artifact::{self, Artifact, ArtifactError, Kernel, Source};
use mythos_compiler::model::Model;
use mythos_compiler::plan::Plan;
use mythos_compiler::sema::{self, Loader};
use mythos_compiler::{ir, passes, Span};
use mythos_runtime::cpu::compiled::CompiledKernels;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

/// The kernel blob of a CPU artifact: the shared object.
pub const CPU_KERNELS: &str = "kernels.so";

/// Stages of `--emit`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Emit {
    /// The parsed spec (AST, every file read)
    Ast,
    /// The optimized IR the plan is made from
    Ir,
    /// The kernel module as generated and verified
    Mlir,
    /// LLVM IR of the kernels (--target cpu)
    Llvm,
    /// PTX of the kernels (--target cuda)
    Ptx,
}

/// `--target`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum TargetArg {
    /// This machine's CPU (a shared object)
    Cpu,
    /// NVIDIA GPUs (PTX for --arch)
    Cuda,
}

/// The arguments of `mythos compile`.
#[derive(clap::Args)]
pub struct CompileArgs {
    /// Spec file or @preset
    pub spec: String,
    #[arg(long)]
    pub model: Option<String>,
    /// What to compile for
    #[arg(long, value_enum, default_value = "cpu")]
    pub target: TargetArg,
    /// CUDA architecture (--target cuda) [default: sm_90]
    #[arg(long, value_parser = ["sm_80", "sm_90"])]
    pub arch: Option<String>,
    #[command(flatten)]
    pub opt: OptArgs,
    /// Where to write the artifact (MODEL.mythosc)
    #[arg(short, long)]
    pub output: PathBuf,
    /// Also write these stages to files (comma separated or repeated): ast, ir, mlir, llvm, ptx
    #[arg(long, value_enum, value_delimiter = ',', value_name = "STAGE,...")]
    pub emit: Vec<Emit>,
    /// Folder for --emit files [default: the output's folder]
    #[arg(long, value_name = "DIR")]
    pub emit_dir: Option<PathBuf>,
    /// Neither read nor write the compile cache
    #[arg(long)]
    pub no_cache: bool,
}

/// Named durations in order, printed by `--timings`.
#[derive(Default)]
pub struct Stages(Vec<(String, Duration)>);

impl Stages {
    fn push(&mut self, name: impl Into<String>, d: Duration) {
        self.0.push((name.into(), d));
    }

    /// Times `f` as stage `name`.
    fn time<T>(&mut self, name: &str, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let out = f();
        self.push(name, t.elapsed());
        out
    }

    /// The `--timings` table.
    pub fn table(&self) -> String {
        let width = self.0.iter().map(|s| s.0.len()).max().unwrap_or(5).max(5);
        let mut s = format!("{:<width$}  {:>11}\n", "stage", "time");
        let mut total = Duration::ZERO;
        for (name, d) in &self.0 {
            s.push_str(&format!("{name:<width$}  {:>8.3} ms\n", ms(*d)));
            // Pass rows are part of the "passes" row above them.
            if !name.starts_with("  ") {
                total += *d;
            }
        }
        s.push_str(&format!("{:<width$}  {:>8.3} ms\n", "total", ms(total)));
        s
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// A checked spec with the loader that read it (its sources).
pub struct Front {
    pub loader: Loader,
    pub model: Model,
    pub entry: String,
}

impl Front {
    /// Every file read, in load order (the entry first).
    pub fn sources(&self) -> Vec<Source> {
        self.loader
            .sources
            .files()
            .map(|(_, f)| Source {
                name: f.name.clone(),
                text: f.text.clone(),
            })
            .collect()
    }

    /// `file:line:col` of a span, for kernel locations.
    pub fn locate(&self, span: Span) -> Option<(String, usize, usize)> {
        let (_, f) = self
            .loader
            .sources
            .files()
            .find(|(id, _)| *id == span.file)?;
        let (line, col) = f.line_col(span.start as usize);
        Some((f.name.clone(), line, col))
    }
}

/// Loads and checks a spec and picks one model; diagnostics are printed.
pub fn front(spec: &str, model: Option<&str>) -> Option<Front> {
    let mut loader = Loader::new();
    let checked = sema::check_file(&mut loader, spec);
    if crate::report(&loader.sources, &checked.diagnostics) {
        return None;
    }
    match sema::select(&checked, model, spec) {
        Ok(m) => Some(Front {
            model: m.clone(),
            loader,
            entry: spec.to_string(),
        }),
        Err(d) => {
            crate::report(&loader.sources, &[d]);
            None
        }
    }
}

/// The optimized and legalized module of a spec, and what made it.
pub struct Prepared {
    pub front: Front,
    pub module: ir::Module,
    pub options: artifact::Options,
    pub stages: Stages,
}

/// Front end, lowering, the pass pipeline (`--print-ir-after` printed to
/// stderr), then `canonicalize` when the pipeline lacks it: the backend
/// lowers canonical IR only. `None` when the spec has errors (printed).
pub fn prepare(
    spec: &str,
    model: Option<&str>,
    opts: &passes::Options,
) -> Result<Option<Prepared>> {
    let mut stages = Stages::default();
    let Some(front) = stages.time("parse + check", || front(spec, model)) else {
        return Ok(None);
    };
    let mut module = stages.time("lower to IR", || ir::lower::lower(&front.model));
    let t = Instant::now();
    let report = passes::run(&mut module, opts)?;
    let pipeline = match &opts.passes {
        Some(_) => "--passes".to_string(),
        None => format!("-O{}", opts.level),
    };
    stages.push(format!("passes ({pipeline})"), t.elapsed());
    for (pass, d, n) in &report.passes {
        stages.push(format!("  {pass} ({n} rewrites)"), *d);
    }
    for (pass, text) in &report.printed {
        eprintln!("// IR after {pass}");
        eprint!("{text}");
    }
    let mut ran: Vec<String> = report.passes.iter().map(|p| p.0.to_string()).collect();
    let legalized = !ran.iter().any(|p| p == "canonicalize");
    if legalized {
        let t = Instant::now();
        passes::run(
            &mut module,
            &passes::Options {
                level: opts.level,
                passes: Some(vec!["canonicalize".into()]),
                print_ir_after: None,
                verify_each: opts.verify_each,
            },
        )?;
        stages.push(
            "legalize: canonicalize (the backend needs canonical IR)",
            t.elapsed(),
        );
        ran.push("canonicalize".into());
    }
    Ok(Some(Prepared {
        front,
        module,
        options: artifact::Options {
            level: opts.level,
            passes: ran,
            legalized,
        },
        stages,
    }))
}

/// How to use the compile cache.
pub enum CacheUse {
    /// Look up, and store on a miss.
    On(Cache),
    /// Do not look up (the reason), but store the result.
    StoreOnly(Cache, String),
    /// Neither (the reason).
    Off(String),
}

impl CacheUse {
    /// The cache from the environment, unless `--no-cache`.
    pub fn from_flags(no_cache: bool) -> CacheUse {
        if no_cache {
            return CacheUse::Off("--no-cache".into());
        }
        match Cache::from_env() {
            Some(c) => CacheUse::On(c),
            None => CacheUse::Off(
                "no cache folder: set MYTHOS_CACHE_DIR, XDG_CACHE_HOME or HOME".into(),
            ),
        }
    }
}

/// An artifact, from the cache or a fresh compile.
pub struct Built {
    pub artifact: Artifact,
    /// The compile's intermediate texts (none on a cache hit).
    pub compiled: Option<backend::Compiled>,
    /// `cache hit ...` / `cache miss: why` / `cache bypassed (...)`.
    pub cache_line: String,
}

/// The blobs of a compile for `target`.
fn kernel_blobs(target: &Target, compiled: &backend::Compiled) -> Vec<Kernel> {
    match target {
        Target::Cpu => vec![Kernel {
            name: CPU_KERNELS.into(),
            bytes: compiled.code.clone(),
        }],
        // One PTX text per GPU module, named by the module.
        Target::Cuda { .. } => compiled
            .ptx
            .iter()
            .map(|(module, ptx)| Kernel {
                name: format!("{module}.ptx"),
                bytes: ptx.clone().into_bytes(),
            })
            .collect(),
    }
}

/// Compiles `p` for `target` through the cache.
pub fn build(
    p: &mut Prepared,
    target: &Target,
    cache: &CacheUse,
    keep_text: bool,
) -> Result<Built> {
    let inputs = Inputs {
        entry: p.front.entry.clone(),
        model: p.front.model.name.clone(),
        target: cache::target_name(target),
        options: p.options.clone(),
        sources: p.front.sources(),
        compiler: cache::compiler_id().to_string(),
    };
    let fingerprint = p
        .stages
        .time("fingerprint IR", || artifact::ir_fingerprint(&p.module));
    let (lookup_in, store_in, mut cache_line) = match cache {
        CacheUse::On(c) => (Some(c), Some(c), String::new()),
        CacheUse::StoreOnly(c, why) => (None, Some(c), Miss::Bypassed(why.clone()).to_string()),
        CacheUse::Off(why) => (None, None, Miss::Bypassed(why.clone()).to_string()),
    };
    if let Some(c) = lookup_in {
        let t = Instant::now();
        let found = c.lookup(&inputs);
        p.stages.push("cache lookup", t.elapsed());
        match found {
            Lookup::Hit { artifact, path } if artifact.ir_fingerprint == fingerprint => {
                return Ok(Built {
                    artifact: *artifact,
                    compiled: None,
                    cache_line: format!("cache hit: {}", path.display()),
                });
            }
            Lookup::Hit { .. } => {
                cache_line = Miss::Unusable(
                    "its IR differs from this compile's (the compiler changed without a \
                     version change)"
                        .into(),
                )
                .to_string();
            }
            Lookup::Miss(why) => cache_line = why.to_string(),
        }
    }
    let opts = backend::Options {
        target: target.clone(),
        partial: false,
        keep_text,
    };
    let front = &p.front;
    let compiled = backend::compile(&p.module, &|s| front.locate(s), &opts).with_context(|| {
        format!(
            "cannot compile model {} ({}) for {}",
            p.front.model.name, p.front.entry, inputs.target
        )
    })?;
    for (stage, d) in &compiled.timings {
        p.stages.push(format!("backend: {stage}"), *d);
    }
    let artifact = inputs.artifact(
        fingerprint,
        compiled.plan.clone(),
        kernel_blobs(target, &compiled),
    );
    if let Some(c) = store_in {
        let t = Instant::now();
        if let Err(e) = c.store(&inputs, &artifact) {
            eprintln!("warning: {e} (the compile itself succeeded)");
        }
        p.stages.push("cache store", t.elapsed());
    }
    Ok(Built {
        artifact,
        compiled: Some(compiled),
        cache_line,
    })
}

/// `1234` -> `1.2 kB`.
fn human_bytes(n: u64) -> String {
    match n {
        n if n >= 1 << 20 => format!("{:.1} MB", n as f64 / 1e6),
        n if n >= 1000 => format!("{:.1} kB", n as f64 / 1e3),
        n => format!("{n} B"),
    }
}

/// `mythos compile`.
pub fn command(args: CompileArgs) -> Result<ExitCode> {
    args.opt.check()?;
    let target = match (args.target, &args.arch) {
        (TargetArg::Cpu, Some(arch)) => {
            bail!("--arch {arch} applies to --target cuda; --target cpu compiles for this machine")
        }
        (TargetArg::Cpu, None) => Target::Cpu,
        (TargetArg::Cuda, arch) => Target::Cuda {
            arch: arch.clone().unwrap_or_else(|| "sm_90".into()),
        },
    };
    let emit = args.emit.clone();
    if emit.contains(&Emit::Ptx) && target == Target::Cpu {
        bail!("--emit ptx needs --target cuda (the CPU target makes a shared object)");
    }
    let Some(mut p) = prepare(&args.spec, args.model.as_deref(), &args.opt.options(2))? else {
        return Ok(ExitCode::FAILURE);
    };
    let stem = args
        .output
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| p.front.model.name.clone());
    let emit_dir = args.emit_dir.clone().unwrap_or_else(|| {
        args.output
            .parent()
            .filter(|d| !d.as_os_str().is_empty())
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    let mut emitted: Vec<PathBuf> = Vec::new();
    let mut write_emit = |ext: &str, text: &[u8]| -> Result<()> {
        std::fs::create_dir_all(&emit_dir)
            .with_context(|| format!("creating {}", emit_dir.display()))?;
        let path = emit_dir.join(format!("{stem}.{ext}"));
        std::fs::write(&path, text).with_context(|| format!("writing {}", path.display()))?;
        emitted.push(path);
        Ok(())
    };
    // The front-end stages first: they are there even if the backend fails.
    if emit.contains(&Emit::Ast) {
        let mut s = String::new();
        for f in &p.front.loader.files {
            s.push_str(&format!(
                "// {}\n{:#?}\n",
                p.front.loader.sources.get(f.id).name,
                f.ast
            ));
        }
        write_emit("ast", s.as_bytes())?;
    }
    if emit.contains(&Emit::Ir) {
        write_emit("ir", ir::print::text(&p.module).as_bytes())?;
    }
    let needs_text: Vec<&str> = emit
        .iter()
        .filter_map(|e| match e {
            Emit::Mlir => Some("mlir"),
            Emit::Llvm => Some("llvm"),
            _ => None,
        })
        .collect();
    let cache = match CacheUse::from_flags(args.no_cache) {
        CacheUse::On(c) if !needs_text.is_empty() => CacheUse::StoreOnly(
            c,
            format!(
                "--emit {} needs a fresh compile; its result is stored",
                needs_text.join(",")
            ),
        ),
        other => other,
    };
    let built = build(&mut p, &target, &cache, emit.contains(&Emit::Llvm))?;
    if let Some(dir) = args.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    }
    let t = Instant::now();
    built.artifact.write(&args.output)?;
    p.stages.push("write artifact", t.elapsed());
    if let Some(c) = &built.compiled {
        if emit.contains(&Emit::Mlir) {
            write_emit("mlir", c.mlir.as_bytes())?;
        }
        if emit.contains(&Emit::Llvm) {
            // LLVM IR where the target makes it; else the LLVM (NVVM) dialect.
            match (&c.llvm_ir, &c.llvm_dialect) {
                (Some(ll), _) => write_emit("ll", ll.as_bytes())?,
                (None, Some(dialect)) => write_emit("llvm.mlir", dialect.as_bytes())?,
                (None, None) => bail!(
                    "the {} target made no LLVM output to emit",
                    cache::target_name(&target)
                ),
            }
        }
    }
    if emit.contains(&Emit::Ptx) {
        for k in built
            .artifact
            .kernels
            .iter()
            .filter(|k| k.name.ends_with(".ptx"))
        {
            write_emit(&k.name, &k.bytes)?;
        }
    }
    if args.opt.timings {
        eprint!("{}", p.stages.table());
    }
    let a = &built.artifact;
    eprintln!(
        "compiled {} ({}) for {} at {}: {} kernels, {} plan steps, {} of code -> {}",
        a.model,
        a.entry,
        a.target,
        a.options.describe(),
        a.plan.kernels.len(),
        a.plan.steps.len(),
        human_bytes(a.code_size()),
        args.output.display()
    );
    eprintln!("{}", built.cache_line);
    if !emitted.is_empty() {
        let names: Vec<String> = emitted.iter().map(|p| p.display().to_string()).collect();
        eprintln!("emitted {}", names.join(", "));
    }
    Ok(ExitCode::SUCCESS)
}

/// `run`/`generate`/`bench --backend mlir-cpu` between checking the spec
/// and loading the kernels (the caller loads the weights in between, so
/// that a wrong weights file fails before a slow compile).
pub struct ForRun {
    prepared: Prepared,
    /// `--artifact`, already checked against the module; else compile.
    artifact: Option<(Artifact, PathBuf)>,
    cache: CacheUse,
    timings: bool,
}

impl ForRun {
    /// The module the kernels run with (optimized and legalized).
    pub fn module(&self) -> &ir::Module {
        &self.prepared.module
    }

    /// Compiles (through the cache) unless an artifact was given, prints
    /// the cache or artifact line (and `--timings`) to stderr, and loads
    /// the kernels (the shared object) for the runtime.
    pub fn finish(mut self) -> Result<(ir::Module, CompiledKernels)> {
        let (artifact, line) = match self.artifact.take() {
            Some((a, path)) => {
                let line = format!(
                    "using {} ({} kernels, compiled at {})",
                    path.display(),
                    a.plan.kernels.len(),
                    a.options.describe()
                );
                (a, line)
            }
            None => {
                let built = build(&mut self.prepared, &Target::Cpu, &self.cache, false)?;
                (built.artifact, built.cache_line)
            }
        };
        if self.timings {
            eprint!("{}", self.prepared.stages.table());
        }
        eprintln!("{line}");
        let so = artifact.kernel(CPU_KERNELS).with_context(|| {
            format!(
                "the artifact has no {CPU_KERNELS}; it was compiled for {}",
                artifact.target
            )
        })?;
        let kernels = CompiledKernels::load(&so.bytes, &artifact.plan)?;
        Ok((self.prepared.module, kernels))
    }
}

/// Checks the spec for `--backend mlir-cpu`. With `--artifact`, reads it
/// and checks it against the spec (same model, same IR fingerprint); `opt`'s
/// level and pass list default to the artifact's. `None` when the spec has
/// errors (printed).
pub fn for_run(
    spec: &str,
    model: Option<&str>,
    opt: &OptArgs,
    artifact_path: Option<&Path>,
    no_cache: bool,
) -> Result<Option<ForRun>> {
    let Some(path) = artifact_path else {
        let Some(p) = prepare(spec, model, &opt.options(2))? else {
            return Ok(None);
        };
        return Ok(Some(ForRun {
            prepared: p,
            artifact: None,
            cache: CacheUse::from_flags(no_cache),
            timings: opt.timings,
        }));
    };
    let a = Artifact::read(path, cache::compiler_id())?;
    if a.target != "cpu" {
        bail!(
            "{} was compiled for {}; the mlir-cpu backend runs artifacts compiled with --target cpu",
            path.display(),
            a.target
        );
    }
    let mut opts = opt.options(a.options.level);
    if opt.opt_level.is_none() && opt.passes.is_none() {
        opts.passes = Some(a.options.passes.clone());
    }
    let Some(p) = prepare(spec, model, &opts)? else {
        return Ok(None);
    };
    // Recompiling means compiling this spec with these options.
    let stale = |detail: String| -> anyhow::Error {
        let recompile = artifact::recompile_command(
            spec,
            &p.front.model.name,
            "cpu",
            &p.options,
            &path.display().to_string(),
        );
        ArtifactError::stale(path, detail, recompile).into()
    };
    if a.model != p.front.model.name {
        return Err(stale(format!(
            "it holds model {} ({}), not {} ({spec})",
            a.model, a.entry, p.front.model.name
        )));
    }
    let fingerprint = artifact::ir_fingerprint(&p.module);
    if a.ir_fingerprint != fingerprint {
        return Err(stale(format!(
            "it was compiled from other spec text or options (at {}) than {spec} at {}: \
             the IR differs (fingerprint {} vs {})",
            a.options.describe(),
            p.options.describe(),
            a.ir_fingerprint.chars().take(12).collect::<String>(),
            &fingerprint[..12]
        )));
    }
    Ok(Some(ForRun {
        prepared: p,
        artifact: Some((a, path.to_path_buf())),
        cache: CacheUse::Off("--artifact".into()),
        timings: opt.timings,
    }))
}

/// PTX texts by GPU module name.
pub type PtxModules = Vec<(String, String)>;

/// `run`/`generate`/`bench --device cuda` between checking the spec and
/// loading the kernels: the module, to be compiled for `arch` through the
/// cache once the weights are loaded.
pub struct ForCuda {
    prepared: Prepared,
    arch: String,
    cache: CacheUse,
    timings: bool,
}

impl ForCuda {
    /// The module the kernels run with (optimized and legalized).
    pub fn module(&self) -> &ir::Module {
        &self.prepared.module
    }

    /// Compiles for the GPU (through the cache), prints the cache line (and
    /// `--timings`) to stderr; returns the module, its PTX modules and plan.
    pub fn finish(mut self) -> Result<(ir::Module, PtxModules, Plan)> {
        let target = Target::Cuda { arch: self.arch };
        let built = build(&mut self.prepared, &target, &self.cache, false)?;
        if self.timings {
            eprint!("{}", self.prepared.stages.table());
        }
        eprintln!("{}", built.cache_line);
        let a = built.artifact;
        let ptx = a
            .kernels
            .iter()
            .filter_map(|k| {
                let module = k.name.strip_suffix(".ptx")?;
                Some((module.to_string(), String::from_utf8(k.bytes.clone()).ok()?))
            })
            .collect::<Vec<_>>();
        if ptx.is_empty() {
            bail!("the artifact for {} holds no PTX", a.target);
        }
        Ok((self.prepared.module, ptx, a.plan))
    }
}

/// Checks the spec for `--device cuda` and the architecture to compile for
/// (`sm_80` or newer). `None` when the spec has errors (printed).
pub fn for_cuda(
    spec: &str,
    model: Option<&str>,
    opt: &OptArgs,
    arch: &str,
    no_cache: bool,
) -> Result<Option<ForCuda>> {
    mythos_backend::cuda::check_arch(arch)?;
    let Some(p) = prepare(spec, model, &opt.options(2))? else {
        return Ok(None);
    };
    Ok(Some(ForCuda {
        prepared: p,
        arch: arch.to_string(),
        cache: CacheUse::from_flags(no_cache),
        timings: opt.timings,
    }))
}
