//! Per-partition recovery points kept in the broker-local KV store: where crash recovery of
//! each log starts scanning. The broker saves them periodically from `Log::recovery_point`;
//! a stale (lower) value only costs a longer scan, never correctness.

use std::sync::Arc;

use crate::error::{Result, StorageError};
use crate::kv::{KvOp, KvStore, CF_RECOVERY_POINTS};

/// Reads and writes recovery points, keyed by partition directory name (`<topic>-<partition>`).
#[derive(Debug, Clone)]
pub struct RecoveryPoints {
    kv: Arc<dyn KvStore>,
}

impl RecoveryPoints {
    /// Recovery points stored in `kv`.
    pub fn new(kv: Arc<dyn KvStore>) -> Self {
        RecoveryPoints { kv }
    }

    /// The saved recovery point of `partition`, 0 (scan everything) if none.
    pub fn get(&self, partition: &str) -> Result<i64> {
        match self.kv.get(CF_RECOVERY_POINTS, partition.as_bytes())? {
            None => Ok(0),
            Some(value) => <[u8; 8]>::try_from(value.as_slice())
                .map(i64::from_be_bytes)
                .map_err(|_| {
                    StorageError::Kv(format!("recovery point of {partition} is not 8 bytes"))
                }),
        }
    }

    /// Saves several recovery points in one atomic write.
    pub fn save(&self, points: &[(&str, i64)]) -> Result<()> {
        let encoded: Vec<(&str, [u8; 8])> = points
            .iter()
            .map(|(p, offset)| (*p, offset.to_be_bytes()))
            .collect();
        let ops: Vec<KvOp<'_>> = encoded
            .iter()
            .map(|(p, v)| KvOp::put(CF_RECOVERY_POINTS, p.as_bytes(), v))
            .collect();
        self.kv.write_batch(&ops)
    }

    /// Forgets a deleted partition.
    pub fn remove(&self, partition: &str) -> Result<()> {
        self.kv.delete(CF_RECOVERY_POINTS, partition.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kv::MemKv;

    #[test]
    fn save_get_remove() {
        let kv: Arc<dyn KvStore> = Arc::new(MemKv::new(crate::kv::COLUMN_FAMILIES));
        let points = RecoveryPoints::new(kv);
        assert_eq!(points.get("t-0").expect("get"), 0);
        points.save(&[("t-0", 42), ("t-1", 7)]).expect("save");
        assert_eq!(points.get("t-0").expect("get"), 42);
        assert_eq!(points.get("t-1").expect("get"), 7);
        points.remove("t-0").expect("remove");
        assert_eq!(points.get("t-0").expect("get"), 0);
    }
}
