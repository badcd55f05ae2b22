use clap::Parser;
use nats_oidc_callout::{init_logging, run, Cli};

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    run(cli)
}
