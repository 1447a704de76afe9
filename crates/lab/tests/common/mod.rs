//! Test fixtures: machine configs built from a fresh secrets bundle, per-test address ranges,
//! clients, and an independent etcd client for checking etcd's truth.

#![allow(dead_code)]

use std::net::IpAddr;
use std::time::Duration;

use vixen_lab::{Lab, LabOptions, LabSpec, NodeSpec, Role};
use vixen_pki::SecretsBundle;
use vixen_talos::{CallOptions, Client, Credentials};

/// A cluster: its bundle and admin credentials.
pub struct Cluster {
    pub bundle: SecretsBundle,
    pub admin: Credentials,
}

impl Cluster {
    pub fn generate() -> Self {
        let bundle = SecretsBundle::generate().unwrap();
        let admin = Credentials::from_bundle(&bundle).unwrap();
        Self { bundle, admin }
    }

    /// A minimal v1alpha1 config following the render contract.
    pub fn config(&self, role: Role, hostname: &str, addrs: &[&str], version: &str) -> Vec<u8> {
        let b = &self.bundle;
        let cp = role == Role::Controlplane;
        let addresses: Vec<String> = addrs.iter().map(|a| format!("\"{a}/8\"")).collect();
        let mut y = format!(
            "version: v1alpha1\nmachine:\n  type: {role}\n  token: {token}\n  ca:\n    crt: {ca}\n",
            role = role.as_str(),
            token = b.trustdinfo.token.expose(),
            ca = b.certs.os.crt,
        );
        if cp {
            y += &format!("    key: {}\n", b.certs.os.key.expose());
        }
        y += &format!(
            "  network:\n    hostname: {hostname}\n    interfaces:\n      - interface: eth0\n        \
             addresses: [{}]\n  install:\n    disk: /dev/sda\n    image: ghcr.io/siderolabs/installer:{version}\n  \
             kubelet:\n    image: ghcr.io/siderolabs/kubelet:v1.34.1\ncluster:\n  clusterName: lab\n  \
             id: {id}\n  secret: {secret}\n  controlPlane:\n    endpoint: https://127.0.0.1:6443\n  \
             ca:\n    crt: {kca}\n",
            addresses.join(", "),
            id = b.cluster.id,
            secret = b.cluster.secret.expose(),
            kca = b.certs.k8s.crt,
        );
        if cp {
            y += &format!(
                "    key: {}\n  etcd:\n    ca:\n      crt: {}\n      key: {}\n  apiServer:\n    \
                 image: registry.k8s.io/kube-apiserver:v1.34.1\n",
                b.certs.k8s.key.expose(),
                b.certs.etcd.crt,
                b.certs.etcd.key.expose()
            );
        }
        y.into_bytes()
    }
}

/// A spec of nodes `name@127.0.<net>.<i+1>`.
pub fn spec(net: u8, nodes: &[(&str, Role, &str)]) -> LabSpec {
    LabSpec {
        nodes: nodes
            .iter()
            .enumerate()
            .map(|(i, (name, role, version))| NodeSpec {
                name: (*name).into(),
                role: *role,
                maintenance_address: format!("127.0.{net}.{}", i + 1).parse().unwrap(),
                talos_version: (*version).into(),
            })
            .collect(),
    }
}

pub async fn start(spec: &LabSpec, dir: &std::path::Path) -> Lab {
    Lab::start(
        spec,
        LabOptions {
            dir: dir.to_path_buf(),
            reboot_ms: 300,
            kube: None,
        },
    )
    .await
    .unwrap()
}

pub fn quick() -> CallOptions {
    CallOptions {
        timeout: Duration::from_secs(20),
        connect_timeout: Duration::from_secs(2),
        retries: 0,
        ..CallOptions::default()
    }
}

pub fn maint(addr: &str) -> Client {
    Client::maintenance(addr).unwrap().with_options(quick())
}

pub fn admin(c: &Cluster, addr: &str) -> Client {
    Client::connect(addr, &c.admin)
        .unwrap()
        .with_options(quick())
}

/// Polls `f` until it returns true (or panics after `secs`).
pub async fn until<F, Fut>(what: &str, secs: u64, mut f: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + Duration::from_secs(secs);
    while !f().await {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Waits until the node answers Version with mTLS.
pub async fn wait_configured(c: &Cluster, addr: &str) {
    let client = admin(c, addr);
    until(&format!("{addr} configured"), 30, || {
        let client = client.clone();
        async move { client.version().await.is_ok() }
    })
    .await;
}

/// Applies the first config in maintenance mode and waits for the configured node.
pub async fn install(c: &Cluster, maint_addr: &str, config: &[u8], mgmt: &str) {
    let m = maint(maint_addr);
    m.apply_configuration(config, vixen_talos::ApplyMode::Auto, false, None)
        .await
        .unwrap();
    wait_configured(c, mgmt).await;
}

/// An etcd client straight to one member, bypassing the lab.
pub async fn etcd(addr: &str) -> etcd_client::Client {
    let opts = etcd_client::ConnectOptions::new()
        .with_connect_timeout(Duration::from_secs(2))
        .with_timeout(Duration::from_secs(3));
    etcd_client::Client::connect([format!("http://{addr}:2379")], Some(opts))
        .await
        .unwrap()
}

/// Waits until the member at `addr` sees `n` voting members and no learner.
pub async fn wait_members(addr: &str, n: usize) {
    until(&format!("{n} voting etcd members"), 60, || async move {
        let Ok(mut c) = tokio::time::timeout(Duration::from_secs(3), etcd(addr)).await else {
            return false;
        };
        match c.member_list().await {
            Ok(l) => l.members().len() == n && l.members().iter().all(|m| !m.is_learner()),
            Err(_) => false,
        }
    })
    .await;
}

pub fn ip(s: &str) -> IpAddr {
    s.parse().unwrap()
}

/// Bootstraps the configured control plane at `addr` and returns its admin kubeconfig, as
/// `talosctl bootstrap` then `talosctl kubeconfig` would.
pub async fn bootstrap_kubeconfig(c: &Cluster, addr: &str) -> String {
    admin(c, addr)
        .bootstrap_when_ready(Duration::from_secs(60))
        .await
        .unwrap();
    untar_kubeconfig(&admin(c, addr).kubeconfig().await.unwrap())
}

/// The kubeconfig inside the Kubeconfig RPC's .tar.gz.
pub fn untar_kubeconfig(archive: &[u8]) -> String {
    use std::io::Read as _;
    let mut tar = tar::Archive::new(flate2::read::GzDecoder::new(archive));
    let mut kubeconfig = String::new();
    tar.entries()
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .read_to_string(&mut kubeconfig)
        .unwrap();
    kubeconfig
}

/// A client from kubeconfig text with short timeouts, as `impersonate` when given (`--as`).
pub async fn kube_client(kubeconfig: &str, impersonate: Option<&str>) -> kube::Client {
    let mut kc = kube::config::Kubeconfig::from_yaml(kubeconfig).unwrap();
    if let Some(user) = impersonate {
        for a in &mut kc.auth_infos {
            if let Some(info) = a.auth_info.as_mut() {
                info.impersonate = Some(user.to_owned());
            }
        }
    }
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(cfg).unwrap()
}
