//! Raw connect password → bearer-token verdict.
//!
//! Runs `TokenVerifier::verify` against the committed JWKS, at the fixed time
//! `NOW`, with no network (an unknown kid's one refetch goes to a closed
//! loopback port).
//!
//! Asserts, besides "never panics":
//! * an accepted token is compact, within max_token_bytes, carries no header
//!   key or extension, names an allowed algorithm, and its verified claims
//!   have the configured issuer, one of the configured audiences and an
//!   expiry after `NOW`;
//! * every refusal has a reason code, and its message stays short (header
//!   values an attacker sends before any signature check are clipped).
#![no_main]

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use libfuzzer_sys::fuzz_target;
use nats_oidc_callout::config::parse_algorithm;
use nats_oidc_callout_fuzz::{fixture, NOW};
use serde_json::{Map, Value};

/// Longer than any reason the verifier gives for a forged token.
const MAX_REASON_BYTES: usize = 1024;

fuzz_target!(|data: &[u8]| {
    let Ok(token) = std::str::from_utf8(data) else {
        return;
    };
    let f = fixture();
    match f.runtime.block_on(f.verifier.verify(token, NOW)) {
        Ok(verified) => accepted(token, &verified.claims, verified.exp),
        Err(e) => {
            assert!(!e.code().is_empty());
            let reason = e.to_string();
            assert!(
                reason.len() <= MAX_REASON_BYTES,
                "a refusal reason of {} bytes: {reason}",
                reason.len()
            );
        }
    }
});

fn accepted(token: &str, claims: &Map<String, Value>, exp: u64) {
    let f = fixture();
    let oidc = &f.config.oidc[0];
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
