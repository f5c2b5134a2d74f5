//! Text to AST: the pest parser generated from `grammar/mythos.pest`, the
//! guards that keep hostile input from exhausting the stack, and the turning
//! of pest errors into our diagnostics.

pub mod ast;
mod lower;

use crate::diag::{Code, Diagnostic};
use crate::source::{FileId, Span};
use pest::Parser;

#[derive(pest_derive::Parser)]
#[grammar = "../../grammar/mythos.pest"]
pub(crate) struct MythosParser;

/// Deepest parenthesis nesting accepted before parsing (the grammar recurses
/// on parentheses; deeper input could overflow the stack).
pub const MAX_PAREN_DEPTH: usize = 32;
/// Most operators accepted in one expression (keeps every later recursive
/// walk over the expression tree shallow).
pub const MAX_EXPR_OPERATORS: usize = 128;

/// Parses one file. Always returns an AST (possibly empty) and the syntax
/// errors found; a file with errors yields no items.
pub fn parse(file: FileId, text: &str) -> (ast::File, Vec<Diagnostic>) {
    let empty = ast::File {
        items: Vec::new(),
        span: Span::new(file, 0, text.len()),
    };
    if let Some(diag) = check_nesting(file, text) {
        return (empty, vec![diag]);
    }
    pest::set_error_detail(true);
    match MythosParser::parse(Rule::file, text) {
        Ok(mut pairs) => {
            let mut lowering = lower::Lowering::new(file);
            let pair = pairs.next().expect("the file rule always yields one pair");
            let ast = lowering.lower_file(pair);
            (ast, lowering.diagnostics)
        }
        Err(err) => (empty, vec![syntax_error(file, text, &err)]),
    }
}

/// Finds parentheses nested deeper than [`MAX_PAREN_DEPTH`], outside comments
/// and strings.
fn check_nesting(file: FileId, text: &str) -> Option<Diagnostic> {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    while i < bytes.len() {
        match bytes[i] {
            b'#' => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'(' => {
                depth += 1;
                if depth > MAX_PAREN_DEPTH {
                    return Some(
                        Diagnostic::error(
                            Code::TooDeep,
                            format!("parentheses nested more than {MAX_PAREN_DEPTH} deep"),
                        )
                        .label(Span::new(file, i, i + 1), "this one is too deep")
                        .help("name an inner part with `let` and use the name"),
                    );
                }
            }
            b')' => depth = depth.saturating_sub(1),
            _ => {}
        }
        i += 1;
    }
    None
}

/// Turns a pest error into an E0001 diagnostic: "expected X or Y, found Z".
fn syntax_error(file: FileId, text: &str, err: &pest::error::Error<Rule>) -> Diagnostic {
    let pos = match err.location {
        pest::error::InputLocation::Pos(p) => p,
        pest::error::InputLocation::Span((s, _)) => s,
    };
    let pos = pos.min(text.len());
    let found = describe_found(text, pos);
    let mut expected: Vec<String> = Vec::new();
    if let Some(attempts) = err.parse_attempts() {
        // Literal tokens print as themselves; ranges (`0..9`) and built-in rules
        // are covered by the rule names below.
        for token in attempts.expected_tokens() {
            let token = token.to_string();
            let noise = token.trim().is_empty()
                || token == "BUILTIN_RULE"
                || token.contains("..")
                || token == "_"
                || token == "#"
                || token.chars().all(|c| c.is_ascii_digit());
            if ["+", "-", "*", "/", "//", "%"].contains(&token.as_str()) {
                expected.push("an operator".to_string());
            } else if !noise {
                expected.push(format!("`{token}`"));
            }
        }
    }
    if let pest::error::ErrorVariant::ParsingError { positives, .. } = &err.variant {
        for rule in positives {
            if let Some(name) = describe_rule(*rule) {
                expected.push(name.to_string());
            }
        }
    }
    let mut seen = std::collections::HashSet::new();
    expected.retain(|e| seen.insert(e.clone()));
    expected.sort_by_key(|e| (!e.starts_with('`'), e.clone()));
    let wanted = match expected.len() {
        0 => "something else".to_string(),
        1 => expected[0].clone(),
        n => format!("{} or {}", expected[..n - 1].join(", "), expected[n - 1]),
    };
    let end = (pos + found.1).min(text.len());
    let rest_of_line = text[pos..].split('\n').next().unwrap_or("");
    if rest_of_line.starts_with('"') && !rest_of_line[1..].contains('"') {
        return Diagnostic::error(Code::Syntax, "unterminated string")
            .label(
                Span::new(file, pos, pos + rest_of_line.len()),
                "this string has no closing `\"`",
            )
            .help("strings end on the same line with `\"`");
    }
    let mut diag = Diagnostic::error(
        Code::Syntax,
        format!("expected {wanted}, found {}", found.0),
    )
    .label(Span::new(file, pos, end), format!("expected {wanted}"));
    if found.0 == "end of file" {
        diag = diag.help("the file ends early: is a closing `}` or `)` missing?");
    } else if is_keyword_at(text, pos) && expected.iter().any(|e| e == "a name") {
        let before = text[..pos].trim_end();
        let declares_name = ["let", "model", "as", "extends", "import"]
            .iter()
            .any(|kw| before.ends_with(kw));
        if declares_name {
            diag = diag.help("keywords cannot be used as names; pick another name");
        } else {
            if let Some(open) = unclosed_brace(&text[..pos]) {
                diag = diag.secondary(Span::new(file, open, open + 1), "this `{` is not closed");
            }
            diag = diag.help(format!(
                "{} starts a new item here: is a closing `}}` missing before it?",
                found.0
            ));
        }
    } else if expected.iter().any(|e| e == "`}`") {
        diag = diag.help("is a closing `}` missing before this?");
    } else {
        diag = diag.help("see docs/language.md for the syntax of each construct");
    }
    diag
}

/// What the parser found at `pos`, and its length in bytes.
fn describe_found(text: &str, pos: usize) -> (String, usize) {
    let rest = &text[pos..];
    match rest.chars().next() {
        None => ("end of file".into(), 0),
        Some(c) if c.is_ascii_alphanumeric() || c == '_' => {
            let len = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '.'))
                .unwrap_or(rest.len());
            (format!("`{}`", &rest[..len]), len)
        }
        Some('\n') => ("end of line".into(), 1),
        Some(c) if c.is_control() => (format!("control character {:?}", c), c.len_utf8()),
        Some(c) => (format!("`{c}`"), c.len_utf8()),
    }
}

/// The byte offset of the innermost `{` left open in `text` (comments skipped).
fn unclosed_brace(text: &str) -> Option<usize> {
    let mut open = Vec::new();
    let mut in_comment = false;
    for (i, c) in text.char_indices() {
        match c {
            '\n' => in_comment = false,
            '#' => in_comment = true,
            '{' if !in_comment => open.push(i),
            '}' if !in_comment => {
                open.pop();
            }
            _ => {}
        }
    }
    open.pop()
}

fn is_keyword_at(text: &str, pos: usize) -> bool {
    let rest = &text[pos..];
    let len = rest
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .unwrap_or(rest.len());
    KEYWORDS.contains(&&rest[..len])
}

/// Words reserved by the grammar.
pub const KEYWORDS: &[&str] = &[
    "import",
    "let",
    "model",
    "extends",
    "attention",
    "ffn",
    "as",
    "prelude",
    "coda",
    "loop",
    "max",
    "block",
    "x",
    "true",
    "false",
    "inject",
    "halt",
    "lora",
    "loop_embedding",
];

/// Human words for the grammar rules pest may say it expected.
fn describe_rule(rule: Rule) -> Option<&'static str> {
    Some(match rule {
        Rule::EOI => "end of file",
        Rule::ident | Rule::def_name => "a name",
        Rule::expr | Rule::float | Rule::integer | Rule::boolean | Rule::paren => "an expression",
        Rule::string => "a string in double quotes",
        Rule::model_decl | Rule::kw_model => "`model`",
        Rule::import_decl | Rule::kw_import => "`import`",
        Rule::let_decl | Rule::kw_let => "`let`",
        Rule::setting => "a setting",
        Rule::attention_decl | Rule::kw_attention => "`attention`",
        Rule::ffn_decl | Rule::kw_ffn => "`ffn`",
        Rule::prelude_decl | Rule::kw_prelude => "`prelude`",
        Rule::coda_decl | Rule::kw_coda => "`coda`",
        Rule::loop_decl | Rule::kw_loop => "`loop`",
        Rule::loop_max | Rule::kw_max => "`max`",
        Rule::block_ref | Rule::kw_block | Rule::block_list => "a block",
        Rule::count => "a count",
        Rule::kw_x => "`x`",
        Rule::feature | Rule::feature_kw => "a loop feature",
        Rule::fields | Rule::field => "a field",
        Rule::extends_clause | Rule::kw_extends => "`extends`",
        Rule::alias | Rule::kw_as => "`as`",
        Rule::add | Rule::sub | Rule::mul | Rule::div | Rule::floor_div | Rule::rem => {
            "an operator"
        }
        _ => return None,
    })
}
