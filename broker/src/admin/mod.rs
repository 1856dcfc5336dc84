//! The admin gRPC listener (`admin_listener`, default 127.0.0.1:9094): the
//! `streambus.admin.v1.AdminService` ([`service`]), the standard `grpc.health.v1` health service
//! (SERVING for the admin service and the server as a whole once the broker is up, NOT_SERVING
//! from the first step of a shutdown), and server reflection (v1 and v1alpha), so that grpcurl
//! and other reflection clients list and call the API with no `.proto` file at hand.
//!
//! - [`service`]: the RPCs, translated to `ops` calls and image reads.
//! - [`coordinators`]: group and transaction calls, asked of the coordinators over the Kafka
//!   protocol.
//! - [`status`]: failures as gRPC statuses carrying the Kafka error name.

pub mod coordinators;
pub mod service;
pub mod status;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use streambus_proto::admin::v1::admin_service_server::AdminServiceServer;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tonic_health::server::HealthReporter;
use tonic_health::ServingStatus;

use crate::context::BrokerContext;
use service::AdminApi;

/// The service name health checks and reflection know the admin API by.
pub const ADMIN_SERVICE: &str = "streambus.admin.v1.AdminService";
/// Bound on an admin request (each list in it is capped too, see `service::ITEMS_MAX`).
const REQUEST_BYTES_MAX: usize = 4 * 1024 * 1024;
/// Bound on an admin response (a DescribeCluster or ListPartitions of a large cluster).
const RESPONSE_BYTES_MAX: usize = 64 * 1024 * 1024;
/// How long a stopping broker waits for admin calls in flight (a health Watch stream never
/// ends by itself, so this is usually the whole wait).
const STOP_TIMEOUT: Duration = Duration::from_secs(1);

/// A running admin listener.
#[derive(Debug)]
pub struct AdminServer {
    local_addr: SocketAddr,
    health: HealthReporter,
    task: Option<JoinHandle<()>>,
}

impl AdminServer {
    /// Serves `listener` until `shutdown` is cancelled.
    pub async fn spawn(
        ctx: Arc<BrokerContext>,
        listener: TcpListener,
        shutdown: CancellationToken,
    ) -> std::io::Result<AdminServer> {
        let local_addr = listener.local_addr()?;
        let (health, health_service) = tonic_health::server::health_reporter();
        health
            .set_service_status(ADMIN_SERVICE, ServingStatus::Serving)
            .await;
        health.set_service_status("", ServingStatus::Serving).await;
        let reflection_v1 = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(streambus_proto::admin::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1()
            .map_err(std::io::Error::other)?;
        let reflection_v1alpha = tonic_reflection::server::Builder::configure()
            .register_encoded_file_descriptor_set(streambus_proto::admin::v1::FILE_DESCRIPTOR_SET)
            .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
            .build_v1alpha()
            .map_err(std::io::Error::other)?;
        let admin = AdminServiceServer::new(AdminApi::new(ctx))
            .max_decoding_message_size(REQUEST_BYTES_MAX)
            .max_encoding_message_size(RESPONSE_BYTES_MAX);
        let incoming =
            tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
        let task = tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(health_service)
                .add_service(reflection_v1)
                .add_service(reflection_v1alpha)
                .add_service(admin)
                .serve_with_incoming_shutdown(incoming, shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "admin listener failed");
            }
        });
        Ok(AdminServer {
            local_addr,
            health,
            task: Some(task),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker is stopping: health checks answer NOT_SERVING.
    pub async fn draining(&self) {
        self.health
            .set_service_status(ADMIN_SERVICE, ServingStatus::NotServing)
            .await;
        self.health
            .set_service_status("", ServingStatus::NotServing)
            .await;
    }

    /// Waits for the listener to stop (after its shutdown token was cancelled), at most
    /// [`STOP_TIMEOUT`].
    pub async fn stopped(&mut self) {
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                tracing::debug!("admin calls still running at shutdown; dropping them");
                task.abort();
            }
        }
    }
}

impl Drop for AdminServer {
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}
