//! NATS JWTs: compact JWS with the `ed25519-nkey` algorithm, signed and
//! verified with nkeys. The wire types live with the modules that use them;
//! this module only knows how to seal and open the envelope.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha512_256};

use super::signing_key::SigningKey;

/// The only header NATS v2 JWTs carry.
const HEADER_JSON: &str = r#"{"typ":"JWT","alg":"ed25519-nkey"}"#;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum NatsJwtError {
    #[error("not a compact JWT (expected three dot-separated parts)")]
    Shape,
    #[error("bad base64url in the {0}")]
    Base64(&'static str),
    #[error("header is not {{\"typ\":\"JWT\",\"alg\":\"ed25519-nkey\"}}: {0}")]
    Header(String),
    #[error("claims are not valid JSON for this kind of JWT: {0}")]
    Claims(String),
    #[error("issuer {0:?} is not a valid public nkey of the expected kind")]
    Issuer(String),
    #[error("signature does not verify against the issuer key")]
    Signature,
}

#[derive(Deserialize)]
struct Header {
    typ: Option<String>,
    alg: String,
}

/// Signs claims with an nkey and returns the compact JWT. `jti` is derived from
/// the claims (as nats-io/jwt does) so it is unique per issued JWT.
pub(crate) fn encode<T: Serialize + WithJti>(claims: &mut T, signer: &SigningKey) -> String {
    claims.set_jti(String::new());
    let unique = serde_json::to_vec(claims).expect("claims serialize");
    let digest = Sha512_256::digest(&unique);
    claims.set_jti(data_encoding::BASE32_NOPAD.encode(&digest));
    let payload = serde_json::to_vec(claims).expect("claims serialize");
    sign(&payload, signer)
}

/// The compact JWT for a claims document (JSON bytes) signed by `signer`.
pub fn sign(payload: &[u8], signer: &SigningKey) -> String {
    let mut out = String::with_capacity(64 + payload.len() * 4 / 3 + 90);
    URL_SAFE_NO_PAD.encode_string(HEADER_JSON, &mut out);
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(payload, &mut out);
    let signature = signer.sign(out.as_bytes());
    out.push('.');
    URL_SAFE_NO_PAD.encode_string(signature, &mut out);
    out
}

/// Claims types that carry a `jti`.
pub(crate) trait WithJti {
    fn set_jti(&mut self, jti: String);
}

/// Claims types that name their signer in `iss`.
pub trait Issued {
    fn issuer(&self) -> &str;
}

/// Decodes a NATS JWT and verifies its signature against the key in its own
/// `iss`, which must be a public key of the kind `issuer_prefix` names (for
/// example `N` for servers). Trusting that key is the caller's decision.
pub fn decode_verified<T: DeserializeOwned + Issued>(
    jwt: &[u8],
    issuer_prefix: char,
) -> Result<T, NatsJwtError> {
    decode_unverified(jwt)?.verify(jwt, issuer_prefix)
}

/// A NATS JWT whose claims are read but whose signature is not checked yet:
/// they may be looked at only to decide whether checking is worth the work.
pub(crate) struct Unverified<T> {
    pub claims: T,
    signed_len: usize,
    signature: Vec<u8>,
}

/// Reads a NATS JWT without checking its signature.
pub(crate) fn decode_unverified<T: DeserializeOwned>(
    jwt: &[u8],
) -> Result<Unverified<T>, NatsJwtError> {
    let mut parts = jwt.splitn(4, |b| *b == b'.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(NatsJwtError::Shape);
    };
    let header_bytes = URL_SAFE_NO_PAD
        .decode(h)
        .map_err(|_| NatsJwtError::Base64("header"))?;
    let header: Header = serde_json::from_slice(&header_bytes)
        .map_err(|e| NatsJwtError::Header(clip(&e.to_string())))?;
    if header.alg != "ed25519-nkey"
        || header
            .typ
            .as_deref()
            .is_some_and(|t| !t.eq_ignore_ascii_case("JWT"))
    {
        return Err(NatsJwtError::Header(format!("alg {:?}", clip(&header.alg))));
    }
    let payload = URL_SAFE_NO_PAD
        .decode(p)
        .map_err(|_| NatsJwtError::Base64("claims"))?;
    let signature = URL_SAFE_NO_PAD
        .decode(s)
        .map_err(|_| NatsJwtError::Base64("signature"))?;
    let claims: T =
        serde_json::from_slice(&payload).map_err(|e| NatsJwtError::Claims(clip(&e.to_string())))?;
    Ok(Unverified {
        claims,
        signed_len: h.len() + 1 + p.len(),
        signature,
    })
}

impl<T: Issued> Unverified<T> {
    /// Checks the signature of `jwt`, the JWT these claims were read from,
    /// against the key in its `iss`.
    pub(crate) fn verify(self, jwt: &[u8], issuer_prefix: char) -> Result<T, NatsJwtError> {
        let issuer = self.claims.issuer();
        if !issuer.starts_with(issuer_prefix) {
            return Err(NatsJwtError::Issuer(clip(issuer)));
        }
        let signed = &jwt[..self.signed_len];
        let (key, known) = match VERIFIED_SIGNERS.get(issuer) {
            Some(key) => (key, true),
            None => (
                std::sync::Arc::new(
                    nkeys::KeyPair::from_public_key(issuer)
                        .map_err(|_| NatsJwtError::Issuer(clip(issuer)))?,
                ),
                false,
            ),
        };
        key.verify(signed, &self.signature)
            .map_err(|_| NatsJwtError::Signature)?;
        if !known {
            VERIFIED_SIGNERS.insert(issuer.to_string(), key);
        }
        Ok(self.claims)
    }
}

/// Messages built from an unverified JWT are kept short.
fn clip(s: &str) -> String {
    crate::text::clip_to(s, 256)
}

/// Public keys that have verified a signature, decoded. Every authorization
/// request comes from one of a few servers, and decoding a key (a point
/// decompression) cost as much as a tenth of a decision. Only keys with a
/// good signature get in, and the cache is small and bounded.
static VERIFIED_SIGNERS: std::sync::LazyLock<
    moka::sync::Cache<String, std::sync::Arc<nkeys::KeyPair>>,
> = std::sync::LazyLock::new(|| moka::sync::Cache::new(256));

/// Whether a string is a well-formed public nkey (checksum included) with
/// the given prefix letter. The point itself is not decoded: a key that only
/// has to be named in a user JWT needs no more.
pub(crate) fn is_public_key(key: &str, prefix: char) -> bool {
    key.starts_with(prefix) && nkeys::from_public_key(key).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Serialize, Deserialize)]
    struct Claims {
        jti: String,
        iss: String,
        n: u32,
    }
    impl WithJti for Claims {
        fn set_jti(&mut self, jti: String) {
            self.jti = jti;
        }
    }
    impl Issued for Claims {
        fn issuer(&self) -> &str {
            &self.iss
        }
    }

    #[test]
    fn round_trip_verifies_and_tampering_fails() {
        let kp = nkeys::KeyPair::new_server();
        let mut c = Claims {
            jti: String::new(),
            iss: kp.public_key(),
            n: 1,
        };
        let jwt = encode(&mut c, &SigningKey::of(&kp).unwrap());
        let back: Claims = decode_verified(jwt.as_bytes(), 'N').unwrap();
        assert_eq!(back.n, 1);
        assert!(!back.jti.is_empty());

        let parts: Vec<&str> = jwt.split('.').collect();
        let forged = URL_SAFE_NO_PAD.encode(format!(
            r#"{{"jti":"x","iss":"{}","n":2}}"#,
            kp.public_key()
        ));
        let tampered = format!("{}.{}.{}", parts[0], forged, parts[2]);
        assert_eq!(
            decode_verified::<Claims>(tampered.as_bytes(), 'N').err(),
            Some(NatsJwtError::Signature)
        );
    }

    #[test]
    fn issuer_must_have_the_expected_prefix() {
        let kp = nkeys::KeyPair::new_account();
        let mut c = Claims {
            jti: String::new(),
            iss: kp.public_key(),
            n: 1,
        };
        let jwt = encode(&mut c, &SigningKey::of(&kp).unwrap());
        assert!(matches!(
            decode_verified::<Claims>(jwt.as_bytes(), 'N'),
            Err(NatsJwtError::Issuer(_))
        ));
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        assert_eq!(
            decode_verified::<Claims>(b"abc", 'N').err(),
            Some(NatsJwtError::Shape)
        );
        assert_eq!(
            decode_verified::<Claims>(b"a.b.c.d", 'N').err(),
            Some(NatsJwtError::Shape)
        );
        assert_eq!(
            decode_verified::<Claims>(b"!!.b.c", 'N').err(),
            Some(NatsJwtError::Base64("header"))
        );
    }
}
