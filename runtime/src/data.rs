//! Token data for `mythos eval` (and, later, training): rows of
//! `input_ids` with the `targets` each position is scored on (the next
//! token; [`IGNORE`] = not scored, as `F.cross_entropy(..., ignore_index=-100)`).
//!
//! A source is a synthetic task (`task:NAME,...`, [`crate::tasks`]) or a
//! file in one of two formats, told apart by its extension:
//! - `.safetensors`: I64 `input_ids` `[rows, seq]` and optional I64
//!   `targets` of the same shape; without `targets` each row is scored on
//!   its own next tokens (the last position is not scored);
//! - `.bin`: a flat file of token ids (uint16 by default, the nanoGPT
//!   convention, or uint32), cut into rows of `seq + 1` tokens: a row's
//!   input is its first `seq` tokens and its targets its last `seq`.
//!
//! Every id is checked against the model's vocabulary; an error names the
//! file, the place and what to do.

use safetensors::{Dtype, SafeTensors};
use std::fmt;
use std::path::{Path, PathBuf};

/// A target that is not scored.
pub const IGNORE: i64 = -100;

/// The width of a `.bin` file's token ids.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TokenWidth {
    U16,
    U32,
}

impl TokenWidth {
    fn bytes(self) -> usize {
        match self {
            TokenWidth::U16 => 2,
            TokenWidth::U32 => 4,
        }
    }
}

/// How to read a data file.
#[derive(Clone, Copy, Debug)]
pub struct DataOptions {
    /// Tokens per row: required for a `.bin` file; for safetensors, when
    /// given, it must equal the file's row length.
    pub seq: Option<usize>,
    /// The width of a `.bin` file's ids.
    pub width: TokenWidth,
    /// The model's vocabulary: every id must lie in `[0, vocab)`.
    pub vocab: u64,
    /// Use at most this many rows (the first ones).
    pub max_rows: Option<usize>,
}

/// Rows of token ids and their targets, `seq` of each per row.
#[derive(Clone, Debug, PartialEq)]
pub struct Rows {
    pub seq: usize,
    pub input_ids: Vec<i64>,
    pub targets: Vec<i64>,
}

impl Rows {
    /// The number of rows.
    pub fn len(&self) -> usize {
        self.input_ids.len().checked_div(self.seq).unwrap_or(0)
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Rows `[first, first + n)`: their ids and targets.
    pub fn slice(&self, first: usize, n: usize) -> (&[i64], &[i64]) {
        let at = first * self.seq..(first + n) * self.seq;
        (&self.input_ids[at.clone()], &self.targets[at])
    }

    /// Keeps the first `n` rows.
    pub fn truncate(&mut self, n: usize) {
        let keep = n.min(self.len()) * self.seq;
        self.input_ids.truncate(keep);
        self.targets.truncate(keep);
    }

    /// Positions that are scored.
    pub fn scored(&self) -> usize {
        self.targets.iter().filter(|&&t| t != IGNORE).count()
    }
}

/// A data file that cannot be used, with what is wrong where.
#[derive(Debug)]
pub struct DataError {
    pub path: PathBuf,
    pub message: String,
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "data `{}`: {}", self.path.display(), self.message)
    }
}

impl std::error::Error for DataError {}

/// The rows `source` names: a synthetic task (`task:NAME,key=value,...`,
/// see [`crate::tasks`]) or a data file.
pub fn open(source: &str, opts: &DataOptions) -> Result<Rows, DataError> {
    if !crate::tasks::is_task(source) {
        return load(Path::new(source), opts);
    }
    let mut rows = crate::tasks::generate(source, opts.vocab).map_err(|message| DataError {
        path: PathBuf::from(source),
        message,
    })?;
    if let Some(max) = opts.max_rows {
        rows.truncate(max);
    }
    Ok(rows)
}

/// Rows cut from a stream of token ids (`seq + 1` per row, as a `.bin`
/// file) read from `path` (tokenized text), checked against the vocabulary.
pub fn from_stream(path: &Path, tokens: &[i64], opts: &DataOptions) -> Result<Rows, DataError> {
    let err = |message: String| DataError {
        path: path.to_path_buf(),
        message,
    };
    let Some(seq) = opts.seq else {
        return Err(err("text data needs --seq (tokens per row)".into()));
    };
    let mut rows = cut(tokens, seq).map_err(err)?;
    if let Some(max) = opts.max_rows {
        rows.truncate(max);
    }
    check_vocab(&rows, opts.vocab).map_err(err)?;
    Ok(rows)
}

/// Reads a data file (see the module's documentation for the formats).
pub fn load(path: &Path, opts: &DataOptions) -> Result<Rows, DataError> {
    let err = |message: String| DataError {
        path: path.to_path_buf(),
        message,
    };
    let bytes = std::fs::read(path).map_err(|e| err(format!("cannot read it: {e}")))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let mut rows = match ext {
        "safetensors" => from_safetensors(&bytes, opts.seq).map_err(err)?,
        "bin" => from_tokens(&bytes, opts).map_err(err)?,
        _ => {
            return Err(err(format!(
                "unknown format `.{ext}`: give a .safetensors file (I64 input_ids [rows, seq], \
                 optional targets), a .bin file of token ids (uint16, or uint32 with \
                 --data-width u32) or text (.txt, read with --tokenizer)"
            )))
        }
    };
    if let Some(max) = opts.max_rows {
        rows.truncate(max);
    }
    check_vocab(&rows, opts.vocab).map_err(err)?;
    Ok(rows)
}

fn from_safetensors(bytes: &[u8], seq: Option<usize>) -> Result<Rows, String> {
    let st = SafeTensors::deserialize(bytes).map_err(|e| {
        format!("not a safetensors file ({e}); write I64 input_ids [rows, seq] with safetensors")
    })?;
    // An I64 tensor's values and shape, if the file has it.
    type Ids = (Vec<i64>, Vec<usize>);
    let tensor = |name: &str| -> Result<Option<Ids>, String> {
        let Ok(t) = st.tensor(name) else {
            return Ok(None);
        };
        if t.dtype() != Dtype::I64 {
            return Err(format!("`{name}` must be I64, found {:?}", t.dtype()));
        }
        let ids = t
            .data()
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect();
        Ok(Some((ids, t.shape().to_vec())))
    };
    let Some((input_ids, shape)) = tensor("input_ids")? else {
        return Err(format!(
            "no tensor `input_ids` (I64, [rows, seq]); it has: {}",
            st.names().join(", ")
        ));
    };
    if shape.len() != 2 || shape[0] == 0 || shape[1] == 0 {
        return Err(format!(
            "`input_ids` must have shape [rows, seq], found {shape:?}"
        ));
    }
    let t = shape[1];
    if let Some(s) = seq.filter(|&s| s != t) {
        return Err(format!(
            "--seq {s} does not match the rows of `input_ids` ({t} tokens); leave --seq out"
        ));
    }
    let targets = match tensor("targets")? {
        Some((targets, tshape)) => {
            if tshape != shape {
                return Err(format!(
                    "`targets` has shape {tshape:?}, `input_ids` {shape:?}: they must match"
                ));
            }
            targets
        }
        None => input_ids
            .chunks_exact(t)
            .flat_map(|row| row[1..].iter().copied().chain([IGNORE]))
            .collect(),
    };
    Ok(Rows {
        seq: t,
        input_ids,
        targets,
    })
}

fn from_tokens(bytes: &[u8], opts: &DataOptions) -> Result<Rows, String> {
    let w = opts.width.bytes();
    if bytes.len() % w != 0 {
        return Err(format!(
            "{} bytes is not a whole number of {}-byte token ids; is --data-width right?",
            bytes.len(),
            w
        ));
    }
    let Some(seq) = opts.seq else {
        return Err("a .bin file needs --seq (tokens per row)".into());
    };
    let tokens: Vec<i64> = match opts.width {
        TokenWidth::U16 => bytes
            .chunks_exact(2)
            .map(|c| i64::from(u16::from_le_bytes([c[0], c[1]])))
            .collect(),
        TokenWidth::U32 => bytes
            .chunks_exact(4)
            .map(|c| i64::from(u32::from_le_bytes([c[0], c[1], c[2], c[3]])))
            .collect(),
    };
    cut(&tokens, seq)
}

/// A stream of token ids cut into rows of `seq + 1`: a row's input is its
/// first `seq` tokens and its targets its last `seq`.
fn cut(tokens: &[i64], seq: usize) -> Result<Rows, String> {
    let rows = tokens.len() / (seq + 1);
    if rows == 0 {
        return Err(format!(
            "{} tokens are fewer than one row of --seq {seq} + 1",
            tokens.len()
        ));
    }
    let mut input_ids = Vec::with_capacity(rows * seq);
    let mut targets = Vec::with_capacity(rows * seq);
    for chunk in tokens.chunks_exact(seq + 1).take(rows) {
        input_ids.extend_from_slice(&chunk[..seq]);
        targets.extend_from_slice(&chunk[1..]);
    }
    Ok(Rows {
        seq,
        input_ids,
        targets,
    })
}

/// Every input id in `[0, vocab)`, every target there or [`IGNORE`].
fn check_vocab(rows: &Rows, vocab: u64) -> Result<(), String> {
    let outside = |id: i64| id < 0 || id as u64 >= vocab;
    let place = |i: usize| format!("row {}, position {}", i / rows.seq, i % rows.seq);
    if let Some(i) = rows.input_ids.iter().position(|&id| outside(id)) {
        return Err(format!(
            "input id {} at {} is outside the model's vocabulary [0, {vocab}); \
             was the data made with another tokenizer?",
            rows.input_ids[i],
            place(i)
        ));
    }
    if let Some(i) = rows.targets.iter().position(|&t| t != IGNORE && outside(t)) {
        return Err(format!(
            "target {} at {} is outside the model's vocabulary [0, {vocab}) and is not \
             {IGNORE} (not scored)",
            rows.targets[i],
            place(i)
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn opts(seq: Option<usize>) -> DataOptions {
        DataOptions {
            seq,
            width: TokenWidth::U16,
            vocab: 10,
            max_rows: None,
        }
    }

    #[test]
    fn a_token_file_is_cut_into_rows_with_shifted_targets() {
        let bytes: Vec<u8> = (0u16..9).flat_map(|t| t.to_le_bytes()).collect();
        let rows = from_tokens(&bytes, &opts(Some(3))).unwrap();
        assert_eq!(rows.len(), 2);
        assert_eq!(rows.input_ids, vec![0, 1, 2, 4, 5, 6]);
        assert_eq!(rows.targets, vec![1, 2, 3, 5, 6, 7]);
        assert!(from_tokens(&bytes[..3], &opts(Some(3)))
            .unwrap_err()
            .contains("not a whole number"));
        assert!(from_tokens(&bytes, &opts(Some(9)))
            .unwrap_err()
            .contains("fewer than one row"));
    }

    #[test]
    fn ids_outside_the_vocabulary_are_named() {
        let rows = Rows {
            seq: 2,
            input_ids: vec![1, 2, 3, 12],
            targets: vec![2, IGNORE, 4, 5],
        };
        let e = check_vocab(&rows, 10).unwrap_err();
        assert!(e.contains("input id 12 at row 1, position 1"), "{e}");
        let rows = Rows {
            targets: vec![2, -7, 4, 5],
            input_ids: vec![1, 2, 3, 4],
            ..rows
        };
        assert!(check_vocab(&rows, 10).unwrap_err().contains("target -7"));
        assert_eq!(rows.scored(), 4);
    }
}
