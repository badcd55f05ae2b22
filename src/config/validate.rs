//! The validator: raw TOML shape → the validated model, section by section.
//! This file holds its core and the `[nats]`, `[callout]`, `[http]` and
//! `[grants]` sections; `oidc.rs` and `roles.rs` hold the others.

use std::cell::RefCell;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use super::raw::{
    OneOrMany, RawAccount, RawCallout, RawConfig, RawGrants, RawHttp, RawNats, RawNatsTls,
    RawRevocation,
};
use super::{
    CalloutConfig, Config, ConfigError, GrantsConfig, HttpConfig, NatsAuth, NatsConfig,
    RevocationConfig, DEFAULT_MAX_REQUESTED_SCOPES, DEFAULT_MAX_TOKEN_BYTES, ISSUER_SEED_ENV,
    XKEY_SEED_ENV,
};
use crate::callout;
use crate::nats::creds;
use crate::nats::signing_key::SigningKey;
use crate::policy::roles::RoleTable;
use crate::policy::subject::check_permission_subject;
use crate::policy::users::{ConfigUser, Grant};
use crate::secrets::{self, SeedError, SeedKind};
use crate::tls::{self, IdentityError, NatsTls};

pub(super) struct Validator<'a> {
    path: &'a Path,
    /// Files holding secrets, by config key, as they are met.
    secret_files: RefCell<Vec<(String, PathBuf)>>,
}

impl<'a> Validator<'a> {
    pub(super) fn new(path: &'a Path) -> Self {
        Validator {
            path,
            secret_files: RefCell::default(),
        }
    }

    pub(super) fn err(&self, key: &str, reason: impl Into<String>) -> ConfigError {
        ConfigError {
            file: self.path.to_path_buf(),
            key: key.to_string(),
            reason: reason.into(),
        }
    }

    /// Relative paths in the config are relative to the config file, so a
    /// mounted directory works wherever it is mounted.
    fn resolve_secret(&self, key: &str, p: &Path) -> PathBuf {
        let file = self.resolve_file(p);
        self.secret_files
            .borrow_mut()
            .push((key.to_string(), file.clone()));
        file
    }

    pub(super) fn duration(
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

    /// A duration that must lie within `range` (`what` says so in the error).
    pub(super) fn bounded_duration(
        &self,
        key: &str,
        value: Option<&str>,
        default: Duration,
        range: std::ops::RangeInclusive<Duration>,
        what: &str,
    ) -> Result<Duration, ConfigError> {
        let d = self.duration(key, value, default)?;
        if range.contains(&d) {
            Ok(d)
        } else {
            Err(self.err(key, what))
        }
    }

    pub(super) fn validate(self, raw: RawConfig) -> Result<Config, ConfigError> {
        let nats = self.nats(raw.nats)?;
        let callout = self.callout(raw.callout, &nats.auth)?;
        let mut oidc = self.issuers(raw.oidc)?;
        let http = raw.http.map(|h| self.http(h)).transpose()?;
        let jetstream = self.jetstream_account(raw.jetstream, &callout)?;
        let roles = self.roles(raw.roles, &oidc, jetstream.as_ref())?;
        let users = self.users(raw.users, &roles)?;
        self.accounts_known(&callout, &roles, &users)?;
        self.nkey_users_need_server_mode(&callout, &users)?;
        self.jetstream_placement(&callout, &roles, jetstream.as_ref())?;
        let grants = self.grants(raw.grants)?;
        self.bindings(raw.bindings, &mut oidc, &roles, grants.kv_bucket.is_some())?;
        let revocation = self.revocation(raw.revocation.unwrap_or_default(), http.as_ref())?;
        Ok(Config {
            source: self.path.to_path_buf(),
            // Set by `Config::parse`, which has the text.
            digest: [0; 32],
            nats,
            callout,
            oidc,
            http,
            roles: Arc::new(roles),
            users,
            grants,
            jetstream,
            revocation,
            secret_files: self.secret_files.take(),
        })
    }

    fn http(&self, raw: RawHttp) -> Result<HttpConfig, ConfigError> {
        let listen = raw.listen.parse().map_err(|e| {
            self.err(
                "http.listen",
                format!(
                    "{:?} is not an address like 127.0.0.1:8080: {e}",
                    raw.listen
                ),
            )
        })?;
        Ok(HttpConfig { listen })
    }

    fn revocation(
        &self,
        raw: RawRevocation,
        http: Option<&HttpConfig>,
    ) -> Result<RevocationConfig, ConfigError> {
        let key = "revocation.backchannel_listen";
        let backchannel_listen = match raw.backchannel_listen.clone() {
            None => None,
            Some(text) => Some(text.parse::<SocketAddr>().map_err(|e| {
                self.err(
                    key,
                    format!(
                        "{:?} is not an address like 127.0.0.1:8081: {e}",
                        crate::text::clip(&text)
                    ),
                )
            })?),
        };
        // Its own listener is the point: the provider reaches it without
        // reaching /metrics and /readyz.
        if let (Some(addr), Some(http)) = (backchannel_listen, http) {
            if addr == http.listen && addr.port() != 0 {
                return Err(self.err(
                    key,
                    "is also http.listen; the back-channel logout endpoint needs a listener of its own, which can be exposed to the identity provider without exposing /metrics",
                ));
            }
        }
        let kv_bucket = raw.kv_bucket.clone();
        if let Some(bucket) = &kv_bucket {
            self.bucket_name("revocation.kv_bucket", bucket)?;
        } else if backchannel_listen.is_some() {
            return Err(self.err(
                key,
                "needs revocation.kv_bucket: a logout is kept in the revocation list, which every replica reads",
            ));
        }
        let max_token_lifetime = self.bounded_duration(
            "revocation.max_token_lifetime",
            raw.max_token_lifetime.as_deref(),
            std::time::Duration::from_secs(24 * 3600),
            std::time::Duration::from_secs(60)..=std::time::Duration::from_secs(30 * 24 * 3600),
            "must be between 1m and 30 days",
        )?;
        let request_subject = raw
            .request_subject
            .as_deref()
            .map(|subject| self.request_subject(subject, kv_bucket.is_some()))
            .transpose()?;
        let system_login = self.system_login(&raw)?;
        if system_login.is_some() && kv_bucket.is_none() {
            return Err(self.err(
                "revocation.system_user",
                "needs revocation.kv_bucket: connections are closed for the revocations in the list",
            ));
        }
        Ok(RevocationConfig {
            kv_bucket,
            max_token_lifetime,
            backchannel_listen,
            system_login,
            request_subject,
        })
    }

    /// `revocation.request_subject`: one literal subject the service
    /// subscribes to in its own account, outside what NATS and the service
    /// use there themselves.
    fn request_subject(&self, subject: &str, has_bucket: bool) -> Result<String, ConfigError> {
        let key = "revocation.request_subject";
        if !has_bucket {
            return Err(self.err(
                key,
                "needs revocation.kv_bucket: a revocation is kept in the revocation list, which every replica reads",
            ));
        }
        let shown = crate::text::printable(subject, 64);
        check_permission_subject(subject).map_err(|reason| self.err(key, reason))?;
        if subject.split('.').any(|t| t == "*" || t == ">") {
            return Err(self.err(
                key,
                format!("\"{shown}\" has a wildcard: it must be one literal subject, the one the admin may publish to"),
            ));
        }
        let first = subject.split('.').next().unwrap_or_default();
        if first.starts_with('$') || first == "_INBOX" {
            return Err(self.err(
                key,
                format!("\"{shown}\" is among the subjects NATS uses itself ($SYS, $JS, $KV and other $ subjects, _INBOX replies): choose a subject of your own, like nats-oidc-callout.revoke"),
            ));
        }
        Ok(subject.to_string())
    }

    /// `[revocation]`'s system-account login: a user and password, or a
    /// creds file (operator mode), not both.
    fn system_login(&self, raw: &RawRevocation) -> Result<Option<NatsAuth>, ConfigError> {
        match (&raw.system_user, &raw.system_password, &raw.system_creds_file) {
            (None, None, None) => Ok(None),
            (Some(user), Some(password), None) => Ok(Some(NatsAuth::UserPassword {
                user: user.clone(),
                password: password.clone(),
            })),
            (None, None, Some(file)) => {
                let file = self.resolve_secret("revocation.system_creds_file", file);
                std::fs::metadata(&file).map_err(|e| {
                    self.err(
                        "revocation.system_creds_file",
                        format!("{}: {e}", secrets::shown(&file)),
                    )
                })?;
                Ok(Some(NatsAuth::CredsFile(file)))
            }
            (Some(_), None, None) => Err(self.err("revocation.system_password", "required with revocation.system_user")),
            (None, Some(_), None) => Err(self.err("revocation.system_user", "required with revocation.system_password")),
            _ => Err(self.err(
                "revocation",
                "choose one system-account login: system_user + system_password, or system_creds_file",
            )),
        }
    }

    fn nats(&self, raw: RawNats) -> Result<NatsConfig, ConfigError> {
        let urls = raw
            .url
            .clone()
            .map(OneOrMany::into_vec)
            .unwrap_or_else(|| vec!["nats://127.0.0.1:4222".into()]);
        if urls.is_empty() {
            return Err(self.err("nats.url", "needs at least one server url"));
        }
        let (urls, in_urls) = self.nats_urls(urls)?;
        let auth = match (self.nats_auth(&raw)?, in_urls) {
            (auth, None) => auth,
            (NatsAuth::None, Some(auth)) => auth,
            (_, Some(_)) => return Err(self.err(
                "nats",
                "choose one way to authenticate, found credentials in nats.url and another method",
            )),
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
        let tls = raw.tls.map(|t| self.nats_tls(t)).transpose()?;
        Ok(NatsConfig {
            urls,
            auth,
            queue_group,
            name: raw.name.unwrap_or_else(|| "nats-oidc-callout".into()),
            tls,
        })
    }

    /// `[nats.tls]`: every file it names is read and checked here, so a
    /// wrong one is an error at start (and in `check`), not a failed
    /// handshake later.
    fn nats_tls(&self, raw: RawNatsTls) -> Result<NatsTls, ConfigError> {
        let ca_file = raw.ca_file.map(|p| self.resolve_file(&p));
        let client =
            match (raw.cert_file, raw.key_file) {
                (Some(cert), Some(key)) => Some((
                    self.resolve_file(&cert),
                    self.resolve_secret("nats.tls.key_file", &key),
                )),
                (None, None) => None,
                (Some(_), None) => {
                    return Err(self.err(
                        "nats.tls.key_file",
                        "required with nats.tls.cert_file: the client certificate's private key",
                    ))
                }
                (None, Some(_)) => return Err(self.err(
                    "nats.tls.cert_file",
                    "required with nats.tls.key_file: the client certificate the key belongs to",
                )),
            };
        let tls = NatsTls {
            ca_file,
            client,
            handshake_first: raw.handshake_first.unwrap_or(false),
        };
        if let Some(ca) = &tls.ca_file {
            tls::check_ca_file(ca).map_err(|e| self.err("nats.tls.ca_file", e.to_string()))?;
        }
        if let Some((cert, key)) = &tls.client {
            tls::check_identity(cert, key).map_err(|e| match e {
                IdentityError::Cert(e) => self.err("nats.tls.cert_file", e.to_string()),
                IdentityError::Key(e) => self.err("nats.tls.key_file", e.to_string()),
            })?;
        }
        Ok(tls)
    }

    /// A path relative to the config file's directory (for a secret,
    /// `resolve_secret` also remembers it for the exposure check).
    pub(super) fn resolve_file(&self, p: &Path) -> PathBuf {
        if p.is_absolute() {
            return p.to_path_buf();
        }
        self.path
            .parent()
            .map(|d| d.join(p))
            .unwrap_or_else(|| p.to_path_buf())
    }

    /// The server URLs, parsed as `run` parses them (so that `check` and
    /// `run` agree) and without credentials, which are taken out as a way
    /// to log in (`user:password@` or `token@`): async-nats would neither
    /// use them nor keep them out of its debug log.
    fn nats_urls(&self, urls: Vec<String>) -> Result<(Vec<String>, Option<NatsAuth>), ConfigError> {
        let mut bare = Vec::new();
        let mut found: Option<NatsAuth> = None;
        for u in &urls {
            let shown = secrets::redact_url(u);
            if u.trim().is_empty() || u.contains(char::is_whitespace) {
                return Err(self.err("nats.url", format!("{shown:?} is not a server url")));
            }
            if u.contains(',') {
                return Err(self.err(
                    "nats.url",
                    format!("{shown:?}: list several servers as a TOML array, one URL each"),
                ));
            }
            // The parser's message does not quote the URL.
            let addr: async_nats::ServerAddr = u
                .parse()
                .map_err(|e| self.err("nats.url", format!("{shown:?}: {e}")))?;
            let mut url = addr.into_inner();
            // A server URL is scheme, credentials, host and port; anything
            // after them is a mistake (or a password with an unencoded `/`).
            if !matches!(url.path(), "" | "/") || url.query().is_some() || url.fragment().is_some()
            {
                return Err(self.err(
                    "nats.url",
                    format!(
                        "{shown:?} has a path, query or fragment; a NATS server URL is scheme://[user:password@]host:port (percent-encode / ? # in a password)"
                    ),
                ));
            }
            let auth = match (url.username(), url.password()) {
                ("", _) => None,
                (token, None) => Some(NatsAuth::Token(decode_userinfo(token))),
                (user, Some(password)) => Some(NatsAuth::UserPassword {
                    user: decode_userinfo(user),
                    password: decode_userinfo(password),
                }),
            };
            if let Some(auth) = auth {
                if found.as_ref().is_some_and(|f| *f != auth) {
                    return Err(self.err(
                        "nats.url",
                        "the URLs carry different credentials; one service logs in one way",
                    ));
                }
                found = Some(auth);
                let _ = url.set_username("");
                let _ = url.set_password(None);
            }
            bare.push(url.to_string());
        }
        Ok((bare, found))
    }

    /// How the service itself logs in to NATS: one method at most.
    fn nats_auth(&self, raw: &RawNats) -> Result<NatsAuth, ConfigError> {
        let methods: Vec<&str> = [
            (
                raw.user.is_some() || raw.password.is_some(),
                "user/password",
            ),
            (raw.token.is_some(), "token"),
            (raw.nkey_seed_file.is_some(), "nkey_seed_file"),
            (raw.creds_file.is_some(), "creds_file"),
        ]
        .into_iter()
        .filter_map(|(set, name)| set.then_some(name))
        .collect();
        if methods.len() > 1 {
            return Err(self.err(
                "nats",
                format!(
                    "choose one way to authenticate, found {}",
                    methods.join(" and ")
                ),
            ));
        }
        Ok(if let Some(user) = raw.user.clone() {
            let password = raw
                .password
                .clone()
                .ok_or_else(|| self.err("nats.password", "required with nats.user"))?;
            NatsAuth::UserPassword { user, password }
        } else if raw.password.is_some() {
            return Err(self.err("nats.user", "required with nats.password"));
        } else if let Some(token) = raw.token.clone() {
            NatsAuth::Token(token)
        } else if let Some(file) = &raw.nkey_seed_file {
            let file = self.resolve_secret("nats.nkey_seed_file", file);
            let key = secrets::key_pair_file(&file, SeedKind::User)
                .map_err(|e| self.err("nats.nkey_seed_file", e.to_string()))?;
            NatsAuth::NkeySeed(Arc::new(key))
        } else if let Some(file) = &raw.creds_file {
            let file = self.resolve_secret("nats.creds_file", file);
            std::fs::metadata(&file).map_err(|e| {
                self.err("nats.creds_file", format!("{}: {e}", secrets::shown(&file)))
            })?;
            NatsAuth::CredsFile(file)
        } else {
            NatsAuth::None
        })
    }

    fn callout(
        &self,
        mut raw: RawCallout,
        nats_auth: &NatsAuth,
    ) -> Result<CalloutConfig, ConfigError> {
        let issuer = self.issuer_seed(&raw)?;
        let xkey = self.seed(
            "callout.xkey_seed",
            raw.xkey_seed_file.as_deref(),
            raw.xkey_seed.as_deref(),
            XKEY_SEED_ENV,
            secrets::curve_key,
            secrets::curve_key_file,
        )?;
        if raw.account.is_empty() || raw.account.contains(char::is_whitespace) {
            return Err(self.err(
                "callout.account",
                "must name the NATS account users are placed in",
            ));
        }
        let (auth_account, mode) = self.mode(
            &raw.account,
            raw.mode,
            raw.auth_account.clone(),
            raw.accounts.take(),
            &issuer,
            nats_auth,
        )?;
        let auth_account_name = self.auth_account_name(&raw)?;
        let (max_user_ttl, max_token_bytes) =
            self.callout_limits(raw.max_user_ttl.as_deref(), raw.max_token_bytes)?;
        let issuer =
            SigningKey::new(issuer).map_err(|e| self.err("callout.issuer_seed", e.to_string()))?;
        let xkey = xkey
            .map(|x| {
                crate::nats::xkey::OurXkey::new(x)
                    .map(Arc::new)
                    .map_err(|e| self.err("callout.xkey_seed", e.to_string()))
            })
            .transpose()?;
        Ok(CalloutConfig {
            issuer: Arc::new(issuer),
            auth_account,
            xkey,
            account: raw.account,
            auth_account_name,
            max_user_ttl,
            max_token_bytes,
            mode,
        })
    }

    /// The seed the callout signs user JWTs and responses with.
    fn issuer_seed(&self, raw: &RawCallout) -> Result<nkeys::KeyPair, ConfigError> {
        self.seed(
            "callout.issuer_seed",
            raw.issuer_seed_file.as_deref(),
            raw.issuer_seed.as_deref(),
            ISSUER_SEED_ENV,
            |s| secrets::key_pair(s, SeedKind::Account),
            |f| secrets::key_pair_file(f, SeedKind::Account),
        )?
        .ok_or_else(|| {
            self.err(
                "callout.issuer_seed_file",
                format!("required: the account seed (SA...) whose public key is auth_callout.issuer in nats-server (or set {ISSUER_SEED_ENV})"),
            )
        })
    }

    /// Server or operator mode, and the callout account's public key.
    fn mode(
        &self,
        account: &str,
        mode: Option<super::raw::RawMode>,
        auth_account: Option<String>,
        accounts: Option<BTreeMap<String, super::raw::RawAccount>>,
        issuer: &nkeys::KeyPair,
        nats_auth: &NatsAuth,
    ) -> Result<(String, callout::Mode), ConfigError> {
        if mode != Some(super::raw::RawMode::Operator) {
            if accounts.is_some() {
                return Err(self.err(
                    "callout.accounts",
                    "is for operator mode (callout.mode = \"operator\"); in server mode accounts are named in nats-server's config and the issuer seed is auth_callout.issuer",
                ));
            }
            return Ok((issuer.public_key(), callout::Mode::Server));
        }
        let auth_account = self.auth_account(auth_account, issuer, nats_auth)?;
        let accounts = self.target_accounts(accounts)?;
        if !accounts.contains_key(account) {
            return Err(self.err(
                "callout.account",
                format!(
                    "{account:?} is not in [callout.accounts] (accounts: {:?})",
                    accounts.keys().collect::<Vec<_>>()
                ),
            ));
        }
        Ok((auth_account, callout::Mode::Operator { accounts }))
    }

    /// Server mode names the callout's own account (auth_callout.account
    /// in nats.conf) so that nothing risky is placed there; operator mode
    /// knows it by its key.
    fn auth_account_name(&self, raw: &RawCallout) -> Result<Option<String>, ConfigError> {
        let operator = raw.mode == Some(super::raw::RawMode::Operator);
        let Some(name) = raw.auth_account.as_ref().filter(|_| !operator) else {
            return Ok(None);
        };
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                "callout.auth_account",
                "must name the callout's own account as nats-server's config does (auth_callout.account, e.g. \"AUTH\")",
            ));
        }
        if is_account_key(name) {
            return Err(self.err(
                "callout.auth_account",
                "in server mode this is the account's name in nats-server's config (auth_callout.account, e.g. \"AUTH\"), not a public key",
            ));
        }
        Ok(Some(name.clone()))
    }

    /// `callout.max_user_ttl` and `callout.max_token_bytes`.
    fn callout_limits(
        &self,
        max_user_ttl: Option<&str>,
        max_token_bytes: Option<usize>,
    ) -> Result<(Duration, usize), ConfigError> {
        let max_user_ttl = self.bounded_duration(
            "callout.max_user_ttl",
            max_user_ttl,
            Duration::from_secs(3600),
            Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600),
            "must be between 1s and 30 days",
        )?;
        let max_token_bytes = max_token_bytes.unwrap_or(DEFAULT_MAX_TOKEN_BYTES);
        if !(1024..=1024 * 1024).contains(&max_token_bytes) {
            return Err(self.err(
                "callout.max_token_bytes",
                "must be between 1024 and 1048576",
            ));
        }
        Ok((max_user_ttl, max_token_bytes))
    }

    /// The callout account's public key in operator mode: as configured,
    /// else the account of the service's own user in `nats.creds_file`,
    /// else the issuer seed's own (it is then the account's identity key).
    fn auth_account(
        &self,
        configured: Option<String>,
        issuer: &nkeys::KeyPair,
        nats_auth: &NatsAuth,
    ) -> Result<String, ConfigError> {
        if let Some(key) = configured {
            if !is_account_key(&key) {
                return Err(self.err(
                    "callout.auth_account",
                    "must be the callout account's public key (A..., 56 characters); never put a seed here",
                ));
            }
            return Ok(key);
        }
        if let NatsAuth::CredsFile(path) = nats_auth {
            let text = std::fs::read_to_string(path).map_err(|e| {
                self.err("nats.creds_file", format!("{}: {e}", secrets::shown(path)))
            })?;
            let account = creds::user_jwt(&text).and_then(creds::account_of);
            return match account.filter(|a| is_account_key(a)) {
                Some(account) => Ok(account),
                None => Err(self.err(
                    "callout.auth_account",
                    format!(
                        "not set, and {} holds no user JWT naming its account; set it to the callout account's public key",
                        secrets::shown(path)
                    ),
                )),
            };
        }
        Ok(issuer.public_key())
    }

    /// `[callout.accounts.<name>]`: each target account's key and signer.
    fn target_accounts(
        &self,
        raw: Option<BTreeMap<String, RawAccount>>,
    ) -> Result<BTreeMap<String, callout::TargetAccount>, ConfigError> {
        let raw = raw.unwrap_or_default();
        if raw.is_empty() {
            return Err(self.err(
                "callout.accounts",
                "operator mode needs at least one [callout.accounts.<name>] table: the accounts users may be placed in, each with its public key and a signing key seed",
            ));
        }
        let mut accounts = BTreeMap::new();
        for (name, account) in raw {
            let key = format!("callout.accounts.{name}");
            if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
                return Err(self.err(&key, "an account name has no whitespace"));
            }
            if !is_account_key(&account.public_key) {
                return Err(self.err(
                    &format!("{key}.public_key"),
                    "must be the account's public key (A..., 56 characters); never put a seed here",
                ));
            }
            let signer = self
                .seed(
                    &format!("{key}.signing_key_seed"),
                    account.signing_key_seed_file.as_deref(),
                    account.signing_key_seed.as_deref(),
                    &super::account_seed_env(&name),
                    |s| secrets::key_pair(s, SeedKind::Account),
                    |f| secrets::key_pair_file(f, SeedKind::Account),
                )?
                .ok_or_else(|| {
                    self.err(
                        &format!("{key}.signing_key_seed_file"),
                        "required: a signing key seed of this account (SA...; nsc edit account --sk generate), or its own seed",
                    )
                })?;
            let signer = SigningKey::new(signer)
                .map_err(|e| self.err(&format!("{key}.signing_key_seed"), e.to_string()))?;
            let target = callout::TargetAccount {
                public_key: account.public_key,
                signer: Arc::new(signer),
            };
            if let Some((other, _)) =
                accounts
                    .iter()
                    .find(|(_, a): &(&String, &callout::TargetAccount)| {
                        a.public_key == target.public_key
                    })
            {
                return Err(self.err(
                    &format!("{key}.public_key"),
                    format!("is also the public key of callout.accounts.{other}"),
                ));
            }
            accounts.insert(name, target);
        }
        Ok(accounts)
    }

    /// In operator mode every account a role or `[users.*]` entry names
    /// must be one the callout can sign for.
    fn accounts_known(
        &self,
        callout: &CalloutConfig,
        roles: &RoleTable,
        users: &[ConfigUser],
    ) -> Result<(), ConfigError> {
        let callout::Mode::Operator { accounts } = &callout.mode else {
            return Ok(());
        };
        let named = roles
            .iter()
            .filter_map(|(name, role)| {
                role.account
                    .as_deref()
                    .map(|a| (format!("roles.{name}.account"), a))
            })
            .chain(users.iter().filter_map(|u| {
                match &u.grant {
                    Grant::Fixed(own) => own
                        .iter()
                        .find_map(|(_, r)| r.account.as_deref())
                        .map(|a| (format!("users.{}.account", u.name), a)),
                    Grant::Roles(_) => None,
                }
            }));
        for (key, account) in named {
            if !accounts.contains_key(account) {
                return Err(self.err(
                    &key,
                    format!(
                        "{account:?} is not in [callout.accounts] (accounts: {:?}); in operator mode the callout signs users only into accounts it holds a key of",
                        accounts.keys().collect::<Vec<_>>()
                    ),
                ));
            }
        }
        Ok(())
    }

    /// In operator mode every client presents the sentinel's JWT and signs
    /// nats-server's nonce with the sentinel's key: no connect can prove a
    /// `[users.*]` nkey there.
    fn nkey_users_need_server_mode(
        &self,
        callout: &CalloutConfig,
        users: &[ConfigUser],
    ) -> Result<(), ConfigError> {
        if !matches!(callout.mode, callout::Mode::Operator { .. }) {
            return Ok(());
        }
        match users
            .iter()
            .find(|u| matches!(u.credential, crate::policy::users::Credential::Nkey(_)))
        {
            Some(user) => Err(self.err(
                &format!("users.{}.nkey", user.name),
                "in operator mode clients present the sentinel's JWT and sign nats-server's nonce with its key, so no connect can prove another nkey; give this user password_bcrypt",
            )),
            None => Ok(()),
        }
    }

    /// One seed: the environment variable if set (it overrides the file, so
    /// a container can inject the seed), else exactly one of file and inline.
    fn seed<K>(
        &self,
        key: &str,
        file: Option<&Path>,
        inline: Option<&str>,
        env: &str,
        parse: impl Fn(&str) -> Result<K, SeedError>,
        parse_file: impl Fn(&Path) -> Result<K, SeedError>,
    ) -> Result<Option<K>, ConfigError> {
        let failed = |at: &str, e: SeedError| self.err(at, e.to_string());
        if let Some(v) = std::env::var(env).ok().filter(|v| !v.trim().is_empty()) {
            return parse(v.trim()).map(Some).map_err(|e| failed(env, e));
        }
        let file_key = format!("{key}_file");
        match (file, inline) {
            (Some(_), Some(_)) => {
                Err(self.err(key, format!("set either {file_key} or {key}, not both")))
            }
            (Some(file), None) => {
                let file = self.resolve_secret(&file_key, file);
                parse_file(&file)
                    .map(Some)
                    .map_err(|e| failed(&file_key, e))
            }
            (None, Some(v)) => parse(v.trim()).map(Some).map_err(|e| failed(key, e)),
            (None, None) => Ok(None),
        }
    }

    fn bucket_name(&self, key: &str, bucket: &str) -> Result<(), ConfigError> {
        let valid = !bucket.is_empty()
            && bucket
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_');
        if valid {
            Ok(())
        } else {
            Err(self.err(key, "a KV bucket name is letters, digits, '-' and '_'"))
        }
    }

    fn grants(&self, raw: Option<RawGrants>) -> Result<GrantsConfig, ConfigError> {
        let raw = raw.unwrap_or(RawGrants {
            kv_bucket: None,
            max_requested_scopes: None,
        });
        if let Some(bucket) = &raw.kv_bucket {
            self.bucket_name("grants.kv_bucket", bucket)?;
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
}

/// User names and passwords in URLs are percent-encoded.
fn decode_userinfo(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// A well-formed account public key (checksum included).
fn is_account_key(key: &str) -> bool {
    key.starts_with('A') && nkeys::KeyPair::from_public_key(key).is_ok()
}
