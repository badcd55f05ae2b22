//! The one error type of the command line.

use std::process::ExitCode;

use crate::config::ConfigError;
use crate::service::ServiceError;

/// Why a command failed; printed once, at the top.
#[derive(Debug, thiserror::Error)]
pub(crate) enum CliError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error(transparent)]
    Service(#[from] ServiceError),
    /// The command cannot run as asked (exit status 2).
    #[error("{0}")]
    Usage(String),
    /// It ran and failed (exit status 1).
    #[error("{0}")]
    Failed(String),
}

impl CliError {
    pub(crate) fn exit_code(&self) -> ExitCode {
        match self {
            CliError::Config(_) | CliError::Usage(_) => ExitCode::from(2),
            CliError::Service(_) | CliError::Failed(_) => ExitCode::FAILURE,
        }
    }
}
