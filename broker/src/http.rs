//! The HTTP listener (`http_listener`, default 127.0.0.1:9644): `/metrics` in Prometheus text
//! format, and the health endpoints load balancers and systemd use.
//!
//! - `/livez`: the process is alive and its runtime answers (a task on the blocking pool runs
//!   within [`LIVENESS_TIMEOUT`]).
//! - `/readyz`: the broker is started, registered with the controller, unfenced (the
//!   controller unfences a broker once it has caught up with the metadata log), not shutting
//!   down, and its log directory takes writes (a probe file is written, fsynced and removed,
//!   at most once per [`PROBE_INTERVAL`]). 200 `{"status":"ready"}`, or 503 with the reason
//!   and every check as JSON.
//! - `/healthz`: both.
//!
//! The listener is bound first thing at start, so `/readyz` answers 503 "starting" while the
//! broker recovers its logs and joins the quorum.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, OnceLock, PoisonError};
use std::time::{Duration, Instant};

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::Router;
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;
use streambus_raft::RegistrationState;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::context::BrokerContext;

/// How long the blocking pool may take to run a no-op before `/livez` fails.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a log-directory probe's answer is reused.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// The Prometheus text exposition format's content type.
const METRICS_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// What the endpoints read once the broker is up.
#[derive(Debug)]
pub struct Started {
    pub ctx: Arc<BrokerContext>,
    pub registration: watch::Receiver<RegistrationState>,
}

#[derive(Debug)]
struct Shared {
    started: OnceLock<Started>,
    metrics: Option<PrometheusHandle>,
    /// The last log-directory probe: when, and whether it wrote.
    probe: tokio::sync::Mutex<Option<(Instant, Result<(), String>)>>,
    shutdown: CancellationToken,
}

/// A running HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: Mutex<Option<JoinHandle<()>>>,
}

impl HttpServer {
    /// Serves `listener` until `shutdown` is cancelled; `metrics` is the recorder's handle
    /// (`None`: metrics are off and `/metrics` answers 404).
    pub fn spawn(
        listener: TcpListener,
        metrics: Option<PrometheusHandle>,
        shutdown: CancellationToken,
    ) -> std::io::Result<HttpServer> {
        let local_addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            started: OnceLock::new(),
            metrics,
            probe: tokio::sync::Mutex::new(None),
            shutdown: shutdown.clone(),
        });
        let router = Router::new()
            .route("/metrics", get(metrics_text))
            .route("/livez", get(livez))
            .route("/readyz", get(readyz))
            .route("/healthz", get(healthz))
            .with_state(shared.clone());
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(shutdown.cancelled_owned())
                .await;
            if let Err(error) = served {
                tracing::error!(%error, "http listener failed");
            }
        });
        Ok(HttpServer {
            local_addr,
            shared,
            task: Mutex::new(Some(task)),
        })
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The broker is up: readiness checks start looking at it.
    pub fn started(&self, started: Started) {
        if self.shared.started.set(started).is_err() {
            tracing::warn!("the http listener was told twice that the broker started");
        }
    }

    /// Waits for the listener to stop (after its shutdown token was cancelled).
    pub async fn stopped(&self) {
        let task = self
            .task
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(task) = task {
            let _ = task.await;
        }
    }
}

async fn metrics_text(State(shared): State<Arc<Shared>>) -> Response {
    let Some(handle) = shared.metrics.clone() else {
        return (
            StatusCode::NOT_FOUND,
            "metrics are disabled ([metrics] enabled = false)\n",
        )
            .into_response();
    };
    let ctx = shared.started.get().map(|started| started.ctx.clone());
    let rendered = crate::blocking::spawn(move || {
        if let Some(ctx) = ctx {
            crate::telemetry::scrape::publish(&ctx);
        }
        crate::telemetry::render(&handle)
    })
    .await;
    match rendered {
        Ok(text) => ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response(),
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response(),
    }
}

/// Whether the runtime and its blocking pool answer.
async fn alive() -> Result<(), String> {
    match tokio::time::timeout(LIVENESS_TIMEOUT, crate::blocking::spawn(|| ())).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("a blocking task failed".to_owned()),
        Err(_) => Err(format!(
            "the blocking pool did not run a task within {LIVENESS_TIMEOUT:?}"
        )),
    }
}

/// The readiness checks in order, each `(name, passed)`, and the first failure's reason.
async fn ready(shared: &Shared) -> (Vec<(&'static str, bool)>, Option<String>) {
    let mut checks = Vec::new();
    let mut reason: Option<String> = None;
    let mut check = |name: &'static str, result: Result<(), String>| {
        if let Err(why) = &result {
            reason.get_or_insert_with(|| why.clone());
        }
        checks.push((name, result.is_ok()));
    };
    let Some(started) = shared.started.get() else {
        check("started", Err("starting".to_owned()));
        return (checks, reason);
    };
    check("started", Ok(()));
    let stopping = shared.shutdown.is_cancelled() || started.ctx.shutdown.is_cancelled();
    check(
        "serving",
        if stopping {
            Err("shutting down".to_owned())
        } else {
            Ok(())
        },
    );
    let registered = matches!(
        *started.registration.borrow(),
        RegistrationState::Registered { .. }
    );
    check(
        "registered",
        if registered {
            Ok(())
        } else {
            Err("not registered with the controller".to_owned())
        },
    );
    let image = started.ctx.image();
    let unfenced = image
        .broker(started.ctx.broker_id())
        .is_some_and(|broker| !broker.fenced);
    check(
        "metadata_caught_up",
        if unfenced {
            Ok(())
        } else {
            Err(format!(
                "fenced: not caught up with the metadata log (applied offset {})",
                image.metadata_offset()
            ))
        },
    );
    let writable = if started.ctx.partitions.log_dir_online() {
        probe(shared, &started.ctx).await
    } else {
        Err("the log directory is offline after a write failed".to_owned())
    };
    check("log_dir_writable", writable);
    (checks, reason)
}

/// The log directory's probe, reused for [`PROBE_INTERVAL`]; one runs at a time.
async fn probe(shared: &Shared, ctx: &Arc<BrokerContext>) -> Result<(), String> {
    let mut last = shared.probe.lock().await;
    if let Some((at, result)) = last.as_ref() {
        if at.elapsed() < PROBE_INTERVAL {
            return result.clone();
        }
    }
    let partitions = ctx.partitions.clone();
    let result = match crate::blocking::spawn(move || partitions.probe_log_dir()).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(error)) => Err(format!("the log directory does not take writes: {error}")),
        Err(_) => Err("the log directory probe panicked".to_owned()),
    };
    *last = Some((Instant::now(), result.clone()));
    result
}

fn json_response(status: StatusCode, body: &serde_json::Value) -> Response {
    (
        status,
        [(header::CONTENT_TYPE, "application/json")],
        format!("{body}\n"),
    )
        .into_response()
}

async fn livez() -> Response {
    match alive().await {
        Ok(()) => json_response(StatusCode::OK, &json!({"status": "ok"})),
        Err(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "failing", "reason": reason}),
        ),
    }
}

async fn readyz(State(shared): State<Arc<Shared>>) -> Response {
    readiness_response(&shared, false).await
}

async fn healthz(State(shared): State<Arc<Shared>>) -> Response {
    readiness_response(&shared, true).await
}

async fn readiness_response(shared: &Shared, with_liveness: bool) -> Response {
    let (mut checks, mut reason) = ready(shared).await;
    if with_liveness {
        let live = alive().await;
        if let Err(why) = &live {
            reason = Some(why.clone());
        }
        checks.insert(0, ("live", live.is_ok()));
    }
    let checks: serde_json::Map<String, serde_json::Value> = checks
        .into_iter()
        .map(|(name, passed)| (name.to_owned(), json!(passed)))
        .collect();
    match reason {
        None => json_response(
            StatusCode::OK,
            &json!({"status": "ready", "checks": checks}),
        ),
        Some(reason) => json_response(
            StatusCode::SERVICE_UNAVAILABLE,
            &json!({"status": "not_ready", "reason": reason, "checks": checks}),
        ),
    }
}
