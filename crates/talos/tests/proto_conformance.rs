//! Proto conformance: vixen's own Talos protos (`crates/talos/proto`) against the descriptors
//! compiled into Talos' generated Go packages (`pkg/machinery/api/machine`, `api/common`,
//! `api/storage`) of v1.11.6 and v1.13.9, dumped by the `talos-protos-v1.11` /
//! `talos-protos-v1.13` test peers (tests/peers/talos-protos, built by tests/peers/build.sh).
//!
//! Fault covered: vixen's protos are hand-written, so a wrong field number, type, label, oneof,
//! enum value, request/response type or streaming flag would make vixen (and the lab, which uses
//! the same protos) agree with each other and disagree with every real Talos node: fields
//! silently dropped or misread on the wire. Every element vixen declares must exist upstream
//! with the same number and type; vixen's protos are a subset, so elements only upstream has are
//! fine.
//!
//! Versions: each vixen element (message, field, enum, enum value, service, method) is compared
//! with the **newest** upstream version that has it, so a proto that only exists from 1.13
//! (`LifecycleService`, `ImageService` in `machine/image.proto`) is checked against 1.13.9 and an
//! element that 1.13 dropped would still be checked against 1.11.6. An element no version has
//! fails, naming it.
//!
//! vixen's descriptors come from `protoc --descriptor_set_out` over every `.proto` under
//! `crates/talos/proto` (protoc is installed by tests/deps.sh).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;

use prost::Message as _;
use prost_types::{
    DescriptorProto, EnumDescriptorProto, FieldDescriptorProto, FileDescriptorSet,
    ServiceDescriptorProto,
};

/// Upstream peers, oldest first: (Talos version, peer binary).
const UPSTREAM: &[(&str, &str)] = &[
    ("v1.11.6", "talos-protos-v1.11"),
    ("v1.13.9", "talos-protos-v1.13"),
];

/// Where tests/peers/build.sh puts the peers (the lookup of `vixen_lab::peers`, which this
/// crate cannot depend on).
fn peer(name: &str) -> Option<PathBuf> {
    let mut dirs: Vec<PathBuf> = Vec::new();
    if let Some(d) = std::env::var_os("VIXEN_PEERS_BIN") {
        dirs.push(d.into());
    }
    dirs.push("/work/go/bin".into());
    if let Some(h) = std::env::var_os("HOME") {
        dirs.push(PathBuf::from(h).join(".cache/vixen/go/bin"));
    }
    dirs.into_iter().map(|d| d.join(name)).find(|p| p.is_file())
}

fn peers_required() -> bool {
    ["CI", "VIXEN_PEERS_REQUIRED"]
        .iter()
        .any(|v| std::env::var_os(v).is_some_and(|v| !v.is_empty()))
}

/// Every element of a descriptor set, by a path such as `message .machine.Version`,
/// `field .machine.Version.metadata`, `enum-value .machine.RebootRequest.Mode.FORCE`,
/// `method .machine.MachineService/Reboot`, with a printable shape to compare.
#[derive(Default)]
struct Index {
    elements: BTreeMap<String, String>,
}

impl Index {
    fn from_set(set: &FileDescriptorSet, packages: &[&str]) -> Self {
        let mut ix = Index::default();
        for f in &set.file {
            let pkg = f.package();
            if !packages.contains(&pkg) {
                continue;
            }
            let scope = format!(".{pkg}");
            for m in &f.message_type {
                ix.message(&scope, m);
            }
            for e in &f.enum_type {
                ix.enumeration(&scope, e);
            }
            for s in &f.service {
                ix.service(&scope, s);
            }
        }
        ix
    }

    fn message(&mut self, scope: &str, m: &DescriptorProto) {
        let name = format!("{scope}.{}", m.name());
        self.elements
            .insert(format!("message {name}"), String::from("message"));
        for field in &m.field {
            let oneof = field
                .oneof_index
                .and_then(|i| m.oneof_decl.get(usize::try_from(i).ok()?))
                .map(|o| o.name().to_string());
            self.elements.insert(
                format!("field {name}.{}", field.name()),
                field_shape(field, oneof.as_deref()),
            );
        }
        for nested in &m.nested_type {
            // Map entries are part of their map field's shape (type_name names them).
            if nested.options.as_ref().and_then(|o| o.map_entry) == Some(true) {
                for f in &nested.field {
                    self.elements.insert(
                        format!("field {name}.{}.{}", nested.name(), f.name()),
                        field_shape(f, None),
                    );
                }
                continue;
            }
            self.message(&name, nested);
        }
        for e in &m.enum_type {
            self.enumeration(&name, e);
        }
    }

    fn enumeration(&mut self, scope: &str, e: &EnumDescriptorProto) {
        let name = format!("{scope}.{}", e.name());
        self.elements
            .insert(format!("enum {name}"), String::from("enum"));
        for v in &e.value {
            self.elements.insert(
                format!("enum-value {name}.{}", v.name()),
                format!("= {}", v.number()),
            );
        }
    }

    fn service(&mut self, scope: &str, s: &ServiceDescriptorProto) {
        let name = format!("{scope}.{}", s.name());
        self.elements
            .insert(format!("service {name}"), String::from("service"));
        for m in &s.method {
            let stream = |b: bool| if b { "stream " } else { "" };
            self.elements.insert(
                format!("method {name}/{}", m.name()),
                format!(
                    "({}{}) returns ({}{})",
                    stream(m.client_streaming()),
                    m.input_type(),
                    stream(m.server_streaming()),
                    m.output_type()
                ),
            );
        }
    }
}

/// Number, label, type (and the message/enum it names), oneof and proto3 `optional`.
fn field_shape(f: &FieldDescriptorProto, oneof: Option<&str>) -> String {
    let mut s = format!(
        "= {} {} {}",
        f.number(),
        f.label().as_str_name(),
        f.r#type().as_str_name()
    );
    if !f.type_name().is_empty() {
        s += &format!(" {}", f.type_name());
    }
    match oneof {
        // proto3 `optional` is a synthetic oneof: say so instead of naming it.
        Some(_) if f.proto3_optional() => s += " proto3-optional",
        Some(o) => s += &format!(" oneof {o}"),
        None => {}
    }
    s
}

/// Each vixen element against the newest upstream version having it: the differences, one line
/// each, naming the element, the version and both shapes.
fn compare(vixen: &Index, upstream: &[(&str, Index)]) -> Vec<String> {
    let mut problems = Vec::new();
    for (path, shape) in &vixen.elements {
        let newest = upstream
            .iter()
            .rev()
            .find_map(|(v, ix)| ix.elements.get(path).map(|s| (v, s)));
        match newest {
            None => problems.push(format!(
                "{path}: declared by vixen, absent upstream ({})",
                upstream
                    .iter()
                    .map(|(v, _)| *v)
                    .collect::<Vec<_>>()
                    .join(", ")
            )),
            Some((v, up)) if up != shape => {
                problems.push(format!("{path}: vixen has `{shape}`, Talos {v} has `{up}`"));
            }
            Some(_) => {}
        }
    }
    problems
}

fn proto_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("proto")
}

fn proto_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            proto_files(&p, out);
        } else if p.extension().is_some_and(|e| e == "proto") {
            out.push(p);
        }
    }
}

/// vixen's descriptors, compiled by protoc from every file under `proto/`.
fn vixen_set(tmp: &Path) -> FileDescriptorSet {
    let dir = proto_dir();
    let mut files = Vec::new();
    proto_files(&dir, &mut files);
    files.sort();
    let out = tmp.join("vixen.pb");
    let status = Command::new("protoc")
        .arg(format!("--descriptor_set_out={}", out.display()))
        .arg(format!("-I{}", dir.display()))
        .args(&files)
        .status()
        .expect("protoc (tests/deps.sh installs protobuf-compiler)");
    assert!(status.success(), "protoc failed on {}", dir.display());
    FileDescriptorSet::decode(std::fs::read(&out).unwrap().as_slice()).unwrap()
}

fn upstream_set(bin: &Path) -> FileDescriptorSet {
    let out = Command::new(bin).output().unwrap();
    assert!(
        out.status.success(),
        "{}: {}",
        bin.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    FileDescriptorSet::decode(out.stdout.as_slice()).unwrap()
}

const PACKAGES: &[&str] = &["machine", "common", "storage"];

/// Loads every upstream version, or None after a loud skip when a peer is not built (fails in
/// CI / with VIXEN_PEERS_REQUIRED).
fn upstream(test: &str) -> Option<Vec<(&'static str, Index)>> {
    let mut out = Vec::new();
    for (version, name) in UPSTREAM {
        let Some(bin) = peer(name) else {
            assert!(
                !peers_required(),
                "{test}: test peer `{name}` is missing: run tests/peers/build.sh"
            );
            eprintln!(
                "\n!!! SKIPPED {test}: test peer `{name}` not built (bash tests/peers/build.sh) !!!\n"
            );
            return None;
        };
        out.push((*version, Index::from_set(&upstream_set(&bin), PACKAGES)));
    }
    Some(out)
}

/// Every message, field (number, label, type, oneof), enum value, service and method (request,
/// response, streaming) of vixen's protos matches the newest Talos version that has it.
#[test]
fn vixen_protos_match_talos() {
    let Some(upstream) = upstream("vixen_protos_match_talos") else {
        return;
    };
    let tmp = tempdir();
    let vixen = Index::from_set(&vixen_set(&tmp), PACKAGES);
    assert!(
        vixen.elements.len() > 100,
        "only {} elements compiled from {}: did protoc read the protos?",
        vixen.elements.len(),
        proto_dir().display()
    );
    for (v, ix) in &upstream {
        assert!(
            ix.elements
                .contains_key("method .machine.MachineService/Version"),
            "the Talos {v} dump lacks MachineService: wrong peer build?"
        );
    }
    let problems = compare(&vixen, &upstream);
    assert!(
        problems.is_empty(),
        "vixen's protos ({}) differ from Talos' ({} elements compared):\n  {}",
        proto_dir().display(),
        vixen.elements.len(),
        problems.join("\n  ")
    );
    eprintln!(
        "{} elements of vixen's protos match Talos ({})",
        vixen.elements.len(),
        UPSTREAM
            .iter()
            .map(|(v, _)| *v)
            .collect::<Vec<_>>()
            .join(", ")
    );
}

/// The comparison itself catches each kind of difference, on vixen's real descriptors mutated
/// in memory: a field number, a field type, a repeated label, an enum value, a streaming flag, a
/// method's response type, and an element Talos does not have. (The same faults as editing a
/// .proto, without editing one.)
#[test]
fn the_comparison_names_each_kind_of_difference() {
    let Some(upstream) = upstream("the_comparison_names_each_kind_of_difference") else {
        return;
    };
    let tmp = tempdir();
    let base = vixen_set(&tmp);
    type Mutation = (&'static str, fn(&mut FileDescriptorSet));
    let mutations: &[Mutation] = &[
        (
            "field .machine.EtcdMemberStatus.member_id: vixen has `= 99",
            |s| {
                field(s, "EtcdMemberStatus", "member_id").number = Some(99);
            },
        ),
        (
            "field .machine.EtcdMember.id: vixen has `= 2 LABEL_OPTIONAL TYPE_UINT32",
            |s| {
                field(s, "EtcdMember", "id")
                    .set_type(prost_types::field_descriptor_proto::Type::Uint32);
            },
        ),
        (
            "field .machine.ApplyConfiguration.warnings: vixen has `= 2 LABEL_OPTIONAL",
            |s| {
                field(s, "ApplyConfiguration", "warnings")
                    .set_label(prost_types::field_descriptor_proto::Label::Optional);
            },
        ),
        (
            "enum-value .machine.ApplyConfigurationRequest.Mode.STAGED: vixen has `= 7`",
            |s| {
                let m = message(s, "ApplyConfigurationRequest");
                let e = m.enum_type.iter_mut().find(|e| e.name() == "Mode").unwrap();
                e.value
                    .iter_mut()
                    .find(|v| v.name() == "STAGED")
                    .unwrap()
                    .number = Some(7);
            },
        ),
        (
            "method .machine.MachineService/EtcdSnapshot: vixen has `(.machine.EtcdSnapshotRequest) returns (.common.Data)`",
            |s| {
                method(s, "EtcdSnapshot").server_streaming = Some(false);
            },
        ),
        (
            "method .machine.MachineService/Reboot: vixen has `(.machine.RebootRequest) returns (.machine.ResetResponse)`",
            |s| {
                method(s, "Reboot").output_type = Some(".machine.ResetResponse".into());
            },
        ),
        (
            "field .machine.Version.vixen_only: declared by vixen, absent upstream",
            |s| {
                let m = message(s, "Version");
                let mut f = m.field[0].clone();
                f.name = Some("vixen_only".into());
                f.number = Some(77);
                m.field.push(f);
            },
        ),
    ];
    for (want, mutate) in mutations {
        let mut set = base.clone();
        mutate(&mut set);
        let problems = compare(&Index::from_set(&set, PACKAGES), &upstream);
        assert!(
            problems.len() == 1 && problems[0].starts_with(want),
            "expected one problem starting with {want:?}, got {problems:#?}"
        );
    }
    assert!(compare(&Index::from_set(&base, PACKAGES), &upstream).is_empty());
}

fn file_with(
    s: &mut FileDescriptorSet,
    pred: impl Fn(&prost_types::FileDescriptorProto) -> bool,
) -> &mut prost_types::FileDescriptorProto {
    s.file.iter_mut().find(|f| pred(f)).unwrap()
}

fn message<'a>(s: &'a mut FileDescriptorSet, name: &str) -> &'a mut DescriptorProto {
    file_with(s, |f| f.message_type.iter().any(|m| m.name() == name))
        .message_type
        .iter_mut()
        .find(|m| m.name() == name)
        .unwrap()
}

fn field<'a>(s: &'a mut FileDescriptorSet, msg: &str, name: &str) -> &'a mut FieldDescriptorProto {
    message(s, msg)
        .field
        .iter_mut()
        .find(|f| f.name() == name)
        .unwrap()
}

fn method<'a>(
    s: &'a mut FileDescriptorSet,
    name: &str,
) -> &'a mut prost_types::MethodDescriptorProto {
    file_with(s, |f| {
        f.service.iter().any(|s| s.name() == "MachineService")
    })
    .service
    .iter_mut()
    .find(|s| s.name() == "MachineService")
    .unwrap()
    .method
    .iter_mut()
    .find(|m| m.name() == name)
    .unwrap()
}

/// A fresh directory under the target dir (no tempfile dev-dependency needed).
fn tempdir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!(
        "vixen-proto-conformance-{}-{:?}",
        std::process::id(),
        std::thread::current().id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
