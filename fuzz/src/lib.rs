//! Fixed keys, configuration and set-up shared by the fuzz targets and the
//! seed-corpus generator (`examples/gen_corpus.rs`).
//!
//! Every key here is a test value made for fuzzing and committed on purpose:
//! none of them is used anywhere else. The seed corpus is signed with them, so
//! changing any of them means regenerating the corpus.

use std::sync::OnceLock;

use nats_oidc_callout::dev::SAMPLE_ROLES;
use nats_oidc_callout::nats::Issued;
pub use nats_oidc_callout_test_support::Fixture;
use serde::Deserialize;

/// The time the token target verifies at. Seed tokens are valid at this time
/// and at any real time before 2096 (exp 4_000_000_000), so the same tokens
/// also serve the `auth_request` target, which runs on the wall clock.
pub const NOW: u64 = 1_900_000_000;

/// The callout's account key (signs user JWTs and responses).
pub const ISSUER_SEED: &str = "SAAIGXHD2HDNEEF4FCPZR67KNRGEWFICGOQNHBB3TFKF66MXJ5XQU4VSN4";
pub const ISSUER_PUBLIC: &str = "AD2VUKXSSPHF2BEK63WNBCXUZEV2HEGIGRRTW27NHPBGOVVII6SLTEBO";
/// The callout's curve key (callout.xkey_seed).
pub const CALLOUT_XKEY_SEED: &str = "SXAFOCA3LRPTQ2VYPWP3GTG3ZFZWYYQK5ZHO6IK27PK2BGXZ7A4LPKDULY";
pub const CALLOUT_XKEY_PUBLIC: &str = "XADMHNVLOFMUJWZX7NOJLTFOHFEJRUTOEGSQ57VI4TGJAQHE4N4T3Y4G";
/// The nats-server that sends the requests: its nkey and its curve key.
pub const SERVER_SEED: &str = "SNAN7UDMCYN6SFV2IMPTL6UE2NMBROW43M6YBE6D5USDM26R5GCROBXKSE";
pub const SERVER_PUBLIC: &str = "NBHV7TKEPO26V3JZMZ4OQQOFXCY6Q2AZICBRQKODMTO6B4AW4XD7XHKR";
pub const SERVER_XKEY_SEED: &str = "SXAKCRU2BGA6I4PYSH4S4DJZ2XTNSWFRCO7EIYFL66ESVIYRMK7AS65SZA";
pub const SERVER_XKEY_PUBLIC: &str = "XCIKTES5JU4CHXWX6Q2TN4D2FHXYCCZMHI7RPDNEYJJUYQ7BIEAAZGP7";
/// The connecting client's user nkey.
pub const USER_PUBLIC: &str = "UAVCC55MKAH3QW7ZELBPBL7SU7YZZNMF3ELPGFCR3M4HYSKL2OYA56K3";

/// Nothing listens on port 9 of the loopback: a token with an unknown kid
/// makes one refetch that is refused at once, and the 1h cool-down keeps it
/// from being tried again in the same process.
pub const OIDC_ISSUER: &str = "http://127.0.0.1:9/realms/fuzz";
pub const AUDIENCE: &str = "nats";
pub const ACCOUNT: &str = "APP";

/// The issuer's signing keys (PKCS#8 PEM) and their public JWKS.
pub const RSA_PEM: &[u8] = include_bytes!("../keys/rsa-2048.pem");
pub const EC_PEM: &[u8] = include_bytes!("../keys/ec-p256.pem");
pub const ED25519_PEM: &[u8] = include_bytes!("../keys/ed25519.pem");
pub const JWKS: &[u8] = include_bytes!("../keys/jwks.json");
pub const RSA_KID: &str = "fuzz-rsa-1";
pub const EC_KID: &str = "fuzz-ec-1";
// The Ed25519 key is published without a kid, to reach the kid-less paths.

/// The configuration every target runs with.
pub fn config_text() -> String {
    format!(
        r#"[nats]
url = "nats://127.0.0.1:4222"

[callout]
issuer_seed = "{ISSUER_SEED}"
xkey_seed = "{CALLOUT_XKEY_SEED}"
account = "{ACCOUNT}"
max_user_ttl = "1h"

[oidc]
issuer = "{OIDC_ISSUER}"
audience = ["{AUDIENCE}", "nats-other"]
roles_claim = "realm_access.roles"
user_claim = "preferred_username"
jwks_max_age = "1h"
jwks_refetch_cooldown = "1h"
http_timeout = "2s"
scopes_claim = "rooms"
{SAMPLE_ROLES}
[roles.member]
pub.allow = ["chat.{{{{scope}}}}.in", "_INBOX.>"]
sub.allow = ["chat.{{{{scope}}}}.>", "_INBOX.>"]
sub.deny = ["chat.{{{{scope}}}}.admin"]

[roles.ops]
pub.allow = ["$SYS.REQ.SERVER.PING"]
sub.allow = ["_INBOX.>"]

[roles.worker]
sub.allow = ["_INBOX.>"]
resp = {{ max = 2, ttl = "1s" }}
max_user_ttl = "5m"
limits = {{ subs = 10, payload = "1KiB" }}
connection.types = ["STANDARD", "WEBSOCKET", "MQTT", "MQTT_WS"]
connection.sources = ["127.0.0.0/8", "::1/128", "10.0.0.0/8"]
connection.times = [{{ start = "22:00:00", end = "06:00:00" }}, {{ start = "05:00:00", end = "23:00:00" }}]
connection.time_zone = "Europe/Berlin"
jetstream.consume = ["ORDERS/worker"]
jetstream.replay = ["ORDERS"]
kv.read = ["config", "profiles/{{{{sub}}}}.>"]
kv.write = ["profiles/{{{{name}}}}.>"]
"#
    )
}

/// Everything a target needs, built once per process: the shared decision
/// fixture (`nats_oidc_callout_test_support::Fixture`) over the fuzzing
/// config, the committed JWKS installed (no fetch), log lines not kept.
pub fn fixture() -> &'static Fixture {
    static FIXTURE: OnceLock<Fixture> = OnceLock::new();
    FIXTURE.get_or_init(|| Fixture::offline(&config_text(), &[JWKS]).quiet())
}

/// The authorization response as nats-server reads it.
#[derive(Debug, Deserialize)]
pub struct Response {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub nats: ResponseBody,
}

#[derive(Debug, Deserialize)]
pub struct ResponseBody {
    pub jwt: Option<String>,
    pub error: Option<String>,
    #[serde(rename = "type")]
    pub kind: String,
}

impl Issued for Response {
    fn issuer(&self) -> &str {
        &self.iss
    }
}

/// The user JWT the callout issues, as nats-server reads it.
#[derive(Debug, Deserialize)]
pub struct User {
    pub iss: String,
    pub sub: String,
    pub aud: String,
    pub exp: u64,
    pub iat: u64,
    pub nats: UserBody,
}

#[derive(Debug, Deserialize)]
pub struct UserBody {
    #[serde(rename = "pub")]
    pub publish: Permission,
    #[serde(rename = "sub")]
    pub subscribe: Permission,
    #[serde(rename = "type")]
    pub kind: String,
}

#[derive(Debug, Deserialize)]
pub struct Permission {
    #[serde(default)]
    pub allow: Vec<String>,
    #[serde(default)]
    pub deny: Vec<String>,
}

impl Issued for User {
    fn issuer(&self) -> &str {
        &self.iss
    }
}

/// Authorization request claims as nats-server sends them, for the fixed
/// server and user, carrying `connect_opts`.
pub fn request_claims(connect_opts: serde_json::Value) -> serde_json::Value {
    serde_json::json!({
        "iss": SERVER_PUBLIC,
        "sub": ISSUER_PUBLIC,
        "aud": "nats-authorization-request",
        "iat": 1_700_000_000u64,
        "exp": 4_000_000_000i64,
        "jti": "Q3V6ZXZ6Z2F6",
        "nats": {
            "type": "authorization_request",
            "version": 2,
            "server_id": {
                "name": "fuzz-server",
                "host": "127.0.0.1",
                "id": SERVER_PUBLIC,
                "version": "2.11.0",
                "xkey": SERVER_XKEY_PUBLIC
            },
            "user_nkey": USER_PUBLIC,
            "client_info": {"host": "127.0.0.1", "id": 12, "user": "", "kind": "Client", "type": "nats"},
            "connect_opts": connect_opts,
            "client_tls": null,
            "request_nonce": "aBcDeFgHiJ"
        }
    })
}

/// Signs request claims with the fixed server nkey, as nats-server does.
pub fn server_signed(claims: &serde_json::Value) -> Vec<u8> {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    static SERVER: OnceLock<nkeys::KeyPair> = OnceLock::new();
    let server = SERVER.get_or_init(|| nkeys::KeyPair::from_seed(SERVER_SEED).unwrap());
    let mut jwt = URL_SAFE_NO_PAD.encode(br#"{"typ":"JWT","alg":"ed25519-nkey"}"#);
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(serde_json::to_vec(claims).unwrap(), &mut jwt);
    let signature = server.sign(jwt.as_bytes()).unwrap();
    jwt.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut jwt);
    jwt.into_bytes()
}

/// Seals a request from the fixed server xkey to the callout's xkey.
pub fn sealed(jwt: &[u8]) -> Vec<u8> {
    static KEYS: OnceLock<(nkeys::XKey, nkeys::XKey)> = OnceLock::new();
    let (server_x, ours) = KEYS.get_or_init(|| {
        (
            nkeys::XKey::from_seed(SERVER_XKEY_SEED).unwrap(),
            nkeys::XKey::from_public_key(CALLOUT_XKEY_PUBLIC).unwrap(),
        )
    });
    server_x.seal(jwt, ours).unwrap()
}
