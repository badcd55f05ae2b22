//! `[jetstream]`: the account that holds the streams and buckets of the
//! JetStream/KV grants, and where users may not be placed because of it.

use super::raw::RawJetStreamAccount;
use super::validate::Validator;
use super::{CalloutConfig, ConfigError};
use crate::callout;
use crate::policy::layout::{JetStreamAccount, INBOXES};
use crate::policy::roles::RoleTable;
use crate::policy::subject::{check_permission_subject, overlaps};

/// Subjects nats-server or this service route by, which a stream subject
/// must not reach into.
const ROUTED: &[&str] = &[
    "$JS.API.>",
    "$JS.ACK.>",
    "$JS.FC.>",
    "$JS.EVENT.>",
    "$JSC.>",
    "$KV.>",
    "$O.>",
    "$SYS.>",
    "$SRV.>",
    "_R_.>",
    "_GR_.>",
    INBOXES,
];

impl Validator<'_> {
    pub(super) fn jetstream_account(
        &self,
        raw: Option<RawJetStreamAccount>,
        callout: &CalloutConfig,
    ) -> Result<Option<JetStreamAccount>, ConfigError> {
        let Some(raw) = raw else {
            return Ok(None);
        };
        let name = raw.account;
        if name.is_empty() || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
            return Err(self.err(
                "jetstream.account",
                "must name the account that holds the streams and buckets (not empty, no whitespace)",
            ));
        }
        if callout.is_callout_account(&name) == Some(true) {
            return Err(self.err(
                "jetstream.account",
                format!("{name:?} is the callout's own account: keep streams users reach out of it (the authorization requests and the grants bucket live there)"),
            ));
        }
        let public_key = match &callout.mode {
            callout::Mode::Server if raw.public_key.is_some() => return Err(self.err(
                "jetstream.public_key",
                "is for operator mode; in server mode nats-server knows the account by its name",
            )),
            callout::Mode::Server => None,
            callout::Mode::Operator { accounts } => {
                Some(self.streams_account_key(&name, raw.public_key, accounts, callout)?)
            }
        };
        let domain = raw.domain.map(|d| self.domain(d)).transpose()?;
        for subject in &raw.stream_subjects {
            self.stream_subject(subject)?;
        }
        let id = public_key.clone().unwrap_or_else(|| name.clone());
        Ok(Some(JetStreamAccount {
            name,
            id,
            public_key,
            domain,
            same_account: raw.same_account.unwrap_or(false),
            stream_subjects: raw.stream_subjects,
        }))
    }

    /// Operator mode: the public key of the account holding the streams,
    /// as written or as `callout.accounts` declares it.
    fn streams_account_key(
        &self,
        name: &str,
        written: Option<String>,
        accounts: &std::collections::BTreeMap<String, callout::TargetAccount>,
        callout: &CalloutConfig,
    ) -> Result<String, ConfigError> {
        let declared = accounts.get(name).map(|a| a.public_key.clone());
        let key = match (written, declared) {
            (Some(k), Some(d)) if k != d => {
                return Err(self.err(
                    "jetstream.public_key",
                    format!("is not the public key of callout.accounts.{name} ({d})"),
                ))
            }
            (Some(k), _) => k,
            (None, Some(d)) => d,
            (None, None) => {
                return Err(self.err(
                    "jetstream.public_key",
                    format!("required in operator mode: the public key of the account {name:?} (nsc describe account --name {name} --field sub)"),
                ))
            }
        };
        if !(key.starts_with('A') && nkeys::KeyPair::from_public_key(&key).is_ok()) {
            return Err(self.err(
                "jetstream.public_key",
                "must be the account's public key (A..., 56 characters); never put a seed here",
            ));
        }
        if key == callout.auth_account {
            return Err(self.err(
                "jetstream.public_key",
                "is the callout's own account: keep streams users reach out of it (the authorization requests and the grants bucket live there)",
            ));
        }
        if let Some((other, _)) = accounts
            .iter()
            .find(|(n, a)| a.public_key == key && n.as_str() != name)
        {
            return Err(self.err(
                "jetstream.account",
                format!("the account with this public key is callout.accounts.{other}: use that name here"),
            ));
        }
        Ok(key)
    }

    fn domain(&self, d: String) -> Result<String, ConfigError> {
        if d.is_empty()
            || !d
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(self.err(
                "jetstream.domain",
                "must be nats-server's jetstream domain: letters, digits, '-' and '_'",
            ));
        }
        Ok(d)
    }

    /// A subject the streams store, which must not reach into what
    /// nats-server or the grants route by.
    fn stream_subject(&self, subject: &str) -> Result<(), ConfigError> {
        check_permission_subject(subject).map_err(|r| self.err("jetstream.stream_subjects", r))?;
        if let Some(routed) = ROUTED.iter().find(|r| overlaps(subject, r)) {
            return Err(self.err(
                "jetstream.stream_subjects",
                format!("{subject:?} reaches {routed}, which the grants (or nats-server) route by themselves; list the subjects your streams store"),
            ));
        }
        Ok(())
    }

    /// Users with JetStream/KV grants are never placed in the callout's
    /// account, nor (unless `same_account`) in the account holding the
    /// streams: JetStream would publish its answers there, with its own
    /// rights, to any subject the user names.
    pub(super) fn jetstream_placement(
        &self,
        callout: &CalloutConfig,
        roles: &RoleTable,
        js: Option<&JetStreamAccount>,
    ) -> Result<(), ConfigError> {
        let granting = || roles.iter().filter(|(_, r)| !r.grants.is_empty());
        if let (None, Some((name, _))) = (js, granting().next()) {
            return Err(self.err(
                &format!("roles.{name}"),
                "has JetStream/KV grants, but no [jetstream] table says where the streams and buckets live: set jetstream.account to the account that holds them (one users are never placed in; `nats-oidc-callout accounts` prints the imports its users' accounts need)",
            ));
        }
        if js.is_some()
            && matches!(callout.mode, callout::Mode::Server)
            && callout.auth_account_name.is_none()
        {
            return Err(self.err(
                "callout.auth_account",
                "required with [jetstream]: the callout's own account as nats-server's config names it (auth_callout.account, e.g. \"AUTH\"), so that no user with a grant is placed there",
            ));
        }
        let Some(js) = js else {
            return Ok(());
        };
        for (name, role) in granting() {
            let (key, account) = match role.account.as_deref() {
                Some(a) => (format!("roles.{name}.account"), a),
                None => ("callout.account".to_string(), callout.account.as_str()),
            };
            if callout.is_callout_account(account) == Some(true) {
                return Err(self.err(
                    &key,
                    format!("roles.{name} has JetStream/KV grants and places its users in {account:?}, the callout's own account: JetStream would publish its answers to any subject they name there, the grants bucket and the authorization requests included; place them in another account"),
                ));
            }
            if account == js.name && !js.same_account {
                return Err(self.err(
                    &key,
                    format!("roles.{name} has JetStream/KV grants and places its users in {account:?}, the account holding the streams (jetstream.account): JetStream publishes its answers to any subject a user names, with its own rights, so those users could write into every stream and bucket there; place them in another account that imports the streams (`nats-oidc-callout accounts`), or set jetstream.same_account = true to accept that"),
                ));
            }
        }
        Ok(())
    }
}
