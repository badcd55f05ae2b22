//! `nats-oidc-callout explain`: decides a token exactly as the service would
//! (the same `authorize`, on a request carrying the token as the connect
//! password) and shows the verdict, the roles found, and the permissions and
//! expiry a connection would get. For operators debugging a refusal.

use std::fmt::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::authorize::Authorizer;
use crate::callout::Mode;
use crate::cli::error::CliError;
use crate::clock::{unix_now, Deadline};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::nats::request::{ConnectOpts, RequestBody};
use crate::nats::user_jwt::Permission;
use crate::refusal::RefusalCode;
use crate::text;

/// Stands in for the nkey each connection brings.
const PLACEHOLDER_USER: &str = "U(the connecting client's nkey)";

pub struct Explanation {
    pub allowed: bool,
    pub text: String,
}

/// `explain`: the token from `--token`, else from stdin.
pub fn run(config: &Config, token: Option<String>) -> Result<ExitCode, CliError> {
    let token = match token.filter(|t| t != "-") {
        Some(t) => t,
        None => {
            let mut t = String::new();
            std::io::Read::read_to_string(&mut std::io::stdin(), &mut t)
                .map_err(|e| CliError::Usage(format!("cannot read the token from stdin: {e}")))?;
            t
        }
    };
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let explanation = runtime.block_on(explain(config, &token));
    print!("{}", explanation.text);
    Ok(if explanation.allowed {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub async fn explain(config: &Config, token: &str) -> Explanation {
    let token = token.trim();
    let metrics = Arc::new(Metrics::new());
    let issuers = match config.issuers(None, &metrics) {
        Ok(i) => i,
        Err(e) => return refused(String::new(), &e.to_string()),
    };
    let mut out = String::new();
    let mapping = match issuers.route(token) {
        Ok(issuer) => {
            let s = &issuer.settings;
            let _ = writeln!(out, "issuer:   {} ({})", s.issuer, s.name);
            // Only the issuer the token names is asked for keys, as in the
            // service; nothing else would refresh them in a one-shot command.
            if let Err(e) = issuer.keys.refresh().await {
                return refused(out, &format!("cannot load the issuer's keys: {e}"));
            }
            let _ = writeln!(out, "keys:     {} usable", issuer.keys.current().len());
            Some(issuer.extra.clone())
        }
        // `authorize` routes again and gives the precise refusal.
        Err(_) => None,
    };
    if let Some(bucket) = &config.grants.kv_bucket {
        let _ = writeln!(
            out,
            "note:     grants from KV bucket {bucket:?} and scopes asked for at connect are not shown here"
        );
    }
    let request = RequestBody {
        connect_opts: ConnectOpts {
            pass: Some(token.to_string()),
            ..ConnectOpts::default()
        },
        ..RequestBody::default()
    };
    let now = unix_now();
    let authorizer = config.authorizer(issuers, Default::default());
    let (user_from, roles_from) = mapping
        .as_ref()
        .map(|m| {
            (
                format!(" (from {})", m.user_claim),
                match &m.roles_claim {
                    Some(path) => format!(" (from {path})"),
                    None => " (no roles_claim: roles come from bindings)".into(),
                },
            )
        })
        .unwrap_or_default();
    // The connection's own facts (type, address) are not known here: the
    // rules that need them are shown, not checked.
    let admission = match authorizer.decide(&request, now, &Deadline::none()).await {
        Ok(a) => a,
        Err(refusal) => {
            if let Some(user) = &refusal.user {
                let _ = writeln!(out, "user:     {}{user_from}", text::name(user));
            }
            if refusal.code == RefusalCode::NoMappedRole {
                write_bindings(&mut out, &authorizer, token, now).await;
            }
            return refused(out, &format!("{} [{}]", refusal.reason, refusal.code));
        }
    };
    let _ = writeln!(out, "user:     {}{user_from}", text::name(&admission.user));
    let _ = writeln!(out, "roles:    {:?}{roles_from}", admission.asserted_roles);
    if let Some(ns) = mapping.as_ref().and_then(|m| m.role_namespace.as_ref()) {
        let _ = writeln!(
            out,
            "namespace: {ns} (roles looked up as [roles.\"{ns}:<role>\"])"
        );
    }
    write_bindings(&mut out, &authorizer, token, now).await;
    let _ = writeln!(out, "mapped:   {:?}", admission.roles);
    let _ = writeln!(out, "account:  {}", admission.account);
    if let Mode::Operator { accounts } = &config.callout.mode {
        if let Some(target) = accounts.get(&admission.account) {
            let signer = target.signer.public_key();
            let kind = if target.signs_with_identity_key() {
                "the account's own key"
            } else {
                "a signing key"
            };
            let _ = writeln!(out, "          public key {}", target.public_key);
            let _ = writeln!(out, "          user JWT signed by {signer} ({kind})");
        }
    }
    write_direction(&mut out, "publish", &admission.publish);
    write_direction(&mut out, "subscribe", &admission.subscribe);
    let _ = match &admission.resp {
        Some(r) => writeln!(
            out,
            "responses: {} per request received{}",
            r.max,
            r.ttl
                .map(|t| format!(", within {}", humantime::format_duration(t)))
                .unwrap_or_else(|| ", within nats-server's default of 2m".into())
        ),
        None => writeln!(out, "responses: (no allow_responses)"),
    };
    let limit = |v: Option<i64>| v.map_or("unlimited".to_string(), |n| n.to_string());
    let _ = writeln!(
        out,
        "limits:   subs {}, payload {}, data {} (bytes)",
        limit(admission.limits.subs),
        limit(admission.limits.payload),
        limit(admission.limits.data)
    );
    if admission.connection.is_empty() {
        let _ = writeln!(out, "connection: any type, address and time");
    } else {
        let _ = writeln!(
            out,
            "connection (checked at connect; every role's must hold):"
        );
        for (role, rules) in &admission.connection {
            let _ = writeln!(out, "  {}: {}", text::name(role), rules.describe());
        }
    }
    let _ = writeln!(
        out,
        "expires:  {} (in {}s; token exp {}, max_user_ttl {}s{}{})",
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(admission.expires)
        ),
        admission.expires.saturating_sub(now),
        admission.token_expires.unwrap_or_default(),
        admission.max_user_ttl.as_secs(),
        if admission.role_capped {
            " from a role's max_user_ttl"
        } else {
            ""
        },
        if admission.connection.iter().any(|(_, r)| r.times.is_some()) {
            "; or sooner, where a connect window closes"
        } else {
            ""
        }
    );
    let callout = config.callout(authorizer);
    match callout.user_claims(&admission, PLACEHOLDER_USER, now) {
        Ok(claims) => {
            let json = serde_json::to_string_pretty(&claims).unwrap_or_default();
            let _ = writeln!(
                out,
                "user JWT claims (sub is the connecting client's nkey):"
            );
            let _ = writeln!(out, "{}", text::block(&json));
        }
        Err(refusal) => {
            return refused(out, &format!("{} [{}]", refusal.reason, refusal.code));
        }
    }
    let _ = writeln!(out, "verdict:  ALLOWED");
    Explanation {
        allowed: true,
        text: out,
    }
}

/// Each `[[bindings]]` entry of the token's issuer: matched, or the first
/// claim that kept it from matching. Only called once the token verified.
async fn write_bindings(out: &mut String, authorizer: &Authorizer, token: &str, now: u64) {
    let Ok(issuer) = authorizer.issuers().route(token) else {
        return;
    };
    if issuer.extra.bindings.is_empty() {
        return;
    }
    let Ok(verified) = issuer.verifier.verify(token, now, &Deadline::none()).await else {
        return;
    };
    let _ = writeln!(out, "bindings of issuer {}:", issuer.settings.name);
    for b in &issuer.extra.bindings {
        let verdict = match b.check(&verified.claims) {
            Ok(()) => "matched".to_string(),
            Err(why) => format!("no match: {}", text::reason(&why)),
        };
        let _ = writeln!(
            out,
            "  {}{} -> {:?}: {verdict}",
            b.name,
            if b.broad { " (broad)" } else { "" },
            b.roles
        );
    }
}

fn write_direction(out: &mut String, name: &str, p: &Permission) {
    let _ = writeln!(out, "{name}:");
    let _ = writeln!(out, "  allow:  {}", list(&p.allow));
    let _ = writeln!(out, "  deny:   {}", list(&p.deny));
}

/// Subjects may hold values from the token: each is escaped.
fn list(items: &[String]) -> String {
    if items.is_empty() {
        "(none)".into()
    } else {
        items
            .iter()
            .map(|s| text::name(s))
            .collect::<Vec<_>>()
            .join(", ")
    }
}

fn refused(mut out: String, reason: &str) -> Explanation {
    let _ = writeln!(out, "verdict:  REFUSED: {}", text::reason(reason));
    Explanation {
        allowed: false,
        text: out,
    }
}
