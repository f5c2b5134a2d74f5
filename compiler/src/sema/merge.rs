//! Name scopes and `extends`: which models a file sees, the chain of parents
//! of a model, and the merging of that chain into one [`Merged`] view.
//!
//! Merge rules (docs/language.md, "Variants"): settings and lets override by
//! name; a definition with the same name and kind merges fields, with another
//! kind replaces; `prelude`/`coda` replace; `loop` merges (`max`, blocks if
//! given, features by keyword as definitions do).

use super::loader::{FileIndex, Loader};
use crate::diag::{Code, Diagnostic};
use crate::source::Span;
use crate::suggest;
use crate::syntax::ast::*;
use std::collections::HashMap;

/// A `key = value` with the file its expression was written in.
#[derive(Clone, Copy, Debug)]
pub struct Entry<'a> {
    pub key: &'a Ident,
    pub value: &'a Expr,
    pub file: FileIndex,
}

/// Index into [`Merged::field_lists`].
pub type FieldsId = usize;

/// An attention/FFN definition or a loop feature after merging.
#[derive(Clone, Debug)]
pub struct MergedDef<'a> {
    /// The definition's name (alias or default), or the feature keyword.
    pub name: String,
    pub kind: Option<&'a Ident>,
    pub fields: FieldsId,
    pub span: Span,
    pub file: FileIndex,
}

#[derive(Clone, Debug)]
pub struct MergedLoop<'a> {
    pub span: Span,
    pub max: Option<(&'a Expr, FileIndex)>,
    pub blocks: Vec<(&'a BlockRef, FileIndex)>,
    pub features: Vec<MergedDef<'a>>,
}

/// A model with its whole `extends` chain applied.
#[derive(Clone, Debug)]
pub struct Merged<'a> {
    pub name: &'a Ident,
    pub file: FileIndex,
    pub settings: Vec<Entry<'a>>,
    pub lets: Vec<Entry<'a>>,
    /// `let`s written in this model's own body (for unused-value warnings).
    pub own_lets: Vec<&'a Ident>,
    pub attentions: Vec<MergedDef<'a>>,
    pub ffns: Vec<MergedDef<'a>>,
    pub prelude: Option<(&'a Stage, FileIndex)>,
    pub coda: Option<(&'a Stage, FileIndex)>,
    pub recurrence: Option<MergedLoop<'a>>,
    pub field_lists: Vec<Vec<Entry<'a>>>,
}

/// The models a file can name: its own and those of the files it imports.
pub fn models_in_scope(loader: &Loader, file: FileIndex) -> HashMap<&str, (FileIndex, &Model)> {
    let mut scope = HashMap::new();
    let files = loader
        .file(file)
        .imports
        .iter()
        .copied()
        .chain(std::iter::once(file));
    for f in files {
        for item in &loader.file(f).ast.items {
            if let Item::Model(m) = item {
                // Own models are inserted last and win; clashes are reported by `check_model_names`.
                scope.insert(m.name.name.as_str(), (f, m));
            }
        }
    }
    scope
}

/// E0102 for two models of one name in a file or between a file and its imports.
pub fn check_model_names(loader: &Loader, file: FileIndex, diags: &mut Vec<Diagnostic>) {
    let mut seen: HashMap<&str, Span> = HashMap::new();
    for &f in &loader.file(file).imports {
        for item in &loader.file(f).ast.items {
            if let Item::Model(m) = item {
                seen.entry(m.name.name.as_str()).or_insert(m.name.span);
            }
        }
    }
    for item in &loader.file(file).ast.items {
        if let Item::Model(m) = item {
            if let Some(first) = seen.get(m.name.name.as_str()) {
                diags.push(
                    Diagnostic::error(
                        Code::Duplicate,
                        format!("model `{}` is defined twice", m.name.name),
                    )
                    .label(m.name.span, "defined again here")
                    .secondary(*first, "first defined here")
                    .help("rename one of them; variants use `model NEW extends OLD { ... }`"),
                );
            } else {
                seen.insert(m.name.name.as_str(), m.name.span);
            }
        }
    }
}

/// The chain `[root ancestor, ..., model]`, or None after reporting a missing
/// parent or a cycle.
pub fn extends_chain<'a>(
    loader: &'a Loader,
    file: FileIndex,
    model: &'a Model,
    diags: &mut Vec<Diagnostic>,
) -> Option<Vec<(FileIndex, &'a Model)>> {
    let mut chain = vec![(file, model)];
    let (mut cur_file, mut cur) = (file, model);
    while let Some(parent) = &cur.extends {
        let scope = models_in_scope(loader, cur_file);
        let Some(&(pf, pm)) = scope.get(parent.name.as_str()) else {
            let names: Vec<&str> = scope.keys().copied().collect();
            diags.push(
                Diagnostic::error(
                    Code::UnknownModel,
                    format!("no model named `{}`", parent.name),
                )
                .label(parent.span, "extends a model that does not exist")
                .help(suggest::help_for(
                    &parent.name,
                    "models in scope",
                    names.iter().copied(),
                )),
            );
            return None;
        };
        if chain.iter().any(|&(f, m)| f == pf && std::ptr::eq(m, pm)) {
            let names: Vec<&str> = chain.iter().map(|(_, m)| m.name.name.as_str()).collect();
            let message = if std::ptr::eq(cur, pm) {
                format!("`{}` extends itself", cur.name.name)
            } else {
                format!(
                    "models `{}` and `{}` extend each other",
                    cur.name.name, pm.name.name
                )
            };
            diags.push(
                Diagnostic::error(Code::ExtendsCycle, message)
                    .label(parent.span, "this `extends` closes a cycle")
                    .note(format!("cycle: {} -> {}", names.join(" -> "), parent.name))
                    .help("a variant must extend a model that does not extend it back"),
            );
            return None;
        }
        chain.push((pf, pm));
        (cur_file, cur) = (pf, pm);
    }
    chain.reverse();
    Some(chain)
}

/// Applies the chain, root first.
pub fn merge<'a>(chain: &[(FileIndex, &'a Model)], diags: &mut Vec<Diagnostic>) -> Merged<'a> {
    let &(file, model) = chain.last().expect("a chain holds at least the model");
    let mut merged = Merged {
        name: &model.name,
        file,
        settings: Vec::new(),
        lets: Vec::new(),
        own_lets: Vec::new(),
        attentions: Vec::new(),
        ffns: Vec::new(),
        prelude: None,
        coda: None,
        recurrence: None,
        field_lists: Vec::new(),
    };
    for &(f, layer) in chain {
        merged.apply(f, layer, diags);
    }
    merged.own_lets = model
        .items
        .iter()
        .filter_map(|i| match i {
            ModelItem::Let(l) => Some(&l.name),
            _ => None,
        })
        .collect();
    merged
}

/// Remembers what one model body defined, to report duplicates in it.
#[derive(Default)]
struct Seen(HashMap<String, Span>);

impl Seen {
    fn check(&mut self, what: &str, name: &str, span: Span, diags: &mut Vec<Diagnostic>) -> bool {
        if let Some(first) = self.0.get(name) {
            diags.push(
                Diagnostic::error(Code::Duplicate, format!("{what} `{name}` is given twice"))
                    .label(span, "given again here")
                    .secondary(*first, "first given here")
                    .help("remove one of them"),
            );
            return false;
        }
        self.0.insert(name.to_string(), span);
        true
    }
}

impl<'a> Merged<'a> {
    fn apply(&mut self, file: FileIndex, model: &'a Model, diags: &mut Vec<Diagnostic>) {
        let mut seen = Seen::default();
        for item in &model.items {
            match item {
                ModelItem::Setting(a) => {
                    if seen.check("setting", &a.key.name, a.key.span, diags) {
                        let entry = Entry {
                            key: &a.key,
                            value: &a.value,
                            file,
                        };
                        upsert(&mut self.settings, entry);
                    }
                }
                ModelItem::Let(l) => {
                    if seen.check("value", &l.name.name, l.name.span, diags) {
                        let entry = Entry {
                            key: &l.name,
                            value: &l.value,
                            file,
                        };
                        upsert(&mut self.lets, entry);
                    }
                }
                ModelItem::Attention(d) | ModelItem::Ffn(d) => {
                    let is_attention = matches!(item, ModelItem::Attention(_));
                    let name = d.alias.as_ref().map_or_else(
                        || {
                            if is_attention {
                                "attention".to_string()
                            } else {
                                d.kind.name.clone()
                            }
                        },
                        |a| a.name.clone(),
                    );
                    let name_span = d.alias.as_ref().map_or(d.kind.span, |a| a.span);
                    if seen.check("definition", &name, name_span, diags) {
                        let def = self.definition(
                            &name,
                            Some(&d.kind),
                            d.fields.as_ref(),
                            d.span,
                            file,
                            diags,
                        );
                        self.merge_def(is_attention, def);
                    }
                }
                ModelItem::Prelude(s) => {
                    if seen.check("stage", "prelude", s.span, diags) {
                        self.prelude = Some((s, file));
                    }
                }
                ModelItem::Coda(s) => {
                    if seen.check("stage", "coda", s.span, diags) {
                        self.coda = Some((s, file));
                    }
                }
                ModelItem::Loop(l) => {
                    if seen.check("stage", "loop", l.span, diags) {
                        self.apply_loop(file, l, diags);
                    }
                }
            }
        }
    }

    fn apply_loop(&mut self, file: FileIndex, l: &'a Loop, diags: &mut Vec<Diagnostic>) {
        let mut features = self
            .recurrence
            .take()
            .map(|r| (r.max, r.blocks, r.features))
            .unwrap_or_default();
        if let Some(max) = &l.max {
            features.0 = Some((max, file));
        }
        let blocks: Vec<(&'a BlockRef, FileIndex)> = l
            .items
            .iter()
            .filter_map(|i| match i {
                LoopItem::Block(b) => Some((b, file)),
                _ => None,
            })
            .collect();
        if !blocks.is_empty() {
            features.1 = blocks;
        }
        let mut seen = Seen::default();
        let mut merged_features = features.2;
        for item in &l.items {
            if let LoopItem::Feature(f) = item {
                if !seen.check("loop feature", &f.keyword.name, f.keyword.span, diags) {
                    continue;
                }
                let def = self.definition(
                    &f.keyword.name,
                    f.kind.as_ref(),
                    f.fields.as_ref(),
                    f.span,
                    file,
                    diags,
                );
                merge_into(&mut merged_features, def, &mut self.field_lists);
            }
        }
        self.recurrence = Some(MergedLoop {
            span: l.span,
            max: features.0,
            blocks: features.1,
            features: merged_features,
        });
    }

    /// Registers a field list (checking duplicate fields) and returns the definition.
    fn definition(
        &mut self,
        name: &str,
        kind: Option<&'a Ident>,
        fields: Option<&'a Fields>,
        span: Span,
        file: FileIndex,
        diags: &mut Vec<Diagnostic>,
    ) -> MergedDef<'a> {
        let mut seen = Seen::default();
        let mut entries = Vec::new();
        for f in fields.map(|f| f.fields.as_slice()).unwrap_or_default() {
            if seen.check("field", &f.key.name, f.key.span, diags) {
                entries.push(Entry {
                    key: &f.key,
                    value: &f.value,
                    file,
                });
            }
        }
        self.field_lists.push(entries);
        MergedDef {
            name: name.to_string(),
            kind,
            fields: self.field_lists.len() - 1,
            span,
            file,
        }
    }

    fn merge_def(&mut self, attention: bool, def: MergedDef<'a>) {
        let list = if attention {
            &mut self.attentions
        } else {
            &mut self.ffns
        };
        merge_into(list, def, &mut self.field_lists);
    }

    /// Entries of a field list.
    pub fn fields(&self, id: FieldsId) -> &[Entry<'a>] {
        &self.field_lists[id]
    }

    pub fn feature(&self, keyword: &str) -> Option<&MergedDef<'a>> {
        self.recurrence
            .as_ref()?
            .features
            .iter()
            .find(|f| f.name == keyword)
    }
}

/// Replaces (other kind) or field-merges (same kind) a definition of the same name.
fn merge_into<'a>(
    list: &mut Vec<MergedDef<'a>>,
    def: MergedDef<'a>,
    field_lists: &mut [Vec<Entry<'a>>],
) {
    let kind_name = |d: &MergedDef| d.kind.map(|k| k.name.clone());
    match list.iter_mut().find(|d| d.name == def.name) {
        Some(old) if kind_name(old) == kind_name(&def) || def.kind.is_none() => {
            let new_fields = field_lists[def.fields].clone();
            let base = &mut field_lists[old.fields];
            for entry in new_fields {
                upsert(base, entry);
            }
            let merged_fields = std::mem::take(base);
            field_lists[def.fields] = merged_fields;
            *old = MergedDef {
                kind: def.kind.or(old.kind),
                ..def
            };
        }
        Some(old) => *old = def,
        None => list.push(def),
    }
}

/// Sets `entry.key` in `list`, replacing an earlier entry of that name.
fn upsert<'a>(list: &mut Vec<Entry<'a>>, entry: Entry<'a>) {
    match list.iter_mut().find(|e| e.key.name == entry.key.name) {
        Some(old) => *old = entry,
        None => list.push(entry),
    }
}
