//! Text data for `train` and `eval`, and the tokenizers that read it.
//!
//! A text source is a `.txt` file or a directory (its `.txt` files, in name
//! order, concatenated). It is tokenized into one stream of ids and cut into
//! rows of `--seq + 1` tokens like a `.bin` file. The tokenizer
//! (`--tokenizer`) is one of
//! - `bytes` (the default): the text's UTF-8 bytes, ids 0-255;
//! - a Hugging Face `tokenizer.json` file;
//! - `bpe:N`: a byte-level BPE of `N` tokens trained on the text itself
//!   (`mythos train` writes it as `OUT/tokenizer.json`, which `eval` and
//!   `generate` then take with `--tokenizer`; a resumed run reuses it).

use anyhow::{anyhow, bail, Context, Result};
use mythos_runtime::data::{self, DataOptions, Rows};
use std::path::{Path, PathBuf};
use tokenizers::models::bpe::{BpeTrainer, BPE};
use tokenizers::models::TrainerWrapper;
use tokenizers::pre_tokenizers::byte_level::ByteLevel;

/// How text becomes token ids (`--tokenizer`).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub enum TokenizerChoice {
    Bytes,
    File(PathBuf),
    /// Train a byte-level BPE of this many tokens on the text.
    Bpe(usize),
}

impl std::str::FromStr for TokenizerChoice {
    type Err = String;

    fn from_str(text: &str) -> Result<TokenizerChoice, String> {
        if text == "bytes" {
            return Ok(TokenizerChoice::Bytes);
        }
        if let Some(n) = text.strip_prefix("bpe:") {
            return match n.parse::<usize>() {
                Ok(n) if (BYTES + 1..=1 << 20).contains(&n) => Ok(TokenizerChoice::Bpe(n)),
                _ => Err(format!(
                    "`{text}`: bpe:N takes a vocabulary size N above the {BYTES} byte tokens"
                )),
            };
        }
        if text.ends_with(".json") {
            return Ok(TokenizerChoice::File(PathBuf::from(text)));
        }
        Err(format!(
            "`{text}` is not a tokenizer: write bytes, bpe:N (a BPE trained on the text) or a \
             tokenizer.json file"
        ))
    }
}

/// The byte alphabet every byte-level tokenizer starts from.
const BYTES: usize = 256;

/// A Hugging Face `tokenizer.json`.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    path: String,
}

impl Tokenizer {
    pub fn load(path: &Path) -> Result<Tokenizer> {
        let name = path.display().to_string();
        let inner = tokenizers::Tokenizer::from_file(path).map_err(|e| {
            anyhow!("cannot load tokenizer {name}: {e} (expected a Hugging Face tokenizer.json)")
        })?;
        Ok(Tokenizer { inner, path: name })
    }

    /// A byte-level BPE of `vocab` tokens trained on `lines`.
    fn train(lines: &[&str], vocab: usize) -> Result<Tokenizer> {
        let mut inner = tokenizers::Tokenizer::new(BPE::default());
        inner.with_pre_tokenizer(Some(ByteLevel::new(false, true, true)));
        inner.with_decoder(Some(ByteLevel::default()));
        let mut trainer: TrainerWrapper = BpeTrainer::builder()
            .vocab_size(vocab)
            .min_frequency(2)
            .show_progress(false)
            .initial_alphabet(ByteLevel::alphabet().into_iter().collect())
            .build()
            .into();
        inner
            .train(&mut trainer, lines.iter())
            .map_err(|e| anyhow!("training a BPE of {vocab} tokens on the text: {e}"))?;
        Ok(Tokenizer {
            inner,
            path: format!("bpe:{vocab}"),
        })
    }

    fn save(&self, path: &Path) -> Result<()> {
        self.inner
            .save(path, false)
            .map_err(|e| anyhow!("cannot write {}: {e}", path.display()))
    }

    /// The tokenizer's vocabulary size (added tokens included).
    pub fn vocab(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<i64>> {
        let enc = self
            .inner
            .encode(text, false)
            .map_err(|e| anyhow!("{}: cannot encode the text: {e}", self.path))?;
        Ok(enc.get_ids().iter().map(|&i| i64::from(i)).collect())
    }

    /// `lines` encoded in parallel and concatenated.
    fn encode_lines(&self, lines: &[&str]) -> Result<Vec<i64>> {
        let encodings = self
            .inner
            .encode_batch(lines.to_vec(), false)
            .map_err(|e| anyhow!("{}: cannot encode the text: {e}", self.path))?;
        Ok(encodings
            .iter()
            .flat_map(|e| e.get_ids().iter().map(|&i| i64::from(i)))
            .collect())
    }

    pub fn decode(&self, ids: &[i64]) -> Result<String> {
        let ids: Vec<u32> = ids.iter().map(|&i| i as u32).collect();
        self.inner
            .decode(&ids, true)
            .map_err(|e| anyhow!("{}: cannot decode: {e}", self.path))
    }
}

/// Whether `source` names text: a `.txt` file or a directory.
pub fn is_text(source: &str) -> bool {
    let path = Path::new(source);
    path.extension().is_some_and(|e| e == "txt") || path.is_dir()
}

/// The rows `source` names: text read with `tokenizer` (trained as
/// `save_bpe/tokenizer.json` for `bpe:N`, or read from there when it
/// exists), or any other data source (`tokenizer` must then be `None`).
pub fn open(
    source: &str,
    opts: &DataOptions,
    tokenizer: Option<&TokenizerChoice>,
    save_bpe: Option<&Path>,
) -> Result<Rows> {
    if !is_text(source) {
        if tokenizer.is_some() {
            bail!("--tokenizer reads text data (.txt files or a directory of them); `{source}` is not");
        }
        return Ok(data::open(source, opts)?);
    }
    let text = read(Path::new(source))?;
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let choice = tokenizer.cloned().unwrap_or(TokenizerChoice::Bytes);
    let vocab_needed = |n: usize, what: &str| -> Result<()> {
        if n as u64 > opts.vocab {
            bail!(
                "{what} has {n} tokens, more than the model's vocabulary of {}; raise `vocab` in the \
                 spec or use a smaller tokenizer",
                opts.vocab
            );
        }
        Ok(())
    };
    let ids: Vec<i64> = match &choice {
        TokenizerChoice::Bytes => {
            vocab_needed(BYTES, "--tokenizer bytes")?;
            text.bytes().map(i64::from).collect()
        }
        TokenizerChoice::File(path) => {
            let tok = Tokenizer::load(path)?;
            vocab_needed(tok.vocab(), &format!("tokenizer {}", path.display()))?;
            tok.encode_lines(&lines)?
        }
        TokenizerChoice::Bpe(n) => {
            vocab_needed(*n, &format!("--tokenizer bpe:{n}"))?;
            let Some(dir) = save_bpe else {
                bail!(
                    "--tokenizer bpe:{n} trains a tokenizer, which only `mythos train` does; give \
                     the one it wrote: --tokenizer OUT/tokenizer.json"
                );
            };
            let saved = dir.join("tokenizer.json");
            let tok = if saved.exists() {
                Tokenizer::load(&saved)?
            } else {
                let tok = Tokenizer::train(&lines, *n)?;
                std::fs::create_dir_all(dir)
                    .with_context(|| format!("cannot create {}", dir.display()))?;
                tok.save(&saved)?;
                eprintln!(
                    "trained a BPE of {} tokens on {source}: {}",
                    tok.vocab(),
                    saved.display()
                );
                tok
            };
            tok.encode_lines(&lines)?
        }
    };
    Ok(data::from_stream(Path::new(source), &ids, opts)?)
}

/// The text of a `.txt` file, or of a directory's `.txt` files in name order.
fn read(path: &Path) -> Result<String> {
    let files: Vec<PathBuf> = if path.is_dir() {
        let mut files: Vec<PathBuf> = std::fs::read_dir(path)
            .with_context(|| format!("cannot read the directory {}", path.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "txt"))
            .collect();
        files.sort();
        if files.is_empty() {
            bail!("data `{}`: the directory has no .txt files", path.display());
        }
        files
    } else {
        vec![path.to_path_buf()]
    };
    let mut text = String::new();
    for f in &files {
        let bytes =
            std::fs::read(f).with_context(|| format!("data `{}`: cannot read it", f.display()))?;
        let part = String::from_utf8(bytes).map_err(|e| {
            let at = e.utf8_error().valid_up_to();
            anyhow!(
                "data `{}`: not UTF-8 text (byte {at} is not valid UTF-8)",
                f.display()
            )
        })?;
        text.push_str(&part);
    }
    Ok(text)
}
