//! Reading spec files and following their imports.
//!
//! Files come from disk, from the presets embedded in the binary (`@name`), or
//! from memory (tests, the fuzzer). Each file is read and parsed once; import
//! cycles are reported where the cycle closes.

use crate::diag::{Code, Diagnostic};
use crate::presets;
use crate::source::{FileId, SourceMap, Span};
use crate::syntax::{self, ast};
use std::collections::HashMap;
use std::path::{Component, Path, PathBuf};

/// Index of a loaded file in a [`Loader`].
pub type FileIndex = usize;

/// A parsed file and the files it imports (in order).
#[derive(Debug)]
pub struct LoadedFile {
    pub id: FileId,
    pub ast: ast::File,
    pub imports: Vec<FileIndex>,
}

/// Where files come from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Origin {
    Disk,
    Preset,
    Memory,
}

pub struct Loader {
    pub sources: SourceMap,
    pub files: Vec<LoadedFile>,
    pub diagnostics: Vec<Diagnostic>,
    by_key: HashMap<String, FileIndex>,
    memory: HashMap<String, Vec<u8>>,
    disk: bool,
}

impl Default for Loader {
    fn default() -> Self {
        Loader::new()
    }
}

impl Loader {
    /// Reads from disk and from the embedded presets.
    pub fn new() -> Loader {
        Loader {
            sources: SourceMap::new(),
            files: Vec::new(),
            diagnostics: Vec::new(),
            by_key: HashMap::new(),
            memory: HashMap::new(),
            disk: true,
        }
    }

    /// Reads only files added with [`Loader::add_virtual`] and presets.
    pub fn in_memory() -> Loader {
        Loader {
            disk: false,
            ..Loader::new()
        }
    }

    /// Makes `name` readable with the given contents (tests, fuzzing, stdin).
    pub fn add_virtual(&mut self, name: &str, bytes: Vec<u8>) {
        self.memory.insert(normalize(Path::new(name)), bytes);
    }

    pub fn file(&self, index: FileIndex) -> &LoadedFile {
        &self.files[index]
    }

    /// Loads a file named on the command line (a path, or `@preset`), with its
    /// imports. Problems become diagnostics; `None` when the file itself
    /// could not be read or decoded.
    pub fn load_root(&mut self, name: &str) -> Option<FileIndex> {
        let mut stack = Vec::new();
        match self.load(name, &mut stack) {
            Ok(index) => Some(index),
            Err(diag) => {
                self.diagnostics.push(diag);
                None
            }
        }
    }

    fn key_and_origin(&self, name: &str) -> (String, Origin) {
        if let Some(preset) = name.strip_prefix('@') {
            (
                format!("@{}", preset.trim_end_matches(".mythos")),
                Origin::Preset,
            )
        } else if self.memory.contains_key(&normalize(Path::new(name))) || !self.disk {
            (normalize(Path::new(name)), Origin::Memory)
        } else {
            let path = Path::new(name);
            let key = std::fs::canonicalize(path)
                .map(|p| p.to_string_lossy().into_owned())
                .unwrap_or_else(|_| normalize(path));
            (key, Origin::Disk)
        }
    }

    fn load(&mut self, name: &str, stack: &mut Vec<String>) -> Result<FileIndex, Diagnostic> {
        let (key, origin) = self.key_and_origin(name);
        if let Some(&index) = self.by_key.get(&key) {
            return Ok(index);
        }
        let bytes = self.read(name, &key, origin)?;
        let (text, utf8_error) = match String::from_utf8(bytes) {
            Ok(text) => (text, None),
            Err(e) => {
                let at = e.utf8_error().valid_up_to();
                (String::from_utf8_lossy(e.as_bytes()).into_owned(), Some(at))
            }
        };
        let id = self.sources.add(name, text);
        let index = self.files.len();
        self.by_key.insert(key.clone(), index);
        if let Some(at) = utf8_error {
            self.files.push(LoadedFile {
                id,
                ast: empty_file(id),
                imports: Vec::new(),
            });
            self.diagnostics.push(
                Diagnostic::error(Code::NotUtf8, format!("`{name}` is not UTF-8 text"))
                    .label(Span::new(id, at, at + 1), "invalid UTF-8 starts here")
                    .help("specs are UTF-8 text; is this the right file?"),
            );
            return Ok(index);
        }
        let (ast, diags) = syntax::parse(id, &self.sources.get(id).text);
        self.diagnostics.extend(diags);
        let imports: Vec<ast::Import> = ast
            .items
            .iter()
            .filter_map(|i| match i {
                ast::Item::Import(imp) => Some(imp.clone()),
                _ => None,
            })
            .collect();
        self.files.push(LoadedFile {
            id,
            ast,
            imports: Vec::new(),
        });
        stack.push(key);
        let mut imported = Vec::new();
        for imp in imports {
            let target = resolve_import(name, &imp.path);
            let (target_key, _) = self.key_and_origin(&target);
            if let Some(pos) = stack.iter().position(|k| *k == target_key) {
                let chain: Vec<String> = stack[pos..]
                    .iter()
                    .map(|k| display_key(k))
                    .chain(std::iter::once(display_key(&target_key)))
                    .collect();
                self.diagnostics.push(
                    Diagnostic::error(Code::ImportCycle, "files import each other in a cycle")
                        .label(imp.path_span, "this import closes the cycle")
                        .note(format!("cycle: {}", chain.join(" -> ")))
                        .help(
                            "move what both files need into a third file and import that from both",
                        ),
                );
                continue;
            }
            match self.load(&target, stack) {
                Ok(i) => imported.push(i),
                Err(diag) => self.diagnostics.push(
                    diag.label(imp.path_span, "imported here")
                        .help("import paths are relative to the importing file"),
                ),
            }
        }
        stack.pop();
        self.files[index].imports = imported;
        Ok(index)
    }

    fn read(&self, name: &str, key: &str, origin: Origin) -> Result<Vec<u8>, Diagnostic> {
        match origin {
            Origin::Preset => presets::source(&key[1..])
                .map(|s| s.as_bytes().to_vec())
                .ok_or_else(|| {
                    let names: Vec<&str> = presets::PRESETS.iter().map(|p| p.name).collect();
                    Diagnostic::error(Code::CannotRead, format!("no preset named `{name}`")).help(
                        crate::suggest::help_for(&key[1..], "presets", names.iter().copied()),
                    )
                }),
            Origin::Memory => self.memory.get(key).cloned().ok_or_else(|| {
                Diagnostic::error(
                    Code::CannotRead,
                    format!("cannot read `{name}`: no such file"),
                )
            }),
            Origin::Disk => std::fs::read(name).map_err(|e| {
                Diagnostic::error(
                    Code::CannotRead,
                    format!("cannot read `{name}`: {}", io_reason(&e)),
                )
            }),
        }
    }
}

fn io_reason(e: &std::io::Error) -> String {
    match e.kind() {
        std::io::ErrorKind::NotFound => "no such file".into(),
        std::io::ErrorKind::PermissionDenied => "permission denied".into(),
        _ => e.to_string(),
    }
}

fn empty_file(id: FileId) -> ast::File {
    ast::File {
        items: Vec::new(),
        span: Span::new(id, 0, 0),
    }
}

fn display_key(key: &str) -> String {
    Path::new(key)
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| key.to_string())
}

/// The name of an imported file: relative to the importing file's folder
/// (presets import presets).
fn resolve_import(importer: &str, path: &str) -> String {
    if importer.starts_with('@') && !path.starts_with('@') {
        return format!("@{}", path.trim_end_matches(".mythos"));
    }
    if path.starts_with('@') || Path::new(path).is_absolute() {
        return path.to_string();
    }
    let base = Path::new(importer).parent().unwrap_or(Path::new(""));
    normalize(&base.join(path))
}

/// Lexically removes `.` and `..` components so that one file has one name.
fn normalize(path: &Path) -> String {
    let mut out = PathBuf::new();
    for c in path.components() {
        match c {
            Component::CurDir => {}
            Component::ParentDir => {
                if !out.pop() {
                    out.push("..");
                }
            }
            other => out.push(other.as_os_str()),
        }
    }
    out.to_string_lossy().into_owned()
}
