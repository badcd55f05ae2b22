//! The decision for one connection attempt, without the wire: who is
//! connecting (a `[users.*]` identity, or the verified bearer token of a
//! trusted issuer), which roles that gives (from the token, the `[users.*]`
//! entry or the KV grants bucket), which scopes the connection asked for
//! and may have, and the permissions, account and lifetime that follow; or
//! why not. The service (through `callout`), `explain`, the benchmarks and
//! the fuzzers all decide here.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use crate::clock::Deadline;
use crate::nats::request::RequestBody;
use crate::nats::user_jwt::ConnectionLimits;
use crate::nats::user_jwt::Permission;
use crate::oidc::cache::VerifiedToken;
use crate::oidc::error::TokenError;
use crate::oidc::{Issuer, Issuers};
use crate::policy::bindings;
use crate::policy::claim_match;
use crate::policy::claims;
use crate::policy::connection::{self, Broken, ConnectionRules, Facts};
use crate::policy::grants::GrantStore;
use crate::policy::mapping::ClaimMapping;
use crate::policy::passwords::PasswordChecks;
use crate::policy::revocations::{Presented, Revocation, RevocationList};
use crate::policy::roles::{self, Limits, Permissions, Resp, RoleTable};
use crate::policy::scopes;
use crate::policy::template::Values;
use crate::policy::users::{ConfigUser, ConfigUsers, Grant, CONFIG_ISSUER};
use crate::refusal::{Refusal, RefusalCode};
use crate::text::summarize;

/// The trusted issuers, each with how its claims are read.
pub(crate) type TrustedIssuers = Issuers<ClaimMapping>;

/// Settings of the decision beyond issuers, roles and users.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Settings {
    /// Where users land when their roles name no account.
    pub account: String,
    /// A user JWT expires at the token's `exp`, and at most this long after
    /// the connect.
    pub max_user_ttl: Duration,
    /// The most scopes one connect may ask for.
    pub max_requested_scopes: usize,
}

/// What outlives a config reload: the KV grants store (when
/// `grants.kv_bucket` is set) and the password checks' bounds and memory.
#[derive(Clone, Default)]
pub struct Shared {
    pub grants: Option<Arc<GrantStore>>,
    pub passwords: Arc<PasswordChecks>,
    /// The revocation list (when `revocation.kv_bucket` is set).
    pub revocations: Option<Arc<RevocationList>>,
}

pub struct Authorizer {
    issuers: TrustedIssuers,
    roles: Arc<RoleTable>,
    users: ConfigUsers,
    grants: Option<Arc<GrantStore>>,
    revocations: Option<Arc<RevocationList>>,
    settings: Settings,
}

/// A connection that may go ahead, and everything its user JWT says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Admission {
    pub user: String,
    /// The name of the issuer that vouched for the user (`config` for
    /// `[users.*]`).
    pub issuer: String,
    /// The roles the token (or the `[users.*]` entry) names, as written.
    pub asserted_roles: Vec<String>,
    /// Roles added by the KV grants bucket.
    pub stored_roles: Vec<String>,
    /// The `[roles.*]` tables that matched.
    pub roles: Vec<String>,
    /// The scopes granted to this connection.
    pub scopes: Vec<String>,
    pub account: String,
    pub publish: Permission,
    pub subscribe: Permission,
    /// Replies to received requests, the widest of the roles'.
    pub resp: Option<Resp>,
    /// The tightest of the roles' limits.
    pub limits: Limits,
    /// Each role's connection rules; all must hold.
    pub connection: Vec<(String, ConnectionRules)>,
    /// The same rules as the user JWT states them.
    pub jwt_rules: ConnectionLimits,
    /// The `[[bindings]]` that gave roles, by name.
    pub bindings: Vec<String>,
    /// When the user JWT expires.
    pub expires: u64,
    /// The lifetime cap applied: the service's, or a role's when shorter.
    pub max_user_ttl: Duration,
    /// Whether that cap is a role's `max_user_ttl`.
    pub role_capped: bool,
    /// The token's own `exp`, when a token vouched for the user.
    pub token_expires: Option<u64>,
    /// The verified token that vouched for the user, for a revocation to
    /// find this connection by what it names (read only where connections
    /// are remembered, not on every decision).
    pub token: Option<Arc<VerifiedToken>>,
}

impl Admission {
    /// Whether the connection itself keeps every role's rules (type,
    /// address, time); a time window also ends the user JWT where it
    /// closes.
    pub fn check_connection(&mut self, facts: &Facts<'_>) -> Result<(), Refusal> {
        for (role, rules) in &self.connection {
            match rules.check(role, facts) {
                Ok(None) => {}
                Ok(Some(window_end)) => self.expires = self.expires.min(window_end),
                Err(broken) => {
                    let (code, reason) = match broken {
                        Broken::Type(r) => (RefusalCode::ConnectionType, r),
                        Broken::Source(r) => (RefusalCode::ConnectionSource, r),
                        Broken::Time(r) => (RefusalCode::ConnectionTime, r),
                    };
                    return Err(Refusal::new(code, reason).of(&self.user));
                }
            }
        }
        Ok(())
    }
}

/// What a refusal for no matching role says; written out only then.
enum Unmapped<'a> {
    ConfigUser,
    Token {
        namespace: Option<&'a str>,
        bindings: bool,
    },
}

impl Principal<'_> {
    fn unmapped_reason(&self) -> String {
        let (namespace, bindings) = match self.unmapped {
            Unmapped::ConfigUser => return format!("users.{} maps to no role", self.name),
            Unmapped::Token {
                namespace,
                bindings,
            } => (namespace, bindings),
        };
        let asserted = summarize(&self.asserted_roles);
        let mut reason = match namespace {
            None => format!("no mapped role: token roles {asserted} match no [roles.*] table"),
            Some(ns) => format!(
                "no mapped role: token roles {asserted} of issuer {:?} match no [roles.\"{ns}:<role>\"] table",
                self.source
            ),
        };
        if bindings {
            reason.push_str(", and no [[bindings]] entry matched its claims");
        }
        reason
    }
}

/// Who authenticated, before any role is looked up.
struct Principal<'a> {
    name: String,
    /// The issuer's name, or `config`.
    source: &'a str,
    token: Option<Arc<VerifiedToken>>,
    asserted_roles: Vec<String>,
    roles: RoleSource<'a>,
    /// Scopes the token entitles the user to.
    entitled: BTreeSet<String>,
    /// Why a principal with no matching role is refused.
    unmapped: Unmapped<'a>,
    /// The `[[bindings]]` its claims matched, by name.
    bindings: Vec<String>,
}

enum RoleSource<'a> {
    /// Names in the role table; the KV bucket may add more.
    Table(Vec<String>),
    /// A `[users.*]` entry's own permission set.
    Fixed(&'a RoleTable),
}

impl Authorizer {
    pub fn new(
        issuers: TrustedIssuers,
        roles: Arc<RoleTable>,
        users: &[ConfigUser],
        shared: Shared,
        settings: Settings,
    ) -> Self {
        Authorizer {
            issuers,
            roles,
            users: ConfigUsers::new(users, shared.passwords),
            grants: shared.grants,
            revocations: shared.revocations,
            settings,
        }
    }

    pub fn issuers(&self) -> &TrustedIssuers {
        &self.issuers
    }

    /// Takes the tokens `revocation` covers out of its issuer's cache of
    /// tokens that verified (the list is checked after the cache anyway).
    pub(crate) fn forget_revoked(&self, revocation: &Revocation) {
        let Some(issuer) = self
            .issuers
            .iter()
            .find(|i| i.settings.name == revocation.issuer)
        else {
            return;
        };
        let (revocation, user_claim) = (revocation.clone(), issuer.extra.user_claim.clone());
        issuer.verifier.forget(move |token| {
            let user = claims::user_name(&token.claims, &user_claim).unwrap_or_default();
            revocation.covers(&Presented::of(&revocation.issuer, &user, &token.claims))
        });
    }

    pub fn settings(&self) -> &Settings {
        &self.settings
    }

    /// Decides one verified authorization request at `now`: who, with
    /// which permissions, and whether this connection may (its type,
    /// address and time). Nothing slow (a signature check, a key fetch, a
    /// password hash) starts once `deadline` has passed, and no wait
    /// outlasts it: the refusal then has the code `request_expired`.
    pub async fn authorize(
        &self,
        request: &RequestBody,
        now: u64,
        deadline: &Deadline,
    ) -> Result<Admission, Refusal> {
        let mut admission = self.decide(request, now, deadline).await?;
        let client = &request.client_info;
        admission.check_connection(&Facts {
            kind: client.kind.as_deref(),
            client_type: client.client_type.as_deref(),
            host: client.host.as_deref(),
            now,
        })?;
        Ok(admission)
    }

    /// The decision without the connection's own facts: what `explain`
    /// shows for a token alone (the connection rules are checked by
    /// `authorize`).
    pub async fn decide(
        &self,
        request: &RequestBody,
        now: u64,
        deadline: &Deadline,
    ) -> Result<Admission, Refusal> {
        let requested = scopes::requested(
            request.connect_opts.name.as_deref(),
            self.settings.max_requested_scopes,
        )
        .map_err(|e| Refusal::new(RefusalCode::Scope, e.to_string()))?;
        let principal = self.authenticate(request, now, deadline).await?;
        self.admit(principal, &requested, now)
    }

    /// A `[users.*]` identity when the connect names one (or presents an
    /// nkey), else the bearer token's.
    async fn authenticate(
        &self,
        request: &RequestBody,
        now: u64,
        deadline: &Deadline,
    ) -> Result<Principal<'_>, Refusal> {
        if let Some(outcome) = self.users.authenticate(request, deadline).await {
            return Ok(from_config(outcome?));
        }
        let token = request.connect_opts.bearer_token().ok_or_else(|| {
            Refusal::new(
                RefusalCode::NoToken,
                "no bearer token: connect with the OIDC access token as the password",
            )
        })?;
        let refused = |e: TokenError| Refusal::new(e.code(), e.to_string());
        let issuer = self.issuers.route(token).map_err(refused)?;
        let verified = issuer
            .verifier
            .verify(token, now, deadline)
            .await
            .map_err(refused)?;
        let principal = from_token(issuer, verified)?;
        if let Err(refusal) = self.check_revoked(&principal, now) {
            // Verified again since the revocation (its reconnect): not
            // kept as a token that verified.
            issuer.verifier.forget_token(token);
            return Err(refusal);
        }
        Ok(principal)
    }

    /// A token whose subject, session or user was revoked at or after it
    /// was issued is refused; so is every token while the list has not
    /// been read (it could not say).
    fn check_revoked(&self, who: &Principal<'_>, now: u64) -> Result<(), Refusal> {
        let (Some(list), Some(token)) = (&self.revocations, &who.token) else {
            return Ok(());
        };
        if !list.is_loaded() {
            return Err(Refusal::new(
                RefusalCode::Unavailable,
                "the revocation list (revocation.kv_bucket) has not been read yet",
            )
            .of(&who.name));
        }
        let presented = Presented::of(who.source, &who.name, &token.claims);
        list.judges(presented.iat, token.exp)
            .map_err(|reason| Refusal::new(RefusalCode::TokenClaims, reason).of(&who.name))?;
        match list.covers(&presented, now) {
            None => Ok(()),
            Some((covered, stamp)) => Err(Refusal::new(
                RefusalCode::Revoked,
                format!(
                    "{covered} of issuer {} was revoked at {} ({}); a token issued later is admitted",
                    who.source,
                    crate::clock::rfc3339(stamp.at),
                    crate::text::name(&stamp.signal)
                ),
            )
            .of(&who.name)),
        }
    }

    /// Roles → permissions, the same steps for every kind of principal.
    fn admit(
        &self,
        mut who: Principal<'_>,
        requested: &[String],
        now: u64,
    ) -> Result<Admission, Refusal> {
        let refuse = |code: RefusalCode, reason: String| Refusal::new(code, reason).of(&who.name);
        let stored = self
            .grants
            .as_deref()
            .and_then(|g| g.get(who.source, &who.name));
        // A fixed permission set takes no roles from anywhere.
        let stored_roles = match (&who.roles, &stored) {
            (RoleSource::Table(_), Some(g)) => g.roles.clone(),
            _ => Vec::new(),
        };
        let mut entitled = std::mem::take(&mut who.entitled);
        if let Some(g) = &stored {
            entitled.extend(g.scopes.iter().cloned());
        }
        let granted = scopes::grant(requested, &entitled);
        let no_claims = serde_json::Map::new();
        let values = Values {
            name: &who.name,
            issuer: who.source,
            claims: who.token.as_ref().map_or(&no_claims, |t| &t.claims),
            scopes: &granted,
        };
        let found = match &who.roles {
            RoleSource::Table(names) => {
                let mut names = names.clone();
                names.extend(stored_roles.iter().cloned());
                self.roles.permissions_for(&names, &values)
            }
            RoleSource::Fixed(own) => own.permissions_for(std::slice::from_ref(&who.name), &values),
        };
        let Permissions {
            publish,
            subscribe,
            roles,
            account,
            resp,
            limits,
            max_user_ttl,
            connection,
        } = found
            .map_err(|e| refuse(e.code(), e.to_string()))?
            .ok_or_else(|| refuse(RefusalCode::NoMappedRole, who.unmapped_reason()))?;
        // The shortest lifetime wins: the service's, a role's, the token's.
        let ttl = max_user_ttl.map_or(self.settings.max_user_ttl, |r| {
            r.min(self.settings.max_user_ttl)
        });
        let latest = now.saturating_add(ttl.as_secs());
        let token_expires = who.token.as_ref().map(|t| t.exp);
        Ok(Admission {
            user: who.name,
            issuer: who.source.to_string(),
            asserted_roles: who.asserted_roles,
            stored_roles,
            roles,
            scopes: granted,
            account: account.unwrap_or_else(|| self.settings.account.clone()),
            publish,
            subscribe,
            resp,
            limits,
            jwt_rules: connection::jwt_rules(connection.iter().map(|(_, r)| r)),
            connection,
            expires: token_expires.map_or(latest, |exp| exp.min(latest)),
            bindings: who.bindings,
            max_user_ttl: ttl,
            role_capped: ttl < self.settings.max_user_ttl,
            token_expires,
            token: who.token,
        })
    }
}

fn from_config(user: &ConfigUser) -> Principal<'_> {
    let (asserted_roles, roles) = match &user.grant {
        Grant::Roles(names) => (names.clone(), RoleSource::Table(names.clone())),
        Grant::Fixed(own) => (Vec::new(), RoleSource::Fixed(own)),
    };
    Principal {
        name: user.name.clone(),
        source: CONFIG_ISSUER,
        token: None,
        asserted_roles,
        roles,
        entitled: BTreeSet::new(),
        unmapped: Unmapped::ConfigUser,
        bindings: Vec::new(),
    }
}

/// Verified claims → who the token names, its roles and entitlements.
fn from_token(
    issuer: &Issuer<ClaimMapping>,
    token: Arc<VerifiedToken>,
) -> Result<Principal<'_>, Refusal> {
    let mapping = &issuer.extra;
    let name = &issuer.settings.name;
    let claims = &token.claims;
    let user = claims::user_name(claims, &mapping.user_claim)
        .map_err(|e| Refusal::new(RefusalCode::IdentityClaim, e.to_string()))?;
    let refuse = |code: RefusalCode, reason: String| Refusal::new(code, reason).of(&user);
    claims::check_email_verified(claims, &mapping.user_claim, mapping.email_verified)
        .map_err(|e| refuse(RefusalCode::EmailNotVerified, e.to_string()))?;
    if let Some((m, miss)) = claim_match::first_miss(&mapping.required, claims) {
        return Err(refuse(
            RefusalCode::RequiredClaim,
            format!("issuer {name} requires it: {}", m.explain(&miss)),
        ));
    }
    let asserted = match &mapping.roles_claim {
        Some(path) => claims::roles(claims, path)
            .map_err(|e| refuse(RefusalCode::RolesClaim, e.to_string()))?,
        None => Vec::new(),
    };
    let bound = bindings::matched(&mapping.bindings, claims);
    let entitled = match &mapping.scopes_claim {
        Some(path) => scopes::entitled_by_claim(claims, path)
            .map_err(|e| refuse(RefusalCode::Scope, e.to_string()))?,
        None => BTreeSet::new(),
    };
    let mut table = roles::table_names(mapping.role_namespace.as_deref(), &asserted);
    for b in &bound {
        table.extend(b.roles.iter().cloned());
    }
    Ok(Principal {
        roles: RoleSource::Table(table),
        bindings: bound.iter().map(|b| b.name.clone()).collect(),
        name: user,
        source: name,
        token: Some(token),
        asserted_roles: asserted,
        entitled,
        unmapped: Unmapped::Token {
            namespace: mapping.role_namespace.as_deref(),
            bindings: !mapping.bindings.is_empty(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn principal(unmapped: Unmapped<'static>, source: &'static str) -> Principal<'static> {
        Principal {
            name: "alice".into(),
            source,
            token: None,
            asserted_roles: vec!["dev".into(), "ops".into()],
            roles: RoleSource::Table(Vec::new()),
            entitled: BTreeSet::new(),
            unmapped,
            bindings: Vec::new(),
        }
    }

    #[test]
    fn a_refusal_for_no_mapped_role_says_where_roles_were_looked_for() {
        let plain = Unmapped::Token {
            namespace: None,
            bindings: false,
        };
        assert_eq!(
            principal(plain, "corp").unmapped_reason(),
            r#"no mapped role: token roles ["dev", "ops"] match no [roles.*] table"#
        );
        let namespaced = Unmapped::Token {
            namespace: Some("corp"),
            bindings: true,
        };
        assert_eq!(
            principal(namespaced, "corp").unmapped_reason(),
            r#"no mapped role: token roles ["dev", "ops"] of issuer "corp" match no [roles."corp:<role>"] table, and no [[bindings]] entry matched its claims"#
        );
        assert_eq!(
            principal(Unmapped::ConfigUser, CONFIG_ISSUER).unmapped_reason(),
            "users.alice maps to no role"
        );
    }
}
