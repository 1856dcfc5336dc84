//! Test-only: a key-value state machine for the runtime's tests, and metadata images with a
//! coordinator topic.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::{
    CreateTopic, Endpoint, IncarnationId, MetadataCommand, RegisterBroker, TopicAssignment, TopicId,
};
use streambus_raft::MetadataImage;
use streambus_storage::SystemClock;

use super::machine::{
    CoordinatorMachine, CoordinatorRecord, CoordinatorResult, OpContext, ReplayError,
};
use super::shard::ShardConfig;

/// Bounds every wait in these tests.
pub const TEST_WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen.
pub const NOT_YET: Duration = Duration::from_millis(100);

/// A map from string keys to string values; a timer deletes its key when it fires.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvMachine {
    pub map: BTreeMap<String, String>,
    /// Offsets replayed, in order.
    pub offsets: Vec<i64>,
}

impl CoordinatorMachine for KvMachine {
    type TimerKey = String;

    fn replay(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let text = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|e| ReplayError(e.to_string()))
        };
        let key = text(key.ok_or_else(|| ReplayError("no key".to_owned()))?)?;
        match value {
            Some(value) => self.map.insert(key, text(value)?),
            None => self.map.remove(&key),
        };
        self.offsets.push(offset);
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: String,
        _ctx: &mut OpContext<'_, String>,
    ) -> Vec<CoordinatorRecord> {
        vec![CoordinatorRecord::tombstone(key)]
    }
}

/// An operation writing `key = value`; answers the value it replaced.
pub fn put(
    key: &str,
    value: &str,
) -> impl FnOnce(&mut KvMachine, &mut OpContext<'_, String>) -> CoordinatorResult<Option<String>>
       + Send
       + 'static {
    let (key, value) = (key.to_owned(), value.to_owned());
    move |machine, _| {
        let previous = machine.map.get(&key).cloned();
        CoordinatorResult::new(
            vec![CoordinatorRecord::new(key.into_bytes(), value.into_bytes())],
            previous,
        )
    }
}

/// An operation deleting `key`.
pub fn delete(
    key: &str,
) -> impl FnOnce(&mut KvMachine, &mut OpContext<'_, String>) -> CoordinatorResult<()> + Send + 'static
{
    let key = key.to_owned();
    move |_, _| CoordinatorResult::new(vec![CoordinatorRecord::tombstone(key.into_bytes())], ())
}

pub fn shard_config(write_timeout: Duration) -> ShardConfig {
    ShardConfig {
        topic: "__test_state".to_owned(),
        partition: 0,
        write_timeout,
        clock: Arc::new(SystemClock),
    }
}

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
                    name: "kafka".to_owned(),
                    host: "localhost".to_owned(),
                    port: 9092,
                }],
                rack: None,
                now_ms: 1_000,
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

    /// Creates topic `name` with these replica lists; its id.
    pub fn create_topic(&mut self, name: &str, replicas: Vec<Vec<i32>>) -> TopicId {
        let topic_id = TopicId([42; 16]);
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
