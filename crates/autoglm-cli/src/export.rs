//! `autoglm export`: a Hugging Face base model (+ a PEFT LoRA adapter) into a model package.

use anyhow::{Context, Result};
use autoglm_package::{Attention, Quantization};
use clap::Args;
use std::path::PathBuf;
use std::time::Instant;

#[derive(Args, Debug)]
pub struct ExportArgs {
    /// Base model directory (config.json, model.safetensors, tokenizer.json).
    #[arg(long)]
    base: PathBuf,
    /// PEFT LoRA adapter directory (adapter_config.json, adapter_model.safetensors): makes a
    /// classification package; without it the package embeds.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Output package: a directory, or a `.tar` file.
    #[arg(long)]
    out: PathBuf,
    /// Token limit (default: the model's sentence-transformers max_seq_length, else its positions).
    #[arg(long)]
    max_length: Option<usize>,
    /// Weight quantization: `none` or `int8`.
    #[arg(long, default_value = "none", value_parser = str::parse::<Quantization>)]
    quantize: Quantization,
    /// Attention pattern: `dense` or `window:W,global:G`.
    #[arg(long, default_value = "dense", value_parser = str::parse::<Attention>)]
    attention: Attention,
    /// Print the manifest as JSON.
    #[arg(long)]
    json: bool,
}

pub fn run(a: ExportArgs) -> Result<()> {
    let mut options = autoglm_export::ExportOptions::new(&a.base);
    options.adapter = a.adapter;
    options.max_length = a.max_length;
    options.quantization = a.quantize;
    options.attention = a.attention;
    let start = Instant::now();
    // Checks --out before the export (it never replaces anything but a package, nor touches
    // the inputs), then writes atomically.
    let package = autoglm_export::export_to(&options, &a.out).context("export failed")?;
    if a.json {
        println!(
            "{}",
            String::from_utf8_lossy(&package.manifest().to_json()).trim_end()
        );
    } else {
        let m = package.manifest();
        let bytes: usize = package.files().map(|(_, b)| b.len()).sum();
        eprintln!(
            "exported {:?} package to {} ({:.1} MB, max {} tokens, labels {:?}) in {:.1}s",
            m.kind,
            a.out.display(),
            bytes as f64 / 1e6,
            m.max_length,
            m.labels,
            start.elapsed().as_secs_f64()
        );
    }
    Ok(())
}
