//! `nats-oidc-callout check`: the config has already been fully validated
//! by loading it; this adds warnings about choices that are valid but risky.

use std::path::Path;
use std::process::ExitCode;

use crate::callout::Mode;
use crate::cli::error::CliError;
use crate::config::Config;
use crate::policy::bindings;
use crate::policy::roles::{Direction, Role};
use crate::policy::subject::{names_reserved, overlaps};
use crate::policy::template::Entry;
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
            // KV key patterns hold placeholders too (`profiles/{{sub}}.>`).
            let entries = [&role.publish, &role.subscribe]
                .into_iter()
                .flat_map(|d| d.allow.iter())
                .chain(role.granted.iter().map(|(e, _)| e));
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
    warn_accounts(&mut out, config);
    warn_consumers_others_create(&mut out, config);
    warn_delivery_anywhere(&mut out, config);
    for issuer in &config.oidc {
        let url = &issuer.settings.issuer;
        if let Some((platform, owners)) = shared_issuer(url) {
            // Only an exact owner narrows a shared issuer to one customer.
            let narrowed = issuer.claims.required.iter().any(|m| {
                m.is_exact()
                    && owners
                        .iter()
                        .any(|o| m.name == *o || m.name == format!("/{o}"))
            });
            if !narrowed {
                out.push(format!(
                    "oidc[{}]: {url} is the shared issuer of {platform}: every one of its customers can mint a token for your audience; set require_claims to your organisation exactly (one of {owners:?}), without which only the exact pins of bindings keep their tokens out",
                    issuer.settings.name
                ));
            }
        }
        for b in &issuer.claims.bindings {
            let pin = b.pin(url);
            if bindings::is_github(url)
                && !b.broad
                && pin.is_some_and(|p| p.name == "repository" || p.name == "/repository")
                && !b
                    .matches
                    .iter()
                    .any(|m| m.name == "repository_id" && m.is_exact())
            {
                out.push(format!(
                    "binding {} pins the repository by name: after a rename or deletion someone else can take the name; pin repository_id (and require repository_owner_id on the issuer)",
                    b.name
                ));
            }
            if !b.broad {
                continue;
            }
            let wanted: Vec<String> = b.matches.iter().map(|m| m.wanted()).collect();
            out.push(format!(
                "binding {} is broad: every token of issuer {} with {} gets roles {:?}{}",
                b.name,
                issuer.settings.name,
                wanted.join(" and "),
                b.roles,
                if pin.is_some() {
                    String::new()
                } else {
                    format!(
                        ", whichever workload it names (no exact {})",
                        bindings::pinning_claims(url).join(", ")
                    )
                }
            ));
        }
    }
    if let Mode::Operator { accounts } = &config.callout.mode {
        for (account, _) in accounts
            .iter()
            .filter(|(_, a)| a.public_key == config.callout.auth_account)
        {
            out.push(format!(
                "callout.accounts.{account} is the callout's own account ({}): users placed there can reach what the service's own connection reaches (the authorization requests on $SYS.REQ.USER.AUTH, which carry every login's token, and the grants bucket) as far as their permissions go; place users in another account",
                config.callout.auth_account
            ));
        }
    }
    for user in &config.users {
        if let Grant::Fixed(own) = &user.grant {
            for (_, role) in own.iter() {
                for (dir_name, dir) in [("pub", &role.publish), ("sub", &role.subscribe)] {
                    for entry in dir.allow.iter().filter(|e| reaches_others_inboxes(e)) {
                        out.push(format!(
                            "users.{}.{dir_name}.allow {:?} reaches other users' inboxes (every reply sent to any client of the account); grant \"{{{{inbox}}}}.>\" (this user's private inbox) instead",
                            user.name,
                            entry.as_str()
                        ));
                    }
                }
            }
        }
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

/// Whether an allow entry reaches inboxes other than the user's own: it
/// overlaps `_INBOX.>` and is not `{{inbox}}...` (a placeholder that fills
/// the first token cannot start with `_`).
fn reaches_others_inboxes(entry: &Entry) -> bool {
    // ">" is warned about as every subject, inboxes included.
    if entry.as_str() == ">" {
        return false;
    }
    if let Some(t) = entry.template() {
        if t.is_private_inbox() || t.fills_first_token() {
            return false;
        }
    }
    overlaps(entry.as_str(), "_INBOX.x.y")
}

fn warn_direction(out: &mut Vec<String>, role: &str, dir_name: &str, dir: &Direction) {
    for entry in dir
        .allow
        .iter()
        .filter(|e| e.template().is_some_and(|t| t.fills_first_token()))
    {
        out.push(format!(
            "roles.{role}.{dir_name}.allow: {:?} lets a value from the token choose the subject's first token; values starting with $ or _ are refused, but any other namespace of the account can be named by whoever controls that value; start with a fixed token (\"users.{{{{name}}}}.>\")",
            entry.as_str()
        ));
    }
    for entry in dir.allow.iter().filter(|e| reaches_others_inboxes(e)) {
        out.push(if dir_name == "sub" {
            format!(
                "roles.{role}.sub.allow {:?} reaches other users' inboxes: a subscriber of _INBOX.> receives every reply sent to any client of the account (request/reply answers, JetStream and KV answers, a KV get of someone else's key); grant the private inbox \"{{{{inbox}}}}.>\" instead and set the clients' inbox prefix",
                entry.as_str()
            )
        } else {
            format!(
                "roles.{role}.pub.allow {:?} reaches other users' inboxes: its users can forge replies (and JetStream answers) to requests they never saw; answering requests needs resp, and its own requests need no publish right on inboxes",
                entry.as_str()
            )
        });
    }
    for subject in dir.allow.iter().map(|e| e.as_str()) {
        if subject == ">" {
            out.push(format!(
                "roles.{role}.{dir_name}.allow grants \">\" (every subject{}, every user's inbox included)",
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

fn warn_role_grants(out: &mut Vec<String>, name: &str, role: &Role, grants_bucket: Option<&str>) {
    let publishes = || {
        role.publish
            .allow
            .iter()
            .map(|e| e.as_str())
            .chain(role.granted.iter().map(|(e, _)| e.as_str()))
    };
    if !role.jetstream.manage.is_empty() {
        out.push(format!(
            "roles.{name}.jetstream.manage {:?}: a stream's config reaches the whole account (its subjects capture any subject, mirror and sources copy any stream or bucket, republish writes to any subject), and each stream can be deleted or purged: manage is read and write of the whole account; give it only to the account's administrators",
            role.jetstream.manage
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
            "roles.{name}: jetstream and kv answer on the client's inbox, and sub.allow has no inbox; unless another role of its users grants one, every JetStream and KV call times out: grant \"{{{{inbox}}}}.>\" (the user's private inbox) and set the clients' inbox prefix"
        ));
    }
}

/// Users placed where JetStream's answers or the callout's requests are:
/// the account holding the streams, and the callout's own account.
fn warn_accounts(out: &mut Vec<String>, config: &Config) {
    let default = config.callout.account.as_str();
    if config.callout.is_callout_account(default) == Some(true) {
        out.push(format!(
            "callout.account {default:?} is the callout's own account: users placed there can reach what the service's own connection reaches (the authorization requests on $SYS.REQ.USER.AUTH, which carry every login's token, and the grants bucket) as far as their permissions go; place users in another account"
        ));
    }
    let layout = config.layout().unwrap_or_default();
    for (name, role) in config.roles.iter() {
        let account = role.account.as_deref().unwrap_or(default);
        if layout.imports.contains_key(account) {
            for p in role
                .publish
                .allow
                .iter()
                .map(|e| e.as_str())
                .filter(|p| overlaps(p, "$JS.API.>") || overlaps(p, "$KV.>"))
            {
                out.push(format!(
                    "roles.{name}.pub.allow {p:?} reaches JetStream subjects in {account:?}, which imports the whole JetStream API of {} (jetstream.account): its users can do there whatever that subject allows, beyond what the role's grants name (delete and purge streams, read any bucket); grant jetstream/kv instead",
                    layout.account
                ));
            }
        }
        if role.account.is_some()
            && matches!(config.callout.mode, Mode::Server)
            && config.callout.is_callout_account(account) == Some(true)
        {
            out.push(format!(
                "roles.{name}.account {account:?} is the callout's own account: its users can reach the authorization requests (every login's token) and the grants bucket as far as their permissions go; place them in another account"
            ));
        }
        if config
            .jetstream
            .as_ref()
            .is_none_or(|js| js.name != account)
        {
            continue;
        }
        for (entry, what) in &role.granted {
            out.push(format!(
                "roles.{name}: {:?} ({what}) is granted in {account:?}, the account holding the streams (jetstream.same_account): JetStream will publish its answers, and the messages it serves, to any subject of the account the user names, with its own rights: into any stream or bucket there, the grants of other users included",
                entry.as_str()
            ));
        }
        if role.granted.is_empty() {
            if let Some(p) = role
                .publish
                .allow
                .iter()
                .map(|e| e.as_str())
                .find(|p| overlaps(p, "$JS.API.>") || overlaps(p, "$KV.>"))
            {
                out.push(format!(
                    "roles.{name} places its users in {account:?}, the account holding the streams (jetstream.account), and pub.allow {p:?} reaches its JetStream API or KV subjects: JetStream publishes its answers to any subject they name there, with its own rights, so they can write into every stream and bucket of the account; give this only to its administrators"
                ));
            }
        }
    }
}

/// `$JS.API.CONSUMER.CREATE.<stream>` takes the consumer's name from the
/// request body, so whoever may create consumers on a stream can rewrite
/// any durable on it: a `consume` grant there is only as safe as every
/// `replay` grant (and whole-bucket KV `read`) on the same stream.
fn warn_consumers_others_create(out: &mut Vec<String>, config: &Config) {
    let creators = consumer_grants(config);
    for (name, role) in config.roles.iter() {
        for c in &role.jetstream.consume {
            for (_, by, _) in creators.iter().filter(|(s, _, _)| *s == c.stream) {
                out.push(format!(
                    "roles.{name}.jetstream.consume {}/{}: {by} may create consumers on stream {}, and a consumer create names its consumer in the request body, which subject permissions cannot check: those users can rewrite the durable {:?} (its filter, its delivery subject)",
                    c.stream, c.consumer, c.stream, c.consumer
                ));
            }
        }
    }
}

/// The grants that create consumers on a stream (`replay`, a whole-bucket
/// KV `read`): the stream, the role key (`roles.r.kv.read`) and what it
/// names (`config`).
fn consumer_grants(config: &Config) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    for (name, role) in config.roles.iter() {
        for stream in &role.jetstream.replay {
            out.push((
                stream.clone(),
                format!("roles.{name}.jetstream.replay"),
                stream.clone(),
            ));
        }
        for scope in role.kv.read.iter().filter(|s| s.keys.is_none()) {
            out.push((
                format!("KV_{}", scope.bucket),
                format!("roles.{name}.kv.read"),
                scope.bucket.clone(),
            ));
        }
    }
    out
}

/// Who may create consumers on which stream, and who may write into it.
/// A consumer create sets the consumer's delivery subject in the request
/// body, and nats-server delivers with its own rights: a user who can do
/// both can make whatever it writes appear on any subject of the account.
/// Writers are known exactly for KV buckets (their subjects are fixed); a
/// plain stream's subjects are not in this config, so `replay` is warned
/// about on its own. `manage` is warned about as the whole account already.
fn warn_delivery_anywhere(out: &mut Vec<String>, config: &Config) {
    let buckets: std::collections::BTreeSet<&str> = config
        .roles
        .iter()
        .flat_map(|(_, r)| r.kv.read.iter().chain(&r.kv.write))
        .map(|s| s.bucket.as_str())
        .collect();
    let mut creators: Vec<(String, String)> = consumer_grants(config)
        .into_iter()
        .map(|(stream, key, target)| (stream, format!("{key} {target}")))
        .collect();
    let mut writers: Vec<(String, String)> = Vec::new();
    for (name, role) in config.roles.iter() {
        for scope in &role.kv.write {
            let what = match &scope.keys {
                Some(keys) => format!("roles.{name}.kv.write {}/{keys}", scope.bucket),
                None => format!("roles.{name}.kv.write {}", scope.bucket),
            };
            writers.push((format!("KV_{}", scope.bucket), what));
        }
        // ">" is warned about as every subject already.
        for subject in role.publish.allow.iter().map(|e| e.as_str()) {
            for bucket in buckets.iter().filter(|_| subject != ">") {
                let stream = format!("KV_{bucket}");
                let by = || format!("roles.{name}.pub.allow {subject:?}");
                if overlaps(subject, &format!("$KV.{bucket}.>")) {
                    writers.push((stream.clone(), by()));
                }
                if overlaps(subject, &format!("$JS.API.CONSUMER.CREATE.{stream}")) {
                    creators.push((stream, by()));
                }
            }
        }
    }
    for (stream, creator) in &creators {
        for (_, writer) in writers.iter().filter(|(s, _)| s == stream) {
            out.push(format!(
                "{creator} creates consumers on {stream} and {writer} writes into it: a consumer's delivery subject is set in the request body and nats-server delivers with its own rights, so a user holding both can make what it writes appear on any subject of the account holding the stream (and on any inbox of the users' account, through the inbox import), past its publish permissions; keep the two grants for one stream apart, or in roles no one holds together"
            ));
        }
    }
    for (name, role) in config.roles.iter() {
        for stream in &role.jetstream.replay {
            out.push(format!(
                "roles.{name}.jetstream.replay {stream}: a consumer's delivery subject is set in the request body and nats-server delivers with its own rights, so its users can have {stream}'s messages re-sent to any subject of the account holding it (and to any inbox of the users' account, through the inbox import), another consumer's pull or reset subject included, which drives that consumer (its messages go where no one receives them, or it starts over); any of them who may also publish into {stream}'s subjects can make any content appear there; grant replay only where that is acceptable"
            ));
        }
        for scope in role.kv.read.iter().filter(|s| s.keys.is_none()) {
            out.push(format!(
                "roles.{name}.kv.read {}: watch, keys and history create consumers, whose delivery subject is set in the request body and delivered to with nats-server's own rights: its users can have the bucket's entries sent to any subject of the account holding it, another consumer's pull or reset subject included (which drives that consumer), and to any inbox of the users' account; grant whole-bucket reads only where that is acceptable",
                scope.bucket
            ));
        }
    }
}

/// Issuers that mint tokens for anyone with an account on the platform,
/// and the claims that name the customer exactly.
fn shared_issuer(issuer: &str) -> Option<(&'static str, &'static [&'static str])> {
    if bindings::is_github(issuer) {
        return Some((
            "GitHub Actions",
            &["repository_owner_id", "repository_owner", "repository_id"],
        ));
    }
    match issuer.trim_end_matches('/') {
        "https://accounts.google.com" => Some(("Google", &["sub", "email", "hd"])),
        "https://gitlab.com" => Some((
            "GitLab.com",
            &[
                "namespace_id",
                "namespace_path",
                "project_id",
                "project_path",
            ],
        )),
        _ => None,
    }
}
