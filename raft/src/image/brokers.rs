//! Broker membership: registration of a broker process and fencing of a broker whose heartbeats
//! stopped, with the leader and ISR moves both imply.

use super::partition::PartitionChange;
use super::{is_unfenced, unclean_enabled, BrokerRecord, MetadataImage};
use crate::command::{BrokerId, FenceBroker, MetadataResponse, RegisterBroker, Rejection};

impl MetadataImage {
    pub(super) fn register_broker(
        &mut self,
        offset: u64,
        cmd: &RegisterBroker,
    ) -> Result<MetadataResponse, Rejection> {
        let broker_id = cmd.broker_id;
        if broker_id < 0 {
            return Err(Rejection::InvalidBrokerId { broker_id });
        }
        let had_previous = match self.brokers.get(&broker_id) {
            // The same process retrying (its answer was lost): answer as the first time did.
            Some(existing) if existing.incarnation_id == cmd.incarnation_id => {
                return Ok(MetadataResponse::BrokerRegistered {
                    broker_epoch: existing.broker_epoch,
                });
            }
            Some(_) => true,
            None => false,
        };
        // Offsets beyond i64::MAX cannot occur in practice; saturate rather than wrap.
        let broker_epoch = i64::try_from(offset).unwrap_or(i64::MAX);
        self.brokers.insert(
            broker_id,
            BrokerRecord {
                broker_id,
                incarnation_id: cmd.incarnation_id,
                broker_epoch,
                endpoints: cmd.endpoints.clone(),
                rack: cmd.rack.clone(),
                fenced: false,
                registered_at_ms: cmd.now_ms,
                log_dir_offline: false,
            },
        );
        // A new incarnation means the previous process died with whatever state it had: its
        // replicas are treated as fenced first (it must catch up to rejoin ISRs), then the new
        // process is offered the partitions that have no leader.
        self.update_partitions_of(broker_id, had_previous, true);
        Ok(MetadataResponse::BrokerRegistered { broker_epoch })
    }

    pub(super) fn fence_broker(
        &mut self,
        cmd: &FenceBroker,
    ) -> Result<MetadataResponse, Rejection> {
        self.check_broker_epoch(cmd.broker_id, cmd.broker_epoch)?;
        let Some(broker) = self.brokers.get_mut(&cmd.broker_id) else {
            return Err(Rejection::UnknownBroker {
                broker_id: cmd.broker_id,
            });
        };
        if broker.fenced {
            return Ok(MetadataResponse::BrokerFenced {
                partitions_changed: 0,
            });
        }
        broker.fenced = true;
        let partitions_changed = self.update_partitions_of(cmd.broker_id, true, false);
        Ok(MetadataResponse::BrokerFenced { partitions_changed })
    }

    /// Moves every partition that `broker_id` replicates to its next state: with `fence`, as if
    /// the broker's process died (it leaves ISRs and leaderships); with `elect`, leaderless
    /// partitions may then elect it. Both in one staged change, so each partition's epochs move
    /// at most once. Returns how many partitions changed.
    fn update_partitions_of(&mut self, broker_id: BrokerId, fence: bool, elect: bool) -> u32 {
        let brokers = &self.brokers;
        // While fencing, the broker itself is excluded even when its record is unfenced (a new
        // incarnation): the dead process's leaderships must go to someone else if possible.
        let survivor = |b: BrokerId| b != broker_id && is_unfenced(brokers, b);
        let eligible = |b: BrokerId| is_unfenced(brokers, b);
        let mut changed: u32 = 0;
        for topic in self.topics.values_mut() {
            let unclean = unclean_enabled(&topic.configs);
            for partition in &mut topic.partitions {
                if !partition.replicas.contains(&broker_id) {
                    continue;
                }
                let mut change = PartitionChange::of(partition);
                if fence && partition.isr.contains(&broker_id) {
                    // A re-registering broker is back with its data: no unclean election
                    // while fencing its old incarnation, or a lagging replica would take over
                    // a partition the returning broker can lead cleanly in the elect step.
                    change.fence(broker_id, &partition.replicas, unclean && !elect, &survivor);
                }
                if elect {
                    change.elect_if_leaderless(&partition.replicas, unclean, &eligible);
                }
                if change.commit(partition) {
                    changed = changed.saturating_add(1);
                }
            }
        }
        changed
    }
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_rejected, register_cmd, Harness};
    use super::super::UNCLEAN_LEADER_ELECTION_CONFIG;
    use crate::command::{
        AlterPartition, AlterTopicConfigs, FenceBroker, IncarnationId, MetadataCommand,
        MetadataResponse, Rejection,
    };

    /// Brokers 1, 2, 3 and topic `t` with three partitions led by 1, 2 and 3.
    fn three_brokers_one_topic() -> Harness {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2, 3], vec![2, 3, 1], vec![3, 1, 2]]);
        h
    }

    fn shrink_isr(h: &mut Harness, topic: &str, partition: u32, new_isr: Vec<i32>) {
        let p = h.partition(topic, partition).clone();
        let response = h.apply(MetadataCommand::AlterPartition(AlterPartition {
            topic_id: h.topic_id(topic),
            partition,
            leader_id: p.leader.expect("has a leader"),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            new_isr,
        }));
        assert!(matches!(
            response,
            MetadataResponse::PartitionAltered { .. }
        ));
    }

    fn set_unclean(h: &mut Harness, topic: &str) {
        let response = h.apply(MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
            name: topic.to_owned(),
            set: [(UNCLEAN_LEADER_ELECTION_CONFIG.to_owned(), "true".to_owned())].into(),
            remove: vec![],
        }));
        assert_eq!(response, MetadataResponse::Ok);
    }

    #[test]
    fn registration_records_the_broker_with_its_offset_as_epoch() {
        let mut h = Harness::default();
        h.image.advance(41);
        let response = h.image.apply(42, &register_cmd(7, 3, Some("r1")));
        assert_eq!(
            response,
            MetadataResponse::BrokerRegistered { broker_epoch: 42 }
        );
        let broker = h.image.broker(7).expect("registered");
        assert_eq!(broker.broker_epoch, 42);
        assert_eq!(broker.incarnation_id, IncarnationId([3; 16]));
        assert_eq!(broker.rack.as_deref(), Some("r1"));
        assert_eq!(broker.endpoints[0].host, "broker-7");
        assert_eq!(broker.registered_at_ms, 1_007);
        assert!(!broker.fenced);
        assert_eq!(h.image.metadata_offset(), 42);
    }

    #[test]
    fn a_retried_registration_answers_the_same_epoch_and_changes_nothing() {
        let mut h = Harness::default();
        let epoch = h.register(1, 9, None);
        let before = h.image.clone();
        // Same incarnation, even with other details: a retry, not a new process.
        let response = h.apply(register_cmd(1, 9, Some("elsewhere")));
        assert_eq!(
            response,
            MetadataResponse::BrokerRegistered {
                broker_epoch: epoch
            }
        );
        let mut after = h.image.clone();
        after.advance(before.metadata_offset());
        assert_eq!(after, before);
    }

    #[test]
    fn negative_broker_ids_are_rejected() {
        let mut h = Harness::default();
        assert_rejected(
            &mut h,
            register_cmd(-1, 1, None),
            Rejection::InvalidBrokerId { broker_id: -1 },
        );
    }

    #[test]
    fn fencing_moves_leadership_to_the_next_isr_member_and_shrinks_isrs() {
        let mut h = three_brokers_one_topic();
        let response = h.fence(1);
        assert_eq!(
            response,
            MetadataResponse::BrokerFenced {
                partitions_changed: 3
            }
        );
        assert!(h.image.broker(1).expect("registered").fenced);
        let p0 = h.partition("t", 0);
        assert_eq!((p0.leader, p0.isr.clone()), (Some(2), vec![2, 3]));
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (1, 1));
        // A follower leaving the ISR is not a leader change.
        let p1 = h.partition("t", 1);
        assert_eq!((p1.leader, p1.isr.clone()), (Some(2), vec![2, 3]));
        assert_eq!((p1.leader_epoch, p1.partition_epoch), (0, 1));
        assert_eq!(h.image.unfenced_brokers().count(), 2);
    }

    #[test]
    fn fencing_the_last_isr_member_takes_the_partition_offline_keeping_its_isr() {
        let mut h = Harness::with_brokers(&[1, 2]);
        h.create("t", 1, vec![vec![1, 2]]);
        h.fence(2);
        assert_eq!(h.partition("t", 0).isr, vec![1]);
        let response = h.fence(1);
        assert_eq!(
            response,
            MetadataResponse::BrokerFenced {
                partitions_changed: 1
            }
        );
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (None, vec![1]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
    }

    #[test]
    fn fencing_with_unclean_election_enabled_elects_outside_the_isr_and_resets_it() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2, 3]]);
        shrink_isr(&mut h, "t", 0, vec![1]);
        set_unclean(&mut h, "t");
        h.fence(2);
        h.fence(1);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(3), vec![3]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 2));
    }

    #[test]
    fn fence_rejects_unknown_brokers_and_stale_epochs_and_is_idempotent() {
        let mut h = three_brokers_one_topic();
        let stale = h.epoch(1);
        let fence = |broker_id, broker_epoch| {
            MetadataCommand::FenceBroker(FenceBroker {
                broker_id,
                broker_epoch,
            })
        };
        assert_rejected(
            &mut h,
            fence(9, 1),
            Rejection::UnknownBroker { broker_id: 9 },
        );
        let current = h.register(1, 2, None);
        assert_rejected(
            &mut h,
            fence(1, stale),
            Rejection::StaleBrokerEpoch {
                broker_id: 1,
                current,
                requested: stale,
            },
        );
        h.fence(2);
        let before = h.image.clone();
        assert_eq!(
            h.fence(2),
            MetadataResponse::BrokerFenced {
                partitions_changed: 0
            }
        );
        assert_eq!(
            h.image.topics().collect::<Vec<_>>(),
            before.topics().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_new_incarnation_loses_its_leaderships_and_isr_places() {
        let mut h = three_brokers_one_topic();
        let epoch = h.register(1, 2, None);
        assert_eq!(
            epoch,
            i64::try_from(h.image.metadata_offset()).expect("small")
        );
        let broker = h.image.broker(1).expect("registered");
        assert_eq!(broker.incarnation_id, IncarnationId([2; 16]));
        assert!(!broker.fenced);
        let p0 = h.partition("t", 0);
        assert_eq!((p0.leader, p0.isr.clone()), (Some(2), vec![2, 3]));
        assert_eq!((p0.leader_epoch, p0.partition_epoch), (1, 1));
        assert_eq!(h.partition("t", 2).isr, vec![3, 2]);
    }

    #[test]
    fn a_new_incarnation_that_was_the_sole_leader_leads_again_at_a_new_epoch() {
        let mut h = Harness::with_brokers(&[1, 2]);
        h.create("t", 1, vec![vec![1, 2]]);
        shrink_isr(&mut h, "t", 0, vec![1]);
        let before = h.partition("t", 0).clone();
        h.register(1, 2, None);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
        // Fenced and re-elected in one command: each epoch moves exactly once.
        assert_eq!(p.leader_epoch, before.leader_epoch + 1);
        assert_eq!(p.partition_epoch, before.partition_epoch + 1);
    }

    #[test]
    fn a_returning_broker_leads_the_offline_partitions_whose_isr_kept_it() {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, vec![vec![1, 2], vec![2, 3]]);
        h.fence(2);
        h.fence(1);
        assert_eq!(h.partition("t", 0).leader, None);
        // Broker 2 is not in partition 0's ISR: without unclean election it stays offline.
        h.register(2, 2, None);
        assert_eq!(h.partition("t", 0).leader, None);
        h.register(1, 2, None);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
        assert_eq!((p.leader_epoch, p.partition_epoch), (2, 3));
    }

    #[test]
    fn a_returning_sole_isr_member_is_not_replaced_by_an_unclean_election() {
        // Unclean election is allowed, but the broker that holds the data is back: it must lead
        // again rather than hand the partition to a replica that is missing records.
        let mut h = Harness::with_brokers(&[1, 2]);
        h.create("t", 1, vec![vec![1, 2]]);
        shrink_isr(&mut h, "t", 0, vec![1]);
        set_unclean(&mut h, "t");
        h.register(1, 2, None);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
    }
}
