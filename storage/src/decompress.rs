//! Record-batch decoding with a bound on the decompressed size. kafka-protocol's own
//! decompressors inflate a batch completely, so a small, highly compressed batch (a
//! "decompression bomb") could make the broker allocate without limit wherever it must look
//! inside batches: recompression, ListOffsets by timestamp, compaction. Here the same codec
//! crates inflate through a reader that stops at the bound.

use std::io::Read;

use bytes::{Buf, Bytes};
use kafka_protocol::records::{Compression, RecordBatchDecoder, RecordSet};

/// The most bytes one batch may decompress to: generous for any batch within Kafka's defaults
/// (`max.message.bytes` is 1 MiB compressed), small enough that every caller can afford it.
pub const DECOMPRESSED_BATCH_BYTES_MIN_LIMIT: usize = 64 * 1024 * 1024;

/// The decompressed-size bound for batches of at most `max_message_bytes` compressed bytes.
pub fn limit_for(max_message_bytes: usize) -> usize {
    max_message_bytes
        .saturating_mul(8)
        .max(DECOMPRESSED_BATCH_BYTES_MIN_LIMIT)
}

/// Decodes the one record batch at the front of `buf`, failing (instead of allocating more)
/// when its records decompress to more than `limit` bytes.
pub fn decode_batch(buf: &mut Bytes, limit: usize) -> anyhow::Result<RecordSet> {
    RecordBatchDecoder::decode_with_custom_compression(
        buf,
        Some(|records: &mut Bytes, compression| inflate(records, compression, limit)),
    )
}

fn inflate(records: &mut Bytes, compression: Compression, limit: usize) -> anyhow::Result<Bytes> {
    let compressed = records.copy_to_bytes(records.remaining());
    match compression {
        Compression::None => Ok(compressed),
        Compression::Gzip => read_bounded(flate2::read::GzDecoder::new(compressed.reader()), limit),
        Compression::Zstd => read_bounded(
            zstd::stream::read::Decoder::new(compressed.reader())?,
            limit,
        ),
        Compression::Lz4 => read_bounded(lz4::Decoder::new(compressed.reader())?, limit),
        Compression::Snappy => snappy(&compressed, limit),
    }
}

/// Reads `reader` to the end, or fails once it yields more than `limit` bytes.
fn read_bounded(reader: impl Read, limit: usize) -> anyhow::Result<Bytes> {
    let mut out = Vec::new();
    let cap = u64::try_from(limit).unwrap_or(u64::MAX).saturating_add(1);
    reader.take(cap).read_to_end(&mut out)?;
    if out.len() > limit {
        anyhow::bail!("batch decompresses to more than {limit} bytes");
    }
    Ok(out.into())
}

/// Kafka's snappy: xerial-framed blocks (a magic header, then `u32` length-prefixed raw
/// blocks), or a raw snappy stream without the header. Raw snappy declares its length up
/// front, so every block is checked before anything is allocated for it.
fn snappy(compressed: &[u8], limit: usize) -> anyhow::Result<Bytes> {
    const MAGIC: &[u8; 16] = b"\x82SNAPPY\x00\x00\x00\x00\x01\x00\x00\x00\x01";
    let mut decoder = snap::raw::Decoder::new();
    let Some(mut rest) = compressed.strip_prefix(&MAGIC[..]) else {
        let len = snap::raw::decompress_len(compressed)?;
        if len > limit {
            anyhow::bail!("batch decompresses to {len} bytes, more than {limit}");
        }
        return Ok(decoder.decompress_vec(compressed)?.into());
    };
    let mut out = Vec::new();
    // Each pass consumes one block; bounded by the input's length.
    while !rest.is_empty() {
        let (len, tail) = rest
            .split_first_chunk::<4>()
            .ok_or_else(|| anyhow::anyhow!("truncated snappy block length"))?;
        let len = u32::from_be_bytes(*len) as usize;
        let block = tail
            .get(..len)
            .ok_or_else(|| anyhow::anyhow!("truncated snappy block"))?;
        rest = &tail[len..];
        let block_len = snap::raw::decompress_len(block)?;
        if out.len().saturating_add(block_len) > limit {
            anyhow::bail!("batch decompresses to more than {limit} bytes");
        }
        let start = out.len();
        out.resize(start + block_len, 0);
        decoder.decompress(block, &mut out[start..])?;
    }
    Ok(out.into())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batch::testing::{batch_kv, Producer};

    /// Four keyed records whose values are `value_len` bytes of `z`.
    fn batch(compression: Compression, value_len: usize) -> Bytes {
        let value = vec![b'z'; value_len];
        let keys = ["k0", "k1", "k2", "k3"];
        let pairs: Vec<_> = keys
            .iter()
            .map(|k| (Some(k.as_bytes()), Some(value.as_slice())))
            .collect();
        batch_kv(&pairs, 1_000, Producer::NONE, compression)
    }

    const CODECS: [Compression; 5] = [
        Compression::None,
        Compression::Gzip,
        Compression::Snappy,
        Compression::Lz4,
        Compression::Zstd,
    ];

    #[test]
    fn every_codec_decodes_within_the_bound() {
        for codec in CODECS {
            let set = decode_batch(&mut batch(codec, 1000), 1 << 20).expect("decodes");
            assert_eq!(set.records.len(), 4, "{codec:?}");
            assert_eq!(set.records[3].value.as_deref(), Some(&[b'z'; 1000][..]));
        }
    }

    #[test]
    fn a_batch_inflating_past_the_bound_is_refused() {
        for codec in CODECS.into_iter().skip(1) {
            // 4 MB of one byte compress to a few KB; a 1 MB bound refuses them.
            let bomb = batch(codec, 1 << 20);
            assert!(bomb.len() < 1 << 20, "{codec:?} compresses");
            let error = decode_batch(&mut bomb.clone(), 1 << 20).expect_err("over the bound");
            assert!(
                error.to_string().contains("more than"),
                "{codec:?}: {error}"
            );
            assert!(
                decode_batch(&mut bomb.clone(), 8 << 20).is_ok(),
                "{codec:?}"
            );
        }
    }
}
