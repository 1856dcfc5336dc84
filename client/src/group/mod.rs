//! Consumer groups (Kafka's classic protocol, and KIP-848's consumer protocol) on the client side: [`GroupConsumer`] and the
//! pieces it is made of, which the admin client shares.
//!
//! Modules:
//! - [`consumer`]: [`GroupConsumer`]: subscriptions, `poll` driving membership, commits, close.
//! - [`membership`]: JoinGroup/SyncGroup (with the leader's assignment), heartbeats, LeaveGroup.
//! - [`kip848`]: KIP-848's consumer protocol (`group_protocol = Consumer`): ConsumerGroupHeartbeat
//!   joins, heartbeats and brings the coordinator's assignment; `poll` reconciles to it.
//! - [`coordinator`]: finding the group coordinator and retrying through its moves.
//! - [`assignor`]: `range`, `roundrobin` and `cooperative-sticky`, pure.
//! - [`protocol`]: the subscription and assignment formats inside JoinGroup and SyncGroup.
//! - [`offsets`]: OffsetCommit and OffsetFetch.
//! - [`listener`]: the rebalance callbacks.

pub mod assignor;
pub mod consumer;
pub(crate) mod coordinator;
pub mod kip848;
pub mod listener;
pub(crate) mod membership;
pub mod offsets;
pub mod protocol;

pub use assignor::{Assignor, RebalanceProtocol};
pub use consumer::{CommitHandle, GroupConfig, GroupConsumer};
pub use kip848::GroupProtocol;
pub use listener::{NoopListener, RebalanceContext, RebalanceListener};
pub use offsets::OffsetAndMetadata;
