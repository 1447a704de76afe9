//! Address rules of the repo: node addresses, VIPs and routes, and the load-balancer pools of
//! network.yaml (part of [`crate::validate`]).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;

use ipnet::IpNet;

use crate::path;
use crate::repo::{Diagnostics, Repo, Source};
use crate::types::{NodeFile, Role};
use crate::yaml::{Pos, Seg};

/// Where an address of the repo stands.
struct Place {
    file: PathBuf,
    pos: Pos,
    owner: String,
}

impl Place {
    fn describe(&self) -> String {
        format!("{} ({}:{})", self.owner, self.file.display(), self.pos)
    }
}

/// A node's subnets: (interface address, path of the address list owner).
fn node_addresses(n: &Source<NodeFile>) -> Vec<(String, Vec<Seg>)> {
    let mut out = Vec::new();
    for (i, iface) in n.value.interfaces.iter().enumerate() {
        for (j, a) in iface.addresses.iter().enumerate() {
            out.push((a.clone(), path!["interfaces", i, "addresses", j]));
        }
        for (k, vlan) in iface.vlans.iter().enumerate() {
            for (j, a) in vlan.addresses.iter().enumerate() {
                out.push((
                    a.clone(),
                    path!["interfaces", i, "vlans", k, "addresses", j],
                ));
            }
        }
    }
    out
}

pub(crate) fn address_rules(repo: &Repo, d: &mut Diagnostics) {
    let mut used: BTreeMap<IpAddr, Place> = BTreeMap::new();
    let mut claim = |d: &mut Diagnostics, ip: IpAddr, place: Place| {
        if let Some(first) = used.get(&ip) {
            d.push(
                &place.file,
                place.pos,
                format!("address {ip} is already used by {}", first.describe()),
                "give every node and interface its own address",
            );
        } else {
            used.insert(ip, place);
        }
    };
    for n in &repo.nodes {
        let v = &n.value;
        match v.maintenance_address.parse::<IpAddr>() {
            Ok(ip) => claim(
                d,
                ip,
                Place {
                    file: n.path.clone(),
                    pos: n.pos(&path!["maintenanceAddress"]),
                    owner: format!("node {} (maintenance)", v.name),
                },
            ),
            Err(_) => d.push(
                &n.path,
                n.pos(&path!["maintenanceAddress"]),
                format!("`{}` is not an IP address", v.maintenance_address),
                "write the address the node has in maintenance mode, without a prefix length",
            ),
        }
        let own = node_addresses(n);
        let mut own_ips = vec![v.maintenance_address.clone()];
        for (cidr, p) in &own {
            match cidr.parse::<IpNet>() {
                // A static address may be the one the machine also has in maintenance mode
                // (a DHCP reservation of the same address, or an imported node reached there).
                Ok(net)
                    if cidr.contains('/') && net.addr().to_string() == v.maintenance_address =>
                {
                    own_ips.push(net.addr().to_string());
                }
                Ok(net) if cidr.contains('/') => {
                    own_ips.push(net.addr().to_string());
                    claim(
                        d,
                        net.addr(),
                        Place {
                            file: n.path.clone(),
                            pos: n.pos(p),
                            owner: format!("node {}", v.name),
                        },
                    );
                }
                _ => d.push(
                    &n.path,
                    n.pos(p),
                    format!("`{cidr}` is not an address in CIDR form"),
                    "write it like 192.168.1.10/24",
                ),
            }
        }
        for (i, m) in v.management_addresses.iter().enumerate() {
            if !own_ips.contains(m) {
                d.push(
                    &n.path,
                    n.pos(&path!["managementAddresses", i]),
                    format!("management address {m} is not one of the node's own addresses"),
                    "list an address of one of its interfaces or VLANs",
                );
            }
        }
        for (i, iface) in v.interfaces.iter().enumerate() {
            let mut routes: Vec<(&crate::types::Route, Vec<Seg>)> = iface
                .routes
                .iter()
                .enumerate()
                .map(|(j, r)| (r, path!["interfaces", i, "routes", j]))
                .collect();
            for (k, vlan) in iface.vlans.iter().enumerate() {
                routes.extend(
                    vlan.routes
                        .iter()
                        .enumerate()
                        .map(|(j, r)| (r, path!["interfaces", i, "vlans", k, "routes", j])),
                );
            }
            for (r, p) in routes {
                if r.network.parse::<IpNet>().is_err() {
                    let mut p = p.clone();
                    p.push(Seg::Key("network".into()));
                    d.push(
                        &n.path,
                        n.pos(&p),
                        format!("route network `{}` is not a CIDR", r.network),
                        "write it like 0.0.0.0/0",
                    );
                }
                if r.gateway.parse::<IpAddr>().is_err() {
                    let mut p = p.clone();
                    p.push(Seg::Key("gateway".into()));
                    d.push(
                        &n.path,
                        n.pos(&p),
                        format!("gateway `{}` is not an IP address", r.gateway),
                        "write the gateway's address",
                    );
                }
            }
        }
    }
    // VIPs: shared by control planes, so the same VIP on several nodes is expected; it must not
    // be any node's own address, and must sit in a subnet of the link it is on.
    for n in &repo.nodes {
        for (i, iface) in n.value.interfaces.iter().enumerate() {
            let mut vips = vec![(
                iface.vip.as_ref(),
                path!["interfaces", i, "vip"],
                &iface.addresses,
            )];
            for (k, vlan) in iface.vlans.iter().enumerate() {
                vips.push((
                    vlan.vip.as_ref(),
                    path!["interfaces", i, "vlans", k, "vip"],
                    &vlan.addresses,
                ));
            }
            for (vip, p, link_addrs) in vips {
                let Some(vip) = vip else { continue };
                if n.value.role != Role::Controlplane {
                    d.push(
                        &n.path,
                        n.pos(&p),
                        "a VIP on a worker: Talos only runs the shared VIP on control planes",
                        "move the VIP to the control planes' interfaces",
                    );
                }
                let Ok(ip) = vip.parse::<IpAddr>() else {
                    d.push(
                        &n.path,
                        n.pos(&p),
                        format!("VIP `{vip}` is not an IP address"),
                        "write the VIP without a prefix length",
                    );
                    continue;
                };
                if let Some(owner) = used.get(&ip) {
                    d.push(
                        &n.path,
                        n.pos(&p),
                        format!("VIP {ip} is also the address of {}", owner.describe()),
                        "pick a free address for the VIP",
                    );
                }
                let inside = link_addrs
                    .iter()
                    .filter_map(|a| a.parse::<IpNet>().ok())
                    .any(|net| net.contains(&ip));
                if !inside {
                    d.push(
                        &n.path,
                        n.pos(&p),
                        format!("VIP {ip} is outside the subnets of this link"),
                        "pick a VIP inside the subnet of an address on the same interface or VLAN",
                    );
                }
            }
        }
    }
}

/// An address block as an inclusive integer range (IPv4 mapped into the IPv6 space).
fn block_range(start: IpAddr, stop: IpAddr) -> (u128, u128) {
    let n = |ip: IpAddr| match ip {
        IpAddr::V4(v4) => u128::from(v4.to_ipv6_mapped()),
        IpAddr::V6(v6) => u128::from(v6),
    };
    (n(start), n(stop))
}

pub(crate) fn network_rules(repo: &Repo, d: &mut Diagnostics) {
    let net = &repo.network;
    let f = net.path.as_path();
    let mut blocks: Vec<((u128, u128), String, Pos)> = Vec::new();
    let mut names = BTreeMap::new();
    for (i, pool) in net.value.pools.iter().enumerate() {
        if names.insert(pool.name.clone(), i).is_some() {
            d.push(
                f,
                net.pos(&path!["pools", i, "name"]),
                format!("pool name `{}` appears twice", pool.name),
                "give every pool its own name",
            );
        }
        if pool.cidrs.is_empty() && pool.ranges.is_empty() {
            d.push(
                f,
                net.pos(&path!["pools", i]),
                format!("pool `{}` has no addresses", pool.name),
                "add `cidrs` or `ranges`",
            );
        }
        for (j, cidr) in pool.cidrs.iter().enumerate() {
            match cidr.parse::<IpNet>() {
                Ok(n) => blocks.push((
                    block_range(n.network(), n.broadcast()),
                    pool.name.clone(),
                    net.pos(&path!["pools", i, "cidrs", j]),
                )),
                Err(_) => d.push(
                    f,
                    net.pos(&path!["pools", i, "cidrs", j]),
                    format!("`{cidr}` is not a CIDR"),
                    "write it like 192.168.1.240/28",
                ),
            }
        }
        for (j, r) in pool.ranges.iter().enumerate() {
            let p = path!["pools", i, "ranges", j];
            match (r.start.parse::<IpAddr>(), r.stop.parse::<IpAddr>()) {
                (Ok(a), Ok(b)) if a.is_ipv4() == b.is_ipv4() && a <= b => {
                    blocks.push((block_range(a, b), pool.name.clone(), net.pos(&p)))
                }
                (Ok(_), Ok(_)) => d.push(
                    f,
                    net.pos(&p),
                    format!(
                        "range {}-{} is empty or mixes IPv4 and IPv6",
                        r.start, r.stop
                    ),
                    "make `start` not greater than `stop`, in one family",
                ),
                _ => d.push(
                    f,
                    net.pos(&p),
                    format!(
                        "range {}-{} has an address that does not parse",
                        r.start, r.stop
                    ),
                    "write both ends as IP addresses",
                ),
            }
        }
    }
    for (i, a) in blocks.iter().enumerate() {
        for b in &blocks[..i] {
            if a.0.0 <= b.0.1 && b.0.0 <= a.0.1 {
                d.push(
                    f,
                    a.2,
                    format!("pool `{}` overlaps pool `{}` (line {})", a.1, b.1, b.2.line),
                    "make the pools' blocks disjoint",
                );
            }
        }
    }
    // A pool inside the pod or service network would hand out addresses the CNI or kube-proxy
    // routes elsewhere.
    let cn = &repo.cluster.value.cluster_network;
    for (field, list) in [
        ("podSubnets", &cn.pod_subnets),
        ("serviceSubnets", &cn.service_subnets),
    ] {
        for subnet in list.iter().filter_map(|s| s.parse::<IpNet>().ok()) {
            let r = block_range(subnet.network(), subnet.broadcast());
            for (range, pool, pos) in &blocks {
                if range.0 <= r.1 && r.0 <= range.1 {
                    d.push(
                        f,
                        *pos,
                        format!("pool `{pool}` overlaps the cluster's {field} {subnet} (cluster.yaml)"),
                        "take load-balancer addresses from the node network, outside the pod and service subnets",
                    );
                }
            }
        }
    }
    for n in &repo.nodes {
        let mut ips: Vec<(String, Vec<Seg>)> = node_addresses(n)
            .into_iter()
            .map(|(a, p)| (a.split('/').next().unwrap_or_default().to_string(), p))
            .collect();
        ips.push((
            n.value.maintenance_address.clone(),
            path!["maintenanceAddress"],
        ));
        for (i, iface) in n.value.interfaces.iter().enumerate() {
            if let Some(vip) = &iface.vip {
                ips.push((vip.clone(), path!["interfaces", i, "vip"]));
            }
        }
        for (ip, _) in ips {
            let Ok(ip) = ip.parse::<IpAddr>() else {
                continue;
            };
            let x = block_range(ip, ip).0;
            for (range, pool, pos) in &blocks {
                if range.0 <= x && x <= range.1 {
                    d.push(
                        f,
                        *pos,
                        format!(
                            "pool `{pool}` contains {ip}, an address of node {}",
                            n.value.name
                        ),
                        "keep load-balancer pools apart from node addresses and the VIP",
                    );
                }
            }
        }
    }
    let mut pnames = BTreeMap::new();
    for (i, p) in net.value.l2_policies.iter().enumerate() {
        if pnames.insert(p.name.clone(), i).is_some() {
            d.push(
                f,
                net.pos(&path!["l2Policies", i, "name"]),
                format!("L2 policy name `{}` appears twice", p.name),
                "give every policy its own name",
            );
        }
        if !p.load_balancer_ips && !p.external_ips {
            d.push(
                f,
                net.pos(&path!["l2Policies", i]),
                format!("L2 policy `{}` announces nothing", p.name),
                "set loadBalancerIPs or externalIPs to true",
            );
        }
    }
}
