//! How one trusted issuer's tokens are verified.

use std::time::Duration;

use jsonwebtoken::Algorithm;

/// One `[oidc]` issuer's verification settings. Two issuers with equal
/// settings share keys across a config reload.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Names the issuer in logs, metrics, `/readyz` and `explain`.
    pub name: String,
    pub issuer: String,
    pub discovery_url: String,
    /// The JWKS URL, when the config names one: discovery is skipped.
    pub jwks_url: Option<String>,
    /// Only these CAs are trusted for discovery and the JWKS.
    pub ca_file: Option<std::path::PathBuf>,
    /// The caller's own token, for issuers that want one (read per fetch).
    pub bearer_token_file: Option<std::path::PathBuf>,
    pub audience: Vec<String>,
    /// What a back-channel logout token's `aud` must hold one of (the
    /// client ids the provider sends logouts to; `audience` by default).
    pub logout_audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    /// Clock skew allowed for `nbf` and `iat`; never for `exp`.
    pub leeway: Duration,
    pub jwks_max_age: Duration,
    pub jwks_refetch_cooldown: Duration,
    pub http_timeout: Duration,
    pub max_response_bytes: usize,
    pub token_cache_bytes: u64,
}
