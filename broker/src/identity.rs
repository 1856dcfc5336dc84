//! The data directory's identity: `<data_dir>/meta.properties` in Kafka's format (`version=1`,
//! `cluster.id`, `node.id`, `directory.id`), written once when the directory is first used and
//! checked on every start, so a broker never joins a cluster with another cluster's data, or
//! under another node's id.
//!
//! Where the cluster id comes from: the `cluster_id` config key (Kafka's `kafka-storage format
//! --cluster-id`), else the directory's `meta.properties`; a broker that bootstraps a cluster of
//! its own (`--dev`, or no `metadata.quorum_voters`) may make one up. A broker of a multi-node
//! cluster must be given one: brokers that each made up their own would never agree.

use std::path::Path;

use streambus_raft::ClusterId;

use crate::config::BrokerConfig;
use crate::error::{BrokerError, Result};

/// The file's name in the data directory, as Kafka names it.
pub const META_PROPERTIES: &str = "meta.properties";
/// Kafka's KRaft `meta.properties` version; version 0 was ZooKeeper's.
const VERSION: u32 = 1;
/// A `meta.properties` is a few lines; anything larger is not one.
const FILE_BYTES_MAX: u64 = 64 * 1024;

/// What `meta.properties` records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MetaProperties {
    pub cluster_id: ClusterId,
    pub node_id: i32,
    /// Kafka's `directory.id`: a random id of this directory, new each time it is formatted.
    pub directory_id: String,
}

impl MetaProperties {
    /// A new directory's identity, with a fresh directory id.
    pub fn new(cluster_id: ClusterId, node_id: i32) -> MetaProperties {
        MetaProperties {
            cluster_id,
            node_id,
            // Same format as a cluster id (Kafka's `Uuid`), so one generator serves both.
            directory_id: ClusterId::random().to_string(),
        }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "#\n# Written by streambus when this data directory was first used. It names the \
             cluster and node the data belongs to;\n# the broker refuses to start with another \
             cluster.id or node.id. Do not edit.\n#\nversion={VERSION}\ncluster.id={}\n\
             node.id={}\ndirectory.id={}\n",
            self.cluster_id, self.node_id, self.directory_id
        )
    }

    /// Reads Java properties text: `key=value` or `key:value` lines, `#` and `!` comments.
    /// Unknown keys are ignored, as Kafka does.
    pub fn parse(text: &str) -> std::result::Result<MetaProperties, String> {
        let mut version = None;
        let mut cluster_id = None;
        let mut node_id = None;
        let mut directory_id = String::new();
        for line in text.lines().map(str::trim) {
            if line.is_empty() || line.starts_with('#') || line.starts_with('!') {
                continue;
            }
            let Some((key, value)) = line.split_once(['=', ':']) else {
                return Err(format!("line {line:?} is not KEY=VALUE"));
            };
            let value = value.trim();
            match key.trim() {
                "version" => version = Some(value.to_owned()),
                "cluster.id" => cluster_id = Some(value.to_owned()),
                "node.id" => node_id = Some(value.to_owned()),
                "directory.id" => directory_id = value.to_owned(),
                _ => {}
            }
        }
        match version.as_deref() {
            Some("1") => {}
            Some(other) => return Err(format!("version {other} is not supported (only 1)")),
            None => return Err("no version".to_owned()),
        }
        let cluster_id = cluster_id.ok_or("no cluster.id")?;
        let cluster_id = ClusterId::parse(&cluster_id).map_err(|e| e.to_string())?;
        let node_id = node_id.ok_or("no node.id")?;
        let node_id = node_id
            .parse::<i32>()
            .ok()
            .filter(|id| *id >= 0)
            .ok_or_else(|| format!("node.id {node_id:?} is not a node id"))?;
        Ok(MetaProperties {
            cluster_id,
            node_id,
            directory_id,
        })
    }

    /// The identity recorded in `data_dir`, if the directory has one.
    pub fn read(data_dir: &Path) -> Result<Option<MetaProperties>> {
        let path = data_dir.join(META_PROPERTIES);
        let io_error = |source| BrokerError::MetaPropertiesIo {
            path: path.clone(),
            source,
        };
        let text = match std::fs::metadata(&path) {
            Ok(meta) if meta.len() > FILE_BYTES_MAX => {
                return Err(BrokerError::CorruptMetaProperties {
                    path,
                    reason: format!("{} bytes, more than a meta.properties holds", meta.len()),
                })
            }
            Ok(_) => std::fs::read_to_string(&path).map_err(io_error)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error(e)),
        };
        MetaProperties::parse(&text)
            .map(Some)
            .map_err(|reason| BrokerError::CorruptMetaProperties { path, reason })
    }

    /// Writes the file atomically and durably (temp file, fsync, rename, directory fsync), so a
    /// crash leaves either no file or a whole one.
    pub fn write(&self, data_dir: &Path) -> Result<()> {
        let path = data_dir.join(META_PROPERTIES);
        streambus_storage::checkpoint::write_atomically(&path, self.render().as_bytes())
            .map_err(BrokerError::Storage)
    }
}

/// How this broker may come by a cluster id when neither the config nor the directory has one.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Bootstrap {
    /// It bootstraps a cluster of its own (`--dev`, or no voters configured): a random id.
    SingleNode,
    /// It is one of several: the id must be given.
    MultiNode,
}

impl Bootstrap {
    pub fn of(config: &BrokerConfig, dev: bool) -> Bootstrap {
        // The same rule as `quorum::start`: no voters listed means a cluster of one.
        let no_voters = config
            .metadata
            .voters()
            .is_ok_and(|voters| voters.is_empty());
        if dev || no_voters {
            Bootstrap::SingleNode
        } else {
            Bootstrap::MultiNode
        }
    }
}

/// The identity this broker runs with: the data directory's, checked against the config, or a
/// new one written to a directory that has none yet (creating the directory).
pub fn resolve(config: &BrokerConfig, bootstrap: Bootstrap) -> Result<MetaProperties> {
    let data_dir = &config.data_dir;
    std::fs::create_dir_all(data_dir).map_err(|source| BrokerError::MetaPropertiesIo {
        path: data_dir.clone(),
        source,
    })?;
    // `BrokerConfig::validate` checked the value; parsing it again keeps the type honest.
    let configured = match config.cluster_id.as_str() {
        "" => None,
        text => Some(
            ClusterId::parse(text).map_err(|error| BrokerError::InvalidConfig {
                key: "cluster_id",
                reason: error.to_string(),
            })?,
        ),
    };
    let path = || data_dir.join(META_PROPERTIES);
    if let Some(found) = MetaProperties::read(data_dir)? {
        if let Some(configured) = configured.filter(|id| *id != found.cluster_id) {
            return Err(BrokerError::InconsistentClusterId {
                path: path(),
                found: found.cluster_id.to_string(),
                configured: configured.to_string(),
            });
        }
        if found.node_id != config.node_id {
            return Err(BrokerError::InconsistentNodeId {
                path: path(),
                found: found.node_id,
                configured: config.node_id,
            });
        }
        return Ok(found);
    }
    let cluster_id = match (configured, bootstrap) {
        (Some(id), _) => id,
        (None, Bootstrap::SingleNode) => ClusterId::random(),
        (None, Bootstrap::MultiNode) => {
            return Err(BrokerError::ClusterIdRequired {
                data_dir: data_dir.clone(),
            })
        }
    };
    let identity = MetaProperties::new(cluster_id, config.node_id);
    identity.write(data_dir)?;
    tracing::info!(
        cluster_id = %identity.cluster_id,
        node_id = identity.node_id,
        path = %path().display(),
        "data directory formatted"
    );
    Ok(identity)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path, node_id: i32, cluster_id: &str) -> BrokerConfig {
        BrokerConfig {
            node_id,
            data_dir: dir.to_owned(),
            cluster_id: cluster_id.to_owned(),
            ..BrokerConfig::default()
        }
    }

    #[test]
    fn meta_properties_round_trip_in_kafkas_format() {
        let written = MetaProperties::new(ClusterId::parse("MkU3OEVBNTcwNTJENDM2Qk").unwrap(), 3);
        let text = written.render();
        assert!(text.contains("\nversion=1\n"), "{text}");
        assert!(
            text.contains("\ncluster.id=MkU3OEVBNTcwNTJENDM2Qk\n"),
            "{text}"
        );
        assert!(text.contains("\nnode.id=3\n"), "{text}");
        assert_eq!(MetaProperties::parse(&text).unwrap(), written);

        // As Kafka writes it: a date comment, keys in any order, `:` separators allowed.
        let kafka = "#\n#Tue Mar 05 10:00:00 UTC 2024\nnode.id=1\n\
                     directory.id=J8aAPcfLQt2bqs1JT_rMgQ\nversion=1\ncluster.id : abc-DEF_1\n";
        let read = MetaProperties::parse(kafka).unwrap();
        assert_eq!(read.cluster_id.as_str(), "abc-DEF_1");
        assert_eq!(read.node_id, 1);
        assert_eq!(read.directory_id, "J8aAPcfLQt2bqs1JT_rMgQ");
    }

    #[test]
    fn malformed_meta_properties_are_refused_with_a_reason() {
        for (text, reason) in [
            ("cluster.id=a\nnode.id=1\n", "no version"),
            ("version=0\ncluster.id=a\nnode.id=1\n", "version 0"),
            ("version=1\nnode.id=1\n", "no cluster.id"),
            ("version=1\ncluster.id=a\n", "no node.id"),
            ("version=1\ncluster.id=a\nnode.id=-4\n", "not a node id"),
            (
                "version=1\ncluster.id=a b\nnode.id=1\n",
                "invalid cluster id",
            ),
            ("version=1\ngarbage\n", "not KEY=VALUE"),
        ] {
            let error = MetaProperties::parse(text).expect_err(text);
            assert!(error.contains(reason), "{text:?}: {error}");
        }
    }

    #[test]
    fn a_new_directory_is_formatted_with_the_configured_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("data");
        let identity = resolve(&config(&data, 2, "cluster-a"), Bootstrap::MultiNode).unwrap();
        assert_eq!(identity.cluster_id.as_str(), "cluster-a");
        assert_eq!(MetaProperties::read(&data).unwrap(), Some(identity.clone()));
        // Started again, with the id configured or not: the same identity.
        assert_eq!(
            resolve(&config(&data, 2, "cluster-a"), Bootstrap::MultiNode).unwrap(),
            identity
        );
        assert_eq!(
            resolve(&config(&data, 2, ""), Bootstrap::MultiNode).unwrap(),
            identity
        );
    }

    #[test]
    fn a_directory_of_another_cluster_or_node_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        resolve(&config(dir.path(), 2, "cluster-a"), Bootstrap::MultiNode).unwrap();
        let error = resolve(&config(dir.path(), 2, "cluster-b"), Bootstrap::MultiNode)
            .expect_err("another cluster");
        assert!(
            matches!(&error, BrokerError::InconsistentClusterId { found, configured, .. }
                if found == "cluster-a" && configured == "cluster-b"),
            "{error}"
        );
        let error = resolve(&config(dir.path(), 3, "cluster-a"), Bootstrap::SingleNode)
            .expect_err("another node");
        assert!(
            matches!(
                error,
                BrokerError::InconsistentNodeId {
                    found: 2,
                    configured: 3,
                    ..
                }
            ),
            "{error}"
        );
        // Refusing changed nothing on disk.
        let kept = MetaProperties::read(dir.path()).unwrap().unwrap();
        assert_eq!((kept.cluster_id.as_str(), kept.node_id), ("cluster-a", 2));
    }

    #[test]
    fn only_a_single_node_broker_makes_up_its_cluster_id() {
        let dir = tempfile::tempdir().unwrap();
        let error = resolve(&config(dir.path(), 1, ""), Bootstrap::MultiNode)
            .expect_err("several brokers must share a given id");
        assert!(matches!(error, BrokerError::ClusterIdRequired { .. }));
        assert_eq!(MetaProperties::read(dir.path()).unwrap(), None);

        let made_up = resolve(&config(dir.path(), 1, ""), Bootstrap::SingleNode).unwrap();
        assert_eq!(made_up.cluster_id.as_str().len(), 22);
        let again = resolve(&config(dir.path(), 1, ""), Bootstrap::SingleNode).unwrap();
        assert_eq!(again, made_up, "kept, not made up again");
    }

    #[test]
    fn the_file_is_replaced_atomically_without_a_leftover_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        // A temp file of an interrupted earlier write is simply replaced.
        std::fs::write(dir.path().join("meta.tmp"), "version=1\ncluster.id=half").unwrap();
        let identity = MetaProperties::new(ClusterId::parse("cluster-a").unwrap(), 1);
        identity.write(dir.path()).unwrap();
        let names: Vec<String> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        assert_eq!(names, vec![META_PROPERTIES.to_owned()]);
        assert_eq!(MetaProperties::read(dir.path()).unwrap(), Some(identity));
    }

    #[test]
    fn an_invalid_configured_cluster_id_names_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let error = resolve(&config(dir.path(), 1, "a b"), Bootstrap::MultiNode)
            .expect_err("not a cluster id");
        assert!(matches!(
            error,
            BrokerError::InvalidConfig {
                key: "cluster_id",
                ..
            }
        ));
    }
}
