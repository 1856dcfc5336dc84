//! Coordinator records to and from Kafka v2 record batches, with kafka-protocol's codec (through
//! the storage crate's `encode_records` and bounded `decode_batch`). A coordinator's own batches
//! carry no producer id, as Kafka's do; transactional offset commits are in a transactional
//! batch of their producer, and transaction markers in control batches.

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, TimestampType};
use streambus_storage::batch::{self, BatchIter, BatchStep};
use streambus_storage::decompress;

use super::log::LoggedRecord;
use super::machine::{Batch, CoordinatorRecord};
use super::CoordinatorError;

/// Encodes `records` as one uncompressed batch of kind `kind` at base offset 0 (the log assigns
/// offsets), stamped `now_ms`.
pub fn encode(
    records: &[CoordinatorRecord],
    kind: Batch,
    now_ms: i64,
) -> Result<Bytes, CoordinatorError> {
    let codec_error = |error: streambus_storage::BatchError| CoordinatorError::Codec {
        offset: -1,
        reason: error.to_string(),
    };
    let (transactional, producer_id, producer_epoch) = match kind {
        Batch::Plain => (false, -1, -1),
        Batch::Transactional {
            producer_id,
            producer_epoch,
            ..
        } => (true, producer_id, producer_epoch),
        Batch::Marker {
            producer_id,
            producer_epoch,
            commit,
            coordinator_epoch,
        } => {
            return batch::marker_batch(
                producer_id,
                producer_epoch,
                commit,
                coordinator_epoch,
                now_ms,
            )
            .map_err(codec_error);
        }
    };
    let mut encoded: Vec<Record> = records
        .iter()
        .enumerate()
        .map(|(i, record)| Record {
            transactional,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: -1,
            producer_id,
            producer_epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: -1,
            timestamp: now_ms,
            key: Some(record.key.clone()),
            value: record.value.clone(),
            headers: Default::default(),
        })
        .collect();
    let batch = batch::encode_records(&mut encoded, Compression::None).map_err(|error| {
        CoordinatorError::Codec {
            offset: -1,
            reason: error.to_string(),
        }
    })?;
    let batch = batch.freeze();
    // Checked on this side of the write too: exactly one valid batch holding every record.
    let header = batch::validate(&batch, batch::OffsetGaps::Forbidden).map_err(|error| {
        CoordinatorError::Codec {
            offset: -1,
            reason: error.to_string(),
        }
    })?;
    debug_assert_eq!(header.total_len(), batch.len());
    debug_assert_eq!(header.records_count as usize, records.len());
    Ok(batch)
}

/// The records of the whole batches in `batches` at or after `from_offset`, and the offset after
/// the last batch. A control batch (a transaction marker) comes back as one record with
/// `marker` set; a partial batch at the end is left for the next read. `decompressed_bytes_max`
/// bounds what one batch may inflate to.
pub fn decode(
    batches: &Bytes,
    from_offset: i64,
    decompressed_bytes_max: usize,
) -> Result<(Vec<LoggedRecord>, i64), CoordinatorError> {
    let mut records = Vec::new();
    let mut next_offset = from_offset;
    for step in BatchIter::new(batches) {
        let (position, header) = match step {
            BatchStep::Batch { position, header } => (position, header),
            BatchStep::Partial { .. } => break,
            BatchStep::Invalid { .. } => {
                return Err(CoordinatorError::Codec {
                    offset: next_offset,
                    reason: "impossible batch length".to_owned(),
                })
            }
        };
        next_offset = next_offset.max(header.next_offset());
        let one = batches.slice(position..position + header.total_len());
        if header.is_control() {
            if header.base_offset >= from_offset {
                let commit =
                    batch::control_type(&one).map_err(|error| CoordinatorError::Codec {
                        offset: header.base_offset,
                        reason: error.to_string(),
                    })? == batch::ControlType::Commit;
                records.push(LoggedRecord {
                    offset: header.base_offset,
                    producer_id: header.producer_id,
                    marker: Some(commit),
                    key: None,
                    value: None,
                });
            }
            continue;
        }
        let producer_id = if header.is_transactional() {
            header.producer_id
        } else {
            -1
        };
        let mut one = one;
        let set = decompress::decode_batch(&mut one, decompressed_bytes_max).map_err(|error| {
            CoordinatorError::Codec {
                offset: header.base_offset,
                reason: error.to_string(),
            }
        })?;
        records.extend(
            set.records
                .into_iter()
                .filter(|record| record.offset >= from_offset)
                .map(|record| LoggedRecord {
                    offset: record.offset,
                    producer_id,
                    marker: None,
                    key: record.key,
                    value: record.value,
                }),
        );
    }
    Ok((records, next_offset))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_come_back_with_their_offsets_keys_values_and_tombstones() {
        let written = vec![
            CoordinatorRecord::new("k1", "v1"),
            CoordinatorRecord::tombstone("k2"),
            CoordinatorRecord::new("k3", ""),
        ];
        let mut batch = bytes::BytesMut::from(&encode(&written, Batch::Plain, 1_000).unwrap()[..]);
        batch::set_base_offset(&mut batch, 10);
        let batch = batch.freeze();
        let header = batch::validate(&batch, batch::OffsetGaps::Forbidden).unwrap();
        assert_eq!(header.producer_id, -1);
        assert!(!header.is_transactional());

        let (read, next) = decode(&batch, 0, 1 << 20).unwrap();
        assert_eq!(next, 13);
        let keys: Vec<_> = read.iter().map(|r| (r.offset, r.key.clone())).collect();
        assert_eq!(
            keys,
            vec![
                (10, Some(Bytes::from("k1"))),
                (11, Some(Bytes::from("k2"))),
                (12, Some(Bytes::from("k3")))
            ]
        );
        assert_eq!(read[0].value, Some(Bytes::from("v1")));
        assert_eq!(read[1].value, None, "a tombstone has no value");
        assert_eq!(
            read[2].value,
            Some(Bytes::new()),
            "empty is not a tombstone"
        );

        let (from_middle, _) = decode(&batch, 12, 1 << 20).unwrap();
        assert_eq!(
            from_middle.len(),
            1,
            "records before the start are left out"
        );
        let (partial, next) = decode(&batch.slice(..batch.len() - 1), 10, 1 << 20).unwrap();
        assert!(
            partial.is_empty(),
            "a partial batch waits for the next read"
        );
        assert_eq!(next, 10);
    }

    #[test]
    fn a_transactional_batch_and_a_marker_come_back_with_their_producer() {
        let written = vec![
            CoordinatorRecord::new("k1", "v1"),
            CoordinatorRecord::new("k2", "v2"),
        ];
        let kind = Batch::Transactional {
            producer_id: 42,
            producer_epoch: 3,
            guard: None,
        };
        let txn = encode(&written, kind, 1_000).unwrap();
        let header = batch::validate(&txn, batch::OffsetGaps::Forbidden).unwrap();
        assert!(header.is_transactional() && !header.is_control());
        assert_eq!(
            (
                header.producer_id,
                header.producer_epoch,
                header.base_sequence
            ),
            (42, 3, -1)
        );
        assert_eq!(header.records_count, 2, "one batch for both records");
        let marker = Batch::Marker {
            producer_id: 42,
            producer_epoch: 3,
            commit: true,
            coordinator_epoch: 9,
        };
        let mut marker = bytes::BytesMut::from(&encode(&[], marker, 1_000).unwrap()[..]);
        batch::set_base_offset(&mut marker, 2);
        let mut both = bytes::BytesMut::from(&txn[..]);
        both.extend_from_slice(&marker);
        let (read, next) = decode(&both.freeze(), 0, 1 << 20).unwrap();
        assert_eq!(next, 3);
        let seen: Vec<_> = read
            .iter()
            .map(|r| (r.offset, r.producer_id, r.marker))
            .collect();
        assert_eq!(
            seen,
            vec![(0, 42, None), (1, 42, None), (2, 42, Some(true))]
        );
    }
}
