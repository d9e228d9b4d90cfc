//! Signed packages: a [minisign](https://jedisct1.github.io/minisign/) signature of
//! `manifest.json`, carried inside the package as [`SIGNATURE_FILE`]. The manifest lists the
//! size and sha256 of every other file, so a valid signature over it vouches for the whole
//! package.
//!
//! The files are minisign's own: public keys made by `minisign -G` verify packages here, and
//! `minisign -Sm manifest.json` in a package directory signs it (its default signature file
//! name is [`SIGNATURE_FILE`]); keys and signatures made here verify with
//! `minisign -Vm manifest.json -p KEY.pub`. (Secret keys written by `minisign -G -W`, without
//! a password, are not read here: their checksum differs from what the `minisign` crate
//! expects; sign with `autoglm keygen` keys, or with the tool itself.)

use crate::{FileError, PackageError};
use std::io::Cursor;
use std::path::{Path, PathBuf};

/// The signature's file name inside a package: minisign's default for `manifest.json`.
pub const SIGNATURE_FILE: &str = "manifest.json.minisig";

/// A signature file longer than this is refused unread (a real one is about 300 bytes).
pub const MAX_SIGNATURE_BYTES: u64 = 4096;

/// Most trusted keys at once (rotation needs two or three).
pub const MAX_TRUSTED_KEYS: usize = 64;

/// A key file longer than this is refused unread (a minisign key file is under 400 bytes).
const MAX_KEY_FILE_BYTES: u64 = 16 << 10;

/// The public keys a package's signature must come from. Several at once, so that keys can be
/// rotated: sign with the new key while devices still trust the old one too.
#[derive(Clone, Default)]
pub struct TrustedKeys {
    keys: Vec<(String, minisign::PublicKey)>,
}

impl std::fmt::Debug for TrustedKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(id, _)| id))
            .finish()
    }
}

/// What a valid signature says: which trusted key made it, and its trusted comment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Signer {
    /// The key id, as minisign prints it (16 hex digits).
    pub key_id: String,
    pub trusted_comment: String,
}

/// minisign's key id: the 8-byte key number, little-endian, in upper-case hex.
fn key_id(keynum: &[u8]) -> String {
    keynum.iter().rev().map(|b| format!("{b:02X}")).collect()
}

fn key_error(what: &Path, e: impl std::fmt::Display) -> PackageError {
    PackageError::Key(format!("{}: {e}", what.display()))
}

/// Reads a small text file (a key), refusing anything but a regular file of sane size.
fn read_key_file(path: &Path) -> Result<String, PackageError> {
    let meta = std::fs::metadata(path).map_err(|e| key_error(path, e))?;
    if !meta.is_file() || meta.len() > MAX_KEY_FILE_BYTES {
        return Err(key_error(
            path,
            format!("not a key file (a regular file of at most {MAX_KEY_FILE_BYTES} bytes)"),
        ));
    }
    std::fs::read_to_string(path).map_err(|e| key_error(path, e))
}

impl TrustedKeys {
    /// No key: nothing is verified (digests only).
    pub fn none() -> Self {
        Self::default()
    }

    /// The minisign public keys in `paths` (the file `minisign -G` writes, or its base64 line
    /// alone, as `minisign -P` takes it).
    pub fn from_files<P: AsRef<Path>>(paths: &[P]) -> Result<Self, PackageError> {
        let mut keys = Self::default();
        for path in paths {
            let path = path.as_ref();
            keys.add(&read_key_file(path)?)
                .map_err(|e| key_error(path, e))?;
        }
        Ok(keys)
    }

    /// Adds one public key, in either form [`TrustedKeys::from_files`] reads.
    pub fn add(&mut self, text: &str) -> Result<(), PackageError> {
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| !l.is_empty() && !l.starts_with("untrusted comment:"))
            .ok_or_else(|| PackageError::Key("no public key in the file".into()))?;
        let pk = minisign::PublicKey::from_base64(line)
            .map_err(|e| PackageError::Key(format!("not a minisign public key: {e}")))?;
        if self.keys.len() >= MAX_TRUSTED_KEYS {
            return Err(PackageError::Key(format!(
                "more than {MAX_TRUSTED_KEYS} trusted keys"
            )));
        }
        let id = key_id(pk.keynum());
        if !self.keys.iter().any(|(k, _)| *k == id) {
            self.keys.push((id, pk));
        }
        Ok(())
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// The ids of the trusted keys.
    pub fn ids(&self) -> impl Iterator<Item = &str> {
        self.keys.iter().map(|(id, _)| id.as_str())
    }

    /// Checks that `signature` (a minisign signature file) is a valid signature of `data` by
    /// one of these keys. Legacy (not prehashed) signatures are refused, as minisign does.
    pub fn verify(&self, data: &[u8], signature: &str) -> Result<Signer, PackageError> {
        let sig = minisign::SignatureBox::from_string(signature)
            .map_err(|e| PackageError::BadSignature(format!("unreadable signature: {e}")))?;
        let id = key_id(sig.keynum());
        let Some((_, pk)) = self.keys.iter().find(|(k, _)| *k == id) else {
            return Err(PackageError::UntrustedKey {
                key_id: id,
                trusted: self.ids().collect::<Vec<_>>().join(", "),
            });
        };
        minisign::verify(pk, &sig, Cursor::new(data), true, false, false)
            .map_err(|e| PackageError::BadSignature(format!("key {id}: {e}")))?;
        let trusted_comment = sig
            .trusted_comment()
            .map_err(|e| PackageError::BadSignature(e.to_string()))?;
        Ok(Signer {
            key_id: id,
            trusted_comment,
        })
    }
}

/// A secret key, ready to sign.
pub struct SigningKey {
    sk: minisign::SecretKey,
    pk: Option<minisign::PublicKey>,
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SigningKey")
            .field("key_id", &key_id(self.sk.keynum()))
            .finish_non_exhaustive()
    }
}

impl SigningKey {
    /// Reads a minisign secret key file; `password` for a key encrypted with one (the
    /// default of `minisign -G`), `None` for an unencrypted one (`minisign -G -W`, or
    /// `autoglm keygen` without a password file).
    pub fn from_file(path: &Path, password: Option<String>) -> Result<Self, PackageError> {
        let text = read_key_file(path)?;
        let boxed = minisign::SecretKeyBox::from_string(&text).map_err(|e| key_error(path, e))?;
        let sk = match password {
            Some(p) => boxed.into_secret_key(Some(p)),
            None => boxed.into_unencrypted_secret_key(),
        }
        .map_err(|e| {
            key_error(
                path,
                format!("{e} (is the key encrypted? then give its password)"),
            )
        })?;
        let pk = minisign::PublicKey::from_secret_key(&sk).ok();
        Ok(SigningKey { sk, pk })
    }

    pub fn key_id(&self) -> String {
        key_id(self.sk.keynum())
    }

    /// A minisign signature file for `data`, with `trusted_comment` signed along.
    pub fn sign(&self, data: &[u8], trusted_comment: &str) -> Result<String, PackageError> {
        let untrusted = format!("signature from autoglm secret key {}", self.key_id());
        minisign::sign(
            self.pk.as_ref(),
            &self.sk,
            Cursor::new(data),
            Some(trusted_comment),
            Some(&untrusted),
        )
        .map(|b| b.into_string())
        .map_err(|e| PackageError::Key(format!("signing failed: {e}")))
    }
}

/// A new key pair as minisign's file texts: (public key file, secret key file). The secret key
/// is encrypted with `password` (scrypt, as minisign does) when one is given.
pub fn generate_keypair(password: Option<String>) -> Result<(String, String), PackageError> {
    let pair = match password {
        Some(p) => minisign::KeyPair::generate_encrypted_keypair(Some(p)),
        None => minisign::KeyPair::generate_unencrypted_keypair(),
    }
    .map_err(|e| PackageError::Key(format!("key generation failed: {e}")))?;
    let id = key_id(pair.pk.keynum());
    let public = pair
        .pk
        .to_box()
        .map_err(|e| PackageError::Key(e.to_string()))?
        .into_string();
    let secret = pair
        .sk
        .to_box(Some(&format!("autoglm secret key {id}")))
        .map_err(|e| PackageError::Key(e.to_string()))?
        .into_string();
    Ok((public, secret))
}

/// Writes `text` to a new file at `path`, refusing to replace anything there (a key file is
/// never overwritten); the secret key file is readable by its owner only.
pub fn write_new_key_file(path: &Path, text: &str, secret: bool) -> Result<(), PackageError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(if secret { 0o600 } else { 0o644 });
    }
    #[cfg(not(unix))]
    let _ = secret; // no permission bits to set on this platform
    let err = |source| {
        PackageError::from(FileError::Write {
            path: PathBuf::from(path),
            source,
        })
    };
    let mut file = options.open(path).map_err(|e| {
        if e.kind() == std::io::ErrorKind::AlreadyExists {
            PackageError::Target {
                path: path.into(),
                reason: "a file is already there; key files are never overwritten".into(),
            }
        } else {
            err(e)
        }
    })?;
    file.write_all(text.as_bytes()).map_err(err)?;
    file.sync_all().map_err(err)
}
