//! Raw authorization request message → decision, end to end:
//! `Callout::decide` (request → bearer token → claims → roles →
//! permissions → user JWT → signed, possibly sealed, response).
//!
//! The first input byte is the mode, the rest is the message payload:
//! * bit 0: the message came with the `Nats-Server-Xkey` header naming the
//!   fixed server xkey (the payload is then opened with the callout's xkey);
//! * bit 1: the server's max_payload is 1024 bytes instead of 1 MiB;
//! * bit 2: the header names another key (bit 0 set) or is not a key at all;
//! * bit 3: the rest is not a message but a bearer token, which the target
//!   wraps in a request signed by the fixed server nkey (sealed to the
//!   callout xkey when bit 0 is set). A mutated request no longer verifies,
//!   so this is how mutated tokens reach the whole decision;
//! * bit 4 (with bit 3): the rest is a connect name, a zero byte, then the
//!   token: the name carries the scopes asked for (`scope=a,b`).
//!
//! Asserts, besides "never panics":
//! * a request is dropped (no answer) only when its time was up (its budget
//!   by `exp` - `iat` at most a second);
//! * otherwise `decide` answers exactly when `decode_request` verified the request
//!   (a request whose signature does not verify is never answered, since the
//!   answer would be signed by the callout issuer);
//! * an answer is a response JWT signed by the callout issuer, addressed to the
//!   request's user nkey and server, sealed to the server's xkey exactly when
//!   the request was sealed, and no larger than max_payload when it allows;
//! * Allowed ⇔ the response carries a user JWT and no error; a refusal
//!   carries an error and no user JWT;
//! * the user JWT is signed by the callout issuer for the request's user nkey
//!   in the configured account, expires within max_user_ttl, and neither
//!   direction is left unrestricted nor reaches $SYS unless a role names it;
//! * a scoped subject (`chat.<scope>...`) is allowed only for a scope the
//!   connect name asked for, and the scoped deny covers every scope.
#![no_main]

use libfuzzer_sys::fuzz_target;
use nats_oidc_callout::nats::decode_verified;
use nats_oidc_callout::nats::{decode_request, open_request};
use nats_oidc_callout::policy::names_reserved;
use nats_oidc_callout::unix_now;
use nats_oidc_callout::{Arrival, Verdict};
use nats_oidc_callout_fuzz::{
    fixture, request_claims, sealed, server_signed, Permission, Response, User, ACCOUNT,
    CALLOUT_XKEY_PUBLIC, ISSUER_PUBLIC, SERVER_XKEY_PUBLIC, SERVER_XKEY_SEED,
};
use serde_json::json;

const SEALED: u8 = 1;
const SMALL_MAX_PAYLOAD: u8 = 2;
const ODD_HEADER: u8 = 4;
const WRAP_TOKEN: u8 = 8;
const NAMED: u8 = 16;

fuzz_target!(|data: &[u8]| {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let wrapped;
    let mut asked: Vec<String> = Vec::new();
    let payload = if mode & WRAP_TOKEN != 0 {
        let Ok(rest) = std::str::from_utf8(rest) else {
            return;
        };
        let opts = match rest.split_once('\0') {
            Some((name, token)) if mode & NAMED != 0 => {
                asked = scopes_asked(name);
                json!({"pass": token, "name": name, "protocol": 1})
            }
            _ => json!({"pass": rest, "protocol": 1}),
        };
        let jwt = server_signed(&request_claims(opts));
        wrapped = if mode & SEALED != 0 {
            sealed(&jwt)
        } else {
            jwt
        };
        &wrapped[..]
    } else {
        rest
    };
    let header = match (mode & SEALED != 0, mode & ODD_HEADER != 0) {
        (false, false) => None,
        (true, false) => Some(SERVER_XKEY_PUBLIC),
        (true, true) => Some(CALLOUT_XKEY_PUBLIC),
        (false, true) => Some("not-a-curve-key"),
    };
    let max_payload = if mode & SMALL_MAX_PAYLOAD != 0 {
        1024
    } else {
        1024 * 1024
    };
    let f = fixture();
    let decision = f.block_on(
        f.callout
            .decide(payload, header, max_payload, Arrival::now()),
    );

    let xkey = f.config.callout.xkey.as_deref();
    // Dropped: nothing answered, and only for a request whose time was up.
    if let Verdict::Dropped { .. } = decision.verdict {
        assert!(decision.body.is_empty(), "answered a dropped request");
        let budget = open_request(payload, header, xkey)
            .map(|o| o.budget(unix_now() as i64))
            .unwrap_or_default();
        assert!(
            budget <= std::time::Duration::from_secs(1),
            "dropped a request with {budget:?} left"
        );
        return;
    }
    // The same request, decoded on its own: was it verified, and from whom?
    let (addressee, sealed) =
        match decode_request(payload, header, xkey, ISSUER_PUBLIC, unix_now() as i64) {
            Ok(r) => (
                Some((r.claims.nats.user_nkey, r.claims.nats.server_id.id)),
                r.server_xkey.is_some(),
            ),
            Err(failure) => (
                failure.addressee.map(|a| (a.user_nkey, a.server_id)),
                failure.server_xkey.is_some(),
            ),
        };
    let Some((user_nkey, server_id)) = addressee else {
        assert!(
            decision.body.is_empty(),
            "answered a request that did not verify: {:?}",
            decision.verdict
        );
        assert!(matches!(decision.verdict, Verdict::Refused { .. }));
        return;
    };
    assert!(
        !decision.body.is_empty(),
        "no answer to a verified request: {:?}",
        decision.verdict
    );
    if let Verdict::Allowed { .. } = decision.verdict {
        assert!(decision.body.len() <= max_payload);
    }

    let jwt = if sealed {
        let server_x = nkeys::XKey::from_seed(SERVER_XKEY_SEED).unwrap();
        let ours = nkeys::XKey::from_public_key(CALLOUT_XKEY_PUBLIC).unwrap();
        server_x
            .open(&decision.body, &ours)
            .expect("the answer to a sealed request opens with the server's xkey")
    } else {
        decision.body.clone()
    };
    let response: Response =
        decode_verified(&jwt, 'A').expect("the answer is a response JWT signed by an account");
    assert_eq!(response.iss, ISSUER_PUBLIC);
    assert_eq!(response.sub, user_nkey);
    assert_eq!(response.aud, server_id);
    assert_eq!(response.nats.kind, "authorization_response");
    match &decision.verdict {
        Verdict::Allowed { expires, .. } => {
            assert!(response.nats.error.is_none(), "{response:?}");
            let user_jwt = response
                .nats
                .jwt
                .as_deref()
                .expect("an allow carries a user JWT");
            let user: User = decode_verified(user_jwt.as_bytes(), 'A').expect("user JWT");
            assert_eq!(user.iss, ISSUER_PUBLIC);
            assert_eq!(user.sub, user_nkey);
            assert_eq!(user.aud, ACCOUNT);
            assert_eq!(user.nats.kind, "user");
            assert_eq!(user.exp, *expires);
            assert!(user.exp > user.iat);
            assert!(user.exp <= user.iat + f.config.callout.max_user_ttl.as_secs());
            for (name, p) in [("pub", &user.nats.publish), ("sub", &user.nats.subscribe)] {
                bounded(name, p);
                for subject in p.allow.iter().filter(|s| s.starts_with("chat.")) {
                    let scope = subject.split('.').nth(1).unwrap_or_default();
                    assert!(
                        asked.iter().any(|a| a == scope),
                        "{name}: {subject} for a scope not asked for ({asked:?})"
                    );
                }
            }
            if user
                .nats
                .subscribe
                .allow
                .iter()
                .any(|s| s.starts_with("chat."))
            {
                assert!(
                    user.nats.subscribe.deny.iter().any(|d| d == "chat.*.admin"),
                    "the scoped deny covers every scope: {:?}",
                    user.nats.subscribe
                );
            }
        }
        Verdict::Dropped { .. } => unreachable!("handled above"),
        Verdict::Refused { code, reason } => {
            assert!(!code.as_str().is_empty() && !reason.is_empty());
            assert!(response.nats.jwt.is_none(), "a refusal carries a user JWT");
            assert!(response.nats.error.is_some(), "a refusal without a reason");
        }
    }
});

/// The scopes a connect name asks for, read the simple way the README
/// documents (independently of the service's parser).
fn scopes_asked(name: &str) -> Vec<String> {
    name.split_whitespace()
        .filter_map(|w| w.strip_prefix("scope="))
        .flat_map(|list| list.split(','))
        .map(str::to_string)
        .collect()
}

/// A direction is never unrestricted (nats-server reads one with neither list
/// as "everything"), and reaches $SYS only when an allow entry names it.
fn bounded(name: &str, p: &Permission) {
    if p.allow.is_empty() {
        assert!(p.deny.iter().any(|d| d == ">"), "{name}: {p:?}");
    } else if !p.allow.iter().any(|a| names_reserved(a)) {
        assert!(p.deny.iter().any(|d| d == "$SYS.>"), "{name}: {p:?}");
    }
}
