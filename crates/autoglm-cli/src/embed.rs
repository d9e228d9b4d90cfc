//! `autoglm embed`: pooled, normalized vectors of texts.

use crate::model::{for_each_chunk, RunArgs};
use anyhow::Result;
use serde_json::json;
use std::io::Write;

pub fn run(a: RunArgs) -> Result<()> {
    for_each_chunk(&a, |runner, texts| {
        let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
        let vectors = runner.embed(&refs)?;
        let mut out = std::io::stdout().lock();
        for (text, v) in texts.iter().zip(vectors) {
            if a.json {
                writeln!(out, "{}", json!({"embedding": v}))?;
            } else {
                let head: Vec<String> = v.iter().take(4).map(|x| format!("{x:.4}")).collect();
                writeln!(
                    out,
                    "[{}, … ({} dims)]\t{}",
                    head.join(", "),
                    v.len(),
                    text.replace(['\n', '\t'], " ")
                )?;
            }
        }
        Ok(())
    })
}
