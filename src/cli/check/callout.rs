//! Lints about the callout's own setup: its keys, where users may land,
//! how long a user JWT lives.

use super::Lint;
use crate::callout::Mode;
use crate::config::Config;
use crate::oidc::discovery::is_loopback;
use crate::policy::roles::Role;
use crate::policy::subject::overlaps;
use crate::policy::users::Grant;

pub(super) const EXPOSED_SECRETS: Lint = Lint {
    name: "exposed-secrets",
    doc: "A seed or password file that every user on the host can read.",
    find: |config| config.exposed_secrets(),
    example: "[callout]\naccount = \"APP\"\nauth_account = \"AUTH\"\nissuer_seed_file = \"{exposed_file}\"\nxkey_seed_file = \"xkey.nk\"\n",
};

pub(super) const XKEY_UNSET: Lint = Lint {
    name: "xkey-unset",
    doc: "No xkey: the authorization requests, which carry bearer tokens, travel unencrypted \
          to whoever may subscribe to $SYS.REQ.USER.AUTH in the callout's account.",
    find: xkey_unset,
    example:
        "[callout]\naccount = \"APP\"\nauth_account = \"AUTH\"\nissuer_seed_file = \"issuer.nk\"\n",
};

fn xkey_unset(config: &Config) -> Vec<String> {
    if config.callout.xkey.is_some() {
        return Vec::new();
    }
    let server_side = if matches!(config.callout.mode, Mode::Operator { .. }) {
        "set the callout account's xkey (nsc edit authcallout --curve <X...>)"
    } else {
        "set auth_callout.xkey in nats-server"
    };
    vec![format!(
        "callout.xkey_seed is not set: authorization requests (which carry the bearer tokens) \
         travel unencrypted, readable by any client of the callout's account that may \
         subscribe to $SYS.REQ.USER.AUTH; {server_side} and callout.xkey_seed here"
    )]
}

pub(super) const ISSUER_IS_ACCOUNT_KEY: Lint = Lint {
    name: "issuer-is-account-key",
    doc: "Operator mode: the callout signs with the callout account's identity key, which \
          cannot be rotated without reissuing the account.",
    find: |config| match &config.callout.mode {
        Mode::Operator { .. }
            if config.callout.issuer.public_key() == config.callout.auth_account =>
        {
            vec![format!(
                "callout.issuer_seed is the callout account's own key ({}): it works, but a signing key (nsc edit account <AUTH> --sk generate) can be rotated without reissuing the account",
                config.callout.auth_account
            )]
        }
        _ => Vec::new(),
    },
    example: "[callout]\nmode = \"operator\"\naccount = \"APP\"\nauth_account = \"{issuer_pub}\"\nissuer_seed_file = \"issuer.nk\"\nxkey_seed_file = \"xkey.nk\"\n\n[callout.accounts.APP]\npublic_key = \"{app_pub}\"\nsigning_key_seed_file = \"{app_signing_file}\"\n",
};

pub(super) const ACCOUNT_IDENTITY_KEY: Lint = Lint {
    name: "account-identity-key",
    doc: "Operator mode: a users' account signs with its identity key, whose user JWTs \
          nats-server refuses under strict_signing_key_usage.",
    find: |config| {
        let Mode::Operator { accounts } = &config.callout.mode else {
            return Vec::new();
        };
        accounts
            .iter()
            .filter(|(_, account)| account.signs_with_identity_key())
            .map(|(name, _)| format!(
                "callout.accounts.{name}: the seed is the account's own key, not a signing key: nats-server refuses the user JWTs it signs if the operator sets strict_signing_key_usage; use a signing key (nsc edit account {name} --sk generate)"
            ))
            .collect()
    },
    example: "[callout]\nmode = \"operator\"\naccount = \"APP\"\nauth_account = \"{auth_pub}\"\nissuer_seed_file = \"issuer.nk\"\nxkey_seed_file = \"xkey.nk\"\n\n[callout.accounts.APP]\npublic_key = \"{app_pub}\"\nsigning_key_seed_file = \"{app_seed_file}\"\n",
};

const CALLOUT_ACCOUNT_REACH: &str = "can reach what the service's own connection reaches (the authorization requests on $SYS.REQ.USER.AUTH, which carry every login's token, and the grants bucket) as far as their permissions go";

pub(super) const USERS_IN_CALLOUT_ACCOUNT: Lint = Lint {
    name: "users-in-callout-account",
    doc: "Users placed in the callout's own account, where the authorization requests \
          (every login's token) and the grants bucket are.",
    find: users_in_callout_account,
    example: "[roles.reader]\nsub.allow = [\"orders.>\"]\naccount = \"AUTH\"\n",
};

fn users_in_callout_account(config: &Config) -> Vec<String> {
    let mut out = Vec::new();
    let default = config.callout.account.as_str();
    if config.callout.is_callout_account(default) == Some(true) {
        out.push(format!(
            "callout.account {default:?} is the callout's own account: users placed there {CALLOUT_ACCOUNT_REACH}; place users in another account"
        ));
    }
    match &config.callout.mode {
        Mode::Server => {
            for (name, role) in config.roles.iter() {
                let Some(account) = role.account.as_deref() else {
                    continue;
                };
                if config.callout.is_callout_account(account) == Some(true) {
                    out.push(format!(
                        "roles.{name}.account {account:?} is the callout's own account: its users can reach the authorization requests (every login's token) and the grants bucket as far as their permissions go; place them in another account"
                    ));
                }
            }
        }
        Mode::Operator { accounts } => {
            for (account, _) in accounts
                .iter()
                .filter(|(_, a)| a.public_key == config.callout.auth_account)
            {
                out.push(format!(
                    "callout.accounts.{account} is the callout's own account ({}): users placed there {CALLOUT_ACCOUNT_REACH}; place users in another account",
                    config.callout.auth_account
                ));
            }
        }
    }
    out
}

pub(super) const REVOCATION_REQUEST_REACHABLE: Lint = Lint {
    name: "revocation-request-reachable",
    doc: "Users placed in the callout's own account with publish permission on \
          revocation.request_subject, so they can revoke anyone's logins.",
    find: revocation_request_reachable,
    example: "[revocation]\nkv_bucket = \"revocations\"\nrequest_subject = \"admin.revoke\"\n\n[roles.reader]\naccount = \"AUTH\"\npub.allow = [\"admin.>\"]\n",
};

/// The request subject lives in the callout's own account: only users
/// placed there reach it (unless an account imports it, which nats-server's
/// config says and this one cannot see), so a role that may publish to it
/// elsewhere publishes into its own account, where no one answers.
fn revocation_request_reachable(config: &Config) -> Vec<String> {
    let Some(subject) = config.revocation.request_subject.as_deref() else {
        return Vec::new();
    };
    let mut roles: Vec<(String, &Role)> = config
        .roles
        .iter()
        .map(|(name, role)| (format!("roles.{name}"), role))
        .collect();
    for user in &config.users {
        if let Grant::Fixed(own) = &user.grant {
            roles.extend(
                own.iter()
                    .map(|(_, role)| (format!("users.{}", user.name), role)),
            );
        }
    }
    let mut out = Vec::new();
    for (key, role) in roles {
        let account = role.account.as_deref().unwrap_or(&config.callout.account);
        if config.callout.is_callout_account(account) != Some(true) {
            continue;
        }
        let reaching = role
            .publish
            .allow
            .iter()
            .map(|e| e.as_str())
            .find(|p| overlaps(p, subject));
        if let Some(p) = reaching {
            out.push(format!(
                "{key} places its users in {account:?}, the callout's own account, and pub.allow {p:?} reaches revocation.request_subject {subject:?}: its users can revoke anyone's logins; give publish permission on that subject to the admin only"
            ));
        }
    }
    out
}

pub(super) const LONG_USER_TTL: Lint = Lint {
    name: "long-user-ttl",
    doc: "User JWTs that live longer than a day: a connection outlives a revoked token \
          that long.",
    find: |config| {
        if config.callout.max_user_ttl <= std::time::Duration::from_secs(24 * 3600) {
            return Vec::new();
        }
        vec![format!(
            "callout.max_user_ttl is {}: a connection outlives a revoked token that long unless the token expires first",
            humantime::format_duration(config.callout.max_user_ttl)
        )]
    },
    example: "[callout]\naccount = \"APP\"\nauth_account = \"AUTH\"\nissuer_seed_file = \"issuer.nk\"\nxkey_seed_file = \"xkey.nk\"\nmax_user_ttl = \"2d\"\n",
};

/// Whether a server URL's connection is encrypted: `tls://` and `wss://`
/// always, any scheme once `[nats.tls]` requires TLS.
fn encrypted(url: &str, tls: bool) -> bool {
    tls || url.starts_with("tls://") || url.starts_with("wss://")
}

/// Whether a server URL's host is this machine.
fn loopback(url: &str) -> bool {
    url::Url::parse(url).is_ok_and(|u| is_loopback(&u))
}

pub(super) const NATS_IN_CLEAR_TEXT: Lint = Lint {
    name: "nats-in-clear-text",
    doc: "A NATS server reached without TLS over the network: the authorization requests \
          (bearer tokens, unless xkey-sealed) and the service's credentials cross it in clear \
          text, and so, most likely, do the clients' tokens.",
    find: |config| {
        let tls = config.nats.tls.is_some();
        config
            .nats
            .urls
            .iter()
            .filter(|u| !encrypted(u, tls) && !loopback(u))
            .map(|u| format!(
                "nats.url {:?} is neither TLS nor this machine: the authorization requests (which carry the bearer tokens unless xkey-sealed) and the service's own credentials cross the network in clear text; connect with tls:// and [nats.tls], and give clients TLS too: their tokens travel as NATS passwords",
                crate::secrets::redact_url(u)
            ))
            .collect()
    },
    example:
        "[nats]\nurl = \"nats://nats.example.com:4222\"\nuser = \"auth\"\npassword = \"authpw\"\n",
};
