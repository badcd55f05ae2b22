//! The TOML configuration: parsed strictly (unknown keys are errors), then
//! validated into the typed [`Config`] the service runs on. Every error names
//! the file, the key and the reason, and never contains a secret.
//!
//! `raw` is the file's shape, `validate` (with `oidc` and `roles`) turns it
//! into this module's model, built from the settings types of the layers
//! below, and `redact` reports syntax errors without echoing values.

mod bindings;
mod jetstream;
mod oidc;
mod raw;
mod redact;
mod roles;
mod validate;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::authorize::{self, Authorizer, TrustedIssuers};
use crate::callout::{self, Callout};
use crate::metrics::Metrics;
use crate::oidc::discovery::FetchError;
use crate::oidc::settings::Settings;
use crate::oidc::Issuers;
use crate::policy::layout::JetStreamAccount;
use crate::policy::mapping::ClaimMapping;
use crate::policy::roles::RoleTable;
use crate::policy::users::ConfigUser;
use crate::secrets;
use raw::RawConfig;
use sha2::Digest;
use validate::Validator;

pub const DEFAULT_CONFIG_PATH: &str = "/etc/nats-oidc-callout/config.toml";
pub const CONFIG_ENV: &str = "NATS_OIDC_CALLOUT_CONFIG";
pub const ISSUER_SEED_ENV: &str = "NATS_OIDC_CALLOUT_ISSUER_SEED";
pub const XKEY_SEED_ENV: &str = "NATS_OIDC_CALLOUT_XKEY_SEED";

/// Accepts a bearer token far larger than real ones (Entra ID and Keycloak
/// tokens with many groups reach several KiB) while bounding the work an
/// attacker can make us do.
pub const DEFAULT_MAX_TOKEN_BYTES: usize = 64 * 1024;
/// Verified tokens remembered, counted by their length: 8 MiB holds ~8,000
/// typical 1 KiB access tokens, every client of a sizeable deployment
/// reconnecting after a nats-server restart.
pub const DEFAULT_TOKEN_CACHE_BYTES: u64 = 8 * 1024 * 1024;
pub const MAX_TOKEN_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("config {file}: {key}: {reason}")]
pub struct ConfigError {
    pub file: PathBuf,
    pub key: String,
    pub reason: String,
}

/// The validated configuration.
#[derive(Clone)]
pub struct Config {
    pub source: PathBuf,
    /// SHA-256 of the text this config was parsed from: a reload compares
    /// the file with what is running, not with what the file held when the
    /// watch began (an edit between the two would never apply).
    pub digest: [u8; 32],
    pub nats: NatsConfig,
    pub callout: CalloutConfig,
    /// The trusted issuers, in config order: one `[oidc]` table or several
    /// `[[oidc]]` blocks. A token is routed to one of them by its `iss`.
    pub oidc: Vec<IssuerConfig>,
    pub http: Option<HttpConfig>,
    pub roles: Arc<RoleTable>,
    /// `[users.*]`: service accounts and fixed identities, beside OIDC.
    pub users: Vec<ConfigUser>,
    pub grants: GrantsConfig,
    /// `[jetstream]`: where the streams and buckets of the grants live.
    pub jetstream: Option<JetStreamAccount>,
    /// `[revocation]`: ending sessions before their tokens expire.
    pub revocation: RevocationConfig,
    /// Files holding secrets (seeds, creds), by config key, so their
    /// permissions can be reported.
    pub secret_files: Vec<(String, PathBuf)>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NatsConfig {
    pub urls: Vec<String>,
    pub auth: NatsAuth,
    pub queue_group: String,
    pub name: String,
    /// `[nats.tls]`, if set.
    pub tls: Option<crate::tls::NatsTls>,
}

/// How the callout service itself authenticates to NATS. Secrets are kept out
/// of `Debug` output.
#[derive(Clone)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: String },
    Token(String),
    NkeySeed(Arc<nkeys::KeyPair>),
    CredsFile(PathBuf),
}

impl PartialEq for NatsAuth {
    fn eq(&self, other: &Self) -> bool {
        use NatsAuth::*;
        match (self, other) {
            (None, None) => true,
            (
                UserPassword { user, password },
                UserPassword {
                    user: u2,
                    password: p2,
                },
            ) => user == u2 && password == p2,
            (Token(a), Token(b)) => a == b,
            (NkeySeed(a), NkeySeed(b)) => a.public_key() == b.public_key(),
            (CredsFile(a), CredsFile(b)) => a == b,
            _ => false,
        }
    }
}

impl Eq for NatsAuth {}

impl std::fmt::Debug for NatsAuth {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            NatsAuth::None => write!(f, "none"),
            NatsAuth::UserPassword { user, .. } => write!(f, "user {user:?} with password"),
            NatsAuth::Token(_) => write!(f, "token"),
            NatsAuth::NkeySeed(_) => write!(f, "nkey"),
            NatsAuth::CredsFile(p) => write!(f, "creds file {}", secrets::shown(p)),
        }
    }
}

#[derive(Clone)]
pub struct CalloutConfig {
    /// Signs authorization responses: the callout account's key (in server
    /// mode also the user JWTs; its public key is `auth_callout.issuer`),
    /// or in operator mode one of the callout account's signing keys.
    pub issuer: Arc<crate::nats::signing_key::SigningKey>,
    /// The callout account's public key.
    pub auth_account: String,
    pub xkey: Option<Arc<crate::nats::xkey::OurXkey>>,
    /// The account users land in when their roles name none.
    pub account: String,
    /// Server mode: the callout's own account by name
    /// (`callout.auth_account`, nats.conf's `auth_callout.account`).
    pub auth_account_name: Option<String>,
    pub max_user_ttl: Duration,
    pub max_token_bytes: usize,
    pub mode: callout::Mode,
}

impl CalloutConfig {
    /// Whether the account roles name `name` is the callout's own account:
    /// `None` when the config cannot tell (server mode without
    /// `callout.auth_account`).
    pub fn is_callout_account(&self, name: &str) -> Option<bool> {
        match &self.mode {
            callout::Mode::Server => self.auth_account_name.as_deref().map(|a| a == name),
            callout::Mode::Operator { accounts } => Some(
                accounts
                    .get(name)
                    .is_some_and(|a| a.public_key == self.auth_account),
            ),
        }
    }
}

/// The environment variable that overrides `[callout.accounts.<name>]`'s
/// signing key seed: `NATS_OIDC_CALLOUT_ACCOUNT_SEED_<NAME>`, the name in
/// capitals with every other character than a letter or digit as `_`.
pub fn account_seed_env(name: &str) -> String {
    let name: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_uppercase()
            } else {
                '_'
            }
        })
        .collect();
    format!("NATS_OIDC_CALLOUT_ACCOUNT_SEED_{name}")
}

/// One trusted issuer: how its tokens are verified, and how its claims are
/// read.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct IssuerConfig {
    pub settings: Arc<Settings>,
    pub claims: ClaimMapping,
}

/// Grant sources beyond the role table, and scoped connections.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GrantsConfig {
    /// A NATS KV bucket of per-user grants, watched for changes.
    pub kv_bucket: Option<String>,
    /// The most scopes one connect may ask for.
    pub max_requested_scopes: usize,
}

pub const DEFAULT_MAX_REQUESTED_SCOPES: usize = 64;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HttpConfig {
    pub listen: SocketAddr,
}

/// `[revocation]`; each part is off unless its key is set.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RevocationConfig {
    /// The KV bucket of the revocation list; set, it turns revocation on.
    pub kv_bucket: Option<String>,
    /// How long an entry of the list lasts; tokens that live longer are
    /// refused while revocation is on, so that no token outlives the entry
    /// that covers it.
    pub max_token_lifetime: std::time::Duration,
    /// A login in the system account, to find and close the connections a
    /// revocation covers (`CONNZ`, `KICK`); without it revocations refuse
    /// reconnects only.
    pub system_login: Option<NatsAuth>,
    /// Where OpenID Connect back-channel logouts are received
    /// (`POST /backchannel-logout`), on a listener of its own so that the
    /// provider can reach it without reaching `/metrics`.
    pub backchannel_listen: Option<SocketAddr>,
    /// A subject of the service's own account where an admin's revocation
    /// requests are answered; only the admin may publish to it (nats-server's
    /// permissions say so, not the service).
    pub request_subject: Option<String>,
}

impl RevocationConfig {
    /// The session registry's bucket: the connections replicas admitted,
    /// which revocations close (with a system-account login only).
    pub fn sessions_bucket(&self) -> Option<String> {
        self.system_login
            .as_ref()
            .and(self.kv_bucket.as_ref())
            .map(|bucket| format!("{bucket}_sessions"))
    }
}

/// The config path: the command-line flag, else the environment, else the
/// documented default.
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
}

/// The text as the file's serde shape (`raw`), its errors redacted.
fn parse_raw(text: &str, path: &Path) -> Result<RawConfig, ConfigError> {
    toml::from_str(text).map_err(|e| {
        let (key, reason) = redact::describe_toml_error(&e, text);
        ConfigError {
            file: path.to_path_buf(),
            key,
            reason,
        }
    })
}

impl Config {
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: path.to_path_buf(),
            key: "(file)".into(),
            reason: format!("cannot read: {e}"),
        })?;
        Config::parse(&text, path)
    }

    /// Parses config text; `path` is used in messages and to resolve relative
    /// file references against the config's directory.
    pub fn parse(text: &str, path: &Path) -> Result<Config, ConfigError> {
        let raw = parse_raw(text, path)?;
        let mut config = Validator::new(path).validate(raw)?;
        config.digest = sha2::Sha256::digest(text.as_bytes()).into();
        Ok(config)
    }

    /// The first step of [`Config::parse`] alone: the text's syntax, its
    /// keys (an unknown one is an error) and the types of their values,
    /// with the same messages; nothing further is validated and no file is
    /// read. For fragments, as the book's snippets are (tests/docs.rs).
    pub fn parse_shape(text: &str, path: &Path) -> Result<(), ConfigError> {
        parse_raw(text, path).map(drop)
    }

    /// Every key a config file may hold, as paths (`nats.url`,
    /// `roles.<name>.pub.allow`, `bindings[].issuer`), read from the parser
    /// itself: a key added to the parser is a key here.
    pub fn keys() -> Vec<String> {
        raw::keys()
    }

    /// Whether `name` names an `[oidc]` block: an admin's revocation of
    /// another name would sit in the list and cover nothing. The error
    /// lists the names there are.
    pub fn check_issuer_name(&self, name: &str) -> Result<(), String> {
        let names: Vec<String> = self.oidc.iter().map(|o| o.settings.name.clone()).collect();
        if names.iter().any(|n| n == name) {
            return Ok(());
        }
        Err(format!(
            "no [oidc] block of that name; the config has {}",
            crate::text::summarize(&names)
        ))
    }

    /// Every account users may be placed in: `callout.account` and each
    /// one a role or a `[users.*]` entry names.
    pub fn users_accounts(&self) -> std::collections::BTreeSet<String> {
        let mut out = std::collections::BTreeSet::from([self.callout.account.clone()]);
        out.extend(self.roles.iter().filter_map(|(_, r)| r.account.clone()));
        for user in &self.users {
            if let crate::policy::users::Grant::Fixed(own) = &user.grant {
                out.extend(own.iter().filter_map(|(_, r)| r.account.clone()));
            }
        }
        out
    }

    /// The imports and exports that let users reach the streams of
    /// `[jetstream]` from their own accounts.
    pub fn layout(&self) -> Option<crate::policy::layout::Layout> {
        let js = self.jetstream.as_ref()?;
        let mut accounts = self.users_accounts();
        // Never the callout's own account: nothing of the streams belongs
        // there.
        accounts.retain(|a| self.callout.is_callout_account(a) != Some(true));
        Some(crate::policy::layout::Layout::of(
            &self.roles,
            &self.callout.account,
            &accounts,
            js,
        ))
    }

    /// Secret files anyone on the host can read, by config key. Reported by
    /// `check` and logged at startup and on reload.
    pub fn exposed_secrets(&self) -> Vec<String> {
        self.secret_files
            .iter()
            .filter_map(|(key, path)| secrets::exposure(path).map(|e| format!("{key}: {e}")))
            .collect()
    }

    /// The trusted issuers; those whose settings are unchanged since
    /// `previous` keep its keys.
    pub fn issuers(
        &self,
        previous: Option<&TrustedIssuers>,
        metrics: &Arc<Metrics>,
    ) -> Result<TrustedIssuers, FetchError> {
        Issuers::build(
            self.oidc
                .iter()
                .map(|o| (o.settings.clone(), o.claims.clone())),
            self.callout.max_token_bytes,
            previous,
            metrics,
        )
    }

    /// The decision this config describes, verifying with `issuers`, with
    /// what outlives reloads in `shared`.
    pub fn authorizer(&self, issuers: TrustedIssuers, shared: authorize::Shared) -> Authorizer {
        Authorizer::new(
            issuers,
            self.roles.clone(),
            &self.users,
            shared,
            authorize::Settings {
                account: self.callout.account.clone(),
                max_user_ttl: self.callout.max_user_ttl,
                max_requested_scopes: self.grants.max_requested_scopes,
            },
        )
    }

    /// The wire edge around `authorizer`, answering with this config's keys.
    pub fn callout(&self, authorizer: Authorizer) -> Callout {
        Callout::new(
            authorizer,
            callout::Keys {
                issuer: self.callout.issuer.clone(),
                auth_account: self.callout.auth_account.clone(),
                xkey: self.callout.xkey.clone(),
                mode: self.callout.mode.clone(),
            },
        )
    }
}
