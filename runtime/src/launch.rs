//! A kernel call's arguments, the same for the compiled CPU kernels and the
//! GPU kernels (both take the plan's `KernelInfo::args`: buffers and
//! indices): an [`Arg`] is a buffer (the address of its first element and
//! its length in elements: host memory for the CPU, device memory for the
//! GPU) or an index. [`ArgList`] holds a call's arguments on the stack.

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
