//! The controller's membership driver, the "Serf and Raft dance": on the Raft leader only, it
//! reads the gossip view every tick and applies the one next step the pure planners of
//! `skiff-metadata` call for — broker registration and fencing through the metadata log, and
//! observer/voter changes to the Raft membership — and, every leader-imbalance interval, moves
//! leaderships back to preferred replicas.

use std::collections::{BTreeSet, HashMap};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use skiff_gossip::{tag, GossipHandle, MemberInfo, MemberStatus};
use skiff_metadata::{
    plan_brokers, plan_quorum, preferred_leader_records, GossipMember, MemberHealth, QuorumAction,
    QuorumSettings, RaftMembership,
};
use skiff_raft::MetadataRaft;
use tokio::sync::watch;
use tracing::{info, warn};

use crate::settings::LeaderBalance;

/// How often the leader compares gossip with the cluster state.
const TICK: Duration = Duration::from_millis(200);
/// The longest wait before a refused membership change is proposed again: a controller cut off
/// from the quorum (it still believes it leads) would otherwise retry, and log, every tick.
const MAX_RETRY_DELAY: Duration = Duration::from_secs(5);

pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// Gossip's view of one member, in the planners' terms. `failed_since` remembers when this
/// leader first saw each member failed, so a voter is replaced only after it stayed failed.
fn to_planner_member(
    member: &MemberInfo,
    failed_since: &mut HashMap<String, u64>,
    now: u64,
) -> Option<GossipMember> {
    let node_id = member.tags.get(tag::NODE_ID)?.parse().ok()?;
    let health = match member.status {
        MemberStatus::Alive => MemberHealth::Alive,
        MemberStatus::Suspect => MemberHealth::Suspect,
        MemberStatus::Leaving | MemberStatus::Left => MemberHealth::Left,
        MemberStatus::Failed => MemberHealth::Failed {
            since_ms: *failed_since.entry(member.name.clone()).or_insert(now),
        },
    };
    if member.status != MemberStatus::Failed {
        failed_since.remove(&member.name);
    }
    Some(GossipMember {
        node_id,
        name: member.name.clone(),
        raft_addr: member.tags.get(tag::RAFT_ADDR).cloned().unwrap_or_default(),
        kafka_addr: member
            .tags
            .get(tag::KAFKA_ADDR)
            .cloned()
            .unwrap_or_default(),
        rack: member.tags.get(tag::RACK).cloned(),
        health,
        // A member without the tag (it cannot happen with one binary) is told apart by its
        // gossip generation, which changes at least with every restart.
        run: member
            .tags
            .get(tag::RUN)
            .and_then(|run| run.parse().ok())
            .unwrap_or(member.generation),
    })
}

/// The brokers whose session with this controller expired: no Raft heartbeat or append
/// answered for `session_timeout`. A follower that never answered this leadership counts from
/// when it began, so a new controller does not fence everyone before its first heartbeats;
/// except the previous controller, `predecessor`, which counts from its last heartbeat this
/// node received: it has been silent since then (that silence is why this node was elected),
/// so a controller that died with partition leaderships is fenced one session after it died,
/// not one session after the election.
fn expired_sessions(
    raft: &MetadataRaft,
    leading_for: Duration,
    predecessor: Option<(u64, Instant)>,
    session_timeout: Duration,
) -> BTreeSet<i32> {
    let timeout_ms = session_timeout.as_millis() as u64;
    raft.stats()
        .followers
        .iter()
        .filter(|f| match f.last_contact_ms {
            Some(ms) => ms > timeout_ms,
            None => match predecessor {
                Some((id, heard)) if id == f.node_id => heard.elapsed() > session_timeout,
                _ => leading_for > session_timeout,
            },
        })
        .filter_map(|f| i32::try_from(f.node_id).ok())
        .collect()
}

/// How long to wait after `attempts` refused proposals in a row: doubling from two ticks.
fn retry_delay(attempts: u32) -> Duration {
    TICK.saturating_mul(1 << attempts.min(5))
        .min(MAX_RETRY_DELAY)
}

pub async fn drive(
    raft: Arc<MetadataRaft>,
    gossip: GossipHandle,
    settings: QuorumSettings,
    session_timeout: Duration,
    leader_balance: Option<LeaderBalance>,
    mut shutdown: watch::Receiver<bool>,
) {
    // When this leader next checks the leader balance: one interval after it began leading.
    let mut next_balance_check: Option<Instant> = None;
    let mut ticker = tokio::time::interval(TICK);
    // The term and start of this node's leadership: a leadership lost and won again between
    // two ticks is a new one, whose followers' sessions start over.
    let mut leading_since: Option<(u64, Instant)> = None;
    // The previous leader and when this node last heard from it, as this leadership began.
    let mut predecessor: Option<(u64, Instant)> = None;
    let mut failed_since: HashMap<String, u64> = HashMap::new();
    let mut reported_conflicts: Vec<String> = Vec::new();
    let mut acted = false;
    let mut foreign_reported: Vec<String> = Vec::new();
    // After a refused proposal: how many in a row, and when the next may go.
    let mut refused: Option<(u32, Instant)> = None;
    loop {
        // After a change commits, the next step is planned at once: a new broker goes from
        // unknown to registered to unfenced without waiting out ticks.
        if !acted {
            tokio::select! {
                _ = shutdown.wait_for(|stop| *stop) => return,
                _ = ticker.tick() => {}
            }
        }
        acted = false;
        if !raft.is_leader() {
            refused = None;
            failed_since.clear();
            leading_since = None;
            continue;
        }
        let term = raft.current_term();
        if leading_since.is_none_or(|(since_term, _)| since_term != term) {
            leading_since = Some((term, Instant::now()));
            // Heard within a session before this leadership: it led until the election. Older
            // contact is not a predecessor (this node may have led in between), and counting
            // from it would fence a live broker before it answers a first heartbeat.
            predecessor = raft
                .last_leader_contact()
                .filter(|(_, heard)| heard.elapsed() < session_timeout);
            refused = None;
            next_balance_check = leader_balance.map(|b| Instant::now() + b.check_interval);
        }
        let leading_for = leading_since.map_or(Duration::ZERO, |(_, since)| since.elapsed());
        let Ok(gossip_members) = gossip.members().await else {
            continue;
        };
        let now = now_ms();
        let cluster_id = raft.cluster_id();
        let (ours, foreign): (Vec<&MemberInfo>, Vec<&MemberInfo>) =
            gossip_members.iter().partition(|m| {
                m.tags
                    .get(tag::CLUSTER_ID)
                    .is_none_or(|id| Some(id) == cluster_id.as_ref())
            });
        for member in foreign {
            if !foreign_reported.contains(&member.name) {
                warn!(
                    member = %member.name,
                    its_cluster = member.tags.get(tag::CLUSTER_ID).map(String::as_str).unwrap_or_default(),
                    our_cluster = cluster_id.as_deref().unwrap_or_default(),
                    "a gossip member belongs to another cluster; it is not registered here"
                );
                foreign_reported.push(member.name.clone());
            }
        }
        let members: Vec<GossipMember> = ours
            .into_iter()
            .filter_map(|m| to_planner_member(m, &mut failed_since, now))
            .collect();
        let expired = expired_sessions(&raft, leading_for, predecessor, session_timeout);
        let records = plan_brokers(&raft.image(), &members, &expired);
        if records.is_empty() {
            refused = None;
        } else {
            if refused.is_some_and(|(_, retry_at)| Instant::now() < retry_at) {
                continue;
            }
            info!(?records, ?expired, "broker membership changes");
            if let Err(e) = raft.propose(records).await {
                let attempts = refused.map_or(1, |(attempts, _)| attempts + 1);
                let delay = retry_delay(attempts);
                warn!(error = %e, retry_in = ?delay, "recording broker membership failed");
                refused = Some((attempts, Instant::now() + delay));
                continue;
            }
            refused = None;
            acted = true;
        }
        if let (Some(balance), Some(at)) = (leader_balance, next_balance_check) {
            if Instant::now() >= at {
                next_balance_check = Some(Instant::now() + balance.check_interval);
                let records = preferred_leader_records(&raft.image(), balance.imbalance_percentage);
                if !records.is_empty() {
                    info!(
                        elections = records.len(),
                        "moving leaderships back to preferred replicas"
                    );
                    match raft.propose(records).await {
                        Ok(_) => acted = true,
                        Err(e) => warn!(error = %e, "moving leaderships back failed"),
                    }
                }
            }
        }
        let membership = raft.membership();
        let plan = plan_quorum(
            now,
            raft.node_id(),
            &members,
            &RaftMembership {
                voters: membership.voters,
                learners: membership.learners,
            },
            &settings,
        );
        if plan.conflicts != reported_conflicts {
            for conflict in &plan.conflicts {
                warn!(%conflict, "ignoring conflicting members");
            }
            reported_conflicts = plan.conflicts;
        }
        let Some(action) = plan.action else {
            continue;
        };
        info!(?action, "metadata quorum change");
        let result = match action {
            QuorumAction::AddLearner { node_id, raft_addr } => {
                raft.add_observer(node_id, raft_addr).await
            }
            QuorumAction::SetVoters(voters) => raft.set_voters(voters).await,
            QuorumAction::RemoveNode(node_id) => raft.remove_node(node_id).await,
        };
        match result {
            Ok(_) => acted = true,
            Err(e) => warn!(error = %e, "metadata quorum change failed"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_refused_proposal_is_retried_ever_later_up_to_the_limit() {
        let delays: Vec<u128> = (1..=7).map(|n| retry_delay(n).as_millis()).collect();
        assert_eq!(delays, [400, 800, 1600, 3200, 5000, 5000, 5000]);
        assert_eq!(retry_delay(u32::MAX), MAX_RETRY_DELAY);
    }
}
