//! The declarative role table: token roles → NATS publish/subscribe lists.
//!
//! A user's permissions are the union of the allow lists and the union of the
//! deny lists of its mapped roles; nats-server applies deny before allow.

use std::collections::{BTreeMap, BTreeSet};

use serde::Serialize;

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Direction {
    pub allow: Vec<String>,
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Role {
    pub publish: Direction,
    pub subscribe: Direction,
}

/// One direction of a user JWT's permissions, as nats-server reads it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Permission {
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Permissions {
    pub publish: Permission,
    pub subscribe: Permission,
    /// The token roles that matched a table entry, in table order.
    pub roles: Vec<String>,
}

#[derive(Clone, Debug)]
pub struct RoleTable {
    roles: BTreeMap<String, Role>,
}

impl RoleTable {
    pub fn new(roles: BTreeMap<String, Role>) -> Self {
        RoleTable { roles }
    }

    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.roles.keys().map(String::as_str)
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &Role)> {
        self.roles.iter().map(|(n, r)| (n.as_str(), r))
    }

    /// Permissions for a token's roles, or `None` when none of them is in the
    /// table (the connection is then refused).
    pub fn permissions_for(&self, token_roles: &[String]) -> Option<Permissions> {
        let wanted: BTreeSet<&str> = token_roles.iter().map(String::as_str).collect();
        let matched: Vec<(&String, &Role)> = self
            .roles
            .iter()
            .filter(|(name, _)| wanted.contains(name.as_str()))
            .collect();
        if matched.is_empty() {
            return None;
        }
        let publish = merge(matched.iter().map(|(_, r)| &r.publish));
        let subscribe = merge(matched.iter().map(|(_, r)| &r.subscribe));
        Some(Permissions {
            publish,
            subscribe,
            roles: matched.iter().map(|(n, _)| (*n).clone()).collect(),
        })
    }
}

/// Subjects no wildcard grant reaches: the account's system subjects (server
/// and account internals, and the auth callout subject). Only an allow entry
/// that names `$SYS` itself grants them.
pub const RESERVED: &str = "$SYS.>";

/// Whether an allow entry names the reserved subjects explicitly.
pub fn names_reserved(subject: &str) -> bool {
    subject == "$SYS" || subject.starts_with("$SYS.")
}

/// Unions the lists of one direction. A direction that allows nothing must
/// still be sent as a deny of everything: nats-server treats a direction with
/// neither list as unrestricted. Wildcard grants never reach `$SYS`.
fn merge<'a>(dirs: impl Iterator<Item = &'a Direction>) -> Permission {
    let mut allow = BTreeSet::new();
    let mut deny = BTreeSet::new();
    for d in dirs {
        allow.extend(d.allow.iter().cloned());
        deny.extend(d.deny.iter().cloned());
    }
    if allow.is_empty() {
        return Permission {
            allow: Vec::new(),
            deny: vec![">".to_string()],
        };
    }
    if !allow.iter().any(|s| names_reserved(s)) {
        deny.insert(RESERVED.to_string());
    }
    Permission {
        allow: allow.into_iter().collect(),
        deny: deny.into_iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dir(allow: &[&str], deny: &[&str]) -> Direction {
        Direction {
            allow: allow.iter().map(|s| s.to_string()).collect(),
            deny: deny.iter().map(|s| s.to_string()).collect(),
        }
    }

    fn table() -> RoleTable {
        let mut roles = BTreeMap::new();
        roles.insert(
            "reader".to_string(),
            Role {
                publish: dir(&["_INBOX.>"], &[]),
                subscribe: dir(&["orders.>", "_INBOX.>"], &["orders.secret.>"]),
            },
        );
        roles.insert(
            "writer".to_string(),
            Role {
                publish: dir(&["orders.>"], &["orders.audit"]),
                subscribe: dir(&[], &[]),
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
        assert_eq!(
            table().permissions_for(&strs(&["guest", "offline_access"])),
            None
        );
        assert_eq!(table().permissions_for(&[]), None);
    }

    #[test]
    fn roles_union_allow_and_deny_lists() {
        let p = table()
            .permissions_for(&strs(&["writer", "reader", "guest"]))
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
            },
        );
        roles.insert(
            "ops".to_string(),
            Role {
                publish: dir(&[], &[]),
                subscribe: dir(&["$SYS.ACCOUNT.>"], &[]),
            },
        );
        let t = RoleTable::new(roles);
        let p = t.permissions_for(&strs(&["all"])).unwrap();
        assert_eq!(p.publish.deny, strs(&["$SYS.>"]));
        assert_eq!(p.subscribe.deny, strs(&["$SYS.>"]));
        let p = t.permissions_for(&strs(&["all", "ops"])).unwrap();
        assert!(
            p.subscribe.deny.is_empty(),
            "an explicit $SYS grant is honoured: {p:?}"
        );
        assert_eq!(p.publish.deny, strs(&["$SYS.>"]));
    }

    #[test]
    fn a_direction_without_allows_denies_everything() {
        let p = table().permissions_for(&strs(&["writer"])).unwrap();
        assert_eq!(
            p.subscribe,
            Permission {
                allow: vec![],
                deny: strs(&[">"])
            }
        );
        let p = table().permissions_for(&strs(&["nothing"])).unwrap();
        assert_eq!(p.publish.deny, strs(&[">"]));
        assert_eq!(p.subscribe.deny, strs(&[">"]));
    }
}
