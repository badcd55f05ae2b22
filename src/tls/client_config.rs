//! rustls client settings whose trust anchors and client certificate are
//! read again at each handshake when their files have changed: a new CA
//! or certificate is used on the next connection, without a restart.

use std::fmt::Debug;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{ResolvesClientCert, WebPkiServerVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::sign::CertifiedKey;
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};

use super::files::{ca_bundle, client_chain, fail, with_key, TlsFileError};
use super::reloading::Reloading;

/// Whom a TLS client trusts.
pub(crate) enum Trust<'a> {
    /// Only the CAs in this PEM bundle (`key` names the setting).
    CaFile { key: &'a str, path: &'a Path },
    /// The operating system's roots.
    System,
}

/// A client certificate and its key, and the settings they come from.
pub(crate) struct Identity<'a> {
    pub key: &'a str,
    pub cert_file: &'a Path,
    pub key_file: &'a Path,
}

fn provider() -> Arc<CryptoProvider> {
    // Named rather than the process default: the tree builds rustls with
    // ring only, and a second provider would make the default ambiguous.
    Arc::new(rustls::crypto::ring::default_provider())
}

/// A rustls client configuration trusting `trust`, presenting `identity`.
pub(crate) fn client_config(
    trust: Trust<'_>,
    identity: Option<Identity<'_>>,
) -> Result<ClientConfig, TlsFileError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .expect("ring supports the default TLS versions");
    let builder = match trust {
        Trust::CaFile { key, path } => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(ReloadingRoots::new(key, path)?)),
        Trust::System => builder.with_root_certificates(system_roots()),
    };
    let mut config = match identity {
        Some(id) => builder.with_client_cert_resolver(Arc::new(ReloadingIdentity::new(id)?)),
        None => builder.with_no_client_auth(),
    };
    // A resumed TLS 1.3 session skips the certificate check: a CA taken
    // out of the file, or a client certificate replaced, would live on in
    // session tickets. Connections are minutes apart; a full handshake
    // each time costs nothing that matters.
    config.resumption = rustls::client::Resumption::disabled();
    Ok(config)
}

/// The system's roots, as async-nats trusts them without a CA file.
fn system_roots() -> RootCertStore {
    let mut roots = RootCertStore::empty();
    let found = rustls_native_certs::load_native_certs();
    for e in &found.errors {
        tracing::warn!("a system root certificate cannot be read: {e}");
    }
    roots.add_parsable_certificates(found.certs);
    roots
}

/// Verifies servers against the CA file as it is at each handshake.
#[derive(Debug)]
struct ReloadingRoots {
    verifier: Reloading<Arc<WebPkiServerVerifier>>,
    provider: Arc<CryptoProvider>,
}

impl ReloadingRoots {
    fn new(key: &str, path: &Path) -> Result<ReloadingRoots, TlsFileError> {
        Ok(ReloadingRoots {
            verifier: Reloading::new(key, vec![path.to_path_buf()], verifier_from)?,
            provider: provider(),
        })
    }
}

fn verifier_from(files: &[(PathBuf, Vec<u8>)]) -> Result<Arc<WebPkiServerVerifier>, TlsFileError> {
    let (path, pem) = &files[0];
    let bundle = ca_bundle(path, pem)?;
    for reason in &bundle.skipped {
        tracing::warn!(
            "{}: a certificate is left out of the trusted CAs: {reason}",
            path.display()
        );
    }
    verifier_of(path, bundle.certs)
}

/// Whether `path` holds a CA bundle a handshake can use, as it will read
/// it (without the warnings).
pub(crate) fn check_ca_file(path: &Path) -> Result<(), TlsFileError> {
    let pem = super::files::read(path)?;
    verifier_of(path, ca_bundle(path, &pem)?.certs).map(drop)
}

fn verifier_of(
    path: &Path,
    certs: Vec<CertificateDer<'static>>,
) -> Result<Arc<WebPkiServerVerifier>, TlsFileError> {
    let mut roots = RootCertStore::empty();
    for cert in certs {
        roots
            .add(cert)
            .map_err(|e| fail(path, format!("a certificate is not a usable CA: {e}")))?;
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), provider())
        .build()
        .map_err(|e| fail(path, format!("no usable CA: {e}")))
}

impl ServerCertVerifier for ReloadingRoots {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        self.verifier.current().verify_server_cert(
            end_entity,
            intermediates,
            server_name,
            ocsp_response,
            now,
        )
    }

    // The handshake signatures depend on the provider only, not on the CA
    // file: checked as WebPkiServerVerifier checks them, without reading it.
    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// Presents the client certificate as it is on disk at each handshake.
#[derive(Debug)]
struct ReloadingIdentity {
    identity: Reloading<Arc<CertifiedKey>>,
}

impl ReloadingIdentity {
    fn new(id: Identity<'_>) -> Result<ReloadingIdentity, TlsFileError> {
        let files = vec![id.cert_file.to_path_buf(), id.key_file.to_path_buf()];
        Ok(ReloadingIdentity {
            identity: Reloading::new(id.key, files, |files| {
                let (cert, key) = (&files[0], &files[1]);
                with_key(client_chain(&cert.0, &cert.1)?, &cert.0, (&key.0, &key.1))
            })?,
        })
    }
}

impl ResolvesClientCert for ReloadingIdentity {
    fn resolve(
        &self,
        _root_hint_subjects: &[&[u8]],
        _sigschemes: &[SignatureScheme],
    ) -> Option<Arc<CertifiedKey>> {
        Some(Arc::clone(&self.identity.current()))
    }

    fn has_certs(&self) -> bool {
        true
    }
}
