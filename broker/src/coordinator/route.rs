//! Which partition of a coordinator topic owns a key: Kafka's
//! `Utils.abs(key.hashCode()) % partitions` (`GroupCoordinatorService.partitionFor`, and the
//! transaction coordinator's), so tools that compute a group's or a transactional id's
//! coordinator partition agree with us.

/// Java's `String.hashCode`: `s[0]*31^(n-1) + … + s[n-1]` over the UTF-16 code units, in
/// wrapping 32-bit arithmetic.
pub fn java_string_hash(key: &str) -> i32 {
    key.encode_utf16().fold(0i32, |hash, unit| {
        hash.wrapping_mul(31).wrapping_add(i32::from(unit))
    })
}

/// Kafka's `Utils.abs`: the absolute value, except that `i32::MIN` (whose absolute value does
/// not fit) gives 0. Not `n & 0x7fffffff` (that is `Utils.toPositive`, the producer's
/// partitioner): the two differ for every negative hash.
fn kafka_abs(n: i32) -> i32 {
    if n == i32::MIN {
        0
    } else {
        n.abs()
    }
}

/// The partition of a topic with `partitions` partitions (at least 1) that coordinates `key`.
pub fn partition_for(key: &str, partitions: u32) -> u32 {
    assert!(partitions > 0, "a topic has at least one partition");
    // Kafka computes in `int`: a partition count above i32::MAX cannot exist there.
    let count = i64::from(partitions);
    let index = i64::from(kafka_abs(java_string_hash(key))) % count;
    index as u32
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_hash_is_javas_string_hash_code() {
        assert_eq!(java_string_hash(""), 0);
        assert_eq!(java_string_hash("a"), 97);
        assert_eq!(java_string_hash("ab"), 97 * 31 + 98);
        assert_eq!(java_string_hash("hello"), 99_162_322);
        assert_eq!(java_string_hash("my-group"), -1_906_497_762, "wraps");
        assert_eq!(java_string_hash("polygenelubricants"), i32::MIN);
        // Outside the BMP: two UTF-16 code units (0xD83D, 0xDE00), not one code point.
        assert_eq!(java_string_hash("\u{1F600}"), 0xD83D * 31 + 0xDE00);
        assert_eq!(java_string_hash("é-group"), 2_016_868_507);
    }

    #[test]
    fn keys_map_to_the_partitions_kafka_picks() {
        assert_eq!(partition_for("", 50), 0);
        assert_eq!(partition_for("a", 50), 47);
        // What Kafka's `abs(id.hashCode()) % 50` gives (as Kafka operators' tooling
        // documents it); `hash & 0x7fffffff` would give 36 and 18.
        assert_eq!(partition_for("my-group", 50), 12);
        assert_eq!(partition_for("kafka-txn-0", 50), 30);
        assert_eq!(partition_for("abcdefghijklmnop", 50), 32);
        assert_eq!(
            partition_for("polygenelubricants", 50),
            0,
            "i32::MIN maps to 0"
        );
        assert_eq!(partition_for("my-group", 1), 0);
    }
}
