//! The controller's decisions. Each is a pure function of the image that returns the records to
//! append; the caller commits them to the metadata log and applies them like any other broker.

use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;
use uuid::Uuid;

use crate::image::{MetadataImage, PartitionRegistration};
use crate::record::{LeaderChange, MetadataRecord};
use crate::topic_rules::MAX_PARTITIONS_PER_TOPIC;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum PlacementError {
    /// Kafka's INVALID_REPLICATION_FACTOR.
    #[error("replication factor {requested} must be between 1 and the {live} unfenced brokers")]
    InvalidReplicationFactor { requested: i16, live: usize },
    /// Kafka's INVALID_PARTITIONS.
    #[error("partition count {0} must be between 1 and {MAX_PARTITIONS_PER_TOPIC}")]
    InvalidPartitions(i32),
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum CreateTopicError {
    /// Kafka's INVALID_TOPIC_EXCEPTION.
    #[error("topic name must not be empty")]
    InvalidTopicName,
    /// Kafka's TOPIC_ALREADY_EXISTS.
    #[error("topic {0:?} already exists")]
    TopicAlreadyExists(String),
    #[error("topic id {0} is already in use")]
    TopicIdInUse(Uuid),
    #[error(transparent)]
    Placement(#[from] PlacementError),
}

/// Assigns replicas for `partitions` new partitions over the unfenced brokers; the first replica
/// of each list is its preferred leader.
///
/// Each replica goes to the least-loaded broker (counting this call's assignments) whose rack is
/// not yet used by the partition, when such a broker exists; so with at least `replication_factor`
/// racks no two replicas share a rack, and without racks replica counts differ by at most one.
/// Leaders go to the replica leading the fewest of this call's partitions. Ties go to broker-id
/// order rotated by the number of partitions already in the cluster, so that consecutive topics
/// do not all put their extra replica and leader on the lowest broker id.
pub fn place_replicas(
    image: &MetadataImage,
    partitions: i32,
    replication_factor: i16,
) -> Result<Vec<Vec<i32>>, PlacementError> {
    if !(1..=MAX_PARTITIONS_PER_TOPIC).contains(&partitions) {
        return Err(PlacementError::InvalidPartitions(partitions));
    }
    let live: Vec<(i32, RackKey)> = image
        .brokers()
        .filter(|b| !b.fenced)
        .map(|b| {
            let rack = match &b.rack {
                Some(rack) => RackKey::Named(rack.clone()),
                // A broker without a rack is its own failure domain.
                None => RackKey::Broker(b.id),
            };
            (b.id, rack)
        })
        .collect();
    let rf = usize::try_from(replication_factor).unwrap_or(0);
    if rf < 1 || rf > live.len() {
        return Err(PlacementError::InvalidReplicationFactor {
            requested: replication_factor,
            live: live.len(),
        });
    }
    let start = image.partitions().count() % live.len();
    let tie_break = |index: usize| (index + live.len() - start) % live.len();
    let mut replica_load = vec![0usize; live.len()];
    let mut leader_load = vec![0usize; live.len()];
    let no_candidate = || PlacementError::InvalidReplicationFactor {
        requested: replication_factor,
        live: live.len(),
    };
    let mut assignments = Vec::with_capacity(partitions as usize);
    for _ in 0..partitions {
        let mut chosen: Vec<usize> = Vec::with_capacity(rf);
        let mut used_racks: BTreeSet<&RackKey> = BTreeSet::new();
        for _ in 0..rf {
            let unchosen = || (0..live.len()).filter(|i| !chosen.contains(i));
            let has_fresh_rack = unchosen().any(|i| !used_racks.contains(&live[i].1));
            let pick = unchosen()
                .filter(|i| !has_fresh_rack || !used_racks.contains(&live[*i].1))
                .min_by_key(|&i| (replica_load[i], tie_break(i)))
                .ok_or_else(no_candidate)?;
            chosen.push(pick);
            used_racks.insert(&live[pick].1);
        }
        let leader_pos = (0..chosen.len())
            .min_by_key(|&pos| (leader_load[chosen[pos]], tie_break(chosen[pos])))
            .ok_or_else(no_candidate)?;
        chosen.swap(0, leader_pos);
        for &i in &chosen {
            replica_load[i] += 1;
        }
        leader_load[chosen[0]] += 1;
        assignments.push(chosen.iter().map(|&i| live[i].0).collect());
    }
    Ok(assignments)
}

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
enum RackKey {
    Named(String),
    Broker(i32),
}

/// The records that create a topic: `CreateTopic`, then one `CreatePartition` per partition with
/// every replica in the ISR and the first replica leading at epoch 0.
pub fn create_topic_records(
    image: &MetadataImage,
    name: &str,
    topic_id: Uuid,
    partitions: i32,
    replication_factor: i16,
    configs: BTreeMap<String, String>,
) -> Result<Vec<MetadataRecord>, CreateTopicError> {
    if name.is_empty() {
        return Err(CreateTopicError::InvalidTopicName);
    }
    if image.topic_by_name(name).is_some() {
        return Err(CreateTopicError::TopicAlreadyExists(name.to_owned()));
    }
    if image.topic(topic_id).is_some() {
        return Err(CreateTopicError::TopicIdInUse(topic_id));
    }
    let assignments = place_replicas(image, partitions, replication_factor)?;
    let mut records = vec![MetadataRecord::CreateTopic {
        name: name.to_owned(),
        topic_id,
        configs,
    }];
    records.extend(placed_partitions(topic_id, 0, assignments));
    Ok(records)
}

/// `CreatePartition` records for placed replica lists, numbered from `first`: every replica in
/// the ISR and the first one leading at epoch 0.
pub(crate) fn placed_partitions(
    topic_id: Uuid,
    first: i32,
    assignments: Vec<Vec<i32>>,
) -> impl Iterator<Item = MetadataRecord> {
    (first..).zip(assignments).map(
        move |(partition, replicas)| MetadataRecord::CreatePartition {
            topic_id,
            partition,
            leader: replicas.first().copied(),
            isr: replicas.clone(),
            replicas,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        },
    )
}

/// The records that fence a broker declared failed: `FenceBroker`, then for every ISR it is in a
/// `ChangePartition` that removes it and, where it led, elects the first alive in-sync replica in
/// replica order. With no such replica the partition goes offline and keeps the fenced broker as
/// its only ISR member: electing an out-of-sync replica would lose acknowledged writes. A topic
/// with `unclean.leader.election.enable` takes that loss: its first alive replica leads, alone
/// in the ISR. Unknown or already fenced brokers need no records.
pub fn fence_broker_records(image: &MetadataImage, broker_id: i32) -> Vec<MetadataRecord> {
    if image.broker(broker_id).is_none_or(|b| b.fenced) {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::FenceBroker { id: broker_id }];
    for (topic_id, partition, reg) in image.partitions() {
        if !reg.isr.contains(&broker_id) {
            continue;
        }
        let others: Vec<i32> = reg
            .isr
            .iter()
            .copied()
            .filter(|&r| r != broker_id)
            .collect();
        let isr = if others.is_empty() {
            None
        } else {
            Some(others.clone())
        };
        let leader = if reg.leader == Some(broker_id) {
            match first_alive_in_sync(image, reg, &others) {
                Some(new_leader) => LeaderChange::Elect(new_leader),
                None => match unclean_candidate(image, topic_id, reg, broker_id) {
                    Some(replica) => {
                        records.push(elect_alone(topic_id, partition, reg, replica));
                        continue;
                    }
                    None => LeaderChange::Offline,
                },
            }
        } else {
            LeaderChange::Unchanged
        };
        if leader == LeaderChange::Unchanged && isr.is_none() {
            continue;
        }
        records.push(MetadataRecord::ChangePartition {
            topic_id,
            partition,
            leader,
            isr,
        });
    }
    records
}

/// The record of an unclean election: `leader` leads as the only in-sync replica. When that
/// puts every target replica of a reassignment in progress in sync (the target is `leader`
/// alone), the same record completes the reassignment, as an ISR change would.
pub(crate) fn elect_alone(
    topic_id: Uuid,
    partition: i32,
    reg: &PartitionRegistration,
    leader: i32,
) -> MetadataRecord {
    if reg.is_reassigning() && reg.target_replicas() == [leader] {
        MetadataRecord::ChangePartitionReplicas {
            topic_id,
            partition,
            replicas: vec![leader],
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
            isr: vec![leader],
            leader: LeaderChange::Elect(leader),
        }
    } else {
        MetadataRecord::ChangePartition {
            topic_id,
            partition,
            leader: LeaderChange::Elect(leader),
            isr: Some(vec![leader]),
        }
    }
}

/// With `unclean.leader.election.enable` on the topic: the first alive replica other than
/// `except`, which may lead out of sync when no in-sync replica can.
fn unclean_candidate(
    image: &MetadataImage,
    topic_id: Uuid,
    reg: &PartitionRegistration,
    except: i32,
) -> Option<i32> {
    if !allows_unclean_election(image, topic_id) {
        return None;
    }
    reg.replicas
        .iter()
        .copied()
        .find(|&r| r != except && image.broker(r).is_some_and(|b| !b.fenced))
}

/// Kafka's topic config `unclean.leader.election.enable`: an out-of-sync replica may lead,
/// losing what it lacks, rather than the partition staying offline.
fn allows_unclean_election(image: &MetadataImage, topic_id: Uuid) -> bool {
    image
        .topic(topic_id)
        .and_then(|t| t.configs.get("unclean.leader.election.enable"))
        .is_some_and(|v| v == "true")
}

fn first_alive_in_sync(
    image: &MetadataImage,
    reg: &PartitionRegistration,
    candidates: &[i32],
) -> Option<i32> {
    reg.replicas
        .iter()
        .copied()
        .find(|r| candidates.contains(r) && image.broker(*r).is_some_and(|b| !b.fenced))
}

/// The records that unfence a broker: `UnfenceBroker`, then leadership for every offline partition
/// whose ISR holds it, or whose replicas hold it when the topic allows unclean elections (it
/// becomes the only in-sync replica). It is not added back to other ISRs here; catching up is
/// replication's job. Unknown or already unfenced brokers need no records.
pub fn unfence_broker_records(image: &MetadataImage, broker_id: i32) -> Vec<MetadataRecord> {
    if image.broker(broker_id).is_none_or(|b| !b.fenced) {
        return Vec::new();
    }
    let mut records = vec![MetadataRecord::UnfenceBroker { id: broker_id }];
    records.extend(
        image
            .partitions()
            .filter(|(_, _, reg)| reg.leader.is_none() && reg.replicas.contains(&broker_id))
            .filter_map(|(topic_id, partition, reg)| {
                if reg.isr.contains(&broker_id) {
                    Some(MetadataRecord::ChangePartition {
                        topic_id,
                        partition,
                        leader: LeaderChange::Elect(broker_id),
                        isr: None,
                    })
                } else if allows_unclean_election(image, topic_id) {
                    Some(elect_alone(topic_id, partition, reg, broker_id))
                } else {
                    None
                }
            }),
    );
    records
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn apply_all(image: &mut MetadataImage, records: &[MetadataRecord]) {
        for record in records {
            let next = image.offset().map_or(0, |o| o + 1);
            image.apply(next, record).unwrap();
        }
    }

    /// Unfenced brokers with the given ids and racks.
    fn brokers(racks: &[(i32, Option<&str>)]) -> MetadataImage {
        let mut image = MetadataImage::new();
        for &(id, rack) in racks {
            apply_all(
                &mut image,
                &[MetadataRecord::RegisterBroker {
                    id,
                    endpoints: vec![format!("b{id}:9092")],
                    rack: rack.map(str::to_owned),
                    incarnation: Uuid::from_u128(id as u128),
                }],
            );
            let unfence = unfence_broker_records(&image, id);
            apply_all(&mut image, &unfence);
        }
        image
    }

    fn with_topic(mut image: MetadataImage, partitions: i32, rf: i16) -> MetadataImage {
        let records =
            create_topic_records(&image, "t", TOPIC, partitions, rf, BTreeMap::new()).unwrap();
        apply_all(&mut image, &records);
        image
    }

    #[test]
    fn replication_factor_must_fit_the_unfenced_brokers() {
        let mut image = brokers(&[(1, None), (2, None), (3, None)]);
        assert_eq!(
            place_replicas(&image, 1, 4),
            Err(PlacementError::InvalidReplicationFactor {
                requested: 4,
                live: 3
            })
        );
        assert_eq!(
            place_replicas(&image, 1, 0),
            Err(PlacementError::InvalidReplicationFactor {
                requested: 0,
                live: 3
            })
        );
        assert_eq!(
            place_replicas(&image, 0, 1),
            Err(PlacementError::InvalidPartitions(0))
        );
        let fence = fence_broker_records(&image, 3);
        apply_all(&mut image, &fence);
        assert!(place_replicas(&image, 1, 3).is_err());
        assert!(place_replicas(&image, 1, 2).unwrap()[0]
            .iter()
            .all(|&b| b != 3));
    }

    #[test]
    fn placement_spreads_replicas_and_leaders_evenly() {
        let image = brokers(&[(1, None), (2, None), (3, None)]);
        let assignments = place_replicas(&image, 6, 2).unwrap();
        let mut replicas = BTreeMap::new();
        let mut leaders = BTreeMap::new();
        for replicas_of_partition in &assignments {
            *leaders.entry(replicas_of_partition[0]).or_insert(0) += 1;
            for &b in replicas_of_partition {
                *replicas.entry(b).or_insert(0) += 1;
            }
        }
        assert_eq!(
            replicas.values().copied().collect::<Vec<_>>(),
            vec![4, 4, 4]
        );
        assert_eq!(leaders.values().copied().collect::<Vec<_>>(), vec![2, 2, 2]);
        assert_eq!(place_replicas(&image, 6, 2).unwrap(), assignments);
    }

    #[test]
    fn placement_start_rotates_with_existing_partitions() {
        let image = brokers(&[(1, None), (2, None), (3, None)]);
        assert_eq!(place_replicas(&image, 1, 1).unwrap(), vec![vec![1]]);
        let image = with_topic(image, 1, 1);
        assert_eq!(place_replicas(&image, 1, 1).unwrap(), vec![vec![2]]);
    }

    #[test]
    fn placement_puts_replicas_on_distinct_racks() {
        let image = brokers(&[
            (1, Some("a")),
            (2, Some("a")),
            (3, Some("a")),
            (4, Some("b")),
            (5, Some("c")),
        ]);
        for replicas in place_replicas(&image, 10, 3).unwrap() {
            let racks: BTreeSet<_> = replicas
                .iter()
                .map(|&b| image.broker(b).unwrap().rack.clone())
                .collect();
            assert_eq!(racks.len(), 3, "{replicas:?}");
        }
    }

    #[test]
    fn create_topic_records_create_the_topic_and_its_partitions() {
        let image = with_topic(brokers(&[(1, None), (2, None), (3, None)]), 3, 3);
        assert_eq!(image.topic_by_name("t").unwrap().topic_id, TOPIC);
        for partition in 0..3 {
            let p = image.partition(TOPIC, partition).unwrap();
            assert_eq!(p.isr, p.replicas);
            assert_eq!(p.leader, Some(p.replicas[0]));
            assert_eq!((p.leader_epoch, p.partition_epoch), (0, 0));
        }
    }

    #[test]
    fn create_topic_records_refuse_bad_requests() {
        let image = with_topic(brokers(&[(1, None)]), 1, 1);
        let create = |name: &str, id: u128, rf: i16| {
            create_topic_records(&image, name, Uuid::from_u128(id), 1, rf, BTreeMap::new())
        };
        assert_eq!(create("", 8, 1), Err(CreateTopicError::InvalidTopicName));
        assert_eq!(
            create("t", 8, 1),
            Err(CreateTopicError::TopicAlreadyExists("t".into()))
        );
        assert_eq!(
            create("u", 7, 1),
            Err(CreateTopicError::TopicIdInUse(TOPIC))
        );
        assert!(matches!(
            create("u", 8, 2),
            Err(CreateTopicError::Placement(_))
        ));
    }

    #[test]
    fn fencing_a_leader_elects_the_next_alive_in_sync_replica() {
        let mut image = with_topic(brokers(&[(1, None), (2, None), (3, None)]), 1, 3);
        let leader = image.partition(TOPIC, 0).unwrap().leader.unwrap();
        let replicas = image.partition(TOPIC, 0).unwrap().replicas.clone();
        let records = fence_broker_records(&image, leader);
        assert_eq!(records[0], MetadataRecord::FenceBroker { id: leader });
        apply_all(&mut image, &records);
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(p.leader, Some(replicas[1]));
        assert_eq!(p.isr, replicas[1..].to_vec());
        assert_eq!((p.leader_epoch, p.partition_epoch), (1, 1));
    }

    #[test]
    fn fencing_a_follower_only_shrinks_the_isr() {
        let mut image = with_topic(brokers(&[(1, None), (2, None)]), 1, 2);
        let p = image.partition(TOPIC, 0).unwrap().clone();
        let follower = p.replicas[1];
        let records = fence_broker_records(&image, follower);
        apply_all(&mut image, &records);
        let after = image.partition(TOPIC, 0).unwrap();
        assert_eq!(after.leader, p.leader);
        assert_eq!(after.isr, vec![p.replicas[0]]);
        assert_eq!((after.leader_epoch, after.partition_epoch), (0, 1));
    }

    #[test]
    fn last_in_sync_replica_fenced_takes_partition_offline_and_back() {
        let mut image = with_topic(brokers(&[(1, None), (2, None)]), 1, 2);
        let replicas = image.partition(TOPIC, 0).unwrap().replicas.clone();
        let fence_first = fence_broker_records(&image, replicas[0]);
        apply_all(&mut image, &fence_first);
        let fence_second = fence_broker_records(&image, replicas[1]);
        apply_all(&mut image, &fence_second);
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(p.leader, None);
        assert_eq!(p.isr, vec![replicas[1]]);

        // The out-of-sync replica coming back must not lead: that would be an unclean election.
        let unfence_out_of_sync = unfence_broker_records(&image, replicas[0]);
        assert_eq!(unfence_out_of_sync.len(), 1);
        apply_all(&mut image, &unfence_out_of_sync);
        assert_eq!(image.partition(TOPIC, 0).unwrap().leader, None);

        let unfence_in_sync = unfence_broker_records(&image, replicas[1]);
        apply_all(&mut image, &unfence_in_sync);
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(p.leader, Some(replicas[1]));
        assert_eq!(p.leader_epoch, 3);
    }

    #[test]
    fn a_topic_allowing_unclean_elections_stays_online_on_an_out_of_sync_replica() {
        let mut image = brokers(&[(1, None), (2, None), (3, None)]);
        let configs = BTreeMap::from([(
            "unclean.leader.election.enable".to_string(),
            "true".to_string(),
        )]);
        let records = create_topic_records(&image, "t", TOPIC, 1, 2, configs).unwrap();
        apply_all(&mut image, &records);
        let replicas = image.partition(TOPIC, 0).unwrap().replicas.clone();
        // The follower is fenced first, so only the leader is in sync when it dies too.
        let fence_follower = fence_broker_records(&image, replicas[1]);
        apply_all(&mut image, &fence_follower);
        let unfence_follower = unfence_broker_records(&image, replicas[1]);
        apply_all(&mut image, &unfence_follower);
        let fence_leader = fence_broker_records(&image, replicas[0]);
        apply_all(&mut image, &fence_leader);
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (Some(replicas[1]), vec![replicas[1]])
        );

        // Both down, then the one that was out of sync returns first: it leads.
        let fence = fence_broker_records(&image, replicas[1]);
        apply_all(&mut image, &fence);
        let unfence = unfence_broker_records(&image, replicas[0]);
        apply_all(&mut image, &unfence);
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (Some(replicas[0]), vec![replicas[0]])
        );
    }

    #[test]
    fn fencing_or_unfencing_twice_or_unknown_brokers_needs_no_records() {
        let mut image = brokers(&[(1, None)]);
        assert!(unfence_broker_records(&image, 1).is_empty());
        assert!(fence_broker_records(&image, 9).is_empty());
        assert!(unfence_broker_records(&image, 9).is_empty());
        let fence = fence_broker_records(&image, 1);
        apply_all(&mut image, &fence);
        assert!(fence_broker_records(&image, 1).is_empty());
    }
}
