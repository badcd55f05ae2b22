//! xkey sealing as nats-server does it: `xkv1`, a 24-byte nonce, then a
//! NaCl box (X25519, XSalsa20-Poly1305) between the server's curve key and
//! ours. The X25519 agreement depends only on the two keys, so it is done
//! once per server key and kept (nkeys' `XKey::open`/`seal` would redo it
//! twice for every request).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crypto_box::aead::{Aead, AeadCore, OsRng};
use crypto_box::{PublicKey, SalsaBox, SecretKey};

const VERSION: &[u8] = b"xkv1";
const NONCE_LEN: usize = 24;
/// Server keys remembered at once. Each nats-server process has its own;
/// a cluster has a handful. Past this the map starts over, so keys sent by
/// a client that may publish requests cannot grow it without bound.
const MAX_SERVERS: usize = 256;

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum XkeyError {
    #[error("not a curve public key (X...)")]
    BadServerKey,
    #[error("cannot open: not sealed to our xkey by that server key")]
    Open,
    #[error("our xkey has no seed")]
    NoSeed,
}

/// Our curve key, and the boxes shared with the server keys met so far.
pub struct OurXkey {
    key: nkeys::XKey,
    secret: SecretKey,
    shared: Mutex<HashMap<String, Arc<SalsaBox>>>,
}

/// A server's curve key and the box it shares with ours.
#[derive(Clone)]
pub struct ServerXkey {
    public: String,
    shared: Arc<SalsaBox>,
}

impl std::fmt::Debug for ServerXkey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerXkey({})", self.public)
    }
}

impl ServerXkey {
    pub fn public_key(&self) -> &str {
        &self.public
    }
}

impl OurXkey {
    pub fn new(key: nkeys::XKey) -> Result<OurXkey, XkeyError> {
        let seed = key.seed().map_err(|_| XkeyError::NoSeed)?;
        let (_, raw) = nkeys::decode_seed(&seed).map_err(|_| XkeyError::NoSeed)?;
        Ok(OurXkey {
            key,
            secret: SecretKey::from_bytes(raw),
            shared: Mutex::new(HashMap::new()),
        })
    }

    pub fn public_key(&self) -> String {
        self.key.public_key()
    }

    pub fn key(&self) -> &nkeys::XKey {
        &self.key
    }

    /// The server key a request names (its `Nats-Server-Xkey` header).
    pub fn server(&self, public: &str) -> Result<ServerXkey, XkeyError> {
        if let Some(shared) = self.lock().get(public) {
            return Ok(ServerXkey {
                public: public.to_string(),
                shared: shared.clone(),
            });
        }
        // nkeys checks the prefix and the checksum; the raw key is the 32
        // bytes after the prefix byte.
        nkeys::XKey::from_public_key(public).map_err(|_| XkeyError::BadServerKey)?;
        let raw = data_encoding::BASE32_NOPAD
            .decode(public.as_bytes())
            .map_err(|_| XkeyError::BadServerKey)?;
        let bytes: [u8; 32] = raw
            .get(1..33)
            .and_then(|b| b.try_into().ok())
            .ok_or(XkeyError::BadServerKey)?;
        let shared = Arc::new(SalsaBox::new(&PublicKey::from(bytes), &self.secret));
        let mut map = self.lock();
        if map.len() >= MAX_SERVERS {
            map.clear();
        }
        map.insert(public.to_string(), shared.clone());
        Ok(ServerXkey {
            public: public.to_string(),
            shared,
        })
    }

    /// A payload the server sealed to us.
    pub fn open(&self, from: &ServerXkey, sealed: &[u8]) -> Result<Vec<u8>, XkeyError> {
        let body = sealed.strip_prefix(VERSION).ok_or(XkeyError::Open)?;
        if body.len() <= NONCE_LEN {
            return Err(XkeyError::Open);
        }
        let (nonce, ciphertext) = body.split_at(NONCE_LEN);
        from.shared
            .decrypt(nonce.into(), ciphertext)
            .map_err(|_| XkeyError::Open)
    }

    /// `data` sealed to the server, with a fresh random nonce.
    pub fn seal(&self, to: &ServerXkey, data: &[u8]) -> Vec<u8> {
        let nonce = SalsaBox::generate_nonce(&mut OsRng);
        let ciphertext = to
            .shared
            .encrypt(&nonce, data)
            .expect("XSalsa20-Poly1305 encryption does not fail");
        let mut out = Vec::with_capacity(VERSION.len() + NONCE_LEN + ciphertext.len());
        out.extend_from_slice(VERSION);
        out.extend_from_slice(nonce.as_slice());
        out.extend_from_slice(&ciphertext);
        out
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<SalsaBox>>> {
        // The map holds no invariant a panicking holder could break.
        self.shared.lock().unwrap_or_else(|p| p.into_inner())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interoperates_with_nkeys_both_ways() {
        let server = nkeys::XKey::new();
        let ours = OurXkey::new(nkeys::XKey::new()).unwrap();
        let ours_public = nkeys::XKey::from_public_key(&ours.public_key()).unwrap();
        let from = ours.server(&server.public_key()).unwrap();

        let sealed = server.seal(b"request", &ours_public).unwrap();
        assert_eq!(ours.open(&from, &sealed).unwrap(), b"request");
        let answer = ours.seal(&from, b"response");
        assert_eq!(
            server.open(&answer, &ours_public).unwrap(),
            b"response",
            "and nkeys opens what we seal"
        );
    }

    #[test]
    fn a_wrong_key_or_a_tampered_box_does_not_open() {
        let server = nkeys::XKey::new();
        let ours = OurXkey::new(nkeys::XKey::new()).unwrap();
        let ours_public = nkeys::XKey::from_public_key(&ours.public_key()).unwrap();
        let mut sealed = server.seal(b"request", &ours_public).unwrap();
        let other = ours.server(&nkeys::XKey::new().public_key()).unwrap();
        assert_eq!(ours.open(&other, &sealed), Err(XkeyError::Open));
        let from = ours.server(&server.public_key()).unwrap();
        let last = sealed.len() - 1;
        sealed[last] ^= 1;
        assert_eq!(ours.open(&from, &sealed), Err(XkeyError::Open));
        assert_eq!(ours.open(&from, b"xkv1short"), Err(XkeyError::Open));
        assert_eq!(ours.open(&from, b"nope"), Err(XkeyError::Open));
        for bad in [
            "",
            "X",
            "not a key",
            &nkeys::KeyPair::new_user().public_key(),
        ] {
            assert_eq!(
                ours.server(bad).unwrap_err(),
                XkeyError::BadServerKey,
                "{bad}"
            );
        }
    }

    #[test]
    fn the_shared_keys_stay_bounded() {
        let ours = OurXkey::new(nkeys::XKey::new()).unwrap();
        for _ in 0..MAX_SERVERS + 5 {
            ours.server(&nkeys::XKey::new().public_key()).unwrap();
        }
        assert!(ours.lock().len() <= MAX_SERVERS);
    }
}
