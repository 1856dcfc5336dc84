//! [`MemKv`]: the in-memory [`KvStore`], for tests of code built on the store.

use std::collections::BTreeMap;
use std::ops::Bound;
use std::sync::{Mutex, MutexGuard};

use super::{KvOp, KvStore};
use crate::error::{Result, StorageError};

type Tree = BTreeMap<Vec<u8>, Vec<u8>>;

/// A [`KvStore`] in memory: one mutex-guarded ordered map per column family. Nothing survives the
/// value; `flush` does nothing.
#[derive(Debug)]
pub struct MemKv {
    /// Fixed at construction, so the outer map needs no lock. Its sorted order is also the order
    /// in which `write_batch` takes several locks, which rules out deadlocks.
    cfs: BTreeMap<String, Mutex<Tree>>,
}

impl MemKv {
    /// An empty store with the column families `cfs` (duplicates are ignored).
    pub fn new(cfs: &[&str]) -> MemKv {
        let cfs = cfs
            .iter()
            .map(|name| ((*name).to_owned(), Mutex::new(Tree::new())))
            .collect();
        MemKv { cfs }
    }

    fn tree(&self, cf: &str) -> Result<MutexGuard<'_, Tree>> {
        let tree = self
            .cfs
            .get(cf)
            .ok_or_else(|| StorageError::UnknownColumnFamily(cf.to_owned()))?;
        lock(cf, tree)
    }
}

/// A poisoned lock means a thread panicked while writing, possibly mid-batch: report it rather
/// than hand out state that may break the batch's atomicity.
fn lock<'a>(cf: &str, tree: &'a Mutex<Tree>) -> Result<MutexGuard<'a, Tree>> {
    tree.lock()
        .map_err(|_| StorageError::Kv(format!("column family {cf}: lock poisoned")))
}

impl KvStore for MemKv {
    fn get(&self, cf: &str, key: &[u8]) -> Result<Option<Vec<u8>>> {
        Ok(self.tree(cf)?.get(key).cloned())
    }

    fn put(&self, cf: &str, key: &[u8], value: &[u8]) -> Result<()> {
        self.tree(cf)?.insert(key.to_vec(), value.to_vec());
        Ok(())
    }

    fn delete(&self, cf: &str, key: &[u8]) -> Result<()> {
        self.tree(cf)?.remove(key);
        Ok(())
    }

    fn write_batch(&self, ops: &[KvOp<'_>]) -> Result<()> {
        // Check every column family before locking or changing anything, so a bad batch applies
        // nothing.
        if let Some(op) = ops.iter().find(|op| !self.cfs.contains_key(op.cf())) {
            return Err(StorageError::UnknownColumnFamily(op.cf().to_owned()));
        }
        // Hold the lock of every column family the batch touches until all ops are applied, so
        // no reader sees half of it. Locks are taken in the map's sorted order.
        let mut guards = BTreeMap::new();
        for (name, tree) in &self.cfs {
            if ops.iter().any(|op| op.cf() == name) {
                guards.insert(name.as_str(), lock(name, tree)?);
            }
        }
        for op in ops {
            let Some(tree) = guards.get_mut(op.cf()) else {
                return Err(StorageError::UnknownColumnFamily(op.cf().to_owned()));
            };
            match op {
                KvOp::Put { key, value, .. } => {
                    tree.insert(key.to_vec(), value.to_vec());
                }
                KvOp::Delete { key, .. } => {
                    tree.remove(*key);
                }
            }
        }
        Ok(())
    }

    fn scan_prefix(
        &self,
        cf: &str,
        prefix: &[u8],
        limit: usize,
    ) -> Result<Vec<(Vec<u8>, Vec<u8>)>> {
        let tree = self.tree(cf)?;
        let range = (Bound::Included(prefix.to_vec()), Bound::Unbounded);
        Ok(tree
            .range::<Vec<u8>, _>(range)
            .take_while(|(key, _)| key.starts_with(prefix))
            .take(limit)
            .map(|(key, value)| (key.clone(), value.clone()))
            .collect())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::MemKv;
    use crate::kv::{kv_conformance_tests, COLUMN_FAMILIES};

    kv_conformance_tests!(((), MemKv::new(COLUMN_FAMILIES)));
}
