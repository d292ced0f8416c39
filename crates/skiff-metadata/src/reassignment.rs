//! Partition reassignment, Kafka's model (KIP-455): the controller gives a partition its target
//! replicas plus the ones it removes; the added replicas follow the leader like any other and
//! join the ISR when caught up; once every target replica is in the ISR, the reassignment
//! completes in the same decision that records the ISR change: the removed replicas go, and the
//! leader moves when it was one of them. Nothing is lost on the way: a replica leaves the ISR
//! only when the remaining target replicas already hold everything acknowledged.
//!
//! The controller also raises the replication factor of `__consumer_offsets` this way when a
//! cluster that created it with fewer brokers grows.

use std::collections::BTreeMap;

use uuid::Uuid;

use crate::image::{MetadataImage, PartitionRegistration};
use crate::record::{LeaderChange, MetadataRecord};
use crate::request::{ControllerError, OFFSETS_TOPIC};

/// Kafka's default `offsets.topic.replication.factor`: the replication factor
/// `__consumer_offsets` is created with when enough brokers are alive, and raised to otherwise.
pub const OFFSETS_TOPIC_REPLICATION_FACTOR: usize = 3;

/// The records that start, replace or (with `target: None`) cancel the reassignment of one
/// partition. A target without new replicas whose replicas are all in sync completes at once.
pub(crate) fn reassign_partition(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    target: Option<&[i32]>,
    allow_replication_factor_change: bool,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let current = image.partition(topic_id, partition).ok_or_else(|| {
        ControllerError::UnknownTopicOrPartition(format!(
            "Unknown partition {partition} of topic id {topic_id}."
        ))
    })?;
    let original = current.original_replicas();
    let target = match target {
        None if !current.is_reassigning() => {
            return Err(ControllerError::NoReassignmentInProgress(format!(
                "Partition {partition} has no reassignment in progress to cancel."
            )))
        }
        None => original.clone(),
        Some(target) => {
            check_target(image, partition, target)?;
            if !allow_replication_factor_change && target.len() != original.len() {
                return Err(ControllerError::InvalidReplicationFactor(format!(
                    "The reassignment of partition {partition} changes its replication factor from {} to {}, which the request does not allow.",
                    original.len(),
                    target.len()
                )));
            }
            target.to_vec()
        }
    };
    Ok(replicas_change(
        image,
        topic_id,
        partition,
        current,
        target,
        &original,
        &current.isr,
    )?
    .into_iter()
    .collect())
}

/// A target is a non-empty list of distinct registered brokers.
fn check_target(
    image: &MetadataImage,
    partition: i32,
    target: &[i32],
) -> Result<(), ControllerError> {
    let invalid = |message: String| Err(ControllerError::InvalidReplicaAssignment(message));
    if target.is_empty() {
        return invalid(format!(
            "The target replicas of partition {partition} must not be empty."
        ));
    }
    let distinct: std::collections::BTreeSet<i32> = target.iter().copied().collect();
    if distinct.len() != target.len() {
        return invalid(format!(
            "The target replicas {target:?} of partition {partition} repeat a broker."
        ));
    }
    if let Some(unknown) = target.iter().find(|r| image.broker(**r).is_none()) {
        return invalid(format!(
            "Broker {unknown} in the target replicas of partition {partition} is not registered."
        ));
    }
    Ok(())
}

/// When `isr`, a new ISR the partition's leader asked for, holds every target replica of the
/// reassignment in progress: the record that completes it with that ISR.
pub(crate) fn completion(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    current: &PartitionRegistration,
    isr: &[i32],
) -> Option<MetadataRecord> {
    let target = current.target_replicas();
    if !current.is_reassigning() || !target.iter().all(|r| isr.contains(r)) {
        return None;
    }
    replicas_change(
        image,
        topic_id,
        partition,
        current,
        target,
        &current.original_replicas(),
        isr,
    )
    .ok()
    .flatten()
}

/// The record that moves the partition from `original` toward `target` with what is left of
/// `isr`: replicas are the target ones followed by the ones it removes, and when every target
/// replica is in sync the reassignment is complete and only they remain. The leader stays when
/// it is still in the ISR; otherwise the first alive in-sync replica in target order leads.
/// `None` when nothing would change.
fn replicas_change(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    current: &PartitionRegistration,
    target: Vec<i32>,
    original: &[i32],
    isr: &[i32],
) -> Result<Option<MetadataRecord>, ControllerError> {
    let adding: Vec<i32> = target
        .iter()
        .copied()
        .filter(|r| !original.contains(r))
        .collect();
    let mut removing: Vec<i32> = original
        .iter()
        .copied()
        .filter(|r| !target.contains(r))
        .collect();
    let complete = target.iter().all(|r| isr.contains(r));
    let (replicas, adding) = if complete {
        removing.clear();
        (target, Vec::new())
    } else {
        let mut replicas = target;
        replicas.extend(&removing);
        (replicas, adding)
    };
    let isr: Vec<i32> = isr
        .iter()
        .copied()
        .filter(|r| replicas.contains(r))
        .collect();
    if isr.is_empty() {
        return Err(ControllerError::InvalidReplicaAssignment(format!(
            "Moving partition {partition} to replicas {replicas:?} would leave none of its in-sync replicas {:?}; only an unclean election could follow.",
            current.isr
        )));
    }
    let leader = match current.leader {
        Some(leader) if isr.contains(&leader) => LeaderChange::Unchanged,
        _ => replicas
            .iter()
            .copied()
            .find(|r| isr.contains(r) && image.broker(*r).is_some_and(|b| !b.fenced))
            .map_or(LeaderChange::Offline, LeaderChange::Elect),
    };
    let leader = match leader {
        LeaderChange::Offline if current.leader.is_none() => LeaderChange::Unchanged,
        other => other,
    };
    if leader == LeaderChange::Unchanged
        && replicas == current.replicas
        && adding == current.adding_replicas
        && removing == current.removing_replicas
        && isr == current.isr
    {
        return Ok(None);
    }
    Ok(Some(MetadataRecord::ChangePartitionReplicas {
        topic_id,
        partition,
        replicas,
        adding_replicas: adding,
        removing_replicas: removing,
        isr,
        leader,
    }))
}

/// Reassignments that raise the replication factor of `__consumer_offsets` to
/// `OFFSETS_TOPIC_REPLICATION_FACTOR`, or to the unfenced brokers when there are fewer, for its
/// partitions that have fewer replicas and no reassignment in progress. The added replicas go
/// to the unfenced brokers with the fewest replicas.
pub fn grow_offsets_topic_records(image: &MetadataImage) -> Vec<MetadataRecord> {
    let Some(topic) = image.topic_by_name(OFFSETS_TOPIC) else {
        return Vec::new();
    };
    let topic_id = topic.topic_id;
    let unfenced: Vec<i32> = image
        .brokers()
        .filter(|b| !b.fenced)
        .map(|b| b.id)
        .collect();
    let wanted = OFFSETS_TOPIC_REPLICATION_FACTOR.min(unfenced.len());
    let mut load: BTreeMap<i32, usize> = unfenced.iter().map(|&b| (b, 0)).collect();
    for (_, _, reg) in image.partitions() {
        for replica in &reg.replicas {
            if let Some(count) = load.get_mut(replica) {
                *count += 1;
            }
        }
    }
    let mut records = Vec::new();
    for (partition, reg) in image.partitions_of(topic_id) {
        if reg.is_reassigning() || reg.replicas.len() >= wanted {
            continue;
        }
        let mut target = reg.replicas.clone();
        while target.len() < wanted {
            let Some(pick) = load
                .iter()
                .filter(|(b, _)| !target.contains(b))
                .min_by_key(|(b, count)| (**count, **b))
                .map(|(b, _)| *b)
            else {
                break;
            };
            target.push(pick);
            *load.entry(pick).or_default() += 1;
        }
        if let Ok(Some(record)) = replicas_change(
            image,
            topic_id,
            partition,
            reg,
            target,
            &reg.replicas,
            &reg.isr,
        ) {
            records.push(record);
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::fence_broker_records;
    use crate::request::{decide, ControllerRequest};

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        let next = image.offset().map_or(0, |o| o + 1);
        image.apply_batch(next, records).unwrap();
    }

    /// Unfenced brokers 1..=`count` and topic "t" with one partition on `replicas`.
    fn cluster(count: i32, replicas: &[i32]) -> MetadataImage {
        let mut image = MetadataImage::new();
        for id in 1..=count {
            apply(
                &mut image,
                &[
                    MetadataRecord::RegisterBroker {
                        id,
                        endpoints: vec![format!("b{id}:9092")],
                        rack: None,
                        incarnation: Uuid::from_u128(id as u128),
                    },
                    MetadataRecord::UnfenceBroker { id },
                ],
            );
        }
        let create = ControllerRequest::CreateTopic {
            name: "t".into(),
            topic_id: TOPIC,
            partitions: -1,
            replication_factor: -1,
            configs: BTreeMap::new(),
            assignments: Some(vec![replicas.to_vec()]),
        };
        let records = decide(&image, &create).unwrap();
        apply(&mut image, &records);
        image
    }

    fn reassign(image: &mut MetadataImage, target: Option<&[i32]>) -> Result<(), i16> {
        let request = ControllerRequest::ReassignPartition {
            topic_id: TOPIC,
            partition: 0,
            replicas: target.map(<[i32]>::to_vec),
            allow_replication_factor_change: true,
        };
        let records = decide(image, &request).map_err(|e| e.kafka_error_code())?;
        apply(image, &records);
        Ok(())
    }

    /// The partition's leader asks for `isr`.
    fn alter_isr(image: &mut MetadataImage, isr: &[i32]) -> Result<(), i16> {
        let p = image.partition(TOPIC, 0).unwrap();
        let request = ControllerRequest::AlterPartition {
            topic_id: TOPIC,
            partition: 0,
            broker: p.leader.unwrap(),
            leader_epoch: p.leader_epoch,
            partition_epoch: p.partition_epoch,
            isr: isr.to_vec(),
        };
        let records = decide(image, &request).map_err(|e| e.kafka_error_code())?;
        apply(image, &records);
        Ok(())
    }

    /// Replicas, adding, removing, ISR and leader.
    type State = (Vec<i32>, Vec<i32>, Vec<i32>, Vec<i32>, Option<i32>);

    fn state(image: &MetadataImage) -> State {
        let p = image.partition(TOPIC, 0).unwrap();
        (
            p.replicas.clone(),
            p.adding_replicas.clone(),
            p.removing_replicas.clone(),
            p.isr.clone(),
            p.leader,
        )
    }

    #[test]
    fn a_move_adds_the_new_replicas_and_drops_the_old_once_they_are_in_sync() {
        let mut image = cluster(4, &[1, 2]);
        reassign(&mut image, Some(&[3, 4])).unwrap();
        assert_eq!(
            state(&image),
            (
                vec![3, 4, 1, 2],
                vec![3, 4],
                vec![1, 2],
                vec![1, 2],
                Some(1)
            )
        );
        // One new replica in sync is not enough: the old ones stay.
        alter_isr(&mut image, &[1, 2, 3]).unwrap();
        assert_eq!(
            state(&image),
            (
                vec![3, 4, 1, 2],
                vec![3, 4],
                vec![1, 2],
                vec![1, 2, 3],
                Some(1)
            )
        );
        let epoch = image.partition(TOPIC, 0).unwrap().leader_epoch;
        alter_isr(&mut image, &[1, 2, 3, 4]).unwrap();
        // The leader was removed: the first target replica in sync leads, at a new epoch.
        assert_eq!(
            state(&image),
            (vec![3, 4], vec![], vec![], vec![3, 4], Some(3))
        );
        assert_eq!(image.partition(TOPIC, 0).unwrap().leader_epoch, epoch + 1);
    }

    #[test]
    fn growing_the_replication_factor_keeps_the_leader() {
        let mut image = cluster(3, &[2]);
        reassign(&mut image, Some(&[2, 1, 3])).unwrap();
        assert_eq!(
            state(&image),
            (vec![2, 1, 3], vec![1, 3], vec![], vec![2], Some(2))
        );
        alter_isr(&mut image, &[2, 1]).unwrap();
        alter_isr(&mut image, &[2, 1, 3]).unwrap();
        assert_eq!(
            state(&image),
            (vec![2, 1, 3], vec![], vec![], vec![2, 1, 3], Some(2))
        );
    }

    #[test]
    fn a_target_already_in_sync_completes_at_once() {
        let mut image = cluster(3, &[1, 2, 3]);
        reassign(&mut image, Some(&[3, 2])).unwrap();
        assert_eq!(
            state(&image),
            (vec![3, 2], vec![], vec![], vec![2, 3], Some(3))
        );
        // The same replicas again change nothing.
        let before = image.partition(TOPIC, 0).unwrap().partition_epoch;
        reassign(&mut image, Some(&[3, 2])).unwrap();
        assert_eq!(image.partition(TOPIC, 0).unwrap().partition_epoch, before);
    }

    #[test]
    fn cancelling_returns_to_the_original_replicas() {
        let mut image = cluster(4, &[1, 2]);
        reassign(&mut image, Some(&[3, 4])).unwrap();
        alter_isr(&mut image, &[1, 2, 3]).unwrap();
        reassign(&mut image, None).unwrap();
        assert_eq!(
            state(&image),
            (vec![1, 2], vec![], vec![], vec![1, 2], Some(1))
        );
        assert_eq!(reassign(&mut image, None), Err(85));
    }

    #[test]
    fn a_new_target_replaces_the_reassignment_in_progress() {
        let mut image = cluster(4, &[1, 2]);
        reassign(&mut image, Some(&[3, 4])).unwrap();
        reassign(&mut image, Some(&[1, 4])).unwrap();
        assert_eq!(
            state(&image),
            (vec![1, 4, 2], vec![4], vec![2], vec![1, 2], Some(1))
        );
    }

    #[test]
    fn a_reassignment_never_leaves_no_in_sync_replica() {
        let mut image = cluster(4, &[1, 2]);
        reassign(&mut image, Some(&[3, 4])).unwrap();
        alter_isr(&mut image, &[1, 2, 3]).unwrap();
        // Brokers 1 and 2 die: 3 leads alone, and the move still waits for 4.
        for id in [1, 2] {
            let fence = fence_broker_records(&image, id);
            apply(&mut image, &fence);
        }
        assert_eq!(state(&image).3, vec![3]);
        assert_eq!(state(&image).4, Some(3));
        // Cancelling would go back to 1 and 2, neither in sync.
        assert_eq!(reassign(&mut image, None), Err(39));
        alter_isr(&mut image, &[3, 4]).unwrap();
        assert_eq!(
            state(&image),
            (vec![3, 4], vec![], vec![], vec![3, 4], Some(3))
        );
    }

    #[test]
    fn bad_targets_are_refused_with_kafkas_errors() {
        let mut image = cluster(3, &[1, 2]);
        assert_eq!(reassign(&mut image, Some(&[])), Err(39));
        assert_eq!(reassign(&mut image, Some(&[1, 1])), Err(39));
        assert_eq!(reassign(&mut image, Some(&[1, 9])), Err(39));
        let fixed_factor = ControllerRequest::ReassignPartition {
            topic_id: TOPIC,
            partition: 0,
            replicas: Some(vec![1, 2, 3]),
            allow_replication_factor_change: false,
        };
        assert_eq!(
            decide(&image, &fixed_factor)
                .unwrap_err()
                .kafka_error_code(),
            38
        );
        let unknown = ControllerRequest::ReassignPartition {
            topic_id: TOPIC,
            partition: 5,
            replicas: Some(vec![1]),
            allow_replication_factor_change: true,
        };
        assert_eq!(decide(&image, &unknown).unwrap_err().kafka_error_code(), 3);
    }

    #[test]
    fn the_offsets_topic_grows_to_three_replicas_on_the_least_loaded_brokers() {
        let mut image = cluster(1, &[1]);
        let create = ControllerRequest::CreateTopic {
            name: OFFSETS_TOPIC.into(),
            topic_id: Uuid::from_u128(8),
            partitions: 3,
            replication_factor: 1,
            configs: BTreeMap::new(),
            assignments: None,
        };
        let records = decide(&image, &create).unwrap();
        apply(&mut image, &records);
        assert!(grow_offsets_topic_records(&image).is_empty());
        for id in [2, 3, 4] {
            apply(
                &mut image,
                &[
                    MetadataRecord::RegisterBroker {
                        id,
                        endpoints: vec![format!("b{id}:9092")],
                        rack: None,
                        incarnation: Uuid::from_u128(id as u128),
                    },
                    MetadataRecord::UnfenceBroker { id },
                ],
            );
        }
        let grow = grow_offsets_topic_records(&image);
        assert_eq!(grow.len(), 3);
        apply(&mut image, &grow);
        let mut load = BTreeMap::new();
        for (_, p) in image.partitions_of(Uuid::from_u128(8)) {
            assert_eq!(p.replicas.len(), 3);
            assert_eq!(p.replicas[0], 1);
            assert_eq!(p.adding_replicas.len(), 2);
            for r in &p.adding_replicas {
                *load.entry(*r).or_insert(0) += 1;
            }
        }
        assert_eq!(load.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        // Partitions being reassigned are left alone.
        assert!(grow_offsets_topic_records(&image).is_empty());
    }
}
