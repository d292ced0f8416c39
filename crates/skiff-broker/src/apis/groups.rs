//! Consumer-group APIs: FindCoordinator, JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! OffsetCommit, OffsetFetch, ListGroups, DescribeGroups, DeleteGroups, OffsetDelete. A group's
//! coordinator is the leader of its `__consumer_offsets` partition.

use std::sync::Arc;
use std::time::Duration;

use kafka_protocol::error::ResponseError;
use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_delete_response::{
    OffsetDeleteResponsePartition, OffsetDeleteResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponseGroup, OffsetFetchResponsePartition, OffsetFetchResponsePartitions,
    OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use tracing::debug;

use super::{code, message, partition_exists, KafkaApis};
use crate::group::coordinator::{
    Effects, GroupCoordinator, JoinRequest, JoinResult, OffsetCommit, Reply, SyncResult,
};
use crate::group::storage::{partition_for, OFFSETS_TOPIC};
use crate::group::{Coordination, GroupService, Shard};
use crate::replica_manager::now_ms;

const KEY_TYPE_GROUP: i8 = 0;
/// Longest a JoinGroup or SyncGroup may be parked, whatever rebalance timeout a client asks for.
const MAX_REBALANCE_WAIT: Duration = Duration::from_secs(30 * 60);

fn s(text: &str) -> StrBytes {
    StrBytes::from_string(text.to_string())
}

fn opt(text: Option<&str>) -> Option<StrBytes> {
    text.map(s)
}

/// One committed offset as OffsetFetch reports it; offset -1 when nothing was committed.
struct Fetched {
    partition: i32,
    offset: i64,
    leader_epoch: i32,
    metadata: String,
}

/// A JoinGroup or SyncGroup answer: ready now, or parked until the coordinator completes it,
/// within the member's rebalance timeout (ms).
enum Answer<T> {
    Now(T),
    Later(tokio::sync::oneshot::Receiver<T>, i32),
}

/// Waits for a parked answer, a little longer than the rebalance timeout and never longer than
/// `MAX_REBALANCE_WAIT`; None if it never came.
async fn rebalance_wait<T>(
    rebalance_timeout_ms: i32,
    rx: tokio::sync::oneshot::Receiver<T>,
) -> Option<T> {
    let wait =
        Duration::from_millis(rebalance_timeout_ms.max(0) as u64 + 5_000).min(MAX_REBALANCE_WAIT);
    tokio::time::timeout(wait, rx).await.ok()?.ok()
}

/// Who sent a request, as the group APIs report it.
pub struct ClientInfo<'a> {
    pub client_id: &'a str,
    pub client_host: &'a str,
}

impl KafkaApis {
    /// The broker leading the `__consumer_offsets` partition of `group`: its coordinator.
    fn coordinator_for(&self, group: &str) -> Result<(i32, String, i32), (i16, String)> {
        let topics = self.topics();
        let unavailable = |text: String| (code(ResponseError::CoordinatorNotAvailable), text);
        let offsets = topics
            .get(OFFSETS_TOPIC)
            .ok_or_else(|| unavailable(format!("{OFFSETS_TOPIC} does not exist yet")))?;
        let index = partition_for(group, offsets.partitions);
        let image = topics.image();
        let leader = image
            .partition(offsets.id, index)
            .and_then(|p| p.leader)
            .ok_or_else(|| {
                unavailable(format!("{OFFSETS_TOPIC} partition {index} has no leader"))
            })?;
        let endpoint = image
            .broker(leader)
            .and_then(|b| b.endpoints.first().cloned())
            .ok_or_else(|| unavailable(format!("broker {leader} has no endpoint")))?;
        let (host, port) = endpoint
            .rsplit_once(':')
            .and_then(|(h, p)| {
                Some((
                    h.trim_matches(|c| c == '[' || c == ']').to_owned(),
                    p.parse().ok()?,
                ))
            })
            .ok_or_else(|| unavailable(format!("broker {leader} has endpoint {endpoint:?}")))?;
        Ok((leader, host, port))
    }

    /// Runs a change of `group` on its coordinator here, persisted before it is seen (the whole
    /// group is put back if the append fails); `park` parks the caller's own request, if it
    /// waits, before the change's deferred answers are delivered.
    fn change_group<R, T>(
        &self,
        group: &str,
        op: impl FnOnce(&mut GroupCoordinator) -> (R, Effects),
        park: impl FnOnce(&mut Coordination, R) -> T,
    ) -> Result<T, ResponseError> {
        let shard = self.group_coordinator(group)?;
        let mut state = shard.lock()?;
        let undo = state.coordinator.undo_group(group);
        let (result, completions) =
            self.groups
                .write(&shard, &mut state, &self.replicas, undo, op)?;
        let parked = park(&mut state, result);
        state.deliver(completions);
        Ok(parked)
    }

    /// This broker's coordinator of `group`, or the error that sends the client looking for it.
    fn group_coordinator(&self, group: &str) -> Result<std::sync::Arc<Shard>, ResponseError> {
        self.groups
            .coordinator_of(&self.cluster.image(), &self.replicas, group)
    }

    pub(super) async fn find_coordinator(
        &self,
        request: FindCoordinatorRequest,
        version: i16,
    ) -> FindCoordinatorResponse {
        let offsets_topic = if request.key_type == KEY_TYPE_GROUP {
            self.ensure_offsets_topic().await
        } else {
            Ok(())
        };
        let answer = |key_type: i8, key: &str| -> Result<(i32, String, i32), (i16, String)> {
            if let Err(failure) = &offsets_topic {
                Err((
                    code(ResponseError::CoordinatorNotAvailable),
                    failure.message.clone(),
                ))
            } else if key_type == KEY_TYPE_GROUP {
                self.coordinator_for(key)
            } else {
                Err((
                    code(ResponseError::CoordinatorNotAvailable),
                    "only consumer-group coordinators exist; transactions are not supported"
                        .to_owned(),
                ))
            }
        };
        if version >= 4 {
            let coordinators = request
                .coordinator_keys
                .iter()
                .map(|key| {
                    let found = Coordinator::default().with_key(key.clone());
                    match answer(request.key_type, key.as_str()) {
                        Ok((node_id, host, port)) => found
                            .with_node_id(BrokerId(node_id))
                            .with_host(s(&host))
                            .with_port(port),
                        Err((error_code, text)) => found
                            .with_node_id(BrokerId(-1))
                            .with_host(s(""))
                            .with_port(-1)
                            .with_error_code(error_code)
                            .with_error_message(message(text)),
                    }
                })
                .collect();
            return FindCoordinatorResponse::default().with_coordinators(coordinators);
        }
        match answer(request.key_type, request.key.as_str()) {
            Ok((node_id, host, port)) => FindCoordinatorResponse::default()
                .with_node_id(BrokerId(node_id))
                .with_host(s(&host))
                .with_port(port),
            Err((error_code, text)) => FindCoordinatorResponse::default()
                .with_error_code(error_code)
                .with_error_message(if version >= 1 { message(text) } else { None })
                .with_node_id(BrokerId(-1))
                .with_host(s(""))
                .with_port(-1),
        }
    }

    pub(super) async fn join_group(
        self: &Arc<Self>,
        request: JoinGroupRequest,
        version: i16,
        client: &ClientInfo<'_>,
    ) -> JoinGroupResponse {
        // v0 has no rebalance timeout: the session timeout serves as both.
        let rebalance_timeout_ms = if version >= 1 {
            request.rebalance_timeout_ms
        } else {
            request.session_timeout_ms
        };
        let join = JoinRequest {
            group_id: request.group_id.to_string(),
            member_id: request.member_id.to_string(),
            instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
            client_id: client.client_id.to_string(),
            client_host: client.client_host.to_string(),
            session_timeout_ms: request.session_timeout_ms,
            rebalance_timeout_ms,
            protocol_type: request.protocol_type.to_string(),
            protocols: request
                .protocols
                .iter()
                .map(|p| (p.name.to_string(), p.metadata.clone()))
                .collect(),
            require_known_member_id: version >= 4,
            supports_skip_assignment: version >= 9,
        };
        let answer = self
            .group_io(move |apis| {
                let group_id = join.group_id.clone();
                apis.change_group(
                    &group_id,
                    |c| c.join_group(join, &mut GroupService::member_ids(), now_ms()),
                    |state, reply| match reply {
                        Reply::Now(result) => Answer::Now(result),
                        Reply::Later { member_id } => Answer::Later(
                            state.wait_for_join(&group_id, &member_id),
                            rebalance_timeout_ms,
                        ),
                    },
                )
            })
            .await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
            .unwrap_or_else(|error| Answer::Now(JoinResult::error(error, &request.member_id)));
        let result = match answer {
            Answer::Now(result) => result,
            Answer::Later(rx, rebalance_timeout) => match rebalance_wait(rebalance_timeout, rx)
                .await
            {
                Some(result) => result,
                // Replaced by a newer JoinGroup of the same member, or never completed.
                None => JoinResult::error(ResponseError::RebalanceInProgress, &request.member_id),
            },
        };
        debug!(
            group = %request.group_id.as_str(),
            members = ?result.members,
            member = %result.member_id,
            generation = result.generation,
            error = result.error,
            leader = %result.leader,
            "JoinGroup answered"
        );
        JoinGroupResponse::default()
            .with_error_code(result.error)
            .with_generation_id(result.generation)
            .with_protocol_type(if version >= 7 {
                opt(result.protocol_type.as_deref())
            } else {
                None
            })
            .with_protocol_name(
                opt(result.protocol.as_deref()).or_else(|| (version < 7).then(|| s(""))),
            )
            .with_leader(s(&result.leader))
            .with_skip_assignment(version >= 9 && result.skip_assignment)
            .with_member_id(s(&result.member_id))
            .with_members(
                result
                    .members
                    .into_iter()
                    .map(|(id, instance, metadata)| {
                        JoinGroupResponseMember::default()
                            .with_member_id(s(&id))
                            .with_group_instance_id(if version >= 5 {
                                opt(instance.as_deref())
                            } else {
                                None
                            })
                            .with_metadata(metadata)
                    })
                    .collect(),
            )
    }

    pub(super) async fn sync_group(
        self: &Arc<Self>,
        request: SyncGroupRequest,
        version: i16,
    ) -> SyncGroupResponse {
        let group_id = request.group_id.to_string();
        let member_id = request.member_id.to_string();
        let generation = request.generation_id;
        let (answered_group, answered_member) = (group_id.clone(), member_id.clone());
        let attempt = move |apis: &KafkaApis| {
            apis.change_group(
                &group_id,
                |c| {
                    c.sync_group(
                        &group_id,
                        request.generation_id,
                        &member_id,
                        request.group_instance_id.as_deref(),
                        request.protocol_type.as_deref(),
                        request.protocol_name.as_deref(),
                        request
                            .assignments
                            .iter()
                            .map(|a| (a.member_id.to_string(), a.assignment.clone()))
                            .collect(),
                        now_ms(),
                    )
                },
                |state, reply| match reply {
                    Reply::Now(result) => Answer::Now(result),
                    Reply::Later { member_id } => {
                        // SyncGroup changes no member's rebalance timeout.
                        let rebalance_timeout = state
                            .coordinator
                            .group(&group_id)
                            .and_then(|g| g.members.get(&member_id))
                            .map_or(0, |m| m.rebalance_timeout_ms);
                        Answer::Later(
                            state.wait_for_sync(&group_id, &member_id),
                            rebalance_timeout,
                        )
                    }
                },
            )
        };
        // A failed append leaves the group as it was before this SyncGroup: the members sync or
        // rejoin again. While the coordinator loads, REBALANCE_IN_PROGRESS, as Kafka answers:
        // clients (the Java consumer among them) rejoin on it, but treat
        // COORDINATOR_LOAD_IN_PROGRESS from SyncGroup as fatal.
        let answer = self
            .group_io(attempt)
            .await
            .unwrap_or(Err(ResponseError::CoordinatorNotAvailable))
            .unwrap_or_else(|error| {
                Answer::Now(SyncResult::error(match error {
                    ResponseError::CoordinatorLoadInProgress => ResponseError::RebalanceInProgress,
                    other => other,
                }))
            });
        let result = match answer {
            Answer::Now(result) => result,
            Answer::Later(rx, rebalance_timeout) => {
                match rebalance_wait(rebalance_timeout, rx).await {
                    Some(result) => result,
                    None => SyncResult::error(ResponseError::RebalanceInProgress),
                }
            }
        };
        debug!(
            group = %answered_group,
            member = %answered_member,
            generation,
            error = result.error,
            assignment = ?result.assignment,
            "SyncGroup answered"
        );
        let response = SyncGroupResponse::default()
            .with_error_code(result.error)
            .with_assignment(result.assignment);
        if version >= 5 {
            response
                .with_protocol_type(opt(result.protocol_type.as_deref()))
                .with_protocol_name(opt(result.protocol.as_deref()))
        } else {
            response
        }
    }

    pub(super) fn heartbeat(&self, request: HeartbeatRequest) -> HeartbeatResponse {
        let attempt = || -> Result<i16, ResponseError> {
            let shard = self.group_coordinator(request.group_id.as_str())?;
            let mut state = shard.lock()?;
            Ok(state.coordinator.heartbeat(
                request.group_id.as_str(),
                request.generation_id,
                request.member_id.as_str(),
                request.group_instance_id.as_deref(),
                now_ms(),
            ))
        };
        // While the coordinator loads, a heartbeat is answered as accepted, as Kafka does: the
        // member's session starts afresh when the group is loaded.
        let error = attempt().unwrap_or_else(|error| match error {
            ResponseError::CoordinatorLoadInProgress => 0,
            other => code(other),
        });
        if error != 0 {
            debug!(group = %request.group_id.as_str(), member = %request.member_id.as_str(), error, "Heartbeat refused");
        }
        HeartbeatResponse::default().with_error_code(error)
    }

    pub(super) fn leave_group(
        &self,
        request: LeaveGroupRequest,
        version: i16,
    ) -> LeaveGroupResponse {
        let leaving: Vec<(String, Option<String>)> = if version >= 3 {
            request
                .members
                .iter()
                .map(|m| {
                    (
                        m.member_id.to_string(),
                        m.group_instance_id.as_ref().map(|i| i.to_string()),
                    )
                })
                .collect()
        } else {
            vec![(request.member_id.to_string(), None)]
        };
        let group_id = request.group_id.to_string();
        let outcome = self.change_group(
            &group_id,
            |c| c.leave_group(&group_id, &leaving, now_ms()),
            |_, outcome| outcome,
        );
        match outcome.unwrap_or_else(|error| Err(code(error))) {
            Err(error) => LeaveGroupResponse::default().with_error_code(error),
            Ok(codes) if version >= 3 => LeaveGroupResponse::default().with_members(
                leaving
                    .into_iter()
                    .zip(codes)
                    .map(|((member_id, instance_id), error)| {
                        MemberResponse::default()
                            .with_member_id(s(&member_id))
                            .with_group_instance_id(opt(instance_id.as_deref()))
                            .with_error_code(error)
                    })
                    .collect(),
            ),
            Ok(codes) => {
                LeaveGroupResponse::default().with_error_code(codes.first().copied().unwrap_or(0))
            }
        }
    }

    pub(super) fn offset_commit(&self, request: OffsetCommitRequest) -> OffsetCommitResponse {
        let group_id = request.group_id.to_string();
        let attempt = || -> Result<Vec<i16>, ResponseError> {
            let shard = self.group_coordinator(&group_id)?;
            let mut state = shard.lock()?;
            // Offsets may be committed for any partition of the cluster, wherever it is led.
            // Checked under the coordinator's lock, which the metadata publisher also takes to
            // forget a deleted topic's offsets: a commit racing the deletion is refused or
            // forgotten with the topic, never kept for a topic created again.
            let image = self.cluster.image();
            let mut offsets = Vec::new();
            let mut slots: Vec<Option<usize>> = Vec::new();
            for topic in &request.topics {
                for p in &topic.partitions {
                    if partition_exists(&image, topic.name.as_str(), p.partition_index) {
                        slots.push(Some(offsets.len()));
                        offsets.push((
                            topic.name.to_string(),
                            p.partition_index,
                            p.committed_offset,
                            p.committed_leader_epoch,
                            p.committed_metadata.as_ref().map(|m| m.to_string()),
                        ));
                    } else {
                        slots.push(None);
                    }
                }
            }
            let undo = state
                .coordinator
                .undo_offsets(&group_id, offsets.iter().map(|(t, p, ..)| (t.clone(), *p)));
            let commit = OffsetCommit {
                group_id: group_id.clone(),
                generation: request.generation_id_or_member_epoch,
                member_id: request.member_id.to_string(),
                instance_id: request.group_instance_id.as_ref().map(|i| i.to_string()),
                offsets,
            };
            let (codes, completions) =
                self.groups
                    .write(&shard, &mut state, &self.replicas, undo, |c| {
                        c.commit_offsets(commit, now_ms())
                    })?;
            state.deliver(completions);
            // One code per partition of the request, in its order.
            Ok(slots
                .into_iter()
                .map(|slot| match slot {
                    Some(index) => codes.get(index).copied().unwrap_or(0),
                    None => code(ResponseError::UnknownTopicOrPartition),
                })
                .collect())
        };
        let codes = attempt();
        let mut next = 0;
        let topics = request
            .topics
            .iter()
            .map(|topic| {
                OffsetCommitResponseTopic::default()
                    .with_name(topic.name.clone())
                    .with_partitions(
                        topic
                            .partitions
                            .iter()
                            .map(|p| {
                                let error = match &codes {
                                    Ok(codes) => codes.get(next).copied().unwrap_or(0),
                                    Err(error) => code(*error),
                                };
                                next += 1;
                                OffsetCommitResponsePartition::default()
                                    .with_partition_index(p.partition_index)
                                    .with_error_code(error)
                            })
                            .collect(),
                    )
            })
            .collect();
        OffsetCommitResponse::default().with_topics(topics)
    }

    /// The committed offsets of `group` for `topics` (None = every partition with a commit),
    /// as (topic, [(partition, offset, leader epoch, metadata)]).
    fn committed_offsets(
        &self,
        group: &str,
        topics: Option<Vec<(String, Vec<i32>)>>,
    ) -> Result<Vec<(String, Vec<Fetched>)>, ResponseError> {
        let shard = self.group_coordinator(group)?;
        let state = shard.lock()?;
        let lookup = |topic: &str, partition: i32| match state
            .coordinator
            .committed(group, topic, partition)
        {
            Some(c) => Fetched {
                partition,
                offset: c.offset,
                leader_epoch: c.leader_epoch,
                metadata: c.metadata.clone(),
            },
            None => Fetched {
                partition,
                offset: -1,
                leader_epoch: -1,
                metadata: String::new(),
            },
        };
        Ok(match topics {
            Some(topics) => topics
                .into_iter()
                .map(|(topic, partitions)| {
                    let found = partitions.into_iter().map(|p| lookup(&topic, p)).collect();
                    (topic, found)
                })
                .collect(),
            None => {
                let mut by_topic: std::collections::BTreeMap<String, Vec<Fetched>> =
                    Default::default();
                if let Some(g) = state.coordinator.group(group) {
                    for ((topic, partition), c) in &g.offsets {
                        by_topic.entry(topic.clone()).or_default().push(Fetched {
                            partition: *partition,
                            offset: c.offset,
                            leader_epoch: c.leader_epoch,
                            metadata: c.metadata.clone(),
                        });
                    }
                }
                by_topic.into_iter().collect()
            }
        })
    }

    pub(super) fn offset_fetch(
        &self,
        request: OffsetFetchRequest,
        version: i16,
    ) -> OffsetFetchResponse {
        if version >= 8 {
            let groups = request
                .groups
                .into_iter()
                .map(|g| {
                    let topics = g.topics.map(|ts| {
                        ts.into_iter()
                            .map(|t| (t.name.to_string(), t.partition_indexes))
                            .collect()
                    });
                    let response =
                        OffsetFetchResponseGroup::default().with_group_id(g.group_id.clone());
                    let found = match self.committed_offsets(g.group_id.as_str(), topics) {
                        Ok(found) => found,
                        Err(error) => return response.with_error_code(code(error)),
                    };
                    response.with_topics(
                        found
                            .into_iter()
                            .map(|(topic, partitions)| {
                                OffsetFetchResponseTopics::default()
                                    .with_name(TopicName(s(&topic)))
                                    .with_partitions(
                                        partitions
                                            .into_iter()
                                            .map(|f| {
                                                OffsetFetchResponsePartitions::default()
                                                    .with_partition_index(f.partition)
                                                    .with_committed_offset(f.offset)
                                                    .with_committed_leader_epoch(f.leader_epoch)
                                                    .with_metadata(Some(s(&f.metadata)))
                                            })
                                            .collect(),
                                    )
                            })
                            .collect(),
                    )
                })
                .collect();
            return OffsetFetchResponse::default().with_groups(groups);
        }
        let topics: Option<Vec<(String, Vec<i32>)>> = request.topics.map(|ts| {
            ts.into_iter()
                .map(|t| (t.name.to_string(), t.partition_indexes))
                .collect()
        });
        let (found, partition_error) =
            match self.committed_offsets(request.group_id.as_str(), topics.clone()) {
                Ok(found) => (found, 0),
                Err(error) if version >= 2 => {
                    return OffsetFetchResponse::default().with_error_code(code(error))
                }
                // v0 and v1 have no top-level error: every requested partition carries it.
                Err(error) => {
                    let unanswered = topics
                        .unwrap_or_default()
                        .into_iter()
                        .map(|(topic, partitions)| {
                            let none = partitions
                                .into_iter()
                                .map(|partition| Fetched {
                                    partition,
                                    offset: -1,
                                    leader_epoch: -1,
                                    metadata: String::new(),
                                })
                                .collect();
                            (topic, none)
                        })
                        .collect();
                    (unanswered, code(error))
                }
            };
        OffsetFetchResponse::default().with_topics(
            found
                .into_iter()
                .map(|(topic, partitions)| {
                    OffsetFetchResponseTopic::default()
                        .with_name(TopicName(s(&topic)))
                        .with_partitions(
                            partitions
                                .into_iter()
                                .map(|f| {
                                    OffsetFetchResponsePartition::default()
                                        .with_partition_index(f.partition)
                                        .with_committed_offset(f.offset)
                                        .with_committed_leader_epoch(if version >= 5 {
                                            f.leader_epoch
                                        } else {
                                            -1
                                        })
                                        .with_metadata(Some(s(&f.metadata)))
                                        .with_error_code(partition_error)
                                })
                                .collect(),
                        )
                })
                .collect(),
        )
    }

    /// The groups of every coordinator loaded here; COORDINATOR_LOAD_IN_PROGRESS, with the
    /// groups known so far, while one is still loading (as Kafka).
    pub(super) fn list_groups(&self, request: ListGroupsRequest) -> ListGroupsResponse {
        let loading = self
            .groups
            .is_loading(&self.cluster.image(), &self.replicas);
        let mut groups = Vec::new();
        for shard in self.groups.shards() {
            let Ok(state) = shard.lock() else { continue };
            groups.extend(
                state
                    .coordinator
                    .groups()
                    .filter(|g| {
                        request.states_filter.is_empty()
                            || request
                                .states_filter
                                .iter()
                                .any(|f| f.as_str().eq_ignore_ascii_case(g.state.name()))
                    })
                    .map(|g| {
                        ListedGroup::default()
                            .with_group_id(GroupId(s(&g.id)))
                            .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
                            .with_group_state(s(g.state.name()))
                    }),
            );
        }
        ListGroupsResponse::default()
            .with_error_code(if loading {
                code(ResponseError::CoordinatorLoadInProgress)
            } else {
                0
            })
            .with_groups(groups)
    }

    pub(super) fn describe_groups(&self, request: DescribeGroupsRequest) -> DescribeGroupsResponse {
        let groups = request
            .groups
            .into_iter()
            .map(|id| {
                let described = DescribedGroup::default()
                    .with_group_id(id.clone())
                    .with_authorized_operations(i32::MIN);
                let shard = match self.group_coordinator(id.as_str()) {
                    Ok(shard) => shard,
                    Err(error) => return described.with_error_code(code(error)),
                };
                let state = match shard.lock() {
                    Ok(state) => state,
                    Err(error) => return described.with_error_code(code(error)),
                };
                let Some(g) = state.coordinator.group(id.as_str()) else {
                    return described.with_group_state(s("Dead"));
                };
                let stable = matches!(
                    g.state,
                    crate::group::coordinator::GroupState::Stable
                        | crate::group::coordinator::GroupState::CompletingRebalance
                );
                let protocol = g.protocol.clone().unwrap_or_default();
                described
                    .with_group_state(s(g.state.name()))
                    .with_protocol_type(s(g.protocol_type.as_deref().unwrap_or("")))
                    .with_protocol_data(if stable { s(&protocol) } else { s("") })
                    .with_members(
                        g.members
                            .values()
                            .map(|m| {
                                DescribedGroupMember::default()
                                    .with_member_id(s(&m.id))
                                    .with_group_instance_id(opt(m.instance_id.as_deref()))
                                    .with_client_id(s(&m.client_id))
                                    .with_client_host(s(&m.client_host))
                                    .with_member_metadata(if stable {
                                        m.protocols
                                            .iter()
                                            .find(|(n, _)| *n == protocol)
                                            .map(|(_, md)| md.clone())
                                            .unwrap_or_default()
                                    } else {
                                        Default::default()
                                    })
                                    .with_member_assignment(m.assignment.clone())
                            })
                            .collect(),
                    )
            })
            .collect();
        DescribeGroupsResponse::default().with_groups(groups)
    }

    pub(super) fn delete_groups(&self, request: DeleteGroupsRequest) -> DeleteGroupsResponse {
        let results = request
            .groups_names
            .into_iter()
            .map(|id| {
                let error = self
                    .change_group(id.as_str(), |c| c.delete_group(id.as_str()), |_, e| e)
                    .unwrap_or_else(code);
                DeletableGroupResult::default()
                    .with_group_id(id)
                    .with_error_code(error)
            })
            .collect();
        DeleteGroupsResponse::default().with_results(results)
    }

    pub(super) fn offset_delete(&self, request: OffsetDeleteRequest) -> OffsetDeleteResponse {
        // Partitions the cluster does not have are answered UNKNOWN_TOPIC_OR_PARTITION; their
        // offsets, if any, went with their topic. `slots` as in OffsetCommit.
        let image = self.cluster.image();
        let mut partitions = Vec::new();
        let mut slots: Vec<Option<usize>> = Vec::new();
        for t in &request.topics {
            for p in &t.partitions {
                if partition_exists(&image, t.name.as_str(), p.partition_index) {
                    slots.push(Some(partitions.len()));
                    partitions.push((t.name.to_string(), p.partition_index));
                } else {
                    slots.push(None);
                }
            }
        }
        let group_id = request.group_id.to_string();
        let attempt = || -> Result<_, ResponseError> {
            let shard = self.group_coordinator(&group_id)?;
            let mut state = shard.lock()?;
            let undo = state
                .coordinator
                .undo_offsets(&group_id, partitions.iter().cloned());
            let (outcome, completions) =
                self.groups
                    .write(&shard, &mut state, &self.replicas, undo, |c| {
                        c.delete_offsets(&group_id, &partitions)
                    })?;
            state.deliver(completions);
            Ok(outcome)
        };
        let codes = match attempt().unwrap_or_else(|error| Err(code(error))) {
            Err(error) => return OffsetDeleteResponse::default().with_error_code(error),
            Ok(codes) => codes,
        };
        let mut slots = slots.into_iter();
        OffsetDeleteResponse::default().with_topics(
            request
                .topics
                .into_iter()
                .map(|t| {
                    let partitions = t
                        .partitions
                        .iter()
                        .map(|p| {
                            let error = match slots.next() {
                                Some(Some(index)) => codes.get(index).copied().unwrap_or(0),
                                _ => code(ResponseError::UnknownTopicOrPartition),
                            };
                            OffsetDeleteResponsePartition::default()
                                .with_partition_index(p.partition_index)
                                .with_error_code(error)
                        })
                        .collect();
                    OffsetDeleteResponseTopic::default()
                        .with_name(t.name)
                        .with_partitions(partitions)
                })
                .collect(),
        )
    }
}
