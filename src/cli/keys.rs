//! The key commands: `keygen`, `pubkey`, `hash-password`.

use std::path::Path;
use std::process::ExitCode;

use clap::ValueEnum;

use crate::callout::Mode;
use crate::cli::error::CliError;
use crate::clock::unix_now;
use crate::config::Config;
use crate::nats::{creds, user_jwt};
use crate::policy::passwords::MAX_PASSWORD_BYTES;
use crate::secrets::{self, SeedKind};

#[derive(Clone, Copy, ValueEnum)]
pub(super) enum KeyKind {
    Account,
    Curve,
    User,
}

/// A fresh seed to `out` (never replacing a file) or stdout; its public
/// key to stderr.
pub(super) fn keygen(kind: KeyKind, out: Option<&Path>) -> Result<ExitCode, CliError> {
    let (seed, public) = match kind {
        KeyKind::Account => {
            let kp = nkeys::KeyPair::new_account();
            (kp.seed().expect("fresh key has a seed"), kp.public_key())
        }
        KeyKind::Curve => {
            let xk = nkeys::XKey::new();
            (xk.seed().expect("fresh key has a seed"), xk.public_key())
        }
        KeyKind::User => {
            let kp = nkeys::KeyPair::new_user();
            (kp.seed().expect("fresh key has a seed"), kp.public_key())
        }
    };
    match out {
        None => println!("{seed}"),
        Some(path) => {
            if path.exists() {
                return Err(CliError::Usage(format!(
                    "{} exists; not overwriting a seed",
                    path.display()
                )));
            }
            secrets::create_private(path, &format!("{seed}\n"))
                .map_err(|e| CliError::Failed(format!("{}: {e}", path.display())))?;
        }
    }
    eprintln!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// The public key of an account (`SA...`), curve (`SX...`) or user
/// (`SU...`) seed file.
pub(super) fn pubkey(seed_file: &Path) -> Result<ExitCode, CliError> {
    let text = std::fs::read_to_string(seed_file)
        .map_err(|e| CliError::Usage(format!("{}: {e}", secrets::shown(seed_file))))?;
    // The kind is in the seed's prefix (SA account, SX curve, SU user);
    // anything else is reported as "not an account seed".
    let prefix = text
        .lines()
        .map(str::trim)
        .find(|l| l.starts_with('S'))
        .and_then(|l| l.get(..2));
    let public = match prefix {
        Some("SX") => secrets::curve_key_file(seed_file).map(|k| k.public_key()),
        Some("SU") => secrets::key_pair_file(seed_file, SeedKind::User).map(|k| k.public_key()),
        _ => secrets::key_pair_file(seed_file, SeedKind::Account).map(|k| k.public_key()),
    };
    let public = public.map_err(|e| CliError::Usage(e.to_string()))?;
    println!("{public}");
    Ok(ExitCode::SUCCESS)
}

/// A bcrypt hash of the password on stdin.
pub(super) fn hash_password(cost: u32) -> Result<ExitCode, CliError> {
    let mut password = String::new();
    std::io::stdin()
        .read_line(&mut password)
        .map_err(|e| CliError::Failed(format!("cannot read the password from stdin: {e}")))?;
    let password = password.trim_end_matches(['\r', '\n']);
    if password.is_empty() {
        return Err(CliError::Usage("the password is empty".into()));
    }
    // bcrypt's 72-byte block holds the password and a terminating zero:
    // the service checks passwords of up to 71 bytes whole, and refuses
    // longer ones rather than compare a prefix.
    if password.len() > MAX_PASSWORD_BYTES {
        return Err(CliError::Usage(format!(
            "bcrypt can check at most {MAX_PASSWORD_BYTES} bytes of a password; this one has {}",
            password.len()
        )));
    }
    let hash = bcrypt::hash(password, cost).map_err(|e| CliError::Failed(e.to_string()))?;
    println!("{hash}");
    Ok(ExitCode::SUCCESS)
}

/// The sentinel's `.creds`, signed with the config's callout issuer seed
/// for the callout account.
pub(super) fn sentinel(config: &Config, out: &Path) -> Result<ExitCode, CliError> {
    if !matches!(config.callout.mode, Mode::Operator { .. }) {
        return Err(CliError::Usage(
            "a sentinel is for operator mode (callout.mode = \"operator\"); in server mode clients connect with any user name and the token as the password".into(),
        ));
    }
    if out.exists() {
        return Err(CliError::Usage(format!(
            "{} exists; not overwriting credentials",
            out.display()
        )));
    }
    // A bearer user proves nothing with its seed; the creds format wants one.
    let user = nkeys::KeyPair::new_user();
    let jwt = user_jwt::sentinel(
        &user.public_key(),
        &config.callout.auth_account,
        &config.callout.issuer,
        unix_now(),
    );
    let text = creds::format(&jwt, &user.seed().expect("fresh key has a seed"));
    secrets::create_private(out, &text)
        .map_err(|e| CliError::Failed(format!("{}: {e}", out.display())))?;
    eprintln!(
        "sentinel for account {} written to {}\nclients: nats --creds {} --token \"$TOKEN\" ... (the nats CLI drops --creds beside --user/--password)",
        config.callout.auth_account,
        out.display(),
        crate::dev::shell_word(&out.display().to_string())
    );
    eprintln!(
        "without the nats CLI: nats-oidc-callout try --creds {} --token \"$TOKEN\" --pub SUBJECT --sub SUBJECT   # nats-server's verdict on each",
        out.display()
    );
    Ok(ExitCode::SUCCESS)
}
