//! The examples in the docs are real: every fenced block of README.md and
//! docs/language.md that defines a model checks cleanly. (Fragments that extend
//! a model shown in an earlier block are skipped when that is their only error.)

use mythos_compiler::diag::{self, Code};
use mythos_compiler::sema::{self, Loader};

fn fenced_blocks(text: &str) -> Vec<(usize, String)> {
    let mut blocks = Vec::new();
    let mut current: Option<(usize, String)> = None;
    for (i, line) in text.lines().enumerate() {
        if let Some(info) = line.strip_prefix("```") {
            match current.take() {
                Some(block) => blocks.push(block),
                None if info.is_empty() || info == "mythos" => {
                    current = Some((i + 1, String::new()))
                }
                None => current = Some((i + 1, "\u{0}".into())), // another language: ignored
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    blocks
        .into_iter()
        .filter(|(_, b)| !b.starts_with('\u{0}'))
        .collect()
}

#[test]
fn model_examples_in_the_docs_check() {
    let mut checked = 0;
    for doc in ["README.md", "docs/language.md"] {
        let text = std::fs::read_to_string(doc).unwrap();
        for (line, block) in fenced_blocks(&text) {
            if !block.lines().any(|l| l.starts_with("model ")) || block.contains("import ") {
                continue;
            }
            let name = format!("{doc}:{line}");
            let mut loader = Loader::in_memory();
            loader.add_virtual(&name, block.clone().into_bytes());
            let result = sema::check_file(&mut loader, &name);
            let errors: Vec<_> = result.diagnostics.iter().filter(|d| d.is_error()).collect();
            if !errors.is_empty() && errors.iter().all(|d| d.code == Code::UnknownModel) {
                continue;
            }
            // Warnings are allowed: one example shows a `let` shadowed by a field.
            assert!(
                errors.is_empty(),
                "example at {name} does not check:\n{}",
                diag::render(&loader.sources, &result.diagnostics)
            );
            checked += 1;
        }
    }
    assert!(checked >= 8, "only {checked} doc examples checked");
}
