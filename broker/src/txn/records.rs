//! The records of `__transaction_state`, byte for byte as Apache Kafka writes them, so that a
//! tool reading the topic (`kafka-console-consumer --formatter TransactionLogMessageFormatter`)
//! reads ours and a log Kafka wrote replays here.
//!
//! Framing (Kafka's `TransactionLog`): the key is an int16 version (0) and `TransactionLogKey`
//! (the transactional id as an int16-length string); the value an int16 version and
//! `TransactionLogValue`; a tombstone (null value) removes an expired transactional id.
//!
//! `TransactionLogValue` (Kafka's `transaction-coordinator/src/main/resources/common/message/`):
//! versions 0–1, flexible from 1. `producerId` int64, `producerEpoch` int16,
//! `transactionTimeoutMs` int32, `transactionStatus` int8, `transactionPartitions` a nullable
//! array of (`topic` string, `partitionIds` []int32) — null in Empty —,
//! `transactionLastUpdateTimestampMs` and `transactionStartTimestampMs` int64; v1 adds the
//! tagged `previousProducerId` (tag 0, default -1), `nextProducerId` (tag 1, default -1) and
//! `clientTransactionVersion` (tag 2, int16, default 0). Kafka writes version 0 under
//! `transaction.version` 0 and version 1 from 1 on (`TransactionVersion.transactionLogValueVersion`);
//! a tagged field is written only when it differs from its default.
//!
//! Decoding never panics and allocates at most in proportion to the input (the primitives of
//! [`crate::coordinator::schema`]). It is stricter than Kafka in refusing trailing bytes and a
//! known tagged field of the wrong size; unknown tags are skipped.

use bytes::Bytes;

use crate::coordinator::schema::{check_version, Reader, RecordError, Writer};

/// The only version of `TransactionLogKey`.
const KEY_VERSION: i16 = 0;
/// The newest version of `TransactionLogValue`.
pub const VALUE_MAX_VERSION: i16 = 1;
/// The first flexible version of `TransactionLogValue`.
const VALUE_FIRST_FLEXIBLE: i16 = 1;
const PREVIOUS_PRODUCER_ID_TAG: u32 = 0;
const NEXT_PRODUCER_ID_TAG: u32 = 1;
const CLIENT_TRANSACTION_VERSION_TAG: u32 = 2;

/// A transaction's state, with Kafka's ids (`TransactionState.id`, the record's
/// `transactionStatus`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TxnState {
    Empty,
    Ongoing,
    PrepareCommit,
    PrepareAbort,
    CompleteCommit,
    CompleteAbort,
    Dead,
    PrepareEpochFence,
}

impl TxnState {
    pub fn id(self) -> i8 {
        match self {
            TxnState::Empty => 0,
            TxnState::Ongoing => 1,
            TxnState::PrepareCommit => 2,
            TxnState::PrepareAbort => 3,
            TxnState::CompleteCommit => 4,
            TxnState::CompleteAbort => 5,
            TxnState::Dead => 6,
            TxnState::PrepareEpochFence => 7,
        }
    }

    pub fn from_id(id: i8) -> Option<TxnState> {
        Some(match id {
            0 => TxnState::Empty,
            1 => TxnState::Ongoing,
            2 => TxnState::PrepareCommit,
            3 => TxnState::PrepareAbort,
            4 => TxnState::CompleteCommit,
            5 => TxnState::CompleteAbort,
            6 => TxnState::Dead,
            7 => TxnState::PrepareEpochFence,
            _ => return None,
        })
    }

    /// Kafka's names (DescribeTransactions, ListTransactions' state filter).
    pub fn name(self) -> &'static str {
        match self {
            TxnState::Empty => "Empty",
            TxnState::Ongoing => "Ongoing",
            TxnState::PrepareCommit => "PrepareCommit",
            TxnState::PrepareAbort => "PrepareAbort",
            TxnState::CompleteCommit => "CompleteCommit",
            TxnState::CompleteAbort => "CompleteAbort",
            TxnState::Dead => "Dead",
            TxnState::PrepareEpochFence => "PrepareEpochFence",
        }
    }
}

/// `TransactionLogValue`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxnLogValue {
    pub producer_id: i64,
    /// v1 tag 0: the producer id of the last committed transaction (-1: none).
    pub previous_producer_id: i64,
    /// v1 tag 1: the producer id handed out next (-1: none).
    pub next_producer_id: i64,
    pub producer_epoch: i16,
    pub timeout_ms: i32,
    pub state: TxnState,
    /// The transaction's partitions by topic; `None` (null) in Empty.
    pub partitions: Option<Vec<(String, Vec<i32>)>>,
    pub last_update_ms: i64,
    pub start_ms: i64,
    /// v1 tag 2: the client's transaction version (0 default, 2 for KIP-890 part 2).
    pub client_transaction_version: i16,
}

/// The key of a transactional id's record.
pub fn encode_key(transactional_id: &str) -> Result<Bytes, RecordError> {
    let mut w = Writer::new("TransactionLogKey", KEY_VERSION, false);
    w.string("transactionalId", transactional_id)?;
    Ok(w.finish())
}

/// The transactional id of a record key.
pub fn decode_key(bytes: &[u8]) -> Result<String, RecordError> {
    let mut r = Reader::new("TransactionLogKey", bytes, false);
    let version = r.i16("version")?;
    check_version("TransactionLogKey", version, KEY_VERSION)?;
    let id = r.string("transactionalId")?;
    r.finish()?;
    Ok(id)
}

impl TxnLogValue {
    /// Encodes at `version` (0 or 1); version 0 drops the tagged fields.
    pub fn encode(&self, version: i16) -> Result<Bytes, RecordError> {
        check_version("TransactionLogValue", version, VALUE_MAX_VERSION)?;
        let flexible = version >= VALUE_FIRST_FLEXIBLE;
        let mut w = Writer::new("TransactionLogValue", version, flexible);
        w.i64(self.producer_id);
        w.i16(self.producer_epoch);
        w.i32(self.timeout_ms);
        w.i8(self.state.id());
        match &self.partitions {
            None => w.null_array(),
            Some(topics) => {
                w.array_len("transactionPartitions", topics.len())?;
                for (topic, partitions) in topics {
                    w.string("topic", topic)?;
                    w.i32_array("partitionIds", partitions)?;
                    if flexible {
                        w.tagged_fields(&[]);
                    }
                }
            }
        }
        w.i64(self.last_update_ms);
        w.i64(self.start_ms);
        if flexible {
            let previous = self.previous_producer_id.to_be_bytes();
            let next = self.next_producer_id.to_be_bytes();
            let client = self.client_transaction_version.to_be_bytes();
            let mut tags: Vec<(u32, &[u8])> = Vec::new();
            if self.previous_producer_id != -1 {
                tags.push((PREVIOUS_PRODUCER_ID_TAG, &previous));
            }
            if self.next_producer_id != -1 {
                tags.push((NEXT_PRODUCER_ID_TAG, &next));
            }
            if self.client_transaction_version != 0 {
                tags.push((CLIENT_TRANSACTION_VERSION_TAG, &client));
            }
            w.tagged_fields(&tags);
        }
        Ok(w.finish())
    }

    pub fn decode(bytes: &[u8]) -> Result<TxnLogValue, RecordError> {
        let mut r = Reader::new("TransactionLogValue", bytes, false);
        let version = r.i16("version")?;
        check_version("TransactionLogValue", version, VALUE_MAX_VERSION)?;
        r.flexible = version >= VALUE_FIRST_FLEXIBLE;
        let producer_id = r.i64("producerId")?;
        let producer_epoch = r.i16("producerEpoch")?;
        let timeout_ms = r.i32("transactionTimeoutMs")?;
        let status = r.i8("transactionStatus")?;
        let state = TxnState::from_id(status).ok_or_else(|| {
            r.invalid("transactionStatus", format_args!("unknown state {status}"))
        })?;
        let partitions = match r.nullable_array_len("transactionPartitions")? {
            None => None,
            Some(count) => {
                let mut topics = Vec::with_capacity(count);
                for _ in 0..count {
                    let topic = r.string("topic")?;
                    let ids = r.i32_array("partitionIds")?;
                    if r.flexible {
                        r.tagged_fields(|_, _| Ok(()))?;
                    }
                    topics.push((topic, ids));
                }
                Some(topics)
            }
        };
        let last_update_ms = r.i64("transactionLastUpdateTimestampMs")?;
        let start_ms = r.i64("transactionStartTimestampMs")?;
        let mut value = TxnLogValue {
            producer_id,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch,
            timeout_ms,
            state,
            partitions,
            last_update_ms,
            start_ms,
            client_transaction_version: 0,
        };
        if r.flexible {
            r.tagged_fields(|tag, data| {
                let sized = |n: usize| {
                    if data.len() == n {
                        Ok(())
                    } else {
                        Err(format!("tag {tag} has {} bytes, expected {n}", data.len()))
                    }
                };
                match tag {
                    PREVIOUS_PRODUCER_ID_TAG => {
                        sized(8)?;
                        value.previous_producer_id = i64::from_be_bytes(eight(data));
                    }
                    NEXT_PRODUCER_ID_TAG => {
                        sized(8)?;
                        value.next_producer_id = i64::from_be_bytes(eight(data));
                    }
                    CLIENT_TRANSACTION_VERSION_TAG => {
                        sized(2)?;
                        value.client_transaction_version = i16::from_be_bytes([data[0], data[1]]);
                    }
                    _ => {}
                }
                Ok(())
            })?;
        }
        r.finish()?;
        Ok(value)
    }
}

/// The first eight bytes of `data` (checked to be eight long by the caller).
fn eight(data: &[u8]) -> [u8; 8] {
    let mut out = [0; 8];
    out.copy_from_slice(&data[..8]);
    out
}

#[cfg(test)]
mod tests {
    use bytes::{BufMut, BytesMut};

    use super::*;

    /// A big-endian int16-length string, as the golden vectors spell it.
    fn str16(out: &mut BytesMut, s: &str) {
        out.put_i16(s.len() as i16);
        out.put_slice(s.as_bytes());
    }

    fn value() -> TxnLogValue {
        TxnLogValue {
            producer_id: 1000,
            previous_producer_id: -1,
            next_producer_id: -1,
            producer_epoch: 3,
            timeout_ms: 60_000,
            state: TxnState::Ongoing,
            partitions: Some(vec![
                ("a".to_owned(), vec![0, 2]),
                ("b".to_owned(), vec![1]),
            ]),
            last_update_ms: 1_700_000_000_123,
            start_ms: 1_700_000_000_000,
            client_transaction_version: 0,
        }
    }

    #[test]
    fn key_golden_bytes() {
        let mut want = BytesMut::new();
        want.put_i16(0);
        str16(&mut want, "my-txn");
        assert_eq!(encode_key("my-txn").unwrap(), want.freeze());
        assert_eq!(
            decode_key(&encode_key("my-txn").unwrap()).unwrap(),
            "my-txn"
        );
    }

    /// Version 0 as Kafka's generated `TransactionLogValue.write` lays it out.
    #[test]
    fn value_v0_golden_bytes() {
        let mut want = BytesMut::new();
        want.put_i16(0);
        want.put_i64(1000);
        want.put_i16(3);
        want.put_i32(60_000);
        want.put_i8(1);
        want.put_i32(2);
        str16(&mut want, "a");
        want.put_i32(2);
        want.put_i32(0);
        want.put_i32(2);
        str16(&mut want, "b");
        want.put_i32(1);
        want.put_i32(1);
        want.put_i64(1_700_000_000_123);
        want.put_i64(1_700_000_000_000);
        assert_eq!(value().encode(0).unwrap(), want.freeze());
    }

    /// Version 1: compact forms, a tagged section per partition entry and at the end with
    /// only the fields that differ from their defaults.
    #[test]
    fn value_v1_golden_bytes() {
        let mut v = value();
        v.state = TxnState::Empty;
        v.partitions = None;
        v.previous_producer_id = 999;
        v.client_transaction_version = 2;
        let mut want = BytesMut::new();
        want.put_i16(1);
        want.put_i64(1000);
        want.put_i16(3);
        want.put_i32(60_000);
        want.put_i8(0);
        want.put_u8(0); // null compact array
        want.put_i64(1_700_000_000_123);
        want.put_i64(1_700_000_000_000);
        want.put_u8(2); // two tagged fields
        want.put_u8(0);
        want.put_u8(8);
        want.put_i64(999);
        want.put_u8(2);
        want.put_u8(2);
        want.put_i16(2);
        assert_eq!(v.encode(1).unwrap(), want.freeze());

        let mut with_partitions = value();
        with_partitions.partitions = Some(vec![("a".to_owned(), vec![7])]);
        let mut want = BytesMut::new();
        want.put_i16(1);
        want.put_i64(1000);
        want.put_i16(3);
        want.put_i32(60_000);
        want.put_i8(1);
        want.put_u8(2); // one entry
        want.put_u8(2); // compact "a"
        want.put_u8(b'a');
        want.put_u8(2); // one partition id
        want.put_i32(7);
        want.put_u8(0); // the entry's tags
        want.put_i64(1_700_000_000_123);
        want.put_i64(1_700_000_000_000);
        want.put_u8(0);
        assert_eq!(with_partitions.encode(1).unwrap(), want.freeze());
    }

    #[test]
    fn values_round_trip_at_both_versions() {
        let mut tagged = value();
        tagged.previous_producer_id = 7;
        tagged.next_producer_id = 8;
        tagged.client_transaction_version = 2;
        for state in [
            TxnState::Empty,
            TxnState::PrepareCommit,
            TxnState::PrepareEpochFence,
        ] {
            let mut v = tagged.clone();
            v.state = state;
            assert_eq!(TxnLogValue::decode(&v.encode(1).unwrap()).unwrap(), v);
            let untagged = TxnLogValue {
                previous_producer_id: -1,
                next_producer_id: -1,
                client_transaction_version: 0,
                ..v.clone()
            };
            assert_eq!(
                TxnLogValue::decode(&v.encode(0).unwrap()).unwrap(),
                untagged
            );
        }
    }

    #[test]
    fn corrupt_values_are_errors_not_panics() {
        let good = value().encode(1).unwrap();
        for cut in 0..good.len() {
            assert!(TxnLogValue::decode(&good[..cut]).is_err(), "cut at {cut}");
        }
        let mut trailing = good.to_vec();
        trailing.push(0);
        assert!(TxnLogValue::decode(&trailing).is_err());
        let mut bad_state = good.to_vec();
        bad_state[2 + 8 + 2 + 4] = 42;
        assert!(TxnLogValue::decode(&bad_state).is_err());
        assert!(TxnLogValue::decode(&[0, 2]).is_err(), "unknown version");
        // Every byte flipped in turn: an error or a value, never a panic.
        for i in 0..good.len() {
            let mut flipped = good.to_vec();
            flipped[i] ^= 0xff;
            let _ = TxnLogValue::decode(&flipped);
        }
    }
}
