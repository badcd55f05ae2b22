//! Raw connect password → bearer-token verdict, and → `authorize`'s
//! admission.
//!
//! Runs `TokenVerifier::verify` against the committed JWKS, at the fixed time
//! `NOW`, with no network (an unknown kid's one refetch goes to a closed
//! loopback port); then `Authorizer::authorize` on a request carrying the
//! same input as the connect password.
//!
//! Asserts, besides "never panics":
//! * an accepted token is compact, within max_token_bytes, carries no header
//!   key or extension, names an allowed algorithm, and its verified claims
//!   have the configured issuer, one of the configured audiences and an
//!   expiry after `NOW`;
//! * every refusal has a reason code, and its message stays short (header
//!   values an attacker sends before any signature check are clipped);
//! * `authorize` admits only what the verifier accepted, and an admission
//!   leaves no direction unrestricted, keeps `$SYS` denied unless an allow
//!   entry names it, lands in the configured account and expires no later
//!   than the token and `max_user_ttl`.
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use nats_oidc_callout::nats::Permission;
use nats_oidc_callout::nats::{ConnectOpts, RequestBody};
use nats_oidc_callout::oidc::parse_algorithm;
use nats_oidc_callout::policy::names_reserved;
use nats_oidc_callout::Admission;
use nats_oidc_callout::Deadline;
use nats_oidc_callout_fuzz::{fixture, ACCOUNT, NOW};
use serde_json::{Map, Value};

/// Longer than any reason the verifier gives for a forged token.
const MAX_REASON_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    let request = RequestBody {
        connect_opts: ConnectOpts {
            pass: Some(token.to_string()),
            ..ConnectOpts::default()
        },
        ..RequestBody::default()
    };
    let decided = f.block_on(
        f.callout
            .authorizer()
            .authorize(&request, NOW, &Deadline::none()),
    );
    match f.block_on(f.verifier.verify(token, NOW, &Deadline::none())) {
        Ok(verified) => {
            accepted(token, &verified.claims, verified.exp);
            if let Ok(admission) = decided {
                admitted(&admission, verified.exp);
            }
        }
        Err(e) => {
            assert!(!e.code().as_str().is_empty());
            let reason = e.to_string();
            assert!(
                reason.len() <= MAX_REASON_BYTES,
                "a refusal reason of {} bytes: {reason}",
                reason.len()
            );
            let refusal = decided.expect_err("authorize admitted a token the verifier refused");
            assert!(refusal.reason.len() <= MAX_REASON_BYTES);
        }
    }
});

fn admitted(a: &Admission, exp: u64) {
    let ttl = fixture().config.callout.max_user_ttl.as_secs();
    assert_eq!(a.account, ACCOUNT);
    assert!(a.expires <= exp && a.expires <= NOW + ttl, "{a:?}");
    assert!(!a.roles.is_empty(), "admitted with no mapped role: {a:?}");
    for p in [&a.publish, &a.subscribe] {
        contained(p, a);
    }
}

/// Never unrestricted, and `$SYS` only where an allow entry names it.
fn contained(p: &Permission, a: &Admission) {
    assert!(
        !(p.allow.is_empty() && p.deny.is_empty()),
        "an unrestricted direction: {a:?}"
    );
    if !p.allow.is_empty() && !p.allow.iter().any(|s| names_reserved(s)) {
        assert!(
            p.deny.iter().any(|d| d == "$SYS.>"),
            "$SYS reachable: {a:?}"
        );
    }
}

fn accepted(token: &str, claims: &Map<String, Value>, exp: u64) {
    let f = fixture();
    let oidc = &f.config.oidc[0].settings;
    assert!(token.len() <= f.config.callout.max_token_bytes);
    let parts: Vec<&str> = token.split('.').collect();
    assert_eq!(parts.len(), 3, "accepted a token that is not compact JWS");
    assert!(!parts[2].is_empty(), "accepted a token without a signature");
    let header: Map<String, Value> =
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(parts[0]).expect("header base64"))
            .expect("header JSON object");
    for forbidden in ["jku", "x5u", "jwk", "x5c", "crit", "cty", "enc", "zip"] {
        assert!(
            !header.contains_key(forbidden),
            "accepted a token whose header has {forbidden:?}"
        );
    }
    let alg = header
        .get("alg")
        .and_then(Value::as_str)
        .expect("accepted a token without alg");
    let alg = parse_algorithm(alg).expect("accepted a token with an unsupported alg");
    assert!(oidc.algorithms.contains(&alg));
    assert_eq!(
        claims.get("iss").and_then(Value::as_str),
        Some(oidc.issuer.as_str())
    );
    let audiences: Vec<&str> = match claims.get("aud") {
        Some(Value::String(a)) => vec![a.as_str()],
        Some(Value::Array(a)) => a.iter().filter_map(Value::as_str).collect(),
        other => panic!("accepted a token with aud {other:?}"),
    };
    assert!(audiences
        .iter()
        .any(|a| oidc.audience.iter().any(|c| c == a)));
    assert!(exp > NOW, "accepted a token that expired at {exp}");
}
