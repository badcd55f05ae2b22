//! A private CA per test: the library's `dev::Pki` (as `dev --tls` makes
//! one) in a directory of its own, removed with it.

use std::path::PathBuf;

use nats_oidc_callout::dev::CertAndKey;

pub struct Pki {
    pki: nats_oidc_callout::dev::Pki,
    _dir: tempfile::TempDir,
}

impl std::ops::Deref for Pki {
    type Target = nats_oidc_callout::dev::Pki;
    fn deref(&self) -> &Self::Target {
        &self.pki
    }
}

impl Pki {
    pub fn new(name: &str) -> Pki {
        let dir = tempfile::tempdir().unwrap();
        Pki {
            pki: nats_oidc_callout::dev::Pki::new(dir.path(), &format!("{name} test")).unwrap(),
            _dir: dir,
        }
    }

    /// A server certificate for `names`, as `server.pem`.
    pub fn server(&self, names: &[&str]) -> CertAndKey {
        self.pki.server("server", names).unwrap()
    }

    /// A client certificate valid from `validity.0` to `validity.1` days
    /// from now, as `<file>.pem`.
    pub fn client(&self, file: &str, validity: (i64, i64)) -> CertAndKey {
        self.pki.client(file, validity).unwrap()
    }

    /// The files of a certificate issued before as `file`.
    pub fn path_pair(&self, file: &str) -> CertAndKey {
        (
            self.path(&format!("{file}.pem")),
            self.path(&format!("{file}-key.pem")),
        )
    }

    /// The wrapped CA, for certificates of other kinds and periods.
    pub fn ca(&self) -> &nats_oidc_callout::dev::Pki {
        &self.pki
    }

    pub fn dir(&self) -> PathBuf {
        self.ca_file().parent().unwrap().to_path_buf()
    }
}
