use std::collections::{BTreeMap, BTreeSet};

use thiserror::Error;
use uuid::Uuid;

use crate::record::{LeaderChange, MetadataRecord};
use crate::topic_config::{validate_known_topic_config, validate_known_topic_configs, ConfigError};
use crate::topic_rules::{validate_topic_name, MAX_PARTITIONS_PER_TOPIC};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BrokerRegistration {
    pub id: i32,
    pub endpoints: Vec<String>,
    pub rack: Option<String>,
    pub incarnation: Uuid,
    pub fenced: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicImage {
    pub name: String,
    pub topic_id: Uuid,
    pub configs: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionRegistration {
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
    /// `None` is Kafka's leader -1: the partition is offline.
    pub leader: Option<i32>,
    pub leader_epoch: i32,
    pub partition_epoch: i32,
    /// During a reassignment, the replicas it adds (not yet in the ISR, or not long); empty
    /// otherwise.
    pub adding_replicas: Vec<i32>,
    /// During a reassignment, the replicas it removes once every target replica is in sync.
    pub removing_replicas: Vec<i32>,
}

impl PartitionRegistration {
    pub fn is_reassigning(&self) -> bool {
        !self.adding_replicas.is_empty() || !self.removing_replicas.is_empty()
    }

    /// The replicas the partition has once its reassignment completes (all of them when none
    /// is in progress), in preference order.
    pub fn target_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.removing_replicas.contains(r))
            .collect()
    }

    /// The replicas the partition had before its reassignment started: what cancelling it
    /// returns to.
    pub fn original_replicas(&self) -> Vec<i32> {
        self.replicas
            .iter()
            .copied()
            .filter(|r| !self.adding_replicas.contains(r))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ImageError {
    #[error("producer id block {start}+{len} overlaps ids already handed out (next free: {next})")]
    InvalidProducerIdBlock { start: i64, len: i64, next: i64 },
    #[error("record offset {offset} is not after the last applied offset {last}")]
    OffsetNotIncreasing { offset: u64, last: u64 },
    #[error("unknown broker {0}")]
    UnknownBroker(i32),
    #[error("broker {0} is registered and unfenced; it must be fenced before it re-registers")]
    BrokerAlreadyRegistered(i32),
    #[error("broker {0} still hosts replicas")]
    BrokerHasReplicas(i32),
    #[error("topic name must not be empty")]
    EmptyTopicName,
    #[error("topic {0:?} already exists")]
    DuplicateTopicName(String),
    #[error("topic id {0} already exists")]
    DuplicateTopicId(Uuid),
    #[error("unknown topic id {0}")]
    UnknownTopicId(Uuid),
    #[error("partition {partition} of topic {topic_id} already exists")]
    PartitionExists { topic_id: Uuid, partition: i32 },
    #[error("unknown partition {partition} of topic {topic_id}")]
    UnknownPartition { topic_id: Uuid, partition: i32 },
    #[error("{0}")]
    InvalidTopicName(String),
    #[error("topic config refused: {0}")]
    InvalidConfig(ConfigError),
    #[error("invalid partition {partition} of topic {topic_id}: {reason}")]
    InvalidPartition {
        topic_id: Uuid,
        partition: i32,
        reason: &'static str,
    },
}

/// Why a batch was refused: which record, and what was wrong with it.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("record {index} of the batch was refused: {error}")]
pub struct BatchError {
    pub index: usize,
    pub error: ImageError,
}

/// The cluster state as of the last applied metadata record.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct MetadataImage {
    offset: Option<u64>,
    brokers: BTreeMap<i32, BrokerRegistration>,
    topics: BTreeMap<Uuid, TopicImage>,
    topic_ids_by_name: BTreeMap<String, Uuid>,
    partitions: BTreeMap<(Uuid, i32), PartitionRegistration>,
    /// The first producer id no block has handed out yet.
    next_producer_id: i64,
    /// Each broker's latest producer id block, `(start, len)`.
    producer_id_blocks: BTreeMap<i32, (i64, i64)>,
}

impl MetadataImage {
    pub fn new() -> Self {
        Self::default()
    }

    /// The latest block of producer ids handed to `broker`, as `(start, len)`.
    pub fn producer_id_block(&self, broker: i32) -> Option<(i64, i64)> {
        self.producer_id_blocks.get(&broker).copied()
    }

    pub fn next_producer_id(&self) -> i64 {
        self.next_producer_id
    }

    /// Offset of the last applied record; `None` for an empty image.
    pub fn offset(&self) -> Option<u64> {
        self.offset
    }

    pub fn broker(&self, id: i32) -> Option<&BrokerRegistration> {
        self.brokers.get(&id)
    }

    pub fn brokers(&self) -> impl Iterator<Item = &BrokerRegistration> {
        self.brokers.values()
    }

    pub fn topic(&self, topic_id: Uuid) -> Option<&TopicImage> {
        self.topics.get(&topic_id)
    }

    pub fn topic_by_name(&self, name: &str) -> Option<&TopicImage> {
        self.topic_ids_by_name
            .get(name)
            .and_then(|id| self.topics.get(id))
    }

    pub fn topics(&self) -> impl Iterator<Item = &TopicImage> {
        self.topics.values()
    }

    pub fn partition(&self, topic_id: Uuid, partition: i32) -> Option<&PartitionRegistration> {
        self.partitions.get(&(topic_id, partition))
    }

    /// Every partition as `(topic_id, partition index, registration)`, ordered by topic id then index.
    pub fn partitions(&self) -> impl Iterator<Item = (Uuid, i32, &PartitionRegistration)> {
        self.partitions.iter().map(|(&(t, p), reg)| (t, p, reg))
    }

    /// Partitions of one topic as `(partition index, registration)`, ordered by index; empty for
    /// an unknown topic.
    pub fn partitions_of(
        &self,
        topic_id: Uuid,
    ) -> impl Iterator<Item = (i32, &PartitionRegistration)> {
        self.partitions
            .range((topic_id, i32::MIN)..=(topic_id, i32::MAX))
            .map(|(&(_, partition), reg)| (partition, reg))
    }

    /// How many partitions the topic has; 0 for an unknown topic. The controller numbers them
    /// from 0 without gaps, so this is also the index the next new partition gets.
    pub fn partition_count(&self, topic_id: Uuid) -> i32 {
        i32::try_from(self.partitions_of(topic_id).count()).unwrap_or(i32::MAX)
    }

    /// Applies one record. Everything is validated before anything is changed, so on error the
    /// image (offset included) is exactly what it was.
    pub fn apply(&mut self, offset: u64, record: &MetadataRecord) -> Result<(), ImageError> {
        self.check_offset(offset)?;
        self.apply_record(record)?;
        self.offset = Some(offset);
        Ok(())
    }

    /// Applies the records of one log entry as a unit at `offset`: each record sees the effects
    /// of the ones before it (a `CreateTopic` then its `CreatePartition`s), and on error the image
    /// is exactly what it was, so a half-applied entry can never be observed. An empty batch
    /// only moves the offset. An offset that does not increase is reported at index 0.
    pub fn apply_batch(
        &mut self,
        offset: u64,
        records: &[MetadataRecord],
    ) -> Result<(), BatchError> {
        *self = self.with_batch(offset, records)?;
        Ok(())
    }

    /// The image after `records` applied as one entry at `offset`, leaving this one as it is:
    /// for holders of a shared image, which must copy it anyway.
    pub fn with_batch(
        &self,
        offset: u64,
        records: &[MetadataRecord],
    ) -> Result<MetadataImage, BatchError> {
        self.check_offset(offset)
            .map_err(|error| BatchError { index: 0, error })?;
        let mut next = self.clone();
        next.apply_unversioned(records)?;
        next.offset = Some(offset);
        Ok(next)
    }

    /// Applies records in order without touching the offset, for callers that work on a scratch
    /// copy. On error the records before the failing one stay applied.
    pub(crate) fn apply_unversioned(
        &mut self,
        records: &[MetadataRecord],
    ) -> Result<(), BatchError> {
        for (index, record) in records.iter().enumerate() {
            self.apply_record(record)
                .map_err(|error| BatchError { index, error })?;
        }
        Ok(())
    }

    /// Records that rebuild this image when applied in order to an empty one (at any offset), so
    /// they serve as the Raft snapshot of the metadata log. Brokers come first because
    /// partitions refer to them. A bare `FenceBroker` can leave a fenced broker leading a
    /// partition, and `CreatePartition` refuses a fenced leader, so such brokers are unfenced
    /// while their partitions are created and fenced again after.
    pub fn to_records(&self) -> Vec<MetadataRecord> {
        let fenced_leaders: BTreeSet<i32> = self
            .partitions
            .values()
            .filter_map(|p| p.leader)
            .filter(|leader| self.brokers.get(leader).is_some_and(|b| b.fenced))
            .collect();
        let mut records = Vec::new();
        for broker in self.brokers.values() {
            records.push(MetadataRecord::RegisterBroker {
                id: broker.id,
                endpoints: broker.endpoints.clone(),
                rack: broker.rack.clone(),
                incarnation: broker.incarnation,
            });
            if !broker.fenced || fenced_leaders.contains(&broker.id) {
                records.push(MetadataRecord::UnfenceBroker { id: broker.id });
            }
        }
        records.extend(
            self.topics
                .values()
                .map(|topic| MetadataRecord::CreateTopic {
                    name: topic.name.clone(),
                    topic_id: topic.topic_id,
                    configs: topic.configs.clone(),
                }),
        );
        records.extend(self.partitions.iter().map(|(&(topic_id, partition), reg)| {
            MetadataRecord::CreatePartition {
                topic_id,
                partition,
                replicas: reg.replicas.clone(),
                isr: reg.isr.clone(),
                leader: reg.leader,
                leader_epoch: reg.leader_epoch,
                partition_epoch: reg.partition_epoch,
                adding_replicas: reg.adding_replicas.clone(),
                removing_replicas: reg.removing_replicas.clone(),
            }
        }));
        records.extend(
            fenced_leaders
                .into_iter()
                .map(|id| MetadataRecord::FenceBroker { id }),
        );
        let mut blocks: Vec<(i32, (i64, i64))> = self
            .producer_id_blocks
            .iter()
            .map(|(b, block)| (*b, *block))
            .collect();
        blocks.sort_by_key(|(_, (start, _))| *start);
        records.extend(
            blocks
                .into_iter()
                .map(
                    |(broker, (block_start, block_len))| MetadataRecord::AllocateProducerIds {
                        broker,
                        block_start,
                        block_len,
                    },
                ),
        );
        records
    }

    fn check_offset(&self, offset: u64) -> Result<(), ImageError> {
        match self.offset {
            Some(last) if offset <= last => Err(ImageError::OffsetNotIncreasing { offset, last }),
            _ => Ok(()),
        }
    }

    /// Validates one record against the image and applies it; the offset is the caller's.
    /// Everything is validated before anything is changed.
    fn apply_record(&mut self, record: &MetadataRecord) -> Result<(), ImageError> {
        match record {
            MetadataRecord::RegisterBroker {
                id,
                endpoints,
                rack,
                incarnation,
            } => {
                if self.brokers.get(id).is_some_and(|b| !b.fenced) {
                    return Err(ImageError::BrokerAlreadyRegistered(*id));
                }
                self.brokers.insert(
                    *id,
                    BrokerRegistration {
                        id: *id,
                        endpoints: endpoints.clone(),
                        rack: rack.clone(),
                        incarnation: *incarnation,
                        fenced: true,
                    },
                );
            }
            MetadataRecord::FenceBroker { id } => self.known_broker_mut(*id)?.fenced = true,
            MetadataRecord::UnfenceBroker { id } => self.known_broker_mut(*id)?.fenced = false,
            MetadataRecord::UnregisterBroker { id } => {
                self.known_broker_mut(*id)?;
                if self.partitions.values().any(|p| p.replicas.contains(id)) {
                    return Err(ImageError::BrokerHasReplicas(*id));
                }
                self.brokers.remove(id);
            }
            MetadataRecord::CreateTopic {
                name,
                topic_id,
                configs,
            } => {
                if name.is_empty() {
                    return Err(ImageError::EmptyTopicName);
                }
                validate_topic_name(name).map_err(ImageError::InvalidTopicName)?;
                if self.topic_ids_by_name.contains_key(name) {
                    return Err(ImageError::DuplicateTopicName(name.clone()));
                }
                if self.topics.contains_key(topic_id) {
                    return Err(ImageError::DuplicateTopicId(*topic_id));
                }
                validate_known_topic_configs(configs).map_err(ImageError::InvalidConfig)?;
                self.topic_ids_by_name.insert(name.clone(), *topic_id);
                self.topics.insert(
                    *topic_id,
                    TopicImage {
                        name: name.clone(),
                        topic_id: *topic_id,
                        configs: configs.clone(),
                    },
                );
            }
            MetadataRecord::CreatePartition {
                topic_id,
                partition,
                replicas,
                isr,
                leader,
                leader_epoch,
                partition_epoch,
                adding_replicas,
                removing_replicas,
            } => {
                let invalid = |reason| ImageError::InvalidPartition {
                    topic_id: *topic_id,
                    partition: *partition,
                    reason,
                };
                self.known_topic(*topic_id)?;
                if !(0..MAX_PARTITIONS_PER_TOPIC).contains(partition) {
                    return Err(invalid(
                        "its index is beyond the partitions a topic may have",
                    ));
                }
                if self.partitions.contains_key(&(*topic_id, *partition)) {
                    return Err(ImageError::PartitionExists {
                        topic_id: *topic_id,
                        partition: *partition,
                    });
                }
                if *partition < 0 {
                    return Err(invalid("negative partition index"));
                }
                if *leader_epoch < 0 || *partition_epoch < 0 {
                    return Err(invalid("negative epoch"));
                }
                if replicas.is_empty() || !all_distinct(replicas) {
                    return Err(invalid("replicas must be non-empty and distinct"));
                }
                if let Some(unknown) = replicas.iter().find(|r| !self.brokers.contains_key(r)) {
                    return Err(ImageError::UnknownBroker(*unknown));
                }
                check_reassignment(replicas, adding_replicas, removing_replicas)
                    .map_err(invalid)?;
                self.check_isr_and_leader(*topic_id, *partition, replicas, isr, *leader)?;
                self.partitions.insert(
                    (*topic_id, *partition),
                    PartitionRegistration {
                        replicas: replicas.clone(),
                        isr: isr.clone(),
                        leader: *leader,
                        leader_epoch: *leader_epoch,
                        partition_epoch: *partition_epoch,
                        adding_replicas: adding_replicas.clone(),
                        removing_replicas: removing_replicas.clone(),
                    },
                );
            }
            MetadataRecord::ChangePartition {
                topic_id,
                partition,
                leader,
                isr,
            } => {
                let current = self.partitions.get(&(*topic_id, *partition)).ok_or(
                    ImageError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    },
                )?;
                let new_isr = isr.as_ref().unwrap_or(&current.isr);
                let new_leader = match leader {
                    LeaderChange::Unchanged => current.leader,
                    LeaderChange::Elect(id) => Some(*id),
                    LeaderChange::Offline => None,
                };
                self.check_isr_and_leader(
                    *topic_id,
                    *partition,
                    &current.replicas,
                    new_isr,
                    new_leader,
                )?;
                let new_isr = new_isr.clone();
                let current = self.partitions.get_mut(&(*topic_id, *partition)).ok_or(
                    ImageError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    },
                )?;
                if new_leader != current.leader {
                    current.leader_epoch += 1;
                }
                current.leader = new_leader;
                current.isr = new_isr;
                current.partition_epoch += 1;
            }
            MetadataRecord::ChangePartitionReplicas {
                topic_id,
                partition,
                replicas,
                adding_replicas,
                removing_replicas,
                isr,
                leader,
            } => {
                let invalid = |reason| ImageError::InvalidPartition {
                    topic_id: *topic_id,
                    partition: *partition,
                    reason,
                };
                let current = self.partitions.get(&(*topic_id, *partition)).ok_or(
                    ImageError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    },
                )?;
                if replicas.is_empty() || !all_distinct(replicas) {
                    return Err(invalid("replicas must be non-empty and distinct"));
                }
                if let Some(unknown) = replicas.iter().find(|r| !self.brokers.contains_key(r)) {
                    return Err(ImageError::UnknownBroker(*unknown));
                }
                check_reassignment(replicas, adding_replicas, removing_replicas)
                    .map_err(invalid)?;
                let new_leader = match leader {
                    LeaderChange::Unchanged => current.leader,
                    LeaderChange::Elect(id) => Some(*id),
                    LeaderChange::Offline => None,
                };
                self.check_isr_and_leader(*topic_id, *partition, replicas, isr, new_leader)?;
                let current = self.partitions.get_mut(&(*topic_id, *partition)).ok_or(
                    ImageError::UnknownPartition {
                        topic_id: *topic_id,
                        partition: *partition,
                    },
                )?;
                if new_leader != current.leader {
                    current.leader_epoch += 1;
                }
                current.leader = new_leader;
                current.replicas = replicas.clone();
                current.adding_replicas = adding_replicas.clone();
                current.removing_replicas = removing_replicas.clone();
                current.isr = isr.clone();
                current.partition_epoch += 1;
            }
            MetadataRecord::AllocateProducerIds {
                broker,
                block_start,
                block_len,
            } => {
                if *block_start < self.next_producer_id
                    || *block_len < 1
                    || block_start.checked_add(*block_len).is_none()
                {
                    return Err(ImageError::InvalidProducerIdBlock {
                        start: *block_start,
                        len: *block_len,
                        next: self.next_producer_id,
                    });
                }
                self.next_producer_id = block_start + block_len;
                self.producer_id_blocks
                    .insert(*broker, (*block_start, *block_len));
            }
            MetadataRecord::DeleteTopic { topic_id } => {
                let name = self.known_topic(*topic_id)?.name.clone();
                self.topics.remove(topic_id);
                self.topic_ids_by_name.remove(&name);
                self.partitions.retain(|(t, _), _| t != topic_id);
            }
            MetadataRecord::SetTopicConfig {
                topic_id,
                name,
                value,
            } => {
                if let Some(value) = value {
                    validate_known_topic_config(name, value).map_err(ImageError::InvalidConfig)?;
                }
                let configs = &mut self
                    .topics
                    .get_mut(topic_id)
                    .ok_or(ImageError::UnknownTopicId(*topic_id))?
                    .configs;
                match value {
                    Some(value) => configs.insert(name.clone(), value.clone()),
                    None => configs.remove(name),
                };
            }
        }
        Ok(())
    }

    fn known_broker_mut(&mut self, id: i32) -> Result<&mut BrokerRegistration, ImageError> {
        self.brokers
            .get_mut(&id)
            .ok_or(ImageError::UnknownBroker(id))
    }

    fn known_topic(&self, topic_id: Uuid) -> Result<&TopicImage, ImageError> {
        self.topics
            .get(&topic_id)
            .ok_or(ImageError::UnknownTopicId(topic_id))
    }

    fn check_isr_and_leader(
        &self,
        topic_id: Uuid,
        partition: i32,
        replicas: &[i32],
        isr: &[i32],
        leader: Option<i32>,
    ) -> Result<(), ImageError> {
        let invalid = |reason| ImageError::InvalidPartition {
            topic_id,
            partition,
            reason,
        };
        // An empty ISR would lose track of which replica may safely lead again.
        if isr.is_empty() || !all_distinct(isr) {
            return Err(invalid("ISR must be non-empty and distinct"));
        }
        if !isr.iter().all(|r| replicas.contains(r)) {
            return Err(invalid("ISR must be a subset of the replicas"));
        }
        if let Some(leader) = leader {
            if !isr.contains(&leader) {
                return Err(invalid("leader must be in the ISR"));
            }
            if self.brokers.get(&leader).is_none_or(|b| b.fenced) {
                return Err(invalid("leader must be a registered, unfenced broker"));
            }
        }
        Ok(())
    }
}

/// A reassignment's adding and removing replicas are distinct replicas, and none is both.
fn check_reassignment(
    replicas: &[i32],
    adding: &[i32],
    removing: &[i32],
) -> Result<(), &'static str> {
    let within = |ids: &[i32]| all_distinct(ids) && ids.iter().all(|r| replicas.contains(r));
    if !within(adding) || !within(removing) || adding.iter().any(|r| removing.contains(r)) {
        return Err("adding and removing replicas must be distinct replicas, none in both");
    }
    if removing.len() == replicas.len() {
        return Err("a reassignment must keep at least one replica");
    }
    Ok(())
}

fn all_distinct(ids: &[i32]) -> bool {
    ids.iter().collect::<BTreeSet<_>>().len() == ids.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    const TOPIC: Uuid = Uuid::from_u128(7);

    fn register(id: i32) -> MetadataRecord {
        MetadataRecord::RegisterBroker {
            id,
            endpoints: vec![format!("127.0.0.1:{}", 9092 + id)],
            rack: None,
            incarnation: Uuid::from_u128(id as u128),
        }
    }

    fn create_partition(partition: i32, replicas: &[i32], leader: Option<i32>) -> MetadataRecord {
        MetadataRecord::CreatePartition {
            topic_id: TOPIC,
            partition,
            replicas: replicas.to_vec(),
            isr: replicas.to_vec(),
            leader,
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        }
    }

    fn change(leader: LeaderChange, isr: Option<&[i32]>) -> MetadataRecord {
        MetadataRecord::ChangePartition {
            topic_id: TOPIC,
            partition: 0,
            leader,
            isr: isr.map(<[i32]>::to_vec),
        }
    }

    /// Brokers 1..=3 unfenced, topic "t" with partition 0 on [1, 2, 3] led by 1; offsets 0..=7.
    fn cluster() -> MetadataImage {
        let mut image = MetadataImage::new();
        let mut records = Vec::new();
        for id in 1..=3 {
            records.push(register(id));
            records.push(MetadataRecord::UnfenceBroker { id });
        }
        records.push(MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: TOPIC,
            configs: BTreeMap::new(),
        });
        records.push(create_partition(0, &[1, 2, 3], Some(1)));
        for (offset, record) in (0..).zip(&records) {
            image.apply(offset, record).unwrap();
        }
        image
    }

    /// Applies a record that must be refused and checks the image did not change.
    fn refused(image: &mut MetadataImage, record: MetadataRecord) -> ImageError {
        let before = image.clone();
        let next = image.offset().map_or(0, |o| o + 1);
        let err = image.apply(next, &record).unwrap_err();
        assert_eq!(*image, before);
        err
    }

    fn applied(image: &mut MetadataImage, record: MetadataRecord) {
        let next = image.offset().map_or(0, |o| o + 1);
        image.apply(next, &record).unwrap();
        assert_eq!(image.offset(), Some(next));
    }

    #[test]
    fn registered_broker_starts_fenced_and_can_be_unfenced_and_fenced() {
        let mut image = MetadataImage::new();
        applied(&mut image, register(1));
        let broker = image.broker(1).unwrap();
        assert!(broker.fenced);
        assert_eq!(broker.endpoints, vec!["127.0.0.1:9093".to_string()]);
        applied(&mut image, MetadataRecord::UnfenceBroker { id: 1 });
        assert!(!image.broker(1).unwrap().fenced);
        applied(&mut image, MetadataRecord::FenceBroker { id: 1 });
        assert!(image.broker(1).unwrap().fenced);
    }

    #[test]
    fn unfenced_broker_cannot_register_again_but_fenced_one_can() {
        let mut image = cluster();
        assert_eq!(
            refused(&mut image, register(1)),
            ImageError::BrokerAlreadyRegistered(1)
        );
        applied(&mut image, MetadataRecord::FenceBroker { id: 1 });
        let restart = MetadataRecord::RegisterBroker {
            id: 1,
            endpoints: vec!["10.0.0.1:9092".into()],
            rack: Some("a".into()),
            incarnation: Uuid::from_u128(99),
        };
        applied(&mut image, restart);
        let broker = image.broker(1).unwrap();
        assert_eq!(broker.incarnation, Uuid::from_u128(99));
        assert_eq!(broker.rack.as_deref(), Some("a"));
        assert!(broker.fenced);
    }

    #[test]
    fn fence_unfence_unregister_unknown_broker_is_refused() {
        let mut image = cluster();
        for record in [
            MetadataRecord::FenceBroker { id: 9 },
            MetadataRecord::UnfenceBroker { id: 9 },
            MetadataRecord::UnregisterBroker { id: 9 },
        ] {
            assert_eq!(refused(&mut image, record), ImageError::UnknownBroker(9));
        }
    }

    #[test]
    fn unregister_is_refused_while_broker_hosts_replicas() {
        let mut image = cluster();
        assert_eq!(
            refused(&mut image, MetadataRecord::UnregisterBroker { id: 2 }),
            ImageError::BrokerHasReplicas(2)
        );
        applied(&mut image, register(4));
        applied(&mut image, MetadataRecord::UnregisterBroker { id: 4 });
        assert!(image.broker(4).is_none());
    }

    #[test]
    fn offsets_must_increase() {
        let mut image = cluster();
        let err = image.apply(7, &register(9)).unwrap_err();
        assert_eq!(err, ImageError::OffsetNotIncreasing { offset: 7, last: 7 });
        assert!(image.broker(9).is_none());
        image.apply(100, &register(9)).unwrap();
        assert_eq!(image.offset(), Some(100));
    }

    #[test]
    fn topics_are_found_by_name_and_id_and_names_and_ids_are_unique() {
        let mut image = cluster();
        assert_eq!(image.topic_by_name("t").unwrap().topic_id, TOPIC);
        assert_eq!(image.topic(TOPIC).unwrap().name, "t");
        let duplicate_name = MetadataRecord::CreateTopic {
            name: "t".into(),
            topic_id: Uuid::from_u128(8),
            configs: BTreeMap::new(),
        };
        assert_eq!(
            refused(&mut image, duplicate_name),
            ImageError::DuplicateTopicName("t".into())
        );
        let duplicate_id = MetadataRecord::CreateTopic {
            name: "u".into(),
            topic_id: TOPIC,
            configs: BTreeMap::new(),
        };
        assert_eq!(
            refused(&mut image, duplicate_id),
            ImageError::DuplicateTopicId(TOPIC)
        );
        let empty = MetadataRecord::CreateTopic {
            name: String::new(),
            topic_id: Uuid::from_u128(8),
            configs: BTreeMap::new(),
        };
        assert_eq!(refused(&mut image, empty), ImageError::EmptyTopicName);
    }

    #[test]
    fn create_partition_is_validated() {
        let mut image = cluster();
        assert_eq!(
            refused(&mut image, create_partition(0, &[1], Some(1))),
            ImageError::PartitionExists {
                topic_id: TOPIC,
                partition: 0
            }
        );
        assert_eq!(
            refused(&mut image, create_partition(1, &[1, 9], Some(1))),
            ImageError::UnknownBroker(9)
        );
        let unknown_topic = MetadataRecord::CreatePartition {
            topic_id: Uuid::from_u128(8),
            partition: 0,
            replicas: vec![1],
            isr: vec![1],
            leader: Some(1),
            leader_epoch: 0,
            partition_epoch: 0,
            adding_replicas: Vec::new(),
            removing_replicas: Vec::new(),
        };
        assert_eq!(
            refused(&mut image, unknown_topic),
            ImageError::UnknownTopicId(Uuid::from_u128(8))
        );
        for bad in [
            create_partition(-1, &[1], Some(1)),
            create_partition(1, &[], None),
            create_partition(1, &[1, 1], Some(1)),
            create_partition(1, &[1, 2], Some(3)),
            MetadataRecord::CreatePartition {
                topic_id: TOPIC,
                partition: 1,
                replicas: vec![1, 2],
                isr: vec![1, 3],
                leader: Some(1),
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            },
            MetadataRecord::CreatePartition {
                topic_id: TOPIC,
                partition: 1,
                replicas: vec![1],
                isr: vec![1],
                leader: Some(1),
                leader_epoch: -1,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            },
        ] {
            assert!(matches!(
                refused(&mut image, bad),
                ImageError::InvalidPartition { .. }
            ));
        }
        applied(&mut image, MetadataRecord::FenceBroker { id: 2 });
        assert!(matches!(
            refused(&mut image, create_partition(1, &[2], Some(2))),
            ImageError::InvalidPartition { .. }
        ));
        applied(&mut image, create_partition(1, &[3, 1], Some(3)));
        assert_eq!(image.partition(TOPIC, 1).unwrap().leader, Some(3));
    }

    #[test]
    fn change_partition_bumps_leader_epoch_only_when_leader_changes() {
        let mut image = cluster();
        applied(&mut image, change(LeaderChange::Unchanged, Some(&[1, 2])));
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 1));
        assert_eq!(p.isr, vec![1, 2]);

        applied(&mut image, change(LeaderChange::Elect(1), None));
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!((p.leader_epoch, p.partition_epoch), (0, 2));

        applied(&mut image, change(LeaderChange::Elect(2), Some(&[2])));
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!(
            (p.leader, p.leader_epoch, p.partition_epoch),
            (Some(2), 1, 3)
        );

        applied(&mut image, change(LeaderChange::Offline, None));
        let p = image.partition(TOPIC, 0).unwrap();
        assert_eq!((p.leader, p.leader_epoch, p.partition_epoch), (None, 2, 4));
        assert_eq!(p.isr, vec![2]);
    }

    #[test]
    fn change_partition_is_validated() {
        let mut image = cluster();
        let unknown = MetadataRecord::ChangePartition {
            topic_id: TOPIC,
            partition: 5,
            leader: LeaderChange::Unchanged,
            isr: None,
        };
        assert_eq!(
            refused(&mut image, unknown),
            ImageError::UnknownPartition {
                topic_id: TOPIC,
                partition: 5
            }
        );
        for bad in [
            change(LeaderChange::Unchanged, Some(&[2, 3])),
            change(LeaderChange::Unchanged, Some(&[])),
            change(LeaderChange::Unchanged, Some(&[1, 4])),
            change(LeaderChange::Elect(4), None),
            change(LeaderChange::Elect(2), Some(&[1, 3])),
        ] {
            assert!(matches!(
                refused(&mut image, bad),
                ImageError::InvalidPartition { .. }
            ));
        }
        applied(&mut image, MetadataRecord::FenceBroker { id: 2 });
        assert!(matches!(
            refused(&mut image, change(LeaderChange::Elect(2), None)),
            ImageError::InvalidPartition { .. }
        ));
    }

    #[test]
    fn delete_topic_removes_topic_and_partitions_and_frees_the_name() {
        let mut image = cluster();
        applied(&mut image, MetadataRecord::DeleteTopic { topic_id: TOPIC });
        assert!(image.topic(TOPIC).is_none());
        assert!(image.topic_by_name("t").is_none());
        assert_eq!(image.partitions().count(), 0);
        assert_eq!(
            refused(&mut image, MetadataRecord::DeleteTopic { topic_id: TOPIC }),
            ImageError::UnknownTopicId(TOPIC)
        );
        applied(&mut image, MetadataRecord::UnregisterBroker { id: 2 });
    }

    #[test]
    fn set_topic_config_sets_and_removes_overrides() {
        let mut image = cluster();
        let set = |value: Option<&str>| MetadataRecord::SetTopicConfig {
            topic_id: TOPIC,
            name: "retention.ms".into(),
            value: value.map(str::to_owned),
        };
        applied(&mut image, set(Some("1000")));
        assert_eq!(
            image.topic(TOPIC).unwrap().configs.get("retention.ms"),
            Some(&"1000".to_string())
        );
        applied(&mut image, set(None));
        assert!(image.topic(TOPIC).unwrap().configs.is_empty());
        let unknown = MetadataRecord::SetTopicConfig {
            topic_id: Uuid::from_u128(8),
            name: "x".into(),
            value: None,
        };
        assert_eq!(
            refused(&mut image, unknown),
            ImageError::UnknownTopicId(Uuid::from_u128(8))
        );
    }

    #[test]
    fn apply_batch_applies_all_records_as_one_entry() {
        let mut image = MetadataImage::new();
        let batch = [
            register(1),
            MetadataRecord::UnfenceBroker { id: 1 },
            MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id: TOPIC,
                configs: BTreeMap::new(),
            },
            create_partition(0, &[1], Some(1)),
        ];
        image.apply_batch(5, &batch).unwrap();
        assert_eq!(image.offset(), Some(5));
        assert_eq!(image.partition(TOPIC, 0).unwrap().leader, Some(1));
        assert!(!image.broker(1).unwrap().fenced);
    }

    #[test]
    fn refused_batch_changes_nothing_and_names_the_record() {
        let mut image = cluster();
        let before = image.clone();
        let batch = [register(4), MetadataRecord::UnfenceBroker { id: 9 }];
        assert_eq!(
            image.apply_batch(8, &batch),
            Err(BatchError {
                index: 1,
                error: ImageError::UnknownBroker(9)
            })
        );
        assert_eq!(image, before);
        assert_eq!(
            image.apply_batch(7, &[register(4)]),
            Err(BatchError {
                index: 0,
                error: ImageError::OffsetNotIncreasing { offset: 7, last: 7 }
            })
        );
        assert_eq!(image, before);
    }

    #[test]
    fn empty_batch_only_moves_the_offset() {
        let mut image = cluster();
        let before = image.clone();
        image.apply_batch(20, &[]).unwrap();
        assert_eq!(image.offset(), Some(20));
        assert_eq!(image.to_records(), before.to_records());
        assert!(image.apply_batch(20, &[]).is_err());
    }

    #[test]
    fn partitions_of_lists_one_topic_in_index_order() {
        let mut image = cluster();
        applied(&mut image, create_partition(2, &[2], Some(2)));
        applied(&mut image, create_partition(1, &[3], Some(3)));
        let other = Uuid::from_u128(8);
        applied(
            &mut image,
            MetadataRecord::CreateTopic {
                name: "u".into(),
                topic_id: other,
                configs: BTreeMap::new(),
            },
        );
        let indexes: Vec<i32> = image.partitions_of(TOPIC).map(|(p, _)| p).collect();
        assert_eq!(indexes, vec![0, 1, 2]);
        assert_eq!(image.partitions_of(TOPIC).nth(1).unwrap().1.leader, Some(3));
        assert_eq!(image.partition_count(TOPIC), 3);
        assert_eq!(image.partition_count(other), 0);
        assert_eq!(image.partition_count(Uuid::from_u128(9)), 0);
    }

    fn rebuilt(image: &MetadataImage) -> MetadataImage {
        let mut rebuilt = MetadataImage::new();
        rebuilt
            .apply_batch(image.offset().unwrap(), &image.to_records())
            .unwrap();
        rebuilt
    }

    #[test]
    fn to_records_rebuild_the_image() {
        let mut image = cluster();
        applied(&mut image, register(4));
        applied(
            &mut image,
            MetadataRecord::SetTopicConfig {
                topic_id: TOPIC,
                name: "retention.ms".into(),
                value: Some("1000".into()),
            },
        );
        applied(&mut image, change(LeaderChange::Elect(2), Some(&[2, 3])));
        assert_eq!(rebuilt(&image), image);
    }

    #[test]
    fn to_records_rebuild_a_fenced_leader_and_a_fenced_last_isr_member() {
        let mut image = cluster();
        // A bare FenceBroker leaves broker 1 leading; the controller would have moved leadership.
        applied(&mut image, MetadataRecord::FenceBroker { id: 1 });
        applied(&mut image, create_partition(1, &[2], Some(2)));
        applied(
            &mut image,
            MetadataRecord::ChangePartition {
                topic_id: TOPIC,
                partition: 1,
                leader: LeaderChange::Offline,
                isr: None,
            },
        );
        applied(&mut image, MetadataRecord::FenceBroker { id: 2 });
        assert_eq!(image.partition(TOPIC, 0).unwrap().leader, Some(1));
        assert_eq!(rebuilt(&image), image);
    }
}
