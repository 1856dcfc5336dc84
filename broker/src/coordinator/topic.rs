//! Creating a coordinator's internal topic on first use: one `CreateTopic` metadata command with
//! the configured partition count, replication factor and configs, then a wait until this
//! broker's image shows the topic. Unlike `ops::write_and_wait` it does not wait for the
//! partition manager: the runtime's leadership hook waits for that itself; and it takes the
//! metadata writer as a function, so its tests run without a quorum.

use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use streambus_raft::command::{CreateTopic, Rejection, TopicAssignment, TopicId};
use streambus_raft::{MetadataCommand, MetadataImage, MetadataResponse, RaftError};
use tokio::sync::watch;

use super::CoordinatorError;
use crate::context::BrokerContext;
use crate::ops::topics::new_topic_id;
use crate::topic_config;

/// How long a created topic may take to reach this broker's image before the caller is told
/// to retry (the topic exists anyway; the next call finds it).
const VISIBILITY_WAIT: Duration = Duration::from_secs(5);

/// Kafka's internal topics: written only by their coordinators, and shown as internal.
pub const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

/// Whether `name` is one of Kafka's internal topics (not any name starting with `__`).
pub fn is_internal(name: &str) -> bool {
    INTERNAL_TOPICS.contains(&name)
}

/// What to do when fewer brokers are live than the replication factor asks for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FewerBrokers {
    /// Create nothing until enough brokers are live (Kafka's behaviour in production).
    Refuse,
    /// Create the topic with as many replicas as there are live brokers (Kafka's dev setups,
    /// where `offsets.topic.replication.factor` is lowered to the cluster's size).
    Cap,
}

/// An internal topic as its coordinator configures it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InternalTopic {
    pub name: String,
    pub partitions: u32,
    pub replication_factor: u16,
    pub when_fewer_brokers: FewerBrokers,
    /// Topic configs, by Kafka name (`cleanup.policy=compact` at least).
    pub configs: BTreeMap<String, String>,
}

impl InternalTopic {
    /// A compacted topic (`cleanup.policy=compact`), as coordinators' topics are.
    pub fn compacted(
        name: &str,
        partitions: u32,
        replication_factor: u16,
        when_fewer_brokers: FewerBrokers,
    ) -> InternalTopic {
        InternalTopic {
            name: name.to_owned(),
            partitions,
            replication_factor,
            when_fewer_brokers,
            configs: BTreeMap::from([("cleanup.policy".to_owned(), "compact".to_owned())]),
        }
    }
}

/// The topic's id, after creating it if the image does not have it yet.
pub async fn ensure_topic(
    ctx: &BrokerContext,
    topic: &InternalTopic,
) -> Result<TopicId, CoordinatorError> {
    create_if_missing(ctx.node.subscribe(), |command| ctx.write(command), topic).await
}

/// [`ensure_topic`] over an image channel and a metadata writer.
async fn create_if_missing<F>(
    mut images: watch::Receiver<Arc<MetadataImage>>,
    write: impl FnOnce(MetadataCommand) -> F,
    topic: &InternalTopic,
) -> Result<TopicId, CoordinatorError>
where
    F: Future<Output = Result<MetadataResponse, RaftError>>,
{
    let image = images.borrow_and_update().clone();
    if let Some(existing) = image.topic_by_name(&topic.name) {
        return Ok(existing.topic_id);
    }
    let command = create_command(&image, topic)?;
    match write(command).await {
        Ok(_) => {}
        // Another broker created it first: as good as our own.
        Err(RaftError::Rejected(Rejection::TopicAlreadyExists { .. })) => {}
        Err(error) => return Err(CoordinatorError::Metadata(Arc::new(error))),
    }
    let shown = tokio::time::timeout(
        VISIBILITY_WAIT,
        images.wait_for(|image| image.topic_by_name(&topic.name).is_some()),
    )
    .await;
    match shown {
        Ok(Ok(image)) => image
            .topic_by_name(&topic.name)
            .map(|created| created.topic_id)
            .ok_or_else(|| not_available(topic, "the topic vanished")),
        _ => Err(not_available(
            topic,
            "created, but not yet in this broker's metadata",
        )),
    }
}

fn create_command(
    image: &MetadataImage,
    topic: &InternalTopic,
) -> Result<MetadataCommand, CoordinatorError> {
    for (key, value) in &topic.configs {
        topic_config::validate(key, value)
            .map_err(|problem| not_available(topic, &problem.to_string()))?;
    }
    let live = u16::try_from(image.unfenced_brokers().count()).unwrap_or(u16::MAX);
    let replication_factor = match topic.when_fewer_brokers {
        _ if live == 0 => return Err(not_available(topic, "no live broker")),
        FewerBrokers::Cap => topic.replication_factor.min(live),
        FewerBrokers::Refuse if live < topic.replication_factor => {
            let reason = format!(
                "{live} live brokers, replication factor {} required",
                topic.replication_factor
            );
            return Err(not_available(topic, &reason));
        }
        FewerBrokers::Refuse => topic.replication_factor,
    };
    let mut configs = topic.configs.clone();
    // A capped replication factor caps `min.insync.replicas` with it: a dev broker's
    // coordinator could never write otherwise (Kafka would make the operator lower both).
    if let Some(min_isr) = configs.get_mut("min.insync.replicas") {
        if min_isr
            .parse::<u16>()
            .is_ok_and(|min| min > replication_factor)
        {
            *min_isr = replication_factor.to_string();
        }
    }
    Ok(MetadataCommand::CreateTopic(CreateTopic {
        name: topic.name.clone(),
        topic_id: new_topic_id(),
        assignment: TopicAssignment::Auto {
            partitions: topic.partitions,
            replication_factor,
        },
        configs,
    }))
}

fn not_available(topic: &InternalTopic, reason: &str) -> CoordinatorError {
    CoordinatorError::NotAvailable {
        topic: topic.name.clone(),
        reason: reason.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::coordinator::test_machine::Images;

    /// A metadata writer that applies commands to `images` and publishes each new image.
    fn writer(
        images: &Arc<Mutex<Images>>,
        publish: &Arc<watch::Sender<Arc<MetadataImage>>>,
    ) -> impl FnOnce(MetadataCommand) -> std::future::Ready<Result<MetadataResponse, RaftError>>
    {
        let (images, publish) = (images.clone(), publish.clone());
        move |command| {
            let mut images = images.lock().unwrap();
            let response = images.apply(command);
            publish.send_replace(Arc::new(images.image.clone()));
            std::future::ready(Ok(response))
        }
    }

    #[tokio::test]
    async fn the_topic_is_created_once_compacted_with_replicas_capped_by_live_brokers() {
        let images = Images::with_brokers(&[1, 2]);
        let (publish, watched) = watch::channel(Arc::new(images.image.clone()));
        let (images, publish) = (Arc::new(Mutex::new(images)), Arc::new(publish));
        let topic = InternalTopic::compacted("__consumer_offsets", 3, 3, FewerBrokers::Cap);

        let topic_id = create_if_missing(watched.clone(), writer(&images, &publish), &topic)
            .await
            .unwrap();
        let image = watched.borrow().clone();
        let created = image.topic_by_name("__consumer_offsets").unwrap();
        assert_eq!(created.topic_id, topic_id);
        assert_eq!(created.partitions.len(), 3);
        assert!(created.partitions.iter().all(|p| p.replicas.len() == 2));
        assert_eq!(
            created.configs.get("cleanup.policy").map(String::as_str),
            Some("compact")
        );

        let unused =
            |_: MetadataCommand| -> std::future::Ready<Result<MetadataResponse, RaftError>> {
                panic!("an existing topic is not created again")
            };
        let again = create_if_missing(watched, unused, &topic).await.unwrap();
        assert_eq!(again, topic_id);
    }

    #[tokio::test]
    async fn too_few_live_brokers_create_nothing_unless_capped() {
        let images = Images::with_brokers(&[1, 2]);
        let (publish, watched) = watch::channel(Arc::new(images.image.clone()));
        let (images, publish) = (Arc::new(Mutex::new(images)), Arc::new(publish));
        let topic = InternalTopic::compacted("__transaction_state", 2, 3, FewerBrokers::Refuse);
        let refused = create_if_missing(watched.clone(), writer(&images, &publish), &topic).await;
        assert!(
            matches!(refused, Err(CoordinatorError::NotAvailable { .. })),
            "{refused:?}"
        );
        assert!(watched
            .borrow()
            .topic_by_name("__transaction_state")
            .is_none());
    }
}
