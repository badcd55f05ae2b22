//! Reading nkey seeds. Messages from here never contain the seed itself, only
//! where it came from and what is wrong with it.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SeedKind {
    Account,
    Curve,
    User,
}

impl SeedKind {
    pub(crate) fn prefix(self) -> &'static str {
        match self {
            SeedKind::Account => "SA",
            SeedKind::Curve => "SX",
            SeedKind::User => "SU",
        }
    }

    pub(crate) fn name(self) -> &'static str {
        match self {
            SeedKind::Account => "an account seed",
            SeedKind::Curve => "a curve (xkey) seed",
            SeedKind::User => "a user seed",
        }
    }
}

/// A path for messages. A seed pasted where a file path belongs would be
/// echoed by "No such file" errors, so a path with a seed-shaped component
/// is never shown.
pub(crate) fn shown(path: &Path) -> String {
    if has_seed_shape(&path.to_string_lossy()) {
        "(a value shaped like an nkey seed where a file path belongs; put the seed in a file and name the file here)".into()
    } else {
        path.display().to_string()
    }
}

/// A URL as it may be shown: any user name and password in it are replaced
/// by `***`. Works on strings that do not parse as URLs too, since those are
/// the ones error messages show: everything from the scheme to the last
/// `@` goes (a password may hold `/`, `?` or `#` unencoded), and each
/// comma-separated part is redacted on its own.
pub(crate) fn redact_url(url: &str) -> String {
    if url.contains(',') {
        return url.split(',').map(redact_url).collect::<Vec<_>>().join(",");
    }
    let (scheme, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    match rest.rfind('@') {
        Some(at) => format!("{scheme}***@{}", &rest[at + 1..]),
        None => url.to_string(),
    }
}

/// Whether `text` holds a word shaped like an nkey seed (`S` and 49 or
/// more characters of the base32 alphabet): such text is never echoed.
pub(crate) fn has_seed_shape(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_uppercase() || ('2'..='7').contains(&c)))
        .any(|w| w.len() >= 50 && w.starts_with('S'))
}

/// Why a seed cannot be used. The message never contains the seed.
#[derive(Debug, thiserror::Error)]
pub(crate) enum SeedError {
    #[error("{file}: {reason}")]
    Unreadable { file: String, reason: String },
    #[error("{file}: no nkey seed found (expected {}, starting with {})", .kind.name(), .kind.prefix())]
    NotFound { file: String, kind: SeedKind },
    #[error("not {} (it must start with {})", .0.name(), .0.prefix())]
    WrongKind(SeedKind),
    #[error("not a valid nkey seed ({} with a bad checksum or length)", .0.name())]
    Invalid(SeedKind),
    #[error("{file}: {problem}")]
    InFile {
        file: String,
        problem: Box<SeedError>,
    },
}

/// The first line of a seed file that looks like a seed. nsc and `nk` write
/// seeds alone on a line, possibly with comments or a creds-style block
/// around them.
fn seed_in_file(path: &Path, kind: SeedKind) -> Result<String, SeedError> {
    let text = std::fs::read_to_string(path).map_err(|e| SeedError::Unreadable {
        file: shown(path),
        reason: e.to_string(),
    })?;
    text.lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && l.len() > 50 && !l.contains(' '))
        .map(str::to_string)
        .ok_or(SeedError::NotFound {
            file: shown(path),
            kind,
        })
}

fn in_file(path: &Path) -> impl FnOnce(SeedError) -> SeedError + '_ {
    move |problem| match problem {
        e @ (SeedError::Unreadable { .. } | SeedError::NotFound { .. }) => e,
        problem => SeedError::InFile {
            file: shown(path),
            problem: Box::new(problem),
        },
    }
}

/// An account (`SA...`) or user (`SU...`) key pair from its seed.
pub(crate) fn key_pair(seed: &str, kind: SeedKind) -> Result<nkeys::KeyPair, SeedError> {
    if kind == SeedKind::Curve || !seed.starts_with(kind.prefix()) {
        return Err(SeedError::WrongKind(kind));
    }
    nkeys::KeyPair::from_seed(seed).map_err(|_| SeedError::Invalid(kind))
}

/// A curve (xkey, `SX...`) key from its seed.
pub(crate) fn curve_key(seed: &str) -> Result<nkeys::XKey, SeedError> {
    if !seed.starts_with(SeedKind::Curve.prefix()) {
        return Err(SeedError::WrongKind(SeedKind::Curve));
    }
    nkeys::XKey::from_seed(seed).map_err(|_| SeedError::Invalid(SeedKind::Curve))
}

/// The key pair whose seed is in `path`.
pub(crate) fn key_pair_file(path: &Path, kind: SeedKind) -> Result<nkeys::KeyPair, SeedError> {
    seed_in_file(path, kind).and_then(|s| key_pair(&s, kind).map_err(in_file(path)))
}

/// The curve key whose seed is in `path`.
pub(crate) fn curve_key_file(path: &Path) -> Result<nkeys::XKey, SeedError> {
    seed_in_file(path, SeedKind::Curve).and_then(|s| curve_key(&s).map_err(in_file(path)))
}

/// Writes a new file readable only by its owner; never replaces one.
pub(crate) fn create_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    options.open(path)?.write_all(text.as_bytes())
}

/// Says so when a secret file can be read by every user of the host: a seed
/// lets its reader sign any NATS user into the account.
pub(crate) fn exposure(path: &Path) -> Option<String> {
    use std::os::unix::fs::PermissionsExt;
    let mode = std::fs::metadata(path).ok()?.permissions().mode() & 0o777;
    (mode & 0o004 != 0).then(|| {
        format!(
            "{} is readable by every user on this host (mode {mode:04o}); restrict it: chmod 600 (or mount the secret with mode 0400)",
            shown(path)
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn credentials_in_urls_are_never_shown() {
        for (url, shown) in [
            (
                "nats://auth:s3cret@nats.example:4222",
                "nats://***@nats.example:4222",
            ),
            ("tls://tok3n@[::1]:4222/x", "tls://***@[::1]:4222/x"),
            ("auth:s3cret@127.0.0.1", "***@127.0.0.1"),
            ("nats://a:b@c@host:1", "nats://***@host:1"),
            ("nats://host:4222", "nats://host:4222"),
            (
                "nats://auth:pa/ss@127.0.0.1:4222",
                "nats://***@127.0.0.1:4222",
            ),
            ("nats://auth:pa#ss@h:1", "nats://***@h:1"),
            (
                "nats://a:s1@h1:1,nats://a:s2@h2:1",
                "nats://***@h1:1,nats://***@h2:1",
            ),
            // Over-redacting a path with an @ is the safe side.
            ("https://idp.example/realms/a?x=@", "https://***@"),
        ] {
            assert_eq!(redact_url(url), shown, "{url}");
        }
    }

    #[test]
    fn a_seed_given_as_a_path_is_never_shown() {
        let seed = nkeys::KeyPair::new_account().seed().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = key_pair_file(&dir.path().join(&seed), SeedKind::Account)
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&seed), "{err}");
        assert!(err.contains("shaped like an nkey seed"), "{err}");
        assert_eq!(shown(Path::new("/etc/x/issuer.nk")), "/etc/x/issuer.nk");
    }

    #[test]
    fn world_readable_files_are_reported_and_private_ones_are_not() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("issuer.nk");
        std::fs::write(&path, "x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        let report = exposure(&path).expect("0644 is reported");
        assert!(report.contains("mode 0644"), "{report}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(exposure(&path), None);
    }

    #[test]
    fn account_seed_is_accepted_and_other_kinds_are_named() {
        let account = nkeys::KeyPair::new_account().seed().unwrap();
        let pair = key_pair(&account, SeedKind::Account).unwrap();
        assert_eq!(pair.seed().unwrap(), account);
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        let err = key_pair(&user, SeedKind::Account).unwrap_err().to_string();
        assert!(err.contains("must start with SA"), "{err}");
        assert!(
            !err.contains(&user),
            "the seed must not appear in the message"
        );
    }

    #[test]
    fn corrupted_seed_is_refused_without_echoing_it() {
        let good = nkeys::KeyPair::new_account().seed().unwrap();
        let flipped = if good.as_bytes()[20] == b'A' {
            "B"
        } else {
            "A"
        };
        let seed = format!("{}{}{}", &good[..20], flipped, &good[21..]);
        let err = key_pair(&seed, SeedKind::Account).unwrap_err().to_string();
        assert!(!err.contains(&seed));
    }

    #[test]
    fn curve_seed_reads_from_a_file_with_comments() {
        let xkey = nkeys::XKey::new().seed().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.nk");
        std::fs::write(&path, format!("# xkey for the callout\n{xkey}\n")).unwrap();
        assert_eq!(curve_key_file(&path).unwrap().seed().unwrap(), xkey);
    }
}
