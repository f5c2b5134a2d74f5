//! The canonical formatter behind `mythos fmt`.
//!
//! [`format_source`] parses a file and prints its AST back in the one canonical
//! layout: two-space indentation, one item per line, field lists on one line
//! when they fit in [`MAX_WIDTH`] columns (else one field per line), blank
//! lines kept (collapsed to one) where the source had them, and exactly one
//! final newline. Printing the AST rather than editing the text is what makes
//! the result independent of the input's layout, hence idempotent.
//!
//! The AST has no comments (pest drops them), so the formatter finds them with
//! its own scan of the text and weaves them back in by byte offset while it
//! walks the AST in source order:
//! - a comment on a line of its own is printed before the next item (or before
//!   the closing `}` of the body it sits in), at that item's indentation;
//! - a comment after code on the same line stays at the end of the line of the
//!   item that ends there;
//! - a comment inside an item that is printed on one line (an expression, a
//!   block reference, the header of a model) has no line of its own to stay
//!   on, so it moves before that item.
//!
//! Every comment is printed exactly once: comments are consumed in order from
//! one queue, and whatever is left at the end of the file is printed there.

use crate::syntax::ast::{
    Assign, BlockRef, Definition, Expr, ExprKind, Feature, Fields, File, Import, Item, Let, Loop,
    LoopItem, Model, ModelItem, Stage,
};
use crate::{Diagnostic, FileId, Span};

/// The column limit: a field list or a stage that would make its line longer
/// than this is broken over several lines. (Trailing comments do not count;
/// expressions and single block references are never broken.)
pub const MAX_WIDTH: usize = 100;

/// One level of indentation.
const INDENT: &str = "  ";

/// Extra indentation of the continuation lines of a stage broken after its
/// commas: deeper than a body item, so the continuation does not read as one.
const CONTINUATION: &str = "    ";

/// Formats one `.mythos` file. Syntax errors (and the other errors the parser
/// reports, such as too-large literals) are returned as they are: a file that
/// does not parse is never rewritten.
pub fn format_source(file: FileId, text: &str) -> Result<String, Vec<Diagnostic>> {
    let (ast, diags) = crate::syntax::parse(file, text);
    if diags.iter().any(Diagnostic::is_error) {
        return Err(diags);
    }
    let mut printer = Printer::new(text);
    printer.file(&ast);
    Ok(printer.out)
}

/// A `#` comment found in the source: the byte range of its text, from the
/// `#` to the end of the line without trailing whitespace (so that the output
/// has no trailing spaces).
#[derive(Clone, Copy, Debug)]
struct Comment {
    start: usize,
    end: usize,
}

/// Finds every comment, in source order. A `#` inside a string literal (only
/// import paths have strings) does not start a comment; strings end at a `"`
/// or at the end of the line, as in the grammar.
fn scan_comments(text: &str) -> Vec<Comment> {
    let bytes = text.as_bytes();
    let mut comments = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' && bytes[i] != b'\n' {
                    i += 1;
                }
            }
            b'#' => {
                let start = i;
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                let end = start + text[start..i].trim_end().len();
                comments.push(Comment { start, end });
                continue; // `i` is at the newline (or the end): nothing to skip
            }
            _ => {}
        }
        i += 1;
    }
    comments
}

/// True if the source between two offsets holds an empty line (two line
/// breaks with only whitespace between them). That is where the user left a
/// blank line, which the formatter keeps (collapsed to one).
fn blank_line_between(text: &str, from: usize, to: usize) -> bool {
    if from >= to {
        return false;
    }
    let mut seen_newline = false;
    let mut line_is_blank = true;
    for ch in text[from..to].chars() {
        if ch == '\n' {
            if seen_newline && line_is_blank {
                return true;
            }
            seen_newline = true;
            line_is_blank = true;
        } else if !ch.is_whitespace() {
            line_is_blank = false;
        }
    }
    false
}

/// Builds the output text line by line.
struct Printer<'a> {
    /// The source text, for comments, blank lines and brace positions.
    text: &'a str,
    /// Every comment of the source, in order.
    comments: Vec<Comment>,
    /// Index of the first comment not printed yet.
    next_comment: usize,
    /// The formatted text.
    out: String,
    /// Current indentation level.
    depth: usize,
    /// Source offset of the end of the last thing printed: blank lines are
    /// looked for between it and the next thing.
    last_end: usize,
    /// True at the start of the file and right after a `{`: no blank line is
    /// printed there, whatever the source had.
    at_block_start: bool,
}

impl<'a> Printer<'a> {
    fn new(text: &'a str) -> Printer<'a> {
        Printer {
            text,
            comments: scan_comments(text),
            next_comment: 0,
            out: String::new(),
            depth: 0,
            last_end: 0,
            at_block_start: true,
        }
    }

    // ------------------------------------------------------------- comments

    /// The text of a comment.
    fn comment_text(&self, c: Comment) -> &'a str {
        &self.text[c.start..c.end]
    }

    /// True if any comment starts inside `start..end` (printed or not).
    fn has_comment_in(&self, start: usize, end: usize) -> bool {
        self.comments
            .iter()
            .any(|c| c.start >= start && c.start < end)
    }

    /// Prints, each on a line of its own at the current indentation, the
    /// comments not yet printed that start before `pos`. With `keep_blank`, a
    /// blank line of the source before a comment is kept; comments moved out
    /// of an item are printed without (they were not separate lines).
    fn comments_before(&mut self, pos: usize, keep_blank: bool) {
        while let Some(&c) = self.comments.get(self.next_comment) {
            if c.start >= pos {
                break;
            }
            self.next_comment += 1;
            if keep_blank {
                self.separate(c.start);
            }
            self.push_indent();
            self.out.push_str(self.comment_text(c));
            self.out.push('\n');
            self.last_end = self.last_end.max(c.end);
            self.at_block_start = false;
        }
    }

    /// The comment that trails code ending at `end`, if any: the next comment,
    /// when only spaces and separating commas stand between `end` and it on
    /// the same line. (Any other token between them means the comment belongs
    /// to a later item on that line.)
    fn take_trailing(&mut self, end: usize) -> Option<Comment> {
        let c = *self.comments.get(self.next_comment)?;
        if c.start < end {
            return None;
        }
        let gap = &self.text[end..c.start];
        if gap.chars().all(|ch| matches!(ch, ' ' | '\t' | ',')) {
            self.next_comment += 1;
            Some(c)
        } else {
            None
        }
    }

    // ----------------------------------------------------------- raw output

    fn push_indent(&mut self) {
        for _ in 0..self.depth {
            self.out.push_str(INDENT);
        }
    }

    /// Prints a blank line if the source had one between the last thing
    /// printed and `start`, except right after a `{` or at the file start.
    fn separate(&mut self, start: usize) {
        if !self.at_block_start && blank_line_between(self.text, self.last_end, start) {
            self.out.push('\n');
        }
    }

    /// Prints one line of code at the current indentation, followed by the
    /// comment that trails `src_end` (the source end of that code), if any.
    fn line(&mut self, content: &str, src_end: usize) {
        self.lines(&[content.to_string()], src_end);
    }

    /// Prints several lines of code, each at the current indentation (a
    /// continuation line carries its extra indentation in its text); the
    /// trailing comment goes after the last one.
    fn lines(&mut self, lines: &[String], src_end: usize) {
        for (i, content) in lines.iter().enumerate() {
            self.push_indent();
            self.out.push_str(content);
            if i + 1 < lines.len() {
                self.out.push('\n');
            }
        }
        self.last_end = self.last_end.max(src_end);
        if let Some(c) = self.take_trailing(src_end) {
            self.out.push(' ');
            self.out.push_str(self.comment_text(c));
            self.last_end = c.end;
        }
        self.out.push('\n');
        self.at_block_start = false;
    }

    /// Prepares the printing of an item that starts at `start`: prints the
    /// comments before it, a blank line if the source had one, then the
    /// comments inside `start..inner_end` (the part of the item printed on its
    /// first line), which have nowhere else to go.
    fn begin_item(&mut self, start: usize, inner_end: usize) {
        self.comments_before(start, true);
        self.separate(start);
        self.comments_before(inner_end, false);
    }

    /// An item printed on one line: `key = value`, `inject lti`, ...
    fn single_line_item(&mut self, start: usize, end: usize, content: &str) {
        self.begin_item(start, end);
        self.line(content, end);
    }

    /// Prints `header {` and enters the block; `brace` is the source offset of
    /// the `{`, so that a comment after it stays on the header line.
    fn open_block(&mut self, header: &str, brace: usize) {
        self.line(&format!("{header} {{"), brace + 1);
        self.depth += 1;
        self.at_block_start = true;
    }

    /// Prints the comments left before the closing `}` (at `close`, source
    /// offset) at the inner indentation, then the `}`; `end` is the end of the
    /// whole item (a comment after it trails the `}` line).
    fn close_block(&mut self, close: usize, end: usize) {
        self.comments_before(close, true);
        self.depth -= 1;
        self.line("}", end);
    }

    /// The source range of a node's code: its span without the whitespace and
    /// comments at its end. A span can include them: pest skips trivia before
    /// trying an optional or repeated tail (`expr`'s next operator, `fields?`)
    /// and keeps it in the span when the tail is absent, so `dim = 2 # c`
    /// would otherwise swallow its own trailing comment (and blank lines).
    fn range(&self, span: Span) -> (usize, usize) {
        let (start, mut end) = (span.start as usize, span.end as usize);
        let bytes = self.text.as_bytes();
        loop {
            while end > start && bytes[end - 1].is_ascii_whitespace() {
                end -= 1;
            }
            // Comments are sorted by start, hence by end too.
            match self.comments.binary_search_by_key(&end, |c| c.end) {
                Ok(i) if self.comments[i].start >= start => end = self.comments[i].start,
                _ => return (start, end),
            }
        }
    }

    /// The offset of the `{` that opens a body, searched from `from` (the end
    /// of the header's last token) past whitespace and comments. The parser
    /// accepted the text, so it is there; `from` is a harmless fallback.
    fn open_brace_after(&self, from: usize) -> usize {
        let bytes = self.text.as_bytes();
        let mut i = from;
        while i < bytes.len() {
            match bytes[i] {
                b'{' => return i,
                b'#' => {
                    while i < bytes.len() && bytes[i] != b'\n' {
                        i += 1;
                    }
                }
                b if b.is_ascii_whitespace() => i += 1,
                _ => break,
            }
        }
        from
    }

    /// The width of a line at the current indentation holding `len` columns.
    fn width(&self, len: usize) -> usize {
        self.depth * INDENT.len() + len
    }

    // ---------------------------------------------------------------- items

    fn file(&mut self, file: &File) {
        for item in &file.items {
            match item {
                Item::Import(i) => self.import(i),
                Item::Let(l) => self.let_decl(l),
                Item::Model(m) => self.model(m),
            }
        }
        // Comments after the last item (or in a file without items).
        self.comments_before(usize::MAX, true);
    }

    fn import(&mut self, import: &Import) {
        let (start, end) = self.range(import.span);
        // No escapes in strings: the path prints between quotes as it is.
        self.single_line_item(start, end, &format!("import \"{}\"", import.path));
    }

    fn let_decl(&mut self, l: &Let) {
        let content = format!("let {} = {}", l.name.name, expr(&l.value));
        let (start, end) = self.range(l.span);
        self.single_line_item(start, end, &content);
    }

    /// `key = value`: a model setting or a field.
    fn assign(&mut self, a: &Assign) {
        let content = format!("{} = {}", a.key.name, expr(&a.value));
        let (start, end) = self.range(a.span);
        self.single_line_item(start, end, &content);
    }

    fn model(&mut self, m: &Model) {
        let (start, end) = self.range(m.span);
        let mut header = format!("model {}", m.name.name);
        let mut header_end = m.name.span.end as usize;
        if let Some(parent) = &m.extends {
            header.push_str(&format!(" extends {}", parent.name));
            header_end = parent.span.end as usize;
        }
        let brace = self.open_brace_after(header_end);
        let close = end - 1;
        if m.items.is_empty() && !self.has_comment_in(brace, close) {
            self.single_line_item(start, end, &format!("{header} {{}}"));
            return;
        }
        // Comments between `model` and `{` move before the model.
        self.begin_item(start, brace);
        self.open_block(&header, brace);
        for item in &m.items {
            self.model_item(item);
        }
        self.close_block(close, end);
    }

    fn model_item(&mut self, item: &ModelItem) {
        match item {
            ModelItem::Let(l) => self.let_decl(l),
            ModelItem::Setting(a) => self.assign(a),
            ModelItem::Attention(d) => self.definition("attention", d),
            ModelItem::Ffn(d) => self.definition("ffn", d),
            ModelItem::Prelude(s) => self.stage("prelude", s),
            ModelItem::Coda(s) => self.stage("coda", s),
            ModelItem::Loop(l) => self.loop_decl(l),
        }
    }

    /// `attention KIND [as NAME] [{ fields }]`, `ffn ...`.
    fn definition(&mut self, keyword: &str, d: &Definition) {
        let mut header = format!("{keyword} {}", d.kind.name);
        if let Some(alias) = &d.alias {
            header.push_str(&format!(" as {}", alias.name));
        }
        let (start, end) = self.range(d.span);
        self.with_fields(start, end, &header, d.fields.as_ref());
    }

    /// `inject lti`, `halt act { threshold = 0.99 }`, `lora { rank = 8 }`, ...
    fn feature(&mut self, f: &Feature) {
        let mut header = f.keyword.name.clone();
        if let Some(kind) = &f.kind {
            header.push(' ');
            header.push_str(&kind.name);
        }
        let (start, end) = self.range(f.span);
        self.with_fields(start, end, &header, f.fields.as_ref());
    }

    /// An item made of a header and an optional field list (definitions and
    /// loop features): on one line when the list fits and holds no comment,
    /// else the header with `{`, one field per line, and `}`.
    fn with_fields(&mut self, start: usize, end: usize, header: &str, fields: Option<&Fields>) {
        let Some(fields) = fields else {
            self.single_line_item(start, end, header);
            return;
        };
        let (open, fields_end) = self.range(fields.span);
        let close = fields_end - 1;
        if let Some(one_line) = self.fields_on_one_line(header, fields) {
            self.single_line_item(start, end, &format!("{header} {one_line}"));
            return;
        }
        // Comments between the keyword and `{` move before the item.
        self.begin_item(start, open);
        self.open_block(header, open);
        for field in &fields.fields {
            self.assign(field);
        }
        self.close_block(close, end);
    }

    /// `{ a = 1, b = 2 }` (or `{}`), if the field list may stay on one line
    /// after `header`: it holds no comment (a comment needs a line of its own
    /// or the end of a line) and the whole line fits in [`MAX_WIDTH`].
    fn fields_on_one_line(&self, header: &str, fields: &Fields) -> Option<String> {
        let (open, end) = self.range(fields.span);
        if self.has_comment_in(open, end) {
            return None;
        }
        if fields.fields.is_empty() {
            return Some("{}".to_string());
        }
        let list: Vec<String> = fields
            .fields
            .iter()
            .map(|f| format!("{} = {}", f.key.name, expr(&f.value)))
            .collect();
        let one_line = format!("{{ {} }}", list.join(", "));
        (self.width(header.len() + 1 + one_line.len()) <= MAX_WIDTH).then_some(one_line)
    }

    /// `prelude 2 x block(a, f), block(b, g)`: on one line if it fits, else
    /// broken after every comma, the continuation lines indented further.
    fn stage(&mut self, keyword: &str, s: &Stage) {
        let blocks: Vec<String> = s.blocks.iter().map(block_ref).collect();
        let one_line = format!("{keyword} {}", blocks.join(", "));
        let (start, end) = self.range(s.span);
        if blocks.len() < 2 || self.width(one_line.len()) <= MAX_WIDTH {
            self.single_line_item(start, end, &one_line);
            return;
        }
        let last = blocks.len() - 1;
        let lines: Vec<String> = blocks
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let lead = if i == 0 {
                    format!("{keyword} ")
                } else {
                    CONTINUATION.to_string()
                };
                let comma = if i < last { "," } else { "" };
                // Every line gets the item indentation from `lines`; the
                // continuation lines start with CONTINUATION on top of it.
                format!("{lead}{b}{comma}")
            })
            .collect();
        self.begin_item(start, end);
        self.lines(&lines, end);
    }

    /// `loop [max N] { blocks and features }`.
    fn loop_decl(&mut self, l: &Loop) {
        let (start, end) = self.range(l.span);
        let (header, header_end) = match &l.max {
            Some(max) => (format!("loop max {}", expr(max)), self.range(max.span).1),
            None => ("loop".to_string(), start + "loop".len()),
        };
        let brace = self.open_brace_after(header_end);
        let close = end - 1;
        if l.items.is_empty() && !self.has_comment_in(brace, close) {
            self.single_line_item(start, end, &format!("{header} {{}}"));
            return;
        }
        // Comments between `loop` and `{` (around `max`) move before the loop.
        self.begin_item(start, brace);
        self.open_block(&header, brace);
        for item in &l.items {
            match item {
                LoopItem::Block(b) => {
                    let (s, e) = self.range(b.span);
                    self.single_line_item(s, e, &block_ref(b));
                }
                LoopItem::Feature(f) => self.feature(f),
            }
        }
        self.close_block(close, end);
    }
}

// ---------------------------------------------------------- inline pieces
// These never hold a line break, so they are plain functions to a String.

/// `[COUNT x] block(ATTENTION, FFN)`. A count is a literal, a name or a
/// parenthesised expression (`(n + 1) x`), which [`expr`] prints with its
/// parentheses.
fn block_ref(b: &BlockRef) -> String {
    let count = match &b.count {
        Some(c) => format!("{} x ", expr(c)),
        None => String::new(),
    };
    format!("{count}block({}, {})", b.attention.name, b.ffn.name)
}

/// An expression on one line.
fn expr(e: &Expr) -> String {
    let mut out = String::new();
    write_expr(e, &mut out);
    out
}

/// Binary operators get one space on each side, unary minus none. The AST
/// keeps the parentheses the user wrote (`ExprKind::Paren`) and the parser
/// built every other grouping from precedence, so printing the tree without
/// adding any parentheses gives back the same tree. Literals print as written
/// (`32_000`, `1e-6`). Recursion depth is bounded by the parser's limits on
/// nesting and operator count.
fn write_expr(e: &Expr, out: &mut String) {
    match &e.kind {
        ExprKind::Int(_, text) | ExprKind::Float(_, text) => out.push_str(text),
        // Only in a file that also has a parse error, which `format_source`
        // returns instead of printing; the source text is the best guess.
        ExprKind::Invalid(text) => out.push_str(text),
        ExprKind::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        ExprKind::Name(name) => out.push_str(name),
        ExprKind::Neg(inner) => {
            out.push('-');
            write_expr(inner, out);
        }
        ExprKind::Binary(op, lhs, rhs) => {
            write_expr(lhs, out);
            out.push(' ');
            out.push_str(op.symbol());
            out.push(' ');
            write_expr(rhs, out);
        }
        ExprKind::Paren(inner) => {
            out.push('(');
            write_expr(inner, out);
            out.push(')');
        }
    }
}
