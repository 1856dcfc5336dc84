//! One client connection. Requests are read as length-prefixed frames (bounded by
//! `socket.request.max.bytes` before anything is allocated), handled one at a time in arrival
//! order, like Kafka does, which keeps a producer's pipelined batches for a partition in order,
//! and answered in that order. A reader task reads one frame ahead of the one being handled,
//! and a writer task sends responses while the next requests are handled; at most
//! `max_in_flight_requests_per_connection` responses wait for it, after which handling, and so
//! reading past the one frame ahead, pauses.
//!
//! The connection code is generic over its [`Transport`]: plain TCP today, a TLS stream later.
//! Every request is handled with a [`RequestContext`] and inside its span.
//!
//! A frame whose header cannot be decoded, an unknown API key, an unsupported version (other
//! than ApiVersions, which answers UNSUPPORTED_VERSION with v0 so the client can pick another)
//! or an undecodable body closes this connection only.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use futures_util::StreamExt;
use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsResponse, RequestHeader, RequestKind, ResponseHeader, ResponseKind,
};
use kafka_protocol::protocol::{decode_request_header_from_buffer, Encodable};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;
use tokio::sync::mpsc;
use tokio_util::codec::{FramedRead, LengthDelimitedCodec};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use super::api;
use super::handlers;
use super::request::{ClientSoftware, ConnectionInfo, Outcome, RequestContext};
use crate::context::BrokerContext;
use crate::frame::request_codec;

/// A byte stream a connection is served over, split into halves that a reader and a writer
/// task own.
pub trait Transport: Send + 'static {
    type Reader: AsyncRead + Unpin + Send + 'static;
    type Writer: AsyncWrite + Unpin + Send + 'static;

    fn into_halves(self) -> (Self::Reader, Self::Writer);
}

impl Transport for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn into_halves(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        // Responses are written whole; Nagle would only delay them.
        let _ = self.set_nodelay(true);
        self.into_split()
    }
}

/// Any other stream (a TLS stream, an in-memory pipe in tests), split with a lock between the
/// halves; TCP has its own lock-free halves above.
#[derive(Debug)]
pub struct Split<S>(pub S);

impl<S: AsyncRead + AsyncWrite + Send + 'static> Transport for Split<S> {
    type Reader = tokio::io::ReadHalf<S>;
    type Writer = tokio::io::WriteHalf<S>;

    fn into_halves(self) -> (Self::Reader, Self::Writer) {
        tokio::io::split(self.0)
    }
}

/// What to do with one frame.
enum Step {
    Send(Bytes),
    Nothing,
    Close(&'static str),
}

/// Serves one connection until the client closes it, it misbehaves, or `shutdown` (after the
/// request being handled is answered).
pub async fn serve<T: Transport>(
    ctx: Arc<BrokerContext>,
    stream: T,
    connection: ConnectionInfo,
    shutdown: CancellationToken,
) {
    let peer = connection.peer;
    let mut connection = Arc::new(connection);
    let (reader, writer) = stream.into_halves();
    let frames = FramedRead::new(reader, request_codec(ctx.config.socket_request_max_bytes));
    let (responses, queued) = mpsc::channel(ctx.config.kafka.max_in_flight_requests_per_connection);
    let idle = Duration::from_millis(ctx.config.kafka.connections_max_idle_ms);
    let writer = tokio::spawn(write_responses(writer, queued, connection.clone(), idle));
    // One frame is read ahead while the previous one is handled, so that copying a request
    // out of the socket overlaps with appending the last one; requests are still handled one
    // at a time, in order.
    let (ahead, mut incoming) = mpsc::channel(1);
    let reader = tokio::spawn(read_frames(frames, ahead));
    loop {
        let frame = tokio::select! {
            biased;
            () = shutdown.cancelled() => break,
            frame = tokio::time::timeout(idle, incoming.recv()) => frame,
        };
        let frame = match frame {
            Err(_) => {
                tracing::debug!(%peer, "closing idle connection");
                break;
            }
            Ok(frame) => frame,
        };
        let frame = match frame {
            None => break,
            Some(Ok(frame)) => frame,
            Some(Err(error)) => {
                tracing::debug!(%peer, %error, "closing connection: bad frame");
                break;
            }
        };
        match handle_frame(&ctx, &mut connection, frame).await {
            Step::Send(bytes) => {
                if responses.send(bytes).await.is_err() {
                    break;
                }
            }
            Step::Nothing => {}
            Step::Close(reason) => {
                tracing::debug!(%peer, reason, "closing connection");
                break;
            }
        }
    }
    reader.abort();
    // Queued responses are still written before the socket closes.
    drop(responses);
    let _ = writer.await;
}

/// Reads frames into `ahead` until the client closes the connection, a frame is bad (passed on
/// as the last item), or the connection is done with them.
async fn read_frames<R: AsyncRead + Unpin>(
    mut frames: FramedRead<R, LengthDelimitedCodec>,
    ahead: mpsc::Sender<Result<Bytes, std::io::Error>>,
) {
    while let Some(frame) = frames.next().await {
        let last = frame.is_err();
        if ahead.send(frame.map(BytesMut::freeze)).await.is_err() || last {
            return;
        }
    }
}

async fn write_responses<W: AsyncWrite + Unpin>(
    mut writer: W,
    mut queued: mpsc::Receiver<Bytes>,
    connection: Arc<ConnectionInfo>,
    write_timeout: Duration,
) {
    let peer = connection.peer;
    while let Some(response) = queued.recv().await {
        // A client that stops reading cannot hold the connection (and its slot) forever.
        match tokio::time::timeout(write_timeout, writer.write_all(&response)).await {
            Ok(Ok(())) => {}
            Ok(Err(error)) => {
                tracing::debug!(%peer, %error, "cannot write a response");
                return;
            }
            Err(_) => {
                tracing::debug!(%peer, "client stopped reading; closing");
                return;
            }
        }
    }
    let _ = writer.shutdown().await;
}

async fn handle_frame(
    ctx: &BrokerContext,
    connection: &mut Arc<ConnectionInfo>,
    mut frame: Bytes,
) -> Step {
    if frame.len() < 8 {
        return Step::Close("frame shorter than a request header");
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let Ok(key) = ApiKey::try_from(api_key) else {
        return Step::Close("unknown api key");
    };
    if !api::is_supported(key, version) {
        if key == ApiKey::ApiVersions {
            return unsupported_api_versions(correlation_id);
        }
        return Step::Close("unsupported api version");
    }
    let header: RequestHeader = match decode_request_header_from_buffer(&mut frame) {
        Ok(header) => header,
        Err(_) => return Step::Close("undecodable request header"),
    };
    let request = match RequestKind::decode(key, &mut frame, version) {
        Ok(request) => request,
        Err(_) => return Step::Close("undecodable request body"),
    };
    if let RequestKind::ApiVersions(versions) = &request {
        learn_client_software(connection, version, versions);
    }
    let request_ctx = RequestContext {
        connection: connection.clone(),
        api_key: key,
        api_version: version,
        correlation_id,
        client_id: header.client_id,
    };
    let span = request_ctx.span();
    let started = std::time::Instant::now();
    let outcome = api::dispatch(ctx, &request_ctx, request)
        .instrument(span)
        .await;
    let response = match &outcome {
        Outcome::Respond(response) => Some(response.as_ref()),
        Outcome::NoResponse | Outcome::Close => None,
    };
    crate::telemetry::requests::record(key, version, started.elapsed(), response);
    match outcome {
        Outcome::Respond(response) => encode(key, version, correlation_id, &response),
        Outcome::NoResponse => Step::Nothing,
        Outcome::Close => Step::Close("request without a handler"),
    }
}

/// ApiVersions v3+ names the client library (KIP-511); later requests carry it.
fn learn_client_software(
    connection: &mut Arc<ConnectionInfo>,
    version: i16,
    request: &kafka_protocol::messages::ApiVersionsRequest,
) {
    if version < 3 {
        return;
    }
    let software = ClientSoftware {
        name: request.client_software_name.to_string(),
        version: request.client_software_version.to_string(),
    };
    if connection.client_software.as_ref() != Some(&software) {
        Arc::make_mut(connection).client_software = Some(software);
    }
}

/// ApiVersions at a version the broker does not know: answered at v0 with UNSUPPORTED_VERSION
/// and the supported ranges, as Kafka does, so the client retries with a version it shares.
fn unsupported_api_versions(correlation_id: i32) -> Step {
    let response = ApiVersionsResponse::default()
        .with_error_code(ResponseError::UnsupportedVersion.code())
        .with_api_keys(handlers::api_versions::supported_api_keys());
    encode(
        ApiKey::ApiVersions,
        0,
        correlation_id,
        &ResponseKind::ApiVersions(response),
    )
}

/// Frames a response: length prefix, response header of the version's header version, body.
fn encode(key: ApiKey, version: i16, correlation_id: i32, response: &ResponseKind) -> Step {
    let mut buf = BytesMut::with_capacity(256);
    buf.put_i32(0);
    let header = ResponseHeader::default().with_correlation_id(correlation_id);
    let encoded = header
        .encode(&mut buf, key.response_header_version(version))
        .and_then(|()| response.encode(&mut buf, version));
    if let Err(error) = encoded {
        // A handler built a response its version cannot carry: a bug, reported loudly.
        tracing::error!(?key, version, %error, "cannot encode a response");
        return Step::Close("response encoding failed");
    }
    let len = (buf.len() - 4) as i32;
    buf[..4].copy_from_slice(&len.to_be_bytes());
    Step::Send(buf.freeze())
}

#[cfg(test)]
mod tests {
    use kafka_protocol::messages::ApiVersionsRequest;
    use kafka_protocol::protocol::StrBytes;

    use super::*;
    use crate::kafka::request::Principal;

    #[test]
    fn api_versions_v3_names_the_client_software_for_later_requests() {
        let mut connection = Arc::new(ConnectionInfo {
            id: 1,
            peer: "127.0.0.1:1".parse().unwrap(),
            listener: "kafka".into(),
            principal: Principal::anonymous(),
            client_software: None,
        });
        let request = ApiVersionsRequest::default()
            .with_client_software_name(StrBytes::from_static_str("kafka-python"))
            .with_client_software_version(StrBytes::from_static_str("2.0.6"));
        learn_client_software(&mut connection, 2, &request);
        assert_eq!(connection.client_software, None, "v2 carries no software");
        let before = connection.clone();
        learn_client_software(&mut connection, 3, &request);
        let expected = ClientSoftware {
            name: "kafka-python".to_owned(),
            version: "2.0.6".to_owned(),
        };
        assert_eq!(connection.client_software.as_ref(), Some(&expected));
        assert_eq!(
            before.client_software, None,
            "requests already handled keep theirs"
        );
    }
}
