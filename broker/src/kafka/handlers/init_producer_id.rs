//! InitProducerId for idempotent producers: a producer id never used before in the cluster, at
//! epoch 0. A producer asking again (a bumped epoch after a sequence error, KIP-360) gets a new
//! id, as Kafka does for non-transactional producers. Transactional ids wait for the
//! transaction coordinator (a later issue) and are answered COORDINATOR_NOT_AVAILABLE.

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;

pub async fn handle(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if request.transactional_id.is_some() {
        return response.with_error_code(code(Failure::Request(
            RequestProblem::TransactionsUnsupported,
        )));
    }
    match ctx.producer_ids.next().await {
        Ok(id) => response
            .with_producer_id(ProducerId(id))
            .with_producer_epoch(0),
        Err(error) => {
            tracing::warn!(%error, "cannot hand out a producer id");
            response.with_error_code(code(Failure::ProducerIds(&error)))
        }
    }
}
