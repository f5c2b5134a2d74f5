//! Diagnostics: one type for every error and warning the compiler reports,
//! stable codes, and the one place they are rendered (codespan-reporting,
//! ASCII, rustc-like `error[E0301]: ...` / ` --> file:line:col`).

use crate::source::{SourceMap, Span};
use codespan_reporting::diagnostic as cs;
use codespan_reporting::files::SimpleFiles;
use codespan_reporting::term;

/// How bad a diagnostic is. Errors make `mythos check` exit with 1.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    Error,
    Warning,
}

macro_rules! codes {
    ($($name:ident = $code:literal : $summary:literal,)*) => {
        /// Stable diagnostic codes. Never renumber one; retire it instead.
        #[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub enum Code { $($name,)* }

        impl Code {
            pub const ALL: &'static [Code] = &[$(Code::$name,)*];

            /// The code as printed: `E0301`.
            pub fn as_str(self) -> &'static str {
                match self { $(Code::$name => $code,)* }
            }

            /// One line on what the code means (`mythos explain`).
            pub fn summary(self) -> &'static str {
                match self { $(Code::$name => $summary,)* }
            }
        }
    };
}

codes! {
    Syntax = "E0001": "the text does not follow the grammar",
    NotUtf8 = "E0002": "the file is not UTF-8 text",
    TooDeep = "E0003": "expressions are nested too deeply",
    CannotRead = "E0004": "a file (spec, import or config) cannot be read",
    ImportCycle = "E0005": "files import each other in a cycle",
    LiteralTooLarge = "E0006": "an integer literal does not fit in 64 bits",
    UnknownSetting = "E0101": "a model setting that does not exist",
    Duplicate = "E0102": "something is defined twice in the same place",
    UnknownField = "E0103": "a field that the definition or feature does not take",
    MissingField = "E0104": "a required setting or field is missing",
    UnknownKind = "E0105": "an attention, FFN or loop-feature kind that does not exist",
    UnknownName = "E0106": "an expression names a value that does not exist",
    UnknownDefinition = "E0107": "a block uses an attention or FFN definition that does not exist",
    WrongSort = "E0108": "a block uses an FFN where an attention belongs, or the reverse",
    UnknownModel = "E0109": "a model name (in `extends` or `--model`) that does not exist",
    ExtendsCycle = "E0110": "models extend each other in a cycle",
    ValueCycle = "E0111": "values are defined in terms of each other in a cycle",
    NoLoop = "E0114": "the model has no `loop` stage",
    EmptyLoop = "E0115": "the loop body has no blocks",
    MissingKind = "E0116": "a loop feature needs a kind",
    NoLoopMax = "E0117": "the loop has no `max` iteration count",
    WrongType = "E0201": "a value of the wrong type",
    Overflow = "E0202": "integer overflow while evaluating an expression",
    DivisionByZero = "E0203": "division by zero while evaluating an expression",
    OutOfRange = "E0204": "a value outside its allowed range",
    HeadsDivideDim = "E0301": "more attention heads than `dim` has channels (a head dimension of 0)",
    KvHeadsDivideHeads = "E0302": "the number of heads is not divisible by `kv_heads`",
    OddRope = "E0303": "a RoPE dimension is odd",
    TopKTooLarge = "E0304": "MoE `top_k` is larger than the number of experts",
    LoopEmbeddingChannels = "E0305": "loop-embedding channels are larger than `dim`",
    Threshold = "E0306": "retired: a halting threshold outside (0, 1] is now warning W0003",
    InvalidJson = "E0401": "an OpenMythos config file is not valid JSON",
    BadConfigField = "E0402": "an OpenMythos config field is unknown, missing or of the wrong type",
    NotExportable = "E0403": "the model cannot be written as an OpenMythos MythosConfig",
    InvalidSweep = "E0501": "a sweep file is not valid TOML, or has an unknown or malformed key",
    UnknownAxis = "E0502": "a sweep axis names no model setting, definition or loop feature",
    BadAxisValue = "E0503": "a sweep axis value of the wrong type or kind, or a bad range",
    BadConstraint = "E0504": "a sweep constraint or objective that cannot be read or names no metric",
    UnusedValue = "W0001": "a `let` value is never used",
    HeadsUnevenDim = "W0002": "`dim` is not divisible by the attention heads; each head gets dim // heads channels",
    ThresholdUnusual = "W0003": "the halting threshold is outside (0, 1]",
}

impl std::fmt::Display for Code {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A span with a message under it.
#[derive(Clone, Debug, PartialEq)]
pub struct Label {
    pub span: Span,
    pub message: String,
    pub primary: bool,
}

/// One error or warning.
#[derive(Clone, Debug, PartialEq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub code: Code,
    pub message: String,
    pub labels: Vec<Label>,
    pub notes: Vec<String>,
    pub help: Vec<String>,
}

impl Diagnostic {
    pub fn error(code: Code, message: impl Into<String>) -> Diagnostic {
        Diagnostic {
            severity: if code.as_str().starts_with('W') {
                Severity::Warning
            } else {
                Severity::Error
            },
            code,
            message: message.into(),
            labels: Vec::new(),
            notes: Vec::new(),
            help: Vec::new(),
        }
    }

    /// The main place the diagnostic is about.
    pub fn label(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: true,
        });
        self
    }

    /// A related place (where something was first defined, say).
    pub fn secondary(mut self, span: Span, message: impl Into<String>) -> Diagnostic {
        self.labels.push(Label {
            span,
            message: message.into(),
            primary: false,
        });
        self
    }

    pub fn help(mut self, help: impl Into<String>) -> Diagnostic {
        self.help.push(help.into());
        self
    }

    pub fn note(mut self, note: impl Into<String>) -> Diagnostic {
        self.notes.push(note.into());
        self
    }

    pub fn is_error(&self) -> bool {
        self.severity == Severity::Error
    }

    /// The primary span, if any (used for sorting and `file:line:col`).
    pub fn primary_span(&self) -> Option<Span> {
        self.labels.iter().find(|l| l.primary).map(|l| l.span)
    }
}

/// Sorts diagnostics by position and drops exact duplicates (a parent model's
/// error is found again through each of its variants).
pub fn sort_and_dedup(diags: &mut Vec<Diagnostic>) {
    diags.sort_by(|a, b| {
        let key = |d: &Diagnostic| {
            d.primary_span()
                .map(|s| (s.file.0, s.start, s.end))
                .unwrap_or((u32::MAX, 0, 0))
        };
        key(a).cmp(&key(b)).then(a.code.cmp(&b.code))
    });
    diags.dedup();
}

/// Renders diagnostics as plain text, rustc style, one after the other.
pub fn render(map: &SourceMap, diags: &[Diagnostic]) -> String {
    let mut files = SimpleFiles::new();
    for (_, file) in map.files() {
        files.add(file.name.clone(), file.text.clone());
    }
    let config = term::Config {
        chars: term::Chars::ascii(),
        ..term::Config::default()
    };
    let mut out = String::new();
    for d in diags {
        let severity = match d.severity {
            Severity::Error => cs::Severity::Error,
            Severity::Warning => cs::Severity::Warning,
        };
        let labels = d
            .labels
            .iter()
            .map(|l| {
                let style = if l.primary {
                    cs::LabelStyle::Primary
                } else {
                    cs::LabelStyle::Secondary
                };
                cs::Label::new(style, l.span.file.0 as usize, l.span.range())
                    .with_message(l.message.clone())
            })
            .collect();
        let mut notes: Vec<String> = d.notes.iter().map(|n| format!("note: {n}")).collect();
        notes.extend(d.help.iter().map(|h| format!("help: {h}")));
        let diagnostic = cs::Diagnostic::new(severity)
            .with_code(d.code.as_str())
            .with_message(d.message.clone())
            .with_labels(labels)
            .with_notes(notes);
        match term::emit_into_string(&config, &files, &diagnostic) {
            Ok(text) => out.push_str(&text),
            // A span outside its file would be a compiler bug; still say something useful.
            Err(_) => out.push_str(&format!(
                "{}[{}]: {}\n",
                severity_word(d),
                d.code,
                d.message
            )),
        }
    }
    out
}

fn severity_word(d: &Diagnostic) -> &'static str {
    match d.severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

/// `N errors, M warnings` summary line, or None when there is nothing to say.
pub fn summary(diags: &[Diagnostic]) -> Option<String> {
    let errors = diags.iter().filter(|d| d.is_error()).count();
    let warnings = diags.len() - errors;
    let plural = |n: usize, w: &str| format!("{n} {w}{}", if n == 1 { "" } else { "s" });
    match (errors, warnings) {
        (0, 0) => None,
        (e, 0) => Some(plural(e, "error")),
        (0, w) => Some(plural(w, "warning")),
        (e, w) => Some(format!("{}, {}", plural(e, "error"), plural(w, "warning"))),
    }
}
