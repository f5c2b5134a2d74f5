//! Evaluation of expressions: names resolved lazily (late binding through
//! `extends`), memoised, with cycles, overflow and division by zero reported.
//!
//! An expression that fails yields `None` after one diagnostic; whatever
//! depends on it is skipped silently, so one mistake gives one error.

use super::loader::{FileIndex, Loader};
use super::merge::{Entry, FieldsId, Merged};
pub use super::schema::Value;
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::suggest;
use crate::syntax::ast::{BinOp, Expr, ExprKind, Item, Let};
use std::collections::{HashMap, HashSet};

/// Where an expression was written: its field list (for sibling fields) and file.
#[derive(Clone, Copy, Debug)]
pub struct Ctx {
    pub fields: Option<FieldsId>,
    pub file: FileIndex,
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
enum Key {
    Model(String),
    FileLet(FileIndex, String),
    Field(FieldsId, String),
}

/// Default values of model settings, visible to expressions when not set.
pub type Defaults = fn(&str) -> Option<Value>;

pub struct Evaluator<'m, 'a> {
    pub merged: &'m Merged<'a>,
    loader: &'a Loader,
    defaults: Defaults,
    memo: HashMap<Key, Option<Value>>,
    visiting: Vec<(Key, Span)>,
    /// Model `let`s and file-level lets that some expression named.
    pub used: HashSet<(Option<FileIndex>, String)>,
    pub diags: Vec<Diagnostic>,
}

impl<'m, 'a> Evaluator<'m, 'a> {
    pub fn new(merged: &'m Merged<'a>, loader: &'a Loader, defaults: Defaults) -> Self {
        Evaluator {
            merged,
            loader,
            defaults,
            memo: HashMap::new(),
            visiting: Vec::new(),
            used: HashSet::new(),
            diags: Vec::new(),
        }
    }

    /// The value of an entry (a setting, let or field).
    pub fn entry(&mut self, entry: &Entry<'a>, fields: Option<FieldsId>) -> Option<Value> {
        let key = match fields {
            Some(id) => Key::Field(id, entry.key.name.clone()),
            None => Key::Model(entry.key.name.clone()),
        };
        let ctx = Ctx {
            fields,
            file: entry.file,
        };
        self.memoised(key, entry.key.span, |ev| ev.expr(entry.value, ctx))
    }

    /// Evaluates an expression written at `ctx`.
    pub fn expr(&mut self, expr: &Expr, ctx: Ctx) -> Option<Value> {
        match &expr.kind {
            ExprKind::Int(v, _) => Some(Value::Int(*v)),
            ExprKind::Float(v, _) => Some(Value::Float(*v)),
            ExprKind::Bool(v) => Some(Value::Bool(*v)),
            // Already reported by the parser.
            ExprKind::Invalid(_) => None,
            ExprKind::Paren(inner) => self.expr(inner, ctx),
            ExprKind::Name(name) => self.name(name, expr.span, ctx),
            ExprKind::Neg(inner) => match self.expr(inner, ctx)? {
                Value::Int(v) => match v.checked_neg() {
                    Some(n) => Some(Value::Int(n)),
                    None => self.fail(overflow(expr.span, &format!("-({v})"))),
                },
                Value::Float(v) => Some(Value::Float(-v)),
                Value::Bool(_) => self.fail(
                    Diagnostic::error(Code::WrongType, "cannot negate a boolean")
                        .label(expr.span, "`-` needs a number")
                        .help("booleans are `true` or `false`; there is no `-true`"),
                ),
            },
            ExprKind::Binary(op, lhs, rhs) => {
                let l = self.expr(lhs, ctx);
                let r = self.expr(rhs, ctx);
                self.binary(*op, l?, r?, expr.span, lhs.span, rhs.span)
            }
        }
    }

    fn binary(
        &mut self,
        op: BinOp,
        l: Value,
        r: Value,
        span: Span,
        ls: Span,
        rs: Span,
    ) -> Option<Value> {
        use Value::*;
        let sym = op.symbol();
        for (v, s) in [(l, ls), (r, rs)] {
            if let Bool(_) = v {
                return self.fail(
                    Diagnostic::error(
                        Code::WrongType,
                        format!("`{sym}` needs numbers, found a boolean"),
                    )
                    .label(s, "this is a boolean")
                    .help("arithmetic works on integers and floats only"),
                );
            }
        }
        if matches!(op, BinOp::FloorDiv | BinOp::Rem) {
            let (Int(a), Int(b)) = (l, r) else {
                let s = if matches!(l, Float(_)) { ls } else { rs };
                return self.fail(
                    Diagnostic::error(
                        Code::WrongType,
                        format!("`{sym}` needs integers, found a float"),
                    )
                    .label(s, "this is a float")
                    .help("`//` and `%` are integer operations; use `/` for float division"),
                );
            };
            if b == 0 {
                return self.fail(division_by_zero(span, rs));
            }
            let (Some(q), Some(r)) = (a.checked_div_euclid(b), a.checked_rem_euclid(b)) else {
                return self.fail(overflow(span, &format!("{a} {sym} {b}")));
            };
            // Floor semantics (Python): the quotient rounds toward negative
            // infinity and the remainder takes the divisor's sign.
            let (q, m) = if b < 0 && r != 0 {
                (q - 1, r + b)
            } else {
                (q, r)
            };
            return Some(Int(if op == BinOp::FloorDiv { q } else { m }));
        }
        if let (Int(a), Int(b)) = (l, r) {
            let result = match op {
                BinOp::Add => a.checked_add(b),
                BinOp::Sub => a.checked_sub(b),
                BinOp::Mul => a.checked_mul(b),
                _ => {
                    if b == 0 {
                        return self.fail(division_by_zero(span, rs));
                    }
                    return Some(Float(a as f64 / b as f64));
                }
            };
            return match result {
                Some(v) => Some(Int(v)),
                None => self.fail(overflow(span, &format!("{a} {sym} {b}"))),
            };
        }
        let as_f = |v: Value| match v {
            Int(i) => i as f64,
            Float(f) => f,
            Bool(_) => unreachable!("booleans rejected above"),
        };
        let (a, b) = (as_f(l), as_f(r));
        if op == BinOp::Div && b == 0.0 {
            return self.fail(division_by_zero(span, rs));
        }
        let v = match op {
            BinOp::Add => a + b,
            BinOp::Sub => a - b,
            BinOp::Mul => a * b,
            _ => a / b,
        };
        if !v.is_finite() {
            return self.fail(overflow(span, &format!("{a} {sym} {b}")));
        }
        Some(Float(v))
    }

    fn name(&mut self, name: &str, span: Span, ctx: Ctx) -> Option<Value> {
        let merged = self.merged;
        if let Some(id) = ctx.fields {
            if let Some(entry) = merged.fields(id).iter().find(|e| e.key.name == name) {
                return self.entry(&entry.clone(), Some(id));
            }
        }
        let model_entry = merged
            .settings
            .iter()
            .chain(&merged.lets)
            .find(|e| e.key.name == name)
            .copied();
        if let Some(entry) = model_entry {
            self.used.insert((None, name.to_string()));
            return self.track(span, |ev| ev.entry(&entry, None));
        }
        if let Some(v) = (self.defaults)(name) {
            return Some(v);
        }
        if let Some((file, l)) = self.file_let(ctx.file, name) {
            self.used.insert((Some(file), name.to_string()));
            let key = Key::FileLet(file, name.to_string());
            let ctx = Ctx { fields: None, file };
            return self.track(span, |ev| {
                ev.memoised(key, l.name.span, |ev| ev.expr(&l.value, ctx))
            });
        }
        let mut candidates: Vec<String> = merged
            .settings
            .iter()
            .chain(&merged.lets)
            .map(|e| e.key.name.clone())
            .collect();
        if let Some(id) = ctx.fields {
            candidates.extend(merged.fields(id).iter().map(|e| e.key.name.clone()));
        }
        candidates.extend(self.visible_file_lets(ctx.file));
        candidates.extend(super::schema::SETTINGS.iter().map(|s| s.name.to_string()));
        candidates.sort();
        candidates.dedup();
        self.fail(
            Diagnostic::error(Code::UnknownName, format!("no value named `{name}`"))
                .label(span, "not found in this scope")
                .help(suggest::help_for(
                    name,
                    "names in scope",
                    candidates.iter().map(|s| s.as_str()),
                )),
        )
    }

    /// Notes the use site so a cycle can point at it.
    fn track(&mut self, span: Span, f: impl FnOnce(&mut Self) -> Option<Value>) -> Option<Value> {
        if let Some(last) = self.visiting.last_mut() {
            last.1 = span;
        }
        f(self)
    }

    fn memoised(
        &mut self,
        key: Key,
        def_span: Span,
        f: impl FnOnce(&mut Self) -> Option<Value>,
    ) -> Option<Value> {
        if let Some(v) = self.memo.get(&key) {
            return *v;
        }
        if let Some(pos) = self.visiting.iter().position(|(k, _)| *k == key) {
            let names: Vec<String> = self.visiting[pos..]
                .iter()
                .map(|(k, _)| key_name(k))
                .collect();
            let use_span = self.visiting.last().map_or(def_span, |v| v.1);
            let diag = Diagnostic::error(
                Code::ValueCycle,
                format!("`{}` is defined in terms of itself", key_name(&key)),
            )
            .label(use_span, "this use closes the cycle")
            .secondary(def_span, "defined here")
            .note(format!(
                "cycle: {} -> {}",
                names.join(" -> "),
                key_name(&key)
            ))
            .help("give one of these values a definition that does not depend on the others");
            // Every value on the cycle fails; only this one diagnostic is reported.
            for (k, _) in &self.visiting[pos..] {
                self.memo.insert(k.clone(), None);
            }
            return self.fail(diag);
        }
        self.visiting.push((key.clone(), def_span));
        let v = f(self);
        self.visiting.pop();
        if let Some(existing) = self.memo.get(&key) {
            // Part of a cycle found below: keep it failed.
            return *existing;
        }
        self.memo.insert(key, v);
        v
    }

    fn fail(&mut self, diag: Diagnostic) -> Option<Value> {
        self.diags.push(diag);
        None
    }

    /// A file-level `let` visible from `file`: its own, then its imports'.
    fn file_let(&self, file: FileIndex, name: &str) -> Option<(FileIndex, &'a Let)> {
        let loader = self.loader;
        std::iter::once(file)
            .chain(loader.file(file).imports.iter().copied())
            .find_map(|f| {
                file_lets(loader, f)
                    .find(|l| l.name.name == name)
                    .map(|l| (f, l))
            })
    }

    fn visible_file_lets(&self, file: FileIndex) -> Vec<String> {
        let loader = self.loader;
        std::iter::once(file)
            .chain(loader.file(file).imports.iter().copied())
            .flat_map(|f| file_lets(loader, f).map(|l| l.name.name.clone()))
            .collect()
    }
}

/// The file-level `let`s of a file.
pub fn file_lets(loader: &Loader, file: FileIndex) -> impl Iterator<Item = &Let> {
    loader.file(file).ast.items.iter().filter_map(|i| match i {
        Item::Let(l) => Some(l),
        _ => None,
    })
}

fn key_name(key: &Key) -> String {
    match key {
        Key::Model(n) | Key::FileLet(_, n) | Key::Field(_, n) => n.clone(),
    }
}

fn overflow(span: Span, what: &str) -> Diagnostic {
    Diagnostic::error(Code::Overflow, "integer overflow")
        .label(
            span,
            format!("`{what}` does not fit in a signed 64-bit integer"),
        )
        .help("check the operands; sizes this large cannot be allocated anyway")
}

fn division_by_zero(span: Span, divisor: Span) -> Diagnostic {
    Diagnostic::error(Code::DivisionByZero, "division by zero")
        .label(divisor, "this is zero")
        .secondary(span, "in this division")
        .help("the divisor must not be zero")
}
