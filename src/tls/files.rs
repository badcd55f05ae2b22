//! Certificate and key files as an operator writes them for TLS (PEM, the
//! way nats-server's `tls {}` block and the nats CLI's `--tlsca`,
//! `--tlscert` and `--tlskey` take them): checked when read, so that a
//! wrong file is a precise error at start, in `check` and when a rotated
//! file is read again, not a failed handshake later.

use std::path::Path;
use std::sync::Arc;

use nats_oidc_client::pem;

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
    pem::read(path).map_err(|reason| fail(path, reason))
}

/// A CA bundle (`pem`, read from `path`): its certificates within their
/// validity period, and why the others are left out.
pub(crate) fn ca_bundle(path: &Path, pem: &[u8]) -> Result<pem::CaBundle, TlsFileError> {
    pem::ca_bundle(pem).map_err(|reason| fail(path, reason))
}

/// A client certificate chain (`pem`, read from `path`) whose leaf is
/// valid now.
pub(crate) fn client_chain(
    path: &Path,
    pem: &[u8],
) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let chain = pem::certificates(pem).map_err(|reason| fail(path, reason))?;
    pem::valid_now(&chain[0]).map_err(|reason| fail(path, reason))?;
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
