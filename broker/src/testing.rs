//! Test-only helpers shared by the broker's unit tests: metadata images built by applying
//! commands, as the quorum would, the config of an in-process `--dev` broker, and a topic led by
//! such a broker.

use std::collections::BTreeMap;

use streambus_raft::command::{
    CreateTopic, Endpoint, IncarnationId, MetadataCommand, RegisterBroker, TopicAssignment, TopicId,
};
use streambus_raft::MetadataImage;

use crate::config::BrokerConfig;
use crate::endpoints::KAFKA_ENDPOINT;

/// A `--dev` broker's config with its data in `dir` and every listener on a free port.
pub fn dev_config(dir: &std::path::Path) -> BrokerConfig {
    let any_port: std::net::SocketAddr = "127.0.0.1:0".parse().expect("addr");
    BrokerConfig {
        data_dir: dir.to_owned(),
        kafka_listener: any_port,
        raft_listener: any_port,
        admin_listener: any_port,
        http_listener: any_port,
        ..BrokerConfig::default()
    }
}

/// Creates `name` with `partitions` partitions on the in-process broker of `ctx` (retried while
/// the broker has not registered yet: until then no broker can host it) and waits until this
/// broker leads its partition 0, which it returns. Bounded: 100 tries of 50 ms each.
pub async fn led_topic(
    ctx: &crate::context::BrokerContext,
    name: &str,
    partitions: i32,
) -> std::sync::Arc<crate::partition::Partition> {
    use crate::ops::topics::{create_topic, Layout, NewTopic};
    use crate::ops::Mode;
    use crate::partition::Role;

    const PAUSE: std::time::Duration = std::time::Duration::from_millis(50);
    let topic = NewTopic {
        name: name.to_owned(),
        layout: Layout::Auto {
            partitions: Some(partitions),
            replication_factor: Some(1),
        },
        configs: Vec::new(),
    };
    let mut created = None;
    for _ in 0..100 {
        match create_topic(ctx, topic.clone(), Mode::Apply).await {
            Ok(topic) => {
                created = Some(topic);
                break;
            }
            Err(_) => tokio::time::sleep(PAUSE).await,
        }
    }
    let topic_id = created.and_then(|c| c.topic_id).expect("created");
    for _ in 0..100 {
        let led = ctx
            .partitions
            .get(&topic_id, 0)
            .filter(|p| p.state().role(ctx.broker_id()) == Role::Leader);
        if let Some(partition) = led {
            return partition;
        }
        tokio::time::sleep(PAUSE).await;
    }
    panic!("partition 0 of {name} is never led here");
}

/// The id [`Images::create_topic`] gives the topics it creates.
pub const TOPIC_ID: TopicId = TopicId([42; 16]);

/// Builds images by applying commands, as the quorum would.
#[derive(Debug, Default)]
pub struct Images {
    pub image: MetadataImage,
    offset: u64,
}

impl Images {
    /// Brokers `ids` registered and unfenced.
    pub fn with_brokers(ids: &[i32]) -> Images {
        let mut images = Images::default();
        for &broker_id in ids {
            let _ = images.apply(MetadataCommand::RegisterBroker(RegisterBroker {
                broker_id,
                incarnation_id: IncarnationId([broker_id as u8; 16]),
                endpoints: vec![Endpoint {
                    name: KAFKA_ENDPOINT.to_owned(),
                    host: "localhost".to_owned(),
                    port: 9092,
                }],
                rack: None,
                now_ms: 1_000,
                previous_broker_epoch: None,
            }));
        }
        images
    }

    /// Applies `command`, which must not be rejected.
    pub fn apply(&mut self, command: MetadataCommand) -> streambus_raft::MetadataResponse {
        self.offset += 1;
        let response = self.image.apply(self.offset, &command);
        assert!(
            !matches!(response, streambus_raft::MetadataResponse::Rejected(_)),
            "{command:?}: {response:?}"
        );
        response
    }

    /// Fences broker `broker_id` (its session lapsed).
    pub fn fence(&mut self, broker_id: i32) {
        let broker_epoch = self
            .image
            .broker(broker_id)
            .expect("registered")
            .broker_epoch;
        self.apply(MetadataCommand::FenceBroker(
            streambus_raft::command::FenceBroker {
                broker_id,
                broker_epoch,
            },
        ));
    }

    /// Creates the compacted topic `name` (id [`TOPIC_ID`]) with these replica lists; its id.
    pub fn create_topic(&mut self, name: &str, replicas: Vec<Vec<i32>>) -> TopicId {
        let topic_id = TOPIC_ID;
        let _ = self.apply(MetadataCommand::CreateTopic(CreateTopic {
            name: name.to_owned(),
            topic_id,
            assignment: TopicAssignment::Explicit(replicas),
            configs: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
        }));
        topic_id
    }

    pub fn leader_epoch(&self, topic_id: &TopicId, partition: u32) -> i32 {
        self.image
            .partition(topic_id, partition)
            .expect("partition exists")
            .leader_epoch
    }
}

/// Runs blocking partition work from an async test body as the broker runs it: on a blocking
/// thread marked by [`crate::blocking::spawn`] (debug builds refuse log locks on a runtime
/// thread, the test's own included).
pub async fn off_runtime<R, F>(work: F) -> R
where
    F: FnOnce() -> R + Send + 'static,
    R: Send + 'static,
{
    crate::blocking::spawn(work)
        .await
        .expect("blocking test work panicked")
}

/// [`crate::partition::PartitionManager::reconcile`] from an async test body.
pub async fn reconcile(
    manager: &std::sync::Arc<crate::partition::PartitionManager>,
    image: &MetadataImage,
    active: bool,
) {
    let (manager, image) = (manager.clone(), image.clone());
    off_runtime(move || manager.reconcile(&image, active)).await;
}
