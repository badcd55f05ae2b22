//! What the tests, benchmarks, fuzzers and the load tool of
//! nats-oidc-callout share, kept out of the library and the binary:
//!
//! * [`server_sim`]: nats-server's side of the callout protocol (signed,
//!   sealed requests; reading the answers);
//! * [`decision`]: the in-process decision fixture, a config's callout
//!   asked by that simulated server, with development issuers;
//! * [`config`]: config files built section by section.

#![warn(unreachable_pub)]

pub mod config;
pub mod decision;
pub mod server_sim;

pub use config::{ConfigToml, Oidc};
pub use decision::{Fixture, Outcome};
pub use server_sim::ServerSim;
