//! The schema of the language: its values, and every setting, definition
//! kind and loop feature with its fields' types, defaults and ranges. One
//! table each, read by the checker (`build`, `eval`), the sweep files and
//! the docs' tests; it depends on nothing else in `sema`.

/// A value of the language.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Value {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Value {
    pub fn type_name(self) -> &'static str {
        match self {
            Value::Int(_) => "integer",
            Value::Float(_) => "float",
            Value::Bool(_) => "boolean",
        }
    }

    pub fn describe(self) -> String {
        match self {
            Value::Int(v) => format!("integer {v}"),
            Value::Float(v) => format!("float {v}"),
            Value::Bool(v) => format!("boolean {v}"),
        }
    }
}

/// The type a setting or field must have.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Ty {
    Int,
    Float,
    Bool,
}

/// What to do when a setting or field is absent.
#[derive(Clone, Copy, Debug)]
pub enum Absent {
    Required,
    /// Absent means "not given" (the builder decides).
    Optional,
    Value(Value),
}

/// A setting or field: name, type, default, allowed range (inclusive) for ints.
pub struct Spec {
    pub name: &'static str,
    pub ty: Ty,
    pub default: Absent,
    pub min: i64,
    pub max: i64,
    pub doc: &'static str,
}

const fn int(name: &'static str, default: Absent, min: i64, max: i64, doc: &'static str) -> Spec {
    Spec {
        name,
        ty: Ty::Int,
        default,
        min,
        max,
        doc,
    }
}
const fn float(name: &'static str, default: Absent, doc: &'static str) -> Spec {
    Spec {
        name,
        ty: Ty::Float,
        default,
        min: 0,
        max: 0,
        doc,
    }
}
const fn boolean(name: &'static str, default: Absent, doc: &'static str) -> Spec {
    Spec {
        name,
        ty: Ty::Bool,
        default,
        min: 0,
        max: 0,
        doc,
    }
}

use Absent::{Optional, Required};
const fn d_f(v: f64) -> Absent {
    Absent::Value(Value::Float(v))
}
const fn d_i(v: i64) -> Absent {
    Absent::Value(Value::Int(v))
}
const fn d_b(v: bool) -> Absent {
    Absent::Value(Value::Bool(v))
}

/// Limits: large enough for any model that fits on a machine, small enough
/// that cost analysis in u128 cannot overflow.
const SIZE: i64 = 1 << 24;
const BIG: i64 = (1 << 31) - 1;

/// Model-level settings.
pub const SETTINGS: &[Spec] = &[
    int("vocab", Required, 1, BIG, "vocabulary size"),
    int("dim", Required, 1, 1 << 20, "model (residual) width"),
    int(
        "max_seq",
        Required,
        1,
        BIG,
        "longest sequence (RoPE table length)",
    ),
    float("rope_theta", d_f(500000.0), "RoPE base frequency"),
    float("norm_eps", d_f(1e-6), "RMSNorm epsilon"),
    boolean(
        "tie_embeddings",
        d_b(true),
        "output head shares the embedding matrix",
    ),
    float("dropout", d_f(0.0), "dropout probability (training only)"),
    int("max_output_tokens", d_i(4096), 1, BIG, "generation limit"),
];

/// Default value of a model setting, for expressions that name it.
pub fn setting_default(name: &str) -> Option<Value> {
    SETTINGS
        .iter()
        .find(|s| s.name == name)
        .and_then(|s| match s.default {
            Absent::Value(v) => Some(v),
            _ => None,
        })
}

const GQA: &[Spec] = &[
    int("heads", Required, 1, 1 << 14, "query heads"),
    int("kv_heads", Required, 1, 1 << 14, "key/value heads"),
];
const MHA: &[Spec] = &[int("heads", Required, 1, 1 << 14, "heads")];
const MLA: &[Spec] = &[
    int("heads", Required, 1, 1 << 14, "query heads"),
    int(
        "kv_heads",
        Optional,
        1,
        1 << 14,
        "ignored by MLA (kept for OpenMythos export)",
    ),
    int(
        "q_rank",
        Required,
        1,
        SIZE,
        "query latent rank (q_lora_rank)",
    ),
    int(
        "kv_rank",
        Required,
        1,
        SIZE,
        "key/value latent rank (kv_lora_rank)",
    ),
    int(
        "rope_dim",
        Required,
        1,
        SIZE,
        "per-head dims with RoPE (qk_rope_head_dim)",
    ),
    int(
        "nope_dim",
        Required,
        1,
        SIZE,
        "per-head dims without RoPE (qk_nope_head_dim)",
    ),
    int(
        "v_dim",
        Required,
        1,
        SIZE,
        "per-head value dims (v_head_dim)",
    ),
];
const DENSE: &[Spec] = &[int(
    "hidden",
    Optional,
    1,
    SIZE,
    "SwiGLU hidden size (default dim * 4 // 3)",
)];
const MOE: &[Spec] = &[
    int("experts", Required, 1, 1 << 16, "routed experts"),
    int(
        "shared",
        d_i(0),
        0,
        1 << 16,
        "shared (always active) experts",
    ),
    int("top_k", Required, 1, 1 << 16, "experts chosen per token"),
    int(
        "expert_dim",
        Required,
        1,
        SIZE,
        "hidden size of each routed expert",
    ),
    int(
        "shared_dim",
        Optional,
        1,
        SIZE,
        "hidden size of each shared expert (default expert_dim * top_k)",
    ),
    boolean("router_bias", d_b(true), "router selection bias buffer"),
];
const NONE: &[Spec] = &[];
const ACT: &[Spec] = &[float(
    "threshold",
    d_f(0.99),
    "cumulative halting probability",
)];
const LORA: &[Spec] = &[int("rank", Required, 0, SIZE, "LoRA rank (0 = off)")];
const LOOP_EMBEDDING: &[Spec] = &[
    int(
        "channels",
        Optional,
        0,
        1 << 20,
        "leading channels that get the signal (default dim // 8; 0 adds nothing)",
    ),
    float("theta", d_f(10000.0), "sinusoid base"),
];

/// The kinds of each sort of definition or feature, with their fields.
pub const ATTENTION_KINDS: &[(&str, &[Spec])] = &[("gqa", GQA), ("mha", MHA), ("mla", MLA)];
pub const FFN_KINDS: &[(&str, &[Spec])] = &[("dense", DENSE), ("moe", MOE)];
pub const INJECT_KINDS: &[(&str, &[Spec])] = &[
    ("lti", NONE),
    ("add", NONE),
    ("concat", NONE),
    ("none", NONE),
];
pub const HALT_KINDS: &[(&str, &[Spec])] = &[("act", ACT), ("none", NONE)];
/// `""` is the kind written as nothing (`lora { rank = 8 }`).
pub const LORA_KINDS: &[(&str, &[Spec])] = &[("", LORA), ("none", NONE)];
pub const LOOP_EMBEDDING_KINDS: &[(&str, &[Spec])] = &[
    ("", LOOP_EMBEDDING),
    ("sincos", LOOP_EMBEDDING),
    ("none", NONE),
];

/// The kinds of a definition sort or loop feature, each with its fields
/// (`""` is the kind written as nothing).
pub type Kinds = &'static [(&'static str, &'static [Spec])];

/// The loop features (`loop { inject lti ... }`) in the order the language
/// documents them, each with its kinds.
pub const LOOP_FEATURES: &[(&str, Kinds)] = &[
    ("inject", INJECT_KINDS),
    ("halt", HALT_KINDS),
    ("lora", LORA_KINDS),
    ("loop_embedding", LOOP_EMBEDDING_KINDS),
];

/// The kinds of loop feature `keyword`, and its place in [`LOOP_FEATURES`].
pub fn loop_feature(keyword: &str) -> Option<(usize, Kinds)> {
    LOOP_FEATURES
        .iter()
        .position(|(k, _)| *k == keyword)
        .map(|i| (i, LOOP_FEATURES[i].1))
}
