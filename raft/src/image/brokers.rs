//! Broker membership: registration of a broker process and fencing of a broker whose heartbeats
//! stopped, with the leader and ISR moves both imply.

use super::partition::PartitionChange;
use super::{effective_min_isr, is_unfenced, unclean_enabled, BrokerRecord, MetadataImage};
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
        let previous = match self.brokers.get(&broker_id) {
            // The same process retrying (its answer was lost): answer as the first time did.
            Some(existing) if existing.incarnation_id == cmd.incarnation_id => {
                return Ok(MetadataResponse::BrokerRegistered {
                    broker_epoch: existing.broker_epoch,
                });
            }
            Some(existing) => Some(existing.broker_epoch),
            None => None,
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
        // A new incarnation means the previous process is gone: its replicas are treated as
        // fenced first (it must catch up to rejoin ISRs), then the new process is offered the
        // partitions that have no leader. Its data is intact only if it says so with the epoch
        // it last held (a clean shutdown, or the same process registering again); otherwise
        // it leaves every ISR and ELR too (KIP-966).
        let re_registration = previous.map(|epoch| {
            if cmd.previous_broker_epoch == Some(epoch) {
                Return::Clean
            } else {
                Return::Unclean
            }
        });
        self.update_partitions_of(broker_id, re_registration, true);
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
        let partitions_changed =
            self.update_partitions_of(cmd.broker_id, Some(Return::Clean), false);
        Ok(MetadataResponse::BrokerFenced { partitions_changed })
    }

    /// Moves every partition that `broker_id` replicates to its next state: with `fence`, as if
    /// the broker's process died (it leaves ISRs and leaderships; after an unclean shutdown,
    /// ELRs too); with `elect`, leaderless partitions may then elect it. Both in one staged
    /// change, so each partition's epochs move at most once. Returns how many partitions
    /// changed.
    pub(super) fn update_partitions_of(
        &mut self,
        broker_id: BrokerId,
        fence: Option<Return>,
        elect: bool,
    ) -> u32 {
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
                let min_isr = effective_min_isr(&topic.configs, partition.replicas.len());
                let mut change = PartitionChange::of(partition, min_isr);
                match fence {
                    Some(Return::Clean) if partition.isr.contains(&broker_id) => {
                        // A broker back with its data: no unclean election while fencing its
                        // old incarnation, or a lagging replica would take over a partition
                        // the returning broker can lead from the ELR in the elect step.
                        change.fence(broker_id, &partition.replicas, unclean && !elect, &survivor);
                    }
                    Some(Return::Unclean) => {
                        // No unclean election yet: with the broker out of the ISR and ELR, the
                        // elect step may still prefer it as the last known holder of the data.
                        change.fence(broker_id, &partition.replicas, false, &survivor);
                        change.unclean_shutdown(broker_id);
                    }
                    Some(Return::Clean) | None => {}
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

/// How a broker's previous incarnation ended, as far as its data is concerned.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Return {
    /// Fenced while its process may still run, or re-registered with its data intact.
    Clean,
    /// Re-registered after an unclean shutdown: its logs may miss acknowledged records.
    Unclean,
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_rejected, register_cmd, Harness};
    use super::super::{MIN_INSYNC_REPLICAS_CONFIG, UNCLEAN_LEADER_ELECTION_CONFIG};
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
            member_epochs: Default::default(),
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
    fn fencing_the_last_isr_member_takes_the_partition_offline_into_the_elr() {
        let mut h = Harness::with_brokers(&[1, 2]);
        h.create("t", 1, vec![vec![1, 2]]);
        h.fence(2);
        let p = h.partition("t", 0);
        assert_eq!((p.isr.clone(), p.elr.clone()), (vec![1], vec![]));
        let response = h.fence(1);
        assert_eq!(
            response,
            MetadataResponse::BrokerFenced {
                partitions_changed: 1
            }
        );
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (None, vec![]));
        assert_eq!(
            p.elr,
            vec![1],
            "the last member holds every committed record"
        );
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
        h.reregister(1, 2, true);
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
        h.reregister(2, 2, true);
        assert_eq!(h.partition("t", 0).leader, None);
        h.reregister(1, 2, true);
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
        h.reregister(1, 2, true);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
    }

    /// Topic `t` with the one partition `[1, 2, 3]`, `min.insync.replicas` = 2, on brokers
    /// 1, 2, 3.
    fn min_isr_two() -> Harness {
        let mut h = three_brokers_one_topic_of(vec![vec![1, 2, 3]]);
        let response = h.apply(MetadataCommand::AlterTopicConfigs(AlterTopicConfigs {
            name: "t".to_owned(),
            set: [(MIN_INSYNC_REPLICAS_CONFIG.to_owned(), "2".to_owned())].into(),
            remove: vec![],
        }));
        assert_eq!(response, MetadataResponse::Ok);
        h
    }

    fn three_brokers_one_topic_of(lists: Vec<Vec<i32>>) -> Harness {
        let mut h = Harness::with_brokers(&[1, 2, 3]);
        h.create("t", 1, lists);
        h
    }

    #[test]
    fn an_uncleanly_restarted_last_isr_member_is_not_elected_again() {
        // KIP-966: after a power loss or a lost disk the broker's log may be shorter than what
        // it acknowledged; leading again would make the other replicas truncate to it.
        let mut h = three_brokers_one_topic_of(vec![vec![1, 2, 3]]);
        shrink_isr(&mut h, "t", 0, vec![1]);
        h.reregister(1, 2, false);
        let p = h.partition("t", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (None, vec![], vec![])
        );
        assert_eq!(
            p.last_known_elr,
            vec![1],
            "who last held every committed record"
        );
        // Replicas outside the ISR stay ineligible however often they come back.
        h.reregister(2, 2, true);
        h.reregister(3, 2, false);
        assert_eq!(h.partition("t", 0).leader, None);
    }

    #[test]
    fn an_unclean_restart_with_unclean_election_enabled_prefers_the_last_known_holder() {
        let mut h = three_brokers_one_topic_of(vec![vec![2, 3, 1]]);
        shrink_isr(&mut h, "t", 0, vec![2]);
        set_unclean(&mut h, "t");
        h.reregister(2, 2, false);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2]));
        assert!(p.last_known_elr.is_empty() && p.elr.is_empty());
    }

    #[test]
    fn a_sole_replica_recovers_from_an_unclean_shutdown_having_no_other_copy_to_wait_for() {
        let mut h = three_brokers_one_topic_of(vec![vec![1]]);
        h.reregister(1, 2, false);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(1), vec![1]));
        assert!(p.last_known_elr.is_empty());
    }

    #[test]
    fn isr_members_leaving_an_isr_below_min_insync_become_eligible_leaders() {
        let mut h = min_isr_two();
        shrink_isr(&mut h, "t", 0, vec![1, 2]);
        assert!(
            h.partition("t", 0).elr.is_empty(),
            "the ISR is still full-sized"
        );
        shrink_isr(&mut h, "t", 0, vec![1]);
        assert_eq!(h.partition("t", 0).elr, vec![2]);
        // The leader dies: its ELR peer, which holds every committed record, takes over.
        h.fence(1);
        let p = h.partition("t", 0);
        assert_eq!((p.leader, p.isr.clone()), (Some(2), vec![2]));
        assert_eq!(p.elr, vec![1], "the fenced leader held everything too");
        // An unclean restart of 1 removes it from the ELR; a clean one would not.
        h.reregister(1, 2, false);
        assert!(h.partition("t", 0).elr.is_empty());
    }

    #[test]
    fn a_full_sized_isr_clears_the_elr() {
        let mut h = min_isr_two();
        shrink_isr(&mut h, "t", 0, vec![1]);
        assert_eq!(h.partition("t", 0).elr, vec![2, 3]);
        let p = h.partition("t", 0).clone();
        let response = h.apply(MetadataCommand::AlterPartition(AlterPartition {
            topic_id: h.topic_id("t"),
            partition: 0,
            leader_id: 1,
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            member_epochs: h.member_epochs(&[1, 3]),
            new_isr: vec![1, 3],
        }));
        assert!(matches!(
            response,
            MetadataResponse::PartitionAltered { .. }
        ));
        assert!(h.partition("t", 0).elr.is_empty());
    }

    #[test]
    fn a_clean_restart_of_the_last_isr_member_leads_again_from_the_elr() {
        let mut h = three_brokers_one_topic_of(vec![vec![1, 2, 3]]);
        shrink_isr(&mut h, "t", 0, vec![1]);
        h.fence(1);
        assert_eq!(h.partition("t", 0).elr, vec![1]);
        h.reregister(1, 2, true);
        let p = h.partition("t", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.elr.clone()),
            (Some(1), vec![1], vec![])
        );
    }
}
