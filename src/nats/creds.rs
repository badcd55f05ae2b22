//! The `.creds` file format of NATS clients: a user JWT and the user's
//! nkey seed, each between its BEGIN and END lines.

use crate::nats::jwt::{decode_verified, Issued};

/// The text of a `.creds` file.
pub fn format(user_jwt: &str, user_seed: &str) -> String {
    format!(
        "-----BEGIN NATS USER JWT-----\n{user_jwt}\n------END NATS USER JWT------\n\n\
         ************************* IMPORTANT *************************\n\
         NKEY Seed printed below can be used to sign and prove identity.\n\
         NKEYs are sensitive and should be treated as secrets.\n\n\
         -----BEGIN USER NKEY SEED-----\n{user_seed}\n------END USER NKEY SEED------\n\n\
         *************************************************************\n"
    )
}

/// The user JWT and the nkey seed in a `.creds` file's text: the client
/// crate's (programs read their sentinel's file with them).
pub(crate) use nats_oidc_client::creds::user_jwt;

/// The account a user JWT belongs to: its `issuer_account` when a signing
/// key signed it, else its signer; `None` unless an account key signed it.
pub(crate) fn account_of(user_jwt: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Claims {
        iss: String,
        #[serde(default)]
        nats: Body,
    }
    #[derive(serde::Deserialize, Default)]
    struct Body {
        #[serde(default)]
        issuer_account: Option<String>,
    }
    impl Issued for Claims {
        fn issuer(&self) -> &str {
            &self.iss
        }
    }
    let claims: Claims = decode_verified(user_jwt.as_bytes(), 'A').ok()?;
    Some(claims.nats.issuer_account.unwrap_or(claims.iss))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_creds_file_names_the_account_of_its_user() {
        let account = nkeys::KeyPair::new_account();
        let signing = nkeys::KeyPair::new_account();
        let user = nkeys::KeyPair::new_user();
        for (signer, expected) in [
            (&account, account.public_key()),
            (&signing, account.public_key()),
        ] {
            let jwt = crate::nats::user_jwt::sentinel(
                &user.public_key(),
                &account.public_key(),
                &crate::nats::signing_key::SigningKey::of(signer).unwrap(),
                1_800_000_000,
            );
            let text = format(&jwt, &user.seed().unwrap());
            assert_eq!(user_jwt(&text), Some(jwt.as_str()));
            assert_eq!(account_of(&jwt), Some(expected));
        }
        assert_eq!(user_jwt("no jwt here"), None);
        // A JWT whose signature does not verify names no account.
        let jwt = crate::nats::user_jwt::sentinel(
            &user.public_key(),
            &account.public_key(),
            &crate::nats::signing_key::SigningKey::of(&account).unwrap(),
            1_800_000_000,
        );
        let mut forged = jwt.into_bytes();
        let last = forged.len() - 2;
        forged[last] = if forged[last] == b'A' { b'B' } else { b'A' };
        assert_eq!(account_of(std::str::from_utf8(&forged).unwrap()), None);
    }
}
