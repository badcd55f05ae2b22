//! Lints about what roles (and `[users.*]` with their own permissions)
//! allow: subjects, accounts, connection rules.

use super::Lint;
use crate::policy::inbox::reaches_inboxes;
use crate::policy::roles::{Direction, Role, RoleTable};
use crate::policy::subject::names_reserved;
use crate::policy::template::Entry;
use crate::policy::users::Grant;

/// Each role's allow lists, as `(role, "pub" | "sub", direction)`.
fn directions(roles: &RoleTable) -> impl Iterator<Item = (&str, &'static str, &Direction)> {
    roles.iter().flat_map(|(name, role)| {
        [("pub", &role.publish), ("sub", &role.subscribe)]
            .map(|(dir, d)| (name, dir, d))
            .into_iter()
    })
}

pub(super) const PER_USER_NOT_PER_ISSUER: Lint = Lint {
    name: "per-user-not-per-issuer",
    doc: "With several identity sources, a subject filled per user but not per issuer: two \
          sources can name the same user and share it.",
    find: |config| {
        let sources = config.oidc.len() + usize::from(!config.users.is_empty());
        if sources < 2 {
            return Vec::new();
        }
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            // KV key patterns hold placeholders too (`profiles/{{sub}}.>`).
            let entries = [&role.publish, &role.subscribe]
                .into_iter()
                .flat_map(|d| d.allow.iter())
                .chain(role.grants.entries().iter().map(|(e, _)| e));
            for entry in
                entries.filter(|e| e.template().is_some_and(|t| t.per_user_without_issuer()))
            {
                out.push(format!(
                    "roles.{name}: {:?} is per user but not per issuer: with several issuers (or [users.*]) two sources can name the same user and share these subjects; add {{{{issuer}}}}",
                    entry.as_str()
                ));
            }
        }
        out
    },
    example: "[users.svc]\npassword_bcrypt = \"$2b$10$C001kiHOPehbP4wWw.nyb.Cpsl9Bkm.pP4YXK4Vj50QnUdwexHlmy\"\nroles = [\"reader\"]\n\n[roles.reader]\nsub.allow = [\"users.{{sub}}.>\"]\n",
};

pub(super) const UNREACHABLE_ROLE: Lint = Lint {
    name: "unreachable-role",
    doc: "A role no token can reach: every issuer has a role namespace, and the role is \
          named without one (and no [users.*] or grants bucket names it).",
    find: |config| {
        let named_by_users = |role: &str| {
            config
                .users
                .iter()
                .any(|u| matches!(&u.grant, Grant::Roles(names) if names.iter().any(|n| n == role)))
        };
        if !super::issuers::sharing_plain_roles(config).is_empty()
            || config.grants.kv_bucket.is_some()
        {
            return Vec::new();
        }
        config
            .roles
            .names()
            .filter(|name| !name.contains(':') && !named_by_users(name))
            .map(|name| format!(
                "roles.{name}: no issuer looks roles up without a namespace (every [oidc] has a role_namespace), so no token reaches this role; name it \"<namespace>:{name}\""
            ))
            .collect()
    },
    example: "[oidc]\nissuer = \"https://idp.example.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\nrole_namespace = \"idp\"\n\n[roles.\"idp:reader\"]\nsub.allow = [\"orders.>\"]\n\n[roles.orphan]\nsub.allow = [\"orders.>\"]\n",
};

pub(super) const TOKEN_CHOOSES_NAMESPACE: Lint = Lint {
    name: "token-chooses-namespace",
    doc: "A subject whose first token is filled from the token: whoever controls that value \
          can name any namespace of the account.",
    find: |config| {
        let mut out = Vec::new();
        for (role, dir_name, dir) in directions(&config.roles) {
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
        }
        out
    },
    example: "[roles.reader]\nsub.allow = [\"{{name}}.>\"]\n",
};

/// Whether an allow entry reaches inboxes other than the user's own: it
/// overlaps `_INBOX.>` and is not `{{inbox}}...` (a placeholder that fills
/// the first token cannot start with `_`). `>` is warned about as every
/// subject, inboxes included.
fn reaches_others_inboxes(entry: &Entry) -> bool {
    if entry.as_str() == ">" {
        return false;
    }
    if let Some(t) = entry.template() {
        if t.is_private_inbox() || t.fills_first_token() {
            return false;
        }
    }
    reaches_inboxes(entry.as_str())
}

pub(super) const OTHERS_INBOXES: Lint = Lint {
    name: "others-inboxes",
    doc: "A grant that reaches other users' inboxes: a subscriber reads every reply in the \
          account, a publisher forges replies.",
    find: |config| {
        let mut out = Vec::new();
        for (role, dir_name, dir) in directions(&config.roles) {
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
        }
        for user in &config.users {
            let Grant::Fixed(own) = &user.grant else {
                continue;
            };
            for (_, dir_name, dir) in directions(own) {
                for entry in dir.allow.iter().filter(|e| reaches_others_inboxes(e)) {
                    out.push(format!(
                        "users.{}.{dir_name}.allow {:?} reaches other users' inboxes (every reply sent to any client of the account); grant \"{{{{inbox}}}}.>\" (this user's private inbox) instead",
                        user.name,
                        entry.as_str()
                    ));
                }
            }
        }
        out
    },
    example: "[roles.reader]\nsub.allow = [\"_INBOX.>\"]\n",
};

pub(super) const EVERY_SUBJECT: Lint = Lint {
    name: "every-subject",
    doc: "A grant of \">\": every subject, every user's inbox included.",
    find: |config| {
        let mut out = Vec::new();
        for (role, dir_name, dir) in directions(&config.roles) {
            let except = if dir.deny.is_empty() {
                ""
            } else {
                " except its deny list"
            };
            for _ in dir.allow.iter().filter(|e| e.as_str() == ">") {
                out.push(format!(
                    "roles.{role}.{dir_name}.allow grants \">\" (every subject{except}, every user's inbox included)"
                ));
            }
        }
        out
    },
    example: "[roles.reader]\nsub.allow = [\">\"]\n",
};

pub(super) const SYSTEM_SUBJECTS: Lint = Lint {
    name: "system-subjects",
    doc: "A grant naming $SYS subjects, which lifts the automatic deny of $SYS.> for every \
          user holding the role.",
    find: |config| {
        let mut out = Vec::new();
        for (role, dir_name, dir) in directions(&config.roles) {
            for subject in dir.allow.iter().map(|e| e.as_str()) {
                if subject != ">" && names_reserved(subject) {
                    out.push(format!(
                        "roles.{role}.{dir_name}.allow grants {subject:?}: $SYS subjects carry server and account internals (the auth callout subject among them); naming one lifts the automatic deny of $SYS.> for the {dir_name} permissions of every user holding this role, so any wildcard grant of their other roles reaches all of $SYS"
                    ));
                }
            }
        }
        out
    },
    example: "[roles.reader]\nsub.allow = [\"$SYS.ACCOUNT.>\"]\n",
};

pub(super) const SYSTEM_ACCOUNT: Lint = Lint {
    name: "system-account",
    doc: "A role that places its users in an account named like nats-server's system account.",
    find: |config| {
        let system = |a: &&str| {
            let a = a.trim_start_matches('$');
            a.eq_ignore_ascii_case("SYS") || a.eq_ignore_ascii_case("SYSTEM")
        };
        config
            .roles
            .iter()
            .filter_map(|(name, role)| Some((name, role.account.as_deref().filter(system)?)))
            .map(|(name, account)| format!(
                "roles.{name}.account is {account:?}: if that is nats-server's system account, its users \
                 can see and control server internals"
            ))
            .collect()
    },
    example: "[roles.reader]\nsub.allow = [\"orders.>\"]\naccount = \"SYS\"\n",
};

pub(super) const CONNECTION_TYPE_TWIN: Lint = Lint {
    name: "connection-type-twin",
    doc: "connection.types lists MQTT, MQTT_WS, LEAFNODE or LEAFNODE_WS without its twin, \
          which nats-server does not tell apart: such connections are refused.",
    find: |config| {
        let mut out = Vec::new();
        for (name, role) in config.roles.iter() {
            let Some(types) = role.connection.as_ref().and_then(|r| r.types.as_ref()) else {
                continue;
            };
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
        out
    },
    example: "[roles.reader]\nsub.allow = [\"orders.>\"]\nconnection.types = [\"MQTT\"]\n",
};

/// Whether a role allows nothing at all.
fn allows_nothing(role: &Role) -> bool {
    role.publish.allow.is_empty()
        && role.subscribe.allow.is_empty()
        && role.grants.is_empty()
        && role.resp.is_none()
}

pub(super) const ALLOWS_NOTHING: Lint = Lint {
    name: "allows-nothing",
    doc: "A role whose users can connect but neither publish nor subscribe.",
    find: |config| {
        config
            .roles
            .iter()
            .filter(|(_, role)| allows_nothing(role))
            .map(|(name, _)| format!(
                "roles.{name}: allows nothing; its users can connect but neither publish nor subscribe"
            ))
            .collect()
    },
    example: "[roles.reader]\nsub.deny = [\"orders.>\"]\n",
};
