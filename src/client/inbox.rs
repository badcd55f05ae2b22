//! The private inbox prefix a token's user gets from roles that grant
//! `{{inbox}}.>`: `_INBOX.` and the first 32 hex digits of
//! SHA-256(`<iss>` "\n" `<sub>`), from the token's own claims. Clients set
//! it as their inbox prefix so that replies (request/reply answers,
//! JetStream and KV answers) come where only this user may subscribe. The
//! formula is the one the service's `{{inbox}}` placeholder fills, pinned
//! to the README's example.

use base64::Engine;

use super::ClientError;

pub use crate::policy::inbox::prefix;

/// The private inbox prefix of the user a token names, read from its
/// (unverified: the service verifies) `iss` and `sub` claims.
pub fn of_token(token: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::failed(format!("cannot tell the inbox prefix: {why}"));
    let payload = token
        .trim()
        .split('.')
        .nth(1)
        .ok_or_else(|| bad("the token is not a JWT"))?;
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload.trim_end_matches('='))
        .map_err(|_| bad("the token's claims are not base64url"))?;
    let claims: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|_| bad("the token's claims are not JSON"))?;
    match (claims["iss"].as_str(), claims["sub"].as_str()) {
        (Some(iss), Some(sub)) if !sub.is_empty() => Ok(prefix(iss, sub)),
        _ => Err(bad("the token has no string iss and sub")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example, which the service's `{{inbox}}` gives too.
    #[test]
    fn the_readme_example() {
        assert_eq!(
            prefix("https://id.example.com", "ana"),
            "_INBOX.ec8d71ff4bc13f98e4f07601fd36ab38"
        );
        let claims = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(br#"{"iss":"https://id.example.com","sub":"ana"}"#);
        assert_eq!(
            of_token(&format!("e30.{claims}.sig")).unwrap(),
            "_INBOX.ec8d71ff4bc13f98e4f07601fd36ab38"
        );
        assert!(of_token("not a token").is_err());
    }
}
