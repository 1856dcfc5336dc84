//! DescribeCluster: the cluster id, the controller and the unfenced brokers clients can reach
//! on their Kafka listener. Only the broker endpoint type is served; controllers speak raft,
//! not Kafka.

use kafka_protocol::messages::describe_cluster_response::DescribeClusterBroker;
use kafka_protocol::messages::{BrokerId, DescribeClusterRequest, DescribeClusterResponse};

use crate::context::BrokerContext;
use crate::endpoints;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, AUTHORIZED_OPERATIONS_UNSET};

/// Kafka's `EndpointType.BROKER`.
const ENDPOINT_TYPE_BROKER: i8 = 1;

pub fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: DescribeClusterRequest,
) -> DescribeClusterResponse {
    let version = req.api_version;
    let mut response = DescribeClusterResponse::default()
        .with_cluster_id(str_bytes(ctx.cluster_id.to_string()))
        .with_controller_id(BrokerId(ctx.controller_id()))
        .with_cluster_authorized_operations(AUTHORIZED_OPERATIONS_UNSET)
        .with_error_message(None);
    if version >= 1 {
        response = response.with_endpoint_type(ENDPOINT_TYPE_BROKER);
        if request.endpoint_type != ENDPOINT_TYPE_BROKER {
            let message = format!(
                "endpoint type {} is not served here; this listener serves brokers ({ENDPOINT_TYPE_BROKER})",
                request.endpoint_type
            );
            return response
                .with_error_code(code(Failure::Request(
                    RequestProblem::UnsupportedEndpointType,
                )))
                .with_error_message(Some(str_bytes(message)));
        }
    }
    let image = ctx.image();
    let brokers = endpoints::live_kafka_brokers(&image)
        .map(|(broker, endpoint)| {
            DescribeClusterBroker::default()
                .with_broker_id(BrokerId(broker.broker_id))
                .with_host(str_bytes(endpoint.host.clone()))
                .with_port(i32::from(endpoint.port))
                .with_rack(broker.rack.clone().map(str_bytes))
        })
        .collect();
    response.with_brokers(brokers)
}
