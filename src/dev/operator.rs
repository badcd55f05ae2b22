//! A throwaway operator-mode (decentralized JWT) NATS setup, for
//! `dev --operator` and the tests: an operator, the system account, the
//! callout account AUTH (its `authorization` block names the service's
//! own user, the accounts it may place users in, and its xkey), and target
//! accounts with signing keys; the nats-server config that trusts them
//! (memory resolver, preloaded accounts), the service's credentials and
//! the sentinel clients present. What `nsc` would make, minus the store.

use serde::Serialize;
use serde_json::{json, Value};

use crate::clock::unix_now;
use crate::nats::jwt::{self as nats_jwt, WithJti};
use crate::nats::signing_key::SigningKey;
use crate::nats::{creds, user_jwt};
use crate::policy::layout::{Kind, Layout, Response};

/// An account: its identity key and one signing key.
pub struct Account {
    pub name: String,
    pub identity: nkeys::KeyPair,
    pub signing: nkeys::KeyPair,
}

impl Account {
    fn new(name: &str) -> Self {
        Account {
            name: name.to_string(),
            identity: nkeys::KeyPair::new_account(),
            signing: nkeys::KeyPair::new_account(),
        }
    }

    pub fn public_key(&self) -> String {
        self.identity.public_key()
    }
}

pub struct OperatorSetup {
    pub operator: nkeys::KeyPair,
    pub system: Account,
    /// The callout account.
    pub auth: Account,
    /// The callout service's own user in AUTH (listed in `auth_users`).
    pub service_user: nkeys::KeyPair,
    /// More users of AUTH that skip the callout (listed in `auth_users`),
    /// by public key: an admin's, say (see `auth_user_creds`).
    pub more_auth_users: Vec<String>,
    /// AUTH's `authorization.xkey`, when requests are sealed.
    pub xkey: Option<nkeys::XKey>,
    /// The accounts users may be placed in.
    pub targets: Vec<Account>,
    /// Accounts whose JWTs enable JetStream.
    pub jetstream: bool,
    /// Exports of the account holding the streams and imports of the
    /// users' accounts (by target name), as `nats-oidc-callout accounts`
    /// describes them: private exports, imported with activation tokens.
    pub layout: Option<Layout>,
}

#[derive(Serialize)]
struct Claims {
    jti: String,
    iat: u64,
    iss: String,
    sub: String,
    name: String,
    nats: Value,
}

impl WithJti for Claims {
    fn set_jti(&mut self, jti: String) {
        self.jti = jti;
    }
}

fn sign(signer: &nkeys::KeyPair, subject: String, name: &str, nats: Value) -> String {
    let mut claims = Claims {
        jti: String::new(),
        iat: unix_now(),
        iss: signer.public_key(),
        sub: subject,
        name: name.to_string(),
        nats,
    };
    let signer = SigningKey::of(signer).expect("the setup generates its keys");
    nats_jwt::encode(&mut claims, &signer)
}

/// The `.creds` of `user`, a user of `account` without permission limits,
/// signed by the account's signing key.
fn user_creds(account: &Account, user: &nkeys::KeyPair, name: &str) -> String {
    permitted_user_creds(account, user, name, json!({}), json!({}))
}

/// The `.creds` of a user of `account` with these `pub` and `sub`
/// permissions (`{}`: no limit).
fn permitted_user_creds(
    account: &Account,
    user: &nkeys::KeyPair,
    name: &str,
    publish: Value,
    subscribe: Value,
) -> String {
    let jwt = sign(
        &account.signing,
        user.public_key(),
        name,
        json!({
            "pub": publish, "sub": subscribe,
            "subs": -1, "data": -1, "payload": -1,
            "issuer_account": account.public_key(),
            "type": "user",
            "version": 2,
        }),
    );
    creds::format(&jwt, &user.seed().expect("a fresh key has a seed"))
}

impl OperatorSetup {
    /// Fresh keys for an operator, SYS, AUTH and the named target accounts.
    pub fn new(targets: &[&str], xkey: bool) -> Self {
        OperatorSetup {
            operator: nkeys::KeyPair::new_operator(),
            system: Account::new("SYS"),
            auth: Account::new("AUTH"),
            service_user: nkeys::KeyPair::new_user(),
            more_auth_users: Vec::new(),
            xkey: xkey.then(nkeys::XKey::new),
            targets: targets.iter().map(|n| Account::new(n)).collect(),
            jetstream: false,
            layout: None,
        }
    }

    pub fn target(&self, name: &str) -> Option<&Account> {
        self.targets.iter().find(|a| a.name == name)
    }

    fn operator_jwt(&self) -> String {
        sign(
            &self.operator,
            self.operator.public_key(),
            "dev-operator",
            json!({
                "system_account": self.system.public_key(),
                "type": "operator",
                "version": 2,
            }),
        )
    }

    fn account_jwt(&self, account: &Account, authorization: Option<Value>) -> String {
        let mut limits = json!({
            "subs": -1, "data": -1, "payload": -1,
            "imports": -1, "exports": -1, "wildcards": true, "conn": -1, "leaf": -1,
        });
        // nats-server refuses to start with JetStream in the system account;
        // an account that imports another's JetStream API has none of its
        // own (it would answer beside the import).
        let imports_api = self
            .layout
            .as_ref()
            .is_some_and(|l| l.imports.contains_key(&account.name));
        if self.jetstream && account.public_key() != self.system.public_key() && !imports_api {
            for k in ["mem_storage", "disk_storage", "streams", "consumer"] {
                limits[k] = json!(-1);
            }
        }
        let mut nats = json!({
            "limits": limits,
            "signing_keys": [account.signing.public_key()],
            "default_permissions": {"pub": {}, "sub": {}},
            "type": "account",
            "version": 2,
        });
        if let Some(a) = authorization {
            nats["authorization"] = a;
        }
        if let Some(layout) = &self.layout {
            if layout.account == account.name {
                nats["exports"] = self.exports_json(layout);
            }
            if layout.imports.contains_key(&account.name) {
                nats["imports"] = self.imports_json(layout, account);
            }
        }
        sign(&self.operator, account.public_key(), &account.name, nats)
    }

    fn exports_json(&self, layout: &Layout) -> Value {
        layout
            .exports()
            .into_iter()
            .map(|e| {
                let mut export = json!({
                    "name": e.subject,
                    "subject": e.subject,
                    "token_req": true,
                });
                match e.kind {
                    Kind::Stream => export["type"] = json!("stream"),
                    Kind::Service(response) => {
                        export["type"] = json!("service");
                        if response == Response::Stream {
                            export["response_type"] = json!("Stream");
                        }
                    }
                }
                export
            })
            .collect()
    }

    /// The imports of `account`, each with an activation token signed by
    /// the exporting account.
    fn imports_json(&self, layout: &Layout, account: &Account) -> Value {
        let exporter = self
            .target(&layout.account)
            .expect("the account holding the streams is one of the setup's accounts");
        layout.imports[&account.name]
            .iter()
            .map(|i| {
                let kind = match i.kind {
                    Kind::Stream => "stream",
                    Kind::Service(_) => "service",
                };
                let activation = sign(
                    &exporter.identity,
                    account.public_key(),
                    &i.subject,
                    json!({"subject": i.subject, "kind": kind, "type": "activation", "version": 2}),
                );
                json!({
                    "name": i.subject,
                    "subject": i.subject,
                    "account": exporter.public_key(),
                    "token": activation,
                    "type": kind,
                })
            })
            .collect()
    }

    /// AUTH's account JWT: external authorization by the service's user,
    /// for the target accounts.
    fn auth_jwt(&self) -> String {
        let mut authorization = json!({
            "auth_users": std::iter::once(self.service_user.public_key())
                .chain(self.more_auth_users.iter().cloned())
                .collect::<Vec<_>>(),
            "allowed_accounts": self.targets.iter().map(Account::public_key).collect::<Vec<_>>(),
        });
        if let Some(x) = &self.xkey {
            authorization["xkey"] = json!(x.public_key());
        }
        self.account_jwt(&self.auth, Some(authorization))
    }

    /// Every account's public key and JWT, for `resolver_preload`.
    pub fn account_jwts(&self) -> Vec<(String, String)> {
        let mut out = vec![
            (
                self.system.public_key(),
                self.account_jwt(&self.system, None),
            ),
            (self.auth.public_key(), self.auth_jwt()),
        ];
        for t in &self.targets {
            out.push((t.public_key(), self.account_jwt(t, None)));
        }
        out
    }

    /// The nats-server config lines that trust this operator: operator,
    /// system account, memory resolver with every account preloaded.
    pub fn nats_conf(&self) -> String {
        let preload: String = self
            .account_jwts()
            .into_iter()
            .map(|(key, jwt)| format!("  {key}: {jwt}\n"))
            .collect();
        format!(
            "operator: {}\nsystem_account: {}\nresolver: MEMORY\nresolver_preload: {{\n{preload}}}\n",
            self.operator_jwt(),
            self.system.public_key()
        )
    }

    /// The `.creds` of the service's own user: a user of AUTH, signed by
    /// AUTH's signing key, that may publish answers and read requests.
    pub fn service_creds(&self) -> String {
        user_creds(&self.auth, &self.service_user, "nats-oidc-callout")
    }

    /// The `.creds` of `user`, a user of AUTH (one of `more_auth_users`)
    /// that may publish to `publish` and subscribe to `subscribe` only.
    pub fn auth_user_creds(
        &self,
        user: &nkeys::KeyPair,
        name: &str,
        publish: &[&str],
        subscribe: &[&str],
    ) -> String {
        permitted_user_creds(
            &self.auth,
            user,
            name,
            json!({ "allow": publish }),
            json!({ "allow": subscribe }),
        )
    }

    /// The `.creds` of a user of the system account (monitoring requests
    /// such as `$SYS.REQ.SERVER.PING.SUBSZ`), signed by its signing key.
    pub fn system_creds(&self) -> String {
        user_creds(&self.system, &nkeys::KeyPair::new_user(), "system")
    }

    /// The sentinel clients present: a bearer user of AUTH with no
    /// permissions.
    pub fn sentinel_creds(&self) -> String {
        let user = nkeys::KeyPair::new_user();
        let jwt = user_jwt::sentinel(
            &user.public_key(),
            &self.auth.public_key(),
            &SigningKey::of(&self.auth.signing).expect("the setup generates its keys"),
            unix_now(),
        );
        creds::format(&jwt, &user.seed().expect("a fresh key has a seed"))
    }
}
