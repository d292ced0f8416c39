//! DescribeLogDirs: the one data directory of this broker, its space, and the size of every
//! partition log in it (what `kafka-log-dirs` and the admin clients' describeLogDirs show).

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use kafka_protocol::messages::describe_log_dirs_response::{
    DescribeLogDirsPartition, DescribeLogDirsResult, DescribeLogDirsTopic,
};
use kafka_protocol::messages::{DescribeLogDirsRequest, DescribeLogDirsResponse, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::KafkaApis;

/// How long one partition's size is waited for while its log is busy: a log held by a stuck
/// disk operation is left out rather than holding up the whole answer.
const SIZE_WAIT: Duration = Duration::from_secs(1);

/// (total, usable) bytes of the file system holding `dir`; -1 each when unknown, as Kafka
/// reports it.
fn space(dir: &Path) -> (i64, i64) {
    use std::os::unix::ffi::OsStrExt;
    let Ok(path) = std::ffi::CString::new(dir.as_os_str().as_bytes()) else {
        return (-1, -1);
    };
    // SAFETY: `path` is a valid NUL-terminated string and `stats` a properly sized, writable
    // statvfs that the call fills in; nothing is retained after it returns.
    let mut stats: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut stats) } != 0 {
        return (-1, -1);
    }
    let block = stats.f_frsize as i64;
    (
        (stats.f_blocks as i64).saturating_mul(block),
        (stats.f_bavail as i64).saturating_mul(block),
    )
}

impl KafkaApis {
    pub(super) async fn describe_log_dirs(
        &self,
        request: DescribeLogDirsRequest,
    ) -> DescribeLogDirsResponse {
        // Null asks for every partition here; named partitions not hosted here are left out.
        let wanted: Vec<(String, i32)> = match request.topics {
            None => self.replicas.hosted(),
            Some(topics) => topics
                .iter()
                .flat_map(|t| t.partitions.iter().map(|&p| (t.topic.to_string(), p)))
                .collect(),
        };
        let mut topics: BTreeMap<String, Vec<DescribeLogDirsPartition>> = BTreeMap::new();
        for (topic, index) in wanted {
            let Some(partition) = self.replicas.get(&topic, index) else {
                continue;
            };
            let Ok(size) = tokio::time::timeout(SIZE_WAIT, partition.size_bytes()).await else {
                continue;
            };
            topics.entry(topic).or_default().push(
                DescribeLogDirsPartition::default()
                    .with_partition_index(index)
                    .with_partition_size(size as i64)
                    // Kafka's lag is how far a log's end is behind its own high watermark,
                    // which a leader's or follower's log never is; only the future logs of
                    // AlterReplicaLogDirs lag, and there are none here.
                    .with_offset_lag(0)
                    .with_is_future_key(false),
            );
        }
        let dir = self.replicas.data_dir().to_path_buf();
        let statted = dir.clone();
        // statvfs can block on a stuck file system.
        let (total, usable) = tokio::task::spawn_blocking(move || space(&statted))
            .await
            .unwrap_or((-1, -1));
        let result = DescribeLogDirsResult::default()
            .with_log_dir(StrBytes::from_string(dir.display().to_string()))
            .with_total_bytes(total)
            .with_usable_bytes(usable)
            .with_topics(
                topics
                    .into_iter()
                    .map(|(name, partitions)| {
                        DescribeLogDirsTopic::default()
                            .with_name(TopicName(StrBytes::from_string(name)))
                            .with_partitions(partitions)
                    })
                    .collect(),
            );
        DescribeLogDirsResponse::default().with_results(vec![result])
    }
}
