//! Texts from the command line or from JSON lines (`{"text": …}`, other fields ignored).

use anyhow::{bail, Context, Result};
use std::io::{BufRead, Read};
use std::path::Path;

/// Reads `{"text": …}` lines from `path` (`-` = standard input). Blank lines are skipped; any
/// other line that is not such an object is an error naming its line number.
pub fn read_jsonl(path: &Path) -> Result<Vec<String>> {
    let reader: Box<dyn Read> = if path == Path::new("-") {
        Box::new(std::io::stdin())
    } else {
        Box::new(
            std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?,
        )
    };
    parse_jsonl(std::io::BufReader::new(reader), &path.display().to_string())
}

pub fn parse_jsonl(mut reader: impl BufRead, name: &str) -> Result<Vec<String>> {
    let mut texts = Vec::new();
    let mut line = Vec::new();
    let mut number = 0;
    loop {
        line.clear();
        if reader
            .read_until(b'\n', &mut line)
            .with_context(|| format!("cannot read {name}"))?
            == 0
        {
            break;
        }
        number += 1;
        let text = std::str::from_utf8(&line)
            .with_context(|| format!("{name}:{number}: not valid UTF-8"))?;
        if text.trim().is_empty() {
            continue;
        }
        let value: serde_json::Value = serde_json::from_str(text)
            .with_context(|| format!("{name}:{number}: not valid JSON"))?;
        match value.get("text") {
            Some(serde_json::Value::String(s)) => texts.push(s.clone()),
            Some(_) => bail!("{name}:{number}: \"text\" must be a string"),
            None => bail!("{name}:{number}: expected an object with a \"text\" field"),
        }
    }
    Ok(texts)
}

/// The texts of a `classify`/`embed` call: the arguments, or the lines of `--input`.
pub fn texts(args: &[String], input: Option<&Path>) -> Result<Vec<String>> {
    let texts = match input {
        Some(_) if !args.is_empty() => bail!("give texts as arguments or with --input, not both"),
        Some(path) => read_jsonl(path)?,
        None => args.to_vec(),
    };
    if texts.is_empty() {
        bail!("no input texts: pass TEXT arguments or --input FILE (JSON lines, `-` for stdin)");
    }
    Ok(texts)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn jsonl_lines_and_errors() {
        let ok = parse_jsonl(
            &b"{\"text\": \"a\", \"id\": 3}\n\n{\"text\": \"\"}\n"[..],
            "f",
        )
        .unwrap();
        assert_eq!(ok, vec!["a".to_string(), String::new()]);
        let err = parse_jsonl(&b"{\"text\": \"a\"}\n{oops\n"[..], "f").unwrap_err();
        assert!(
            format!("{err:#}").contains("f:2: not valid JSON"),
            "{err:#}"
        );
        let err = parse_jsonl(&b"{\"text\": 3}\n"[..], "f").unwrap_err();
        assert!(err.to_string().contains("must be a string"));
        let err = parse_jsonl(&b"[1]\n"[..], "f").unwrap_err();
        assert!(err.to_string().contains("\"text\" field"));
        let err = parse_jsonl(&b"{\"text\": \"\xff\"}\n"[..], "f").unwrap_err();
        assert!(err.to_string().contains("f:1: not valid UTF-8"));
    }
}
