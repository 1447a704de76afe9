//! vixen-plan: the pure planner. Desired state (Git) + observed state (nodes, etcd) + inventory
//! (what vixen applied before) -> an ordered plan of steps. No I/O: the executor in the agent
//! runs the plan; tests here are table-driven.

pub mod action;
pub mod planner;
pub mod risky;
pub mod state;

pub use action::*;
pub use planner::{changed_sections, needs_reboot, plan, plan_decommission};
pub use risky::risky;
pub use state::*;
