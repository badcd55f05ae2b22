use clap::Parser;
use nats_oidc_callout::cli::{self, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    cli::init_logging(cli.log_format);
    cli::run(cli)
}
