//! nats-oidc-callout: a NATS auth callout service that admits clients
//! presenting OIDC access tokens and maps their roles to NATS permissions.
//!
//! Layers, each importing only the ones above it in this list:
//!
//! 0. `text`, `clock`, `backoff`, `secrets`, `tls`, `refusal`, `metrics`, and
//!    [`nats`] (the wire formats of the callout protocol).
//! 1. [`policy`] (claims → roles → permissions, no network or file I/O) and
//!    [`oidc`] (bearer token → verified claims: discovery, keys,
//!    signature, rules; and back-channel logout tokens, by the same keys).
//! 2. `authorize`: a verified request → an admission or a refusal.
//! 3. `callout`: request bytes → decode → `authorize` → user JWT →
//!    response bytes, logged.
//! 4. [`config`]: TOML → the settings of the layers above, and the
//!    callout they describe.
//! 5. `service`: running it (NATS, dispatch, drain, reload, HTTP, the
//!    back-channel logout endpoint).
//! 6. `cli` (the commands) and [`dev`] (the local development stack).
//!
//! The client side (getting, caching and refreshing tokens for `login`,
//! `token`, `logout` and programs) is a crate of its own,
//! `nats-oidc-client` (crates/nats-oidc-client), which `cli` uses. It
//! depends on nothing here; the few helpers both sides need (text escaping,
//! the inbox prefix, `.creds` reading, XDG directories) live there, and the
//! layers here import them from it.
//!
//! What other code may use is declared here: the `pub use` below, the
//! facades at the top of [`nats`], [`oidc`], [`policy`] and [`dev`] (their
//! submodules are private to the crate; each `mod.rs` lists what leaves
//! it), and [`config`], whose `Config` is read field by field by the
//! tests and `check`. Every other module is private. Inside the crate,
//! `pub(crate)` is the default.

#![warn(unreachable_pub)]

mod authorize;
mod backoff;
mod callout;
mod cli;
mod clock;
pub mod config;
pub mod dev;
mod metrics;
pub mod nats;
pub mod oidc;
pub mod policy;
mod refusal;
mod secrets;
mod service;
mod text;
mod tls;

// The API: what the binary, the tests, the benchmarks, the fuzzers, the
// examples and the test-support crate use. Everything else is the crate's
// own; `unreachable_pub` says when an item claims more.

/// The binary: parse the command line, set up logging, run a command.
pub use cli::{init_logging, run, Cli};

/// The decision in-process: a config builds a `Callout`, which decides an
/// authorization request's bytes (or, without the wire, `explain`'s
/// `Admission`).
pub use authorize::Admission;
pub use callout::{Arrival, Callout, Decision, Verdict};
pub use clock::{unix_now, Deadline};
pub use metrics::Metrics;
pub use refusal::{Refusal, RefusalCode};
pub use tls::NatsTls;

/// `check`'s lints: what it warns about in a valid config.
pub mod check {
    pub use crate::cli::check::{warnings, Lint, LINTS};
}
