//! `autoglm keygen` and `autoglm sign`: minisign keys, and a package's signature
//! (`manifest.json.minisig` inside the package; see `autoglm_package::signature`).

use anyhow::{bail, Context, Result};
use autoglm_package::signature::{generate_keypair, write_new_key_file};
use autoglm_package::{Package, SigningKey};
use clap::Args;
use std::path::{Path, PathBuf};

/// Makes a minisign key pair. Neither file may exist (keys are never overwritten).
#[derive(Args, Debug)]
pub struct KeygenArgs {
    /// Where to write the public key (give it to devices: `--trust FILE`).
    #[arg(long = "public", value_name = "FILE")]
    public: PathBuf,
    /// Where to write the secret key (mode 0600; keep it off the devices).
    #[arg(long = "secret", value_name = "FILE")]
    secret: PathBuf,
    /// Encrypt the secret key with the password in this file (first line); without it the
    /// secret key is stored unencrypted.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
}

/// Signs a package in place: its manifest (which lists every file's sha256) gets a minisign
/// signature, stored in the package as `manifest.json.minisig`.
#[derive(Args, Debug)]
pub struct SignArgs {
    /// Package directory or `.tar`; rewritten in place with the signature added.
    package: PathBuf,
    /// The secret key (`autoglm keygen`).
    #[arg(long = "secret", value_name = "FILE")]
    secret: PathBuf,
    /// The secret key's password, in this file (first line), if it has one.
    #[arg(long, value_name = "FILE")]
    password_file: Option<PathBuf>,
    /// Signed along with the manifest, shown by `inspect` (default: the package's name and
    /// the time).
    #[arg(long)]
    comment: Option<String>,
}

fn password(file: Option<&Path>) -> Result<Option<String>> {
    let Some(file) = file else { return Ok(None) };
    let text = std::fs::read_to_string(file)
        .with_context(|| format!("cannot read the password file {}", file.display()))?;
    let line = text.lines().next().unwrap_or("").to_owned();
    if line.is_empty() {
        bail!("the password file {} is empty", file.display());
    }
    Ok(Some(line))
}

pub fn keygen(a: KeygenArgs) -> Result<()> {
    for path in [&a.public, &a.secret] {
        if std::fs::symlink_metadata(path).is_ok() {
            bail!(
                "{} already exists: key files are never overwritten",
                path.display()
            );
        }
    }
    let (public, secret) = generate_keypair(password(a.password_file.as_deref())?)?;
    write_new_key_file(&a.secret, &secret, true)?;
    write_new_key_file(&a.public, &public, false)?;
    let id = autoglm_package::TrustedKeys::from_files(&[&a.public])?
        .ids()
        .next()
        .map(str::to_owned)
        .unwrap_or_default();
    eprintln!(
        "key {id}: public {}, secret {}",
        a.public.display(),
        a.secret.display()
    );
    Ok(())
}

pub fn sign(a: SignArgs) -> Result<()> {
    let key = SigningKey::from_file(&a.secret, password(a.password_file.as_deref())?)?;
    let mut package = Package::open(&a.package)
        .with_context(|| format!("cannot load package {}", a.package.display()))?;
    let comment = match a.comment {
        Some(c) => c,
        None => format!(
            "{} signed at {}",
            a.package
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_secs())
                .unwrap_or(0)
        ),
    };
    package.sign(&key, &comment)?;
    package
        .write(&a.package)
        .with_context(|| format!("cannot write package {}", a.package.display()))?;
    eprintln!("signed {} with key {}", a.package.display(), key.key_id());
    Ok(())
}
