//! Topic and broker configs. Topic configs live in the metadata image and change through one
//! `AlterTopicConfigs` command per resource, whether the whole set is replaced (Kafka's
//! AlterConfigs) or edited key by key (IncrementalAlterConfigs): both become a
//! [`ConfigChange`] through [`plan`], the one implementation of their rules. Broker configs
//! come from this broker's static configuration, so they are described read-only and never
//! altered.

use std::collections::{BTreeMap, BTreeSet, HashSet};

use streambus_raft::command::AlterTopicConfigs;
use streambus_raft::image::TopicRecord;
use streambus_raft::MetadataCommand;

use super::topics::null_value;
use super::{write_and_wait, Mode, OpsError};
use crate::config::BrokerConfig;
use crate::context::BrokerContext;
use crate::topic_config::{self, ConfigProblem, ConfigSource, CLEANUP_POLICY};

/// What a config request is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConfigResource {
    Topic(String),
    /// A broker by its id as text; the empty name is the cluster-wide dynamic default.
    Broker(String),
}

/// One described config, topic or broker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEntry {
    pub name: &'static str,
    pub value: String,
    pub source: ConfigSource,
    pub read_only: bool,
}

/// How a resource's configs are to change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ConfigAlteration {
    /// These configs become the topic's whole config (Kafka's legacy AlterConfigs); a `None`
    /// value (a null) is refused.
    Replace(Vec<(String, Option<String>)>),
    /// Each key edited on its own (IncrementalAlterConfigs); keys not named keep their value.
    Edit(Vec<ConfigEdit>),
}

/// One key's edit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigEdit {
    pub key: String,
    pub op: ConfigOp,
    /// Required by [`ConfigOp::Set`]; ignored by [`ConfigOp::Delete`]; for
    /// [`ConfigOp::Append`] and [`ConfigOp::Subtract`], comma-separated list items (`None`:
    /// none).
    pub value: Option<String>,
}

/// IncrementalAlterConfigs operations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ConfigOp {
    /// Set the key to the value.
    Set,
    /// Remove the topic's own value: the broker default applies again.
    Delete,
    /// Add list items the current value lacks (list configs only).
    Append,
    /// Remove list items from the current value (list configs only).
    Subtract,
}

/// A checked change of one topic's configs: what one `AlterTopicConfigs` command carries.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ConfigChange {
    pub set: BTreeMap<String, String>,
    pub remove: Vec<String>,
}

/// The configs of `resource`, every known key with its effective value and source.
pub fn describe_configs(
    ctx: &BrokerContext,
    resource: &ConfigResource,
) -> Result<Vec<ConfigEntry>, OpsError> {
    match resource {
        ConfigResource::Topic(name) => {
            let image = ctx.image();
            let topic = image
                .topic_by_name(name)
                .ok_or_else(|| OpsError::UnknownTopic(name.clone()))?;
            Ok(topic_entries(&ctx.config, &topic.configs))
        }
        ConfigResource::Broker(name) => broker_entries(&ctx.config, name),
    }
}

/// Alters the configs of `resource` and waits until this broker's image shows the change, so
/// that the caller's next DescribeConfigs here sees it. Every key is checked before the one
/// write; [`Mode::ValidateOnly`] stops there.
pub async fn alter_configs(
    ctx: &BrokerContext,
    resource: &ConfigResource,
    alteration: &ConfigAlteration,
    mode: Mode,
) -> Result<(), OpsError> {
    let name = match resource {
        ConfigResource::Topic(name) => name,
        ConfigResource::Broker(_) => return Err(OpsError::StaticBrokerConfigs),
    };
    let image = ctx.image();
    let change = plan(&ctx.config, name, image.topic_by_name(name), alteration)?;
    if mode == Mode::ValidateOnly {
        return Ok(());
    }
    let ConfigChange { set, remove } = change;
    let command = MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
        name: name.clone(),
        set: set.clone(),
        remove: remove.clone(),
    });
    write_and_wait(ctx, command, |_, image| {
        image.topic_by_name(name).is_none_or(|topic| {
            let configs = &topic.configs;
            remove.iter().all(|key| !configs.contains_key(key))
                && set
                    .iter()
                    .all(|(key, value)| remove.contains(key) || configs.get(key) == Some(value))
        })
    })
    .await?;
    Ok(())
}

/// The change `alteration` makes to topic `name` (`topic`: its record in this broker's image,
/// if it has one) on a broker with `config`. A replacement's values are checked before the
/// topic is looked up, an edit's after, as Kafka does.
pub fn plan(
    config: &BrokerConfig,
    name: &str,
    topic: Option<&TopicRecord>,
    alteration: &ConfigAlteration,
) -> Result<ConfigChange, OpsError> {
    let known = || topic.ok_or_else(|| OpsError::UnknownTopic(name.to_owned()));
    match alteration {
        ConfigAlteration::Replace(configs) => {
            let set = replacement(configs)?;
            Ok(replace(known()?, set))
        }
        ConfigAlteration::Edit(edits) => edit(config, known()?, edits),
    }
}

/// The replacement set, each value validated and each key once.
fn replacement(configs: &[(String, Option<String>)]) -> Result<BTreeMap<String, String>, OpsError> {
    let mut set = BTreeMap::new();
    for (key, value) in configs {
        let value = value.as_deref().ok_or_else(|| null_value(key.clone()))?;
        topic_config::validate(key, value)?;
        if set.insert(key.clone(), value.to_owned()).is_some() {
            return Err(OpsError::DuplicateConfig(key.clone()));
        }
    }
    Ok(set)
}

/// `set` becomes the whole config: every known key not in it is removed, and so is every key
/// the topic has. Removing an absent key changes nothing, and this also clears a key set by a
/// write this broker has not applied yet.
fn replace(topic: &TopicRecord, set: BTreeMap<String, String>) -> ConfigChange {
    let remove: BTreeSet<String> = topic_config::KEYS
        .iter()
        .map(|&key| key.to_owned())
        .chain(topic.configs.keys().cloned())
        .filter(|key| !set.contains_key(key))
        .collect();
    ConfigChange {
        set,
        remove: remove.into_iter().collect(),
    }
}

/// Applies `edits` in order: each key at most once, every value checked.
fn edit(
    config: &BrokerConfig,
    topic: &TopicRecord,
    edits: &[ConfigEdit],
) -> Result<ConfigChange, OpsError> {
    let mut seen = HashSet::new();
    let mut change = ConfigChange::default();
    for ConfigEdit { key, op, value } in edits {
        if !seen.insert(key.as_str()) {
            return Err(OpsError::DuplicateConfig(key.clone()));
        }
        match op {
            ConfigOp::Set => {
                let value = value.as_deref().ok_or_else(|| null_value(key.clone()))?;
                topic_config::validate(key, value)?;
                change.set.insert(key.clone(), value.to_owned());
            }
            ConfigOp::Delete => {
                if !topic_config::KEYS.contains(&key.as_str()) {
                    return Err(ConfigProblem::UnknownKey(key.clone()).into());
                }
                change.remove.push(key.clone());
            }
            ConfigOp::Append | ConfigOp::Subtract => {
                let value = value.as_deref().unwrap_or_default();
                if key != CLEANUP_POLICY {
                    // Validating first answers an unknown key as such.
                    topic_config::validate(key, value)?;
                    return Err(ConfigProblem::InvalidValue {
                        key: key.clone(),
                        value: value.to_owned(),
                        expected:
                            "APPEND and SUBTRACT apply only to the list config cleanup.policy",
                    }
                    .into());
                }
                let current = current_value(config, topic, key);
                let changed = if *op == ConfigOp::Append {
                    append_list(&current, value)
                } else {
                    subtract_list(&current, value)
                };
                topic_config::validate(key, &changed)?;
                change.set.insert(key.clone(), changed);
            }
        }
    }
    Ok(change)
}

/// The value a topic runs with for `key`: its own, else the broker's default.
fn current_value(config: &BrokerConfig, topic: &TopicRecord, key: &str) -> String {
    topic_config::describe(config, &topic.configs)
        .into_iter()
        .find(|described| described.name == key)
        .map(|described| described.value)
        .unwrap_or_default()
}

/// `current` with the comma-separated `values` it lacks appended, in order.
fn append_list(current: &str, values: &str) -> String {
    let mut items = list_items(current);
    for value in list_items(values) {
        if !items.contains(&value) {
            items.push(value);
        }
    }
    items.join(",")
}

/// `current` without any of the comma-separated `values`.
fn subtract_list(current: &str, values: &str) -> String {
    let removed = list_items(values);
    list_items(current)
        .into_iter()
        .filter(|item| !removed.contains(item))
        .collect::<Vec<_>>()
        .join(",")
}

fn list_items(list: &str) -> Vec<&str> {
    list.split(',')
        .map(str::trim)
        .filter(|item| !item.is_empty())
        .collect()
}

fn topic_entries(config: &BrokerConfig, configs: &BTreeMap<String, String>) -> Vec<ConfigEntry> {
    topic_config::describe(config, configs)
        .into_iter()
        .map(|described| ConfigEntry {
            name: described.name,
            value: described.value,
            source: described.source,
            read_only: false,
        })
        .collect()
}

/// This broker's settings that clients commonly ask for. The empty name is the cluster-wide
/// dynamic default, which is always empty here since broker configs are static.
fn broker_entries(config: &BrokerConfig, name: &str) -> Result<Vec<ConfigEntry>, OpsError> {
    if name.is_empty() {
        return Ok(Vec::new());
    }
    if name.parse::<i32>().ok() != Some(config.node_id) {
        return Err(OpsError::OtherBroker {
            this: config.node_id,
            asked: name.to_owned(),
        });
    }
    let values = [
        ("broker.id", config.node_id.to_string()),
        ("num.partitions", config.topics.num_partitions.to_string()),
        (
            "default.replication.factor",
            config.topics.default_replication_factor.to_string(),
        ),
        (
            "auto.create.topics.enable",
            config.topics.auto_create_enable.to_string(),
        ),
        (
            "min.insync.replicas",
            config.topics.min_insync_replicas.to_string(),
        ),
        ("compression.type", config.topics.compression_type.clone()),
        ("log.retention.ms", config.log.retention_ms.to_string()),
        (
            "log.retention.bytes",
            config.log.retention_bytes.to_string(),
        ),
        ("log.segment.bytes", config.log.segment_bytes.to_string()),
        (
            "message.max.bytes",
            config.log.max_message_bytes.to_string(),
        ),
    ];
    Ok(values
        .into_iter()
        .map(|(name, value)| ConfigEntry {
            name,
            value,
            source: ConfigSource::StaticBroker,
            read_only: true,
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use streambus_raft::command::TopicId;

    use super::*;
    use crate::topic_config::{RETENTION_MS, SEGMENT_BYTES};

    fn topic(configs: &[(&str, &str)]) -> TopicRecord {
        TopicRecord {
            topic_id: TopicId([7; 16]),
            name: "t".to_owned(),
            partitions: Vec::new(),
            configs: configs
                .iter()
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect(),
        }
    }

    fn set(pairs: &[(&str, &str)]) -> Vec<(String, Option<String>)> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), Some((*v).to_owned())))
            .collect()
    }

    fn op(key: &str, op: ConfigOp, value: Option<&str>) -> ConfigEdit {
        ConfigEdit {
            key: key.to_owned(),
            op,
            value: value.map(str::to_owned),
        }
    }

    fn planned(
        topic: &TopicRecord,
        alteration: ConfigAlteration,
    ) -> Result<ConfigChange, OpsError> {
        plan(&BrokerConfig::default(), "t", Some(topic), &alteration)
    }

    #[test]
    fn append_adds_only_missing_values_in_order() {
        assert_eq!(append_list("delete", "compact"), "delete,compact");
        assert_eq!(append_list("delete", "delete"), "delete");
        assert_eq!(append_list("", "compact, delete"), "compact,delete");
        assert_eq!(append_list("compact", ""), "compact");
    }

    #[test]
    fn subtract_removes_every_listed_value() {
        assert_eq!(subtract_list("compact,delete", "delete"), "compact");
        assert_eq!(subtract_list("compact, delete", "compact,delete"), "");
        assert_eq!(subtract_list("delete", "compact"), "delete");
    }

    #[test]
    fn a_replacement_removes_every_other_key() {
        let topic = topic(&[(SEGMENT_BYTES, "2048"), ("legacy.key", "x")]);
        let change = planned(
            &topic,
            ConfigAlteration::Replace(set(&[(RETENTION_MS, "1000")])),
        )
        .unwrap();
        assert_eq!(
            change.set,
            BTreeMap::from([(RETENTION_MS.to_owned(), "1000".to_owned())])
        );
        assert!(change.remove.contains(&SEGMENT_BYTES.to_owned()));
        assert!(
            change.remove.contains(&"legacy.key".to_owned()),
            "the topic's own keys too"
        );
        assert!(!change.remove.contains(&RETENTION_MS.to_owned()));
        assert_eq!(
            change.remove.len(),
            topic_config::KEYS.len(),
            "every known key but one, plus legacy.key"
        );
    }

    #[test]
    fn a_replacement_is_checked_before_the_topic_is_looked_up() {
        let config = BrokerConfig::default();
        let bad = ConfigAlteration::Replace(set(&[(RETENTION_MS, "soon")]));
        assert!(matches!(
            plan(&config, "t", None, &bad),
            Err(OpsError::Config(ConfigProblem::InvalidValue { .. }))
        ));
        let null = ConfigAlteration::Replace(vec![(RETENTION_MS.to_owned(), None)]);
        assert!(matches!(
            plan(&config, "t", None, &null),
            Err(OpsError::Config(ConfigProblem::InvalidValue { .. }))
        ));
        let twice = ConfigAlteration::Replace(set(&[(RETENTION_MS, "1"), (RETENTION_MS, "2")]));
        assert!(matches!(
            plan(&config, "t", Some(&topic(&[])), &twice),
            Err(OpsError::DuplicateConfig(key)) if key == RETENTION_MS
        ));
        let good = ConfigAlteration::Replace(set(&[(RETENTION_MS, "1")]));
        assert!(matches!(
            plan(&config, "t", None, &good),
            Err(OpsError::UnknownTopic(name)) if name == "t"
        ));
    }

    #[test]
    fn an_edit_looks_the_topic_up_first() {
        let config = BrokerConfig::default();
        let bad = ConfigAlteration::Edit(vec![op(RETENTION_MS, ConfigOp::Set, Some("soon"))]);
        assert!(matches!(
            plan(&config, "t", None, &bad),
            Err(OpsError::UnknownTopic(_))
        ));
    }

    #[test]
    fn edits_set_delete_append_and_subtract() {
        let topic = topic(&[(CLEANUP_POLICY, "delete"), (SEGMENT_BYTES, "2048")]);
        let change = planned(
            &topic,
            ConfigAlteration::Edit(vec![
                op(RETENTION_MS, ConfigOp::Set, Some("1000")),
                op(SEGMENT_BYTES, ConfigOp::Delete, None),
                op(CLEANUP_POLICY, ConfigOp::Append, Some("compact")),
            ]),
        )
        .unwrap();
        assert_eq!(
            change.set,
            BTreeMap::from([
                (RETENTION_MS.to_owned(), "1000".to_owned()),
                (CLEANUP_POLICY.to_owned(), "delete,compact".to_owned()),
            ])
        );
        assert_eq!(change.remove, vec![SEGMENT_BYTES.to_owned()]);

        let topic = super::tests::topic(&[(CLEANUP_POLICY, "compact,delete")]);
        let change = planned(
            &topic,
            ConfigAlteration::Edit(vec![op(CLEANUP_POLICY, ConfigOp::Subtract, Some("delete"))]),
        )
        .unwrap();
        assert_eq!(change.set[CLEANUP_POLICY], "compact");
    }

    #[test]
    fn append_starts_from_the_broker_default() {
        // The default cleanup.policy is delete.
        let change = planned(
            &topic(&[]),
            ConfigAlteration::Edit(vec![op(CLEANUP_POLICY, ConfigOp::Append, Some("compact"))]),
        )
        .unwrap();
        assert_eq!(change.set[CLEANUP_POLICY], "delete,compact");
    }

    #[test]
    fn bad_edits_are_refused() {
        let topic = topic(&[(CLEANUP_POLICY, "delete")]);
        let refused = |edits: Vec<ConfigEdit>| planned(&topic, ConfigAlteration::Edit(edits));
        assert!(matches!(
            refused(vec![op(RETENTION_MS, ConfigOp::Set, None)]),
            Err(OpsError::Config(ConfigProblem::InvalidValue { .. }))
        ));
        assert!(matches!(
            refused(vec![op("no.such.key", ConfigOp::Delete, None)]),
            Err(OpsError::Config(ConfigProblem::UnknownKey(_)))
        ));
        assert!(matches!(
            refused(vec![op(RETENTION_MS, ConfigOp::Append, Some("1"))]),
            Err(OpsError::Config(ConfigProblem::InvalidValue { expected, .. }))
                if expected.contains("APPEND")
        ));
        assert!(matches!(
            refused(vec![op("no.such.key", ConfigOp::Append, Some("1"))]),
            Err(OpsError::Config(ConfigProblem::UnknownKey(_)))
        ));
        // Subtracting the whole policy leaves an empty value, which validation refuses.
        assert!(matches!(
            refused(vec![op(CLEANUP_POLICY, ConfigOp::Subtract, Some("delete"))]),
            Err(OpsError::Config(ConfigProblem::InvalidValue { .. }))
        ));
        assert!(matches!(
            refused(vec![
                op(RETENTION_MS, ConfigOp::Set, Some("1")),
                op(RETENTION_MS, ConfigOp::Delete, None),
            ]),
            Err(OpsError::DuplicateConfig(_))
        ));
    }

    #[test]
    fn brokers_describe_only_themselves() {
        let config = BrokerConfig::default();
        assert!(broker_entries(&config, "").unwrap().is_empty());
        let own = broker_entries(&config, &config.node_id.to_string()).unwrap();
        assert!(own.iter().all(|entry| entry.read_only));
        assert!(own.iter().any(|entry| entry.name == "broker.id"));
        assert!(matches!(
            broker_entries(&config, "99"),
            Err(OpsError::OtherBroker { asked, .. }) if asked == "99"
        ));
    }
}
