//! The default partitioner, compatible with the Java client's: a keyed record goes to
//! `toPositive(murmur2(key)) % partitions`, so the same key lands on the same partition whichever
//! client wrote it; keyless records stick to one partition until a batch's worth has gone there
//! (KIP-480/794 "sticky" batching), then move on.

use std::collections::HashMap;
use std::hash::{BuildHasher, RandomState};

/// Java's `Utils.murmur2` (32-bit murmur2 with Kafka's seed) as a signed value.
pub fn murmur2(key: &[u8]) -> i32 {
    murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32
}

/// The partition the Java client's default partitioner picks for `key`.
pub fn partition_for_key(key: &[u8], partitions: i32) -> i32 {
    debug_assert!(partitions > 0);
    // Java's `Utils.toPositive`: clear the sign bit rather than take the absolute value.
    (murmur2(key) & 0x7fff_ffff) % partitions
}

/// Sticky choice of partition for keyless records, per topic.
#[derive(Debug)]
pub(crate) struct StickyPartitioner {
    sticky: HashMap<String, Sticky>,
    /// Where a new topic starts, so that producers started together spread their load.
    seed: u64,
}

#[derive(Debug)]
struct Sticky {
    partition: i32,
    bytes: usize,
}

impl StickyPartitioner {
    pub fn new() -> StickyPartitioner {
        StickyPartitioner {
            sticky: HashMap::new(),
            seed: RandomState::new().hash_one(std::process::id()),
        }
    }

    /// The partition for a keyless record of `size` bytes; moves on once `batch_size` bytes
    /// went to the current one.
    pub fn partition(
        &mut self,
        topic: &str,
        partitions: i32,
        size: usize,
        batch_size: usize,
    ) -> i32 {
        let seed = self.seed;
        let sticky = self
            .sticky
            .entry(topic.to_owned())
            .or_insert_with(|| Sticky {
                partition: (seed % partitions as u64) as i32,
                bytes: 0,
            });
        if sticky.bytes >= batch_size || sticky.partition >= partitions {
            sticky.partition = (sticky.partition + 1) % partitions;
            sticky.bytes = 0;
        }
        sticky.bytes += size;
        sticky.partition
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Values from Kafka's `UtilsTest.testMurmur2`.
    #[test]
    fn murmur2_matches_the_java_client() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, expected) in cases {
            assert_eq!(murmur2(key), expected, "{}", String::from_utf8_lossy(key));
        }
    }

    #[test]
    fn keys_map_to_stable_partitions_in_range() {
        for n in 1..=64 {
            for i in 0..200 {
                let key = format!("key-{i}");
                let p = partition_for_key(key.as_bytes(), n);
                assert!((0..n).contains(&p));
                assert_eq!(p, partition_for_key(key.as_bytes(), n));
            }
        }
    }

    #[test]
    fn sticky_partition_moves_after_a_batch() {
        let mut sticky = StickyPartitioner::new();
        let first = sticky.partition("t", 4, 100, 1000);
        for _ in 0..9 {
            assert_eq!(sticky.partition("t", 4, 100, 1000), first);
        }
        let next = sticky.partition("t", 4, 100, 1000);
        assert_eq!(next, (first + 1) % 4);
    }
}
