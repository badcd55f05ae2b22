//! TLS as the service's clients use it: to nats-server (`[nats.tls]`) and
//! to identity providers (`oidc.ca_file`). Files are checked when the
//! config is loaded and read again when they rotate on disk.

mod client_config;
mod files;
mod reloading;

use std::path::{Path, PathBuf};

pub(crate) use client_config::{check_ca_file, client_config, Identity, Trust};
pub(crate) use files::{fail as file_error, read, TlsFileError};
pub(crate) use reloading::Reloading;

/// Which file of a client certificate is wrong, and why.
pub(crate) enum IdentityError {
    Cert(TlsFileError),
    Key(TlsFileError),
}

/// Checks a client certificate and its key as a handshake will read them.
pub(crate) fn check_identity(cert_file: &Path, key_file: &Path) -> Result<(), IdentityError> {
    let chain = files::read(cert_file)
        .and_then(|pem| files::client_chain(cert_file, &pem))
        .map_err(IdentityError::Cert)?;
    files::read(key_file)
        .and_then(|pem| files::with_key(chain, cert_file, (key_file, &pem)))
        .map(drop)
        .map_err(IdentityError::Key)
}

/// A TLS server the service connects to, and the settings that decide
/// how, for the hints its handshake failures get.
pub(crate) struct Peer {
    pub name: &'static str,
    pub ca_key: &'static str,
    pub url_key: &'static str,
    /// What is trusted when the CA file is not set.
    pub default_roots: &'static str,
    /// The settings of a client certificate, where one can be presented.
    pub identity_keys: Option<&'static str>,
}

pub(crate) const NATS_PEER: Peer = Peer {
    name: "nats-server",
    ca_key: "nats.tls.ca_file",
    url_key: "nats.url",
    default_roots: "the system's roots",
    identity_keys: Some("nats.tls.cert_file and nats.tls.key_file"),
};

pub(crate) const ISSUER_PEER: Peer = Peer {
    name: "the issuer",
    ca_key: "oidc.ca_file",
    url_key: "the issuer's URL",
    default_roots: "the public roots built into the service (Mozilla's)",
    identity_keys: None,
};

impl Peer {
    /// What to change, for the TLS failures an operator meets first
    /// (rustls names them tersely); empty for other errors.
    pub(crate) fn hint(&self, error: &str) -> String {
        let Peer {
            name,
            ca_key,
            url_key,
            default_roots,
            ..
        } = self;
        if error.contains("UnknownIssuer") {
            format!(" ({name}'s certificate is signed by no CA in {ca_key}, or, when it is not set, by none of {default_roots})")
        } else if error.contains("certificate not valid for name") {
            format!(" (the certificate {name} presents does not name the host of {url_key}: use a host name it names, or have it issued for this one)")
        } else if error.contains("CertificateRequired") {
            match self.identity_keys {
                Some(keys) => format!(" ({name} asks for a client certificate: set {keys})"),
                None => format!(" ({name} asks for a client certificate)"),
            }
        } else if error.contains("BadCertificate") || error.contains("UnknownCA") {
            format!(" ({name} refused the client certificate: is it signed by a CA {name} trusts?)")
        } else if error.contains("Expired") || error.contains("certificate expired") {
            " (a certificate in the chain has expired)".to_string()
        } else if error.contains("NotValidYet") || error.contains("certificate not valid yet") {
            " (a certificate in the chain is not valid yet: is this host's clock right?)"
                .to_string()
        } else {
            String::new()
        }
    }
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
    /// `options` set to connect with it. The CA and the client certificate
    /// are read again at each handshake when they have changed on disk, so
    /// rotated files are used from the next reconnect on.
    pub(crate) fn apply(
        &self,
        mut options: async_nats::ConnectOptions,
    ) -> Result<async_nats::ConnectOptions, TlsFileError> {
        options = options.require_tls(true);
        if self.ca_file.is_some() || self.client.is_some() {
            let trust = match &self.ca_file {
                Some(path) => {
                    warn_if_system_roots_fail();
                    Trust::CaFile {
                        key: "nats.tls.ca_file",
                        path,
                    }
                }
                // Read here anyway, with each error said (`system_roots`).
                None => Trust::System,
            };
            let identity = self.client.as_ref().map(|(cert, key)| Identity {
                key: "nats.tls.cert_file/key_file",
                cert_file: cert,
                key_file: key,
            });
            options = options.tls_client_config(client_config(trust, identity)?);
        }
        if self.handshake_first {
            options = options.tls_first();
        }
        Ok(options)
    }
}

/// async-nats reads the system's trust store on every connection it makes
/// with a client configuration of ours, even when only `nats.tls.ca_file`
/// is trusted, and fails the connection when that store cannot be read.
fn warn_if_system_roots_fail() {
    let found = rustls_native_certs::load_native_certs();
    if let Some(e) = found.errors.first() {
        tracing::warn!(
            "the system's trust store cannot be read ({e}): async-nats reads it on every connection and will fail to connect; fix or unset SSL_CERT_FILE / SSL_CERT_DIR"
        );
    }
}
