//! `[train]`, `[eval]` and `[early_stop]`: how `measure = ["train"]` trains
//! and scores every trial, and the `train.*` axes that vary the training.
//! A key of [`TRAIN_KEYS`] is written the same way in the `[train]` table
//! (`lr = 3e-3`) and as an axis (`"train.lr" = [1e-3, 3e-3]`).

use super::*;
use crate::text::TokenizerChoice;
use crate::train::{LoopPolicy, Settings};
use mythos_compiler::sema::schema::Absent;

/// A training setting that the `[train]` table sets and an axis can vary.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrainKey {
    Loops,
    Steps,
    Batch,
    Accum,
    Lr,
    MinLr,
    Warmup,
    WeightDecay,
    Clip,
    Backprop,
    NoAct,
    RouterBiasRate,
}

const fn int(name: &'static str, min: i64, max: i64, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty: Ty::Int,
        default: Absent::Optional,
        min,
        max,
        doc,
    }
}

const fn num(name: &'static str, ty: Ty, doc: &'static str) -> FieldSpec {
    FieldSpec {
        name,
        ty,
        default: Absent::Optional,
        min: 0,
        max: 0,
        doc,
    }
}

/// Every key of [`TrainKey`]: its name and type (`loops` also takes the
/// policy strings `"A..B"` and `"poisson:MEAN"`).
pub const TRAIN_KEYS: &[(TrainKey, FieldSpec)] = &[
    (
        TrainKey::Loops,
        int("loops", 1, 1 << 16, "loop iterations per step"),
    ),
    (TrainKey::Steps, int("steps", 1, 1 << 32, "optimizer steps")),
    (
        TrainKey::Batch,
        int("batch", 1, 4096, "rows per micro-batch"),
    ),
    (
        TrainKey::Accum,
        int("accum", 1, 4096, "micro-batches per step"),
    ),
    (TrainKey::Lr, num("lr", Ty::Float, "peak learning rate")),
    (
        TrainKey::MinLr,
        num("min_lr", Ty::Float, "final learning rate"),
    ),
    (TrainKey::Warmup, int("warmup", 0, 1 << 32, "warmup steps")),
    (
        TrainKey::WeightDecay,
        num("weight_decay", Ty::Float, "AdamW weight decay"),
    ),
    (
        TrainKey::Clip,
        num("clip", Ty::Float, "max gradient norm (0: none)"),
    ),
    (
        TrainKey::Backprop,
        int("backprop", 1, 1 << 16, "iterations backpropagated"),
    ),
    (TrainKey::NoAct, num("no_act", Ty::Bool, "ACT halting off")),
    (
        TrainKey::RouterBiasRate,
        num("router_bias_rate", Ty::Float, "router-bias update rate"),
    ),
];

/// The key named `name` and its spec.
pub(super) fn train_key(name: &str) -> Option<(TrainKey, &'static FieldSpec)> {
    TRAIN_KEYS
        .iter()
        .find(|(_, s)| s.name == name)
        .map(|(k, s)| (*k, s))
}

/// The keys of `[train]` that are not [`TRAIN_KEYS`].
const OTHER_TRAIN_KEYS: &[&str] = &[
    "data",
    "tokens",
    "seq",
    "tokenizer",
    "val_rows",
    "seeds",
    "save_every",
    "keep_checkpoints",
];

/// `[train]`: what every trial trains on and how.
#[derive(Clone, Debug)]
pub struct TrainTable {
    /// A data file or folder (relative to the sweep file) or `task:...`.
    pub data: String,
    pub data_span: Option<Span>,
    pub seq: Option<usize>,
    pub tokenizer: Option<TokenizerChoice>,
    pub val_rows: Option<usize>,
    /// Trainings per point (weight init and data order seeded 0..seeds).
    pub seeds: u64,
    /// Checkpoint every this many steps (and at each budget rung).
    pub save_every: u64,
    /// Keep the checkpoints of finished trials (default: only their
    /// weights, metrics and plots).
    pub keep_checkpoints: bool,
    /// The table's own [`TRAIN_KEYS`] values; a trial's axes override them.
    pub values: Vec<(TrainKey, AxisValue)>,
    /// A budget in training tokens instead of `steps`: each trial trains
    /// `ceil(tokens / (batch * accum * row_tokens))` steps.
    pub tokens: Option<u64>,
    /// Tokens per row of the data (set when the sweep is prepared).
    pub row_tokens: usize,
}

/// `[eval]`: how every trained trial is scored.
#[derive(Clone, Debug, Default)]
pub struct EvalTable {
    /// Scored data (`None`: the validation rows held out of the training data).
    pub data: Option<String>,
    pub data_span: Option<Span>,
    /// Test-time loop counts (empty: powers of two up to twice the base's depth).
    pub loops: Vec<u64>,
    /// Rows per forward pass.
    pub batch: usize,
}

/// `[early_stop]`: successive halving over the training budget.
#[derive(Clone, Debug)]
pub struct EarlyStop {
    /// The first rung's budget in steps; rung `k` trains to `min_steps * eta^k`.
    pub min_steps: u64,
    /// Keep the best `1/eta` of the trials at each rung.
    pub eta: u64,
    /// Promote by this objective's metric (`None`: by non-dominated rank
    /// over every objective, then by the first).
    pub primary: Option<String>,
    pub primary_span: Option<Span>,
}

impl EarlyStop {
    /// The budgets of the rungs, ending with `steps`.
    pub fn rungs(&self, steps: u64) -> Vec<u64> {
        let mut r: Vec<u64> =
            std::iter::successors(Some(self.min_steps), |&b| b.checked_mul(self.eta))
                .take_while(|&b| b < steps)
                .collect();
        r.push(steps);
        r
    }
}

/// The metrics every trained trial reports, besides `eval.loss@loops=N`
/// and `eval.acc@loops=N` per test-time loop count.
pub const TRAIN_METRICS: &[&str] = &[
    "train.loss",
    "train.steps",
    "train.seconds",
    "train.tokens_per_s",
    "eval.loss",
    "eval.acc",
    "eval.ppl",
    "eval.depth_gain",
    "eval.seconds",
];

/// Whether `metric` is only known once a trial has been measured
/// (timed on the CPU or trained).
pub fn is_measured(metric: &str) -> bool {
    ["cpu.", "train.", "eval."]
        .iter()
        .any(|p| metric.starts_with(p))
}

/// Checks one value of `key` (from the table or an axis): `Err(why)`.
pub fn check_value(key: TrainKey, v: &AxisValue) -> Result<(), String> {
    let num = match v {
        AxisValue::Lit(l) => l.as_f64(),
        AxisValue::Text(t) if key == TrainKey::Loops => {
            return t.parse::<LoopPolicy>().map(|_| ());
        }
        _ => return Err("takes a number".into()),
    };
    match key {
        TrainKey::Lr | TrainKey::MinLr | TrainKey::RouterBiasRate
            if !(num.is_finite() && num > 0.0) =>
        {
            Err(format!("must be a positive number, got {num}"))
        }
        TrainKey::WeightDecay | TrainKey::Clip if !(num.is_finite() && num >= 0.0) => {
            Err(format!("must be 0 or more, got {num}"))
        }
        _ => Ok(()),
    }
}

impl TrainTable {
    /// `mythos train`'s settings for a trial whose axes set `overrides`,
    /// trained with seed `seed` (`data`: the data resolved against the sweep
    /// file's folder).
    pub fn settings(
        &self,
        overrides: &[(TrainKey, &AxisValue)],
        seed: u64,
        data: &str,
    ) -> Settings {
        let mut s = Settings {
            data: data.to_string(),
            seq: self.seq,
            tokenizer: self.tokenizer.clone(),
            width: mythos_runtime::data::TokenWidth::U16,
            steps: 100,
            batch: 8,
            accum: 1,
            lr: 3e-4,
            min_lr: f64::NAN,
            warmup: u64::MAX,
            weight_decay: 0.1,
            clip: Some(1.0),
            loops: LoopPolicy::Max,
            backprop: None,
            val_rows: self.val_rows,
            seed,
            shuffle: true,
            save_every: self.save_every,
            val_every: 0,
            no_act: false,
            router_bias_rate: None,
        };
        let values = self
            .values
            .iter()
            .map(|(k, v)| (*k, v))
            .chain(overrides.iter().copied());
        for (key, v) in values {
            let (n, b) = match v {
                AxisValue::Lit(l) => (l.as_f64(), matches!(l, Lit::Bool(true))),
                _ => (f64::NAN, false),
            };
            match key {
                TrainKey::Loops => {
                    s.loops = match v {
                        AxisValue::Text(t) => t.parse().unwrap_or(LoopPolicy::Max),
                        _ => LoopPolicy::Fixed(n as u64),
                    }
                }
                TrainKey::Steps => s.steps = n as u64,
                TrainKey::Batch => s.batch = n as usize,
                TrainKey::Accum => s.accum = n as usize,
                TrainKey::Lr => s.lr = n,
                TrainKey::MinLr => s.min_lr = n,
                TrainKey::Warmup => s.warmup = n as u64,
                TrainKey::WeightDecay => s.weight_decay = n,
                TrainKey::Clip => s.clip = (n > 0.0).then_some(n),
                TrainKey::Backprop => s.backprop = Some(n as u64),
                TrainKey::NoAct => s.no_act = b,
                TrainKey::RouterBiasRate => s.router_bias_rate = Some(n),
            }
        }
        if let Some(tokens) = self.tokens {
            let per_step = (s.batch * s.accum * self.row_tokens.max(1)) as u64;
            s.steps = tokens.div_ceil(per_step).max(1);
        }
        // `mythos train`'s defaults that follow other settings.
        if s.min_lr.is_nan() {
            s.min_lr = s.lr / 10.0;
        }
        if s.warmup == u64::MAX {
            s.warmup = s.steps / 10;
        }
        s
    }
}

/// A value of `key`, from the `[train]` table or an axis.
pub(super) fn train_value(
    p: &mut Parser,
    key: TrainKey,
    spec: &'static FieldSpec,
    what: &str,
    v: &Val,
) -> Option<AxisValue> {
    let value = match (key, v.get_ref()) {
        (TrainKey::Loops, DeValue::String(s)) => AxisValue::Text(s.to_string()),
        _ => {
            let lit = super::axes::typed_lit(p, spec, what, v)?;
            if let Lit::Int(n) = lit {
                if n < spec.min || n > spec.max {
                    p.error(
                        Code::BadAxisValue,
                        format!("{what} must be in {}..={}, got {n}", spec.min, spec.max),
                        v.span(),
                        "out of range",
                        format!("`{}` is the {}", spec.name, spec.doc),
                    );
                    return None;
                }
            }
            AxisValue::Lit(lit)
        }
    };
    if let Err(why) = check_value(key, &value) {
        p.error(
            Code::BadAxisValue,
            format!("{what} {why}"),
            v.span(),
            "not a valid value",
            match key {
                TrainKey::Loops => "write 4 (fixed), \"1..8\" (uniform per step) or \"poisson:4\"",
                _ => "see docs/sweeps.md, \"Sweeps that train\"",
            },
        );
        return None;
    }
    Some(value)
}

fn table<'t, 'i>(p: &mut Parser, name: &str, v: &'t Val<'i>) -> Option<&'t Table<'i>> {
    match v.get_ref() {
        DeValue::Table(t) => Some(t),
        other => {
            let t = Parser::type_name(other);
            p.error(
                Code::InvalidSweep,
                format!("`{name}` must be a table, not {t}"),
                v.span(),
                "expected a table",
                format!("write `[{name}]` followed by its keys (docs/sweeps.md)"),
            );
            None
        }
    }
}

/// Parses `[train]`; `None` after a diagnostic.
pub(super) fn parse_train(p: &mut Parser, v: &Val) -> Option<TrainTable> {
    let t = table(p, "train", v)?;
    let mut out = TrainTable {
        data: String::new(),
        data_span: None,
        seq: None,
        tokenizer: None,
        val_rows: None,
        seeds: 1,
        save_every: 50,
        keep_checkpoints: false,
        values: Vec::new(),
        tokens: None,
        row_tokens: 0,
    };
    let before = p.diags.len();
    let mut have_data = false;
    for (key, val) in Parser::entries(t) {
        let name: &str = key.get_ref();
        if let Some((k, spec)) = train_key(name) {
            if k == TrainKey::Steps && out.tokens.is_some() {
                p.error(
                    Code::InvalidSweep,
                    "`[train]` gives both `tokens` and `steps`",
                    val.span(),
                    "a second budget",
                    "give the budget once: steps = N, or tokens = N (steps follow from the batch)",
                );
            }
            if let Some(x) = train_value(p, k, spec, &format!("`train.{name}`"), val) {
                out.values.push((k, x));
            }
            continue;
        }
        match name {
            "data" => {
                if let Some(s) = p.string("data", val) {
                    have_data = !s.is_empty();
                    out.data = s;
                    out.data_span = Some(p.span(val.span()));
                }
            }
            "seq" => out.seq = p.uint("seq", val, 1).map(|n| n as usize),
            "tokens" => {
                out.tokens = p.uint("tokens", val, 1);
                if out.values.iter().any(|(k, _)| *k == TrainKey::Steps) {
                    p.error(
                        Code::InvalidSweep,
                        "`[train]` gives both `steps` and `tokens`",
                        val.span(),
                        "a second budget",
                        "give the budget once: steps = N, or tokens = N (steps follow from the batch)",
                    );
                }
            }
            "val_rows" => out.val_rows = p.uint("val_rows", val, 0).map(|n| n as usize),
            "seeds" => {
                if let Some(n) = p.uint("seeds", val, 1) {
                    out.seeds = n;
                }
            }
            "save_every" => {
                if let Some(n) = p.uint("save_every", val, 0) {
                    out.save_every = n;
                }
            }
            "keep_checkpoints" => match val.get_ref() {
                DeValue::Boolean(b) => out.keep_checkpoints = *b,
                _ => p.error(
                    Code::InvalidSweep,
                    "`keep_checkpoints` is true or false",
                    val.span(),
                    "expected a boolean",
                    "keep_checkpoints = true",
                ),
            },
            "tokenizer" => {
                if let Some(s) = p.string("tokenizer", val) {
                    match s.parse::<TokenizerChoice>() {
                        Ok(c) => out.tokenizer = Some(c),
                        Err(why) => p.error(
                            Code::InvalidSweep,
                            why,
                            val.span(),
                            "not a tokenizer",
                            "tokenizer = \"bytes\", \"bpe:512\" or a tokenizer.json path",
                        ),
                    }
                }
            }
            _ => {
                let mut known: Vec<&str> = TRAIN_KEYS.iter().map(|(_, s)| s.name).collect();
                known.extend(OTHER_TRAIN_KEYS);
                p.unknown_key(key, "[train]", &known);
            }
        }
    }
    if !have_data {
        p.error(
            Code::InvalidSweep,
            "`[train]` has no `data`",
            v.span(),
            "what do the trials train on?",
            "add data = \"task:add,terms=2,digits=3,rows=4096\" (a built-in task) or a data file relative to the sweep file",
        );
    }
    (p.diags.len() == before).then_some(out)
}

/// Parses `[eval]`.
pub(super) fn parse_eval(p: &mut Parser, v: &Val, out: &mut EvalTable) {
    let Some(t) = table(p, "eval", v) else {
        return;
    };
    for (key, val) in Parser::entries(t) {
        let name: &str = key.get_ref();
        match name {
            "data" => {
                out.data = p.string("data", val);
                out.data_span = Some(p.span(val.span()));
            }
            "batch" => {
                if let Some(n) = p.uint("batch", val, 1) {
                    out.batch = n as usize;
                }
            }
            "loops" => {
                let Some(items) = val.get_ref().as_array() else {
                    p.error(
                        Code::InvalidSweep,
                        "`eval.loops` is a list of loop counts",
                        val.span(),
                        "expected a list",
                        "loops = [1, 2, 4, 8]",
                    );
                    continue;
                };
                for item in items {
                    if let Some(n) = p.uint("eval.loops", item, 1) {
                        out.loops.push(n);
                    }
                }
                out.loops.sort_unstable();
                out.loops.dedup();
            }
            _ => p.unknown_key(key, "[eval]", &["data", "loops", "batch"]),
        }
    }
}

/// Parses `[early_stop]`.
pub(super) fn parse_early_stop(p: &mut Parser, v: &Val) -> Option<EarlyStop> {
    let t = table(p, "early_stop", v)?;
    let mut out = EarlyStop {
        min_steps: 0,
        eta: 3,
        primary: None,
        primary_span: None,
    };
    for (key, val) in Parser::entries(t) {
        let name: &str = key.get_ref();
        match name {
            "min_steps" => out.min_steps = p.uint("min_steps", val, 1)?,
            "eta" => out.eta = p.uint("eta", val, 2)?,
            "primary" => {
                let s = p.string("primary", val)?;
                out.primary_span = Some(p.span(p.inner_span(val, 0, s.len())));
                out.primary = Some(s);
            }
            _ => p.unknown_key(key, "[early_stop]", &["min_steps", "eta", "primary"]),
        }
    }
    if out.min_steps == 0 {
        p.error(
            Code::InvalidSweep,
            "`[early_stop]` has no `min_steps`",
            v.span(),
            "the first rung's budget is missing",
            "add min_steps = 50 (steps every trial trains before the first cut)",
        );
        return None;
    }
    Some(out)
}
