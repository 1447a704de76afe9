//! Loading a cluster repo from disk: every file parsed with positions, then typed.
//!
//! Loading is the first of two steps (the second is [`crate::validate`]): it only checks that
//! each file is YAML of the right shape. All problems of all files are gathered before it gives
//! up, so one run shows the user everything to fix.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::de::DeserializeOwned;

use crate::sandbox::{Refusal, Sandbox};
use crate::types::{ClusterFile, NetworkFile, NodeFile};
use crate::yaml::{self, Node, Pos, Seg};

/// The file that describes the cluster as a whole.
pub const CLUSTER_FILE: &str = "cluster.yaml";
/// The folder of node files.
pub const NODES_DIR: &str = "nodes";
/// The optional network file.
pub const NETWORK_FILE: &str = "network.yaml";

/// One problem in the repo, at a place in a file, with what to do about it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Diagnostic {
    /// File, relative to the repo root.
    pub file: PathBuf,
    /// Where in the file.
    pub pos: Pos,
    /// What is wrong.
    pub message: String,
    /// How to fix it, in words.
    pub fix: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}: {}", self.file.display(), self.pos, self.message)?;
        if !self.fix.is_empty() {
            write!(f, " (fix: {})", self.fix)?;
        }
        Ok(())
    }
}

/// Every problem found, in file order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Records a problem.
    pub fn push(
        &mut self,
        file: &Path,
        pos: Pos,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) {
        self.0.push(Diagnostic {
            file: file.to_path_buf(),
            pos,
            message: message.into(),
            fix: fix.into(),
        });
    }
    /// True when nothing was found.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
    /// Sorts by file and position so output is stable.
    pub fn sort(&mut self) {
        self.0
            .sort_by(|a, b| (&a.file, a.pos).cmp(&(&b.file, b.pos)));
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for d in &self.0 {
            writeln!(f, "{d}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Diagnostics {}

/// A typed file with the tree it came from, so positions can be found later.
#[derive(Debug, Clone)]
pub struct Source<T> {
    /// Path relative to the repo root.
    pub path: PathBuf,
    /// The typed content.
    pub value: T,
    /// The parsed tree, for positions.
    pub tree: Node,
}

impl<T> Source<T> {
    /// Position of the value at `path` (or of its closest existing ancestor).
    pub fn pos(&self, path: &[Seg]) -> Pos {
        self.tree.position(path)
    }
}

/// A loaded cluster repo.
#[derive(Debug, Clone)]
pub struct Repo {
    /// Repo root on disk.
    pub root: PathBuf,
    /// `cluster.yaml`.
    pub cluster: Source<ClusterFile>,
    /// `nodes/*.yaml`, in file-name order.
    pub nodes: Vec<Source<NodeFile>>,
    /// `network.yaml` (empty when the file is absent).
    pub network: Source<NetworkFile>,
    /// The only way to read the repo's files.
    sandbox: Sandbox,
}

impl Repo {
    /// Loads and types every file of the repo at `root`.
    ///
    /// # Errors
    /// Every read, YAML and shape problem of every file, as [`Diagnostics`].
    pub fn load(root: &Path) -> Result<Repo, Diagnostics> {
        let mut diags = Diagnostics::default();
        let top = Pos { line: 1, col: 1 };
        let sandbox = match Sandbox::open(root) {
            Ok(s) => s,
            Err(e) => {
                diags.push(
                    Path::new("."),
                    top,
                    format!("the repo folder cannot be opened: {}", e.kind()),
                    "point vixen at the folder that holds cluster.yaml",
                );
                return Err(diags);
            }
        };
        let cluster = load_file::<ClusterFile>(&sandbox, CLUSTER_FILE, &mut diags);

        let mut node_paths = Vec::new();
        match sandbox.list_dir(NODES_DIR) {
            Ok(names) => {
                for name in names {
                    if name.ends_with(".yaml") || name.ends_with(".yml") {
                        node_paths.push(format!("{NODES_DIR}/{name}"));
                    }
                }
            }
            Err(Refusal::Missing(_)) => diags.push(
                Path::new(NODES_DIR),
                top,
                "the nodes/ folder is missing",
                "create nodes/ with one <name>.yaml file per node",
            ),
            Err(r) => diags.push(Path::new(NODES_DIR), top, r.to_string(), r.fix()),
        }
        let nodes: Vec<_> = node_paths
            .iter()
            .filter_map(|p| load_file::<NodeFile>(&sandbox, p, &mut diags))
            .collect();

        let network = match sandbox.check_file(NETWORK_FILE) {
            Err(r) if r.is_missing() => Some(Source {
                path: PathBuf::from(NETWORK_FILE),
                value: NetworkFile::default(),
                tree: Node {
                    pos: top,
                    kind: yaml::Kind::Scalar(serde_json::Value::Null),
                },
            }),
            _ => load_file::<NetworkFile>(&sandbox, NETWORK_FILE, &mut diags),
        };

        match (cluster, network) {
            (Some(cluster), Some(network)) if diags.is_empty() => Ok(Repo {
                root: root.to_path_buf(),
                cluster,
                nodes,
                network,
                sandbox,
            }),
            _ => {
                diags.sort();
                Err(diags)
            }
        }
    }

    /// The node called `name`.
    pub fn node(&self, name: &str) -> Option<&Source<NodeFile>> {
        self.nodes.iter().find(|n| n.value.name == name)
    }

    /// The sandbox every read of this repo goes through.
    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }

    /// Reads a file the repo refers to (a patch, a manifest), relative to the root, through
    /// the [`Sandbox`]: absolute paths, `..` and symlinks that leave the repo are refused and
    /// never read.
    ///
    /// # Errors
    /// The [`Refusal`].
    pub fn read(&self, relative: &str) -> Result<String, Refusal> {
        self.sandbox.read_to_string(relative)
    }
}

/// Reads, parses and types one file; problems go to `diags`.
fn load_file<T: DeserializeOwned>(
    sandbox: &Sandbox,
    rel: &str,
    diags: &mut Diagnostics,
) -> Option<Source<T>> {
    let text = match sandbox.read_to_string(rel) {
        Ok(text) => text,
        Err(r) => {
            diags.push(
                Path::new(rel),
                Pos { line: 1, col: 1 },
                r.to_string(),
                r.fix(),
            );
            return None;
        }
    };
    parse_typed(Path::new(rel), &text, diags)
}

/// Parses `text` (the content of `rel`) as YAML of type `T`; problems go to `diags`.
pub fn parse_typed<T: DeserializeOwned>(
    rel: &Path,
    text: &str,
    diags: &mut Diagnostics,
) -> Option<Source<T>> {
    let tree = match yaml::parse_one(text) {
        Ok(tree) => tree,
        Err(e) => {
            diags.push(
                rel,
                e.pos,
                format!("invalid YAML: {}", e.message),
                "fix the YAML syntax here",
            );
            return None;
        }
    };
    let json = tree.to_json();
    match serde_path_to_error::deserialize::<_, T>(&json) {
        Ok(value) => Some(Source {
            path: rel.to_path_buf(),
            value,
            tree,
        }),
        Err(err) => {
            let segs = yaml::segments_of(err.path());
            let inner = err.inner().to_string();
            let (pos, fix) = if inner.starts_with("unknown field") {
                (
                    tree.key_position(&segs),
                    "remove the field or correct its spelling",
                )
            } else if inner.starts_with("missing field") {
                (tree.position(&segs), "add the field")
            } else {
                (
                    tree.position(&segs),
                    "give the value the type the schema asks for",
                )
            };
            let at = if segs.is_empty() {
                String::new()
            } else {
                format!("{}: ", crate::yaml::display_path(&segs))
            };
            diags.push(rel, pos, format!("{at}{inner}"), fix);
            None
        }
    }
}
