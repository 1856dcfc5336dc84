//! The controller: the part of a metadata node that acts while it is the raft leader. It
//! proposes writes (its own and those forwarded by other brokers), keeps broker sessions alive from
//! heartbeats held in memory, fences brokers whose session lapses, and adds registered brokers
//! that are not raft members yet as learners so they receive the committed log.
//!
//! Sessions are deliberately not written to the log (Kafka's KRaft does the same): a heartbeat
//! every few seconds per broker would dominate the log. A new controller therefore gives every
//! broker a full session timeout from the moment it took over.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use openraft::error::{ClientWriteError, RaftError as OpenRaftError};
use openraft::{BasicNode, ChangeMembers, Raft, ServerState};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::command::{
    BrokerId, FenceBroker, IncarnationId, MetadataCommand, MetadataResponse, Rejection,
};
use crate::image::MetadataImage;
use crate::types::{NodeId, TypeConfig};

/// The name of the endpoint a broker registers for its raft listener; the controller uses it to
/// add the broker as a learner.
pub const RAFT_ENDPOINT: &str = "raft";

/// What a broker asks of the controller; serialized into `ControllerService.Write`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// Propose a metadata command.
    Command(MetadataCommand),
    /// Make `node_id` (reachable at `addr`) a voter: it joins as a learner, catches up, and is
    /// then promoted through joint consensus.
    AddVoter { node_id: NodeId, addr: String },
    /// Demote a voter to learner through joint consensus.
    RemoveVoter { node_id: NodeId },
}

/// The controller's answer to a [`ControllerRequest`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerReply {
    /// Committed and applied; the state machine's answer.
    Applied(MetadataResponse),
    /// The membership change is committed.
    MembershipChanged,
    /// This node is not the controller. Nothing was proposed, so the request may be retried at
    /// `leader` (when known).
    NotController { leader: Option<(NodeId, String)> },
    /// The request was proposed but its outcome is unknown or it failed for a reason other than
    /// leadership; retrying a non-idempotent command could apply it twice.
    Failed(String),
}

/// A broker's heartbeat; serialized into `ControllerService.Heartbeat`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Heartbeat {
    pub broker_id: BrokerId,
    pub incarnation_id: IncarnationId,
    pub broker_epoch: i64,
}

/// The controller's answer to a [`Heartbeat`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum HeartbeatReply {
    /// The session is extended.
    Alive,
    /// The registration the heartbeat names is gone (fenced, replaced or unknown): the broker
    /// must register again with a new incarnation.
    Reregister,
    /// Not the controller; heartbeat `leader` instead.
    NotController { leader: Option<(NodeId, String)> },
}

#[derive(Debug, Clone, Copy)]
struct Session {
    incarnation_id: IncarnationId,
    broker_epoch: i64,
    last_seen: Instant,
}

/// Controller state shared by the RPC service and the session-expiry task.
pub(crate) struct Controller {
    node_id: NodeId,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    session_timeout: Duration,
    /// Broker sessions seen by this node while controller, and the term they belong to: a
    /// new term starts from an empty table.
    sessions: Mutex<SessionTable>,
}

#[derive(Debug, Default)]
struct SessionTable {
    term: u64,
    leader_since: Option<Instant>,
    sessions: HashMap<BrokerId, Session>,
}

impl std::fmt::Debug for Controller {
    // `Raft` has no `Debug`; the node id identifies the controller in logs.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Controller")
            .field("node_id", &self.node_id)
            .finish_non_exhaustive()
    }
}

impl Controller {
    pub(crate) fn new(
        node_id: NodeId,
        raft: Raft<TypeConfig>,
        image: watch::Receiver<Arc<MetadataImage>>,
        session_timeout: Duration,
    ) -> Controller {
        Controller {
            node_id,
            raft,
            image,
            session_timeout,
            sessions: Mutex::new(SessionTable::default()),
        }
    }

    /// The current leader and its raft address, if known.
    pub(crate) fn leader(&self) -> Option<(NodeId, String)> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let leader = metrics.current_leader?;
        let node = metrics.membership_config.membership().get_node(&leader)?;
        Some((leader, node.addr.clone()))
    }

    /// The term this node leads in, once it has applied an entry of that term: before that, its
    /// image may miss entries committed by the previous leader, and answering heartbeats or
    /// registrations from it would wrongly send live brokers to re-register.
    fn leading_term(&self) -> Option<u64> {
        let metrics = self.raft.metrics();
        let metrics = metrics.borrow();
        let caught_up = metrics
            .last_applied
            .is_some_and(|applied| applied.leader_id.term == metrics.current_term);
        (metrics.state == ServerState::Leader
            && metrics.current_leader == Some(self.node_id)
            && caught_up)
            .then_some(metrics.current_term)
    }

    /// The session table, reset first when this node leads a term it has no table for yet.
    fn sessions_for_term(&self, term: u64) -> std::sync::MutexGuard<'_, SessionTable> {
        let mut table = self.sessions.lock().unwrap_or_else(|e| e.into_inner());
        if table.term != term || table.leader_since.is_none() {
            table.term = term;
            table.leader_since = Some(Instant::now());
            table.sessions.clear();
        }
        table
    }

    pub(crate) async fn handle(&self, request: ControllerRequest) -> ControllerReply {
        let Some(term) = self.leading_term() else {
            return ControllerReply::NotController {
                leader: self.leader(),
            };
        };
        match request {
            ControllerRequest::Command(command) => self.propose(term, command).await,
            ControllerRequest::AddVoter { node_id, addr } => self.add_voter(node_id, addr).await,
            ControllerRequest::RemoveVoter { node_id } => self.remove_voter(node_id).await,
        }
    }

    async fn propose(&self, term: u64, command: MetadataCommand) -> ControllerReply {
        if let MetadataCommand::RegisterBroker(register) = &command {
            if let Some(rejection) =
                self.duplicate_registration(term, register.broker_id, register.incarnation_id)
            {
                return ControllerReply::Applied(MetadataResponse::Rejected(rejection));
            }
        }
        let response = match self.raft.client_write(command.clone()).await {
            Ok(written) => written.data,
            Err(error) => return self.write_failed(error),
        };
        if let (
            MetadataCommand::RegisterBroker(register),
            MetadataResponse::BrokerRegistered { broker_epoch },
        ) = (&command, &response)
        {
            // Leadership may have moved during the write; a new term starts its own table.
            if let Some(term) = self.leading_term() {
                self.sessions_for_term(term).sessions.insert(
                    register.broker_id,
                    Session {
                        incarnation_id: register.incarnation_id,
                        broker_epoch: *broker_epoch,
                        last_seen: Instant::now(),
                    },
                );
            }
        }
        ControllerReply::Applied(response)
    }

    /// Kafka refuses a registration for a broker id whose current incarnation still holds a live
    /// session: two processes configured with the same id must not take turns owning it.
    fn duplicate_registration(
        &self,
        term: u64,
        broker_id: BrokerId,
        incarnation_id: IncarnationId,
    ) -> Option<Rejection> {
        let image = self.image.borrow().clone();
        let record = image.broker(broker_id)?;
        if record.fenced || record.incarnation_id == incarnation_id {
            return None;
        }
        let table = self.sessions_for_term(term);
        // Like session expiry: a broker this controller has not heard from yet counts as alive
        // for one session timeout after the controller took over.
        let last_seen = match table.sessions.get(&broker_id) {
            Some(session) if session.incarnation_id == record.incarnation_id => session.last_seen,
            Some(_) => return None,
            None => table.leader_since?,
        };
        (last_seen.elapsed() < self.session_timeout)
            .then_some(Rejection::DuplicateBrokerRegistration { broker_id })
    }

    fn write_failed(
        &self,
        error: OpenRaftError<NodeId, ClientWriteError<NodeId, BasicNode>>,
    ) -> ControllerReply {
        match error {
            OpenRaftError::APIError(ClientWriteError::ForwardToLeader(forward)) => {
                ControllerReply::NotController {
                    leader: forward
                        .leader_id
                        .zip(forward.leader_node.map(|node| node.addr)),
                }
            }
            other => ControllerReply::Failed(other.to_string()),
        }
    }

    /// Adds one registered, unfenced broker that is not yet in the raft membership as a
    /// learner, so it receives the committed log. Called from the periodic task, one change at a
    /// time, because openraft allows a single membership change in flight; a change that fails
    /// (e.g. one already in progress) is simply tried again at the next tick.
    async fn reconcile_learners(&self) {
        let image = self.image.borrow().clone();
        let members: BTreeSet<NodeId> = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            metrics
                .membership_config
                .membership()
                .nodes()
                .map(|(id, _)| *id)
                .collect()
        };
        let missing = image.unfenced_brokers().find_map(|record| {
            let node_id = NodeId::try_from(record.broker_id).ok()?;
            let endpoint = record.endpoints.iter().find(|e| e.name == RAFT_ENDPOINT)?;
            (!members.contains(&node_id))
                .then(|| (node_id, host_port(&endpoint.host, endpoint.port)))
        });
        let Some((node_id, addr)) = missing else {
            return;
        };
        match self
            .raft
            .add_learner(node_id, BasicNode { addr }, false)
            .await
        {
            Ok(_) => tracing::info!(node_id, "added broker as raft learner"),
            Err(error) => tracing::warn!(node_id, %error, "could not add broker as raft learner"),
        }
    }

    async fn add_voter(&self, node_id: NodeId, addr: String) -> ControllerReply {
        // Blocking: the learner must have caught up before it can count towards a quorum.
        if let Err(error) = self
            .raft
            .add_learner(node_id, BasicNode { addr }, true)
            .await
        {
            return self.write_failed(error);
        }
        let change = ChangeMembers::AddVoterIds(BTreeSet::from([node_id]));
        match self.raft.change_membership(change, false).await {
            Ok(_) => ControllerReply::MembershipChanged,
            Err(error) => self.write_failed(error),
        }
    }

    async fn remove_voter(&self, node_id: NodeId) -> ControllerReply {
        let change = ChangeMembers::RemoveVoters(BTreeSet::from([node_id]));
        match self.raft.change_membership(change, true).await {
            Ok(_) => ControllerReply::MembershipChanged,
            Err(error) => self.write_failed(error),
        }
    }

    pub(crate) fn heartbeat(&self, heartbeat: &Heartbeat) -> HeartbeatReply {
        let Some(term) = self.leading_term() else {
            return HeartbeatReply::NotController {
                leader: self.leader(),
            };
        };
        let image = self.image.borrow().clone();
        let current = image.broker(heartbeat.broker_id).filter(|record| {
            !record.fenced
                && record.incarnation_id == heartbeat.incarnation_id
                && record.broker_epoch == heartbeat.broker_epoch
        });
        if current.is_none() {
            return HeartbeatReply::Reregister;
        }
        self.sessions_for_term(term).sessions.insert(
            heartbeat.broker_id,
            Session {
                incarnation_id: heartbeat.incarnation_id,
                broker_epoch: heartbeat.broker_epoch,
                last_seen: Instant::now(),
            },
        );
        HeartbeatReply::Alive
    }

    /// The brokers whose session has lapsed, with the epoch to fence. Empty unless leading.
    fn expired_brokers(&self) -> Vec<FenceBroker> {
        let Some(term) = self.leading_term() else {
            return Vec::new();
        };
        let image = self.image.borrow().clone();
        let table = self.sessions_for_term(term);
        let leader_since = table.leader_since.unwrap_or_else(Instant::now);
        let mut expired = Vec::new();
        for record in image.brokers().filter(|record| !record.fenced) {
            let last_seen = table
                .sessions
                .get(&record.broker_id)
                .filter(|s| s.broker_epoch == record.broker_epoch)
                .map_or(leader_since, |s| s.last_seen.max(leader_since));
            if last_seen.elapsed() > self.session_timeout {
                expired.push(FenceBroker {
                    broker_id: record.broker_id,
                    broker_epoch: record.broker_epoch,
                });
            }
        }
        expired
    }

    /// Fences brokers whose session lapsed and adds missing learners, every `tick`, until the
    /// task is aborted.
    pub(crate) async fn run_session_expiry(self: Arc<Self>, tick: Duration) {
        let mut interval = tokio::time::interval(tick);
        interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            interval.tick().await;
            let expired = self.expired_brokers();
            let Some(term) = self.leading_term() else {
                continue;
            };
            for fence in expired {
                let broker_id = fence.broker_id;
                let reply = self
                    .propose(term, MetadataCommand::FenceBroker(fence))
                    .await;
                tracing::info!(broker_id, ?reply, "fenced broker after its session lapsed");
            }
            self.reconcile_learners().await;
        }
    }
}

/// `host:port`, with an IPv6 host in brackets so it parses as a URI authority.
pub fn host_port(host: &str, port: u16) -> String {
    if host.contains(':') && !host.starts_with('[') {
        format!("[{host}]:{port}")
    } else {
        format!("{host}:{port}")
    }
}

/// Voters in the initial configuration, keyed by node id, as openraft wants them.
pub(crate) fn voter_nodes(voters: &BTreeMap<NodeId, String>) -> BTreeMap<NodeId, BasicNode> {
    voters
        .iter()
        .map(|(id, addr)| (*id, BasicNode { addr: addr.clone() }))
        .collect()
}
