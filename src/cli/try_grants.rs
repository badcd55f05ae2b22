//! `nats-oidc-callout try`: connect to nats-server as a client would (a
//! token as the password, or as a token, with credentials and TLS as the
//! nats CLI takes them) and try the publishes and subscriptions named,
//! printing nats-server's own verdict for each. Nothing but this binary is
//! needed to see what a token may do.
//!
//! nats-server answers a denied publish or subscription with an
//! asynchronous `-ERR 'Permissions Violation for ...'` and nothing at all
//! for an allowed one. Each attempt therefore runs on a connection of its
//! own: the SUB or PUB, a PING whose PONG comes after any error about it,
//! then a drain that closes the connection. async-nats delivers its events
//! in the order it read them, so once the connection's "closed" event has
//! arrived, every error nats-server sent about the attempt has too.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use clap::Args;

use crate::cli::error::CliError;
use crate::text;

/// What the exit status means; also in `try --help`.
const EXIT_STATUS: &str = "Exit status: 0 when nats-server admitted the connection and allowed \
every publish and subscription named; 1 when it refused the connection or denied any of them; \
2 on bad usage; 3 when there was no verdict (nats-server unreachable, a TLS failure, no answer \
within --timeout).";

#[derive(Args, Debug)]
#[command(after_help = EXIT_STATUS)]
pub(super) struct TryArgs {
    /// nats-server to connect to.
    #[arg(
        long,
        short = 's',
        env = "NATS_URL",
        default_value = "nats://127.0.0.1:4222"
    )]
    server: String,
    /// User name (server mode: any name, with the token as --password).
    #[arg(long, env = "NATS_USER")]
    user: Option<String>,
    /// Password: the OIDC access token in server mode. "-" reads it from
    /// stdin; $NATS_PASSWORD keeps it out of the process list.
    #[arg(long, env = "NATS_PASSWORD", hide_env_values = true)]
    password: Option<String>,
    /// Token (operator mode: beside the sentinel's --creds). "-" reads it
    /// from stdin; $NATS_TOKEN keeps it out of the process list.
    #[arg(long, env = "NATS_TOKEN", hide_env_values = true)]
    token: Option<String>,
    /// A .creds file (operator mode: the sentinel credentials).
    #[arg(long, env = "NATS_CREDS")]
    creds: Option<PathBuf>,
    /// CA certificate to verify nats-server's TLS certificate with.
    #[arg(long)]
    tlsca: Option<PathBuf>,
    /// Client certificate, when nats-server asks for one (with --tlskey).
    #[arg(long, requires = "tlskey")]
    tlscert: Option<PathBuf>,
    /// Key of the client certificate.
    #[arg(long, requires = "tlscert")]
    tlskey: Option<PathBuf>,
    /// A subject to publish one message to (repeatable). The message is
    /// really sent: subscribers of the subject receive it.
    #[arg(long = "pub", value_name = "SUBJECT")]
    publish: Vec<String>,
    /// A subject to subscribe to (repeatable); unsubscribed right after.
    #[arg(long = "sub", value_name = "SUBJECT")]
    subscribe: Vec<String>,
    /// The body of the messages --pub sends.
    #[arg(long, default_value = "")]
    payload: String,
    /// How long to wait for nats-server's answers to each attempt.
    #[arg(long, default_value = "10s", value_parser = humantime::parse_duration)]
    timeout: Duration,
}

/// What is tried on one connection.
#[derive(Clone, Copy, PartialEq)]
enum Attempt<'a> {
    Connect,
    Publish(&'a str),
    Subscribe(&'a str),
}

/// nats-server's answer to one attempt.
#[derive(Debug, PartialEq)]
enum Verdict {
    Allowed,
    /// A permissions violation, in nats-server's words.
    Denied(String),
    /// The connection was refused: nats-server's words.
    Refused(String),
    /// No verdict: why.
    Unknown(String),
}

pub(super) fn run(args: TryArgs) -> Result<ExitCode, CliError> {
    for (flag, subjects) in [("--pub", &args.publish), ("--sub", &args.subscribe)] {
        for subject in subjects {
            subject_problem(subject).map_or(Ok(()), |problem| {
                Err(CliError::Usage(format!(
                    "{flag} {}: {problem}",
                    text::name(subject)
                )))
            })?;
        }
    }
    let login = Login::from_args(&args)?;
    let codes = super::block_on(async {
        let mut attempts: Vec<Attempt<'_>> = Vec::new();
        attempts.extend(args.subscribe.iter().map(|s| Attempt::Subscribe(s)));
        attempts.extend(args.publish.iter().map(|s| Attempt::Publish(s)));
        if attempts.is_empty() {
            attempts.push(Attempt::Connect);
        }
        let mut worst = 0u8;
        for (i, attempt) in attempts.iter().enumerate() {
            let code = match try_one(&args, &login, *attempt).await {
                Ok((server, verdict)) => {
                    if i == 0 {
                        println!(
                            "connect {}: admitted by nats-server {}",
                            text::name(&args.server),
                            text::name(&server)
                        );
                    }
                    print_attempt(*attempt, &verdict);
                    verdict.exit_code()
                }
                Err(connect) if i == 0 => {
                    // Refused or unreachable: so would every other be.
                    print_connect(&args.server, &connect);
                    worst = connect.exit_code();
                    break;
                }
                Err(connect) => {
                    print_attempt(*attempt, &connect);
                    connect.exit_code()
                }
            };
            worst = worst.max(code);
        }
        worst
    })?;
    Ok(ExitCode::from(codes))
}

/// Why `subject` is not a subject nats-server would take (None: it is).
fn subject_problem(subject: &str) -> Option<&'static str> {
    if subject.is_empty() {
        Some("an empty subject")
    } else if subject.chars().any(|c| c.is_whitespace() || c.is_control()) {
        Some("a subject cannot hold spaces or control characters")
    } else if subject.split('.').any(str::is_empty) {
        Some("a subject's tokens cannot be empty (a leading, trailing or double dot)")
    } else {
        None
    }
}

/// How the connections log in.
struct Login {
    user: Option<(String, String)>,
    token: Option<String>,
}

impl Login {
    fn from_args(args: &TryArgs) -> Result<Login, CliError> {
        let mut stdin_used = false;
        let mut secret = |flag: &str, value: &Option<String>| -> Result<Option<String>, CliError> {
            match value.as_deref() {
                Some("-") if stdin_used => Err(CliError::Usage(format!(
                    "{flag} -: stdin is read only once (for one of --password, --token)"
                ))),
                Some("-") => {
                    stdin_used = true;
                    let mut line = String::new();
                    std::io::stdin().read_line(&mut line).map_err(|e| {
                        CliError::Failed(format!("{flag} -: cannot read stdin: {e}"))
                    })?;
                    let line = line.trim();
                    if line.is_empty() {
                        return Err(CliError::Usage(format!("{flag} -: stdin was empty")));
                    }
                    Ok(Some(line.to_string()))
                }
                Some("") => Err(CliError::Usage(format!("{flag} is empty"))),
                other => Ok(other.map(str::to_string)),
            }
        };
        let password = secret("--password", &args.password)?;
        let token = secret("--token", &args.token)?;
        let user =
            match (args.user.clone(), password) {
                (Some(user), Some(password)) => Some((user, password)),
                (None, Some(_)) => return Err(CliError::Usage(
                    "--password needs --user (in server mode any name: the token is the password)"
                        .into(),
                )),
                (Some(_), None) => {
                    return Err(CliError::Usage(
                        "--user needs --password (or $NATS_PASSWORD)".into(),
                    ))
                }
                (None, None) => None,
            };
        Ok(Login { user, token })
    }
}

/// One connection: connect, the attempt, a flush, a drain. The name of
/// the server that admitted the connection and the attempt's verdict, or
/// the connect's (refused, or no verdict).
async fn try_one(
    args: &TryArgs,
    login: &Login,
    attempt: Attempt<'_>,
) -> Result<(String, Verdict), Verdict> {
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let mut options = match &args.creds {
        None => async_nats::ConnectOptions::new(),
        Some(creds) => match async_nats::ConnectOptions::with_credentials_file(creds).await {
            Ok(options) => options,
            Err(e) => {
                return Err(Verdict::Unknown(format!(
                    "{}: {e}",
                    crate::secrets::shown(creds)
                )))
            }
        },
    };
    if let Some((user, password)) = &login.user {
        options = options.user_and_password(user.clone(), password.clone());
    }
    if let Some(token) = &login.token {
        options = options.token(token.clone());
    }
    if let Some(ca) = &args.tlsca {
        options = options.add_root_certificates(ca.clone());
    }
    if let (Some(cert), Some(key)) = (&args.tlscert, &args.tlskey) {
        options = options.add_client_certificate(cert.clone(), key.clone());
    }
    if args.tlsca.is_some() || args.server.starts_with("tls://") {
        options = options.require_tls(true);
    }
    let options = options
        .name("nats-oidc-callout try")
        .connection_timeout(args.timeout)
        .ignore_discovered_servers()
        .event_callback(move |event| {
            let _ = events_tx.send(event);
            async {}
        });
    let client = match options.connect(args.server.as_str()).await {
        Ok(client) => client,
        Err(e) => return Err(refusal(&e)),
    };
    let server = client.server_info().server_name;
    let sent = match attempt {
        Attempt::Connect => Ok(None),
        Attempt::Subscribe(subject) => client
            .subscribe(subject.to_string())
            .await
            .map(Some)
            .map_err(|e| e.to_string()),
        Attempt::Publish(subject) => client
            .publish(subject.to_string(), args.payload.clone().into())
            .await
            .map(|()| None)
            .map_err(|e| e.to_string()),
    };
    let _subscriber = match sent {
        Ok(subscriber) => subscriber,
        Err(e) => return Ok((server, Verdict::Unknown(format!("not sent: {e}")))),
    };
    let answered = async {
        // The PONG comes after any -ERR about the attempt.
        client.flush().await.map_err(|e| e.to_string())?;
        client.drain().await.map_err(|e| e.to_string())?;
        let mut denied = None;
        while let Some(event) = events.recv().await {
            match event {
                async_nats::Event::ServerError(async_nats::ServerError::Other(said))
                    if said.to_lowercase().starts_with("permissions violation") =>
                {
                    denied.get_or_insert(said);
                }
                async_nats::Event::ServerError(e) => {
                    return Err(format!("nats-server: {e}"));
                }
                async_nats::Event::Disconnected => {
                    return Err("nats-server closed the connection".to_string());
                }
                async_nats::Event::Closed => break,
                _ => {}
            }
        }
        Ok(match denied {
            Some(said) => Verdict::Denied(said),
            None => Verdict::Allowed,
        })
    };
    let verdict = match tokio::time::timeout(args.timeout, answered).await {
        Ok(Ok(verdict)) => verdict,
        Ok(Err(e)) => Verdict::Unknown(e),
        Err(_) => Verdict::Unknown(format!(
            "no answer from nats-server within {}",
            humantime::format_duration(args.timeout)
        )),
    };
    Ok((server, verdict))
}

/// A failed connect: nats-server's refusal, or why there was no verdict.
fn refusal(e: &async_nats::ConnectError) -> Verdict {
    use async_nats::ConnectErrorKind as Kind;
    match e.kind() {
        Kind::AuthorizationViolation | Kind::Authentication => Verdict::Refused(e.to_string()),
        _ => Verdict::Unknown(e.to_string()),
    }
}

/// A connect that failed: refused, or no verdict.
fn print_connect(url: &str, verdict: &Verdict) {
    let url = text::name(url);
    match verdict {
        Verdict::Refused(said) => println!(
            "connect {url}: REFUSED by nats-server: {} (nats-server tells clients no more; the service's decision log says why)",
            text::reason(said)
        ),
        other => println!("connect {url}: {}", shown(other)),
    }
}

impl Verdict {
    fn exit_code(&self) -> u8 {
        match self {
            Verdict::Allowed => 0,
            Verdict::Denied(_) | Verdict::Refused(_) => 1,
            Verdict::Unknown(_) => 3,
        }
    }
}

/// A verdict as printed, outside text escaped.
fn shown(verdict: &Verdict) -> String {
    match verdict {
        Verdict::Allowed => "allowed".to_string(),
        Verdict::Denied(said) => format!("DENIED by nats-server: {}", text::reason(said)),
        Verdict::Refused(said) => format!("REFUSED: the connect: {}", text::reason(said)),
        Verdict::Unknown(why) => format!("NO VERDICT: {}", text::reason(why)),
    }
}

fn print_attempt(attempt: Attempt<'_>, verdict: &Verdict) {
    let (what, subject) = match attempt {
        Attempt::Connect => return,
        Attempt::Publish(s) => ("pub", s),
        Attempt::Subscribe(s) => ("sub", s),
    };
    println!("{what} {}: {}", text::name(subject), shown(verdict));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_nats_server_would_not_take_are_named() {
        assert_eq!(subject_problem("orders.>"), None);
        assert_eq!(subject_problem("orders.*.new"), None);
        assert_eq!(subject_problem(""), Some("an empty subject"));
        for bad in ["a b", "a\tb", "a\u{1b}[31m", "a\nPUB x 0"] {
            assert_eq!(
                subject_problem(bad),
                Some("a subject cannot hold spaces or control characters"),
                "{bad:?}"
            );
        }
        for bad in [".a", "a.", "a..b"] {
            assert!(subject_problem(bad).unwrap().contains("empty"), "{bad}");
        }
    }
}
