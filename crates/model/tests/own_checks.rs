//! vixen's own checks of what Talos would refuse (issue 14, "invalid input reaching nodes"):
//! one case per rule, each with the exact file:line:col. Before these checks `validate` said
//! valid and the node itself refused the live apply.

mod common;
use common::{assert_found, edit, example_copy, problems, testdata};

/// Copies the example, applies the edits (file, old, new; empty old appends), and expects the
/// problem at `location`.
#[track_caller]
fn expect(edits: &[(&str, &str, &str)], location: &str, words: &str) {
    let (_dir, repo) = example_copy();
    for (file, old, new) in edits {
        edit(&repo.join(file), old, new);
    }
    assert_found(&problems(&repo), location, words);
}

macro_rules! rule {
    ($(#[$doc:meta])* $name:ident, [$(($f:expr, $o:expr, $n:expr)),*], $loc:expr, $words:expr) => {
        $(#[$doc])*
        #[test]
        fn $name() {
            expect(&[$(($f, $o, $n)),*], $loc, $words);
        }
    };
}

const ZONE: &str = "topology.kubernetes.io/zone: rack-1";

rule!(
    /// A port out of range in the control-plane endpoint.
    endpoint_port_out_of_range,
    [("cluster.yaml", "127.0.10.100:6443", "127.0.10.100:70000")],
    "cluster.yaml:5:11",
    "port `70000`"
);
rule!(
    /// Port 0.
    endpoint_port_zero,
    [("cluster.yaml", "127.0.10.100:6443", "127.0.10.100:0")],
    "cluster.yaml:5:11",
    "not a number from 1 to 65535"
);
rule!(
    /// A label key whose prefix is not a DNS subdomain.
    label_key_invalid,
    [("nodes/cp-1.yaml", ZONE, "Topology.Example/zone: rack-1")],
    "nodes/cp-1.yaml:17:3",
    "is not a DNS subdomain"
);
rule!(
    /// A label value with a space.
    label_value_invalid,
    [("nodes/cp-1.yaml", ZONE, "topology.kubernetes.io/zone: rack 1")],
    "nodes/cp-1.yaml:17:32",
    "the value of label `topology.kubernetes.io/zone`"
);
rule!(
    /// A label name longer than 63 characters.
    label_name_too_long,
    [(
        "nodes/cp-1.yaml",
        ZONE,
        "example.com/aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa: x"
    )],
    "nodes/cp-1.yaml:17:3",
    "longer than 63"
);
rule!(
    /// An annotation Talos reserves.
    reserved_annotation,
    [("nodes/cp-1.yaml", "", "annotations:\n  talos.dev/owned-labels: x\n")],
    "nodes/cp-1.yaml:19:3",
    "reserved by Talos"
);
rule!(
    /// A taint key with a space.
    taint_key_invalid,
    [(
        "nodes/cp-1.yaml",
        "",
        "taints:\n  - key: bad key\n    effect: NoSchedule\n"
    )],
    "nodes/cp-1.yaml:19:10",
    "key `bad key`"
);
rule!(
    /// A taint value that is not a label value.
    taint_value_invalid,
    [(
        "nodes/cp-1.yaml",
        "",
        "taints:\n  - key: dedicated\n    value: \"no way\"\n    effect: NoSchedule\n"
    )],
    "nodes/cp-1.yaml:20:12",
    "the value of taint `dedicated`"
);
rule!(
    /// A taint effect Kubernetes does not have.
    taint_effect_invalid,
    [(
        "nodes/cp-1.yaml",
        "",
        "taints:\n  - key: dedicated\n    effect: Never\n"
    )],
    "nodes/cp-1.yaml:20:13",
    "unknown variant `Never`"
);
rule!(
    /// A patch that sets an invalid node label.
    patch_sets_invalid_label,
    [("patches/common.yaml", "", "  nodeLabels:\n    a/b/c: v\n")],
    "patches/common.yaml:8:12",
    "more than one `/`"
);
rule!(
    /// A patch that sets a taint with an unknown effect.
    patch_sets_taint_with_bad_effect,
    [(
        "patches/common.yaml",
        "",
        "  nodeTaints:\n    dedicated: gpu:Sometimes\n"
    )],
    "patches/common.yaml:8:16",
    "taint effect `Sometimes`"
);
rule!(
    /// `machine.network` as a list (Talos: *NetworkConfig, a map).
    patch_makes_machine_network_a_list,
    [("patches/common.yaml", "", "  network:\n    - interface: eth1\n")],
    "patches/common.yaml:8:5",
    "`machine.network` is a list here, but Talos has a map"
);
rule!(
    /// `machine.kubelet.extraArgs` as a list (Talos: a map of arguments).
    patch_makes_kubelet_extra_args_a_list,
    [(
        "patches/common.yaml",
        "",
        "  kubelet:\n    extraArgs: [--v=2]\n"
    )],
    "patches/common.yaml:8:16",
    "`machine.kubelet.extraArgs` is a list"
);
rule!(
    /// `machine.files` as a map (Talos: a list).
    patch_makes_machine_files_a_map,
    [("patches/common.yaml", "", "  files:\n    path: /var/x\n")],
    "patches/common.yaml:8:5",
    "`machine.files` is a map here, but Talos has a list"
);
rule!(
    /// `machine.env` as a list.
    patch_makes_machine_env_a_list,
    [("patches/common.yaml", "", "  env: [A=1]\n")],
    "patches/common.yaml:7:8",
    "`machine.env` is a list"
);
rule!(
    /// `cluster.apiServer` as a list.
    patch_makes_api_server_a_list,
    [(
        "patches/controlplane.yaml",
        "  apiServer:\n    extraArgs:\n      audit-log-maxage: \"30\"",
        "  apiServer:\n    - x"
    )],
    "patches/controlplane.yaml:5:5",
    "`cluster.apiServer` is a list"
);
rule!(
    /// `machine` itself replaced by a list.
    patch_makes_machine_a_list,
    [(
        "patches/common.yaml",
        "machine:\n  sysctls:\n    vm.nr_hugepages: \"0\"\n  time:\n    disabled: false\n",
        "machine:\n  - sysctls\n"
    )],
    "patches/common.yaml:3:3",
    "`machine` is a list"
);
rule!(
    /// A JSON patch operation that puts a list at `machine.install`: reported at the operation.
    json_patch_makes_install_a_list,
    [(
        "patches/worker-2-storage.yaml",
        "",
        "- op: replace\n  path: /machine/install\n  value: [x]\n"
    )],
    "patches/worker-2-storage.yaml:9:3",
    "`machine.install` is a list"
);
rule!(
    /// A document of a kind Talos does not register.
    unknown_document_kind,
    [(
        "patches/common.yaml",
        "",
        "---\napiVersion: v1alpha1\nkind: NoSuchConfig\nname: x\n"
    )],
    "patches/common.yaml:9:7",
    "`kind: NoSuchConfig` is not a config document Talos knows"
);
rule!(
    /// A kind newer than the cluster's Talos (VRFConfig came with 1.13; the example runs 1.11).
    document_kind_too_new,
    [(
        "patches/common.yaml",
        "",
        "---\napiVersion: v1alpha1\nkind: VRFConfig\nname: x\n"
    )],
    "patches/common.yaml:9:7",
    "needs Talos 1.13"
);
rule!(
    /// A known kind with an apiVersion Talos does not register it for.
    document_api_version_unknown,
    [(
        "patches/common.yaml",
        "",
        "---\napiVersion: v1beta1\nkind: UserVolumeConfig\nname: x\n"
    )],
    "patches/common.yaml:8:13",
    "`apiVersion: v1beta1`"
);
rule!(
    /// `kind` without `apiVersion` (Talos: "missing apiVersion").
    document_kind_without_api_version,
    [("patches/common.yaml", "", "---\nkind: UserVolumeConfig\nname: x\n")],
    "patches/common.yaml:8:1",
    "needs `apiVersion`"
);
rule!(
    /// The same document twice (Talos: "duplicate document").
    duplicate_document,
    [(
        "patches/common.yaml",
        "",
        "---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: x\n---\napiVersion: v1alpha1\nkind: UserVolumeConfig\nname: x\n"
    )],
    "patches/common.yaml:12:1",
    "a second UserVolumeConfig document"
);
rule!(
    /// An unknown Talos version is reported at the Talos version, not at Kubernetes'.
    unknown_talos_version_at_its_line,
    [("cluster.yaml", "version: v1.11.6", "version: v2.0.0")],
    "cluster.yaml:7:12",
    "not a Talos version vixen knows"
);

/// A SOPS-encrypted file used as a plain patch would be applied as ciphertext: refused at the
/// line of its `sops:` key.
#[test]
fn encrypted_patch_not_named_sops_yaml() {
    let (_dir, repo) = example_copy();
    std::fs::copy(testdata("env.sops.yaml"), repo.join("patches/env.yaml")).unwrap();
    edit(
        &repo.join("nodes/cp-1.yaml"),
        "",
        "patches: [patches/env.yaml]\n",
    );
    assert_found(&problems(&repo), "patches/env.yaml:4:1", "SOPS-encrypted");
}
