//! Leader elections: preferred (move leadership back to each partition's first replica, e.g.
//! after failovers) or unclean (give a leaderless partition a leader outside the ISR), as one
//! `ElectLeaders` metadata command.

use streambus_raft::command::{
    BrokerId, ElectLeaders, ElectionOutcome, ElectionResult, ElectionType,
};
use streambus_raft::{MetadataCommand, MetadataResponse};

use super::OpsError;
use crate::context::BrokerContext;

/// The outcome of an election for one partition.
#[derive(Debug, Clone)]
pub struct PartitionElection {
    pub topic: String,
    pub partition: i32,
    /// The leader elected, or why there was no election.
    pub outcome: Result<NewLeader, OpsError>,
}

/// A partition's leader after an election.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewLeader {
    pub leader: BrokerId,
    pub leader_epoch: i32,
    /// `None` after a clean election. After an unclean one, the replicas that last held every
    /// committed record: any record beyond the new leader's log end that only they hold is
    /// lost, and they truncate to the new leader's log when they return.
    pub last_in_sync: Option<Vec<BrokerId>>,
}

impl NewLeader {
    /// What an unclean election may have lost, for the operator; `None` after a clean one.
    pub fn loss_report(&self) -> Option<String> {
        let holders = self.last_in_sync.as_ref()?;
        Some(format!(
            "unclean election: broker {} leads without a guarantee of every committed record; \
             records beyond its log end are lost unless it holds them (last in sync: brokers \
             {holders:?})",
            self.leader
        ))
    }
}

/// Runs a `election` for `partitions` (`None`: every partition of every topic). Invalid
/// (negative) partitions come first in the answer, refused; then one outcome per partition the
/// state machine looked at. An `Err` is a failure of the whole election.
pub async fn elect_leaders(
    ctx: &BrokerContext,
    election: ElectionType,
    partitions: Option<Vec<(String, i32)>>,
) -> Result<Vec<PartitionElection>, OpsError> {
    let mut answer = Vec::new();
    let partitions = partitions.map(|partitions| {
        let mut wanted = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            match u32::try_from(partition) {
                Ok(index) => wanted.push((topic, index)),
                Err(_) => answer.push(PartitionElection {
                    outcome: Err(OpsError::UnknownPartition {
                        topic: topic.clone(),
                        partition,
                    }),
                    topic,
                    partition,
                }),
            }
        }
        wanted
    });
    let command = MetadataCommand::ElectLeaders(ElectLeaders {
        election,
        partitions,
    });
    match ctx.write(command).await? {
        MetadataResponse::LeadersElected { results } => {
            answer.extend(results.into_iter().map(|result| elected(election, result)));
            Ok(answer)
        }
        other => {
            tracing::warn!(?other, "unexpected answer to ElectLeaders");
            Err(OpsError::UnexpectedAnswer(format!("{other:?}")))
        }
    }
}

fn elected(election: ElectionType, result: ElectionResult) -> PartitionElection {
    let partition = i32::try_from(result.partition).unwrap_or(i32::MAX);
    let outcome = match result.outcome {
        ElectionOutcome::Elected {
            leader,
            leader_epoch,
            last_in_sync,
        } => {
            let new_leader = NewLeader {
                leader,
                leader_epoch,
                last_in_sync,
            };
            if let Some(report) = new_leader.loss_report() {
                tracing::warn!(topic = %result.topic, partition, "{report}");
            }
            Ok(new_leader)
        }
        ElectionOutcome::NotNeeded => Err(OpsError::ElectionNotNeeded),
        ElectionOutcome::NotAvailable => Err(match election {
            ElectionType::Preferred => OpsError::PreferredLeaderNotAvailable,
            ElectionType::Unclean => OpsError::EligibleLeadersNotAvailable,
        }),
        ElectionOutcome::UnknownTopicOrPartition => Err(OpsError::UnknownPartition {
            topic: result.topic.clone(),
            partition,
        }),
    };
    PartitionElection {
        topic: result.topic,
        partition,
        outcome,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn result(outcome: ElectionOutcome) -> ElectionResult {
        ElectionResult {
            topic: "t".to_owned(),
            partition: 3,
            outcome,
        }
    }

    #[test]
    fn outcomes_name_the_election_that_found_no_leader() {
        let preferred = elected(
            ElectionType::Preferred,
            result(ElectionOutcome::NotAvailable),
        );
        assert!(matches!(
            preferred.outcome,
            Err(OpsError::PreferredLeaderNotAvailable)
        ));
        let unclean = elected(ElectionType::Unclean, result(ElectionOutcome::NotAvailable));
        assert!(matches!(
            unclean.outcome,
            Err(OpsError::EligibleLeadersNotAvailable)
        ));
        let done = elected(
            ElectionType::Preferred,
            result(ElectionOutcome::Elected {
                leader: 2,
                leader_epoch: 5,
                last_in_sync: None,
            }),
        );
        assert_eq!((done.topic.as_str(), done.partition), ("t", 3));
        assert_eq!(
            done.outcome.unwrap(),
            NewLeader {
                leader: 2,
                leader_epoch: 5,
                last_in_sync: None,
            }
        );
        let unknown = elected(
            ElectionType::Unclean,
            result(ElectionOutcome::UnknownTopicOrPartition),
        );
        assert!(matches!(
            unknown.outcome,
            Err(OpsError::UnknownPartition { partition: 3, .. })
        ));
        let not_needed = elected(ElectionType::Unclean, result(ElectionOutcome::NotNeeded));
        assert!(matches!(
            not_needed.outcome,
            Err(OpsError::ElectionNotNeeded)
        ));
    }
}
