//! Test-only: a key-value state machine for the runtime's tests.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use streambus_storage::SystemClock;

pub use crate::testing::Images;

use super::machine::{
    CoordinatorMachine, CoordinatorRecord, CoordinatorResult, OpContext, ReplayError,
};
use super::shard::ShardConfig;

/// Bounds every wait in these tests.
pub const TEST_WAIT: Duration = Duration::from_secs(10);
/// How long a test watches for something that must not happen.
pub const NOT_YET: Duration = Duration::from_millis(100);

/// A map from string keys to string values; a timer deletes its key when it fires.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct KvMachine {
    pub map: BTreeMap<String, String>,
    /// Offsets replayed, in order.
    pub offsets: Vec<i64>,
}

impl CoordinatorMachine for KvMachine {
    type TimerKey = String;

    fn replay(
        &mut self,
        offset: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
    ) -> Result<(), ReplayError> {
        let text = |bytes: &[u8]| {
            String::from_utf8(bytes.to_vec()).map_err(|e| ReplayError(e.to_string()))
        };
        let key = text(key.ok_or_else(|| ReplayError("no key".to_owned()))?)?;
        match value {
            Some(value) => self.map.insert(key, text(value)?),
            None => self.map.remove(&key),
        };
        self.offsets.push(offset);
        Ok(())
    }

    fn on_timer(
        &mut self,
        key: String,
        _ctx: &mut OpContext<'_, String>,
    ) -> Vec<CoordinatorRecord> {
        vec![CoordinatorRecord::tombstone(key)]
    }
}

/// An operation writing `key = value`; answers the value it replaced.
pub fn put(
    key: &str,
    value: &str,
) -> impl FnOnce(&mut KvMachine, &mut OpContext<'_, String>) -> CoordinatorResult<Option<String>>
       + Send
       + 'static {
    let (key, value) = (key.to_owned(), value.to_owned());
    move |machine, _| {
        let previous = machine.map.get(&key).cloned();
        CoordinatorResult::new(
            vec![CoordinatorRecord::new(key.into_bytes(), value.into_bytes())],
            previous,
        )
    }
}

/// An operation deleting `key`.
pub fn delete(
    key: &str,
) -> impl FnOnce(&mut KvMachine, &mut OpContext<'_, String>) -> CoordinatorResult<()> + Send + 'static
{
    let key = key.to_owned();
    move |_, _| CoordinatorResult::new(vec![CoordinatorRecord::tombstone(key.into_bytes())], ())
}

pub fn shard_config(write_timeout: Duration) -> ShardConfig {
    ShardConfig {
        topic: "__test_state".to_owned(),
        partition: 0,
        write_timeout,
        clock: Arc::new(SystemClock),
    }
}
