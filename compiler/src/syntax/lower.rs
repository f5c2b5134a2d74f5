//! pest pairs to AST: one `lower_<rule>` per grammar rule.
//!
//! The grammar guarantees the shape of the pairs, so the `next()`s here cannot
//! fail on any input the parser accepted; value problems (literals that do not
//! fit, expressions that are too long) become diagnostics.

use super::ast::*;
use super::{Rule, MAX_EXPR_OPERATORS};
use crate::diag::{Code, Diagnostic};
use crate::source::{FileId, Span};
use pest::iterators::{Pair, Pairs};

type P<'a> = Pair<'a, Rule>;

pub(super) struct Lowering {
    file: FileId,
    pub(super) diagnostics: Vec<Diagnostic>,
}

/// The next inner pair; the grammar guarantees it exists.
fn next<'a>(pairs: &mut Pairs<'a, Rule>) -> P<'a> {
    pairs.next().expect("grammar guarantees this pair")
}

impl Lowering {
    pub(super) fn new(file: FileId) -> Lowering {
        Lowering {
            file,
            diagnostics: Vec::new(),
        }
    }

    /// The pair's span without the whitespace and comments pest's implicit
    /// skipping leaves at the end of rules that end in a repetition.
    fn span(&self, pair: &P) -> Span {
        let s = pair.as_span();
        Span::new(self.file, s.start(), s.start() + content_len(s.as_str()))
    }

    fn ident(&self, pair: P) -> Ident {
        Ident {
            name: pair.as_str().to_string(),
            span: self.span(&pair),
        }
    }

    pub(super) fn lower_file(&mut self, pair: P) -> File {
        let span = self.span(&pair);
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::import_decl => items.push(Item::Import(self.lower_import_decl(p))),
                Rule::let_decl => items.push(Item::Let(self.lower_let_decl(p))),
                Rule::model_decl => items.push(Item::Model(self.lower_model_decl(p))),
                _ => {} // EOI
            }
        }
        File { items, span }
    }

    fn lower_import_decl(&mut self, pair: P) -> Import {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let _kw = next(&mut inner);
        let string = next(&mut inner);
        let path_span = self.span(&string);
        let text = next(&mut string.into_inner()).as_str().to_string();
        Import {
            path: text,
            path_span,
            span,
        }
    }

    fn lower_let_decl(&mut self, pair: P) -> Let {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let _kw = next(&mut inner);
        let name = self.ident(next(&mut inner));
        let value = self.lower_expr(next(&mut inner));
        Let { name, value, span }
    }

    fn lower_model_decl(&mut self, pair: P) -> Model {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let _kw = next(&mut inner);
        let name = self.ident(next(&mut inner));
        let mut extends = None;
        let mut items = Vec::new();
        for p in inner {
            match p.as_rule() {
                Rule::extends_clause => {
                    let mut e = p.into_inner();
                    let _kw = next(&mut e);
                    extends = Some(self.ident(next(&mut e)));
                }
                Rule::let_decl => items.push(ModelItem::Let(self.lower_let_decl(p))),
                Rule::setting => items.push(ModelItem::Setting(self.lower_assign(p))),
                Rule::attention_decl => items.push(ModelItem::Attention(self.lower_definition(p))),
                Rule::ffn_decl => items.push(ModelItem::Ffn(self.lower_definition(p))),
                Rule::prelude_decl => items.push(ModelItem::Prelude(self.lower_stage(p))),
                Rule::coda_decl => items.push(ModelItem::Coda(self.lower_stage(p))),
                Rule::loop_decl => items.push(ModelItem::Loop(self.lower_loop_decl(p))),
                _ => {}
            }
        }
        Model {
            name,
            extends,
            items,
            span,
        }
    }

    /// `setting` and `field` have the same shape: `ident = expr`.
    fn lower_assign(&mut self, pair: P) -> Assign {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let key = self.ident(next(&mut inner));
        let value = self.lower_expr(next(&mut inner));
        Assign { key, value, span }
    }

    /// `attention_decl` and `ffn_decl`.
    fn lower_definition(&mut self, pair: P) -> Definition {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let _kw = next(&mut inner);
        let kind = self.ident(next(&mut inner));
        let mut alias = None;
        let mut fields = None;
        for p in inner {
            match p.as_rule() {
                Rule::alias => {
                    let mut a = p.into_inner();
                    let _kw = next(&mut a);
                    alias = Some(self.ident(next(&mut a)));
                }
                Rule::fields => fields = Some(self.lower_fields(p)),
                _ => {}
            }
        }
        Definition {
            kind,
            alias,
            fields,
            span,
        }
    }

    fn lower_fields(&mut self, pair: P) -> Fields {
        let span = self.span(&pair);
        let fields = pair.into_inner().map(|p| self.lower_assign(p)).collect();
        Fields { fields, span }
    }

    /// `prelude_decl` and `coda_decl`.
    fn lower_stage(&mut self, pair: P) -> Stage {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let _kw = next(&mut inner);
        let list = next(&mut inner);
        let blocks = list.into_inner().map(|p| self.lower_block_ref(p)).collect();
        Stage { blocks, span }
    }

    fn lower_block_ref(&mut self, pair: P) -> BlockRef {
        let span = self.span(&pair);
        let mut count = None;
        let mut names = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::count => count = Some(self.lower_count(p)),
                Rule::def_name => names.push(self.ident(p)),
                _ => {} // keywords
            }
        }
        let ffn = names.pop().expect("grammar: two names");
        let attention = names.pop().expect("grammar: two names");
        BlockRef {
            count,
            attention,
            ffn,
            span,
        }
    }

    fn lower_count(&mut self, pair: P) -> Expr {
        let span = self.span(&pair);
        let p = next(&mut pair.into_inner());
        match p.as_rule() {
            Rule::integer => self.lower_literal(p),
            Rule::ident => Expr {
                kind: ExprKind::Name(p.as_str().to_string()),
                span,
            },
            _ => Expr {
                kind: ExprKind::Paren(Box::new(self.lower_expr(p))),
                span,
            },
        }
    }

    fn lower_loop_decl(&mut self, pair: P) -> Loop {
        let span = self.span(&pair);
        let mut max = None;
        let mut items = Vec::new();
        for p in pair.into_inner() {
            match p.as_rule() {
                Rule::loop_max => {
                    let mut m = p.into_inner();
                    let _kw = next(&mut m);
                    max = Some(self.lower_expr(next(&mut m)));
                }
                Rule::block_ref => items.push(LoopItem::Block(self.lower_block_ref(p))),
                Rule::feature => items.push(LoopItem::Feature(self.lower_feature(p))),
                _ => {}
            }
        }
        Loop { max, items, span }
    }

    fn lower_feature(&mut self, pair: P) -> Feature {
        let span = self.span(&pair);
        let mut inner = pair.into_inner();
        let keyword = self.ident(next(&mut inner));
        let mut kind = None;
        let mut fields = None;
        for p in inner {
            match p.as_rule() {
                Rule::ident => kind = Some(self.ident(p)),
                Rule::fields => fields = Some(self.lower_fields(p)),
                _ => {}
            }
        }
        Feature {
            keyword,
            kind,
            fields,
            span,
        }
    }

    /// `expr`: precedence climbing over the flat list of operands and operators.
    fn lower_expr(&mut self, pair: P) -> Expr {
        let span = self.span(&pair);
        let operators = pair
            .clone()
            .into_inner()
            .filter(|p| {
                matches!(
                    p.as_rule(),
                    Rule::neg
                        | Rule::add
                        | Rule::sub
                        | Rule::mul
                        | Rule::div
                        | Rule::floor_div
                        | Rule::rem
                )
            })
            .count();
        if operators > MAX_EXPR_OPERATORS {
            self.diagnostics.push(
                Diagnostic::error(
                    Code::TooDeep,
                    format!(
                        "expression has {operators} operators, more than the {MAX_EXPR_OPERATORS} allowed"
                    ),
                )
                .label(span, "this expression is too long")
                .help("split it into named parts with `let`"),
            );
            return Expr {
                kind: ExprKind::Invalid(pair.as_str().to_string()),
                span,
            };
        }
        let mut tokens = pair.into_inner().peekable();
        self.climb(&mut tokens, 0)
    }

    /// Parses `unary (op unary)*` with operators binding at least `min_prec`.
    fn climb<'a>(
        &mut self,
        tokens: &mut std::iter::Peekable<Pairs<'a, Rule>>,
        min_prec: u8,
    ) -> Expr {
        let mut lhs = self.lower_unary(tokens);
        while let Some(op) = tokens.peek().and_then(|p| binop(p.as_rule())) {
            if op.precedence() < min_prec {
                break;
            }
            tokens.next();
            let rhs = self.climb(tokens, op.precedence() + 1);
            let span = lhs.span.to(rhs.span);
            lhs = Expr {
                kind: ExprKind::Binary(op, Box::new(lhs), Box::new(rhs)),
                span,
            };
        }
        lhs
    }

    fn lower_unary<'a>(&mut self, tokens: &mut std::iter::Peekable<Pairs<'a, Rule>>) -> Expr {
        let p = tokens.next().expect("grammar: an operand follows");
        if p.as_rule() == Rule::neg {
            let start = self.span(&p);
            let inner = self.lower_unary(tokens);
            let span = start.to(inner.span);
            return Expr {
                kind: ExprKind::Neg(Box::new(inner)),
                span,
            };
        }
        self.lower_primary(p)
    }

    fn lower_primary(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        match p.as_rule() {
            Rule::paren => {
                let inner = self.lower_expr(next(&mut p.into_inner()));
                Expr {
                    kind: ExprKind::Paren(Box::new(inner)),
                    span,
                }
            }
            Rule::ident => Expr {
                kind: ExprKind::Name(p.as_str().to_string()),
                span,
            },
            Rule::boolean => Expr {
                kind: ExprKind::Bool(p.as_str() == "true"),
                span,
            },
            _ => self.lower_literal(p),
        }
    }

    /// `integer` and `float` literals.
    fn lower_literal(&mut self, p: P) -> Expr {
        let span = self.span(&p);
        let text = p.as_str().to_string();
        let digits: String = text.chars().filter(|&c| c != '_').collect();
        let kind = if p.as_rule() == Rule::float {
            match digits.parse::<f64>() {
                Ok(v) if v.is_finite() => ExprKind::Float(v, text),
                _ => {
                    self.diagnostics.push(
                        Diagnostic::error(Code::LiteralTooLarge, "float literal is too large")
                            .label(span, "this is not a finite 64-bit float")
                            .help("use a smaller exponent"),
                    );
                    ExprKind::Invalid(text)
                }
            }
        } else {
            match digits.parse::<i64>() {
                Ok(v) => ExprKind::Int(v, text),
                Err(_) => {
                    self.diagnostics.push(
                        Diagnostic::error(
                            Code::LiteralTooLarge,
                            "integer literal does not fit in 64 bits",
                        )
                        .label(span, format!("larger than {}", i64::MAX))
                        .help("integers are signed 64-bit; use a float literal (`1e20`) if this is a float setting"),
                    );
                    ExprKind::Invalid(text)
                }
            }
        };
        Expr { kind, span }
    }
}

fn binop(rule: Rule) -> Option<BinOp> {
    Some(match rule {
        Rule::add => BinOp::Add,
        Rule::sub => BinOp::Sub,
        Rule::mul => BinOp::Mul,
        Rule::div => BinOp::Div,
        Rule::floor_div => BinOp::FloorDiv,
        Rule::rem => BinOp::Rem,
        _ => return None,
    })
}

/// Length of `text` without trailing whitespace and `#` comments (a `#`
/// outside a string always starts a comment).
fn content_len(text: &str) -> usize {
    let mut end = text.trim_end().len();
    loop {
        let line_start = text[..end].rfind('\n').map_or(0, |i| i + 1);
        let mut in_string = false;
        let mut comment = None;
        for (i, c) in text[line_start..end].char_indices() {
            match c {
                '"' => in_string = !in_string,
                '#' if !in_string => {
                    comment = Some(line_start + i);
                    break;
                }
                _ => {}
            }
        }
        match comment {
            Some(at) => end = text[..at].trim_end().len(),
            None => return end,
        }
    }
}
