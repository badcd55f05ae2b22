//! Certificate and key files as an operator writes them for TLS (PEM, the
//! way nats-server's `tls {}` block and the nats CLI's `--tlsca`,
//! `--tlscert` and `--tlskey` take them): read and checked once, so that a
//! wrong file is a precise error at start and in `check`, not a failed
//! handshake later.

use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime};

use async_nats::rustls::pki_types::pem::PemObject;
use async_nats::rustls::pki_types::{CertificateDer, PrivateKeyDer};
use async_nats::rustls::sign::CertifiedKey;

/// Why a TLS file cannot be used; always names the file.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsFileError {
    #[error("{path}: {reason}")]
    File { path: String, reason: String },
}

fn fail(path: &Path, reason: impl Into<String>) -> TlsFileError {
    TlsFileError::File {
        path: path.display().to_string(),
        reason: reason.into(),
    }
}

/// The certificates of a PEM file: a CA bundle, or a certificate chain
/// (the leaf first).
pub(crate) fn certificates(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let text = read(path)?;
    let certs = CertificateDer::pem_slice_iter(&text)
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

/// A CA bundle: its certificates, each within its validity period.
pub(crate) fn ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let certs = certificates(path)?;
    for cert in &certs {
        valid_now(path, cert)?;
    }
    Ok(certs)
}

/// A client certificate chain whose leaf is valid now.
pub(crate) fn client_chain(cert_file: &Path) -> Result<Vec<CertificateDer<'static>>, TlsFileError> {
    let chain = certificates(cert_file)?;
    valid_now(cert_file, &chain[0])?;
    Ok(chain)
}

/// The private key of `chain`'s leaf certificate (read from `cert_file`).
pub(crate) fn client_key(
    key_file: &Path,
    chain: Vec<CertificateDer<'static>>,
    cert_file: &Path,
) -> Result<(), TlsFileError> {
    let text = read(key_file)?;
    let key = PrivateKeyDer::from_pem_slice(&text).map_err(|e| {
        fail(
            key_file,
            format!("no private key in PEM form (PKCS#8, RSA or EC) ({e})"),
        )
    })?;
    let signing = async_nats::rustls::crypto::ring::sign::any_supported_type(&key)
        .map_err(|e| fail(key_file, format!("not a usable private key: {e}")))?;
    CertifiedKey::new(chain, signing).keys_match().map_err(|_| {
        fail(
            key_file,
            format!(
                "is not the key of the certificate in {}",
                cert_file.display()
            ),
        )
    })
}

fn read(path: &Path) -> Result<Vec<u8>, TlsFileError> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => fail(path, "not found"),
        _ => fail(path, format!("cannot be read: {e}")),
    })
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

/// `nats.tls`: what the service's own NATS connection trusts and presents.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsTls {
    /// Only these CAs are trusted (else the system's roots).
    pub ca_file: Option<PathBuf>,
    /// The client certificate chain and its key.
    pub client: Option<(PathBuf, PathBuf)>,
    /// TLS before nats-server's INFO (its `handshake_first`).
    pub handshake_first: bool,
}

impl NatsTls {
    /// `options` set to connect with it; async-nats reads the files again
    /// on every connection attempt, so rotated files are used on the next
    /// reconnect.
    pub(crate) fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> async_nats::ConnectOptions {
        options = options.require_tls(true);
        if let Some(ca) = &self.ca_file {
            options = options.add_root_certificates(ca.clone());
        }
        if let Some((cert, key)) = &self.client {
            options = options.add_client_certificate(cert.clone(), key.clone());
        }
        if self.handshake_first {
            options = options.tls_first();
        }
        options
    }
}
