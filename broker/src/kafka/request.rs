//! What the broker knows about a request besides its body: the connection it came on (id,
//! peer, listener, client software, principal) and its header (API, version, correlation id,
//! client id). Handlers, authorization, quotas and logs read it, never the socket.

use std::net::SocketAddr;
use std::sync::Arc;

use kafka_protocol::messages::{ApiKey, ResponseKind};
use kafka_protocol::protocol::StrBytes;

pub use crate::principal::Principal;

/// The client library a connection said it runs (ApiVersions v3+, KIP-511).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientSoftware {
    pub name: String,
    pub version: String,
}

/// One client connection, as its requests see it.
#[derive(Debug, Clone)]
pub struct ConnectionInfo {
    /// Unique among this broker process's connections.
    pub id: u64,
    pub peer: SocketAddr,
    /// The name of the listener it was accepted on.
    pub listener: Arc<str>,
    pub principal: Principal,
    /// Known once the client sent ApiVersions v3 or later.
    pub client_software: Option<ClientSoftware>,
}

/// One request's context.
#[derive(Debug, Clone)]
pub struct RequestContext {
    pub connection: Arc<ConnectionInfo>,
    pub api_key: ApiKey,
    pub api_version: i16,
    pub correlation_id: i32,
    /// The header's client id, if the client sent one.
    pub client_id: Option<StrBytes>,
}

impl RequestContext {
    /// The span a request's logs carry.
    pub fn span(&self) -> tracing::Span {
        let connection = &self.connection;
        let software = connection.client_software.as_ref();
        tracing::info_span!(
            "request",
            connection = connection.id,
            peer = %connection.peer,
            listener = %connection.listener,
            principal = %connection.principal,
            client_id = self.client_id.as_deref().unwrap_or(""),
            client_software = software.map_or("", |s| s.name.as_str()),
            client_software_version = software.map_or("", |s| s.version.as_str()),
            api = ?self.api_key,
            version = self.api_version,
            correlation_id = self.correlation_id,
        )
    }
}

/// What the connection does after a request was handled.
#[derive(Debug)]
pub enum Outcome {
    Respond(Box<ResponseKind>),
    /// Produce with `acks=0`: Kafka sends nothing back.
    NoResponse,
    /// The request cannot be answered (or, for acks=0, failed); the connection is closed.
    Close,
}
