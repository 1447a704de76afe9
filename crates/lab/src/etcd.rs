//! A control plane's etcd: a real `etcd` child process (Debian `etcd-server`) on the node's
//! management address, and the membership steps Talos takes around it.
//!
//! Plain HTTP is used for the client and peer URLs: the lab runs on loopback only, and real
//! Talos' etcd TLS (from `cluster.etcd.ca`) would add nothing the tests look at.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use etcd_client::{Client, ConnectOptions, MemberAddOptions};
use tokio::process::{Child, Command};
use tonic::{Code, Status};

/// A running etcd member process.
pub(crate) struct EtcdProcess {
    child: Child,
    /// `http://<addr>:2379`.
    pub client_url: String,
}

pub(crate) fn client_url(addr: IpAddr) -> String {
    format!("http://{addr}:2379")
}

pub(crate) fn peer_url(addr: IpAddr) -> String {
    format!("http://{addr}:2380")
}

/// Whether the data directory holds a member (Talos: "etcd data directory is not empty").
pub(crate) fn has_data(dir: &Path) -> bool {
    std::fs::read_dir(dir)
        .map(|mut d| d.next().is_some())
        .unwrap_or(false)
}

/// Empties the data directory (what a reset or a leave does to /var/lib/etcd).
pub(crate) fn wipe(dir: &Path) {
    let _ = std::fs::remove_dir_all(dir);
}

impl EtcdProcess {
    /// Starts `etcd`. `initial_cluster` is `name=peerURL,...`; `state` is `new` or `existing`
    /// (ignored by etcd when the data directory already holds a member).
    pub(crate) fn spawn(
        name: &str,
        addr: IpAddr,
        data_dir: &Path,
        log: &Path,
        initial_cluster: &str,
        state: &str,
    ) -> std::io::Result<Self> {
        std::fs::create_dir_all(data_dir)?;
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)?;
        let client = client_url(addr);
        let peer = peer_url(addr);
        let child = Command::new("etcd")
            .arg(format!("--name={name}"))
            .arg(format!("--data-dir={}", data_dir.display()))
            .arg(format!("--listen-client-urls={client}"))
            .arg(format!("--advertise-client-urls={client}"))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster={initial_cluster}"))
            .arg(format!("--initial-cluster-state={state}"))
            // Short timers keep elections fast in tests; the semantics are etcd's own.
            .arg("--heartbeat-interval=50")
            .arg("--election-timeout=500")
            .arg("--logger=zap")
            .arg("--log-outputs=stderr")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .kill_on_drop(true)
            .spawn()?;
        Ok(Self {
            child,
            client_url: client,
        })
    }

    /// Whether the process still runs.
    pub(crate) fn alive(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }

    /// Kills the process (a power cut for this member) and reaps it.
    pub(crate) async fn stop(mut self) {
        let _ = self.child.start_kill();
        let _ = tokio::time::timeout(Duration::from_secs(5), self.child.wait()).await;
    }

    /// Stops the process as Talos stops its etcd service on a reboot or an upgrade: SIGTERM,
    /// then SIGKILL after a grace period (the service runner,
    /// internal/app/machined/pkg/system/runner/containerd/containerd.go: SIGTERM, then SIGKILL
    /// after GracefulShutdownTimeout; the Reboot sequence's StopAllServices,
    /// internal/app/machined/pkg/runtime/v1alpha1/v1alpha1_sequencer.go). On SIGTERM etcd stops
    /// its server gracefully, and a leader hands its leadership to a peer first, so the cluster
    /// keeps taking writes; a power cut ([`Self::stop`]) leaves an election to the others.
    pub(crate) async fn stop_gracefully(mut self, grace: Duration) {
        if let Some(pid) = self.child.id().and_then(|p| i32::try_from(p).ok()) {
            let term = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGTERM,
            );
            if term.is_ok() && tokio::time::timeout(grace, self.child.wait()).await.is_ok() {
                return;
            }
        }
        self.stop().await;
    }

    /// Kills without waiting (Drop paths).
    pub(crate) fn kill_now(&mut self) {
        let _ = self.child.start_kill();
    }
}

/// An etcd client to the given URLs with short timeouts.
pub(crate) async fn connect(urls: &[String]) -> Result<Client, Status> {
    let opts = ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(5));
    Client::connect(urls, Some(opts)).await.map_err(to_status)
}

/// etcd's own gRPC status passes through; anything else means etcd is not reachable.
pub(crate) fn to_status(e: etcd_client::Error) -> Status {
    match e {
        etcd_client::Error::GRpcStatus(s) => {
            Status::new(s.code(), format!("etcd: {}", s.message()))
        }
        other => Status::unavailable(format!("etcd: {other}")),
    }
}

/// Waits until the member at `url` answers a status call.
pub(crate) async fn wait_ready(url: &str, within: Duration) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Ok(mut c) = connect(&[url.to_string()]).await
            && c.status().await.is_ok()
        {
            return Ok(());
        }
        if tokio::time::Instant::now() > deadline {
            return Err(Status::unavailable("etcd did not become ready"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether a member at `url` is healthy: it answers and sees a leader.
pub(crate) async fn healthy(url: &str) -> bool {
    let Ok(mut c) = connect(&[url.to_string()]).await else {
        return false;
    };
    matches!(c.status().await, Ok(s) if s.leader() != 0)
}

/// The join Talos performs for a control plane with an empty data directory: through a healthy
/// member, remove any stale member with our hostname, add ourselves as a learner, and return the
/// `--initial-cluster` to start with (`existing` state) and our new member ID.
pub(crate) async fn add_learner(
    via: &str,
    name: &str,
    addr: IpAddr,
) -> Result<(String, u64), Status> {
    let mut c = connect(&[via.to_string()]).await?;
    let members = c.member_list().await.map_err(to_status)?;
    for m in members.members() {
        if m.name() == name || m.peer_urls().contains(&peer_url(addr)) {
            c.member_remove(m.id()).await.map_err(to_status)?;
        }
    }
    let added = c
        .member_add(
            [peer_url(addr)],
            Some(MemberAddOptions::new().with_is_learner()),
        )
        .await
        .map_err(to_status)?;
    let id = added
        .member()
        .map(|m| m.id())
        .ok_or_else(|| Status::internal("no member id"))?;
    let initial: Vec<String> = added
        .member_list()
        .iter()
        .map(|m| {
            let n = if m.id() == id {
                name.to_string()
            } else if m.name().is_empty() {
                format!("m{:x}", m.id())
            } else {
                m.name().to_string()
            };
            format!("{n}={}", m.peer_urls().join(&format!(",{n}=")))
        })
        .collect();
    Ok((initial.join(","), id))
}

/// Promotes the learner once it has caught up (etcd refuses until then; retried).
pub(crate) async fn promote(via: &[String], id: u64, within: Duration) -> Result<(), Status> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        let res = match connect(via).await {
            Ok(mut c) => c.member_promote(id).await.map(drop).map_err(to_status),
            Err(e) => Err(e),
        };
        match res {
            Ok(()) => return Ok(()),
            Err(e) if e.message().contains("not a learner") => return Ok(()),
            Err(e) if tokio::time::Instant::now() > deadline => return Err(e),
            Err(_) => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    }
}

/// Removes the local member through its own etcd (Talos EtcdLeaveCluster / graceful reset),
/// retrying as Talos does (it retries for up to 5 minutes; the lab for 15 s): etcd refuses to
/// remove a live member until the others have been connected for its health interval (5 s),
/// so a leave right after a join answers "unhealthy cluster" for a few seconds.
pub(crate) async fn leave(url: &str) -> Result<(), Status> {
    let mut last = Status::new(Code::Unavailable, "etcd not reachable");
    // A member that removed itself stops serving as soon as it applies its removal (etcd's
    // "the member has been permanently removed from the cluster"): its answer to MemberRemove
    // can be lost under load. A local etcd that answered, was asked to remove itself, and then
    // stops answering, has left.
    let mut asked = false;
    for _ in 0..50 {
        match connect(&[url.to_string()]).await {
            Ok(mut c) => match c.status().await {
                Ok(s) => {
                    let id = s.header().map(|h| h.member_id()).unwrap_or_default();
                    asked = true;
                    match c.member_remove(id).await {
                        Ok(_) => return Ok(()),
                        Err(e) => last = to_status(e),
                    }
                }
                Err(_) if asked => return Ok(()),
                Err(e) => last = to_status(e),
            },
            Err(_) if asked => return Ok(()),
            Err(e) => last = e,
        }
        if last.code() == Code::FailedPrecondition {
            break;
        }
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    Err(last)
}

/// The data directory of a node's member.
pub(crate) fn data_dir(node_dir: &Path) -> PathBuf {
    node_dir.join("etcd")
}
