//! Leader elections asked for by operators (Kafka's ElectLeaders) and the controller's own
//! return of leadership to preferred replicas (Kafka's `auto.leader.rebalance.enable`). The
//! preferred replica is the first of a partition's replicas, which placement spreads evenly,
//! so leading there spreads leaderships again after brokers restarted.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::controller::elect_alone;
use crate::image::{MetadataImage, PartitionRegistration};
use crate::record::{LeaderChange, MetadataRecord};
use crate::request::ControllerError;

/// Kafka's election types (ElectLeaders' `election_type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ElectionType {
    /// The first replica, when it is alive and in sync.
    Preferred,
    /// For an offline partition: an alive replica even out of sync, which loses the records it
    /// lacks. Kafka's last resort, for when availability matters more.
    Unclean,
}

/// Kafka's default `leader.imbalance.per.broker.percentage`.
pub const LEADER_IMBALANCE_PER_BROKER_PERCENTAGE: u32 = 10;

fn is_alive(image: &MetadataImage, broker: i32) -> bool {
    image.broker(broker).is_some_and(|b| !b.fenced)
}

/// Whether the partition's preferred replica could lead it now: alive and in sync, and no
/// reassignment is about to change which replica is preferred.
fn preferred_can_lead(image: &MetadataImage, reg: &PartitionRegistration) -> Option<i32> {
    let preferred = *reg.replicas.first()?;
    (!reg.is_reassigning() && reg.isr.contains(&preferred) && is_alive(image, preferred))
        .then_some(preferred)
}

pub(crate) fn elect_leader(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    election: ElectionType,
) -> Result<Vec<MetadataRecord>, ControllerError> {
    let reg = image.partition(topic_id, partition).ok_or_else(|| {
        ControllerError::UnknownTopicOrPartition(format!(
            "Unknown partition {partition} of topic id {topic_id}."
        ))
    })?;
    match election {
        ElectionType::Preferred => {
            let preferred = reg.replicas.first().copied();
            if reg.leader.is_some() && reg.leader == preferred {
                return Err(ControllerError::ElectionNotNeeded(format!(
                    "Partition {partition} is already led by its preferred replica."
                )));
            }
            let Some(preferred) = preferred_can_lead(image, reg) else {
                return Err(ControllerError::PreferredLeaderNotAvailable(format!(
                    "The preferred replica {preferred:?} of partition {partition} is not alive and in sync, or a reassignment is in progress."
                )));
            };
            Ok(vec![MetadataRecord::ChangePartition {
                topic_id,
                partition,
                leader: LeaderChange::Elect(preferred),
                isr: None,
            }])
        }
        ElectionType::Unclean => {
            if reg.leader.is_some() {
                return Err(ControllerError::ElectionNotNeeded(format!(
                    "Partition {partition} has a leader."
                )));
            }
            unclean_election(image, topic_id, partition, reg)
                .map(|record| vec![record])
                .ok_or_else(|| {
                    ControllerError::EligibleLeadersNotAvailable(format!(
                        "No replica {:?} of partition {partition} is alive.",
                        reg.replicas
                    ))
                })
        }
    }
}

/// For an offline partition: the record that makes its first alive replica the leader and
/// only in-sync replica. Records only that replica has survive; the others' are lost.
fn unclean_election(
    image: &MetadataImage,
    topic_id: Uuid,
    partition: i32,
    reg: &PartitionRegistration,
) -> Option<MetadataRecord> {
    let leader = reg.replicas.iter().copied().find(|&r| is_alive(image, r))?;
    Some(elect_alone(topic_id, partition, reg, leader))
}

/// Kafka's automatic rebalance: for every broker whose share of partitions it prefers but does
/// not lead is above `imbalance_percentage`, the records that give it back those it can lead
/// (alive, in sync, no reassignment in progress).
pub fn preferred_leader_records(
    image: &MetadataImage,
    imbalance_percentage: u32,
) -> Vec<MetadataRecord> {
    // Per preferred broker: its partitions, and those led elsewhere.
    let mut preferred: BTreeMap<i32, (usize, Vec<(Uuid, i32)>)> = BTreeMap::new();
    for (topic_id, partition, reg) in image.partitions() {
        let Some(&first) = reg.replicas.first() else {
            continue;
        };
        let entry = preferred.entry(first).or_default();
        entry.0 += 1;
        if reg.leader != Some(first) {
            entry.1.push((topic_id, partition));
        }
    }
    let mut records = Vec::new();
    for (broker, (total, not_led)) in preferred {
        if not_led.is_empty()
            || (not_led.len() as u64) * 100 <= u64::from(imbalance_percentage) * total as u64
        {
            continue;
        }
        for (topic_id, partition) in not_led {
            let Some(reg) = image.partition(topic_id, partition) else {
                continue;
            };
            if preferred_can_lead(image, reg) == Some(broker) {
                records.push(MetadataRecord::ChangePartition {
                    topic_id,
                    partition,
                    leader: LeaderChange::Elect(broker),
                    isr: None,
                });
            }
        }
    }
    records
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;
    use crate::controller::{fence_broker_records, unfence_broker_records};
    use crate::request::{decide, ControllerRequest};

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn apply(image: &mut MetadataImage, records: &[MetadataRecord]) {
        let next = image.offset().map_or(0, |o| o + 1);
        image.apply_batch(next, records).unwrap();
    }

    /// Unfenced brokers 1..=3 and topic "t" with `partitions` partitions of 3 replicas.
    fn cluster(partitions: i32) -> MetadataImage {
        let mut image = MetadataImage::new();
        for id in 1..=3 {
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
            partitions,
            replication_factor: 3,
            configs: BTreeMap::new(),
            assignments: None,
        };
        let records = decide(&image, &create).unwrap();
        apply(&mut image, &records);
        image
    }

    fn elect(image: &MetadataImage, partition: i32, election: ElectionType) -> Result<(), i16> {
        let request = ControllerRequest::ElectLeader {
            topic_id: TOPIC,
            partition,
            election,
        };
        decide(image, &request)
            .map(|_| ())
            .map_err(|e| e.kafka_error_code())
    }

    fn preferred_of(image: &MetadataImage, partition: i32) -> i32 {
        image.partition(TOPIC, partition).unwrap().replicas[0]
    }

    /// Fences and unfences `broker`: it returns out of every ISR, and back in through the
    /// leader's AlterPartition.
    fn restart(image: &mut MetadataImage, broker: i32) {
        let fence = fence_broker_records(image, broker);
        apply(image, &fence);
        let unfence = unfence_broker_records(image, broker);
        apply(image, &unfence);
    }

    fn rejoin_isr(image: &mut MetadataImage, broker: i32) {
        let partitions: Vec<i32> = image.partitions_of(TOPIC).map(|(p, _)| p).collect();
        for partition in partitions {
            let p = image.partition(TOPIC, partition).unwrap().clone();
            let mut isr = p.isr.clone();
            isr.push(broker);
            let request = ControllerRequest::AlterPartition {
                topic_id: TOPIC,
                partition,
                broker: p.leader.unwrap(),
                leader_epoch: p.leader_epoch,
                partition_epoch: p.partition_epoch,
                isr,
            };
            let records = decide(image, &request).unwrap();
            apply(image, &records);
        }
    }

    #[test]
    fn preferred_election_waits_for_the_preferred_replica_to_be_in_sync() {
        let mut image = cluster(1);
        assert_eq!(elect(&image, 0, ElectionType::Preferred), Err(84));
        let preferred = preferred_of(&image, 0);
        restart(&mut image, preferred);
        assert_ne!(image.partition(TOPIC, 0).unwrap().leader, Some(preferred));
        assert_eq!(elect(&image, 0, ElectionType::Preferred), Err(80));
        rejoin_isr(&mut image, preferred);
        let records = decide(
            &image,
            &ControllerRequest::ElectLeader {
                topic_id: TOPIC,
                partition: 0,
                election: ElectionType::Preferred,
            },
        )
        .unwrap();
        apply(&mut image, &records);
        assert_eq!(image.partition(TOPIC, 0).unwrap().leader, Some(preferred));
        assert_eq!(elect(&image, 9, ElectionType::Preferred), Err(3));
    }

    #[test]
    fn the_rebalance_returns_leaderships_to_a_restarted_broker_once_in_sync() {
        let mut image = cluster(6);
        assert!(preferred_leader_records(&image, 10).is_empty());
        restart(&mut image, 1);
        // Out of sync: nothing moves yet.
        assert!(preferred_leader_records(&image, 10).is_empty());
        rejoin_isr(&mut image, 1);
        let records = preferred_leader_records(&image, 10);
        assert_eq!(records.len(), 2);
        apply(&mut image, &records);
        for (partition, p) in image.partitions_of(TOPIC) {
            assert_eq!(p.leader, Some(preferred_of(&image, partition)));
        }
        assert!(preferred_leader_records(&image, 10).is_empty());
    }

    #[test]
    fn an_imbalance_within_the_percentage_is_left_alone() {
        let mut image = cluster(6);
        restart(&mut image, 1);
        rejoin_isr(&mut image, 1);
        // Broker 1 prefers 2 partitions and leads neither: 100 % > 99 %, but not > 100 %.
        assert_eq!(preferred_leader_records(&image, 99).len(), 2);
        assert!(preferred_leader_records(&image, 100).is_empty());
    }

    #[test]
    fn unclean_election_brings_an_offline_partition_back_on_an_out_of_sync_replica() {
        let mut image = cluster(1);
        assert_eq!(elect(&image, 0, ElectionType::Unclean), Err(84));
        let replicas = image.partition(TOPIC, 0).unwrap().replicas.clone();
        for &r in &replicas {
            let fence = fence_broker_records(&image, r);
            apply(&mut image, &fence);
        }
        assert_eq!(elect(&image, 0, ElectionType::Unclean), Err(83));
        // The first replica, fenced first, is out of sync; it returns alone.
        let unfence = unfence_broker_records(&image, replicas[0]);
        apply(&mut image, &unfence);
        assert_eq!(image.partition(TOPIC, 0).unwrap().leader, None);
        let records = decide(
            &image,
            &ControllerRequest::ElectLeader {
                topic_id: TOPIC,
                partition: 0,
                election: ElectionType::Unclean,
            },
        )
        .unwrap();
        apply(&mut image, &records);
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(
            (p.leader, p.isr.clone()),
            (Some(replicas[0]), vec![replicas[0]])
        );
    }
}
