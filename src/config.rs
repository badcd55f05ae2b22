//! The TOML configuration: parsed strictly (unknown keys are errors), then
//! validated into the typed [`Config`] the service runs on. Every error names
//! the file, the key and the reason, and never contains a secret.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use jsonwebtoken::Algorithm;
use serde::Deserialize;

use crate::claims::{ClaimPath, EmailVerified};
use crate::identities::{check_bcrypt_hash, ConfigUser, Credential, Grant};
use crate::permissions::{Direction, Role, RoleTable};
use crate::secrets::{self, SeedKind};
use crate::subject::check_permission_subject;
use crate::subject_template::{is_template, SubjectTemplate};

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
const MAX_TOKEN_CACHE_BYTES: u64 = 1024 * 1024 * 1024;

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
    pub nats: NatsConfig,
    pub callout: CalloutConfig,
    /// The trusted issuers, in config order: one `[oidc]` table or several
    /// `[[oidc]]` blocks. A token is routed to one of them by its `iss`.
    pub oidc: Vec<Arc<OidcConfig>>,
    pub http: Option<HttpConfig>,
    pub roles: Arc<RoleTable>,
    /// `[users.*]`: service accounts and fixed identities, beside OIDC.
    pub users: Vec<ConfigUser>,
    pub grants: GrantsConfig,
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
}

/// How the callout service itself authenticates to NATS. Secrets are kept out
/// of `Debug` output.
#[derive(Clone, PartialEq, Eq)]
pub enum NatsAuth {
    None,
    UserPassword { user: String, password: String },
    Token(String),
    NkeySeed(String),
    CredsFile(PathBuf),
}

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
    /// Account key pair that signs user JWTs and authorization responses; its
    /// public key is `auth_callout.issuer` in nats-server.
    pub issuer: Arc<nkeys::KeyPair>,
    pub xkey: Option<Arc<nkeys::XKey>>,
    pub account: String,
    pub max_user_ttl: Duration,
    pub max_token_bytes: usize,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OidcConfig {
    /// Names the issuer in logs, metrics and `explain`.
    pub name: String,
    /// Token roles of this issuer are looked up as `[roles."<namespace>:<role>"]`;
    /// `None` looks them up as written. Separate namespaces keep one identity
    /// provider from minting another's roles.
    pub role_namespace: Option<String>,
    pub issuer: String,
    pub discovery_url: String,
    pub audience: Vec<String>,
    pub algorithms: Vec<Algorithm>,
    pub leeway: Duration,
    pub roles_claim: ClaimPath,
    pub user_claim: ClaimPath,
    pub email_verified: EmailVerified,
    pub jwks_max_age: Duration,
    pub jwks_refetch_cooldown: Duration,
    pub http_timeout: Duration,
    pub max_response_bytes: usize,
    pub token_cache_bytes: u64,
    /// The claim listing the scopes a user is entitled to, if any.
    pub scopes_claim: Option<ClaimPath>,
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

// ---- raw TOML shape -------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default)]
    nats: RawNats,
    callout: RawCallout,
    oidc: RawOidcs,
    http: Option<RawHttp>,
    #[serde(default)]
    roles: BTreeMap<String, RawRole>,
    #[serde(default)]
    users: BTreeMap<String, RawUser>,
    grants: Option<RawGrants>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawGrants {
    kv_bucket: Option<String>,
    max_requested_scopes: Option<usize>,
}

/// `[users.<name>]`: an identity defined here rather than by an issuer.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUser {
    password_bcrypt: Option<String>,
    nkey: Option<String>,
    roles: Option<Vec<String>>,
    #[serde(rename = "pub")]
    publish: Option<RawDirection>,
    #[serde(rename = "sub")]
    subscribe: Option<RawDirection>,
    account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawNats {
    url: Option<OneOrMany>,
    user: Option<String>,
    password: Option<String>,
    token: Option<String>,
    nkey_seed_file: Option<PathBuf>,
    creds_file: Option<PathBuf>,
    queue_group: Option<String>,
    name: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCallout {
    issuer_seed_file: Option<PathBuf>,
    issuer_seed: Option<String>,
    xkey_seed_file: Option<PathBuf>,
    xkey_seed: Option<String>,
    account: String,
    max_user_ttl: Option<String>,
    max_token_bytes: Option<usize>,
}

/// `[oidc]` (one issuer) or `[[oidc]]` (several). Dispatching on the TOML
/// shape by hand, instead of `serde(untagged)`, keeps the precise message
/// and position of an error inside a block.
enum RawOidcs {
    One(Box<RawOidc>),
    Many(Vec<RawOidc>),
}

impl<'de> Deserialize<'de> for RawOidcs {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Shape;
        impl<'de> serde::de::Visitor<'de> for Shape {
            type Value = RawOidcs;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("an [oidc] table or [[oidc]] blocks")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<RawOidcs, A::Error> {
                RawOidc::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(|one| RawOidcs::One(Box::new(one)))
            }
            fn visit_seq<A: serde::de::SeqAccess<'de>>(self, seq: A) -> Result<RawOidcs, A::Error> {
                Vec::<RawOidc>::deserialize(serde::de::value::SeqAccessDeserializer::new(seq))
                    .map(RawOidcs::Many)
            }
        }
        d.deserialize_any(Shape)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOidc {
    name: Option<String>,
    role_namespace: Option<String>,
    issuer: String,
    discovery_url: Option<String>,
    audience: OneOrMany,
    algorithms: Option<Vec<String>>,
    leeway: Option<String>,
    roles_claim: String,
    user_claim: Option<String>,
    email_verified: Option<String>,
    jwks_max_age: Option<String>,
    jwks_refetch_cooldown: Option<String>,
    http_timeout: Option<String>,
    max_response_bytes: Option<usize>,
    token_cache_bytes: Option<u64>,
    scopes_claim: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    listen: String,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawRole {
    #[serde(rename = "pub", default)]
    publish: RawDirection,
    #[serde(rename = "sub", default)]
    subscribe: RawDirection,
    account: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct RawDirection {
    #[serde(default)]
    allow: Vec<String>,
    #[serde(default)]
    deny: Vec<String>,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

// ---- loading --------------------------------------------------------------

/// The config path: the command-line flag, else the environment, else the
/// documented default.
pub fn resolve_path(flag: Option<PathBuf>) -> PathBuf {
    flag.or_else(|| std::env::var_os(CONFIG_ENV).map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from(DEFAULT_CONFIG_PATH))
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
        let raw: RawConfig = toml::from_str(text).map_err(|e| {
            let (key, reason) = describe_toml_error(&e, text);
            ConfigError {
                file: path.to_path_buf(),
                key,
                reason,
            }
        })?;
        Validator {
            path,
            secret_files: Default::default(),
        }
        .validate(raw)
    }
}

/// Where a TOML error is ("line L, column C", plus the key written on that
/// line) and why, without ever echoing a value: the value at fault may be a
/// seed, a password or a token (an unquoted seed is a syntax error whose
/// span is the seed itself).
fn describe_toml_error(e: &toml::de::Error, text: &str) -> (String, String) {
    let Some(span) = e.span() else {
        return ("(syntax)".into(), redact_values(e.message()));
    };
    let before = text.get(..span.start).unwrap_or("");
    let line_no = before.matches('\n').count() + 1;
    let column = before.len() - before.rfind('\n').map_or(0, |i| i + 1) + 1;
    let line = text.lines().nth(line_no - 1).unwrap_or("");
    // The key or table header written on the line helps find the place, but
    // a seed pasted there (as a key, or as a broken header) must not be shown.
    let key = line
        .split_once('=')
        .map(|(k, _)| k.trim())
        .filter(|k| !k.is_empty() && k.len() <= 60)
        .or_else(|| Some(line.trim()).filter(|l| l.starts_with('[') && l.len() <= 60))
        .filter(|k| !secrets::has_seed_shape(k));
    let place = match key {
        Some(k) => format!("line {line_no}, column {column} ({k})"),
        None => format!("line {line_no}, column {column}"),
    };
    (place, redact_values(e.message()))
}

/// Replaces `quoted` values in a TOML message, keeping field names from
/// "unknown field" and "missing field" messages, which are useful and safe.
fn redact_values(message: &str) -> String {
    if message.starts_with("unknown field") || message.starts_with("missing field") {
        // The unknown field's name is the input's: a seed pasted as a key.
        if !secrets::has_seed_shape(message) {
            return message.to_string();
        }
    }
    // Split on backticks: odd pieces were quoted. Punctuation such as `=`
    // is kept; anything longer is replaced.
    message
        .split('`')
        .enumerate()
        .map(|(i, piece)| match (i % 2, piece.chars().count()) {
            (0, _) => piece.to_string(),
            (_, n) if n <= 2 => format!("`{piece}`"),
            _ => "`<value>`".to_string(),
        })
        .collect()
}

struct Validator<'a> {
    path: &'a Path,
    secret_files: std::cell::RefCell<Vec<(String, PathBuf)>>,
}

impl Validator<'_> {
    fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Relative paths in the config are relative to the config file, so a
    /// mounted directory works wherever it is mounted.
    fn resolve_secret(&self, key: &str, p: &Path) -> PathBuf {
        let file = self.resolve(p);
        self.secret_files
            .borrow_mut()
            .push((key.to_string(), file.clone()));
        file
    }

    fn resolve(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            p.to_path_buf()
        } else {
            self.path
                .parent()
                .map(|d| d.join(p))
                .unwrap_or_else(|| p.to_path_buf())
        }
    }

    fn duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
    ) -> Result<Duration, ConfigError> {
        match value {
            None => Ok(default),
            Some(v) => humantime::parse_duration(v).map_err(|e| {
                self.err(
                    key,
                    format!("{v:?} is not a duration like \"30s\" or \"1h\": {e}"),
                )
            }),
        }
    }

    fn validate(&self, raw: RawConfig) -> Result<Config, ConfigError> {
        let nats = self.nats(raw.nats)?;
        let callout = self.callout(raw.callout)?;
        let oidc = self.issuers(raw.oidc)?;
        let http = match raw.http {
            None => None,
            Some(h) => Some(HttpConfig {
                listen: h.listen.parse().map_err(|e| {
                    self.err(
                        "http.listen",
                        format!("{:?} is not an address like 127.0.0.1:8080: {e}", h.listen),
                    )
                })?,
            }),
        };
        let roles = self.roles(raw.roles, &oidc)?;
        let users = self.users(raw.users, &roles)?;
        let grants = self.grants(raw.grants)?;
        Ok(Config {
            source: self.path.to_path_buf(),
            nats,
            callout,
            oidc: oidc.into_iter().map(Arc::new).collect(),
            http,
            roles: Arc::new(roles),
            users,
            grants,
            secret_files: self.secret_files.take(),
        })
    }

    fn nats(&self, raw: RawNats) -> Result<NatsConfig, ConfigError> {
        let urls = raw
            .url
            .map(OneOrMany::into_vec)
            .unwrap_or_else(|| vec!["nats://127.0.0.1:4222".into()]);
        if urls.is_empty() {
            return Err(self.err("nats.url", "needs at least one server url"));
        }
        for u in &urls {
            if u.trim().is_empty() || u.contains(char::is_whitespace) {
                return Err(self.err("nats.url", format!("{u:?} is not a server url")));
            }
        }
        let mut methods = Vec::new();
        if raw.user.is_some() || raw.password.is_some() {
            methods.push("user/password");
        }
        if raw.token.is_some() {
            methods.push("token");
        }
        if raw.nkey_seed_file.is_some() {
            methods.push("nkey_seed_file");
        }
        if raw.creds_file.is_some() {
            methods.push("creds_file");
        }
        if methods.len() > 1 {
            return Err(self.err(
                "nats",
                format!(
                    "choose one way to authenticate, found {}",
                    methods.join(" and ")
                ),
            ));
        }
        let auth = if let Some(user) = raw.user {
            let password = raw
                .password
                .ok_or_else(|| self.err("nats.password", "required with nats.user"))?;
            NatsAuth::UserPassword { user, password }
        } else if raw.password.is_some() {
            return Err(self.err("nats.user", "required with nats.password"));
        } else if let Some(token) = raw.token {
            NatsAuth::Token(token)
        } else if let Some(file) = raw.nkey_seed_file {
            let file = self.resolve_secret("nats.nkey_seed_file", &file);
            let seed = secrets::read_seed_file(&file, SeedKind::User)
                .map_err(|reason| self.err("nats.nkey_seed_file", reason))?;
            NatsAuth::NkeySeed(seed)
        } else if let Some(file) = raw.creds_file {
            let file = self.resolve_secret("nats.creds_file", &file);
            std::fs::metadata(&file).map_err(|e| {
                self.err("nats.creds_file", format!("{}: {e}", secrets::shown(&file)))
            })?;
            NatsAuth::CredsFile(file)
        } else {
            NatsAuth::None
        };
        let queue_group = raw
            .queue_group
            .unwrap_or_else(|| "nats-oidc-callout".into());
        if queue_group.is_empty() || queue_group.contains(char::is_whitespace) {
            return Err(self.err(
                "nats.queue_group",
                "must be a non-empty name without spaces",
            ));
        }
        Ok(NatsConfig {
            urls,
            auth,
            queue_group,
            name: raw.name.unwrap_or_else(|| "nats-oidc-callout".into()),
        })
    }

    fn callout(&self, raw: RawCallout) -> Result<CalloutConfig, ConfigError> {
        let issuer_seed = self.seed(
            "callout.issuer_seed",
            raw.issuer_seed_file.as_deref(),
            raw.issuer_seed,
            ISSUER_SEED_ENV,
            SeedKind::Account,
        )?
        .ok_or_else(|| {
            self.err(
                "callout.issuer_seed_file",
                format!("required: the account seed (SA...) whose public key is auth_callout.issuer in nats-server (or set {ISSUER_SEED_ENV})"),
            )
        })?;
        let issuer = nkeys::KeyPair::from_seed(&issuer_seed)
            .map_err(|_| self.err("callout.issuer_seed", "not a valid account seed"))?;
        let xkey = match self.seed(
            "callout.xkey_seed",
            raw.xkey_seed_file.as_deref(),
            raw.xkey_seed,
            XKEY_SEED_ENV,
            SeedKind::Curve,
        )? {
            None => None,
            Some(seed) => {
                Some(Arc::new(nkeys::XKey::from_seed(&seed).map_err(|_| {
                    self.err("callout.xkey_seed", "not a valid curve seed")
                })?))
            }
        };
        if raw.account.is_empty() || raw.account.contains(char::is_whitespace) {
            return Err(self.err(
                "callout.account",
                "must name the NATS account users are placed in",
            ));
        }
        let max_user_ttl = self.duration(
            "callout.max_user_ttl",
            raw.max_user_ttl.as_deref(),
            Duration::from_secs(3600),
        )?;
        if max_user_ttl < Duration::from_secs(1)
            || max_user_ttl > Duration::from_secs(30 * 24 * 3600)
        {
            return Err(self.err("callout.max_user_ttl", "must be between 1s and 30 days"));
        }
        let max_token_bytes = raw.max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(1024..=1024 * 1024).contains(&max_token_bytes) {
            return Err(self.err(
                "callout.max_token_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        Ok(CalloutConfig {
            issuer: Arc::new(issuer),
            xkey,
            account: raw.account,
            max_user_ttl,
            max_token_bytes,
        })
    }

    /// One seed: the environment variable if set (it overrides the file, so
    /// a container can inject the seed), else exactly one of file and inline.
    fn seed(
        &self,
        key: &str,
        file: Option<&Path>,
        inline: Option<String>,
        env: &str,
        kind: SeedKind,
    ) -> Result<Option<String>, ConfigError> {
        if let Some(v) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
            return secrets::check_seed(v.trim(), kind)
                .map(Some)
                .map_err(|reason| self.err(env, reason));
        }
        match (file, inline) {
            (Some(_), Some(_)) => {
                Err(self.err(key, format!("set either {key}_file or {key}, not both")))
            }
            (Some(file), None) => {
                let file = self.resolve_secret(&format!("{key}_file"), file);
                secrets::read_seed_file(&file, kind)
                    .map(Some)
                    .map_err(|reason| self.err(&format!("{key}_file"), reason))
            }
            (None, Some(v)) => secrets::check_seed(v.trim(), kind)
                .map(Some)
                .map_err(|reason| self.err(key, reason)),
            (None, None) => Ok(None),
        }
    }

    fn issuers(&self, raw: RawOidcs) -> Result<Vec<OidcConfig>, ConfigError> {
        let blocks = match raw {
            RawOidcs::One(raw) => {
                let name = raw.name.clone().unwrap_or_else(|| "default".into());
                self.issuer_name("oidc.name", &name)?;
                let namespace =
                    self.namespace("oidc.role_namespace", raw.role_namespace.clone())?;
                return Ok(vec![self.oidc("oidc", name, namespace, *raw)?]);
            }
            RawOidcs::Many(blocks) => blocks,
        };
        if blocks.is_empty() {
            return Err(self.err("oidc", "needs at least one [[oidc]] block"));
        }
        let mut issuers: Vec<OidcConfig> = Vec::new();
        for (i, raw) in blocks.into_iter().enumerate() {
            let name = raw.name.clone().ok_or_else(|| {
                self.err(
                    &format!("oidc[{i}].name"),
                    "required in [[oidc]] blocks: it names the issuer in logs and metrics and is the default role_namespace",
                )
            })?;
            self.issuer_name(&format!("oidc[{i}].name"), &name)?;
            let at = format!("oidc[{name}]");
            // Each issuer gets its own role namespace unless the config says
            // otherwise: a partner's identity provider must not be able to
            // mint this organisation's roles by naming them.
            let namespace = match raw.role_namespace.clone() {
                None => Some(name.clone()),
                Some(ns) => self.namespace(&format!("{at}.role_namespace"), Some(ns))?,
            };
            let oidc = self.oidc(&at, name, namespace, raw)?;
            if let Some(other) = issuers.iter().find(|o| o.name == oidc.name) {
                return Err(self.err(
                    &format!("{at}.name"),
                    format!("{:?} names two [[oidc]] blocks", other.name),
                ));
            }
            if let Some(other) = issuers
                .iter()
                .find(|o| o.role_namespace.is_some() && o.role_namespace == oidc.role_namespace)
            {
                return Err(self.err(
                    &format!("{at}.role_namespace"),
                    format!(
                        "{:?} is also the role namespace of oidc[{}]: each issuer's roles are its own (role_namespace = \"\" shares the plain table on purpose)",
                        oidc.role_namespace.as_deref().unwrap_or_default(),
                        other.name
                    ),
                ));
            }
            if let Some(other) = issuers.iter().find(|o| o.issuer == oidc.issuer) {
                return Err(self.err(
                    &format!("{at}.issuer"),
                    format!(
                        "{:?} is also the issuer of oidc[{}]: a token must route to exactly one block",
                        oidc.issuer, other.name
                    ),
                ));
            }
            issuers.push(oidc);
        }
        Ok(issuers)
    }

    fn issuer_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        check_name(name).map_err(|r| self.err(key, r))?;
        if name == crate::authorizer::CONFIG_ISSUER {
            return Err(self.err(
                key,
                "\"config\" names the [users.*] identities in logs and KV grant keys; choose another name",
            ));
        }
        Ok(())
    }

    /// `""` means the shared table (roles looked up as written).
    fn namespace(&self, key: &str, raw: Option<String>) -> Result<Option<String>, ConfigError> {
        match raw {
            None => Ok(None),
            Some(ns) if ns.is_empty() => Ok(None),
            Some(ns) => {
                check_name(&ns).map_err(|r| self.err(key, r))?;
                Ok(Some(ns))
            }
        }
    }

    fn oidc(
        &self,
        at: &str,
        name: String,
        role_namespace: Option<String>,
        raw: RawOidc,
    ) -> Result<OidcConfig, ConfigError> {
        let issuer = raw.issuer;
        check_http_url(&issuer).map_err(|r| self.err(&format!("{at}.issuer"), r))?;
        let discovery_url = match raw.discovery_url {
            Some(u) => {
                check_http_url(&u).map_err(|r| self.err(&format!("{at}.discovery_url"), r))?;
                u
            }
            None => format!(
                "{}/.well-known/openid-configuration",
                issuer.trim_end_matches('/')
            ),
        };
        let audience = raw.audience.into_vec();
        if audience.is_empty() || audience.iter().any(|a| a.is_empty()) {
            return Err(self.err(
                &format!("{at}.audience"),
                "needs at least one non-empty audience; tokens must carry one of them",
            ));
        }
        let algorithms = match raw.algorithms {
            None => DEFAULT_ALGORITHMS.to_vec(),
            Some(names) => {
                if names.is_empty() {
                    return Err(
                        self.err(&format!("{at}.algorithms"), "needs at least one algorithm")
                    );
                }
                names
                    .iter()
                    .map(|n| {
                        parse_algorithm(n).map_err(|r| self.err(&format!("{at}.algorithms"), r))
                    })
                    .collect::<Result<Vec<_>, _>>()?
            }
        };
        let leeway = self.duration(
            &format!("{at}.leeway"),
            raw.leeway.as_deref(),
            Duration::from_secs(30),
        )?;
        if leeway > Duration::from_secs(300) {
            return Err(self.err(
                &format!("{at}.leeway"),
                "at most 5m: a larger clock skew allowance keeps expired tokens alive",
            ));
        }
        let roles_claim = ClaimPath::parse(&raw.roles_claim)
            .map_err(|r| self.err(&format!("{at}.roles_claim"), r))?;
        let user_claim = ClaimPath::parse(raw.user_claim.as_deref().unwrap_or("sub"))
            .map_err(|r| self.err(&format!("{at}.user_claim"), r))?;
        let email_verified =
            EmailVerified::parse(raw.email_verified.as_deref().unwrap_or("required"))
                .map_err(|r| self.err(&format!("{at}.email_verified"), r))?;
        let jwks_max_age = self.duration(
            &format!("{at}.jwks_max_age"),
            raw.jwks_max_age.as_deref(),
            Duration::from_secs(15 * 60),
        )?;
        let jwks_refetch_cooldown = self.duration(
            &format!("{at}.jwks_refetch_cooldown"),
            raw.jwks_refetch_cooldown.as_deref(),
            Duration::from_secs(10),
        )?;
        // Without a cool-down every made-up kid would become a fetch.
        if jwks_refetch_cooldown < Duration::from_secs(1)
            || jwks_refetch_cooldown > Duration::from_secs(3600)
        {
            return Err(self.err(
                &format!("{at}.jwks_refetch_cooldown"),
                "must be between 1s and 1h",
            ));
        }
        if jwks_max_age > Duration::from_secs(7 * 24 * 3600) {
            return Err(self.err(
                &format!("{at}.jwks_max_age"),
                "at most 7 days: removed keys must stop working in bounded time",
            ));
        }
        if jwks_max_age < Duration::from_secs(1) || jwks_max_age < jwks_refetch_cooldown {
            return Err(self.err(
                &format!("{at}.jwks_max_age"),
                "must be at least 1s and at least jwks_refetch_cooldown",
            ));
        }
        let http_timeout = self.duration(
            &format!("{at}.http_timeout"),
            raw.http_timeout.as_deref(),
            Duration::from_secs(5),
        )?;
        if http_timeout.is_zero() || http_timeout > Duration::from_secs(60) {
            return Err(self.err(
                &format!("{at}.http_timeout"),
                "must be more than 0s and at most 60s",
            ));
        }
        let max_response_bytes = raw.max_response_bytes.unwrap_or(1024 * 1024);
        if max_response_bytes < 1024 {
            return Err(self.err(&format!("{at}.max_response_bytes"), "must be at least 1024"));
        }
        let token_cache_bytes = raw.token_cache_bytes.unwrap_or(DEFAULT_TOKEN_CACHE_BYTES);
        if token_cache_bytes > MAX_TOKEN_CACHE_BYTES {
            return Err(self.err(
                &format!("{at}.token_cache_bytes"),
                "must be at most 1073741824 (1 GiB; 0 turns the cache off)",
            ));
        }
        let scopes_claim = match raw.scopes_claim.as_deref() {
            None => None,
            Some(p) => {
                Some(ClaimPath::parse(p).map_err(|r| self.err(&format!("{at}.scopes_claim"), r))?)
            }
        };
        Ok(OidcConfig {
            scopes_claim,
            name,
            role_namespace,
            issuer,
            discovery_url,
            audience,
            algorithms,
            leeway,
            roles_claim,
            user_claim,
            email_verified,
            jwks_max_age,
            jwks_refetch_cooldown,
            http_timeout,
            max_response_bytes,
            token_cache_bytes,
        })
    }

    fn roles(
        &self,
        raw: BTreeMap<String, RawRole>,
        issuers: &[OidcConfig],
    ) -> Result<RoleTable, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                "roles",
                "no roles defined: every token would be refused; add [roles.<name>] tables",
            ));
        }
        let mut roles = BTreeMap::new();
        for (name, role) in raw {
            if name.is_empty() {
                return Err(self.err("roles", "a role name is empty"));
            }
            if let Some((prefix, _)) = name.split_once(':') {
                if !issuers
                    .iter()
                    .any(|o| o.role_namespace.as_deref() == Some(prefix))
                {
                    let known: Vec<&str> = issuers
                        .iter()
                        .filter_map(|o| o.role_namespace.as_deref())
                        .collect();
                    return Err(self.err(
                        &format!("roles.{name}"),
                        format!(
                            "{prefix:?} is the role_namespace of no [oidc] issuer (namespaces: {known:?}); no token could reach this role"
                        ),
                    ));
                }
            }
            roles.insert(name.clone(), self.role(&format!("roles.{name}"), role)?);
        }
        RoleTable::new(roles).map_err(|e| self.err("roles", e))
    }

    fn grants(&self, raw: Option<RawGrants>) -> Result<GrantsConfig, ConfigError> {
        let raw = raw.unwrap_or(RawGrants {
            kv_bucket: None,
            max_requested_scopes: None,
        });
        if let Some(bucket) = &raw.kv_bucket {
            if bucket.is_empty()
                || !bucket
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
            {
                return Err(self.err(
                    "grants.kv_bucket",
                    "a KV bucket name is letters, digits, '-' and '_'",
                ));
            }
        }
        let max = raw
            .max_requested_scopes
            .unwrap_or(DEFAULT_MAX_REQUESTED_SCOPES);
        if !(1..=1024).contains(&max) {
            return Err(self.err("grants.max_requested_scopes", "must be between 1 and 1024"));
        }
        Ok(GrantsConfig {
            kv_bucket: raw.kv_bucket,
            max_requested_scopes: max,
        })
    }

    fn role(&self, key: &str, role: RawRole) -> Result<Role, ConfigError> {
        let publish = self.direction(&format!("{key}.pub"), role.publish)?;
        let subscribe = self.direction(&format!("{key}.sub"), role.subscribe)?;
        let account = match role.account {
            None => None,
            Some(a) if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(self.err(
                    &format!("{key}.account"),
                    "must be an account name (not empty, no whitespace)",
                ))
            }
            Some(a) => Some(a),
        };
        Ok(Role {
            publish,
            subscribe,
            account,
        })
    }

    fn users(
        &self,
        raw: BTreeMap<String, RawUser>,
        roles: &RoleTable,
    ) -> Result<Vec<ConfigUser>, ConfigError> {
        let mut users: Vec<ConfigUser> = Vec::new();
        for (name, user) in raw {
            let key = format!("users.{name}");
            if name.is_empty()
                || name.len() > 256
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(self.err(
                    &key,
                    "a user name must be 1 to 256 characters without whitespace",
                ));
            }
            let credential = match (user.password_bcrypt, user.nkey) {
                (Some(hash), None) => {
                    check_bcrypt_hash(&hash)
                        .map_err(|r| self.err(&format!("{key}.password_bcrypt"), r))?;
                    Credential::Bcrypt(hash)
                }
                (None, Some(nkey)) => {
                    if !nkey.starts_with('U') || nkeys::KeyPair::from_public_key(&nkey).is_err() {
                        return Err(self.err(
                            &format!("{key}.nkey"),
                            "must be a public user nkey (U..., 56 characters); never put the seed here",
                        ));
                    }
                    if let Some(other) = users
                        .iter()
                        .find(|u| matches!(&u.credential, Credential::Nkey(k) if *k == nkey))
                    {
                        return Err(self.err(
                            &format!("{key}.nkey"),
                            format!("is also the nkey of users.{}", other.name),
                        ));
                    }
                    Credential::Nkey(nkey)
                }
                _ => {
                    return Err(self.err(
                        &key,
                        "needs exactly one credential: password_bcrypt or nkey",
                    ))
                }
            };
            let fixed =
                user.publish.is_some() || user.subscribe.is_some() || user.account.is_some();
            let grant = match (user.roles, fixed) {
                (Some(names), false) => {
                    if names.is_empty() {
                        return Err(self.err(&format!("{key}.roles"), "lists no role"));
                    }
                    if let Some(missing) = names.iter().find(|n| !roles.names().any(|r| r == *n)) {
                        return Err(self.err(
                            &format!("{key}.roles"),
                            format!("{missing:?} is not a [roles.*] table"),
                        ));
                    }
                    Grant::Roles(names)
                }
                (None, true) => {
                    for (dir, raw) in [("pub", &user.publish), ("sub", &user.subscribe)] {
                        let entries = raw.iter().flat_map(|d| d.allow.iter().chain(&d.deny));
                        if let Some(e) = entries
                            .filter(|e| is_template(e))
                            .find(|e| SubjectTemplate::parse(e).is_ok_and(|t| t.needs_claims()))
                        {
                            return Err(self.err(
                                &format!("{key}.{dir}"),
                                format!("{e:?} names a token claim, and a [users.*] identity has no token; use {{{{name}}}}, {{{{issuer}}}} or {{{{scope}}}}"),
                            ));
                        }
                    }
                    let role = self.role(
                        &key,
                        RawRole {
                            publish: user.publish.unwrap_or_default(),
                            subscribe: user.subscribe.unwrap_or_default(),
                            account: user.account,
                        },
                    )?;
                    let table = RoleTable::new(BTreeMap::from([(name.clone(), role)]))
                        .map_err(|e| self.err(&key, e))?;
                    Grant::Fixed(Arc::new(table))
                }
                _ => return Err(self.err(
                    &key,
                    "grant either roles = [...] or its own pub/sub/account, exactly one of the two",
                )),
            };
            users.push(ConfigUser {
                name,
                credential,
                grant,
            });
        }
        Ok(users)
    }

    fn direction(&self, key: &str, raw: RawDirection) -> Result<Direction, ConfigError> {
        for (list, entries) in [("allow", &raw.allow), ("deny", &raw.deny)] {
            for s in entries {
                let checked = if is_template(s) {
                    SubjectTemplate::parse(s).map(|_| ())
                } else {
                    check_permission_subject(s)
                };
                checked.map_err(|r| self.err(&format!("{key}.{list}"), r))?;
            }
        }
        Ok(Direction {
            allow: raw.allow,
            deny: raw.deny,
        })
    }
}

/// Issuer names and role namespaces appear in role names, log fields and
/// metric labels, so they are kept to a plain alphabet.
fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{:?} must be 1 to 64 letters, digits, '-' or '_'",
            crate::token::clip(name)
        ));
    }
    Ok(())
}

/// Asymmetric algorithms only: HMAC would need a shared secret and `none` is no
/// signature at all.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    let alg = DEFAULT_ALGORITHMS
        .iter()
        .copied()
        .find(|a| format!("{a:?}") == name);
    match alg {
        Some(a) => Ok(a),
        None if name.starts_with("HS") => Err(format!(
            "{name:?} is an HMAC algorithm: a shared secret cannot be published by an issuer, so it is never accepted"
        )),
        None if name.eq_ignore_ascii_case("none") => Err("\"none\" means unsigned and is never accepted".into()),
        None => Err(format!(
            "{name:?} is not supported; use some of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
        )),
    }
}

/// Issuer and discovery URLs: https, or plain http only on loopback so that
/// development and tests work without TLS and production cannot be downgraded.
pub fn check_http_url(url: &str) -> Result<(), String> {
    let parsed = reqwest::Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    match parsed.scheme() {
        "https" => Ok(()),
        "http" => {
            let loopback = match parsed.host() {
                Some(url::Host::Domain(d)) => d == "localhost",
                Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
                Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
                None => false,
            };
            if loopback {
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
