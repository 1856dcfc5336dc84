//! Test helpers: a metadata image fed commands at consecutive log offsets, and builders for the
//! commands tests use most.

use std::collections::BTreeMap;

use super::{MetadataImage, PartitionRecord};
use crate::command::{
    BrokerId, CreateTopic, Endpoint, FenceBroker, IncarnationId, MetadataCommand, MetadataResponse,
    RegisterBroker, Rejection, TopicAssignment, TopicId,
};

/// An image plus the next log offset to apply at, like a raft state machine.
#[derive(Debug, Default)]
pub(crate) struct Harness {
    pub(crate) image: MetadataImage,
    last_offset: u64,
}

impl Harness {
    /// A cluster with these brokers registered (incarnation 1, no rack).
    pub(crate) fn with_brokers(ids: &[BrokerId]) -> Self {
        let mut harness = Harness::default();
        for &id in ids {
            harness.register(id, 1, None);
        }
        harness
    }

    pub(crate) fn apply(&mut self, command: MetadataCommand) -> MetadataResponse {
        self.last_offset += 1;
        self.image.apply(self.last_offset, &command)
    }

    /// Registers and returns the broker epoch.
    pub(crate) fn register(&mut self, id: BrokerId, incarnation: u8, rack: Option<&str>) -> i64 {
        match self.apply(register_cmd(id, incarnation, rack)) {
            MetadataResponse::BrokerRegistered { broker_epoch } => broker_epoch,
            other => panic!("registration of {id} answered {other:?}"),
        }
    }

    /// Fences the broker at its current epoch.
    pub(crate) fn fence(&mut self, id: BrokerId) -> MetadataResponse {
        let broker_epoch = self.epoch(id);
        self.apply(MetadataCommand::FenceBroker(FenceBroker {
            broker_id: id,
            broker_epoch,
        }))
    }

    pub(crate) fn epoch(&self, id: BrokerId) -> i64 {
        self.image.broker(id).expect("registered").broker_epoch
    }

    /// The current broker epoch of each registered member, as a leader whose followers all
    /// fetched as their current incarnations reports them in an ISR change.
    pub(crate) fn member_epochs(&self, members: &[BrokerId]) -> BTreeMap<BrokerId, i64> {
        members
            .iter()
            .filter_map(|&b| Some((b, self.image.broker(b)?.broker_epoch)))
            .collect()
    }

    /// Registers `id` again as a new process (`incarnation`): `clean` says its previous run
    /// shut down cleanly at its current epoch, so its data is intact.
    pub(crate) fn reregister(&mut self, id: BrokerId, incarnation: u8, clean: bool) -> i64 {
        let previous = clean.then(|| self.epoch(id));
        let MetadataCommand::RegisterBroker(mut cmd) = register_cmd(id, incarnation, None) else {
            unreachable!("register_cmd builds a registration")
        };
        cmd.previous_broker_epoch = previous;
        match self.apply(MetadataCommand::RegisterBroker(cmd)) {
            MetadataResponse::BrokerRegistered { broker_epoch } => broker_epoch,
            other => panic!("registration of {id} answered {other:?}"),
        }
    }

    /// Creates a topic with explicit replica lists and id `[id_byte; 16]`.
    pub(crate) fn create(
        &mut self,
        name: &str,
        id_byte: u8,
        lists: Vec<Vec<BrokerId>>,
    ) -> MetadataResponse {
        self.apply(create_cmd(name, id_byte, TopicAssignment::Explicit(lists)))
    }

    pub(crate) fn create_auto(
        &mut self,
        name: &str,
        id_byte: u8,
        partitions: u32,
        replication_factor: u16,
    ) -> MetadataResponse {
        let assignment = TopicAssignment::Auto {
            partitions,
            replication_factor,
        };
        self.apply(create_cmd(name, id_byte, assignment))
    }

    pub(crate) fn partition(&self, topic: &str, partition: u32) -> &PartitionRecord {
        self.image
            .topic_by_name(topic)
            .and_then(|t| t.partition(partition))
            .expect("partition exists")
    }

    pub(crate) fn topic_id(&self, topic: &str) -> TopicId {
        self.image
            .topic_by_name(topic)
            .expect("topic exists")
            .topic_id
    }
}

pub(crate) fn register_cmd(id: BrokerId, incarnation: u8, rack: Option<&str>) -> MetadataCommand {
    MetadataCommand::RegisterBroker(RegisterBroker {
        broker_id: id,
        incarnation_id: IncarnationId([incarnation; 16]),
        endpoints: vec![Endpoint {
            name: "kafka".to_owned(),
            host: format!("broker-{id}"),
            port: 9092,
        }],
        rack: rack.map(str::to_owned),
        now_ms: 1_000 + i64::from(id),
        previous_broker_epoch: None,
    })
}

pub(crate) fn create_cmd(name: &str, id_byte: u8, assignment: TopicAssignment) -> MetadataCommand {
    MetadataCommand::CreateTopic(CreateTopic {
        name: name.to_owned(),
        topic_id: TopicId([id_byte; 16]),
        assignment,
        configs: BTreeMap::new(),
    })
}

/// The rejection in `response`; panics if it was applied.
pub(crate) fn rejection(response: MetadataResponse) -> Rejection {
    match response {
        MetadataResponse::Rejected(rejection) => rejection,
        applied => panic!("expected a rejection, got {applied:?}"),
    }
}

/// Asserts the command is rejected with `expected` and changes nothing but the offset.
pub(crate) fn assert_rejected(
    harness: &mut Harness,
    command: MetadataCommand,
    expected: Rejection,
) {
    let before = harness.image.clone();
    let response = harness.apply(command);
    assert_eq!(rejection(response), expected);
    let mut after = harness.image.clone();
    after.advance(before.metadata_offset());
    assert_eq!(after, before, "a rejected command changed the image");
}
