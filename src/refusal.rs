//! Why a connection is refused: one stable code per reason, shared by the
//! log line, the `authorizations_total` metric's `reason` label, `explain`
//! and the book's troubleshooting table, docs/src/operations/troubleshooting.md
//! (a test keeps the four in step).

use crate::clock::Interrupted;

/// A refusal's stable code. `as_str` is what logs and metrics show.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum RefusalCode {
    /// The authorization request itself is unusable.
    BadRequest,
    NoToken,
    TokenTooLarge,
    TokenMalformed,
    TokenHeader,
    TokenTyp,
    TokenCrit,
    TokenNested,
    TokenHeaderKey,
    TokenAlg,
    IssuerKeysUnavailable,
    TokenUnknownKid,
    TokenKeyAlg,
    TokenSignature,
    TokenIssuer,
    TokenAudience,
    TokenExpired,
    TokenNotYetValid,
    TokenClaims,
    IdentityClaim,
    EmailNotVerified,
    /// A claim the issuer's `require_claims` names is missing or other.
    RequiredClaim,
    /// The token's subject, session or user was revoked at or after it
    /// was issued (back-channel logout, `revoke`).
    Revoked,
    RolesClaim,
    Scope,
    IdentityCredentials,
    UnknownNkey,
    NoMappedRole,
    AccountConflict,
    SubjectTemplate,
    ResponseTooLarge,
    /// The user's account is not one the callout can sign for.
    UnknownAccount,
    /// A role admits other connection types (websocket, MQTT, ...).
    ConnectionType,
    /// A role admits connections from other addresses.
    ConnectionSource,
    /// A role admits connections at other times.
    ConnectionTime,
    /// Too many slow checks already under way, or shutting down: refused
    /// at once rather than queued.
    Unavailable,
    /// The request's deadline passed before it was decided: nothing is
    /// answered, nats-server has refused the client already.
    RequestExpired,
}

impl RefusalCode {
    /// Every code, in the order of the book's troubleshooting table.
    pub const ALL: [RefusalCode; 37] = [
        RefusalCode::NoToken,
        RefusalCode::TokenTooLarge,
        RefusalCode::TokenMalformed,
        RefusalCode::TokenHeader,
        RefusalCode::TokenTyp,
        RefusalCode::TokenCrit,
        RefusalCode::TokenNested,
        RefusalCode::TokenHeaderKey,
        RefusalCode::TokenAlg,
        RefusalCode::IssuerKeysUnavailable,
        RefusalCode::TokenUnknownKid,
        RefusalCode::TokenKeyAlg,
        RefusalCode::TokenSignature,
        RefusalCode::TokenIssuer,
        RefusalCode::TokenAudience,
        RefusalCode::TokenExpired,
        RefusalCode::TokenNotYetValid,
        RefusalCode::TokenClaims,
        RefusalCode::IdentityClaim,
        RefusalCode::EmailNotVerified,
        RefusalCode::RequiredClaim,
        RefusalCode::Revoked,
        RefusalCode::RolesClaim,
        RefusalCode::Scope,
        RefusalCode::IdentityCredentials,
        RefusalCode::UnknownNkey,
        RefusalCode::NoMappedRole,
        RefusalCode::AccountConflict,
        RefusalCode::SubjectTemplate,
        RefusalCode::ResponseTooLarge,
        RefusalCode::UnknownAccount,
        RefusalCode::ConnectionType,
        RefusalCode::ConnectionSource,
        RefusalCode::ConnectionTime,
        RefusalCode::Unavailable,
        RefusalCode::RequestExpired,
        RefusalCode::BadRequest,
    ];

    pub const fn as_str(self) -> &'static str {
        match self {
            RefusalCode::BadRequest => "bad_request",
            RefusalCode::NoToken => "no_token",
            RefusalCode::TokenTooLarge => "token_too_large",
            RefusalCode::TokenMalformed => "token_malformed",
            RefusalCode::TokenHeader => "token_header",
            RefusalCode::TokenTyp => "token_typ",
            RefusalCode::TokenCrit => "token_crit",
            RefusalCode::TokenNested => "token_nested",
            RefusalCode::TokenHeaderKey => "token_header_key",
            RefusalCode::TokenAlg => "token_alg",
            RefusalCode::IssuerKeysUnavailable => "issuer_keys_unavailable",
            RefusalCode::TokenUnknownKid => "token_unknown_kid",
            RefusalCode::TokenKeyAlg => "token_key_alg",
            RefusalCode::TokenSignature => "token_signature",
            RefusalCode::TokenIssuer => "token_issuer",
            RefusalCode::TokenAudience => "token_audience",
            RefusalCode::TokenExpired => "token_expired",
            RefusalCode::TokenNotYetValid => "token_not_yet_valid",
            RefusalCode::TokenClaims => "token_claims",
            RefusalCode::IdentityClaim => "identity_claim",
            RefusalCode::EmailNotVerified => "email_not_verified",
            RefusalCode::RequiredClaim => "required_claim",
            RefusalCode::Revoked => "revoked",
            RefusalCode::RolesClaim => "roles_claim",
            RefusalCode::Scope => "scope",
            RefusalCode::IdentityCredentials => "identity_credentials",
            RefusalCode::UnknownNkey => "unknown_nkey",
            RefusalCode::NoMappedRole => "no_mapped_role",
            RefusalCode::AccountConflict => "account_conflict",
            RefusalCode::SubjectTemplate => "subject_template",
            RefusalCode::ResponseTooLarge => "response_too_large",
            RefusalCode::UnknownAccount => "unknown_account",
            RefusalCode::ConnectionType => "connection_type",
            RefusalCode::ConnectionSource => "connection_source",
            RefusalCode::ConnectionTime => "connection_time",
            RefusalCode::Unavailable => "unavailable",
            RefusalCode::RequestExpired => "request_expired",
        }
    }
}

impl std::fmt::Display for RefusalCode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A refused connection: the code, a reason for the operator (logged, and
/// sent to nats-server, which logs it too), and the user when known.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal {
    pub code: RefusalCode,
    pub reason: String,
    pub user: Option<String>,
}

impl Refusal {
    pub fn new(code: RefusalCode, reason: impl Into<String>) -> Self {
        Refusal {
            code,
            reason: reason.into(),
            user: None,
        }
    }

    /// The same refusal, naming the user it concerns.
    pub fn of(mut self, user: &str) -> Self {
        self.user = Some(user.to_string());
        self
    }
}

impl From<Interrupted> for Refusal {
    fn from(i: Interrupted) -> Self {
        match i {
            Interrupted::Expired => Refusal::new(
                RefusalCode::RequestExpired,
                "the request's deadline passed (nats-server has stopped waiting for the answer)",
            ),
            Interrupted::Stopping => Refusal::new(
                RefusalCode::Unavailable,
                "the service is shutting down (the client may retry)",
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeSet;

    #[test]
    fn every_code_is_listed_once_with_its_own_text() {
        let texts: BTreeSet<&str> = RefusalCode::ALL.iter().map(|c| c.as_str()).collect();
        assert_eq!(texts.len(), RefusalCode::ALL.len());
        assert!(texts
            .iter()
            .all(|t| t.chars().all(|c| c.is_ascii_lowercase() || c == '_')));
    }

    /// The book's troubleshooting table names exactly the codes there are.
    #[test]
    fn the_book_refusal_table_lists_exactly_these_codes() {
        let page = include_str!("../docs/src/operations/troubleshooting.md");
        let mut documented = BTreeSet::new();
        for row in page.lines().skip_while(|l| !l.starts_with("| code")) {
            if !row.starts_with('|') {
                break;
            }
            let first = row.split('|').nth(1).unwrap_or_default();
            for code in first.split('`').skip(1).step_by(2) {
                documented.insert(code.to_string());
            }
        }
        documented.remove("code");
        let known: BTreeSet<String> = RefusalCode::ALL
            .iter()
            .map(|c| c.as_str().to_string())
            .collect();
        assert_eq!(
            documented, known,
            "docs/src/operations/troubleshooting.md table vs RefusalCode::ALL"
        );
    }
}
