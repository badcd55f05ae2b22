//! `ca_file` in `[client]`: a PEM bundle of the CAs that sign the
//! provider's certificate (a private CA). When it is set, only these are
//! trusted, not the built-in roots, as with the nats CLI's `--tlsca` and
//! the service's `nats.tls.ca_file`. The file is checked when the settings
//! are read, so that a wrong file is a precise error naming it, not a
//! failed handshake later.

use std::path::Path;
use std::time::{Duration, SystemTime};

use rustls_pki_types::pem::PemObject;
use rustls_pki_types::CertificateDer;

use super::ClientError;

/// The certificates of the CA bundle at `path`, each within its validity
/// period.
pub(crate) fn ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    let fail = |reason: String| ClientError::Usage(format!("ca_file {}: {reason}", path.display()));
    let text = std::fs::read(path).map_err(|e| {
        fail(match e.kind() {
            std::io::ErrorKind::NotFound => "not found".into(),
            _ => format!("cannot be read: {e}"),
        })
    })?;
    let certs = CertificateDer::pem_slice_iter(&text)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| fail(format!("not a PEM certificate file ({e})")))?;
    if certs.is_empty() {
        return Err(fail(
            "holds no certificate (no -----BEGIN CERTIFICATE----- block)".into(),
        ));
    }
    for cert in &certs {
        valid_now(cert).map_err(fail)?;
    }
    Ok(certs)
}

/// A CA certificate outside its validity period signs nothing a TLS
/// client accepts: Err says which certificate and since or until when.
fn valid_now(cert: &CertificateDer<'_>) -> Result<(), String> {
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_that_is_not_a_ca_bundle_is_named_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("absent.pem");
        let e = ca_bundle(&missing).unwrap_err().to_string();
        assert_eq!(e, format!("ca_file {}: not found", missing.display()));
        let text = dir.path().join("ca.pem");
        std::fs::write(&text, "not a certificate\n").unwrap();
        let e = ca_bundle(&text).unwrap_err().to_string();
        assert!(e.starts_with(&format!("ca_file {}: holds no certificate", text.display())));
        std::fs::write(
            &text,
            "-----BEGIN CERTIFICATE-----\n!!!!\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = ca_bundle(&text).unwrap_err().to_string();
        assert!(e.contains("not a PEM certificate file"), "{e}");
        std::fs::write(
            &text,
            "-----BEGIN CERTIFICATE-----\naGVsbG8=\n-----END CERTIFICATE-----\n",
        )
        .unwrap();
        let e = ca_bundle(&text).unwrap_err().to_string();
        assert!(e.contains("a certificate cannot be parsed"), "{e}");
    }
}
