//! `sbctl cluster describe`: brokers, the controller, partition leaders and ISR, and the
//! under-replicated partitions.

use clap::Subcommand;
use serde_json::json;
use streambus_client::{Admin, Client};

use crate::output::{self, Format};

#[derive(Debug, Subcommand)]
pub enum ClusterCommand {
    /// Brokers, controller, every partition's leader and ISR, under-replicated partitions.
    Describe,
}

pub async fn run(client: Client, format: Format, command: ClusterCommand) -> anyhow::Result<()> {
    match command {
        ClusterCommand::Describe => describe(Admin::new(client), format).await,
    }
}

async fn describe(admin: Admin, format: Format) -> anyhow::Result<()> {
    let cluster = admin.describe_cluster().await?;
    let metadata = admin.list_topics().await?;
    let mut partitions = Vec::new();
    for topic in metadata.topics.values() {
        for p in &topic.partitions {
            partitions.push((topic.name.clone(), p.clone()));
        }
    }
    let under: Vec<&(String, streambus_client::metadata::PartitionInfo)> = partitions
        .iter()
        .filter(|(_, p)| p.under_replicated() || p.leader.is_none())
        .collect();
    match format {
        Format::Json => output::json(&json!({
            "cluster_id": cluster.cluster_id,
            "controller_id": cluster.controller_id,
            "brokers": cluster.brokers,
            "partitions": partitions.iter().map(|(t, p)| json!({
                "topic": t, "partition": p.partition, "leader": p.leader,
                "leader_epoch": p.leader_epoch, "replicas": p.replicas, "isr": p.isr,
                "under_replicated": p.under_replicated(),
            })).collect::<Vec<_>>(),
            "under_replicated": under.iter().map(|(t, p)| json!({
                "topic": t, "partition": p.partition,
            })).collect::<Vec<_>>(),
        })),
        Format::Table => {
            outln!("Cluster id: {}", cluster.cluster_id);
            let controller = cluster
                .controller_id
                .map_or_else(|| "none".to_owned(), |c| c.to_string());
            outln!("Controller: {controller}");
            outln!();
            let brokers: Vec<Vec<String>> = cluster
                .brokers
                .iter()
                .map(|b| {
                    vec![
                        b.id.to_string(),
                        b.addr(),
                        b.rack.clone().unwrap_or_default(),
                    ]
                })
                .collect();
            output::table(&["BROKER", "ADDRESS", "RACK"], &brokers);
            outln!();
            let rows: Vec<Vec<String>> = partitions
                .iter()
                .map(|(t, p)| {
                    vec![
                        t.clone(),
                        p.partition.to_string(),
                        p.leader
                            .map_or_else(|| "none".to_owned(), |l| l.to_string()),
                        output::ids(&p.replicas),
                        output::ids(&p.isr),
                    ]
                })
                .collect();
            output::table(&["TOPIC", "PARTITION", "LEADER", "REPLICAS", "ISR"], &rows);
            outln!();
            outln!("Under-replicated partitions: {}", under.len());
            for (t, p) in under {
                outln!("  {t}-{}", p.partition);
            }
        }
    }
    Ok(())
}
