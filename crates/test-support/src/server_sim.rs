//! Plays nats-server's part of the auth callout protocol: signs (and, with
//! xkey, seals) authorization requests the way nats-server 2.10+ does, and
//! reads the answers. For the in-process decision tests, the benchmarks, the
//! fuzzers and the load tool, which drive the service without a real client
//! behind each request.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use nats_oidc_callout::nats::SigningKey;
use serde_json::{json, Value};

pub struct ServerSim {
    /// The server's own key, loaded once: it signs every request.
    pub key: SigningKey,
    pub xkey: nkeys::XKey,
    /// Public key of the callout issuer the requests are addressed to.
    pub callout_issuer: String,
    /// Seconds a request stays valid: nats-server's auth timeout (2 s) by
    /// default; benchmarks that replay one request for minutes raise it.
    pub validity_secs: u64,
}

/// What the service answered, as nats-server reads it.
#[derive(Debug, PartialEq, Eq)]
pub enum Answer {
    Allowed,
    Refused(String),
    /// An empty or unreadable body (nats-server refuses the client).
    Unreadable(String),
}

/// Signs authorization request claims with `signer`, in nats-server's
/// format (any key: tests forge requests with the wrong kind on purpose).
pub fn sign_request(signer: &nkeys::KeyPair, claims: &Value) -> String {
    sign_claims(
        &SigningKey::of(signer).expect("a key pair with its seed"),
        claims,
    )
}

fn sign_claims(signer: &SigningKey, claims: &Value) -> String {
    nats_oidc_callout::nats::sign(&serde_json::to_vec(claims).expect("JSON"), signer)
}

/// The claims of a JWT (not verified), if `text` is one.
pub fn jwt_claims(text: &[u8]) -> Option<Value> {
    std::str::from_utf8(text)
        .ok()
        .and_then(|t| t.split('.').nth(1))
        .and_then(|p| URL_SAFE_NO_PAD.decode(p).ok())
        .and_then(|b| serde_json::from_slice(&b).ok())
}

/// The claims of a JWT whose signature verifies with the key its `iss`
/// names, as nats-server checks it; why not, otherwise.
pub fn verified_claims(text: &[u8]) -> Result<Value, String> {
    let text = std::str::from_utf8(text).map_err(|_| "not UTF-8".to_string())?;
    let parts: Vec<&str> = text.split('.').collect();
    let [header, payload, signature] = parts[..] else {
        return Err(format!("{} parts, not 3", parts.len()));
    };
    let claims: Value = URL_SAFE_NO_PAD
        .decode(payload)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or("the payload is not base64url JSON")?;
    let issuer = claims["iss"].as_str().ok_or("no iss")?;
    let key = nkeys::KeyPair::from_public_key(issuer).map_err(|e| format!("iss: {e}"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(signature)
        .map_err(|_| "the signature is not base64url")?;
    key.verify(format!("{header}.{payload}").as_bytes(), &signature)
        .map_err(|e| format!("the signature does not verify with {issuer}: {e}"))?;
    Ok(claims)
}

impl ServerSim {
    pub fn new(callout_issuer: &str) -> ServerSim {
        ServerSim {
            key: SigningKey::new(nkeys::KeyPair::new_server()).expect("a new key has a seed"),
            xkey: nkeys::XKey::new(),
            callout_issuer: callout_issuer.to_string(),
            validity_secs: 2,
        }
    }

    /// The claims of a request from this server for a fresh user nkey,
    /// carrying `connect_opts`, valid for `validity_secs` from `now`.
    pub fn claims(&self, connect_opts: Value, now: u64) -> Value {
        let server = self.key.public_key();
        json!({
            "jti": "",
            "iat": now,
            "iss": server,
            "sub": self.callout_issuer,
            "aud": "nats-authorization-request",
            "exp": now + self.validity_secs,
            "nats": {
                "type": "authorization_request",
                "version": 2,
                "server_id": {"name": "sim", "host": "127.0.0.1", "id": server, "version": "2.15.1", "xkey": self.xkey.public_key()},
                "user_nkey": nkeys::KeyPair::new_user().public_key(),
                "client_info": {"host": "127.0.0.1", "id": 1, "user": "x", "kind": "Client", "type": "nats"},
                "connect_opts": connect_opts
            }
        })
    }

    /// `claims` signed with this server's key.
    pub fn sign(&self, claims: &Value) -> Vec<u8> {
        sign_claims(&self.key, claims).into_bytes()
    }

    /// A signed request carrying `token` as the connect password for a fresh
    /// user nkey, valid for `validity_secs` from `now`.
    pub fn request(&self, token: &str, now: u64) -> Vec<u8> {
        let opts =
            json!({"user": "x", "pass": token, "lang": "rust", "version": "0.51.0", "protocol": 1});
        self.sign(&self.claims(opts, now))
    }

    /// The request sealed to the callout's xkey, with the header value
    /// (`Nats-Server-Xkey`) to send beside it.
    pub fn sealed_request(
        &self,
        token: &str,
        now: u64,
        callout_xkey: &nkeys::XKey,
    ) -> (Vec<u8>, String) {
        self.seal(&self.request(token, now), callout_xkey)
    }

    /// `request` sealed to `callout_xkey`, with the header value to send.
    pub fn seal(&self, request: &[u8], callout_xkey: &nkeys::XKey) -> (Vec<u8>, String) {
        let sealed = self.xkey.seal(request, callout_xkey).expect("seal");
        (sealed, self.xkey.public_key())
    }

    /// The answer's JWT, opened first when it was sealed back to us.
    pub fn open_answer(
        &self,
        body: &[u8],
        callout_xkey: Option<&nkeys::XKey>,
    ) -> Result<Vec<u8>, String> {
        match callout_xkey {
            Some(theirs) if body.starts_with(b"xkv1") => self
                .xkey
                .open(body, theirs)
                .map_err(|e| format!("cannot open: {e}")),
            _ => Ok(body.to_vec()),
        }
    }

    /// Reads an answer (opening it first when it was sealed back to us).
    pub fn read_answer(&self, body: &[u8], callout_xkey: Option<&nkeys::XKey>) -> Answer {
        if body.is_empty() {
            return Answer::Unreadable("empty body".into());
        }
        let jwt = match self.open_answer(body, callout_xkey) {
            Ok(jwt) => jwt,
            Err(e) => return Answer::Unreadable(e),
        };
        let Some(claims) = jwt_claims(&jwt) else {
            return Answer::Unreadable("not a JWT".into());
        };
        match (
            claims["nats"]["jwt"].as_str(),
            claims["nats"]["error"].as_str(),
        ) {
            (Some(_), None) => Answer::Allowed,
            (None, Some(e)) => Answer::Refused(e.to_string()),
            _ => Answer::Unreadable(format!("neither jwt nor error: {claims}")),
        }
    }
}
