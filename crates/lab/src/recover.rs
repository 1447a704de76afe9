//! etcd disaster recovery as Talos does it, with real etcd:
//!
//! - `EtcdRecover` (internal/app/machined/internal/server/v1alpha1/v1alpha1_server.go): refused
//!   with `FailedPrecondition "etcd service is not ready for recovery yet"` until the etcd
//!   service waits for a bootstrap (the directory of `EtcdRecoverySnapshotPath` exists: in the
//!   lab, a configured control plane), then the control-plane check; the streamed chunks are
//!   written to the recovery snapshot file, removed again when the upload fails.
//! - `Bootstrap{recover_etcd}`: the preconditions of Bootstrap, `AlreadyExists` with etcd data;
//!   then the etcd service's `recoverFromSnapshot` (internal/app/machined/pkg/system/services/
//!   etcd.go): check the snapshot (etcd's snapshot status), restore it into the data directory
//!   as a new one-member cluster named after the host, with its peer URL (etcd's
//!   `snapshot.Restore`: what `etcdutl snapshot restore` runs), delete the snapshot, start etcd.
//!   The lab runs the restore with the etcd tools on the machine (`etcdutl`, or `etcdctl
//!   snapshot restore` of etcd 3.4); a snapshot that fails etcd's hash check fails the
//!   bootstrap unless `recover_skip_hash_check` is set.
//!   Talos starts the etcd service in the background and answers the RPC; the lab waits for the
//!   member to answer before replying (the caller waits for it anyway).
//!   A Bootstrap{recover_etcd} without an uploaded snapshot: `FailedPrecondition` (inferred:
//!   Talos' etcd service fails "error verifying snapshot" there).

use std::path::PathBuf;
use std::time::Duration;

use tonic::Status;

use crate::node::Node;
use crate::{Role, etcd};

impl Node {
    /// Where an uploaded recovery snapshot waits (Talos: `/var/lib/etcd.snapshot`).
    fn recovery_snapshot(&self) -> PathBuf {
        self.dir.join("etcd.snapshot")
    }

    /// EtcdRecover: stores the uploaded snapshot.
    pub(crate) fn etcd_recover(&self, bytes: &[u8]) -> Result<(), Status> {
        if self.config().is_none() {
            return Err(Status::failed_precondition(
                "etcd service is not ready for recovery yet",
            ));
        }
        self.check_controlplane("etcd recover")?;
        let path = self.recovery_snapshot();
        let tmp = path.with_extension("part");
        let written = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&tmp);
            return Err(Status::unknown(format!(
                "error writing snapshot: {}",
                e.kind()
            )));
        }
        Ok(())
    }

    /// Bootstrap{recover_etcd}: restore the uploaded snapshot into a new one-member cluster.
    pub(crate) async fn recover_bootstrap(&self, skip_hash_check: bool) -> Result<(), Status> {
        self.bootstrap_allowed().await?;
        if self.role() != Role::Controlplane {
            return Err(Status::failed_precondition(
                "bootstrap can only be performed on a control plane node",
            ));
        }
        let _g = self.etcd_ops.lock().await;
        let data = etcd::data_dir(&self.dir);
        if self.etcd_url().is_some() || etcd::has_data(&data) {
            return Err(Status::already_exists("etcd data directory is not empty"));
        }
        let snapshot = self.recovery_snapshot();
        if !snapshot.is_file() {
            return Err(Status::failed_precondition(
                "error verifying snapshot: no snapshot was uploaded with EtcdRecover",
            ));
        }
        etcd::wipe(&data);
        let addr = self.current_address();
        let name = self.hostname();
        let peer = etcd::peer_url(addr);
        let initial = format!("{name}={peer}");
        restore(&snapshot, &name, &data, &initial, &peer, skip_hash_check).await?;
        let _ = std::fs::remove_file(&snapshot);
        if !self.start_etcd(&name, addr, &initial, "new") {
            return Err(Status::internal("cannot start etcd"));
        }
        etcd::wait_ready(&etcd::client_url(addr), Duration::from_secs(15)).await
    }
}

/// `etcdutl snapshot restore` (etcd 3.5+), else `etcdctl snapshot restore` (etcd 3.4).
async fn restore(
    snapshot: &std::path::Path,
    name: &str,
    data: &std::path::Path,
    initial: &str,
    peer: &str,
    skip_hash_check: bool,
) -> Result<(), Status> {
    let tool = if which("etcdutl") {
        "etcdutl"
    } else {
        "etcdctl"
    };
    let mut cmd = tokio::process::Command::new(tool);
    cmd.env("ETCDCTL_API", "3")
        .arg("snapshot")
        .arg("restore")
        .arg(snapshot)
        .arg(format!("--name={name}"))
        .arg(format!("--data-dir={}", data.display()))
        .arg(format!("--initial-cluster={initial}"))
        .arg(format!("--initial-advertise-peer-urls={peer}"));
    if skip_hash_check {
        cmd.arg("--skip-hash-check");
    }
    let out = cmd
        .output()
        .await
        .map_err(|e| Status::internal(format!("{tool}: {}", e.kind())))?;
    if !out.status.success() {
        etcd::wipe(data);
        let msg = String::from_utf8_lossy(&out.stderr);
        let last = msg
            .lines()
            .rev()
            .find(|l| !l.trim().is_empty())
            .unwrap_or("");
        return Err(Status::unknown(format!(
            "error recovering from the snapshot: {last}"
        )));
    }
    Ok(())
}

fn which(tool: &str) -> bool {
    std::env::var_os("PATH")
        .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(tool).is_file()))
}
