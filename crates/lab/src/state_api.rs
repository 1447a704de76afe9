//! The COSI resource API (`cosi.resource.State`), the part the lab serves: Get of the machine
//! config, which `talosctl get machineconfig` (and `vixen import`) reads.
//!
//! As Talos: machined registers the COSI state server behind its access policy
//! (`internal/app/resources/access.go`): write verbs are refused, an unknown resource type or
//! namespace is `PermissionDenied`, and a sensitive type (MachineConfig is
//! `meta.Sensitive`, `pkg/machinery/resources/config/machine_config.go`) needs `os:admin`
//! (`authz.ErrNotAuthorized`, "not authorized"). Get itself is allowed to admin, operator and
//! reader (`internal/app/machined/pkg/system/services/machined.go`). The 1.11 maintenance server
//! registers the same filtered state (`internal/app/maintenance/server.go`); its callers have no
//! role, so the machine config is never readable there. apid proxies COSI calls to one node
//! only (`internal/app/apid/pkg/director/director.go`).
//!
//! The spec is the config byte for byte as it was submitted (`MachineConfigSpec.yaml_marshalled`,
//! `api/resource/config/config.proto`), its YAML form the same text as one YAML string
//! (`v1alpha1Spec.MarshalYAML`). The lab simulates no other resource type.

use prost::Message as _;
use serde_json::json;
use tonic::{Request, Response, Status};
use vixen_talos::api::cosi as pb;
use vixen_talos::api::cosi::state_server::State;
use vixen_talos::api::resource_config::MachineConfigSpec;

use crate::server::{NodeApi, Reply, parts};
use crate::tls::PeerInfo;

const READER: &[&str] = &["os:admin", "os:operator", "os:reader"];
const MACHINE_CONFIG: &str = "MachineConfigs.config.talos.dev";
/// Namespaces every Talos node has (`pkg/machinery/resources/*/`, `NamespaceName`).
const NAMESPACES: &[&str] = &[
    "config", "runtime", "network", "cluster", "k8s", "secrets", "etcd", "files", "hardware",
    "block", "v1alpha1", "meta", "cri", "perf", "time",
];

#[tonic::async_trait]
impl State for NodeApi {
    async fn get(&self, req: Request<pb::GetRequest>) -> Reply<pb::GetResponse> {
        let (md, peer, msg) = parts!(req);
        if !self.maintenance && md.get_all("nodes").iter().next().is_some() {
            return Err(Status::invalid_argument(
                "one-2-many proxying is not supported for COSI methods",
            ));
        }
        let admin = peer
            .as_ref()
            .and_then(|p| p.roles.as_ref())
            .is_some_and(|r| r.iter().any(|r| r == "os:admin"));
        let maintenance = self.maintenance;
        let detail = json!({ "namespace": msg.namespace, "type": msg.r#type, "id": msg.id });
        let (_, _, resource) = self
            .run(
                "/cosi.resource.State/Get",
                &md,
                peer.as_ref(),
                detail,
                READER,
                |n| async move {
                    if msg.r#type.to_lowercase() != MACHINE_CONFIG.to_lowercase() {
                        return Err(Status::unimplemented(format!(
                            "the lab simulates no resource type {:?} but {MACHINE_CONFIG}",
                            msg.r#type
                        )));
                    }
                    if maintenance || !admin {
                        return Err(Status::permission_denied("not authorized"));
                    }
                    if !NAMESPACES.contains(&msg.namespace.as_str()) {
                        return Err(Status::permission_denied(format!(
                            "namespace {:?} is not supported",
                            msg.namespace
                        )));
                    }
                    let st = n.st();
                    let config = st
                        .config
                        .clone()
                        .filter(|_| msg.namespace == "config" && msg.id == "v1alpha1");
                    let generation = st.apply_gen;
                    drop(st);
                    let Some(config) = config else {
                        return Err(Status::not_found(format!(
                            "resource {MACHINE_CONFIG}({}/{}@undefined) doesn't exist",
                            msg.namespace, msg.id
                        )));
                    };
                    let raw = config.raw.clone();
                    let yaml_spec = serde_yaml_ng::to_string(&raw).unwrap_or_default();
                    let spec = MachineConfigSpec {
                        yaml_marshalled: raw.into_bytes(),
                    };
                    Ok(pb::Resource {
                        metadata: Some(pb::Metadata {
                            namespace: "config".into(),
                            r#type: MACHINE_CONFIG.into(),
                            id: "v1alpha1".into(),
                            version: (generation + 1).to_string(),
                            phase: "running".into(),
                            annotations: [("talos.dev/yaml-spec".to_string(), "1".to_string())]
                                .into(),
                            ..Default::default()
                        }),
                        spec: Some(pb::Spec {
                            proto_spec: spec.encode_to_vec(),
                            yaml_spec,
                        }),
                    })
                },
            )
            .await?;
        Ok(Response::new(pb::GetResponse {
            resource: Some(resource),
        }))
    }
}
