//! Kafka request framing: each request is an `i32` big-endian length followed by that many
//! bytes. A declared length above `socket.request.max.bytes` (or negative, which reads as a huge
//! unsigned length) is an error before any buffer is grown for it, so a hostile length prefix
//! cannot make the broker allocate; the connection is then closed.

use tokio_util::codec::LengthDelimitedCodec;

/// Kafka's default `socket.request.max.bytes` (100 MiB).
pub const SOCKET_REQUEST_MAX_BYTES_DEFAULT: usize = 100 * 1024 * 1024;

/// The codec for one client connection: frames of at most `socket_request_max_bytes`.
pub fn request_codec(socket_request_max_bytes: usize) -> LengthDelimitedCodec {
    LengthDelimitedCodec::builder()
        .big_endian()
        .length_field_type::<u32>()
        .max_frame_length(socket_request_max_bytes)
        .new_codec()
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};
    use tokio_util::codec::{Decoder, Encoder};

    use super::*;

    #[test]
    fn frames_split_across_reads_are_reassembled() {
        let mut codec = request_codec(1024);
        let mut wire = BytesMut::new();
        codec
            .encode(bytes::Bytes::from_static(b"hello kafka"), &mut wire)
            .expect("encode");
        assert_eq!(&wire[..4], &11u32.to_be_bytes());
        let mut first = wire.split_to(6);
        assert_eq!(codec.decode(&mut first).expect("partial"), None);
        first.unsplit(wire);
        let frame = codec
            .decode(&mut first)
            .expect("decode")
            .expect("whole frame");
        assert_eq!(&frame[..], b"hello kafka");
    }

    #[test]
    fn oversized_and_negative_lengths_fail_before_allocating() {
        for declared in [1025u32, u32::MAX, (-1i32) as u32] {
            let mut codec = request_codec(1024);
            let mut wire = BytesMut::with_capacity(16);
            wire.put_u32(declared);
            wire.put_slice(b"abc");
            let capacity = wire.capacity();
            assert!(codec.decode(&mut wire).is_err(), "length {declared}");
            assert!(
                wire.capacity() <= capacity,
                "no buffer grown for {declared}"
            );
        }
    }

    #[test]
    fn a_frame_at_the_limit_is_accepted() {
        let mut codec = request_codec(8);
        let mut wire = BytesMut::new();
        wire.put_u32(8);
        wire.put_slice(b"12345678");
        assert_eq!(
            &codec.decode(&mut wire).expect("ok").expect("frame")[..],
            b"12345678"
        );
    }
}
