//! Group membership over the classic protocol: the join (JoinGroup, then SyncGroup with the
//! leader's assignment), the heartbeat task, and LeaveGroup; and [`MemberState`], which the
//! consumer, its heartbeat task and its commits share. Errors map as in the Java client:
//! MEMBER_ID_REQUIRED joins again with the given id, UNKNOWN_MEMBER_ID drops the id,
//! ILLEGAL_GENERATION the generation (both lose the partitions), REBALANCE_IN_PROGRESS asks for
//! a rejoin, coordinator errors look the coordinator up again, FENCED_INSTANCE_ID is fatal.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatRequest, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    SyncGroupRequest,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::error::{Error, Result};
use crate::group::assignor::{Assignor, Member};
use crate::group::coordinator::Coordinator;
use crate::group::protocol::{self, Subscription, CONSUMER_PROTOCOL_TYPE};
use crate::record::TopicPartition;

const JOIN_GROUP_VERSIONS: (i16, i16) = (1, 9);
const SYNC_GROUP_VERSIONS: (i16, i16) = (0, 5);
const HEARTBEAT_VERSIONS: (i16, i16) = (0, 4);
const LEAVE_GROUP_VERSIONS: (i16, i16) = (0, 5);

/// No generation: not (or no longer) a member of one.
pub const NO_GENERATION: i32 = -1;

/// What the consumer and its background tasks know of the membership.
#[derive(Debug)]
pub struct MemberState {
    /// "" until the coordinator gives one.
    pub member_id: String,
    pub generation: i32,
    /// The assignor of the current generation.
    pub protocol: Option<Assignor>,
    /// A rebalance is needed: the coordinator said so, the subscription changed, or (the
    /// cooperative protocol) this member gave partitions up.
    pub rejoin: bool,
    /// The membership was lost (session expired, fenced by a newer generation): the owned
    /// partitions belong to someone else now, and are not committed.
    pub lost: bool,
    /// An error no retry can fix (FENCED_INSTANCE_ID): every later call fails with it.
    pub fatal: Option<Error>,
    /// The last `poll`: the heartbeat task leaves the group when it is `max_poll_interval` old.
    pub last_poll: Instant,
    /// KIP-848: the partitions this member has reconciled to and reports in its heartbeats.
    pub owned: Vec<TopicPartition>,
    /// KIP-848: an assignment the coordinator sent that `poll` has not reconciled to yet.
    pub target: Option<Vec<TopicPartition>>,
    /// KIP-848: the subscription the heartbeats carry: topic names, or a regular expression.
    pub topics: Vec<String>,
    pub regex: Option<String>,
    /// KIP-848: the heartbeat interval the coordinator asked for.
    pub heartbeat_interval: Option<Duration>,
}

impl Default for MemberState {
    fn default() -> Self {
        MemberState {
            member_id: String::new(),
            generation: NO_GENERATION,
            protocol: None,
            rejoin: false,
            lost: false,
            fatal: None,
            last_poll: Instant::now(),
            owned: Vec::new(),
            target: None,
            topics: Vec::new(),
            regex: None,
            heartbeat_interval: None,
        }
    }
}

/// [`MemberState`] behind a lock, shared with the tasks.
#[derive(Debug, Clone, Default)]
pub struct Shared(Arc<Mutex<MemberState>>);

impl Shared {
    pub fn lock(&self) -> MutexGuard<'_, MemberState> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Applies an error a heartbeat or commit of `generation` (as `member_id`) got; ignored
    /// if the membership moved on since.
    pub fn note_error(&self, error: &Error, member_id: &str, generation: i32) {
        let mut state = self.lock();
        if state.member_id != member_id || state.generation != generation {
            return;
        }
        match error {
            Error::Kafka {
                error: ResponseError::RebalanceInProgress,
                ..
            } => state.rejoin = true,
            Error::Kafka {
                error: ResponseError::UnknownMemberId,
                ..
            } => {
                state.member_id.clear();
                state.generation = NO_GENERATION;
                state.lost = true;
            }
            Error::Kafka {
                error: ResponseError::IllegalGeneration,
                ..
            } => {
                state.generation = NO_GENERATION;
                state.lost = true;
            }
            Error::Kafka {
                error: ResponseError::FencedInstanceId,
                ..
            } => {
                state.generation = NO_GENERATION;
                state.lost = true;
                state.fatal = Some(error.clone());
            }
            _ => {}
        }
    }
}

/// The settings one join needs.
#[derive(Debug, Clone)]
pub struct JoinSettings {
    pub group_instance_id: Option<String>,
    pub session_timeout: Duration,
    pub rebalance_timeout: Duration,
    /// In preference order.
    pub assignors: Vec<Assignor>,
    pub rack_id: Option<String>,
}

/// The outcome of a join.
#[derive(Debug, Clone)]
pub struct Joined {
    pub member_id: String,
    pub generation: i32,
    pub protocol: Assignor,
    pub assignment: Vec<TopicPartition>,
    /// As leader: the partition counts the assignment was made from, 0 for the group's topics
    /// that do not exist (a change asks for a new assignment).
    pub leader_of: Option<BTreeMap<String, i32>>,
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

fn group_id(coordinator: &Coordinator) -> GroupId {
    GroupId(str_bytes(coordinator.group_id()))
}

fn is(error: &Error, code: ResponseError) -> bool {
    matches!(error, Error::Kafka { error, .. } if *error == code)
}

/// Joins the group with `topics` (and, for the cooperative protocol, the `owned` partitions)
/// and returns the assignment, retrying the join's own errors until `deadline`. Member id and
/// generation are kept in `shared` as they change, so that an abandoned join still leaves
/// them for LeaveGroup.
pub async fn join(
    coordinator: &Coordinator,
    shared: &Shared,
    settings: &JoinSettings,
    topics: &[String],
    owned: &[TopicPartition],
    reason: &str,
    deadline: Instant,
) -> Result<Joined> {
    let client = coordinator.client().clone();
    let mut backoff = client.config().retry_backoff;
    loop {
        let (member_id, generation) = {
            let state = shared.lock();
            (state.member_id.clone(), state.generation)
        };
        let protocols = settings
            .assignors
            .iter()
            .map(|assignor| {
                let subscription = Subscription {
                    topics: topics.to_vec(),
                    user_data: assignor.user_data(generation),
                    owned_partitions: owned.to_vec(),
                    generation,
                    rack_id: settings.rack_id.clone(),
                };
                Ok(JoinGroupRequestProtocol::default()
                    .with_name(str_bytes(assignor.name()))
                    .with_metadata(protocol::encode_subscription(&subscription)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let request = JoinGroupRequest::default()
            .with_group_id(group_id(coordinator))
            .with_session_timeout_ms(millis(settings.session_timeout))
            .with_rebalance_timeout_ms(millis(settings.rebalance_timeout))
            .with_member_id(str_bytes(&member_id))
            .with_group_instance_id(settings.group_instance_id.as_deref().map(str_bytes))
            .with_protocol_type(str_bytes(CONSUMER_PROTOCOL_TYPE))
            .with_protocols(protocols);
        // The coordinator holds a JoinGroup until every member joined, up to the rebalance
        // timeout; Java waits that long plus 5 s.
        let wait = settings.rebalance_timeout + Duration::from_secs(5);
        let response = coordinator
            .send(
                |version| {
                    // The reason is a v8+ field (KIP-800).
                    let reason = (version >= 8).then(|| str_bytes(reason));
                    request.clone().with_reason(reason)
                },
                JOIN_GROUP_VERSIONS,
                Some(wait),
                deadline,
                |r| r.error_code,
            )
            .await?;
        let outcome = Error::check(response.error_code, || {
            Some(format!("JoinGroup {}", coordinator.group_id()))
        });
        match outcome {
            Ok(()) => {}
            Err(e) if is(&e, ResponseError::MemberIdRequired) => {
                // KIP-394: join again at once with the id the coordinator made.
                shared.lock().member_id = response.member_id.to_string();
                continue;
            }
            Err(e) if is(&e, ResponseError::RebalanceInProgress) => {
                if Instant::now() + backoff >= deadline {
                    return Err(e);
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(client.config().retry_backoff_max);
                continue;
            }
            Err(e) => {
                // UNKNOWN_MEMBER_ID and ILLEGAL_GENERATION reset the membership (the consumer
                // treats its partitions as lost, then joins again); FENCED_INSTANCE_ID is fatal.
                shared.note_error(&e, &member_id, generation);
                return Err(e);
            }
        }
        let member_id = response.member_id.to_string();
        let generation = response.generation_id;
        {
            let mut state = shared.lock();
            state.member_id = member_id.clone();
            state.generation = generation;
        }
        let protocol_name = response
            .protocol_name
            .as_ref()
            .map(ToString::to_string)
            .unwrap_or_default();
        let protocol = Assignor::from_name(&protocol_name)
            .filter(|a| settings.assignors.contains(a))
            .ok_or_else(|| {
                Error::Protocol(format!(
                    "coordinator chose unknown protocol {protocol_name:?}"
                ))
            })?;
        let leader = response.leader == response.member_id;
        let (assignments, leader_of) = if leader && !response.skip_assignment {
            let (assignments, counts) = leader_assign(coordinator, protocol, &response).await?;
            (assignments, Some(counts))
        } else {
            // KIP-814: a static leader that rejoined keeps the assignment it made before.
            (Vec::new(), None)
        };
        let sync = SyncGroupRequest::default()
            .with_group_id(group_id(coordinator))
            .with_generation_id(generation)
            .with_member_id(str_bytes(&member_id))
            .with_group_instance_id(settings.group_instance_id.as_deref().map(str_bytes))
            .with_assignments(assignments);
        let synced = coordinator
            .send(
                |version| {
                    // Protocol type and name are v5+ fields (KIP-559).
                    let v5 = version >= 5;
                    sync.clone()
                        .with_protocol_type(v5.then(|| str_bytes(CONSUMER_PROTOCOL_TYPE)))
                        .with_protocol_name(v5.then(|| str_bytes(protocol.name())))
                },
                SYNC_GROUP_VERSIONS,
                Some(wait),
                deadline,
                |r| r.error_code,
            )
            .await?;
        match Error::check(synced.error_code, || {
            Some(format!("SyncGroup {}", coordinator.group_id()))
        }) {
            Ok(()) => {
                return Ok(Joined {
                    member_id,
                    generation,
                    protocol,
                    assignment: protocol::decode_assignment(synced.assignment)?,
                    leader_of,
                });
            }
            Err(e) if is(&e, ResponseError::RebalanceInProgress) && Instant::now() < deadline => {
                tracing::debug!(group = %coordinator.group_id(), "rebalance restarted; joining again");
            }
            Err(e) => {
                shared.note_error(&e, &member_id, generation);
                return Err(e);
            }
        }
    }
}

/// The leader's part: every member's assignment, from their subscriptions and the partition
/// counts of their topics.
async fn leader_assign(
    coordinator: &Coordinator,
    protocol: Assignor,
    response: &JoinGroupResponse,
) -> Result<(Vec<SyncGroupRequestAssignment>, BTreeMap<String, i32>)> {
    let members = response
        .members
        .iter()
        .map(|m| {
            Ok(Member {
                member_id: m.member_id.to_string(),
                group_instance_id: m.group_instance_id.as_ref().map(ToString::to_string),
                subscription: protocol::decode_subscription(m.metadata.clone())?,
            })
        })
        .collect::<Result<Vec<Member>>>()?;
    let mut topics: Vec<String> = members
        .iter()
        .flat_map(|m| m.subscription.topics.iter().cloned())
        .collect();
    topics.sort();
    topics.dedup();
    let client = coordinator.client();
    let counts: BTreeMap<String, i32> = if topics.is_empty() {
        BTreeMap::new()
    } else {
        let metadata = client
            .retry(&topics, || client.refresh_metadata(&topics, false))
            .await?;
        topics
            .iter()
            .filter_map(|t| {
                let info = metadata.topics.get(t)?;
                Some((t.clone(), i32::try_from(info.partitions.len()).ok()?))
            })
            .collect()
    };
    let assignment = protocol.assign(&counts, &members);
    // Topics that do not exist yet count as 0 partitions: their creation, like any change of a
    // count, makes the leader ask for a new assignment.
    let mut counts = counts;
    for topic in topics {
        counts.entry(topic).or_insert(0);
    }
    tracing::info!(group = %coordinator.group_id(), protocol = protocol.name(),
        members = members.len(), "assigned partitions as leader");
    let assignments = assignment
        .into_iter()
        .map(|(member_id, tps)| {
            Ok(SyncGroupRequestAssignment::default()
                .with_member_id(str_bytes(&member_id))
                .with_assignment(protocol::encode_assignment(&tps, None)?))
        })
        .collect::<Result<Vec<_>>>()?;
    Ok((assignments, counts))
}

/// Heartbeats every `interval` for `member_id` in `generation` until the membership ends:
/// an error ends it (see [`Shared::note_error`]), or `poll` was not called for
/// `max_poll_interval`, after which the member leaves (a dynamic one) and its partitions
/// count as lost, as in Java.
pub async fn heartbeat_loop(
    coordinator: Arc<Coordinator>,
    shared: Shared,
    settings: JoinSettings,
    interval: Duration,
    max_poll_interval: Duration,
    member_id: String,
    generation: i32,
) {
    let request = HeartbeatRequest::default()
        .with_group_id(group_id(&coordinator))
        .with_generation_id(generation)
        .with_member_id(str_bytes(&member_id))
        .with_group_instance_id(settings.group_instance_id.as_deref().map(str_bytes));
    loop {
        tokio::time::sleep(interval).await;
        let last_poll = shared.lock().last_poll;
        if last_poll.elapsed() > max_poll_interval {
            tracing::warn!(group = %coordinator.group_id(), ?max_poll_interval,
                "poll not called within max_poll_interval: leaving the group");
            {
                let mut state = shared.lock();
                if state.member_id != member_id || state.generation != generation {
                    return;
                }
                state.generation = NO_GENERATION;
                state.lost = true;
                if settings.group_instance_id.is_none() {
                    state.member_id.clear();
                }
            }
            if settings.group_instance_id.is_none() {
                leave(&coordinator, &member_id, None, "poll timeout expired").await;
            }
            return;
        }
        let deadline = Instant::now() + settings.session_timeout;
        let result = coordinator
            .send(
                |_| request.clone(),
                HEARTBEAT_VERSIONS,
                None,
                deadline,
                |r| r.error_code,
            )
            .await
            .and_then(|r| Error::check(r.error_code, || Some("Heartbeat".to_owned())));
        match result {
            Ok(()) => {}
            Err(e) if is(&e, ResponseError::RebalanceInProgress) => {
                // Heartbeats go on while the consumer rejoins: they keep the member alive.
                shared.note_error(&e, &member_id, generation);
            }
            Err(e)
                if is(&e, ResponseError::UnknownMemberId)
                    || is(&e, ResponseError::IllegalGeneration)
                    || is(&e, ResponseError::FencedInstanceId) =>
            {
                tracing::info!(group = %coordinator.group_id(), error = %e, "heartbeat ended the membership");
                shared.note_error(&e, &member_id, generation);
                return;
            }
            Err(e) => {
                // Coordinator moves were retried already; anything else is worth another try
                // at the next interval rather than a silent end of the heartbeats.
                tracing::warn!(group = %coordinator.group_id(), error = %e, "heartbeat failed");
            }
        }
    }
}

/// Sends LeaveGroup for `member_id` (best effort: a failure is logged; the session timeout
/// removes the member anyway).
pub async fn leave(
    coordinator: &Coordinator,
    member_id: &str,
    group_instance_id: Option<&str>,
    reason: &str,
) {
    // v0-v2 name one member; v3+ (KIP-345) a list, with a reason from v5 (KIP-800).
    let request = |version: i16| {
        let request = LeaveGroupRequest::default().with_group_id(group_id(coordinator));
        if version < 3 {
            return request.with_member_id(str_bytes(member_id));
        }
        request.with_members(vec![MemberIdentity::default()
            .with_member_id(str_bytes(member_id))
            .with_group_instance_id(group_instance_id.map(str_bytes))
            .with_reason((version >= 5).then(|| str_bytes(reason)))])
    };
    let deadline = Instant::now() + coordinator.client().config().request_timeout;
    let result = coordinator
        .send(request, LEAVE_GROUP_VERSIONS, None, deadline, |r| {
            r.error_code
        })
        .await
        .and_then(|r| {
            Error::check(r.error_code, || Some("LeaveGroup".to_owned()))?;
            r.members
                .iter()
                .try_for_each(|m| Error::check(m.error_code, || Some("LeaveGroup".to_owned())))
        });
    match result {
        Ok(()) => tracing::debug!(group = %coordinator.group_id(), member_id, "left the group"),
        Err(error) => {
            tracing::info!(group = %coordinator.group_id(), member_id, %error, "LeaveGroup failed");
        }
    }
}

pub fn millis(duration: Duration) -> i32 {
    i32::try_from(duration.as_millis()).unwrap_or(i32::MAX)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(shared: &Shared) -> (String, i32) {
        let mut state = shared.lock();
        state.member_id = "m-1".to_owned();
        state.generation = 4;
        (state.member_id.clone(), state.generation)
    }

    #[test]
    fn errors_end_or_keep_the_membership_as_in_java() {
        let shared = Shared::default();
        let (id, generation) = member(&shared);
        shared.note_error(&Error::kafka(27, None), &id, generation);
        {
            let state = shared.lock();
            assert!(state.rejoin && !state.lost);
            assert_eq!(state.generation, 4);
        }

        shared.note_error(&Error::kafka(22, None), &id, generation);
        let state = shared.lock();
        assert!(state.lost);
        assert_eq!(
            (state.member_id.as_str(), state.generation),
            ("m-1", NO_GENERATION)
        );
        drop(state);

        let shared = Shared::default();
        let (id, generation) = member(&shared);
        shared.note_error(&Error::kafka(25, None), &id, generation);
        {
            let state = shared.lock();
            assert_eq!((state.member_id.as_str(), state.lost), ("", true));
        }

        let shared = Shared::default();
        let (id, generation) = member(&shared);
        shared.note_error(&Error::kafka(82, None), &id, generation);
        assert_eq!(
            shared.lock().fatal.as_ref().and_then(Error::kafka_code),
            Some(82)
        );
    }

    #[test]
    fn errors_of_an_older_generation_are_ignored() {
        let shared = Shared::default();
        let (id, _) = member(&shared);
        shared.note_error(&Error::kafka(22, None), &id, 3);
        shared.note_error(&Error::kafka(25, None), "m-0", 4);
        let state = shared.lock();
        assert!(!state.lost && !state.rejoin);
        assert_eq!(state.generation, 4);
    }
}
