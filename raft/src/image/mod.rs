//! The metadata image: the whole cluster metadata, and the pure, deterministic state machine
//! that applies [`MetadataCommand`]s to it.
//!
//! Every node applies the same commands in the same log order and must reach the same image, so
//! applying never reads a clock, draws a random number or does I/O: time and random ids come in
//! the commands. Iteration is over `BTreeMap`s and `Vec`s only, so it is ordered the same
//! everywhere. A rejected command changes nothing but `metadata_offset`, which is why every
//! handler validates completely before it mutates.
//!
//! Submodules:
//! - `brokers`: registration and fencing.
//! - `topics`: topic creation and deletion, added partitions, topic configs.
//! - `placement`: automatic, rack-aware replica placement.
//! - `partition`: leader elections, ISR changes, operator-requested elections.
//! - `log_dirs`: a broker's log directory going offline (its replicas leave ISRs and
//!   leaderships, as in a fence) and coming back.
//! - [`delta`]: what changed for one broker between two images.

mod brokers;
pub mod delta;
mod log_dirs;
mod partition;
mod placement;
mod topics;

pub use topics::validate_topic_name;

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub use delta::{local_changes, LocalChange};

use crate::command::{
    AllocateProducerIds, BrokerId, Endpoint, IncarnationId, MetadataCommand, MetadataResponse,
    Rejection, TopicId, MAX_PRODUCER_ID_BLOCK,
};

/// The topic config that lets a leaderless partition elect a replica outside its ISR.
pub const UNCLEAN_LEADER_ELECTION_CONFIG: &str = "unclean.leader.election.enable";
/// The topic config below whose ISR size acks=all writes are refused and former ISR members
/// become eligible leader replicas.
pub const MIN_INSYNC_REPLICAS_CONFIG: &str = "min.insync.replicas";

/// One registered broker. Records are never removed: a broker that goes away stays, fenced.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BrokerRecord {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    /// The log offset of the registration that created this incarnation.
    pub broker_epoch: i64,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// A fenced broker leads nothing and is not added to ISRs.
    pub fenced: bool,
    pub registered_at_ms: i64,
    /// The broker's log directory failed (`LogDirOffline`): like a fenced broker it leads
    /// nothing and joins no ISR, though it stays registered and live. A new registration
    /// starts without it. Absent from images written before it existed.
    #[serde(default)]
    pub log_dir_offline: bool,
}

/// One topic and its partitions (indexed by partition number).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicRecord {
    pub topic_id: TopicId,
    pub name: String,
    pub configs: BTreeMap<String, String>,
    /// Never empty: a topic has at least one partition, and partitions are only added.
    pub partitions: Vec<PartitionRecord>,
}

impl TopicRecord {
    pub fn partition(&self, partition: u32) -> Option<&PartitionRecord> {
        self.partitions.get(usize::try_from(partition).ok()?)
    }

    /// Whether `unclean.leader.election.enable` is set to true (any letter case, as Kafka
    /// parses booleans).
    pub fn unclean_leader_election_enabled(&self) -> bool {
        unclean_enabled(&self.configs)
    }
}

/// One partition's replicas and leadership.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PartitionRecord {
    /// Preferred leader first. Never empty, no duplicates.
    pub replicas: Vec<BrokerId>,
    /// The in-sync replicas, a subset of `replicas` in no particular order. Empty only when the
    /// partition is offline: its last member was fenced or shut down uncleanly (Kafka 4 with
    /// eligible leader replicas, KIP-966).
    pub isr: Vec<BrokerId>,
    /// Eligible leader replicas (KIP-966): former ISR members that left it while it was below
    /// `min.insync.replicas`. The leader advances the high watermark only with a full-sized
    /// ISR, so each of them holds every committed record and may lead once the ISR is empty.
    /// A member that shuts down uncleanly leaves it. Empty whenever the ISR is full-sized.
    #[serde(default)]
    pub elr: Vec<BrokerId>,
    /// The replicas that held every committed record when the last of them left the ISR and
    /// ELR through an unclean shutdown (Kafka's `LastKnownElr`): who an unclean election should
    /// prefer, and whose records it may lose. Empty while the ISR is not.
    #[serde(default)]
    pub last_known_elr: Vec<BrokerId>,
    /// `None` when no replica may lead (the partition is offline). Always an ISR member.
    pub leader: Option<BrokerId>,
    /// Bumped at every leader change, including to and from `None`.
    pub leader_epoch: i32,
    /// Bumped at every change of leader, ISR or replicas; guards ISR changes against races.
    pub partition_epoch: i32,
    /// While a reassignment runs: replicas being added (in `replicas`, not yet caught up).
    #[serde(default)]
    pub adding_replicas: Vec<BrokerId>,
    /// While a reassignment runs: replicas to drop once every target replica is in the ISR.
    #[serde(default)]
    pub removing_replicas: Vec<BrokerId>,
}

impl PartitionRecord {
    /// Whether a reassignment is in progress.
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }
}

/// The whole cluster metadata at one log offset.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(from = "ImageFields")]
pub struct MetadataImage {
    brokers: BTreeMap<BrokerId, BrokerRecord>,
    /// Keyed by name: names are what Kafka requests use, and JSON maps need string keys.
    topics: BTreeMap<String, TopicRecord>,
    /// Topic id → name. Derived from `topics`, so not serialized; rebuilt on deserialize.
    #[serde(skip)]
    topic_names: BTreeMap<TopicId, String>,
    /// Ids of deleted topics, never reused: brokers tell a recreated topic from its old log by
    /// id, and a retried `CreateTopic` must not bring an id back after a delete.
    deleted_topic_ids: BTreeSet<TopicId>,
    next_producer_id: i64,
    metadata_offset: u64,
}

/// The serialized form of [`MetadataImage`]: the same fields without the derived index.
#[derive(Deserialize)]
struct ImageFields {
    brokers: BTreeMap<BrokerId, BrokerRecord>,
    topics: BTreeMap<String, TopicRecord>,
    #[serde(default)]
    deleted_topic_ids: BTreeSet<TopicId>,
    next_producer_id: i64,
    metadata_offset: u64,
}

impl From<ImageFields> for MetadataImage {
    fn from(fields: ImageFields) -> Self {
        let topic_names = fields
            .topics
            .values()
            .map(|topic| (topic.topic_id, topic.name.clone()))
            .collect();
        MetadataImage {
            brokers: fields.brokers,
            topics: fields.topics,
            topic_names,
            deleted_topic_ids: fields.deleted_topic_ids,
            next_producer_id: fields.next_producer_id,
            metadata_offset: fields.metadata_offset,
        }
    }
}

impl MetadataImage {
    /// Applies the command at raft log index `offset`; sets `metadata_offset = offset`.
    pub fn apply(&mut self, offset: u64, command: &MetadataCommand) -> MetadataResponse {
        self.metadata_offset = offset;
        let outcome = match command {
            MetadataCommand::RegisterBroker(cmd) => self.register_broker(offset, cmd),
            MetadataCommand::FenceBroker(cmd) => self.fence_broker(cmd),
            MetadataCommand::CreateTopic(cmd) => self.create_topic(cmd),
            MetadataCommand::DeleteTopic(cmd) => self.delete_topic(cmd),
            MetadataCommand::CreatePartitions(cmd) => self.create_partitions(cmd),
            MetadataCommand::AlterTopicConfigs(cmd) => self.alter_topic_configs(cmd),
            MetadataCommand::AlterPartition(cmd) => self.alter_partition(cmd),
            MetadataCommand::ElectLeaders(cmd) => Ok(self.elect_leaders(cmd)),
            MetadataCommand::AllocateProducerIds(cmd) => self.allocate_producer_ids(cmd),
            MetadataCommand::AlterReassignments(cmd) => Ok(self.alter_reassignments(cmd)),
            MetadataCommand::LogDirOffline(cmd) => self.log_dir_offline(cmd),
            MetadataCommand::LogDirOnline(cmd) => self.log_dir_online(cmd),
        };
        outcome.unwrap_or_else(MetadataResponse::Rejected)
    }

    /// For raft entries that carry no command (blank/membership): only advances the offset.
    pub fn advance(&mut self, offset: u64) {
        self.metadata_offset = offset;
    }

    /// The log index of the last entry applied.
    pub fn metadata_offset(&self) -> u64 {
        self.metadata_offset
    }

    /// The first producer id of the next block handed out.
    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    pub fn broker(&self, broker_id: BrokerId) -> Option<&BrokerRecord> {
        self.brokers.get(&broker_id)
    }

    /// Every registered broker, fenced or not, by id.
    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values()
    }

    /// The brokers that may lead and join ISRs, by id.
    pub fn unfenced_brokers(&self) -> impl Iterator<Item = &BrokerRecord> {
        self.brokers.values().filter(|broker| !broker.fenced)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicRecord> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, topic_id: &TopicId) -> Option<&TopicRecord> {
        self.topics.get(self.topic_names.get(topic_id)?)
    }

    /// Every topic, by name.
    pub fn topics(&self) -> impl Iterator<Item = &TopicRecord> {
        self.topics.values()
    }

    pub fn partition(&self, topic_id: &TopicId, partition: u32) -> Option<&PartitionRecord> {
        self.topic_by_id(topic_id)?.partition(partition)
    }

    fn allocate_producer_ids(
        &mut self,
        cmd: &AllocateProducerIds,
    ) -> Result<MetadataResponse, Rejection> {
        self.check_broker_epoch(cmd.broker_id, cmd.broker_epoch)?;
        if cmd.count == 0 || cmd.count > MAX_PRODUCER_ID_BLOCK {
            return Err(Rejection::InvalidCount { count: cmd.count });
        }
        let first_producer_id = self.next_producer_id;
        self.next_producer_id = first_producer_id
            .checked_add(i64::from(cmd.count))
            .ok_or(Rejection::ProducerIdsExhausted)?;
        Ok(MetadataResponse::ProducerIdsAllocated {
            first_producer_id,
            count: cmd.count,
        })
    }

    /// Requests from a broker carry its epoch so a previous run of it cannot act.
    fn check_broker_epoch(&self, broker_id: BrokerId, broker_epoch: i64) -> Result<(), Rejection> {
        let broker = self
            .brokers
            .get(&broker_id)
            .ok_or(Rejection::UnknownBroker { broker_id })?;
        if broker.broker_epoch != broker_epoch {
            return Err(Rejection::StaleBrokerEpoch {
                broker_id,
                current: broker.broker_epoch,
                requested: broker_epoch,
            });
        }
        Ok(())
    }
}

/// The ISR size below which ISR members that leave become eligible leader replicas: the
/// topic's `min.insync.replicas`, capped by its replication factor as Kafka's controller caps
/// it. Without a topic value the controller assumes 1: it does not know the brokers' default,
/// and a value too low only keeps replicas out of the ELR (less available, never unsafe),
/// while one too high would make a replica eligible that may miss committed records.
fn effective_min_isr(configs: &BTreeMap<String, String>, replicas: usize) -> usize {
    configs
        .get(MIN_INSYNC_REPLICAS_CONFIG)
        .and_then(|value| value.trim().parse::<usize>().ok())
        .unwrap_or(1)
        .clamp(1, replicas.max(1))
}

fn unclean_enabled(configs: &BTreeMap<String, String>) -> bool {
    configs
        .get(UNCLEAN_LEADER_ELECTION_CONFIG)
        .is_some_and(|value| value.eq_ignore_ascii_case("true"))
}

/// Whether `broker_id` is registered, unfenced and has its log directory online, i.e. may
/// lead or join an ISR.
fn is_unfenced(brokers: &BTreeMap<BrokerId, BrokerRecord>, broker_id: BrokerId) -> bool {
    brokers
        .get(&broker_id)
        .is_some_and(|broker| !broker.fenced && !broker.log_dir_offline)
}

#[cfg(test)]
pub(crate) mod test_support;

#[cfg(test)]
mod tests;
