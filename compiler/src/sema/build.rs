//! From a merged model to the checked [`model::Model`]: settings and fields
//! read with their types and defaults, kinds resolved, every check made.
//! All problems are reported; the model is returned only when there are none.

use super::eval::{Ctx, Evaluator};
use super::merge::{Entry, FieldsId, MergedDef};
use super::schema::{Absent, Spec, Ty, Value};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::suggest;

/// Reads typed values out of one field list (or the model settings).
pub struct Reader<'e, 'm, 'a> {
    pub ev: &'e mut Evaluator<'m, 'a>,
    entries: Vec<Entry<'a>>,
    fields: Option<FieldsId>,
    specs: &'static [Spec],
    /// Where to point when a required field is missing.
    owner: Span,
    what: String,
    pub ok: bool,
}

impl<'e, 'm, 'a> Reader<'e, 'm, 'a> {
    pub fn new(
        ev: &'e mut Evaluator<'m, 'a>,
        entries: Vec<Entry<'a>>,
        fields: Option<FieldsId>,
        specs: &'static [Spec],
        owner: Span,
        what: String,
    ) -> Self {
        let mut r = Reader {
            ev,
            entries,
            fields,
            specs,
            owner,
            what,
            ok: true,
        };
        r.check_unknown();
        r
    }

    fn check_unknown(&mut self) {
        let names: Vec<&str> = self.specs.iter().map(|s| s.name).collect();
        for e in &self.entries {
            if names.contains(&e.key.name.as_str()) {
                continue;
            }
            let (code, message, help) = if self.fields.is_none() {
                (
                    Code::UnknownSetting,
                    format!("unknown model setting `{}`", e.key.name),
                    suggest::help_for(&e.key.name, "settings", names.iter().copied()),
                )
            } else if names.is_empty() {
                (
                    Code::UnknownField,
                    format!("{} takes no fields", self.what),
                    "remove the `{ ... }`".to_string(),
                )
            } else {
                (
                    Code::UnknownField,
                    format!("{} has no field `{}`", self.what, e.key.name),
                    suggest::help_for(&e.key.name, "fields", names.iter().copied()),
                )
            };
            let help = if self.fields.is_none() && !help.starts_with("did you mean") {
                format!(
                    "{help}; for a named value of your own write `let {} = ...`",
                    e.key.name
                )
            } else {
                help
            };
            self.ev.diags.push(
                Diagnostic::error(code, message)
                    .label(e.key.span, "unknown")
                    .help(help),
            );
            self.ok = false;
        }
    }

    fn spec(&self, name: &str) -> &'static Spec {
        self.specs
            .iter()
            .find(|s| s.name == name)
            .expect("reader asked for a field of its own spec")
    }

    /// The entry's span, or the owner's when the value is a default.
    pub fn span_of(&self, name: &str) -> Span {
        self.entries
            .iter()
            .find(|e| e.key.name == name)
            .map_or(self.owner, |e| e.value.span)
    }

    pub fn is_given(&self, name: &str) -> bool {
        self.entries.iter().any(|e| e.key.name == name)
    }

    /// The value of a field, type-checked; `None` if absent-and-optional or failed.
    fn value(&mut self, name: &str) -> Option<Value> {
        let spec = self.spec(name);
        let Some(entry) = self.entries.iter().find(|e| e.key.name == name).copied() else {
            return match spec.default {
                Absent::Value(v) => Some(v),
                Absent::Optional => None,
                Absent::Required => {
                    let (code, msg) = if self.fields.is_none() {
                        (
                            Code::MissingField,
                            format!("model is missing the setting `{name}`"),
                        )
                    } else {
                        (
                            Code::MissingField,
                            format!("{} is missing the field `{name}`", self.what),
                        )
                    };
                    self.ev.diags.push(
                        Diagnostic::error(code, msg)
                            .label(
                                self.owner,
                                format!("`{name}` ({}) is required here", spec.doc),
                            )
                            .help(format!("add `{name} = ...` ({})", spec.doc)),
                    );
                    self.ok = false;
                    None
                }
            };
        };
        let v = self.ev.entry(&entry, self.fields);
        let Some(v) = v else {
            self.ok = false;
            return None;
        };
        let fits = matches!(
            (spec.ty, v),
            (Ty::Int, Value::Int(_))
                | (Ty::Float, Value::Float(_) | Value::Int(_))
                | (Ty::Bool, Value::Bool(_))
        );
        if !fits {
            let wanted = match spec.ty {
                Ty::Int => "an integer",
                Ty::Float => "a number",
                Ty::Bool => "`true` or `false`",
            };
            let help = match (spec.ty, v) {
                (Ty::Int, Value::Float(_)) => {
                    "use an integer literal, or `//` for integer division".to_string()
                }
                (Ty::Bool, _) => format!("write `{name} = true` or `{name} = false`"),
                _ => format!("`{name}` is {}", spec.doc),
            };
            self.ev.diags.push(
                Diagnostic::error(
                    Code::WrongType,
                    format!("`{name}` must be {wanted}, found {}", v.type_name()),
                )
                .label(entry.value.span, format!("this is {}", v.describe()))
                .help(help),
            );
            self.ok = false;
            return None;
        }
        Some(v)
    }

    /// An integer field checked against its range.
    pub fn int(&mut self, name: &str) -> Option<u64> {
        let spec = self.spec(name);
        let Value::Int(v) = self.value(name)? else {
            unreachable!("type checked")
        };
        if v < spec.min || v > spec.max {
            let bound = if v < spec.min {
                if spec.min == 1 {
                    "positive".to_string()
                } else {
                    format!("at least {}", spec.min)
                }
            } else {
                format!("at most {}", spec.max)
            };
            let span = self.span_of(name);
            self.ev.diags.push(
                Diagnostic::error(
                    Code::OutOfRange,
                    format!("`{name}` must be {bound}, found {v}"),
                )
                .label(span, format!("{} out of range", spec.doc))
                .help(format!(
                    "`{name}` takes values from {} to {}",
                    spec.min, spec.max
                )),
            );
            self.ok = false;
            return None;
        }
        Some(v as u64)
    }

    pub fn float(&mut self, name: &str) -> Option<f64> {
        match self.value(name)? {
            Value::Int(v) => Some(v as f64),
            Value::Float(v) => Some(v),
            Value::Bool(_) => unreachable!("type checked"),
        }
    }

    pub fn bool(&mut self, name: &str) -> Option<bool> {
        match self.value(name)? {
            Value::Bool(b) => Some(b),
            _ => unreachable!("type checked"),
        }
    }

    /// Reports a float outside `(lo, hi)` bounds described by `bound`.
    pub fn float_in(
        &mut self,
        name: &str,
        ok: impl Fn(f64) -> bool,
        bound: &str,
        code: Code,
    ) -> Option<f64> {
        let v = self.float(name)?;
        if !ok(v) {
            let span = self.span_of(name);
            let doc = self.spec(name).doc;
            self.ev.diags.push(
                Diagnostic::error(code, format!("`{name}` must be {bound}, found {v}"))
                    .label(span, format!("{doc} out of range"))
                    .help(format!("choose a value {bound}")),
            );
            self.ok = false;
            return None;
        }
        Some(v)
    }

    /// Records an error about this reader's fields.
    pub fn error(&mut self, diag: Diagnostic) {
        self.ev.diags.push(diag);
        self.ok = false;
    }
}

/// Looks up the kind of a definition or feature; E0105/E0116 when unknown or missing.
pub fn resolve_kind(
    ev: &mut Evaluator,
    def: &MergedDef,
    sort: &str,
    kinds: &'static [(&'static str, &'static [Spec])],
) -> Option<(&'static str, &'static [Spec])> {
    let written = def.kind.map(|k| k.name.as_str()).unwrap_or("");
    if let Some(&(name, specs)) = kinds.iter().find(|(n, _)| *n == written) {
        return Some((name, specs));
    }
    let names: Vec<&str> = kinds
        .iter()
        .map(|(n, _)| *n)
        .filter(|n| !n.is_empty())
        .collect();
    let diag = match def.kind {
        None => Diagnostic::error(Code::MissingKind, format!("`{}` needs a kind", def.name))
            .label(def.span, "no kind given")
            .help(format!(
                "write `{} {} ...`; the kinds are {}",
                def.name,
                names[0],
                quoted(&names)
            )),
        Some(k) => Diagnostic::error(
            Code::UnknownKind,
            format!("unknown {sort} kind `{}`", k.name),
        )
        .label(k.span, "unknown kind")
        .help(suggest::help_for(
            &k.name,
            &format!("{sort} kinds"),
            names.iter().copied(),
        )),
    };
    ev.diags.push(diag);
    None
}

fn quoted(names: &[&str]) -> String {
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Where a block count or loop `max` is evaluated: outside any field list.
pub fn block_ctx(file: usize) -> Ctx {
    Ctx { fields: None, file }
}
