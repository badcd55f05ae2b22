//! The cost of one decision (request JWT in → response JWT out) against the
//! cryptography it cannot avoid.
//!
//! `cargo bench --bench decision` runs criterion on the whole decision (with
//! and without xkey) and on each primitive, then prints, from medians
//! measured in the same run, the ratio decision / sum of its primitives.
//! Set `DECISION_QUICK=1` to skip criterion and print only the ratio table.
//! The table's cold row decides `DECISION_COLD` (default 2,000) distinct
//! tokens once each with the token cache on, as production meets new
//! tokens; `DECISION_COLD_ONLY=1` runs only that loop (for a profiler:
//! `valgrind --tool=callgrind --toggle-collect='*cold_path*'`).

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::Criterion;
use jsonwebtoken::{Algorithm, DecodingKey};
use nats_oidc_callout::nats::{decode_request, RequestBody};
use nats_oidc_callout::unix_now;
use nats_oidc_callout::Verdict;
use nats_oidc_callout_test_support::{ConfigToml, Fixture, Oidc};

struct Setup {
    /// Token cache off: every decision verifies the token's signature.
    fixture: Fixture,
    /// Token cache on (the default): the same token again is a cache hit.
    cached: Fixture,
    rs_token: String,
    es_token: String,
    /// The cached fixture's own token (another issuer).
    cached_token: String,
    rs_key: DecodingKey,
    es_key: DecodingKey,
}

/// The decision's config: one issuer, a reader role, xkey on.
fn config(issuer: &str, token_cache: bool) -> ConfigToml {
    let oidc = Oidc::dev(issuer).unset("jwks_refetch_cooldown");
    let oidc = match token_cache {
        true => oidc,
        false => oidc.set("token_cache_bytes", "0"),
    };
    ConfigToml::new()
        .xkey_seed(&nkeys::XKey::new().seed().unwrap())
        .oidc(oidc)
        .role(
            "reader",
            "pub.allow = [\"_INBOX.>\"]\nsub.allow = [\"orders.>\", \"_INBOX.>\"]\nsub.deny  = [\"orders.secret.>\"]",
        )
}

fn setup() -> Setup {
    let fixture = Fixture::new(|issuer| config(issuer, false)).quiet();
    let cached = Fixture::new(|issuer| config(issuer, true)).quiet();
    let issuer = fixture.issuer();
    let rs_kid = issuer.current_kid(Algorithm::RS256);
    let es_kid = issuer.current_kid(Algorithm::ES256);
    let claims = issuer.claims("ana", "nats", &["reader"], 3600);
    let rs_token = issuer.sign(&rs_kid, &claims);
    let es_token = issuer.sign(&es_kid, &claims);
    let cached_token = cached.issuer().token("ana", "nats", &["reader"], 3600);
    let jwk = |kid: &str| {
        DecodingKey::from_jwk(&serde_json::from_value(issuer.public_jwk(kid)).unwrap()).unwrap()
    };
    Setup {
        rs_key: jwk(&rs_kid),
        es_key: jwk(&es_kid),
        fixture,
        cached,
        rs_token,
        es_token,
        cached_token,
    }
}

impl Setup {
    fn decide(&self, payload: &[u8], header: Option<&str>) -> Verdict {
        self.fixture
            .decide_with(payload, header, usize::MAX)
            .verdict
    }

    /// The decision without the wire: the verified request → admission.
    fn authorize(&self, request: &RequestBody) -> bool {
        self.fixture.authorize(request).is_ok()
    }

    fn decide_cached(&self, payload: &[u8]) -> Verdict {
        self.cached.decide_with(payload, None, usize::MAX).verdict
    }
}

/// Median time per call over 31 batches.
fn median(mut f: impl FnMut()) -> Duration {
    let start = Instant::now();
    let mut calls = 0u32;
    while start.elapsed() < Duration::from_millis(50) {
        f();
        calls += 1;
    }
    let per_batch = calls.max(1);
    let mut batches: Vec<Duration> = (0..31)
        .map(|_| {
            let t = Instant::now();
            for _ in 0..per_batch {
                f();
            }
            t.elapsed() / per_batch
        })
        .collect();
    batches.sort();
    batches[15]
}

/// Each request decided once (each token new to the cache); the mean.
#[inline(never)]
fn cold_path(s: &Setup, requests: &[Vec<u8>]) -> Duration {
    let began = Instant::now();
    for r in requests {
        let verdict = s.decide_cached(r);
        assert!(
            matches!(verdict, Verdict::Allowed { .. }),
            "a cold decision must be an allow: {verdict:?}"
        );
    }
    began.elapsed() / requests.len().max(1) as u32
}

fn split_signed(token: &str) -> (&str, &str) {
    token.rsplit_once('.').unwrap()
}

fn main() {
    let mut s = setup();
    // One request is replayed for minutes: keep it valid that long, so every
    // measured decision is the allow checked below, not an expiry refusal.
    s.fixture.server.validity_secs = 86_400;
    s.cached.server.validity_secs = 86_400;
    let s = s;
    let now = unix_now();
    let server = &s.fixture.server;
    let callout_xkey = s.fixture.callout_xkey.as_ref().expect("xkey on");
    let plain = server.request(&s.rs_token, now);
    let plain_es = server.request(&s.es_token, now);
    let plain_cached = s.cached.server.request(&s.cached_token, now);
    let (sealed, server_xkey) = server.sealed_request(&s.rs_token, now, callout_xkey);
    for (payload, header) in [(&plain, None), (&sealed, Some(server_xkey.as_str()))] {
        assert!(
            matches!(s.decide(payload, header), Verdict::Allowed { .. }),
            "the benchmark's decision must be an allow"
        );
    }

    let verified = decode_request(&plain, None, None, &server.callout_issuer, now as i64).unwrap();
    let body = &verified.claims.nats;
    assert!(
        s.authorize(body),
        "the benchmark's admission must be an allow"
    );

    // Primitive inputs, shaped like the decision's.
    let (rs_msg, rs_sig) = split_signed(&s.rs_token);
    let (es_msg, es_sig) = split_signed(&s.es_token);
    let request_text = String::from_utf8(plain.clone()).unwrap();
    let (req_msg, req_sig) = split_signed(&request_text);
    let req_sig =
        base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, req_sig).unwrap();
    // Signed as the service signs (nats::signing_key: aws-lc's Ed25519).
    let account = nats_oidc_callout::nats::SigningKey::new(nkeys::KeyPair::new_account()).unwrap();
    let user_jwt_like = vec![b'x'; 700];
    let response_like = vec![b'y'; 1200];
    // With the agreement per server key done once (nats::xkey), opening and
    // sealing are one XSalsa20-Poly1305 pass each: those are the primitives.
    let ours = s.fixture.config.callout.xkey.clone().expect("xkey on");
    let from_server = ours.server(&server.xkey.public_key()).unwrap();
    let other_xkey = ours.server(&nkeys::XKey::new().public_key()).unwrap();
    let sealed_response = ours.seal(&other_xkey, &response_like);

    let rs256_verify = || {
        assert!(jsonwebtoken::crypto::verify(
            rs_sig,
            rs_msg.as_bytes(),
            &s.rs_key,
            Algorithm::RS256
        )
        .unwrap())
    };
    let es256_verify = || {
        assert!(jsonwebtoken::crypto::verify(
            es_sig,
            es_msg.as_bytes(),
            &s.es_key,
            Algorithm::ES256
        )
        .unwrap())
    };
    let ed_verify = || {
        server
            .key
            .pair()
            .verify(req_msg.as_bytes(), &req_sig)
            .unwrap()
    };
    let ed_sign = || {
        black_box(account.sign(&user_jwt_like).as_ref().len());
    };
    let ed_sign_response = || {
        black_box(account.sign(&response_like).as_ref().len());
    };
    let xkey_open = || {
        black_box(ours.open(&from_server, &sealed).unwrap());
    };
    let xkey_seal = || {
        black_box(ours.seal(&other_xkey, &response_like));
    };
    let _ = &sealed_response;

    // Every token new, cache on: verified, mapped, and put in the cache.
    let cold_n: usize = std::env::var("DECISION_COLD")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let cold_kid = s.cached.issuer().current_kid(Algorithm::RS256);
    let cold_requests: Vec<Vec<u8>> = (0..cold_n)
        .map(|i| {
            let claims = s
                .cached
                .issuer()
                .claims(&format!("user{i}"), "nats", &["reader"], 3600);
            let token = s.cached.issuer().sign(&cold_kid, &claims);
            s.cached.server.request(&token, now)
        })
        .collect();
    let d_cold = cold_path(&s, &cold_requests);
    if std::env::var_os("DECISION_COLD_ONLY").is_some() {
        println!(
            "{cold_n} new tokens, cache on: {:.1} us per decision",
            d_cold.as_secs_f64() * 1e6
        );
        return;
    }

    if std::env::var_os("DECISION_QUICK").is_none() {
        let mut c = Criterion::default().configure_from_args();
        let mut g = c.benchmark_group("decision");
        g.bench_function("rs256_token", |b| b.iter(|| s.decide(&plain, None)));
        g.bench_function("es256_token", |b| b.iter(|| s.decide(&plain_es, None)));
        g.bench_function("rs256_token_xkey", |b| {
            b.iter(|| s.decide(&sealed, Some(&server_xkey)))
        });
        g.bench_function("rs256_token_cached", |b| {
            b.iter(|| s.decide_cached(&plain_cached))
        });
        g.bench_function("authorize_rs256_token", |b| b.iter(|| s.authorize(body)));
        g.finish();
        let mut g = c.benchmark_group("primitive");
        g.bench_function("rs256_verify", |b| b.iter(rs256_verify));
        g.bench_function("es256_verify", |b| b.iter(es256_verify));
        g.bench_function("ed25519_verify", |b| b.iter(ed_verify));
        g.bench_function("ed25519_sign", |b| b.iter(ed_sign));
        g.bench_function("xkey_open", |b| b.iter(xkey_open));
        g.bench_function("xkey_seal", |b| b.iter(xkey_seal));
        g.finish();
        c.final_summary();
    }

    // The ratio, from medians taken now, in this process.
    let d_rs = median(|| {
        black_box(s.decide(&plain, None));
    });
    let d_es = median(|| {
        black_box(s.decide(&plain_es, None));
    });
    let d_x = median(|| {
        black_box(s.decide(&sealed, Some(&server_xkey)));
    });
    let d_cached = median(|| {
        black_box(s.decide_cached(&plain_cached));
    });
    let d_authorize = median(|| {
        black_box(s.authorize(body));
    });
    for verdict in [
        s.decide(&plain, None),
        s.decide(&plain_es, None),
        s.decide(&sealed, Some(&server_xkey)),
        s.decide_cached(&plain_cached),
    ] {
        assert!(
            matches!(verdict, Verdict::Allowed { .. }),
            "the measured decisions must still be allows: {verdict:?}"
        );
    }
    let p_rs = median(rs256_verify);
    let p_es = median(es256_verify);
    let p_edv = median(ed_verify);
    let p_eds = median(ed_sign);
    let p_eds_r = median(ed_sign_response);
    let p_open = median(xkey_open);
    let p_seal = median(xkey_seal);
    // One decision: verify the request (Ed25519), verify the token, sign the
    // user JWT and the response (Ed25519); with xkey also open and seal.
    let base = p_edv + p_eds + p_eds_r;
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("\nprimitive medians (us): rs256_verify {:.1}  es256_verify {:.1}  ed25519_verify {:.1}  ed25519_sign {:.1}/{:.1}  xkey_open {:.1}  xkey_seal {:.1}",
        us(p_rs), us(p_es), us(p_edv), us(p_eds), us(p_eds_r), us(p_open), us(p_seal));
    println!(
        "{:<22} {:>12} {:>16} {:>7}",
        "decision", "median us", "primitives us", "ratio"
    );
    for (name, d, p) in [
        ("rs256 token", d_rs, base + p_rs),
        ("es256 token", d_es, base + p_es),
        ("rs256 token + xkey", d_x, base + p_rs + p_open + p_seal),
        // A token seen before: its signature is not verified again.
        ("rs256 token, cached", d_cached, base),
        // Every token new, the cache on: as the first, plus the insert.
        ("rs256 new, cache on", d_cold, base + p_rs),
        // `authorize` alone: the token's signature is its only crypto.
        ("authorize, rs256", d_authorize, p_rs),
    ] {
        println!(
            "{name:<22} {:>12.1} {:>16.1} {:>7.2}",
            us(d),
            us(p),
            d.as_secs_f64() / p.as_secs_f64()
        );
    }
}
