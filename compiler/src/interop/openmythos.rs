//! OpenMythos `MythosConfig` JSON import and export.
//!
//! OpenMythos describes a model with one flat dataclass, `MythosConfig`; its
//! JSON form is `json.dump(dataclasses.asdict(config), f, indent=2)`. Import
//! turns such a file into a `.mythos` spec in the canonical layout of
//! `models/openmythos-1b.mythos` and checks it; export writes a checked model
//! back as that JSON, byte for byte what Python writes, when the model has the
//! shape OpenMythos builds (dense prelude and coda, one looped MoE block with
//! LTI injection, ACT halting and a loop-index embedding).
//!
//! Import diagnostics point into the JSON text: syntax errors (E0401) at the
//! byte where parsing failed, field problems (E0402) at the key or value, and
//! problems the checker finds in the generated spec at the JSON value they
//! come from (the generator records which config field each piece of spec
//! text was written from).

use crate::diag::{self, Code, Diagnostic, Severity};
use crate::model::{AttentionKind, Block, FfnKind, Halting, Injection, Model};
use crate::sema;
use crate::source::{FileId, SourceMap, Span};
use crate::suggest;
use serde_json::Value;
use std::ops::Range;

/// A spec made from a config, with warnings about what it could not keep.
pub struct Imported {
    pub spec: String,
    pub warnings: Vec<Diagnostic>,
}

// ------------------------------------------------------------- the dataclass

/// The JSON type of a `MythosConfig` field.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Ty {
    Int,
    Float,
    /// `attn_type`: `"gqa"` or `"mla"`.
    Attn,
}

/// A field value (also the dataclass defaults).
#[derive(Clone, Copy, Debug, PartialEq)]
enum Val {
    Int(i64),
    Float(f64),
    Attn(Attn),
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Attn {
    Gqa,
    Mla,
}

impl Attn {
    fn name(self) -> &'static str {
        match self {
            Attn::Gqa => "gqa",
            Attn::Mla => "mla",
        }
    }
}

/// The fields of `MythosConfig` as named keys, in declaration order (the
/// order of the JSON), each with its JSON type and dataclass default.
macro_rules! mythos_config {
    ($($key:ident $name:literal $ty:ident $default:expr;)*) => {
        #[derive(Clone, Copy, Debug, PartialEq, Eq)]
        enum Key {
            $($key,)*
        }

        impl Key {
            const ALL: &'static [Key] = &[$(Key::$key,)*];

            fn name(self) -> &'static str {
                match self {
                    $(Key::$key => $name,)*
                }
            }

            fn ty(self) -> Ty {
                match self {
                    $(Key::$key => Ty::$ty,)*
                }
            }

            fn default(self) -> Val {
                match self {
                    $(Key::$key => $default,)*
                }
            }
        }
    };
}

mythos_config! {
    VocabSize "vocab_size" Int Val::Int(32000);
    Dim "dim" Int Val::Int(2048);
    NHeads "n_heads" Int Val::Int(16);
    NKvHeads "n_kv_heads" Int Val::Int(4);
    MaxSeqLen "max_seq_len" Int Val::Int(4096);
    MaxLoopIters "max_loop_iters" Int Val::Int(16);
    PreludeLayers "prelude_layers" Int Val::Int(2);
    CodaLayers "coda_layers" Int Val::Int(2);
    AttnType "attn_type" Attn Val::Attn(Attn::Mla);
    KvLoraRank "kv_lora_rank" Int Val::Int(512);
    QLoraRank "q_lora_rank" Int Val::Int(1536);
    QkRopeHeadDim "qk_rope_head_dim" Int Val::Int(64);
    QkNopeHeadDim "qk_nope_head_dim" Int Val::Int(128);
    VHeadDim "v_head_dim" Int Val::Int(128);
    NExperts "n_experts" Int Val::Int(64);
    NSharedExperts "n_shared_experts" Int Val::Int(2);
    NExpertsPerTok "n_experts_per_tok" Int Val::Int(4);
    ExpertDim "expert_dim" Int Val::Int(512);
    ActThreshold "act_threshold" Float Val::Float(0.99);
    RopeTheta "rope_theta" Float Val::Float(500000.0);
    LoraRank "lora_rank" Int Val::Int(16);
    MaxOutputTokens "max_output_tokens" Int Val::Int(4096);
    Dropout "dropout" Float Val::Float(0.0);
}

/// One value per config field, indexed by [`Key`].
#[derive(Clone, Debug)]
struct PerKey<T>(Vec<T>);

impl<T> PerKey<T> {
    fn from_fn(f: impl FnMut(&Key) -> T) -> PerKey<T> {
        PerKey(Key::ALL.iter().map(f).collect())
    }
}

impl<T> std::ops::Index<Key> for PerKey<T> {
    type Output = T;
    fn index(&self, k: Key) -> &T {
        &self.0[k as usize]
    }
}

impl<T> std::ops::IndexMut<Key> for PerKey<T> {
    fn index_mut(&mut self, k: Key) -> &mut T {
        &mut self.0[k as usize]
    }
}

/// The MLA-only fields, which a GQA config cannot keep.
const MLA_FIELDS: [Key; 5] = [
    Key::KvLoraRank,
    Key::QLoraRank,
    Key::QkRopeHeadDim,
    Key::QkNopeHeadDim,
    Key::VHeadDim,
];

/// Most blocks a `prelude N x ...` or `coda N x ...` may repeat (as the checker).
const MAX_LAYERS: i64 = 4096;

/// OpenMythos constants that a spec can change but a `MythosConfig` cannot.
const LOOP_EMBEDDING_THETA: f64 = 10000.0;
const NORM_EPS: f64 = 1e-6;
/// `n_kv_heads` written for an MLA model that does not give `kv_heads`.
const MLA_DEFAULT_KV_HEADS: u64 = 4;

fn field_names() -> impl Iterator<Item = &'static str> + Clone {
    Key::ALL.iter().map(|k| k.name())
}

// ------------------------------------------------------------------- import

/// Turns the JSON of a `MythosConfig` into a checked `.mythos` spec.
///
/// `json` is added to `sources` under `name`; every diagnostic points into it
/// (a problem the checker finds in a part of the spec that no config field
/// wrote is shown in the generated text, added as `imported.mythos`). All
/// problems are reported together. `model_name` is made a valid name
/// (`openmythos-1b` becomes `openmythos_1b`).
pub fn import(
    sources: &mut SourceMap,
    name: &str,
    json: &str,
    model_name: &str,
) -> Result<Imported, Vec<Diagnostic>> {
    let file = sources.add(name, json);
    let root: Value = match serde_json::from_str(json) {
        Ok(v) => v,
        Err(e) => return Err(vec![invalid_json(file, json, &e)]),
    };
    let whole = trimmed_span(file, json);
    if !root.is_object() {
        return Err(vec![Diagnostic::error(
            Code::BadConfigField,
            format!(
                "a MythosConfig must be a JSON object, found {}",
                describe(&root)
            ),
        )
        .label(whole, "expected `{ \"vocab_size\": ..., ... }`")
        .help(
            "write the config with `json.dump(dataclasses.asdict(config), f, indent=2)`",
        )]);
    }

    let mut diags = Vec::new();
    let config = read_fields(file, json, whole, &mut diags);
    let spec_text = generate(&config, model_name, name);
    if config.attn() == Attn::Gqa {
        gqa_ignores_mla_fields(&config, &mut diags);
    }
    check_generated(sources, &spec_text, &config, &mut diags);

    diag::sort_and_dedup(&mut diags);
    if diags.iter().any(Diagnostic::is_error) {
        Err(diags)
    } else {
        // The checked text, laid out as `mythos fmt` would (long field lists
        // one field per line); formatting cannot fail on text that checked.
        let spec = crate::fmt::format_source(crate::FileId::default(), &spec_text.text)
            .unwrap_or(spec_text.text);
        Ok(Imported {
            spec,
            warnings: diags,
        })
    }
}

/// The config's fields, each with where it was written.
struct Config {
    values: PerKey<Val>,
    /// Where each value is written; `None` when the field is missing.
    spans: PerKey<Option<Span>>,
    /// Fields that were missing or unusable and hold their default instead.
    substituted: PerKey<bool>,
    /// The whole top-level object.
    whole: Span,
}

impl Config {
    fn int(&self, i: Key) -> i64 {
        match self.values[i] {
            Val::Int(v) => v,
            _ => unreachable!("field {} is an integer", i.name()),
        }
    }

    fn float(&self, i: Key) -> f64 {
        match self.values[i] {
            Val::Float(v) => v,
            _ => unreachable!("field {} is a float", i.name()),
        }
    }

    fn attn(&self) -> Attn {
        match self.values[Key::AttnType] {
            Val::Attn(a) => a,
            _ => unreachable!("attn_type is an attention type"),
        }
    }

    /// The value's span, or the whole object for a missing field.
    fn span(&self, i: Key) -> Span {
        self.spans[i].unwrap_or(self.whole)
    }
}

/// E0401 at the byte where serde_json gave up.
fn invalid_json(file: FileId, text: &str, e: &serde_json::Error) -> Diagnostic {
    let full = e.to_string();
    let message = match full.rfind(" at line ") {
        Some(i) => &full[..i],
        None => full.as_str(),
    };
    let mut offset = if e.is_eof() {
        text.len()
    } else {
        byte_offset(text, e.line(), e.column())
    };
    let trailing_comma = message.contains("trailing comma");
    if trailing_comma {
        // serde_json stops at the `}` or `]`; the comma before it is the mistake.
        if let Some(comma) = text[..offset].trim_end().strip_suffix(',') {
            offset = comma.len();
        }
    }
    let end = text[offset..]
        .chars()
        .next()
        .map_or(offset, |c| offset + c.len_utf8());
    let rest = &text[offset..];
    let help = if trailing_comma {
        "JSON allows no comma after the last item of an object or array".to_string()
    } else if text.trim().is_empty() {
        "the file is empty; an OpenMythos config is a JSON object of MythosConfig fields"
            .to_string()
    } else if e.is_eof() {
        "the text ends before the JSON is complete; is a closing `}` missing?".to_string()
    } else if rest.starts_with('\'') {
        "JSON strings and keys are written in double quotes".to_string()
    } else if ["NaN", "Infinity", "-Infinity"]
        .iter()
        .any(|w| rest.starts_with(w))
    {
        "JSON has no NaN or Infinity; every MythosConfig number must be finite".to_string()
    } else if ["True", "False", "None"]
        .iter()
        .any(|w| rest.starts_with(w))
    {
        "this is Python syntax, not JSON; write the config with `json.dump(dataclasses.asdict(config), f, indent=2)`".to_string()
    } else if message.contains("key must be a string") {
        "object keys are double-quoted strings: `\"dim\": 2048`".to_string()
    } else {
        "an OpenMythos config file is the JSON of `dataclasses.asdict(MythosConfig(...))`"
            .to_string()
    };
    let label = if trailing_comma {
        "remove this comma"
    } else if e.is_eof() {
        "the text ends here"
    } else {
        "JSON parsing stops here"
    };
    Diagnostic::error(Code::InvalidJson, format!("invalid JSON: {message}"))
        .label(Span::new(file, offset, end), label)
        .help(help)
}

/// Byte offset of serde_json's 1-based line and (byte) column; column 0 is the
/// start of the line (serde_json says so at the end of the text).
fn byte_offset(text: &str, line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        text.match_indices('\n')
            .nth(line - 2)
            .map_or(text.len(), |(i, _)| i + 1)
    };
    let mut offset = (line_start + column.saturating_sub(1)).min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    offset
}

/// The span of the text without surrounding whitespace.
fn trimmed_span(file: FileId, text: &str) -> Span {
    let start = text.len() - text.trim_start().len();
    let end = text.trim_end().len().max(start);
    Span::new(file, start, end)
}

fn describe(v: &Value) -> String {
    match v {
        Value::Null => "`null`".to_string(),
        Value::Bool(b) => format!("a boolean (`{b}`)"),
        Value::Number(n) => format!("a number (`{n}`)"),
        Value::String(_) => "a string".to_string(),
        Value::Array(_) => "an array".to_string(),
        Value::Object(_) => "an object".to_string(),
    }
}

/// One `"key": value` of the top-level object, as byte ranges.
struct Entry {
    key: Range<usize>,
    value: Range<usize>,
}

/// The entries of the top-level object of valid JSON text, in order
/// (duplicates included, which a parsed `Value` would hide).
fn scan_entries(text: &str) -> Vec<Entry> {
    let b = text.as_bytes();
    let mut i = skip_ws(b, 0);
    let mut out = Vec::new();
    if b.get(i) != Some(&b'{') {
        return out;
    }
    i = skip_ws(b, i + 1);
    while i < b.len() && b[i] == b'"' {
        let key_end = skip_value(b, i);
        let key = i..key_end;
        i = skip_ws(b, key_end);
        // The text is valid JSON, so a `:` follows the key.
        i = skip_ws(b, i + 1);
        let value_end = skip_value(b, i);
        out.push(Entry {
            key,
            value: i..value_end,
        });
        i = skip_ws(b, value_end);
        if b.get(i) == Some(&b',') {
            i = skip_ws(b, i + 1);
        } else {
            break;
        }
    }
    out
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// The end of the JSON value starting at `i` (valid JSON assumed).
fn skip_value(b: &[u8], start: usize) -> usize {
    let mut i = start;
    let mut depth = 0usize;
    while i < b.len() {
        match b[i] {
            b'"' => {
                i += 1;
                while i < b.len() && b[i] != b'"' {
                    i += if b[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
                if depth == 0 {
                    return i.min(b.len());
                }
                continue;
            }
            b'{' | b'[' => depth += 1,
            b'}' | b']' => {
                if depth == 0 {
                    return i;
                }
                depth -= 1;
                if depth == 0 {
                    return i + 1;
                }
            }
            b',' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => return i,
            _ => {}
        }
        i += 1;
    }
    i
}

/// Reads and type-checks every field (E0402, E0204); missing or unusable
/// fields get their defaults and are marked as substituted.
fn read_fields(file: FileId, json: &str, whole: Span, diags: &mut Vec<Diagnostic>) -> Config {
    let mut config = Config {
        values: PerKey::from_fn(|k| k.default()),
        spans: PerKey::from_fn(|_| None),
        substituted: PerKey::from_fn(|_| false),
        whole,
    };
    let mut seen: PerKey<Option<Span>> = PerKey::from_fn(|_| None);
    for entry in scan_entries(json) {
        let key_span = Span::new(file, entry.key.start, entry.key.end);
        let value_span = Span::new(file, entry.value.start, entry.value.end);
        let key: String = serde_json::from_str(&json[entry.key.clone()]).unwrap_or_default();
        let Some(&i) = Key::ALL.iter().find(|k| k.name() == key) else {
            diags.push(
                Diagnostic::error(
                    Code::BadConfigField,
                    format!("`{key}` is not a MythosConfig field"),
                )
                .label(key_span, "unknown field")
                .help(suggest::help_for(
                    &key,
                    "MythosConfig fields",
                    field_names(),
                )),
            );
            continue;
        };
        if let Some(first) = seen[i] {
            diags.push(
                Diagnostic::error(Code::BadConfigField, format!("`{key}` is given twice"))
                    .label(key_span, "given again here")
                    .secondary(first, "first given here")
                    .help("remove one of them (Python would silently keep the last)"),
            );
            continue;
        }
        seen[i] = Some(key_span);
        config.spans[i] = Some(value_span);
        let raw = &json[entry.value.clone()];
        match read_value(i, raw, value_span) {
            Ok(v) => config.values[i] = v,
            Err(d) => {
                diags.push(d);
                config.substituted[i] = true;
            }
        }
    }
    for &f in Key::ALL {
        if seen[f].is_none() {
            config.substituted[f] = true;
            diags.push(
                Diagnostic::error(
                    Code::BadConfigField,
                    format!("the MythosConfig field `{}` is missing", f.name()),
                )
                .label(whole, format!("this config has no `{}`", f.name()))
                .help(format!(
                    "add `\"{}\": {}` (the MythosConfig default); every field of `dataclasses.asdict` is expected",
                    f.name(),
                    json_value(f.default())
                )),
            );
        }
    }
    // The counts of `prelude N x ...` and `coda N x ...` are literals in a spec.
    for i in [Key::PreludeLayers, Key::CodaLayers] {
        if config.substituted[i] {
            continue;
        }
        let n = config.int(i);
        if !(0..=MAX_LAYERS).contains(&n) {
            diags.push(
                Diagnostic::error(
                    Code::OutOfRange,
                    format!("`{}` must be from 0 to {MAX_LAYERS}, found {n}", i.name()),
                )
                .label(config.span(i), "layer count out of range")
                .help(format!(
                    "`{}` is the number of dense blocks; 0 means none",
                    i.name()
                )),
            );
            config.substituted[i] = true;
            config.values[i] = i.default();
        }
    }
    // A bad attention type leaves it unknown which attention fields matter.
    if config.substituted[Key::AttnType] {
        for i in [Key::NKvHeads].into_iter().chain(MLA_FIELDS) {
            config.substituted[i] = true;
        }
    }
    config
}

/// One field's value from its JSON text, or E0402/E0204 at the value.
fn read_value(field: Key, raw: &str, span: Span) -> Result<Val, Diagnostic> {
    let value: Value = serde_json::from_str(raw).unwrap_or(Value::Null);
    let name = field.name();
    let wrong = |wanted: &str, help: String| {
        Diagnostic::error(
            Code::BadConfigField,
            format!("`{name}` must be {wanted}, found {}", describe(&value)),
        )
        .label(span, format!("expected {wanted}"))
        .help(help)
    };
    let declared = match field.ty() {
        Ty::Int => "int",
        Ty::Float => "float",
        Ty::Attn => "str",
    };
    let type_help = || {
        let quoted = match &value {
            Value::String(s) if s.trim().parse::<f64>().is_ok() => {
                format!("remove the quotes: `{}`; ", s.trim())
            }
            _ => String::new(),
        };
        format!(
            "{quoted}MythosConfig declares `{name}: {declared}` (default `{}`)",
            json_value(field.default())
        )
    };
    match field.ty() {
        Ty::Int => match &value {
            Value::Number(n) => {
                if let Some(v) = n.as_i64() {
                    Ok(Val::Int(v))
                } else if !raw.contains(['.', 'e', 'E']) {
                    Err(Diagnostic::error(
                        Code::OutOfRange,
                        format!("`{name}` is too large: {raw}"),
                    )
                    .label(span, "does not fit in a 64-bit integer")
                    .help("sizes, counts and lengths must be at most 9223372036854775807"))
                } else {
                    let f = n.as_f64().unwrap_or(f64::NAN);
                    let help = if f.fract() == 0.0 && f.abs() < 9.0e15 {
                        format!("write it without a fraction or exponent: `{}`", f as i64)
                    } else {
                        format!("MythosConfig declares `{name}: int`")
                    };
                    Err(wrong("an integer", help))
                }
            }
            _ => Err(wrong("an integer", type_help())),
        },
        Ty::Float => match &value {
            // The raw text, parsed by Rust, is correctly rounded (serde_json's
            // default float parsing may be off by one unit in the last place).
            Value::Number(_) => match raw.parse::<f64>() {
                Ok(v) if v.is_finite() => Ok(Val::Float(v)),
                _ => Err(wrong("a finite number", type_help())),
            },
            _ => Err(wrong("a number", type_help())),
        },
        Ty::Attn => match &value {
            Value::String(s) if s == "gqa" => Ok(Val::Attn(Attn::Gqa)),
            Value::String(s) if s == "mla" => Ok(Val::Attn(Attn::Mla)),
            Value::String(s) => Err(Diagnostic::error(
                Code::BadConfigField,
                format!("unknown attention type `{s}`"),
            )
            .label(span, "expected \"gqa\" or \"mla\"")
            .help(suggest::help_for(s, "attention types", ["gqa", "mla"]))),
            _ => Err(wrong("a string", type_help())),
        },
    }
}

/// Warns that the MLA fields of a GQA config are not kept.
fn gqa_ignores_mla_fields(config: &Config, diags: &mut Vec<Diagnostic>) {
    let differing: Vec<Key> = MLA_FIELDS
        .into_iter()
        .filter(|&i| !config.substituted[i] && config.values[i] != i.default())
        .collect();
    if differing.is_empty() {
        return;
    }
    let names: Vec<String> = differing
        .iter()
        .map(|&i| format!("`{}`", i.name()))
        .collect();
    let mut d = Diagnostic::error(
        Code::BadConfigField,
        format!(
            "{} {} ignored by GQA attention and not kept",
            names.join(", "),
            if differing.len() == 1 { "is" } else { "are" }
        ),
    );
    d.severity = Severity::Warning;
    for &i in &differing {
        d = d.label(
            config.span(i),
            format!(
                "MLA only; exporting writes the default {}",
                json_value(i.default())
            ),
        );
    }
    d = d.secondary(config.span(Key::AttnType), "the attention is GQA");
    diags.push(d.help(
        "set them to the MythosConfig defaults (kv_lora_rank 512, q_lora_rank 1536, \
         qk_rope_head_dim 64, qk_nope_head_dim 128, v_head_dim 128) to silence this, \
         or use \"attn_type\": \"mla\"",
    ));
}

/// A piece of generated spec text and the config field it was written from.
struct Mark {
    range: Range<usize>,
    /// `None`: the model as a whole (its name).
    field: Option<Key>,
    /// Said when a checker error points here.
    note: Option<String>,
}

struct SpecText {
    text: String,
    marks: Vec<Mark>,
}

impl SpecText {
    fn push(&mut self, s: &str) {
        self.text.push_str(s);
    }

    /// Writes `s`, remembering that it comes from `field`.
    fn mark(&mut self, s: &str, field: Option<Key>, note: Option<String>) {
        let start = self.text.len();
        self.text.push_str(s);
        self.marks.push(Mark {
            range: start..self.text.len(),
            field,
            note,
        });
    }

    /// `key = value` written from config field `i`.
    fn item(&mut self, key: &str, value: String, i: Key) {
        let note = (key != i.name()).then(|| {
            format!(
                "`{key}` in the generated spec is the config's `{}`",
                i.name()
            )
        });
        self.mark(&format!("{key} = {value}"), Some(i), note);
    }
}

/// The spec in the layout of `models/openmythos-1b.mythos`.
fn generate(c: &Config, model_name: &str, file_name: &str) -> SpecText {
    let mut s = SpecText {
        text: String::new(),
        marks: Vec::new(),
    };
    let origin: String = file_name
        .chars()
        .map(|ch| if ch.is_control() { ' ' } else { ch })
        .collect();
    s.push(&format!(
        "# Imported from {origin} (OpenMythos MythosConfig).\nmodel "
    ));
    s.mark(&spec_name(model_name), None, None);
    s.push(" {\n");
    let int = |i: Key| c.int(i).to_string();
    let float = |i: Key| py_float(c.float(i));
    for (key, i, value) in [
        ("vocab", Key::VocabSize, int(Key::VocabSize)),
        ("dim", Key::Dim, int(Key::Dim)),
        ("max_seq", Key::MaxSeqLen, int(Key::MaxSeqLen)),
        ("rope_theta", Key::RopeTheta, float(Key::RopeTheta)),
        (
            "max_output_tokens",
            Key::MaxOutputTokens,
            int(Key::MaxOutputTokens),
        ),
        ("dropout", Key::Dropout, float(Key::Dropout)),
    ] {
        s.push("  ");
        s.item(key, value, i);
        s.push("\n");
    }

    s.push("\n  ");
    let attn_note = Some("the attention kind is the config's `attn_type`".to_string());
    match c.attn() {
        Attn::Gqa => {
            s.mark("attention gqa", Some(Key::AttnType), attn_note);
            s.push(" { ");
            s.item("heads", int(Key::NHeads), Key::NHeads);
            s.push(", ");
            s.item("kv_heads", int(Key::NKvHeads), Key::NKvHeads);
        }
        Attn::Mla => {
            s.mark("attention mla", Some(Key::AttnType), attn_note);
            s.push(" { ");
            for (n, (key, i)) in [
                ("heads", Key::NHeads),
                ("kv_heads", Key::NKvHeads),
                ("q_rank", Key::QLoraRank),
                ("kv_rank", Key::KvLoraRank),
                ("rope_dim", Key::QkRopeHeadDim),
                ("nope_dim", Key::QkNopeHeadDim),
                ("v_dim", Key::VHeadDim),
            ]
            .into_iter()
            .enumerate()
            {
                if n > 0 {
                    s.push(", ");
                }
                s.item(key, int(i), i);
            }
        }
    }
    s.push(" }\n");
    let (prelude, coda) = (c.int(Key::PreludeLayers), c.int(Key::CodaLayers));
    if prelude > 0 || coda > 0 {
        s.push("  ffn dense { ");
        s.mark(
            "hidden = dim * 4 // 3",
            Some(Key::Dim),
            Some("OpenMythos's dense blocks have a hidden size of dim * 4 // 3".to_string()),
        );
        s.push(" }\n");
    }
    s.push("  ffn moe { ");
    s.item("experts", int(Key::NExperts), Key::NExperts);
    s.push(", ");
    s.item("shared", int(Key::NSharedExperts), Key::NSharedExperts);
    s.push(", ");
    s.item("top_k", int(Key::NExpertsPerTok), Key::NExpertsPerTok);
    s.push(", ");
    s.item("expert_dim", int(Key::ExpertDim), Key::ExpertDim);
    s.push(" }\n\n");

    if prelude > 0 {
        s.push("  prelude ");
        s.mark(&int(Key::PreludeLayers), Some(Key::PreludeLayers), None);
        s.push(" x block(attention, dense)\n");
    }
    s.push("  loop max ");
    s.mark(
        &int(Key::MaxLoopIters),
        Some(Key::MaxLoopIters),
        Some("the loop's `max` is the config's `max_loop_iters`".to_string()),
    );
    s.push(" {\n    block(attention, moe)\n    inject lti\n    halt act { ");
    s.item("threshold", float(Key::ActThreshold), Key::ActThreshold);
    s.push(" }\n    lora { ");
    s.item("rank", int(Key::LoraRank), Key::LoraRank);
    s.push(" }\n    loop_embedding { ");
    s.mark(
        "channels = dim // 8",
        Some(Key::Dim),
        Some("OpenMythos adds the loop-index embedding to the first dim // 8 channels".to_string()),
    );
    s.push(" }\n  }\n");
    if coda > 0 {
        s.push("  coda ");
        s.mark(&int(Key::CodaLayers), Some(Key::CodaLayers), None);
        s.push(" x block(attention, dense)\n");
    }
    s.push("}\n");
    s
}

/// `model_name` as a spec name: other characters become `_`, a leading digit
/// or a keyword gets a `_`.
fn spec_name(model_name: &str) -> String {
    let mut name: String = model_name
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || ch == '_' {
                ch
            } else {
                '_'
            }
        })
        .collect();
    if name.is_empty() || name.starts_with(|ch: char| ch.is_ascii_digit()) {
        name.insert(0, '_');
    }
    if crate::syntax::KEYWORDS.contains(&name.as_str()) {
        name.push('_');
    }
    name
}

/// Checks the generated spec; its diagnostics are moved onto the JSON values
/// they come from. Diagnostics about a field that was missing or unusable
/// (and so holds a stand-in default) are dropped: they would be about a value
/// the user did not write.
fn check_generated(
    sources: &mut SourceMap,
    spec: &SpecText,
    config: &Config,
    diags: &mut Vec<Diagnostic>,
) {
    const NAME: &str = "imported.mythos";
    let mut loader = sema::Loader::in_memory();
    loader.add_virtual(NAME, spec.text.clone().into_bytes());
    let checked = sema::check_file(&mut loader, NAME);
    let generated = loader
        .sources
        .files()
        .find(|(_, f)| f.name == NAME)
        .map(|(id, _)| id);
    let mut spec_file: Option<FileId> = None;
    'diags: for mut d in checked.diagnostics {
        let mut notes = Vec::new();
        for label in &mut d.labels {
            if Some(label.span.file) != generated {
                continue;
            }
            let range = label.span.range();
            let mark = spec
                .marks
                .iter()
                .filter(|m| m.range.start <= range.start && range.end <= m.range.end)
                .min_by_key(|m| m.range.len());
            match mark {
                Some(m) => {
                    if let Some(i) = m.field {
                        if config.substituted[i] {
                            continue 'diags;
                        }
                    }
                    label.span = m.field.map_or(config.whole, |i| config.span(i));
                    if let Some(n) = &m.note {
                        if !notes.contains(n) {
                            notes.push(n.clone());
                        }
                    }
                }
                None => {
                    let id = *spec_file.get_or_insert_with(|| sources.add(NAME, spec.text.clone()));
                    label.span.file = id;
                }
            }
        }
        d.notes.extend(notes);
        diags.push(d);
    }
}

// ------------------------------------------------------------------- export

/// The model as the pretty JSON of a `MythosConfig` (what Python's
/// `json.dumps(dataclasses.asdict(config), indent=2)` writes, plus a newline).
/// E0403, one per reason, when the model is not shaped like OpenMythos.
pub fn export(model: &Model) -> Result<String, Vec<Diagnostic>> {
    let mut errors = Vec::new();
    let mut not = |message: String, help: String| {
        errors.push(
            Diagnostic::error(Code::NotExportable, message)
                .label(
                    model.span,
                    "this model is not expressible as a MythosConfig",
                )
                .help(help),
        );
    };
    let dim = model.dim;
    let dense_hidden = dim * 4 / 3;
    let rec = &model.recurrence;

    // One attention configuration everywhere.
    let blocks: Vec<&Block> = model
        .prelude
        .iter()
        .chain(&rec.body)
        .chain(&model.coda)
        .collect();
    let attention = blocks.first().map(|b| &b.attention);
    if let Some(a) = attention {
        if let Some(other) = blocks.iter().find(|b| b.attention.kind != a.kind) {
            not(
                format!(
                    "the blocks use different attentions (`{}` and `{}`)",
                    a.name, other.attention.name
                ),
                "a MythosConfig has one attention configuration for every block; use one `attention` definition".to_string(),
            );
        }
    }
    if let Some(b) = blocks
        .iter()
        .find(|b| matches!(b.attention.kind, AttentionKind::Mha { .. }))
    {
        let h = b.attention.kind.heads();
        not(
            format!("attention `{}` is MHA, which OpenMythos does not have", b.attention.name),
            format!("write `attention gqa {{ heads = {h}, kv_heads = {h} }}` (the same computation) or use `mla`"),
        );
    }

    // Dense prelude and coda blocks.
    for (stage, list) in [("prelude", &model.prelude), ("coda", &model.coda)] {
        for (i, b) in list.iter().enumerate() {
            match b.ffn.kind {
                FfnKind::Dense { hidden } if hidden == dense_hidden => continue,
                FfnKind::Dense { hidden } => not(
                    format!(
                        "{stage} block {i} has a dense hidden size of {hidden}; OpenMythos uses dim * 4 // 3 = {dense_hidden}"
                    ),
                    format!("remove `hidden` from `ffn {}` (it defaults to dim * 4 // 3)", b.ffn.name),
                ),
                FfnKind::Moe { .. } => not(
                    format!("{stage} block {i} uses the MoE FFN `{}`; OpenMythos's {stage} blocks are dense", b.ffn.name),
                    format!("use a dense FFN in the {stage}: `block(attention, dense)`"),
                ),
            }
            break;
        }
    }

    // One looped MoE block.
    if rec.body.len() != 1 {
        not(
            format!(
                "the loop has {} blocks; OpenMythos loops exactly one",
                rec.body.len()
            ),
            "loop one block: `block(attention, moe)`".to_string(),
        );
    }
    let moe = match rec.body.first().map(|b| (&b.ffn.name, &b.ffn.kind)) {
        Some((
            name,
            &FfnKind::Moe {
                experts,
                shared,
                top_k,
                expert_dim,
                shared_dim,
                router_bias,
            },
        )) => {
            if shared_dim != expert_dim * top_k {
                not(
                    format!(
                        "the shared experts of `{name}` have a hidden size of {shared_dim}; OpenMythos uses expert_dim * top_k = {}",
                        expert_dim * top_k
                    ),
                    format!("remove `shared_dim` from `ffn {name}`"),
                );
            }
            if !router_bias {
                not(
                    format!("the router of `{name}` has no selection bias; OpenMythos's has one"),
                    format!("remove `router_bias = false` from `ffn {name}`"),
                );
            }
            Some((experts, shared, top_k, expert_dim))
        }
        Some((name, FfnKind::Dense { .. })) => {
            not(
                format!("the loop block uses the dense FFN `{name}`; OpenMythos's recurrent block is a MoE"),
                "use `block(attention, moe)` with an `ffn moe { ... }` definition".to_string(),
            );
            None
        }
        None => None,
    };

    if rec.inject != Injection::Lti {
        not(
            format!(
                "the loop uses `inject {}`; OpenMythos injects the input with `lti`",
                rec.inject.name()
            ),
            "write `inject lti` in the loop".to_string(),
        );
    }
    let threshold = match rec.halt {
        Halting::Act { threshold } => Some(threshold),
        Halting::None => {
            not(
                "the loop does not halt; OpenMythos uses ACT halting".to_string(),
                "add `halt act { threshold = 0.99 }` to the loop".to_string(),
            );
            None
        }
    };
    match rec.loop_embedding {
        None => not(
            "the loop has no loop-index embedding; OpenMythos adds one".to_string(),
            "add `loop_embedding { channels = dim // 8 }` to the loop".to_string(),
        ),
        Some(e) => {
            if e.channels != dim / 8 {
                not(
                    format!(
                        "the loop embedding has {} channels; OpenMythos uses dim // 8 = {}",
                        e.channels,
                        dim / 8
                    ),
                    "write `loop_embedding { channels = dim // 8 }`".to_string(),
                );
            }
            if e.theta != LOOP_EMBEDDING_THETA {
                not(
                    format!(
                        "the loop embedding has theta = {}; OpenMythos uses 10000.0",
                        py_float(e.theta)
                    ),
                    "remove `theta` from `loop_embedding` (it defaults to 10000.0)".to_string(),
                );
            }
        }
    }
    if !model.tie_embeddings {
        not(
            "the output head is not tied to the embedding; OpenMythos ties them".to_string(),
            "remove `tie_embeddings = false`".to_string(),
        );
    }
    if model.norm_eps != NORM_EPS {
        not(
            format!(
                "`norm_eps` is {}; OpenMythos's RMSNorm uses 1e-6",
                py_float(model.norm_eps)
            ),
            "remove `norm_eps` (it defaults to 1e-6)".to_string(),
        );
    }
    for (what, v) in [
        ("rope_theta", Some(model.rope_theta)),
        ("dropout", Some(model.dropout)),
        ("the halting threshold", threshold),
    ] {
        if let Some(v) = v.filter(|v| !v.is_finite()) {
            not(
                format!("{what} is {v}, which JSON cannot write"),
                "use a finite number".to_string(),
            );
        }
    }

    let (Some(attention), Some((experts, shared, top_k, expert_dim)), Some(threshold), true) =
        (attention, moe, threshold, errors.is_empty())
    else {
        return Err(errors);
    };

    let defaults = |i: Key| match i.default() {
        Val::Int(v) => v as u64,
        _ => unreachable!("MLA fields are integers"),
    };
    let (attn, heads, kv_heads, kv_rank, q_rank, rope, nope, v_dim) = match attention.kind {
        AttentionKind::Mla {
            heads,
            kv_heads,
            q_rank,
            kv_rank,
            rope_dim,
            nope_dim,
            v_dim,
        } => (
            Attn::Mla,
            heads,
            kv_heads.unwrap_or(MLA_DEFAULT_KV_HEADS),
            kv_rank,
            q_rank,
            rope_dim,
            nope_dim,
            v_dim,
        ),
        AttentionKind::Gqa { heads, kv_heads } => (
            Attn::Gqa,
            heads,
            kv_heads,
            defaults(Key::KvLoraRank),
            defaults(Key::QLoraRank),
            defaults(Key::QkRopeHeadDim),
            defaults(Key::QkNopeHeadDim),
            defaults(Key::VHeadDim),
        ),
        AttentionKind::Mha { .. } => unreachable!("MHA is rejected above"),
    };
    let value = |k: Key| match k {
        Key::VocabSize => model.vocab.to_string(),
        Key::Dim => dim.to_string(),
        Key::NHeads => heads.to_string(),
        Key::NKvHeads => kv_heads.to_string(),
        Key::MaxSeqLen => model.max_seq.to_string(),
        Key::MaxLoopIters => rec.max_iters.to_string(),
        Key::PreludeLayers => model.prelude.len().to_string(),
        Key::CodaLayers => model.coda.len().to_string(),
        Key::AttnType => format!("\"{}\"", attn.name()),
        Key::KvLoraRank => kv_rank.to_string(),
        Key::QLoraRank => q_rank.to_string(),
        Key::QkRopeHeadDim => rope.to_string(),
        Key::QkNopeHeadDim => nope.to_string(),
        Key::VHeadDim => v_dim.to_string(),
        Key::NExperts => experts.to_string(),
        Key::NSharedExperts => shared.to_string(),
        Key::NExpertsPerTok => top_k.to_string(),
        Key::ExpertDim => expert_dim.to_string(),
        Key::ActThreshold => py_float(threshold),
        Key::RopeTheta => py_float(model.rope_theta),
        Key::LoraRank => rec.lora_rank.to_string(),
        Key::MaxOutputTokens => model.max_output_tokens.to_string(),
        Key::Dropout => py_float(model.dropout),
    };
    let body: Vec<String> = Key::ALL
        .iter()
        .map(|&k| format!("  \"{}\": {}", k.name(), value(k)))
        .collect();
    Ok(format!("{{\n{}\n}}\n", body.join(",\n")))
}

/// A default as JSON.
fn json_value(v: Val) -> String {
    match v {
        Val::Int(i) => i.to_string(),
        Val::Float(f) => py_float(f),
        Val::Attn(a) => format!("\"{}\"", a.name()),
    }
}

/// A float as Python's `repr` writes it (and so `json.dumps`): the shortest
/// digits that read back as the same number, positional from 1e-4 up to 1e16
/// with at least one digit after the point (`500000.0`, `0.0001`), else in
/// exponent form with a signed, at least two-digit exponent (`1e-05`,
/// `1e+16`). Every such text is also a `.mythos` float literal (a leading `-`
/// aside, which the spec reads as negation).
fn py_float(v: f64) -> String {
    if !v.is_finite() {
        return format!("{v}");
    }
    if v == 0.0 {
        return if v.is_sign_negative() { "-0.0" } else { "0.0" }.to_string();
    }
    // `{:e}` writes the shortest round-tripping digits: `9.9e-1`, `5e5`.
    let exp_form = format!("{:e}", v.abs());
    let (mantissa, exp) = exp_form.split_once('e').expect("`{:e}` writes an exponent");
    let exp: i32 = exp.parse().expect("`{:e}` writes an integer exponent");
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    let sign = if v < 0.0 { "-" } else { "" };
    let n = digits.len() as i32;
    // Python's rule: positional when -4 <= exp < 16.
    if (-4..16).contains(&exp) {
        let point = exp + 1;
        let text = if point <= 0 {
            format!("0.{}{digits}", "0".repeat((-point) as usize))
        } else if point >= n {
            format!("{digits}{}.0", "0".repeat((point - n) as usize))
        } else {
            let (int, frac) = digits.split_at(point as usize);
            format!("{int}.{frac}")
        };
        format!("{sign}{text}")
    } else {
        let (first, rest) = digits.split_at(1);
        let frac = if rest.is_empty() {
            String::new()
        } else {
            format!(".{rest}")
        };
        let exp_sign = if exp < 0 { '-' } else { '+' };
        format!("{sign}{first}{frac}e{exp_sign}{:02}", exp.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn floats_are_written_as_python_writes_them() {
        for (v, text) in [
            (0.99, "0.99"),
            (500000.0, "500000.0"),
            (0.0, "0.0"),
            (-0.0, "-0.0"),
            (1e-6, "1e-06"),
            (1e-5, "1e-05"),
            (1e-4, "0.0001"),
            (1e16, "1e+16"),
            (1e15, "1000000000000000.0"),
            (123456789012345678.0, "1.2345678901234568e+17"),
            (0.1, "0.1"),
            (1.5e-7, "1.5e-07"),
            (2.5e300, "2.5e+300"),
            (-12.5, "-12.5"),
            (1.0, "1.0"),
            (0.000123, "0.000123"),
        ] {
            assert_eq!(py_float(v), text, "{v:e}");
        }
    }

    #[test]
    fn spec_names() {
        assert_eq!(spec_name("openmythos-1b"), "openmythos_1b");
        assert_eq!(spec_name("1b"), "_1b");
        assert_eq!(spec_name("loop"), "loop_");
        assert_eq!(spec_name(""), "_");
    }

    #[test]
    fn scanner_finds_entries() {
        let text = r#" { "a" : 1, "b\"c": [1, {"x": "}"}], "d": "s,}" } "#;
        let found: Vec<(&str, &str)> = scan_entries(text)
            .into_iter()
            .map(|e| (&text[e.key], &text[e.value]))
            .collect();
        assert_eq!(
            found,
            [
                ("\"a\"", "1"),
                ("\"b\\\"c\"", "[1, {\"x\": \"}\"}]"),
                ("\"d\"", "\"s,}\"")
            ]
        );
    }
}
