//! The metadata log's vocabulary: every change to cluster metadata is a [`MetadataCommand`]
//! written through raft, and applying it answers a [`MetadataResponse`].
//!
//! These are data types only; [`crate::image::MetadataImage::apply`] gives them meaning. The
//! state machine is pure (no I/O, no clock reads, no randomness), which is why commands carry
//! the time (`now_ms`) and any random ids, stamped by the controller when it proposes them.
//! Heartbeats are not here on purpose: they are kept in memory by the controller, and only their
//! consequence (a [`FenceBroker`]) is logged.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker id, Kafka's `int32` (replica lists and leaders use the same type).
pub type BrokerId = i32;

/// The most partitions one topic may have; bounds the work of one command.
pub const MAX_PARTITIONS_PER_TOPIC: u32 = 10_000;

/// The most producer ids one [`AllocateProducerIds`] may ask for.
pub const MAX_PRODUCER_ID_BLOCK: u32 = 1_000_000;

/// Identifies one run of a broker process: a new random value at every start, so the controller
/// can tell a restarted broker from a stale message of its previous life (Kafka's incarnation id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IncarnationId(pub [u8; 16]);

/// A topic's UUID (Kafka's topic id), kept as raw bytes. It distinguishes a topic from an
/// earlier, deleted topic of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 16]);

impl TopicId {
    /// Kafka reserves the all-zero UUID to mean "no topic id".
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 16]
    }
}

impl fmt::Display for TopicId {
    /// The usual UUID spelling, `8-4-4-4-12` hex digits.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, byte) in self.0.iter().enumerate() {
            if matches!(i, 4 | 6 | 8 | 10) {
                f.write_str("-")?;
            }
            write!(f, "{byte:02x}")?;
        }
        Ok(())
    }
}

/// One change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker process announces itself after starting.
    RegisterBroker(RegisterBroker),
    /// The controller stopped hearing from a broker: move its leaderships away.
    FenceBroker(FenceBroker),
    /// Creates a topic, with replicas chosen explicitly or placed by the state machine.
    CreateTopic(CreateTopic),
    /// Deletes a topic and all its partitions.
    DeleteTopic(DeleteTopic),
    /// Adds partitions to an existing topic.
    CreatePartitions(CreatePartitions),
    /// Sets and removes topic configs.
    AlterTopicConfigs(AlterTopicConfigs),
    /// A partition leader changes its partition's ISR.
    AlterPartition(AlterPartition),
    /// An operator asks for preferred or unclean leader elections.
    ElectLeaders(ElectLeaders),
    /// Hands a broker a block of producer ids to give out to idempotent producers.
    AllocateProducerIds(AllocateProducerIds),
    /// Starts, replaces or cancels partition reassignments (Kafka's KIP-455).
    AlterReassignments(AlterReassignments),
    /// A broker's log directory failed (a write or fsync error): its replicas are offline, so
    /// it leaves ISRs and leaderships and may not lead or rejoin until [`LogDirOnline`].
    LogDirOffline(LogDirOffline),
    /// The broker's log directory is healthy again and its logs were recovered: it may lead
    /// and rejoin ISRs (after catching up, as any follower).
    LogDirOnline(LogDirOnline),
}

/// See [`MetadataCommand::RegisterBroker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RegisterBroker {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    /// Where clients and peers reach the broker, one entry per named listener.
    pub endpoints: Vec<Endpoint>,
    /// Replica placement spreads a partition's replicas across racks when brokers have one.
    pub rack: Option<String>,
    pub now_ms: i64,
    /// The broker epoch this broker's data was last known intact under (Kafka's
    /// `PreviousBrokerEpoch`, KIP-966): read from the clean-shutdown marker at process start, or
    /// the epoch of the registration this process already held. `None` after an unclean
    /// shutdown (a crash, a power loss, a lost disk): the broker's logs may be shorter than what
    /// it acknowledged, so it may not lead from a last-member ISR or an ELR.
    #[serde(default)]
    pub previous_broker_epoch: Option<i64>,
}

/// A named, advertised listener address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name, e.g. `kafka` or `raft`.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// See [`MetadataCommand::FenceBroker`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FenceBroker {
    pub broker_id: BrokerId,
    /// The epoch whose heartbeats stopped; if the broker registered again since, the fence is
    /// stale and rejected, so it cannot hit the new process.
    pub broker_epoch: i64,
}

/// See [`MetadataCommand::CreateTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    pub name: String,
    /// Random, chosen by the controller, because the state machine may not draw random numbers.
    pub topic_id: TopicId,
    pub assignment: TopicAssignment,
    /// Topic configs set at creation, Kafka spelling (`retention.ms`).
    pub configs: BTreeMap<String, String>,
}

/// How a new topic's replicas are chosen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicAssignment {
    /// Replica lists indexed by partition, preferred leader first.
    Explicit(Vec<Vec<BrokerId>>),
    /// Placed by the state machine over unfenced brokers, rack-aware.
    Auto {
        partitions: u32,
        replication_factor: u16,
    },
}

/// See [`MetadataCommand::DeleteTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopic {
    pub name: String,
}

/// See [`MetadataCommand::CreatePartitions`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatePartitions {
    pub name: String,
    /// The topic's partition count afterwards (Kafka's semantics), not the number to add.
    pub total_count: u32,
    /// Replica lists for the new partitions only; `None` places them automatically.
    pub assignment: Option<Vec<Vec<BrokerId>>>,
}

/// See [`MetadataCommand::AlterTopicConfigs`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterTopicConfigs {
    pub name: String,
    pub set: BTreeMap<String, String>,
    /// Applied after `set`, so a key in both ends up removed.
    pub remove: Vec<String>,
}

/// See [`MetadataCommand::AlterPartition`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterPartition {
    pub topic_id: TopicId,
    pub partition: u32,
    /// The broker asking; only the current leader may change the ISR.
    pub leader_id: BrokerId,
    /// The leader epoch the leader believes is current.
    pub leader_epoch: i32,
    /// The partition epoch the leader based its change on: a compare-and-set guard.
    pub partition_epoch: i32,
    pub new_isr: Vec<BrokerId>,
    /// The broker epoch each member sent with its latest fetch (Kafka's `NewIsrWithEpochs`,
    /// KIP-903). A member being added must have fetched as its broker's current incarnation:
    /// a fetch of a previous incarnation says nothing about the restarted broker's log.
    #[serde(default)]
    pub member_epochs: BTreeMap<BrokerId, i64>,
}

/// See [`MetadataCommand::ElectLeaders`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectLeaders {
    pub election: ElectionType,
    /// `(topic name, partition)` pairs; `None` means every partition of every topic.
    pub partitions: Option<Vec<(String, u32)>>,
}

/// Kafka's election types.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// Move leadership back to the first replica, if it is in the ISR and unfenced.
    Preferred,
    /// Give a leaderless partition a leader outside the ISR, accepting data loss.
    Unclean,
}

/// See [`MetadataCommand::AlterReassignments`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlterReassignments {
    pub reassignments: Vec<Reassignment>,
}

/// One partition's reassignment request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reassignment {
    pub topic: String,
    pub partition: u32,
    /// The replicas the partition should end with, preferred leader first; `None` cancels the
    /// reassignment in progress.
    pub target: Option<Vec<BrokerId>>,
}

/// See [`MetadataCommand::AllocateProducerIds`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateProducerIds {
    pub broker_id: BrokerId,
    /// Must be the broker's current epoch, so a previous run cannot take ids.
    pub broker_epoch: i64,
    /// How many consecutive ids the broker asks for.
    pub count: u32,
}

/// See [`MetadataCommand::LogDirOffline`]. Kafka's brokers report failed directories in their
/// heartbeats (KIP-858); here, with one log directory per broker, it is a command of its own.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDirOffline {
    pub broker_id: BrokerId,
    /// Must be the broker's current epoch: a previous run's report says nothing of this one.
    pub broker_epoch: i64,
}

/// See [`MetadataCommand::LogDirOnline`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogDirOnline {
    pub broker_id: BrokerId,
    /// Must be the broker's current epoch.
    pub broker_epoch: i64,
}

/// What applying a [`MetadataCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    /// Applied; the command has nothing else to report.
    Ok,
    /// [`RegisterBroker`] applied. The epoch is the log offset of the registration that started
    /// this incarnation; it fences requests from the broker's earlier runs.
    BrokerRegistered { broker_epoch: i64 },
    /// [`FenceBroker`] applied (or the broker was already fenced: 0 partitions changed).
    BrokerFenced { partitions_changed: u32 },
    /// [`CreateTopic`] applied; the replica lists indexed by partition.
    TopicCreated {
        topic_id: TopicId,
        assignments: Vec<Vec<BrokerId>>,
    },
    /// [`DeleteTopic`] applied.
    TopicDeleted { topic_id: TopicId },
    /// [`CreatePartitions`] applied; the replica lists of the new partitions only.
    PartitionsCreated { assignments: Vec<Vec<BrokerId>> },
    /// [`AlterPartition`] applied: the partition's state now.
    PartitionAltered {
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<BrokerId>,
    },
    /// [`ElectLeaders`] applied: one result per requested partition, in request order.
    LeadersElected { results: Vec<ElectionResult> },
    /// [`AllocateProducerIds`] applied: ids `first_producer_id .. first_producer_id + count`
    /// belong to the broker.
    ProducerIdsAllocated { first_producer_id: i64, count: u32 },
    /// [`AlterReassignments`] applied: one outcome per requested partition, in request order.
    ReassignmentsAltered { results: Vec<Result<(), Rejection>> },
    /// Not applied: the command conflicts with the current metadata. Deterministic, so every
    /// replica of the state machine rejects it the same way.
    Rejected(Rejection),
    /// [`LogDirOffline`] or [`LogDirOnline`] applied (0 partitions changed if the broker's log
    /// directory was already in that state).
    LogDirChanged { partitions_changed: u32 },
}

/// The outcome of an election for one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ElectionResult {
    pub topic: String,
    pub partition: u32,
    pub outcome: ElectionOutcome,
}

/// See [`ElectionResult`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionOutcome {
    Elected {
        leader: BrokerId,
        leader_epoch: i32,
        /// `None` for a clean election. For an unclean one, the replicas that last held every
        /// committed record (the ISR, eligible leader replicas or last known ELR before the
        /// election; the new leader may be among them, with a log that lost its unflushed
        /// tail): records beyond the new leader's log end that only they hold are lost.
        #[serde(default)]
        last_in_sync: Option<Vec<BrokerId>>,
    },
    /// The preferred replica already leads, or (unclean) the partition has a leader.
    NotNeeded,
    /// No eligible replica: the preferred one is out of the ISR or fenced, or (unclean) every
    /// replica is fenced.
    NotAvailable,
    UnknownTopicOrPartition,
}

/// Why the state machine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// Broker ids are non-negative.
    InvalidBrokerId {
        broker_id: BrokerId,
    },
    /// A request from a broker that is not registered.
    UnknownBroker {
        broker_id: BrokerId,
    },
    /// A request carrying an epoch the broker no longer has (it registered again since).
    StaleBrokerEpoch {
        broker_id: BrokerId,
        current: i64,
        requested: i64,
    },
    /// The broker id is registered by a live process with another incarnation. Never produced
    /// by the state machine: the controller answers it, since only it knows session liveness.
    DuplicateBrokerRegistration {
        broker_id: BrokerId,
    },
    /// A heartbeat carrying an incarnation the broker no longer has. Never produced by the state
    /// machine: heartbeats are handled by the controller.
    StaleIncarnation {
        broker_id: BrokerId,
    },
    InvalidTopicName {
        name: String,
        problem: TopicNameProblem,
    },
    /// The all-zero topic id means "none" in Kafka.
    InvalidTopicId {
        topic_id: TopicId,
    },
    /// Another live topic already has this id.
    DuplicateTopicId {
        topic_id: TopicId,
    },
    TopicAlreadyExists {
        name: String,
    },
    UnknownTopic {
        name: String,
    },
    UnknownTopicId {
        topic_id: TopicId,
    },
    UnknownPartition {
        topic_id: TopicId,
        partition: u32,
    },
    /// A partition count out of range; `current` is 0 for a new topic.
    InvalidPartitions {
        requested: u32,
        current: u32,
    },
    /// More replicas asked for than there are unfenced brokers (or zero replicas).
    InvalidReplicationFactor {
        requested: u32,
        available: u32,
    },
    /// An explicit assignment lists replicas for a different number of partitions than created.
    WrongAssignmentCount {
        expected: u32,
        found: u32,
    },
    /// A partition's replica list cannot be used.
    InvalidReplicaAssignment {
        partition: u32,
        problem: AssignmentProblem,
    },
    /// An ISR change from a broker that does not lead the partition.
    NotLeader {
        broker_id: BrokerId,
        leader: Option<BrokerId>,
    },
    /// An ISR change based on another leader epoch than the current one.
    FencedLeaderEpoch {
        current: i32,
        requested: i32,
    },
    /// An ISR change based on another partition epoch than the current one (a lost race).
    InvalidPartitionEpoch {
        current: i32,
        requested: i32,
    },
    InvalidIsr {
        problem: IsrProblem,
    },
    /// A producer-id block size out of `1..=MAX_PRODUCER_ID_BLOCK`.
    InvalidCount {
        count: u32,
    },
    /// The producer-id space (`i64`) is used up.
    ProducerIdsExhausted,
    /// A reassignment cancel for a partition that is not being reassigned.
    NoReassignmentInProgress {
        topic: String,
        partition: u32,
    },
}

/// What is wrong with a topic name in [`Rejection::InvalidTopicName`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum TopicNameProblem {
    Empty,
    /// Longer than Kafka's 249 characters.
    TooLong,
    /// `.` and `..` are reserved.
    Reserved,
    /// Only `[a-zA-Z0-9._-]` are allowed.
    IllegalCharacter(char),
}

/// What is wrong with a replica list in [`Rejection::InvalidReplicaAssignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentProblem {
    NoReplicas,
    DuplicateReplica(BrokerId),
    UnknownBroker(BrokerId),
    /// Every partition of a topic has the same number of replicas.
    InconsistentReplicationFactor {
        expected: u32,
        found: u32,
    },
    /// No replica could lead, so the partition would be born offline.
    AllReplicasFenced,
}

/// What is wrong with the ISR in [`Rejection::InvalidIsr`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum IsrProblem {
    Empty,
    Duplicate(BrokerId),
    NotAReplica(BrokerId),
    MissingLeader(BrokerId),
    /// A broker added to the ISR must be registered and unfenced.
    IneligibleBroker(BrokerId),
    /// A broker added to the ISR must have fetched as its current incarnation (KIP-903);
    /// `fetched` is the broker epoch of the fetch the leader based the change on.
    StaleBrokerEpoch {
        broker_id: BrokerId,
        fetched: Option<i64>,
        current: i64,
    },
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::InvalidBrokerId { broker_id } => {
                write!(f, "broker id {broker_id} is negative")
            }
            Rejection::UnknownBroker { broker_id } => {
                write!(f, "broker {broker_id} is not registered")
            }
            Rejection::StaleBrokerEpoch {
                broker_id,
                current,
                requested,
            } => write!(
                f,
                "broker {broker_id} epoch {requested} is stale; the current epoch is {current}"
            ),
            Rejection::DuplicateBrokerRegistration { broker_id } => {
                write!(
                    f,
                    "broker {broker_id} is registered by another live process"
                )
            }
            Rejection::StaleIncarnation { broker_id } => {
                write!(f, "broker {broker_id} sent a stale incarnation id")
            }
            Rejection::InvalidTopicName { name, problem } => {
                write!(f, "topic name {name:?} is invalid: {problem}")
            }
            Rejection::InvalidTopicId { topic_id } => {
                write!(f, "topic id {topic_id} is reserved")
            }
            Rejection::DuplicateTopicId { topic_id } => {
                write!(f, "topic id {topic_id} is already used by another topic")
            }
            Rejection::TopicAlreadyExists { name } => write!(f, "topic {name:?} already exists"),
            Rejection::UnknownTopic { name } => write!(f, "topic {name:?} does not exist"),
            Rejection::UnknownTopicId { topic_id } => {
                write!(f, "topic id {topic_id} does not exist")
            }
            Rejection::UnknownPartition {
                topic_id,
                partition,
            } => write!(f, "topic id {topic_id} has no partition {partition}"),
            Rejection::InvalidPartitions { requested, current } => write!(
                f,
                "partition count {requested} is invalid: it must be above {current} and at most \
                 {MAX_PARTITIONS_PER_TOPIC}"
            ),
            Rejection::InvalidReplicationFactor {
                requested,
                available,
            } => write!(
                f,
                "replication factor {requested} is invalid: it must be at least 1 and at most \
                 the {available} unfenced brokers"
            ),
            Rejection::WrongAssignmentCount { expected, found } => write!(
                f,
                "the assignment lists {found} partitions but {expected} are being created"
            ),
            Rejection::InvalidReplicaAssignment { partition, problem } => {
                write!(f, "partition {partition}: {problem}")
            }
            Rejection::NotLeader { .. }
            | Rejection::FencedLeaderEpoch { .. }
            | Rejection::InvalidPartitionEpoch { .. }
            | Rejection::InvalidIsr { .. }
            | Rejection::InvalidCount { .. }
            | Rejection::ProducerIdsExhausted => self.fmt_partition_or_producer(f),
            Rejection::NoReassignmentInProgress { topic, partition } => write!(
                f,
                "partition {partition} of topic {topic:?} is not being reassigned"
            ),
        }
    }
}

impl Rejection {
    /// The sentences of the partition and producer-id rejections (split from `fmt` for length).
    fn fmt_partition_or_producer(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::NotLeader { broker_id, leader } => match leader {
                Some(leader) => write!(
                    f,
                    "broker {broker_id} is not the partition leader; broker {leader} is"
                ),
                None => write!(
                    f,
                    "broker {broker_id} is not the partition leader; it has none"
                ),
            },
            Rejection::FencedLeaderEpoch { current, requested } => write!(
                f,
                "leader epoch {requested} is not the current leader epoch {current}"
            ),
            Rejection::InvalidPartitionEpoch { current, requested } => write!(
                f,
                "partition epoch {requested} is not the current partition epoch {current}"
            ),
            Rejection::InvalidIsr { problem } => write!(f, "the new ISR is invalid: {problem}"),
            Rejection::InvalidCount { count } => write!(
                f,
                "producer id block size {count} is not between 1 and {MAX_PRODUCER_ID_BLOCK}"
            ),
            Rejection::ProducerIdsExhausted => write!(f, "no producer ids are left"),
            // Every other variant is written by `fmt` and never delegated here.
            other => write!(f, "{other:?}"),
        }
    }
}

impl fmt::Display for TopicNameProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TopicNameProblem::Empty => write!(f, "it is empty"),
            TopicNameProblem::TooLong => write!(f, "it is longer than 249 characters"),
            TopicNameProblem::Reserved => write!(f, "\".\" and \"..\" are reserved"),
            TopicNameProblem::IllegalCharacter(c) => {
                write!(f, "{c:?} is not one of [a-zA-Z0-9._-]")
            }
        }
    }
}

impl fmt::Display for AssignmentProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            AssignmentProblem::NoReplicas => write!(f, "no replicas"),
            AssignmentProblem::DuplicateReplica(id) => write!(f, "broker {id} appears twice"),
            AssignmentProblem::UnknownBroker(id) => write!(f, "broker {id} is not registered"),
            AssignmentProblem::InconsistentReplicationFactor { expected, found } => {
                write!(f, "{found} replicas where the topic has {expected}")
            }
            AssignmentProblem::AllReplicasFenced => write!(f, "every replica is fenced"),
        }
    }
}

impl fmt::Display for IsrProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IsrProblem::Empty => write!(f, "it is empty"),
            IsrProblem::Duplicate(id) => write!(f, "broker {id} appears twice"),
            IsrProblem::NotAReplica(id) => write!(f, "broker {id} is not a replica"),
            IsrProblem::MissingLeader(id) => write!(f, "it leaves out the leader {id}"),
            IsrProblem::IneligibleBroker(id) => {
                write!(f, "broker {id} is fenced or not registered")
            }
            IsrProblem::StaleBrokerEpoch {
                broker_id,
                fetched: Some(fetched),
                current,
            } => write!(
                f,
                "broker {broker_id} fetched at broker epoch {fetched}, not its current {current}"
            ),
            IsrProblem::StaleBrokerEpoch {
                broker_id,
                fetched: None,
                current,
            } => write!(
                f,
                "broker {broker_id} has no fetch at its current broker epoch {current}"
            ),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip<T>(value: &T) -> T
    where
        T: Serialize + for<'de> Deserialize<'de>,
    {
        let json = serde_json::to_vec(value).expect("serializes");
        serde_json::from_slice(&json).expect("deserializes")
    }

    fn every_command() -> Vec<MetadataCommand> {
        vec![
            MetadataCommand::RegisterBroker(RegisterBroker {
                broker_id: 1,
                incarnation_id: IncarnationId([0xab; 16]),
                endpoints: vec![Endpoint {
                    name: "kafka".to_owned(),
                    host: "10.0.0.1".to_owned(),
                    port: 9092,
                }],
                rack: Some("rack-a".to_owned()),
                now_ms: 1_700_000_000_000,
                previous_broker_epoch: None,
            }),
            MetadataCommand::FenceBroker(FenceBroker {
                broker_id: 1,
                broker_epoch: 4,
            }),
            MetadataCommand::CreateTopic(CreateTopic {
                name: "orders".to_owned(),
                topic_id: TopicId([7; 16]),
                assignment: TopicAssignment::Explicit(vec![vec![1, 2, 3], vec![2, 3, 1]]),
                configs: [("cleanup.policy".to_owned(), "compact".to_owned())].into(),
            }),
            MetadataCommand::CreateTopic(CreateTopic {
                name: "events".to_owned(),
                topic_id: TopicId([8; 16]),
                assignment: TopicAssignment::Auto {
                    partitions: 6,
                    replication_factor: 3,
                },
                configs: BTreeMap::new(),
            }),
            MetadataCommand::DeleteTopic(DeleteTopic {
                name: "orders".to_owned(),
            }),
            MetadataCommand::CreatePartitions(CreatePartitions {
                name: "orders".to_owned(),
                total_count: 4,
                assignment: Some(vec![vec![1, 2], vec![2, 1]]),
            }),
            MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
                name: "orders".to_owned(),
                set: [("retention.ms".to_owned(), "1000".to_owned())].into(),
                remove: vec!["cleanup.policy".to_owned()],
            }),
            MetadataCommand::AlterPartition(AlterPartition {
                topic_id: TopicId([7; 16]),
                partition: 1,
                leader_id: 2,
                leader_epoch: 3,
                partition_epoch: 5,
                new_isr: vec![2, 3],
                member_epochs: [(2, 10), (3, 12)].into(),
            }),
            MetadataCommand::ElectLeaders(ElectLeaders {
                election: ElectionType::Preferred,
                partitions: Some(vec![("orders".to_owned(), 0)]),
            }),
            MetadataCommand::AllocateProducerIds(AllocateProducerIds {
                broker_id: 2,
                broker_epoch: 9,
                count: 1000,
            }),
        ]
    }

    #[test]
    fn every_command_round_trips_through_serde() {
        for command in every_command() {
            assert_eq!(round_trip(&command), command);
        }
    }

    #[test]
    fn every_response_round_trips_through_serde() {
        let responses = [
            MetadataResponse::Ok,
            MetadataResponse::BrokerRegistered { broker_epoch: 17 },
            MetadataResponse::BrokerFenced {
                partitions_changed: 3,
            },
            MetadataResponse::TopicCreated {
                topic_id: TopicId([1; 16]),
                assignments: vec![vec![1, 2]],
            },
            MetadataResponse::TopicDeleted {
                topic_id: TopicId([1; 16]),
            },
            MetadataResponse::PartitionsCreated {
                assignments: vec![vec![2, 1]],
            },
            MetadataResponse::PartitionAltered {
                leader_epoch: 2,
                partition_epoch: 7,
                isr: vec![1],
            },
            MetadataResponse::LeadersElected {
                results: vec![ElectionResult {
                    topic: "orders".to_owned(),
                    partition: 0,
                    outcome: ElectionOutcome::Elected {
                        leader: 1,
                        leader_epoch: 4,
                        last_in_sync: Some(vec![2]),
                    },
                }],
            },
            MetadataResponse::ProducerIdsAllocated {
                first_producer_id: 4000,
                count: 1000,
            },
            MetadataResponse::Rejected(Rejection::UnknownBroker { broker_id: 9 }),
            MetadataResponse::Rejected(Rejection::InvalidTopicName {
                name: "a b".to_owned(),
                problem: TopicNameProblem::IllegalCharacter(' '),
            }),
            MetadataResponse::Rejected(Rejection::InvalidReplicaAssignment {
                partition: 3,
                problem: AssignmentProblem::InconsistentReplicationFactor {
                    expected: 3,
                    found: 2,
                },
            }),
            MetadataResponse::Rejected(Rejection::InvalidIsr {
                problem: IsrProblem::IneligibleBroker(4),
            }),
        ];
        for response in responses {
            assert_eq!(round_trip(&response), response);
        }
    }

    #[test]
    fn ids_keep_all_sixteen_bytes() {
        let id = IncarnationId(std::array::from_fn(|i| i as u8 * 17));
        assert_eq!(round_trip(&id), id);
        let topic = TopicId([0xff; 16]);
        assert_eq!(round_trip(&topic), topic);
    }

    #[test]
    fn topic_ids_print_as_uuids() {
        let id = TopicId(std::array::from_fn(|i| i as u8));
        assert_eq!(id.to_string(), "00010203-0405-0607-0809-0a0b0c0d0e0f");
        assert!(TopicId([0; 16]).is_zero());
        assert!(!id.is_zero());
    }

    #[test]
    fn rejections_read_as_sentences() {
        let rejection = Rejection::InvalidReplicaAssignment {
            partition: 3,
            problem: AssignmentProblem::UnknownBroker(9),
        };
        assert_eq!(
            rejection.to_string(),
            "partition 3: broker 9 is not registered"
        );
        assert_eq!(
            Rejection::TopicAlreadyExists {
                name: "orders".to_owned()
            }
            .to_string(),
            "topic \"orders\" already exists"
        );
        assert_eq!(
            Rejection::StaleBrokerEpoch {
                broker_id: 2,
                current: 10,
                requested: 4
            }
            .to_string(),
            "broker 2 epoch 4 is stale; the current epoch is 10"
        );
        assert_eq!(
            Rejection::InvalidIsr {
                problem: IsrProblem::MissingLeader(1)
            }
            .to_string(),
            "the new ISR is invalid: it leaves out the leader 1"
        );
    }
}
