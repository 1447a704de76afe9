//! A real kube-apiserver for the lab (`vixen lab up --kube`): the upstream binary built by
//! `tests/peers/build.sh`, started once a control plane's etcd runs, against the lab's real etcd
//! members. When etcd loses quorum the API is down, as in life.
//!
//! ```text
//! supervise (every 300 ms)
//!   control planes of the first bootstrapped cluster ──► --etcd-servers (restart when it changes)
//!   kube-apiserver ◄── certs minted from cluster.ca (serving + lab client), SA key from the config
//!   API answers ──► kubelet::sync (Node objects, Ready condition)
//!               ──► manifests::sync (cluster.inlineManifests, created once, as Talos does)
//! ```
//!
//! It listens on the cluster endpoint (`cluster.controlPlane.endpoint`) when that is a lab address
//! (127.0.0.0/8), so the Kubeconfig RPC's kubeconfig reaches it as is; otherwise on 127.0.0.1 and a
//! free port, and the Kubeconfig RPC points there. Authorization: Node,RBAC; clients authenticate
//! with certificates signed by `cluster.ca` (the Kubeconfig RPC's admin is in `system:masters`).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use tokio::process::{Child, Command};
use tokio_util::sync::CancellationToken;

use crate::config::MachineConfig;
use crate::lab::LabInner;
use crate::node::Mode;
use crate::{Role, etcd, is_lab_address, kubelet, manifests, talos_sa};

/// How to run kube-apiserver in the lab.
#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// The kube-apiserver binary (see [`crate::peers::binary`]).
    pub apiserver: PathBuf,
}

/// The API server once it answers.
#[derive(Clone)]
pub(crate) struct Endpoint {
    /// The lab's own client (system:masters), for Node objects.
    pub client: kube::Client,
}

struct Running {
    child: Child,
    /// The cluster it serves (`MachineConfig::cluster_key`).
    cluster: String,
    etcd: Vec<String>,
    url: String,
    /// Set once the API answered.
    ready: Option<Endpoint>,
}

/// The lab's kube-apiserver supervisor.
pub(crate) struct Kube {
    opts: KubeOptions,
    dir: PathBuf,
    running: Mutex<Option<Running>>,
    stop: CancellationToken,
}

impl Kube {
    pub(crate) fn new(opts: KubeOptions, labdir: &Path) -> Self {
        Self {
            opts,
            dir: labdir.join("kube"),
            running: Mutex::new(None),
            stop: CancellationToken::new(),
        }
    }

    fn running(&self) -> std::sync::MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The API server's URL and client once it has answered.
    pub(crate) fn endpoint(&self) -> Option<Endpoint> {
        self.running().as_ref().and_then(|r| r.ready.clone())
    }

    /// The cluster served (`MachineConfig::cluster_key`), once started.
    pub(crate) fn cluster(&self) -> Option<String> {
        self.running().as_ref().map(|r| r.cluster.clone())
    }

    /// The URL it listens on (`https://ip:port`), once started.
    pub(crate) fn url(&self) -> Option<String> {
        self.running().as_ref().map(|r| r.url.clone())
    }

    /// Stops the supervisor and kills the API server.
    pub(crate) async fn shutdown(&self) {
        self.stop.cancel();
        let r = self.running().take();
        if let Some(mut r) = r {
            let _ = r.child.start_kill();
            let _ = tokio::time::timeout(Duration::from_secs(5), r.child.wait()).await;
        }
    }

    /// Synchronous last-resort stop (Drop of the lab).
    pub(crate) fn kill_now(&self) {
        self.stop.cancel();
        if let Some(r) = self.running().as_mut() {
            let _ = r.child.start_kill();
        }
    }
}

/// Runs until the lab goes away or shuts down: starts, restarts and stops kube-apiserver as the
/// lab's control planes come and go, and keeps the Node objects current.
pub(crate) async fn supervise(lab: Weak<LabInner>) {
    let mut nodes = kubelet::Kubelet::default();
    let mut talos_access = talos_sa::TalosAccess::default();
    let mut bootstrap = manifests::BootstrapManifests::default();
    let mut pending: Option<(Vec<String>, tokio::time::Instant)> = None;
    loop {
        let Some(inner) = lab.upgrade() else { return };
        let Some(kube) = inner.kube.as_ref() else {
            return;
        };
        tokio::select! {
            () = kube.stop.cancelled() => return,
            () = tokio::time::sleep(Duration::from_millis(300)) => {}
        }
        let desired = desired(&inner, kube);
        let restart = {
            let mut running = kube.running();
            let exited = running
                .as_mut()
                .is_some_and(|r| !matches!(r.child.try_wait(), Ok(None)));
            if exited {
                tracing::warn!("kube-apiserver exited; see LABDIR/kube/kube-apiserver.log");
                *running = None;
                nodes = kubelet::Kubelet::default();
                talos_access = talos_sa::TalosAccess::default();
                bootstrap = manifests::BootstrapManifests::default();
            }
            match (running.as_ref(), &desired) {
                (Some(r), Some((cluster, urls, _))) => &r.cluster != cluster || &r.etcd != urls,
                (Some(_), None) => true,
                (None, Some(_)) => true,
                (None, None) => false,
            }
        };
        if restart {
            // Debounce: the set of members must hold for a second (joins come in bursts).
            let urls = desired.as_ref().map(|d| d.1.clone()).unwrap_or_default();
            match &pending {
                Some((p, since)) if *p == urls && since.elapsed() > Duration::from_secs(1) => {
                    pending = None;
                    let old = kube.running().take();
                    if let Some(mut old) = old {
                        let _ = old.child.start_kill();
                        let _ = old.child.wait().await;
                        nodes = kubelet::Kubelet::default();
                        talos_access = talos_sa::TalosAccess::default();
                        bootstrap = manifests::BootstrapManifests::default();
                    }
                    if let Some((cluster, urls, cfg)) = desired {
                        match start(kube, &cfg, cluster, urls) {
                            Ok(r) => *kube.running() = Some(r),
                            Err(e) => tracing::warn!(error = %e, "cannot start kube-apiserver"),
                        }
                    }
                    inner.publish();
                }
                Some((p, _)) if *p == urls => {}
                _ => pending = Some((urls, tokio::time::Instant::now())),
            }
        } else {
            pending = None;
        }
        if let Some(endpoint) = wait_ready(kube).await {
            nodes.sync(&inner, &endpoint.client).await;
            talos_access.sync(&inner, &endpoint.client).await;
            bootstrap.sync(&inner, &endpoint.client).await;
        }
    }
}

/// The cluster to serve, its etcd client URLs and the config of one of its control planes: the
/// cluster already served if it still has a configured control plane, else the first cluster
/// with a running etcd member.
fn desired(lab: &LabInner, kube: &Kube) -> Option<(String, Vec<String>, Arc<MachineConfig>)> {
    let serving = kube.running().as_ref().map(|r| r.cluster.clone());
    let cps: Vec<_> = lab
        .nodes
        .iter()
        .filter_map(|n| {
            let cfg = n.config()?;
            (cfg.role == Role::Controlplane && n.mode() != Mode::Maintenance).then_some((n, cfg))
        })
        .collect();
    let cluster = serving
        .filter(|c| cps.iter().any(|(_, cfg)| &cfg.cluster_key() == c))
        .or_else(|| {
            cps.iter()
                .find(|(n, _)| n.etcd_url().is_some())
                .map(|(_, cfg)| cfg.cluster_key())
        })?;
    let members: Vec<_> = cps
        .iter()
        .filter(|(_, cfg)| cfg.cluster_key() == cluster)
        .collect();
    let mut urls: Vec<String> = members
        .iter()
        .map(|(n, _)| etcd::client_url(n.current_address()))
        .collect();
    urls.sort();
    urls.dedup();
    let cfg = members.first()?.1.clone();
    Some((cluster, urls, cfg))
}

/// Once started, polls the API until it answers (then keeps the client).
async fn wait_ready(kube: &Kube) -> Option<Endpoint> {
    if let Some(e) = kube.endpoint() {
        return Some(e);
    }
    let (url, client_kubeconfig) = {
        let r = kube.running();
        let r = r.as_ref()?;
        (r.url.clone(), kube.dir.join("lab-client.kubeconfig"))
    };
    let text = std::fs::read_to_string(&client_kubeconfig).ok()?;
    let client = client_from_kubeconfig(&text).await.ok()?;
    let api: kube::Api<k8s_openapi::api::core::v1::Namespace> = kube::Api::all(client.clone());
    api.get("default").await.ok()?;
    tracing::info!(%url, "kube-apiserver ready");
    let endpoint = Endpoint { client };
    if let Some(r) = kube.running().as_mut() {
        r.ready = Some(endpoint.clone());
    }
    Some(endpoint)
}

/// A kube-rs client from kubeconfig text, with short timeouts (the lab polls).
pub(crate) async fn client_from_kubeconfig(text: &str) -> Result<kube::Client, String> {
    let kc = kube::config::Kubeconfig::from_yaml(text).map_err(|e| e.to_string())?;
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .map_err(|e| e.to_string())?;
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(5));
    cfg.write_timeout = Some(Duration::from_secs(5));
    kube::Client::try_from(cfg).map_err(|e| e.to_string())
}

/// Where the API listens: the cluster endpoint when it is a lab address, else 127.0.0.1 and a
/// free port.
fn listen_address(cfg: &MachineConfig) -> SocketAddr {
    let endpoint = cfg.get("cluster.controlPlane.endpoint").unwrap_or_default();
    let hostport = endpoint
        .trim_start_matches("https://")
        .split('/')
        .next()
        .unwrap_or_default();
    if let Ok(addr) = hostport.parse::<SocketAddr>()
        && is_lab_address(addr.ip())
    {
        return addr;
    }
    if let Ok(ip) = hostport.parse::<IpAddr>()
        && is_lab_address(ip)
    {
        return SocketAddr::new(ip, 443);
    }
    let port = std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .and_then(|l| l.local_addr())
        .map_or(6443, |a| a.port());
    SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), port)
}

fn write_private(path: &Path, text: &str) -> std::io::Result<()> {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .write(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    f.write_all(text.as_bytes())
}

/// The cluster CA of a control plane's config (`cluster.ca`, base64 PEM).
pub(crate) fn cluster_ca(cfg: &MachineConfig) -> vixen_pki::CertAndKey {
    vixen_pki::CertAndKey {
        crt: cfg.get("cluster.ca.crt").unwrap_or_default().to_string(),
        key: vixen_pki::Secret::new(cfg.get("cluster.ca.key").unwrap_or_default().to_string()),
    }
}

/// A kubeconfig with a client certificate minted from `cluster.ca`.
pub(crate) fn kubeconfig(
    cfg: &MachineConfig,
    server: &str,
    user: &str,
    groups: &[&str],
) -> Result<String, String> {
    let ca = cluster_ca(cfg);
    let minted = vixen_pki::mint(
        &ca,
        "cluster.ca",
        user,
        &vixen_pki::Usage::Client { roles: groups },
        time::Duration::days(365),
    )
    .map_err(|e| e.to_string())?;
    let name = cfg.get("cluster.clusterName").unwrap_or("lab");
    Ok(format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: {user}@{name}\n  user:\n    \
         client-certificate-data: {crt}\n    client-key-data: {key}\ncontexts:\n- name: {user}@{name}\n  \
         context:\n    cluster: {name}\n    namespace: default\n    user: {user}@{name}\n\
         current-context: {user}@{name}\n",
        ca = ca.crt,
        crt = vixen_pki::b64(&minted.cert_pem),
        key = vixen_pki::b64(minted.key_pem.expose()),
    ))
}

/// Writes certificates and keys, then starts kube-apiserver.
fn start(
    kube: &Kube,
    cfg: &MachineConfig,
    cluster: String,
    etcd: Vec<String>,
) -> Result<Running, String> {
    let dir = &kube.dir;
    std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let io = |p: &Path, e: std::io::Error| format!("{}: {e}", p.display());
    let addr = listen_address(cfg);
    let url = format!("https://{addr}");

    let ca = cluster_ca(cfg);
    let ca_pem = vixen_pki::decode_pem("cluster.ca", &ca.crt).map_err(|e| e.to_string())?;
    let ca_file = dir.join("ca.crt");
    write_private(&ca_file, &ca_pem).map_err(|e| io(&ca_file, e))?;

    let mut ips = vec![addr.ip(), IpAddr::V4(Ipv4Addr::LOCALHOST)];
    ips.dedup();
    let dns: Vec<String> = [
        "localhost",
        "kubernetes",
        "kubernetes.default",
        "kubernetes.default.svc",
    ]
    .map(String::from)
    .to_vec();
    let serving = vixen_pki::mint(
        &ca,
        "cluster.ca",
        "kube-apiserver",
        &vixen_pki::Usage::Server {
            ips: &ips,
            dns: &dns,
        },
        time::Duration::days(365),
    )
    .map_err(|e| e.to_string())?;
    let (crt_file, key_file) = (dir.join("apiserver.crt"), dir.join("apiserver.key"));
    write_private(&crt_file, &serving.cert_pem).map_err(|e| io(&crt_file, e))?;
    write_private(&key_file, serving.key_pem.expose()).map_err(|e| io(&key_file, e))?;

    // The service-account signing key: the config's, else one for this lab.
    let sa_file = dir.join("sa.key");
    let sa_key = match cfg
        .get("cluster.serviceAccount.key")
        .filter(|k| !k.is_empty())
    {
        Some(b64) => vixen_pki::decode_pem("cluster.serviceAccount.key", b64)
            .map_err(|e| e.to_string())?
            .to_string(),
        None => rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)
            .map_err(|e| e.to_string())?
            .serialize_pem(),
    };
    write_private(&sa_file, &sa_key).map_err(|e| io(&sa_file, e))?;
    // Verification takes the public key (kube-apiserver reads no PKCS#8 private key there).
    let sa_pub = rcgen::KeyPair::from_pem(&sa_key)
        .map_err(|e| format!("cluster.serviceAccount.key: {e}"))?
        .public_key_pem();
    let sa_pub_file = dir.join("sa.pub");
    write_private(&sa_pub_file, &sa_pub).map_err(|e| io(&sa_pub_file, e))?;

    let client = kubeconfig(cfg, &url, "vixen-lab", &["system:masters"])?;
    let client_file = dir.join("lab-client.kubeconfig");
    write_private(&client_file, &client).map_err(|e| io(&client_file, e))?;

    let services = cfg
        .doc
        .pointer("/cluster/network/serviceSubnets/0")
        .and_then(|v| v.as_str())
        .unwrap_or("10.96.0.0/12")
        .to_string();
    let log_file = dir.join("kube-apiserver.log");
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&log_file)
        .map_err(|e| io(&log_file, e))?;
    let child = Command::new(&kube.opts.apiserver)
        .arg(format!("--etcd-servers={}", etcd.join(",")))
        .arg(format!("--bind-address={}", addr.ip()))
        .arg(format!("--advertise-address={}", addr.ip()))
        .arg(format!("--secure-port={}", addr.port()))
        .arg(format!("--cert-dir={}", dir.display()))
        .arg(format!("--tls-cert-file={}", crt_file.display()))
        .arg(format!("--tls-private-key-file={}", key_file.display()))
        .arg(format!("--client-ca-file={}", ca_file.display()))
        .arg("--authorization-mode=Node,RBAC")
        .arg("--enable-admission-plugins=NodeRestriction")
        .arg("--anonymous-auth=false")
        .arg("--service-account-issuer=https://kubernetes.default.svc.cluster.local")
        .arg(format!(
            "--service-account-key-file={}",
            sa_pub_file.display()
        ))
        .arg(format!(
            "--service-account-signing-key-file={}",
            sa_file.display()
        ))
        .arg(format!("--service-cluster-ip-range={services}"))
        .arg("--allow-privileged=true")
        // One API server on a loopback address: no `kubernetes` Endpoints (loopback IPs are
        // refused there), and etcd's own health decides whether the API answers.
        .arg("--endpoint-reconciler-type=none")
        .arg("--profiling=false")
        .arg("--v=1")
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| io(&log_file, e))?)
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .map_err(|e| format!("{}: {e}", kube.opts.apiserver.display()))?;
    tracing::info!(%url, etcd = %etcd.join(","), "kube-apiserver started");
    Ok(Running {
        child,
        cluster,
        etcd,
        url,
        ready: None,
    })
}
