//! The canonical formatter (`mythos fmt`). Being written.
use crate::{Diagnostic, FileId};
pub fn format_source(file: FileId, text: &str) -> Result<String, Vec<Diagnostic>> {
    let (_ast, diags) = crate::syntax::parse(file, text);
    if diags.is_empty() { Ok(text.to_string()) } else { Err(diags) }
}
