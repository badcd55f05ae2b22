//! `[roles.*]` and `[users.*]`: the role table and the identities defined in
//! the config.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::raw::{RawDirection, RawRole, RawUser};
use super::validate::Validator;
use super::{ConfigError, IssuerConfig};
use crate::policy::roles::{Direction, Role, RoleTable};
use crate::policy::template::Entry;
use crate::policy::users::{bcrypt_cost, ConfigUser, Credential, Grant, MAX_BCRYPT_COST};

impl Validator<'_> {
    pub(super) fn roles(
        &self,
        raw: BTreeMap<String, RawRole>,
        issuers: &[IssuerConfig],
    ) -> Result<RoleTable, ConfigError> {
        if raw.is_empty() {
            return Err(self.err(
                "roles",
                "no roles defined: every token would be refused; add [roles.<name>] tables",
            ));
        }
        let namespaces: Vec<&str> = issuers
            .iter()
            .filter_map(|o| o.claims.role_namespace.as_deref())
            .collect();
        let mut roles = BTreeMap::new();
        for (name, role) in raw {
            if name.is_empty() {
                return Err(self.err("roles", "a role name is empty"));
            }
            if let Some((prefix, _)) = name.split_once(':') {
                if !namespaces.contains(&prefix) {
                    return Err(self.err(
                        &format!("roles.{name}"),
                        format!(
                            "{prefix:?} is the role_namespace of no [oidc] issuer (namespaces: {namespaces:?}); no token could reach this role"
                        ),
                    ));
                }
            }
            let role = self.role(&format!("roles.{name}"), role)?;
            roles.insert(name, role);
        }
        Ok(RoleTable::new(roles))
    }

    fn role(&self, key: &str, role: RawRole) -> Result<Role, ConfigError> {
        let publish = self.direction(&format!("{key}.pub"), role.publish)?;
        let subscribe = self.direction(&format!("{key}.sub"), role.subscribe)?;
        let account = match role.account {
            None => None,
            Some(a) if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(self.err(
                    &format!("{key}.account"),
                    "must be an account name (not empty, no whitespace)",
                ))
            }
            Some(a) => Some(a),
        };
        Ok(Role {
            publish,
            subscribe,
            account,
        })
    }

    fn direction(&self, key: &str, raw: RawDirection) -> Result<Direction, ConfigError> {
        let entries = |list: &str, subjects: Vec<String>| -> Result<Vec<Entry>, ConfigError> {
            subjects
                .iter()
                .map(|s| Entry::parse(s).map_err(|r| self.err(&format!("{key}.{list}"), r)))
                .collect()
        };
        Ok(Direction {
            allow: entries("allow", raw.allow)?,
            deny: entries("deny", raw.deny)?,
        })
    }

    pub(super) fn users(
        &self,
        raw: BTreeMap<String, RawUser>,
        roles: &RoleTable,
    ) -> Result<Vec<ConfigUser>, ConfigError> {
        let mut users: Vec<ConfigUser> = Vec::new();
        for (name, user) in raw {
            let key = format!("users.{name}");
            if name.is_empty()
                || name.len() > 256
                || name.chars().any(|c| c.is_whitespace() || c.is_control())
            {
                return Err(self.err(
                    &key,
                    "a user name must be 1 to 256 characters without whitespace",
                ));
            }
            let credential = self.credential(&key, &user, &users)?;
            let grant = self.grant(&key, &name, user, roles)?;
            users.push(ConfigUser {
                name,
                credential,
                grant,
            });
        }
        Ok(users)
    }

    /// Exactly one of a bcrypt hash and a public nkey no other user has.
    fn credential(
        &self,
        key: &str,
        user: &RawUser,
        earlier: &[ConfigUser],
    ) -> Result<Credential, ConfigError> {
        match (&user.password_bcrypt, &user.nkey) {
            (Some(hash), None) => {
                let at = format!("{key}.password_bcrypt");
                let cost = bcrypt_cost(hash).map_err(|r| self.err(&at, r))?;
                // A check cannot be interrupted once started: a cost whose
                // check outlasts any auth timeout only gives a flood of
                // wrong passwords a way to keep the cores busy.
                if cost > MAX_BCRYPT_COST {
                    return Err(self.err(
                        &at,
                        format!("bcrypt cost {cost} is more than {MAX_BCRYPT_COST}: a check would take longer than nats-server waits for an answer (hash-password makes costs 10 to 16)"),
                    ));
                }
                Ok(Credential::Bcrypt(hash.clone()))
            }
            (None, Some(nkey)) => {
                if !nkey.starts_with('U') || nkeys::KeyPair::from_public_key(nkey).is_err() {
                    return Err(self.err(
                        &format!("{key}.nkey"),
                        "must be a public user nkey (U..., 56 characters); never put the seed here",
                    ));
                }
                if let Some(other) = earlier
                    .iter()
                    .find(|u| matches!(&u.credential, Credential::Nkey(k) if k == nkey))
                {
                    return Err(self.err(
                        &format!("{key}.nkey"),
                        format!("is also the nkey of users.{}", other.name),
                    ));
                }
                Ok(Credential::Nkey(nkey.clone()))
            }
            _ => Err(self.err(key, "needs exactly one credential: password_bcrypt or nkey")),
        }
    }

    /// Roles of the table, or the user's own fixed set; exactly one.
    fn grant(
        &self,
        key: &str,
        name: &str,
        user: RawUser,
        roles: &RoleTable,
    ) -> Result<Grant, ConfigError> {
        let fixed = user.publish.is_some() || user.subscribe.is_some() || user.account.is_some();
        match (user.roles, fixed) {
            (Some(names), false) => {
                if names.is_empty() {
                    return Err(self.err(&format!("{key}.roles"), "lists no role"));
                }
                if let Some(missing) = names.iter().find(|n| !roles.contains(n)) {
                    return Err(self.err(
                        &format!("{key}.roles"),
                        format!("{missing:?} is not a [roles.*] table"),
                    ));
                }
                Ok(Grant::Roles(names))
            }
            (None, true) => {
                let role = self.role(
                    key,
                    RawRole {
                        publish: user.publish.unwrap_or_default(),
                        subscribe: user.subscribe.unwrap_or_default(),
                        account: user.account,
                    },
                )?;
                for (dir, d) in [("pub", &role.publish), ("sub", &role.subscribe)] {
                    if let Some(e) = d
                        .entries()
                        .find(|e| e.template().is_some_and(|t| t.needs_claims()))
                    {
                        return Err(self.err(
                            &format!("{key}.{dir}"),
                            format!("{:?} names a token claim, and a [users.*] identity has no token; use {{{{name}}}}, {{{{issuer}}}} or {{{{scope}}}}", e.as_str()),
                        ));
                    }
                }
                Ok(Grant::Fixed(Arc::new(RoleTable::new(BTreeMap::from([(
                    name.to_string(),
                    role,
                )])))))
            }
            _ => Err(self.err(
                key,
                "grant either roles = [...] or its own pub/sub/account, exactly one of the two",
            )),
        }
    }
}
