//! DeleteRecords: moving a partition's log start offset up, on a partition this broker leads.
//! Only committed records may go, so an offset past the high watermark is out of range.

use streambus_raft::MetadataImage;

use super::OpsError;
use crate::context::BrokerContext;

/// How far DeleteRecords deletes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DeleteUpTo {
    /// Everything committed: up to the high watermark.
    HighWatermark,
    /// Everything below this offset.
    Offset(i64),
}

/// Deletes the records of partition `index` of `topic` before `up_to`, on this broker, which
/// must lead it per `image`. Returns the new log start offset (Kafka's low watermark).
pub async fn delete_records(
    ctx: &BrokerContext,
    image: &MetadataImage,
    topic: &str,
    index: i32,
    up_to: DeleteUpTo,
) -> Result<i64, OpsError> {
    let partition = ctx
        .partitions
        .led(image, image.topic_by_name(topic), index, -1)
        .await
        .map_err(OpsError::Lookup)?;
    let offset = match up_to {
        DeleteUpTo::HighWatermark => None,
        DeleteUpTo::Offset(offset) => Some(offset),
    };
    partition
        .delete_records(offset)
        .await
        .map_err(|error| OpsError::Partition(std::sync::Arc::new(error)))
}
