//! Consumer lag of the groups this broker coordinates, for the
//! `streambus_group_consumer_lag_records` gauge: each committed offset against its partition's
//! high watermark, read from the partition when this broker leads it and otherwise with one
//! ListOffsets per leader (latest, read_uncommitted: the high watermark, as Kafka's lag tools
//! read it). At most `groups.consumer_lag_max_series` (group, partition) pairs are published per
//! broker, so a broker coordinating many groups cannot flood the scrape; the rest are counted in
//! `streambus_group_consumer_lag_series_dropped`.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use kafka_protocol::messages::list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic};
use kafka_protocol::messages::{BrokerId as WireBrokerId, ListOffsetsRequest, TopicName};
use kafka_protocol::protocol::StrBytes;
use streambus_raft::command::BrokerId;

use crate::context::BrokerContext;
use crate::partition::Role;

/// One committed offset: group, topic, partition, offset.
pub type CommittedSample = (String, String, i32, i64);

/// How long one leader may take to connect and answer.
const PEER_TIMEOUT: Duration = Duration::from_secs(5);
/// ListOffsets v4: timestamps -1 (latest) with the current leader epoch, a single offset back.
const LIST_OFFSETS_VERSION: i16 = 4;

/// The high watermark of each of `partitions` that can be read now; a partition without a
/// leader, or whose leader does not answer, is left out (its lag is not published this round).
pub async fn high_watermarks(
    ctx: &BrokerContext,
    partitions: &BTreeSet<(String, i32)>,
) -> BTreeMap<(String, i32), i64> {
    let image = ctx.image();
    let me = ctx.broker_id();
    let mut found = BTreeMap::new();
    let mut remote: BTreeMap<BrokerId, Vec<(String, i32)>> = BTreeMap::new();
    for (topic, partition) in partitions {
        let Some(record) = image.topic_by_name(topic) else {
            continue;
        };
        let Ok(index) = u32::try_from(*partition) else {
            continue;
        };
        let Some(leader) = image
            .partition(&record.topic_id, index)
            .and_then(|p| p.leader)
        else {
            continue;
        };
        let local = ctx
            .partitions
            .get(&record.topic_id, index)
            .filter(|p| p.state().role(me) == Role::Leader);
        match local {
            Some(hosted) => {
                found.insert((topic.clone(), *partition), hosted.high_watermark());
            }
            None => remote
                .entry(leader)
                .or_default()
                .push((topic.clone(), *partition)),
        }
    }
    for (leader, wanted) in remote {
        match ask_leader(ctx, leader, &wanted).await {
            Ok(answers) => found.extend(answers),
            Err(reason) => {
                tracing::debug!(leader, %reason, "consumer lag: high watermarks not read");
            }
        }
    }
    found
}

/// ListOffsets (latest) for `wanted` from broker `leader`.
async fn ask_leader(
    ctx: &BrokerContext,
    leader: BrokerId,
    wanted: &[(String, i32)],
) -> Result<Vec<((String, i32), i64)>, String> {
    let image = ctx.image();
    let endpoint = crate::endpoints::live_kafka_endpoint(&image, leader)
        .ok_or_else(|| "no live endpoint".to_owned())?;
    let address = format!("{}:{}", endpoint.host, endpoint.port);
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in wanted {
        topics.entry(topic).or_default().push(*partition);
    }
    let request = ListOffsetsRequest::default()
        .with_replica_id(WireBrokerId(-1))
        .with_isolation_level(0)
        .with_topics(
            topics
                .into_iter()
                .map(|(topic, partitions)| {
                    ListOffsetsTopic::default()
                        .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|p| {
                                    ListOffsetsPartition::default()
                                        .with_partition_index(p)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect(),
        );
    let response = ctx
        .peers
        .call(
            leader,
            &address,
            &request,
            LIST_OFFSETS_VERSION,
            PEER_TIMEOUT,
        )
        .await
        .map_err(|e| format!("{address}: {e:?}"))?;
    Ok(response
        .topics
        .iter()
        .flat_map(|topic| {
            topic
                .partitions
                .iter()
                .filter(|p| p.error_code == 0 && p.offset >= 0)
                .map(|p| ((topic.name.0.to_string(), p.partition_index), p.offset))
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::partition::append::Acks;
    use crate::testing::dev_config;

    /// The two ways to a high watermark agree: the partition read here, and ListOffsets to the
    /// leader (this broker itself, through its Kafka listener).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_high_watermark_reads_the_same_locally_and_from_the_leader() {
        let dir = tempfile::tempdir().expect("temp dir");
        let broker = Broker::start(dev_config(dir.path()), true)
            .await
            .expect("starts");
        let ctx = broker.context().clone();
        let partition = crate::testing::led_topic(&ctx, "lagged", 2).await;
        for _ in 0..3 {
            let batch = streambus_storage::batch::testing::batch(4, 5, b'v', 1_000);
            let appended = crate::blocking::spawn({
                let partition = partition.clone();
                move || partition.append_records(batch, Acks::Leader)
            })
            .await
            .expect("runs");
            appended.expect("appended");
        }

        let wanted: BTreeSet<(String, i32)> = [("lagged", 0), ("lagged", 1), ("missing", 0)]
            .into_iter()
            .map(|(t, p)| (t.to_owned(), p))
            .collect();
        let local = high_watermarks(&ctx, &wanted).await;
        let expected = BTreeMap::from([
            (("lagged".to_owned(), 0), 12),
            (("lagged".to_owned(), 1), 0),
        ]);
        assert_eq!(local, expected);
        let asked = ask_leader(
            &ctx,
            ctx.broker_id(),
            &[("lagged".to_owned(), 0), ("lagged".to_owned(), 1)],
        )
        .await
        .expect("the leader answers");
        assert_eq!(asked.into_iter().collect::<BTreeMap<_, _>>(), expected);
        broker.shutdown().await.expect("stops");
    }
}
