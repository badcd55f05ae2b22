//! The declarative role table: token roles → NATS publish/subscribe lists.
//!
//! A user's permissions are the union of the allow lists and the union of the
//! deny lists of its mapped roles; nats-server applies deny before allow.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use crate::nats::user_jwt::Permission;
use crate::policy::connection::ConnectionRules;
use crate::policy::streams::StreamGrants;
use crate::policy::subject::{names_reserved, RESERVED};
use crate::policy::template::{Entry, TemplateError, Values};
use crate::refusal::RefusalCode;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub allow: Vec<Entry>,
    pub deny: Vec<Entry>,
}

impl Direction {
    /// Every entry, allow and deny.
    pub fn entries(&self) -> impl Iterator<Item = &Entry> {
        self.allow.iter().chain(&self.deny)
    }
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    pub publish: Direction,
    pub subscribe: Direction,
    /// The account its users land in; `None` is `callout.account`.
    pub account: Option<String>,
    /// Replies to requests the user received (NATS `allow_responses`).
    pub resp: Option<Resp>,
    /// A user JWT of this role lives at most this long.
    pub max_user_ttl: Option<Duration>,
    pub limits: Limits,
    pub connection: Option<ConnectionRules>,
    /// `jetstream` and `kv`, with the publish entries they compile to.
    pub grants: StreamGrants,
}

/// What nats-server makes of a `resp` without `ttl`.
const NATS_DEFAULT_RESP_TTL: Duration = Duration::from_secs(120);

/// NATS `allow_responses`: publish one reply (or `max`) to the reply
/// subject of each request received, within `ttl` (nats-server's default
/// of 2 minutes without one).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Resp {
    pub max: i64,
    pub ttl: Option<Duration>,
}

/// NATS user limits; `None` is unlimited.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Limits {
    pub subs: Option<i64>,
    pub payload: Option<i64>,
    pub data: Option<i64>,
}

impl Limits {
    pub fn is_empty(&self) -> bool {
        *self == Limits::default()
    }

    /// Each limit the smaller of the two.
    fn tightest(self, other: Limits) -> Limits {
        let min = |a: Option<i64>, b: Option<i64>| match (a, b) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        Limits {
            subs: min(self.subs, other.subs),
            payload: min(self.payload, other.payload),
            data: min(self.data, other.data),
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Permission,
    pub subscribe: Permission,
    /// The token roles that matched a table entry, in table order.
    pub roles: Vec<String>,
    /// The account named by the matched roles; `None` is `callout.account`.
    pub account: Option<String>,
    /// The widest of the roles' `resp`: privileges add up.
    pub resp: Option<Resp>,
    /// The tightest of the roles' limits and lifetimes: restrictions all
    /// hold.
    pub limits: Limits,
    pub max_user_ttl: Option<Duration>,
    /// Every role's connection rules, each of which must hold.
    pub connection: Vec<(String, ConnectionRules)>,
}

/// Why a token's roles give no usable grant.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum GrantError {
    #[error("cannot fill a role's subject: {0}")]
    Template(#[from] TemplateError),
    #[error(
        "the token's roles place the user in different accounts: {0}; a user lands in one account"
    )]
    AccountConflict(String),
}

impl GrantError {
    pub fn code(&self) -> RefusalCode {
        match self {
            GrantError::Template(_) => RefusalCode::SubjectTemplate,
            GrantError::AccountConflict(_) => RefusalCode::AccountConflict,
        }
    }
}

#[derive(Clone, Debug, Default)]
pub struct RoleTable {
    roles: BTreeMap<String, Role>,
}

/// The `[roles.*]` names a token's roles are looked up under. With a
/// namespace, role `r` is `"<namespace>:r"`. Without one, roles containing
/// `:` are dropped: they would otherwise reach another issuer's namespaced
/// roles, letting one identity provider mint another's grants.
pub(crate) fn table_names(namespace: Option<&str>, token_roles: &[String]) -> Vec<String> {
    match namespace {
        Some(ns) => token_roles.iter().map(|r| format!("{ns}:{r}")).collect(),
        None => token_roles
            .iter()
            .filter(|r| !r.contains(':'))
            .cloned()
            .collect(),
    }
}

impl RoleTable {
    pub fn new(roles: BTreeMap<String, Role>) -> Self {
        RoleTable { roles }
    }

    pub fn contains(&self, name: &str) -> bool {
        self.roles.contains_key(name)
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Role)> {
        self.roles.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// Permissions for a token's roles, or `None` when none of them is in the
    /// table (the connection is then refused). Placeholders are filled from
    /// `values`; one that cannot be filled safely is an error (a refusal).
    pub fn permissions_for(
        &self,
        token_roles: &[String],
        values: &Values<'_>,
    ) -> Result<Option<Permissions>, GrantError> {
        let wanted: BTreeSet<&str> = token_roles.iter().map(String::as_str).collect();
        let matched: Vec<(&String, &Role)> = self
            .roles
            .iter()
            .filter(|(name, _)| wanted.contains(name.as_str()))
            .collect();
        if matched.is_empty() {
            return Ok(None);
        }
        let account = account_of(&matched)?;
        let publish = merge(
            matched
                .iter()
                .map(|(_, r)| (&r.publish, r.grants.entries().iter().map(|(e, _)| e))),
            values,
        )?;
        let subscribe = merge(
            matched.iter().map(|(_, r)| (&r.subscribe, [].iter())),
            values,
        )?;
        let roles = || matched.iter().map(|(_, r)| r);
        Ok(Some(Permissions {
            publish,
            subscribe,
            account,
            resp: roles().filter_map(|r| r.resp).reduce(|a, b| Resp {
                max: a.max.max(b.max),
                // Without a ttl nats-server applies its default.
                ttl: Some(
                    a.ttl
                        .unwrap_or(NATS_DEFAULT_RESP_TTL)
                        .max(b.ttl.unwrap_or(NATS_DEFAULT_RESP_TTL)),
                ),
            }),
            limits: roles().fold(Limits::default(), |l, r| l.tightest(r.limits)),
            max_user_ttl: roles().filter_map(|r| r.max_user_ttl).min(),
            connection: matched
                .iter()
                .filter_map(|(n, r)| r.connection.clone().map(|c| ((*n).clone(), c)))
                .collect(),
            roles: matched.iter().map(|(n, _)| (*n).clone()).collect(),
        }))
    }
}

/// Unions the lists of one direction. A direction that allows nothing must
/// still be sent as a deny of everything: nats-server treats a direction
/// with neither list as unrestricted. Wildcard grants never reach `$SYS`:
/// only an allow entry that names it (as written in the config, not as
/// filled from a token) does.
fn merge<'a, G: Iterator<Item = &'a Entry>>(
    dirs: impl Iterator<Item = (&'a Direction, G)>,
    values: &Values<'_>,
) -> Result<Permission, TemplateError> {
    let mut allow = BTreeSet::new();
    let mut deny = BTreeSet::new();
    let mut names_sys = false;
    for (d, granted) in dirs {
        for entry in d.allow.iter().chain(granted) {
            let granted = entry.render_allow(values)?;
            // An entry that grants nothing here lifts nothing.
            names_sys |= !granted.is_empty() && names_reserved(entry.as_str());
            allow.extend(granted);
        }
        for entry in &d.deny {
            deny.insert(entry.render_deny(values)?);
        }
    }
    if allow.is_empty() {
        return Ok(Permission {
            allow: Vec::new(),
            deny: vec![">".to_string()],
        });
    }
    if !names_sys {
        deny.insert(RESERVED.to_string());
    }
    Ok(Permission {
        allow: allow.into_iter().collect(),
        deny: deny.into_iter().collect(),
    })
}

/// The one account the matched roles agree on. Roles that name none defer
/// to the others (and to `callout.account` when no role names one); two
/// different names are a refusal, never a guess.
fn account_of(matched: &[(&String, &Role)]) -> Result<Option<String>, GrantError> {
    let named: Vec<(&String, &String)> = matched
        .iter()
        .filter_map(|(name, role)| role.account.as_ref().map(|a| (*name, a)))
        .collect();
    match named.first() {
        None => Ok(None),
        Some((_, first)) if named.iter().all(|(_, a)| a == first) => Ok(Some((*first).clone())),
        Some(_) => Err(GrantError::AccountConflict(
            named
                .iter()
                .map(|(role, account)| format!("{role} → {account}"))
                .collect::<Vec<_>>()
                .join(", "),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scope_entries_expand_to_the_granted_scopes_only() {
        let reader = Role {
            publish: Direction::default(),
            subscribe: dir(&["chat.>"], &[]),
            account: None,
            ..Default::default()
        };
        let t = RoleTable::new(BTreeMap::from([
            ("reader".to_string(), reader),
            (
                "member".to_string(),
                Role {
                    publish: dir(&["chat.{{scope}}.in", "presence"], &[]),
                    subscribe: dir(&["chat.{{scope}}.>"], &["chat.{{scope}}.admin"]),
                    account: None,
                    ..Default::default()
                },
            ),
        ]));
        let claims = serde_json::Map::new();
        let with_roles = |roles: &[&str], scopes: &[String]| {
            t.permissions_for(
                &strs(roles),
                &Values {
                    name: "ana",
                    issuer: "default",
                    claims: &claims,
                    scopes,
                },
            )
        };
        let with = |scopes: &[String]| with_roles(&["member"], scopes);
        let p = with(&strs(&["r1", "r2"])).unwrap().unwrap();
        assert_eq!(
            p.publish.allow,
            strs(&["chat.r1.in", "chat.r2.in", "presence"])
        );
        assert_eq!(p.subscribe.allow, strs(&["chat.r1.>", "chat.r2.>"]));
        assert_eq!(p.subscribe.deny, strs(&["$SYS.>", "chat.*.admin"]));
        let none = with(&[]).unwrap().unwrap();
        assert_eq!(none.publish.allow, strs(&["presence"]));
        assert!(none.subscribe.allow.is_empty());
        assert_eq!(
            none.subscribe.deny,
            strs(&[">"]),
            "nothing scoped, nothing allowed"
        );
        let hostile = with(&strs(&["r1", "*"])).unwrap_err();
        assert_eq!(hostile.code(), RefusalCode::SubjectTemplate);
        // A scoped deny holds for every scope: asking for none must not lift
        // it while another role allows the subjects.
        let both = with_roles(&["member", "reader"], &[]).unwrap().unwrap();
        assert_eq!(both.subscribe.allow, strs(&["chat.>"]));
        assert_eq!(both.subscribe.deny, strs(&["$SYS.>", "chat.*.admin"]));
    }

    #[test]
    fn a_namespace_prefixes_roles_and_the_shared_table_drops_prefixed_ones() {
        let roles = strs(&["admin", "corp:admin"]);
        assert_eq!(
            table_names(Some("partner"), &roles),
            strs(&["partner:admin", "partner:corp:admin"])
        );
        assert_eq!(table_names(None, &roles), strs(&["admin"]));
    }

    trait ForTest {
        fn for_test(&self, roles: &[String]) -> Option<Permissions>;
    }

    impl ForTest for RoleTable {
        fn for_test(&self, roles: &[String]) -> Option<Permissions> {
            let claims = serde_json::Map::new();
            self.permissions_for(
                roles,
                &Values {
                    name: "ana",
                    issuer: "default",
                    claims: &claims,
                    scopes: &[],
                },
            )
            .unwrap()
        }
    }

    fn dir(allow: &[&str], deny: &[&str]) -> Direction {
        let entries = |v: &[&str]| v.iter().map(|s| Entry::parse(s).unwrap()).collect();
        Direction {
            allow: entries(allow),
            deny: entries(deny),
        }
    }

    fn table() -> RoleTable {
        let mut roles = BTreeMap::new();
        roles.insert(
            "reader".to_string(),
            Role {
                publish: dir(&["_INBOX.>"], &[]),
                subscribe: dir(&["orders.>", "_INBOX.>"], &["orders.secret.>"]),
                account: None,
                ..Default::default()
            },
        );
        roles.insert(
            "writer".to_string(),
            Role {
                publish: dir(&["orders.>"], &["orders.audit"]),
                subscribe: dir(&[], &[]),
                account: None,
                ..Default::default()
            },
        );
        roles.insert("nothing".to_string(), Role::default());
        RoleTable::new(roles)
    }

    fn strs(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn unmapped_roles_give_no_permissions() {
        assert_eq!(table().for_test(&strs(&["guest", "offline_access"])), None);
        assert_eq!(table().for_test(&[]), None);
    }

    #[test]
    fn roles_union_allow_and_deny_lists() {
        let p = table()
            .for_test(&strs(&["writer", "reader", "guest"]))
            .unwrap();
        assert_eq!(p.roles, strs(&["reader", "writer"]));
        assert_eq!(p.publish.allow, strs(&["_INBOX.>", "orders.>"]));
        assert_eq!(p.publish.deny, strs(&["$SYS.>", "orders.audit"]));
        assert_eq!(p.subscribe.allow, strs(&["_INBOX.>", "orders.>"]));
        assert_eq!(p.subscribe.deny, strs(&["$SYS.>", "orders.secret.>"]));
    }

    #[test]
    fn wildcards_never_reach_sys_subjects_unless_named() {
        let mut roles = BTreeMap::new();
        roles.insert(
            "all".to_string(),
            Role {
                publish: dir(&[">"], &[]),
                subscribe: dir(&["*.>"], &[]),
                account: None,
                ..Default::default()
            },
        );
        roles.insert(
            "ops".to_string(),
            Role {
                publish: dir(&[], &[]),
                subscribe: dir(&["$SYS.ACCOUNT.>"], &[]),
                account: None,
                ..Default::default()
            },
        );
        let t = RoleTable::new(roles);
        let p = t.for_test(&strs(&["all"])).unwrap();
        assert_eq!(p.publish.deny, strs(&["$SYS.>"]));
        assert_eq!(p.subscribe.deny, strs(&["$SYS.>"]));
        let p = t.for_test(&strs(&["all", "ops"])).unwrap();
        assert!(
            p.subscribe.deny.is_empty(),
            "an explicit $SYS grant is honoured: {p:?}"
        );
        assert_eq!(p.publish.deny, strs(&["$SYS.>"]));
    }

    #[test]
    fn a_direction_without_allows_denies_everything() {
        let p = table().for_test(&strs(&["writer"])).unwrap();
        assert_eq!(
            p.subscribe,
            Permission {
                allow: vec![],
                deny: strs(&[">"])
            }
        );
        let p = table().for_test(&strs(&["nothing"])).unwrap();
        assert_eq!(p.publish.deny, strs(&[">"]));
        assert_eq!(p.subscribe.deny, strs(&[">"]));
    }

    #[test]
    fn roles_agree_on_one_account_or_the_user_is_refused() {
        let role = |account: Option<&str>| Role {
            publish: dir(&[">"], &[]),
            subscribe: dir(&[], &[]),
            account: account.map(str::to_string),
            ..Default::default()
        };
        let mut roles = BTreeMap::new();
        roles.insert("plain".to_string(), role(None));
        roles.insert("team".to_string(), role(Some("TEAM")));
        roles.insert("team2".to_string(), role(Some("TEAM")));
        roles.insert("other".to_string(), role(Some("OTHER")));
        let t = RoleTable::new(roles);
        assert_eq!(t.for_test(&strs(&["plain"])).unwrap().account, None);
        assert_eq!(
            t.for_test(&strs(&["plain", "team", "team2"]))
                .unwrap()
                .account
                .as_deref(),
            Some("TEAM")
        );
        let claims = serde_json::Map::new();
        let values = Values {
            name: "ana",
            issuer: "default",
            claims: &claims,
            scopes: &[],
        };
        let err = t
            .permissions_for(&strs(&["team", "other"]), &values)
            .unwrap_err();
        assert_eq!(err.code(), RefusalCode::AccountConflict);
        assert!(err.to_string().contains("other → OTHER"), "{err}");
    }
}
