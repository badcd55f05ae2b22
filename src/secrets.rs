//! Reading nkey seeds. Messages from here never contain the seed itself, only
//! where it came from and what is wrong with it.

use std::path::Path;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SeedKind {
    Account,
    Curve,
    User,
}

impl SeedKind {
    fn prefix(self) -> &'static str {
        match self {
            SeedKind::Account => "SA",
            SeedKind::Curve => "SX",
            SeedKind::User => "SU",
        }
    }

    fn name(self) -> &'static str {
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
pub fn shown(path: &Path) -> String {
    if has_seed_shape(&path.to_string_lossy()) {
        "(a value shaped like an nkey seed where a file path belongs; put the seed in a file and name the file here)".into()
    } else {
        path.display().to_string()
    }
}

/// Whether `text` holds a word shaped like an nkey seed (`S` and 49 or
/// more characters of the base32 alphabet): such text is never echoed.
pub fn has_seed_shape(text: &str) -> bool {
    text.split(|c: char| !(c.is_ascii_uppercase() || ('2'..='7').contains(&c)))
        .any(|w| w.len() >= 50 && w.starts_with('S'))
}

/// Reads a seed file. nsc and `nk` write seeds alone on a line, possibly with
/// comments or a creds-style block around them, so the first line that looks
/// like a seed of the wanted kind is taken.
pub fn read_seed_file(path: &Path, kind: SeedKind) -> Result<String, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", shown(path)))?;
    let seed = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S') && l.len() > 50 && !l.contains(' '))
        .ok_or_else(|| {
            format!(
                "{}: no nkey seed found (expected {}, starting with {})",
                shown(path),
                kind.name(),
                kind.prefix()
            )
        })?;
    check_seed(seed, kind).map_err(|r| format!("{}: {r}", shown(path)))
}

/// Checks that a seed decodes and is of the wanted kind.
pub fn check_seed(seed: &str, kind: SeedKind) -> Result<String, String> {
    if !seed.starts_with(kind.prefix()) {
        return Err(format!(
            "not {} (it must start with {})",
            kind.name(),
            kind.prefix()
        ));
    }
    let valid = match kind {
        SeedKind::Curve => nkeys::XKey::from_seed(seed).is_ok(),
        _ => nkeys::KeyPair::from_seed(seed).is_ok(),
    };
    if valid {
        Ok(seed.to_string())
    } else {
        Err(format!(
            "not a valid nkey seed ({} with a bad checksum or length)",
            kind.name()
        ))
    }
}

/// Says so when a secret file can be read by every user of the host: a seed
/// lets its reader sign any NATS user into the account.
pub fn exposure(path: &Path) -> Option<String> {
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
    fn a_seed_given_as_a_path_is_never_shown() {
        let seed = nkeys::KeyPair::new_account().seed().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let err = read_seed_file(&dir.path().join(&seed), SeedKind::Account).unwrap_err();
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
        assert_eq!(check_seed(&account, SeedKind::Account).unwrap(), account);
        let user = nkeys::KeyPair::new_user().seed().unwrap();
        let err = check_seed(&user, SeedKind::Account).unwrap_err();
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
        let err = check_seed(&seed, SeedKind::Account).unwrap_err();
        assert!(!err.contains(&seed));
    }

    #[test]
    fn curve_seed_reads_from_a_file_with_comments() {
        let xkey = nkeys::XKey::new().seed().unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("x.nk");
        std::fs::write(&path, format!("# xkey for the callout\n{xkey}\n")).unwrap();
        assert_eq!(read_seed_file(&path, SeedKind::Curve).unwrap(), xkey);
    }
}
