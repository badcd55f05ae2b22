//! `nats-oidc-callout check`: the config has already been fully validated
//! by loading it; this adds warnings about choices that are valid but risky.

use std::path::Path;
use std::process::ExitCode;

use crate::callout::Mode;
use crate::cli::error::CliError;
use crate::config::Config;
use crate::policy::roles::{Direction, Role};
use crate::policy::subject::{names_reserved, overlaps};
use crate::policy::users::{bcrypt_cost, Credential, Grant};

/// `check`: prints the warnings and says the config is valid.
pub fn run(config: &Config, path: &Path) -> Result<ExitCode, CliError> {
    let warnings = warnings(config);
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "config {} is valid ({} warning{})",
        path.display(),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

pub fn warnings(config: &Config) -> Vec<String> {
    let mut out = config.exposed_secrets();
    let operator = matches!(config.callout.mode, Mode::Operator { .. });
    if config.callout.xkey.is_none() {
        let server_side = if operator {
            "set the callout account's xkey (nsc edit authcallout --curve <X...>)"
        } else {
            "set auth_callout.xkey in nats-server"
        };
        out.push(format!(
            "callout.xkey_seed is not set: authorization requests (which carry the bearer tokens) \
             travel unencrypted, readable by any client of the callout's account that may \
             subscribe to $SYS.REQ.USER.AUTH; {server_side} and callout.xkey_seed here"
        ));
    }
    if let Mode::Operator { accounts } = &config.callout.mode {
        if config.callout.issuer.public_key() == config.callout.auth_account {
            out.push(format!(
                "callout.issuer_seed is the callout account's own key ({}): it works, but a signing key (nsc edit account <AUTH> --sk generate) can be rotated without reissuing the account",
                config.callout.auth_account
            ));
        }
        for (name, account) in accounts {
            if account.signs_with_identity_key() {
                out.push(format!(
                    "callout.accounts.{name}: the seed is the account's own key, not a signing key: nats-server refuses the user JWTs it signs if the operator sets strict_signing_key_usage; use a signing key (nsc edit account {name} --sk generate)"
                ));
            }
        }
    }
    let shared = config
        .oidc
        .iter()
        .filter(|o| o.claims.role_namespace.is_none())
        .map(|o| o.settings.name.as_str())
        .collect::<Vec<_>>();
    if shared.len() > 1 {
        out.push(format!(
            "issuers {shared:?} share the plain [roles.*] table (role_namespace = \"\"): each can grant the other's roles by naming them in its tokens"
        ));
    }
    let named_by_users = |role: &str| {
        config
            .users
            .iter()
            .any(|u| matches!(&u.grant, Grant::Roles(names) if names.iter().any(|n| n == role)))
    };
    let sources = config.oidc.len() + usize::from(!config.users.is_empty());
    for (name, role) in config.roles.iter() {
        if sources > 1 {
            let entries = [&role.publish, &role.subscribe]
                .into_iter()
                .flat_map(|d| d.allow.iter());
            for entry in
                entries.filter(|e| e.template().is_some_and(|t| t.per_user_without_issuer()))
            {
                out.push(format!(
                    "roles.{name}: {:?} is per user but not per issuer: with several issuers (or [users.*]) two sources can name the same user and share these subjects; add {{{{issuer}}}}",
                    entry.as_str()
                ));
            }
        }
        if shared.is_empty()
            && !name.contains(':')
            && !named_by_users(name)
            && config.grants.kv_bucket.is_none()
        {
            out.push(format!(
                "roles.{name}: no issuer looks roles up without a namespace (every [oidc] has a role_namespace), so no token reaches this role; name it \"<namespace>:{name}\""
            ));
        }
        for (dir_name, dir) in [("pub", &role.publish), ("sub", &role.subscribe)] {
            warn_direction(&mut out, name, dir_name, dir);
        }
        if let Some(account) = role.account.as_deref().filter(|a| {
            let a = a.trim_start_matches('$');
            a.eq_ignore_ascii_case("SYS") || a.eq_ignore_ascii_case("SYSTEM")
        }) {
            out.push(format!(
                "roles.{name}.account is {account:?}: if that is nats-server's system account, its users \
                 can see and control server internals"
            ));
        }
        warn_role_grants(&mut out, name, role, config.grants.kv_bucket.as_deref());
        if role.publish.allow.is_empty()
            && role.subscribe.allow.is_empty()
            && role.granted.is_empty()
            && role.resp.is_none()
        {
            out.push(format!(
                "roles.{name}: allows nothing; its users can connect but neither publish nor subscribe"
            ));
        }
    }
    warn_consumers_others_create(&mut out, config);
    for user in &config.users {
        if let Credential::Bcrypt(hash) = &user.credential {
            let cost = bcrypt_cost(hash).unwrap_or(0);
            if cost < 10 {
                out.push(format!(
                    "users.{}.password_bcrypt has bcrypt cost {cost}: below 10 a stolen config makes the password cheap to guess",
                    user.name
                ));
            } else if cost >= 14 {
                out.push(format!(
                    "users.{}.password_bcrypt has bcrypt cost {cost}: a check takes a second or more, which must fit in nats-server's auth timeout (2 s by default) together with any wait for a free core",
                    user.name
                ));
            }
        }
    }
    if config.callout.max_user_ttl > std::time::Duration::from_secs(24 * 3600) {
        out.push(format!(
            "callout.max_user_ttl is {}: a connection outlives a revoked token that long unless the token expires first",
            humantime::format_duration(config.callout.max_user_ttl)
        ));
    }
    out
}

fn warn_direction(out: &mut Vec<String>, role: &str, dir_name: &str, dir: &Direction) {
    for entry in dir
        .allow
        .iter()
        .filter(|e| e.template().is_some_and(|t| t.fills_first_token()))
    {
        out.push(format!(
            "roles.{role}.{dir_name}.allow: {:?} lets a value from the token choose the subject's first token; values starting with $ or _INBOX are refused, but any other namespace of the account can be named by whoever controls that value; start with a fixed token (\"users.{{{{name}}}}.>\")",
            entry.as_str()
        ));
    }
    for subject in dir.allow.iter().map(|e| e.as_str()) {
        if subject == ">" {
            out.push(format!(
                "roles.{role}.{dir_name}.allow grants \">\" (every subject{})",
                if dir.deny.is_empty() {
                    ""
                } else {
                    " except its deny list"
                }
            ));
        } else if names_reserved(subject) {
            out.push(format!(
                "roles.{role}.{dir_name}.allow grants {subject:?}: $SYS subjects carry server and account internals (the auth callout subject among them); naming one lifts the automatic deny of $SYS.> for the {dir_name} permissions of every user holding this role, so any wildcard grant of their other roles reaches all of $SYS"
            ));
        }
    }
}

/// Streams one role may manage before `check` asks whether it should.
const MANY_STREAMS: usize = 3;

fn warn_role_grants(out: &mut Vec<String>, name: &str, role: &Role, grants_bucket: Option<&str>) {
    let publishes = || {
        role.publish
            .allow
            .iter()
            .map(|e| e.as_str())
            .chain(role.granted.iter().map(|(e, _)| e.as_str()))
    };
    if role.resp.is_some() {
        if let Some(inbox) = role
            .publish
            .allow
            .iter()
            .find(|e| overlaps(e.as_str(), "_INBOX.>"))
        {
            out.push(format!(
                "roles.{name}: pub.allow {:?} reaches every client's _INBOX next to resp: resp already lets it answer the requests it receives; publishing into other inboxes lets it forge replies to requests it never saw",
                inbox.as_str()
            ));
        }
    }
    let manage = &role.jetstream.manage;
    if manage.len() > MANY_STREAMS {
        out.push(format!(
            "roles.{name}.jetstream.manage names {} streams: each can be deleted or purged (all its messages gone) by any user of this role; keep manage to the streams a service owns",
            manage.len()
        ));
    }
    if let Some(bucket) = grants_bucket {
        let stream = format!("KV_{bucket}");
        let writes = [
            format!("$KV.{bucket}.>"),
            format!("$JS.API.STREAM.*.{stream}"),
            format!("$JS.API.STREAM.MSG.DELETE.{stream}"),
        ];
        if let Some(subject) = publishes().find(|p| writes.iter().any(|w| overlaps(p, w))) {
            out.push(format!(
                "roles.{name}: publishing {subject:?} can change the grants bucket {bucket:?} (grants.kv_bucket), so its users can give themselves and others any role"
            ));
        }
    }
    if let Some(types) = role.connection.as_ref().and_then(|r| r.types.as_ref()) {
        for t in types {
            let Some(twin) = t.twin().filter(|w| !types.contains(w)) else {
                continue;
            };
            out.push(format!(
                "roles.{name}.connection.types lists {} without {}: nats-server does not tell the two apart in the authorization request, so the service admits such a connection only where both are listed; this role admits neither",
                t.as_str(),
                twin.as_str()
            ));
        }
    }
    for scope in role.kv.write.iter().filter(|s| s.keys.is_some()) {
        out.push(format!(
            "roles.{name}.kv.write {}/{}: a put of these keys with the header Nats-Rollup: all empties the whole bucket (subject permissions cannot see headers); unless every user of this role may do that, make the bucket refuse rollups (nats stream edit KV_{} --no-allow-rollup), which also stops KV purge",
            scope.bucket,
            scope.keys.as_deref().unwrap_or_default(),
            scope.bucket
        ));
    }
    let uses_streams = !role.jetstream.is_empty() || !role.kv.is_empty();
    if uses_streams
        && !role
            .subscribe
            .allow
            .iter()
            .any(|e| overlaps(e.as_str(), "_INBOX.x.y"))
    {
        out.push(format!(
            "roles.{name}: jetstream and kv answer on the client's inbox, and sub.allow has no _INBOX subject; unless another role of its users grants one (or clients use a custom inbox prefix that sub.allow covers), every JetStream and KV call times out"
        ));
    }
}

/// `$JS.API.CONSUMER.CREATE.<stream>` takes the consumer's name from the
/// request body, so whoever may create consumers on a stream can rewrite
/// any durable on it: a `consume` grant there is only as safe as every
/// `replay` grant (and whole-bucket KV `read`) on the same stream.
fn warn_consumers_others_create(out: &mut Vec<String>, config: &Config) {
    let mut creators: Vec<(String, String)> = Vec::new();
    for (name, role) in config.roles.iter() {
        for stream in &role.jetstream.replay {
            creators.push((stream.clone(), format!("roles.{name}.jetstream.replay")));
        }
        for scope in role.kv.read.iter().filter(|s| s.keys.is_none()) {
            creators.push((
                format!("KV_{}", scope.bucket),
                format!("roles.{name}.kv.read"),
            ));
        }
    }
    for (name, role) in config.roles.iter() {
        for c in &role.jetstream.consume {
            for (_, by) in creators.iter().filter(|(s, _)| *s == c.stream) {
                out.push(format!(
                    "roles.{name}.jetstream.consume {}/{}: {by} may create consumers on stream {}, and a consumer create names its consumer in the request body, which subject permissions cannot check: those users can rewrite the durable {:?} (its filter, its delivery subject)",
                    c.stream, c.consumer, c.stream, c.consumer
                ));
            }
        }
    }
}
