//! `nats-oidc-callout check`: the config has already been fully validated
//! by loading it; this adds warnings about choices that are valid but risky.
//!
//! Each warning comes from one named lint in [`LINTS`]: its name, what it
//! finds and why that matters, the function that finds it, and a config
//! fragment that must trigger it (the tests load each fragment and check
//! that its lint fires, and that the fragment-free base config draws no
//! warning at all). A lint asks the domain its questions (which subjects a
//! grant compiles to, which issuers are shared platforms) rather than
//! knowing the answers itself. Adding one: write the function in the file
//! of its subject (callout, issuers, roles, streams), add one line here.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::error::CliError;
use crate::config::Config;

mod callout;
mod issuers;
mod roles;
mod streams;

/// One risk `check` warns about.
pub struct Lint {
    /// A short kebab-case name, unique among the lints.
    pub name: &'static str,
    /// What the lint finds, and why that is a risk.
    pub doc: &'static str,
    /// The warnings it finds in a valid config.
    pub find: fn(&Config) -> Vec<String>,
    /// A config fragment (TOML) that triggers it, for its test: tables it
    /// leaves out come from the tests' base config, and `{issuer_pub}`,
    /// `{app_pub}`, `{app_seed_file}` and `{exposed_file}` name the keys
    /// and files the test writes.
    pub example: &'static str,
}

/// Every lint, in the order `check` prints their warnings.
pub const LINTS: &[Lint] = &[
    callout::EXPOSED_SECRETS,
    callout::XKEY_UNSET,
    callout::NATS_IN_CLEAR_TEXT,
    callout::ISSUER_IS_ACCOUNT_KEY,
    callout::ACCOUNT_IDENTITY_KEY,
    issuers::SHARED_ROLE_TABLE,
    roles::PER_USER_NOT_PER_ISSUER,
    roles::UNREACHABLE_ROLE,
    roles::TOKEN_CHOOSES_NAMESPACE,
    roles::OTHERS_INBOXES,
    roles::EVERY_SUBJECT,
    roles::SYSTEM_SUBJECTS,
    roles::SYSTEM_ACCOUNT,
    streams::MANAGE_IS_THE_ACCOUNT,
    streams::GRANTS_BUCKET_WRITABLE,
    streams::REVOCATION_BUCKET_WRITABLE,
    roles::CONNECTION_TYPE_TWIN,
    streams::KV_ROLLUP,
    streams::NO_INBOX_FOR_ANSWERS,
    roles::ALLOWS_NOTHING,
    callout::USERS_IN_CALLOUT_ACCOUNT,
    callout::REVOCATION_REQUEST_REACHABLE,
    streams::JETSTREAM_API_BY_HAND,
    streams::GRANTS_IN_STREAMS_ACCOUNT,
    streams::CONSUMER_REWRITE,
    streams::DELIVERY_ANYWHERE,
    streams::REDIRECTED_REPLAY,
    issuers::SHARED_ISSUER,
    issuers::PLATFORM_CONTRADICTS_URL,
    issuers::REPOSITORY_BY_NAME,
    issuers::BROAD_BINDING,
    issuers::BCRYPT_COST,
    callout::LONG_USER_TTL,
];

/// `check`: prints the warnings and says the config is valid.
pub(crate) fn run(config: &Config, path: &Path) -> Result<ExitCode, CliError> {
    let warnings = warnings(config);
    for w in &warnings {
        println!("warning: {w}");
    }
    println!(
        "config {} is valid ({} warning{})",
        path.display(),
        warnings.len(),
        if warnings.len() == 1 { "" } else { "s" }
    );
    Ok(ExitCode::SUCCESS)
}

/// Every lint's warnings, in registry order.
pub fn warnings(config: &Config) -> Vec<String> {
    LINTS.iter().flat_map(|lint| (lint.find)(config)).collect()
}

#[cfg(test)]
mod tests;
