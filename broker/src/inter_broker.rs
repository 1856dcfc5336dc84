//! One Kafka-protocol connection from this broker to another (a follower to its leader, a
//! coordinator to a partition leader): sends a request, waits for its response, one at a time.
//! Every step is bounded by a timeout, and a response frame by a size limit checked before
//! anything is allocated for it. A new connection first asks the peer's cluster id (Metadata)
//! and is dropped unless it is this cluster's: requests such as OffsetForLeaderEpoch carry no
//! cluster id, and a broker of another cluster at a stale address must never answer them.

use std::time::Duration;

use bytes::BytesMut;
use futures_util::{SinkExt, StreamExt};
use kafka_protocol::messages::{MetadataRequest, RequestHeader, ResponseHeader};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::net::TcpStream;
use tokio_util::codec::{Framed, LengthDelimitedCodec};

/// Metadata v12: the first version a follower of ours and a leader of ours both serve that
/// names the cluster (any version from 2 does).
const METADATA_VERSION: i16 = 12;

/// Why a call to a peer failed; every case drops the connection.
#[derive(Debug)]
pub enum PeerError {
    Connect(String),
    Io(std::io::Error),
    TimedOut,
    Closed,
    Codec(String),
    /// The peer belongs to another cluster (or names none).
    InconsistentClusterId {
        theirs: Option<String>,
    },
}

impl std::fmt::Display for PeerError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            PeerError::Connect(reason) => write!(f, "cannot connect: {reason}"),
            PeerError::Io(error) => write!(f, "i/o error: {error}"),
            PeerError::TimedOut => f.write_str("timed out"),
            PeerError::Closed => f.write_str("connection closed by the peer"),
            PeerError::Codec(reason) => write!(f, "bad response: {reason}"),
            PeerError::InconsistentClusterId { theirs } => write!(
                f,
                "INCONSISTENT_CLUSTER_ID: the peer belongs to cluster {theirs:?}"
            ),
        }
    }
}

/// A connection to another broker's Kafka listener.
#[derive(Debug)]
pub struct PeerConnection {
    framed: Framed<TcpStream, LengthDelimitedCodec>,
    correlation_id: i32,
    client_id: StrBytes,
}

impl PeerConnection {
    /// Connects to `addr` (`host:port`) and checks that the broker there belongs to
    /// `cluster_id`; responses larger than `max_response_bytes` fail.
    pub async fn connect(
        addr: &str,
        cluster_id: &str,
        client_id: String,
        max_response_bytes: usize,
        timeout: Duration,
    ) -> Result<PeerConnection, PeerError> {
        let stream = tokio::time::timeout(timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| PeerError::TimedOut)?
            .map_err(|e| PeerError::Connect(format!("{addr}: {e}")))?;
        // Replication is latency-bound: small fetch requests must not wait for Nagle.
        stream.set_nodelay(true).map_err(PeerError::Io)?;
        let codec = LengthDelimitedCodec::builder()
            .big_endian()
            .length_field_type::<u32>()
            .max_frame_length(max_response_bytes)
            .new_codec();
        let mut connection = PeerConnection {
            framed: Framed::new(stream, codec),
            correlation_id: 0,
            client_id: StrBytes::from_string(client_id),
        };
        connection.check_cluster(cluster_id, timeout).await?;
        Ok(connection)
    }

    /// Asks the peer's cluster id, with a Metadata request for no topics.
    async fn check_cluster(
        &mut self,
        cluster_id: &str,
        timeout: Duration,
    ) -> Result<(), PeerError> {
        let request = MetadataRequest::default()
            .with_topics(Some(Vec::new()))
            .with_allow_auto_topic_creation(false);
        let response = self.call(&request, METADATA_VERSION, timeout).await?;
        match response.cluster_id.as_deref() {
            Some(theirs) if theirs == cluster_id => Ok(()),
            theirs => Err(PeerError::InconsistentClusterId {
                theirs: theirs.map(str::to_owned),
            }),
        }
    }

    /// Sends `request` at `version` and waits at most `timeout` for its response.
    pub async fn call<R: Request>(
        &mut self,
        request: &R,
        version: i16,
        timeout: Duration,
    ) -> Result<R::Response, PeerError> {
        self.correlation_id = self.correlation_id.wrapping_add(1);
        let correlation_id = self.correlation_id;
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation_id)
            .with_client_id(Some(self.client_id.clone()));
        let mut body = BytesMut::new();
        header
            .encode(&mut body, R::header_version(version))
            .and_then(|()| request.encode(&mut body, version))
            .map_err(|e| PeerError::Codec(e.to_string()))?;
        let exchange = async {
            self.framed
                .send(body.freeze())
                .await
                .map_err(PeerError::Io)?;
            let mut frame = match self.framed.next().await {
                Some(frame) => frame.map_err(PeerError::Io)?,
                None => return Err(PeerError::Closed),
            };
            let header = ResponseHeader::decode(
                &mut frame,
                <R::Response as HeaderVersion>::header_version(version),
            )
            .map_err(|e| PeerError::Codec(e.to_string()))?;
            if header.correlation_id != correlation_id {
                return Err(PeerError::Codec(format!(
                    "correlation id {} answered, {correlation_id} expected",
                    header.correlation_id
                )));
            }
            R::Response::decode(&mut frame, version).map_err(|e| PeerError::Codec(e.to_string()))
        };
        tokio::time::timeout(timeout, exchange)
            .await
            .map_err(|_| PeerError::TimedOut)?
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::broker::Broker;
    use crate::testing::dev_config;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_peer_of_another_cluster_is_dropped_before_any_request() {
        let dir = tempfile::tempdir().expect("temp dir");
        let mut config = dev_config(dir.path());
        config.cluster_id = "cluster-a".to_owned();
        let broker = Broker::start(config, true).await.expect("starts");
        let addr = broker.kafka_addr().to_string();
        let timeout = Duration::from_secs(10);
        let connect = |cluster: &'static str| {
            let addr = addr.clone();
            async move {
                PeerConnection::connect(&addr, cluster, "test".to_owned(), 1 << 20, timeout).await
            }
        };
        let refused = connect("cluster-b").await.expect_err("another cluster");
        assert!(
            matches!(&refused, PeerError::InconsistentClusterId { theirs: Some(id) } if id == "cluster-a"),
            "{refused}"
        );
        assert!(connect("cluster-a").await.is_ok());
        broker.shutdown().await.expect("stops");
    }
}
