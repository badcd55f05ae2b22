//! `nats-oidc-callout health`: exit 0 when the running service says it is
//! ready, for container health checks.

use std::path::Path;
use std::process::ExitCode;

use crate::cli::error::CliError;
use crate::config::Config;

pub(super) fn run(config: &Config, path: &Path, url: Option<String>) -> Result<ExitCode, CliError> {
    let url = url
        .or_else(|| {
            config
                .http
                .as_ref()
                .map(|h| format!("http://{}/readyz", h.listen))
        })
        .ok_or_else(|| {
            CliError::Usage(format!("no http.listen in {} and no --url", path.display()))
        })?;
    let runtime = tokio::runtime::Runtime::new()
        .map_err(|e| CliError::Failed(format!("cannot start the async runtime: {e}")))?;
    let status = runtime.block_on(async {
        reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(3))
            .build()?
            .get(&url)
            .send()
            .await
            .map(|r| r.status())
    });
    // "not ready" rather than "error": a health probe's normal answer.
    match status {
        Ok(s) if s.is_success() => Ok(ExitCode::SUCCESS),
        Ok(s) => {
            eprintln!("not ready: {url} answered {s}");
            Ok(ExitCode::FAILURE)
        }
        Err(e) => {
            eprintln!("not ready: {url}: {e}");
            Ok(ExitCode::FAILURE)
        }
    }
}
