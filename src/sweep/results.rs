//! Result files: how trials that run in other processes (Slurm tasks, on
//! other nodes) hand their outcome to the one writer of `journal.jsonl`.
//!
//! Appending to one file from several nodes is not safe on NFS, so each
//! worker writes its trial's [`Entry`] as `results.d/<hash>.json`: a temporary
//! file in the same folder, fsync'd, then renamed (atomic on one file
//! system; a reader sees the whole file or none). The controller merges the
//! files whose hash its journal lacks ([`merge`]); the files stay, so a merge
//! interrupted by a kill is simply done again.

use super::journal::{Entry, Journal};
use anyhow::{Context, Result};
use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};

/// The folder of result files in a sweep's output folder.
pub fn dir(out_dir: &Path) -> PathBuf {
    out_dir.join("results.d")
}

/// Writes `bytes` to `path` through a temporary file in the same folder:
/// written, fsync'd, renamed, and the folder fsync'd.
pub fn write_durable(path: &Path, bytes: &[u8]) -> Result<()> {
    let folder = path.parent().unwrap_or(Path::new("."));
    let file_name = path
        .file_name()
        .map(|f| f.to_string_lossy().into_owned())
        .unwrap_or_default();
    let host = hostname();
    let tmp = folder.join(format!(".{file_name}.tmp-{host}-{}", std::process::id()));
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(bytes)?;
        f.sync_all()?;
        std::fs::rename(&tmp, path)?;
        // The rename itself is durable once the folder is.
        if let Ok(d) = std::fs::File::open(folder) {
            let _ = d.sync_all();
        }
        Ok(())
    };
    write().map_err(|e| {
        let _ = std::fs::remove_file(&tmp);
        anyhow::anyhow!("writing {}: {e}", path.display())
    })
}

/// This machine's name (for temporary file names and worker logs).
pub fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .ok()
        .filter(|s| !s.is_empty())
        .or_else(|| std::env::var("HOSTNAME").ok())
        .unwrap_or_else(|| "localhost".into())
}

/// Writes one trial's result file.
pub fn write(out_dir: &Path, entry: &Entry) -> Result<()> {
    let folder = dir(out_dir);
    std::fs::create_dir_all(&folder).with_context(|| format!("creating {}", folder.display()))?;
    let bytes = serde_json::to_vec_pretty(entry)?;
    write_durable(&folder.join(format!("{}.json", entry.hash)), &bytes)
}

/// Every readable result file (a file that does not parse is reported and
/// skipped: the trial then counts as not done and runs again).
pub fn scan(out_dir: &Path) -> Vec<Entry> {
    let folder = dir(out_dir);
    let Ok(read) = std::fs::read_dir(&folder) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for item in read.flatten() {
        let path = item.path();
        let name = item.file_name().to_string_lossy().into_owned();
        if name.starts_with('.') || !name.ends_with(".json") {
            continue;
        }
        match std::fs::read(&path)
            .map_err(|e| e.to_string())
            .and_then(|b| serde_json::from_slice::<Entry>(&b).map_err(|e| e.to_string()))
        {
            Ok(e) if name == format!("{}.json", e.hash) => found.push(e),
            Ok(e) => eprintln!(
                "sweep: skipping {}: it holds trial {}, not the one its name says",
                path.display(),
                e.hash
            ),
            Err(e) => eprintln!(
                "sweep: skipping {}: not a trial result ({e}); delete it and the trial runs again",
                path.display()
            ),
        }
    }
    found
}

/// Appends to the journal every result file whose trial it lacks; returns
/// how many it added.
pub fn merge(
    out_dir: &Path,
    journal: &mut Journal,
    entries: &mut HashMap<String, Entry>,
) -> Result<usize> {
    let mut added = 0;
    for e in scan(out_dir) {
        if entries.contains_key(&e.hash) {
            continue;
        }
        journal.append(&e).context("appending to journal.jsonl")?;
        entries.insert(e.hash.clone(), e);
        added += 1;
    }
    Ok(added)
}
