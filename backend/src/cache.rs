//! The compile cache: artifacts keyed by the content of everything that
//! decides them (docs/compile.md).
//!
//! The key is the sha256 of the spec sources (every file the loader read,
//! by name and text), the entry and model names, the pass options, the
//! target, the compiler version and the artifact format version. A hit
//! returns the stored artifact without compiling. On a miss, a small record
//! per (entry, model) of the last key's components per target tells why:
//! the first compile, a new target, or which input changed.
//!
//! Layout under the cache folder (`$MYTHOS_CACHE_DIR`, else
//! `$XDG_CACHE_HOME/mythos`, else `~/.cache/mythos`):
//!
//! ```text
//! artifacts/<key>.mythosc       one artifact per key
//! records/<entry+model hash>.json   { target: components of the last key }
//! ```
//!
//! Every file is written atomically (temporary file, then rename), so
//! concurrent compiles never see half a file; deleting the folder is safe.

use crate::compile::Target;
use mythos_compiler::artifact::{
    self, hex, write_atomic, Artifact, ArtifactError, Kernel, Options, Source,
};
use mythos_compiler::plan::Plan;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::fmt;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

/// The version of this compiler as written into artifacts: the crate
/// version and a hash of the kernel templates, so that changed templates
/// make old artifacts stale and miss the cache.
pub fn compiler_id() -> &'static str {
    static ID: OnceLock<String> = OnceLock::new();
    ID.get_or_init(|| {
        let mut h = Sha256::new();
        for (name, text) in crate::render::TEMPLATES {
            h.update(name.as_bytes());
            h.update([0]);
            h.update(text.as_bytes());
            h.update([0]);
        }
        artifact::compiler_version(&format!("templates {}", &hex(&h.finalize())[..12]))
    })
}

/// The target's name in artifacts and cache keys: `cpu`, or the CUDA arch.
pub fn target_name(target: &Target) -> String {
    match target {
        Target::Cpu => "cpu".to_string(),
        Target::Cuda { arch } => arch.clone(),
    }
}

/// Everything that decides an artifact, besides the IR it is compiled from
/// (which is a function of these).
#[derive(Clone, Debug)]
pub struct Inputs {
    /// The spec as named on the command line (a path or `@preset`).
    pub entry: String,
    pub model: String,
    /// [`target_name`].
    pub target: String,
    pub options: Options,
    pub sources: Vec<Source>,
    /// [`compiler_id`] (tests use others).
    pub compiler: String,
}

impl Inputs {
    /// The components of the key, as recorded for miss reasons.
    fn components(&self) -> Components {
        Components {
            format: artifact::FORMAT_VERSION,
            compiler: self.compiler.clone(),
            options: self.options.describe(),
            sources: self
                .sources
                .iter()
                .map(|s| (s.name.clone(), hex(&Sha256::digest(s.text.as_bytes()))))
                .collect(),
            key: String::new(),
        }
    }

    /// The cache key (hex sha256).
    pub fn key(&self) -> String {
        let mut h = Sha256::new();
        let mut field = |s: &[u8]| {
            h.update((s.len() as u64).to_le_bytes());
            h.update(s);
        };
        field(b"mythos-cache/1");
        field(&artifact::FORMAT_VERSION.to_le_bytes());
        field(self.compiler.as_bytes());
        field(self.target.as_bytes());
        field(self.entry.as_bytes());
        field(self.model.as_bytes());
        field(&[self.options.level, self.options.legalized as u8]);
        field(self.options.passes.join(",").as_bytes());
        for s in &self.sources {
            field(s.name.as_bytes());
            field(s.text.as_bytes());
        }
        hex(&h.finalize())
    }

    /// The artifact of these inputs with a compile's results.
    pub fn artifact(&self, ir_fingerprint: String, plan: Plan, kernels: Vec<Kernel>) -> Artifact {
        Artifact {
            compiler: self.compiler.clone(),
            target: self.target.clone(),
            options: self.options.clone(),
            entry: self.entry.clone(),
            model: self.model.clone(),
            sources: self.sources.clone(),
            ir_fingerprint,
            plan,
            kernels,
        }
    }
}

/// What a record keeps of a key.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
struct Components {
    format: u32,
    compiler: String,
    options: String,
    /// (file name, sha256 of its text), in load order.
    sources: Vec<(String, String)>,
    key: String,
}

/// The record of one (entry, model): the last key's components per target.
#[derive(Debug, Default, Serialize, Deserialize)]
struct Record {
    entry: String,
    model: String,
    targets: BTreeMap<String, Components>,
}

/// Why the cache had no artifact for the inputs.
#[derive(Clone, Debug, PartialEq)]
pub enum Miss {
    /// Nothing was ever compiled from this entry and model.
    First {
        entry: String,
        model: String,
        target: String,
    },
    /// Compiled before, but for other targets only.
    NewTarget { target: String, before: Vec<String> },
    /// Inputs that changed since the last compile for this target.
    Changed(Vec<Change>),
    /// The same inputs as the last compile, but its artifact is gone.
    Evicted,
    /// The stored artifact could not be used (the reason).
    Unusable(String),
    /// Not looked up (`--no-cache`, or the cache folder is unknown).
    Bypassed(String),
}

/// One changed input of a key.
#[derive(Clone, Debug, PartialEq)]
pub enum Change {
    /// A spec file's text (or the set of files) changed.
    Spec(Vec<String>),
    Options {
        before: String,
        now: String,
    },
    Compiler {
        before: String,
        now: String,
    },
    Format {
        before: u32,
        now: u32,
    },
}

impl fmt::Display for Change {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Change::Spec(files) => write!(f, "spec text changed ({})", files.join(", ")),
            Change::Options { before, now } => write!(f, "options changed ({before} -> {now})"),
            Change::Compiler { before, now } => {
                write!(f, "compiler version changed ({before} -> {now})")
            }
            Change::Format { before, now } => {
                write!(f, "artifact format changed ({before} -> {now})")
            }
        }
    }
}

impl fmt::Display for Miss {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Miss::First {
                entry,
                model,
                target,
            } => write!(
                f,
                "cache miss: first compile of {entry} (model {model}) for {target}"
            ),
            Miss::NewTarget { target, before } => write!(
                f,
                "cache miss: target changed: first compile for {target} (compiled before for {})",
                before.join(", ")
            ),
            Miss::Changed(changes) => {
                let c: Vec<String> = changes.iter().map(|c| c.to_string()).collect();
                write!(f, "cache miss: {}", c.join("; "))
            }
            Miss::Evicted => write!(
                f,
                "cache miss: the artifact of the last compile was removed from the cache"
            ),
            Miss::Unusable(why) => write!(f, "cache miss: the cached artifact is unusable: {why}"),
            Miss::Bypassed(why) => write!(f, "cache bypassed ({why})"),
        }
    }
}

/// The result of a lookup.
#[derive(Debug)]
pub enum Lookup {
    Hit {
        artifact: Box<Artifact>,
        path: PathBuf,
    },
    Miss(Miss),
}

/// Why the cache could not store an artifact (compiling still succeeds).
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("cannot write the compile cache at {path}: {reason}")]
    Write { path: String, reason: String },
}

/// A compile cache in one folder.
#[derive(Clone, Debug)]
pub struct Cache {
    dir: PathBuf,
}

impl Cache {
    pub fn at(dir: impl Into<PathBuf>) -> Cache {
        Cache { dir: dir.into() }
    }

    /// The folder from the environment: `$MYTHOS_CACHE_DIR`, else
    /// `$XDG_CACHE_HOME/mythos`, else `$HOME/.cache/mythos`; `None` when
    /// none is set.
    pub fn from_env() -> Option<Cache> {
        let var = |name: &str| std::env::var_os(name).filter(|v| !v.is_empty());
        if let Some(dir) = var("MYTHOS_CACHE_DIR") {
            return Some(Cache::at(PathBuf::from(dir)));
        }
        if let Some(xdg) = var("XDG_CACHE_HOME").map(PathBuf::from) {
            // The XDG spec says relative values are invalid and to be ignored.
            if xdg.is_absolute() {
                return Some(Cache::at(xdg.join("mythos")));
            }
        }
        var("HOME").map(|home| Cache::at(PathBuf::from(home).join(".cache").join("mythos")))
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn artifact_path(&self, key: &str) -> PathBuf {
        self.dir
            .join("artifacts")
            .join(format!("{key}.{}", artifact::EXTENSION))
    }

    fn record_path(&self, inputs: &Inputs) -> PathBuf {
        let mut h = Sha256::new();
        h.update(inputs.entry.as_bytes());
        h.update([0]);
        h.update(inputs.model.as_bytes());
        self.dir
            .join("records")
            .join(format!("{}.json", &hex(&h.finalize())[..32]))
    }

    fn record(&self, inputs: &Inputs) -> Record {
        std::fs::read(self.record_path(inputs))
            .ok()
            .and_then(|b| serde_json::from_slice::<Record>(&b).ok())
            .filter(|r| r.entry == inputs.entry && r.model == inputs.model)
            .unwrap_or_default()
    }

    /// The stored artifact for `inputs`, or why there is none. A hit also
    /// records these inputs as the last ones (for later miss reasons).
    pub fn lookup(&self, inputs: &Inputs) -> Lookup {
        let key = inputs.key();
        let path = self.artifact_path(&key);
        if path.exists() {
            return match Artifact::read(&path, &inputs.compiler) {
                Ok(a) if a.entry == inputs.entry && a.model == inputs.model => {
                    let _ = self.write_record(inputs, &key);
                    Lookup::Hit {
                        artifact: Box::new(a),
                        path,
                    }
                }
                Ok(_) => Lookup::Miss(Miss::Unusable(
                    "it was compiled from another spec (a key collision)".into(),
                )),
                Err(e) => Lookup::Miss(Miss::Unusable(e.to_string())),
            };
        }
        Lookup::Miss(self.why(inputs, &key))
    }

    /// Why `inputs` (with `key`) missed, from the record.
    fn why(&self, inputs: &Inputs, key: &str) -> Miss {
        let record = self.record(inputs);
        let Some(last) = record.targets.get(&inputs.target) else {
            if record.targets.is_empty() {
                return Miss::First {
                    entry: inputs.entry.clone(),
                    model: inputs.model.clone(),
                    target: inputs.target.clone(),
                };
            }
            return Miss::NewTarget {
                target: inputs.target.clone(),
                before: record.targets.keys().cloned().collect(),
            };
        };
        if last.key == key {
            return Miss::Evicted;
        }
        let now = inputs.components();
        let mut changes = Vec::new();
        if last.sources != now.sources {
            let mut files: Vec<String> = now
                .sources
                .iter()
                .filter(|s| !last.sources.contains(s))
                .map(|s| s.0.clone())
                .collect();
            files.extend(
                last.sources
                    .iter()
                    .filter(|s| !now.sources.iter().any(|n| n.0 == s.0))
                    .map(|s| format!("{} no longer read", s.0)),
            );
            changes.push(Change::Spec(files));
        }
        if last.options != now.options {
            changes.push(Change::Options {
                before: last.options.clone(),
                now: now.options.clone(),
            });
        }
        if last.compiler != now.compiler {
            changes.push(Change::Compiler {
                before: last.compiler.clone(),
                now: now.compiler.clone(),
            });
        }
        if last.format != now.format {
            changes.push(Change::Format {
                before: last.format,
                now: now.format,
            });
        }
        if changes.is_empty() {
            // Only what `describe` does not show (e.g. the legalization flag).
            changes.push(Change::Options {
                before: last.options.clone(),
                now: now.options,
            });
        }
        Miss::Changed(changes)
    }

    /// Stores the artifact of `inputs` and records them as the last ones;
    /// returns where it was stored.
    pub fn store(&self, inputs: &Inputs, artifact: &Artifact) -> Result<PathBuf, CacheError> {
        let key = inputs.key();
        let path = self.artifact_path(&key);
        let fail = |p: &Path, e: &dyn fmt::Display| CacheError::Write {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(parent, &e))?;
        }
        artifact.write(&path).map_err(|e| match e {
            ArtifactError::Write { path, reason } => CacheError::Write { path, reason },
            other => fail(&path, &other),
        })?;
        self.write_record(inputs, &key)?;
        Ok(path)
    }

    fn write_record(&self, inputs: &Inputs, key: &str) -> Result<(), CacheError> {
        let path = self.record_path(inputs);
        let fail = |p: &Path, e: &dyn fmt::Display| CacheError::Write {
            path: p.display().to_string(),
            reason: e.to_string(),
        };
        let mut record = self.record(inputs);
        record.entry = inputs.entry.clone();
        record.model = inputs.model.clone();
        let mut c = inputs.components();
        c.key = key.to_string();
        record.targets.insert(inputs.target.clone(), c);
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent).map_err(|e| fail(parent, &e))?;
        }
        let json = serde_json::to_vec_pretty(&record).expect("records serialize");
        write_atomic(&path, &json).map_err(|e| fail(&path, &e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> Inputs {
        Inputs {
            entry: "specs/m.mythos".into(),
            model: "m".into(),
            target: "cpu".into(),
            options: Options {
                level: 2,
                passes: mythos_compiler::passes::pipeline(2)
                    .into_iter()
                    .map(String::from)
                    .collect(),
                legalized: false,
            },
            sources: vec![
                Source {
                    name: "specs/m.mythos".into(),
                    text: "model m {}".into(),
                },
                Source {
                    name: "specs/lib.mythos".into(),
                    text: "let h = 1".into(),
                },
            ],
            compiler: "mythos 0.1.0 (test)".into(),
        }
    }

    fn artifact_of(i: &Inputs) -> Artifact {
        i.artifact(
            "f".repeat(64),
            Plan::default(),
            vec![Kernel {
                name: "kernels.so".into(),
                bytes: vec![1, 2, 3],
            }],
        )
    }

    fn temp_cache(name: &str) -> Cache {
        let dir = std::env::temp_dir().join(format!("mythos-cache-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        Cache::at(dir)
    }

    fn miss(c: &Cache, i: &Inputs) -> String {
        match c.lookup(i) {
            Lookup::Miss(m) => m.to_string(),
            Lookup::Hit { .. } => panic!("unexpected hit"),
        }
    }

    fn compile(c: &Cache, i: &Inputs) {
        c.store(i, &artifact_of(i)).unwrap();
    }

    #[test]
    fn hit_after_store_and_every_miss_reason() {
        let c = temp_cache("reasons");
        let base = inputs();
        assert_eq!(
            miss(&c, &base),
            "cache miss: first compile of specs/m.mythos (model m) for cpu"
        );
        compile(&c, &base);
        match c.lookup(&base) {
            Lookup::Hit { artifact, path } => {
                assert_eq!(*artifact, artifact_of(&base));
                assert!(path.starts_with(c.dir().join("artifacts")));
            }
            Lookup::Miss(m) => panic!("{m}"),
        }
        let mut o1 = base.clone();
        o1.options.level = 1;
        o1.options.passes = vec!["canonicalize".into(), "cse".into()];
        assert_eq!(
            miss(&c, &o1),
            "cache miss: options changed (-O2 -> -O1 --passes canonicalize,cse)"
        );
        let mut spec = base.clone();
        spec.sources[1].text = "let h = 2".into();
        assert_eq!(
            miss(&c, &spec),
            "cache miss: spec text changed (specs/lib.mythos)"
        );
        let mut newer = base.clone();
        newer.compiler = "mythos 0.2.0 (test)".into();
        assert_eq!(
            miss(&c, &newer),
            "cache miss: compiler version changed (mythos 0.1.0 (test) -> mythos 0.2.0 (test))"
        );
        let mut cuda = base.clone();
        cuda.target = "sm_90".into();
        assert_eq!(
            miss(&c, &cuda),
            "cache miss: target changed: first compile for sm_90 (compiled before for cpu)"
        );
        // Two changes at once are both named.
        let mut both = spec.clone();
        both.options = o1.options.clone();
        let m = miss(&c, &both);
        assert!(
            m.contains("spec text changed") && m.contains("options changed"),
            "{m}"
        );
        // The record follows the last compile: after -O1, -O2 is a hit (still
        // stored) and an edit is compared with -O2.
        compile(&c, &o1);
        assert!(matches!(c.lookup(&base), Lookup::Hit { .. }));
        assert_eq!(
            miss(&c, &spec),
            "cache miss: spec text changed (specs/lib.mythos)"
        );
        std::fs::remove_dir_all(c.dir()).ok();
    }

    #[test]
    fn damaged_or_removed_artifacts_are_misses_not_errors() {
        let c = temp_cache("damaged");
        let base = inputs();
        compile(&c, &base);
        let path = c.artifact_path(&base.key());
        let mut bytes = std::fs::read(&path).unwrap();
        let n = bytes.len();
        bytes[n / 2] ^= 1;
        std::fs::write(&path, &bytes).unwrap();
        let m = miss(&c, &base);
        assert!(
            m.starts_with("cache miss: the cached artifact is unusable: ") && m.contains("corrupt"),
            "{m}"
        );
        std::fs::remove_file(&path).unwrap();
        assert_eq!(
            miss(&c, &base),
            "cache miss: the artifact of the last compile was removed from the cache"
        );
        // A broken record is as good as none.
        compile(&c, &base);
        std::fs::write(c.record_path(&base), b"{not json").unwrap();
        let mut o1 = base.clone();
        o1.options.level = 1;
        assert!(miss(&c, &o1).contains("first compile"));
        std::fs::remove_dir_all(c.dir()).ok();
    }

    #[test]
    fn keys_depend_on_every_input() {
        let base = inputs();
        let k = base.key();
        assert_eq!(k, inputs().key());
        let mut variants = Vec::new();
        let mut v = base.clone();
        v.entry = "other.mythos".into();
        variants.push(v);
        let mut v = base.clone();
        v.model = "n".into();
        variants.push(v);
        let mut v = base.clone();
        v.target = "sm_80".into();
        variants.push(v);
        let mut v = base.clone();
        v.options.legalized = true;
        variants.push(v);
        let mut v = base.clone();
        v.sources[0].name = "specs/n.mythos".into();
        variants.push(v);
        let mut v = base.clone();
        v.compiler = "x".into();
        variants.push(v);
        for v in variants {
            assert_ne!(v.key(), k, "{v:?}");
        }
    }

    #[test]
    fn the_folder_comes_from_the_environment() {
        // Only reads the variables; the order is documented in from_env.
        let c = Cache::from_env();
        if let Some(dir) = std::env::var_os("MYTHOS_CACHE_DIR").filter(|v| !v.is_empty()) {
            assert_eq!(c.unwrap().dir(), Path::new(&dir));
        }
        assert!(
            compiler_id().starts_with(&format!("mythos {} (templates ", artifact::CRATE_VERSION))
        );
    }
}
