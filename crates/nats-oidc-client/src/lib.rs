//! The client side of nats-oidc-callout: getting, caching and refreshing
//! the OIDC access tokens that people and programs present to NATS as their
//! password, and telling them the private inbox prefix their token's user
//! gets.
//!
//! nats-oidc-callout is a NATS auth callout service: nats-server asks it
//! about every connection, and it admits clients whose password is an
//! access token of a trusted OpenID Provider. Its `login`, `token` and
//! `logout` commands are this crate; a program that connects to NATS
//! depends on this crate alone, none of the service's dependencies.
//!
//! Access tokens are never verified here (the service does that) and never
//! logged or printed by this crate.
//!
//! # A token for every connect
//!
//! nats-server asks the callout only at CONNECT, and closes a connection
//! when its token expires; the client then reconnects, and must present a
//! token that is valid *now*. A [`TokenSource`] gives one on every call:
//! from a file another process keeps fresh (a Kubernetes projected
//! service-account token, a sidecar running `nats-oidc-callout token`), or
//! from the provider with client credentials.
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nats_oidc_client::ClientError> {
//! use base64::engine::{general_purpose::URL_SAFE_NO_PAD, Engine};
//! use nats_oidc_client::TokenSource;
//!
//! // A token file, as kubelet or a sidecar writes it.
//! let dir = tempfile::tempdir().unwrap();
//! let path = dir.path().join("token");
//! let claims = URL_SAFE_NO_PAD.encode(r#"{"iss":"https://id.example.com","sub":"ana"}"#);
//! let token = format!("eyJhbGciOiJSUzI1NiJ9.{claims}.c2ln");
//! std::fs::write(&path, format!("{token}\n")).unwrap();
//!
//! let source = TokenSource::file(&path);
//! // Read again on every call: a renewed file is picked up at the next connect.
//! assert_eq!(source.token().await?, token);
//! // The inbox prefix of roles that grant `{{inbox}}.>`, from the token's
//! // issuer and subject: the client's `custom_inbox_prefix`.
//! assert_eq!(
//!     source.inbox_prefix().await?,
//!     "_INBOX.ec8d71ff4bc13f98e4f07601fd36ab38"
//! );
//! # Ok(())
//! # }
//! ```
//!
//! With async-nats, the auth callback asks the source at every connect
//! attempt (examples/token_client.rs is a whole program, operator mode
//! included):
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), Box<dyn std::error::Error>> {
//! use std::sync::Arc;
//! use nats_oidc_client::{settings::NATS_USER, TokenSource};
//!
//! let source = Arc::new(TokenSource::file("/var/run/secrets/nats/token"));
//! let inbox = source.inbox_prefix().await?;
//! let client = async_nats::ConnectOptions::with_auth_callback(move |_nonce| {
//!     let source = source.clone();
//!     async move {
//!         let mut auth = async_nats::Auth::new();
//!         // Any user name: the token goes as the password.
//!         auth.username = Some(NATS_USER.to_string());
//!         auth.password = Some(
//!             source
//!                 .token()
//!                 .await
//!                 .map_err(|e| async_nats::AuthError::new(e.to_string()))?,
//!         );
//!         Ok(auth)
//!     }
//! })
//! .custom_inbox_prefix(inbox)
//! .connect("nats://127.0.0.1:4222")
//! .await?;
//! # Ok(())
//! # }
//! ```
//!
//! # Settings
//!
//! [`Settings`] name one OAuth client at one issuer. [`Settings::resolve`]
//! takes flags and environment variables first ([`SettingsInput`]), then
//! the `[client]` table of the client config file, as the commands do:
//!
//! ```
//! use nats_oidc_client::{Settings, SettingsInput};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let config = dir.path().join("client.toml");
//! std::fs::write(
//!     &config,
//!     "[client]\nissuer = \"https://id.example.com\"\nclient_id = \"cli\"\nresource = \"urn:nats\"\n",
//! )
//! .unwrap();
//! let settings = Settings::resolve(SettingsInput {
//!     config: Some(config),
//!     client_id: Some("reporting".into()), // a flag wins over the file
//!     ..SettingsInput::default()
//! })
//! .unwrap();
//! assert_eq!(settings.issuer, "https://id.example.com");
//! assert_eq!(settings.client_id, "reporting");
//! assert_eq!(settings.scopes, ["openid", "offline_access"]);
//!
//! // A missing setting says where it may come from.
//! let e = Settings::resolve(SettingsInput {
//!     config: Some(dir.path().join("absent.toml")),
//!     ..SettingsInput::default()
//! })
//! .unwrap_err();
//! assert!(e.to_string().contains("cannot read the client config"));
//! ```
//!
//! A machine's [`TokenSource::client_credentials`] keeps its token in
//! memory and asks the provider again when less than `min_valid` seconds
//! of it remain (at most half its lifetime):
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nats_oidc_client::ClientError> {
//! use nats_oidc_client::{Settings, SettingsInput, TokenSource};
//!
//! let settings = Settings::resolve(SettingsInput {
//!     issuer: Some("https://id.example.com".into()),
//!     client_id: Some("reporting".into()),
//!     client_secret: std::env::var("CLIENT_SECRET").ok(),
//!     ..SettingsInput::default()
//! })?;
//! let source = TokenSource::client_credentials(settings, 60)?;
//! let token = source.token().await?;
//! # Ok(())
//! # }
//! ```
//!
//! # People: logins and the token cache
//!
//! [`OidcClient`] runs the exchanges with the provider (discovery, the
//! device flow, the authorization code flow with PKCE and a loopback
//! redirect, refresh, client credentials, revocation); [`TokenCache`]
//! keeps what they return, one private file per login ([`LoginKey`]: the
//! issuer, client, grant, scopes, resource and audience), so a token is
//! handed out again only for exactly what obtained it:
//!
//! ```no_run
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), nats_oidc_client::ClientError> {
//! use nats_oidc_client::{Grant, LoginKey, OidcClient, Settings, SettingsInput, TokenCache};
//!
//! let settings = Settings::resolve(SettingsInput::default())?;
//! let cache = TokenCache::open_default()?;
//! let key = LoginKey::new(&settings, Grant::Login);
//! let token = match cache.load(&key)? {
//!     Some(t) if t.fresh_for(60) => t,
//!     _ => {
//!         let client = OidcClient::new(settings)?;
//!         let t = client
//!             .device_login(|p| eprintln!("open {} and enter {}", p.verification_uri, p.user_code))
//!             .await?;
//!         cache.store(&t)?;
//!         t
//!     }
//! };
//! println!("{}", token.access_token);
//! # Ok(())
//! # }
//! ```
//!
//! The cache at work, without a provider:
//!
//! ```
//! use nats_oidc_client::{CachedToken, Grant, LoginKey, Settings, SettingsInput, TokenCache};
//!
//! let dir = tempfile::tempdir().unwrap();
//! let cache = TokenCache::at(dir.path().join("tokens"));
//! let settings = Settings::resolve(SettingsInput {
//!     config: Some("/dev/null".into()),
//!     issuer: Some("https://id.example.com".into()),
//!     client_id: Some("cli".into()),
//!     ..SettingsInput::default()
//! })
//! .unwrap();
//! let now = jsonwebtoken::get_current_timestamp();
//! let token = CachedToken {
//!     key: LoginKey::new(&settings, Grant::Login),
//!     access_token: "eyJ.e30.c2ln".into(),
//!     token_type: "Bearer".into(),
//!     obtained_at: now,
//!     expires_at: Some(now + 300),
//!     refresh_token: None,
//!     scope: None,
//! };
//! let file = cache.store(&token).unwrap(); // mode 0600, in a 0700 directory
//! let again = cache.load(&LoginKey::new(&settings, Grant::Login)).unwrap().unwrap();
//! assert!(again.fresh_for(60));
//! // A machine's client credentials never get a person's login.
//! assert!(cache.load(&LoginKey::new(&settings, Grant::ClientCredentials)).unwrap().is_none());
//! # let _ = file;
//! ```
//!
//! [`nats_context`] writes `nats` CLI contexts that log in with a token;
//! [`inbox`] computes a user's private inbox prefix; [`creds`] reads the
//! `.creds` file of operator mode's sentinel.

#![warn(unreachable_pub)]

mod ca;
pub mod cache;
mod claims;
pub mod creds;
pub mod dirs;
pub mod inbox;
mod loopback;
pub mod nats_context;
pub mod oauth;
pub mod pem;
mod private_dir;
pub mod settings;
pub mod source;
pub mod text;

pub use cache::{CachedToken, Grant, LoginKey, TokenCache};
pub use oauth::OidcClient;
pub use settings::{Settings, SettingsInput};
pub use source::TokenSource;

/// Why a client-side step failed: one line, never a token or a secret.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Settings are missing or wrong (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// The provider, the network or the file system said no (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl ClientError {
    pub(crate) fn failed(text: impl Into<String>) -> Self {
        ClientError::Failed(text.into())
    }
}

/// The first 16 bytes of the SHA-256 of `parts` (one after the other), as
/// 32 lowercase hex digits: a cache file's name, an inbox prefix.
pub(crate) fn short_digest(parts: &[&[u8]]) -> String {
    use sha2::{Digest, Sha256};
    let mut digest = Sha256::new();
    for part in parts {
        digest.update(part);
    }
    digest.finalize()[..16]
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// Writes `bytes` to `path` readable by its owner only (0600), replacing it
/// atomically (a temporary file in the same directory, renamed over it), so
/// a reader never sees half a file. Every directory below `base` on the way
/// is made, or checked to be, this user's alone (see `private_dir`).
pub(crate) fn replace_private(
    base: &std::path::Path,
    path: &std::path::Path,
    bytes: &[u8],
) -> Result<(), ClientError> {
    use std::io::Write;
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::failed(format!("{} has no directory", path.display())))?;
    private_dir::secure_dir(base, dir, true)?;
    let fail = |e: std::io::Error| {
        ClientError::failed(format!("cannot write {}: {}", path.display(), e.kind()))
    };
    // tempfile creates the file with mode 0600.
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    file.write_all(bytes).map_err(fail)?;
    file.as_file().sync_all().map_err(fail)?;
    file.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}

/// Reads a secret file, when it is there, through directories below `base`
/// that are this user's alone.
pub(crate) fn read_private(
    base: &std::path::Path,
    path: &std::path::Path,
) -> Result<Option<String>, ClientError> {
    let dir = path
        .parent()
        .ok_or_else(|| ClientError::failed(format!("{} has no directory", path.display())))?;
    if !private_dir::secure_dir(base, dir, false)? || !private_dir::check_file(path)? {
        return Ok(None);
    }
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(Some(t)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ClientError::failed(format!(
            "cannot read {}: {}",
            path.display(),
            e.kind()
        ))),
    }
}

/// The entries of a directory of secrets, when it is there, checked as
/// `read_private` checks the directories on the way.
pub(crate) fn list_private(
    base: &std::path::Path,
    dir: &std::path::Path,
) -> Result<Vec<std::path::PathBuf>, ClientError> {
    if !private_dir::secure_dir(base, dir, false)? {
        return Ok(Vec::new());
    }
    let entries = std::fs::read_dir(dir)
        .map_err(|e| ClientError::failed(format!("cannot read {}: {}", dir.display(), e.kind())))?;
    Ok(entries.filter_map(Result::ok).map(|e| e.path()).collect())
}
