//! Tokenization with the package's own `tokenizer.json`, truncated to the manifest's limit.

use crate::error::{Result, RuntimeError};
use tokenizers::{Tokenizer, TruncationParams};

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

impl TextEncoder {
    /// `max_length` must leave room for `[CLS]` and `[SEP]` (at least 2, as a valid manifest
    /// says): below that the tokenizer would return more ids than the limit.
    pub fn from_bytes(json: &[u8], max_length: usize) -> Result<Self> {
        if max_length < 2 {
            return Err(RuntimeError::Tokenizer(format!(
                "max_length {max_length} leaves no room for [CLS] and [SEP]"
            )));
        }
        let mut tokenizer = Tokenizer::from_bytes(json)
            .map_err(|e| RuntimeError::Tokenizer(format!("cannot load tokenizer.json: {e}")))?;
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length,
                ..Default::default()
            }))
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        tokenizer.with_padding(None);
        Ok(TextEncoder {
            tokenizer,
            max_length,
        })
    }

    /// The id padding positions get. They are masked out, so any id in the vocabulary works;
    /// `[PAD]` keeps batches readable.
    pub fn pad_id(&self) -> i64 {
        self.tokenizer.token_to_id("[PAD]").unwrap_or(0) as i64
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// Tokenizes one text (empty text gives just the special tokens, as in transformers).
    pub fn encode(&self, text: &str) -> Result<Encoded> {
        let enc = self
            .tokenizer
            .encode(text, true)
            .map_err(|e| RuntimeError::Tokenizer(e.to_string()))?;
        // Truncation counts the special tokens the post-processor adds; a tokenizer.json whose
        // post-processor adds more than it declares must not get past the limit (the graph's
        // position table is only `max_length` long).
        if enc.get_ids().len() > self.max_length {
            return Err(RuntimeError::Tokenizer(format!(
                "the tokenizer gave {} ids, over max_length {}",
                enc.get_ids().len(),
                self.max_length
            )));
        }
        Ok(Encoded {
            ids: enc.get_ids().iter().map(|&i| i as i64).collect(),
            type_ids: enc.get_type_ids().iter().map(|&i| i as i64).collect(),
        })
    }

    pub fn encode_all(&self, texts: &[&str]) -> Result<Vec<Encoded>> {
        texts.iter().map(|t| self.encode(t)).collect()
    }
}
