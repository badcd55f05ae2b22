//! The rules of a decision, with no network or file I/O: reading identity
//! and roles from verified claims (`claims`, `mapping`, and binding roles
//! to claims), subject syntax and templates, the role table with its
//! JetStream/KV grants (`streams`) and connection rules (`connection`),
//! scopes, identities from the config, the KV grants store, and what is
//! known about shared identity platforms (`platforms`). The one
//! thing here that is scheduled rather than computed in place is the
//! bcrypt check of `passwords`: CPU-bound, so it runs on blocking threads
//! behind a bound (a semaphore), and no other client waits for it.

pub mod bindings;
pub mod claim_match;
pub mod claims;
pub mod connection;
pub(crate) mod grants;
pub mod inbox;
pub mod layout;
pub mod mapping;
pub(crate) mod passwords;
pub mod platforms;
pub mod roles;
pub(crate) mod scopes;
pub mod streams;
pub mod subject;
pub(crate) mod template;
pub(crate) mod users;
