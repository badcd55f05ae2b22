//! Where a long-running program gets the token for each (re)connect: the
//! callout only runs at CONNECT, and nats-server closes a connection when
//! its token expires, so every connect attempt must present a token that
//! is valid now (see examples/token_client.rs).

use std::path::PathBuf;

use super::cache::CachedToken;
use super::oauth::OidcClient;
use super::settings::Settings;
use super::ClientError;

/// A source of currently valid access tokens.
pub enum TokenSource {
    /// A file that another process keeps fresh (kubelet's projected
    /// service-account token, a sidecar running `nats-oidc-callout token`):
    /// read again on every call.
    File(PathBuf),
    /// Client credentials: a token kept in memory and renewed when less
    /// than `min_valid` seconds of it remain (at most half its lifetime).
    ClientCredentials {
        client: Box<OidcClient>,
        current: tokio::sync::Mutex<Option<Box<CachedToken>>>,
        min_valid: u64,
    },
}

impl TokenSource {
    pub fn file(path: impl Into<PathBuf>) -> TokenSource {
        TokenSource::File(path.into())
    }

    pub fn client_credentials(settings: Settings, min_valid: u64) -> Result<Self, ClientError> {
        Ok(TokenSource::ClientCredentials {
            client: Box::new(OidcClient::new(settings)?),
            current: tokio::sync::Mutex::new(None),
            min_valid,
        })
    }

    /// The private inbox prefix of the user the current token names (for
    /// roles that grant `{{inbox}}.>`): set it as the client's inbox
    /// prefix (async-nats `custom_inbox_prefix`). It depends only on the
    /// token's issuer and subject, so it stays the same across renewals.
    pub async fn inbox_prefix(&self) -> Result<String, ClientError> {
        super::inbox::of_token(&self.token().await?)
    }

    /// A token to connect with now.
    pub async fn token(&self) -> Result<String, ClientError> {
        match self {
            TokenSource::File(path) => {
                let text = tokio::fs::read_to_string(path).await.map_err(|e| {
                    ClientError::failed(format!("cannot read {}: {}", path.display(), e.kind()))
                })?;
                let token = text.trim();
                if token.is_empty() {
                    return Err(ClientError::failed(format!("{} is empty", path.display())));
                }
                Ok(token.to_string())
            }
            TokenSource::ClientCredentials {
                client,
                current,
                min_valid,
            } => {
                let mut current = current.lock().await;
                if let Some(t) = current.as_ref().filter(|t| t.fresh_for(*min_valid)) {
                    return Ok(t.access_token.clone());
                }
                let fresh = client.client_credentials().await?;
                let token = fresh.access_token.clone();
                *current = Some(Box::new(fresh));
                Ok(token)
            }
        }
    }
}
