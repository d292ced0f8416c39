//! Turns each new metadata image into local state: opens the logs of partitions assigned to this
//! broker, records which it leads and at which epoch, deletes the logs of topics and
//! partitions the image no longer has, and has the group coordinators loaded here forget the
//! committed offsets of deleted topics. Deletion is decided from the difference between two
//! consecutive images, never from what an image lacks: while a restarted broker replays the
//! metadata log, early images lack topics created later, and their data must survive.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use skiff_metadata::MetadataImage;
use skiff_raft::MetadataListener;
use tracing::{info, warn};
use uuid::Uuid;

use crate::group::GroupService;
use crate::replica_manager::{PartitionState, ReplicaManager};
use crate::topic_config::TopicConfigs;

pub struct MetadataPublisher {
    broker_id: i32,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupService>,
    previous: Mutex<Option<Arc<MetadataImage>>>,
}

impl MetadataPublisher {
    pub fn new(broker_id: i32, replicas: Arc<ReplicaManager>, groups: Arc<GroupService>) -> Self {
        Self {
            broker_id,
            replicas,
            groups,
            previous: Mutex::new(None),
        }
    }

    /// Partitions assigned to this broker, by topic id, with their topic's name.
    fn assigned(&self, image: &MetadataImage) -> BTreeMap<(Uuid, i32), String> {
        image
            .partitions()
            .filter(|(_, _, reg)| reg.replicas.contains(&self.broker_id))
            .filter_map(|(topic_id, index, _)| {
                image
                    .topic(topic_id)
                    .map(|t| ((topic_id, index), t.name.clone()))
            })
            .collect()
    }
}

impl MetadataListener for MetadataPublisher {
    fn image_changed(&self, image: &Arc<MetadataImage>) {
        let mut previous = self.previous.lock().unwrap_or_else(|p| p.into_inner());
        let assigned = self.assigned(image);
        if let Some(before) = previous.as_ref() {
            let mut deleted = Vec::new();
            for topic in before.topics() {
                if image.topic(topic.topic_id).is_none() {
                    match self.replicas.delete_topic(&topic.name) {
                        Ok(()) => info!(topic = %topic.name, "deleted topic"),
                        Err(e) => {
                            warn!(topic = %topic.name, error = %e, "deleting topic logs failed")
                        }
                    }
                    deleted.push(topic.name.clone());
                }
            }
            if !deleted.is_empty() {
                self.groups.forget_topics(&deleted, &self.replicas);
            }
            for ((topic_id, index), name) in self.assigned(before) {
                if image.topic(topic_id).is_some() && !assigned.contains_key(&(topic_id, index)) {
                    if let Err(e) = self.replicas.remove_partition(&name, index) {
                        warn!(topic = %name, partition = index, error = %e, "removing a reassigned partition failed");
                    }
                }
            }
        }
        let mut configs: BTreeMap<Uuid, Arc<TopicConfigs>> = BTreeMap::new();
        for ((topic_id, index), name) in assigned {
            let Some(reg) = image.partition(topic_id, index) else {
                continue;
            };
            let topic_configs = configs
                .entry(topic_id)
                .or_insert_with(|| {
                    Arc::new(TopicConfigs::from_validated(
                        image
                            .topic(topic_id)
                            .map(|t| t.configs.clone())
                            .unwrap_or_default(),
                    ))
                })
                .clone();
            let state = PartitionState {
                topic_id,
                leading: reg.leader == Some(self.broker_id),
                leader_epoch: reg.leader_epoch,
                configs: topic_configs,
            };
            if let Err(e) = self.replicas.host_partition(&name, index, state) {
                warn!(topic = %name, partition = index, error = %e, "opening a partition log failed");
            }
        }
        *previous = Some(image.clone());
    }
}
