//! vixen-lab: simulated Talos nodes with real etcd (placeholder; filled in by issue 4).

/// What the lab runs: one simulated node per entry.
pub struct LabSpec {}
