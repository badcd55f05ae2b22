//! The decision in-process: tokens, identities and request shapes refused
//! or admitted with given permissions, through `Callout::decide` as
//! nats-server asks it (a simulated server signs, and with xkey seals, each
//! request) and with the development issuers serving their keys on
//! loopback. No nats-server, no service process: milliseconds a test.
//!
//! What nats-server must enforce (deliveries, replies, expiry, JetStream,
//! the service's own log and metrics) is tested end to end in the other
//! suites, each refusal family there with one representative.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use nats_oidc_callout::dev::DevIssuer;
use nats_oidc_callout_test_support::config::{default_roles, quote, AUDIENCE};
use nats_oidc_callout_test_support::server_sim::sign_request;
use nats_oidc_callout_test_support::{ConfigToml, Fixture, Oidc, Outcome};
use serde_json::{json, Map, Value};

#[allow(dead_code)]
#[path = "common/fixtures.rs"]
mod fixtures;

/// The fixture of the tests that change nothing in it: the development
/// issuer and the config a test service gets by default. Built once per
/// process (each issuer makes an RSA key, the slowest step here); tests
/// share it as clients share a service.
fn dev() -> &'static Fixture {
    static DEV: std::sync::OnceLock<Fixture> = std::sync::OnceLock::new();
    DEV.get_or_init(Fixture::dev)
}

fn now() -> u64 {
    nats_oidc_callout::unix_now()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

/// Signs `claims` with the issuer's current RS256 key as an access token.
fn signed(i: &DevIssuer, claims: &Value) -> String {
    i.sign(&i.current_kid(Algorithm::RS256), claims)
}

/// Good claims (`mallory`, admin) with one change applied.
fn claims_with(i: &DevIssuer, change: impl FnOnce(&mut Map<String, Value>)) -> Value {
    let mut c = i.claims("mallory", AUDIENCE, &["admin"], 300);
    change(c.as_object_mut().unwrap());
    c
}

/// Good claims signed under an `at+jwt` header with one change applied.
fn with_header(i: &DevIssuer, change: impl FnOnce(&mut Header)) -> String {
    let kid = i.current_kid(Algorithm::RS256);
    let mut h = Header::new(Algorithm::RS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.clone());
    change(&mut h);
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
}

/// The token is refused with `code`, a good token is admitted right after,
/// and neither token reaches the log.
fn assert_refused_with(f: &Fixture, token: &str, code: &str) {
    let refused = f.connect(token);
    refused.refused(code);
    let good = f.token("ana", &["admin"]);
    let admitted = f.connect(&good);
    admitted.user();
    let log = format!("{}{}", refused.log, admitted.log);
    assert!(log.contains(&format!("code=\"{code}\"")), "{log}");
    assert!(
        !log.contains(token),
        "the refused token must never be logged"
    );
    assert!(
        !log.contains(&good),
        "the accepted token must never be logged"
    );
}

/// One test a bad token: `$make` makes it with the fixture's issuer.
macro_rules! refused {
    ($name:ident, $code:literal, $make:expr) => {
        #[test]
        fn $name() {
            let f = dev();
            let make: fn(&DevIssuer) -> String = $make;
            assert_refused_with(&f, &make(f.issuer()), $code);
        }
    };
}

// Bearer tokens: shapes, headers, keys.

refused!(
    alg_none_without_signature,
    "token_malformed",
    |i: &DevIssuer| {
        let c = i.claims("mallory", AUDIENCE, &["admin"], 300);
        format!("{}.{}.", b64(&json!({"alg": "none"})), b64(&c))
    }
);

refused!(
    hmac_signed_with_the_public_key,
    "token_alg",
    |i: &DevIssuer| {
        let kid = i.current_kid(Algorithm::RS256);
        let public = serde_json::to_vec(&i.public_jwk(&kid)).unwrap();
        let mut h = Header::new(Algorithm::HS256);
        h.kid = Some(kid);
        let c = i.claims("mallory", AUDIENCE, &["admin"], 300);
        jsonwebtoken::encode(&h, &c, &EncodingKey::from_secret(&public)).unwrap()
    }
);

refused!(
    ec_token_naming_an_rsa_key,
    "token_key_alg",
    |i: &DevIssuer| {
        let ec = i.current_kid(Algorithm::ES256);
        let mut h = Header::new(Algorithm::ES256);
        h.kid = Some(i.current_kid(Algorithm::RS256));
        i.sign_with_header(&ec, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
    }
);

refused!(header_jku, "token_header_key", |i: &DevIssuer| with_header(
    i,
    |h| h.jku = Some("https://attacker.example/jwks".into())
));

refused!(header_x5u, "token_header_key", |i: &DevIssuer| with_header(
    i,
    |h| h.x5u = Some("https://attacker.example/cert.pem".into())
));

refused!(header_embedded_jwk, "token_header_key", |i: &DevIssuer| {
    let jwk = i.public_jwk(&i.current_kid(Algorithm::RS256));
    with_header(i, |h| h.jwk = Some(serde_json::from_value(jwk).unwrap()))
});

refused!(header_x5c, "token_header_key", |i: &DevIssuer| with_header(
    i,
    |h| h.x5c = Some(vec!["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".into()])
));

refused!(unsupported_crit, "token_crit", |i: &DevIssuer| with_header(
    i,
    |h| h.crit = Some(vec!["exp".into()])
));

refused!(nested_jwt, "token_nested", |i: &DevIssuer| with_header(
    i,
    |h| h.cty = Some("JWT".into())
));

refused!(unexpected_typ, "token_typ", |i: &DevIssuer| with_header(
    i,
    |h| h.typ = Some("secevent+jwt".into())
));

refused!(jwe_compact, "token_malformed", |_i: &DevIssuer| {
    format!(
        "{}.AAAA.AAAA.AAAA.AAAA",
        b64(&json!({"alg": "RSA-OAEP", "enc": "A256GCM"}))
    )
});

refused!(json_serialization, "token_malformed", |i: &DevIssuer| {
    let token = i.token("mallory", AUDIENCE, &["admin"], 300);
    let p: Vec<&str> = token.split('.').collect();
    json!({"payload": p[1], "protected": p[0], "signature": p[2]}).to_string()
});

refused!(not_a_jwt_at_all, "token_malformed", |_i: &DevIssuer| {
    "hunter2".to_string()
});

refused!(unknown_kid, "token_unknown_kid", |i: &DevIssuer| {
    let rogue = i.add_key(Algorithm::RS256, false);
    i.sign(&rogue, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(
    known_kid_signed_by_a_foreign_key,
    "token_signature",
    |i: &DevIssuer| {
        let rogue = i.add_key(Algorithm::RS256, false);
        let kid = i.current_kid(Algorithm::RS256);
        let mut h = Header::new(Algorithm::RS256);
        h.typ = Some("at+jwt".into());
        h.kid = Some(kid);
        i.sign_with_header(&rogue, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
    }
);

// Registered claims.

refused!(wrong_issuer, "token_issuer", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.insert("iss".into(), json!("https://evil.example"));
    })
));

refused!(issuer_as_array, "token_claims", |i: &DevIssuer| {
    let iss = i.issuer();
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("iss".into(), json!([iss, "https://evil.example"]));
        }),
    )
});

refused!(missing_issuer, "token_claims", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.remove("iss");
    })
));

refused!(missing_audience, "token_claims", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.remove("aud");
    })
));

refused!(expired, "token_expired", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.insert("exp".into(), json!(now() - 10));
        c.insert("iat".into(), json!(now() - 600));
        c.insert("nbf".into(), json!(now() - 600));
    })
));

refused!(missing_expiry, "token_claims", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.remove("exp");
    })
));

refused!(expiry_as_string, "token_claims", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.insert("exp".into(), json!((now() + 300).to_string()));
    })
));

refused!(
    not_before_in_the_future,
    "token_not_yet_valid",
    |i: &DevIssuer| signed(
        i,
        &claims_with(i, |c| {
            c.insert("nbf".into(), json!(now() + 3600));
        })
    )
);

refused!(
    issued_in_the_future,
    "token_not_yet_valid",
    |i: &DevIssuer| signed(
        i,
        &claims_with(i, |c| {
            c.insert("iat".into(), json!(now() + 3600));
        })
    )
);

// Claims → identity and roles.

refused!(
    roles_claim_of_the_wrong_type,
    "roles_claim",
    |i: &DevIssuer| signed(
        i,
        &claims_with(i, |c| {
            c.insert("realm_access".into(), json!({"roles": {"admin": true}}));
        })
    )
);

refused!(no_roles_at_all, "no_mapped_role", |i: &DevIssuer| signed(
    i,
    &claims_with(i, |c| {
        c.remove("realm_access");
    })
));

refused!(identity_claim_missing, "identity_claim", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.remove("preferred_username");
        }),
    )
});

#[test]
fn oversized_token_is_refused_by_the_configured_cap() {
    let f = Fixture::new(|iss| ConfigToml::dev(iss).callout("max_token_bytes", "8192"));
    let i = f.issuer();
    let padding = "x".repeat(12_000);
    let token = signed(
        i,
        &claims_with(i, |c| {
            c.insert("padding".into(), json!(padding));
        }),
    );
    assert_refused_with(&f, &token, "token_too_large");
}

#[test]
fn es256_tokens_are_accepted() {
    let f = dev();
    let i = f.issuer();
    let kid = i.current_kid(Algorithm::ES256);
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("JWT".into());
    h.kid = Some(kid.clone());
    let token = i.sign_with_header(&kid, h, &i.claims("eve", AUDIENCE, &["reader"], 300));
    assert_eq!(f.connect(&token).user()["name"], "eve");
}

#[test]
fn no_token_is_refused() {
    let f = dev();
    f.connect_opts(json!({"protocol": 1})).refused("no_token");
}

#[test]
fn keys_published_without_kid_still_verify() {
    let f = Fixture::with_issuers(1, |issuers| {
        issuers[0].set_serve_kids(false);
        ConfigToml::dev(&issuers[0].issuer())
    });
    let i = f.issuer();
    // A token naming a kid the JWKS does not name falls back to its
    // kid-less keys...
    f.connect(&f.token("ana", &["admin"])).user();
    // ...a token without kid is tried against the keys of its algorithm...
    let kid = i.current_kid(Algorithm::RS256);
    let mut h = Header::new(Algorithm::RS256);
    h.typ = Some("JWT".into());
    let no_kid = i.sign_with_header(&kid, h, &i.claims("ana", AUDIENCE, &["admin"], 300));
    f.connect(&no_kid).user();
    // ...and a foreign key is still refused.
    let rogue = i.add_key(Algorithm::RS256, false);
    let forged = i.sign(&rogue, &i.claims("ana", AUDIENCE, &["admin"], 300));
    // Foreign key, kid-less JWKS.
    f.connect(&forged).refused("token_signature");
}

// Hostile authorization requests, decided by `Callout::decide`.

/// A well-formed request from `server` carrying `token`, addressed to the
/// fixture's callout account.
fn request_claims(f: &Fixture, server: &nkeys::KeyPair, token: &str) -> Value {
    let mut claims = f
        .server
        .claims(json!({"user": "x", "pass": token, "protocol": 1}), now());
    claims["iss"] = json!(server.public_key());
    claims["nats"]["server_id"]["id"] = json!(server.public_key());
    claims
}

/// The control for the forged cases below: a well-formed request is
/// answered with a user JWT carrying exactly the token's grants.
#[test]
fn a_well_formed_request_is_answered_with_the_tokens_grants_only() {
    let f = dev();
    let server = nkeys::KeyPair::new_server();
    let token = f.token("rita", &["reader"]);
    let answer = f.answer(
        sign_request(&server, &request_claims(f, &server, &token)).as_bytes(),
        None,
    );
    assert_eq!(
        answer.response.as_ref().unwrap().as_ref().unwrap()["aud"],
        json!(server.public_key())
    );
    let user = answer.user();
    assert_eq!(user["name"], json!("rita"));
    let inbox = nats_oidc_client::inbox::of_token(&token).unwrap();
    assert_eq!(user["nats"]["pub"]["allow"], json!(null));
    assert_eq!(user["nats"]["pub"]["deny"], json!([">"]));
    assert_eq!(
        user["nats"]["sub"]["allow"],
        json!([format!("{inbox}.>"), "orders.>"])
    );
    assert_eq!(
        user["nats"]["sub"]["deny"],
        json!(["$SYS.>", "orders.secret.>"])
    );
}

/// A forged request: refused as `bad_request` with `$reason`, answered
/// (if at all) with that reason and no user JWT, the token never logged,
/// and a genuine request still answered right after.
macro_rules! forged {
    ($name:ident, $reason:literal, $make:expr) => {
        #[test]
        fn $name() {
            let f = dev();
            let token = f.token("mallory", &["admin"]);
            let make: fn(&Fixture, &str) -> String = $make;
            let answer = f.answer(make(&f, &token).as_bytes(), None);
            let reason = answer.refused("bad_request");
            assert!(reason.contains($reason), "{reason}");
            assert!(answer.user_jwt.is_null());
            assert!(answer.log.contains($reason), "{}", answer.log);
            assert!(!answer.log.contains(&token), "the token is never logged");
            f.connect(&f.token("ana", &["admin"])).user();
        }
    };
}

forged!(
    request_signed_by_a_user_key_is_refused,
    "not a valid public nkey of the expected kind",
    |f, token| {
        let user = nkeys::KeyPair::new_user();
        sign_request(&user, &request_claims(f, &user, token))
    }
);

forged!(
    request_claiming_a_server_whose_key_did_not_sign_it_is_refused,
    "signature does not verify",
    |f, token| {
        let real = nkeys::KeyPair::new_server();
        let forger = nkeys::KeyPair::new_server();
        sign_request(&forger, &request_claims(f, &real, token))
    }
);

forged!(
    request_with_a_tampered_payload_is_refused,
    "signature does not verify",
    |f, token| {
        let server = nkeys::KeyPair::new_server();
        let honest = sign_request(&server, &request_claims(f, &server, "not-a-token"));
        let mut claims = request_claims(f, &server, token);
        claims["nats"]["user_nkey"] = json!(nkeys::KeyPair::new_user().public_key());
        let parts: Vec<&str> = honest.split('.').collect();
        format!("{}.{}.{}", parts[0], b64(&claims), parts[2])
    }
);

forged!(
    request_with_a_mismatched_audience_is_refused,
    "request audience",
    |f, token| {
        let server = nkeys::KeyPair::new_server();
        let mut claims = request_claims(f, &server, token);
        claims["aud"] = json!("nats-authorization-response");
        sign_request(&server, &claims)
    }
);

forged!(
    request_of_another_type_is_refused,
    "request type",
    |f, token| {
        let server = nkeys::KeyPair::new_server();
        let mut claims = request_claims(f, &server, token);
        claims["nats"]["type"] = json!("user");
        sign_request(&server, &claims)
    }
);

forged!(
    request_addressed_to_another_callout_issuer_is_refused,
    "addressed to callout issuer",
    |f, token| {
        let server = nkeys::KeyPair::new_server();
        let mut claims = request_claims(f, &server, token);
        claims["sub"] = json!(nkeys::KeyPair::new_account().public_key());
        sign_request(&server, &claims)
    }
);

forged!(
    request_naming_a_non_user_nkey_is_refused,
    "not a user public key",
    |f, token| {
        let server = nkeys::KeyPair::new_server();
        let mut claims = request_claims(f, &server, token);
        claims["nats"]["user_nkey"] = json!(nkeys::KeyPair::new_account().public_key());
        sign_request(&server, &claims)
    }
);

forged!(
    request_that_is_not_a_jwt_is_refused,
    "not a compact JWT",
    |_f, _token| "{\"nats\":{\"connect_opts\":{\"pass\":\"x\"}}}".to_string()
);

/// A sealed request (it carries the `Nats-Server-Xkey` header) reaching a
/// service with no xkey configured cannot be opened.
#[test]
fn request_with_an_xkey_header_but_no_xkey_configured_gets_no_user_jwt() {
    let f = dev();
    let server = nkeys::KeyPair::new_server();
    let token = f.token("mallory", &["admin"]);
    let request = sign_request(&server, &request_claims(f, &server, &token));
    let header = nkeys::XKey::new().public_key();
    let answer = f.answer(request.as_bytes(), Some(&header));
    assert!(answer.user_jwt.is_null(), "no user JWT");
    assert!(!answer.is_allowed());
    assert!(
        answer.log.contains("no callout.xkey_seed is configured"),
        "{}",
        answer.log
    );
    f.connect(&f.token("ana", &["admin"])).user();
}

/// A sealed request is answered, sealed back, with the user JWT.
#[test]
fn a_sealed_request_is_answered_sealed() {
    let xkey = nkeys::XKey::new();
    let f = Fixture::new(|iss| ConfigToml::dev(iss).xkey_seed(&xkey.seed().unwrap()));
    let answer = f.connect(&f.token("rita", &["reader"]));
    assert!(answer.decision.body.starts_with(b"xkv1"), "sealed back");
    assert_eq!(answer.user()["name"], "rita");
}

// Identities from email addresses.

fn email_token(f: &Fixture, verified: Option<Value>) -> String {
    let i = f.issuer();
    let mut claims = i.claims("ana", AUDIENCE, &["admin"], 300);
    claims["email"] = json!("ana@example.com");
    match verified {
        Some(v) => claims["email_verified"] = v,
        None => {
            claims.as_object_mut().unwrap().remove("email_verified");
        }
    }
    signed(i, &claims)
}

/// As the Kubernetes OIDC authenticator: when the identity is the email
/// address, the provider must have verified it, or anyone who signs up with
/// someone else's address becomes them.
#[test]
fn email_identity_requires_email_verified_by_default() {
    let f = Fixture::new(|iss| {
        ConfigToml::new()
            .oidc(Oidc::dev(iss).user_claim("email"))
            .roles(&default_roles())
    });
    for (state, verified) in [
        ("email_verified is false", Some(json!(false))),
        ("email_verified is missing", None),
        ("email_verified is a string", Some(json!("true"))),
    ] {
        let reason = f
            .connect(&email_token(&f, verified))
            .refused("email_not_verified")
            .to_string();
        assert!(reason.contains(state), "{state}: {reason}");
    }
    let verified = f.connect(&email_token(&f, Some(json!(true))));
    assert_eq!(verified.user()["name"], "ana@example.com");
}

// Role mapping.

#[test]
fn user_name_comes_from_the_configured_claim() {
    let f = dev();
    let rita = f.connect(&f.token("rita", &["reader"]));
    assert_eq!(rita.user()["name"], "rita");
    let nats_oidc_callout::Verdict::Allowed { user, roles, .. } = &rita.decision.verdict else {
        unreachable!()
    };
    assert_eq!(
        (user.as_str(), roles.clone()),
        ("rita", vec!["reader".into()])
    );
    let log = &rita.log;
    assert!(log.contains("result=\"allowed\" user=rita"), "{log}");
    assert!(log.contains("roles=[\"reader\"]"), "{log}");
}

/// Roles whose subjects are filled from the token: each member gets its own
/// `users.<sub>.>` and its organisation's chat rooms.
const TEMPLATED_ROLES: &str = r#"
[roles.member]
pub.allow = ["users.{{sub}}.>", "chat.{{claim:org.id}}.*"]
sub.allow = ["users.{{sub}}.>", "chat.{{claim:org.id}}.*", "_INBOX.>"]
sub.deny  = ["users.{{sub}}.private"]
"#;

fn member_token(f: &Fixture, sub: Value, org: Value) -> String {
    let i = f.issuer();
    let mut claims = i.claims("m", AUDIENCE, &["member"], 300);
    claims["sub"] = sub;
    claims["org"] = json!({ "id": org });
    signed(i, &claims)
}

/// Claim values that would change a subject's shape refuse the connection:
/// a dot would add tokens, `*` and `>` would be wildcards, whitespace would
/// break the protocol line. None of them may widen a grant.
#[test]
fn hostile_claim_values_in_subject_templates_are_refused() {
    let f = Fixture::new(|iss| ConfigToml::dev(iss).no_roles().roles(TEMPLATED_ROLES));
    let cases: Vec<(&str, Value, Value)> = vec![
        ("sub is >", ">".into(), "acme".into()),
        ("sub is *", "*".into(), "acme".into()),
        ("sub has a dot", "ana.>".into(), "acme".into()),
        ("sub has a space", "ana x".into(), "acme".into()),
        ("sub has CRLF", "ana\r\nPUB x 1".into(), "acme".into()),
        ("sub is empty", "".into(), "acme".into()),
        ("org is >", "ana".into(), ">".into()),
        ("org is an array", "ana".into(), json!(["acme", "other"])),
        ("org is an object", "ana".into(), json!({"id": "acme"})),
        ("org is missing", "ana".into(), Value::Null),
    ];
    for (case, sub, org) in cases {
        let outcome = f.connect(&member_token(&f, sub, org));
        assert_eq!(outcome.code(), Some("subject_template"), "{case}");
        outcome.refused("subject_template");
    }
    assert!(
        !f.log().contains("ana.>"),
        "hostile values are not echoed into the log"
    );
    let good = f.connect(&member_token(&f, "ana".into(), "acme".into()));
    assert!(good.may_subscribe("users.ana.inbox") && good.may_publish("chat.acme.lobby"));
    assert!(!good.may_subscribe("users.bob.inbox") && !good.may_subscribe("users.ana.private"));
}

/// A value that fills a subject's first token never names a namespace every
/// user shares: a user named `_INBOX` with `{{name}}.>` would receive every
/// client's replies, one named `_R_` every service import's answers in the
/// exporting account (`_GR_` across gateways), one named `$JS` would run
/// the account's JetStream.
#[test]
fn a_token_value_never_opens_a_shared_namespace() {
    let f = Fixture::new(|iss| {
        ConfigToml::dev(iss).no_roles().role(
            "own",
            "pub.allow = [\"{{name}}.>\"]\nsub.allow = [\"{{name}}.>\"]",
        )
    });
    let names = [
        "_INBOX",
        "_R_",
        "_GR_",
        "_anything",
        "$JS",
        "$KV",
        "$SRV",
        "$O",
    ];
    for name in names {
        let reason = f
            .connect(&f.token(name, &["own"]))
            .refused("subject_template")
            .to_string();
        assert!(reason.contains("$ or _,"), "{name}: {reason}");
    }
    let ana = f.connect(&f.token("ana", &["own"]));
    assert!(ana.may_subscribe("ana.inbox") && !ana.may_subscribe("_INBOX.x"));
}

#[test]
fn a_user_of_roles_in_two_accounts_is_refused() {
    let f = Fixture::new(|iss| {
        ConfigToml::dev(iss)
            .role(
                "team",
                "account = \"TEAM\"\npub.allow = [\">\"]\nsub.allow = [\">\"]",
            )
            .role("elsewhere", "account = \"OTHER\"\nsub.allow = [\">\"]")
    });
    // A role without an account defers to the one that names it.
    let tia = f.connect(&f.token("tia", &["team", "reader"]));
    assert_eq!(tia.user()["aud"], "TEAM");
    assert!(f.log().contains("user=tia") && f.log().contains("account=TEAM"));
    let reason = f
        .connect(&f.token("eve", &["team", "elsewhere"]))
        .refused("account_conflict")
        .to_string();
    assert!(
        reason.contains("elsewhere → OTHER") && reason.contains("team → TEAM"),
        "{reason}"
    );
}

// Connection rules and replies, as the user JWT states them for nats-server.

#[test]
fn connection_rules_and_resp_are_written_into_the_user_jwt() {
    let f = Fixture::new(|iss| {
        ConfigToml::dev(iss)
            .role(
                "browser",
                "pub.allow = [\"web.>\"]\nsub.allow = [\"web.>\", \"_INBOX.>\"]\nconnection.types = [\"WEBSOCKET\"]",
            )
            .role(
                "local",
                "pub.allow = [\"net.>\"]\nsub.allow = [\"net.>\"]\nconnection.sources = [\"127.0.0.0/8\", \"::1/128\"]",
            )
            .role("service", "sub.allow = [\"svc.echo\"]\nresp = { max = 1, ttl = \"1m\" }")
    });
    let mut over_websocket = f.server.claims(
        json!({"user": "x", "pass": f.token("wes", &["browser", "local"])}),
        now(),
    );
    over_websocket["nats"]["client_info"]["type"] = json!("websocket");
    let nats = f.request(over_websocket).user()["nats"].clone();
    assert_eq!(nats["allowed_connection_types"], json!(["WEBSOCKET"]));
    assert_eq!(nats["src"], json!(["127.0.0.0/8", "::1/128"]));
    let nats = f.connect(&f.token("sam", &["service"])).user()["nats"].clone();
    assert_eq!(nats["resp"], json!({"max": 1, "ttl": 60_000_000_000i64}));
    assert!(nats.get("allowed_connection_types").is_none());
    // Over TCP, the websocket-only role is refused.
    let reason = f
        .connect(&f.token("wes", &["browser"]))
        .refused("connection_type")
        .to_string();
    assert!(
        reason.contains("role browser admits WEBSOCKET connections, this one is STANDARD"),
        "{reason}"
    );
}

#[test]
fn every_roles_source_range_must_hold() {
    let f = Fixture::new(|iss| {
        ConfigToml::dev(iss)
            .role(
                "office",
                "pub.allow = [\"net.>\"]\nconnection.sources = [\"10.0.0.0/8\"]",
            )
            .role(
                "local",
                "pub.allow = [\"net.>\"]\nconnection.sources = [\"127.0.0.0/8\"]",
            )
    });
    f.connect(&f.token("lou", &["local"])).user();
    for roles in [&["office"][..], &["local", "office"]] {
        let reason = f
            .connect(&f.token("lou", roles))
            .refused("connection_source")
            .to_string();
        assert!(
            reason.contains(
                "role office admits connections from 10.0.0.0/8, this one comes from 127.0.0.1"
            ),
            "{roles:?}: {reason}"
        );
    }
}

// Scopes.

#[test]
fn scopes_are_asked_for_within_bounds_and_never_widen_a_subject() {
    let f = Fixture::new(|iss| {
        ConfigToml::new()
            .oidc(Oidc::dev(iss).set("scopes_claim", "\"rooms\""))
            .role(
                "member",
                "pub.allow = [\"chat.{{scope}}.in\", \"_INBOX.>\"]\nsub.allow = [\"chat.{{scope}}.>\", \"_INBOX.>\"]\nsub.deny = [\"chat.{{scope}}.admin\"]",
            )
            .role("lurker", "sub.allow = [\"chat.>\", \"_INBOX.>\"]")
            .section("[grants]\nmax_requested_scopes = 8")
    });
    let member = |user: &str, roles: &[&str], rooms: Vec<String>| {
        let mut claims = f.issuer().claims(user, AUDIENCE, roles, 300);
        claims["rooms"] = json!(rooms);
        signed(f.issuer(), &claims)
    };
    let named = |token: &str, name: &str| {
        f.connect_opts(json!({"user": "any", "pass": token, "name": name}))
    };
    let rooms: Vec<String> = (0..1000).map(|i| format!("room-{i}")).collect();
    let token = member("mia", &["member"], rooms.clone());
    let mia = named(&token, "chat-app scope=room-7,room-42,room-x");
    assert!(mia.may_subscribe("chat.room-7.msg") && mia.may_subscribe("chat.room-42.msg"));
    assert!(
        !mia.may_subscribe("chat.room-8.msg"),
        "entitled but not asked for"
    );
    assert!(
        !mia.may_subscribe("chat.room-x.msg"),
        "asked for but not entitled"
    );
    let nats_oidc_callout::Verdict::Allowed { scopes, .. } = &mia.decision.verdict else {
        unreachable!()
    };
    assert_eq!(scopes, &["room-7", "room-42"]);
    assert!(
        mia.log
            .contains("user=mia issuer=default roles=[\"member\"] scopes=[\"room-7\",\"room-42\"]"),
        "{}",
        mia.log
    );
    // A scoped deny holds for every scope, asked for or not.
    let lu = named(
        &member("lu", &["member", "lurker"], vec!["room-1".into()]),
        "chat-app",
    );
    assert!(lu.may_subscribe("chat.room-1.news") && !lu.may_subscribe("chat.room-1.admin"));
    // Asking for nothing grants nothing scoped.
    assert!(!named(&token, "chat-app").may_subscribe("chat.room-7.msg"));
    named(&token, &format!("scope={}", rooms[..9].join(","))).refused("scope");
    // An entitlement that would widen a subject is refused, not granted.
    named(&member("eve", &["member"], vec!["a.>".into()]), "scope=a.>").refused("subject_template");
}

// Several issuers.

const PARTNER_AUDIENCE: &str = "partner-nats";

/// corp (roles in realm_access.roles, name in preferred_username) and
/// partner (its own audience, roles in groups, name in sub), each with its
/// role namespace.
fn two_issuers(issuers: &[DevIssuer]) -> ConfigToml {
    ConfigToml::new()
        .oidc(Oidc::dev(&issuers[0].issuer()).name("corp"))
        .oidc(
            Oidc::new(&issuers[1].issuer())
                .name("partner")
                .audience(PARTNER_AUDIENCE)
                .roles_claim("groups")
                .user_claim("sub"),
        )
        .role("corp:admin", "pub.allow = [\">\"]\nsub.allow = [\">\"]")
        .role(
            "partner:reader",
            "pub.allow = [\"_INBOX.>\"]\nsub.allow = [\"partner.>\", \"_INBOX.>\"]",
        )
}

/// A partner token: roles in `groups`, its own audience.
fn partner_token(partner: &DevIssuer, user: &str, groups: &[&str]) -> String {
    let mut claims = partner.claims(user, PARTNER_AUDIENCE, &[], 300);
    claims["groups"] = json!(groups);
    signed(partner, &claims)
}

#[test]
fn each_issuer_reads_its_own_claims_into_its_own_roles() {
    let f = Fixture::with_issuers(2, two_issuers);
    let (corp, partner) = (&f.issuers[0], &f.issuers[1]);
    f.connect(&corp.token("ana", AUDIENCE, &["admin"], 300))
        .user();
    let pia = f.connect(&partner_token(partner, "pia", &["reader"]));
    assert!(pia.may_subscribe("partner.news") && !pia.may_subscribe("orders.new"));
    let log = f.log();
    assert!(
        log.contains("user=ana issuer=corp") && log.contains("user=user-pia issuer=partner"),
        "each decision names its issuer and uses its user claim:\n{log}"
    );
    // The partner's identity provider cannot mint corp's roles: its "admin"
    // is looked up as partner:admin, which does not exist.
    f.connect(&partner_token(partner, "mallory", &["admin", "corp:admin"]))
        .refused("no_mapped_role");
    // Each issuer's own audience and claim paths.
    let mut claims = partner.claims("pia", AUDIENCE, &[], 300);
    claims["groups"] = json!(["reader"]);
    f.connect(&signed(partner, &claims))
        .refused("token_audience");
    f.connect(&partner.token("pia", PARTNER_AUDIENCE, &["reader"], 300))
        .refused("no_mapped_role");
}

#[test]
fn a_token_is_judged_only_by_the_issuer_it_names() {
    let f = Fixture::with_issuers(2, two_issuers);
    let (corp, partner) = (&f.issuers[0], &f.issuers[1]);
    let stranger = f.block_on(DevIssuer::start(0)).unwrap();
    let fetches = |i: &DevIssuer| i.jwks_requests() + i.discovery_requests();
    let (corp_before, partner_before) = (fetches(corp), fetches(partner));

    // An issuer nobody configured: refused before any key is looked for,
    // however many tokens it sends and whatever kids they name.
    for n in 0..5 {
        let mut claims = stranger.claims("eve", AUDIENCE, &["admin"], 300);
        claims["jti"] = json!(n);
        let kid = stranger.add_key(Algorithm::RS256, true);
        let reason = f
            .connect(&stranger.sign(&kid, &claims))
            .refused("token_issuer")
            .to_string();
        assert!(
            reason.contains("is none of the configured issuers"),
            "{reason}"
        );
    }
    assert_eq!(
        fetches(&stranger),
        0,
        "the unknown issuer is never contacted"
    );
    assert_eq!(fetches(corp), corp_before, "nor is corp on its behalf");
    assert_eq!(fetches(partner), partner_before, "nor is partner");

    // A partner-signed token that claims to come from corp is routed to corp
    // and fails there: one issuer's keys never vouch for another's tokens.
    let mut forged = partner.claims("eve", AUDIENCE, &["admin"], 300);
    forged["iss"] = Value::String(corp.issuer());
    let partner_key = partner.current_kid(Algorithm::RS256);
    let under_kid = |kid: &str| {
        let mut header = Header::new(Algorithm::RS256);
        header.kid = Some(kid.to_string());
        partner.sign_with_header(&partner_key, header, &forged)
    };
    f.connect(&under_kid("partner-only-kid"))
        .refused("token_unknown_kid");
    // Same under a kid corp does have: the signature does not verify.
    f.connect(&under_kid(&corp.current_kid(Algorithm::RS256)))
        .refused("token_signature");
    // The real corp token still works.
    f.connect(&corp.token("ana", AUDIENCE, &["admin"], 300))
        .user();
}

/// `[roles.x]` as written is a shared table: an issuer reaches it only with
/// `role_namespace = ""`, and then only with roles that have no namespace.
#[test]
fn a_shared_role_table_is_opt_in_and_cannot_reach_namespaced_roles() {
    let f = Fixture::with_issuers(2, |issuers| {
        ConfigToml::new()
            .oidc(Oidc::dev(&issuers[0].issuer()).name("corp"))
            .oidc(
                Oidc::new(&issuers[1].issuer())
                    .name("partner")
                    .set("role_namespace", "\"\"")
                    .audience(PARTNER_AUDIENCE)
                    .roles_claim("groups")
                    .user_claim("sub"),
            )
            .role("corp:admin", "pub.allow = [\">\"]\nsub.allow = [\">\"]")
            .role("reader", "sub.allow = [\"shared.>\"]")
    });
    let partner = &f.issuers[1];
    let pia = f.connect(&partner_token(partner, "pia", &["reader"]));
    assert!(pia.may_subscribe("shared.news"), "the shared reader role");
    f.connect(&partner_token(partner, "mallory", &["corp:admin"]))
        .refused("no_mapped_role");
}

// Workload identities: [[bindings]] and require_claims.

/// Signed as the platforms sign: RS256, `typ: JWT`.
fn platform_signed(issuer: &DevIssuer, claims: &Value) -> String {
    let kid = issuer.current_kid(Algorithm::RS256);
    let mut header = Header::new(Algorithm::RS256);
    header.typ = Some("JWT".into());
    header.kid = Some(kid.clone());
    issuer.sign_with_header(&kid, header, claims)
}

/// GitHub Actions (`require_claims`), a cluster and Google Cloud (names by
/// email), with the roles and bindings `tests/bindings.rs` has.
fn workloads(issuers: &[DevIssuer]) -> ConfigToml {
    ConfigToml::new()
        .oidc(Oidc::new(&issuers[0].issuer()).name("github").set(
            "require_claims",
            "{ repository_owner = \"acme\", repository_owner_id = 65 }",
        ))
        .oidc(Oidc::new(&issuers[1].issuer()).name("cluster"))
        .oidc(
            Oidc::new(&issuers[2].issuer())
                .name("gcp")
                .user_claim("email"),
        )
        .roles(fixtures::WORKLOAD_ROLES)
}

/// A GitHub Actions job token for acme/orders on main, deploy workflow;
/// `edit` changes it into a near miss.
fn github_token(github: &DevIssuer, edit: impl FnOnce(&mut Value)) -> String {
    let t = now();
    let mut c = json!({
        "sub": "repo:acme/orders:ref:refs/heads/main",
        "aud": AUDIENCE,
        "ref": "refs/heads/main",
        "repository": "acme/orders",
        "repository_owner": "acme",
        "repository_owner_id": "65",
        "repository_id": "74",
        "job_workflow_ref": "acme/orders/.github/workflows/deploy.yml@refs/heads/main",
        "iss": github.issuer(),
        "nbf": t,
        "iat": t,
        "exp": t + 300,
    });
    edit(&mut c);
    platform_signed(github, &c)
}

/// A projected service-account token of `account` in namespace `ns`.
fn pod_token(cluster: &DevIssuer, ns: &str, account: &str) -> String {
    let t = now();
    platform_signed(
        cluster,
        &json!({
            "aud": [AUDIENCE],
            "exp": t + 3600,
            "iat": t,
            "iss": cluster.issuer(),
            "kubernetes.io": {"namespace": ns, "serviceaccount": {"name": account}},
            "sub": format!("system:serviceaccount:{ns}:{account}"),
        }),
    )
}

/// A Google ID token of the service account `sub`.
fn gcp_token(gcp: &DevIssuer, sub: &str) -> String {
    let t = now();
    platform_signed(
        gcp,
        &json!({
            "aud": AUDIENCE,
            "email": "orders-exporter@acme-prod.iam.gserviceaccount.com",
            "email_verified": true,
            "exp": t + 3600,
            "iat": t,
            "iss": gcp.issuer(),
            "sub": sub,
        }),
    )
}

fn bindings_of(o: &Outcome) -> Vec<String> {
    match &o.decision.verdict {
        nats_oidc_callout::Verdict::Allowed { bindings, .. } => bindings.clone(),
        other => panic!("not allowed: {other:?}"),
    }
}

#[test]
fn each_workload_gets_its_bound_role_and_near_misses_get_nothing() {
    let f = Fixture::with_issuers(3, workloads);
    let (github, cluster, gcp) = (&f.issuers[0], &f.issuers[1], &f.issuers[2]);
    let deployer = f.connect(&github_token(github, |_| {}));
    assert_eq!(bindings_of(&deployer), ["orders-deploy"]);
    assert!(deployer.may_publish("deploy.orders") && !deployer.may_publish("orders.new"));
    // The worker pod matches its exact binding and the broad one.
    let worker = f.connect(&pod_token(cluster, "orders", "worker"));
    assert_eq!(bindings_of(&worker), ["cluster[1]", "orders-pods"]);
    let exporter = f.connect(&gcp_token(gcp, "110011223344556677889"));
    assert_eq!(bindings_of(&exporter), ["gcp[3]"]);
    assert_eq!(
        exporter.user()["name"],
        "orders-exporter@acme-prod.iam.gserviceaccount.com"
    );
    assert!(exporter.may_publish("metrics.orders"));
    // Another pod of the namespace gets only what the broad binding gives.
    let reader = f.connect(&pod_token(cluster, "orders", "reporting"));
    assert!(reader.may_subscribe("orders.new") && !reader.may_publish("orders.fake"));

    // Near misses: every listed claim must match, exactly or by the glob.
    let misses: Vec<(String, &str)> = vec![
        (
            github_token(github, |c| c["repository_id"] = json!("75")),
            "another repository",
        ),
        (
            github_token(github, |c| c["ref"] = json!("refs/heads/dev")),
            "another branch",
        ),
        (
            github_token(github, |c| {
                c["job_workflow_ref"] =
                    json!("acme/orders/.github/workflows/deploy.yml@refs/heads/feature")
            }),
            "the workflow from another ref",
        ),
        (
            github_token(github, |c| c["repository_id"] = json!(74.0)),
            "a float id",
        ),
        (
            pod_token(cluster, "payments", "worker"),
            "another namespace",
        ),
        (
            pod_token(cluster, "ordersx", "worker"),
            "a namespace the '*' must not reach",
        ),
        (
            gcp_token(gcp, "110011223344556677880"),
            "another service account",
        ),
    ];
    for (token, case) in misses {
        assert_eq!(f.connect(&token).code(), Some("no_mapped_role"), "{case}");
    }
    // require_claims: the issuer is GitHub's, shared by every repository.
    let reason = f
        .connect(&github_token(github, |c| {
            c["repository_owner"] = json!("evil")
        }))
        .refused("required_claim")
        .to_string();
    assert_eq!(
        reason,
        "issuer github requires it: claim repository_owner is \"evil\" (wanted repository_owner = \"acme\")"
    );
    f.connect(&github_token(github, |c| {
        c.as_object_mut().unwrap().remove("repository_owner_id");
    }))
    .refused("required_claim");
}

/// A GitHub-shaped issuer at a URL that is not GitHub's (an Enterprise
/// Server behind a proxy; here the development issuer on loopback) with
/// its bindings pinned by `repository_id`.
fn declared_github(issuer: &str, platform: Option<&str>) -> ConfigToml {
    let mut oidc = Oidc::new(issuer)
        .name("github")
        .set("require_claims", "{ repository_owner_id = 65 }");
    if let Some(platform) = platform {
        oidc = oidc.set("platform", &quote(platform));
    }
    ConfigToml::new()
        .oidc(oidc)
        .role("github:deployer", "pub.allow = [\"deploy.orders\"]")
        .section(
            "[[bindings]]\nissuer = \"github\"\nmatch = { repository_id = 74, ref = \"refs/heads/main\" }\nroles = [\"deployer\"]",
        )
}

#[test]
fn a_declared_github_platform_pins_by_repository_id_at_any_url() {
    let f = Fixture::new(|iss| declared_github(iss, Some("github")));
    let deployer = f.connect(&github_token(f.issuer(), |_| {}));
    assert_eq!(bindings_of(&deployer), ["github[0]"]);
    assert!(deployer.may_publish("deploy.orders"));
    f.connect(&github_token(f.issuer(), |c| {
        c["repository_id"] = json!("75")
    }))
    .refused("no_mapped_role");

    // Undeclared, a loopback URL is no platform's: only sub names a
    // workload there, and the binding says how to declare it.
    let text = declared_github(&f.issuer().issuer(), None).to_string();
    let Err(error) =
        nats_oidc_callout::config::Config::parse(&text, std::path::Path::new("t.toml"))
    else {
        panic!("repository_id pins nothing on a generic issuer");
    };
    let error = error.to_string();
    for part in [
        "bindings[0].match",
        "pins no single workload: match one of [\"sub\"] exactly",
        "the issuer's platform is generic, where \"repository_id\" names no workload",
        "declare platform = \"github\" in its [oidc] block",
    ] {
        assert!(error.contains(part), "{part:?} not in {error}");
    }
}

// [users.*] identities beside OIDC.

#[test]
fn service_accounts_and_nkeys_are_admitted_with_their_own_grants() {
    let sensor = nkeys::KeyPair::new_user();
    let f = Fixture::new(|iss| {
        ConfigToml::dev(iss)
            .user(
                "svc-billing",
                &format!(
                    "password_bcrypt = \"{}\"\nroles = [\"writer\"]",
                    bcrypt::hash("correct horse battery staple", 4).unwrap()
                ),
            )
            .user(
                "monitor",
                &format!(
                    "password_bcrypt = \"{}\"\nsub.allow = [\"metrics.>\"]\naccount = \"TEAM\"",
                    bcrypt::hash("m0nitor", 4).unwrap()
                ),
            )
            .user(
                "sensor-7",
                &format!(
                    "nkey = \"{}\"\npub.allow = [\"sensors.{{{{name}}}}.>\"]",
                    sensor.public_key()
                ),
            )
    });
    let password = |user: &str, pass: &str| f.connect_opts(json!({"user": user, "pass": pass}));
    let billing = password("svc-billing", "correct horse battery staple");
    assert!(billing.may_publish("orders.paid") && !billing.may_publish("orders.audit"));
    let monitor = password("monitor", "m0nitor");
    assert_eq!(monitor.user()["aud"], "TEAM");
    assert!(monitor.may_subscribe("metrics.cpu"));
    // An nkey identity signs the connection's nonce.
    let nkey_connect = |key: &nkeys::KeyPair| {
        let mut claims = f.server.claims(
            json!({"nkey": key.public_key(), "sig": URL_SAFE_NO_PAD.encode(key.sign(b"a-nonce").unwrap())}),
            now(),
        );
        claims["nats"]["client_info"]["nonce"] = json!("a-nonce");
        f.request(claims)
    };
    let sensor_7 = nkey_connect(&sensor);
    assert!(
        sensor_7.may_publish("sensors.sensor-7.temp")
            && !sensor_7.may_publish("sensors.other.temp")
    );
    let log = f.log();
    for line in [
        "user=svc-billing issuer=config",
        "user=monitor issuer=config roles=[\"monitor\"] scopes=[] account=TEAM",
        "user=sensor-7 issuer=config",
    ] {
        assert!(log.contains(line), "missing {line:?} in\n{log}");
    }

    // Wrong or borrowed credentials.
    password("svc-billing", "guess").refused("identity_credentials");
    password("svc-billing", &f.token("ana", &["admin"])).refused("identity_credentials");
    password("sensor-7", "correct horse battery staple").refused("identity_credentials");
    nkey_connect(&nkeys::KeyPair::new_user()).refused("unknown_nkey");
    let log = f.log();
    for secret in [
        "guess",
        "correct horse battery staple",
        "m0nitor",
        &sensor.seed().unwrap(),
    ] {
        assert!(!log.contains(secret), "a password or seed is never logged");
    }
}
