//! `streambus.admin.v1.AdminService` over the `ops` layer and the metadata image: a translator
//! like the Kafka handlers, with no cluster logic of its own. Writes go through `ops` (and so
//! through the controller, wherever it runs) and answer once this broker's image shows them.

use std::collections::BTreeMap;
use std::sync::Arc;

use streambus_proto::admin::v1 as pb;
use streambus_proto::admin::v1::admin_service_server::AdminService;
use streambus_raft::command::TopicId;
use streambus_raft::image::{PartitionRecord, TopicRecord};
use streambus_raft::MetadataImage;
use tonic::{Request, Response, Status};

use super::status::{invalid_request, item_error, ops_status, status_with};
use crate::context::BrokerContext;
use crate::coordinator::topic::is_internal;
use crate::ops::configs::{ConfigAlteration, ConfigEdit, ConfigOp, ConfigResource};
use crate::ops::reassignments::{PartitionMove, ReplicationFactorChange};
use crate::ops::topics::{Layout, NewPartitions, NewTopic};
use crate::ops::{Mode, OpsError};
use crate::partition::Role;
use kafka_protocol::error::ResponseError;
use streambus_raft::command::ElectionType;

/// Items (partitions, moves, topics) one request may name: a metadata command built from a
/// request must stay far below what the raft transport carries.
pub const ITEMS_MAX: usize = 10_000;
/// Leaderless partitions an unclean-election warning names one by one.
const RISKS_SHOWN_MAX: usize = 20;

/// Refuses a request listing more than [`ITEMS_MAX`] `what`.
fn capped(count: usize, what: &str) -> Result<(), Status> {
    if count > ITEMS_MAX {
        return Err(invalid_request(&format!(
            "{count} {what} in one request; at most {ITEMS_MAX}"
        )));
    }
    Ok(())
}

/// The admin service of one broker.
#[derive(Debug)]
pub struct AdminApi {
    ctx: Arc<BrokerContext>,
}

impl AdminApi {
    pub fn new(ctx: Arc<BrokerContext>) -> AdminApi {
        AdminApi { ctx }
    }

    /// `name` as this broker's image describes it.
    fn described(&self, name: &str) -> Result<pb::TopicDescription, Status> {
        let image = self.ctx.image();
        let topic = image
            .topic_by_name(name)
            .ok_or_else(|| ops_status(&OpsError::UnknownTopic(name.to_owned())))?;
        Ok(topic_description(topic))
    }
}

fn topic_id_bytes(id: &TopicId) -> Vec<u8> {
    id.0.to_vec()
}

fn partition_description(index: usize, partition: &PartitionRecord) -> pb::PartitionDescription {
    pb::PartitionDescription {
        partition: i32::try_from(index).unwrap_or(i32::MAX),
        leader: partition.leader,
        leader_epoch: partition.leader_epoch,
        replicas: partition.replicas.clone(),
        isr: partition.isr.clone(),
    }
}

fn topic_description(topic: &TopicRecord) -> pb::TopicDescription {
    pb::TopicDescription {
        name: topic.name.clone(),
        topic_id: topic_id_bytes(&topic.topic_id),
        internal: is_internal(&topic.name),
        partitions: topic
            .partitions
            .iter()
            .enumerate()
            .map(|(i, p)| partition_description(i, p))
            .collect(),
        configs: topic.configs.clone().into_iter().collect(),
    }
}

/// A topic as `created` describes it (a plan, or a creation this broker does not show yet).
fn planned_topic(
    name: &str,
    created: crate::ops::topics::CreatedTopic,
    configs: &BTreeMap<String, String>,
) -> pb::TopicDescription {
    pb::TopicDescription {
        name: name.to_owned(),
        topic_id: created
            .topic_id
            .as_ref()
            .map(topic_id_bytes)
            .unwrap_or_default(),
        internal: is_internal(name),
        partitions: created
            .assignments
            .unwrap_or_default()
            .into_iter()
            .enumerate()
            .map(|(i, replicas)| pb::PartitionDescription {
                partition: i32::try_from(i).unwrap_or(i32::MAX),
                leader: replicas.first().copied(),
                leader_epoch: 0,
                isr: replicas.clone(),
                replicas,
            })
            .collect(),
        configs: configs.clone().into_iter().collect(),
    }
}

/// A count from the wire that must fit the domain's type.
fn narrow<T: TryFrom<i32>>(value: i32, what: &str) -> Result<T, Status> {
    T::try_from(value).map_err(|_| invalid_request(&format!("{what} {value} is out of range")))
}

/// Whether a partition of `topic` matches `filter` (`min_isr`: the topic's effective
/// `min.insync.replicas`).
fn matches(filter: pb::PartitionFilter, partition: &PartitionRecord, min_isr: usize) -> bool {
    match filter {
        pb::PartitionFilter::All => true,
        pb::PartitionFilter::UnderReplicated => partition.isr.len() < partition.replicas.len(),
        pb::PartitionFilter::UnderMinIsr => {
            partition.isr.len() < min_isr.min(partition.replicas.len().max(1))
        }
        pb::PartitionFilter::Offline => partition.leader.is_none(),
    }
}

/// The brokers of `image` as the API shows them.
fn brokers(image: &MetadataImage) -> Vec<pb::Broker> {
    image
        .brokers()
        .map(|broker| {
            let kafka = broker
                .endpoints
                .iter()
                .find(|e| e.name == crate::quorum::KAFKA_ENDPOINT);
            let state = if broker.fenced {
                pb::BrokerState::Fenced
            } else if broker.log_dir_offline {
                pb::BrokerState::LogDirOffline
            } else {
                pb::BrokerState::Running
            };
            pb::Broker {
                id: broker.broker_id,
                host: kafka.map(|e| e.host.clone()).unwrap_or_default(),
                port: kafka.map_or(0, |e| u32::from(e.port)),
                rack: broker.rack.clone(),
                state: state.into(),
                endpoints: broker
                    .endpoints
                    .iter()
                    .map(|e| pb::Endpoint {
                        name: e.name.clone(),
                        host: e.host.clone(),
                        port: u32::from(e.port),
                    })
                    .collect(),
                broker_epoch: broker.broker_epoch,
            }
        })
        .collect()
}

#[tonic::async_trait]
impl AdminService for AdminApi {
    async fn describe_cluster(
        &self,
        _: Request<pb::DescribeClusterRequest>,
    ) -> Result<Response<pb::DescribeClusterResponse>, Status> {
        let ctx = &self.ctx;
        let image = ctx.image();
        let metrics = ctx.node.metrics().borrow().clone();
        let membership = metrics.membership_config.membership();
        let voters: Vec<u64> = membership.voter_ids().collect();
        let learners: Vec<u64> = membership.learner_ids().collect();
        let last = metrics.last_log_index;
        // Only the leader (the controller) tracks what each member has.
        let replication = metrics.replication.clone().unwrap_or_default();
        let member = |id: u64, voter: bool| {
            let matched = replication
                .get(&id)
                .and_then(|log_id| log_id.map(|l| l.index));
            pb::QuorumMember {
                id: i32::try_from(id).unwrap_or(i32::MAX),
                voter,
                matched_index: matched,
                lag: matched.zip(last).map(|(m, l)| l.saturating_sub(m)),
            }
        };
        let quorum = voters
            .iter()
            .map(|id| member(*id, true))
            .chain(learners.iter().map(|id| member(*id, false)))
            .collect();
        let level = i32::from(ctx.config.transactions.transaction_version);
        let features = (level > 0)
            .then(|| pb::Feature {
                name: "transaction.version".to_owned(),
                finalized_level: level,
            })
            .into_iter()
            .collect();
        let controller = ctx.controller_id();
        Ok(Response::new(pb::DescribeClusterResponse {
            cluster_id: ctx.cluster_id.to_string(),
            controller_id: (controller >= 0).then_some(controller),
            brokers: brokers(&image),
            metadata_offset: image.metadata_offset(),
            quorum,
            features,
            answered_by: ctx.broker_id(),
        }))
    }

    async fn list_topics(
        &self,
        request: Request<pb::ListTopicsRequest>,
    ) -> Result<Response<pb::ListTopicsResponse>, Status> {
        let include_internal = request.into_inner().include_internal;
        let image = self.ctx.image();
        let topics = image
            .topics()
            .filter(|topic| include_internal || !is_internal(&topic.name))
            .map(|topic| pb::TopicListing {
                name: topic.name.clone(),
                topic_id: topic_id_bytes(&topic.topic_id),
                partition_count: i32::try_from(topic.partitions.len()).unwrap_or(i32::MAX),
                internal: is_internal(&topic.name),
            })
            .collect();
        Ok(Response::new(pb::ListTopicsResponse { topics }))
    }

    async fn describe_topic(
        &self,
        request: Request<pb::DescribeTopicRequest>,
    ) -> Result<Response<pb::DescribeTopicResponse>, Status> {
        let topic = self.described(&request.into_inner().name)?;
        Ok(Response::new(pb::DescribeTopicResponse {
            topic: Some(topic),
        }))
    }

    async fn create_topic(
        &self,
        request: Request<pb::CreateTopicRequest>,
    ) -> Result<Response<pb::CreateTopicResponse>, Status> {
        let request = request.into_inner();
        let replication_factor = request
            .replication_factor
            .map(|rf| narrow::<i16>(rf, "replication factor"))
            .transpose()?;
        let configs: BTreeMap<String, String> = request.configs.into_iter().collect();
        let topic = NewTopic {
            name: request.name.clone(),
            layout: Layout::Auto {
                partitions: request.partitions,
                replication_factor,
            },
            configs: configs
                .iter()
                .map(|(k, v)| (k.clone(), Some(v.clone())))
                .collect(),
        };
        let mode = Mode::from_validate_only(request.validate_only);
        let created = crate::ops::topics::create_topic(&self.ctx, topic, mode)
            .await
            .map_err(|e| ops_status(&e))?;
        let topic = match mode {
            // Committed; if this broker's image is not there yet, what the controller answered.
            Mode::Apply => self
                .described(&request.name)
                .unwrap_or_else(|_| planned_topic(&request.name, created, &configs)),
            // Nothing exists: the description is the plan.
            Mode::ValidateOnly => planned_topic(&request.name, created, &configs),
        };
        Ok(Response::new(pb::CreateTopicResponse {
            topic: Some(topic),
        }))
    }

    async fn delete_topic(
        &self,
        request: Request<pb::DeleteTopicRequest>,
    ) -> Result<Response<pb::DeleteTopicResponse>, Status> {
        let name = request.into_inner().name;
        crate::ops::topics::delete_topic(&self.ctx, &name)
            .await
            .map_err(|e| ops_status(&e))?;
        Ok(Response::new(pb::DeleteTopicResponse {}))
    }

    async fn alter_topic_config(
        &self,
        request: Request<pb::AlterTopicConfigRequest>,
    ) -> Result<Response<pb::AlterTopicConfigResponse>, Status> {
        let request = request.into_inner();
        let mut edits: Vec<ConfigEdit> = request
            .set
            .into_iter()
            .map(|(key, value)| ConfigEdit {
                key,
                op: ConfigOp::Set,
                value: Some(value),
            })
            .collect();
        edits.sort_by(|a, b| a.key.cmp(&b.key));
        edits.extend(request.delete.into_iter().map(|key| ConfigEdit {
            key,
            op: ConfigOp::Delete,
            value: None,
        }));
        let resource = ConfigResource::Topic(request.name.clone());
        crate::ops::configs::alter_configs(
            &self.ctx,
            &resource,
            &ConfigAlteration::Edit(edits),
            Mode::from_validate_only(request.validate_only),
        )
        .await
        .map_err(|e| ops_status(&e))?;
        let configs = self.described(&request.name)?.configs;
        Ok(Response::new(pb::AlterTopicConfigResponse { configs }))
    }

    async fn add_partitions(
        &self,
        request: Request<pb::AddPartitionsRequest>,
    ) -> Result<Response<pb::AddPartitionsResponse>, Status> {
        let request = request.into_inner();
        let partitions = NewPartitions {
            topic: request.name.clone(),
            total_count: request.total_count,
            assignments: None,
        };
        crate::ops::topics::create_partitions(
            &self.ctx,
            partitions,
            Mode::from_validate_only(request.validate_only),
        )
        .await
        .map_err(|e| ops_status(&e))?;
        let topic = self.described(&request.name)?;
        Ok(Response::new(pb::AddPartitionsResponse {
            topic: Some(topic),
        }))
    }

    async fn list_partitions(
        &self,
        request: Request<pb::ListPartitionsRequest>,
    ) -> Result<Response<pb::ListPartitionsResponse>, Status> {
        let request = request.into_inner();
        capped(request.topics.len(), "topics")?;
        let filter = pb::PartitionFilter::try_from(request.filter)
            .map_err(|_| invalid_request(&format!("unknown filter {}", request.filter)))?;
        let image = self.ctx.image();
        let mut topics: Vec<&TopicRecord> = Vec::new();
        if request.topics.is_empty() {
            topics.extend(image.topics());
        } else {
            for name in &request.topics {
                topics.push(
                    image
                        .topic_by_name(name)
                        .ok_or_else(|| ops_status(&OpsError::UnknownTopic(name.clone())))?,
                );
            }
        }
        let mut partitions = Vec::new();
        for topic in topics {
            let min_isr =
                crate::topic_config::resolve(&self.ctx.config, &topic.configs).min_insync_replicas;
            let min_isr = usize::try_from(min_isr).unwrap_or(usize::MAX);
            for (index, partition) in topic.partitions.iter().enumerate() {
                if matches(filter, partition, min_isr) {
                    partitions.push(pb::TopicPartitionDescription {
                        topic: topic.name.clone(),
                        partition: Some(partition_description(index, partition)),
                    });
                }
            }
        }
        Ok(Response::new(pb::ListPartitionsResponse { partitions }))
    }

    async fn alter_reassignments(
        &self,
        request: Request<pb::AlterReassignmentsRequest>,
    ) -> Result<Response<pb::AlterReassignmentsResponse>, Status> {
        let request = request.into_inner();
        capped(request.moves.len(), "moves")?;
        let moves: Vec<PartitionMove> = request
            .moves
            .iter()
            .map(|m| PartitionMove {
                topic: m.topic.clone(),
                partition: m.partition,
                target: (!m.target.is_empty()).then(|| m.target.clone()),
            })
            .collect();
        let change = if request.allow_replication_factor_change {
            ReplicationFactorChange::Allowed
        } else {
            ReplicationFactorChange::Refused
        };
        let outcomes =
            crate::ops::reassignments::alter_reassignments(&self.ctx, moves, change).await;
        let results = request
            .moves
            .into_iter()
            .zip(outcomes)
            .map(|(m, outcome)| pb::PartitionOutcome {
                topic: m.topic,
                partition: m.partition,
                error: outcome.err().map(|e| item_error(&e)),
            })
            .collect();
        Ok(Response::new(pb::AlterReassignmentsResponse { results }))
    }

    async fn list_reassignments(
        &self,
        request: Request<pb::ListReassignmentsRequest>,
    ) -> Result<Response<pb::ListReassignmentsResponse>, Status> {
        let partitions = request.into_inner().partitions;
        capped(partitions.len(), "partitions")?;
        let asked = !partitions.is_empty();
        // A negative index names no partition: it matches nothing (not "every partition").
        let wanted: Vec<(String, u32)> = partitions
            .into_iter()
            .filter_map(|p| Some((p.topic, u32::try_from(p.partition).ok()?)))
            .collect();
        let filter = asked.then_some(wanted.as_slice());
        let reassignments = crate::ops::reassignments::list_reassignments(&self.ctx, filter)
            .into_iter()
            .flat_map(|topic| {
                let name = topic.topic;
                topic.partitions.into_iter().map(move |p| pb::Reassignment {
                    topic: name.clone(),
                    partition: i32::try_from(p.partition).unwrap_or(i32::MAX),
                    replicas: p.replicas,
                    adding: p.adding,
                    removing: p.removing,
                })
            })
            .collect();
        Ok(Response::new(pb::ListReassignmentsResponse {
            reassignments,
        }))
    }

    async fn elect_leaders(
        &self,
        request: Request<pb::ElectLeadersRequest>,
    ) -> Result<Response<pb::ElectLeadersResponse>, Status> {
        let request = request.into_inner();
        capped(request.partitions.len(), "partitions")?;
        let election = match pb::ElectionType::try_from(request.r#type) {
            Ok(pb::ElectionType::Preferred) => ElectionType::Preferred,
            Ok(pb::ElectionType::Unclean) => ElectionType::Unclean,
            Err(_) => {
                return Err(invalid_request(&format!(
                    "unknown election type {}",
                    request.r#type
                )))
            }
        };
        let partitions: Option<Vec<(String, i32)>> = (!request.partitions.is_empty()).then(|| {
            request
                .partitions
                .iter()
                .map(|p| (p.topic.clone(), p.partition))
                .collect()
        });
        if election == ElectionType::Unclean && !request.confirm_data_loss {
            let report = unclean_risks(&self.ctx.image(), partitions.as_deref());
            return Err(status_with(
                tonic::Code::FailedPrecondition,
                ResponseError::PolicyViolation,
                &format!(
                    "an unclean election may lose acknowledged records; nothing was changed. \
                     Call again with confirm_data_loss to accept: {report}"
                ),
            ));
        }
        let outcomes = crate::ops::elections::elect_leaders(&self.ctx, election, partitions)
            .await
            .map_err(|e| ops_status(&e))?;
        let results = outcomes
            .into_iter()
            .map(|election| match election.outcome {
                Ok(leader) => pb::ElectionOutcome {
                    topic: election.topic,
                    partition: election.partition,
                    leader: Some(leader.leader),
                    leader_epoch: leader.leader_epoch,
                    loss_report: leader.loss_report(),
                    last_in_sync: leader.last_in_sync.unwrap_or_default(),
                    error: None,
                },
                Err(error) => pb::ElectionOutcome {
                    topic: election.topic,
                    partition: election.partition,
                    leader: None,
                    leader_epoch: -1,
                    last_in_sync: Vec::new(),
                    loss_report: None,
                    error: Some(item_error(&error)),
                },
            })
            .collect();
        Ok(Response::new(pb::ElectLeadersResponse { results }))
    }

    async fn describe_log_dirs(
        &self,
        _: Request<pb::DescribeLogDirsRequest>,
    ) -> Result<Response<pb::DescribeLogDirsResponse>, Status> {
        let ctx = self.ctx.clone();
        let response = crate::blocking::spawn(move || log_dirs(&ctx))
            .await
            .map_err(|_| Status::internal("describing the log directory failed"))?;
        Ok(Response::new(response))
    }

    async fn list_groups(
        &self,
        request: Request<pb::ListGroupsRequest>,
    ) -> Result<Response<pb::ListGroupsResponse>, Status> {
        let request = request.into_inner();
        capped(request.states.len(), "states")?;
        super::coordinators::list_groups(&self.ctx, request)
            .await
            .map(Response::new)
    }

    async fn describe_group(
        &self,
        request: Request<pb::DescribeGroupRequest>,
    ) -> Result<Response<pb::DescribeGroupResponse>, Status> {
        let group_id = request.into_inner().group_id;
        if group_id.is_empty() {
            return Err(invalid_request("group_id is empty"));
        }
        super::coordinators::describe_group(&self.ctx, &group_id)
            .await
            .map(Response::new)
    }

    async fn list_transactions(
        &self,
        request: Request<pb::ListTransactionsRequest>,
    ) -> Result<Response<pb::ListTransactionsResponse>, Status> {
        let request = request.into_inner();
        capped(request.states.len(), "states")?;
        super::coordinators::list_transactions(&self.ctx, request)
            .await
            .map(Response::new)
    }

    async fn describe_transaction(
        &self,
        request: Request<pb::DescribeTransactionRequest>,
    ) -> Result<Response<pb::DescribeTransactionResponse>, Status> {
        let id = request.into_inner().transactional_id;
        if id.is_empty() {
            return Err(invalid_request("transactional_id is empty"));
        }
        super::coordinators::describe_transaction(&self.ctx, &id)
            .await
            .map(Response::new)
    }

    async fn add_voter(
        &self,
        request: Request<pb::AddVoterRequest>,
    ) -> Result<Response<pb::AddVoterResponse>, Status> {
        let request = request.into_inner();
        let node_id = u64::try_from(request.node_id)
            .map_err(|_| invalid_request("node_id must not be negative"))?;
        // A voter must be a registered broker: its raft listener is where it registered it.
        let image = self.ctx.image();
        let registered = image
            .broker(request.node_id)
            .and_then(|b| {
                b.endpoints
                    .iter()
                    .find(|e| e.name == crate::endpoints::RAFT_ENDPOINT)
            })
            .map(|e| format!("{}:{}", e.host, e.port))
            .ok_or_else(|| {
                status_with(
                    tonic::Code::NotFound,
                    ResponseError::BrokerNotAvailable,
                    &format!("broker {} is not registered", request.node_id),
                )
            })?;
        let addr = if request.raft_address.is_empty() {
            registered
        } else if request.raft_address == registered {
            request.raft_address
        } else {
            return Err(invalid_request(&format!(
                "raft_address {} is not where broker {} registered its raft listener ({registered})",
                request.raft_address, request.node_id
            )));
        };
        self.ctx
            .node
            .add_voter(node_id, addr)
            .await
            .map_err(|e| ops_status(&OpsError::from(e)))?;
        Ok(Response::new(pb::AddVoterResponse {}))
    }

    async fn remove_voter(
        &self,
        request: Request<pb::RemoveVoterRequest>,
    ) -> Result<Response<pb::RemoveVoterResponse>, Status> {
        let node_id = u64::try_from(request.into_inner().node_id)
            .map_err(|_| invalid_request("node_id must not be negative"))?;
        let voters: Vec<u64> = self
            .ctx
            .node
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect();
        if !voters.contains(&node_id) {
            return Err(status_with(
                tonic::Code::FailedPrecondition,
                ResponseError::InvalidRequest,
                &format!("node {node_id} is not a voter (voters: {voters:?})"),
            ));
        }
        if voters.len() == 1 {
            return Err(status_with(
                tonic::Code::FailedPrecondition,
                ResponseError::InvalidRequest,
                "the last voter cannot be removed",
            ));
        }
        self.ctx
            .node
            .remove_voter(node_id)
            .await
            .map_err(|e| ops_status(&OpsError::from(e)))?;
        Ok(Response::new(pb::RemoveVoterResponse {}))
    }
}

/// For each leaderless partition an unclean election would touch: who may hold committed
/// records a leader from outside them lacks (its ISR, eligible leader replicas and last known
/// ones). At most [`RISKS_SHOWN_MAX`] are named, then a count.
fn unclean_risks(image: &MetadataImage, partitions: Option<&[(String, i32)]>) -> String {
    let mut risks = Vec::new();
    let mut more = 0usize;
    for topic in image.topics() {
        for (index, partition) in topic.partitions.iter().enumerate() {
            let index = i32::try_from(index).unwrap_or(i32::MAX);
            let wanted = partitions
                .is_none_or(|list| list.iter().any(|(t, p)| *t == topic.name && *p == index));
            if !wanted || partition.leader.is_some() {
                continue;
            }
            if risks.len() == RISKS_SHOWN_MAX {
                more += 1;
                continue;
            }
            let mut holders: Vec<i32> = partition
                .isr
                .iter()
                .chain(&partition.elr)
                .chain(&partition.last_known_elr)
                .copied()
                .collect();
            holders.sort_unstable();
            holders.dedup();
            risks.push(format!(
                "{}-{index}: records that only brokers {holders:?} held may be lost",
                topic.name
            ));
        }
    }
    if risks.is_empty() {
        return "no partition asked for is leaderless".to_owned();
    }
    if more > 0 {
        risks.push(format!("and {more} more leaderless partitions"));
    }
    risks.join("; ")
}

/// This broker's log directory (blocking: reads each log's size).
fn log_dirs(ctx: &BrokerContext) -> pb::DescribeLogDirsResponse {
    let me = ctx.broker_id();
    let mut hosted = ctx.partitions.all();
    hosted.sort_by(|a, b| (&a.topic, a.index).cmp(&(&b.topic, b.index)));
    let partitions = hosted
        .iter()
        .map(|partition| pb::LogDirPartition {
            topic: partition.topic.clone(),
            partition: i32::try_from(partition.index).unwrap_or(i32::MAX),
            size_bytes: partition.log().size_bytes(),
            log_start_offset: partition.log_start_offset(),
            log_end_offset: partition.log_end_offset(),
            leader: partition.state().role(me) == Role::Leader,
        })
        .collect();
    let path = ctx.partitions.log_dir_path();
    let (free_bytes, capacity_bytes) = rustix::fs::statvfs(path).map_or((0, 0), |stat| {
        (
            stat.f_bavail.saturating_mul(stat.f_frsize),
            stat.f_blocks.saturating_mul(stat.f_frsize),
        )
    });
    pb::DescribeLogDirsResponse {
        broker_id: me,
        path: path.display().to_string(),
        online: ctx.partitions.log_dir_online(),
        free_bytes,
        capacity_bytes,
        partitions,
    }
}
