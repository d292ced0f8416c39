//! Arbitrary records, most of them invalid, applied straight to the image: a refused record leaves
//! the image exactly as it was, and the structural invariants `apply` guards hold whatever was
//! accepted.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use skiff_metadata::{BatchError, LeaderChange, MetadataImage, MetadataRecord};
use uuid::Uuid;

fn broker_ids() -> impl Strategy<Value = Vec<i32>> {
    prop::collection::vec(0..4i32, 0..4)
}

fn record() -> impl Strategy<Value = MetadataRecord> {
    let topic_id = (0..3u128).prop_map(Uuid::from_u128);
    let leader = prop_oneof![
        Just(LeaderChange::Unchanged),
        Just(LeaderChange::Offline),
        (0..4i32).prop_map(LeaderChange::Elect),
    ];
    prop_oneof![
        (0..4i32).prop_map(|id| MetadataRecord::RegisterBroker {
            id,
            endpoints: vec![format!("broker-{id}:9092")],
            rack: None,
            incarnation: Uuid::from_u128(id as u128),
        }),
        (0..4i32).prop_map(|id| MetadataRecord::FenceBroker { id }),
        (0..4i32).prop_map(|id| MetadataRecord::UnfenceBroker { id }),
        (0..4i32).prop_map(|id| MetadataRecord::UnregisterBroker { id }),
        ("[ab]?", topic_id.clone()).prop_map(|(name, topic_id)| MetadataRecord::CreateTopic {
            name,
            topic_id,
            configs: BTreeMap::new(),
        }),
        (
            topic_id.clone(),
            -1..3i32,
            broker_ids(),
            broker_ids(),
            prop::option::of(0..4i32)
        )
            .prop_map(|(topic_id, partition, replicas, isr, leader)| {
                MetadataRecord::CreatePartition {
                    topic_id,
                    partition,
                    replicas,
                    isr,
                    leader,
                    leader_epoch: 0,
                    partition_epoch: 0,
                    adding_replicas: Vec::new(),
                    removing_replicas: Vec::new(),
                }
            }),
        (
            topic_id.clone(),
            0..3i32,
            leader,
            prop::option::of(broker_ids())
        )
            .prop_map(|(topic_id, partition, leader, isr)| {
                MetadataRecord::ChangePartition {
                    topic_id,
                    partition,
                    leader,
                    isr,
                }
            }),
        topic_id
            .clone()
            .prop_map(|topic_id| MetadataRecord::DeleteTopic { topic_id }),
        (topic_id, prop::option::of("[xy]")).prop_map(|(topic_id, value)| {
            MetadataRecord::SetTopicConfig {
                topic_id,
                name: "cleanup.policy".into(),
                value,
            }
        }),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn refused_records_change_nothing_and_accepted_ones_keep_partitions_valid(
        records in prop::collection::vec(record(), 1..80),
    ) {
        let mut image = MetadataImage::new();
        for (offset, record) in (0..).zip(&records) {
            let before = image.clone();
            match image.apply(offset, record) {
                Err(_) => prop_assert_eq!(&image, &before),
                Ok(()) => prop_assert_eq!(image.offset(), Some(offset)),
            }
            for (topic_id, partition, p) in image.partitions() {
                prop_assert!(image.topic(topic_id).is_some());
                let replicas: BTreeSet<_> = p.replicas.iter().collect();
                prop_assert_eq!(replicas.len(), p.replicas.len());
                prop_assert!(p.replicas.iter().all(|&r| image.broker(r).is_some()));
                prop_assert!(!p.isr.is_empty());
                prop_assert!(p.isr.iter().all(|r| replicas.contains(r)));
                prop_assert!(p.leader.is_none_or(|l| p.isr.contains(&l)));
                if let Some(old) = before.partition(topic_id, partition) {
                    prop_assert!(p.leader_epoch >= old.leader_epoch);
                    prop_assert!(p.partition_epoch >= old.partition_epoch);
                }
            }
            for topic in image.topics() {
                prop_assert_eq!(
                    image.topic_by_name(&topic.name).map(|t| t.topic_id),
                    Some(topic.topic_id)
                );
            }
        }
    }
}

/// The image rebuilt from its snapshot records, at the same offset so that whole images compare.
fn rebuilt(image: &MetadataImage) -> Result<MetadataImage, TestCaseError> {
    let mut rebuilt = MetadataImage::new();
    match image.offset() {
        Some(offset) => rebuilt
            .apply_batch(offset, &image.to_records())
            .map_err(|e| TestCaseError::fail(format!("snapshot refused: {e}")))?,
        None => prop_assert!(image.to_records().is_empty()),
    }
    Ok(rebuilt)
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn snapshot_records_rebuild_every_image(records in prop::collection::vec(record(), 1..80)) {
        let mut image = MetadataImage::new();
        for (offset, record) in (0..).zip(&records) {
            // Refused records are part of the random history too; they just change nothing.
            if image.apply(offset, record).is_ok() {
                prop_assert_eq!(&rebuilt(&image)?, &image);
            }
        }
    }

    #[test]
    fn batches_apply_like_their_records_in_order_or_not_at_all(
        batches in prop::collection::vec(prop::collection::vec(record(), 0..6), 1..30),
    ) {
        let mut image = MetadataImage::new();
        for (batch_number, batch) in (1u64..).zip(&batches) {
            let offset = batch_number * 100;
            let mut one_by_one = image.clone();
            let sequential = (offset - 99..).zip(batch).enumerate().try_for_each(
                |(index, (record_offset, record))| {
                    one_by_one
                        .apply(record_offset, record)
                        .map_err(|error| BatchError { index, error })
                },
            );
            let before = image.clone();
            match image.apply_batch(offset, batch) {
                Ok(()) => {
                    prop_assert_eq!(sequential, Ok(()));
                    prop_assert_eq!(image.offset(), Some(offset));
                    prop_assert_eq!(image.to_records(), one_by_one.to_records());
                }
                Err(error) => {
                    prop_assert_eq!(sequential, Err(error));
                    prop_assert_eq!(&image, &before);
                }
            }
        }
    }
}
