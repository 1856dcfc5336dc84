//! [`BrokerLifecycle`]: keeps one broker registered with the controller. It registers with a
//! fresh incarnation id, heartbeats every interval, and registers again (with a new incarnation)
//! when the controller says its registration is gone, e.g. after it was fenced.
//!
//! Every registration names the broker epoch under which the broker's data was last known
//! intact (KIP-966): the clean-shutdown marker's at start, then the epoch this same process
//! held. Retries of one registration keep its incarnation id, so a registration applied whose
//! answer was lost is answered again rather than replaced by one that looks unclean.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::command::{
    BrokerId, Endpoint, IncarnationId, MetadataCommand, MetadataResponse, RegisterBroker,
};
use crate::controller::{Heartbeat, HeartbeatReply};
use crate::node::MetadataNode;

/// What a broker announces about itself.
#[derive(Debug, Clone)]
pub struct BrokerInfo {
    pub broker_id: BrokerId,
    pub endpoints: Vec<Endpoint>,
    pub rack: Option<String>,
    /// The broker epoch of the previous run's clean shutdown; `None` after an unclean one.
    pub previous_broker_epoch: Option<i64>,
}

/// Where this broker's registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RegistrationState {
    /// Not registered yet, or registering again after being fenced.
    Unregistered,
    /// Registered with this incarnation and epoch, and heartbeating.
    Registered {
        incarnation_id: IncarnationId,
        broker_epoch: i64,
    },
}

/// The running registration-and-heartbeat task of one broker. Dropping it stops the task.
#[derive(Debug)]
pub struct BrokerLifecycle {
    state: watch::Receiver<RegistrationState>,
    task: JoinHandle<()>,
}

impl BrokerLifecycle {
    /// Starts registering `info` through `node` and heartbeating every `interval`. A broker
    /// whose heartbeats have all failed for `session_timeout` assumes it was fenced meanwhile and
    /// registers again.
    pub fn spawn(
        node: MetadataNode,
        info: BrokerInfo,
        interval: Duration,
        session_timeout: Duration,
    ) -> BrokerLifecycle {
        let (state_tx, state) = watch::channel(RegistrationState::Unregistered);
        let task = tokio::spawn(run(
            node,
            Arc::new(info),
            interval,
            session_timeout,
            state_tx,
        ));
        BrokerLifecycle { state, task }
    }

    /// The current registration state; a receiver to watch it change.
    pub fn state(&self) -> watch::Receiver<RegistrationState> {
        self.state.clone()
    }

    /// Stops heartbeating; the controller fences the broker once its session lapses.
    pub fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for BrokerLifecycle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| {
            i64::try_from(elapsed.as_millis()).unwrap_or(i64::MAX)
        })
}

async fn run(
    node: MetadataNode,
    info: Arc<BrokerInfo>,
    interval: Duration,
    session_timeout: Duration,
    state: watch::Sender<RegistrationState>,
) {
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut last_alive = Instant::now();
    let mut intact_epoch = info.previous_broker_epoch;
    let mut incarnation_id = new_incarnation();
    loop {
        ticker.tick().await;
        let current = *state.borrow();
        let next = match current {
            RegistrationState::Unregistered => {
                let next = register(&node, &info, incarnation_id, intact_epoch).await;
                if let RegistrationState::Registered { broker_epoch, .. } = next {
                    // This process keeps its logs: its next registration is a clean one.
                    intact_epoch = Some(broker_epoch);
                }
                last_alive = Instant::now();
                next
            }
            RegistrationState::Registered {
                incarnation_id,
                broker_epoch,
            } => {
                let heartbeat = Heartbeat {
                    broker_id: info.broker_id,
                    incarnation_id,
                    broker_epoch,
                };
                match node.heartbeat(heartbeat).await {
                    Ok(HeartbeatReply::Alive) => {
                        last_alive = Instant::now();
                        current
                    }
                    Ok(HeartbeatReply::Reregister) => {
                        tracing::warn!(
                            broker_id = info.broker_id,
                            "registration lost, registering again"
                        );
                        RegistrationState::Unregistered
                    }
                    // Unanswered for a whole session: the controller has fenced us by now (or
                    // will, having never heard us), so registering again is the way back.
                    Ok(HeartbeatReply::NotController { .. }) | Err(_)
                        if last_alive.elapsed() >= session_timeout =>
                    {
                        tracing::warn!(
                            broker_id = info.broker_id,
                            "no heartbeat answered for a session timeout, registering again"
                        );
                        RegistrationState::Unregistered
                    }
                    // No controller or a transport failure: keep the registration and try again
                    // at the next tick; the session outlives several missed heartbeats.
                    Ok(HeartbeatReply::NotController { .. }) | Err(_) => current,
                }
            }
        };
        if next == RegistrationState::Unregistered && current != next {
            // A registration that was lost (fenced, or forgotten by a new controller) is
            // replaced, and the image answers a known incarnation with its old, fenced state.
            incarnation_id = new_incarnation();
        }
        state.send_if_modified(|old| {
            let changed = *old != next;
            *old = next;
            changed
        });
    }
}

fn new_incarnation() -> IncarnationId {
    IncarnationId(*uuid::Uuid::new_v4().as_bytes())
}

async fn register(
    node: &MetadataNode,
    info: &BrokerInfo,
    incarnation_id: IncarnationId,
    previous_broker_epoch: Option<i64>,
) -> RegistrationState {
    let command = MetadataCommand::RegisterBroker(RegisterBroker {
        broker_id: info.broker_id,
        incarnation_id,
        endpoints: info.endpoints.clone(),
        rack: info.rack.clone(),
        now_ms: now_ms(),
        previous_broker_epoch,
    });
    match node.write(command).await {
        Ok(MetadataResponse::BrokerRegistered { broker_epoch }) => {
            tracing::info!(
                broker_id = info.broker_id,
                broker_epoch,
                "broker registered"
            );
            RegistrationState::Registered {
                incarnation_id,
                broker_epoch,
            }
        }
        Ok(other) => {
            tracing::warn!(broker_id = info.broker_id, ?other, "registration refused");
            RegistrationState::Unregistered
        }
        Err(error) => {
            tracing::warn!(broker_id = info.broker_id, %error, "registration failed");
            RegistrationState::Unregistered
        }
    }
}
