//! Writes the fuzzing JWKS and the seed corpus from the committed test keys.
//!
//!     cd fuzz && cargo run --example gen_corpus
//!
//! Output, relative to the fuzz crate:
//! * `keys/jwks.json`: the public keys of `keys/*.pem`;
//! * `corpus/token/*`: bearer tokens, valid ones and near-misses;
//! * `corpus/auth_request/*`: a mode byte, then an authorization request
//!   (signed by the fixed server nkey; sealed to the callout xkey when the
//!   mode says so), carrying the seed tokens as the connect password;
//! * `corpus/config/*`: config files, valid and invalid.
//!
//! `keys/jwks.json` is compiled into the targets and this generator, so after
//! changing a key run the generator twice: once to write the JWKS, once more
//! to sign with a build that knows it.

use std::path::{Path, PathBuf};

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jsonwebtoken::jwk::{Jwk, JwkSet, KeyAlgorithm, PublicKeyUse};
use jsonwebtoken::{Algorithm, EncodingKey};
use nats_oidc_callout_fuzz as fx;
use serde_json::{json, Value};

fn main() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    write_jwks(&root);
    let tokens = tokens();
    let dir = root.join("corpus/token");
    for (name, token) in &tokens {
        write(&dir, name, token.as_bytes());
    }
    let dir = root.join("corpus/auth_request");
    for (name, bytes) in requests(&tokens) {
        write(&dir, &name, &bytes);
    }
    let dir = root.join("corpus/config");
    for (name, text) in configs(&root) {
        write(&dir, &name, text.as_bytes());
    }
}

fn write(dir: &Path, name: &str, bytes: &[u8]) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(dir.join(name), bytes).unwrap();
}

// ---- keys ------------------------------------------------------------------

fn rsa() -> EncodingKey {
    EncodingKey::from_rsa_pem(fx::RSA_PEM).unwrap()
}

fn ec() -> EncodingKey {
    EncodingKey::from_ec_pem(fx::EC_PEM).unwrap()
}

fn ed() -> EncodingKey {
    EncodingKey::from_ed_pem(fx::ED25519_PEM).unwrap()
}

fn write_jwks(root: &Path) {
    // RSA without a declared alg, so that RS* and PS* both verify with it.
    let mut rsa_jwk = Jwk::from_encoding_key(&rsa(), Algorithm::RS256).unwrap();
    rsa_jwk.common.key_algorithm = None;
    rsa_jwk.common.key_id = Some(fx::RSA_KID.into());
    rsa_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let mut ec_jwk = Jwk::from_encoding_key(&ec(), Algorithm::ES256).unwrap();
    ec_jwk.common.key_algorithm = Some(KeyAlgorithm::ES256);
    ec_jwk.common.key_id = Some(fx::EC_KID.into());
    ec_jwk.common.public_key_use = Some(PublicKeyUse::Signature);
    let mut ed_jwk = Jwk::from_encoding_key(&ed(), Algorithm::EdDSA).unwrap();
    ed_jwk.common.key_algorithm = Some(KeyAlgorithm::EdDSA);
    let set = JwkSet {
        keys: vec![rsa_jwk, ec_jwk, ed_jwk],
    };
    let mut text = serde_json::to_string_pretty(&set).unwrap();
    text.push('\n');
    std::fs::write(root.join("keys/jwks.json"), text).unwrap();
}

// ---- bearer tokens -----------------------------------------------------------

const EXP: u64 = 4_000_000_000;
const IAT: u64 = 1_700_000_000;

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

/// A compact JWS over exactly this header and these claims.
fn sign(header: &Value, claims: &Value, key: &EncodingKey, alg: Algorithm) -> String {
    let input = format!(
        "{}.{}",
        b64(&serde_json::to_vec(header).unwrap()),
        b64(&serde_json::to_vec(claims).unwrap())
    );
    let signature = jsonwebtoken::crypto::sign(input.as_bytes(), key, alg).unwrap();
    format!("{input}.{signature}")
}

fn claims() -> Value {
    json!({
        "iss": fx::OIDC_ISSUER,
        "aud": fx::AUDIENCE,
        "sub": "0b6f3c52-7d0e-4c3f-9a59-2d1f6c0f9e11",
        "preferred_username": "alice",
        "azp": "nats-cli",
        "scope": "openid profile",
        "exp": EXP,
        "iat": IAT,
        "nbf": IAT,
        "realm_access": {"roles": ["reader", "offline_access"]}
    })
}

fn with(mut v: Value, changes: &[(&str, Value)]) -> Value {
    for (k, x) in changes {
        if x.is_null() {
            v.as_object_mut().unwrap().remove(*k);
        } else {
            v[*k] = x.clone();
        }
    }
    v
}

fn rs(kid: &str) -> Value {
    json!({"alg": "RS256", "typ": "at+jwt", "kid": kid})
}

fn tokens() -> Vec<(String, String)> {
    let rsa = rsa();
    let ec = ec();
    let ed = ed();
    let c = claims();
    let mut out: Vec<(&str, String)> = vec![
        (
            "valid-rs256-at+jwt",
            sign(&rs(fx::RSA_KID), &c, &rsa, Algorithm::RS256),
        ),
        (
            "valid-member-rooms",
            sign(
                &rs(fx::RSA_KID),
                &with(
                    c.clone(),
                    &[
                        ("realm_access", json!({"roles": ["member"]})),
                        ("rooms", json!(["r1", "r2", "r3", "a.b", "*"])),
                    ],
                ),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "valid-ps256",
            sign(
                &json!({"alg": "PS256", "typ": "JWT", "kid": fx::RSA_KID}),
                &with(c.clone(), &[("realm_access", json!({"roles": ["admin"]}))]),
                &rsa,
                Algorithm::PS256,
            ),
        ),
        (
            "valid-es256",
            sign(
                &json!({"alg": "ES256", "typ": "JWT", "kid": fx::EC_KID}),
                &with(
                    c.clone(),
                    &[
                        ("aud", json!(["account", fx::AUDIENCE])),
                        ("realm_access", json!({"roles": ["admin", "reader"]})),
                    ],
                ),
                &ec,
                Algorithm::ES256,
            ),
        ),
        (
            "valid-eddsa-no-kid",
            sign(
                &json!({"alg": "EdDSA", "typ": "application/at+jwt"}),
                &with(c.clone(), &[("realm_access", json!({"roles": "ops"}))]),
                &ed,
                Algorithm::EdDSA,
            ),
        ),
        (
            "valid-rs256-no-kid",
            sign(&json!({"alg": "RS256"}), &c, &rsa, Algorithm::RS256),
        ),
        (
            "valid-worker-grants",
            sign(
                &rs(fx::RSA_KID),
                &with(
                    c.clone(),
                    &[("realm_access", json!({"roles": ["worker", "reader"]}))],
                ),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "unmapped-role",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("realm_access", json!({"roles": ["guest"]}))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "no-username",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("preferred_username", Value::Null)]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "expired",
            sign(
                &rs(fx::RSA_KID),
                &with(
                    c.clone(),
                    &[
                        ("exp", json!(1_600_000_000u64)),
                        ("iat", json!(1_500_000_000u64)),
                        ("nbf", Value::Null),
                    ],
                ),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "not-yet-valid",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("nbf", json!(3_000_000_000u64))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "issued-in-future",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("iat", json!(3_000_000_000u64))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "exp-float",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("exp", json!(3.9e9))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "sub-number",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("sub", json!(7))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "exp-string",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("exp", json!("4000000000"))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "wrong-aud",
            sign(
                &rs(fx::RSA_KID),
                &with(c.clone(), &[("aud", json!("account"))]),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "wrong-iss",
            sign(
                &rs(fx::RSA_KID),
                &with(
                    c.clone(),
                    &[("iss", json!("http://127.0.0.1:9/realms/other"))],
                ),
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "unknown-kid",
            sign(&rs("rotated-2"), &c, &rsa, Algorithm::RS256),
        ),
        (
            "key-alg-mismatch",
            sign(
                &json!({"alg": "ES256", "kid": fx::RSA_KID}),
                &c,
                &ec,
                Algorithm::ES256,
            ),
        ),
        (
            "jku-header",
            sign(
                &json!({"alg": "RS256", "kid": fx::RSA_KID, "jku": "https://attacker.invalid/jwks"}),
                &c,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "crit-header",
            sign(
                &json!({"alg": "RS256", "kid": fx::RSA_KID, "crit": ["exp"], "exp": 1}),
                &c,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "typ-jose",
            sign(
                &json!({"alg": "RS256", "kid": fx::RSA_KID, "typ": "JOSE"}),
                &c,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "cty-jwt",
            sign(
                &json!({"alg": "RS256", "kid": fx::RSA_KID, "cty": "JWT"}),
                &c,
                &rsa,
                Algorithm::RS256,
            ),
        ),
        (
            "hs256",
            sign(
                &json!({"alg": "HS256", "typ": "JWT", "kid": fx::RSA_KID}),
                &c,
                &EncodingKey::from_secret(b"not-a-published-key"),
                Algorithm::HS256,
            ),
        ),
    ];
    let header_none = b64(br#"{"alg":"none","typ":"JWT"}"#);
    let payload = b64(&serde_json::to_vec(&c).unwrap());
    out.push(("alg-none", format!("{header_none}.{payload}.")));
    out.push(("alg-none-signed", format!("{header_none}.{payload}.AAAA")));
    let valid = out[0].1.clone();
    let parts: Vec<&str> = valid.split('.').collect();
    out.push((
        "json-serialization",
        json!({"protected": parts[0], "payload": parts[1], "signature": parts[2]}).to_string(),
    ));
    out.push((
        "jwe-shaped",
        format!(
            "{}.AAAA.BBBB.CCCC.DDDD",
            b64(br#"{"alg":"RSA-OAEP","enc":"A256GCM"}"#)
        ),
    ));
    out.push((
        "tampered-payload",
        format!(
            "{}.{}.{}",
            parts[0],
            b64(&serde_json::to_vec(&with(
                c.clone(),
                &[("realm_access", json!({"roles": ["admin"]}))]
            ))
            .unwrap()),
            parts[2]
        ),
    ));
    out.into_iter().map(|(n, t)| (n.to_string(), t)).collect()
}

// ---- authorization requests -------------------------------------------------

/// Mode byte bits, as `fuzz_targets/auth_request.rs` reads them.
const SEALED: u8 = 1;
const SMALL_MAX_PAYLOAD: u8 = 2;
const WRAP_TOKEN: u8 = 8;
const NAMED: u8 = 16;

use fx::{request_claims, sealed, server_signed};

fn framed(mode: u8, body: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(body);
    v
}

fn requests(tokens: &[(String, String)]) -> Vec<(String, Vec<u8>)> {
    let token = |name: &str| {
        tokens
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.clone())
            .unwrap()
    };
    let mut out = Vec::new();
    for name in [
        "valid-rs256-at+jwt",
        "valid-es256",
        "valid-eddsa-no-kid",
        "valid-ps256",
        "unmapped-role",
        "expired",
        "alg-none",
    ] {
        let jwt = server_signed(&request_claims(json!({"pass": token(name), "protocol": 1})));
        out.push((format!("plain-{name}"), framed(0, &jwt)));
        out.push((format!("sealed-{name}"), framed(SEALED, &sealed(&jwt))));
    }
    // The token alone: the target wraps it in a signed request.
    for name in [
        "valid-rs256-at+jwt",
        "valid-es256",
        "unmapped-role",
        "no-username",
    ] {
        out.push((
            format!("wrap-{name}"),
            framed(WRAP_TOKEN, token(name).as_bytes()),
        ));
    }
    // A connect name asking for scopes, then a member token entitled to some.
    for (seed, name) in [
        ("named-scopes", "chat-app scope=r1,r3,zz"),
        ("named-no-scope", "chat-app"),
        ("named-hostile-scope", "scope=r1,a.b,*"),
    ] {
        let mut body = name.as_bytes().to_vec();
        body.push(0);
        body.extend_from_slice(token("valid-member-rooms").as_bytes());
        out.push((seed.into(), framed(WRAP_TOKEN | NAMED, &body)));
    }
    out.push((
        "wrap-sealed-valid-eddsa-no-kid".into(),
        framed(WRAP_TOKEN | SEALED, token("valid-eddsa-no-kid").as_bytes()),
    ));
    let admin = server_signed(&request_claims(
        json!({"pass": token("valid-ps256"), "protocol": 1}),
    ));
    out.push((
        "sealed-small-max-payload".into(),
        framed(SEALED | SMALL_MAX_PAYLOAD, &sealed(&admin)),
    ));
    let by_auth_token = server_signed(&request_claims(
        json!({"pass": "", "auth_token": token("valid-rs256-at+jwt"), "name": "cli"}),
    ));
    out.push(("plain-auth-token".into(), framed(0, &by_auth_token)));
    let no_token = server_signed(&request_claims(json!({"user": "alice"})));
    out.push(("plain-no-token".into(), framed(0, &no_token)));
    let mut wrong_issuer = request_claims(json!({"pass": token("valid-rs256-at+jwt")}));
    wrong_issuer["sub"] = json!(fx::SERVER_PUBLIC);
    out.push((
        "plain-wrong-callout-issuer".into(),
        framed(0, &server_signed(&wrong_issuer)),
    ));
    let mut expired = request_claims(json!({"pass": token("valid-rs256-at+jwt")}));
    expired["exp"] = json!(IAT);
    out.push((
        "plain-expired-request".into(),
        framed(0, &server_signed(&expired)),
    ));
    let mut unsigned = String::from_utf8(server_signed(&request_claims(
        json!({"pass": token("valid-rs256-at+jwt")}),
    )))
    .unwrap();
    unsigned.truncate(unsigned.rfind('.').unwrap() + 1);
    unsigned.push_str("AAAA");
    out.push(("plain-bad-signature".into(), framed(0, unsigned.as_bytes())));
    out
}

// ---- configs -----------------------------------------------------------------

/// The minimal config of tests/config.rs, with an inline seed instead of a file.
fn good() -> String {
    format!(
        r#"
[nats]
url = "nats://127.0.0.1:4222"
user = "auth"
password = "authpw"

[callout]
issuer_seed = "{}"
account = "APP"

[oidc]
issuer = "https://idp.example.com/realms/demo"
audience = "nats"
roles_claim = "realm_access.roles"

[roles.reader]
sub.allow = ["orders.>"]
"#,
        fx::ISSUER_SEED
    )
}

fn configs(root: &Path) -> Vec<(String, String)> {
    let example = std::fs::read_to_string(root.join("../config.example.toml")).unwrap();
    let g = good();
    let seed_line = format!("issuer_seed = \"{}\"", fx::ISSUER_SEED);
    vec![
        ("example.toml".into(), example.clone()),
        (
            "example-inline-seed.toml".into(),
            example.replace(
                "issuer_seed_file = \"/etc/nats-oidc-callout/issuer.nk\"",
                &seed_line,
            ),
        ),
        ("fuzz.toml".into(), fx::config_text()),
        ("good.toml".into(), g.clone()),
        (
            "unknown-key.toml".into(),
            g.replace("account = \"APP\"", "account = \"APP\"\naccounts = \"typo\""),
        ),
        ("bad-subject.toml".into(), g.replace("orders.>", "orders.>.x")),
        (
            "bad-duration.toml".into(),
            g.replace("roles_claim", "leeway = \"soon\"\nroles_claim"),
        ),
        (
            "seed-file.toml".into(),
            g.replace(&seed_line, "issuer_seed_file = \"issuer.nk\""),
        ),
        (
            "hmac.toml".into(),
            g.replace("roles_claim", "algorithms = [\"RS256\", \"HS256\"]\nroles_claim"),
        ),
        (
            "http-issuer.toml".into(),
            g.replace("https://idp.example.com", "http://idp.example.com"),
        ),
        (
            "loopback-issuer.toml".into(),
            g.replace("https://idp.example.com", "http://127.0.0.1:8080"),
        ),
        (
            "no-roles.toml".into(),
            g.replace("[roles.reader]\nsub.allow = [\"orders.>\"]", ""),
        ),
        (
            "two-auth-methods.toml".into(),
            g.replace("password = \"authpw\"", "password = \"authpw\"\ntoken = \"t\""),
        ),
        (
            "empty-audience.toml".into(),
            g.replace("audience = \"nats\"", "audience = []"),
        ),
        (
            "unquoted-seed.toml".into(),
            format!("[callout]\nissuer_seed = {}\n", fx::ISSUER_SEED),
        ),
        (
            "bare-seed.toml".into(),
            format!("[callout]\n{}\n", fx::ISSUER_SEED),
        ),
        (
            "user-seed.toml".into(),
            g.replace(
                fx::ISSUER_SEED,
                "SUAJXUZ6TXPSBREBKREX3FN76YNFWSVR2LZKWQDTOXR5BYHNWPQALUN5A4",
            ),
        ),
        (
            "corrupt-seed.toml".into(),
            g.replace(fx::ISSUER_SEED, &corrupt(fx::ISSUER_SEED)),
        ),
        (
            "unquoted-token.toml".into(),
            "[nats]\ntoken = s3cr3t-token-value\n".into(),
        ),
        (
            "password-number.toml".into(),
            "[nats]\npassword = 98765432123\n".into(),
        ),
        (
            "zero-cooldown.toml".into(),
            g.replace("roles_claim", "jwks_refetch_cooldown = \"0s\"\nroles_claim"),
        ),
        (
            "long-ttl.toml".into(),
            g.replace(
                "account = \"APP\"",
                "account = \"APP\"\nmax_user_ttl = \"100000d\"",
            ),
        ),
        (
            "xkey-and-pointer.toml".into(),
            g.replace(
                "account = \"APP\"",
                &format!(
                    "account = \"APP\"\nxkey_seed = \"{}\"\nmax_token_bytes = 2048",
                    fx::CALLOUT_XKEY_SEED
                ),
            )
            .replace(
                "roles_claim = \"realm_access.roles\"",
                "roles_claim = \"/https:~1~1example.com~1roles\"\nuser_claim = \"email\"\nemail_verified = \"if_present\"\nalgorithms = [\"ES256\", \"EdDSA\"]\nhttp_timeout = \"60s\"\ndiscovery_url = \"https://idp.example.com/d\"",
            ),
        ),
        (
            "role-grants.toml".into(),
            g.replace(
                "sub.allow = [\"orders.>\"]",
                r#"sub.allow = ["orders.>", "_INBOX.>"]
resp = { max = 2, ttl = "1m" }
max_user_ttl = "15m"
limits = { subs = 100, payload = "64KiB", data = 10485760 }
jetstream.consume = ["ORDERS/worker"]
jetstream.read = ["ORDERS"]
jetstream.replay = ["ORDERS"]
jetstream.manage = ["SCRATCH"]
kv.read = ["config", "profiles/{{sub}}.>"]
kv.write = ["profiles/{{name}}.*"]"#,
            ),
        ),
        (
            "role-connection.toml".into(),
            g.replace(
                "sub.allow = [\"orders.>\"]",
                r#"sub.allow = ["orders.>"]
[roles.reader.connection]
types = ["WEBSOCKET", "LEAFNODE", "LEAFNODE_WS"]
sources = ["10.0.0.0/8", "::1/128", "192.168.1.7"]
times = [{ start = "22:00:00", end = "06:00:00" }]
time_zone = "America/New_York""#,
            ),
        ),
        (
            "role-bad-grants.toml".into(),
            g.replace(
                "sub.allow = [\"orders.>\"]",
                r#"sub.allow = ["orders.>"]
resp = { max = 0, ttl = "25h" }
limits = { payload = "3GiB" }
connection = { sources = ["10.0.0.1/8"], times = [{ start = "8", end = "8" }], time_zone = "Mars/Base" }
jetstream = { consume = ["ORDERS"], manage = ["123"] }
kv = { write = ["a b/c"], read = ["x/{{nope}}"] }"#,
            ),
        ),
        (
            "http-listen.toml".into(),
            format!("{g}\n[http]\nlisten = \"127.0.0.1:8080\"\n"),
        ),
    ]
}

/// The seed with one character changed, so its checksum fails.
fn corrupt(seed: &str) -> String {
    let mut b = seed.as_bytes().to_vec();
    b[20] = if b[20] == b'A' { b'B' } else { b'A' };
    String::from_utf8(b).unwrap()
}
