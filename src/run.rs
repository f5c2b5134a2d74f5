//! The runtime commands of the CLI: `init`, `run`, `generate`, `bench`.
//! Everything here is glue: loading the model and weights, reading and
//! writing safetensors, printing; the work happens in `mythos-runtime`.

use anyhow::{bail, Context, Result};
use mythos_compiler::analysis;
use mythos_compiler::ir::{self, Module};
use mythos_compiler::model::{Halting, Model};
use mythos_runtime::cpu::{compiled::CompiledKernels, CpuRuntime, Logits};
use mythos_runtime::engine::Engine;
use mythos_runtime::finite::{check_logits, Step};
use mythos_runtime::sample::{Sampler, SamplingOptions};
use mythos_runtime::weights::Weights;
use safetensors::{tensor::TensorView, Dtype, SafeTensors};
use std::io::Write;
use std::path::Path;
use std::time::Instant;

/// The runtime over `module`, running `kernels` (the mlir-cpu backend) for
/// every node their plan covers.
pub fn runtime<'a>(
    module: &'a Module,
    weights: &'a Weights,
    kernels: Option<&'a CompiledKernels>,
) -> Result<CpuRuntime<'a>> {
    let rt = CpuRuntime::new(module, weights);
    Ok(match kernels {
        Some(k) => rt.with_kernels(k)?,
        None => rt,
    })
}

/// Where weights come from: a file, or the reference's random init.
pub enum WeightSource<'a> {
    File(&'a Path),
    Seed(u64),
}

pub fn load_weights(module: &Module, source: &WeightSource) -> Result<Weights> {
    match source {
        WeightSource::File(path) => Ok(Weights::load(module, path)?),
        WeightSource::Seed(seed) => Ok(Weights::init(module, *seed)),
    }
}

/// A model's forward module and its weights, as `--no-act` asks: with ACT
/// halting off (OpenMythos PR #58's `disable_act`), the module is the one
/// without halting and `full` keeps the model as written with its weights
/// (so a file written for the full model loads, and trained weights are
/// written back into it with the halting weights as they were).
pub struct Prepared {
    pub module: Module,
    pub weights: Weights,
    pub full: Option<(Module, Weights)>,
}

impl Prepared {
    pub fn new(m: &Model, source: &WeightSource, no_act: bool) -> Result<Prepared> {
        let module = module_of(m);
        let weights = load_weights(&module, source)?;
        if !no_act || m.recurrence.halt == Halting::None {
            return Ok(Prepared {
                module,
                weights,
                full: None,
            });
        }
        let ablated = module_of(&m.without_act());
        let mut own = Weights::zeros(&ablated);
        let missing = own.copy_shared(&ablated, &weights, &module);
        assert!(
            missing.is_empty(),
            "dropping ACT only removes weights: {missing:?}"
        );
        Ok(Prepared {
            module: ablated,
            weights: own,
            full: Some((module, weights)),
        })
    }

    /// Writes `trained` (weights of this module) as the model's weights file.
    pub fn save(&self, trained: &Weights, path: &Path) -> Result<()> {
        match &self.full {
            None => trained.save(&self.module, path)?,
            Some((module, base)) => {
                let mut all = base.clone();
                all.copy_shared(module, trained, &self.module);
                all.save(module, path)?;
            }
        }
        Ok(())
    }
}

/// `mythos init`: random weights with the reference's init scheme.
pub fn init(module: &Module, seed: u64, output: &Path) -> Result<()> {
    let weights = Weights::init(module, seed);
    weights.save(module, output)?;
    let params: u128 = module
        .weights
        .iter()
        .filter(|w| !w.buffer)
        .map(|w| w.numel())
        .sum();
    eprintln!(
        "wrote {} ({params} parameters, seed {seed}, f32)",
        output.display()
    );
    Ok(())
}

/// Reads `input_ids` (I64 `[B, T]`) from a safetensors file.
pub fn read_input_ids(path: &Path) -> Result<(Vec<i64>, usize, usize)> {
    let name = path.display();
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {name}"))?;
    let st = SafeTensors::deserialize(&bytes).map_err(|e| {
        anyhow::anyhow!("{name} is not a safetensors file ({e}); write input_ids with safetensors")
    })?;
    let t = st.tensor("input_ids").map_err(|_| {
        let names: Vec<&str> = st.names();
        anyhow::anyhow!(
            "{name} has no tensor `input_ids` (I64, [batch, tokens]); it has: {}",
            names.join(", ")
        )
    })?;
    if t.dtype() != Dtype::I64 {
        bail!("{name}: `input_ids` must be I64, found {:?}", t.dtype());
    }
    let shape = t.shape();
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        bail!("{name}: `input_ids` must have shape [batch, tokens], found {shape:?}");
    }
    let ids = t
        .data()
        .chunks_exact(8)
        .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
        .collect();
    Ok((ids, shape[0], shape[1]))
}

/// Writes `logits` (F32 `[B, T, V]`).
pub fn write_logits(path: &Path, logits: &[f32], b: usize, t: usize, v: usize) -> Result<()> {
    let bytes: Vec<u8> = logits.iter().flat_map(|x| x.to_le_bytes()).collect();
    let view = TensorView::new(Dtype::F32, vec![b, t, v], &bytes)?;
    let data = safetensors::serialize([("logits", view)], None)?;
    std::fs::write(path, data).with_context(|| format!("writing {}", path.display()))?;
    Ok(())
}

/// `mythos run`: logits for a batch of token ids, as one prefill or as a
/// prefill of `decode_from` tokens followed by single-token decode steps.
pub fn run(
    module: &Module,
    weights: &Weights,
    kernels: Option<&CompiledKernels>,
    ids_path: &Path,
    loops: Option<u64>,
    decode_from: Option<usize>,
    out: &Path,
) -> Result<()> {
    let rt = runtime(module, weights, kernels)?;
    run_on(module, &rt, ids_path, loops, decode_from, out)
}

/// `mythos run` on any engine.
pub fn run_on(
    module: &Module,
    rt: &impl Engine,
    ids_path: &Path,
    loops: Option<u64>,
    decode_from: Option<usize>,
    out: &Path,
) -> Result<()> {
    let (ids, b, t) = read_input_ids(ids_path)?;
    let v = module.vocab as usize;
    let start = Instant::now();
    let f = match decode_from {
        None => rt.forward(&ids, b, loops, None)?,
        Some(k) => rt.prefill_then_decode(&ids, b, loops, k)?,
    };
    let (logits, iterations) = (f.logits, f.iterations);
    // Every dumped row, in the order the steps ran: the prefill's
    // positions, then each decode position.
    let k = decode_from.unwrap_or(t);
    for pos in 0..t {
        let step = if pos < k {
            Step::Prefill
        } else {
            Step::Decode { position: pos }
        };
        for r in 0..b {
            check_logits(&logits[(r * t + pos) * v..][..v], step, r, pos)?;
        }
    }
    write_logits(out, &logits, b, t, v)?;
    eprintln!(
        "wrote {} (logits [{b}, {t}, {v}], {iterations} loop iterations, {:.1} ms)",
        out.display(),
        start.elapsed().as_secs_f64() * 1e3
    );
    Ok(())
}

/// Options of `mythos generate`.
pub struct GenerateOptions {
    pub max_new_tokens: usize,
    pub loops: Option<u64>,
    pub sampling: SamplingOptions,
    pub eos: Option<i64>,
}

/// `mythos generate` with token ids: streams the ids to stdout.
pub fn generate(
    module: &Module,
    rt: &impl Engine,
    prompt: &[i64],
    opts: &GenerateOptions,
) -> Result<Vec<i64>> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut shown = false;
    let out = generate_with(module, rt, prompt, opts, |i, tok| {
        let sep = if i == 0 { "" } else { " " };
        write!(lock, "{sep}{tok}")?;
        lock.flush()?;
        shown = true;
        Ok(())
    });
    drop(lock);
    // The stats (or an error after some tokens) after the tokens' line, so a
    // terminal shows them apart.
    if shown || out.is_ok() {
        println!();
    }
    let out = out?;
    eprintln!("{}", out.1);
    Ok(out.0)
}

/// `mythos generate --prompt`: streams decoded text to stdout.
pub fn generate_text(
    module: &Module,
    rt: &impl Engine,
    prompt: &[i64],
    opts: &GenerateOptions,
    tok: &crate::text::Tokenizer,
) -> Result<Vec<i64>> {
    let stdout = std::io::stdout();
    let mut lock = stdout.lock();
    let mut shown = 0usize;
    let mut ids: Vec<i64> = Vec::new();
    let out = generate_with(module, rt, prompt, opts, |_, t| {
        // Decode the whole continuation and print what is new: a token may
        // complete a character that an earlier one started.
        ids.push(t);
        let text = tok.decode(&ids)?;
        if text.len() > shown && text.is_char_boundary(shown) {
            write!(lock, "{}", &text[shown..])?;
            lock.flush()?;
            shown = text.len();
        }
        Ok(())
    });
    drop(lock);
    if !ids.is_empty() || out.is_ok() {
        println!();
    }
    let out = out?;
    eprintln!("{}", out.1);
    Ok(out.0)
}

/// Prefill the prompt, then one token per step through the KV cache; `emit`
/// gets each new token as it is chosen. Returns the tokens and the stats
/// line (count, prefill time, decode speed) for stderr.
fn generate_with<E: Engine>(
    module: &Module,
    rt: &E,
    prompt: &[i64],
    opts: &GenerateOptions,
    mut emit: impl FnMut(usize, i64) -> Result<()>,
) -> Result<(Vec<i64>, String)> {
    if prompt.is_empty() {
        bail!("the prompt is empty: give at least one token");
    }
    let v = module.vocab as usize;
    let positions = (prompt.len() + opts.max_new_tokens).min(module.max_seq as usize);
    let mut cache = rt.new_cache(positions);
    let mut sampler = Sampler::new(opts.sampling);
    let mut out = Vec::with_capacity(opts.max_new_tokens);
    let start = Instant::now();
    let f = rt.forward_with(prompt, 1, opts.loops, Some(&mut cache), Logits::Last)?;
    let prefill = start.elapsed();
    check_logits(&f.logits[..v], Step::Prefill, 0, prompt.len() - 1)?;
    let mut next = sampler.sample(&f.logits[..v]) as i64;
    let decode_start = Instant::now();
    for i in 0..opts.max_new_tokens {
        out.push(next);
        emit(i, next)?;
        if Some(next) == opts.eos || i + 1 == opts.max_new_tokens {
            break;
        }
        if cache.pos >= module.max_seq as usize {
            eprintln!("\nstopped: reached max_seq ({})", module.max_seq);
            break;
        }
        let position = cache.pos;
        let f = rt.forward(&[next], 1, opts.loops, Some(&mut cache))?;
        check_logits(&f.logits[..v], Step::Decode { position }, 0, position)?;
        next = sampler.sample(&f.logits[..v]) as i64;
    }
    let decode = decode_start.elapsed().as_secs_f64();
    let steps = out.len().saturating_sub(1).max(1);
    let stats = format!(
        "{} tokens; prefill {} tokens in {:.1} ms; decode {:.2} tokens/s ({:.1} ms/token)",
        out.len(),
        prompt.len(),
        prefill.as_secs_f64() * 1e3,
        steps as f64 / decode.max(1e-9),
        decode * 1e3 / steps as f64
    );
    Ok((out, stats))
}

/// Figures of `mythos bench`.
#[derive(serde::Serialize)]
pub struct BenchReport {
    pub model: String,
    /// `cpu` (the reference runtime), `mlir-cpu` (compiled kernels) or `cuda`.
    pub backend: String,
    pub seq: usize,
    pub decode_tokens: usize,
    pub loops: u64,
    pub threads: usize,
    /// Rounds measured; the figures are the fastest round's.
    pub repeats: usize,
    pub prefill_ms: f64,
    pub prefill_tokens_per_s: f64,
    pub decode_ms_per_token: f64,
    pub decode_tokens_per_s: f64,
    pub prefill_gflops: f64,
    pub decode_gflops: f64,
}

/// What `mythos bench` measures.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Prompt tokens of the prefill.
    pub seq: usize,
    /// Single-token decode steps after it.
    pub decode: usize,
    pub loops: Option<u64>,
    /// Seed of the random prompt.
    pub seed: u64,
    /// Rounds of prefill + decode, each on a fresh cache; the fastest of each counts.
    pub repeats: usize,
    /// Print the engine's time per op kind (all rounds together).
    pub profile: bool,
}

/// `mythos bench`: a prefill of `seq` random tokens, then `decode`
/// single-token steps, `repeats` times.
pub fn bench(
    module: &Module,
    weights: &Weights,
    kernels: Option<&CompiledKernels>,
    opts: &BenchOptions,
) -> Result<BenchReport> {
    let mut rt = runtime(module, weights, kernels)?;
    if opts.profile {
        rt = rt.with_profiling();
    }
    bench_on(module, &rt, opts)
}

/// `mythos bench` on any engine (`profile`: the engine's time per op kind).
pub fn bench_on<E: Engine>(module: &Module, rt: &E, opts: &BenchOptions) -> Result<BenchReport> {
    let BenchOptions {
        seq,
        decode,
        loops,
        seed,
        repeats,
        profile,
    } = *opts;
    let loops_n = loops.unwrap_or_else(|| rt.max_iters());
    if seq + decode > module.max_seq as usize {
        bail!(
            "--seq {seq} + --decode {decode} exceeds the model's max_seq ({})",
            module.max_seq
        );
    }
    let mut rng = mythos_runtime::rng::Rng::new(seed);
    let ids: Vec<i64> = (0..seq)
        .map(|_| (rng.next_u64() % module.vocab) as i64)
        .collect();
    // Warm-up on a short prefix so that thread pools and allocations are ready.
    let warm = seq.min(8);
    rt.forward(&ids[..warm], 1, loops, Some(&mut rt.new_cache(warm)))?;
    let (mut prefill, mut decode_s) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..repeats.max(1) {
        let (p, d) = bench_round(rt, &ids, decode, loops)?;
        prefill = prefill.min(p);
        decode_s = decode_s.min(d);
    }
    if let (true, Some(ops)) = (profile, rt.profile()) {
        let total: f64 = ops.iter().map(|(_, d)| d.as_secs_f64()).sum();
        eprintln!("time per op (warm-up, prefill and decode together):");
        for (op, d) in ops {
            let ms = d.as_secs_f64() * 1e3;
            eprintln!(
                "  {op:<16} {ms:>9.1} ms  {:>5.1}%",
                100.0 * d.as_secs_f64() / total
            );
        }
    }
    let flops = analysis::analyze(
        module,
        &analysis::Options {
            seq: seq as u64,
            loops: Some(loops_n),
            ..Default::default()
        },
    );
    let per_token_decode = decode_s;
    let head_flops = flops
        .flops
        .by_component
        .get("head")
        .map_or(0.0, |c| c.prefill_per_token);
    Ok(BenchReport {
        model: module.name.clone(),
        backend: rt.backend().to_string(),
        seq,
        decode_tokens: decode,
        loops: loops_n,
        threads: rayon::current_num_threads(),
        repeats: repeats.max(1),
        prefill_ms: prefill * 1e3,
        prefill_tokens_per_s: seq as f64 / prefill,
        decode_ms_per_token: per_token_decode * 1e3,
        decode_tokens_per_s: if decode > 0 {
            1.0 / per_token_decode
        } else {
            0.0
        },
        // The prefill computes the head for the last position only.
        prefill_gflops: (flops.flops.prefill_total - head_flops * (seq as f64 - 1.0))
            / prefill
            / 1e9,
        decode_gflops: if decode > 0 {
            flops.flops.decode_per_token / per_token_decode / 1e9
        } else {
            0.0
        },
    })
}

/// One measured round: a prefill of `ids` on a fresh cache, then `decode`
/// greedy single-token steps; (prefill seconds, decode seconds per token).
fn bench_round<E: Engine>(
    rt: &E,
    ids: &[i64],
    decode: usize,
    loops: Option<u64>,
) -> Result<(f64, f64)> {
    let seq = ids.len();
    let mut cache = rt.new_cache(seq + decode);
    let t0 = Instant::now();
    // Generation needs the last position's logits only (see `Logits::Last`).
    let f = rt.forward_with(ids, 1, loops, Some(&mut cache), Logits::Last)?;
    let prefill = t0.elapsed().as_secs_f64();
    check_logits(&f.logits, Step::Prefill, 0, seq - 1)?;
    drop(f); // its pooled buffer serves the decode steps
    let mut tok = ids[seq - 1];
    let t1 = Instant::now();
    for _ in 0..decode {
        let position = cache.pos;
        let f = rt.forward(&[tok], 1, loops, Some(&mut cache))?;
        check_logits(&f.logits, Step::Decode { position }, 0, position)?;
        tok = mythos_runtime::sample::argmax(&f.logits) as i64;
    }
    Ok((prefill, t1.elapsed().as_secs_f64() / decode.max(1) as f64))
}

/// The module of a checked model (lowering cannot fail).
pub fn module_of(model: &mythos_compiler::model::Model) -> Module {
    ir::lower::lower(model)
}
