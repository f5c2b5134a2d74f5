//! The abstract syntax tree of a `.mythos` file.
//!
//! The AST owns its data and every node carries a [`Span`]. It is exactly what
//! was written (no defaults, no merging); `sema` gives it meaning.

use crate::source::Span;

/// A name with the place it was written.
#[derive(Clone, Debug, PartialEq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// A whole file.
#[derive(Clone, Debug, PartialEq)]
pub struct File {
    pub items: Vec<Item>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum Item {
    Import(Import),
    Let(Let),
    Model(Model),
}

impl Item {
    pub fn span(&self) -> Span {
        match self {
            Item::Import(i) => i.span,
            Item::Let(l) => l.span,
            Item::Model(m) => m.span,
        }
    }
}

/// `import "path"`.
#[derive(Clone, Debug, PartialEq)]
pub struct Import {
    pub path: String,
    pub path_span: Span,
    pub span: Span,
}

/// `let name = value`.
#[derive(Clone, Debug, PartialEq)]
pub struct Let {
    pub name: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `key = value`: a model setting or a field.
#[derive(Clone, Debug, PartialEq)]
pub struct Assign {
    pub key: Ident,
    pub value: Expr,
    pub span: Span,
}

/// `model name [extends parent] { items }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Model {
    pub name: Ident,
    pub extends: Option<Ident>,
    pub items: Vec<ModelItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ModelItem {
    Let(Let),
    Setting(Assign),
    Attention(Definition),
    Ffn(Definition),
    Prelude(Stage),
    Coda(Stage),
    Loop(Loop),
}

impl ModelItem {
    pub fn span(&self) -> Span {
        match self {
            ModelItem::Let(l) => l.span,
            ModelItem::Setting(a) => a.span,
            ModelItem::Attention(d) | ModelItem::Ffn(d) => d.span,
            ModelItem::Prelude(s) | ModelItem::Coda(s) => s.span,
            ModelItem::Loop(l) => l.span,
        }
    }
}

/// `attention KIND [as NAME] [{ fields }]` or `ffn KIND [as NAME] [{ fields }]`.
#[derive(Clone, Debug, PartialEq)]
pub struct Definition {
    pub kind: Ident,
    pub alias: Option<Ident>,
    pub fields: Option<Fields>,
    pub span: Span,
}

/// `{ key = value, ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Fields {
    pub fields: Vec<Assign>,
    pub span: Span,
}

/// `prelude ...` or `coda ...`: a list of block references.
#[derive(Clone, Debug, PartialEq)]
pub struct Stage {
    pub blocks: Vec<BlockRef>,
    pub span: Span,
}

/// `[count x] block(attention, ffn)`.
#[derive(Clone, Debug, PartialEq)]
pub struct BlockRef {
    pub count: Option<Expr>,
    pub attention: Ident,
    pub ffn: Ident,
    pub span: Span,
}

/// `loop [max N] { ... }`.
#[derive(Clone, Debug, PartialEq)]
pub struct Loop {
    pub max: Option<Expr>,
    pub items: Vec<LoopItem>,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum LoopItem {
    Block(BlockRef),
    Feature(Feature),
}

impl LoopItem {
    pub fn span(&self) -> Span {
        match self {
            LoopItem::Block(b) => b.span,
            LoopItem::Feature(f) => f.span,
        }
    }
}

/// `inject lti`, `halt act { threshold = 0.99 }`, `lora { rank = 8 }`, ...
#[derive(Clone, Debug, PartialEq)]
pub struct Feature {
    /// `inject`, `halt`, `lora` or `loop_embedding`.
    pub keyword: Ident,
    pub kind: Option<Ident>,
    pub fields: Option<Fields>,
    pub span: Span,
}

/// An expression.
#[derive(Clone, Debug, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Clone, Debug, PartialEq)]
pub enum ExprKind {
    /// An integer literal, as written (`32_000`) and its value.
    Int(i64, String),
    /// A float literal, as written (`1e-6`) and its value.
    Float(f64, String),
    Bool(bool),
    Name(String),
    Neg(Box<Expr>),
    Binary(BinOp, Box<Expr>, Box<Expr>),
    Paren(Box<Expr>),
    /// An expression that was already reported as invalid (a literal too
    /// large, too many operators): the source text, evaluating to nothing.
    Invalid(String),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinOp {
    Add,
    Sub,
    Mul,
    /// `/`: true division, always a float.
    Div,
    /// `//`: floor division on integers.
    FloorDiv,
    /// `%`: floor remainder on integers.
    Rem,
}

impl BinOp {
    pub fn symbol(self) -> &'static str {
        match self {
            BinOp::Add => "+",
            BinOp::Sub => "-",
            BinOp::Mul => "*",
            BinOp::Div => "/",
            BinOp::FloorDiv => "//",
            BinOp::Rem => "%",
        }
    }

    /// Binding strength: higher binds tighter.
    pub fn precedence(self) -> u8 {
        match self {
            BinOp::Add | BinOp::Sub => 1,
            _ => 2,
        }
    }
}
