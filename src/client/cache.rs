//! The token cache: one file per issuer and client id in
//! `$XDG_CACHE_HOME/nats-oidc-callout/tokens/` (else
//! `~/.cache/nats-oidc-callout/tokens/`), mode 0600 in a 0700 directory,
//! holding what the provider returned and nothing else: the access token,
//! its type, expiry and scope, and the refresh token.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::{now_secs, ClientError};

/// Tokens whose expiry the provider did not state (no `expires_in`, no
/// readable `exp`) are taken again for at most this long.
const UNKNOWN_LIFETIME_SECS: u64 = 300;

/// One login's tokens, as the provider returned them.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedToken {
    /// Which login this is (not secret).
    pub issuer: String,
    pub client_id: String,
    pub access_token: String,
    pub token_type: String,
    /// When it was obtained and when it expires (Unix seconds), from the
    /// provider's `expires_in` (else the token's own `exp`).
    pub obtained_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("issuer", &self.issuer)
            .field("client_id", &self.client_id)
            .field("expires_at", &self.expires_at)
            .field("refresh_token", &self.refresh_token.is_some())
            .finish_non_exhaustive()
    }
}

impl CachedToken {
    /// When the access token stops being accepted (Unix seconds).
    pub fn valid_until(&self) -> u64 {
        self.expires_at
            .unwrap_or(self.obtained_at + UNKNOWN_LIFETIME_SECS)
    }

    /// Whether it is still valid `min_valid` seconds from now, with
    /// `min_valid` capped at half the token's lifetime, so a provider that
    /// issues shorter tokens than that does not force a new one on every call.
    pub fn fresh_for(&self, min_valid: u64) -> bool {
        let lifetime = self.valid_until().saturating_sub(self.obtained_at);
        self.valid_for(min_valid.min(lifetime / 2))
    }

    /// Whether it is still valid `secs` seconds from now (no cap).
    pub fn valid_for(&self, secs: u64) -> bool {
        self.valid_until() > now_secs() + secs
    }
}

/// The cache directory of one user, below a base directory the user is
/// trusted with (its cache directory).
pub struct TokenCache {
    base: PathBuf,
    dir: PathBuf,
}

impl TokenCache {
    /// The default directory (see the module doc).
    pub fn open_default() -> Result<TokenCache, ClientError> {
        let dir = super::xdg_dir("XDG_CACHE_HOME", ".cache").ok_or_else(|| {
            ClientError::Usage("no cache directory: set HOME or XDG_CACHE_HOME".into())
        })?;
        Ok(TokenCache {
            dir: dir.join("nats-oidc-callout").join("tokens"),
            base: dir,
        })
    }

    /// A cache in `dir`, whose parent is trusted.
    pub fn at(dir: PathBuf) -> TokenCache {
        let base = dir.parent().map(Path::to_path_buf).unwrap_or_default();
        TokenCache { base, dir }
    }

    /// The file of one issuer and client id: a digest of both, so any
    /// issuer URL and client id make a safe file name.
    pub fn path(&self, issuer: &str, client_id: &str) -> PathBuf {
        let digest = Sha256::digest(format!("{issuer}\n{client_id}").as_bytes());
        let name: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
        self.dir.join(format!("{name}.json"))
    }

    /// The cached tokens of this login, if any. A file that cannot be read
    /// as one is an error (it names the file), not silently replaced.
    pub fn load(&self, issuer: &str, client_id: &str) -> Result<Option<CachedToken>, ClientError> {
        let path = self.path(issuer, client_id);
        let Some(text) = super::read_private(&self.base, &path)? else {
            return Ok(None);
        };
        let token: CachedToken = serde_json::from_str(&text).map_err(|_| {
            ClientError::failed(format!(
                "the token cache {} is damaged: delete it and log in again",
                path.display()
            ))
        })?;
        // A digest collision is not a worry; a file copied by hand is.
        if token.issuer != issuer || token.client_id != client_id {
            return Ok(None);
        }
        Ok(Some(token))
    }

    pub fn store(&self, token: &CachedToken) -> Result<PathBuf, ClientError> {
        let path = self.path(&token.issuer, &token.client_id);
        let text = serde_json::to_vec_pretty(token)
            .map_err(|e| ClientError::failed(format!("cannot encode the token cache: {e}")))?;
        super::write_private(&self.base, &path, &text)?;
        Ok(path)
    }

    /// Forgets a login (a refresh token the provider refused).
    pub fn remove(&self, issuer: &str, client_id: &str) -> Result<(), ClientError> {
        remove_file(&self.path(issuer, client_id))
    }
}

fn remove_file(path: &Path) -> Result<(), ClientError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(ClientError::failed(format!(
            "cannot remove {}: {}",
            path.display(),
            e.kind()
        ))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn token(expires_in: Option<u64>) -> CachedToken {
        CachedToken {
            issuer: "https://id.example.com".into(),
            client_id: "cli".into(),
            access_token: "at".into(),
            token_type: "Bearer".into(),
            obtained_at: now_secs(),
            expires_at: expires_in.map(|s| now_secs() + s),
            refresh_token: Some("rt".into()),
            scope: None,
        }
    }

    #[test]
    fn files_are_private_and_per_login() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::at(dir.path().join("tokens"));
        let path = cache.store(&token(Some(300))).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = std::fs::metadata(dir.path().join("tokens"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert!(cache
            .load("https://id.example.com", "cli")
            .unwrap()
            .is_some());
        assert!(cache
            .load("https://id.example.com", "other")
            .unwrap()
            .is_none());
        let debug = format!("{:?}", cache.load("https://id.example.com", "cli").unwrap());
        assert!(
            !debug.contains("\"at\"") && !debug.contains("rt\""),
            "{debug}"
        );
    }

    #[test]
    fn freshness_keeps_a_margin_of_at_most_half_the_lifetime() {
        assert!(token(Some(300)).fresh_for(60));
        assert!(token(Some(50)).fresh_for(60), "50 s tokens: a 25 s margin");
        assert!(token(Some(6)).fresh_for(60), "6 s tokens: a 3 s margin");
        assert!(!token(Some(0)).fresh_for(0));
        assert!(
            !token(Some(300)).valid_for(3600),
            "no cap when asked exactly"
        );
        assert!(token(None).fresh_for(60));
    }
}
