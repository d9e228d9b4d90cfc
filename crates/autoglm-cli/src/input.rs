//! Texts from the command line or from JSON lines (`{"text": …}`, other fields ignored).
//!
//! `--input` is read as a stream, in chunks of at most [`CHUNK`] texts: each chunk is run and
//! printed before the next is read, so the first results appear while the input is still being
//! written (a pipe, a socket) and memory stays bounded whatever the input's length.

use anyhow::{anyhow, bail, Context, Result};
use std::io::{BufRead, BufReader, Read};
use std::path::Path;

/// Most texts run (and held) at once from `--input`.
pub const CHUNK: usize = 32;

/// Longest input line: far above any text the tokenizer keeps (at most `max_length` tokens);
/// a longer line is an error rather than an unbounded buffer.
pub const MAX_LINE_BYTES: usize = 8 << 20;

/// `{"text": …}` lines read from a stream. Blank lines are skipped; any other line that is not
/// such an object is an error naming its line number.
pub struct JsonLines {
    reader: BufReader<Box<dyn Read>>,
    name: String,
    number: usize,
    /// An error met after some texts of a chunk: those are returned first, the error next.
    pending: Option<anyhow::Error>,
    done: bool,
}

impl JsonLines {
    pub fn new(reader: Box<dyn Read>, name: &str) -> Self {
        JsonLines {
            reader: BufReader::new(reader),
            name: name.to_string(),
            number: 0,
            pending: None,
            done: false,
        }
    }

    /// Opens `path` (`-` = standard input).
    pub fn open(path: &Path) -> Result<Self> {
        let reader: Box<dyn Read> = if path == Path::new("-") {
            Box::new(std::io::stdin())
        } else {
            Box::new(
                std::fs::File::open(path)
                    .with_context(|| format!("cannot open {}", path.display()))?,
            )
        };
        Ok(Self::new(reader, &path.display().to_string()))
    }

    /// The next texts: at most `max`, and fewer as soon as no more input is buffered (reading
    /// on would wait for the writer: what has arrived is answered first). Empty at the end.
    pub fn next_chunk(&mut self, max: usize) -> Result<Vec<String>> {
        if let Some(e) = self.pending.take() {
            self.done = true;
            return Err(e);
        }
        let mut texts = Vec::new();
        while !self.done && texts.len() < max.max(1) {
            match self.next_line() {
                Ok(Some(text)) => texts.push(text),
                Ok(None) => self.done = true,
                Err(e) if texts.is_empty() => {
                    self.done = true;
                    return Err(e);
                }
                Err(e) => {
                    self.pending = Some(e);
                    break;
                }
            }
            if !texts.is_empty() && self.reader.buffer().is_empty() {
                break;
            }
        }
        Ok(texts)
    }

    /// The next line's text, skipping blank lines; `None` at the end.
    fn next_line(&mut self) -> Result<Option<String>> {
        let name = &self.name;
        let mut line = Vec::new();
        loop {
            line.clear();
            let limit = MAX_LINE_BYTES as u64 + 1;
            if (&mut self.reader)
                .take(limit)
                .read_until(b'\n', &mut line)
                .with_context(|| format!("cannot read {name}"))?
                == 0
            {
                return Ok(None);
            }
            self.number += 1;
            let number = self.number;
            if line.len() > MAX_LINE_BYTES {
                bail!("{name}:{number}: line longer than {MAX_LINE_BYTES} bytes");
            }
            let text = std::str::from_utf8(&line)
                .with_context(|| format!("{name}:{number}: not valid UTF-8"))?;
            if text.trim().is_empty() {
                continue;
            }
            let value: serde_json::Value = serde_json::from_str(text)
                .with_context(|| format!("{name}:{number}: not valid JSON"))?;
            return match value.get("text") {
                Some(serde_json::Value::String(s)) => Ok(Some(s.clone())),
                Some(_) => Err(anyhow!("{name}:{number}: \"text\" must be a string")),
                None => Err(anyhow!(
                    "{name}:{number}: expected an object with a \"text\" field"
                )),
            };
        }
    }
}

/// The texts of a `classify`/`embed` call: the arguments (one chunk), or the lines of `--input`
/// in chunks.
pub enum Texts {
    Args(Option<Vec<String>>),
    Lines(JsonLines),
}

impl Texts {
    /// Refuses texts given both ways, or none as arguments; opens `--input`.
    pub fn new(args: &[String], input: Option<&Path>) -> Result<Self> {
        match input {
            Some(_) if !args.is_empty() => {
                bail!("give texts as arguments or with --input, not both")
            }
            Some(path) => Ok(Texts::Lines(JsonLines::open(path)?)),
            None if args.is_empty() => bail!(NO_TEXTS),
            None => Ok(Texts::Args(Some(args.to_vec()))),
        }
    }

    /// The next chunk of texts; empty at the end.
    pub fn next_chunk(&mut self) -> Result<Vec<String>> {
        match self {
            Texts::Args(args) => Ok(args.take().unwrap_or_default()),
            Texts::Lines(lines) => lines.next_chunk(CHUNK),
        }
    }
}

pub const NO_TEXTS: &str =
    "no input texts: pass TEXT arguments or --input FILE (JSON lines, `-` for stdin)";

#[cfg(test)]
mod tests {
    use super::*;

    fn all(input: &'static [u8]) -> Result<Vec<String>> {
        let mut lines = JsonLines::new(Box::new(input), "f");
        let mut texts = Vec::new();
        loop {
            let chunk = lines.next_chunk(CHUNK)?;
            if chunk.is_empty() {
                return Ok(texts);
            }
            texts.extend(chunk);
        }
    }

    #[test]
    fn jsonl_lines_and_errors() {
        let ok = all(b"{\"text\": \"a\", \"id\": 3}\n\n{\"text\": \"\"}\n").unwrap();
        assert_eq!(ok, vec!["a".to_string(), String::new()]);
        let err = all(b"{\"text\": \"a\"}\n{oops\n").unwrap_err();
        assert!(
            format!("{err:#}").contains("f:2: not valid JSON"),
            "{err:#}"
        );
        let err = all(b"{\"text\": 3}\n").unwrap_err();
        assert!(err.to_string().contains("must be a string"));
        let err = all(b"[1]\n").unwrap_err();
        assert!(err.to_string().contains("\"text\" field"));
        let err = all(b"{\"text\": \"\xff\"}\n").unwrap_err();
        assert!(err.to_string().contains("f:1: not valid UTF-8"));
    }

    /// Chunks hold at most CHUNK texts; texts before a bad line come first, the error after.
    #[test]
    fn chunks_are_bounded_and_errors_come_after_the_good_lines() {
        let input: &'static [u8] = "{\"text\": \"t\"}\n".repeat(70).leak().as_bytes();
        let mut lines = JsonLines::new(Box::new(input), "f");
        let sizes: Vec<usize> = std::iter::from_fn(|| {
            let c = lines.next_chunk(CHUNK).unwrap();
            (!c.is_empty()).then_some(c.len())
        })
        .collect();
        assert_eq!(sizes.iter().sum::<usize>(), 70);
        assert!(sizes.iter().all(|&n| n <= CHUNK), "{sizes:?}");
        let mut lines = JsonLines::new(Box::new(&b"{\"text\": \"a\"}\nbad\n"[..]), "f");
        assert_eq!(lines.next_chunk(CHUNK).unwrap(), ["a"]);
        let err = lines.next_chunk(CHUNK).unwrap_err();
        assert!(format!("{err:#}").contains("f:2: not valid JSON"));
        assert!(lines.next_chunk(CHUNK).unwrap().is_empty());
    }

    #[test]
    fn an_endless_line_is_refused_not_buffered() {
        let endless = std::io::repeat(b'x').take(MAX_LINE_BYTES as u64 + 100);
        let mut lines = JsonLines::new(Box::new(endless), "f");
        let err = lines.next_chunk(CHUNK).unwrap_err();
        assert!(err.to_string().contains("f:1: line longer than"), "{err}");
    }
}
