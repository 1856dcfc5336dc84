//! The openraft type configuration of the metadata quorum: one place that names every type
//! openraft is generic over.

use std::io::Cursor;

use crate::command::{MetadataCommand, MetadataResponse};

/// A raft node id. Voters are brokers, so this is the broker's node id widened to openraft's
/// customary `u64`.
pub type NodeId = u64;

openraft::declare_raft_types!(
    /// The metadata quorum's raft types: log entries carry [`MetadataCommand`]s and applying one
    /// answers a [`MetadataResponse`].
    pub TypeConfig:
        D = MetadataCommand,
        R = MetadataResponse,
        NodeId = NodeId,
        // The address of the node's raft listener: all a peer needs to reach it.
        Node = openraft::BasicNode,
        Entry = openraft::Entry<TypeConfig>,
        // Snapshots of the metadata image are small (kilobytes to a few megabytes), so an
        // in-memory buffer is enough.
        SnapshotData = Cursor<Vec<u8>>,
        AsyncRuntime = openraft::TokioRuntime,
);

#[cfg(test)]
mod tests {
    use openraft::{CommittedLeaderId, Entry, EntryPayload, LogId};

    use super::*;
    use crate::command::DeleteTopic;

    #[test]
    fn log_entries_of_this_config_round_trip_through_serde() {
        // The log store will persist entries with serde; this checks the whole config supports it.
        let entry: Entry<TypeConfig> = Entry {
            log_id: LogId::new(CommittedLeaderId::new(3, 1), 42),
            payload: EntryPayload::Normal(MetadataCommand::DeleteTopic(DeleteTopic {
                name: "orders".to_owned(),
            })),
        };
        let json = serde_json::to_vec(&entry).expect("serializes");
        let decoded: Entry<TypeConfig> = serde_json::from_slice(&json).expect("deserializes");
        assert_eq!(decoded, entry);
    }
}
