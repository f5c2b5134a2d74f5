//! A decode step allocates nothing: a counting global allocator sees zero
//! heap allocations (on any thread, the worker pool's included) over several
//! single-token steps through the KV cache, once the first steps have
//! filled the runtime's buffer pool. Covers GQA and MLA (compact, absorbed
//! and the reference layout), MoE, ACT, LoRA, fused groups, batch 2, and the
//! threaded kernels of a bigger model on a 2-thread pool, and the mlir-cpu
//! backend's compiled kernels.
//!
//! `MYTHOS_ALLOC_TRACE=1` prints a backtrace of every allocation counted.

mod common {
    pub mod models;
}
use common::models::optimized;
use mythos_compiler::ir::Module;
use mythos_runtime::cpu::compiled::CompiledKernels;
use mythos_runtime::cpu::kv::KvCache;
use mythos_runtime::cpu::{CpuRuntime, Logits};
use mythos_runtime::engine::Engine;
use mythos_runtime::weights::Weights;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static COUNT: AtomicUsize = AtomicUsize::new(0);
static TRACE: AtomicBool = AtomicBool::new(false);

thread_local! {
    static IN_TRACE: Cell<bool> = const { Cell::new(false) };
}

fn record() {
    if !COUNTING.load(Ordering::SeqCst) {
        return;
    }
    COUNT.fetch_add(1, Ordering::SeqCst);
    if TRACE.load(Ordering::SeqCst) && !IN_TRACE.with(|t| t.replace(true)) {
        eprintln!(
            "allocation during decode:\n{}",
            std::backtrace::Backtrace::force_capture()
        );
        IN_TRACE.with(|t| t.set(false));
    }
}

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        record();
        System.alloc(layout)
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        record();
        System.alloc_zeroed(layout)
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new: usize) -> *mut u8 {
        record();
        System.realloc(ptr, layout, new)
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

#[global_allocator]
static GLOBAL: Counting = Counting;

/// `@name` optimized at `level`, or by exactly the comma-separated `passes`.
fn module(name: &str, level: u8, passes: Option<&str>) -> Module {
    optimized(
        name,
        level,
        passes.map(|p| p.split(',').map(str::to_string).collect()),
    )
}

/// Allocations counted over `steps` decode steps after a prefill of
/// `prompt` tokens per row and `warm` uncounted decode steps.
fn decode_allocations(
    m: &Module,
    kernels: Option<&CompiledKernels>,
    batch: usize,
    (prompt, warm, steps): (usize, usize, usize),
) -> usize {
    let weights = Weights::init(m, 3);
    let mut rt = CpuRuntime::new(m, &weights);
    if let Some(k) = kernels {
        rt = rt.with_kernels(k).unwrap();
        assert!(rt.compiled_nodes() > 0);
    }
    let vocab = m.vocab as i64;
    let ids: Vec<i64> = (0..(batch * prompt) as i64)
        .map(|i| (i * 37 + 11) % vocab)
        .collect();
    let mut cache = KvCache::with_capacity(prompt + warm + steps);
    rt.forward_with(&ids, batch, None, Some(&mut cache), Logits::Last)
        .unwrap();
    let mut step: Vec<i64> = (0..batch as i64).map(|r| (r * 5 + 1) % vocab).collect();
    for i in 0..warm + steps {
        if i == warm {
            COUNT.store(0, Ordering::SeqCst);
            COUNTING.store(true, Ordering::SeqCst);
        }
        let f = rt
            .forward_with(&step, batch, None, Some(&mut cache), Logits::Last)
            .unwrap();
        for (r, s) in step.iter_mut().enumerate() {
            *s = mythos_runtime::sample::argmax(&f.logits[r * f.vocab..(r + 1) * f.vocab]) as i64;
        }
    }
    COUNTING.store(false, Ordering::SeqCst);
    COUNT.load(Ordering::SeqCst)
}

#[test]
fn decode_steps_allocate_nothing() {
    TRACE.store(
        std::env::var_os("MYTHOS_ALLOC_TRACE").is_some(),
        Ordering::SeqCst,
    );
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(2)
        .build()
        .unwrap();
    // One test function: the counter is global, so nothing may run beside it.
    // (preset, level, passes instead of the level's, batch)
    let cases: &[(&str, u8, Option<&str>, usize)] = &[
        ("tiny-gqa", 2, None, 2),
        // Unfused ops and the per-expert MoE.
        ("tiny-gqa", 0, None, 2),
        // Compact cache, absorbed decode.
        ("tiny-mla", 2, None, 2),
        // The reference layout, expanded keys: everything but the MLA passes.
        (
            "tiny-mla",
            2,
            Some("canonicalize,cse,hoist,expert-batching,fuse,dce"),
            2,
        ),
        ("tiny-mla", 0, None, 1),
        ("tiny-huginn", 2, None, 2),
        // Big enough for the threaded GEMV, attention and MoE paths.
        ("bench-small-gqa", 2, None, 1),
    ];
    let mut failures = Vec::new();
    for &(name, level, passes, batch) in cases {
        let m = module(name, level, passes);
        let n = pool.install(|| decode_allocations(&m, None, batch, (6, 3, 8)));
        let how = passes.map_or(format!("-O{level}"), |p| format!("--passes {p}"));
        println!("{name} {how} batch {batch}: {n} allocations in 8 decode steps");
        if n != 0 {
            failures.push(format!("{name} {how}: {n}"));
        }
    }
    // The mlir-cpu backend: the same walk with compiled kernels.
    for name in ["tiny-gqa", "tiny-mla"] {
        let m = module(name, 2, None);
        let compiled = mythos_backend::compile::compile(
            &m,
            &|_| None,
            &mythos_backend::compile::Options::default(),
        )
        .unwrap();
        // The kernels keep their scratch on the stack (`memref.alloca`): a
        // heap allocation inside them would go to libc's malloc, which the
        // counting allocator does not see, so check there is none to make.
        assert!(
            !compiled.mlir.contains("memref.alloc(") && !compiled.mlir.contains("malloc"),
            "{name}: a compiled kernel allocates on the heap"
        );
        let kernels = CompiledKernels::load(&compiled.code, &compiled.plan).unwrap();
        let n = pool.install(|| decode_allocations(&m, Some(&kernels), 2, (6, 3, 8)));
        println!("{name} -O2 --backend mlir-cpu batch 2: {n} allocations in 8 decode steps");
        if n != 0 {
            failures.push(format!("{name} mlir-cpu: {n}"));
        }
    }
    assert!(
        failures.is_empty(),
        "decode steps allocated (run with MYTHOS_ALLOC_TRACE=1 to see where): {failures:?}"
    );
}
