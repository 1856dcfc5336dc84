//! Prometheus metrics: installs the process's recorder and renders the text exposition that
//! `/metrics` serves. Storage, the coordinators and the partitions record through the `metrics`
//! facade as things happen; [`requests`] records each Kafka request; [`scrape`] sets the gauges
//! that are cheaper to read at scrape time than to keep current; [`process`] writes the standard
//! `process_*` series.
//!
//! Label cardinality is bounded everywhere: APIs and versions are finite, error labels are
//! Kafka error names, per-topic series stop at `[metrics] topic_series_max` topics (1,000 by
//! default; the rest count under `topic="(other)"`), and per-partition series at
//! `partition_series_max` partitions (1,000); the LSO-lag series stop at 1,000 partitions and
//! the consumer-lag series at `groups.consumer_lag_max_series`.

pub mod process;
pub mod requests;
pub mod scrape;
pub mod text;
pub mod topics;

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::OnceLock;
use std::time::Duration;

use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};
use metrics_util::MetricKindMask;

use crate::config::MetricsConfig;

/// Histogram buckets for durations in seconds: 100 µs to 10 s.
const SECONDS_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5,
    5.0, 10.0,
];

/// A gauge not set for this long is dropped from the output: the per-group and LSO-lag series
/// of groups and partitions that went away (the `metrics` facade cannot remove one). Every
/// recorder gauge still alive is set every few seconds; what only changes on events is kept
/// elsewhere and written at scrape time ([`scrape`]).
const GAUGE_IDLE_TIMEOUT: Duration = Duration::from_secs(600);

/// How often histogram samples are folded into their buckets when nobody scrapes: the
/// recorder keeps every raw sample until then.
const UPKEEP_INTERVAL: Duration = Duration::from_secs(5);

static RECORDER: OnceLock<Option<PrometheusHandle>> = OnceLock::new();
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Whether metrics are recorded: recording sites skip their bookkeeping when not.
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// Installs the Prometheus recorder as the process's global one, the first time it is called;
/// returns its handle. `None` when metrics are off (`[metrics] enabled = false`: every
/// recording is then a no-op) or another recorder was installed first (some tests).
pub fn install(config: &MetricsConfig) -> Option<PrometheusHandle> {
    RECORDER
        .get_or_init(|| {
            if !config.enabled {
                return None;
            }
            topics::set_series_max(config.topic_series_max);
            let builder = PrometheusBuilder::new()
                .idle_timeout(MetricKindMask::GAUGE, Some(GAUGE_IDLE_TIMEOUT))
                .set_buckets_for_metric(Matcher::Suffix("_seconds".to_owned()), SECONDS_BUCKETS)
                .expect("the bucket list is not empty");
            match builder.install_recorder() {
                Ok(handle) => {
                    ENABLED.store(true, Ordering::Relaxed);
                    describe();
                    spawn_upkeep(handle.clone());
                    Some(handle)
                }
                Err(error) => {
                    tracing::warn!(%error, "metrics recorder not installed");
                    None
                }
            }
        })
        .clone()
}

fn describe() {
    streambus_storage::metrics::describe();
    crate::group::metrics::describe();
    crate::partition::lso_lag::describe();
    requests::describe();
    scrape::describe();
    topics::describe();
}

/// Folds histogram samples every [`UPKEEP_INTERVAL`] for the life of the process (a plain
/// thread: the recorder outlives any one runtime).
fn spawn_upkeep(handle: PrometheusHandle) {
    let spawned = std::thread::Builder::new()
        .name("metrics-upkeep".to_owned())
        .spawn(move || loop {
            std::thread::sleep(UPKEEP_INTERVAL);
            handle.run_upkeep();
        });
    if let Err(error) = spawned {
        tracing::error!(%error, "cannot start the metrics upkeep thread");
    }
}

/// The text exposition of the recorded series, then the process's.
pub fn render(handle: &PrometheusHandle) -> String {
    handle.run_upkeep();
    let mut text = handle.render();
    process::render(&mut text);
    text
}
