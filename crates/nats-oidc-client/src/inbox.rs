//! The private inbox prefix a token's user gets from roles that grant
//! `{{inbox}}.>`: `_INBOX.` and the first 32 hex digits of
//! SHA-256(`<iss>` "\n" `<sub>`), from the token's own claims. Clients set
//! it as their inbox prefix so that replies (request/reply answers,
//! JetStream and KV answers) come where only this user may subscribe. The
//! service's `{{inbox}}` placeholder is filled by this same function,
//! pinned to the README's example.

use jsonwebtoken::errors::ErrorKind;

use super::ClientError;

/// The private inbox prefix of the user `sub` of the issuer `iss`.
///
/// ```
/// assert_eq!(
///     nats_oidc_client::inbox::prefix("https://id.example.com", "ana"),
///     "_INBOX.ec8d71ff4bc13f98e4f07601fd36ab38"
/// );
/// ```
pub fn prefix(iss: &str, sub: &str) -> String {
    format!(
        "_INBOX.{}",
        super::short_digest(&[iss.as_bytes(), b"\n", sub.as_bytes()])
    )
}

/// The private inbox prefix of the user a token names, read from its
/// (unverified: the service verifies) `iss` and `sub` claims.
pub fn of_token(token: &str) -> Result<String, ClientError> {
    let bad = |why: &str| ClientError::failed(format!("cannot tell the inbox prefix: {why}"));
    let claims = super::claims::unverified(token).map_err(|e| match e.kind() {
        ErrorKind::Base64(_) => bad("the token's claims are not base64url"),
        ErrorKind::Json(_) | ErrorKind::Utf8(_) => bad("the token's claims are not JSON"),
        _ => bad("the token is not a JWT"),
    })?;
    match (claims["iss"].as_str(), claims["sub"].as_str()) {
        (Some(iss), Some(sub)) if !sub.is_empty() => Ok(prefix(iss, sub)),
        _ => Err(bad("the token has no string iss and sub")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::Engine;

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
