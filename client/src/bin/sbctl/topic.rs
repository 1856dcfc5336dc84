//! `sbctl topic ...`: create, list, describe, delete, alter-config, add-partitions.

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use serde_json::json;
use streambus_client::admin::{ConfigChange, ConfigResource, NewTopic};
use streambus_client::{Admin, Client};

use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum TopicCommand {
    /// Create a topic.
    Create(CreateArgs),
    /// List topics.
    List {
        /// Include internal topics.
        #[arg(long)]
        internal: bool,
    },
    /// Partitions, leaders, replicas, ISR and non-default configs of topics.
    Describe {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Delete topics.
    Delete {
        #[arg(required = true)]
        topics: Vec<String>,
    },
    /// Set or reset topic configs.
    AlterConfig(AlterArgs),
    /// Raise a topic's partition count.
    AddPartitions {
        topic: String,
        /// The new total number of partitions.
        #[arg(long)]
        total: i32,
    },
}

#[derive(Debug, Args)]
pub struct CreateArgs {
    topic: String,
    /// Partitions (default: the broker's `num.partitions`).
    #[arg(long, default_value_t = -1)]
    partitions: i32,
    /// Replication factor (default: the broker's).
    #[arg(long, default_value_t = -1)]
    replication_factor: i16,
    /// A topic config, `key=value`; repeatable.
    #[arg(long = "config", value_parser = parse_key_value)]
    configs: Vec<(String, String)>,
    /// Check the request without creating the topic.
    #[arg(long)]
    validate_only: bool,
    /// Succeed if the topic already exists.
    #[arg(long)]
    if_not_exists: bool,
}

#[derive(Debug, Args)]
pub struct AlterArgs {
    topic: String,
    /// Set `key=value`; repeatable.
    #[arg(long = "set", value_parser = parse_key_value)]
    set: Vec<(String, String)>,
    /// Reset `key` to its default; repeatable.
    #[arg(long = "delete")]
    delete: Vec<String>,
}

/// `key=value`, for clap.
pub fn parse_key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_owned(), v.to_owned())),
        _ => Err(format!("expected key=value, got {text:?}")),
    }
}

pub async fn run(client: Client, format: Format, command: TopicCommand) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match command {
        TopicCommand::Create(args) => create(&admin, format, args).await,
        TopicCommand::List { internal } => list(&admin, format, internal).await,
        TopicCommand::Describe { topics } => describe(&admin, format, &topics).await,
        TopicCommand::Delete { topics } => delete(&admin, format, &topics).await,
        TopicCommand::AlterConfig(args) => alter(&admin, format, args).await,
        TopicCommand::AddPartitions { topic, total } => {
            admin.create_partitions(&topic, total, false).await?;
            report(
                format,
                "partitions",
                &topic,
                &format!("{topic} now has {total} partitions"),
            );
            Ok(())
        }
    }
}

fn report(format: Format, action: &str, topic: &str, text: &str) {
    match format {
        Format::Json => output::json(&json!({ "topic": topic, "result": action })),
        Format::Table => outln!("{text}"),
    }
}

async fn create(admin: &Admin, format: Format, args: CreateArgs) -> anyhow::Result<()> {
    let mut topic = NewTopic::new(&args.topic, args.partitions, args.replication_factor);
    topic.configs = args.configs.into_iter().collect();
    let results = admin.create_topics(&[topic], args.validate_only).await?;
    for (name, result) in results {
        match result {
            Ok(()) if args.validate_only => {
                report(format, "valid", &name, &format!("Topic {name} is valid"));
            }
            Ok(()) => report(format, "created", &name, &format!("Created topic {name}")),
            // 36: TOPIC_ALREADY_EXISTS.
            Err(e) if args.if_not_exists && e.kafka_code() == Some(36) => {
                report(
                    format,
                    "exists",
                    &name,
                    &format!("Topic {name} already exists"),
                );
            }
            Err(e) => return Err(e).with_context(|| format!("creating topic {name}")),
        }
    }
    Ok(())
}

async fn list(admin: &Admin, format: Format, internal: bool) -> anyhow::Result<()> {
    let metadata = admin.list_topics().await?;
    let topics: Vec<_> = metadata
        .topics
        .values()
        .filter(|t| internal || !t.internal)
        .collect();
    match format {
        Format::Json => output::json(&json!(topics
            .iter()
            .map(|t| json!({ "name": t.name, "partitions": t.partitions.len(), "internal": t.internal }))
            .collect::<Vec<_>>())),
        Format::Table => {
            for t in topics {
                outln!("{}", t.name);
            }
        }
    }
    Ok(())
}

async fn describe(admin: &Admin, format: Format, names: &[String]) -> anyhow::Result<()> {
    let topics = admin.describe_topics(names).await?;
    let mut described = Vec::new();
    for topic in topics {
        let configs = admin
            .describe_configs(&ConfigResource::Topic(topic.name.clone()), &[])
            .await?;
        let overrides: Vec<_> = configs.into_iter().filter(|c| !c.is_default).collect();
        described.push((topic, overrides));
    }
    match format {
        Format::Json => output::json(&json!(described
            .iter()
            .map(|(t, configs)| json!({
                "name": t.name,
                "topic_id": t.topic_id,
                "partitions": t.partitions,
                "configs": configs.iter().map(|c| (c.name.clone(), json!(c.value))).collect::<serde_json::Map<_, _>>(),
            }))
            .collect::<Vec<_>>())),
        Format::Table => {
            for (topic, configs) in described {
                let rf = topic.partitions.first().map_or(0, |p| p.replicas.len());
                let configs: Vec<String> = configs
                    .iter()
                    .map(|c| format!("{}={}", c.name, c.value.clone().unwrap_or_default()))
                    .collect();
                outln!(
                    "Topic: {}  TopicId: {}  PartitionCount: {}  ReplicationFactor: {}  Configs: {}",
                    topic.name,
                    topic.topic_id,
                    topic.partitions.len(),
                    rf,
                    configs.join(",")
                );
                let rows: Vec<Vec<String>> = topic
                    .partitions
                    .iter()
                    .map(|p| {
                        vec![
                            p.partition.to_string(),
                            p.leader.map_or_else(|| "none".to_owned(), |l| l.to_string()),
                            output::ids(&p.replicas),
                            output::ids(&p.isr),
                        ]
                    })
                    .collect();
                output::table(&["PARTITION", "LEADER", "REPLICAS", "ISR"], &rows);
            }
        }
    }
    Ok(())
}

/// Kafka's internal topics: the brokers' coordinators keep their state there.
const INTERNAL_TOPICS: [&str; 2] = ["__consumer_offsets", "__transaction_state"];

async fn delete(admin: &Admin, format: Format, names: &[String]) -> anyhow::Result<()> {
    // As `kafka-topics.sh --delete` does: deleting one would drop every group's offsets or every
    // transaction's state, and the broker (like Kafka's) does not refuse it.
    if let Some(internal) = names.iter().find(|n| INTERNAL_TOPICS.contains(&n.as_str())) {
        bail!("Topic {internal} is a kafka internal topic and is not allowed to be marked for deletion.");
    }
    let results = admin.delete_topics(names).await?;
    let mut failures = Vec::new();
    for (name, result) in results {
        match result {
            Ok(()) => report(format, "deleted", &name, &format!("Deleted topic {name}")),
            Err(e) => failures.push(format!("deleting topic {name}: {e}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

async fn alter(admin: &Admin, format: Format, args: AlterArgs) -> anyhow::Result<()> {
    if args.set.is_empty() && args.delete.is_empty() {
        bail!("nothing to change: give --set key=value or --delete key");
    }
    let mut changes: Vec<ConfigChange> = args
        .set
        .into_iter()
        .map(|(k, v)| ConfigChange::Set(k, v))
        .collect();
    changes.extend(args.delete.into_iter().map(ConfigChange::Delete));
    admin
        .alter_configs(&ConfigResource::Topic(args.topic.clone()), &changes, false)
        .await
        .with_context(|| format!("altering configs of {}", args.topic))?;
    report(
        format,
        "altered",
        &args.topic,
        &format!("Altered configs of topic {}", args.topic),
    );
    Ok(())
}
