//! `[[bindings]]` and `require_claims`: claim matches, checked at load time
//! and attached to the issuer they name.

use std::collections::BTreeMap;

use super::oidc::check_name;
use super::raw::RawBinding;
use super::validate::Validator;
use super::{ConfigError, IssuerConfig};
use crate::policy::bindings::Binding;
use crate::policy::claim_match::{ClaimMatch, Pattern};
use crate::policy::claims::ClaimPath;
use crate::policy::roles::{table_names, RoleTable};

/// The longest value or pattern a match may name; claims are short.
const MAX_VALUE_CHARS: usize = 1024;

impl Validator<'_> {
    /// `claim = value | [values]` pairs: claim paths as elsewhere, values
    /// strings (with `*` globs), integers or booleans.
    pub(super) fn claim_matches(
        &self,
        key: &str,
        table: &BTreeMap<String, toml::Value>,
    ) -> Result<Vec<ClaimMatch>, ConfigError> {
        table
            .iter()
            .map(|(name, value)| {
                let at = format!("{key}.{name}");
                let path = ClaimPath::parse(name).map_err(|r| self.err(&at, r))?;
                let values = match value {
                    toml::Value::Array(items) if items.is_empty() => {
                        return Err(self.err(&at, "lists no value; nothing could match"))
                    }
                    toml::Value::Array(items) => items.iter().collect::<Vec<_>>(),
                    one => vec![one],
                };
                let any_of = values
                    .into_iter()
                    .map(|v| self.pattern(&at, v))
                    .collect::<Result<Vec<_>, _>>()?;
                Ok(ClaimMatch {
                    name: name.clone(),
                    path,
                    any_of,
                })
            })
            .collect()
    }

    fn pattern(&self, at: &str, value: &toml::Value) -> Result<Pattern, ConfigError> {
        let text = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => {
                return Err(self.err(
                    at,
                    format!(
                        "a {} is not a claim value: use a string, an integer, a boolean or a list of them",
                        other.type_str()
                    ),
                ))
            }
        };
        if text.is_empty() {
            return Err(self.err(
                at,
                "an empty value; a claim that must be empty is not a useful match",
            ));
        }
        if text.chars().count() > MAX_VALUE_CHARS {
            return Err(self.err(
                at,
                format!("a value longer than {MAX_VALUE_CHARS} characters"),
            ));
        }
        if text.chars().all(|c| c == '*') {
            return Err(self.err(
                at,
                format!("{text:?} matches every value; leave the claim out (or require that it exists with a narrower pattern)"),
            ));
        }
        Ok(Pattern::parse(&text))
    }

    /// Attaches each binding to its issuer, after checking it names a known
    /// issuer and roles of that issuer, and pins a workload or says `broad`.
    pub(super) fn bindings(
        &self,
        raw: Vec<RawBinding>,
        issuers: &mut [IssuerConfig],
        roles: &RoleTable,
        kv_grants: bool,
    ) -> Result<(), ConfigError> {
        for (i, b) in raw.into_iter().enumerate() {
            let (at_issuer, binding) = self.binding(i, b, issuers, roles)?;
            issuers[at_issuer].claims.bindings.push(binding);
        }
        for o in issuers.iter() {
            if o.claims.roles_claim.is_none() && o.claims.bindings.is_empty() && !kv_grants {
                let key = if issuers.len() == 1 {
                    "oidc.roles_claim".to_string()
                } else {
                    format!("oidc[{}].roles_claim", o.settings.name)
                };
                return Err(self.err(
                    &key,
                    "required unless [[bindings]] name this issuer or grants.kv_bucket is set: otherwise no token of it gets a role",
                ));
            }
        }
        Ok(())
    }

    /// `bindings[i]`, and the index of the issuer it belongs to.
    fn binding(
        &self,
        i: usize,
        b: RawBinding,
        issuers: &[IssuerConfig],
        roles: &RoleTable,
    ) -> Result<(usize, Binding), ConfigError> {
        let key = |k: &str| format!("bindings[{i}].{k}");
        let Some(at_issuer) = issuers.iter().position(|o| o.settings.name == b.issuer) else {
            let names: Vec<&str> = issuers.iter().map(|o| o.settings.name.as_str()).collect();
            return Err(self.err(
                &key("issuer"),
                format!(
                    "{:?} names no [oidc] issuer (issuers: {names:?})",
                    crate::text::clip(&b.issuer)
                ),
            ));
        };
        let issuer = &issuers[at_issuer];
        let name = self.binding_name(i, &b, issuers)?;
        if b.matches.is_empty() {
            return Err(self.err(
                &key("match"),
                "names no claim: a binding that matches every token of the issuer is what require_claims and a roles claim are for",
            ));
        }
        let matches = self.claim_matches(&key("match"), &b.matches)?;
        let binding = Binding {
            name,
            matches,
            roles: self.binding_roles(&key("roles"), &b.roles, issuer, roles)?,
            broad: b.broad.unwrap_or(false),
        };
        binding
            .check_pinned(issuer.claims.platform.platform)
            .map_err(|r| self.err(&key("match"), r))?;
        Ok((at_issuer, binding))
    }

    /// The binding's name (a metrics label), unique among all bindings;
    /// `<issuer>[<i>]` when the file gives none.
    fn binding_name(
        &self,
        i: usize,
        b: &RawBinding,
        issuers: &[IssuerConfig],
    ) -> Result<String, ConfigError> {
        let key = format!("bindings[{i}].name");
        let name = match &b.name {
            Some(n) => {
                check_name(n)
                    .map_err(|r| self.err(&key, format!("{r} (it is a metrics label)")))?;
                n.clone()
            }
            None => format!("{}[{i}]", b.issuer),
        };
        match issuers
            .iter()
            .flat_map(|o| &o.claims.bindings)
            .find(|o| o.name == name)
        {
            Some(other) => Err(self.err(&key, format!("{:?} names two bindings", other.name))),
            None => Ok(name),
        }
    }

    /// The role table names of the roles a binding gives, each a role of
    /// its issuer.
    fn binding_roles(
        &self,
        key: &str,
        written: &[String],
        issuer: &IssuerConfig,
        roles: &RoleTable,
    ) -> Result<Vec<String>, ConfigError> {
        if written.is_empty() {
            return Err(self.err(key, "lists no role"));
        }
        // A binding names its issuer's roles as the issuer's tokens do,
        // without a namespace; each one is checked (table_names would
        // drop a name with ':' silently).
        if let Some(w) = written.iter().find(|r| r.is_empty() || r.contains(':')) {
            return Err(self.err(
                key,
                format!(
                    "{w:?}: name the issuer's roles as its tokens would, without a namespace (roles = [\"deployer\"] means [roles.\"<namespace>:deployer\"])"
                ),
            ));
        }
        let table = table_names(issuer.claims.role_namespace.as_deref(), written);
        for (w, looked_up) in written.iter().zip(&table) {
            if !roles.contains(looked_up) {
                return Err(self.err(
                    key,
                    format!(
                        "{w:?} is no role of issuer {:?}: it would be [roles.{looked_up:?}], which is not defined",
                        issuer.settings.name
                    ),
                ));
            }
        }
        Ok(table)
    }
}
