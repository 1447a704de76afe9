//! YAML, read with `saphyr-parser` events and written the way go-yaml v3 writes sops'
//! tree (4-space indent, head comments, go-yaml's quoting rules).

mod emit;
mod load;
mod scalar;
mod write;

pub(super) use emit::emit;
pub(super) use load::load;
