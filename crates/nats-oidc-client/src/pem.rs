//! PEM certificate files as TLS settings name them (`ca_file` here,
//! `nats.tls.*` and `oidc.ca_file` in the service): the reasons a file
//! cannot be used, in the same words wherever it is read. Errors are the
//! reason only; callers put the setting and the file in front.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

/// A file's bytes, with "not found" said as such.
pub fn read(path: &Path) -> Result<Vec<u8>, String> {
    std::fs::read(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => "not found".into(),
        _ => format!("cannot be read: {e}"),
    })
}

/// The certificates of a PEM file (a CA bundle, or a chain, leaf first).
pub fn certificates(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("not a PEM certificate file ({e})"))?;
    if certs.is_empty() {
        return Err("holds no certificate (no -----BEGIN CERTIFICATE----- block)".into());
    }
    Ok(certs)
}

/// A certificate outside its validity period is refused by every peer
/// (and a CA's signs nothing a peer accepts): Err says which certificate
/// and since or until when.
pub fn valid_now(cert: &CertificateDer<'_>) -> Result<(), String> {
    let (_, parsed) = x509_parser::parse_x509_certificate(cert)
        .map_err(|e| format!("a certificate cannot be parsed: {e}"))?;
    let validity = parsed.validity();
    let at = |t: x509_parser::time::ASN1Time| {
        SystemTime::UNIX_EPOCH + Duration::from_secs(t.timestamp().max(0) as u64)
    };
    let (from, until) = (at(validity.not_before), at(validity.not_after));
    let now = SystemTime::now();
    let subject = parsed.subject().to_string();
    let stamp = |t: SystemTime| humantime::format_rfc3339_seconds(t).to_string();
    if now > until {
        return Err(format!(
            "the certificate for {subject:?} expired on {}",
            stamp(until)
        ));
    }
    if now < from {
        return Err(format!(
            "the certificate for {subject:?} is not valid before {}",
            stamp(from)
        ));
    }
    Ok(())
}

/// The usable CAs of a bundle, and why the others are left out.
pub struct CaBundle {
    pub certs: Vec<CertificateDer<'static>>,
    /// A certificate outside its validity period is left out rather than
    /// refusing the bundle: company bundles, and a cluster's CA file during
    /// a rotation, carry an expired one beside the current.
    pub skipped: Vec<String>,
}

/// A CA bundle: the certificates within their validity period; an error
/// when none is.
pub fn ca_bundle(pem: &[u8]) -> Result<CaBundle, String> {
    let mut bundle = CaBundle {
        certs: Vec::new(),
        skipped: Vec::new(),
    };
    for cert in certificates(pem)? {
        match valid_now(&cert) {
            Ok(()) => bundle.certs.push(cert),
            Err(reason) => bundle.skipped.push(reason),
        }
    }
    if bundle.certs.is_empty() {
        return Err(format!(
            "holds no certificate that is valid now: {}",
            bundle.skipped.join("; ")
        ));
    }
    Ok(bundle)
}
