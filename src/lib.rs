//! nats-oidc-callout: a NATS auth callout service that admits clients
//! presenting OIDC access tokens and maps their roles to NATS permissions.
//!
//! The modules follow the data flow of one decision:
//! [`auth_request`] → [`issuers`] → [`token`] (with [`key_manager`], [`keys`],
//! [`issuer_client`]) → [`claims`] → [`permissions`] → [`user_jwt`] →
//! [`auth_response`], tied together by [`authorizer`] and run by [`service`].

pub mod auth_request;
pub mod auth_response;
pub mod authorizer;
pub mod check;
pub mod claims;
pub mod config;
pub mod dev;
pub mod dev_issuer;
pub mod explain;
pub mod http;
pub mod identities;
pub mod issuer_client;
pub mod issuers;
pub mod key_manager;
pub mod keys;
pub mod kv_grants;
pub mod live;
pub mod metrics;
pub mod micro;
pub mod nats_jwt;
pub mod nats_server;
pub mod permissions;
pub mod scopes;
pub mod secrets;
pub mod server_sim;
pub mod service;
pub mod subject;
pub mod subject_template;
pub mod token;
pub mod token_cache;
pub mod user_jwt;
