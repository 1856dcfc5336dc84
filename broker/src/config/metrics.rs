//! The `[metrics]` table: whether the broker records Prometheus metrics.

use serde::{Deserialize, Serialize};

/// The `[metrics]` table.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MetricsConfig {
    /// Record metrics and serve them on `/metrics`. Off, every recording is a no-op and
    /// `/metrics` answers 404 (the health endpoints stay). Read at start.
    pub enabled: bool,
    /// Topics with their own traffic series (bytes and records in, bytes out); topics seen
    /// after this many share `topic="other"`. Read at start.
    pub topic_series_max: usize,
    /// Led partitions with their own offset series (log end, high watermark, last stable),
    /// the first in topic and index order.
    pub partition_series_max: usize,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        MetricsConfig {
            enabled: true,
            topic_series_max: 1000,
            partition_series_max: 1000,
        }
    }
}
