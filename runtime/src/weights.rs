//! Model weights: seeded initialisation, and safetensors files with
//! OpenMythos state_dict names.
//!
//! Weights stay apart from compiled code: the compiler's [`Module`] says which
//! tensors exist (names, shapes, init scheme) and a [`Weights`] holds their
//! values, one f32 [`Tensor`] per entry of `module.weights`, in [`WeightId`]
//! order. Files use the names OpenMythos's `state_dict()` uses, so a checkpoint
//! trained in PyTorch loads here and ours load there:
//!
//! - a stacked expert weight (`...routed_experts.{e}.gate.weight`, shape
//!   `[E, hidden, dim]`) is stored as `E` tensors `...routed_experts.0.gate.weight`,
//!   `...routed_experts.1.gate.weight`, ... of shape `[hidden, dim]`;
//! - `freqs_cis` / `freqs_cis_mla` (RoPE tables, complex buffers that the
//!   runtime recomputes) are ignored;
//! - with tied embeddings the module has no `head.weight`; PyTorch checkpoints
//!   still carry it (the same tensor as `embed.weight`), so it is accepted when
//!   its shape is that of `embed.weight` and its values are ignored.
//!
//! Loading is strict otherwise: a checkpoint for another configuration must not
//! load half-way and produce garbage, so every problem (missing, unexpected,
//! misshapen tensors, unsupported dtypes, missing experts) is collected and
//! reported at once, like the compiler's diagnostics. No file content makes the
//! loader panic. Every value must also be finite: the conversion loop counts
//! NaN and infinite values as it widens them (no second read), and a file with
//! any is an error naming each such tensor, its first bad flat index and how
//! many values are affected ([`WeightsError::NonFinite`]), not a model that
//! merely generates badly.

use crate::finite::{self, NonFinite};
use crate::rng::{fnv1a64, Rng, SplitMix64};
use crate::tensor::Tensor;
use mythos_compiler::ir::{Init, Module, Weight, WeightId};
use mythos_compiler::suggest;
use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::ops::Range;
use std::path::{Path, PathBuf};

/// File tensors that are not weights: RoPE tables OpenMythos registers as
/// complex buffers. The runtime computes RoPE itself.
const IGNORED: &[&str] = &["freqs_cis", "freqs_cis_mla"];

/// The dtypes [`Weights::load`] converts to f32.
const ACCEPTED_DTYPES: &str = "F32, BF16 and F16";

/// At most this many problems are printed (all are kept in `problems`): a file
/// for a different model can have thousands, and the first ones tell the story.
const MAX_PRINTED_PROBLEMS: usize = 100;

/// Did-you-mean is computed for at most this many unexpected tensors; each one
/// compares against every expected name, which is slow for thousands of experts.
const MAX_SUGGESTIONS: usize = 50;

/// Why weights could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum WeightsError {
    /// The file could not be read or written.
    #[error("`{}`: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The bytes are not a valid safetensors file.
    #[error("cannot read `{}`: {message}; is this a safetensors file?", path.display())]
    Format { path: PathBuf, message: String },
    /// A valid file whose tensors do not fit the model; every problem is listed.
    #[error("{}", mismatch_text(path, problems))]
    Mismatch {
        path: PathBuf,
        problems: Vec<String>,
    },
    /// Tensors holding NaN or infinite values (file order, names as in the
    /// file: per-expert names for stacked weights; flat indices within them).
    #[error("{}", non_finite_text(path, tensors))]
    NonFinite {
        path: PathBuf,
        tensors: Vec<(String, NonFinite)>,
    },
}

fn non_finite_text(path: &Path, tensors: &[(String, NonFinite)]) -> String {
    let mut s = match tensors {
        [(name, values)] => format!(
            "{}: `{name}` is not finite: {}",
            path.display(),
            values.describe("flat index")
        ),
        _ => {
            let mut s = format!(
                "{}: {} tensors are not finite:",
                path.display(),
                tensors.len()
            );
            for (name, values) in tensors.iter().take(MAX_PRINTED_PROBLEMS) {
                let _ = write!(s, "\n  `{name}`: {}", values.describe("flat index"));
            }
            if tensors.len() > MAX_PRINTED_PROBLEMS {
                let _ = write!(
                    s,
                    "\n  ... and {} more",
                    tensors.len() - MAX_PRINTED_PROBLEMS
                );
            }
            s
        }
    };
    s.push_str(
        "\nthe file is damaged, or the training run that wrote it diverged\n\
         hint: re-export the weights; if they come from training, resume from an earlier checkpoint",
    );
    s
}

fn mismatch_text(path: &Path, problems: &[String]) -> String {
    let n = problems.len();
    let mut s = format!(
        "{} does not match the model ({n} problem{}):",
        path.display(),
        if n == 1 { "" } else { "s" }
    );
    for p in problems.iter().take(MAX_PRINTED_PROBLEMS) {
        let _ = write!(s, "\n  {p}");
    }
    if n > MAX_PRINTED_PROBLEMS {
        let _ = write!(s, "\n  ... and {} more", n - MAX_PRINTED_PROBLEMS);
    }
    s.push_str(
        "\nhint: weights must come from the same spec \
         (mythos init SPEC --seed N -o W.safetensors writes matching ones)",
    );
    s
}

/// The values of a module's weights, indexed like `module.weights`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Weights {
    tensors: Vec<Tensor>,
}

impl Weights {
    /// Fresh weights following each weight's [`Init`] (OpenMythos's scheme).
    ///
    /// Each weight draws from its own stream, seeded from `seed` and the FNV-1a
    /// hash of its name, so adding, removing or reordering weights never changes
    /// the values of the others, and the same spec and seed give the same bits
    /// on every run. A stacked weight is one stream over all its experts.
    pub fn init(module: &Module, seed: u64) -> Weights {
        let tensors = module
            .weights
            .iter()
            .map(|w| init_weight(w, seed))
            .collect();
        Weights { tensors }
    }

    /// Reads a safetensors file with OpenMythos state_dict names (see the module
    /// docs). F32, BF16 and F16 tensors are accepted and widened to f32; a
    /// NaN or infinite value anywhere is [`WeightsError::NonFinite`].
    pub fn load(module: &Module, path: &Path) -> Result<Weights, WeightsError> {
        let bytes = std::fs::read(path).map_err(|source| WeightsError::Io {
            path: path.to_path_buf(),
            source,
        })?;
        Weights::load_bytes(module, &bytes, path)
    }

    /// [`Weights::load`] on the bytes of a file; `path` is only used in errors.
    pub fn load_bytes(module: &Module, bytes: &[u8], path: &Path) -> Result<Weights, WeightsError> {
        let file = SafeTensors::deserialize(bytes).map_err(|e| WeightsError::Format {
            path: path.to_path_buf(),
            message: format_message(&e),
        })?;
        let mut tensors: Vec<(&str, TensorView<'_>)> = file.iter().collect();
        tensors.sort_by(|a, b| a.0.cmp(b.0));
        let layout = Layout::new(module);

        // Pass 1: check names, dtypes and shapes (headers only), collecting every problem.
        let mut problems = Vec::new();
        let mut found = vec![false; layout.entries.len()];
        let mut suggestions_left = MAX_SUGGESTIONS;
        for (name, view) in &tensors {
            if IGNORED.contains(name) {
                continue;
            }
            let Some(&entry) = layout.by_name.get(*name) else {
                if *name == "head.weight" && !layout.has_head {
                    if let Some(embed) = layout.by_name.get("embed.weight") {
                        let want = &layout.entries[*embed].shape;
                        if view.shape() != want.as_slice() {
                            problems.push(format!(
                                "`head.weight` (tied to `embed.weight`) has shape {:?}, expected {want:?}",
                                view.shape()
                            ));
                        }
                        continue;
                    }
                }
                problems.push(layout.unexpected(name, view.shape(), &mut suggestions_left));
                continue;
            };
            found[entry] = true;
            let want = &layout.entries[entry].shape;
            if !matches!(view.dtype(), Dtype::F32 | Dtype::BF16 | Dtype::F16) {
                problems.push(format!(
                    "`{name}` has dtype {}; accepted dtypes are {ACCEPTED_DTYPES}",
                    view.dtype()
                ));
            }
            if view.shape() != want.as_slice() {
                problems.push(format!(
                    "`{name}` has shape {:?}, expected {want:?}",
                    view.shape()
                ));
            }
        }
        problems.extend(layout.missing(module, &found));
        if !problems.is_empty() {
            return Err(WeightsError::Mismatch {
                path: path.to_path_buf(),
                problems,
            });
        }

        // Pass 2: every expected tensor is present with a good dtype and shape;
        // convert, counting NaN and infinite values on the way.
        let mut non_finite: Vec<(String, NonFinite)> = Vec::new();
        let mut out: Vec<Tensor> = module
            .weights
            .iter()
            .map(|w| Tensor::zeros(shape_of(w)))
            .collect();
        for (name, view) in &tensors {
            let Some(&entry) = layout.by_name.get(*name) else {
                continue; // ignored, or the tied head
            };
            let e = &layout.entries[entry];
            let n: usize = e.shape.iter().product();
            let start = e.expert.unwrap_or(0) * n;
            let dst = out[e.weight]
                .data
                .get_mut(start..start + n)
                .expect("layout offsets lie within the weight");
            let bad = widen(view, dst).map_err(|message| WeightsError::Format {
                path: path.to_path_buf(),
                message: format!("`{name}`: {message}"),
            })?;
            if bad > 0 {
                // The slow pass, only over a tensor known to be broken.
                if let Err(values) = finite::check(dst) {
                    non_finite.push((name.to_string(), values));
                }
            }
        }
        if !non_finite.is_empty() {
            return Err(WeightsError::NonFinite {
                path: path.to_path_buf(),
                tensors: non_finite,
            });
        }
        Ok(Weights { tensors: out })
    }

    /// Writes f32 safetensors with OpenMythos names: stacked weights as one
    /// tensor per expert, buffers included, no `head.weight` when the head is
    /// tied. `load` gives back these weights bit for bit.
    ///
    /// # Panics
    /// When these weights were not made for `module` (a caller bug).
    pub fn save(&self, module: &Module, path: &Path) -> Result<(), WeightsError> {
        self.write(module, path, true, &[])
    }

    /// Copies into these weights (of `to`) each weight of `from` that has
    /// the same name and shape in `to`, from `source`; returns the names of
    /// `to`'s weights that got nothing. Moves weights between a model and
    /// its ablation (`--no-act`: the ablated model lacks the halting
    /// weights, which the full model's file keeps as they were).
    pub fn copy_shared(&mut self, to: &Module, source: &Weights, from: &Module) -> Vec<String> {
        let mut missing = Vec::new();
        for (i, w) in to.weights.iter().enumerate() {
            let found = from
                .weights
                .iter()
                .position(|f| f.name == w.name && f.shape == w.shape);
            match found {
                Some(j) => self.tensors[i]
                    .data
                    .copy_from_slice(&source.tensors[j].data),
                None => missing.push(w.name.clone()),
            }
        }
        missing
    }

    /// Zeros shaped like `module`'s weights (a gradient accumulator).
    pub fn zeros(module: &Module) -> Weights {
        let tensors = module
            .weights
            .iter()
            .map(|w| {
                let shape = shape_of(w);
                let n = shape.iter().product();
                Tensor::new(shape, vec![0.0; n])
            })
            .collect();
        Weights { tensors }
    }

    /// Writes these values as the gradients of `module`'s parameters: the
    /// names and layout of [`Weights::save`] without the buffers (which
    /// have no gradient), plus an F32 scalar `loss`.
    pub fn save_gradients(
        &self,
        module: &Module,
        path: &Path,
        loss: f32,
    ) -> Result<(), WeightsError> {
        self.write(module, path, false, &[("loss", loss)])
    }

    fn write(
        &self,
        module: &Module,
        path: &Path,
        buffers: bool,
        scalars: &[(&str, f32)],
    ) -> Result<(), WeightsError> {
        assert_eq!(
            self.tensors.len(),
            module.weights.len(),
            "weights were made for another module"
        );
        let mut entries: Vec<(String, F32View<'_>)> = Vec::new();
        for (w, t) in module.weights.iter().zip(&self.tensors) {
            assert_eq!(
                t.shape,
                shape_of(w),
                "`{}` has the wrong shape for this module",
                w.name
            );
            if w.buffer && !buffers {
                continue;
            }
            for e in file_entries(w, 0) {
                let n: usize = e.shape.iter().product();
                let start = e.expert.unwrap_or(0) * n;
                entries.push((
                    e.name,
                    F32View {
                        shape: e.shape,
                        data: &t.data[start..start + n],
                    },
                ));
            }
        }
        for (name, v) in scalars {
            entries.push((
                name.to_string(),
                F32View {
                    shape: Vec::new(),
                    data: std::slice::from_ref(v),
                },
            ));
        }
        // `format: pt` is what Hugging Face loaders expect of PyTorch-named files.
        let metadata = HashMap::from([("format".to_string(), "pt".to_string())]);
        safetensors::serialize_to_file(entries, Some(metadata), path).map_err(|e| {
            let source = match e {
                SafeTensorError::IoError(io) => io,
                other => std::io::Error::other(other.to_string()),
            };
            WeightsError::Io {
                path: path.to_path_buf(),
                source,
            }
        })
    }

    /// The tensor of weight `id`.
    pub fn get(&self, id: WeightId) -> &Tensor {
        &self.tensors[id.0 as usize]
    }

    /// The tensor of weight `id`, to modify values (keep the shape).
    pub fn get_mut(&mut self, id: WeightId) -> &mut Tensor {
        &mut self.tensors[id.0 as usize]
    }

    /// All tensors in [`WeightId`] order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// All tensors, to modify values (keep the shapes).
    pub fn tensors_mut(&mut self) -> &mut [Tensor] {
        &mut self.tensors
    }

    pub fn len(&self) -> usize {
        self.tensors.len()
    }

    pub fn is_empty(&self) -> bool {
        self.tensors.is_empty()
    }
}

/// A weight's shape as `usize`s.
fn shape_of(w: &Weight) -> Vec<usize> {
    w.shape.iter().map(|&d| d as usize).collect()
}

fn init_weight(w: &Weight, seed: u64) -> Tensor {
    let shape = shape_of(w);
    let n: usize = shape.iter().product();
    let data = match w.init {
        Init::Const { value } => vec![value as f32; n],
        Init::Normal { std } => {
            let mut rng = stream(seed, &w.name);
            (0..n).map(|_| (rng.normal() * std) as f32).collect()
        }
        Init::Uniform { bound } => {
            let mut rng = stream(seed, &w.name);
            (0..n)
                .map(|_| rng.uniform_range(-bound, bound) as f32)
                .collect()
        }
    };
    Tensor::new(shape, data)
}

/// The stream of the weight called `name`. The seed goes through SplitMix64
/// first so that nearby seeds (0, 1, 2...) differ in many bits before being
/// combined with the name hash.
fn stream(seed: u64, name: &str) -> Rng {
    Rng::new(SplitMix64::new(seed).next_u64() ^ fnv1a64(name.as_bytes()))
}

/// One tensor of the file format: a whole weight, or one expert of a stacked one.
struct Entry {
    name: String,
    /// Index into `module.weights`.
    weight: usize,
    /// The expert of a stacked weight.
    expert: Option<usize>,
    shape: Vec<usize>,
}

/// The file tensors of weight `w` (index `weight`): the single source of the
/// naming rules, shared by `save` and `load`.
/// One OpenMythos parameter (a `state_dict` entry that is not a buffer):
/// a whole weight, or one expert of a stacked weight (`range` within its
/// data).
#[derive(Clone, Debug, PartialEq)]
pub struct Parameter {
    pub name: String,
    pub weight: WeightId,
    pub range: Range<usize>,
    /// One expert of a stacked weight.
    pub expert: bool,
}

/// `module`'s parameters as OpenMythos has them, in file order.
pub fn parameters(module: &Module) -> Vec<Parameter> {
    let mut out = Vec::new();
    for (i, w) in module.weights.iter().enumerate() {
        if w.buffer {
            continue;
        }
        for e in file_entries(w, i) {
            let n: usize = e.shape.iter().product();
            let start = e.expert.unwrap_or(0) * n;
            out.push(Parameter {
                name: e.name,
                weight: WeightId(i as u32),
                range: start..start + n,
                expert: e.expert.is_some(),
            });
        }
    }
    out
}

fn file_entries(w: &Weight, weight: usize) -> Vec<Entry> {
    let shape = shape_of(w);
    match w.stacked {
        Some(s) if w.name.contains("{e}") && !shape.is_empty() => (0..s.count as usize)
            .map(|e| Entry {
                name: w.name.replace("{e}", &e.to_string()),
                weight,
                expert: Some(e),
                shape: shape[1..].to_vec(),
            })
            .collect(),
        _ => vec![Entry {
            name: w.name.clone(),
            weight,
            expert: None,
            shape,
        }],
    }
}

/// What a file for a module must contain.
struct Layout {
    entries: Vec<Entry>,
    by_name: HashMap<String, usize>,
    /// Whether the module has its own `head.weight` (an untied head).
    has_head: bool,
    /// `(prefix, suffix, count)` of each stacked name, split at `{e}`.
    stacked: Vec<(String, String, usize)>,
    /// The entries of each weight, in module order.
    groups: Vec<Range<usize>>,
}

impl Layout {
    fn new(module: &Module) -> Layout {
        let mut entries: Vec<Entry> = Vec::new();
        let mut groups = Vec::with_capacity(module.weights.len());
        for (i, w) in module.weights.iter().enumerate() {
            let start = entries.len();
            entries.extend(file_entries(w, i));
            groups.push(start..entries.len());
        }
        let by_name = entries
            .iter()
            .enumerate()
            .map(|(i, e)| (e.name.clone(), i))
            .collect();
        let stacked = module
            .weights
            .iter()
            .filter_map(|w| {
                let s = w.stacked?;
                let (pre, post) = w.name.split_once("{e}")?;
                Some((pre.to_string(), post.to_string(), s.count as usize))
            })
            .collect();
        Layout {
            entries,
            by_name,
            has_head: module.weights.iter().any(|w| w.name == "head.weight"),
            stacked,
            groups,
        }
    }

    /// The problem line for a tensor the model does not have.
    fn unexpected(&self, name: &str, shape: &[usize], suggestions_left: &mut usize) -> String {
        let head = format!("unexpected tensor `{name}` of shape {shape:?}");
        for (pre, post, count) in &self.stacked {
            let index = name
                .strip_prefix(pre.as_str())
                .and_then(|rest| rest.strip_suffix(post.as_str()));
            if let Some(index) = index {
                if !index.is_empty() && index.bytes().all(|b| b.is_ascii_digit()) {
                    return format!(
                        "{head}: expert {index} is out of range, the model has {} (0..{})",
                        experts(*count),
                        count.saturating_sub(1)
                    );
                }
            }
        }
        if *suggestions_left == 0 {
            return head;
        }
        *suggestions_left -= 1;
        let names = self.entries.iter().map(|e| e.name.as_str());
        match suggest::closest(name, names) {
            Some(c) => format!("{head}: did you mean `{c}`?"),
            None => head,
        }
    }

    /// Problem lines for expected tensors not in `found`, in module order.
    fn missing(&self, module: &Module, found: &[bool]) -> Vec<String> {
        let mut problems = Vec::new();
        for (w, range) in module.weights.iter().zip(&self.groups) {
            let group = &self.entries[range.clone()];
            let absent: Vec<&Entry> = range
                .clone()
                .filter(|k| !found[*k])
                .map(|k| &self.entries[k])
                .collect();
            let Some(first) = absent.first() else {
                continue;
            };
            if first.expert.is_none() {
                problems.push(format!(
                    "missing tensor `{}` of shape {:?}",
                    first.name, first.shape
                ));
            } else if absent.len() == group.len() {
                problems.push(format!(
                    "missing `{}` for every expert (the model has {}, each of shape {:?})",
                    w.name,
                    experts(group.len()),
                    first.shape
                ));
            } else {
                let list: Vec<String> = absent
                    .iter()
                    .take(8)
                    .map(|e| e.expert.unwrap_or(0).to_string())
                    .collect();
                let more = if absent.len() > 8 {
                    format!(" and {} more", absent.len() - 8)
                } else {
                    String::new()
                };
                problems.push(format!(
                    "missing expert{} {}{more} of `{}` (the model has {}, each of shape {:?}): \
                     no `{}`",
                    if absent.len() == 1 { "" } else { "s" },
                    list.join(", "),
                    w.name,
                    experts(group.len()),
                    first.shape,
                    first.name
                ));
            }
        }
        problems
    }
}

/// `1 expert`, `4 experts`.
fn experts(n: usize) -> String {
    format!("{n} expert{}", if n == 1 { "" } else { "s" })
}

/// Values converted, then checked, at a time: 16 KiB of f32, so that the
/// check reads what the conversion just wrote while it is in L1 cache.
const BLOCK: usize = 4096;

/// Converts a checked tensor's little-endian data to f32 into `dst`, and
/// counts the values that are NaN or infinite in the same pass: block by
/// block, each block checked right after it is written (no second read of
/// the file, nor of `dst` from memory). Returns the count.
fn widen(view: &TensorView<'_>, dst: &mut [f32]) -> Result<usize, String> {
    use half::slice::HalfFloatSliceExt as _;
    let bytes = view.data();
    let dtype = view.dtype();
    let width = match dtype {
        Dtype::F32 => 4,
        Dtype::BF16 | Dtype::F16 => 2,
        other => return Err(format!("unsupported dtype {other}")),
    };
    if bytes.len() != dst.len() * width {
        return Err(format!(
            "{} bytes of data for {} elements",
            bytes.len(),
            dst.len()
        ));
    }
    let mut halves = [half::f16::ZERO; BLOCK];
    let mut bad = 0;
    for (d, b) in dst.chunks_mut(BLOCK).zip(bytes.chunks(BLOCK * width)) {
        let chunks = b.chunks_exact(width);
        match dtype {
            Dtype::F32 => {
                for (x, c) in d.iter_mut().zip(chunks) {
                    *x = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
                }
            }
            Dtype::BF16 => {
                // bf16 is the top half of an f32: exact, and vectorized (unlike
                // `half::bf16::to_f32`, which branches to quiet NaNs; NaNs are
                // refused here anyway).
                for (x, c) in d.iter_mut().zip(chunks) {
                    *x = f32::from_bits(u32::from(u16::from_le_bytes([c[0], c[1]])) << 16);
                }
            }
            _ => {
                // `half`'s slice conversion uses F16C where the CPU has it.
                let h = &mut halves[..d.len()];
                for (x, c) in h.iter_mut().zip(chunks) {
                    *x = half::f16::from_le_bytes([c[0], c[1]]);
                }
                h.convert_to_f32_slice(d);
            }
        }
        bad += finite::count(d);
    }
    Ok(bad)
}

/// A plain-language reason for a file the safetensors parser rejects.
fn format_message(e: &SafeTensorError) -> String {
    match e {
        SafeTensorError::HeaderTooSmall => {
            "the file is shorter than the 8-byte header length (empty or truncated)".into()
        }
        SafeTensorError::InvalidHeaderLength => {
            "the header length runs past the end of the file (truncated?)".into()
        }
        SafeTensorError::HeaderTooLarge => "the header length is implausibly large".into(),
        SafeTensorError::InvalidHeader(_) => "the header is not UTF-8 text".into(),
        SafeTensorError::InvalidHeaderDeserialization(err) => {
            format!("the header is not safetensors JSON ({err})")
        }
        SafeTensorError::MetadataIncompleteBuffer => {
            "the tensor data does not fill the file exactly (truncated or trailing bytes)".into()
        }
        other => other.to_string(),
    }
}

/// An f32 slice as a safetensors view; bytes are produced when the writer asks,
/// so saving holds at most one tensor's bytes besides the weights.
struct F32View<'a> {
    shape: Vec<usize>,
    data: &'a [f32],
}

impl View for F32View<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }

    fn shape(&self) -> &[usize] {
        &self.shape
    }

    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.data.iter().flat_map(|x| x.to_le_bytes()).collect())
    }

    fn data_len(&self) -> usize {
        self.data.len() * 4
    }
}
