//! The metadata log's vocabulary: every change to cluster metadata is a [`MetadataCommand`]
//! written through raft, and applying it answers a [`MetadataResponse`].
//!
//! These are data types only. The state machine that applies them is pure (no I/O, no clock
//! reads), which is why every command that depends on time carries `now_ms`, stamped by the
//! controller when it proposes the command.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

/// A broker id, Kafka's `int32` (replica lists and leaders use the same type).
pub type BrokerId = i32;

/// Identifies one run of a broker process: a new random value at every start, so the controller
/// can tell a restarted broker from a stale message of its previous life (Kafka's incarnation id).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct IncarnationId(pub [u8; 16]);

/// A topic's UUID (Kafka's topic id), kept as raw bytes. It distinguishes a topic from an
/// earlier, deleted topic of the same name.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct TopicId(pub [u8; 16]);

/// One change to cluster metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataCommand {
    /// A broker process announces itself after starting.
    RegisterBroker(RegisterBroker),
    /// A registered broker proves it is alive.
    BrokerHeartbeat(BrokerHeartbeat),
    /// Creates a topic with a replica assignment already chosen by the controller.
    CreateTopic(CreateTopic),
    /// Deletes a topic and all its partitions.
    DeleteTopic(DeleteTopic),
    /// Hands a broker a block of producer ids to give out to idempotent producers.
    AllocateProducerIds(AllocateProducerIds),
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
}

/// A named, advertised listener address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    /// The listener's name, e.g. `kafka` or `raft`.
    pub name: String,
    pub host: String,
    pub port: u16,
}

/// See [`MetadataCommand::BrokerHeartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerHeartbeat {
    pub broker_id: BrokerId,
    /// Must match the registered incarnation; a heartbeat from an earlier run is rejected.
    pub incarnation_id: IncarnationId,
    pub now_ms: i64,
}

/// See [`MetadataCommand::CreateTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreateTopic {
    pub name: String,
    pub topic_id: TopicId,
    /// Indexed by partition number.
    pub partitions: Vec<PartitionAssignment>,
    /// Topic configs set at creation, Kafka spelling (`retention.ms`).
    pub configs: BTreeMap<String, String>,
}

/// The replicas of one partition, preferred leader first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionAssignment {
    pub replicas: Vec<BrokerId>,
}

/// See [`MetadataCommand::DeleteTopic`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeleteTopic {
    pub name: String,
}

/// See [`MetadataCommand::AllocateProducerIds`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AllocateProducerIds {
    pub broker_id: BrokerId,
    /// How many consecutive ids the broker asks for.
    pub count: u32,
}

/// What applying a [`MetadataCommand`] answered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum MetadataResponse {
    /// Applied; the command has nothing else to report.
    Ok,
    /// [`RegisterBroker`] applied. The epoch grows with every registration of the broker and
    /// fences requests from its earlier runs.
    BrokerRegistered { broker_epoch: i64 },
    /// [`AllocateProducerIds`] applied: ids `first_producer_id .. first_producer_id + count`
    /// belong to the broker.
    ProducerIdsAllocated { first_producer_id: i64, count: u32 },
    /// Not applied: the command conflicts with the current metadata. Deterministic, so every
    /// replica of the state machine rejects it the same way.
    Rejected(Rejection),
}

/// Why the state machine refused a command.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Rejection {
    /// A heartbeat or request from a broker that is not registered.
    UnknownBroker {
        broker_id: BrokerId,
    },
    /// The broker id is registered by a live process with another incarnation.
    DuplicateBrokerRegistration {
        broker_id: BrokerId,
    },
    /// A heartbeat carrying an incarnation the broker no longer has (a previous run).
    StaleIncarnation {
        broker_id: BrokerId,
    },
    TopicAlreadyExists {
        name: String,
    },
    UnknownTopic {
        name: String,
    },
    /// A partition's replica list cannot be used.
    InvalidReplicaAssignment {
        partition: u32,
        problem: AssignmentProblem,
    },
}

/// What is wrong with a replica list in [`Rejection::InvalidReplicaAssignment`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum AssignmentProblem {
    NoReplicas,
    DuplicateReplica(BrokerId),
    UnknownBroker(BrokerId),
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::UnknownBroker { broker_id } => {
                write!(f, "broker {broker_id} is not registered")
            }
            Rejection::DuplicateBrokerRegistration { broker_id } => {
                write!(
                    f,
                    "broker {broker_id} is registered by another live process"
                )
            }
            Rejection::StaleIncarnation { broker_id } => {
                write!(f, "broker {broker_id} sent a stale incarnation id")
            }
            Rejection::TopicAlreadyExists { name } => write!(f, "topic {name:?} already exists"),
            Rejection::UnknownTopic { name } => write!(f, "topic {name:?} does not exist"),
            Rejection::InvalidReplicaAssignment { partition, problem } => {
                write!(f, "partition {partition}: ")?;
                match problem {
                    AssignmentProblem::NoReplicas => write!(f, "no replicas"),
                    AssignmentProblem::DuplicateReplica(id) => {
                        write!(f, "broker {id} appears twice")
                    }
                    AssignmentProblem::UnknownBroker(id) => {
                        write!(f, "broker {id} is not registered")
                    }
                }
            }
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
            }),
            MetadataCommand::BrokerHeartbeat(BrokerHeartbeat {
                broker_id: 1,
                incarnation_id: IncarnationId([0xab; 16]),
                now_ms: 1_700_000_000_500,
            }),
            MetadataCommand::CreateTopic(CreateTopic {
                name: "orders".to_owned(),
                topic_id: TopicId([7; 16]),
                partitions: vec![
                    PartitionAssignment {
                        replicas: vec![1, 2, 3],
                    },
                    PartitionAssignment {
                        replicas: vec![2, 3, 1],
                    },
                ],
                configs: [("cleanup.policy".to_owned(), "compact".to_owned())].into(),
            }),
            MetadataCommand::DeleteTopic(DeleteTopic {
                name: "orders".to_owned(),
            }),
            MetadataCommand::AllocateProducerIds(AllocateProducerIds {
                broker_id: 2,
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
            MetadataResponse::ProducerIdsAllocated {
                first_producer_id: 4000,
                count: 1000,
            },
            MetadataResponse::Rejected(Rejection::UnknownBroker { broker_id: 9 }),
            MetadataResponse::Rejected(Rejection::DuplicateBrokerRegistration { broker_id: 1 }),
            MetadataResponse::Rejected(Rejection::StaleIncarnation { broker_id: 1 }),
            MetadataResponse::Rejected(Rejection::TopicAlreadyExists {
                name: "orders".to_owned(),
            }),
            MetadataResponse::Rejected(Rejection::UnknownTopic {
                name: "orders".to_owned(),
            }),
            MetadataResponse::Rejected(Rejection::InvalidReplicaAssignment {
                partition: 3,
                problem: AssignmentProblem::DuplicateReplica(2),
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
    }
}
