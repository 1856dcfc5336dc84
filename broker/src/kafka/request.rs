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

#[cfg(test)]
mod tests {
    use std::io::Write;
    use std::sync::Mutex;

    use super::*;

    /// A log sink the test reads back.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl Write for Captured {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }

        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn logs_inside_a_request_carry_its_context() {
        let connection = ConnectionInfo {
            id: 7,
            peer: "127.0.0.1:40000".parse().unwrap(),
            listener: "kafka".into(),
            principal: Principal::anonymous(),
            client_software: Some(ClientSoftware {
                name: "librdkafka".to_owned(),
                version: "2.0.2".to_owned(),
            }),
        };
        let request = RequestContext {
            connection: Arc::new(connection),
            api_key: ApiKey::Produce,
            api_version: 9,
            correlation_id: 42,
            client_id: Some(StrBytes::from_static_str("rdkafka-test")),
        };
        let captured = Captured::default();
        let sink = captured.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_ansi(false)
            .with_writer(move || sink.clone())
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            request
                .span()
                .in_scope(|| tracing::warn!("inside the request"));
        });
        let line = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
        for field in [
            "connection=7",
            "peer=127.0.0.1:40000",
            "listener=kafka",
            "principal=User:ANONYMOUS",
            "rdkafka-test",
            "librdkafka",
            "2.0.2",
            "api=Produce",
            "version=9",
            "correlation_id=42",
            "inside the request",
        ] {
            assert!(line.contains(field), "`{field}` missing from {line}");
        }
    }
}
