//! The sweep file: TOML in, a checked [`SweepFile`] out. Every problem is a
//! diagnostic (E05xx) with a span in the sweep file, so it renders like a spec
//! error (`error[E0502]: ...` / ` --> sweeps/x.toml:4:1`).
//!
//! Parsing is two steps: [`parse`] checks what the file alone can tell (TOML
//! syntax, keys, axis paths, value types), [`resolve`] what needs the base
//! model (the kind of a definition an axis changes a field of, metric names).

use mythos_compiler::analysis::StorageType;
use mythos_compiler::diag::{Code, Diagnostic};
use mythos_compiler::sema::build::{self, Spec as FieldSpec, Ty};
use mythos_compiler::source::{FileId, Span};
use mythos_compiler::suggest;
use std::collections::BTreeMap;
use std::ops::Range;
use toml::de::{DeTable, DeValue};
use toml::Spanned;

/// Most trials one sweep may plan (a larger grid wants `strategy = "random"`).
pub const MAX_TRIALS: u128 = 1_000_000;
/// Most values one range may expand to.
const MAX_RANGE_VALUES: usize = 10_000;

/// A literal value as written in a spec.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Lit {
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Lit {
    /// The literal in the spec language (`0.9`, `1e-6`, `1024`, `true`).
    pub fn spec_text(self) -> String {
        match self {
            Lit::Int(i) => i.to_string(),
            // Debug keeps a `.` or an exponent, so the spec reads it back as a float.
            Lit::Float(f) => format!("{f:?}"),
            Lit::Bool(b) => b.to_string(),
        }
    }

    pub fn json(self) -> serde_json::Value {
        match self {
            Lit::Int(i) => i.into(),
            Lit::Float(f) => {
                serde_json::Number::from_f64(f).map_or(serde_json::Value::Null, Into::into)
            }
            Lit::Bool(b) => b.into(),
        }
    }

    pub fn as_f64(self) -> f64 {
        match self {
            Lit::Int(i) => i as f64,
            Lit::Float(f) => f,
            Lit::Bool(b) => b as u8 as f64,
        }
    }
}

/// One value of an axis.
#[derive(Clone, Debug, PartialEq)]
pub enum AxisValue {
    Lit(Lit),
    /// A derived value: an expression in the spec language (`dim // 4`),
    /// written into the variant in parentheses and evaluated there.
    Expr(String),
    /// A whole definition or loop feature: a kind (`""` for `lora { .. }`) and fields.
    Kind {
        kind: String,
        fields: Vec<(String, Lit)>,
    },
}

impl AxisValue {
    /// Short text for tables, CSV and plot labels: `8`, `add`, `gqa(heads=16,kv_heads=4)`.
    pub fn label(&self) -> String {
        match self {
            AxisValue::Lit(Lit::Float(f)) => f.to_string(),
            AxisValue::Lit(l) => l.spec_text(),
            AxisValue::Expr(e) => e.clone(),
            AxisValue::Kind { kind, fields } if fields.is_empty() => kind.clone(),
            AxisValue::Kind { kind, fields } => {
                let f: Vec<String> = fields
                    .iter()
                    .map(|(k, v)| format!("{k}={}", v.spec_text()))
                    .collect();
                if kind.is_empty() {
                    f.join(",")
                } else {
                    format!("{kind}({})", f.join(","))
                }
            }
        }
    }

    pub fn json(&self) -> serde_json::Value {
        match self {
            AxisValue::Lit(l) => l.json(),
            AxisValue::Expr(e) => e.clone().into(),
            AxisValue::Kind { kind, fields } if fields.is_empty() => kind.clone().into(),
            AxisValue::Kind { kind, fields } => {
                let mut m = serde_json::Map::new();
                m.insert("kind".into(), kind.clone().into());
                for (k, v) in fields {
                    m.insert(k.clone(), v.json());
                }
                m.into()
            }
        }
    }

    /// The value as the variant spec writes it, for a literal or a derived
    /// value (`8`, `(dim // 4)`); `None` for a kind.
    pub fn spec_text(&self) -> Option<String> {
        match self {
            AxisValue::Lit(l) => Some(l.spec_text()),
            AxisValue::Expr(e) => Some(format!("({e})")),
            AxisValue::Kind { .. } => None,
        }
    }
}

/// Attention or FFN.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Sort {
    Attention,
    Ffn,
}

impl Sort {
    pub fn keyword(self) -> &'static str {
        match self {
            Sort::Attention => "attention",
            Sort::Ffn => "ffn",
        }
    }

    pub fn kinds(self) -> &'static [(&'static str, &'static [FieldSpec])] {
        match self {
            Sort::Attention => build::ATTENTION_KINDS,
            Sort::Ffn => build::FFN_KINDS,
        }
    }
}

/// What an axis changes.
#[derive(Clone)]
pub enum Target {
    /// A model setting: `dim = 1024`.
    Setting(&'static FieldSpec),
    /// `loop max N {}`.
    LoopMax,
    /// A loop feature: its kind (`field: None`) or one of its fields.
    Feature {
        keyword: &'static str,
        kinds: &'static [(&'static str, &'static [FieldSpec])],
        field: Option<&'static FieldSpec>,
        /// The kind written with a field axis (`halt act { threshold = .. }`).
        field_kind: &'static str,
    },
    /// An attention/FFN definition by name: the whole definition or one field.
    Def {
        sort: Sort,
        name: String,
        field: Option<&'static FieldSpec>,
        /// The base model's kind of this definition (set by [`resolve`]).
        base_kind: Option<String>,
    },
}

#[derive(Clone)]
pub struct Axis {
    pub path: String,
    pub span: Span,
    pub target: Target,
    pub values: Vec<AxisValue>,
    /// Axes of one tied group (`"dim, attention.heads" = [[..], ..]`) share
    /// this index and take the same value index in every trial; an untied
    /// axis is a group of its own. Groups are numbered 0.. in file order.
    pub group: usize,
}

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Op {
    Le,
    Lt,
    Ge,
    Gt,
    Eq,
    Ne,
}

impl Op {
    pub fn holds(self, a: f64, b: f64) -> bool {
        match self {
            Op::Le => a <= b,
            Op::Lt => a < b,
            Op::Ge => a >= b,
            Op::Gt => a > b,
            Op::Eq => a == b,
            Op::Ne => a != b,
        }
    }
}

/// `METRIC OP NUMBER`.
#[derive(Clone, Debug)]
pub struct Constraint {
    pub text: String,
    pub metric: String,
    pub op: Op,
    pub value: f64,
    /// The metric name inside the string.
    pub span: Span,
}

impl Constraint {
    /// `None` when it holds, else why not.
    pub fn violation(&self, metrics: &BTreeMap<String, f64>) -> Option<String> {
        match metrics.get(&self.metric) {
            None => Some(format!("{} (no metric `{}`)", self.text, self.metric)),
            Some(&v) if self.op.holds(v, self.value) => None,
            Some(&v) => Some(format!("{} ({} = {v})", self.text, self.metric)),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Objective {
    pub metric: String,
    pub maximize: bool,
    pub span: Span,
}

impl Objective {
    pub fn describe(&self) -> String {
        format!(
            "{} {}",
            if self.maximize {
                "maximize"
            } else {
                "minimize"
            },
            self.metric
        )
    }
}

#[derive(Clone, Debug, PartialEq)]
pub enum Strategy {
    Grid,
    Random { seed: u64, budget: u64 },
}

/// `[options]`: what `mythos inspect` takes.
#[derive(Clone, Copy, Debug)]
pub struct TrialOptions {
    pub seq: u64,
    pub loops: Option<u64>,
    pub dtype: StorageType,
    pub bandwidth: f64,
    /// `measure = ["cpu"]`: time each trial on the CPU runtime (random weights).
    pub measure_cpu: bool,
    /// Prompt length and decode steps of the measurement.
    pub measure_seq: usize,
    pub measure_decode: usize,
}

/// The metrics `measure = ["cpu"]` adds to every analysed trial.
pub const CPU_METRICS: &[&str] = &[
    "cpu.prefill_ms",
    "cpu.prefill_tokens_per_s",
    "cpu.decode_ms_per_token",
    "cpu.decode_tokens_per_s",
];

impl TrialOptions {
    /// The part of a trial's identity that is not its spec.
    pub fn key(&self) -> String {
        format!(
            "seq={};loops={};dtype={:?};bandwidth={:?}{}",
            self.seq,
            self.loops.map_or("max".to_string(), |l| l.to_string()),
            self.dtype,
            self.bandwidth,
            if self.measure_cpu {
                format!(";measure=cpu:{}+{}", self.measure_seq, self.measure_decode)
            } else {
                String::new()
            }
        )
    }
}

/// The checked sweep file.
#[derive(Clone)]
pub struct SweepFile {
    /// `@preset` or a path relative to the sweep file's folder.
    pub base: String,
    pub base_span: Span,
    pub model: Option<String>,
    pub model_span: Option<Span>,
    pub axes: Vec<Axis>,
    pub options: TrialOptions,
    pub constraints: Vec<Constraint>,
    pub strategy: Strategy,
    pub objectives: Vec<Objective>,
}

impl SweepFile {
    /// Values per group of axes (a tied group counts once).
    pub fn group_sizes(&self) -> Vec<usize> {
        let mut sizes = Vec::new();
        for a in &self.axes {
            if a.group == sizes.len() {
                sizes.push(a.values.len());
            }
        }
        sizes
    }
}

const TOP_KEYS: &[&str] = &[
    "base",
    "model",
    "axes",
    "options",
    "constraints",
    "strategy",
    "seed",
    "budget",
    "objectives",
];
const OPTION_KEYS: &[&str] = &[
    "seq",
    "loops",
    "dtype",
    "bandwidth",
    "measure",
    "measure_seq",
    "measure_decode",
];
const LOOP_FEATURES: &[&str] = &["inject", "halt", "lora", "loop_embedding"];

struct Parser {
    file: FileId,
    text: String,
    diags: Vec<Diagnostic>,
}

type Table<'i> = DeTable<'i>;
type Val<'i> = Spanned<DeValue<'i>>;

impl Parser {
    fn span(&self, r: Range<usize>) -> Span {
        Span::new(self.file, r.start, r.end)
    }

    fn error(
        &mut self,
        code: Code,
        msg: impl Into<String>,
        at: Range<usize>,
        label: impl Into<String>,
        help: impl Into<String>,
    ) {
        let d = Diagnostic::error(code, msg)
            .label(self.span(at), label)
            .help(help);
        self.diags.push(d);
    }

    /// Entries of a table in file order (the map itself is sorted by key).
    fn entries<'t, 'i>(
        table: &'t Table<'i>,
    ) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Val<'i>)> {
        let mut v: Vec<_> = table.iter().collect();
        v.sort_by_key(|(k, _)| k.span().start);
        v
    }

    fn type_name(v: &DeValue) -> &'static str {
        match v {
            DeValue::String(_) => "a string",
            DeValue::Integer(_) => "an integer",
            DeValue::Float(_) => "a float",
            DeValue::Boolean(_) => "a boolean",
            DeValue::Datetime(_) => "a date",
            DeValue::Array(_) => "an array",
            DeValue::Table(_) => "a table",
        }
    }

    fn string(&mut self, key: &str, v: &Val) -> Option<String> {
        match v.get_ref() {
            DeValue::String(s) => Some(s.to_string()),
            other => {
                let t = Self::type_name(other);
                self.error(
                    Code::InvalidSweep,
                    format!("`{key}` must be a string, not {t}"),
                    v.span(),
                    "expected a string",
                    format!("write it in double quotes: {key} = \"...\""),
                );
                None
            }
        }
    }

    fn lit(&mut self, v: &Val) -> Option<Lit> {
        match v.get_ref() {
            DeValue::Integer(i) => match i64::from_str_radix(i.as_str(), i.radix()) {
                Ok(n) => Some(Lit::Int(n)),
                Err(_) => {
                    self.error(
                        Code::BadAxisValue,
                        "integer does not fit in 64 bits",
                        v.span(),
                        "too large",
                        "use a smaller number",
                    );
                    None
                }
            },
            DeValue::Float(f) => match f.as_str().parse::<f64>() {
                Ok(x) if x.is_finite() => Some(Lit::Float(x)),
                _ => {
                    self.error(
                        Code::BadAxisValue,
                        "a float must be finite",
                        v.span(),
                        "not a finite number",
                        "write a finite number such as 0.99",
                    );
                    None
                }
            },
            DeValue::Boolean(b) => Some(Lit::Bool(*b)),
            _ => None,
        }
    }

    fn uint(&mut self, key: &str, v: &Val, min: u64) -> Option<u64> {
        match self.lit(v) {
            Some(Lit::Int(n)) if n >= min as i64 => Some(n as u64),
            Some(Lit::Int(n)) => {
                self.error(
                    Code::InvalidSweep,
                    format!("`{key}` must be at least {min}, got {n}"),
                    v.span(),
                    "too small",
                    format!("use an integer >= {min}"),
                );
                None
            }
            _ => {
                let t = Self::type_name(v.get_ref());
                self.error(
                    Code::InvalidSweep,
                    format!("`{key}` must be an integer, not {t}"),
                    v.span(),
                    "expected an integer",
                    format!("for example {key} = {}", min.max(1)),
                );
                None
            }
        }
    }

    fn unknown_key(&mut self, key: &Spanned<std::borrow::Cow<str>>, what: &str, known: &[&str]) {
        let name: &str = key.get_ref();
        self.error(
            Code::InvalidSweep,
            format!("unknown key `{name}` in {what}"),
            key.span(),
            "not a key of a sweep file here",
            suggest::help_for(name, "keys", known.iter().copied()),
        );
    }

    /// The span of `inner` inside a basic string value (past the quote), when
    /// the source text has it verbatim; else the whole value.
    fn inner_span(&self, v: &Val, offset: usize, len: usize) -> Range<usize> {
        let r = v.span();
        let raw = self.text.get(r.clone()).unwrap_or("");
        match v.get_ref() {
            DeValue::String(s) if raw.len() == s.len() + 2 => {
                r.start + 1 + offset..r.start + 1 + offset + len.max(1)
            }
            _ => r,
        }
    }
}

/// Parses and checks a sweep file (everything that does not need the base model).
pub fn parse(file: FileId, text: &str) -> Result<SweepFile, Vec<Diagnostic>> {
    let mut p = Parser {
        file,
        text: text.to_string(),
        diags: Vec::new(),
    };
    let root = match DeTable::parse(text) {
        Ok(t) => t,
        Err(e) => {
            let at = e.span().unwrap_or(0..0);
            // One character: a span over several lines renders as a bracket.
            let at = match text.get(at.start..).and_then(|t| t.chars().next()) {
                Some(c) if c != '\n' => at.start..at.start + c.len_utf8(),
                _ => at.start..at.start,
            };
            let msg = e.message().trim().to_string();
            p.error(
                Code::InvalidSweep,
                format!("invalid TOML: {msg}"),
                at,
                "here",
                "sweep files are TOML: docs/sweeps.md shows one of each key",
            );
            return Err(p.diags);
        }
    };
    let root = root.get_ref();
    let mut sweep = SweepFile {
        base: String::new(),
        base_span: Span::new(file, 0, 0),
        model: None,
        model_span: None,
        axes: Vec::new(),
        options: TrialOptions {
            seq: 2048,
            loops: None,
            dtype: StorageType::Bf16,
            bandwidth: 3.35e12,
            measure_cpu: false,
            measure_seq: 64,
            measure_decode: 8,
        },
        constraints: Vec::new(),
        strategy: Strategy::Grid,
        objectives: Vec::new(),
    };
    let mut strategy: Option<(String, Range<usize>)> = None;
    let mut seed: Option<u64> = None;
    let mut budget: Option<(u64, Range<usize>)> = None;
    let mut have_base = false;
    let mut have_axes = false;
    for (key, v) in Parser::entries(root) {
        let name: &str = key.get_ref();
        match name {
            "base" => {
                if let Some(s) = p.string("base", v) {
                    if s.is_empty() || s == "@" {
                        p.error(
                            Code::InvalidSweep,
                            "`base` is empty",
                            v.span(),
                            "no spec named",
                            "name a spec file relative to this file, or a preset: base = \"@tiny-gqa\"",
                        );
                    }
                    sweep.base = s;
                    sweep.base_span = p.span(v.span());
                    have_base = true;
                }
            }
            "model" => {
                if let Some(s) = p.string("model", v) {
                    sweep.model = Some(s);
                    sweep.model_span = Some(p.span(v.span()));
                }
            }
            "axes" => {
                have_axes = true;
                match v.get_ref() {
                    DeValue::Table(t) => {
                        let mut axes = Vec::new();
                        parse_axes(&mut p, "", t, &mut axes);
                        sweep.axes = axes;
                    }
                    other => {
                        let t = Parser::type_name(other);
                        p.error(
                            Code::InvalidSweep,
                            format!("`axes` must be a table, not {t}"),
                            v.span(),
                            "expected a table",
                            "write `[axes]` followed by lines like \"loop.max\" = [4, 8, 16]",
                        );
                    }
                }
            }
            "options" => match v.get_ref() {
                DeValue::Table(t) => parse_options(&mut p, t, &mut sweep.options),
                other => {
                    let t = Parser::type_name(other);
                    p.error(
                        Code::InvalidSweep,
                        format!("`options` must be a table, not {t}"),
                        v.span(),
                        "expected a table",
                        "write `[options]` followed by `seq = 2048`",
                    );
                }
            },
            "constraints" => match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(c) = parse_constraint(&mut p, item) {
                            sweep.constraints.push(c);
                        }
                    }
                }
                _ => p.error(
                    Code::BadConstraint,
                    "`constraints` must be an array of strings",
                    v.span(),
                    "expected an array",
                    "constraints = [\"params.total <= 2e9\"]",
                ),
            },
            "objectives" => match v.get_ref() {
                DeValue::Array(items) => {
                    for item in items.iter() {
                        if let Some(o) = parse_objective(&mut p, item) {
                            sweep.objectives.push(o);
                        }
                    }
                }
                _ => p.error(
                    Code::BadConstraint,
                    "`objectives` must be an array of tables",
                    v.span(),
                    "expected an array",
                    "objectives = [{ minimize = \"params.active_per_token\" }]",
                ),
            },
            "strategy" => {
                if let Some(s) = p.string("strategy", v) {
                    strategy = Some((s, v.span()));
                }
            }
            "seed" => seed = p.uint("seed", v, 0),
            "budget" => budget = p.uint("budget", v, 1).map(|b| (b, v.span())),
            _ => p.unknown_key(key, "the sweep file", TOP_KEYS),
        }
    }
    if !have_base {
        p.error(
            Code::InvalidSweep,
            "the sweep file has no `base`",
            0..0,
            "`base` missing",
            "add base = \"models/x.mythos\" (relative to this file) or base = \"@tiny-gqa\"",
        );
    }
    if !have_axes {
        p.error(
            Code::InvalidSweep,
            "the sweep file has no `[axes]`",
            0..0,
            "`[axes]` missing",
            "add [axes] with at least one axis, for example \"loop.max\" = [4, 8, 16]",
        );
    }
    match strategy {
        None => {}
        Some((s, _)) if s == "grid" => {}
        Some((s, at)) if s == "random" => match budget {
            Some((b, _)) => {
                sweep.strategy = Strategy::Random {
                    seed: seed.unwrap_or(0),
                    budget: b,
                }
            }
            None => p.error(
                Code::InvalidSweep,
                "`strategy = \"random\"` needs a `budget`",
                at,
                "random search without a trial count",
                "add budget = 100 (trials to draw) and optionally seed = 0",
            ),
        },
        Some((s, at)) => p.error(
            Code::InvalidSweep,
            format!("unknown strategy `{s}`"),
            at,
            "not a strategy",
            suggest::help_for(&s, "strategies", ["grid", "random"]),
        ),
    }
    if sweep.strategy == Strategy::Grid {
        let size = sweep
            .group_sizes()
            .iter()
            .fold(1u128, |n, &s| n.saturating_mul(s as u128));
        if size > MAX_TRIALS {
            p.error(
                Code::InvalidSweep,
                format!("the grid has {size} trials, more than {MAX_TRIALS}"),
                0..0,
                "grid too large",
                "use strategy = \"random\" with a budget, or fewer axis values",
            );
        }
    }
    if p.diags.is_empty() {
        Ok(sweep)
    } else {
        Err(p.diags)
    }
}

fn parse_options(p: &mut Parser, t: &Table, o: &mut TrialOptions) {
    for (key, v) in Parser::entries(t) {
        let name: &str = key.get_ref();
        match name {
            "seq" => {
                if let Some(s) = p.uint("seq", v, 1) {
                    o.seq = s;
                }
            }
            "loops" => o.loops = p.uint("loops", v, 1),
            "dtype" => {
                if let Some(s) = p.string("dtype", v) {
                    match StorageType::parse(&s) {
                        Some(d) => o.dtype = d,
                        None => p.error(
                            Code::InvalidSweep,
                            format!("unknown dtype `{s}`"),
                            v.span(),
                            "not a storage type",
                            suggest::help_for(&s, "dtypes", ["f32", "bf16", "fp8"]),
                        ),
                    }
                }
            }
            "bandwidth" => match p.lit(v) {
                Some(l @ (Lit::Int(_) | Lit::Float(_))) if l.as_f64() > 0.0 => {
                    o.bandwidth = l.as_f64()
                }
                _ => p.error(
                    Code::InvalidSweep,
                    "`bandwidth` must be a positive number of bytes/s",
                    v.span(),
                    "expected a positive number",
                    "for example bandwidth = 3.35e12",
                ),
            },
            "measure" => {
                let Some(list) = v.get_ref().as_array() else {
                    p.error(
                        Code::InvalidSweep,
                        "`measure` must be a list of devices",
                        v.span(),
                        "expected a list",
                        "write measure = [\"cpu\"]",
                    );
                    continue;
                };
                for item in list {
                    match item.get_ref().as_str() {
                        Some("cpu") => o.measure_cpu = true,
                        Some("cuda") => p.error(
                            Code::InvalidSweep,
                            "measuring on CUDA needs the CUDA runtime, which Mythos does not have yet",
                            item.span(),
                            "not available",
                            "measure on the CPU: measure = [\"cpu\"]",
                        ),
                        _ => p.error(
                            Code::InvalidSweep,
                            "unknown device in `measure`",
                            item.span(),
                            "unknown device",
                            "the devices are \"cpu\" (and \"cuda\" once the CUDA runtime exists)",
                        ),
                    }
                }
            }
            "measure_seq" => {
                if let Some(n) = p.uint("measure_seq", v, 1) {
                    o.measure_seq = n as usize;
                }
            }
            "measure_decode" => {
                if let Some(n) = p.uint("measure_decode", v, 1) {
                    o.measure_decode = n as usize;
                }
            }
            _ => p.unknown_key(key, "[options]", OPTION_KEYS),
        }
    }
}

/// Splits `"params.total <= 2e9"`; also takes `"2e9 >= params.total"`.
fn split_constraint(s: &str) -> Option<(usize, &str, Op, f64)> {
    let at = s.find(['<', '>', '=', '!'])?;
    let rest = &s[at..];
    let (op, len) = if rest.starts_with("<=") {
        (Op::Le, 2)
    } else if rest.starts_with(">=") {
        (Op::Ge, 2)
    } else if rest.starts_with("==") {
        (Op::Eq, 2)
    } else if rest.starts_with("!=") {
        (Op::Ne, 2)
    } else if rest.starts_with('<') {
        (Op::Lt, 1)
    } else if rest.starts_with('>') {
        (Op::Gt, 1)
    } else {
        return None;
    };
    let left = &s[..at];
    let right = &s[at + len..];
    let num = |x: &str| {
        x.trim()
            .replace('_', "")
            .parse::<f64>()
            .ok()
            .filter(|v| v.is_finite())
    };
    let is_name = |x: &str| {
        let x = x.trim();
        !x.is_empty()
            && x.chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-')
    };
    if let (true, Some(v)) = (is_name(left) && num(left).is_none(), num(right)) {
        let lead = left.len() - left.trim_start().len();
        return Some((lead, left.trim(), op, v));
    }
    if let (Some(v), true) = (num(left), is_name(right) && num(right).is_none()) {
        let flipped = match op {
            Op::Le => Op::Ge,
            Op::Lt => Op::Gt,
            Op::Ge => Op::Le,
            Op::Gt => Op::Lt,
            o => o,
        };
        let lead = at + len + (right.len() - right.trim_start().len());
        return Some((lead, right.trim(), flipped, v));
    }
    None
}

fn parse_constraint(p: &mut Parser, v: &Val) -> Option<Constraint> {
    let DeValue::String(s) = v.get_ref() else {
        p.error(
            Code::BadConstraint,
            "a constraint must be a string",
            v.span(),
            "expected a string",
            "write it as \"METRIC OP NUMBER\", for example \"params.total <= 2e9\"",
        );
        return None;
    };
    match split_constraint(s) {
        Some((at, metric, op, value)) => {
            let r = p.inner_span(v, at, metric.len());
            Some(Constraint {
                text: s.trim().to_string(),
                metric: metric.to_string(),
                op,
                value,
                span: p.span(r),
            })
        }
        None => {
            p.error(
                Code::BadConstraint,
                format!("cannot read the constraint `{s}`"),
                v.span(),
                "expected METRIC OP NUMBER",
                "operators are <=, <, >=, >, ==, !=; metrics are the dotted names of `mythos inspect --json` (\"params.total <= 2e9\")",
            );
            None
        }
    }
}

fn parse_objective(p: &mut Parser, v: &Val) -> Option<Objective> {
    let help = "write { minimize = \"METRIC\" } or { maximize = \"METRIC\" }";
    let DeValue::Table(t) = v.get_ref() else {
        p.error(
            Code::BadConstraint,
            "an objective must be a table",
            v.span(),
            "expected a table",
            help,
        );
        return None;
    };
    let entries = Parser::entries(t);
    if entries.len() != 1 {
        p.error(
            Code::BadConstraint,
            "an objective has exactly one key, `minimize` or `maximize`",
            v.span(),
            "not one key",
            help,
        );
        return None;
    }
    let (key, val) = entries[0];
    let maximize = match &**key.get_ref() {
        "minimize" => false,
        "maximize" => true,
        other => {
            p.error(
                Code::BadConstraint,
                format!("unknown objective direction `{other}`"),
                key.span(),
                "not minimize or maximize",
                suggest::help_for(other, "directions", ["minimize", "maximize"]),
            );
            return None;
        }
    };
    let metric = p.string(key.get_ref(), val)?;
    let r = p.inner_span(val, 0, metric.len());
    Some(Objective {
        metric,
        maximize,
        span: p.span(r),
    })
}

fn parse_axes(p: &mut Parser, prefix: &str, t: &Table, out: &mut Vec<Axis>) {
    for (key, v) in Parser::entries(t) {
        let path = if prefix.is_empty() {
            key.get_ref().to_string()
        } else {
            format!("{prefix}.{}", key.get_ref())
        };
        // An unquoted dotted key (`loop.max = [...]`) arrives as nested tables.
        if let DeValue::Table(inner) = v.get_ref() {
            let nested = inner.values().any(|x| match x.get_ref() {
                DeValue::Array(_) | DeValue::String(_) => true,
                DeValue::Table(t) => !t.contains_key("kind"),
                _ => false,
            });
            if !inner.contains_key("range")
                && !inner.contains_key("kind")
                && (nested || resolve_path(&path).is_err())
            {
                parse_axes(p, &path, inner, out);
                continue;
            }
        }
        let span = p.span(key.span());
        let group = out.last().map_or(0, |a| a.group + 1);
        if path.contains(',') {
            tied_axis(p, &path, key.span(), v, group, out);
            continue;
        }
        if out.iter().any(|a| a.path == path) {
            p.error(
                Code::UnknownAxis,
                format!("axis `{path}` is given twice"),
                key.span(),
                "second time",
                "give each axis once, with all its values in one list",
            );
            continue;
        }
        let target = match resolve_path(&path) {
            Ok(t) => t,
            Err(help) => {
                p.error(
                    Code::UnknownAxis,
                    format!("unknown axis `{path}`"),
                    key.span(),
                    "names no setting, definition or loop feature",
                    help,
                );
                continue;
            }
        };
        let before = p.diags.len();
        let mut values = Vec::new();
        match v.get_ref() {
            DeValue::Array(items) => {
                for item in items.iter() {
                    if let Some(x) = axis_value(p, &target, &path, item) {
                        values.push(x);
                    }
                }
            }
            DeValue::Table(r) if r.contains_key("range") => {
                if let Some(vals) = range_values(p, &target, &path, v, r) {
                    values = vals;
                }
            }
            _ => {
                if let Some(x) = axis_value(p, &target, &path, v) {
                    values.push(x);
                }
            }
        }
        if p.diags.len() > before {
            continue;
        }
        if values.is_empty() {
            p.error(
                Code::BadAxisValue,
                format!("axis `{path}` has no values"),
                v.span(),
                "empty",
                "list at least one value",
            );
            continue;
        }
        out.push(Axis {
            path,
            span,
            target,
            values,
            group,
        });
    }
}

/// A tied axis: `"dim, attention.heads" = [[1024, 8], [2048, 16]]`, several
/// paths that vary together. It becomes one [`Axis`] per path, sharing `group`.
fn tied_axis(
    p: &mut Parser,
    key: &str,
    at: Range<usize>,
    v: &Val,
    group: usize,
    out: &mut Vec<Axis>,
) {
    let paths: Vec<String> = key.split(',').map(|s| s.trim().to_string()).collect();
    let mut targets = Vec::new();
    for (i, path) in paths.iter().enumerate() {
        let twice = paths[..i].contains(path) || out.iter().any(|a| &a.path == path);
        if twice {
            p.error(
                Code::UnknownAxis,
                format!("axis `{path}` is given twice"),
                at.clone(),
                "second time",
                "give each axis once: in one tied key or as its own axis",
            );
            return;
        }
        match resolve_path(path) {
            Ok(t) => targets.push(t),
            Err(help) => {
                p.error(
                    Code::UnknownAxis,
                    format!("unknown axis `{path}` in the tied axis `{key}`"),
                    at.clone(),
                    "names no setting, definition or loop feature",
                    help,
                );
                return;
            }
        }
    }
    let n = paths.len();
    let example = "write one list per trial, one value per path in order: \"dim, attention.heads\" = [[1024, 8], [2048, 16]]";
    let DeValue::Array(tuples) = v.get_ref() else {
        p.error(
            Code::BadAxisValue,
            format!("the tied axis `{key}` takes a list of lists"),
            v.span(),
            "expected a list of lists",
            example,
        );
        return;
    };
    let before = p.diags.len();
    let mut columns: Vec<Vec<AxisValue>> = vec![Vec::new(); n];
    for tuple in tuples.iter() {
        match tuple.get_ref() {
            DeValue::Array(items) if items.len() == n => {
                for (k, item) in items.iter().enumerate() {
                    if let Some(x) = axis_value(p, &targets[k], &paths[k], item) {
                        columns[k].push(x);
                    }
                }
            }
            other => {
                let got = match other {
                    DeValue::Array(items) => format!("{} values", items.len()),
                    o => Parser::type_name(o).to_string(),
                };
                p.error(
                    Code::BadAxisValue,
                    format!("the tied axis `{key}` has {n} paths; each entry needs {n} values, not {got}"),
                    tuple.span(),
                    format!("expected a list of {n} values"),
                    example,
                );
            }
        }
    }
    if p.diags.len() > before {
        return;
    }
    if tuples.is_empty() {
        p.error(
            Code::BadAxisValue,
            format!("the tied axis `{key}` has no values"),
            v.span(),
            "empty",
            "list at least one entry",
        );
        return;
    }
    for ((path, target), values) in paths.into_iter().zip(targets).zip(columns) {
        out.push(Axis {
            path,
            span: p.span(at.clone()),
            target,
            values,
            group,
        });
    }
}

/// A derived value: a string that must parse as an expression of the spec
/// language. Its type and names are checked with each trial's variant.
fn expr_value(p: &mut Parser, v: &Val) -> Option<AxisValue> {
    let DeValue::String(e) = v.get_ref() else {
        return None;
    };
    let e = e.trim();
    let help = if e.is_empty() || e.contains(['\n', '\r']) {
        Some("write the expression on one line, for example \"dim // 4\"".to_string())
    } else {
        let (file, errors) =
            mythos_compiler::syntax::parse(p.file, &format!("let derived = ({e})\n"));
        match errors.first() {
            Some(d) => Some(format!("the expression does not parse: {}", d.message)),
            None if file.items.len() != 1 => {
                Some("write a single expression, for example \"dim // 4\"".to_string())
            }
            None => None,
        }
    };
    match help {
        None => Some(AxisValue::Expr(e.to_string())),
        Some(help) => {
            p.error(
                Code::BadAxisValue,
                format!("`{e}` is not an expression of the spec language"),
                v.span(),
                "not an expression",
                help,
            );
            None
        }
    }
}

/// A literal of the field's type, or for a number a derived value (a string).
fn field_value(p: &mut Parser, spec: &FieldSpec, what: &str, v: &Val) -> Option<AxisValue> {
    match v.get_ref() {
        DeValue::String(_) if spec.ty != Ty::Bool => expr_value(p, v),
        _ => typed_lit(p, spec, what, v).map(AxisValue::Lit),
    }
}

fn find_spec(specs: &'static [FieldSpec], name: &str) -> Option<&'static FieldSpec> {
    specs.iter().find(|s| s.name == name)
}

/// All field names of a sort of definition or feature (for suggestions).
fn field_names(kinds: &'static [(&'static str, &'static [FieldSpec])]) -> Vec<&'static str> {
    let mut v: Vec<&'static str> = kinds
        .iter()
        .flat_map(|(_, s)| s.iter().map(|f| f.name))
        .collect();
    v.sort_unstable();
    v.dedup();
    v
}

/// The field spec and the first kind that has the field.
fn field_of(
    kinds: &'static [(&'static str, &'static [FieldSpec])],
    name: &str,
) -> Option<(&'static str, &'static FieldSpec)> {
    kinds
        .iter()
        .find_map(|(k, specs)| find_spec(specs, name).map(|s| (*k, s)))
}

/// An axis path to its target; `Err(help)` when it names nothing.
fn resolve_path(path: &str) -> Result<Target, String> {
    let parts: Vec<&str> = path.split('.').collect();
    let examples = "axes are model settings (`dim`), `loop.max`, `loop.inject`, `loop.halt.threshold`, `loop.lora.rank`, `loop.loop_embedding.channels`, `attention`, `attention.heads`, `ffn.moe.experts`; see docs/sweeps.md";
    match parts.as_slice() {
        [setting] if *setting != "loop" && *setting != "attention" && *setting != "ffn" => {
            build::SETTINGS
                .iter()
                .find(|s| s.name == *setting)
                .map(Target::Setting)
                .ok_or_else(|| {
                    let mut names: Vec<&str> = build::SETTINGS.iter().map(|s| s.name).collect();
                    names.extend(["loop.max", "attention", "ffn.moe", "ffn.dense"]);
                    match suggest::closest(setting, names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`? {examples}"),
                        None => examples.to_string(),
                    }
                })
        }
        ["loop", "max"] => Ok(Target::LoopMax),
        ["loop", feature, rest @ ..] if rest.len() <= 1 => {
            let Some(&keyword) = LOOP_FEATURES.iter().find(|f| *f == feature) else {
                let mut all = LOOP_FEATURES.to_vec();
                all.push("max");
                let all: Vec<String> = all.iter().map(|f| format!("loop.{f}")).collect();
                return Err(suggest::help_for(
                    &format!("loop.{feature}"),
                    "loop axes",
                    all.iter().map(String::as_str),
                ));
            };
            let kinds = match keyword {
                "inject" => build::INJECT_KINDS,
                "halt" => build::HALT_KINDS,
                "lora" => build::LORA_KINDS,
                _ => build::LOOP_EMBEDDING_KINDS,
            };
            match rest {
                [] => Ok(Target::Feature {
                    keyword,
                    kinds,
                    field: None,
                    field_kind: "",
                }),
                [field] => {
                    match field_of(kinds, field) {
                        Some((kind, spec)) => Ok(Target::Feature {
                            keyword,
                            kinds,
                            field: Some(spec),
                            field_kind: kind,
                        }),
                        None => {
                            let names = field_names(kinds);
                            Err(if names.is_empty() {
                                format!("`{keyword}` has no fields; sweep its kind with `loop.{keyword}`")
                            } else {
                                suggest::help_for(
                                    field,
                                    &format!("fields of `{keyword}`"),
                                    names.iter().copied(),
                                )
                            })
                        }
                    }
                }
                _ => Err(examples.to_string()),
            }
        }
        [sort @ ("attention" | "ffn"), rest @ ..] => {
            let sort = if *sort == "attention" {
                Sort::Attention
            } else {
                Sort::Ffn
            };
            let default_name = |kind_or_name: &str| match sort {
                Sort::Attention => "attention".to_string(),
                Sort::Ffn => kind_or_name.to_string(),
            };
            let field = |name: &str| field_of(sort.kinds(), name).map(|(_, s)| s);
            match rest {
                [] if sort == Sort::Attention => Ok(Target::Def {
                    sort,
                    name: "attention".into(),
                    field: None,
                    base_kind: None,
                }),
                [] => Err(
                    "name the FFN definition: `ffn.moe`, `ffn.dense` (or the name given with `as`)"
                        .into(),
                ),
                // `attention.heads`: a field of the definition named `attention`.
                [f] if sort == Sort::Attention && field(f).is_some() => Ok(Target::Def {
                    sort,
                    name: default_name(""),
                    field: field(f),
                    base_kind: None,
                }),
                [name] => Ok(Target::Def {
                    sort,
                    name: name.to_string(),
                    field: None,
                    base_kind: None,
                }),
                [name, f] => match field(f) {
                    Some(spec) => Ok(Target::Def {
                        sort,
                        name: name.to_string(),
                        field: Some(spec),
                        base_kind: None,
                    }),
                    None => Err(suggest::help_for(
                        f,
                        &format!("{} fields", sort.keyword()),
                        field_names(sort.kinds()).iter().copied(),
                    )),
                },
                _ => Err(examples.to_string()),
            }
        }
        _ => Err(examples.to_string()),
    }
}

fn ty_name(ty: Ty) -> &'static str {
    match ty {
        Ty::Int => "an integer",
        Ty::Float => "a number",
        Ty::Bool => "a boolean",
    }
}

/// A literal of the field's type, or a diagnostic.
fn typed_lit(p: &mut Parser, spec: &FieldSpec, what: &str, v: &Val) -> Option<Lit> {
    let lit = p.lit(v);
    let ok = match (spec.ty, lit) {
        (Ty::Int, Some(Lit::Int(_))) | (Ty::Bool, Some(Lit::Bool(_))) => true,
        (Ty::Float, Some(Lit::Int(_) | Lit::Float(_))) => true,
        (_, None) if matches!(v.get_ref(), DeValue::Integer(_) | DeValue::Float(_)) => return None,
        _ => false,
    };
    if ok {
        return lit;
    }
    let got = Parser::type_name(v.get_ref());
    p.error(
        Code::BadAxisValue,
        format!("{what} takes {}, not {got}", ty_name(spec.ty)),
        v.span(),
        format!("expected {}", ty_name(spec.ty)),
        match spec.ty {
            Ty::Int => "write a whole number without quotes: 8 (not 8.0 or \"8\")",
            Ty::Float => "write a number without quotes: 0.9",
            Ty::Bool => "write true or false without quotes",
        },
    );
    None
}

/// A kind value: `"add"` or `{ kind = "act", threshold = 0.9 }` (or `{ rank = 8 }`
/// for a feature whose kind is written as nothing).
fn kind_value(
    p: &mut Parser,
    what: &str,
    kinds: &'static [(&'static str, &'static [FieldSpec])],
    v: &Val,
) -> Option<AxisValue> {
    let names: Vec<&str> = kinds
        .iter()
        .map(|(k, _)| *k)
        .filter(|k| !k.is_empty())
        .collect();
    let check_kind =
        |p: &mut Parser, kind: &str, at: Range<usize>| -> Option<&'static [FieldSpec]> {
            match kinds.iter().find(|(k, _)| *k == kind) {
                Some((_, specs)) => Some(specs),
                None => {
                    p.error(
                        Code::BadAxisValue,
                        format!("unknown kind `{kind}` for {what}"),
                        at,
                        "not a kind",
                        suggest::help_for(kind, "kinds", names.iter().copied()),
                    );
                    None
                }
            }
        };
    match v.get_ref() {
        DeValue::String(s) => {
            check_kind(p, s, v.span())?;
            Some(AxisValue::Kind {
                kind: s.to_string(),
                fields: Vec::new(),
            })
        }
        DeValue::Table(t) => {
            let entries = Parser::entries(t);
            let mut kind = String::new();
            let mut kind_span = v.span();
            for (k, val) in &entries {
                if &**k.get_ref() == "kind" {
                    kind = p.string("kind", val)?;
                    kind_span = val.span();
                }
            }
            let specs = check_kind(p, &kind, kind_span)?;
            let mut fields = Vec::new();
            let mut ok = true;
            for (k, val) in entries {
                let name: &str = k.get_ref();
                if name == "kind" {
                    continue;
                }
                match find_spec(specs, name) {
                    Some(spec) => match typed_lit(p, spec, &format!("`{name}`"), val) {
                        Some(l) => fields.push((name.to_string(), l)),
                        None => ok = false,
                    },
                    None => {
                        let shown = if kind.is_empty() {
                            what.to_string()
                        } else {
                            format!("`{kind}`")
                        };
                        p.error(
                            Code::BadAxisValue,
                            format!("{shown} has no field `{name}`"),
                            k.span(),
                            "unknown field",
                            suggest::help_for(name, "fields", specs.iter().map(|s| s.name)),
                        );
                        ok = false;
                    }
                }
            }
            ok.then_some(AxisValue::Kind { kind, fields })
        }
        other => {
            let got = Parser::type_name(other);
            p.error(
                Code::BadAxisValue,
                format!(
                    "{what} takes a kind (a string) or a table with `kind` and fields, not {got}"
                ),
                v.span(),
                "expected a kind",
                format!("kinds: {}", names.join(", ")),
            );
            None
        }
    }
}

fn axis_value(p: &mut Parser, target: &Target, path: &str, v: &Val) -> Option<AxisValue> {
    let what = format!("axis `{path}`");
    match target {
        Target::Setting(spec) => field_value(p, spec, &what, v),
        Target::LoopMax => typed_lit(p, &LOOP_MAX, &what, v).map(AxisValue::Lit),
        Target::Feature {
            field: Some(spec), ..
        }
        | Target::Def {
            field: Some(spec), ..
        } => field_value(p, spec, &what, v),
        Target::Feature { kinds, .. } => kind_value(p, &what, kinds, v),
        Target::Def { sort, .. } => kind_value(p, &what, sort.kinds(), v),
    }
}

const LOOP_MAX: FieldSpec = FieldSpec {
    name: "max",
    ty: Ty::Int,
    default: build::Absent::Required,
    min: 1,
    max: 1 << 20,
    doc: "loop iterations",
};

/// `{ range = [lo, hi], step = s }` (inclusive) or `{ range = [lo, hi], factor = f }`.
fn range_values(
    p: &mut Parser,
    target: &Target,
    path: &str,
    whole: &Val,
    t: &Table,
) -> Option<Vec<AxisValue>> {
    let ty = match target {
        Target::Setting(s) => s.ty,
        Target::LoopMax => Ty::Int,
        Target::Feature { field: Some(s), .. } | Target::Def { field: Some(s), .. } => s.ty,
        _ => {
            p.error(
                Code::BadAxisValue,
                format!("axis `{path}` takes kinds, not a range"),
                whole.span(),
                "a range of numbers",
                "list the kinds: [\"lti\", \"add\"] or whole definitions",
            );
            return None;
        }
    };
    if ty == Ty::Bool {
        p.error(
            Code::BadAxisValue,
            format!("axis `{path}` is a boolean; a range makes no sense"),
            whole.span(),
            "range of a boolean",
            "write [true, false]",
        );
        return None;
    }
    let help = "write { range = [8, 64], step = 8 } (both ends included) or { range = [1, 64], factor = 2 }";
    let mut bounds = None;
    let mut step = None;
    let mut factor = None;
    for (k, v) in Parser::entries(t) {
        match &**k.get_ref() {
            "range" => match v.get_ref() {
                DeValue::Array(a) if a.len() == 2 => match (p.lit(&a[0]), p.lit(&a[1])) {
                    (
                        Some(lo @ (Lit::Int(_) | Lit::Float(_))),
                        Some(hi @ (Lit::Int(_) | Lit::Float(_))),
                    ) => bounds = Some((lo, hi, v.span())),
                    _ => {
                        p.error(
                            Code::BadAxisValue,
                            "range bounds must be numbers",
                            v.span(),
                            "not two numbers",
                            help,
                        );
                        return None;
                    }
                },
                _ => {
                    p.error(
                        Code::BadAxisValue,
                        "`range` takes two numbers [low, high]",
                        v.span(),
                        "expected [low, high]",
                        help,
                    );
                    return None;
                }
            },
            "step" => match p.lit(v) {
                Some(l @ (Lit::Int(_) | Lit::Float(_))) if l.as_f64() > 0.0 => {
                    step = Some((l, v.span()))
                }
                _ => {
                    p.error(
                        Code::BadAxisValue,
                        "`step` must be a positive number",
                        v.span(),
                        "not a positive number",
                        help,
                    );
                    return None;
                }
            },
            "factor" => match p.lit(v) {
                Some(l @ (Lit::Int(_) | Lit::Float(_))) if l.as_f64() > 1.0 => {
                    factor = Some((l, v.span()))
                }
                _ => {
                    p.error(
                        Code::BadAxisValue,
                        "`factor` must be a number above 1",
                        v.span(),
                        "not above 1",
                        help,
                    );
                    return None;
                }
            },
            _ => {
                p.unknown_key(k, "a range", &["range", "step", "factor"]);
                return None;
            }
        }
    }
    let (lo, hi, bounds_span) = bounds?;
    if lo.as_f64() > hi.as_f64() {
        p.error(
            Code::BadAxisValue,
            "the range is empty: low > high",
            bounds_span,
            "low > high",
            help,
        );
        return None;
    }
    let all_int = matches!((lo, hi), (Lit::Int(_), Lit::Int(_)))
        && !matches!(step, Some((Lit::Float(_), _)))
        && !matches!(factor, Some((Lit::Float(_), _)));
    if ty == Ty::Int && !all_int {
        p.error(
            Code::BadAxisValue,
            format!("axis `{path}` takes integers; this range has floats"),
            whole.span(),
            "expected integers",
            "use integer bounds and step",
        );
        return None;
    }
    let mut out = Vec::new();
    let too_many = |p: &mut Parser| {
        p.error(
            Code::BadAxisValue,
            format!("the range has more than {MAX_RANGE_VALUES} values"),
            whole.span(),
            "too many values",
            "use a larger step",
        );
    };
    match (step, factor) {
        (Some(_), Some((_, at))) => {
            p.error(
                Code::BadAxisValue,
                "give `step` or `factor`, not both",
                at,
                "both given",
                help,
            );
            return None;
        }
        (None, None) => {
            p.error(
                Code::BadAxisValue,
                "a range needs `step` or `factor`",
                whole.span(),
                "no step",
                help,
            );
            return None;
        }
        (Some((s, _)), None) => {
            if all_int {
                let (Lit::Int(lo), Lit::Int(hi), Lit::Int(s)) = (lo, hi, s) else {
                    unreachable!()
                };
                let mut x = lo;
                while x <= hi {
                    if out.len() >= MAX_RANGE_VALUES {
                        too_many(p);
                        return None;
                    }
                    out.push(AxisValue::Lit(Lit::Int(x)));
                    x = x.checked_add(s)?;
                }
            } else {
                let (lo, hi, s) = (lo.as_f64(), hi.as_f64(), s.as_f64());
                let n = ((hi - lo) / s + 1e-9).floor() as usize + 1;
                if n > MAX_RANGE_VALUES {
                    too_many(p);
                    return None;
                }
                for i in 0..n {
                    // Rounded to 12 significant digits so that 0.1 steps read back cleanly.
                    let v: f64 = format!("{:.12e}", lo + i as f64 * s).parse().unwrap_or(0.0);
                    out.push(AxisValue::Lit(Lit::Float(v)));
                }
            }
        }
        (None, Some((f, _))) => {
            if lo.as_f64() <= 0.0 {
                p.error(
                    Code::BadAxisValue,
                    "a `factor` range must start above 0",
                    bounds_span,
                    "low <= 0",
                    help,
                );
                return None;
            }
            let mut x = lo.as_f64();
            while x <= hi.as_f64() * (1.0 + 1e-12) {
                if out.len() >= MAX_RANGE_VALUES {
                    too_many(p);
                    return None;
                }
                out.push(AxisValue::Lit(if all_int {
                    Lit::Int(x.round() as i64)
                } else {
                    Lit::Float(x)
                }));
                x *= f.as_f64();
            }
            out.dedup();
        }
    }
    Some(out)
}

/// Checks what needs the base model: the kind of every definition an axis
/// changes a field of, and the metric names of constraints and objectives.
pub fn resolve(
    sweep: &mut SweepFile,
    def_kinds: &BTreeMap<(Sort, String), String>,
    metrics: &BTreeMap<String, f64>,
) -> Vec<Diagnostic> {
    let mut diags = Vec::new();
    let whole: Vec<(Sort, String)> = sweep
        .axes
        .iter()
        .filter_map(|a| match &a.target {
            Target::Def {
                sort,
                name,
                field: None,
                ..
            } => Some((*sort, name.clone())),
            _ => None,
        })
        .collect();
    for axis in &mut sweep.axes {
        if let Target::Def {
            sort,
            name,
            field,
            base_kind,
        } = &mut axis.target
        {
            let key = (*sort, name.clone());
            let field = *field;
            *base_kind = def_kinds.get(&key).cloned();
            let replaced = whole.contains(&key);
            match (&base_kind, field) {
                (None, _) if field.is_none() || !replaced => {
                    let names: Vec<&str> = def_kinds
                        .keys()
                        .filter(|(s, _)| s == sort)
                        .map(|(_, n)| n.as_str())
                        .collect();
                    diags.push(
                        Diagnostic::error(
                            Code::UnknownAxis,
                            format!(
                                "the base model's blocks use no {} definition named `{name}`",
                                sort.keyword()
                            ),
                        )
                        .label(axis.span, "no such definition")
                        .help(suggest::help_for(
                            name,
                            "definitions",
                            names.iter().copied(),
                        )),
                    );
                }
                (Some(kind), Some(f)) if !replaced => {
                    let has = sort
                        .kinds()
                        .iter()
                        .find(|(k, _)| k == kind)
                        .is_some_and(|(_, specs)| find_spec(specs, f.name).is_some());
                    if !has {
                        diags.push(
                            Diagnostic::error(
                                Code::UnknownAxis,
                                format!("`{name}` is {} `{kind}`, which has no field `{}`", sort.keyword(), f.name),
                            )
                            .label(axis.span, "not a field of the base definition")
                            .help(format!(
                                "sweep the whole definition instead: \"{}\" = [{{ kind = \"...\", ... }}]",
                                if *sort == Sort::Attention { "attention".to_string() } else { format!("ffn.{name}") }
                            )),
                        );
                    }
                }
                _ => {}
            }
        }
    }
    let mut names: Vec<&str> = metrics.keys().map(String::as_str).collect();
    if sweep.options.measure_cpu {
        names.extend(CPU_METRICS);
    }
    let mut check = |metric: &str, span: Span, what: &str| {
        if !names.contains(&metric) {
            diags.push(
                Diagnostic::error(Code::BadConstraint, format!("{what} names no metric `{metric}`"))
                    .label(span, "unknown metric")
                    .help(match suggest::closest(metric, names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`?"),
                        None => {
                            let main: Vec<String> = names
                                .iter()
                                .filter(|n| !n.contains("by_component"))
                                .map(|n| format!("`{n}`"))
                                .collect();
                            format!(
                                "metrics include {} (and per-component ones, `params.by_component.*`, `flops.by_component.*`)",
                                main.join(", ")
                            )
                        }
                    })
                    .note("metrics are the numbers of `mythos inspect --json`, as dotted paths"),
            );
        }
    };
    for c in &sweep.constraints {
        check(&c.metric, c.span, "the constraint");
    }
    for o in &sweep.objectives {
        check(&o.metric, o.span, "the objective");
    }
    diags
}
