//! The compiled-model artifact: a `.mythosc` file (docs/compile.md).
//!
//! An artifact holds everything a runtime needs besides the weights: the
//! [`Plan`] and the kernels (the CPU shared object, or PTX texts), plus what
//! is needed to tell whether it still fits a spec: the spec sources, the
//! entry and model names, the options, the target, and a fingerprint of the
//! optimized IR the plan was made from.
//!
//! The layout (all integers little-endian):
//!
//! ```text
//! magic            8 bytes   "MYTHOSC\0"
//! format version   u32       FORMAT_VERSION
//! compiler length  u32       then the compiler version (UTF-8)
//! header length    u64
//! blobs length     u64
//! header           JSON      target, options, entry, model, sources,
//!                            IR fingerprint, plan, kernel table (name, size)
//! blobs            bytes     the kernels, in table order
//! content hash     32 bytes  sha256 of every byte before it
//! ```
//!
//! [`Artifact::from_bytes`] checks, in this order: the magic (not an
//! artifact), the format version (stale), the declared lengths against the
//! file's (truncated), the content hash (corrupt), the compiler version
//! (stale), then parses the header. It never panics, whatever the bytes.

use crate::ir::{print, Module};
use crate::plan::Plan;
use crate::sema::Loader;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::path::Path;

/// The first bytes of every artifact.
pub const MAGIC: &[u8; 8] = b"MYTHOSC\0";

/// The layout version; bump it when the layout or the header changes.
pub const FORMAT_VERSION: u32 = 1;

/// The version of this crate, the first part of every compiler version.
pub const CRATE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// File extension of artifacts.
pub const EXTENSION: &str = "mythosc";

/// Compiler version strings longer than this are corrupt.
const MAX_COMPILER_LEN: u32 = 1024;

/// Bytes of the content hash at the end.
const HASH_LEN: usize = 32;

/// The pass options an artifact was compiled with.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Options {
    /// The `-O` level.
    pub level: u8,
    /// The passes that ran, in order, including a `canonicalize` added
    /// before the backend (`legalized`).
    pub passes: Vec<String>,
    /// Whether `canonicalize` was added because the pipeline lacked it.
    pub legalized: bool,
}

impl Options {
    /// `-O2`, or `-O0 --passes a,b` when the list is not the level's.
    pub fn describe(&self) -> String {
        let mut s = format!("-O{}", self.level);
        let level: Vec<&str> = crate::passes::pipeline(self.level);
        let ran: Vec<&str> = self.passes.iter().map(String::as_str).collect();
        let mut expected = level.clone();
        if self.legalized {
            expected.push("canonicalize");
        }
        if ran != expected {
            s.push_str(&format!(" --passes {}", ran.join(",")));
        }
        s
    }
}

/// One spec file: its name as the loader saw it (a path or `@preset`) and its text.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Source {
    pub name: String,
    pub text: String,
}

/// A named binary blob: the CPU shared object (`kernels.so`) or a PTX text.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Kernel {
    pub name: String,
    pub bytes: Vec<u8>,
}

/// A compiled model (weights stay outside).
#[derive(Clone, Debug, PartialEq)]
pub struct Artifact {
    /// The compiler version that wrote it (see [`compiler_version`]).
    pub compiler: String,
    /// `cpu`, `sm_80` or `sm_90`.
    pub target: String,
    pub options: Options,
    /// The spec as named on the command line (a path or `@preset`).
    pub entry: String,
    /// The model compiled from it.
    pub model: String,
    /// Every file the loader read: the entry first, then its imports.
    pub sources: Vec<Source>,
    /// [`ir_fingerprint`] of the optimized IR the plan was made from.
    pub ir_fingerprint: String,
    pub plan: Plan,
    pub kernels: Vec<Kernel>,
}

/// The JSON header (everything but the compiler version and the blobs).
#[derive(Serialize, Deserialize)]
struct Header {
    target: String,
    options: Options,
    entry: String,
    model: String,
    sources: Vec<Source>,
    ir_fingerprint: String,
    plan: Plan,
    kernels: Vec<BlobEntry>,
}

#[derive(Serialize, Deserialize)]
struct BlobEntry {
    name: String,
    size: u64,
}

/// Why an artifact could not be read or written. Every message names the
/// file and says what to do.
#[derive(Debug, thiserror::Error)]
pub enum ArtifactError {
    #[error("cannot read {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("cannot write {path}: {reason}")]
    Write { path: String, reason: String },
    #[error("{path} is not a Mythos artifact ({detail}); compile one with {recompile}")]
    NotArtifact {
        path: String,
        detail: String,
        recompile: String,
    },
    #[error("{path} is truncated ({detail}); recompile it with {recompile}")]
    Truncated {
        path: String,
        detail: String,
        recompile: String,
    },
    #[error("{path} is corrupt ({detail}); recompile it with {recompile}")]
    Corrupt {
        path: String,
        detail: String,
        recompile: String,
    },
    #[error("{path} is stale: {detail}; recompile it with {recompile}")]
    Stale {
        path: String,
        detail: String,
        recompile: String,
    },
}

impl ArtifactError {
    /// A short name of the kind of failure (tests, the cache's miss reasons).
    pub fn kind(&self) -> &'static str {
        match self {
            ArtifactError::Read { .. } => "unreadable",
            ArtifactError::Write { .. } => "unwritable",
            ArtifactError::NotArtifact { .. } => "not an artifact",
            ArtifactError::Truncated { .. } => "truncated",
            ArtifactError::Corrupt { .. } => "corrupt",
            ArtifactError::Stale { .. } => "stale",
        }
    }
}

/// The compiler version written into artifacts and compared on reading:
/// this crate's version and `extra`, something that changes whenever the
/// generated code can (the backend passes a hash of its kernel templates).
pub fn compiler_version(extra: &str) -> String {
    if extra.is_empty() {
        format!("mythos {CRATE_VERSION}")
    } else {
        format!("mythos {CRATE_VERSION} ({extra})")
    }
}

/// sha256 (hex) of the printed IR: equal modules print equally, and any
/// change to the spec, the options or the passes that changes the IR
/// changes it.
pub fn ir_fingerprint(module: &Module) -> String {
    hex(&Sha256::digest(print::text(module).as_bytes()))
}

/// Lower-case hex of bytes.
pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The generic advice when nothing about the artifact can be trusted.
fn generic_recompile(path: &str) -> String {
    format!("`mythos compile SPEC --target cpu|cuda -o {path}`")
}

/// The `mythos compile` command for these inputs, in backquotes.
pub fn recompile_command(
    entry: &str,
    model: &str,
    target: &str,
    options: &Options,
    path: &str,
) -> String {
    let target = match target {
        "cpu" => "--target cpu".to_string(),
        arch => format!("--target cuda --arch {arch}"),
    };
    format!(
        "`mythos compile {entry} --model {model} {target} {} -o {path}`",
        options.describe()
    )
}

impl ArtifactError {
    /// A stale-artifact error: `detail` says why, `recompile` (see
    /// [`recompile_command`]) what to run.
    pub fn stale(path: &Path, detail: impl Into<String>, recompile: String) -> ArtifactError {
        ArtifactError::Stale {
            path: path.display().to_string(),
            detail: detail.into(),
            recompile,
        }
    }
}

impl Artifact {
    /// The command that recompiles this artifact to `path`.
    pub fn recompile_command(&self, path: &str) -> String {
        recompile_command(&self.entry, &self.model, &self.target, &self.options, path)
    }

    /// The kernel blob named `name`.
    pub fn kernel(&self, name: &str) -> Option<&Kernel> {
        self.kernels.iter().find(|k| k.name == name)
    }

    /// Bytes of code (every kernel blob).
    pub fn code_size(&self) -> u64 {
        self.kernels.iter().map(|k| k.bytes.len() as u64).sum()
    }

    /// A loader that reads the artifact's spec sources from memory (presets
    /// from the binary): `sema::check_file(&mut loader, &artifact.entry)`
    /// rebuilds the model it was compiled from.
    pub fn loader(&self) -> Loader {
        let mut loader = Loader::in_memory();
        for s in &self.sources {
            if !s.name.starts_with('@') {
                loader.add_virtual(&s.name, s.text.clone().into_bytes());
            }
        }
        loader
    }

    /// The file's bytes (see the module docs for the layout).
    pub fn to_bytes(&self) -> Vec<u8> {
        let header = Header {
            target: self.target.clone(),
            options: self.options.clone(),
            entry: self.entry.clone(),
            model: self.model.clone(),
            sources: self.sources.clone(),
            ir_fingerprint: self.ir_fingerprint.clone(),
            plan: self.plan.clone(),
            kernels: self
                .kernels
                .iter()
                .map(|k| BlobEntry {
                    name: k.name.clone(),
                    size: k.bytes.len() as u64,
                })
                .collect(),
        };
        // Plain strings and integers: serializing cannot fail.
        let header = serde_json::to_vec(&header).expect("artifact headers serialize");
        let blobs: usize = self.kernels.iter().map(|k| k.bytes.len()).sum();
        let compiler = self.compiler.as_bytes();
        let mut out = Vec::with_capacity(40 + compiler.len() + header.len() + blobs + HASH_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        out.extend_from_slice(&(compiler.len() as u32).to_le_bytes());
        out.extend_from_slice(compiler);
        out.extend_from_slice(&(header.len() as u64).to_le_bytes());
        out.extend_from_slice(&(blobs as u64).to_le_bytes());
        out.extend_from_slice(&header);
        for k in &self.kernels {
            out.extend_from_slice(&k.bytes);
        }
        let hash = Sha256::digest(&out);
        out.extend_from_slice(&hash);
        out
    }

    /// Writes the artifact to `path` atomically (a temporary file in the
    /// same folder, then a rename), so that readers never see half a file.
    pub fn write(&self, path: &Path) -> Result<(), ArtifactError> {
        write_atomic(path, &self.to_bytes()).map_err(|e| ArtifactError::Write {
            path: path.display().to_string(),
            reason: e.to_string(),
        })
    }

    /// Reads and checks an artifact written by the compiler `compiler` (see
    /// [`compiler_version`]); any other version is stale.
    pub fn read(path: &Path, compiler: &str) -> Result<Artifact, ArtifactError> {
        let name = path.display().to_string();
        let bytes = std::fs::read(path).map_err(|e| ArtifactError::Read {
            path: name.clone(),
            reason: match e.kind() {
                std::io::ErrorKind::NotFound => "no such file".to_string(),
                std::io::ErrorKind::PermissionDenied => "permission denied".to_string(),
                _ => e.to_string(),
            },
        })?;
        Artifact::from_bytes(&bytes, &name, compiler)
    }

    /// Parses and checks artifact bytes; `path` names them in errors.
    pub fn from_bytes(bytes: &[u8], path: &str, compiler: &str) -> Result<Artifact, ArtifactError> {
        let recompile = generic_recompile(path);
        let not_artifact = |detail: String| ArtifactError::NotArtifact {
            path: path.to_string(),
            detail,
            recompile: "`mythos compile SPEC --target cpu|cuda -o MODEL.mythosc`".into(),
        };
        let truncated = |detail: String| ArtifactError::Truncated {
            path: path.to_string(),
            detail,
            recompile: recompile.clone(),
        };
        let corrupt = |detail: String| ArtifactError::Corrupt {
            path: path.to_string(),
            detail,
            recompile: recompile.clone(),
        };
        if bytes.is_empty() {
            return Err(not_artifact("the file is empty".into()));
        }
        if bytes.len() < MAGIC.len() {
            return Err(if MAGIC.starts_with(bytes) {
                truncated(format!("{} bytes, it ends inside the header", bytes.len()))
            } else {
                not_artifact("it does not start with the .mythosc header".into())
            });
        }
        if &bytes[..MAGIC.len()] != MAGIC {
            return Err(not_artifact(
                "it does not start with the .mythosc header".into(),
            ));
        }
        let mut r = Reader {
            bytes,
            pos: MAGIC.len(),
        };
        let ends_early =
            |what: &str| truncated(format!("{} bytes, it ends inside the {what}", bytes.len()));
        let format = r.u32().ok_or_else(|| ends_early("format version"))?;
        if format != FORMAT_VERSION {
            return Err(ArtifactError::Stale {
                path: path.to_string(),
                detail: format!(
                    "it is in artifact format {format}, this compiler ({}) reads format {FORMAT_VERSION}",
                    compiler_version("")
                ),
                recompile,
            });
        }
        let compiler_len = r.u32().ok_or_else(|| ends_early("compiler version"))?;
        if compiler_len > MAX_COMPILER_LEN {
            return Err(corrupt(format!(
                "a compiler version of {compiler_len} bytes"
            )));
        }
        let written_by = r
            .take(compiler_len as u64)
            .ok_or_else(|| ends_early("compiler version"))?;
        let header_len = r.u64().ok_or_else(|| ends_early("header lengths"))?;
        let blobs_len = r.u64().ok_or_else(|| ends_early("header lengths"))?;
        let need = (r.pos as u64)
            .checked_add(header_len)
            .and_then(|n| n.checked_add(blobs_len))
            .and_then(|n| n.checked_add(HASH_LEN as u64));
        let len = bytes.len() as u64;
        match need {
            Some(need) if need > len => {
                return Err(truncated(format!(
                    "{len} bytes, its header declares {need}"
                )))
            }
            None => {
                return Err(truncated(format!(
                    "{len} bytes, its header declares more than 2^64"
                )))
            }
            Some(need) if need < len => {
                return Err(corrupt(format!(
                    "{} unexpected bytes after its end",
                    len - need
                )))
            }
            Some(_) => {}
        }
        let body_end = bytes.len() - HASH_LEN;
        if Sha256::digest(&bytes[..body_end]).as_slice() != &bytes[body_end..] {
            return Err(corrupt(
                "its content hash does not match its contents".into(),
            ));
        }
        let written_by = std::str::from_utf8(written_by)
            .map_err(|_| corrupt("the compiler version is not UTF-8".into()))?;
        // Lengths are within the file from here on.
        let header_bytes = r
            .take(header_len)
            .ok_or_else(|| corrupt("bad header length".into()))?;
        let blobs = r
            .take(blobs_len)
            .ok_or_else(|| corrupt("bad blobs length".into()))?;
        let header: Result<Header, _> = serde_json::from_slice(header_bytes);
        if written_by != compiler {
            // Name the exact command when the header is still readable.
            let recompile = match &header {
                Ok(h) => Artifact::from_header_only(h, written_by).recompile_command(path),
                Err(_) => recompile.clone(),
            };
            return Err(ArtifactError::Stale {
                path: path.to_string(),
                detail: format!("it was compiled by {written_by}, this is {compiler}"),
                recompile,
            });
        }
        let header = header.map_err(|e| corrupt(format!("its header does not parse: {e}")))?;
        let total: Option<u64> = header
            .kernels
            .iter()
            .try_fold(0u64, |acc, k| acc.checked_add(k.size));
        if total != Some(blobs_len) {
            return Err(corrupt(format!(
                "its kernel table does not add up to the {blobs_len} bytes of kernels"
            )));
        }
        let mut kernels = Vec::with_capacity(header.kernels.len());
        let mut at = 0usize;
        for k in &header.kernels {
            // Each size is at most blobs_len, which fits in the file.
            let end = at + k.size as usize;
            kernels.push(Kernel {
                name: k.name.clone(),
                bytes: blobs[at..end].to_vec(),
            });
            at = end;
        }
        Ok(Artifact {
            compiler: written_by.to_string(),
            target: header.target,
            options: header.options,
            entry: header.entry,
            model: header.model,
            sources: header.sources,
            ir_fingerprint: header.ir_fingerprint,
            plan: header.plan,
            kernels,
        })
    }

    /// An artifact with a header's fields and no kernels (for messages).
    fn from_header_only(h: &Header, compiler: &str) -> Artifact {
        Artifact {
            compiler: compiler.to_string(),
            target: h.target.clone(),
            options: h.options.clone(),
            entry: h.entry.clone(),
            model: h.model.clone(),
            sources: Vec::new(),
            ir_fingerprint: h.ir_fingerprint.clone(),
            plan: Plan::default(),
            kernels: Vec::new(),
        }
    }
}

/// Writes `bytes` to a temporary file next to `path`, then renames it over
/// `path` (atomic on one file system).
pub fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_else(|| "artifact".into());
    let tmp = path.with_file_name(format!(".{file_name}.tmp-{}-{n}", std::process::id()));
    if let Err(e) = std::fs::write(&tmp, bytes) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

/// A bounds-checked cursor over bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: u64) -> Option<&'a [u8]> {
        let n = usize::try_from(n).ok()?;
        let end = self.pos.checked_add(n)?;
        let s = self.bytes.get(self.pos..end)?;
        self.pos = end;
        Some(s)
    }

    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }

    fn u64(&mut self) -> Option<u64> {
        Some(u64::from_le_bytes(self.take(8)?.try_into().ok()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::sema;

    const COMPILER: &str = "mythos 0.1.0 (test)";

    const SPEC: &str = "import \"lib.mythos\"\n\
        model m {\n  vocab = 256\n  dim = 64\n  max_seq = 128\n  \
        attention gqa { heads = 4, kv_heads = 2 }\n  ffn dense { hidden = h }\n  \
        loop max 2 { block(attention, dense) }\n}\n";
    const LIB: &str = "let h = 128\n";

    fn module_of(loader: &mut Loader, entry: &str) -> Module {
        let checked = sema::check_file(loader, entry);
        assert!(!checked.has_errors(), "{:?}", checked.diagnostics);
        crate::ir::lower::lower(&checked.models[0])
    }

    fn sample() -> Artifact {
        let mut loader = Loader::in_memory();
        loader.add_virtual("specs/m.mythos", SPEC.as_bytes().to_vec());
        loader.add_virtual("specs/lib.mythos", LIB.as_bytes().to_vec());
        let module = module_of(&mut loader, "specs/m.mythos");
        let sources = loader
            .sources
            .files()
            .map(|(_, f)| Source {
                name: f.name.clone(),
                text: f.text.clone(),
            })
            .collect();
        Artifact {
            compiler: COMPILER.into(),
            target: "cpu".into(),
            options: Options {
                level: 0,
                passes: vec!["canonicalize".into()],
                legalized: true,
            },
            entry: "specs/m.mythos".into(),
            model: "m".into(),
            sources,
            ir_fingerprint: ir_fingerprint(&module),
            // From JSON, as a backend would write it (new optional fields
            // of the plan need no change here).
            plan: serde_json::from_str(
                r#"{"steps": [{"graph": "main", "node": 3, "label": "head", "op": "head",
                    "kernels": ["linear_0123"], "weights": ["head.weight"],
                    "launch": {"rows": "batch", "width": 256, "bytes_per_row": 1024}}],
                   "kernels": [{"symbol": "linear_0123", "kind": "linear",
                    "loc": "specs/m.mythos:1:1", "args": ["f32[]", "f32[]", "index"]}]}"#,
            )
            .unwrap(),
            kernels: vec![
                Kernel {
                    name: "kernels.so".into(),
                    bytes: (0..300u32).map(|i| (i * 7) as u8).collect(),
                },
                Kernel {
                    name: "empty".into(),
                    bytes: Vec::new(),
                },
            ],
        }
    }

    fn read(bytes: &[u8]) -> Result<Artifact, ArtifactError> {
        Artifact::from_bytes(bytes, "out/m.mythosc", COMPILER)
    }

    /// Replaces the content hash with the right one for the bytes before it.
    fn rehash(bytes: &mut [u8]) {
        let end = bytes.len() - HASH_LEN;
        let hash = Sha256::digest(&bytes[..end]);
        bytes[end..].copy_from_slice(&hash);
    }

    #[test]
    fn round_trip_in_memory_and_on_disk() {
        let a = sample();
        let bytes = a.to_bytes();
        assert_eq!(&bytes[..8], MAGIC);
        assert_eq!(read(&bytes).unwrap(), a);
        // Deterministic: the same artifact gives the same bytes.
        assert_eq!(bytes, read(&bytes).unwrap().to_bytes());
        let dir = std::env::temp_dir().join(format!("mythos-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("m.mythosc");
        a.write(&path).unwrap();
        assert_eq!(Artifact::read(&path, COMPILER).unwrap(), a);
        // No temporary files are left behind.
        assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 1);
        let missing = Artifact::read(&dir.join("none.mythosc"), COMPILER).unwrap_err();
        assert_eq!(missing.kind(), "unreadable");
        assert!(missing.to_string().contains("none.mythosc: no such file"));
        std::fs::remove_dir_all(&dir).ok();
    }

    #[test]
    fn the_sources_rebuild_the_same_ir() {
        let a = sample();
        let mut loader = a.loader();
        assert_eq!(module_of(&mut loader, &a.entry).name, "m");
        let mut loader = a.loader();
        assert_eq!(
            ir_fingerprint(&module_of(&mut loader, &a.entry)),
            a.ir_fingerprint
        );
        // Another spec text gives another fingerprint.
        let mut loader = Loader::in_memory();
        loader.add_virtual(
            "specs/m.mythos",
            SPEC.replace("max 2", "max 3").into_bytes(),
        );
        loader.add_virtual("specs/lib.mythos", LIB.as_bytes().to_vec());
        assert_ne!(
            ir_fingerprint(&module_of(&mut loader, "specs/m.mythos")),
            a.ir_fingerprint
        );
    }

    #[test]
    fn bad_magic_is_not_an_artifact() {
        let mut bytes = sample().to_bytes();
        bytes[0] = b'X';
        let e = read(&bytes).unwrap_err();
        assert_eq!(e.kind(), "not an artifact");
        let msg = e.to_string();
        assert!(
            msg.starts_with("out/m.mythosc is not a Mythos artifact"),
            "{msg}"
        );
        assert!(msg.contains("mythos compile"), "{msg}");
        for other in [&b""[..], b"model m {}", b"\x7fELF\x02\x01\x01\0\0\0"] {
            assert_eq!(read(other).unwrap_err().kind(), "not an artifact");
        }
    }

    #[test]
    fn every_truncation_is_truncated() {
        let bytes = sample().to_bytes();
        for len in 1..bytes.len() {
            let e = read(&bytes[..len]).unwrap_err();
            assert_eq!(e.kind(), "truncated", "at {len}: {e}");
            let msg = e.to_string();
            assert!(msg.starts_with("out/m.mythosc is truncated ("), "{msg}");
            assert!(msg.contains("recompile it with `mythos compile"), "{msg}");
        }
    }

    #[test]
    fn a_flipped_byte_is_corrupt() {
        let bytes = sample().to_bytes();
        // In the header JSON, in a kernel blob, in the hash itself.
        let header_at = 8 + 4 + 4 + COMPILER.len() + 16 + 10;
        for at in [header_at, bytes.len() - HASH_LEN - 100, bytes.len() - 1] {
            let mut b = bytes.clone();
            b[at] ^= 0x20;
            let e = read(&b).unwrap_err();
            assert_eq!(e.kind(), "corrupt", "at {at}: {e}");
            let msg = e.to_string();
            assert!(
                msg.contains("out/m.mythosc is corrupt (its content hash does not match"),
                "{msg}"
            );
            assert!(msg.contains("recompile it with `mythos compile"), "{msg}");
        }
        // Extra bytes after the end.
        let mut b = bytes.clone();
        b.push(0);
        assert_eq!(read(&b).unwrap_err().kind(), "corrupt");
        // A header that does not parse behind a valid hash is still corrupt.
        let mut b = bytes.clone();
        b[header_at - 10] = b'[';
        rehash(&mut b);
        let e = read(&b).unwrap_err();
        assert_eq!(e.kind(), "corrupt", "{e}");
        assert!(e.to_string().contains("header does not parse"), "{e}");
    }

    #[test]
    fn other_versions_are_stale() {
        let a = sample();
        // Another format version (checked before anything else after the magic).
        let mut b = a.to_bytes();
        b[8..12].copy_from_slice(&(FORMAT_VERSION + 1).to_le_bytes());
        let e = read(&b).unwrap_err();
        assert_eq!(e.kind(), "stale");
        let msg = e.to_string();
        assert!(
            msg.contains(&format!(
                "is stale: it is in artifact format {}",
                FORMAT_VERSION + 1
            )),
            "{msg}"
        );
        assert!(msg.contains("recompile it with `mythos compile"), "{msg}");
        // Another compiler version with a valid hash: the exact command to recompile.
        let mut old = a.clone();
        old.compiler = "mythos 0.0.9 (test)".into();
        let e = read(&old.to_bytes()).unwrap_err();
        assert_eq!(e.kind(), "stale");
        let msg = e.to_string();
        assert!(
            msg.contains("it was compiled by mythos 0.0.9 (test), this is mythos 0.1.0 (test)"),
            "{msg}"
        );
        assert!(
            msg.contains(
                "recompile it with `mythos compile specs/m.mythos --model m --target cpu -O0 -o out/m.mythosc`"
            ),
            "{msg}"
        );
        // The running compiler's own version string is stable and versioned.
        assert_eq!(compiler_version(""), format!("mythos {CRATE_VERSION}"));
        assert_ne!(compiler_version("a"), compiler_version("b"));
    }

    #[test]
    fn kernel_table_must_match_the_blobs() {
        let mut b = sample().to_bytes();
        let s = String::from_utf8_lossy(&b).into_owned();
        let at = s.find("\"size\":300").unwrap() + "\"size\":".len();
        b[at..at + 3].copy_from_slice(b"299");
        rehash(&mut b);
        let e = read(&b).unwrap_err();
        assert_eq!(e.kind(), "corrupt", "{e}");
        assert!(e.to_string().contains("kernel table"), "{e}");
    }

    /// No byte pattern panics the reader: every single-byte change and
    /// pseudo-random garbage behind a valid magic all give errors.
    #[test]
    fn reading_never_panics() {
        let bytes = sample().to_bytes();
        for at in 0..bytes.len() {
            for flip in [0x01u8, 0x80, 0xff] {
                let mut b = bytes.clone();
                b[at] ^= flip;
                assert!(read(&b).is_err(), "flip {flip:#x} at {at}");
            }
        }
        let mut state = 0x9e3779b97f4a7c15u64;
        for n in 0..2000usize {
            let mut b = MAGIC.to_vec();
            b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
            for _ in 0..(n % 97) {
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                b.push(state as u8);
            }
            assert!(read(&b).is_err());
        }
        // Huge declared lengths (overflowing usize and u64 sums).
        let mut b = MAGIC.to_vec();
        b.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
        b.extend_from_slice(&0u32.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        b.extend_from_slice(&u64::MAX.to_le_bytes());
        assert_eq!(read(&b).unwrap_err().kind(), "truncated");
    }

    #[test]
    fn options_describe_themselves() {
        let o = Options {
            level: 2,
            passes: crate::passes::pipeline(2)
                .into_iter()
                .map(String::from)
                .collect(),
            legalized: false,
        };
        assert_eq!(o.describe(), "-O2");
        let o = Options {
            level: 0,
            passes: vec!["canonicalize".into()],
            legalized: true,
        };
        assert_eq!(o.describe(), "-O0");
        let o = Options {
            level: 2,
            passes: vec!["cse".into(), "canonicalize".into()],
            legalized: true,
        };
        assert_eq!(o.describe(), "-O2 --passes cse,canonicalize");
    }
}
