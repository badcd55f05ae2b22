//! The trusted issuers, and which one judges a token.
//!
//! A token is routed by the `iss` it claims (read before anything is
//! verified) to exactly one configured issuer, whose keys, audience, claim
//! paths and role namespace then decide it. A token claiming an issuer that
//! is not configured is refused right there: no discovery, no JWKS fetch, no
//! key lookup happens on its behalf.

use std::sync::Arc;

use crate::config::OidcConfig;
use crate::key_manager::KeyManager;
use crate::token::{self, TokenError, TokenVerifier};

pub struct Issuer {
    pub oidc: Arc<OidcConfig>,
    pub keys: Arc<KeyManager>,
    pub verifier: TokenVerifier,
}

pub struct Issuers {
    list: Vec<Issuer>,
    max_token_bytes: usize,
}

impl Issuers {
    /// `keys[i]` holds the keys of `oidc[i]`.
    pub fn new(
        oidc: &[Arc<OidcConfig>],
        keys: Vec<Arc<KeyManager>>,
        max_token_bytes: usize,
    ) -> Issuers {
        assert_eq!(oidc.len(), keys.len(), "one key manager per issuer");
        let list = oidc
            .iter()
            .zip(keys)
            .map(|(oidc, keys)| Issuer {
                verifier: TokenVerifier::new(oidc.clone(), keys.clone(), max_token_bytes),
                oidc: oidc.clone(),
                keys,
            })
            .collect();
        Issuers {
            list,
            max_token_bytes,
        }
    }

    pub fn iter(&self) -> impl Iterator<Item = &Issuer> {
        self.list.iter()
    }

    /// The issuer that must verify `token`.
    pub fn route(&self, token: &str) -> Result<&Issuer, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge {
                len: token.len(),
                max: self.max_token_bytes,
            });
        }
        match token::claimed_issuer(token) {
            Ok(iss) => self
                .list
                .iter()
                .find(|i| i.oidc.issuer == iss)
                .ok_or_else(|| TokenError::UnknownIssuer {
                    found: token::clip(&iss),
                    known: self.list.iter().map(|i| i.oidc.issuer.clone()).collect(),
                }),
            // With one issuer there is no choice to make: its verifier gives
            // the precise reason this token is unusable.
            Err(_) if self.list.len() == 1 => Ok(&self.list[0]),
            // The shape checks explain a broken token better than the
            // failure to find its `iss` does.
            Err(e) => Err(token::check_shape(token).err().unwrap_or(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;
    use crate::metrics::Metrics;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;

    fn issuers(config_oidc: &str) -> Issuers {
        let text = format!(
            "[callout]\nissuer_seed = \"{}\"\naccount = \"APP\"\n{config_oidc}\n[roles.r]\npub.allow = [\"a\"]\n",
            String::from_utf8(nkeys::KeyPair::new_account().seed().unwrap().into_bytes()).unwrap()
        );
        let config = Config::parse(&text, std::path::Path::new("t.toml")).unwrap();
        let keys = config
            .oidc
            .iter()
            .map(|o| KeyManager::new(o.clone(), Arc::new(Metrics::new())).unwrap())
            .collect();
        Issuers::new(&config.oidc, keys, 4096)
    }

    const TWO: &str = r#"
[[oidc]]
name = "corp"
issuer = "https://corp.example"
audience = "nats"
roles_claim = "roles"

[[oidc]]
name = "partner"
issuer = "https://partner.example"
audience = "nats"
roles_claim = "groups"
"#;

    fn token(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn tokens_go_to_the_issuer_they_name_and_no_other() {
        let i = issuers(TWO);
        let to = |p: &str| i.route(&token(p)).map(|i| i.oidc.name.clone());
        assert_eq!(to(r#"{"iss":"https://corp.example"}"#).unwrap(), "corp");
        assert_eq!(
            to(r#"{"iss":"https://partner.example","x":1}"#).unwrap(),
            "partner"
        );
        for other in [
            r#"{"iss":"https://corp.example/"}"#,
            r#"{"iss":"https://CORP.example"}"#,
            r#"{"iss":"https://evil.example"}"#,
        ] {
            assert!(
                matches!(to(other), Err(TokenError::UnknownIssuer { .. })),
                "{other}"
            );
        }
        assert!(matches!(
            to(r#"{"iss":["https://corp.example"]}"#),
            Err(TokenError::ClaimType { claim: "iss", .. })
        ));
        assert!(matches!(
            to(r#"{"sub":"x"}"#),
            Err(TokenError::MissingClaim("iss"))
        ));
        assert!(matches!(i.route("a.b.c.d.e"), Err(TokenError::Encrypted)));
        assert!(matches!(
            i.route(&"a".repeat(5000)),
            Err(TokenError::TooLarge { .. })
        ));
    }

    #[test]
    fn with_one_issuer_an_unreadable_token_goes_to_it_for_the_precise_reason() {
        let i = issuers(
            "[oidc]\nissuer = \"https://corp.example\"\naudience = \"nats\"\nroles_claim = \"roles\"\n",
        );
        assert_eq!(i.route("hunter2").unwrap().oidc.name, "default");
        assert!(matches!(
            i.route(&token(r#"{"iss":"https://evil.example"}"#)),
            Err(TokenError::UnknownIssuer { .. })
        ));
    }
}
