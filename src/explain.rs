//! `nats-oidc-callout explain --token JWT`: validates a token exactly as the
//! service would and shows the verdict, the roles found, and the permissions
//! and expiry a connection would get. For operators debugging a refusal.

use std::fmt::Write;
use std::sync::Arc;

use crate::authorizer::{identify, unix_now, Extras};
use crate::config::Config;
use crate::issuers::Issuers;
use crate::key_manager::KeyManager;
use crate::metrics::Metrics;
use crate::permissions::Permission;

pub struct Explanation {
    pub allowed: bool,
    pub text: String,
}

pub async fn explain(config: &Config, token: &str) -> Explanation {
    let token = token.trim();
    let mut keys = Vec::new();
    for oidc in &config.oidc {
        match KeyManager::new(oidc.clone(), Arc::new(Metrics::new())) {
            Ok(k) => keys.push(k),
            Err(e) => return refused(String::new(), &e),
        }
    }
    let issuers = Issuers::new(&config.oidc, keys, config.callout.max_token_bytes);
    let issuer = match issuers.route(token) {
        Ok(i) => i,
        Err(e) => return refused(String::new(), &format!("{e} [{}]", e.code())),
    };
    let oidc = &issuer.oidc;
    let mut out = String::new();
    let _ = writeln!(out, "issuer:   {} ({})", oidc.issuer, oidc.name);
    // Only the issuer the token names is asked for keys, as in the service.
    if let Err(e) = issuer.keys.refresh().await {
        return refused(out, &format!("cannot load the issuer's keys: {e}"));
    }
    let _ = writeln!(out, "keys:     {} usable", issuer.keys.current().len());
    let now = unix_now();
    let verified = match issuer.verifier.verify(token, now).await {
        Ok(v) => v,
        Err(e) => return refused(out, &format!("{e} [{}]", e.code())),
    };
    if let Some(bucket) = &config.grants.kv_bucket {
        let _ = writeln!(
            out,
            "note:     grants from KV bucket {bucket:?} and scopes asked for at connect are not shown here"
        );
    }
    let identity = match identify(oidc, &config.roles, &verified.claims, Extras::default()) {
        Ok(i) => i,
        Err(refusal) => {
            if let Some(user) = &refusal.user {
                let _ = writeln!(out, "user:     {user} (from {})", oidc.user_claim);
            }
            return refused(out, &format!("{} [{}]", refusal.reason, refusal.code));
        }
    };
    let permissions = identity.permissions;
    let _ = writeln!(
        out,
        "user:     {} (from {})",
        identity.user, oidc.user_claim
    );
    let _ = writeln!(
        out,
        "roles:    {:?} (from {})",
        identity.token_roles, oidc.roles_claim
    );
    if let Some(ns) = &oidc.role_namespace {
        let _ = writeln!(
            out,
            "namespace: {ns} (roles looked up as [roles.\"{ns}:<role>\"])"
        );
    }
    let expires = verified
        .exp
        .min(now + config.callout.max_user_ttl.as_secs());
    let _ = writeln!(out, "mapped:   {:?}", permissions.roles);
    let _ = writeln!(
        out,
        "account:  {}",
        permissions
            .account
            .as_deref()
            .unwrap_or(&config.callout.account)
    );
    write_direction(&mut out, "publish", &permissions.publish);
    write_direction(&mut out, "subscribe", &permissions.subscribe);
    let _ = writeln!(
        out,
        "expires:  {} (in {}s; token exp {}, max_user_ttl {}s)",
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(expires)
        ),
        expires.saturating_sub(now),
        verified.exp,
        config.callout.max_user_ttl.as_secs()
    );
    let _ = writeln!(out, "verdict:  ALLOWED");
    Explanation {
        allowed: true,
        text: out,
    }
}

fn write_direction(out: &mut String, name: &str, p: &Permission) {
    let _ = writeln!(out, "{name}:");
    let _ = writeln!(out, "  allow:  {}", list(&p.allow));
    let _ = writeln!(out, "  deny:   {}", list(&p.deny));
}

fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items.join(", ")
    }
}

fn refused(mut out: String, reason: &str) -> Explanation {
    let _ = writeln!(out, "verdict:  REFUSED: {reason}");
    Explanation {
        allowed: false,
        text: out,
    }
}
