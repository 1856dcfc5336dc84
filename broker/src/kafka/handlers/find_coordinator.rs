//! FindCoordinator: which broker coordinates a group (key type 0) or a transactional id (key
//! type 1), creating the coordinator's internal topic on first use. v0–3 ask for one key, v4+
//! for a batch. Share groups (key type 2) are not served.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{
    BrokerId as WireBrokerId, FindCoordinatorRequest, FindCoordinatorResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::context::BrokerContext;
use crate::endpoints;
use crate::kafka::errors::{code_and_message, Failure, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::str_bytes;

/// Kafka's `CoordinatorType`.
const GROUP: i8 = 0;
const TRANSACTION: i8 = 1;

/// Where a key's coordinator is, or why it cannot be said.
struct Found {
    node_id: i32,
    host: String,
    port: i32,
    error_code: i16,
    error_message: Option<String>,
}

impl Found {
    fn failed((error_code, message): (i16, String)) -> Found {
        Found {
            node_id: -1,
            host: String::new(),
            port: -1,
            error_code,
            error_message: Some(message),
        }
    }
}

async fn find(ctx: &BrokerContext, key_type: i8, key: &str) -> Found {
    let (found, topic) = match key_type {
        GROUP => (ctx.groups.find(ctx, key).await, crate::group::OFFSETS_TOPIC),
        TRANSACTION => {
            // Kafka's check: a transactional id is not empty (and here within the record
            // schema's string limit).
            if crate::txn::check_transactional_id(key).is_err() {
                return Found::failed(code_and_message(Failure::Request(
                    RequestProblem::InvalidTransactionalId,
                )));
            }
            (
                ctx.txns.find(ctx, key).await,
                crate::txn::TRANSACTION_STATE_TOPIC,
            )
        }
        _ => {
            return Found::failed(code_and_message(Failure::Request(
                RequestProblem::UnsupportedCoordinatorType,
            )))
        }
    };
    let leader = match found {
        Ok(leader) => leader,
        Err(error) => return Found::failed(code_and_message(Failure::Coordinator(&error))),
    };
    let image = ctx.image();
    match endpoints::live_kafka_endpoint(&image, leader) {
        Some(endpoint) => Found {
            node_id: leader,
            host: endpoint.host.clone(),
            port: i32::from(endpoint.port),
            error_code: 0,
            error_message: None,
        },
        None => Found::failed(code_and_message(Failure::Coordinator(
            &crate::coordinator::CoordinatorError::NotAvailable {
                topic: topic.to_owned(),
                reason: format!("broker {leader} is not live"),
            },
        ))),
    }
}

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let version = req.api_version;
    // v0 has no key type: always a group.
    let key_type = if version == 0 {
        GROUP
    } else {
        request.key_type
    };
    if version < 4 {
        let found = find(ctx, key_type, &request.key).await;
        let response = FindCoordinatorResponse::default()
            .with_error_code(found.error_code)
            .with_node_id(WireBrokerId(found.node_id))
            .with_host(str_bytes(found.host))
            .with_port(found.port);
        return if version >= 1 {
            response.with_error_message(found.error_message.map(str_bytes))
        } else {
            response
        };
    }
    let mut coordinators = Vec::with_capacity(request.coordinator_keys.len());
    for key in request.coordinator_keys {
        let found = find(ctx, key_type, &key).await;
        coordinators.push(
            Coordinator::default()
                .with_key(key)
                .with_node_id(WireBrokerId(found.node_id))
                .with_host(StrBytes::from_string(found.host))
                .with_port(found.port)
                .with_error_code(found.error_code)
                .with_error_message(found.error_message.map(str_bytes)),
        );
    }
    FindCoordinatorResponse::default().with_coordinators(coordinators)
}
