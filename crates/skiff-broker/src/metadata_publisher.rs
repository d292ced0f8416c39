//! Turns each new metadata image into local state: opens the logs of partitions assigned to this
//! broker, records which it leads and at which epoch, deletes the logs of topics and
//! partitions the image no longer has, and has the group coordinators loaded here forget the
//! committed offsets of deleted topics. Deletion is decided from the difference between two
//! consecutive images, never from what an image lacks: while a restarted broker replays the
//! metadata log, early images lack topics created later, and their data must survive.
//!
//! The Raft apply calls `image_changed`, which never touches a file or waits for a log: it
//! changes what is served in memory (partitions of deleted topics and partitions moved away stop
//! being served, leadership and configs of open partitions change at once) and hands the file
//! work to the publisher's own thread, so a slow disk cannot hold up the metadata quorum. That
//! thread deletes the files of partitions no longer served, has the group coordinators forget
//! deleted topics, and opens (recovering if needed) the logs of newly assigned partitions; a
//! partition is served from the moment its log is open, and until then requests for it get
//! NOT_LEADER_OR_FOLLOWER, which clients retry. The thread works from the newest image only:
//! images that arrive while it is busy replace each other rather than queue.

use std::collections::BTreeMap;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;

use skiff_metadata::MetadataImage;
use skiff_raft::MetadataListener;
use tracing::{info, warn};
use uuid::Uuid;

use crate::group::GroupService;
use crate::replica_manager::{Partition, PartitionState, ReplicaManager};
use crate::topic_config::TopicConfigs;

/// What the publisher's thread has to do, kept up to date by the Raft apply.
#[derive(Default)]
struct Pending {
    /// The newest image applied, which the thread opens logs for.
    image: Option<Arc<MetadataImage>>,
    /// The image changed since the thread last opened logs.
    open: bool,
    /// Partitions no longer served, whose files are to be deleted; each at most once.
    delete: Vec<Arc<Partition>>,
    /// Deleted topics whose committed offsets the coordinators here must forget.
    forget: Vec<String>,
    /// The thread is doing work it took.
    busy: bool,
    stopping: bool,
}

impl Pending {
    fn has_work(&self) -> bool {
        self.open || !self.delete.is_empty() || !self.forget.is_empty()
    }
}

struct Shared {
    broker_id: i32,
    /// This run's incarnation: the broker leads only partitions the image gives it while it is
    /// registered with it.
    incarnation: Uuid,
    replicas: Arc<ReplicaManager>,
    groups: Arc<GroupService>,
    pending: Mutex<Pending>,
    wake: Condvar,
    /// Signalled when the thread has nothing left to do.
    idle: Condvar,
}

pub struct MetadataPublisher {
    shared: Arc<Shared>,
    thread: Mutex<Option<JoinHandle<()>>>,
}

impl MetadataPublisher {
    /// Starts the publisher's thread.
    pub fn new(
        broker_id: i32,
        incarnation: Uuid,
        replicas: Arc<ReplicaManager>,
        groups: Arc<GroupService>,
    ) -> std::io::Result<Self> {
        let shared = Arc::new(Shared {
            broker_id,
            incarnation,
            replicas,
            groups,
            pending: Mutex::new(Pending::default()),
            wake: Condvar::new(),
            idle: Condvar::new(),
        });
        let thread = std::thread::Builder::new()
            .name("skiff-publisher".into())
            .spawn({
                let shared = shared.clone();
                move || shared.run()
            })?;
        Ok(Self {
            shared,
            thread: Mutex::new(Some(thread)),
        })
    }

    /// Finishes the work handed to the thread and stops it, so no log is opened after the
    /// broker closes its logs. Blocking: off the async workers.
    pub fn stop(&self) {
        self.shared.pending().stopping = true;
        self.shared.wake.notify_all();
        self.shared.idle.notify_all();
        let thread = self.thread.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(thread) = thread {
            if thread.join().is_err() {
                warn!("the metadata publisher's thread panicked");
            }
        }
    }

    /// Waits until the thread has done everything handed to it so far, or was stopped.
    /// Blocking.
    pub fn wait_idle(&self) {
        let mut pending = self.shared.pending();
        while !pending.stopping && (pending.busy || pending.has_work()) {
            pending = self
                .shared
                .idle
                .wait(pending)
                .unwrap_or_else(|p| p.into_inner());
        }
    }
}

impl Drop for MetadataPublisher {
    fn drop(&mut self) {
        self.shared.pending().stopping = true;
        self.shared.wake.notify_all();
    }
}

/// Partitions assigned to `broker_id`, by topic id, with their topic's name.
fn assigned(broker_id: i32, image: &MetadataImage) -> BTreeMap<(Uuid, i32), String> {
    image
        .partitions()
        .filter(|(_, _, reg)| reg.replicas.contains(&broker_id))
        .filter_map(|(topic_id, index, _)| {
            image
                .topic(topic_id)
                .map(|t| ((topic_id, index), t.name.clone()))
        })
        .collect()
}

/// What `image` says about partition `index` of topic `topic_id` on `broker_id`, when it is
/// assigned there. The broker leads it only once registered with its `incarnation`: until the
/// controller has fenced and registered a restarted broker again, the image still gives it the
/// leaderships of its previous run, whose high watermark and producer state it no longer
/// knows; serving them would show consumers an empty partition.
fn partition_state(
    broker_id: i32,
    incarnation: Uuid,
    image: &MetadataImage,
    topic_id: Uuid,
    index: i32,
    configs: &mut BTreeMap<Uuid, Arc<TopicConfigs>>,
) -> Option<PartitionState> {
    let reg = image
        .partition(topic_id, index)
        .filter(|reg| reg.replicas.contains(&broker_id))?;
    let topic = image.topic(topic_id)?;
    let configs = configs
        .entry(topic_id)
        .or_insert_with(|| Arc::new(TopicConfigs::from_validated(topic.configs.clone())))
        .clone();
    Some(PartitionState {
        topic_id,
        leading: reg.leader == Some(broker_id)
            && image
                .broker(broker_id)
                .is_some_and(|b| b.incarnation == incarnation),
        leader: reg.leader,
        leader_epoch: reg.leader_epoch,
        partition_epoch: reg.partition_epoch,
        replicas: reg.replicas.clone(),
        isr: reg.isr.clone(),
        configs,
    })
}

impl Shared {
    fn pending(&self) -> MutexGuard<'_, Pending> {
        self.pending.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn run(&self) {
        loop {
            let (image, delete, forget) = {
                let mut pending = self.pending();
                pending.busy = false;
                while !pending.has_work() {
                    self.idle.notify_all();
                    if pending.stopping {
                        return;
                    }
                    pending = self.wake.wait(pending).unwrap_or_else(|p| p.into_inner());
                }
                pending.busy = true;
                let open = std::mem::take(&mut pending.open);
                (
                    pending.image.clone().filter(|_| open),
                    std::mem::take(&mut pending.delete),
                    std::mem::take(&mut pending.forget),
                )
            };
            // Files of deleted partitions go first: a topic created again under the same
            // name opens its directory afresh.
            self.replicas.delete_logs(delete);
            if !forget.is_empty() {
                self.groups.forget_topics(&forget, &self.replicas);
            }
            if let Some(image) = image {
                self.open_logs(&image);
            }
        }
    }

    /// Opens the logs of the partitions `image` assigns here that are not open yet; each is
    /// served once open if the newest image still assigns it here, with what that image says.
    fn open_logs(&self, image: &MetadataImage) {
        let mut configs = BTreeMap::new();
        for ((topic_id, index), name) in assigned(self.broker_id, image) {
            if self.replicas.get(&name, index).is_some() {
                continue;
            }
            {
                // Images that came while earlier logs opened may have taken this one away.
                let pending = self.pending();
                if pending.stopping {
                    return;
                }
                let still_assigned = pending.image.as_deref().is_some_and(|newest| {
                    newest
                        .partition(topic_id, index)
                        .is_some_and(|reg| reg.replicas.contains(&self.broker_id))
                });
                if !still_assigned {
                    continue;
                }
            }
            let Some(state) = partition_state(
                self.broker_id,
                self.incarnation,
                image,
                topic_id,
                index,
                &mut configs,
            ) else {
                continue;
            };
            let partition = match self.replicas.open_log(&name, index, state) {
                Ok(partition) => partition,
                Err(e) => {
                    warn!(topic = %name, partition = index, error = %e, "opening a partition log failed");
                    continue;
                }
            };
            let pending = self.pending();
            let newest = pending.image.as_deref().and_then(|newest| {
                let state = partition_state(
                    self.broker_id,
                    self.incarnation,
                    newest,
                    topic_id,
                    index,
                    &mut BTreeMap::new(),
                )?;
                (newest.topic(topic_id)?.name == name).then_some(state)
            });
            match newest {
                Some(state) => {
                    partition.set_state(state);
                    if let Err(e) = self.replicas.insert(partition) {
                        warn!(topic = %name, partition = index, error = %e, "serving a partition failed");
                    }
                }
                None => {
                    drop(pending);
                    info!(topic = %name, partition = index, "no longer assigned here once opened");
                    self.replicas.discard(partition);
                }
            }
        }
    }
}

impl MetadataListener for MetadataPublisher {
    /// Memory only: see the module's comment.
    fn image_changed(&self, image: &Arc<MetadataImage>) {
        let shared = &self.shared;
        let mut pending = shared.pending();
        let now_assigned = assigned(shared.broker_id, image);
        if let Some(before) = pending.image.clone() {
            for topic in before.topics() {
                if image.topic(topic.topic_id).is_none() {
                    let removed = shared.replicas.take_topic(&topic.name);
                    info!(topic = %topic.name, "deleted topic");
                    pending.delete.extend(removed);
                    pending.forget.push(topic.name.clone());
                }
            }
            for ((topic_id, index), name) in assigned(shared.broker_id, &before) {
                if image.topic(topic_id).is_some() && !now_assigned.contains_key(&(topic_id, index))
                {
                    pending
                        .delete
                        .extend(shared.replicas.take_partition(&name, index));
                }
            }
        }
        let mut configs = BTreeMap::new();
        for ((topic_id, index), name) in &now_assigned {
            if let Some(state) = partition_state(
                shared.broker_id,
                shared.incarnation,
                image,
                *topic_id,
                *index,
                &mut configs,
            ) {
                shared.replicas.update_hosted(name, *index, &state);
            }
        }
        pending.image = Some(image.clone());
        pending.open = true;
        drop(pending);
        shared.wake.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use skiff_metadata::MetadataRecord;

    use super::*;
    use crate::group::coordinator::GroupConfig;

    fn apply(
        image: &MetadataImage,
        offset: u64,
        records: Vec<MetadataRecord>,
    ) -> Arc<MetadataImage> {
        let mut next = image.clone();
        next.apply_batch(offset, &records).unwrap();
        Arc::new(next)
    }

    /// Broker 1, registered with `incarnation` and unfenced, and topic "t" with one partition it
    /// alone replicates and leads.
    fn led_partition(incarnation: Uuid, topic_id: Uuid) -> Vec<MetadataRecord> {
        vec![
            MetadataRecord::RegisterBroker {
                id: 1,
                endpoints: vec!["127.0.0.1:9092".into()],
                rack: None,
                incarnation,
            },
            MetadataRecord::UnfenceBroker { id: 1 },
            MetadataRecord::CreateTopic {
                name: "t".into(),
                topic_id,
                configs: BTreeMap::new(),
            },
            MetadataRecord::CreatePartition {
                topic_id,
                partition: 0,
                replicas: vec![1],
                isr: vec![1],
                leader: Some(1),
                leader_epoch: 0,
                partition_epoch: 0,
                adding_replicas: Vec::new(),
                removing_replicas: Vec::new(),
            },
        ]
    }

    #[test]
    fn the_apply_changes_memory_only_and_the_thread_does_the_files() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = Arc::new(ReplicaManager::new(
            dir.path(),
            crate::replication::standalone(1),
        ));
        let groups = Arc::new(GroupService::new(GroupConfig::default()));
        let incarnation = Uuid::new_v4();
        let publisher = MetadataPublisher::new(1, incarnation, replicas.clone(), groups).unwrap();
        let topic_id = Uuid::new_v4();
        let created = apply(
            &MetadataImage::new(),
            1,
            led_partition(incarnation, topic_id),
        );
        publisher.image_changed(&created);
        publisher.wait_idle();
        let partition = replicas.get("t", 0).expect("served once its log is open");
        assert_eq!(partition.leader_epoch_if_leading(), Some(0));

        // A config change while the log is busy: the apply does not wait for it, and the log
        // has the new config when it is next locked.
        let configured = apply(
            &created,
            2,
            vec![MetadataRecord::SetTopicConfig {
                topic_id,
                name: "retention.ms".into(),
                value: Some("1000".into()),
            }],
        );
        {
            let _busy = partition.log_blocking();
            publisher.image_changed(&configured);
        }
        assert_eq!(partition.log_blocking().config().retention_ms, Some(1000));

        // Deleted: no longer served as soon as the image says so, its files gone after.
        let deleted = apply(
            &configured,
            3,
            vec![MetadataRecord::DeleteTopic { topic_id }],
        );
        drop(partition);
        publisher.image_changed(&deleted);
        assert!(replicas.get("t", 0).is_none());
        publisher.wait_idle();
        assert!(!dir.path().join("t-0").exists());
        publisher.stop();
    }

    #[test]
    fn a_restarted_broker_leads_only_once_registered_with_its_new_run() {
        let dir = tempfile::tempdir().unwrap();
        let replicas = Arc::new(ReplicaManager::new(
            dir.path(),
            crate::replication::standalone(1),
        ));
        let groups = Arc::new(GroupService::new(GroupConfig::default()));
        let this_run = Uuid::new_v4();
        let publisher = MetadataPublisher::new(1, this_run, replicas.clone(), groups).unwrap();
        let topic_id = Uuid::new_v4();
        // The image as the previous run left it: broker 1 leads, registered with that run.
        let previous_run = apply(
            &MetadataImage::new(),
            1,
            led_partition(Uuid::new_v4(), topic_id),
        );
        publisher.image_changed(&previous_run);
        publisher.wait_idle();
        let partition = replicas.get("t", 0).expect("its log is open");
        assert_eq!(partition.leader_epoch_if_leading(), None);

        // Fenced, registered with this run, unfenced and elected again by the controller.
        let fenced = apply(
            &previous_run,
            2,
            vec![MetadataRecord::FenceBroker { id: 1 }],
        );
        let registered = apply(
            &fenced,
            3,
            // The registration and unfencing only.
            led_partition(this_run, topic_id)[..2].to_vec(),
        );
        publisher.image_changed(&registered);
        publisher.wait_idle();
        let leader_epoch = registered.partition(topic_id, 0).unwrap().leader_epoch;
        assert_eq!(partition.leader_epoch_if_leading(), Some(leader_epoch));
        publisher.stop();
    }
}
