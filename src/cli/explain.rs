//! `nats-oidc-callout explain`: decides a token exactly as the service would
//! (the same `authorize`, on a request carrying the token as the connect
//! password) and shows the verdict, the roles found, and the permissions and
//! expiry a connection would get. For operators debugging a refusal.

use std::fmt::Write;
use std::process::ExitCode;
use std::sync::Arc;

use crate::authorize::{Admission, Authorizer};
use crate::callout::{Callout, Mode};
use crate::cli::error::CliError;
use crate::clock::{unix_now, Deadline};
use crate::config::Config;
use crate::metrics::Metrics;
use crate::nats::request::{ConnectOpts, RequestBody};
use crate::nats::user_jwt::Permission;
use crate::policy::mapping::ClaimMapping;
use crate::refusal::{Refusal, RefusalCode};
use crate::text;

/// Stands in for the nkey each connection brings.
const PLACEHOLDER_USER: &str = "U(the connecting client's nkey)";

pub(super) struct Explanation {
    pub allowed: bool,
    pub text: String,
}

/// `explain`: the token from `--token`, else from stdin.
pub(super) fn run(config: &Config, token: Option<String>) -> Result<ExitCode, CliError> {
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

pub(super) async fn explain(config: &Config, token: &str) -> Explanation {
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
            let _ = writeln!(out, "platform: {}", issuer.extra.platform.describe());
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
    let sources = Sources::of(mapping.as_ref());
    // The connection's own facts (type, address) are not known here: the
    // rules that need them are shown, not checked.
    let admission = match authorizer.decide(&request, now, &Deadline::none()).await {
        Ok(a) => a,
        Err(refusal) => {
            if let Some(user) = &refusal.user {
                let _ = writeln!(out, "user:     {}{}", text::name(user), sources.user);
            }
            if refusal.code == RefusalCode::NoMappedRole {
                write_bindings(&mut out, &authorizer, token, now).await;
            }
            return refused(out, &format!("{} [{}]", refusal.reason, refusal.code));
        }
    };
    write_identity(&mut out, &admission, &sources, mapping.as_ref());
    write_bindings(&mut out, &authorizer, token, now).await;
    write_account(&mut out, config, &admission);
    write_permissions(&mut out, &admission);
    write_connection(&mut out, &admission);
    write_expiry(&mut out, &admission, now);
    let callout = config.callout(authorizer);
    if let Err(refusal) = write_user_jwt(&mut out, &callout, &admission, now) {
        return refused(out, &format!("{} [{}]", refusal.reason, refusal.code));
    }
    let _ = writeln!(out, "verdict:  ALLOWED");
    Explanation {
        allowed: true,
        text: out,
    }
}

/// Where the token's issuer reads the user and the roles from, as a
/// suffix of the lines that show them (empty for an unknown issuer).
#[derive(Default)]
struct Sources {
    user: String,
    roles: String,
}

impl Sources {
    fn of(mapping: Option<&ClaimMapping>) -> Sources {
        let Some(m) = mapping else {
            return Sources::default();
        };
        Sources {
            user: format!(" (from {})", m.user_claim),
            roles: match &m.roles_claim {
                Some(path) => format!(" (from {path})"),
                None => " (no roles_claim: roles come from bindings)".into(),
            },
        }
    }
}

fn write_identity(
    out: &mut String,
    admission: &Admission,
    sources: &Sources,
    mapping: Option<&ClaimMapping>,
) {
    let _ = writeln!(
        out,
        "user:     {}{}",
        text::name(&admission.user),
        sources.user
    );
    let _ = writeln!(
        out,
        "roles:    {:?}{}",
        admission.asserted_roles, sources.roles
    );
    if let Some(ns) = mapping.and_then(|m| m.role_namespace.as_ref()) {
        let _ = writeln!(
            out,
            "namespace: {ns} (roles looked up as [roles.\"{ns}:<role>\"])"
        );
    }
}

/// The mapped roles and the account they place the user in; in operator
/// mode, the account's key and what signs its user JWTs.
fn write_account(out: &mut String, config: &Config, admission: &Admission) {
    let _ = writeln!(out, "mapped:   {:?}", admission.roles);
    let _ = writeln!(out, "account:  {}", admission.account);
    let Mode::Operator { accounts } = &config.callout.mode else {
        return;
    };
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

/// Publish and subscribe lists, responses and limits.
fn write_permissions(out: &mut String, admission: &Admission) {
    write_direction(out, "publish", &admission.publish);
    write_direction(out, "subscribe", &admission.subscribe);
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
}

fn write_connection(out: &mut String, admission: &Admission) {
    if admission.connection.is_empty() {
        let _ = writeln!(out, "connection: any type, address and time");
        return;
    }
    let _ = writeln!(
        out,
        "connection (checked at connect; every role's must hold):"
    );
    for (role, rules) in &admission.connection {
        let _ = writeln!(out, "  {}: {}", text::name(role), rules.describe());
    }
}

fn write_expiry(out: &mut String, admission: &Admission, now: u64) {
    let capped = if admission.role_capped {
        " from a role's max_user_ttl"
    } else {
        ""
    };
    let windowed = if admission.connection.iter().any(|(_, r)| r.times.is_some()) {
        "; or sooner, where a connect window closes"
    } else {
        ""
    };
    let _ = writeln!(
        out,
        "expires:  {} (in {}s; token exp {}, max_user_ttl {}s{capped}{windowed})",
        humantime::format_rfc3339_seconds(
            std::time::UNIX_EPOCH + std::time::Duration::from_secs(admission.expires)
        ),
        admission.expires.saturating_sub(now),
        admission.token_expires.unwrap_or_default(),
        admission.max_user_ttl.as_secs(),
    );
}

/// The claims of the user JWT the service would sign, as JSON.
fn write_user_jwt(
    out: &mut String,
    callout: &Callout,
    admission: &Admission,
    now: u64,
) -> Result<(), Refusal> {
    let claims = callout.user_claims(admission, PLACEHOLDER_USER, now)?;
    let json = serde_json::to_string_pretty(&claims).unwrap_or_default();
    let _ = writeln!(
        out,
        "user JWT claims (sub is the connecting client's nkey):"
    );
    let _ = writeln!(out, "{}", text::block(&json));
    Ok(())
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
