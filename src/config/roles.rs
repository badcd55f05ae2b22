//! `[roles.*]` and `[users.*]`: the role table and the identities defined in
//! the config.

use std::collections::BTreeMap;
use std::sync::Arc;

use std::time::Duration;

use super::raw::{
    RawConnection, RawDirection, RawJetStream, RawKv, RawLimits, RawResp, RawRole, RawUser,
    RawWindow, Size,
};
use super::validate::Validator;
use super::{ConfigError, IssuerConfig};
use crate::policy::connection::{parse_source, parse_zone, ConnType, ConnectionRules, Window};
use crate::policy::layout::JetStreamAccount;
use crate::policy::roles::{Direction, Limits, Resp, Role, RoleTable};
use crate::policy::streams::{
    check_stream_name, Consumer, GrantError, JetStreamGrant, JsHome, KvGrant, KvScope, StreamGrants,
};
use crate::policy::template::Entry;
use crate::policy::users::{bcrypt_cost, ConfigUser, Credential, Grant, MAX_BCRYPT_COST};

impl Validator<'_> {
    /// `js` says where the streams of the grants live (what their v2 ack
    /// subjects carry).
    pub(super) fn roles(
        &self,
        raw: BTreeMap<String, RawRole>,
        issuers: &[IssuerConfig],
        js: Option<&JetStreamAccount>,
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
            let home = js.map(JetStreamAccount::home);
            let role = self.role(&format!("roles.{name}"), role, home.as_ref())?;
            roles.insert(name, role);
        }
        Ok(RoleTable::new(roles))
    }

    fn role(&self, key: &str, role: RawRole, home: Option<&JsHome>) -> Result<Role, ConfigError> {
        let at = |k: &str| format!("{key}.{k}");
        let publish = self.direction(&at("pub"), role.publish)?;
        let subscribe = self.direction(&at("sub"), role.subscribe)?;
        let account = match role.account {
            None => None,
            Some(a) if a.is_empty() || a.chars().any(|c| c.is_whitespace() || c.is_control()) => {
                return Err(self.err(
                    &at("account"),
                    "must be an account name (not empty, no whitespace)",
                ))
            }
            Some(a) => Some(a),
        };
        let resp = role.resp.map(|r| self.resp(&at("resp"), r)).transpose()?;
        let max_user_ttl = role
            .max_user_ttl
            .as_deref()
            .map(|v| {
                self.bounded_duration(
                    &at("max_user_ttl"),
                    Some(v),
                    Duration::ZERO,
                    Duration::from_secs(1)..=Duration::from_secs(30 * 24 * 3600),
                    "must be between 1s and 30 days",
                )
            })
            .transpose()?;
        let limits = role
            .limits
            .map(|l| self.limits(&at("limits"), l))
            .transpose()?
            .unwrap_or_default();
        let connection = role
            .connection
            .map(|c| self.connection(&at("connection"), c))
            .transpose()?;
        let jetstream = role
            .jetstream
            .map(|j| self.jetstream(&at("jetstream"), j))
            .transpose()?
            .unwrap_or_default();
        let kv = role
            .kv
            .map(|k| self.kv(&at("kv"), k))
            .transpose()?
            .unwrap_or_default();
        let grants = StreamGrants::new(jetstream, kv, home).map_err(|e| match e {
            GrantError::NoHome => self.err(
                key,
                "has JetStream/KV grants, but no [jetstream] table says where the streams and buckets live: set jetstream.account to the account that holds them (one users are never placed in; `nats-oidc-callout accounts` prints the imports its users' accounts need)",
            ),
            GrantError::Subject { kind, reason } => self.err(&at(kind), reason),
        })?;
        Ok(Role {
            publish,
            subscribe,
            account,
            resp,
            max_user_ttl,
            limits,
            connection,
            grants,
        })
    }

    fn resp(&self, key: &str, raw: RawResp) -> Result<Resp, ConfigError> {
        let max = raw.max.unwrap_or(1);
        if !(1..=1_000_000).contains(&max) {
            return Err(self.err(&format!("{key}.max"), "must be between 1 and 1000000"));
        }
        let ttl = raw
            .ttl
            .as_deref()
            .map(|v| {
                self.bounded_duration(
                    &format!("{key}.ttl"),
                    Some(v),
                    Duration::ZERO,
                    Duration::from_millis(1)..=Duration::from_secs(24 * 3600),
                    "must be between 1ms and 24h",
                )
            })
            .transpose()?;
        Ok(Resp { max, ttl })
    }

    fn limits(&self, key: &str, raw: RawLimits) -> Result<Limits, ConfigError> {
        let count = |k: &str, v: Option<i64>| match v {
            Some(n) if n < 0 => Err(self.err(
                &format!("{key}.{k}"),
                "must not be negative (leave it out for no limit)",
            )),
            other => Ok(other),
        };
        let size = |k: &str, v: Option<Size>| -> Result<Option<i64>, ConfigError> {
            let bytes = match v {
                None => return Ok(None),
                Some(Size::Bytes(n)) => n,
                Some(Size::Text(t)) => t
                    .parse::<bytesize::ByteSize>()
                    .map_err(|_| {
                        self.err(
                            &format!("{key}.{k}"),
                            format!(
                                "{:?} is not a size like 65536, \"64KiB\" or \"10MB\"",
                                crate::text::clip(&t)
                            ),
                        )
                    })?
                    .as_u64()
                    .try_into()
                    .unwrap_or(i64::MAX),
            };
            count(k, Some(bytes))
        };
        // nats-server keeps the subscription and payload limits as 32-bit
        // numbers; a larger one would wrap.
        let int32 = |k: &str, v: Option<i64>| match v {
            Some(n) if n > i64::from(i32::MAX) => Err(self.err(
                &format!("{key}.{k}"),
                format!("{n} is more than nats-server can hold ({})", i32::MAX),
            )),
            other => Ok(other),
        };
        let limits = Limits {
            subs: int32("subs", count("subs", raw.subs)?)?,
            payload: int32("payload", size("payload", raw.payload)?)?,
            data: size("data", raw.data)?,
        };
        if limits.is_empty() {
            return Err(self.err(key, "sets no limit: subs, payload or data"));
        }
        Ok(limits)
    }

    fn connection(&self, key: &str, raw: RawConnection) -> Result<ConnectionRules, ConfigError> {
        let at = |k: &str| format!("{key}.{k}");
        let types = self.rule_list(&at("types"), raw.types, "type", |n| ConnType::parse(n))?;
        let sources =
            self.rule_list(&at("sources"), raw.sources, "network", |n| parse_source(n))?;
        let times = self.rule_list(&at("times"), raw.times, "window", |w: &RawWindow| {
            Window::parse(&w.start, &w.end)
        })?;
        let zone = parse_zone(raw.time_zone.as_deref().unwrap_or("UTC"))
            .map_err(|r| self.err(&at("time_zone"), r))?;
        if types.is_none() && sources.is_none() && times.is_none() {
            return Err(self.err(key, "sets no rule: types, sources or times"));
        }
        Ok(ConnectionRules {
            types,
            sources,
            times,
            zone,
        })
    }

    /// A connection rule's list: absent allows any; present, it must name
    /// at least one `what`, each parsed by the rule's own parser.
    fn rule_list<T, U>(
        &self,
        key: &str,
        list: Option<Vec<T>>,
        what: &str,
        parse: impl Fn(&T) -> Result<U, String>,
    ) -> Result<Option<Vec<U>>, ConfigError> {
        let Some(list) = list else { return Ok(None) };
        if list.is_empty() {
            let any = if what == "window" { "any time" } else { "any" };
            return Err(self.err(key, format!("lists no {what}; leave it out to allow {any}")));
        }
        list.iter()
            .map(|x| parse(x).map_err(|r| self.err(key, r)))
            .collect::<Result<Vec<_>, _>>()
            .map(Some)
    }

    fn jetstream(&self, key: &str, raw: RawJetStream) -> Result<JetStreamGrant, ConfigError> {
        let streams = |k: &str, list: Vec<String>| {
            list.into_iter()
                .map(|name| {
                    check_stream_name("stream", &name)
                        .map(|_| name)
                        .map_err(|r| self.err(&format!("{key}.{k}"), r))
                })
                .collect::<Result<Vec<_>, _>>()
        };
        let at = format!("{key}.consume");
        let consume = raw
            .consume
            .iter()
            .map(|entry| Consumer::parse(entry).map_err(|r| self.err(&at, r)))
            .collect::<Result<Vec<_>, ConfigError>>()?;
        let grant = JetStreamGrant {
            consume,
            read: streams("read", raw.read)?,
            replay: streams("replay", raw.replay)?,
            manage: streams("manage", raw.manage)?,
        };
        if grant.is_empty() {
            return Err(self.err(key, "grants nothing: list consume, read, replay or manage"));
        }
        Ok(grant)
    }

    fn kv(&self, key: &str, raw: RawKv) -> Result<KvGrant, ConfigError> {
        let scopes = |k: &str, list: Vec<String>| {
            let at = format!("{key}.{k}");
            list.into_iter()
                .map(|entry| KvScope::parse(&entry).map_err(|r| self.err(&at, r)))
                .collect::<Result<Vec<_>, ConfigError>>()
        };
        let grant = KvGrant {
            read: scopes("read", raw.read)?,
            write: scopes("write", raw.write)?,
        };
        if grant.is_empty() {
            return Err(self.err(key, "grants nothing: list read or write"));
        }
        Ok(grant)
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
                        ..Default::default()
                    },
                    None,
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
