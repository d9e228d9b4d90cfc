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
    /// Packages made by `autoglm adapt` (or by this command): NAME=PKG takes a single-task
    /// package's head as task NAME; PKG alone takes every task of PKG under its own name.
    #[arg(required = true, value_name = "NAME=PKG|PKG")]
    pub tasks: Vec<String>,
}

pub fn run(a: MultitaskArgs) -> Result<()> {
    let embedding = Package::open(&a.model)
        .with_context(|| format!("cannot load embedding package {}", a.model.display()))?;
    let mut tasks = Vec::new();
    for spec in &a.tasks {
        let (name, path) = match spec.split_once('=') {
            Some((name, path)) => (Some(name), path),
            None => (None, spec.as_str()),
        };
        let pkg = Package::open(path).with_context(|| format!("cannot load package {path}"))?;
        let mut heads = package::read_tasks(&pkg).with_context(|| format!("package {path}"))?;
        if let Some(name) = name {
            if heads.len() != 1 {
                bail!("{path} has {} tasks: NAME={path} renames a single task; give {path} alone to take them all", heads.len());
            }
            heads[0].record.task = name.to_string();
        }
        tasks.append(&mut heads);
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
