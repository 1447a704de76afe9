//! What the lab shows the outside: `LABDIR/lab.json` (the node table, rewritten atomically on every
//! change) and `LABDIR/calls.jsonl` (one JSON object per RPC a node received). The keys are a
//! contract with scripts and tests: do not rename them.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// `LABDIR/lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct LabStatus {
    /// One entry per node, in spec order.
    pub nodes: Vec<NodeStatus>,
    /// The lab's kube-apiserver (`https://ip:port`) once started (`--kube`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kube_api: Option<String>,
}

/// One node of `lab.json`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct NodeStatus {
    /// Node name.
    pub name: String,
    /// `controlplane` or `worker`.
    pub role: String,
    /// The maintenance-mode address.
    pub maintenance_address: String,
    /// The management address it answers on now.
    pub current_address: String,
    /// `maintenance`, `configured`, `rebooting` or `down`.
    pub mode: String,
    /// The running Talos version tag.
    pub talos_version: String,
    /// `http://<mgmt addr>:2379` while this control plane's etcd runs, else null.
    pub etcd_client_url: Option<String>,
}

/// One line of `LABDIR/calls.jsonl`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct CallRecord {
    /// RFC 3339 UTC time.
    pub time: String,
    /// The node that received the call.
    pub node: String,
    /// Full gRPC path, e.g. `/machine.MachineService/ApplyConfiguration`.
    pub method: String,
    /// Mode, flags and other request details.
    pub detail: serde_json::Value,
    /// `ok`, or `<gRPC code>: <message>`.
    pub result: String,
    /// The Common Name of the caller's client certificate (absent without one, as in
    /// maintenance mode): tells apart two clients that share a CA.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub client: Option<String>,
}

impl LabStatus {
    /// Reads `LABDIR/lab.json`.
    ///
    /// # Errors
    /// [`Error::Io`] when missing or unreadable.
    pub fn load(dir: &Path) -> Result<Self> {
        let path = dir.join("lab.json");
        let text = std::fs::read_to_string(&path).map_err(|source| io(&path, source))?;
        serde_json::from_str(&text).map_err(|e| io(&path, std::io::Error::other(e)))
    }
}

impl CallRecord {
    /// Reads every record of `LABDIR/calls.jsonl`.
    ///
    /// # Errors
    /// [`Error::Io`] when unreadable.
    pub fn load_all(dir: &Path) -> Result<Vec<Self>> {
        let path = dir.join("calls.jsonl");
        let text = std::fs::read_to_string(&path).map_err(|source| io(&path, source))?;
        text.lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| serde_json::from_str(l).map_err(|e| io(&path, std::io::Error::other(e))))
            .collect()
    }
}

pub(crate) fn io(path: &Path, source: std::io::Error) -> Error {
    Error::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Writes both files.
pub(crate) struct Journal {
    dir: PathBuf,
    calls: Mutex<File>,
    status: Mutex<()>,
}

impl Journal {
    pub(crate) fn create(dir: &Path) -> Result<Self> {
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        let path = dir.join("calls.jsonl");
        let calls = OpenOptions::new()
            .create(true)
            .truncate(true)
            .write(true)
            .open(&path)
            .map_err(|source| io(&path, source))?;
        Ok(Self {
            dir: dir.to_path_buf(),
            calls: Mutex::new(calls),
            status: Mutex::new(()),
        })
    }

    pub(crate) fn dir(&self) -> &Path {
        &self.dir
    }

    pub(crate) fn record(
        &self,
        node: &str,
        method: &str,
        detail: serde_json::Value,
        result: String,
        client: Option<String>,
    ) {
        let rec = CallRecord {
            time: now_rfc3339(),
            node: node.to_string(),
            method: method.to_string(),
            detail,
            result,
            client,
        };
        let mut line = serde_json::to_string(&rec).unwrap_or_default();
        line.push('\n');
        let mut f = self.calls.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = f.write_all(line.as_bytes()).and_then(|()| f.flush()) {
            tracing::warn!(error = %e, "cannot append to calls.jsonl");
        }
    }

    /// Rewrites lab.json atomically (write a temporary file, then rename).
    pub(crate) fn write_status(&self, status: &LabStatus) {
        let _guard = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let tmp = self.dir.join(".lab.json.tmp");
        let text = serde_json::to_string_pretty(status).unwrap_or_default();
        let res = std::fs::write(&tmp, text + "\n")
            .and_then(|()| std::fs::rename(&tmp, self.dir.join("lab.json")));
        if let Err(e) = res {
            tracing::warn!(error = %e, "cannot write lab.json");
        }
    }
}

pub(crate) fn now_rfc3339() -> String {
    time::OffsetDateTime::now_utc()
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}
