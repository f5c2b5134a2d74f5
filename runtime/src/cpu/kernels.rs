//! f32 building blocks of the CPU reference runtime. Row-major everywhere:
//! an activation is `rows x cols` (rows = batch * tokens), a linear weight is
//! `[out, in]` as in PyTorch.

use super::pool::Buf;

/// Up to this many rows a linear layer is a few matrix-vector products:
/// packing the weight for a GEMM would cost more than reading it once.
const GEMV_ROWS: usize = 4;

/// `out[rows, n] = x[rows, k] @ w[n, k]^T` (a linear layer), overwriting `out`.
pub fn linear(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    linear_on(x, rows, k, w, n, out, true);
}

/// [`linear`], on several threads when `threads` and the product is big enough.
fn linear_on(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
    threads: bool,
) {
    assert_eq!(x.len(), rows * k, "linear: x is not rows x k");
    assert_eq!(w.len(), n * k, "linear: w is not n x k");
    assert_eq!(out.len(), rows * n, "linear: out is not rows x n");
    if rows == 0 || n == 0 {
        return;
    }
    if k == 0 {
        out.fill(0.0);
        return;
    }
    if rows <= GEMV_ROWS {
        gemv_rows(x, rows, k, w, n, out, threads);
        return;
    }
    gemm_with(rows, k, n, x, k, 1, w, 1, k, out, n, 1, threads);
}

/// Each output is a dot product of an input row with a weight row (weights
/// are `[out, in]`, so rows are contiguous).
fn gemv_rows(
    x: &[f32],
    rows: usize,
    k: usize,
    w: &[f32],
    n: usize,
    out: &mut [f32],
    allow_threads: bool,
) {
    debug_assert_eq!(w.len(), n * k);
    gemv_group(x, rows, k, [(w, out)], allow_threads);
}

/// Several linear layers of the same input `x` (such as the q, k and v
/// projections, or SwiGLU's gate and up): `out_i[rows, n_i] = x @ w_i^T`
/// for each job `(w_i, out_i)`, with the same numbers as [`linear`] on each.
/// Decode-sized inputs (at most [`GEMV_ROWS`] rows) go as one pass over the
/// weight rows of all jobs together, split across the threads in one
/// fork-join; larger ones are a [`linear`] per job.
pub fn linear_group<const N: usize>(
    x: &[f32],
    rows: usize,
    k: usize,
    jobs: [(&[f32], &mut [f32]); N],
) {
    if rows > GEMV_ROWS || rows == 0 || k == 0 {
        for (w, out) in jobs {
            let n = w.len().checked_div(k).unwrap_or(out.len() / rows.max(1));
            linear(x, rows, k, w, n, out);
        }
        return;
    }
    assert_eq!(x.len(), rows * k, "linear: x is not rows x k");
    gemv_group(x, rows, k, jobs, true);
}

/// [`linear_group`] for at most [`GEMV_ROWS`] rows: every output is
/// `dot(x_r, w_row)`. Decode is bound by reading the weights, so the weight
/// rows of all jobs are split across all threads in blocks large enough to
/// keep each thread streaming, and each weight row is read once for all
/// input rows. Below 128k multiply-adds (512 kB of f32 weights) waking the
/// threads costs more than it saves: measured on bench-small-gqa decode
/// (2 threads, alternating runs, 16 rounds), 2^17 was about 5% faster than
/// 2^18 and 2^16, and earlier 2^18 beat 2^14 and 2^20.
fn gemv_group<const N: usize>(
    x: &[f32],
    rows: usize,
    k: usize,
    jobs: [(&[f32], &mut [f32]); N],
    allow_threads: bool,
) {
    use rayon::prelude::*;
    /// A job's weights and output, written at disjoint rows by each task.
    #[derive(Clone, Copy)]
    struct Job {
        w: *const f32,
        out: *mut f32,
        n: usize,
    }
    // SAFETY: tasks read the weights and write disjoint output elements.
    unsafe impl Sync for Job {}
    unsafe impl Send for Job {}
    let mut js = [Job {
        w: std::ptr::null(),
        out: std::ptr::null_mut(),
        n: 0,
    }; N];
    // Job i owns the global weight rows starts[i]..starts[i + 1].
    let mut starts = [0usize; N];
    let mut total = 0;
    for (i, (w, out)) in jobs.into_iter().enumerate() {
        let n = w.len() / k;
        assert_eq!(w.len(), n * k, "linear: w is not n x k");
        assert_eq!(out.len(), rows * n, "linear: out is not rows x n");
        js[i] = Job {
            w: w.as_ptr(),
            out: out.as_mut_ptr(),
            n,
        };
        starts[i] = total;
        total += n;
    }
    let run = |lo: usize, hi: usize| {
        for (i, job) in js.iter().enumerate() {
            let (a, b) = (lo.max(starts[i]), hi.min(starts[i] + job.n));
            for row in a.saturating_sub(starts[i])..b.saturating_sub(starts[i]) {
                // SAFETY: `row < job.n`, so the weight row lies in `w` (n x k)
                // and `r * n + row` in `out` (rows x n); only this task
                // writes output column `row` (its rows `lo..hi` are its own).
                let wr = unsafe { std::slice::from_raw_parts(job.w.add(row * k), k) };
                for r in 0..rows {
                    let v = dot(&x[r * k..(r + 1) * k], wr);
                    unsafe { *job.out.add(r * job.n + row) = v };
                }
            }
        }
    };
    let threads = rayon::current_num_threads();
    if allow_threads && threads > 1 && total * k >= 1 << 17 {
        let chunk = (total / (threads * 4)).max(16);
        (0..total.div_ceil(chunk))
            .into_par_iter()
            .for_each(|c| run(c * chunk, ((c + 1) * chunk).min(total)));
    } else {
        run(0, total);
    }
}

/// Dot product; uses AVX2/FMA when the CPU has them (checked once at run
/// time, so the binary stays portable).
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { dot_avx2(a, b) };
        }
    }
    dot_portable(a, b)
}

/// `y += s * x`; uses AVX2/FMA when the CPU has them, like [`dot`].
pub fn axpy(y: &mut [f32], s: f32, x: &[f32]) {
    #[cfg(target_arch = "x86_64")]
    {
        if has_avx2_fma() {
            // SAFETY: the features were detected on this CPU.
            return unsafe { axpy_avx2(y, s, x) };
        }
    }
    for (o, &v) in y.iter_mut().zip(x) {
        *o += s * v;
    }
}

/// Whether this CPU has AVX2 and FMA (checked once), which picks the SIMD
/// kernels. `MYTHOS_CPU_PORTABLE=1` in the environment forces the portable
/// ones (to compare the two, or to rule the SIMD code out when debugging).
#[cfg(target_arch = "x86_64")]
pub fn has_avx2_fma() -> bool {
    use std::sync::OnceLock;
    static FAST: OnceLock<bool> = OnceLock::new();
    *FAST.get_or_init(|| {
        let portable = std::env::var_os("MYTHOS_CPU_PORTABLE").is_some_and(|v| v != "0");
        !portable && is_x86_feature_detected!("avx2") && is_x86_feature_detected!("fma")
    })
}

#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn axpy_avx2(y: &mut [f32], s: f32, x: &[f32]) {
    use std::arch::x86_64::*;
    let n = y.len().min(x.len());
    let (py, px) = (y.as_mut_ptr(), x.as_ptr());
    let sv = _mm256_set1_ps(s);
    let mut i = 0;
    while i + 8 <= n {
        let v = _mm256_fmadd_ps(sv, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
        _mm256_storeu_ps(py.add(i), v);
        i += 8;
    }
    while i < n {
        *py.add(i) += s * *px.add(i);
        i += 1;
    }
}

/// [`dot`] with AVX2/FMA (inlined into callers with the same features).
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn dot_avx2(a: &[f32], b: &[f32]) -> f32 {
    use std::arch::x86_64::*;
    let n = a.len().min(b.len());
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc = [_mm256_setzero_ps(); 4];
    let mut i = 0;
    while i + 32 <= n {
        for (j, acc) in acc.iter_mut().enumerate() {
            let x = _mm256_loadu_ps(pa.add(i + 8 * j));
            let y = _mm256_loadu_ps(pb.add(i + 8 * j));
            *acc = _mm256_fmadd_ps(x, y, *acc);
        }
        i += 32;
    }
    while i + 8 <= n {
        acc[0] = _mm256_fmadd_ps(
            _mm256_loadu_ps(pa.add(i)),
            _mm256_loadu_ps(pb.add(i)),
            acc[0],
        );
        i += 8;
    }
    let sum = _mm256_add_ps(_mm256_add_ps(acc[0], acc[1]), _mm256_add_ps(acc[2], acc[3]));
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), sum);
    let mut total = (lanes[0] + lanes[4])
        + (lanes[1] + lanes[5])
        + (lanes[2] + lanes[6])
        + (lanes[3] + lanes[7]);
    while i < n {
        total += *pa.add(i) * *pb.add(i);
        i += 1;
    }
    total
}

/// Dot product with eight independent accumulators (vectorises everywhere).
fn dot_portable(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0.0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..8 {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum = (acc[0] + acc[4]) + (acc[1] + acc[5]) + (acc[2] + acc[6]) + (acc[3] + acc[7]);
    for (x, y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// General strided product `c[m, n] = a[m, k] @ b[k, n]` (strides in
/// elements, row then column), overwriting `c`.
#[allow(clippy::too_many_arguments)]
pub fn gemm_strided(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
) {
    gemm_with(m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, csc, true);
}

/// [`gemm_strided`], on several threads only when `threads` and the product is big.
#[allow(clippy::too_many_arguments)]
fn gemm_with(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    threads: bool,
) {
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| (rows - 1) * rs + (cols - 1) * cs;
    assert!(
        k == 0 || last(m, k, rsa, csa) < a.len(),
        "gemm: a too short"
    );
    assert!(
        k == 0 || last(k, n, rsb, csb) < b.len(),
        "gemm: b too short"
    );
    assert!(last(m, n, rsc, csc) < c.len(), "gemm: c too short");
    if k == 0 {
        for i in 0..m {
            for j in 0..n {
                c[i * rsc + j * csc] = 0.0;
            }
        }
        return;
    }
    if m <= SMALL_M {
        small_m(m, k, n, a, rsa, csa, b, rsb, csb, c, rsc, csc, threads);
        return;
    }
    // Small products run on the calling thread; threads cost more than they give there.
    let parallelism = if threads && m * n * k >= 1 << 18 {
        gemm::Parallelism::Rayon(0)
    } else {
        gemm::Parallelism::None
    };
    // SAFETY: the asserts above bound every index the strides reach.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
            csc as isize,
            rsc as isize,
            false,
            a.as_ptr(),
            csa as isize,
            rsa as isize,
            b.as_ptr(),
            csb as isize,
            rsb as isize,
            0.0,
            1.0,
            false,
            false,
            false,
            parallelism,
        );
    }
}

/// Up to this many rows of `a` a product is a decode-sized one (a few
/// tokens, or the heads of one token): [`small_m`] computes it without
/// packing, and without the bookkeeping allocation the gemm crate makes on
/// every call.
const SMALL_M: usize = 16;

/// `c = a @ b` for at most [`SMALL_M`] rows of `a`, bounds checked by the
/// caller. `b` is read once: when its rows are contiguous (`csb == 1`) as
/// row updates `c[i, :] += a[i, kk] * b[kk, :]` over `kk`, otherwise as dot
/// products column by column (contiguous when `csa == 1` and `rsb == 1`).
/// The columns are split across threads from 2^18 multiply-adds.
#[allow(clippy::too_many_arguments)]
fn small_m(
    m: usize,
    k: usize,
    n: usize,
    a: &[f32],
    rsa: usize,
    csa: usize,
    b: &[f32],
    rsb: usize,
    csb: usize,
    c: &mut [f32],
    rsc: usize,
    csc: usize,
    threads: bool,
) {
    use rayon::prelude::*;
    /// `c`, written at disjoint columns by each task.
    struct Out(*mut f32);
    // SAFETY: tasks write disjoint elements (their own columns).
    unsafe impl Sync for Out {}
    impl Out {
        /// Element `off` (a method, so closures capture the whole `Out`).
        ///
        /// # Safety
        /// `off` lies in `c`, and no other task writes it.
        #[allow(clippy::mut_from_ref)]
        unsafe fn at(&self, off: usize) -> &mut f32 {
            &mut *self.0.add(off)
        }
    }
    let out = Out(c.as_mut_ptr());
    let columns = |j0: usize, j1: usize| {
        let at = |i: usize, j: usize| {
            // SAFETY: `gemm_with` asserted that every (i, j) < (m, n) lies in
            // `c`, and only this task writes columns `j0..j1`.
            unsafe { out.at(i * rsc + j * csc) }
        };
        #[cfg(target_arch = "x86_64")]
        if csb == 1 && csc == 1 && has_avx2_fma() {
            // Blocks of 4, 2 and 1 rows with their outputs in registers.
            let mut i = 0;
            while i < m {
                let g = if m - i >= 4 {
                    4
                } else if m - i >= 2 {
                    2
                } else {
                    1
                };
                let pa = Weights {
                    ptr: a[i * rsa..].as_ptr(),
                    row: rsa,
                    col: csa,
                };
                // SAFETY: AVX2/FMA were detected; `gemm_with` bounds-checked
                // a, b and c for every (i, kk, j) of the product, and only
                // this task writes columns j0..j1 of c.
                unsafe {
                    let (rows, dst) = (b.as_ptr().add(j0), out.at(i * rsc + j0) as *mut f32);
                    let shape = (rsb, k, j1 - j0, rsc);
                    match g {
                        4 => weighted_rows_avx2::<4>(&pa, rows, shape, dst),
                        2 => weighted_rows_avx2::<2>(&pa, rows, shape, dst),
                        _ => weighted_rows_avx2::<1>(&pa, rows, shape, dst),
                    }
                }
                i += g;
            }
            return;
        }
        if csb == 1 && csc == 1 {
            let crow = |i: usize| {
                // SAFETY: as for `at`: row i, columns j0..j1 of `c`, which
                // `gemm_with` bounds-checked and only this task writes.
                unsafe { std::slice::from_raw_parts_mut(out.at(i * rsc + j0), j1 - j0) }
            };
            for i in 0..m {
                crow(i).fill(0.0);
            }
            for kk in 0..k {
                let brow = &b[kk * rsb + j0..kk * rsb + j1];
                for i in 0..m {
                    axpy(crow(i), a[i * rsa + kk * csa], brow);
                }
            }
        } else {
            #[cfg(target_arch = "x86_64")]
            if csa == 1 && rsb == 1 && has_avx2_fma() {
                /// The dot products with [`dot_avx2`] inlined.
                ///
                /// # Safety
                /// AVX2/FMA available; `at` gives each (i, j) of this task.
                #[target_feature(enable = "avx2,fma")]
                unsafe fn dots(
                    (m, k, j0, j1): (usize, usize, usize, usize),
                    (a, rsa): (&[f32], usize),
                    (b, csb): (&[f32], usize),
                    at: &dyn Fn(usize, usize) -> *mut f32,
                ) {
                    for j in j0..j1 {
                        let bj = &b[j * csb..j * csb + k];
                        for i in 0..m {
                            *at(i, j) = dot_avx2(&a[i * rsa..i * rsa + k], bj);
                        }
                    }
                }
                let at_ptr = |i: usize, j: usize| at(i, j) as *mut f32;
                // SAFETY: AVX2/FMA were detected; `at` is in bounds (see above).
                unsafe { dots((m, k, j0, j1), (a, rsa), (b, csb), &at_ptr) };
                return;
            }
            for j in j0..j1 {
                for i in 0..m {
                    *at(i, j) = if csa == 1 && rsb == 1 {
                        dot(&a[i * rsa..i * rsa + k], &b[j * csb..j * csb + k])
                    } else {
                        (0..k)
                            .map(|kk| a[i * rsa + kk * csa] * b[kk * rsb + j * csb])
                            .sum()
                    };
                }
            }
        }
    };
    let workers = rayon::current_num_threads();
    if threads && workers > 1 && m * n * k >= 1 << 18 {
        // One task per thread, in whole 32-column blocks (what the
        // register-blocked path works in): measured on the absorbed MLA
        // decode of bench-small-mla, 16-column tasks made 2 threads 2.5x
        // slower than 1, whole blocks 1.4x faster.
        let chunk = n.div_ceil(workers).next_multiple_of(32);
        (0..n.div_ceil(chunk))
            .into_par_iter()
            .for_each(|t| columns(t * chunk, ((t + 1) * chunk).min(n)));
    } else {
        columns(0, n);
    }
}

/// The weights of [`weighted_rows_avx2`]: `w[g, s]` at `ptr + g * row + s * col`.
pub struct Weights {
    pub ptr: *const f32,
    pub row: usize,
    pub col: usize,
}

/// `out[g, c] = sum_s w[g, s] * rows[s * row_stride + c]` for `g < G`,
/// `c < cols`, `s < n`: a weighted sum of `n` strided rows for `G` weight
/// vectors at once, 32 columns at a time with the `G x 32` accumulators in
/// registers, so each row is loaded once for all `G`. The sums run in `s`
/// order with one fused multiply-add per term (the numbers of [`axpy`]
/// applied row by row). `shape` is `(row_stride, n, cols, out_stride)`;
/// output row `g` starts at `out + g * out_stride`.
///
/// # Safety
/// AVX2 and FMA are available, and every weight, row element and output
/// element the formula names lies in its allocation (outputs not aliased).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn weighted_rows_avx2<const G: usize>(
    w: &Weights,
    rows: *const f32,
    (row_stride, n, cols, out_stride): (usize, usize, usize, usize),
    out: *mut f32,
) {
    use std::arch::x86_64::*;
    let weight = |g: usize, s: usize| *w.ptr.add(g * w.row + s * w.col);
    let mut c = 0;
    while c + 32 <= cols {
        let mut acc = [[_mm256_setzero_ps(); 4]; G];
        for s in 0..n {
            let row = rows.add(s * row_stride + c);
            let v = [
                _mm256_loadu_ps(row),
                _mm256_loadu_ps(row.add(8)),
                _mm256_loadu_ps(row.add(16)),
                _mm256_loadu_ps(row.add(24)),
            ];
            for (g, acc) in acc.iter_mut().enumerate() {
                let ws = _mm256_set1_ps(weight(g, s));
                for (a, &v) in acc.iter_mut().zip(&v) {
                    *a = _mm256_fmadd_ps(ws, v, *a);
                }
            }
        }
        for (g, acc) in acc.iter().enumerate() {
            let dst = out.add(g * out_stride + c);
            for (j, a) in acc.iter().enumerate() {
                _mm256_storeu_ps(dst.add(8 * j), *a);
            }
        }
        c += 32;
    }
    // Columns past the last full block of 32.
    for g in 0..G {
        for col in c..cols {
            let mut acc = 0.0f32;
            for s in 0..n {
                acc = weight(g, s).mul_add(*rows.add(s * row_stride + col), acc);
            }
            *out.add(g * out_stride + col) = acc;
        }
    }
}

/// `out[rows, n] = x[rows, k] @ w[k, n]` (a plain product, no transpose).
pub fn matmul(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    debug_assert_eq!(x.len(), rows * k);
    debug_assert_eq!(w.len(), k * n);
    debug_assert_eq!(out.len(), rows * n);
    gemm_strided(rows, k, n, x, k, 1, w, n, 1, out, n, 1);
}

/// [`linear`] into a fresh buffer from the pool.
pub fn linear_new(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize) -> Buf<f32> {
    let mut out = Buf::zeroed(rows * n);
    linear(x, rows, k, w, n, &mut out);
    out
}

/// `x * rsqrt(mean(x^2) + eps) * w` per row, as OpenMythos computes it.
pub fn rmsnorm(x: &[f32], cols: usize, w: &[f32], eps: f64, out: &mut [f32]) {
    for (row, o) in x.chunks_exact(cols).zip(out.chunks_exact_mut(cols)) {
        let ms: f32 = row.iter().map(|v| v * v).sum::<f32>() / cols as f32;
        let r = 1.0 / (ms + eps as f32).sqrt();
        for ((o, &v), &g) in o.iter_mut().zip(row).zip(w) {
            *o = v * r * g;
        }
    }
}

pub fn silu(x: f32) -> f32 {
    x / (1.0 + (-x).exp())
}

pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + (-x).exp())
}

/// In-place softmax of one row (max-subtracted; `-inf` entries give 0).
/// With AVX2/FMA the exponentials are [`exp8`]'s, 8 at a time.
pub fn softmax(row: &mut [f32]) {
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the features were detected on this CPU.
        return unsafe { softmax_avx2(row) };
    }
    softmax_portable(row);
}

fn softmax_portable(row: &mut [f32]) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let mut sum = 0.0f32;
    for v in row.iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    for v in row.iter_mut() {
        *v /= sum;
    }
}

/// `e^x` in 8 lanes: Cephes' single-precision method (`x = n ln2 + r`,
/// a degree-6 polynomial for `e^r`, `2^n` from the exponent bits), within
/// about 2 ulp of the correctly rounded value. Inputs are clamped to
/// `[-87.3, 88]`; lanes below -87.3 (the smallest normal result), `-inf`
/// included, give 0.
///
/// # Safety
/// The CPU has AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
#[inline]
pub unsafe fn exp8(x: std::arch::x86_64::__m256) -> std::arch::x86_64::__m256 {
    use std::arch::x86_64::*;
    let lo = _mm256_set1_ps(-87.336_55);
    let underflow = _mm256_cmp_ps::<_CMP_LT_OQ>(x, lo);
    let x = _mm256_min_ps(_mm256_max_ps(x, lo), _mm256_set1_ps(88.0));
    let n = _mm256_round_ps::<{ _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC }>(_mm256_mul_ps(
        x,
        _mm256_set1_ps(std::f32::consts::LOG2_E),
    ));
    // r = x - n ln2, with ln2 split in two for precision.
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(0.693_359_4), x);
    let r = _mm256_fnmadd_ps(n, _mm256_set1_ps(-2.121_944_4e-4), r);
    let mut p = _mm256_set1_ps(1.987_569_1e-4);
    for c in [
        1.398_199_9e-3,
        8.333_452e-3,
        4.166_579_6e-2,
        0.166_666_65,
        0.5,
    ] {
        p = _mm256_fmadd_ps(p, r, _mm256_set1_ps(c));
    }
    let y = _mm256_fmadd_ps(
        p,
        _mm256_mul_ps(r, r),
        _mm256_add_ps(r, _mm256_set1_ps(1.0)),
    );
    let pow2 = _mm256_slli_epi32::<23>(_mm256_add_epi32(
        _mm256_cvtps_epi32(n),
        _mm256_set1_epi32(127),
    ));
    _mm256_andnot_ps(underflow, _mm256_mul_ps(y, _mm256_castsi256_ps(pow2)))
}

/// [`softmax`] with AVX2: max, `exp8(v - max)` and their sum 8 at a time
/// (the tail with `f32::exp`), then each divided by the sum.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn softmax_avx2(row: &mut [f32]) {
    use std::arch::x86_64::*;
    let n = row.len();
    let body = n - n % 8;
    let p = row.as_mut_ptr();
    let mut vmax = _mm256_set1_ps(f32::NEG_INFINITY);
    for i in (0..body).step_by(8) {
        vmax = _mm256_max_ps(vmax, _mm256_loadu_ps(p.add(i)));
    }
    let mut lanes = [0.0f32; 8];
    _mm256_storeu_ps(lanes.as_mut_ptr(), vmax);
    let max = lanes
        .iter()
        .chain(&row[body..])
        .copied()
        .fold(f32::NEG_INFINITY, f32::max);
    if max == f32::NEG_INFINITY {
        row.fill(0.0);
        return;
    }
    let vm = _mm256_set1_ps(max);
    let mut vsum = _mm256_setzero_ps();
    for i in (0..body).step_by(8) {
        let e = exp8(_mm256_sub_ps(_mm256_loadu_ps(p.add(i)), vm));
        _mm256_storeu_ps(p.add(i), e);
        vsum = _mm256_add_ps(vsum, e);
    }
    _mm256_storeu_ps(lanes.as_mut_ptr(), vsum);
    let mut sum = (lanes[0] + lanes[4])
        + (lanes[1] + lanes[5])
        + (lanes[2] + lanes[6])
        + (lanes[3] + lanes[7]);
    for v in row[body..].iter_mut() {
        *v = (*v - max).exp();
        sum += *v;
    }
    let vs = _mm256_set1_ps(sum);
    for i in (0..body).step_by(8) {
        _mm256_storeu_ps(p.add(i), _mm256_div_ps(_mm256_loadu_ps(p.add(i)), vs));
    }
    for v in row[body..].iter_mut() {
        *v /= sum;
    }
}

/// `g = silu(g) * u` elementwise (SwiGLU's gate), 8 at a time with [`exp8`]
/// where the CPU has AVX2/FMA.
pub fn silu_mul(g: &mut [f32], u: &[f32]) {
    assert_eq!(g.len(), u.len(), "silu_mul: gate and up differ in length");
    let mut done = 0;
    #[cfg(target_arch = "x86_64")]
    if has_avx2_fma() {
        // SAFETY: the features were detected on this CPU; both slices hold
        // `g.len()` floats and the loop stays below a multiple of 8 of it.
        unsafe {
            use std::arch::x86_64::*;
            #[target_feature(enable = "avx2,fma")]
            unsafe fn body(g: &mut [f32], u: &[f32]) -> usize {
                let n = g.len() - g.len() % 8;
                let (pg, pu) = (g.as_mut_ptr(), u.as_ptr());
                let one = _mm256_set1_ps(1.0);
                for i in (0..n).step_by(8) {
                    let x = _mm256_loadu_ps(pg.add(i));
                    let e = exp8(_mm256_sub_ps(_mm256_setzero_ps(), x));
                    let silu = _mm256_div_ps(x, _mm256_add_ps(one, e));
                    _mm256_storeu_ps(pg.add(i), _mm256_mul_ps(silu, _mm256_loadu_ps(pu.add(i))));
                }
                n
            }
            done = body(g, u);
        }
    }
    for (g, u) in g[done..].iter_mut().zip(&u[done..]) {
        *g = silu(*g) * u;
    }
}

/// SwiGLU `down(silu(gate(x)) * up(x))` for `rows` rows.
pub fn swiglu(
    x: &[f32],
    rows: usize,
    dim: usize,
    gate: &[f32],
    up: &[f32],
    down: &[f32],
    hidden: usize,
) -> Buf<f32> {
    let (mut g, mut u) = (Buf::zeroed(rows * hidden), Buf::zeroed(rows * hidden));
    linear_group(x, rows, dim, [(gate, &mut g), (up, &mut u)]);
    silu_mul(&mut g, &u);
    linear_new(&g, rows, hidden, down, dim)
}

/// RoPE rotation tables for the positions `[start, start + count)` of a head
/// of `dim` dims, computed like OpenMythos's `precompute_rope_freqs`: the
/// frequencies and angles in f32, their cos/sin rounded to f32.
#[derive(Clone, Debug)]
pub struct Rope {
    pub half: usize,
    pub start: usize,
    pub cos: Vec<f32>,
    pub sin: Vec<f32>,
}

impl Rope {
    pub fn new(dim: usize, start: usize, count: usize, theta: f64) -> Rope {
        let half = dim / 2;
        let theta = theta as f32;
        let freqs: Vec<f32> = (0..half)
            .map(|i| 1.0 / theta.powf((2 * i) as f32 / dim as f32))
            .collect();
        let mut cos = Vec::with_capacity(count * half);
        let mut sin = Vec::with_capacity(count * half);
        for p in start..start + count {
            for &f in &freqs {
                let angle = (p as f32 * f) as f64;
                cos.push(angle.cos() as f32);
                sin.push(angle.sin() as f32);
            }
        }
        Rope {
            half,
            start,
            cos,
            sin,
        }
    }

    /// Rotates interleaved pairs `(x[2i], x[2i+1])` of one head vector at `pos`.
    pub fn apply(&self, x: &mut [f32], pos: usize) {
        let at = (pos - self.start) * self.half;
        let (c, s) = (&self.cos[at..at + self.half], &self.sin[at..at + self.half]);
        for i in 0..self.half {
            let (a, b) = (x[2 * i], x[2 * i + 1]);
            x[2 * i] = a * c[i] - b * s[i];
            x[2 * i + 1] = a * s[i] + b * c[i];
        }
    }
}

/// [`linear`] on the calling thread only, with the same numbers (each
/// output is the same dot product, or comes from the same GEMM blocking: the
/// gemm crate splits only the output across threads, never the reduction).
/// For callers that already run independent products in parallel, such as
/// the experts of a grouped MoE GEMM, where nested threading costs more than
/// it gives.
pub fn linear_serial(x: &[f32], rows: usize, k: usize, w: &[f32], n: usize, out: &mut [f32]) {
    linear_on(x, rows, k, w, n, out, false);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_is_x_times_w_transposed() {
        // x = [[1, 2]], w = [[1, 0], [0, 1], [1, 1]] -> [1, 2, 3]
        let out = linear_new(&[1.0, 2.0], 1, 2, &[1.0, 0.0, 0.0, 1.0, 1.0, 1.0], 3);
        assert_eq!(*out, vec![1.0, 2.0, 3.0]);
        let mut o = vec![0.0; 2];
        matmul(&[1.0, 2.0], 1, 2, &[1.0, 0.0, 3.0, 4.0], 2, &mut o);
        assert_eq!(o, vec![7.0, 8.0]);
    }

    #[test]
    fn dot_paths_agree() {
        let a: Vec<f32> = (0..77).map(|i| (i as f32 * 0.37).sin()).collect();
        let b: Vec<f32> = (0..77).map(|i| (i as f32 * 0.11).cos()).collect();
        let exact: f64 = a.iter().zip(&b).map(|(x, y)| *x as f64 * *y as f64).sum();
        assert!((dot(&a, &b) as f64 - exact).abs() < 1e-5);
        assert!((dot_portable(&a, &b) as f64 - exact).abs() < 1e-5);
    }

    /// The no-pack path for few rows (row updates, contiguous dots, general
    /// strides; threaded or not) against a plain triple loop.
    #[test]
    fn small_m_products_match_naive() {
        let val = |i: usize| ((i as f32) * 0.731).sin();
        for &(m, k, n) in &[(1, 7, 5), (3, 64, 40), (16, 96, 300), (16, 300, 96)] {
            let a: Vec<f32> = (0..m * k).map(val).collect();
            let b: Vec<f32> = (0..k * n).map(|i| val(i + 11)).collect();
            let naive = |i: usize, j: usize, bt: bool| -> f32 {
                (0..k)
                    .map(|kk| a[i * k + kk] * if bt { b[j * k + kk] } else { b[kk * n + j] })
                    .sum()
            };
            // (b row-major [k, n]: row updates) and (b as [n, k] read transposed: dots).
            for (bt, rsb, csb) in [(false, n, 1), (true, 1, k)] {
                for threads in [false, true] {
                    let mut c = vec![f32::NAN; m * n];
                    gemm_with(m, k, n, &a, k, 1, &b, rsb, csb, &mut c, n, 1, threads);
                    // c written transposed (csc != 1): the general per-element path.
                    let mut ct = vec![f32::NAN; m * n];
                    gemm_with(m, k, n, &a, k, 1, &b, rsb, csb, &mut ct, 1, m, threads);
                    for i in 0..m {
                        for j in 0..n {
                            let want = naive(i, j, bt);
                            // Summation orders differ: allow f32 rounding over k terms.
                            let tol = 1e-6 * k as f32;
                            let (got, got_t) = (c[i * n + j], ct[j * m + i]);
                            assert!(
                                (got - want).abs() < tol,
                                "{m}x{k}x{n} ({i},{j}): {got} vs {want}"
                            );
                            assert!(
                                (got_t - want).abs() < tol,
                                "{m}x{k}x{n} ({i},{j}): {got_t} vs {want}"
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn axpy_paths_agree() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.3).cos()).collect();
        let mut y: Vec<f32> = (0..37).map(|i| i as f32).collect();
        axpy(&mut y, 0.5, &x);
        for (i, v) in y.iter().enumerate() {
            assert!((v - (i as f32 + 0.5 * x[i])).abs() < 1e-6);
        }
    }

    /// The vector exp against f64 over the range softmax and SiLU use,
    /// and softmax rows (masked entries, all masked, tails past 8) against
    /// f64 softmax; also the portable paths.
    #[test]
    fn vector_exp_and_softmax_match_f64() {
        #[cfg(target_arch = "x86_64")]
        if has_avx2_fma() {
            use std::arch::x86_64::*;
            let mut worst = 0.0f64;
            for i in 0..20000 {
                let x = -87.0 + 175.0 * (i as f32 / 20000.0);
                let mut out = [0.0f32; 8];
                // SAFETY: AVX2/FMA detected.
                unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_set1_ps(x))) };
                let want = (x as f64).exp();
                worst = worst.max(((out[0] as f64 - want) / want).abs());
            }
            assert!(worst < 4e-7, "exp8 relative error {worst:e}");
            let mut out = [1.0f32; 8];
            // SAFETY: AVX2/FMA detected.
            unsafe { _mm256_storeu_ps(out.as_mut_ptr(), exp8(_mm256_set1_ps(f32::NEG_INFINITY))) };
            assert_eq!(out, [0.0; 8], "exp(-inf) is 0");
        }
        for len in [1, 7, 8, 13, 64, 259] {
            let row: Vec<f32> = (0..len)
                .map(|i| {
                    if i % 5 == 3 {
                        f32::NEG_INFINITY
                    } else {
                        (i as f32 * 0.77).sin() * 9.0
                    }
                })
                .collect();
            let max = row.iter().fold(f64::MIN, |m, &v| m.max(v as f64));
            let e: Vec<f64> = row.iter().map(|&v| (v as f64 - max).exp()).collect();
            let total: f64 = e.iter().sum();
            for f in [softmax, softmax_portable] {
                let mut r = row.clone();
                f(&mut r);
                for (got, want) in r.iter().zip(&e) {
                    assert!((*got as f64 - want / total).abs() < 1e-6, "len {len}");
                }
            }
            let (mut g, u) = (
                row.iter().map(|v| v.max(-50.0)).collect::<Vec<f32>>(),
                vec![0.5f32; len],
            );
            let want: Vec<f32> = g.iter().map(|&x| silu(x) * 0.5).collect();
            silu_mul(&mut g, &u);
            for (got, want) in g.iter().zip(&want) {
                assert!(
                    (got - want).abs() <= 1e-6 * want.abs().max(1.0),
                    "silu len {len}"
                );
            }
        }
        let mut all_masked = vec![f32::NEG_INFINITY; 11];
        softmax(&mut all_masked);
        assert_eq!(all_masked, vec![0.0; 11]);
    }

    #[test]
    fn softmax_and_norm() {
        let mut r = vec![0.0, f32::NEG_INFINITY, 0.0];
        softmax(&mut r);
        assert_eq!(r, vec![0.5, 0.0, 0.5]);
        let mut o = vec![0.0; 2];
        rmsnorm(&[3.0, 4.0], 2, &[1.0, 2.0], 0.0, &mut o);
        let r = (12.5f32).sqrt();
        assert_eq!(o, vec![3.0 / r, 8.0 / r]);
    }

    #[test]
    fn rope_rotates_pairs() {
        let rope = Rope::new(2, 0, 2, 10000.0);
        let mut x = vec![1.0, 0.0];
        rope.apply(&mut x, 1);
        assert!((x[0] - 1f32.cos()).abs() < 1e-6 && (x[1] - 1f32.sin()).abs() < 1e-6);
    }
}
