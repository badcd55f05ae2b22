//! Revocation requests over NATS (`[revocation] request_subject`): an
//! admin's revocation, the same as `nats-oidc-callout revoke`, sent as a
//! NATS request to a subject of the service's own account. Who may send
//! one is nats-server's to say: only a user of that account with publish
//! permission on the subject reaches it (the README shows one), so the
//! service takes every request that arrives as the admin's.
//!
//! A request is a JSON object: `{"issuer": "NAME", "sub": "..."}`, with
//! exactly one of `sub`, `sid` or `user`, and nothing else. It is checked
//! as the command checks its flags, stamped now (signal `request`) and put
//! into the revocation list by the [`Revoker`] that carries out back-channel
//! logouts. The answer is `{"revoked": {...}}` or `{"error": "..."}`, and
//! each request logs one line.

use std::sync::Arc;

use futures::StreamExt;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::clock::unix_now;
use crate::config::Config;
use crate::policy::revocations::{Covered, Revocation};
use crate::service::live::Live;
use crate::service::revoke::Revoker;
use crate::text;

/// The signal a request's entry names: apart from `admin` (the command,
/// which logs in with the service's own credentials), so that the log of
/// every replica says which door a revocation came through, the admin's
/// NATS user or the service's credentials.
pub(super) const SIGNAL: &str = "request";

/// Larger requests are refused unread: the object is an issuer name and
/// one value of at most 1024 bytes, which JSON escapes may make six times
/// longer.
pub(super) const MAX_REQUEST_BYTES: usize = 8 * 1024;

/// The request's shape; anything else is refused rather than ignored (a
/// misspelt `sid` must not go unnoticed).
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Body {
    issuer: String,
    sub: Option<String>,
    sid: Option<String>,
    user: Option<String>,
}

/// A request that may be carried out: an issuer of the config, and whom.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Asked {
    pub(super) issuer: String,
    pub(super) covered: Covered,
}

/// Why a request is refused: the reason, escaped, and the issuer it named
/// (escaped and clipped), when it named one.
#[derive(Debug, PartialEq, Eq)]
pub(super) struct Refused {
    pub(super) issuer: Option<String>,
    pub(super) reason: String,
}

impl Refused {
    fn new(issuer: Option<&str>, reason: impl AsRef<str>) -> Refused {
        Refused {
            issuer: issuer.map(|i| text::printable(i, 64)),
            reason: text::reason(reason.as_ref()),
        }
    }
}

/// Reads a request against the issuers of `config`.
pub(super) fn parse(payload: &[u8], config: &Config) -> Result<Asked, Refused> {
    if payload.len() > MAX_REQUEST_BYTES {
        return Err(Refused::new(
            None,
            format!(
                "the request is {} bytes, more than {MAX_REQUEST_BYTES}",
                payload.len()
            ),
        ));
    }
    let body: Body = serde_json::from_slice(payload).map_err(|e| {
        Refused::new(
            None,
            format!(
                "the request is not a JSON object {{\"issuer\": NAME, and one of \"sub\", \"sid\", \"user\"}}: {e}"
            ),
        )
    })?;
    let issuer = Some(body.issuer.as_str());
    let named: Vec<(&str, &str)> = [("sub", &body.sub), ("sid", &body.sid), ("user", &body.user)]
        .into_iter()
        .filter_map(|(kind, value)| value.as_deref().map(|v| (kind, v)))
        .collect();
    let (kind, value) = match named.as_slice() {
        [one] => *one,
        [] => {
            return Err(Refused::new(
                issuer,
                "the request names none of sub, sid, user: it needs exactly one",
            ))
        }
        more => {
            let kinds: Vec<&str> = more.iter().map(|(kind, _)| *kind).collect();
            return Err(Refused::new(
                issuer,
                format!(
                    "the request names {}: it needs exactly one of sub, sid, user",
                    kinds.join(" and ")
                ),
            ));
        }
    };
    config.check_issuer_name(&body.issuer).map_err(|problem| {
        Refused::new(
            issuer,
            format!("issuer {}: {problem}", text::printable(&body.issuer, 64)),
        )
    })?;
    let covered = Covered::named(kind, value)
        .map_err(|problem| Refused::new(issuer, format!("{kind} {problem}")))?;
    Ok(Asked {
        issuer: body.issuer,
        covered,
    })
}

/// The answer to a carried-out revocation.
fn revoked(revocation: &Revocation) -> Value {
    json!({ "revoked": {
        "issuer": revocation.issuer,
        "covered": revocation.covered.to_string(),
        "at": revocation.stamp.at,
        "until": revocation.stamp.until,
    }})
}

fn error(reason: &str) -> Value {
    json!({ "error": reason })
}

/// Answers the requests of `requests` until the task is dropped, one at a
/// time (they are an admin's, and rare).
pub(super) async fn serve(
    mut requests: async_nats::Subscriber,
    client: async_nats::Client,
    live: Arc<Live>,
    revoker: Revoker,
) {
    while let Some(message) = requests.next().await {
        let answer = handle(&live.config(), &revoker, &message.payload).await;
        // A request without a reply subject (a plain publish) is carried
        // out all the same; its one log line is its only answer.
        let Some(reply) = message.reply else {
            continue;
        };
        if let Err(e) = client.publish(reply, answer.to_string().into()).await {
            tracing::warn!("revocation request: the answer could not be sent: {e}");
        }
    }
}

/// Carries one request out, logs one line and returns the answer.
async fn handle(config: &Config, revoker: &Revoker, payload: &[u8]) -> Value {
    let asked = match parse(payload, config) {
        Ok(asked) => asked,
        Err(refused) => {
            tracing::warn!(
                result = "refused",
                issuer = %refused.issuer.as_deref().unwrap_or("-"),
                reason = %refused.reason,
                "revocation request"
            );
            return error(&refused.reason);
        }
    };
    let revocation = Revocation {
        issuer: asked.issuer,
        covered: asked.covered,
        stamp: revoker.stamp(unix_now(), SIGNAL),
    };
    match revoker.revoke(revocation.clone()).await {
        Ok(()) => {
            tracing::info!(
                result = "accepted",
                signal = SIGNAL,
                issuer = %revocation.issuer,
                covered = %revocation.covered,
                at = revocation.stamp.at,
                "revocation request: revoked; tokens issued until then are refused"
            );
            revoked(&revocation)
        }
        Err(e) => {
            let reason = text::reason(&format!(
                "the revocation could not be stored: {e}; this replica refuses the tokens it covers, the others may not: send the request again"
            ));
            tracing::warn!(
                result = "failed",
                issuer = %revocation.issuer,
                covered = %revocation.covered,
                reason = %reason,
                "revocation request"
            );
            error(&reason)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let seed = nkeys::KeyPair::new_account().seed().unwrap();
        let text = format!(
            "[callout]\nissuer_seed = \"{seed}\"\naccount = \"APP\"\n\n\
             [[oidc]]\nname = \"corp\"\nissuer = \"https://idp.example.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\n\n\
             [[oidc]]\nname = \"partner\"\nissuer = \"https://partner.example.com\"\naudience = \"nats\"\nroles_claim = \"roles\"\n\n\
             [roles.reader]\nsub.allow = [\"a\"]\n\n\
             [revocation]\nkv_bucket = \"revocations\"\nrequest_subject = \"nats-oidc-callout.revoke\"\n"
        );
        Config::parse(&text, std::path::Path::new("test.toml")).unwrap()
    }

    fn refused(payload: &str) -> String {
        let r = parse(payload.as_bytes(), &config()).unwrap_err();
        assert!(
            !r.reason.contains('\n') && !r.reason.contains('\u{1b}'),
            "{r:?}"
        );
        r.reason
    }

    #[test]
    fn a_request_names_an_issuer_and_exactly_one_of_sub_sid_user() {
        let c = config();
        let asked = |p: &str| parse(p.as_bytes(), &c).unwrap();
        assert_eq!(
            asked(r#"{"issuer": "corp", "sub": "8f14e45f"}"#),
            Asked {
                issuer: "corp".into(),
                covered: Covered::Subject("8f14e45f".into())
            }
        );
        assert_eq!(
            asked(r#"{"issuer": "partner", "sid": "s1"}"#).covered,
            Covered::Session("s1".into())
        );
        assert_eq!(
            asked(r#"{"user": "ana", "issuer": "corp", "sid": null}"#).covered,
            Covered::User("ana".into())
        );
        // Printable, not ASCII only.
        assert_eq!(
            asked(r#"{"issuer": "corp", "user": "o'brien 日本"}"#).covered,
            Covered::User("o'brien 日本".into())
        );
    }

    #[test]
    fn malformed_requests_are_refused_with_a_precise_reason() {
        let e = refused("");
        assert!(e.starts_with("the request is not a JSON object"), "{e}");
        let e = refused("[1, 2]");
        assert!(e.starts_with("the request is not a JSON object"), "{e}");
        let e = refused(r#"{"sub": "u1"}"#);
        assert!(e.contains("missing field `issuer`"), "{e}");
        let e = refused(r#"{"issuer": 7, "sub": "u1"}"#);
        assert!(e.contains("invalid type"), "{e}");
        let e = refused(r#"{"issuer": "corp", "sub": "u1", "reason": "stolen"}"#);
        assert!(e.contains("unknown field `reason`"), "{e}");
        let e = refused(r#"{"issuer": "corp", "sub": "u1", "sub": "u2"}"#);
        assert!(e.contains("duplicate field `sub`"), "{e}");
        // An unknown field's name is the sender's text: shown escaped.
        let e = refused("{\"issuer\": \"corp\", \"a\\u001b[2Kb\": 1}");
        assert!(e.contains("unknown field `a\\u{1b}[2Kb`"), "{e}");
        assert_eq!(
            refused(r#"{"issuer": "corp"}"#),
            "the request names none of sub, sid, user: it needs exactly one"
        );
        assert_eq!(
            refused(r#"{"issuer": "corp", "sub": "u1", "user": "ana"}"#),
            "the request names sub and user: it needs exactly one of sub, sid, user"
        );
        assert_eq!(
            refused(r#"{"issuer": "corp", "sub": "u1", "sid": "s", "user": "ana"}"#),
            "the request names sub and sid and user: it needs exactly one of sub, sid, user"
        );
    }

    #[test]
    fn values_and_issuers_are_checked_as_the_revoke_command_checks_them() {
        assert_eq!(
            refused(r#"{"issuer": "default", "user": "ana"}"#),
            r#"issuer default: no [oidc] block of that name; the config has ["corp", "partner"]"#
        );
        assert_eq!(
            refused(r#"{"issuer": "corp", "user": ""}"#),
            "user is empty"
        );
        assert_eq!(
            refused(r#"{"issuer": "corp", "sid": "s1\n\u001b[2K"}"#),
            r#"sid "s1\n\u{1b}[2K" has control characters"#
        );
        let long = format!(r#"{{"issuer": "corp", "sub": "{}"}}"#, "a".repeat(1025));
        assert_eq!(refused(&long), "sub is 1025 bytes long, more than 1024");
        // The longest value, every byte escaped, still fits.
        let escaped = "\\u0061".repeat(1024);
        let longest = format!(r#"{{"issuer": "corp", "sub": "{escaped}"}}"#);
        assert!(longest.len() <= MAX_REQUEST_BYTES);
        assert!(parse(longest.as_bytes(), &config()).is_ok());
        let e = refused(&format!(
            r#"{{"issuer": "corp", "sub": "{}"}}"#,
            "a".repeat(MAX_REQUEST_BYTES)
        ));
        assert!(e.starts_with("the request is 8"), "{e}");
        assert!(e.ends_with("bytes, more than 8192"), "{e}");
        // A hostile issuer name is escaped and clipped, in the reason
        // and in the issuer the log names.
        let r = parse(
            format!(
                "{{\"issuer\": \"x\\u202e{}\", \"sub\": \"u\"}}",
                "y".repeat(300)
            )
            .as_bytes(),
            &config(),
        )
        .unwrap_err();
        assert!(r.reason.starts_with("issuer x\\u{202e}yyy"), "{r:?}");
        assert!(!r.reason.contains('\u{202e}'), "{r:?}");
        let shown = r.issuer.unwrap();
        assert!(
            shown.starts_with("x\\u{202e}") && shown.len() < 80,
            "{shown}"
        );
    }

    #[test]
    fn the_answer_says_what_was_revoked() {
        let revocation = Revocation {
            issuer: "corp".into(),
            covered: Covered::Subject("a\u{202e}b".into()),
            stamp: crate::policy::revocations::RevocationList::new(std::time::Duration::from_secs(
                3600,
            ))
            .stamp(100, SIGNAL),
        };
        assert_eq!(
            revoked(&revocation),
            json!({"revoked": {"issuer": "corp", "covered": "sub a\\u{202e}b", "at": 100, "until": 3700}})
        );
        assert_eq!(error("x"), json!({"error": "x"}));
    }
}
