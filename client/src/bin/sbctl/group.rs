//! `sbctl group ...`: list, describe, reset-offsets, delete and delete-offsets of consumer
//! groups, as `kafka-consumer-groups.sh` does them.

use std::collections::{BTreeMap, BTreeSet};

use anyhow::{bail, Context};
use clap::{ArgGroup, Args, Subcommand};
use serde_json::json;
use streambus_client::admin::GroupDescription;
use streambus_client::consumer::{EARLIEST, LATEST};
use streambus_client::{Admin, Client, OffsetAndMetadata, TopicPartition};

use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum GroupCommand {
    /// List groups.
    List,
    /// State, members and their assignments, and per partition the committed offset, the log
    /// end offset and the lag.
    Describe {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Plan new committed offsets (a dry run), or apply them with --execute; the group must
    /// have no members.
    ResetOffsets(ResetArgs),
    /// Delete groups (each must have no members).
    Delete {
        #[arg(required = true)]
        groups: Vec<String>,
    },
    /// Delete a group's committed offsets of topics (or some of their partitions) it no longer
    /// consumes.
    DeleteOffsets {
        group: String,
        /// `topic` or `topic:0,1,2`; repeatable.
        #[arg(long = "topic", required = true, value_parser = parse_topic_partitions)]
        topics: Vec<TopicSpec>,
    },
}

/// `--topic t` (all partitions) or `--topic t:0,2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    topic: String,
    partitions: Option<Vec<i32>>,
}

fn parse_topic_partitions(text: &str) -> Result<TopicSpec, String> {
    let (topic, partitions) = match text.split_once(':') {
        None => (text, None),
        Some((topic, list)) => {
            let partitions = list
                .split(',')
                .map(|p| {
                    p.trim()
                        .parse::<i32>()
                        .ok()
                        .filter(|p| *p >= 0)
                        .ok_or_else(|| format!("bad partition {p:?} in {text:?}"))
                })
                .collect::<Result<Vec<i32>, String>>()?;
            (topic, Some(partitions))
        }
    };
    if topic.is_empty() {
        return Err(format!("no topic in {text:?}"));
    }
    Ok(TopicSpec {
        topic: topic.to_owned(),
        partitions,
    })
}

#[derive(Debug, Args)]
#[command(group(ArgGroup::new("scope").required(true).args(["topics", "all_topics"])))]
#[command(group(ArgGroup::new("target").required(true)
    .args(["to_earliest", "to_latest", "to_datetime", "shift_by", "to_offset"])))]
pub struct ResetArgs {
    group: String,
    /// `topic` or `topic:0,1,2`; repeatable.
    #[arg(long = "topic", value_parser = parse_topic_partitions)]
    topics: Vec<TopicSpec>,
    /// Every topic the group has committed offsets for.
    #[arg(long)]
    all_topics: bool,
    /// The log start offset.
    #[arg(long)]
    to_earliest: bool,
    /// The log end offset.
    #[arg(long)]
    to_latest: bool,
    /// The first offset with a timestamp at or after this time: `YYYY-MM-DDTHH:MM:SS[.sss]`,
    /// then `Z` or `±HH:MM` (no zone: UTC).
    #[arg(long, value_parser = parse_datetime)]
    to_datetime: Option<i64>,
    /// The committed offset plus N (N may be negative).
    #[arg(long, allow_negative_numbers = true)]
    shift_by: Option<i64>,
    /// This offset.
    #[arg(long)]
    to_offset: Option<i64>,
    /// Apply the plan (without it, only print it).
    #[arg(long)]
    execute: bool,
    /// Only print the plan (the default).
    #[arg(long, conflicts_with = "execute")]
    dry_run: bool,
}

pub async fn run(client: Client, format: Format, command: GroupCommand) -> anyhow::Result<()> {
    let admin = Admin::new(client);
    match command {
        GroupCommand::List => list(&admin, format).await,
        GroupCommand::Describe { groups } => {
            for group in groups {
                describe(&admin, format, &group).await?;
            }
            Ok(())
        }
        GroupCommand::ResetOffsets(args) => reset(&admin, format, args).await,
        GroupCommand::Delete { groups } => delete(&admin, format, &groups).await,
        GroupCommand::DeleteOffsets { group, topics } => {
            delete_offsets(&admin, format, &group, &topics).await
        }
    }
}

async fn list(admin: &Admin, format: Format) -> anyhow::Result<()> {
    let groups = admin.list_groups().await?;
    match format {
        Format::Json => output::json(&json!(groups)),
        Format::Table => {
            for g in groups {
                outln!("{}", g.group_id);
            }
        }
    }
    Ok(())
}

/// One partition of a described group.
#[derive(Debug, serde::Serialize)]
struct PartitionRow {
    topic: String,
    partition: i32,
    committed_offset: Option<i64>,
    log_end_offset: Option<i64>,
    lag: Option<i64>,
    member_id: Option<String>,
    metadata: Option<String>,
}

async fn describe(admin: &Admin, format: Format, group: &str) -> anyhow::Result<()> {
    let described = admin
        .describe_group(group)
        .await
        .with_context(|| format!("describing group {group}"))?;
    let committed = admin.list_group_offsets(group).await?;
    let mut owners: BTreeMap<TopicPartition, &str> = BTreeMap::new();
    for m in &described.members {
        for tp in &m.assignment {
            owners.insert(tp.clone(), &m.member_id);
        }
    }
    let partitions: BTreeSet<TopicPartition> =
        committed.keys().chain(owners.keys()).cloned().collect();
    let ends = end_offsets(admin, &partitions).await?;
    let rows: Vec<PartitionRow> = partitions
        .iter()
        .map(|tp| {
            let offset = committed.get(tp);
            let end = ends.get(tp).copied();
            PartitionRow {
                topic: tp.topic.clone(),
                partition: tp.partition,
                committed_offset: offset.map(|o| o.offset),
                log_end_offset: end,
                lag: offset.zip(end).map(|(o, end)| (end - o.offset).max(0)),
                member_id: owners.get(tp).map(|m| (*m).to_owned()),
                metadata: offset.map(|o| o.metadata.clone()).filter(|m| !m.is_empty()),
            }
        })
        .collect();
    match format {
        Format::Json => output::json(&json!({
            "group": described.group_id,
            "state": described.state,
            "protocol_type": described.protocol_type,
            "protocol": described.protocol,
            "coordinator": described.coordinator,
            "members": described.members,
            "partitions": rows,
        })),
        Format::Table => describe_table(&described, &rows),
    }
    Ok(())
}

fn describe_table(described: &GroupDescription, rows: &[PartitionRow]) {
    let group = &described.group_id;
    outln!(
        "Group: {group}  State: {}  Protocol: {}  Members: {}  Coordinator: {}",
        described.state,
        if described.protocol.is_empty() {
            "-"
        } else {
            &described.protocol
        },
        described.members.len(),
        described
            .coordinator
            .map_or_else(|| "-".to_owned(), |c| c.to_string()),
    );
    if described.members.is_empty() {
        outln!("Consumer group '{group}' has no active members.");
    }
    let opt = |v: Option<i64>| v.map_or_else(|| "-".to_owned(), |v| v.to_string());
    let member = |id: &Option<String>| {
        let m = id
            .as_ref()
            .and_then(|id| described.members.iter().find(|m| &m.member_id == id));
        (
            m.map_or("-", |m| m.member_id.as_str()).to_owned(),
            m.map_or("-", |m| m.host.as_str()).to_owned(),
            m.map_or("-", |m| m.client_id.as_str()).to_owned(),
        )
    };
    let table: Vec<Vec<String>> = rows
        .iter()
        .map(|r| {
            let (id, host, client) = member(&r.member_id);
            vec![
                group.clone(),
                r.topic.clone(),
                r.partition.to_string(),
                opt(r.committed_offset),
                opt(r.log_end_offset),
                opt(r.lag),
                id,
                host,
                client,
            ]
        })
        .collect();
    outln!();
    output::table(
        &[
            "GROUP",
            "TOPIC",
            "PARTITION",
            "CURRENT-OFFSET",
            "LOG-END-OFFSET",
            "LAG",
            "CONSUMER-ID",
            "HOST",
            "CLIENT-ID",
        ],
        &table,
    );
    if !described.members.is_empty() {
        outln!();
        let members: Vec<Vec<String>> = described
            .members
            .iter()
            .map(|m| {
                vec![
                    m.member_id.clone(),
                    m.group_instance_id
                        .clone()
                        .unwrap_or_else(|| "-".to_owned()),
                    m.host.clone(),
                    m.client_id.clone(),
                    m.assignment.len().to_string(),
                    m.assignment
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join(","),
                ]
            })
            .collect();
        output::table(
            &[
                "CONSUMER-ID",
                "GROUP-INSTANCE-ID",
                "HOST",
                "CLIENT-ID",
                "#PARTITIONS",
                "ASSIGNMENT",
            ],
            &members,
        );
    }
}

/// Log end offsets of `partitions` (a deleted topic's partitions are left out).
async fn end_offsets(
    admin: &Admin,
    partitions: &BTreeSet<TopicPartition>,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    offsets_at(admin, partitions, LATEST).await
}

async fn offsets_at(
    admin: &Admin,
    partitions: &BTreeSet<TopicPartition>,
    timestamp: i64,
) -> anyhow::Result<BTreeMap<TopicPartition, i64>> {
    if partitions.is_empty() {
        return Ok(BTreeMap::new());
    }
    let topics: Vec<String> = partitions
        .iter()
        .map(|tp| tp.topic.clone())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let metadata = admin.client().refresh_metadata(&topics, false).await?;
    let existing: Vec<(TopicPartition, i64)> = partitions
        .iter()
        .filter(|tp| {
            metadata
                .topics
                .get(&tp.topic)
                .is_some_and(|t| t.partitions.iter().any(|p| p.partition == tp.partition))
        })
        .map(|tp| (tp.clone(), timestamp))
        .collect();
    Ok(admin.list_offsets(&existing).await?.into_iter().collect())
}

/// The partitions `specs` name; all of a topic's when none are given.
async fn resolve(admin: &Admin, specs: &[TopicSpec]) -> anyhow::Result<BTreeSet<TopicPartition>> {
    let mut out = BTreeSet::new();
    for spec in specs {
        let topic = admin
            .describe_topics(std::slice::from_ref(&spec.topic))
            .await
            .with_context(|| format!("topic {}", spec.topic))?;
        let count = topic.first().map_or(0, |t| t.partitions.len());
        match &spec.partitions {
            None => out.extend((0..count).map(|p| TopicPartition::new(&spec.topic, p as i32))),
            Some(list) => {
                for &p in list {
                    if usize::try_from(p).map_or(true, |p| p >= count) {
                        bail!("topic {} has no partition {p}", spec.topic);
                    }
                    out.insert(TopicPartition::new(&spec.topic, p));
                }
            }
        }
    }
    Ok(out)
}

async fn reset(admin: &Admin, format: Format, args: ResetArgs) -> anyhow::Result<()> {
    let group = &args.group;
    let described = admin
        .describe_group(group)
        .await
        .with_context(|| format!("describing group {group}"))?;
    // Kafka's rule: offsets of a group with members would be overwritten by their commits.
    if !matches!(described.state.as_str(), "Empty" | "Dead") {
        bail!(
            "Assignments can only be reset if the group '{group}' is inactive, but the current \
             state is {}.",
            described.state
        );
    }
    let committed = admin.list_group_offsets(group).await?;
    let partitions = if args.all_topics {
        committed.keys().cloned().collect()
    } else {
        resolve(admin, &args.topics).await?
    };
    let earliest = offsets_at(admin, &partitions, EARLIEST).await?;
    let latest = offsets_at(admin, &partitions, LATEST).await?;
    let at_time = match args.to_datetime {
        Some(ms) => Some(offsets_at(admin, &partitions, ms).await?),
        None => None,
    };
    let mut plan: BTreeMap<TopicPartition, OffsetAndMetadata> = BTreeMap::new();
    for tp in &partitions {
        let (Some(&low), Some(&high)) = (earliest.get(tp), latest.get(tp)) else {
            bail!("no offsets for {tp}");
        };
        let current = committed.get(tp).map(|o| o.offset);
        let wanted = if args.to_earliest {
            low
        } else if args.to_latest {
            high
        } else if let Some(found) = &at_time {
            // -1: no record at or after the time: the end.
            found.get(tp).copied().filter(|o| *o >= 0).unwrap_or(high)
        } else if let Some(shift) = args.shift_by {
            let current = current.with_context(|| {
                format!("cannot shift the offset of {tp}: the group has no committed offset")
            })?;
            current.saturating_add(shift)
        } else if let Some(offset) = args.to_offset {
            offset
        } else {
            bail!("no reset target given");
        };
        // Kafka clamps into the log: out-of-range offsets would reset again on the next fetch.
        let new = wanted.clamp(low, high);
        plan.insert(tp.clone(), OffsetAndMetadata::new(new));
    }
    if args.execute {
        admin
            .alter_group_offsets(group, &plan)
            .await
            .with_context(|| format!("resetting offsets of group {group}"))?;
    }
    match format {
        Format::Json => output::json(&json!({
            "group": group,
            "executed": args.execute,
            "partitions": plan.iter().map(|(tp, o)| json!({
                "topic": tp.topic,
                "partition": tp.partition,
                "previous_offset": committed.get(tp).map(|c| c.offset),
                "new_offset": o.offset,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let rows: Vec<Vec<String>> = plan
                .iter()
                .map(|(tp, o)| {
                    vec![
                        group.clone(),
                        tp.topic.clone(),
                        tp.partition.to_string(),
                        o.offset.to_string(),
                    ]
                })
                .collect();
            output::table(&["GROUP", "TOPIC", "PARTITION", "NEW-OFFSET"], &rows);
            if !args.execute {
                outln!("(dry run: nothing changed; --execute applies this)");
            }
        }
    }
    Ok(())
}

async fn delete(admin: &Admin, format: Format, groups: &[String]) -> anyhow::Result<()> {
    let results = admin.delete_groups(groups).await?;
    let mut failures = Vec::new();
    for (group, result) in results {
        match result {
            Ok(()) => match format {
                Format::Json => output::json(&json!({ "group": group, "result": "deleted" })),
                Format::Table => outln!("Deleted group {group}"),
            },
            Err(e) => failures.push(format!("deleting group {group}: {e}")),
        }
    }
    if !failures.is_empty() {
        bail!("{}", failures.join("; "));
    }
    Ok(())
}

async fn delete_offsets(
    admin: &Admin,
    format: Format,
    group: &str,
    specs: &[TopicSpec],
) -> anyhow::Result<()> {
    let partitions: Vec<TopicPartition> = resolve(admin, specs).await?.into_iter().collect();
    let results = admin.delete_group_offsets(group, &partitions).await?;
    let failed = results.iter().filter(|(_, r)| r.is_err()).count();
    match format {
        Format::Json => output::json(&json!({
            "group": group,
            "partitions": results.iter().map(|(tp, r)| json!({
                "topic": tp.topic,
                "partition": tp.partition,
                "error": r.as_ref().err().map(ToString::to_string),
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            let rows: Vec<Vec<String>> = results
                .iter()
                .map(|(tp, r)| {
                    vec![
                        tp.topic.clone(),
                        tp.partition.to_string(),
                        match r {
                            Ok(()) => "Successful".to_owned(),
                            Err(e) => format!("Error: {e}"),
                        },
                    ]
                })
                .collect();
            output::table(&["TOPIC", "PARTITION", "STATUS"], &rows);
        }
    }
    if failed > 0 {
        bail!(
            "{failed} of {} offsets of group {group} not deleted",
            results.len()
        );
    }
    Ok(())
}

/// `YYYY-MM-DDTHH:MM:SS[.fff]` with `Z`, `±HH:MM` or `±HHMM`, or no zone (UTC), as ms since
/// the epoch. Kafka's tool reads a zoneless time as local time; UTC keeps scripts portable.
fn parse_datetime(text: &str) -> Result<i64, String> {
    let bad = || format!("expected YYYY-MM-DDTHH:MM:SS[.sss][Z|±HH:MM], got {text:?}");
    let (date, rest) = text.split_once('T').ok_or_else(bad)?;
    let date: Vec<&str> = date.split('-').collect();
    let [year, month, day] = date[..] else {
        return Err(bad());
    };
    let (time, offset_minutes) = if let Some(time) = rest.strip_suffix('Z') {
        (time, 0)
    } else if let Some(at) = rest.rfind(['+', '-']) {
        let (time, zone) = rest.split_at(at);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let digits: String = zone[1..].chars().filter(|c| *c != ':').collect();
        if digits.len() != 4 {
            return Err(bad());
        }
        let hours: i64 = digits[..2].parse().map_err(|_| bad())?;
        let minutes: i64 = digits[2..].parse().map_err(|_| bad())?;
        (time, sign * (hours * 60 + minutes))
    } else {
        (rest, 0)
    };
    let (time, millis) = match time.split_once('.') {
        Some((time, fraction)) => {
            let digits: String = fraction.chars().chain("000".chars()).take(3).collect();
            (time, digits.parse::<i64>().map_err(|_| bad())?)
        }
        None => (time, 0),
    };
    let clock: Vec<&str> = time.split(':').collect();
    let [hour, minute, second] = clock[..] else {
        return Err(bad());
    };
    let number = |s: &str, max: i64| -> Result<i64, String> {
        s.parse::<i64>()
            .ok()
            .filter(|v| (0..=max).contains(v))
            .ok_or_else(bad)
    };
    let (y, m, d) = (number(year, 9999)?, number(month, 12)?, number(day, 31)?);
    if m == 0 || d == 0 {
        return Err(bad());
    }
    let seconds = days_from_civil(y, m, d) * 86_400
        + number(hour, 23)? * 3600
        + number(minute, 59)? * 60
        + number(second, 60)?;
    Ok((seconds - offset_minutes * 60) * 1000 + millis)
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn datetimes_as_kafka_writes_them() {
        assert_eq!(parse_datetime("1970-01-01T00:00:00"), Ok(0));
        assert_eq!(parse_datetime("1970-01-01T00:00:01.5Z"), Ok(1500));
        assert_eq!(
            parse_datetime("2024-02-29T12:34:56.789Z"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T14:34:56.789+02:00"),
            Ok(1_709_210_096_789)
        );
        assert_eq!(
            parse_datetime("2024-02-29T07:04:56.789-0530"),
            Ok(1_709_210_096_789)
        );
        assert!(parse_datetime("2024-13-01T00:00:00").is_err());
        assert!(parse_datetime("yesterday").is_err());
        assert!(parse_datetime("2024-01-01").is_err());
    }

    #[test]
    fn topic_partition_specs() {
        assert_eq!(
            parse_topic_partitions("t"),
            Ok(TopicSpec {
                topic: "t".into(),
                partitions: None
            })
        );
        assert_eq!(
            parse_topic_partitions("t:0,2").unwrap().partitions,
            Some(vec![0, 2])
        );
        assert!(parse_topic_partitions("t:x").is_err());
        assert!(parse_topic_partitions(":1").is_err());
        assert!(parse_topic_partitions("t:-1").is_err());
    }
}
