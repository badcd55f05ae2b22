//! A throwaway private CA and the certificates it signs, for `dev --tls`
//! and the tests: the shape of a production network (a company CA, server
//! and client certificates) without one.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyPair,
};

/// A private CA in a directory, as `ca.pem`, with the files it signs.
pub struct Pki {
    dir: PathBuf,
    ca: Issuer<'static, KeyPair>,
}

/// A certificate file and its key file.
pub type CertAndKey = (PathBuf, PathBuf);

impl Pki {
    /// A new CA called `name`, written to `dir/ca.pem`.
    pub fn new(dir: &Path, name: &str) -> Result<Pki, String> {
        let mut params = CertificateParams::new(Vec::<String>::new()).map_err(text)?;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params
            .distinguished_name
            .push(DnType::CommonName, format!("{name} CA"));
        let key = KeyPair::generate().map_err(text)?;
        let cert = params.self_signed(&key).map_err(text)?;
        write(&dir.join("ca.pem"), &cert.pem(), false)?;
        Ok(Pki {
            dir: dir.to_path_buf(),
            ca: Issuer::new(params, key),
        })
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }

    /// The CA's certificate file.
    pub fn ca_file(&self) -> PathBuf {
        self.path("ca.pem")
    }

    /// A certificate for `names` (host names or addresses), valid from
    /// `from` to `until` days from now, written as `<file>.pem` and
    /// `<file>-key.pem` (private to this user).
    pub fn issue(
        &self,
        file: &str,
        names: &[&str],
        usage: ExtendedKeyUsagePurpose,
        (from, until): (i64, i64),
    ) -> Result<CertAndKey, String> {
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut params = CertificateParams::new(names).map_err(text)?;
        params.distinguished_name.push(DnType::CommonName, file);
        params.extended_key_usages = vec![usage];
        let now = time::OffsetDateTime::now_utc();
        params.not_before = now + time::Duration::days(from);
        params.not_after = now + time::Duration::days(until);
        let key = KeyPair::generate().map_err(text)?;
        let cert = params.signed_by(&key, &self.ca).map_err(text)?;
        let (cert_path, key_path) = (
            self.path(&format!("{file}.pem")),
            self.path(&format!("{file}-key.pem")),
        );
        write(&cert_path, &cert.pem(), false)?;
        write(&key_path, &key.serialize_pem(), true)?;
        Ok((cert_path, key_path))
    }

    /// A server certificate for `names`, valid for 30 days, as `file`.
    pub fn server(&self, file: &str, names: &[&str]) -> Result<CertAndKey, String> {
        self.issue(file, names, ExtendedKeyUsagePurpose::ServerAuth, (-1, 30))
    }

    /// A client certificate valid from `validity.0` to `validity.1` days
    /// from now.
    pub fn client(&self, file: &str, validity: (i64, i64)) -> Result<CertAndKey, String> {
        self.issue(file, &[], ExtendedKeyUsagePurpose::ClientAuth, validity)
    }
}

fn text(e: impl std::fmt::Display) -> String {
    format!("cannot make a certificate: {e}")
}

/// Writes `path`; a key only this user may read, and never over a link.
fn write(path: &Path, text: &str, private: bool) -> Result<(), String> {
    let _ = std::fs::remove_file(path);
    let written = if private {
        crate::secrets::create_private(path, text)
    } else {
        std::fs::write(path, text)
    };
    written.map_err(|e| format!("cannot write {}: {e}", path.display()))
}
