//! Secrets (cached tokens, a nats context's password) are read and written
//! only through directories this user alone controls: whoever can write a
//! directory can delete a file in it or put their own refresh token there,
//! and `token` would then hand out their identity.
//!
//! Below a base the user is trusted with (`$XDG_CACHE_HOME`, or a config
//! directory), every directory on the way is checked before a secret goes
//! through it: it must be a directory (not a symlink, which this client
//! never makes), owned by this user, and writable by no one else. A
//! directory of this user's with a wider mode is repaired (0700); anything
//! else is refused with what to fix. Files are held to the same: owned by
//! this user, not a symlink, readable by no one else (repaired to 0600).

use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use super::ClientError;

/// This process's effective user id.
fn me() -> u32 {
    // SAFETY: geteuid has no preconditions and cannot fail.
    unsafe { libc::geteuid() }
}

/// The directories from below `base` down to `dir`, outermost first.
fn chain(base: &Path, dir: &Path) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| *d != base && d.starts_with(base))
        .map(Path::to_path_buf)
        .collect();
    out.reverse();
    out
}

/// Checks (and with `create`, makes) every directory below `base` down to
/// `dir`. Returns false when one is missing and `create` is off.
pub(crate) fn secure_dir(base: &Path, dir: &Path, create: bool) -> Result<bool, ClientError> {
    if create && !base.as_os_str().is_empty() {
        // The base is the user's own (their cache or config directory);
        // only what this client puts below it is checked.
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(base)
            .map_err(|e| {
                ClientError::failed(format!("cannot create {}: {}", base.display(), e.kind()))
            })?;
    }
    for d in chain(base, dir) {
        match std::fs::symlink_metadata(&d) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                if !create {
                    return Ok(false);
                }
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&d)
                    .map_err(|e| {
                        ClientError::failed(format!("cannot create {}: {}", d.display(), e.kind()))
                    })?;
            }
            Err(e) => {
                return Err(ClientError::failed(format!(
                    "cannot inspect {}: {}",
                    d.display(),
                    e.kind()
                )))
            }
            Ok(m) if m.file_type().is_symlink() => {
                return Err(ClientError::failed(format!(
                    "{} is a symlink, which this client never makes: secrets do not go through a path someone else may control; remove it (it is made again, private)",
                    d.display()
                )))
            }
            Ok(m) if !m.is_dir() => {
                return Err(ClientError::failed(format!(
                    "{} is not a directory; remove it",
                    d.display()
                )))
            }
            Ok(m) if m.uid() != me() => {
                return Err(ClientError::failed(format!(
                    "{} is owned by uid {}, not by you (uid {}): whoever owns it can replace the secrets in it; remove it (it is made again, private)",
                    d.display(),
                    m.uid(),
                    me()
                )))
            }
            Ok(m) if m.mode() & 0o077 != 0 => {
                std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o700)).map_err(
                    |e| {
                        ClientError::failed(format!(
                            "{} is open to other users (mode {:o}) and cannot be made private: {}",
                            d.display(),
                            m.mode() & 0o777,
                            e.kind()
                        ))
                    },
                )?;
            }
            Ok(_) => {}
        }
    }
    Ok(true)
}

/// Checks a secret file before it is read: `Ok(false)` when it is not
/// there.
pub(crate) fn check_file(path: &Path) -> Result<bool, ClientError> {
    match std::fs::symlink_metadata(path) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(false),
        Err(e) => Err(ClientError::failed(format!(
            "cannot inspect {}: {}",
            path.display(),
            e.kind()
        ))),
        Ok(m) if !m.is_file() => Err(ClientError::failed(format!(
            "{} is not a plain file (a symlink or something else); remove it",
            path.display()
        ))),
        Ok(m) if m.uid() != me() => Err(ClientError::failed(format!(
            "{} is owned by uid {}, not by you (uid {}): it is not your secret; remove it",
            path.display(),
            m.uid(),
            me()
        ))),
        Ok(m) if m.mode() & 0o077 != 0 => {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(
                |e| {
                    ClientError::failed(format!(
                        "{} is readable by other users and cannot be made private: {}",
                        path.display(),
                        e.kind()
                    ))
                },
            )?;
            Ok(true)
        }
        Ok(_) => Ok(true),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn directories_are_made_private_repaired_or_refused() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("app").join("tokens");
        assert!(!secure_dir(base.path(), &dir, false).unwrap());
        assert!(secure_dir(base.path(), &dir, true).unwrap());
        for d in [base.path().join("app"), dir.clone()] {
            let mode = std::fs::metadata(&d).unwrap().mode() & 0o777;
            assert_eq!(mode, 0o700, "{}", d.display());
        }
        // Someone (or an old tool) opened it: repaired.
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        assert!(secure_dir(base.path(), &dir, true).unwrap());
        assert_eq!(std::fs::metadata(&dir).unwrap().mode() & 0o777, 0o700);
        // A symlink to an open directory: refused.
        let elsewhere = tempfile::tempdir().unwrap();
        std::fs::remove_dir(&dir).unwrap();
        std::os::unix::fs::symlink(elsewhere.path(), &dir).unwrap();
        let e = secure_dir(base.path(), &dir, true).unwrap_err().to_string();
        assert!(e.contains("is a symlink"), "{e}");
        // A file another user could have put there: refused, by owner.
        let file = base.path().join("app").join("token.json");
        std::fs::write(&file, "{}").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(check_file(&file).unwrap());
        assert_eq!(std::fs::metadata(&file).unwrap().mode() & 0o777, 0o600);
        let link = base.path().join("app").join("link.json");
        std::os::unix::fs::symlink(&file, &link).unwrap();
        assert!(check_file(&link).is_err());
    }
}
