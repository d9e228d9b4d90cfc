//! `autoglm multitask`: adapted single-task packages into one package, one backbone pass.

use anyhow::{bail, Context, Result};
use autoglm_adapt::package;
use autoglm_package::Package;
use clap::Args;
use std::path::PathBuf;

#[derive(Args, Debug)]
pub struct MultitaskArgs {
    /// The embedding package the heads were trained on.
    #[arg(long, env = "AUTOGLM_MODEL")]
    pub model: PathBuf,
    /// Output package: a directory, or a `.tar` file.
    #[arg(long)]
    pub out: PathBuf,
    /// Single-task packages made by `autoglm adapt`, as NAME=PKG (NAME becomes the task name).
    #[arg(required = true, value_name = "NAME=PKG")]
    pub tasks: Vec<String>,
}

pub fn run(a: MultitaskArgs) -> Result<()> {
    let embedding = Package::open(&a.model)
        .with_context(|| format!("cannot load embedding package {}", a.model.display()))?;
    let mut tasks = Vec::new();
    for spec in &a.tasks {
        let Some((name, path)) = spec.split_once('=') else {
            bail!("`{spec}`: expected NAME=PKG");
        };
        let pkg = Package::open(path).with_context(|| format!("cannot load package {path}"))?;
        let mut heads = package::read_tasks(&pkg).with_context(|| format!("package {path}"))?;
        if heads.len() != 1 {
            bail!("{path} already has several tasks; list single-task packages");
        }
        let mut t = heads.remove(0);
        t.record.task = name.to_string();
        tasks.push(t);
    }
    let pkg = package::build(&embedding, &tasks)?;
    pkg.write(&a.out)
        .with_context(|| format!("cannot write {}", a.out.display()))?;
    eprintln!(
        "wrote multi-task package {} ({} tasks, {} outputs)",
        a.out.display(),
        tasks.len(),
        pkg.manifest().labels.len()
    );
    Ok(())
}
