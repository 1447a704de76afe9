//! Plans a Talos upgrade of a 1,000-node cluster (3 control planes, 997 workers) and prints the
//! figures. Target (README): under 100 ms. Run: `cargo bench -p vixen-plan --bench plan_1000`.

use std::time::{Duration, Instant};

use vixen_plan::*;

fn digest(name: &str) -> ConfigDigest {
    ConfigDigest {
        whole: format!("whole-{name}"),
        sections: [
            ("machine.network", "n"),
            ("machine.install", "i"),
            ("cluster", "c"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), format!("{v}-{name}")))
        .collect(),
    }
}

fn main() {
    let n = 1000;
    let mut desired = Desired {
        talos_version: "v1.12.2".parse().unwrap(),
        installer_image: "ghcr.io/siderolabs/installer:v1.12.2".into(),
        kubernetes_version: "1.34.1".parse().unwrap(),
        nodes: Vec::new(),
        stabilization: Duration::from_secs(30),
        reset_on_removal: true,
        worker_concurrency: 1,
        drift: DriftPolicy::Correct,
        network_rollout: None,
    };
    let mut observed = Observed {
        nodes: Vec::new(),
        etcd: Some(EtcdView::default()),
        kubernetes: None,
    };
    let mut inventory = Inventory {
        nodes: Vec::new(),
        kubernetes_version: Some("1.34.1".into()),
    };
    for i in 0..n {
        let name = format!("n{i:04}");
        let role = if i < 3 {
            Role::Controlplane
        } else {
            Role::Worker
        };
        let (a, b) = (i / 250, i % 250 + 2);
        let node = DesiredNode {
            name: name.clone(),
            hostname: name.clone(),
            role,
            maintenance_address: format!("127.2.{a}.{b}"),
            management_addresses: vec![format!("127.1.{a}.{b}")],
            config: digest(&name),
        };
        observed.nodes.push(ObservedNode {
            name: name.clone(),
            address: node.management_addresses[0].clone(),
            state: NodeState::Configured,
            talos_version: Some("v1.11.6".parse().unwrap()),
            healthy: true,
            drift: None,
        });
        inventory.nodes.push(InventoryNode {
            name: name.clone(),
            hostname: name.clone(),
            role,
            maintenance_address: node.maintenance_address.clone(),
            address: node.management_addresses[0].clone(),
            config: digest(&name),
            member_id: None,
            reboot_pending: false,
        });
        if role == Role::Controlplane {
            observed.etcd.as_mut().unwrap().members.push(Member {
                id: i as u64 + 1,
                name: name.clone(),
                is_learner: false,
                started: true,
                peer_urls: vec![],
            });
        }
        desired.nodes.push(node);
    }
    observed.etcd.as_mut().unwrap().leader = Some(1);
    // Also a config change on every node (a kubelet patch), and 10 nodes leaving.
    for d in desired.nodes.iter_mut() {
        d.config
            .sections
            .insert("machine.kubelet".into(), "k2".into());
        d.config.whole.push_str("-k2");
    }
    desired.nodes.truncate(n - 10);

    let mut samples = Vec::new();
    let mut steps = 0;
    for _ in 0..25 {
        let t = Instant::now();
        let plan = plan(&desired, &observed, &inventory).unwrap();
        samples.push(t.elapsed());
        steps = plan.steps.len();
    }
    samples.sort();
    let ms = |d: Duration| d.as_secs_f64() * 1000.0;
    println!("planner, 1,000 nodes (upgrade + config change on 990, 10 leaving): {steps} steps");
    println!(
        "plan()  median {:.2} ms   min {:.2} ms   max {:.2} ms   (25 runs; target < 100 ms)",
        ms(samples[12]),
        ms(samples[0]),
        ms(samples[24])
    );
}
