//! Identities defined in the config, beside OIDC: machines and operators
//! (`[users.<name>]`) that log in with a bcrypt-checked password or by
//! signing nats-server's nonce with an nkey, and get either roles from the
//! role table or a fixed permission set of their own.
//!
//! A connect is decided here, and never by the OIDC path, when it presents
//! an nkey alone or uses the name of a configured user: an explicit rule is
//! never bypassed by also sending a token. An nkey presented with a user
//! JWT is that JWT's (in operator mode the sentinel's, which nats-server
//! checked with the nonce signature), never a `[users.*]` identity.

use std::collections::HashMap;
use std::sync::Arc;

use base64::engine::general_purpose::{STANDARD, STANDARD_NO_PAD, URL_SAFE_NO_PAD};
use base64::Engine;

use crate::clock::Deadline;
use crate::nats::request::RequestBody;
use crate::policy::passwords::PasswordChecks;
use crate::policy::roles::RoleTable;
use crate::refusal::{Refusal, RefusalCode};

/// The issuer name of identities from `[users.*]`: in logs, in `{{issuer}}`
/// and in their KV grant keys. No `[oidc]` block may take it.
pub(crate) const CONFIG_ISSUER: &str = "config";

#[derive(Clone, Debug)]
pub struct ConfigUser {
    pub name: String,
    pub credential: Credential,
    pub grant: Grant,
}

#[derive(Clone, Debug)]
pub enum Credential {
    /// A bcrypt hash of the connect password.
    Bcrypt(String),
    /// A public user nkey (U...): the client proves it holds the seed.
    Nkey(String),
}

#[derive(Clone, Debug)]
pub enum Grant {
    /// Roles of the `[roles.*]` table, by their table names.
    Roles(Vec<String>),
    /// The user's own permission set: a one-role table holding it.
    Fixed(Arc<RoleTable>),
}

pub(crate) struct ConfigUsers {
    by_name: HashMap<String, ConfigUser>,
    by_nkey: HashMap<String, String>,
    passwords: Arc<PasswordChecks>,
}

impl ConfigUsers {
    /// The users, checking passwords with `passwords` (shared across
    /// config reloads: its bounds and remembered logins are the process's).
    pub(crate) fn new(users: &[ConfigUser], passwords: Arc<PasswordChecks>) -> Self {
        let by_nkey = users
            .iter()
            .filter_map(|u| match &u.credential {
                Credential::Nkey(k) => Some((k.clone(), u.name.clone())),
                Credential::Bcrypt(_) => None,
            })
            .collect();
        ConfigUsers {
            by_name: users.iter().map(|u| (u.name.clone(), u.clone())).collect(),
            by_nkey,
            passwords,
        }
    }

    /// `None`: the connect is not for a config identity (the OIDC path
    /// decides it). Otherwise the authenticated user, or why not (a reason
    /// that never contains the password).
    pub(crate) async fn authenticate(
        &self,
        request: &RequestBody,
        deadline: &Deadline,
    ) -> Option<Result<&ConfigUser, Refusal>> {
        let opts = &request.connect_opts;
        if let Some(nkey) = opts.nkey.as_deref().filter(|_| opts.jwt.is_none()) {
            return Some(self.by_nkey_proof(nkey, request));
        }
        let user = self.by_name.get(opts.user.as_deref()?)?;
        let denied =
            |reason: String| Refusal::new(RefusalCode::IdentityCredentials, reason).of(&user.name);
        Some(match &user.credential {
            Credential::Nkey(_) => Err(denied(format!(
                "user {:?} authenticates with its nkey, not a password",
                user.name
            ))),
            Credential::Bcrypt(hash) => match opts.pass.as_deref().filter(|p| !p.is_empty()) {
                None => Err(denied(format!("user {:?} sent no password", user.name))),
                Some(password) => {
                    match self
                        .passwords
                        .check(&user.name, hash, password, deadline)
                        .await
                    {
                        Ok(true) => Ok(user),
                        Ok(false) => {
                            Err(denied(format!("wrong password for user {:?}", user.name)))
                        }
                        Err(refusal) => Err(refusal),
                    }
                }
            },
        })
    }

    fn by_nkey_proof(&self, nkey: &str, request: &RequestBody) -> Result<&ConfigUser, Refusal> {
        let Some(user) = self.by_nkey.get(nkey).and_then(|n| self.by_name.get(n)) else {
            return Err(Refusal::new(
                RefusalCode::UnknownNkey,
                format!(
                    "nkey {:?} is not the nkey of any [users.*] entry",
                    crate::text::clip(nkey)
                ),
            ));
        };
        let denied = |reason: &str| {
            Refusal::new(
                RefusalCode::IdentityCredentials,
                format!("user {:?}: {reason}", user.name),
            )
            .of(&user.name)
        };
        let nonce = request
            .client_info
            .nonce
            .as_deref()
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                denied("no nonce in the request: nats-server sends one only when its config has an nkey user (see the book's service accounts guide)")
            })?;
        let sig = request
            .connect_opts
            .sig
            .as_deref()
            .ok_or_else(|| denied("no nonce signature"))?;
        // Clients encode the signature as raw URL-safe base64 (Go, Rust) or
        // standard base64 (JavaScript).
        let sig = URL_SAFE_NO_PAD
            .decode(sig)
            .or_else(|_| STANDARD.decode(sig))
            .or_else(|_| STANDARD_NO_PAD.decode(sig))
            .map_err(|_| denied("the nonce signature is not base64"))?;
        let key = nkeys::KeyPair::from_public_key(nkey)
            .map_err(|_| denied("the configured nkey is not a public key"))?;
        key.verify(nonce.as_bytes(), &sig)
            .map_err(|_| denied("the nonce signature does not verify with its nkey"))?;
        Ok(user)
    }
}

/// The highest bcrypt cost accepted: about 4 s a check on a current core.
pub(crate) const MAX_BCRYPT_COST: u32 = 16;

/// A bcrypt hash as nats-server and `htpasswd -B` write it; returns its cost.
pub(crate) fn bcrypt_cost(hash: &str) -> Result<u32, String> {
    let parts: Option<bcrypt::HashParts> = hash.parse().ok().filter(|p: &bcrypt::HashParts| {
        hash.len() == 60
            && ["$2a$", "$2b$", "$2y$"].iter().any(|v| hash.starts_with(v))
            && (4..=31).contains(&p.get_cost())
    });
    parts.map(|p| p.get_cost()).ok_or_else(|| {
        "is not a bcrypt hash ($2a$/$2b$/$2y$, 60 characters); make one with `nats-oidc-callout hash-password`"
            .into()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn request(opts: serde_json::Value, nonce: Option<&str>) -> RequestBody {
        serde_json::from_value(json!({
            "user_nkey": "U",
            "server_id": {"id": "N"},
            "client_info": {"nonce": nonce},
            "connect_opts": opts,
        }))
        .unwrap()
    }

    fn users(nkey: &str) -> ConfigUsers {
        ConfigUsers::new(
            &[
                ConfigUser {
                    name: "svc-billing".into(),
                    credential: Credential::Bcrypt(bcrypt::hash("s3cret", 4).unwrap()),
                    grant: Grant::Roles(vec!["writer".into()]),
                },
                ConfigUser {
                    name: "svc-sensor".into(),
                    credential: Credential::Nkey(nkey.into()),
                    grant: Grant::Roles(vec!["writer".into()]),
                },
            ],
            Default::default(),
        )
    }

    fn code(r: Option<Result<&ConfigUser, Refusal>>) -> &'static str {
        match r {
            None => "oidc",
            Some(Ok(_)) => "ok",
            Some(Err(d)) => d.code.as_str(),
        }
    }

    #[tokio::test]
    async fn passwords_are_checked_and_other_names_go_to_oidc() {
        let ids = users(&nkeys::KeyPair::new_user().public_key());
        let ask = |o| async { code(ids.authenticate(&request(o, None), &Deadline::none()).await) };
        assert_eq!(
            ask(json!({"user": "svc-billing", "pass": "s3cret"})).await,
            "ok"
        );
        assert_eq!(
            ask(json!({"user": "svc-billing", "pass": "s3cret"})).await,
            "ok"
        );
        for wrong in [
            json!({"user": "svc-billing", "pass": "S3cret"}),
            json!({"user": "svc-billing", "pass": ""}),
            json!({"user": "svc-billing", "auth_token": "s3cret"}),
            json!({"user": "svc-sensor", "pass": "anything"}),
        ] {
            assert_eq!(ask(wrong.clone()).await, "identity_credentials", "{wrong}");
        }
        assert_eq!(ask(json!({"user": "ana", "pass": "jwt"})).await, "oidc");
        assert_eq!(ask(json!({"pass": "jwt"})).await, "oidc");
    }

    #[tokio::test]
    async fn an_nkey_must_sign_the_nonce_of_this_connection() {
        let key = nkeys::KeyPair::new_user();
        let ids = users(&key.public_key());
        let sig = URL_SAFE_NO_PAD.encode(key.sign(b"nonce-1").unwrap());
        let with = |nkey: &str, sig: &str, nonce| request(json!({"nkey": nkey, "sig": sig}), nonce);
        let pk = key.public_key();
        let ids = &ids;
        let ask =
            |r: RequestBody| async move { code(ids.authenticate(&r, &Deadline::none()).await) };
        assert_eq!(ask(with(&pk, &sig, Some("nonce-1"))).await, "ok");
        let std_sig = STANDARD.encode(key.sign(b"nonce-1").unwrap());
        assert_eq!(ask(with(&pk, &std_sig, Some("nonce-1"))).await, "ok");
        assert_eq!(
            ask(with(&pk, &sig, Some("nonce-2"))).await,
            "identity_credentials",
            "a signature of another connection's nonce"
        );
        assert_eq!(ask(with(&pk, &sig, None)).await, "identity_credentials");
        assert_eq!(
            ask(with(&pk, "!!", Some("nonce-1"))).await,
            "identity_credentials"
        );
        let other = nkeys::KeyPair::new_user();
        let other_sig = URL_SAFE_NO_PAD.encode(other.sign(b"nonce-1").unwrap());
        assert_eq!(
            ask(with(&other.public_key(), &other_sig, Some("nonce-1"))).await,
            "unknown_nkey"
        );
        assert_eq!(
            ask(with(&pk, &other_sig, Some("nonce-1"))).await,
            "identity_credentials",
            "someone else's signature"
        );
        // Beside a user JWT (operator mode's sentinel, as nats.js sends it)
        // the nkey is the JWT's: the connect goes by name or token.
        let sentinel = |o: serde_json::Value| request(o, Some("nonce-1"));
        assert_eq!(
            ask(sentinel(json!({"jwt": "e30.e30.x", "nkey": other.public_key(), "sig": other_sig, "pass": "token"}))).await,
            "oidc"
        );
        assert_eq!(
            ask(sentinel(json!({"jwt": "e30.e30.x", "nkey": other.public_key(), "sig": other_sig, "user": "svc-billing", "pass": "s3cret"}))).await,
            "ok"
        );
    }

    #[test]
    fn bcrypt_hashes_are_recognised() {
        assert_eq!(bcrypt_cost(&bcrypt::hash("x", 4).unwrap()), Ok(4));
        assert_eq!(bcrypt_cost(&bcrypt::hash("x", 12).unwrap()), Ok(12));
        for bad in ["", "s3cret", "$2b$10$short", &"$1$".repeat(20)] {
            assert!(bcrypt_cost(bad).is_err(), "{bad}");
        }
    }
}
