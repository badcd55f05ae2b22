//! Certificate and key files as an operator writes them for TLS (PEM, the
//! way nats-server's `tls {}` block and the nats CLI's `--tlsca`,
//! `--tlscert` and `--tlskey` take them): checked when read, so that a
//! wrong file is a precise error at start, in `check` and when a rotated
//! file is read again, not a failed handshake later.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::sign::CertifiedKey;

/// Why a TLS file cannot be used; always names the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{path}: {reason}")]
pub(crate) struct TlsFileError {
    pub(crate) path: String,
    pub(crate) reason: String,
}

pub(crate) fn fail(path: &Path, reason: impl Into<String>) -> TlsFileError {
    TlsFileError {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// A file's bytes, with "not found" said as such.
pub(crate) fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail(path, "not found"),
        _ => fail(path, format!("cannot be read: {e}")),
    })
}

/// The certificates of a PEM file: a CA bundle, or a certificate chain
/// (the leaf first).
fn certificates(path: &Path, pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(path, format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(fail(
            path,
            "holds no certificate (no -----BEGIN CERTIFICATE----- block)",
        ));
    }
    Ok(certs)
}

/// A CA bundle (`pem`, read from `path`): its certificates, each within its
/// validity period.
pub(crate) fn ca_bundle(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = certificates(path, pem)?;
    for cert in &certs {
        valid_now(path, cert)?;
    }
    Ok(certs)
}

/// A client certificate chain (`pem`, read from `path`) whose leaf is
/// valid now.
pub(crate) fn client_chain(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let chain = certificates(path, pem)?;
    valid_now(path, &chain[0])?;
    Ok(chain)
}

/// `chain` with its private key (`key_pem`, read from `key_file`): what a
/// TLS client presents.
pub(crate) fn with_key(
    chain: Vec<CertificateDer<'static>>,
    cert_file: &Path,
    (key_file, key_pem): (&Path, &[u8]),
) -> Result<Arc<CertifiedKey>, TlsFileError> {
    let key = PrivateKeyDer::from_pem_slice(key_pem).map_err(|e| {
        fail(
            key_file,
            format!("no private key in PEM form (PKCS#8, RSA or EC) ({e})"),
        )
    })?;
    let signing = rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| fail(key_file, format!("not a usable private key: {e}")))?;
    let identity = CertifiedKey::new(chain, signing);
    identity.keys_match().map_err(|_| {
        fail(
            key_file,
            format!(
                "is not the key of the certificate in {}",
                cert_file.display()
            ),
        )
    })?;
    Ok(Arc::new(identity))
}

/// A certificate outside its validity period is refused by every peer.
fn valid_now(path: &Path, cert: &CertificateDer<'_>) -> Result<(), TlsFileError> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| fail(path, format!("a certificate cannot be parsed: {e}")))?;
    let validity = parsed.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let (from, until) = (at(validity.not_before), at(validity.not_after));
    let now = SystemTime::now();
    let subject = parsed.subject().to_string();
    let stamp = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    if now > until {
        return Err(fail(
            path,
            format!(
                "the certificate for {subject:?} expired on {}",
                stamp(until)
            ),
        ));
    }
    if now < from {
        return Err(fail(
            path,
            format!(
                "the certificate for {subject:?} is not valid before {}",
                stamp(from)
            ),
        ));
    }
    Ok(())
}
