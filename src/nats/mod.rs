//! NATS wire formats of the auth callout protocol (ADR-26): the JWT
//! envelope, the authorization request nats-server sends, the response it
//! expects, and the user JWT inside it. Nothing here knows about OIDC or
//! roles.

pub(crate) mod creds;
pub(crate) mod jwt;
pub(crate) mod request;
pub(crate) mod response;
pub(crate) mod signing_key;
pub(crate) mod user_jwt;
pub(crate) mod xkey;

// What programs playing nats-server's part (the test-support simulator,
// the fuzzers, the load tool) use of the wire formats.
pub use creds::format as creds_file;
pub use jwt::{decode_verified, sign, Issued};
pub use request::{decode as decode_request, open as open_request, ConnectOpts, RequestBody};
pub use response::{build as build_response, Answer, Signer};
pub use signing_key::SigningKey;
pub use user_jwt::{
    issue as issue_user_jwt, sentinel, ConnectionLimits, Permission, Placement, UserGrant,
    UserLimits,
};
pub use xkey::OurXkey;
