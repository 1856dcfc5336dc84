//! Cluster identity on the raft transport: the [`ClusterId`] every node of a cluster shares, the
//! `Identity` each request carries (sender's cluster and node, intended target), and the checks
//! a receiver makes before anything reaches openraft or the controller.
//!
//! Why: brokers of two clusters can reach each other's listeners when their addresses overlap
//! (a new cluster started on the ports of one still stopping). openraft trusts every vote and
//! log entry it is given, so a vote or an AppendEntries from another cluster must be refused at
//! the door; Kafka's KRaft answers such requests with `INCONSISTENT_CLUSTER_ID`.

use std::collections::HashMap;
use std::fmt;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use openraft::{BasicNode, Membership, Vote};
use streambus_proto::raft::v1 as pb;
use tonic::Status;

use crate::error::{RaftError, Result};
use crate::types::NodeId;

/// The longest cluster id accepted. Kafka's are 22 characters; operators may choose their own.
pub const CLUSTER_ID_LEN_MAX: usize = 64;
/// A refusal seen again within this time is counted, not logged: a peer of another cluster
/// retries every few hundred milliseconds.
const REFUSAL_LOG_INTERVAL: Duration = Duration::from_secs(10);
/// Distinct refusals remembered for rate limiting; the table starts over when full.
const REFUSAL_KEYS_MAX: usize = 256;

/// The id of one cluster, stored in every data directory's `meta.properties` and carried by
/// every raft and controller request. Letters, digits, `-` and `_` (Kafka's base64url `Uuid`
/// text), at most [`CLUSTER_ID_LEN_MAX`] characters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterId(String);

impl ClusterId {
    /// Checks `text` as a cluster id.
    pub fn parse(text: &str) -> Result<ClusterId> {
        let invalid = |reason: &'static str| RaftError::InvalidClusterId {
            value: text.to_owned(),
            reason,
        };
        if text.is_empty() {
            return Err(invalid("it is empty"));
        }
        if text.len() > CLUSTER_ID_LEN_MAX {
            return Err(invalid("it is longer than 64 characters"));
        }
        if !text
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
        {
            return Err(invalid("only letters, digits, '-' and '_' are allowed"));
        }
        Ok(ClusterId(text.to_owned()))
    }

    /// A new random id in Kafka's format (`kafka-storage random-uuid`): a version-4 UUID as 22
    /// characters of unpadded base64url, never starting with `-`, as Kafka's `Uuid.randomUuid`
    /// avoids it: command lines would take such an id for an option.
    pub fn random() -> ClusterId {
        // A leading '-' has a 1 in 64 chance, so this ends at once in practice.
        loop {
            let id = base64url(uuid::Uuid::new_v4().as_bytes());
            if !id.starts_with('-') {
                return ClusterId(id);
            }
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClusterId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// Unpadded base64url (RFC 4648 §5), as Java's `Base64.getUrlEncoder().withoutPadding()`.
fn base64url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

/// This node as its peers must see it: the identity it sends and the one it accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NodeIdentity {
    pub cluster_id: ClusterId,
    pub node_id: NodeId,
}

impl NodeIdentity {
    /// The identity of a request from this node to `target`.
    pub(crate) fn to(&self, target: NodeId) -> pb::Identity {
        pb::Identity {
            cluster_id: self.cluster_id.as_str().to_owned(),
            sender_node_id: self.node_id,
            target_node_id: target,
        }
    }

    /// The checks a request's identity passes alone: it names this cluster and this node.
    /// Returns the sender's node id.
    pub(crate) fn admit(
        &self,
        identity: Option<&pb::Identity>,
    ) -> std::result::Result<NodeId, IdentityRefusal> {
        let Some(identity) = identity else {
            return Err(IdentityRefusal::Missing);
        };
        if identity.cluster_id != self.cluster_id.as_str() {
            return Err(IdentityRefusal::InconsistentClusterId {
                ours: self.cluster_id.as_str().to_owned(),
                theirs: identity.cluster_id.clone(),
                sender: identity.sender_node_id,
            });
        }
        if identity.target_node_id != self.node_id {
            return Err(IdentityRefusal::WrongTarget {
                target: identity.target_node_id,
                this_node: self.node_id,
                sender: identity.sender_node_id,
            });
        }
        if identity.sender_node_id == self.node_id {
            // A node never sends itself a request; another process runs under this node's id.
            return Err(IdentityRefusal::FromItself { node: self.node_id });
        }
        Ok(identity.sender_node_id)
    }
}

/// Why a request was refused for its identity. [`IdentityRefusal::name`] is what the sender
/// sees first in the gRPC status message.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum IdentityRefusal {
    /// The request carries no identity (a peer of a build before identities).
    Missing,
    /// The sender belongs to another cluster.
    InconsistentClusterId {
        ours: String,
        theirs: String,
        sender: NodeId,
    },
    /// The sender meant another node: its address for `target` leads here.
    WrongTarget {
        target: NodeId,
        this_node: NodeId,
        sender: NodeId,
    },
    /// The sender is no member of this node's raft configuration (voters and learners).
    UnknownSender { sender: NodeId },
    /// The identity names one sender and the raft payload another.
    SenderMismatch { identity: NodeId, payload: NodeId },
    /// The sender claims this node's own id.
    FromItself { node: NodeId },
}

impl IdentityRefusal {
    /// A stable name, like Kafka's error names.
    pub fn name(&self) -> &'static str {
        match self {
            IdentityRefusal::Missing => "MISSING_IDENTITY",
            IdentityRefusal::InconsistentClusterId { .. } => "INCONSISTENT_CLUSTER_ID",
            IdentityRefusal::WrongTarget { .. } => "INCONSISTENT_TARGET_NODE",
            IdentityRefusal::UnknownSender { .. } => "UNKNOWN_SENDER_NODE",
            IdentityRefusal::SenderMismatch { .. } | IdentityRefusal::FromItself { .. } => {
                "INCONSISTENT_SENDER_NODE"
            }
        }
    }

    /// The gRPC status the sender receives: FAILED_PRECONDITION, message `NAME: details`.
    pub(crate) fn to_status(&self) -> Status {
        Status::failed_precondition(format!("{}: {self}", self.name()))
    }
}

impl fmt::Display for IdentityRefusal {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityRefusal::Missing => f.write_str("the request carries no cluster identity"),
            IdentityRefusal::InconsistentClusterId {
                ours,
                theirs,
                sender,
            } => write!(
                f,
                "node {sender} of cluster {theirs:?} reached a node of cluster {ours:?}"
            ),
            IdentityRefusal::WrongTarget {
                target,
                this_node,
                sender,
            } => write!(
                f,
                "node {sender} sent a request for node {target} to node {this_node}"
            ),
            IdentityRefusal::UnknownSender { sender } => {
                write!(f, "node {sender} is not in this node's raft configuration")
            }
            IdentityRefusal::SenderMismatch { identity, payload } => write!(
                f,
                "the identity names node {identity}, the raft request node {payload}"
            ),
            IdentityRefusal::FromItself { node } => write!(
                f,
                "a request to node {node} claims to come from node {node}: another process \
                 runs under this node's id"
            ),
        }
    }
}

/// The role a raft request claims for its sender, with the vote it carries.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Claim<'a> {
    /// A Vote request: the sender is a candidate.
    Candidate(&'a Vote<NodeId>),
    /// AppendEntries or InstallSnapshot: the sender says it leads.
    Leader(&'a Vote<NodeId>),
}

/// Checks that `sender` may send a request claiming `claim` to a node whose raft configuration
/// is `membership` (every voter and learner, joint configurations included) and whose own vote
/// is `local_vote`.
///
/// - A node with an empty configuration accepts any sender of its cluster: it is joining (a
///   learner learns the configuration from the leader's first AppendEntries) or has not
///   bootstrapped yet, so it has no log to protect and no other way to learn the leader.
/// - A candidate must be a member. Refusing a non-member's vote request costs nothing: a member
///   that knows the newer configuration can still win.
/// - A leader that is no member is accepted only for a term newer than this node's vote, or the
///   term whose leader this node already accepted. This node's configuration may be older than
///   the leader's (it was down while the leader joined), and the entry naming the leader is in
///   the log it has to receive from that leader: refusing it for good would stall this node.
pub(crate) fn check_sender(
    sender: NodeId,
    claim: Claim<'_>,
    membership: &Membership<NodeId, BasicNode>,
    local_vote: &Vote<NodeId>,
) -> std::result::Result<(), IdentityRefusal> {
    let vote = match claim {
        Claim::Candidate(vote) | Claim::Leader(vote) => vote,
    };
    if vote.leader_id().node_id != sender {
        return Err(IdentityRefusal::SenderMismatch {
            identity: sender,
            payload: vote.leader_id().node_id,
        });
    }
    if membership.nodes().next().is_none() || membership.get_node(&sender).is_some() {
        return Ok(());
    }
    if let Claim::Leader(vote) = claim {
        let newer_term = vote.leader_id().term > local_vote.leader_id().term;
        let accepted_leader =
            local_vote.is_committed() && vote.leader_id() == local_vote.leader_id();
        if newer_term || accepted_leader {
            return Ok(());
        }
    }
    Err(IdentityRefusal::UnknownSender { sender })
}

/// Rate limit for logging refusals: each distinct one is logged at most once per
/// [`REFUSAL_LOG_INTERVAL`], with the number held back since. Also used by the broker for
/// refused inter-broker Kafka requests.
#[derive(Debug, Default)]
pub struct RefusalLog {
    seen: Mutex<HashMap<String, (Instant, u64)>>,
}

impl RefusalLog {
    /// A request from `peer` was refused by this node.
    pub(crate) fn refused(&self, rpc: &'static str, refusal: &IdentityRefusal, peer: &str) {
        if let Some(held_back) = self.due(format!("in {rpc} {peer} {refusal}")) {
            tracing::warn!(
                rpc,
                refusal = refusal.name(),
                %peer,
                held_back,
                "refused a request from another cluster or node: {refusal}"
            );
        }
    }

    /// A request of this node to `peer` was refused there (`status` says why).
    pub(crate) fn refused_by_peer(&self, rpc: &'static str, peer: &str, status: &Status) {
        if let Some(held_back) = self.due(format!("out {rpc} {peer} {}", status.message())) {
            tracing::warn!(
                rpc,
                %peer,
                held_back,
                "a peer refused this node's request: {}",
                status.message()
            );
        }
    }

    /// `Some(held back count)` when the refusal `key` is due to be logged, `None` while it was
    /// logged less than [`REFUSAL_LOG_INTERVAL`] ago.
    pub fn due(&self, key: String) -> Option<u64> {
        let now = Instant::now();
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if seen.len() >= REFUSAL_KEYS_MAX && !seen.contains_key(&key) {
            seen.clear();
        }
        let entry = seen
            .entry(key)
            .or_insert((now - REFUSAL_LOG_INTERVAL * 2, 0));
        if now.duration_since(entry.0) < REFUSAL_LOG_INTERVAL {
            entry.1 += 1;
            return None;
        }
        let held_back = entry.1;
        *entry = (now, 0);
        Some(held_back)
    }
}

/// Whether a peer's answer is an identity refusal (see [`IdentityRefusal::to_status`]).
pub(crate) fn is_refusal(status: &Status) -> bool {
    status.code() == tonic::Code::FailedPrecondition
}

#[cfg(test)]
mod tests {
    use std::collections::{BTreeMap, BTreeSet};

    use super::*;

    fn identity(cluster: &str, sender: NodeId, target: NodeId) -> pb::Identity {
        pb::Identity {
            cluster_id: cluster.to_owned(),
            sender_node_id: sender,
            target_node_id: target,
        }
    }

    fn node_1() -> NodeIdentity {
        NodeIdentity {
            cluster_id: ClusterId::parse("cluster-a").unwrap(),
            node_id: 1,
        }
    }

    fn members(voters: &[NodeId], learners: &[NodeId]) -> Membership<NodeId, BasicNode> {
        let nodes: BTreeMap<NodeId, BasicNode> = voters
            .iter()
            .chain(learners)
            .map(|id| (*id, BasicNode::new(format!("n{id}:1"))))
            .collect();
        Membership::new(vec![voters.iter().copied().collect::<BTreeSet<_>>()], nodes)
    }

    #[test]
    fn random_cluster_ids_look_like_kafkas() {
        let id = ClusterId::random();
        assert_eq!(id.as_str().len(), 22, "{id}");
        // 1 in 64 would start with '-' if nothing prevented it.
        assert!((0..2_000).all(|_| !ClusterId::random().as_str().starts_with('-')));
        assert_eq!(ClusterId::parse(id.as_str()).unwrap(), id);
        assert_ne!(ClusterId::random(), id);
    }

    #[test]
    fn base64url_matches_the_rfc_alphabet_without_padding() {
        // RFC 4648 test vectors, padding dropped, and the two url-safe characters.
        assert_eq!(base64url(b""), "");
        assert_eq!(base64url(b"f"), "Zg");
        assert_eq!(base64url(b"fo"), "Zm8");
        assert_eq!(base64url(b"foobar"), "Zm9vYmFy");
        assert_eq!(base64url(&[0xfb, 0xff]), "-_8");
        assert_eq!(base64url(&[0; 16]), "AAAAAAAAAAAAAAAAAAAAAA");
    }

    #[test]
    fn cluster_ids_with_other_characters_or_lengths_are_refused() {
        for bad in ["", "a b", "a=b", "a:b", "ü", &"x".repeat(65)] {
            assert!(
                matches!(
                    ClusterId::parse(bad),
                    Err(RaftError::InvalidClusterId { .. })
                ),
                "{bad:?}"
            );
        }
        assert!(ClusterId::parse("MkU3OEVBNTcwNTJENDM2Qk").is_ok());
    }

    #[test]
    fn requests_of_another_cluster_or_for_another_node_are_refused() {
        let me = node_1();
        assert_eq!(me.admit(Some(&identity("cluster-a", 3, 1))), Ok(3));
        let refusal = me
            .admit(Some(&identity("cluster-b", 3, 1)))
            .expect_err("other cluster");
        assert_eq!(refusal.name(), "INCONSISTENT_CLUSTER_ID");
        assert!(refusal
            .to_status()
            .message()
            .starts_with("INCONSISTENT_CLUSTER_ID: node 3 of cluster \"cluster-b\""));
        let refusal = me
            .admit(Some(&identity("cluster-a", 3, 2)))
            .expect_err("meant node 2");
        assert_eq!(refusal.name(), "INCONSISTENT_TARGET_NODE");
        assert_eq!(
            me.admit(Some(&identity("cluster-a", 1, 1))),
            Err(IdentityRefusal::FromItself { node: 1 })
        );
        assert_eq!(me.admit(None), Err(IdentityRefusal::Missing));
    }

    #[test]
    fn candidates_must_be_members_once_a_configuration_exists() {
        let membership = members(&[1, 2, 3], &[4]);
        let local = Vote::new_committed(5, 2);
        for member in [2, 3, 4] {
            let vote = Vote::new(6, member);
            assert_eq!(
                check_sender(member, Claim::Candidate(&vote), &membership, &local),
                Ok(())
            );
        }
        let vote = Vote::new(6, 9);
        assert_eq!(
            check_sender(9, Claim::Candidate(&vote), &membership, &local),
            Err(IdentityRefusal::UnknownSender { sender: 9 })
        );
    }

    #[test]
    fn a_node_without_configuration_accepts_its_clusters_leader() {
        // A learner being added, or a voter before it bootstrapped.
        let empty = Membership::new(vec![], BTreeMap::new());
        let vote = Vote::new_committed(3, 7);
        assert_eq!(
            check_sender(7, Claim::Leader(&vote), &empty, &Vote::default()),
            Ok(())
        );
    }

    #[test]
    fn an_unknown_leader_is_refused_unless_it_leads_a_newer_term() {
        let membership = members(&[1, 2, 3], &[]);
        let local = Vote::new_committed(5, 2);
        let stale = Vote::new_committed(5, 9);
        assert_eq!(
            check_sender(9, Claim::Leader(&stale), &membership, &local),
            Err(IdentityRefusal::UnknownSender { sender: 9 })
        );
        let older = Vote::new_committed(4, 9);
        assert!(check_sender(9, Claim::Leader(&older), &membership, &local).is_err());
        // Elected under a configuration this node has not received yet.
        let newer = Vote::new_committed(6, 9);
        assert_eq!(
            check_sender(9, Claim::Leader(&newer), &membership, &local),
            Ok(())
        );
        // ... and followed for the rest of that term once accepted.
        let accepted = Vote::new_committed(6, 9);
        assert_eq!(
            check_sender(9, Claim::Leader(&newer), &membership, &accepted),
            Ok(())
        );
    }

    #[test]
    fn the_identity_and_the_raft_payload_must_name_the_same_sender() {
        let membership = members(&[1, 2, 3], &[]);
        let vote = Vote::new(6, 3);
        assert_eq!(
            check_sender(2, Claim::Candidate(&vote), &membership, &Vote::default()),
            Err(IdentityRefusal::SenderMismatch {
                identity: 2,
                payload: 3
            })
        );
    }

    #[test]
    fn repeated_refusals_are_logged_once_per_interval() {
        let log = RefusalLog::default();
        assert_eq!(log.due("a".to_owned()), Some(0));
        assert_eq!(log.due("a".to_owned()), None);
        assert_eq!(log.due("a".to_owned()), None);
        assert_eq!(log.due("b".to_owned()), Some(0));
    }
}
