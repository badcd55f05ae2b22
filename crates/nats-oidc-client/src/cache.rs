//! The token cache: one file per login in
//! `$XDG_CACHE_HOME/nats-oidc-callout/tokens/` (else
//! `~/.cache/nats-oidc-callout/tokens/`), mode 0600 in a 0700 directory,
//! holding what the provider returned and what it was asked for, nothing
//! else: the access token, its type, expiry and scope, and the refresh
//! token.
//!
//! A login is the issuer, the client id, the grant, the scopes, the
//! resource and the audience that obtained the token: a token is handed
//! out again only for exactly the same, so a person's login never answers
//! a machine's `--client-credentials` (nor the reverse), and a token asked
//! for one API never serves another.

use std::path::{Path, PathBuf};

use jsonwebtoken::get_current_timestamp;
use serde::{Deserialize, Serialize};

use super::settings::Settings;
use super::ClientError;

/// Tokens whose expiry the provider did not state (no `expires_in`, no
/// readable `exp`) are taken again for at most this long.
const UNKNOWN_LIFETIME_SECS: u64 = 300;

/// How a token was obtained.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Grant {
    /// A person's login (device flow or browser), renewed by refresh.
    Login,
    /// A machine's client credentials.
    ClientCredentials,
}

/// What a cached token was obtained for (see the module doc).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LoginKey {
    pub issuer: String,
    pub client_id: String,
    pub grant: Grant,
    /// The scopes asked for, sorted, each once.
    pub scopes: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub audience: Option<String>,
}

impl LoginKey {
    pub fn new(settings: &Settings, grant: Grant) -> LoginKey {
        let mut scopes = settings.scopes_for(grant);
        scopes.sort();
        scopes.dedup();
        LoginKey {
            issuer: settings.issuer.clone(),
            client_id: settings.client_id.clone(),
            grant,
            scopes,
            resource: settings.resource.clone(),
            audience: settings.audience.clone(),
        }
    }

    /// The cache file's name: a digest of the whole key, so any issuer URL,
    /// client id or scope makes a safe file name.
    fn file_name(&self) -> String {
        let canonical = serde_json::to_string(self).unwrap_or_default();
        format!("{}.json", super::short_digest(&[canonical.as_bytes()]))
    }

    /// What it is, for messages: "client C at I (grant, scopes ...)".
    pub fn describe(&self) -> String {
        let mut text = format!(
            "client {} at {} ({}, scopes \"{}\"",
            self.client_id,
            self.issuer,
            match self.grant {
                Grant::Login => "login",
                Grant::ClientCredentials => "client credentials",
            },
            self.scopes.join(" ")
        );
        if let Some(r) = &self.resource {
            text.push_str(&format!(", resource {r}"));
        }
        if let Some(a) = &self.audience {
            text.push_str(&format!(", audience {a}"));
        }
        text.push(')');
        text
    }
}

/// One login's tokens, as the provider returned them.
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CachedToken {
    /// Which login this is (not secret).
    #[serde(rename = "for")]
    pub key: LoginKey,
    pub access_token: String,
    pub token_type: String,
    /// When it was obtained and when it expires (Unix seconds), from the
    /// provider's `expires_in` (else the token's own `exp`).
    pub obtained_at: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refresh_token: Option<String>,
    /// The scopes the provider granted, when it said.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub scope: Option<String>,
}

impl std::fmt::Debug for CachedToken {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CachedToken")
            .field("key", &self.key)
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
        self.valid_until() > get_current_timestamp() + secs
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
        let dir = super::dirs::xdg_dir("XDG_CACHE_HOME", ".cache").ok_or_else(|| {
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

    /// The file of one login.
    pub fn path(&self, key: &LoginKey) -> PathBuf {
        self.dir.join(key.file_name())
    }

    /// The cached tokens of exactly this login, if any. A file that cannot
    /// be read as one is an error (it names the file), not silently
    /// replaced.
    pub fn load(&self, key: &LoginKey) -> Result<Option<CachedToken>, ClientError> {
        let path = self.path(key);
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
        if token.key != *key {
            return Ok(None);
        }
        Ok(Some(token))
    }

    pub fn store(&self, token: &CachedToken) -> Result<PathBuf, ClientError> {
        let path = self.path(&token.key);
        let text = serde_json::to_vec_pretty(token)
            .map_err(|e| ClientError::failed(format!("cannot encode the token cache: {e}")))?;
        super::replace_private(&self.base, &path, &text)?;
        Ok(path)
    }

    /// Forgets a login (a refresh token the provider refused).
    pub fn remove(&self, key: &LoginKey) -> Result<(), ClientError> {
        remove_file(&self.path(key))
    }

    /// Every cached login of one client at one issuer, whatever its grant,
    /// scopes or resource (for `logout`), including files an older version
    /// wrote (one per issuer and client id, with `issuer` and `client_id`
    /// at the top). Files of other logins, and files that are not a cache
    /// entry at all, are left alone.
    pub fn logins_of(&self, issuer: &str, client_id: &str) -> Result<Vec<Stored>, ClientError> {
        let mut found = Vec::new();
        for path in super::list_private(&self.base, &self.dir)? {
            if path.extension().is_none_or(|e| e != "json") {
                continue;
            }
            let Some(text) = super::read_private(&self.base, &path)? else {
                continue;
            };
            let Ok(value) = serde_json::from_str::<serde_json::Value>(&text) else {
                continue;
            };
            let of = |v: &serde_json::Value| {
                v["issuer"].as_str() == Some(issuer) && v["client_id"].as_str() == Some(client_id)
            };
            if !(of(&value["for"]) || of(&value)) {
                continue;
            }
            let text_of = |name: &str| value[name].as_str().map(str::to_string);
            found.push(Stored {
                grant: serde_json::from_value(value["for"]["grant"].clone()).ok(),
                access_token: text_of("access_token"),
                refresh_token: text_of("refresh_token"),
                valid_until: value["expires_at"].as_u64(),
                path,
            });
        }
        found.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(found)
    }

    /// Deletes one file `logins_of` found.
    pub fn delete(&self, stored: &Stored) -> Result<(), ClientError> {
        remove_file(&stored.path)
    }
}

/// A cache file of one client, as `logins_of` read it: enough to revoke
/// its tokens and delete it.
pub struct Stored {
    pub path: PathBuf,
    /// None for a file an older version wrote (those were logins).
    pub grant: Option<Grant>,
    pub access_token: Option<String>,
    pub refresh_token: Option<String>,
    pub valid_until: Option<u64>,
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

    fn settings(client_id: &str) -> Settings {
        Settings {
            issuer: "https://id.example.com".into(),
            client_id: client_id.into(),
            client_secret: None,
            scopes: vec!["openid".into(), "offline_access".into(), "nats".into()],
            audience: None,
            resource: Some("urn:nats".into()),
            nats_url: None,
            nats_creds: None,
            redirect_port: 0,
            ca_file: None,
        }
    }

    fn key(client_id: &str, grant: Grant) -> LoginKey {
        LoginKey::new(&settings(client_id), grant)
    }

    #[test]
    fn a_token_serves_only_the_grant_scopes_and_resource_that_got_it() {
        let dir = tempfile::tempdir().unwrap();
        let cache = TokenCache::at(dir.path().join("tokens"));
        cache.store(&token(Some(300))).unwrap();
        assert!(cache.load(&key("cli", Grant::Login)).unwrap().is_some());
        assert!(
            cache
                .load(&key("cli", Grant::ClientCredentials))
                .unwrap()
                .is_none(),
            "a person's login never answers client credentials"
        );
        let mut other = settings("cli");
        other.scopes.push("admin".into());
        assert!(cache
            .load(&LoginKey::new(&other, Grant::Login))
            .unwrap()
            .is_none());
        let mut other = settings("cli");
        other.resource = Some("urn:other".into());
        assert!(cache
            .load(&LoginKey::new(&other, Grant::Login))
            .unwrap()
            .is_none());
        let mut other = settings("cli");
        other.audience = Some("nats".into());
        assert!(cache
            .load(&LoginKey::new(&other, Grant::Login))
            .unwrap()
            .is_none());
        let mut same = settings("cli");
        same.scopes.reverse();
        assert!(
            cache
                .load(&LoginKey::new(&same, Grant::Login))
                .unwrap()
                .is_some(),
            "the order of the scopes does not matter"
        );
        // Client credentials never ask for openid or offline_access.
        assert_eq!(key("cli", Grant::ClientCredentials).scopes, ["nats"]);
        // logout finds every login of the client, whatever it was for.
        let mut machine = token(Some(300));
        machine.key = key("cli", Grant::ClientCredentials);
        cache.store(&machine).unwrap();
        let found = cache.logins_of("https://id.example.com", "cli").unwrap();
        assert_eq!(found.len(), 2);
        assert!(cache
            .logins_of("https://id.example.com", "x")
            .unwrap()
            .is_empty());
    }

    fn token(expires_in: Option<u64>) -> CachedToken {
        CachedToken {
            key: key("cli", Grant::Login),
            access_token: "at".into(),
            token_type: "Bearer".into(),
            obtained_at: get_current_timestamp(),
            expires_at: expires_in.map(|s| get_current_timestamp() + s),
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
        assert!(cache.load(&key("cli", Grant::Login)).unwrap().is_some());
        assert!(cache.load(&key("other", Grant::Login)).unwrap().is_none());
        let debug = format!("{:?}", cache.load(&key("cli", Grant::Login)).unwrap());
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
