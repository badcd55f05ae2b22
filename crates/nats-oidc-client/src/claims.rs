//! An access token's claims, read without verifying anything: the client
//! only uses them to know when to refresh, whose login it got and which
//! inbox prefix to set. The service verifies the token.

/// The claims of a JWT (its middle part), never checked: no signature,
/// no `exp`, no `aud`.
pub(crate) fn unverified(token: &str) -> Result<serde_json::Value, jsonwebtoken::errors::Error> {
    jsonwebtoken::dangerous::insecure_decode_claims(token.trim())
}
