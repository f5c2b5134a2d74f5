//! Recycled buffers: what makes a decode step allocate nothing.
//!
//! Every activation, scratch vector and per-step bookkeeping vector of the
//! CPU runtime is a [`Buf`]: a `Vec` taken from a process-wide free list
//! and handed back when dropped. A decode step asks for the same sizes as
//! the step before it, so after the first step or two every request is
//! served from the list and the step allocates nothing (checked by
//! `runtime/tests/alloc.rs` with a counting allocator). It also spares big
//! prefill buffers the page faults of fresh memory.
//!
//! Requests are served best-fit (the smallest kept buffer that is large
//! enough), so a step's small requests do not take the buffers its large
//! ones need. The lists are bounded ([`KEEP_BUFFERS`] buffers and
//! [`KEEP_BYTES`] bytes per element type); past that a returned buffer is
//! freed.

use std::ops::{Deref, DerefMut};
use std::sync::Mutex;

/// Most buffers kept per element type.
pub const KEEP_BUFFERS: usize = 4096;
/// Most bytes kept per element type (1 GiB).
pub const KEEP_BYTES: usize = 1 << 30;

/// Free buffers of one element type, sorted by capacity.
pub struct FreeList<T> {
    bufs: Vec<Vec<T>>,
    bytes: usize,
}

impl<T> FreeList<T> {
    pub const fn new() -> FreeList<T> {
        FreeList {
            bufs: Vec::new(),
            bytes: 0,
        }
    }
}

impl<T> Default for FreeList<T> {
    fn default() -> Self {
        FreeList::new()
    }
}

/// Element types with a free list.
pub trait Pooled: Copy + Default + Send + 'static {
    fn free_list() -> &'static Mutex<FreeList<Self>>;
}

macro_rules! pooled {
    ($($t:ty),*) => {$(
        impl Pooled for $t {
            fn free_list() -> &'static Mutex<FreeList<$t>> {
                static LIST: Mutex<FreeList<$t>> = Mutex::new(FreeList::new());
                &LIST
            }
        }
    )*};
}

pooled!(f32, usize, bool, (usize, f32));

/// A `Vec` that goes back to its free list when dropped. Derefs to the `Vec`.
pub struct Buf<T: Pooled>(Vec<T>);

impl<T: Pooled> Buf<T> {
    /// An empty buffer that can hold at least `capacity` elements.
    pub fn with_capacity(capacity: usize) -> Buf<T> {
        let mut v = take::<T>(capacity).unwrap_or_default();
        v.clear();
        if v.capacity() < capacity {
            v.reserve_exact(capacity);
        }
        Buf(v)
    }

    /// `len` default values (zeros).
    pub fn zeroed(len: usize) -> Buf<T> {
        let mut b = Buf::with_capacity(len);
        b.0.resize(len, T::default());
        b
    }

    /// A copy of `src`.
    pub fn copy_of(src: &[T]) -> Buf<T> {
        let mut b = Buf::with_capacity(src.len());
        b.0.extend_from_slice(src);
        b
    }

    /// The `Vec`, which will not go back to the free list.
    pub fn into_vec(mut self) -> Vec<T> {
        std::mem::take(&mut self.0)
    }
}

impl<T: Pooled> Default for Buf<T> {
    /// An empty buffer without storage (allocates nothing).
    fn default() -> Self {
        Buf(Vec::new())
    }
}

impl<T: Pooled> Clone for Buf<T> {
    fn clone(&self) -> Self {
        Buf::copy_of(&self.0)
    }
}

impl<T: Pooled + std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl<T: Pooled + PartialEq> PartialEq for Buf<T> {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}

impl<T: Pooled> From<Vec<T>> for Buf<T> {
    /// Adopts `v` (no copy); it joins the free list when dropped.
    fn from(v: Vec<T>) -> Self {
        Buf(v)
    }
}

impl<'b, T: Pooled> IntoIterator for &'b Buf<T> {
    type Item = &'b T;
    type IntoIter = std::slice::Iter<'b, T>;
    fn into_iter(self) -> Self::IntoIter {
        self.0.iter()
    }
}

impl<T: Pooled> Deref for Buf<T> {
    type Target = Vec<T>;
    fn deref(&self) -> &Vec<T> {
        &self.0
    }
}

impl<T: Pooled> DerefMut for Buf<T> {
    fn deref_mut(&mut self) -> &mut Vec<T> {
        &mut self.0
    }
}

impl<T: Pooled> Drop for Buf<T> {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// The smallest kept buffer with room for `capacity` elements.
fn take<T: Pooled>(capacity: usize) -> Option<Vec<T>> {
    if capacity == 0 {
        return None;
    }
    let mut list = T::free_list().lock().unwrap_or_else(|e| e.into_inner());
    let at = list.bufs.partition_point(|b| b.capacity() < capacity);
    if at == list.bufs.len() {
        return None;
    }
    let v = list.bufs.remove(at);
    list.bytes -= v.capacity() * std::mem::size_of::<T>();
    Some(v)
}

/// Keeps `v` for a later request, unless the list is full.
fn give<T: Pooled>(v: Vec<T>) {
    let bytes = v.capacity() * std::mem::size_of::<T>();
    if bytes == 0 {
        return;
    }
    let mut list = T::free_list().lock().unwrap_or_else(|e| e.into_inner());
    if list.bufs.len() >= KEEP_BUFFERS || list.bytes + bytes > KEEP_BYTES {
        return; // dropped (freed) after the lock is released
    }
    // `bufs` has room reserved below, so keeping `v` allocates nothing
    // once the list has grown to its working size.
    if list.bufs.len() == list.bufs.capacity() {
        let grow = list.bufs.capacity().max(64);
        list.bufs.reserve(grow);
    }
    let at = list.bufs.partition_point(|b| b.capacity() < v.capacity());
    list.bufs.insert(at, v);
    list.bytes += bytes;
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A type of its own, so that no other test takes these buffers.
    #[derive(Clone, Copy, Default, Debug, PartialEq)]
    struct Probe(u32);
    pooled!(Probe);

    #[test]
    fn best_fit_reuse() {
        type T = Probe;
        let a = Buf::<T>::zeroed(100);
        let b = Buf::<T>::zeroed(1000);
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        drop(a);
        drop(b);
        let small = Buf::<T>::zeroed(50);
        assert_eq!(small.as_ptr(), pa, "the 100-slot buffer fits 50 best");
        let big = Buf::<T>::zeroed(999);
        assert_eq!(big.as_ptr(), pb);
        assert!(big.iter().all(|&p| p == Probe(0)));
        let kept = big.into_vec();
        assert_eq!(kept.len(), 999);
    }
}
