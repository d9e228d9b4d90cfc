//! **Our BERT tokenizer**: the pipeline a BERT-family `tokenizer.json` declares (the one every
//! package `autoglm export` writes carries), read from that file and run without the
//! `tokenizers` crate. The component has only this one: `tokenizers` and the two regular
//! expression engines its other pipelines need were ~1 MB of its code (BENCHMARKS.md, wave 24).
//! Natively, [`crate::TextEncoder`] uses it wherever the file is of this kind and `tokenizers`
//! for anything else.
//!
//! The steps and their order are those of `tokenizers` 0.22 for such a file, so the ids are the
//! same (tested against it on every Unicode scalar value, on the review corpus and on random
//! texts: `tests/wordpiece.rs`):
//! 1. **added tokens** (`[CLS]`, `[SEP]`, `[PAD]`, `[MASK]`, `[UNK]` and any other the file
//!    lists) are found in the raw text, leftmost and longest first, and become their ids;
//! 2. the text between them is **normalized** (`BertNormalizer`): control characters, NUL and
//!    U+FFFD dropped and whitespace made a space; CJK ideographs set apart by spaces; accents
//!    stripped (NFD, then the non-spacing marks dropped); lowercased character by character;
//! 3. **split** (`BertPreTokenizer`) at whitespace, each punctuation character a word of its own;
//! 4. each word becomes the longest vocabulary prefixes, continued with `##` (**WordPiece**), or
//!    `[UNK]` if one piece has no match or the word is over `max_input_chars_per_word`;
//! 5. the post-processor's **special tokens** around it (`TemplateProcessing`'s single-text
//!    template, or `BertProcessing`), the text's tokens truncated first so that all fit.
//!
//! The character classes are the ones `tokenizers` uses (the `unicode_categories` tables for
//! control, punctuation and non-spacing marks; `unicode-normalization-alignments` for NFD; Rust's
//! own whitespace and lowercase), so the two agree on every character by construction, not by
//! copy. Any other kind of file is [`Unsupported`], with what it has instead.

use serde::Deserialize;
use std::collections::HashMap;
use unicode_categories::UnicodeCategories;
use unicode_normalization_alignments::UnicodeNormalization;

/// Why a `tokenizer.json` is not of the kind [`WordPiece`] reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Unsupported(pub String);

impl std::fmt::Display for Unsupported {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// A BERT WordPiece tokenizer read from `tokenizer.json`.
#[derive(Debug, Clone)]
pub struct WordPiece {
    vocab: HashMap<String, u32>,
    /// The longest entry's length in bytes.
    longest: usize,
    unk: u32,
    prefix: String,
    max_word_chars: usize,
    normalizer: Option<Normalizer>,
    /// Added tokens as `(content, id)`, longest first (so that the first match at a position is
    /// the longest one), and which bytes they start with.
    added: Vec<(String, u32)>,
    starts: [bool; 256],
    /// Special tokens before and after the text, with their token types.
    before: Vec<(u32, u32)>,
    after: Vec<(u32, u32)>,
    /// The text's token type.
    text_type: u32,
}

/// `BertNormalizer`'s settings.
#[derive(Debug, Clone, Copy)]
struct Normalizer {
    clean_text: bool,
    handle_chinese_chars: bool,
    strip_accents: Option<bool>,
    lowercase: bool,
}

#[derive(Deserialize)]
struct File {
    #[serde(default)]
    added_tokens: Vec<AddedToken>,
    normalizer: Option<Part>,
    pre_tokenizer: Option<Part>,
    post_processor: Option<Part>,
    model: Model,
}

/// A step of the pipeline: its `type`, and the fields of the types read here (typed directly,
/// without an intermediate JSON tree: serde's buffering of one was 18 KB of the component).
#[derive(Deserialize)]
struct Part {
    #[serde(rename = "type")]
    kind: String,
    // BertNormalizer
    clean_text: Option<bool>,
    handle_chinese_chars: Option<bool>,
    strip_accents: Option<bool>,
    lowercase: Option<bool>,
    // TemplateProcessing
    single: Option<Vec<Piece>>,
    special_tokens: Option<HashMap<String, SpecialTokens>>,
    // BertProcessing: `[token, id]` pairs
    sep: Option<(String, u32)>,
    cls: Option<(String, u32)>,
}

#[derive(Deserialize)]
struct AddedToken {
    id: u32,
    content: String,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default = "yes")]
    normalized: bool,
}

fn yes() -> bool {
    true
}

#[derive(Deserialize)]
struct Model {
    #[serde(rename = "type")]
    kind: Option<String>,
    unk_token: Option<String>,
    continuing_subword_prefix: Option<String>,
    max_input_chars_per_word: Option<usize>,
    vocab: Option<HashMap<String, u32>>,
}

#[derive(Deserialize)]
enum Piece {
    SpecialToken { id: String, type_id: u32 },
    Sequence { id: String, type_id: u32 },
}

#[derive(Deserialize)]
struct SpecialTokens {
    ids: Vec<u32>,
}

fn unsupported(what: impl Into<String>) -> Unsupported {
    Unsupported(what.into())
}

impl WordPiece {
    /// Reads `tokenizer.json`; [`Unsupported`] if it is not a BERT WordPiece pipeline (or not a
    /// tokenizer file at all).
    pub fn from_bytes(json: &[u8]) -> Result<Self, Unsupported> {
        let file: File = serde_json::from_slice(json)
            .map_err(|e| unsupported(format!("not read as a BERT WordPiece tokenizer: {e}")))?;
        let model = file.model;
        if model.kind.as_deref() != Some("WordPiece") {
            return Err(unsupported(format!(
                "its model is {}, not WordPiece",
                model.kind.as_deref().unwrap_or("untyped")
            )));
        }
        let vocab = model
            .vocab
            .ok_or_else(|| unsupported("its WordPiece model has no vocabulary"))?;
        let unk_token = model.unk_token.unwrap_or_else(|| "[UNK]".into());
        let unk = *vocab.get(&unk_token).ok_or_else(|| {
            unsupported(format!(
                "its unknown token {unk_token:?} is not in its vocabulary"
            ))
        })?;
        let normalizer = match file.normalizer {
            None => None,
            Some(n) if n.kind == "BertNormalizer" => match n {
                Part {
                    clean_text: Some(clean_text),
                    handle_chinese_chars: Some(handle_chinese_chars),
                    strip_accents,
                    lowercase: Some(lowercase),
                    ..
                } => Some(Normalizer {
                    clean_text,
                    handle_chinese_chars,
                    strip_accents,
                    lowercase,
                }),
                _ => return Err(unsupported("its BertNormalizer lacks a setting")),
            },
            Some(n) => return Err(unsupported(format!("its normalizer is {}", n.kind))),
        };
        match file.pre_tokenizer {
            Some(p) if p.kind == "BertPreTokenizer" => {}
            Some(p) => return Err(unsupported(format!("its pre-tokenizer is {}", p.kind))),
            None => return Err(unsupported("it has no pre-tokenizer")),
        }
        let mut added = Vec::with_capacity(file.added_tokens.len());
        for t in file.added_tokens {
            if t.single_word || t.lstrip || t.rstrip || t.normalized || t.content.is_empty() {
                return Err(unsupported(format!(
                    "its added token {:?} is matched with options (single word, stripping, \
                     after normalization) or is empty",
                    t.content
                )));
            }
            // `tokenizers` gives an added token the vocabulary's id for its text; a file that
            // says otherwise (or adds tokens beyond the vocabulary) is left to it.
            if vocab.get(&t.content) != Some(&t.id) {
                return Err(unsupported(format!(
                    "its added token {:?} (id {}) is not that entry of its vocabulary",
                    t.content, t.id
                )));
            }
            if !added.iter().any(|(c, _)| *c == t.content) {
                added.push((t.content, t.id));
            }
        }
        added.sort_by_key(|(c, _)| std::cmp::Reverse(c.len()));
        let mut starts = [false; 256];
        for &b in added.iter().filter_map(|(c, _)| c.as_bytes().first()) {
            starts[usize::from(b)] = true;
        }
        let (mut before, mut after, mut text_type) = (Vec::new(), Vec::new(), 0);
        match file.post_processor {
            None => {}
            Some(p) if p.kind == "TemplateProcessing" => {
                let (Some(single), Some(special_tokens)) = (p.single, p.special_tokens) else {
                    return Err(unsupported("its TemplateProcessing lacks a template"));
                };
                let mut seen = false;
                for piece in single {
                    match piece {
                        Piece::Sequence { id, type_id } if id == "A" && !seen => {
                            seen = true;
                            text_type = type_id;
                        }
                        Piece::Sequence { id, .. } => {
                            return Err(unsupported(format!(
                                "its single-text template has sequence {id:?} where one \"A\" is expected"
                            )))
                        }
                        Piece::SpecialToken { id, type_id } => {
                            let ids = &special_tokens
                                .get(&id)
                                .ok_or_else(|| {
                                    unsupported(format!("its template's special token {id:?} is not defined"))
                                })?
                                .ids;
                            let side = if seen { &mut after } else { &mut before };
                            side.extend(ids.iter().map(|&i| (i, type_id)));
                        }
                    }
                }
                if !seen {
                    return Err(unsupported("its single-text template has no sequence"));
                }
            }
            Some(p) if p.kind == "BertProcessing" => {
                let (Some(cls), Some(sep)) = (p.cls, p.sep) else {
                    return Err(unsupported("its BertProcessing lacks a token"));
                };
                before.push((cls.1, 0));
                after.push((sep.1, 0));
            }
            Some(p) => return Err(unsupported(format!("its post-processor is {}", p.kind))),
        }
        Ok(WordPiece {
            longest: vocab.keys().map(String::len).max().unwrap_or(0),
            vocab,
            unk,
            prefix: model
                .continuing_subword_prefix
                .unwrap_or_else(|| "##".into()),
            max_word_chars: model.max_input_chars_per_word.unwrap_or(100),
            normalizer,
            added,
            starts,
            before,
            after,
            text_type,
        })
    }

    /// The id of a token: an added token's, else the vocabulary's.
    pub fn token_to_id(&self, token: &str) -> Option<u32> {
        self.added
            .iter()
            .find(|(c, _)| c == token)
            .map(|&(_, id)| id)
            .or_else(|| self.vocab.get(token).copied())
    }

    /// How many special tokens the post-processor puts around a text.
    pub fn special_count(&self) -> usize {
        self.before.len() + self.after.len()
    }

    /// `(ids, token types)` of `text` with its special tokens, the text's own tokens cut so
    /// that at most `max_length` ids come out. `None` if the special tokens alone are more.
    pub fn encode(&self, text: &str, max_length: usize) -> Option<(Vec<u32>, Vec<u32>)> {
        let room = max_length.checked_sub(self.special_count())?;
        let mut ids: Vec<u32> = self.before.iter().map(|&(id, _)| id).collect();
        let mut types: Vec<u32> = self.before.iter().map(|&(_, t)| t).collect();
        let start = ids.len();
        let mut words = Words::default();
        let mut scratch = String::new();
        let mut rest = text;
        while !rest.is_empty() && ids.len() - start < room {
            let (plain, token) = self.next_added(rest);
            self.tokenize_plain(
                &rest[..plain],
                &mut scratch,
                &mut words,
                &mut ids,
                start + room,
            );
            match token {
                Some((len, id)) => {
                    if ids.len() - start < room {
                        ids.push(id);
                    }
                    rest = &rest[plain + len..];
                }
                None => rest = "",
            }
        }
        types.resize(ids.len(), self.text_type);
        for &(id, t) in &self.after {
            ids.push(id);
            types.push(t);
        }
        Some((ids, types))
    }

    /// The byte length of `text`'s part before its first added token, and that token's byte
    /// length and id (the longest of those that start at the leftmost place one does).
    fn next_added(&self, text: &str) -> (usize, Option<(usize, u32)>) {
        let bytes = text.as_bytes();
        // A token's first byte starts a character, so a match found this way starts at one.
        for (at, &b) in bytes.iter().enumerate() {
            if !self.starts[usize::from(b)] {
                continue;
            }
            let here = &bytes[at..];
            if let Some((c, id)) = self
                .added
                .iter()
                .find(|(c, _)| here.starts_with(c.as_bytes()))
            {
                return (at, Some((c.len(), *id)));
            }
        }
        (text.len(), None)
    }

    /// Normalizes, splits and tokenizes a text without added tokens, appending its ids to `ids`
    /// until it holds `limit`.
    fn tokenize_plain(
        &self,
        text: &str,
        scratch: &mut String,
        words: &mut Words,
        ids: &mut Vec<u32>,
        limit: usize,
    ) {
        if text.is_empty() || ids.len() >= limit {
            return;
        }
        let normalized = match &self.normalizer {
            Some(n) => n.normalize(text, scratch),
            None => text,
        };
        for word in normalized.split(char::is_whitespace) {
            let mut at = 0;
            for (i, c) in word.char_indices() {
                if is_bert_punctuation(c) {
                    self.word(&word[at..i], words, ids, limit);
                    self.word(&word[i..i + c.len_utf8()], words, ids, limit);
                    at = i + c.len_utf8();
                }
            }
            self.word(&word[at..], words, ids, limit);
        }
    }

    /// WordPiece on one word: its longest vocabulary prefixes, then `##` + the longest prefixes
    /// of what is left; `[UNK]` for the whole word if a piece has none or it is too long.
    fn word(&self, word: &str, words: &mut Words, ids: &mut Vec<u32>, limit: usize) {
        if word.is_empty() || ids.len() >= limit {
            return;
        }
        if word.chars().count() > self.max_word_chars {
            ids.push(self.unk);
            return;
        }
        let pieces = &mut words.pieces;
        pieces.clear();
        let key = &mut words.key;
        let mut start = 0;
        while start < word.len() {
            // No entry is longer than the longest key, so longer candidates are not looked up:
            // the same pieces, and a word costs its length times that length, not its length
            // cubed (a file may allow words of any length).
            let mut end = word.len().min(start + self.longest);
            while !word.is_char_boundary(end) {
                end -= 1;
            }
            let found = loop {
                if end == start {
                    break None;
                }
                key.clear();
                if start > 0 {
                    key.push_str(&self.prefix);
                }
                key.push_str(&word[start..end]);
                if let Some(&id) = self.vocab.get(key.as_str()) {
                    break Some(id);
                }
                // One character shorter.
                match word[start..end].char_indices().next_back() {
                    Some((i, _)) => end = start + i,
                    None => break None,
                }
            };
            match found {
                Some(id) => {
                    pieces.push(id);
                    start = end;
                }
                None => {
                    ids.push(self.unk);
                    return;
                }
            }
        }
        let take = pieces.len().min(limit - ids.len());
        ids.extend_from_slice(&pieces[..take]);
    }
}

/// Buffers reused from word to word of one text.
#[derive(Default)]
struct Words {
    key: String,
    pieces: Vec<u32>,
}

impl Normalizer {
    /// `BertNormalizer` on `text`, into `out`, which it returns.
    fn normalize<'a>(&self, text: &str, out: &'a mut String) -> &'a str {
        out.clear();
        for c in text.chars() {
            if self.clean_text {
                if c == '\0' || c == '\u{fffd}' || is_control(c) {
                    continue;
                }
                if c.is_whitespace() {
                    out.push(' ');
                    continue;
                }
            }
            if self.handle_chinese_chars && is_chinese_char(c) {
                out.push(' ');
                out.push(c);
                out.push(' ');
            } else {
                out.push(c);
            }
        }
        // ASCII has no decompositions and no marks: NFD leaves it as it is.
        if self.strip_accents.unwrap_or(self.lowercase) && !out.is_ascii() {
            let stripped: String = out
                .nfd()
                .map(|(c, _)| c)
                .filter(|c| !c.is_mark_nonspacing())
                .collect();
            *out = stripped;
        }
        if self.lowercase && !out.is_ascii() {
            // Character by character (no final-sigma rule), as `tokenizers` does.
            let lower: String = out.chars().flat_map(char::to_lowercase).collect();
            *out = lower;
        } else if self.lowercase {
            out.make_ascii_lowercase();
        }
        out
    }
}

/// (For ASCII the tables' answer without their searches: its only "other" characters are the
/// controls, its punctuation and symbols are what `is_ascii_punctuation` names.)
fn is_control(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_control() && !matches!(c, '\t' | '\n' | '\r');
    }
    c.is_other()
}

fn is_chinese_char(c: char) -> bool {
    matches!(
        c as u32,
        0x4E00..=0x9FFF
            | 0x3400..=0x4DBF
            | 0x20000..=0x2A6DF
            | 0x2A700..=0x2B73F
            | 0x2B740..=0x2B81F
            | 0x2B920..=0x2CEAF
            | 0xF900..=0xFAFF
            | 0x2F800..=0x2FA1F
    )
}

fn is_bert_punctuation(c: char) -> bool {
    if c.is_ascii() {
        return c.is_ascii_punctuation();
    }
    c.is_punctuation()
}
