//! Compiled kernels (the `mlir-cpu` backend): a shared object made by the
//! MLIR backend from the plan's kernels, loaded with `dlopen`, and called
//! by the CPU runtime in place of its own code for every node the plan
//! covers. The runtime keeps the host side: loops and ACT bookkeeping, the
//! KV cache, parameters and weights.
//!
//! Kernels are called through MLIR's C interface (`_mlir_ciface_<symbol>`):
//! a 1-D memref is passed as a pointer to its descriptor, an `index` by
//! value. Both are one machine word, so every kernel is called as
//! `extern "C" fn(usize, ...)` with as many words as it has arguments.

use mythos_compiler::ir::walk::GraphId;
use mythos_compiler::ir::{Module, NodeId};
use mythos_compiler::plan::Plan;
use std::collections::HashMap;

/// Why compiled kernels could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("cannot load the compiled CPU kernels: {0}; recompile the model (`mythos compile --target cpu`)")]
    Library(String),
    #[error("the compiled kernels lack `{0}`; the artifact is corrupt or stale, recompile it (`mythos compile --target cpu`)")]
    Symbol(String),
    #[error("the plan names {graph} node {node}, which this model does not have; the artifact is stale, recompile it")]
    Node { graph: String, node: u32 },
}

/// A kernel entry point and its name.
#[derive(Clone, Copy)]
pub struct KernelFn {
    f: *const (),
}

// SAFETY: a kernel is a plain function in a library that lives as long as
// the `CompiledKernels` that hands it out; calling it from any thread is fine.
unsafe impl Send for KernelFn {}
unsafe impl Sync for KernelFn {}

/// The loaded library and, per plan step, its kernels.
pub struct CompiledKernels {
    _lib: libloading::Library,
    /// (graph path, node index) -> kernels.
    steps: HashMap<(String, u32), Vec<KernelFn>>,
}

impl CompiledKernels {
    /// Loads the shared object `so` (bytes) and resolves every kernel of `plan`.
    pub fn load(so: &[u8], plan: &Plan) -> Result<CompiledKernels, LoadError> {
        static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let path =
            std::env::temp_dir().join(format!("mythos-kernels-{}-{n}.so", std::process::id()));
        std::fs::write(&path, so)
            .map_err(|e| LoadError::Library(format!("writing {}: {e}", path.display())))?;
        // SAFETY: the library is our own kernel code; its initializers do nothing.
        let lib = unsafe { libloading::Library::new(&path) };
        let _ = std::fs::remove_file(&path);
        let lib = lib.map_err(|e| LoadError::Library(e.to_string()))?;
        let mut by_symbol: HashMap<&str, KernelFn> = HashMap::new();
        for k in &plan.kernels {
            let name = format!("_mlir_ciface_{}\0", k.symbol);
            // SAFETY: we only take the address; calls go through `call`.
            let sym: libloading::Symbol<*const ()> = unsafe { lib.get(name.as_bytes()) }
                .map_err(|_| LoadError::Symbol(k.symbol.clone()))?;
            by_symbol.insert(&k.symbol, KernelFn { f: *sym });
        }
        let mut steps = HashMap::new();
        for s in &plan.steps {
            let fns = s
                .kernels
                .iter()
                .map(|k| {
                    by_symbol
                        .get(k.as_str())
                        .copied()
                        .ok_or_else(|| LoadError::Symbol(k.clone()))
                })
                .collect::<Result<Vec<_>, _>>()?;
            steps.insert((s.graph.clone(), s.node), fns);
        }
        Ok(CompiledKernels { _lib: lib, steps })
    }

    /// The kernels of every planned node, keyed by graph and node, for
    /// `module` (which must be the module the plan was made from).
    pub(crate) fn bind(&self, module: &Module) -> Result<Bound, LoadError> {
        let mut out = HashMap::new();
        let graphs = module.graphs();
        for ((path, node), fns) in &self.steps {
            let at = graphs.node_at(path, *node).ok_or_else(|| LoadError::Node {
                graph: path.clone(),
                node: *node,
            })?;
            out.insert(at, fns.clone());
        }
        Ok(out)
    }
}

/// Kernels by (graph, node).
pub(crate) type Bound = HashMap<(GraphId, NodeId), Vec<KernelFn>>;

/// A 1-D memref descriptor (MLIR's `StridedMemRefType<T, 1>`); a call's
/// descriptors are made from its [`Arg`](crate::launch::Arg)s by [`call_args`].
#[repr(C)]
pub struct Desc<T> {
    allocated: *mut T,
    aligned: *mut T,
    offset: i64,
    size: i64,
    stride: i64,
}

impl<T> Desc<T> {
    /// A buffer argument's memory (see [`crate::launch::Arg`]).
    pub fn raw(ptr: u64, len: usize) -> Desc<T> {
        Desc {
            allocated: ptr as *mut T,
            aligned: ptr as *mut T,
            offset: 0,
            size: len as i64,
            stride: 1,
        }
    }

    pub fn word(&self) -> usize {
        self as *const Desc<T> as usize
    }
}

/// Calls a kernel with its argument words.
///
/// # Safety
/// `args` must match the kernel's signature (descriptor pointers that stay
/// valid for the call, indices by value), with outputs large enough.
pub unsafe fn call(k: KernelFn, a: &[usize]) {
    macro_rules! arity {
        ($($i:literal)*) => {{
            type F = unsafe extern "C" fn($(arity!(@w $i)),*);
            let f: F = unsafe { std::mem::transmute::<*const (), F>(k.f) };
            unsafe { f($(a[$i]),*) }
        }};
        (@w $i:literal) => { usize };
    }
    match a.len() {
        1 => arity!(0),
        2 => arity!(0 1),
        3 => arity!(0 1 2),
        4 => arity!(0 1 2 3),
        5 => arity!(0 1 2 3 4),
        6 => arity!(0 1 2 3 4 5),
        7 => arity!(0 1 2 3 4 5 6),
        8 => arity!(0 1 2 3 4 5 6 7),
        9 => arity!(0 1 2 3 4 5 6 7 8),
        10 => arity!(0 1 2 3 4 5 6 7 8 9),
        11 => arity!(0 1 2 3 4 5 6 7 8 9 10),
        12 => arity!(0 1 2 3 4 5 6 7 8 9 10 11),
        13 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12),
        14 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13),
        15 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14),
        16 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15),
        17 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16),
        18 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17),
        19 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18),
        20 => arity!(0 1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19),
        n => unreachable!("no kernel takes {n} arguments (the backend emits at most 20)"),
    }
}

/// Calls a kernel with its arguments: each buffer becomes a descriptor on
/// the stack (its address is the word), each index its value.
///
/// # Safety
/// As [`call`]: `args` must match the kernel's signature, every buffer
/// valid host memory for what the kernel reads or writes.
pub unsafe fn call_args(k: KernelFn, args: &[crate::launch::Arg]) {
    use crate::launch::{Arg, MAX_ARGS};
    assert!(
        args.len() <= MAX_ARGS,
        "a kernel call with more than {MAX_ARGS} arguments"
    );
    let mut descs: [Desc<f32>; MAX_ARGS] = std::array::from_fn(|_| Desc::raw(0, 0));
    for (d, a) in descs.iter_mut().zip(args) {
        if let Arg::Buf { ptr, len } = *a {
            *d = Desc::raw(ptr, len);
        }
    }
    let mut words = [0usize; MAX_ARGS];
    for ((w, d), a) in words.iter_mut().zip(&descs).zip(args) {
        *w = match *a {
            Arg::Buf { .. } => d.word(),
            Arg::Index(n) => n as usize,
        };
    }
    // SAFETY: the caller's contract; the descriptors outlive the call.
    unsafe { call(k, &words[..args.len()]) }
}
