//! The `[axes]` table: axis paths resolved to what they change, and their
//! values checked against the setting or field (ranges in `ranges.rs`).

use super::*;

pub(super) fn parse_axes(p: &mut Parser, prefix: &str, t: &Table, out: &mut Vec<Axis>) {
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
                if let Target::Train(key) = target {
                    if let Some(why) = values
                        .iter()
                        .find_map(|x| super::train::check_value(key, x).err())
                    {
                        p.error(
                            Code::BadAxisValue,
                            format!("axis `{path}`: a value of the range {why}"),
                            v.span(),
                            "not a valid value",
                            "start the range at a valid value",
                        );
                    }
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

pub(super) fn find_spec(specs: &'static [FieldSpec], name: &str) -> Option<&'static FieldSpec> {
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
            schema::SETTINGS
                .iter()
                .find(|s| s.name == *setting)
                .map(Target::Setting)
                .ok_or_else(|| {
                    let mut names: Vec<&str> = schema::SETTINGS.iter().map(|s| s.name).collect();
                    names.extend(["loop.max", "attention", "ffn.moe", "ffn.dense"]);
                    match suggest::closest(setting, names.iter().copied()) {
                        Some(c) => format!("did you mean `{c}`? {examples}"),
                        None => examples.to_string(),
                    }
                })
        }
        ["loop", "max"] => Ok(Target::LoopMax),
        ["train", key] => super::train::train_key(key)
            .map(|(k, _)| Target::Train(k))
            .ok_or_else(|| {
                suggest::help_for(
                    key,
                    "training axes",
                    super::train::TRAIN_KEYS.iter().map(|(_, s)| s.name),
                )
            }),
        ["loop", feature, rest @ ..] if rest.len() <= 1 => {
            let Some(&(keyword, kinds)) = schema::LOOP_FEATURES.iter().find(|(f, _)| f == feature)
            else {
                let all: Vec<String> = schema::LOOP_FEATURES
                    .iter()
                    .map(|(f, _)| *f)
                    .chain(["max"])
                    .map(|f| format!("loop.{f}"))
                    .collect();
                return Err(suggest::help_for(
                    &format!("loop.{feature}"),
                    "loop axes",
                    all.iter().map(String::as_str),
                ));
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
pub(super) fn typed_lit(p: &mut Parser, spec: &FieldSpec, what: &str, v: &Val) -> Option<Lit> {
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
        Target::Train(key) => {
            let (_, spec) = super::train::train_key(train_name(*key))?;
            super::train::train_value(p, *key, spec, &what, v)
        }
    }
}

const LOOP_MAX: FieldSpec = FieldSpec {
    name: "max",
    ty: Ty::Int,
    default: schema::Absent::Required,
    min: 1,
    max: 1 << 20,
    doc: "loop iterations",
};

/// The name of a training key (`lr`).
pub(super) fn train_name(key: super::TrainKey) -> &'static str {
    super::train::TRAIN_KEYS
        .iter()
        .find(|(k, _)| *k == key)
        .map_or("", |(_, s)| s.name)
}
