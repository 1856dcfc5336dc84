//! DeleteTopics: topics named (v1+) or, from v6, named or given by id; each becomes one
//! [`ops::topics::delete_topic`] call, answered once the deletion is visible on this broker so
//! that the client's next Metadata request here no longer lists the topic.

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use streambus_raft::command::TopicId;
use streambus_raft::MetadataImage;
use uuid::Uuid;

use crate::context::BrokerContext;
use crate::kafka::errors::{Failure, Refusal, RequestProblem};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{from_uuid, str_bytes, to_uuid, topic_name};
use crate::ops::{self, OpsError};

/// One entry of the request, resolved against this broker's image.
struct Target {
    /// The topic's name, once known (ids of unknown topics have none).
    name: Option<String>,
    /// The id asked for (v6 by id) or found in the image.
    topic_id: Option<TopicId>,
    /// Why the entry cannot be deleted before anything is written.
    refused: Option<Refusal>,
}

pub async fn handle(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let version = req.api_version;
    let mut targets = targets(&ctx.image(), version, &request);
    // Kafka refuses every entry that names (or, by id, resolves to) a topic given more than once.
    let duplicates = ops::duplicates(
        targets
            .iter()
            .filter(|t| t.refused.is_none())
            .filter_map(|t| t.name.clone()),
    );
    for target in targets.iter_mut().filter(|t| t.refused.is_none()) {
        if let Some(name) = target.name.as_ref().filter(|n| duplicates.contains(*n)) {
            target.refused = Some(OpsError::DuplicateTopic(name.clone()).into());
        }
    }

    let mut responses = Vec::with_capacity(targets.len());
    for target in targets {
        let outcome = match (target.refused, &target.name) {
            (Some(refusal), _) => Err(refusal),
            (None, Some(name)) => ops::topics::delete_topic(ctx, name)
                .await
                .map_err(Refusal::from),
            (None, None) => Err(Refusal::with_message(
                Failure::Request(RequestProblem::UnknownTopicId),
                "unknown topic id",
            )),
        };
        let mut result = DeletableTopicResult::default().with_name(target.name.map(topic_name));
        let topic_id = match &outcome {
            Ok(deleted) => deleted.or(target.topic_id),
            Err(_) => target.topic_id,
        };
        if version >= 6 {
            result = result.with_topic_id(topic_id.as_ref().map_or(Uuid::nil(), to_uuid));
        }
        match outcome {
            Ok(_) => {
                if version >= 5 {
                    result = result.with_error_message(None);
                }
            }
            Err(refusal) => {
                result = result.with_error_code(refusal.code);
                if version >= 5 {
                    result = result.with_error_message(Some(str_bytes(refusal.message)));
                }
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// The entries of `request`: by name as given (the state machine, not this broker's possibly
/// older image, decides whether the topic exists), by id through `image`.
fn targets(image: &MetadataImage, version: i16, request: &DeleteTopicsRequest) -> Vec<Target> {
    let by_name = |name: String| Target {
        name: Some(name),
        topic_id: None,
        refused: None,
    };
    if version < 6 {
        return request
            .topic_names
            .iter()
            .map(|name| by_name(name.to_string()))
            .collect();
    }
    request
        .topics
        .iter()
        .map(|topic| match (&topic.name, topic.topic_id) {
            (Some(name), id) if !id.is_nil() => Target {
                name: Some(name.to_string()),
                topic_id: Some(from_uuid(&id)),
                refused: Some(Refusal::with_message(
                    Failure::Request(RequestProblem::Inconsistent),
                    "give a topic name or a topic id, not both",
                )),
            },
            (Some(name), _) => by_name(name.to_string()),
            (None, id) => {
                let topic_id = from_uuid(&id);
                match ops::topics::topic_name(image, &topic_id) {
                    Ok(name) => Target {
                        name: Some(name),
                        topic_id: Some(topic_id),
                        refused: None,
                    },
                    Err(error) => Target {
                        name: None,
                        topic_id: Some(topic_id),
                        refused: Some(error.into()),
                    },
                }
            }
        })
        .collect()
}
