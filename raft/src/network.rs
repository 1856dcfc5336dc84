//! The raft transport over tonic: [`GrpcNetworkFactory`] sends openraft's RPCs to peers, and
//! [`RaftGrpcService`] receives them. Payloads are openraft's own types serialized with
//! serde_json inside the opaque `bytes` of `streambus.raft.v1`; raft-level errors travel in the
//! payload, gRPC statuses mean transport failures. Every request carries this node's identity;
//! the server refuses one of another cluster, for another node or from a non-member
//! ([`crate::identity`]) before openraft sees it, and the client treats such a refusal as an
//! unreachable peer (openraft backs off and retries).

use std::sync::Arc;
use std::time::Duration;

use openraft::error::{
    InstallSnapshotError, NetworkError, RPCError, RaftError as OpenRaftError, RemoteError,
    Unreachable,
};
use openraft::network::{RPCOption, RaftNetwork, RaftNetworkFactory};
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse,
    VoteRequest, VoteResponse,
};
use openraft::{BasicNode, Raft};
use serde::de::DeserializeOwned;
use serde::Serialize;
use streambus_proto::raft::v1 as pb;
use streambus_proto::raft::v1::raft_service_client::RaftServiceClient;
use tonic::transport::{Channel, Endpoint};
use tonic::{Request, Response, Status};

use crate::identity::{check_sender, is_refusal, Claim, IdentityRefusal, NodeIdentity, RefusalLog};
use crate::types::{NodeId, TypeConfig};

/// How long a connection attempt to a peer may take; a dead peer must not stall replication to
/// the others longer than an election timeout.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);

/// Serializes a payload; openraft's types always serialize, but a failure is still an error.
pub(crate) fn to_payload<T: Serialize>(value: &T) -> Result<Vec<u8>, serde_json::Error> {
    serde_json::to_vec(value)
}

pub(crate) fn from_payload<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, serde_json::Error> {
    serde_json::from_slice(bytes)
}

/// A lazily connecting gRPC channel to `http://addr`.
pub(crate) fn channel(addr: &str) -> Result<Channel, tonic::transport::Error> {
    Ok(Endpoint::from_shared(format!("http://{addr}"))?
        .connect_timeout(CONNECT_TIMEOUT)
        .tcp_nodelay(true)
        .connect_lazy())
}

/// Creates one [`GrpcNetwork`] per peer for openraft.
#[derive(Debug, Clone)]
pub struct GrpcNetworkFactory {
    identity: NodeIdentity,
    refusals: Arc<RefusalLog>,
}

impl GrpcNetworkFactory {
    /// Clients that send `identity` with every request.
    pub fn new(identity: NodeIdentity) -> GrpcNetworkFactory {
        GrpcNetworkFactory {
            identity,
            refusals: Arc::default(),
        }
    }
}

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        GrpcNetwork {
            target,
            addr: node.addr.clone(),
            client: None,
            identity: self.identity.clone(),
            refusals: Arc::clone(&self.refusals),
        }
    }
}

/// The RPC client to one peer. Connects on first use and reconnects after a transport error.
#[derive(Debug)]
pub struct GrpcNetwork {
    target: NodeId,
    addr: String,
    client: Option<RaftServiceClient<Channel>>,
    identity: NodeIdentity,
    refusals: Arc<RefusalLog>,
}

/// A request's payload and the identity sent with it.
type Outgoing = Request<(Vec<u8>, pb::Identity)>;

type RpcResult<T, E = OpenRaftError<NodeId>> = Result<T, RPCError<NodeId, BasicNode, E>>;

impl GrpcNetwork {
    fn client(&mut self) -> Result<RaftServiceClient<Channel>, Unreachable> {
        if let Some(client) = &self.client {
            return Ok(client.clone());
        }
        let channel = channel(&self.addr).map_err(|e| Unreachable::new(&e))?;
        let client = RaftServiceClient::new(channel);
        self.client = Some(client.clone());
        Ok(client)
    }

    /// Sends one RPC: encodes `request`, calls `send`, and decodes the peer's
    /// `Result<Resp, E>` payload.
    async fn call<Req, Resp, E, F, Fut>(
        &mut self,
        rpc: &'static str,
        request: &Req,
        option: &RPCOption,
        send: F,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, Outgoing) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, Status>>,
    {
        let payload = to_payload(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = self.client().map_err(RPCError::Unreachable)?;
        let mut grpc_request = Request::new((payload, self.identity.to(self.target)));
        grpc_request.set_timeout(option.hard_ttl());
        let reply = match send(client, grpc_request).await {
            Ok(reply) => reply,
            Err(status) if is_refusal(&status) => {
                // Another cluster, or another node, answers at this peer's address: as good as
                // unreachable, and worth an operator's attention (addresses overlap).
                self.refusals.refused_by_peer(
                    rpc,
                    &format!("{}@{}", self.target, self.addr),
                    &status,
                );
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            Err(status) if status.code() == tonic::Code::Unavailable => {
                // The connection is gone (the peer may have restarted): reconnect next time.
                self.client = None;
                return Err(RPCError::Unreachable(Unreachable::new(&status)));
            }
            // A timeout or a failed call on a working connection: keep the connection, a slow
            // follower should not also pay for a reconnect on every retry.
            Err(status) => return Err(RPCError::Network(NetworkError::new(&status))),
        };
        let outcome: Result<Resp, E> =
            from_payload(&reply).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        outcome.map_err(|e| RPCError::RemoteError(RemoteError::new(self.target, e)))
    }
}

impl RaftNetwork<TypeConfig> for GrpcNetwork {
    async fn append_entries(
        &mut self,
        rpc: AppendEntriesRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<AppendEntriesResponse<NodeId>> {
        self.call(
            "append_entries",
            &rpc,
            &option,
            |mut client, request| async move {
                let request = request.map(|(payload, identity)| pb::AppendEntriesRequest {
                    payload,
                    identity: Some(identity),
                });
                let response = client.append_entries(request).await?;
                Ok(response.into_inner().payload)
            },
        )
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, OpenRaftError<NodeId, InstallSnapshotError>>
    {
        self.call(
            "install_snapshot",
            &rpc,
            &option,
            |mut client, request| async move {
                let request = request.map(|(payload, identity)| pb::InstallSnapshotRequest {
                    payload,
                    identity: Some(identity),
                });
                let response = client.install_snapshot(request).await?;
                Ok(response.into_inner().payload)
            },
        )
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call("vote", &rpc, &option, |mut client, request| async move {
            let request = request.map(|(payload, identity)| pb::VoteRequest {
                payload,
                identity: Some(identity),
            });
            let response = client.vote(request).await?;
            Ok(response.into_inner().payload)
        })
        .await
    }
}

/// Serves peers' raft RPCs by handing them to the local [`Raft`], once their identity passed.
#[derive(Clone)]
pub struct RaftGrpcService {
    raft: Raft<TypeConfig>,
    identity: NodeIdentity,
    refusals: Arc<RefusalLog>,
}

impl std::fmt::Debug for RaftGrpcService {
    // `Raft` has no `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpcService")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

impl RaftGrpcService {
    /// Serves `raft`, admitting requests addressed to `identity`.
    pub fn new(raft: Raft<TypeConfig>, identity: NodeIdentity) -> RaftGrpcService {
        RaftGrpcService {
            raft,
            identity,
            refusals: Arc::default(),
        }
    }

    /// Decodes a request whose identity names this cluster, this node and a sender allowed to
    /// make the claim `claim_of` reads from the payload; anything else is refused (and logged)
    /// before openraft sees it.
    fn admit<T: DeserializeOwned>(
        &self,
        rpc: &'static str,
        peer: Option<std::net::SocketAddr>,
        identity: Option<&pb::Identity>,
        payload: &[u8],
        claim_of: impl FnOnce(&T) -> Claim<'_>,
    ) -> Result<T, Status> {
        let refuse = |refusal: IdentityRefusal| {
            let peer = peer.map_or_else(|| "unknown".to_owned(), |addr| addr.to_string());
            self.refusals.refused(rpc, &refusal, &peer);
            refusal.to_status()
        };
        let sender = self.identity.admit(identity).map_err(refuse)?;
        let request: T = decode_request(payload)?;
        let checked = {
            let metrics = self.raft.metrics();
            let metrics = metrics.borrow();
            check_sender(
                sender,
                claim_of(&request),
                metrics.membership_config.membership(),
                &metrics.vote,
            )
        };
        checked.map_err(refuse)?;
        Ok(request)
    }
}

fn decode_request<T: DeserializeOwned>(payload: &[u8]) -> Result<T, Status> {
    from_payload(payload).map_err(|e| Status::invalid_argument(format!("bad raft payload: {e}")))
}

fn encode_reply<T: Serialize>(outcome: &T) -> Result<Vec<u8>, Status> {
    to_payload(outcome).map_err(|e| Status::internal(format!("encode raft reply: {e}")))
}

#[tonic::async_trait]
impl pb::raft_service_server::RaftService for RaftGrpcService {
    async fn append_entries(
        &self,
        request: Request<pb::AppendEntriesRequest>,
    ) -> Result<Response<pb::AppendEntriesResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let rpc: AppendEntriesRequest<TypeConfig> = self.admit(
            "append_entries",
            peer,
            request.identity.as_ref(),
            &request.payload,
            |rpc: &AppendEntriesRequest<TypeConfig>| Claim::Leader(&rpc.vote),
        )?;
        let outcome = self.raft.append_entries(rpc).await;
        let payload = encode_reply(&outcome)?;
        Ok(Response::new(pb::AppendEntriesResponse { payload }))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let rpc: VoteRequest<NodeId> = self.admit(
            "vote",
            peer,
            request.identity.as_ref(),
            &request.payload,
            |rpc: &VoteRequest<NodeId>| Claim::Candidate(&rpc.vote),
        )?;
        let outcome = self.raft.vote(rpc).await;
        let payload = encode_reply(&outcome)?;
        Ok(Response::new(pb::VoteResponse { payload }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let peer = request.remote_addr();
        let request = request.into_inner();
        let rpc: InstallSnapshotRequest<TypeConfig> = self.admit(
            "install_snapshot",
            peer,
            request.identity.as_ref(),
            &request.payload,
            |rpc: &InstallSnapshotRequest<TypeConfig>| Claim::Leader(&rpc.vote),
        )?;
        let outcome = self.raft.install_snapshot(rpc).await;
        let payload = encode_reply(&outcome)?;
        Ok(Response::new(pb::InstallSnapshotResponse { payload }))
    }
}
