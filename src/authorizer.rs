//! The decision for one connection attempt, straight through:
//! request → bearer token → verified claims → roles → permissions →
//! user JWT → signed (and sealed) response.
//!
//! Every failure becomes a refusal: a response carrying the reason when the
//! request can be answered, an empty body when it cannot (nats-server refuses
//! the client at once instead of waiting for its timeout).

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use crate::auth_request::{self, Addressee, AuthRequest};
use crate::auth_response::{self, Addressed, Answer};
use crate::claims;
use crate::config::{CalloutConfig, Config, OidcConfig};
use crate::identities::{ConfigIdentities, ConfigUser, Grant};
use crate::issuers::Issuers;
use crate::key_manager::KeyManager;
use crate::kv_grants::KvGrants;
use crate::permissions::{self, Permissions, RoleTable};
use crate::scopes;
use crate::subject_template::Values;
use crate::user_jwt::{self, UserGrant};

pub struct Authorizer {
    callout: CalloutConfig,
    issuer_public: String,
    issuers: Issuers,
    roles: Arc<RoleTable>,
    identities: ConfigIdentities,
    kv: Option<Arc<KvGrants>>,
    max_requested_scopes: usize,
}

/// What happened, for logs and metrics.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Allowed {
        user: String,
        /// The name of the `[oidc]` issuer that vouched for the user.
        issuer: String,
        roles: Vec<String>,
        /// The scopes granted to this connection.
        scopes: Vec<String>,
        account: String,
        expires: u64,
    },
    Refused {
        code: &'static str,
        reason: String,
    },
}

pub struct Decision {
    /// The message body to publish on the request's reply subject.
    pub body: Vec<u8>,
    pub verdict: Verdict,
}

/// Why a connection is refused: a stable code for metrics and logs, and a
/// reason for the operator.
pub struct Refusal {
    pub code: &'static str,
    pub reason: String,
    pub user: Option<String>,
}

impl Refusal {
    fn new(code: &'static str, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
            user: None,
        }
    }
}

/// Who a verified token names and what its roles grant.
pub struct Identity {
    pub user: String,
    pub token_roles: Vec<String>,
    /// Roles added by the KV grants bucket.
    pub stored_roles: Vec<String>,
    /// The scopes granted to this connection.
    pub scopes: Vec<String>,
    pub permissions: Permissions,
}

/// What a connect adds to its credentials: the scopes it asks for, and the
/// grants bucket (when configured) that may add roles and entitlements.
#[derive(Clone, Copy, Default)]
pub struct Extras<'a> {
    pub requested_scopes: &'a [String],
    pub kv: Option<&'a KvGrants>,
}

/// Verified claims → identity → roles → permissions. Shared by the service
/// and `explain`, so the two can never disagree.
pub fn identify(
    oidc: &OidcConfig,
    roles: &RoleTable,
    verified: &serde_json::Map<String, serde_json::Value>,
    extras: Extras<'_>,
) -> Result<Identity, Refusal> {
    let user = claims::user_name(verified, &oidc.user_claim)
        .map_err(|e| Refusal::new("identity_claim", e.to_string()))?;
    let refuse = |code, reason: String| Refusal {
        code,
        reason,
        user: Some(user.clone()),
    };
    claims::check_email_verified(verified, &oidc.user_claim, oidc.email_verified)
        .map_err(|e| refuse("email_not_verified", e.to_string()))?;
    let token_roles = claims::roles(verified, &oidc.roles_claim)
        .map_err(|e| refuse("roles_claim", e.to_string()))?;
    let stored = extras.kv.and_then(|kv| kv.get(&oidc.name, &user));
    let stored_roles = stored.as_ref().map(|g| g.roles.clone()).unwrap_or_default();
    let mut table_names = permissions::table_names(oidc.role_namespace.as_deref(), &token_roles);
    table_names.extend(stored_roles.iter().cloned());
    let mut entitled = match &oidc.scopes_claim {
        Some(path) => {
            scopes::entitled_by_claim(verified, path).map_err(|e| refuse("scope", e.to_string()))?
        }
        None => BTreeSet::new(),
    };
    if let Some(g) = &stored {
        entitled.extend(g.scopes.iter().cloned());
    }
    let granted = scopes::grant(extras.requested_scopes, &entitled);
    let values = Values {
        name: &user,
        issuer: &oidc.name,
        claims: verified,
        scopes: &granted,
    };
    let permissions = roles
        .permissions_for(&table_names, &values)
        .map_err(|e| refuse(e.code(), e.to_string()))?
        .ok_or_else(|| {
            refuse(
                "no_mapped_role",
                match &oidc.role_namespace {
                    None => format!(
                        "no mapped role: token roles {} match no [roles.*] table",
                        summarize(&token_roles)
                    ),
                    Some(ns) => format!(
                        "no mapped role: token roles {} of issuer {:?} match no [roles.\"{ns}:<role>\"] table",
                        summarize(&token_roles),
                        oidc.name
                    ),
                },
            )
        })?;
    Ok(Identity {
        user,
        token_roles,
        stored_roles,
        scopes: granted,
        permissions,
    })
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default()
        .as_secs()
}

impl Authorizer {
    pub fn new(
        callout: CalloutConfig,
        issuers: Issuers,
        roles: Arc<RoleTable>,
        users: &[ConfigUser],
    ) -> Self {
        Authorizer {
            issuer_public: callout.issuer.public_key(),
            callout,
            issuers,
            roles,
            identities: ConfigIdentities::new(users),
            kv: None,
            max_requested_scopes: crate::config::DEFAULT_MAX_REQUESTED_SCOPES,
        }
    }

    /// The authorizer for `config`, verifying with `keys[i]` for issuer
    /// `config.oidc[i]`, and reading grants from `kv` when the config names
    /// a bucket.
    pub fn from_config(
        config: &Config,
        keys: Vec<Arc<KeyManager>>,
        kv: Option<Arc<KvGrants>>,
    ) -> Self {
        let mut authorizer = Authorizer::new(
            config.callout.clone(),
            Issuers::new(&config.oidc, keys, config.callout.max_token_bytes),
            config.roles.clone(),
            &config.users,
        );
        authorizer.kv = kv;
        authorizer.max_requested_scopes = config.grants.max_requested_scopes;
        authorizer
    }

    pub fn issuers(&self) -> &Issuers {
        &self.issuers
    }

    /// Decides one authorization request message and logs the decision.
    /// `max_response_bytes` is the server's max_payload: an allowing response
    /// larger than that could not be delivered, so it becomes a refusal that
    /// says why instead of a silent timeout.
    pub async fn decide(
        &self,
        payload: &[u8],
        xkey_header: Option<&str>,
        max_response_bytes: usize,
    ) -> Decision {
        let started = Instant::now();
        let now = unix_now();
        let request = match auth_request::decode(
            payload,
            xkey_header,
            self.callout.xkey.as_deref(),
            &self.issuer_public,
            now as i64,
        ) {
            Ok(r) => r,
            Err(failure) => {
                let reason = format!("bad authorization request: {}", failure.error);
                tracing::warn!(result = "refused", code = "bad_request", reason = %reason, latency_us = started.elapsed().as_micros() as u64, "authorization");
                let body = match failure.addressee {
                    Some(to) => self.respond_to(
                        &to,
                        failure.server_xkey.as_ref(),
                        Answer::Deny { error: &reason },
                        now,
                    ),
                    None => Vec::new(),
                };
                return Decision {
                    body,
                    verdict: Verdict::Refused {
                        code: "bad_request",
                        reason,
                    },
                };
            }
        };
        let to = Addressee {
            user_nkey: request.claims.nats.user_nkey.clone(),
            server_id: request.claims.nats.server_id.id.clone(),
        };
        let outcome = self.grant(&request, now).await.and_then(|(user_jwt, verdict)| {
            let body = self.respond_to(
                &to,
                request.server_xkey.as_ref(),
                Answer::Allow {
                    user_jwt: &user_jwt,
                },
                now,
            );
            if body.len() > max_response_bytes {
                return Err(Refusal {
                    code: "response_too_large",
                    reason: format!(
                        "the user JWT for these roles makes a {} byte response, more than the server's max_payload of {max_response_bytes}; shorten the roles' subject lists",
                        body.len()
                    ),
                    user: match &verdict {
                        Verdict::Allowed { user, .. } => Some(user.clone()),
                        Verdict::Refused { .. } => None,
                    },
                });
            }
            Ok((body, verdict))
        });
        let client = &request.claims.nats.client_info;
        let host = client.host.as_deref().unwrap_or("");
        let cid = client.id.unwrap_or(0);
        let server = &request.claims.nats.server_id.name;
        let latency_us = started.elapsed().as_micros() as u64;
        match outcome {
            Ok((body, verdict)) => {
                if let Verdict::Allowed {
                    user,
                    issuer,
                    roles,
                    scopes,
                    account,
                    expires,
                } = &verdict
                {
                    tracing::info!(result = "allowed", user = %user, issuer = %issuer, roles = ?roles, scopes = ?scopes, account = %account, expires, client_host = host, client_id = cid, server = %server, latency_us, "authorization");
                }
                Decision { body, verdict }
            }
            Err(refusal) => {
                let user = refusal.user.as_deref().unwrap_or("");
                tracing::warn!(result = "refused", user, code = refusal.code, reason = %refusal.reason, client_host = host, client_id = cid, server = %server, latency_us, "authorization");
                let body = self.respond_to(
                    &to,
                    request.server_xkey.as_ref(),
                    Answer::Deny {
                        error: &refusal.reason,
                    },
                    now,
                );
                Decision {
                    body,
                    verdict: Verdict::Refused {
                        code: refusal.code,
                        reason: refusal.reason,
                    },
                }
            }
        }
    }

    async fn grant(&self, request: &AuthRequest, now: u64) -> Result<(String, Verdict), Refusal> {
        let requested = scopes::requested(
            request.claims.nats.connect_opts.name.as_deref(),
            self.max_requested_scopes,
        )
        .map_err(|e| Refusal::new("scope", e.to_string()))?;
        let extras = Extras {
            requested_scopes: &requested,
            kv: self.kv.as_deref(),
        };
        if let Some(outcome) = self.identities.authenticate(&request.claims).await {
            let user = outcome.map_err(|d| Refusal {
                code: d.code,
                reason: d.reason,
                user: d.user,
            })?;
            let (permissions, scopes) = config_user_permissions(user, &self.roles, extras)?;
            let expires = now.saturating_add(self.callout.max_user_ttl.as_secs());
            let who = Who {
                user: &user.name,
                issuer: CONFIG_ISSUER,
                scopes,
            };
            return Ok(self.issue(request, who, permissions, expires, now));
        }
        let token = request
            .claims
            .nats
            .connect_opts
            .bearer_token()
            .ok_or_else(|| {
                Refusal::new(
                    "no_token",
                    "no bearer token: connect with the OIDC access token as the password",
                )
            })?;
        let token_refusal = |e: crate::token::TokenError| Refusal::new(e.code(), e.to_string());
        let issuer = self.issuers.route(token).map_err(token_refusal)?;
        let verified = issuer
            .verifier
            .verify(token, now)
            .await
            .map_err(token_refusal)?;
        let Identity {
            user,
            permissions,
            scopes,
            ..
        } = identify(&issuer.oidc, &self.roles, &verified.claims, extras)?;
        let expires = verified
            .exp
            .min(now.saturating_add(self.callout.max_user_ttl.as_secs()));
        let who = Who {
            user: &user,
            issuer: &issuer.oidc.name,
            scopes,
        };
        Ok(self.issue(request, who, permissions, expires, now))
    }

    /// The user JWT for an authenticated user, and the verdict to log.
    fn issue(
        &self,
        request: &AuthRequest,
        who: Who<'_>,
        permissions: Permissions,
        expires: u64,
        now: u64,
    ) -> (String, Verdict) {
        let Who {
            user,
            issuer,
            scopes,
        } = who;
        let account = permissions
            .account
            .clone()
            .unwrap_or_else(|| self.callout.account.clone());
        let user_jwt = user_jwt::issue(
            &UserGrant {
                user_nkey: &request.claims.nats.user_nkey,
                name: user,
                account: &account,
                permissions: &permissions,
                expires,
            },
            &self.callout.issuer,
            now,
        );
        (
            user_jwt,
            Verdict::Allowed {
                user: user.to_string(),
                issuer: issuer.to_string(),
                roles: permissions.roles,
                scopes,
                account,
                expires,
            },
        )
    }

    fn respond_to(
        &self,
        to: &Addressee,
        server_xkey: Option<&nkeys::XKey>,
        answer: Answer<'_>,
        now: u64,
    ) -> Vec<u8> {
        let addressed = Addressed {
            user_nkey: &to.user_nkey,
            server_id: &to.server_id,
        };
        let seal = match (self.callout.xkey.as_deref(), server_xkey) {
            (Some(ours), Some(theirs)) => Some((ours, theirs)),
            _ => None,
        };
        match auth_response::build(&addressed, answer, &self.callout.issuer, seal, now) {
            Ok(body) => body,
            Err(e) => {
                tracing::error!(error = %e, "cannot build the authorization response; the client will be refused");
                Vec::new()
            }
        }
    }
}

/// The `issuer` logged for identities from `[users.*]`.
pub const CONFIG_ISSUER: &str = "config";

/// Who is being admitted, for the user JWT and the log.
struct Who<'a> {
    user: &'a str,
    issuer: &'a str,
    scopes: Vec<String>,
}

/// A config user's grant: its roles from the table (plus those of the
/// grants bucket), or its own fixed set; and its granted scopes. Templates
/// cannot name token claims: there are none.
pub fn config_user_permissions(
    user: &ConfigUser,
    roles: &RoleTable,
    extras: Extras<'_>,
) -> Result<(Permissions, Vec<String>), Refusal> {
    let stored = extras.kv.and_then(|kv| kv.get(CONFIG_ISSUER, &user.name));
    let entitled: BTreeSet<String> = stored
        .as_ref()
        .map(|g| g.scopes.iter().cloned().collect())
        .unwrap_or_default();
    let granted = scopes::grant(extras.requested_scopes, &entitled);
    let no_claims = serde_json::Map::new();
    let values = Values {
        name: &user.name,
        issuer: CONFIG_ISSUER,
        claims: &no_claims,
        scopes: &granted,
    };
    let permissions = match &user.grant {
        Grant::Roles(names) => {
            let mut names = names.clone();
            if let Some(g) = &stored {
                names.extend(g.roles.iter().cloned());
            }
            roles.permissions_for(&names, &values)
        }
        Grant::Fixed(own) => own.permissions_for(std::slice::from_ref(&user.name), &values),
    };
    let refuse = |code, reason| Refusal {
        code,
        reason,
        user: Some(user.name.clone()),
    };
    let permissions = permissions
        .map_err(|e| refuse(e.code(), e.to_string()))?
        .ok_or_else(|| {
            refuse(
                "no_mapped_role",
                format!("users.{} maps to no role", user.name),
            )
        })?;
    Ok((permissions, granted))
}

/// Lists roles for a refusal message without letting a huge claim flood the log.
fn summarize(roles: &[String]) -> String {
    const MAX: usize = 10;
    if roles.is_empty() {
        return "[] (none)".into();
    }
    let shown: Vec<&str> = roles.iter().take(MAX).map(String::as_str).collect();
    if roles.len() > MAX {
        format!("{shown:?} and {} more", roles.len() - MAX)
    } else {
        format!("{shown:?}")
    }
}
