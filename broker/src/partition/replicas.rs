//! The leader's view of its followers for one leader epoch: where each replica's log ends, when
//! it was last caught up, the high watermark the in-sync replicas allow, and which ISR changes
//! the followers' progress calls for. Pure: time comes in as arguments, so the rules are tested
//! without a clock.
//!
//! The rules are Kafka's. A follower is caught up when it fetched at the leader's log end, or at
//! the log end the leader had at that follower's previous fetch (so a steady stream of appends
//! does not make a keeping-up follower look late). While an ISR change is being committed, the
//! high watermark is computed over the *maximal* ISR (the committed members plus any member
//! being added): a replica about to join must already hold everything below the high
//! watermark, or it could become leader without committed records.

use std::collections::{BTreeMap, HashMap};

use streambus_raft::command::BrokerId;

/// What the leader knows about one follower.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct FollowerView {
    /// The follower's log end offset: the offset of its last fetch in this epoch (`None` until
    /// it fetched from this leader).
    log_end_offset: Option<i64>,
    last_caught_up_ms: i64,
    last_fetch_ms: i64,
    /// The leader's log end offset when that last fetch arrived.
    leader_end_at_last_fetch: i64,
    /// The broker epoch (incarnation) that fetch came from, -1 until one named it. An ISR
    /// addition carries it, so the controller refuses it if the follower restarted since
    /// (KIP-903): a restarted broker's log may be shorter than the position seen here.
    broker_epoch: i64,
}

/// An ISR change sent to the controller and not yet seen in a metadata image. The controller
/// applies it only at its base partition epoch (compare-and-set), so once the image shows a
/// later partition epoch the change either is that state or can never apply: that settles it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct PendingIsr {
    /// Committed ISR plus members being added.
    maximal: Vec<BrokerId>,
    new_isr: Vec<BrokerId>,
    base_partition_epoch: i32,
    /// The broker epoch of each member's fetch when the change was decided: a resend must
    /// carry the evidence it was decided on, not a later incarnation's.
    member_epochs: BTreeMap<BrokerId, i64>,
    /// Tells this change's answers from a earlier one's with the same base.
    seq: u64,
    /// When it was (last) sent.
    sent_ms: i64,
}

/// The leader's replica tracking for one leader epoch.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeaderView {
    pub leader_epoch: i32,
    /// The leader's log end offset when it took over. A follower below it may still have to
    /// truncate a divergent tail, so it does not join the ISR before reaching it.
    pub epoch_start_offset: i64,
    followers: HashMap<BrokerId, FollowerView>,
    pending: Option<PendingIsr>,
    next_seq: u64,
}

/// An ISR change for the controller (Kafka's AlterPartition).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    pub new_isr: Vec<BrokerId>,
    /// See [`PendingIsr::member_epochs`].
    pub member_epochs: BTreeMap<BrokerId, i64>,
    pub base_partition_epoch: i32,
    /// Identifies it for [`LeaderView::alter_refused`].
    pub seq: u64,
}

impl LeaderView {
    /// A new leader's view: every follower counts as caught up now (as in Kafka), so the ISR is
    /// not shrunk before followers had a chance to fetch from the new leader.
    pub fn new(
        leader_epoch: i32,
        epoch_start_offset: i64,
        replicas: &[BrokerId],
        me: BrokerId,
        now_ms: i64,
    ) -> LeaderView {
        let followers = replicas
            .iter()
            .filter(|&&r| r != me)
            .map(|&r| {
                (
                    r,
                    FollowerView {
                        log_end_offset: None,
                        last_caught_up_ms: now_ms,
                        last_fetch_ms: now_ms,
                        leader_end_at_last_fetch: epoch_start_offset,
                        broker_epoch: -1,
                    },
                )
            })
            .collect();
        LeaderView {
            leader_epoch,
            epoch_start_offset,
            followers,
            pending: None,
            next_seq: 0,
        }
    }

    /// Keeps the followers in step with a new replica list (reassignment).
    pub fn set_replicas(&mut self, replicas: &[BrokerId], me: BrokerId, now_ms: i64) {
        self.followers.retain(|r, _| replicas.contains(r));
        for &r in replicas.iter().filter(|&&r| r != me) {
            self.followers.entry(r).or_insert(FollowerView {
                log_end_offset: None,
                last_caught_up_ms: now_ms,
                last_fetch_ms: now_ms,
                leader_end_at_last_fetch: self.epoch_start_offset,
                broker_epoch: -1,
            });
        }
    }

    /// Records a fetch by `replica`, as its incarnation `broker_epoch` (-1: unnamed), at
    /// `fetch_offset` (its log end) while the leader's log ends at `leader_end`. Returns false
    /// for a broker that is not a follower of this partition. A fetch of an older incarnation
    /// than one already seen (a late request of a restarted broker) is not a position.
    pub fn on_fetch(
        &mut self,
        replica: BrokerId,
        broker_epoch: i64,
        fetch_offset: i64,
        leader_end: i64,
        now_ms: i64,
    ) -> bool {
        let Some(view) = self.followers.get_mut(&replica) else {
            return false;
        };
        if broker_epoch < view.broker_epoch {
            return true;
        }
        view.broker_epoch = broker_epoch;
        if fetch_offset >= leader_end {
            view.last_caught_up_ms = view.last_caught_up_ms.max(now_ms);
        } else if fetch_offset >= view.leader_end_at_last_fetch {
            view.last_caught_up_ms = view.last_caught_up_ms.max(view.last_fetch_ms);
        }
        view.log_end_offset = Some(fetch_offset);
        view.leader_end_at_last_fetch = leader_end;
        view.last_fetch_ms = now_ms;
        true
    }

    /// The high watermark the (maximal) ISR allows: the smallest log end among its members, or
    /// `None` while a member's position in this epoch is unknown.
    pub fn high_watermark(&self, me: BrokerId, isr: &[BrokerId], leader_end: i64) -> Option<i64> {
        let mut high_watermark = leader_end;
        for member in self.maximal_isr(isr) {
            if member == me {
                continue;
            }
            let end = self.followers.get(&member)?.log_end_offset?;
            high_watermark = high_watermark.min(end);
        }
        Some(high_watermark)
    }

    fn maximal_isr<'a>(&'a self, isr: &'a [BrokerId]) -> impl Iterator<Item = BrokerId> + 'a {
        let extra = self
            .pending
            .iter()
            .flat_map(|p| p.maximal.iter().copied())
            .filter(move |m| !isr.contains(m));
        isr.iter().copied().chain(extra)
    }

    /// The ISR with `replica` added, if it qualifies: outside the ISR, caught up to the high
    /// watermark and to the start of this leader epoch, and no other change in flight.
    pub fn expansion(
        &self,
        replica: BrokerId,
        isr: &[BrokerId],
        high_watermark: i64,
    ) -> Option<Vec<BrokerId>> {
        if self.pending.is_some() || isr.contains(&replica) {
            return None;
        }
        let end = self.followers.get(&replica)?.log_end_offset?;
        if end < high_watermark || end < self.epoch_start_offset {
            return None;
        }
        let mut new_isr = isr.to_vec();
        new_isr.push(replica);
        Some(new_isr)
    }

    /// The ISR without the followers that have not caught up for more than `lag_max_ms`, if any
    /// lag and no other change is in flight. The leader always stays.
    pub fn shrink(
        &self,
        me: BrokerId,
        isr: &[BrokerId],
        now_ms: i64,
        lag_max_ms: i64,
    ) -> Option<Vec<BrokerId>> {
        if self.pending.is_some() {
            return None;
        }
        let lagging = |member: &BrokerId| {
            *member != me
                && self
                    .followers
                    .get(member)
                    .is_none_or(|f| now_ms.saturating_sub(f.last_caught_up_ms) > lag_max_ms)
        };
        if !isr.iter().any(lagging) {
            return None;
        }
        Some(isr.iter().copied().filter(|m| !lagging(m)).collect())
    }

    /// An ISR change from `isr` to `new_isr`, based on `base_partition_epoch`, is being sent
    /// to the controller: the proposal to send, with the broker epoch of each member's latest
    /// fetch.
    pub fn begin_alter(
        &mut self,
        isr: &[BrokerId],
        new_isr: &[BrokerId],
        base_partition_epoch: i32,
        now_ms: i64,
    ) -> Proposal {
        let mut maximal = isr.to_vec();
        maximal.extend(new_isr.iter().filter(|m| !isr.contains(m)));
        let member_epochs: BTreeMap<BrokerId, i64> = new_isr
            .iter()
            .filter_map(|m| Some((*m, self.followers.get(m)?.broker_epoch)))
            .filter(|&(_, epoch)| epoch >= 0)
            .collect();
        self.next_seq += 1;
        self.pending = Some(PendingIsr {
            maximal,
            new_isr: new_isr.to_vec(),
            base_partition_epoch,
            member_epochs: member_epochs.clone(),
            seq: self.next_seq,
            sent_ms: now_ms,
        });
        Proposal {
            new_isr: new_isr.to_vec(),
            member_epochs,
            base_partition_epoch,
            seq: self.next_seq,
        }
    }

    pub fn is_altering(&self) -> bool {
        self.pending.is_some()
    }

    /// The controller refused change `seq` in a way that proves nothing was applied (an
    /// invalid ISR). An answer about an earlier change is ignored; refusals that only say the
    /// partition moved on (a later partition or leader epoch) leave the change to be settled by
    /// the image, since an earlier send of it may be what moved it.
    pub fn alter_refused(&mut self, seq: u64) {
        if self.pending.as_ref().is_some_and(|p| p.seq == seq) {
            self.pending = None;
        }
    }

    /// A metadata image brought `partition_epoch`: a pending change based on an older one is
    /// settled (applied, or overtaken and never to apply).
    pub fn on_partition_epoch(&mut self, partition_epoch: i32) {
        if self
            .pending
            .as_ref()
            .is_some_and(|p| partition_epoch > p.base_partition_epoch)
        {
            self.pending = None;
        }
    }

    /// A pending change sent more than `retry_ms` ago and still unsettled (its answer was lost,
    /// or it never reached the log), to send again unchanged. Sending the same compare-and-set
    /// twice is harmless, and the broker epochs it carries make the controller refuse it if a
    /// member restarted meanwhile.
    pub fn stale_pending(&mut self, now_ms: i64, retry_ms: i64) -> Option<Proposal> {
        let pending = self.pending.as_mut()?;
        if now_ms.saturating_sub(pending.sent_ms) <= retry_ms {
            return None;
        }
        pending.sent_ms = now_ms;
        Some(Proposal {
            new_isr: pending.new_isr.clone(),
            member_epochs: pending.member_epochs.clone(),
            base_partition_epoch: pending.base_partition_epoch,
            seq: pending.seq,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const ME: BrokerId = 1;
    /// The broker epoch the followers fetch as, unless a test restarts one.
    const EPOCH: i64 = 40;

    fn view() -> LeaderView {
        LeaderView::new(3, 100, &[1, 2, 3], ME, 1_000)
    }

    #[test]
    fn an_isr_addition_carries_the_broker_epoch_it_was_decided_on_even_when_resent() {
        let mut v = view();
        v.on_fetch(2, EPOCH, 120, 120, 1_001);
        v.on_fetch(3, EPOCH, 120, 120, 1_001);
        let proposal = v.begin_alter(&[1, 2], &[1, 2, 3], 4, 1_002);
        assert_eq!(proposal.member_epochs, [(2, EPOCH), (3, EPOCH)].into());
        // Broker 3 restarts (a new registration, a later epoch) with a shorter log.
        v.on_fetch(3, EPOCH + 5, 10, 120, 1_003);
        let resend = v.stale_pending(60_000, 10_000).expect("unsettled");
        assert_eq!(
            resend.member_epochs.get(&3),
            Some(&EPOCH),
            "the resend must carry the old incarnation's epoch, so the controller refuses it"
        );
    }

    #[test]
    fn a_late_fetch_of_an_older_incarnation_is_not_a_position() {
        let mut v = view();
        v.on_fetch(2, EPOCH + 1, 50, 120, 1_001);
        v.on_fetch(3, EPOCH, 120, 120, 1_001);
        assert!(v.on_fetch(2, EPOCH, 120, 120, 1_002), "still a follower");
        assert_eq!(v.high_watermark(ME, &[1, 2, 3], 120), Some(50));
    }

    #[test]
    fn the_high_watermark_waits_for_every_in_sync_follower_and_is_their_minimum() {
        let mut v = view();
        assert_eq!(v.high_watermark(ME, &[1, 2, 3], 120), None);
        v.on_fetch(2, EPOCH, 110, 120, 1_001);
        assert_eq!(v.high_watermark(ME, &[1, 2, 3], 120), None, "3 unknown");
        v.on_fetch(3, EPOCH, 105, 120, 1_002);
        assert_eq!(v.high_watermark(ME, &[1, 2, 3], 120), Some(105));
        assert_eq!(v.high_watermark(ME, &[1, 2], 120), Some(110));
        assert_eq!(v.high_watermark(ME, &[1], 120), Some(120));
        assert!(!v.on_fetch(9, EPOCH, 1, 120, 1_003), "not a replica");
    }

    #[test]
    fn a_member_being_added_holds_the_high_watermark_back() {
        let mut v = view();
        v.on_fetch(2, EPOCH, 120, 120, 1_001);
        v.on_fetch(3, EPOCH, 100, 120, 1_001);
        assert_eq!(v.high_watermark(ME, &[1, 2], 120), Some(120));
        let seq = v.begin_alter(&[1, 2], &[1, 2, 3], 7, 1_002).seq;
        assert_eq!(v.high_watermark(ME, &[1, 2], 120), Some(100));
        v.on_partition_epoch(7);
        assert!(v.is_altering(), "settles only past its base epoch");
        v.alter_refused(seq - 1);
        assert!(v.is_altering(), "a refusal of an older change");
        v.on_partition_epoch(8);
        assert!(!v.is_altering());
    }

    #[test]
    fn expansion_needs_the_high_watermark_and_the_epoch_start() {
        let mut v = view();
        v.on_fetch(3, EPOCH, 90, 120, 1_001);
        assert_eq!(v.expansion(3, &[1, 2], 80), None, "below the epoch start");
        v.on_fetch(3, EPOCH, 110, 120, 1_002);
        assert_eq!(
            v.expansion(3, &[1, 2], 115),
            None,
            "below the high watermark"
        );
        assert_eq!(v.expansion(3, &[1, 2], 110), Some(vec![1, 2, 3]));
        assert_eq!(v.expansion(2, &[1, 2], 110), None, "already in");
        v.begin_alter(&[1, 2], &[1, 2, 3], 4, 1_003);
        assert_eq!(v.expansion(3, &[1, 2], 110), None, "one change at a time");
    }

    #[test]
    fn followers_that_stop_catching_up_are_shrunk_away_but_the_leader_stays() {
        let mut v = view();
        // Follower 2 keeps fetching at the leader's end of its previous fetch: caught up as of
        // that previous fetch (20 s), though never at the leader's current end.
        v.on_fetch(2, EPOCH, 100, 110, 5_000);
        v.on_fetch(2, EPOCH, 110, 130, 20_000);
        v.on_fetch(2, EPOCH, 130, 140, 21_000);
        assert_eq!(v.shrink(ME, &[1, 2, 3], 25_000, 10_000), Some(vec![1, 2]));
        assert_eq!(v.shrink(ME, &[1, 2], 25_000, 10_000), None);
        assert_eq!(v.shrink(ME, &[1], 1_000_000, 10_000), None);
        v.begin_alter(&[1, 2, 3], &[1, 2], 4, 25_000);
        assert_eq!(v.shrink(ME, &[1, 2, 3], 25_000, 10_000), None);
        assert_eq!(v.stale_pending(30_000, 10_000), None);
        let resend = v.stale_pending(40_000, 10_000).expect("unsettled");
        assert_eq!(
            (resend.new_isr, resend.base_partition_epoch, resend.seq),
            (vec![1, 2], 4, 1)
        );
        assert_eq!(v.stale_pending(41_000, 10_000), None, "sent again just now");
        assert!(v.is_altering(), "still pending until an image settles it");
    }

    #[test]
    fn a_refused_change_is_no_longer_pending() {
        let mut v = view();
        let seq = v.begin_alter(&[1, 2], &[1, 2, 3], 4, 1_000).seq;
        v.alter_refused(seq);
        assert!(!v.is_altering());
    }
}
