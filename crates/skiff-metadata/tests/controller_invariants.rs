//! Random cluster histories driven only through the controller's decisions: whatever the order of
//! registrations, fencings, unfencings, topic creations and deletions, partition reassignments
//! and replicas catching up, the controller's records apply cleanly and the image keeps the
//! invariants brokers and clients rely on.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use skiff_metadata::{
    create_topic_records, decide, fence_broker_records, preferred_leader_records,
    unfence_broker_records, ControllerRequest, CreateTopicError, ElectionType, MetadataImage,
    MetadataRecord, PlacementError,
};
use uuid::Uuid;

#[derive(Debug, Clone)]
enum Op {
    Register(i32),
    Fence(i32),
    Unfence(i32),
    Unregister(i32),
    CreateTopic {
        partitions: i32,
        rf: i16,
        /// With `unclean.leader.election.enable`.
        unclean: bool,
    },
    DeleteTopic(usize),
    /// Reassigns the picked partition to `target`, or cancels its reassignment when `None`.
    Reassign {
        pick: usize,
        target: Option<Vec<i32>>,
    },
    /// The picked partition's leader has every unfenced replica caught up and asks for them
    /// in the ISR.
    CatchUp(usize),
    /// An operator's ElectLeaders for the picked partition.
    Elect {
        pick: usize,
        unclean: bool,
    },
    /// The controller's periodic return of leaderships to preferred replicas.
    Rebalance,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        3 => (0..6i32).prop_map(Op::Register),
        2 => (0..6i32).prop_map(Op::Fence),
        2 => (0..6i32).prop_map(Op::Unfence),
        1 => (0..6i32).prop_map(Op::Unregister),
        3 => (1..7i32, 1..4i16, any::<bool>())
            .prop_map(|(partitions, rf, unclean)| Op::CreateTopic { partitions, rf, unclean }),
        1 => any::<usize>().prop_map(Op::DeleteTopic),
        2 => (
            any::<usize>(),
            prop::option::weighted(0.8, prop::collection::vec(0..6i32, 0..4))
        )
            .prop_map(|(pick, target)| Op::Reassign { pick, target }),
        2 => any::<usize>().prop_map(Op::CatchUp),
        1 => (any::<usize>(), any::<bool>()).prop_map(|(pick, unclean)| Op::Elect { pick, unclean }),
        1 => Just(Op::Rebalance),
    ]
}

struct Cluster {
    image: MetadataImage,
    /// `None`: brokers have no rack; `Some(k)`: broker `id` is on rack `id % k`.
    rack_count: Option<i32>,
    topics_created: u128,
}

impl Cluster {
    fn apply(&mut self, records: &[MetadataRecord]) {
        for record in records {
            let next = self.image.offset().map_or(0, |o| o + 1);
            self.image
                .apply(next, record)
                .unwrap_or_else(|e| panic!("controller record {record:?} refused: {e}"));
        }
    }

    fn live_brokers(&self) -> Vec<i32> {
        self.image
            .brokers()
            .filter(|b| !b.fenced)
            .map(|b| b.id)
            .collect()
    }

    fn run(&mut self, op: &Op) -> Result<(), TestCaseError> {
        match *op {
            Op::Register(id) => {
                let record = MetadataRecord::RegisterBroker {
                    id,
                    endpoints: vec![format!("broker-{id}:9092")],
                    rack: self.rack_count.map(|k| format!("rack-{}", id % k)),
                    incarnation: Uuid::from_u128(self.image.offset().map_or(0, |o| o + 1).into()),
                };
                let next = self.image.offset().map_or(0, |o| o + 1);
                let already_live = self.image.broker(id).is_some_and(|b| !b.fenced);
                prop_assert_eq!(self.image.apply(next, &record).is_err(), already_live);
            }
            Op::Fence(id) => {
                let records = fence_broker_records(&self.image, id);
                self.apply(&records);
            }
            Op::Unfence(id) => {
                let records = unfence_broker_records(&self.image, id);
                self.apply(&records);
            }
            Op::Unregister(id) => {
                let hosts_replicas = self
                    .image
                    .partitions()
                    .any(|(_, _, p)| p.replicas.contains(&id));
                let allowed = self.image.broker(id).is_some() && !hosts_replicas;
                let next = self.image.offset().map_or(0, |o| o + 1);
                let result = self
                    .image
                    .apply(next, &MetadataRecord::UnregisterBroker { id });
                prop_assert_eq!(result.is_ok(), allowed);
            }
            Op::CreateTopic {
                partitions,
                rf,
                unclean,
            } => self.create_topic(partitions, rf, unclean)?,
            Op::Reassign { pick, ref target } => {
                let Some((topic_id, partition)) = self.pick_partition(pick) else {
                    return Ok(());
                };
                let request = ControllerRequest::ReassignPartition {
                    topic_id,
                    partition,
                    replicas: target.clone(),
                    allow_replication_factor_change: true,
                };
                // Refusals are fine (bad targets, nothing to cancel); records must apply.
                if let Ok(records) = decide(&self.image, &request) {
                    self.apply(&records);
                }
            }
            Op::Elect { pick, unclean } => {
                let Some((topic_id, partition)) = self.pick_partition(pick) else {
                    return Ok(());
                };
                let election = if unclean {
                    ElectionType::Unclean
                } else {
                    ElectionType::Preferred
                };
                let request = ControllerRequest::ElectLeader {
                    topic_id,
                    partition,
                    election,
                };
                if let Ok(records) = decide(&self.image, &request) {
                    self.apply(&records);
                }
            }
            Op::Rebalance => {
                let records = preferred_leader_records(&self.image, 10);
                self.apply(&records);
            }
            Op::CatchUp(pick) => {
                let Some((topic_id, partition)) = self.pick_partition(pick) else {
                    return Ok(());
                };
                let p = self.image.partition(topic_id, partition).unwrap().clone();
                let Some(leader) = p.leader else {
                    return Ok(());
                };
                let mut isr = p.isr.clone();
                isr.extend(p.replicas.iter().filter(|r| {
                    !p.isr.contains(r) && self.image.broker(**r).is_some_and(|b| !b.fenced)
                }));
                let request = ControllerRequest::AlterPartition {
                    topic_id,
                    partition,
                    broker: leader,
                    leader_epoch: p.leader_epoch,
                    partition_epoch: p.partition_epoch,
                    isr,
                };
                let records = decide(&self.image, &request)
                    .map_err(|e| TestCaseError::fail(format!("{request:?} refused: {e}")))?;
                self.apply(&records);
            }
            Op::DeleteTopic(pick) => {
                let ids: Vec<Uuid> = self.image.topics().map(|t| t.topic_id).collect();
                if !ids.is_empty() {
                    self.apply(&[MetadataRecord::DeleteTopic {
                        topic_id: ids[pick % ids.len()],
                    }]);
                }
            }
        }
        Ok(())
    }

    fn pick_partition(&self, pick: usize) -> Option<(Uuid, i32)> {
        let all: Vec<(Uuid, i32)> = self.image.partitions().map(|(t, p, _)| (t, p)).collect();
        (!all.is_empty()).then(|| all[pick % all.len()])
    }

    fn create_topic(
        &mut self,
        partitions: i32,
        rf: i16,
        unclean: bool,
    ) -> Result<(), TestCaseError> {
        self.topics_created += 1;
        let topic_id = Uuid::from_u128(self.topics_created);
        let live = self.live_brokers();
        let result = create_topic_records(
            &self.image,
            &format!("topic-{}", self.topics_created),
            topic_id,
            partitions,
            rf,
            BTreeMap::from_iter(unclean.then(|| {
                (
                    "unclean.leader.election.enable".to_string(),
                    "true".to_string(),
                )
            })),
        );
        if rf as usize > live.len() {
            prop_assert_eq!(
                result,
                Err(CreateTopicError::Placement(
                    PlacementError::InvalidReplicationFactor {
                        requested: rf,
                        live: live.len(),
                    }
                ))
            );
            return Ok(());
        }
        self.apply(&result.expect("enough live brokers"));

        let mut replica_counts: BTreeMap<i32, usize> = live.iter().map(|&b| (b, 0)).collect();
        let mut leader_counts = replica_counts.clone();
        let live_racks: BTreeSet<Option<String>> = live
            .iter()
            .map(|&b| self.image.broker(b).unwrap().rack.clone())
            .collect();
        for partition in 0..partitions {
            let p = self.image.partition(topic_id, partition).unwrap();
            prop_assert_eq!(p.replicas.len(), rf as usize);
            *leader_counts.get_mut(&p.leader.unwrap()).unwrap() += 1;
            for replica in &p.replicas {
                *replica_counts
                    .get_mut(replica)
                    .expect("replicas only on unfenced brokers") += 1;
            }
            if self.rack_count.is_some() && live_racks.len() >= rf as usize {
                let racks: BTreeSet<_> = p
                    .replicas
                    .iter()
                    .map(|&b| self.image.broker(b).unwrap().rack.clone())
                    .collect();
                prop_assert_eq!(racks.len(), p.replicas.len(), "replicas share a rack");
            }
        }
        if self.rack_count.is_none() {
            prop_assert!(
                spread(&replica_counts) <= 1,
                "replicas {:?}",
                replica_counts
            );
            prop_assert!(spread(&leader_counts) <= 1, "leaders {:?}", leader_counts);
        }
        Ok(())
    }
}

fn spread(counts: &BTreeMap<i32, usize>) -> usize {
    counts.values().max().unwrap_or(&0) - counts.values().min().unwrap_or(&0)
}

fn check_invariants(image: &MetadataImage, before: &MetadataImage) -> Result<(), TestCaseError> {
    for (topic_id, partition, p) in image.partitions() {
        let distinct: BTreeSet<_> = p.replicas.iter().collect();
        prop_assert!(!p.replicas.is_empty() && distinct.len() == p.replicas.len());
        prop_assert!(p.replicas.iter().all(|&r| image.broker(r).is_some()));
        let isr: BTreeSet<_> = p.isr.iter().collect();
        prop_assert!(!p.isr.is_empty() && isr.len() == p.isr.len());
        prop_assert!(
            isr.is_subset(&distinct),
            "ISR {:?} not in {:?}",
            p.isr,
            p.replicas
        );
        let fenced = |b: i32| image.broker(b).unwrap().fenced;
        match p.leader {
            Some(leader) => {
                prop_assert!(p.isr.contains(&leader));
                prop_assert!(!fenced(leader), "fenced leader {}", leader);
            }
            // Offline only when no in-sync replica could lead.
            None => prop_assert!(p.isr.iter().all(|&r| fenced(r)), "offline with live ISR"),
        }
        // A fenced broker stays in an ISR only as its last member, so it can lead again.
        if p.isr.iter().any(|&r| fenced(r)) {
            prop_assert!(p.isr.len() == 1 && p.leader.is_none(), "{:?}", p);
        }
        let within = |ids: &[i32]| ids.iter().all(|r| distinct.contains(r));
        prop_assert!(within(&p.adding_replicas) && within(&p.removing_replicas));
        prop_assert!(!p
            .adding_replicas
            .iter()
            .any(|r| p.removing_replicas.contains(r)));
        // A reassignment whose target replicas are all in sync has completed.
        if p.is_reassigning() {
            prop_assert!(
                !p.target_replicas().iter().all(|r| p.isr.contains(r)),
                "{:?}",
                p
            );
        }
        if let Some(old) = before.partition(topic_id, partition) {
            prop_assert!(p.leader_epoch >= old.leader_epoch);
            prop_assert!(p.partition_epoch >= old.partition_epoch);
        }
    }
    Ok(())
}

/// The snapshot records rebuild the image, racks and fencing included.
fn check_snapshot(image: &MetadataImage) -> Result<(), TestCaseError> {
    if let Some(offset) = image.offset() {
        let mut rebuilt = MetadataImage::new();
        rebuilt
            .apply_batch(offset, &image.to_records())
            .map_err(|e| TestCaseError::fail(format!("snapshot refused: {e}")))?;
        prop_assert_eq!(&rebuilt, image);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn controller_records_keep_the_image_consistent(
        rack_count in prop_oneof![Just(None), (1..4i32).prop_map(Some)],
        ops in prop::collection::vec(op(), 1..60),
    ) {
        let mut cluster = Cluster { image: MetadataImage::new(), rack_count, topics_created: 0 };
        for op in &ops {
            let before = cluster.image.clone();
            cluster.run(op)?;
            check_invariants(&cluster.image, &before)?;
            check_snapshot(&cluster.image)?;
        }
    }
}
