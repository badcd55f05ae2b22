//! The `[oidc]` table or `[[oidc]]` blocks: each trusted issuer's
//! verification settings and how its claims are read.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use super::raw::{OneOrMany, RawOidc, RawOidcs};
use super::validate::Validator;
use super::{ConfigError, IssuerConfig, DEFAULT_TOKEN_CACHE_BYTES, MAX_TOKEN_CACHE_BYTES};
use crate::oidc::algorithms::{parse_algorithm, DEFAULT_ALGORITHMS};
use crate::oidc::discovery::check_http_url;
use crate::oidc::settings::Settings;
use crate::policy::claims::{ClaimPath, EmailVerified};
use crate::policy::mapping::ClaimMapping;
use crate::policy::platforms::{IssuerPlatform, Platform};
use crate::policy::users::CONFIG_ISSUER;
use jsonwebtoken::Algorithm;

/// The timing settings of one issuer.
struct Timings {
    leeway: Duration,
    jwks_max_age: Duration,
    jwks_refetch_cooldown: Duration,
    http_timeout: Duration,
}

impl Validator<'_> {
    pub(super) fn issuers(&self, raw: RawOidcs) -> Result<Vec<IssuerConfig>, ConfigError> {
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
        let mut issuers: Vec<IssuerConfig> = Vec::new();
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
            let new = self.oidc(&at, name, namespace, raw)?;
            self.distinct(&at, &new, &issuers)?;
            issuers.push(new);
        }
        Ok(issuers)
    }

    /// A token must route to exactly one block, and each issuer's roles are
    /// its own.
    fn distinct(
        &self,
        at: &str,
        new: &IssuerConfig,
        earlier: &[IssuerConfig],
    ) -> Result<(), ConfigError> {
        let (name, namespace) = (&new.settings.name, &new.claims.role_namespace);
        if let Some(other) = earlier.iter().find(|o| o.settings.name == *name) {
            return Err(self.err(
                &format!("{at}.name"),
                format!("{:?} names two [[oidc]] blocks", other.settings.name),
            ));
        }
        if let Some(other) = earlier
            .iter()
            .find(|o| namespace.is_some() && o.claims.role_namespace == *namespace)
        {
            return Err(self.err(
                &format!("{at}.role_namespace"),
                format!(
                    "{:?} is also the role namespace of oidc[{}]: each issuer's roles are its own (role_namespace = \"\" shares the plain table on purpose)",
                    namespace.as_deref().unwrap_or_default(),
                    other.settings.name
                ),
            ));
        }
        if let Some(other) = earlier
            .iter()
            .find(|o| o.settings.issuer == new.settings.issuer)
        {
            return Err(self.err(
                &format!("{at}.issuer"),
                format!(
                    "{:?} is also the issuer of oidc[{}]: a token must route to exactly one block",
                    new.settings.issuer, other.settings.name
                ),
            ));
        }
        Ok(())
    }

    fn issuer_name(&self, key: &str, name: &str) -> Result<(), ConfigError> {
        check_name(name).map_err(|r| self.err(key, r))?;
        if name == CONFIG_ISSUER {
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
    ) -> Result<IssuerConfig, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        check_http_url(&raw.issuer).map_err(|r| self.err(&key("issuer"), r))?;
        let discovery_url = match &raw.discovery_url {
            Some(u) => {
                check_http_url(u).map_err(|r| self.err(&key("discovery_url"), r))?;
                u.clone()
            }
            None => format!(
                "{}/.well-known/openid-configuration",
                raw.issuer.trim_end_matches('/')
            ),
        };
        let jwks_url = self.jwks_url(at, &raw)?;
        let ca_file = self.ca_file(at, &raw)?;
        let bearer_token_file = self.bearer_token_file(at, &raw)?;
        let audience = self.audiences(&key("audience"), raw.audience.clone())?;
        // The client ids the provider sends back-channel logouts to: often
        // the access tokens' audience, but a provider may address logouts to
        // another client (the one users log in with).
        let logout_audience = match raw.logout_audience.clone() {
            None => audience.clone(),
            Some(list) => self.audiences(&key("logout_audience"), list)?,
        };
        let algorithms = self.algorithms(&key("algorithms"), raw.algorithms.as_deref())?;
        let timings = self.timings(at, &raw)?;
        let max_response_bytes = raw.max_response_bytes.unwrap_or(1024 * 1024);
        if max_response_bytes < 1024 {
            return Err(self.err(&key("max_response_bytes"), "must be at least 1024"));
        }
        let token_cache_bytes = raw.token_cache_bytes.unwrap_or(DEFAULT_TOKEN_CACHE_BYTES);
        if token_cache_bytes > MAX_TOKEN_CACHE_BYTES {
            return Err(self.err(
                &key("token_cache_bytes"),
                "must be at most 1073741824 (1 GiB; 0 turns the cache off)",
            ));
        }
        let claims = self.claim_mapping(at, &raw, role_namespace)?;
        Ok(IssuerConfig {
            settings: Arc::new(Settings {
                name,
                issuer: raw.issuer,
                discovery_url,
                jwks_url,
                ca_file,
                bearer_token_file,
                audience,
                logout_audience,
                algorithms,
                leeway: timings.leeway,
                jwks_max_age: timings.jwks_max_age,
                jwks_refetch_cooldown: timings.jwks_refetch_cooldown,
                http_timeout: timings.http_timeout,
                max_response_bytes,
                token_cache_bytes,
            }),
            claims,
        })
    }

    /// An audience list: at least one, none empty (a token must carry one).
    fn audiences(&self, key: &str, raw: OneOrMany) -> Result<Vec<String>, ConfigError> {
        let list = raw.into_vec();
        if list.is_empty() || list.iter().any(|a| a.is_empty()) {
            return Err(self.err(
                key,
                "needs at least one non-empty audience; tokens must carry one of them",
            ));
        }
        Ok(list)
    }

    /// A JWKS URL in the config replaces discovery (for issuers whose
    /// discovery document names a `jwks_uri` this host cannot reach, as a
    /// Kubernetes API server's names its external address).
    fn jwks_url(&self, at: &str, raw: &RawOidc) -> Result<Option<String>, ConfigError> {
        let Some(url) = &raw.jwks_url else {
            return Ok(None);
        };
        let key = format!("{at}.jwks_url");
        if raw.discovery_url.is_some() {
            return Err(self.err(
                &key,
                "set jwks_url or discovery_url, not both: with jwks_url the keys are read there and discovery is skipped",
            ));
        }
        check_http_url(url).map_err(|r| self.err(&key, r))?;
        Ok(Some(url.clone()))
    }

    /// A private CA for the issuer's HTTPS, checked now so that a wrong
    /// file is a config error rather than a failed fetch.
    fn ca_file(&self, at: &str, raw: &RawOidc) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = &raw.ca_file else {
            return Ok(None);
        };
        let path = self.resolve_file(path);
        crate::tls::check_ca_file(&path)
            .map_err(|e| self.err(&format!("{at}.ca_file"), e.to_string()))?;
        Ok(Some(path))
    }

    /// The caller's own token for discovery and the JWKS. Not listed with
    /// the secret files whose modes `check` reports: kubelet projects
    /// tokens readable by every user of the pod unless the volume says
    /// otherwise (0644 by default), and the token names the pod only.
    fn bearer_token_file(&self, at: &str, raw: &RawOidc) -> Result<Option<PathBuf>, ConfigError> {
        let Some(path) = &raw.bearer_token_file else {
            return Ok(None);
        };
        let path = self.resolve_file(path);
        let key = format!("{at}.bearer_token_file");
        crate::tls::read(&path)
            .and_then(|bytes| crate::oidc::bearer_token(&path, &bytes))
            .map_err(|e| self.err(&key, e.to_string()))?;
        Ok(Some(path))
    }

    fn algorithms(
        &self,
        key: &str,
        names: Option<&[String]>,
    ) -> Result<Vec<Algorithm>, ConfigError> {
        match names {
            None => Ok(DEFAULT_ALGORITHMS.to_vec()),
            Some([]) => Err(self.err(key, "needs at least one algorithm")),
            Some(names) => names
                .iter()
                .map(|n| parse_algorithm(n).map_err(|r| self.err(key, r)))
                .collect(),
        }
    }

    fn timings(&self, at: &str, raw: &RawOidc) -> Result<Timings, ConfigError> {
        let key = |k: &str| format!("{at}.{k}");
        let leeway = self.bounded_duration(
            &key("leeway"),
            raw.leeway.as_deref(),
            Duration::from_secs(30),
            Duration::ZERO..=Duration::from_secs(300),
            "at most 5m: a larger clock skew allowance keeps expired tokens alive",
        )?;
        let jwks_max_age = self.duration(
            &key("jwks_max_age"),
            raw.jwks_max_age.as_deref(),
            Duration::from_secs(15 * 60),
        )?;
        // Without a cool-down every made-up kid would become a fetch.
        let jwks_refetch_cooldown = self.bounded_duration(
            &key("jwks_refetch_cooldown"),
            raw.jwks_refetch_cooldown.as_deref(),
            Duration::from_secs(10),
            Duration::from_secs(1)..=Duration::from_secs(3600),
            "must be between 1s and 1h",
        )?;
        if jwks_max_age > Duration::from_secs(7 * 24 * 3600) {
            return Err(self.err(
                &key("jwks_max_age"),
                "at most 7 days: removed keys must stop working in bounded time",
            ));
        }
        if jwks_max_age < Duration::from_secs(1) || jwks_max_age < jwks_refetch_cooldown {
            return Err(self.err(
                &key("jwks_max_age"),
                "must be at least 1s and at least jwks_refetch_cooldown",
            ));
        }
        let http_timeout = self.bounded_duration(
            &key("http_timeout"),
            raw.http_timeout.as_deref(),
            Duration::from_secs(5),
            Duration::from_nanos(1)..=Duration::from_secs(60),
            "must be more than 0s and at most 60s",
        )?;
        Ok(Timings {
            leeway,
            jwks_max_age,
            jwks_refetch_cooldown,
            http_timeout,
        })
    }

    /// The issuer's declared platform, else the one its URL is recognised
    /// as: it decides which claims pin a workload in its bindings.
    fn platform(&self, at: &str, raw: &RawOidc) -> Result<IssuerPlatform, ConfigError> {
        let declared = raw
            .platform
            .as_deref()
            .map(str::parse::<Platform>)
            .transpose()
            .map_err(|r| self.err(&format!("{at}.platform"), r))?;
        let platform = IssuerPlatform::of(&raw.issuer, declared);
        if let Some(recognised) = platform.changes_the_rules_of(&raw.issuer) {
            return Err(self.err(
                &format!("{at}.platform"),
                format!(
                    "{:?} would change which claims pin a workload or name a customer on an issuer whose URL is {recognised}'s: declare a platform only for a URL that is not recognised (a proxy, GitHub Enterprise Server elsewhere, a test issuer)",
                    platform.platform.config_name()
                ),
            ));
        }
        Ok(platform)
    }

    fn claim_mapping(
        &self,
        at: &str,
        raw: &RawOidc,
        role_namespace: Option<String>,
    ) -> Result<ClaimMapping, ConfigError> {
        let path =
            |k: &str, p: &str| ClaimPath::parse(p).map_err(|r| self.err(&format!("{at}.{k}"), r));
        let required = match &raw.require_claims {
            None => Vec::new(),
            Some(table) if table.is_empty() => {
                return Err(self.err(
                    &format!("{at}.require_claims"),
                    "names no claim; leave it out to require none",
                ))
            }
            Some(table) => self.claim_matches(&format!("{at}.require_claims"), table)?,
        };
        Ok(ClaimMapping {
            roles_claim: raw
                .roles_claim
                .as_deref()
                .map(|p| path("roles_claim", p))
                .transpose()?,
            required,
            bindings: Vec::new(),
            platform: self.platform(at, raw)?,
            user_claim: path("user_claim", raw.user_claim.as_deref().unwrap_or("sub"))?,
            email_verified: EmailVerified::parse(
                raw.email_verified.as_deref().unwrap_or("required"),
            )
            .map_err(|r| self.err(&format!("{at}.email_verified"), r))?,
            scopes_claim: raw
                .scopes_claim
                .as_deref()
                .map(|p| path("scopes_claim", p))
                .transpose()?,
            role_namespace,
        })
    }
}

/// Issuer names, role namespaces and binding names appear in role names,
/// log fields and metric labels, so they are kept to a plain alphabet.
pub(super) fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty()
        || name.len() > 64
        || !name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
    {
        return Err(format!(
            "{:?} must be 1 to 64 letters, digits, '-' or '_'",
            crate::text::clip(name)
        ));
    }
    Ok(())
}
