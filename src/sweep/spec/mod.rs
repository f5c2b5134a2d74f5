//! The sweep file: TOML in, a checked [`SweepFile`] out. Every problem is a
//! diagnostic (E05xx) with a span in the sweep file, so it renders like a spec
//! error (`error[E0502]: ...` / ` --> sweeps/x.toml:4:1`).
//!
//! Parsing is two steps: [`parse`] checks what the file alone can tell (TOML
//! syntax, keys, axis paths, value types), [`resolve`] what needs the base
//! model (the kind of a definition an axis changes a field of, metric names).

use mythos_compiler::analysis::StorageType;
use mythos_compiler::diag::{Code, Diagnostic};
use mythos_compiler::sema::schema::{self, Spec as FieldSpec, Ty};
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
    /// A training option written as text (`"1..8"` for `train.loops`);
    /// never part of the variant spec.
    Text(String),
}

impl AxisValue {
    /// Short text for tables, CSV and plot labels: `8`, `add`, `gqa(heads=16,kv_heads=4)`.
    pub fn label(&self) -> String {
        match self {
            AxisValue::Lit(Lit::Float(f)) => f.to_string(),
            AxisValue::Lit(l) => l.spec_text(),
            AxisValue::Expr(e) | AxisValue::Text(e) => e.clone(),
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
            AxisValue::Expr(e) | AxisValue::Text(e) => e.clone().into(),
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
            AxisValue::Kind { .. } | AxisValue::Text(_) => None,
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
            Sort::Attention => schema::ATTENTION_KINDS,
            Sort::Ffn => schema::FFN_KINDS,
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
    /// A training setting of `measure = ["train"]` (`train.lr`): not part
    /// of the variant spec, part of the trial's identity.
    Train(TrainKey),
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
    /// `measure = ["train"]`: train each trial as `[train]` says and score it as `[eval]` says.
    pub measure_train: bool,
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
    /// `[slurm]`: how `--backend slurm` submits (not part of a trial's hash).
    pub slurm: SlurmTable,
    /// `[train]` (with `measure = ["train"]`).
    pub train: Option<TrainTable>,
    pub eval: EvalTable,
    /// `[early_stop]`: successive halving over the training budget.
    pub early_stop: Option<EarlyStop>,
}

/// `[slurm]`: settings of `--backend slurm` (docs/sweeps.md, "On a cluster").
#[derive(Clone, Debug, PartialEq)]
pub struct SlurmTable {
    /// `#SBATCH --partition`.
    pub partition: Option<String>,
    /// `#SBATCH --time` (Slurm's forms: `MM`, `HH:MM:SS`, `D-HH`).
    pub time: Option<String>,
    pub cpus_per_task: Option<u64>,
    pub gpus_per_task: Option<u64>,
    /// More `#SBATCH` lines, as written after `#SBATCH ` (`--mem=4G`).
    pub sbatch: Vec<String>,
    /// At most this many tasks at once (`--array=...%P`).
    pub max_parallel: Option<u64>,
    /// Times a task that left the queue without a result is resubmitted.
    pub retries: u64,
    /// Seconds before the time limit at which Slurm sends USR2 (`--signal=B:USR2@N`).
    pub signal_before: u64,
    /// Seconds a trial may be out of the queue without a visible result file
    /// before it counts as lost (NFS can hide a new file for up to ~60 s).
    pub result_grace: u64,
    /// Seconds between looks at the queue and the result files.
    pub poll: f64,
}

impl Default for SlurmTable {
    fn default() -> Self {
        SlurmTable {
            partition: None,
            time: None,
            cpus_per_task: None,
            gpus_per_task: None,
            sbatch: Vec::new(),
            max_parallel: None,
            retries: 2,
            signal_before: 60,
            result_grace: 15,
            poll: 2.0,
        }
    }
}

impl SweepFile {
    /// The `train.*` axis values of `point`.
    pub fn train_overrides(&self, choice: &[usize]) -> Vec<(TrainKey, &AxisValue)> {
        self.axes
            .iter()
            .zip(choice)
            .filter_map(|(a, &c)| match a.target {
                Target::Train(k) => Some((k, &a.values[c])),
                _ => None,
            })
            .collect()
    }

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

mod axes;
mod parse;
mod ranges;
mod resolve;
mod slurm;
mod train;

use axes::{find_spec, parse_axes};
use parse::{Parser, Table, Val};
use ranges::range_values;

pub use parse::parse;
pub use resolve::resolve;
pub use train::{is_measured, EarlyStop, EvalTable, TrainKey, TrainTable, TRAIN_METRICS};
