//! An nkey that signs JWTs. Every answer takes two Ed25519 signatures (the
//! user JWT and the response), so signing is a third of a decision's CPU.
//! The seed is loaded into aws-lc as well as nkeys: aws-lc's Ed25519 signs
//! in about half the time of ed25519-dalek's (8.8 vs 16 µs on the CI
//! machine), and Ed25519 is deterministic, so the signatures are the same
//! bytes. nkeys stays the one that reads seeds and spells public keys.

use aws_lc_rs::signature::Ed25519KeyPair;

pub struct SigningKey {
    pair: nkeys::KeyPair,
    public: String,
    fast: Ed25519KeyPair,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("the nkey has no seed, so it cannot sign")]
pub struct NoSeed;

impl SigningKey {
    /// The signing key of a key pair made from a seed (or generated).
    pub fn new(pair: nkeys::KeyPair) -> Result<Self, NoSeed> {
        let seed = pair.seed().map_err(|_| NoSeed)?;
        let (_, raw_seed) = nkeys::decode_seed(&seed).map_err(|_| NoSeed)?;
        let public = pair.public_key();
        let (_, raw_public) = nkeys::from_public_key(&public).map_err(|_| NoSeed)?;
        // Checks that both libraries derive the same public key.
        let fast = Ed25519KeyPair::from_seed_and_public_key(&raw_seed, &raw_public)
            .expect("aws-lc and nkeys derive the same Ed25519 public key");
        Ok(SigningKey { pair, public, fast })
    }

    /// The signing key of a copy of `pair`.
    pub fn of(pair: &nkeys::KeyPair) -> Result<Self, NoSeed> {
        let seed = pair.seed().map_err(|_| NoSeed)?;
        Self::new(nkeys::KeyPair::from_seed(&seed).map_err(|_| NoSeed)?)
    }

    /// The public nkey (`A...`, `N...`, ...).
    pub fn public_key(&self) -> &str {
        &self.public
    }

    /// The nkeys key pair, for what only nkeys does (its seed, its kind).
    pub fn pair(&self) -> &nkeys::KeyPair {
        &self.pair
    }

    /// The Ed25519 signature of `message`.
    pub fn sign(&self, message: &[u8]) -> impl AsRef<[u8]> {
        self.fast.sign(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signs_the_same_bytes_as_nkeys_and_verifies_with_nkeys() {
        for pair in [
            nkeys::KeyPair::new_account(),
            nkeys::KeyPair::new_server(),
            nkeys::KeyPair::new_user(),
        ] {
            let key = SigningKey::of(&pair).unwrap();
            assert_eq!(key.public_key(), pair.public_key());
            for message in [&b""[..], b"x", &[7u8; 5000]] {
                let ours = key.sign(message);
                assert_eq!(ours.as_ref(), pair.sign(message).unwrap().as_slice());
                pair.verify(message, ours.as_ref()).unwrap();
            }
        }
    }

    #[test]
    fn a_public_key_alone_cannot_sign() {
        let public = nkeys::KeyPair::new_account().public_key();
        let pair = nkeys::KeyPair::from_public_key(&public).unwrap();
        assert_eq!(SigningKey::new(pair).err(), Some(NoSeed));
    }
}
