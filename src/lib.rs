//! nats-oidc-callout: a NATS auth callout service that admits clients
//! presenting OIDC access tokens and maps their roles to NATS permissions.
//!
//! Layers, each importing only the ones above it in this list:
//!
//! 0. `text`, [`clock`], `backoff`, `secrets`, [`refusal`], [`metrics`],
//!    and [`nats`] (the wire formats of the callout protocol).
//! 1. [`policy`] (claims → roles → permissions, no network or file I/O) and [`oidc`]
//!    (bearer token → verified claims: discovery, keys, signature, rules).
//! 2. [`authorize`]: a verified request → an admission or a refusal.
//! 3. [`callout`]: request bytes → decode → `authorize` → user JWT →
//!    response bytes, logged.
//! 4. [`config`]: TOML → the settings of the layers above, and the
//!    callout they describe.
//! 5. [`service`]: running it (NATS, dispatch, drain, reload, HTTP).
//! 6. [`cli`] (the commands) and [`dev`] (the local development stack).
//!
//! The client side (getting, caching and refreshing tokens for `login`,
//! `token`, `logout` and programs) is a crate of its own,
//! `nats-oidc-client` (crates/nats-oidc-client), which `cli` uses. It
//! depends on nothing here; the few helpers both sides need (text escaping,
//! the inbox prefix, `.creds` reading, XDG directories) live there, and the
//! layers here import them from it.

pub mod authorize;
mod backoff;
pub mod callout;
pub mod cli;
pub mod clock;
pub mod config;
pub mod dev;
pub mod metrics;
pub mod nats;
pub mod oidc;
pub mod policy;
pub mod refusal;
mod secrets;
pub mod service;
mod text;
