//! Dispatch of a decoded request to its handler. The versions served are in
//! [`super::versions`] (re-exported here).

use kafka_protocol::messages::{RequestKind, ResponseKind};

use super::handlers;
use super::request::{Outcome, RequestContext};
pub use super::versions::{is_supported, supported_versions, SUPPORTED};
use crate::context::BrokerContext;

/// Runs the handler of `request`.
pub async fn dispatch(ctx: &BrokerContext, req: &RequestContext, request: RequestKind) -> Outcome {
    let version = req.api_version;
    Outcome::Respond(Box::new(match request {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(handlers::api_versions::handle(ctx, req, &r))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(handlers::metadata::handle(ctx, req, r).await)
        }
        RequestKind::Produce(r) => return handlers::produce::handle(ctx, req, r).await,
        RequestKind::Fetch(r) => ResponseKind::Fetch(handlers::fetch::handle(ctx, req, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(handlers::list_offsets::handle(ctx, req, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(handlers::create_topics::handle(ctx, req, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(handlers::delete_topics::handle(ctx, req, r).await)
        }
        RequestKind::CreatePartitions(r) => {
            ResponseKind::CreatePartitions(handlers::create_partitions::handle(ctx, req, r).await)
        }
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(handlers::configs::describe(ctx, req, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(handlers::configs::alter(ctx, req, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            handlers::configs::incremental_alter(ctx, req, r).await,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(handlers::delete_records::handle(ctx, req, r).await)
        }
        RequestKind::DescribeTopicPartitions(r) => ResponseKind::DescribeTopicPartitions(
            handlers::describe_topic_partitions::handle(ctx, req, r),
        ),
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(handlers::describe_cluster::handle(ctx, req, r))
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            handlers::offset_for_leader_epoch::handle(ctx, req, r).await,
        ),
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(handlers::init_producer_id::handle(ctx, req, r).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            handlers::reassignments::alter(ctx, req, r).await,
        ),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(handlers::reassignments::list(ctx, req, &r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(handlers::elect_leaders::handle(ctx, req, r).await)
        }
        RequestKind::FindCoordinator(r) => {
            ResponseKind::FindCoordinator(handlers::find_coordinator::handle(ctx, req, r).await)
        }
        RequestKind::JoinGroup(r) => {
            ResponseKind::JoinGroup(handlers::groups::join(ctx, req, r).await)
        }
        RequestKind::SyncGroup(r) => {
            ResponseKind::SyncGroup(handlers::groups::sync(ctx, req, r).await)
        }
        RequestKind::Heartbeat(r) => {
            ResponseKind::Heartbeat(handlers::groups::heartbeat(ctx, req, r).await)
        }
        RequestKind::LeaveGroup(r) => {
            ResponseKind::LeaveGroup(handlers::groups::leave(ctx, req, r).await)
        }
        RequestKind::ListGroups(r) => {
            ResponseKind::ListGroups(handlers::groups::list(ctx, req, r).await)
        }
        RequestKind::DescribeGroups(r) => {
            ResponseKind::DescribeGroups(handlers::groups::describe(ctx, req, r).await)
        }
        RequestKind::DeleteGroups(r) => {
            ResponseKind::DeleteGroups(handlers::groups::delete(ctx, req, r).await)
        }
        RequestKind::OffsetCommit(r) => {
            ResponseKind::OffsetCommit(handlers::offsets::commit(ctx, req, r).await)
        }
        RequestKind::OffsetFetch(r) => {
            ResponseKind::OffsetFetch(handlers::offsets::fetch(ctx, req, r).await)
        }
        RequestKind::ConsumerGroupHeartbeat(r) => ResponseKind::ConsumerGroupHeartbeat(
            handlers::consumer_groups::heartbeat(ctx, req, r).await,
        ),
        RequestKind::ConsumerGroupDescribe(r) => ResponseKind::ConsumerGroupDescribe(
            handlers::consumer_groups::describe(ctx, req, r).await,
        ),
        RequestKind::OffsetDelete(r) => {
            ResponseKind::OffsetDelete(handlers::offsets::delete(ctx, req, r).await)
        }
        RequestKind::AddPartitionsToTxn(r) => ResponseKind::AddPartitionsToTxn(
            handlers::transactions::add_partitions(ctx, req, r).await,
        ),
        RequestKind::AddOffsetsToTxn(r) => {
            ResponseKind::AddOffsetsToTxn(handlers::transactions::add_offsets(ctx, req, r).await)
        }
        RequestKind::TxnOffsetCommit(r) => ResponseKind::TxnOffsetCommit(
            handlers::transactions::txn_offset_commit(ctx, req, r).await,
        ),
        RequestKind::EndTxn(r) => {
            ResponseKind::EndTxn(handlers::transactions::end_txn(ctx, req, r).await)
        }
        RequestKind::WriteTxnMarkers(r) => {
            ResponseKind::WriteTxnMarkers(handlers::write_txn_markers::handle(ctx, req, r).await)
        }
        RequestKind::DescribeTransactions(r) => {
            ResponseKind::DescribeTransactions(handlers::transactions::describe(ctx, req, r).await)
        }
        RequestKind::DescribeProducers(r) => ResponseKind::DescribeProducers(
            handlers::transactions::describe_producers(ctx, req, r).await,
        ),
        RequestKind::ListTransactions(r) => {
            ResponseKind::ListTransactions(handlers::transactions::list(ctx, req, r).await)
        }
        // The connection only decodes requests whose (key, version) is in `SUPPORTED`.
        _ => {
            tracing::error!(api = ?req.api_key, version, "request without a handler");
            return Outcome::Close;
        }
    }))
}
