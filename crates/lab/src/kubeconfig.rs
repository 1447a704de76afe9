//! The admin kubeconfig a control plane hands out (`Kubeconfig` RPC): a `.tar.gz` holding one
//! file, `kubeconfig`, with a client certificate (O=system:masters) minted from `cluster.ca`.
//! With `--kube` it points at the lab's kube-apiserver; without, at the configured endpoint
//! (where nothing answers).

use std::io::Write as _;

use tonic::Status;

use crate::config::MachineConfig;

/// Builds the archive Talos streams for `talosctl kubeconfig`; `server` overrides the endpoint.
pub(crate) fn archive(cfg: &MachineConfig, server: Option<&str>) -> Result<Vec<u8>, Status> {
    let ca = vixen_pki::CertAndKey {
        crt: cfg.get("cluster.ca.crt").unwrap_or_default().to_string(),
        key: vixen_pki::Secret::new(cfg.get("cluster.ca.key").unwrap_or_default().to_string()),
    };
    if ca.crt.is_empty() || ca.key.expose().is_empty() {
        return Err(Status::failed_precondition(
            "cluster.ca with key is required for kubeconfig",
        ));
    }
    let usage = vixen_pki::Usage::Client {
        roles: &["system:masters"],
    };
    let minted = vixen_pki::mint(
        &ca,
        "cluster.ca",
        "admin",
        &usage,
        time::Duration::days(365),
    )
    .map_err(|e| Status::internal(e.to_string()))?;
    let name = cfg.get("cluster.clusterName").unwrap_or("lab");
    let server = server
        .or(cfg.get("cluster.controlPlane.endpoint"))
        .unwrap_or_default();
    let text = format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: {name}\n  cluster:\n    server: {server}\n    \
         certificate-authority-data: {ca}\nusers:\n- name: admin@{name}\n  user:\n    \
         client-certificate-data: {crt}\n    client-key-data: {key}\ncontexts:\n- name: admin@{name}\n  \
         context:\n    cluster: {name}\n    namespace: default\n    user: admin@{name}\n\
         current-context: admin@{name}\n",
        ca = ca.crt,
        crt = vixen_pki::b64(&minted.cert_pem),
        key = vixen_pki::b64(minted.key_pem.expose()),
    );
    let gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(text.len() as u64);
    header.set_mode(0o600);
    header.set_cksum();
    tar.append_data(&mut header, "kubeconfig", text.as_bytes())
        .map_err(|e| Status::internal(e.to_string()))?;
    let mut gz = tar
        .into_inner()
        .map_err(|e| Status::internal(e.to_string()))?;
    gz.flush().map_err(|e| Status::internal(e.to_string()))?;
    gz.finish().map_err(|e| Status::internal(e.to_string()))
}
