//! Tokenization with the package's own `tokenizer.json`, truncated to the manifest's limit.
//!
//! A BERT WordPiece file (every package `autoglm export` writes) is read by our own tokenizer
//! ([`crate::wordpiece`]); natively, any other kind goes to the `tokenizers` crate. The
//! component has only ours and refuses other files with why.

use crate::error::{Result, RuntimeError};
use crate::wordpiece::WordPiece;

/// One tokenized text: ids and token types, special tokens included; the mask is all ones.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Encoded {
    pub ids: Vec<i64>,
    pub type_ids: Vec<i64>,
}

impl Encoded {
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }
}

/// The package's tokenizer, configured to truncate at `max_length` and never pad (batches are
/// padded by the runtime to their longest member).
#[derive(Debug, Clone)]
pub struct TextEncoder {
    tokenizer: Tokenizer,
    max_length: usize,
}

#[derive(Debug, Clone)]
enum Tokenizer {
    Ours(Box<WordPiece>),
    #[cfg(not(target_family = "wasm"))]
    Hf(Box<tokenizers::Tokenizer>),
}

impl TextEncoder {
    /// `max_length` must leave room for `[CLS]` and `[SEP]` (at least 2, as a valid manifest
    /// says): below that the tokenizer would return more ids than the limit.
    pub fn from_bytes(json: &[u8], max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(RuntimeError::Tokenizer(format!(
                "max_length {max_length} leaves no room for [CLS] and [SEP]"
            )));
        }
        let tokenizer = match WordPiece::from_bytes(json) {
            Ok(ours) if ours.special_count() <= max_length => Tokenizer::Ours(Box::new(ours)),
            Ok(ours) => {
                return Err(RuntimeError::Tokenizer(format!(
                    "max_length {max_length} leaves no room for the {} special tokens",
                    ours.special_count()
                )))
            }
            #[cfg(not(target_family = "wasm"))]
            Err(_) => Tokenizer::Hf(Box::new(hf(json, max_length)?)),
            #[cfg(target_family = "wasm")]
            Err(why) => {
                return Err(RuntimeError::Tokenizer(format!(
                    "this build reads BERT WordPiece tokenizers only, and this tokenizer.json is \
                     not one: {why}"
                )))
            }
        };
        Ok(TextEncoder {
            tokenizer,
            max_length,
        })
    }

    /// The `tokenizers` crate's reading of the same file, where it reads it (native builds).
    #[cfg(not(target_family = "wasm"))]
    pub fn with_tokenizers_crate(json: &[u8], max_length: usize) -> Result<Self> {
        Ok(TextEncoder {
            tokenizer: Tokenizer::Hf(Box::new(hf(json, max_length)?)),
            max_length,
        })
    }

    /// Whether our own tokenizer reads this package's file.
    pub fn is_ours(&self) -> bool {
        matches!(self.tokenizer, Tokenizer::Ours(_))
    }

    /// The id padding positions get. They are masked out, so any id in the vocabulary works;
    /// `[PAD]` keeps batches readable.
    pub fn pad_id(&self) -> i64 {
        let id = match &self.tokenizer {
            Tokenizer::Ours(t) => t.token_to_id("[PAD]"),
            #[cfg(not(target_family = "wasm"))]
            Tokenizer::Hf(t) => t.token_to_id("[PAD]"),
        };
        id.unwrap_or(0) as i64
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes one text (empty text gives just the special tokens, as in transformers).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let (ids, types) = match &self.tokenizer {
            Tokenizer::Ours(t) => t.encode(text, self.max_length).ok_or_else(|| {
                RuntimeError::Tokenizer(format!(
                    "max_length {} leaves no room for the special tokens",
                    self.max_length
                ))
            })?,
            #[cfg(not(target_family = "wasm"))]
            Tokenizer::Hf(t) => {
                let enc = t
                    .encode(text, true)
                    .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
                (enc.get_ids().to_vec(), enc.get_type_ids().to_vec())
            }
        };
        // Truncation counts the special tokens the post-processor adds; a tokenizer.json whose
        // post-processor adds more than it declares must not get past the limit (the graph's
        // position table is only `max_length` long).
        if ids.len() > self.max_length {
            return Err(RuntimeError::Tokenizer(format!(
                "the tokenizer gave {} ids, over max_length {}",
                ids.len(),
                self.max_length
            )));
        }
        Ok(Encoded {
            ids: ids.into_iter().map(i64::from).collect(),
            type_ids: types.into_iter().map(i64::from).collect(),
        })
    }

    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}

/// `tokenizers`' reading of `json`, truncating at `max_length`, never padding.
#[cfg(not(target_family = "wasm"))]
fn hf(json: &[u8], max_length: usize) -> Result<tokenizers::Tokenizer> {
    let mut tokenizer = tokenizers::Tokenizer::from_bytes(json)
        .map_err(|e| RuntimeError::Tokenizer(format!("cannot load tokenizer.json: {e}")))?;
    tokenizer
        .with_truncation(Some(tokenizers::TruncationParams {
            max_length,
            ..Default::default()
        }))
        .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
    tokenizer.with_padding(None);
    Ok(tokenizer)
}
