//! Keyed timers of one coordinator state machine, with time passed in: `schedule` and `cancel`
//! by key, `expired(now_ms)` pops the due ones in deadline order. Pure (no clock, no tasks): the
//! shard drives it from a real clock, tests by hand. Timers are volatile state: a new
//! coordinator schedules them again after replay (`CoordinatorMachine::on_loaded`).

use std::collections::{BTreeMap, BTreeSet};

/// Pending timers by key; at most one per key.
#[derive(Debug, Clone)]
pub struct Timers<K: Ord + Clone> {
    /// Key → (deadline, sequence number of its scheduling).
    by_key: BTreeMap<K, (i64, u64)>,
    /// Due order: deadline, then scheduling order, so timers with equal deadlines fire in the
    /// order they were scheduled.
    queue: BTreeSet<(i64, u64, K)>,
    next_seq: u64,
    /// While an operation runs: what each timer it touched was before, oldest first, so that
    /// an operation whose records the log refused leaves the timers as they were.
    undo: Option<Vec<(K, Option<i64>)>>,
}

impl<K: Ord + Clone> Default for Timers<K> {
    fn default() -> Self {
        Timers {
            by_key: BTreeMap::new(),
            queue: BTreeSet::new(),
            next_seq: 0,
            undo: None,
        }
    }
}

impl<K: Ord + Clone> Timers<K> {
    pub fn new() -> Self {
        Self::default()
    }

    /// Schedules `key` to fire at `deadline_ms`, replacing its pending timer if it has one.
    pub fn schedule(&mut self, key: K, deadline_ms: i64) {
        self.remember(&key);
        self.remove(&key);
        self.insert(key, deadline_ms);
    }

    /// Cancels `key`'s pending timer; whether it had one.
    pub fn cancel(&mut self, key: &K) -> bool {
        self.remember(key);
        self.remove(key)
    }

    /// Starts recording what [`Timers::schedule`] and [`Timers::cancel`] change.
    pub fn begin_undo(&mut self) {
        self.undo = Some(Vec::new());
    }

    /// Keeps the changes made since [`Timers::begin_undo`].
    pub fn keep_changes(&mut self) {
        self.undo = None;
    }

    /// Puts back every timer changed since [`Timers::begin_undo`].
    pub fn undo_changes(&mut self) {
        let Some(changes) = self.undo.take() else {
            return;
        };
        for (key, before) in changes.into_iter().rev() {
            self.remove(&key);
            if let Some(deadline_ms) = before {
                self.insert(key, deadline_ms);
            }
        }
    }

    fn remember(&mut self, key: &K) {
        let before = self.deadline_ms(key);
        if let Some(undo) = self.undo.as_mut() {
            undo.push((key.clone(), before));
        }
    }

    fn insert(&mut self, key: K, deadline_ms: i64) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.queue.insert((deadline_ms, seq, key.clone()));
        self.by_key.insert(key, (deadline_ms, seq));
    }

    fn remove(&mut self, key: &K) -> bool {
        match self.by_key.remove(key) {
            Some((deadline_ms, seq)) => {
                let removed = self.queue.remove(&(deadline_ms, seq, key.clone()));
                debug_assert!(removed, "timer queue and key index agree");
                true
            }
            None => false,
        }
    }

    /// `key`'s deadline, if it has a pending timer.
    pub fn deadline_ms(&self, key: &K) -> Option<i64> {
        self.by_key.get(key).map(|(deadline_ms, _)| *deadline_ms)
    }

    /// The earliest pending deadline.
    pub fn next_deadline_ms(&self) -> Option<i64> {
        self.queue.first().map(|(deadline_ms, _, _)| *deadline_ms)
    }

    /// Removes and returns the timers due at `now_ms` (deadline at or before it), earliest
    /// deadline first.
    pub fn expired(&mut self, now_ms: i64) -> Vec<K> {
        let mut due = Vec::new();
        // Each pass removes one entry; bounded by the number of pending timers.
        while let Some((deadline_ms, _, _)) = self.queue.first() {
            if *deadline_ms > now_ms {
                break;
            }
            let Some((_, _, key)) = self.queue.pop_first() else {
                break;
            };
            self.by_key.remove(&key);
            due.push(key);
        }
        due
    }

    /// Removes and returns the earliest timer due at `now_ms`, if any. Callers that run each
    /// timer before taking the next use this rather than [`Timers::expired`]: a callback may
    /// cancel or move a timer that is also due, which must then not fire.
    pub fn pop_due(&mut self, now_ms: i64) -> Option<K> {
        let (deadline_ms, _, _) = self.queue.first()?;
        if *deadline_ms > now_ms {
            return None;
        }
        let (_, _, key) = self.queue.pop_first()?;
        self.by_key.remove(&key);
        Some(key)
    }

    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_key.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_made_under_undo_are_put_back() {
        let mut timers: Timers<&str> = Timers::new();
        timers.schedule("kept", 10);
        timers.schedule("moved", 20);
        timers.begin_undo();
        timers.cancel(&"kept");
        timers.schedule("moved", 5);
        timers.schedule("new", 1);
        timers.undo_changes();
        assert_eq!(timers.deadline_ms(&"kept"), Some(10));
        assert_eq!(timers.deadline_ms(&"moved"), Some(20));
        assert_eq!(timers.deadline_ms(&"new"), None);
        assert_eq!(timers.expired(100), vec!["kept", "moved"]);
        timers.begin_undo();
        timers.schedule("stays", 3);
        timers.keep_changes();
        timers.undo_changes();
        assert_eq!(timers.deadline_ms(&"stays"), Some(3));
    }

    #[test]
    fn timers_fire_in_deadline_order_and_cancelled_ones_do_not() {
        let mut timers = Timers::new();
        timers.schedule("session-b", 300);
        timers.schedule("session-a", 100);
        timers.schedule("rebalance", 200);
        timers.schedule("cancelled", 150);
        timers.schedule("same-deadline-later", 200);
        assert!(timers.cancel(&"cancelled"));
        assert!(!timers.cancel(&"cancelled"), "cancelled once only");
        assert_eq!(timers.next_deadline_ms(), Some(100));

        assert!(timers.expired(99).is_empty(), "nothing due yet");
        assert_eq!(
            timers.expired(100),
            vec!["session-a"],
            "due at its deadline"
        );
        assert_eq!(
            timers.expired(250),
            vec!["rebalance", "same-deadline-later"],
            "equal deadlines fire in scheduling order"
        );
        assert_eq!(timers.len(), 1);
        assert_eq!(timers.expired(1_000), vec!["session-b"]);
        assert!(timers.is_empty());
        assert_eq!(timers.next_deadline_ms(), None);
    }

    #[test]
    fn scheduling_a_key_again_replaces_its_deadline() {
        let mut timers = Timers::new();
        timers.schedule(1u32, 100);
        timers.schedule(2u32, 150);
        timers.schedule(1u32, 200);
        assert_eq!(timers.len(), 2);
        assert_eq!(timers.deadline_ms(&1), Some(200));
        assert_eq!(
            timers.expired(199),
            vec![2],
            "the old deadline no longer fires"
        );
        assert_eq!(timers.expired(200), vec![1]);
    }
}
