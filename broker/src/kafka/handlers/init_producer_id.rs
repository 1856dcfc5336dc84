//! InitProducerId. Without a transactional id (an idempotent producer): a producer id never
//! used before in the cluster, at epoch 0; a producer asking again (a bumped epoch after a
//! sequence error, KIP-360) gets a new id, as Kafka does for non-transactional producers. With
//! one: the transaction coordinator's answer (a new id, or the id's epoch bumped, fencing older
//! instances; KIP-360 through `producer_id`/`producer_epoch` from v3).

use kafka_protocol::messages::{InitProducerIdRequest, InitProducerIdResponse, ProducerId};

use crate::context::BrokerContext;
use crate::kafka::errors::{code, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::txn::{check_transactional_id, TxnProblem};

/// Kafka's INVALID_PRODUCER_EPOCH, what clients before KIP-588 (v0–3) get for PRODUCER_FENCED.
const INVALID_PRODUCER_EPOCH: i16 = 47;

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: InitProducerIdRequest,
) -> InitProducerIdResponse {
    let response = InitProducerIdResponse::default()
        .with_producer_id(ProducerId(-1))
        .with_producer_epoch(-1);
    if let Some(id) = &request.transactional_id {
        let id = id.0.as_str();
        if check_transactional_id(id).is_err() {
            return response.with_error_code(code(Failure::Request(
                RequestProblem::InvalidTransactionalId,
            )));
        }
        // v3+: the producer id and epoch it had (both -1: none), to bump after an error. One
        // set without the other is malformed (Kafka's INVALID_REQUEST): a known producer id
        // alone must not be enough to fence its producer.
        if req.api_version >= 3 && ((request.producer_id.0 >= 0) != (request.producer_epoch >= 0)) {
            return response.with_error_code(code(Failure::Request(RequestProblem::Inconsistent)));
        }
        let expected = (req.api_version >= 3 && request.producer_id.0 >= 0)
            .then_some((request.producer_id.0, request.producer_epoch));
        let outcome = ctx
            .txns
            .init_producer_id(ctx, id, request.transaction_timeout_ms, expected)
            .await;
        return match outcome {
            Ok(Ok((producer_id, epoch))) => response
                .with_producer_id(ProducerId(producer_id))
                .with_producer_epoch(epoch),
            Ok(Err(TxnProblem::ProducerFenced)) if req.api_version < 4 => {
                response.with_error_code(INVALID_PRODUCER_EPOCH)
            }
            Ok(Err(problem)) => response.with_error_code(code(Failure::Txn(problem))),
            Err(error) => response.with_error_code(code(Failure::Coordinator(&error))),
        };
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
