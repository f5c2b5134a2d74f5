//! The progress bars of long commands (sweeps, eval): drawn on stderr when
//! it is a terminal, hidden otherwise (logs and pipes get no control codes).

use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;

/// A bar of `len` steps in indicatif's `template`
/// (`"{spinner} [{bar:40}] {pos}/{len} trials  {elapsed}"`).
pub fn bar(len: u64, template: &str) -> ProgressBar {
    if !std::io::stderr().is_terminal() {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    bar.set_style(
        ProgressStyle::with_template(template)
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar
}
