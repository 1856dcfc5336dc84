//! [`Coordinator`]: finds a group's (or a transactional id's) coordinator (FindCoordinator),
//! keeps the connection to it,
//! and sends it requests, looking it up again with a backoff when it moved or is loading
//! (NOT_COORDINATOR, COORDINATOR_NOT_AVAILABLE, COORDINATOR_LOAD_IN_PROGRESS) or the connection
//! failed. Shared by a consumer's membership, heartbeats and commits, and by the admin client.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::FindCoordinatorRequest;
use kafka_protocol::protocol::{Request, StrBytes};
use kafka_protocol::ResponseError;

use crate::client::Client;
use crate::connection::Connection;
use crate::error::{Error, Result};

/// FindCoordinator versions: 1 (key type) to 3; 4+ batch keys, which one group does not need.
const FIND_COORDINATOR_VERSIONS: (i16, i16) = (1, 3);
/// `key_type` of a consumer group.
const KEY_TYPE_GROUP: i8 = 0;
/// `key_type` of a transactional id.
const KEY_TYPE_TRANSACTION: i8 = 1;

/// Whether `error` means the group's coordinator is elsewhere, not ready, or unreachable: the
/// request is worth sending again after a new lookup.
pub fn is_coordinator_error(error: &Error) -> bool {
    match error {
        Error::Kafka { error, .. } => matches!(
            error,
            ResponseError::NotCoordinator
                | ResponseError::CoordinatorNotAvailable
                | ResponseError::CoordinatorLoadInProgress
        ),
        Error::Io { .. }
        | Error::Disconnected(_)
        | Error::Timeout(_)
        | Error::NoBrokerReachable { .. } => true,
        _ => false,
    }
}

/// The coordinator of one group.
#[derive(Debug)]
pub struct Coordinator {
    client: Client,
    group_id: String,
    /// FindCoordinator's key type: a group, or a transactional id.
    key_type: i8,
    /// The coordinator's id and connection, once found.
    current: Mutex<Option<(i32, Arc<Connection>)>>,
}

impl Coordinator {
    pub fn new(client: Client, group_id: &str) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            client,
            group_id: group_id.to_owned(),
            key_type: KEY_TYPE_GROUP,
            current: Mutex::new(None),
        })
    }

    /// The transaction coordinator of `transactional_id`.
    pub fn for_transaction(client: Client, transactional_id: &str) -> Arc<Coordinator> {
        Arc::new(Coordinator {
            client,
            group_id: transactional_id.to_owned(),
            key_type: KEY_TYPE_TRANSACTION,
            current: Mutex::new(None),
        })
    }

    pub fn group_id(&self) -> &str {
        &self.group_id
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    /// The coordinator's node id, if known.
    pub fn node_id(&self) -> Option<i32> {
        self.lock().as_ref().map(|(id, _)| *id)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Option<(i32, Arc<Connection>)>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets the coordinator; the next request looks it up again.
    pub fn invalidate(&self) {
        *self.lock() = None;
    }

    /// The connection to the coordinator, looked up if unknown or closed.
    pub(crate) async fn connection(&self) -> Result<Arc<Connection>> {
        if let Some((_, conn)) = self.lock().as_ref().filter(|(_, c)| !c.is_closed()) {
            return Ok(Arc::clone(conn));
        }
        let (id, addr) = self.find().await?;
        let conn = self.client.connection(&addr).await?;
        *self.lock() = Some((id, Arc::clone(&conn)));
        Ok(conn)
    }

    /// One FindCoordinator round trip: the coordinator's node id and `host:port`.
    async fn find(&self) -> Result<(i32, String)> {
        let request = FindCoordinatorRequest::default()
            .with_key(StrBytes::from_string(self.group_id.clone()))
            .with_key_type(self.key_type);
        let response = self
            .client
            .send_any(
                &request,
                FIND_COORDINATOR_VERSIONS.0,
                FIND_COORDINATOR_VERSIONS.1,
            )
            .await?;
        let (code, message, node, host, port) = (
            response.error_code,
            &response.error_message,
            response.node_id.0,
            &response.host,
            response.port,
        );
        Error::check(code, || {
            Some(format!(
                "FindCoordinator({}){}",
                self.group_id,
                message
                    .as_ref()
                    .map(|m| format!(": {m}"))
                    .unwrap_or_default()
            ))
        })?;
        tracing::debug!(group = %self.group_id, node, %host, port, "coordinator found");
        Ok((node, format!("{host}:{port}")))
    }

    /// Sends the request `build` makes for the best version in `versions` (fields that version
    /// lacks must stay unset) to the coordinator, and returns the response (whatever its
    /// error codes) once `coordinator_code` (its top-level or first partition error) is no
    /// coordinator error; looks the coordinator up again and retries with a backoff until
    /// `deadline`. `extra_wait` extends the request timeout for requests the broker holds
    /// (JoinGroup waits for the other members).
    pub async fn send<R: Request>(
        &self,
        build: impl Fn(i16) -> R,
        versions: (i16, i16),
        extra_wait: Option<Duration>,
        deadline: Instant,
        coordinator_code: impl Fn(&R::Response) -> i16,
    ) -> Result<R::Response> {
        let config = self.client.config();
        let mut backoff = config.retry_backoff;
        loop {
            let attempt = async {
                let conn = self.connection().await?;
                let version = conn.version::<R>(versions.0, versions.1)?;
                let response = conn.send(&build(version), version, extra_wait).await?;
                let code = coordinator_code(&response);
                if matches!(code, 14..=16) {
                    return Err(Error::kafka(code, Some(format!("group {}", self.group_id))));
                }
                Ok(response)
            };
            let error = match attempt.await {
                Ok(response) => return Ok(response),
                Err(e) if !is_coordinator_error(&e) => return Err(e),
                Err(e) => e,
            };
            // A coordinator that is loading stays the coordinator; the others moved or failed.
            if error.kafka_code() != Some(14) {
                self.invalidate();
            }
            if Instant::now() + backoff >= deadline {
                return Err(error);
            }
            tracing::debug!(group = %self.group_id, %error, ?backoff, "coordinator retry");
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(config.retry_backoff_max);
        }
    }
}
