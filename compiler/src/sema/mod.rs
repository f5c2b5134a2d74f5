//! Semantic analysis: from parsed files to checked [`Model`]s.
//!
//! `load` (files, imports) -> `merge` (scopes, `extends`) -> `eval` (values)
//! -> `build` (types, defaults, kinds) -> the architecture checks below.
//! Analysis keeps going after an error and reports everything it can.

pub mod build;
pub mod eval;
pub mod loader;
pub mod merge;
pub mod schema;

pub use loader::{FileIndex, Loader};

use crate::diag::{self, Code, Diagnostic};
use crate::model::*;
use crate::source::Span;
use crate::suggest;
use crate::syntax::ast;
use build::*;
use eval::{Evaluator, Value};
use merge::{Merged, MergedDef};
use schema::*;
use std::collections::HashMap;

/// What checking a file gives: its checked models and every diagnostic.
pub struct Checked {
    pub models: Vec<Model>,
    pub diagnostics: Vec<Diagnostic>,
}

impl Checked {
    pub fn has_errors(&self) -> bool {
        self.diagnostics.iter().any(|d| d.is_error())
    }
}

/// Loads `name` (a path or `@preset`) with its imports and checks every model in it.
pub fn check_file(loader: &mut Loader, name: &str) -> Checked {
    let root = loader.load_root(name);
    let mut diagnostics = std::mem::take(&mut loader.diagnostics);
    let mut models = Vec::new();
    if let Some(root) = root {
        merge::check_model_names(loader, root, &mut diagnostics);
        for item in &loader.file(root).ast.items {
            if let ast::Item::Model(m) = item {
                if let Some(model) = build_model(loader, root, m, &mut diagnostics) {
                    models.push(model);
                }
            }
        }
    }
    diag::sort_and_dedup(&mut diagnostics);
    Checked {
        models,
        diagnostics,
    }
}

/// Picks one model of a checked file: the one named, or the only/last one.
pub fn select<'c>(
    checked: &'c Checked,
    name: Option<&str>,
    file_label: &str,
) -> Result<&'c Model, Diagnostic> {
    match name {
        Some(n) => checked.models.iter().find(|m| m.name == n).ok_or_else(|| {
            let names: Vec<&str> = checked.models.iter().map(|m| m.name.as_str()).collect();
            Diagnostic::error(
                Code::UnknownModel,
                format!("`{file_label}` has no model named `{n}`"),
            )
            .help(suggest::help_for(
                n,
                "models in the file",
                names.iter().copied(),
            ))
        }),
        None => match checked.models.as_slice() {
            [] => Err(Diagnostic::error(
                Code::UnknownModel,
                format!("`{file_label}` defines no model"),
            )
            .help("add `model NAME { ... }` to the file")),
            [only] => Ok(only),
            many => {
                let names: Vec<String> = many.iter().map(|m| format!("`{}`", m.name)).collect();
                // The last model of a file is usually the variant of interest; say which.
                Err(Diagnostic::error(
                    Code::UnknownModel,
                    format!("`{file_label}` defines several models"),
                )
                .help(format!(
                    "choose one with `--model NAME`: {}",
                    names.join(", ")
                )))
            }
        },
    }
}

/// Resolves, evaluates and checks one model.
pub fn build_model(
    loader: &Loader,
    file: FileIndex,
    model: &ast::Model,
    diags: &mut Vec<Diagnostic>,
) -> Option<Model> {
    let chain = merge::extends_chain(loader, file, model, diags)?;
    let merged = merge::merge(&chain, diags);
    let mut ev = Evaluator::new(&merged, loader, setting_default);
    let built = Builder {
        ev: &mut ev,
        attentions: HashMap::new(),
        ffns: HashMap::new(),
    }
    .model();
    // Evaluate every let so that errors in unused ones are still reported.
    for l in merged.lets.clone() {
        ev.entry(&l, None);
    }
    let mut warned = std::collections::HashSet::new();
    for name in &merged.own_lets {
        if !ev.used.contains(&(None, name.name.clone())) && warned.insert(&name.name) {
            ev.diags.push(
                Diagnostic::error(
                    Code::UnusedValue,
                    format!("value `{}` is never used", name.name),
                )
                .label(name.span, "defined here")
                .help("remove it, or use it in an expression"),
            );
        }
    }
    let ok = !ev.diags.iter().any(|d| d.is_error());
    diags.append(&mut ev.diags);
    if ok {
        built
    } else {
        None
    }
}

/// Most blocks one stage may expand to (the sum of its `N x` counts).
pub const MAX_STAGE_BLOCKS: u64 = 4096;

struct Builder<'e, 'm, 'a> {
    ev: &'e mut Evaluator<'m, 'a>,
    /// Definitions already built, by name: each is built (and reported) once
    /// however many blocks use it.
    attentions: HashMap<String, Option<Attention>>,
    ffns: HashMap<String, Option<Ffn>>,
}

impl<'e, 'm, 'a> Builder<'e, 'm, 'a> {
    fn merged(&self) -> &'m Merged<'a> {
        self.ev.merged
    }

    fn model(&mut self) -> Option<Model> {
        let merged = self.merged();
        let name_span = merged.name.span;
        let mut r = Reader::new(
            self.ev,
            merged.settings.clone(),
            None,
            SETTINGS,
            name_span,
            format!("model `{}`", merged.name.name),
        );
        let vocab = r.int("vocab");
        let dim = r.int("dim");
        let max_seq = r.int("max_seq");
        let rope_theta = r.float_in(
            "rope_theta",
            |v| v > 0.0,
            "greater than 0",
            Code::OutOfRange,
        );
        let norm_eps = r.float_in(
            "norm_eps",
            |v| v > 0.0 && v < 1.0,
            "in (0, 1)",
            Code::OutOfRange,
        );
        let tie_embeddings = r.bool("tie_embeddings");
        let dropout = r.float_in(
            "dropout",
            |v| (0.0..=1.0).contains(&v),
            "in [0, 1]",
            Code::OutOfRange,
        );
        let max_output_tokens = r.int("max_output_tokens");
        let dim_span = r.span_of("dim");

        let prelude = self.stage(merged.prelude, dim, dim_span);
        let coda = self.stage(merged.coda, dim, dim_span);
        let recurrence = self.recurrence(dim, dim_span);
        Some(Model {
            name: merged.name.name.clone(),
            span: merged.name.span,
            vocab: vocab?,
            dim: dim?,
            max_seq: max_seq?,
            rope_theta: rope_theta?,
            norm_eps: norm_eps?,
            tie_embeddings: tie_embeddings?,
            dropout: dropout?,
            max_output_tokens: max_output_tokens?,
            prelude: prelude?,
            recurrence: recurrence?,
            coda: coda?,
        })
    }

    fn stage(
        &mut self,
        stage: Option<(&'a ast::Stage, FileIndex)>,
        dim: Option<u64>,
        dim_span: Span,
    ) -> Option<Vec<Block>> {
        let Some((stage, file)) = stage else {
            return Some(Vec::new());
        };
        let refs: Vec<_> = stage.blocks.iter().map(|b| (b, file)).collect();
        self.blocks(&refs, dim, dim_span)
    }

    /// Resolves block references and expands their counts.
    fn blocks(
        &mut self,
        refs: &[(&'a ast::BlockRef, FileIndex)],
        dim: Option<u64>,
        dim_span: Span,
    ) -> Option<Vec<Block>> {
        let mut out = Some(Vec::new());
        let mut total = 0u64;
        for &(b, file) in refs {
            let count = match &b.count {
                None => Some(1),
                Some(e) => self.count(e, file),
            };
            total += count.unwrap_or(0);
            if total > MAX_STAGE_BLOCKS {
                self.ev.diags.push(
                    Diagnostic::error(
                        Code::OutOfRange,
                        format!("a stage may hold at most {MAX_STAGE_BLOCKS} blocks; this one reaches {total}"),
                    )
                    .label(b.span, "the stage is too long from here on")
                    .help("use fewer or smaller `N x block(...)` repetitions"),
                );
                return None;
            }
            let attention = match self.attentions.get(&b.attention.name) {
                Some(built) => built.clone(),
                None => {
                    let built: Option<Attention> =
                        self.definition(&b.attention, true, dim, dim_span);
                    self.attentions
                        .insert(b.attention.name.clone(), built.clone());
                    built
                }
            };
            let ffn = match self.ffns.get(&b.ffn.name) {
                Some(built) => built.clone(),
                None => {
                    let built: Option<Ffn> = self.definition(&b.ffn, false, dim, dim_span);
                    self.ffns.insert(b.ffn.name.clone(), built.clone());
                    built
                }
            };
            match (count, attention, ffn, out.as_mut()) {
                (Some(n), Some(attention), Some(ffn), Some(list)) => {
                    for _ in 0..n {
                        list.push(Block {
                            attention: attention.clone(),
                            ffn: ffn.clone(),
                            span: b.span,
                        });
                    }
                }
                _ => out = None,
            }
        }
        out
    }

    fn count(&mut self, e: &ast::Expr, file: FileIndex) -> Option<u64> {
        match self.ev.expr(e, block_ctx(file))? {
            Value::Int(n) if (1..=4096).contains(&n) => Some(n as u64),
            Value::Int(n) => {
                self.ev.diags.push(
                    Diagnostic::error(
                        Code::OutOfRange,
                        format!("a block count must be from 1 to 4096, found {n}"),
                    )
                    .label(e.span, "repetition count out of range")
                    .help("remove the block reference instead of repeating it 0 times"),
                );
                None
            }
            v => {
                self.ev.diags.push(
                    Diagnostic::error(
                        Code::WrongType,
                        format!("a block count must be an integer, found {}", v.type_name()),
                    )
                    .label(e.span, format!("this is {}", v.describe()))
                    .help("use an integer, or `//` for integer division"),
                );
                None
            }
        }
    }

    /// Finds and builds the attention (or FFN) definition a block names.
    fn definition<T: BuiltDef>(
        &mut self,
        name: &ast::Ident,
        attention: bool,
        dim: Option<u64>,
        dim_span: Span,
    ) -> Option<T> {
        let merged = self.merged();
        let (own, other, sort, other_sort) = if attention {
            (&merged.attentions, &merged.ffns, "attention", "FFN")
        } else {
            (&merged.ffns, &merged.attentions, "FFN", "attention")
        };
        if let Some(def) = own.iter().find(|d| d.name == name.name) {
            return T::build(self, def, dim, dim_span);
        }
        let diag = if other.iter().any(|d| d.name == name.name) {
            let slot = if attention { "first" } else { "second" };
            Diagnostic::error(
                Code::WrongSort,
                format!(
                    "`{}` is an {other_sort} definition, not an {sort}",
                    name.name
                ),
            )
            .label(
                name.span,
                format!("the {slot} argument of `block` must be an {sort}"),
            )
            .help("blocks are written `block(ATTENTION, FFN)`")
        } else {
            let names: Vec<&str> = own.iter().map(|d| d.name.as_str()).collect();
            Diagnostic::error(
                Code::UnknownDefinition,
                format!("no {sort} definition named `{}`", name.name),
            )
            .label(name.span, format!("unknown {sort}"))
            .help(suggest::help_for(
                &name.name,
                &format!("{sort} definitions"),
                names.iter().copied(),
            ))
        };
        self.ev.diags.push(diag);
        None
    }

    fn reader(
        &mut self,
        def: &MergedDef<'a>,
        specs: &'static [Spec],
        what: String,
    ) -> Reader<'_, 'm, 'a> {
        let merged = self.merged();
        Reader::new(
            self.ev,
            merged.fields(def.fields).to_vec(),
            Some(def.fields),
            specs,
            def.span,
            what,
        )
    }

    fn recurrence(&mut self, dim: Option<u64>, dim_span: Span) -> Option<Recurrence> {
        let merged = self.merged();
        let Some(lp) = &merged.recurrence else {
            self.ev.diags.push(
                Diagnostic::error(Code::NoLoop, format!("model `{}` has no `loop`", merged.name.name))
                    .label(merged.name.span, "a recurrent-depth model needs a loop stage")
                    .help("add `loop max 4 { block(attention, dense) }`; a loop of `max 1` is a plain transformer"),
            );
            return None;
        };
        let max_iters = match lp.max {
            None => {
                self.ev.diags.push(
                    Diagnostic::error(Code::NoLoopMax, "the loop has no `max` iteration count")
                        .label(lp.span, "`loop` without `max`")
                        .help("write `loop max 16 { ... }`"),
                );
                None
            }
            Some((e, file)) => match self.ev.expr(e, block_ctx(file)) {
                Some(Value::Int(n)) if (1..=(1 << 14)).contains(&n) => Some(n as u64),
                Some(Value::Int(n)) => {
                    self.ev.diags.push(
                        Diagnostic::error(
                            Code::OutOfRange,
                            format!("`max` must be from 1 to 16384, found {n}"),
                        )
                        .label(e.span, "loop iteration count out of range")
                        .help("the loop runs at least once"),
                    );
                    None
                }
                Some(v) => {
                    self.ev.diags.push(
                        Diagnostic::error(
                            Code::WrongType,
                            format!("`max` must be an integer, found {}", v.type_name()),
                        )
                        .label(e.span, format!("this is {}", v.describe()))
                        .help("use an integer, or `//` for integer division"),
                    );
                    None
                }
                None => None,
            },
        };
        let body = if lp.blocks.is_empty() {
            self.ev.diags.push(
                Diagnostic::error(Code::EmptyLoop, "the loop body has no blocks")
                    .label(lp.span, "nothing to repeat")
                    .help("add a block: `block(attention, moe)`"),
            );
            None
        } else {
            self.blocks(&lp.blocks.clone(), dim, dim_span)
        };
        let inject = self.inject();
        let halt = self.halt();
        let lora_rank = self.lora();
        let loop_embedding = self.loop_embedding(dim, dim_span);
        Some(Recurrence {
            span: lp.span,
            max_iters: max_iters?,
            body: body?,
            inject: inject?,
            halt: halt?,
            lora_rank: lora_rank?,
            loop_embedding: loop_embedding?,
        })
    }

    /// A feature's kind and a reader over its fields; `Ok(None)` when absent.
    fn feature(
        &mut self,
        keyword: &str,
        kinds: &'static [(&'static str, &'static [Spec])],
    ) -> Result<Option<(&'static str, Reader<'_, 'm, 'a>)>, ()> {
        let merged = self.merged();
        let Some(def) = merged.feature(keyword) else {
            return Ok(None);
        };
        let (kind, specs) = resolve_kind(self.ev, def, "loop feature", kinds).ok_or(())?;
        let what = if kind.is_empty() {
            format!("`{keyword}`")
        } else {
            format!("`{keyword} {kind}`")
        };
        Ok(Some((kind, self.reader(def, specs, what))))
    }

    fn inject(&mut self) -> Option<Injection> {
        let Some((kind, r)) = self.feature("inject", INJECT_KINDS).ok()? else {
            return Some(Injection::None);
        };
        if !r.ok {
            return None;
        }
        Some(match kind {
            "lti" => Injection::Lti,
            "add" => Injection::Add,
            "concat" => Injection::Concat,
            _ => Injection::None,
        })
    }

    fn halt(&mut self) -> Option<Halting> {
        let Some((kind, mut r)) = self.feature("halt", HALT_KINDS).ok()? else {
            return Some(Halting::None);
        };
        if kind == "none" {
            return r.ok.then_some(Halting::None);
        }
        let threshold = r.float("threshold");
        // OpenMythos runs any threshold: at or below 0 every position halts at
        // the first iteration with weight 1; above 1 a position halts once its
        // summed p reaches the threshold, if ever. Likely a slip, so a warning.
        if let Some(t) = threshold.filter(|&t| !(t > 0.0 && t <= 1.0)) {
            let span = r.span_of("threshold");
            let effect = if t <= 0.0 {
                "every position halts at the first iteration"
            } else {
                "a position halts only once its summed halting probabilities reach it, if ever"
            };
            r.ev.diags.push(
                Diagnostic::error(
                    Code::ThresholdUnusual,
                    format!("halting threshold {t} is outside (0, 1]: {effect}"),
                )
                .label(
                    span,
                    "ACT compares the cumulative halting probability with this",
                )
                .note("OpenMythos runs such a threshold the same way")
                .help("use a threshold in (0, 1], such as 0.99"),
            );
        }
        r.ok.then_some(())?;
        Some(Halting::Act {
            threshold: threshold?,
        })
    }

    fn lora(&mut self) -> Option<u64> {
        let Some((kind, mut r)) = self.feature("lora", LORA_KINDS).ok()? else {
            return Some(0);
        };
        if kind == "none" {
            return r.ok.then_some(0);
        }
        let rank = r.int("rank");
        r.ok.then_some(())?;
        rank
    }

    fn loop_embedding(
        &mut self,
        dim: Option<u64>,
        dim_span: Span,
    ) -> Option<Option<LoopEmbedding>> {
        let Some((kind, mut r)) = self.feature("loop_embedding", LOOP_EMBEDDING_KINDS).ok()? else {
            return Some(None);
        };
        if kind == "none" {
            return r.ok.then_some(None);
        }
        let given = r.int("channels");
        let theta = r.float_in("theta", |t| t > 0.0, "greater than 0", Code::OutOfRange);
        let span = r.span_of("channels");
        let channels = match (given, r.is_given("channels"), dim) {
            (Some(c), true, _) => Some(c),
            (_, false, Some(d)) => Some(d / 8),
            _ => None,
        };
        // Odd counts and 0 are what OpenMythos runs: `[sin.., cos..][:channels]`
        // drops the last cosine, and `dim // 8 = 0` adds nothing. Only more
        // channels than `dim` cannot be added to the state.
        if let (Some(c), Some(d)) = (channels, dim) {
            if c > d {
                r.error(
                    Diagnostic::error(
                        Code::LoopEmbeddingChannels,
                        format!("invalid loop-embedding channels: {c} channels is more than `dim` ({d})"),
                    )
                    .label(span, "channels must be at most `dim`")
                    .secondary(dim_span, format!("`dim` is {d}"))
                    .help("choose at most `dim` channels (OpenMythos uses dim // 8), or `loop_embedding none`"),
                );
            }
        }
        r.ok.then_some(())?;
        Some(Some(LoopEmbedding {
            channels: channels?,
            theta: theta?,
        }))
    }
}

/// Attention and FFN definitions, built the same way from a [`MergedDef`].
trait BuiltDef: Sized + Clone {
    fn build<'e, 'm, 'a>(
        b: &mut Builder<'e, 'm, 'a>,
        def: &MergedDef<'a>,
        dim: Option<u64>,
        dim_span: Span,
    ) -> Option<Self>;
}

impl BuiltDef for Attention {
    fn build<'e, 'm, 'a>(
        b: &mut Builder<'e, 'm, 'a>,
        def: &MergedDef<'a>,
        dim: Option<u64>,
        dim_span: Span,
    ) -> Option<Attention> {
        let (kind, specs) = resolve_kind(b.ev, def, "attention", ATTENTION_KINDS)?;
        let mut r = b.reader(def, specs, format!("attention `{kind}`"));
        let heads = r.int("heads");
        let heads_span = r.span_of("heads");
        let kind = match kind {
            "mla" => {
                let kv_heads = if r.is_given("kv_heads") {
                    r.int("kv_heads").map(Some)
                } else {
                    Some(None)
                };
                let (q_rank, kv_rank) = (r.int("q_rank"), r.int("kv_rank"));
                let rope_dim = r.int("rope_dim");
                let (nope_dim, v_dim) = (r.int("nope_dim"), r.int("v_dim"));
                if let Some(rd) = rope_dim {
                    if rd % 2 == 1 {
                        let span = r.span_of("rope_dim");
                        r.error(
                            Diagnostic::error(
                                Code::OddRope,
                                format!("`rope_dim` must be even, found {rd}"),
                            )
                            .label(span, "RoPE rotates pairs of dimensions")
                            .note("OpenMythos itself fails on this config: its RoPE views the rope part as complex pairs")
                            .help(format!(
                                "use {} or {}",
                                rd - 1,
                                rd + 1
                            )),
                        );
                    }
                }
                AttentionKind::Mla {
                    heads: heads?,
                    kv_heads: kv_heads?,
                    q_rank: q_rank?,
                    kv_rank: kv_rank?,
                    rope_dim: rope_dim?,
                    nope_dim: nope_dim?,
                    v_dim: v_dim?,
                }
            }
            k => {
                let kv_heads = if k == "gqa" { r.int("kv_heads") } else { heads };
                let kv_span = r.span_of("kv_heads");
                // OpenMythos takes head_dim = dim // heads and projects to
                // heads * head_dim channels, so `dim % heads != 0` runs (with a
                // warning); a head dimension of 0 or an odd one crashes its RoPE.
                if let (Some(h), Some(d)) = (heads, dim) {
                    let hd = d / h;
                    if hd == 0 {
                        r.error(
                            Diagnostic::error(
                                Code::HeadsDivideDim,
                                format!("{h} heads over {d} channels leave a head dimension of 0"),
                            )
                            .label(heads_span, "more heads than `dim` has channels")
                            .secondary(dim_span, format!("`dim` is {d}"))
                            .note("OpenMythos itself fails on this config: its RoPE cannot split a 0-wide head into pairs")
                            .help(format!(
                                "each head gets dim // heads channels; try heads = {}",
                                nearest_even_head_count(d, h)
                            )),
                        );
                    } else if hd % 2 == 1 {
                        r.error(
                            Diagnostic::error(
                                Code::OddRope,
                                format!("head dimension dim // heads = {hd} is odd"),
                            )
                            .label(heads_span, "RoPE rotates pairs of dimensions in each head")
                            .secondary(dim_span, format!("`dim` is {d}"))
                            .note("OpenMythos itself fails on this config: its RoPE views each head as complex pairs")
                            .help(format!(
                                "choose `dim` and `heads` so that dim // heads is even; try heads = {}",
                                nearest_even_head_count(d, h)
                            )),
                        );
                    } else if d % h != 0 {
                        r.ev.diags.push(
                            Diagnostic::error(
                                Code::HeadsUnevenDim,
                                format!(
                                    "`dim` ({d}) is not divisible by `heads` ({h}): each head gets \
                                     dim // heads = {hd} channels, {} of {d} in all",
                                    h * hd
                                ),
                            )
                            .label(heads_span, format!("{h} heads of {hd} channels"))
                            .secondary(dim_span, format!("`dim` is {d}"))
                            .note("as in OpenMythos: q, k and v project to heads * head_dim channels and `wo` back to `dim`")
                            .help(format!(
                                "if that is not what you meant, try heads = {}",
                                nearest_even_head_count(d, h)
                            )),
                        );
                    }
                }
                if let (Some(h), Some(kv)) = (heads, kv_heads) {
                    if kv > h || h % kv != 0 {
                        r.error(
                            Diagnostic::error(
                                Code::KvHeadsDivideHeads,
                                format!("`heads` ({h}) is not a multiple of `kv_heads` ({kv})"),
                            )
                            .label(
                                kv_span,
                                "each key/value head must serve the same number of query heads",
                            )
                            .note("OpenMythos itself fails on this config: repeat_interleave by heads // kv_heads gives the wrong number of key heads")
                            .secondary(heads_span, format!("`heads` is {h}"))
                            .help(format!("try kv_heads = {}", nearest_divisor(h, kv))),
                        );
                    }
                }
                if k == "gqa" {
                    AttentionKind::Gqa {
                        heads: heads?,
                        kv_heads: kv_heads?,
                    }
                } else {
                    AttentionKind::Mha { heads: heads? }
                }
            }
        };
        r.ok.then_some(())?;
        Some(Attention {
            name: def.name.clone(),
            kind,
        })
    }
}

impl BuiltDef for Ffn {
    fn build<'e, 'm, 'a>(
        b: &mut Builder<'e, 'm, 'a>,
        def: &MergedDef<'a>,
        dim: Option<u64>,
        _dim_span: Span,
    ) -> Option<Ffn> {
        let (kind, specs) = resolve_kind(b.ev, def, "FFN", FFN_KINDS)?;
        let mut r = b.reader(def, specs, format!("ffn `{kind}`"));
        let kind = if kind == "dense" {
            let hidden = if r.is_given("hidden") {
                r.int("hidden")
            } else {
                dim.map(|d| (d * 4 / 3).max(1))
            };
            FfnKind::Dense { hidden: hidden? }
        } else {
            let experts = r.int("experts");
            let shared = r.int("shared");
            let top_k = r.int("top_k");
            let expert_dim = r.int("expert_dim");
            let shared_dim = if r.is_given("shared_dim") {
                r.int("shared_dim")
            } else {
                expert_dim.zip(top_k).map(|(e, k)| e * k)
            };
            let router_bias = r.bool("router_bias");
            if let (Some(e), Some(k)) = (experts, top_k) {
                if k > e {
                    let span = r.span_of("top_k");
                    let experts_span = r.span_of("experts");
                    r.error(
                        Diagnostic::error(
                            Code::TopKTooLarge,
                            format!("`top_k` ({k}) is larger than `experts` ({e})"),
                        )
                        .label(span, "cannot choose more experts than there are")
                        .note("OpenMythos itself fails on this config: torch.topk cannot select more than there are")
                        .secondary(experts_span, format!("{e} experts"))
                        .help(format!("use top_k <= {e}, or more experts")),
                    );
                }
            }
            FfnKind::Moe {
                experts: experts?,
                shared: shared?,
                top_k: top_k?,
                expert_dim: expert_dim?,
                shared_dim: shared_dim?,
                router_bias: router_bias?,
            }
        };
        r.ok.then_some(())?;
        Some(Ffn {
            name: def.name.clone(),
            kind,
        })
    }
}

/// The head count closest to `near` that divides `dim` into heads of an even
/// width (for "try heads = ..." hints); 1 when `dim` is odd.
fn nearest_even_head_count(dim: u64, near: u64) -> u64 {
    (1..=dim / 2)
        .filter(|h| dim % h == 0 && (dim / h) % 2 == 0)
        .min_by_key(|&h| (h.abs_diff(near), h))
        .unwrap_or(1)
}

/// The divisor of `n` closest to `near` (for "try heads = ..." hints).
fn nearest_divisor(n: u64, near: u64) -> u64 {
    (1..=n)
        .filter(|d| n % d == 0)
        .min_by_key(|&d| (d.abs_diff(near), d))
        .unwrap_or(1)
}
