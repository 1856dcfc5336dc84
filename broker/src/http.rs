//! The HTTP listener (`http_listener`, default 127.0.0.1:9644): `/metrics` in Prometheus text
//! format, and the health endpoints load balancers and systemd use.
//!
//! - `/livez`: the process is alive and its runtime answers (a spawned task runs within
//!   [`LIVENESS_TIMEOUT`]). Deliberately not the blocking pool: a slow disk that keeps it busy
//!   makes a broker slow, not dead, and a restart would only make it unclean.
//! - `/readyz`: the broker is started, not stopping, registered with the controller, knows a
//!   controller, has applied its own registration to its image and to its partitions (so it
//!   serves what the cluster expects of it), and its log directory takes writes (a probe file
//!   is written, fsynced and removed, at most once per [`PROBE_INTERVAL`], one probe at a
//!   time, answered within [`PROBE_TIMEOUT`]). 200 `{"status":"ready"}`, or 503 with the first
//!   failing check as `reason` and every check as JSON.
//! - `/healthz`: both.
//!
//! A scrape walks every hosted partition on a blocking thread; concurrent scrapes share one
//! walk, and one less than [`SCRAPE_REUSE`] old is served again.
//!
//! The listener is bound first thing at start, so `/readyz` answers 503 "starting" while the
//! broker recovers its logs and joins the quorum.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
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

/// How long the runtime may take to run a spawned no-op before `/livez` fails.
const LIVENESS_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a log-directory probe's answer is reused.
const PROBE_INTERVAL: Duration = Duration::from_secs(1);
/// How long a readiness check waits for the probe (a hung disk fails readiness, and the stuck
/// probe is waited on again by the next check rather than joined by another).
const PROBE_TIMEOUT: Duration = Duration::from_secs(2);
/// How long a rendered scrape is served again.
const SCRAPE_REUSE: Duration = Duration::from_secs(1);
/// How long a stopping broker waits for HTTP connections to finish before dropping them.
const STOP_TIMEOUT: Duration = Duration::from_secs(2);
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
    /// Set first thing when the broker stops: readiness fails while leaderships move away.
    draining: AtomicBool,
    metrics: Option<PrometheusHandle>,
    probe: tokio::sync::Mutex<Probe>,
    /// The last rendered scrape and when.
    scrape: tokio::sync::Mutex<Option<(Instant, String)>>,
    shutdown: CancellationToken,
}

/// The log-directory probe: the last answer and when, and the one probe running, if any.
#[derive(Debug, Default)]
struct Probe {
    last: Option<(Instant, Result<(), String>)>,
    running: Option<JoinHandle<Result<(), String>>>,
}

/// A running HTTP listener.
#[derive(Debug)]
pub struct HttpServer {
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    task: Option<JoinHandle<()>>,
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
            draining: AtomicBool::new(false),
            metrics,
            probe: tokio::sync::Mutex::default(),
            scrape: tokio::sync::Mutex::new(None),
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
            task: Some(task),
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

    /// The broker is stopping: readiness fails from now on.
    pub fn draining(&self) {
        self.shared.draining.store(true, Ordering::Relaxed);
    }

    /// Waits for the listener to stop (after its shutdown token was cancelled), at most
    /// [`STOP_TIMEOUT`]: a client that sends half a request or stops reading must not hold the
    /// broker's shutdown (and its clean close of the logs).
    pub async fn stopped(&mut self) {
        if let Some(mut task) = self.task.take() {
            if tokio::time::timeout(STOP_TIMEOUT, &mut task).await.is_err() {
                tracing::debug!("http connections still open at shutdown; dropping them");
                task.abort();
            }
        }
    }
}

impl Drop for HttpServer {
    /// A broker that failed to start, or was dropped without stopping, frees the port.
    fn drop(&mut self) {
        if let Some(task) = self.task.take() {
            task.abort();
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
    // One walk at a time; scrapers that waited for it take its result.
    let mut last = shared.scrape.lock().await;
    if let Some((at, text)) = last.as_ref() {
        if at.elapsed() < SCRAPE_REUSE {
            return metrics_response(text.clone());
        }
    }
    let ctx = shared.started.get().map(|started| started.ctx.clone());
    let rendered = crate::blocking::spawn(move || {
        let mut text = crate::telemetry::render(&handle);
        if let Some(ctx) = ctx {
            crate::telemetry::scrape::render(&ctx, &mut text);
        }
        text
    })
    .await;
    match rendered {
        Ok(text) => {
            *last = Some((Instant::now(), text.clone()));
            metrics_response(text)
        }
        Err(_) => (StatusCode::INTERNAL_SERVER_ERROR, "rendering failed\n").into_response(),
    }
}

fn metrics_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, METRICS_CONTENT_TYPE)], text).into_response()
}

/// Whether the runtime runs a new task.
async fn alive() -> Result<(), String> {
    match tokio::time::timeout(LIVENESS_TIMEOUT, tokio::spawn(async {})).await {
        Ok(Ok(())) => Ok(()),
        Ok(Err(_)) => Err("a spawned task failed".to_owned()),
        Err(_) => Err(format!(
            "the runtime did not run a task within {LIVENESS_TIMEOUT:?}"
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
    let ctx = &started.ctx;
    let stopping = shared.draining.load(Ordering::Relaxed)
        || shared.shutdown.is_cancelled()
        || ctx.shutdown.is_cancelled();
    check(
        "serving",
        if stopping {
            Err("shutting down".to_owned())
        } else {
            Ok(())
        },
    );
    let registration = *started.registration.borrow();
    check(
        "registered",
        match registration {
            RegistrationState::Registered { .. } => Ok(()),
            RegistrationState::Unregistered => Err("not registered with the controller".to_owned()),
        },
    );
    check(
        "controller_known",
        if ctx.controller_id() >= 0 {
            Ok(())
        } else {
            Err("no controller known: cut off from the metadata quorum".to_owned())
        },
    );
    check("metadata_caught_up", caught_up(ctx, registration));
    let writable = if started.ctx.partitions.log_dir_online() {
        probe(shared, &started.ctx).await
    } else {
        Err("the log directory is offline after a write failed".to_owned())
    };
    check("log_dir_writable", writable);
    (checks, reason)
}

/// Whether this broker's image and partitions reflect its current registration (at metadata
/// offset `broker_epoch`): the registration in the image is this incarnation's, unfenced and
/// with its log directory online, and the partitions were reconciled with an image at least
/// that new. A restarted broker's image replays its previous incarnation first.
fn caught_up(ctx: &BrokerContext, registration: RegistrationState) -> Result<(), String> {
    let RegistrationState::Registered { broker_epoch, .. } = registration else {
        return Err("not registered with the controller".to_owned());
    };
    let image = ctx.image();
    let Some(me) = image.broker(ctx.broker_id()) else {
        return Err("this broker's registration is not in its metadata image yet".to_owned());
    };
    if me.broker_epoch != broker_epoch {
        return Err(format!(
            "the metadata image holds registration {} (this one is {broker_epoch}): not caught up",
            me.broker_epoch
        ));
    }
    if me.fenced {
        return Err("fenced by the controller".to_owned());
    }
    if me.log_dir_offline {
        return Err("the controller has this broker's log directory offline".to_owned());
    }
    let reconciled = ctx.partitions.reconciled_offset();
    let wanted = u64::try_from(broker_epoch).unwrap_or(u64::MAX);
    if reconciled < wanted {
        return Err(format!(
            "partitions reconciled up to metadata offset {reconciled}, registration at {wanted}"
        ));
    }
    Ok(())
}

/// The log directory's probe: a recent answer is reused; otherwise the one running probe is
/// waited for (started if none runs), at most [`PROBE_TIMEOUT`].
async fn probe(shared: &Shared, ctx: &Arc<BrokerContext>) -> Result<(), String> {
    let mut probe = shared.probe.lock().await;
    if let Some((at, result)) = probe.last.as_ref() {
        if at.elapsed() < PROBE_INTERVAL {
            return result.clone();
        }
    }
    let running = probe.running.get_or_insert_with(|| {
        let partitions = ctx.partitions.clone();
        crate::blocking::spawn(move || {
            partitions
                .probe_log_dir()
                .map_err(|error| format!("the log directory does not take writes: {error}"))
        })
    });
    let result = match tokio::time::timeout(PROBE_TIMEOUT, running).await {
        Err(_) => {
            return Err(format!(
                "the log directory probe has not finished after {PROBE_TIMEOUT:?}"
            ))
        }
        Ok(Ok(result)) => result,
        Ok(Err(_)) => Err("the log directory probe panicked".to_owned()),
    };
    probe.running = None;
    probe.last = Some((Instant::now(), result.clone()));
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
