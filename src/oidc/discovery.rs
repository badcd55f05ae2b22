//! HTTP to the OIDC issuer: the discovery document and the JWKS.
//!
//! rustls only, bounded time, bounded body size, and no redirects: a key
//! source that can be redirected is a key source an attacker may choose.
//! A private CA (`oidc.ca_file`) replaces the public roots, and the
//! caller's own token (`oidc.bearer_token_file`, for a Kubernetes API
//! server) goes only to the origins the config names; both files are read
//! again when they rotate.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use crate::oidc::bearer::Bearer;
use crate::oidc::settings::Settings;

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum FetchError {
    #[error("cannot build the HTTP client: {0}")]
    Client(String),
    #[error("GET {url}: {reason}")]
    Http { url: String, reason: String },
    #[error("GET {url}: status {status}{hint}")]
    Status {
        url: String,
        status: u16,
        hint: &'static str,
    },
    #[error("{key} {error}")]
    File {
        key: &'static str,
        /// The file and why it cannot be used.
        error: String,
    },
    #[error("GET {url}: body larger than {limit} bytes")]
    TooLarge { url: String, limit: usize },
    #[error("discovery document {url}: {reason}")]
    Discovery { url: String, reason: String },
    #[error("discovery document says issuer {found:?}, configured issuer is {expected:?}")]
    IssuerMismatch { found: String, expected: String },
    #[error("JWKS {url}: {reason}")]
    Jwks { url: String, reason: String },
}

#[derive(Clone)]
pub(crate) struct IssuerClient {
    http: reqwest::Client,
    issuer: String,
    discovery_url: String,
    /// The JWKS URL the config names, which replaces discovery.
    jwks_url: Option<String>,
    max_bytes: usize,
    bearer: Option<Bearer>,
}

/// The two fields of an OpenID Provider's (or an OAuth 2.0 authorization
/// server's) metadata that verifying tokens needs.
#[derive(Deserialize)]
struct Discovery {
    issuer: String,
    jwks_uri: String,
}

impl IssuerClient {
    pub(crate) fn new(oidc: &Settings) -> Result<IssuerClient, FetchError> {
        let mut http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(oidc.http_timeout)
            .connect_timeout(oidc.http_timeout.min(Duration::from_secs(5)))
            .user_agent(concat!("nats-oidc-callout/", env!("CARGO_PKG_VERSION")))
            // Fetches are minutes apart; a fresh connection each time
            // makes a rotated CA (or certificate) count from the next one.
            .pool_max_idle_per_host(0);
        if let Some(path) = &oidc.ca_file {
            http = http.use_preconfigured_tls(private_ca(path)?);
        }
        let http = http
            .build()
            .map_err(|e| FetchError::Client(error_chain(&e)))?;
        Ok(IssuerClient {
            http,
            issuer: oidc.issuer.clone(),
            discovery_url: oidc.discovery_url.clone(),
            jwks_url: oidc.jwks_url.clone(),
            max_bytes: oidc.max_response_bytes,
            bearer: oidc
                .bearer_token_file
                .as_deref()
                .map(|path| Bearer::new(oidc, path))
                .transpose()?,
        })
    }

    /// Reads the discovery document, checks that it names the configured
    /// issuer exactly (OpenID Connect Discovery §4.3), and returns its
    /// `jwks_uri`.
    pub(crate) async fn discover_jwks_uri(&self) -> Result<String, FetchError> {
        if let Some(jwks_url) = &self.jwks_url {
            return Ok(jwks_url.clone());
        }
        let body = self.get(&self.discovery_url).await?;
        let metadata: Discovery =
            serde_json::from_slice(&body).map_err(|e| FetchError::Discovery {
                url: self.discovery_url.clone(),
                reason: e.to_string(),
            })?;
        if metadata.issuer != self.issuer {
            return Err(FetchError::IssuerMismatch {
                found: crate::text::name(&metadata.issuer),
                expected: self.issuer.clone(),
            });
        }
        let jwks_uri = metadata.jwks_uri;
        // The issuer's answer: escaped and clipped before it reaches a log.
        check_http_url(&jwks_uri).map_err(|reason| FetchError::Discovery {
            url: self.discovery_url.clone(),
            reason: format!("jwks_uri: {}", crate::text::reason(&reason)),
        })?;
        Ok(jwks_uri)
    }

    /// Fetches the raw JWKS document.
    pub(crate) async fn fetch_jwks(&self, jwks_uri: &str) -> Result<Vec<u8>, FetchError> {
        self.get(jwks_uri).await
    }

    /// `url` may be the issuer's (`jwks_uri`): errors show it escaped.
    async fn get(&self, url: &str) -> Result<Vec<u8>, FetchError> {
        let shown = crate::text::name(url);
        let http_err = |e: reqwest::Error| {
            let chain = error_chain(&e);
            FetchError::Http {
                url: shown.clone(),
                reason: crate::text::reason(&chain) + &crate::tls::ISSUER_PEER.hint(&chain),
            }
        };
        let mut request = self
            .http
            .get(url)
            .header(reqwest::header::ACCEPT, "application/json");
        let token = self.bearer.as_ref().filter(|b| b.may_go_to(url));
        if let Some(bearer) = token {
            request = request.bearer_auth(bearer.current().as_str());
        }
        let mut response = request.send().await.map_err(http_err)?;
        let status = response.status();
        if !status.is_success() {
            return Err(FetchError::Status {
                url: shown.clone(),
                status: status.as_u16(),
                hint: self.status_hint(status, token.is_some()),
            });
        }
        let too_large = || FetchError::TooLarge {
            url: shown.clone(),
            limit: self.max_bytes,
        };
        if response
            .content_length()
            .is_some_and(|n| n > self.max_bytes as u64)
        {
            return Err(too_large());
        }
        let mut body = Vec::new();
        while let Some(chunk) = response.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > self.max_bytes {
                return Err(too_large());
            }
            body.extend_from_slice(&chunk);
        }
        Ok(body)
    }
}

impl IssuerClient {
    /// What to change, for the refusals a token (or its absence) draws.
    fn status_hint(&self, status: reqwest::StatusCode, sent_token: bool) -> &'static str {
        if !matches!(status.as_u16(), 401 | 403) {
            ""
        } else if sent_token {
            " (the issuer refused oidc.bearer_token_file's token: is it expired, or not allowed to read the issuer's keys?)"
        } else if self.bearer.is_some() {
            " (oidc.bearer_token_file's token goes only to the origins of the URLs the config names: set oidc.jwks_url to the JWKS at the discovery URL's origin)"
        } else {
            " (this issuer wants a caller's token: set oidc.bearer_token_file)"
        }
    }
}

/// A TLS client trusting only the CAs in `path`, read again when it
/// changes: a rotated CA is used from the next fetch on.
fn private_ca(path: &Path) -> Result<rustls::ClientConfig, FetchError> {
    let mut config = crate::tls::client_config(
        crate::tls::Trust::CaFile {
            key: "oidc.ca_file",
            path,
        },
        None,
    )
    .map_err(|e| FetchError::File {
        key: "oidc.ca_file",
        error: e.to_string(),
    })?;
    config.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    Ok(config)
}

/// Whether a URL's host is this machine: `localhost` or a loopback
/// address. Schemes the url crate does not know (`nats://`) leave the
/// host as text, addresses included, so text is read as an address too.
pub(crate) fn is_loopback(url: &url::Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => {
            d.eq_ignore_ascii_case("localhost")
                || d.trim_start_matches('[')
                    .trim_end_matches(']')
                    .parse::<std::net::IpAddr>()
                    .is_ok_and(|ip| ip.is_loopback())
        }
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Issuer, discovery and JWKS URLs: https, or plain http only on loopback so
/// that development and tests work without TLS and production cannot be
/// downgraded.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let shown = crate::secrets::redact_url(url);
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{shown:?} is not a URL: {e}"))?;
    // An issuer's URLs are public; credentials in one would be logged,
    // shown by `explain` and sent wherever a redirect pointed.
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(format!(
            "{shown:?} carries credentials; an issuer's URLs are public"
        ));
    }
    let url = &shown;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            if is_loopback(&parsed) {
                Ok(())
            } else {
                Err(format!(
                    "{url:?} must use https (plain http is allowed only on loopback)"
                ))
            }
        }
        other => Err(format!("{url:?}: scheme {other:?} is not http(s)")),
    }
}
