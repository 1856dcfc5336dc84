//! Topics: create (with the broker's defaults, placed by the controller or with explicit
//! replica lists), delete, add partitions, and auto-create. Each is one metadata command; a
//! [`Mode::ValidateOnly`] call runs it on a copy of this broker's image instead.

use std::collections::BTreeMap;

use streambus_raft::command::{
    BrokerId, CreatePartitions, CreateTopic, DeleteTopic, TopicAssignment, TopicId,
};
use streambus_raft::image::validate_topic_name;
use streambus_raft::{MetadataCommand, MetadataImage, MetadataResponse, RaftError, Rejection};
use uuid::Uuid;

use super::{dry_run, write_and_wait, Mode, OpsError};
use crate::config::TopicsConfig;
use crate::context::BrokerContext;
use crate::topic_config::{self, ConfigProblem, DescribedConfig};

/// A topic to create.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub layout: Layout,
    /// The topic's own configs, in request order; a `None` value (a null) is refused.
    pub configs: Vec<(String, Option<String>)>,
}

/// How a new topic's partitions are laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Layout {
    /// Placed by the controller; `None` takes the broker's default.
    Auto {
        partitions: Option<i32>,
        replication_factor: Option<i16>,
    },
    /// Replica lists by partition; the partitions must be exactly `0..n`, in any order.
    Explicit(Vec<PartitionReplicas>),
}

/// The replicas of one partition, preferred leader first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionReplicas {
    pub partition: i32,
    pub replicas: Vec<BrokerId>,
}

/// A topic created (or that a [`Mode::ValidateOnly`] call would create).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatedTopic {
    /// `None` for a dry run: no topic id exists that a client could use.
    pub topic_id: Option<TopicId>,
    /// The replica lists by partition, when the state machine reported them.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
    /// Every known config of the topic with its effective value and source.
    pub configs: Vec<DescribedConfig>,
}

/// Partitions to add to a topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewPartitions {
    pub topic: String,
    /// The partition count the topic ends with.
    pub total_count: i32,
    /// The replica lists of the new partitions only; `None` lets the controller place them.
    pub assignments: Option<Vec<Vec<BrokerId>>>,
}

/// Creates `topic` and waits until this broker shows it, so that the caller's next Metadata
/// request here finds it.
pub async fn create_topic(
    ctx: &BrokerContext,
    topic: NewTopic,
    mode: Mode,
) -> Result<CreatedTopic, OpsError> {
    let create = create_command(&ctx.config.topics, topic)?;
    let name = create.name.clone();
    let configs = topic_config::describe(&ctx.config, &create.configs);
    // Checked before the write: a bad name costs no round trip to the controller.
    validate_topic_name(&name).map_err(OpsError::Rejected)?;
    let command = MetadataCommand::CreateTopic(create);
    if mode == Mode::ValidateOnly {
        let response = dry_run(&ctx.image(), &command)?;
        return Ok(CreatedTopic {
            topic_id: None,
            assignments: created(response).map(|(_, assignments)| assignments),
            configs,
        });
    }
    let response = write_and_wait(ctx, command, |response, image| match response {
        MetadataResponse::TopicCreated { topic_id, .. } => image
            .topic_by_name(&name)
            .is_some_and(|t| t.topic_id == *topic_id),
        _ => true,
    })
    .await?;
    let created = created(response);
    Ok(CreatedTopic {
        topic_id: created.as_ref().map(|(topic_id, _)| *topic_id),
        assignments: created.map(|(_, assignments)| assignments),
        configs,
    })
}

/// Creates `name` with the broker's defaults, as Metadata (and Produce) do for an unknown
/// topic, and waits until this broker shows it. A topic created first by someone else is
/// success.
pub async fn auto_create(ctx: &BrokerContext, name: &str) -> Result<(), OpsError> {
    // Checked here first: each unknown name in a request would otherwise be one round trip to
    // the controller.
    validate_topic_name(name).map_err(OpsError::Rejected)?;
    let command = MetadataCommand::CreateTopic(CreateTopic {
        name: name.to_owned(),
        topic_id: new_topic_id(),
        assignment: TopicAssignment::Auto {
            partitions: ctx.config.topics.num_partitions,
            replication_factor: ctx.config.topics.default_replication_factor,
        },
        configs: BTreeMap::new(),
    });
    let visible = |_: &MetadataResponse, image: &MetadataImage| image.topic_by_name(name).is_some();
    match write_and_wait(ctx, command, visible).await {
        Ok(_) => {
            tracing::info!(topic = name, "topic auto-created");
            Ok(())
        }
        Err(OpsError::Metadata(error))
            if matches!(
                &*error,
                RaftError::Rejected(Rejection::TopicAlreadyExists { .. })
            ) =>
        {
            // Another client's request created it first; wait for it as for ours.
            ctx.node
                .wait_for_image(super::VISIBILITY_WAIT, |image| {
                    image.topic_by_name(name).is_some()
                })
                .await;
            Ok(())
        }
        Err(error) => Err(error),
    }
}

/// The name of the topic with `topic_id` in `image` (commands name topics, so an id is
/// resolved through this broker's image).
pub fn topic_name(image: &MetadataImage, topic_id: &TopicId) -> Result<String, OpsError> {
    image
        .topic_by_id(topic_id)
        .map(|topic| topic.name.clone())
        .ok_or(OpsError::UnknownTopicId(*topic_id))
}

/// Deletes topic `name` and waits until this broker no longer shows it; answers the id of the
/// topic deleted. The state machine, not this broker's possibly older image, decides whether
/// the topic exists.
pub async fn delete_topic(ctx: &BrokerContext, name: &str) -> Result<Option<TopicId>, OpsError> {
    let command = MetadataCommand::DeleteTopic(DeleteTopic {
        name: name.to_owned(),
    });
    let response = write_and_wait(ctx, command, |response, image| match response {
        MetadataResponse::TopicDeleted { topic_id } => image
            .topic_by_name(name)
            .is_none_or(|t| t.topic_id != *topic_id),
        _ => true,
    })
    .await?;
    Ok(match response {
        MetadataResponse::TopicDeleted { topic_id } => Some(topic_id),
        // Only a deletion answers a DeleteTopic, and the write did commit.
        _ => None,
    })
}

/// Grows a topic to `request.total_count` partitions and waits until this broker shows them.
pub async fn create_partitions(
    ctx: &BrokerContext,
    request: NewPartitions,
    mode: Mode,
) -> Result<(), OpsError> {
    let current = ctx
        .image()
        .topic_by_name(&request.topic)
        .map(|t| t.partitions.len());
    let total_count = checked_partition_count(current, request.total_count)?;
    let name = request.topic;
    let command = MetadataCommand::CreatePartitions(CreatePartitions {
        name: name.clone(),
        total_count,
        assignment: request.assignments,
    });
    if mode == Mode::ValidateOnly {
        return dry_run(&ctx.image(), &command).map(drop);
    }
    write_and_wait(ctx, command, |_, image| {
        image
            .topic_by_name(&name)
            .is_some_and(|t| t.partitions.len() >= total_count as usize)
    })
    .await?;
    Ok(())
}

/// A fresh random topic id (never the all-zero "none").
pub fn new_topic_id() -> TopicId {
    loop {
        let id = TopicId(*Uuid::new_v4().as_bytes());
        if !id.is_zero() {
            return id;
        }
    }
}

/// The `CreateTopic` command for `topic`: configs validated, the layout resolved over the
/// broker's `defaults`. Zero counts are left to the state machine, which rejects them.
fn create_command(defaults: &TopicsConfig, topic: NewTopic) -> Result<CreateTopic, OpsError> {
    let configs = checked_configs(topic.configs)?;
    let assignment = assignment(defaults, topic.layout)?;
    Ok(CreateTopic {
        name: topic.name,
        topic_id: new_topic_id(),
        assignment,
        configs,
    })
}

/// The configs, each validated (the image stores only values `validate` accepted).
fn checked_configs(
    configs: Vec<(String, Option<String>)>,
) -> Result<BTreeMap<String, String>, OpsError> {
    let mut checked = BTreeMap::new();
    for (key, value) in configs {
        let Some(value) = value else {
            return Err(null_value(key).into());
        };
        topic_config::validate(&key, &value)?;
        if checked.contains_key(&key) {
            return Err(OpsError::DuplicateConfig(key));
        }
        checked.insert(key, value);
    }
    Ok(checked)
}

/// Why a null config value is refused: topic configs always have a value.
pub(crate) fn null_value(key: String) -> ConfigProblem {
    ConfigProblem::InvalidValue {
        key,
        value: "null".to_owned(),
        expected: "a value (null is not supported for topic configs)",
    }
}

fn assignment(defaults: &TopicsConfig, layout: Layout) -> Result<TopicAssignment, OpsError> {
    let (partitions, replication_factor) = match layout {
        Layout::Explicit(lists) => {
            return explicit_assignment(lists)
                .map(TopicAssignment::Explicit)
                .map_err(OpsError::InvalidReplicaAssignment)
        }
        Layout::Auto {
            partitions,
            replication_factor,
        } => (partitions, replication_factor),
    };
    let partitions = match partitions {
        None => defaults.num_partitions,
        Some(n) => u32::try_from(n).map_err(|_| {
            OpsError::InvalidPartitions(format!(
                "number of partitions must be positive (or -1 for the default), got {n}"
            ))
        })?,
    };
    let replication_factor = match replication_factor {
        None => defaults.default_replication_factor,
        Some(n) => u16::try_from(n).map_err(|_| {
            OpsError::InvalidReplicationFactor(format!(
                "replication factor must be positive (or -1 for the default), got {n}"
            ))
        })?,
    };
    Ok(TopicAssignment::Auto {
        partitions,
        replication_factor,
    })
}

/// Replica lists indexed by partition; the partitions must be exactly `0..lists.len()`.
fn explicit_assignment(lists: Vec<PartitionReplicas>) -> Result<Vec<Vec<BrokerId>>, String> {
    let count = lists.len();
    let mut slots: Vec<Option<Vec<BrokerId>>> = vec![None; count];
    for list in lists {
        let index = list.partition;
        let slot = usize::try_from(index)
            .ok()
            .and_then(|i| slots.get_mut(i))
            .ok_or_else(|| {
                format!(
                    "partition {index} is outside 0..{count}: assignments must be contiguous from 0"
                )
            })?;
        if slot.is_some() {
            return Err(format!("partition {index} is assigned more than once"));
        }
        *slot = Some(list.replicas);
    }
    // `count` distinct indexes below `count` fill every slot.
    Ok(slots.into_iter().flatten().collect())
}

/// `requested` as a partition count for a topic with `current` partitions (`None`: not in this
/// broker's image). The state machine refuses a shrink too; checking here gives Kafka's message
/// when this broker's image already knows the topic.
fn checked_partition_count(current: Option<usize>, requested: i32) -> Result<u32, OpsError> {
    let invalid = |message: String| Err(OpsError::InvalidPartitions(message));
    let Some(total_count) = u32::try_from(requested).ok().filter(|&count| count > 0) else {
        return invalid(format!(
            "the partition count must be positive, got {requested}"
        ));
    };
    if let Some(current) = current {
        let requested = total_count as usize;
        if requested < current {
            return invalid(format!(
                "topic currently has {current} partitions, which is higher than the requested {requested}"
            ));
        }
        if requested == current {
            return invalid(format!("topic already has {current} partitions"));
        }
    }
    Ok(total_count)
}

/// Created topic id and replica lists from a `CreateTopic` answer.
fn created(response: MetadataResponse) -> Option<(TopicId, Vec<Vec<BrokerId>>)> {
    match response {
        MetadataResponse::TopicCreated {
            topic_id,
            assignments,
        } => Some((topic_id, assignments)),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn replicas(partition: i32, replicas: &[BrokerId]) -> PartitionReplicas {
        PartitionReplicas {
            partition,
            replicas: replicas.to_vec(),
        }
    }

    fn auto(partitions: Option<i32>, replication_factor: Option<i16>) -> Layout {
        Layout::Auto {
            partitions,
            replication_factor,
        }
    }

    #[test]
    fn explicit_assignments_are_indexed_by_partition() {
        let lists = explicit_assignment(vec![replicas(1, &[2, 3]), replicas(0, &[1, 2])]).unwrap();
        assert_eq!(lists, vec![vec![1, 2], vec![2, 3]]);
    }

    #[test]
    fn explicit_assignments_must_cover_every_partition_once() {
        assert!(explicit_assignment(vec![replicas(0, &[1]), replicas(2, &[1])]).is_err());
        assert!(explicit_assignment(vec![replicas(0, &[1]), replicas(0, &[2])]).is_err());
        assert!(explicit_assignment(vec![replicas(-1, &[1])]).is_err());
        let refused = assignment(
            &TopicsConfig::default(),
            Layout::Explicit(vec![replicas(1, &[1])]),
        );
        assert!(matches!(
            refused,
            Err(OpsError::InvalidReplicaAssignment(_))
        ));
    }

    #[test]
    fn missing_counts_take_the_broker_defaults() {
        let defaults = TopicsConfig {
            num_partitions: 6,
            default_replication_factor: 3,
            ..TopicsConfig::default()
        };
        let resolved = assignment(&defaults, auto(None, None)).unwrap();
        assert_eq!(
            resolved,
            TopicAssignment::Auto {
                partitions: 6,
                replication_factor: 3
            }
        );
        let resolved = assignment(&defaults, auto(Some(2), None)).unwrap();
        assert_eq!(
            resolved,
            TopicAssignment::Auto {
                partitions: 2,
                replication_factor: 3
            }
        );
        // Zero is the state machine's to reject, with its own error.
        let resolved = assignment(&defaults, auto(Some(0), Some(0))).unwrap();
        assert_eq!(
            resolved,
            TopicAssignment::Auto {
                partitions: 0,
                replication_factor: 0
            }
        );
    }

    #[test]
    fn negative_counts_are_refused() {
        let defaults = TopicsConfig::default();
        assert!(matches!(
            assignment(&defaults, auto(Some(-2), None)),
            Err(OpsError::InvalidPartitions(_))
        ));
        assert!(matches!(
            assignment(&defaults, auto(None, Some(-3))),
            Err(OpsError::InvalidReplicationFactor(_))
        ));
    }

    #[test]
    fn topic_configs_are_validated_and_unique() {
        let entry = |k: &str, v: Option<&str>| (k.to_owned(), v.map(str::to_owned));
        let configs = checked_configs(vec![
            entry("retention.ms", Some("1000")),
            entry("cleanup.policy", Some("compact")),
        ])
        .unwrap();
        assert_eq!(configs.len(), 2);
        assert_eq!(configs["retention.ms"], "1000");
        assert!(matches!(
            checked_configs(vec![entry("retention.ms", None)]),
            Err(OpsError::Config(ConfigProblem::InvalidValue { .. }))
        ));
        assert!(matches!(
            checked_configs(vec![entry("retention.msec", Some("1"))]),
            Err(OpsError::Config(ConfigProblem::UnknownKey(_)))
        ));
        assert!(matches!(
            checked_configs(vec![
                entry("retention.ms", Some("1")),
                entry("retention.ms", Some("2"))
            ]),
            Err(OpsError::DuplicateConfig(key)) if key == "retention.ms"
        ));
    }

    #[test]
    fn a_dry_run_reports_the_layout_without_creating() {
        let create = create_command(
            &TopicsConfig::default(),
            NewTopic {
                name: "t".to_owned(),
                layout: Layout::Explicit(vec![replicas(0, &[1])]),
                configs: Vec::new(),
            },
        )
        .unwrap();
        let command = MetadataCommand::CreateTopic(create);
        // No broker is registered, so the explicit replica is unknown.
        let image = MetadataImage::default();
        assert!(matches!(
            dry_run(&image, &command),
            Err(OpsError::Rejected(_))
        ));
        assert!(image.topic_by_name("t").is_none());
    }

    #[test]
    fn partition_counts_only_grow() {
        assert_eq!(checked_partition_count(None, 3).unwrap(), 3);
        assert_eq!(checked_partition_count(Some(2), 3).unwrap(), 3);
        for (current, requested) in [(None, 0), (None, -1), (Some(3), 3), (Some(3), 2)] {
            assert!(
                matches!(
                    checked_partition_count(current, requested),
                    Err(OpsError::InvalidPartitions(_))
                ),
                "{current:?} -> {requested}"
            );
        }
    }

    #[test]
    fn topic_ids_resolve_through_the_image() {
        let image = MetadataImage::default();
        let id = new_topic_id();
        assert!(!id.is_zero());
        assert!(matches!(
            topic_name(&image, &id),
            Err(OpsError::UnknownTopicId(unknown)) if unknown == id
        ));
    }
}
