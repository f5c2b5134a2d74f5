//! A kernel call's arguments, the same for the compiled CPU kernels and the
//! GPU kernels (both take the plan's `KernelInfo::args`: buffers and
//! indices): an [`Arg`] is a buffer (the address of its first element and
//! its length in elements: host memory for the CPU, device memory for the
//! GPU) or an index. [`ArgList`] holds a call's arguments on the stack.
//! [`KernelHost`] is what an engine that runs kernels supplies (the mlir-cpu
//! kernels, CUDA); [`generic`] is the call of a node's kernels on the
//! generic ABI over it, and `attention_host::run` attention's sequence.

use crate::kv::KvStream;
use mythos_compiler::ir::{Dim, Op, TensorType};
use mythos_compiler::plan::ArgKind;

/// The sizes a launch's grid is computed from, by the names the grid uses
/// (`rows`, `tokens`, `len`; see `KernelInfo::launch`).
pub type GridSizes<'a> = &'a [(&'a str, u64)];

/// One kernel argument.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arg {
    /// A buffer (`f32[]` or `i64[]`): the address of its first element and
    /// its length in elements.
    Buf { ptr: u64, len: usize },
    /// An `index` scalar.
    Index(u64),
}

impl Arg {
    /// Whether the argument has the declared kind.
    pub fn matches(&self, kind: ArgKind) -> bool {
        match self {
            Arg::Buf { .. } => kind.is_buffer(),
            Arg::Index(_) => kind == ArgKind::Index,
        }
    }

    /// The `len` f32s of a buffer argument from element `at`.
    pub fn view(self, at: usize, len: usize) -> Arg {
        match self {
            Arg::Buf { ptr, len: whole } => {
                debug_assert!(at + len <= whole, "a view inside its buffer");
                Arg::Buf {
                    ptr: ptr + 4 * at as u64,
                    len,
                }
            }
            Arg::Index(_) => unreachable!("a view of a buffer argument"),
        }
    }

    /// A buffer argument's address and length in elements.
    pub fn buffer(self) -> (u64, usize) {
        match self {
            Arg::Buf { ptr, len } => (ptr, len),
            Arg::Index(_) => unreachable!("a buffer argument"),
        }
    }

    /// A host slice as a read-only buffer argument.
    pub fn host<T>(s: &[T]) -> Arg {
        Arg::Buf {
            ptr: s.as_ptr() as u64,
            len: s.len(),
        }
    }

    /// A host slice as a buffer argument a kernel may write.
    pub fn host_mut<T>(s: &mut [T]) -> Arg {
        Arg::Buf {
            ptr: s.as_mut_ptr() as u64,
            len: s.len(),
        }
    }

    pub fn index(n: usize) -> Arg {
        Arg::Index(n as u64)
    }
}

/// Most arguments of one kernel call (the backend emits at most 20).
pub const MAX_ARGS: usize = 24;

/// A kernel call's arguments on the stack (a call allocates nothing).
#[derive(Clone, Copy)]
pub struct ArgList {
    a: [Arg; MAX_ARGS],
    n: usize,
}

impl ArgList {
    pub fn new() -> ArgList {
        ArgList {
            a: [Arg::Index(0); MAX_ARGS],
            n: 0,
        }
    }

    pub fn push(&mut self, a: Arg) {
        assert!(
            self.n < MAX_ARGS,
            "a kernel call with more than {MAX_ARGS} arguments"
        );
        self.a[self.n] = a;
        self.n += 1;
    }

    /// Replaces argument `i`.
    pub fn set(&mut self, i: usize, a: Arg) {
        self.a[..self.n][i] = a;
    }

    pub fn as_slice(&self) -> &[Arg] {
        &self.a[..self.n]
    }
}

impl Default for ArgList {
    fn default() -> Self {
        ArgList::new()
    }
}

impl Extend<Arg> for ArgList {
    fn extend<I: IntoIterator<Item = Arg>>(&mut self, iter: I) {
        for a in iter {
            self.push(a);
        }
    }
}

impl FromIterator<Arg> for ArgList {
    fn from_iter<I: IntoIterator<Item = Arg>>(iter: I) -> ArgList {
        let mut l = ArgList::new();
        l.extend(iter);
        l
    }
}

/// What the host sequences of compiled kernels (attention's, [`generic`])
/// need of an engine that runs kernels.
pub(crate) trait KernelHost {
    /// An owned f32 buffer (zeroed when made).
    type Buf;
    type Kernel;
    /// A buffer of a KV-cache entry.
    type Stream: KvStream;
    type Error;

    fn alloc(&self, len: usize) -> Result<Self::Buf, Self::Error>;

    /// A whole buffer as an argument (kernels may write it).
    fn arg(&self, b: &mut Self::Buf) -> Arg;

    /// A cache buffer's contents as an argument.
    fn stream_arg(&self, s: &mut Self::Stream) -> Result<Arg, Self::Error>;

    /// The core kernels' `scores` scratch for `len` positions (the GPU
    /// kernels keep their scores in registers and get a placeholder).
    fn scores(&self, len: usize) -> Result<Self::Buf, Self::Error>;

    /// The last position's row of each of `t.batch` sequences of `t.seq`
    /// rows of `x` (`[batch * seq, t.dim]`), as a new `[batch, dim]` buffer.
    ///
    /// # Safety
    /// `x` must address `batch * seq * dim` live f32s of this engine.
    unsafe fn last_rows(&self, x: Arg, t: Tokens) -> Result<Self::Buf, Self::Error>;

    /// Runs `k` on `args`; `sizes` give the grid (see `KernelInfo::launch`).
    ///
    /// # Safety
    /// `args` must match the kernel's signature, every buffer live and as
    /// large as the kernel reads or writes, until the kernel has run.
    unsafe fn launch(
        &self,
        k: &Self::Kernel,
        args: &[Arg],
        sizes: GridSizes,
    ) -> Result<(), Self::Error>;

    /// Appends the f32s `src` addresses to `s`, reserving room for
    /// `reserve` elements on a first append.
    ///
    /// # Safety
    /// `src` must address live memory of this engine (written by kernels
    /// launched before, in order).
    unsafe fn append(
        &self,
        s: &mut Self::Stream,
        src: Arg,
        reserve: usize,
    ) -> Result<(), Self::Error>;
}

/// Where a call's tokens lie: `batch` rows of `seq` tokens from position
/// `start`, of width `dim`.
#[derive(Clone, Copy)]
pub(crate) struct Tokens {
    pub batch: usize,
    pub seq: usize,
    pub start: usize,
    pub dim: usize,
}

/// The shape of a generic-ABI call's result: `rows` rows of `width`, an
/// activation (`[B, T, width]`, or `[B, 1, width]` for a head that computes
/// the last position only) or a vector of constant shape (one row).
#[derive(Clone, Copy, Debug)]
pub(crate) struct Output {
    pub rows: usize,
    pub width: usize,
    pub act: bool,
    /// Operand 0 is cut to the last position of each sequence first.
    pub last_rows: bool,
}

impl Output {
    /// The result of node `ty`, `op` in a call of `batch` sequences of `seq`
    /// tokens (`last_only`: the head for the last position only).
    pub fn of(ty: &TensorType, op: &Op, batch: usize, seq: usize, last_only: bool) -> Output {
        let width = ty.width().unwrap_or(1) as usize;
        let act = ty.shape.iter().any(|d| !matches!(d, Dim::Const(_)));
        let last_rows = matches!(op, Op::Head(_)) && last_only && seq > 1;
        let rows = match (act, last_rows) {
            (false, _) => 1,
            (true, true) => batch,
            (true, false) => batch * seq,
        };
        Output {
            rows,
            width,
            act,
            last_rows,
        }
    }
}

/// A node's kernels on the generic ABI: each of `kernels` in turn on the
/// operands `ins` (in IR order), the output, the row count (grid size:
/// `rows`). Returns the output buffer, `out.rows * out.width` long.
///
/// # Safety
/// `ins` must be the node's operands as the generic ABI takes them: live
/// until the kernels have run, activations of `batch * seq` rows (operand 0
/// of a `last_rows` call: of `width0` columns), weights and vectors of the
/// node's shapes.
pub(crate) unsafe fn generic<H: KernelHost>(
    host: &H,
    kernels: &[H::Kernel],
    mut ins: ArgList,
    out: Output,
    (batch, seq): (usize, usize),
) -> Result<H::Buf, H::Error> {
    let mut gathered;
    if out.last_rows {
        let x = ins.as_slice()[0];
        let t = Tokens {
            batch,
            seq,
            start: 0,
            dim: x.buffer().1 / (batch * seq),
        };
        // SAFETY: the caller's contract: operand 0 holds `batch * seq` rows.
        gathered = unsafe { host.last_rows(x, t)? };
        ins.set(0, host.arg(&mut gathered));
    }
    let mut buf = host.alloc(out.rows * out.width)?;
    ins.extend([host.arg(&mut buf), Arg::index(out.rows)]);
    for k in kernels {
        // SAFETY: the caller's contract; the output holds `rows` rows of
        // the node's width.
        unsafe { host.launch(k, ins.as_slice(), &[("rows", out.rows as u64)])? };
    }
    Ok(buf)
}
