//! `--model`, `--threads`, the backend flags, `--cache` and `--quiet`: the frozen backbone of
//! `adapt` and `rank`, loaded with the same load options as `classify`, and their progress bar.

use crate::model::BackendArgs;
use anyhow::{anyhow, Context, Result};
use autoglm_adapt::{AdaptError, Embedder};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct BackboneArgs {
    /// The embedding package whose backbone stays frozen.
    #[arg(long, env = "AUTOGLM_MODEL")]
    pub model: PathBuf,
    /// Threads for the backbone's matrix products.
    #[arg(long, default_value_t = 1, env = "AUTOGLM_THREADS")]
    pub threads: usize,
    #[command(flatten)]
    pub backend: BackendArgs,
    /// Keep embeddings in this folder, keyed by backbone digest and text hash, across runs.
    #[arg(long, env = "AUTOGLM_EMBED_CACHE")]
    pub cache: Option<PathBuf>,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

impl BackboneArgs {
    pub fn open(&self) -> Result<Embedder> {
        let options = self.backend.load_options(
            self.threads.max(1),
            autoglm_runtime::LoadOptions::default().max_batch,
        )?;
        let embedder = Embedder::open(&self.model, &options, self.cache.as_deref())
            .with_context(|| format!("cannot load embedding package {}", self.model.display()))?;
        if self.backend.chosen() {
            eprintln!("backend: {}", embedder.model().backend_description());
        }
        Ok(embedder)
    }

    pub fn bar(&self) -> ProgressBar {
        if self.quiet || !std::io::stderr().is_terminal() {
            return ProgressBar::hidden();
        }
        let bar = ProgressBar::new(0);
        bar.set_style(
            ProgressStyle::with_template("{prefix:>9} [{bar:30}] {pos}/{len} {msg}")
                .unwrap_or_else(|_| ProgressStyle::default_bar())
                .progress_chars("=> "),
        );
        bar
    }
}

/// An adaptation error as the command line says it: the library names the option's field at
/// the start of the message (`epochs must be at least 1`), the user typed a flag (`--epochs`).
pub fn with_flag(e: AdaptError) -> anyhow::Error {
    let message = e.to_string();
    match e
        .option()
        .and_then(|field| Some((field, message.strip_prefix(field)?)))
    {
        Some((field, rest)) => anyhow!("--{}{rest}", flag(field)),
        None => e.into(),
    }
}

/// The flag of an option field: the field's name in kebab case, but for the self-training
/// options, whose flags say what they set (`self_training.threshold`: `--pseudo-threshold`).
fn flag(field: &str) -> String {
    match field.strip_prefix("self_training.") {
        Some("rounds") => "self-train-rounds".into(),
        Some(rest) => format!("pseudo-{}", rest.replace('_', "-")),
        None => field.replace('_', "-"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn option_errors_name_the_flag() {
        let e = AdaptError::InvalidOption {
            option: "batch_size",
            reason: "must be at least 1".into(),
        };
        assert_eq!(with_flag(e).to_string(), "--batch-size must be at least 1");
        let e = AdaptError::InvalidOption {
            option: "self_training.per_class",
            reason: "must be at least 1".into(),
        };
        assert_eq!(
            with_flag(e).to_string(),
            "--pseudo-per-class must be at least 1"
        );
        let e = AdaptError::Diverged {
            epoch: 3,
            loss: f64::NAN,
        };
        assert_eq!(
            with_flag(e).to_string(),
            "--lr is too high: training diverged at epoch 3 (loss NaN); lower it"
        );
        let e = AdaptError::Invalid("no task heads to package".into());
        assert_eq!(with_flag(e).to_string(), "no task heads to package");
    }
}
