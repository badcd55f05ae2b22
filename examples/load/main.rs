//! Load tool: starts a development issuer, a real nats-server and the
//! release service binary, drives them, and reports rate, latency, errors,
//! and the service's CPU time and peak RSS.
//!
//! ```sh
//! cargo build --release && cargo run --release --example load -- direct --rate 2500
//! cargo run --release --example load -- direct --rate 0 --duration 10s   # as fast as it answers
//! cargo run --release --example load -- direct --count 1000000           # soak: RSS over time
//! cargo run --release --example load -- connect --clients 2000
//! cargo run --release --example load -- idle --duration 10s
//! cargo run --release --example load -- revoke --clients 1000
//! cargo run --release --example load -- --tokens 5000 storm --clients 5000 --rounds 3
//! cargo run --release --example load -- restart --rounds 5
//! cargo run --release --example load -- users --count 1000000
//! cargo run --release --example load -- issuer --clients 16 --new-clients 4 --phase 15s
//! cargo run --release --example load -- flood --rate 50 --flood 64 --duration 10s
//! ```
//!
//! Modes:
//! * `direct`: plays nats-server. Signed authorization requests (a throwaway
//!   server key, a real bearer token each) are published straight onto the
//!   callout subject through a plain nats-server; each answer is read and
//!   counted. `--rate N` sends N per second (open loop); `--rate 0` keeps
//!   `--concurrency` requests outstanding (closed loop).
//! * `connect`: `--clients` real async-nats clients connect at once through
//!   a nats-server with auth callout, each with its token as the password.
//! * `idle`: the service's CPU use while nothing happens.
//! * `connect-rate`: `--clients` async-nats clients connect and close in a
//!   loop through a nats-server with auth callout, first answered by the
//!   service, then by a null responder (a child process of this tool: the
//!   same NATS client and signing code, an allow-all user JWT, no checks:
//!   what any responder must do to answer), then by a checking responder
//!   (the null responder that also verifies the request's signature and
//!   claims and, with `--no-token-cache`, the token's signature: the crypto
//!   every decision must do, and nothing else). Prints connects per second
//!   and CPU per authorization of all three, and the service's ratios.
//! * `revoke`: `--clients` connections of one person (one subject, a
//!   session each) and as many of another, through a nats-server with
//!   JetStream and a system account; one back-channel logout of the
//!   person's subject; prints how long until the last of the person's
//!   connections was closed (and the median), and checks that the other
//!   person's stayed. Twice: the connections remembered by the replica
//!   that admitted them, then by the session registry alone (after a
//!   restart of the service).
//! * `restart`: how soon after nats-server accepts connections again the
//!   service is connected (by its log), `--rounds` times.
//! * `users`: see examples/load/users.rs: a million distinct people through
//!   the cold path, CPU per authorization and memory window by window.
//! * `storm`: see examples/load/storm.rs: `--clients` clients reconnecting
//!   at once after a nats-server restart and after a kick of every client,
//!   service against checking responder.
//! * `issuer`: the issuer healthy, then its JWKS answering in `--slow`
//!   (3 s), then not at all, `--phase` each, while `--clients` clients with
//!   tokens the service has seen before connect and close in a loop and
//!   `--new-clients` do the same with tokens of a key published at the
//!   phase's start (a key rotation). Per phase: both rates, the new key's
//!   admitted and refused connects with their p50/p99, how many were only
//!   refused by nats-server's auth timeout, and the results and refusal
//!   codes the service logged.
//! * `flood`: `--rate` real logins per second (each with a valid token)
//!   beside `--flood` clients flooding wrong passwords for one `[users.*]`
//!   name, or tokens with made-up kids, and beside no flood (the control);
//!   each row answered by the service, then by the checking responder
//!   (which also refuses the flood, as cheaply as a secure responder can).
//!   Prints the share of real logins admitted, their p50/p99, the flood's
//!   rate and CPU, and service ÷ checking responder.

mod connect;
mod connect_rate;
mod direct;
mod flood;
mod idle;
mod issuer;
mod procs;
mod responder;
mod restart;
mod revoke;
mod storm;
mod tally;
mod users;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Parser, Subcommand};
use nats_oidc_callout::dev::DevIssuer;

use procs::Service;
use responder::{null_responder, Checks};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    mode: Mode,
    /// The service binary (default: beside this example, target/release).
    #[arg(long, global = true)]
    service_bin: Option<PathBuf>,
    /// Distinct bearer tokens to cycle through.
    #[arg(long, global = true, default_value_t = 1000)]
    tokens: usize,
    /// Seal requests with xkey, as nats-server does when auth_callout.xkey is set.
    #[arg(long, global = true)]
    xkey: bool,
    /// Run the service with `oidc.token_cache_bytes = 0`, so every token's
    /// signature is verified (the first connect of each client).
    #[arg(long, global = true)]
    no_token_cache: bool,
}

#[derive(Subcommand)]
enum Mode {
    Direct {
        /// Requests per second; 0 = as fast as answers come (closed loop).
        #[arg(long, default_value_t = 2500)]
        rate: u64,
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
        /// Stop after this many requests instead of after --duration.
        #[arg(long)]
        count: Option<u64>,
        /// Outstanding requests in closed-loop mode.
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    Revoke {
        #[arg(long, default_value_t = 1000)]
        clients: usize,
    },
    Connect {
        #[arg(long, default_value_t = 2000)]
        clients: usize,
    },
    Idle {
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
    },
    /// nats-server stopped and started again `--rounds` times, down for
    /// `--down` each time: how long after it accepts connections again the
    /// service is connected (by the service's log).
    Restart {
        #[arg(long, default_value_t = 5)]
        rounds: usize,
        #[arg(long, default_value = "1s")]
        down: humantime::Duration,
    },
    /// Every client reconnecting at once: after a nats-server restart and
    /// after a kick of every client, service and checking responder.
    Storm {
        #[arg(long, default_value_t = 5000)]
        clients: usize,
        #[arg(long, default_value_t = 1)]
        rounds: usize,
        /// How long nats-server stays down in the restart storm.
        #[arg(long, default_value = "1s")]
        down: humantime::Duration,
    },
    /// A long run of distinct people, each token new: CPU per
    /// authorization and memory window by window.
    Users {
        #[arg(long, default_value_t = 1_000_000)]
        count: u64,
        #[arg(long, default_value_t = 50_000)]
        window: u64,
        /// The tokens' algorithm: es256 (quick to mint) or rs256.
        #[arg(long, default_value = "es256")]
        alg: String,
        #[arg(long, default_value_t = 64)]
        concurrency: usize,
    },
    ConnectRate {
        #[arg(long, default_value_t = 32)]
        clients: usize,
        /// How long each responder is measured, per round.
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
        /// Service, then null responder, this many times.
        #[arg(long, default_value_t = 1)]
        rounds: usize,
    },
    /// A slow, then a dead JWKS while known and new keys' tokens connect.
    Issuer {
        /// Clients with tokens seen before, connecting in a loop.
        #[arg(long, default_value_t = 16)]
        clients: usize,
        /// Clients with tokens of a key published at each phase's start.
        #[arg(long, default_value_t = 4)]
        new_clients: usize,
        /// How long each phase (healthy, slow, dead) lasts.
        #[arg(long, default_value = "15s")]
        phase: humantime::Duration,
        /// How long the slow JWKS takes to answer.
        #[arg(long, default_value = "3s")]
        slow: humantime::Duration,
    },
    /// Real logins beside a flood of wrong passwords or made-up kids.
    Flood {
        /// Real logins per second.
        #[arg(long, default_value_t = 50)]
        rate: u64,
        /// Flood clients, each connecting in a loop.
        #[arg(long, default_value_t = 64)]
        flood: usize,
        /// How long each row is measured.
        #[arg(long, default_value = "10s")]
        duration: humantime::Duration,
    },
    /// Answers authorization requests with an allow-all user JWT, checking
    /// nothing unless told to (started by `connect-rate` and `flood`).
    #[command(hide = true)]
    NullResponder {
        #[arg(long)]
        nats_port: u16,
        #[arg(long)]
        seed: String,
        #[arg(long)]
        xkey_seed: Option<String>,
        /// Verify each request's signature and claims.
        #[arg(long)]
        verify_requests: bool,
        /// Verify each bearer token's RS256 signature with this JWK.
        #[arg(long)]
        token_jwk: Option<String>,
        /// Refuse tokens naming another kid (with --verify-requests).
        #[arg(long)]
        known_kid: Vec<String>,
        /// NAME=BCRYPT: decide connects under NAME by this password hash
        /// (with --verify-requests).
        #[arg(long)]
        user: Vec<String>,
    },
}

/// What every mode shares: the service binary, the issuer and its tokens,
/// the callout account and xkey.
pub struct Ctx {
    pub bin: PathBuf,
    pub issuer: Arc<DevIssuer>,
    pub issuer_url: String,
    pub account: nkeys::KeyPair,
    pub callout_xkey: nkeys::XKey,
    /// Whether requests are sealed with `callout_xkey`.
    pub xkey_on: bool,
    pub no_token_cache: bool,
    pub tokens: Arc<Vec<String>>,
    /// The issuer's RS256 public key, for the checking responder.
    pub token_jwk: serde_json::Value,
}

impl Ctx {
    pub fn xkey(&self) -> Option<&nkeys::XKey> {
        self.xkey_on.then_some(&self.callout_xkey)
    }

    /// nats-server with auth callout to this run's account, sealed with its
    /// xkey when `--xkey` is on; with `revocation` also JetStream and a
    /// system-account user (procs::start_nats_with).
    pub fn callout_nats(&self, revocation: bool) -> procs::NatsServer {
        let xkey = self.callout_xkey.public_key();
        procs::start_nats_with(
            Some((
                &self.account.public_key(),
                self.xkey_on.then_some(xkey.as_str()),
            )),
            revocation,
        )
    }

    /// The service against nats-server on `nats_port`, with `extra` TOML
    /// appended to its config.
    pub async fn start(&self, nats_port: u16, extra: &str) -> (Service, Duration) {
        self.start_with(nats_port, &[], extra).await
    }

    /// The same, with `[oidc]` keys set as written (TOML values).
    pub async fn start_with(
        &self,
        nats_port: u16,
        oidc: &[(&str, &str)],
        extra: &str,
    ) -> (Service, Duration) {
        procs::start_service(
            &self.bin,
            nats_port,
            procs::ServiceSetup {
                issuer: &self.issuer_url,
                account: &self.account,
                xkey: self.xkey(),
                token_cache: !self.no_token_cache,
                oidc,
                extra,
            },
        )
        .await
    }
}

#[tokio::main]
async fn main() {
    let cli = Cli::parse();
    if let Mode::NullResponder {
        nats_port,
        seed,
        xkey_seed,
        verify_requests,
        token_jwk,
        known_kid,
        user,
    } = &cli.mode
    {
        let checks = Checks {
            requests: *verify_requests,
            token_key: token_jwk.as_deref().map(|j| {
                let jwk: jsonwebtoken::jwk::Jwk = serde_json::from_str(j).expect("a JWK");
                jsonwebtoken::DecodingKey::from_jwk(&jwk).expect("an RSA JWK")
            }),
            known_kids: known_kid.clone(),
            users: user
                .iter()
                .map(|u| {
                    let (name, hash) = u.split_once('=').expect("--user NAME=BCRYPT");
                    (name.to_string(), hash.to_string())
                })
                .collect(),
        };
        // On a worker thread, as the service runs: from the main thread
        // every message would cost a wake-up across threads.
        let (port, seed, xkey_seed) = (*nats_port, seed.clone(), xkey_seed.clone());
        tokio::spawn(
            async move { null_responder(port, &seed, xkey_seed.as_deref(), checks).await },
        )
        .await
        .expect("the null responder runs");
        return;
    }
    let bin = cli.service_bin.clone().unwrap_or_else(|| {
        let exe = std::env::current_exe().unwrap();
        exe.parent()
            .and_then(Path::parent)
            .unwrap()
            .join("nats-oidc-callout")
    });
    assert!(
        bin.exists(),
        "{} not found: run `cargo build --release` first or pass --service-bin",
        bin.display()
    );
    let issuer = DevIssuer::start(0).await.unwrap();
    let account = nkeys::KeyPair::new_account();
    let callout_xkey = nkeys::XKey::new();
    let _xkey = cli.xkey.then_some(&callout_xkey);
    let started = Instant::now();
    let tokens: Arc<Vec<String>> = Arc::new(
        (0..cli.tokens.max(1))
            .map(|i| issuer.token(&format!("load{i}"), "nats", &["reader"], 3600))
            .collect(),
    );
    println!(
        "{} tokens signed in {:.1}s; service {}",
        tokens.len(),
        started.elapsed().as_secs_f64(),
        bin.display()
    );
    let issuer_url = issuer.issuer();
    let token_jwk = issuer.public_jwk(&issuer.current_kid(jsonwebtoken::Algorithm::RS256));
    let ctx = Ctx {
        bin,
        issuer: Arc::new(issuer),
        issuer_url,
        account,
        callout_xkey,
        xkey_on: cli.xkey,
        no_token_cache: cli.no_token_cache,
        tokens,
        token_jwk,
    };
    match cli.mode {
        Mode::Direct {
            rate,
            duration,
            count,
            concurrency,
        } => direct::run(&ctx, rate, duration.into(), count, concurrency).await,
        Mode::Connect { clients } => connect::run(&ctx, clients).await,
        Mode::ConnectRate {
            clients,
            duration,
            rounds,
        } => connect_rate::run(&ctx, clients, duration.into(), rounds).await,
        Mode::Revoke { clients } => revoke::run(&ctx, clients).await,
        Mode::Restart { rounds, down } => restart::run(&ctx, rounds, down.into()).await,
        Mode::Storm {
            clients,
            rounds,
            down,
        } => storm::run(&ctx, clients, rounds, down.into()).await,
        Mode::Users {
            count,
            window,
            alg,
            concurrency,
        } => {
            let alg = match alg.as_str() {
                "es256" => jsonwebtoken::Algorithm::ES256,
                "rs256" => jsonwebtoken::Algorithm::RS256,
                other => panic!("--alg {other:?}: es256 or rs256"),
            };
            users::run(&ctx, count, window, alg, concurrency).await
        }
        Mode::Idle { duration } => idle::run(&ctx, duration.into()).await,
        Mode::Issuer {
            clients,
            new_clients,
            phase,
            slow,
        } => issuer::run(&ctx, clients, new_clients, phase.into(), slow.into()).await,
        Mode::Flood {
            rate,
            flood,
            duration,
        } => flood::run(&ctx, rate, flood, duration.into()).await,
        Mode::NullResponder { .. } => unreachable!("handled before any setup"),
    }
}
