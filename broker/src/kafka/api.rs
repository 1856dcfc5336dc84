//! The Kafka APIs this broker serves, with exactly the versions it handles (what ApiVersions
//! advertises), and dispatch of a decoded request to its handler.
//!
//! Versions are capped where a later version changes semantics the broker does not implement
//! yet (Produce v12+ is transactions v2, Produce v13+ addresses topics by id only; InitProducerId
//! v5+ is transactions v2 and two-phase commit). Fetch goes to v16: topic ids (v13+) are
//! resolved through the metadata image.

use kafka_protocol::messages::{ApiKey, RequestKind, ResponseKind};

use super::handlers;
use super::request::{Outcome, RequestContext};
use crate::context::BrokerContext;

/// `(api, min version, max version)` of every API served.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    (ApiKey::Produce, 3, 11),
    (ApiKey::Fetch, 4, 16),
    (ApiKey::ListOffsets, 1, 8),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::ApiVersions, 0, 3),
    (ApiKey::CreateTopics, 2, 7),
    (ApiKey::DeleteTopics, 1, 6),
    (ApiKey::DeleteRecords, 0, 2),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::OffsetForLeaderEpoch, 2, 4),
    (ApiKey::DescribeConfigs, 1, 4),
    (ApiKey::AlterConfigs, 0, 2),
    (ApiKey::CreatePartitions, 0, 3),
    (ApiKey::IncrementalAlterConfigs, 0, 1),
    (ApiKey::DescribeCluster, 0, 1),
    (ApiKey::AlterPartitionReassignments, 0, 1),
    (ApiKey::ListPartitionReassignments, 0, 0),
    (ApiKey::ElectLeaders, 0, 2),
];

/// The versions of `key` served, if it is served at all.
pub fn supported_versions(key: ApiKey) -> Option<(i16, i16)> {
    SUPPORTED
        .iter()
        .find(|(api, _, _)| *api == key)
        .map(|(_, min, max)| (*min, *max))
}

/// Whether `version` of `key` is served.
pub fn is_supported(key: ApiKey, version: i16) -> bool {
    supported_versions(key).is_some_and(|(min, max)| (min..=max).contains(&version))
}

/// Runs the handler of `request`.
pub async fn dispatch(ctx: &BrokerContext, req: &RequestContext, request: RequestKind) -> Outcome {
    let version = req.api_version;
    Outcome::Respond(Box::new(match request {
        RequestKind::ApiVersions(r) => {
            ResponseKind::ApiVersions(handlers::api_versions::handle(version, &r))
        }
        RequestKind::Metadata(r) => {
            ResponseKind::Metadata(handlers::metadata::handle(ctx, version, r).await)
        }
        RequestKind::Produce(r) => return handlers::produce::handle(ctx, req, r).await,
        RequestKind::Fetch(r) => ResponseKind::Fetch(handlers::fetch::handle(ctx, req, r).await),
        RequestKind::ListOffsets(r) => {
            ResponseKind::ListOffsets(handlers::list_offsets::handle(ctx, req, r).await)
        }
        RequestKind::CreateTopics(r) => {
            ResponseKind::CreateTopics(handlers::create_topics::handle(ctx, version, r).await)
        }
        RequestKind::DeleteTopics(r) => {
            ResponseKind::DeleteTopics(handlers::delete_topics::handle(ctx, version, r).await)
        }
        RequestKind::CreatePartitions(r) => ResponseKind::CreatePartitions(
            handlers::create_partitions::handle(ctx, version, r).await,
        ),
        RequestKind::DescribeConfigs(r) => {
            ResponseKind::DescribeConfigs(handlers::configs::describe(ctx, version, r))
        }
        RequestKind::AlterConfigs(r) => {
            ResponseKind::AlterConfigs(handlers::configs::alter(ctx, version, r).await)
        }
        RequestKind::IncrementalAlterConfigs(r) => ResponseKind::IncrementalAlterConfigs(
            handlers::configs::incremental_alter(ctx, version, r).await,
        ),
        RequestKind::DeleteRecords(r) => {
            ResponseKind::DeleteRecords(handlers::delete_records::handle(ctx, req, r).await)
        }
        RequestKind::DescribeCluster(r) => {
            ResponseKind::DescribeCluster(handlers::describe_cluster::handle(ctx, version, r))
        }
        RequestKind::OffsetForLeaderEpoch(r) => ResponseKind::OffsetForLeaderEpoch(
            handlers::offset_for_leader_epoch::handle(ctx, req, r).await,
        ),
        RequestKind::InitProducerId(r) => {
            ResponseKind::InitProducerId(handlers::init_producer_id::handle(ctx, version, r).await)
        }
        RequestKind::AlterPartitionReassignments(r) => ResponseKind::AlterPartitionReassignments(
            handlers::reassignments::alter(ctx, version, r).await,
        ),
        RequestKind::ListPartitionReassignments(r) => {
            ResponseKind::ListPartitionReassignments(handlers::reassignments::list(ctx, &r))
        }
        RequestKind::ElectLeaders(r) => {
            ResponseKind::ElectLeaders(handlers::elect_leaders::handle(ctx, version, r).await)
        }
        // The connection only decodes requests whose (key, version) is in `SUPPORTED`.
        _ => {
            tracing::error!(api = ?req.api_key, version, "request without a handler");
            return Outcome::Close;
        }
    }))
}
