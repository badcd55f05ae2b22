//! The cost of one decision (request JWT in → response JWT out) against the
//! cryptography it cannot avoid.
//!
//! `cargo bench --bench decision` runs criterion on the whole decision (with
//! and without xkey) and on each primitive, then prints, from medians
//! measured in the same run, the ratio decision / sum of its primitives.
//! Set `DECISION_QUICK=1` to skip criterion and print only the ratio table.

use std::hint::black_box;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use criterion::Criterion;
use jsonwebtoken::{Algorithm, DecodingKey};
use nats_oidc_callout::config::Config;
use nats_oidc_callout::dev::server_sim::ServerSim;
use nats_oidc_callout::dev::DevIssuer;
use nats_oidc_callout::nats::{decode_request, RequestBody};
use nats_oidc_callout::Metrics;
use nats_oidc_callout::{unix_now, Deadline};
use nats_oidc_callout::{Arrival, Callout, Verdict};

struct Setup {
    rt: tokio::runtime::Runtime,
    _issuer: DevIssuer,
    /// Token cache off: every decision verifies the token's signature.
    callout: Callout,
    /// Token cache on (the default): the same token again is a cache hit.
    cached: Callout,
    server: ServerSim,
    callout_xkey: nkeys::XKey,
    rs_token: String,
    es_token: String,
    rs_key: DecodingKey,
    es_key: DecodingKey,
}

fn setup() -> Setup {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let issuer = rt.block_on(DevIssuer::start(0)).unwrap();
    let account = nkeys::KeyPair::new_account();
    let callout_xkey = nkeys::XKey::new();
    let config = |cache: &str| {
        Config::parse(
            &format!(
                r#"
[callout]
issuer_seed = "{seed}"
xkey_seed = "{xseed}"
account = "APP"

[oidc]
issuer = "{iss}"
audience = ["nats"]
roles_claim = "realm_access.roles"
user_claim = "preferred_username"
{cache}

[roles.reader]
pub.allow = ["_INBOX.>"]
sub.allow = ["orders.>", "_INBOX.>"]
sub.deny  = ["orders.secret.>"]
"#,
                seed = account.seed().unwrap(),
                xseed = callout_xkey.seed().unwrap(),
                iss = issuer.issuer()
            ),
            Path::new("bench.toml"),
        )
        .unwrap_or_else(|e| panic!("{e}"))
    };
    let callout_with = |config: Config| {
        let issuers = config.issuers(None, &Arc::new(Metrics::new())).unwrap();
        for issuer in issuers.iter() {
            rt.block_on(issuer.keys.refresh()).unwrap();
        }
        config.callout(config.authorizer(issuers, Default::default()))
    };
    let callout = callout_with(config("token_cache_bytes = 0"));
    let cached = callout_with(config(""));
    let rs_kid = issuer.current_kid(Algorithm::RS256);
    let es_kid = issuer.current_kid(Algorithm::ES256);
    let claims = issuer.claims("ana", "nats", &["reader"], 3600);
    let rs_token = issuer.sign(&rs_kid, &claims);
    let es_token = issuer.sign(&es_kid, &claims);
    let jwk = |kid: &str| {
        DecodingKey::from_jwk(&serde_json::from_value(issuer.public_jwk(kid)).unwrap()).unwrap()
    };
    Setup {
        rs_key: jwk(&rs_kid),
        es_key: jwk(&es_kid),
        server: ServerSim::new(&account.public_key()),
        rt,
        _issuer: issuer,
        callout,
        cached,
        callout_xkey,
        rs_token,
        es_token,
    }
}

impl Setup {
    fn decide(&self, payload: &[u8], header: Option<&str>) -> Verdict {
        self.rt
            .block_on(
                self.callout
                    .decide(payload, header, usize::MAX, Arrival::now()),
            )
            .verdict
    }

    /// The decision without the wire: the verified request → admission.
    fn authorize(&self, request: &RequestBody) -> bool {
        self.rt
            .block_on(
                self.callout
                    .authorizer()
                    .authorize(request, unix_now(), &Deadline::none()),
            )
            .is_ok()
    }

    fn decide_cached(&self, payload: &[u8]) -> Verdict {
        self.rt
            .block_on(
                self.cached
                    .decide(payload, None, usize::MAX, Arrival::now()),
            )
            .verdict
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

fn split_signed(token: &str) -> (&str, &str) {
    token.rsplit_once('.').unwrap()
}

fn main() {
    let mut s = setup();
    // One request is replayed for minutes: keep it valid that long, so every
    // measured decision is the allow checked below, not an expiry refusal.
    s.server.validity_secs = 86_400;
    let s = s;
    let now = unix_now();
    let plain = s.server.request(&s.rs_token, now);
    let plain_es = s.server.request(&s.es_token, now);
    let (sealed, server_xkey) = s.server.sealed_request(&s.rs_token, now, &s.callout_xkey);
    for (payload, header) in [(&plain, None), (&sealed, Some(server_xkey.as_str()))] {
        assert!(
            matches!(s.decide(payload, header), Verdict::Allowed { .. }),
            "the benchmark's decision must be an allow"
        );
    }

    let verified =
        decode_request(&plain, None, None, &s.server.callout_issuer, now as i64).unwrap();
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
    let ours = nats_oidc_callout::nats::OurXkey::new(s.callout_xkey.clone()).unwrap();
    let from_server = ours.server(&s.server.xkey.public_key()).unwrap();
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
        s.server
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

    if std::env::var_os("DECISION_QUICK").is_none() {
        let mut c = Criterion::default().configure_from_args();
        let mut g = c.benchmark_group("decision");
        g.bench_function("rs256_token", |b| b.iter(|| s.decide(&plain, None)));
        g.bench_function("es256_token", |b| b.iter(|| s.decide(&plain_es, None)));
        g.bench_function("rs256_token_xkey", |b| {
            b.iter(|| s.decide(&sealed, Some(&server_xkey)))
        });
        g.bench_function("rs256_token_cached", |b| b.iter(|| s.decide_cached(&plain)));
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
        black_box(s.decide_cached(&plain));
    });
    let d_authorize = median(|| {
        black_box(s.authorize(body));
    });
    for verdict in [
        s.decide(&plain, None),
        s.decide(&plain_es, None),
        s.decide(&sealed, Some(&server_xkey)),
        s.decide_cached(&plain),
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
