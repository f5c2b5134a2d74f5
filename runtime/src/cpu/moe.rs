//! DeepSeek-style MoE as in OpenMythos: `scores = softmax(router(x))`, top-k
//! chosen on `router(x) + router_bias`, gates = chosen scores renormalised to
//! sum 1, routed SwiGLU experts weighted by their gates, plus every shared
//! expert. Both paths share the routing ([`route`]) and the shared experts,
//! and give the same numbers, bit for bit (same kernels on the same rows,
//! same order of the sums).
//!
//! - [`moe`], the per-expert reference: each routed expert runs once over
//!   the tokens routed to it, gathered into a buffer of its own; experts
//!   run in parallel and every kernel threads on its own as well, nested.
//! - [`moe_batched`], expert batching: the `(token, slot)` assignments are
//!   counting-sorted by expert into one permuted buffer `[rows * top_k, dim]`
//!   with a segment per expert (tokens in order within a segment), and each
//!   projection is one grouped GEMM over the segments of all active experts:
//!   gate and up into contiguous `[rows * top_k, hidden]` buffers,
//!   `silu(gate) * up` in place, down back into the permuted buffer (its
//!   inputs are dead by then). A segment's stages depend on that segment
//!   only, so each segment runs its three projections as one task: one
//!   fork-join in all, and its activations are still in cache for down.
//!   A segment larger than one thread's share of the rows (one that running
//!   side by side could not balance) runs alone with threaded kernels; the
//!   others run side by side on the pool with single-threaded kernels, so
//!   threads never nest. The output is gathered back per token,
//!   `out[t] += gate * y[slot]` over its slots in expert order, which is the
//!   order in which [`moe`] adds them. The permuted rows and the
//!   activations live in one buffer from the runtime's pool (`pool.rs`),
//!   so a warm call allocates nothing. Decode (one token)
//!   reads only the `top_k` chosen experts, as GEMVs.

use super::kernels::{linear, linear_new, linear_serial, silu_mul, softmax, swiglu};
use super::pool::Buf;
use rayon::prelude::*;

pub struct MoeWeights<'a> {
    pub router: &'a [f32],
    pub bias: Option<&'a [f32]>,
    /// Stacked `[E, hidden, dim]`, `[E, hidden, dim]`, `[E, dim, hidden]`.
    pub gate: &'a [f32],
    pub up: &'a [f32],
    pub down: &'a [f32],
    /// Shared experts, stacked the same way (empty when there are none).
    pub shared: Option<(&'a [f32], &'a [f32], &'a [f32])>,
}

pub struct MoeDims {
    pub experts: usize,
    pub top_k: usize,
    pub hidden: usize,
    pub shared: usize,
    pub shared_hidden: usize,
}

/// The experts each token is routed to.
#[derive(Clone, Debug, PartialEq)]
pub struct Routing {
    pub top_k: usize,
    /// `rows * top_k` pairs `(expert, gate)`: token `t`'s are
    /// `choices[t * top_k..(t + 1) * top_k]`, in ascending expert order.
    pub choices: Buf<(usize, f32)>,
}

/// Routes `rows` tokens: `scores = softmax(router(x))`, the `top_k` highest
/// `router(x) + bias` chosen (ties go to the lower index), gates = their
/// scores renormalised to sum 1 (summed in rank order).
pub fn route(x: &[f32], rows: usize, dim: usize, w: &MoeWeights, m: &MoeDims) -> Routing {
    let (experts, k) = (m.experts, m.top_k);
    assert!(
        k <= experts,
        "moe: top_k {k} is more than the {experts} experts"
    );
    if k == 0 {
        return Routing {
            top_k: 0,
            choices: Buf::default(),
        };
    }
    let logits = linear_new(x, rows, dim, w.router, experts);
    let mut choices = Buf::with_capacity(rows * k);
    let mut scores = Buf::<f32>::zeroed(experts);
    let mut order = Buf::<usize>::with_capacity(experts);
    for l in logits.chunks_exact(experts) {
        scores.copy_from_slice(l);
        softmax(&mut scores);
        let biased = |e: usize| l[e] + w.bias.map_or(0.0, |b| b[e]);
        // Highest biased logit first; ties go to the lower index. A total
        // order, so selecting the top k and sorting them ranks them as a
        // full sort would.
        let rank = |&a: &usize, &b: &usize| biased(b).total_cmp(&biased(a)).then(a.cmp(&b));
        order.clear();
        order.extend(0..experts);
        if k < experts {
            order.select_nth_unstable_by(k - 1, rank);
        }
        let chosen = &mut order[..k];
        chosen.sort_by(rank);
        let total: f32 = chosen.iter().map(|&e| scores[e]).sum();
        chosen.sort_unstable();
        choices.extend(chosen.iter().map(|&e| (e, scores[e] / total)));
    }
    Routing { top_k: k, choices }
}

/// Where each expert's assignments start once sorted by expert (a
/// counting sort's prefix sums): expert `e` has `offsets[e]..offsets[e + 1]`.
fn expert_offsets(routing: &Routing, experts: usize) -> Buf<usize> {
    let mut offsets = Buf::<usize>::zeroed(experts + 1);
    for &(e, _) in routing.choices.iter() {
        offsets[e + 1] += 1;
    }
    for e in 0..experts {
        offsets[e + 1] += offsets[e];
    }
    offsets
}

/// The per-expert reference path (see the module doc).
pub fn moe(x: &[f32], rows: usize, dim: usize, w: &MoeWeights, m: &MoeDims) -> Buf<f32> {
    let routing = route(x, rows, dim, w, m);
    let (experts, k) = (m.experts, m.top_k);
    // Per expert, the assignments routed to it in token order: a counting
    // sort, segment `e` of `order` being `offsets[e]..offsets[e + 1]`.
    let offsets = expert_offsets(&routing, experts);
    let mut next = offsets.clone();
    let mut order = Buf::<usize>::zeroed(routing.choices.len());
    for (i, &(e, _)) in routing.choices.iter().enumerate() {
        order[next[e]] = i;
        next[e] += 1;
    }
    drop(next);
    let (h, e_stride, d_stride) = (m.hidden, m.hidden * dim, dim * m.hidden);
    // Each expert over its gathered tokens, in parallel, into its segment of `ys`.
    let mut ys = Buf::<f32>::zeroed(routing.choices.len() * dim);
    let segments = Rows::new(&mut ys, dim);
    (0..experts).into_par_iter().for_each(|e| {
        let seg = offsets[e]..offsets[e + 1];
        if seg.is_empty() {
            return;
        }
        let mut gathered = Buf::<f32>::with_capacity(seg.len() * dim);
        for &i in &order[seg.clone()] {
            let r = i / k;
            gathered.extend_from_slice(&x[r * dim..(r + 1) * dim]);
        }
        let y = swiglu(
            &gathered,
            seg.len(),
            dim,
            &w.gate[e * e_stride..(e + 1) * e_stride],
            &w.up[e * e_stride..(e + 1) * e_stride],
            &w.down[e * d_stride..(e + 1) * d_stride],
            h,
        );
        // SAFETY: one task per expert, and the experts' segments are disjoint.
        unsafe { segments.segment(seg) }.copy_from_slice(&y);
    });
    // Added in expert order, tokens in order within an expert.
    let mut out = Buf::<f32>::zeroed(rows * dim);
    for (s, &i) in order.iter().enumerate() {
        let (r, g) = (i / k, routing.choices[i].1);
        for (o, &v) in out[r * dim..(r + 1) * dim]
            .iter_mut()
            .zip(&ys[s * dim..(s + 1) * dim])
        {
            *o += g * v;
        }
    }
    add_shared(x, rows, dim, w, m, &mut out);
    out
}

/// Adds every shared expert's SwiGLU of `x`, in order, to `out`.
fn add_shared(x: &[f32], rows: usize, dim: usize, w: &MoeWeights, m: &MoeDims, out: &mut [f32]) {
    let Some((gate, up, down)) = w.shared else {
        return;
    };
    let (sh, se, sd) = (
        m.shared_hidden,
        m.shared_hidden * dim,
        dim * m.shared_hidden,
    );
    for s in 0..m.shared {
        let y = swiglu(
            x,
            rows,
            dim,
            &gate[s * se..(s + 1) * se],
            &up[s * se..(s + 1) * se],
            &down[s * sd..(s + 1) * sd],
            sh,
        );
        for (o, v) in out.iter_mut().zip(&y) {
            *o += v;
        }
    }
}

/// Below this many multiply-adds a product (or a batch of them) stays on
/// one thread, as in the kernels: waking threads would cost more.
const PARALLEL_WORK: usize = 1 << 18;

/// Expert batching (see the module doc): the same numbers as [`moe`].
pub fn moe_batched(x: &[f32], rows: usize, dim: usize, w: &MoeWeights, m: &MoeDims) -> Buf<f32> {
    batched(
        x,
        rows,
        dim,
        w,
        m,
        rayon::current_num_threads(),
        PARALLEL_WORK,
    )
}

/// [`moe_batched`] with the scheduling knobs exposed (tests force each path).
fn batched(
    x: &[f32],
    rows: usize,
    dim: usize,
    w: &MoeWeights,
    m: &MoeDims,
    threads: usize,
    parallel_work: usize,
) -> Buf<f32> {
    assert_eq!(x.len(), rows * dim, "moe: x is not rows x dim");
    let routing = route(x, rows, dim, w, m);
    let (experts, k, h) = (m.experts, m.top_k, m.hidden);
    let slots = rows * k;

    // Counting sort of the assignments by expert: segment `e` of the permuted
    // rows is `offsets[e]..offsets[e + 1]`, tokens in order within it.
    let offsets = expert_offsets(&routing, experts);
    let mut next = offsets.clone();
    // `slot[i]`: the permuted row of assignment `i` (token `i / k`).
    let mut slot = Buf::<usize>::with_capacity(slots);
    for &(e, _) in routing.choices.iter() {
        next[e] += 1;
        slot.push(next[e] - 1);
    }
    drop(next);
    // One buffer from the pool for the permuted rows and the gate and up
    // activations (buffers this big would otherwise come fresh from the OS
    // on every call, and the page faults of their first touch cost about a
    // tenth of the routed experts at 256 rows).
    let mut scratch = Buf::<f32>::zeroed(slots * (dim + 2 * h));
    let (permuted, act) = scratch.split_at_mut(slots * dim);
    let (act, up) = act.split_at_mut(slots * h);
    let up = &mut up[..slots * h];
    for (i, &s) in slot.iter().enumerate() {
        let t = i / k;
        permuted[s * dim..(s + 1) * dim].copy_from_slice(&x[t * dim..(t + 1) * dim]);
    }

    // The grouped GEMMs: per segment, gate and up, silu(gate) * up in place,
    // then down into the segment's permuted rows (their inputs are dead by
    // then). A segment's stages depend only on that segment, so each runs as
    // one task: one fork-join for the three projections of all experts.
    let plan = Schedule::new(&offsets, dim * h, threads, parallel_work);
    let (e_stride, d_stride) = (h * dim, dim * h);
    let (xy_all, g_all, u_all) = (
        Rows::new(permuted, dim),
        Rows::new(act, h),
        Rows::new(up, h),
    );
    plan.run(|e, project| {
        let n = plan.rows[e];
        let seg = offsets[e]..offsets[e + 1];
        // SAFETY: `Schedule::run` calls this once per expert, and the
        // segments of different experts are disjoint ranges of rows.
        let (xy, g, u) = unsafe {
            (
                xy_all.segment(seg.clone()),
                g_all.segment(seg.clone()),
                u_all.segment(seg),
            )
        };
        let gu = e * e_stride..(e + 1) * e_stride;
        project(xy, n, dim, &w.gate[gu.clone()], h, g);
        project(xy, n, dim, &w.up[gu], h, u);
        silu_mul(g, u);
        project(g, n, h, &w.down[e * d_stride..(e + 1) * d_stride], dim, xy);
    });
    let y = &scratch[..slots * dim];

    // Un-permute: each token sums its slots weighted by their gates, in
    // expert order, as `moe` does.
    let mut out = Buf::<f32>::zeroed(rows * dim);
    if dim > 0 {
        let gather = |(t, o): (usize, &mut [f32])| {
            let span = t * k..(t + 1) * k;
            for (&(_, g), &s) in routing.choices[span.clone()].iter().zip(&slot[span]) {
                for (o, &v) in o.iter_mut().zip(&y[s * dim..(s + 1) * dim]) {
                    *o += g * v;
                }
            }
        };
        if threads > 1 && slots * dim >= parallel_work {
            out.par_chunks_mut(dim).enumerate().for_each(gather);
        } else {
            out.chunks_mut(dim).enumerate().for_each(gather);
        }
    }
    drop(scratch);
    add_shared(x, rows, dim, w, m, &mut out);
    out
}

/// Rows of `width` floats that tasks on several threads each take a
/// disjoint segment of (what `split_at_mut` would give, without collecting
/// the pieces into a vector).
struct Rows {
    ptr: *mut f32,
    len: usize,
    width: usize,
}

// SAFETY: `Rows` hands out only disjoint segments (see `segment`), and f32 is Send.
unsafe impl Sync for Rows {}
unsafe impl Send for Rows {}

impl Rows {
    fn new(buf: &mut [f32], width: usize) -> Rows {
        Rows {
            ptr: buf.as_mut_ptr(),
            len: buf.len(),
            width,
        }
    }

    /// Rows `range` of the buffer.
    ///
    /// # Safety
    /// No two live segments may overlap, and the buffer must outlive them.
    #[allow(clippy::mut_from_ref)]
    unsafe fn segment(&self, range: std::ops::Range<usize>) -> &mut [f32] {
        let (a, b) = (range.start * self.width, range.end * self.width);
        assert!(a <= b && b <= self.len, "moe: segment out of the buffer");
        std::slice::from_raw_parts_mut(self.ptr.add(a), b - a)
    }
}

/// A linear layer kernel: [`linear`] (threads by itself) or [`linear_serial`].
type Project = fn(&[f32], usize, usize, &[f32], usize, &mut [f32]);

/// How the segments of a grouped GEMM share the threads.
struct Schedule {
    /// Rows of each expert's segment.
    rows: Buf<usize>,
    /// Per expert: its segment runs alone with threaded kernels, being more
    /// than one thread's share of the rows (side by side with the others
    /// could not balance it) and big enough for threads to pay.
    alone: Buf<bool>,
    /// Whether the other non-empty segments run side by side on the pool
    /// with single-threaded kernels (at least two of them, with enough work
    /// between them); otherwise they run one after another on this thread.
    side_by_side: bool,
}

impl Schedule {
    fn new(offsets: &[usize], row_work: usize, threads: usize, parallel_work: usize) -> Schedule {
        let mut rows = Buf::<usize>::with_capacity(offsets.len().saturating_sub(1));
        rows.extend(offsets.windows(2).map(|s| s[1] - s[0]));
        let total: usize = rows.iter().sum();
        let mut alone = Buf::<bool>::with_capacity(rows.len());
        alone.extend(
            rows.iter()
                .map(|&n| threads > 1 && n * threads > total && n * row_work >= parallel_work),
        );
        let (mut others, mut other_rows) = (0, 0);
        for (&n, &alone) in rows.iter().zip(alone.iter()) {
            if !alone && n > 0 {
                others += 1;
                other_rows += n;
            }
        }
        Schedule {
            rows,
            alone,
            side_by_side: threads > 1 && others > 1 && other_rows * row_work >= parallel_work,
        }
    }

    /// Runs `f(expert, kernel)` once for every expert with a non-empty
    /// segment: the segments that run alone one after another, then the others.
    fn run(&self, f: impl Fn(usize, Project) + Sync) {
        let experts = self.rows.len();
        for e in (0..experts).filter(|&e| self.rows[e] > 0 && self.alone[e]) {
            f(e, linear);
        }
        let others = |e: &usize| self.rows[*e] > 0 && !self.alone[*e];
        if self.side_by_side {
            (0..experts)
                .into_par_iter()
                .with_max_len(1)
                .filter(others)
                .for_each(|e| f(e, linear_serial));
        } else {
            // Few rows or a lone segment: `linear` threads only where it pays.
            for e in (0..experts).filter(others) {
                f(e, linear);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// xorshift64*: deterministic values in `[-1, 1)`.
    struct Rng(u64);

    impl Rng {
        fn next(&mut self) -> f32 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            let v = self.0.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 40;
            v as f32 / (1u64 << 23) as f32 - 1.0
        }

        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n).map(|_| self.next() * scale).collect()
        }
    }

    struct Model {
        dim: usize,
        dims: MoeDims,
        router: Vec<f32>,
        bias: Option<Vec<f32>>,
        gate: Vec<f32>,
        up: Vec<f32>,
        down: Vec<f32>,
        shared: Option<(Vec<f32>, Vec<f32>, Vec<f32>)>,
    }

    impl Model {
        fn new(seed: u64, dim: usize, dims: MoeDims, bias: bool) -> Model {
            let mut rng = Rng(seed);
            let (e, h, s, sh) = (dims.experts, dims.hidden, dims.shared, dims.shared_hidden);
            let (wd, wh, ws) = (
                1.0 / (dim as f32).sqrt(),
                1.0 / (h as f32).sqrt(),
                1.0 / (sh as f32).sqrt(),
            );
            Model {
                router: rng.vec(e * dim, wd),
                bias: bias.then(|| rng.vec(e, 0.5)),
                gate: rng.vec(e * h * dim, wd),
                up: rng.vec(e * h * dim, wd),
                down: rng.vec(e * dim * h, wh),
                shared: (s > 0).then(|| {
                    (
                        rng.vec(s * sh * dim, wd),
                        rng.vec(s * sh * dim, wd),
                        rng.vec(s * dim * sh, ws),
                    )
                }),
                dim,
                dims,
            }
        }

        fn weights(&self) -> MoeWeights<'_> {
            MoeWeights {
                router: &self.router,
                bias: self.bias.as_deref(),
                gate: &self.gate,
                up: &self.up,
                down: &self.down,
                shared: self
                    .shared
                    .as_ref()
                    .map(|(g, u, d)| (&g[..], &u[..], &d[..])),
            }
        }
    }

    fn small(experts: usize, top_k: usize, shared: usize) -> MoeDims {
        MoeDims {
            experts,
            top_k,
            hidden: 16,
            shared,
            shared_hidden: 32,
        }
    }

    /// Max |batched - moe| / max |moe| over `rows` random tokens, for the
    /// default schedule and forced ones (all on one thread; big segments
    /// alone and the rest side by side; every segment alone).
    fn compare(model: &Model, rows: usize, seed: u64) -> f32 {
        let x = Rng(seed).vec(rows * model.dim, 1.0);
        let (w, m, dim) = (model.weights(), &model.dims, model.dim);
        let reference = moe(&x, rows, dim, &w, m);
        let scale = reference.iter().fold(0.0f32, |a, v| a.max(v.abs()));
        assert!(reference.iter().all(|v| v.is_finite()));
        let mut worst = 0.0f32;
        let runs = [
            moe_batched(&x, rows, dim, &w, m),
            batched(&x, rows, dim, &w, m, 1, PARALLEL_WORK),
            batched(&x, rows, dim, &w, m, 4, 0),
            batched(&x, rows, dim, &w, m, 1 << 20, 0),
        ];
        for out in runs {
            assert_eq!(out.len(), rows * dim);
            let diff = out
                .iter()
                .zip(&reference)
                .fold(0.0f32, |a, (b, r)| a.max((b - r).abs()));
            assert!(
                diff <= 1e-6 * scale,
                "rows {rows}: max |batched - moe| = {diff:e}, max |moe| = {scale:e}"
            );
            worst = worst.max(if scale > 0.0 { diff / scale } else { diff });
        }
        worst
    }

    #[test]
    fn batched_matches_moe() {
        for bias in [false, true] {
            for shared in [0, 1] {
                let model = Model::new(7, 32, small(6, 2, shared), bias);
                for rows in [1, 2, 7, 64] {
                    let rel = compare(&model, rows, 100 + rows as u64);
                    println!("bias {bias}, shared {shared}, rows {rows}: relative error {rel:e}");
                }
            }
        }
        let model = Model::new(3, 32, small(6, 2, 1), true);
        assert!(moe_batched(&[], 0, 32, &model.weights(), &model.dims).is_empty());
    }

    #[test]
    fn expert_without_tokens() {
        let mut model = Model::new(11, 32, small(6, 2, 1), true);
        // Expert 2 is never chosen; NaN weights prove it is never read either.
        model.bias.as_mut().unwrap()[2] = -1e4;
        let (e, hd) = (2, 16 * 32);
        for w in [&mut model.gate, &mut model.up, &mut model.down] {
            w[e * hd..(e + 1) * hd].fill(f32::NAN);
        }
        let x = Rng(5).vec(64 * 32, 1.0);
        let routing = route(&x, 64, 32, &model.weights(), &model.dims);
        assert!(routing.choices.iter().all(|&(e, _)| e != 2));
        let rel = compare(&model, 64, 5);
        println!("expert 2 idle: relative error {rel:e}");
    }

    #[test]
    fn every_expert_chosen() {
        for bias in [false, true] {
            let model = Model::new(13, 32, small(6, 6, 1), bias);
            for rows in [1, 7, 64] {
                let rel = compare(&model, rows, 200 + rows as u64);
                println!("top_k = experts, bias {bias}, rows {rows}: relative error {rel:e}");
            }
        }
    }

    #[test]
    fn routing_ties_and_gates() {
        let mut model = Model::new(17, 4, small(6, 2, 0), true);
        // Equal logits: ties go to the lower index, gates are equal.
        model.router.fill(0.0);
        model.bias.as_mut().unwrap().fill(0.0);
        let r = route(&[1.0, 2.0, 3.0, 4.0], 1, 4, &model.weights(), &model.dims);
        assert_eq!(*r.choices, vec![(0, 0.5), (1, 0.5)]);
        // The bias picks expert 5 but leaves the gates to the scores.
        model.bias.as_mut().unwrap()[5] = 1.0;
        let r = route(&[1.0, 2.0, 3.0, 4.0], 1, 4, &model.weights(), &model.dims);
        assert_eq!(*r.choices, vec![(0, 0.5), (5, 0.5)]);
        // Gates of each token sum to 1, its experts in ascending order.
        let model = Model::new(19, 32, small(6, 3, 0), true);
        let x = Rng(23).vec(9 * 32, 1.0);
        let r = route(&x, 9, 32, &model.weights(), &model.dims);
        for token in r.choices.chunks_exact(3) {
            assert!(token.windows(2).all(|p| p[0].0 < p[1].0));
            let sum: f32 = token.iter().map(|c| c.1).sum();
            assert!((sum - 1.0).abs() < 1e-6);
        }
    }
}
