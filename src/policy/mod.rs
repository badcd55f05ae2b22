//! The rules of a decision, without I/O: reading identity and roles from
//! verified claims (and binding roles to claims), subject syntax and templates, the role table with its
//! JetStream/KV grants (`streams`) and connection rules (`connection`),
//! scopes, identities from the config and the KV grants store.

pub mod bindings;
pub mod claim_match;
pub mod claims;
pub mod connection;
pub(crate) mod grants;
pub mod inbox;
pub mod layout;
pub(crate) mod passwords;
pub mod roles;
pub(crate) mod scopes;
pub mod streams;
pub mod subject;
pub(crate) mod template;
pub(crate) mod users;
