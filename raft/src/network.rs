//! The raft transport over tonic: [`GrpcNetworkFactory`] sends openraft's RPCs to peers, and
//! [`RaftGrpcService`] receives them. Payloads are openraft's own types serialized with
//! serde_json inside the opaque `bytes` of `streambus.raft.v1`; raft-level errors travel in the
//! payload, gRPC statuses mean transport failures.

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
#[derive(Debug, Clone, Default)]
pub struct GrpcNetworkFactory;

impl RaftNetworkFactory<TypeConfig> for GrpcNetworkFactory {
    type Network = GrpcNetwork;

    async fn new_client(&mut self, target: NodeId, node: &BasicNode) -> GrpcNetwork {
        GrpcNetwork {
            target,
            addr: node.addr.clone(),
            client: None,
        }
    }
}

/// The RPC client to one peer. Connects on first use and reconnects after a transport error.
#[derive(Debug)]
pub struct GrpcNetwork {
    target: NodeId,
    addr: String,
    client: Option<RaftServiceClient<Channel>>,
}

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
        request: &Req,
        option: &RPCOption,
        send: F,
    ) -> RpcResult<Resp, E>
    where
        Req: Serialize,
        Resp: DeserializeOwned,
        E: std::error::Error + DeserializeOwned,
        F: FnOnce(RaftServiceClient<Channel>, Request<Vec<u8>>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<u8>, Status>>,
    {
        let payload = to_payload(request).map_err(|e| RPCError::Network(NetworkError::new(&e)))?;
        let client = self.client().map_err(RPCError::Unreachable)?;
        let mut grpc_request = Request::new(payload);
        grpc_request.set_timeout(option.hard_ttl());
        let reply = match send(client, grpc_request).await {
            Ok(reply) => reply,
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
        self.call(&rpc, &option, |mut client, request| async move {
            let request = request.map(|payload| pb::AppendEntriesRequest { payload });
            let response = client.append_entries(request).await?;
            Ok(response.into_inner().payload)
        })
        .await
    }

    async fn install_snapshot(
        &mut self,
        rpc: InstallSnapshotRequest<TypeConfig>,
        option: RPCOption,
    ) -> RpcResult<InstallSnapshotResponse<NodeId>, OpenRaftError<NodeId, InstallSnapshotError>>
    {
        self.call(&rpc, &option, |mut client, request| async move {
            let request = request.map(|payload| pb::InstallSnapshotRequest { payload });
            let response = client.install_snapshot(request).await?;
            Ok(response.into_inner().payload)
        })
        .await
    }

    async fn vote(
        &mut self,
        rpc: VoteRequest<NodeId>,
        option: RPCOption,
    ) -> RpcResult<VoteResponse<NodeId>> {
        self.call(&rpc, &option, |mut client, request| async move {
            let request = request.map(|payload| pb::VoteRequest { payload });
            let response = client.vote(request).await?;
            Ok(response.into_inner().payload)
        })
        .await
    }
}

/// Serves peers' raft RPCs by handing them to the local [`Raft`].
#[derive(Clone)]
pub struct RaftGrpcService {
    raft: Raft<TypeConfig>,
}

impl std::fmt::Debug for RaftGrpcService {
    // `Raft` has no `Debug`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RaftGrpcService").finish_non_exhaustive()
    }
}

impl RaftGrpcService {
    pub fn new(raft: Raft<TypeConfig>) -> RaftGrpcService {
        RaftGrpcService { raft }
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
        let rpc = decode_request(&request.get_ref().payload)?;
        let outcome = self.raft.append_entries(rpc).await;
        let payload = encode_reply(&outcome)?;
        Ok(Response::new(pb::AppendEntriesResponse { payload }))
    }

    async fn vote(
        &self,
        request: Request<pb::VoteRequest>,
    ) -> Result<Response<pb::VoteResponse>, Status> {
        let rpc = decode_request(&request.get_ref().payload)?;
        let outcome = self.raft.vote(rpc).await;
        let payload = encode_reply(&outcome)?;
        Ok(Response::new(pb::VoteResponse { payload }))
    }

    async fn install_snapshot(
        &self,
        request: Request<pb::InstallSnapshotRequest>,
    ) -> Result<Response<pb::InstallSnapshotResponse>, Status> {
        let rpc = decode_request(&request.get_ref().payload)?;
        let outcome = self.raft.install_snapshot(rpc).await;
        let payload = encode_reply(&outcome)?;
        Ok(Response::new(pb::InstallSnapshotResponse { payload }))
    }
}
