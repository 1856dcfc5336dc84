//! Helpers for the multi-node tests on top of the crate's `testing` module: tuning, commands and
//! image comparisons.

use std::collections::BTreeMap;
use std::sync::Arc;

use streambus_raft::command::{CreateTopic, TopicAssignment, TopicId};
pub use streambus_raft::testing::{eventually, wait_registered, LoopbackCluster, WAIT};
use streambus_raft::{MetadataCommand, MetadataImage, MetadataNode, MetadataResponse, NodeConfig};

/// Default tuning: fast elections, short request timeouts.
pub fn fast(config: &mut NodeConfig) {
    config.raft_heartbeat_interval_ms = 50;
    config.election_timeout_min_ms = 300;
    config.election_timeout_max_ms = 600;
    config.request_timeout_ms = 5_000;
    // Brokers registered by hand in these tests never heartbeat; only the fencing tests want
    // them fenced.
    config.broker_session_timeout_ms = 600_000;
}

pub fn topic_id(seed: u8) -> TopicId {
    TopicId([seed.max(1); 16])
}

/// A `CreateTopic` command whose topic id is derived from `seed`.
pub fn create_topic(name: &str, seed: u8, assignment: TopicAssignment) -> MetadataCommand {
    MetadataCommand::CreateTopic(CreateTopic {
        name: name.to_owned(),
        topic_id: topic_id(seed),
        assignment,
        configs: BTreeMap::new(),
    })
}

/// The image with its offset zeroed, for comparing content across term changes (a new leader
/// commits a blank entry, which moves the offset and nothing else).
pub fn content(image: &Arc<MetadataImage>) -> MetadataImage {
    let mut image = MetadataImage::clone(image);
    image.advance(0);
    image
}

pub fn assert_applied(response: &MetadataResponse) {
    assert!(
        !matches!(response, MetadataResponse::Rejected(_)),
        "command rejected: {response:?}"
    );
}

/// Registers broker `broker_id` through `node` (kafka endpoint only, so it is never added to
/// the raft group).
pub async fn register(node: &MetadataNode, broker_id: i32, rack: Option<&str>) -> i64 {
    let command = MetadataCommand::RegisterBroker(streambus_raft::command::RegisterBroker {
        broker_id,
        incarnation_id: streambus_raft::command::IncarnationId(*uuid_like(broker_id)),
        endpoints: vec![streambus_raft::command::Endpoint {
            name: "kafka".to_owned(),
            host: "127.0.0.1".to_owned(),
            port: 9092,
        }],
        rack: rack.map(str::to_owned),
        now_ms: 1,
        previous_broker_epoch: None,
    });
    match node.write(command).await.expect("write commits") {
        MetadataResponse::BrokerRegistered { broker_epoch } => broker_epoch,
        other => panic!("registration refused: {other:?}"),
    }
}

fn uuid_like(broker_id: i32) -> &'static [u8; 16] {
    // A fixed incarnation per broker id: these tests register each broker once.
    const IDS: [[u8; 16]; 8] = [
        [1; 16], [2; 16], [3; 16], [4; 16], [5; 16], [6; 16], [7; 16], [8; 16],
    ];
    &IDS[(broker_id as usize) % IDS.len()]
}
