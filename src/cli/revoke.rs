//! `nats-oidc-callout revoke`: an admin's revocation. Puts one entry into
//! the revocation list's bucket (`revocation.kv_bucket`) with the service's
//! own NATS login, stamped now; every running replica follows the bucket,
//! logs the entry and refuses the tokens it covers from then on.

use std::process::ExitCode;
use std::sync::{Arc, Mutex};

use clap::{ArgGroup, Args};

use crate::cli::error::CliError;
use crate::clock::{rfc3339, unix_now};
use crate::config::Config;
use crate::policy::revocations::{Covered, Revocation, RevocationList};
use crate::service::{connect_once, Revoker};

/// The signal the entry names (`backchannel` is the provider's, `request`
/// a revocation request's).
const SIGNAL: &str = "admin";

#[derive(Args, Debug)]
#[command(group(ArgGroup::new("covered").required(true).args(["sub", "sid", "user"])))]
pub(super) struct RevokeArgs {
    /// The name of the [oidc] block whose tokens are revoked ("default" for
    /// a lone [oidc] section).
    #[arg(long)]
    issuer: String,
    /// Every token of this subject (the `sub` claim): all the person's
    /// sessions.
    #[arg(long)]
    sub: Option<String>,
    /// Every token of this login session (the `sid` claim).
    #[arg(long)]
    sid: Option<String>,
    /// Every token that maps to this NATS user name.
    #[arg(long)]
    user: Option<String>,
}

impl RevokeArgs {
    /// Whom the command revokes. Checked here rather than by a clap value
    /// parser: clap would echo a rejected value raw, control characters
    /// and all, into the terminal.
    fn covered(&self) -> Result<Covered, CliError> {
        let (kind, value) = match (&self.sub, &self.sid, &self.user) {
            (Some(v), _, _) => ("sub", v),
            (_, Some(v), _) => ("sid", v),
            (_, _, Some(v)) => ("user", v),
            // The required ArgGroup makes clap refuse this first.
            _ => {
                return Err(CliError::Usage(
                    "revoke needs one of --sub, --sid, --user".into(),
                ))
            }
        };
        Covered::named(kind, value)
            .map_err(|problem| CliError::Usage(format!("--{kind} {problem}")))
    }
}

pub(super) fn run(config: &Config, args: RevokeArgs) -> Result<ExitCode, CliError> {
    let bucket = config.revocation.kv_bucket.as_deref().ok_or_else(|| {
        CliError::Usage(
            "the config has no revocation.kv_bucket: revocation is off, and no running service would read the entry".into(),
        )
    })?;
    let issuer = issuer(config, &args.issuer)?;
    let covered = args.covered()?;
    let revocation = super::block_on(put(config, bucket, issuer, covered))??;
    println!("{}", said(&revocation));
    Ok(ExitCode::SUCCESS)
}

/// The `[oidc]` block `name` names: a revocation of another name would sit
/// in the list and cover nothing.
fn issuer(config: &Config, name: &str) -> Result<String, CliError> {
    config.check_issuer_name(name).map_err(|problem| {
        CliError::Usage(format!("--issuer {}: {problem}", crate::text::name(name)))
    })?;
    Ok(name.to_string())
}

/// Connects with the service's login and puts the entry, stamped once
/// connected: tokens issued while the connection was being made are
/// covered too.
async fn put(
    config: &Config,
    bucket: &str,
    issuer: String,
    covered: Covered,
) -> Result<Revocation, CliError> {
    // A permissions violation arrives apart from the put that caused it,
    // which then only times out: kept, to say why.
    let heard: Arc<Mutex<Option<String>>> = Arc::default();
    let said = heard.clone();
    let client = connect_once(&config.nats, "revoke", move |e| {
        *said.lock().unwrap_or_else(|p| p.into_inner()) = Some(e);
    })
    .await
    .map_err(|e| CliError::Failed(e.to_string()))?;
    let list = Arc::new(RevocationList::new(config.revocation.max_token_lifetime));
    let revocation = Revocation {
        issuer,
        covered,
        stamp: list.stamp(unix_now(), SIGNAL),
    };
    let stored = Revoker::new(client, bucket, list)
        .revoke(revocation.clone())
        .await;
    stored.map_err(|e| {
        let server = heard.lock().unwrap_or_else(|p| p.into_inner()).take();
        CliError::Failed(match server {
            Some(s) => format!("{e} (nats-server said: {})", crate::text::reason(&s)),
            None => e,
        })
    })?;
    Ok(revocation)
}

/// The one line the command prints.
fn said(revocation: &Revocation) -> String {
    format!(
        "revoked {} of issuer {} (signal {SIGNAL}): tokens issued until now ({}) are refused, a new login is admitted; the entry lasts until {}",
        revocation.covered,
        revocation.issuer,
        rfc3339(revocation.stamp.at),
        rfc3339(revocation.stamp.until)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::policy::revocations::MAX_VALUE_BYTES;

    fn args(sub: Option<&str>, sid: Option<&str>, user: Option<&str>) -> RevokeArgs {
        RevokeArgs {
            issuer: "corp".into(),
            sub: sub.map(str::to_string),
            sid: sid.map(str::to_string),
            user: user.map(str::to_string),
        }
    }

    #[test]
    fn each_flag_revokes_its_kind() {
        let covered = |a: RevokeArgs| a.covered().unwrap();
        assert_eq!(
            covered(args(Some("u1"), None, None)),
            Covered::Subject("u1".into())
        );
        assert_eq!(
            covered(args(None, Some("s1"), None)),
            Covered::Session("s1".into())
        );
        assert_eq!(
            covered(args(None, None, Some("ana"))),
            Covered::User("ana".into())
        );
    }

    #[test]
    fn values_must_be_plain_bounded_text_and_are_shown_escaped() {
        let refused = |v: &str| args(None, None, Some(v)).covered().unwrap_err().to_string();
        assert_eq!(refused(""), "--user is empty");
        assert!(refused(&"a".repeat(MAX_VALUE_BYTES + 1)).contains("more than 1024"));
        let e = refused("ana\n\u{1b}[2Kok");
        assert!(e.contains("control characters"), "{e}");
        assert!(!e.contains('\n') && !e.contains('\u{1b}'), "{e:?}");
        assert!(args(None, None, Some(&"é".repeat(512))).covered().is_ok());
        // Printable, not ASCII only: names in any script are revocable.
        assert!(args(Some("o'brien 日本"), None, None).covered().is_ok());
    }

    #[test]
    fn the_line_says_what_was_revoked_and_what_follows() {
        let line = said(&Revocation {
            issuer: "corp".into(),
            covered: Covered::User("a\u{202e}b".into()),
            stamp: RevocationList::new(std::time::Duration::from_secs(3600)).stamp(0, SIGNAL),
        });
        assert_eq!(
            line,
            "revoked user a\\u{202e}b of issuer corp (signal admin): tokens issued until now (1970-01-01T00:00:00Z) are refused, a new login is admitted; the entry lasts until 1970-01-01T01:00:00Z"
        );
    }
}
