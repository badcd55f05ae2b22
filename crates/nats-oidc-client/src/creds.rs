//! The `.creds` file of NATS clients: a user JWT and the user's nkey seed,
//! each between its BEGIN and END lines. In operator mode a program
//! presents the sentinel's (`nats-oidc-callout sentinel` writes one) beside
//! its token; see examples/token_client.rs.

/// The user JWT in a `.creds` file's text.
///
/// ```
/// let text = "-----BEGIN NATS USER JWT-----\neyJhbGciOi.e30.sig\n------END NATS USER JWT------\n";
/// assert_eq!(nats_oidc_client::creds::user_jwt(text), Some("eyJhbGciOi.e30.sig"));
/// assert_eq!(nats_oidc_client::creds::user_jwt("no jwt here"), None);
/// ```
pub fn user_jwt(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("-----BEGIN NATS USER JWT"))?;
    lines.next().filter(|l| l.starts_with("eyJ"))
}

/// The user's nkey seed in a `.creds` file's text.
pub fn user_seed(text: &str) -> Option<&str> {
    let mut lines = text.lines().map(str::trim);
    lines.find(|l| l.starts_with("-----BEGIN USER NKEY SEED"))?;
    lines.next().filter(|l| l.starts_with("SU"))
}
