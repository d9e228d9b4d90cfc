//! `autoglm rank`: adapted source packages ranked for a target data set (MMD).

use crate::backbone::BackboneArgs;
use anyhow::Result;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct RankArgs {
    #[command(flatten)]
    pub backbone: BackboneArgs,
    /// Target data: JSON lines with "text" (and optionally "label").
    #[arg(long)]
    pub target: PathBuf,
    /// Candidate source packages made by `autoglm adapt`.
    #[arg(required = true)]
    pub sources: Vec<PathBuf>,
    /// Weight of the label-distribution distance beside MMD².
    #[arg(long, default_value_t = 0.1)]
    pub label_weight: f64,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    #[arg(long)]
    pub json: bool,
}

pub fn run(a: RankArgs) -> Result<()> {
    let target = autoglm_adapt::data::read_examples(&a.target, false)?;
    let mut embedder = a.backbone.open()?;
    let ranked = autoglm_adapt::rank(&mut embedder, &target, &a.sources, a.label_weight, a.seed)?;
    if a.json {
        for r in &ranked {
            println!("{}", serde_json::to_string(r)?);
        }
        return Ok(());
    }
    println!(
        "{:<4} {:>10} {:>10} {:>10}  {:<12} {:<24} package",
        "rank", "score", "mmd2", "label_dist", "task", "labels"
    );
    for (i, r) in ranked.iter().enumerate() {
        println!(
            "{:<4} {:>10.5} {:>10.5} {:>10}  {:<12} {:<24} {}",
            i + 1,
            r.score,
            r.mmd2,
            r.label_distance
                .map_or_else(|| "-".into(), |d| format!("{d:.4}")),
            r.task,
            r.labels.join(","),
            r.package
        );
    }
    Ok(())
}
