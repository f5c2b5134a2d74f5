//! Trials: the points of the axes, the variant spec of each (`import` the base,
//! `model sweep_trial extends BASE { overrides }`), its content hash, and its
//! evaluation (check, lower, analyze, flatten the report to metrics).

use super::spec::{AxisValue, Sort, Strategy, SweepFile, Target};
use mythos_compiler::analysis::{self, Report};
use mythos_compiler::diag;
use mythos_compiler::ir;
use mythos_compiler::sema::{self, schema, Loader};
use std::collections::{BTreeMap, HashSet};

/// One planned trial: an index into each axis's values.
#[derive(Clone, Debug)]
pub struct Point {
    /// Position in the plan (grid order, or draw order for random search).
    pub index: usize,
    pub choice: Vec<usize>,
}

/// The points to run, in order.
pub fn plan(sweep: &SweepFile) -> Vec<Point> {
    // A tied group of axes is one dimension: its axes share a value index.
    let sizes = sweep.group_sizes();
    let total: u128 = sizes
        .iter()
        .fold(1u128, |n, &s| n.saturating_mul(s as u128));
    let decode = |mut i: u128| -> Vec<usize> {
        // Last axis varies fastest (like nested loops in file order).
        let mut choice = vec![0; sizes.len()];
        for (k, &s) in sizes.iter().enumerate().rev() {
            choice[k] = (i % s as u128) as usize;
            i /= s as u128;
        }
        choice
    };
    let indices: Vec<u128> = match sweep.strategy {
        Strategy::Grid => (0..total).collect(),
        Strategy::Random { seed, budget } => {
            let budget = (budget as u128).min(total);
            let mut rng = SplitMix(seed ^ 0x6d79_7468_6f73_2121);
            let mut seen = HashSet::new();
            let mut out = Vec::new();
            while (out.len() as u128) < budget {
                let i = rng.below(total);
                if seen.insert(i) {
                    out.push(i);
                }
            }
            out
        }
    };
    indices
        .into_iter()
        .enumerate()
        .map(|(index, i)| {
            let group = decode(i);
            Point {
                index,
                choice: sweep.axes.iter().map(|a| group[a.group]).collect(),
            }
        })
        .collect()
}

/// splitmix64: a tiny seeded generator whose stream never changes.
struct SplitMix(u64);

impl SplitMix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in `[0, n)` (n >= 1), by rejection.
    fn below(&mut self, n: u128) -> u128 {
        let wide = ((self.next() as u128) << 64) | self.next() as u128;
        let zone = u128::MAX - u128::MAX % n;
        if wide < zone {
            wide % n
        } else {
            self.below(n)
        }
    }
}

/// How the variant spec names its base.
#[derive(Clone, Debug)]
pub struct Base {
    /// The string in `import "..."`.
    pub import: String,
    /// The name the Loader knows the variant file by (next to the base file,
    /// so that the relative import resolves).
    pub virtual_name: String,
    /// The model the variant extends.
    pub model: String,
    /// The variant's own model name (not a name the base file uses).
    pub trial_model: String,
    /// Texts of the base file and its imports: part of every trial's hash.
    pub sources: String,
}

#[derive(Default)]
struct Feature {
    kind: String,
    /// Field names and their values as the spec writes them.
    fields: Vec<(String, String)>,
}

/// Loop features in the order the language documents them.
fn feature_order(keyword: &str) -> usize {
    schema::loop_feature(keyword).map_or(schema::LOOP_FEATURES.len(), |(i, _)| i)
}

fn set_field(fields: &mut Vec<(String, String)>, name: &str, v: String) {
    match fields.iter_mut().find(|(k, _)| k == name) {
        Some(f) => f.1 = v,
        None => fields.push((name.to_string(), v)),
    }
}

fn field_list(fields: &[(String, String)]) -> String {
    if fields.is_empty() {
        return String::new();
    }
    let f: Vec<String> = fields.iter().map(|(k, v)| format!("{k} = {v}")).collect();
    format!(" {{ {} }}", f.join(", "))
}

fn spec_fields(fields: &[(String, super::spec::Lit)]) -> Vec<(String, String)> {
    fields
        .iter()
        .map(|(k, v)| (k.clone(), v.spec_text()))
        .collect()
}

/// The variant spec of one point.
pub fn variant_text(sweep: &SweepFile, base: &Base, point: &Point) -> String {
    let mut settings = Vec::new();
    let mut loop_max = None;
    let mut features: BTreeMap<usize, (&str, Feature)> = BTreeMap::new();
    let mut defs: BTreeMap<(Sort, String), Feature> = BTreeMap::new();
    // Whole definitions and feature kinds first, then fields on top of them.
    for pass in 0..2 {
        for (axis, &c) in sweep.axes.iter().zip(&point.choice) {
            let value = &axis.values[c];
            // A literal or a derived value, as the spec writes it.
            let text = value.spec_text();
            match (&axis.target, value, pass) {
                (Target::Setting(spec), _, 0) if text.is_some() => {
                    settings.push((spec.name, text.unwrap_or_default()))
                }
                (Target::LoopMax, _, 0) if text.is_some() => loop_max = text,
                (
                    Target::Feature {
                        keyword,
                        field: None,
                        ..
                    },
                    AxisValue::Kind { kind, fields },
                    0,
                ) => {
                    let order = feature_order(keyword);
                    let f = &mut features
                        .entry(order)
                        .or_insert((keyword, Feature::default()))
                        .1;
                    f.kind = kind.clone();
                    f.fields = spec_fields(fields);
                }
                (
                    Target::Feature {
                        keyword,
                        field: Some(spec),
                        field_kind,
                        ..
                    },
                    _,
                    1,
                ) if text.is_some() => {
                    let order = feature_order(keyword);
                    let entry = features.entry(order).or_insert_with(|| {
                        (
                            keyword,
                            Feature {
                                kind: field_kind.to_string(),
                                fields: Vec::new(),
                            },
                        )
                    });
                    set_field(&mut entry.1.fields, spec.name, text.unwrap_or_default());
                }
                (
                    Target::Def {
                        sort,
                        name,
                        field: None,
                        ..
                    },
                    AxisValue::Kind { kind, fields },
                    0,
                ) => {
                    let d = defs.entry((*sort, name.clone())).or_default();
                    d.kind = kind.clone();
                    d.fields = spec_fields(fields);
                }
                (
                    Target::Def {
                        sort,
                        name,
                        field: Some(spec),
                        base_kind,
                    },
                    _,
                    1,
                ) if text.is_some() => {
                    let d = defs
                        .entry((*sort, name.clone()))
                        .or_insert_with(|| Feature {
                            kind: base_kind.clone().unwrap_or_default(),
                            fields: Vec::new(),
                        });
                    set_field(&mut d.fields, spec.name, text.unwrap_or_default());
                }
                _ => {}
            }
        }
    }
    let mut out = String::new();
    out.push_str("# Generated by `mythos sweep`.\n");
    out.push_str(&format!("import \"{}\"\n\n", base.import));
    out.push_str(&format!(
        "model {} extends {} {{\n",
        base.trial_model, base.model
    ));
    for (name, v) in &settings {
        out.push_str(&format!("  {name} = {v}\n"));
    }
    for ((sort, name), d) in &defs {
        let default_name = match sort {
            Sort::Attention => "attention",
            Sort::Ffn => d.kind.as_str(),
        };
        let alias = if name == default_name {
            String::new()
        } else {
            format!(" as {name}")
        };
        out.push_str(&format!(
            "  {} {}{alias}{}\n",
            sort.keyword(),
            d.kind,
            field_list(&d.fields)
        ));
    }
    if loop_max.is_some() || !features.is_empty() {
        let max = loop_max.map_or(String::new(), |l| format!(" max {l}"));
        if features.is_empty() {
            out.push_str(&format!("  loop{max} {{}}\n"));
        } else {
            out.push_str(&format!("  loop{max} {{\n"));
            for (keyword, f) in features.values() {
                let kind = if f.kind.is_empty() {
                    String::new()
                } else {
                    format!(" {}", f.kind)
                };
                out.push_str(&format!("    {keyword}{kind}{}\n", field_list(&f.fields)));
            }
            out.push_str("  }\n");
        }
    }
    out.push_str("}\n");
    out
}

/// FNV-1a 64 of the parts, separated so that no two splits collide.
pub fn fnv1a64(parts: &[&str]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for part in parts {
        for &b in part.as_bytes().iter().chain(&[0xff]) {
            h ^= b as u64;
            h = h.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    h
}

/// The trial's identity: the variant, its base's text, the analysis options
/// and the compiler version (a new version may count differently).
pub fn trial_hash(base: &Base, text: &str, options_key: &str) -> String {
    format!(
        "{:016x}",
        fnv1a64(&[env!("CARGO_PKG_VERSION"), &base.sources, text, options_key])
    )
}

/// What evaluating one trial gives.
pub enum Outcome {
    Ok(BTreeMap<String, f64>),
    /// The variant does not check: the rendered diagnostics.
    Failed(String),
}

/// Checks, lowers and analyzes one variant spec.
pub fn evaluate(base: &Base, text: &str, opts: &analysis::Options) -> Outcome {
    let mut loader = Loader::new();
    loader.add_virtual(&base.virtual_name, text.as_bytes().to_vec());
    let checked = sema::check_file(&mut loader, &base.virtual_name);
    if checked.has_errors() {
        let errors: Vec<_> = checked
            .diagnostics
            .iter()
            .filter(|d| d.is_error())
            .cloned()
            .collect();
        return Outcome::Failed(diag::render(&loader.sources, &errors));
    }
    let model = match sema::select(&checked, Some(&base.trial_model), &base.virtual_name) {
        Ok(m) => m,
        Err(d) => return Outcome::Failed(diag::render(&loader.sources, &[d])),
    };
    let module = ir::lower::lower(model);
    Outcome::Ok(metrics(&analysis::analyze(&module, opts)))
}

/// The checked model of a trial's variant spec (already known to check),
/// or the rendered diagnostic.
pub fn load(base: &Base, text: &str) -> Result<mythos_compiler::model::Model, String> {
    let mut loader = Loader::new();
    loader.add_virtual(&base.virtual_name, text.as_bytes().to_vec());
    let checked = sema::check_file(&mut loader, &base.virtual_name);
    sema::select(&checked, Some(&base.trial_model), &base.virtual_name)
        .cloned()
        .map_err(|d| diag::render(&loader.sources, &[d]))
}

/// Times a trial on the CPU runtime with random weights (seed 0): a prefill
/// of `seq` tokens and `decode` single-token steps. The metrics are
/// [`spec::CPU_METRICS`](super::spec::CPU_METRICS).
pub fn measure_cpu(
    base: &Base,
    text: &str,
    loops: Option<u64>,
    seq: usize,
    decode: usize,
) -> Result<BTreeMap<String, f64>, String> {
    let module = ir::lower::lower(&load(base, text)?);
    if (seq + decode) as u64 > module.max_seq {
        return Err(format!(
            "measure_seq + measure_decode ({}) exceeds the model's max_seq ({})",
            seq + decode,
            module.max_seq
        ));
    }
    let weights = mythos_runtime::weights::Weights::init(&module, 0);
    let opts = crate::run::BenchOptions {
        seq,
        decode,
        loops,
        seed: 0,
        repeats: 1,
        profile: false,
    };
    let r = crate::run::bench(&module, &weights, None, &opts).map_err(|e| format!("{e:#}"))?;
    Ok(BTreeMap::from([
        ("cpu.prefill_ms".to_string(), r.prefill_ms),
        (
            "cpu.prefill_tokens_per_s".to_string(),
            r.prefill_tokens_per_s,
        ),
        ("cpu.decode_ms_per_token".to_string(), r.decode_ms_per_token),
        ("cpu.decode_tokens_per_s".to_string(), r.decode_tokens_per_s),
    ]))
}

/// The report's numbers under dotted names (`params.total`, `kv_cache.compact_bytes_per_token`).
pub fn metrics(report: &Report) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    let value = serde_json::to_value(report).unwrap_or_default();
    flatten("", &value, &mut out);
    out
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64().filter(|x| x.is_finite()) {
                out.insert(prefix.to_string(), x);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {}
    }
}
