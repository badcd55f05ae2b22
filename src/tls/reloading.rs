//! A value read from files that rotate under the service (cert-manager's
//! certificates, kubelet's projected tokens): read again whenever the
//! files' bytes change, so that a rotation needs no restart; a new version
//! that cannot be used keeps the old one, and the log says so once.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use sha2::{Digest, Sha256};

use super::files::{read, TlsFileError};

type Parse<T> = fn(&[(PathBuf, Vec<u8>)]) -> Result<T, TlsFileError>;

pub(crate) struct Reloading<T> {
    /// The config key the files come from, for the log.
    what: String,
    files: Vec<PathBuf>,
    parse: Parse<T>,
    state: Mutex<State<T>>,
}

struct State<T> {
    /// The digest of the files the value was made from.
    read: [u8; 32],
    value: Arc<T>,
    /// The digest of the last version refused (said once, not per read).
    refused: Option<[u8; 32]>,
}

impl<T> std::fmt::Debug for Reloading<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl<T> Reloading<T> {
    /// Reads `files` now: the first version must be usable.
    pub(crate) fn new(
        what: impl Into<String>,
        files: Vec<PathBuf>,
        parse: Parse<T>,
    ) -> Result<Reloading<T>, TlsFileError> {
        let contents = read_all(&files)?;
        let value = Arc::new(parse(&contents)?);
        Ok(Reloading {
            what: what.into(),
            files,
            parse,
            state: Mutex::new(State {
                read: digest(&contents),
                value,
                refused: None,
            }),
        })
    }

    /// The value of the files as they are now, or the last usable one.
    pub(crate) fn current(&self) -> Arc<T> {
        let contents = read_all(&self.files);
        let mut state = self.state.lock().unwrap_or_else(|p| p.into_inner());
        let contents = match contents {
            Ok(contents) => contents,
            Err(e) => {
                let seen = Sha256::digest(e.to_string().as_bytes()).into();
                self.refuse(&mut state, seen, &e);
                return state.value.clone();
            }
        };
        let now = digest(&contents);
        if now == state.read {
            // Back to the version in use: a later bad one is said again.
            state.refused = None;
            return state.value.clone();
        }
        match (self.parse)(&contents) {
            Ok(value) => {
                tracing::info!(
                    what = %self.what,
                    "{} changed on disk; the new version is used from now on",
                    self.what
                );
                state.read = now;
                state.value = Arc::new(value);
                state.refused = None;
            }
            Err(e) => self.refuse(&mut state, now, &e),
        }
        state.value.clone()
    }

    fn refuse(&self, state: &mut State<T>, seen: [u8; 32], e: &TlsFileError) {
        if state.refused != Some(seen) {
            tracing::warn!(
                what = %self.what,
                "{} {e}; keeping the version read before until the file is usable",
                self.what
            );
            state.refused = Some(seen);
        }
    }
}

fn read_all(files: &[PathBuf]) -> Result<Vec<(PathBuf, Vec<u8>)>, TlsFileError> {
    files.iter().map(|f| Ok((f.clone(), read(f)?))).collect()
}

fn digest(contents: &[(PathBuf, Vec<u8>)]) -> [u8; 32] {
    let mut hash = Sha256::new();
    for (_, bytes) in contents {
        hash.update((bytes.len() as u64).to_be_bytes());
        hash.update(bytes);
    }
    hash.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(contents: &[(PathBuf, Vec<u8>)]) -> Result<String, TlsFileError> {
        let s = String::from_utf8_lossy(&contents[0].1).into_owned();
        if s.starts_with("bad") {
            Err(super::super::files::fail(&contents[0].0, "is bad"))
        } else {
            Ok(s)
        }
    }

    #[test]
    fn a_change_is_read_and_an_unusable_one_keeps_the_last_good_version() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        std::fs::write(&path, "one").unwrap();
        let r = Reloading::new("test.file", vec![path.clone()], text).unwrap();
        assert_eq!(*r.current(), "one");
        std::fs::write(&path, "two").unwrap();
        assert_eq!(*r.current(), "two");
        std::fs::write(&path, "bad").unwrap();
        assert_eq!(*r.current(), "two");
        std::fs::remove_file(&path).unwrap();
        assert_eq!(*r.current(), "two");
        std::fs::write(&path, "three").unwrap();
        assert_eq!(*r.current(), "three");
    }

    #[test]
    fn the_first_version_must_be_usable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f");
        let e = Reloading::new("test.file", vec![path.clone()], text).unwrap_err();
        assert!(e.to_string().ends_with("not found"), "{e}");
        std::fs::write(&path, "bad").unwrap();
        let e = Reloading::new("test.file", vec![path], text).unwrap_err();
        assert!(e.to_string().ends_with("is bad"), "{e}");
    }
}
