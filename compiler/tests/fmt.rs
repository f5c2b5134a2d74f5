//! Tests of the canonical formatter (`mythos fmt`, `mythos_compiler::fmt`).
//!
//! Properties checked on every spec of the repository (presets, examples, UI
//! test inputs) and on mangled variants of them:
//! - idempotence: formatting the output again changes nothing;
//! - meaning: the output parses to the same AST as the input (spans aside);
//! - comments: the same comments, with the same texts, in the same order;
//! - layout basics: one final newline, no trailing spaces, no double blank
//!   lines, no blank line after `{` or before `}`.
//!
//! Exact outputs are pinned by small inline cases and by insta snapshots
//! (`tests/snapshots/fmt__*.snap`).

use mythos_compiler::fmt::{format_source, MAX_WIDTH};
use mythos_compiler::syntax::parse;
use mythos_compiler::FileId;
use std::path::{Path, PathBuf};

// ------------------------------------------------------------------ helpers

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("compiler/ has a parent")
        .to_path_buf()
}

/// The `.mythos` files of a repository folder, sorted, with their text
/// (files that are not UTF-8, such as the E0002 test input, are skipped).
fn specs_in(dir: &str, prefix: &str) -> Vec<(String, String)> {
    let mut files: Vec<(String, String)> = std::fs::read_dir(repo_root().join(dir))
        .unwrap_or_else(|e| panic!("reading {dir}: {e}"))
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mythos"))
        .filter(|p| p.file_name().unwrap().to_string_lossy().starts_with(prefix))
        .filter_map(|p| {
            let text = std::fs::read_to_string(&p).ok()?;
            Some((
                format!("{dir}/{}", p.file_name().unwrap().to_string_lossy()),
                text,
            ))
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no specs in {dir}");
    files
}

/// Every spec of the repository: presets, examples and all UI test inputs
/// (the UI inputs that do not parse are filtered out by the callers).
fn corpus() -> Vec<(String, String)> {
    let mut all = specs_in("models", "");
    all.extend(specs_in("examples", ""));
    all.extend(specs_in("tests/ui", ""));
    all
}

fn fmt(text: &str) -> Result<String, Vec<mythos_compiler::Diagnostic>> {
    format_source(FileId(0), text)
}

/// Formats text that must parse.
fn fmt_ok(text: &str) -> String {
    match fmt(text) {
        Ok(out) => out,
        Err(diags) => panic!("does not parse: {diags:?}\n---\n{text}"),
    }
}

/// The AST of `text` as a string with every span erased, so that two files
/// with the same meaning and different layouts compare equal. (Literals keep
/// their source text in the AST, so `32_000` and `32000` still differ.)
fn ast_without_spans(text: &str) -> String {
    let (ast, diags) = parse(FileId(0), text);
    assert!(diags.is_empty(), "does not parse: {diags:?}\n---\n{text}");
    let debug = format!("{ast:?}");
    // `Span { file: FileId(0), start: 3, end: 9 }` holds no nested braces.
    let mut out = String::with_capacity(debug.len());
    let mut rest = debug.as_str();
    while let Some(at) = rest.find("Span {") {
        out.push_str(&rest[..at]);
        let close = rest[at..].find('}').expect("a span's closing brace");
        rest = &rest[at + close + 1..];
    }
    out.push_str(rest);
    out
}

/// The comments of a text in order (`#` to the end of the line, outside
/// strings), without trailing whitespace. Written independently of the
/// formatter's own scan on purpose.
fn comments(text: &str) -> Vec<String> {
    let mut found = Vec::new();
    for line in text.lines() {
        let mut in_string = false;
        for (i, ch) in line.char_indices() {
            match ch {
                '"' => in_string = !in_string,
                '#' if !in_string => {
                    found.push(line[i..].trim_end().to_string());
                    break;
                }
                _ => {}
            }
        }
    }
    found
}

/// Checks every property the formatter promises for one input that parses,
/// and returns the formatted text.
fn check_properties(name: &str, input: &str) -> String {
    let out = fmt(input).unwrap_or_else(|d| panic!("{name}: does not parse: {d:?}"));
    let again = fmt(&out).unwrap_or_else(|d| panic!("{name}: output does not parse: {d:?}\n{out}"));
    assert_eq!(again, out, "{name}: not idempotent; first output:\n{out}");
    assert_eq!(
        ast_without_spans(&out),
        ast_without_spans(input),
        "{name}: the output means something else:\n{out}"
    );
    assert_eq!(
        comments(&out),
        comments(input),
        "{name}: comments changed:\n{out}"
    );
    check_layout(name, &out);
    out
}

/// Layout rules that hold for every output.
fn check_layout(name: &str, out: &str) {
    if out.is_empty() {
        return;
    }
    assert!(
        out.ends_with('\n') && !out.ends_with("\n\n"),
        "{name}: must end with one newline"
    );
    assert!(!out.starts_with('\n'), "{name}: starts with a blank line");
    let lines: Vec<&str> = out.lines().collect();
    for (i, line) in lines.iter().enumerate() {
        assert_eq!(
            line.trim_end(),
            *line,
            "{name}:{}: trailing whitespace",
            i + 1
        );
        let indent = line.len() - line.trim_start_matches(' ').len();
        assert!(
            !line[indent..].starts_with('\t'),
            "{name}:{}: a tab in indentation",
            i + 1
        );
        assert!(indent % 2 == 0, "{name}:{}: odd indentation", i + 1);
        if line.is_empty() {
            let prev = lines[i - 1];
            let next = lines.get(i + 1).copied().unwrap_or("x");
            assert!(!prev.is_empty(), "{name}:{}: two blank lines", i + 1);
            assert!(
                !prev.trim_end().ends_with('{') || prev.contains('#'),
                "{name}:{}: blank after {{",
                i + 1
            );
            assert!(next.trim() != "}", "{name}:{}: blank line before }}", i + 1);
        }
    }
}

/// Replaces every space outside comments and strings with a line break: the
/// same tokens, laid out as badly as the grammar allows. Trailing comments
/// become comments on their own line, which the formatter must still keep.
fn one_token_per_line(text: &str) -> String {
    let mut out = String::new();
    for line in text.split_inclusive('\n') {
        let mut in_string = false;
        let mut in_comment = false;
        for ch in line.chars() {
            match ch {
                '"' if !in_comment => in_string = !in_string,
                '#' if !in_string => in_comment = true,
                _ => {}
            }
            if ch == ' ' && !in_string && !in_comment {
                out.push('\n');
            } else {
                out.push(ch);
            }
        }
    }
    out
}

// --------------------------------------------------------- corpus properties

/// Every preset and example is in canonical form (`mythos fmt --check` passes).
#[test]
fn presets_and_examples_are_canonical() {
    let mut not_canonical = Vec::new();
    for (name, text) in specs_in("models", "")
        .into_iter()
        .chain(specs_in("examples", ""))
    {
        let out = fmt_ok(&text);
        if out != text {
            not_canonical.push(format!("--- {name} formats to:\n{out}"));
        }
    }
    assert!(not_canonical.is_empty(), "{}", not_canonical.join("\n"));
}

#[test]
fn corpus_is_idempotent_meaning_and_comment_preserving() {
    let mut checked = 0;
    for (name, text) in corpus() {
        let must_parse = !name.starts_with("tests/ui/") || name.starts_with("tests/ui/ok-");
        if !must_parse && fmt(&text).is_err() {
            continue; // a syntax-error test input
        }
        check_properties(&name, &text);
        checked += 1;
    }
    assert!(checked >= 15, "only {checked} files checked");
}

#[test]
fn mangled_layouts_format_like_the_originals() {
    for (name, text) in corpus() {
        if fmt(&text).is_err() {
            continue;
        }
        // One token per line: same AST, comments kept, idempotent.
        let scattered = one_token_per_line(&text);
        check_properties(&format!("{name} (one token per line)"), &scattered);
        // Extra blank lines everywhere collapse to the blank lines of the
        // formatted original (one where there was at least one, none after
        // `{` or before `}`).
        let spaced = text.replace('\n', "\n\n\n");
        let out = check_properties(&format!("{name} (blank lines tripled)"), &spaced);
        let mut blank_everywhere = fmt_ok(&text);
        blank_everywhere = blank_everywhere.replace("\n\n", "\n");
        assert_eq!(
            out.replace("\n\n", "\n"),
            blank_everywhere,
            "{name}: tripled blank lines"
        );
        // Windows line endings change nothing.
        let crlf = text.replace('\n', "\r\n");
        let out = check_properties(&format!("{name} (CRLF)"), &crlf);
        assert_eq!(out, fmt_ok(&text), "{name}: CRLF");
        // Reformatting the output of the original with squeezed indentation
        // gives the same output back: indentation is never taken from input.
        let flat: String = fmt_ok(&text)
            .lines()
            .map(|l| l.trim_start())
            .collect::<Vec<_>>()
            .join("\n");
        assert_eq!(fmt_ok(&flat), fmt_ok(&text), "{name}: unindented");
    }
}

/// The offsets just after each code character (outside comments and not
/// whitespace): cutting a file anywhere else gives the same tokens as one of
/// these cuts, so the prefix test skips them to stay fast.
fn code_cuts(text: &str) -> Vec<usize> {
    let mut cuts = Vec::new();
    let mut offset = 0;
    for line in text.split_inclusive('\n') {
        let mut in_string = false;
        for (i, ch) in line.char_indices() {
            match ch {
                '"' => in_string = !in_string,
                '#' if !in_string => break,
                _ => {}
            }
            if !ch.is_whitespace() {
                cuts.push(offset + i + ch.len_utf8());
            }
        }
        offset += line.len();
    }
    cuts
}

/// Prefixes of the example files: the formatter never panics, and every
/// prefix that parses (a file cut between items) satisfies the properties.
#[test]
fn prefixes_never_panic() {
    for (name, text) in specs_in("examples", "")
        .into_iter()
        .chain(specs_in("tests/ui", "ok-"))
    {
        for cut in code_cuts(&text) {
            let prefix = &text[..cut];
            if fmt(prefix).is_ok() {
                check_properties(&format!("{name}[..{cut}]"), prefix);
            }
        }
    }
}

/// A small deterministic pseudo-random generator (xorshift64), so that the
/// mutation test needs no dependency and fails the same way every run.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 % n as u64) as usize
    }
}

/// Random insertions of whitespace, commas and comments (own-line, trailing,
/// inside expressions and headers) into the repository's specs: whenever the
/// result still parses, the properties hold.
#[test]
fn random_comment_and_whitespace_insertions() {
    const PIECES: &[&str] = &[
        " ",
        "\n",
        "\n\n",
        "\t",
        ",",
        "# c\n",
        " # trailing\n",
        "\n# own\n\n",
        "#\n",
    ];
    let seed = std::env::var("FMT_MUTATION_SEED")
        .ok()
        .and_then(|r| r.parse().ok());
    let mut rng = Rng(seed.unwrap_or(0x9E37_79B9_7F4A_7C15));
    let mut checked = 0;
    for (name, text) in corpus() {
        if fmt(&text).is_err() {
            continue;
        }
        let rounds = std::env::var("FMT_MUTATION_ROUNDS")
            .ok()
            .and_then(|r| r.parse().ok())
            .unwrap_or(25);
        for round in 0..rounds {
            let mut mutant = text.clone();
            for _ in 0..1 + rng.below(4) {
                let mut at = rng.below(mutant.len() + 1);
                while !mutant.is_char_boundary(at) {
                    at -= 1;
                }
                mutant.insert_str(at, PIECES[rng.below(PIECES.len())]);
            }
            if fmt(&mutant).is_ok() {
                check_properties(&format!("{name} (mutant {round})\n{mutant}\n"), &mutant);
                checked += 1;
            }
        }
    }
    assert!(checked > 200, "only {checked} mutants parsed");
}

// ------------------------------------------------------------- exact output

#[test]
fn messy_layout_becomes_canonical() {
    let input = "
let   width=512
model   m   extends   base{vocab=32_000 dim=width*2
max_seq = 2048
attention gqa{heads=8,kv_heads=2,}
ffn dense as wide {
  hidden = dim * 4 // 3
}
ffn moe{}
prelude 2x block(attention,dense),block( attention , wide )
loop max(depth+1)*2{block(attention,moe) inject lti halt act{threshold=0.99}lora{rank=8}}
coda (n+1)x block(attention,dense)}";
    let expected = "\
let width = 512
model m extends base {
  vocab = 32_000
  dim = width * 2
  max_seq = 2048
  attention gqa { heads = 8, kv_heads = 2 }
  ffn dense as wide { hidden = dim * 4 // 3 }
  ffn moe {}
  prelude 2 x block(attention, dense), block(attention, wide)
  loop max (depth + 1) * 2 {
    block(attention, moe)
    inject lti
    halt act { threshold = 0.99 }
    lora { rank = 8 }
  }
  coda (n + 1) x block(attention, dense)
}
";
    assert_eq!(fmt_ok(input), expected);
    check_properties("messy", input);
}

#[test]
fn expressions_keep_parentheses_and_literal_text() {
    let input =
        "let a = - v +(-( 1e-6 ))*2.5E3// 3 %- - y\nlet b = ((true))\nlet c=1_0_0/500000.0-false";
    let expected = "\
let a = -v + (-(1e-6)) * 2.5E3 // 3 % --y
let b = ((true))
let c = 1_0_0 / 500000.0 - false
";
    assert_eq!(fmt_ok(input), expected);
    check_properties("expressions", input);
}

#[test]
fn long_field_lists_and_stages_are_broken() {
    let input = "model m {
attention mla { heads = 16, kv_heads = 4, q_rank = 512, kv_rank = 256, rope_dim = 32, nope_dim = 64, v_dim = 64 }
prelude 2 x block(attention_one, dense_one), 3 x block(attention_two, moe_two), block(attention_three, wide)
coda 2 x block(a_very_long_attention_name_that_is_long, a_very_long_ffn_name_that_is_even_longer_still)
}
";
    let expected = "\
model m {
  attention mla {
    heads = 16
    kv_heads = 4
    q_rank = 512
    kv_rank = 256
    rope_dim = 32
    nope_dim = 64
    v_dim = 64
  }
  prelude 2 x block(attention_one, dense_one),
      3 x block(attention_two, moe_two),
      block(attention_three, wide)
  coda 2 x block(a_very_long_attention_name_that_is_long, a_very_long_ffn_name_that_is_even_longer_still)
}
";
    assert_eq!(fmt_ok(input), expected);
    check_properties("long", input);
}

#[test]
fn width_limit_is_inclusive() {
    // A field list that makes its line exactly MAX_WIDTH columns stays on one
    // line; one more column breaks it.
    let line = |n: usize| {
        let head = "  ffn dense { hidden = ";
        let value = "x".repeat(n - head.len() - 2);
        format!("model m {{\n{head}{value} }}\n}}\n")
    };
    let exact = line(MAX_WIDTH);
    assert_eq!(fmt_ok(&exact), exact);
    assert!(fmt_ok(&line(MAX_WIDTH + 1)).contains("ffn dense {\n    hidden = "));
}

#[test]
fn blank_lines_are_kept_collapsed_and_trimmed_at_braces() {
    let input = "

import \"a.mythos\"
import \"b.mythos\"



model m {

  vocab = 1
  dim = 2


  loop {

    block(a, b)

    inject none

  }

}
let w = 1
";
    let expected = "\
import \"a.mythos\"
import \"b.mythos\"

model m {
  vocab = 1
  dim = 2

  loop {
    block(a, b)

    inject none
  }
}
let w = 1
";
    assert_eq!(fmt_ok(input), expected);
}

#[test]
fn empty_bodies() {
    assert_eq!(fmt_ok("model m{ }"), "model m {}\n");
    assert_eq!(
        fmt_ok("model m { loop max 2 { } }"),
        "model m {\n  loop max 2 {}\n}\n"
    );
    assert_eq!(
        fmt_ok("model m { loop { lora none halt } }"),
        "model m {\n  loop {\n    lora none\n    halt\n  }\n}\n"
    );
    assert_eq!(fmt_ok(""), "");
    assert_eq!(fmt_ok("\n\n  \n"), "");
    assert_eq!(fmt_ok("# only a comment"), "# only a comment\n");
}

#[test]
fn comments_are_placed() {
    let input = "# file header

# about m
model m # after the name
{ # after the brace
  vocab = 1 # trailing
  dim = 2 + # inside an expression
    3
  attention gqa { heads = 4, # after a comma
    kv_heads = 2 }
  ffn dense {
    # alone in a field list
  }
  ffn moe { experts = 4 top_k = 2 # trails top_k
  } # trails the definition
  prelude block(a, # inside a stage
    b)
  loop # between loop and max
  max 4 {
    lora # a kind-less feature
    n x block(a, b)
    # before the closing brace of the loop
  } # after the loop
  # before the closing brace of the model
}
import \"#not a comment.mythos\" # but this is
# the end";
    let expected = "\
# file header

# about m
# after the name
model m { # after the brace
  vocab = 1 # trailing
  # inside an expression
  dim = 2 + 3
  attention gqa {
    heads = 4 # after a comma
    kv_heads = 2
  }
  ffn dense {
    # alone in a field list
  }
  ffn moe {
    experts = 4
    top_k = 2 # trails top_k
  } # trails the definition
  # inside a stage
  prelude block(a, b)
  # between loop and max
  loop max 4 {
    lora # a kind-less feature
    n x block(a, b)
    # before the closing brace of the loop
  } # after the loop
  # before the closing brace of the model
}
import \"#not a comment.mythos\" # but this is
# the end
";
    assert_eq!(fmt_ok(input), expected);
    check_properties("comments", input);
}

#[test]
fn syntax_errors_are_returned_not_formatted() {
    let diags = fmt("model m { vocab = }").unwrap_err();
    assert_eq!(diags[0].code.as_str(), "E0001");
    let diags = fmt("let w = 99999999999999999999").unwrap_err();
    assert_eq!(diags[0].code.as_str(), "E0006");
}

#[test]
fn snapshot_ok_comments_and_commas() {
    let text = std::fs::read_to_string(repo_root().join("tests/ui/ok-comments-and-commas.mythos"))
        .unwrap();
    insta::assert_snapshot!(
        "ok_comments_and_commas",
        check_properties("ok-comments", &text)
    );
}

#[test]
fn snapshot_ok_counts_and_aliases() {
    let text =
        std::fs::read_to_string(repo_root().join("tests/ui/ok-counts-and-aliases.mythos")).unwrap();
    insta::assert_snapshot!(
        "ok_counts_and_aliases",
        check_properties("ok-counts", &text)
    );
}

#[test]
fn snapshot_openmythos_1b() {
    // A preset whose MLA field list is too long for one line.
    let text = std::fs::read_to_string(repo_root().join("models/openmythos-1b.mythos")).unwrap();
    insta::assert_snapshot!("openmythos_1b", check_properties("openmythos-1b", &text));
}

#[test]
fn snapshot_my_first_rdt() {
    // The example whose trailing comments were aligned in a column.
    let text = std::fs::read_to_string(repo_root().join("examples/my-first-rdt.mythos")).unwrap();
    insta::assert_snapshot!("my_first_rdt", check_properties("my-first-rdt", &text));
}
