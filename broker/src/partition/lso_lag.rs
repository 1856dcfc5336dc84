//! The LSO lag gauges: how far the last stable offset of each partition this broker leads is
//! behind its high watermark — records a read_committed consumer cannot read yet because a
//! transaction is still open (a hanging one shows as a lag that keeps growing). At most
//! [`LSO_LAG_SERIES_MAX`] partitions are published, the most lagging first; a partition whose lag
//! went back to zero is published once more as 0, then dropped.

use std::collections::BTreeSet;

use metrics::gauge;

use super::manager::PartitionManager;
use super::Role;

/// Per-partition series published at most (the rest count in the maximum and the total only).
pub const LSO_LAG_SERIES_MAX: usize = 1000;
/// Records between the last stable offset and the high watermark, by topic and partition.
pub const LSO_LAG: &str = "streambus_partition_lso_lag_records";
/// The largest LSO lag of the partitions this broker leads.
pub const LSO_LAG_MAX: &str = "streambus_partition_lso_lag_max_records";
/// Partitions led here whose last stable offset is behind their high watermark.
pub const LAGGING_PARTITIONS: &str = "streambus_partitions_lso_lagging";

/// Registers the gauges' help texts with the installed recorder.
pub fn describe() {
    use metrics::{describe_gauge, Unit};
    describe_gauge!(
        LSO_LAG,
        Unit::Count,
        "Records between a led partition's last stable offset and its high watermark."
    );
    describe_gauge!(
        LSO_LAG_MAX,
        Unit::Count,
        "The largest LSO lag of the partitions led here."
    );
    describe_gauge!(
        LAGGING_PARTITIONS,
        Unit::Count,
        "Partitions led here whose last stable offset is behind their high watermark."
    );
}

/// `(topic, partition)`.
type Key = (String, u32);

/// Which lags to publish: the `cap` largest positive ones, and a 0 for every series published
/// last time that is not among them (its lag cleared, or it fell out of the top). Returns them
/// and the keys published now with a positive lag.
pub fn series_to_publish(
    mut lags: Vec<(Key, i64)>,
    previous: &BTreeSet<Key>,
    cap: usize,
) -> (Vec<(Key, i64)>, BTreeSet<Key>) {
    lags.retain(|(_, lag)| *lag > 0);
    lags.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(&b.0)));
    lags.truncate(cap);
    let now: BTreeSet<Key> = lags.iter().map(|(key, _)| key.clone()).collect();
    let cleared = previous
        .iter()
        .filter(|key| !now.contains(*key))
        .map(|key| (key.clone(), 0));
    let mut published = lags;
    published.extend(cleared);
    (published, now)
}

impl PartitionManager {
    /// Publishes the LSO lag of the partitions led here (blocking: reads each log's producer
    /// state).
    pub(super) fn publish_lso_lag(&self) {
        let lags: Vec<(Key, i64)> = self
            .all()
            .into_iter()
            .filter(|p| p.state().role(self.broker_id) == Role::Leader)
            .map(|p| {
                let lag = p.high_watermark() - p.last_stable_offset();
                ((p.topic.clone(), p.index), lag)
            })
            .collect();
        let max = lags.iter().map(|(_, lag)| *lag).max().unwrap_or(0).max(0);
        let lagging = lags.iter().filter(|(_, lag)| *lag > 0).count();
        let mut previous = self
            .lso_lag_series
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let (published, now) = series_to_publish(lags, &previous, LSO_LAG_SERIES_MAX);
        for ((topic, partition), lag) in published {
            gauge!(LSO_LAG, "topic" => topic, "partition" => partition.to_string()).set(lag as f64);
        }
        *previous = now;
        gauge!(LSO_LAG_MAX).set(max as f64);
        gauge!(LAGGING_PARTITIONS).set(lagging as f64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(topic: &str, partition: u32) -> Key {
        (topic.to_owned(), partition)
    }

    #[test]
    fn the_largest_lags_are_published_and_cleared_ones_go_to_zero_once() {
        let lags = vec![
            (key("a", 0), 5),
            (key("a", 1), 0),
            (key("b", 0), 9),
            (key("c", 0), 7),
        ];
        let (published, now) = series_to_publish(lags, &BTreeSet::new(), 2);
        assert_eq!(published, vec![(key("b", 0), 9), (key("c", 0), 7)]);
        assert_eq!(now, BTreeSet::from([key("b", 0), key("c", 0)]));

        // b-0's transaction ended; a-0 now makes the top two.
        let lags = vec![(key("a", 0), 5), (key("b", 0), 0), (key("c", 0), 7)];
        let (published, now) = series_to_publish(lags, &now, 2);
        assert_eq!(
            published,
            vec![(key("c", 0), 7), (key("a", 0), 5), (key("b", 0), 0)]
        );
        // Published as 0 once, then no more.
        let (published, _) = series_to_publish(vec![(key("b", 0), 0)], &BTreeSet::new(), 2);
        assert!(published.is_empty());
        assert!(!now.contains(&key("b", 0)));
    }

    /// A transaction left open on a partition shows as its LSO lag, read back through a
    /// recorder as `/metrics` will read it; once a marker ends it, the lag goes back to 0.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn an_open_transaction_shows_as_lso_lag_until_its_marker() {
        use metrics_util::debugging::{DebugValue, DebuggingRecorder};
        use streambus_storage::batch::testing::{batch_records, Producer, TimedRecord};

        use crate::broker::Broker;
        use crate::partition::append::Acks;
        use crate::testing::dev_config;

        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start(dev_config(dir.path()), true)
            .await
            .expect("starts");
        let ctx = broker.context().clone();
        let partition = crate::testing::led_topic(&ctx, "hanging", 1).await;
        let producer = Producer {
            id: 77,
            epoch: 0,
            base_sequence: 0,
            transactional: true,
        };
        let records: Vec<TimedRecord<'_>> =
            (0..4).map(|_| (None, Some(&b"v"[..]), 1_000)).collect();
        let batch = batch_records(
            &records,
            producer,
            kafka_protocol::records::Compression::None,
        );
        let lso_lag = |ctx: std::sync::Arc<crate::context::BrokerContext>| async move {
            crate::blocking::spawn(move || {
                let recorder = DebuggingRecorder::new();
                let snapshotter = recorder.snapshotter();
                metrics::with_local_recorder(&recorder, || ctx.partitions.publish_lso_lag());
                snapshotter
                    .snapshot()
                    .into_vec()
                    .into_iter()
                    .filter(|(key, _, _, _)| key.key().name() == LSO_LAG)
                    .map(|(key, _, _, value)| {
                        let labels: Vec<String> =
                            key.key().labels().map(|l| l.value().to_owned()).collect();
                        let DebugValue::Gauge(value) = value else {
                            panic!("a gauge");
                        };
                        (labels, value.into_inner())
                    })
                    .collect::<Vec<_>>()
            })
            .await
            .expect("runs")
        };
        crate::blocking::spawn({
            let partition = partition.clone();
            move || {
                let guard = partition.log().start_verification(77, 0, false);
                partition.append_verified_records(batch, Acks::Leader, guard)
            }
        })
        .await
        .expect("runs")
        .expect("appended");
        assert_eq!(
            lso_lag(ctx.clone()).await,
            vec![(vec!["hanging".to_owned(), "0".to_owned()], 4.0)]
        );
        crate::partition::append::append_marker(
            &partition,
            77,
            0,
            false,
            0,
            std::time::Duration::from_secs(10),
            &ctx.shutdown,
        )
        .await
        .expect("the abort marker");
        assert_eq!(
            lso_lag(ctx.clone()).await,
            vec![(vec!["hanging".to_owned(), "0".to_owned()], 0.0)],
            "published as 0 once the transaction ended"
        );
        broker.shutdown().await.expect("stops");
    }
}
