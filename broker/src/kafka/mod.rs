//! The Kafka protocol listener: connections, the table of supported API versions and request
//! dispatch, the error mapping, and one handler module per API.
//!
//! Modules:
//! - [`api`]: dispatch to handlers.
//! - [`connection`]: one client connection: framing, ordering, limits.
//! - [`errors`]: the single mapping from failures to Kafka error codes.
//! - [`handlers`]: one module per Kafka API.
//! - [`request`]: a request's context (connection, principal, header) and outcome.
//! - [`server`]: the accept loop, connection limit and graceful stop.
//! - [`versions`]: the APIs and versions served (what ApiVersions advertises).
//! - [`wire`]: conversions between wire types and the broker's own.

pub mod api;
pub mod connection;
pub mod errors;
pub mod handlers;
pub mod request;
pub mod server;
pub mod versions;
pub mod wire;
