//! DeleteTopics: topics named (v1+) or, from v6, named or given by id; each becomes one
//! `DeleteTopic` metadata command, and the handler waits until the deletion is visible on this
//! broker so that the client's next Metadata request here no longer lists the topic.

use std::collections::HashMap;
use std::time::Duration;

use kafka_protocol::messages::delete_topics_response::DeletableTopicResult;
use kafka_protocol::messages::{DeleteTopicsRequest, DeleteTopicsResponse};
use streambus_raft::command::{DeleteTopic, TopicId};
use streambus_raft::{MetadataCommand, MetadataImage, MetadataResponse};
use uuid::Uuid;

use super::{from_uuid, str_bytes, to_uuid, topic_name};
use crate::context::BrokerContext;
use crate::kafka::errors::{code, code_and_message, Failure, RequestProblem};

/// Bounds the wait for a committed deletion to reach this broker's image.
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// An error code and the message the client sees with it.
type Refusal = (i16, String);

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
    version: i16,
    request: DeleteTopicsRequest,
) -> DeleteTopicsResponse {
    let image = ctx.image();
    let mut targets: Vec<Target> = if version >= 6 {
        request
            .topics
            .iter()
            .map(|topic| match (&topic.name, topic.topic_id) {
                (Some(name), id) if !id.is_nil() => refused(
                    Some(name.to_string()),
                    Some(from_uuid(&id)),
                    RequestProblem::Inconsistent,
                    "give a topic name or a topic id, not both",
                ),
                (Some(name), _) => by_name(name.to_string()),
                (None, id) => by_id(&image, &id),
            })
            .collect()
    } else {
        request
            .topic_names
            .iter()
            .map(|name| by_name(name.to_string()))
            .collect()
    };
    refuse_duplicates(&mut targets);

    let mut responses = Vec::with_capacity(targets.len());
    for target in targets {
        let outcome = match (&target.refused, &target.name) {
            (Some(refusal), _) => Err(refusal.clone()),
            (None, Some(name)) => delete(ctx, name).await,
            (None, None) => Err((
                code(Failure::Request(RequestProblem::UnknownTopicId)),
                "unknown topic id".to_owned(),
            )),
        };
        let mut result =
            DeletableTopicResult::default().with_name(target.name.clone().map(topic_name));
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
            Err((code, message)) => {
                result = result.with_error_code(code);
                if version >= 5 {
                    result = result.with_error_message(Some(str_bytes(message)));
                }
            }
        }
        responses.push(result);
    }
    DeleteTopicsResponse::default().with_responses(responses)
}

/// A name is passed to the state machine as is: it, not this broker's possibly older image,
/// decides whether the topic exists.
fn by_name(name: String) -> Target {
    Target {
        name: Some(name),
        topic_id: None,
        refused: None,
    }
}

/// Commands name topics, so an id is resolved through this broker's image.
fn by_id(image: &MetadataImage, id: &Uuid) -> Target {
    let topic_id = from_uuid(id);
    match image.topic_by_id(&topic_id) {
        Some(topic) => Target {
            name: Some(topic.name.clone()),
            topic_id: Some(topic_id),
            refused: None,
        },
        None => refused(
            None,
            Some(topic_id),
            RequestProblem::UnknownTopicId,
            "unknown topic id",
        ),
    }
}

fn refused(
    name: Option<String>,
    topic_id: Option<TopicId>,
    problem: RequestProblem,
    message: &str,
) -> Target {
    Target {
        name,
        topic_id,
        refused: Some((code(Failure::Request(problem)), message.to_owned())),
    }
}

/// Kafka refuses every entry that names (or, by id, resolves to) a topic given more than once.
fn refuse_duplicates(targets: &mut [Target]) {
    let mut counts: HashMap<String, usize> = HashMap::new();
    for target in targets.iter().filter(|t| t.refused.is_none()) {
        if let Some(name) = &target.name {
            *counts.entry(name.clone()).or_default() += 1;
        }
    }
    for target in targets.iter_mut().filter(|t| t.refused.is_none()) {
        if let Some(name) = &target.name {
            if counts[name] > 1 {
                target.refused = Some((
                    code(Failure::Request(RequestProblem::DuplicateResource)),
                    format!("topic `{name}` is given more than once in the request"),
                ));
            }
        }
    }
}

/// Deletes `name`, answering the id of the topic deleted.
async fn delete(ctx: &BrokerContext, name: &str) -> Result<Option<TopicId>, Refusal> {
    let command = MetadataCommand::DeleteTopic(DeleteTopic {
        name: name.to_owned(),
    });
    let response = ctx
        .write(command)
        .await
        .map_err(|error| code_and_message(Failure::Metadata(&error)))?;
    let MetadataResponse::TopicDeleted { topic_id } = response else {
        // Only a deletion answers a DeleteTopic, and the write did commit.
        return Ok(None);
    };
    ctx.node
        .wait_for_image(VISIBILITY_WAIT, |image| {
            image
                .topic_by_name(name)
                .is_none_or(|t| t.topic_id != topic_id)
        })
        .await;
    Ok(Some(topic_id))
}
