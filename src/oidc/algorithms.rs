//! Which JWS algorithms a token may use, and which a key may verify.

use jsonwebtoken::jwk::KeyAlgorithm;
use jsonwebtoken::Algorithm;

/// Asymmetric algorithms only: HMAC would need a shared secret, which an
/// issuer cannot publish, and `none` is no signature at all.
pub const DEFAULT_ALGORITHMS: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
    Algorithm::ES256,
    Algorithm::ES384,
    Algorithm::EdDSA,
];

/// What an RSA key may verify.
pub(crate) const RSA: &[Algorithm] = &[
    Algorithm::RS256,
    Algorithm::RS384,
    Algorithm::RS512,
    Algorithm::PS256,
    Algorithm::PS384,
    Algorithm::PS512,
];

/// An algorithm name as JOSE writes it, if it is one this service accepts.
pub fn parse_algorithm(name: &str) -> Result<Algorithm, String> {
    match name.parse::<Algorithm>() {
        Ok(a) if DEFAULT_ALGORITHMS.contains(&a) => Ok(a),
        _ if name.starts_with("HS") => Err(format!(
            "{name:?} is an HMAC algorithm: a shared secret cannot be published by an issuer, so it is never accepted"
        )),
        _ if name.eq_ignore_ascii_case("none") => {
            Err("\"none\" means unsigned and is never accepted".into())
        }
        _ => Err(format!(
            "{name:?} is not supported; use some of RS256, RS384, RS512, PS256, PS384, PS512, ES256, ES384, EdDSA"
        )),
    }
}

/// The signature algorithm a JWK's `alg` names, if it names one.
pub(crate) fn of_key(alg: KeyAlgorithm) -> Option<Algorithm> {
    Some(match alg {
        KeyAlgorithm::HS256 => Algorithm::HS256,
        KeyAlgorithm::HS384 => Algorithm::HS384,
        KeyAlgorithm::HS512 => Algorithm::HS512,
        KeyAlgorithm::ES256 => Algorithm::ES256,
        KeyAlgorithm::ES384 => Algorithm::ES384,
        KeyAlgorithm::RS256 => Algorithm::RS256,
        KeyAlgorithm::RS384 => Algorithm::RS384,
        KeyAlgorithm::RS512 => Algorithm::RS512,
        KeyAlgorithm::PS256 => Algorithm::PS256,
        KeyAlgorithm::PS384 => Algorithm::PS384,
        KeyAlgorithm::PS512 => Algorithm::PS512,
        KeyAlgorithm::EdDSA => Algorithm::EdDSA,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_asymmetric_algorithms_parse() {
        for a in DEFAULT_ALGORITHMS {
            assert_eq!(parse_algorithm(&format!("{a:?}")), Ok(*a));
        }
        for bad in ["HS256", "none", "NONE", "rs256", "ES512", ""] {
            assert!(parse_algorithm(bad).is_err(), "{bad}");
        }
        assert_eq!(of_key(KeyAlgorithm::RSA_OAEP), None);
    }
}
