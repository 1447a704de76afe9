//! The lab's Kubernetes API for the tests that run `vixen lab up --kube`: a runtime and an
//! admin client from `vixen kubeconfig`, once the API lists every node Ready.

use std::time::{Duration, Instant};

use k8s_openapi::api::core::v1::Node;
use kube::api::{Api, ListParams};

use super::lab::Lab;

/// A client from kubeconfig text, with short timeouts (a lab API that is gone fails fast).
pub async fn from_kubeconfig(text: &str) -> kube::Client {
    let kc = kube::config::Kubeconfig::from_yaml(text).unwrap();
    let mut cfg = kube::Config::from_custom_kubeconfig(kc, &Default::default())
        .await
        .unwrap();
    cfg.connect_timeout = Some(Duration::from_secs(2));
    cfg.read_timeout = Some(Duration::from_secs(10));
    kube::Client::try_from(cfg).unwrap()
}

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// An admin client from `vixen kubeconfig` (a control plane's Kubeconfig RPC), once the API
/// answers and lists `nodes` Nodes, all Ready.
pub fn client(lab: &Lab, rt: &tokio::runtime::Runtime, nodes: usize) -> kube::Client {
    let path = lab.lab.join("kubeconfig");
    let until = Instant::now() + Duration::from_secs(120);
    let mut last = String::new();
    while Instant::now() < until {
        let mut args = vec!["kubeconfig", "--force", "--out", path.to_str().unwrap()];
        let target = lab.target();
        args.extend(target.iter().map(String::as_str));
        let out = lab.vixen(&args);
        if out.status.success() {
            let text = std::fs::read_to_string(&path).unwrap();
            let client = rt.block_on(from_kubeconfig(&text));
            match rt.block_on(Api::<Node>::all(client.clone()).list(&ListParams::default())) {
                Ok(list) if list.items.len() == nodes && list.items.iter().all(ready) => {
                    return client;
                }
                Ok(list) => {
                    last = format!(
                        "{} nodes, {} ready",
                        list.items.len(),
                        list.items.iter().filter(|n| ready(n)).count()
                    )
                }
                Err(e) => last = e.to_string(),
            }
        } else {
            last = String::from_utf8_lossy(&out.stderr).into_owned();
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    panic!("the lab's Kubernetes API never listed {nodes} Ready nodes: {last}");
}

pub fn ready(n: &Node) -> bool {
    n.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .and_then(|c| c.iter().find(|c| c.type_ == "Ready"))
        .is_some_and(|c| c.status == "True")
}
