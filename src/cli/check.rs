//! `nats-oidc-callout check`: the config has already been fully validated
//! by loading it; this adds warnings about choices that are valid but risky.

use std::path::Path;
use std::process::ExitCode;

use crate::callout::Mode;
use crate::cli::error::CliError;
use crate::config::Config;
use crate::policy::roles::Direction;
use crate::policy::subject::names_reserved;
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
        if role.publish.allow.is_empty() && role.subscribe.allow.is_empty() {
            out.push(format!(
                "roles.{name}: allows nothing; its users can connect but neither publish nor subscribe"
            ));
        }
    }
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
