//! A broker's log directory failing and coming back (Kafka's log-dir failure handling, one
//! directory per broker). Offline, the broker's replicas are treated as after an unclean
//! shutdown (KIP-966): a write or fsync failed, so what the kernel had not written may be gone
//! and the recovered log may be shorter than what it acknowledged. It leaves every ISR and ELR
//! and its leaderships, and while the flag is set it may neither lead nor join an ISR. Back
//! online, it is offered the leaderless partitions it may lead (a sole replica, or with unclean
//! election enabled); elsewhere it rejoins ISRs the normal way, once caught up.

use super::brokers::Return;
use super::MetadataImage;
use crate::command::{BrokerId, LogDirOffline, LogDirOnline, MetadataResponse, Rejection};

impl MetadataImage {
    pub(super) fn log_dir_offline(
        &mut self,
        cmd: &LogDirOffline,
    ) -> Result<MetadataResponse, Rejection> {
        if !self.set_log_dir_offline(cmd.broker_id, cmd.broker_epoch, true)? {
            return Ok(MetadataResponse::LogDirChanged {
                partitions_changed: 0,
            });
        }
        // The flag is set, so the broker is no longer eligible: leaderships move at once, and
        // a topic that allows unclean election elects outside the ISR now rather than wait.
        let partitions_changed =
            self.update_partitions_of(cmd.broker_id, Some(Return::Unclean), true);
        Ok(MetadataResponse::LogDirChanged { partitions_changed })
    }

    pub(super) fn log_dir_online(
        &mut self,
        cmd: &LogDirOnline,
    ) -> Result<MetadataResponse, Rejection> {
        if !self.set_log_dir_offline(cmd.broker_id, cmd.broker_epoch, false)? {
            return Ok(MetadataResponse::LogDirChanged {
                partitions_changed: 0,
            });
        }
        // As after an unclean registration: only a sole replica, or a topic that allows
        // unclean election, comes back with it, under a new leader epoch.
        let partitions_changed = self.update_partitions_of(cmd.broker_id, None, true);
        Ok(MetadataResponse::LogDirChanged { partitions_changed })
    }

    /// Sets the broker's log-directory flag to `offline` after checking its epoch; whether
    /// that changed it.
    fn set_log_dir_offline(
        &mut self,
        broker_id: BrokerId,
        broker_epoch: i64,
        offline: bool,
    ) -> Result<bool, Rejection> {
        self.check_broker_epoch(broker_id, broker_epoch)?;
        let broker = self
            .brokers
            .get_mut(&broker_id)
            .ok_or(Rejection::UnknownBroker { broker_id })?;
        let changed = broker.log_dir_offline != offline;
        broker.log_dir_offline = offline;
        Ok(changed)
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_rejected, Harness};
    use crate::command::{
        AlterPartition, LogDirOffline, LogDirOnline, MetadataCommand, MetadataResponse, Rejection,
    };

    fn offline(h: &mut Harness, id: i32) -> MetadataResponse {
        let broker_epoch = h.epoch(id);
        h.apply(MetadataCommand::LogDirOffline(LogDirOffline {
            broker_id: id,
            broker_epoch,
        }))
    }

    fn online(h: &mut Harness, id: i32) -> MetadataResponse {
        let broker_epoch = h.epoch(id);
        h.apply(MetadataCommand::LogDirOnline(LogDirOnline {
            broker_id: id,
            broker_epoch,
        }))
    }

    fn changed(partitions_changed: u32) -> MetadataResponse {
        MetadataResponse::LogDirChanged { partitions_changed }
    }

    #[test]
    fn an_offline_log_dir_moves_leadership_to_the_next_isr_member_and_leaves_the_isrs() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2, 3], vec![2, 3, 1]]);
        assert_eq!(offline(&mut h, 1), changed(2));
        let led = h.partition("t", 0);
        assert_eq!(led.leader, Some(2), "the next ISR member in replica order");
        assert_eq!(led.isr, vec![2, 3]);
        assert_eq!((led.leader_epoch, led.partition_epoch), (1, 1));
        let followed = h.partition("t", 1);
        assert_eq!(followed.leader, Some(2));
        assert_eq!(followed.isr, vec![2, 3]);
        assert_eq!(followed.leader_epoch, 0, "its leader did not change");
        let broker = h.image.broker(1).expect("registered");
        assert!(broker.log_dir_offline && !broker.fenced, "offline but live");
        assert_eq!(offline(&mut h, 1), changed(0), "a repeated report");
    }

    #[test]
    fn a_broker_with_an_offline_log_dir_may_not_rejoin_an_isr_until_it_is_back() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![2, 1, 3]]);
        offline(&mut h, 1);
        let p = h.partition("t", 0).clone();
        assert_eq!(p.isr, vec![2, 3]);
        let expand = |p: &crate::image::PartitionRecord, h: &Harness| {
            MetadataCommand::AlterPartition(AlterPartition {
                topic_id: h.topic_id("t"),
                partition: 0,
                leader_id: 2,
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                member_epochs: h.member_epochs(&[2, 3, 1]),
                new_isr: vec![2, 3, 1],
            })
        };
        let refused = expand(&p, &h);
        assert!(matches!(
            h.apply(refused),
            MetadataResponse::Rejected(Rejection::InvalidIsr { .. })
        ));
        assert_eq!(online(&mut h, 1), changed(0), "partition 0 has a leader");
        assert!(!h.image.broker(1).expect("registered").log_dir_offline);
        let p = h.partition("t", 0).clone();
        let accepted = expand(&p, &h);
        assert!(matches!(
            h.apply(accepted),
            MetadataResponse::PartitionAltered { .. }
        ));
    }

    #[test]
    fn the_last_isr_member_of_a_failed_log_dir_is_not_elected_again_as_if_intact() {
        // The failed write or fsync may have lost acknowledged records: like an unclean
        // shutdown, the partition waits for an unclean election rather than rewind.
        let mut h = Harness::with_brokers(&[1, 2]);
        h.create("t", 1, vec![vec![1, 2]]);
        h.fence(2);
        assert_eq!(h.partition("t", 0).isr, vec![1]);
        assert_eq!(offline(&mut h, 1), changed(1));
        let p = h.partition("t", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (None, vec![], vec![])
        );
        assert_eq!(p.last_known_elr, vec![1]);
        assert_eq!(online(&mut h, 1), changed(0));
        assert_eq!(h.partition("t", 0).leader, None);
    }

    #[test]
    fn a_sole_replica_leads_again_when_its_log_dir_is_back() {
        let mut h = Harness::with_brokers(&[1]);
        h.create("t", 1, vec![vec![1]]);
        assert_eq!(offline(&mut h, 1), changed(1));
        assert_eq!(h.partition("t", 0).leader, None);
        assert_eq!(online(&mut h, 1), changed(1));
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
        assert_eq!(p.leader_epoch, 2, "a new epoch: the log was recovered");
    }

    #[test]
    fn reports_from_a_previous_registration_or_an_unknown_broker_are_rejected() {
        let mut h = Harness::with_brokers(&[1]);
        let stale = h.epoch(1);
        let current = h.register(1, 2, None);
        assert_rejected(
            &mut h,
            MetadataCommand::LogDirOffline(LogDirOffline {
                broker_id: 1,
                broker_epoch: stale,
            }),
            Rejection::StaleBrokerEpoch {
                broker_id: 1,
                current,
                requested: stale,
            },
        );
        assert_rejected(
            &mut h,
            MetadataCommand::LogDirOnline(LogDirOnline {
                broker_id: 9,
                broker_epoch: 1,
            }),
            Rejection::UnknownBroker { broker_id: 9 },
        );
    }

    #[test]
    fn a_new_registration_starts_with_its_log_dir_online() {
        let mut h = Harness::with_brokers(&[1]);
        offline(&mut h, 1);
        h.register(1, 2, None);
        assert!(!h.image.broker(1).expect("registered").log_dir_offline);
    }

    #[test]
    fn an_image_written_before_the_flag_existed_reads_it_as_online() {
        let h = Harness::with_brokers(&[1]);
        let mut json = serde_json::to_value(&h.image).expect("serializes");
        let broker = json["brokers"]["1"].as_object_mut().expect("broker 1");
        assert!(broker.remove("log_dir_offline").is_some());
        let image: crate::MetadataImage = serde_json::from_value(json).expect("deserializes");
        assert!(!image.broker(1).expect("registered").log_dir_offline);
    }
}
