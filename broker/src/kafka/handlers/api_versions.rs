//! ApiVersions: the APIs and version ranges this broker handles, exactly as [`versions::SUPPORTED`]
//! lists them. No feature flags or other tagged fields are sent: librdkafka before 2.2 (Debian's
//! kcat) cannot skip tagged fields it does not know in this response.

use kafka_protocol::messages::api_versions_response::ApiVersion;
use kafka_protocol::messages::{ApiVersionsRequest, ApiVersionsResponse};

use crate::kafka::request::RequestContext;

use crate::kafka::versions;

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

pub fn handle(_req: &RequestContext, _request: &ApiVersionsRequest) -> ApiVersionsResponse {
    ApiVersionsResponse::default().with_api_keys(supported_api_keys())
}
