//! Bootstrap and the etcd RPCs of a node, with Talos' preconditions and error codes:
//!
//! - `Bootstrap` (`v1alpha1_server.go`): `FailedPrecondition "bootstrap is not available yet"`
//!   until CRI is up (`IsBootstrapAllowed`, `v1alpha1_runtime.go`), the control-plane check, then
//!   up to 5 s for time sync (`"time is not in sync yet"`), then `AlreadyExists` with etcd data.
//! - The etcd RPCs check the machine type first: `Unimplemented "<api> is only available on
//!   control plane nodes"` (1.11 `checkControlplane`, 1.13 `machinehelper.CheckControlplane`).
//! - `EtcdRemoveMemberByID` and `EtcdLeaveCluster` talk to etcd through every control plane's
//!   endpoint (`etcd.NewClientFromControlPlaneIPs`), not only the local member; their failures
//!   are plain Go errors, so gRPC `Unknown` (`internal/pkg/etcd/etcd.go`). Leave first waits for
//!   the local member's ID (`internal/pkg/etcd/local.go` `GetLocalMemberID`, 3 minutes in Talos,
//!   [`crate::Timing::etcd_member_wait_ms`] in the lab).

use std::time::Duration;

use tonic::{Code, Status};

use crate::node::Node;
use crate::versions::Talos;
use crate::{Role, etcd};

impl Node {
    fn timing(&self) -> crate::Timing {
        self.lab().map(|l| l.timing()).unwrap_or_default()
    }

    /// How long ago the node (re)entered configured mode.
    fn configured_for(&self) -> Option<Duration> {
        self.st().configured_at.map(|t| t.elapsed())
    }

    /// Whether the CRI service is up (it starts with `StartAllServices` and takes
    /// [`crate::Timing::bootstrap_after_ms`] in the lab).
    pub(crate) fn cri_up(&self) -> bool {
        self.configured_for()
            .is_some_and(|d| d >= Duration::from_millis(self.timing().bootstrap_after_ms))
    }

    /// `Unimplemented "<api> is only available on control plane nodes"` on a worker.
    pub(crate) fn check_controlplane(&self, api: &str) -> Result<(), Status> {
        if self.role() == Role::Controlplane {
            return Ok(());
        }
        Err(Status::unimplemented(format!(
            "{api} is only available on control plane nodes"
        )))
    }

    /// Bootstrap: a new one-member etcd cluster (see the module docs for the preconditions).
    pub(crate) async fn bootstrap(&self) -> Result<(), Status> {
        self.bootstrap_allowed().await?;
        let _g = self.etcd_ops.lock().await;
        if self.etcd_url().is_some() || etcd::has_data(&etcd::data_dir(&self.dir)) {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        let addr = self.current_address();
        let name = self.hostname();
        let initial = format!("{name}={}", etcd::peer_url(addr));
        if !self.start_etcd(&name, addr, &initial, "new") {
            return Err(Status::internal("cannot start etcd"));
        }
        etcd::wait_ready(&etcd::client_url(addr), Duration::from_secs(15)).await
    }

    /// Bootstrap's preconditions, up to the time sync (shared with the recovery bootstrap).
    pub(crate) async fn bootstrap_allowed(&self) -> Result<(), Status> {
        let not_yet = || Status::failed_precondition("bootstrap is not available yet");
        if self.config().is_none() || !self.cri_up() {
            return Err(not_yet());
        }
        if self.role() != Role::Controlplane {
            // 1.11 checks the config's machine type itself; 1.13 goes through CheckControlplane.
            return Err(if Talos(self.version()).apid_in_maintenance() {
                Status::unimplemented("bootstrap is only available on control plane nodes")
            } else {
                Status::failed_precondition(
                    "bootstrap can only be performed on a control plane node",
                )
            });
        }
        let t = self.timing();
        let since = self.configured_for().unwrap_or_default();
        let synced_in = Duration::from_millis(t.time_sync_after_ms).saturating_sub(since);
        let wait = Duration::from_millis(t.time_sync_wait_ms);
        if synced_in > wait {
            tokio::time::sleep(wait).await;
            return Err(Status::failed_precondition("time is not in sync yet"));
        }
        tokio::time::sleep(synced_in).await;
        Ok(())
    }

    /// The local member's client URL, after the control-plane check for `api`.
    pub(crate) fn local_etcd(&self, api: &str) -> Result<String, Status> {
        self.check_controlplane(api)?;
        self.etcd_url()
            .ok_or_else(|| Status::failed_precondition("etcd is not running"))
    }

    /// The etcd endpoints of every control plane of this node's cluster whose member runs
    /// (`etcd.GetEndpoints`: "no controlplane endpoints discovered yet" when there are none).
    pub(crate) fn cluster_endpoints(&self) -> Result<Vec<String>, Status> {
        let key = self.config().map(|c| c.cluster_key());
        let urls: Vec<String> = self
            .lab()
            .map(|l| {
                l.nodes
                    .iter()
                    .filter(|n| key.is_some() && n.config().map(|c| c.cluster_key()) == key)
                    .filter_map(|n| n.etcd_url())
                    .collect()
            })
            .unwrap_or_default();
        if urls.is_empty() {
            return Err(Status::unknown(
                "failed to create etcd client: no controlplane endpoints discovered yet",
            ));
        }
        Ok(urls)
    }

    /// The local member's ID, waiting for the member as `GetLocalMemberID` does.
    async fn local_member_id(&self) -> Result<u64, Status> {
        let wait = Duration::from_millis(self.timing().etcd_member_wait_ms);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            if let Some(url) = self.etcd_url()
                && let Ok(mut c) = etcd::connect(&[url]).await
                && let Ok(s) = c.status().await
                && let Some(h) = s.header()
            {
                return Ok(h.member_id());
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Status::unknown(
                    "failed to leave cluster: failed to get local etcd member ID: context \
                     deadline exceeded",
                ));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// EtcdLeaveCluster (`etcd.go` `LeaveCluster`): the local member's ID, then MemberRemove
    /// through the cluster, retried while etcd answers "unhealthy cluster" or "stopped" (Talos:
    /// up to 5 minutes; the lab: 15 s), "member not found" counting as done; then etcd stops and
    /// its data directory is emptied, and etcd stays stopped until the next boot.
    pub(crate) async fn etcd_leave(&self) -> Result<(), Status> {
        self.check_controlplane("etcd leave")?;
        let id = self.local_member_id().await?;
        let _g = self.etcd_ops.lock().await;
        let urls = self.cluster_endpoints()?;
        let mut last = String::new();
        for _ in 0..50 {
            match etcd::connect(&urls).await {
                Ok(mut c) => match c.member_remove(id).await {
                    Ok(_) => {
                        last.clear();
                        break;
                    }
                    Err(e) => {
                        let s = etcd::to_status(e);
                        let text = s.message().trim_start_matches("etcd: ").to_string();
                        if text.contains("member not found") {
                            last.clear();
                            break;
                        }
                        last = text;
                        let retry = text_is_retryable(&last) || s.code() == Code::Unavailable;
                        if !retry {
                            break;
                        }
                    }
                },
                Err(e) => last = e.message().to_string(),
            }
            tokio::time::sleep(Duration::from_millis(300)).await;
        }
        if !last.is_empty() {
            return Err(Status::unknown(format!(
                "failed to leave cluster: failed to remove member {id}: {last}"
            )));
        }
        self.st().etcd_left = true;
        self.stop_etcd().await;
        etcd::wipe(&etcd::data_dir(&self.dir));
        self.publish();
        Ok(())
    }

    /// EtcdRemoveMemberByID through the cluster's endpoints: `NotFound` for an unknown member,
    /// `Unknown` for every other failure (`v1alpha1_server.go`, `etcd.go`
    /// `RemoveMemberByMemberID`; IDs are printed in decimal there).
    pub(crate) async fn etcd_remove(&self, id: u64) -> Result<(), Status> {
        self.check_controlplane("etcd remove member")?;
        let urls = self.cluster_endpoints()?;
        let mut c = etcd::connect(&urls).await.map_err(|e| {
            Status::unknown(format!("failed to create etcd client: {}", e.message()))
        })?;
        match c.member_remove(id).await {
            Ok(_) => Ok(()),
            Err(e) => {
                let s = etcd::to_status(e);
                let text = s.message().trim_start_matches("etcd: ");
                if text.contains("member not found") {
                    Err(Status::not_found(format!(
                        "failed to remove member {id}: {text}"
                    )))
                } else {
                    Err(Status::unknown(format!(
                        "failed to remove member: failed to remove member {id}: {text}"
                    )))
                }
            }
        }
    }

    /// EtcdForfeitLeadership: when this member leads, hand leadership to another started
    /// voting member and return its name; when it does not lead, return an empty name.
    pub(crate) async fn etcd_forfeit(&self) -> Result<String, Status> {
        let mut c = etcd::connect(&[self.local_etcd("etcd forfeit leadership")?]).await?;
        let status = c.status().await.map_err(etcd::to_status)?;
        let me = status.header().map(|h| h.member_id()).unwrap_or_default();
        let list = c.member_list().await.map_err(etcd::to_status)?;
        if list.members().len() < 2 {
            return Err(Status::failed_precondition(
                "no other etcd members to forfeit leadership to",
            ));
        }
        if status.leader() != me {
            return Ok(String::new());
        }
        let target = list
            .members()
            .iter()
            .find(|m| m.id() != me && !m.is_learner() && !m.name().is_empty())
            .ok_or_else(|| Status::failed_precondition("no started voting member to lead"))?;
        let (id, name) = (target.id(), target.name().to_string());
        c.move_leader(id).await.map_err(etcd::to_status)?;
        Ok(name)
    }
}

/// etcd's "unhealthy cluster" and "server stopped" answers, which Talos' leave retries; and a
/// transport error: the lab's client may have picked an endpoint that is gone (a control plane
/// just reset), where Talos' clientv3 balancer sends only to endpoints that are up, so such a
/// request never fails there while another member answers.
fn text_is_retryable(text: &str) -> bool {
    text.contains("unhealthy cluster")
        || text.contains("server stopped")
        || text.contains("transport error")
}
