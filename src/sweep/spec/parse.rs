//! [`parse`]: the TOML of a sweep file, its keys, options, constraints and
//! objectives (axes in `axes.rs`).

use super::*;

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
    "slurm",
    "train",
    "eval",
    "early_stop",
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

pub(super) struct Parser {
    pub(super) file: FileId,
    pub(super) text: String,
    pub(super) diags: Vec<Diagnostic>,
}

pub(super) type Table<'i> = DeTable<'i>;
pub(super) type Val<'i> = Spanned<DeValue<'i>>;

impl Parser {
    pub(super) fn span(&self, r: Range<usize>) -> Span {
        Span::new(self.file, r.start, r.end)
    }

    pub(super) fn error(
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
    pub(super) fn entries<'t, 'i>(
        table: &'t Table<'i>,
    ) -> Vec<(&'t Spanned<std::borrow::Cow<'i, str>>, &'t Val<'i>)> {
        let mut v: Vec<_> = table.iter().collect();
        v.sort_by_key(|(k, _)| k.span().start);
        v
    }

    pub(super) fn type_name(v: &DeValue) -> &'static str {
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

    pub(super) fn string(&mut self, key: &str, v: &Val) -> Option<String> {
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

    pub(super) fn lit(&mut self, v: &Val) -> Option<Lit> {
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

    pub(super) fn uint(&mut self, key: &str, v: &Val, min: u64) -> Option<u64> {
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

    pub(super) fn unknown_key(
        &mut self,
        key: &Spanned<std::borrow::Cow<str>>,
        what: &str,
        known: &[&str],
    ) {
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
    pub(super) fn inner_span(&self, v: &Val, offset: usize, len: usize) -> Range<usize> {
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
            measure_train: false,
            measure_seq: 64,
            measure_decode: 8,
        },
        constraints: Vec::new(),
        strategy: Strategy::Grid,
        objectives: Vec::new(),
        slurm: SlurmTable::default(),
        train: None,
        eval: EvalTable {
            batch: 64,
            ..EvalTable::default()
        },
        early_stop: None,
    };
    let mut train_span = None;
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
            "slurm" => match v.get_ref() {
                DeValue::Table(t) => super::slurm::parse(&mut p, t, &mut sweep.slurm),
                other => {
                    let t = Parser::type_name(other);
                    p.error(
                        Code::InvalidSweep,
                        format!("`slurm` must be a table, not {t}"),
                        v.span(),
                        "expected a table",
                        "write `[slurm]` followed by `partition = \"gpu\"`",
                    );
                }
            },
            "train" => {
                train_span = Some(v.span());
                sweep.train = super::train::parse_train(&mut p, v);
            }
            "eval" => super::train::parse_eval(&mut p, v, &mut sweep.eval),
            "early_stop" => sweep.early_stop = super::train::parse_early_stop(&mut p, v),
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
    check_training(&mut p, &sweep, train_span);
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
                        "write measure = [\"cpu\"] or measure = [\"train\"]",
                    );
                    continue;
                };
                for item in list {
                    match item.get_ref().as_str() {
                        Some("cpu") => o.measure_cpu = true,
                        Some("train") => o.measure_train = true,
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
                            "measure takes \"cpu\" (time each trial) and \"train\" (train and score each trial)",
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

/// `measure = ["train"]`, `[train]`, the `train.*` axes and `[early_stop]`
/// go together.
fn check_training(p: &mut Parser, sweep: &SweepFile, train_span: Option<Range<usize>>) {
    let training = sweep.options.measure_train;
    match (training, &train_span) {
        (false, Some(at)) => p.error(
            Code::InvalidSweep,
            "`[train]` is given but the trials are not trained",
            at.clone(),
            "unused",
            "add measure = [\"train\"] under [options], or remove [train]",
        ),
        (true, None) => p.error(
            Code::InvalidSweep,
            "`measure = [\"train\"]` needs a `[train]` table",
            0..0,
            "[train] missing",
            "add [train] with at least data = \"task:...\" or a data file, and steps",
        ),
        _ => {}
    }
    let steps_axis = sweep
        .axes
        .iter()
        .find(|a| matches!(a.target, Target::Train(TrainKey::Steps)));
    if let (Some(a), Some(_)) = (steps_axis, sweep.train.as_ref().and_then(|t| t.tokens)) {
        let d = Diagnostic::error(
            Code::UnknownAxis,
            "`train.steps` as an axis and `[train] tokens` both set the budget",
        )
        .label(a.span, "a budget axis")
        .help("vary `train.batch` under a token budget, or drop `tokens` and vary the steps");
        p.diags.push(d);
    }
    if !training {
        if let Some(a) = sweep
            .axes
            .iter()
            .find(|a| matches!(a.target, Target::Train(_)))
        {
            let d = Diagnostic::error(
                Code::UnknownAxis,
                format!(
                    "axis `{}` varies the training, but the trials are not trained",
                    a.path
                ),
            )
            .label(a.span, "a training axis")
            .help("add measure = [\"train\"] under [options] and a [train] table");
            p.diags.push(d);
        }
        if sweep.early_stop.is_some() {
            p.error(
                Code::InvalidSweep,
                "`[early_stop]` stops trainings early, but the trials are not trained",
                0..0,
                "nothing to stop",
                "add measure = [\"train\"] under [options] and a [train] table",
            );
        }
    }
}
