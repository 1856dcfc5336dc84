//! ApiVersions: the APIs and version ranges this broker handles, exactly as [`versions::SUPPORTED`]
//! lists them, and from v4 the `transaction.version` feature (supported 0–2, finalized at the
//! configured level). Before v4 no feature flags or other tagged fields are sent: librdkafka
//! before 2.2 (Debian's kcat) cannot skip tagged fields it does not know in this response, and
//! the clients that use transaction version 2 (Kafka 4's) ask with v4.

use kafka_protocol::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};
use kafka_protocol::protocol::StrBytes;

use crate::context::BrokerContext;
use crate::kafka::request::RequestContext;

use crate::kafka::versions;

/// The feature that tells clients how transactions work (KIP-890 part 2 at level 2).
const TRANSACTION_VERSION: &str = "transaction.version";
/// The highest `transaction.version` this broker serves.
const TRANSACTION_VERSION_MAX: i16 = 2;

/// The advertised ranges.
pub fn supported_api_keys() -> Vec<ApiVersion> {
    versions::SUPPORTED
        .iter()
        .map(|(key, min, max)| {
            ApiVersion::default()
                .with_api_key(*key as i16)
                .with_min_version(*min)
                .with_max_version(*max)
        })
        .collect()
}

pub fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    _request: &ApiVersionsRequest,
) -> ApiVersionsResponse {
    let response = ApiVersionsResponse::default().with_api_keys(supported_api_keys());
    if req.api_version < 4 {
        return response;
    }
    let name = || StrBytes::from_static_str(TRANSACTION_VERSION);
    let level = i16::from(ctx.config.transactions.transaction_version);
    let finalized = if level == 0 {
        // Kafka lists only features finalized above 0.
        Vec::new()
    } else {
        vec![FinalizedFeatureKey::default()
            .with_name(name())
            .with_min_version_level(level)
            .with_max_version_level(level)]
    };
    // Clients believe the broker with the highest epoch; the metadata offset only grows.
    let epoch = i64::try_from(ctx.image().metadata_offset()).unwrap_or(i64::MAX);
    response
        .with_supported_features(vec![SupportedFeatureKey::default()
            .with_name(name())
            .with_min_version(0)
            .with_max_version(TRANSACTION_VERSION_MAX)])
        .with_finalized_features(finalized)
        .with_finalized_features_epoch(epoch)
}
