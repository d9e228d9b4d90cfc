//! `autoglm inspect`: a package's manifest, digests verified, file sizes and graph op counts.

use anyhow::{Context, Result};
use autoglm_package::Package;
use clap::Args;
use serde_json::json;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct InspectArgs {
    /// Package directory or `.tar`.
    package: PathBuf,
    #[arg(long)]
    json: bool,
    /// Check the signature against these minisign public keys (as for `classify --trust`).
    #[arg(
        long = "trust",
        value_name = "PUBKEY_FILE",
        env = "AUTOGLM_TRUST",
        value_delimiter = ','
    )]
    trust: Vec<PathBuf>,
}

/// What `inspect` says of the signature: checked against `--trust` keys when given (a bad or
/// untrusted signature is an error), else what is there and that nothing was verified.
fn signature_line(package: &Package, trust: &[PathBuf]) -> Result<String> {
    let keys = autoglm_package::TrustedKeys::from_files(trust)?;
    if let Some(signer) = package.verify(&keys)? {
        return Ok(format!(
            "valid, by trusted key {} ({})",
            signer.key_id, signer.trusted_comment
        ));
    }
    Ok(match package.signature() {
        Some(_) => "present, not checked: no trusted key (--trust); digests only".into(),
        None => "none; no trusted key (--trust) configured: digests only".into(),
    })
}

pub fn run(a: InspectArgs) -> Result<()> {
    let package = Package::open(&a.package)
        .with_context(|| format!("cannot load package {}", a.package.display()))?;
    let m = package.manifest();
    let ops = autoglm_export::onnx::op_counts(package.file(&m.graph.file)?)
        .context("the graph is not a valid ONNX model")?;
    if a.json {
        let files: serde_json::Map<String, serde_json::Value> = m
            .files
            .iter()
            .map(|(k, v)| {
                (
                    k.clone(),
                    json!({"size": v.size, "sha256": v.sha256, "verified": true}),
                )
            })
            .collect();
        let out = json!({
            "manifest": serde_json::to_value(m)?,
            "files": files,
            "ops": ops,
            "signature": signature_line(&package, &a.trust)?,
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!("package     {}", a.package.display());
    println!("kind        {:?}", m.kind);
    if !m.labels.is_empty() {
        println!("labels      {}", m.labels.join(", "));
    }
    println!("max length  {} tokens", m.max_length);
    println!(
        "pooling     {:?}{}",
        m.pooling,
        if m.normalize { " + L2 normalize" } else { "" }
    );
    println!("attention   {}", m.attention);
    println!("quantized   {}", m.quantization);
    println!(
        "base        {} (weights sha256 {})",
        m.provenance.base_model, m.provenance.base_weights_sha256
    );
    if let Some(adapter) = &m.provenance.adapter {
        println!(
            "adapter     {adapter} (weights sha256 {})",
            m.provenance
                .adapter_weights_sha256
                .as_deref()
                .unwrap_or("?")
        );
    }
    println!("exporter    {}", m.provenance.exporter);
    println!("signature   {}", signature_line(&package, &a.trust)?);
    println!("files (sha256 verified):");
    for (name, entry) in &m.files {
        println!("  {name:<16} {:>12} bytes  {}", entry.size, entry.sha256);
    }
    let total: usize = ops.values().sum();
    println!("graph ops ({total} nodes, opset {}):", m.graph.opset);
    for (op, n) in &ops {
        println!("  {op:<20} {n}");
    }
    Ok(())
}
