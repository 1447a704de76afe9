//! The platform layer above the CNI (issue 17, items 2 and 3): `addons:` (applied after the CNI,
//! SOPS ones decrypted first) and the `gitops:` handover to Flux or Argo CD. The rules refuse,
//! at file:line, what would hand the tool a broken or leaking setup; nothing outside the repo is
//! read, and no secret value is printed.

mod common;
use common::{assert_found, demo_keys, edit, example_copy_flannel, problems, testdata};
use serde_json::Value;
use vixen_model::{Repo, addons, gitops};

const FLUX: &str = "gitops:\n  tool: flux\n  manifests:\n    - flux/gotk-components.yaml\n  url: https://git.example/home/cluster.git\n  path: clusters/home/apps\n";

/// The example with `extra` appended to cluster.yaml, Flux's stand-in install manifests at
/// flux/gotk-components.yaml and the encrypted addon at addons/backup.sops.yaml.
fn repo_with(extra: &str) -> (tempfile::TempDir, std::path::PathBuf) {
    let (dir, repo) = example_copy_flannel();
    for (from, to) in [
        ("flux-install.yaml", "flux/gotk-components.yaml"),
        ("addon-secret.sops.yaml", "addons/backup.sops.yaml"),
        ("cilium.yaml", "addons/plain.yaml"),
    ] {
        let to = repo.join(to);
        std::fs::create_dir_all(to.parent().unwrap()).unwrap();
        std::fs::copy(testdata(from), to).unwrap();
    }
    edit(&repo.join("cluster.yaml"), "", extra);
    (dir, repo)
}

fn find<'a>(objs: &'a [Value], kind: &str, name: &str) -> &'a Value {
    objs.iter()
        .find(|o| o["kind"] == kind && o["metadata"]["name"] == name)
        .unwrap_or_else(|| panic!("no {kind} {name} in {objs:#?}"))
}

#[test]
fn flux_handover_points_a_kustomization_at_the_apps_path_with_the_sops_key() {
    let (_dir, root) = repo_with(FLUX);
    assert_eq!(problems(&root), Vec::<String>::new());
    let repo = Repo::load(&root).unwrap();
    let objs = gitops::gitops_objects(&repo).unwrap();
    // The install manifests' own namespace (with its labels) is kept, not shadowed by a bare one.
    let namespaces: Vec<&Value> = objs.iter().filter(|o| o["kind"] == "Namespace").collect();
    assert_eq!(namespaces.len(), 1);
    assert_eq!(
        namespaces[0]["metadata"]["labels"]["app.kubernetes.io/instance"],
        "flux-system"
    );
    let source = find(&objs, "GitRepository", "apps");
    assert_eq!(source["metadata"]["namespace"], "flux-system");
    assert_eq!(
        source["spec"]["url"],
        "https://git.example/home/cluster.git"
    );
    assert_eq!(source["spec"]["ref"]["branch"], "main");
    assert_eq!(source["spec"]["interval"], "1m");
    assert!(source["spec"].get("secretRef").is_none());
    let k = find(&objs, "Kustomization", "apps");
    assert_eq!(k["spec"]["path"], "./clusters/home/apps");
    assert_eq!(k["spec"]["prune"], true);
    assert_eq!(k["spec"]["sourceRef"]["name"], "apps");
    assert_eq!(k["spec"]["decryption"]["provider"], "sops");
    assert_eq!(k["spec"]["decryption"]["secretRef"]["name"], "sops-age");

    let keys = demo_keys().age_keys_file().unwrap();
    let secret = gitops::sops_secret(vixen_model::GitopsTool::Flux, &keys);
    assert_eq!(secret["metadata"]["namespace"], "flux-system");
    let handed = secret["stringData"]["age.agekey"].as_str().unwrap();
    assert!(
        handed.starts_with("AGE-SECRET-KEY-1"),
        "not an age identity"
    );
    assert!(vixen_sops::Keyring::parse(handed, "handed").unwrap().len() == 1);
}

#[test]
fn argo_cd_handover_writes_a_repository_secret_and_the_root_application() {
    let (_dir, root) = example_copy_flannel();
    std::fs::create_dir_all(root.join("argocd")).unwrap();
    std::fs::write(
        root.join("argocd/install.yaml"),
        "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata:\n  name: applications.argoproj.io\n---\napiVersion: v1\nkind: ServiceAccount\nmetadata:\n  name: argocd-server\n",
    )
    .unwrap();
    edit(
        &root.join("cluster.yaml"),
        "",
        "gitops:\n  tool: argocd\n  manifests: [argocd/install.yaml]\n  url: ssh://git@git.example/home/apps.git\n  branch: prod\n",
    );
    assert_eq!(problems(&root), Vec::<String>::new());
    let objs = gitops::gitops_objects(&Repo::load(&root).unwrap()).unwrap();
    // install.yaml names no namespace (it is applied with -n argocd): vixen creates it.
    assert_eq!(find(&objs, "Namespace", "argocd")["apiVersion"], "v1");
    let repo_secret = find(&objs, "Secret", "vixen-apps-repo");
    assert_eq!(
        repo_secret["metadata"]["labels"]["argocd.argoproj.io/secret-type"],
        "repository"
    );
    assert_eq!(
        repo_secret["stringData"]["url"],
        "ssh://git@git.example/home/apps.git"
    );
    let app = find(&objs, "Application", "apps");
    assert_eq!(app["spec"]["source"]["targetRevision"], "prod");
    assert_eq!(app["spec"]["source"]["path"], "apps");
    assert_eq!(app["spec"]["syncPolicy"]["automated"]["prune"], true);

    // With credentials of the user's own, vixen writes no repository Secret.
    edit(
        &root.join("cluster.yaml"),
        "  branch: prod\n",
        "  branch: prod\n  credentialsSecret: apps-repo\n",
    );
    let objs = gitops::gitops_objects(&Repo::load(&root).unwrap()).unwrap();
    assert!(!objs.iter().any(|o| o["kind"] == "Secret"));
}

#[test]
fn gitops_mistakes_are_refused_at_their_line_without_quoting_a_token() {
    let cases = [
        // The install manifests lack a CRD the handover objects need.
        (
            FLUX.replace("flux/gotk-components.yaml", "addons/plain.yaml"),
            "cluster.yaml:29:5",
            "no CRD `gitrepositories.source.toolkit.fluxcd.io`",
        ),
        (
            FLUX.replace(
                "https://git.example",
                "https://me:ghp_secret123@git.example",
            ),
            "cluster.yaml:30:8",
            "carries credentials",
        ),
        (
            FLUX.replace("clusters/home/apps", "../../etc"),
            "cluster.yaml:31:9",
            "climbs out",
        ),
        (
            format!("{FLUX}  interval: 1d\n"),
            "cluster.yaml:32:13",
            "not a Flux interval",
        ),
        (
            FLUX.replace("tool: flux", "tool: argocd")
                .replace("path:", "interval: 1m\n  path:"),
            "cluster.yaml:31:13",
            "`interval` is Flux's",
        ),
        (
            format!("{FLUX}  branch: 'a..b'\n"),
            "cluster.yaml:32:11",
            "not a valid branch name",
        ),
        (
            FLUX.replace("flux/gotk-components.yaml", "../outside.yaml"),
            "cluster.yaml:29:7",
            "GitOps manifest file",
        ),
    ];
    for (extra, at, words) in cases {
        let (_dir, root) = repo_with(&extra);
        std::fs::write(
            root.parent().unwrap().join("outside.yaml"),
            "canary-outside-1234",
        )
        .unwrap();
        let found = problems(&root);
        assert_found(&found, at, words);
        let all = found.join("\n");
        assert!(!all.contains("ghp_secret123"), "a token was printed: {all}");
        assert!(
            !all.contains("canary-outside"),
            "an outside file was printed: {all}"
        );
    }
}

#[test]
fn an_encrypted_addon_is_decrypted_with_the_key_and_checked_without_it() {
    let (_dir, root) = repo_with("addons:\n  - addons/plain.yaml\n  - addons/backup.sops.yaml\n");
    assert_eq!(problems(&root), Vec::<String>::new());
    let repo = Repo::load(&root).unwrap();
    let keyless = addons::addon_objects(&repo, None).unwrap();
    assert_eq!(keyless.skipped, 1);
    let keyed = addons::addon_objects(&repo, Some(&demo_keys())).unwrap();
    assert_eq!(keyed.skipped, 0);
    let objs = keyed.values();
    // File order: the plain file's objects, then the decrypted Secret.
    let secret = objs.last().unwrap();
    assert_eq!(secret["kind"], "Secret");
    assert_eq!(secret["stringData"]["token"], "canary-addon-value-4711");
    assert!(
        secret.get("sops").is_none(),
        "sops metadata left in: {secret}"
    );

    // A wrong key: refused at the file, nothing decrypted, no value printed.
    let other = vixen_sops::Keyring::from_file(testdata("other.agekey")).unwrap();
    let err = addons::addon_objects(&repo, Some(&other))
        .unwrap_err()
        .to_string();
    assert!(err.contains("addons/backup.sops.yaml"), "{err}");
    assert!(!err.contains("canary-addon"), "{err}");
    // Tampered: the key-less check already sees that the file was damaged.
    let path = root.join("addons/backup.sops.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    std::fs::write(
        &path,
        text.replacen("mac: ENC[AES256_GCM,data:", "mac: ENC[AES256_GCM,data:x", 1),
    )
    .unwrap();
    assert!(!problems(&root).is_empty());
}

#[test]
fn addons_outside_the_repo_twice_listed_or_shared_with_another_set_are_refused() {
    let (dir, root) = repo_with(&format!(
        "addons:\n  - addons/plain.yaml\n  - ../outside.yaml\n  - addons/plain.yaml\n{}",
        FLUX
    ));
    std::fs::write(dir.path().join("outside.yaml"), "canary-outside-99").unwrap();
    let found = problems(&root);
    assert_found(&found, "cluster.yaml:28:5", "climbs out");
    assert_found(&found, "cluster.yaml:29:5", "listed twice");
    assert!(!found.join("\n").contains("canary-outside"), "{found:?}");

    // The same object in an addon and in the GitOps manifests.
    let (_dir, root) = repo_with(&format!("addons:\n  - flux/copy.yaml\n{FLUX}"));
    std::fs::copy(testdata("flux-install.yaml"), root.join("flux/copy.yaml")).unwrap();
    let found = problems(&root);
    assert_found(
        &found,
        "flux/gotk-components.yaml:3:1",
        "is in flux/copy.yaml as well",
    );
}
