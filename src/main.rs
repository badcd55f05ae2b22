use clap::Parser;
use nats_oidc_callout::{init_logging, run, Cli};

// Every decision allocates and frees many small objects (claims, JSON,
// JWTs) across worker threads; glibc's malloc and free were 6 % of the
// service's CPU on the cold path (BENCHMARKS.md, issue 28).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    init_logging(&cli);
    run(cli)
}
