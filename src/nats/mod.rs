//! NATS wire formats of the auth callout protocol (ADR-26): the JWT
//! envelope, the authorization request nats-server sends, the response it
//! expects, and the user JWT inside it. Nothing here knows about OIDC or
//! roles.

pub mod creds;
pub mod jwt;
pub mod request;
pub mod response;
pub mod signing_key;
pub mod user_jwt;
pub mod xkey;
