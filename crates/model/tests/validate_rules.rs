//! One case per validation rule: take the homelab example, break one thing, and expect exactly
//! that problem at the right file and line. The untouched example must be clean.

use std::path::{Path, PathBuf};

use vixen_model::validate::load_and_validate;

fn example() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR")
        .map_or_else(
            || std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")),
            std::path::PathBuf::from,
        )
        .join("../../examples/homelab")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap() {
        let entry = entry.unwrap();
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

/// Copies the example, applies `edit` (file, old text, new text; empty old = append; new = "-"
/// deletes the file), validates, and returns every diagnostic as `file:line:col: message`.
fn problems(edits: &[(&str, &str, &str)]) -> Vec<String> {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(&example(), dir.path());
    for (file, old, new) in edits {
        let path = dir.path().join(file);
        if *new == "-" {
            std::fs::remove_file(&path).unwrap();
            continue;
        }
        let text = std::fs::read_to_string(&path).unwrap_or_default();
        let text = if old.is_empty() {
            format!("{text}{new}")
        } else {
            assert!(text.contains(old), "{file} does not contain {old:?}");
            text.replacen(old, new, 1)
        };
        std::fs::write(&path, text).unwrap();
    }
    match load_and_validate(dir.path()) {
        Ok(_) => Vec::new(),
        Err(d) => d.0.iter().map(ToString::to_string).collect(),
    }
}

#[track_caller]
fn expect(edits: &[(&str, &str, &str)], location: &str, words: &str) {
    let found = problems(edits);
    assert!(
        found
            .iter()
            .any(|p| p.starts_with(location) && p.contains(words)),
        "expected `{location}: ...{words}...`, got:\n{}",
        found.join("\n")
    );
}

#[test]
fn homelab_example_is_valid() {
    assert_eq!(problems(&[]), Vec::<String>::new());
}

macro_rules! rule {
    ($name:ident, [$(($f:expr, $o:expr, $n:expr)),*], $loc:expr, $words:expr) => {
        #[test]
        fn $name() {
            expect(&[$(($f, $o, $n)),*], $loc, $words);
        }
    };
}

// Issue 14: Kubernetes 1.34 removed the kubelet's `--cloud-config` and the feature gate
// `LegacySidecarContainers`; a kubelet or API server started with them does not start.
rule!(
    kubelet_flag_removed_in_the_target_kubernetes,
    [(
        "patches/common.yaml",
        "",
        "  kubelet:\n    extraArgs:\n      cloud-config: /etc/cloud.conf\n"
    )],
    "patches/common.yaml:9:21",
    "kubelet flag `--cloud-config` was removed in Kubernetes 1.34"
);
rule!(
    feature_gate_removed_in_the_target_kubernetes,
    [(
        "patches/controlplane.yaml",
        "audit-log-maxage: \"30\"",
        "audit-log-maxage: \"30\"\n      feature-gates: LegacySidecarContainers=true"
    )],
    "patches/controlplane.yaml:7:22",
    "feature gate `LegacySidecarContainers` was removed in Kubernetes 1.34"
);
rule!(
    even_control_plane_count,
    [("nodes/cp-3.yaml", "", "-")],
    "nodes/cp-2.yaml:3:7",
    "2 control planes"
);
rule!(
    zero_control_planes_is_even,
    [
        ("nodes/cp-1.yaml", "", "-"),
        ("nodes/cp-2.yaml", "", "-"),
        ("nodes/cp-3.yaml", "", "-")
    ],
    "cluster.yaml:1:1",
    "0 control planes"
);
rule!(
    duplicate_node_name,
    [("nodes/worker-2.yaml", "name: worker-2", "name: worker-1")],
    "nodes/worker-2.yaml:2:7",
    "node name `worker-1` is also used"
);
rule!(
    duplicate_hostname,
    [(
        "nodes/worker-2.yaml",
        "role: worker",
        "hostname: worker-1\nrole: worker"
    )],
    "nodes/worker-2.yaml:3:11",
    "hostname `worker-1`"
);
rule!(
    duplicate_address,
    [("nodes/worker-2.yaml", "127.0.10.5/24", "127.0.10.4/24")],
    "nodes/worker-2.yaml:8:17",
    "address 127.0.10.4 is already used by node worker-1"
);
rule!(
    duplicate_maintenance_address,
    [("nodes/worker-2.yaml", "127.0.10.22", "127.0.10.21")],
    "nodes/worker-2.yaml:4:21",
    "already used"
);
rule!(
    address_without_prefix,
    [("nodes/worker-1.yaml", "127.0.10.4/24", "127.0.10.4")],
    "nodes/worker-1.yaml:8:17",
    "not an address in CIDR form"
);
rule!(
    bad_maintenance_address,
    [(
        "nodes/worker-1.yaml",
        "maintenanceAddress: 127.0.10.21",
        "maintenanceAddress: 127.0.10.300"
    )],
    "nodes/worker-1.yaml:4:21",
    "not an IP address"
);
rule!(
    vip_outside_subnet,
    [("nodes/cp-1.yaml", "vip: 127.0.10.100", "vip: 127.0.11.100")],
    "nodes/cp-1.yaml:12:10",
    "outside the subnets"
);
rule!(
    vip_is_a_node_address,
    [("nodes/cp-1.yaml", "vip: 127.0.10.100", "vip: 127.0.10.4")],
    "nodes/cp-1.yaml:12:10",
    "also the address of node worker-1"
);
rule!(
    vip_on_worker,
    [(
        "nodes/worker-1.yaml",
        "    vlans:",
        "    vip: 127.0.10.100\n    vlans:"
    )],
    "nodes/worker-1.yaml:12:10",
    "VIP on a worker"
);
rule!(
    overlapping_pools,
    [("network.yaml", "127.0.30.0/28", "127.0.20.0/24")],
    "network.yaml:",
    "overlaps pool `default`"
);
rule!(
    pool_contains_node_address,
    [("network.yaml", "127.0.30.0/28", "127.0.10.0/29")],
    "network.yaml:5:13",
    "contains 127.0.10.1, an address of node cp-1"
);
rule!(
    bad_cidr_in_pool,
    [("network.yaml", "127.0.30.0/28", "127.0.30.0/33")],
    "network.yaml:5:13",
    "not a CIDR"
);
rule!(
    reversed_range,
    [("network.yaml", "start: 127.0.20.200", "start: 127.0.20.230")],
    "network.yaml:8:9",
    "empty or mixes"
);
rule!(
    unparsable_talos_version,
    [("cluster.yaml", "version: v1.11.6", "version: v1.11")],
    "cluster.yaml:7:12",
    "not a version"
);
rule!(
    incompatible_versions,
    [("cluster.yaml", "version: 1.34.1", "version: 1.36.0")],
    "cluster.yaml:10:12",
    "supports Kubernetes 1.29 to 1.34"
);
rule!(
    missing_secrets_file,
    [("secrets/talos.sops.yaml", "", "-")],
    "cluster.yaml:12:10",
    "does not exist"
);
rule!(
    missing_patch_file,
    [("patches/common.yaml", "", "-")],
    "cluster.yaml:18:7",
    "patch file `patches/common.yaml` does not exist"
);
rule!(
    patch_is_not_yaml,
    [("patches/common.yaml", "", "machine: [unclosed\n")],
    "patches/common.yaml:",
    "invalid YAML in patch"
);
rule!(
    json_patch_does_not_apply,
    [(
        "patches/worker-2-storage.yaml",
        "path: /machine/kubelet/extraMounts",
        "path: /machine/nosuch/extraMounts"
    )],
    "patches/worker-2-storage.yaml:2:3",
    "JSON patch does not apply to worker-2"
);
rule!(
    patch_changes_machine_type,
    [("patches/common.yaml", "", "  type: worker\n")],
    "patches/common.yaml:7:9",
    "changes machine.type"
);
rule!(
    unknown_field,
    [(
        "nodes/cp-1.yaml",
        "role: controlplane",
        "role: controlplane\nrolle: worker"
    )],
    "nodes/cp-1.yaml:4:1",
    "unknown field `rolle`"
);
rule!(
    wrong_type,
    [(
        "cluster.yaml",
        "workerConcurrency: 1",
        "workerConcurrency: many"
    )],
    "cluster.yaml:24:22",
    "upgrade.workerConcurrency"
);
rule!(
    bad_role,
    [("nodes/cp-1.yaml", "role: controlplane", "role: master")],
    "nodes/cp-1.yaml:3:7",
    "unknown variant `master`"
);
rule!(
    bad_duration,
    [("cluster.yaml", "stabilization: 30s", "stabilization: soon")],
    "cluster.yaml:23:18",
    "not a duration"
);
rule!(
    yaml_syntax_error,
    [("nodes/cp-1.yaml", "", "  - : : [\n")],
    "nodes/cp-1.yaml:",
    "invalid YAML"
);
rule!(
    duplicate_key,
    [("nodes/cp-1.yaml", "", "name: again\n")],
    "nodes/cp-1.yaml:18:1",
    "duplicate key `name`"
);
rule!(
    management_address_not_own,
    [(
        "nodes/cp-1.yaml",
        "installDisk:",
        "managementAddresses: [127.0.10.9]\ninstallDisk:"
    )],
    "nodes/cp-1.yaml:5:23",
    "not one of the node's own"
);
rule!(
    duplicate_vlan,
    [(
        "nodes/cp-1.yaml",
        "addresses: [127.0.20.1/24]",
        "addresses: [127.0.20.1/24]\n      - id: 20"
    )],
    "nodes/cp-1.yaml:16:13",
    "VLAN 20 appears twice"
);
rule!(
    bad_endpoint,
    [(
        "cluster.yaml",
        "endpoint: https://127.0.10.100:6443",
        "endpoint: 127.0.10.100"
    )],
    "cluster.yaml:5:11",
    "not an https URL"
);

#[test]
fn all_problems_are_reported_at_once() {
    let found = problems(&[
        ("nodes/cp-3.yaml", "", "-"),
        ("nodes/worker-2.yaml", "127.0.10.5/24", "127.0.10.4/24"),
        ("network.yaml", "127.0.30.0/28", "127.0.20.0/24"),
        (
            "patches/worker-2-storage.yaml",
            "path: /machine/kubelet/extraMounts",
            "path: /nosuch/x",
        ),
    ]);
    assert!(found.len() >= 4, "{found:#?}");
}

// --- backup: (issue 16). The block is appended at line 26 of cluster.yaml.
const BACKUP: &str = "backup:
  schedule: \"0 3 * * *\"
  timeZone: Europe/Paris
  retention:
    count: 7
    maxAge: 168h
  beforeRisky: required
  target:
    s3:
      endpoint: http://127.140.0.1:9000
      bucket: etcd-backups
      prefix: homelab
      pathStyle: true
";

fn with_backup(old: &str, new: &str) -> String {
    assert!(BACKUP.contains(old), "BACKUP does not contain {old:?}");
    BACKUP.replacen(old, new, 1)
}

#[test]
fn backup_block_is_valid() {
    assert_eq!(
        problems(&[("cluster.yaml", "", BACKUP)]),
        Vec::<String>::new()
    );
}

#[test]
fn backup_local_target_is_valid() {
    let b = with_backup(
        "    s3:\n      endpoint: http://127.140.0.1:9000\n      bucket: etcd-backups\n      prefix: homelab\n      pathStyle: true\n",
        "    local:\n      path: /var/lib/vixen/backups\n",
    );
    assert_eq!(problems(&[("cluster.yaml", "", &b)]), Vec::<String>::new());
}

#[track_caller]
fn expect_backup(old: &str, new: &str, location: &str, words: &str) {
    let b = with_backup(old, new);
    expect(&[("cluster.yaml", "", &b)], location, words);
}

#[test]
fn backup_bad_schedule() {
    expect_backup(
        "0 3 * * *",
        "0 25 * * *",
        "cluster.yaml:27:13",
        "not a cron",
    );
    expect_backup("0 3 * * *", "every day", "cluster.yaml:27:13", "5-field");
}

#[test]
fn backup_bad_time_zone() {
    expect_backup(
        "Europe/Paris",
        "Mars/Olympus",
        "cluster.yaml:28:13",
        "not an IANA time zone",
    );
}

#[test]
fn backup_zero_count_and_bad_age() {
    expect_backup(
        "count: 7",
        "count: 0",
        "cluster.yaml:30:12",
        "retention count is 0",
    );
    expect_backup(
        "168h",
        "a week",
        "cluster.yaml:31:13",
        "not a positive duration",
    );
}

#[test]
fn backup_bad_before_risky() {
    expect_backup(
        "beforeRisky: required",
        "beforeRisky: sometimes",
        "cluster.yaml:32:16",
        "unknown variant",
    );
}

#[test]
fn backup_bad_endpoint_and_bucket() {
    expect_backup(
        "http://127.140.0.1:9000",
        "ftp://127.140.0.1",
        "cluster.yaml:35:17",
        "not an http(s) URL",
    );
    expect_backup(
        "http://127.140.0.1:9000",
        "https://key:secret@s3.example.net",
        "cluster.yaml:35:17",
        "not an http(s) URL",
    );
    expect_backup(
        "bucket: etcd-backups",
        "bucket: Etcd_Backups",
        "cluster.yaml:36:15",
        "not a bucket name",
    );
    expect_backup(
        "prefix: homelab",
        "prefix: ../other",
        "cluster.yaml:37:15",
        "not a clean key prefix",
    );
}

#[test]
fn backup_both_and_no_targets() {
    expect_backup(
        "  target:\n",
        "  target:\n    local:\n      path: /srv/b\n",
        "cluster.yaml:35:7",
        "both `s3` and `local`",
    );
    let b = BACKUP.split("  target:").next().unwrap().to_string() + "  target: {}\n";
    expect(
        &[("cluster.yaml", "", &b)],
        "cluster.yaml:33:11",
        "neither `s3` nor `local`",
    );
}

#[test]
fn backup_relative_local_path() {
    expect_backup(
        "    s3:\n      endpoint: http://127.140.0.1:9000\n      bucket: etcd-backups\n      prefix: homelab\n      pathStyle: true\n",
        "    local:\n      path: backups\n",
        "cluster.yaml:35:13",
        "not an absolute path",
    );
}

/// The credentials file is read through the sandbox like every other repo path: a path that
/// climbs out is refused at its line, and nothing outside is read.
#[test]
fn backup_credentials_file_is_sandboxed() {
    expect_backup(
        "      pathStyle: true\n",
        "      pathStyle: true\n      credentials:\n        sopsFile: ../../etc/passwd\n",
        "cluster.yaml:40:19",
        "climbs out",
    );
    expect_backup(
        "      pathStyle: true\n",
        "      pathStyle: true\n      credentials:\n        sopsFile: /etc/passwd\n",
        "cluster.yaml:40:19",
        "absolute path",
    );
    // A plaintext credentials file is refused at the file itself.
    let b = with_backup(
        "      pathStyle: true\n",
        "      pathStyle: true\n      credentials:\n        sopsFile: patches/common.yaml\n",
    );
    expect(
        &[("cluster.yaml", "", &b)],
        "patches/common.yaml:1:1",
        "not SOPS-encrypted",
    );
    expect_backup(
        "      pathStyle: true\n",
        "      pathStyle: true\n      credentials:\n        sopsFile: patches/common.yaml\n        secret: s3\n",
        "cluster.yaml:40:9",
        "exactly one of",
    );
}

#[test]
fn backup_bad_recipient() {
    expect_backup(
        "  beforeRisky: required\n",
        "  beforeRisky: required\n  recipients: [age1notakey]\n",
        "cluster.yaml:33:16",
        "not an age recipient",
    );
}
