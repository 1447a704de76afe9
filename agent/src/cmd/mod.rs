//! One module per subcommand: argument parsing and printing only; the work lives in the crates.

pub mod decrypt;
pub mod gen_secrets;
pub mod lab;
pub mod render;
pub mod validate;

/// The lab's node list for a cluster repo (`vixen lab up --repo DIR`).
///
/// # Errors
/// When the repo does not load or validate.
pub fn lab_spec_for_repo(_repo: &std::path::Path) -> anyhow::Result<vixen_lab::LabSpec> {
    anyhow::bail!("the repo model is not wired to the lab yet")
}
