//! `journal.jsonl`: one JSON object per finished trial, appended, flushed and
//! fsync'd one at a time. A run that is killed leaves at most a partial last
//! line, which the next run drops; every complete line is a trial that is
//! never run again.

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, HashMap};
use std::fs::{File, OpenOptions};
use std::io::{Seek, SeekFrom, Write};
use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Checked and analyzed; meets every constraint.
    Ok,
    /// Checked and analyzed; violates a constraint.
    Rejected,
    /// The variant spec does not check, or its measurement or training failed.
    Failed,
    /// Trained, then stopped early by `[early_stop]` (its metrics are those
    /// at the budget it reached).
    Pruned,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Rejected => "rejected",
            Status::Failed => "failed",
            Status::Pruned => "pruned",
        }
    }
}

/// One line of the journal.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Entry {
    /// The trial's content hash (variant spec, base text, options, version).
    pub hash: String,
    /// Position in the plan when it ran.
    pub index: usize,
    /// Axis path -> value.
    pub axes: serde_json::Map<String, serde_json::Value>,
    pub status: Status,
    /// The first constraint it violates (status `rejected`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub violated: Option<String>,
    /// Rendered diagnostics (status `failed`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default)]
    pub metrics: BTreeMap<String, f64>,
    /// The variant spec.
    pub spec: String,
    /// Seconds the evaluation took.
    #[serde(default)]
    pub seconds: f64,
    /// Trained trials: the standard deviation over seeds of each metric
    /// (two or more seeds); `metrics` holds the means.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub spread: BTreeMap<String, f64>,
    /// Trained trials: each seed's metrics.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub runs: Vec<BTreeMap<String, f64>>,
}

/// The journal opened for appending.
pub struct Journal {
    file: File,
}

/// What a journal already holds.
pub struct Loaded {
    pub entries: HashMap<String, Entry>,
    /// Unparsable lines dropped (at most the partial last one after a kill).
    pub dropped: usize,
}

/// The entries of a journal's complete lines, the count of lines that do not
/// parse, and the length of the complete part.
fn parse(bytes: &[u8]) -> (HashMap<String, Entry>, usize, usize) {
    let mut entries: HashMap<String, Entry> = HashMap::new();
    let mut dropped = 0;
    // Everything after the last newline is a line cut short by a kill.
    let complete = bytes.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    for line in bytes[..complete].split(|&b| b == b'\n') {
        if line.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match serde_json::from_slice::<Entry>(line) {
            Ok(e) => match entries.get(&e.hash) {
                // A trial pruned by successive halving and trained to the end
                // by a later sweep without it: the later line counts.
                Some(old) if old.status == Status::Pruned && e.status != Status::Pruned => {
                    entries.insert(e.hash.clone(), e);
                }
                Some(_) => {}
                None => {
                    entries.insert(e.hash.clone(), e);
                }
            },
            Err(_) => dropped += 1,
        }
    }
    (entries, dropped, complete)
}

impl Journal {
    /// The entries of the journal at `path` without writing to it (none when
    /// it does not exist), for readers beside its writer.
    pub fn read(path: &Path) -> Result<HashMap<String, Entry>> {
        match std::fs::read(path) {
            Ok(bytes) => Ok(parse(&bytes).0),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(HashMap::new()),
            Err(e) => Err(anyhow::anyhow!("reading {}: {e}", path.display())),
        }
    }

    /// Reads the journal at `path` (if any), cuts a partial last line, and
    /// opens it for appending.
    pub fn open(path: &Path) -> Result<(Journal, Loaded)> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .with_context(|| format!("opening {}", path.display()))?;
        let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
        let (entries, mut dropped, complete) = parse(&bytes);
        if complete < bytes.len() {
            dropped += 1;
            file.set_len(complete as u64)
                .with_context(|| format!("truncating {}", path.display()))?;
            file.seek(SeekFrom::End(0))?;
            file.sync_all()?;
        }
        Ok((Journal { file }, Loaded { entries, dropped }))
    }

    /// Appends one entry as one line, then flushes and fsyncs.
    pub fn append(&mut self, entry: &Entry) -> Result<()> {
        let mut line = serde_json::to_vec(entry)?;
        line.push(b'\n');
        self.file.write_all(&line)?;
        self.file.flush()?;
        self.file.sync_data()?;
        Ok(())
    }
}
