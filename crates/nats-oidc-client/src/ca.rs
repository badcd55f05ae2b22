//! `ca_file` in `[client]`: a PEM bundle of the CAs that sign the
//! provider's certificate (a private CA). When it is set, only these are
//! trusted, not the built-in roots, as with the nats CLI's `--tlsca` and
//! the service's `nats.tls.ca_file`. The file is checked when the settings
//! are read, so that a wrong file is a precise error naming it, not a
//! failed handshake later.

use std::path::Path;

use rustls_pki_types::CertificateDer;

use super::ClientError;

/// The certificates of the CA bundle at `path` that are within their
/// validity period (the others are left out; none is an error).
pub(crate) fn ca_bundle(path: &Path) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    crate::pem::read(path)
        .and_then(|pem| crate::pem::ca_bundle(&pem))
        .map(|bundle| bundle.certs)
        .map_err(|reason| ClientError::Usage(format!("ca_file {}: {reason}", path.display())))
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
