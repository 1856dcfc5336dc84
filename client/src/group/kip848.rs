//! Group membership over KIP-848's consumer protocol (`group.protocol=consumer`): one
//! ConsumerGroupHeartbeat (v1: the member names itself with a UUID) both joins (epoch 0),
//! keeps the member alive, reports the partitions it owns and brings its assignment, which
//! the coordinator computes. The heartbeat task here only talks to the coordinator; `poll`
//! reconciles (revokes, then assigns) and sets `MemberState::owned`, which the next
//! heartbeat, sent at once, reports. Errors follow Apache Kafka's `ConsumerMembershipManager`:
//! FENCED_MEMBER_EPOCH and UNKNOWN_MEMBER_ID lose the partitions and rejoin with epoch 0 (same
//! member id), coordinator errors look the coordinator up again, and UNRELEASED_INSTANCE_ID,
//! UNSUPPORTED_ASSIGNOR, GROUP_MAX_SIZE_REACHED, INVALID_REQUEST (and any other non-retriable
//! error) are fatal.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant};

use kafka_protocol::messages::consumer_group_heartbeat_request::TopicPartitions;
use kafka_protocol::messages::{
    ConsumerGroupHeartbeatRequest, ConsumerGroupHeartbeatResponse, GroupId, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;
use tokio::sync::Notify;

use crate::error::{Error, Result};
use crate::group::coordinator::Coordinator;
use crate::group::membership::{millis, Shared, NO_GENERATION};
use crate::record::TopicPartition;

/// v1: the member generates its member id (v0: the coordinator does).
const HEARTBEAT_VERSIONS: (i16, i16) = (1, 1);
/// The epoch of a member that leaves; a static member's that leaves for now (a restart).
const LEAVE_EPOCH: i32 = -1;
const LEAVE_EPOCH_STATIC: i32 = -2;

/// Which group protocol a [`GroupConsumer`](crate::group::GroupConsumer) speaks
/// (`group.protocol`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GroupProtocol {
    /// JoinGroup/SyncGroup/Heartbeat, the assignment made by the group leader.
    #[default]
    Classic,
    /// KIP-848: ConsumerGroupHeartbeat, the assignment made by the coordinator.
    Consumer,
}

/// What the heartbeat task needs.
#[derive(Debug, Clone)]
pub struct Settings {
    pub group_instance_id: Option<String>,
    pub rebalance_timeout: Duration,
    pub server_assignor: Option<String>,
    pub rack_id: Option<String>,
    pub max_poll_interval: Duration,
    /// Until the coordinator says otherwise.
    pub heartbeat_interval: Duration,
}

/// Wake-ups between the consumer and its heartbeat task.
#[derive(Debug, Default)]
pub struct Signals {
    /// The consumer reconciled (or the subscription changed): heartbeat now.
    pub send_now: Notify,
    /// A heartbeat was answered.
    pub answered: Notify,
}

/// What a reconciliation does: the partitions to revoke (owned, no longer assigned) and those
/// to add (assigned, not owned), each sorted.
pub fn reconcile(
    owned: &[TopicPartition],
    target: &[TopicPartition],
) -> (Vec<TopicPartition>, Vec<TopicPartition>) {
    let owned: BTreeSet<&TopicPartition> = owned.iter().collect();
    let target: BTreeSet<&TopicPartition> = target.iter().collect();
    (
        owned.difference(&target).map(|tp| (*tp).clone()).collect(),
        target.difference(&owned).map(|tp| (*tp).clone()).collect(),
    )
}

fn str_bytes(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_owned())
}

/// Topic id (as the metadata spells it) ↔ name, learnt from metadata.
#[derive(Debug, Default)]
struct TopicIds {
    names: HashMap<uuid::Uuid, String>,
    ids: HashMap<String, uuid::Uuid>,
}

impl TopicIds {
    async fn learn(&mut self, coordinator: &Coordinator) -> Result<()> {
        let client = coordinator.client();
        let metadata = client.refresh_metadata(&[], false).await?;
        for (name, info) in &metadata.topics {
            if let Ok(id) = uuid::Uuid::parse_str(&info.topic_id) {
                self.names.insert(id, name.clone());
                self.ids.insert(name.clone(), id);
            }
        }
        Ok(())
    }

    /// The partitions of an assignment, by name; ids the metadata does not know yet are
    /// looked up once more, then left out (the next assignment brings them again).
    async fn resolve(
        &mut self,
        coordinator: &Coordinator,
        response: &ConsumerGroupHeartbeatResponse,
    ) -> Option<Vec<TopicPartition>> {
        let assignment = response.assignment.as_ref()?;
        if assignment
            .topic_partitions
            .iter()
            .any(|t| !self.names.contains_key(&t.topic_id))
        {
            if let Err(error) = self.learn(coordinator).await {
                tracing::warn!(group = %coordinator.group_id(), %error, "metadata for topic ids failed");
            }
        }
        let mut tps = Vec::new();
        for topic in &assignment.topic_partitions {
            match self.names.get(&topic.topic_id) {
                Some(name) => tps.extend(
                    topic
                        .partitions
                        .iter()
                        .map(|&p| TopicPartition::new(name.clone(), p)),
                ),
                None => tracing::warn!(group = %coordinator.group_id(), topic_id = %topic.topic_id,
                    "assigned a topic the metadata does not know yet"),
            }
        }
        tps.sort();
        Some(tps)
    }

    fn by_id(&self, tps: &[TopicPartition]) -> Vec<TopicPartitions> {
        let mut topics: std::collections::BTreeMap<uuid::Uuid, Vec<i32>> =
            std::collections::BTreeMap::new();
        for tp in tps {
            if let Some(id) = self.ids.get(&tp.topic) {
                topics.entry(*id).or_default().push(tp.partition);
            }
        }
        topics
            .into_iter()
            .map(|(id, mut partitions)| {
                partitions.sort_unstable();
                TopicPartitions::default()
                    .with_topic_id(id)
                    .with_partitions(partitions)
            })
            .collect()
    }
}

/// The heartbeat the member's state calls for. Every field is sent every time (allowed by
/// KIP-848, and simpler than tracking what the coordinator has seen).
fn request(
    group_id: &str,
    shared: &Shared,
    settings: &Settings,
    ids: &TopicIds,
) -> ConsumerGroupHeartbeatRequest {
    let state = shared.lock();
    let joining = state.generation == NO_GENERATION;
    let epoch = if joining { 0 } else { state.generation };
    let owned = if joining {
        Vec::new()
    } else {
        ids.by_id(&state.owned)
    };
    let (names, regex) = match &state.regex {
        Some(regex) => (None, Some(str_bytes(regex))),
        None => (
            Some(
                state
                    .topics
                    .iter()
                    .map(|t| TopicName(str_bytes(t)))
                    .collect(),
            ),
            None,
        ),
    };
    ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(group_id)))
        .with_member_id(str_bytes(&state.member_id))
        .with_member_epoch(epoch)
        .with_instance_id(settings.group_instance_id.as_deref().map(str_bytes))
        .with_rack_id(settings.rack_id.as_deref().map(str_bytes))
        .with_rebalance_timeout_ms(millis(settings.rebalance_timeout))
        .with_subscribed_topic_names(names)
        .with_subscribed_topic_regex(regex)
        .with_server_assignor(settings.server_assignor.as_deref().map(str_bytes))
        .with_topic_partitions(Some(owned))
}

/// Heartbeats until the membership ends for good (a fatal error, or `poll` not called for
/// `max_poll_interval`, after which the member leaves and its partitions count as lost; the
/// next `poll` starts a new task, which joins again).
pub async fn heartbeat_loop(
    coordinator: Arc<Coordinator>,
    shared: Shared,
    settings: Settings,
    signals: Arc<Signals>,
) {
    let group = coordinator.group_id().to_owned();
    let backoff = coordinator.client().config().retry_backoff;
    let mut ids = TopicIds::default();
    if let Err(error) = ids.learn(&coordinator).await {
        tracing::debug!(%group, %error, "metadata for topic ids failed");
    }
    loop {
        if shared.lock().last_poll.elapsed() > settings.max_poll_interval {
            tracing::warn!(%group, max_poll_interval = ?settings.max_poll_interval,
                "poll not called within max_poll_interval: leaving the group");
            let (member_id, epoch) = {
                let mut state = shared.lock();
                let epoch = state.generation;
                state.generation = NO_GENERATION;
                state.lost = true;
                state.owned.clear();
                state.target = None;
                (state.member_id.clone(), epoch)
            };
            if epoch != NO_GENERATION {
                leave(
                    &coordinator,
                    &member_id,
                    settings.group_instance_id.as_deref(),
                )
                .await;
            }
            signals.answered.notify_one();
            return;
        }
        let sent = request(&group, &shared, &settings, &ids);
        let deadline = Instant::now() + coordinator.client().config().api_timeout;
        let result = coordinator
            .send(
                |_| sent.clone(),
                HEARTBEAT_VERSIONS,
                None,
                deadline,
                |r| r.error_code,
            )
            .await;
        let mut wait = shared
            .lock()
            .heartbeat_interval
            .unwrap_or(settings.heartbeat_interval);
        match result {
            Err(error) => {
                // Coordinator moves were retried already; try again at the next interval.
                tracing::warn!(%group, %error, "consumer group heartbeat failed");
            }
            Ok(response) if response.error_code == 0 => {
                let assignment = ids.resolve(&coordinator, &response).await;
                let mut state = shared.lock();
                // A leave (close) may have happened meanwhile; the answer is stale then.
                if state.member_id != sent.member_id.as_str() {
                    return;
                }
                if state.generation != response.member_epoch {
                    tracing::debug!(%group, epoch = response.member_epoch, "member epoch");
                }
                state.generation = response.member_epoch;
                if response.heartbeat_interval_ms > 0 {
                    let interval = Duration::from_millis(
                        u64::try_from(response.heartbeat_interval_ms).unwrap_or(0),
                    );
                    state.heartbeat_interval = Some(interval);
                    wait = interval;
                }
                if let Some(tps) = assignment {
                    tracing::info!(%group, epoch = response.member_epoch,
                        partitions = tps.len(), "assignment from the coordinator");
                    state.target = Some(tps);
                }
                drop(state);
                signals.answered.notify_one();
            }
            Ok(response) => {
                let message = response.error_message.as_ref().map(ToString::to_string);
                let error = Error::kafka(response.error_code, message);
                let code = ResponseError::try_from_code(response.error_code);
                match code {
                    Some(ResponseError::FencedMemberEpoch | ResponseError::UnknownMemberId) => {
                        tracing::info!(%group, %error, "fenced: partitions lost, joining again");
                        {
                            let mut state = shared.lock();
                            state.generation = NO_GENERATION;
                            state.lost = true;
                            state.owned.clear();
                            state.target = None;
                        }
                        signals.answered.notify_one();
                        // As Java: rejoin once `on_partitions_lost` ran and the partitions are
                        // released (the next `poll`), or when `poll` is late (checked above).
                        while shared.lock().lost
                            && shared.lock().last_poll.elapsed() <= settings.max_poll_interval
                        {
                            tokio::select! {
                                () = signals.send_now.notified() => {}
                                () = tokio::time::sleep(backoff) => {}
                            }
                        }
                        continue;
                    }
                    Some(code) if code.is_retriable() => {
                        tracing::info!(%group, %error, "consumer group heartbeat: retrying");
                    }
                    _ => {
                        // UNRELEASED_INSTANCE_ID, UNSUPPORTED_ASSIGNOR, GROUP_MAX_SIZE_REACHED,
                        // INVALID_REQUEST, authorization errors...: nothing a retry fixes.
                        tracing::error!(%group, %error, "consumer group heartbeat: fatal");
                        {
                            let mut state = shared.lock();
                            state.lost = state.generation != NO_GENERATION;
                            state.generation = NO_GENERATION;
                            state.fatal = Some(error);
                        }
                        signals.answered.notify_one();
                        return;
                    }
                }
            }
        }
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = signals.send_now.notified() => {}
        }
    }
}

/// Leaves the group: a heartbeat with epoch -1, or -2 for a static member (which keeps its
/// assignment for its return within the session timeout). Best effort, as LeaveGroup.
pub async fn leave(coordinator: &Coordinator, member_id: &str, group_instance_id: Option<&str>) {
    let epoch = if group_instance_id.is_some() {
        LEAVE_EPOCH_STATIC
    } else {
        LEAVE_EPOCH
    };
    let request = ConsumerGroupHeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(coordinator.group_id())))
        .with_member_id(str_bytes(member_id))
        .with_member_epoch(epoch)
        .with_instance_id(group_instance_id.map(str_bytes));
    let deadline = Instant::now() + coordinator.client().config().request_timeout;
    let result = coordinator
        .send(
            |_| request.clone(),
            HEARTBEAT_VERSIONS,
            None,
            deadline,
            |r| r.error_code,
        )
        .await
        .and_then(|r| {
            Error::check(r.error_code, || {
                Some("ConsumerGroupHeartbeat (leave)".to_owned())
            })
        });
    match result {
        Ok(()) => {
            tracing::debug!(group = %coordinator.group_id(), member_id, epoch, "left the group")
        }
        Err(error) => {
            tracing::info!(group = %coordinator.group_id(), member_id, %error, "leaving the group failed");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tps(list: &[(&str, i32)]) -> Vec<TopicPartition> {
        list.iter()
            .map(|(t, p)| TopicPartition::new(*t, *p))
            .collect()
    }

    #[test]
    fn reconcile_revokes_what_went_and_adds_what_came() {
        let owned = tps(&[("a", 0), ("a", 1), ("b", 0)]);
        let target = tps(&[("b", 0), ("a", 2), ("a", 1)]);
        let (revoked, added) = reconcile(&owned, &target);
        assert_eq!(revoked, tps(&[("a", 0)]));
        assert_eq!(added, tps(&[("a", 2)]));
        assert_eq!(reconcile(&owned, &owned), (vec![], vec![]));
        assert_eq!(reconcile(&[], &target).1.len(), 3);
        assert_eq!(reconcile(&owned, &[]).0, owned);
    }

    #[test]
    fn join_sends_epoch_zero_and_no_partitions_then_owned_by_id() {
        let shared = Shared::default();
        shared.lock().member_id = "m".to_owned();
        shared.lock().topics = vec!["a".to_owned()];
        let settings = Settings {
            group_instance_id: None,
            rebalance_timeout: Duration::from_secs(300),
            server_assignor: Some("uniform".to_owned()),
            rack_id: None,
            max_poll_interval: Duration::from_secs(300),
            heartbeat_interval: Duration::from_secs(3),
        };
        let mut ids = TopicIds::default();
        let id = uuid::Uuid::new_v4();
        ids.ids.insert("a".to_owned(), id);
        ids.names.insert(id, "a".to_owned());
        let join = request("g", &shared, &settings, &ids);
        assert_eq!(join.member_epoch, 0);
        assert_eq!(join.rebalance_timeout_ms, 300_000);
        assert_eq!(join.topic_partitions, Some(vec![]));
        assert_eq!(join.subscribed_topic_names.as_ref().map(Vec::len), Some(1));
        assert!(join.subscribed_topic_regex.is_none());
        {
            let mut state = shared.lock();
            state.generation = 3;
            state.owned = tps(&[("a", 2), ("a", 0)]);
        }
        let beat = request("g", &shared, &settings, &ids);
        assert_eq!(beat.member_epoch, 3);
        let owned = beat.topic_partitions.unwrap_or_default();
        assert_eq!(owned.len(), 1);
        assert_eq!(
            (owned[0].topic_id, owned[0].partitions.clone()),
            (id, vec![0, 2])
        );
    }
}
