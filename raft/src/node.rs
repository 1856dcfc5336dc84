//! [`MetadataNode`]: what every broker runs to take part in the metadata quorum. It owns the raft
//! instance, its stores and its listener; it keeps a read-only [`MetadataImage`] in step with the
//! committed log and publishes each new image; and it sends writes and heartbeats to the current
//! controller, wherever that is. It also tells its owner when the raft core failed
//! ([`MetadataNode::failed`]), since a node whose core is gone can never serve metadata again.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::error::InitializeError;
use openraft::{Config, Raft, RaftMetrics, SnapshotPolicy};
use streambus_proto::raft::v1 as pb;
use streambus_proto::raft::v1::controller_service_client::ControllerServiceClient;
use streambus_proto::raft::v1::controller_service_server::ControllerServiceServer;
use streambus_proto::raft::v1::raft_service_server::RaftServiceServer;
use tokio::net::TcpListener;
use tokio::sync::{oneshot, watch};
use tokio::task::JoinHandle;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

use crate::command::{MetadataCommand, MetadataResponse};
use crate::controller::{
    voter_nodes, Controller, ControllerReply, ControllerRequest, Heartbeat, HeartbeatReply,
};
use crate::error::{RaftError, Result};
use crate::identity::{is_refusal, ClusterId, NodeIdentity, RefusalLog};
use crate::image::MetadataImage;
use crate::network::{channel, from_payload, to_payload, GrpcNetworkFactory, RaftGrpcService};
use crate::store;
use crate::types::{NodeId, TypeConfig};

/// Largest gRPC message a node accepts. Snapshot chunks are capped well below it (see
/// [`SNAPSHOT_CHUNK_BYTES`]), and so are append batches of small metadata entries.
const GRPC_MESSAGE_BYTES_MAX: usize = 16 * 1024 * 1024;
/// Snapshot bytes per InstallSnapshot RPC. JSON encodes each byte as up to four characters, so
/// a chunk stays under [`GRPC_MESSAGE_BYTES_MAX`].
const SNAPSHOT_CHUNK_BYTES: u64 = 1024 * 1024;
/// Pause between attempts while no controller is known (an election is running), or when a
/// hint led nowhere new.
const NO_LEADER_BACKOFF: Duration = Duration::from_millis(50);
/// Longest pause between two rounds of the controller's periodic work (session expiry, learner
/// additions).
const CONTROLLER_TICK_MAX: Duration = Duration::from_millis(500);
/// Per-chunk deadline of a snapshot transfer: a 1 MiB chunk is ~4 MB of JSON, and the last one
/// also decodes and syncs the image on the receiver.
const INSTALL_SNAPSHOT_TIMEOUT_MS: u64 = 10_000;

/// How a metadata node is set up.
#[derive(Debug, Clone)]
pub struct NodeConfig {
    pub node_id: NodeId,
    /// The cluster this node belongs to: sent with every request, and required of every
    /// request it receives.
    pub cluster_id: ClusterId,
    /// Where the raft listener binds (port 0 picks a free port; see [`MetadataNode::local_addr`]).
    pub listen_addr: SocketAddr,
    /// `host:port` that peers use to reach this node's listener.
    pub advertised_addr: String,
    /// The RocksDB directory of the raft log, vote and snapshots.
    pub data_dir: PathBuf,
    /// The voters of a new cluster, node id to `host:port`. A node listed here bootstraps the
    /// cluster on its first start; a node not listed waits to be added as a learner or voter,
    /// and until it learns the leader it sends its requests to these addresses.
    pub initial_voters: BTreeMap<NodeId, String>,
    pub raft_heartbeat_interval_ms: u64,
    pub election_timeout_min_ms: u64,
    pub election_timeout_max_ms: u64,
    /// A snapshot is taken after this many entries since the last one; the log before it is
    /// purged.
    pub snapshot_logs_since_last: u64,
    /// A broker that sends no heartbeat for this long is fenced (`broker.session.timeout.ms`).
    pub broker_session_timeout_ms: u64,
    /// How long a write or heartbeat keeps looking for a controller before giving up.
    pub request_timeout_ms: u64,
}

impl NodeConfig {
    /// Defaults for a node with the given id, cluster, listener and data directory, alone in its
    /// own single-voter cluster (`streambus --dev`).
    pub fn single_voter(
        node_id: NodeId,
        cluster_id: ClusterId,
        listen_addr: SocketAddr,
        data_dir: PathBuf,
    ) -> NodeConfig {
        let advertised_addr = listen_addr.to_string();
        NodeConfig {
            node_id,
            cluster_id,
            listen_addr,
            initial_voters: BTreeMap::from([(node_id, advertised_addr.clone())]),
            advertised_addr,
            data_dir,
            raft_heartbeat_interval_ms: 100,
            election_timeout_min_ms: 500,
            election_timeout_max_ms: 1000,
            snapshot_logs_since_last: 5000,
            broker_session_timeout_ms: 9000,
            request_timeout_ms: 10_000,
        }
    }

    /// This node's identity on the wire.
    pub fn identity(&self) -> NodeIdentity {
        NodeIdentity {
            cluster_id: self.cluster_id.clone(),
            node_id: self.node_id,
        }
    }

    fn raft_config(&self) -> Result<Arc<Config>> {
        let config = Config {
            cluster_name: "streambus-metadata".to_owned(),
            heartbeat_interval: self.raft_heartbeat_interval_ms,
            election_timeout_min: self.election_timeout_min_ms,
            election_timeout_max: self.election_timeout_max_ms,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(self.snapshot_logs_since_last),
            // Keep some log behind the snapshot so a briefly lagging follower catches up from
            // the log instead of a full snapshot.
            max_in_snapshot_log_to_keep: self.snapshot_logs_since_last.min(1000),
            snapshot_max_chunk_size: SNAPSHOT_CHUNK_BYTES,
            install_snapshot_timeout: INSTALL_SNAPSHOT_TIMEOUT_MS,
            ..Config::default()
        };
        Ok(Arc::new(
            config
                .validate()
                .map_err(|e| RaftError::Config(e.to_string()))?,
        ))
    }
}

/// A running member of the metadata quorum (voter or learner). Cheap to clone.
#[derive(Debug, Clone)]
pub struct MetadataNode {
    inner: Arc<Inner>,
}

struct Inner {
    node_id: NodeId,
    identity: NodeIdentity,
    /// Set when [`MetadataNode::shutdown`] begins: the core stopping is then no failure.
    stopping: AtomicBool,
    /// Refusals of this node's forwarded requests by their targets.
    refusals: RefusalLog,
    local_addr: SocketAddr,
    raft: Raft<TypeConfig>,
    image: watch::Receiver<Arc<MetadataImage>>,
    controller: Arc<Controller>,
    request_timeout: Duration,
    /// Where to send requests while this node knows no leader: the other initial voters.
    contacts: Vec<(NodeId, String)>,
    /// Connections to controllers, by address: tonic channels reconnect by themselves, so one
    /// per peer serves every forwarded write and heartbeat.
    channels: std::sync::Mutex<HashMap<String, Channel>>,
    tasks: std::sync::Mutex<Option<Tasks>>,
}

impl std::fmt::Debug for Inner {
    // `Raft` has no `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MetadataNode")
            .field("node_id", &self.node_id)
            .field("local_addr", &self.local_addr)
            .finish_non_exhaustive()
    }
}

#[derive(Debug)]
struct Tasks {
    server: JoinHandle<()>,
    server_stop: oneshot::Sender<()>,
    session_expiry: JoinHandle<()>,
}

impl MetadataNode {
    /// Opens the stores, starts raft and the listener, and bootstraps the cluster if this node is
    /// an initial voter of a cluster that has never started.
    pub async fn start(config: NodeConfig) -> Result<MetadataNode> {
        let listener = TcpListener::bind(config.listen_addr)
            .await
            .map_err(|e| RaftError::Listener(format!("bind {}: {e}", config.listen_addr)))?;
        MetadataNode::start_with_listener(config, listener).await
    }

    /// [`MetadataNode::start`] on a listener the caller already bound (`listen_addr` is then
    /// ignored). Lets a caller learn every node's port before any node starts.
    pub async fn start_with_listener(
        config: NodeConfig,
        listener: TcpListener,
    ) -> Result<MetadataNode> {
        let raft_config = config.raft_config()?;
        let (log_store, state_machine) = store::open(&config.data_dir)?;
        let image = state_machine.subscribe();
        let raft = Raft::new(
            config.node_id,
            raft_config,
            GrpcNetworkFactory::new(config.identity()),
            log_store,
            state_machine,
        )
        .await
        .map_err(|e| RaftError::Stopped(e.to_string()))?;

        let local_addr = listener
            .local_addr()
            .map_err(|e| RaftError::Listener(e.to_string()))?;

        let session_timeout = Duration::from_millis(config.broker_session_timeout_ms);
        let controller = Arc::new(Controller::new(
            config.node_id,
            raft.clone(),
            image.clone(),
            session_timeout,
        ));
        let (server_stop, stopped) = oneshot::channel();
        let server = tokio::spawn(serve(
            listener,
            raft.clone(),
            Arc::clone(&controller),
            config.identity(),
            stopped,
        ));
        // Checking four times per timeout fences a broker at most a quarter late; the cap keeps
        // learner additions prompt when sessions are long.
        let tick = (session_timeout / 4).min(CONTROLLER_TICK_MAX);
        let session_expiry = tokio::spawn(Arc::clone(&controller).run_session_expiry(tick));

        let node = MetadataNode {
            inner: Arc::new(Inner {
                node_id: config.node_id,
                identity: config.identity(),
                stopping: AtomicBool::new(false),
                refusals: RefusalLog::default(),
                local_addr,
                raft,
                image,
                controller,
                request_timeout: Duration::from_millis(config.request_timeout_ms),
                contacts: config
                    .initial_voters
                    .iter()
                    .filter(|(id, _)| **id != config.node_id)
                    .map(|(id, addr)| (*id, addr.clone()))
                    .collect(),
                channels: std::sync::Mutex::new(HashMap::new()),
                tasks: std::sync::Mutex::new(Some(Tasks {
                    server,
                    server_stop,
                    session_expiry,
                })),
            }),
        };
        if let Err(error) = node.bootstrap(&config).await {
            // Stop the listener and raft rather than leave them running behind an error.
            let _ = node.shutdown().await;
            return Err(error);
        }
        Ok(node)
    }

    async fn bootstrap(&self, config: &NodeConfig) -> Result<()> {
        if !config.initial_voters.contains_key(&config.node_id) {
            return Ok(());
        }
        let raft = &self.inner.raft;
        let initialized = raft
            .is_initialized()
            .await
            .map_err(|e| RaftError::Stopped(e.to_string()))?;
        if initialized {
            return Ok(());
        }
        // Every initial voter initializes with the same membership; openraft makes that safe,
        // and whichever log already moved on answers NotAllowed.
        match raft.initialize(voter_nodes(&config.initial_voters)).await {
            Ok(()) => Ok(()),
            Err(openraft::error::RaftError::APIError(InitializeError::NotAllowed(_))) => Ok(()),
            Err(error) => Err(RaftError::Config(error.to_string())),
        }
    }

    pub fn node_id(&self) -> NodeId {
        self.inner.node_id
    }

    /// The raft listener's bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.inner.local_addr
    }

    /// The latest applied metadata image.
    pub fn image(&self) -> Arc<MetadataImage> {
        self.inner.image.borrow().clone()
    }

    /// Every new image, as the committed log is applied.
    pub fn subscribe(&self) -> watch::Receiver<Arc<MetadataImage>> {
        self.inner.image.clone()
    }

    /// openraft's metrics: role, term, leader, log indexes, membership.
    pub fn metrics(&self) -> watch::Receiver<RaftMetrics<NodeId, openraft::BasicNode>> {
        self.inner.raft.metrics()
    }

    /// The controller (raft leader) as this node knows it.
    pub fn controller_id(&self) -> Option<NodeId> {
        self.inner.raft.metrics().borrow().current_leader
    }

    /// Waits until the image satisfies `ready`, up to `timeout`; returns the image that did.
    pub async fn wait_for_image(
        &self,
        timeout: Duration,
        ready: impl Fn(&MetadataImage) -> bool,
    ) -> Option<Arc<MetadataImage>> {
        let mut images = self.subscribe();
        let waited = tokio::time::timeout(timeout, images.wait_for(|image| ready(image))).await;
        match waited {
            Ok(Ok(image)) => Some(image.clone()),
            _ => None,
        }
    }

    /// Commits `command` through the controller and returns the state machine's answer. A
    /// rejection is an `Ok(MetadataResponse::Rejected(..))`; use
    /// [`MetadataResponse::into_result`] to make it an error.
    pub async fn write(&self, command: MetadataCommand) -> Result<MetadataResponse> {
        match self.request(ControllerRequest::Command(command)).await? {
            ControllerReply::Applied(response) => Ok(response),
            other => Err(RaftError::NoController(format!(
                "unexpected reply {other:?}"
            ))),
        }
    }

    /// Adds `node_id` at `addr` as a voter (through a learner phase and joint consensus).
    pub async fn add_voter(&self, node_id: NodeId, addr: String) -> Result<()> {
        self.membership_change(ControllerRequest::AddVoter { node_id, addr })
            .await
    }

    /// Turns voter `node_id` into a learner.
    pub async fn remove_voter(&self, node_id: NodeId) -> Result<()> {
        self.membership_change(ControllerRequest::RemoveVoter { node_id })
            .await
    }

    async fn membership_change(&self, request: ControllerRequest) -> Result<()> {
        match self.request(request).await? {
            ControllerReply::MembershipChanged => Ok(()),
            other => Err(RaftError::Membership(format!("{other:?}"))),
        }
    }

    /// Sends a request to the controller, following leadership changes until
    /// `request_timeout_ms`. Only answers that prove nothing was proposed are retried.
    async fn request(&self, request: ControllerRequest) -> Result<ControllerReply> {
        let deadline = Instant::now() + self.inner.request_timeout;
        let mut hint = None;
        for attempt in 0usize.. {
            let reply = match hint.take().or_else(|| self.target(attempt)) {
                Some((leader, _)) if leader == self.inner.node_id => {
                    // Bounded like a forwarded call: a leader cut off from its quorum would
                    // otherwise wait for the commit forever.
                    let handled = tokio::time::timeout_at(
                        deadline.into(),
                        self.inner.controller.handle(request.clone()),
                    );
                    handled.await.unwrap_or_else(|_| {
                        ControllerReply::Failed(
                            "not committed before the deadline; the outcome is unknown".to_owned(),
                        )
                    })
                }
                Some((target, addr)) => {
                    let client = self.controller_client(&addr)?;
                    let peer = Peer {
                        node_id: target,
                        addr: &addr,
                    };
                    self.forward_write(client, peer, &request, deadline).await?
                }
                None => ControllerReply::NotController { leader: None },
            };
            match reply {
                ControllerReply::NotController { leader } => {
                    if Instant::now() >= deadline {
                        break;
                    }
                    // Follow a hint at once the first time; after that, pause so two nodes with
                    // stale views cannot bounce a request back and forth in a hot loop.
                    if leader.is_none() || attempt > 0 {
                        tokio::time::sleep(NO_LEADER_BACKOFF).await;
                    }
                    hint = leader;
                }
                ControllerReply::Failed(reason) => return Err(RaftError::NoController(reason)),
                done => return Ok(done),
            }
        }
        Err(RaftError::NoController(format!(
            "no controller within {:?}",
            self.inner.request_timeout
        )))
    }

    /// A client on the cached connection to `addr`.
    fn controller_client(&self, addr: &str) -> Result<ControllerServiceClient<Channel>> {
        /// Addresses come from config and leader hints, so only a few exist; the bound guards
        /// against a peer that keeps advertising new ones.
        const CHANNELS_MAX: usize = 64;
        let mut channels = self
            .inner
            .channels
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        let channel = match channels.get(addr) {
            Some(channel) => channel.clone(),
            None => {
                let channel =
                    channel(addr).map_err(|e| RaftError::NoController(format!("{addr}: {e}")))?;
                if channels.len() >= CHANNELS_MAX {
                    channels.clear();
                }
                channels.insert(addr.to_owned(), channel.clone());
                channel
            }
        };
        Ok(ControllerServiceClient::new(channel).max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX))
    }

    /// Where to send a request: the known leader, or else one of the contacts in turn.
    fn target(&self, attempt: usize) -> Option<(NodeId, String)> {
        self.inner.controller.leader().or_else(|| {
            let contacts = &self.inner.contacts;
            (!contacts.is_empty()).then(|| contacts[attempt % contacts.len()].clone())
        })
    }

    /// Sends a broker heartbeat to the controller, following "not the controller" hints a few
    /// hops (a broker that is not a raft member learns the leader only from them).
    pub async fn heartbeat(&self, heartbeat: Heartbeat) -> Result<HeartbeatReply> {
        const HOPS_MAX: usize = 3;
        let deadline = Instant::now() + self.inner.request_timeout;
        let mut target = self.target(0);
        for hop in 0..HOPS_MAX {
            let reply = match &target {
                Some((leader, _)) if *leader == self.inner.node_id => {
                    self.inner.controller.heartbeat(&heartbeat)
                }
                Some((target, addr)) => {
                    let client = self.controller_client(addr)?;
                    let peer = Peer {
                        node_id: *target,
                        addr,
                    };
                    self.forward_heartbeat(client, peer, &heartbeat, deadline)
                        .await?
                }
                None => HeartbeatReply::NotController { leader: None },
            };
            match reply {
                HeartbeatReply::NotController {
                    leader: Some(leader),
                } if hop + 1 < HOPS_MAX => {
                    target = Some(leader);
                }
                HeartbeatReply::NotController { leader: None } if hop + 1 < HOPS_MAX => {
                    // Try the next contact: this one knows no leader either.
                    target = self.target(hop + 1);
                }
                reply => return Ok(reply),
            }
        }
        Ok(HeartbeatReply::NotController { leader: None })
    }

    /// Resolves when the raft core stopped on its own: openraft's `Fatal` (a panic in the core,
    /// or a storage error it cannot survive). Such a node still listens but never serves
    /// metadata again, so its owner must end the process and let the supervisor restart it.
    /// Never resolves once [`MetadataNode::shutdown`] has begun.
    pub async fn failed(&self) -> RaftError {
        let mut metrics = self.inner.raft.metrics();
        let reason = loop {
            if let Err(fatal) = &metrics.borrow_and_update().running_state {
                break fatal.to_string();
            }
            // The core sets `running_state` when it returns; a panic unwinds past that and
            // drops the sender instead.
            if metrics.changed().await.is_err() {
                break "the raft core task ended without a result (it panicked)".to_owned();
            }
        };
        if self.inner.stopping.load(Ordering::Acquire) {
            std::future::pending::<()>().await;
        }
        RaftError::CoreFailed(reason)
    }

    /// Stops raft and the listener. Other clones of this node stop working too.
    pub async fn shutdown(&self) -> Result<()> {
        self.inner.stopping.store(true, Ordering::Release);
        let tasks = self
            .inner
            .tasks
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        // Raft first: a leader stops sending heartbeats at once, so the others can elect a
        // successor while the listener drains its connections.
        let stopped = self
            .inner
            .raft
            .shutdown()
            .await
            .map_err(|e| RaftError::Stopped(e.to_string()));
        if let Some(tasks) = tasks {
            tasks.session_expiry.abort();
            let _ = tasks.server_stop.send(());
            let _ = tasks.server.await;
        }
        stopped
    }

    /// Forwards a controller request to `peer`.
    async fn forward_write(
        &self,
        mut client: ControllerServiceClient<Channel>,
        peer: Peer<'_>,
        request: &ControllerRequest,
        deadline: Instant,
    ) -> Result<ControllerReply> {
        let addr = peer.addr;
        let transport = |e: &dyn std::fmt::Display| RaftError::NoController(format!("{addr}: {e}"));
        let payload = to_payload(request).map_err(|e| transport(&e))?;
        let identity = Some(self.inner.identity.to(peer.node_id));
        let mut grpc_request = Request::new(pb::WriteRequest { payload, identity });
        grpc_request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.write(grpc_request).await {
            Ok(reply) => from_payload(&reply.into_inner().payload).map_err(|e| transport(&e)),
            // No connection to the old leader, or a node of another cluster (or another node)
            // at its address: nothing was proposed, so looking for the controller elsewhere and
            // retrying is safe. Any other failure may have happened after the proposal, and is
            // reported instead of retried.
            Err(status) if status.code() == tonic::Code::Unavailable => {
                Ok(ControllerReply::NotController { leader: None })
            }
            Err(status) if is_refusal(&status) => {
                self.inner
                    .refusals
                    .refused_by_peer("write", &peer.to_string(), &status);
                Ok(ControllerReply::NotController { leader: None })
            }
            Err(status) => Err(transport(&status)),
        }
    }

    /// Sends a heartbeat to `peer`.
    async fn forward_heartbeat(
        &self,
        mut client: ControllerServiceClient<Channel>,
        peer: Peer<'_>,
        heartbeat: &Heartbeat,
        deadline: Instant,
    ) -> Result<HeartbeatReply> {
        let addr = peer.addr;
        let transport = |e: &dyn std::fmt::Display| RaftError::NoController(format!("{addr}: {e}"));
        let payload = to_payload(heartbeat).map_err(|e| transport(&e))?;
        let identity = Some(self.inner.identity.to(peer.node_id));
        let mut grpc_request = Request::new(pb::HeartbeatRequest { payload, identity });
        grpc_request.set_timeout(deadline.saturating_duration_since(Instant::now()));
        match client.heartbeat(grpc_request).await {
            Ok(reply) => from_payload(&reply.into_inner().payload).map_err(|e| transport(&e)),
            Err(status) if is_refusal(&status) => {
                self.inner
                    .refusals
                    .refused_by_peer("heartbeat", &peer.to_string(), &status);
                // As if it knew no leader: the next contact is tried.
                Ok(HeartbeatReply::NotController { leader: None })
            }
            Err(status) => Err(transport(&status)),
        }
    }

    /// The raft handle, for tests and tools that need openraft directly.
    pub fn raft(&self) -> &Raft<TypeConfig> {
        &self.inner.raft
    }
}

/// A node another one sends a request to: its id and the address it is believed to be at.
#[derive(Debug, Clone, Copy)]
struct Peer<'a> {
    node_id: NodeId,
    addr: &'a str,
}

impl std::fmt::Display for Peer<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}@{}", self.node_id, self.addr)
    }
}

async fn serve(
    listener: TcpListener,
    raft: Raft<TypeConfig>,
    controller: Arc<Controller>,
    identity: NodeIdentity,
    stop: oneshot::Receiver<()>,
) {
    let raft_service = RaftServiceServer::new(RaftGrpcService::new(raft, identity.clone()))
        .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX)
        .max_encoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let controller_service = ControllerServiceServer::new(ControllerGrpcService {
        controller,
        identity,
        refusals: RefusalLog::default(),
    })
    .max_decoding_message_size(GRPC_MESSAGE_BYTES_MAX);
    let incoming = tonic::transport::server::TcpIncoming::from(listener).with_nodelay(Some(true));
    let served = tonic::transport::Server::builder()
        .add_service(raft_service)
        .add_service(controller_service)
        .serve_with_incoming_shutdown(incoming, async {
            let _ = stop.await;
        })
        .await;
    if let Err(error) = served {
        tracing::error!(%error, "raft listener stopped");
    }
}

/// Serves other brokers' forwarded writes and heartbeats. The sender may be a broker that is no
/// raft member yet (it registers through here), so only its cluster and the target are checked.
#[derive(Debug)]
struct ControllerGrpcService {
    controller: Arc<Controller>,
    identity: NodeIdentity,
    refusals: RefusalLog,
}

impl ControllerGrpcService {
    fn admit(
        &self,
        rpc: &'static str,
        peer: Option<SocketAddr>,
        identity: Option<&pb::Identity>,
    ) -> Result<(), Status> {
        self.identity
            .admit(identity)
            .map(|_| ())
            .map_err(|refusal| {
                let peer = peer.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
                self.refusals.refused(rpc, &refusal, &peer);
                refusal.to_status()
            })
    }
}

#[tonic::async_trait]
impl pb::controller_service_server::ControllerService for ControllerGrpcService {
    async fn write(
        &self,
        request: Request<pb::WriteRequest>,
    ) -> Result<Response<pb::WriteResponse>, Status> {
        self.admit(
            "write",
            request.remote_addr(),
            request.get_ref().identity.as_ref(),
        )?;
        let request: ControllerRequest = from_payload(&request.get_ref().payload)
            .map_err(|e| Status::invalid_argument(format!("bad controller request: {e}")))?;
        let reply = self.controller.handle(request).await;
        let payload = to_payload(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::WriteResponse { payload }))
    }

    async fn heartbeat(
        &self,
        request: Request<pb::HeartbeatRequest>,
    ) -> Result<Response<pb::HeartbeatResponse>, Status> {
        self.admit(
            "heartbeat",
            request.remote_addr(),
            request.get_ref().identity.as_ref(),
        )?;
        let heartbeat: Heartbeat = from_payload(&request.get_ref().payload)
            .map_err(|e| Status::invalid_argument(format!("bad heartbeat: {e}")))?;
        let reply = self.controller.heartbeat(&heartbeat);
        let payload = to_payload(&reply).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::HeartbeatResponse { payload }))
    }
}
