//! Batches key-value writes on the leader: writes that arrive while earlier ones are being
//! committed share one log entry (and one fsync), so throughput grows with concurrent clients.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, oneshot, Semaphore};

use crate::forward::SubmitError;
use crate::kv::{KvOp, KvWriteResult};
use crate::types::{Command, CommandOutcome, Raft};

/// Most writes in one log entry.
const MAX_BATCH: usize = 512;
/// Writes waiting for a batch; senders wait beyond this.
const MAX_QUEUED: usize = 4096;
/// Entries being committed at once.
const BATCHES_IN_FLIGHT: usize = 4;

type Answer = oneshot::Sender<Result<(u64, KvWriteResult), SubmitError>>;

pub(crate) struct KvBatcher {
    queue: mpsc::Sender<(KvOp, Answer)>,
}

impl KvBatcher {
    /// `timeout` bounds each commit: a leader cut off from its quorum answers "unavailable"
    /// instead of holding writers forever.
    pub(crate) fn start(raft: Raft, timeout: Duration) -> Self {
        let (queue, pending) = mpsc::channel(MAX_QUEUED);
        tokio::spawn(run(raft, pending, timeout));
        Self { queue }
    }

    /// Commits one write; this node must be the leader. Answers its log index and result.
    pub(crate) async fn write(&self, op: KvOp) -> Result<(u64, KvWriteResult), SubmitError> {
        let stopped = || SubmitError::Unavailable("the key-value writer stopped".into());
        let (answer, answered) = oneshot::channel();
        self.queue.send((op, answer)).await.map_err(|_| stopped())?;
        answered.await.map_err(|_| stopped())?
    }
}

async fn run(raft: Raft, mut pending: mpsc::Receiver<(KvOp, Answer)>, timeout: Duration) {
    let in_flight = Arc::new(Semaphore::new(BATCHES_IN_FLIGHT));
    while let Some(first) = pending.recv().await {
        let Ok(permit) = in_flight.clone().acquire_owned().await else {
            return;
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match pending.try_recv() {
                Ok(next) => batch.push(next),
                Err(_) => break,
            }
        }
        let raft = raft.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let (ops, answers): (Vec<KvOp>, Vec<Answer>) = batch.into_iter().unzip();
            let Ok(outcome) =
                tokio::time::timeout(timeout, raft.client_write(Command::Kv(ops))).await
            else {
                let error = SubmitError::Unavailable(format!(
                    "no quorum answered within {timeout:?}; the writes may still take effect"
                ));
                for answer in answers {
                    let _ = answer.send(Err(error.clone()));
                }
                return;
            };
            match outcome {
                Ok(response) => match response.data {
                    CommandOutcome::Kv(results) => {
                        for (answer, result) in answers.into_iter().zip(results) {
                            let _ = answer.send(Ok((response.log_id.index, result)));
                        }
                    }
                    other => {
                        let error = SubmitError::Rejected(format!("unexpected outcome {other:?}"));
                        for answer in answers {
                            let _ = answer.send(Err(error.clone()));
                        }
                    }
                },
                Err(e) => {
                    let error = SubmitError::from_write(e, None);
                    for answer in answers {
                        let _ = answer.send(Err(error.clone()));
                    }
                }
            }
        });
    }
}
