//! The files a config names (TLS certificate and key, CA bundle, client
//! secret) are opened at load time, so that `check` finds a missing or wrong
//! file before start-up does.

use std::path::{Path, PathBuf};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::Secret;

/// What a PEM file must contain.
#[derive(Debug, Clone, Copy)]
pub(super) enum Pem {
    Certificates,
    PrivateKey,
}

/// Relative paths are relative to the config file's directory, and made
/// absolute so that the effective config means the same from any directory.
pub(super) fn resolve(base_dir: &Path, raw: &str) -> PathBuf {
    let joined = base_dir.join(raw);
    std::path::absolute(&joined).unwrap_or(joined)
}

pub(super) fn check_pem(path: &Path, kind: Pem) -> Result<(), String> {
    let bytes = std::fs::read(path).map_err(|e| cannot_read(path, &e))?;
    match kind {
        Pem::Certificates => check_certificates(path, &bytes),
        // The parser's error could quote key material, so it is not shown.
        Pem::PrivateKey => PrivateKeyDer::from_pem_slice(&bytes)
            .map(drop)
            .map_err(|_| format!("{} contains no PEM private key", path.display())),
    }
}

fn check_certificates(path: &Path, bytes: &[u8]) -> Result<(), String> {
    let mut count = 0;
    for cert in CertificateDer::pem_slice_iter(bytes) {
        cert.map_err(|e| format!("{} is not valid PEM ({e})", path.display()))?;
        count += 1;
    }
    if count == 0 {
        return Err(format!(
            "{} contains no PEM certificate (-----BEGIN CERTIFICATE-----)",
            path.display()
        ));
    }
    Ok(())
}

/// The whole file is the secret, minus the trailing newline editors add.
pub(super) fn read_secret(path: &Path) -> Result<Secret, String> {
    let text = std::fs::read_to_string(path).map_err(|e| cannot_read(path, &e))?;
    let secret = text.trim_end();
    if secret.is_empty() {
        return Err(format!("{} is empty", path.display()));
    }
    Ok(Secret::new(secret))
}

fn cannot_read(path: &Path, e: &std::io::Error) -> String {
    format!("cannot read {}: {e}", path.display())
}
