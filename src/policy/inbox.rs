//! Private inboxes: `{{inbox}}`, one reply namespace per user.
//!
//! Any subscriber of `_INBOX.>` receives every reply sent to any client of
//! its account (request/reply answers, JetStream and KV answers). A role
//! that grants `sub.allow = ["{{inbox}}.>"]` instead gives each user a
//! prefix of its own, which its clients set as their inbox prefix
//! (nats.go `CustomInboxPrefix`, nats.js `inboxPrefix`, nats-py
//! `inbox_prefix`, async-nats `custom_inbox_prefix`, the nats CLI's
//! `--inbox-prefix`). It is public and derived from who the user is, so a
//! client can compute it from its own token; what keeps it private is that
//! no other user's permissions reach it.
//!
//! The prefix is `_INBOX.` and the first 32 hex digits of
//! SHA-256(`<iss>` "\n" `<sub>`): the token's `iss` and `sub` claims as
//! they are (for `[users.*]` identities: `config` and the user's name).
//! It stays under `_INBOX.` so that the one stream export of `_INBOX.>`
//! carries push deliveries from the account holding the streams. Clients
//! compute it from their token with the client crate's
//! `nats_oidc_client::inbox`, whose `prefix` this is: one function for
//! both sides, pinned to the README's example (a test here and one there).

/// The issuer part of a `[users.*]` identity's prefix.
pub(crate) const CONFIG_ISSUER: &str = "config";

/// The private inbox prefix of the user `sub` of the issuer `iss`.
pub(crate) use nats_oidc_client::inbox::prefix;

/// Whether a subject reaches some user's inbox: it overlaps `_INBOX.>`
/// (private inboxes included, which are two tokens below it).
pub(crate) fn reaches_inboxes(subject: &str) -> bool {
    crate::policy::subject::overlaps(subject, "_INBOX.x.y")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The README's example: the `{{inbox}}` the service grants, whichever
    /// crate computes it.
    #[test]
    fn the_readme_example() {
        assert_eq!(
            prefix("https://id.example.com", "ana"),
            "_INBOX.ec8d71ff4bc13f98e4f07601fd36ab38"
        );
    }
}
