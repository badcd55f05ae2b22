//! Every refusal of §2.6, and acceptance, against a development issuer's
//! keys installed as the service would hold them (no fetch).

use super::*;
use std::sync::Arc;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use crate::clock::unix_now;
use crate::dev::DevIssuer;
use crate::metrics::Metrics;
use crate::oidc::algorithms::DEFAULT_ALGORITHMS;
use crate::oidc::jwks::KeySet;

const AUD: &str = "nats";

fn settings(name: &str, issuer: &str, logout_audience: &[&str]) -> Arc<Settings> {
    Arc::new(Settings {
        name: name.into(),
        issuer: issuer.into(),
        discovery_url: format!("{issuer}/.well-known/openid-configuration"),
        jwks_url: None,
        ca_file: None,
        bearer_token_file: None,
        audience: vec![AUD.into()],
        logout_audience: logout_audience.iter().map(|a| a.to_string()).collect(),
        algorithms: DEFAULT_ALGORITHMS.to_vec(),
        leeway: Duration::from_secs(30),
        jwks_max_age: Duration::from_secs(900),
        jwks_refetch_cooldown: Duration::from_secs(10),
        http_timeout: Duration::from_secs(5),
        max_response_bytes: 1 << 20,
        token_cache_bytes: 0,
    })
}

/// Development issuers trusted as `[[oidc]]` blocks `dev0`, `dev1`...,
/// each block's key set installed from its issuer's published keys.
struct Setup {
    dev: Vec<DevIssuer>,
    issuers: Issuers<()>,
    verifier: LogoutVerifier,
}

impl Setup {
    async fn new(n: usize, logout_audience: &[&str]) -> Setup {
        let mut dev = Vec::new();
        for _ in 0..n {
            dev.push(DevIssuer::start(0).await.unwrap());
        }
        let entries = dev.iter().enumerate().map(|(i, d)| {
            (
                settings(&format!("dev{i}"), &d.issuer(), logout_audience),
                (),
            )
        });
        let metrics = Arc::new(Metrics::new());
        let issuers = Issuers::build(entries, 64 * 1024, None, &metrics).unwrap();
        for (issuer, d) in issuers.iter().zip(&dev) {
            let jwks = json!({ "keys": [
                d.public_jwk(&d.current_kid(Algorithm::RS256)),
                d.public_jwk(&d.current_kid(Algorithm::ES256)),
            ]});
            let set = KeySet::parse(jwks.to_string().as_bytes(), &issuer.settings).unwrap();
            issuer.keys.install(set);
        }
        Setup {
            dev,
            issuers,
            verifier: LogoutVerifier::new(),
        }
    }

    async fn one() -> Setup {
        Setup::new(1, &[AUD]).await
    }

    fn dev(&self) -> &DevIssuer {
        &self.dev[0]
    }

    /// What the endpoint does with a token: route, then verify.
    async fn check(&self, token: &str) -> Result<LogoutRequest, LogoutError> {
        let issuer = route_logout(&self.issuers, token)?;
        self.verifier
            .verify(issuer, token, unix_now(), &Deadline::none())
            .await
    }

    /// A logout token for `sub` with one change to its claims.
    fn token_with(&self, change: impl FnOnce(&mut Map<String, Value>)) -> String {
        let mut claims = self.dev().logout_claims(Some("user-ana"), None, AUD);
        change(claims.as_object_mut().unwrap());
        self.dev().sign_logout(&claims)
    }

    /// A logout token signed with `header` (its `kid` and `alg` set from
    /// the issuer's RS256 key).
    fn token_with_header(&self, change: impl FnOnce(&mut Header)) -> String {
        let claims = self.dev().logout_claims(Some("user-ana"), None, AUD);
        let kid = self.dev().current_kid(Algorithm::RS256);
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.clone());
        header.typ = Some("logout+jwt".into());
        change(&mut header);
        self.dev().sign_with_header(&kid, header, &claims)
    }

    async fn refused(&self, token: &str) -> LogoutError {
        match self.check(token).await {
            Ok(accepted) => panic!("accepted: {accepted:?}"),
            Err(e) => e,
        }
    }
}

fn unsigned(header: &Value, claims: &Value) -> String {
    let part = |v: &Value| URL_SAFE_NO_PAD.encode(v.to_string());
    format!("{}.{}.c2lnbmF0dXJl", part(header), part(claims))
}

#[tokio::test]
async fn a_logout_names_its_subject_its_session_or_both() {
    let s = Setup::one().await;
    for (sub, sid) in [
        (Some("user-ana"), None),
        (None, Some("session-1")),
        (Some("user-ana"), Some("session-2")),
    ] {
        let claims = s.dev().logout_claims(sub, sid, AUD);
        let got = s.check(&s.dev().sign_logout(&claims)).await.unwrap();
        assert_eq!(got.issuer, "dev0");
        assert_eq!(got.sub.as_deref(), sub);
        assert_eq!(got.sid.as_deref(), sid);
        assert_eq!(got.jti, claims["jti"].as_str().unwrap());
        assert_eq!(got.iat, claims["iat"].as_u64().unwrap());
        assert_eq!(got.exp, claims["exp"].as_u64().unwrap());
    }
}

#[tokio::test]
async fn typ_may_be_absent_or_logout_jwt_in_any_case_with_or_without_application() {
    let s = Setup::one().await;
    for typ in [
        None,
        Some("logout+jwt"),
        Some("Logout+JWT"),
        Some("application/logout+jwt"),
    ] {
        let token = s.token_with_header(|h| h.typ = typ.map(str::to_string));
        s.check(&token)
            .await
            .unwrap_or_else(|e| panic!("{typ:?}: {e}"));
    }
    // ES256 with the issuer's other key: any allowed algorithm will do.
    let kid = s.dev().current_kid(Algorithm::ES256);
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.clone());
    header.typ = Some("logout+jwt".into());
    let claims = s.dev().logout_claims(None, Some("s"), AUD);
    s.check(&s.dev().sign_with_header(&kid, header, &claims))
        .await
        .unwrap();
}

#[tokio::test]
async fn another_type_of_jwt_is_no_logout_and_a_logout_is_no_access_token() {
    let s = Setup::one().await;
    for typ in ["JWT", "at+jwt", "application/at+jwt", "secevent+jwt"] {
        let token = s.token_with_header(|h| h.typ = Some(typ.into()));
        let e = s.refused(&token).await;
        assert!(
            matches!(
                &e,
                LogoutError::Token(TokenError::Type {
                    expected: "logout+jwt",
                    ..
                })
            ),
            "{typ}: {e:?}"
        );
        assert!(e.to_string().contains("(logout+jwt)"), "{e}");
    }
    // The converse: the access token verifier refuses a logout token.
    let issuer = s.issuers.iter().next().unwrap();
    let logout = s.dev().logout_token(Some("user-ana"), None, AUD);
    let e = issuer
        .verifier
        .verify(&logout, unix_now(), &Deadline::none())
        .await
        .unwrap_err();
    assert!(matches!(e, TokenError::Type { .. }), "{e:?}");
    // And an access token (no events) is no logout even without typ.
    let access = s.dev().token("ana", AUD, &["admin"], 300);
    assert!(matches!(
        s.refused(&access).await,
        LogoutError::Token(TokenError::Type { .. })
    ));
}

#[tokio::test]
async fn the_issuer_must_be_a_configured_one_exactly() {
    let s = Setup::one().await;
    for iss in [
        "https://evil.example".to_string(),
        format!("{}/", s.dev().issuer()),
    ] {
        let token = s.token_with(|c| {
            c.insert("iss".into(), iss.clone().into());
        });
        assert!(
            matches!(
                s.refused(&token).await,
                LogoutError::Token(TokenError::UnknownIssuer { .. })
            ),
            "{iss}"
        );
    }
    let token = s.token_with(|c| {
        c.remove("iss");
    });
    assert!(matches!(
        s.refused(&token).await,
        LogoutError::Token(TokenError::MissingClaim("iss"))
    ));
}

#[tokio::test]
async fn a_token_signed_by_another_issuer_is_refused_for_its_signature() {
    let s = Setup::new(2, &[AUD]).await;
    // Issuer 1 signs a token that claims to be issuer 0's.
    let mut claims = s.dev[1].logout_claims(Some("user-ana"), None, AUD);
    claims["iss"] = s.dev[0].issuer().into();
    let token = s.dev[1].sign_logout(&claims);
    let e = s.refused(&token).await;
    assert!(
        matches!(
            e,
            LogoutError::Token(TokenError::UnknownKid(_) | TokenError::Signature)
        ),
        "{e:?}"
    );
}

#[tokio::test]
async fn a_changed_payload_or_an_unpublished_key_does_not_verify() {
    let s = Setup::one().await;
    let good = s.dev().logout_token(Some("user-ana"), None, AUD);
    let mut claims = s.dev().logout_claims(Some("user-bob"), None, AUD);
    claims["jti"] = "forged".into();
    let parts: Vec<&str> = good.split('.').collect();
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        URL_SAFE_NO_PAD.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(
        s.refused(&forged).await,
        LogoutError::Token(TokenError::Signature)
    );
    // A key the issuer never published, under its published key's kid.
    let secret_kid = s.dev().add_key(Algorithm::RS256, false);
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(s.dev().current_kid(Algorithm::RS256));
    header.typ = Some("logout+jwt".into());
    let claims = s.dev().logout_claims(Some("user-ana"), None, AUD);
    let token = s.dev().sign_with_header(&secret_kid, header, &claims);
    assert_eq!(
        s.refused(&token).await,
        LogoutError::Token(TokenError::Signature)
    );
}

#[tokio::test]
async fn alg_none_and_hmac_are_never_accepted() {
    let s = Setup::one().await;
    let claims = s.dev().logout_claims(Some("user-ana"), None, AUD);
    let none = unsigned(&json!({"alg": "none", "typ": "logout+jwt"}), &claims);
    let none = none.rsplit_once('.').unwrap().0.to_string() + ".";
    // "none" has an empty signature: refused as malformed before its alg.
    assert!(matches!(s.refused(&none).await, LogoutError::Token(_)));
    let none_signed = unsigned(&json!({"alg": "none", "typ": "logout+jwt"}), &claims);
    assert_eq!(
        s.refused(&none_signed).await,
        LogoutError::Token(TokenError::Algorithm("none".into()))
    );
    // HS256 keyed with the issuer's public key (the classic confusion).
    let jwk = s.dev().public_jwk(&s.dev().current_kid(Algorithm::RS256));
    let mut header = Header::new(Algorithm::HS256);
    header.typ = Some("logout+jwt".into());
    let hmac = jsonwebtoken::encode(
        &header,
        &claims,
        &EncodingKey::from_secret(jwk.to_string().as_bytes()),
    )
    .unwrap();
    assert_eq!(
        s.refused(&hmac).await,
        LogoutError::Token(TokenError::Algorithm("HS256".into()))
    );
}

#[tokio::test]
async fn crit_and_header_keys_are_refused() {
    let s = Setup::one().await;
    let claims = s.dev().logout_claims(Some("user-ana"), None, AUD);
    let crit = unsigned(
        &json!({"alg": "RS256", "typ": "logout+jwt", "crit": ["exp"], "exp": 1}),
        &claims,
    );
    assert!(matches!(
        s.refused(&crit).await,
        LogoutError::Token(TokenError::Critical(_))
    ));
    let jku = unsigned(
        &json!({"alg": "RS256", "jku": "https://evil.example/jwks"}),
        &claims,
    );
    assert_eq!(
        s.refused(&jku).await,
        LogoutError::Token(TokenError::HeaderKey("jku"))
    );
}

#[tokio::test]
async fn the_audience_is_a_logout_audience() {
    let s = Setup::one().await;
    let token = s.dev().logout_token(Some("user-ana"), None, "someone-else");
    let e = s.refused(&token).await;
    assert!(
        matches!(
            &e,
            LogoutError::Token(TokenError::Audience {
                key: "oidc.logout_audience",
                ..
            })
        ),
        "{e:?}"
    );
    let token = s.token_with(|c| {
        c.insert("aud".into(), json!(["someone-else", AUD]));
    });
    s.check(&token).await.unwrap();
    let token = s.token_with(|c| {
        c.remove("aud");
    });
    assert_eq!(
        s.refused(&token).await,
        LogoutError::Token(TokenError::MissingClaim("aud"))
    );
}

#[tokio::test]
async fn logout_audience_replaces_the_access_audience_for_logouts() {
    // `audience` is "nats" for access tokens; logouts go to the portal.
    let s = Setup::new(1, &["portal", "portal-2"]).await;
    s.check(&s.dev().logout_token(None, Some("s1"), "portal-2"))
        .await
        .unwrap();
    assert!(matches!(
        s.refused(&s.dev().logout_token(None, Some("s1"), AUD))
            .await,
        LogoutError::Token(TokenError::Audience { .. })
    ));
}

#[tokio::test]
async fn iat_and_exp_are_required_and_checked() {
    let s = Setup::one().await;
    let now = unix_now();
    let cases = [
        ("exp", json!(now - 1), "expired"),
        ("exp", Value::Null, "exp missing"),
        ("iat", json!(now + 3600), "iat in the future"),
        ("iat", Value::Null, "iat missing"),
    ];
    for (claim, value, expected) in cases {
        let token = s.token_with(|c| match value.clone() {
            Value::Null => {
                c.remove(claim);
            }
            v => {
                c.insert(claim.into(), v);
            }
        });
        let e = s.refused(&token).await;
        let as_expected = match expected {
            "expired" => matches!(e, LogoutError::Token(TokenError::Expired { .. })),
            "iat in the future" => {
                matches!(e, LogoutError::Token(TokenError::IssuedInFuture { .. }))
            }
            _ => e == LogoutError::Token(TokenError::MissingClaim(claim)),
        };
        assert!(as_expected, "{claim} = {value}: {e:?}");
    }
    // Within the leeway, a clock a little ahead is accepted.
    let token = s.token_with(|c| {
        c.insert("iat".into(), json!(now + 10));
    });
    s.check(&token).await.unwrap();
}

#[tokio::test]
async fn the_logout_event_must_be_there_as_an_object() {
    let s = Setup::one().await;
    let cases = [
        (None, LogoutError::NoEvents),
        (Some(json!("logout")), LogoutError::EventsNotObject),
        (
            Some(json!([BACKCHANNEL_LOGOUT_EVENT])),
            LogoutError::EventsNotObject,
        ),
        (
            Some(json!({"http://schemas.openid.net/event/other": {}})),
            LogoutError::NotLogoutEvent,
        ),
        (
            Some(json!({ BACKCHANNEL_LOGOUT_EVENT: true })),
            LogoutError::LogoutEventNotObject,
        ),
        (
            Some(json!({ BACKCHANNEL_LOGOUT_EVENT: "{}" })),
            LogoutError::LogoutEventNotObject,
        ),
    ];
    for (events, expected) in cases {
        let token = s.token_with(|c| match events.clone() {
            None => {
                c.remove("events");
            }
            Some(v) => {
                c.insert("events".into(), v);
            }
        });
        assert_eq!(s.refused(&token).await, expected, "{events:?}");
    }
    // Other members beside it, and members inside it, do not matter.
    let token = s.token_with(|c| {
        c.insert(
            "events".into(),
            json!({ BACKCHANNEL_LOGOUT_EVENT: {"x": 1}, "urn:other": {} }),
        );
    });
    s.check(&token).await.unwrap();
}

#[tokio::test]
async fn a_nonce_makes_it_an_id_token_not_a_logout() {
    let s = Setup::one().await;
    let token = s.token_with(|c| {
        c.insert("nonce".into(), "n-0S6_WzA2Mj".into());
    });
    assert_eq!(s.refused(&token).await, LogoutError::Nonce);
}

#[tokio::test]
async fn it_must_name_someone_and_carry_a_jti() {
    let s = Setup::one().await;
    let token = s.dev().sign_logout(&s.dev().logout_claims(None, None, AUD));
    assert_eq!(s.refused(&token).await, LogoutError::NoSubject);
    let token = s.token_with(|c| {
        c.remove("jti");
    });
    assert_eq!(s.refused(&token).await, LogoutError::NoJti);
    for (claim, value) in [
        ("jti", json!(7)),
        ("jti", json!("")),
        ("sid", json!(["a"])),
        ("sid", json!("")),
        ("sub", json!("")),
    ] {
        let token = s.token_with(|c| {
            c.insert(claim.into(), value.clone());
        });
        assert_eq!(
            s.refused(&token).await,
            LogoutError::NotAString(claim),
            "{claim} = {value}"
        );
    }
    // A sub that is no string is refused by the rules every token gets.
    let token = s.token_with(|c| {
        c.insert("sub".into(), json!(42));
    });
    assert!(matches!(
        s.refused(&token).await,
        LogoutError::Token(TokenError::ClaimType { claim: "sub", .. })
    ));
}

#[tokio::test]
async fn a_jti_is_acted_on_once_per_issuer_until_forgotten() {
    let s = Setup::new(2, &[AUD]).await;
    let claims = s.dev[0].logout_claims(Some("user-ana"), None, AUD);
    let token = s.dev[0].sign_logout(&claims);
    let first = s.check(&token).await.unwrap();
    let again = s.refused(&token).await;
    assert!(again.is_replay(), "{again:?}");
    // Another token with the same jti is the same logout again.
    let mut other = claims.clone();
    other["sub"] = "user-bob".into();
    assert!(s.refused(&s.dev[0].sign_logout(&other)).await.is_replay());
    // The same jti from another issuer is that issuer's own.
    let mut theirs = s.dev[1].logout_claims(Some("user-ana"), None, AUD);
    theirs["jti"] = claims["jti"].clone();
    s.check(&s.dev[1].sign_logout(&theirs)).await.unwrap();
    // A logout that could not be carried out can be retried.
    s.verifier.forget(&first);
    assert_eq!(s.check(&token).await.unwrap(), first);
    assert!(s.refused(&token).await.is_replay());
}

#[tokio::test]
async fn a_refused_token_does_not_use_up_its_jti() {
    let s = Setup::one().await;
    let claims = s.dev().logout_claims(Some("user-ana"), None, AUD);
    let mut with_nonce = claims.clone();
    with_nonce["nonce"] = "x".into();
    assert_eq!(
        s.refused(&s.dev().sign_logout(&with_nonce)).await,
        LogoutError::Nonce
    );
    s.check(&s.dev().sign_logout(&claims)).await.unwrap();
}

#[tokio::test]
async fn oversized_tokens_are_refused_before_parsing() {
    let s = Setup::one().await;
    let huge = "a".repeat(MAX_LOGOUT_TOKEN_BYTES + 1);
    assert!(matches!(
        s.refused(&huge).await,
        LogoutError::TooLarge { .. }
    ));
    let issuer = s.issuers.iter().next().unwrap();
    assert!(matches!(
        s.verifier
            .verify(issuer, &huge, unix_now(), &Deadline::none())
            .await,
        Err(LogoutError::TooLarge { .. })
    ));
}

#[tokio::test]
async fn messages_escape_and_clip_what_the_token_says() {
    let s = Setup::one().await;
    let hostile = format!("a\nresult=accepted \u{1b}[2K{}", "x".repeat(500));
    let token = s.token_with(|c| {
        c.insert("jti".into(), hostile.clone().into());
    });
    s.check(&token).await.unwrap();
    let message = s.refused(&token).await.to_string();
    assert!(
        !message.contains('\n') && !message.contains('\u{1b}'),
        "{message}"
    );
    assert!(message.len() < 250, "{message}");
    let token = s.token_with(|c| {
        c.insert("aud".into(), json!(["x\n".repeat(1000)]));
    });
    let message = s.refused(&token).await.to_string();
    assert!(message.len() < 250, "{message}");
    assert!(message.contains("oidc.logout_audience"), "{message}");
}

#[test]
fn every_reason_reads_differently() {
    let all = [
        LogoutError::TooLarge { len: 2, max: 1 },
        LogoutError::Token(TokenError::Signature),
        LogoutError::NoEvents,
        LogoutError::EventsNotObject,
        LogoutError::NotLogoutEvent,
        LogoutError::LogoutEventNotObject,
        LogoutError::Nonce,
        LogoutError::NoSubject,
        LogoutError::NoJti,
        LogoutError::NotAString("sid"),
        LogoutError::Replayed {
            issuer: "dev".into(),
            jti: "j".into(),
        },
    ];
    let messages: std::collections::BTreeSet<String> =
        all.iter().map(ToString::to_string).collect();
    assert_eq!(messages.len(), all.len(), "{messages:#?}");
}

#[test]
fn a_jti_is_kept_until_its_token_expires_and_the_leeway_after() {
    let leeway = Duration::from_secs(30);
    assert_eq!(keep_for(1120, 1000, leeway), Duration::from_secs(150));
    assert_eq!(keep_for(1000, 1000, leeway), leeway);
    assert_ne!(seen_key("a", "b\0c"), seen_key("a\0b", "c"));
}

#[test]
fn when_full_the_oldest_jti_goes_and_a_new_one_is_always_kept() {
    let verifier = LogoutVerifier::with_capacity(2);
    let request = |jti: &str| LogoutRequest {
        issuer: "dev".into(),
        sub: Some("s".into()),
        sid: None,
        jti: jti.into(),
        iat: 1000,
        exp: 1100,
    };
    let leeway = Duration::from_secs(30);
    for jti in ["a", "b", "c"] {
        verifier.first_time(&request(jti), 1000, leeway).unwrap();
        verifier.seen.run_pending_tasks();
    }
    // However often the old ones were seen, the newest is remembered.
    assert!(verifier.first_time(&request("c"), 1000, leeway).is_err());
}

#[tokio::test]
async fn the_dev_issuer_mints_access_tokens_of_a_session() {
    let s = Setup::one().await;
    let issuer = s.issuers.iter().next().unwrap();
    let token = s
        .dev()
        .token_with_sid("ana", AUD, &["admin"], 300, "session-1");
    let verified = issuer
        .verifier
        .verify(&token, unix_now(), &Deadline::none())
        .await
        .unwrap();
    assert_eq!(verified.claims["sid"], "session-1");
    assert_eq!(verified.claims["sub"], "user-ana");
}
