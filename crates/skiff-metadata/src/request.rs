//! Cluster writes Kafka clients ask for (CreateTopics, DeleteTopics, CreatePartitions and topic
//! config changes) and the controller's decision on each: the records to append, or the Kafka
//! error to answer with. Requests cross the network from the broker a client talks to, to the
//! controller, so they and their errors are serializable.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};
use thiserror::Error;
use uuid::Uuid;

use crate::controller::{
    create_topic_records, place_replicas, placed_partitions, CreateTopicError, PlacementError,
};
use crate::election::{elect_leader, ElectionType};
use crate::image::{MetadataImage, TopicImage};
use crate::reassignment::{completion, reassign_partition};
use crate::record::{LeaderChange, MetadataRecord};
use crate::topic_config::validate_topic_configs;
use crate::topic_rules::{validate_topic_name, MAX_PARTITIONS_PER_TOPIC};

/// Kafka's limit on topic name length, so names stay valid as file names with a partition suffix.

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum ControllerRequest {
    /// `partitions` and `replication_factor` are -1 or must agree with `assignments` when manual
    /// assignments (one replica list per partition) are given. Without assignments they must be
    /// concrete: the broker substitutes its defaults for -1 before asking.
    CreateTopic {
        name: String,
        topic_id: Uuid,
        partitions: i32,
        replication_factor: i16,
        configs: BTreeMap<String, String>,
        assignments: Option<Vec<Vec<i32>>>,
    },
    DeleteTopic {
        topic_id: Uuid,
    },
    /// Grows the topic to `total` partitions; `assignments` holds one replica list per new
    /// partition.
    CreatePartitions {
        topic_id: Uuid,
        total: i32,
        assignments: Option<Vec<Vec<i32>>>,
    },
    /// Replaces all of the topic's config overrides.
    SetTopicConfigs {
        topic_id: Uuid,
        configs: BTreeMap<String, String>,
    },
    /// A new block of producer ids for `broker`, whose current block is used up.
    AllocateProducerIds {
        broker: i32,
    },
    /// Kafka's AlterPartition: the partition's leader `broker` asks for a new ISR, based on the
    /// leader and partition epochs it knows, so a stale leader's change is refused.
    AlterPartition {
        topic_id: Uuid,
        partition: i32,
        broker: i32,
        leader_epoch: i32,
        partition_epoch: i32,
        isr: Vec<i32>,
    },
    /// Kafka's AlterPartitionReassignments for one partition: move it to `replicas` (in
    /// preference order), or cancel the reassignment in progress when `None`.
    ReassignPartition {
        topic_id: Uuid,
        partition: i32,
        replicas: Option<Vec<i32>>,
        allow_replication_factor_change: bool,
    },
    /// Kafka's ElectLeaders for one partition.
    ElectLeader {
        topic_id: Uuid,
        partition: i32,
        election: ElectionType,
    },
}

/// The internal topic of consumer-group offsets, placed by a hash of the group id over its
/// partition count.
pub const OFFSETS_TOPIC: &str = "__consumer_offsets";

/// Producer ids per block: one metadata write per this many idempotent producers.
pub const PRODUCER_ID_BLOCK_LEN: i64 = 1000;

/// Why the controller refused a request. Each variant is one Kafka error code and carries the
/// message for the response's `error_message`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, Error)]
pub enum ControllerError {
    #[error("{0}")]
    TopicAlreadyExists(String),
    /// Kafka's UNKNOWN_TOPIC_ID. Requests name topics by id here; callers that resolved a name
    /// answer UNKNOWN_TOPIC_OR_PARTITION themselves.
    #[error("{0}")]
    UnknownTopic(String),
    #[error("{0}")]
    InvalidPartitions(String),
    #[error("{0}")]
    InvalidReplicationFactor(String),
    #[error("{0}")]
    InvalidReplicaAssignment(String),
    #[error("{0}")]
    InvalidTopic(String),
    #[error("{0}")]
    InvalidRequest(String),
    #[error("{0}")]
    InvalidConfig(String),
    #[error("{0}")]
    UnknownTopicOrPartition(String),
    #[error("{0}")]
    NotLeaderOrFollower(String),
    #[error("{0}")]
    FencedLeaderEpoch(String),
    /// The partition epoch the request is based on is not the current one.
    #[error("{0}")]
    InvalidUpdateVersion(String),
    /// A replica the new ISR adds is fenced or not registered.
    #[error("{0}")]
    IneligibleReplica(String),
    #[error("{0}")]
    NoReassignmentInProgress(String),
    #[error("{0}")]
    ElectionNotNeeded(String),
    #[error("{0}")]
    PreferredLeaderNotAvailable(String),
    #[error("{0}")]
    EligibleLeadersNotAvailable(String),
}

impl ControllerError {
    /// Kafka's numeric error code for the response.
    pub fn kafka_error_code(&self) -> i16 {
        match self {
            ControllerError::TopicAlreadyExists(_) => 36,
            ControllerError::UnknownTopic(_) => 100,
            ControllerError::InvalidPartitions(_) => 37,
            ControllerError::InvalidReplicationFactor(_) => 38,
            ControllerError::InvalidReplicaAssignment(_) => 39,
            ControllerError::InvalidTopic(_) => 17,
            ControllerError::InvalidRequest(_) => 42,
            ControllerError::InvalidConfig(_) => 40,
            ControllerError::UnknownTopicOrPartition(_) => 3,
            ControllerError::NotLeaderOrFollower(_) => 6,
            ControllerError::FencedLeaderEpoch(_) => 74,
            ControllerError::InvalidUpdateVersion(_) => 95,
            ControllerError::IneligibleReplica(_) => 107,
            ControllerError::NoReassignmentInProgress(_) => 85,
            ControllerError::ElectionNotNeeded(_) => 84,
            ControllerError::PreferredLeaderNotAvailable(_) => 80,
            ControllerError::EligibleLeadersNotAvailable(_) => 83,
        }
    }
}

impl From<PlacementError> for ControllerError {
    fn from(error: PlacementError) -> Self {
        match error {
            PlacementError::InvalidReplicationFactor { .. } => {
                ControllerError::InvalidReplicationFactor(error.to_string())
            }
            PlacementError::InvalidPartitions(_) => {
                ControllerError::InvalidPartitions(error.to_string())
            }
        }
    }
}

impl From<CreateTopicError> for ControllerError {
    fn from(error: CreateTopicError) -> Self {
        match error {
            CreateTopicError::InvalidTopicName => ControllerError::InvalidTopic(error.to_string()),
            CreateTopicError::TopicAlreadyExists(name) => topic_exists(&name),
            CreateTopicError::TopicIdInUse(id) => topic_id_in_use(id),
            CreateTopicError::Placement(placement) => placement.into(),
        }
    }
}

/// The records that carry out `request` on `image`; they apply as one batch to that image.
pub fn decide(
    image: &MetadataImage,
    request: &ControllerRequest,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    match request {
        ControllerRequest::CreateTopic {
            name,
            topic_id,
            partitions,
            replication_factor,
            configs,
            assignments,
        } => {
            check_new_topic(image, name, *topic_id)?;
            check_configs(configs)?;
            match assignments {
                None => Ok(create_topic_records(
                    image,
                    name,
                    *topic_id,
                    *partitions,
                    *replication_factor,
                    configs.clone(),
                )?),
                Some(assignments) => create_topic_manually(
                    image,
                    name,
                    *topic_id,
                    *partitions,
                    *replication_factor,
                    configs,
                    assignments,
                ),
            }
        }
        ControllerRequest::DeleteTopic { topic_id } => {
            if known_topic(image, *topic_id)?.name == OFFSETS_TOPIC {
                return Err(ControllerError::InvalidTopic(format!(
                    "{OFFSETS_TOPIC} is internal and cannot be deleted"
                )));
            }
            Ok(vec![MetadataRecord::DeleteTopic {
                topic_id: *topic_id,
            }])
        }
        ControllerRequest::CreatePartitions {
            topic_id,
            total,
            assignments,
        } => create_partitions(image, *topic_id, *total, assignments.as_deref()),
        ControllerRequest::AllocateProducerIds { broker } => {
            Ok(vec![MetadataRecord::AllocateProducerIds {
                broker: *broker,
                block_start: image.next_producer_id(),
                block_len: PRODUCER_ID_BLOCK_LEN,
            }])
        }
        ControllerRequest::AlterPartition {
            topic_id,
            partition,
            broker,
            leader_epoch,
            partition_epoch,
            isr,
        } => alter_partition(
            image,
            *topic_id,
            *partition,
            *broker,
            (*leader_epoch, *partition_epoch),
            isr,
        ),
        ControllerRequest::ReassignPartition {
            topic_id,
            partition,
            replicas,
            allow_replication_factor_change,
        } => reassign_partition(
            image,
            *topic_id,
            *partition,
            replicas.as_deref(),
            *allow_replication_factor_change,
        ),
        ControllerRequest::ElectLeader {
            topic_id,
            partition,
            election,
        } => elect_leader(image, *topic_id, *partition, *election),
        ControllerRequest::SetTopicConfigs { topic_id, configs } => {
            check_configs(configs)?;
            let current = &known_topic(image, *topic_id)?.configs;
            let names: BTreeSet<&String> = current.keys().chain(configs.keys()).collect();
            Ok(names
                .into_iter()
                .filter(|name| current.get(*name) != configs.get(*name))
                .map(|name| MetadataRecord::SetTopicConfig {
                    topic_id: *topic_id,
                    name: name.clone(),
                    value: configs.get(name).cloned(),
                })
                .collect())
        }
    }
}

fn topic_exists(name: &str) -> ControllerError {
    ControllerError::TopicAlreadyExists(format!("Topic '{name}' already exists."))
}

fn topic_id_in_use(topic_id: Uuid) -> ControllerError {
    ControllerError::InvalidRequest(format!("Topic id {topic_id} is already in use."))
}

fn known_topic(image: &MetadataImage, topic_id: Uuid) -> Result<&TopicImage, ControllerError> {
    image
        .topic(topic_id)
        .ok_or_else(|| ControllerError::UnknownTopic(format!("Unknown topic id {topic_id}.")))
}

/// Kafka's topic name rules, including its refusal of names that differ from an existing one
/// only by '.' versus '_', because both map to the same metric name.
fn check_configs(configs: &BTreeMap<String, String>) -> Result<(), ControllerError> {
    validate_topic_configs(configs).map_err(|e| ControllerError::InvalidConfig(e.to_string()))
}

fn check_new_topic(
    image: &MetadataImage,
    name: &str,
    topic_id: Uuid,
) -> Result<(), ControllerError> {
    let invalid = |message: String| Err(ControllerError::InvalidTopic(message));
    if let Err(message) = validate_topic_name(name) {
        return invalid(message);
    }
    if image.topic_by_name(name).is_some() {
        return Err(topic_exists(name));
    }
    let metric_name = name.replace('.', "_");
    if let Some(existing) = image
        .topics()
        .find(|t| t.name.replace('.', "_") == metric_name)
    {
        return invalid(format!(
            "Topic '{name}' collides with existing topic '{}'.",
            existing.name
        ));
    }
    if image.topic(topic_id).is_some() {
        return Err(topic_id_in_use(topic_id));
    }
    Ok(())
}

fn create_topic_manually(
    image: &MetadataImage,
    name: &str,
    topic_id: Uuid,
    partitions: i32,
    replication_factor: i16,
    configs: &BTreeMap<String, String>,
    assignments: &[Vec<i32>],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let assigned_partitions = i32::try_from(assignments.len()).map_err(|_| {
        ControllerError::InvalidPartitions("The manual assignment has too many partitions.".into())
    })?;
    if assigned_partitions == 0 || assigned_partitions > MAX_PARTITIONS_PER_TOPIC {
        return Err(ControllerError::InvalidPartitions(format!(
            "The manual assignment must list 1 to {MAX_PARTITIONS_PER_TOPIC} partitions, not {assigned_partitions}."
        )));
    }
    if partitions != -1 && partitions != assigned_partitions {
        return Err(ControllerError::InvalidRequest(format!(
            "The request asks for {partitions} partitions but its manual assignment lists {assigned_partitions}; set the partition count to -1 or make them agree."
        )));
    }
    let replicas_per_partition = assignments.first().map_or(0, Vec::len);
    if replication_factor != -1
        && usize::try_from(replication_factor).ok() != Some(replicas_per_partition)
    {
        return Err(ControllerError::InvalidRequest(format!(
            "The request asks for replication factor {replication_factor} but its manual assignment lists {replicas_per_partition} replicas per partition; set the replication factor to -1 or make them agree."
        )));
    }
    let mut records = vec![MetadataRecord::CreateTopic {
        name: name.to_owned(),
        topic_id,
        configs: configs.clone(),
    }];
    records.extend(manual_partitions(
        image,
        topic_id,
        0,
        replicas_per_partition,
        assignments,
    )?);
    Ok(records)
}

/// Kafka's AlterPartition checks, in its order: the partition exists, the sender leads it at
/// the current leader epoch, the request is based on the current partition epoch, and the new
/// ISR keeps the leader, stays within the replicas and adds only registered, unfenced brokers
/// (KIP-841). A request for the ISR the partition already has changes nothing.
fn alter_partition(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    broker: i32,
    (leader_epoch, partition_epoch): (i32, i32),
    isr: &[i32],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let current = image.partition(topic_id, partition).ok_or_else(|| {
        ControllerError::UnknownTopicOrPartition(format!(
            "Unknown partition {partition} of topic id {topic_id}."
        ))
    })?;
    if leader_epoch < current.leader_epoch {
        return Err(ControllerError::FencedLeaderEpoch(format!(
            "Leader epoch {leader_epoch} is older than the current {}.",
            current.leader_epoch
        )));
    }
    if current.leader != Some(broker) || leader_epoch != current.leader_epoch {
        return Err(ControllerError::NotLeaderOrFollower(format!(
            "Broker {broker} does not lead the partition at leader epoch {leader_epoch}."
        )));
    }
    if partition_epoch != current.partition_epoch {
        return Err(ControllerError::InvalidUpdateVersion(format!(
            "Partition epoch {partition_epoch} is not the current {}.",
            current.partition_epoch
        )));
    }
    let distinct: BTreeSet<i32> = isr.iter().copied().collect();
    if !isr.contains(&broker)
        || distinct.len() != isr.len()
        || !isr.iter().all(|r| current.replicas.contains(r))
    {
        return Err(ControllerError::InvalidRequest(format!(
            "The ISR {isr:?} must be distinct replicas {:?} that include the leader {broker}.",
            current.replicas
        )));
    }
    if let Some(ineligible) = isr
        .iter()
        .filter(|r| !current.isr.contains(r))
        .find(|r| image.broker(**r).is_none_or(|b| b.fenced))
    {
        return Err(ControllerError::IneligibleReplica(format!(
            "Replica {ineligible} is fenced or not registered and cannot join the ISR."
        )));
    }
    if isr == current.isr.as_slice() {
        return Ok(Vec::new());
    }
    if let Some(completed) = completion(image, topic_id, partition, current, isr) {
        return Ok(vec![completed]);
    }
    Ok(vec![MetadataRecord::ChangePartition {
        topic_id,
        partition,
        leader: LeaderChange::Unchanged,
        isr: Some(isr.to_vec()),
    }])
}

fn create_partitions(
    image: &MetadataImage,
    topic_id: Uuid,
    total: i32,
    assignments: Option<&[Vec<i32>]>,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let topic = known_topic(image, topic_id)?;
    let current = image.partition_count(topic_id);
    if topic.name == OFFSETS_TOPIC && total != current {
        // Groups are placed by hashing their id over this count: a new count would move them
        // to partitions that know nothing of them.
        return Err(ControllerError::InvalidPartitions(format!(
            "the partition count of {OFFSETS_TOPIC} is fixed at {current}"
        )));
    }
    if total > MAX_PARTITIONS_PER_TOPIC {
        return Err(ControllerError::InvalidPartitions(format!(
            "A topic has at most {MAX_PARTITIONS_PER_TOPIC} partitions, not {total}."
        )));
    }
    if total < current {
        return Err(ControllerError::InvalidPartitions(format!(
            "Topic currently has {current} partitions, which is higher than the requested {total}."
        )));
    }
    if total == current {
        return Err(ControllerError::InvalidPartitions(format!(
            "Topic already has {current} partitions."
        )));
    }
    // Only a history of hand-written records leaves gaps; numbering from the count would then
    // collide with an existing partition.
    if image
        .partitions_of(topic_id)
        .last()
        .is_some_and(|(index, _)| index >= current)
    {
        return Err(ControllerError::InvalidRequest(format!(
            "The partitions of topic {topic_id} are not numbered 0 to {}, so new ones cannot be numbered.",
            current - 1
        )));
    }
    let added = total - current;
    let existing_replication = image
        .partitions_of(topic_id)
        .next()
        .map(|(_, reg)| reg.replicas.len());
    match assignments {
        Some(assignments) => {
            if usize::try_from(added).ok() != Some(assignments.len()) {
                return Err(ControllerError::InvalidReplicaAssignment(format!(
                    "Increasing the number of partitions by {added} but {} assignments provided.",
                    assignments.len()
                )));
            }
            let replicas_per_partition =
                existing_replication.unwrap_or_else(|| assignments.first().map_or(0, Vec::len));
            manual_partitions(
                image,
                topic_id,
                current,
                replicas_per_partition,
                assignments,
            )
        }
        None => {
            let replication = existing_replication.ok_or_else(|| {
                ControllerError::InvalidRequest(format!(
                    "Topic {topic_id} has no partition to take the replication factor from; give the assignments."
                ))
            })?;
            let replication_factor = i16::try_from(replication).map_err(|_| {
                ControllerError::InvalidReplicationFactor(format!(
                    "The topic's replication factor {replication} is too large."
                ))
            })?;
            let assignments = place_replicas(image, added, replication_factor)?;
            Ok(placed_partitions(topic_id, current, assignments).collect())
        }
    }
}

/// `CreatePartition` records for hand-assigned replica lists, numbered from `first_partition`.
/// As in KRaft, fenced replicas start outside the ISR (they are not caught up) and the first
/// unfenced listed replica leads; a list with no unfenced replica cannot have a leader.
fn manual_partitions(
    image: &MetadataImage,
    topic_id: Uuid,
    first_partition: i32,
    replicas_per_partition: usize,
    assignments: &[Vec<i32>],
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let invalid = |message: String| ControllerError::InvalidReplicaAssignment(message);
    let mut records = Vec::with_capacity(assignments.len());
    for (replicas, partition) in assignments.iter().zip(first_partition..) {
        if replicas.is_empty() {
            return Err(invalid(format!(
                "The manual assignment of partition {partition} lists no replicas."
            )));
        }
        if replicas.len() != replicas_per_partition {
            return Err(invalid(format!(
                "The manual assignment gives partition {partition} {} replicas, but the topic's partitions have {replicas_per_partition}.",
                replicas.len()
            )));
        }
        let mut seen = BTreeSet::new();
        if let Some(duplicate) = replicas.iter().find(|id| !seen.insert(**id)) {
            return Err(invalid(format!(
                "The manual assignment of partition {partition} lists broker {duplicate} more than once."
            )));
        }
        if let Some(unknown) = replicas.iter().find(|id| image.broker(**id).is_none()) {
            return Err(invalid(format!(
                "The manual assignment of partition {partition} includes broker {unknown}, which is not registered."
            )));
        }
        let isr: Vec<i32> = replicas
            .iter()
            .copied()
            .filter(|id| image.broker(*id).is_some_and(|b| !b.fenced))
            .collect();
        let Some(&leader) = isr.first() else {
            return Err(invalid(format!(
                "All brokers in the manual assignment of partition {partition} are fenced."
            )));
        };
        records.push(MetadataRecord::CreatePartition {
            topic_id,
            partition,
            replicas: replicas.clone(),
            isr,
            leader: Some(leader),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        });
    }
    Ok(records)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::controller::fence_broker_records;
    use crate::image::{BatchError, ImageError};

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        let next = image.offset().map_or(0, |o| o + 1);
        image.apply_batch(next, records).unwrap();
    }

    /// Unfenced brokers 1..=`count`.
    fn brokers(count: i32) -> MetadataImage {
        let mut image = MetadataImage::new();
        for id in 1..=count {
            apply(
                &mut image,
                &[
                    MetadataRecord::RegisterBroker {
                        id,
                        endpoints: vec![format!("b{id}:9092")],
                        rack: None,
                        incarnation: Uuid::nil(),
                    },
                    MetadataRecord::UnfenceBroker { id },
                ],
            );
        }
        image
    }

    #[test]
    fn alter_partition_accepts_only_the_current_leader_at_the_current_epochs() {
        let mut image = brokers(4);
        let records = decide(&image, &create("t", 1, 3)).unwrap();
        apply(&mut image, &records);
        let p = image.partition(TOPIC, 0).unwrap().clone();
        let leader = p.leader.unwrap();
        let follower = p.replicas[1];
        let outsider = (1..=4).find(|b| !p.replicas.contains(b)).unwrap();
        let alter =
            |broker: i32, epochs: (i32, i32), isr: Vec<i32>| ControllerRequest::AlterPartition {
                topic_id: TOPIC,
                partition: 0,
                broker,
                leader_epoch: epochs.0,
                partition_epoch: epochs.1,
                isr,
            };
        let current = (p.leader_epoch, p.partition_epoch);
        let without_follower: Vec<i32> = p.isr.iter().copied().filter(|&r| r != follower).collect();
        let code = |request: &ControllerRequest, image: &MetadataImage| {
            decide(image, request).map_err(|e| e.kafka_error_code())
        };
        let refused = [
            (alter(follower, current, without_follower.clone()), 6),
            (
                alter(
                    leader,
                    (p.leader_epoch - 1, p.partition_epoch),
                    without_follower.clone(),
                ),
                74,
            ),
            (
                alter(
                    leader,
                    (p.leader_epoch, p.partition_epoch + 1),
                    without_follower.clone(),
                ),
                95,
            ),
            (alter(leader, current, vec![follower]), 42),
            (alter(leader, current, vec![leader, leader]), 42),
            (alter(leader, current, vec![leader, outsider]), 42),
        ];
        for (request, expected) in refused {
            assert_eq!(code(&request, &image), Err(expected), "{request:?}");
        }
        assert_eq!(
            code(&alter(leader, current, p.isr.clone()), &image),
            Ok(vec![])
        );

        // Shrink: applied, and the same request again is now stale.
        let shrink = alter(leader, current, without_follower.clone());
        let records = decide(&image, &shrink).unwrap();
        apply(&mut image, &records);
        let after = image.partition(TOPIC, 0).unwrap();
        assert_eq!(after.isr, without_follower);
        assert_eq!(after.leader_epoch, p.leader_epoch);
        assert_eq!(code(&shrink, &image), Err(95));

        // Expanding with a fenced replica is refused (KIP-841), with an unfenced one accepted.
        let current = (after.leader_epoch, after.partition_epoch);
        let mut back = without_follower.clone();
        back.push(follower);
        let records = fence_broker_records(&image, follower);
        apply(&mut image, &records);
        let current = (
            current.0,
            image.partition(TOPIC, 0).unwrap().partition_epoch,
        );
        assert_eq!(
            code(&alter(leader, current, back.clone()), &image),
            Err(107)
        );
        apply(
            &mut image,
            &[MetadataRecord::UnfenceBroker { id: follower }],
        );
        let records = decide(&image, &alter(leader, current, back.clone())).unwrap();
        apply(&mut image, &records);
        assert_eq!(image.partition(TOPIC, 0).unwrap().isr, back);
        assert_eq!(
            code(&alter(leader, current, vec![leader]), &brokers(1)),
            Err(3),
            "unknown partition"
        );
    }

    fn create(name: &str, partitions: i32, rf: i16) -> ControllerRequest {
        ControllerRequest::CreateTopic {
            name: name.into(),
            topic_id: TOPIC,
            partitions,
            replication_factor: rf,
            configs: BTreeMap::from([("retention.ms".to_string(), "1000".to_string())]),
            assignments: None,
        }
    }

    fn create_manually(partitions: i32, rf: i16, assignments: &[&[i32]]) -> ControllerRequest {
        ControllerRequest::CreateTopic {
            name: "t".into(),
            topic_id: TOPIC,
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
            assignments: Some(assignments.iter().map(|a| a.to_vec()).collect()),
        }
    }

    fn grow(total: i32, assignments: Option<&[&[i32]]>) -> ControllerRequest {
        ControllerRequest::CreatePartitions {
            topic_id: TOPIC,
            total,
            assignments: assignments.map(|a| a.iter().map(|r| r.to_vec()).collect()),
        }
    }

    /// Brokers 1..=4 and topic "t" with 3 partitions of 2 replicas.
    fn cluster() -> MetadataImage {
        let mut image = brokers(4);
        let records = decide(&image, &create("t", 3, 2)).unwrap();
        apply(&mut image, &records);
        image
    }

    fn decided(image: &mut MetadataImage, request: &ControllerRequest) {
        let records = decide(image, request).unwrap();
        apply(image, &records);
    }

    fn code(image: &MetadataImage, request: &ControllerRequest) -> i16 {
        decide(image, request).unwrap_err().kafka_error_code()
    }

    #[test]
    fn create_topic_places_replicas_and_keeps_configs() {
        let image = cluster();
        let topic = image.topic_by_name("t").unwrap();
        assert_eq!(topic.topic_id, TOPIC);
        assert_eq!(topic.configs.get("retention.ms").unwrap(), "1000");
        assert_eq!(image.partition_count(TOPIC), 3);
        for (_, p) in image.partitions_of(TOPIC) {
            assert_eq!(p.replicas.len(), 2);
            assert_eq!(p.leader, Some(p.replicas[0]));
        }
    }

    #[test]
    fn create_topic_refuses_existing_names_and_ids() {
        let image = cluster();
        let err = decide(&image, &create("t", 1, 1)).unwrap_err();
        assert_eq!(
            err,
            ControllerError::TopicAlreadyExists("Topic 't' already exists.".into())
        );
        assert_eq!(err.kafka_error_code(), 36);
        assert_eq!(code(&image, &create("u", 1, 1)), 42);
    }

    #[test]
    fn create_topic_refuses_invalid_names() {
        let image = cluster();
        let long = "x".repeat(250);
        for name in ["", ".", "..", "a b", "ä", long.as_str()] {
            let err = decide(&image, &create(name, 1, 1)).unwrap_err();
            assert!(
                matches!(err, ControllerError::InvalidTopic(_)),
                "{name}: {err}"
            );
            assert_eq!(err.kafka_error_code(), 17);
        }
        let mut image = brokers(1);
        decided(&mut image, &create("a_b", 1, 1));
        let colliding = ControllerRequest::CreateTopic {
            name: "a.b".into(),
            topic_id: Uuid::from_u128(8),
            partitions: 1,
            replication_factor: 1,
            configs: BTreeMap::new(),
            assignments: None,
        };
        assert_eq!(
            decide(&image, &colliding),
            Err(ControllerError::InvalidTopic(
                "Topic 'a.b' collides with existing topic 'a_b'.".into()
            ))
        );
        assert!(decide(&brokers(1), &create(&"x".repeat(249), 1, 1)).is_ok());
    }

    #[test]
    fn create_topic_refuses_bad_counts() {
        let image = brokers(2);
        assert_eq!(code(&image, &create("t", 0, 1)), 37);
        assert_eq!(code(&image, &create("t", 1, 3)), 38);
        assert_eq!(code(&image, &create("t", 1, 0)), 38);
        assert_eq!(code(&image, &create("t", 1, -1)), 38);
    }

    #[test]
    fn manual_assignment_sets_replicas_and_leads_with_the_first_listed() {
        let mut image = brokers(3);
        decided(&mut image, &create_manually(-1, -1, &[&[3, 1], &[2, 3]]));
        let p0 = image.partition(TOPIC, 0).unwrap();
        assert_eq!((p0.replicas.clone(), p0.leader), (vec![3, 1], Some(3)));
        assert_eq!(p0.isr, vec![3, 1]);
        assert_eq!(image.partition(TOPIC, 1).unwrap().leader, Some(2));
        assert!(decide(&brokers(3), &create_manually(2, 2, &[&[3, 1], &[2, 3]])).is_ok());
    }

    #[test]
    fn manual_assignment_keeps_fenced_brokers_out_of_isr_and_leadership() {
        let mut image = brokers(3);
        let fence = fence_broker_records(&image, 1);
        apply(&mut image, &fence);
        decided(&mut image, &create_manually(-1, -1, &[&[1, 2, 3]]));
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!((p.isr.clone(), p.leader), (vec![2, 3], Some(2)));

        let mut image = brokers(2);
        for id in [1, 2] {
            let fence = fence_broker_records(&image, id);
            apply(&mut image, &fence);
        }
        assert_eq!(code(&image, &create_manually(-1, -1, &[&[1, 2]])), 39);
    }

    #[test]
    fn manual_assignment_is_validated() {
        let image = brokers(3);
        for bad in [
            create_manually(-1, -1, &[&[1, 2], &[3]]),
            create_manually(-1, -1, &[&[]]),
            create_manually(-1, -1, &[&[1, 1]]),
            create_manually(-1, -1, &[&[1, 9]]),
        ] {
            let err = decide(&image, &bad).unwrap_err();
            assert!(
                matches!(err, ControllerError::InvalidReplicaAssignment(_)),
                "{err}"
            );
        }
        assert_eq!(code(&image, &create_manually(-1, -1, &[])), 37);
        assert_eq!(code(&image, &create_manually(3, -1, &[&[1]])), 42);
        assert_eq!(code(&image, &create_manually(-1, 2, &[&[1]])), 42);
        assert_eq!(code(&image, &create_manually(-1, -2, &[&[1]])), 42);
    }

    #[test]
    fn delete_topic_needs_a_known_topic() {
        let image = cluster();
        let delete = ControllerRequest::DeleteTopic { topic_id: TOPIC };
        assert_eq!(
            decide(&image, &delete),
            Ok(vec![MetadataRecord::DeleteTopic { topic_id: TOPIC }])
        );
        let unknown = ControllerRequest::DeleteTopic {
            topic_id: Uuid::from_u128(8),
        };
        let err = decide(&image, &unknown).unwrap_err();
        assert!(matches!(err, ControllerError::UnknownTopic(_)));
        assert_eq!(err.kafka_error_code(), 100);
    }

    #[test]
    fn create_partitions_adds_partitions_like_partition_zero() {
        let mut image = cluster();
        decided(&mut image, &grow(5, None));
        assert_eq!(image.partition_count(TOPIC), 5);
        for partition in [3, 4] {
            let p = image.partition(TOPIC, partition).unwrap();
            assert_eq!(p.replicas.len(), 2);
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.leader, Some(p.replicas[0]));
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        }
    }

    #[test]
    fn create_partitions_must_grow_the_topic() {
        let image = cluster();
        assert_eq!(
            decide(&image, &grow(2, None)),
            Err(ControllerError::InvalidPartitions(
                "Topic currently has 3 partitions, which is higher than the requested 2.".into()
            ))
        );
        assert_eq!(
            decide(&image, &grow(3, None)),
            Err(ControllerError::InvalidPartitions(
                "Topic already has 3 partitions.".into()
            ))
        );
        let unknown = ControllerRequest::CreatePartitions {
            topic_id: Uuid::from_u128(8),
            total: 4,
            assignments: None,
        };
        assert_eq!(code(&image, &unknown), 100);
    }

    #[test]
    fn create_partitions_needs_enough_unfenced_brokers() {
        let mut image = cluster();
        for id in [1, 2, 3] {
            let fence = fence_broker_records(&image, id);
            apply(&mut image, &fence);
        }
        assert_eq!(code(&image, &grow(4, None)), 38);
    }

    #[test]
    fn create_partitions_takes_one_manual_assignment_per_new_partition() {
        let mut image = cluster();
        decided(&mut image, &grow(5, Some(&[&[4, 1], &[2, 3]])));
        let p = image.partition(TOPIC, 3).unwrap();
        assert_eq!((p.replicas.clone(), p.leader), (vec![4, 1], Some(4)));
        assert_eq!(image.partition(TOPIC, 4).unwrap().replicas, vec![2, 3]);

        let image = cluster();
        let err = decide(&image, &grow(5, Some(&[&[4, 1]]))).unwrap_err();
        assert_eq!(
            err,
            ControllerError::InvalidReplicaAssignment(
                "Increasing the number of partitions by 2 but 1 assignments provided.".into()
            )
        );
        assert_eq!(code(&image, &grow(4, Some(&[&[4]]))), 39);
        assert_eq!(code(&image, &grow(4, Some(&[&[4, 9]]))), 39);
    }

    #[test]
    fn create_partitions_refuses_a_topic_with_gaps() {
        let mut image = brokers(1);
        apply(
            &mut image,
            &[
                MetadataRecord::CreateTopic {
                    name: "t".into(),
                    topic_id: TOPIC,
                    configs: BTreeMap::new(),
                },
                MetadataRecord::CreatePartition {
                    topic_id: TOPIC,
                    partition: 1,
                    replicas: vec![1],
                    isr: vec![1],
                    leader: Some(1),
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                },
            ],
        );
        assert_eq!(code(&image, &grow(2, None)), 42);
    }

    #[test]
    fn configs_no_broker_can_apply_are_refused_by_the_controller_and_the_image() {
        let bad = || BTreeMap::from([("retention.ms".to_string(), "not-a-number".to_string())]);
        let mut image = brokers(1);
        let request = ControllerRequest::CreateTopic {
            name: "p".into(),
            topic_id: TOPIC,
            partitions: 1,
            replication_factor: 1,
            configs: bad(),
            assignments: None,
        };
        assert_eq!(code(&image, &request), 40, "INVALID_CONFIG");
        let unknown = BTreeMap::from([("no.such.config".to_string(), "1".to_string())]);
        let set = |configs| ControllerRequest::SetTopicConfigs {
            topic_id: TOPIC,
            configs,
        };
        decided(&mut image, &create("p", 1, 1));
        assert_eq!(code(&image, &set(bad())), 40);
        assert_eq!(code(&image, &set(unknown)), 40);

        // Records that reach the image anyway (a forged or old entry) are refused whole.
        let before = image.clone();
        let next = image.offset().map_or(0, |o| o + 1);
        let forged = [
            MetadataRecord::CreateTopic {
                name: "q".into(),
                topic_id: Uuid::from_u128(9),
                configs: bad(),
            },
            MetadataRecord::SetTopicConfig {
                topic_id: TOPIC,
                name: "cleanup.policy".into(),
                value: Some("shred".into()),
            },
        ];
        for record in &forged {
            assert!(matches!(
                image.apply_batch(next, std::slice::from_ref(record)),
                Err(BatchError {
                    error: ImageError::InvalidConfig(_),
                    ..
                })
            ));
        }
        assert_eq!(image, before);
    }

    #[test]
    fn names_and_partition_counts_no_broker_can_host_are_refused() {
        let mut image = brokers(1);
        let too_many = ControllerRequest::CreateTopic {
            name: "t".into(),
            topic_id: TOPIC,
            partitions: -1,
            replication_factor: 1,
            configs: BTreeMap::new(),
            assignments: Some(vec![vec![1]; MAX_PARTITIONS_PER_TOPIC as usize + 1]),
        };
        assert_eq!(code(&image, &too_many), 37, "INVALID_PARTITIONS");
        decided(&mut image, &create("t", 1, 1));
        let grow = ControllerRequest::CreatePartitions {
            topic_id: TOPIC,
            total: MAX_PARTITIONS_PER_TOPIC + 1,
            assignments: None,
        };
        assert_eq!(code(&image, &grow), 37);

        // Records that reach the image anyway are refused whole: a name that is not a safe
        // directory name, an index no broker should allocate a slot for. Config names this
        // version does not know are kept (a newer version may know them).
        let next = image.offset().map_or(0, |o| o + 1);
        let before = image.clone();
        let forged = [
            MetadataRecord::CreateTopic {
                name: "../../x".into(),
                topic_id: Uuid::from_u128(9),
                configs: BTreeMap::new(),
            },
            MetadataRecord::CreatePartition {
                topic_id: TOPIC,
                partition: i32::MAX,
                replicas: vec![1],
                isr: vec![1],
                leader: Some(1),
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            },
        ];
        for record in &forged {
            assert!(image
                .apply_batch(next, std::slice::from_ref(record))
                .is_err());
        }
        assert_eq!(image, before);
        let newer = MetadataRecord::SetTopicConfig {
            topic_id: TOPIC,
            name: "a.config.of.a.newer.version".into(),
            value: Some("1".into()),
        };
        image.apply_batch(next, &[newer]).unwrap();
    }

    #[test]
    fn the_offsets_topic_keeps_its_partition_count_and_cannot_be_deleted() {
        let mut image = brokers(1);
        decided(
            &mut image,
            &ControllerRequest::CreateTopic {
                name: OFFSETS_TOPIC.into(),
                topic_id: TOPIC,
                partitions: 2,
                replication_factor: 1,
                configs: BTreeMap::new(),
                assignments: None,
            },
        );
        let grow = ControllerRequest::CreatePartitions {
            topic_id: TOPIC,
            total: 3,
            assignments: None,
        };
        assert_eq!(code(&image, &grow), 37, "INVALID_PARTITIONS");
        let delete = ControllerRequest::DeleteTopic { topic_id: TOPIC };
        assert_eq!(code(&image, &delete), 17, "INVALID_TOPIC_EXCEPTION");
    }

    #[test]
    fn set_topic_configs_writes_only_the_differences() {
        let mut image = cluster();
        let set = |pairs: &[(&str, &str)]| ControllerRequest::SetTopicConfigs {
            topic_id: TOPIC,
            configs: pairs
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        };
        let records = decide(&image, &set(&[("cleanup.policy", "compact")])).unwrap();
        let config = |name: &str, value: Option<&str>| MetadataRecord::SetTopicConfig {
            topic_id: TOPIC,
            name: name.into(),
            value: value.map(str::to_owned),
        };
        assert_eq!(
            records,
            vec![
                config("cleanup.policy", Some("compact")),
                config("retention.ms", None)
            ]
        );
        apply(&mut image, &records);
        assert_eq!(
            image.topic(TOPIC).unwrap().configs,
            BTreeMap::from([("cleanup.policy".to_string(), "compact".to_string())])
        );
        assert_eq!(
            decide(&image, &set(&[("cleanup.policy", "compact")])),
            Ok(vec![])
        );
        assert_eq!(
            decide(&image, &set(&[("cleanup.policy", "delete")])),
            Ok(vec![config("cleanup.policy", Some("delete"))])
        );
        let unknown = ControllerRequest::SetTopicConfigs {
            topic_id: Uuid::from_u128(8),
            configs: BTreeMap::new(),
        };
        assert_eq!(code(&image, &unknown), 100);
    }

    #[test]
    fn error_codes_are_kafkas() {
        let codes: Vec<i16> = [
            ControllerError::TopicAlreadyExists(String::new()),
            ControllerError::UnknownTopic(String::new()),
            ControllerError::InvalidPartitions(String::new()),
            ControllerError::InvalidReplicationFactor(String::new()),
            ControllerError::InvalidReplicaAssignment(String::new()),
            ControllerError::InvalidTopic(String::new()),
            ControllerError::InvalidRequest(String::new()),
        ]
        .iter()
        .map(ControllerError::kafka_error_code)
        .collect();
        assert_eq!(codes, vec![36, 100, 37, 38, 39, 17, 42]);
        assert_eq!(
            ControllerError::InvalidRequest("why".into()).to_string(),
            "why"
        );
    }

    #[test]
    fn requests_and_errors_survive_serialization() {
        let request = create_manually(-1, -1, &[&[1, 2]]);
        let json = serde_json::to_string(&request).unwrap();
        assert_eq!(
            serde_json::from_str::<ControllerRequest>(&json).unwrap(),
            request
        );
        let error = ControllerError::UnknownTopic("gone".into());
        let json = serde_json::to_string(&error).unwrap();
        assert_eq!(
            serde_json::from_str::<ControllerError>(&json).unwrap(),
            error
        );
    }
}
