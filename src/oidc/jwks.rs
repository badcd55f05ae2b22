//! A parsed JWKS: each usable public key with the algorithms it may verify,
//! built once when the set is fetched rather than once per token.

use std::collections::HashMap;
use std::sync::Arc;

use jsonwebtoken::jwk::{AlgorithmParameters, EllipticCurve, Jwk, KeyOperations, PublicKeyUse};
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::Value;

use crate::oidc::algorithms;
use crate::oidc::settings::Settings;

/// RSA keys shorter than this are refused (NIST SP 800-131A).
const MIN_RSA_BITS: usize = 2048;

pub struct VerifyingKey {
    pub kid: Option<String>,
    /// The algorithms this key may verify: those its type allows, narrowed by
    /// the JWK's own `alg` and by the configured allow-list.
    pub algorithms: Vec<Algorithm>,
    pub decoding: DecodingKey,
}

/// Why a JWKS document gives no key set.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JwksError {
    #[error("not a JWKS document: {0}")]
    NotJwks(String),
    #[error("no usable signing key ({0})")]
    NoUsableKey(String),
}

impl VerifyingKey {
    pub fn allows(&self, alg: Algorithm) -> bool {
        self.algorithms.contains(&alg)
    }
}

#[derive(Default)]
pub struct KeySet {
    keys: Vec<Arc<VerifyingKey>>,
    by_kid: HashMap<String, Vec<usize>>,
    /// Which installed set this is (see `KeyManager`): a token verified under
    /// one generation is not taken as verified under another.
    pub generation: u64,
    /// Why each unusable JWKS entry was skipped, for the log.
    pub skipped: Vec<String>,
}

impl KeySet {
    pub fn len(&self) -> usize {
        self.keys.len()
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    pub fn with_kid(&self, kid: &str) -> Vec<Arc<VerifyingKey>> {
        self.by_kid
            .get(kid)
            .map(|ix| ix.iter().map(|i| self.keys[*i].clone()).collect())
            .unwrap_or_default()
    }

    pub fn without_kid_allowing(&self, alg: Algorithm) -> Vec<Arc<VerifyingKey>> {
        self.keys
            .iter()
            .filter(|k| k.kid.is_none() && k.allows(alg))
            .cloned()
            .collect()
    }

    pub fn allowing(&self, alg: Algorithm) -> Vec<Arc<VerifyingKey>> {
        self.keys
            .iter()
            .filter(|k| k.allows(alg))
            .cloned()
            .collect()
    }

    /// Parses a JWKS document. Entries that cannot be used (unknown key type,
    /// symmetric keys, encryption keys, weak keys, algorithms outside the
    /// allow-list) are skipped with a reason; a document with no usable key at
    /// all is an error so that the previous good set is kept.
    pub fn parse(body: &[u8], oidc: &Settings) -> Result<KeySet, JwksError> {
        #[derive(serde::Deserialize)]
        struct Doc {
            keys: Vec<Value>,
        }
        let doc: Doc =
            serde_json::from_slice(body).map_err(|e| JwksError::NotJwks(e.to_string()))?;
        let mut set = KeySet::default();
        for (i, raw) in doc.keys.into_iter().enumerate() {
            let label = raw
                .get("kid")
                .and_then(Value::as_str)
                .map(|k| format!("key {k:?}"))
                .unwrap_or_else(|| format!("key #{i}"));
            match build_key(raw, oidc) {
                Ok(key) => {
                    if let Some(kid) = &key.kid {
                        set.by_kid
                            .entry(kid.clone())
                            .or_default()
                            .push(set.keys.len());
                    }
                    set.keys.push(Arc::new(key));
                }
                Err(reason) => set.skipped.push(format!("{label}: {reason}")),
            }
        }
        if set.keys.is_empty() {
            let why = if set.skipped.is_empty() {
                "the key set is empty".to_string()
            } else {
                set.skipped.join("; ")
            };
            return Err(JwksError::NoUsableKey(why));
        }
        Ok(set)
    }
}

fn build_key(raw: Value, oidc: &Settings) -> Result<VerifyingKey, String> {
    if let Some(kty) = raw.get("kty").and_then(Value::as_str) {
        if kty == "oct" {
            return Err("symmetric (oct) keys are never used".into());
        }
    }
    let jwk: Jwk =
        serde_json::from_value(raw).map_err(|e| format!("unsupported or malformed key: {e}"))?;
    if let Some(u) = &jwk.common.public_key_use {
        if *u != PublicKeyUse::Signature {
            return Err("not a signature key (use is not \"sig\")".into());
        }
    }
    if let Some(ops) = &jwk.common.key_operations {
        if !ops.contains(&KeyOperations::Verify) {
            return Err("key_ops does not include \"verify\"".into());
        }
    }
    let by_type: &[Algorithm] = match &jwk.algorithm {
        AlgorithmParameters::RSA(rsa) => {
            let bits = rsa_modulus_bits(&rsa.n)?;
            if bits < MIN_RSA_BITS {
                return Err(format!(
                    "RSA key of {bits} bits is weaker than {MIN_RSA_BITS}"
                ));
            }
            algorithms::RSA
        }
        AlgorithmParameters::EllipticCurve(ec) => match ec.curve {
            EllipticCurve::P256 => &[Algorithm::ES256],
            EllipticCurve::P384 => &[Algorithm::ES384],
            ref other => return Err(format!("EC curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKeyPair(okp) => match okp.curve {
            EllipticCurve::Ed25519 => &[Algorithm::EdDSA],
            ref other => return Err(format!("OKP curve {other:?} is not supported")),
        },
        AlgorithmParameters::OctetKey(_) => {
            return Err("symmetric (oct) keys are never used".into())
        }
        _ => return Err("key type is not supported".into()),
    };
    let declared = match jwk.common.key_algorithm {
        None => None,
        Some(ka) => Some(
            algorithms::of_key(ka)
                .ok_or_else(|| format!("key algorithm {ka:?} is not a signature algorithm"))?,
        ),
    };
    if let Some(alg) = declared {
        if !by_type.contains(&alg) {
            return Err(format!(
                "key declares alg {alg:?}, which does not fit its key type"
            ));
        }
    }
    let allowed: Vec<Algorithm> = by_type
        .iter()
        .copied()
        .filter(|a| declared.is_none_or(|d| d == *a))
        .filter(|a| oidc.algorithms.contains(a))
        .collect();
    if allowed.is_empty() {
        return Err("none of its algorithms is in oidc.algorithms".into());
    }
    let decoding = DecodingKey::from_jwk(&jwk).map_err(|e| format!("cannot load key: {e}"))?;
    Ok(VerifyingKey {
        kid: jwk.common.key_id.clone(),
        algorithms: allowed,
        decoding,
    })
}

fn rsa_modulus_bits(n: &str) -> Result<usize, String> {
    use base64::Engine;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(n.trim_end_matches('='))
        .map_err(|_| "RSA modulus is not base64url".to_string())?;
    let first = bytes
        .iter()
        .position(|b| *b != 0)
        .ok_or("RSA modulus is zero")?;
    let significant = &bytes[first..];
    Ok(significant.len() * 8 - significant[0].leading_zeros() as usize)
}
