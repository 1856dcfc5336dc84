//! The classic group membership APIs: JoinGroup, SyncGroup, Heartbeat, LeaveGroup, and the
//! admin side: ListGroups, DescribeGroups, DeleteGroups. Each translates the wire request for
//! the group coordinator ([`crate::group`]) and its answer back.

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest, DescribeGroupsResponse,
    GroupId, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, ListGroupsRequest, ListGroupsResponse, SyncGroupRequest,
    SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::context::BrokerContext;
use crate::coordinator::CoordinatorError;
use crate::group::classic::{JoinRequest, SyncRequest};
use crate::group::coordinator::new_member_id;
use crate::group::{check_group_id, GroupProblem, STRING_MAX_BYTES};
use crate::kafka::errors::{code, Failure};
use crate::kafka::request::RequestContext;
use crate::kafka::wire::{str_bytes, AUTHORIZED_OPERATIONS_UNSET};

/// The wire code of a group refusal (0 for none).
pub fn group_code(problem: Option<GroupProblem>) -> i16 {
    problem.map_or(0, |p| code(Failure::Group(p)))
}

/// The wire code of a coordinator failure.
pub fn coordinator_code(error: &CoordinatorError) -> i16 {
    code(Failure::Coordinator(error))
}

/// How Kafka shows a client's address (`InetAddress.toString` with no host name).
pub fn client_host(req: &RequestContext) -> String {
    format!("/{}", req.connection.peer.ip())
}

fn text(s: &StrBytes) -> String {
    s.to_string()
}

// -------------------------------------------------------------------- JoinGroup

pub async fn join(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: JoinGroupRequest,
) -> JoinGroupResponse {
    let version = req.api_version;
    let failed = |error_code: i16, member_id: StrBytes| {
        let response = JoinGroupResponse::default()
            .with_error_code(error_code)
            .with_generation_id(-1)
            .with_member_id(member_id);
        // Before v7 the protocol name is not nullable.
        if version < 7 {
            response.with_protocol_name(Some(StrBytes::default()))
        } else {
            response
        }
    };
    let group_id = text(&request.group_id);
    if let Err(problem) = check_group_id(&group_id) {
        return failed(group_code(Some(problem)), request.member_id);
    }
    // Stored strings must fit the group record's schema.
    let too_long = |s: &StrBytes| s.len() > STRING_MAX_BYTES;
    if request.group_instance_id.as_ref().is_some_and(too_long)
        || too_long(&request.protocol_type)
        || request.protocols.iter().any(|p| too_long(&p.name))
    {
        return failed(
            group_code(Some(GroupProblem::InconsistentGroupProtocol)),
            request.member_id,
        );
    }
    let client_id = req.client_id.as_deref().unwrap_or("").to_owned();
    let instance = request.group_instance_id.as_ref().map(text);
    let join = JoinRequest {
        member_id: text(&request.member_id),
        new_member_id: new_member_id(&client_id, instance.as_deref()),
        group_instance_id: instance,
        client_id,
        client_host: client_host(req),
        session_timeout_ms: request.session_timeout_ms,
        // v0 has no rebalance timeout: the session timeout served as both.
        rebalance_timeout_ms: if version == 0 {
            request.session_timeout_ms
        } else {
            request.rebalance_timeout_ms
        },
        protocol_type: text(&request.protocol_type),
        protocols: request
            .protocols
            .iter()
            .map(|p| (text(&p.name), p.metadata.clone()))
            .collect(),
        require_known_member_id: version >= 4,
    };
    if let Some(reason) = &request.reason {
        tracing::debug!(group = %group_id, %reason, "join");
    }
    let answer = match ctx.groups.join(ctx, &group_id, join).await {
        Ok(answer) => answer,
        Err(error) => return failed(coordinator_code(&error), request.member_id),
    };
    let protocol_name = match (answer.protocol_name, version) {
        (None, 0..=6) => Some(StrBytes::default()),
        (name, _) => name.map(str_bytes),
    };
    let mut response = JoinGroupResponse::default()
        .with_error_code(group_code(answer.error))
        .with_generation_id(answer.generation_id)
        .with_protocol_name(protocol_name)
        .with_leader(str_bytes(answer.leader))
        .with_member_id(str_bytes(answer.member_id))
        .with_members(
            answer
                .members
                .into_iter()
                .map(|m| {
                    JoinGroupResponseMember::default()
                        .with_member_id(str_bytes(m.member_id))
                        .with_group_instance_id(m.group_instance_id.map(str_bytes))
                        .with_metadata(m.metadata)
                })
                .collect(),
        );
    if version >= 7 {
        response = response.with_protocol_type(answer.protocol_type.map(str_bytes));
    }
    if version >= 9 {
        response = response.with_skip_assignment(answer.skip_assignment);
    }
    response
}

// -------------------------------------------------------------------- SyncGroup

pub async fn sync(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: SyncGroupRequest,
) -> SyncGroupResponse {
    let version = req.api_version;
    let group_id = text(&request.group_id);
    if let Err(problem) = check_group_id(&group_id) {
        return SyncGroupResponse::default().with_error_code(group_code(Some(problem)));
    }
    let sync = SyncRequest {
        member_id: text(&request.member_id),
        group_instance_id: request.group_instance_id.as_ref().map(text),
        generation_id: request.generation_id,
        protocol_type: request.protocol_type.as_ref().map(text),
        protocol_name: request.protocol_name.as_ref().map(text),
        assignments: request
            .assignments
            .iter()
            .map(|a| (text(&a.member_id), a.assignment.clone()))
            .collect(),
    };
    let answer = match ctx.groups.sync(ctx, &group_id, sync).await {
        Ok(answer) => answer,
        Err(error) => {
            return SyncGroupResponse::default().with_error_code(coordinator_code(&error))
        }
    };
    let mut response = SyncGroupResponse::default()
        .with_error_code(group_code(answer.error))
        .with_assignment(answer.assignment);
    if version >= 5 {
        response = response
            .with_protocol_type(answer.protocol_type.map(str_bytes))
            .with_protocol_name(answer.protocol_name.map(str_bytes));
    }
    response
}

// -------------------------------------------------------------------- Heartbeat

pub async fn heartbeat(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: HeartbeatRequest,
) -> HeartbeatResponse {
    let group_id = text(&request.group_id);
    let error_code = if let Err(problem) = check_group_id(&group_id) {
        group_code(Some(problem))
    } else {
        let outcome = ctx
            .groups
            .heartbeat(
                &group_id,
                text(&request.member_id),
                request.group_instance_id.as_ref().map(text),
                request.generation_id,
            )
            .await;
        match outcome {
            Ok(result) => group_code(result.err()),
            Err(error) => coordinator_code(&error),
        }
    };
    HeartbeatResponse::default().with_error_code(error_code)
}

// -------------------------------------------------------------------- LeaveGroup

pub async fn leave(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let version = req.api_version;
    let group_id = text(&request.group_id);
    // v0-2 name one member; v3+ a batch (KIP-345), each with its own answer.
    let members: Vec<(String, Option<String>)> = if version <= 2 {
        vec![(text(&request.member_id), None)]
    } else {
        request
            .members
            .iter()
            .map(|m| (text(&m.member_id), m.group_instance_id.as_ref().map(text)))
            .collect()
    };
    if let Err(problem) = check_group_id(&group_id) {
        return LeaveGroupResponse::default().with_error_code(group_code(Some(problem)));
    }
    let outcome = ctx.groups.leave(ctx, &group_id, members.clone()).await;
    let (top, each): (i16, Vec<i16>) = match outcome {
        Err(error) => (coordinator_code(&error), Vec::new()),
        Ok(Err(problem)) => (group_code(Some(problem)), Vec::new()),
        Ok(Ok(results)) => (
            0,
            results.into_iter().map(|r| group_code(r.err())).collect(),
        ),
    };
    if version <= 2 {
        let error_code = if top != 0 {
            top
        } else {
            each.first().copied().unwrap_or(0)
        };
        return LeaveGroupResponse::default().with_error_code(error_code);
    }
    LeaveGroupResponse::default()
        .with_error_code(top)
        .with_members(
            members
                .into_iter()
                .zip(each.into_iter().chain(std::iter::repeat(top)))
                .map(|((member_id, instance), error_code)| {
                    MemberResponse::default()
                        .with_member_id(str_bytes(member_id))
                        .with_group_instance_id(instance.map(str_bytes))
                        .with_error_code(error_code)
                })
                .collect(),
        )
}

// -------------------------------------------------------------------- ListGroups

pub async fn list(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: ListGroupsRequest,
) -> ListGroupsResponse {
    let version = req.api_version;
    let listed = match ctx.groups.list().await {
        Ok(listed) => listed,
        Err(error) => {
            return ListGroupsResponse::default().with_error_code(coordinator_code(&error))
        }
    };
    // Filters compare case-insensitively, as Kafka's do (KIP-518, KIP-848).
    let states: Vec<String> = request
        .states_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let types: Vec<String> = request
        .types_filter
        .iter()
        .map(|s| s.to_lowercase())
        .collect();
    let groups = listed
        .into_iter()
        .filter(|g| states.is_empty() || states.contains(&g.state.to_lowercase()))
        .filter(|g| types.is_empty() || types.iter().any(|t| t == g.group_type))
        .map(|g| {
            let mut listed = ListedGroup::default()
                .with_group_id(GroupId(str_bytes(g.group_id)))
                .with_protocol_type(str_bytes(g.protocol_type));
            if version >= 4 {
                listed = listed.with_group_state(StrBytes::from_static_str(g.state));
            }
            if version >= 5 {
                listed = listed.with_group_type(StrBytes::from_static_str(g.group_type));
            }
            listed
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

// -------------------------------------------------------------------- DescribeGroups

pub async fn describe(
    ctx: &BrokerContext,
    req: &RequestContext,
    request: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let version = req.api_version;
    let mut groups = Vec::with_capacity(request.groups.len());
    for group_id in request.groups {
        let id = text(&group_id);
        let base = DescribedGroup::default()
            .with_group_id(group_id)
            .with_authorized_operations(AUTHORIZED_OPERATIONS_UNSET);
        if let Err(problem) = check_group_id(&id) {
            groups.push(
                base.with_error_code(group_code(Some(problem)))
                    .with_group_state(StrBytes::from_static_str("Dead")),
            );
            continue;
        }
        let described = match ctx.groups.describe(&id).await {
            Ok(described) => described,
            Err(error) => {
                groups.push(base.with_error_code(coordinator_code(&error)));
                continue;
            }
        };
        // v6+ (KIP-1043) tells an unknown group apart; before, it is just Dead.
        let error_code = if !described.found && version >= 6 {
            group_code(Some(GroupProblem::GroupIdNotFound))
        } else {
            0
        };
        groups.push(
            base.with_error_code(error_code)
                .with_group_state(StrBytes::from_static_str(described.state))
                .with_protocol_type(str_bytes(described.protocol_type))
                .with_protocol_data(str_bytes(described.protocol_data))
                .with_members(
                    described
                        .members
                        .into_iter()
                        .map(|m| {
                            DescribedGroupMember::default()
                                .with_member_id(str_bytes(m.member_id))
                                .with_group_instance_id(m.group_instance_id.map(str_bytes))
                                .with_client_id(str_bytes(m.client_id))
                                .with_client_host(str_bytes(m.client_host))
                                .with_member_metadata(m.metadata)
                                .with_member_assignment(m.assignment)
                        })
                        .collect(),
                ),
        );
    }
    DescribeGroupsResponse::default().with_groups(groups)
}

// -------------------------------------------------------------------- DeleteGroups

pub async fn delete(
    ctx: &BrokerContext,
    _req: &RequestContext,
    request: DeleteGroupsRequest,
) -> DeleteGroupsResponse {
    let mut results = Vec::with_capacity(request.groups_names.len());
    let mut asked = Vec::new();
    for group_id in &request.groups_names {
        if let Err(problem) = check_group_id(group_id) {
            results.push(
                DeletableGroupResult::default()
                    .with_group_id(group_id.clone())
                    .with_error_code(group_code(Some(problem))),
            );
        } else {
            asked.push(text(group_id));
        }
    }
    for (group_id, outcome) in ctx.groups.delete_groups(asked).await {
        let error_code = match outcome {
            Ok(problem) => group_code(problem),
            Err(error) => coordinator_code(&error),
        };
        results.push(
            DeletableGroupResult::default()
                .with_group_id(GroupId(str_bytes(group_id)))
                .with_error_code(error_code),
        );
    }
    DeleteGroupsResponse::default().with_results(results)
}
