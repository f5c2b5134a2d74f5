//! UI tests: every `tests/ui/*.mythos` is checked; its first line says which
//! diagnostic codes it must produce (`# expect: E0301, E0104` or `# expect: ok`),
//! and the rendered diagnostics are an insta snapshot (`tests/snapshots/`).

use mythos_compiler::diag;
use mythos_compiler::sema::{self, Loader};
use std::collections::BTreeSet;
use std::path::Path;

fn expected_codes(path: &Path) -> Option<BTreeSet<String>> {
    let bytes = std::fs::read(path).expect("test file readable");
    let first = String::from_utf8_lossy(&bytes).lines().next()?.to_string();
    let list = first.strip_prefix("# expect:")?.trim().to_string();
    if list == "ok" {
        return Some(BTreeSet::new());
    }
    Some(list.split(',').map(|c| c.trim().to_string()).collect())
}

#[test]
fn ui_specs_report_expected_diagnostics() {
    let mut paths: Vec<_> = std::fs::read_dir("tests/ui")
        .expect("tests/ui exists")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "mythos"))
        .collect();
    paths.sort();
    assert!(
        paths.len() >= 40,
        "expected at least 40 UI specs, found {}",
        paths.len()
    );
    let mut failures = Vec::new();
    for path in &paths {
        let name = path.to_string_lossy().replace('\\', "/");
        let expected = expected_codes(path).unwrap_or_else(|| {
            panic!("{name}: first line must be `# expect: CODES` or `# expect: ok`")
        });
        let mut loader = Loader::new();
        let checked = sema::check_file(&mut loader, &name);
        let got: BTreeSet<String> = checked
            .diagnostics
            .iter()
            .map(|d| d.code.as_str().to_string())
            .collect();
        if got != expected {
            failures.push(format!(
                "{name}: expected {expected:?}, got {got:?}\n{}",
                diag::render(&loader.sources, &checked.diagnostics)
            ));
        }
        let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
        let rendered = diag::render(&loader.sources, &checked.diagnostics);
        // Every error must carry a location and a help line.
        for d in &checked.diagnostics {
            assert!(!d.labels.is_empty(), "{name}: {} has no label", d.code);
            assert!(!d.help.is_empty(), "{name}: {} has no help line", d.code);
        }
        insta::with_settings!({ snapshot_suffix => stem.clone(), prepend_module_to_snapshot => false }, {
            insta::assert_snapshot!("ui", rendered);
        });
    }
    assert!(
        failures.is_empty(),
        "{} UI specs failed:\n\n{}",
        failures.len(),
        failures.join("\n")
    );
}
