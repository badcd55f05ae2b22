//! Bearer token → verified claims, for each trusted issuer.
//!
//! A token is routed by the `iss` it claims (read before anything is
//! verified) to exactly one configured issuer, whose keys, audience and
//! rules then decide it. A token claiming an issuer that is not configured
//! is refused right there: no discovery, no JWKS fetch, no key lookup
//! happens on its behalf.
//!
//! The same issuers, keys and rules verify the back-channel logout tokens
//! they send (`logout`).

pub(crate) mod algorithms;
mod bearer;
pub(crate) mod cache;
pub(crate) mod discovery;
pub(crate) mod error;
pub(crate) mod jwks;
pub(crate) mod key_manager;
pub(crate) mod logout;
mod registered;
pub(crate) mod settings;
pub(crate) mod token;

// What the fuzzers and the tests use of token verification.
pub use algorithms::{parse_algorithm, DEFAULT_ALGORITHMS};
pub(crate) use bearer::bearer_token;
pub use discovery::check_http_url;
pub use jwks::KeySet;
// Back-channel logout tokens (what the service's endpoint receives).
pub use logout::{
    route_logout, LogoutError, LogoutRequest, LogoutVerifier, BACKCHANNEL_LOGOUT_EVENT,
    MAX_LOGOUT_TOKEN_BYTES,
};
pub use token::TokenVerifier;

use std::sync::Arc;

use crate::metrics::Metrics;
use crate::text::clip;
use discovery::FetchError;
use error::TokenError;
use key_manager::KeyManager;
use settings::Settings;
use token::Kind;

/// How many verifications, for all issuers together, may wait for a key
/// set refetch; the rest are refused at once (a documented bound).
pub use key_manager::MAX_REFETCH_WAITERS;

/// One trusted issuer: its settings, keys and verifier, and what the layer
/// above attaches to it (`T`: how its claims are read).
pub struct Issuer<T> {
    pub settings: Arc<Settings>,
    pub keys: Arc<KeyManager>,
    pub verifier: TokenVerifier,
    pub extra: T,
}

pub struct Issuers<T> {
    list: Vec<Issuer<T>>,
    max_token_bytes: usize,
}

impl<T> Issuers<T> {
    /// The issuers for `entries`. An issuer whose settings equal one in
    /// `previous` keeps its keys (no fetch, no gap), and only then.
    pub fn build(
        entries: impl IntoIterator<Item = (Arc<Settings>, T)>,
        max_token_bytes: usize,
        previous: Option<&Issuers<T>>,
        metrics: &Arc<Metrics>,
    ) -> Result<Issuers<T>, FetchError> {
        let mut list = Vec::new();
        for (settings, extra) in entries {
            let same = previous
                .into_iter()
                .flat_map(|p| p.iter())
                .find(|i| *i.settings == *settings);
            let keys = match same {
                Some(same) => same.keys.clone(),
                None => KeyManager::new(settings.clone(), metrics.clone())?,
            };
            list.push(Issuer {
                verifier: TokenVerifier::new(
                    settings.clone(),
                    keys.clone(),
                    max_token_bytes,
                    metrics.clone(),
                ),
                settings,
                keys,
                extra,
            });
        }
        Ok(Issuers {
            list,
            max_token_bytes,
        })
    }

    pub fn iter(&self) -> impl Iterator<Item = &Issuer<T>> {
        self.list.iter()
    }

    /// The issuer that must verify `token`, a bearer access token.
    pub fn route(&self, token: &str) -> Result<&Issuer<T>, TokenError> {
        self.route_as(token, Kind::Access)
    }

    /// The issuer that must verify `token`, a JWT of `kind`.
    pub(crate) fn route_as(&self, token: &str, kind: Kind) -> Result<&Issuer<T>, TokenError> {
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
                .find(|i| i.settings.issuer == iss)
                .ok_or_else(|| TokenError::UnknownIssuer {
                    found: clip(&iss),
                    known: self
                        .list
                        .iter()
                        .map(|i| i.settings.issuer.clone())
                        .collect(),
                }),
            // With one issuer there is no choice to make: its verifier gives
            // the precise reason this token is unusable.
            Err(_) if self.list.len() == 1 => Ok(&self.list[0]),
            // The shape checks explain a broken token better than the
            // failure to find its `iss` does.
            Err(e) => Err(token::check_shape(token, kind).err().unwrap_or(e)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use std::time::Duration;

    fn settings(name: &str, issuer: &str) -> Arc<Settings> {
        Arc::new(Settings {
            name: name.into(),
            issuer: issuer.into(),
            discovery_url: format!("{issuer}/.well-known/openid-configuration"),
            jwks_url: None,
            ca_file: None,
            bearer_token_file: None,
            audience: vec!["nats".into()],
            logout_audience: vec!["nats".into()],
            algorithms: algorithms::DEFAULT_ALGORITHMS.to_vec(),
            leeway: Duration::from_secs(30),
            jwks_max_age: Duration::from_secs(900),
            jwks_refetch_cooldown: Duration::from_secs(10),
            http_timeout: Duration::from_secs(5),
            max_response_bytes: 1 << 20,
            token_cache_bytes: 0,
        })
    }

    fn issuers(list: &[(&str, &str)]) -> Issuers<()> {
        let metrics = Arc::new(Metrics::new());
        let entries = list.iter().map(|(n, i)| (settings(n, i), ()));
        Issuers::build(entries, 4096, None, &metrics).unwrap()
    }

    const TWO: &[(&str, &str)] = &[
        ("corp", "https://corp.example"),
        ("partner", "https://partner.example"),
    ];

    #[test]
    fn a_rebuild_keeps_the_keys_of_unchanged_issuers_only() {
        let metrics = Arc::new(Metrics::new());
        let first = issuers(TWO);
        let changed = settings("partner", "https://partner.example/v2");
        let second = Issuers::build(
            [
                (settings("corp", "https://corp.example"), ()),
                (changed, ()),
            ],
            4096,
            Some(&first),
            &metrics,
        )
        .unwrap();
        let keys = |i: &Issuers<()>| i.iter().map(|i| i.keys.clone()).collect::<Vec<_>>();
        assert!(Arc::ptr_eq(&keys(&first)[0], &keys(&second)[0]));
        assert!(!Arc::ptr_eq(&keys(&first)[1], &keys(&second)[1]));
    }

    fn token(payload: &str) -> String {
        format!(
            "eyJhbGciOiJSUzI1NiJ9.{}.c2ln",
            URL_SAFE_NO_PAD.encode(payload)
        )
    }

    #[test]
    fn tokens_go_to_the_issuer_they_name_and_no_other() {
        let i = issuers(TWO);
        let to = |p: &str| i.route(&token(p)).map(|i| i.settings.name.clone());
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
        let i = issuers(&[("default", "https://corp.example")]);
        assert_eq!(i.route("hunter2").unwrap().settings.name, "default");
        assert!(matches!(
            i.route(&token(r#"{"iss":"https://evil.example"}"#)),
            Err(TokenError::UnknownIssuer { .. })
        ));
    }
}
