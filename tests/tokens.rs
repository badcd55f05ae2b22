//! Bearer token checks through the whole system: each bad token is refused
//! at connect, the service logs the precise reason, and a good token is
//! accepted right after (the service stayed up).

mod common;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use common::*;
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{json, Value};

fn now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

fn b64(v: &Value) -> String {
    URL_SAFE_NO_PAD.encode(serde_json::to_vec(v).unwrap())
}

fn rsa_kid(i: &DevIssuer) -> String {
    i.current_kid(Algorithm::RS256)
}

fn at_header(kid: &str) -> Header {
    let mut h = Header::new(Algorithm::RS256);
    h.typ = Some("at+jwt".into());
    h.kid = Some(kid.into());
    h
}

/// Good claims with one change applied.
fn claims_with(i: &DevIssuer, change: impl FnOnce(&mut serde_json::Map<String, Value>)) -> Value {
    let mut c = i.claims("mallory", AUDIENCE, &["admin"], 300);
    change(c.as_object_mut().unwrap());
    c
}

fn signed(i: &DevIssuer, claims: &Value) -> String {
    let kid = rsa_kid(i);
    i.sign_with_header(&kid, at_header(&kid), claims)
}

/// Starts a stack, checks the token is refused with `code` in the log, then
/// checks that a good token still gets in.
async fn assert_refused_with(make: impl FnOnce(&DevIssuer) -> String, code: &str) {
    assert_refused_with_options(make, code, ServiceOptions::default()).await
}

async fn assert_refused_with_options(
    make: impl FnOnce(&DevIssuer) -> String,
    code: &str,
    opts: ServiceOptions,
) {
    let stack = Stack::start(opts).await;
    let token = make(&stack.issuer);
    assert_refused(&stack.url(), &token, code).await;
    wait_for_log(
        &stack.service.log,
        &format!("code=\"{code}\""),
        std::time::Duration::from_secs(5),
    )
    .await;
    let good = stack.token("ana", &["admin"]);
    connect(&stack.url(), &good)
        .await
        .expect("a good token is accepted right after");
    let log = stack.service.log_text();
    assert!(
        !log.contains(&token),
        "the refused token must never be logged"
    );
    assert!(
        !log.contains(&good),
        "the accepted token must never be logged"
    );
}

macro_rules! refused {
    ($name:ident, $code:literal, $make:expr) => {
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn $name() {
            assert_refused_with($make, $code).await;
        }
    };
}

refused!(alg_none, "token_alg", |i: &DevIssuer| {
    let c = i.claims("mallory", AUDIENCE, &["admin"], 300);
    format!(
        "{}.{}.",
        b64(&json!({"alg": "none", "typ": "JWT"})),
        b64(&c)
    ) + "AAAA"
});

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
        let kid = rsa_kid(i);
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
        h.kid = Some(rsa_kid(i));
        i.sign_with_header(&ec, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
    }
);

refused!(header_jku, "token_header_key", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.jku = Some("https://attacker.example/jwks".into());
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(header_x5u, "token_header_key", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.x5u = Some("https://attacker.example/cert.pem".into());
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(header_embedded_jwk, "token_header_key", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.jwk = Some(serde_json::from_value(i.public_jwk(&kid)).unwrap());
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(header_x5c, "token_header_key", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.x5c = Some(vec!["MIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKCAQEA".into()]);
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(unsupported_crit, "token_crit", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.crit = Some(vec!["exp".into()]);
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(nested_jwt, "token_nested", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.cty = Some("JWT".into());
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

refused!(unexpected_typ, "token_typ", |i: &DevIssuer| {
    let kid = rsa_kid(i);
    let mut h = at_header(&kid);
    h.typ = Some("secevent+jwt".into());
    i.sign_with_header(&kid, h, &i.claims("mallory", AUDIENCE, &["admin"], 300))
});

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

refused!(wrong_issuer, "token_issuer", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("iss".into(), json!("https://evil.example"));
        }),
    )
});

refused!(issuer_as_array, "token_claims", |i: &DevIssuer| {
    let iss = i.issuer();
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("iss".into(), json!([iss, "https://evil.example"]));
        }),
    )
});

refused!(missing_issuer, "token_claims", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.remove("iss");
        }),
    )
});

refused!(wrong_audience, "token_audience", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("aud".into(), json!(["account", "other-api"]));
        }),
    )
});

refused!(missing_audience, "token_claims", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.remove("aud");
        }),
    )
});

refused!(expired, "token_expired", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("exp".into(), json!(now() - 10));
            c.insert("iat".into(), json!(now() - 600));
            c.insert("nbf".into(), json!(now() - 600));
        }),
    )
});

refused!(missing_expiry, "token_claims", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.remove("exp");
        }),
    )
});

refused!(expiry_as_string, "token_claims", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.insert("exp".into(), json!((now() + 300).to_string()));
        }),
    )
});

refused!(
    not_before_in_the_future,
    "token_not_yet_valid",
    |i: &DevIssuer| {
        signed(
            i,
            &claims_with(i, |c| {
                c.insert("nbf".into(), json!(now() + 3600));
            }),
        )
    }
);

refused!(
    issued_in_the_future,
    "token_not_yet_valid",
    |i: &DevIssuer| {
        signed(
            i,
            &claims_with(i, |c| {
                c.insert("iat".into(), json!(now() + 3600));
            }),
        )
    }
);

refused!(tampered_payload, "token_signature", |i: &DevIssuer| {
    let token = i.token("mallory", AUDIENCE, &["reader"], 300);
    let p: Vec<&str> = token.split('.').collect();
    let forged = i.claims("mallory", AUDIENCE, &["admin"], 300);
    format!("{}.{}.{}", p[0], b64(&forged), p[2])
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
        i.sign_with_header(
            &rogue,
            at_header(&rsa_kid(i)),
            &i.claims("mallory", AUDIENCE, &["admin"], 300),
        )
    }
);

refused!(
    roles_claim_of_the_wrong_type,
    "roles_claim",
    |i: &DevIssuer| {
        signed(
            i,
            &claims_with(i, |c| {
                c.insert("realm_access".into(), json!({"roles": {"admin": true}}));
            }),
        )
    }
);

refused!(no_mapped_role, "no_mapped_role", |i: &DevIssuer| i.token(
    "gus",
    AUDIENCE,
    &["guest", "offline_access"],
    300
));

refused!(no_roles_at_all, "no_mapped_role", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.remove("realm_access");
        }),
    )
});

refused!(identity_claim_missing, "identity_claim", |i: &DevIssuer| {
    signed(
        i,
        &claims_with(i, |c| {
            c.remove("preferred_username");
        }),
    )
});

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_token_is_refused_by_the_configured_cap() {
    let opts = ServiceOptions {
        extra_callout: "max_token_bytes = 8192".into(),
        ..Default::default()
    };
    assert_refused_with_options(
        |i: &DevIssuer| {
            let padding = "x".repeat(12_000);
            signed(
                i,
                &claims_with(i, |c| {
                    c.insert("padding".into(), json!(padding));
                }),
            )
        },
        "token_too_large",
        opts,
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_token_of_many_groups_is_accepted() {
    // Entra ID and Keycloak tokens with many groups are several KiB; the
    // shipped nats.conf raises max_control_line so they reach the callout.
    let stack = Stack::start(ServiceOptions::default()).await;
    let groups: Vec<String> = (0..400)
        .map(|n| format!("group-{n:04}-{}", "g".repeat(20)))
        .collect();
    let i = &stack.issuer;
    let token = signed(
        i,
        &claims_with(i, |c| {
            c.insert("groups".into(), json!(groups));
        }),
    );
    assert!(
        token.len() > 16 * 1024,
        "the token is {} bytes",
        token.len()
    );
    connect(&stack.url(), &token)
        .await
        .expect("a 16+ KiB token is accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn es256_tokens_are_accepted() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let kid = stack.issuer.current_kid(Algorithm::ES256);
    let mut h = Header::new(Algorithm::ES256);
    h.typ = Some("JWT".into());
    h.kid = Some(kid.clone());
    let token = stack.issuer.sign_with_header(
        &kid,
        h,
        &stack.issuer.claims("eve", AUDIENCE, &["reader"], 300),
    );
    connect(&stack.url(), &token)
        .await
        .expect("ES256 token accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn token_may_be_sent_as_the_connect_token() {
    let stack = Stack::start(ServiceOptions::default()).await;
    connect_with_token(&stack.url(), &stack.token("tom", &["reader"]))
        .await
        .expect("auth_token accepted");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_token_is_refused() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let Err(err) = base_options(&stack.url()).await.connect(stack.url()).await else {
        panic!("a connection without a token was allowed");
    };
    assert!(
        err.to_string().to_lowercase().contains("authorization"),
        "{err}"
    );
    wait_for_log(
        &stack.service.log,
        "code=\"no_token\"",
        std::time::Duration::from_secs(5),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_made_up_kids_costs_at_most_one_fetch_per_cooldown() {
    let stack = Stack::start(ServiceOptions::default()).await;
    let before = stack.issuer.jwks_requests();
    let mut attempts = Vec::new();
    for n in 0..30 {
        let mut h = at_header(&format!("made-up-{n}"));
        h.kid = Some(format!("made-up-{n}"));
        let kid = rsa_kid(&stack.issuer);
        let token = stack.issuer.sign_with_header(
            &kid,
            h,
            &stack.issuer.claims("mallory", AUDIENCE, &["admin"], 300),
        );
        let url = stack.url();
        attempts.push(tokio::spawn(
            async move { connect(&url, &token).await.is_err() },
        ));
    }
    for a in attempts {
        assert!(a.await.unwrap(), "made-up kid refused");
    }
    let fetched = stack.issuer.jwks_requests() - before;
    // jwks_refetch_cooldown is 2s in the test config; the flood lasts less.
    assert!(fetched <= 2, "{fetched} JWKS fetches for 30 unknown kids");
    assert!(fetched >= 1, "an unknown kid does trigger a refetch");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keys_published_without_kid_still_verify() {
    let issuer = DevIssuer::start(0).await.unwrap();
    issuer.set_serve_kids(false);
    let keys = CalloutKeys::new();
    let nats = NatsServer::start(&keys.issuer.public_key(), None);
    let _service = CalloutService::start(
        &nats.url(),
        &issuer.issuer(),
        &keys,
        ServiceOptions::default(),
    )
    .await;
    // A token naming a kid the JWKS does not name falls back to its kid-less keys...
    connect(&nats.url(), &issuer.token("ana", AUDIENCE, &["admin"], 300))
        .await
        .expect("kid falls back to kid-less keys");
    // ...a token without kid is tried against the keys of its algorithm...
    let kid = issuer.current_kid(Algorithm::RS256);
    let mut h = Header::new(Algorithm::RS256);
    h.typ = Some("JWT".into());
    let no_kid = issuer.sign_with_header(&kid, h, &issuer.claims("ana", AUDIENCE, &["admin"], 300));
    connect(&nats.url(), &no_kid)
        .await
        .expect("a token without kid verifies");
    // ...and a foreign key is still refused.
    let rogue = issuer.add_key(Algorithm::RS256, false);
    let forged = issuer.sign(&rogue, &issuer.claims("ana", AUDIENCE, &["admin"], 300));
    assert_refused(&nats.url(), &forged, "foreign key with kid-less JWKS").await;
}

/// The sibling of the password flood: tokens naming keys the issuer never
/// published, thousands of them, while the issuer is slow to answer the
/// refetch they trigger. At most a bounded number wait for it (each until
/// its deadline); the rest are refused at once, and tokens with known keys
/// go on being admitted within nats-server's auth timeout.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_kids_during_a_slow_refetch_make_no_other_client_wait() {
    let stack = Stack::start(ServiceOptions::default()).await;
    stack
        .issuer
        .set_jwks_delay(std::time::Duration::from_secs(4));
    let addr = stack.url().trim_start_matches("nats://").to_string();
    let forged = |n: usize| {
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("made-up-{n}")});
        let claims =
            json!({"iss": stack.issuer.issuer(), "aud": AUDIENCE, "sub": "m", "exp": now() + 300});
        format!("{}.{}.AAAA", b64(&header), b64(&claims))
    };
    let burst = (open_files_limit() / 3).min(5000);
    let mut flood = Vec::new();
    for n in 0..burst {
        let (addr, token) = (addr.clone(), forged(n));
        flood.push(tokio::spawn(async move {
            raw_connect(&addr, "m", &token).await
        }));
    }
    // The burst's arrival is work every client shares (on a busy machine it
    // can take seconds to get through); what must not hold anyone up are
    // the forged tokens that wait for the slow refetch (4 s). So the logins
    // start once the rest of the burst has been refused at once.
    answered_but_the_waiters(&flood).await;
    // Twenty logins with known keys while up to MAX_REFETCH_WAITERS forged
    // ones wait: each is admitted, which it would not be (nats-server's 2 s
    // auth timeout) if it queued behind them.
    let mut during_the_flood = flood.iter().any(|t| !t.is_finished());
    for n in 0..20 {
        let admitted = connect(&stack.url(), &stack.token(&format!("ana-{n}"), &["reader"])).await;
        assert!(
            admitted.is_ok(),
            "token login {n} refused during the flood: {:?}",
            admitted.err()
        );
        // The first logins at least ran while forged tokens were in flight.
        during_the_flood |= flood.iter().any(|t| !t.is_finished());
    }
    let waiting_during_logins = during_the_flood;
    for task in flood {
        let _ = task.await;
    }
    let log = stack.service.log_text();
    assert!(log.contains("waiting for its key set"), "the bound was met");
    assert!(
        waiting_during_logins,
        "the flood was over before any login: they proved nothing"
    );
}

/// Waits (a hang guard, never a speed) until every connect of a flood of
/// made-up kids has ended but those the service lets wait for a refetch.
async fn answered_but_the_waiters<T>(flood: &[tokio::task::JoinHandle<T>]) {
    let waiters = nats_oidc_callout::oidc::MAX_REFETCH_WAITERS;
    let deadline = std::time::Instant::now() + 2 * HANG_GUARD;
    while flood.iter().filter(|t| !t.is_finished()).count() > waiters {
        assert!(
            std::time::Instant::now() < deadline,
            "the burst of made-up kids was never answered"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
}

/// A refetch for a new key outlives the requests that wait for it: with an
/// issuer slower to answer than one request's time (3 s), the first waiter
/// giving up does not cancel it, so the new key arrives and a retry gets in,
/// and no second fetch starts meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_refetch_still_brings_a_new_key_in() {
    let stack = Stack::start(ServiceOptions::default()).await;
    stack
        .issuer
        .set_jwks_delay(std::time::Duration::from_millis(3500));
    let kid = stack.issuer.add_key(Algorithm::RS256, true);
    let token = stack
        .issuer
        .sign(&kid, &stack.issuer.claims("ana", AUDIENCE, &["admin"], 300));
    let fetches = stack.issuer.jwks_requests();
    let started = std::time::Instant::now();
    loop {
        if connect(&stack.url(), &token).await.is_ok() {
            break;
        }
        // A hang guard: the new key comes after one slow fetch (3.5 s).
        assert!(
            started.elapsed() < std::time::Duration::from_secs(60),
            "the new key never arrived"
        );
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    assert!(
        stack.issuer.jwks_requests() - fetches <= 2,
        "{} fetches",
        stack.issuer.jwks_requests() - fetches
    );
}

/// Made-up kids spread over several slow issuers still cannot hold all the
/// requests the service keeps in flight: the bound on waiters for a refetch
/// is one for all issuers, whatever `iss` the tokens claim.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn made_up_kids_across_several_slow_issuers_make_no_other_client_wait() {
    let mut slow = Vec::new();
    for _ in 0..5 {
        let issuer = DevIssuer::start(0).await.unwrap();
        slow.push(issuer);
    }
    let good = DevIssuer::start(0).await.unwrap();
    let mut blocks = format!(
        "[[oidc]]\nname = \"good\"\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nroles_claim = \"realm_access.roles\"\nuser_claim = \"preferred_username\"\nrole_namespace = \"\"\n",
        good.issuer()
    );
    for (i, s) in slow.iter().enumerate() {
        blocks.push_str(&format!(
            "\n[[oidc]]\nname = \"slow{i}\"\nissuer = \"{}\"\naudience = \"{AUDIENCE}\"\nroles_claim = \"realm_access.roles\"\n",
            s.issuer()
        ));
    }
    let mut stack = Stack::start(ServiceOptions {
        oidc: Some(blocks),
        ..Default::default()
    })
    .await;
    for s in &slow {
        s.set_jwks_delay(std::time::Duration::from_secs(30));
    }
    stack.issuer = good;
    let addr = stack.url().trim_start_matches("nats://").to_string();
    let burst = (open_files_limit() / 3).min(4500);
    let mut flood = Vec::new();
    for n in 0..burst {
        let issuer = &slow[n % slow.len()];
        let header = json!({"alg": "RS256", "typ": "JWT", "kid": format!("made-up-{n}")});
        let claims =
            json!({"iss": issuer.issuer(), "aud": AUDIENCE, "sub": "m", "exp": now() + 300});
        let token = format!("{}.{}.AAAA", b64(&header), b64(&claims));
        let addr = addr.clone();
        flood.push(tokio::spawn(async move {
            raw_connect(&addr, "m", &token).await
        }));
    }
    // The slow issuers hold their refetches for 30 s: once the rest of the
    // burst has been refused at once (see above), twenty logins with the
    // good issuer's keys are each admitted while the waiters wait.
    answered_but_the_waiters(&flood).await;
    let mut during_the_flood = flood.iter().any(|t| !t.is_finished());
    for n in 0..20 {
        let admitted = connect(&stack.url(), &stack.token(&format!("ana-{n}"), &["reader"])).await;
        assert!(
            admitted.is_ok(),
            "token login {n} refused during the flood: {:?}",
            admitted.err()
        );
        // The first logins at least ran while forged tokens were in flight.
        during_the_flood |= flood.iter().any(|t| !t.is_finished());
    }
    assert!(
        during_the_flood,
        "the flood was over before any login: they proved nothing"
    );
    for task in flood {
        task.abort();
    }
}
