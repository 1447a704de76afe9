//! Changes to configured nodes: Talos upgrades (one node at a time, gated on health and
//! etcd) and config changes (live, or one node at a time with a reboot).

use super::*;

pub(super) fn upgrade_node(
    plan: &mut Plan,
    m: &Match<'_>,
    desired: &Desired,
    etcd: &EtcdView,
    members: usize,
    kube: Option<&KubeView>,
) {
    let d = m.desired;
    let from = m
        .observed
        .and_then(|o| o.talos_version)
        .expect("filtered on a version");
    let cp = d.role == Role::Controlplane;
    let image = desired.installer_image.clone();
    let to = format!("Talos v{from} -> v{}", desired.talos_version);
    // Talos 1.13+: LifecycleService.Upgrade installs an image that must already be in the
    // containerd store, and does not reboot (talosctl 1.13 pulls first, then reboots). Pulling
    // and installing disrupt nothing, so they go before the drain.
    let lifecycle = from.minor_pair() >= (1, 13);
    if lifecycle {
        plan.steps.push(step(
            &d.name,
            Action::PullImage {
                image: image.clone(),
            },
            format!("{to}: the installer image must be in the node's store"),
            NONE,
        ));
        plan.steps.push(step(
            &d.name,
            Action::LifecycleUpgrade {
                image: image.clone(),
            },
            format!("{to}: install on the inactive partition"),
            NONE,
        ));
    }
    if cp {
        plan.steps.push(step(
            &d.name,
            Action::CheckUpgradeSafe,
            "etcd must keep quorum while this member reboots",
            NONE,
        ));
        if members > 1 && m.leads(etcd) {
            plan.steps.push(step(
                &d.name,
                Action::ForfeitLeadership,
                "it leads etcd: hand over before rebooting",
                ETCD,
            ));
        }
    }
    drain(plan, &d.name, &d.hostname, kube, "upgrade");
    if lifecycle {
        plan.steps.push(step(
            &d.name,
            Action::Reboot,
            format!("{to}: boot the new version"),
            REBOOT,
        ));
    } else {
        plan.steps
            .push(step(&d.name, Action::Upgrade { image }, to, REBOOT));
    }
    plan.steps.push(step(
        &d.name,
        Action::WaitReady {
            address: d.address().to_string(),
            version: Some(format!("v{}", desired.talos_version)),
        },
        "the node must report the new version and healthy services",
        NONE,
    ));
    if cp {
        plan.steps.push(step(
            &d.name,
            Action::WaitEtcdMember,
            "every member started, none a learner",
            NONE,
        ));
    }
    back_in_kubernetes(
        plan,
        &d.name,
        &d.hostname,
        kube,
        Some(format!("v{}", desired.talos_version)),
    );
    plan.steps.push(step(
        &d.name,
        Action::Stabilize {
            millis: desired.stabilization.as_millis() as u64,
        },
        "stabilization wait before the next node",
        NONE,
    ));
}

/// Drift seen on a node vixen applied this very config to (a node whose digest changed gets
/// its new config anyway).
pub(super) fn drift<'a>(m: &Match<'a>) -> Option<&'a Drift> {
    m.prior
        .filter(|p| p.config.whole == m.desired.config.whole)
        .and(m.observed)
        .and_then(|o| o.drift.as_ref())
}

pub(super) fn change_config(
    plan: &mut Plan,
    m: &Match<'_>,
    desired: &Desired,
    members: usize,
    kube: Option<&KubeView>,
    talos: Option<Version>,
) {
    let d = m.desired;
    let at = m
        .observed
        .map_or_else(|| d.address().to_string(), |o| o.address.clone());
    // Something to apply: Git changed, or the running config drifted from it.
    let changed = m.prior.is_none_or(|p| p.config.whole != d.config.whole) || drift(m).is_some();
    let owed = m.prior.is_some_and(|p| p.reboot_pending);
    let (reboot, what) = match (m.prior, drift(m)) {
        // Changed out of band: Talos' own dry run said whether going back needs a reboot.
        (Some(_), Some(drift)) => (
            drift.reboot || owed,
            "drifted: the running config is not the one from Git".to_string(),
        ),
        (Some(_), None) if !changed => (
            true,
            "applied live before; it takes effect at the next boot".to_string(),
        ),
        (Some(p), None) => (
            needs_reboot(&p.config, &d.config) || owed,
            changed_sections(&p.config, &d.config).join(", "),
        ),
        // Nothing recorded (vixen's state was lost): let Talos decide, treated as disruptive.
        (None, _) => (
            true,
            "unknown (no record of the applied config)".to_string(),
        ),
    };
    let moved = at != d.address();
    // Talos 1.14+: the config goes in live and vixen reboots the node itself (so it does for a
    // reboot still owed when nothing is left to apply).
    let own_reboot = reboot && (apply_never_reboots(talos) || !changed);
    let mode = if own_reboot {
        ApplyMode::NoReboot
    } else if m.prior.is_none() {
        ApplyMode::Auto
    } else if reboot {
        ApplyMode::Reboot
    } else {
        ApplyMode::NoReboot
    };
    if reboot && d.role == Role::Controlplane && members > 1 {
        plan.steps.push(step(
            &d.name,
            Action::CheckUpgradeSafe,
            "etcd must keep quorum while this member reboots",
            NONE,
        ));
    }
    let reason = if moved {
        format!(
            "config changed ({what}); moves from {at} to {}",
            d.address()
        )
    } else {
        format!("config changed ({what})")
    };
    if reboot {
        drain(
            plan,
            &d.name,
            &d.hostname,
            kube,
            "the new config reboots it",
        );
    }
    if changed {
        plan.steps.push(step(
            &d.name,
            Action::ApplyConfig {
                mode,
                address: at,
                maintenance: false,
                reboot_after: own_reboot,
            },
            reason,
            if reboot && !own_reboot { REBOOT } else { NONE },
        ));
    }
    if own_reboot {
        if moved {
            plan.steps.push(step(
                &d.name,
                Action::WaitReady {
                    address: d.address().to_string(),
                    version: None,
                },
                "follow the node to its new address before rebooting it",
                NONE,
            ));
        }
        plan.steps.push(step(
            &d.name,
            Action::Reboot,
            if changed {
                format!(
                    "config changed ({what}): Talos {} applies it without a reboot, the change \
                     takes effect at the next boot",
                    talos.map_or_else(String::new, |v| format!("v{v}"))
                )
            } else {
                format!("the config was {what}")
            },
            REBOOT,
        ));
    }
    if reboot || moved {
        plan.steps.push(step(
            &d.name,
            Action::WaitReady {
                address: d.address().to_string(),
                version: None,
            },
            if moved {
                "follow the node to its new address"
            } else {
                "back after the reboot"
            },
            NONE,
        ));
    }
    if reboot {
        if d.role == Role::Controlplane {
            plan.steps.push(step(
                &d.name,
                Action::WaitEtcdMember,
                "every member started, none a learner",
                NONE,
            ));
        }
        back_in_kubernetes(plan, &d.name, &d.hostname, kube, None);
        plan.steps.push(step(
            &d.name,
            Action::Stabilize {
                millis: desired.stabilization.as_millis() as u64,
            },
            "stabilization wait before the next node",
            NONE,
        ));
    }
}
