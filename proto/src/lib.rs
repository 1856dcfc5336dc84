//! StreamBus protocol definitions: Rust code generated from the `.proto` files under `proto/`.
//!
//! Owns: the admin gRPC API (`streambus.admin.v1`, served on the admin listener) and the
//! inter-broker raft transport (`streambus.raft.v1`). The code is generated at build time by
//! `build.rs` (protox + tonic-prost-build, no system `protoc`).
//! Must not contain logic: services are implemented in the broker and raft crates; this crate
//! only gives them shared message types, clients and server traits.
//!
//! Modules:
//! - [`admin::v1`]: `AdminService` (cluster, topic and config administration for operators).
//! - [`raft::v1`]: `RaftService` (AppendEntries, Vote, InstallSnapshot) and `ControllerService`
//!   (forwarded metadata writes, broker heartbeats), all with opaque payloads that the raft crate
//!   serializes.

pub mod admin {
    //! The operator API.
    pub mod v1 {
        //! Version 1 of `streambus.admin`.
        tonic::include_proto!("streambus.admin.v1");

        /// The encoded `FileDescriptorSet` of `streambus/admin/v1/admin.proto`, which server
        /// reflection serves.
        pub const FILE_DESCRIPTOR_SET: &[u8] =
            include_bytes!(concat!(env!("OUT_DIR"), "/admin_descriptor.bin"));
    }
}

pub mod raft {
    //! The metadata quorum's transport.
    pub mod v1 {
        //! Version 1 of `streambus.raft`.
        tonic::include_proto!("streambus.raft.v1");
    }
}

#[cfg(test)]
mod tests {
    use prost::Message;
    use tonic::{Request, Response, Status};

    use crate::admin::v1::admin_service_server::{AdminService, AdminServiceServer};
    use crate::admin::v1::*;
    use crate::raft::v1::raft_service_client::RaftServiceClient;
    use crate::raft::v1::raft_service_server::{RaftService, RaftServiceServer};
    use crate::raft::v1::*;

    #[test]
    fn topic_description_round_trips_through_prost() {
        let topic = TopicDescription {
            name: "orders".to_owned(),
            topic_id: vec![7; 16],
            internal: false,
            partitions: vec![PartitionDescription {
                partition: 0,
                leader: Some(2),
                leader_epoch: 5,
                replicas: vec![2, 1, 3],
                isr: vec![2, 3],
            }],
            configs: [("retention.ms".to_owned(), "60000".to_owned())].into(),
        };
        let bytes = topic.encode_to_vec();
        let decoded = TopicDescription::decode(bytes.as_slice()).expect("decodes");
        assert_eq!(decoded, topic);
    }

    #[test]
    fn absent_optional_fields_stay_absent() {
        // `optional` matters: a leaderless partition must not read back as leader 0.
        let partition = PartitionDescription {
            leader: None,
            ..PartitionDescription::default()
        };
        let decoded =
            PartitionDescription::decode(partition.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded.leader, None);
    }

    #[test]
    fn raft_payloads_and_identities_are_carried_verbatim() {
        let request = AppendEntriesRequest {
            payload: vec![0, 1, 2, 255],
            identity: Some(Identity {
                cluster_id: "MkU3OEVBNTcwNTJENDM2Qk".to_owned(),
                sender_node_id: 1,
                target_node_id: 2,
            }),
        };
        let decoded =
            AppendEntriesRequest::decode(request.encode_to_vec().as_slice()).expect("decodes");
        assert_eq!(decoded, request);
    }

    /// Answers every call with `UNIMPLEMENTED`: enough to prove the generated traits can be
    /// implemented and wrapped in the generated servers.
    #[derive(Debug)]
    struct Unimplemented;

    fn unimplemented<T>() -> Result<Response<T>, Status> {
        Err(Status::unimplemented("test service"))
    }

    #[tonic::async_trait]
    impl AdminService for Unimplemented {
        async fn describe_cluster(
            &self,
            _: Request<DescribeClusterRequest>,
        ) -> Result<Response<DescribeClusterResponse>, Status> {
            unimplemented()
        }
        async fn list_topics(
            &self,
            _: Request<ListTopicsRequest>,
        ) -> Result<Response<ListTopicsResponse>, Status> {
            unimplemented()
        }
        async fn describe_topic(
            &self,
            _: Request<DescribeTopicRequest>,
        ) -> Result<Response<DescribeTopicResponse>, Status> {
            unimplemented()
        }
        async fn create_topic(
            &self,
            _: Request<CreateTopicRequest>,
        ) -> Result<Response<CreateTopicResponse>, Status> {
            unimplemented()
        }
        async fn delete_topic(
            &self,
            _: Request<DeleteTopicRequest>,
        ) -> Result<Response<DeleteTopicResponse>, Status> {
            unimplemented()
        }
        async fn alter_topic_config(
            &self,
            _: Request<AlterTopicConfigRequest>,
        ) -> Result<Response<AlterTopicConfigResponse>, Status> {
            unimplemented()
        }
        async fn add_partitions(
            &self,
            _: Request<AddPartitionsRequest>,
        ) -> Result<Response<AddPartitionsResponse>, Status> {
            unimplemented()
        }
        async fn list_partitions(
            &self,
            _: Request<ListPartitionsRequest>,
        ) -> Result<Response<ListPartitionsResponse>, Status> {
            unimplemented()
        }
        async fn alter_reassignments(
            &self,
            _: Request<AlterReassignmentsRequest>,
        ) -> Result<Response<AlterReassignmentsResponse>, Status> {
            unimplemented()
        }
        async fn list_reassignments(
            &self,
            _: Request<ListReassignmentsRequest>,
        ) -> Result<Response<ListReassignmentsResponse>, Status> {
            unimplemented()
        }
        async fn elect_leaders(
            &self,
            _: Request<ElectLeadersRequest>,
        ) -> Result<Response<ElectLeadersResponse>, Status> {
            unimplemented()
        }
        async fn describe_log_dirs(
            &self,
            _: Request<DescribeLogDirsRequest>,
        ) -> Result<Response<DescribeLogDirsResponse>, Status> {
            unimplemented()
        }
        async fn add_voter(
            &self,
            _: Request<AddVoterRequest>,
        ) -> Result<Response<AddVoterResponse>, Status> {
            unimplemented()
        }
        async fn remove_voter(
            &self,
            _: Request<RemoveVoterRequest>,
        ) -> Result<Response<RemoveVoterResponse>, Status> {
            unimplemented()
        }
        async fn list_groups(
            &self,
            _: Request<ListGroupsRequest>,
        ) -> Result<Response<ListGroupsResponse>, Status> {
            unimplemented()
        }
        async fn describe_group(
            &self,
            _: Request<DescribeGroupRequest>,
        ) -> Result<Response<DescribeGroupResponse>, Status> {
            unimplemented()
        }
        async fn list_transactions(
            &self,
            _: Request<ListTransactionsRequest>,
        ) -> Result<Response<ListTransactionsResponse>, Status> {
            unimplemented()
        }
        async fn describe_transaction(
            &self,
            _: Request<DescribeTransactionRequest>,
        ) -> Result<Response<DescribeTransactionResponse>, Status> {
            unimplemented()
        }
    }

    #[tonic::async_trait]
    impl RaftService for Unimplemented {
        async fn append_entries(
            &self,
            _: Request<AppendEntriesRequest>,
        ) -> Result<Response<AppendEntriesResponse>, Status> {
            unimplemented()
        }
        async fn vote(&self, _: Request<VoteRequest>) -> Result<Response<VoteResponse>, Status> {
            unimplemented()
        }
        async fn install_snapshot(
            &self,
            _: Request<InstallSnapshotRequest>,
        ) -> Result<Response<InstallSnapshotResponse>, Status> {
            unimplemented()
        }
    }

    #[test]
    fn generated_servers_and_clients_exist() {
        let _admin = AdminServiceServer::new(Unimplemented);
        let _raft = RaftServiceServer::new(Unimplemented);
        // A lazy channel never connects, so this needs no server; it only proves the client type.
        let _client: fn(tonic::transport::Channel) -> RaftServiceClient<tonic::transport::Channel> =
            RaftServiceClient::new;
    }
}
