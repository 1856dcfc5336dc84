//! Partition leadership, ISR and replicas: the election rules shared by every command that
//! moves a leader, the leader's ISR changes (`AlterPartition`), operator elections
//! (`ElectLeaders`) and reassignments (`AlterReassignments`, Kafka's KIP-455: the replica list
//! grows to the target plus the original replicas, and shrinks to the target once every target
//! replica is in the ISR).

use std::collections::BTreeMap;

use super::{
    effective_min_isr, is_unfenced, BrokerRecord, MetadataImage, PartitionRecord, TopicRecord,
};
use crate::command::{
    AlterPartition, AlterReassignments, BrokerId, ElectLeaders, ElectionOutcome, ElectionResult,
    ElectionType, IsrProblem, MetadataResponse, Reassignment, Rejection, TopicId,
};

/// A partition's next leader, ISR and eligible leader replicas, staged so that one command
/// moves each epoch at most once however many steps it took (a re-registration fences a
/// broker, then elects it again).
///
/// The ELR rules are Kafka 4's (KIP-966): while the ISR is below the effective
/// `min.insync.replicas`, members that leave it join the ELR (the leader no longer advances
/// the high watermark, so they keep every committed record); a full-sized ISR clears it; an
/// empty ISR elects from it; an unclean shutdown removes a broker from both.
#[derive(Debug)]
pub(super) struct PartitionChange {
    leader: Option<BrokerId>,
    isr: Vec<BrokerId>,
    elr: Vec<BrokerId>,
    last_known_elr: Vec<BrokerId>,
    min_isr: usize,
    /// Set by any election, even one that picks the same broker again: a new incarnation must
    /// lead under a new leader epoch, so its predecessor's requests are fenced.
    leader_elected: bool,
}

impl PartitionChange {
    pub(super) fn of(partition: &PartitionRecord, min_isr: usize) -> Self {
        PartitionChange {
            leader: partition.leader,
            isr: partition.isr.clone(),
            elr: partition.elr.clone(),
            last_known_elr: partition.last_known_elr.clone(),
            min_isr,
            leader_elected: false,
        }
    }

    pub(super) fn leader(&self) -> Option<BrokerId> {
        self.leader
    }

    pub(super) fn set_leader(&mut self, leader: Option<BrokerId>) {
        self.leader = leader;
        self.leader_elected = true;
    }

    /// Replaces the ISR, moving members that leave it into the ELR while it is below the
    /// minimum, and clearing the ELR once it is not.
    pub(super) fn set_isr(&mut self, isr: Vec<BrokerId>) {
        let old = std::mem::replace(&mut self.isr, isr);
        if self.isr.len() >= self.min_isr {
            self.elr.clear();
        } else {
            for member in old {
                if !self.isr.contains(&member) && !self.elr.contains(&member) {
                    self.elr.push(member);
                }
            }
            self.elr.retain(|member| !self.isr.contains(member));
        }
        if !self.isr.is_empty() {
            self.last_known_elr.clear();
        }
    }

    /// The fence procedure for one partition: `broker` leaves the ISR (into the ELR if the ISR
    /// is below the minimum, which an emptied ISR always is), and if it led, the next leader
    /// is elected among `eligible` brokers, which must exclude `broker`.
    pub(super) fn fence(
        &mut self,
        broker: BrokerId,
        replicas: &[BrokerId],
        unclean: bool,
        eligible: &impl Fn(BrokerId) -> bool,
    ) {
        let mut isr = self.isr.clone();
        isr.retain(|&member| member != broker);
        self.set_isr(isr);
        if self.leader == Some(broker) {
            let next = self.candidate(replicas, unclean, eligible);
            self.set_leader(next);
        }
    }

    /// `broker` came back from an unclean shutdown: its log may have lost acknowledged records,
    /// so it leaves the ISR and the ELR. If it was the last replica known to hold every
    /// committed record, it is remembered in the last known ELR for an unclean election. Call
    /// after [`PartitionChange::fence`], which took its leaderships.
    pub(super) fn unclean_shutdown(&mut self, broker: BrokerId) {
        let held_everything = self.isr.contains(&broker) || self.elr.contains(&broker);
        let mut isr = self.isr.clone();
        isr.retain(|&member| member != broker);
        self.set_isr(isr);
        self.elr.retain(|&member| member != broker);
        if held_everything
            && self.isr.is_empty()
            && self.elr.is_empty()
            && !self.last_known_elr.contains(&broker)
        {
            self.last_known_elr.push(broker);
        }
    }

    /// Gives a leaderless partition a leader if one is eligible; otherwise changes nothing.
    pub(super) fn elect_if_leaderless(
        &mut self,
        replicas: &[BrokerId],
        unclean: bool,
        eligible: &impl Fn(BrokerId) -> bool,
    ) {
        if self.leader.is_none() {
            if let Some(leader) = self.candidate(replicas, unclean, eligible) {
                self.set_leader(Some(leader));
            }
        }
    }

    /// The replicas that last held every committed record, for an unclean election's report.
    pub(super) fn last_in_sync(&self) -> Vec<BrokerId> {
        let mut holders = self.isr.clone();
        for &b in self.elr.iter().chain(&self.last_known_elr) {
            if !holders.contains(&b) {
                holders.push(b);
            }
        }
        holders
    }

    /// In replica order: the first eligible ISR member; with an empty ISR, the first eligible
    /// ELR member; a sole replica that is the last known holder of the data (there is no other
    /// copy to wait for); failing those, with `unclean`, an eligible last known ELR member,
    /// then any eligible replica. The ISR restarts from an ELR or unclean leader, since only
    /// its log now counts.
    fn candidate(
        &mut self,
        replicas: &[BrokerId],
        unclean: bool,
        eligible: &impl Fn(BrokerId) -> bool,
    ) -> Option<BrokerId> {
        let in_order = |set: &[BrokerId]| {
            replicas
                .iter()
                .copied()
                .find(|&r| set.contains(&r) && eligible(r))
        };
        if let Some(leader) = in_order(&self.isr) {
            return Some(leader);
        }
        if self.isr.is_empty() {
            if let Some(leader) = in_order(&self.elr) {
                self.set_isr(vec![leader]);
                return Some(leader);
            }
        }
        let sole_holder = matches!(replicas, [only] if self.last_known_elr == [*only]);
        if !unclean && !sole_holder {
            return None;
        }
        let leader = in_order(&self.last_known_elr).or_else(|| in_order(replicas))?;
        self.isr = vec![leader];
        self.elr.clear();
        self.last_known_elr.clear();
        Some(leader)
    }

    /// Writes the staged state, bumping each epoch at most once. Returns whether anything changed.
    pub(super) fn commit(self, partition: &mut PartitionRecord) -> bool {
        let leader_changed = self.leader_elected || self.leader != partition.leader;
        let changed = leader_changed
            || self.isr != partition.isr
            || self.elr != partition.elr
            || self.last_known_elr != partition.last_known_elr;
        if leader_changed {
            partition.leader = self.leader;
            partition.leader_epoch = partition.leader_epoch.saturating_add(1);
        }
        if changed {
            partition.isr = self.isr;
            partition.elr = self.elr;
            partition.last_known_elr = self.last_known_elr;
            partition.partition_epoch = partition.partition_epoch.saturating_add(1);
        }
        changed
    }
}

impl MetadataImage {
    pub(super) fn alter_partition(
        &mut self,
        cmd: &AlterPartition,
    ) -> Result<MetadataResponse, Rejection> {
        let brokers = &self.brokers;
        let (partition, min_isr) = partition_mut(
            &mut self.topics,
            &self.topic_names,
            cmd.topic_id,
            cmd.partition,
        )?;
        if partition.leader != Some(cmd.leader_id) {
            return Err(Rejection::NotLeader {
                broker_id: cmd.leader_id,
                leader: partition.leader,
            });
        }
        if partition.leader_epoch != cmd.leader_epoch {
            return Err(Rejection::FencedLeaderEpoch {
                current: partition.leader_epoch,
                requested: cmd.leader_epoch,
            });
        }
        if partition.partition_epoch != cmd.partition_epoch {
            return Err(Rejection::InvalidPartitionEpoch {
                current: partition.partition_epoch,
                requested: cmd.partition_epoch,
            });
        }
        validate_isr(partition, cmd, brokers)
            .map_err(|problem| Rejection::InvalidIsr { problem })?;
        // An unchanged ISR is not a change: the epoch stays, and the answer tells the leader so.
        // The ISR is a set; a reordering changes nothing.
        let same_members = partition.isr.len() == cmd.new_isr.len()
            && cmd.new_isr.iter().all(|b| partition.isr.contains(b));
        if !same_members {
            let mut change = PartitionChange::of(partition, min_isr);
            change.set_isr(cmd.new_isr.clone());
            change.commit(partition);
            // An added replica joining the ISR may be the last one a reassignment waited for.
            complete_reassignment(partition, &|b| is_unfenced(brokers, b));
        }
        Ok(MetadataResponse::PartitionAltered {
            leader_epoch: partition.leader_epoch,
            partition_epoch: partition.partition_epoch,
            isr: partition.isr.clone(),
        })
    }

    pub(super) fn elect_leaders(&mut self, cmd: &ElectLeaders) -> MetadataResponse {
        let targets: Vec<(String, u32)> = match &cmd.partitions {
            Some(targets) => targets.clone(),
            None => self
                .topics
                .values()
                .flat_map(|topic| {
                    (0..topic.partitions.len()).map(|index| {
                        let index = u32::try_from(index).unwrap_or(u32::MAX);
                        (topic.name.clone(), index)
                    })
                })
                .collect(),
        };
        let results = targets
            .into_iter()
            .map(|(topic, partition)| {
                let outcome = self.elect_one(&topic, partition, cmd.election);
                ElectionResult {
                    topic,
                    partition,
                    outcome,
                }
            })
            .collect();
        MetadataResponse::LeadersElected { results }
    }

    fn elect_one(
        &mut self,
        topic: &str,
        partition: u32,
        election: ElectionType,
    ) -> ElectionOutcome {
        let brokers = &self.brokers;
        let eligible = |broker: BrokerId| is_unfenced(brokers, broker);
        let Some(record) = self.topics.get_mut(topic) else {
            return ElectionOutcome::UnknownTopicOrPartition;
        };
        let configs = &record.configs;
        let Some(partition) = usize::try_from(partition)
            .ok()
            .and_then(|index| record.partitions.get_mut(index))
        else {
            return ElectionOutcome::UnknownTopicOrPartition;
        };
        let min_isr = effective_min_isr(configs, partition.replicas.len());
        let mut change = PartitionChange::of(partition, min_isr);
        let holders = change.last_in_sync();
        let clean_candidates: Vec<BrokerId> = partition
            .isr
            .iter()
            .chain(&partition.elr)
            .copied()
            .collect();
        match election {
            ElectionType::Preferred => {
                let Some(&preferred) = partition.replicas.first() else {
                    return ElectionOutcome::NotAvailable;
                };
                if partition.leader == Some(preferred) {
                    return ElectionOutcome::NotNeeded;
                }
                if !partition.isr.contains(&preferred) || !eligible(preferred) {
                    return ElectionOutcome::NotAvailable;
                }
                change.set_leader(Some(preferred));
            }
            ElectionType::Unclean => {
                if partition.leader.is_some() {
                    return ElectionOutcome::NotNeeded;
                }
                change.elect_if_leaderless(&partition.replicas, true, &eligible);
            }
        }
        match change.leader() {
            Some(leader) => {
                change.commit(partition);
                let last_in_sync = (!clean_candidates.contains(&leader)).then_some(holders);
                ElectionOutcome::Elected {
                    leader,
                    leader_epoch: partition.leader_epoch,
                    last_in_sync,
                }
            }
            None => ElectionOutcome::NotAvailable,
        }
    }
}

/// Looks a partition up by topic id, for commands that name topics by id.
impl MetadataImage {
    pub(super) fn alter_reassignments(&mut self, cmd: &AlterReassignments) -> MetadataResponse {
        let results = cmd
            .reassignments
            .iter()
            .map(|r| self.reassign_one(r))
            .collect();
        MetadataResponse::ReassignmentsAltered { results }
    }

    /// Starts (or replaces) a reassignment: the replica list becomes the target followed by the
    /// original replicas not in it, and completes once every target replica is in the ISR. A
    /// `None` target cancels: back to the original replicas.
    fn reassign_one(&mut self, request: &Reassignment) -> Result<(), Rejection> {
        if let Some(target) = &request.target {
            if let Some(problem) = self.replica_list_problem(target, None) {
                return Err(Rejection::InvalidReplicaAssignment {
                    partition: request.partition,
                    problem,
                });
            }
        }
        let brokers = &self.brokers;
        let eligible = |b: BrokerId| is_unfenced(brokers, b);
        let topic = self
            .topics
            .get_mut(&request.topic)
            .ok_or_else(|| Rejection::UnknownTopic {
                name: request.topic.clone(),
            })?;
        let topic_id = topic.topic_id;
        let partition = usize::try_from(request.partition)
            .ok()
            .and_then(|index| topic.partitions.get_mut(index))
            .ok_or(Rejection::UnknownPartition {
                topic_id,
                partition: request.partition,
            })?;
        let original: Vec<BrokerId> = partition
            .replicas
            .iter()
            .copied()
            .filter(|b| !partition.adding_replicas.contains(b))
            .collect();
        let Some(target) = &request.target else {
            if !partition.is_reassigning() {
                return Err(Rejection::NoReassignmentInProgress {
                    topic: request.topic.clone(),
                    partition: request.partition,
                });
            }
            return finish_replicas(partition, original, &eligible);
        };
        if !partition.is_reassigning() && *target == partition.replicas {
            return Ok(());
        }
        let mut replicas = target.clone();
        replicas.extend(original.iter().filter(|b| !target.contains(b)));
        let adding = target
            .iter()
            .copied()
            .filter(|b| !original.contains(b))
            .collect();
        let removing = original
            .iter()
            .copied()
            .filter(|b| !target.contains(b))
            .collect();
        // A replaced reassignment may drop replicas it was adding: they leave the ISR too.
        narrow_to(partition, &replicas, false, &eligible)?;
        partition.replicas = replicas;
        partition.adding_replicas = adding;
        partition.removing_replicas = removing;
        partition.partition_epoch = partition.partition_epoch.saturating_add(1);
        complete_reassignment(partition, &eligible);
        Ok(())
    }
}

/// Keeps the ISR members among `replicas` (refused if none is left) and hands a leader outside
/// them — or, with `elect_if_leaderless`, no leader — over to the first eligible ISR member of
/// `replicas`, at a new leader epoch.
fn narrow_to(
    partition: &mut PartitionRecord,
    replicas: &[BrokerId],
    elect_if_leaderless: bool,
    eligible: &impl Fn(BrokerId) -> bool,
) -> Result<(), Rejection> {
    if !partition.isr.iter().any(|b| replicas.contains(b)) {
        return Err(Rejection::InvalidIsr {
            problem: IsrProblem::Empty,
        });
    }
    partition.isr.retain(|b| replicas.contains(b));
    partition.elr.retain(|b| replicas.contains(b));
    partition.last_known_elr.retain(|b| replicas.contains(b));
    let replace = match partition.leader {
        Some(leader) => !replicas.contains(&leader),
        None => elect_if_leaderless,
    };
    if replace {
        partition.leader = replicas
            .iter()
            .copied()
            .find(|&b| partition.isr.contains(&b) && eligible(b));
        partition.leader_epoch = partition.leader_epoch.saturating_add(1);
    }
    Ok(())
}

/// Ends a reassignment whose target replicas are all in the ISR.
fn complete_reassignment(partition: &mut PartitionRecord, eligible: &impl Fn(BrokerId) -> bool) {
    if !partition.is_reassigning() {
        return;
    }
    let target: Vec<BrokerId> = partition
        .replicas
        .iter()
        .copied()
        .filter(|b| !partition.removing_replicas.contains(b))
        .collect();
    if target.iter().all(|b| partition.isr.contains(b)) {
        // Cannot fail: the target's members are all in the ISR.
        let _ = finish_replicas(partition, target, eligible);
    }
}

/// Makes `replicas` the partition's replica list and ends any reassignment: the ISR keeps its
/// members among them, and a leader outside them hands over to the first eligible ISR member
/// (a new leader epoch).
fn finish_replicas(
    partition: &mut PartitionRecord,
    replicas: Vec<BrokerId>,
    eligible: &impl Fn(BrokerId) -> bool,
) -> Result<(), Rejection> {
    narrow_to(partition, &replicas, true, eligible)?;
    partition.replicas = replicas;
    partition.adding_replicas.clear();
    partition.removing_replicas.clear();
    partition.partition_epoch = partition.partition_epoch.saturating_add(1);
    Ok(())
}

/// The partition and its topic's effective `min.insync.replicas`.
fn partition_mut<'a>(
    topics: &'a mut BTreeMap<String, TopicRecord>,
    topic_names: &BTreeMap<TopicId, String>,
    topic_id: TopicId,
    partition: u32,
) -> Result<(&'a mut PartitionRecord, usize), Rejection> {
    let topic = topic_names
        .get(&topic_id)
        .and_then(|name| topics.get_mut(name))
        .ok_or(Rejection::UnknownTopicId { topic_id })?;
    let configs = &topic.configs;
    let partition = usize::try_from(partition)
        .ok()
        .and_then(|index| topic.partitions.get_mut(index))
        .ok_or(Rejection::UnknownPartition {
            topic_id,
            partition,
        })?;
    let min_isr = effective_min_isr(configs, partition.replicas.len());
    Ok((partition, min_isr))
}

/// The rules a leader's proposed ISR must follow. Only additions must be registered, unfenced
/// and have fetched as their current incarnation (KIP-903): a member already in the ISR was
/// checked when it joined, and fencing or re-registering removes it.
fn validate_isr(
    partition: &PartitionRecord,
    cmd: &AlterPartition,
    brokers: &BTreeMap<BrokerId, BrokerRecord>,
) -> Result<(), IsrProblem> {
    let (new_isr, leader) = (&cmd.new_isr, cmd.leader_id);
    if new_isr.is_empty() {
        return Err(IsrProblem::Empty);
    }
    for (index, &member) in new_isr.iter().enumerate() {
        if new_isr[..index].contains(&member) {
            return Err(IsrProblem::Duplicate(member));
        }
        if !partition.replicas.contains(&member) {
            return Err(IsrProblem::NotAReplica(member));
        }
        if partition.isr.contains(&member) {
            continue;
        }
        let Some(broker) = brokers
            .get(&member)
            .filter(|_| is_unfenced(brokers, member))
        else {
            return Err(IsrProblem::IneligibleBroker(member));
        };
        let fetched = cmd.member_epochs.get(&member).copied();
        if fetched != Some(broker.broker_epoch) {
            return Err(IsrProblem::StaleBrokerEpoch {
                broker_id: member,
                fetched,
                current: broker.broker_epoch,
            });
        }
    }
    if !new_isr.contains(&leader) {
        return Err(IsrProblem::MissingLeader(leader));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::test_support::{assert_rejected, Harness};
    use crate::command::{
        AlterPartition, BrokerId, ElectLeaders, ElectionOutcome, ElectionResult, ElectionType,
        IsrProblem, MetadataCommand, MetadataResponse, Rejection, TopicId,
    };

    /// Brokers 1..=4 (4 replicates nothing) and topic `t` with one partition `[1, 2, 3]`.
    fn cluster() -> Harness {
        let mut h = Harness::with_brokers(&[1, 2, 3, 4]);
        h.create("t", 1, vec![vec![1, 2, 3]]);
        h
    }

    /// An ISR change for `t-0` from its current leader at its current epochs.
    fn alter(h: &Harness, new_isr: Vec<BrokerId>) -> AlterPartition {
        let p = h.partition("t", 0);
        AlterPartition {
            topic_id: h.topic_id("t"),
            partition: 0,
            leader_id: p.leader.expect("has a leader"),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            member_epochs: h.member_epochs(&new_isr),
            new_isr,
        }
    }

    fn elect(election: ElectionType, partitions: Option<Vec<(&str, u32)>>) -> MetadataCommand {
        MetadataCommand::ElectLeaders(ElectLeaders {
            election,
            partitions: partitions.map(|list| {
                list.into_iter()
                    .map(|(topic, p)| (topic.to_owned(), p))
                    .collect()
            }),
        })
    }

    fn outcomes(response: MetadataResponse) -> Vec<ElectionOutcome> {
        match response {
            MetadataResponse::LeadersElected { results } => {
                results.into_iter().map(|r| r.outcome).collect()
            }
            other => panic!("expected LeadersElected, got {other:?}"),
        }
    }

    #[test]
    fn the_leader_shrinks_and_expands_the_isr_bumping_the_partition_epoch() {
        let mut h = cluster();
        let response = h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 3])));
        assert_eq!(
            response,
            MetadataResponse::PartitionAltered {
                leader_epoch: 0,
                partition_epoch: 1,
                isr: vec![1, 3],
            }
        );
        h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 3, 2])));
        let p = h.partition("t", 0);
        assert_eq!(
            (p.isr.clone(), p.partition_epoch, p.leader_epoch),
            (vec![1, 3, 2], 2, 0)
        );
    }

    #[test]
    fn an_unchanged_isr_keeps_the_partition_epoch() {
        let mut h = cluster();
        let response = h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 2, 3])));
        assert_eq!(
            response,
            MetadataResponse::PartitionAltered {
                leader_epoch: 0,
                partition_epoch: 0,
                isr: vec![1, 2, 3],
            }
        );
    }

    #[test]
    fn isr_changes_from_unknown_partitions_or_stale_leaders_are_rejected() {
        let mut h = cluster();
        let unknown_topic = AlterPartition {
            topic_id: TopicId([9; 16]),
            ..alter(&h, vec![1])
        };
        let topic_id = TopicId([9; 16]);
        assert_rejected(
            &mut h,
            MetadataCommand::AlterPartition(unknown_topic),
            Rejection::UnknownTopicId { topic_id },
        );
        let topic_id = h.topic_id("t");
        let cases = [
            (
                AlterPartition {
                    partition: 1,
                    ..alter(&h, vec![1])
                },
                Rejection::UnknownPartition {
                    topic_id,
                    partition: 1,
                },
            ),
            (
                AlterPartition {
                    leader_id: 2,
                    ..alter(&h, vec![2])
                },
                Rejection::NotLeader {
                    broker_id: 2,
                    leader: Some(1),
                },
            ),
            (
                AlterPartition {
                    leader_epoch: 1,
                    ..alter(&h, vec![1])
                },
                Rejection::FencedLeaderEpoch {
                    current: 0,
                    requested: 1,
                },
            ),
            (
                AlterPartition {
                    partition_epoch: -1,
                    ..alter(&h, vec![1])
                },
                Rejection::InvalidPartitionEpoch {
                    current: 0,
                    requested: -1,
                },
            ),
        ];
        for (command, expected) in cases {
            assert_rejected(&mut h, MetadataCommand::AlterPartition(command), expected);
        }
    }

    #[test]
    fn a_change_based_on_an_old_partition_epoch_loses_the_race() {
        let mut h = cluster();
        let first = alter(&h, vec![1, 2]);
        let second = alter(&h, vec![1, 3]);
        h.apply(MetadataCommand::AlterPartition(first));
        assert_rejected(
            &mut h,
            MetadataCommand::AlterPartition(second),
            Rejection::InvalidPartitionEpoch {
                current: 1,
                requested: 0,
            },
        );
    }

    #[test]
    fn invalid_isrs_are_rejected() {
        let mut h = cluster();
        h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 2])));
        h.fence(3);
        let cases = [
            (vec![], IsrProblem::Empty),
            (vec![1, 2, 1], IsrProblem::Duplicate(1)),
            (vec![1, 4], IsrProblem::NotAReplica(4)),
            (vec![2], IsrProblem::MissingLeader(1)),
            // Broker 3 is a replica but fenced: it may not join.
            (vec![1, 3], IsrProblem::IneligibleBroker(3)),
        ];
        for (new_isr, problem) in cases {
            let command = MetadataCommand::AlterPartition(alter(&h, new_isr));
            assert_rejected(&mut h, command, Rejection::InvalidIsr { problem });
        }
    }

    #[test]
    fn an_isr_addition_decided_on_a_previous_incarnation_is_refused_when_resent() {
        // KIP-903: the leader saw broker 3 caught up and proposed adding it; the outcome was
        // lost, broker 3 restarted with a shorter log, and the same change is sent again.
        let mut h = cluster();
        h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 2])));
        let add_3 = alter(&h, vec![1, 2, 3]);
        let old_epoch = h.epoch(3);
        let new_epoch = h.reregister(3, 2, false);
        let resend = MetadataCommand::AlterPartition(add_3.clone());
        assert_rejected(
            &mut h,
            resend.clone(),
            Rejection::InvalidIsr {
                problem: IsrProblem::StaleBrokerEpoch {
                    broker_id: 3,
                    fetched: Some(old_epoch),
                    current: new_epoch,
                },
            },
        );
        // Twice the same refusal: nothing about the resend changes the outcome.
        assert_rejected(&mut h, resend, rejection_of_stale(3, old_epoch, new_epoch));
        // A fetch of the new incarnation is the evidence it takes.
        let mut current = add_3;
        current.member_epochs.insert(3, new_epoch);
        let response = h.apply(MetadataCommand::AlterPartition(current));
        assert!(matches!(
            response,
            MetadataResponse::PartitionAltered { .. }
        ));
        assert_eq!(h.partition("t", 0).isr, vec![1, 2, 3]);
    }

    #[test]
    fn an_isr_addition_without_the_members_broker_epoch_is_refused() {
        let mut h = cluster();
        h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 2])));
        let mut add_3 = alter(&h, vec![1, 2, 3]);
        add_3.member_epochs.remove(&3);
        let current = h.epoch(3);
        assert_rejected(
            &mut h,
            MetadataCommand::AlterPartition(add_3),
            Rejection::InvalidIsr {
                problem: IsrProblem::StaleBrokerEpoch {
                    broker_id: 3,
                    fetched: None,
                    current,
                },
            },
        );
    }

    fn rejection_of_stale(broker_id: BrokerId, fetched: i64, current: i64) -> Rejection {
        Rejection::InvalidIsr {
            problem: IsrProblem::StaleBrokerEpoch {
                broker_id,
                fetched: Some(fetched),
                current,
            },
        }
    }

    #[test]
    fn preferred_election_moves_leadership_back_to_the_first_replica() {
        let mut h = cluster();
        h.register(1, 2, None);
        assert_eq!(h.partition("t", 0).leader, Some(2));
        // The new incarnation of 1 must rejoin the ISR before it can lead again.
        let not_yet = h.apply(elect(ElectionType::Preferred, Some(vec![("t", 0)])));
        assert_eq!(outcomes(not_yet), [ElectionOutcome::NotAvailable]);
        h.apply(MetadataCommand::AlterPartition(alter(&h, vec![2, 3, 1])));
        let response = h.apply(elect(ElectionType::Preferred, None));
        assert_eq!(
            response,
            MetadataResponse::LeadersElected {
                results: vec![ElectionResult {
                    topic: "t".to_owned(),
                    partition: 0,
                    outcome: ElectionOutcome::Elected {
                        leader: 1,
                        leader_epoch: 2,
                        last_in_sync: None,
                    },
                }],
            }
        );
        let p = h.partition("t", 0);
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (Some(1), 2, 3)
        );
        let again = h.apply(elect(ElectionType::Preferred, None));
        assert_eq!(outcomes(again), [ElectionOutcome::NotNeeded]);
    }

    #[test]
    fn elections_report_unknown_partitions_per_partition() {
        let mut h = cluster();
        let response = h.apply(elect(
            ElectionType::Preferred,
            Some(vec![("t", 1), ("u", 0), ("t", 0)]),
        ));
        assert_eq!(
            outcomes(response),
            [
                ElectionOutcome::UnknownTopicOrPartition,
                ElectionOutcome::UnknownTopicOrPartition,
                ElectionOutcome::NotNeeded,
            ]
        );
    }

    #[test]
    fn unclean_election_revives_an_offline_partition_from_outside_its_isr() {
        let mut h = cluster();
        h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1])));
        let led = h.apply(elect(ElectionType::Unclean, None));
        assert_eq!(outcomes(led), [ElectionOutcome::NotNeeded]);
        h.fence(1);
        h.fence(2);
        let response = h.apply(elect(ElectionType::Unclean, Some(vec![("t", 0)])));
        assert_eq!(
            outcomes(response),
            [ElectionOutcome::Elected {
                leader: 3,
                leader_epoch: 2,
                last_in_sync: Some(vec![1]),
            }]
        );
        let p = h.partition("t", 0);
        assert_eq!(
            (p.leader, p.isr.clone(), p.partition_epoch),
            (Some(3), vec![3], 3)
        );
    }

    #[test]
    fn unclean_election_without_any_live_replica_is_not_available() {
        let mut h = cluster();
        h.fence(2);
        h.fence(3);
        h.fence(1);
        let before = h.image.clone();
        let response = h.apply(elect(ElectionType::Unclean, None));
        assert_eq!(outcomes(response), [ElectionOutcome::NotAvailable]);
        assert_eq!(
            h.image.topics().collect::<Vec<_>>(),
            before.topics().collect::<Vec<_>>()
        );
    }

    #[test]
    fn a_reordered_isr_is_not_a_change() {
        let mut h = cluster();
        let before = h.partition("t", 0).clone();
        let mut reordered = before.isr.clone();
        reordered.reverse();
        let response = h.apply(MetadataCommand::AlterPartition(alter(&h, reordered)));
        assert!(matches!(
            response,
            MetadataResponse::PartitionAltered { .. }
        ));
        assert_eq!(h.partition("t", 0), &before);
    }

    fn reassign(h: &mut Harness, target: Option<Vec<BrokerId>>) -> Result<(), Rejection> {
        let command = MetadataCommand::AlterReassignments(crate::command::AlterReassignments {
            reassignments: vec![crate::command::Reassignment {
                topic: "t".into(),
                partition: 0,
                target,
            }],
        });
        match h.apply(command) {
            MetadataResponse::ReassignmentsAltered { mut results } => results.remove(0),
            other => panic!("answered {other:?}"),
        }
    }

    #[test]
    fn a_reassignment_adds_replicas_then_drops_the_old_ones_once_the_new_are_in_sync() {
        let mut h = cluster();
        reassign(&mut h, Some(vec![2, 3, 4])).unwrap();
        let p = h.partition("t", 0).clone();
        assert_eq!(p.replicas, vec![2, 3, 4, 1]);
        assert_eq!(
            (p.adding_replicas.clone(), p.removing_replicas.clone()),
            (vec![4], vec![1])
        );
        assert_eq!(
            p.leader,
            Some(1),
            "the leader stays until the move completes"
        );
        // Leader 1 adds the caught-up replica 4 to the ISR: the reassignment completes and
        // leadership leaves the removed broker at a new epoch.
        let response = h.apply(MetadataCommand::AlterPartition(alter(&h, vec![1, 2, 3, 4])));
        assert!(
            matches!(response, MetadataResponse::PartitionAltered { .. }),
            "{response:?}"
        );
        let done = h.partition("t", 0);
        assert_eq!(done.replicas, vec![2, 3, 4]);
        assert_eq!(done.isr, vec![2, 3, 4]);
        assert_eq!(done.leader, Some(2));
        assert_eq!(done.leader_epoch, p.leader_epoch + 1);
        assert!(!done.is_reassigning());
    }

    #[test]
    fn a_reassignment_can_be_cancelled_and_bad_targets_are_refused() {
        let mut h = cluster();
        assert!(matches!(
            reassign(&mut h, None),
            Err(Rejection::NoReassignmentInProgress { .. })
        ));
        assert!(matches!(
            reassign(&mut h, Some(vec![1, 9])),
            Err(Rejection::InvalidReplicaAssignment { .. })
        ));
        reassign(&mut h, Some(vec![1, 2, 4])).unwrap();
        reassign(&mut h, None).unwrap();
        let p = h.partition("t", 0);
        assert_eq!(p.replicas, vec![1, 2, 3]);
        assert!(!p.is_reassigning());
        // A target already in sync (a pure removal) completes at once.
        reassign(&mut h, Some(vec![2, 3])).unwrap();
        let p = h.partition("t", 0);
        assert_eq!((p.replicas.clone(), p.leader), (vec![2, 3], Some(2)));
    }
}
